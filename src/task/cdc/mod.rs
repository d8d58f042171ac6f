//! The source engines as tasks drive them, and change data capture into the raw zone.
//!
//! Each engine has one file here: PostgreSQL ([`postgres`], pgoutput over a replication
//! slot) and MySQL/MariaDB ([`mysql`], the binlog read as a replica). The file holds the
//! engine's whole course ([`SourceEngine`]: its checks, its tables, a run from the full load
//! to CDC) and its part in the one CDC loop ([`run`], [`Engine`]). Every engine writes
//! through the one [`BatchWriter`]. [`source_engine`] is the only place that maps the
//! workspace's `engine` key to an engine.
//!
//! Invariants, for every engine:
//! - an engine turns each event of its stream into [`BatchWriter`] calls (`schema`,
//!   `append_row`, `emptied`, `commit`); the loop alone decides when a batch ends, between
//!   transactions only ([`BatchWriter::end_of_turn`]);
//! - the source is told it may forget what came before ([`Engine::written`]: the slot
//!   confirmed, the binlog position recorded) only once a batch is durably in place;
//! - side work (heartbeats, lag) never fails a run: it is logged and retried later.
//!
//! A new engine is a folder under `src/source/` and a file here with a struct implementing
//! [`SourceEngine`] and one implementing [`Engine`], named in [`source_engine`].

mod mysql;
mod postgres;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::batch::{BatchWriter, Turn};
use super::checkpoint::Checkpoint;
use super::control::{Events, LogLevel, TaskCommand, TaskEvent};
use super::error::TaskError;
use super::stats::CdcOutcome;
use futures::future::BoxFuture;

use super::course::TaskRun;
use super::requests;
use super::snapshot::ExactSnapshot;
use crate::check::CheckResult;
use crate::config::{self, EndpointConfig, TaskConfig, Workspace};
use crate::lake::Storage;
use crate::source::SourcePosition;
use crate::source::{SelectionRules, SourceError, TableInfo};
use crate::task::stats::TaskSummary;

/// How often the lag behind the source is measured.
const LAG_INTERVAL: Duration = Duration::from_secs(10);
/// How often the loop wakes without an event (a due batch, a stop, side work).
const TICK: Duration = Duration::from_millis(500);

/// A source engine as a task drives it, from the endpoint's checks to a whole run.
pub(super) trait SourceEngine: Sync {
    /// The endpoint's checks (connection, prerequisites), each with its fix, and those of
    /// each of `workspace`'s CDC tasks that read it (`tributary check`).
    fn check<'a>(
        &'a self,
        workspace: &'a Workspace,
        endpoint: &'a EndpointConfig,
        password: Option<String>,
    ) -> BoxFuture<'a, Vec<CheckResult>>;

    /// The tables `rules` select, with their columns and keys.
    fn discover<'a>(
        &'a self,
        endpoint: &'a EndpointConfig,
        password: Option<String>,
        rules: &'a SelectionRules,
    ) -> BoxFuture<'a, Result<Vec<TableInfo>, SourceError>>;

    /// A whole run of a task reading the endpoint, as its migration type says: the full
    /// load, CDC, or the full load and then CDC from exactly where its snapshot ends.
    fn run<'a>(
        &'a self,
        endpoint: &'a EndpointConfig,
        password: Option<String>,
        run: TaskRun,
    ) -> BoxFuture<'a, Result<TaskSummary, TaskError>>;

    /// The tables `task` selects, read from one snapshot at an exact position
    /// (`tributary validate`).
    fn exact_snapshot<'a>(
        &'a self,
        endpoint: &'a EndpointConfig,
        password: Option<String>,
        task: &'a TaskConfig,
    ) -> BoxFuture<'a, Result<ExactSnapshot, TaskError>>;
}

/// The engine that reads a source endpoint of `engine`; `None` for a target's engine.
pub(super) fn source_engine(engine: config::Engine) -> Option<&'static dyn SourceEngine> {
    match engine {
        config::Engine::Postgres => Some(&postgres::PostgresEngine),
        config::Engine::Mysql => Some(&mysql::MysqlEngine),
        config::Engine::Local | config::Engine::S3 => None,
    }
}

/// What a CDC run needs, for the engine whose endpoint is `E`; each engine's part
/// implements `run` for its endpoint. A course runs it again after each reload a schema
/// change asks for ([`CdcOutcome::reload`]).
#[derive(Clone)]
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
        written: Option<&SourcePosition>,
        stopped: bool,
    ) -> Result<(), TaskError>;

    /// Side work between turns (heartbeats); failures are logged, never returned.
    async fn side_work(&mut self);

    /// Bytes of the source's log not yet captured, measured every [`LAG_INTERVAL`]; `None`
    /// when it could not be measured (logged).
    async fn lag_bytes(&mut self) -> Option<i64>;

    /// Closes the stream; returns the position the run confirmed.
    async fn close(self) -> SourcePosition;
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
    let mut reload = false;
    let mut abandoned = false;
    let mut requests = OutsideRequests::default();
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
            Turn::Reload { written } => {
                reload = true;
                (true, written)
            }
            Turn::Abandoned => {
                abandoned = true;
                break;
            }
        };
        engine
            .written(&mut writer, written.as_ref(), stopped)
            .await?;
        if stopped {
            break;
        }
        engine.side_work().await;
        requests.take(&mut writer, &events).await;
        if last_lag.elapsed() >= LAG_INTERVAL {
            last_lag = Instant::now();
            if let Some(lag) = engine.lag_bytes().await {
                writer.stats.slot_lag_bytes = lag;
                events.send(TaskEvent::Cdc(writer.stats.clone()));
            }
        }
    }
    let confirmed = engine.close().await;
    // Requests a caught-up run wrote with its last batch load in this run too.
    let reload = reload || !writer.reload_requests.is_empty();
    if reload && !abandoned {
        // A batch written (or the requests alone) recorded them in the state: their files
        // may go. An abandoned batch recorded nothing; the next run takes them again.
        requests.done(&writer.storage, &events).await;
    }
    Ok(CdcOutcome {
        tables: writer.tables.into_values().map(|t| t.stats).collect(),
        confirmed_position: Some(confirmed),
        reload,
    })
}

/// Reload requests from outside the process ([`requests`]) the loop has taken.
struct OutsideRequests {
    last_poll: Instant,
    taken: Vec<String>,
}

impl Default for OutsideRequests {
    fn default() -> Self {
        OutsideRequests {
            last_poll: Instant::now() - requests::POLL,
            taken: Vec::new(),
        }
    }
}

impl OutsideRequests {
    /// Every [`requests::POLL`], makes new requests the writer's own reload requests.
    async fn take(&mut self, writer: &mut BatchWriter, events: &Events) {
        if self.last_poll.elapsed() < requests::POLL {
            return;
        }
        self.last_poll = Instant::now();
        let task = &writer.task;
        let found = requests::pending(
            &writer.storage,
            &task.target_settings.bucket_folder,
            &task.name,
        )
        .await;
        let (found, warnings) = match found {
            Ok(found) => found,
            Err(e) => {
                events.log(
                    LogLevel::Warn,
                    format!("reading reload requests: {e}; they are read again in a moment"),
                );
                return;
            }
        };
        for warning in warnings {
            events.log(LogLevel::Warn, warning);
        }
        for (key, tables) in found {
            if self.taken.contains(&key) {
                continue;
            }
            events.log(
                LogLevel::Info,
                format!(
                    "reload of {} requested ({}): the table(s) load again from a new snapshot",
                    crate::ident::list(&tables),
                    writer.storage.uri(&key)
                ),
            );
            for t in tables {
                if !writer.reload_requests.contains(&t) {
                    writer.reload_requests.push(t);
                }
            }
            self.taken.push(key);
        }
    }

    /// Deletes the requests taken, once the task's state records them.
    async fn done(&mut self, storage: &Storage, events: &Events) {
        for key in self.taken.drain(..) {
            if let Err(e) = storage.delete(&key).await {
                events.log(
                    LogLevel::Warn,
                    format!(
                        "{e}: the request is done; delete {} by hand",
                        storage.uri(&key)
                    ),
                );
            }
        }
    }
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
    super::cleanup::remove_pending_batch(storage, checkpoint, events, task, &cdc).await?;
    storage.clean_spool(&task.name);
    Ok(())
}
