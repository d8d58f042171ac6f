//! MySQL/MariaDB column types, the Arrow/Parquet types they are written as, and one row
//! builder fed by both the full load (binary protocol rows) and CDC (binlog row images).
//!
//! Decisions (also in the README's type table):
//! - Unsigned integers widen to the next signed type (`tinyint unsigned` → int16, …,
//!   `int unsigned` → int64); `bigint unsigned` is `decimal(20,0)`, which holds all of it and
//!   which Athena, Spark and DuckDB read (Parquet's UINT_64 is not read everywhere).
//! - `decimal(p,s)` with p ≤ 38 is `decimal(p,s)`; wider ones are text (lossless).
//! - `bit(1)` is a boolean, `bit(2..=63)` an int64, `bit(64)` a decimal(20,0).
//! - `timestamp` is a UTC timestamp; `datetime` a timestamp without zone; zero dates
//!   (`0000-00-00`) are NULL, as DMS writes them.
//! - `time` is text (`-838:59:59.000000` is a valid TIME; Parquet's TIME is a time of day).
//! - `year` is int16. `enum`, `set` and `json` are strings; text is decoded by its charset
//!   (utf8mb4, utf8mb3, ascii, latin1) into UTF-8; `binary`, `varbinary`, blobs and geometry
//!   are binary.
//!
//! Invariants:
//! - a value read by the full load and the same value read from the binlog append the same
//!   Arrow value. Both arrive as [`Value`]s, which [`ColumnDecoder`] normalises (binlog enums
//!   are indexes, sets bitmaps, timestamps epoch seconds, text raw bytes in the column's
//!   charset);
//! - whatever the values (a server is outside the program, and `fuzz/` feeds binlog rows
//!   through here), a value that does not fit its column is an error naming the column,
//!   never a panic and never a changed value (a decimal wider than its precision, an
//!   out-of-range integer or timestamp);
//! - a NULL is appended as NULL: [`RowBuilder::schema_for`] makes every field nullable,
//!   because a column's `NOT NULL` is read when the table is discovered, which can be after
//!   the snapshot or binlog event its rows come from. Given a schema with a non-nullable
//!   field, a NULL there is an error, not a panic.
//!
//! This module uses nothing of the crate but [`crate::source::decimal`]: `fuzz/` compiles
//! them on their own (see `fuzz/src/lib.rs`).

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int8Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use mysql_common::value::Value;

use crate::source::decimal::{parse_numeric, within_precision};

/// The largest precision an Arrow `Decimal128` holds.
const MAX_DECIMAL128_PRECISION: u32 = 38;

/// How one column's values are decoded and written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Int8,
    Int16,
    /// Signed `mediumint`: an int32, whose binlog values arrive without their sign (see
    /// [`decode`]).
    Int24,
    Int32,
    Int64,
    /// `bigint unsigned`, written as decimal(20,0).
    UInt64,
    Float32,
    Float64,
    Decimal {
        precision: u8,
        scale: i8,
    },
    /// A decimal wider than 38 digits, kept as its text.
    DecimalText,
    Bool,
    /// `bit(n)`, n > 1: the bits as an unsigned number.
    Bits,
    Date,
    DateTime,
    Timestamp,
    Time,
    Year,
    /// Character data whose bytes arrive in charset `charset` (lower-case MySQL name): the
    /// column's own in the binlog, `utf8mb4` in the full load.
    Text {
        charset: String,
    },
    Json,
    Enum,
    Set,
    Binary,
}

impl Kind {
    /// The kind of a column as `information_schema.columns` describes it, for reading it
    /// over a `utf8mb4` connection (the server converts text to it, whatever the column's
    /// charset); `None` for a type with no mapping (read as text).
    pub fn from_information_schema(
        data_type: &str,
        column_type: &str,
        precision: Option<u64>,
        scale: Option<u64>,
    ) -> Option<Kind> {
        let unsigned = column_type.contains("unsigned");
        Some(match data_type {
            "tinyint" if unsigned => Kind::Int16,
            "tinyint" => Kind::Int8,
            "smallint" if unsigned => Kind::Int32,
            "smallint" => Kind::Int16,
            "mediumint" if unsigned => Kind::Int32,
            "mediumint" => Kind::Int24,
            "int" | "integer" if unsigned => Kind::Int64,
            "int" | "integer" => Kind::Int32,
            "bigint" if unsigned => Kind::UInt64,
            "bigint" => Kind::Int64,
            "float" => Kind::Float32,
            "double" | "real" => Kind::Float64,
            "decimal" | "numeric" => {
                Kind::decimal(precision.unwrap_or(10) as u32, scale.unwrap_or(0) as u32)
            }
            "bit" => Kind::bits(precision.unwrap_or(1) as u32),
            "date" => Kind::Date,
            "datetime" => Kind::DateTime,
            "timestamp" => Kind::Timestamp,
            "time" => Kind::Time,
            "year" => Kind::Year,
            "json" => Kind::Json,
            "enum" => Kind::Enum,
            "set" => Kind::Set,
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => Kind::Text {
                charset: "utf8mb4".into(),
            },
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob"
            | "geometry" | "point" | "linestring" | "polygon" | "multipoint"
            | "multilinestring" | "multipolygon" | "geometrycollection" => Kind::Binary,
            _ => return None,
        })
    }

    /// `decimal(precision, scale)`, as text when Arrow's decimal cannot hold it.
    pub fn decimal(precision: u32, scale: u32) -> Kind {
        if precision == 0 || precision > MAX_DECIMAL128_PRECISION || scale > precision {
            Kind::DecimalText
        } else {
            Kind::Decimal {
                precision: precision as u8,
                scale: scale as i8,
            }
        }
    }

    pub fn bits(n: u32) -> Kind {
        match n {
            0 | 1 => Kind::Bool,
            2..=63 => Kind::Bits,
            _ => Kind::UInt64,
        }
    }

    pub fn data_type(&self) -> DataType {
        match self {
            Kind::Int8 => DataType::Int8,
            Kind::Int16 | Kind::Year => DataType::Int16,
            Kind::Int24 | Kind::Int32 => DataType::Int32,
            Kind::Int64 | Kind::Bits => DataType::Int64,
            Kind::UInt64 => DataType::Decimal128(20, 0),
            Kind::Float32 => DataType::Float32,
            Kind::Float64 => DataType::Float64,
            Kind::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
            Kind::Bool => DataType::Boolean,
            Kind::Date => DataType::Date32,
            Kind::DateTime => DataType::Timestamp(TimeUnit::Microsecond, None),
            Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Kind::DecimalText
            | Kind::Time
            | Kind::Text { .. }
            | Kind::Json
            | Kind::Enum
            | Kind::Set => DataType::Utf8,
            Kind::Binary => DataType::Binary,
        }
    }

    /// A short name for schema signatures (what changed when a table's columns change).
    pub fn describe(&self) -> String {
        match self {
            Kind::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
            Kind::Text { charset } => format!("text[{charset}]"),
            k => format!("{k:?}").to_ascii_lowercase(),
        }
    }
}

/// A column's kind plus what its binlog values need to be read: enum and set labels
/// (empty for the full load, which receives enum and set values as text).
#[derive(Debug, Clone)]
pub struct ColumnDecoder {
    pub kind: Kind,
    /// Labels of an enum (index 1 is the first) or a set (bit 0 is the first).
    pub labels: Vec<String>,
}

impl ColumnDecoder {
    pub fn new(kind: Kind) -> Self {
        ColumnDecoder {
            kind,
            labels: Vec::new(),
        }
    }
}

/// Rows of one table, appended as MySQL values, built into Arrow record batches.
pub struct RowBuilder {
    schema: SchemaRef,
    decoders: Vec<ColumnDecoder>,
    columns: Vec<Column>,
    nullable: Vec<bool>,
    rows: usize,
    bytes: usize,
}

impl RowBuilder {
    /// `schema` has one field per decoder, of type [`Kind::data_type`] (what
    /// [`schema_for`](Self::schema_for) makes).
    ///
    /// # Panics
    /// When `schema` does not match `decoders` (a programming error, not a data error).
    pub fn new(schema: SchemaRef, decoders: Vec<ColumnDecoder>) -> Self {
        assert_eq!(
            schema.fields().len(),
            decoders.len(),
            "RowBuilder: the schema has {} fields for {} decoders",
            schema.fields().len(),
            decoders.len()
        );
        for (field, decoder) in schema.fields().iter().zip(&decoders) {
            assert_eq!(
                field.data_type(),
                &decoder.kind.data_type(),
                "RowBuilder: field {} does not match its kind {:?}",
                field.name(),
                decoder.kind
            );
        }
        RowBuilder {
            columns: decoders.iter().map(|d| Column::new(&d.kind)).collect(),
            nullable: schema.fields().iter().map(|f| f.is_nullable()).collect(),
            schema,
            decoders,
            rows: 0,
            bytes: 0,
        }
    }

    /// A schema of nullable fields for `names` and `decoders`.
    pub fn schema_for(names: &[String], decoders: &[ColumnDecoder]) -> SchemaRef {
        Arc::new(Schema::new(
            names
                .iter()
                .zip(decoders)
                .map(|(n, d)| Field::new(n, d.kind.data_type(), true))
                .collect::<Vec<_>>(),
        ))
    }

    /// Appends one row. On error (which column, why) nothing of the row is appended.
    pub fn append_row(&mut self, values: &[Value]) -> Result<(), (usize, String)> {
        if values.len() != self.columns.len() {
            return Err((
                0,
                format!(
                    "row has {} values, the table has {} columns",
                    values.len(),
                    self.columns.len()
                ),
            ));
        }
        let mut cells = Vec::with_capacity(values.len());
        let mut bytes = 0;
        for (i, (value, decoder)) in values.iter().zip(&self.decoders).enumerate() {
            let cell = decode(decoder, value).map_err(|m| (i, m))?;
            if cell == Cell::Null && !self.nullable.get(i).copied().unwrap_or(true) {
                return Err((
                    i,
                    "NULL in a column whose field is not nullable (the table's schema must have nullable fields)".into(),
                ));
            }
            bytes += cell.size();
            cells.push(cell);
        }
        for (column, cell) in self.columns.iter_mut().zip(cells) {
            column.append(cell);
        }
        self.rows += 1;
        self.bytes += bytes;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Bytes appended since the last [`finish`](Self::finish), to bound batches.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The rows so far as a batch; the builder starts over.
    pub fn finish(&mut self) -> RecordBatch {
        let arrays: Vec<ArrayRef> = self.columns.iter_mut().map(Column::finish).collect();
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows));
        self.rows = 0;
        self.bytes = 0;
        // Every column builds exactly its field's type (checked in `new`), and nulls were
        // checked against the fields by `append_row`.
        RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options)
            .unwrap_or_else(|e| panic!("row builder built arrays that do not fit its schema: {e}"))
    }
}

/// One decoded value, ready for its column's builder.
#[derive(Debug, PartialEq)]
enum Cell {
    Null,
    Int(i64),
    Wide(i128),
    Float(f64),
    Bool(bool),
    Date(i32),
    Micros(i64),
    Text(String),
    Bytes(Vec<u8>),
}

impl Cell {
    fn size(&self) -> usize {
        match self {
            Cell::Text(s) => s.len(),
            Cell::Bytes(b) => b.len(),
            _ => 8,
        }
    }
}

fn integer(value: &Value) -> Result<i128, String> {
    match value {
        Value::Int(i) => Ok(*i as i128),
        Value::UInt(u) => Ok(*u as i128),
        Value::Bytes(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("invalid integer {:?}", String::from_utf8_lossy(b))),
        v => Err(format!("expected an integer, got {v:?}")),
    }
}

fn ranged<T: TryFrom<i128>>(v: i128, what: &str) -> Result<T, String> {
    T::try_from(v).map_err(|_| format!("{v} is out of range for {what}"))
}

fn days_from_civil(y: u16, m: u8, d: u8) -> Option<i32> {
    let date = chrono::NaiveDate::from_ymd_opt(y as i32, m as u32, d as u32)?;
    Some((date - chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?).num_days() as i32)
}

fn date_micros(value: &Value) -> Result<Option<i64>, String> {
    match value {
        Value::Date(_, m, d, ..) if *m == 0 || *d == 0 => Ok(None),
        Value::Date(y, mo, d, h, mi, s, us) => {
            let days =
                days_from_civil(*y, *mo, *d).ok_or_else(|| format!("invalid date {y}-{mo}-{d}"))?;
            let seconds = days as i64 * 86_400 + *h as i64 * 3600 + *mi as i64 * 60 + *s as i64;
            Ok(Some(seconds * 1_000_000 + *us as i64))
        }
        v => Err(format!("expected a date and time, got {v:?}")),
    }
}

/// Text of a column in `charset`, as UTF-8.
fn decode_text(bytes: &[u8], charset: &str) -> Result<String, String> {
    match charset {
        "latin1" => Ok(bytes.iter().map(|&b| cp1252(b)).collect()),
        _ => String::from_utf8(bytes.to_vec())
            .map_err(|_| format!("text is not valid {charset} (read as UTF-8)")),
    }
}

/// MySQL's `latin1` is Windows-1252 (with the five undefined bytes kept as C1 controls).
fn cp1252(b: u8) -> char {
    const HIGH: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž',
        '\u{8f}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}',
        'ž', 'Ÿ',
    ];
    match b {
        0x80..=0x9f => HIGH[(b - 0x80) as usize],
        _ => b as char,
    }
}

fn bytes_of(value: &Value) -> Result<&[u8], String> {
    match value {
        Value::Bytes(b) => Ok(b),
        v => Err(format!("expected bytes, got {v:?}")),
    }
}

fn utf8(value: &Value) -> Result<String, String> {
    String::from_utf8(bytes_of(value)?.to_vec()).map_err(|_| "text is not valid UTF-8".into())
}

fn decode(decoder: &ColumnDecoder, value: &Value) -> Result<Cell, String> {
    if matches!(value, Value::NULL) {
        return Ok(Cell::Null);
    }
    Ok(match &decoder.kind {
        Kind::Int8 => Cell::Int(ranged::<i8>(integer(value)?, "tinyint")? as i64),
        Kind::Int16 => Cell::Int(ranged::<i16>(integer(value)?, "int16")? as i64),
        Kind::Int32 => Cell::Int(ranged::<i32>(integer(value)?, "int32")? as i64),
        // mysql_common 0.37 reads a signed 24-bit binlog value without extending its sign;
        // no signed mediumint is 2^23 or more, so such a value is a negative one.
        Kind::Int24 => match integer(value)? {
            v @ 0x80_0000..=0xff_ffff => Cell::Int(v as i64 - 0x100_0000),
            v => Cell::Int(ranged::<i32>(v, "mediumint")? as i64),
        },
        Kind::Int64 => Cell::Int(ranged::<i64>(integer(value)?, "int64")?),
        Kind::UInt64 => match value {
            // bit(64): big-endian bytes.
            Value::Bytes(b) if b.len() <= 8 => {
                Cell::Wide(b.iter().fold(0u64, |acc, &x| (acc << 8) | x as u64) as i128)
            }
            v => Cell::Wide(ranged::<u64>(integer(v)?, "bigint unsigned")? as i128),
        },
        Kind::Year => match integer(value)? {
            // The binlog stores year 0000 as 0, which mysql_common reads as 1900 (not a
            // valid YEAR value: the range is 1901..=2155 and 0000).
            1900 => Cell::Int(0),
            y => Cell::Int(ranged::<i16>(y, "year")? as i64),
        },
        Kind::Float32 | Kind::Float64 => match value {
            Value::Float(f) => Cell::Float(*f as f64),
            Value::Double(f) => Cell::Float(*f),
            v => return Err(format!("expected a float, got {v:?}")),
        },
        Kind::Decimal { precision, scale } => {
            let text = std::str::from_utf8(bytes_of(value)?).map_err(|e| e.to_string())?;
            Cell::Wide(within_precision(parse_numeric(text, *scale)?, *precision)?)
        }
        Kind::DecimalText => Cell::Text(utf8(value)?),
        // MySQL's JSON type: the full load gets the server's text (`{"a": 1}`), the binlog a
        // binary document printed compactly. Both are written as serde_json prints them.
        Kind::Json => {
            let text = utf8(value)?;
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(json) => Cell::Text(json.to_string()),
                Err(e) => return Err(format!("invalid JSON ({e})")),
            }
        }
        Kind::Bool | Kind::Bits => {
            let bits = match value {
                Value::Bytes(b) if b.len() <= 8 => {
                    b.iter().fold(0u64, |acc, &x| (acc << 8) | x as u64)
                }
                v => ranged::<u64>(integer(v)?, "bit")?,
            };
            match decoder.kind {
                Kind::Bool => Cell::Bool(bits != 0),
                _ => match i64::try_from(bits) {
                    Ok(b) => Cell::Int(b),
                    Err(_) => return Err(format!("bit value {bits} does not fit int64")),
                },
            }
        }
        Kind::Date => match value {
            Value::Date(_, m, d, ..) if *m == 0 || *d == 0 => Cell::Null,
            Value::Date(y, m, d, ..) => {
                Cell::Date(days_from_civil(*y, *m, *d).ok_or("invalid date")?)
            }
            v => return Err(format!("expected a date, got {v:?}")),
        },
        Kind::DateTime => date_micros(value)?.map_or(Cell::Null, Cell::Micros),
        Kind::Timestamp => match value {
            // The binlog: seconds since the epoch, with a fraction when the column has one.
            Value::Bytes(b) => {
                let text = std::str::from_utf8(b).map_err(|e| e.to_string())?;
                let micros = parse_numeric(text, 6)?;
                match micros {
                    0 => Cell::Null, // '0000-00-00 00:00:00'
                    m => Cell::Micros(ranged(m, "timestamp")?),
                }
            }
            Value::Int(0) => Cell::Null,
            Value::Int(seconds) => Cell::Micros(
                seconds
                    .checked_mul(1_000_000)
                    .ok_or_else(|| format!("timestamp {seconds} s is out of range"))?,
            ),
            // The full load: a UTC date and time (the session's time zone is UTC).
            v => date_micros(v)?.map_or(Cell::Null, Cell::Micros),
        },
        Kind::Time => match value {
            Value::Time(negative, days, h, m, s, us) => {
                let hours = u64::from(*days) * 24 + u64::from(*h);
                let sign = if *negative { "-" } else { "" };
                Cell::Text(if *us > 0 {
                    format!("{sign}{hours:02}:{m:02}:{s:02}.{us:06}")
                } else {
                    format!("{sign}{hours:02}:{m:02}:{s:02}")
                })
            }
            v => return Err(format!("expected a time, got {v:?}")),
        },
        Kind::Text { charset } => Cell::Text(decode_text(bytes_of(value)?, charset)?),
        Kind::Enum => match value {
            Value::Int(0) => Cell::Text(String::new()),
            Value::Int(i) => Cell::Text(
                decoder
                    .labels
                    .get((*i as usize).wrapping_sub(1))
                    .cloned()
                    .ok_or_else(|| format!("enum index {i} has no label"))?,
            ),
            v => Cell::Text(utf8(v)?),
        },
        Kind::Set => match value {
            // The binlog: a little-endian bitmap of the members.
            Value::Bytes(b) if !decoder.labels.is_empty() => {
                let mut members = Vec::new();
                for (i, label) in decoder.labels.iter().enumerate() {
                    if b.get(i / 8).is_some_and(|byte| byte & (1 << (i % 8)) != 0) {
                        members.push(label.as_str());
                    }
                }
                Cell::Text(members.join(","))
            }
            v => Cell::Text(utf8(v)?),
        },
        Kind::Binary => Cell::Bytes(bytes_of(value)?.to_vec()),
    })
}

/// One Arrow builder per column.
enum Column {
    Int8(Int8Builder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Decimal(Decimal128Builder, u8, i8),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Bool(BooleanBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder, Option<Arc<str>>),
    Text(StringBuilder),
    Binary(BinaryBuilder),
}

impl Column {
    fn new(kind: &Kind) -> Self {
        match kind {
            Kind::Int8 => Column::Int8(Int8Builder::new()),
            Kind::Int16 | Kind::Year => Column::Int16(Int16Builder::new()),
            Kind::Int24 | Kind::Int32 => Column::Int32(Int32Builder::new()),
            Kind::Int64 | Kind::Bits => Column::Int64(Int64Builder::new()),
            Kind::UInt64 => Column::Decimal(Decimal128Builder::new(), 20, 0),
            Kind::Decimal { precision, scale } => {
                Column::Decimal(Decimal128Builder::new(), *precision, *scale)
            }
            Kind::Float32 => Column::Float32(Float32Builder::new()),
            Kind::Float64 => Column::Float64(Float64Builder::new()),
            Kind::Bool => Column::Bool(BooleanBuilder::new()),
            Kind::Date => Column::Date(Date32Builder::new()),
            Kind::DateTime => Column::Timestamp(TimestampMicrosecondBuilder::new(), None),
            Kind::Timestamp => {
                Column::Timestamp(TimestampMicrosecondBuilder::new(), Some("UTC".into()))
            }
            Kind::DecimalText
            | Kind::Time
            | Kind::Text { .. }
            | Kind::Json
            | Kind::Enum
            | Kind::Set => Column::Text(StringBuilder::new()),
            Kind::Binary => Column::Binary(BinaryBuilder::new()),
        }
    }

    /// Appends a cell [`decode`] made for this column's kind.
    fn append(&mut self, cell: Cell) {
        match (self, cell) {
            (Column::Int8(b), Cell::Int(v)) => b.append_value(v as i8),
            (Column::Int16(b), Cell::Int(v)) => b.append_value(v as i16),
            (Column::Int32(b), Cell::Int(v)) => b.append_value(v as i32),
            (Column::Int64(b), Cell::Int(v)) => b.append_value(v),
            (Column::Decimal(b, ..), Cell::Wide(v)) => b.append_value(v),
            (Column::Float32(b), Cell::Float(v)) => b.append_value(v as f32),
            (Column::Float64(b), Cell::Float(v)) => b.append_value(v),
            (Column::Bool(b), Cell::Bool(v)) => b.append_value(v),
            (Column::Date(b), Cell::Date(v)) => b.append_value(v),
            (Column::Timestamp(b, _), Cell::Micros(v)) => b.append_value(v),
            (Column::Text(b), Cell::Text(v)) => b.append_value(v),
            (Column::Binary(b), Cell::Bytes(v)) => b.append_value(v),
            (column, _) => column.append_null(),
        }
    }

    fn append_null(&mut self) {
        match self {
            Column::Int8(b) => b.append_null(),
            Column::Int16(b) => b.append_null(),
            Column::Int32(b) => b.append_null(),
            Column::Int64(b) => b.append_null(),
            Column::Decimal(b, ..) => b.append_null(),
            Column::Float32(b) => b.append_null(),
            Column::Float64(b) => b.append_null(),
            Column::Bool(b) => b.append_null(),
            Column::Date(b) => b.append_null(),
            Column::Timestamp(b, _) => b.append_null(),
            Column::Text(b) => b.append_null(),
            Column::Binary(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Column::Int8(b) => Arc::new(b.finish()),
            Column::Int16(b) => Arc::new(b.finish()),
            Column::Int32(b) => Arc::new(b.finish()),
            Column::Int64(b) => Arc::new(b.finish()),
            Column::Decimal(b, p, s) => Arc::new(
                b.finish()
                    .with_precision_and_scale(*p, *s)
                    .unwrap_or_else(|e| panic!("decimal({p},{s}) is a valid Arrow type: {e}")),
            ),
            Column::Float32(b) => Arc::new(b.finish()),
            Column::Float64(b) => Arc::new(b.finish()),
            Column::Bool(b) => Arc::new(b.finish()),
            Column::Date(b) => Arc::new(b.finish()),
            Column::Timestamp(b, zone) => Arc::new(b.finish().with_timezone_opt(zone.clone())),
            Column::Text(b) => Arc::new(b.finish()),
            Column::Binary(b) => Arc::new(b.finish()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(kind: Kind, value: Value) -> Cell {
        decode(&ColumnDecoder::new(kind), &value).expect("decodes")
    }

    #[test]
    fn full_load_and_binlog_forms_decode_alike() {
        // Unsigned: binary protocol UInt, binlog Int of the same bits' value.
        assert_eq!(cell(Kind::Int16, Value::UInt(200)), Cell::Int(200));
        assert_eq!(
            cell(Kind::UInt64, Value::UInt(u64::MAX)),
            Cell::Wide(u64::MAX as i128)
        );
        // Timestamps: a UTC date and time, or epoch seconds with a fraction.
        assert_eq!(
            cell(Kind::Timestamp, Value::Date(2024, 2, 29, 12, 0, 1, 500_000)),
            cell(Kind::Timestamp, Value::Bytes(b"1709208001.500000".to_vec()))
        );
        // Signed mediumint, as the binlog gives it.
        assert_eq!(
            cell(Kind::Int24, Value::Int(8_388_608)),
            Cell::Int(-8_388_608)
        );
        assert_eq!(
            cell(Kind::Int24, Value::Int(-8_388_608)),
            Cell::Int(-8_388_608)
        );
        // Year 0000.
        assert_eq!(
            cell(Kind::Year, Value::Int(0)),
            cell(Kind::Year, Value::Bytes(b"1900".to_vec()))
        );
        // Bits: big-endian bytes either way.
        assert_eq!(cell(Kind::Bits, Value::Bytes(vec![1, 2])), Cell::Int(258));
        assert_eq!(cell(Kind::Bool, Value::Bytes(vec![1])), Cell::Bool(true));
        // Zero dates are NULL.
        assert_eq!(
            cell(Kind::DateTime, Value::Date(0, 0, 0, 0, 0, 0, 0)),
            Cell::Null
        );
        assert_eq!(
            cell(Kind::Time, Value::Time(true, 34, 22, 59, 59, 0)),
            Cell::Text("-838:59:59".into())
        );
    }

    #[test]
    fn a_null_is_appended_as_null_whatever_the_catalog_said() {
        // Discovery's schema: every field nullable, NOT NULL or not.
        let names = vec!["id".to_string(), "v".to_string()];
        let decoders = vec![
            ColumnDecoder::new(Kind::Int32),
            ColumnDecoder::new(Kind::Text {
                charset: "utf8mb4".into(),
            }),
        ];
        let schema = RowBuilder::schema_for(&names, &decoders);
        let mut builder = RowBuilder::new(schema, decoders.clone());
        builder
            .append_row(&[Value::Int(1), Value::NULL])
            .expect("appends");
        let batch = builder.finish();
        assert!(batch.column(1).is_null(0));

        // A schema with a field that is not nullable: an error naming the column, no panic.
        let strict = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("v", DataType::Utf8, false),
        ]));
        let mut builder = RowBuilder::new(strict, decoders);
        let (column, _) = builder
            .append_row(&[Value::Int(1), Value::NULL])
            .expect_err("NULL in a field that is not nullable");
        assert_eq!(column, 1);
        builder
            .append_row(&[Value::Int(2), Value::Bytes(b"x".to_vec())])
            .expect("appends");
        assert_eq!(builder.finish().num_rows(), 1);
    }

    #[test]
    fn values_that_do_not_fit_are_errors_not_panics() {
        let decode1 = |kind: Kind, value: Value| decode(&ColumnDecoder::new(kind), &value);
        assert!(decode1(Kind::Timestamp, Value::Int(i64::MAX)).is_err());
        assert!(decode1(Kind::Int8, Value::Int(128)).is_err());
        assert!(
            decode1(
                Kind::Decimal {
                    precision: 3,
                    scale: 1
                },
                Value::Bytes(b"100.0".to_vec())
            )
            .is_err()
        );
        assert_eq!(
            decode1(
                Kind::Decimal {
                    precision: 3,
                    scale: 1
                },
                Value::Bytes(b"-99.9".to_vec())
            ),
            Ok(Cell::Wide(-999))
        );
        // Days of a TIME beyond what MySQL sends do not overflow.
        assert!(matches!(
            decode1(Kind::Time, Value::Time(false, u32::MAX, 23, 0, 0, 0)),
            Ok(Cell::Text(_))
        ));
        // decimal(0, 0) has no Arrow type: text.
        assert_eq!(Kind::decimal(0, 0), Kind::DecimalText);
    }

    #[test]
    fn enums_sets_and_latin1_decode_to_text() {
        let labels = vec!["red".to_string(), "green".into(), "blue".into()];
        let enum_decoder = ColumnDecoder {
            kind: Kind::Enum,
            labels: labels.clone(),
        };
        assert_eq!(
            decode(&enum_decoder, &Value::Int(2)),
            Ok(Cell::Text("green".into()))
        );
        assert_eq!(
            decode(&enum_decoder, &Value::Bytes(b"green".to_vec())),
            Ok(Cell::Text("green".into()))
        );
        let set_decoder = ColumnDecoder {
            kind: Kind::Set,
            labels,
        };
        assert_eq!(
            decode(&set_decoder, &Value::Bytes(vec![0b101])),
            Ok(Cell::Text("red,blue".into()))
        );
        let latin1 = Kind::Text {
            charset: "latin1".into(),
        };
        assert_eq!(
            cell(latin1, Value::Bytes(vec![b'c', 0xe9, 0x80])),
            Cell::Text("cé€".into())
        );
    }
}
