//! The full-load runner: every selected table, in ranges, from one snapshot, into the raw
//! zone, resumable.
//!
//! Each range runs as a job: the source decodes it into Arrow batches on the runtime while a
//! blocking thread encodes them into files (two stages, so reading and encoding overlap).
//! Files are moved into place as they close and numbered per table; a range counts as done
//! only once the checkpoint lists its files. If a range fails, its files are deleted; if the
//! process dies, the next run deletes the files no checkpoint lists (see `checkpoint`).
//!
//! Memory: each running range holds at most one batch in the channel, one in the decoder,
//! and one Parquet row group in the writer; row groups are cut at a share of
//! [`MEMORY_BUDGET`] so that `max_full_load_sub_tasks` ranges together stay within it.

use std::sync::Arc;
use std::sync::Mutex as StdMutex;
use std::time::Instant;

use arrow_array::RecordBatch;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;

use super::checkpoint::{Checkpoint, FileRecord, LoadStatus, TableLoadState, TaskState};
use super::stats::{TableState, TableStats, TaskSummary};
use super::{Events, LogLevel, RunOptions, TaskCommand, TaskError, TaskEvent};
use crate::config::TaskConfig;
use crate::ident::TableId;
use crate::lake::format::{RollingWriter, WriterOptions};
use crate::lake::{Storage, layout};
use crate::source::{SelectionRules, Snapshot, Source, TableInfo, TableRange};

/// Memory the row groups of all running ranges may hold together.
const MEMORY_BUDGET: usize = 384 * 1024 * 1024;

/// A table being loaded: shared by its range jobs.
struct TableJob {
    info: TableInfo,
    key: TableId,
    prefix: String,
    next_file_number: StdMutex<u32>,
    stats: StdMutex<TableStats>,
    started: StdMutex<Option<Instant>>,
}

impl TableJob {
    fn update_stats(&self, events: &Events, change: impl FnOnce(&mut TableStats)) {
        let snapshot = {
            let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
            change(&mut stats);
            if let Some(started) = *self.started.lock().unwrap_or_else(|p| p.into_inner()) {
                stats.seconds = started.elapsed().as_secs_f64();
            }
            stats.clone()
        };
        events.send(TaskEvent::Table(snapshot));
    }

    fn stats(&self) -> TableStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Refuses the first of `requested` that is not among `selected`.
pub(super) fn require_selected(
    task: &TaskConfig,
    requested: &[TableId],
    selected: &[TableInfo],
) -> Result<(), TaskError> {
    match requested.iter().find(|t| {
        !selected
            .iter()
            .any(|i| i.schema == t.schema && i.name == t.table)
    }) {
        Some(table) => Err(TaskError::NotSelected {
            task: task.name.clone(),
            table: table.to_string(),
        }),
        None => Ok(()),
    }
}

pub(super) async fn run<S: Source>(
    source: Arc<S>,
    storage: Storage,
    checkpoint: Arc<Checkpoint>,
    task: TaskConfig,
    options: RunOptions,
    events: Events,
    mut stop: watch::Receiver<Option<TaskCommand>>,
) -> Result<TaskSummary, TaskError> {
    let started = Instant::now();
    let settings = &task.target_settings;
    let rules = SelectionRules::new(&task.include, &task.exclude);
    let mut tables = source.discover(&rules).await?;
    checkpoint.record_primary_keys(&tables).await?;
    // A table waiting to be reloaded from its own snapshot ([`super::reload`]) loads only
    // in that reload.
    let waiting = checkpoint.snapshot().await.reloading;
    tables.retain(|t| {
        let id = t.id();
        !waiting.contains(&id) || options.reload_tables.contains(&id)
    });
    for warning in tables.iter().flat_map(TableInfo::warnings) {
        events.log(LogLevel::Warn, warning);
    }
    let location = storage.uri(&layout::source_prefix(
        &settings.bucket_folder,
        source.endpoint(),
    ));
    let location = location.trim_end_matches('/').to_owned();

    forget_for_reload(
        source.endpoint(),
        &storage,
        &checkpoint,
        &task,
        &options,
        &tables,
        &events,
    )
    .await?;
    let state = checkpoint.snapshot().await;
    if let Some(done) = state.full_load_completed_at {
        events.log(
            LogLevel::Info,
            format!("full load already completed at {done}; nothing to do (run with --reload to load again)"),
        );
        let tables = tables
            .iter()
            .filter_map(|t| state.tables.get(&t.id()))
            .map(completed_stats)
            .collect();
        return Ok(TaskSummary {
            task: task.name,
            tables,
            seconds: started.elapsed().as_secs_f64(),
            location,
            snapshot_position: state.snapshot_position,
        });
    }
    storage.clean_spool(&task.name);

    let Planned {
        mut jobs,
        finished,
        new_states,
    } = plan_tables(&*source, &storage, &task, &state, tables, &events).await?;

    let snapshot = source.open_snapshot().await?;
    checkpoint
        .update(|s| {
            for (key, mut table) in new_states {
                table.snapshot_position = snapshot.position.clone();
                s.tables.insert(key, table);
            }
            // A resumed load reads its remaining ranges from a new, later snapshot. The first
            // snapshot's position stays the one recorded: changes after it may be missing
            // from the ranges loaded before the interruption, so CDC must start there.
            // Replaying them over rows read later is harmless, since every change is a full
            // image applied by key in position order.
            if s.snapshot_position.is_none() {
                s.snapshot_position = snapshot.position.clone();
            }
            s.full_load_started_at.get_or_insert_with(chrono::Utc::now);
        })
        .await?;
    let resumed: usize = state
        .tables
        .values()
        .map(|t| t.ranges.iter().filter(|r| r.done).count())
        .sum();
    if resumed > 0 {
        let total: usize = state.tables.values().map(|t| t.ranges.len()).sum();
        events.log(
            LogLevel::Info,
            format!("resuming an interrupted full load: {resumed} of {total} range(s) already loaded are kept"),
        );
    }
    events.log(
        LogLevel::Info,
        format!(
            "full load of {} table(s) from snapshot at position {} into {location}",
            jobs.len() + finished.len(),
            snapshot.describe_position()
        ),
    );
    events.send(TaskEvent::Planned {
        tables: finished
            .iter()
            .cloned()
            .chain(jobs.iter().map(|(j, _)| j.stats()))
            .collect(),
    });

    // Largest tables first, so that the last range to finish is a small one.
    jobs.sort_by_key(|(j, _)| std::cmp::Reverse(j.info.size_bytes));
    let loading = Loading {
        task: &task,
        source: source.clone(),
        storage: &storage,
        checkpoint: &checkpoint,
        events: &events,
    };
    let failures = match loading.load(&jobs, snapshot, &mut stop).await {
        Ok(failures) => failures,
        Err(stopped) => {
            events.log(
                LogLevel::Warn,
                "stopped; finished ranges are kept and the next run resumes",
            );
            return Err(stopped);
        }
    };
    if !failures.is_empty() {
        return Err(TaskError::TablesFailed {
            task: task.name,
            count: failures.len(),
            details: failures
                .iter()
                .map(|(t, m)| format!("{t}: {m}"))
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    let state = checkpoint
        .update(|s| {
            s.full_load_completed_at = Some(chrono::Utc::now());
            s.clone()
        })
        .await?;
    let mut tables = finished;
    tables.extend(jobs.iter().map(|(j, _)| j.stats()));
    tables.sort_by_key(TableStats::qualified_name);
    Ok(TaskSummary {
        task: task.name,
        tables,
        seconds: started.elapsed().as_secs_f64(),
        location,
        snapshot_position: state.snapshot_position,
    })
}

/// The tables of a run, as [`plan_tables`] found them.
struct Planned {
    /// Tables with ranges to load (none: every range was done, the table is marked).
    jobs: Vec<(Arc<TableJob>, Vec<TableRange>)>,
    /// Tables loaded before, which stay.
    finished: Vec<TableStats>,
    /// The states of tables planned afresh, recorded with the snapshot.
    new_states: Vec<(TableId, TableLoadState)>,
}

/// Plans each table ([`plan_table`]): finished tables stay, unfinished ones lose the files
/// their state does not list, new ones lose any load files and get ranges.
async fn plan_tables<S: Source>(
    source: &S,
    storage: &Storage,
    task: &TaskConfig,
    state: &TaskState,
    tables: Vec<TableInfo>,
    events: &Events,
) -> Result<Planned, TaskError> {
    let settings = &task.target_settings;
    let range_bytes = task.full_load_settings.parallel_load_range_mb.max(1) * 1024 * 1024;
    let mut jobs: Vec<(Arc<TableJob>, Vec<TableRange>)> = Vec::new();
    let mut finished: Vec<TableStats> = Vec::new();
    let mut new_states = Vec::new();
    for info in tables {
        let key = info.id();
        let prefix = layout::table_prefix(&settings.bucket_folder, source.endpoint(), &key);
        let mut stats = TableStats::new(&info.schema, &info.name, info.estimated_rows);
        let (pending, next_file_number) = match plan_table(state.tables.get(&key)) {
            TablePlan::Done(s) => {
                finished.push(completed_stats(s));
                continue;
            }
            TablePlan::Resume {
                state: s,
                pending,
                next_file_number,
            } => {
                let listed: std::collections::HashSet<&str> =
                    s.files().map(|f| f.key.as_str()).collect();
                let removed = delete_load_files(storage, &prefix, |k| !listed.contains(k)).await?;
                if removed > 0 {
                    events.log(
                        LogLevel::Info,
                        format!("{key}: removed {removed} file(s) of an interrupted range; it loads again"),
                    );
                }
                stats.full_load_rows = s.rows();
                stats.files = s.files().count() as u64;
                stats.bytes = s.files().map(|f| f.bytes).sum();
                (pending, next_file_number)
            }
            TablePlan::New => {
                // Files from a load this state does not know (e.g. after its state was moved
                // away) would be duplicates: remove them.
                delete_load_files(storage, &prefix, |_| true).await?;
                let ranges = source.plan_ranges(&info, range_bytes);
                let mut state = TableLoadState::new(&info.schema, &info.name, ranges.clone());
                state.columns = info.columns.iter().map(|c| c.name.clone()).collect();
                state.identity = info.identity.clone();
                new_states.push((key.clone(), state));
                (ranges, 1)
            }
        };
        stats.state = TableState::BeforeLoad;
        jobs.push((
            Arc::new(TableJob {
                info,
                key,
                prefix,
                next_file_number: StdMutex::new(next_file_number),
                stats: StdMutex::new(stats),
                started: StdMutex::new(None),
            }),
            pending,
        ));
    }

    Ok(Planned {
        jobs,
        finished,
        new_states,
    })
}

/// `--reload` forgets the whole load and deletes its files; `--reload-table` forgets those
/// tables (the plan then deletes their files before they load again, so a crash in between
/// loses nothing).
async fn forget_for_reload(
    endpoint: &str,
    storage: &Storage,
    checkpoint: &Checkpoint,
    task: &TaskConfig,
    options: &RunOptions,
    tables: &[TableInfo],
    events: &Events,
) -> Result<(), TaskError> {
    let settings = &task.target_settings;
    if options.reload {
        let state = checkpoint.snapshot().await;
        for table in state.tables.keys() {
            let prefix = layout::table_prefix(&settings.bucket_folder, endpoint, table);
            delete_load_files(storage, &prefix, |_| true).await?;
        }
        checkpoint.reset().await?;
        events.log(LogLevel::Info, "reload: previous full-load files deleted");
    }
    if !options.reload_tables.is_empty() {
        require_selected(task, &options.reload_tables, tables)?;
        // Forgetting a table's state is enough: the plan below deletes the files of a table
        // it knows nothing of before loading it, so a crash in between loses nothing.
        checkpoint
            .update(|s| {
                for t in &options.reload_tables {
                    s.tables.remove(t);
                }
                s.full_load_completed_at = None;
            })
            .await?;
        events.log(
            LogLevel::Info,
            format!("reloading {}", crate::ident::list(&options.reload_tables)),
        );
    }
    Ok(())
}

/// What a table's full load needs in this run, from its state alone.
#[derive(Debug)]
enum TablePlan<'a> {
    /// Loaded: it stays.
    Done(&'a TableLoadState),
    /// Interrupted: the ranges not done load again (their files unlisted in `state` are
    /// removed first), numbering files from `next_file_number`.
    Resume {
        state: &'a TableLoadState,
        pending: Vec<TableRange>,
        next_file_number: u32,
    },
    /// Not known: planned afresh (any load files already there are removed first).
    New,
}

fn plan_table(state: Option<&TableLoadState>) -> TablePlan<'_> {
    match state {
        Some(s) if s.status == LoadStatus::Completed => TablePlan::Done(s),
        Some(s) => TablePlan::Resume {
            state: s,
            pending: s
                .ranges
                .iter()
                .filter(|r| !r.done)
                .map(|r| r.range.clone())
                .collect(),
            next_file_number: s.first_free_number(),
        },
        None => TablePlan::New,
    }
}

/// How range files are written: row groups cut at a share of [`MEMORY_BUDGET`], so that
/// `sub_tasks` ranges together stay within it.
fn writer_options(settings: &crate::config::TargetSettings, sub_tasks: usize) -> WriterOptions {
    let row_group_bytes =
        (MEMORY_BUDGET / sub_tasks.max(1)).clamp(8 << 20, crate::lake::format::ROW_GROUP_BYTES);
    WriterOptions {
        format: settings.data_format,
        compression: settings.compression,
        max_file_bytes: settings.max_file_size.saturating_mul(1024),
        op: settings.include_op_for_full_load.then_some("I"),
        timestamp_column: Some(settings.timestamp_column_name.clone()).filter(|s| !s.is_empty()),
        row_group_bytes,
    }
}

/// The range jobs of one full load.
struct Loading<'a, S> {
    task: &'a TaskConfig,
    source: Arc<S>,
    storage: &'a Storage,
    checkpoint: &'a Arc<Checkpoint>,
    events: &'a Events,
}

impl<S: Source> Loading<'_, S> {
    /// Loads every pending range of `jobs` from `snapshot`, `max_full_load_sub_tasks` at a
    /// time, and releases the snapshot. Returns the tables that failed, with why; a stop
    /// aborts the ranges (finished ones stay) and is the error.
    async fn load(
        &self,
        jobs: &[(Arc<TableJob>, Vec<TableRange>)],
        snapshot: Snapshot,
        stop: &mut watch::Receiver<Option<TaskCommand>>,
    ) -> Result<Vec<(String, String)>, TaskError> {
        let sub_tasks = self.task.full_load_settings.max_full_load_sub_tasks.max(1);
        let writer_options = writer_options(&self.task.target_settings, sub_tasks);
        let snapshot = Arc::new(snapshot);
        let semaphore = Arc::new(Semaphore::new(sub_tasks));
        let mut running = JoinSet::new();
        for (table, ranges) in jobs {
            if ranges.is_empty() {
                // Every range was done but the table was not marked: mark it now.
                running.spawn(complete_if_done(
                    table.clone(),
                    self.checkpoint.clone(),
                    self.events.clone(),
                ));
            }
            for range in ranges {
                let job = RangeJob {
                    task: self.task.name.clone(),
                    source: self.source.clone(),
                    table: table.clone(),
                    range: range.clone(),
                    snapshot: snapshot.clone(),
                    storage: self.storage.clone(),
                    writer_options: writer_options.clone(),
                    checkpoint: self.checkpoint.clone(),
                    events: self.events.clone(),
                };
                let semaphore = semaphore.clone();
                running.spawn(async move {
                    let _permit = semaphore.acquire_owned().await;
                    job.run().await
                });
            }
        }
        let mut failures: Vec<(String, String)> = Vec::new();
        loop {
            tokio::select! {
                next = running.join_next() => match next {
                    None => break,
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err((table, message)))) => {
                        if !failures.iter().any(|(t, _)| *t == table) {
                            failures.push((table, message));
                        }
                    }
                    Some(Err(e)) => failures.push(("(engine)".into(), e.to_string())),
                },
                changed = stop.changed() => {
                    if changed.is_ok() && *stop.borrow() == Some(TaskCommand::Stop) {
                        running.abort_all();
                        while running.join_next().await.is_some() {}
                        self.source.release_snapshot().await;
                        return Err(TaskError::Stopped { task: self.task.name.clone() });
                    }
                }
            }
        }
        self.source.release_snapshot().await;
        Ok(failures)
    }
}

fn completed_stats(s: &TableLoadState) -> TableStats {
    let mut stats = TableStats::new(&s.schema, &s.table, s.rows());
    stats.state = TableState::TableCompleted;
    stats.full_load_rows = s.rows();
    stats.files = s.files().count() as u64;
    stats.bytes = s.files().map(|f| f.bytes).sum();
    stats.seconds = s.ranges.iter().map(|r| r.seconds).sum();
    stats
}

/// Deletes the full-load files under `prefix` for which `doomed` holds; returns how many.
async fn delete_load_files(
    storage: &Storage,
    prefix: &str,
    doomed: impl Fn(&str) -> bool,
) -> Result<usize, TaskError> {
    let mut removed = 0;
    for object in storage.list_all(prefix).await? {
        let name = object.key.rsplit('/').next().unwrap_or("");
        // Only this table's own full-load files: not CDC files, not sub-folders' files.
        let direct =
            layout::is_inside(prefix, &object.key) && !object.key[prefix.len()..].contains('/');
        if direct && layout::parse_load_number(name).is_some() && doomed(&object.key) {
            storage.delete(&object.key).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Marks a table completed when all its ranges are done (after a resume found them so).
async fn complete_if_done(
    table: Arc<TableJob>,
    checkpoint: Arc<Checkpoint>,
    events: Events,
) -> Result<(), (String, String)> {
    let key = table.key.clone();
    checkpoint
        .update(|s| {
            if let Some(t) = s.tables.get_mut(&key)
                && t.ranges.iter().all(|r| r.done)
            {
                t.status = LoadStatus::Completed;
            }
        })
        .await
        .map_err(|e| (key.to_string(), e.to_string()))?;
    table.update_stats(&events, |s| s.state = TableState::TableCompleted);
    Ok(())
}

struct RangeJob<S> {
    task: String,
    source: Arc<S>,
    table: Arc<TableJob>,
    range: TableRange,
    snapshot: Arc<Snapshot>,
    storage: Storage,
    writer_options: WriterOptions,
    checkpoint: Arc<Checkpoint>,
    events: Events,
}

impl<S: Source> RangeJob<S> {
    /// Loads the range; on failure returns the table's name and what went wrong.
    async fn run(self) -> Result<(), (String, String)> {
        let started = Instant::now();
        let table = self.table.clone();
        {
            let mut first = table.started.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert(started);
        }
        table.update_stats(&self.events, |s| s.state = TableState::FullLoad);
        let put_files = Arc::new(StdMutex::new(Vec::<FileRecord>::new()));
        let result = self.load(put_files.clone()).await;
        let files = std::mem::take(&mut *put_files.lock().unwrap_or_else(|p| p.into_inner()));
        match result {
            Ok(rows) => {
                let key = table.key.clone();
                let index = self.range.index;
                let seconds = started.elapsed().as_secs_f64();
                let completed = self
                    .checkpoint
                    .update(|s| {
                        let Some(t) = s.tables.get_mut(&key) else {
                            return false;
                        };
                        if let Some(r) = t.ranges.iter_mut().find(|r| r.range.index == index) {
                            r.done = true;
                            r.rows = rows;
                            r.files = files;
                            r.seconds = seconds;
                        }
                        t.status = if t.ranges.iter().all(|r| r.done) {
                            LoadStatus::Completed
                        } else {
                            LoadStatus::Loading
                        };
                        t.next_file_number = t.first_free_number();
                        t.status == LoadStatus::Completed
                    })
                    .await
                    .map_err(|e| (key.to_string(), e.to_string()))?;
                if completed {
                    table.update_stats(&self.events, |s| s.state = TableState::TableCompleted);
                    let stats = table.stats();
                    self.events.log(
                        LogLevel::Info,
                        format!(
                            "{key}: completed, {} rows in {} file(s)",
                            stats.full_load_rows, stats.files
                        ),
                    );
                }
                Ok(())
            }
            Err(message) => {
                // Leave nothing that looks like a finished load of this range.
                for f in &files {
                    let _ = self.storage.delete(&f.key).await;
                }
                let undo_rows: u64 = files.iter().map(|f| f.rows).sum();
                let undo_bytes: u64 = files.iter().map(|f| f.bytes).sum();
                table.update_stats(&self.events, |s| {
                    s.state = TableState::TableError;
                    s.last_error = Some(message.clone());
                    s.full_load_rows = s.full_load_rows.saturating_sub(undo_rows);
                    s.bytes = s.bytes.saturating_sub(undo_bytes);
                    s.files = s.files.saturating_sub(files.len() as u64);
                });
                let key = table.key.clone();
                let _ = self
                    .checkpoint
                    .update(|s| {
                        if let Some(t) = s.tables.get_mut(&key) {
                            t.status = LoadStatus::Error;
                            t.last_error = Some(message.clone());
                        }
                    })
                    .await;
                self.events
                    .log(LogLevel::Error, format!("{key}: {message}"));
                Err((key.to_string(), message))
            }
        }
    }

    /// Reads and writes the range; every file put is recorded in `put_files`.
    async fn load(&self, put_files: Arc<StdMutex<Vec<FileRecord>>>) -> Result<u64, String> {
        let spool = self.storage.spool_dir().map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel::<RecordBatch>(1);
        let (read_ok_tx, read_ok_rx) = oneshot::channel::<bool>();
        let writer = RollingWriter::new(
            self.writer_options.clone(),
            &self.table.info.arrow_schema,
            spool,
            format!("{}-load-r{}", self.task, self.range.index),
        );
        let sink = FileSink {
            storage: self.storage.clone(),
            table: self.table.clone(),
            extension: self.writer_options.extension(),
            runtime: tokio::runtime::Handle::current(),
            events: self.events.clone(),
            put_files,
        };
        let writing = tokio::task::spawn_blocking(move || sink.write_all(writer, rx, read_ok_rx));
        let read = self
            .source
            .read_range(&self.table.info, &self.range, Some(&self.snapshot), tx)
            .await;
        let _ = read_ok_tx.send(read.is_ok());
        let written = writing
            .await
            .map_err(|e| format!("writer thread failed: {e}"))?;
        // A writer error explains a short read, so report it first.
        let rows = written?;
        let read_rows = read.map_err(|e| e.to_string())?;
        if read_rows != rows {
            return Err(format!("read {read_rows} rows but wrote {rows}"));
        }
        Ok(rows)
    }
}

/// The writing stage of a range: encodes batches and moves closed files into place.
struct FileSink {
    storage: Storage,
    table: Arc<TableJob>,
    extension: String,
    runtime: tokio::runtime::Handle,
    events: Events,
    put_files: Arc<StdMutex<Vec<FileRecord>>>,
}

impl FileSink {
    fn write_all(
        self,
        mut writer: RollingWriter,
        mut rx: mpsc::Receiver<RecordBatch>,
        read_ok: oneshot::Receiver<bool>,
    ) -> Result<u64, String> {
        let mut rows = 0u64;
        while let Some(batch) = rx.blocking_recv() {
            let n = batch.num_rows() as u64;
            if let Some(file) = writer.write(&batch).map_err(|e| e.to_string())? {
                self.put(file)?;
            }
            rows += n;
            self.table
                .update_stats(&self.events, |s| s.full_load_rows += n);
        }
        // The last file is finished only if the whole range was read.
        if read_ok.blocking_recv() == Ok(true) {
            if let Some(file) = writer.close().map_err(|e| e.to_string())? {
                self.put(file)?;
            }
        } else {
            writer.abandon();
        }
        Ok(rows)
    }

    fn put(&self, file: crate::lake::format::FinishedFile) -> Result<(), String> {
        let number = {
            let mut next = self
                .table
                .next_file_number
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let n = *next;
            *next += 1;
            n
        };
        let key = format!(
            "{}{}",
            self.table.prefix,
            layout::load_file_name(number, &self.extension)
        );
        self.runtime
            .block_on(self.storage.put_file(&file.path, &key))
            .map_err(|e| e.to_string())?;
        self.put_files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(FileRecord {
                key,
                rows: file.rows,
                bytes: file.bytes,
            });
        self.table.update_stats(&self.events, |s| {
            s.files += 1;
            s.bytes += file.bytes;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::checkpoint::RangeState;

    fn state(done: &[bool]) -> TableLoadState {
        let ranges = (0..done.len() as u32)
            .map(|index| TableRange {
                index,
                start: None,
                end: None,
            })
            .collect();
        let mut s = TableLoadState::new("public", "t", ranges);
        for (r, &d) in s.ranges.iter_mut().zip(done) {
            *r = RangeState {
                done: d,
                files: d
                    .then(|| FileRecord {
                        key: format!("raw/s/public/t/LOAD{:08X}.parquet", r.range.index + 1),
                        rows: 1,
                        bytes: 1,
                    })
                    .into_iter()
                    .collect(),
                ..r.clone()
            };
        }
        s
    }

    #[test]
    fn a_table_loads_afresh_resumes_its_pending_ranges_or_stays() {
        assert!(matches!(plan_table(None), TablePlan::New));
        let mut done = state(&[true, true]);
        done.status = LoadStatus::Completed;
        assert!(matches!(plan_table(Some(&done)), TablePlan::Done(_)));
        let interrupted = state(&[true, false, true, false]);
        match plan_table(Some(&interrupted)) {
            TablePlan::Resume {
                pending,
                next_file_number,
                ..
            } => {
                let pending: Vec<u32> = pending.iter().map(|r| r.index).collect();
                assert_eq!(pending, [1, 3]);
                assert_eq!(
                    next_file_number, 4,
                    "after the highest file a done range holds"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn row_groups_share_the_memory_budget() {
        let settings = crate::config::TargetSettings::default();
        assert_eq!(
            writer_options(&settings, 1).row_group_bytes,
            ROW_GROUP_LIMIT
        );
        assert_eq!(
            writer_options(&settings, 8).row_group_bytes,
            MEMORY_BUDGET / 8
        );
        assert_eq!(writer_options(&settings, 1000).row_group_bytes, 8 << 20);
        assert_eq!(
            writer_options(&settings, 1).max_file_bytes,
            settings.max_file_size * 1024
        );
    }

    const ROW_GROUP_LIMIT: usize = crate::lake::format::ROW_GROUP_BYTES;
}
