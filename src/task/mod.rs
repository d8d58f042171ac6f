//! Tasks: running a replication task and telling the world how it goes.
//!
//! The engine's API is small on purpose, so the CLI and the app drive tasks the same way:
//! [`start_task`] spawns a task on a runtime handle the caller passes in and returns a
//! [`TaskHandle`]: [`TaskCommand`]s go in, [`TaskEvent`]s come out, and the final
//! [`TaskSummary`] is awaited on the handle. Nothing here blocks the caller's thread.

mod batch;
mod cdc;
pub mod checkpoint;
mod cleanup;
mod control;
mod course;
mod error;
mod full_load;
mod reload;
pub mod requests;
mod snapshot;
pub mod stats;
mod toast;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::check::CheckResult;
use crate::config::{EndpointConfig, Workspace};
use crate::ident::TableId;
use crate::lake::Storage;
use crate::source::{SelectionRules, SourceError, TableInfo};
use checkpoint::Checkpoint;
pub use checkpoint::CheckpointError;
pub(crate) use control::Events;
pub use control::{LogLevel, RunOptions, TaskCommand, TaskEvent};
use course::TaskRun;
pub use error::TaskError;
pub use snapshot::ExactSnapshot;
pub use stats::{CdcStats, TableState, TableStats, TaskSummary};

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
            Some(join) => join
                .await
                .unwrap_or_else(|source| Err(TaskError::Panicked { task, source })),
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

/// The checks of one endpoint, shared by `tributary check` and the app: connection and
/// prerequisites, and for a source, those of each CDC task reading it (slot, publication).
pub async fn check_endpoint(workspace: &Workspace, e: &EndpointConfig) -> Vec<CheckResult> {
    let Some(engine) = cdc::source_engine(e.engine) else {
        return match Storage::from_endpoint(e).await {
            Ok(storage) => storage.check().await,
            Err(err) => vec![CheckResult::fail_from("target", &err)],
        };
    };
    match e.resolve().await {
        Ok(c) => {
            let mut results = Vec::new();
            if let Some(id) = &e.password_secret {
                results.push(CheckResult::pass(
                    "password",
                    format!("from AWS Secrets Manager secret '{id}'"),
                ));
            }
            results.extend(engine.check(workspace, &c.endpoint, c.password).await);
            results
        }
        Err(err) => vec![CheckResult::fail_from("password", &err)],
    }
}

/// The tables of source endpoint `e` that `rules` select.
pub async fn list_source_tables(
    e: &EndpointConfig,
    rules: &SelectionRules,
) -> Result<Vec<TableId>, TaskError> {
    let Some(engine) = cdc::source_engine(e.engine) else {
        return Err(TaskError::UnsupportedSource {
            task: String::new(),
            engine: e.engine,
        });
    };
    let c = e.resolve().await?;
    let tables = engine.discover(&c.endpoint, c.password, rules).await?;
    Ok(tables.iter().map(TableInfo::id).collect())
}

/// Task `task`'s tables read from one snapshot of its source at an exact position, for
/// `tributary validate`. Close it when done (it holds a temporary slot or transactions).
pub async fn exact_snapshot(
    workspace: &Workspace,
    path: &std::path::Path,
    task: &crate::config::TaskConfig,
) -> Result<ExactSnapshot, TaskError> {
    let endpoint = workspace.endpoint(&task.source, path)?;
    let Some(engine) = cdc::source_engine(endpoint.engine) else {
        return Err(TaskError::UnsupportedSource {
            task: task.name.clone(),
            engine: endpoint.engine,
        });
    };
    let c = endpoint.resolve().await?;
    engine.exact_snapshot(&c.endpoint, c.password, task).await
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
    let events_tx = Events::new(tx);
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
    let Some(engine) = cdc::source_engine(source_endpoint.engine) else {
        return Err(TaskError::UnsupportedSource {
            task: task.name,
            engine: source_endpoint.engine,
        });
    };
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
    let crate::config::Connection {
        endpoint: source_endpoint,
        password,
    } = source_endpoint.resolve().await?;
    let source_endpoint = &source_endpoint;
    if !task.has_full_load() {
        // A load records the keys curation merges by; a CDC-only task has none to do it.
        let rules = SelectionRules::new(&task.include, &task.exclude);
        match engine
            .discover(source_endpoint, password.clone(), &rules)
            .await
        {
            Ok(tables) => checkpoint.record_primary_keys(&tables).await?,
            Err(SourceError::NoTables { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let run = TaskRun {
        storage,
        checkpoint,
        task,
        options,
        events,
        stop,
    };
    engine.run(source_endpoint, password, run).await
}
