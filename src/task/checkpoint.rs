//! A task's durable state in the target: `<bucket_folder>/_tributary/<task>/state.json`.
//!
//! Invariants:
//! - the state is rewritten whole and atomically ([`Storage::put_bytes`]) after each table
//!   range completes, so it always describes files that are durably in place;
//! - a full-load file that the state does not list belongs to an unfinished range and is
//!   deleted on resume, so a killed load leaves neither partial nor duplicate files;
//! - the range plan of a table is fixed when the table is first planned and reused on resume;
//! - CDC: before a batch's files are put in place, their keys are recorded as the pending
//!   batch; once all are in place, the batch's end position becomes `confirmed_position` and
//!   the pending batch is cleared, in one write. Only then is the slot advanced. A restart
//!   deletes the files of a pending batch and streams again from `confirmed_position`, so
//!   every change lands in exactly one file;
//! - a table reloaded alone while CDC goes on ([`super::reload`]) carries `changes_from`:
//!   the stream's changes to it before that `_position` are in its new load, and are
//!   never written.

use crate::source::position::{ChangePosition, SourcePosition};
use std::collections::BTreeMap;

use arrow_array::{Array, ArrayRef, StringArray};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_cast::{CastOptions, cast_with_options};
use arrow_schema::{ArrowError, DataType};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::ident::TableId;
use crate::lake::layout;
use crate::lake::{Storage, StorageError};
use crate::source::{RenamedColumn, SourceIdentity, TableRange};

const STATE_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(
        "task state {uri} is unreadable ({source}). Move it away to start the task afresh (its data files stay)"
    )]
    Corrupt {
        uri: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "task state {uri} was written by task '{found}', not '{expected}'. Two tasks must not share a bucket_folder and name"
    )]
    WrongTask {
        uri: String,
        found: String,
        expected: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskState {
    pub version: u32,
    pub task: String,
    pub source_endpoint: String,
    /// Where the snapshot the last full load read from stands in the source's log.
    pub snapshot_position: Option<SourcePosition>,
    pub full_load_started_at: Option<DateTime<Utc>>,
    pub full_load_completed_at: Option<DateTime<Utc>>,
    /// Keyed by table (written `schema.table`, see [`TableId`]).
    pub tables: BTreeMap<TableId, TableLoadState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdc: Option<CdcState>,
    /// Tables of a CDC task to load again, alone, from a new snapshot.
    /// Recorded before anything is deleted and cleared when their loads complete, so an
    /// interrupted reload starts over on the next run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reloading: Vec<TableId>,
    /// The primary key columns of every table the task selects, as last discovered:
    /// curation merges changes by them without asking the source.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub primary_keys: BTreeMap<TableId, Vec<String>>,
}

/// Where change data capture stands.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CdcState {
    pub slot: String,
    pub publication: String,
    /// The end of the last transaction whose changes are durably in files. Streaming
    /// resumes after it.
    pub confirmed_position: Option<SourcePosition>,
    /// A batch being put in place: on restart its files are deleted and it is redone.
    pub pending_batch: Option<PendingBatch>,
    pub batches: u64,
    /// Milliseconds since the epoch of the newest CDC file name, so names keep increasing.
    pub last_file_millis: i64,
    pub tables: BTreeMap<TableId, CdcTableState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingBatch {
    pub keys: Vec<String>,
    pub end_position: SourcePosition,
}

/// What CDC has written for one table, and its schema history.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CdcTableState {
    pub inserts: u64,
    pub updates: u64,
    pub deletes: u64,
    pub ddls: u64,
    pub files: u64,
    pub bytes: u64,
    /// Schema changes and truncates seen in the stream, oldest first.
    pub schema_changes: Vec<SchemaChange>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SchemaChange {
    /// The `_position` from which the change applies.
    pub position: ChangePosition,
    /// What happened: `columns: id int8, name text, email text` (the table's columns from
    /// here on), or one of the changes that empty the table ([`Self::empties_table`]):
    /// `truncate`, `drop` (MySQL's DROP TABLE / DATABASE), `renamed to <schema.table>`.
    pub change: String,
    /// The column names from here on (a columns change; empty in states written before
    /// they were recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// The columns this change added, with what the rows it did not touch read for them:
    /// every row image before [`Self::position`] (a load's rows included, when the load's
    /// snapshot is before it) reads [`AddedValue::Constant`] for the column.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<AddedColumn>,
    /// The columns this change renamed: every row image before [`Self::position`] holds
    /// the column under its old name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub renamed: Vec<RenamedColumn>,
    /// How the source knows the table and these columns (PostgreSQL), to tell the next
    /// change's renames and a table created again under the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<SourceIdentity>,
}

/// A column a schema change added, and the value rows older than the change read for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddedColumn {
    pub name: String,
    pub value: AddedValue,
}

/// What rows older than an ADD COLUMN read for the new column at the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddedValue {
    /// This value, as text an Arrow cast turns into the raw zone's type of the column
    /// exactly (checked when it was recorded): PostgreSQL's fast default
    /// (`pg_attribute.attmissingval`).
    Constant(String),
    /// NULL: the column was added without a default.
    Null,
    /// Not in the change log (a volatile default, an identity or generated column, or a
    /// rewrite since): why. The table must be reloaded to hold the source's values.
    Unknown(String),
}

impl AddedValue {
    /// The constant of the one value in `value` (the column's type in the raw zone): its
    /// text, when an Arrow cast of that text gives the same value back; otherwise unknown,
    /// since a value the lake cannot write exactly must not be guessed.
    pub fn constant(value: &dyn Array) -> AddedValue {
        let unknown = || {
            AddedValue::Unknown(format!(
                "its default has no exact text form for the lake's type {}",
                value.data_type()
            ))
        };
        if value.len() != 1 {
            return unknown();
        }
        if value.is_null(0) {
            return AddedValue::Null;
        }
        let Ok(formatter) = ArrayFormatter::try_new(value, &FormatOptions::default()) else {
            return unknown();
        };
        let text = formatter.value(0).to_string();
        match cast_text(&text, value.data_type()) {
            Ok(back) if back.as_ref() == value => AddedValue::Constant(text),
            _ => unknown(),
        }
    }

    /// The constant of `text` cast to `data_type` ([`Self::constant`]); unknown when the
    /// cast fails.
    pub fn from_text(text: &str, data_type: &DataType) -> AddedValue {
        match cast_text(text, data_type) {
            Ok(value) => AddedValue::constant(value.as_ref()),
            Err(_) => AddedValue::Unknown(format!(
                "its default {text:?} does not convert exactly to the lake's type {data_type}"
            )),
        }
    }
}

/// `text` as a one-value array of `data_type`, by the cast curate reads recorded values
/// with (an error, not a NULL, where it does not convert).
fn cast_text(text: &str, data_type: &DataType) -> Result<ArrayRef, ArrowError> {
    let options = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    cast_with_options(&StringArray::from(vec![text]), data_type, &options)
}

impl SchemaChange {
    pub const TRUNCATE: &str = "truncate";
    pub const DROP: &str = "drop";
    const RENAMED_TO: &str = "renamed to ";
    const COLUMNS: &str = "columns: ";

    pub fn columns(position: ChangePosition, signature: &str, names: Vec<String>) -> Self {
        SchemaChange {
            position,
            change: format!("{}{signature}", Self::COLUMNS),
            names,
            added: Vec::new(),
            renamed: Vec::new(),
            identity: None,
        }
    }

    /// A change that records no columns: `truncate`, `drop`.
    pub fn other(position: ChangePosition, change: &str) -> Self {
        SchemaChange {
            position,
            change: change.to_owned(),
            names: Vec::new(),
            added: Vec::new(),
            renamed: Vec::new(),
            identity: None,
        }
    }

    pub fn renamed_to(position: ChangePosition, to: &TableId) -> Self {
        SchemaChange::other(position, &format!("{}{to}", Self::RENAMED_TO))
    }

    /// Whether this records the table's columns.
    pub fn is_columns(&self) -> bool {
        self.change.starts_with(Self::COLUMNS)
    }

    /// The column names of a columns change: those recorded, or, in a state written before
    /// they were, each `name type` of its signature up to the first space (a name with a
    /// space in it then reads as another column, which can only make a change look larger).
    pub fn column_names(&self) -> Vec<String> {
        if !self.names.is_empty() {
            return self.names.clone();
        }
        self.change
            .strip_prefix(Self::COLUMNS)
            .unwrap_or("")
            .split(", ")
            .filter(|c| !c.is_empty())
            .map(|c| c.split_once(' ').map_or(c, |(name, _)| name).to_owned())
            .collect()
    }

    /// Whether what comes after this is another table under the same name: the table was
    /// dropped or renamed away (not truncated).
    pub fn ends_table(&self) -> bool {
        self.change == Self::DROP || self.change.starts_with(Self::RENAMED_TO)
    }

    /// Whether the table holds no row from here on: a reader rebuilding it from the raw
    /// zone starts it empty at this position.
    pub fn empties_table(&self) -> bool {
        self.change == Self::TRUNCATE
            || self.change == Self::DROP
            || self.change.starts_with(Self::RENAMED_TO)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoadStatus {
    Pending,
    Loading,
    Completed,
    Error,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableLoadState {
    pub schema: String,
    pub table: String,
    pub status: LoadStatus,
    pub ranges: Vec<RangeState>,
    /// The next `LOADxxxxxxxx` counter to use.
    pub next_file_number: u32,
    pub last_error: Option<String>,
    /// Where the snapshot the table was first read from stands in the source's log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_position: Option<SourcePosition>,
    /// The columns the load reads, in order (empty in states written before they were
    /// recorded): the shape CDC compares the table's first schema change with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// How the source knows the table and those columns (PostgreSQL), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<SourceIdentity>,
    /// The first `_position` of the change stream that applies to this table, when it was
    /// reloaded alone from a snapshot later than where the stream stands: the changes
    /// before it are in the load, so the stream's copies of them are passed by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes_from: Option<ChangePosition>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RangeState {
    pub range: TableRange,
    pub done: bool,
    pub rows: u64,
    pub files: Vec<FileRecord>,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// The key in the target.
    pub key: String,
    pub rows: u64,
    pub bytes: u64,
}

impl TableLoadState {
    pub fn new(schema: &str, table: &str, ranges: Vec<TableRange>) -> Self {
        TableLoadState {
            schema: schema.into(),
            table: table.into(),
            status: LoadStatus::Pending,
            ranges: ranges
                .into_iter()
                .map(|range| RangeState {
                    range,
                    done: false,
                    rows: 0,
                    files: Vec::new(),
                    seconds: 0.0,
                })
                .collect(),
            next_file_number: 1,
            last_error: None,
            snapshot_position: None,
            columns: Vec::new(),
            identity: None,
            changes_from: None,
        }
    }

    pub fn rows(&self) -> u64 {
        self.ranges.iter().filter(|r| r.done).map(|r| r.rows).sum()
    }

    pub fn files(&self) -> impl Iterator<Item = &FileRecord> {
        self.ranges.iter().filter(|r| r.done).flat_map(|r| &r.files)
    }

    /// The counter after every file a completed range holds.
    pub fn first_free_number(&self) -> u32 {
        self.files()
            .filter_map(|f| layout::parse_load_number(f.key.rsplit('/').next().unwrap_or("")))
            .max()
            .map_or(1, |n| n + 1)
    }
}

/// Reads and writes a task's state, one writer at a time.
pub struct Checkpoint {
    storage: Storage,
    key: String,
    state: Mutex<TaskState>,
}

impl Checkpoint {
    /// Loads the task's state, or starts an empty one.
    pub async fn open(
        storage: Storage,
        bucket_folder: &str,
        task: &str,
        source_endpoint: &str,
    ) -> Result<Checkpoint, CheckpointError> {
        let key = format!(
            "{}state.json",
            layout::task_state_prefix(bucket_folder, task)
        );
        let state = match storage.get_bytes(&key).await? {
            Some(bytes) => {
                let state: TaskState =
                    serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt {
                        uri: storage.uri(&key),
                        source: e,
                    })?;
                let mut state: TaskState = state;
                // A table's own fields name it exactly; keys written before tables were
                // pairs may have split a dotted schema name at the wrong dot.
                state.tables = std::mem::take(&mut state.tables)
                    .into_values()
                    .map(|t| (TableId::new(&t.schema, &t.table), t))
                    .collect();
                if state.task != task {
                    return Err(CheckpointError::WrongTask {
                        uri: storage.uri(&key),
                        found: state.task,
                        expected: task.into(),
                    });
                }
                state
            }
            None => TaskState {
                version: STATE_VERSION,
                task: task.into(),
                source_endpoint: source_endpoint.into(),
                snapshot_position: None,
                full_load_started_at: None,
                full_load_completed_at: None,
                tables: BTreeMap::new(),
                cdc: None,
                reloading: Vec::new(),
                primary_keys: BTreeMap::new(),
            },
        };
        Ok(Checkpoint {
            storage,
            key,
            state: Mutex::new(state),
        })
    }

    pub async fn snapshot(&self) -> TaskState {
        self.state.lock().await.clone()
    }

    /// Applies `change` and writes the state durably before returning.
    pub async fn update<R>(
        &self,
        change: impl FnOnce(&mut TaskState) -> R,
    ) -> Result<R, CheckpointError> {
        let mut state = self.state.lock().await;
        let result = change(&mut state);
        let json = serde_json::to_vec_pretty(&*state).map_err(|e| CheckpointError::Corrupt {
            uri: self.storage.uri(&self.key),
            source: e,
        })?;
        self.storage.put_bytes(&self.key, Bytes::from(json)).await?;
        Ok(result)
    }

    /// Records the primary keys of `tables` (written only when they changed).
    pub async fn record_primary_keys(
        &self,
        tables: &[crate::source::TableInfo],
    ) -> Result<(), CheckpointError> {
        let keys: BTreeMap<TableId, Vec<String>> = tables
            .iter()
            .map(|t| (t.id(), t.primary_key.clone()))
            .collect();
        let known = self.state.lock().await.primary_keys.clone();
        if keys.iter().all(|(t, k)| known.get(t) == Some(k)) {
            return Ok(());
        }
        self.update(|s| s.primary_keys.extend(keys)).await
    }

    /// Forgets everything (for a reload); the caller deletes the data files.
    pub async fn reset(&self) -> Result<(), CheckpointError> {
        self.update(|s| {
            s.tables.clear();
            s.snapshot_position = None;
            s.full_load_started_at = None;
            s.full_load_completed_at = None;
            s.cdc = None;
            s.reloading.clear();
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{
        ArrayRef, BinaryArray, BooleanArray, Decimal128Array, Int16Array, TimestampMicrosecondArray,
    };

    use super::*;

    fn constant(array: ArrayRef) -> AddedValue {
        AddedValue::constant(array.as_ref())
    }

    #[test]
    fn a_default_is_recorded_only_when_its_text_gives_it_back() {
        let t = |s: &str| AddedValue::Constant(s.to_owned());
        assert_eq!(
            constant(Arc::new(BooleanArray::from(vec![true]))),
            t("true")
        );
        assert_eq!(constant(Arc::new(Int16Array::from(vec![-7]))), t("-7"));
        let money = Decimal128Array::from(vec![1250])
            .with_precision_and_scale(12, 2)
            .expect("valid");
        assert_eq!(constant(Arc::new(money)), t("12.50"));
        let at = TimestampMicrosecondArray::from(vec![1_700_000_000_123_456]).with_timezone("UTC");
        let AddedValue::Constant(text) = constant(Arc::new(at.clone())) else {
            panic!("a timestamp has an exact text form");
        };
        let back = cast_with_options(
            &StringArray::from(vec![text.as_str()]),
            at.data_type(),
            &CastOptions::default(),
        )
        .expect("casts");
        assert_eq!(back.as_ref(), &at as &dyn Array);
        assert_eq!(
            constant(Arc::new(Int16Array::from(vec![None::<i16>]))),
            AddedValue::Null
        );
        // Bytes print as hex, which casts back to other bytes: not recorded.
        let bytes = BinaryArray::from(vec![&b"\x01\xff"[..]]);
        assert!(matches!(constant(Arc::new(bytes)), AddedValue::Unknown(_)));
    }

    #[test]
    fn schema_changes_of_older_states_read_without_names_or_additions() {
        let old = r#"{"position":"000000010000000000000005","change":"columns: id int8"}"#;
        let change: SchemaChange = serde_json::from_str(old).expect("reads");
        assert!(change.names.is_empty() && change.added.is_empty());
        let mut added = SchemaChange::columns(
            ChangePosition::postgres(1, 0),
            "id int8, active bool",
            vec!["id".into(), "active".into()],
        );
        added.added = vec![AddedColumn {
            name: "active".into(),
            value: AddedValue::Constant("true".into()),
        }];
        let text = serde_json::to_string(&added).expect("writes");
        assert!(
            text.contains(r#""added":[{"name":"active","value":{"constant":"true"}}]"#),
            "{text}"
        );
    }
}
