//! The open CDC batch of any source: rows of whole transactions, per table, spooled to
//! files as they come and put in place exactly once.
//!
//! Invariants:
//! - a batch holds whole transactions, in commit order; its files are put in place under the
//!   pending-batch protocol of [`super::checkpoint`], and [`BatchWriter::flush`] returns only
//!   after the batch's end position is durably the task's `confirmed_position`, so the
//!   caller may then let the source forget what came before (confirm a slot);
//! - rows go to spool files as they come, so a large transaction never has to fit in
//!   memory: a table's builder holds at most [`FLUSH_ROWS`] rows, all builders together at
//!   most about [`FLUSH_BYTES`], and all open Parquet row groups together about
//!   [`ROW_GROUPS_BYTES`] (past a budget, the largest is written out);
//! - a table's file is closed when it reaches `max_file_size` (DMS `MaxFileSize`) and the
//!   next rows start a new one, inside the same batch: a batch may hold several files of a
//!   table, all listed in its pending batch and named in commit order;
//! - a table's schema change closes its file: the next rows start a new one.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};

use super::checkpoint::{
    AddedColumn, AddedValue, Checkpoint, PendingBatch, SchemaChange, TaskState,
};
use super::{Events, LogLevel, TaskError, TaskEvent};
use crate::config::{SchemaChangePolicy, TaskConfig};
use crate::ident::TableId;
use crate::lake::format::{FinishedFile, RollingWriter, WriterOptions};
use crate::lake::{Storage, layout};
use crate::source::position::{ChangePosition, SourcePosition};
use crate::source::{RenamedColumn, SourceIdentity};
use crate::task::stats::{CdcStats, TableState, TableStats};

/// Rows a table's builder holds before they go to its spool file.
pub(super) const FLUSH_ROWS: usize = 8192;
/// Bytes of values all tables' builders hold together; past it, the largest is spooled.
pub(super) const FLUSH_BYTES: usize = 8 * 1024 * 1024;
/// Bytes of Parquet row groups all tables' open files hold together; past it, the largest
/// row group is written out (one table alone gets row groups of about this size).
pub(super) const ROW_GROUPS_BYTES: usize = 32 * 1024 * 1024;
/// How long a stop waits for an open transaction to commit before dropping the batch.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How a CDC loop's turn ends ([`BatchWriter::end_of_turn`]); `written` is the end
/// position of a batch just written.
pub(super) enum Turn {
    Go {
        written: Option<SourcePosition>,
    },
    /// Stopped between transactions: everything finished is written.
    Stopped {
        written: Option<SourcePosition>,
    },
    /// Stopped inside a transaction that did not commit in time: its batch is dropped.
    Abandoned,
    /// Between transactions, with tables a schema change asks to reload: their requests
    /// are durable with the batch, and the run ends so that they load again.
    Reload {
        written: Option<SourcePosition>,
    },
}

/// A table's columns as last recorded, and how the source knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Shape {
    pub names: Vec<String>,
    pub identity: Option<SourceIdentity>,
}

/// What a new shape of a table did to the rows it held, as its engine tells it.
#[derive(Debug, Default)]
pub(super) struct ColumnsChanged {
    /// The columns added, with what older rows read for each.
    pub added: Vec<AddedColumn>,
    /// The columns renamed.
    pub renamed: Vec<RenamedColumn>,
    /// How the source knows the table and its new columns (PostgreSQL).
    pub identity: Option<SourceIdentity>,
}

/// What a change of a table's columns does to the task.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OnColumnsChange {
    Go,
    /// Load the table again (why): the log lacks what its rows hold.
    Reload(String),
    /// Stop the task (`schema_change_policy = "stop"`).
    Stop,
}

/// What the columns change that `added` describes does to the task under `policy`;
/// `first`: the table's first recorded shape, not a change.
fn on_columns_change(
    policy: SchemaChangePolicy,
    first: bool,
    added: &[AddedColumn],
) -> OnColumnsChange {
    if first {
        return OnColumnsChange::Go;
    }
    let unknown = added.iter().find_map(|a| match &a.value {
        AddedValue::Unknown(why) => Some(format!("column {} was added, but {why}", a.name)),
        _ => None,
    });
    match policy {
        SchemaChangePolicy::Apply => unknown.map_or(OnColumnsChange::Go, OnColumnsChange::Reload),
        SchemaChangePolicy::Reload => OnColumnsChange::Reload(
            unknown.unwrap_or_else(|| "its columns changed".to_owned())
                + " (schema_change_policy = \"reload\")",
        ),
        SchemaChangePolicy::Stop => OnColumnsChange::Stop,
    }
}

/// A table's rows of the open batch, as its engine's builder holds them (each engine
/// implements it for its builder, beside its CDC part).
pub(super) trait TableRows: Send {
    /// Rows held.
    fn len(&self) -> usize;
    /// Bytes of values held (for [`FLUSH_BYTES`]).
    fn bytes(&self) -> usize;
    /// The rows held, as a batch of the table's columns; the builder is then empty.
    fn finish(&mut self) -> RecordBatch;
    /// The builder itself, for its engine's appends ([`BatchWriter::append_row`]).
    fn as_any(&mut self) -> &mut dyn Any;
}

/// A table's builder, whatever its engine.
pub(super) type Rows = Box<dyn TableRows>;

/// What one table has in the open batch.
pub(super) struct TableBatch {
    pub(super) prefix: String,
    schema: SchemaRef,
    pub(super) builder: Rows,
    ops: Vec<&'static str>,
    positions: Vec<ChangePosition>,
    commit_times: Vec<i64>,
    writer: Option<RollingWriter>,
    /// Files finished in this batch (another one after `max_file_size` or a schema change).
    finished: Vec<FinishedFile>,
    pub(super) stats: TableStats,
}

struct Batch {
    started: Instant,
    /// Where the source stands after the batch's last transaction (none before its first
    /// commit).
    end_position: Option<SourcePosition>,
    first_commit_micros: Option<i64>,
    last_commit_micros: i64,
    changes: u64,
}

/// Builds the open batch's files and puts them in place, exactly once.
pub(super) struct BatchWriter {
    pub(super) storage: Storage,
    pub(super) task: TaskConfig,
    checkpoint: Arc<Checkpoint>,
    pub(super) events: Events,
    pub(super) tables: HashMap<TableId, TableBatch>,
    batch: Option<Batch>,
    pub(super) stats: CdcStats,
    /// Bytes of values in all tables' builders ([`FLUSH_BYTES`]).
    buffered: usize,
    last_file_millis: i64,
    pub(super) totals: std::collections::BTreeMap<TableId, super::checkpoint::CdcTableState>,
    /// The files the last batch put in place: (table, object key).
    last_files: Vec<(TableId, String)>,
    /// The source-side names recorded with each batch: slot and publication (PostgreSQL).
    stream_names: (String, String),
    /// Tables reloaded alone: the first `_position` that applies to each
    /// ([`TableLoadState::changes_from`](super::checkpoint::TableLoadState::changes_from)).
    changes_from: HashMap<TableId, ChangePosition>,
    /// The columns each table's load read: the shape its first schema change follows.
    load_shapes: HashMap<TableId, Shape>,
    /// Tables a schema change asks to load again, recorded with the next batch.
    pub(super) reload_requests: Vec<TableId>,
}

impl BatchWriter {
    /// A writer that goes on from the task's state.
    pub(super) fn new(
        storage: Storage,
        task: TaskConfig,
        checkpoint: Arc<Checkpoint>,
        events: Events,
        state: &super::checkpoint::TaskState,
        confirmed_position: &SourcePosition,
        stream_names: (String, String),
    ) -> Self {
        let cdc = state.cdc.clone().unwrap_or_default();
        let mut changes_from: HashMap<TableId, ChangePosition> = state
            .tables
            .iter()
            .filter_map(|(key, t)| Some((key.clone(), t.changes_from.clone()?)))
            .collect();
        // A table waiting for its reload passes every change by: its snapshot will hold it.
        for key in &state.reloading {
            changes_from.insert(key.clone(), ChangePosition::after_all());
        }
        BatchWriter {
            storage,
            task,
            checkpoint,
            events,
            tables: HashMap::new(),
            batch: None,
            stats: CdcStats {
                confirmed_position: confirmed_position.to_string(),
                batches: cdc.batches,
                ..CdcStats::default()
            },
            buffered: 0,
            last_file_millis: cdc.last_file_millis,
            totals: cdc.tables,
            last_files: Vec::new(),
            stream_names,
            changes_from,
            load_shapes: state
                .tables
                .iter()
                .filter(|(_, t)| !t.columns.is_empty())
                .map(|(key, t)| {
                    let shape = Shape {
                        names: t.columns.clone(),
                        identity: t.identity.clone(),
                    };
                    (key.clone(), shape)
                })
                .collect(),
            reload_requests: Vec::new(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.batch.as_ref().is_none_or(|b| b.changes == 0)
    }

    pub(super) fn batch_age(&self) -> Option<Duration> {
        self.batch
            .as_ref()
            .filter(|b| b.changes > 0)
            .map(|b| b.started.elapsed())
    }

    /// The largest file of the open batch, finished or still open.
    pub(super) fn largest_file_bytes(&self) -> u64 {
        self.tables
            .values()
            .flat_map(|t| {
                let open = t.writer.as_ref().map_or(0, RollingWriter::open_bytes);
                t.finished.iter().map(|f| f.bytes).chain([open])
            })
            .max()
            .unwrap_or(0)
    }

    fn writer_options(&self) -> WriterOptions {
        let s = &self.task.target_settings;
        WriterOptions {
            format: s.data_format,
            compression: s.compression,
            // A file closes at max_file_size, or at the end of the batch or a schema change.
            max_file_bytes: s.max_file_size.saturating_mul(1024),
            op: None,
            timestamp_column: None,
            row_group_bytes: ROW_GROUPS_BYTES,
        }
    }

    /// Table `key`'s last recorded shape: the column names of its last columns change, else
    /// those its load read, with the source's identity of them where it is known; `None`
    /// when neither is known (a table the stream shows first, or a load recorded before its
    /// columns were), or when the table was dropped or renamed away since (what comes
    /// next is another table).
    pub(super) fn previous_shape(&self, key: &TableId) -> Option<Shape> {
        let changes = self.totals.get(key).map(|t| t.schema_changes.as_slice());
        if changes
            .and_then(<[SchemaChange]>::last)
            .is_some_and(SchemaChange::ends_table)
        {
            return None;
        }
        match changes.and_then(|c| c.iter().rfind(|c| c.is_columns())) {
            Some(change) => Some(Shape {
                names: change.column_names(),
                identity: change.identity.clone(),
            }),
            None => self.load_shapes.get(key).cloned(),
        }
    }

    /// Table `key`'s last recorded columns change, to amend.
    fn last_columns_change(&mut self, key: &TableId) -> Option<&mut SchemaChange> {
        self.totals
            .get_mut(key)?
            .schema_changes
            .iter_mut()
            .rfind(|c| c.is_columns())
    }

    /// A (new or changed) schema of selected table `key`: later rows use it. `signature`
    /// describes the columns, to record what changed, and `columns` what the change did to
    /// the rows before it; `builder` builds rows of `table_schema`.
    pub(super) fn schema(
        &mut self,
        key: &TableId,
        signature: &str,
        table_schema: SchemaRef,
        builder: Rows,
        position: ChangePosition,
        columns: ColumnsChanged,
    ) -> Result<(), TaskError> {
        let settings = self.task.target_settings.clone();
        let mut fields = vec![Field::new("Op", DataType::Utf8, false)];
        if !settings.timestamp_column_name.is_empty() {
            fields.push(Field::new(
                &settings.timestamp_column_name,
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ));
        }
        fields.push(Field::new("_position", DataType::Utf8, false));
        fields.extend(table_schema.fields().iter().map(|f| f.as_ref().clone()));
        let file_schema = Arc::new(Schema::new(fields));

        // Truncates are recorded among the changes too: compare with the last schema.
        let last = self
            .totals
            .get(key)
            .and_then(|t| t.schema_changes.iter().rfind(|c| c.is_columns()))
            .map(|c| (c.change.clone(), c.identity.clone()));
        let names = table_schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let mut change = SchemaChange::columns(position, signature, names);
        change.added = columns.added;
        change.renamed = columns.renamed;
        change.identity = columns.identity;
        let previous = self.previous_shape(key);
        // Another relation under the same name is a change even with the same columns, and
        // so is the first shape after the table was dropped.
        let same = previous.is_some()
            && last.as_ref().is_some_and(|(signature, identity)| {
                *signature == change.change
                    && (identity.is_none()
                        || change.identity.is_none()
                        || *identity == change.identity)
            });
        if same
            && let Some(learned) = change.identity.take()
            && let Some(last) = self.last_columns_change(key)
            && last.identity.is_none()
        {
            // A shape recorded before identities were: it learns its own, nothing changed.
            last.identity = Some(learned);
        }
        if !same {
            // A change inside a reloaded table's new snapshot is in its load already.
            let loaded = self
                .changes_from
                .get(key)
                .is_some_and(|from| change.position < *from);
            // The first shape the stream shows (of the table, or of the one created again
            // under its name) is a change only when it differs from the load's.
            let first = previous.is_none_or(|p| last.is_none() && p.names == change.names);
            let policy = self.task.cdc_settings.schema_change_policy;
            let on_change = match on_columns_change(policy, first, &change.added) {
                _ if loaded => OnColumnsChange::Go,
                on_change => on_change,
            };
            match on_change {
                OnColumnsChange::Go => {}
                OnColumnsChange::Stop => {
                    return Err(TaskError::SchemaChangeStopped {
                        task: self.task.name.clone(),
                        table: key.to_string(),
                        position: change.position.to_string(),
                        change: change.change.clone(),
                    });
                }
                OnColumnsChange::Reload(why) => {
                    self.events.log(
                        LogLevel::Warn,
                        format!(
                            "{key}: {why}, so the table loads again from a new snapshot; capture pauses for the reload and then goes on from where it stands"
                        ),
                    );
                    self.changes_from
                        .insert(key.clone(), ChangePosition::after_all());
                    self.reload_requests.push(key.clone());
                }
            }
            let total = self.totals.entry(key.clone()).or_default();
            if last.is_some() {
                total.ddls += 1;
                self.events.log(
                    LogLevel::Info,
                    format!(
                        "{key}: schema changed at {}: {}",
                        change.position, change.change
                    ),
                );
            }
            for column in &change.added {
                let (level, message) = describe_added(key, column);
                self.events.log(level, message);
            }
            for column in &change.renamed {
                self.events.log(
                    LogLevel::Info,
                    format!(
                        "{key}: column {} renamed to {}; its values and its curated column (the same Iceberg field) go on under the new name",
                        column.from, column.to
                    ),
                );
            }
            total.schema_changes.push(change);
        }
        let total = self.totals.entry(key.clone()).or_default().clone();
        if self.tables.contains_key(key) {
            // Close the file of the old schema; the next rows start a new one.
            self.finish_table(key)?;
        }
        if let Some(entry) = self.tables.get_mut(key) {
            entry.schema = file_schema;
            entry.builder = builder;
            entry.stats.ddls = total.ddls;
            return Ok(());
        }
        let mut stats = TableStats::new(&key.schema, &key.table, 0);
        stats.state = TableState::TableCompleted;
        stats.inserts = total.inserts;
        stats.updates = total.updates;
        stats.deletes = total.deletes;
        stats.ddls = total.ddls;
        stats.files = total.files;
        stats.bytes = total.bytes;
        let prefix = layout::table_prefix(&settings.bucket_folder, &self.task.source, key);
        self.tables.insert(
            key.clone(),
            TableBatch {
                prefix,
                schema: file_schema,
                builder,
                ops: Vec::new(),
                positions: Vec::new(),
                commit_times: Vec::new(),
                writer: None,
                finished: Vec::new(),
                stats,
            },
        );
        Ok(())
    }

    /// The files the last written batch put in place: (table, object key).
    pub(super) fn last_files(&self) -> impl Iterator<Item = (&TableId, &str)> {
        self.last_files
            .iter()
            .map(|(table, key)| (table, key.as_str()))
    }

    /// Every table the task has written or recorded changes of.
    pub(super) fn known_tables(&self) -> Vec<TableId> {
        let mut known: Vec<TableId> = self.totals.keys().cloned().collect();
        known.extend(
            self.tables
                .keys()
                .filter(|t| !self.totals.contains_key(t))
                .cloned(),
        );
        known
    }

    pub(super) fn table_error(&self, key: &TableId, message: String) -> TaskError {
        TaskError::TablesFailed {
            task: self.task.name.clone(),
            count: 1,
            details: format!("{key}: {message}"),
        }
    }

    /// Whether table `key` was reloaded alone, so that [`Self::in_reload`] can pass some
    /// of its changes by (for callers whose `_position` costs a format to build).
    pub(super) fn has_reload_mark(&self, key: &TableId) -> bool {
        self.changes_from.contains_key(key)
    }

    /// Whether the change of table `key` at `position` is already in the table's load: the
    /// table was reloaded alone from a snapshot that comes after it.
    pub(super) fn in_reload(&self, key: &TableId, position: &ChangePosition) -> bool {
        self.changes_from
            .get(key)
            .is_some_and(|from| position < from)
    }

    /// Records that `key` was emptied at `position` by `change` (a truncate, a drop, a
    /// rename to another name; [`SchemaChange::empties_table`]) in the task state; it writes
    /// no rows. False when the change is already in a reloaded table's load.
    pub(super) fn emptied(&mut self, key: &TableId, change: SchemaChange) -> bool {
        if self.in_reload(key, &change.position) {
            return false;
        }
        let total = self.totals.entry(key.clone()).or_default();
        total.ddls += 1;
        // Only the latest matters to a reader rebuilding the table from files written
        // after it.
        total.schema_changes.retain(|c| !c.empties_table());
        self.events.log(
            LogLevel::Info,
            format!("{key}: {} at {}", change.change, change.position),
        );
        total.schema_changes.push(change);
        if let Some(t) = self.tables.get_mut(key) {
            t.stats.ddls = total.ddls;
        }
        true
    }

    /// Records a truncate of `key` at `position` ([`Self::emptied`]).
    pub(super) fn truncated(&mut self, key: &TableId, position: &ChangePosition) -> bool {
        self.emptied(
            key,
            SchemaChange::other(position.clone(), SchemaChange::TRUNCATE),
        )
    }

    /// Adds one row of table `key` to its builder, a `B` (`append` appends the values,
    /// whole or not at all), spooling the builder when it is full. A table without a
    /// schema (not selected) is passed by.
    pub(super) fn append_row<B: 'static>(
        &mut self,
        key: &TableId,
        op: &'static str,
        position: ChangePosition,
        commit_micros: i64,
        append: impl FnOnce(&mut B) -> Result<(), String>,
    ) -> Result<(), TaskError> {
        if self.in_reload(key, &position) {
            return Ok(());
        }
        let Some(table) = self.tables.get_mut(key) else {
            return Ok(());
        };
        let before = table.builder.bytes();
        let appended = match table.builder.as_any().downcast_mut::<B>() {
            Some(builder) => append(builder),
            None => Err("a row of another engine's builder".into()),
        };
        if let Err(message) = appended {
            return Err(self.table_error(key, format!("at {position}: {message}")));
        }
        let grown = table.builder.bytes().saturating_sub(before);
        table.ops.push(op);
        table.positions.push(position);
        table.commit_times.push(commit_micros);
        match op {
            "I" => table.stats.inserts += 1,
            "U" => table.stats.updates += 1,
            _ => table.stats.deletes += 1,
        }
        // Bounded by rows and by bytes: one huge transaction must not fill the memory.
        let full = table.builder.len() >= FLUSH_ROWS;
        self.buffered += grown;
        self.touch(commit_micros);
        if full {
            self.spool(key)?;
        }
        if self.buffered >= FLUSH_BYTES
            && let Some(largest) = largest(&self.tables, |t| t.builder.bytes())
        {
            self.spool(&largest)?;
        }
        Ok(())
    }

    /// Counts a change in the open batch (starting one if needed).
    pub(super) fn touch(&mut self, commit_micros: i64) {
        let batch = self.batch.get_or_insert_with(|| Batch {
            started: Instant::now(),
            end_position: None,
            first_commit_micros: None,
            last_commit_micros: commit_micros,
            changes: 0,
        });
        batch.changes += 1;
        batch.first_commit_micros.get_or_insert(commit_micros);
    }

    /// A transaction of the open batch committed; the source stands at `end_position`.
    pub(super) fn commit(&mut self, end_position: SourcePosition, commit_micros: i64) {
        if let Some(b) = &mut self.batch {
            b.end_position = Some(end_position);
            b.last_commit_micros = commit_micros;
        }
    }

    /// Moves a table's buffered rows into its spool file.
    fn spool(&mut self, key: &TableId) -> Result<(), TaskError> {
        let options = self.writer_options();
        let spool_dir = self.storage.spool_dir()?;
        let Some(t) = self.tables.get_mut(key) else {
            return Ok(());
        };
        if t.builder.len() == 0 {
            return Ok(());
        }
        self.buffered = self.buffered.saturating_sub(t.builder.bytes());
        let data = t.builder.finish();
        let mut columns: Vec<ArrayRef> =
            vec![Arc::new(StringArray::from(std::mem::take(&mut t.ops)))];
        if !self.task.target_settings.timestamp_column_name.is_empty() {
            columns.push(Arc::new(
                TimestampMicrosecondArray::from(t.commit_times.clone()).with_timezone("UTC"),
            ));
        }
        t.commit_times.clear();
        let positions = std::mem::take(&mut t.positions);
        columns.push(Arc::new(StringArray::from_iter_values(
            positions.iter().map(ChangePosition::as_str),
        )));
        columns.extend(data.columns().iter().cloned());
        let batch =
            RecordBatch::try_new(t.schema.clone(), columns).map_err(|e| TaskError::Internal {
                task: self.task.name.clone(),
                message: format!("assembling CDC rows of {key}: {e}"),
            })?;
        let writer = t.writer.get_or_insert_with(|| {
            RollingWriter::new(
                options,
                &t.schema,
                spool_dir,
                format!("{}-cdc", self.task.name),
            )
        });
        if let Some(file) = writer.write(&batch)? {
            // Full: the writer starts a new file with the next rows of the batch.
            t.finished.push(file);
        }
        let row_groups: usize = self.tables.values().map(row_group_bytes).sum();
        if row_groups > ROW_GROUPS_BYTES
            && let Some(largest) = largest(&self.tables, row_group_bytes)
            && let Some(writer) = self
                .tables
                .get_mut(&largest)
                .and_then(|t| t.writer.as_mut())
        {
            writer.flush_row_group()?;
        }
        Ok(())
    }

    /// Spools and closes a table's file (at a schema change or the end of a batch).
    fn finish_table(&mut self, key: &TableId) -> Result<(), TaskError> {
        self.spool(key)?;
        if let Some(t) = self.tables.get_mut(key)
            && let Some(mut writer) = t.writer.take()
            && let Some(file) = writer.close()?
        {
            t.finished.push(file);
        }
        Ok(())
    }

    /// The end of a CDC loop's turn. Between transactions, the batch is written when its
    /// largest file reaches `min_bytes`, when it is `interval` old, or on a stop, which then
    /// ends the loop. Inside a transaction, a stop waits up to [`STOP_GRACE`] for it to
    /// commit; after that the batch is dropped and redone on the next run.
    pub(super) async fn end_of_turn(
        &mut self,
        in_transaction: bool,
        stopping: Option<Instant>,
        min_bytes: u64,
        interval: Duration,
    ) -> Result<Turn, TaskError> {
        if in_transaction {
            if stopping.is_some_and(|at| at.elapsed() > STOP_GRACE) {
                self.abandon();
                self.events.log(
                    LogLevel::Warn,
                    "stopped inside a long transaction: its batch is dropped and is written again on the next run",
                );
                return Ok(Turn::Abandoned);
            }
            return Ok(Turn::Go { written: None });
        }
        let full = self.largest_file_bytes() >= min_bytes;
        let due = self.batch_age().is_some_and(|age| age >= interval);
        let reload = !self.reload_requests.is_empty();
        let written = if full || due || stopping.is_some() || reload {
            self.flush().await?
        } else {
            None
        };
        if reload {
            self.reload_requests.clear();
            return Ok(Turn::Reload { written });
        }
        if stopping.is_some() {
            self.events.log(
                LogLevel::Info,
                "stopped cleanly: every finished transaction is written and confirmed",
            );
            return Ok(Turn::Stopped { written });
        }
        Ok(Turn::Go { written })
    }

    /// Drops the open batch (a stop inside a transaction): it is redone on the next run.
    pub(super) fn abandon(&mut self) {
        self.buffered = 0;
        for t in self.tables.values_mut() {
            t.builder.finish();
            t.ops.clear();
            t.positions.clear();
            t.commit_times.clear();
            if let Some(mut w) = t.writer.take() {
                w.abandon();
            }
            for f in t.finished.drain(..) {
                let _ = std::fs::remove_file(&f.path);
            }
        }
        self.batch = None;
    }

    /// Writes the open batch: files in place, then the state, then the slot confirmed.
    /// Returns the batch's end position, if there was a batch.
    /// Reload requests are recorded with the batch (or alone, without one).
    pub(super) async fn flush(&mut self) -> Result<Option<SourcePosition>, TaskError> {
        let Some(batch) = self.batch.take() else {
            if !self.reload_requests.is_empty() {
                let tables = self.reload_requests.clone();
                self.checkpoint
                    .update(|s| request_reloads(s, &tables))
                    .await?;
            }
            return Ok(None);
        };
        let Some(end_position) = batch.end_position.clone() else {
            return Err(TaskError::Internal {
                task: self.task.name.clone(),
                message: "a CDC batch was written before any of its transactions committed".into(),
            });
        };
        let keys: Vec<TableId> = self.tables.keys().cloned().collect();
        for key in &keys {
            self.finish_table(key)?;
        }
        let settings = self.task.target_settings.clone();
        let commit_time = DateTime::<Utc>::from_timestamp_micros(batch.last_commit_micros)
            .unwrap_or_else(Utc::now);
        let partition = if settings.date_partition_enabled {
            layout::date_partition(
                commit_time,
                settings.date_partition_sequence,
                settings.date_partition_style,
            )
        } else {
            String::new()
        };
        let extension = self.writer_options().extension();
        // Names keep increasing even when batches share a millisecond; a table with a second
        // file in the batch (after a schema change) takes the next millisecond.
        let millis = commit_time
            .timestamp_millis()
            .max(self.last_file_millis + 1);
        let mut newest = millis;
        let mut placed: Vec<(TableId, String, FinishedFile)> = Vec::new();
        for (key, t) in &mut self.tables {
            for (i, file) in t.finished.drain(..).enumerate() {
                newest = newest.max(millis + i as i64);
                let time = DateTime::<Utc>::from_timestamp_millis(millis + i as i64)
                    .unwrap_or(commit_time);
                let name = layout::cdc_file_name(time, &extension);
                placed.push((key.clone(), format!("{}{partition}{name}", t.prefix), file));
            }
        }

        // 1. Record what is about to appear, so a crash in between can be cleaned up.
        let pending_keys: Vec<String> = placed.iter().map(|(_, k, _)| k.clone()).collect();
        self.checkpoint
            .update(|s| {
                let c = s.cdc.get_or_insert_with(Default::default);
                c.pending_batch = Some(PendingBatch {
                    keys: pending_keys.clone(),
                    end_position: end_position.clone(),
                });
            })
            .await?;
        // 2. Put the files in place.
        for (table, key, file) in &placed {
            self.storage.put_file(&file.path, key).await?;
            let total = self.totals.entry(table.clone()).or_default();
            total.files += 1;
            total.bytes += file.bytes;
            if let Some(t) = self.tables.get_mut(table) {
                t.stats.files += 1;
                t.stats.bytes += file.bytes;
            }
        }
        // 3. The batch is done: one durable write.
        for (key, t) in &self.tables {
            let total = self.totals.entry(key.clone()).or_default();
            total.inserts = t.stats.inserts;
            total.updates = t.stats.updates;
            total.deletes = t.stats.deletes;
        }
        let totals = self.totals.clone();
        let names = self.stream_names.clone();
        let reloads = self.reload_requests.clone();
        self.checkpoint
            .update(|s| {
                let c = s.cdc.get_or_insert_with(Default::default);
                c.slot = names.0.clone();
                c.publication = names.1.clone();
                c.pending_batch = None;
                c.confirmed_position = Some(end_position.clone());
                c.batches += 1;
                c.last_file_millis = newest;
                c.tables = totals;
                request_reloads(s, &reloads);
            })
            .await?;
        // 4. Only now may the source forget what came before: the caller confirms.
        self.last_files = placed
            .into_iter()
            .map(|(table, key, _)| (table, key))
            .collect();
        self.last_file_millis = newest;
        let now = Utc::now().timestamp_micros();
        let seconds = batch.started.elapsed().as_secs_f64().max(0.001);
        self.stats.confirmed_position = end_position.to_string();
        self.stats.batches += 1;
        self.stats.latency_ms =
            (now - batch.first_commit_micros.unwrap_or(now)).max(0) as u64 / 1000;
        self.stats.changes_per_second = batch.changes as f64 / seconds;
        for t in self.tables.values() {
            self.events.send(TaskEvent::Table(t.stats.clone()));
        }
        self.events.send(TaskEvent::Cdc(self.stats.clone()));
        Ok(Some(end_position))
    }
}

/// The table whose `bytes` are the most, if any holds some.
fn largest(
    tables: &HashMap<TableId, TableBatch>,
    bytes: impl Fn(&TableBatch) -> usize,
) -> Option<TableId> {
    tables
        .iter()
        .map(|(key, t)| (bytes(t), key))
        .filter(|(b, _)| *b > 0)
        .max_by_key(|(b, _)| *b)
        .map(|(_, key)| key.clone())
}

/// Records `tables` for a reload from their own snapshot ([`super::reload`]).
fn request_reloads(state: &mut TaskState, tables: &[TableId]) {
    for t in tables {
        if !state.reloading.contains(t) {
            state.reloading.push(t.clone());
        }
    }
}

/// The columns of `names` that are new since `previous`, in order: those no column of
/// `previous` became through `renamed`, whose name `previous` lacks or gave away (a column
/// renamed, then another added under its old name).
pub(super) fn added_columns(
    previous: &[String],
    names: &[String],
    renamed: &[RenamedColumn],
) -> Vec<String> {
    names
        .iter()
        .filter(|n| !renamed.iter().any(|r| &r.to == *n))
        .filter(|n| !previous.contains(n) || renamed.iter().any(|r| &r.from == *n))
        .cloned()
        .collect()
}

/// What the log says of a column a schema change added, and how loudly.
fn describe_added(key: &TableId, column: &AddedColumn) -> (LogLevel, String) {
    let name = &column.name;
    match &column.value {
        AddedValue::Constant(v) => (
            LogLevel::Info,
            format!(
                "{key}: column {name} added; rows it did not touch read {v:?}, recorded for curation"
            ),
        ),
        AddedValue::Null => (
            LogLevel::Info,
            format!(
                "{key}: column {name} added without a default; rows it did not touch read NULL"
            ),
        ),
        AddedValue::Unknown(why) => (
            LogLevel::Info,
            format!(
                "{key}: column {name} added; what the rows it did not touch hold is not in the change log ({why})"
            ),
        ),
    }
}

/// Bytes of the table's open Parquet row group.
fn row_group_bytes(t: &TableBatch) -> usize {
    t.writer.as_ref().map_or(0, RollingWriter::buffered_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_columns_change_goes_on_reloads_or_stops_as_the_policy_says() {
        use SchemaChangePolicy::{Apply, Reload, Stop};
        let added = |value| {
            vec![AddedColumn {
                name: "c".into(),
                value,
            }]
        };
        let known = added(AddedValue::Constant("1".into()));
        let unknown = added(AddedValue::Unknown("volatile".into()));
        assert_eq!(on_columns_change(Apply, false, &known), OnColumnsChange::Go);
        assert_eq!(
            on_columns_change(Apply, false, &unknown),
            OnColumnsChange::Reload("column c was added, but volatile".into())
        );
        assert!(matches!(
            on_columns_change(Reload, false, &[]),
            OnColumnsChange::Reload(why) if why.contains("schema_change_policy = \"reload\"")
        ));
        assert_eq!(
            on_columns_change(Stop, false, &known),
            OnColumnsChange::Stop
        );
        // A table's first shape in the stream is no change.
        for policy in [Apply, Reload, Stop] {
            assert_eq!(
                on_columns_change(policy, true, &unknown),
                OnColumnsChange::Go
            );
        }
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            added_columns(&names(&["id", "a"]), &names(&["id", "b", "a"]), &[]),
            names(&["b"])
        );
        // `a` renamed to `b`, then another `a` added: that one is new.
        let renamed = [RenamedColumn {
            from: "a".into(),
            to: "b".into(),
        }];
        assert_eq!(
            added_columns(&names(&["id", "a"]), &names(&["id", "b", "a"]), &renamed),
            names(&["a"])
        );
        assert!(added_columns(&names(&["id", "a"]), &names(&["id", "b"]), &renamed).is_empty());
    }
}
