//! Row images of binlog rows events, decoded against the columns of their table map.
//!
//! [`column`] checks one table-map column (type, metadata, signedness, charset) and says how
//! its values are read and written; [`decode_rows`] reads a rows event's data (a null bitmap
//! then each non-null value, per image) into [`Value`]s, which
//! [`super::types::RowBuilder`] turns into Arrow.
//!
//! Invariants, whatever the bytes (a server is outside the program, and `fuzz/` feeds this
//! module arbitrary rows with arbitrary valid table maps):
//! - malformed data is an error naming the row and column, never a panic: a column reaches
//!   mysql_common's value decoder only with the metadata length its type reads, and every
//!   read is bounds-checked;
//! - no allocation is sized by the input beyond the number of columns of the table map.
//!
//! This module uses nothing of the crate but [`super::types`]: `fuzz/` compiles it on its own
//! (see `fuzz/src/lib.rs`).

use mysql_common::binlog::value::BinlogValue;
use mysql_common::constants::ColumnType;
use mysql_common::io::ParseBuf;
use mysql_common::value::Value;

use super::types::Kind;

/// Charsets whose binlog bytes are decoded (binary is bytes; the rest is UTF-8 or Windows-1252).
pub const DECODED_CHARSETS: [&str; 6] = ["utf8mb4", "utf8mb3", "utf8", "ascii", "latin1", "binary"];

/// Row images of a rows event: `(before, after)`, one side empty for inserts and deletes.
pub type RowImages = Vec<(Option<Vec<Value>>, Option<Vec<Value>>)>;

/// How one column's binlog values are read.
#[derive(Debug, Clone)]
pub struct ColumnCtx {
    pub name: String,
    column_type: ColumnType,
    meta: Vec<u8>,
    unsigned: bool,
}

/// A table-map column, checked: how its values are read, and the kind they are written as.
/// `charset` is the name of the column's charset (character, enum and set columns; `None`
/// otherwise). The error says what is wrong and how to fix it; `schema` and `table` name the
/// table in it.
pub fn column(
    schema: &str,
    table: &str,
    name: &str,
    column_type: ColumnType,
    meta: &[u8],
    unsigned: bool,
    charset: Option<&str>,
) -> Result<(ColumnCtx, Kind), String> {
    // mysql_common indexes the metadata without checking its length.
    if meta.len() < metadata_len(column_type) {
        return Err(format!(
            "column {name} ({column_type:?}) has {} bytes of metadata, fewer than its type needs",
            meta.len()
        ));
    }
    if column_type == ColumnType::MYSQL_TYPE_NEWDECIMAL {
        // MySQL's limits; the decoder subtracts the scale from the precision unchecked.
        let (precision, scale) = (meta.first().copied(), meta.get(1).copied());
        if !matches!((precision, scale), (Some(p @ 1..=65), Some(s @ 0..=30)) if s <= p) {
            return Err(format!(
                "column {name} is DECIMAL({}, {}), outside MySQL's DECIMAL(1..=65, 0..=30)",
                precision.unwrap_or(0),
                scale.unwrap_or(0)
            ));
        }
    }
    if column_type == ColumnType::MYSQL_TYPE_TIME2 && matches!(meta.first(), Some(1 | 2)) {
        // mysql_common 0.37 decodes negative TIME(1)/TIME(2) values with a fraction
        // wrongly (an unsigned underflow): refuse rather than write a wrong value.
        return Err(format!(
            "column {name} is TIME({}), whose negative values the binlog decoder cannot read exactly. Widen it without loss (ALTER TABLE `{schema}`.`{table}` MODIFY {name} TIME(3)), then reload the task",
            meta.first().copied().unwrap_or(0)
        ));
    }
    let charset = match charset {
        Some(c) if DECODED_CHARSETS.contains(&c) => Some(c.to_owned()),
        Some(c) => {
            return Err(format!(
                "column {name} is in charset {c}, which tributary does not decode from the binlog (it decodes {}). Convert it (ALTER TABLE `{schema}`.`{table}` MODIFY {name} … CHARACTER SET utf8mb4), then reload the task",
                DECODED_CHARSETS.join(", ")
            ));
        }
        None if column_type.is_character_type() => {
            return Err(format!(
                "column {name} has no charset in the table map: binlog_row_metadata is not FULL"
            ));
        }
        None => None,
    };
    let kind = binlog_kind(column_type, meta, unsigned, charset).ok_or_else(|| {
        format!("column {name} has binlog type {column_type:?}, which tributary cannot read")
    })?;
    Ok((
        ColumnCtx {
            name: name.to_owned(),
            column_type,
            meta: meta.to_vec(),
            unsigned,
        },
        kind,
    ))
}

/// The row images in `data`, a rows event's rows: each row has a before image when
/// `before` and an after image when `after`, every image holding every column (the caller
/// checked the event's column bitmaps). Each image takes at least its null bitmap's byte, so
/// the rows are bounded by the data.
pub fn decode_rows(
    data: &[u8],
    columns: &[ColumnCtx],
    before: bool,
    after: bool,
) -> Result<RowImages, String> {
    if !before && !after {
        return Err("a rows event with neither a before nor an after image".into());
    }
    if columns.is_empty() {
        // Images without columns take no bytes: the data would never end.
        return Err("a rows event for a table map without columns".into());
    }
    let mut buf = ParseBuf(data);
    let mut rows = Vec::new();
    while !buf.is_empty() {
        let row = rows.len();
        let mut image = |which: &str| {
            read_image(&mut buf, columns)
                .map_err(|m| format!("row {row} of the event, {which} image: {m}"))
        };
        let before = before.then(|| image("before")).transpose()?;
        let after = after.then(|| image("after")).transpose()?;
        rows.push((before, after));
    }
    Ok(rows)
}

/// One row image (every column present): a null bitmap, then each non-null value. Values
/// are decoded by mysql_common's column decoder, without building its per-row column
/// descriptions (which cost more than the values).
fn read_image<'a>(buf: &mut ParseBuf<'a>, columns: &'a [ColumnCtx]) -> Result<Vec<Value>, String> {
    let nulls = buf
        .checked_eat(columns.len().div_ceil(8))
        .ok_or("it ends inside its null bitmap")?;
    let mut values = Vec::with_capacity(columns.len());
    for (i, c) in columns.iter().enumerate() {
        let null = nulls.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0);
        if null {
            values.push(Value::NULL);
            continue;
        }
        let error = |e: String| format!("column {} ({:?}): {e}", c.name, c.column_type);
        refuse_what_the_decoder_mishandles(c, buf.0).map_err(error)?;
        let value: BinlogValue<'a> = buf
            .parse((c.column_type, c.meta.as_slice(), c.unsigned, false))
            .map_err(|e| error(e.to_string()))?;
        values.push(match value {
            BinlogValue::Value(v) => v,
            other => Value::try_from(other).map_err(|e| error(e.to_string()))?,
        });
    }
    Ok(values)
}

/// `DATETIME2`'s packed value is offset by 2^39, so that a valid one (year 0 and later) has its
/// top bit set.
const DATETIME2_OFFSET: u64 = 0x80_0000_0000;

/// Refuses values at the start of `data` that mysql_common 0.37's decoder would mishandle
/// (an arithmetic overflow: a panic with overflow checks, a wrong value without).
fn refuse_what_the_decoder_mishandles(c: &ColumnCtx, data: &[u8]) -> Result<(), String> {
    if c.column_type == ColumnType::MYSQL_TYPE_NEWDECIMAL {
        let precision = c.meta.first().copied().unwrap_or(0).into();
        let scale = c.meta.get(1).copied().unwrap_or(0).into();
        check_decimal(precision, scale, data)?;
    }
    if c.column_type == ColumnType::MYSQL_TYPE_DATETIME2 {
        // A packed value below the offset is a negative datetime, which MySQL never writes;
        // the smallest one overflows when the decoder negates it.
        if let Some(bytes) = data.get(..5) {
            let packed = bytes.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b));
            if packed < DATETIME2_OFFSET {
                return Err(format!("DATETIME2 value 0x{packed:010x} is before year 0"));
            }
        }
    }
    Ok(())
}

/// Decimal digits per 4-byte group of MySQL's binary DECIMAL, and bytes for fewer digits.
const DIGITS_PER_GROUP: usize = 9;
const BYTES_FOR_DIGITS: [usize; DIGITS_PER_GROUP + 1] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];

/// Checks that the binary DECIMAL(`precision`, `scale`) at the start of `data` has digit
/// groups in range (each below 10^its digits), as MySQL writes them: mysql_common scales
/// the last group unchecked, and an out-of-range one overflowed (and would print wrong
/// digits). A value cut short is left to the decoder, which reports it.
fn check_decimal(precision: usize, scale: usize, data: &[u8]) -> Result<(), String> {
    let integer = precision.saturating_sub(scale);
    let mut groups = Vec::new();
    groups.push(integer % DIGITS_PER_GROUP);
    groups.extend(std::iter::repeat_n(
        DIGITS_PER_GROUP,
        integer / DIGITS_PER_GROUP,
    ));
    groups.extend(std::iter::repeat_n(
        DIGITS_PER_GROUP,
        scale / DIGITS_PER_GROUP,
    ));
    groups.push(scale % DIGITS_PER_GROUP);
    let size: usize = groups.iter().map(|&d| BYTES_FOR_DIGITS[d]).sum();
    let Some(value) = data.get(..size) else {
        return Ok(());
    };
    // The sign is the first bit, set for positive values; a negative value's bytes are
    // inverted.
    let negative = value.first().is_some_and(|b| b & 0x80 == 0);
    let mut at = 0;
    for digits in groups.into_iter().filter(|&d| d > 0) {
        let len = BYTES_FOR_DIGITS[digits];
        let group = value.get(at..at + len).unwrap_or_default();
        let mut x: u64 = 0;
        for (i, &b) in group.iter().enumerate() {
            let b = if at + i == 0 { b ^ 0x80 } else { b };
            let b = if negative { !b } else { b };
            x = x << 8 | u64::from(b);
        }
        if x >= 10u64.pow(digits as u32) {
            return Err(format!(
                "DECIMAL({precision}, {scale}) value has a group of {digits} digits holding {x}"
            ));
        }
        at += len;
    }
    Ok(())
}

/// Bytes of table-map metadata a column type's value decoder reads.
fn metadata_len(column_type: ColumnType) -> usize {
    use ColumnType::*;
    match column_type {
        MYSQL_TYPE_STRING
        | MYSQL_TYPE_VARCHAR
        | MYSQL_TYPE_VAR_STRING
        | MYSQL_TYPE_NEWDECIMAL
        | MYSQL_TYPE_BIT
        | MYSQL_TYPE_ENUM
        | MYSQL_TYPE_SET => 2,
        MYSQL_TYPE_BLOB
        | MYSQL_TYPE_TINY_BLOB
        | MYSQL_TYPE_MEDIUM_BLOB
        | MYSQL_TYPE_LONG_BLOB
        | MYSQL_TYPE_GEOMETRY
        | MYSQL_TYPE_VECTOR
        | MYSQL_TYPE_TIMESTAMP2
        | MYSQL_TYPE_DATETIME2
        | MYSQL_TYPE_TIME2
        | MYSQL_TYPE_TYPED_ARRAY => 1,
        _ => 0,
    }
}

/// The kind of a binlog column, as [`Kind::from_information_schema`] gives for the same
/// column, so full-load and CDC files agree.
fn binlog_kind(
    column_type: ColumnType,
    meta: &[u8],
    unsigned: bool,
    charset: Option<String>,
) -> Option<Kind> {
    use ColumnType::*;
    let byte = |i: usize| meta.get(i).copied().unwrap_or(0) as u32;
    Some(match column_type {
        MYSQL_TYPE_TINY if unsigned => Kind::Int16,
        MYSQL_TYPE_TINY => Kind::Int8,
        MYSQL_TYPE_SHORT if unsigned => Kind::Int32,
        MYSQL_TYPE_SHORT => Kind::Int16,
        MYSQL_TYPE_INT24 if unsigned => Kind::Int32,
        MYSQL_TYPE_INT24 => Kind::Int24,
        MYSQL_TYPE_LONG if unsigned => Kind::Int64,
        MYSQL_TYPE_LONG => Kind::Int32,
        MYSQL_TYPE_LONGLONG if unsigned => Kind::UInt64,
        MYSQL_TYPE_LONGLONG => Kind::Int64,
        MYSQL_TYPE_FLOAT => Kind::Float32,
        MYSQL_TYPE_DOUBLE => Kind::Float64,
        MYSQL_TYPE_NEWDECIMAL => Kind::decimal(byte(0), byte(1)),
        MYSQL_TYPE_BIT => Kind::bits(byte(1) * 8 + byte(0)),
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => Kind::Date,
        MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 => Kind::DateTime,
        MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => Kind::Timestamp,
        MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => Kind::Time,
        MYSQL_TYPE_YEAR => Kind::Year,
        MYSQL_TYPE_ENUM => Kind::Enum,
        MYSQL_TYPE_SET => Kind::Set,
        MYSQL_TYPE_JSON => Kind::Json,
        MYSQL_TYPE_VARCHAR
        | MYSQL_TYPE_VAR_STRING
        | MYSQL_TYPE_STRING
        | MYSQL_TYPE_BLOB
        | MYSQL_TYPE_TINY_BLOB
        | MYSQL_TYPE_MEDIUM_BLOB
        | MYSQL_TYPE_LONG_BLOB => match charset {
            Some(c) if c != "binary" => Kind::Text { charset: c },
            _ => Kind::Binary,
        },
        MYSQL_TYPE_GEOMETRY | MYSQL_TYPE_VECTOR => Kind::Binary,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(types: &[(ColumnType, &[u8])]) -> Vec<ColumnCtx> {
        types
            .iter()
            .enumerate()
            .map(|(i, (t, meta))| {
                column(
                    "db",
                    "t",
                    &format!("c{i}"),
                    *t,
                    meta,
                    false,
                    Some("utf8mb4"),
                )
                .expect("a valid column")
                .0
            })
            .collect()
    }

    #[test]
    fn rows_decode_and_malformed_ones_say_where() {
        let cols = columns(&[
            (ColumnType::MYSQL_TYPE_LONG, &[]),
            (ColumnType::MYSQL_TYPE_VARCHAR, &[40, 0]),
        ]);
        // Two after images: (7, "ab") and (NULL, "").
        let data = [0b00, 7, 0, 0, 0, 2, b'a', b'b', 0b01, 0];
        let rows = decode_rows(&data, &cols, false, true).expect("decodes");
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0].1,
            Some(vec![Value::Int(7), Value::Bytes(b"ab".to_vec())])
        );
        assert_eq!(rows[1].1, Some(vec![Value::NULL, Value::Bytes(Vec::new())]));
        // Cut in the second row's varchar.
        let err = decode_rows(&data[..9], &cols, false, true).expect_err("cut");
        assert!(
            err.starts_with("row 1 of the event, after image: column c1"),
            "{err}"
        );
        let err = decode_rows(&data[..3], &cols, false, true).expect_err("cut");
        assert!(
            err.starts_with("row 0 of the event, after image: column c0"),
            "{err}"
        );
        assert!(decode_rows(&data, &cols, false, false).is_err());
        // No columns: images of no bytes (found by fuzzing: the rows grew without end).
        assert!(decode_rows(&[0, 3, 10], &[], true, true).is_err());
        // A DATETIME2 before year 0 (found by fuzzing: the decoder's negation overflowed).
        let dt = columns(&[(ColumnType::MYSQL_TYPE_DATETIME2, &[0])]);
        let err = decode_rows(&[0, 0, 0, 0, 0, 0], &dt, false, true).expect_err("year < 0");
        assert!(err.contains("before year 0"), "{err}");
        let ok = decode_rows(&[0, 0x80, 0, 0, 0, 0], &dt, false, true).expect("year 0");
        assert_eq!(ok.len(), 1);
        // DECIMAL: MySQL's limits on the table map, and digit groups in range (found by
        // fuzzing: the decoder's scaling of the last group overflowed).
        let decimal = |meta: &[u8]| {
            column(
                "d",
                "t",
                "c",
                ColumnType::MYSQL_TYPE_NEWDECIMAL,
                meta,
                false,
                None,
            )
        };
        assert!(decimal(&[0, 0]).is_err());
        assert!(decimal(&[5, 6]).is_err());
        assert!(decimal(&[66, 0]).is_err());
        let dec = columns(&[(ColumnType::MYSQL_TYPE_NEWDECIMAL, &[10, 8])]);
        // 1.23456789 and -1.23456789: 1 integer digit in 1 byte, 8 fraction digits in 4.
        let one = [0, 0x81, 0x01, 0x65, 0xec, 0x15];
        let rows = decode_rows(&one, &dec, false, true).expect("decodes");
        assert_eq!(rows[0].1, Some(vec![Value::Bytes(b"1.23456789".to_vec())]));
        let minus_one = [0, 0x7e, 0xfe, 0x9a, 0x13, 0xea];
        let rows = decode_rows(&minus_one, &dec, false, true).expect("decodes");
        assert_eq!(rows[0].1, Some(vec![Value::Bytes(b"-1.23456789".to_vec())]));
        // Eight fraction digits holding 2^31 - 1.
        let err = decode_rows(&[0, 0x81, 0x7f, 0xff, 0xff, 0xff], &dec, false, true)
            .expect_err("out of range");
        assert!(err.contains("holding"), "{err}");
        // A varchar longer than the data it says it has.
        assert!(decode_rows(&[0, 1, 0, 0, 0, 200, b'a'], &cols, true, false).is_err());
    }

    #[test]
    fn table_map_columns_are_checked() {
        // Metadata shorter than the type reads.
        assert!(
            column(
                "d",
                "t",
                "c",
                ColumnType::MYSQL_TYPE_VARCHAR,
                &[1],
                false,
                Some("utf8mb4")
            )
            .is_err()
        );
        // A charset that is not decoded, or none for text.
        assert!(
            column(
                "d",
                "t",
                "c",
                ColumnType::MYSQL_TYPE_VARCHAR,
                &[1, 0],
                false,
                Some("cp1251")
            )
            .is_err()
        );
        assert!(
            column(
                "d",
                "t",
                "c",
                ColumnType::MYSQL_TYPE_VARCHAR,
                &[1, 0],
                false,
                None
            )
            .is_err()
        );
        // TIME(2), and a type with no mapping.
        assert!(
            column(
                "d",
                "t",
                "c",
                ColumnType::MYSQL_TYPE_TIME2,
                &[2],
                false,
                None
            )
            .is_err()
        );
        assert!(column("d", "t", "c", ColumnType::MYSQL_TYPE_NULL, &[], false, None).is_err());
        let (_, kind) = column(
            "d",
            "t",
            "c",
            ColumnType::MYSQL_TYPE_NEWDECIMAL,
            &[12, 3],
            false,
            None,
        )
        .expect("decimal(12,3)");
        assert_eq!(
            kind,
            Kind::Decimal {
                precision: 12,
                scale: 3
            }
        );
    }
}
