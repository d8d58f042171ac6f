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
use crate::ident::TableId;

/// Joins key segments with `/`; a folder setting's empty and `.` segments are dropped, so
/// `raw/`, `./raw` and `raw` are one folder.
fn join(parts: &[&str]) -> String {
    parts
        .iter()
        .flat_map(|p| p.split('/'))
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// A source name (schema, table, endpoint) as one key segment, DMS's plain name whenever
/// that is safe. Escaped as `%XX` (the UTF-8 bytes, upper-case hex): `%`, `/`, `\`, control
/// characters, and a leading `.` or `_` (readers skip such folders, and `.`/`..` would leave
/// the folder). An empty name is `%`. So a segment is never empty, `.` or `..`, never holds
/// a separator or NUL, and two names never share one; [`segment_name`] reverses it.
pub fn segment(name: &str) -> String {
    if name.is_empty() {
        return "%".into();
    }
    let mut out = String::with_capacity(name.len());
    for (i, c) in name.char_indices() {
        let escape =
            matches!(c, '%' | '/' | '\\') || c.is_control() || (i == 0 && matches!(c, '.' | '_'));
        if escape {
            let mut bytes = [0u8; 4];
            for b in c.encode_utf8(&mut bytes).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The name a key segment stands for: the inverse of [`segment`]. A `%` not followed by
/// two hex digits (written by hand or by an older version) stands for itself.
pub fn segment_name(segment: &str) -> String {
    if segment == "%" {
        return String::new();
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|_| bytes[i] == b'%')
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Whether a file name is hidden from readers: Spark, Glue and pyarrow skip names starting
/// with `.` or `_` (and an empty name is an S3 folder marker).
pub fn is_hidden_name(name: &str) -> bool {
    name.is_empty() || name.starts_with(['.', '_'])
}

/// A folder setting (`bucket_folder`, `[curate] folder`) as a key prefix: `raw/`, or empty
/// for the target's root.
pub fn folder_prefix(folder: &str) -> String {
    match join(&[folder]) {
        root if root.is_empty() => root,
        folder => format!("{folder}/"),
    }
}

/// The folder of a source's tables, ending with `/`.
pub fn source_prefix(bucket_folder: &str, source: &str) -> String {
    format!("{}/", join(&[bucket_folder, &segment(source)]))
}

/// The folder of a table's files, ending with `/`.
pub fn table_prefix(bucket_folder: &str, source: &str, table: &TableId) -> String {
    format!(
        "{}/",
        join(&[
            bucket_folder,
            &segment(source),
            &segment(&table.schema),
            &segment(&table.table)
        ])
    )
}

/// The folder of a model's table (`<schema>/<name>` under the curated folder), ending
/// with `/`.
pub fn model_prefix(folder: &str, schema: &str, name: &str) -> String {
    format!("{}/", join(&[folder, &segment(schema), &segment(name)]))
}

/// Whether `key` lies strictly inside `folder` (a prefix ending with `/`): below it, and
/// with no segment that could climb out. Deletes check it, whatever computed the folder.
pub fn is_inside(folder: &str, key: &str) -> bool {
    folder.ends_with('/')
        && key
            .strip_prefix(folder)
            .is_some_and(|rest| !rest.is_empty() && rest.split('/').all(|s| s != ".." && s != "."))
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
        let id = |s: &str, t: &str| TableId::new(s, t);
        assert_eq!(
            table_prefix("raw", "shop", &id("public", "orders")),
            "raw/shop/public/orders/"
        );
        assert_eq!(
            table_prefix("", "shop", &id("public", "orders")),
            "shop/public/orders/"
        );
        assert_eq!(
            table_prefix("./raw/", "shop", &id("public", "orders")),
            "raw/shop/public/orders/"
        );
        assert_eq!(
            table_prefix("raw", "shop", &id("a/b", "c")),
            "raw/shop/a%2Fb/c/"
        );
        assert_eq!(segment_name("50%off"), "50%off");
        assert_eq!(task_state_prefix("raw", "t1"), "raw/_tributary/t1/");
        assert_eq!(load_file_name(1, "parquet"), "LOAD00000001.parquet");
        assert_eq!(load_file_name(10, "csv.gz"), "LOAD0000000A.csv.gz");
        assert_eq!(parse_load_number("LOAD0000000A.csv.gz"), Some(10));
        assert_eq!(parse_load_number("20240101-120000000.parquet"), None);
    }

    #[test]
    fn hostile_names_stay_inside_their_folder_and_read_back() {
        let hostile = [
            ".",
            "..",
            "a.b",
            "a/b",
            "a\\b",
            " ",
            "_x",
            ".x",
            "",
            "%",
            "%2F",
            "100%",
            "x\0y",
            "\n",
            "..a",
            "a..",
            "Orders",
            "orders",
            "日本語テーブル名前😀",
            "odd/%#name",
        ];
        let mut seen = std::collections::HashSet::new();
        for name in hostile {
            let s = segment(name);
            assert!(!s.is_empty() && s != "." && s != "..", "{name:?} -> {s:?}");
            assert!(!s.contains(['/', '\\', '\0']), "{name:?} -> {s:?}");
            assert!(
                !is_hidden_name(&s),
                "{name:?} -> {s:?} is hidden from readers"
            );
            assert_eq!(segment_name(&s), name, "{s:?}");
            assert!(seen.insert(s), "{name:?} shares its segment");
        }
        assert_eq!(segment("."), "%2E");
        assert_eq!(segment(".."), "%2E.");
        assert_eq!(segment("_x"), "%5Fx");
        assert_eq!(segment("a_b.c d"), "a_b.c d");
        for schema in hostile {
            for table in hostile {
                let prefix = table_prefix("raw", "src", &TableId::new(schema, table));
                assert!(is_inside("raw/src/", &prefix), "{prefix}");
                assert_eq!(prefix.split('/').count(), 5, "{prefix}");
            }
        }
    }

    #[test]
    fn only_keys_strictly_inside_a_folder_are_inside() {
        assert!(is_inside("raw/s/p/t/", "raw/s/p/t/LOAD00000001.parquet"));
        assert!(is_inside("raw/s/p/t/", "raw/s/p/t/2026/01/02/x.parquet"));
        assert!(!is_inside("raw/s/p/t/", "raw/s/p/t/"));
        assert!(!is_inside("raw/s/p/t/", "raw/s/p/t2/x"));
        assert!(!is_inside("raw/s/p/t/", "raw/s/p/t/../../x"));
        assert!(!is_inside("raw/s/p/t", "raw/s/p/t/x"));
    }
}
