//! Positions in a source's history, typed, so that the compiler (not text comparison)
//! keeps the exactly-once rules.
//!
//! - [`SourcePosition`] is a place in a source's log where a snapshot or a stream stands: a
//!   PostgreSQL WAL location ([`SourcePosition::Lsn`]) or a place between transactions of
//!   the MySQL binlog ([`SourcePosition::Binlog`]). The task state, snapshots and batch ends
//!   hold these.
//! - [`ChangePosition`] is a change's place in commit order: the `_position` of the raw
//!   zone's CDC files.
//!
//! Invariants:
//! - a [`ChangePosition`] is built only from a source's own position, by its engine's
//!   constructor ([`ChangePosition::postgres`], [`ChangePosition::mysql`]) or by
//!   [`SourcePosition::snapshot_end`] / [`SourcePosition::stream_end`], or read back from
//!   what those wrote (the task state, a file's `_position`);
//! - its text is fixed-width, zero-padded hexadecimal (24 digits), so positions of one
//!   source order alike as values and as text: the raw zone's files, the task state and
//!   outside readers all sort them as text;
//! - both types serialise as the text earlier versions wrote (an LSN `16/B374D848`, a binlog
//!   `mysql-bin.000012:1234 gtid 0-1-55`, 24 hex digits), so task states and lakes written
//!   before them read the same.
//!
//! A new engine adds its variant to [`SourcePosition`] and its constructor to
//! [`ChangePosition`]; nothing here knows more of an engine than its position's shape.

use serde::{Deserialize, Serialize};

/// A place in a source's log where a snapshot or a stream stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourcePosition {
    /// A PostgreSQL WAL location: a slot's consistent point, or the end of a commit.
    Lsn(u64),
    /// A place between transactions of the MySQL/MariaDB binlog.
    Binlog(BinlogPosition),
}

impl SourcePosition {
    /// Parses what [`Display`](std::fmt::Display) writes.
    pub fn parse(text: &str) -> Option<Self> {
        if text.contains(':') {
            BinlogPosition::parse(text).map(SourcePosition::Binlog)
        } else {
            parse_lsn(text).map(SourcePosition::Lsn)
        }
    }

    /// The first change a snapshot taken here does not hold: the stream's copies of
    /// changes before it are in the snapshot.
    /// - PostgreSQL: a transaction is in a slot's snapshot exactly when its commit record
    ///   comes before the slot's consistent point.
    /// - MySQL: the position falls between transactions, and a transaction's changes are
    ///   numbered from where it starts.
    pub fn snapshot_end(&self) -> ChangePosition {
        match self {
            SourcePosition::Lsn(lsn) => ChangePosition::postgres(*lsn, 0),
            SourcePosition::Binlog(b) => ChangePosition::mysql(b.file_index(), b.pos, 0),
        }
    }

    /// The first change after a stream confirmed up to here, whose changes are all in
    /// the raw zone.
    /// - PostgreSQL: the position is the end of the last commit written, so every
    ///   transaction committed at or before it is in.
    /// - MySQL: every transaction that starts before the position is in.
    pub fn stream_end(&self) -> ChangePosition {
        match self {
            SourcePosition::Lsn(lsn) => ChangePosition::postgres(lsn.saturating_add(1), 0),
            SourcePosition::Binlog(b) => ChangePosition::mysql(b.file_index(), b.pos, 0),
        }
    }

    /// The WAL location, for a PostgreSQL position.
    pub fn lsn(&self) -> Option<u64> {
        match self {
            SourcePosition::Lsn(lsn) => Some(*lsn),
            SourcePosition::Binlog(_) => None,
        }
    }

    /// The binlog place, for a MySQL position.
    pub fn binlog(&self) -> Option<&BinlogPosition> {
        match self {
            SourcePosition::Binlog(b) => Some(b),
            SourcePosition::Lsn(_) => None,
        }
    }
}

impl std::fmt::Display for SourcePosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourcePosition::Lsn(lsn) => f.write_str(&format_lsn(*lsn)),
            SourcePosition::Binlog(b) => b.fmt(f),
        }
    }
}

impl Serialize for SourcePosition {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SourcePosition {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        SourcePosition::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is neither a PostgreSQL LSN (16/B374D848) nor a binlog position \
                 (mysql-bin.000012:1234)"
            ))
        })
    }
}

/// A PostgreSQL WAL location as the server writes it: `16/B374D848` (two 32-bit halves
/// in hexadecimal).
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

/// What [`parse_lsn`] reads.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// A position in the binlog: the file and the offset after an event, and the GTID of the
/// last transaction before it, where the server has GTIDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinlogPosition {
    pub file: String,
    pub pos: u64,
    pub gtid: Option<String>,
}

impl std::fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)?;
        if let Some(g) = &self.gtid {
            write!(f, " gtid {g}")?;
        }
        Ok(())
    }
}

impl BinlogPosition {
    /// Parses what [`Display`](std::fmt::Display) writes.
    pub fn parse(text: &str) -> Option<Self> {
        let (position, gtid) = match text.split_once(" gtid ") {
            Some((p, g)) => (p, Some(g.to_string()).filter(|g| !g.is_empty())),
            None => (text, None),
        };
        let (file, pos) = position.rsplit_once(':')?;
        Some(BinlogPosition {
            file: file.to_string(),
            pos: pos.parse().ok()?,
            gtid,
        })
    }

    /// The number in the file's name (`mysql-bin.000012` → 12), which orders files.
    pub fn file_index(&self) -> u64 {
        binlog_file_index(&self.file)
    }
}

/// The number in a binlog file's name (`mysql-bin.000012` → 12); 0 for a name without.
pub fn binlog_file_index(file: &str) -> u64 {
    file.rsplit('.')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

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

    #[test]
    fn source_positions_read_back_what_they_wrote() {
        for text in ["16/B374D848", "0/0", "FFFFFFFF/FFFFFFFF"] {
            let p = SourcePosition::parse(text).expect("an LSN");
            assert_eq!(p.to_string(), text);
            let json = serde_json::to_string(&p).expect("serialises");
            assert_eq!(serde_json::from_str::<SourcePosition>(&json).ok(), Some(p));
        }
        let b = BinlogPosition {
            file: "mysql-bin.000012".into(),
            pos: 1234,
            gtid: Some("0-1-55".into()),
        };
        assert_eq!(b.file_index(), 12);
        for p in [b.clone(), BinlogPosition { gtid: None, ..b }] {
            let text = p.to_string();
            assert_eq!(
                SourcePosition::parse(&text),
                Some(SourcePosition::Binlog(p))
            );
        }
        for bad in [
            "",
            "16",
            "1/2/3",
            "G/0",
            "100000000/0",
            "mysql-bin.000001:x",
        ] {
            assert_eq!(SourcePosition::parse(bad), None, "{bad:?}");
        }
        let err = serde_json::from_str::<SourcePosition>("\"nonsense\"").unwrap_err();
        assert!(
            err.to_string().contains("neither a PostgreSQL LSN"),
            "{err}"
        );
    }

    #[test]
    fn a_snapshot_holds_what_commits_before_it_and_a_stream_what_it_confirmed() {
        let lsn = SourcePosition::Lsn(0x10);
        assert_eq!(lsn.snapshot_end(), ChangePosition::postgres(0x10, 0));
        // A confirmed LSN is the end of a commit written: that commit is in.
        assert_eq!(lsn.stream_end(), ChangePosition::postgres(0x11, 0));
        assert!(ChangePosition::postgres(0x10, 7) < lsn.stream_end());
        let binlog = SourcePosition::parse("mysql-bin.000003:400").expect("binlog");
        assert_eq!(binlog.snapshot_end(), ChangePosition::mysql(3, 400, 0));
        assert_eq!(binlog.stream_end(), binlog.snapshot_end());
    }
}
