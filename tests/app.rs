//! The desktop app, driven with egui_kittest: widgets found by label, clicked, and the
//! resulting state asserted. Background work (checks, loads, reads) really runs, on a tokio
//! runtime, against the real PostgreSQL of scripts/test.

#[path = "common/app.rs"]
mod app_harness;
mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use app_harness::*;
use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use common::*;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use sqlx::Executor;
use tributary::config::Workspace;
use tributary::task::{CdcStats, LogLevel, TableState, TableStats, TaskEvent};
use tributary::ui::{Tab, TributaryApp};

/// Opens the lake browser on target `target`.
fn open_lake(harness: &mut Harness<'_, TributaryApp>, target: &str) {
    harness.state_mut().set_tab(Tab::Lake);
    harness.run_steps(2);
    harness.get_by_role(egui::accesskit::Role::ComboBox).click();
    harness.run_steps(2);
    harness.get_by_label(target).click();
}

/// The app reads passwords from the environment as a user's would: PGPASSWORD, which
/// scripts/test exports.
fn fixture_workspace(pg: &Pg, dir: &TestDir, db: &str) -> (PathBuf, Workspace) {
    let text = format!(
        "{}[[endpoints]]\nname = \"broken\"\nengine = \"postgres\"\nhost = \"127.0.0.1\"\nport = 1\n\
         user = \"postgres\"\n\n{}[[tasks]]\nname = \"load\"\nsource = \"shop\"\ntarget = \"lake\"\n\
         [tasks.target_settings]\ndata_format = \"parquet\"\n",
        pg.endpoint_toml_with("shop", db, "PGPASSWORD"),
        local_target_toml("lake", &dir.lake())
    );
    let path = PathBuf::from(dir.write_workspace(&text));
    (path.clone(), Workspace::load(&path).unwrap())
}

#[test]
fn endpoints_screen_tests_connections_in_green_and_red() {
    let pg = Pg::from_env();
    let dir = fixed_dir("endpoints");
    let rt = runtime();
    rt.block_on(async {
        let mut conn = pg.fresh_database("trib_app_endpoints").await;
        conn.execute("CREATE TABLE customers (id int PRIMARY KEY); CREATE TABLE orders (id int PRIMARY KEY);")
            .await
            .unwrap();
    });
    let (path, workspace) = fixture_workspace(&pg, &dir, "trib_app_endpoints");
    let mut h = harness(&rt, path, workspace);
    h.state_mut().set_tab(Tab::Endpoints);
    h.run_steps(4);
    h.get_by_label("shop  (postgres, source)").click();
    h.run_steps(4);
    h.get_by_label("Test connection").click();
    wait_for(&mut h, "PASS connect", Duration::from_secs(20));
    assert!(h.query_by_label_contains("PASS wal_level").is_some());

    h.get_by_label("broken  (postgres, source)").click();
    h.run_steps(4);
    h.get_by_label("Test connection").click();
    wait_for(&mut h, "FAIL connect", Duration::from_secs(20));
    assert!(
        h.query_by_label_contains("cannot reach 127.0.0.1:1")
            .is_some()
    );
    h.snapshot("endpoints");
    screenshot(&mut h, "endpoints");
    h.state_mut().set_tab(Tab::Tasks);
    h.run_steps(2);
    h.get_by_label("load").click();
    wait_for(&mut h, "tables selected", Duration::from_secs(20));
    screenshot(&mut h, "tasks");
    // A CDC task's own settings: what a schema change does, among them.
    assert!(h.query_by_label("Change capture settings").is_none());
    h.get_by_label("full load + CDC").click();
    h.run_steps(2);
    h.get_by_label("Change capture settings").click();
    h.run_steps(2);
    h.get_by_label("stop").click();
    h.run_steps(2);
    let task = &h.state().doc().workspace.tasks[0];
    assert_eq!(
        task.cdc_settings.schema_change_policy,
        tributary::config::SchemaChangePolicy::Stop
    );
    screenshot(&mut h, "tasks-cdc");
}

/// The endpoint form takes the password from an AWS Secrets Manager secret, named and never
/// fetched or shown; the host and user may then come from the secret.
#[test]
fn an_endpoint_takes_its_password_from_a_secrets_manager_secret() {
    let pg = Pg::from_env();
    let dir = fixed_dir("endpoints-secret");
    let rt = runtime();
    let (path, workspace) = fixture_workspace(&pg, &dir, "trib_app_secret");
    let mut h = harness(&rt, path, workspace);
    h.state_mut().set_tab(Tab::Endpoints);
    h.run_steps(4);
    h.get_by_label("broken  (postgres, source)").click();
    h.run_steps(4);
    h.get_by_label("AWS Secrets Manager").click();
    h.run_steps(4);
    assert!(h.query_by_label("the secret's name or ARN").is_some());
    let secret = h.get_by_role_and_label(egui::accesskit::Role::TextInput, "Secret");
    secret.focus();
    secret.type_text("prod/shop");
    h.run_steps(4);
    assert!(h.query_by_label("the secret's name or ARN").is_none());
    let e = &h.state().doc().workspace.endpoints[1];
    assert_eq!(e.password_secret.as_deref(), Some("prod/shop"));
    assert_eq!(
        (e.password_env.as_deref(), e.password_keyring),
        (None, false)
    );
    screenshot(&mut h, "endpoints-secret");
    // Back to a variable: the secret is forgotten.
    h.get_by_label("Environment variable").click();
    h.run_steps(4);
    let e = &h.state().doc().workspace.endpoints[1];
    assert_eq!(e.password_secret, None);
    assert_eq!(e.password_env.as_deref(), Some("PGPASSWORD"));
    // TLS: verify-full asks for the root certificate.
    h.get_by_role_and_label(egui::accesskit::Role::ComboBox, "TLS (sslmode)")
        .click();
    h.run_steps(4);
    h.get_by_label("verify-full").click();
    h.run_steps(4);
    assert!(
        h.query_by_label_contains("required: the CA bundle")
            .is_some()
    );
    let root = h.get_by_role_and_label(egui::accesskit::Role::TextInput, "Root certificate");
    root.focus();
    root.type_text("certs/rds-global-bundle.pem");
    h.run_steps(4);
    assert!(
        h.query_by_label_contains("required: the CA bundle")
            .is_none()
    );
    let e = &h.state().doc().workspace.endpoints[1];
    assert_eq!(e.sslmode, Some(tributary::config::SslMode::VerifyFull));
    assert_eq!(
        e.sslrootcert.as_deref(),
        Some("certs/rds-global-bundle.pem")
    );
    screenshot(&mut h, "endpoints-tls");
}

#[test]
fn a_mysql_endpoint_shows_its_binlog_checks_and_loads_from_the_app() {
    let my = My::from_env();
    let dir = fixed_dir("mysql");
    let rt = runtime();
    rt.block_on(async {
        use mysql_async::prelude::Queryable;
        let mut conn = my.fresh_database("tributary_app").await;
        conn.query_drop("CREATE TABLE customers (id int PRIMARY KEY, name varchar(20)); INSERT INTO customers VALUES (1, 'ada'), (2, 'bob')")
            .await
            .unwrap();
    });
    // The password variable is exported by scripts/test, as a user's shell would.
    let text = format!(
        "{}{}[[tasks]]\nname = \"maria-load\"\nsource = \"maria\"\ntarget = \"lake\"\n\
         include = [\"tributary_app.%\"]\n[tasks.target_settings]\ndata_format = \"parquet\"\n",
        my.endpoint_toml("maria", "tributary_app")
            .replace("TEST_MY_PASSWORD", "TRIBUTARY_TEST_MYSQL_PASSWORD"),
        local_target_toml("lake", &dir.lake())
    );
    let path = PathBuf::from(dir.write_workspace(&text));
    let workspace = Workspace::load(&path).unwrap();
    let mut h = harness(&rt, path, workspace);
    h.state_mut().set_tab(Tab::Endpoints);
    h.run_steps(4);
    h.get_by_label("maria  (mysql, source)").click();
    h.run_steps(4);
    h.get_by_label("Test connection").click();
    wait_for(&mut h, "PASS connect", Duration::from_secs(20));
    for check in [
        "PASS binlog_format",
        "PASS binlog_row_image",
        "PASS binlog_row_metadata",
        "PASS REPLICATION SLAVE",
    ] {
        assert!(h.query_by_label_contains(check).is_some(), "no {check}");
    }
    screenshot(&mut h, "endpoints-mysql");

    h.state_mut().set_tab(Tab::Tasks);
    h.run_steps(2);
    h.get_by_label("maria-load").click();
    wait_for(&mut h, "tributary_app.customers", Duration::from_secs(20));
    h.get_by_label("Start / resume").click();
    h.run_steps(2);
    h.state_mut().set_tab(Tab::Monitoring);
    wait_for(&mut h, "Task completed", Duration::from_secs(60));
    assert!(h.query_by_label("tributary_app.customers").is_some());
    assert!(h.query_by_label("Table completed").is_some());
    assert!(
        dir.lake()
            .join("maria/tributary_app/customers/LOAD00000001.parquet")
            .exists()
    );
}

#[test]
fn full_path_add_endpoints_run_a_load_and_see_it_complete() {
    let pg = Pg::from_env();
    let dir = TestDir::new();
    let rt = runtime();
    rt.block_on(async {
        let mut conn = pg.fresh_database("postgres_app").await;
        conn.execute(
            "CREATE TABLE people (id int8 PRIMARY KEY, name text);
             INSERT INTO people SELECT g, 'person ' || g FROM generate_series(1, 5000) g;",
        )
        .await
        .unwrap();
    });
    let path = dir.path().join("workspace.toml");
    let mut h = harness(&rt, path.clone(), Workspace::default());
    h.state_mut().set_tab(Tab::Endpoints);
    h.run_steps(4);

    // A PostgreSQL source: defaults, then the database typed in.
    h.get_by_label("+ PostgreSQL").click();
    h.run_steps(4);
    let database = h.get_by_role_and_label(egui::accesskit::Role::TextInput, "Database");
    database.focus();
    database.type_text("postgres_app");
    h.run_steps(4);
    // A local folder target (relative to the workspace file).
    h.get_by_label("+ Local folder").click();
    h.run_steps(4);
    h.get_by_label("Save").click();
    wait_until_gone(&mut h, "(modified)", Duration::from_secs(10));
    // The user narrows the file's permissions; saving again keeps them.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();

    h.state_mut().set_tab(Tab::Tasks);
    h.run_steps(4);
    h.get_by_label("+ New task").click();
    h.run_steps(4);
    wait_for(&mut h, "public.people", Duration::from_secs(20));
    h.get_by_label("Save").click();
    wait_until_gone(&mut h, "(modified)", Duration::from_secs(10));
    // Saved atomically (a temporary file beside it, renamed): the mode kept, nothing left.
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
    let beside: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(beside.is_empty(), "{beside:?}");
    h.get_by_label("Start / resume").click();
    h.run_steps(2);
    assert!(
        h.state().runs().any_running() || !h.state().runs().runs.is_empty(),
        "not started"
    );
    h.state_mut().set_tab(Tab::Monitoring);
    wait_for(&mut h, "Task completed", Duration::from_secs(60));
    assert!(h.query_by_label("public.people").is_some());
    assert!(h.query_by_label("Table completed").is_some());
    let saved = Workspace::load(&path).unwrap();
    assert_eq!(saved.endpoints.len(), 2);
    let files = files_under(dir.path());
    assert!(
        files
            .iter()
            .any(|f| f.ends_with("postgres1/public/people/LOAD00000001.csv")),
        "{files:?}"
    );
    // Not compared as a snapshot: the log shows the snapshot's LSN, new every run (the
    // fixture test below compares one).
    // One table loaded again on its own.
    h.state_mut().set_tab(Tab::Tasks);
    h.run_steps(4);
    h.get_by_label("Reload public.people").click();
    h.run_steps(4);
    h.state_mut().set_tab(Tab::Monitoring);
    wait_for(&mut h, "reloading public.people", Duration::from_secs(60));
    wait_for(&mut h, "Task completed", Duration::from_secs(60));
    open_lake(&mut h, "local1");
    wait_for(&mut h, "postgres1/", Duration::from_secs(10));
    h.get_by_label("postgres1/").click();
    wait_for(&mut h, "public/", Duration::from_secs(10));
    screenshot(&mut h, "lake");
}

fn fixture_parquet(path: &std::path::Path) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(StringArray::from(vec![Some("alpha"), None, Some("gamma")])),
        ],
    )
    .unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[test]
fn preview_shows_schema_statistics_and_first_rows() {
    let dir = fixed_dir("preview");
    let rt = runtime();
    let file = dir.path().join("fixture.parquet");
    fixture_parquet(&file);
    let mut h = harness(&rt, dir.path().join("w.toml"), Workspace::default());
    h.state_mut().preview_uri(&file.to_string_lossy());
    wait_for(&mut h, "3 rows, 1 row group(s)", Duration::from_secs(10));
    assert!(
        h.query_by_label("Int64").is_some(),
        "schema shows Arrow types"
    );
    // The first rows, read in the background as they come into view.
    wait_for(&mut h, "gamma", Duration::from_secs(10));
    assert!(h.query_by_label("alpha").is_some());
    assert!(
        h.query_all_by_label("NULL").count() == 1,
        "the NULL name shows as NULL"
    );
    h.get_by_label("Row groups and column statistics").click();
    wait_for(&mut h, "encodings", Duration::from_secs(10));
    h.snapshot("preview");
    screenshot(&mut h, "preview");

    // A corrupt file: a readable error in place.
    let bad = dir.path().join("bad.parquet");
    std::fs::write(&bad, b"PAR1 not a parquet file PAR1").unwrap();
    h.state_mut().preview_uri(&bad.to_string_lossy());
    wait_for(&mut h, "Parquet", Duration::from_secs(10));
}

/// A partition of two files whose schemas differ (the second has a column more).
fn fixture_partition(folder: &std::path::Path) {
    std::fs::create_dir_all(folder).unwrap();
    let write = |name: &str, batch: RecordBatch| {
        let file = std::fs::File::create(folder.join(name)).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    };
    let ids = |v: Vec<i64>| Arc::new(Int64Array::from(v)) as arrow_array::ArrayRef;
    let texts = |v: Vec<&str>| Arc::new(StringArray::from(v)) as arrow_array::ArrayRef;
    write(
        "LOAD00000001.parquet",
        RecordBatch::try_from_iter([
            ("id", ids(vec![1, 2])),
            ("city", texts(vec!["Lyon", "Oslo"])),
        ])
        .unwrap(),
    );
    write(
        "20240101-000000000.parquet",
        RecordBatch::try_from_iter([
            ("Op", texts(vec!["I", "U"])),
            ("id", ids(vec![3, 1])),
            ("city", texts(vec!["Lima", "Lyon-Est"])),
        ])
        .unwrap(),
    );
}

#[test]
fn a_folder_previews_as_one_table_with_a_column_filter() {
    let dir = fixed_dir("folder");
    let rt = runtime();
    fixture_partition(&dir.lake().join("raw/shop/public/cities"));
    let text = local_target_toml("lake", &dir.lake());
    let path = PathBuf::from(dir.write_workspace(&text));
    let workspace = Workspace::load(&path).unwrap();
    let mut h = harness(&rt, path, workspace);
    open_lake(&mut h, "lake");
    wait_for(&mut h, "raw/", Duration::from_secs(10));
    h.get_by_label("raw/").click();
    wait_for(&mut h, "shop/", Duration::from_secs(10));
    h.get_by_label("Preview as one table").click();
    wait_for(&mut h, "4 rows in 2 file(s)", Duration::from_secs(10));
    // The merged schema: Op is in one file of two; its rows show NULL in the other.
    assert!(h.query_by_label("1 of 2").is_some(), "Op is in one file");
    wait_for(&mut h, "Lima", Duration::from_secs(10));
    assert_eq!(h.query_all_by_label("NULL").count(), 2, "no Op in the load");

    // A filter on a column: scanned in the background, matches as they come.
    h.get_by_role(egui::accesskit::Role::ComboBox).click();
    h.run_steps(2);
    h.get_by_role_and_label(egui::accesskit::Role::Button, "city")
        .click();
    h.run_steps(1);
    let needle = h.get_by_role_and_label(egui::accesskit::Role::TextInput, "contains");
    needle.focus();
    needle.type_text("lyon");
    h.run_steps(1);
    h.get_by_label("Apply").click();
    wait_for(&mut h, "2 matching row(s)", Duration::from_secs(10));
    assert!(h.query_by_label("Lyon-Est").is_some());
    assert!(h.query_by_label("Lima").is_none(), "filtered out");
    screenshot(&mut h, "folder");
    h.get_by_label("Clear filter").click();
    wait_for(&mut h, "Lima", Duration::from_secs(10));
}

#[test]
fn a_workspace_that_does_not_parse_shows_an_error() {
    let dir = TestDir::new();
    let rt = runtime();
    let path = PathBuf::from(dir.write_workspace("[[endpoints]]\nname = 3\n"));
    let handle = rt.handle().clone();
    let mut h = Harness::builder()
        .with_size(egui::vec2(1000.0, 600.0))
        .build_eframe(move |cc| TributaryApp::new(&cc.egui_ctx, handle, None, Some(path)));
    wait_for(&mut h, "invalid workspace file", Duration::from_secs(10));
}

#[test]
fn without_a_display_the_app_points_to_the_cli() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("no display") && err.contains("tributary run"),
        "{err}"
    );
}

/// Benchmark (not run by default): frame time of the app while a task loads pgbench's 5M
/// rows (`scripts/bench` creates the database). Each frame is one harness step: the app's
/// logic, layout and tessellation, as the window would run them.
/// `cargo test --release --test app -- --ignored --nocapture frame_time`
#[test]
#[ignore]
fn frame_time_while_loading_5m_rows() {
    let pg = Pg::from_env();
    let dir = TestDir::new();
    let rt = runtime();
    let text = format!(
        "{}{}[[tasks]]\nname = \"bench\"\nsource = \"shop\"\ntarget = \"lake\"\n\
         include = [\"public.pgbench_accounts\"]\n\
         [tasks.target_settings]\ndata_format = \"parquet\"\n",
        pg.endpoint_toml_with("shop", "tributary_bench", "PGPASSWORD"),
        local_target_toml("lake", &dir.lake())
    );
    let path = PathBuf::from(dir.write_workspace(&text));
    let workspace = Workspace::load(&path).unwrap();
    let mut h = harness(&rt, path, workspace);
    h.state_mut().set_tab(Tab::Tasks);
    h.run_steps(2);
    h.get_by_label("bench").click();
    h.run_steps(2);
    h.get_by_label("Start / resume").click();
    h.run_steps(1);
    h.state_mut().set_tab(Tab::Monitoring);
    let mut frames = Vec::new();
    let started = Instant::now();
    while h.query_by_label_contains("Task completed").is_none() {
        let t = Instant::now();
        h.step();
        frames.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the load did not finish"
        );
        // About 60 frames a second, as a window would draw them.
        std::thread::sleep(Duration::from_millis(16).saturating_sub(t.elapsed()));
    }
    frames.sort_by(f64::total_cmp);
    let pct = |p: f64| frames[((frames.len() - 1) as f64 * p) as usize];
    println!(
        "frames while loading 5M rows: {} over {:.1} s; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        frames.len(),
        started.elapsed().as_secs_f64(),
        pct(0.5),
        pct(0.99),
        frames.last().copied().unwrap_or(0.0)
    );
    assert!(pct(0.99) < 16.0, "p99 frame time over 16 ms");
}

#[test]
fn lake_browser_shows_access_denied_in_place() {
    let deny = std::env::var("TRIBUTARY_TEST_S3_DENY_ENDPOINT")
        .expect("TRIBUTARY_TEST_S3_DENY_ENDPOINT: run the tests through scripts/test");
    let dir = TestDir::new();
    let rt = runtime();
    let path = PathBuf::from(dir.write_workspace(&s3_target_toml("lake", "somebody-elses", &deny)));
    let workspace = Workspace::load(&path).unwrap();
    let mut h = harness(&rt, path, workspace);
    open_lake(&mut h, "lake");
    wait_for(&mut h, "access denied", Duration::from_secs(20));
}

/// A full load + CDC run as its events told it, at fixed times: the same screen every run.
fn monitoring_fixture() -> Vec<(f64, TaskEvent)> {
    let table = |name: &str, estimated: u64| TableStats::new("public", name, estimated);
    let mut events = vec![(
        0.0,
        TaskEvent::Planned {
            tables: vec![
                table("customers", 50_000),
                table("orders", 400_000),
                table("audit", 10),
            ],
        },
    )];
    let log = |level, message: &str| TaskEvent::Log {
        level,
        message: message.into(),
    };
    events.push((
        0.0,
        log(
            LogLevel::Info,
            "created replication slot tributary_shop at 0/3A2F1C8",
        ),
    ));
    for second in 1..=20u64 {
        let mut customers = table("customers", 50_000);
        customers.full_load_rows = (second * 5_000).min(50_000);
        customers.state = if customers.full_load_rows == 50_000 {
            TableState::TableCompleted
        } else {
            TableState::FullLoad
        };
        let mut orders = table("orders", 400_000);
        orders.full_load_rows = second * 9_000;
        orders.state = TableState::FullLoad;
        events.push((second as f64, TaskEvent::Table(customers)));
        events.push((second as f64, TaskEvent::Table(orders)));
    }
    let mut audit = table("audit", 10);
    audit.state = TableState::TableError;
    audit.last_error = Some("column 'payload' is not valid UTF-8".into());
    events.push((12.0, TaskEvent::Table(audit)));
    events.push((
        12.0,
        log(
            LogLevel::Warn,
            "table public.audit has no primary key: it is loaded, but CDC needs a replica identity",
        ),
    ));
    events.push((
        12.0,
        log(
            LogLevel::Error,
            "public.audit: column 'payload' is not valid UTF-8",
        ),
    ));
    for second in 10..=20u64 {
        let mut customers = table("customers", 50_000);
        customers.full_load_rows = 50_000;
        customers.state = TableState::TableCompleted;
        customers.inserts = second * 40;
        customers.updates = second * 95;
        customers.deletes = second * 3;
        customers.ddls = u64::from(second >= 15);
        events.push((second as f64, TaskEvent::Table(customers)));
        events.push((
            second as f64,
            TaskEvent::Cdc(CdcStats {
                confirmed_position: "0/3B90A10".into(),
                latency_ms: 600 + (second % 4) * 150,
                changes_per_second: 130.0,
                slot_lag_bytes: ((20 - second) * 700_000) as i64,
                batches: second - 9,
            }),
        ));
    }
    events
}

#[test]
fn monitoring_shows_statistics_plots_and_the_log_from_events() {
    let rt = runtime();
    let dir = fixed_dir("monitoring");
    let mut h = harness(&rt, dir.path().join("workspace.toml"), Workspace::default());
    h.state_mut()
        .runs_mut()
        .replay("shop-to-lake", monitoring_fixture(), None);
    h.state_mut().set_tab(Tab::Monitoring);
    h.run_steps(4);
    assert!(h.query_by_label("shop-to-lake (running)").is_some());
    assert!(h.query_by_label("Stop").is_some());
    assert!(h.query_by_label("public.customers").is_some());
    assert!(h.query_by_label("Table completed").is_some());
    assert!(h.query_by_label("Full load").is_some());
    // The failed table shows its state and error in the grid, and the error in the log.
    assert!(h.query_by_label("Table error").is_some());
    assert_eq!(
        h.query_all_by_label("column 'payload' is not valid UTF-8")
            .count(),
        1
    );
    assert!(
        h.query_by_label("public.audit: column 'payload' is not valid UTF-8")
            .is_some()
    );
    assert!(h.query_by_label_contains("confirmed 0/3B90A10").is_some());
    assert!(h.query_by_label("800").is_some(), "customers' inserts");
    h.snapshot("monitoring");
    screenshot(&mut h, "monitoring");
}

#[test]
fn the_lake_browser_lists_the_catalog_tables_a_crawl_finds() {
    let pg = Pg::from_env();
    let dir = fixed_dir("catalog");
    let rt = runtime();
    fixture_partition(&dir.lake().join("raw/shop/public/cities"));
    fixture_partition(
        &dir.lake()
            .join("raw/shop/public/towns/year=2024/month=01/day=01"),
    );
    // The task says where its raw zone is: `raw`.
    let text = format!(
        "{}{}[[tasks]]\nname = \"load\"\nsource = \"shop\"\ntarget = \"lake\"\n\
         [tasks.target_settings]\nbucket_folder = \"raw\"\n",
        pg.endpoint_toml("shop", "postgres"),
        local_target_toml("lake", &dir.lake())
    );
    let path = PathBuf::from(dir.write_workspace(&text));
    let mut h = harness(&rt, path.clone(), Workspace::load(&path).unwrap());
    open_lake(&mut h, "lake");
    wait_for(&mut h, "raw: not crawled yet", Duration::from_secs(10));
    // The panel settles its width over a few frames; a click before would miss.
    h.run_steps(4);
    h.get_by_label("Crawl").click();
    wait_for(
        &mut h,
        "raw: 2 new table(s), 4 file(s) added, 1 new partition(s)",
        Duration::from_secs(20),
    );
    h.get_by_label("shop.public.towns").click();
    h.run_steps(4);
    assert!(
        h.query_by_label_contains("parquet, 2 file(s), 4 row(s)")
            .is_some()
    );
    assert!(
        h.query_by_label("city  Utf8").is_some(),
        "the merged schema"
    );
    assert!(
        h.query_by_label("Op  Utf8").is_some(),
        "a column of one file of two"
    );
    assert!(
        h.query_by_label_contains("year=2024/month=01/day=01: 2 file(s), 4 row(s)")
            .is_some()
    );
    screenshot(&mut h, "catalog");
    // A table opens in the browser.
    h.get_by_label("open raw/shop/public/towns/").click();
    wait_for(&mut h, "year=2024/", Duration::from_secs(10));
    // A second crawl finds nothing new, and says so.
    h.get_by_label("Crawl").click();
    wait_for(
        &mut h,
        "raw: 0 new table(s), 0 file(s) added",
        Duration::from_secs(20),
    );
}

/// The query tab: *Curate* makes the curated tables, *Run models* runs a model with its
/// checks, a table of the list is queried into the virtual table; the lake browser's
/// catalog lists the curated tables beside the raw ones.
#[test]
fn the_query_tab_curates_runs_models_and_queries_the_lake() {
    let pg = Pg::from_env();
    let dir = fixed_dir("query");
    let rt = runtime();
    rt.block_on(async {
        let mut conn = pg.fresh_database("trib_app_query").await;
        conn.execute(
            "CREATE TABLE customers (id int8 PRIMARY KEY, name text, country text);
             INSERT INTO customers SELECT g, 'customer ' || g,
               (ARRAY['FR', 'DE', 'US', '??'])[g % 4 + 1] FROM generate_series(1, 30) g;",
        )
        .await
        .unwrap();
    });
    let text = format!(
        "{}{}[[tasks]]\nname = \"load\"\nsource = \"shop\"\ntarget = \"lake\"\n\
         [tasks.target_settings]\nbucket_folder = \"raw\"\ndata_format = \"parquet\"\n\n\
         [[models]]\nname = \"by_country\"\n\
         sql = \"SELECT country, count(*) AS customers FROM shop.public.customers GROUP BY country\"\n\
         checks = [{{ check = \"accepted_values\", columns = [\"country\"], values = [\"FR\", \"DE\", \"US\"], on_fail = \"quarantine\" }}]\n",
        pg.endpoint_toml_with("shop", "trib_app_query", "PGPASSWORD"),
        local_target_toml("lake", &dir.lake())
    );
    let path = PathBuf::from(dir.write_workspace(&text));
    assert_success(&tributary(&[
        "run",
        path.to_str().unwrap(),
        "--task",
        "load",
    ]));
    let mut h = harness(&rt, path.clone(), Workspace::load(&path).unwrap());
    h.get_by_label("Query").click();
    h.run_steps(2);
    h.get_by_label("Curate").click();
    wait_for(
        &mut h,
        "curated 1 table(s), 0 failed",
        Duration::from_secs(60),
    );
    assert!(
        h.query_by_label_contains("shop.public.customers: created from 1 raw file(s): 30 rows")
            .is_some()
    );
    h.get_by_label("Run models").click();
    wait_for(&mut h, "ran 1 model(s), 0 failed", Duration::from_secs(60));
    assert!(
        h.query_by_label_contains("analytics.by_country: 3 rows, 1 quarantined")
            .is_some()
    );
    assert!(
        h.query_by_label_contains("QUARANTINED accepted_values(country in FR | DE | US): 1 row(s)")
            .is_some()
    );
    // The list of tables: curated, raw and the model's, each a query away.
    wait_for(&mut h, "lake.analytics.by_country", Duration::from_secs(30));
    assert!(h.query_by_label("shop_raw.public.customers").is_some());
    h.get_by_label("shop.public.customers").click();
    wait_for(&mut h, "30 rows in", Duration::from_secs(30));
    assert!(
        h.query_by_label("customer 7").is_some(),
        "a row in the table"
    );
    screenshot(&mut h, "query");

    // The lake browser's catalog: the curated tables beside the raw zone's.
    open_lake(&mut h, "lake");
    wait_for(&mut h, "Curated tables (Iceberg)", Duration::from_secs(20));
    h.run_steps(4);
    h.get_by_label("analytics.by_country").click();
    h.run_steps(4);
    assert!(
        h.query_by_label_contains("3 rows, 1 data file(s)")
            .is_some()
    );
    // Its query link opens it in the query tab.
    h.get_by_label("query analytics.by_country").click();
    wait_for(&mut h, "3 rows in", Duration::from_secs(30));
}

/// Validate on a task: the source compared with the lake in the background, each table's
/// verdict and counts shown as they come, and what differs named below.
#[test]
fn validate_on_a_task_shows_each_tables_result() {
    let pg = Pg::from_env();
    let dir = fixed_dir("validate");
    let rt = runtime();
    let mut conn = rt.block_on(async {
        let mut conn = pg.fresh_database("trib_app_validate").await;
        conn.execute(
            "CREATE TABLE customers (id int8 PRIMARY KEY, name text);
             INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 40) g;
             CREATE TABLE notes (id int8 PRIMARY KEY, body text);
             INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 5) g;",
        )
        .await
        .unwrap();
        conn
    });
    let text = format!(
        "{}{}[[tasks]]\nname = \"load\"\nsource = \"shop\"\ntarget = \"lake\"\n\
         [tasks.target_settings]\nbucket_folder = \"raw\"\ndata_format = \"parquet\"\n",
        pg.endpoint_toml_with("shop", "trib_app_validate", "PGPASSWORD"),
        local_target_toml("lake", &dir.lake())
    );
    let path = PathBuf::from(dir.write_workspace(&text));
    assert_success(&tributary(&[
        "run",
        path.to_str().unwrap(),
        "--task",
        "load",
    ]));
    // The source moves on after the load: a full-load task's lake is its load.
    rt.block_on(conn.execute("UPDATE notes SET body = 'edited' WHERE id = 2"))
        .unwrap();
    let mut h = harness(&rt, path.clone(), Workspace::load(&path).unwrap());
    h.state_mut().set_tab(Tab::Tasks);
    h.run_steps(4);
    h.get_by_label("load").click();
    h.run_steps(4);
    h.get_by_label("Validate").click();
    wait_for(&mut h, "validated at", Duration::from_secs(60));
    assert!(h.query_by_label("40 rows equal").is_some());
    assert!(
        h.query_by_label_contains("1 equal, 1 not").is_some(),
        "the summary counts the table that differs"
    );
    h.get_by_label("What differs in public.notes").click();
    h.run_steps(4);
    assert!(
        h.query_by_label("different id=2: body: edited → note 2")
            .is_some()
    );
    screenshot(&mut h, "validate");
}
