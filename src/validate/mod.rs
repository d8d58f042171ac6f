//! `tributary validate`: a task's source tables compared with the lake at one exact source
//! position, with no lag tolerance.
//!
//! How (see README "Validation"):
//! 1. the source is read in one snapshot whose log position P is exact
//!    ([`crate::task::exact_snapshot`]);
//! 2. the task must have confirmed P: every change before it is then in the raw zone
//!    (validate waits, up to [`ValidateOptions::wait`]; meanwhile the first table's source
//!    side is digested, [`EarlyDigest`], since it needs nothing of the lake);
//! 3. the lake's state at P is the raw zone replayed up to P (the load, then each change
//!    before P, with added columns' fills and renamed columns' older names:
//!    [`crate::curate::replay`]), and also the curated
//!    table when it stands exactly at P;
//! 4. each side's rows are digested (key and row hash, [`digest`]), spooled to temporary
//!    files by key, and compared part by part; the first few keys of each kind of
//!    difference are read again to name the differing columns.
//!
//! Invariants: nothing in the lake or the task state is written (`--repair` runs the task's
//! own per-table reload); memory holds one spool part, never a table; a table the lake
//! cannot tell at P is reported as not compared, with why, and counts as a failure.

pub mod digest;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::{Schema, SchemaRef};
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use futures::future::{self, Either};
use tokio::sync::mpsc;

use crate::catalog::iceberg::IcebergCatalog;
use crate::config::{ConfigError, TaskConfig, Workspace};
use crate::curate::replay::{LakeRows, Replayed};
use crate::curate::{self, CurateError, TaskLake};
use crate::ident::TableId;
use crate::source::{SourceError, SourcePosition, TableInfo};
use crate::task::checkpoint::Checkpoint;
use crate::task::{self, ExactSnapshot, RunOptions, TaskError};
use digest::{Differences, DigestError, Digester, Finished, Spool};

/// Errors of a validation, each with what to do.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Curate(#[from] CurateError),
    #[error(transparent)]
    Checkpoint(#[from] task::CheckpointError),
    #[error(
        "task '{task}' has not confirmed the source's position {position} after {seconds} s: its stream stands at {confirmed}. Run the task (tributary run WORKSPACE --task {task}), or wait longer (--wait SECONDS), and validate again"
    )]
    NotCaughtUp {
        task: String,
        position: String,
        confirmed: String,
        seconds: u64,
    },
    #[error(
        "task '{task}' selects no table {table} in the source. Name a table the task replicates (schema.table)"
    )]
    UnknownTable { task: String, table: String },
    #[error("table {table}: {source}")]
    Digest {
        table: String,
        #[source]
        source: DigestError,
    },
    #[error("table {table}: reading the source: {source}")]
    Source {
        table: String,
        #[source]
        source: SourceError,
    },
    #[error("table {table}: reading the lake: {source}")]
    Lake {
        table: String,
        #[source]
        source: datafusion::error::DataFusionError,
    },
    #[error(
        "table {table}: the {side}'s digest stopped: {source}. Validate again, and report it if it recurs"
    )]
    Stopped {
        table: String,
        side: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// What to validate.
#[derive(Debug, Clone)]
pub struct ValidateOptions {
    pub task: String,
    /// Only these tables (default: every table the task selects).
    pub tables: Vec<TableId>,
    /// Reload the tables that differ (the task's per-table reload).
    pub repair: bool,
    /// How long to wait for the task to confirm the snapshot's position.
    pub wait: Duration,
}

/// One side of the lake compared with the source.
#[derive(Debug, Clone, PartialEq)]
pub enum Side {
    Compared(Comparison),
    /// Not compared, and why.
    NotCompared(String),
}

/// A lake side's differences from the source.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub lake_rows: u64,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    /// The first keys of each kind, for people: `missing id=7`, `different id=3: b: x → y`.
    pub samples: Vec<String>,
}

impl Comparison {
    pub fn equal(&self) -> bool {
        self.missing == 0 && self.extra == 0 && self.different == 0
    }

    fn describe(&self) -> String {
        if self.equal() {
            return format!("{} rows equal", self.lake_rows);
        }
        format!(
            "{} missing, {} extra, {} different",
            self.missing, self.extra, self.different
        )
    }
}

/// One table's result.
#[derive(Debug, Clone, PartialEq)]
pub struct TableReport {
    pub table: TableId,
    pub source_rows: u64,
    /// The raw zone replayed to the position.
    pub raw: Side,
    /// The curated table, compared when it stands exactly at the position.
    pub curated: Side,
    /// What makes the table differ beyond its rows (a column the lake lacks).
    pub problems: Vec<String>,
}

impl TableReport {
    /// Equal: the raw zone's state equals the source, and so does the curated table where
    /// it was compared.
    pub fn equal(&self) -> bool {
        self.problems.is_empty()
            && matches!(&self.raw, Side::Compared(c) if c.equal())
            && !matches!(&self.curated, Side::Compared(c) if !c.equal())
    }

    /// A line, and the problems and samples below it.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "{:9} {}: {} source rows; raw zone: {}; curated: {}",
            self.verdict(),
            self.table,
            self.source_rows,
            self.raw.describe(),
            self.curated.describe()
        );
        for line in self.details() {
            text.push_str("\n          ");
            text.push_str(line);
        }
        text
    }

    /// `EQUAL` or `DIFFERENT`.
    pub fn verdict(&self) -> &'static str {
        if self.equal() { "EQUAL" } else { "DIFFERENT" }
    }

    /// What differs: the problems, then each side's samples.
    pub fn details(&self) -> impl Iterator<Item = &str> {
        let samples = [&self.raw, &self.curated]
            .into_iter()
            .flat_map(|s| match s {
                Side::Compared(c) => c.samples.as_slice(),
                Side::NotCompared(_) => &[],
            });
        self.problems.iter().chain(samples).map(String::as_str)
    }
}

impl Side {
    /// `3 rows equal`, `1 missing, 0 extra, 2 different`, or `not compared: why`.
    pub fn describe(&self) -> String {
        match self {
            Side::Compared(c) => c.describe(),
            Side::NotCompared(why) => format!("not compared: {why}"),
        }
    }
}

/// What a validation is doing, as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum ValidateEvent {
    /// The snapshot is open at `position`, with `tables` to compare.
    Snapshot {
        position: String,
        tables: usize,
    },
    /// Waiting for the task, whose stream stands at `confirmed`.
    Waiting {
        confirmed: String,
    },
    Table(TableReport),
    /// `--repair`: these tables are being reloaded.
    Repairing(Vec<TableId>),
}

/// The whole result.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidateReport {
    pub position: String,
    pub tables: Vec<TableReport>,
    /// The tables `--repair` reloaded, and how.
    pub repaired: Option<(Vec<TableId>, Repair)>,
    pub seconds: f64,
}

impl ValidateReport {
    pub fn all_equal(&self) -> bool {
        self.tables.iter().all(TableReport::equal)
    }
}

/// Validates task `options.task` of `workspace`, reporting each table as it is done.
pub async fn validate(
    workspace: &Workspace,
    workspace_path: &Path,
    options: &ValidateOptions,
    mut on_event: impl FnMut(ValidateEvent),
) -> Result<ValidateReport, ValidateError> {
    let started = Instant::now();
    let task_config = workspace.task(&options.task, workspace_path)?;
    let catalog = curate::open_catalog(workspace, workspace_path).await?;
    let ctx = curate::session(&workspace.curate, catalog.buckets()).map_err(|source| {
        ValidateError::Lake {
            table: "(every table)".into(),
            source,
        }
    })?;
    let snapshot = task::exact_snapshot(workspace, workspace_path, task_config).await?;
    let position = describe_position(snapshot.position.as_ref());
    let cx = Context {
        workspace,
        workspace_path,
        task: task_config,
        catalog: &catalog,
        ctx: &ctx,
        snapshot: &snapshot,
    };
    let compared = compare_tables(&cx, options, &mut on_event).await;
    snapshot.close().await;
    let tables = compared?;
    // Only tables compared and found different: one not compared (its load running, a
    // reload pending, gone from the source) is not the repair's to reload.
    let differing: Vec<TableId> = tables
        .iter()
        .filter(|t| !t.equal() && matches!(t.raw, Side::Compared(_)))
        .map(|t| t.table.clone())
        .collect();
    let repaired = if options.repair && !differing.is_empty() {
        on_event(ValidateEvent::Repairing(differing.clone()));
        let repair = repair(workspace, workspace_path, task_config, &catalog, &differing).await?;
        Some((differing, repair))
    } else {
        None
    };
    Ok(ValidateReport {
        position,
        tables,
        repaired,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What every table's comparison shares.
struct Context<'a> {
    workspace: &'a Workspace,
    workspace_path: &'a Path,
    task: &'a TaskConfig,
    catalog: &'a IcebergCatalog,
    ctx: &'a SessionContext,
    snapshot: &'a ExactSnapshot,
}

async fn compare_tables(
    cx: &Context<'_>,
    options: &ValidateOptions,
    on_event: &mut impl FnMut(ValidateEvent),
) -> Result<Vec<TableReport>, ValidateError> {
    let selected = |t: &TableId| options.tables.is_empty() || options.tables.contains(t);
    let in_source: Vec<&TableInfo> = cx
        .snapshot
        .tables
        .iter()
        .filter(|t| selected(&t.id()))
        .collect();
    if let Some(unknown) = options
        .tables
        .iter()
        .find(|t| !cx.snapshot.tables.iter().any(|s| s.id() == **t))
    {
        return Err(ValidateError::UnknownTable {
            task: cx.task.name.clone(),
            table: unknown.to_string(),
        });
    }
    on_event(ValidateEvent::Snapshot {
        position: describe_position(cx.snapshot.position.as_ref()),
        tables: in_source.len(),
    });
    let waiting = async {
        match cx.snapshot.position.as_ref().filter(|_| cx.task.has_cdc()) {
            Some(position) => wait_for_task(cx, position, options.wait, on_event).await,
            None => Ok(()),
        }
    };
    // The source's side needs nothing of the lake: the first table's is digested while the
    // task catches up, and goes on beside its lake side.
    let first = in_source.first().copied();
    let digesting = std::pin::pin!(early_digest(cx, first));
    let mut early = match future::select(std::pin::pin!(waiting), digesting).await {
        Either::Left((waited, digesting)) => {
            waited?;
            Some(Early::Running(digesting))
        }
        Either::Right((digested, waiting)) => {
            waiting.await?;
            Some(Early::Done(digested))
        }
    };
    tracing::info!("the task reached the snapshot");
    let lake = TaskLake::open(cx.workspace, cx.workspace_path, cx.catalog, cx.task).await?;
    tracing::info!("the lake listed");
    let before = cx
        .snapshot
        .position
        .as_ref()
        .map(|p| p.snapshot_end().into_string());
    let mut reports = Vec::new();
    for info in &in_source {
        // One table's failure (a file gone meanwhile, a type the lake cannot hold) is
        // reported; the others are compared.
        let report = compare_table(cx, &lake, info, before.as_deref(), early.take())
            .await
            .unwrap_or_else(|e| {
                let why = e.to_string();
                TableReport {
                    table: info.id(),
                    source_rows: 0,
                    raw: Side::NotCompared(why.clone()),
                    curated: Side::NotCompared(why),
                    problems: Vec::new(),
                }
            });
        on_event(ValidateEvent::Table(report.clone()));
        reports.push(report);
    }
    // Tables the lake holds that the source no longer has (dropped, or deselected).
    let source_ids: HashSet<TableId> = cx.snapshot.tables.iter().map(TableInfo::id).collect();
    for table in lake
        .tables()
        .into_iter()
        .filter(|t| selected(t) && !source_ids.contains(t))
    {
        let report = TableReport {
            table,
            source_rows: 0,
            raw: Side::NotCompared("not in the source".into()),
            curated: Side::NotCompared("not in the source".into()),
            problems: vec![
                "the lake holds this table, the source does not (dropped, or no longer selected by the task)".into(),
            ],
        };
        on_event(ValidateEvent::Table(report.clone()));
        reports.push(report);
    }
    Ok(reports)
}

/// Waits until the task has confirmed the snapshot's position: in its state, or where the
/// source keeps the task's progress (a slot an idle task moved past a heartbeat).
async fn wait_for_task(
    cx: &Context<'_>,
    position: &SourcePosition,
    wait: Duration,
    on_event: &mut impl FnMut(ValidateEvent),
) -> Result<(), ValidateError> {
    let target = position.snapshot_end();
    let target_storage = cx.workspace.endpoint(&cx.task.target, cx.workspace_path)?;
    let storage = curate::target_storage(target_storage, cx.catalog.buckets()).await?;
    let started = Instant::now();
    let mut told = None;
    loop {
        let state = Checkpoint::open(
            storage.clone(),
            &cx.task.target_settings.bucket_folder,
            &cx.task.name,
            &cx.task.source,
        )
        .await?
        .snapshot()
        .await;
        let confirmed = state.cdc.and_then(|c| c.confirmed_position);
        // The source's view is a second opinion: a failure to read it is not fatal.
        let seen = cx.snapshot.confirmed().await.unwrap_or_else(|e| {
            tracing::warn!("{e}: reading how far the task has got at the source");
            None
        });
        if reached(confirmed.as_ref(), &target) || reached(seen.as_ref(), &target) {
            return Ok(());
        }
        let mut stands = confirmed
            .as_ref()
            .map_or_else(|| "nothing yet".to_owned(), ToString::to_string);
        if let Some(seen) = &seen {
            stands.push_str(&format!(" (the source has it at {seen})"));
        }
        if started.elapsed() >= wait {
            return Err(ValidateError::NotCaughtUp {
                task: cx.task.name.clone(),
                position: position.to_string(),
                confirmed: stands,
                seconds: wait.as_secs(),
            });
        }
        if told.as_ref() != Some(&stands) {
            on_event(ValidateEvent::Waiting {
                confirmed: stands.clone(),
            });
            told = Some(stands);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A snapshot's position for people.
fn describe_position(position: Option<&SourcePosition>) -> String {
    position.map_or_else(
        || "now (the source keeps no change log)".into(),
        ToString::to_string,
    )
}

/// Whether a stream confirmed up to `confirmed` holds every change before `target`.
fn reached(
    confirmed: Option<&SourcePosition>,
    target: &crate::source::position::ChangePosition,
) -> bool {
    confirmed.is_some_and(|c| c.stream_end() >= *target)
}

/// The columns compared: the source's, in the lake's types; and the source's columns the
/// lake lacks.
fn compared_columns(source: &Schema, lake: &Schema) -> (SchemaRef, Vec<String>) {
    let mut missing = Vec::new();
    let fields: Vec<_> = source
        .fields()
        .iter()
        .filter_map(|f| match lake.field_with_name(f.name()) {
            Ok(l) => Some(l.clone()),
            Err(_) => {
                missing.push(f.name().clone());
                None
            }
        })
        .collect();
    (Arc::new(Schema::new(fields)), missing)
}

/// The first table's source side, started before its lake side was known: done, or still
/// being digested (`F`).
enum Early<F> {
    Done(Option<EarlyDigest>),
    Running(F),
}

/// A table's source side, digested before its lake side was known: with the digester
/// the lake's columns would most likely need (the source's, in the lake's types).
struct EarlyDigest {
    table: TableId,
    digester: Arc<Digester>,
    spool: Result<Finished, ValidateError>,
}

impl EarlyDigest {
    /// Whether this digest is the one `digester` would make of table `table`: the same
    /// key and the same columns in the same types and order.
    fn fits(&self, table: &TableId, digester: &Digester) -> bool {
        let same = |a: &Schema, b: &Schema| {
            a.fields().len() == b.fields().len()
                && a.fields()
                    .iter()
                    .zip(b.fields())
                    .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
        };
        self.table == *table
            && self.digester.key_columns() == digester.key_columns()
            && same(self.digester.schema(), digester.schema())
    }
}

/// Table `info`'s source side, digested as [`EarlyDigest`] says (`None`: no table, or its
/// columns have no lake form).
async fn early_digest(cx: &Context<'_>, info: Option<&TableInfo>) -> Option<EarlyDigest> {
    let info = info?;
    // A table whose columns have no lake form is digested once its lake side says how.
    let schema = curate::lake_columns(&info.qualified_name(), &info.arrow_schema).ok()?;
    let digester = Arc::new(Digester::new(Arc::new(schema), &info.primary_key).ok()?);
    let spool = digest_source(cx, info, &digester, row_estimate(info)).await;
    Some(EarlyDigest {
        table: info.id(),
        digester,
        spool,
    })
}

/// Rows to size a table's parts for: the source's estimate, or its size where it has none
/// (a table never analyzed), at least a row per 100 bytes.
fn row_estimate(info: &TableInfo) -> u64 {
    info.estimated_rows.max(info.size_bytes / 100).max(1)
}

async fn compare_table(
    cx: &Context<'_>,
    lake: &TaskLake<'_>,
    info: &TableInfo,
    before: Option<&str>,
    early: Option<Early<impl Future<Output = Option<EarlyDigest>>>>,
) -> Result<TableReport, ValidateError> {
    let table = info.id();
    let name = table.to_string();
    let settings = &cx.workspace.curate;
    let replayed =
        curate::replay::replay(lake, cx.catalog, cx.ctx, settings, &table, before).await?;
    let lake_rows = match replayed {
        Replayed::Rows(rows) => rows,
        Replayed::Unknown(why) => {
            return Ok(TableReport {
                table,
                source_rows: 0,
                raw: Side::NotCompared(why.clone()),
                curated: Side::NotCompared(why),
                problems: Vec::new(),
            });
        }
    };
    let (schema, absent) = compared_columns(&info.arrow_schema, &lake_rows.columns);
    let mut problems: Vec<String> = absent
        .iter()
        .map(|c| format!("column {c} is in the source and not in the lake"))
        .collect();
    if !info.primary_key.is_empty() && info.primary_key != lake_rows.key {
        problems.push(format!(
            "the source's primary key is ({}), the lake's ({})",
            info.primary_key.join(", "),
            lake_rows.key.join(", ")
        ));
    }
    let digest_error = |source| ValidateError::Digest {
        table: name.clone(),
        source,
    };
    let digester = Arc::new(Digester::new(schema, &lake_rows.key).map_err(digest_error)?);
    let estimate = row_estimate(info);
    let LakeRows {
        rows,
        newest,
        load_id,
        ..
    } = lake_rows;
    // The lake's side digests on a task of its own, the source's here, at the same time.
    let started = Instant::now();
    let lake_side = tokio::spawn(digest_stream(
        rows,
        digester.clone(),
        estimate,
        name.clone(),
    ));
    let early = match early {
        Some(Early::Done(digested)) => digested,
        Some(Early::Running(digesting)) => digesting.await,
        None => None,
    };
    let source_spool = match early.filter(|e| e.fits(&table, &digester)) {
        Some(early) => early.spool,
        None => digest_source(cx, info, &digester, estimate).await,
    };
    let source_spool = match source_spool {
        Ok(spool) => spool,
        Err(e) => {
            lake_side.abort();
            return Err(e);
        }
    };
    tracing::info!("{name}: source digested in {:?}", started.elapsed());
    let lake_spool = lake_side.await.map_err(|source| ValidateError::Stopped {
        table: name.clone(),
        side: "lake",
        source,
    })??;
    tracing::info!("{name}: lake digested in {:?}", started.elapsed());
    let raw = digest::compare(&source_spool, &lake_spool).map_err(digest_error)?;
    tracing::info!("{name}: compared in {:?}", started.elapsed());

    // The curated table, when it stands where the replay does.
    let curated_rows = curate::replay::curated_rows(
        lake,
        cx.catalog,
        cx.ctx,
        settings,
        &table,
        (&load_id, newest.as_deref()),
    )
    .await?;
    let curated = match curated_rows {
        Err(why) => Side::NotCompared(why),
        Ok(rows) => {
            let spool = digest_stream(rows, digester.clone(), estimate, name.clone()).await?;
            let differences = digest::compare(&source_spool, &spool).map_err(digest_error)?;
            Side::Compared(comparison(&digester, &differences, spool.rows, Vec::new()))
        }
    };
    let details = if raw.different_keys.is_empty() {
        Vec::new()
    } else {
        differing_rows(cx, lake, info, &digester, &raw.different_keys, before).await?
    };
    Ok(TableReport {
        table,
        source_rows: source_spool.rows,
        raw: Side::Compared(comparison(&digester, &raw, lake_spool.rows, details)),
        curated,
        problems,
    })
}

/// A side's comparison for people; `details` name the differing columns of the first
/// different keys, in their order.
fn comparison(
    digester: &Digester,
    d: &Differences,
    lake_rows: u64,
    details: Vec<String>,
) -> Comparison {
    let mut samples: Vec<String> = Vec::new();
    samples.extend(
        d.missing_keys
            .iter()
            .map(|k| format!("missing {}", digester.describe_key(k))),
    );
    samples.extend(
        d.extra_keys
            .iter()
            .map(|k| format!("extra {}", digester.describe_key(k))),
    );
    for (i, k) in d.different_keys.iter().enumerate() {
        let columns = details.get(i).map(String::as_str).unwrap_or("");
        samples.push(format!("different {}{columns}", digester.describe_key(k)));
    }
    Comparison {
        lake_rows,
        missing: d.missing,
        extra: d.extra,
        different: d.different,
        samples,
    }
}

/// Passes each batch of a lake stream to `each`.
async fn read_lake(
    mut rows: SendableRecordBatchStream,
    table: &str,
    mut each: impl FnMut(&RecordBatch) -> Result<(), DigestError>,
) -> Result<(), ValidateError> {
    while let Some(batch) = rows.next().await {
        let batch = batch.map_err(|source| ValidateError::Lake {
            table: table.to_owned(),
            source,
        })?;
        each(&batch).map_err(|source| ValidateError::Digest {
            table: table.to_owned(),
            source,
        })?;
    }
    Ok(())
}

/// Digests a lake stream whole (on a task of its own: everything owned).
async fn digest_stream(
    rows: SendableRecordBatchStream,
    digester: Arc<Digester>,
    estimate: u64,
    table: String,
) -> Result<Finished, ValidateError> {
    let digest_error = |source| ValidateError::Digest {
        table: table.clone(),
        source,
    };
    let mut spool = Spool::new(estimate).map_err(digest_error)?;
    read_lake(rows, &table, |batch| digester.digest(batch, &mut spool)).await?;
    spool.finish().map_err(digest_error)
}

/// Reads `info` from the snapshot, passing each batch to `each`.
async fn read_source(
    cx: &Context<'_>,
    info: &TableInfo,
    mut each: impl FnMut(&RecordBatch) -> Result<(), DigestError>,
) -> Result<(), ValidateError> {
    let name = info.id().to_string();
    let (tx, mut rx) = mpsc::channel::<RecordBatch>(4);
    let read = cx.snapshot.read(info, tx);
    let consume = async {
        while let Some(batch) = rx.recv().await {
            each(&batch)?;
        }
        Ok::<(), DigestError>(())
    };
    let (read, consumed) = tokio::join!(read, consume);
    consumed.map_err(|source| ValidateError::Digest {
        table: name.clone(),
        source,
    })?;
    read.map_err(|source| ValidateError::Source {
        table: name,
        source,
    })?;
    Ok(())
}

/// Digests table `info` from the snapshot: the snapshot's readers send batches to a task of
/// its own that digests them, so the hashing runs beside the reading (and beside whatever
/// the caller awaits at the same time, the wait for the task among them).
async fn digest_source(
    cx: &Context<'_>,
    info: &TableInfo,
    digester: &Arc<Digester>,
    estimate: u64,
) -> Result<Finished, ValidateError> {
    let name = info.id().to_string();
    let digest_error = |source| ValidateError::Digest {
        table: name.clone(),
        source,
    };
    let mut spool = Spool::new(estimate).map_err(digest_error)?;
    let (tx, mut rx) = mpsc::channel::<RecordBatch>(4);
    let digesting = {
        let digester = digester.clone();
        tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                digester.digest(&batch, &mut spool)?;
            }
            spool.finish()
        })
    };
    let read = cx.snapshot.read(info, tx).await;
    let digested = digesting.await.map_err(|source| ValidateError::Stopped {
        table: name.clone(),
        side: "source",
        source,
    })?;
    read.map_err(|source| ValidateError::Source {
        table: name.clone(),
        source,
    })?;
    digested.map_err(digest_error)
}

/// For each of `keys` (rows on both sides that differ), `: column: source → lake, …`;
/// the source and the replay are read once more, keeping only those rows.
async fn differing_rows(
    cx: &Context<'_>,
    lake: &TaskLake<'_>,
    info: &TableInfo,
    digester: &Digester,
    keys: &[Vec<u8>],
    before: Option<&str>,
) -> Result<Vec<String>, ValidateError> {
    let name = info.id().to_string();
    let wanted: HashSet<Vec<u8>> = keys.iter().cloned().collect();
    let mut source = Vec::new();
    read_source(cx, info, |batch| {
        source.extend(digester.find(batch, &wanted)?);
        Ok(())
    })
    .await?;
    let mut lake_found = Vec::new();
    let settings = &cx.workspace.curate;
    if let Replayed::Rows(rows) =
        curate::replay::replay(lake, cx.catalog, cx.ctx, settings, &info.id(), before).await?
    {
        read_lake(rows.rows, &name, |batch| {
            lake_found.extend(digester.find(batch, &wanted)?);
            Ok(())
        })
        .await?;
    }
    Ok(keys
        .iter()
        .map(|k| {
            let row = |found: &[digest::FoundRow]| {
                found
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, values)| values.clone())
            };
            match (row(&source), row(&lake_found)) {
                (Some(s), Some(l)) => format!(
                    ": {}",
                    digest::differing_columns(digester.schema(), &s, &l).join("; ")
                ),
                _ => String::new(),
            }
        })
        .collect())
}

/// What `--repair` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Repair {
    /// A CDC task was asked to reload the tables (the request's URI): it does so within
    /// seconds while it runs, or on its next run.
    Requested(String),
    /// A full-load task's tables were loaded again here.
    Reloaded,
}

/// Reloads `tables` through the task's per-table reload: a CDC task, which runs elsewhere
/// (validate waited for it), is asked to; a full-load task's tables load again here.
async fn repair(
    workspace: &Workspace,
    workspace_path: &Path,
    task_config: &TaskConfig,
    catalog: &IcebergCatalog,
    tables: &[TableId],
) -> Result<Repair, ValidateError> {
    if task_config.has_cdc() {
        let target = workspace.endpoint(&task_config.target, workspace_path)?;
        let storage = curate::target_storage(target, catalog.buckets()).await?;
        let uri = task::requests::request_reload(
            &storage,
            &task_config.target_settings.bucket_folder,
            &task_config.name,
            tables,
            "tributary validate --repair",
        )
        .await
        .map_err(CurateError::from)?;
        return Ok(Repair::Requested(uri));
    }
    let handle = task::start_task(
        &tokio::runtime::Handle::current(),
        Arc::new(workspace.clone()),
        workspace_path.to_path_buf(),
        &task_config.name,
        RunOptions {
            reload_tables: tables.to_vec(),
            ..RunOptions::default()
        },
    );
    handle.finish().await?;
    Ok(Repair::Reloaded)
}

#[cfg(test)]
mod tests {
    use arrow_schema::{DataType, Field};

    use super::*;

    fn comparison(missing: u64) -> Side {
        Side::Compared(Comparison {
            lake_rows: 3,
            missing,
            extra: 0,
            different: 0,
            samples: Vec::new(),
        })
    }

    fn report(raw: Side, curated: Side, problems: Vec<String>) -> TableReport {
        TableReport {
            table: TableId::new("public", "t"),
            source_rows: 3,
            raw,
            curated,
            problems,
        }
    }

    #[test]
    fn a_table_is_equal_only_when_its_replay_is_and_its_curated_table_does_not_differ() {
        let not = || Side::NotCompared("why".into());
        assert!(report(comparison(0), not(), vec![]).equal());
        assert!(report(comparison(0), comparison(0), vec![]).equal());
        assert!(!report(comparison(0), comparison(1), vec![]).equal());
        assert!(!report(comparison(1), not(), vec![]).equal());
        assert!(
            !report(not(), not(), vec![]).equal(),
            "not compared is no pass"
        );
        assert!(!report(comparison(0), not(), vec!["column c".into()]).equal());
    }

    #[test]
    fn columns_are_compared_in_the_lake_types_and_a_missing_one_is_named() {
        let source = Schema::new(vec![
            Field::new("id", DataType::Int16, true),
            Field::new("new", DataType::Utf8, true),
        ]);
        let lake = Schema::new(vec![
            Field::new("dropped", DataType::Utf8, true),
            Field::new("id", DataType::Int32, true),
        ]);
        let (schema, missing) = compared_columns(&source, &lake);
        assert_eq!(schema.fields().len(), 1);
        assert_eq!(schema.field(0).data_type(), &DataType::Int32);
        assert_eq!(missing, ["new"]);
    }
}
