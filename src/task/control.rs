//! What passes between a task and its caller: commands in ([`TaskCommand`]), events out
//! ([`TaskEvent`], sent through [`Events`]), and the options of one run ([`RunOptions`]).

use tokio::sync::mpsc;

use crate::ident::TableId;
use crate::task::stats::{CdcStats, TableStats};

/// What a caller can ask of a running task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskCommand {
    /// Stop at once; finished ranges stay, and the next run resumes.
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Info,
    Warn,
    Error,
}

/// What a task reports while it runs.
#[derive(Debug, Clone)]
pub enum TaskEvent {
    /// The tables the task will load, in their initial state.
    Planned {
        tables: Vec<TableStats>,
    },
    /// A table's statistics changed.
    Table(TableStats),
    /// Task-wide CDC figures: latency, throughput, slot lag.
    Cdc(CdcStats),
    Log {
        level: LogLevel,
        message: String,
    },
}

/// Options of one run of a task.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Load every table again from scratch, deleting the task's previous full-load files
    /// (and, with CDC, recreating the replication slot).
    pub reload: bool,
    /// CDC: stop once every change committed before the run started is written.
    pub until_caught_up: bool,
    /// Load these tables again, replacing their files; the other tables stay as they are.
    /// With CDC, from their own snapshot ([`reload`]).
    pub reload_tables: Vec<TableId>,
}

/// Emits events; dropping the receiver silently discards them.
#[derive(Clone)]
pub(crate) struct Events {
    tx: mpsc::UnboundedSender<TaskEvent>,
}

impl Events {
    pub(crate) fn new(tx: mpsc::UnboundedSender<TaskEvent>) -> Self {
        Events { tx }
    }

    pub(crate) fn send(&self, event: TaskEvent) {
        let _ = self.tx.send(event);
    }

    pub(crate) fn log(&self, level: LogLevel, message: impl Into<String>) {
        self.send(TaskEvent::Log {
            level,
            message: message.into(),
        });
    }
}
