//! The curated zone end to end: PostgreSQL and MariaDB tables loaded and changed by CDC,
//! curated into Iceberg tables, then read by outside readers (pyiceberg through the SQL
//! catalog, DuckDB's `iceberg_scan`), which must see exactly the source's rows.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use mysql_async::prelude::Queryable;
use sqlx::{Connection, Executor, PgConnection, Row};

type Rows = Vec<Vec<Option<String>>>;

/// The rows as the readers script sorts them.
fn sorted(mut rows: Rows) -> Rows {
    rows.sort_by_key(|r| {
        r.iter()
            .map(|v| (v.is_none(), v.clone().unwrap_or_default()))
            .collect::<Vec<_>>()
    });
    rows
}

/// What pyiceberg and DuckDB read of `tables`, by table: (columns, rows by pyiceberg,
/// rows by DuckDB, snapshots).
fn read_curated(
    dir: &TestDir,
    tables: &[&str],
) -> BTreeMap<String, (Vec<String>, Rows, Rows, u64)> {
    read_catalog(&dir.path().join("catalog.db").to_string_lossy(), tables)
}

/// [`read_curated`] through the catalog at `catalog` (a SQLite file or a postgres:// URL).
fn read_catalog(
    catalog: &str,
    tables: &[&str],
) -> BTreeMap<String, (Vec<String>, Rows, Rows, u64)> {
    read_catalog_with(catalog, tables, None)
}

/// [`read_catalog`], with the tables' files on the S3 server `s3_endpoint`, if given.
fn read_catalog_with(
    catalog: &str,
    tables: &[&str],
    s3_endpoint: Option<&str>,
) -> BTreeMap<String, (Vec<String>, Rows, Rows, u64)> {
    let json = read_curated_json(catalog, tables, s3_endpoint);
    let rows = |v: &serde_json::Value| -> Rows {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().map(str::to_owned))
                    .collect()
            })
            .collect()
    };
    tables
        .iter()
        .map(|t| {
            let v = &json[*t];
            let columns = v["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_owned())
                .collect();
            (
                t.to_string(),
                (
                    columns,
                    rows(&v["pyiceberg"]),
                    rows(&v["duckdb"]),
                    v["snapshots"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

/// Asserts both readers see `expected` (the source's rows as text) in `table`.
fn assert_readers_see(
    read: &BTreeMap<String, (Vec<String>, Rows, Rows, u64)>,
    table: &str,
    columns: &[&str],
    expected: Rows,
) {
    let (found_columns, by_pyiceberg, by_duckdb, _) = &read[table];
    assert_eq!(found_columns, columns, "{table}: columns");
    let expected = sorted(expected);
    for (reader, rows) in [("pyiceberg", by_pyiceberg), ("DuckDB", by_duckdb)] {
        assert_eq!(
            rows.len(),
            expected.len(),
            "{table}: {reader} reads {} rows, the source has {}",
            rows.len(),
            expected.len()
        );
        for (found, wanted) in rows.iter().zip(&expected) {
            assert_eq!(
                found, wanted,
                "{table}: {reader} reads a row the source does not have"
            );
        }
    }
}

async fn pg_rows(conn: &mut PgConnection, sql: &str) -> Rows {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_all(conn)
        .await
        .unwrap()
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| row.try_get::<Option<String>, _>(i).unwrap())
                .collect()
        })
        .collect()
}

async fn my_rows(conn: &mut mysql_async::Conn, sql: &str) -> Rows {
    let rows: Vec<mysql_async::Row> = conn.query(sql).await.unwrap();
    rows.into_iter()
        .map(|row| {
            (0..row.len())
                .map(|i| row.get::<Option<String>, _>(i).unwrap())
                .collect()
        })
        .collect()
}

const PG_SCHEMA: &str = "
CREATE TABLE customers (id int8 PRIMARY KEY, name text NOT NULL, email text,
                        balance numeric(12,2), active bool, born date, seen_at timestamptz);
CREATE TABLE orders (id int8 PRIMARY KEY, customer_id int8, total numeric(12,2), status text);
CREATE TABLE wiped (id int8 PRIMARY KEY, v text);
INSERT INTO customers SELECT g, 'customer ' || g,
  CASE WHEN g % 7 = 0 THEN NULL ELSE 'c' || g || '@example.com' END, g * 1.25, g % 2 = 0,
  date '1980-01-01' + g, timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute'
FROM generate_series(1, 2000) g;
INSERT INTO orders SELECT g, g % 2000 + 1, g * 3.5, 'new' FROM generate_series(1, 5000) g;
INSERT INTO wiped SELECT g, 'v' || g FROM generate_series(1, 10) g;
";

/// Inserts, updates (one of a primary key), deletes, a delete and re-insert of the same
/// key, a truncate, in and out of transactions.
const PG_CHANGES: &str = "
UPDATE customers SET email = 'changed@example.com', balance = balance + 1 WHERE id % 10 = 1;
DELETE FROM customers WHERE id BETWEEN 100 AND 150;
INSERT INTO customers VALUES (5000, 'new one', NULL, 0.50, true, '2000-02-29', '2026-11-25 10:00:00+00');
BEGIN;
DELETE FROM customers WHERE id = 7;
INSERT INTO customers VALUES (7, 'seven again', 'seven@example.com', 7.00, false, NULL, NULL);
UPDATE orders SET status = 'paid' WHERE id <= 300;
COMMIT;
UPDATE customers SET id = 9000 WHERE id = 8;
UPDATE orders SET status = 'shipped' WHERE id <= 100;
DELETE FROM orders WHERE id > 4900;
TRUNCATE wiped;
INSERT INTO wiped VALUES (100, 'after truncate');
";

const CUSTOMERS: &str = "SELECT id::text, name, email, balance::text, active::text, born::text,
  extract(epoch FROM seen_at)::numeric(20,6)::text FROM customers";
const CUSTOMER_COLUMNS: [&str; 7] = [
    "id", "name", "email", "balance", "active", "born", "seen_at",
];
const ORDERS: &str = "SELECT id::text, customer_id::text, total::text, status FROM orders";
const WIPED: &str = "SELECT id::text, v FROM wiped";

const MY_SCHEMA: &str = "
CREATE TABLE payments (id bigint PRIMARY KEY, order_id bigint, amount decimal(12,2),
                       method varchar(20), paid_on date);
INSERT INTO payments SELECT seq, seq % 5000 + 1, seq * 2.5, IF(seq % 3 = 0, 'card', 'transfer'),
  DATE_ADD('2026-01-01', INTERVAL seq % 300 DAY)
FROM seq_1_to_3000;
";

const MY_CHANGES: &str = "
UPDATE payments SET method = 'refund', amount = -amount WHERE id % 50 = 0;
DELETE FROM payments WHERE id BETWEEN 10 AND 30;
INSERT INTO payments VALUES (9000, 1, 99.99, 'cash', '2026-11-25');
UPDATE payments SET id = 9001 WHERE id = 40;
";

const PAYMENTS: &str = "SELECT CAST(id AS CHAR), CAST(order_id AS CHAR), CAST(amount AS CHAR),
  method, CAST(paid_on AS CHAR) FROM payments";

fn workspace(pg: &Pg, my: &My, dir: &TestDir, pg_db: &str, my_db: &str) -> String {
    let settings = "[tasks.target_settings]\nbucket_folder = \"raw\"\ndata_format = \"parquet\"\n\
         timestamp_column_name = \"changed_at\"\ncdc_max_batch_interval = 1\n\
         date_partition_enabled = true\ndate_partition_style = \"hive\"\n";
    dir.write_workspace(&format!(
        "{}{}{}\
         [[tasks]]\nname = \"shop-cdc\"\nsource = \"shop\"\ntarget = \"lake\"\n\
         migration_type = \"full-load-and-cdc\"\n{settings}\n\
         [[tasks]]\nname = \"payments-cdc\"\nsource = \"payments\"\ntarget = \"lake\"\n\
         migration_type = \"full-load-and-cdc\"\ninclude = [\"{my_db}.%\"]\n{settings}\n\
         [curate]\ntarget_file_size_mb = 1\nkeep_snapshots = 2\nhistory = [\"shop.public.customers\"]\n",
        pg.endpoint_toml("shop", pg_db),
        my.endpoint_toml("payments", my_db),
        local_target_toml("lake", &dir.lake())
    ))
}

/// A workspace of one full-load-and-CDC task `task` from source endpoint `shop` into
/// target `lake`, batching each second, then `extra` (`[curate]`, models).
fn cdc_workspace(dir: &TestDir, source: String, target: String, task: &str, extra: &str) -> String {
    dir.write_workspace(&format!(
        "{source}{target}[[tasks]]\nname = \"{task}\"\nsource = \"shop\"\ntarget = \"lake\"\n\
         migration_type = \"full-load-and-cdc\"\n\
         [tasks.target_settings]\nbucket_folder = \"raw\"\ndata_format = \"parquet\"\n\
         cdc_max_batch_interval = 1\n\n{extra}"
    ))
}

/// A fresh PostgreSQL database `db` made by `schema`, and a workspace (in the returned
/// folder) with one CDC task `task` from it into a local lake.
async fn local_cdc_setup(
    pg: &Pg,
    db: &str,
    schema: &str,
    task: &str,
    extra: &str,
) -> (PgConnection, TestDir, String) {
    let mut conn = pg.fresh_database(db).await;
    conn.execute(sqlx::AssertSqlSafe(schema.to_owned()))
        .await
        .unwrap();
    let dir = TestDir::new();
    let ws = cdc_workspace(
        &dir,
        pg.endpoint_toml("shop", db),
        local_target_toml("lake", &dir.lake()),
        task,
        extra,
    );
    (conn, dir, ws)
}

/// Drops the replication slots of database `db`, so that no test leaves one holding WAL (a
/// stopped run's walsender may take a moment to go).
async fn drop_slots(conn: &mut PgConnection, db: &str) {
    let sql = format!(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '{db}'"
    );
    for attempt in 0.. {
        match conn.execute(sqlx::AssertSqlSafe(sql.clone())).await {
            Ok(_) => return,
            Err(_) if attempt < 20 => tokio::time::sleep(Duration::from_millis(250)).await,
            Err(e) => panic!("dropping the slots of {db}: {e}"),
        }
    }
}

fn catch_up(ws: &str) {
    for task in ["shop-cdc", "payments-cdc"] {
        assert_success(&run_until_caught_up(ws, task));
    }
}

async fn assert_curated_equals_sources(
    dir: &TestDir,
    pg: &mut PgConnection,
    my: &mut mysql_async::Conn,
    my_db: &str,
) -> BTreeMap<String, (Vec<String>, Rows, Rows, u64)> {
    let payments = format!("payments.{my_db}.payments");
    let read = read_curated(
        dir,
        &[
            "shop.public.customers",
            "shop.public.orders",
            "shop.public.wiped",
            &payments,
        ],
    );
    assert_readers_see(
        &read,
        "shop.public.customers",
        &CUSTOMER_COLUMNS,
        pg_rows(pg, CUSTOMERS).await,
    );
    assert_readers_see(
        &read,
        "shop.public.orders",
        &["id", "customer_id", "total", "status"],
        pg_rows(pg, ORDERS).await,
    );
    assert_readers_see(
        &read,
        "shop.public.wiped",
        &["id", "v"],
        pg_rows(pg, WIPED).await,
    );
    assert_readers_see(
        &read,
        &payments,
        &["id", "order_id", "amount", "method", "paid_on"],
        my_rows(my, PAYMENTS).await,
    );
    read
}

/// The history (SCD type 2): every version, the current ones equal to the table, each
/// with its commit time.
async fn assert_history_versions(ws: &str, pg_conn: &mut PgConnection) {
    let versions = |id: i64| {
        let out = assert_success(&tributary(&[
            "query",
            ws,
            &format!(
                "SELECT string_agg(op || ':' || CAST(is_current AS VARCHAR), ',' \
                   ORDER BY valid_from_position NULLS FIRST) AS versions \
                 FROM shop.public.customers_history WHERE id = {id}"
            ),
        ]));
        out.lines().nth(3).unwrap_or_default().to_owned()
    };
    assert!(
        versions(7).contains("I:false,D:false,I:true"),
        "deleted, inserted again: {}",
        versions(7)
    );
    assert!(
        versions(8).contains("I:false,D:false"),
        "moved to key 9000: {}",
        versions(8)
    );
    assert!(versions(5000).contains("I:true"), "{}", versions(5000));
    let out = assert_success(&tributary(&[
        "query",
        ws,
        "SELECT count(*) AS current, count(valid_from) AS stamped FROM shop.public.customers_history \
         WHERE is_current AND valid_from_position IS NOT NULL",
    ]));
    let changed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM customers WHERE id % 10 = 1 OR id IN (7, 5000, 9000)",
    )
    .fetch_one(&mut *pg_conn)
    .await
    .unwrap();
    assert!(
        out.contains(&format!("| {changed}       | {changed} "))
            || out.matches(&format!("| {changed} ")).count() >= 2,
        "current versions written by a change, each with its commit time ({changed}): {out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn curated_tables_equal_the_sources_after_load_and_cdc() {
    let (pg, my) = (Pg::from_env(), My::from_env());
    let (pg_db, my_db) = ("trib_curate", "tributary_curate");
    let mut pg_conn = pg.fresh_database(pg_db).await;
    pg_conn.execute(PG_SCHEMA).await.unwrap();
    let mut my_conn = my.fresh_database(my_db).await;
    my_conn.query_drop(MY_SCHEMA).await.unwrap();
    let dir = TestDir::new();
    let ws = workspace(&pg, &my, &dir, pg_db, my_db);

    // The full load and a first round of changes, all curated at once.
    catch_up(&ws);
    pg_conn.execute(PG_CHANGES).await.unwrap();
    my_conn.query_drop(MY_CHANGES).await.unwrap();
    catch_up(&ws);
    let out = assert_success(&tributary(&["curate", &ws]));
    assert!(out.contains("shop.public.customers: created from"), "{out}");
    assert!(
        out.contains(&format!("payments.{my_db}.payments: created from")),
        "{out}"
    );
    let read = assert_curated_equals_sources(&dir, &mut pg_conn, &mut my_conn, my_db).await;
    assert_eq!(
        read["shop.public.customers"].3, 1,
        "one snapshot per curate"
    );

    assert_history_versions(&ws, &mut pg_conn).await;

    // More changes: merged into the current state from the new files only.
    pg_conn
        .execute(
            "UPDATE customers SET name = 'renamed' WHERE id = 1;
             DELETE FROM customers WHERE id = 2;
             INSERT INTO orders VALUES (6000, 1, 1.00, 'new');",
        )
        .await
        .unwrap();
    my_conn
        .query_drop("DELETE FROM payments WHERE id = 1")
        .await
        .unwrap();
    catch_up(&ws);
    let out = assert_success(&tributary(&["curate", &ws]));
    let merged = out
        .lines()
        .find(|l| l.starts_with("shop.public.customers: merged from"))
        .unwrap_or_else(|| panic!("customers not merged:\n{out}"));
    let files: usize = merged
        .split("merged from ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        (1..=3).contains(&files),
        "only the new CDC files are read: {merged}"
    );
    assert!(out.contains("shop.public.wiped: up to date"), "{out}");
    let read = assert_curated_equals_sources(&dir, &mut pg_conn, &mut my_conn, my_db).await;
    assert_eq!(read["shop.public.customers"].3, 2);

    // Nothing new: no snapshot; keep_snapshots = 2 keeps the older one.
    let out = assert_success(&tributary(&["curate", &ws, "--task", "shop-cdc"]));
    assert!(out.contains("shop.public.customers: up to date"), "{out}");
    assert!(
        !out.contains("payments."),
        "--task curates that task's tables only: {out}"
    );

    // A new column: the table gets a new schema and is rebuilt.
    pg_conn
        .execute(
            "ALTER TABLE orders ADD COLUMN note text;
             UPDATE orders SET note = 'noted' WHERE id <= 5;",
        )
        .await
        .unwrap();
    catch_up(&ws);
    let out = assert_success(&tributary(&["curate", &ws]));
    assert!(
        out.contains("shop.public.orders: rebuilt (its columns changed)"),
        "{out}"
    );
    let read = read_curated(&dir, &["shop.public.orders"]);
    assert_readers_see(
        &read,
        "shop.public.orders",
        &["id", "customer_id", "total", "status", "note"],
        pg_rows(
            &mut pg_conn,
            "SELECT id::text, customer_id::text, total::text, status, note FROM orders",
        )
        .await,
    );
    assert_eq!(
        read["shop.public.orders"].3, 2,
        "expired beyond keep_snapshots"
    );

    // SQL over the lake: curated and raw tables by their catalog names.
    let out = assert_success(&tributary(&[
        "query",
        &ws,
        "SELECT count(*) AS n FROM shop.public.customers",
    ]));
    let customers: i64 = sqlx::query_scalar("SELECT count(*) FROM customers")
        .fetch_one(&mut pg_conn)
        .await
        .unwrap();
    assert!(out.contains(&format!("| {customers} ")), "{out}");
    let out = assert_success(&tributary(&[
        "query",
        &ws,
        "SELECT count(*) AS deletes FROM shop_raw.public.customers WHERE \"Op\" = 'D'",
    ]));
    // Ids 100..=150, 7, 2, and the D of the key change 8 -> 9000.
    assert!(out.contains("| 54 "), "{out}");
    for file in ["orders.csv", "orders.parquet"] {
        let target = dir.path().join(file);
        let out = assert_success(&tributary(&[
            "query",
            &ws,
            "SELECT * FROM shop.public.orders WHERE status = 'shipped'",
            "--output",
            target.to_str().unwrap(),
        ]));
        assert!(out.contains("wrote 100 row(s)"), "{out}");
        assert!(target.metadata().unwrap().len() > 0);
    }
    let csv = std::fs::read_to_string(dir.path().join("orders.csv")).unwrap();
    assert_eq!(csv.lines().count(), 101, "a header and 100 rows");
    drop_slots(&mut pg_conn, pg_db).await;
}

/// A curate killed with SIGKILL in the middle of writing a table's data files, then run
/// again: the table is the same as if nothing had happened, and the dead run's files go.
#[tokio::test(flavor = "multi_thread")]
async fn a_curate_killed_midway_then_rerun_gives_the_same_table() {
    let pg = Pg::from_env();
    let db = "trib_curate_kill";
    let (mut conn, dir, ws) = local_cdc_setup(
        &pg,
        db,
        "CREATE TABLE big (id int8 PRIMARY KEY, v text, n int8);
         INSERT INTO big SELECT g, md5(g::text), g FROM generate_series(1, 600000) g;",
        "big-cdc",
        "[curate]\ntarget_file_size_mb = 4\n",
    )
    .await;
    assert_success(&run_until_caught_up(&ws, "big-cdc"));
    assert_success(&tributary(&["curate", &ws]));
    conn.execute("UPDATE big SET n = -n WHERE id % 3 = 0; DELETE FROM big WHERE id % 10 = 0;")
        .await
        .unwrap();
    assert_success(&run_until_caught_up(&ws, "big-cdc"));

    let data = dir.lake().join("curated/shop/public/big/data");
    let before = files_under(&data);
    let mut child = spawn_quiet(&["curate", &ws]);
    let started = Instant::now();
    let killed_files: Vec<String> = loop {
        let now = files_under(&data);
        if now.len() > before.len() {
            break now.into_iter().filter(|f| !before.contains(f)).collect();
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the curate finished before it could be killed"
        );
        assert!(started.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(5));
    };
    child.kill().unwrap();
    child.wait().unwrap();

    let out = assert_success(&tributary(&["curate", &ws]));
    assert!(out.contains("shop.public.big: merged from"), "{out}");
    let expected: (i64, i64, i64) =
        sqlx::query_as("SELECT count(*), sum(n)::int8, sum(id * length(v) + n % 7)::int8 FROM big")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let out = assert_success(&tributary(&[
        "query",
        &ws,
        "SELECT count(*) AS n, sum(n) AS total, sum(id * length(v) + n % 7) AS mix \
         FROM shop.public.big",
    ]));
    for value in [expected.0, expected.1, expected.2] {
        assert!(
            out.contains(&format!("| {value} ")),
            "expected {expected:?}:\n{out}"
        );
    }
    let read = read_curated(&dir, &["shop.public.big"]);
    assert_eq!(
        read["shop.public.big"].1.len() as i64,
        expected.0,
        "pyiceberg"
    );
    assert_eq!(read["shop.public.big"].2.len() as i64, expected.0, "DuckDB");
    // The killed run's files are gone; what remains is the two snapshots' own.
    let after = files_under(&data);
    for f in &killed_files {
        assert!(
            !after.contains(f),
            "{f}, written by the killed run, is still there"
        );
    }
    assert_eq!(read["shop.public.big"].3, 2);
    drop_slots(&mut conn, db).await;
    conn.close().await.unwrap();
}

/// A unified model over both sources: its rows join PostgreSQL customers with MariaDB
/// orders; rows failing a quarantining check go to its quarantine table; a check that
/// fails the run leaves the model's table as it was.
#[tokio::test(flavor = "multi_thread")]
async fn a_unified_model_joins_sources_and_its_checks_act_as_declared() {
    let (pg, my) = (Pg::from_env(), My::from_env());
    let (pg_db, my_db) = ("trib_model", "tributary_model");
    let mut pg_conn = pg.fresh_database(pg_db).await;
    pg_conn
        .execute(
            "CREATE TABLE customers (id int8 PRIMARY KEY, email text, country text);
             INSERT INTO customers SELECT g, 'Customer' || g || '@Example.com',
               CASE WHEN g % 2 = 0 THEN 'FR' ELSE 'DE' END FROM generate_series(1, 100) g;
             INSERT INTO customers VALUES (101, NULL, 'FR'), (102, 'x@example.com', 'XX');",
        )
        .await
        .unwrap();
    let mut my_conn = my.fresh_database(my_db).await;
    my_conn
        .query_drop(
            "CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint, amount decimal(10,2));
             INSERT INTO orders SELECT seq, seq % 50 + 1, seq FROM seq_1_to_500;",
        )
        .await
        .unwrap();
    let dir = TestDir::new();
    let model = format!(
        "[[models]]\nname = \"unified_customer\"\n\
         sql = \"\"\"\nSELECT c.id AS customer_id, lower(c.email) AS email, c.country,\n\
           count(o.id) AS orders, coalesce(sum(o.amount), 0) AS spent\n\
         FROM shop.public.customers c LEFT JOIN sales.{my_db}.orders o ON o.customer_id = c.id\n\
         GROUP BY c.id, c.email, c.country\n\"\"\"\n\
         checks = [\n\
           {{ check = \"not_null\", columns = [\"email\"], on_fail = \"quarantine\" }},\n\
           {{ check = \"accepted_values\", columns = [\"country\"], values = [\"FR\", \"DE\"], on_fail = \"quarantine\" }},\n\
           {{ check = \"unique\", columns = [\"customer_id\"] }},\n\
           {{ check = \"row_count\", min = 1, max = 1000 }},\n\
         ]\n\n\
         [[models]]\nname = \"countries\"\n\
         sql = \"SELECT country, count(*) AS n FROM shop.public.customers GROUP BY country\"\n\
         checks = [{{ check = \"accepted_values\", columns = [\"country\"], values = [\"FR\", \"DE\", \"XX\"] }}]\n"
    );
    let ws = dir.write_workspace(&format!(
        "{}{}{}\
         [[tasks]]\nname = \"shop\"\nsource = \"shop\"\ntarget = \"lake\"\n\
         [tasks.target_settings]\nbucket_folder = \"raw\"\ndata_format = \"parquet\"\n\n\
         [[tasks]]\nname = \"sales\"\nsource = \"sales\"\ntarget = \"lake\"\ninclude = [\"{my_db}.%\"]\n\
         [tasks.target_settings]\nbucket_folder = \"raw\"\ndata_format = \"parquet\"\n\n{model}",
        pg.endpoint_toml("shop", pg_db),
        my.endpoint_toml("sales", my_db),
        local_target_toml("lake", &dir.lake())
    ));
    for task in ["shop", "sales"] {
        assert_success(&tributary(&["run", &ws, "--task", task]));
    }
    assert_success(&tributary(&["curate", &ws]));
    let out = assert_success(&tributary(&["transform", &ws]));
    assert!(
        out.contains("analytics.unified_customer: 100 rows, 2 quarantined"),
        "{out}"
    );
    assert!(
        out.contains("QUARANTINED not_null(email): 1 row(s)"),
        "{out}"
    );
    assert!(
        out.contains("QUARANTINED accepted_values(country in FR | DE): 1 row(s)"),
        "{out}"
    );
    assert!(out.contains("PASS unique(customer_id)"), "{out}");
    assert!(out.contains("PASS row_count(1..1000)"), "{out}");

    // What the outside readers see: the joined, cleaned rows, and the rejected ones with why.
    let read = read_curated(
        &dir,
        &[
            "analytics.unified_customer",
            "analytics.unified_customer_quarantine",
        ],
    );
    let (columns, rows, by_duckdb, _) = &read["analytics.unified_customer"];
    assert_eq!(
        columns,
        &["customer_id", "email", "country", "orders", "spent"]
    );
    assert_eq!(rows, by_duckdb);
    let first = rows
        .iter()
        .find(|r| r[0].as_deref() == Some("1"))
        .expect("customer 1");
    // Orders of customer 1: ids 50, 100, ..., 500 (seq % 50 + 1 = 1).
    assert_eq!(first[1].as_deref(), Some("customer1@example.com"));
    assert_eq!(first[3].as_deref(), Some("10"));
    assert_eq!(first[4].as_deref(), Some("2750.00"));
    let (columns, quarantined, _, _) = &read["analytics.unified_customer_quarantine"];
    assert_eq!(columns.last().map(String::as_str), Some("failed_checks"));
    let reasons: Vec<(Option<String>, Option<String>)> = quarantined
        .iter()
        .map(|r| (r[0].clone(), r.last().cloned().flatten()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (Some("101".into()), Some("not_null(email)".into())),
            (
                Some("102".into()),
                Some("accepted_values(country in FR | DE)".into())
            ),
        ]
    );

    // A value the declared list does not accept fails the run: the table keeps its rows.
    pg_conn
        .execute("INSERT INTO customers VALUES (103, 'z@example.com', 'ZZ')")
        .await
        .unwrap();
    assert_success(&tributary(&["run", &ws, "--task", "shop", "--reload"]));
    assert_success(&tributary(&["curate", &ws]));
    let output = tributary(&["transform", &ws, "--model", "countries"]);
    let err = assert_failure(&output, 1);
    let out = stdout(&output);
    assert!(
        out.contains("analytics.countries: FAILED, its table is unchanged"),
        "{out}"
    );
    assert!(
        out.contains("FAIL accepted_values(country in FR | DE | XX): 1 row(s)"),
        "{out}"
    );
    assert!(err.contains("a model's check failed"), "{err}");
    let out = assert_success(&tributary(&[
        "query",
        &ws,
        "SELECT count(*) AS countries FROM analytics.countries",
    ]));
    assert!(out.contains("| 3 "), "still FR, DE and XX only: {out}");
}

/// The Iceberg SQL catalog in PostgreSQL instead of SQLite: curated, then read by pyiceberg
/// through that catalog and by DuckDB.
#[tokio::test(flavor = "multi_thread")]
async fn a_postgresql_catalog_serves_the_curated_tables() {
    let pg = Pg::from_env();
    let mut conn = pg.fresh_database("trib_pg_catalog_src").await;
    conn.execute(
        "CREATE TABLE items (id int8 PRIMARY KEY, label text);
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 500) g;",
    )
    .await
    .unwrap();
    let catalog_db = pg.fresh_database("trib_pg_catalog").await;
    catalog_db.close().await.unwrap();
    // No password in the URL: it comes from PGPASSWORD.
    let url = pg.url("trib_pg_catalog").replace(":postgres@", "@");
    let dir = TestDir::new();
    let ws = dir.write_workspace(&format!(
        "{}{}[[tasks]]\nname = \"load\"\nsource = \"shop\"\ntarget = \"lake\"\n\
         [tasks.target_settings]\nbucket_folder = \"raw\"\ndata_format = \"parquet\"\n\n\
         [curate]\ncatalog = \"{url}\"\n",
        pg.endpoint_toml("shop", "trib_pg_catalog_src"),
        local_target_toml("lake", &dir.lake())
    ));
    assert_success(&tributary(&["run", &ws, "--task", "load"]));
    let out = assert_success(&tributary(&["curate", &ws]));
    assert!(out.contains("shop.public.items: created"), "{out}");
    assert!(out.contains(&url), "the catalog is named: {out}");
    assert!(!dir.path().join("catalog.db").exists());
    let read = read_catalog(&url, &["shop.public.items"]);
    assert_readers_see(
        &read,
        "shop.public.items",
        &["id", "label"],
        pg_rows(&mut conn, "SELECT id::text, label FROM items").await,
    );
    let out = assert_success(&tributary(&[
        "query",
        &ws,
        "SELECT count(*) AS n FROM shop.public.items",
    ]));
    assert!(out.contains("| 500 "), "{out}");

    // A password in the catalog's URL is refused: it would sit in the workspace file.
    let text = std::fs::read_to_string(&ws).unwrap();
    let leaky = dir.write_workspace(&text.replace(&url, &pg.url("trib_pg_catalog")));
    let err = assert_failure(&tributary(&["curate", &leaky]), 2);
    assert!(err.contains("put the password in PGPASSWORD"), "{err}");
}

/// An S3 target (moto): the raw zone and the curated tables in one bucket, curated, merged
/// again, queried and modelled there, and read by pyiceberg and DuckDB (httpfs) from the
/// S3 server.
#[tokio::test(flavor = "multi_thread")]
async fn an_s3_target_is_curated_in_its_bucket() {
    let pg = Pg::from_env();
    let mut conn = pg.fresh_database("trib_curate_s3").await;
    // A table whose name holds `/`, `%` and `#`: its keys hold `%2F` and `%25`, which must
    // reach S3 literally, never decoded as a URL's.
    conn.execute(
        "CREATE TABLE items (id int8 PRIMARY KEY, label text, price numeric(10,2));
         INSERT INTO items SELECT g, 'item ' || g, g * 0.5 FROM generate_series(1, 3000) g;
         CREATE TABLE \"odd/%#name\" (id int8 PRIMARY KEY, v text);
         INSERT INTO \"odd/%#name\" SELECT g, 'v' || g FROM generate_series(1, 50) g;",
    )
    .await
    .unwrap();
    let bucket = "trib-curate-s3";
    fresh_bucket(bucket).await;
    let endpoint = s3_endpoint();
    let dir = TestDir::new();
    let ws = cdc_workspace(
        &dir,
        pg.endpoint_toml("shop", "trib_curate_s3"),
        s3_target_toml("lake", bucket, &endpoint),
        "items-cdc",
        "[curate]\nkeep_snapshots = 2\n\n[[models]]\nname = \"cheap_items\"\n\
         sql = \"SELECT id, label FROM shop.public.items WHERE price < 100\"\n",
    );
    let items = "SELECT id::text, label, price::text FROM items";
    assert_success(&run_until_caught_up(&ws, "items-cdc"));
    conn.execute(
        "UPDATE items SET label = 'changed' WHERE id % 10 = 0;
         DELETE FROM items WHERE id > 2900;
         INSERT INTO items VALUES (5000, 'new', 1.00);",
    )
    .await
    .unwrap();
    assert_success(&run_until_caught_up(&ws, "items-cdc"));
    let out = assert_success(&tributary(&["curate", &ws]));
    assert!(out.contains("shop.public.items: created"), "{out}");
    let catalog = dir.path().join("catalog.db").to_string_lossy().into_owned();
    let read = read_catalog_with(&catalog, &["shop.public.items"], Some(&endpoint));
    assert_readers_see(
        &read,
        "shop.public.items",
        &["id", "label", "price"],
        pg_rows(&mut conn, items).await,
    );

    // The table's files are in the bucket, beside the raw zone.
    let client = s3_client(&endpoint).await;
    let listed = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix("curated/shop/public/items/")
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert!(
        keys.iter()
            .any(|k| k.contains("/data/") && k.ends_with(".parquet")),
        "{keys:?}"
    );
    assert!(
        keys.iter().any(|k| k.ends_with(".metadata.json")),
        "{keys:?}"
    );

    // More changes, merged into the S3 tables. A file the table does not reference (what
    // a killed run leaves) is removed from its folder; a neighbour's file is not.
    conn.execute(
        "DELETE FROM items WHERE id <= 10; UPDATE items SET price = 0 WHERE id = 11;
         DELETE FROM \"odd/%#name\" WHERE id <= 5;",
    )
    .await
    .unwrap();
    assert_success(&run_until_caught_up(&ws, "items-cdc"));
    let orphan = "curated/shop/public/items/data/orphan.parquet";
    let neighbour = "curated/shop/public/items_copy/data/keep.parquet";
    for key in [orphan, neighbour] {
        client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(b"not parquet".to_vec().into())
            .send()
            .await
            .unwrap();
    }
    let out = assert_success(&tributary(&["curate", &ws]));
    assert!(out.contains("shop.public.items: merged"), "{out}");
    assert!(out.contains("shop.public.odd/%#name: merged"), "{out}");
    let read = read_catalog_with(&catalog, &["shop.public.items"], Some(&endpoint));
    assert_readers_see(
        &read,
        "shop.public.items",
        &["id", "label", "price"],
        pg_rows(&mut conn, items).await,
    );
    assert_eq!(read["shop.public.items"].3, 2, "keep_snapshots = 2");
    let exists = |key: &'static str| {
        let client = client.clone();
        async move {
            client
                .head_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .is_ok()
        }
    };
    assert!(!exists(orphan).await, "the orphan is removed");
    assert!(exists(neighbour).await, "another folder's file stays");
    let out = assert_success(&tributary(&[
        "query",
        &ws,
        "SELECT count(*) AS n, min(id) AS first FROM shop.public.\"odd/%#name\"",
    ]));
    assert!(out.contains("| 45 | 6 "), "{out}");

    // Queries over the curated table and the raw zone, both in S3; a model written there.
    let out = assert_success(&tributary(&[
        "query",
        &ws,
        "SELECT (SELECT count(*) FROM shop.public.items) AS curated, \
         (SELECT count(DISTINCT id) FROM shop_raw.public.items) AS raw",
    ]));
    assert!(out.contains("| 2891 "), "{out}");
    assert!(
        out.contains("| 3001 "),
        "every key the raw zone ever saw: {out}"
    );
    let out = assert_success(&tributary(&["transform", &ws]));
    assert!(out.contains("analytics.cheap_items: 190 rows"), "{out}");
    let models = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix("curated/analytics/cheap_items/data/")
        .send()
        .await
        .unwrap();
    assert!(
        !models.contents().is_empty(),
        "the model's files are in the bucket"
    );
    drop_slots(&mut conn, "trib_curate_s3").await;
}

/// Kills the processes if the test fails before it stops them: a CDC run left behind
/// would hold its slot.
struct KillIfPanicking(Vec<u32>);

impl Drop for KillIfPanicking {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for pid in &self.0 {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// The continuous mode: `curate --every 1` beside a running CDC task follows the changes
/// without a restart, and both stop cleanly on SIGINT.
#[tokio::test(flavor = "multi_thread")]
async fn curate_every_follows_a_running_cdc_task() {
    let pg = Pg::from_env();
    let db = "trib_curate_every";
    let (mut conn, _dir, ws) = local_cdc_setup(
        &pg,
        db,
        "CREATE TABLE items (id int8 PRIMARY KEY, label text);
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 1000) g;",
        "items-cdc",
        "",
    )
    .await;
    let piped = |args: &[&str]| {
        tributary_command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let cdc = piped(&["run", &ws, "--task", "items-cdc"]);
    let curate = piped(&["curate", &ws, "--every", "1"]);
    let _guard = KillIfPanicking(vec![cdc.id(), curate.id()]);
    // The curated table's row count and label total, once a query can read it.
    let curated = || {
        let output = tributary(&[
            "query",
            &ws,
            "SELECT count(*) AS n, sum(length(label)) AS chars FROM shop.public.items",
        ]);
        output.status.success().then(|| stdout(&output))
    };
    let wait_for = |what: &str, expected: &str| {
        let started = Instant::now();
        loop {
            let seen = curated();
            if seen.as_deref().is_some_and(|out| out.contains(expected)) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "{what}: the curated table never showed {expected}: {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    // 'item 1'..'item 1000': 9 * 6 + 90 * 7 + 900 * 8 + 1 * 9 characters.
    wait_for("the full load", "| 1000 | 7893 ");
    conn.execute(
        "DELETE FROM items WHERE id <= 100;
         UPDATE items SET label = 'x' WHERE id > 990;
         INSERT INTO items VALUES (2000, 'late');",
    )
    .await
    .unwrap();
    // 100 rows of 6 or 7 characters gone (9 * 6 + 90 * 7 + 1 * 8 = 692), ten become 'x'
    // (9 * 8 + 1 * 9 - 10 = 71 fewer), one of 4 added.
    wait_for("the changes", "| 901 | 7134 ");

    for child in [&cdc, &curate] {
        let signal = std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(signal.success());
    }
    let text = assert_success(&curate.wait_with_output().unwrap());
    assert!(
        text.matches("curated 1 table(s)").count() >= 2,
        "more than one round: {text}"
    );
    assert_success(&cdc.wait_with_output().unwrap());
    drop_slots(&mut conn, db).await;
}

/// A source table named `<t>_history` beside `<t>`, whose history `[curate] history` asks
/// for: the history is refused with the fix, the source table `<t>_history` is curated as
/// itself, and neither ever lands in the other's Iceberg table.
#[tokio::test(flavor = "multi_thread")]
async fn a_source_table_named_like_a_history_table_is_never_overwritten() {
    let pg = Pg::from_env();
    let db = "tributary_history_names";
    let (mut conn, dir, ws) = local_cdc_setup(
        &pg,
        db,
        "CREATE TABLE orders (id int PRIMARY KEY, v text);
         CREATE TABLE orders_history (id int PRIMARY KEY, note text);
         INSERT INTO orders VALUES (1, 'a'), (2, 'b');
         INSERT INTO orders_history VALUES (10, 'kept'), (11, 'also kept');",
        "history_names",
        "[curate]\nhistory = [\"shop.public.orders\"]\n",
    )
    .await;
    assert_success(&run_until_caught_up(&ws, "history_names"));
    let output = tributary(&["curate", &ws]);
    let out = format!("{}{}", stdout(&output), stderr(&output));
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(
        out.contains("shop.public.orders: FAILED")
            && out.contains("shop.public.orders_history, and that name is taken")
            && out.contains("Remove \"shop.public.orders\" from [curate] history"),
        "{out}"
    );
    assert!(out.contains("shop.public.orders_history: created"), "{out}");
    let read = read_curated(&dir, &["shop.public.orders_history"]);
    let (columns, rows, _, _) = &read["shop.public.orders_history"];
    assert_eq!(columns, &["id", "note"]);
    assert_eq!(rows.len(), 2, "{rows:?}");

    // Without the history, the table curates; the source table stays itself.
    let ws = dir.write_workspace(
        &std::fs::read_to_string(&ws)
            .unwrap()
            .replace("history = [\"shop.public.orders\"]", "history = []"),
    );
    assert_success(&tributary(&["curate", &ws]));
    let read = read_curated(&dir, &["shop.public.orders", "shop.public.orders_history"]);
    assert_eq!(read["shop.public.orders"].1.len(), 2);
    assert_eq!(read["shop.public.orders_history"].0, ["id", "note"]);
    drop_slots(&mut conn, db).await;
}

/// Columns added with a default (PostgreSQL's fast defaults): the rows the ALTER did not
/// touch read the default in the curated table, as at the source, whether their last image
/// is the load's or a change from before the ALTER, and after a rebuild from the LOAD files
/// too. A table altered before any change of it compares with its load's columns. A
/// volatile default is not in the change log: the table loads again on its own, with a
/// warning that says why, and the stream goes on.
#[tokio::test(flavor = "multi_thread")]
async fn columns_added_with_a_default_read_it_where_the_alter_touched_no_row() {
    let pg = Pg::from_env();
    let db = "trib_curate_add_default";
    let (mut conn, dir, ws) = local_cdc_setup(
        &pg,
        db,
        "CREATE TABLE items (id int8 PRIMARY KEY, label text);
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 1000) g;
         CREATE TABLE tags (id int8 PRIMARY KEY, t text);
         INSERT INTO tags SELECT g, 'tag ' || g FROM generate_series(1, 50) g;",
        "defaults-cdc",
        "[curate]\nhistory = [\"shop.public.items\"]\n",
    )
    .await;
    assert_success(&run_until_caught_up(&ws, "defaults-cdc"));
    // Images from before the ALTER: they lack the new columns.
    conn.execute("UPDATE items SET label = 'before' WHERE id <= 5")
        .await
        .unwrap();
    assert_success(&run_until_caught_up(&ws, "defaults-cdc"));
    assert_success(&tributary(&["curate", &ws]));
    conn.execute(
        "ALTER TABLE items ADD COLUMN active boolean NOT NULL DEFAULT true;
         ALTER TABLE items ADD COLUMN price numeric(10,2) DEFAULT 9.99;
         ALTER TABLE items ADD COLUMN seen timestamptz DEFAULT '2026-01-02 03:04:05.678+00';
         ALTER TABLE items ADD COLUMN note text;
         UPDATE items SET active = false, label = 'after' WHERE id BETWEEN 3 AND 12;
         UPDATE items SET price = NULL, note = 'priced' WHERE id = 20;
         INSERT INTO items (id, label) VALUES (2000, 'new');
         ALTER TABLE tags ADD COLUMN weight int4 NOT NULL DEFAULT 7;
         UPDATE tags SET weight = 1 WHERE id = 1;",
    )
    .await
    .unwrap();
    let text = assert_success(&run_until_caught_up(&ws, "defaults-cdc"));
    assert!(
        text.contains("column active added; rows it did not touch read \"true\""),
        "{text}"
    );
    let items = "SELECT id::text, label, active::text, price::text,
        extract(epoch FROM seen)::numeric(20,6)::text, note FROM items";
    let tags = "SELECT id::text, t, weight::text FROM tags";
    let columns = ["id", "label", "active", "price", "seen", "note"];
    for rebuild in [false, true] {
        let mut args = vec!["curate", ws.as_str()];
        if rebuild {
            args.push("--rebuild");
        }
        assert_success(&tributary(&args));
        let read = read_curated(&dir, &["shop.public.items", "shop.public.tags"]);
        let source = pg_rows(&mut conn, items).await;
        assert_readers_see(&read, "shop.public.items", &columns, source);
        let source = pg_rows(&mut conn, tags).await;
        assert_readers_see(&read, "shop.public.tags", &["id", "t", "weight"], source);
    }

    conn.execute(
        "ALTER TABLE tags ADD COLUMN token text DEFAULT md5(random()::text);
         UPDATE tags SET t = 'x' WHERE id = 2;",
    )
    .await
    .unwrap();
    let text = assert_success(&run_until_caught_up(&ws, "defaults-cdc"));
    assert!(
        text.contains("public.tags: column token was added, but it was added with a default the change log does not carry")
            && text.contains("so the table loads again from a new snapshot"),
        "{text}"
    );
    assert_success(&tributary(&["curate", &ws]));
    let read = read_curated(&dir, &["shop.public.items", "shop.public.tags"]);
    let source = pg_rows(
        &mut conn,
        "SELECT id::text, t, weight::text, token FROM tags",
    )
    .await;
    assert_readers_see(
        &read,
        "shop.public.tags",
        &["id", "t", "weight", "token"],
        source,
    );
    let source = pg_rows(&mut conn, items).await;
    assert_readers_see(&read, "shop.public.items", &columns, source);

    // A renamed column keeps its rows' values and its Iceberg field: never taken for an
    // added one, and no reload.
    let label_id = field_id(&dir, "shop.public.items", "label");
    conn.execute(
        "ALTER TABLE items RENAME COLUMN label TO title;
         UPDATE items SET title = 'renamed' WHERE id = 1;",
    )
    .await
    .unwrap();
    let text = assert_success(&run_until_caught_up(&ws, "defaults-cdc"));
    assert!(
        text.contains("public.items: column label renamed to title")
            && !text.contains("loads again"),
        "{text}"
    );
    let renamed = ["id", "title", "active", "price", "seen", "note"];
    let titles = items.replace("label", "title");
    for rebuild in [false, true] {
        let mut args = vec!["curate", ws.as_str()];
        if rebuild {
            args.push("--rebuild");
        }
        assert_success(&tributary(&args));
        let read = read_curated(&dir, &["shop.public.items"]);
        let source = pg_rows(&mut conn, &titles).await;
        assert_readers_see(&read, "shop.public.items", &renamed, source);
        assert_eq!(field_id(&dir, "shop.public.items", "title"), label_id);
    }
    assert_history_reads_renamed_columns(&ws);

    // DROP COLUMN leaves the curated table's current schema; a column widened in place
    // (int4 to int8) keeps its values.
    conn.execute(
        "ALTER TABLE tags DROP COLUMN token;
         ALTER TABLE tags ALTER COLUMN weight TYPE int8;
         UPDATE tags SET weight = 5000000000 WHERE id = 3;",
    )
    .await
    .unwrap();
    assert_success(&run_until_caught_up(&ws, "defaults-cdc"));
    assert_success(&tributary(&["curate", &ws]));
    let read = read_curated(&dir, &["shop.public.tags"]);
    let source = pg_rows(&mut conn, tags).await;
    assert_readers_see(&read, "shop.public.tags", &["id", "t", "weight"], source);

    // A table dropped and created again under its name (PostgreSQL's change log has no
    // DROP TABLE; the new relation says it): the old rows are gone, and a column may come
    // back with another type.
    conn.execute(
        "DROP TABLE tags;
         CREATE TABLE tags (id int8 PRIMARY KEY, t int4, kind text);
         INSERT INTO tags VALUES (1, 10, 'a'), (2, 20, NULL);",
    )
    .await
    .unwrap();
    let text = assert_success(&run_until_caught_up(&ws, "defaults-cdc"));
    assert!(text.contains("public.tags: drop at"), "{text}");
    assert_success(&tributary(&["curate", &ws]));
    let read = read_curated(&dir, &["shop.public.tags"]);
    let source = pg_rows(&mut conn, "SELECT id::text, t::text, kind FROM tags").await;
    assert_readers_see(&read, "shop.public.tags", &["id", "t", "kind"], source);

    // `validate` replays the raw zone through all of it and finds the source's rows.
    let task = Running(spawn_quiet(&["run", &ws, "--task", "defaults-cdc"]));
    let text = validate_until_equal(&ws, "defaults-cdc").await;
    assert!(
        text.contains("public.items") && text.contains("public.tags"),
        "{text}"
    );
    drop(task);
    drop_slots(&mut conn, db).await;
}

/// The history of `items` shows every version's value under the new name `title`, the
/// load's included (5 versions were updated to 'before' before the rename).
fn assert_history_reads_renamed_columns(ws: &str) {
    let out = assert_success(&tributary(&[
        "query",
        ws,
        "SELECT count(*) AS versions, count(title) AS titled, \
           count(*) FILTER (WHERE title = 'before') AS before FROM shop.public.items_history",
    ]));
    let counts: Vec<&str> = out
        .lines()
        .nth(3)
        .unwrap_or_default()
        .split('|')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert!(
        counts.len() == 3 && counts[0] == counts[1] && counts[2] == "5",
        "{out}"
    );
}

/// The Iceberg field id of `column` in curated table `table`, as pyiceberg reads it.
fn field_id(dir: &TestDir, table: &str, column: &str) -> u64 {
    let catalog = dir.path().join("catalog.db");
    let json = read_curated_json(&catalog.to_string_lossy(), &[table], None);
    json[table]["field_ids"][column]
        .as_u64()
        .unwrap_or_else(|| panic!("{table} has no column {column}: {json}"))
}

/// The same on MariaDB, from the ALTER statements in the binlog: literal defaults, NOT
/// NULL without a default (the type's implicit default), none (NULL); a default the
/// statement cannot say (a function) loads the table again.
#[tokio::test(flavor = "multi_thread")]
async fn mariadb_columns_added_with_a_default_read_it_where_the_alter_touched_no_row() {
    let my = My::from_env();
    let db = "tributary_add_default";
    let mut conn = my.fresh_database(db).await;
    conn.query_drop(
        "CREATE TABLE items (id bigint PRIMARY KEY, label varchar(20));
         INSERT INTO items SELECT seq, CONCAT('item ', seq) FROM seq_1_to_500;",
    )
    .await
    .unwrap();
    let dir = TestDir::new();
    let ws = dir.write_workspace(&format!(
        "{}{}[[tasks]]\nname = \"my-defaults-cdc\"\nsource = \"shop\"\ntarget = \"lake\"\n\
         migration_type = \"full-load-and-cdc\"\ninclude = [\"{db}.%\"]\n\
         [tasks.target_settings]\nbucket_folder = \"raw\"\ndata_format = \"parquet\"\n\
         cdc_max_batch_interval = 1\n",
        my.endpoint_toml("shop", db),
        local_target_toml("lake", &dir.lake())
    ));
    assert_success(&run_until_caught_up(&ws, "my-defaults-cdc"));
    conn.query_drop("UPDATE items SET label = 'before' WHERE id <= 5")
        .await
        .unwrap();
    assert_success(&run_until_caught_up(&ws, "my-defaults-cdc"));
    conn.query_drop(
        "ALTER TABLE items ADD COLUMN active TINYINT(1) NOT NULL DEFAULT TRUE,
           ADD COLUMN price DECIMAL(10,2) DEFAULT '9.99', ADD COLUMN qty INT NOT NULL,
           ADD COLUMN note VARCHAR(10);
         UPDATE items SET active = 0, label = 'after' WHERE id BETWEEN 3 AND 12;
         UPDATE items SET price = NULL, qty = 4 WHERE id = 20;",
    )
    .await
    .unwrap();
    let text = assert_success(&run_until_caught_up(&ws, "my-defaults-cdc"));
    assert!(
        text.contains("column price added; rows it did not touch read \"9.99\""),
        "{text}"
    );
    assert_success(&tributary(&["curate", &ws]));
    let table = format!("shop.{db}.items");
    let read = read_curated(&dir, &[&table]);
    let source = my_rows(
        &mut conn,
        "SELECT CAST(id AS CHAR), label, CAST(active AS CHAR), CAST(price AS CHAR),
           CAST(qty AS CHAR), note FROM items",
    )
    .await;
    let columns = ["id", "label", "active", "price", "qty", "note"];
    assert_readers_see(&read, &table, &columns, source);

    conn.query_drop(
        "ALTER TABLE items ADD COLUMN token VARCHAR(40) DEFAULT (UUID());
         UPDATE items SET label = 'x' WHERE id = 2;",
    )
    .await
    .unwrap();
    let text = assert_success(&run_until_caught_up(&ws, "my-defaults-cdc"));
    assert!(
        text.contains("column token was added, but its default is an expression")
            && text.contains("so the table loads again from a new snapshot"),
        "{text}"
    );
    assert_success(&tributary(&["curate", &ws]));
    let read = read_curated(&dir, &[&table]);
    let source = my_rows(
        &mut conn,
        "SELECT CAST(id AS CHAR), label, CAST(active AS CHAR), CAST(price AS CHAR),
           CAST(qty AS CHAR), note, token FROM items",
    )
    .await;
    let columns = ["id", "label", "active", "price", "qty", "note", "token"];
    assert_readers_see(&read, &table, &columns, source);

    // RENAME COLUMN and CHANGE keep the column (its values and its Iceberg field), DROP
    // COLUMN leaves the current schema, MODIFY to a wider type promotes it in place.
    let label_id = field_id(&dir, &table, "label");
    conn.query_drop(
        "ALTER TABLE items RENAME COLUMN label TO title, CHANGE note remark VARCHAR(10),
           DROP COLUMN token, MODIFY qty BIGINT NOT NULL;
         UPDATE items SET title = 'renamed', qty = 5000000000 WHERE id = 1;",
    )
    .await
    .unwrap();
    let text = assert_success(&run_until_caught_up(&ws, "my-defaults-cdc"));
    assert!(
        text.contains("column label renamed to title")
            && text.contains("column note renamed to remark")
            && !text.contains("loads again"),
        "{text}"
    );
    assert_success(&tributary(&["curate", &ws]));
    let read = read_curated(&dir, &[&table]);
    let source = my_rows(
        &mut conn,
        "SELECT CAST(id AS CHAR), title, CAST(active AS CHAR), CAST(price AS CHAR),
           CAST(qty AS CHAR), remark FROM items",
    )
    .await;
    let columns = ["id", "title", "active", "price", "qty", "remark"];
    assert_readers_see(&read, &table, &columns, source);
    assert_eq!(field_id(&dir, &table, "title"), label_id);

    // Dropped and created again: the binlog's DROP TABLE empties it.
    conn.query_drop(
        "DROP TABLE items;
         CREATE TABLE items (id bigint PRIMARY KEY, label int);
         INSERT INTO items VALUES (1, 10), (2, 20);",
    )
    .await
    .unwrap();
    assert_success(&run_until_caught_up(&ws, "my-defaults-cdc"));
    assert_success(&tributary(&["curate", &ws]));
    let read = read_curated(&dir, &[&table]);
    let source = my_rows(
        &mut conn,
        "SELECT CAST(id AS CHAR), CAST(label AS CHAR) FROM items",
    )
    .await;
    assert_readers_see(&read, &table, &["id", "label"], source);

    let task = Running(spawn_quiet(&["run", &ws, "--task", "my-defaults-cdc"]));
    let text = validate_until_equal(&ws, "my-defaults-cdc").await;
    assert!(text.contains("items"), "{text}");
    drop(task);
}

/// Runs `tributary validate` of `task` until it passes, for at most a minute (a repair's
/// reload takes a moment); returns the last run's output.
async fn validate_until_equal(ws: &str, task: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = tributary(&["validate", ws, "--task", task, "--wait", "60"]);
        let text = format!("{}{}", stdout(&out), stderr(&out));
        if out.status.success() {
            return text;
        }
        assert!(Instant::now() < deadline, "never equal again:\n{text}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// A background run, killed when the test ends, whether it passes or panics.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The CDC file of the table in `table_folder` that holds its deletes.
fn cdc_file_with_deletes(table_folder: &std::path::Path) -> std::path::PathBuf {
    use arrow_array::Array;
    files_under(table_folder)
        .into_iter()
        .filter(|f| f.ends_with(".parquet") && !f.starts_with("LOAD"))
        .map(|f| table_folder.join(f))
        .find(|f| {
            read_parquet_file(f).iter().any(|b| {
                b.column_by_name("Op").is_some_and(|op| {
                    (0..op.len()).any(|i| {
                        arrow_cast::display::array_value_to_string(op, i).is_ok_and(|v| v == "D")
                    })
                })
            })
        })
        .expect("a CDC file with deletes")
}

/// `validate` compares the source with the lake at one exact position while the task runs:
/// equal on a correct lake (the raw zone replayed and the curated table, fills of an added
/// column included); a CDC file removed behind the task's back is named by table, keys and
/// columns, with exit code 1; `--repair` asks the running task to reload the table, which
/// is then equal again.
#[tokio::test(flavor = "multi_thread")]
async fn validate_proves_the_lake_equals_the_source_and_names_what_differs() {
    let pg = Pg::from_env();
    let db = "trib_validate";
    let (mut conn, dir, ws) = local_cdc_setup(
        &pg,
        db,
        "CREATE TABLE items (id int8 PRIMARY KEY, label text, price numeric(10,2), qty int2,
           seen timestamptz, doc jsonb, data bytea, at time, ratio float8);
         INSERT INTO items SELECT g, 'item ' || g, g * 1.5, (g % 100)::int2,
           '2026-01-01'::timestamptz + g * interval '1 minute', jsonb_build_object('g', g),
           decode(md5(g::text), 'hex'), '12:00'::time + g * interval '1 second', g / 7.0
           FROM generate_series(1, 3000) g;
         CREATE TABLE pairs (a int4, b text, v text, PRIMARY KEY (a, b));
         INSERT INTO pairs SELECT g % 7, 'b' || g, 'v' || g FROM generate_series(1, 200) g;",
        "validate-cdc",
        "",
    )
    .await;
    assert_success(&run_until_caught_up(&ws, "validate-cdc"));
    conn.execute(
        "UPDATE items SET label = 'changed' WHERE id BETWEEN 10 AND 19;
         DELETE FROM items WHERE id > 2990;
         UPDATE pairs SET v = 'w' WHERE a = 3;",
    )
    .await
    .unwrap();
    conn.execute("ALTER TABLE items ADD COLUMN active boolean NOT NULL DEFAULT true")
        .await
        .unwrap();
    conn.execute("UPDATE items SET active = false WHERE id = 1")
        .await
        .unwrap();
    assert_success(&run_until_caught_up(&ws, "validate-cdc"));
    assert_success(&tributary(&["curate", &ws]));

    // The task runs; validate waits until it has confirmed the snapshot's position.
    let task = Running(spawn_quiet(&["run", &ws, "--task", "validate-cdc"]));
    let text = assert_success(&tributary(&[
        "validate",
        &ws,
        "--task",
        "validate-cdc",
        "--wait",
        "60",
    ]));
    assert!(
        text.contains(
            "EQUAL     public.items: 2990 source rows; raw zone: 2990 rows equal; curated: 2990 rows equal"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "EQUAL     public.pairs: 200 source rows; raw zone: 200 rows equal; curated: 200 rows equal"
        ),
        "{text}"
    );
    assert!(text.contains("2 equal, 0 not"), "{text}");

    // A change the curated table has not applied: the raw zone is compared, the curated
    // table says why it is not.
    conn.execute("UPDATE items SET qty = 1 WHERE id = 5")
        .await
        .unwrap();
    let text = assert_success(&tributary(&[
        "validate",
        &ws,
        "--task",
        "validate-cdc",
        "--table",
        "public.items",
        "--wait",
        "60",
    ]));
    assert!(
        text.contains("raw zone: 2990 rows equal; curated: not compared: it applied changes up to"),
        "{text}"
    );
    assert!(!text.contains("public.pairs"), "{text}");

    // The first CDC file of items (the label updates and the deletes) removed.
    let folder = dir.lake().join("raw/shop/public/items");
    std::fs::remove_file(cdc_file_with_deletes(&folder)).unwrap();
    let out = tributary(&["validate", &ws, "--task", "validate-cdc", "--wait", "60"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "DIFFERENT public.items: 2990 source rows; raw zone: 0 missing, 10 extra, 10 different"
        ),
        "{text}"
    );
    assert!(text.contains("extra id=2991"), "{text}");
    assert!(
        text.contains("different id=10: label: changed → item 10"),
        "{text}"
    );
    assert!(text.contains("EQUAL     public.pairs"), "{text}");
    assert!(text.contains("1 equal, 1 not"), "{text}");

    // --repair: the running task reloads the table, and it is equal again.
    let out = tributary(&[
        "validate",
        &ws,
        "--task",
        "validate-cdc",
        "--repair",
        "--wait",
        "60",
    ]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("asked task validate-cdc to reload public.items"),
        "{text}"
    );
    let text = validate_until_equal(&ws, "validate-cdc").await;
    assert!(text.contains("EQUAL     public.items"), "{text}");
    drop(task);

    // A task that does not run never reaches the snapshot: validate says what to do.
    let out = tributary(&["validate", &ws, "--task", "validate-cdc", "--wait", "1"]);
    let text = assert_failure(&out, 1);
    assert!(
        text.contains("has not confirmed the source's position")
            && text.contains("tributary run WORKSPACE --task validate-cdc"),
        "{text}"
    );
    drop_slots(&mut conn, db).await;
}

/// The same on MariaDB: a consistent snapshot at its binlog position, equal while the task
/// runs, and a removed CDC file named.
#[tokio::test(flavor = "multi_thread")]
async fn mariadb_validate_compares_at_the_snapshots_binlog_position() {
    let my = My::from_env();
    let db = "tributary_validate";
    let mut conn = my.fresh_database(db).await;
    conn.query_drop(
        "CREATE TABLE items (id bigint PRIMARY KEY, label varchar(20), price decimal(10,2),
           seen datetime(6), flag tinyint(1));
         INSERT INTO items SELECT seq, CONCAT('item ', seq), seq * 1.5,
           '2026-01-01 00:00:00' + INTERVAL seq SECOND, seq % 2 FROM seq_1_to_1000;",
    )
    .await
    .unwrap();
    let dir = TestDir::new();
    let ws = dir.write_workspace(&format!(
        "{}{}[[tasks]]\nname = \"my-validate-cdc\"\nsource = \"shop\"\ntarget = \"lake\"\n\
         migration_type = \"full-load-and-cdc\"\ninclude = [\"{db}.%\"]\n\
         [tasks.target_settings]\nbucket_folder = \"raw\"\ndata_format = \"parquet\"\n\
         cdc_max_batch_interval = 1\n",
        my.endpoint_toml("shop", db),
        local_target_toml("lake", &dir.lake())
    ));
    assert_success(&run_until_caught_up(&ws, "my-validate-cdc"));
    conn.query_drop(
        "UPDATE items SET label = 'changed' WHERE id BETWEEN 10 AND 14;
         DELETE FROM items WHERE id > 995;
         ALTER TABLE items ADD COLUMN qty INT NOT NULL DEFAULT 3;
         UPDATE items SET qty = 4 WHERE id = 1;",
    )
    .await
    .unwrap();
    let task = Running(spawn_quiet(&["run", &ws, "--task", "my-validate-cdc"]));
    let text = assert_success(&tributary(&[
        "validate",
        &ws,
        "--task",
        "my-validate-cdc",
        "--wait",
        "60",
    ]));
    let table = format!("{db}.items");
    assert!(
        text.contains(&format!(
            "EQUAL     {table}: 995 source rows; raw zone: 995 rows equal; curated: not compared: not curated yet"
        )),
        "{text}"
    );
    let folder = dir.lake().join(format!("raw/shop/{db}/items"));
    std::fs::remove_file(cdc_file_with_deletes(&folder)).unwrap();
    let out = tributary(&["validate", &ws, "--task", "my-validate-cdc", "--wait", "60"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("extra id=996"), "{text}");
    assert!(
        text.contains("different id=10: label: changed → item 10"),
        "{text}"
    );
    drop(task);
}
