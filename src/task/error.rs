//! A task's errors: each says what went wrong and, where there is one, the fix.

use crate::config::{ConfigError, Engine};
use crate::lake::StorageError;
use crate::lake::format::FormatError;
use crate::source::SourceError;
use crate::task::checkpoint::CheckpointError;

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("task '{task}': {count} table(s) failed: {details}")]
    TablesFailed {
        task: String,
        count: usize,
        details: String,
    },
    #[error("task '{task}' was stopped before it finished; run it again to resume")]
    Stopped { task: String },
    #[error("task '{task}': engine {engine:?} is not supported as a source yet")]
    UnsupportedSource { task: String, engine: Engine },
    #[error(
        "task '{task}': replication slot {slot} is gone, so changes since the last run are lost to CDC. Run the task with --reload to load every table again and create a new slot"
    )]
    SlotLost { task: String, slot: String },
    #[error(
        "task '{task}': replication slot {slot} is in use by another run of this task (the app, a service, a cron job). Stop that run first"
    )]
    SlotBusy { task: String, slot: String },
    #[error(
        "task '{task}': replication slot {slot} belongs to {owner}, not to a pgoutput stream of database {database}: a cluster's slot names are shared by all its databases, and this slot is another's. Set cdc_settings.slot_name to a name of its own"
    )]
    ForeignSlot {
        task: String,
        slot: String,
        database: String,
        owner: String,
    },
    #[error(
        "task '{task}': table {table} changed its columns at {position} ({change}), and schema_change_policy = \"stop\" stops the task there. Load the table again (tributary run … --reload-table '{table}'), whose new load holds the change, or set schema_change_policy = \"apply\" in the task's [tasks.cdc_settings]"
    )]
    SchemaChangeStopped {
        task: String,
        table: String,
        position: String,
        change: String,
    },
    #[error("task '{task}' failed inside the engine: {source}")]
    Panicked {
        task: String,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("task '{task}' failed inside the engine: {message}")]
    Internal { task: String, message: String },
    #[error(
        "task '{task}' does not select table {table} (check its include and exclude rules), so it cannot reload it"
    )]
    NotSelected { task: String, table: String },
    #[error(
        "task '{task}' captures changes only: it has no full load to redo for one table. Use migration_type = \"full-load-and-cdc\" to load tables and then capture their changes"
    )]
    ReloadTableWithoutLoad { task: String },
}
