//! Table statistics, as in DMS's table statistics view, and a CDC run's live figures.

use serde::{Deserialize, Serialize};

use crate::source::SourcePosition;

/// A table's state in a task, with DMS's wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TableState {
    BeforeLoad,
    FullLoad,
    TableCompleted,
    TableError,
}

impl std::fmt::Display for TableState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TableState::BeforeLoad => "Before load",
            TableState::FullLoad => "Full load",
            TableState::TableCompleted => "Table completed",
            TableState::TableError => "Table error",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableStats {
    pub schema: String,
    pub table: String,
    pub state: TableState,
    pub full_load_rows: u64,
    /// From the source's statistics; 0 when unknown.
    pub estimated_rows: u64,
    pub bytes: u64,
    pub files: u64,
    pub seconds: f64,
    pub inserts: u64,
    pub updates: u64,
    pub deletes: u64,
    pub ddls: u64,
    pub last_error: Option<String>,
}

impl TableStats {
    pub fn new(schema: &str, table: &str, estimated_rows: u64) -> Self {
        TableStats {
            schema: schema.into(),
            table: table.into(),
            state: TableState::BeforeLoad,
            full_load_rows: 0,
            estimated_rows,
            bytes: 0,
            files: 0,
            seconds: 0.0,
            inserts: 0,
            updates: 0,
            deletes: 0,
            ddls: 0,
            last_error: None,
        }
    }

    pub fn id(&self) -> crate::ident::TableId {
        crate::ident::TableId::new(&self.schema, &self.table)
    }

    /// `schema.table` for people (parts quoted where they need it).
    pub fn qualified_name(&self) -> String {
        self.id().to_string()
    }
}

/// The end of a task run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskSummary {
    pub task: String,
    pub tables: Vec<TableStats>,
    pub seconds: f64,
    /// Where the loaded files are, e.g. `/var/lib/lake/raw/shop` or `s3://bucket/raw/shop`.
    pub location: String,
    /// Where the full load's snapshot stands in the source's log.
    pub snapshot_position: Option<SourcePosition>,
}

impl TaskSummary {
    /// DMS-like table statistics, one line per table: full-load rows, then the changes
    /// captured (inserts, updates, deletes, DDLs), bytes, files and seconds.
    pub fn table(&self) -> String {
        let line = |name: &str, state: &str, n: [u64; 7], seconds: f64| {
            format!(
                "{name:<36} {state:<16} {:>11} {:>9} {:>9} {:>9} {:>5} {:>12} {:>6} {seconds:>8.1}\n",
                n[0], n[1], n[2], n[3], n[4], n[5], n[6]
            )
        };
        let mut out = format!(
            "{:<36} {:<16} {:>11} {:>9} {:>9} {:>9} {:>5} {:>12} {:>6} {:>8}\n",
            "table",
            "state",
            "load rows",
            "inserts",
            "updates",
            "deletes",
            "ddls",
            "bytes",
            "files",
            "seconds"
        );
        let mut total = [0u64; 7];
        for t in &self.tables {
            let n = [
                t.full_load_rows,
                t.inserts,
                t.updates,
                t.deletes,
                t.ddls,
                t.bytes,
                t.files,
            ];
            for (sum, v) in total.iter_mut().zip(n) {
                *sum += v;
            }
            out.push_str(&line(
                &t.qualified_name(),
                &t.state.to_string(),
                n,
                t.seconds,
            ));
        }
        out.push_str(&line("total", "", total, self.seconds));
        out
    }
}

/// Live figures of a CDC task, for the terminal and the app.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CdcStats {
    /// The end of the last durable batch.
    pub confirmed_position: String,
    /// Source commit to file durable, for the last batch's oldest change (ms).
    pub latency_ms: u64,
    /// Changes per second over the last batch.
    pub changes_per_second: f64,
    /// WAL the slot holds back (bytes).
    pub slot_lag_bytes: i64,
    pub batches: u64,
}

/// How a CDC run ends.
pub struct CdcOutcome {
    pub tables: Vec<TableStats>,
    pub confirmed_position: Option<SourcePosition>,
    /// A schema change asked to load tables again: the run ended for their reload, and
    /// the course streams on after it.
    pub reload: bool,
}
