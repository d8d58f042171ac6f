//! Decoder of PostgreSQL's binary COPY format into Arrow record batches.
//!
//! Input arrives in arbitrary chunks (the server sends one CopyData message per row, but
//! nothing here depends on it): a tuple split across chunks is kept until it is complete, so
//! builders only ever see whole rows. Batches close at [`BATCH_ROWS`] rows or
//! [`BATCH_BYTES`] of field data, whichever comes first, which bounds memory per reader.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, ListArray, RecordBatch};
use arrow_buffer::{NullBufferBuilder, OffsetBuffer, ScalarBuffer};
use arrow_schema::SchemaRef;

use super::types::{Kind, list_element_field};

pub const BATCH_ROWS: usize = 65_536;
pub const BATCH_BYTES: usize = 8 * 1024 * 1024;

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Microseconds between 1970-01-01 (Arrow's epoch) and 2000-01-01 (PostgreSQL's).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;
const PG_EPOCH_OFFSET_DAYS: i32 = 10_957;

/// A value that could not be decoded: which column, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Index of the column, or `None` for a framing error.
    pub column: Option<usize>,
    pub message: String,
}

impl DecodeError {
    fn framing(message: impl Into<String>) -> Self {
        DecodeError {
            column: None,
            message: message.into(),
        }
    }
}

pub struct CopyBinaryDecoder {
    schema: SchemaRef,
    columns: Vec<ColumnBuilder>,
    /// Bytes of an incomplete tuple (or header) carried to the next chunk.
    pending: Vec<u8>,
    header_done: bool,
    finished: bool,
    rows: usize,
    bytes: usize,
    /// Field slices of the tuple being decoded, reused to avoid an allocation per row.
    fields: Vec<Option<(usize, usize)>>,
}

impl CopyBinaryDecoder {
    pub fn new(schema: SchemaRef, kinds: &[Kind]) -> Self {
        CopyBinaryDecoder {
            schema,
            columns: kinds.iter().map(ColumnBuilder::new).collect(),
            pending: Vec::new(),
            header_done: false,
            finished: false,
            rows: 0,
            bytes: 0,
            fields: Vec::with_capacity(kinds.len()),
        }
    }

    /// Decodes `chunk`, calling `emit` with each full batch.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        emit: &mut impl FnMut(RecordBatch),
    ) -> Result<(), DecodeError> {
        if self.pending.is_empty() {
            let used = self.decode_tuples(chunk, emit)?;
            self.pending.extend_from_slice(&chunk[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.pending);
            buf.extend_from_slice(chunk);
            let used = self.decode_tuples(&buf, emit)?;
            buf.drain(..used);
            self.pending = buf;
        }
        Ok(())
    }

    /// Ends the input: checks the trailer was seen and returns the last, partial batch.
    pub fn finish(mut self) -> Result<Option<RecordBatch>, DecodeError> {
        if !self.finished {
            return Err(DecodeError::framing(
                "COPY data ended without its trailer (the stream was cut)",
            ));
        }
        if !self.pending.is_empty() {
            return Err(DecodeError::framing("data after the COPY trailer"));
        }
        Ok((self.rows > 0).then(|| self.take_batch()))
    }

    fn take_batch(&mut self) -> RecordBatch {
        let arrays: Vec<ArrayRef> = self.columns.iter_mut().map(ColumnBuilder::finish).collect();
        self.rows = 0;
        self.bytes = 0;
        // The arrays are built from the schema's own kinds, so this cannot fail.
        RecordBatch::try_new(self.schema.clone(), arrays)
            .unwrap_or_else(|e| panic!("decoder built arrays that do not fit its schema: {e}"))
    }

    /// Decodes every complete tuple in `buf`; returns how many bytes were used.
    fn decode_tuples(
        &mut self,
        buf: &[u8],
        emit: &mut impl FnMut(RecordBatch),
    ) -> Result<usize, DecodeError> {
        let mut pos = 0;
        if !self.header_done {
            if buf.len() < 19 {
                return Ok(0);
            }
            if &buf[..11] != SIGNATURE {
                return Err(DecodeError::framing("missing binary COPY signature"));
            }
            let extension = be_u32(&buf[15..19]) as usize;
            if buf.len() < 19 + extension {
                return Ok(0);
            }
            pos = 19 + extension;
            self.header_done = true;
        }
        let ncols = self.columns.len();
        while pos + 2 <= buf.len() {
            if self.finished {
                return Err(DecodeError::framing("data after the COPY trailer"));
            }
            let count = i16::from_be_bytes([buf[pos], buf[pos + 1]]);
            if count == -1 {
                self.finished = true;
                pos += 2;
                continue;
            }
            if count as usize != ncols {
                return Err(DecodeError::framing(format!(
                    "tuple has {count} fields, expected {ncols}"
                )));
            }
            // First pass: is the whole tuple here? Record field slices.
            self.fields.clear();
            let mut p = pos + 2;
            let mut complete = true;
            for _ in 0..ncols {
                if p + 4 > buf.len() {
                    complete = false;
                    break;
                }
                let len = i32::from_be_bytes([buf[p], buf[p + 1], buf[p + 2], buf[p + 3]]);
                p += 4;
                if len < 0 {
                    self.fields.push(None);
                } else {
                    let len = len as usize;
                    if p + len > buf.len() {
                        complete = false;
                        break;
                    }
                    self.fields.push(Some((p, len)));
                    p += len;
                }
            }
            if !complete {
                break;
            }
            for (i, field) in self.fields.iter().enumerate() {
                let value = field.map(|(start, len)| &buf[start..start + len]);
                self.columns[i]
                    .append(value)
                    .map_err(|message| DecodeError {
                        column: Some(i),
                        message,
                    })?;
            }
            self.bytes += p - pos;
            self.rows += 1;
            pos = p;
            if self.rows >= BATCH_ROWS || self.bytes >= BATCH_BYTES {
                emit(self.take_batch());
            }
        }
        Ok(pos)
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
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
            ColumnBuilder::Decimal(b, _, scale) => b.append_value(decode_numeric(v, *scale)?),
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
                    d => d + PG_EPOCH_OFFSET_DAYS,
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
                let count = decode_array(v, element, child)?;
                let last = *offsets.last().unwrap_or(&0);
                offsets.push(last + count as i32);
                validity.append_non_null();
            }
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

/// Decodes an array value into `child`, returning how many elements it appended.
fn decode_array(v: &[u8], element: &Kind, child: &mut ColumnBuilder) -> Result<usize, String> {
    let header = |i: usize| -> Result<i32, String> {
        v.get(i..i + 4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| "truncated array header".to_string())
    };
    let ndim = header(0)?;
    if ndim == 0 {
        return Ok(0);
    }
    if !(1..=6).contains(&ndim) {
        return Err(format!("array with {ndim} dimensions"));
    }
    let mut count: usize = 1;
    for d in 0..ndim as usize {
        count = count.saturating_mul(header(12 + d * 8)?.max(0) as usize);
    }
    let mut pos = 12 + ndim as usize * 8;
    for _ in 0..count {
        let len = header(pos)?;
        pos += 4;
        if len < 0 {
            child.append_null();
        } else {
            let end = pos + len as usize;
            let bytes = v.get(pos..end).ok_or("truncated array element")?;
            child
                .append(Some(bytes))
                .map_err(|e| format!("array element of type {element:?}: {e}"))?;
            pos = end;
        }
    }
    Ok(count)
}

/// PostgreSQL's binary numeric (base-10000 digits) as an unscaled i128 at `scale`.
fn decode_numeric(v: &[u8], scale: i8) -> Result<i128, String> {
    if v.len() < 8 {
        return Err("truncated numeric".into());
    }
    let ndigits = i16::from_be_bytes([v[0], v[1]]) as usize;
    let weight = i16::from_be_bytes([v[2], v[3]]) as i32;
    let sign = u16::from_be_bytes([v[4], v[5]]);
    if v.len() < 8 + ndigits * 2 {
        return Err("truncated numeric digits".into());
    }
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Err("NaN does not fit a decimal column".into()),
        _ => return Err("infinity does not fit a decimal column".into()),
    }
    let mut unscaled: i128 = 0;
    for i in 0..ndigits {
        let digit = i16::from_be_bytes([v[8 + 2 * i], v[9 + 2 * i]]) as i128;
        // The digit's least significant decimal position, shifted by the column's scale.
        let exponent = 4 * (weight - i as i32) + scale as i32;
        let term = if exponent >= 0 {
            10i128
                .checked_pow(exponent as u32)
                .and_then(|p| p.checked_mul(digit))
        } else if exponent > -4 {
            Some(digit / 10i128.pow((-exponent) as u32))
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Decimal128Type, Int32Type};
    use arrow_schema::{Field, Schema};

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
}
