//! MySQL/MariaDB full load + binlog CDC, end to end through the `tributary` binary against
//! the real MariaDB: each table rebuilt from the raw zone (the full load, then the changes
//! in `_position` order) must equal a fresh full load of the source, row for row. Since
//! the fresh load reads every value through the full-load path and the rebuild through
//! CDC, equal rows also mean both paths give the same values for every type.

mod common;

use std::collections::BTreeMap;

use common::rebuild::*;
use common::*;
use mysql_async::prelude::Queryable;

async fn exec(conn: &mut mysql_async::Conn, sql: &str) {
    conn.query_drop(sql)
        .await
        .unwrap_or_else(|e| panic!("{e}: {sql}"));
}

/// Every type of the table, with edge values (MariaDB's JSON is LONGTEXT).
const SCHEMA: &str = "
SET SESSION sql_mode = '';
CREATE TABLE typed (
  id int PRIMARY KEY, ti tinyint, tu tinyint unsigned, si smallint, su smallint unsigned,
  mi mediumint, mu mediumint unsigned, i int, iu int unsigned, bi bigint, bu bigint unsigned,
  d decimal(12,2), dw decimal(40,5), f float, db double, b bit(5), b1 bit(1), b64 bit(64),
  da date, dt datetime(6), ts timestamp(3) NULL DEFAULT NULL, tm time(3), y year,
  c char(5), vc varchar(30), l1 varchar(30) CHARACTER SET latin1, tx text,
  bn binary(3), vb varbinary(10), bl blob, j json, e enum('red','green','it''s'),
  s set('a','b','c'));
INSERT INTO typed VALUES
 (1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
  -9223372036854775808, 18446744073709551615, -1234567890.12, 123456789012345678901234567890.12345,
  1.2345678, 2.718281828459045, b'10101', b'1', b'1111111111111111111111111111111111111111111111111111111111111111',
  '2024-02-29', '2024-02-29 23:59:59.999999', '2038-01-19 03:14:07.999', '-838:59:59.99', 2155,
  'abc', 'ünïcödé ✓ 🎉', 'café €', 'long text', x'000102', x'ff00', x'deadbeef',
  '{\"a\": [1, 2.5, null], \"b\": \"x\"}', 'it''s', 'a,c'),
 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b'0', b'0', b'0', '0000-00-00', '0000-00-00 00:00:00',
  '1970-01-01 00:00:01', '00:00:00', 0, '', '', '', '', x'', x'', x'', '[]', 'red', '');
CREATE TABLE accounts (id bigint PRIMARY KEY, name varchar(50) NOT NULL, balance decimal(12,2), opened date);
CREATE TABLE orders (id bigint PRIMARY KEY, account_id bigint, total decimal(12,2), placed_at datetime);
INSERT INTO accounts SELECT seq, concat('account ', seq), seq * 1.5, '2024-01-01' + INTERVAL seq DAY FROM seq_1_to_1000;
INSERT INTO orders SELECT seq, seq % 1000 + 1, seq * 2.25, '2024-06-01 10:00:00' FROM seq_1_to_2000;
CREATE TABLE wiped (id int PRIMARY KEY);
INSERT INTO wiped SELECT seq FROM seq_1_to_10;
";

/// Changes of every kind, in the middle of which the schema changes.
const CHANGES: &str = "
SET SESSION sql_mode = '';
INSERT INTO typed VALUES
 (4, 127, 0, 32767, 1, 8388607, 1, 2147483647, 1, 9223372036854775807, 9223372036854775808,
  0.01, -0.00001, -3.4e38, -1e-300, b'11111', b'0', b'1000000000000000000000000000000000000000000000000000000000000000',
  '1000-01-01', '1000-01-01 00:00:00', '2001-09-09 01:46:40.123', '838:59:59', 1901,
  'zz', '日本語', 'Ünïcode', repeat('x', 3000), x'ffffff', x'00', repeat(x'ab', 5000),
  '{\"nested\": {\"k\": true}}', 'green', 'a,b,c');
UPDATE typed SET l1 = 'naïve', tx = 'changed', f = f * 2, ts = '2024-01-01 00:00:00', e = 'red', s = 'b' WHERE id = 1;
UPDATE typed SET vc = 'now set', b64 = b'1', da = '2024-12-31' WHERE id = 2;
DELETE FROM typed WHERE id = 3;
BEGIN;
INSERT INTO accounts VALUES (5000, 'in a transaction', 1.00, '2025-01-01');
UPDATE orders SET total = total + 1 WHERE id <= 20;
DELETE FROM accounts WHERE id BETWEEN 900 AND 910;
COMMIT;
UPDATE accounts SET id = id + 10000 WHERE id = 5;
ALTER TABLE orders ADD COLUMN note varchar(20);
UPDATE orders SET note = 'after add' WHERE id <= 10;
INSERT INTO orders VALUES (5000, 1, 9.99, '2025-01-01 00:00:00', 'with note');
ALTER TABLE accounts MODIFY COLUMN balance decimal(14,3);
UPDATE accounts SET balance = balance + 1;
ALTER TABLE orders DROP COLUMN placed_at;
UPDATE orders SET total = total * 2 WHERE id > 1990;
CREATE TABLE fresh (id int PRIMARY KEY, v varchar(10));
INSERT INTO fresh VALUES (1, 'one'), (2, 'two');
TRUNCATE TABLE wiped;
INSERT INTO wiped VALUES (100);
CREATE TABLE last_ddl (id int PRIMARY KEY);
";

const TABLES: [&str; 5] = ["typed", "accounts", "orders", "fresh", "wiped"];

fn cdc_workspace(my: &My, dir: &TestDir, db: &str, task: &str) -> String {
    dir.write_workspace(&format!(
        "{}{}[[tasks]]\nname = \"{task}\"\nsource = \"shop\"\ntarget = \"lake\"\n\
         migration_type = \"full-load-and-cdc\"\ninclude = [\"{db}.%\"]\n\
         [tasks.target_settings]\nbucket_folder = \"raw\"\ndata_format = \"parquet\"\n\
         timestamp_column_name = \"changed_at\"\ncdc_max_batch_interval = 1\n\
         date_partition_enabled = true\ndate_partition_style = \"hive\"\n\
         [tasks.full_load_settings]\nparallel_load_range_mb = 1\n",
        my.endpoint_toml("shop", db),
        local_target_toml("lake", &dir.lake())
    ))
}

/// A fresh full load of the source's current state, table by table.
fn fresh_full_load(my: &My, db: &str, tables: &[&str]) -> BTreeMap<String, TableRows> {
    let dir = TestDir::new();
    let ws = dir.write_workspace(&format!(
        "{}{}[[tasks]]\nname = \"verify\"\nsource = \"shop\"\ntarget = \"lake\"\n\
         include = [\"{db}.%\"]\n[tasks.target_settings]\ndata_format = \"parquet\"\n",
        my.endpoint_toml("shop", db),
        local_target_toml("lake", &dir.lake())
    ));
    assert_success(&tributary(&["run", &ws, "--task", "verify"]));
    tables
        .iter()
        .map(|t| {
            (
                t.to_string(),
                rebuild(&dir.lake().join(format!("shop/{db}/{t}")), &[]),
            )
        })
        .collect()
}

/// Rebuilds each table of CDC task `task` and compares it with a fresh full load, on the
/// columns the source has now.
fn assert_lake_equals_source(my: &My, db: &str, dir: &TestDir, task: &str, tables: &[&str]) {
    let expected = fresh_full_load(my, db, tables);
    let state = dir.lake().join(format!("raw/_tributary/{task}/state.json"));
    for t in tables {
        let actual = rebuild(
            &dir.lake().join(format!("raw/shop/{db}/{t}")),
            &truncates(&state, &format!("{db}.{t}")),
        );
        assert_table_equals(t, &actual, &expected[*t]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn full_load_then_binlog_cdc_rebuilds_every_table() {
    let my = My::from_env();
    let db = "tributary_mycdc";
    let mut conn = my.fresh_database(db).await;
    exec(&mut conn, SCHEMA).await;
    let dir = TestDir::new();
    let ws = cdc_workspace(&my, &dir, db, "mycdc");
    let text = assert_success(&run_until_caught_up(&ws, "mycdc"));
    assert!(text.contains("snapshot position: mysql-bin."), "{text}");
    // 1 MB ranges: the two larger tables load in key ranges.
    let loads = files_under(&dir.lake().join(format!("raw/shop/{db}/orders")));
    assert!(
        !loads.is_empty() && loads.iter().all(|f| f.starts_with("LOAD")),
        "{loads:?}"
    );

    exec(&mut conn, CHANGES).await;
    let text = assert_success(&run_until_caught_up(&ws, "mycdc"));
    assert!(text.contains("caught up"), "{text}");
    assert_lake_equals_source(&my, db, &dir, "mycdc", &TABLES);

    // Counted as DMS counts them: the PK change is a D and an I; ALTERs and the truncate
    // are DDLs; the statistics are in the state.
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.lake().join("raw/_tributary/mycdc/state.json")).unwrap(),
    )
    .unwrap();
    let table = |t: &str| state["cdc"]["tables"][format!("{db}.{t}")].clone();
    assert_eq!(table("typed")["inserts"], 1);
    assert_eq!(table("typed")["updates"], 2);
    assert_eq!(table("typed")["deletes"], 1);
    assert_eq!(
        table("accounts")["deletes"],
        12,
        "11 deleted + the old key of id 5"
    );
    assert_eq!(table("orders")["ddls"], 2, "ADD and DROP COLUMN");
    assert_eq!(
        table("wiped")["ddls"],
        1,
        "the truncate: {}",
        table("wiped")
    );
    // A file per schema: the rows after ADD COLUMN are in a file with `note`.
    let orders = dir.lake().join(format!("raw/shop/{db}/orders"));
    let with_note = files_under(&orders)
        .iter()
        .filter(|f| !f.starts_with("LOAD"))
        .flat_map(|f| read_parquet_file(&orders.join(f)))
        .filter(|b| b.schema().field_with_name("note").is_ok())
        .count();
    assert!(with_note > 0, "no CDC file of orders has the added column");

    // Nothing new: a second catch-up writes nothing and keeps the position.
    let again = assert_success(&run_until_caught_up(&ws, "mycdc"));
    assert!(again.contains("caught up"), "{again}");
    assert_lake_equals_source(&my, db, &dir, "mycdc", &TABLES);
}

async fn load_generator(my: &My, db: &str, stop: tokio::sync::watch::Receiver<bool>) -> u64 {
    let mut conn = my.connect(Some(db)).await;
    let mut n = 0u64;
    while !*stop.borrow() {
        n += 1;
        let id = 100_000 + n as i64;
        let sql = format!(
            "BEGIN;
             INSERT INTO accounts VALUES ({id}, 'gen {n}', {n}, NULL);
             UPDATE accounts SET balance = balance + 1 WHERE id = {};
             DELETE FROM accounts WHERE id = {};
             INSERT INTO orders VALUES ({id}, {id}, {n}, now());
             COMMIT;",
            100_000 + (n as i64 / 2).max(1),
            100_000 + (n as i64 - 50).max(1),
        );
        exec(&mut conn, &sql).await;
    }
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_under_load_then_restart_writes_each_change_once() {
    let my = My::from_env();
    let db = "tributary_mykill";
    let mut conn = my.fresh_database(db).await;
    exec(&mut conn, SCHEMA).await;
    let dir = TestDir::new();
    let ws = cdc_workspace(&my, &dir, db, "mykill");
    assert_success(&run_until_caught_up(&ws, "mykill"));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let generator = tokio::spawn({
        let my = My::from_env();
        async move { load_generator(&my, db, stop_rx).await }
    });
    kill_three_times_then_interrupt(&ws, "mykill").await;

    stop_tx.send(true).unwrap();
    let transactions = generator.await.unwrap();
    assert!(
        transactions > 50,
        "the load generator ran only {transactions} transactions"
    );
    assert_success(&run_until_caught_up(&ws, "mykill"));
    assert_lake_equals_source(&my, db, &dir, "mykill", &["accounts", "orders"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_inputs_missing_grants_purged_binlog_wrong_password() {
    let my = My::from_env();
    let db = "tributary_mybad";
    let mut conn = my.fresh_database(db).await;
    exec(
        &mut conn,
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1); CREATE TABLE nokey (v int);",
    )
    .await;
    // A column type the binlog gives in its storage form: CDC refuses it before loading.
    let inet = my.fresh_database("tributary_myinet").await;
    let mut inet = inet;
    exec(
        &mut inet,
        "CREATE TABLE hosts (id int PRIMARY KEY, addr inet6); INSERT INTO hosts VALUES (1, '::1');",
    )
    .await;
    let dir = TestDir::new();

    // A user who may read the tables but not the binlog: the full load works, CDC is
    // refused with the GRANT to run, and `check` names both grants.
    let user = "tributary_norepl";
    let admin = std::process::Command::new("mariadb")
        .arg("-e")
        .arg(format!(
            "CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED BY '{pw}';
             CREATE USER IF NOT EXISTS '{user}'@'localhost' IDENTIFIED BY '{pw}';
             GRANT SELECT ON `{db}`.* TO '{user}'@'%';
             GRANT SELECT ON `{db}`.* TO '{user}'@'localhost';",
            pw = my.password
        ))
        .status()
        .expect("the mariadb client (installed by scripts/services)");
    assert!(admin.success());
    let ws = dir.write_workspace(&format!(
        "{}{}[[tasks]]\nname = \"norepl\"\nsource = \"shop\"\ntarget = \"lake\"\n\
         migration_type = \"cdc\"\ninclude = [\"{db}.%\"]\n",
        my.endpoint_toml_as("shop", db, user),
        local_target_toml("lake", &dir.lake())
    ));
    let check = stdout(&tributary(&["check", &ws]));
    assert!(
        check.contains("WARN tls: not encrypted: the server offered no TLS"),
        "{check}"
    );
    assert!(
        check.contains("GRANT REPLICATION SLAVE ON *.* TO 'tributary_norepl'"),
        "{check}"
    );
    assert!(
        check.contains("tables without a primary key: tributary_mybad.nokey"),
        "{check}"
    );
    let refused = assert_failure(&tributary(&["run", &ws, "--task", "norepl"]), 1);
    assert!(refused.contains("GRANT"), "{refused}");
    assert!(refused.contains("REPLICATION"), "{refused}");

    // A checkpoint in a binlog file the server no longer has: said, with the way out.
    let ws = cdc_workspace(&my, &dir, db, "purged");
    assert_success(&run_until_caught_up(&ws, "purged"));
    let state_file = dir.lake().join("raw/_tributary/purged/state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    state["cdc"]["confirmed_position"] = "mysql-bin.000000:4".into();
    std::fs::write(&state_file, serde_json::to_vec(&state).unwrap()).unwrap();
    let purged = assert_failure(&run_until_caught_up(&ws, "purged"), 1);
    assert!(
        purged.contains("binlog file mysql-bin.000000 is no longer on the server"),
        "{purged}"
    );
    assert!(purged.contains("--reload"), "{purged}");
    // And the way out works.
    assert_success(&tributary(&[
        "run",
        &ws,
        "--task",
        "purged",
        "--reload",
        "--until-caught-up",
    ]));

    let ws = cdc_workspace(&my, &dir, "tributary_myinet", "inet");
    let refused = assert_failure(&run_until_caught_up(&ws, "inet"), 1);
    assert!(
        refused.contains("tributary_myinet.hosts.addr (inet6)"),
        "{refused}"
    );
    assert!(refused.contains("Exclude their tables"), "{refused}");

    // A wrong password names the variable to fix.
    let ws = dir.write_workspace(&format!(
        "{}{}",
        my.endpoint_toml_as("shop", db, user)
            .replace("TEST_MY_PASSWORD", "WRONG_PW"),
        local_target_toml("lake", &dir.lake())
    ));
    let output = tributary_command(&["check", &ws])
        .env("WRONG_PW", "not the password")
        .output()
        .unwrap();
    let text = stdout(&output) + &stderr(&output);
    assert!(
        text.contains("authentication failed for user 'tributary_norepl'"),
        "{text}"
    );
    assert!(text.contains("WRONG_PW"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_without_a_row_binlog_is_refused_for_cdc_with_each_fix() {
    // scripts/services runs it with the binlog off, STATEMENT format, MINIMAL images.
    let my = My::from_url_env("TRIBUTARY_TEST_MYSQL_NOBINLOG_URL");
    let db = "tributary_nobinlog";
    let mut conn = my.fresh_database(db).await;
    exec(
        &mut conn,
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2);",
    )
    .await;
    let dir = TestDir::new();
    let task = |name: &str, migration: &str| {
        format!(
            "[[tasks]]\nname = \"{name}\"\nsource = \"shop\"\ntarget = \"lake\"\n\
             migration_type = \"{migration}\"\ninclude = [\"{db}.%\"]\n\
             [tasks.target_settings]\ndata_format = \"parquet\"\n"
        )
    };
    let ws = dir.write_workspace(&format!(
        "{}{}{}{}",
        my.endpoint_toml("shop", db),
        local_target_toml("lake", &dir.lake()),
        task("load", "full-load"),
        task("changes", "full-load-and-cdc"),
    ));
    let check = stdout(&tributary(&["check", &ws]));
    // This server offers TLS (scripts/services gives it a certificate): it is used.
    assert!(
        check.contains("WARN tls: TLS 1.3, certificate not verified"),
        "{check}"
    );
    for fix in [
        "set log_bin = mysql-bin and server_id = 1",
        "SET GLOBAL binlog_format = 'ROW'",
        "SET GLOBAL binlog_row_image = 'FULL'",
        "SET GLOBAL binlog_row_metadata = 'FULL'",
    ] {
        assert!(check.contains(fix), "check does not say {fix:?}:\n{check}");
    }
    // A full load needs no binlog.
    let loaded = assert_success(&tributary(&["run", &ws, "--task", "load"]));
    assert!(loaded.contains("completed, 2 rows"), "{loaded}");
    // CDC is refused before anything is written, with the first fix.
    let refused = assert_failure(&tributary(&["run", &ws, "--task", "changes"]), 1);
    assert!(refused.contains("the binary log is off"), "{refused}");
    assert!(refused.contains("Fix: set log_bin"), "{refused}");
    assert!(
        files_under(&dir.lake().join("_tributary/changes")).is_empty(),
        "the CDC task wrote its state before refusing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_full_load_resumes_without_loss_or_duplicates() {
    let my = My::from_env();
    let db = "tributary_myresume";
    let mut conn = my.fresh_database(db).await;
    exec(
        &mut conn,
        "CREATE TABLE big (id bigint PRIMARY KEY, v varchar(60));
         INSERT INTO big SELECT seq, concat('row ', seq, ' ', repeat('x', 40)) FROM seq_1_to_1000000;
         ANALYZE TABLE big;",
    )
    .await;
    let dir = TestDir::new();
    let ws = dir.write_workspace(&format!(
        "{}{}[[tasks]]\nname = \"load\"\nsource = \"shop\"\ntarget = \"lake\"\n\
         include = [\"{db}.%\"]\n[tasks.target_settings]\ndata_format = \"parquet\"\n\
         [tasks.full_load_settings]\nparallel_load_range_mb = 8\nmax_full_load_sub_tasks = 2\n",
        my.endpoint_toml("shop", db),
        local_target_toml("lake", &dir.lake())
    ));
    let state_path = dir.lake().join("_tributary/load/state.json");
    let key = format!("{db}.big");
    // Kill it twice at different points, then let it finish.
    kill_load_at(&ws, "load", &state_path, &key, &[1, 3], 5);
    let text = assert_success(&tributary(&["run", &ws, "--task", "load"]));
    assert!(text.contains("resum"), "no resume message in:\n{text}");

    // Every row once, in exactly the files the checkpoint lists.
    let table_dir = dir.lake().join(format!("shop/{db}/big"));
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    let mut listed: Vec<String> = state["tables"][&key]["ranges"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["files"].as_array().unwrap().clone())
        .map(|f| {
            f["key"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    listed.sort();
    assert_eq!(files_under(&table_dir), listed);
    let mut ids = Vec::new();
    for f in files_under(&table_dir) {
        for batch in read_parquet_file(&table_dir.join(f)) {
            let column = batch.column_by_name("id").unwrap();
            let id = column
                .as_any()
                .downcast_ref::<arrow_array::Int64Array>()
                .unwrap();
            ids.extend(id.values().iter().copied());
        }
    }
    ids.sort_unstable();
    assert_eq!(ids.len(), 1_000_000, "rows loaded");
    assert!(
        ids.iter().copied().eq(1..=1_000_000),
        "each id exactly once"
    );
    assert!(files_under(&dir.lake().join(".tributary-tmp")).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn reloading_one_table_of_a_cdc_task_keeps_every_change_once() {
    let my = My::from_env();
    let db = "tributary_my_reload";
    let mut conn = my.fresh_database(db).await;
    exec(&mut conn, SCHEMA).await;
    let dir = TestDir::new();
    let ws = cdc_workspace(&my, &dir, db, "my_reload");
    assert_success(&run_until_caught_up(&ws, "my_reload"));
    let dml = |from: i64| {
        format!(
            "UPDATE accounts SET balance = balance + 1 WHERE id % 10 = 0;
             DELETE FROM accounts WHERE id BETWEEN {from} AND {from} + 9;
             INSERT INTO accounts SELECT seq, 'new', 1, NULL FROM seq_{a}_to_{b};
             BEGIN; UPDATE orders SET total = total + 1 WHERE id % 7 = 0;
             DELETE FROM orders WHERE id BETWEEN {from} AND {from} + 4; COMMIT;",
            a = from + 5000,
            b = from + 5049
        )
    };
    exec(&mut conn, &dml(100)).await;
    let table = format!("{db}.accounts");
    let state = dir.lake().join("raw/_tributary/my_reload/state.json");
    kill_once_reload_is_recorded(&ws, "my_reload", &table, &state);
    exec(&mut conn, &dml(200)).await;
    let text = assert_success(&run_until_caught_up(&ws, "my_reload"));
    assert!(text.contains(&format!("reloading {table}")), "{text}");
    assert_lake_equals_source(&my, db, &dir, "my_reload", &["accounts", "orders"]);
    let lake = dir.lake().join(format!("raw/shop/{db}"));
    assert_eq!(cdc_changes(&lake.join("accounts")), Vec::new());
    assert!(cdc_changes(&lake.join("orders")).contains(&("D".into(), "200".into())));

    exec(&mut conn, &dml(300)).await;
    assert_success(&run_until_caught_up(&ws, "my_reload"));
    assert_lake_equals_source(&my, db, &dir, "my_reload", &["accounts", "orders"]);
    assert!(cdc_changes(&lake.join("accounts")).contains(&("D".into(), "300".into())));
    // Again while transactions commit all along.
    reload_under_load(&ws, "my_reload", &table, {
        let my = My::from_env();
        move |stop| async move { load_generator(&my, db, stop).await }
    })
    .await;
    assert_lake_equals_source(&my, db, &dir, "my_reload", &["accounts", "orders"]);
}
