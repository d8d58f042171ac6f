//! Helpers shared by the integration tests: the real services `scripts/test` points at
//! (PostgreSQL, moto), throw-away databases and lakes, and the `tributary` binary.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod rebuild;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow_array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sqlx::{Connection, PgConnection};

/// The PostgreSQL the tests use, from `TRIBUTARY_TEST_PG_URL` (set by `scripts/test`).
pub struct Pg {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
}

pub fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through scripts/test, which starts the services")
    })
}

impl Pg {
    pub fn from_env() -> Pg {
        Pg::from_url_env("TRIBUTARY_TEST_PG_URL")
    }

    /// A server whose URL is in the environment variable `var`.
    pub fn from_url_env(var: &str) -> Pg {
        let url = required_env(var);
        // postgres://user:password@host:port/db
        let rest = url.split_once("://").expect("URL with a scheme").1;
        let (auth, host_part) = rest.rsplit_once('@').expect("URL with user@host");
        let (user, password) = auth.split_once(':').unwrap_or((auth, ""));
        let host_port = host_part.split('/').next().unwrap_or(host_part);
        let (host, port) = host_port.split_once(':').unwrap_or((host_port, "5432"));
        Pg {
            host: host.into(),
            port: port.parse().expect("numeric port"),
            user: user.into(),
            password: password.into(),
        }
    }

    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{}:{}@{}:{}/{database}",
            self.user, self.password, self.host, self.port
        )
    }

    /// A new empty database (dropped first if a previous run left it).
    pub async fn fresh_database(&self, name: &str) -> PgConnection {
        let mut admin = PgConnection::connect(&self.url("postgres")).await.unwrap();
        // A replication slot of an earlier run would keep the database from being dropped.
        sqlx::query(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1",
        )
        .bind(name)
        .execute(&mut admin)
        .await
        .unwrap();
        // Two statements: DROP/CREATE DATABASE cannot share an (implicit) transaction.
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut admin)
                .await
                .unwrap();
        }
        PgConnection::connect(&self.url(name)).await.unwrap()
    }

    /// A source endpoint block for a workspace file; the password comes from
    /// `TEST_PG_PASSWORD`, which [`tributary`] sets.
    pub fn endpoint_toml(&self, name: &str, database: &str) -> String {
        self.endpoint_toml_with(name, database, "TEST_PG_PASSWORD")
    }

    /// The same, with the password in the environment variable `password_env`.
    pub fn endpoint_toml_with(&self, name: &str, database: &str, password_env: &str) -> String {
        format!(
            "[[endpoints]]\nname = \"{name}\"\nengine = \"postgres\"\nhost = \"{}\"\nport = {}\n\
             database = \"{database}\"\nuser = \"{}\"\npassword_env = \"{password_env}\"\n\n",
            self.host, self.port, self.user
        )
    }
}

pub fn s3_endpoint() -> String {
    required_env("TRIBUTARY_TEST_S3_ENDPOINT")
}

/// An S3 client for the test S3 server, to create buckets and look at objects.
pub async fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_sdk_s3::Config::builder()
        .http_client(http)
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// The whole content of an object.
pub async fn get_object(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> bytes::Bytes {
    client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes()
}

/// A bucket that exists and is empty.
pub async fn fresh_bucket(name: &str) {
    let client = s3_client(&s3_endpoint()).await;
    if let Ok(list) = client.list_objects_v2().bucket(name).send().await {
        for o in list.contents() {
            client
                .delete_object()
                .bucket(name)
                .key(o.key().unwrap_or_default())
                .send()
                .await
                .unwrap();
        }
    } else {
        client.create_bucket().bucket(name).send().await.unwrap();
    }
}

/// Runs the `tributary` binary with the test credentials in its environment.
pub fn tributary(args: &[&str]) -> Output {
    tributary_command(args).output().expect("run tributary")
}

pub fn tributary_command(args: &[&str]) -> Command {
    let pg = Pg::from_env();
    let mut command = Command::new(env!("CARGO_BIN_EXE_tributary"));
    command
        .args(args)
        .env("TEST_PG_PASSWORD", &pg.password)
        .env("TEST_MY_PASSWORD", My::from_env().password)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE");
    command
}

/// `tributary` started in the background, its output discarded (for runs a test kills).
pub fn spawn_quiet(args: &[&str]) -> std::process::Child {
    tributary_command(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Asserts success and returns stdout + stderr for further checks.
#[track_caller]
pub fn assert_success(output: &Output) -> String {
    let text = format!("{}{}", stdout(output), stderr(output));
    assert!(output.status.success(), "tributary failed:\n{text}");
    text
}

/// Asserts failure with exit code `code` and returns stderr.
#[track_caller]
pub fn assert_failure(output: &Output, code: i32) -> String {
    let text = stderr(output);
    assert_eq!(
        output.status.code(),
        Some(code),
        "expected exit {code}:\n{}{text}",
        stdout(output)
    );
    text
}

/// A folder for one test, with a workspace file in it; the lake goes in `lake/`.
pub struct TestDir {
    root: PathBuf,
    /// Removes the folder at the end, unless it is a fixed one.
    _temp: Option<tempfile::TempDir>,
}

impl TestDir {
    pub fn new() -> TestDir {
        let temp = tempfile::tempdir().unwrap();
        TestDir {
            root: temp.path().to_owned(),
            _temp: Some(temp),
        }
    }

    /// A folder at a fixed place, emptied first and kept afterwards (to look at).
    pub fn at(root: PathBuf) -> TestDir {
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        TestDir { root, _temp: None }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn lake(&self) -> PathBuf {
        self.root.join("lake")
    }

    pub fn write_workspace(&self, toml: &str) -> String {
        let path = self.root.join("workspace.toml");
        std::fs::write(&path, toml).unwrap();
        path.to_string_lossy().into_owned()
    }
}

/// A local target endpoint block.
pub fn local_target_toml(name: &str, path: &Path) -> String {
    format!(
        "[[endpoints]]\nname = \"{name}\"\nengine = \"local\"\npath = \"{}\"\n\n",
        path.display()
    )
}

/// An S3 target endpoint block on an S3-compatible server.
pub fn s3_target_toml(name: &str, bucket: &str, endpoint_url: &str) -> String {
    format!(
        "[[endpoints]]\nname = \"{name}\"\nengine = \"s3\"\nbucket = \"{bucket}\"\n\
         endpoint_url = \"{endpoint_url}\"\nforce_path_style = true\nregion = \"us-east-1\"\n\n"
    )
}

/// The files of a folder and below, sorted, relative to it.
pub fn files_under(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Every batch of a Parquet file.
pub fn read_parquet(data: bytes::Bytes) -> Vec<RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new(data)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

pub fn read_parquet_file(path: &Path) -> Vec<RecordBatch> {
    read_parquet(bytes::Bytes::from(std::fs::read(path).unwrap()))
}

/// The MySQL/MariaDB the tests use, from `TRIBUTARY_TEST_MYSQL_URL` (set by `scripts/test`).
/// Its user has every privilege: tests create databases of any name.
pub struct My {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    /// The server accepts only TLS (`TRIBUTARY_TEST_MYSQL_TLS_URL`): the tests' own
    /// connections use it, unverified.
    pub tls: bool,
}

impl My {
    pub fn from_env() -> My {
        My::from_url_env("TRIBUTARY_TEST_MYSQL_URL")
    }

    /// A server whose URL is in the environment variable `var`.
    pub fn from_url_env(var: &str) -> My {
        let url = required_env(var);
        // mysql://user:password@host:port
        let rest = url.split_once("://").expect("URL with a scheme").1;
        let (auth, host_part) = rest.rsplit_once('@').expect("URL with user@host");
        let (user, password) = auth.split_once(':').unwrap_or((auth, ""));
        let host_port = host_part.split('/').next().unwrap_or(host_part);
        let (host, port) = host_port.split_once(':').unwrap_or((host_port, "3306"));
        My {
            host: host.into(),
            port: port.parse().expect("numeric port"),
            user: user.into(),
            password: password.into(),
            tls: var.contains("TLS"),
        }
    }

    pub async fn connect(&self, database: Option<&str>) -> mysql_async::Conn {
        let ssl = self.tls.then(|| {
            mysql_async::SslOpts::default()
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true)
        });
        let opts = mysql_async::OptsBuilder::default()
            .ssl_opts(ssl)
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .prefer_socket(false)
            .user(Some(self.user.clone()))
            .pass(Some(self.password.clone()))
            .db_name(database.map(str::to_owned));
        mysql_async::Conn::new(opts).await.unwrap()
    }

    /// A new empty database (dropped first if a previous run left it).
    pub async fn fresh_database(&self, name: &str) -> mysql_async::Conn {
        use mysql_async::prelude::Queryable;
        let mut admin = self.connect(None).await;
        admin
            .query_drop(format!("DROP DATABASE IF EXISTS `{name}`"))
            .await
            .unwrap();
        admin
            .query_drop(format!("CREATE DATABASE `{name}`"))
            .await
            .unwrap();
        self.connect(Some(name)).await
    }

    /// A source endpoint block; the password comes from `TEST_MY_PASSWORD`, which
    /// [`tributary`] sets.
    pub fn endpoint_toml(&self, name: &str, database: &str) -> String {
        self.endpoint_toml_as(name, database, &self.user)
    }

    /// The same, as another user with the same password.
    pub fn endpoint_toml_as(&self, name: &str, database: &str, user: &str) -> String {
        format!(
            "[[endpoints]]\nname = \"{name}\"\nengine = \"mysql\"\nhost = \"{}\"\nport = {}\n\
             database = \"{database}\"\nuser = \"{user}\"\npassword_env = \"TEST_MY_PASSWORD\"\n\n",
            self.host, self.port
        )
    }
}

/// `tributary run WS --task TASK --until-caught-up`, killed (and failed) after 2 minutes:
/// a catch-up that never ends is a bug to report, not a test run to wait for.
pub fn run_until_caught_up(ws: &str, task: &str) -> Output {
    run_until_caught_up_watched(
        ws,
        task,
        std::time::Duration::from_secs(120),
        std::time::Duration::from_millis(50),
        |_| {},
    )
}

/// The same, killed (and failed) after `limit`, calling `watch` with the process id every
/// `every` while it runs (to sample its memory, say).
pub fn run_until_caught_up_watched(
    ws: &str,
    task: &str,
    limit: std::time::Duration,
    every: std::time::Duration,
    mut watch: impl FnMut(u32),
) -> Output {
    let mut child = tributary_command(&["run", ws, "--task", task, "--until-caught-up"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        watch(child.id());
        if started.elapsed() > limit {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!(
                "--until-caught-up did not end within {} s:\n{}",
                limit.as_secs(),
                stderr(&output)
            );
        }
        std::thread::sleep(every);
    }
    child.wait_with_output().unwrap()
}

/// Runs CDC task `task` three times under the caller's load, killing it with SIGKILL at
/// different points (mid-batch, mid-put, between batches), then once more, stopped with
/// SIGINT: that run must flush, checkpoint and exit 0.
pub async fn kill_three_times_then_interrupt(ws: &str, task: &str) {
    use std::time::Duration;
    for round in 0..3u64 {
        let mut child = spawn_quiet(&["run", ws, "--task", task]);
        tokio::time::sleep(Duration::from_millis(1500 + round * 700)).await;
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let child = tributary_command(&["run", ws, "--task", task])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let signal = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(signal.success());
    let output = child.wait_with_output().unwrap();
    let text = assert_success(&output);
    assert!(text.contains("stopped cleanly"), "{text}");
}

/// Runs full-load task `task` once per entry of `kill_after_done`, killing it with SIGKILL
/// as soon as that many ranges of table `table` (`schema.table`) are done in its state file
/// `state_path`. The table must load in at least `min_ranges` ranges and not be finished
/// at a kill.
pub fn kill_load_at(
    ws: &str,
    task: &str,
    state_path: &Path,
    table: &str,
    kill_after_done: &[usize],
    min_ranges: usize,
) {
    use std::time::{Duration, Instant};
    let done_ranges = || -> Option<(usize, usize)> {
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(state_path).ok()?).ok()?;
        let ranges = state["tables"][table]["ranges"].as_array()?.clone();
        Some((
            ranges.iter().filter(|r| r["done"] == true).count(),
            ranges.len(),
        ))
    };
    for &kill_after in kill_after_done {
        let mut child = spawn_quiet(&["run", ws, "--task", task]);
        let started = Instant::now();
        loop {
            if let Some((done, total)) = done_ranges() {
                assert!(
                    total >= min_ranges,
                    "expected the table in at least {min_ranges} ranges, got {total}"
                );
                if done >= kill_after {
                    assert!(done < total, "the load finished before the kill");
                    break;
                }
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "run ended before the kill"
            );
            assert!(started.elapsed() < Duration::from_secs(120), "no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
}

/// Runs CDC task `task` with `--reload-table table` and kills it with SIGKILL as soon as its
/// state file `state_path` records the reload, before the reload can finish.
pub fn kill_once_reload_is_recorded(ws: &str, task: &str, table: &str, state_path: &Path) {
    use std::time::{Duration, Instant};
    let mut child = spawn_quiet(&["run", ws, "--task", task, "--reload-table", table]);
    let started = Instant::now();
    while !std::fs::read_to_string(state_path)
        .unwrap_or_default()
        .contains("\"reloading\"")
    {
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no reload recorded"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Reloads `table` of CDC task `task` while `load` commits transactions (it runs until told
/// to stop and returns how many it committed), then catches up once the load has stopped.
pub async fn reload_under_load<F, Fut>(ws: &str, task: &str, table: &str, load: F)
where
    F: FnOnce(tokio::sync::watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = u64> + Send + 'static,
{
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let generator = tokio::spawn(load(stop_rx));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (ws2, task2, table2) = (ws.to_owned(), task.to_owned(), table.to_owned());
    let run = tokio::task::spawn_blocking(move || {
        tributary(&[
            "run",
            &ws2,
            "--task",
            &task2,
            "--reload-table",
            &table2,
            "--until-caught-up",
        ])
    })
    .await
    .unwrap();
    stop_tx.send(true).unwrap();
    let committed = generator.await.unwrap();
    assert_success(&run);
    assert!(
        committed > 10,
        "the load committed only {committed} transactions"
    );
    assert_success(&run_until_caught_up(ws, task));
}

/// What `tests/readers/read_curated.py` reads of `tables` (`source.schema.table`, or a JSON
/// array of an identifier's parts) through the Iceberg catalog `catalog` (a SQLite file or a
/// postgres:// URL), with pyiceberg and DuckDB; the tables' files on the S3 server
/// `s3_endpoint`, if given. One JSON object by table: columns, rows by each reader, snapshots.
pub fn read_curated_json(
    catalog: &str,
    tables: &[&str],
    s3_endpoint: Option<&str>,
) -> serde_json::Value {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/readers/read_curated.py");
    let mut command = Command::new(python);
    command.arg(script).arg(catalog).args(tables);
    if let Some(endpoint) = s3_endpoint {
        command.env("S3_ENDPOINT", endpoint);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "readers failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}
