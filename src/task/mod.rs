//! Tasks: running a replication task and telling the world how it goes.
//!
//! The engine's API is small on purpose, so the CLI and the app drive tasks the same way:
//! [`start_task`] spawns a task on a runtime handle the caller passes in and returns a
//! [`TaskHandle`]: [`TaskCommand`]s go in, [`TaskEvent`]s come out, and the final
//! [`TaskSummary`] is awaited on the handle. Nothing here blocks the caller's thread.

pub mod checkpoint;
mod full_load;
pub mod stats;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::config::{ConfigError, Engine, Workspace};
use crate::lake::format::FormatError;
use crate::lake::{Storage, StorageError};
use crate::source::SourceError;
use crate::source::postgres::{PgEndpoint, PostgresSource};
pub use checkpoint::CheckpointError;
pub use stats::{TableState, TableStats, TaskSummary};

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
    #[error("task '{task}' failed inside the engine: {message}")]
    Internal { task: String, message: String },
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
    Log {
        level: LogLevel,
        message: String,
    },
}

/// Options of one run of a task.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Load every table again from scratch, deleting the task's previous full-load files.
    pub reload: bool,
}

pub struct TaskHandle {
    pub task: String,
    commands: watch::Sender<Option<TaskCommand>>,
    pub events: mpsc::UnboundedReceiver<TaskEvent>,
    join: tokio::task::JoinHandle<Result<TaskSummary, TaskError>>,
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
        self.join.is_finished()
    }

    /// Waits for the task's end.
    pub async fn finish(self) -> Result<TaskSummary, TaskError> {
        let task = self.task.clone();
        self.join.await.unwrap_or_else(|e| {
            Err(TaskError::Internal {
                task,
                message: e.to_string(),
            })
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
        join,
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
    match source_endpoint.engine {
        Engine::Postgres => {
            let password = source_endpoint.resolve_password()?;
            let source = PostgresSource::new(PgEndpoint::from_config(source_endpoint, password));
            full_load::run(Arc::new(source), storage, task, options, events, stop).await
        }
        engine => Err(TaskError::UnsupportedSource {
            task: task.name,
            engine,
        }),
    }
}
