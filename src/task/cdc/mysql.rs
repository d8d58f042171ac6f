//! A MySQL/MariaDB task from start to end: the server's binlog settings, the full load,
//! tables reloaded alone, then CDC from the snapshot's binlog
//! position (or from the binlog's end, for a CDC-only task).
//!
//! MySQL/MariaDB's part of the CDC loop ([`super`]): binlog row events, batched as
//! PostgreSQL's are ([`crate::task::batch`]), written exactly once.
//!
//! Invariants:
//! - the stream starts at the task's `confirmed_position` (a binlog file and position at a
//!   transaction boundary), which moves only when a batch is durably in place, or, while
//!   no change of a selected table is in flight, to the end of the last transaction read;
//!   a restart never writes a change twice and never skips one;
//! - `_position` is the binlog file's number, the transaction's start offset in it and the
//!   change's number in the transaction, zero-padded hexadecimal: transactions are written
//!   to the binlog whole and in commit order, so it sorts in exact commit order;
//! - every U row is a whole after-image (`binlog_row_image = FULL` is required); an update
//!   that changes the primary key is a D of the old row then an I of the new one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_schema::DataType;
use futures::future::BoxFuture;
use mysql_async::Value;

use super::{CdcRun, Engine, Flow, SourceEngine};
use crate::check::CheckResult;
use crate::config::{EndpointConfig, MigrationType, TaskConfig, Workspace};
use crate::ident::TableId;
use crate::source::mysql::binlog::{self, BinlogEvent, BinlogReader, RowImages, RowOp, TableMap};
use crate::source::mysql::ddl::{self, Ddl};
use crate::source::mysql::types::RowBuilder;
use crate::source::mysql::{MyEndpoint, MysqlSource};
use crate::source::position::{BinlogPosition, ChangePosition, SourcePosition, binlog_file_index};
use crate::source::{RenamedColumn, SelectionRules, Source, SourceError, TableInfo};
use crate::task::batch::{BatchWriter, ColumnsChanged, TableRows, added_columns};
use crate::task::checkpoint::{AddedColumn, AddedValue, Checkpoint, SchemaChange};
use crate::task::control::{Events, LogLevel};
use crate::task::course::{TaskRun, cdc_summary, load_before_cdc, request_reload};
use crate::task::error::TaskError;
use crate::task::snapshot::{ExactSnapshot, RangeReader, SnapshotReader};
use crate::task::stats::{CdcOutcome, TaskSummary};
use crate::task::{cleanup, full_load, reload};

// ---- The course of a task ----

/// MySQL/MariaDB as tasks drive it.
pub(super) struct MysqlEngine;

impl SourceEngine for MysqlEngine {
    fn check<'a>(
        &'a self,
        _workspace: &'a Workspace,
        endpoint: &'a EndpointConfig,
        password: Option<String>,
    ) -> BoxFuture<'a, Vec<CheckResult>> {
        // The binlog is read as a replica: nothing on the server belongs to one task.
        Box::pin(async move {
            MysqlSource::new(MyEndpoint::from_config(endpoint, password), 1)
                .check()
                .await
        })
    }

    fn discover<'a>(
        &'a self,
        endpoint: &'a EndpointConfig,
        password: Option<String>,
        rules: &'a SelectionRules,
    ) -> BoxFuture<'a, Result<Vec<TableInfo>, SourceError>> {
        Box::pin(async move {
            MysqlSource::new(MyEndpoint::from_config(endpoint, password), 1)
                .discover(rules)
                .await
        })
    }

    fn run<'a>(
        &'a self,
        endpoint: &'a EndpointConfig,
        password: Option<String>,
        run: TaskRun,
    ) -> BoxFuture<'a, Result<TaskSummary, TaskError>> {
        Box::pin(run_task(MyEndpoint::from_config(endpoint, password), run))
    }

    fn exact_snapshot<'a>(
        &'a self,
        endpoint: &'a EndpointConfig,
        password: Option<String>,
        task: &'a TaskConfig,
    ) -> BoxFuture<'a, Result<ExactSnapshot, TaskError>> {
        Box::pin(async move {
            let source = MysqlSource::new(
                MyEndpoint::from_config(endpoint, password),
                task.full_load_settings.max_full_load_sub_tasks,
            );
            let (reader, tables, position) = RangeReader::open(source, task, endpoint).await?;
            Ok(ExactSnapshot::new(
                position,
                tables,
                Box::new(MySnapshot(reader)),
            ))
        })
    }
}

/// Consistent-snapshot transactions opened under one lock at a binlog position. The task
/// records its position in its state even when idle, so the source has nothing more to
/// tell of it.
struct MySnapshot(RangeReader<MysqlSource>);

impl SnapshotReader for MySnapshot {
    fn read<'a>(
        &'a self,
        table: &'a TableInfo,
        out: tokio::sync::mpsc::Sender<arrow_array::RecordBatch>,
    ) -> BoxFuture<'a, Result<u64, SourceError>> {
        Box::pin(self.0.read_table(table, out))
    }

    fn confirmed(&self) -> BoxFuture<'_, Result<Option<SourcePosition>, SourceError>> {
        Box::pin(async { Ok(None) })
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move { self.0.release().await })
    }
}

/// A MySQL/MariaDB task: the full load, CDC from the binlog, or the full load and then CDC
/// from the snapshot's binlog position.
async fn run_task(endpoint: MyEndpoint, run: TaskRun) -> Result<TaskSummary, TaskError> {
    let TaskRun {
        storage,
        checkpoint,
        task,
        options,
        events,
        stop,
    } = run;
    let started = std::time::Instant::now();
    let source = Arc::new(MysqlSource::new(
        endpoint.clone(),
        task.full_load_settings.max_full_load_sub_tasks,
    ));
    if task.migration_type == MigrationType::FullLoad {
        return full_load::run(source, storage, checkpoint, task, options, events, stop).await;
    }
    // Every CDC prerequisite is checked before anything is created.
    let mut conn = endpoint.connect().await?;
    endpoint
        .binlog_settings(&mut conn)
        .await?
        .require_cdc(&endpoint.name)?;
    refuse_text_cast_columns(&endpoint, &task).await?;
    let current = endpoint.current_position(&mut conn).await?;
    let _ = conn.disconnect().await;
    let state = checkpoint.snapshot().await;
    if options.reload {
        cleanup::delete_cdc_files(&storage, &task, &state, &events).await?;
        checkpoint.update(|s| s.cdc = None).await?;
    }
    let mut options = options;
    request_reload(&*source, &checkpoint, &task, &mut options, &events).await?;
    let state = checkpoint.snapshot().await;
    let load = load_before_cdc(
        source.clone(),
        &storage,
        &checkpoint,
        &task,
        &options,
        &events,
        &stop,
    )
    .await?;
    let mut load = if checkpoint.snapshot().await.reloading.is_empty() {
        load
    } else {
        let reloaded =
            reload::run(source.clone(), &storage, &checkpoint, &task, &events, &stop).await;
        reload::outcome(reloaded, load, &events)?
    };
    if !task.has_full_load()
        && state
            .cdc
            .as_ref()
            .is_none_or(|c| c.confirmed_position.is_none())
    {
        // CDC only: changes from now on.
        let Some(position) = current else {
            return Err(TaskError::Internal {
                task: task.name,
                message: "the server reports no binlog position".into(),
            });
        };
        events.log(
            LogLevel::Info,
            format!("CDC starts at the binlog's end, {position}"),
        );
        let position = SourcePosition::Binlog(position);
        checkpoint
            .update(|s| {
                s.cdc
                    .get_or_insert_with(Default::default)
                    .confirmed_position = Some(position.clone());
            })
            .await?;
    }
    if stop.borrow().is_some() {
        return Err(TaskError::Stopped { task: task.name });
    }
    let cdc = CdcRun {
        endpoint,
        storage: storage.clone(),
        task: task.clone(),
        checkpoint: checkpoint.clone(),
        events: events.clone(),
        stop: stop.clone(),
        until_caught_up: options.until_caught_up,
    };
    // The stream goes on after each reload a schema change asks for.
    loop {
        let outcome = cdc.clone().run().await?;
        if !outcome.reload || stop.borrow().is_some() {
            return Ok(cdc_summary(load, outcome, started));
        }
        let reloaded =
            reload::run(source.clone(), &storage, &checkpoint, &task, &events, &stop).await;
        load = reload::outcome(reloaded, load, &events)?;
    }
}

// ---- The part in the CDC loop ----

/// The open transaction.
struct Txn {
    /// File number and start offset: the transaction's place in commit order.
    file: u64,
    start: u64,
    /// Changes numbered so far.
    seq: u32,
    commit_micros: i64,
    /// Opened by BEGIN (or a GTID event): ends at COMMIT or XID. Otherwise a single
    /// statement is its own transaction.
    explicit: bool,
}

impl Txn {
    /// The `_position` of the transaction's next change.
    fn position(&self) -> ChangePosition {
        ChangePosition::mysql(self.file, self.start, self.seq)
    }

    fn next_position(&mut self) -> ChangePosition {
        let p = self.position();
        self.seq += 1;
        p
    }
}

/// Whether position `a` is at or after `b`.
fn reached(a: &BinlogPosition, b: &BinlogPosition) -> bool {
    (a.file_index(), a.pos) >= (b.file_index(), b.pos)
}

impl CdcRun<MyEndpoint> {
    /// Reads the binlog from the task's confirmed position through the CDC loop.
    pub async fn run(self) -> Result<CdcOutcome, TaskError> {
        let CdcRun {
            endpoint,
            storage,
            task,
            checkpoint,
            events,
            stop,
            until_caught_up,
        } = self;
        let rules = SelectionRules::new(&task.include, &task.exclude);
        let state = checkpoint.snapshot().await;
        super::prepare(&storage, &checkpoint, &events, &task, &state).await?;
        let start = state
            .cdc
            .as_ref()
            .and_then(|c| c.confirmed_position.as_ref())
            .or(state.snapshot_position.as_ref());
        let Some(start) = start.and_then(SourcePosition::binlog).cloned() else {
            return Err(TaskError::Internal {
                task: task.name.clone(),
                message: format!(
                    "the task state has no binlog position to start from ({})",
                    start.map_or("none".to_string(), ToString::to_string)
                ),
            });
        };
        let mut control = endpoint.connect().await?;
        let caught_up_at = if until_caught_up {
            endpoint.current_position(&mut control).await?
        } else {
            None
        };
        let server_id = binlog::server_id(&task.name);
        let reader = BinlogReader::open(&endpoint, &start, server_id, rules.clone()).await?;
        let replica = format!("binlog replica {server_id}");
        if state.cdc.is_none() {
            // The stream's record starts here, before its first batch.
            let position = SourcePosition::Binlog(start.clone());
            checkpoint
                .update(|s| {
                    s.cdc = Some(crate::task::checkpoint::CdcState {
                        slot: replica.clone(),
                        confirmed_position: Some(position.clone()),
                        ..Default::default()
                    });
                })
                .await?;
        }
        events.log(
            LogLevel::Info,
            format!(
                "CDC from the binlog at {start}, resuming by {} (replica server id {server_id})",
                if reader.by_gtid() {
                    "GTID"
                } else {
                    "file and position"
                }
            ),
        );
        let writer = BatchWriter::new(
            storage,
            task.clone(),
            checkpoint.clone(),
            events.clone(),
            &state,
            &SourcePosition::Binlog(start.clone()),
            (replica, String::new()),
        );
        let engine = Mysql {
            endpoint,
            task: task.name.clone(),
            checkpoint,
            events: events.clone(),
            control,
            reader,
            rules,
            maps: HashMap::new(),
            signatures: HashMap::new(),
            added: HashMap::new(),
            renamed: HashMap::new(),
            txn: None,
            confirmed: start.clone(),
            persisted: start,
            last_persist: Instant::now(),
            persist_every: Duration::from_secs(task.target_settings.cdc_max_batch_interval.max(1)),
            caught_up_at,
        };
        super::run(engine, writer, stop, events).await
    }
}

/// MySQL's part of the CDC loop: binlog row events into the batch, the position recorded.
struct Mysql {
    endpoint: MyEndpoint,
    /// The task's name, for errors.
    task: String,
    checkpoint: Arc<Checkpoint>,
    events: Events,
    /// A normal connection beside the stream, for the binlog lag.
    control: mysql_async::Conn,
    reader: BinlogReader,
    rules: SelectionRules,
    /// Table id → its map (selected tables only).
    maps: HashMap<u64, TableMap>,
    /// Table → the signature its files are written with in this run.
    signatures: HashMap<TableId, String>,
    /// Table → the columns `ALTER TABLE … ADD` statements read in this run added to it,
    /// until its next table map shows them.
    added: HashMap<TableId, Vec<ddl::AddedColumn>>,
    /// The column renames (`from`, `to`, in order) the binlog's ALTER TABLE statements made
    /// since each table's last table map.
    renamed: HashMap<TableId, Vec<(String, String)>>,
    txn: Option<Txn>,
    /// Where the next run may start: the end of the last durable batch, or of the last
    /// transaction read while none of ours was in flight...
    confirmed: BinlogPosition,
    /// ...and what the task state says.
    persisted: BinlogPosition,
    last_persist: Instant,
    persist_every: Duration,
    /// `--until-caught-up`: the end of the binlog when the run started.
    caught_up_at: Option<BinlogPosition>,
}

impl Engine for Mysql {
    type Event = BinlogEvent;

    async fn next(&mut self) -> Result<BinlogEvent, TaskError> {
        match self.reader.next().await? {
            Some(event) => Ok(event),
            None => Err(self.internal("the server closed the binlog stream")),
        }
    }

    async fn apply(
        &mut self,
        writer: &mut BatchWriter,
        event: BinlogEvent,
    ) -> Result<Flow, TaskError> {
        let idle_at = match event {
            BinlogEvent::Begin {
                position,
                time,
                explicit,
                ..
            } => {
                if position == 0 {
                    // Events unpacked from a compressed transaction carry no position.
                    return Err(self.internal(
                        "the binlog holds compressed transactions (binlog_transaction_compression = ON), whose events carry no position: SET GLOBAL binlog_transaction_compression = OFF, then reload the task",
                    ));
                }
                self.txn = Some(Txn {
                    file: binlog_file_index(self.reader.file()),
                    start: position,
                    seq: 0,
                    commit_micros: time as i64 * 1_000_000,
                    explicit,
                });
                None
            }
            BinlogEvent::TableMap { table_id, map } => {
                self.table_map(writer, table_id, map)?;
                None
            }
            BinlogEvent::Rows { table_id, op, rows } => {
                self.rows(writer, table_id, op, rows)?;
                None
            }
            BinlogEvent::Statement {
                schema,
                sql,
                position,
                time,
            } => self.statement(writer, &schema, &sql, position, time),
            BinlogEvent::Commit { position, time } => {
                writer.commit(
                    SourcePosition::Binlog(position.clone()),
                    time as i64 * 1_000_000,
                );
                self.txn = None;
                Some(position)
            }
            BinlogEvent::Heartbeat { position } if self.txn.is_none() && position.pos > 0 => {
                Some(position)
            }
            BinlogEvent::Heartbeat { .. } | BinlogEvent::Other => None,
        };
        match idle_at {
            Some(at) => self.idle(writer, at).await,
            None => Ok(Flow::Go),
        }
    }

    fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    async fn written(
        &mut self,
        writer: &mut BatchWriter,
        written: Option<&SourcePosition>,
        stopped: bool,
    ) -> Result<(), TaskError> {
        if let Some(end) = written.and_then(SourcePosition::binlog) {
            self.confirmed = end.clone();
            self.persisted = self.confirmed.clone();
        }
        if self.txn.is_none()
            && writer.is_empty()
            && (stopped || self.last_persist.elapsed() >= self.persist_every)
        {
            // Traffic of other tables moves the start on, so a restart does not reread
            // it (and a purge of old binlogs does not strand the task).
            self.persist().await?;
            self.last_persist = Instant::now();
        }
        Ok(())
    }

    async fn side_work(&mut self) {}

    async fn lag_bytes(&mut self) -> Option<i64> {
        match Self::binlog_after(&self.endpoint, &mut self.control, &self.confirmed).await {
            Ok(lag) => Some(lag),
            Err(e) => {
                self.events.log(
                    LogLevel::Warn,
                    format!("measuring binlog lag: {e}; retrying later"),
                );
                if let Ok(c) = self.endpoint.connect().await {
                    self.control = c;
                }
                None
            }
        }
    }

    async fn close(self) -> SourcePosition {
        self.reader.close().await;
        let _ = self.control.disconnect().await;
        SourcePosition::Binlog(self.confirmed)
    }
}

impl Mysql {
    fn internal(&self, message: &str) -> TaskError {
        TaskError::Internal {
            task: self.task.clone(),
            message: message.to_owned(),
        }
    }

    /// A table map (the reader maps selected tables only): a new or changed schema starts
    /// the table's next file.
    fn table_map(
        &mut self,
        writer: &mut BatchWriter,
        table_id: u64,
        map: TableMap,
    ) -> Result<(), TaskError> {
        let key = map.id();
        let signature = map.signature();
        if self.signatures.get(&key) != Some(&signature) {
            let position = self.txn.as_ref().map(Txn::position).unwrap_or_default();
            let schema = RowBuilder::schema_for(&map.names, &map.decoders);
            let builder = Box::new(RowBuilder::new(schema.clone(), map.decoders.clone()));
            let statements = self.added.remove(&key).unwrap_or_default();
            let renames = self.renamed.remove(&key).unwrap_or_default();
            // Without an earlier shape (a table the stream shows first, or created again),
            // nothing is added or renamed.
            let previous = writer.previous_shape(&key).map(|s| s.names);
            let previous = previous.as_deref().unwrap_or(&map.names);
            let renamed = renamed_columns(previous, &map.names, &renames);
            let added = added_columns(previous, &map.names, &renamed)
                .into_iter()
                .map(|name| {
                    let data_type = schema.field_with_name(&name).map(|f| f.data_type());
                    let statement = statements
                        .iter()
                        .rev()
                        .find(|c| c.name.eq_ignore_ascii_case(&name));
                    let value = match (statement, data_type) {
                        (Some(c), Ok(data_type)) => added_value(&c.default, data_type),
                        _ => AddedValue::Unknown(
                            "the ALTER TABLE that added it was not read in this run".into(),
                        ),
                    };
                    AddedColumn { name, value }
                })
                .collect();
            let columns = ColumnsChanged {
                added,
                renamed,
                identity: None,
            };
            writer.schema(&key, &signature, schema, builder, position, columns)?;
            self.signatures.insert(key, signature);
        }
        self.maps.insert(table_id, map);
        Ok(())
    }

    /// A rows event of a mapped table: each row into the batch.
    fn rows(
        &mut self,
        writer: &mut BatchWriter,
        table_id: u64,
        op: RowOp,
        rows: RowImages,
    ) -> Result<(), TaskError> {
        let Some(map) = self.maps.get(&table_id) else {
            return Ok(());
        };
        let Some(t) = self.txn.as_mut() else {
            return Err(self.internal("a row change outside a transaction"));
        };
        let key = map.id();
        for (before, after) in rows {
            for (op, values) in split_change(map, op, before, after) {
                let position = t.next_position();
                writer.append_row(&key, op, position, t.commit_micros, |b: &mut RowBuilder| {
                    append(b, map, &values)
                })?;
            }
        }
        Ok(())
    }

    /// A statement: a DDL that empties tables (TRUNCATE, DROP, RENAME) is recorded. Returns
    /// where the stream is idle, when the statement committed on its own.
    fn statement(
        &mut self,
        writer: &mut BatchWriter,
        schema: &str,
        sql: &str,
        position: BinlogPosition,
        time: u32,
    ) -> Option<BinlogPosition> {
        let ddl = ddl::parse(schema, sql);
        if let Some(Ddl::AlterColumns {
            table,
            added,
            renamed,
        }) = &ddl
            && self.rules.matches_id(table)
        {
            let known = self.added.entry(table.clone()).or_default();
            known.extend(added.iter().cloned());
            let known = self.renamed.entry(table.clone()).or_default();
            known.extend(renamed.iter().cloned());
        }
        let emptied = ddl
            .map(|ddl| emptied_tables(ddl, &self.rules, &writer.known_tables()))
            .unwrap_or_default();
        if !emptied.is_empty() {
            let t = self.txn.get_or_insert(Txn {
                file: position.file_index(),
                start: position.pos,
                seq: 0,
                commit_micros: time as i64 * 1_000_000,
                explicit: false,
            });
            let at = t.next_position();
            let mut recorded = false;
            for (table, change) in emptied {
                // What the ALTERs before said of its columns is of a table that is gone.
                self.added.remove(&table);
                self.renamed.remove(&table);
                if let Some(to) = change.strip_prefix(RENAMED_IN_FROM) {
                    self.events.log(
                        LogLevel::Warn,
                        format!(
                            "{table} was renamed from {to} at {at}: the rows it had then are not in the binlog, so the lake holds only its changes since. Load it again: tributary run … --reload-table '{table}'"
                        ),
                    );
                    continue;
                }
                let change = SchemaChange::other(at.clone(), &change);
                recorded |= writer.emptied(&table, change);
            }
            if recorded {
                writer.touch(t.commit_micros);
            }
        }
        if self.txn.as_ref().is_none_or(|t| !t.explicit) {
            // DDL commits on its own.
            writer.commit(
                SourcePosition::Binlog(position.clone()),
                time as i64 * 1_000_000,
            );
            self.txn = None;
            return Some(position);
        }
        None
    }

    /// The stream is between transactions at `at`: the start may move there, and a run
    /// until caught up may end.
    async fn idle(
        &mut self,
        writer: &mut BatchWriter,
        at: BinlogPosition,
    ) -> Result<Flow, TaskError> {
        if writer.is_empty() && reached(&at, &self.confirmed) {
            // Nothing of ours in flight: the task may start after this point.
            self.confirmed = at.clone();
        }
        if let Some(target) = &self.caught_up_at
            && reached(&at, target)
            && self.txn.is_none()
        {
            if let Some(SourcePosition::Binlog(end)) = writer.flush().await? {
                self.confirmed = end;
            }
            self.persist().await?;
            return Ok(Flow::CaughtUp);
        }
        Ok(Flow::Go)
    }

    /// Records `confirmed` as where the next run starts, if it moved.
    async fn persist(&mut self) -> Result<(), TaskError> {
        if self.confirmed == self.persisted {
            return Ok(());
        }
        let position = SourcePosition::Binlog(self.confirmed.clone());
        self.checkpoint
            .update(|s| {
                let c = s.cdc.get_or_insert_with(Default::default);
                if c.pending_batch.is_none() {
                    c.confirmed_position = Some(position.clone());
                }
            })
            .await?;
        self.persisted = self.confirmed.clone();
        Ok(())
    }

    /// Bytes of binlog written after `at`.
    async fn binlog_after(
        endpoint: &MyEndpoint,
        conn: &mut mysql_async::Conn,
        at: &BinlogPosition,
    ) -> Result<i64, crate::source::SourceError> {
        use mysql_async::prelude::Queryable;
        let files: Vec<mysql_async::Row> = conn
            .query("SHOW BINARY LOGS")
            .await
            .map_err(|e| endpoint.classify(e, "listing binlog files"))?;
        let mut lag = 0i64;
        for row in files {
            let (Some(name), Some(size)) = (row.get::<String, _>(0), row.get::<u64, _>(1)) else {
                continue;
            };
            match binlog_file_index(&name).cmp(&at.file_index()) {
                std::cmp::Ordering::Greater => lag += size as i64,
                std::cmp::Ordering::Equal => lag += size as i64 - at.pos as i64,
                std::cmp::Ordering::Less => {}
            }
        }
        Ok(lag.max(0))
    }
}

/// Columns the full load reads as text (MariaDB's INET4, INET6, UUID…) arrive in the
/// binlog in their binary storage form, which CDC would write differently: refused, with
/// the way out, rather than written two ways.
pub(in crate::task) async fn refuse_text_cast_columns(
    endpoint: &MyEndpoint,
    task: &TaskConfig,
) -> Result<(), TaskError> {
    let rules = &SelectionRules::new(&task.include, &task.exclude);
    use crate::source::Source;
    let source = crate::source::mysql::MysqlSource::new(endpoint.clone(), 1);
    let tables = match source.discover(rules).await {
        Ok(tables) => tables,
        Err(crate::source::SourceError::NoTables { .. }) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let cast: Vec<String> = tables
        .iter()
        .flat_map(|t| {
            t.columns
                .iter()
                .filter(|c| c.cast_to_text)
                .map(move |c| format!("{}.{} ({})", t.qualified_name(), c.name, c.source_type))
        })
        .collect();
    if cast.is_empty() {
        return Ok(());
    }
    Err(TaskError::TablesFailed {
        task: task.name.clone(),
        count: cast.len(),
        details: format!(
            "columns of types CDC does not decode from the binlog yet: {}. Exclude their tables from the task, or use a full-load task for them",
            cast.join(", ")
        ),
    })
}

impl TableRows for RowBuilder {
    fn len(&self) -> usize {
        RowBuilder::len(self)
    }

    fn bytes(&self) -> usize {
        RowBuilder::bytes(self)
    }

    fn finish(&mut self) -> arrow_array::RecordBatch {
        RowBuilder::finish(self)
    }

    fn as_any(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// Appends one row image to a table's MySQL builder.
fn append(builder: &mut RowBuilder, map: &TableMap, values: &[Value]) -> Result<(), String> {
    builder.append_row(values).map_err(|(i, m)| {
        format!(
            "decoding column {}: {m}",
            map.names.get(i).map_or("?", String::as_str)
        )
    })
}

/// The rows a change writes: an insert's after-image, a delete's before-image, an update's
/// after-image, or, when the update changes the primary key, a D then an I.
fn split_change(
    map: &TableMap,
    op: RowOp,
    before: Option<Vec<Value>>,
    after: Option<Vec<Value>>,
) -> Vec<(&'static str, Vec<Value>)> {
    match (op, before, after) {
        (RowOp::Insert, _, Some(a)) => vec![("I", a)],
        (RowOp::Delete, Some(b), _) => vec![("D", b)],
        (RowOp::Update, Some(b), Some(a)) => {
            let key_changed = map
                .names
                .iter()
                .enumerate()
                .any(|(i, n)| map.key.contains(n) && b.get(i) != a.get(i));
            if key_changed {
                vec![("D", b), ("I", a)]
            } else {
                vec![("U", a)]
            }
        }
        (RowOp::Update, None, Some(a)) => vec![("U", a)],
        _ => Vec::new(),
    }
}

/// Marks a table renamed *into* a selected name, in [`emptied_tables`]'s answer.
const RENAMED_IN_FROM: &str = "renamed in from ";

/// What rows older than an added column read for it, from its `ALTER TABLE` clause, as a
/// value of `data_type` (the column's type in the raw zone). Exact or unknown, never a
/// guess: a literal the server would convert in a way a cast may not (into a date-time,
/// whose literal depends on the session's time zone, or into bytes, which it pads) is
/// unknown.
fn added_value(default: &ddl::ColumnDefault, data_type: &DataType) -> AddedValue {
    use ddl::ColumnDefault;
    let literal = |text: &str| {
        if matches!(
            data_type,
            DataType::Timestamp(..)
                | DataType::Binary
                | DataType::LargeBinary
                | DataType::FixedSizeBinary(_)
        ) {
            return AddedValue::Unknown(format!(
                "its default {text:?} is converted by the server in ways the lake cannot repeat exactly for its type {data_type}"
            ));
        }
        AddedValue::from_text(text, data_type)
    };
    match default {
        ColumnDefault::Literal(text) => literal(text),
        ColumnDefault::Null => AddedValue::Null,
        ColumnDefault::Implicit(type_word) => match type_word.as_str() {
            "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "decimal"
            | "numeric" | "dec" | "fixed" | "float" | "double" | "real" => literal("0"),
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => literal(""),
            other => AddedValue::Unknown(format!(
                "it is NOT NULL without a default, and the implicit default of type {other} is not read"
            )),
        },
        ColumnDefault::Unknown(why) => AddedValue::Unknown(why.clone()),
    }
}

/// The columns renamed between a table's `previous` and its new column `names`, by the
/// `renames` (`from`, `to`) its ALTER statements made in between, in order: a column
/// whose renames lead to another name the table has (two columns may swap names). Names
/// compare as MySQL's do, whatever their case.
fn renamed_columns(
    previous: &[String],
    names: &[String],
    renames: &[(String, String)],
) -> Vec<RenamedColumn> {
    let find =
        |list: &[String], name: &str| list.iter().find(|n| n.eq_ignore_ascii_case(name)).cloned();
    previous
        .iter()
        .filter_map(|from| {
            let end = renames.iter().fold(from.clone(), |at, (a, b)| {
                if a.eq_ignore_ascii_case(&at) {
                    b.clone()
                } else {
                    at
                }
            });
            // A rename may change only the case of the name.
            let to = find(names, &end).filter(|to| to != from)?;
            Some(RenamedColumn {
                from: from.clone(),
                to,
            })
        })
        .collect()
}

/// What a statement did to the task's tables: each selected table it emptied with the
/// change to record ([`SchemaChange::empties_table`]), and each selected table it renamed
/// another into (`RENAMED_IN_FROM`, to warn about: its earlier rows are not in the binlog).
/// `known`: the tables the task has seen (a dropped schema's tables are among them).
fn emptied_tables(ddl: Ddl, rules: &SelectionRules, known: &[TableId]) -> Vec<(TableId, String)> {
    let selected = |t: &TableId| rules.matches_id(t);
    match ddl {
        Ddl::AlterColumns { .. } => Vec::new(),
        Ddl::Truncate(t) => vec![(t, SchemaChange::TRUNCATE.to_owned())]
            .into_iter()
            .filter(|(t, _)| selected(t))
            .collect(),
        Ddl::Drop(tables) => tables
            .into_iter()
            .filter(selected)
            .map(|t| (t, SchemaChange::DROP.to_owned()))
            .collect(),
        Ddl::DropSchema(schema) => known
            .iter()
            .filter(|t| t.schema == schema && selected(t))
            .map(|t| (t.clone(), SchemaChange::DROP.to_owned()))
            .collect(),
        Ddl::Rename(pairs) => pairs
            .into_iter()
            .flat_map(|(from, to)| {
                let gone = selected(&from).then(|| {
                    (
                        from.clone(),
                        SchemaChange::renamed_to(ChangePosition::default(), &to).change,
                    )
                });
                let arrived = selected(&to).then(|| (to, format!("{RENAMED_IN_FROM}{from}")));
                gone.into_iter().chain(arrived)
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_lead_a_column_to_its_new_name() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let pairs = |p: &[(&str, &str)]| {
            p.iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect::<Vec<_>>()
        };
        let renamed = |from: &str, to: &str| RenamedColumn {
            from: from.into(),
            to: to.into(),
        };
        let previous = names(&["id", "a", "b"]);
        assert_eq!(
            renamed_columns(
                &previous,
                &names(&["id", "C", "b"]),
                &pairs(&[("a", "x"), ("X", "c")])
            ),
            vec![renamed("a", "C")],
            "a chain of renames, names in any case"
        );
        assert_eq!(
            renamed_columns(
                &previous,
                &names(&["id", "a", "b"]),
                &pairs(&[("a", "t"), ("b", "a"), ("t", "b")])
            ),
            vec![renamed("a", "b"), renamed("b", "a")],
            "two columns swapping names"
        );
        assert!(
            renamed_columns(&previous, &names(&["id", "b"]), &pairs(&[("a", "gone")])).is_empty(),
            "renamed, then dropped"
        );
        assert_eq!(
            renamed_columns(&previous, &names(&["id", "A", "b"]), &pairs(&[("a", "A")])),
            vec![renamed("a", "A")],
            "only the case changed"
        );
    }

    #[test]
    fn statements_empty_only_selected_tables() {
        let rules = SelectionRules::new(&["shop.%".into()], &["shop.skip".into()]);
        let id = |s: &str, t: &str| TableId::new(s, t);
        let known = [id("shop", "a"), id("shop", "skip"), id("other", "a")];
        let decide = |sql: &str| {
            let ddl = ddl::parse("shop", sql).expect("a statement that empties tables");
            emptied_tables(ddl, &rules, &known)
        };
        assert_eq!(
            decide("TRUNCATE TABLE `a b`"),
            vec![(id("shop", "a b"), "truncate".to_owned())],
            "the whole quoted name, never its first word"
        );
        assert_eq!(decide("TRUNCATE skip"), vec![]);
        assert_eq!(
            decide("DROP TABLE x, other.x"),
            vec![(id("shop", "x"), "drop".to_owned())]
        );
        assert_eq!(
            decide("DROP DATABASE shop"),
            vec![(id("shop", "a"), "drop".to_owned())]
        );
        assert_eq!(
            decide("RENAME TABLE a TO `b c`, other.q TO r"),
            vec![
                (id("shop", "a"), "renamed to shop.b c".to_owned()),
                (id("shop", "b c"), format!("{RENAMED_IN_FROM}shop.a")),
                (id("shop", "r"), format!("{RENAMED_IN_FROM}other.q")),
            ]
        );
    }

    #[test]
    fn added_values_are_exact_or_unknown() {
        use crate::source::mysql::ddl::ColumnDefault;
        let constant = |t: &str| AddedValue::Constant(t.to_owned());
        let lit = |t: &str| ColumnDefault::Literal(t.to_owned());
        assert_eq!(added_value(&lit("1"), &DataType::Int8), constant("1"));
        assert_eq!(
            added_value(&lit("9.99"), &DataType::Decimal128(10, 2)),
            constant("9.99")
        );
        assert_eq!(added_value(&lit("x y"), &DataType::Utf8), constant("x y"));
        assert_eq!(
            added_value(&ColumnDefault::Null, &DataType::Int32),
            AddedValue::Null
        );
        let implicit = |t: &str| ColumnDefault::Implicit(t.to_owned());
        assert_eq!(
            added_value(&implicit("int"), &DataType::Int32),
            constant("0")
        );
        assert_eq!(
            added_value(&implicit("varchar"), &DataType::Utf8),
            constant("")
        );
        for (default, data_type) in [
            (implicit("enum"), DataType::Utf8),
            // The server rounds 1.5 into an INT; a cast refuses it.
            (lit("1.5"), DataType::Int32),
            (
                lit("2026-01-01 00:00:00"),
                DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, Some("UTC".into())),
            ),
            (lit("ab"), DataType::Binary),
            (ColumnDefault::Unknown("why".into()), DataType::Int32),
        ] {
            assert!(
                matches!(added_value(&default, &data_type), AddedValue::Unknown(_)),
                "{default:?} as {data_type}"
            );
        }
    }
}
