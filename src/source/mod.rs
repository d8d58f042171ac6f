//! Source databases, one module per engine behind the [`Source`] trait.
//!
//! A source owns everything engine-specific: connecting, checking prerequisites, listing the
//! tables a task selects, mapping column types to Arrow, and reading a table range from one
//! consistent snapshot as a stream of Arrow record batches. Invariants:
//! - every range of every table in one full load is read from the same snapshot, whose
//!   source position is reported in [`Snapshot::position`];
//! - a column whose type has no Arrow mapping is read as text and reported in
//!   [`ColumnInfo::cast_to_text`], never dropped;
//! - batches are bounded (rows and bytes), so memory does not grow with table size.

pub mod decimal;
pub mod mysql;
pub mod position;
pub mod postgres;

pub use position::SourcePosition;

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

pub use crate::check::{CheckResult, CheckStatus};
use crate::ident::{TableId, parse_rule};

/// Errors from a source database, with the endpoint, table or position they concern and,
/// where we know it, how to fix them.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "endpoint '{endpoint}': cannot reach {host}:{port}: {reason}. Check that the server runs and that host and port are right"
    )]
    Unreachable {
        endpoint: String,
        host: String,
        port: u16,
        reason: String,
    },
    #[error("endpoint '{endpoint}': TLS to {host}:{port} failed: {problem}. Fix: {fix}")]
    Tls {
        endpoint: String,
        host: String,
        port: u16,
        problem: String,
        fix: String,
    },
    #[error("endpoint '{endpoint}': {source}")]
    TlsSetup {
        endpoint: String,
        #[source]
        source: crate::tls::TlsError,
    },
    #[error("endpoint '{endpoint}': authentication failed for user '{user}'. {hint}")]
    Authentication {
        endpoint: String,
        user: String,
        hint: String,
    },
    #[error(
        "endpoint '{endpoint}': database '{database}' does not exist. Create it or fix `database` in the workspace"
    )]
    MissingDatabase { endpoint: String, database: String },
    #[error("endpoint '{endpoint}': permission denied{context}: {message}. {fix}")]
    PermissionDenied {
        endpoint: String,
        context: String,
        message: String,
        fix: String,
    },
    #[error("endpoint '{endpoint}': {context}: {message}")]
    Database {
        endpoint: String,
        context: String,
        message: String,
    },
    /// A driver's error with no better-known meaning, kept whole as the source.
    #[error("endpoint '{endpoint}': {context}: {source}")]
    Driver {
        endpoint: String,
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("endpoint '{endpoint}', table {table}: cannot decode column '{column}': {message}")]
    Decode {
        endpoint: String,
        table: String,
        column: String,
        message: String,
    },
    #[error("endpoint '{endpoint}': no table matches the task's include/exclude rules ({rules})")]
    NoTables { endpoint: String, rules: String },
}

/// A column of a source table, with the Arrow type it is written as.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColumnInfo {
    pub name: String,
    /// The source's own type name, e.g. `numeric(12,2)` or `character varying(40)`.
    pub source_type: String,
    pub nullable: bool,
    /// True when the type has no Arrow mapping and the column is read as text.
    pub cast_to_text: bool,
}

/// A table selected by a task, as discovered in the source catalog.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub schema: String,
    pub name: String,
    pub columns: Vec<ColumnInfo>,
    /// The columns as Arrow fields, every one nullable: a column's `NOT NULL` is read when
    /// the table is discovered, which can come after the snapshot its rows are read from (a
    /// slot's snapshot, a reload's), so a NULL there is real data and is written as NULL.
    /// [`ColumnInfo::nullable`] keeps what the catalog said.
    pub arrow_schema: SchemaRef,
    pub primary_key: Vec<String>,
    /// Size on disk, used to split large tables into ranges and to estimate progress.
    pub size_bytes: u64,
    pub estimated_rows: u64,
    /// How the source knows the table and its columns whatever their names, where it
    /// has such an identity (PostgreSQL).
    pub identity: Option<SourceIdentity>,
    /// Source-specific data the reader needs (e.g. PostgreSQL type OIDs), opaque to the runner.
    pub(crate) read_plan: Arc<dyn std::any::Any + Send + Sync>,
}

/// How the source knows a table and its columns whatever their names: PostgreSQL's
/// relation OID and column numbers (attnum). A table dropped and created again under the
/// same name is another relation; a renamed column keeps its number, and a table never
/// gives a number out again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceIdentity {
    pub relation: u32,
    /// The number of each column, in the table's order; empty where they are not known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<i32>,
}

/// A column renamed by a schema change: the rows before it hold its values under `from`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenamedColumn {
    pub from: String,
    pub to: String,
}

impl SourceIdentity {
    /// The columns renamed between two shapes of the same relation, each shape its column
    /// names in order with their identity: a column number under another name. Nothing
    /// when the relations differ or a shape's numbers are not all known.
    pub fn renamed(before: (&[String], &Self), after: (&[String], &Self)) -> Vec<RenamedColumn> {
        let known = |(names, identity): (&[String], &Self)| identity.columns.len() == names.len();
        if before.1.relation != after.1.relation || !known(before) || !known(after) {
            return Vec::new();
        }
        after
            .0
            .iter()
            .zip(&after.1.columns)
            .filter_map(|(to, number)| {
                let at = before.1.columns.iter().position(|n| n == number)?;
                let from = &before.0[at];
                (from != to).then(|| RenamedColumn {
                    from: from.clone(),
                    to: to.clone(),
                })
            })
            .collect()
    }
}

impl TableInfo {
    /// The table's identity, as task states, the lake and messages name it.
    pub fn id(&self) -> TableId {
        TableId::new(&self.schema, &self.name)
    }

    /// `schema.table` for people (parts quoted where they need it).
    pub fn qualified_name(&self) -> String {
        self.id().to_string()
    }

    /// Warnings a user must see before the load: missing key, columns read as text.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.primary_key.is_empty() {
            w.push(format!(
                "table {} has no primary key: it is loaded, but CDC needs a replica identity \
                 (add a primary key, or ALTER TABLE {} REPLICA IDENTITY FULL)",
                self.qualified_name(),
                self.qualified_name()
            ));
        }
        for c in self.columns.iter().filter(|c| c.cast_to_text) {
            w.push(format!(
                "table {}: column '{}' of type {} has no exact Parquet type; it is loaded as text",
                self.qualified_name(),
                c.name,
                c.source_type
            ));
        }
        w
    }
}

/// A part of a table read by one worker. Ranges of one table are disjoint and cover it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRange {
    /// Position of the range within its table, from 0.
    pub index: u32,
    /// Source-specific bounds; for PostgreSQL, heap pages `[start, end)`, `end` open for the last.
    pub start: Option<u64>,
    pub end: Option<u64>,
}

/// A consistent view of the source that all ranges read from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// Engine-specific snapshot handle (PostgreSQL: an exported snapshot id).
    pub id: String,
    /// Where in the source's log the snapshot stands, where CDC starts; `None` where the
    /// source keeps no log to read changes from (MySQL with the binlog off: full load only).
    pub position: Option<SourcePosition>,
}

impl Snapshot {
    /// The position for people: `none (no change log)` without one.
    pub fn describe_position(&self) -> String {
        self.position
            .as_ref()
            .map_or_else(|| "none (no change log)".to_owned(), ToString::to_string)
    }
}

/// What the full-load runner needs from a source database.
pub trait Source: Send + Sync + 'static {
    /// The endpoint's name, for messages and lake paths.
    fn endpoint(&self) -> &str;

    /// Connection and prerequisite checks, each with its fix.
    fn check(&self) -> impl Future<Output = Vec<CheckResult>> + Send;

    /// Tables matching the selection rules, with their columns and key.
    fn discover(
        &self,
        rules: &SelectionRules,
    ) -> impl Future<Output = Result<Vec<TableInfo>, SourceError>> + Send;

    /// Splits a table into ranges of about `range_bytes` on disk.
    fn plan_ranges(&self, table: &TableInfo, range_bytes: u64) -> Vec<TableRange>;

    /// Opens a consistent snapshot, held until [`Source::release_snapshot`].
    fn open_snapshot(&self) -> impl Future<Output = Result<Snapshot, SourceError>> + Send;

    fn release_snapshot(&self) -> impl Future<Output = ()> + Send;

    /// Reads one range of a table from `snapshot` (or from a fresh one when `None`) and sends
    /// its batches to `out`; returns the number of rows read. A closed `out` stops the read.
    fn read_range(
        &self,
        table: &TableInfo,
        range: &TableRange,
        snapshot: Option<&Snapshot>,
        out: mpsc::Sender<RecordBatch>,
    ) -> impl Future<Output = Result<u64, SourceError>> + Send;
}

/// DMS-style selection rules: `schema.table`, `%` matches any run of characters. `_` is
/// literal (unlike SQL LIKE), because table names are full of underscores. The schema part
/// matches the schema and the table part the table, each on its own (a rule's part may be
/// double-quoted to hold a `.`, as [`TableId`]'s display form): `a.%` does not select the
/// tables of a schema named `a.b`.
#[derive(Debug, Clone, Default)]
pub struct SelectionRules {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// The rules as (schema pattern, table pattern); a malformed rule (refused when the
    /// workspace is read) matches nothing.
    parsed_include: Vec<Option<(String, String)>>,
    parsed_exclude: Vec<Option<(String, String)>>,
}

impl SelectionRules {
    pub fn new(include: &[String], exclude: &[String]) -> Self {
        let parse = |rules: &[String]| rules.iter().map(|r| parse_rule(r).ok()).collect();
        SelectionRules {
            include: include.to_vec(),
            exclude: exclude.to_vec(),
            parsed_include: parse(include),
            parsed_exclude: parse(exclude),
        }
    }

    pub fn matches(&self, schema: &str, table: &str) -> bool {
        let hit = |rule: &Option<(String, String)>| {
            rule.as_ref()
                .is_some_and(|(s, t)| wildcard_match(s, schema) && wildcard_match(t, table))
        };
        let included = self.include.is_empty() || self.parsed_include.iter().any(hit);
        included && !self.parsed_exclude.iter().any(hit)
    }

    pub fn matches_id(&self, id: &TableId) -> bool {
        self.matches(&id.schema, &id.table)
    }

    pub fn describe(&self) -> String {
        format!(
            "include [{}], exclude [{}]",
            self.include.join(", "),
            self.exclude.join(", ")
        )
    }
}

/// Matches `text` against `pattern` where `%` stands for any run of characters.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('%').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_follow_dms() {
        assert!(wildcard_match("public.%", "public.orders"));
        assert!(wildcard_match("%.%", "s.t"));
        assert!(wildcard_match("public.audit_%", "public.audit_log"));
        assert!(!wildcard_match("public.audit_%", "public.auditlog"));
        assert!(wildcard_match("public.a%b%c", "public.axxbyyc"));
        assert!(!wildcard_match("public.a%b%c", "public.axxcyyb"));
        assert!(!wildcard_match("public.ab%ba", "public.aba"));
        assert!(wildcard_match("public.orders", "public.orders"));
        assert!(!wildcard_match("public.orders", "public.orders2"));
    }

    #[test]
    fn parts_match_their_own_names() {
        let rules = SelectionRules::new(&["a.%".into()], &[]);
        assert!(rules.matches("a", "b.c"));
        assert!(!rules.matches("a.b", "c"), "a.% is schema a only");
        let quoted = SelectionRules::new(&["\"a.b\".%".into()], &["\"a.b\".\"x.y\"".into()]);
        assert!(quoted.matches("a.b", "c"));
        assert!(!quoted.matches("a.b", "x.y"));
        assert!(!quoted.matches("a", "b.c"));
        assert!(SelectionRules::new(&["%.%".into()], &[]).matches(".", ".."));
    }

    #[test]
    fn exclude_wins_over_include() {
        let rules = SelectionRules::new(&["public.%".into()], &["public.audit_%".into()]);
        assert!(rules.matches("public", "orders"));
        assert!(!rules.matches("public", "audit_2024"));
        assert!(!rules.matches("sales", "orders"));
        assert!(SelectionRules::default().matches("any", "thing"));
    }

    #[test]
    fn a_column_number_under_another_name_is_a_rename() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let id = |relation, columns: &[i32]| SourceIdentity {
            relation,
            columns: columns.to_vec(),
        };
        let before = names(&["id", "label", "note"]);
        let after = names(&["id", "title", "note"]);
        assert_eq!(
            SourceIdentity::renamed((&before, &id(7, &[1, 2, 3])), (&after, &id(7, &[1, 2, 3]))),
            vec![RenamedColumn {
                from: "label".into(),
                to: "title".into()
            }]
        );
        // The last column dropped and another added: a new number, no rename.
        let added = names(&["id", "label", "extra"]);
        assert!(
            SourceIdentity::renamed((&before, &id(7, &[1, 2, 3])), (&added, &id(7, &[1, 2, 4])))
                .is_empty()
        );
        // Another relation, or numbers not known: nothing is taken for a rename.
        assert!(
            SourceIdentity::renamed((&before, &id(7, &[1, 2, 3])), (&after, &id(8, &[1, 2, 3])))
                .is_empty()
        );
        assert!(
            SourceIdentity::renamed((&before, &id(7, &[])), (&after, &id(7, &[1, 2, 3])))
                .is_empty()
        );
        // Two columns swapping names are two renames.
        let swapped = names(&["id", "note", "label"]);
        assert_eq!(
            SourceIdentity::renamed(
                (&before, &id(7, &[1, 2, 3])),
                (&swapped, &id(7, &[1, 2, 3]))
            )
            .len(),
            2
        );
    }
}
