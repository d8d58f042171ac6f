//! The `tributary` command line: run and check tasks, list and preview lake files, curate
//! and query the lake.
//!
//! Exit codes: 0 success, 1 the work failed (a task, a check, a read), 2 the command or the
//! workspace file is wrong. Every error is printed as one `error:` line saying what is wrong
//! and how to fix it.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use tokio::sync::watch;

use crate::check::CheckStatus;
use crate::config::{Engine, Workspace};
use crate::curate::CurateOptions;
use crate::lake::inspect::{self, ParquetFile};
use crate::lake::{S3Options, Storage};
use crate::source::postgres::PgEndpoint;
use crate::task::{self, LogLevel, RunOptions, TableState, TaskCommand, TaskEvent};

#[derive(Parser)]
#[command(
    name = "tributary",
    version,
    about = "Replicate operational databases into an S3 data lake (full load + CDC)."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Open the desktop app (what `tributary` with no arguments does), optionally on a
    /// workspace file.
    App { workspace: Option<PathBuf> },
    /// Run a task of a workspace file. A full-load task exits when every table is loaded.
    Run {
        workspace: PathBuf,
        #[arg(long)]
        task: String,
        /// Delete the task's previous full-load files and load every table again (with CDC:
        /// recreate the replication slot).
        #[arg(long)]
        reload: bool,
        /// Load this table (schema.table) again, replacing its files; the other tables stay.
        /// In a full load + CDC task, the table is read from a new snapshot and the stream
        /// goes on, passing by its changes that snapshot holds. Repeat for several.
        /// A part holding '.' goes in double quotes: --reload-table '"my.schema".orders'.
        #[arg(long, value_name = "SCHEMA.TABLE", value_parser = crate::ident::TableId::parse)]
        reload_table: Vec<crate::ident::TableId>,
        /// CDC: stop once every change committed before the start is written (for scripts).
        #[arg(long)]
        until_caught_up: bool,
    },
    /// Test endpoints' connections and prerequisites, and say how to fix what is wrong.
    Check {
        workspace: PathBuf,
        /// Only this endpoint (default: all).
        #[arg(long)]
        endpoint: Option<String>,
    },
    /// Benchmark a full-load task beside its database's own export of the same tables (psql's
    /// binary \copy, `mariadb --quick`), reloading the task's tables into its target each
    /// run; or, with --cdc, a CDC task under a concurrent load (pgbench, or 4 connections on
    /// MySQL) and decoding pre-written changes beside pg_recvlogical / mariadb-binlog.
    #[cfg(unix)]
    Bench {
        workspace: PathBuf,
        #[arg(long)]
        task: String,
        /// Measured runs of each side (the best is reported).
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// The CDC benchmark (the task must have migration_type = "cdc").
        #[arg(long)]
        cdc: bool,
        /// The curated zone: `tributary curate --rebuild` of the task's tables beside DuckDB
        /// merging the same raw files, then `tributary query` beside DuckDB's iceberg_scan
        /// (the task must have run; DuckDB from .venv, see scripts/services).
        #[arg(long, conflicts_with = "cdc")]
        curate: bool,
        /// --cdc: how long the load runs, in seconds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// --cdc: changes written before the decode comparison.
        #[arg(long, default_value_t = 5_000_000)]
        decode_changes: u64,
    },
    /// Delete a CDC task's replication slot and publication on its source, after asking.
    /// The lake files and the task's state stay; remove the task from the workspace file.
    DeleteTask {
        workspace: PathBuf,
        #[arg(long)]
        task: String,
        /// Do not ask (for scripts).
        #[arg(long)]
        yes: bool,
    },
    /// Store or remove a source endpoint's password in the OS keyring (Secret Service). The
    /// password is read from standard input (not echoed on a terminal); the endpoint then
    /// needs password_keyring = true.
    Password {
        #[command(subcommand)]
        action: PasswordAction,
    },
    /// Crawl a target's raw zone, as a Glue crawler does: its tables, their schemas
    /// (versions kept) and partitions, kept in `<bucket_folder>/_tributary/catalog.json`.
    /// Only new or changed files are read.
    Catalog {
        workspace: PathBuf,
        /// The target endpoint.
        #[arg(long)]
        target: String,
        /// The raw zone's folder (default: the bucket_folder of every task on the target).
        #[arg(long)]
        folder: Vec<String>,
        /// Also list every table's columns and partitions.
        #[arg(long)]
        details: bool,
    },
    /// Curate: merge each table's raw LOAD and CDC files by primary key into a current-state
    /// Apache Iceberg table (`<source>.<schema>.<table>`) in the curated zone, registered in
    /// the workspace's Iceberg SQL catalog. Only changes since the last run are read.
    Curate {
        workspace: PathBuf,
        /// Only this task's tables (default: every task's).
        #[arg(long)]
        task: Option<String>,
        /// Rebuild every table from its LOAD files and all of its changes.
        #[arg(long)]
        rebuild: bool,
        /// Curate again every SECONDS until stopped (Ctrl-C), while CDC runs.
        #[arg(long, value_name = "SECONDS")]
        every: Option<u64>,
    },
    /// Compare a task's source tables with the lake at one exact source position: the
    /// source read in one snapshot whose log position is known, the task waited for until
    /// it has confirmed that position, and the raw zone replayed to it (and the curated
    /// table, when it stands exactly there) compared by key and row hash. Prints per table
    /// the rows compared, missing, extra and different, with the first keys and the
    /// differing columns. Exit code 0 when every table is equal, 1 otherwise.
    Validate {
        workspace: PathBuf,
        #[arg(long)]
        task: String,
        /// Only this table (schema.table); repeat for several (default: every table).
        #[arg(long, value_name = "SCHEMA.TABLE", value_parser = crate::ident::TableId::parse)]
        table: Vec<crate::ident::TableId>,
        /// Reload the tables that differ (the task's per-table reload): a CDC task, which
        /// runs meanwhile, is asked to through a request file it picks up within seconds; a
        /// full-load task's tables load again here.
        #[arg(long)]
        repair: bool,
        /// How long to wait for the task to confirm the snapshot's position.
        #[arg(long, value_name = "SECONDS", default_value_t = 300)]
        wait: u64,
    },
    /// Run the workspace's SQL models ([[models]]): each query's rows pass its data-quality
    /// checks (fail, quarantine or warn, as declared) and become the Iceberg table
    /// `<schema>.<name>`. Exit code 1 if a check that fails the run failed.
    Transform {
        workspace: PathBuf,
        /// Only this model (`name` or `schema.name`).
        #[arg(long)]
        model: Option<String>,
    },
    /// Run SQL over the lake: curated tables as `<source>.<schema>.<table>`, the raw zone's
    /// as `<source>_raw.<schema>.<table>`. `SHOW TABLES` lists them.
    Query {
        workspace: PathBuf,
        sql: String,
        /// Write the whole result to a file instead of printing it (.csv or .parquet).
        #[arg(long)]
        output: Option<PathBuf>,
        /// How many rows to print (the rest is counted, not printed).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// List lake files: a local folder or s3://bucket/prefix.
    Ls {
        uri: String,
        /// Every file below the prefix, not only the folder's own.
        #[arg(short, long)]
        recursive: bool,
        #[command(flatten)]
        s3: S3Args,
    },
    /// Show a Parquet file's schema, row groups and statistics, and its first rows (CSV and
    /// JSON-lines files: their first lines).
    Preview {
        file: String,
        /// How many rows to show.
        #[arg(long, default_value_t = 10)]
        rows: usize,
        #[command(flatten)]
        s3: S3Args,
    },
}

#[derive(Subcommand)]
enum PasswordAction {
    /// Store (or replace) the endpoint's password.
    Set {
        workspace: PathBuf,
        #[arg(long)]
        endpoint: String,
    },
    /// Remove the endpoint's password.
    Delete {
        workspace: PathBuf,
        #[arg(long)]
        endpoint: String,
    },
}

/// S3 connection flags for `ls` and `preview`. Credentials come from the AWS chain.
#[derive(Args)]
struct S3Args {
    /// An S3-compatible endpoint, e.g. http://127.0.0.1:9000 (default: AWS, or AWS_ENDPOINT_URL).
    #[arg(long)]
    endpoint_url: Option<String>,
    #[arg(long)]
    region: Option<String>,
    /// Address buckets as endpoint/bucket (most S3-compatible servers need it).
    #[arg(long)]
    path_style: bool,
    #[arg(long)]
    profile: Option<String>,
    /// PEM certificates to trust instead of the system's (an S3-compatible server with a
    /// private CA).
    #[arg(long, value_name = "PEM")]
    ca_bundle: Option<PathBuf>,
}

impl S3Args {
    fn options(&self) -> S3Options {
        S3Options {
            bucket: String::new(),
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
            force_path_style: self.path_style || self.endpoint_url.is_some(),
            profile: self.profile.clone(),
            ca_bundle: self.ca_bundle.clone(),
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let Some(command) = cli.command else {
        return crate::ui::run(None);
    };
    if let Command::App { workspace } = command {
        return crate::ui::run(workspace);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match command {
            Command::Run {
                workspace,
                task,
                reload,
                reload_table,
                until_caught_up,
            } => {
                run(
                    workspace,
                    task,
                    RunOptions {
                        reload,
                        until_caught_up,
                        reload_tables: reload_table,
                    },
                )
                .await
            }
            Command::Check {
                workspace,
                endpoint,
            } => check(workspace, endpoint).await,
            #[cfg(unix)]
            Command::Bench {
                workspace,
                task,
                runs,
                cdc,
                curate,
                seconds,
                decode_changes,
            } => {
                let result = if cdc {
                    crate::bench::cdc(&workspace, &task, seconds.max(1), decode_changes).await
                } else if curate {
                    crate::bench::curate(&workspace, &task, runs.max(1)).await
                } else {
                    crate::bench::full_load(&workspace, &task, runs.max(1)).await
                };
                match result {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fail(1, e),
                }
            }
            Command::DeleteTask {
                workspace,
                task,
                yes,
            } => delete_task(workspace, task, yes).await,
            Command::Password { action } => password(action).await,
            Command::Catalog {
                workspace,
                target,
                folder,
                details,
            } => catalog(workspace, target, folder, details).await,
            Command::Curate {
                workspace,
                task,
                rebuild,
                every,
            } => curate(workspace, CurateOptions { task, rebuild }, every).await,
            Command::Transform { workspace, model } => transform(workspace, model).await,
            Command::Validate {
                workspace,
                task,
                table,
                repair,
                wait,
            } => {
                let options = crate::validate::ValidateOptions {
                    task,
                    tables: table,
                    repair,
                    wait: std::time::Duration::from_secs(wait),
                };
                validate(workspace, options).await
            }
            Command::Query {
                workspace,
                sql,
                output,
                limit,
            } => query(workspace, &sql, output, limit).await,
            Command::Ls { uri, recursive, s3 } => ls(&uri, recursive, &s3).await,
            Command::App { .. } => unreachable!("handled before the runtime starts"),
            Command::Preview { file, rows, s3 } => preview(&file, rows, &s3).await,
        }
    })
}

fn fail(code: u8, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(code)
}

fn load_workspace(path: &std::path::Path) -> Result<Workspace, ExitCode> {
    Workspace::load(path).map_err(|e| fail(2, e))
}

async fn run(path: PathBuf, task_name: String, options: RunOptions) -> ExitCode {
    let workspace = match load_workspace(&path) {
        Ok(w) => w,
        Err(code) => return code,
    };
    if let Err(e) = workspace.task(&task_name, &path) {
        return fail(2, e);
    }
    let mut handle = task::start_task(
        &tokio::runtime::Handle::current(),
        Arc::new(workspace),
        path,
        &task_name,
        options,
    );
    let stopper = handle.stopper();
    tokio::spawn(async move {
        wait_for_stop_signal().await;
        eprintln!("stopping: finished ranges are kept; run again to resume");
        let _ = stopper.send(Some(TaskCommand::Stop));
    });

    let mut progress = Progress::new(std::io::stderr().is_terminal());
    while let Some(event) = handle.events.recv().await {
        progress.show(event);
    }
    progress.clear();
    match handle.finish().await {
        Ok(summary) => {
            println!("{}", summary.table());
            println!("files are in {}", summary.location);
            if let Some(position) = &summary.snapshot_position {
                println!("snapshot position: {position}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, e),
    }
}

async fn delete_task(path: PathBuf, task_name: String, yes: bool) -> ExitCode {
    let workspace = match load_workspace(&path) {
        Ok(w) => w,
        Err(code) => return code,
    };
    let task = match workspace.task(&task_name, &path) {
        Ok(t) => t.clone(),
        Err(e) => return fail(2, e),
    };
    let source = match workspace.endpoint(&task.source, &path) {
        Ok(e) => e,
        Err(e) => return fail(2, e),
    };
    if source.engine != Engine::Postgres {
        return fail(
            2,
            format!(
                "endpoint '{}' is not PostgreSQL: no slot to delete",
                source.name
            ),
        );
    }
    let c = match source.resolve().await {
        Ok(c) => c,
        Err(e) => return fail(1, e),
    };
    let pg = PgEndpoint::from_config(&c.endpoint, c.password);
    let slot = match pg.task_slot(&task).await {
        Ok(slot) => slot,
        Err(e) => return fail(1, e),
    };
    let publication = task.publication_name();
    if !yes {
        if !std::io::stdin().is_terminal() {
            return fail(
                2,
                format!(
                    "not a terminal: pass --yes to drop slot {slot} and publication {publication}"
                ),
            );
        }
        eprint!(
            "Drop replication slot {slot} and publication {publication} on endpoint '{}'? \
             CDC of task '{task_name}' cannot resume afterwards (a --reload starts over). \
             Type the task name to confirm: ",
            source.name
        );
        let mut answer = String::new();
        if std::io::stdin().read_line(&mut answer).is_err() || answer.trim() != task_name {
            eprintln!("nothing dropped");
            return ExitCode::from(1);
        }
    }
    match pg.slot_status(&slot).await {
        Ok(Some(status)) if !status.is_of(&pg.database) => {
            println!(
                "replication slot {slot} belongs to {}, not to this endpoint's database {}: left alone",
                status.owner(),
                pg.database
            );
        }
        Ok(Some(status)) if status.active => {
            return fail(
                1,
                format!("slot {slot} is in use by a running task: stop the task first"),
            );
        }
        Ok(Some(_)) => {
            if let Err(e) = pg.drop_slot(&slot).await {
                return fail(1, e);
            }
            println!("dropped replication slot {slot}");
        }
        Ok(None) => println!("replication slot {slot} does not exist"),
        Err(e) => return fail(1, e),
    }
    if let Err(e) = pg.drop_publication(&publication).await {
        return fail(1, e);
    }
    println!(
        "dropped publication {publication} (if it existed); lake files and task state are kept"
    );
    ExitCode::SUCCESS
}

async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Progress on a terminal (a bar per table), or plain log lines otherwise.
struct Progress {
    bars: Option<(
        MultiProgress,
        std::collections::HashMap<String, ProgressBar>,
    )>,
}

impl Progress {
    fn new(terminal: bool) -> Self {
        Progress {
            bars: terminal.then(|| (MultiProgress::new(), std::collections::HashMap::new())),
        }
    }

    fn line(&self, text: String) {
        match &self.bars {
            Some((multi, _)) => {
                let _ = multi.println(text);
            }
            None => eprintln!("{text}"),
        }
    }

    fn show(&mut self, event: TaskEvent) {
        match event {
            TaskEvent::Log { level, message } => {
                let tag = match level {
                    LogLevel::Info => "info",
                    LogLevel::Warn => "warning",
                    LogLevel::Error => "error",
                };
                self.line(format!("{tag}: {message}"));
            }
            TaskEvent::Cdc(stats) => {
                self.line(format!(
                    "cdc: confirmed {}  batches {}  latency {} ms  {:.0} changes/s  slot lag {} KB",
                    stats.confirmed_position,
                    stats.batches,
                    stats.latency_ms,
                    stats.changes_per_second,
                    stats.slot_lag_bytes / 1024
                ));
            }
            TaskEvent::Planned { tables } => {
                for t in tables {
                    self.show(TaskEvent::Table(t));
                }
            }
            TaskEvent::Table(t) => {
                let Some((multi, bars)) = &mut self.bars else {
                    return;
                };
                let name = t.qualified_name();
                let bar = bars.entry(name.clone()).or_insert_with(|| {
                    let bar = multi.add(ProgressBar::new(t.estimated_rows.max(1)));
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{prefix:<32} {bar:30} {pos:>11} rows {per_sec:>12} {msg}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    bar.set_prefix(name);
                    bar.enable_steady_tick(Duration::from_millis(250));
                    bar
                });
                if t.full_load_rows > bar.length().unwrap_or(0) {
                    bar.set_length(t.full_load_rows);
                }
                bar.set_position(t.full_load_rows);
                bar.set_message(t.state.to_string());
                if matches!(t.state, TableState::TableCompleted | TableState::TableError) {
                    bar.set_length(t.full_load_rows.max(1));
                    bar.finish();
                }
            }
        }
    }

    fn clear(&self) {
        if let Some((multi, _)) = &self.bars {
            let _ = multi.clear();
        }
    }
}

async fn password(action: PasswordAction) -> ExitCode {
    let (PasswordAction::Set {
        workspace: path,
        endpoint,
    }
    | PasswordAction::Delete {
        workspace: path,
        endpoint,
    }) = &action;
    let workspace = match load_workspace(path) {
        Ok(w) => w,
        Err(code) => return code,
    };
    let e = match workspace.endpoint(endpoint, path) {
        Ok(e) if e.engine.is_source() => e.clone(),
        Ok(_) => {
            return fail(
                2,
                format!("endpoint '{endpoint}' is a target: only source databases have passwords"),
            );
        }
        Err(e) => return fail(2, e),
    };
    let keyring_entry = e.keyring_entry();
    let entry = keyring_entry.name();
    let (result, done) = match action {
        PasswordAction::Set { .. } => {
            let password = match read_password() {
                Ok(p) if !p.is_empty() => p,
                Ok(_) => return fail(2, "no password on standard input"),
                Err(err) => return fail(1, format!("reading the password: {err}")),
            };
            let stored =
                tokio::task::spawn_blocking(move || crate::secret::set(&keyring_entry, &password));
            (
                stored.await,
                format!(
                    "stored the password of endpoint '{endpoint}' in the OS keyring as {entry}; the endpoint reads it with password_keyring = true"
                ),
            )
        }
        PasswordAction::Delete { .. } => (
            tokio::task::spawn_blocking(move || crate::secret::delete(&keyring_entry)).await,
            format!("removed the password of endpoint '{endpoint}' ({entry}) from the OS keyring"),
        ),
    };
    match result {
        Ok(Ok(())) => {
            println!("{done}");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => fail(1, e),
        Err(e) => fail(1, format!("the keyring call failed: {e}")),
    }
}

/// One line from standard input, not echoed when it is a terminal.
fn read_password() -> std::io::Result<String> {
    use std::io::BufRead;
    let stdin = std::io::stdin();
    let echo_off = stdin.is_terminal().then(|| {
        eprint!("password: ");
        EchoOff::new()
    });
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    if echo_off.is_some() {
        eprintln!();
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// Turns the terminal's echo off until dropped, or until Ctrl-C ends the process.
struct EchoOff(Option<libc::termios>);

/// The terminal settings to put back if Ctrl-C ends the process at the prompt.
static SAVED_TERMINAL: std::sync::OnceLock<libc::termios> = std::sync::OnceLock::new();

extern "C" fn restore_terminal_and_exit(_: libc::c_int) {
    if let Some(saved) = SAVED_TERMINAL.get() {
        // SAFETY: tcsetattr and _exit are async-signal-safe; `saved` is initialised.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, saved);
            libc::_exit(130);
        }
    }
}

impl EchoOff {
    fn new() -> Self {
        // SAFETY: termios is plain data; tcgetattr fills it or fails, and then it is unused.
        // The handler only reads SAVED_TERMINAL, set before it is installed.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut saved) != 0 {
                return EchoOff(None);
            }
            let _ = SAVED_TERMINAL.set(saved);
            let handler = restore_terminal_and_exit as extern "C" fn(libc::c_int);
            libc::signal(libc::SIGINT, handler as libc::sighandler_t);
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            libc::tcsetattr(0, libc::TCSANOW, &quiet);
            EchoOff(Some(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restores the settings tcgetattr read, then Ctrl-C's default.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, saved);
                libc::signal(libc::SIGINT, libc::SIG_DFL);
            }
        }
    }
}

async fn check(path: PathBuf, only: Option<String>) -> ExitCode {
    let workspace = match load_workspace(&path) {
        Ok(w) => w,
        Err(code) => return code,
    };
    if let Some(name) = &only
        && let Err(e) = workspace.endpoint(name, &path)
    {
        return fail(2, e);
    }
    let mut failed = false;
    for e in workspace
        .endpoints
        .iter()
        .filter(|e| only.as_ref().is_none_or(|n| *n == e.name))
    {
        println!("endpoint {} ({})", e.name, e.engine.name());
        let results = task::check_endpoint(&workspace, e).await;
        for r in &results {
            let tag = match r.status {
                CheckStatus::Pass => "PASS",
                CheckStatus::Warn => "WARN",
                CheckStatus::Fail => "FAIL",
            };
            println!("  {tag} {}: {}", r.name, r.detail);
            if let Some(fix) = &r.fix {
                println!("       fix: {fix}");
            }
        }
        failed |= results.iter().any(|r| r.status == CheckStatus::Fail);
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn validate(path: PathBuf, options: crate::validate::ValidateOptions) -> ExitCode {
    use crate::validate::ValidateEvent;
    let workspace = match load_workspace(&path) {
        Ok(w) => w,
        Err(code) => return code,
    };
    let result = crate::validate::validate(&workspace, &path, &options, |event| match event {
        ValidateEvent::Snapshot { position, tables } => {
            println!("source snapshot at {position}: comparing {tables} table(s)")
        }
        ValidateEvent::Waiting { confirmed } => println!(
            "waiting for task {} to reach the snapshot (its stream stands at {confirmed})",
            options.task
        ),
        ValidateEvent::Table(report) => println!("{}", report.describe()),
        ValidateEvent::Repairing(tables) => {
            println!("repairing: reloading {}", crate::ident::list(&tables))
        }
    })
    .await;
    match result {
        Ok(report) => {
            let differing = report.tables.iter().filter(|t| !t.equal()).count();
            println!(
                "validated {} table(s) at {} in {:.1}s: {} equal, {differing} not",
                report.tables.len(),
                report.position,
                report.seconds,
                report.tables.len() - differing
            );
            match &report.repaired {
                Some((tables, crate::validate::Repair::Requested(uri))) => println!(
                    "asked task {} to reload {} ({uri}): it does so within seconds while it runs, or on its next run; validate again to confirm",
                    options.task,
                    crate::ident::list(tables)
                ),
                Some((tables, crate::validate::Repair::Reloaded)) => println!(
                    "reloaded {}; validate again to confirm",
                    crate::ident::list(tables)
                ),
                None => {}
            }
            if report.all_equal() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => fail(1, e),
    }
}

async fn curate(path: PathBuf, options: CurateOptions, every: Option<u64>) -> ExitCode {
    let workspace = match load_workspace(&path) {
        Ok(w) => w,
        Err(code) => return code,
    };
    let (stop_tx, mut stop) = watch::channel(false);
    if every.is_some() {
        tokio::spawn(async move {
            wait_for_stop_signal().await;
            eprintln!("stopping after this round");
            let _ = stop_tx.send(true);
        });
    }
    loop {
        let started = std::time::Instant::now();
        let result = crate::curate::curate(&workspace, &path, &options, |t| {
            println!("{}", t.describe())
        })
        .await;
        match result {
            Ok(outcomes) => {
                println!(
                    "curated {} table(s) in {:.1}s; catalog {}",
                    outcomes.len(),
                    started.elapsed().as_secs_f64(),
                    crate::curate::catalog_location(&workspace.curate, &path)
                );
                let failed = outcomes
                    .iter()
                    .filter(|t| matches!(t.action, crate::curate::Action::Failed(_)))
                    .count();
                if failed > 0 && every.is_none() {
                    return fail(1, format!("{failed} table(s) FAILED (above)"));
                }
            }
            Err(e) if every.is_none() => return fail(1, e),
            // Continuous: a failed round (the source's files mid-reload, a busy catalog) is
            // reported and the next round tries again.
            Err(e) => eprintln!("error: {e}"),
        }
        let Some(seconds) = every else {
            return ExitCode::SUCCESS;
        };
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(seconds)) => {}
            _ = stop.changed() => return ExitCode::SUCCESS,
        }
        if *stop.borrow() {
            return ExitCode::SUCCESS;
        }
    }
}

async fn transform(path: PathBuf, model: Option<String>) -> ExitCode {
    let workspace = match load_workspace(&path) {
        Ok(w) => w,
        Err(code) => return code,
    };
    let result = crate::curate::models::run_models(&workspace, &path, model.as_deref(), |m| {
        println!("{}", m.describe())
    })
    .await;
    match result {
        Ok(outcomes) if outcomes.iter().any(|m| m.failed) => fail(
            1,
            "a model's check failed (FAIL above); its table keeps its previous rows",
        ),
        Ok(outcomes) => {
            println!("ran {} model(s)", outcomes.len());
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, e),
    }
}

async fn query(path: PathBuf, sql: &str, output: Option<PathBuf>, limit: usize) -> ExitCode {
    let workspace = match load_workspace(&path) {
        Ok(w) => w,
        Err(code) => return code,
    };
    let ctx = match crate::query::lake_session(&workspace, &path).await {
        Ok(c) => c,
        Err(e) => return fail(1, e),
    };
    let frame = match ctx.sql(sql).await {
        Ok(f) => f,
        Err(e) => return fail(1, format!("query: {e}")),
    };
    if let Some(output) = output {
        return match crate::query::export(frame, &output).await {
            Ok(rows) => {
                println!("wrote {rows} row(s) to {}", output.display());
                ExitCode::SUCCESS
            }
            Err(e) => fail(1, e),
        };
    }
    match crate::query::print(frame, limit, &mut std::io::stdout()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, e),
    }
}

async fn catalog(path: PathBuf, target: String, folders: Vec<String>, details: bool) -> ExitCode {
    let workspace = match load_workspace(&path) {
        Ok(w) => w,
        Err(code) => return code,
    };
    let endpoint = match workspace.endpoint(&target, &path) {
        Ok(e) if !e.engine.is_source() => e,
        Ok(_) => {
            return fail(
                2,
                format!("endpoint '{target}' is a source: crawl a target"),
            );
        }
        Err(e) => return fail(2, e),
    };
    let storage = match Storage::from_endpoint(endpoint).await {
        Ok(s) => s,
        Err(e) => return fail(1, e),
    };
    let folders = if folders.is_empty() {
        workspace.raw_folders(&target)
    } else {
        folders
    };
    let mut unreadable = false;
    for folder in folders {
        let (catalog, report) = match crate::catalog::crawl(&storage, &folder).await {
            Ok(x) => x,
            Err(e) => return fail(1, e),
        };
        println!(
            "crawled {}: {} new table(s), {} removed; {} file(s) added, {} changed, {} removed; {} new partition(s); {} footer(s) read",
            storage.uri(&folder),
            report.tables_added.len(),
            report.tables_removed.len(),
            report.files_added,
            report.files_changed,
            report.files_removed,
            report.partitions_added.len(),
            report.footers_read
        );
        for table in &report.schema_changes {
            println!("  schema changed: {table} (a new version)");
        }
        for (key, reason) in &report.unreadable {
            println!("  UNREADABLE {key}: {reason}");
            unreadable = true;
        }
        for t in catalog.tables.values() {
            println!("{}  {}", t.qualified_name(), t.summary());
            if details {
                let columns: Vec<String> = t
                    .columns()
                    .iter()
                    .map(|c| format!("{} {}", c.name, c.data_type))
                    .collect();
                println!("  columns: {}", columns.join(", "));
                for (name, p) in &t.partitions() {
                    println!("  partition {}", p.describe(name));
                }
            }
        }
    }
    if unreadable {
        // The rest is cataloged; a script must still notice.
        return fail(1, "some files could not be read (listed above)");
    }
    ExitCode::SUCCESS
}

async fn ls(uri: &str, recursive: bool, s3: &S3Args) -> ExitCode {
    let (storage, prefix) = match Storage::from_uri(uri, s3.options()).await {
        Ok(x) => x,
        Err(e) => return fail(2, e),
    };
    // A folder given without its trailing slash lists the folder's content.
    let prefix =
        if !prefix.is_empty() && !prefix.ends_with('/') && matches!(storage, Storage::S3(_)) {
            format!("{prefix}/")
        } else {
            prefix
        };
    let mut token = None;
    let (mut objects, mut bytes) = (0u64, 0u64);
    loop {
        let page = match storage.list_page(&prefix, !recursive, token).await {
            Ok(p) => p,
            Err(e) => return fail(1, e),
        };
        for p in &page.prefixes {
            println!("{:>30} PRE {p}", "");
        }
        for o in &page.objects {
            let when = o
                .last_modified
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default();
            println!("{when:>19} {:>10} {}", o.size, o.key);
            objects += 1;
            bytes += o.size;
        }
        match page.next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    println!(
        "{objects} object(s), {bytes} bytes under {}",
        storage.uri(&prefix)
    );
    ExitCode::SUCCESS
}

async fn preview(file: &str, rows: usize, s3: &S3Args) -> ExitCode {
    let (storage, key) = match Storage::from_uri(file, s3.options()).await {
        Ok(x) => x,
        Err(e) => return fail(2, e),
    };
    if inspect::is_text_file(&key) {
        return match inspect::read_text_lines(&storage, &key, rows).await {
            Ok(lines) => {
                for l in lines {
                    println!("{l}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(1, e),
        };
    }
    let parquet = match ParquetFile::open(&storage, &key).await {
        Ok(p) => p,
        Err(e) => return fail(1, e),
    };
    let summary = match parquet.summary() {
        Ok(s) => s,
        Err(e) => return fail(1, e),
    };
    println!("file: {}", summary.uri);
    println!(
        "size: {} bytes, rows: {}, row groups: {}, created by: {}",
        summary.size,
        summary.num_rows,
        summary.row_groups.len(),
        summary.created_by.as_deref().unwrap_or("?")
    );
    println!("\nschema:");
    for f in summary.schema.fields() {
        println!(
            "  {:<28} {:<40} {}",
            f.name(),
            f.data_type().to_string(),
            if f.is_nullable() { "null" } else { "not null" }
        );
    }
    println!("\nparquet columns:");
    for (name, ty) in &summary.parquet_columns {
        println!("  {name:<28} {ty}");
    }
    for (i, rg) in summary.row_groups.iter().enumerate() {
        println!(
            "\nrow group {i}: {} rows, {} bytes compressed, {} uncompressed",
            rg.rows, rg.compressed_bytes, rg.uncompressed_bytes
        );
        println!(
            "  {:<24} {:<24} {:<24} {:>8} {:>12} {:>12} {:<8} encodings",
            "column", "min", "max", "nulls", "compressed", "uncompressed", "codec"
        );
        for c in &rg.columns {
            println!(
                "  {:<24} {:<24} {:<24} {:>8} {:>12} {:>12} {:<8} {}",
                truncate(&c.name, 24),
                truncate(c.min.as_deref().unwrap_or("-"), 24),
                truncate(c.max.as_deref().unwrap_or("-"), 24),
                c.nulls.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
                c.compressed_bytes,
                c.uncompressed_bytes,
                c.compression,
                c.encodings
            );
        }
    }
    match parquet.read_rows(0, rows).await {
        Ok(batches) => {
            println!(
                "\nfirst {} row(s):",
                batches.iter().map(|b| b.num_rows()).sum::<usize>()
            );
            let batches: Vec<_> = batches.iter().map(inspect::displayable_batch).collect();
            match arrow_cast::pretty::pretty_format_batches(&batches) {
                Ok(table) => println!("{table}"),
                Err(e) => return fail(1, e),
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, e),
    }
}

fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(width - 1).collect();
        t.push('…');
        t
    }
}
