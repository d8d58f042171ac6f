//! A PostgreSQL task from start to end: the server's readiness, the slot and publication,
//! the full load from the slot's own snapshot, tables reloaded alone from temporary slots,
//! then CDC from exactly where the snapshot ends.
//!
//! PostgreSQL's part of the CDC loop ([`super`]): pgoutput changes, batched as DMS batches
//! them ([`crate::task::batch`]), written exactly once.
//!
//! Invariants:
//! - the slot is confirmed only after the batch's end position is durably the task's
//!   `confirmed_position`;
//! - a transaction that ends at or before `confirmed_position` is skipped, so a restart never
//!   writes a change twice;
//! - `_position` is the commit LSN and the change's number in its transaction, both
//!   zero-padded hexadecimal: it sorts in exact commit order;
//! - every U row is a whole after-image: unchanged TOASTed values come from the old tuple
//!   (REPLICA IDENTITY FULL) or are recovered by [`crate::task::toast`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_schema::{Field, Schema};
use futures::future::BoxFuture;
use pgwire_replication::ReplicationEvent;
use sqlx::PgConnection;
use tokio::sync::watch;

use super::{CdcRun, Engine, Flow, SourceEngine};
use crate::check::{CheckResult, CheckStatus};
use crate::config::{EndpointConfig, MigrationType, TaskConfig, Workspace};
use crate::ident::TableId;
use crate::lake::Storage;
use crate::source::position::{ChangePosition, SourcePosition, format_lsn};
use crate::source::postgres::copy_binary::TextBatchBuilder;
use crate::source::postgres::pgoutput::{
    self, Message, OldTuple, Relation, ReplicaIdentity, Value,
};
use crate::source::postgres::replication::{ChangeStream, SlotStatus, SnapshotHolder};
use crate::source::postgres::types::Kind;
use crate::source::postgres::{CatalogColumn, PgEndpoint, PostgresSource};
use crate::source::{SelectionRules, Source, SourceError, SourceIdentity, TableInfo};
use crate::task::batch::{BatchWriter, ColumnsChanged, Shape, TableRows, added_columns};
use crate::task::checkpoint::{self, AddedColumn, AddedValue, Checkpoint};
use crate::task::control::{Events, LogLevel, TaskCommand};
use crate::task::course::{TaskRun, cdc_summary, load_before_cdc, request_reload};
use crate::task::error::TaskError;
use crate::task::snapshot::{ExactSnapshot, RangeReader, SnapshotReader};
use crate::task::stats::{CdcOutcome, TaskSummary};
use crate::task::toast::{self, ToastRecovery};
use crate::task::{cleanup, full_load, reload};

// ---- The course of a task ----

/// PostgreSQL as tasks drive it.
pub(super) struct PostgresEngine;

impl SourceEngine for PostgresEngine {
    fn check<'a>(
        &'a self,
        workspace: &'a Workspace,
        endpoint: &'a EndpointConfig,
        password: Option<String>,
    ) -> BoxFuture<'a, Vec<CheckResult>> {
        Box::pin(async move {
            let pg = PgEndpoint::from_config(endpoint, password);
            let mut results = PostgresSource::new(pg.clone()).check().await;
            if results.iter().any(|r| r.status == CheckStatus::Fail) {
                return results;
            }
            let readers = workspace
                .tasks
                .iter()
                .filter(|t| t.source == endpoint.name && t.has_cdc());
            for task in readers {
                results.push(slot_check(&pg, task).await);
            }
            results
        })
    }

    fn discover<'a>(
        &'a self,
        endpoint: &'a EndpointConfig,
        password: Option<String>,
        rules: &'a SelectionRules,
    ) -> BoxFuture<'a, Result<Vec<TableInfo>, SourceError>> {
        Box::pin(async move {
            PostgresSource::new(PgEndpoint::from_config(endpoint, password))
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
        Box::pin(run_task(PgEndpoint::from_config(endpoint, password), run))
    }

    fn exact_snapshot<'a>(
        &'a self,
        endpoint: &'a EndpointConfig,
        password: Option<String>,
        task: &'a TaskConfig,
    ) -> BoxFuture<'a, Result<ExactSnapshot, TaskError>> {
        Box::pin(async move {
            let pg = PgEndpoint::from_config(endpoint, password);
            let mut source = PostgresSource::new(pg.clone());
            let mut holder = None;
            let slot = pg.task_slot(task).await?;
            if task.has_cdc() {
                // A temporary slot's snapshot, as a reload's: its consistent point is
                // exact. (A full-load task's lake is its load: any snapshot will do.)
                let temporary = temporary_slot(&slot, "validate");
                let (slot_holder, snapshot) = pg
                    .create_slot_with_snapshot(&temporary, &task.publication_name(), true)
                    .await?;
                holder = Some(slot_holder);
                source = source.with_slot_snapshot(snapshot);
                // An idle task's stream moves past the snapshot only when something is
                // written after it: a heartbeat, which the task confirms.
                let written = match pg.connect().await {
                    Ok(mut conn) => {
                        let written = pg.heartbeat(&mut conn).await.map(|_| ());
                        let _ = sqlx::Connection::close(conn).await;
                        written
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = written {
                    tracing::warn!("{e}: an idle task may not reach the snapshot's position");
                }
            }
            let (reader, tables, position) = RangeReader::open(source, task, endpoint).await?;
            let reader = PgSnapshot {
                reader,
                _holder: holder,
                pg,
                slot,
            };
            Ok(ExactSnapshot::new(position, tables, Box::new(reader)))
        })
    }
}

/// A temporary slot's name: the task's slot, what it is for, and the process id (a killed
/// run's slot may outlive it for a moment), within PostgreSQL's 63 bytes (slot names are
/// ASCII, checked in the workspace).
fn temporary_slot(slot: &str, purpose: &str) -> String {
    let suffix = format!("_{purpose}_{}", std::process::id());
    let keep = slot.len().min(63usize.saturating_sub(suffix.len()));
    format!("{}{suffix}", &slot[..keep])
}

/// A temporary slot's snapshot, and the task's slot whose confirmed position tells how
/// far the task has got.
struct PgSnapshot {
    reader: RangeReader<PostgresSource>,
    /// Holds the temporary slot and its exported snapshot (a CDC task's).
    _holder: Option<SnapshotHolder>,
    pg: PgEndpoint,
    slot: String,
}

impl SnapshotReader for PgSnapshot {
    fn read<'a>(
        &'a self,
        table: &'a TableInfo,
        out: tokio::sync::mpsc::Sender<arrow_array::RecordBatch>,
    ) -> BoxFuture<'a, Result<u64, SourceError>> {
        Box::pin(self.reader.read_table(table, out))
    }

    fn confirmed(&self) -> BoxFuture<'_, Result<Option<SourcePosition>, SourceError>> {
        Box::pin(async move {
            // Only the task's own slot says how far the task got: not another database's.
            let status = self.pg.slot_status(&self.slot).await?;
            let own = status.filter(|s| s.is_of(&self.pg.database));
            let Some(flushed) = own.and_then(|s| s.confirmed_flush) else {
                return Ok(None);
            };
            Ok(Some(SourcePosition::Lsn(
                self.pg
                    .lsn("reading the slot's confirmed position", &flushed)?,
            )))
        })
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move { self.reader.release().await })
    }
}

/// A PostgreSQL task: the full load, CDC, or the full load from the slot's snapshot and
/// then CDC from exactly where the snapshot ends.
async fn run_task(pg: PgEndpoint, run: TaskRun) -> Result<TaskSummary, TaskError> {
    let TaskRun {
        storage,
        checkpoint,
        task,
        options,
        events,
        stop,
    } = run;
    let started = std::time::Instant::now();
    if task.migration_type == MigrationType::FullLoad {
        let source = Arc::new(PostgresSource::new(pg));
        return full_load::run(source, storage, checkpoint, task, options, events, stop).await;
    }
    let slot = pg.task_slot(&task).await?;
    let publication = task.publication_name();
    let status = ready_slot(&pg, &task, &slot, &events).await?;
    let mut options = options;
    let state = checkpoint.snapshot().await;
    let cdc_started = state
        .cdc
        .as_ref()
        .is_some_and(|c| c.confirmed_position.is_some());
    // A slot whose start the state never recorded (killed just after creating it, or the
    // state was moved away) cannot say where CDC starts relative to a load: recreate it.
    let unanchored = task.has_full_load() && state.snapshot_position.is_none() && !cdc_started;
    let lost = status.as_ref().is_some_and(|s| s.lost);
    let start_over = status.is_some() && (options.reload || unanchored);
    if start_over {
        if let Err(e) = pg.drop_slot(&slot).await {
            // Another run took the slot since its status was read: between the first
            // run's snapshot (the slot is active while it is held) and its streaming, the
            // slot is idle for a moment.
            if pg
                .slot_status(&slot)
                .await
                .ok()
                .flatten()
                .is_some_and(|s| s.active)
            {
                return Err(TaskError::SlotBusy {
                    task: task.name.clone(),
                    slot,
                });
            }
            return Err(e.into());
        }
        events.log(
            LogLevel::Info,
            format!("dropped replication slot {slot} to start over"),
        );
    }
    if lost && !options.reload && !unanchored {
        return Err(TaskError::SlotLost {
            task: task.name.clone(),
            slot,
        });
    }
    if options.reload {
        cleanup::delete_cdc_files(&storage, &task, &state, &events).await?;
    }
    let mut source = PostgresSource::new(pg.clone());
    let mut holder = None;
    if status.is_none() || start_over {
        if cdc_started && !options.reload {
            return Err(TaskError::SlotLost {
                task: task.name.clone(),
                slot,
            });
        }
        let (h, snapshot) = pg
            .create_slot_with_snapshot(&slot, &publication, false)
            .await?;
        events.log(
            LogLevel::Info,
            format!(
                "created replication slot {slot} at {}",
                snapshot.describe_position()
            ),
        );
        if task.has_full_load() {
            // Everything loaded before the slot existed could miss changes: load afresh
            // from the slot's own snapshot.
            if !state.tables.is_empty() && !options.reload {
                events.log(
                    LogLevel::Info,
                    "the slot is new, so the full load starts afresh from its snapshot",
                );
            }
            if !options.reload && (!state.tables.is_empty() || state.cdc.is_some()) {
                cleanup::delete_cdc_files(&storage, &task, &state, &events).await?;
                options.reload = true;
            }
            source = source.with_slot_snapshot(snapshot.clone());
            holder = Some(h);
        }
        checkpoint
            .update(|s| {
                // A new slot starts a new stream: nothing of the old one applies.
                s.cdc = Some(checkpoint::CdcState {
                    slot: slot.clone(),
                    publication: publication.clone(),
                    confirmed_position: if task.has_full_load() {
                        None
                    } else {
                        snapshot.position.clone()
                    },
                    ..Default::default()
                });
            })
            .await?;
    }
    request_reload(&source, &checkpoint, &task, &mut options, &events).await?;
    let load = load_before_cdc(
        Arc::new(source),
        &storage,
        &checkpoint,
        &task,
        &options,
        &events,
        &stop,
    )
    .await?;
    // The snapshot is no longer needed by anyone.
    if let Some(holder) = holder {
        holder.close().await;
    }
    let mut load = load;
    let cdc = CdcRun {
        endpoint: pg.clone(),
        storage: storage.clone(),
        task: task.clone(),
        checkpoint: checkpoint.clone(),
        events: events.clone(),
        stop: stop.clone(),
        until_caught_up: options.until_caught_up,
    };
    // Tables waiting for a reload load before the stream goes on, and again whenever a
    // schema change asks for one.
    loop {
        if !checkpoint.snapshot().await.reloading.is_empty() {
            let reloaded =
                reload_alone(&pg, &slot, &storage, &checkpoint, &task, &events, &stop).await;
            load = reload::outcome(reloaded, load, &events)?;
        }
        let outcome = cdc.clone().run().await?;
        if !outcome.reload || stop.borrow().is_some() {
            return Ok(cdc_summary(load, outcome, started));
        }
        slot_released(&pg, &task, &slot).await?;
    }
}

/// Waits, up to [`SLOT_RELEASE_WAIT`], until no session streams `slot`: the server ends a
/// closed stream's walsender a moment after it closes, and the slot is busy until then.
async fn slot_released(pg: &PgEndpoint, task: &TaskConfig, slot: &str) -> Result<(), TaskError> {
    let started = Instant::now();
    while pg.slot_status(slot).await?.is_some_and(|s| s.active) {
        if started.elapsed() >= SLOT_RELEASE_WAIT {
            return Err(TaskError::SlotBusy {
                task: task.name.clone(),
                slot: slot.to_owned(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// How long a course waits for its own closed stream to let go of the slot.
const SLOT_RELEASE_WAIT: Duration = Duration::from_secs(30);

/// Checks the server and the slot before anything changes, and makes the publication (or
/// checks that a given one publishes every selected table). Returns the slot's status.
async fn ready_slot(
    pg: &PgEndpoint,
    task: &TaskConfig,
    slot: &str,
    events: &Events,
) -> Result<Option<SlotStatus>, TaskError> {
    pg.require_logical_wal().await?;
    let slot = slot.to_owned();
    let publication = task.publication_name();
    let status = pg.slot_status(&slot).await?;
    if let Some(s) = &status
        && !s.is_of(&pg.database)
    {
        // Another database's slot (or another tool's) is never streamed, nor dropped.
        return Err(TaskError::ForeignSlot {
            task: task.name.clone(),
            slot,
            database: pg.database.clone(),
            owner: s.owner(),
        });
    }
    if status.as_ref().is_some_and(|s| s.active) {
        // Another run streams this slot: touching the state now could undo its batch.
        return Err(TaskError::SlotBusy {
            task: task.name.clone(),
            slot,
        });
    }
    if pg.ensure_publication(&publication).await? {
        events.log(
            LogLevel::Info,
            format!("created publication {publication} FOR ALL TABLES"),
        );
    } else if let Some(problem) = unpublished_tables(pg, task).await? {
        // A publication made by hand may leave out tables the task selects: their changes
        // would silently never come.
        return Err(TaskError::Source(SourceError::Database {
            endpoint: pg.name.clone(),
            context: format!("checking publication {publication}"),
            message: format!("{}. {}", problem.detail, problem.fix),
        }));
    }
    Ok(status)
}

/// Reloads the tables waiting for it, each from a temporary slot's snapshot, while the
/// task's own slot stays where it is.
async fn reload_alone(
    pg: &PgEndpoint,
    slot: &str,
    storage: &Storage,
    checkpoint: &Arc<Checkpoint>,
    task: &TaskConfig,
    events: &Events,
    stop: &watch::Receiver<Option<TaskCommand>>,
) -> Result<TaskSummary, TaskError> {
    let publication = task.publication_name();
    // A temporary slot's snapshot: its consistent point says exactly which changes it
    // holds, while the task's own slot stays where it is.
    let temporary = temporary_slot(slot, "reload");
    let (holder, snapshot) = pg
        .create_slot_with_snapshot(&temporary, &publication, true)
        .await?;
    let source = Arc::new(PostgresSource::new(pg.clone()).with_slot_snapshot(snapshot));
    let reloaded = reload::run(source, storage, checkpoint, task, events, stop).await;
    holder.close().await;
    reloaded
}

/// What is wrong when the task's (existing) publication leaves out tables the task selects.
struct Unpublished {
    detail: String,
    fix: String,
}

async fn unpublished_tables(
    pg: &PgEndpoint,
    task: &TaskConfig,
) -> Result<Option<Unpublished>, SourceError> {
    let publication = task.publication_name();
    let rules = crate::source::SelectionRules::new(&task.include, &task.exclude);
    let selected: Vec<TableId> = PostgresSource::new(pg.clone())
        .discover(&rules)
        .await?
        .iter()
        .map(TableInfo::id)
        .collect();
    let missing: Vec<String> = pg
        .unpublished(&publication, &selected)
        .await?
        .iter()
        .map(crate::source::postgres::sql_table_name)
        .collect();
    Ok((!missing.is_empty()).then(|| Unpublished {
        detail: format!(
            "publication {publication} does not publish {}, which task '{}' selects: their changes would never reach the task",
            missing.join(", "),
            task.name
        ),
        fix: format!(
            "Run ALTER PUBLICATION {publication} ADD TABLE {} (or drop it and let the task create one FOR ALL TABLES), or exclude them",
            missing.join(", ")
        ),
    }))
}

/// A CDC task's slot and publication on its source (`tributary check`).
async fn slot_check(pg: &PgEndpoint, task: &TaskConfig) -> CheckResult {
    let name = format!("task {}", task.name);
    let slot = match pg.task_slot(task).await {
        Ok(slot) => slot,
        Err(e) => return CheckResult::fail_from(&name, &e),
    };
    let publication = task.publication_name();
    let status = match pg.slot_status(&slot).await {
        Ok(s) => s,
        Err(e) => return CheckResult::fail_from(&name, &e),
    };
    let publication_exists = match pg.publication_exists(&publication).await {
        Ok(p) => p,
        Err(e) => return CheckResult::fail_from(&name, &e),
    };
    if publication_exists {
        match unpublished_tables(pg, task).await {
            Ok(None) => {}
            Ok(Some(problem)) => {
                return CheckResult {
                    name,
                    status: CheckStatus::Fail,
                    detail: problem.detail,
                    fix: Some(problem.fix),
                };
            }
            Err(e) => return CheckResult::fail_from(&name, &e),
        }
    }
    let publication_text = if publication_exists {
        format!("publication {publication} exists")
    } else {
        format!("publication {publication} is created on the first run")
    };
    match status {
        None => CheckResult::pass(
            &name,
            format!("slot {slot} is created on the first run; {publication_text}"),
        ),
        Some(s) if !s.is_of(&pg.database) => CheckResult {
            name,
            status: CheckStatus::Fail,
            detail: format!(
                "slot {slot} exists but is not a pgoutput slot of database {}: it belongs to {}",
                pg.database,
                s.owner()
            ),
            fix: Some(format!(
                "set cdc_settings.slot_name to another name, or drop it: SELECT pg_drop_replication_slot('{slot}')"
            )),
        },
        Some(s) => CheckResult::pass(
            &name,
            format!(
                "slot {slot} exists ({}, {} MB of WAL held); {publication_text}",
                if s.active { "streaming" } else { "idle" },
                s.retained_bytes / 1_048_576
            ),
        ),
    }
}

// ---- The part in the CDC loop ----

/// One relation of the stream, as its last Relation message described it.
struct RelationInfo {
    key: TableId,
    selected: bool,
    columns: Arc<[String]>,
    kinds: Vec<Kind>,
    /// Variable-length columns, which PostgreSQL may store out of line (TOAST).
    toastable: Vec<bool>,
    identity: ReplicaIdentity,
    /// `name type` of each column, to record schema changes.
    signature: String,
    /// Name, type OID and typmod of each column, as the stream last described them.
    types: Vec<(String, u32, i32)>,
    /// Which columns make up the replica identity key.
    key_columns: Vec<bool>,
}

impl CdcRun<PgEndpoint> {
    /// Streams the task's slot from its confirmed position through the CDC loop.
    pub async fn run(self) -> Result<CdcOutcome, TaskError> {
        let CdcRun {
            endpoint: pg,
            storage,
            task,
            checkpoint,
            events,
            stop,
            until_caught_up,
        } = self;
        let slot = pg.task_slot(&task).await?;
        let publication = task.publication_name();
        let state = checkpoint.snapshot().await;
        super::prepare(&storage, &checkpoint, &events, &task, &state).await?;
        let confirmed = state
            .cdc
            .as_ref()
            .and_then(|c| c.confirmed_position.as_ref())
            .or(state.snapshot_position.as_ref())
            .and_then(SourcePosition::lsn)
            .unwrap_or(0);
        let mut control = pg.connect().await?;
        let caught_up_at = if until_caught_up {
            // Everything committed before now is before this message in the stream.
            Some(pg.heartbeat(&mut control).await?)
        } else {
            None
        };
        let stream = pg.stream(&slot, &publication, confirmed).await?;
        events.log(
            LogLevel::Info,
            format!(
                "CDC from slot {slot} (publication {publication}) after position {}",
                format_lsn(confirmed)
            ),
        );
        let writer = BatchWriter::new(
            storage,
            task.clone(),
            checkpoint,
            events.clone(),
            &state,
            &SourcePosition::Lsn(confirmed),
            (slot.clone(), publication),
        );
        let cdc = &task.cdc_settings;
        let engine = Postgres {
            pg,
            task: task.name.clone(),
            events: events.clone(),
            control,
            stream,
            slot,
            rules: SelectionRules::new(&task.include, &task.exclude),
            relations: HashMap::new(),
            txn: None,
            skipping: false,
            confirmed_lsn: confirmed,
            passed: None,
            caught_up_at,
            heartbeat_every: cdc
                .heartbeat_enable
                .then(|| Duration::from_secs(cdc.heartbeat_frequency.max(1) * 60)),
            last_heartbeat: Instant::now(),
            slot_wal_warning_mb: cdc.slot_wal_warning_mb,
            changes: RowChanges {
                toast: ToastRecovery::new(writer.storage.clone(), toast::CACHE_BYTES),
                toast_logged: HashSet::new(),
            },
        };
        super::run(engine, writer, stop, events).await
    }
}

/// PostgreSQL's part of the CDC loop: pgoutput messages into the batch, the slot confirmed.
struct Postgres {
    pg: PgEndpoint,
    /// The task's name, for errors.
    task: String,
    events: Events,
    /// A normal connection beside the stream: types, heartbeats, slot lag.
    control: PgConnection,
    stream: ChangeStream,
    slot: String,
    rules: SelectionRules,
    relations: HashMap<u32, RelationInfo>,
    /// The open transaction: commit LSN, commit time, next change number.
    txn: Option<(u64, i64, u32)>,
    /// The open transaction ends before the confirmed position: passed by.
    skipping: bool,
    confirmed_lsn: u64,
    /// A heartbeat passed while a batch was open: confirmed once that batch is written.
    passed: Option<u64>,
    /// `--until-caught-up`: the position of the heartbeat written at the start.
    caught_up_at: Option<u64>,
    heartbeat_every: Option<Duration>,
    last_heartbeat: Instant,
    slot_wal_warning_mb: u64,
    changes: RowChanges,
}

impl Engine for Postgres {
    type Event = ReplicationEvent;

    async fn next(&mut self) -> Result<ReplicationEvent, TaskError> {
        match self.stream.recv().await? {
            Some(event) => Ok(event),
            None => Err(self.internal("the server ended the replication stream")),
        }
    }

    async fn apply(
        &mut self,
        writer: &mut BatchWriter,
        event: ReplicationEvent,
    ) -> Result<Flow, TaskError> {
        match event {
            ReplicationEvent::Begin {
                final_lsn,
                commit_time_micros,
                ..
            } => {
                // The server already starts after the confirmed point; this guard keeps
                // the exactly-once promise should a server or library ever resend.
                self.skipping = final_lsn.as_u64() < self.confirmed_lsn;
                self.txn = Some((final_lsn.as_u64(), pg_to_unix_micros(commit_time_micros), 0));
            }
            ReplicationEvent::XLogData { data, .. } => {
                let message = pgoutput::decode(&data)
                    .map_err(|e| self.internal(&format!("decoding the change stream: {e}")))?;
                match message {
                    Message::Relation(r) => self.relation(writer, r).await?,
                    Message::Insert { .. }
                    | Message::Update { .. }
                    | Message::Delete { .. }
                    | Message::Truncate { .. }
                        if !self.skipping =>
                    {
                        let Some((commit_lsn, commit_micros, seq)) = &mut self.txn else {
                            return Err(self.internal("a change outside a transaction"));
                        };
                        self.changes
                            .change(
                                writer,
                                &self.relations,
                                message,
                                *commit_lsn,
                                seq,
                                *commit_micros,
                            )
                            .await?;
                    }
                    _ => {}
                }
            }
            ReplicationEvent::Commit {
                end_lsn,
                commit_time_micros,
                ..
            } => {
                let end = end_lsn.as_u64();
                if !self.skipping {
                    writer.commit(
                        SourcePosition::Lsn(end),
                        pg_to_unix_micros(commit_time_micros),
                    );
                }
                self.txn = None;
                if writer.is_empty() {
                    // Nothing of ours in flight: the slot may move past this transaction.
                    self.confirm(end);
                }
            }
            ReplicationEvent::Message { lsn, prefix, .. } => {
                if prefix == "tributary.heartbeat" && self.txn.is_none() {
                    if writer.is_empty() {
                        self.confirm(lsn.as_u64());
                    } else {
                        // Confirmed once the batch before it is written.
                        self.passed = Some(lsn.as_u64());
                    }
                }
                if self.caught_up_at.is_some_and(|at| lsn.as_u64() >= at) && self.txn.is_none() {
                    let written = writer.flush().await?;
                    self.written(writer, written.as_ref(), false).await?;
                    return Ok(Flow::CaughtUp);
                }
            }
            ReplicationEvent::KeepAlive { .. } | ReplicationEvent::StoppedAt { .. } => {}
        }
        Ok(Flow::Go)
    }

    fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    async fn written(
        &mut self,
        writer: &mut BatchWriter,
        written: Option<&SourcePosition>,
        _stopped: bool,
    ) -> Result<(), TaskError> {
        if let Some(end) = written.and_then(SourcePosition::lsn) {
            self.changes.toast.batch_written(writer.last_files());
            self.confirm(end);
            if writer.is_empty() && self.txn.is_none() {
                // Everything received is written: a heartbeat passed meanwhile is too
                // (`tributary validate` waits for the one it writes).
                if let Some(at) = self.passed.take() {
                    self.confirm(at);
                }
            }
        }
        Ok(())
    }

    async fn side_work(&mut self) {
        if let Some(every) = self.heartbeat_every
            && self.last_heartbeat.elapsed() >= every
        {
            let result = self.pg.heartbeat(&mut self.control).await;
            side_query(
                &self.pg,
                &self.events,
                &mut self.control,
                "heartbeat",
                result,
            )
            .await;
            self.last_heartbeat = Instant::now();
        }
    }

    async fn lag_bytes(&mut self) -> Option<i64> {
        let result = self.pg.slot_status_on(&mut self.control, &self.slot).await;
        let status = side_query(
            &self.pg,
            &self.events,
            &mut self.control,
            "measuring slot lag",
            result,
        )
        .await??;
        let limit = self.slot_wal_warning_mb as i64 * 1024 * 1024;
        if status.retained_bytes > limit {
            self.events.log(
                LogLevel::Warn,
                format!(
                    "slot {} holds {} MB of WAL (limit {} MB; {} MB of it not yet captured): the task is behind, or a long transaction on the source holds the WAL; the source's disk fills until it moves on",
                    self.slot,
                    status.retained_bytes / 1_048_576,
                    self.slot_wal_warning_mb,
                    status.lag_bytes / 1_048_576
                ),
            );
        }
        Some(status.lag_bytes)
    }

    async fn close(mut self) -> SourcePosition {
        self.stream.close().await;
        // The stream's last status update may not have reached the server before it closed.
        if self.confirmed_lsn > 0 {
            let result = self.pg.advance_slot(&self.slot, self.confirmed_lsn).await;
            side_query(
                &self.pg,
                &self.events,
                &mut self.control,
                "confirming the slot",
                result,
            )
            .await;
        }
        SourcePosition::Lsn(self.confirmed_lsn)
    }
}

impl Postgres {
    /// Lets the slot move up to `lsn` (never back).
    fn confirm(&mut self, lsn: u64) {
        self.confirmed_lsn = self.confirmed_lsn.max(lsn);
        self.stream.confirm(self.confirmed_lsn);
    }

    fn internal(&self, message: &str) -> TaskError {
        TaskError::Internal {
            task: self.task.clone(),
            message: message.to_owned(),
        }
    }

    /// A Relation message: a table's columns, sent before its first change in a session
    /// and again after its schema changes.
    async fn relation(&mut self, writer: &mut BatchWriter, r: Relation) -> Result<(), TaskError> {
        let schema = if r.schema.is_empty() {
            "pg_catalog".to_owned()
        } else {
            r.schema.clone()
        };
        let key = TableId::new(schema, r.name.clone());
        let selected = self.rules.matches_id(&key);
        let types: Vec<(String, u32, i32)> = r
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.type_oid, c.typmod))
            .collect();
        // pgoutput sends a relation again after any cache invalidation (ANALYZE, VACUUM,
        // GRANT): only a real change of columns makes a new schema.
        let key_columns: Vec<bool> = r.columns.iter().map(|c| c.is_key).collect();
        if self
            .relations
            .get(&r.id)
            .is_some_and(|known| known.key_columns != key_columns)
        {
            // Kept rows are keyed by the old key's values: they no longer name the same rows.
            self.changes.toast.reset(&key);
        }
        if let Some(known) = self.relations.get_mut(&r.id)
            && known.types == types
            && known.key == key
        {
            known.identity = r.replica_identity;
            known.key_columns = key_columns;
            return Ok(());
        }
        let mut kinds = Vec::with_capacity(r.columns.len());
        let mut signature = Vec::with_capacity(r.columns.len());
        for c in &r.columns {
            let (kind, type_name) = if selected {
                let result = self
                    .pg
                    .type_kind(&mut self.control, c.type_oid, c.typmod)
                    .await;
                side_query(
                    &self.pg,
                    &self.events,
                    &mut self.control,
                    "looking up a column type",
                    result,
                )
                .await
                .unwrap_or((None, format!("type {}", c.type_oid)))
            } else {
                (None, String::new())
            };
            signature.push(format!("{} {type_name}", c.name));
            kinds.push(kind.unwrap_or(Kind::Text));
        }
        let info = RelationInfo {
            key: key.clone(),
            selected,
            columns: r.columns.iter().map(|c| c.name.clone()).collect(),
            toastable: kinds.iter().map(toast::is_toastable).collect(),
            kinds,
            identity: r.replica_identity,
            signature: signature.join(", "),
            types,
            key_columns,
        };
        if selected {
            self.selected_relation(writer, r.id, &info).await?;
        }
        self.relations.insert(r.id, info);
        Ok(())
    }

    /// A new shape of selected relation `relid`: recorded with what it did to the rows the
    /// table held. Another relation under the table's name is the table dropped and created
    /// again (the change log has no DROP TABLE): the rows before it are gone. The columns'
    /// numbers tell a rename from a drop and an add.
    async fn selected_relation(
        &mut self,
        writer: &mut BatchWriter,
        relid: u32,
        info: &RelationInfo,
    ) -> Result<(), TaskError> {
        let key = &info.key;
        let mut previous = writer.previous_shape(key);
        let recreated = previous
            .as_ref()
            .and_then(|s| s.identity.as_ref())
            .is_some_and(|identity| identity.relation != relid);
        if recreated {
            // Its own position, before the new table's first change (a Relation message
            // always comes inside the transaction of that change).
            if let Some((lsn, micros, seq)) = &mut self.txn {
                let position = ChangePosition::postgres(*lsn, *seq);
                *seq += 1;
                let drop =
                    checkpoint::SchemaChange::other(position, checkpoint::SchemaChange::DROP);
                if writer.emptied(key, drop) {
                    self.changes.toast.truncated(key);
                    writer.touch(*micros);
                }
            }
            previous = None;
        }
        let position = self
            .txn
            .map(|(lsn, _, seq)| ChangePosition::postgres(lsn, seq))
            .unwrap_or_default();
        let table_schema = Arc::new(Schema::new(
            info.columns
                .iter()
                .zip(&info.kinds)
                .map(|(c, k)| Field::new(c, k.data_type(), true))
                .collect::<Vec<_>>(),
        ));
        // The catalog says the columns' numbers: a column dropped and added again under
        // its name is another column, which the names alone do not tell.
        let result = self.pg.catalog_columns(&mut self.control, relid).await;
        let live = side_query(
            &self.pg,
            &self.events,
            &mut self.control,
            "reading the columns of a changed table",
            result,
        )
        .await;
        let columns = columns_changed(previous.as_ref(), relid, info, live.as_deref());
        let builder = Box::new(TextBatchBuilder::new(table_schema.clone(), &info.kinds));
        writer.schema(
            key,
            &info.signature,
            table_schema,
            builder,
            position,
            columns,
        )
    }
}

/// What a new shape of relation `relid` (`info`, as the stream describes it) did to the
/// rows of the table, whose `previous` shape is recorded (`None`: a table the stream shows
/// first, or created again), from the catalog's `live` columns now (`None`: it could not
/// be read).
///
/// The columns' numbers are known when the catalog still has exactly the stream's columns
/// ([`streamed_numbers`]); when a later DDL overtook the stream, they are the previous
/// shape's if the names did not change, and unknown otherwise. With the numbers of both
/// shapes, a column under a number the previous shape had is that column, renamed or not;
/// without them, a column added while another went away may be a rename, so what its
/// rows hold is unknown (the table is reloaded).
fn columns_changed(
    previous: Option<&Shape>,
    relid: u32,
    info: &RelationInfo,
    live: Option<&[CatalogColumn]>,
) -> ColumnsChanged {
    let identity = SourceIdentity {
        relation: relid,
        columns: match (
            live.and_then(|live| streamed_numbers(live, &info.types)),
            previous,
        ) {
            (Some(numbers), _) => numbers,
            // The catalog moved on: the previous shape's numbers hold while its names do.
            (None, Some(p)) if *p.names == *info.columns => p
                .identity
                .as_ref()
                .filter(|i| i.relation == relid)
                .map(|i| i.columns.clone())
                .unwrap_or_default(),
            (None, _) => Vec::new(),
        },
    };
    // Without an earlier shape, nothing is added or renamed.
    let Some(previous) = previous else {
        return ColumnsChanged {
            identity: Some(identity),
            ..ColumnsChanged::default()
        };
    };
    let renamed = match &previous.identity {
        Some(before) => {
            SourceIdentity::renamed((&previous.names, before), (&info.columns, &identity))
        }
        None => Vec::new(),
    };
    let numbered = previous
        .identity
        .as_ref()
        .is_some_and(|i| i.columns.len() == previous.names.len())
        && !identity.columns.is_empty();
    let added: Vec<String> = match &previous.identity {
        // A number the previous shape lacks is a new column, whatever its name.
        Some(before) if numbered => info
            .columns
            .iter()
            .zip(&identity.columns)
            .filter(|(_, n)| !before.columns.contains(n))
            .map(|(name, _)| name.clone())
            .collect(),
        _ => added_columns(&previous.names, &info.columns, &renamed),
    };
    let gone = previous.names.iter().any(|p| !info.columns.contains(p));
    let added = if !added.is_empty() && gone && !numbered {
        added
            .into_iter()
            .map(|name| AddedColumn {
                name,
                value: AddedValue::Unknown(
                    "columns were dropped or renamed in the same change, so whether it is a new column is not known".into(),
                ),
            })
            .collect()
    } else {
        added_values(live, &info.types, &info.kinds, &added)
    };
    ColumnsChanged {
        added,
        renamed,
        identity: Some(identity),
    }
}

/// The numbers of the columns the stream describes (`types`: name, type OID, typmod), when
/// the catalog's `live` columns are still exactly those: all of them, or those that are not
/// generated (pgoutput leaves generated columns out unless it is told to publish them).
fn streamed_numbers(live: &[CatalogColumn], types: &[(String, u32, i32)]) -> Option<Vec<i32>> {
    let matches = |columns: &[&CatalogColumn]| {
        columns.len() == types.len()
            && columns.iter().zip(types).all(|(c, (name, oid, typmod))| {
                c.name == *name && c.type_oid == *oid && c.typmod == *typmod
            })
    };
    let all: Vec<&CatalogColumn> = live.iter().collect();
    let stored: Vec<&CatalogColumn> = live.iter().filter(|c| !c.generated).collect();
    [all, stored]
        .into_iter()
        .find(|columns| matches(columns))
        .map(|columns| columns.iter().map(|c| c.number).collect())
}

/// What rows older than the columns `added` read for them, from the catalog's `live`
/// columns now (`None`: it could not be read). `types` (name, type OID, typmod) and
/// `kinds` are the columns as the stream's relation message described them; a column the
/// catalog no longer has with that type (a later DDL overtook the stream) is unknown.
///
/// The catalog is read after the fact, but what it says of an added column holds from its
/// ADD on: its fast default is set by the ADD and only ever cleared (by a rewrite, which
/// then shows as a default without one: unknown), and a column added without any default
/// read NULL whatever came later. Left open: a column dropped and added again under the
/// same name and type while the stream lagged behind both.
fn added_values(
    live: Option<&[CatalogColumn]>,
    types: &[(String, u32, i32)],
    kinds: &[Kind],
    added: &[String],
) -> Vec<AddedColumn> {
    let unknown = |why: &str| AddedValue::Unknown(why.to_owned());
    added
        .iter()
        .map(|name| {
            let streamed = types.iter().position(|(c, _, _)| c == name);
            let column = streamed.and_then(|i| {
                let (_, oid, typmod) = &types[i];
                let now = live?
                    .iter()
                    .find(|c| &c.name == name && c.type_oid == *oid && c.typmod == *typmod);
                Some((now, kinds.get(i)?))
            });
            let value = match column {
                _ if live.is_none() => unknown("the source's catalog could not be read"),
                None | Some((None, _)) => unknown(
                    "the table changed again before the stream reached this change, so the catalog no longer says what its rows held",
                ),
                Some((Some(c), kind)) => match &c.missing {
                    Some(text) => decoded(kind, text),
                    None if !c.may_be_rewritten => AddedValue::Null,
                    None => unknown(
                        "it was added with a default the change log does not carry (a volatile, identity, generated or domain default), or the table was rewritten since",
                    ),
                },
            };
            AddedColumn {
                name: name.clone(),
                value,
            }
        })
        .collect()
}

/// A fast default's text (the type's output form, as pgoutput sends values) decoded as
/// the stream decodes the column, then recorded as its exact constant.
fn decoded(kind: &Kind, text: &str) -> AddedValue {
    let schema = Arc::new(Schema::new(vec![Field::new("v", kind.data_type(), true)]));
    let mut builder = TextBatchBuilder::new(schema, std::slice::from_ref(kind));
    match builder.append_row([Some(text)]) {
        Ok(()) => AddedValue::constant(builder.finish().column(0).as_ref()),
        Err(e) => AddedValue::Unknown(format!(
            "its default {text:?} does not decode: {}",
            e.message
        )),
    }
}

/// Side work on the control connection (types, heartbeat, slot lag): a failure is logged
/// and the connection renewed, never a reason to stop capturing.
async fn side_query<T>(
    pg: &PgEndpoint,
    events: &Events,
    control: &mut PgConnection,
    what: &str,
    result: Result<T, crate::source::SourceError>,
) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            events.log(LogLevel::Warn, format!("{what}: {e}; retrying later"));
            if let Ok(c) = pg.connect().await {
                *control = c;
            }
            None
        }
    }
}

fn toast_columns(info: &RelationInfo) -> toast::Columns<'_> {
    toast::Columns {
        names: &info.columns,
        kinds: &info.kinds,
        key: &info.key_columns,
        toastable: &info.toastable,
    }
}

/// Whether the key columns of two row images differ.
fn key_differs(key_columns: &[bool], old: &[Value], new: &[Value]) -> bool {
    let text = |v: &Value| match v {
        Value::Text(b) | Value::Binary(b) => Some(b.clone()),
        _ => None,
    };
    key_columns
        .iter()
        .zip(old.iter().zip(new))
        .any(|(is_key, (o, n))| *is_key && text(o) != text(n))
}

impl TableRows for TextBatchBuilder {
    fn len(&self) -> usize {
        TextBatchBuilder::len(self)
    }

    fn bytes(&self) -> usize {
        self.text_bytes()
    }

    fn finish(&mut self) -> arrow_array::RecordBatch {
        TextBatchBuilder::finish(self)
    }

    fn as_any(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// Microseconds since 2000-01-01 (PostgreSQL) to since 1970-01-01.
fn pg_to_unix_micros(pg: i64) -> i64 {
    pg.saturating_add(946_684_800_000_000)
}

/// PostgreSQL's changes into the open batch, with the TOAST recovery they need.
struct RowChanges {
    toast: ToastRecovery,
    /// Tables whose TOAST recovery has been logged in this run.
    toast_logged: HashSet<TableId>,
}

impl RowChanges {
    /// One change of the stream. `seq` numbers the changes of the transaction whose commit
    /// is at `commit_lsn`; a change of primary key takes two numbers (a D, then an I).
    async fn change(
        &mut self,
        writer: &mut BatchWriter,
        relations: &HashMap<u32, RelationInfo>,
        message: Message,
        commit_lsn: u64,
        seq: &mut u32,
        commit_micros: i64,
    ) -> Result<(), TaskError> {
        let mut next_position = || {
            let p = ChangePosition::postgres(commit_lsn, *seq);
            *seq += 1;
            p
        };
        let relation_id = match &message {
            Message::Insert { relation, .. }
            | Message::Update { relation, .. }
            | Message::Delete { relation, .. } => *relation,
            Message::Truncate { relations: ids, .. } => {
                let position = next_position();
                let mut recorded = false;
                for id in ids {
                    if let Some(info) = relations.get(id).filter(|i| i.selected)
                        && writer.truncated(&info.key, &position)
                    {
                        self.toast.truncated(&info.key);
                        recorded = true;
                    }
                }
                if recorded {
                    writer.touch(commit_micros);
                }
                return Ok(());
            }
            _ => return Ok(()),
        };
        // Changes of tables the task does not select are passed by, whatever they hold.
        let Some(info) = relations.get(&relation_id).filter(|i| i.selected) else {
            return Ok(());
        };
        // Before any TOAST recovery: a change already in a reloaded table's load is not
        // looked at at all. (All changes of a transaction compare alike: by commit LSN.)
        if writer.has_reload_mark(&info.key)
            && writer.in_reload(&info.key, &ChangePosition::postgres(commit_lsn, 0))
        {
            return Ok(());
        }
        let rows: Vec<(&'static str, pgoutput::Tuple)> = match message {
            Message::Insert { new, .. } => vec![("I", new)],
            Message::Delete { old, .. } => {
                let (OldTuple::Key(t) | OldTuple::Full(t)) = old;
                vec![("D", t)]
            }
            Message::Update { old, new, .. } => {
                let mut new = new;
                if new.iter().any(|v| matches!(v, Value::UnchangedToast)) {
                    // The value is not in the stream: a full old image has it; otherwise
                    // it is recovered from this run's rows or the raw zone.
                    if let Some(OldTuple::Full(old)) = &old {
                        for (value, old) in new.iter_mut().zip(old) {
                            if matches!(value, Value::UnchangedToast) {
                                *value = old.clone();
                            }
                        }
                    } else {
                        let old_key = match &old {
                            Some(OldTuple::Key(k)) => Some(k.as_slice()),
                            _ => None,
                        };
                        self.recover_toast(writer, info, &mut new, old_key).await?;
                    }
                }
                // A changed key: the old row goes away and the new one appears, so a reader
                // applying rows by key keeps no stale row.
                let old_key = match old {
                    Some(OldTuple::Key(k)) => Some(k),
                    Some(OldTuple::Full(o)) if key_differs(&info.key_columns, &o, &new) => Some(o),
                    _ => None,
                };
                match old_key {
                    Some(old) => vec![("D", old), ("I", new)],
                    None => vec![("U", new)],
                }
            }
            _ => return Ok(()),
        };
        for (op, values) in rows {
            let position = next_position();
            Self::append(writer, info, op, &values, position, commit_micros)?;
            if info.identity == ReplicaIdentity::Full || op == "D" {
                // FULL rows need no recovery and are not kept: forget what was kept.
                self.toast.forget(&info.key, &info.key_columns, &values);
                if info.identity == ReplicaIdentity::Full {
                    self.toast.not_cached(&info.key);
                }
            } else {
                self.toast
                    .remember(&info.key, &toast_columns(info), &values);
            }
        }
        Ok(())
    }

    /// Fills the unchanged TOASTed values of an update's new tuple ([`toast`]).
    async fn recover_toast(
        &mut self,
        writer: &mut BatchWriter,
        info: &RelationInfo,
        new: &mut [Value],
        old_key: Option<&[Value]>,
    ) -> Result<(), TaskError> {
        if self.toast_logged.insert(info.key.clone()) {
            writer.events.log(
                LogLevel::Info,
                format!(
                    "{}: recovering unchanged TOASTed values of updates from this run's rows or the raw zone (replica identity {:?}; FULL puts them in the stream)",
                    info.key, info.identity
                ),
            );
        }
        let truncated_at = writer.totals.get(&info.key).and_then(|t| {
            t.schema_changes
                .iter()
                .rfind(|c| c.empties_table())
                .map(|c| c.position.clone())
        });
        let Some(prefix) = writer.tables.get(&info.key).map(|t| t.prefix.clone()) else {
            return Err(TaskError::Internal {
                task: writer.task.name.clone(),
                message: format!("{}: an update before the table's schema", info.key),
            });
        };
        let result = self
            .toast
            .recover(
                &info.key,
                &prefix,
                &toast_columns(info),
                new,
                old_key,
                truncated_at.as_ref().map(ChangePosition::as_str),
            )
            .await;
        result.map_err(|e| match e {
            // The target failing is not the table's fault: the usual storage error.
            toast::ToastError::Storage(e)
            | toast::ToastError::Read(crate::lake::inspect::InspectError::Storage(e)) => {
                TaskError::Storage(e)
            }
            e => writer.table_error(
                &info.key,
                format!(
                    "an update left a TOASTed column unchanged (replica identity {:?}, so the value is not in the stream), and it could not be recovered: {e}. Run ALTER TABLE {} REPLICA IDENTITY FULL, then reload the task (--reload)",
                    info.identity,
                    crate::source::postgres::sql_table_name(&info.key),
                ),
            ),
        })
    }

    /// Adds one row of pgoutput values to its table's batch.
    fn append(
        writer: &mut BatchWriter,
        info: &RelationInfo,
        op: &'static str,
        values: &[Value],
        position: ChangePosition,
        commit_micros: i64,
    ) -> Result<(), TaskError> {
        let mut texts: Vec<Option<&str>> = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            let column = info.columns.get(i).map_or("?", String::as_str);
            texts.push(match v {
                Value::Null => None,
                Value::Text(b) => Some(std::str::from_utf8(b).map_err(|_| {
                    writer.table_error(
                        &info.key,
                        format!("column {column} at {position} is not valid UTF-8"),
                    )
                })?),
                Value::Binary(_) | Value::UnchangedToast => {
                    return Err(writer.table_error(
                        &info.key,
                        format!("column {column} at {position} arrived without its text value"),
                    ));
                }
            });
        }
        writer.append_row(
            &info.key,
            op,
            position,
            commit_micros,
            |builder: &mut TextBatchBuilder| {
                builder.append_row(texts).map_err(|e| {
                    format!(
                        "decoding column {}: {}",
                        e.column
                            .and_then(|i| info.columns.get(i))
                            .map_or("?", String::as_str),
                        e.message
                    )
                })
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_added_column_reads_its_fast_default_while_the_catalog_still_has_the_column() {
        let column = |name: &str, oid, missing: Option<&str>, may_be_rewritten| CatalogColumn {
            name: name.into(),
            type_oid: oid,
            typmod: -1,
            missing: missing.map(str::to_owned),
            may_be_rewritten,
            number: 1,
            generated: false,
        };
        let types = [
            ("id".to_owned(), 20, -1),
            ("on".to_owned(), 16, -1),
            ("n".to_owned(), 23, -1),
            ("at".to_owned(), 1184, -1),
        ];
        let kinds = [Kind::Int64, Kind::Bool, Kind::Int32, Kind::TimestampTz];
        let live = [
            column("id", 20, None, false),
            column("on", 16, Some("t"), true),
            column("n", 23, None, false),
            column("at", 1184, None, true),
        ];
        let added = ["on", "n", "at"].map(String::from);
        let values: Vec<AddedValue> = added_values(Some(&live), &types, &kinds, &added)
            .into_iter()
            .map(|a| a.value)
            .collect();
        assert_eq!(values[0], AddedValue::Constant("true".into()));
        assert_eq!(values[1], AddedValue::Null);
        assert!(matches!(&values[2], AddedValue::Unknown(why) if why.contains("volatile")));
        // Another column dropped since: what the catalog says of these still holds.
        let dropped = [&live[..1], &live[2..]].concat();
        let values = added_values(Some(&dropped), &types, &kinds, &added[1..]);
        assert_eq!(values[0].value, AddedValue::Null);
        // A column gone, or of another type since: a later DDL overtook the stream.
        let mut retyped = live.clone();
        retyped[2].type_oid = 20;
        let values = added_values(Some(&retyped[..3]), &types, &kinds, &added);
        assert!(values[1..].iter().all(
            |a| matches!(&a.value, AddedValue::Unknown(why) if why.contains("changed again"))
        ));
        let values = added_values(None, &types, &kinds, &added);
        assert!(
            values
                .iter()
                .all(|a| matches!(a.value, AddedValue::Unknown(_)))
        );
    }

    #[test]
    fn column_numbers_tell_renames_and_columns_added_again_under_their_name() {
        let info = |names: &[&str]| RelationInfo {
            key: TableId::new("public", "t"),
            selected: true,
            columns: names.iter().map(|n| (*n).to_owned()).collect(),
            kinds: vec![Kind::Text; names.len()],
            toastable: vec![true; names.len()],
            identity: ReplicaIdentity::Default,
            signature: String::new(),
            types: names.iter().map(|n| ((*n).to_owned(), 25, -1)).collect(),
            key_columns: vec![false; names.len()],
        };
        let live = |columns: &[(&str, i32, bool)]| -> Vec<CatalogColumn> {
            columns
                .iter()
                .map(|(name, number, generated)| CatalogColumn {
                    name: (*name).into(),
                    type_oid: 25,
                    typmod: -1,
                    missing: None,
                    may_be_rewritten: false,
                    number: *number,
                    generated: *generated,
                })
                .collect()
        };
        let shape = |names: &[&str], numbers: &[i32]| Shape {
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            identity: Some(SourceIdentity {
                relation: 7,
                columns: numbers.to_vec(),
            }),
        };
        let before = shape(&["id", "a"], &[1, 2]);

        // Renamed: the number stays, nothing is added.
        let now = live(&[("id", 1, false), ("b", 2, false)]);
        let change = columns_changed(Some(&before), 7, &info(&["id", "b"]), Some(&now));
        assert_eq!(change.renamed.len(), 1);
        assert!(change.added.is_empty());
        // Dropped and added again under its name: a new number, a new column (NULL).
        let now = live(&[("id", 1, false), ("a", 3, false)]);
        let change = columns_changed(Some(&before), 7, &info(&["id", "a"]), Some(&now));
        assert!(change.renamed.is_empty());
        assert_eq!(change.added.len(), 1);
        assert_eq!(change.added[0].value, AddedValue::Null);
        // A generated column the stream leaves out does not hide the numbers.
        let now = live(&[("id", 1, false), ("b", 2, false), ("g", 3, true)]);
        let change = columns_changed(Some(&before), 7, &info(&["id", "b"]), Some(&now));
        assert_eq!(change.renamed.len(), 1);
        // The catalog moved on: the names alone cannot tell a rename (unknown, reload).
        let now = live(&[("id", 1, false), ("c", 2, false)]);
        let change = columns_changed(Some(&before), 7, &info(&["id", "b"]), Some(&now));
        assert!(change.renamed.is_empty());
        assert!(matches!(change.added[0].value, AddedValue::Unknown(_)));
        // ... but the same names keep the numbers they had.
        let change = columns_changed(Some(&before), 7, &info(&["id", "a"]), Some(&now));
        assert_eq!(change.identity.map(|i| i.columns), Some(vec![1, 2]));
    }
}
