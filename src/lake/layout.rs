//! Names in the raw zone, compatible with AWS DMS's S3 target.
//!
//! `<bucket_folder>/<source endpoint>/<schema>/<table>/LOAD00000001.parquet`: full-load files
//! numbered by a hexadecimal counter, as in DMS. A task's own state lives beside the data
//! under `<bucket_folder>/_tributary/<task>/`, so a task can resume from any machine; readers
//! such as Glue crawlers and pyarrow skip folders starting with `_`.
//!
//! CDC files: `<table folder>/[date partition/]YYYYMMDD-HHMMSSmmm.<ext>`, named by commit
//! time as DMS names them; the partition (`year=YYYY/month=MM/day=DD` or `YYYY/MM/DD`, in
//! the configured sequence) comes from the commit date.

use crate::config::{DatePartitionSequence, DatePartitionStyle};

/// Joins non-empty key segments with `/`.
fn join(parts: &[&str]) -> String {
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| p.trim_matches('/'))
        .collect::<Vec<_>>()
        .join("/")
}

/// A schema or table name as one key segment: `/` would make a folder, so it is escaped.
fn segment(name: &str) -> String {
    name.replace('%', "%25").replace('/', "%2F")
}

/// The name a key segment stands for: the inverse of [`segment`] (other `%` sequences,
/// written by hand, stay as they are).
pub fn segment_name(segment: &str) -> String {
    let mut name = String::with_capacity(segment.len());
    let mut rest = segment;
    while let Some(i) = rest.find('%') {
        name.push_str(&rest[..i]);
        let escape = &rest[i..];
        if let Some(after) = escape.strip_prefix("%25") {
            name.push('%');
            rest = after;
        } else if let Some(after) = escape.strip_prefix("%2F") {
            name.push('/');
            rest = after;
        } else {
            name.push('%');
            rest = &escape[1..];
        }
    }
    name.push_str(rest);
    name
}

/// Whether a file name is hidden from readers: Spark, Glue and pyarrow skip names starting
/// with `.` or `_` (and an empty name is an S3 folder marker).
pub fn is_hidden_name(name: &str) -> bool {
    name.is_empty() || name.starts_with(['.', '_'])
}

/// The folder of a table's files, ending with `/`.
pub fn table_prefix(bucket_folder: &str, source: &str, schema: &str, table: &str) -> String {
    format!(
        "{}/",
        join(&[bucket_folder, source, &segment(schema), &segment(table)])
    )
}

/// The folder of a task's own state, ending with `/`.
pub fn task_state_prefix(bucket_folder: &str, task: &str) -> String {
    format!("{}/", join(&[bucket_folder, "_tributary", task]))
}

/// `LOAD00000001.parquet`: the n-th full-load file of a table, n from 1, in hexadecimal.
pub fn load_file_name(number: u32, extension: &str) -> String {
    format!("LOAD{number:08X}.{extension}")
}

/// The counter of a full-load file name, or `None` for any other name.
pub fn parse_load_number(file_name: &str) -> Option<u32> {
    let hex = file_name.strip_prefix("LOAD")?.get(..8)?;
    u32::from_str_radix(hex, 16).ok()
}

/// The date-partition folder of a commit time, ending with `/`.
pub fn date_partition(
    time: chrono::DateTime<chrono::Utc>,
    sequence: DatePartitionSequence,
    style: DatePartitionStyle,
) -> String {
    use DatePartitionSequence as S;
    let (y, m, d, h) = (
        time.format("%Y").to_string(),
        time.format("%m").to_string(),
        time.format("%d").to_string(),
        time.format("%H").to_string(),
    );
    let parts: Vec<(&str, String)> = match sequence {
        S::YyyyMmDd => vec![("year", y), ("month", m), ("day", d)],
        S::YyyyMmDdHh => vec![("year", y), ("month", m), ("day", d), ("hour", h)],
        S::YyyyMm => vec![("year", y), ("month", m)],
        S::MmYyyyDd => vec![("month", m), ("year", y), ("day", d)],
        S::DdMmYyyy => vec![("day", d), ("month", m), ("year", y)],
    };
    let mut out = String::new();
    for (name, value) in parts {
        match style {
            DatePartitionStyle::Hive => out.push_str(&format!("{name}={value}/")),
            DatePartitionStyle::Dms => out.push_str(&format!("{value}/")),
        }
    }
    out
}

/// `20240229-134530123.parquet`: a CDC file named by commit time (UTC, milliseconds).
pub fn cdc_file_name(time: chrono::DateTime<chrono::Utc>, extension: &str) -> String {
    format!("{}.{extension}", time.format("%Y%m%d-%H%M%S%3f"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdc_names_and_partitions_follow_dms() {
        use chrono::TimeZone;
        let t = chrono::Utc
            .with_ymd_and_hms(2024, 2, 29, 13, 45, 30)
            .single()
            .unwrap()
            + chrono::Duration::milliseconds(123);
        assert_eq!(cdc_file_name(t, "parquet"), "20240229-134530123.parquet");
        assert_eq!(
            date_partition(t, DatePartitionSequence::YyyyMmDd, DatePartitionStyle::Hive),
            "year=2024/month=02/day=29/"
        );
        assert_eq!(
            date_partition(
                t,
                DatePartitionSequence::YyyyMmDdHh,
                DatePartitionStyle::Dms
            ),
            "2024/02/29/13/"
        );
        assert_eq!(
            date_partition(t, DatePartitionSequence::DdMmYyyy, DatePartitionStyle::Dms),
            "29/02/2024/"
        );
    }

    #[test]
    fn names_follow_dms() {
        assert_eq!(
            table_prefix("raw", "shop", "public", "orders"),
            "raw/shop/public/orders/"
        );
        assert_eq!(
            table_prefix("", "shop", "public", "orders"),
            "shop/public/orders/"
        );
        assert_eq!(table_prefix("raw", "shop", "a/b", "c"), "raw/shop/a%2Fb/c/");
        for name in ["a/b", "odd/%#name", "100%", "%2F", "plain"] {
            assert_eq!(segment_name(&segment(name)), name);
        }
        assert_eq!(segment_name("50%off"), "50%off");
        assert_eq!(task_state_prefix("raw", "t1"), "raw/_tributary/t1/");
        assert_eq!(load_file_name(1, "parquet"), "LOAD00000001.parquet");
        assert_eq!(load_file_name(10, "csv.gz"), "LOAD0000000A.csv.gz");
        assert_eq!(parse_load_number("LOAD0000000A.csv.gz"), Some(10));
        assert_eq!(parse_load_number("20240101-120000000.parquet"), None);
    }
}
