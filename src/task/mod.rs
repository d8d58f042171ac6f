//! Tasks: running a replication task and telling the world how it goes.
//!
//! The engine's API is small on purpose, so the CLI and the app drive tasks the same way:
//! [`start_task`] spawns a task on a runtime handle the caller passes in and returns a
//! [`TaskHandle`]: [`TaskCommand`]s go in, [`TaskEvent`]s come out, and the final
//! [`TaskSummary`] is awaited on the handle. Nothing here blocks the caller's thread.

mod batch;
mod cdc;
pub mod checkpoint;
mod full_load;
mod mysql;
pub mod position;
mod postgres;
mod reload;
pub mod stats;
mod toast;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::check::{CheckResult, CheckStatus};
use crate::config::{ConfigError, Engine, TaskConfig, Workspace};
use crate::ident::TableId;
use crate::lake::format::FormatError;
use crate::lake::{Storage, StorageError};
use crate::source::mysql::{BinlogPosition, MyEndpoint, MysqlSource};
use crate::source::postgres::replication::parse_lsn;
use crate::source::postgres::{PgEndpoint, PostgresSource};
use crate::source::{Source, SourceError, TableInfo};
use checkpoint::Checkpoint;
pub use checkpoint::CheckpointError;
use position::ChangePosition;
pub use stats::{CdcStats, TableState, TableStats, TaskSummary};

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("task '{task}': {count} table(s) failed: {details}")]
    TablesFailed {
        task: String,
        count: usize,
        details: String,
    },
    #[error("task '{task}' was stopped before it finished; run it again to resume")]
    Stopped { task: String },
    #[error("task '{task}': engine {engine:?} is not supported as a source yet")]
    UnsupportedSource { task: String, engine: Engine },
    #[error(
        "task '{task}': replication slot {slot} is gone, so changes since the last run are lost to CDC. Run the task with --reload to load every table again and create a new slot"
    )]
    SlotLost { task: String, slot: String },
    #[error(
        "task '{task}': replication slot {slot} is in use by another run of this task (the app, a service, a cron job). Stop that run first"
    )]
    SlotBusy { task: String, slot: String },
    #[error("task '{task}' failed inside the engine: {message}")]
    Internal { task: String, message: String },
    #[error(
        "task '{task}' does not select table {table} (check its include and exclude rules), so it cannot reload it"
    )]
    NotSelected { task: String, table: String },
    #[error(
        "task '{task}' captures changes only: it has no full load to redo for one table. Use migration_type = \"full-load-and-cdc\" to load tables and then capture their changes"
    )]
    ReloadTableWithoutLoad { task: String },
}

/// What a caller can ask of a running task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskCommand {
    /// Stop at once; finished ranges stay, and the next run resumes.
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Info,
    Warn,
    Error,
}

/// What a task reports while it runs.
#[derive(Debug, Clone)]
pub enum TaskEvent {
    /// The tables the task will load, in their initial state.
    Planned {
        tables: Vec<TableStats>,
    },
    /// A table's statistics changed.
    Table(TableStats),
    /// Task-wide CDC figures: latency, throughput, slot lag.
    Cdc(CdcStats),
    Log {
        level: LogLevel,
        message: String,
    },
}

/// Options of one run of a task.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Load every table again from scratch, deleting the task's previous full-load files
    /// (and, with CDC, recreating the replication slot).
    pub reload: bool,
    /// CDC: stop once every change committed before the run started is written.
    pub until_caught_up: bool,
    /// Load these tables again, replacing their files; the other tables stay as they are.
    /// With CDC, from their own snapshot ([`reload`]).
    pub reload_tables: Vec<TableId>,
}

pub struct TaskHandle {
    pub task: String,
    commands: watch::Sender<Option<TaskCommand>>,
    pub events: mpsc::UnboundedReceiver<TaskEvent>,
    join: Option<tokio::task::JoinHandle<Result<TaskSummary, TaskError>>>,
}

impl TaskHandle {
    pub fn send(&self, command: TaskCommand) {
        let _ = self.commands.send(Some(command));
    }

    /// A sender that can stop the task from elsewhere (a signal handler, the UI).
    pub fn stopper(&self) -> watch::Sender<Option<TaskCommand>> {
        self.commands.clone()
    }

    pub fn is_finished(&self) -> bool {
        self.join.as_ref().is_none_or(|j| j.is_finished())
    }

    /// Waits for the task's end.
    pub async fn finish(mut self) -> Result<TaskSummary, TaskError> {
        let task = self.task.clone();
        match self.join.take() {
            Some(join) => join.await.unwrap_or_else(|e| {
                Err(TaskError::Internal {
                    task,
                    message: e.to_string(),
                })
            }),
            None => Err(TaskError::Internal {
                task,
                message: "the task's end was already taken".into(),
            }),
        }
    }

    /// The task's end as a future of its own (for a caller that keeps the handle to send
    /// commands and read events): the summary table, or the error's message.
    pub fn take_join(
        &mut self,
    ) -> Option<impl Future<Output = Result<String, String>> + Send + 'static> {
        let join = self.join.take()?;
        Some(async move {
            match join.await {
                Ok(Ok(summary)) => Ok(summary.table()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(format!("the task failed inside the engine: {e}")),
            }
        })
    }
}

/// Emits events; dropping the receiver silently discards them.
#[derive(Clone)]
pub(crate) struct Events {
    tx: mpsc::UnboundedSender<TaskEvent>,
}

impl Events {
    pub(crate) fn send(&self, event: TaskEvent) {
        let _ = self.tx.send(event);
    }

    pub(crate) fn log(&self, level: LogLevel, message: impl Into<String>) {
        self.send(TaskEvent::Log {
            level,
            message: message.into(),
        });
    }
}

/// The checks of one endpoint, shared by `tributary check` and the app: connection and
/// prerequisites, and for a source, the slot and publication of each CDC task reading it.
pub async fn check_endpoint(
    workspace: &Workspace,
    e: &crate::config::EndpointConfig,
) -> Vec<CheckResult> {
    match e.engine {
        Engine::Postgres => {
            let password = match e.resolve_password().await {
                Ok(p) => p,
                Err(err) => return vec![CheckResult::fail_from("password", &err)],
            };
            let pg = PgEndpoint::from_config(e, password);
            let mut results = PostgresSource::new(pg.clone()).check().await;
            if results.iter().any(|r| r.status == CheckStatus::Fail) {
                return results;
            }
            for task in workspace
                .tasks
                .iter()
                .filter(|t| t.source == e.name && t.has_cdc())
            {
                results.push(postgres::slot_check(&pg, task).await);
            }
            results
        }
        Engine::Mysql => {
            let password = match e.resolve_password().await {
                Ok(p) => p,
                Err(err) => return vec![CheckResult::fail_from("password", &err)],
            };
            let endpoint = MyEndpoint::from_config(e, password);
            MysqlSource::new(endpoint, 1).check().await
        }
        Engine::Local | Engine::S3 => match Storage::from_endpoint(e).await {
            Ok(storage) => storage.check().await,
            Err(err) => vec![CheckResult::fail_from("target", &err)],
        },
    }
}

/// The `_position` before which a CDC task's changes are all in the raw zone: those of the
/// batches up to its `confirmed_position` (the state is written after their files).
/// Changes at or after it may belong to a batch still being written.
pub fn written_changes_end(engine: Engine, confirmed_position: &str) -> Option<ChangePosition> {
    match engine {
        // Every transaction committed at or before the batch's end LSN.
        Engine::Postgres => {
            parse_lsn(confirmed_position).map(|lsn| ChangePosition::postgres(lsn + 1, 0))
        }
        // Every transaction starting before the batch's end position.
        Engine::Mysql => BinlogPosition::parse(confirmed_position)
            .map(|b| ChangePosition::mysql(b.file_index(), b.pos, 0)),
        _ => None,
    }
}

/// The tables of source endpoint `e` that `rules` select.
pub async fn list_source_tables(
    e: &crate::config::EndpointConfig,
    rules: &crate::source::SelectionRules,
) -> Result<Vec<TableId>, TaskError> {
    let tables = discover_tables(e, rules).await?;
    Ok(tables.iter().map(TableInfo::id).collect())
}

async fn discover_tables(
    e: &crate::config::EndpointConfig,
    rules: &crate::source::SelectionRules,
) -> Result<Vec<TableInfo>, TaskError> {
    let password = e.resolve_password().await?;
    let tables = match e.engine {
        Engine::Postgres => {
            PostgresSource::new(PgEndpoint::from_config(e, password))
                .discover(rules)
                .await?
        }
        Engine::Mysql => {
            MysqlSource::new(MyEndpoint::from_config(e, password), 1)
                .discover(rules)
                .await?
        }
        engine => {
            return Err(TaskError::UnsupportedSource {
                task: String::new(),
                engine,
            });
        }
    };
    Ok(tables)
}

/// Starts task `task_name` of `workspace` on `runtime`.
pub fn start_task(
    runtime: &tokio::runtime::Handle,
    workspace: Arc<Workspace>,
    workspace_path: PathBuf,
    task_name: &str,
    options: RunOptions,
) -> TaskHandle {
    let (tx, events) = mpsc::unbounded_channel();
    let (commands, stop) = watch::channel(None);
    let task = task_name.to_owned();
    let events_tx = Events { tx };
    let join = runtime.spawn({
        let task = task.clone();
        async move { run(&workspace, &workspace_path, &task, options, events_tx, stop).await }
    });
    TaskHandle {
        task,
        commands,
        events,
        join: Some(join),
    }
}

async fn run(
    workspace: &Workspace,
    path: &std::path::Path,
    task_name: &str,
    options: RunOptions,
    events: Events,
    stop: watch::Receiver<Option<TaskCommand>>,
) -> Result<TaskSummary, TaskError> {
    let task = workspace.task(task_name, path)?.clone();
    let source_endpoint = workspace.endpoint(&task.source, path)?;
    let target_endpoint = workspace.endpoint(&task.target, path)?;
    let storage = Storage::from_endpoint(target_endpoint).await?;
    let checkpoint = Arc::new(
        Checkpoint::open(
            storage.clone(),
            &task.target_settings.bucket_folder,
            &task.name,
            &task.source,
        )
        .await?,
    );
    if !options.reload_tables.is_empty() && !task.has_full_load() {
        return Err(TaskError::ReloadTableWithoutLoad { task: task.name });
    }
    if !task.has_full_load() {
        // A load records the keys curation merges by; a CDC-only task has none to do it.
        let rules = crate::source::SelectionRules::new(&task.include, &task.exclude);
        match discover_tables(source_endpoint, &rules).await {
            Ok(tables) => checkpoint.record_primary_keys(&tables).await?,
            Err(TaskError::Source(SourceError::NoTables { .. })) => {}
            Err(e) => return Err(e),
        }
    }
    match source_endpoint.engine {
        Engine::Postgres => {
            let password = source_endpoint.resolve_password().await?;
            let pg = PgEndpoint::from_config(source_endpoint, password);
            postgres::run(pg, storage, checkpoint, task, options, events, stop).await
        }
        Engine::Mysql => {
            let password = source_endpoint.resolve_password().await?;
            let endpoint = MyEndpoint::from_config(source_endpoint, password);
            mysql::run(endpoint, storage, checkpoint, task, options, events, stop).await
        }
        engine => Err(TaskError::UnsupportedSource {
            task: task.name,
            engine,
        }),
    }
}

/// Records the tables of `options.reload_tables` for a reload from their own snapshot
/// ([`reload`]), unless the whole task loads again anyway.
async fn request_reload<S: Source>(
    source: &S,
    checkpoint: &Checkpoint,
    task: &TaskConfig,
    options: &mut RunOptions,
    events: &Events,
) -> Result<(), TaskError> {
    let tables = std::mem::take(&mut options.reload_tables);
    if tables.is_empty() {
        return Ok(());
    }
    if options.reload {
        events.log(
            LogLevel::Info,
            format!(
                "the whole task loads again, {} included",
                crate::ident::list(&tables)
            ),
        );
        return Ok(());
    }
    reload::request(source, checkpoint, task, &tables).await
}

/// The full load that comes before CDC, if the task has one; its summary (empty without).
async fn load_before_cdc<S: Source>(
    source: Arc<S>,
    storage: &Storage,
    checkpoint: &Arc<Checkpoint>,
    task: &TaskConfig,
    options: &RunOptions,
    events: &Events,
    stop: &watch::Receiver<Option<TaskCommand>>,
) -> Result<TaskSummary, TaskError> {
    if task.has_full_load() {
        let (storage, checkpoint, task) = (storage.clone(), checkpoint.clone(), task.clone());
        let (options, events, stop) = (options.clone(), events.clone(), stop.clone());
        return full_load::run(source, storage, checkpoint, task, options, events, stop).await;
    }
    Ok(TaskSummary {
        task: task.name.clone(),
        tables: Vec::new(),
        seconds: 0.0,
        location: storage.uri(&crate::lake::layout::source_prefix(
            &task.target_settings.bucket_folder,
            &task.source,
        )),
        snapshot_position: None,
    })
}

/// A load-then-CDC run's summary: the load's, with what CDC wrote added.
fn cdc_summary(
    mut load: TaskSummary,
    outcome: stats::CdcOutcome,
    started: std::time::Instant,
) -> TaskSummary {
    merge_cdc_stats(&mut load.tables, outcome.tables);
    load.seconds = started.elapsed().as_secs_f64();
    load.snapshot_position = load.snapshot_position.or(outcome.confirmed_position);
    load
}

/// Adds what CDC wrote to the full load's table statistics.
fn merge_cdc_stats(tables: &mut Vec<TableStats>, cdc_tables: Vec<TableStats>) {
    for cdc_table in cdc_tables {
        match tables
            .iter_mut()
            .find(|t: &&mut TableStats| t.qualified_name() == cdc_table.qualified_name())
        {
            Some(t) => {
                t.inserts = cdc_table.inserts;
                t.updates = cdc_table.updates;
                t.deletes = cdc_table.deletes;
                t.ddls = cdc_table.ddls;
                t.files += cdc_table.files;
                t.bytes += cdc_table.bytes;
            }
            None => tables.push(cdc_table),
        }
    }
}
