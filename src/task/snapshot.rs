//! The source read at one exact log position, for `tributary validate`.
//!
//! Invariants:
//! - every table is read from the same snapshot, whose position is exact: a transaction
//!   is in it exactly when its changes' `_position`s are before
//!   [`SourcePosition::snapshot_end`] (PostgreSQL: a temporary slot's consistent point;
//!   MySQL: the binlog position under the snapshot's lock), so the lake's state before
//!   that position is the state to compare with;
//! - the snapshot holds nothing the task needs: a PostgreSQL temporary slot, or MySQL
//!   transactions, all released by [`ExactSnapshot::close`] (or when the process ends);
//! - a table is read in the full load's ranges, on as many connections, into a bounded
//!   channel: memory does not grow with the table.

use std::sync::Arc;

use arrow_array::RecordBatch;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::TaskError;
use crate::config::{EndpointConfig, TaskConfig};
use crate::source::{SelectionRules, Snapshot, Source, SourceError, SourcePosition, TableInfo};

/// The task's tables, read from one snapshot at [`ExactSnapshot::position`].
pub struct ExactSnapshot {
    /// Where the snapshot stands; `None` only for a full-load task on a source that keeps
    /// no change log (its lake is its load, compared with the source as it is now).
    pub position: Option<SourcePosition>,
    /// The tables the task selects, as the source has them now.
    pub tables: Vec<TableInfo>,
    reader: Box<dyn SnapshotReader>,
}

impl ExactSnapshot {
    pub(super) fn new(
        position: Option<SourcePosition>,
        tables: Vec<TableInfo>,
        reader: Box<dyn SnapshotReader>,
    ) -> ExactSnapshot {
        ExactSnapshot {
            position,
            tables,
            reader,
        }
    }

    /// Reads `table` whole from the snapshot into `out`; returns its row count.
    pub async fn read(
        &self,
        table: &TableInfo,
        out: mpsc::Sender<RecordBatch>,
    ) -> Result<u64, SourceError> {
        self.reader.read(table, out).await
    }

    /// How far the source itself has seen the task confirm its stream, where it keeps that
    /// (a PostgreSQL slot's `confirmed_flush_lsn`): every change before it is in the raw
    /// zone, though the task's state says so only at its next batch.
    pub async fn confirmed(&self) -> Result<Option<SourcePosition>, SourceError> {
        self.reader.confirmed().await
    }

    /// Ends the snapshot (its slot or transactions).
    pub async fn close(self) {
        self.reader.close().await;
    }
}

/// An engine's side of [`ExactSnapshot`].
pub(super) trait SnapshotReader: Send + Sync {
    fn read<'a>(
        &'a self,
        table: &'a TableInfo,
        out: mpsc::Sender<RecordBatch>,
    ) -> BoxFuture<'a, Result<u64, SourceError>>;

    fn confirmed(&self) -> BoxFuture<'_, Result<Option<SourcePosition>, SourceError>>;

    fn close(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// Reads a [`Source`]'s tables from its open snapshot, range by range as the full load
/// does.
pub(super) struct RangeReader<S> {
    pub source: Arc<S>,
    pub snapshot: Snapshot,
    pub range_bytes: u64,
    pub readers: usize,
}

impl<S: Source> RangeReader<S> {
    /// Opens `source`'s snapshot (exact where the source is built for it) and lists the
    /// tables `task` selects; returns them with the snapshot's position, which a task with
    /// CDC needs. The snapshot is released on any failure.
    pub async fn open(
        source: S,
        task: &TaskConfig,
        endpoint: &EndpointConfig,
    ) -> Result<(RangeReader<S>, Vec<TableInfo>, Option<SourcePosition>), TaskError> {
        let snapshot = source.open_snapshot().await?;
        if snapshot.position.is_none() && task.has_cdc() {
            source.release_snapshot().await;
            return Err(TaskError::Source(SourceError::Database {
                endpoint: endpoint.name.clone(),
                context: "opening a snapshot to validate against".into(),
                message: "the source keeps no change log (MySQL's binlog is off), so no snapshot has a position to compare the lake at. Turn the binlog on (log_bin, binlog_format = ROW)".into(),
            }));
        }
        let rules = SelectionRules::new(&task.include, &task.exclude);
        let tables = match source.discover(&rules).await {
            Ok(tables) => tables,
            Err(e) => {
                source.release_snapshot().await;
                return Err(e.into());
            }
        };
        let settings = &task.full_load_settings;
        let reader = RangeReader {
            source: Arc::new(source),
            snapshot,
            range_bytes: settings.parallel_load_range_mb.max(1) * 1024 * 1024,
            readers: settings.max_full_load_sub_tasks.max(1),
        };
        let position = reader.snapshot.position.clone();
        Ok((reader, tables, position))
    }

    pub async fn read_table(
        &self,
        table: &TableInfo,
        out: mpsc::Sender<RecordBatch>,
    ) -> Result<u64, SourceError> {
        let ranges = self.source.plan_ranges(table, self.range_bytes);
        // Each range on a task of its own, as the full load reads them: decoding uses
        // every core.
        let mut reading = tokio::task::JoinSet::new();
        let mut rows = 0;
        for range in ranges {
            if reading.len() >= self.readers
                && let Some(read) = reading.join_next().await
            {
                rows += joined(read)?;
            }
            let (source, table, snapshot, out) = (
                self.source.clone(),
                table.clone(),
                self.snapshot.clone(),
                out.clone(),
            );
            reading.spawn(async move {
                source
                    .read_range(&table, &range, Some(&snapshot), out)
                    .await
            });
        }
        while let Some(read) = reading.join_next().await {
            rows += joined(read)?;
        }
        Ok(rows)
    }

    pub async fn release(&self) {
        self.source.release_snapshot().await;
    }
}

/// A range read's rows, or its error; a read that panicked is an error too.
fn joined(
    read: Result<Result<u64, SourceError>, tokio::task::JoinError>,
) -> Result<u64, SourceError> {
    read.unwrap_or_else(|e| {
        Err(SourceError::Driver {
            endpoint: "(validate)".into(),
            context: "reading a range of the snapshot (the read failed inside the engine)".into(),
            source: Box::new(e),
        })
    })
}
