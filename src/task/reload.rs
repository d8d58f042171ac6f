//! Reloading some tables of a CDC task while its stream goes on, as DMS's "reload table".
//!
//! Invariants:
//! - the request is recorded ([`TaskState::reloading`]) before anything is deleted, and
//!   cleared only once every requested table is loaded again, in the same write that sets
//!   each one's [`TableLoadState::changes_from`]; an interrupted reload starts over, from a
//!   new snapshot, on the next run;
//! - a reloaded table is read from one snapshot whose source position is exact (PostgreSQL:
//!   a temporary slot's consistent point; MySQL: the binlog position under the snapshot's
//!   lock); the stream's changes to it before that position are in the load and are passed
//!   by, the ones after are written, so nothing is lost or written twice;
//! - the table's earlier files, load and changes, are deleted before it loads again; until
//!   the load completes, readers see the table partly loaded (DMS truncates it likewise);
//! - while a table waits for its reload, no other load touches it, and the stream's changes
//!   to it are passed by (its new snapshot will hold them): a failed reload stops neither
//!   the stream nor the other tables.
//!
//! [`TaskState::reloading`]: super::checkpoint::TaskState::reloading
//! [`TableLoadState::changes_from`]: super::checkpoint::TableLoadState::changes_from

use crate::source::position::SourcePosition;
use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::watch;

use super::checkpoint::Checkpoint;
use super::{
    Events, LogLevel, RunOptions, TaskCommand, TaskError, TaskSummary, cleanup, full_load,
};
use crate::config::TaskConfig;
use crate::ident::TableId;
use crate::lake::Storage;
use crate::source::{SelectionRules, Source, TableInfo};

/// Records that `tables` are to be reloaded, once each is known to be one the task selects.
pub(super) async fn request<S: Source>(
    source: &S,
    checkpoint: &Checkpoint,
    task: &TaskConfig,
    tables: &[TableId],
) -> Result<(), TaskError> {
    let rules = SelectionRules::new(&task.include, &task.exclude);
    full_load::require_selected(task, tables, &source.discover(&rules).await?)?;
    checkpoint
        .update(|s| {
            for t in tables {
                if !s.reloading.contains(t) {
                    s.reloading.push(t.clone());
                }
            }
        })
        .await?;
    Ok(())
}

/// Loads the requested tables again from `source`, whose snapshot must be exact; each
/// table's changes apply from the first `_position` its snapshot does not hold
/// ([`SourcePosition::snapshot_end`]). Returns the full load's summary.
pub(super) async fn run<S: Source>(
    source: Arc<S>,
    storage: &Storage,
    checkpoint: &Arc<Checkpoint>,
    task: &TaskConfig,
    events: &Events,
    stop: &watch::Receiver<Option<TaskCommand>>,
) -> Result<TaskSummary, TaskError> {
    let requested = checkpoint.snapshot().await.reloading;
    // A table no longer selected (its rules edited, or dropped at the source) cannot load:
    // its request goes, rather than fail every later run.
    let rules = SelectionRules::new(&task.include, &task.exclude);
    let selected: HashSet<TableId> = source
        .discover(&rules)
        .await?
        .iter()
        .map(TableInfo::id)
        .collect();
    let (tables, gone): (Vec<TableId>, Vec<TableId>) =
        requested.into_iter().partition(|t| selected.contains(t));
    if !gone.is_empty() {
        events.log(
            LogLevel::Warn,
            format!(
                "{}: no longer selected, or no longer in the source; not reloaded",
                crate::ident::list(&gone)
            ),
        );
    }
    let mut removed = 0;
    for key in &tables {
        removed += cleanup::delete_table_cdc_files(storage, task, key).await?;
    }
    let loaded_before: HashSet<TableId> = checkpoint
        .update(|s| {
            s.reloading.retain(|t| tables.contains(t));
            for t in &tables {
                if let Some(c) = &mut s.cdc {
                    c.tables.remove(t);
                }
            }
            s.tables
                .keys()
                .filter(|k| !tables.contains(k))
                .cloned()
                .collect()
        })
        .await?;
    if removed > 0 {
        events.log(
            LogLevel::Info,
            format!(
                "deleted {removed} CDC file(s) of {}",
                crate::ident::list(&tables)
            ),
        );
    }
    let options = RunOptions {
        reload_tables: tables,
        ..RunOptions::default()
    };
    let summary = full_load::run(
        source,
        storage.clone(),
        checkpoint.clone(),
        task.clone(),
        options,
        events.clone(),
        stop.clone(),
    )
    .await?;
    // Every table this load planned (the reloaded ones, and any newly selected) holds what
    // the stream carried before its snapshot.
    let state = checkpoint.snapshot().await;
    let mut marks = Vec::new();
    for (t, load) in state
        .tables
        .iter()
        .filter(|(k, _)| !loaded_before.contains(*k))
    {
        let position = load.snapshot_position.as_ref();
        let Some(from) = position.map(SourcePosition::snapshot_end) else {
            return Err(TaskError::Internal {
                task: task.name.clone(),
                message: format!(
                    "{t} was loaded from a snapshot without a usable source position ({position:?}); reload the whole task (--reload)"
                ),
            });
        };
        marks.push((t.clone(), from));
    }
    checkpoint
        .update(|s| {
            for (t, from) in &marks {
                if let Some(load) = s.tables.get_mut(t) {
                    load.changes_from = Some(from.clone());
                }
            }
            s.reloading.clear();
        })
        .await?;
    let described: Vec<String> = marks.iter().map(|(t, f)| format!("{t} from {f}")).collect();
    events.log(
        LogLevel::Info,
        format!(
            "reloaded; the stream's changes apply to {}",
            described.join(", ")
        ),
    );
    Ok(summary)
}

/// The load summary after a reload: its own, or on a failure other than a stop, the one
/// before it, with the failure logged. One table's failed reload must not stop capture
/// for the others (the source keeps its WAL or binlog meanwhile); the failed table's
/// changes are passed by until its reload, tried again on the next run, succeeds.
pub(super) fn outcome(
    reloaded: Result<TaskSummary, TaskError>,
    before: TaskSummary,
    events: &Events,
) -> Result<TaskSummary, TaskError> {
    match reloaded {
        Ok(summary) => Ok(summary),
        Err(e @ TaskError::Stopped { .. }) => Err(e),
        Err(e) => {
            events.log(
                LogLevel::Error,
                format!(
                    "{e}. The other tables' changes go on being captured; the reload is tried again on the next run"
                ),
            );
            Ok(before)
        }
    }
}
