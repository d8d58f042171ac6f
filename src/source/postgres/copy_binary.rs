//! Decoder of PostgreSQL's binary COPY format into Arrow record batches.
//!
//! Input arrives in arbitrary chunks (the server sends one CopyData message per row, but
//! nothing here depends on it): a tuple split across chunks is kept until it is complete, so
//! builders only ever see whole rows. Batches close at [`BATCH_ROWS`] rows or
//! [`BATCH_BYTES`] of field data, whichever comes first, which bounds memory per reader.
//!
//! [`TextBatchBuilder`] builds the same Arrow types from PostgreSQL's text output (what
//! pgoutput sends for CDC), with the session settings of [`super::SESSION_SETTINGS`]
//! (`DateStyle=ISO`, `TimeZone=UTC`, `bytea_output=hex`, `extra_float_digits=1`), so a value
//! lands in the lake identically whether it came from the full load or from the change stream.
//!
//! Invariants, whatever the bytes (a server is outside the program, and `fuzz/` feeds both
//! decoders arbitrary input):
//! - malformed input is a [`DecodeError`] that says which column and where (row and byte
//!   offset of binary COPY), never a panic, and no allocation is sized by a length read from
//!   the input before that many bytes have arrived;
//! - a value that does not fit its Arrow type (a decimal past its precision or with more
//!   places than its scale, a date past Arrow's range) is an error, never silently changed;
//! - a NULL in a field the schema says is not nullable is an error naming the column: callers
//!   pass nullable fields (see [`crate::source::TableInfo::arrow_schema`]), because a column's
//!   `NOT NULL` is read when the table is discovered, which can be after the snapshot the rows
//!   come from.
//!
//! This module and [`super::types`] use nothing else of the crate but
//! [`crate::source::decimal`]: `fuzz/` compiles them on their own (see `fuzz/src/lib.rs`).

use std::borrow::Cow;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, ListArray, RecordBatch, RecordBatchOptions};
use arrow_buffer::{NullBufferBuilder, OffsetBuffer, ScalarBuffer};
use arrow_schema::SchemaRef;

use super::types::{Kind, list_element_field};
use crate::source::decimal::{parse_numeric, show, within_precision};

pub const BATCH_ROWS: usize = 65_536;
pub const BATCH_BYTES: usize = 8 * 1024 * 1024;

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Microseconds between 1970-01-01 (Arrow's epoch) and 2000-01-01 (PostgreSQL's).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;
const PG_EPOCH_OFFSET_DAYS: i32 = 10_957;

/// The largest header extension accepted. PostgreSQL sends none; the format allows one, but
/// a length this large is not a COPY stream, and waiting for it would hold the whole input.
const MAX_HEADER_EXTENSION: u32 = 1024 * 1024;
/// Header flag bit 16: each tuple carries an OID field, which `COPY (SELECT …)` never sends.
const FLAG_WITH_OIDS: u32 = 1 << 16;

/// A value that could not be decoded: which column, where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Index of the column, or `None` for a framing error.
    pub column: Option<usize>,
    /// Binary COPY: the index of the row in the stream (from 0), when the error is in one.
    pub row: Option<u64>,
    /// Binary COPY: the byte offset in the stream of the row (or header) with the error.
    pub offset: Option<u64>,
    pub message: String,
}

impl DecodeError {
    fn framing(message: impl Into<String>) -> Self {
        DecodeError {
            column: None,
            row: None,
            offset: None,
            message: message.into(),
        }
    }

    fn in_column(column: usize, message: String) -> Self {
        DecodeError {
            column: Some(column),
            ..DecodeError::framing(message)
        }
    }

    fn at(mut self, row: Option<u64>, offset: u64) -> Self {
        self.row = row;
        self.offset = Some(offset);
        self
    }

    /// Where the error is, for a message: ` at row 12 (byte 3456 of the COPY data)`, or
    /// nothing when unknown.
    pub fn position(&self) -> String {
        match (self.row, self.offset) {
            (Some(row), Some(offset)) => format!(" at row {row} (byte {offset} of the COPY data)"),
            (None, Some(offset)) => format!(" at byte {offset} of the COPY data"),
            (Some(row), None) => format!(" at row {row}"),
            (None, None) => String::new(),
        }
    }
}

pub struct CopyBinaryDecoder {
    schema: SchemaRef,
    columns: Vec<ColumnBuilder>,
    nullable: Vec<bool>,
    /// Bytes of an incomplete tuple (or header) carried to the next chunk.
    pending: Vec<u8>,
    /// Offset in the stream of the first byte not yet decoded (the start of `pending`).
    offset: u64,
    /// Rows decoded since the start of the stream.
    rows_total: u64,
    header_done: bool,
    finished: bool,
    rows: usize,
    bytes: usize,
    /// Field slices of the tuple being decoded, reused to avoid an allocation per row.
    fields: Vec<Option<(usize, usize)>>,
}

impl CopyBinaryDecoder {
    /// `schema` has one field per kind, of type [`Kind::data_type`]; a mismatch is an error
    /// when the first batch is built.
    pub fn new(schema: SchemaRef, kinds: &[Kind]) -> Self {
        CopyBinaryDecoder {
            nullable: schema.fields().iter().map(|f| f.is_nullable()).collect(),
            schema,
            columns: kinds.iter().map(ColumnBuilder::new).collect(),
            pending: Vec::new(),
            offset: 0,
            rows_total: 0,
            header_done: false,
            finished: false,
            rows: 0,
            bytes: 0,
            fields: Vec::with_capacity(kinds.len()),
        }
    }

    /// Decodes `chunk`, calling `emit` with each full batch. After an error the decoder is
    /// done: the row in error may be partly appended.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        emit: &mut impl FnMut(RecordBatch),
    ) -> Result<(), DecodeError> {
        if self.pending.is_empty() {
            let used = self.decode_tuples(chunk, emit)?;
            self.offset += used as u64;
            self.pending
                .extend_from_slice(chunk.get(used..).unwrap_or_default());
        } else {
            let mut buf = std::mem::take(&mut self.pending);
            buf.extend_from_slice(chunk);
            let used = self.decode_tuples(&buf, emit)?;
            self.offset += used as u64;
            buf.drain(..used.min(buf.len()));
            self.pending = buf;
        }
        Ok(())
    }

    /// Ends the input: checks the trailer was seen and returns the last, partial batch.
    pub fn finish(mut self) -> Result<Option<RecordBatch>, DecodeError> {
        if !self.finished {
            return Err(DecodeError::framing(
                "COPY data ended without its trailer (the stream was cut)",
            )
            .at(None, self.offset));
        }
        if !self.pending.is_empty() {
            return Err(DecodeError::framing("data after the COPY trailer").at(None, self.offset));
        }
        if self.rows == 0 {
            return Ok(None);
        }
        self.take_batch().map(Some)
    }

    fn take_batch(&mut self) -> Result<RecordBatch, DecodeError> {
        let arrays: Vec<ArrayRef> = self.columns.iter_mut().map(ColumnBuilder::finish).collect();
        self.rows = 0;
        self.bytes = 0;
        // Types come from the kinds and nulls were checked per value: a failure here is a
        // schema that does not match the kinds (a caller's mistake), reported, not a panic.
        RecordBatch::try_new(self.schema.clone(), arrays).map_err(|e| {
            DecodeError::framing(format!(
                "the decoded columns do not fit the table's schema ({e})"
            ))
        })
    }

    /// Decodes every complete tuple in `buf`; returns how many bytes were used.
    fn decode_tuples(
        &mut self,
        buf: &[u8],
        emit: &mut impl FnMut(RecordBatch),
    ) -> Result<usize, DecodeError> {
        let mut pos = 0;
        if !self.header_done {
            let Some(header) = buf.get(..19) else {
                return Ok(0);
            };
            let header_error = |m: String| DecodeError::framing(m).at(None, self.offset);
            if !header.starts_with(SIGNATURE) {
                return Err(header_error("missing binary COPY signature".into()));
            }
            let flags = be_u32(header, 11).unwrap_or(0);
            if flags & FLAG_WITH_OIDS != 0 || flags >> 17 != 0 {
                return Err(header_error(format!(
                    "COPY header flags 0x{flags:08x}: OIDs or flags this reader does not know"
                )));
            }
            let extension = be_u32(header, 15).unwrap_or(0);
            if extension > MAX_HEADER_EXTENSION {
                return Err(header_error(format!(
                    "COPY header extension of {extension} bytes (at most {MAX_HEADER_EXTENSION} are read)"
                )));
            }
            let end = 19 + extension as usize;
            if buf.len() < end {
                return Ok(0);
            }
            pos = end;
            self.header_done = true;
        }
        let ncols = self.columns.len();
        while let Some(&[hi, lo]) = buf.get(pos..pos + 2) {
            let row_offset = self.offset + pos as u64;
            if self.finished {
                return Err(
                    DecodeError::framing("data after the COPY trailer").at(None, row_offset)
                );
            }
            let count = i16::from_be_bytes([hi, lo]);
            if count == -1 {
                self.finished = true;
                pos += 2;
                continue;
            }
            if usize::try_from(count).ok() != Some(ncols) {
                return Err(DecodeError::framing(format!(
                    "tuple has {count} fields, expected {ncols}"
                ))
                .at(Some(self.rows_total), row_offset));
            }
            // First pass: is the whole tuple here? Record field slices.
            self.fields.clear();
            let mut p = pos + 2;
            let mut complete = true;
            for _ in 0..ncols {
                let Some(&[a, b, c, d]) = buf.get(p..p + 4) else {
                    complete = false;
                    break;
                };
                p += 4;
                // A negative length is NULL; a length past the data waits for more.
                match usize::try_from(i32::from_be_bytes([a, b, c, d])) {
                    Err(_) => self.fields.push(None),
                    Ok(len) if len <= buf.len() - p => {
                        self.fields.push(Some((p, len)));
                        p += len;
                    }
                    Ok(_) => {
                        complete = false;
                        break;
                    }
                }
            }
            if !complete {
                break;
            }
            for (i, field) in self.fields.iter().enumerate() {
                let value = match field {
                    Some((start, len)) => Some(buf.get(*start..start + len).ok_or_else(|| {
                        DecodeError::framing("internal error: a field past the data")
                    })?),
                    None => None,
                };
                let result = match self.columns.get_mut(i) {
                    None => Err("more fields than columns".to_string()),
                    Some(_)
                        if value.is_none() && !self.nullable.get(i).copied().unwrap_or(true) =>
                    {
                        Err(NOT_NULLABLE.to_string())
                    }
                    Some(column) => column.append(value),
                };
                result.map_err(|message| {
                    DecodeError::in_column(i, message).at(Some(self.rows_total), row_offset)
                })?;
            }
            self.bytes += p - pos;
            self.rows += 1;
            self.rows_total += 1;
            pos = p;
            if self.rows >= BATCH_ROWS || self.bytes >= BATCH_BYTES {
                emit(self.take_batch()?);
            }
        }
        Ok(pos)
    }
}

/// The message for a NULL in a field the schema says is not nullable.
const NOT_NULLABLE: &str =
    "NULL in a column whose field is not nullable (the table's schema must have nullable fields)";

/// Builds record batches from rows of PostgreSQL text values (pgoutput's `t` values), into
/// exactly the Arrow types and values [`CopyBinaryDecoder`] produces from binary COPY.
///
/// A row is appended whole or not at all: every value is parsed before any is appended, so
/// after an error the builder holds the rows before it and can go on.
pub struct TextBatchBuilder {
    schema: SchemaRef,
    columns: Vec<ColumnBuilder>,
    nullable: Vec<bool>,
    rows: usize,
    bytes: usize,
}

impl TextBatchBuilder {
    /// `schema` has one field per kind, of type [`Kind::data_type`], like the full load's.
    ///
    /// # Panics
    /// When `schema` does not match `kinds` (a programming error, not a data error).
    pub fn new(schema: SchemaRef, kinds: &[Kind]) -> Self {
        assert_eq!(
            schema.fields().len(),
            kinds.len(),
            "TextBatchBuilder: the schema has {} fields for {} kinds",
            schema.fields().len(),
            kinds.len()
        );
        for (field, kind) in schema.fields().iter().zip(kinds) {
            assert_eq!(
                field.data_type(),
                &kind.data_type(),
                "TextBatchBuilder: field {} does not match its kind {kind:?}",
                field.name()
            );
        }
        TextBatchBuilder {
            nullable: schema.fields().iter().map(|f| f.is_nullable()).collect(),
            schema,
            columns: kinds.iter().map(ColumnBuilder::new).collect(),
            rows: 0,
            bytes: 0,
        }
    }

    /// Appends one row: one value per column, in schema order, `None` for SQL NULL.
    /// On error (its `column` says which value) nothing of the row is appended.
    pub fn append_row<'a>(
        &mut self,
        values: impl IntoIterator<Item = Option<&'a str>>,
    ) -> Result<(), DecodeError> {
        let ncols = self.columns.len();
        let mut parsed = Vec::with_capacity(ncols);
        let mut bytes = 0;
        for (i, value) in values.into_iter().enumerate() {
            let Some(column) = self.columns.get(i) else {
                return Err(DecodeError::framing(format!(
                    "row has more than the table's {ncols} values"
                )));
            };
            let error = |message| DecodeError::in_column(i, message);
            match value {
                None if !self.nullable.get(i).copied().unwrap_or(true) => {
                    return Err(error(NOT_NULLABLE.into()));
                }
                None => parsed.push(None),
                Some(v) => {
                    bytes += v.len();
                    parsed.push(Some(column.parse_text(Cow::Borrowed(v)).map_err(error)?));
                }
            }
        }
        if parsed.len() != ncols {
            return Err(DecodeError::framing(format!(
                "row has {} values, the table has {ncols} columns",
                parsed.len()
            )));
        }
        for (i, (column, value)) in self.columns.iter_mut().zip(parsed).enumerate() {
            // Cannot fail: each value was parsed by its own column.
            column
                .append_parsed(value)
                .map_err(|message| DecodeError::in_column(i, message))?;
        }
        self.rows += 1;
        self.bytes += bytes;
        Ok(())
    }

    /// Rows appended since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Bytes of text appended since the last [`finish`](Self::finish), to bound batches.
    pub fn text_bytes(&self) -> usize {
        self.bytes
    }

    /// The rows appended so far as a batch (possibly empty); the builder starts over.
    pub fn finish(&mut self) -> RecordBatch {
        let arrays: Vec<ArrayRef> = self.columns.iter_mut().map(ColumnBuilder::finish).collect();
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows));
        self.rows = 0;
        self.bytes = 0;
        // Types were checked in `new`, nulls in `append_row`: this cannot fail.
        RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options)
            .unwrap_or_else(|e| panic!("text builder built arrays that do not fit its schema: {e}"))
    }
}

/// The big-endian u32 at `at`, if `b` holds it.
fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    let bytes = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

fn fixed<const N: usize>(v: &[u8], what: &str) -> Result<[u8; N], String> {
    v.try_into()
        .map_err(|_| format!("{what} value has {} bytes, expected {N}", v.len()))
}

fn text(v: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(v)
        .map_err(|e| format!("text is not valid UTF-8 ({e}); is the database encoding SQL_ASCII?"))
}

/// One Arrow builder per column; lists nest a child builder.
enum ColumnBuilder {
    Bool(BooleanBuilder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Oid(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Decimal(Decimal128Builder, u8, i8),
    Text(StringBuilder),
    Jsonb(StringBuilder),
    Uuid(StringBuilder, String),
    Bytea(BinaryBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    TimestampTz(TimestampMicrosecondBuilder),
    List {
        element: Kind,
        offsets: Vec<i32>,
        validity: NullBufferBuilder,
        child: Box<ColumnBuilder>,
    },
}

impl ColumnBuilder {
    fn new(kind: &Kind) -> Self {
        match kind {
            Kind::Bool => ColumnBuilder::Bool(BooleanBuilder::new()),
            Kind::Int16 => ColumnBuilder::Int16(Int16Builder::new()),
            Kind::Int32 => ColumnBuilder::Int32(Int32Builder::new()),
            Kind::Int64 => ColumnBuilder::Int64(Int64Builder::new()),
            Kind::Oid => ColumnBuilder::Oid(Int64Builder::new()),
            Kind::Float32 => ColumnBuilder::Float32(Float32Builder::new()),
            Kind::Float64 => ColumnBuilder::Float64(Float64Builder::new()),
            Kind::Decimal { precision, scale } => {
                ColumnBuilder::Decimal(Decimal128Builder::new(), *precision, *scale)
            }
            Kind::Text => ColumnBuilder::Text(StringBuilder::new()),
            Kind::Jsonb => ColumnBuilder::Jsonb(StringBuilder::new()),
            Kind::Uuid => ColumnBuilder::Uuid(StringBuilder::new(), String::with_capacity(36)),
            Kind::Bytea => ColumnBuilder::Bytea(BinaryBuilder::new()),
            Kind::Date => ColumnBuilder::Date(Date32Builder::new()),
            Kind::Time => ColumnBuilder::Time(Time64MicrosecondBuilder::new()),
            Kind::Timestamp => ColumnBuilder::Timestamp(TimestampMicrosecondBuilder::new()),
            Kind::TimestampTz => ColumnBuilder::TimestampTz(TimestampMicrosecondBuilder::new()),
            Kind::List(element) => ColumnBuilder::List {
                element: (**element).clone(),
                offsets: vec![0],
                validity: NullBufferBuilder::new(0),
                child: Box::new(ColumnBuilder::new(element)),
            },
        }
    }

    fn append(&mut self, value: Option<&[u8]>) -> Result<(), String> {
        let Some(v) = value else {
            self.append_null();
            return Ok(());
        };
        match self {
            ColumnBuilder::Bool(b) => b.append_value(fixed::<1>(v, "bool")?[0] != 0),
            ColumnBuilder::Int16(b) => b.append_value(i16::from_be_bytes(fixed(v, "int2")?)),
            ColumnBuilder::Int32(b) => b.append_value(i32::from_be_bytes(fixed(v, "int4")?)),
            ColumnBuilder::Int64(b) => b.append_value(i64::from_be_bytes(fixed(v, "int8")?)),
            ColumnBuilder::Oid(b) => b.append_value(u32::from_be_bytes(fixed(v, "oid")?) as i64),
            ColumnBuilder::Float32(b) => b.append_value(f32::from_be_bytes(fixed(v, "float4")?)),
            ColumnBuilder::Float64(b) => b.append_value(f64::from_be_bytes(fixed(v, "float8")?)),
            ColumnBuilder::Decimal(b, precision, scale) => {
                b.append_value(within_precision(decode_numeric(v, *scale)?, *precision)?)
            }
            ColumnBuilder::Text(b) => b.append_value(text(v)?),
            ColumnBuilder::Jsonb(b) => match v.split_first() {
                Some((1, rest)) => b.append_value(text(rest)?),
                _ => return Err("unknown jsonb binary version".into()),
            },
            ColumnBuilder::Uuid(b, scratch) => {
                let bytes: [u8; 16] = fixed(v, "uuid")?;
                format_uuid(&bytes, scratch);
                b.append_value(scratch.as_str());
            }
            ColumnBuilder::Bytea(b) => b.append_value(v),
            ColumnBuilder::Date(b) => {
                let days = i32::from_be_bytes(fixed(v, "date")?);
                b.append_value(match days {
                    i32::MAX | i32::MIN => days, // ±infinity
                    d => d
                        .checked_add(PG_EPOCH_OFFSET_DAYS)
                        .ok_or_else(|| format!("date {d} days after 2000-01-01 is out of range"))?,
                })
            }
            ColumnBuilder::Time(b) => b.append_value(i64::from_be_bytes(fixed(v, "time")?)),
            ColumnBuilder::Timestamp(b) | ColumnBuilder::TimestampTz(b) => {
                let micros = i64::from_be_bytes(fixed(v, "timestamp")?);
                b.append_value(match micros {
                    i64::MAX | i64::MIN => micros, // ±infinity
                    m => m.saturating_add(PG_EPOCH_OFFSET_MICROS),
                })
            }
            ColumnBuilder::List {
                element,
                offsets,
                validity,
                child,
            } => {
                let last = offsets.last().copied().unwrap_or(0);
                let count = decode_array(v, element, child)?;
                let next = i32::try_from(count)
                    .ok()
                    .and_then(|n| last.checked_add(n))
                    .ok_or(TOO_MANY_ELEMENTS)?;
                offsets.push(next);
                validity.append_non_null();
            }
        }
        Ok(())
    }

    /// Appends one value in PostgreSQL's text output format (`None` is SQL NULL), as the
    /// same Arrow value [`append`](Self::append) gives for its binary form. On error
    /// nothing is appended.
    #[cfg_attr(not(test), allow(dead_code))] // rows go through parse_text + append_parsed
    fn append_text(&mut self, value: Option<&str>) -> Result<(), String> {
        let parsed = value
            .map(|v| self.parse_text(Cow::Borrowed(v)))
            .transpose()?;
        self.append_parsed(parsed)
    }

    /// Parses a text value for this column without appending it.
    fn parse_text<'a>(&self, v: Cow<'a, str>) -> Result<Parsed<'a>, String> {
        Ok(match self {
            ColumnBuilder::Bool(_) => Parsed::Bool(parse_bool(&v)?),
            ColumnBuilder::Int16(_) => Parsed::Int16(parse_number(&v, "int2")?),
            ColumnBuilder::Int32(_) => Parsed::Int32(parse_number(&v, "int4")?),
            ColumnBuilder::Int64(_) => Parsed::Int64(parse_number(&v, "int8")?),
            ColumnBuilder::Oid(_) => Parsed::Int64(parse_number::<u32>(&v, "oid")?.into()),
            // Rust's parser reads `NaN`, `Infinity` and `-Infinity`, and rounds correctly,
            // so PostgreSQL's shortest exact output gives back the very same float.
            ColumnBuilder::Float32(_) => Parsed::Float32(parse_number(&v, "float4")?),
            ColumnBuilder::Float64(_) => Parsed::Float64(parse_number(&v, "float8")?),
            ColumnBuilder::Decimal(_, precision, scale) => {
                Parsed::Decimal(within_precision(parse_numeric(&v, *scale)?, *precision)?)
            }
            ColumnBuilder::Text(_) | ColumnBuilder::Jsonb(_) | ColumnBuilder::Uuid(..) => {
                Parsed::Text(v)
            }
            ColumnBuilder::Bytea(_) => Parsed::Bytes(parse_bytea(&v)?),
            ColumnBuilder::Date(_) => Parsed::Date(parse_date(&v)?),
            ColumnBuilder::Time(_) => Parsed::Time(parse_time(&v)?),
            ColumnBuilder::Timestamp(_) => Parsed::Timestamp(parse_timestamp(&v, false)?),
            ColumnBuilder::TimestampTz(_) => Parsed::Timestamp(parse_timestamp(&v, true)?),
            ColumnBuilder::List { element, child, .. } => {
                let elements: Vec<Option<Cow<'a, str>>> = match v {
                    Cow::Borrowed(s) => parse_array_literal(s)?,
                    Cow::Owned(s) => parse_array_literal(&s)?
                        .into_iter()
                        .map(|e| e.map(|e| Cow::Owned(e.into_owned())))
                        .collect(),
                };
                let mut parsed = Vec::with_capacity(elements.len());
                for e in elements {
                    parsed.push(
                        e.map(|e| child.parse_text(e))
                            .transpose()
                            .map_err(|m| format!("array element of type {element:?}: {m}"))?,
                    );
                }
                Parsed::List(parsed)
            }
        })
    }

    /// Appends a value [`parse_text`](Self::parse_text) of this column returned.
    fn append_parsed(&mut self, value: Option<Parsed<'_>>) -> Result<(), String> {
        let Some(value) = value else {
            self.append_null();
            return Ok(());
        };
        match (self, value) {
            (ColumnBuilder::Bool(b), Parsed::Bool(v)) => b.append_value(v),
            (ColumnBuilder::Int16(b), Parsed::Int16(v)) => b.append_value(v),
            (ColumnBuilder::Int32(b), Parsed::Int32(v)) => b.append_value(v),
            (ColumnBuilder::Int64(b) | ColumnBuilder::Oid(b), Parsed::Int64(v)) => {
                b.append_value(v)
            }
            (ColumnBuilder::Float32(b), Parsed::Float32(v)) => b.append_value(v),
            (ColumnBuilder::Float64(b), Parsed::Float64(v)) => b.append_value(v),
            (ColumnBuilder::Decimal(b, ..), Parsed::Decimal(v)) => b.append_value(v),
            (
                ColumnBuilder::Text(b) | ColumnBuilder::Jsonb(b) | ColumnBuilder::Uuid(b, _),
                Parsed::Text(v),
            ) => b.append_value(v),
            (ColumnBuilder::Bytea(b), Parsed::Bytes(v)) => b.append_value(v),
            (ColumnBuilder::Date(b), Parsed::Date(v)) => b.append_value(v),
            (ColumnBuilder::Time(b), Parsed::Time(v)) => b.append_value(v),
            (ColumnBuilder::Timestamp(b) | ColumnBuilder::TimestampTz(b), Parsed::Timestamp(v)) => {
                b.append_value(v)
            }
            (
                ColumnBuilder::List {
                    offsets,
                    validity,
                    child,
                    ..
                },
                Parsed::List(elements),
            ) => {
                let last = offsets.last().copied().unwrap_or(0);
                let next = i32::try_from(elements.len())
                    .ok()
                    .and_then(|n| last.checked_add(n))
                    .ok_or(TOO_MANY_ELEMENTS)?;
                for e in elements {
                    child.append_parsed(e)?;
                }
                offsets.push(next);
                validity.append_non_null();
            }
            _ => return Err("internal error: value parsed for a column of another type".into()),
        }
        Ok(())
    }

    fn append_null(&mut self) {
        match self {
            ColumnBuilder::Bool(b) => b.append_null(),
            ColumnBuilder::Int16(b) => b.append_null(),
            ColumnBuilder::Int32(b) => b.append_null(),
            ColumnBuilder::Int64(b) | ColumnBuilder::Oid(b) => b.append_null(),
            ColumnBuilder::Float32(b) => b.append_null(),
            ColumnBuilder::Float64(b) => b.append_null(),
            ColumnBuilder::Decimal(b, ..) => b.append_null(),
            ColumnBuilder::Text(b) | ColumnBuilder::Jsonb(b) | ColumnBuilder::Uuid(b, _) => {
                b.append_null()
            }
            ColumnBuilder::Bytea(b) => b.append_null(),
            ColumnBuilder::Date(b) => b.append_null(),
            ColumnBuilder::Time(b) => b.append_null(),
            ColumnBuilder::Timestamp(b) | ColumnBuilder::TimestampTz(b) => b.append_null(),
            ColumnBuilder::List {
                offsets, validity, ..
            } => {
                let last = *offsets.last().unwrap_or(&0);
                offsets.push(last);
                validity.append_null();
            }
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Bool(b) => Arc::new(b.finish()),
            ColumnBuilder::Int16(b) => Arc::new(b.finish()),
            ColumnBuilder::Int32(b) => Arc::new(b.finish()),
            ColumnBuilder::Int64(b) | ColumnBuilder::Oid(b) => Arc::new(b.finish()),
            ColumnBuilder::Float32(b) => Arc::new(b.finish()),
            ColumnBuilder::Float64(b) => Arc::new(b.finish()),
            ColumnBuilder::Decimal(b, precision, scale) => Arc::new(
                b.finish()
                    .with_precision_and_scale(*precision, *scale)
                    .unwrap_or_else(|e| panic!("precision checked by the type mapping: {e}")),
            ),
            ColumnBuilder::Text(b) | ColumnBuilder::Jsonb(b) | ColumnBuilder::Uuid(b, _) => {
                Arc::new(b.finish())
            }
            ColumnBuilder::Bytea(b) => Arc::new(b.finish()),
            ColumnBuilder::Date(b) => Arc::new(b.finish()),
            ColumnBuilder::Time(b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(b) => Arc::new(b.finish()),
            ColumnBuilder::TimestampTz(b) => Arc::new(b.finish().with_timezone("UTC")),
            ColumnBuilder::List {
                element,
                offsets,
                validity,
                child,
            } => {
                let offsets =
                    OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(offsets, vec![0])));
                Arc::new(ListArray::new(
                    list_element_field(element).into(),
                    offsets,
                    child.finish(),
                    validity.finish(),
                ))
            }
        }
    }
}

const TOO_MANY_ELEMENTS: &str = "more than 2^31 array elements in one batch";

/// Decodes an array value into `child`, returning how many elements it appended.
fn decode_array(v: &[u8], element: &Kind, child: &mut ColumnBuilder) -> Result<usize, String> {
    let header = |i: usize| -> Result<i32, String> {
        i.checked_add(4)
            .and_then(|end| v.get(i..end))
            .and_then(|b| b.try_into().ok())
            .map(i32::from_be_bytes)
            .ok_or_else(|| "truncated array header".to_string())
    };
    let ndim = header(0)?;
    if ndim == 0 {
        return Ok(0);
    }
    let ndim = usize::try_from(ndim)
        .ok()
        .filter(|n| (1..=MAX_ARRAY_DIMENSIONS).contains(n))
        .ok_or_else(|| format!("array with {ndim} dimensions"))?;
    // The element count is only a bound on the loop: each element reads its own length
    // first, so a count larger than the data ends in "truncated", not in an allocation.
    let mut count: usize = 1;
    for d in 0..ndim {
        // Each dimension: its size, then its lower bound (which is not used, but is there).
        header(16 + d * 8)?;
        let size = header(12 + d * 8)?;
        let size = usize::try_from(size).map_err(|_| format!("array dimension of size {size}"))?;
        count = count.saturating_mul(size);
    }
    let mut pos = 12 + ndim * 8;
    for _ in 0..count {
        let len = header(pos)?;
        pos += 4;
        match usize::try_from(len) {
            Err(_) => child.append_null(),
            Ok(len) => {
                let bytes = pos
                    .checked_add(len)
                    .and_then(|end| v.get(pos..end))
                    .ok_or("truncated array element")?;
                child
                    .append(Some(bytes))
                    .map_err(|e| format!("array element of type {element:?}: {e}"))?;
                pos += len;
            }
        }
    }
    if pos != v.len() {
        return Err(format!(
            "array value has {} bytes after its {count} elements",
            v.len() - pos
        ));
    }
    Ok(count)
}

/// PostgreSQL's binary numeric (base-10000 digits) as an unscaled i128 at `scale`. Digits
/// that the scale would drop must be zeros (as the text path requires), so no value is
/// silently changed.
fn decode_numeric(v: &[u8], scale: i8) -> Result<i128, String> {
    let word = |i: usize| -> Option<u16> {
        let b = v.get(2 * i..2 * i + 2)?;
        Some(u16::from_be_bytes(b.try_into().ok()?))
    };
    let (Some(ndigits), Some(weight), Some(sign), Some(_dscale)) =
        (word(0), word(1), word(2), word(3))
    else {
        return Err("truncated numeric".into());
    };
    let ndigits = ndigits as usize;
    let weight = weight as i16 as i32;
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Err("NaN does not fit a decimal column".into()),
        0xD000 | 0xF000 => return Err("infinity does not fit a decimal column".into()),
        _ => return Err(format!("numeric with an unknown sign 0x{sign:04x}")),
    }
    if ndigits > i16::MAX as usize {
        return Err(format!("numeric with {} digits", ndigits as i16));
    }
    if v.len() != 8 + ndigits * 2 {
        return Err(format!(
            "numeric of {ndigits} digits has {} bytes, expected {}",
            v.len(),
            8 + ndigits * 2
        ));
    }
    let mut unscaled: i128 = 0;
    for i in 0..ndigits {
        let digit = word(4 + i).ok_or("truncated numeric digits")?;
        if digit > 9999 {
            return Err(format!("numeric digit {digit} is not a base-10000 digit"));
        }
        let digit = i128::from(digit);
        // The digit's least significant decimal position, shifted by the column's scale.
        let exponent = 4 * (weight - i as i32) + scale as i32;
        let term = if exponent >= 0 {
            10i128
                .checked_pow(exponent as u32)
                .and_then(|p| p.checked_mul(digit))
        } else if exponent > -4 {
            let p = 10i128.pow((-exponent) as u32);
            if digit % p != 0 {
                return Err(format!(
                    "numeric has more decimal places than the column's scale {scale}"
                ));
            }
            Some(digit / p)
        } else if digit != 0 {
            return Err(format!(
                "numeric has more decimal places than the column's scale {scale}"
            ));
        } else {
            Some(0)
        };
        unscaled = term
            .and_then(|t| unscaled.checked_add(t))
            .ok_or("numeric value exceeds 38 digits")?;
    }
    Ok(if sign == 0x4000 { -unscaled } else { unscaled })
}

fn format_uuid(b: &[u8; 16], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.clear();
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(HEX[(byte >> 4) as usize] as char);
        out.push(HEX[(byte & 0xf) as usize] as char);
    }
}

/// A text value parsed for one column, not yet appended: parsing a whole row before
/// appending any of it keeps rows atomic.
enum Parsed<'a> {
    Bool(bool),
    Int16(i16),
    Int32(i32),
    Int64(i64),
    Float32(f32),
    Float64(f64),
    Decimal(i128),
    Text(Cow<'a, str>),
    Bytes(Vec<u8>),
    Date(i32),
    Time(i64),
    Timestamp(i64),
    List(Vec<Option<Parsed<'a>>>),
}

/// `v` for an error message, cut to a readable length.
fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "t" | "true" => Ok(true),
        "f" | "false" => Ok(false),
        _ => Err(format!("invalid bool {}", show(v))),
    }
}

fn parse_number<T: std::str::FromStr>(v: &str, what: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("invalid {what} {}", show(v)))
}

/// bytea's hex output (`\x0102`); the escape format is read too.
fn parse_bytea(v: &str) -> Result<Vec<u8>, String> {
    let invalid = || format!("invalid bytea {}", show(v));
    if let Some(hex) = v.strip_prefix("\\x") {
        let nibble = |b: u8| match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        };
        let hex = hex.as_bytes();
        if hex.len() % 2 != 0 {
            return Err(invalid());
        }
        return hex
            .chunks_exact(2)
            .map(|pair| match pair {
                [hi, lo] => Some(nibble(*hi)? << 4 | nibble(*lo)?),
                _ => None,
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(invalid);
    }
    let mut out = Vec::with_capacity(v.len());
    let mut bytes = v.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'\\') => out.push(b'\\'),
            Some(d1 @ b'0'..=b'3') => {
                let mut value = d1 - b'0';
                for _ in 0..2 {
                    match bytes.next() {
                        Some(d @ b'0'..=b'7') => value = value << 3 | (d - b'0'),
                        _ => return Err(invalid()),
                    }
                }
                out.push(value);
            }
            _ => return Err(invalid()),
        }
    }
    Ok(out)
}

/// Splits the ` BC` suffix PostgreSQL puts after dates and timestamps before year 1.
fn strip_bc(v: &str) -> (&str, bool) {
    match v.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (v, false),
    }
}

/// An unsigned decimal field of 1 to `max_len` ASCII digits.
fn digits(s: &str, max_len: usize) -> Option<i64> {
    if s.is_empty() || s.len() > max_len || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `YYYY-MM-DD` (the year may have more digits; `bc` for a ` BC` suffix) as days since
/// 1970-01-01 in the proleptic Gregorian calendar, as PostgreSQL counts.
fn parse_ymd(s: &str, bc: bool) -> Option<i64> {
    let mut parts = s.splitn(3, '-');
    let year = digits(parts.next()?, 8)?;
    let month = digits(parts.next()?, 2)?;
    let day = digits(parts.next()?, 2)?;
    if year < 1 {
        return None;
    }
    // Year 1 BC is astronomical year 0.
    let year = if bc { 1 - year } else { year };
    let leap = year.rem_euclid(4) == 0 && (year.rem_euclid(100) != 0 || year.rem_euclid(400) == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if !(1..=month_days).contains(&day) {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    Some(era * 146_097 + day_of_era - 719_468)
}

/// `HH:MM:SS[.ffffff]` as microseconds since midnight (up to `24:00:00`).
fn parse_hms(s: &str) -> Option<i64> {
    let mut parts = s.splitn(3, ':');
    let hours = digits(parts.next()?, 2)?;
    let minutes = digits(parts.next()?, 2)?;
    let last = parts.next()?;
    let (seconds, fraction) = match last.split_once('.') {
        Some((seconds, fraction)) => (seconds, Some(fraction)),
        None => (last, None),
    };
    let seconds = digits(seconds, 2)?;
    let micros = match fraction {
        None => 0,
        Some(f) => digits(f, 6)? * 10i64.pow(6 - f.len() as u32),
    };
    if minutes > 59 || seconds > 60 {
        return None;
    }
    let total = ((hours * 60 + minutes) * 60 + seconds) * 1_000_000 + micros;
    (total <= 86_400_000_000).then_some(total)
}

/// `+HH`, `+HH:MM` or `+HH:MM:SS` (or `-`) as seconds east of UTC.
fn parse_offset(s: &str) -> Option<i64> {
    let (sign, rest) = match s.split_at_checked(1)? {
        ("+", rest) => (1, rest),
        ("-", rest) => (-1, rest),
        _ => return None,
    };
    let mut seconds = 0;
    let mut count = 0;
    for (i, part) in rest.split(':').enumerate() {
        let value = digits(part, 2)?;
        if i > 2 || (i > 0 && value > 59) {
            return None;
        }
        seconds += value * [3600, 60, 1].get(i)?;
        count += 1;
    }
    (count > 0).then_some(sign * seconds)
}

/// A date as days since 1970-01-01; ±infinity as `i32::MAX`/`i32::MIN` like binary COPY.
fn parse_date(v: &str) -> Result<i32, String> {
    match v {
        "infinity" => return Ok(i32::MAX),
        "-infinity" => return Ok(i32::MIN),
        _ => {}
    }
    let (s, bc) = strip_bc(v);
    parse_ymd(s, bc)
        .and_then(|days| i32::try_from(days).ok())
        .ok_or_else(|| format!("invalid date {}", show(v)))
}

fn parse_time(v: &str) -> Result<i64, String> {
    parse_hms(v).ok_or_else(|| format!("invalid time {}", show(v)))
}

/// A timestamp (`with_zone`: timestamptz, whose offset is subtracted) as µs since the UNIX
/// epoch; ±infinity as `i64::MAX`/`i64::MIN`, and saturating, like binary COPY.
fn parse_timestamp(v: &str, with_zone: bool) -> Result<i64, String> {
    match v {
        "infinity" => return Ok(i64::MAX),
        "-infinity" => return Ok(i64::MIN),
        _ => {}
    }
    let invalid = || {
        let what = if with_zone {
            "timestamptz"
        } else {
            "timestamp"
        };
        format!("invalid {what} {}", show(v))
    };
    let (s, bc) = strip_bc(v);
    let (date, rest) = s.split_once(' ').ok_or_else(invalid)?;
    let (time, offset) = match rest.find(['+', '-']) {
        Some(i) => {
            let (time, offset) = rest.split_at_checked(i).ok_or_else(invalid)?;
            (time, Some(offset))
        }
        None => (rest, None),
    };
    let offset_seconds = match offset {
        None => 0,
        Some(o) if with_zone => parse_offset(o).ok_or_else(invalid)?,
        Some(_) => {
            return Err(format!(
                "{}: a timestamp without time zone has an offset",
                invalid()
            ));
        }
    };
    let days = parse_ymd(date, bc).ok_or_else(invalid)?;
    let time = parse_hms(time).ok_or_else(invalid)?;
    let micros = i128::from(days) * 86_400_000_000 + i128::from(time)
        - i128::from(offset_seconds) * 1_000_000;
    // The binary path saturates at the ends of the range; so does this.
    Ok(micros.clamp(i64::MIN.into(), i64::MAX.into()) as i64)
}

/// The deepest array PostgreSQL has (MAXDIM).
const MAX_ARRAY_DIMENSIONS: usize = 6;

/// The elements of an array literal (`{1,2,NULL}`, `{{1,2},{3,4}}`, `[0:1]={"a b",x}`),
/// flattened in row order; `None` for an unquoted `NULL`. Elements without escapes borrow
/// from `v`.
fn parse_array_literal(v: &str) -> Result<Vec<Option<Cow<'_, str>>>, String> {
    let invalid = |why: &str| format!("invalid array literal {}: {why}", show(v));
    let mut body = v.trim_start();
    if body.starts_with('[') {
        // Dimension decoration, when a lower bound is not 1: `[0:1][1:2]=`.
        let (decoration, rest) = body
            .split_once('=')
            .ok_or_else(|| invalid("dimensions without '='"))?;
        if !decoration
            .bytes()
            .all(|b| b.is_ascii_digit() || b"[]:+- ".contains(&b))
        {
            return Err(invalid("malformed dimensions"));
        }
        body = rest.trim_start();
    }
    let mut parser = ArrayParser {
        s: body,
        pos: 0,
        out: Vec::new(),
    };
    parser.level(1).map_err(invalid)?;
    parser.skip_whitespace();
    if parser.pos != body.len() {
        return Err(invalid("text after the closing '}'"));
    }
    Ok(parser.out)
}

struct ArrayParser<'a> {
    s: &'a str,
    /// Byte position; only ever moved past ASCII bytes or whole characters.
    pos: usize,
    out: Vec<Option<Cow<'a, str>>>,
}

impl<'a> ArrayParser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or_default()
    }

    fn skip_whitespace(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    /// One `{…}` level, its elements appended to `out`.
    fn level(&mut self, depth: usize) -> Result<(), &'static str> {
        if depth > MAX_ARRAY_DIMENSIONS {
            return Err("more than 6 dimensions");
        }
        if self.peek() != Some(b'{') {
            return Err("expected '{'");
        }
        self.pos += 1;
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.skip_whitespace();
            match self.peek() {
                Some(b'{') => self.level(depth + 1)?,
                Some(b'"') => {
                    let element = self.quoted()?;
                    self.out.push(Some(element));
                }
                Some(_) => {
                    let element = self.unquoted()?;
                    self.out.push(element);
                }
                None => return Err("unexpected end"),
            }
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(_) => return Err("expected ',' or '}' after an element"),
                None => return Err("unexpected end"),
            }
        }
    }

    /// A `"…"` element: `\` escapes the next character.
    fn quoted(&mut self) -> Result<Cow<'a, str>, &'static str> {
        self.pos += 1; // the opening quote
        let mut owned: Option<String> = None;
        loop {
            let rest = self.rest();
            let i = rest
                .find(['"', '\\'])
                .ok_or("unterminated quoted element")?;
            let (segment, tail) = rest.split_at_checked(i).ok_or("bad character boundary")?;
            let mut tail = tail.chars();
            match tail.next() {
                Some('"') => {
                    self.pos += i + 1;
                    return Ok(match owned {
                        Some(mut o) => {
                            o.push_str(segment);
                            Cow::Owned(o)
                        }
                        None => Cow::Borrowed(segment),
                    });
                }
                _ => {
                    let escaped = tail.next().ok_or("unterminated quoted element")?;
                    let o = owned.get_or_insert_with(String::new);
                    o.push_str(segment);
                    o.push(escaped);
                    self.pos += i + 1 + escaped.len_utf8();
                }
            }
        }
    }

    /// An unquoted element up to `,` or `}`: trailing whitespace dropped, `\` escapes the
    /// next character, and `NULL` (any case, unescaped) is null.
    fn unquoted(&mut self) -> Result<Option<Cow<'a, str>>, &'static str> {
        let rest = self.rest();
        let mut end = None;
        let mut escaped = false;
        let mut has_escape = false;
        for (i, c) in rest.char_indices() {
            if escaped {
                escaped = false;
                continue;
            }
            match c {
                '\\' => {
                    escaped = true;
                    has_escape = true;
                }
                ',' | '}' => {
                    end = Some(i);
                    break;
                }
                '{' | '"' => return Err("unexpected '{' or '\"' in an unquoted element"),
                _ => {}
            }
        }
        let end = end.ok_or("unexpected end")?;
        let raw = rest.get(..end).ok_or("bad character boundary")?;
        self.pos += end;
        if !has_escape {
            let element = raw.trim_end();
            if element.is_empty() {
                return Err("empty unquoted element");
            }
            if element.eq_ignore_ascii_case("NULL") {
                return Ok(None);
            }
            return Ok(Some(Cow::Borrowed(element)));
        }
        // Escaped characters, whitespace included, are kept; trailing plain whitespace is not.
        let mut element = String::with_capacity(raw.len());
        let mut keep = 0;
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                element.extend(chars.next());
                keep = element.len();
            } else {
                element.push(c);
                if !c.is_whitespace() {
                    keep = element.len();
                }
            }
        }
        element.truncate(keep);
        Ok(Some(Cow::Owned(element)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Decimal128Type, Int32Type};
    use arrow_schema::{DataType, Field, Schema};

    fn numeric(weight: i16, sign: u16, dscale: u16, digits: &[i16]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(digits.len() as i16).to_be_bytes());
        v.extend_from_slice(&weight.to_be_bytes());
        v.extend_from_slice(&sign.to_be_bytes());
        v.extend_from_slice(&dscale.to_be_bytes());
        for d in digits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numeric_digits_become_unscaled_decimals() {
        // 12345.67 = digits [1, 2345, 6700], weight 1
        assert_eq!(
            decode_numeric(&numeric(1, 0, 2, &[1, 2345, 6700]), 2),
            Ok(1234567)
        );
        assert_eq!(
            decode_numeric(&numeric(1, 0x4000, 2, &[1, 2345, 6700]), 2),
            Ok(-1234567)
        );
        // 0.05 = [500] weight -1
        assert_eq!(decode_numeric(&numeric(-1, 0, 2, &[500]), 2), Ok(5));
        assert_eq!(decode_numeric(&numeric(0, 0, 0, &[]), 2), Ok(0));
        // 10^36 at scale 0: [1, 0 × 9] weight 9
        assert_eq!(
            decode_numeric(&numeric(9, 0, 0, &[1]), 0),
            Ok(10i128.pow(36))
        );
        assert!(decode_numeric(&numeric(0, 0xC000, 0, &[]), 2).is_err());
    }

    /// Numeric bytes as given: digit count, weight, sign, display scale, digits.
    fn raw_numeric(ndigits: u16, weight: i16, sign: u16, digits: &[u16]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [ndigits, weight as u16, sign, 0] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        for d in digits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    #[test]
    fn malformed_numerics_are_errors_not_panics() {
        // A negative digit count (it indexed out of bounds).
        assert!(decode_numeric(&raw_numeric(0xffff, 0, 0, &[1, 2]), 2).is_err());
        assert!(decode_numeric(&raw_numeric(0x8000, 0, 0, &[]), 2).is_err());
        // Fewer or more digit bytes than the count says.
        assert!(decode_numeric(&raw_numeric(3, 0, 0, &[1, 2]), 2).is_err());
        assert!(decode_numeric(&raw_numeric(1, 0, 0, &[1, 2]), 2).is_err());
        assert!(decode_numeric(&[0, 1, 0], 2).is_err());
        // Digits are base 10000; an unknown sign is not a number.
        assert!(decode_numeric(&raw_numeric(1, 0, 0, &[10000]), 0).is_err());
        assert!(decode_numeric(&raw_numeric(1, 0, 0x4000, &[0xffff]), 0).is_err());
        assert!(decode_numeric(&raw_numeric(1, 0, 0x1234, &[1]), 0).is_err());
        assert!(decode_numeric(&raw_numeric(0, 0, 0xD000, &[]), 0).is_err());
        // Places the column's scale cannot hold are refused, as in text, not cut.
        assert!(decode_numeric(&numeric(0, 0, 3, &[1, 5]), 2).is_err());
        assert!(decode_numeric(&numeric(-2, 0, 8, &[1]), 2).is_err());
        assert_eq!(decode_numeric(&numeric(0, 0, 3, &[1, 5000]), 2), Ok(150));
        // Extreme weights overflow into an error.
        assert!(decode_numeric(&numeric(i16::MAX, 0, 0, &[1]), 0).is_err());
        assert_eq!(decode_numeric(&numeric(i16::MIN, 0, 0, &[0]), 0), Ok(0));
    }

    #[test]
    fn decimals_wider_than_their_precision_are_errors() {
        let kind = Kind::Decimal {
            precision: 4,
            scale: 1,
        };
        let mut b = ColumnBuilder::new(&kind);
        assert_eq!(b.append(Some(&numeric(0, 0, 1, &[999, 9000]))), Ok(()));
        assert!(b.append(Some(&numeric(0, 0, 1, &[1000]))).is_err());
        assert_eq!(b.append_text(Some("-999.9")), Ok(()));
        assert!(b.append_text(Some("1000")).is_err());
        assert_eq!(b.finish().len(), 2);
    }

    #[test]
    fn dates_past_arrow_range_are_errors() {
        let mut b = ColumnBuilder::new(&Kind::Date);
        assert!(b.append(Some(&(i32::MAX - 1).to_be_bytes())).is_err());
        assert_eq!(b.append(Some(&i32::MAX.to_be_bytes())), Ok(()), "infinity");
    }

    #[test]
    fn malformed_arrays_are_errors_not_panics() {
        let mut b = ColumnBuilder::new(&Kind::List(Box::new(Kind::Int32)));
        let mut trailing = int_array(&[1], &[Some(1)]).expect("array");
        trailing.push(0);
        for bad in [
            trailing,
            int_array(&[-1], &[]).expect("array"),
            int_array(&[2], &[Some(1)]).expect("array"),
            vec![0, 0, 0, 7],
            vec![0, 0, 0, 1, 0, 0],
            // 2^31 elements announced, none there.
            int_array(&[i32::MAX, 2], &[]).expect("array"),
            // A dimension of size 0 without its lower bound (found by fuzzing: the position
            // passed the end and the trailing-bytes check underflowed).
            vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 23, 0, 0, 0, 0],
        ] {
            assert!(b.append(Some(&bad)).is_err(), "{bad:?}");
        }
        assert_eq!(b.finish().len(), 0);
    }

    fn one_column(kind: Kind, nullable: bool) -> CopyBinaryDecoder {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "v",
            kind.data_type(),
            nullable,
        )]));
        CopyBinaryDecoder::new(schema, &[kind])
    }

    #[test]
    fn a_null_in_a_not_nullable_field_is_an_error_that_says_where() {
        let stream = copy_stream(&[vec![Some(b"a".to_vec())], vec![None]]);
        let mut decoder = one_column(Kind::Text, false);
        let err = decoder
            .feed(&stream, &mut |_| {})
            .expect_err("NULL in a not-nullable field");
        assert_eq!(err.column, Some(0));
        assert_eq!(err.row, Some(1));
        // Header (19 bytes), then row 0: count (2), length (4) and one byte.
        assert_eq!(err.offset, Some(19 + 7));
        assert_eq!(err.position(), " at row 1 (byte 26 of the COPY data)");

        // Nullable, as discovery makes every field: the NULL is kept.
        let mut decoder = one_column(Kind::Text, true);
        decoder.feed(&stream, &mut |_| {}).expect("decodes");
        let batch = decoder.finish().expect("trailer").expect("rows");
        assert!(batch.column(0).is_null(1));
    }

    #[test]
    fn malformed_copy_framing_is_an_error_not_a_panic() {
        let mut header = SIGNATURE.to_vec();
        header.extend_from_slice(&0u32.to_be_bytes());
        // An extension too long to be COPY: refused at once, not waited for.
        let mut long = header.clone();
        long.extend_from_slice(&u32::MAX.to_be_bytes());
        let mut decoder = one_column(Kind::Int32, true);
        assert!(decoder.feed(&long, &mut |_| {}).is_err());
        // OIDs, and flags no reader knows.
        for flags in [FLAG_WITH_OIDS, 1 << 20] {
            let mut v = SIGNATURE.to_vec();
            v.extend_from_slice(&flags.to_be_bytes());
            v.extend_from_slice(&0u32.to_be_bytes());
            let mut decoder = one_column(Kind::Int32, true);
            assert!(decoder.feed(&v, &mut |_| {}).is_err(), "{flags:x}");
        }
        // A negative field count other than the trailer's -1.
        let mut v = header.clone();
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&(-2i16).to_be_bytes());
        let mut decoder = one_column(Kind::Int32, true);
        let err = decoder.feed(&v, &mut |_| {}).expect_err("-2 fields");
        assert_eq!((err.row, err.offset), (Some(0), Some(19)));
        // A field length past the data waits for more, then the end is an error.
        let mut v = header;
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&1i16.to_be_bytes());
        v.extend_from_slice(&i32::MAX.to_be_bytes());
        let mut decoder = one_column(Kind::Bytea, true);
        decoder.feed(&v, &mut |_| {}).expect("waits");
        assert!(decoder.finish().is_err());
    }

    #[test]
    fn a_schema_that_does_not_fit_is_an_error_not_a_panic() {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Utf8, true)]));
        let mut decoder = CopyBinaryDecoder::new(schema, &[Kind::Int32]);
        let stream = copy_stream(&[vec![Some(1i32.to_be_bytes().to_vec())]]);
        decoder.feed(&stream, &mut |_| {}).expect("decodes");
        assert!(decoder.finish().is_err());
    }

    #[test]
    fn uuid_is_formatted_canonically() {
        let mut s = String::new();
        format_uuid(
            &[
                0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x14, 0x17,
                0x40, 0x00,
            ],
            &mut s,
        );
        assert_eq!(s, "123e4567-e89b-12d3-a456-426614174000");
    }

    fn copy_stream(rows: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
        let mut v = SIGNATURE.to_vec();
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&0u32.to_be_bytes());
        for row in rows {
            v.extend_from_slice(&(row.len() as i16).to_be_bytes());
            for f in row {
                match f {
                    None => v.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(b) => {
                        v.extend_from_slice(&(b.len() as i32).to_be_bytes());
                        v.extend_from_slice(b);
                    }
                }
            }
        }
        v.extend_from_slice(&(-1i16).to_be_bytes());
        v
    }

    #[test]
    fn tuples_split_across_chunks_decode_whole() {
        let kinds = [
            Kind::Int32,
            Kind::Decimal {
                precision: 10,
                scale: 2,
            },
        ];
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", kinds[0].data_type(), true),
            Field::new("amount", kinds[1].data_type(), true),
        ]));
        let rows: Vec<_> = (0..1000)
            .map(|i: i32| {
                vec![
                    Some(i.to_be_bytes().to_vec()),
                    (i % 7 != 0).then(|| numeric(0, 0, 2, &[i as i16, 5000])),
                ]
            })
            .collect();
        let stream = copy_stream(&rows);
        // Feed in awkward chunk sizes, including 1-byte chunks.
        for chunk_size in [1, 3, 17, 4096, stream.len()] {
            let mut decoder = CopyBinaryDecoder::new(schema.clone(), &kinds);
            let mut batches = Vec::new();
            for chunk in stream.chunks(chunk_size) {
                decoder
                    .feed(chunk, &mut |b| batches.push(b))
                    .expect("decodes");
            }
            batches.extend(decoder.finish().expect("trailer seen"));
            let total: usize = batches.iter().map(|b| b.num_rows()).sum();
            assert_eq!(total, 1000);
            let b = &batches[0];
            assert_eq!(b.column(0).as_primitive::<Int32Type>().value(8), 8);
            let amounts = b.column(1).as_primitive::<Decimal128Type>();
            assert!(amounts.is_null(7));
            assert_eq!(amounts.value(8), 850, "8.50 at scale 2");
        }
    }

    #[test]
    fn cut_stream_is_an_error() {
        let kinds = [Kind::Int32];
        let schema = Arc::new(Schema::new(vec![Field::new(
            "id",
            kinds[0].data_type(),
            true,
        )]));
        let stream = copy_stream(&[vec![Some(1i32.to_be_bytes().to_vec())]]);
        let mut decoder = CopyBinaryDecoder::new(schema, &kinds);
        decoder
            .feed(&stream[..stream.len() - 2], &mut |_| {})
            .expect("decodes");
        assert!(decoder.finish().is_err());
    }

    /// Builds a column from binary values and another from text values of `kind`, and
    /// asserts the two arrays are equal.
    fn assert_same(kind: Kind, values: &[(Option<Vec<u8>>, Option<&str>)]) {
        let mut binary = ColumnBuilder::new(&kind);
        let mut text = ColumnBuilder::new(&kind);
        for (b, t) in values {
            binary.append(b.as_deref()).expect("binary decodes");
            text.append_text(*t)
                .unwrap_or_else(|e| panic!("{kind:?} text {t:?}: {e}"));
        }
        let (binary, text) = (binary.finish(), text.finish());
        assert_eq!(binary.data_type(), &kind.data_type());
        assert_eq!(&*binary, &*text, "{kind:?}");
    }

    fn be<const N: usize>(v: [u8; N]) -> Option<Vec<u8>> {
        Some(v.to_vec())
    }

    #[test]
    fn text_scalars_equal_binary() {
        assert_same(
            Kind::Bool,
            &[(be([1]), Some("t")), (be([0]), Some("f")), (None, None)],
        );
        assert_same(
            Kind::Int16,
            &[
                (be(i16::MIN.to_be_bytes()), Some("-32768")),
                (be(7i16.to_be_bytes()), Some("7")),
            ],
        );
        assert_same(
            Kind::Int32,
            &[
                (be(i32::MAX.to_be_bytes()), Some("2147483647")),
                (None, None),
            ],
        );
        assert_same(
            Kind::Int64,
            &[(be(i64::MIN.to_be_bytes()), Some("-9223372036854775808"))],
        );
        assert_same(
            Kind::Oid,
            &[(be(u32::MAX.to_be_bytes()), Some("4294967295"))],
        );
        assert_same(
            Kind::Float32,
            &[
                (be(0.1f32.to_be_bytes()), Some("0.1")),
                (be((-0.0f32).to_be_bytes()), Some("-0")),
                (be(f32::MAX.to_be_bytes()), Some("3.4028235e+38")),
                (be(1.0e-45f32.to_be_bytes()), Some("1e-45")),
                (be(f32::NAN.to_be_bytes()), Some("NaN")),
                (be(f32::INFINITY.to_be_bytes()), Some("Infinity")),
                (be(f32::NEG_INFINITY.to_be_bytes()), Some("-Infinity")),
            ],
        );
        assert_same(
            Kind::Float64,
            &[
                (be(0.1f64.to_be_bytes()), Some("0.1")),
                (be((1.0f64 / 3.0).to_be_bytes()), Some("0.3333333333333333")),
                (be(f64::MIN.to_be_bytes()), Some("-1.7976931348623157e+308")),
                (be(5e-324f64.to_be_bytes()), Some("5e-324")),
                (be(123456789012.0f64.to_be_bytes()), Some("123456789012")),
                (be(f64::NAN.to_be_bytes()), Some("NaN")),
                (be(f64::INFINITY.to_be_bytes()), Some("Infinity")),
            ],
        );
        assert_same(
            Kind::Text,
            &[
                (Some("héllo".into()), Some("héllo")),
                (Some(vec![]), Some("")),
                (None, None),
            ],
        );
        assert_same(
            Kind::Jsonb,
            &[(
                Some(b"\x01{\"a\": [1, 2]}".to_vec()),
                Some("{\"a\": [1, 2]}"),
            )],
        );
        assert_same(
            Kind::Uuid,
            &[(
                Some(vec![
                    0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x14,
                    0x17, 0x40, 0x00,
                ]),
                Some("123e4567-e89b-12d3-a456-426614174000"),
            )],
        );
        assert_same(
            Kind::Bytea,
            &[
                (Some(vec![0, 0xff, 0x10, 0xAB]), Some("\\x00ff10AB")),
                (Some(vec![]), Some("\\x")),
                (Some(b"a\\\x01".to_vec()), Some("a\\\\\\001")),
            ],
        );
    }

    #[test]
    fn text_numerics_equal_binary() {
        let kind = Kind::Decimal {
            precision: 12,
            scale: 3,
        };
        assert_same(
            kind.clone(),
            &[
                (Some(numeric(0, 0x4000, 3, &[123, 4500])), Some("-123.450")),
                (Some(numeric(0, 0, 0, &[])), Some("0.000")),
                (Some(numeric(1, 0, 3, &[123, 4567])), Some("1234567.000")),
                (Some(numeric(-1, 0, 3, &[50])), Some("0.005")),
                // Fewer digits than the scale are padded, extra zeros dropped.
                (Some(numeric(0, 0, 0, &[5])), Some("5")),
                (Some(numeric(0, 0, 3, &[1, 5000])), Some("1.50000")),
                (Some(numeric(0, 0, 3, &[1, 5000])), Some("+1.5")),
                (None, None),
            ],
        );
        assert_same(
            Kind::Decimal {
                precision: 38,
                scale: 0,
            },
            &[(
                Some(numeric(9, 0, 0, &[1])),
                Some(&format!("1{}", "0".repeat(36))),
            )],
        );
        let mut b = ColumnBuilder::new(&kind);
        for bad in [
            "1.0005",
            "NaN",
            "Infinity",
            "-Infinity",
            "",
            "-",
            "1.2.3",
            "1e5",
            "12a",
        ] {
            assert!(b.append_text(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(
            b.append_text(Some(&"9".repeat(40))),
            Err("numeric value exceeds 38 digits".to_string())
        );
        assert_eq!(b.finish().len(), 0, "failed values append nothing");
    }

    /// Days since 2000-01-01 in binary.
    fn pg_date(days: i32) -> Option<Vec<u8>> {
        Some(days.to_be_bytes().to_vec())
    }

    /// µs since 2000-01-01 in binary.
    fn pg_ts(micros: i64) -> Option<Vec<u8>> {
        Some(micros.to_be_bytes().to_vec())
    }

    const DAY: i64 = 86_400_000_000;
    /// 4714-11-24 BC (proleptic Gregorian), Julian day 0, PostgreSQL's first date.
    const JULIAN_ZERO: i32 = -2_451_545;

    #[test]
    fn text_dates_and_times_equal_binary() {
        assert_same(
            Kind::Date,
            &[
                (pg_date(0), Some("2000-01-01")),
                (pg_date(-10_957), Some("1970-01-01")),
                (pg_date(8_825), Some("2024-02-29")),
                (pg_date(-1), Some("1999-12-31")),
                (pg_date(JULIAN_ZERO), Some("4714-11-24 BC")),
                (pg_date(-730_119), Some("0001-01-01")),
                (pg_date(-730_120), Some("0001-12-31 BC")),
                // The last date PostgreSQL has, Julian day 2147483493.
                (pg_date(2_145_031_948), Some("5874897-12-31")),
                (pg_date(i32::MAX), Some("infinity")),
                (pg_date(i32::MIN), Some("-infinity")),
                (None, None),
            ],
        );
        assert_same(
            Kind::Time,
            &[
                (pg_ts(0), Some("00:00:00")),
                (pg_ts(DAY - 1), Some("23:59:59.999999")),
                (pg_ts(DAY), Some("24:00:00")),
                (pg_ts(45_296_500_000), Some("12:34:56.5")),
                (pg_ts(1), Some("00:00:00.000001")),
            ],
        );
        let timestamps = [
            (pg_ts(0), "2000-01-01 00:00:00"),
            (pg_ts(-946_684_800_000_000), "1970-01-01 00:00:00"),
            (pg_ts(-1), "1999-12-31 23:59:59.999999"),
            (pg_ts(8_825 * DAY + 3_723_450_000), "2024-02-29 01:02:03.45"),
            (pg_ts(JULIAN_ZERO as i64 * DAY), "4714-11-24 00:00:00 BC"),
            (
                pg_ts(-730_120 * DAY + DAY - 1),
                "0001-12-31 23:59:59.999999 BC",
            ),
            // PostgreSQL's last timestamp saturates when moved to the UNIX epoch.
            (
                pg_ts(9_223_371_331_200_000_000 - 1),
                "294276-12-31 23:59:59.999999",
            ),
            (pg_ts(i64::MAX), "infinity"),
            (pg_ts(i64::MIN), "-infinity"),
        ];
        assert_same(
            Kind::Timestamp,
            &timestamps
                .iter()
                .map(|(b, t)| (b.clone(), Some(*t)))
                .collect::<Vec<_>>(),
        );
        let mut with_zone: Vec<_> = timestamps
            .iter()
            .map(|(b, t)| {
                let t = match t.strip_suffix(" BC") {
                    Some(t) => format!("{t}+00 BC"),
                    None if t.ends_with("infinity") => t.to_string(),
                    None => format!("{t}+00"),
                };
                (b.clone(), t)
            })
            .collect();
        with_zone.extend([
            (pg_ts(0), "2000-01-01 01:00:00+01".to_string()),
            (pg_ts(0), "1999-12-31 19:30:00-04:30".to_string()),
            (pg_ts(0), "2000-01-01 00:53:28+00:53:28".to_string()),
            (pg_ts(0), "2000-01-01 00:00:00".to_string()),
        ]);
        assert_same(
            Kind::TimestampTz,
            &with_zone
                .iter()
                .map(|(b, t)| (b.clone(), Some(t.as_str())))
                .collect::<Vec<_>>(),
        );

        let mut b = ColumnBuilder::new(&Kind::Date);
        for bad in [
            "2023-02-29",
            "2000-13-01",
            "2000-00-10",
            "0000-01-01",
            "2000-01",
            "2000/01/01",
            "Infinity",
            "99999999999999999999-01-01",
        ] {
            assert!(b.append_text(Some(bad)).is_err(), "{bad}");
        }
        let mut b = ColumnBuilder::new(&Kind::Time);
        for bad in [
            "24:00:00.000001",
            "12:60:00",
            "12:00",
            "12:00:00.1234567",
            "1:2:x",
        ] {
            assert!(b.append_text(Some(bad)).is_err(), "{bad}");
        }
        let mut b = ColumnBuilder::new(&Kind::Timestamp);
        for bad in [
            "2000-01-01",
            "2000-01-01 00:00:00+00",
            "2000-01-01T00:00:00",
        ] {
            assert!(b.append_text(Some(bad)).is_err(), "{bad}");
        }
        let mut b = ColumnBuilder::new(&Kind::TimestampTz);
        for bad in [
            "2000-01-01 00:00:00+",
            "2000-01-01 00:00:00+01:60",
            "2000-01-01 00:00:00+1:2:3:4",
        ] {
            assert!(b.append_text(Some(bad)).is_err(), "{bad}");
        }
    }

    /// A one- or more-dimensional binary array of int4 (lower bounds 1).
    fn int_array(dims: &[i32], elements: &[Option<i32>]) -> Option<Vec<u8>> {
        let mut v = Vec::new();
        v.extend_from_slice(&(dims.len() as i32).to_be_bytes());
        v.extend_from_slice(&0i32.to_be_bytes());
        v.extend_from_slice(&23i32.to_be_bytes());
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
            v.extend_from_slice(&1i32.to_be_bytes());
        }
        for e in elements {
            match e {
                None => v.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(x) => {
                    v.extend_from_slice(&4i32.to_be_bytes());
                    v.extend_from_slice(&x.to_be_bytes());
                }
            }
        }
        Some(v)
    }

    /// A one-dimensional binary array of text.
    fn text_array(elements: &[Option<&str>]) -> Option<Vec<u8>> {
        let mut v = Vec::new();
        for x in [1i32, 0, 25, elements.len() as i32, 1] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        for e in elements {
            match e {
                None => v.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(s) => {
                    v.extend_from_slice(&(s.len() as i32).to_be_bytes());
                    v.extend_from_slice(s.as_bytes());
                }
            }
        }
        Some(v)
    }

    #[test]
    fn text_arrays_equal_binary() {
        assert_same(
            Kind::List(Box::new(Kind::Int32)),
            &[
                (
                    int_array(&[3], &[Some(1), Some(2), None]),
                    Some("{1,2,NULL}"),
                ),
                (
                    int_array(&[2, 2], &[Some(1), Some(2), Some(3), Some(4)]),
                    Some("{{1,2},{3,4}}"),
                ),
                (int_array(&[], &[]), Some("{}")),
                (None, None),
                (int_array(&[2], &[Some(5), Some(-6)]), Some("[0:1]={5,-6}")),
                (int_array(&[1], &[None]), Some("{ null }")),
            ],
        );
        assert_same(
            Kind::List(Box::new(Kind::Text)),
            &[(
                text_array(&[
                    Some("a b"),
                    Some("x, y"),
                    None,
                    Some("q\"uote"),
                    Some("back\\slash"),
                    Some("NULL"),
                    Some("plain"),
                    Some(""),
                    Some("{}"),
                ]),
                Some(r#"{"a b","x, y",NULL,"q\"uote","back\\slash","NULL",plain,"","{}"}"#),
            )],
        );
        let mut ts = Vec::new();
        for x in [1i32, 0, 1114, 2, 1] {
            ts.extend_from_slice(&x.to_be_bytes());
        }
        for micros in [0i64, i64::MAX] {
            ts.extend_from_slice(&8i32.to_be_bytes());
            ts.extend_from_slice(&micros.to_be_bytes());
        }
        assert_same(
            Kind::List(Box::new(Kind::Timestamp)),
            &[(Some(ts), Some(r#"{"2000-01-01 00:00:00",infinity}"#))],
        );
        let mut bytea = Vec::new();
        for x in [1i32, 0, 17, 1, 1, 2] {
            bytea.extend_from_slice(&x.to_be_bytes());
        }
        bytea.extend_from_slice(&[1, 2]);
        assert_same(
            Kind::List(Box::new(Kind::Bytea)),
            &[(Some(bytea), Some(r#"{"\\x0102"}"#))],
        );

        let mut b = ColumnBuilder::new(&Kind::List(Box::new(Kind::Int32)));
        let err = b.append_text(Some("{1,x}")).expect_err("x is not an int");
        assert!(
            err.starts_with("array element of type Int32: invalid int4 'x'"),
            "{err}"
        );
        assert_eq!(b.finish().len(), 0, "a failed array appends nothing");
    }

    fn elements(v: &str) -> Result<Vec<Option<String>>, String> {
        parse_array_literal(v).map(|e| e.into_iter().map(|e| e.map(Cow::into_owned)).collect())
    }

    fn some(items: &[&str]) -> Vec<Option<String>> {
        items.iter().map(|s| Some(s.to_string())).collect()
    }

    #[test]
    fn array_literals_parse() {
        assert_eq!(elements("{}"), Ok(vec![]));
        assert_eq!(elements(" { } "), Ok(vec![]));
        assert_eq!(elements("{1,2,3}"), Ok(some(&["1", "2", "3"])));
        assert_eq!(
            elements("{NULL,null,\"NULL\",NULLx}"),
            Ok(vec![None, None, Some("NULL".into()), Some("NULLx".into())])
        );
        assert_eq!(
            elements(r#"{"a b","x, y","q\"uote","back\\slash","{}",""}"#),
            Ok(some(&["a b", "x, y", "q\"uote", "back\\slash", "{}", ""]))
        );
        assert_eq!(
            elements("{{1,2},{3,4},{5,NULL}}"),
            Ok(vec![
                Some("1".into()),
                Some("2".into()),
                Some("3".into()),
                Some("4".into()),
                Some("5".into()),
                None
            ])
        );
        assert_eq!(elements("{{{a}},{{b}}}"), Ok(some(&["a", "b"])));
        assert_eq!(elements("[0:1]={1,2}"), Ok(some(&["1", "2"])));
        assert_eq!(
            elements("[1:2][-1:0]={{a,b},{c,d}}"),
            Ok(some(&["a", "b", "c", "d"]))
        );
        // Unquoted: surrounding whitespace is dropped, escapes kept, escaped NULL is text.
        assert_eq!(elements("{ a b , c }"), Ok(some(&["a b", "c"])));
        assert_eq!(
            elements(r"{a\,b,\NULL,x\ }"),
            Ok(some(&["a,b", "NULL", "x "]))
        );
        assert_eq!(elements("{\"é\\ü\",ß}"), Ok(some(&["éü", "ß"])));
        // Elements without escapes borrow from the input.
        let v = r#"{"a b",c}"#;
        assert!(
            parse_array_literal(v)
                .expect("parses")
                .iter()
                .all(|e| matches!(e, Some(Cow::Borrowed(_))))
        );

        for bad in [
            "",
            "1,2",
            "{1,2",
            "{1,2}x",
            "{1,,2}",
            "{,}",
            "{\"a}",
            "{\"a\"b}",
            "{a\"b\"}",
            "{1,{2}",
            "[0:1]{1,2}",
            "[x]={1}",
            "{{{{{{{1}}}}}}}",
            "{a\\",
            "{\"a\\",
        ] {
            assert!(elements(bad).is_err(), "{bad:?}");
        }
        assert!(elements("{{{{{{1}}}}}}").is_ok(), "six dimensions");
    }

    fn text_schema(kinds: &[Kind], nullable: bool) -> SchemaRef {
        Arc::new(Schema::new(
            kinds
                .iter()
                .enumerate()
                .map(|(i, k)| Field::new(format!("c{i}"), k.data_type(), nullable))
                .collect::<Vec<_>>(),
        ))
    }

    #[test]
    fn text_batches_match_the_binary_decoder() {
        let kinds = [
            Kind::Int32,
            Kind::Decimal {
                precision: 10,
                scale: 2,
            },
            Kind::TimestampTz,
            Kind::List(Box::new(Kind::Int32)),
        ];
        let schema = text_schema(&kinds, true);
        let mut decoder = CopyBinaryDecoder::new(schema.clone(), &kinds);
        let stream = copy_stream(&[
            vec![
                Some(1i32.to_be_bytes().to_vec()),
                Some(numeric(0, 0, 2, &[12, 5000])),
                pg_ts(DAY),
                int_array(&[2], &[Some(1), None]),
            ],
            vec![None, None, None, None],
        ]);
        decoder.feed(&stream, &mut |_| {}).expect("decodes");
        let binary = decoder.finish().expect("trailer").expect("rows");

        let mut builder = TextBatchBuilder::new(schema, &kinds);
        assert!(builder.is_empty());
        builder
            .append_row([
                Some("1"),
                Some("12.50"),
                Some("2000-01-02 00:00:00+00"),
                Some("{1,NULL}"),
            ])
            .expect("appends");
        // A bad value fails the whole row, which leaves nothing behind.
        let err = builder
            .append_row([Some("2"), Some("x"), None, None])
            .expect_err("x is not numeric");
        assert_eq!(err.column, Some(1));
        assert!(builder.append_row([Some("2")]).is_err(), "too few values");
        assert_eq!(
            builder
                .append_row([None, None, None, None, None])
                .map_err(|e| e.column),
            Err(None),
            "too many values"
        );
        builder.append_row([None; 4]).expect("appends");
        assert_eq!(builder.len(), 2);
        assert_eq!(builder.text_bytes(), 1 + 5 + 22 + 8);
        assert_eq!(builder.finish(), binary);

        // Reusable after finish; an empty batch has the schema and no rows.
        assert!(builder.is_empty());
        assert_eq!(builder.text_bytes(), 0);
        assert_eq!(builder.finish().num_rows(), 0);
        builder
            .append_row([Some("7"), None, None, Some("{}")])
            .expect("appends");
        let batch = builder.finish();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.column(0).as_primitive::<Int32Type>().value(0), 7);
    }

    #[test]
    fn text_batch_rejects_null_in_not_null_column() {
        let kinds = [Kind::Text];
        let mut builder = TextBatchBuilder::new(text_schema(&kinds, false), &kinds);
        let err = builder.append_row([None]).expect_err("not nullable");
        assert_eq!(err.column, Some(0));
        builder.append_row([Some("x")]).expect("appends");
        assert_eq!(builder.finish().num_rows(), 1);
    }
}
