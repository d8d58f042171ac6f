//! The merge of a table's changes into its current state, as one DataFusion query.
//!
//! The state (the LOAD files, or the curated table's data files) and the CDC files are
//! registered as tables over exactly the files the plan chose. For each primary key the
//! change with the highest `_position` wins: an `I` or `U` replaces the row, a `D` removes
//! it; rows no change touches stay. The base streams through a hash anti-join whose build
//! side is the changed keys, and one sort by key spills to disk under the memory limit, so
//! a table larger than memory merges; the changed keys are held in memory.
//!
//! A column added with a default reads that default in the row images older than its
//! addition, and a renamed column reads its old name in the images older than the rename
//! ([`Merge::fills`]): the changes before their positions, and the base when it is a load
//! from a snapshot before them.

use arrow_schema::DataType;
use datafusion::error::DataFusionError;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::SessionContext;

use super::plan::{Fill, Read};
use crate::sql::{ident, ident_list, literal};

/// The column names the raw zone adds to a table's own: DMS's `Op` and the change's
/// position in the source's log.
pub const OP: &str = "Op";
pub const POSITION: &str = "_position";

/// What to merge: tables `base` and `changes` registered in the session.
pub struct Merge<'a> {
    /// The table's columns, in order (the raw zone's own columns excluded).
    pub columns: &'a [String],
    pub key: &'a [String],
    /// Only changes after this position apply (those before are in the base).
    pub after: Option<&'a str>,
    /// Only changes before this position apply (those after may be of a batch still
    /// being written).
    pub before: Option<&'a str>,
    /// Columns whose older images read a constant or an older name, with the column's type;
    /// an older name must be among the registered tables' columns.
    pub fills: &'a [(Fill, DataType)],
    /// The position of the base's rows, when the base is a load (its snapshot's end);
    /// `None` for the curated table's own files, which hold the filled values already.
    pub base_position: Option<&'a str>,
    /// Whether the rows come ordered by key (a curated table's files are); a comparison
    /// that reads them once needs no order and skips the sort.
    pub sorted: bool,
}

/// What a fill reads, as SQL typed as the column (`prefix`: the table's alias and a dot,
/// or nothing).
fn fill_sql(fill: &Fill, data_type: &DataType, prefix: &str) -> String {
    let value = match &fill.read {
        Read::Value(value) => value.as_deref().map_or("NULL".to_owned(), literal),
        Read::Column(name) => format!("{prefix}{}", ident(name)),
    };
    format!("arrow_cast({value}, {})", literal(&data_type.to_string()))
}

/// Column `column`'s fills, oldest first.
fn fills_of<'f>(fills: &'f [(Fill, DataType)], column: &str) -> Vec<&'f (Fill, DataType)> {
    let mut of: Vec<_> = fills.iter().filter(|(f, _)| f.column == column).collect();
    of.sort_by(|a, b| a.0.before.cmp(&b.0.before));
    of
}

/// The select list of change images (with their `_position`): each of `columns` as the
/// image's position reads it by `fills`.
pub fn image_columns(columns: &[String], fills: &[(Fill, DataType)]) -> String {
    let position = ident(POSITION);
    columns
        .iter()
        .map(|c| {
            let fills = fills_of(fills, c);
            if fills.is_empty() {
                return ident(c);
            }
            let cases: String = fills
                .iter()
                .map(|(fill, data_type)| {
                    format!(
                        "WHEN {position} < {before} THEN {value} ",
                        before = literal(&fill.before),
                        value = fill_sql(fill, data_type, "")
                    )
                })
                .collect();
            format!("CASE {cases}ELSE {c} END AS {c}", c = ident(c))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The select list of rows of table alias `b` that all stand at `position` (a load's
/// snapshot end; `None`: rows that hold their fills already): each of `columns` as the
/// oldest fill after that position reads it.
pub fn rows_at(columns: &[String], fills: &[(Fill, DataType)], position: Option<&str>) -> String {
    columns
        .iter()
        .map(|c| {
            let fill = fills_of(fills, c)
                .into_iter()
                .find(|(f, _)| position.is_some_and(|p| p < f.before.as_str()));
            match fill {
                Some((fill, data_type)) => {
                    format!("{} AS {}", fill_sql(fill, data_type, "b."), ident(c))
                }
                None => format!("b.{}", ident(c)),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Merge<'_> {
    fn changes_filter(&self) -> String {
        let position = ident(POSITION);
        // Every change has a position; one without (a foreign file) must not count as the
        // newest of its key, which would remove the key's row and put nothing in its place.
        let conditions: Vec<String> = [
            Some(format!("{position} IS NOT NULL")),
            self.after.map(|a| format!("{position} > {}", literal(a))),
            self.before.map(|b| format!("{position} < {}", literal(b))),
        ]
        .into_iter()
        .flatten()
        .collect();
        format!("WHERE {}", conditions.join(" AND "))
    }

    /// The highest position among the changes that apply.
    pub async fn last_position(
        &self,
        ctx: &SessionContext,
    ) -> Result<Option<String>, DataFusionError> {
        let sql = format!(
            "SELECT CAST(max({p}) AS VARCHAR) FROM changes {filter}",
            p = ident(POSITION),
            filter = self.changes_filter()
        );
        let batches = ctx.sql(&sql).await?.collect().await?;
        let value = batches.first().filter(|b| b.num_rows() > 0).and_then(|b| {
            let column = arrow_cast::cast(b.column(0), &arrow_schema::DataType::Utf8).ok()?;
            let strings = column
                .as_any()
                .downcast_ref::<arrow_array::StringArray>()?
                .clone();
            use arrow_array::Array;
            strings.is_valid(0).then(|| strings.value(0).to_owned())
        });
        Ok(value)
    }

    /// The merged state, ordered by key when [`Merge::sorted`]: the base's rows no change touches, then each
    /// touched key's newest change unless it is a delete. The newest position per key is a
    /// hash aggregate over the changes alone, and it is the joins' build side (the left),
    /// so the base and the changes' full rows stream through; one sort orders the result, spilling to disk
    /// under the memory limit. (A window over base and changes is 3x slower in DataFusion,
    /// and a base-side build emits its unmatched rows as one batch as large as the table.)
    pub async fn rows(
        &self,
        ctx: &SessionContext,
    ) -> Result<SendableRecordBatchStream, DataFusionError> {
        let on = |left: &str, right: &str| {
            self.key
                .iter()
                .map(|k| format!("{left}.{k} = {right}.{k}", k = ident(k)))
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        let key = ident_list(self.key);
        let position = ident(POSITION);
        let sql = format!(
            "WITH applied AS (SELECT * FROM changes {filter}),
             newest AS (
               SELECT {key}, max({position}) AS __newest FROM applied GROUP BY {key}
             ),
             latest AS (
               SELECT a.* FROM newest n JOIN applied a
                 ON {a_n} AND a.{position} = n.__newest
             )
             SELECT {base_columns} FROM newest n RIGHT ANTI JOIN base b ON {n_b}
             UNION ALL
             SELECT {columns} FROM latest WHERE {op} <> 'D'
             {order}",
            filter = self.changes_filter(),
            a_n = on("a", "n"),
            n_b = on("n", "b"),
            base_columns = rows_at(self.columns, self.fills, self.base_position),
            columns = image_columns(self.columns, self.fills),
            op = ident(OP),
            order = if self.sorted {
                format!("ORDER BY {key}")
            } else {
                String::new()
            },
        );
        ctx.sql(&sql).await?.execute_stream().await
    }
}
