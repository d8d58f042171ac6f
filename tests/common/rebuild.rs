//! Rebuilding a table from the raw zone, as a reader applying CDC would: the LOAD files,
//! then every change in `_position` order, with truncates at their positions.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::DataType;

use super::{files_under, read_parquet_file};

pub type Row = BTreeMap<String, String>;
/// A table's rows by primary key (`id` as text); NULL columns are left out, so a row
/// written before a column was added equals one that has it NULL.
pub type TableRows = BTreeMap<String, Row>;

pub const META: [&str; 3] = ["Op", "_position", "changed_at"];

pub fn rows_of(batch: &RecordBatch) -> Vec<Row> {
    let options = FormatOptions::default();
    // Timestamps with a zone: the same UTC values without it (no zone database here).
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Timestamp(_, Some(_)) => Arc::new(
                c.as_primitive::<TimestampMicrosecondType>()
                    .clone()
                    .with_timezone_opt(None::<String>),
            ) as ArrayRef,
            _ => c.clone(),
        })
        .collect();
    let formatters: Vec<_> = columns
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
        .collect();
    (0..batch.num_rows())
        .map(|i| {
            batch
                .schema()
                .fields()
                .iter()
                .zip(batch.columns())
                .zip(&formatters)
                .filter(|((_, c), _)| c.is_valid(i))
                .map(|((f, _), fmt)| (f.name().clone(), fmt.value(i).to_string()))
                .collect()
        })
        .collect()
}

/// The table as the raw zone tells it: LOAD files, then every CDC change by `_position`,
/// with the truncates the task state records at their positions. Also checks that no
/// change appears twice.
pub fn rebuild(table_dir: &Path, truncates: &[String]) -> TableRows {
    let mut state = TableRows::new();
    let mut changes: Vec<Row> = Vec::new();
    for f in files_under(table_dir) {
        let batches = read_parquet_file(&table_dir.join(&f));
        let name = f.rsplit('/').next().unwrap();
        for batch in &batches {
            for row in rows_of(batch) {
                if name.starts_with("LOAD") {
                    state.insert(row["id"].clone(), strip(row));
                } else {
                    changes.push(row);
                }
            }
        }
    }
    changes.sort_by(|a, b| a["_position"].cmp(&b["_position"]));
    let mut seen = HashSet::new();
    let mut truncates = truncates.iter().peekable();
    for change in changes {
        while truncates.next_if(|t| **t < change["_position"]).is_some() {
            state.clear();
        }
        assert!(
            seen.insert(change["_position"].clone()),
            "change {} written twice",
            change["_position"]
        );
        let id = change["id"].clone();
        match change["Op"].as_str() {
            "D" => {
                state.remove(&id);
            }
            "I" | "U" => {
                state.insert(id, strip(change));
            }
            op => panic!("unknown Op {op}"),
        }
    }
    if truncates.next().is_some() {
        state.clear();
    }
    state
}

/// The positions of the truncates (and the other changes that empty a table: a drop, a
/// rename away) of `table` (`schema.table`) recorded in the task's state.
pub fn truncates(state_file: &Path, table: &str) -> Vec<String> {
    let Ok(bytes) = std::fs::read(state_file) else {
        return Vec::new();
    };
    let state: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    state["cdc"]["tables"][table]["schema_changes"]
        .as_array()
        .map(|changes| {
            changes
                .iter()
                .filter(|c| {
                    let change = c["change"].as_str().unwrap_or_default();
                    change == "truncate" || change == "drop" || change.starts_with("renamed to ")
                })
                .map(|c| c["position"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub fn strip(mut row: Row) -> Row {
    for m in META {
        row.remove(m);
    }
    row
}

/// Asserts that table `t` rebuilt from the raw zone (`actual`) equals a fresh full load of
/// the source (`want`), row for row, on the columns the source has now (older rows may carry
/// since-dropped columns).
pub fn assert_table_equals(t: &str, actual: &TableRows, want: &TableRows) {
    let columns: HashSet<&String> = want.values().flat_map(|r| r.keys()).collect();
    assert_eq!(actual.len(), want.len(), "{t}: row count");
    for (id, row) in want {
        let got: Option<Row> = actual.get(id).map(|r| {
            r.iter()
                .filter(|(k, _)| columns.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        });
        assert_eq!(got.as_ref(), Some(row), "{t}: row {id}");
    }
}

/// The `Op` and `id` of every change in the CDC files (all but `LOAD*`) of a table.
pub fn cdc_changes(table_dir: &Path) -> Vec<(String, String)> {
    files_under(table_dir)
        .iter()
        .filter(|f| !f.rsplit('/').next().unwrap().starts_with("LOAD"))
        .flat_map(|f| read_parquet_file(&table_dir.join(f)))
        .flat_map(|b| rows_of(&b))
        .map(|r| (r["Op"].clone(), r["id"].clone()))
        .collect()
}
