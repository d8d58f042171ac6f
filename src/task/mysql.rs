//! A MySQL/MariaDB task from start to end: the server's binlog settings, the full load,
//! tables reloaded alone, then CDC ([`super::cdc::mysql`]) from the snapshot's binlog
//! position (or from the binlog's end, for a CDC-only task).

use std::sync::Arc;

use tokio::sync::watch;

use super::checkpoint::Checkpoint;
use super::position::ChangePosition;
use super::{
    Events, LogLevel, RunOptions, TaskCommand, TaskError, TaskSummary, cdc, cdc_summary, full_load,
    load_before_cdc, reload, request_reload,
};
use crate::config::{MigrationType, TaskConfig};
use crate::lake::Storage;
use crate::source::mysql::{BinlogPosition, MyEndpoint, MysqlSource};

/// A MySQL/MariaDB task: the full load, CDC from the binlog, or the full load and then CDC
/// from the snapshot's binlog position.
pub(super) async fn run(
    endpoint: MyEndpoint,
    storage: Storage,
    checkpoint: Arc<Checkpoint>,
    task: TaskConfig,
    options: RunOptions,
    events: Events,
    stop: watch::Receiver<Option<TaskCommand>>,
) -> Result<TaskSummary, TaskError> {
    let started = std::time::Instant::now();
    let source = Arc::new(MysqlSource::new(
        endpoint.clone(),
        task.full_load_settings.max_full_load_sub_tasks,
    ));
    if task.migration_type == MigrationType::FullLoad {
        return full_load::run(source, storage, checkpoint, task, options, events, stop).await;
    }
    // Every CDC prerequisite is checked before anything is created.
    let mut conn = endpoint.connect().await?;
    endpoint
        .binlog_settings(&mut conn)
        .await?
        .require_cdc(&endpoint.name)?;
    cdc::mysql::refuse_text_cast_columns(&endpoint, &task).await?;
    let current = endpoint.current_position(&mut conn).await?;
    let _ = conn.disconnect().await;
    let state = checkpoint.snapshot().await;
    if options.reload {
        cdc::delete_cdc_files(&storage, &task, &state, &events).await?;
        checkpoint.update(|s| s.cdc = None).await?;
    }
    let mut options = options;
    request_reload(&*source, &checkpoint, &task, &mut options, &events).await?;
    let state = checkpoint.snapshot().await;
    let load = load_before_cdc(
        source.clone(),
        &storage,
        &checkpoint,
        &task,
        &options,
        &events,
        &stop,
    )
    .await?;
    let load = if checkpoint.snapshot().await.reloading.is_empty() {
        load
    } else {
        let mark = |p: &str| {
            BinlogPosition::parse(p).map(|b| ChangePosition::mysql(b.file_index(), b.pos, 0))
        };
        let reloaded =
            reload::run(source, mark, &storage, &checkpoint, &task, &events, &stop).await;
        reload::outcome(reloaded, load, &events)?
    };
    if !task.has_full_load()
        && state
            .cdc
            .as_ref()
            .is_none_or(|c| c.confirmed_position.is_none())
    {
        // CDC only: changes from now on.
        let Some(position) = current else {
            return Err(TaskError::Internal {
                task: task.name,
                message: "the server reports no binlog position".into(),
            });
        };
        events.log(
            LogLevel::Info,
            format!("CDC starts at the binlog's end, {position}"),
        );
        let text = position.to_string();
        checkpoint
            .update(|s| {
                s.cdc
                    .get_or_insert_with(Default::default)
                    .confirmed_position = Some(text.clone());
            })
            .await?;
    }
    if stop.borrow().is_some() {
        return Err(TaskError::Stopped { task: task.name });
    }
    let outcome = cdc::CdcRun {
        endpoint,
        storage,
        task: task.clone(),
        checkpoint,
        events,
        stop,
        until_caught_up: options.until_caught_up,
    }
    .run()
    .await?;
    Ok(cdc_summary(load, outcome, started))
}
