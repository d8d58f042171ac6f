//! Deleting a task's own CDC files: those of a batch a killed run was putting in place,
//! those of one table before its reload, and all of them when a stream starts over.
//!
//! Invariant: nothing is deleted outside the task's own folders of the raw zone. Keys the
//! task state lists must lie inside the task's source folder, and a table's CDC files are
//! looked for only inside the table's own folder (never its `LOAD*` files).

use crate::config::TaskConfig;
use crate::ident::TableId;
use crate::lake::{Storage, layout};
use crate::task::checkpoint::{CdcState, Checkpoint, TaskState};
use crate::task::control::{Events, LogLevel};
use crate::task::error::TaskError;

/// A batch interrupted while being put in place: removes its files, so it is written again.
pub(super) async fn remove_pending_batch(
    storage: &Storage,
    checkpoint: &Checkpoint,
    events: &Events,
    task: &TaskConfig,
    cdc: &CdcState,
) -> Result<(), TaskError> {
    let Some(pending) = &cdc.pending_batch else {
        return Ok(());
    };
    delete_recorded(storage, task, &pending.keys).await?;
    events.log(
        LogLevel::Info,
        format!(
            "removed {} file(s) of an interrupted CDC batch; it is written again",
            pending.keys.len()
        ),
    );
    checkpoint
        .update(|s| {
            if let Some(c) = &mut s.cdc {
                c.pending_batch = None;
            }
        })
        .await?;
    Ok(())
}

/// Deletes files the task state recorded as this task's own (a pending batch). Each must
/// lie inside the task's source folder of the raw zone: a state edited by hand, or written
/// by something else, deletes nothing outside it.
async fn delete_recorded(
    storage: &Storage,
    task: &TaskConfig,
    keys: &[String],
) -> Result<(), TaskError> {
    let folder = layout::source_prefix(&task.target_settings.bucket_folder, &task.source);
    if let Some(outside) = keys.iter().find(|k| !layout::is_inside(&folder, k)) {
        return Err(TaskError::Internal {
            task: task.name.clone(),
            message: format!(
                "the task state lists the file {outside} as one of its own, but it is not inside the task's folder {folder}; nothing was deleted. Check who wrote the task state (_tributary/{}/state.json), or move it away to start the task afresh",
                task.name
            ),
        });
    }
    for key in keys {
        storage.delete(key).await?;
    }
    Ok(())
}

/// Deletes every CDC file of the task's tables (all but `LOAD*` files under each table's
/// folder) and any file of a pending batch, and says how many: a reload starts a new
/// stream, and old changes would replay over the new load.
pub(super) async fn delete_cdc_files(
    storage: &Storage,
    task: &TaskConfig,
    state: &TaskState,
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
        delete_recorded(storage, task, &pending.collect::<Vec<_>>()).await?;
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
