//! A change's place in commit order: the `_position` of the raw zone's CDC files.
//!
//! Invariants:
//! - a [`ChangePosition`] is built only from a source's own position, by its engine's
//!   constructor ([`ChangePosition::postgres`], [`ChangePosition::mysql`]), or read back from
//!   what those wrote (the task state, a file's `_position`);
//! - its text is fixed-width, zero-padded hexadecimal (24 digits), so positions of one
//!   source order alike as values and as text: the raw zone's files, the task state and
//!   outside readers all sort them as text;
//! - it serialises as that text, so task states and lakes written before it read the same.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChangePosition(String);

impl ChangePosition {
    /// Change number `seq` of the PostgreSQL transaction that commits at `commit_lsn`: the
    /// commit LSN, then the number. With `seq` 0 and a slot's snapshot LSN, it is the
    /// first position the snapshot does not hold: a transaction is in a slot's snapshot
    /// exactly when its commit record comes before the slot's consistent point.
    pub fn postgres(commit_lsn: u64, seq: u32) -> Self {
        ChangePosition(format!("{commit_lsn:016X}{seq:08X}"))
    }

    /// Change number `seq` of the MySQL transaction that starts at offset `start` of binlog
    /// file number `file` (transactions are written to the binlog whole, in commit order).
    /// With `seq` 0 and a snapshot's binlog position, it is the first position the
    /// snapshot does not hold: the position falls between transactions.
    pub fn mysql(file: u64, start: u64, seq: u32) -> Self {
        ChangePosition(format!("{file:06X}{start:010X}{seq:08X}"))
    }

    /// After every position: a table waiting for its reload passes every change by.
    pub fn after_all() -> Self {
        ChangePosition("\u{10FFFF}".into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Display for ChangePosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_as_values_and_as_text() {
        let a = ChangePosition::postgres(0x1_0000_0000, 5);
        let b = ChangePosition::postgres(0x1_0000_0001, 0);
        assert!(a < b && a.as_str() < b.as_str());
        assert_eq!(a.as_str().len(), 24);
        let c = ChangePosition::mysql(2, 4, 0);
        let d = ChangePosition::mysql(10, 0, 0);
        assert!(c < d && c.as_str() < d.as_str());
        assert_eq!(c.as_str().len(), 24);
        assert!(ChangePosition::default() < c && d < ChangePosition::after_all());
        // The task state's text reads back as the same position.
        let text = serde_json::to_string(&a).expect("serialises");
        assert_eq!(text, "\"000000010000000000000005\"");
        let back: ChangePosition = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, a);
    }
}
