//! The steps every engine's course shares ([`super::cdc`] holds each engine's course):
//! tables reloaded alone on request, the full load before CDC, and the summary of a
//! load-then-CDC run.

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::TaskConfig;
use crate::lake::Storage;
use crate::source::Source;
use crate::task::checkpoint::Checkpoint;
use crate::task::control::{Events, LogLevel, RunOptions, TaskCommand};
use crate::task::error::TaskError;
use crate::task::stats::{self, TableStats, TaskSummary};
use crate::task::{full_load, reload};

/// One run of a task, as its engine's course receives it.
pub(in crate::task) struct TaskRun {
    pub storage: Storage,
    pub checkpoint: Arc<Checkpoint>,
    pub task: TaskConfig,
    pub options: RunOptions,
    pub events: Events,
    pub stop: watch::Receiver<Option<TaskCommand>>,
}

/// Records the tables of `options.reload_tables` for a reload from their own snapshot
/// ([`reload`]), unless the whole task loads again anyway.
pub(super) async fn request_reload<S: Source>(
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
pub(super) async fn load_before_cdc<S: Source>(
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
pub(super) fn cdc_summary(
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
