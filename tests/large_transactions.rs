//! One very large transaction through CDC, on each engine, against the real servers: a
//! 2 GB transaction on PostgreSQL and a 1 GB one on MariaDB (both set by
//! `TRIBUTARY_TEST_BIG_TXN_MB`, which scales them alike) arrive whole, in one batch whose
//! files roll at `max_file_size`, while the `tributary` process's resident memory, sampled
//! from /proc, stays under 256 MB.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use common::*;

/// Peak resident memory allowed while a transaction is captured.
const RSS_LIMIT_MB: u64 = 256;
/// Each row's payload: 32 MD5 texts, 1 KB that compresses little in the stream.
const ROW_BYTES: u64 = 1024;
/// Files roll at this size (KB) within the batch.
const MAX_FILE_KB: u64 = 65_536;

/// Megabytes of the PostgreSQL transaction; MariaDB's is half of it.
fn pg_transaction_mb() -> u64 {
    std::env::var("TRIBUTARY_TEST_BIG_TXN_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2048)
}

fn workspace(dir: &TestDir, source: &str, include: &str) -> String {
    dir.write_workspace(&format!(
        "{source}{}[[tasks]]\nname = \"big\"\nsource = \"shop\"\ntarget = \"lake\"\n\
         migration_type = \"full-load-and-cdc\"\ninclude = [\"{include}\"]\n\
         [tasks.target_settings]\nbucket_folder = \"raw\"\ndata_format = \"parquet\"\n\
         max_file_size = {MAX_FILE_KB}\n",
        local_target_toml("lake", &dir.lake())
    ))
}

/// What a run did, as /proc saw it.
struct Sampled {
    output: std::process::Output,
    peak_rss_mb: u64,
    seconds: f64,
}

/// `tributary run WS --task big --until-caught-up`, its peak RSS (VmHWM) sampled every
/// 20 ms; failed after 20 minutes.
fn run_sampled(ws: &str) -> Sampled {
    let started = Instant::now();
    let mut peak_kb = 0u64;
    let output = run_until_caught_up_watched(
        ws,
        "big",
        Duration::from_secs(1200),
        Duration::from_millis(20),
        |pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status"));
            let hwm = status.ok().and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            });
            peak_kb = peak_kb.max(hwm.unwrap_or(0));
        },
    );
    Sampled {
        output,
        peak_rss_mb: peak_kb / 1024,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// The CDC files of the table folder `dir` (all but LOAD files), with their rows' ids:
/// asserts every row is an insert, each id of 1..=rows once.
fn assert_cdc_files_hold(dir: &Path, rows: u64) -> usize {
    let files: Vec<String> = files_under(dir)
        .into_iter()
        .filter(|f| !f.rsplit('/').next().unwrap_or("").starts_with("LOAD"))
        .collect();
    let mut seen = vec![false; rows as usize + 1];
    let mut count = 0u64;
    for f in &files {
        let file = std::fs::File::open(dir.join(f)).unwrap();
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let size = std::fs::metadata(dir.join(f)).unwrap().len();
        assert!(
            size <= (MAX_FILE_KB + 8 * 1024) * 1024,
            "{f} has {size} bytes, past max_file_size"
        );
        let mask = ProjectionMask::columns(builder.parquet_schema(), ["Op", "id"]);
        for batch in builder.with_projection(mask).build().unwrap() {
            let batch = batch.unwrap();
            let ops = batch.column_by_name("Op").unwrap().as_string::<i32>();
            assert!(ops.iter().all(|op| op == Some("I")), "{f}: not all inserts");
            let ids = batch.column_by_name("id").unwrap();
            let ids = arrow_cast::cast(ids, &arrow_schema::DataType::Int64).unwrap();
            for id in ids.as_primitive::<Int64Type>().iter() {
                let id = id.unwrap() as usize;
                assert!(!seen[id], "{f}: id {id} twice");
                seen[id] = true;
                count += 1;
            }
        }
    }
    assert_eq!(count, rows, "rows captured");
    files.len()
}

fn report(engine: &str, mb: u64, run: &Sampled, files: usize) {
    eprintln!(
        "{engine}: a {mb} MB transaction captured in {:.0} s into {files} files, peak RSS {} MB",
        run.seconds, run.peak_rss_mb
    );
    assert!(
        run.peak_rss_mb < RSS_LIMIT_MB,
        "{engine}: peak RSS {} MB while capturing a {mb} MB transaction (limit {RSS_LIMIT_MB} MB)",
        run.peak_rss_mb
    );
    assert!(
        files >= 2,
        "{engine}: the files did not roll at max_file_size"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_2_gb_postgres_transaction_is_captured_in_bounded_memory() {
    let mb = pg_transaction_mb();
    let rows = mb * 1024 * 1024 / ROW_BYTES;
    let pg = Pg::from_env();
    let db = "big_txn";
    let mut conn = pg.fresh_database(db).await;
    sqlx::raw_sql("CREATE TABLE big (id int8 PRIMARY KEY, payload text)")
        .execute(&mut conn)
        .await
        .unwrap();
    let dir = TestDir::new();
    let ws = workspace(&dir, &pg.endpoint_toml("shop", db), "public.big");
    // The full load (of nothing) makes the slot.
    assert_success(&run_until_caught_up(&ws, "big"));
    let insert = format!(
        "INSERT INTO big SELECT g, repeat(md5(g::text), {}) FROM generate_series(1, {rows}) g",
        ROW_BYTES / 32
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(insert))
        .execute(&mut conn)
        .await
        .unwrap();

    let run = run_sampled(&ws);
    assert_success(&run.output);
    let files = assert_cdc_files_hold(&dir.lake().join("raw/shop/public/big"), rows);
    report("PostgreSQL", mb, &run, files);
    // The slot first: it holds the transaction's WAL.
    assert_success(&tributary(&["delete-task", &ws, "--task", "big", "--yes"]));
    sqlx::raw_sql("DROP TABLE big")
        .execute(&mut conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_1_gb_mariadb_transaction_is_captured_in_bounded_memory() {
    use mysql_async::prelude::Queryable;
    let mb = pg_transaction_mb() / 2;
    let rows = mb * 1024 * 1024 / ROW_BYTES;
    let my = My::from_env();
    let db = "big_txn";
    let mut conn = my.fresh_database(db).await;
    conn.query_drop("CREATE TABLE big (id bigint PRIMARY KEY, payload mediumtext)")
        .await
        .unwrap();
    let dir = TestDir::new();
    let ws = workspace(&dir, &my.endpoint_toml("shop", db), &format!("{db}.big"));
    assert_success(&run_until_caught_up(&ws, "big"));
    conn.query_drop(format!(
        "INSERT INTO big SELECT seq, REPEAT(MD5(seq), {}) FROM seq_1_to_{rows}",
        ROW_BYTES / 32
    ))
    .await
    .unwrap();

    let run = run_sampled(&ws);
    assert_success(&run.output);
    let files = assert_cdc_files_hold(&dir.lake().join(format!("raw/shop/{db}/big")), rows);
    report("MariaDB", mb, &run, files);
    conn.query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();
}
