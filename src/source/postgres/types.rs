//! PostgreSQL types and the Arrow/Parquet types they are written as.
//!
//! Decisions (also in the README's type table):
//! - `numeric(p,s)` with p ≤ 38 is `decimal(p,s)`. Unbounded `numeric` and p > 38 are read
//!   as text (lossless; PostgreSQL formats them), because any fixed decimal would round or
//!   overflow someone's data. DMS's `MapUnboundedNumericAsString` behaviour, made the default.
//! - `uuid` is a string (Athena and Glue do not read Parquet's UUID type).
//! - `json`, `jsonb`, `xml`, enums and `"char"` are strings; a domain is its base type.
//! - Arrays are lists of their element type; multi-dimensional arrays are flattened in row
//!   order (PostgreSQL's type system does not carry the number of dimensions).
//! - `timestamp`/`timestamptz` ±infinity become the largest/smallest µs timestamps.
//! - Everything else (interval, money, inet, geometric types, ranges, …) is read as text.

use arrow_schema::{DataType, Field, TimeUnit};

/// How one column's binary COPY values are decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int16,
    Int32,
    Int64,
    /// `oid`, an unsigned 32-bit value, widened to int64.
    Oid,
    Float32,
    Float64,
    Decimal {
        precision: u8,
        scale: i8,
    },
    /// UTF-8 text as sent by the server.
    Text,
    /// jsonb's binary form: a version byte, then the text.
    Jsonb,
    Bytea,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Uuid,
    List(Box<Kind>),
}

pub const BOOL: u32 = 16;
pub const BYTEA: u32 = 17;
pub const CHAR: u32 = 18;
pub const NAME: u32 = 19;
pub const INT8: u32 = 20;
pub const INT2: u32 = 21;
pub const INT4: u32 = 23;
pub const TEXT: u32 = 25;
pub const OID: u32 = 26;
pub const JSON: u32 = 114;
pub const XML: u32 = 142;
pub const FLOAT4: u32 = 700;
pub const FLOAT8: u32 = 701;
pub const BPCHAR: u32 = 1042;
pub const VARCHAR: u32 = 1043;
pub const DATE: u32 = 1082;
pub const TIME: u32 = 1083;
pub const TIMESTAMP: u32 = 1114;
pub const TIMESTAMPTZ: u32 = 1184;
pub const NUMERIC: u32 = 1700;
pub const UUID: u32 = 2950;
pub const JSONB: u32 = 3802;

/// The largest precision an Arrow `Decimal128` holds.
const MAX_DECIMAL128_PRECISION: i32 = 38;

/// The decode kind of a scalar type, or `None` when it has no mapping (read as text).
/// `is_enum` is true for enum types, whose binary form is their label.
pub fn scalar_kind(oid: u32, typmod: i32, is_enum: bool) -> Option<Kind> {
    if is_enum {
        return Some(Kind::Text);
    }
    Some(match oid {
        BOOL => Kind::Bool,
        INT2 => Kind::Int16,
        INT4 => Kind::Int32,
        INT8 => Kind::Int64,
        OID => Kind::Oid,
        FLOAT4 => Kind::Float32,
        FLOAT8 => Kind::Float64,
        NUMERIC => {
            // typmod = ((precision << 16) | scale) + 4, or -1 when unbounded.
            if typmod < 4 {
                return None;
            }
            let precision = ((typmod - 4) >> 16) & 0xffff;
            let scale = (typmod - 4) & 0xffff;
            // PostgreSQL 15 allows negative scales, stored as a signed 11-bit field.
            let scale = if scale > 1000 { scale - 2048 } else { scale };
            // A precision of 0 is no numeric PostgreSQL makes (a typmod from a relation
            // message is outside data): text, like any numeric without an Arrow decimal.
            if !(1..=MAX_DECIMAL128_PRECISION).contains(&precision)
                || !(0..=precision).contains(&scale)
            {
                return None;
            }
            Kind::Decimal {
                precision: precision as u8,
                scale: scale as i8,
            }
        }
        TEXT | VARCHAR | BPCHAR | NAME | CHAR | JSON | XML => Kind::Text,
        JSONB => Kind::Jsonb,
        BYTEA => Kind::Bytea,
        DATE => Kind::Date,
        TIME => Kind::Time,
        TIMESTAMP => Kind::Timestamp,
        TIMESTAMPTZ => Kind::TimestampTz,
        UUID => Kind::Uuid,
        _ => return None,
    })
}

impl Kind {
    pub fn data_type(&self) -> DataType {
        match self {
            Kind::Bool => DataType::Boolean,
            Kind::Int16 => DataType::Int16,
            Kind::Int32 => DataType::Int32,
            Kind::Int64 | Kind::Oid => DataType::Int64,
            Kind::Float32 => DataType::Float32,
            Kind::Float64 => DataType::Float64,
            Kind::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
            Kind::Text | Kind::Jsonb | Kind::Uuid => DataType::Utf8,
            Kind::Bytea => DataType::Binary,
            Kind::Date => DataType::Date32,
            Kind::Time => DataType::Time64(TimeUnit::Microsecond),
            Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Kind::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Kind::List(element) => DataType::List(list_element_field(element).into()),
        }
    }
}

/// Parquet's standard name for list elements.
pub fn list_element_field(element: &Kind) -> Field {
    Field::new("element", element.data_type(), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_typmod_maps_to_decimal_or_text() {
        let typmod = |p: i32, s: i32| ((p << 16) | s) + 4;
        assert_eq!(
            scalar_kind(NUMERIC, typmod(12, 2), false),
            Some(Kind::Decimal {
                precision: 12,
                scale: 2
            })
        );
        assert_eq!(
            scalar_kind(NUMERIC, -1, false),
            None,
            "unbounded numeric is text"
        );
        assert_eq!(
            scalar_kind(NUMERIC, typmod(50, 2), false),
            None,
            "p > 38 is text"
        );
        assert_eq!(scalar_kind(1186, -1, false), None, "interval is text");
        // Found by fuzzing pgoutput relations: precision 0 made an invalid Arrow decimal
        // (a panic when the batch was built).
        assert_eq!(scalar_kind(NUMERIC, typmod(0, 0), false), None);
        assert_eq!(scalar_kind(NUMERIC, 4, false), None);
        assert_eq!(
            scalar_kind(12345, -1, true),
            Some(Kind::Text),
            "enum is text"
        );
    }
}
