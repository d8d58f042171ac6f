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
//!   the load completes, readers see the table partly loaded (DMS truncates it likewise).
//!
//! [`TaskState::reloading`]: super::checkpoint::TaskState::reloading
//! [`TableLoadState::changes_from`]: super::checkpoint::TableLoadState::changes_from

use std::sync::Arc;

use tokio::sync::watch;

use super::checkpoint::Checkpoint;
use super::{Events, LogLevel, RunOptions, TaskCommand, TaskError, TaskSummary, cdc, full_load};
use crate::config::TaskConfig;
use crate::lake::Storage;
use crate::source::{SelectionRules, Source};

/// Records that `tables` are to be reloaded, once each is known to be one the task selects.
pub(super) async fn request<S: Source>(
    source: &S,
    checkpoint: &Checkpoint,
    task: &TaskConfig,
    tables: &[String],
) -> Result<(), TaskError> {
    let rules = SelectionRules::new(&task.include, &task.exclude);
    let selected = source.discover(&rules).await?;
    if let Some(table) = tables
        .iter()
        .find(|t| !selected.iter().any(|i| &i.qualified_name() == *t))
    {
        return Err(TaskError::NotSelected {
            task: task.name.clone(),
            table: table.clone(),
        });
    }
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

/// Loads the requested tables again from `source`, whose snapshot must be exact; `mark`
/// turns the snapshot's source position into the first `_position` that applies after it.
/// Returns the full load's summary.
pub(super) async fn run<S: Source>(
    source: Arc<S>,
    mark: impl Fn(&str) -> Option<String>,
    storage: &Storage,
    checkpoint: &Arc<Checkpoint>,
    task: &TaskConfig,
    events: &Events,
    stop: &watch::Receiver<Option<TaskCommand>>,
) -> Result<TaskSummary, TaskError> {
    let tables = checkpoint.snapshot().await.reloading;
    let mut removed = 0;
    for key in &tables {
        removed += cdc::delete_table_cdc_files(storage, task, key).await?;
    }
    // With its state gone, the full load deletes the table's load files and plans it anew.
    checkpoint
        .update(|s| {
            for t in &tables {
                s.tables.remove(t);
                if let Some(c) = &mut s.cdc {
                    c.tables.remove(t);
                }
            }
            s.full_load_completed_at = None;
        })
        .await?;
    events.log(
        LogLevel::Info,
        format!(
            "reloading {} from a new snapshot while the stream goes on ({removed} CDC file(s) of theirs deleted)",
            tables.join(", ")
        ),
    );
    let summary = full_load::run(
        source,
        storage.clone(),
        checkpoint.clone(),
        task.clone(),
        RunOptions::default(),
        events.clone(),
        stop.clone(),
    )
    .await?;
    let state = checkpoint.snapshot().await;
    let mut marks = Vec::new();
    for t in &tables {
        let position = state
            .tables
            .get(t)
            .and_then(|l| l.snapshot_position.clone());
        let Some(from) = position.as_deref().and_then(&mark) else {
            return Err(TaskError::Internal {
                task: task.name.clone(),
                message: format!(
                    "{t} was reloaded from a snapshot without a usable source position ({position:?})"
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
