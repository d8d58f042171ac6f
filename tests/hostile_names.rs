//! Hostile names: schemas and tables named `.`, `..`, `a.b`, `a/b`, `a\b`, ` `, `_x`, `.x`,
//! a 63-byte multibyte name, and names that differ only in case, on PostgreSQL and MariaDB,
//! through a full load, CDC, `--reload-table`, `--reload`, curate (with a history table) and
//! the crawler, on local targets (raw zone in a folder and at the target's root) and on S3.
//!
//! Every table must equal its source, in the raw zone (rebuilt from its files) and in the
//! curated zone (read by pyiceberg and DuckDB); and nothing outside each table's own folder
//! may be touched: sentinel files in sibling folders, in `_tributary/` and outside the lake
//! stay as they were, and no file appears anywhere but where a table, the task state, the
//! raw catalog or the curated zone belongs.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::rebuild::{TableRows, assert_table_equals, rebuild, truncates};
use common::*;
use mysql_async::prelude::Queryable;
use sqlx::{Executor, PgConnection};
use tributary::ident::TableId;

/// A 63-byte name: 21 three-byte characters (PostgreSQL's longest identifier).
fn long_name() -> String {
    "表".repeat(21)
}

/// A table with its name and the folder names the lake must give its schema and table
/// (written out here, not computed by the code under test).
struct Hostile {
    schema: String,
    table: String,
    schema_folder: String,
    table_folder: String,
}

fn hostile(schema: &str, schema_folder: &str, table: &str, table_folder: &str) -> Hostile {
    Hostile {
        schema: schema.into(),
        table: table.into(),
        schema_folder: schema_folder.into(),
        table_folder: table_folder.into(),
    }
}

impl Hostile {
    fn id(&self) -> TableId {
        TableId::new(&self.schema, &self.table)
    }

    /// The table's folder below the raw zone's source folder.
    fn folder(&self) -> String {
        format!("{}/{}", self.schema_folder, self.table_folder)
    }
}

/// The PostgreSQL tables: every hostile name as a schema and as a table; `a.b`.`c` and
/// `a`.`b.c`, which a dotted key confuses; `Orders` and `orders`.
fn pg_tables() -> Vec<Hostile> {
    let long = long_name();
    vec![
        hostile(".", "%2E", ".", "%2E"),
        hostile("..", "%2E.", "..", "%2E."),
        hostile("a.b", "a.b", "c", "c"),
        hostile("a", "a", "b.c", "b.c"),
        hostile("a/b", "a%2Fb", "a\\b", "a%5Cb"),
        hostile(" ", " ", " ", " "),
        hostile("_x", "%5Fx", ".x", "%2Ex"),
        hostile("public", "public", "Orders", "Orders"),
        hostile("public", "public", "orders", "orders"),
        hostile(&long, &long, &long, &long),
    ]
}

/// The MariaDB tables (a database name cannot end with a space there); `a b` beside `a`,
/// whose TRUNCATE must not empty `a`.
fn my_tables() -> Vec<Hostile> {
    let long = long_name();
    vec![
        hostile(".", "%2E", ".", "%2E"),
        hostile("..", "%2E.", "..", "%2E."),
        hostile("a.b", "a.b", "c", "c"),
        hostile("a", "a", "b.c", "b.c"),
        hostile("a/b", "a%2Fb", "a\\b", "a%5Cb"),
        hostile("_x", "%5Fx", ".x", "%2Ex"),
        hostile("_x", "%5Fx", "a b", "a b"),
        hostile("_x", "%5Fx", "a", "a"),
        hostile("Case", "Case", "t", "t"),
        hostile("case", "case", "t", "t"),
        hostile(".x", "%2Ex", &long, &long),
    ]
}

/// A TOML string literal.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn pg_quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn my_quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Sentinel files: another source's table (a Parquet file and a note), another task's
/// state, a note in a schema folder, a note at the lake's root and one outside it. Returns
/// each file's path and content.
fn plant_sentinels(dir: &Path, lake: &Path, raw: &str) -> BTreeMap<PathBuf, Vec<u8>> {
    let raw_dir = if raw.is_empty() {
        lake.to_owned()
    } else {
        lake.join(raw)
    };
    let other_table = raw_dir.join("other/public/t");
    std::fs::create_dir_all(&other_table).unwrap();
    let parquet = other_table.join("LOAD00000001.parquet");
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let written = std::process::Command::new(python)
        .args([
            "-c",
            "import sys, pyarrow as pa, pyarrow.parquet as pq; \
             pq.write_table(pa.table({'id': [1]}), sys.argv[1])",
        ])
        .arg(&parquet)
        .status()
        .unwrap();
    assert!(written.success());
    let mut sentinels = BTreeMap::new();
    sentinels.insert(parquet.clone(), std::fs::read(&parquet).unwrap());
    for (path, content) in [
        (other_table.join("20260101-000000000.parquet.note"), "cdc"),
        (raw_dir.join("_tributary/other/state.json"), "{}"),
        (raw_dir.join("shop/public/notes.txt"), "schema folder"),
        (raw_dir.join("shop/notes.txt"), "source folder"),
        (lake.join("sentinel.txt"), "lake root"),
        (dir.join("outside.txt"), "outside the lake"),
        (dir.join("LOAD00000001.parquet"), "beside the lake"),
    ] {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        sentinels.insert(path, content.as_bytes().to_vec());
    }
    sentinels
}

fn assert_sentinels(sentinels: &BTreeMap<PathBuf, Vec<u8>>) {
    for (path, content) in sentinels {
        let now = std::fs::read(path)
            .unwrap_or_else(|e| panic!("sentinel {} is gone: {e}", path.display()));
        assert_eq!(&now, content, "sentinel {} changed", path.display());
    }
}

/// Asserts that every file below `dir` is a sentinel, the workspace or its catalog, or lies
/// where the lake `lake` (a folder of `dir`) puts things: a table folder of `tables` under
/// `<raw>/shop/`, the task states and raw catalog under `<raw>/_tributary/`, the curated
/// zone, the spool folder. Files below `elsewhere` (another lake) are not looked at.
fn assert_only_expected_files(
    dir: &Path,
    lake: &str,
    raw: &str,
    tables: &[Hostile],
    sentinels: &BTreeMap<PathBuf, Vec<u8>>,
    elsewhere: Option<&str>,
) {
    let raw_prefix = if raw.is_empty() {
        format!("{lake}/")
    } else {
        format!("{lake}/{raw}/")
    };
    let table_prefixes: Vec<String> = tables
        .iter()
        .map(|t| format!("{raw_prefix}shop/{}/", t.folder()))
        .collect();
    for file in files_under(dir) {
        let path = dir.join(&file);
        let expected = sentinels.contains_key(&path)
            || file == "workspace.toml"
            || file.starts_with("catalog.db")
            || file.starts_with(&format!("{raw_prefix}_tributary/"))
            || file.starts_with(&format!("{lake}/curated/shop/"))
            || file.starts_with(&format!("{lake}/.tributary-tmp/"))
            || elsewhere.is_some_and(|e| file.starts_with(e))
            || table_prefixes.iter().any(|p| file.starts_with(p));
        assert!(expected, "a file outside every table's folder: {file}");
    }
}

/// `want` from the source's rows (`id`, `v` as text).
fn table_rows(rows: Vec<(String, String)>) -> TableRows {
    rows.into_iter()
        .map(|(id, v)| {
            let row = [("id".to_owned(), id.clone()), ("v".to_owned(), v)]
                .into_iter()
                .collect();
            (id, row)
        })
        .collect()
}

/// Each table rebuilt from the raw zone (`raw_dir`, the source folder's parent) equals its
/// source.
fn assert_raw_equals(
    raw_dir: &Path,
    state_file: &Path,
    tables: &[Hostile],
    source: &BTreeMap<TableId, TableRows>,
) {
    for t in tables {
        let id = t.id();
        let folder = raw_dir.join("shop").join(t.folder());
        assert!(folder.is_dir(), "{id}: no folder {}", folder.display());
        let actual = rebuild(&folder, &truncates(state_file, &id.to_string()));
        assert_table_equals(&id.to_string(), &actual, &source[&id]);
    }
}

/// The catalog the crawler wrote names every table as the source does.
fn assert_crawled(output: &str, tables: &[Hostile]) {
    for t in tables {
        let name = tributary::ident::display_name(&["shop", &t.schema, &t.table]);
        assert!(
            output.lines().any(|l| l.starts_with(&format!("{name}  "))),
            "the crawler did not list {name}:\n{output}"
        );
    }
}

/// The curated tables (and the history of `history`), read by pyiceberg and DuckDB, equal
/// their sources.
fn assert_curated_equals(
    dir: &Path,
    tables: &[Hostile],
    source: &BTreeMap<TableId, TableRows>,
    history: &Hostile,
    s3: Option<&str>,
) {
    // pyiceberg takes the identifier's parts; the catalog stores a level's `.` as `%2E`,
    // and a level of white space (which pyiceberg refuses) as `%20`…
    let level = |s: &str| {
        if s.trim().is_empty() {
            s.bytes().map(|b| format!("%{b:02X}")).collect()
        } else {
            s.replace('%', "%25").replace('.', "%2E")
        }
    };
    let ident =
        |t: &Hostile, name: &str| serde_json::json!(["shop", level(&t.schema), name]).to_string();
    let mut names: Vec<String> = tables.iter().map(|t| ident(t, &t.table)).collect();
    let history_name = ident(history, &format!("{}_history", history.table));
    names.push(history_name.clone());
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let read = read_curated_json(&dir.join("catalog.db").to_string_lossy(), &names, s3);
    for t in tables {
        let id = t.id();
        let want: Vec<Vec<String>> = source[&id]
            .values()
            .map(|r| vec![r["id"].clone(), r["v"].clone()])
            .collect();
        let mut want = want;
        want.sort();
        let got = &read[ident(t, &t.table)];
        assert_eq!(got["columns"], serde_json::json!(["id", "v"]), "{id}");
        for reader in ["pyiceberg", "duckdb"] {
            let rows: Vec<Vec<String>> = serde_json::from_value(got[reader].clone()).unwrap();
            let mut rows = rows;
            rows.sort();
            assert_eq!(rows, want, "{id} read by {reader}");
        }
    }
    let versions = read[&history_name]["pyiceberg"].as_array().unwrap().len();
    assert!(
        versions > source[&history.id()].len(),
        "the history of {} holds every version",
        history.id()
    );
}

fn workspace(
    source: &str,
    targets: &str,
    tasks: &[(&str, &str, &str)],
    include: &[String],
    history: &Hostile,
) -> String {
    let include = include
        .iter()
        .map(|r| toml_str(r))
        .collect::<Vec<_>>()
        .join(", ");
    let history = tributary::ident::display_name(&["shop", &history.schema, &history.table]);
    let mut ws = format!(
        "{source}{targets}[curate]\nhistory = [{}]\n\n",
        toml_str(&history)
    );
    for (name, target, raw) in tasks {
        ws.push_str(&format!(
            "[[tasks]]\nname = \"{name}\"\nsource = \"shop\"\ntarget = \"{target}\"\n\
             migration_type = \"full-load-and-cdc\"\ninclude = [{include}]\n\
             [tasks.target_settings]\nbucket_folder = \"{raw}\"\ndata_format = \"parquet\"\n\
             cdc_max_batch_interval = 1\ndate_partition_enabled = true\n\n"
        ));
    }
    ws
}

async fn pg_rows(conn: &mut PgConnection, tables: &[Hostile]) -> BTreeMap<TableId, TableRows> {
    let mut out = BTreeMap::new();
    for t in tables {
        let rows: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id::text, v FROM {}.{}",
            pg_quote(&t.schema),
            pg_quote(&t.table)
        )))
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        out.insert(t.id(), table_rows(rows));
    }
    out
}

/// A fresh database `db` with every table of [`pg_tables`], three rows each.
async fn pg_hostile_database(pg: &Pg, db: &str) -> (PgConnection, Vec<Hostile>) {
    let mut conn = pg.fresh_database(db).await;
    let tables = pg_tables();
    let schemas: BTreeSet<&str> = tables.iter().map(|t| t.schema.as_str()).collect();
    for s in schemas.iter().filter(|s| **s != "public") {
        conn.execute(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA {}",
            pg_quote(s)
        )))
        .await
        .unwrap();
    }
    pg_exec(
        &mut conn,
        &tables,
        "CREATE TABLE {t} (id int PRIMARY KEY, v text NOT NULL);
         INSERT INTO {t} SELECT i, 'v' || i FROM generate_series(1, 3) i",
    )
    .await;
    (conn, tables)
}

async fn pg_exec(conn: &mut PgConnection, tables: &[Hostile], sql: &str) {
    for t in tables {
        let name = format!("{}.{}", pg_quote(&t.schema), pg_quote(&t.table));
        conn.execute(sqlx::AssertSqlSafe(sql.replace("{t}", &name)))
            .await
            .unwrap();
    }
}

fn run_ok(ws: &str, task: &str, extra: &[&str]) -> String {
    let mut args = vec!["run", ws, "--task", task, "--until-caught-up"];
    args.extend(extra);
    assert_success(&tributary(&args))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_postgresql_names_stay_in_their_folders_on_local_targets() {
    let pg = Pg::from_env();
    let db = "tributary_hostile";
    let (mut conn, tables) = pg_hostile_database(&pg, db).await;

    let dir = TestDir::new();
    let lake = dir.lake();
    let lake2 = dir.path().join("lake2");
    let sentinels = plant_sentinels(dir.path(), &lake, "raw");
    let root_sentinels = plant_sentinels(&lake2, &lake2.join("root"), "");
    let targets = format!(
        "{}{}",
        local_target_toml("lake", &lake),
        local_target_toml("lake2", &lake2.join("root"))
    );
    let history = &tables[1];
    let ws = dir.write_workspace(&workspace(
        &pg.endpoint_toml("shop", db),
        &targets,
        &[
            ("hostile", "lake", "raw"),
            // DMS's default: the raw zone at the target's root.
            ("hostile_root", "lake2", ""),
        ],
        &["%.%".to_owned()],
        history,
    ));
    let state = lake.join("raw/_tributary/hostile/state.json");
    let state2 = lake2.join("root/_tributary/hostile_root/state.json");
    let check = |source: &BTreeMap<TableId, TableRows>| {
        assert_raw_equals(&lake.join("raw"), &state, &tables, source);
        assert_raw_equals(&lake2.join("root"), &state2, &tables, source);
        assert_sentinels(&sentinels);
        assert_sentinels(&root_sentinels);
        assert_only_expected_files(
            dir.path(),
            "lake",
            "raw",
            &tables,
            &sentinels,
            Some("lake2/"),
        );
        assert_only_expected_files(&lake2, "root", "", &tables, &root_sentinels, None);
    };

    // Full load, then changes of every kind; a truncate of the table named `.`.
    for task in ["hostile", "hostile_root"] {
        run_ok(&ws, task, &[]);
    }
    pg_exec(
        &mut conn,
        &tables,
        "INSERT INTO {t} VALUES (4, 'four'); UPDATE {t} SET v = 'one' WHERE id = 1;
         DELETE FROM {t} WHERE id = 2",
    )
    .await;
    pg_exec(
        &mut conn,
        &tables[..1],
        "TRUNCATE {t}; INSERT INTO {t} VALUES (5, 'five')",
    )
    .await;
    for task in ["hostile", "hostile_root"] {
        run_ok(&ws, task, &[]);
    }
    check(&pg_rows(&mut conn, &tables).await);

    // One table reloaded alone while the stream goes on, for the tables whose folder a
    // dotted key or a `..` would have put elsewhere.
    for t in [&tables[0], &tables[1], &tables[2], &tables[6]] {
        let name = t.id().to_string();
        pg_exec(
            &mut conn,
            std::slice::from_ref(t),
            "UPDATE {t} SET v = 'three' WHERE id = 3",
        )
        .await;
        for task in ["hostile", "hostile_root"] {
            let out = run_ok(&ws, task, &["--reload-table", &name]);
            assert!(out.contains("reloaded"), "{out}");
        }
    }
    pg_exec(&mut conn, &tables, "INSERT INTO {t} VALUES (6, 'six')").await;
    for task in ["hostile", "hostile_root"] {
        run_ok(&ws, task, &[]);
    }
    check(&pg_rows(&mut conn, &tables).await);

    // The whole task again.
    for task in ["hostile", "hostile_root"] {
        run_ok(&ws, task, &["--reload"]);
    }
    pg_exec(
        &mut conn,
        &tables,
        "UPDATE {t} SET v = v || '!' WHERE id = 6",
    )
    .await;
    for task in ["hostile", "hostile_root"] {
        run_ok(&ws, task, &[]);
    }
    let source = pg_rows(&mut conn, &tables).await;
    check(&source);

    // The crawler names every table as the source does.
    let crawled = assert_success(&tributary(&["catalog", &ws, "--target", "lake"]));
    assert_crawled(&crawled, &tables);

    // Curated: created, then merged, with a history table for the table named `..`.
    let curated = assert_success(&tributary(&["curate", &ws, "--task", "hostile"]));
    assert!(!curated.contains("skipped"), "{curated}");
    pg_exec(
        &mut conn,
        &tables,
        "INSERT INTO {t} VALUES (7, 'seven'); UPDATE {t} SET v = 'merged' WHERE id = 1;
         DELETE FROM {t} WHERE id = 3",
    )
    .await;
    for task in ["hostile", "hostile_root"] {
        run_ok(&ws, task, &[]);
    }
    let merged = assert_success(&tributary(&["curate", &ws, "--task", "hostile"]));
    assert!(
        merged.matches(": merged").count() >= tables.len(),
        "{merged}"
    );
    let source = pg_rows(&mut conn, &tables).await;
    assert_curated_equals(dir.path(), &tables, &source, history, None);
    check(&source);

    for task in ["hostile", "hostile_root"] {
        assert_success(&tributary(&["delete-task", &ws, "--task", task, "--yes"]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_postgresql_names_stay_in_their_folders_on_s3() {
    let pg = Pg::from_env();
    let db = "tributary_hostile_s3";
    let (mut conn, tables) = pg_hostile_database(&pg, db).await;
    let bucket = "hostile-names";
    fresh_bucket(bucket).await;
    let endpoint = s3_endpoint();
    let client = s3_client(&endpoint).await;
    let sentinels = [
        ("raw/other/public/t/20260101-000000000.parquet.note", "cdc"),
        ("raw/_tributary/other/state.json", "{}"),
        ("raw/shop/public/notes.txt", "schema folder"),
        ("raw/shop/notes.txt", "source folder"),
        ("sentinel.txt", "bucket root"),
        ("LOAD00000001.parquet", "bucket root"),
    ];
    for (key, content) in sentinels {
        client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(content.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
    }
    let dir = TestDir::new();
    let history = &tables[2];
    let ws = dir.write_workspace(&workspace(
        &pg.endpoint_toml("shop", db),
        &s3_target_toml("s3", bucket, &endpoint),
        &[("hostile_s3", "s3", "raw")],
        &["%.%".to_owned()],
        history,
    ));
    let check = async |source: &BTreeMap<TableId, TableRows>| {
        // The raw zone, downloaded as it is, rebuilt like the local one.
        let copy = TestDir::new();
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let page = client
                .list_objects_v2()
                .bucket(bucket)
                .set_continuation_token(token)
                .send()
                .await
                .unwrap();
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
            token = page.next_continuation_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        for (key, content) in sentinels {
            assert!(keys.iter().any(|k| k == key), "sentinel {key} is gone");
            assert_eq!(get_object(&client, bucket, key).await, content.as_bytes());
        }
        for key in &keys {
            let ours = key.starts_with("raw/_tributary/")
                || key.starts_with("curated/shop/")
                || tables
                    .iter()
                    .any(|t| key.starts_with(&format!("raw/shop/{}/", t.folder())));
            assert!(
                ours || sentinels.iter().any(|(k, _)| k == key),
                "an object outside every table's folder: {key}"
            );
            if key.starts_with("raw/shop/") && !sentinels.iter().any(|(k, _)| k == key) {
                let path = copy.path().join(key);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, get_object(&client, bucket, key).await).unwrap();
            }
        }
        let state = copy.path().join("state.json");
        std::fs::write(
            &state,
            get_object(&client, bucket, "raw/_tributary/hostile_s3/state.json").await,
        )
        .unwrap();
        assert_raw_equals(&copy.path().join("raw"), &state, &tables, source);
    };

    run_ok(&ws, "hostile_s3", &[]);
    pg_exec(
        &mut conn,
        &tables,
        "INSERT INTO {t} VALUES (4, 'four'); UPDATE {t} SET v = 'one' WHERE id = 1;
         DELETE FROM {t} WHERE id = 2",
    )
    .await;
    run_ok(&ws, "hostile_s3", &[]);
    check(&pg_rows(&mut conn, &tables).await).await;
    for t in [&tables[0], &tables[1]] {
        pg_exec(
            &mut conn,
            std::slice::from_ref(t),
            "UPDATE {t} SET v = 'three' WHERE id = 3",
        )
        .await;
        run_ok(&ws, "hostile_s3", &["--reload-table", &t.id().to_string()]);
    }
    run_ok(&ws, "hostile_s3", &["--reload"]);
    pg_exec(&mut conn, &tables, "INSERT INTO {t} VALUES (6, 'six')").await;
    run_ok(&ws, "hostile_s3", &[]);
    let source = pg_rows(&mut conn, &tables).await;
    check(&source).await;
    let crawled = assert_success(&tributary(&["catalog", &ws, "--target", "s3"]));
    assert_crawled(&crawled, &tables);
    let curated = assert_success(&tributary(&["curate", &ws]));
    assert!(!curated.contains("skipped"), "{curated}");
    pg_exec(
        &mut conn,
        &tables,
        "UPDATE {t} SET v = 'merged' WHERE id = 1",
    )
    .await;
    run_ok(&ws, "hostile_s3", &[]);
    assert_success(&tributary(&["curate", &ws]));
    let source = pg_rows(&mut conn, &tables).await;
    assert_curated_equals(dir.path(), &tables, &source, history, Some(&endpoint));
    check(&source).await;
    assert_success(&tributary(&[
        "delete-task",
        &ws,
        "--task",
        "hostile_s3",
        "--yes",
    ]));
}

async fn my_rows(conn: &mut mysql_async::Conn, tables: &[Hostile]) -> BTreeMap<TableId, TableRows> {
    let mut out = BTreeMap::new();
    for t in tables {
        let rows: Vec<(String, String)> = conn
            .query(format!(
                "SELECT CAST(id AS CHAR), v FROM {}.{}",
                my_quote(&t.schema),
                my_quote(&t.table)
            ))
            .await
            .unwrap();
        out.insert(t.id(), table_rows(rows));
    }
    out
}

async fn my_exec(conn: &mut mysql_async::Conn, tables: &[Hostile], sql: &str) {
    for t in tables {
        let name = format!("{}.{}", my_quote(&t.schema), my_quote(&t.table));
        for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            conn.query_drop(statement.replace("{t}", &name))
                .await
                .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_mariadb_names_stay_in_their_folders() {
    let my = My::from_env();
    let mut conn = my.connect(None).await;
    let tables = my_tables();
    let schemas: BTreeSet<&str> = tables.iter().map(|t| t.schema.as_str()).collect();
    for s in &schemas {
        conn.query_drop(format!("DROP DATABASE IF EXISTS {}", my_quote(s)))
            .await
            .unwrap();
        conn.query_drop(format!("CREATE DATABASE {}", my_quote(s)))
            .await
            .unwrap();
    }
    my_exec(
        &mut conn,
        &tables,
        "CREATE TABLE {t} (id int PRIMARY KEY, v varchar(40) NOT NULL);
         INSERT INTO {t} VALUES (1, 'v1'), (2, 'v2'), (3, 'v3')",
    )
    .await;
    let dir = TestDir::new();
    let lake = dir.lake();
    let sentinels = plant_sentinels(dir.path(), &lake, "raw");
    // Each database by name; a part with a `.` in double quotes.
    let include: Vec<String> = schemas
        .iter()
        .map(|s| {
            let part = if s.contains('.') {
                format!("\"{s}\"")
            } else {
                s.to_string()
            };
            format!("{part}.%")
        })
        .collect();
    let history = &tables[0];
    let ws = dir.write_workspace(&workspace(
        &my.endpoint_toml("shop", "a"),
        &local_target_toml("lake", &lake),
        &[("hostile_my", "lake", "raw")],
        &include,
        history,
    ));
    let state = lake.join("raw/_tributary/hostile_my/state.json");
    let check = |source: &BTreeMap<TableId, TableRows>| {
        assert_raw_equals(&lake.join("raw"), &state, &tables, source);
        assert_sentinels(&sentinels);
        assert_only_expected_files(dir.path(), "lake", "raw", &tables, &sentinels, None);
    };

    run_ok(&ws, "hostile_my", &[]);
    my_exec(
        &mut conn,
        &tables,
        "INSERT INTO {t} VALUES (4, 'four'); UPDATE {t} SET v = 'one' WHERE id = 1;
         DELETE FROM {t} WHERE id = 2",
    )
    .await;
    // TRUNCATE of `a b` empties `a b`, never `a`.
    conn.query_drop("TRUNCATE TABLE `_x`.`a b`").await.unwrap();
    conn.query_drop("INSERT INTO `_x`.`a b` VALUES (5, 'five')")
        .await
        .unwrap();
    run_ok(&ws, "hostile_my", &[]);
    let source = my_rows(&mut conn, &tables).await;
    assert_eq!(
        source[&TableId::new("_x", "a")].len(),
        3,
        "`a` keeps its rows"
    );
    check(&source);

    for t in [&tables[0], &tables[1], &tables[2]] {
        my_exec(
            &mut conn,
            std::slice::from_ref(t),
            "UPDATE {t} SET v = 'three' WHERE id = 3",
        )
        .await;
        run_ok(&ws, "hostile_my", &["--reload-table", &t.id().to_string()]);
    }
    run_ok(&ws, "hostile_my", &["--reload"]);
    my_exec(&mut conn, &tables, "INSERT INTO {t} VALUES (6, 'six')").await;
    run_ok(&ws, "hostile_my", &[]);
    check(&my_rows(&mut conn, &tables).await);

    let crawled = assert_success(&tributary(&["catalog", &ws, "--target", "lake"]));
    assert_crawled(&crawled, &tables);
    let curated = assert_success(&tributary(&["curate", &ws]));
    assert!(!curated.contains("skipped"), "{curated}");
    my_exec(
        &mut conn,
        &tables,
        "UPDATE {t} SET v = 'merged' WHERE id = 1; DELETE FROM {t} WHERE id = 3",
    )
    .await;
    conn.query_drop("TRUNCATE TABLE `_x`.`a b`").await.unwrap();
    run_ok(&ws, "hostile_my", &[]);
    assert_success(&tributary(&["curate", &ws]));
    let source = my_rows(&mut conn, &tables).await;
    assert!(source[&TableId::new("_x", "a b")].is_empty());
    assert_curated_equals(dir.path(), &tables, &source, history, None);
    check(&source);
    for s in &schemas {
        conn.query_drop(format!("DROP DATABASE IF EXISTS {}", my_quote(s)))
            .await
            .unwrap();
    }
}
