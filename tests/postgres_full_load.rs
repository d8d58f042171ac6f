//! PostgreSQL full load into the raw zone, end to end through the `tributary` binary, against
//! the real PostgreSQL and S3 server that `scripts/test` starts.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::DataType;
use common::*;
use parquet::basic::{LogicalType, TimeUnit};
use parquet::file::reader::{FileReader, SerializedFileReader};
use sqlx::{Executor, Row};

/// Workspace with source `shop` (database `db`), a local target and one task `load`.
fn local_workspace(pg: &Pg, dir: &TestDir, db: &str, task_extra: &str) -> String {
    dir.write_workspace(&format!(
        "{}{}[[tasks]]\nname = \"load\"\nsource = \"shop\"\ntarget = \"lake\"\n{task_extra}",
        pg.endpoint_toml("shop", db),
        local_target_toml("lake", &dir.lake())
    ))
}

/// Every batch of every full-load file of a table in a local lake, in file order.
fn table_batches(table_dir: &Path) -> Vec<RecordBatch> {
    let mut names: Vec<_> = files_under(table_dir)
        .into_iter()
        .filter(|f| f.starts_with("LOAD"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no files in {}", table_dir.display());
    names
        .iter()
        .flat_map(|n| read_parquet_file(&table_dir.join(n)))
        .collect()
}

const EVERY_TYPE_DDL: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE every_type (
    id int8 PRIMARY KEY,
    c_int2 int2, c_int4 int4, c_int8 int8,
    c_numeric numeric(12,3), c_numeric_unbounded numeric, c_numeric_wide numeric(50,10),
    c_float4 float4, c_float8 float8, c_bool bool,
    c_text text, c_varchar varchar(20), c_char char(5),
    c_bytea bytea, c_date date, c_time time, c_ts timestamp, c_tstz timestamptz,
    c_uuid uuid, c_json json, c_jsonb jsonb, c_enum mood,
    c_int_array int4[], c_text_array text[], c_matrix int8[][],
    c_interval interval
);
INSERT INTO every_type VALUES
 (1, -32768, -2147483648, -9223372036854775808,
  -123456789.123, 3.14159265358979323846264338327950288419716939937510, 12345678901234567890123456789012345678.0123456789,
  1.5, 3.141592653589793, true,
  'héllo, "world"', 'v', 'ab', '\xdeadbeef00', '2024-02-29', '13:45:30.123456',
  '2024-02-29 13:45:30.123456', '2024-02-29 13:45:30.123456+02',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2]}', '{"b": {"c": null}}', 'happy',
  '{1,NULL,3}', '{"x","y, z",NULL}', '{{1,2},{3,4}}', '1 year 2 mons 3 days 04:05:06'),
 (2, 32767, 2147483647, 9223372036854775807,
  0.5, -0.000001, -1, -0.25, -1e-5, false,
  '', 'longest varchar here', 'abcde', '\x', '0001-01-01', '00:00:00',
  'infinity', '-infinity', '00000000-0000-0000-0000-000000000000', '[]', '[]', 'sad',
  '{}', '{}', '{}', '-00:00:01'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, 0, 0, 0, 0, 'NaN', 0, 'NaN', 0, true, 'line
break', '日本語', 'x', '\x00', '1970-01-01', '23:59:59.999999', '1970-01-01 00:00:00',
  '1999-12-31 23:59:59.999999+00', 'ffffffff-ffff-ffff-ffff-ffffffffffff', 'null', '"s"', 'ok',
  '{7}', '{""}', '{{5}}', '0');
CREATE TABLE no_pk (a int, b text);
INSERT INTO no_pk VALUES (1, 'one'), (2, 'two');
"#;

/// SQL expressions rendering each column the way [`arrow_text`] renders its Parquet value.
const EVERY_TYPE_TEXT_SQL: &[(&str, &str)] = &[
    ("c_int2", "c_int2::text"),
    ("c_int4", "c_int4::text"),
    ("c_int8", "c_int8::text"),
    ("c_numeric", "c_numeric::text"),
    ("c_numeric_unbounded", "c_numeric_unbounded::text"),
    ("c_numeric_wide", "c_numeric_wide::text"),
    ("c_float4", "c_float4::text"),
    ("c_float8", "c_float8::text"),
    ("c_bool", "c_bool::text"),
    ("c_text", "c_text"),
    ("c_varchar", "c_varchar"),
    // char(n) keeps its padding, as the server sends it (a cast to text would trim it).
    (
        "c_char",
        "CASE WHEN c_char IS NOT NULL THEN format('%s', c_char) END",
    ),
    ("c_bytea", "encode(c_bytea, 'hex')"),
    ("c_date", "c_date::text"),
    ("c_time", "c_time::text"),
    ("c_ts", EPOCH_MICROS_TS),
    ("c_tstz", EPOCH_MICROS_TSTZ),
    ("c_uuid", "c_uuid::text"),
    ("c_json", "c_json::text"),
    ("c_jsonb", "c_jsonb::text"),
    ("c_enum", "c_enum::text"),
    (
        "c_int_array",
        "'[' || array_to_string(c_int_array, ',', 'null') || ']'",
    ),
    (
        "c_text_array",
        "'[' || array_to_string(c_text_array, ',', 'null') || ']'",
    ),
    (
        "c_matrix",
        "'[' || array_to_string(c_matrix, ',', 'null') || ']'",
    ),
    ("c_interval", "c_interval::text"),
];
const EPOCH_MICROS_TS: &str = "CASE WHEN isfinite(c_ts) THEN (extract(epoch FROM c_ts) * 1000000)::int8::text ELSE c_ts::text END";
const EPOCH_MICROS_TSTZ: &str = "CASE WHEN isfinite(c_tstz) THEN (extract(epoch FROM c_tstz) * 1000000)::int8::text ELSE c_tstz::text END";

/// A Parquet value as text: timestamps as epoch microseconds (±infinity as the extremes),
/// lists as `[a,b,null]`, everything else as Arrow displays it (binary as hex).
fn arrow_text(array: &dyn Array, row: usize) -> Option<String> {
    if array.is_null(row) {
        return None;
    }
    Some(match array.data_type() {
        DataType::Timestamp(_, _) => {
            let micros = array.as_primitive::<TimestampMicrosecondType>().value(row);
            match micros {
                i64::MAX => "infinity".into(),
                i64::MIN => "-infinity".into(),
                m => m.to_string(),
            }
        }
        DataType::List(_) => {
            let items = array.as_list::<i32>().value(row);
            let items: Vec<String> = (0..items.len())
                .map(|i| arrow_text(&items, i).unwrap_or_else(|| "null".into()))
                .collect();
            format!("[{}]", items.join(","))
        }
        _ => ArrayFormatter::try_new(array, &FormatOptions::default())
            .unwrap()
            .value(row)
            .to_string(),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn every_type_loads_value_by_value_with_warnings() {
    let pg = Pg::from_env();
    let db = "trib_every_type";
    let mut conn = pg.fresh_database(db).await;
    conn.execute(EVERY_TYPE_DDL).await.unwrap();
    let dir = TestDir::new();
    let ws = local_workspace(
        &pg,
        &dir,
        db,
        "[tasks.target_settings]\nbucket_folder = \"raw\"\ndata_format = \"parquet\"\n\
         compression = \"snappy\"\ninclude_op_for_full_load = true\n\
         timestamp_column_name = \"loaded_at\"\n",
    );

    let output = tributary(&["run", &ws, "--task", "load"]);
    let text = assert_success(&output);
    // Warnings name the table, the column and what to do.
    assert!(
        text.contains("public.no_pk") && text.contains("primary key"),
        "no primary-key warning in:\n{text}"
    );
    assert!(
        text.contains("c_interval") && text.contains("interval") && text.contains("text"),
        "no unsupported-type warning in:\n{text}"
    );

    let table_dir = dir.lake().join("raw/shop/public/every_type");
    assert_eq!(files_under(&table_dir), ["LOAD00000001.parquet"]);

    // Parquet logical types, not strings; statistics on every column chunk.
    let file = std::fs::File::open(table_dir.join("LOAD00000001.parquet")).unwrap();
    let reader = SerializedFileReader::new(file).unwrap();
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let logical = |name: &str| {
        let column = schema
            .columns()
            .iter()
            .find(|c| c.path().parts()[0] == name)
            .unwrap_or_else(|| panic!("column {name}"));
        column.logical_type_ref().cloned()
    };
    let int = |bit_width, is_signed| {
        Some(LogicalType::Integer {
            bit_width,
            is_signed,
        })
    };
    assert_eq!(logical("c_int2"), int(16, true));
    let physical = |name: &str| {
        schema
            .columns()
            .iter()
            .find(|c| c.path().parts()[0] == name)
            .map(|c| c.physical_type())
    };
    // 32- and 64-bit integers need no annotation: the physical type says it all.
    assert_eq!(physical("c_int4"), Some(parquet::basic::Type::INT32));
    assert_eq!(physical("c_int8"), Some(parquet::basic::Type::INT64));
    assert_eq!(
        logical("c_numeric"),
        Some(LogicalType::Decimal {
            scale: 3,
            precision: 12
        })
    );
    assert_eq!(logical("c_numeric_unbounded"), Some(LogicalType::String));
    assert_eq!(logical("c_text"), Some(LogicalType::String));
    assert_eq!(logical("c_bytea"), None);
    assert_eq!(logical("c_date"), Some(LogicalType::Date));
    assert_eq!(
        logical("c_time"),
        Some(LogicalType::Time {
            is_adjusted_to_u_t_c: false,
            unit: TimeUnit::MICROS
        })
    );
    assert_eq!(
        logical("c_ts"),
        Some(LogicalType::Timestamp {
            is_adjusted_to_u_t_c: false,
            unit: TimeUnit::MICROS
        })
    );
    assert_eq!(
        logical("c_tstz"),
        Some(LogicalType::Timestamp {
            is_adjusted_to_u_t_c: true,
            unit: TimeUnit::MICROS
        })
    );
    assert_eq!(physical("c_int_array"), Some(parquet::basic::Type::INT32)); // the list's leaf
    for column in reader.metadata().row_group(0).columns() {
        assert!(
            column.statistics().is_some(),
            "no statistics for {}",
            column.column_path()
        );
    }

    // Op first, then the timestamp column, then the table's columns.
    let batches = table_batches(&table_dir);
    assert_eq!(batches.len(), 1);
    let batch = &batches[0];
    let names: Vec<_> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(&names[..3], ["Op", "loaded_at", "id"]);
    assert!(
        batch
            .column(0)
            .as_string::<i32>()
            .iter()
            .all(|op| op == Some("I"))
    );
    assert_eq!(batch.num_rows(), 4);

    // Value by value against the source's own rendering.
    let select: Vec<String> = EVERY_TYPE_TEXT_SQL
        .iter()
        .map(|(name, expr)| format!("{expr} AS {name}"))
        .collect();
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT id, {} FROM every_type ORDER BY id",
        select.join(", ")
    )))
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let ids = batch
        .column_by_name("id")
        .unwrap()
        .as_primitive::<Int64Type>();
    for row in rows {
        let id: i64 = row.get("id");
        let at = (0..batch.num_rows())
            .find(|&i| ids.value(i) == id)
            .unwrap_or_else(|| panic!("row {id} missing"));
        for (name, _) in EVERY_TYPE_TEXT_SQL {
            let expected: Option<String> = row.get(*name);
            let actual = arrow_text(batch.column_by_name(name).unwrap().as_ref(), at);
            if name.starts_with("c_float") {
                // The two sides print floats differently (1e-05 / 0.00001): compare values.
                let value = |s: &Option<String>| s.as_deref().map(|s| s.parse::<f64>().unwrap());
                let (a, e) = (value(&actual), value(&expected));
                assert!(
                    a == e || a.zip(e).is_some_and(|(a, e)| a.is_nan() && e.is_nan()),
                    "row {id}, column {name}: {actual:?} != {expected:?}"
                );
                continue;
            }
            assert_eq!(actual, expected, "row {id}, column {name}");
        }
    }

    // The table without a primary key is loaded too.
    let no_pk = table_batches(&dir.lake().join("raw/shop/public/no_pk"));
    assert_eq!(no_pk.iter().map(|b| b.num_rows()).sum::<usize>(), 2);

    // A completed full load is not loaded twice.
    let again = assert_success(&tributary(&["run", &ws, "--task", "load"]));
    assert!(again.contains("already"), "second run said:\n{again}");
    assert_eq!(files_under(&table_dir), ["LOAD00000001.parquet"]);
}

async fn million_row_table(pg: &Pg, db: &str) -> sqlx::PgConnection {
    let mut conn = pg.fresh_database(db).await;
    conn.execute(
        "CREATE TABLE big (id int8 PRIMARY KEY, payload text NOT NULL, amount numeric(12,2), at timestamptz);
         INSERT INTO big SELECT g, 'row-' || g || repeat('x', (g % 50)::int), g * 0.01,
                                timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second'
         FROM generate_series(1, 1000000) g;
         ANALYZE big;",
    )
    .await
    .unwrap();
    conn
}

/// Checks every row of `big` as generated by [`million_row_table`]: each id once, and each
/// value derived from it. Returns the number of rows.
fn verify_big(batches: &[RecordBatch]) -> usize {
    let mut seen = HashSet::with_capacity(1_000_000);
    let epoch_2024 = 1_704_067_200_000_000i64;
    for batch in batches {
        let ids = batch
            .column_by_name("id")
            .unwrap()
            .as_primitive::<Int64Type>();
        let payloads = batch.column_by_name("payload").unwrap().as_string::<i32>();
        let amounts = batch
            .column_by_name("amount")
            .unwrap()
            .as_primitive::<arrow_array::types::Decimal128Type>();
        let ats = batch
            .column_by_name("at")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        for i in 0..batch.num_rows() {
            let id = ids.value(i);
            assert!(seen.insert(id), "id {id} written twice");
            let expected = format!("row-{id}{}", "x".repeat((id % 50) as usize));
            assert_eq!(payloads.value(i), expected, "payload of {id}");
            assert_eq!(amounts.value(i), id as i128, "amount of {id}");
            assert_eq!(ats.value(i), epoch_2024 + id * 1_000_000, "at of {id}");
        }
    }
    assert!(seen.iter().all(|&id| (1..=1_000_000).contains(&id)));
    seen.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn million_rows_in_ranges_and_files() {
    let pg = Pg::from_env();
    let db = "trib_million";
    million_row_table(&pg, db).await;
    let dir = TestDir::new();
    let ws = local_workspace(
        &pg,
        &dir,
        db,
        "[tasks.target_settings]\ndata_format = \"parquet\"\ncompression = \"zstd\"\n\
         max_file_size = 4096\n\
         [tasks.full_load_settings]\nparallel_load_range_mb = 16\nmax_full_load_sub_tasks = 4\n",
    );
    let text = assert_success(&tributary(&["run", &ws, "--task", "load"]));
    assert!(
        text.contains("1000000"),
        "summary without the row count:\n{text}"
    );

    let table_dir = dir.lake().join("shop/public/big");
    let files = files_under(&table_dir);
    assert!(files.len() > 4, "expected several files, got {files:?}");
    for (i, f) in files.iter().enumerate() {
        // Each file at most max_file_size (4 MB) plus one row group's overshoot.
        let size = std::fs::metadata(table_dir.join(f)).unwrap().len();
        assert!(size < 6 * 1024 * 1024, "{f} is {size} bytes");
        assert!(f.ends_with(".parquet") && f.starts_with("LOAD"), "{i}: {f}");
    }
    assert_eq!(verify_big(&table_batches(&table_dir)), 1_000_000);
    assert!(
        files_under(&dir.lake().join(".tributary-tmp")).is_empty(),
        "spool files left behind"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_full_load_resumes_without_loss_or_duplicates() {
    let pg = Pg::from_env();
    let db = "trib_resume";
    million_row_table(&pg, db).await;
    let dir = TestDir::new();
    let ws = local_workspace(
        &pg,
        &dir,
        db,
        "[tasks.target_settings]\ndata_format = \"parquet\"\nbucket_folder = \"raw\"\n\
         [tasks.full_load_settings]\nparallel_load_range_mb = 8\nmax_full_load_sub_tasks = 2\n",
    );
    let state_path = dir.lake().join("raw/_tributary/load/state.json");
    // Kill it twice at different points, then let it finish.
    kill_load_at(&ws, "load", &state_path, "public.big", &[1, 4], 8);
    let text = assert_success(&tributary(&["run", &ws, "--task", "load"]));
    assert!(text.contains("resum"), "no resume message in:\n{text}");

    // Exactly the files the checkpoint lists, each row once.
    let table_dir = dir.lake().join("raw/shop/public/big");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    let mut listed: Vec<String> = state["tables"]["public.big"]["ranges"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["files"].as_array().unwrap().clone())
        .map(|f| {
            let key = f["key"].as_str().unwrap();
            key.rsplit('/').next().unwrap().to_owned()
        })
        .collect();
    listed.sort();
    assert_eq!(files_under(&table_dir), listed);
    assert_eq!(verify_big(&table_batches(&table_dir)), 1_000_000);
    assert!(files_under(&dir.lake().join(".tributary-tmp")).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_target_then_ls_and_preview() {
    let pg = Pg::from_env();
    let db = "trib_s3";
    let mut conn = pg.fresh_database(db).await;
    conn.execute(
        "CREATE TABLE customers (id int PRIMARY KEY, name text);
         INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 5000) g;
         CREATE TABLE orders (id int PRIMARY KEY, customer_id int, total numeric(10,2));
         INSERT INTO orders SELECT g, g % 5000 + 1, g * 1.25 FROM generate_series(1, 20000) g;",
    )
    .await
    .unwrap();
    let bucket = "trib-s3-target";
    fresh_bucket(bucket).await;
    let endpoint = s3_endpoint();
    let dir = TestDir::new();
    let ws = dir.write_workspace(&format!(
        "{}{}[[tasks]]\nname = \"to-s3\"\nsource = \"shop\"\ntarget = \"lake\"\n\
         include = [\"public.%\"]\n\
         [tasks.target_settings]\nbucket_folder = \"raw\"\ndata_format = \"parquet\"\n",
        pg.endpoint_toml("shop", db),
        s3_target_toml("lake", bucket, &endpoint)
    ));
    assert_success(&tributary(&["check", &ws]));
    assert_success(&tributary(&["run", &ws, "--task", "to-s3"]));

    let client = s3_client(&endpoint).await;
    let mut rows = BTreeMap::new();
    for table in ["customers", "orders"] {
        let list = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(format!("raw/shop/public/{table}/"))
            .send()
            .await
            .unwrap();
        let keys: Vec<_> = list.contents().iter().filter_map(|o| o.key()).collect();
        assert_eq!(
            keys,
            [format!("raw/shop/public/{table}/LOAD00000001.parquet")]
        );
        let body = get_object(&client, bucket, keys[0]).await;
        let count: usize = read_parquet(body).iter().map(|b| b.num_rows()).sum();
        rows.insert(table, count);
    }
    assert_eq!(
        rows,
        BTreeMap::from([("customers", 5000), ("orders", 20000)])
    );
    let state = client
        .head_object()
        .bucket(bucket)
        .key("raw/_tributary/to-s3/state.json")
        .send()
        .await;
    assert!(state.is_ok(), "no task state in the bucket");

    let ls = assert_success(&tributary(&[
        "ls",
        &format!("s3://{bucket}/raw/"),
        "-r",
        "--endpoint-url",
        &endpoint,
    ]));
    assert!(
        ls.contains("raw/shop/public/orders/LOAD00000001.parquet"),
        "{ls}"
    );
    let preview = assert_success(&tributary(&[
        "preview",
        &format!("s3://{bucket}/raw/shop/public/orders/LOAD00000001.parquet"),
        "--endpoint-url",
        &endpoint,
        "--rows",
        "3",
    ]));
    assert!(
        preview.contains("Decimal128(10, 2)") && preview.contains("20000"),
        "{preview}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_and_json_lines_targets() {
    let pg = Pg::from_env();
    let db = "trib_text_formats";
    let mut conn = pg.fresh_database(db).await;
    conn.execute(
        "CREATE TABLE t (id int PRIMARY KEY, s text, n numeric(6,2), b bool);
         INSERT INTO t VALUES (1, 'plain', 1.50, true), (2, 'comma, \"quote\"', NULL, false),
                              (3, NULL, -2.00, NULL);",
    )
    .await
    .unwrap();
    for (format, compression) in [("csv", "none"), ("json", "gzip")] {
        let dir = TestDir::new();
        let ws = local_workspace(
            &pg,
            &dir,
            db,
            &format!(
                "[tasks.target_settings]\ndata_format = \"{format}\"\ncompression = \"{compression}\"\n\
                 include_op_for_full_load = true\n"
            ),
        );
        assert_success(&tributary(&["run", &ws, "--task", "load"]));
        let table_dir = dir.lake().join("shop/public/t");
        let files = files_under(&table_dir);
        match format {
            "csv" => {
                assert_eq!(files, ["LOAD00000001.csv"]);
                let text = std::fs::read_to_string(table_dir.join(&files[0])).unwrap();
                // DMS CSV: no header, quotes only where needed, NULL as an empty field.
                assert_eq!(
                    text,
                    "I,1,plain,1.50,true\nI,2,\"comma, \"\"quote\"\"\",,false\nI,3,,-2.00,\n"
                );
            }
            _ => {
                assert_eq!(files, ["LOAD00000001.json.gz"]);
                let gz = std::fs::read(table_dir.join(&files[0])).unwrap();
                let mut text = String::new();
                std::io::Read::read_to_string(
                    &mut flate2::read::GzDecoder::new(&gz[..]),
                    &mut text,
                )
                .unwrap();
                let lines: Vec<serde_json::Value> = text
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
                assert_eq!(lines.len(), 3);
                assert_eq!(lines[1]["Op"], "I");
                assert_eq!(lines[1]["s"], "comma, \"quote\"");
                assert!(lines[1].get("n").is_none_or(|n| n.is_null()));
                assert_eq!(lines[2]["id"], 3);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_table_reloads_alone() {
    let pg = Pg::from_env();
    let db = "trib_reload_table";
    let mut conn = pg.fresh_database(db).await;
    conn.execute(
        "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY);
         INSERT INTO a SELECT generate_series(1, 10); INSERT INTO b SELECT generate_series(1, 10);",
    )
    .await
    .unwrap();
    let dir = TestDir::new();
    let parquet = "[tasks.target_settings]\ndata_format = \"parquet\"\n";
    let ws = local_workspace(&pg, &dir, db, parquet);
    assert_success(&tributary(&["run", &ws, "--task", "load"]));
    let rows = |table: &str| -> usize {
        table_batches(&dir.lake().join(format!("shop/public/{table}")))
            .iter()
            .map(RecordBatch::num_rows)
            .sum()
    };
    let b_file = dir.lake().join("shop/public/b/LOAD00000001.parquet");
    let b_written = std::fs::metadata(&b_file).unwrap().modified().unwrap();

    conn.execute("INSERT INTO a SELECT generate_series(11, 25); INSERT INTO b VALUES (11);")
        .await
        .unwrap();
    let text = assert_success(&tributary(&[
        "run",
        &ws,
        "--task",
        "load",
        "--reload-table",
        "public.a",
    ]));
    assert!(text.contains("reloading public.a"), "{text}");
    assert_eq!(rows("a"), 25, "a is loaded again");
    assert_eq!(rows("b"), 10, "b stays as it was");
    assert_eq!(
        std::fs::metadata(&b_file).unwrap().modified().unwrap(),
        b_written
    );

    // A table the task does not select, and a CDC-only task (no load to redo): clear refusals.
    // (Reloading a table of a full load + CDC task: tests/postgres_cdc.rs.)
    let err = assert_failure(
        &tributary(&[
            "run",
            &ws,
            "--task",
            "load",
            "--reload-table",
            "public.nope",
        ]),
        1,
    );
    assert!(err.contains("does not select table public.nope"), "{err}");
    let cdc = local_workspace(&pg, &dir, db, "migration_type = \"cdc\"\n");
    let err = assert_failure(
        &tributary(&["run", &cdc, "--task", "load", "--reload-table", "public.a"]),
        1,
    );
    assert!(err.contains("captures changes only"), "{err}");
}

/// A column made NOT NULL after the snapshot a load reads from (a slot's snapshot is taken
/// before the tables are discovered) still holds NULLs in that snapshot: they are read and
/// written as the NULLs they are, not refused and not a panic.
#[tokio::test(flavor = "multi_thread")]
async fn nulls_of_a_column_made_not_null_after_the_snapshot_are_written() {
    use sqlx::Connection;
    use tributary::config::{Compression, DataFormat, Workspace};
    use tributary::lake::format::{RollingWriter, WriterOptions};
    use tributary::source::postgres::{PgEndpoint, PostgresSource};
    use tributary::source::{SelectionRules, Snapshot, Source, TableRange};

    let pg = Pg::from_env();
    let db = "tributary_null_after_snapshot";
    let mut conn = pg.fresh_database(db).await;
    conn.execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, NULL), (2, 'two')",
    )
    .await
    .unwrap();
    // The snapshot, exported by a transaction that stays open as a slot's creation does.
    let mut holder = sqlx::PgConnection::connect(&pg.url(db)).await.unwrap();
    holder
        .execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .unwrap();
    let id: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
        .fetch_one(&mut holder)
        .await
        .unwrap();
    // After it, the NULL is gone and the column is NOT NULL: discovery sees that.
    conn.execute("UPDATE t SET v = 'one' WHERE id = 1; ALTER TABLE t ALTER v SET NOT NULL")
        .await
        .unwrap();

    let dir = TestDir::new();
    let path = local_workspace(&pg, &dir, db, "");
    let workspace = Workspace::load(Path::new(&path)).unwrap();
    let endpoint = PgEndpoint::from_config(&workspace.endpoints[0], Some(pg.password.clone()));
    let snapshot = Snapshot {
        id,
        position: tributary::source::SourcePosition::parse("0/0"),
    };
    let source = PostgresSource::new(endpoint).with_slot_snapshot(snapshot.clone());
    let rules = SelectionRules::new(&["public.t".to_string()], &[]);
    let table = source.discover(&rules).await.unwrap().remove(0);
    assert!(!table.columns[1].nullable, "the catalog says NOT NULL");
    assert!(
        table.arrow_schema.field(1).is_nullable(),
        "the field is nullable"
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let range = TableRange {
        index: 0,
        start: None,
        end: None,
    };
    let rows = source
        .read_range(&table, &range, Some(&snapshot), tx)
        .await
        .unwrap();
    assert_eq!(rows, 2);

    // Written as the full load writes it.
    let mut writer = RollingWriter::new(
        WriterOptions {
            format: DataFormat::Parquet,
            compression: Compression::Snappy,
            max_file_bytes: u64::MAX,
            op: None,
            timestamp_column: None,
            row_group_bytes: 1 << 20,
        },
        &table.arrow_schema,
        dir.path().to_path_buf(),
        "t".into(),
    );
    while let Some(batch) = rx.recv().await {
        writer.write(&batch).unwrap();
    }
    let file = writer.close().unwrap().expect("a file");
    let batches = read_parquet_file(&file.path);
    let values: Vec<Option<String>> = batches
        .iter()
        .flat_map(|b| {
            let v = b.column(1).as_string::<i32>();
            (0..b.num_rows())
                .map(|i| v.is_valid(i).then(|| v.value(i).to_string()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(values, vec![None, Some("two".to_string())]);
    holder.execute("COMMIT").await.unwrap();
}
