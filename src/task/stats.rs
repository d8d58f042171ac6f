//! Table statistics, as in DMS's table statistics view.

use serde::{Deserialize, Serialize};

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

    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.schema, self.table)
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
    /// Source position of the full load's snapshot.
    pub snapshot_position: Option<String>,
}

impl TaskSummary {
    /// DMS-like table statistics, one line per table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<40} {:<16} {:>12} {:>12} {:>6} {:>9}\n",
            "table", "state", "rows", "bytes", "files", "seconds"
        );
        for t in &self.tables {
            out.push_str(&format!(
                "{:<40} {:<16} {:>12} {:>12} {:>6} {:>9.1}\n",
                t.qualified_name(),
                t.state.to_string(),
                t.full_load_rows,
                t.bytes,
                t.files,
                t.seconds
            ));
        }
        let rows: u64 = self.tables.iter().map(|t| t.full_load_rows).sum();
        let bytes: u64 = self.tables.iter().map(|t| t.bytes).sum();
        let files: u64 = self.tables.iter().map(|t| t.files).sum();
        out.push_str(&format!(
            "{:<40} {:<16} {:>12} {:>12} {:>6} {:>9.1}\n",
            "total", "", rows, bytes, files, self.seconds
        ));
        out
    }
}
