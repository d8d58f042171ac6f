//! PostgreSQL full load + CDC, end to end through the `tributary` binary against the real
//! PostgreSQL: each table rebuilt from the raw zone (the full load, then the changes in
//! `_position` order) must equal a fresh full load of the source, row for row.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;

use common::rebuild::*;
use common::*;
use sqlx::{Connection, Executor, PgConnection};

/// A fresh full load of the source's current state, in the same representation.
fn fresh_full_load(pg: &Pg, db: &str, tables: &[&str]) -> BTreeMap<String, TableRows> {
    let dir = TestDir::new();
    let ws = dir.write_workspace(&format!(
        "{}{}[[tasks]]\nname = \"verify\"\nsource = \"shop\"\ntarget = \"lake\"\n\
         [tasks.target_settings]\ndata_format = \"parquet\"\n",
        pg.endpoint_toml("shop", db),
        local_target_toml("lake", &dir.lake())
    ));
    assert_success(&tributary(&["run", &ws, "--task", "verify"]));
    tables
        .iter()
        .map(|t| {
            (
                t.to_string(),
                rebuild(&dir.lake().join(format!("shop/public/{t}")), &[]),
            )
        })
        .collect()
}

fn cdc_workspace(pg: &Pg, dir: &TestDir, db: &str, task: &str) -> String {
    dir.write_workspace(&format!(
        "{}{}[[tasks]]\nname = \"{task}\"\nsource = \"shop\"\ntarget = \"lake\"\n\
         migration_type = \"full-load-and-cdc\"\n\
         [tasks.target_settings]\nbucket_folder = \"raw\"\ndata_format = \"parquet\"\n\
         timestamp_column_name = \"changed_at\"\ncdc_max_batch_interval = 1\n\
         date_partition_enabled = true\ndate_partition_style = \"hive\"\n",
        pg.endpoint_toml("shop", db),
        local_target_toml("lake", &dir.lake())
    ))
}

/// Rebuilds each table of the CDC task `task` and compares it with a fresh full load, on
/// the columns the source has now (older rows may carry since-dropped columns).
fn assert_lake_equals_source(pg: &Pg, db: &str, dir: &TestDir, task: &str, tables: &[&str]) {
    let expected = fresh_full_load(pg, db, tables);
    let state = dir.lake().join(format!("raw/_tributary/{task}/state.json"));
    for t in tables {
        let actual = rebuild(
            &dir.lake().join(format!("raw/shop/public/{t}")),
            &truncates(&state, &format!("public.{t}")),
        );
        assert_table_equals(t, &actual, &expected[*t]);
    }
}

const SCHEMA: &str = "
CREATE TABLE accounts (id int8 PRIMARY KEY, name text NOT NULL, balance numeric(12,2),
                       tags text[], opened date);
CREATE TABLE orders (id int8 PRIMARY KEY, account_id int8, total numeric(12,2), doc text,
                     placed_at timestamptz);
ALTER TABLE orders REPLICA IDENTITY FULL;
INSERT INTO accounts SELECT g, 'account ' || g, g * 1.5, ARRAY['a', 'b' || g], date '2024-01-01' + g
FROM generate_series(1, 1000) g;
INSERT INTO orders SELECT g, g % 1000 + 1, g * 2.25, 'small doc ' || g, now() FROM generate_series(1, 2000) g;
CREATE TABLE wiped (id int8 PRIMARY KEY);
INSERT INTO wiped SELECT generate_series(1, 10);
";

async fn exec(conn: &mut PgConnection, sql: String) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(conn)
        .await
        .unwrap();
}

/// A text of about 6 KB that does not compress: stored out of line (TOAST).
const TOASTED: &str =
    "(SELECT string_agg(md5(random()::text || g::text), '') FROM generate_series(1, 200) g)";

#[tokio::test(flavor = "multi_thread")]
async fn full_load_then_cdc_rebuilds_every_table() {
    let pg = Pg::from_env();
    let db = "trib_cdc";
    let mut conn = pg.fresh_database(db).await;
    conn.execute(SCHEMA).await.unwrap();
    // REPLICA IDENTITY DEFAULT with TOASTed values: updates that leave them alone.
    exec(
        &mut conn,
        format!(
            "CREATE TABLE docs (id int8 PRIMARY KEY, title text, body text, tags text[]);
             INSERT INTO docs SELECT g, 'doc ' || g, {TOASTED}, ARRAY['x y', 'b' || g]
             FROM generate_series(1, 5) g;"
        ),
    )
    .await;
    let dir = TestDir::new();
    let ws = cdc_workspace(&pg, &dir, db, "cdc_basic");
    let first = assert_success(&run_until_caught_up(&ws, "cdc_basic"));
    assert!(
        first.contains("created replication slot tributary_cdc_basic_trib_cdc_"),
        "{first}"
    );

    changes_of_every_kind(&mut conn).await;

    let second = assert_success(&run_until_caught_up(&ws, "cdc_basic"));
    assert!(second.contains("caught up"), "{second}");
    assert!(
        second.contains("public.docs: recovering unchanged TOASTed values"),
        "{second}"
    );
    let tables = ["accounts", "orders", "late_table", "wiped", "docs"];
    assert_lake_equals_source(&pg, db, &dir, "cdc_basic", &tables);

    // In a new run, from the CDC files: the latest row for the key, not the full load's.
    conn.execute("UPDATE docs SET title = 'third' WHERE id IN (1, 3, 100)")
        .await
        .unwrap();
    assert_success(&run_until_caught_up(&ws, "cdc_basic"));
    assert_lake_equals_source(&pg, db, &dir, "cdc_basic", &tables);
    let docs = dir.lake().join("raw/shop/public/docs");
    for f in files_under(&docs) {
        for batch in read_parquet_file(&docs.join(&f)) {
            for row in rows_of(&batch) {
                let body = row.get("body").map_or(0, String::len);
                assert!(body > 6000, "{f}: a body was not recovered: {row:?}");
            }
        }
    }

    assert_cdc_files_and_state(&dir);
    assert_success(&tributary(&[
        "delete-task",
        &ws,
        "--task",
        "cdc_basic",
        "--yes",
    ]));
}

/// Mixed DML, a long transaction, one spanning tables, key changes, TOAST under both
/// identities, and schema changes (add, drop, retype a column; a new table; a truncate).
async fn changes_of_every_kind(conn: &mut PgConnection) {
    // Mixed DML, a long transaction, one spanning tables, TOAST, a schema change.
    conn.execute(
        "INSERT INTO accounts SELECT g, 'new ' || g, g, NULL, NULL FROM generate_series(1001, 1500) g;
         UPDATE accounts SET balance = balance + 1 WHERE id % 7 = 0;
         DELETE FROM accounts WHERE id % 11 = 0;
         UPDATE accounts SET tags = ARRAY['x, y', NULL, 'q\"uote'] WHERE id = 3;",
    )
    .await
    .unwrap();
    let mut tx = conn.begin().await.unwrap();
    for i in 0..200 {
        exec(
            &mut tx,
            format!("UPDATE orders SET total = total + {i} WHERE id % 200 = {i}"),
        )
        .await;
    }
    tx.execute(
        "INSERT INTO orders SELECT g, 1, 1, 'bulk', now() FROM generate_series(2001, 40000) g",
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    conn.execute(
        "BEGIN;
         UPDATE accounts SET balance = 0 WHERE id = 5;
         INSERT INTO orders VALUES (50000, 5, 99.99, 'both tables', now());
         DELETE FROM orders WHERE id = 17;
         COMMIT;",
    )
    .await
    .unwrap();
    // Key changes: the old row must not survive a rebuild by key.
    conn.execute(
        "UPDATE accounts SET id = id + 100000 WHERE id IN (8, 9);
         UPDATE orders SET id = 90000 WHERE id = 10;
         ANALYZE accounts;",
    )
    .await
    .unwrap();
    exec(
        conn,
        format!("UPDATE orders SET doc = {TOASTED} WHERE id IN (1, 2, 3)"),
    )
    .await;
    // Other columns of rows with a TOASTed value: the value must survive.
    conn.execute("UPDATE orders SET total = 7 WHERE id IN (1, 2)")
        .await
        .unwrap();
    // Under REPLICA IDENTITY DEFAULT it comes from the full load's files, or from this
    // run's rows.
    exec(
        conn,
        format!(
            "UPDATE docs SET title = 'retitled' WHERE id IN (1, 2);
             INSERT INTO docs VALUES (100, 'new', {TOASTED}, NULL);
             UPDATE docs SET title = 'new, retitled' WHERE id = 100;
             UPDATE docs SET body = {TOASTED} WHERE id = 3;"
        ),
    )
    .await;
    conn.execute(
        "ALTER TABLE accounts ADD COLUMN email text;
         UPDATE accounts SET email = 'a' || id || '@x.org' WHERE id <= 20;
         INSERT INTO accounts VALUES (9999, 'late', 1, NULL, NULL, 'late@x.org');",
    )
    .await
    .unwrap();

    // More schema changes: drop a column, change a type, a new table, a truncate.
    conn.execute(
        "ALTER TABLE accounts DROP COLUMN opened;
         ALTER TABLE accounts ALTER COLUMN balance TYPE numeric(14,2);
         UPDATE accounts SET balance = balance * 2 WHERE id <= 30;
         CREATE TABLE late_table (id int8 PRIMARY KEY, v text);
         INSERT INTO late_table SELECT g, 'v' || g FROM generate_series(1, 100) g;
         UPDATE late_table SET v = 'changed' WHERE id < 10;
         TRUNCATE wiped;
         INSERT INTO wiped VALUES (7);",
    )
    .await
    .unwrap();
}

/// CDC files carry Op, the commit time and _position first, in date partitions; the state
/// records the schema changes and the counts.
fn assert_cdc_files_and_state(dir: &TestDir) {
    // CDC files carry Op, the commit time and _position first, in date partitions.
    let cdc_files: Vec<String> = files_under(&dir.lake().join("raw/shop/public/accounts"))
        .into_iter()
        .filter(|f| !f.starts_with("LOAD"))
        .collect();
    assert!(!cdc_files.is_empty());
    for f in &cdc_files {
        assert!(f.starts_with("year="), "{f} is not in a date partition");
        let name = f.rsplit('/').next().unwrap();
        assert_eq!(name.len(), "20240229-134530123.parquet".len(), "{name}");
    }
    let batch = &read_parquet_file(
        &dir.lake()
            .join("raw/shop/public/accounts")
            .join(&cdc_files[0]),
    )[0];
    let names: Vec<_> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(&names[..4], ["Op", "changed_at", "_position", "id"]);
    assert!(batch.column(2).as_string::<i32>().value(0).len() == 24);

    // The state records the schema change and the counts.
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.lake().join("raw/_tributary/cdc_basic/state.json")).unwrap(),
    )
    .unwrap();
    let accounts = &state["cdc"]["tables"]["public.accounts"];
    // ADD COLUMN, then DROP COLUMN and the type change (one transaction: one new schema).
    assert_eq!(accounts["ddls"], 2, "{accounts}");
    assert_eq!(state["cdc"]["tables"]["public.wiped"]["ddls"], 1);
    assert!(accounts["inserts"].as_u64().unwrap() >= 501);
    assert!(
        accounts["schema_changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["change"].as_str().unwrap().contains("email text")),
        "{accounts}"
    );
}

/// Transactions over both tables, forever, until `stop` says so.
async fn load_generator(pg: &Pg, db: &str, stop: tokio::sync::watch::Receiver<bool>) -> u64 {
    let mut conn = PgConnection::connect(&pg.url(db)).await.unwrap();
    let mut n = 0u64;
    while !*stop.borrow() {
        n += 1;
        let id = 100_000 + n as i64;
        let sql = format!(
            "BEGIN;
             INSERT INTO accounts VALUES ({id}, 'gen {n}', {n}, NULL, NULL);
             UPDATE accounts SET balance = balance + 1 WHERE id = {};
             DELETE FROM accounts WHERE id = {};
             INSERT INTO orders VALUES ({id}, {id}, {n}, 'gen', now());
             COMMIT;",
            100_000 + (n as i64 / 2).max(1),
            100_000 + (n as i64 - 50).max(1),
        );
        exec(&mut conn, sql).await;
    }
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_under_load_then_restart_writes_each_change_once() {
    let pg = Pg::from_env();
    let db = "trib_cdc_kill";
    let mut conn = pg.fresh_database(db).await;
    conn.execute(SCHEMA).await.unwrap();
    let dir = TestDir::new();
    let ws = cdc_workspace(&pg, &dir, db, "cdc_kill");
    assert_success(&run_until_caught_up(&ws, "cdc_kill"));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let generator = tokio::spawn({
        let pg = Pg::from_env();
        async move { load_generator(&pg, db, stop_rx).await }
    });
    kill_three_times_then_interrupt(&ws, "cdc_kill").await;

    stop_tx.send(true).unwrap();
    let transactions = generator.await.unwrap();
    assert!(
        transactions > 50,
        "the load generator ran only {transactions} transactions"
    );
    assert_success(&run_until_caught_up(&ws, "cdc_kill"));
    assert_lake_equals_source(&pg, db, &dir, "cdc_kill", &["accounts", "orders"]);
    // Leave no slot holding WAL on the test server.
    assert_success(&tributary(&[
        "delete-task",
        &ws,
        "--task",
        "cdc_kill",
        "--yes",
    ]));
}

/// Copies every object under `prefix` of `bucket` into `root`, keeping the keys as paths.
async fn download(bucket: &str, prefix: &str, root: &Path) {
    let client = s3_client(&s3_endpoint()).await;
    let list = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    for o in list.contents() {
        let key = o.key().unwrap();
        let body = get_object(&client, bucket, key).await;
        let path = root.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cdc_into_s3_then_delete_the_task() {
    let pg = Pg::from_env();
    let db = "trib_cdc_s3";
    let mut conn = pg.fresh_database(db).await;
    conn.execute(SCHEMA).await.unwrap();
    let bucket = "trib-cdc";
    fresh_bucket(bucket).await;
    let dir = TestDir::new();
    let ws = dir.write_workspace(&format!(
        "{}{}[[tasks]]\nname = \"cdc_s3\"\nsource = \"shop\"\ntarget = \"lake\"\n\
         migration_type = \"full-load-and-cdc\"\n\
         [tasks.target_settings]\nbucket_folder = \"raw\"\ndata_format = \"parquet\"\n\
         cdc_max_batch_interval = 1\n",
        pg.endpoint_toml("shop", db),
        s3_target_toml("lake", bucket, &s3_endpoint())
    ));
    assert_success(&run_until_caught_up(&ws, "cdc_s3"));
    conn.execute(
        "UPDATE accounts SET balance = -1 WHERE id < 100;
         DELETE FROM orders WHERE id > 1900;
         INSERT INTO accounts VALUES (5000, 'five thousand', 5, '{}', '2024-12-31');",
    )
    .await
    .unwrap();
    let run = assert_success(&run_until_caught_up(&ws, "cdc_s3"));
    assert!(run.contains("inserts"), "no statistics table:\n{run}");
    // The crawler reads the raw zone on S3 as it does on disk.
    let crawled = assert_success(&tributary(&["catalog", &ws, "--target", "lake"]));
    assert!(
        crawled.contains("3 new table(s)") && crawled.contains("shop.public.accounts  parquet"),
        "{crawled}"
    );
    download(bucket, "raw/", &dir.lake()).await;
    assert_lake_equals_source(&pg, db, &dir, "cdc_s3", &["accounts", "orders"]);

    // check reports the tables whose TOASTable columns lack REPLICA IDENTITY FULL, and the slot.
    let check = tributary(&["check", &ws, "--endpoint", "shop"]);
    let text = stdout(&check);
    assert!(
        text.contains("WARN TOAST and replica identity") && text.contains("public.accounts"),
        "{text}"
    );
    let slot = format!(
        "tributary_cdc_s3_trib_cdc_s3_{:08x}",
        fnv1a("cdc_s3\0trib_cdc_s3")
    );
    assert!(text.contains(&format!("slot {slot} is idle")), "{text}");
    assert!(
        text.contains(&format!("PASS task cdc_s3: slot {slot} exists"))
            && text.contains("publication tributary_cdc_s3 exists"),
        "{text}"
    );

    // Deleting the task drops its slot and publication, and only when asked to.
    let refused = tributary_command(&["delete-task", &ws, "--task", "cdc_s3"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_failure(&refused, 2);
    assert_success(&tributary(&[
        "delete-task",
        &ws,
        "--task",
        "cdc_s3",
        "--yes",
    ]));
    let slots: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'tributary_cdc_s3_trib_cdc_s3_%'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let publications: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_publication WHERE pubname = 'tributary_cdc_s3'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!((slots, publications), (0, 0));
    // Without its slot, the task refuses to continue rather than miss changes.
    let err = assert_failure(&run_until_caught_up(&ws, "cdc_s3"), 1);
    assert!(err.contains("--reload"), "{err}");
    // ...and --reload starts over: a new slot, a new load, the old changes gone.
    conn.execute(
        "DELETE FROM accounts WHERE id = 5000; UPDATE orders SET total = 0 WHERE id < 10;",
    )
    .await
    .unwrap();
    assert_success(&tributary(&[
        "run",
        &ws,
        "--task",
        "cdc_s3",
        "--reload",
        "--until-caught-up",
    ]));
    let fresh = TestDir::new();
    download(bucket, "raw/", &fresh.lake()).await;
    assert_lake_equals_source(&pg, db, &fresh, "cdc_s3", &["accounts", "orders"]);
    assert_success(&tributary(&[
        "delete-task",
        &ws,
        "--task",
        "cdc_s3",
        "--yes",
    ]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_without_replica_identity_blocks_the_publication_with_a_fix() {
    let pg = Pg::from_env();
    let db = "trib_cdc_nopk";
    let mut conn = pg.fresh_database(db).await;
    conn.execute(
        "CREATE TABLE keyed (id int PRIMARY KEY); CREATE TABLE loose (a int, b text);
         INSERT INTO loose VALUES (1, 'x');",
    )
    .await
    .unwrap();
    let dir = TestDir::new();
    let ws = cdc_workspace(&pg, &dir, db, "cdc_nopk");
    let err = assert_failure(&run_until_caught_up(&ws, "cdc_nopk"), 1);
    assert!(
        err.contains("public.loose") && err.contains("REPLICA IDENTITY FULL"),
        "{err}"
    );
    // The application can still update the table: nothing was published.
    conn.execute("UPDATE loose SET b = 'y'").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_inputs_a_busy_slot_no_replication_right_a_publication_missing_a_table() {
    let pg = Pg::from_env();
    let db = "trib_cdc_bad";
    let mut conn = pg.fresh_database(db).await;
    conn.execute(
        "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY);
         DROP PUBLICATION IF EXISTS trib_partial; CREATE PUBLICATION trib_partial FOR TABLE a;",
    )
    .await
    .unwrap();
    let dir = TestDir::new();

    // A publication made by hand that leaves out a selected table.
    let ws = dir.write_workspace(&format!(
        "{}[tasks.cdc_settings]\npublication_name = \"trib_partial\"\n",
        std::fs::read_to_string(cdc_workspace(&pg, &dir, db, "cdc_partial")).unwrap()
    ));
    let err = assert_failure(&run_until_caught_up(&ws, "cdc_partial"), 1);
    assert!(
        err.contains("does not publish public.b") && err.contains("ALTER PUBLICATION"),
        "{err}"
    );
    let check = stdout(&tributary(&["check", &ws, "--endpoint", "shop"]));
    assert!(
        check.contains("FAIL task cdc_partial: publication trib_partial does not publish public.b"),
        "{check}"
    );

    // A user without the REPLICATION attribute.
    conn.execute(
        "DROP ROLE IF EXISTS trib_norepl; CREATE ROLE trib_norepl LOGIN PASSWORD 'norepl';
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO trib_norepl;
         DROP PUBLICATION IF EXISTS trib_all; CREATE PUBLICATION trib_all FOR ALL TABLES;",
    )
    .await
    .unwrap();
    let ws_norepl = dir.write_workspace(&format!(
        "[[endpoints]]\nname = \"shop\"\nengine = \"postgres\"\nhost = \"{}\"\nport = {}\n\
         database = \"{db}\"\nuser = \"trib_norepl\"\npassword_env = \"TEST_NOREPL_PASSWORD\"\n\n\
         {}[[tasks]]\nname = \"cdc_norepl\"\nsource = \"shop\"\ntarget = \"lake\"\n\
         migration_type = \"cdc\"\n[tasks.cdc_settings]\npublication_name = \"trib_all\"\n",
        pg.host,
        pg.port,
        local_target_toml("lake", &dir.lake())
    ));
    let output = tributary_command(&[
        "run",
        &ws_norepl,
        "--task",
        "cdc_norepl",
        "--until-caught-up",
    ])
    .env("TEST_NOREPL_PASSWORD", "norepl")
    .output()
    .unwrap();
    let err = assert_failure(&output, 1);
    assert!(
        err.contains("ALTER ROLE") && err.contains("REPLICATION"),
        "{err}"
    );
    // With REPLICATION but not a superuser: the task cannot publish FOR ALL TABLES itself.
    conn.execute("ALTER ROLE trib_norepl WITH REPLICATION")
        .await
        .unwrap();
    let ws_repl = dir.write_workspace(&std::fs::read_to_string(&ws_norepl).unwrap().replace(
        "publication_name = \"trib_all\"",
        "publication_name = \"trib_own\"",
    ));
    let output = tributary_command(&["run", &ws_repl, "--task", "cdc_norepl", "--until-caught-up"])
        .env("TEST_NOREPL_PASSWORD", "norepl")
        .output()
        .unwrap();
    let err = assert_failure(&output, 1);
    assert!(
        err.contains("CREATE PUBLICATION trib_own FOR TABLE"),
        "{err}"
    );

    // A slot another run of the task streams.
    let ws = cdc_workspace(&pg, &dir, db, "cdc_busy");
    let first_log = dir.path().join("first.log");
    let mut first = tributary_command(&["run", &ws, "--task", "cdc_busy"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&first_log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let active: Option<bool> = sqlx::query_scalar(
            "SELECT active FROM pg_replication_slots WHERE slot_name LIKE 'tributary_cdc_busy_trib_cdc_bad_%'",
        )
        .fetch_optional(&mut conn)
        .await
        .unwrap();
        // Streaming, not still loading: the slot is also active while its snapshot is
        // held for the full load, and a stop then ends the run as unfinished.
        let streaming = std::fs::read_to_string(&first_log)
            .unwrap_or_default()
            .contains("CDC from slot");
        if active == Some(true) && streaming {
            break;
        }
        assert!(first.try_wait().unwrap().is_none(), "the first run ended");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never streamed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let err = assert_failure(&run_until_caught_up(&ws, "cdc_busy"), 1);
    assert!(err.contains("in use by another run"), "{err}");
    // A clean stop, then the task is deleted: no slot is left behind.
    let stopped = std::process::Command::new("kill")
        .arg(first.id().to_string())
        .status()
        .unwrap();
    assert!(stopped.success());
    assert!(
        first.wait().unwrap().success(),
        "a SIGTERM stop exits 0:\n{}",
        std::fs::read_to_string(&first_log).unwrap_or_default()
    );
    assert_success(&tributary(&[
        "delete-task",
        &ws,
        "--task",
        "cdc_busy",
        "--yes",
    ]));
    conn.execute("DROP PUBLICATION trib_partial; DROP PUBLICATION trib_all; DROP OWNED BY trib_norepl; DROP ROLE trib_norepl;")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn wal_level_not_logical_is_refused_with_the_fix() {
    // The second cluster of scripts/services runs with wal_level = replica.
    let pg = Pg::from_url_env("TRIBUTARY_TEST_PG_NOLOGIC_URL");
    let db = "trib_cdc_nologic";
    let mut conn = pg.fresh_database(db).await;
    conn.execute("CREATE TABLE a (id int PRIMARY KEY)")
        .await
        .unwrap();
    let dir = TestDir::new();
    let ws = cdc_workspace(&pg, &dir, db, "cdc_nologic");
    let err = assert_failure(&run_until_caught_up(&ws, "cdc_nologic"), 1);
    assert!(
        err.contains("wal_level = logical") && err.contains("restart PostgreSQL"),
        "{err}"
    );
    let check = stdout(&tributary(&["check", &ws, "--endpoint", "shop"]));
    assert!(
        check.contains("wal_level = replica")
            && check.contains("ALTER SYSTEM SET wal_level = logical"),
        "{check}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reloading_one_table_of_a_cdc_task_keeps_every_change_once() {
    let pg = Pg::from_env();
    let db = "trib_cdc_reload_table";
    let mut conn = pg.fresh_database(db).await;
    conn.execute(SCHEMA).await.unwrap();
    let dir = TestDir::new();
    let ws = cdc_workspace(&pg, &dir, db, "cdc_reload");
    assert_success(&run_until_caught_up(&ws, "cdc_reload"));

    // Changes the stream holds past the task's position, to both tables; then accounts'
    // load is damaged (a file lost), which is what a reload of one table is for.
    let dml = |from: i64| {
        format!(
            "UPDATE accounts SET balance = balance + 1 WHERE id % 10 = 0;
             DELETE FROM accounts WHERE id BETWEEN {from} AND {from} + 9;
             INSERT INTO accounts SELECT g, 'new ' || g, 1, NULL, NULL FROM generate_series({from} + 5000, {from} + 5049) g;
             UPDATE orders SET total = total + 1 WHERE id % 7 = 0;
             DELETE FROM orders WHERE id BETWEEN {from} AND {from} + 4;"
        )
    };
    exec(&mut conn, dml(100)).await;
    let accounts = dir.lake().join("raw/shop/public/accounts");
    for f in files_under(&accounts) {
        std::fs::remove_file(accounts.join(f)).unwrap();
    }

    let state = dir.lake().join("raw/_tributary/cdc_reload/state.json");
    kill_once_reload_is_recorded(&ws, "cdc_reload", "public.accounts", &state);
    exec(&mut conn, dml(200)).await;
    let text = assert_success(&run_until_caught_up(&ws, "cdc_reload"));
    assert!(text.contains("reloading public.accounts"), "{text}");
    assert_lake_equals_source(&pg, db, &dir, "cdc_reload", &["accounts", "orders"]);
    // Every change to accounts so far is in its new load: the stream's copies were passed
    // by. Those to orders, which was not reloaded, were written.
    assert_eq!(
        cdc_changes(&dir.lake().join("raw/shop/public/accounts")),
        Vec::new()
    );
    assert!(
        cdc_changes(&dir.lake().join("raw/shop/public/orders"))
            .contains(&("D".into(), "200".into()))
    );
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert!(saved.get("reloading").is_none(), "{saved}");
    assert!(saved["tables"]["public.accounts"]["changes_from"].is_string());
    assert!(saved["tables"]["public.orders"]["changes_from"].is_null());

    // After the reload, the stream applies to the table again.
    exec(&mut conn, dml(300)).await;
    assert_success(&run_until_caught_up(&ws, "cdc_reload"));
    assert_lake_equals_source(&pg, db, &dir, "cdc_reload", &["accounts", "orders"]);
    assert!(
        cdc_changes(&dir.lake().join("raw/shop/public/accounts"))
            .contains(&("D".into(), "300".into()))
    );
    // Again while transactions commit all along: the snapshot's mark must split the stream
    // with nothing lost on either side.
    reload_under_load(&ws, "cdc_reload", "public.accounts", {
        let pg = Pg::from_env();
        move |stop| async move { load_generator(&pg, db, stop).await }
    })
    .await;
    assert_lake_equals_source(&pg, db, &dir, "cdc_reload", &["accounts", "orders"]);

    let err = assert_failure(
        &tributary(&[
            "run",
            &ws,
            "--task",
            "cdc_reload",
            "--reload-table",
            "public.nope",
        ]),
        1,
    );
    assert!(err.contains("does not select table public.nope"), "{err}");
    assert_success(&tributary(&[
        "delete-task",
        &ws,
        "--task",
        "cdc_reload",
        "--yes",
    ]));
}

/// The catalog file the crawler keeps beside the raw zone.
fn catalog_json(dir: &TestDir) -> serde_json::Value {
    let path = dir.lake().join("raw/_tributary/catalog.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_catalog_crawls_tables_partitions_and_schema_versions_incrementally() {
    let pg = Pg::from_env();
    let db = "trib_cdc_catalog";
    let mut conn = pg.fresh_database(db).await;
    conn.execute(SCHEMA).await.unwrap();
    let dir = TestDir::new();
    let ws = cdc_workspace(&pg, &dir, db, "cdc_catalog");
    assert_success(&run_until_caught_up(&ws, "cdc_catalog"));
    exec(
        &mut conn,
        "UPDATE accounts SET balance = 0 WHERE id <= 30; DELETE FROM accounts WHERE id > 990;"
            .into(),
    )
    .await;
    assert_success(&run_until_caught_up(&ws, "cdc_catalog"));

    let crawl = || tributary(&["catalog", &ws, "--target", "lake", "--details"]);
    let first = assert_success(&crawl());
    assert!(first.contains("3 new table(s)"), "{first}");
    assert!(first.contains("partition (table folder)"), "{first}");
    assert!(first.contains("partition year="), "{first}");
    let catalog = catalog_json(&dir);
    let accounts = &catalog["tables"]["raw/shop/public/accounts/"];
    let rows: u64 = accounts["files"]
        .as_object()
        .unwrap()
        .values()
        .map(|f| f["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(rows, 1000 + 30 + 10, "the load and every change");
    let columns: Vec<&str> = accounts["versions"][0]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for c in ["Op", "changed_at", "_position", "id", "name", "balance"] {
        assert!(columns.contains(&c), "{columns:?}");
    }

    // Nothing new: nothing read.
    let again = assert_success(&crawl());
    assert!(
        again.contains("0 new table(s)")
            && again.contains("0 file(s) added")
            && again.contains("0 footer(s) read"),
        "{again}"
    );

    // A new column: a new schema version, from the new files only.
    exec(
        &mut conn,
        "ALTER TABLE accounts ADD COLUMN note text; UPDATE accounts SET note = 'n' WHERE id = 1;"
            .into(),
    )
    .await;
    assert_success(&run_until_caught_up(&ws, "cdc_catalog"));
    let changed = assert_success(&crawl());
    assert!(
        changed.contains("schema changed: shop.public.accounts"),
        "{changed}"
    );
    assert!(
        changed.contains("1 file(s) added") && changed.contains("1 footer(s) read"),
        "{changed}"
    );
    let versions = catalog_json(&dir)["tables"]["raw/shop/public/accounts/"]["versions"].clone();
    assert_eq!(versions.as_array().unwrap().len(), 2);
    assert!(versions[1]["columns"].to_string().contains("\"note\""));

    // A corrupt file is named with the reason; the rest stays cataloged.
    std::fs::write(
        dir.lake().join("raw/shop/public/orders/broken.parquet"),
        b"not parquet",
    )
    .unwrap();
    let out = crawl();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("UNREADABLE raw/shop/public/orders/broken.parquet")
            && text.contains("not a readable Parquet file"),
        "{text}"
    );
    assert!(text.contains("shop.public.accounts  parquet"), "{text}");
    assert_success(&tributary(&[
        "delete-task",
        &ws,
        "--task",
        "cdc_catalog",
        "--yes",
    ]));
}

/// A cluster's slot names are shared by all its databases: two workspaces with the same
/// task name on two databases of one cluster each get a slot of their own and capture only
/// their own changes; a slot of another database named by `slot_name` is refused with the
/// fix, never streamed, and delete-task leaves it alone; `check` lists only its own
/// database's slots; a task that has a slot under the name from before names carried the
/// database keeps it.
#[tokio::test(flavor = "multi_thread")]
async fn slots_are_per_database_and_another_databases_slot_is_never_streamed_or_dropped() {
    let pg = Pg::from_env();
    let (db_a, db_b) = ("trib_cdc_slot_a", "trib_cdc_slot_b");
    let mut conn = pg.fresh_database(db_a).await;
    let mut other = pg.fresh_database(db_b).await;
    for c in [&mut conn, &mut other] {
        c.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
            .await
            .unwrap();
    }
    let (dir_a, dir_b) = (TestDir::new(), TestDir::new());
    let task = "cdc_shared_name";
    let ws_a = cdc_workspace(&pg, &dir_a, db_a, task);
    let ws_b = cdc_workspace(&pg, &dir_b, db_b, task);
    assert_success(&run_until_caught_up(&ws_a, task));
    assert_success(&run_until_caught_up(&ws_b, task));
    conn.execute("INSERT INTO t VALUES (1, 'a')").await.unwrap();
    other
        .execute("INSERT INTO t VALUES (2, 'b')")
        .await
        .unwrap();
    assert_success(&run_until_caught_up(&ws_a, task));
    assert_success(&run_until_caught_up(&ws_b, task));
    assert_lake_equals_source(&pg, db_a, &dir_a, task, &["t"]);
    assert_lake_equals_source(&pg, db_b, &dir_b, task, &["t"]);
    let slot_a: String = sqlx::query_scalar(
        "SELECT slot_name::text FROM pg_replication_slots WHERE database = $1 AND NOT temporary",
    )
    .bind(db_a)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(
        slot_a.starts_with(&format!("tributary_{task}_{db_a}_")),
        "{slot_a}"
    );

    // Another database's slot, named by hand.
    let dir_foreign = TestDir::new();
    let ws_foreign = dir_foreign.write_workspace(&format!(
        "{}[tasks.cdc_settings]\nslot_name = \"{slot_a}\"\n",
        std::fs::read_to_string(&ws_b).unwrap()
    ));
    let err = assert_failure(&run_until_caught_up(&ws_foreign, task), 1);
    assert!(
        err.contains(&format!("slot {slot_a} belongs to database {db_a}"))
            && err.contains("Set cdc_settings.slot_name"),
        "{err}"
    );
    let check = stdout(&tributary(&["check", &ws_foreign, "--endpoint", "shop"]));
    assert!(
        check.contains(&format!("not a pgoutput slot of database {db_b}"))
            && !check.contains(&format!("slot {slot_a} is idle")),
        "{check}"
    );
    let out = tributary(&["delete-task", &ws_foreign, "--task", task, "--yes"]);
    assert!(stdout(&out).contains("left alone"), "{}", stdout(&out));
    let kept: Option<String> =
        sqlx::query_scalar("SELECT database::text FROM pg_replication_slots WHERE slot_name = $1")
            .bind(&slot_a)
            .fetch_optional(&mut conn)
            .await
            .unwrap();
    assert_eq!(kept.as_deref(), Some(db_a));

    // A slot under the name from before (tributary_<task>) stays the task's.
    for ws in [&ws_a, &ws_b] {
        assert_success(&tributary(&["delete-task", ws, "--task", task, "--yes"]));
    }
    conn.execute(sqlx::AssertSqlSafe(format!(
        "SELECT pg_create_logical_replication_slot('tributary_{task}', 'pgoutput')"
    )))
    .await
    .unwrap();
    let dir_old = TestDir::new();
    let ws_old = cdc_workspace(&pg, &dir_old, db_a, task);
    let out = assert_success(&run_until_caught_up(&ws_old, task));
    assert!(out.contains(&format!("slot tributary_{task} ")), "{out}");
    assert_success(&tributary(&[
        "delete-task",
        &ws_old,
        "--task",
        task,
        "--yes",
    ]));
}

/// FNV-1a, 32 bits, as the default slot names hash the task and the database.
fn fnv1a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5, |hash, b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}
