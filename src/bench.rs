//! `tributary bench`: a full load measured beside the source's own export, in one run.
//!
//! The reference is what PostgreSQL itself can export: `psql -c "\copy (select * from t) to
//! /dev/null with (format binary)"`, one table after another. The subject is `tributary run
//! --reload` of the same task, in a child process so its peak RSS is its own (`wait4`). Both
//! run back to back `runs` times after one unmeasured warm-up export, so they see the same
//! cache; the best time of each is reported, with the ratio tributary / reference.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::config::{Engine, Workspace};
use crate::lake::{Storage, layout};
use crate::source::postgres::{PgEndpoint, PostgresSource};
use crate::source::{SelectionRules, Source, TableInfo};

/// One measured process: wall time and peak resident memory.
#[derive(Debug, Clone, Copy)]
struct Measured {
    seconds: f64,
    peak_rss_kb: u64,
}

pub async fn full_load(workspace_path: &Path, task_name: &str, runs: usize) -> Result<(), String> {
    let workspace = Workspace::load(workspace_path).map_err(|e| e.to_string())?;
    let task = workspace
        .task(task_name, workspace_path)
        .map_err(|e| e.to_string())?;
    let source = workspace
        .endpoint(&task.source, workspace_path)
        .map_err(|e| e.to_string())?;
    if source.engine != Engine::Postgres {
        return Err(format!(
            "bench compares with psql's \\copy; endpoint '{}' is not PostgreSQL",
            source.name
        ));
    }
    let password = source.resolve_password().map_err(|e| e.to_string())?;
    let pg = PgEndpoint::from_config(source, password.clone());
    let tables = PostgresSource::new(pg.clone())
        .discover(&SelectionRules::new(&task.include, &task.exclude))
        .await
        .map_err(|e| e.to_string())?;
    if tables.is_empty() {
        return Err(format!("task '{task_name}' selects no table"));
    }
    let rows = count_rows(&pg, &tables).await?;
    let heap_bytes: u64 = tables.iter().map(|t| t.size_bytes).sum();
    println!(
        "bench: task {task_name}, {} table(s), {rows} rows, {:.1} MB on disk in the source, {runs} run(s)",
        tables.len(),
        mb(heap_bytes)
    );

    let copy = || psql_copy(source, password.as_deref(), &tables);
    copy()?; // warm-up: both sides then read from the same cache
    let mut reference = Vec::new();
    let mut subject = Vec::new();
    for run in 1..=runs {
        let r = copy()?;
        println!(
            "run {run}: psql \\copy binary {:>8.2} s  ({:.0} MB peak)",
            r.seconds,
            r.peak_rss_kb as f64 / 1024.0
        );
        let t = tributary_run(workspace_path, task_name)?;
        println!(
            "run {run}: tributary run    {:>8.2} s  ({:.0} MB peak)",
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
    let written = written_bytes(&workspace, workspace_path, task_name, &tables).await?;
    let peak_rss = subject.iter().map(|m| m.peak_rss_kb).max().unwrap_or(0);
    println!();
    println!("                     seconds     rows/s   source MB/s");
    println!(
        "psql \\copy binary  {:>9.2} {:>10.0} {:>13.1}",
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
    println!("ratio tributary / psql: {:.2}", t.seconds / r.seconds);
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
            quote_ident(&t.schema),
            quote_ident(&t.name)
        );
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut conn)
            .await
            .map_err(|e| format!("counting rows of {}: {e}", t.qualified_name()))?;
        rows += n as u64;
    }
    Ok(rows)
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The reference: each table exported by psql's binary `\copy` to /dev/null, in turn.
fn psql_copy(
    source: &crate::config::EndpointConfig,
    password: Option<&str>,
    tables: &[TableInfo],
) -> Result<Measured, String> {
    let mut total = Measured {
        seconds: 0.0,
        peak_rss_kb: 0,
    };
    for t in tables {
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
                quote_ident(&t.schema),
                quote_ident(&t.name)
            ))
            .stdout(Stdio::null());
        if let Some(p) = password {
            command.env("PGPASSWORD", p);
        }
        let m = measure(command, "psql (install the PostgreSQL client)")?;
        total.seconds += m.seconds;
        total.peak_rss_kb = total.peak_rss_kb.max(m.peak_rss_kb);
    }
    Ok(total)
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
fn wait_with_rusage(pid: i32) -> std::io::Result<(i32, u64)> {
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in; pid is our own child, reaped once here
    // (the `Child` handle is never waited on afterwards).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Ok((code, usage.ru_maxrss as u64))
}

/// What the task's last run wrote: the size of every file under its tables' folders.
async fn written_bytes(
    workspace: &Workspace,
    path: &Path,
    task_name: &str,
    tables: &[TableInfo],
) -> Result<u64, String> {
    let task = workspace.task(task_name, path).map_err(|e| e.to_string())?;
    let target = workspace
        .endpoint(&task.target, path)
        .map_err(|e| e.to_string())?;
    let storage = Storage::from_endpoint(target)
        .await
        .map_err(|e| e.to_string())?;
    let mut bytes = 0;
    for t in tables {
        let prefix = layout::table_prefix(
            &task.target_settings.bucket_folder,
            &task.source,
            &t.schema,
            &t.name,
        );
        let files = storage.list_all(&prefix).await.map_err(|e| e.to_string())?;
        bytes += files.iter().map(|f| f.size).sum::<u64>();
    }
    Ok(bytes)
}
