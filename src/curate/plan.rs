//! What curating one table means in this run, decided from what is known before any data
//! is read: the task state, the raw catalog's listing of the table's files, and what the
//! curated table's current snapshot says it applied. Pure functions, unit-tested without
//! servers; `curate_table` carries the decision out.
//!
//! Invariants the decisions keep:
//! - a table whose full load is unfinished, or that has no raw files, is skipped, never
//!   curated from part of its load;
//! - only changes of batches the task confirmed are read (a batch being put in place may
//!   lack some of its files), and of those only the ones after what the table applied;
//! - a table is rebuilt from its LOAD files when it is new, when asked, when its full load
//!   changed (a reload), or when its columns did; otherwise the changes merge into it;
//! - a refusal (an unreadable or non-Parquet file, no key, a table of another task or
//!   another table's history) says what is wrong and what to do;
//! - a row image older than an ADD COLUMN reads what the source's rows read for the new
//!   column ([`fills`]), not the NULL its file has.

use std::collections::{HashMap, HashSet};

use arrow_schema::Schema as ArrowSchema;

use super::CurateError;
use crate::catalog::RawTable;
use crate::lake::layout;
use crate::task::checkpoint::{AddedValue, LoadStatus, SchemaChange};

/// Snapshot summary keys: what a snapshot applied.
pub(super) const APPLIED_POSITION: &str = "tributary.position";
pub(super) const APPLIED_LOAD: &str = "tributary.load";
pub(super) const APPLIED_TASK: &str = "tributary.task";

/// Why a table is written whole, from its LOAD files and every change, instead of merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rebuild {
    /// The curated table does not exist yet (or holds no snapshot).
    New,
    /// `--rebuild`.
    Asked,
    /// The table was loaded again since (a reload): its changes start over.
    LoadChanged,
    /// The raw files have columns (or types) the curated table lacks.
    ColumnsChanged,
}

impl Rebuild {
    /// Why, for people; `None` for a new table (it is created, not rebuilt).
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Rebuild::New => None,
            Rebuild::Asked => Some("asked"),
            Rebuild::LoadChanged => Some("its full load changed"),
            Rebuild::ColumnsChanged => Some("its columns changed"),
        }
    }
}

/// What is known of a table before anything is read.
pub struct Facts<'a> {
    /// The curated table's name, for messages.
    pub name: &'a str,
    pub task: &'a str,
    /// The table's full load in the task state, if it has one (a CDC-only task has none).
    pub load_status: Option<LoadStatus>,
    pub raw: Option<&'a RawTable>,
    pub primary_key: Option<&'a [String]>,
    /// Whether the curated table exists in the catalog.
    pub exists: bool,
    /// The summary of its current snapshot, if it has one.
    pub summary: Option<&'a HashMap<String, String>>,
    /// Whose history the existing Iceberg table is, if it is one.
    pub history_of: Option<&'a str>,
    /// The history table's name, when `[curate] history` asks for one, and whether a source
    /// table the task replicates already has that name.
    pub history: Option<(&'a str, bool)>,
    /// What identifies the table's current full load ([`super::TableJob::load_id`]).
    pub load_id: &'a str,
    /// `--rebuild`.
    pub rebuild: bool,
}

/// The first decision for a table.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision<'a> {
    /// Nothing to curate yet, and why.
    Skip(&'static str),
    /// Curate it from its raw files `raw` by `key`: rebuilt (and why) or merged, with the
    /// changes after `after`.
    Curate {
        raw: &'a RawTable,
        key: Vec<String>,
        rebuild: Option<Rebuild>,
        after: Option<String>,
    },
}

/// Decides whether and how to curate the table `facts` describe; `uri` names a raw file
/// for messages.
pub fn decide<'a>(
    facts: &Facts<'a>,
    uri: impl Fn(&str) -> String,
) -> Result<Decision<'a>, CurateError> {
    let name = || facts.name.to_owned();
    if facts
        .load_status
        .is_some_and(|s| s != LoadStatus::Completed)
    {
        return Ok(Decision::Skip("its full load is not complete"));
    }
    let Some(raw) = facts.raw else {
        return Ok(Decision::Skip("no files in the raw zone yet"));
    };
    if let Some((file, reason)) = raw
        .files
        .iter()
        .find_map(|(k, f)| f.unreadable.as_ref().map(|r| (k, r)))
    {
        return Err(CurateError::Unreadable {
            table: name(),
            file: uri(file),
            reason: reason.clone(),
        });
    }
    if let Some(format) = raw.formats.iter().find(|f| *f != "parquet") {
        return Err(CurateError::NotParquet {
            table: name(),
            format: format.clone(),
        });
    }
    let key = facts
        .primary_key
        .filter(|k| !k.is_empty())
        .ok_or_else(|| CurateError::NoPrimaryKey {
            table: name(),
            task: facts.task.to_owned(),
        })?
        .to_vec();
    if let Some(history_of) = facts.history_of {
        return Err(CurateError::TableIsHistory {
            table: name(),
            history_of: history_of.to_owned(),
        });
    }
    if let Some((history, true)) = facts.history {
        return Err(CurateError::HistoryCollision {
            table: name(),
            history: history.to_owned(),
        });
    }
    if let Some(other) = facts.summary.and_then(|s| s.get(APPLIED_TASK))
        && other != facts.task
    {
        return Err(CurateError::TableOfAnotherTask {
            table: name(),
            task: facts.task.to_owned(),
            other: other.clone(),
        });
    }
    // What the current snapshot applied, if it was built on the same full load.
    let applied = facts
        .summary
        .filter(|s| s.get(APPLIED_LOAD).map(String::as_str) == Some(facts.load_id))
        .map(|s| s.get(APPLIED_POSITION).cloned());
    let rebuild = match (facts.exists, &applied) {
        (false, _) => Some(Rebuild::New),
        _ if facts.rebuild => Some(Rebuild::Asked),
        (true, None) if facts.summary.is_some() => Some(Rebuild::LoadChanged),
        (true, None) => Some(Rebuild::New),
        (true, Some(_)) => None,
    };
    let after = match rebuild {
        Some(_) => None,
        None => applied.flatten(),
    };
    Ok(Decision::Curate {
        raw,
        key,
        rebuild,
        after,
    })
}

/// A table's raw files: its LOAD files, and the CDC files of batches the task confirmed.
pub struct RawFiles<'a> {
    pub load: Vec<&'a String>,
    pub cdc: Vec<&'a String>,
}

impl<'a> RawFiles<'a> {
    /// The files a table is read from: its load (`with_load`, for a rebuild), unless it
    /// started again empty since at `truncated`, its newest truncate (or drop); and the CDC
    /// files that may hold changes after both `after` (what the table applied) and that.
    /// The files before a truncate hold nothing the table has, maybe not even its columns
    /// (a table dropped and created again).
    pub fn from(
        &self,
        raw: &RawTable,
        with_load: bool,
        after: Option<&str>,
        truncated: Option<&str>,
    ) -> (&[&'a String], Vec<&'a String>) {
        let load = match truncated {
            None if with_load => &self.load[..],
            _ => &[],
        };
        let start = apply_after(after, truncated);
        (load, changes_after(raw, &self.cdc, start.as_deref()))
    }
}

/// Splits the table's files into LOAD files (directly in the table folder) and CDC files;
/// keeps only CDC files of confirmed batches: none when nothing is confirmed yet
/// (`confirmed` false), and none of the batch being put in place (`pending`).
pub fn raw_files<'a>(
    raw: &'a RawTable,
    confirmed: bool,
    pending: &HashSet<String>,
) -> RawFiles<'a> {
    let (load, mut cdc): (Vec<&String>, Vec<&String>) = raw.files.keys().partition(|k| {
        raw.files[*k].partition.is_empty()
            && layout::parse_load_number(k.rsplit('/').next().unwrap_or("")).is_some()
    });
    if confirmed {
        cdc.retain(|k| !pending.contains(*k));
    } else {
        cdc.clear();
    }
    RawFiles { load, cdc }
}

/// Of `cdc`, the files that may hold changes after `after`: those whose largest
/// `_position` is past it, and those whose largest is unknown.
pub fn changes_after<'a>(
    raw: &RawTable,
    cdc: &[&'a String],
    after: Option<&str>,
) -> Vec<&'a String> {
    cdc.iter()
        .filter(|k| {
            let max = raw.files.get(**k).and_then(|f| f.max_position.as_deref());
            match (after, max) {
                (Some(after), Some(max)) => max > after,
                _ => true,
            }
        })
        .copied()
        .collect()
}

/// The newest `_position` of the CDC files `changes` after `after` and before `before`, from
/// the files' own statistics, when they tell it: every file's largest position is known
/// and before `before`, so each file's changes all come before it. `None`: they do not
/// tell, and the files must be read.
pub fn newest_from_statistics(
    raw: &RawTable,
    changes: &[&String],
    after: Option<&str>,
    before: Option<&str>,
) -> Option<Option<String>> {
    let mut newest: Option<&str> = None;
    for key in changes {
        let max = raw.files.get(*key)?.max_position.as_deref()?;
        if before.is_some_and(|b| max >= b) {
            return None;
        }
        if after.is_none_or(|a| max > a) && newest.is_none_or(|n| max > n) {
            newest = Some(max);
        }
    }
    Some(newest.map(str::to_owned))
}

/// The newest truncate (or other change that emptied the table) after `after`.
pub fn newest_truncate(truncates: &[String], after: Option<&str>) -> Option<String> {
    truncates
        .iter()
        .filter(|t| after.is_none_or(|a| t.as_str() > a))
        .max()
        .cloned()
}

/// Whether the raw files' data columns (`new`, as the table's files would hold them) add
/// to, or change the type of, the curated table's `current` columns: then the table is
/// rebuilt with them. A column missing from `new` is no change here ([`without_dropped`]
/// decides which columns the source dropped).
pub fn columns_changed(current: &ArrowSchema, new: Option<ArrowSchema>) -> bool {
    new.and_then(|new| ArrowSchema::try_merge([current.clone(), new]).ok())
        .is_none_or(|merged| merged != *current)
}

/// The table's column names as the source has them now: those of its newest recorded
/// columns change, where the change recorded them (`None`: unknown, every column stays).
pub fn source_columns(changes: &[SchemaChange]) -> Option<&[String]> {
    changes
        .iter()
        .rev()
        .find(|c| c.is_columns())
        .map(|c| c.names.as_slice())
        .filter(|names| !names.is_empty())
}

/// `schema`'s columns as the source has them, `names` (`None`: unknown, `schema` as it
/// is): in the source's order, without the columns the source dropped (or renamed away).
/// Those leave the curated table's current schema; its older snapshots keep them.
pub fn without_dropped(schema: &ArrowSchema, names: Option<&[String]>) -> ArrowSchema {
    let Some(names) = names else {
        return schema.clone();
    };
    ArrowSchema::new_with_metadata(
        names
            .iter()
            .filter_map(|n| schema.field_with_name(n).ok())
            .cloned()
            .collect::<Vec<_>>(),
        schema.metadata().clone(),
    )
}

/// Each of `columns`' name in the curated table's current schema, which stands at position
/// `applied` (`None`: every change is after it): back through the renames recorded since,
/// one change at a time (a change's renames happen together: two columns may swap names);
/// `None` where a change since added the column under that name, or the table was dropped
/// (a new column, whatever the current schema holds under its name).
pub fn names_in_current(
    changes: &[SchemaChange],
    applied: Option<&str>,
    columns: &[String],
) -> Vec<Option<String>> {
    let since: Vec<&SchemaChange> = changes
        .iter()
        .filter(|c| applied.is_none_or(|a| c.position.to_string().as_str() > a))
        .collect();
    columns
        .iter()
        .map(|column| {
            let mut at = column.clone();
            for change in since.iter().rev() {
                if change.ends_table() {
                    // Dropped since: the table, and each of its columns, is another.
                    return None;
                }
                if let Some(r) = change.renamed.iter().find(|r| r.to == at) {
                    at = r.from.clone();
                } else if change.added.iter().any(|a| a.name == at) {
                    return None;
                }
            }
            Some(at)
        })
        .collect()
}

/// The position from which changes apply: after what the table applied and after its
/// newest truncate.
pub fn apply_after(after: Option<&str>, truncated_at: Option<&str>) -> Option<String> {
    match (after, truncated_at) {
        (Some(a), Some(t)) => Some(a.max(t).to_owned()),
        (a, t) => a.or(t).map(str::to_owned),
    }
}

/// Column `column` reads `read` in every row image whose position is before `before`: the
/// rows an ADD COLUMN at `before` did not touch read its value, and the images older than a
/// RENAME COLUMN at `before` hold the column under its old name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fill {
    pub column: String,
    pub before: String,
    pub read: Read,
}

/// What an older image of a column reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// This value (the recorded text; `None` for NULL).
    Value(Option<String>),
    /// The image's column of this name.
    Column(String),
}

/// The fills of a table's `columns` from its recorded schema changes (oldest first), for
/// each column newest first: back through the renames that gave it its name (each a
/// [`Read::Column`] of the name before), to the addition that created it, whose value every
/// older image of the row reads at the source (a column dropped and added again reads the
/// new default). An addition whose value is unknown fills nothing: the task warned to
/// reload the table.
pub fn fills(changes: &[SchemaChange], columns: &[String]) -> Vec<Fill> {
    let mut fills = Vec::new();
    for column in columns {
        let mut name = column.as_str();
        // Only changes before the rename followed last apply to the older name.
        let mut until = changes.len();
        while let Some((at, change)) = changes[..until].iter().enumerate().rev().find(|(_, c)| {
            c.added.iter().any(|a| a.name == name) || c.renamed.iter().any(|r| r.to == name)
        }) {
            let before = change.position.to_string();
            if let Some(renamed) = change.renamed.iter().find(|r| r.to == name) {
                fills.push(Fill {
                    column: column.clone(),
                    before,
                    read: Read::Column(renamed.from.clone()),
                });
                name = renamed.from.as_str();
                until = at;
                continue;
            }
            let value = change
                .added
                .iter()
                .find(|a| a.name == name)
                .map(|a| &a.value);
            let value = match value {
                Some(AddedValue::Constant(v)) => Some(v.clone()),
                Some(AddedValue::Null) => None,
                _ => break,
            };
            fills.push(Fill {
                column: column.clone(),
                before,
                read: Read::Value(value),
            });
            break;
        }
    }
    fills
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use arrow_schema::{DataType, Field};

    use super::*;
    use crate::catalog::RawFile;

    fn raw(files: &[(&str, &str, Option<&str>)]) -> RawTable {
        RawTable {
            source: "shop".into(),
            schema: "public".into(),
            table: "t".into(),
            location: "raw/shop/public/t/".into(),
            formats: BTreeSet::from(["parquet".to_owned()]),
            versions: Vec::new(),
            file_schemas: Vec::new(),
            files: files
                .iter()
                .map(|(key, partition, max)| {
                    let file = RawFile {
                        size: 1,
                        last_modified: None,
                        partition: (*partition).to_owned(),
                        rows: Some(1),
                        schema: None,
                        unreadable: None,
                        max_position: max.map(str::to_owned),
                    };
                    ((*key).to_owned(), file)
                })
                .collect(),
        }
    }

    #[test]
    fn the_newest_change_comes_from_statistics_only_when_every_file_is_before_the_end() {
        let table = raw(&[
            ("t/2026/a.parquet", "2026", Some("0003")),
            ("t/2026/b.parquet", "2026", Some("0007")),
            ("t/2026/c.parquet", "2026", None),
        ]);
        let keys: Vec<String> = ["t/2026/a.parquet", "t/2026/b.parquet", "t/2026/c.parquet"]
            .map(String::from)
            .to_vec();
        let files: Vec<&String> = keys.iter().collect();
        let known =
            |files: &[&String], after, before| newest_from_statistics(&table, files, after, before);
        assert_eq!(
            known(&files[..2], None, Some("0009")),
            Some(Some("0007".into()))
        );
        assert_eq!(known(&files[..2], Some("0007"), Some("0009")), Some(None));
        assert_eq!(
            known(&files[..1], Some("0001"), None),
            Some(Some("0003".into()))
        );
        // A file reaching the end, or one without statistics: the files must be read.
        assert_eq!(known(&files[..2], None, Some("0007")), None);
        assert_eq!(known(&files, None, Some("0009")), None);
    }

    fn facts<'a>(raw: Option<&'a RawTable>, key: &'a [String]) -> Facts<'a> {
        Facts {
            name: "shop.public.t",
            task: "cdc",
            load_status: Some(LoadStatus::Completed),
            raw,
            primary_key: Some(key),
            exists: false,
            summary: None,
            history_of: None,
            history: None,
            load_id: "0/1|1 files|10 bytes",
            rebuild: false,
        }
    }

    fn summary(task: &str, load: &str, position: &str) -> HashMap<String, String> {
        HashMap::from([
            (APPLIED_TASK.to_owned(), task.to_owned()),
            (APPLIED_LOAD.to_owned(), load.to_owned()),
            (APPLIED_POSITION.to_owned(), position.to_owned()),
        ])
    }

    fn uri(key: &str) -> String {
        format!("/lake/{key}")
    }

    fn schema(fields: &[(&str, DataType)]) -> ArrowSchema {
        ArrowSchema::new(
            fields
                .iter()
                .map(|(n, t)| Field::new(*n, t.clone(), true))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn a_column_the_newest_shape_lacks_leaves_the_current_schema() {
        let change = |names: &[&str]| {
            SchemaChange::columns(
                crate::source::position::ChangePosition::postgres(1, 0),
                "sig",
                names.iter().map(|n| (*n).to_owned()).collect(),
            )
        };
        let curated = schema(&[
            ("id", DataType::Int64),
            ("gone", DataType::Utf8),
            ("kept", DataType::Utf8),
        ]);
        assert_eq!(source_columns(&[]), None);
        let changes = [change(&["id", "gone", "kept"]), change(&["id", "kept"])];
        let names = source_columns(&changes);
        let left = without_dropped(&curated, names);
        let left: Vec<&str> = left.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(left, ["id", "kept"]);
        // A state written before names were recorded drops nothing.
        let unknown = [change(&[])];
        assert_eq!(without_dropped(&curated, source_columns(&unknown)), curated);
    }

    #[test]
    fn a_table_is_created_then_merged_after_what_it_applied() {
        let table = raw(&[("raw/shop/public/t/LOAD00000001.parquet", "", None)]);
        let key = ["id".to_owned()];
        let new = facts(Some(&table), &key);
        assert_eq!(
            decide(&new, uri).unwrap(),
            Decision::Curate {
                raw: &table,
                key: key.to_vec(),
                rebuild: Some(Rebuild::New),
                after: None
            }
        );
        let current = summary("cdc", new.load_id, "00A");
        let existing = Facts {
            exists: true,
            summary: Some(&current),
            ..facts(Some(&table), &key)
        };
        assert_eq!(
            decide(&existing, uri).unwrap(),
            Decision::Curate {
                raw: &table,
                key: key.to_vec(),
                rebuild: None,
                after: Some("00A".into())
            }
        );
        let asked = Facts {
            rebuild: true,
            ..existing
        };
        assert!(matches!(
            decide(&asked, uri).unwrap(),
            Decision::Curate {
                rebuild: Some(Rebuild::Asked),
                after: None,
                ..
            }
        ));
    }

    #[test]
    fn a_reload_rebuilds_and_an_unfinished_or_missing_load_skips() {
        let table = raw(&[("raw/shop/public/t/LOAD00000001.parquet", "", None)]);
        let key = ["id".to_owned()];
        let before_reload = summary("cdc", "another load", "00A");
        let reloaded = Facts {
            exists: true,
            summary: Some(&before_reload),
            ..facts(Some(&table), &key)
        };
        assert!(matches!(
            decide(&reloaded, uri).unwrap(),
            Decision::Curate {
                rebuild: Some(Rebuild::LoadChanged),
                after: None,
                ..
            }
        ));
        let loading = Facts {
            load_status: Some(LoadStatus::Loading),
            ..facts(Some(&table), &key)
        };
        assert_eq!(
            decide(&loading, uri).unwrap(),
            Decision::Skip("its full load is not complete")
        );
        assert_eq!(
            decide(&facts(None, &key), uri).unwrap(),
            Decision::Skip("no files in the raw zone yet")
        );
    }

    #[test]
    fn refusals_name_the_table_and_the_fix() {
        let key = ["id".to_owned()];
        let mut unreadable = raw(&[("raw/shop/public/t/LOAD00000001.parquet", "", None)]);
        for f in unreadable.files.values_mut() {
            f.unreadable = Some("not Parquet".into());
        }
        let e = decide(&facts(Some(&unreadable), &key), uri).unwrap_err();
        assert!(
            e.to_string()
                .contains("/lake/raw/shop/public/t/LOAD00000001.parquet"),
            "{e}"
        );

        let mut csv = raw(&[("raw/shop/public/t/LOAD00000001.csv", "", None)]);
        csv.formats = BTreeSet::from(["csv".to_owned()]);
        let e = decide(&facts(Some(&csv), &key), uri).unwrap_err();
        assert!(e.to_string().contains("data_format = \"parquet\""), "{e}");

        let table = raw(&[("raw/shop/public/t/LOAD00000001.parquet", "", None)]);
        let e = decide(&facts(Some(&table), &[]), uri).unwrap_err();
        assert!(matches!(e, CurateError::NoPrimaryKey { .. }), "{e}");

        let other = summary("another-task", "x", "00A");
        let e = decide(
            &Facts {
                exists: true,
                summary: Some(&other),
                ..facts(Some(&table), &key)
            },
            uri,
        )
        .unwrap_err();
        assert!(matches!(e, CurateError::TableOfAnotherTask { .. }), "{e}");

        let e = decide(
            &Facts {
                history_of: Some("shop.public.x"),
                ..facts(Some(&table), &key)
            },
            uri,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("holds the history of shop.public.x"),
            "{e}"
        );

        let e = decide(
            &Facts {
                history: Some(("shop.public.t_history", true)),
                ..facts(Some(&table), &key)
            },
            uri,
        )
        .unwrap_err();
        assert!(e.to_string().contains("Remove \"shop.public.t\""), "{e}");
        let free = Facts {
            history: Some(("shop.public.t_history", false)),
            ..facts(Some(&table), &key)
        };
        assert!(decide(&free, uri).is_ok());
    }

    #[test]
    fn only_confirmed_changes_after_the_applied_position_are_read() {
        let table = raw(&[
            ("raw/shop/public/t/LOAD00000001.parquet", "", None),
            (
                "raw/shop/public/t/2026/01/01/a.parquet",
                "2026/01/01",
                Some("005"),
            ),
            (
                "raw/shop/public/t/2026/01/01/b.parquet",
                "2026/01/01",
                Some("009"),
            ),
            ("raw/shop/public/t/2026/01/01/c.parquet", "2026/01/01", None),
            (
                "raw/shop/public/t/2026/01/02/pending.parquet",
                "2026/01/02",
                Some("012"),
            ),
        ]);
        let pending = HashSet::from(["raw/shop/public/t/2026/01/02/pending.parquet".to_owned()]);
        let files = raw_files(&table, true, &pending);
        assert_eq!(files.load.len(), 1);
        assert_eq!(files.cdc.len(), 3, "the pending batch's file is left out");
        assert!(
            raw_files(&table, false, &pending).cdc.is_empty(),
            "nothing confirmed"
        );
        let names = |v: Vec<&String>| -> Vec<String> {
            v.iter()
                .map(|k| k.rsplit('/').next().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            names(changes_after(&table, &files.cdc, Some("005"))),
            ["b.parquet", "c.parquet"],
            "a file whose newest change is unknown is read"
        );
        assert_eq!(changes_after(&table, &files.cdc, None).len(), 3);
    }

    #[test]
    fn truncates_and_columns_decide_what_applies() {
        let truncates = ["003".to_owned(), "007".to_owned()];
        assert_eq!(newest_truncate(&truncates, Some("005")), Some("007".into()));
        assert_eq!(newest_truncate(&truncates, Some("007")), None);
        assert_eq!(newest_truncate(&truncates, None), Some("007".into()));
        assert_eq!(
            apply_after(Some("005"), Some("007")).as_deref(),
            Some("007")
        );
        assert_eq!(
            apply_after(Some("009"), Some("007")).as_deref(),
            Some("009")
        );
        assert_eq!(apply_after(None, None), None);

        let current = schema(&[("id", DataType::Int32), ("v", DataType::Utf8)]);
        assert!(!columns_changed(&current, Some(current.clone())));
        assert!(
            !columns_changed(&current, Some(schema(&[("id", DataType::Int32)]))),
            "a dropped column stays"
        );
        assert!(columns_changed(
            &current,
            Some(schema(&[("id", DataType::Int32), ("w", DataType::Utf8)]))
        ));
        assert!(columns_changed(
            &current,
            Some(schema(&[("id", DataType::Int64)]))
        ));
        assert!(
            columns_changed(&current, None),
            "an unreadable schema rebuilds"
        );
    }

    #[test]
    fn images_older_than_an_add_column_read_its_newest_recorded_value() {
        use crate::source::position::ChangePosition;
        use crate::task::checkpoint::AddedColumn;
        let add = |lsn, name: &str, value| {
            let mut change =
                SchemaChange::columns(ChangePosition::postgres(lsn, 0), "", Vec::new());
            change.added = vec![AddedColumn {
                name: name.into(),
                value,
            }];
            change
        };
        let changes = [
            add(1, "a", AddedValue::Constant("1".into())),
            add(2, "b", AddedValue::Null),
            add(3, "c", AddedValue::Unknown("volatile".into())),
            // Dropped and added again: the newest addition counts.
            add(4, "a", AddedValue::Constant("7".into())),
        ];
        let columns = ["id", "a", "b", "c"].map(String::from);
        assert_eq!(
            fills(&changes, &columns),
            vec![
                Fill {
                    column: "a".into(),
                    before: ChangePosition::postgres(4, 0).to_string(),
                    read: Read::Value(Some("7".into())),
                },
                Fill {
                    column: "b".into(),
                    before: ChangePosition::postgres(2, 0).to_string(),
                    read: Read::Value(None),
                },
            ]
        );
        assert!(fills(&[], &columns).is_empty());
    }

    #[test]
    fn a_renamed_column_reads_its_older_names_then_its_default() {
        use crate::source::RenamedColumn;
        use crate::source::position::ChangePosition;
        use crate::task::checkpoint::AddedColumn;
        let at = |lsn| ChangePosition::postgres(lsn, 0);
        let mut add = SchemaChange::columns(at(1), "", Vec::new());
        add.added = vec![AddedColumn {
            name: "a".into(),
            value: AddedValue::Constant("5".into()),
        }];
        let rename = |lsn, from: &str, to: &str| {
            let mut change = SchemaChange::columns(at(lsn), "", Vec::new());
            change.renamed = vec![RenamedColumn {
                from: from.into(),
                to: to.into(),
            }];
            change
        };
        // a added with 5, renamed to b, to c; then another a added without a default.
        let mut again = SchemaChange::columns(at(4), "", Vec::new());
        again.added = vec![AddedColumn {
            name: "a".into(),
            value: AddedValue::Null,
        }];
        let changes = [add, rename(2, "a", "b"), rename(3, "b", "c"), again];
        let fill = |column: &str, lsn, read| Fill {
            column: column.into(),
            before: at(lsn).to_string(),
            read,
        };
        assert_eq!(
            fills(&changes, &["c".into(), "a".into()]),
            vec![
                fill("c", 3, Read::Column("b".into())),
                fill("c", 2, Read::Column("a".into())),
                fill("c", 1, Read::Value(Some("5".into()))),
                fill("a", 4, Read::Value(None)),
            ]
        );
    }

    #[test]
    fn a_column_is_found_in_the_current_schema_back_through_its_renames() {
        use crate::source::RenamedColumn;
        use crate::source::position::ChangePosition;
        use crate::task::checkpoint::AddedColumn;
        let at = |lsn| ChangePosition::postgres(lsn, 0);
        let change = |lsn, renamed: &[(&str, &str)], added: &[&str]| {
            let mut c = SchemaChange::columns(at(lsn), "", Vec::new());
            c.renamed = renamed
                .iter()
                .map(|(from, to)| RenamedColumn {
                    from: (*from).into(),
                    to: (*to).into(),
                })
                .collect();
            c.added = added
                .iter()
                .map(|name| AddedColumn {
                    name: (*name).into(),
                    value: AddedValue::Null,
                })
                .collect();
            c
        };
        let changes = [
            // Before the curated table's position: its schema knows it.
            change(1, &[("x", "y")], &[]),
            // a and b swap names; then c becomes d and a new c is added.
            change(3, &[("a", "b"), ("b", "a")], &[]),
            change(4, &[("c", "d")], &[]),
            change(5, &[], &["c"]),
        ];
        let applied = at(2).to_string();
        let columns = ["y", "a", "b", "d", "c"].map(String::from);
        assert_eq!(
            names_in_current(&changes, Some(&applied), &columns),
            vec![
                Some("y".into()),
                Some("b".into()),
                Some("a".into()),
                Some("c".into()),
                None
            ]
        );
        // Dropped and created again since: every column is new, renamed before or not.
        let drop = SchemaChange::other(at(6), SchemaChange::DROP);
        let again = [change(3, &[("a", "b")], &[]), drop, change(7, &[], &[])];
        assert_eq!(
            names_in_current(&again, Some(&applied), &["a".into(), "b".into()]),
            vec![None, None]
        );
    }
}
