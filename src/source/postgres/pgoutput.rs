//! Decoder of PostgreSQL's `pgoutput` logical-replication messages (protocol version 1).
//!
//! [`decode`] takes the payload of one XLogData message — one pgoutput message, tag byte
//! first — and returns a [`Message`]. It is pure: no I/O, no state; the caller keeps the
//! relation cache ([`Message::Relation`] arrives before the first change of a relation and
//! again after its definition changes).
//!
//! Values arrive in text mode as kind `t` (the type's text output, decoded into Arrow by
//! [`super::copy_binary::TextBatchBuilder`]); `b` (binary), `n` (null) and `u` (unchanged
//! TOASTed value, which the server does not send) are kept as such. Values are zero-copy
//! slices of the input.
//!
//! Timestamps are converted to microseconds since the UNIX epoch. Malformed input
//! (truncated, unknown tag or kind, trailing bytes) is a [`PgOutputError`], never a panic.

use bytes::Bytes;

/// Microseconds between 1970-01-01 (UNIX epoch) and 2000-01-01 (PostgreSQL's epoch).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// One pgoutput message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A transaction starts; its changes follow, then [`Message::Commit`].
    Begin {
        /// LSN of the transaction's commit record.
        final_lsn: u64,
        /// Commit time, µs since the UNIX epoch.
        commit_time: i64,
        xid: u32,
    },
    Commit {
        /// LSN of the commit record.
        commit_lsn: u64,
        /// LSN just past the commit record: the position to confirm once it is durable.
        end_lsn: u64,
        /// Commit time, µs since the UNIX epoch.
        commit_time: i64,
    },
    /// The transaction came from another node (replication origin).
    Origin {
        lsn: u64,
        name: String,
    },
    /// A relation's definition; precedes its first change in the stream and any change
    /// after the definition changed.
    Relation(Relation),
    /// A non-built-in type used by a following relation.
    Type {
        oid: u32,
        /// `pg_catalog` when the server sent an empty namespace.
        schema: String,
        name: String,
    },
    Insert {
        relation: u32,
        new: Tuple,
    },
    Update {
        relation: u32,
        /// The old key (`K`, when the key changed) or whole old row (`O`, replica identity
        /// full); `None` when the server sent neither.
        old: Option<OldTuple>,
        new: Tuple,
    },
    Delete {
        relation: u32,
        old: OldTuple,
    },
    Truncate {
        relations: Vec<u32>,
        cascade: bool,
        restart_identity: bool,
    },
    /// A logical decoding message (`pg_logical_emit_message`).
    Message {
        lsn: u64,
        prefix: String,
        content: Bytes,
        transactional: bool,
    },
}

/// The old image of an updated or deleted row.
#[derive(Debug, Clone, PartialEq)]
pub enum OldTuple {
    /// Only the replica identity's key columns are set; the others are [`Value::Null`].
    Key(Tuple),
    /// The whole old row (replica identity full).
    Full(Tuple),
}

impl OldTuple {
    pub fn tuple(&self) -> &Tuple {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaIdentity {
    /// The primary key (`d`).
    Default,
    /// No old values at all (`n`).
    Nothing,
    /// The whole old row (`f`).
    Full,
    /// A unique index (`i`).
    Index,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The relation's OID, which changes refer to.
    pub id: u32,
    /// `pg_catalog` when the server sent an empty namespace.
    pub schema: String,
    pub name: String,
    pub replica_identity: ReplicaIdentity,
    pub columns: Vec<RelationColumn>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    pub name: String,
    pub type_oid: u32,
    pub typmod: i32,
    /// Part of the replica identity key.
    pub is_key: bool,
}

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    /// A TOASTed value that did not change; the server does not send it.
    UnchangedToast,
    /// The type's text output (UTF-8 in a UTF-8 database; not checked here).
    Text(Bytes),
    /// The type's binary send format (only when the subscriber asked for binary).
    Binary(Bytes),
}

/// A row's values, one per column of the relation, in column order.
pub type Tuple = Vec<Value>;

/// A pgoutput message that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PgOutputError {
    #[error("empty pgoutput message")]
    Empty,
    #[error("unknown pgoutput message tag {}", show_byte(*.0))]
    UnknownTag(u8),
    #[error("pgoutput message '{tag}' is truncated: {what} is missing")]
    Truncated { tag: char, what: &'static str },
    #[error("pgoutput message '{tag}': unexpected {what} {}", show_byte(*.byte))]
    Unexpected {
        tag: char,
        what: &'static str,
        byte: u8,
    },
    #[error("pgoutput message '{tag}': {what} is not valid UTF-8")]
    InvalidUtf8 { tag: char, what: &'static str },
    #[error("pgoutput message '{tag}': negative {what} ({value})")]
    Negative {
        tag: char,
        what: &'static str,
        value: i64,
    },
    #[error("pgoutput message '{tag}' has {extra} unexpected trailing bytes")]
    TrailingBytes { tag: char, extra: usize },
}

fn show_byte(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("0x{b:02x}")
    }
}

/// Decodes one pgoutput message. Values in the result are slices of `data`.
pub fn decode(data: &Bytes) -> Result<Message, PgOutputError> {
    let (&tag, _) = data.split_first().ok_or(PgOutputError::Empty)?;
    let mut r = Reader {
        data,
        pos: 1,
        tag: tag as char,
    };
    let message = match tag {
        b'B' => Message::Begin {
            final_lsn: r.u64("final LSN")?,
            commit_time: pg_to_unix_micros(r.i64("commit timestamp")?),
            xid: r.u32("xid")?,
        },
        b'C' => {
            let _flags = r.u8("flags")?;
            Message::Commit {
                commit_lsn: r.u64("commit LSN")?,
                end_lsn: r.u64("end LSN")?,
                commit_time: pg_to_unix_micros(r.i64("commit timestamp")?),
            }
        }
        b'O' => Message::Origin {
            lsn: r.u64("origin LSN")?,
            name: r.cstr("origin name")?,
        },
        b'R' => Message::Relation(r.relation()?),
        b'Y' => Message::Type {
            oid: r.u32("type OID")?,
            schema: catalog_if_empty(r.cstr("type namespace")?),
            name: r.cstr("type name")?,
        },
        b'I' => {
            let relation = r.u32("relation OID")?;
            r.expect(b'N', "tuple marker (expected 'N')")?;
            Message::Insert {
                relation,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let relation = r.u32("relation OID")?;
            let old = match r.u8("tuple marker")? {
                b'N' => None,
                b'K' => Some(OldTuple::Key(r.tuple()?)),
                b'O' => Some(OldTuple::Full(r.tuple()?)),
                byte => return Err(r.unexpected("tuple marker (expected 'K', 'O' or 'N')", byte)),
            };
            if old.is_some() {
                r.expect(b'N', "new tuple marker (expected 'N')")?;
            }
            Message::Update {
                relation,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relation = r.u32("relation OID")?;
            let old = match r.u8("tuple marker")? {
                b'K' => OldTuple::Key(r.tuple()?),
                b'O' => OldTuple::Full(r.tuple()?),
                byte => return Err(r.unexpected("tuple marker (expected 'K' or 'O')", byte)),
            };
            Message::Delete { relation, old }
        }
        b'T' => {
            let count = r.count32("relation count")?;
            let flags = r.u8("flags")?;
            // Each OID takes 4 bytes: do not trust the count for the allocation.
            let mut relations = Vec::with_capacity(count.min(r.remaining() / 4));
            for _ in 0..count {
                relations.push(r.u32("relation OID")?);
            }
            Message::Truncate {
                relations,
                cascade: flags & 1 != 0,
                restart_identity: flags & 2 != 0,
            }
        }
        b'M' => {
            let flags = r.u8("flags")?;
            let lsn = r.u64("message LSN")?;
            let prefix = r.cstr("message prefix")?;
            let len = r.count32("message length")?;
            Message::Message {
                lsn,
                prefix,
                content: r.bytes(len, "message content")?,
                transactional: flags & 1 != 0,
            }
        }
        _ => return Err(PgOutputError::UnknownTag(tag)),
    };
    r.end()?;
    Ok(message)
}

fn pg_to_unix_micros(pg: i64) -> i64 {
    pg.saturating_add(PG_EPOCH_OFFSET_MICROS)
}

fn catalog_if_empty(namespace: String) -> String {
    if namespace.is_empty() {
        "pg_catalog".to_string()
    } else {
        namespace
    }
}

/// A bounds-checked cursor over one message.
struct Reader<'a> {
    data: &'a Bytes,
    pos: usize,
    tag: char,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    fn take<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], PgOutputError> {
        let bytes = self
            .data
            .get(self.pos..)
            .and_then(|rest| rest.get(..N))
            .and_then(|b| <[u8; N]>::try_from(b).ok())
            .ok_or(PgOutputError::Truncated {
                tag: self.tag,
                what,
            })?;
        self.pos += N;
        Ok(bytes)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, PgOutputError> {
        Ok(u8::from_be_bytes(self.take(what)?))
    }

    fn i16(&mut self, what: &'static str) -> Result<i16, PgOutputError> {
        Ok(i16::from_be_bytes(self.take(what)?))
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, PgOutputError> {
        Ok(i32::from_be_bytes(self.take(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, PgOutputError> {
        Ok(u32::from_be_bytes(self.take(what)?))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, PgOutputError> {
        Ok(i64::from_be_bytes(self.take(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, PgOutputError> {
        Ok(u64::from_be_bytes(self.take(what)?))
    }

    /// A non-negative Int16 count.
    fn count16(&mut self, what: &'static str) -> Result<usize, PgOutputError> {
        let n = self.i16(what)?;
        usize::try_from(n).map_err(|_| self.negative(what, n.into()))
    }

    /// A non-negative Int32 count or length.
    fn count32(&mut self, what: &'static str) -> Result<usize, PgOutputError> {
        let n = self.i32(what)?;
        usize::try_from(n).map_err(|_| self.negative(what, n.into()))
    }

    fn negative(&self, what: &'static str, value: i64) -> PgOutputError {
        PgOutputError::Negative {
            tag: self.tag,
            what,
            value,
        }
    }

    fn unexpected(&self, what: &'static str, byte: u8) -> PgOutputError {
        PgOutputError::Unexpected {
            tag: self.tag,
            what,
            byte,
        }
    }

    fn expect(&mut self, byte: u8, what: &'static str) -> Result<(), PgOutputError> {
        match self.u8(what)? {
            b if b == byte => Ok(()),
            b => Err(self.unexpected(what, b)),
        }
    }

    /// `len` bytes as a zero-copy slice of the message.
    fn bytes(&mut self, len: usize, what: &'static str) -> Result<Bytes, PgOutputError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.data.len())
            .ok_or(PgOutputError::Truncated {
                tag: self.tag,
                what,
            })?;
        let slice = self.data.slice(self.pos..end);
        self.pos = end;
        Ok(slice)
    }

    /// A NUL-terminated UTF-8 string.
    fn cstr(&mut self, what: &'static str) -> Result<String, PgOutputError> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(PgOutputError::Truncated {
                tag: self.tag,
                what,
            })?;
        let text = rest
            .get(..len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .ok_or(PgOutputError::InvalidUtf8 {
                tag: self.tag,
                what,
            })?
            .to_string();
        self.pos += len + 1;
        Ok(text)
    }

    fn relation(&mut self) -> Result<Relation, PgOutputError> {
        let id = self.u32("relation OID")?;
        let schema = catalog_if_empty(self.cstr("relation namespace")?);
        let name = self.cstr("relation name")?;
        let replica_identity = match self.u8("replica identity")? {
            b'd' => ReplicaIdentity::Default,
            b'n' => ReplicaIdentity::Nothing,
            b'f' => ReplicaIdentity::Full,
            b'i' => ReplicaIdentity::Index,
            byte => return Err(self.unexpected("replica identity", byte)),
        };
        let count = self.count16("column count")?;
        // A column takes at least 10 bytes (flags, empty name, OID, typmod).
        let mut columns = Vec::with_capacity(count.min(self.remaining() / 10));
        for _ in 0..count {
            let flags = self.u8("column flags")?;
            columns.push(RelationColumn {
                name: self.cstr("column name")?,
                type_oid: self.u32("column type OID")?,
                typmod: self.i32("column typmod")?,
                is_key: flags & 1 != 0,
            });
        }
        Ok(Relation {
            id,
            schema,
            name,
            replica_identity,
            columns,
        })
    }

    fn tuple(&mut self) -> Result<Tuple, PgOutputError> {
        let count = self.count16("tuple column count")?;
        // A value takes at least 1 byte (its kind).
        let mut values = Vec::with_capacity(count.min(self.remaining()));
        for _ in 0..count {
            let value = match self.u8("value kind")? {
                b'n' => Value::Null,
                b'u' => Value::UnchangedToast,
                b't' => {
                    let len = self.count32("text value length")?;
                    Value::Text(self.bytes(len, "text value")?)
                }
                b'b' => {
                    let len = self.count32("binary value length")?;
                    Value::Binary(self.bytes(len, "binary value")?)
                }
                byte => return Err(self.unexpected("value kind", byte)),
            };
            values.push(value);
        }
        Ok(values)
    }

    fn end(&self) -> Result<(), PgOutputError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(PgOutputError::TrailingBytes {
                tag: self.tag,
                extra,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a message by hand.
    #[derive(Default)]
    struct Msg(Vec<u8>);

    impl Msg {
        fn new(tag: u8) -> Self {
            Msg(vec![tag])
        }
        fn u8(mut self, v: u8) -> Self {
            self.0.push(v);
            self
        }
        fn i16(mut self, v: i16) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i32(mut self, v: i32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i64(mut self, v: i64) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn cstr(mut self, s: &str) -> Self {
            self.0.extend_from_slice(s.as_bytes());
            self.0.push(0);
            self
        }
        fn raw(mut self, b: &[u8]) -> Self {
            self.0.extend_from_slice(b);
            self
        }
        /// TupleData from (kind, payload) pairs.
        fn tuple(mut self, values: &[(u8, &[u8])]) -> Self {
            self = self.i16(values.len() as i16);
            for (kind, payload) in values {
                self = self.u8(*kind);
                if matches!(kind, b't' | b'b') {
                    self = self.i32(payload.len() as i32).raw(payload);
                }
            }
            self
        }
        fn bytes(self) -> Bytes {
            Bytes::from(self.0)
        }
    }

    fn text(s: &str) -> Value {
        Value::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn begin_and_commit() {
        let begin = Msg::new(b'B').i64(0x1_0000_0010).i64(1_000_000).i32(-2);
        assert_eq!(
            decode(&begin.bytes()),
            Ok(Message::Begin {
                final_lsn: 0x1_0000_0010,
                commit_time: 946_684_801_000_000,
                xid: u32::MAX - 1,
            })
        );
        let commit = Msg::new(b'C').u8(0).i64(100).i64(120).i64(0);
        assert_eq!(
            decode(&commit.bytes()),
            Ok(Message::Commit {
                commit_lsn: 100,
                end_lsn: 120,
                commit_time: 946_684_800_000_000,
            })
        );
    }

    #[test]
    fn origin_and_type() {
        let origin = Msg::new(b'O').i64(42).cstr("node_a");
        assert_eq!(
            decode(&origin.bytes()),
            Ok(Message::Origin {
                lsn: 42,
                name: "node_a".into()
            })
        );
        let ty = Msg::new(b'Y').i32(16_400).cstr("public").cstr("mood");
        assert_eq!(
            decode(&ty.bytes()),
            Ok(Message::Type {
                oid: 16_400,
                schema: "public".into(),
                name: "mood".into()
            })
        );
        let catalog = Msg::new(b'Y').i32(16).cstr("").cstr("bool");
        assert!(matches!(
            decode(&catalog.bytes()),
            Ok(Message::Type { schema, .. }) if schema == "pg_catalog"
        ));
    }

    #[test]
    fn relation() {
        let rel = Msg::new(b'R')
            .i32(16_385)
            .cstr("shop")
            .cstr("orders")
            .u8(b'f')
            .i16(2)
            .u8(1)
            .cstr("id")
            .i32(23)
            .i32(-1)
            .u8(0)
            .cstr("amount")
            .i32(1700)
            .i32((12 << 16 | 2) + 4);
        assert_eq!(
            decode(&rel.bytes()),
            Ok(Message::Relation(Relation {
                id: 16_385,
                schema: "shop".into(),
                name: "orders".into(),
                replica_identity: ReplicaIdentity::Full,
                columns: vec![
                    RelationColumn {
                        name: "id".into(),
                        type_oid: 23,
                        typmod: -1,
                        is_key: true
                    },
                    RelationColumn {
                        name: "amount".into(),
                        type_oid: 1700,
                        typmod: (12 << 16 | 2) + 4,
                        is_key: false
                    },
                ],
            }))
        );
        let bad_identity = Msg::new(b'R').i32(1).cstr("s").cstr("t").u8(b'x').i16(0);
        let err = decode(&bad_identity.bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pgoutput message 'R': unexpected replica identity 'x'"
        );
    }

    #[test]
    fn insert_with_every_value_kind() {
        let data = Msg::new(b'I')
            .i32(7)
            .u8(b'N')
            .tuple(&[(b't', b"42"), (b'n', b""), (b'u', b""), (b'b', &[1, 2])])
            .bytes();
        let msg = decode(&data).expect("decodes");
        assert_eq!(
            msg,
            Message::Insert {
                relation: 7,
                new: vec![
                    text("42"),
                    Value::Null,
                    Value::UnchangedToast,
                    Value::Binary(Bytes::from_static(&[1, 2])),
                ],
            }
        );
        // Values are slices of the message, not copies.
        let Message::Insert { new, .. } = msg else {
            unreachable!()
        };
        let Some(Value::Text(v)) = new.first() else {
            unreachable!()
        };
        let start = data.as_ptr() as usize;
        let end = start + data.len();
        assert!((start..end).contains(&(v.as_ptr() as usize)));
    }

    #[test]
    fn update_with_and_without_old_tuple() {
        let plain = Msg::new(b'U').i32(7).u8(b'N').tuple(&[(b't', b"1")]);
        assert_eq!(
            decode(&plain.bytes()),
            Ok(Message::Update {
                relation: 7,
                old: None,
                new: vec![text("1")],
            })
        );
        let key = Msg::new(b'U')
            .i32(7)
            .u8(b'K')
            .tuple(&[(b't', b"1"), (b'n', b"")])
            .u8(b'N')
            .tuple(&[(b't', b"2"), (b'u', b"")]);
        assert_eq!(
            decode(&key.bytes()),
            Ok(Message::Update {
                relation: 7,
                old: Some(OldTuple::Key(vec![text("1"), Value::Null])),
                new: vec![text("2"), Value::UnchangedToast],
            })
        );
        let full = Msg::new(b'U')
            .i32(7)
            .u8(b'O')
            .tuple(&[(b't', b"old")])
            .u8(b'N')
            .tuple(&[(b't', b"new")]);
        assert_eq!(
            decode(&full.bytes()),
            Ok(Message::Update {
                relation: 7,
                old: Some(OldTuple::Full(vec![text("old")])),
                new: vec![text("new")],
            })
        );
        let missing_new = Msg::new(b'U').i32(7).u8(b'K').tuple(&[(b't', b"1")]);
        assert_eq!(
            decode(&missing_new.bytes()),
            Err(PgOutputError::Truncated {
                tag: 'U',
                what: "new tuple marker (expected 'N')"
            })
        );
    }

    #[test]
    fn delete() {
        let key = Msg::new(b'D').i32(9).u8(b'K').tuple(&[(b't', b"5")]);
        assert_eq!(
            decode(&key.bytes()),
            Ok(Message::Delete {
                relation: 9,
                old: OldTuple::Key(vec![text("5")]),
            })
        );
        let full = Msg::new(b'D').i32(9).u8(b'O').tuple(&[(b'n', b"")]);
        assert_eq!(
            decode(&full.bytes()),
            Ok(Message::Delete {
                relation: 9,
                old: OldTuple::Full(vec![Value::Null]),
            })
        );
        let bad = Msg::new(b'D').i32(9).u8(b'N').tuple(&[(b'n', b"")]);
        assert!(matches!(
            decode(&bad.bytes()),
            Err(PgOutputError::Unexpected {
                tag: 'D',
                byte: b'N',
                ..
            })
        ));
    }

    #[test]
    fn truncate() {
        let t = Msg::new(b'T').i32(2).u8(3).i32(10).i32(11);
        assert_eq!(
            decode(&t.bytes()),
            Ok(Message::Truncate {
                relations: vec![10, 11],
                cascade: true,
                restart_identity: true,
            })
        );
        let plain = Msg::new(b'T').i32(1).u8(0).i32(10);
        assert_eq!(
            decode(&plain.bytes()),
            Ok(Message::Truncate {
                relations: vec![10],
                cascade: false,
                restart_identity: false,
            })
        );
        // A huge count with no data is a truncation error, not a huge allocation.
        let huge = Msg::new(b'T').i32(i32::MAX).u8(0).i32(10);
        assert!(matches!(
            decode(&huge.bytes()),
            Err(PgOutputError::Truncated { tag: 'T', .. })
        ));
    }

    #[test]
    fn logical_message() {
        let m = Msg::new(b'M')
            .u8(1)
            .i64(500)
            .cstr("tributary")
            .i32(3)
            .raw(b"abc");
        assert_eq!(
            decode(&m.bytes()),
            Ok(Message::Message {
                lsn: 500,
                prefix: "tributary".into(),
                content: Bytes::from_static(b"abc"),
                transactional: true,
            })
        );
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert_eq!(decode(&Bytes::new()), Err(PgOutputError::Empty));
        let unknown = decode(&Bytes::from_static(b"Zabc")).unwrap_err();
        assert_eq!(unknown, PgOutputError::UnknownTag(b'Z'));
        assert_eq!(unknown.to_string(), "unknown pgoutput message tag 'Z'");
        assert_eq!(
            decode(&Bytes::from_static(&[0x01]))
                .unwrap_err()
                .to_string(),
            "unknown pgoutput message tag 0x01"
        );

        // Every strict prefix of a valid message is an error, never a panic.
        let full = Msg::new(b'U')
            .i32(7)
            .u8(b'O')
            .tuple(&[(b't', b"old"), (b'n', b""), (b'b', b"\x01")])
            .u8(b'N')
            .tuple(&[(b't', b"new"), (b'u', b"")])
            .bytes();
        assert!(decode(&full).is_ok());
        for len in 1..full.len() {
            assert!(decode(&full.slice(..len)).is_err(), "prefix of {len} bytes");
        }
        let cut = decode(
            &Msg::new(b'I')
                .i32(7)
                .u8(b'N')
                .i16(1)
                .u8(b't')
                .i32(10)
                .raw(b"abc")
                .bytes(),
        );
        assert_eq!(
            cut,
            Err(PgOutputError::Truncated {
                tag: 'I',
                what: "text value"
            })
        );
        assert_eq!(
            cut.unwrap_err().to_string(),
            "pgoutput message 'I' is truncated: text value is missing"
        );
        let short_begin = Msg::new(b'B').i64(1).bytes();
        assert_eq!(
            decode(&short_begin),
            Err(PgOutputError::Truncated {
                tag: 'B',
                what: "commit timestamp"
            })
        );

        let negative = Msg::new(b'I').i32(7).u8(b'N').i16(1).u8(b't').i32(-5);
        assert!(matches!(
            decode(&negative.bytes()),
            Err(PgOutputError::Negative {
                tag: 'I',
                value: -5,
                ..
            })
        ));
        let bad_kind = Msg::new(b'I').i32(7).u8(b'N').i16(1).u8(b'x');
        assert!(matches!(
            decode(&bad_kind.bytes()),
            Err(PgOutputError::Unexpected {
                tag: 'I',
                byte: b'x',
                ..
            })
        ));
        let trailing = Msg::new(b'C').u8(0).i64(1).i64(2).i64(3).u8(0);
        assert_eq!(
            decode(&trailing.bytes()),
            Err(PgOutputError::TrailingBytes { tag: 'C', extra: 1 })
        );
        let unterminated = Msg::new(b'O').i64(1).raw(b"name");
        assert!(matches!(
            decode(&unterminated.bytes()),
            Err(PgOutputError::Truncated { tag: 'O', .. })
        ));
        let not_utf8 = Msg::new(b'O').i64(1).raw(b"\xff\0");
        assert!(matches!(
            decode(&not_utf8.bytes()),
            Err(PgOutputError::InvalidUtf8 { tag: 'O', .. })
        ));
    }
}
