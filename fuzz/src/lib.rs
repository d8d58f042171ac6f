//! The fuzz targets' library: tributary's decoders of bytes from outside, and the formats in
//! which the targets read their input.
//!
//! The decoder modules are compiled here from their own files (`#[path]`), at the module
//! paths they have in tributary, with only the dependencies they use: a fuzz build then
//! takes minutes instead of the whole crate's (DataFusion, iceberg, the AWS SDK, the desktop
//! stack). Each of them says in its module doc that it uses nothing else of the crate; a
//! module that starts to fails this build (which CI runs, see `scripts/fuzz`).
//!
//! Input formats (`corpus/<target>/` holds real examples, see `fuzz/README.md`):
//! - `pgoutput`: pgoutput messages, each preceded by its length (u16, big-endian);
//! - `copy_binary`: a column list ([`copy_case`]), then a binary COPY stream;
//! - `binlog_rows`: a table map ([`binlog_case`]), then the rows of a rows event;
//! - `parquet_preview`: a file.

#![allow(dead_code)]

pub mod lake;
pub mod source;

use std::sync::Arc;

use arrow_schema::{Field, Schema, SchemaRef};
use mysql_common::constants::ColumnType;

use source::mysql::row_image::{self, ColumnCtx};
use source::mysql::types::{ColumnDecoder, Kind as MyKind};
use source::postgres::types::{self as pg_types, Kind as PgKind};

/// Bytes of the input, read from the front; past the end every byte reads as 0.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        taken
    }

    pub fn rest(self) -> &'a [u8] {
        self.data
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// A schema of one field per kind, named `c0`, `c1`…
pub fn pg_schema(kinds: &[PgKind], nullable: bool) -> SchemaRef {
    Arc::new(Schema::new(
        kinds
            .iter()
            .enumerate()
            .map(|(i, k)| Field::new(format!("c{i}"), k.data_type(), nullable))
            .collect::<Vec<_>>(),
    ))
}

/// Array type OIDs and their element's, for the kinds of pgoutput relation columns (the
/// engine reads these from the catalog).
const PG_ARRAYS: [(u32, u32); 16] = [
    (1000, pg_types::BOOL),
    (1005, pg_types::INT2),
    (1007, pg_types::INT4),
    (1016, pg_types::INT8),
    (1021, pg_types::FLOAT4),
    (1022, pg_types::FLOAT8),
    (1231, pg_types::NUMERIC),
    (1009, pg_types::TEXT),
    (1015, pg_types::VARCHAR),
    (1001, pg_types::BYTEA),
    (1182, pg_types::DATE),
    (1183, pg_types::TIME),
    (1115, pg_types::TIMESTAMP),
    (1185, pg_types::TIMESTAMPTZ),
    (2951, pg_types::UUID),
    (3807, pg_types::JSONB),
];

/// The kind the engine gives a column of type `oid` (text when it has no mapping).
pub fn pg_kind(oid: u32, typmod: i32) -> PgKind {
    match PG_ARRAYS.iter().find(|(array, _)| *array == oid) {
        Some((_, element)) => PgKind::List(Box::new(
            pg_types::scalar_kind(*element, typmod, false).unwrap_or(PgKind::Text),
        )),
        None => pg_types::scalar_kind(oid, typmod, false).unwrap_or(PgKind::Text),
    }
}

/// The pgoutput messages of an input: each preceded by its length (u16, big-endian); the
/// last one is whatever is left when its length says more.
pub fn frames(data: &[u8]) -> Vec<&[u8]> {
    let mut input = Input::new(data);
    let mut out = Vec::new();
    while !input.is_empty() {
        let len = input.u16() as usize;
        out.push(input.take(len));
    }
    out
}

/// One pgoutput input of `messages`.
pub fn encode_frames(messages: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        out.extend_from_slice(&(m.len().min(u16::MAX as usize) as u16).to_be_bytes());
        out.extend_from_slice(&m[..m.len().min(u16::MAX as usize)]);
    }
    out
}

/// A binary COPY case: the columns' kinds and how the stream is fed.
pub struct CopyCase<'a> {
    pub kinds: Vec<PgKind>,
    /// Whether the schema's fields are nullable (the engine's are; not nullable checks the
    /// error path).
    pub nullable: bool,
    /// Bytes per chunk fed to the decoder (0: all at once).
    pub chunk: usize,
    pub stream: &'a [u8],
}

/// Scalar kinds by code (`code & 0x0f`; `0x40` makes it a list of that kind).
fn pg_scalar(code: u8, input: &mut Input<'_>) -> PgKind {
    match code & 0x0f {
        0 => PgKind::Bool,
        1 => PgKind::Int16,
        2 => PgKind::Int32,
        3 => PgKind::Int64,
        4 => PgKind::Oid,
        5 => PgKind::Float32,
        6 => PgKind::Float64,
        7 => {
            // A valid decimal, as the type mapping makes them: precision 1..=38, scale
            // 0..=precision.
            let precision = 1 + input.byte() % 38;
            let scale = input.byte() % (precision + 1);
            PgKind::Decimal {
                precision,
                scale: scale as i8,
            }
        }
        8 => PgKind::Text,
        9 => PgKind::Jsonb,
        10 => PgKind::Bytea,
        11 => PgKind::Date,
        12 => PgKind::Time,
        13 => PgKind::Timestamp,
        14 => PgKind::TimestampTz,
        _ => PgKind::Uuid,
    }
}

/// A [`CopyCase`]: `[columns n][n × kind code (+2 bytes for a decimal)][flags][chunk]`,
/// then the stream. Flags bit 0: fields not nullable.
pub fn copy_case(data: &[u8]) -> CopyCase<'_> {
    let mut input = Input::new(data);
    let n = input.byte() % 17;
    let mut kinds = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let code = input.byte();
        let scalar = pg_scalar(code, &mut input);
        kinds.push(if code & 0x40 != 0 {
            PgKind::List(Box::new(scalar))
        } else {
            scalar
        });
    }
    let flags = input.byte();
    let chunk = input.byte() as usize;
    CopyCase {
        kinds,
        nullable: flags & 1 == 0,
        chunk,
        stream: input.rest(),
    }
}

/// The header of a [`copy_case`] input: each column's code bytes (a decimal's code followed
/// by its precision and scale).
pub fn encode_copy_header(columns: &[&[u8]], not_nullable: bool, chunk: u8) -> Vec<u8> {
    let mut out = vec![columns.len() as u8];
    for c in columns {
        out.extend_from_slice(c);
    }
    out.push(not_nullable as u8);
    out.push(chunk);
    out
}

/// Charsets a binlog column can have, by code (the last ones are refused or absent).
const CHARSETS: [Option<&str>; 8] = [
    Some("utf8mb4"),
    Some("utf8mb3"),
    Some("utf8"),
    Some("ascii"),
    Some("latin1"),
    Some("binary"),
    Some("cp1251"),
    None,
];

/// A binlog rows case: the table map's columns, which images each row has, and the rows.
pub struct BinlogCase<'a> {
    pub names: Vec<String>,
    pub columns: Vec<ColumnCtx>,
    pub decoders: Vec<ColumnDecoder>,
    pub before: bool,
    pub after: bool,
    pub rows: &'a [u8],
}

/// A [`BinlogCase`], or the error the engine gives for its table map:
/// `[columns n][n × (type, flags, meta length, meta…, labels)][images]`, then the rows data.
/// `type` is the column's binlog type byte; flags bit 0 is unsigned and bits 1-3 the charset
/// code; `labels` is the number of enum or set labels; images bit 0 is a before image, bit 1
/// an after image.
pub fn binlog_case(data: &[u8]) -> Result<BinlogCase<'_>, String> {
    let mut input = Input::new(data);
    let n = input.byte() % 33;
    let mut names = Vec::new();
    let mut columns = Vec::new();
    let mut decoders = Vec::new();
    for i in 0..n {
        let name = format!("c{i}");
        let column_type =
            ColumnType::try_from(input.byte()).map_err(|e| format!("column type: {e}"))?;
        let flags = input.byte();
        let meta_len = (input.byte() % 5) as usize;
        let meta = input.take(meta_len);
        let labels = input.byte() % 9;
        let charset = CHARSETS[((flags >> 1) & 7) as usize];
        let (ctx, kind) =
            row_image::column("db", "t", &name, column_type, meta, flags & 1 != 0, charset)?;
        let mut decoder = ColumnDecoder::new(kind);
        if matches!(decoder.kind, MyKind::Enum | MyKind::Set) {
            decoder.labels = (0..labels).map(|l| format!("l{l}")).collect();
        }
        names.push(name);
        columns.push(ctx);
        decoders.push(decoder);
    }
    let images = input.byte();
    Ok(BinlogCase {
        names,
        columns,
        decoders,
        before: images & 1 != 0,
        after: images & 2 != 0,
        rows: input.rest(),
    })
}

/// A table-map column for [`encode_binlog_header`].
pub struct BinlogColumn<'a> {
    /// The binlog type byte.
    pub column_type: u8,
    pub unsigned: bool,
    /// The charset's index in the list [`binlog_case`] reads (0 utf8mb4, 1 utf8mb3, 2 utf8,
    /// 3 ascii, 4 latin1, 5 binary, 6 cp1251, 7 none).
    pub charset: u8,
    pub meta: &'a [u8],
    /// Enum or set labels.
    pub labels: u8,
}

/// The header of a [`binlog_case`] input.
pub fn encode_binlog_header(columns: &[BinlogColumn<'_>], before: bool, after: bool) -> Vec<u8> {
    let mut out = vec![columns.len() as u8];
    for c in columns {
        out.push(c.column_type);
        out.push(c.unsigned as u8 | (c.charset & 7) << 1);
        out.push(c.meta.len() as u8);
        out.extend_from_slice(c.meta);
        out.push(c.labels);
    }
    out.push(before as u8 | (after as u8) << 1);
    out
}

/// The charset code of a collation id ([`BinlogColumn::charset`]), for the collations of
/// the seed tables.
pub fn charset_code(collation: u16) -> u8 {
    match collation {
        33 | 83 | 192..=223 => 1,
        11 | 65 => 3,
        5 | 8 | 15 | 31 | 47 | 48 | 49 | 94 => 4,
        63 => 5,
        _ => 0,
    }
}
