//! The outcome of one prerequisite check (`tributary check`, the app's *Test connection*):
//! its status, what was found and, when it did not pass, how to fix it. Sources, targets
//! and tasks all report their checks this way; the CLI and the app show them alike.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckStatus {
    Pass,
    /// Not needed by every task (e.g. wal_level for a full load), but needed by some.
    Warn,
    Fail,
}

/// One prerequisite check of `tributary check` and the app's "Test connection".
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub status: CheckStatus,
    pub detail: String,
    /// How to fix it, when not passed.
    pub fix: Option<String>,
}

impl CheckResult {
    pub fn pass(name: &str, detail: String) -> Self {
        CheckResult {
            name: name.into(),
            status: CheckStatus::Pass,
            detail,
            fix: None,
        }
    }

    pub fn warn(name: &str, detail: String, fix: String) -> Self {
        CheckResult {
            name: name.into(),
            status: CheckStatus::Warn,
            detail,
            fix: Some(fix),
        }
    }

    /// A failed check from an error whose message already says how to fix it.
    pub fn fail_from(name: &str, error: &dyn std::error::Error) -> Self {
        CheckResult {
            name: name.into(),
            status: CheckStatus::Fail,
            detail: error.to_string(),
            fix: None,
        }
    }
}
