//! `tributary bench`: the engine measured beside PostgreSQL's own tools, in one run.
//!
//! Full load ([`full_load`]): the reference is what PostgreSQL itself can export: `psql -c
//! "\copy (select * from t) to /dev/null with (format binary)"`, one table after another. The
//! subject is `tributary run --reload` of the same task, in a child process so its peak RSS
//! is its own. Both run back to back `runs` times after one unmeasured warm-up export, so
//! they see the same cache; the best time of each is reported, with the ratio.
//!
//! CDC ([`cdc`]): pgbench's committed changes beside the captured ones, with lag and RSS,
//! then a pre-filled slot read by the task beside `pg_recvlogical`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use arrow_array::cast::AsArray;

use crate::config::{Engine, MigrationType, Workspace};
use crate::lake::{Storage, layout};
use crate::source::mysql::{MyEndpoint, MysqlSource, quote as mysql_quote};
use crate::source::position::binlog_file_index;
use crate::source::postgres::{PgEndpoint, PostgresSource};
use crate::source::{SelectionRules, Source, TableInfo};

/// One measured process: wall time and peak resident memory.
#[derive(Debug, Clone, Copy)]
struct Measured {
    seconds: f64,
    peak_rss_kb: u64,
}

/// The source database of a benchmarked task.
enum BenchSource {
    Postgres(PgEndpoint),
    Mysql(MyEndpoint),
}

/// A benchmarked task: its workspace, its source and the tables it selects.
struct BenchTask {
    task: crate::config::TaskConfig,
    source: crate::config::EndpointConfig,
    password: Option<String>,
    engine: BenchSource,
    tables: Vec<TableInfo>,
    /// The task's target.
    storage: Storage,
}

async fn bench_task(workspace_path: &Path, task_name: &str) -> Result<BenchTask, String> {
    let workspace = Workspace::load(workspace_path).map_err(|e| e.to_string())?;
    let task = workspace
        .task(task_name, workspace_path)
        .map_err(|e| e.to_string())?
        .clone();
    let crate::config::Connection {
        endpoint: source,
        password,
    } = workspace
        .endpoint(&task.source, workspace_path)
        .map_err(|e| e.to_string())?
        .resolve()
        .await
        .map_err(|e| e.to_string())?;
    let rules = SelectionRules::new(&task.include, &task.exclude);
    let (engine, tables) = match source.engine {
        Engine::Postgres => {
            let pg = PgEndpoint::from_config(&source, password.clone());
            let tables = PostgresSource::new(pg.clone()).discover(&rules).await;
            (BenchSource::Postgres(pg), tables)
        }
        Engine::Mysql => {
            let my = MyEndpoint::from_config(&source, password.clone());
            let tables = MysqlSource::new(my.clone(), 1).discover(&rules).await;
            (BenchSource::Mysql(my), tables)
        }
        _ => {
            return Err(format!(
                "bench measures a task's source database; endpoint '{}' is a target",
                source.name
            ));
        }
    };
    let tables = tables.map_err(|e| e.to_string())?;
    if tables.is_empty() {
        return Err(format!("task '{task_name}' selects no table"));
    }
    let target = workspace
        .endpoint(&task.target, workspace_path)
        .map_err(|e| e.to_string())?;
    let storage = Storage::from_endpoint(target)
        .await
        .map_err(|e| e.to_string())?;
    Ok(BenchTask {
        task,
        source,
        password,
        engine,
        tables,
        storage,
    })
}

pub async fn full_load(workspace_path: &Path, task_name: &str, runs: usize) -> Result<(), String> {
    let BenchTask {
        task,
        source,
        password,
        engine,
        tables,
        storage,
    } = bench_task(workspace_path, task_name).await?;
    let source = &source;
    let (reference_name, rows) = match &engine {
        BenchSource::Postgres(pg) => ("psql \\copy binary", count_rows(pg, &tables).await?),
        BenchSource::Mysql(my) => ("mariadb --quick", count_mysql_rows(my, &tables).await?),
    };
    let heap_bytes: u64 = tables.iter().map(|t| t.size_bytes).sum();
    println!(
        "bench: task {task_name}, {} table(s), {rows} rows, {:.1} MB on disk in the source, {runs} run(s)",
        tables.len(),
        mb(heap_bytes)
    );

    let copy = || match &engine {
        BenchSource::Postgres(_) => psql_copy(source, password.as_deref(), &tables),
        BenchSource::Mysql(_) => mariadb_select(source, password.as_deref(), &tables),
    };
    copy()?; // warm-up: both sides then read from the same cache
    let mut reference = Vec::new();
    let mut subject = Vec::new();
    for run in 1..=runs {
        let r = copy()?;
        println!(
            "run {run}: {reference_name:<18} {:>8.2} s  ({:.0} MB peak)",
            r.seconds,
            r.peak_rss_kb as f64 / 1024.0
        );
        let t = tributary_run(workspace_path, task_name)?;
        println!(
            "run {run}: {:<18} {:>8.2} s  ({:.0} MB peak)",
            "tributary run",
            t.seconds,
            t.peak_rss_kb as f64 / 1024.0
        );
        reference.push(r);
        subject.push(t);
    }
    let best = |v: &[Measured]| {
        v.iter()
            .copied()
            .min_by(|a, b| a.seconds.total_cmp(&b.seconds))
            .unwrap_or(Measured {
                seconds: f64::NAN,
                peak_rss_kb: 0,
            })
    };
    let (r, t) = (best(&reference), best(&subject));
    let written: u64 = table_files(&storage, &task, &tables)
        .await?
        .iter()
        .map(|f| f.size)
        .sum();
    let peak_rss = subject.iter().map(|m| m.peak_rss_kb).max().unwrap_or(0);
    println!();
    println!("                     seconds     rows/s   source MB/s");
    println!(
        "{reference_name:<18} {:>9.2} {:>10.0} {:>13.1}",
        r.seconds,
        rows as f64 / r.seconds,
        mb(heap_bytes) / r.seconds
    );
    println!(
        "tributary          {:>9.2} {:>10.0} {:>13.1}",
        t.seconds,
        rows as f64 / t.seconds,
        mb(heap_bytes) / t.seconds
    );
    println!(
        "ratio tributary / {reference_name}: {:.2}",
        t.seconds / r.seconds
    );
    println!(
        "tributary wrote {:.1} MB ({:.1} MB/s), peak RSS {:.0} MB",
        mb(written),
        mb(written) / t.seconds,
        peak_rss as f64 / 1024.0
    );
    Ok(())
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

async fn count_rows(pg: &PgEndpoint, tables: &[TableInfo]) -> Result<u64, String> {
    let mut conn = pg.connect().await.map_err(|e| e.to_string())?;
    let mut rows = 0u64;
    for t in tables {
        let sql = format!(
            "SELECT count(*) FROM {}.{}",
            crate::sql::ident(&t.schema),
            crate::sql::ident(&t.name)
        );
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut conn)
            .await
            .map_err(|e| format!("counting rows of {}: {e}", t.qualified_name()))?;
        rows += n as u64;
    }
    Ok(rows)
}

async fn count_mysql_rows(my: &MyEndpoint, tables: &[TableInfo]) -> Result<u64, String> {
    use mysql_async::prelude::Queryable;
    let mut conn = my.connect().await.map_err(|e| e.to_string())?;
    let mut rows = 0u64;
    for t in tables {
        let sql = format!(
            "SELECT count(*) FROM {}.{}",
            mysql_quote(&t.schema),
            mysql_quote(&t.name)
        );
        let n: Option<u64> = conn
            .query_first(sql)
            .await
            .map_err(|e| format!("counting rows of {}: {e}", t.qualified_name()))?;
        rows += n.unwrap_or(0);
    }
    let _ = conn.disconnect().await;
    Ok(rows)
}

/// Runs the reference command of each table in turn: total time, largest peak.
fn each_table(
    tables: &[TableInfo],
    what: &str,
    command: impl Fn(&TableInfo) -> Command,
) -> Result<Measured, String> {
    let mut total = Measured {
        seconds: 0.0,
        peak_rss_kb: 0,
    };
    for t in tables {
        let mut c = command(t);
        c.stdout(Stdio::null());
        let m = measure(c, what)?;
        total.seconds += m.seconds;
        total.peak_rss_kb = total.peak_rss_kb.max(m.peak_rss_kb);
    }
    Ok(total)
}

/// The reference: each table exported by psql's binary `\copy` to /dev/null, in turn.
fn psql_copy(
    source: &crate::config::EndpointConfig,
    password: Option<&str>,
    tables: &[TableInfo],
) -> Result<Measured, String> {
    each_table(tables, "psql (install the PostgreSQL client)", |t| {
        let mut command = Command::new("psql");
        command
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", source.host.as_deref().unwrap_or("127.0.0.1")])
            .args(["-p", &source.port.unwrap_or(5432).to_string()])
            .args(["-U", source.user.as_deref().unwrap_or("postgres")])
            .args(["-d", source.database.as_deref().unwrap_or("postgres")])
            .arg("-c")
            .arg(format!(
                "\\copy (select * from {}.{}) to /dev/null with (format binary)",
                crate::sql::ident(&t.schema),
                crate::sql::ident(&t.name)
            ));
        if let Some(p) = password {
            command.env("PGPASSWORD", p);
        }
        command
    })
}

/// The MySQL reference: each table read by the `mariadb` client row by row (`--quick`, no
/// buffering of the result) to /dev/null, in turn.
fn mariadb_select(
    source: &crate::config::EndpointConfig,
    password: Option<&str>,
    tables: &[TableInfo],
) -> Result<Measured, String> {
    each_table(tables, "mariadb (install the MariaDB client)", |t| {
        let mut command = Command::new("mariadb");
        command
            .args([
                "--quick",
                "--batch",
                "--skip-column-names",
                "--protocol=tcp",
            ])
            .args(["-h", source.host.as_deref().unwrap_or("127.0.0.1")])
            .args(["-P", &source.port.unwrap_or(3306).to_string()])
            .args(["-u", source.user.as_deref().unwrap_or("root")])
            .arg("-e")
            .arg(format!(
                "select * from {}.{}",
                mysql_quote(&t.schema),
                mysql_quote(&t.name)
            ));
        if let Some(p) = password {
            // The client reads MYSQL_PWD, so the password is not on the command line.
            command.env("MYSQL_PWD", p);
        }
        command
    })
}

/// The subject: this very binary running the task from scratch.
fn tributary_run(workspace: &Path, task: &str) -> Result<Measured, String> {
    let exe = std::env::current_exe().map_err(|e| format!("locating tributary itself: {e}"))?;
    let mut command = Command::new(exe);
    command
        .arg("run")
        .arg(workspace)
        .args(["--task", task, "--reload"])
        .stdout(Stdio::null());
    measure(command, "tributary run")
}

/// Runs `command` to its end; its wall time and peak RSS from `wait4`.
fn measure(mut command: Command, what: &str) -> Result<Measured, String> {
    command.stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("starting {what}: {e}"))?;
    let stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut s) = stderr {
            let _ = std::io::Read::read_to_string(&mut s, &mut text);
        }
        text
    });
    let (status, peak_rss_kb) =
        wait_with_rusage(child.id() as i32).map_err(|e| format!("waiting for {what}: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let stderr = reader.join().unwrap_or_default();
    if status != 0 {
        return Err(format!("{what} failed (status {status}):\n{stderr}"));
    }
    Ok(Measured {
        seconds,
        peak_rss_kb,
    })
}

/// Reaps process `pid`: its exit status and its peak RSS in KB.
///
/// The peak is the child's own `VmHWM`, sampled from /proc while it runs: Linux starts a
/// child's `ru_maxrss` at its parent's resident size when it execs, so `wait4` alone would
/// report this process's memory for a small child.
fn wait_with_rusage(pid: i32) -> std::io::Result<(i32, u64)> {
    let status_file = format!("/proc/{pid}/status");
    let mut peak_kb = 0u64;
    loop {
        if let Some(kb) = std::fs::read_to_string(&status_file).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        }) {
            peak_kb = peak_kb.max(kb);
        }
        let mut status = 0;
        // SAFETY: rusage is plain data that wait4 fills in; pid is our own child, reaped once
        // here (the `Child` handle is never waited on afterwards).
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if r == pid {
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                -1
            };
            // Without /proc (not Linux), wait4's figure is the best there is.
            if peak_kb == 0 {
                peak_kb = usage.ru_maxrss as u64;
            }
            return Ok((code, peak_kb));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Every file under the folders of the task's tables.
async fn table_files(
    storage: &Storage,
    task: &crate::config::TaskConfig,
    tables: &[TableInfo],
) -> Result<Vec<crate::lake::ObjectMeta>, String> {
    let mut files = Vec::new();
    for t in tables {
        let prefix =
            layout::table_prefix(&task.target_settings.bucket_folder, &task.source, &t.id());
        files.extend(storage.list_all(&prefix).await.map_err(|e| e.to_string())?);
    }
    Ok(files)
}

/// `tributary bench --cdc`: the CDC benchmark of a `migration_type = "cdc"` task.
///
/// 1. Live: the task runs (a child process) while `pgbench -c 4 -j 2 -T <seconds>` commits
///    on its source. Changes captured per second are set beside changes committed per second
///    (pgbench's TPC-B transaction makes 4: three updates and an insert); the lag of each
///    change is its file's modification time (when the file was put in place) minus its
///    commit time (the task's timestamp column), reported as p50 and p99; peak RSS is the
///    child's (`wait4`).
/// 2. Decode: a second slot (pgoutput) is created beside the task's, then `decode_changes`
///    inserts into pgbench_history fill both. `pg_recvlogical` reads its slot to /dev/null
///    and the task reads its own with `--until-caught-up` (writing Parquet), one after the
///    other, and the ratio of their times is reported.
pub async fn cdc(
    workspace_path: &Path,
    task_name: &str,
    seconds: u64,
    decode_changes: u64,
) -> Result<(), String> {
    let BenchTask {
        task,
        source,
        password,
        engine,
        tables,
        storage,
    } = bench_task(workspace_path, task_name).await?;
    if task.migration_type != MigrationType::Cdc {
        return Err(format!(
            "bench --cdc needs a task with migration_type = \"cdc\"; '{task_name}' is not one"
        ));
    }
    if task.target_settings.timestamp_column_name.is_empty() {
        return Err(format!(
            "bench --cdc measures lag from the commit time: set timestamp_column_name in task '{task_name}'"
        ));
    }
    let tributary = |args: &[&str]| tributary_command(workspace_path, task_name, args);
    let pg = match engine {
        BenchSource::Postgres(pg) => pg,
        BenchSource::Mysql(my) => {
            return mysql_cdc(
                my,
                &tributary,
                &storage,
                &task,
                &tables,
                seconds,
                decode_changes,
            )
            .await;
        }
    };
    let client_args = |command: &mut Command| {
        command
            .args(["-h", source.host.as_deref().unwrap_or("127.0.0.1")])
            .args(["-p", &source.port.unwrap_or(5432).to_string()])
            .args(["-U", source.user.as_deref().unwrap_or("postgres")])
            .args(["-d", source.database.as_deref().unwrap_or("postgres")]);
        if let Some(p) = &password {
            command.env("PGPASSWORD", p);
        }
    };

    // A fresh slot at the current end of the WAL, and no files.
    measure(
        tributary(&["--reload", "--until-caught-up"])?,
        "tributary run",
    )?;
    let before = cdc_files(&storage, &task, &tables).await?;

    // 1. Live.
    println!("bench --cdc: pgbench -c 4 -j 2 -T {seconds} while task {task_name} runs");
    let mut run = tributary(&[])?;
    run.stderr(Stdio::null());
    let child = run
        .spawn()
        .map_err(|e| format!("starting tributary run: {e}"))?;
    std::thread::sleep(std::time::Duration::from_secs(2)); // connected and streaming
    let mut pgbench = Command::new("pgbench");
    pgbench.args(["-n", "-c", "4", "-j", "2", "-T", &seconds.to_string()]);
    client_args(&mut pgbench);
    let output = pgbench
        .output()
        .map_err(|e| format!("starting pgbench (install the PostgreSQL client): {e}"))?;
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!(
            "pgbench failed:\n{report}{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let transactions: u64 = report
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|n| n.split('/').next()?.trim().parse().ok())
        .ok_or_else(|| format!("no transaction count in pgbench's report:\n{report}"))?;
    // Two batch intervals for the last changes, then a clean stop (SIGTERM flushes).
    let interval = task.target_settings.cdc_max_batch_interval.max(1);
    std::thread::sleep(std::time::Duration::from_secs(2 * interval + 1));
    // SAFETY: signalling our own child, which has not been reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let (status, peak_rss_kb) =
        wait_with_rusage(child.id() as i32).map_err(|e| format!("waiting for tributary: {e}"))?;
    if status != 0 {
        return Err(format!("tributary run exited with status {status}"));
    }
    let lags_ms = change_lags(&storage, &task, &tables, &before).await?;
    report_live(
        "pgbench",
        transactions * 4,
        seconds,
        &lags_ms,
        interval,
        peak_rss_kb,
    );

    // 2. Decode a pre-filled slot.
    let recv_slot = "tributary_bench_recv";
    let mut conn = pg.connect().await.map_err(|e| e.to_string())?;
    let sql = |s: String| sqlx::raw_sql(sqlx::AssertSqlSafe(s));
    let _ = pg.drop_slot(recv_slot).await;
    sql(format!(
        "SELECT pg_create_logical_replication_slot('{recv_slot}', 'pgoutput')"
    ))
    .execute(&mut conn)
    .await
    .map_err(|e| format!("creating slot {recv_slot}: {e}"))?;
    println!();
    println!("bench --cdc: filling both slots with {decode_changes} inserts (10 transactions)");
    let per_txn = decode_changes.div_ceil(10);
    for _ in 0..10 {
        sql(format!(
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime, filler) \
             SELECT 1, 1, g, g % 1000, now(), 'bench' FROM generate_series(1, {per_txn}) g"
        ))
        .execute(&mut conn)
        .await
        .map_err(|e| format!("filling pgbench_history: {e}"))?;
    }
    let end_lsn: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    // A record past the end, so pg_recvlogical sees it and stops there (and does not wait
    // for the server's next keepalive).
    sql("SELECT pg_logical_emit_message(false, 'tributary.bench', 'end')".into())
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let mut recv = Command::new("pg_recvlogical");
    recv.args(["-S", recv_slot, "--start", "--no-loop", "-f", "/dev/null"])
        .args(["-E", &end_lsn])
        .args(["-o", "proto_version=1", "-o", "messages=true"])
        .arg("-o")
        .arg(format!("publication_names={}", task.publication_name()));
    client_args(&mut recv);
    let reference = measure(recv, "pg_recvlogical (install the PostgreSQL client)");
    let _ = pg.drop_slot(recv_slot).await;
    let reference = reference?;
    let before_decode = cdc_files(&storage, &task, &tables).await?;
    let subject = measure(tributary(&["--until-caught-up"])?, "tributary run")?;
    check_decoded(&storage, &task, &tables, &before_decode, per_txn * 10).await?;
    report_decode(
        "pg_recvlogical > /dev/null",
        reference,
        subject,
        per_txn * 10,
    );
    // An idle slot would hold the source's WAL until the next benchmark.
    let slot = pg.task_slot(&task).await.map_err(|e| e.to_string())?;
    pg.drop_slot(&slot).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// `bench --cdc` of a MySQL/MariaDB task (selecting `accounts` and `history` of the
/// endpoint's database, see `scripts/bench mysql-cdc`):
///
/// 1. Live: the task runs while 4 connections commit transactions for `seconds` (two
///    updates of `accounts` and an insert into `history`: 3 changes each).
/// 2. Decode: `decode_changes` inserts into `history` in 10 transactions, read from the
///    server by `mariadb-binlog --verbose` (rows decoded to text) to /dev/null, beside the
///    task catching up on them.
async fn mysql_cdc(
    my: MyEndpoint,
    tributary: &impl Fn(&[&str]) -> Result<Command, String>,
    storage: &Storage,
    task: &crate::config::TaskConfig,
    tables: &[TableInfo],
    seconds: u64,
    decode_changes: u64,
) -> Result<(), String> {
    use mysql_async::prelude::Queryable;
    let error = |e: mysql_async::Error| e.to_string();
    measure(
        tributary(&["--reload", "--until-caught-up"])?,
        "tributary run",
    )?;
    let before = cdc_files(storage, task, tables).await?;

    // 1. Live.
    println!(
        "bench --cdc: 4 connections commit transactions for {seconds} s while task {} runs",
        task.name
    );
    let mut run = tributary(&[])?;
    run.stderr(Stdio::null());
    let child = run
        .spawn()
        .map_err(|e| format!("starting tributary run: {e}"))?;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await; // connected and streaming
    let deadline = Instant::now() + std::time::Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for worker in 0..4u64 {
        let my = my.clone();
        workers.push(tokio::spawn(async move {
            let mut conn = my.connect().await.map_err(|e| e.to_string())?;
            let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ worker;
            let mut transactions = 0u64;
            while Instant::now() < deadline {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let (a, b) = ((seed >> 33) % 5_000_000 + 1, (seed >> 13) % 5_000_000 + 1);
                // Never 0: an UPDATE that changes nothing writes no row event.
                let delta = (seed % 1000) as i64 + 1;
                conn.query_drop("BEGIN").await.map_err(error)?;
                conn.exec_drop(
                    "UPDATE accounts SET abalance = abalance + ? WHERE aid = ?",
                    (delta, a),
                )
                .await
                .map_err(error)?;
                conn.exec_drop(
                    "UPDATE accounts SET abalance = abalance - ? WHERE aid = ?",
                    (delta, b),
                )
                .await
                .map_err(error)?;
                conn.exec_drop(
                    "INSERT INTO history (aid, delta, mtime) VALUES (?, ?, NOW(6))",
                    (a, delta),
                )
                .await
                .map_err(error)?;
                conn.query_drop("COMMIT").await.map_err(error)?;
                transactions += 1;
            }
            Ok::<u64, String>(transactions)
        }));
    }
    let mut transactions = 0;
    for w in workers {
        transactions += w.await.map_err(|e| e.to_string())??;
    }
    let interval = task.target_settings.cdc_max_batch_interval.max(1);
    tokio::time::sleep(std::time::Duration::from_secs(2 * interval + 1)).await;
    // SAFETY: signalling our own child, which has not been reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let (status, peak_rss_kb) =
        wait_with_rusage(child.id() as i32).map_err(|e| format!("waiting for tributary: {e}"))?;
    if status != 0 {
        return Err(format!("tributary run exited with status {status}"));
    }
    let lags_ms = change_lags(storage, task, tables, &before).await?;
    report_live(
        "the load",
        transactions * 3,
        seconds,
        &lags_ms,
        interval,
        peak_rss_kb,
    );

    // 2. Decode.
    let mut conn = my.connect().await.map_err(|e| e.to_string())?;
    let start = my
        .current_position(&mut conn)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the server has no binlog")?;
    println!();
    println!("bench --cdc: {decode_changes} inserts into history (10 transactions)");
    let per_txn = decode_changes.div_ceil(10);
    for _ in 0..10 {
        conn.query_drop(format!(
            "INSERT INTO history (aid, delta, mtime) SELECT seq, seq % 1000, NOW(6) FROM seq_1_to_{per_txn}"
        ))
        .await
        .map_err(error)?;
    }
    let end = my
        .current_position(&mut conn)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the server has no binlog")?;
    let files: Vec<String> = my
        .binlog_files(&mut conn)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|f| (start.file_index()..=end.file_index()).contains(&binlog_file_index(f)))
        .collect();
    let _ = conn.disconnect().await;
    let mut reference = Command::new("mariadb-binlog");
    reference
        .args([
            "--read-from-remote-server",
            "--verbose",
            "--base64-output=DECODE-ROWS",
        ])
        .args([
            "--host",
            &my.host,
            "--port",
            &my.port.to_string(),
            "--user",
            &my.user,
        ])
        .arg(format!("--start-position={}", start.pos))
        .arg(format!("--stop-position={}", end.pos))
        .args(&files)
        .stdout(Stdio::null());
    if let Some(p) = my.password() {
        reference.env("MYSQL_PWD", p);
    }
    let reference = measure(reference, "mariadb-binlog (install the MariaDB client)")?;
    let before_decode = cdc_files(storage, task, tables).await?;
    let subject = measure(tributary(&["--until-caught-up"])?, "tributary run")?;
    check_decoded(storage, task, tables, &before_decode, per_txn * 10).await?;
    report_decode("mariadb-binlog --verbose", reference, subject, per_txn * 10);
    Ok(())
}

/// `tributary run WORKSPACE --task TASK ARGS…`, this very binary, its output discarded.
fn tributary_command(workspace: &Path, task: &str, args: &[&str]) -> Result<Command, String> {
    let exe = std::env::current_exe().map_err(|e| format!("locating tributary itself: {e}"))?;
    let mut command = Command::new(exe);
    command
        .arg("run")
        .arg(workspace)
        .args(["--task", task])
        .args(args)
        .stdout(Stdio::null());
    Ok(command)
}

/// The lag of every change in the CDC files written since `before`: the time its file was put
/// in place minus its commit time (the task's timestamp column), in ms, sorted.
async fn change_lags(
    storage: &Storage,
    task: &crate::config::TaskConfig,
    tables: &[TableInfo],
    before: &[crate::lake::ObjectMeta],
) -> Result<Vec<f64>, String> {
    let timestamp_column = task.target_settings.timestamp_column_name.as_str();
    let mut lags_ms = Vec::new();
    for key in cdc_files(storage, task, tables).await? {
        if before.iter().any(|b| b.key == key.key) {
            continue;
        }
        let Some(put) = key.last_modified else {
            continue;
        };
        let file = crate::lake::inspect::ParquetFile::open(storage, &key.key)
            .await
            .map_err(|e| e.to_string())?;
        let groups = (0..file.metadata().num_row_groups()).collect();
        for batch in file
            .read_columns(&[timestamp_column], groups, None)
            .await
            .map_err(|e| e.to_string())?
        {
            let commits = batch
                .column(0)
                .as_primitive_opt::<arrow_array::types::TimestampMicrosecondType>()
                .ok_or("the timestamp column is not a timestamp")?;
            let put_micros = put.timestamp_micros();
            lags_ms.extend(
                commits
                    .iter()
                    .flatten()
                    .map(|c| (put_micros - c).max(0) as f64 / 1000.0),
            );
        }
    }
    lags_ms.sort_by(f64::total_cmp);
    Ok(lags_ms)
}

/// Prints the live figures: changes committed by the load beside those captured, lag
/// percentiles and peak RSS.
fn report_live(
    load: &str,
    committed: u64,
    seconds: u64,
    lags_ms: &[f64],
    interval: u64,
    peak_rss_kb: u64,
) {
    let percentile = |p: f64| {
        lags_ms
            .get(((lags_ms.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let captured = lags_ms.len() as u64;
    println!();
    println!(
        "committed by {load:<9}{committed:>9} changes  {:>9.0} changes/s",
        committed as f64 / seconds as f64
    );
    println!(
        "captured by tributary {captured:>9} changes  {:>9.0} changes/s  (ratio {:.3})",
        captured as f64 / seconds as f64,
        captured as f64 / committed.max(1) as f64
    );
    println!(
        "lag commit → file in place: p50 {:.0} ms, p99 {:.0} ms (batch interval {interval} s)",
        percentile(0.5),
        percentile(0.99)
    );
    println!("tributary peak RSS {:.0} MB", peak_rss_kb as f64 / 1024.0);
}

/// Fails unless the decode run wrote every change (a catch-up that stops early would look
/// fast).
async fn check_decoded(
    storage: &Storage,
    task: &crate::config::TaskConfig,
    tables: &[TableInfo],
    before: &[crate::lake::ObjectMeta],
    changes: u64,
) -> Result<(), String> {
    let written = change_lags(storage, task, tables, before).await?.len() as u64;
    if written < changes {
        return Err(format!(
            "the decode run wrote {written} of the {changes} changes"
        ));
    }
    Ok(())
}

/// Prints the decode comparison: the reference reader beside tributary, on `changes`.
fn report_decode(reference_name: &str, reference: Measured, subject: Measured, changes: u64) {
    println!();
    println!("{:<26} seconds   changes/s   peak MB", "");
    for (name, m) in [
        (reference_name, reference),
        ("tributary (to Parquet)", subject),
    ] {
        println!(
            "{name:<26} {:>7.2} {:>11.0} {:>9.0}",
            m.seconds,
            changes as f64 / m.seconds,
            m.peak_rss_kb as f64 / 1024.0
        );
    }
    let short = reference_name
        .split_whitespace()
        .next()
        .unwrap_or(reference_name);
    println!(
        "ratio tributary / {short}: {:.2}",
        subject.seconds / reference.seconds
    );
}

/// The CDC files (all but `LOAD*`) under the task's tables.
async fn cdc_files(
    storage: &Storage,
    task: &crate::config::TaskConfig,
    tables: &[TableInfo],
) -> Result<Vec<crate::lake::ObjectMeta>, String> {
    let mut files = table_files(storage, task, tables).await?;
    files.retain(|f| {
        layout::parse_load_number(f.key.rsplit('/').next().unwrap_or_default()).is_none()
    });
    Ok(files)
}

/// `tributary bench --curate`: a task's tables curated from scratch (`tributary curate
/// --rebuild`, in a child process) beside DuckDB doing the same merge over the same raw
/// files; then a query of the curated table by `tributary query` beside DuckDB's
/// `iceberg_scan` of it. The task must have loaded (and captured changes) already.
pub async fn curate(workspace_path: &Path, task_name: &str, runs: usize) -> Result<(), String> {
    let workspace = Workspace::load(workspace_path).map_err(|e| e.to_string())?;
    let task = workspace
        .task(task_name, workspace_path)
        .map_err(|e| e.to_string())?
        .clone();
    let target = workspace
        .endpoint(&task.target, workspace_path)
        .map_err(|e| e.to_string())?;
    let (Engine::Local, Some(root)) = (target.engine, target.path.clone()) else {
        return Err("bench --curate needs a local target".into());
    };
    let storage = Storage::local(root.clone());
    let (raw, _) = crate::catalog::crawl(&storage, &task.target_settings.bucket_folder)
        .await
        .map_err(|e| e.to_string())?;
    let state = crate::task::checkpoint::Checkpoint::open(
        storage.clone(),
        &task.target_settings.bucket_folder,
        &task.name,
        &task.source,
    )
    .await
    .map_err(|e| e.to_string())?
    .snapshot()
    .await;
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/duckdb_reference.py");
    let exe = std::env::current_exe().map_err(|e| format!("locating tributary itself: {e}"))?;
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;

    for (name, key) in &state.primary_keys {
        let location =
            layout::table_prefix(&task.target_settings.bucket_folder, &task.source, name);
        let Some(table) = raw.tables.get(&location) else {
            continue;
        };
        let [key] = key.as_slice() else {
            println!("{name}: skipped (the DuckDB reference here merges by one key column)");
            continue;
        };
        let (load, cdc): (Vec<String>, Vec<String>) = table
            .files
            .keys()
            .map(|k| root.join(k).to_string_lossy().into_owned())
            .partition(|k| layout::parse_load_number(k.rsplit('/').next().unwrap_or("")).is_some());
        let rows: u64 = table.files.values().filter_map(|f| f.rows).sum();
        let meta = [
            "Op",
            "_position",
            task.target_settings.timestamp_column_name.as_str(),
        ];
        let columns: Vec<String> = table
            .columns()
            .iter()
            .map(|c| c.name.clone())
            .filter(|c| !meta.contains(&c.as_str()))
            .collect();
        let files_json = scratch.path().join("files.json");
        std::fs::write(
            &files_json,
            serde_json::json!({ "load": load, "cdc": cdc, "columns": columns }).to_string(),
        )
        .map_err(|e| e.to_string())?;
        println!(
            "bench: {name}, {} LOAD and {} CDC file(s), {rows} raw rows, {runs} run(s)",
            load.len(),
            cdc.len()
        );
        side_by_side(
            "curate",
            runs,
            || {
                let mut command = Command::new(&exe);
                command
                    .arg("curate")
                    .arg(workspace_path)
                    .args(["--task", task_name, "--rebuild"]);
                ("tributary curate", command)
            },
            || {
                let mut command = Command::new(&python);
                command
                    .arg(&script)
                    .arg("merge")
                    .arg(&files_json)
                    .arg(key)
                    .arg(scratch.path().join("duckdb.parquet"));
                ("DuckDB merge", command)
            },
        )?;

        // A query of the curated table, both reading its Iceberg snapshot.
        let catalog = crate::curate::open_catalog(&workspace, workspace_path)
            .await
            .map_err(|e| e.to_string())?;
        let ident = iceberg::TableIdent::from_strs([&task.source, &name.schema, &name.table])
            .map_err(|e| e.to_string())?;
        let Some(curated) = catalog.load(&ident).await.map_err(|e| e.to_string())? else {
            return Err(format!("{name} was not curated"));
        };
        // Two queries: an aggregate grouped by the second column, summing the third
        // (pgbench_accounts: bid, abalance), and a filtered scan of every column, sorted.
        let column =
            |i: usize| crate::sql::ident(columns.get(i).or(columns.first()).map_or("", |c| c));
        let queries = [
            format!(
                "SELECT {g}, count(*) AS n, sum({v}) AS total FROM {{}} GROUP BY {g} ORDER BY {g}",
                g = column(1),
                v = column(2)
            ),
            format!(
                "SELECT * FROM {{}} WHERE {k} % 100 = 7 ORDER BY {k}",
                k = crate::sql::ident(key)
            ),
        ];
        for query in queries {
            let qualified = [&task.source, &name.schema, &name.table].map(|p| crate::sql::ident(p));
            let ours_sql = query.replace("{}", &qualified.join("."));
            let duck_sql = query.replace("{}", "t");
            println!("query: {ours_sql}");
            side_by_side(
                "query",
                runs,
                || {
                    let mut command = Command::new(&exe);
                    command.arg("query").arg(workspace_path).arg(&ours_sql);
                    ("tributary query", command)
                },
                || {
                    let mut command = Command::new(&python);
                    command
                        .arg(&script)
                        .arg("query")
                        .arg(&curated.metadata_location)
                        .arg(&duck_sql);
                    ("DuckDB query", command)
                },
            )?;
        }
    }
    Ok(())
}

/// Runs `ours` and `reference` one after the other `runs` times, printing each run and then
/// the best times, peak memory and their ratio under `what`.
fn side_by_side(
    what: &str,
    runs: usize,
    ours: impl Fn() -> (&'static str, Command),
    reference: impl Fn() -> (&'static str, Command),
) -> Result<(), String> {
    let mut measured: [Vec<Measured>; 2] = [Vec::new(), Vec::new()];
    let mut names = ["", ""];
    for run in 1..=runs {
        for (side, make) in [&ours as &dyn Fn() -> _, &reference]
            .into_iter()
            .enumerate()
        {
            let (name, mut command) = make();
            command.stdout(Stdio::null());
            let m = measure(command, name)?;
            println!(
                "run {run}: {name:<18} {:>8.2} s  ({:.0} MB peak)",
                m.seconds,
                m.peak_rss_kb as f64 / 1024.0
            );
            names[side] = name;
            measured[side].push(m);
        }
    }
    let best = |v: &[Measured]| v.iter().map(|m| m.seconds).fold(f64::INFINITY, f64::min);
    let peak = |v: &[Measured]| v.iter().map(|m| m.peak_rss_kb).max().unwrap_or(0) / 1024;
    println!(
        "{what}: {} {:.2} s ({} MB peak) vs {} {:.2} s ({} MB peak): ratio {:.2}",
        names[0],
        best(&measured[0]),
        peak(&measured[0]),
        names[1],
        best(&measured[1]),
        peak(&measured[1]),
        best(&measured[0]) / best(&measured[1])
    );
    Ok(())
}
