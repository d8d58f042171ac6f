//! Change data capture into the raw zone: one loop for every engine ([`run`]) and the part
//! each engine plays in it ([`Engine`]): PostgreSQL ([`postgres`], pgoutput over a
//! replication slot) and MySQL/MariaDB ([`mysql`], the binlog read as a replica). Both write
//! through the one [`BatchWriter`].
//!
//! Invariants, for every engine:
//! - an engine turns each event of its stream into [`BatchWriter`] calls (`schema`,
//!   `append_row`, `emptied`, `commit`); the loop alone decides when a batch ends, between
//!   transactions only ([`BatchWriter::end_of_turn`]);
//! - the source is told it may forget what came before ([`Engine::written`]: the slot
//!   confirmed, the binlog position recorded) only once a batch is durably in place;
//! - side work (heartbeats, lag) never fails a run: it is logged and retried later.
//!
//! A new engine is a file here with a struct implementing [`Engine`], started from its run
//! in `task/mod.rs`.

pub(super) mod mysql;
pub(super) mod postgres;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::batch::{BatchWriter, Turn};
use super::checkpoint::Checkpoint;
use super::stats::CdcOutcome;
use super::{Events, LogLevel, TaskCommand, TaskError, TaskEvent};
use crate::config::TaskConfig;
use crate::ident::TableId;
use crate::lake::{Storage, layout};

/// How often the lag behind the source is measured.
const LAG_INTERVAL: Duration = Duration::from_secs(10);
/// How often the loop wakes without an event (a due batch, a stop, side work).
const TICK: Duration = Duration::from_millis(500);

/// What a CDC run needs, for the engine whose endpoint is `E`; each engine's part
/// implements `run` for its endpoint.
pub(in crate::task) struct CdcRun<E> {
    pub endpoint: E,
    pub storage: Storage,
    pub task: TaskConfig,
    pub checkpoint: Arc<Checkpoint>,
    pub events: Events,
    pub stop: watch::Receiver<Option<TaskCommand>>,
    pub until_caught_up: bool,
}

/// What an event did to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    Go,
    /// Every change committed before the run started is written and confirmed
    /// (`--until-caught-up`): the run ends.
    CaughtUp,
}

/// The part of an engine in the CDC loop.
pub(super) trait Engine {
    type Event;

    /// The stream's next event; an error when the stream ends.
    async fn next(&mut self) -> Result<Self::Event, TaskError>;

    /// Turns one event into the writer's calls.
    async fn apply(
        &mut self,
        writer: &mut BatchWriter,
        event: Self::Event,
    ) -> Result<Flow, TaskError>;

    /// Whether a transaction is open: a batch may not end now.
    fn in_transaction(&self) -> bool;

    /// The end of a turn: `written` is the end position of a batch now durably in place.
    async fn written(
        &mut self,
        writer: &mut BatchWriter,
        written: Option<&str>,
        stopped: bool,
    ) -> Result<(), TaskError>;

    /// Side work between turns (heartbeats); failures are logged, never returned.
    async fn side_work(&mut self);

    /// Bytes of the source's log not yet captured, measured every [`LAG_INTERVAL`]; `None`
    /// when it could not be measured (logged).
    async fn lag_bytes(&mut self) -> Option<i64>;

    /// Closes the stream; returns the position the run confirmed.
    async fn close(self, writer: &mut BatchWriter) -> String;
}

/// The CDC loop: reads `engine`'s events into `writer` until a stop, a caught-up run or an
/// error, writing a batch when it is due.
pub(super) async fn run<E: Engine>(
    mut engine: E,
    mut writer: BatchWriter,
    mut stop: watch::Receiver<Option<TaskCommand>>,
    events: Events,
) -> Result<CdcOutcome, TaskError> {
    let settings = &writer.task.target_settings;
    let interval = Duration::from_secs(settings.cdc_max_batch_interval.max(1));
    let min_bytes = settings.cdc_min_file_size.saturating_mul(1024);
    let mut last_lag = Instant::now() - LAG_INTERVAL;
    let mut stopping: Option<Instant> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            event = engine.next() => Some(event?),
            _ = tick.tick() => None,
            _ = stop.changed(), if stopping.is_none() => {
                stopping = Some(Instant::now());
                None
            }
        };
        if let Some(event) = event
            && engine.apply(&mut writer, event).await? == Flow::CaughtUp
        {
            events.log(
                LogLevel::Info,
                "caught up: every change committed before the start is written",
            );
            break;
        }
        // Batch boundaries fall between transactions only.
        let turn = writer
            .end_of_turn(engine.in_transaction(), stopping, min_bytes, interval)
            .await?;
        let (stopped, written) = match turn {
            Turn::Go { written } => (false, written),
            Turn::Stopped { written } => (true, written),
            Turn::Abandoned => break,
        };
        engine
            .written(&mut writer, written.as_deref(), stopped)
            .await?;
        if stopped {
            break;
        }
        engine.side_work().await;
        if last_lag.elapsed() >= LAG_INTERVAL {
            last_lag = Instant::now();
            if let Some(lag) = engine.lag_bytes().await {
                writer.stats.slot_lag_bytes = lag;
                events.send(TaskEvent::Cdc(writer.stats.clone()));
            }
        }
    }
    let confirmed = engine.close(&mut writer).await;
    Ok(CdcOutcome {
        tables: writer.tables.into_values().map(|t| t.stats).collect(),
        confirmed_position: Some(confirmed),
    })
}

/// Before a run streams: removes the files of a batch a killed run was putting in place,
/// and the spool files such a run left.
async fn prepare(
    storage: &Storage,
    checkpoint: &Checkpoint,
    events: &Events,
    task: &TaskConfig,
    state: &super::checkpoint::TaskState,
) -> Result<(), TaskError> {
    let cdc = state.cdc.clone().unwrap_or_default();
    super::batch::remove_pending_batch(storage, checkpoint, events, task, &cdc).await?;
    storage.clean_spool(&task.name);
    Ok(())
}

/// Deletes every CDC file of the task's tables (all but `LOAD*` files under each table's
/// folder) and any file of a pending batch, and says how many: a reload starts a new
/// stream, and old changes would replay over the new load.
pub(super) async fn delete_cdc_files(
    storage: &Storage,
    task: &TaskConfig,
    state: &super::checkpoint::TaskState,
    events: &Events,
) -> Result<(), TaskError> {
    let mut removed = 0;
    let mut tables: Vec<&TableId> = state.tables.keys().collect();
    if let Some(cdc) = &state.cdc {
        tables.extend(cdc.tables.keys());
        let pending = cdc
            .pending_batch
            .iter()
            .flat_map(|p| p.keys.iter().cloned());
        super::batch::delete_recorded(storage, task, &pending.collect::<Vec<_>>()).await?;
    }
    tables.sort();
    tables.dedup();
    for table in tables {
        removed += delete_table_cdc_files(storage, task, table).await?;
    }
    if removed > 0 {
        events.log(
            LogLevel::Info,
            format!("deleted {removed} CDC file(s) of the previous stream"),
        );
    }
    Ok(())
}

/// Deletes the CDC files (all but `LOAD*`) in the folder of `table`, and only there;
/// returns how many there were.
pub(super) async fn delete_table_cdc_files(
    storage: &Storage,
    task: &TaskConfig,
    table: &TableId,
) -> Result<usize, TaskError> {
    let prefix = layout::table_prefix(&task.target_settings.bucket_folder, &task.source, table);
    let mut removed = 0;
    for object in storage.list_all(&prefix).await? {
        let name = object.key.rsplit('/').next().unwrap_or("");
        if layout::is_inside(&prefix, &object.key) && layout::parse_load_number(name).is_none() {
            storage.delete(&object.key).await?;
            removed += 1;
        }
    }
    Ok(removed)
}
