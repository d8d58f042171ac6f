//! A PostgreSQL task from start to end: the server's readiness, the slot and publication,
//! the full load from the slot's own snapshot, tables reloaded alone from temporary slots,
//! then CDC ([`super::cdc::postgres`]) from exactly where the snapshot ends.

use std::sync::Arc;

use tokio::sync::watch;

use super::checkpoint::{self, Checkpoint};
use super::position::ChangePosition;
use super::{
    Events, LogLevel, RunOptions, TaskCommand, TaskError, TaskSummary, cdc, cdc_summary, full_load,
    load_before_cdc, reload, request_reload,
};
use crate::check::{CheckResult, CheckStatus};
use crate::config::{MigrationType, TaskConfig};
use crate::ident::TableId;
use crate::lake::Storage;
use crate::source::postgres::replication::{SlotStatus, parse_lsn};
use crate::source::postgres::{PgEndpoint, PostgresSource};
use crate::source::{Source, SourceError, TableInfo};

/// A PostgreSQL task: the full load, CDC, or the full load from the slot's snapshot and
/// then CDC from exactly where the snapshot ends.
pub(super) async fn run(
    pg: PgEndpoint,
    storage: Storage,
    checkpoint: Arc<Checkpoint>,
    task: TaskConfig,
    options: RunOptions,
    events: Events,
    stop: watch::Receiver<Option<TaskCommand>>,
) -> Result<TaskSummary, TaskError> {
    let started = std::time::Instant::now();
    if task.migration_type == MigrationType::FullLoad {
        let source = Arc::new(PostgresSource::new(pg));
        return full_load::run(source, storage, checkpoint, task, options, events, stop).await;
    }
    let slot = task.slot_name();
    let publication = task.publication_name();
    let status = ready_slot(&pg, &task, &events).await?;
    let mut options = options;
    let state = checkpoint.snapshot().await;
    let cdc_started = state
        .cdc
        .as_ref()
        .is_some_and(|c| c.confirmed_position.is_some());
    // A slot whose start the state never recorded (killed just after creating it, or the
    // state was moved away) cannot say where CDC starts relative to a load: recreate it.
    let unanchored = task.has_full_load() && state.snapshot_position.is_none() && !cdc_started;
    let lost = status.as_ref().is_some_and(|s| s.lost);
    let start_over = status.is_some() && (options.reload || unanchored);
    if start_over {
        if let Err(e) = pg.drop_slot(&slot).await {
            // Another run took the slot since its status was read: between the first
            // run's snapshot (the slot is active while it is held) and its streaming, the
            // slot is idle for a moment.
            if pg
                .slot_status(&slot)
                .await
                .ok()
                .flatten()
                .is_some_and(|s| s.active)
            {
                return Err(TaskError::SlotBusy {
                    task: task.name.clone(),
                    slot,
                });
            }
            return Err(e.into());
        }
        events.log(
            LogLevel::Info,
            format!("dropped replication slot {slot} to start over"),
        );
    }
    if lost && !options.reload && !unanchored {
        return Err(TaskError::SlotLost {
            task: task.name.clone(),
            slot,
        });
    }
    if options.reload {
        cdc::delete_cdc_files(&storage, &task, &state, &events).await?;
    }
    let mut source = PostgresSource::new(pg.clone());
    let mut holder = None;
    if status.is_none() || start_over {
        if cdc_started && !options.reload {
            return Err(TaskError::SlotLost {
                task: task.name.clone(),
                slot,
            });
        }
        let (h, snapshot) = pg
            .create_slot_with_snapshot(&slot, &publication, false)
            .await?;
        events.log(
            LogLevel::Info,
            format!("created replication slot {slot} at {}", snapshot.position),
        );
        if task.has_full_load() {
            // Everything loaded before the slot existed could miss changes: load afresh
            // from the slot's own snapshot.
            if !state.tables.is_empty() && !options.reload {
                events.log(
                    LogLevel::Info,
                    "the slot is new, so the full load starts afresh from its snapshot",
                );
            }
            if !options.reload && (!state.tables.is_empty() || state.cdc.is_some()) {
                cdc::delete_cdc_files(&storage, &task, &state, &events).await?;
                options.reload = true;
            }
            source = source.with_slot_snapshot(snapshot.clone());
            holder = Some(h);
        }
        checkpoint
            .update(|s| {
                // A new slot starts a new stream: nothing of the old one applies.
                s.cdc = Some(checkpoint::CdcState {
                    slot: slot.clone(),
                    publication: publication.clone(),
                    confirmed_position: (!task.has_full_load()).then(|| snapshot.position.clone()),
                    ..Default::default()
                });
            })
            .await?;
    }
    request_reload(&source, &checkpoint, &task, &mut options, &events).await?;
    let load = load_before_cdc(
        Arc::new(source),
        &storage,
        &checkpoint,
        &task,
        &options,
        &events,
        &stop,
    )
    .await?;
    drop(holder); // the snapshot is no longer needed by anyone
    let load = if checkpoint.snapshot().await.reloading.is_empty() {
        load
    } else {
        let reloaded = reload_alone(&pg, &storage, &checkpoint, &task, &events, &stop).await;
        reload::outcome(reloaded, load, &events)?
    };
    let outcome = cdc::CdcRun {
        endpoint: pg,
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

/// Checks the server and the slot before anything changes, and makes the publication (or
/// checks that a given one publishes every selected table). Returns the slot's status.
async fn ready_slot(
    pg: &PgEndpoint,
    task: &TaskConfig,
    events: &Events,
) -> Result<Option<SlotStatus>, TaskError> {
    pg.require_logical_wal().await?;
    let slot = task.slot_name();
    let publication = task.publication_name();
    let status = pg.slot_status(&slot).await?;
    if status.as_ref().is_some_and(|s| s.active) {
        // Another run streams this slot: touching the state now could undo its batch.
        return Err(TaskError::SlotBusy {
            task: task.name.clone(),
            slot,
        });
    }
    if pg.ensure_publication(&publication).await? {
        events.log(
            LogLevel::Info,
            format!("created publication {publication} FOR ALL TABLES"),
        );
    } else if let Some(problem) = unpublished_tables(pg, task).await? {
        // A publication made by hand may leave out tables the task selects: their changes
        // would silently never come.
        return Err(TaskError::Source(SourceError::Database {
            endpoint: pg.name.clone(),
            context: format!("checking publication {publication}"),
            message: format!("{}. {}", problem.detail, problem.fix),
        }));
    }
    Ok(status)
}

/// Reloads the tables waiting for it, each from a temporary slot's snapshot, while the
/// task's own slot stays where it is.
async fn reload_alone(
    pg: &PgEndpoint,
    storage: &Storage,
    checkpoint: &Arc<Checkpoint>,
    task: &TaskConfig,
    events: &Events,
    stop: &watch::Receiver<Option<TaskCommand>>,
) -> Result<TaskSummary, TaskError> {
    let (slot, publication) = (task.slot_name(), task.publication_name());
    // A temporary slot's snapshot: its consistent point says exactly which changes it
    // holds, while the task's own slot stays where it is.
    // Named per process: a killed run's slot may outlive it for a moment.
    let temporary = format!(
        "{}_reload_{}",
        &slot[..slot.len().min(44)],
        std::process::id()
    );
    let (holder, snapshot) = pg
        .create_slot_with_snapshot(&temporary, &publication, true)
        .await?;
    let source = Arc::new(PostgresSource::new(pg.clone()).with_slot_snapshot(snapshot));
    let mark = |p: &str| parse_lsn(p).map(|lsn| ChangePosition::postgres(lsn, 0));
    let reloaded = reload::run(source, mark, storage, checkpoint, task, events, stop).await;
    drop(holder);
    reloaded
}

/// What is wrong when the task's (existing) publication leaves out tables the task selects.
struct Unpublished {
    detail: String,
    fix: String,
}

async fn unpublished_tables(
    pg: &PgEndpoint,
    task: &TaskConfig,
) -> Result<Option<Unpublished>, SourceError> {
    let publication = task.publication_name();
    let rules = crate::source::SelectionRules::new(&task.include, &task.exclude);
    let selected: Vec<TableId> = PostgresSource::new(pg.clone())
        .discover(&rules)
        .await?
        .iter()
        .map(TableInfo::id)
        .collect();
    let missing: Vec<String> = pg
        .unpublished(&publication, &selected)
        .await?
        .iter()
        .map(crate::source::postgres::sql_table_name)
        .collect();
    Ok((!missing.is_empty()).then(|| Unpublished {
        detail: format!(
            "publication {publication} does not publish {}, which task '{}' selects: their changes would never reach the task",
            missing.join(", "),
            task.name
        ),
        fix: format!(
            "Run ALTER PUBLICATION {publication} ADD TABLE {} (or drop it and let the task create one FOR ALL TABLES), or exclude them",
            missing.join(", ")
        ),
    }))
}

/// A CDC task's slot and publication on its source (`tributary check`).
pub(super) async fn slot_check(pg: &PgEndpoint, task: &TaskConfig) -> CheckResult {
    let name = format!("task {}", task.name);
    let (slot, publication) = (task.slot_name(), task.publication_name());
    let status = match pg.slot_status(&slot).await {
        Ok(s) => s,
        Err(e) => return CheckResult::fail_from(&name, &e),
    };
    let publication_exists = match pg.publication_exists(&publication).await {
        Ok(p) => p,
        Err(e) => return CheckResult::fail_from(&name, &e),
    };
    if publication_exists {
        match unpublished_tables(pg, task).await {
            Ok(None) => {}
            Ok(Some(problem)) => {
                return CheckResult {
                    name,
                    status: CheckStatus::Fail,
                    detail: problem.detail,
                    fix: Some(problem.fix),
                };
            }
            Err(e) => return CheckResult::fail_from(&name, &e),
        }
    }
    let publication_text = if publication_exists {
        format!("publication {publication} exists")
    } else {
        format!("publication {publication} is created on the first run")
    };
    match status {
        None => CheckResult::pass(
            &name,
            format!("slot {slot} is created on the first run; {publication_text}"),
        ),
        Some(s)
            if s.plugin.as_deref() != Some("pgoutput")
                || s.database.as_deref() != Some(pg.database.as_str()) =>
        {
            CheckResult {
                name,
                status: CheckStatus::Fail,
                detail: format!(
                    "slot {slot} exists but is not a pgoutput slot of database {} (plugin {:?}, database {:?})",
                    pg.database, s.plugin, s.database
                ),
                fix: Some(format!(
                    "set cdc_settings.slot_name to another name, or drop it: SELECT pg_drop_replication_slot('{slot}')"
                )),
            }
        }
        Some(s) => CheckResult::pass(
            &name,
            format!(
                "slot {slot} exists ({}, {} MB of WAL held); {publication_text}",
                if s.active { "streaming" } else { "idle" },
                s.retained_bytes / 1_048_576
            ),
        ),
    }
}
