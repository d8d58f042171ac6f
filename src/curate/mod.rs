//! Curation: for every table a task replicates, a current-state Apache Iceberg table in
//! the curated zone, merged from the raw zone's LOAD and CDC files.
//!
//! Where things are (see README "Curated zone"): the tables live in the task's target under
//! `[curate] folder` (default `curated/<source>/<schema>/<table>/`, Iceberg's `data/` and
//! `metadata/` inside), registered in the workspace's Iceberg SQL catalog
//! ([`crate::catalog::iceberg`]) as namespace `<source>.<schema>`, table `<table>`.
//!
//! Invariants:
//! - a curated table equals the source table as of the last change it applied: its LOAD
//!   files, then every change in `_position` order, deletes applied, truncates clearing it;
//! - incremental: a run reads the current state and only the CDC files holding changes
//!   after the last applied position (`tributary.position` in the snapshot summary, which
//!   the raw catalog's per-file maximum `_position` is compared with). When the table's
//!   load changed (a reload) or its columns did, it is rebuilt from its LOAD files;
//! - what a snapshot applied and its data files commit together, so a crash at any point
//!   leaves the table at its last commit, and the next run applies the same changes once;
//!   files a crashed run left behind are removed by the next run of that table;
//! - one curate at a time per catalog (a lock file beside it).

mod history;
pub mod iceberg;
mod merge;
pub mod models;
mod plan;
pub mod replay;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use ::iceberg::io::FileIO;
use ::iceberg::spec::Schema;
use ::iceberg::{NamespaceIdent, TableCreation, TableIdent};
use arrow_schema::{ArrowError, DataType, Schema as ArrowSchema};
use datafusion::catalog::TableProvider;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;

use crate::catalog::iceberg::{CatalogLocation, IcebergCatalog, IcebergCatalogError, IcebergTable};
use crate::catalog::{self, CatalogError, RawTable};
use crate::config::{ConfigError, CurateSettings, EndpointConfig, Engine, TaskConfig, Workspace};
use crate::ident::TableId;
use crate::lake::adapters::Buckets;
use crate::lake::inspect::{InspectError, ParquetFile};
use crate::lake::{Storage, StorageError, layout};
use crate::task::CheckpointError;
use crate::task::checkpoint::{Checkpoint, SchemaChange, TaskState};

use crate::sql::files_table;
pub use merge::{OP, POSITION};

#[derive(Debug, thiserror::Error)]
pub enum CurateError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    RawCatalog(#[from] CatalogError),
    #[error(transparent)]
    Catalog(#[from] IcebergCatalogError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(
        "table {table} has {format} files; curation reads Parquet. Set data_format = \"parquet\" in the task's target_settings and reload it"
    )]
    NotParquet { table: String, format: String },
    #[error(
        "table {table}: raw file {file} is unreadable ({reason}); replace or delete it, then curate again"
    )]
    Unreadable {
        table: String,
        file: String,
        reason: String,
    },
    #[error(
        "table {table}: task '{task}' recorded no primary key for it, and curation merges changes by key. Run the task once more (it records the keys of the tables it discovers), or give the table a primary key"
    )]
    NoPrimaryKey { table: String, task: String },
    #[error("table {table}: {message}")]
    Schema { table: String, message: String },
    #[error("Iceberg table {table}: {source}")]
    Iceberg {
        table: String,
        #[source]
        source: Box<::iceberg::Error>,
    },
    #[error(
        "table {table}: the merge query failed: {source}{}",
        memory_hint(source)
    )]
    Sql {
        table: String,
        #[source]
        source: DataFusionError,
    },
    #[error(
        "task '{task}' writes its raw zone at the target's root (or in '{folder}'), so the curated zone '{folder}/' would be inside it and read as raw tables. Give the task a bucket_folder (e.g. \"raw\") and reload it, or set [curate] folder elsewhere"
    )]
    CuratedInsideRaw { task: String, folder: String },
    #[error(
        "Iceberg table {table} is curated by task '{other}'; task '{task}' replicates the same source table. Curate one of them (--task), or give the other its own source endpoint name"
    )]
    TableOfAnotherTask {
        table: String,
        task: String,
        other: String,
    },
    #[error(
        "the history of {table} would be the Iceberg table {history}, and that name is taken by a table that is not this history (a source table of that name). Remove \"{table}\" from [curate] history, or rename the source table"
    )]
    HistoryCollision { table: String, history: String },
    #[error(
        "Iceberg table {table} holds the history of {history_of}, so the source table of that name cannot be curated into it. Remove \"{history_of}\" from [curate] history, then drop the Iceberg table {table} and curate again"
    )]
    TableIsHistory { table: String, history_of: String },
    #[error("model {name} is not in the workspace; its models are: {known}")]
    UnknownModel { name: String, known: String },
    #[error("model {model}: {source}")]
    Model {
        model: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "the workspace has models but no target for their tables: set [curate] target = \"<a local target>\""
    )]
    NoModelsTarget,
    #[error("cannot create {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What to do when a query ran out of its memory pool: the pool is `[curate]
/// memory_limit_mb`, which DataFusion's own message does not name.
fn memory_hint(e: &DataFusionError) -> &'static str {
    if matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)) {
        ". Raise [curate] memory_limit_mb: sorts spill to disk, but merging what they spilled, \
         and the changed keys, need memory as the table grows (a 5M-row table with 1M \
         changes needs 512 MB)"
    } else {
        ""
    }
}

impl CurateError {
    fn iceberg(table: impl Into<String>, source: ::iceberg::Error) -> CurateError {
        CurateError::Iceberg {
            table: table.into(),
            source: Box::new(source),
        }
    }
}

/// What `tributary curate` does.
#[derive(Debug, Clone, Default)]
pub struct CurateOptions {
    /// Only this task's tables (default: every task's).
    pub task: Option<String>,
    /// Rebuild every table from its LOAD files and all its changes.
    pub rebuild: bool,
}

/// How an outcome went, for whoever shows it (the app colours by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Done, with something to look at (a check that warned or quarantined rows).
    Warn,
    Failed,
}

/// What happened to one table.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Created,
    Rebuilt(String),
    Merged,
    UpToDate,
    Skipped(String),
    /// The table could not be curated (the error); the others were.
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct TableOutcome {
    /// `source.schema.table`, the curated table's catalog name.
    pub table: String,
    pub action: Action,
    /// Raw files read: the LOAD files of a rebuild and the CDC files.
    pub raw_files: usize,
    pub rows: u64,
    pub data_files: usize,
    pub seconds: f64,
}

impl TableOutcome {
    fn of(table: String, action: Action) -> TableOutcome {
        TableOutcome {
            table,
            action,
            raw_files: 0,
            rows: 0,
            data_files: 0,
            seconds: 0.0,
        }
    }

    pub fn status(&self) -> Status {
        match self.action {
            Action::Failed(_) => Status::Failed,
            _ => Status::Ok,
        }
    }

    pub fn describe(&self) -> String {
        let what = match &self.action {
            Action::Created => "created".to_owned(),
            Action::Rebuilt(why) => format!("rebuilt ({why})"),
            Action::Merged => "merged".to_owned(),
            Action::UpToDate => return format!("{}: up to date", self.table),
            Action::Skipped(why) => return format!("{}: skipped, {why}", self.table),
            Action::Failed(error) => return format!("{}: FAILED: {error}", self.table),
        };
        format!(
            "{}: {what} from {} raw file(s): {} rows in {} data file(s), {:.1}s",
            self.table, self.raw_files, self.rows, self.data_files, self.seconds
        )
    }
}

/// The workspace's Iceberg SQL catalog: `[curate] catalog`, a SQLite file relative to the
/// workspace file's folder, or a PostgreSQL URL.
pub fn catalog_location(settings: &CurateSettings, workspace_path: &Path) -> CatalogLocation {
    let base = workspace_path.parent().unwrap_or(Path::new("."));
    CatalogLocation::parse(&settings.catalog, base)
}

/// Opens the workspace's Iceberg catalog. Its tables' files are in local targets or in the
/// buckets of the workspace's S3 targets, read and written with each target's settings.
pub async fn open_catalog(
    workspace: &Workspace,
    workspace_path: &Path,
) -> Result<IcebergCatalog, CurateError> {
    let location = catalog_location(&workspace.curate, workspace_path);
    let mut buckets = Vec::new();
    for endpoint in workspace
        .endpoints
        .iter()
        .filter(|e| e.engine == Engine::S3)
    {
        buckets.push(Storage::from_endpoint(endpoint).await?);
    }
    Ok(IcebergCatalog::open(&location, Buckets::new(buckets)).await?)
}

/// A curated (or model) table as the catalog and its current snapshot's summary tell it.
#[derive(Debug, Clone)]
pub struct CuratedSummary {
    /// The SQL name: `source.schema.table`, or `schema.name` for a model's table.
    pub name: String,
    pub location: String,
    pub rows: u64,
    pub data_files: u64,
    pub bytes: u64,
    pub snapshots: usize,
    pub updated: Option<chrono::DateTime<chrono::Utc>>,
    pub columns: Vec<(String, String)>,
}

impl CuratedSummary {
    pub fn describe(&self) -> String {
        format!(
            "{} rows, {} data file(s), {}, {} snapshot(s){}",
            self.rows,
            self.data_files,
            crate::lake::human_bytes(self.bytes),
            self.snapshots,
            self.updated
                .map(|t| format!(", updated {}", t.format("%Y-%m-%d %H:%M:%S")))
                .unwrap_or_default()
        )
    }
}

/// Every table of the workspace's Iceberg catalog, from metadata only (no data is read).
pub async fn curated_tables(
    workspace: &Workspace,
    workspace_path: &Path,
) -> Result<Vec<CuratedSummary>, CurateError> {
    let catalog = open_catalog(workspace, workspace_path).await?;
    let mut tables = Vec::new();
    for entry in catalog.list().await? {
        let Some(table) = catalog.load(&entry.ident).await? else {
            continue;
        };
        let metadata = &table.metadata;
        let summary = metadata
            .current_snapshot()
            .map(|s| s.summary().additional_properties.clone())
            .unwrap_or_default();
        let number = |key: &str| summary.get(key).and_then(|v| v.parse().ok()).unwrap_or(0);
        let columns = iceberg::arrow_schema(metadata.current_schema())
            .map(|s| {
                s.fields()
                    .iter()
                    .map(|f| (f.name().clone(), f.data_type().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        tables.push(CuratedSummary {
            name: table.name(),
            location: metadata.location().to_owned(),
            rows: number("total-records"),
            data_files: number("total-data-files"),
            bytes: number("total-files-size"),
            snapshots: metadata.snapshots().len(),
            updated: metadata.current_snapshot().and_then(|s| s.timestamp().ok()),
            columns,
        });
    }
    Ok(tables)
}

/// Curates every table of the selected tasks, reporting each as it is done.
pub async fn curate(
    workspace: &Workspace,
    workspace_path: &Path,
    options: &CurateOptions,
    mut on_table: impl FnMut(&TableOutcome),
) -> Result<Vec<TableOutcome>, CurateError> {
    let tasks: Vec<&TaskConfig> = match &options.task {
        Some(name) => vec![workspace.task(name, workspace_path)?],
        None => workspace.tasks.iter().collect(),
    };
    let catalog = open_catalog(workspace, workspace_path).await?;
    let _lock = catalog.lock().await?;
    let settings = &workspace.curate;
    let ctx = session(settings, catalog.buckets()).map_err(|source| CurateError::Sql {
        table: String::new(),
        source,
    })?;
    let mut outcomes = Vec::new();
    let mut report = |outcome: TableOutcome| {
        on_table(&outcome);
        outcomes.push(outcome);
    };
    for task in tasks {
        let lake = TaskLake::open(workspace, workspace_path, &catalog, task).await?;
        for table in task_tables(&lake.state) {
            let started = Instant::now();
            let job = lake.job(&table, &catalog, &ctx, settings);
            // One table's failure is reported; the others are curated.
            let mut outcome = match curate_table(&job, options.rebuild).await {
                Ok(outcome) => outcome,
                Err(e) => job.outcome(Action::Failed(failure_message(&e, &lake.zone))),
            };
            outcome.seconds = started.elapsed().as_secs_f64();
            report(outcome);
        }
    }
    Ok(outcomes)
}

/// What the lake holds of one task: its state, then the raw zone's listing (in that
/// order: every file of a batch the state confirms is in place before the state says so,
/// so the listing sees it), and where its curated zone is.
pub struct TaskLake<'a> {
    task: &'a TaskConfig,
    pub state: TaskState,
    /// Changes at or after this `_position` may belong to a batch still being written.
    changes_end: Option<String>,
    /// The CDC files of the batch the task is writing.
    pending: HashSet<String>,
    raw: catalog::Catalog,
    zone: Zone,
}

impl<'a> TaskLake<'a> {
    /// Reads task `task`'s state and lists its raw zone; refuses a curated folder inside
    /// the raw zone's (or around it).
    pub async fn open(
        workspace: &Workspace,
        workspace_path: &Path,
        catalog: &IcebergCatalog,
        task: &'a TaskConfig,
    ) -> Result<TaskLake<'a>, CurateError> {
        let settings = &workspace.curate;
        let target = workspace.endpoint(&task.target, workspace_path)?;
        let storage = target_storage(target, catalog.buckets()).await?;
        let bucket_folder = &task.target_settings.bucket_folder;
        let raw_root = layout::folder_prefix(bucket_folder);
        let curated_root = layout::folder_prefix(&settings.folder);
        if raw_root.is_empty()
            || curated_root.is_empty()
            || raw_root.starts_with(&curated_root)
            || curated_root.starts_with(&raw_root)
        {
            return Err(CurateError::CuratedInsideRaw {
                task: task.name.clone(),
                folder: settings.folder.clone(),
            });
        }
        let state = Checkpoint::open(storage.clone(), bucket_folder, &task.name, &task.source)
            .await?
            .snapshot()
            .await;
        let cdc = state.cdc.as_ref();
        // The changes before it are all in the raw zone: those of the batches up to the
        // confirmed position (the state is written after their files).
        let changes_end = cdc
            .and_then(|c| c.confirmed_position.as_ref())
            .map(|p| p.stream_end().into_string());
        let pending = cdc
            .and_then(|c| c.pending_batch.as_ref())
            .map(|p| p.keys.iter().cloned().collect())
            .unwrap_or_default();
        let (raw, _) = catalog::crawl(&storage, bucket_folder).await?;
        Ok(TaskLake {
            task,
            state,
            changes_end,
            pending,
            raw,
            zone: Zone {
                storage,
                folder: settings.folder.clone(),
            },
        })
    }

    /// The tables the task's state knows.
    pub fn tables(&self) -> Vec<TableId> {
        task_tables(&self.state)
    }

    fn job<'j>(
        &'j self,
        table: &'j TableId,
        catalog: &'j IcebergCatalog,
        ctx: &'j SessionContext,
        settings: &'j CurateSettings,
    ) -> TableJob<'j> {
        let location = layout::table_prefix(
            &self.task.target_settings.bucket_folder,
            &self.task.source,
            table,
        );
        TableJob {
            task: self.task,
            state: &self.state,
            table,
            raw: self.raw.tables.get(&location),
            changes_end: self.changes_end.clone(),
            pending: &self.pending,
            zone: &self.zone,
            catalog,
            ctx,
            settings,
        }
    }
}

/// What a table's failure says: the error, and for a full disk (deep inside a writer's
/// error) what it means and what to do.
fn failure_message(e: &CurateError, zone: &Zone) -> String {
    let text = e.to_string();
    if text.contains("No space left on device") || text.contains("os error 28") {
        format!(
            "no space left on the device: {text}. Free space in {} (the curated zone) or in the temporary folder (where large merges spill), then curate again: the table stays as its last commit left it",
            zone.storage.uri(&layout::folder_prefix(&zone.folder))
        )
    } else {
        text
    }
}

/// A target's storage. A local target's folder is made absolute: table locations recorded
/// in the catalog must read the same from any working directory. An S3 target's is the
/// catalog's client for its bucket (buckets are told apart by name only).
pub async fn target_storage(
    target: &EndpointConfig,
    buckets: &Buckets,
) -> Result<Storage, CurateError> {
    if let Some(path) = target
        .path
        .as_ref()
        .filter(|_| target.engine == Engine::Local)
    {
        let root = std::path::absolute(path).map_err(|source| CurateError::Io {
            path: path.clone(),
            source,
        })?;
        return Ok(Storage::local(root));
    }
    if let Some(storage) = target.bucket.as_deref().and_then(|b| buckets.get(b)) {
        return Ok(storage);
    }
    Ok(Storage::from_endpoint(target).await?)
}

/// The tables a task's state knows.
fn task_tables(state: &TaskState) -> Vec<TableId> {
    let mut tables: Vec<TableId> = state.tables.keys().cloned().collect();
    if let Some(cdc) = &state.cdc {
        tables.extend(cdc.tables.keys().cloned());
    }
    tables.sort();
    tables.dedup();
    tables
}

/// Where a target's curated zone is.
struct Zone {
    storage: Storage,
    folder: String,
}

impl Zone {
    fn table_location(&self, source: &str, table: &TableId) -> String {
        let key = layout::table_prefix(&self.folder, source, table);
        self.storage.uri(key.trim_end_matches('/'))
    }
}

struct TableJob<'a> {
    task: &'a TaskConfig,
    state: &'a TaskState,
    table: &'a TableId,
    raw: Option<&'a RawTable>,
    /// Changes at or after this `_position` are not confirmed yet (`None`: none is).
    changes_end: Option<String>,
    /// The CDC files of the batch the task is writing.
    pending: &'a HashSet<String>,
    zone: &'a Zone,
    catalog: &'a IcebergCatalog,
    ctx: &'a SessionContext,
    settings: &'a CurateSettings,
}

impl TableJob<'_> {
    /// The curated table's name, `source.schema.table` (parts quoted where needed).
    fn name(&self) -> String {
        crate::ident::display_name(&[&self.task.source, &self.table.schema, &self.table.table])
    }

    /// The curated table in the Iceberg catalog: namespace `<source>.<schema>`.
    fn ident(&self) -> Result<TableIdent, CurateError> {
        let namespace =
            NamespaceIdent::from_vec(vec![self.task.source.clone(), self.table.schema.clone()])
                .map_err(|source| CurateError::iceberg(self.name(), source))?;
        Ok(TableIdent::new(namespace, self.table.table.clone()))
    }

    fn outcome(&self, action: Action) -> TableOutcome {
        TableOutcome::of(self.name(), action)
    }

    /// What identifies the table's current full load: its snapshot position and files.
    /// A reload changes it, and the curated table is then rebuilt.
    fn load_id(&self) -> String {
        match self.state.tables.get(self.table) {
            Some(load) => {
                let position = load
                    .snapshot_position
                    .as_ref()
                    .or(self.state.snapshot_position.as_ref())
                    .map(ToString::to_string)
                    .unwrap_or_default();
                let bytes: u64 = load.files().map(|f| f.bytes).sum();
                format!("{position}|{} files|{bytes} bytes", load.files().count())
            }
            None => "no load".to_owned(),
        }
    }

    /// The table's schema changes the stream recorded, oldest first.
    fn schema_changes(&self) -> &[SchemaChange] {
        self.state
            .cdc
            .as_ref()
            .and_then(|c| c.tables.get(self.table))
            .map_or(&[], |t| t.schema_changes.as_slice())
    }

    /// Where the table's load stands in the stream: the first `_position` its snapshot
    /// does not hold.
    fn load_position(&self) -> Option<String> {
        self.state
            .tables
            .get(self.table)
            .and_then(|t| t.snapshot_position.as_ref())
            .or(self.state.snapshot_position.as_ref())
            .map(|p| p.snapshot_end().into_string())
    }

    /// Truncate positions recorded for the table, in order: those since its load (a
    /// reloaded table's earlier truncates are in its new load already).
    fn truncates(&self) -> Vec<String> {
        let since = self
            .state
            .tables
            .get(self.table)
            .and_then(|t| t.changes_from.as_ref());
        let mut positions: Vec<String> = self
            .state
            .cdc
            .as_ref()
            .and_then(|c| c.tables.get(self.table))
            .map(|t| {
                t.schema_changes
                    .iter()
                    .filter(|c| c.empties_table() && since.is_none_or(|s| c.position >= *s))
                    .map(|c| c.position.to_string())
                    .collect()
            })
            .unwrap_or_default();
        positions.sort();
        positions
    }

    fn location_of(&self, key: &str) -> String {
        self.zone.storage.uri(key)
    }

    async fn raw_schema(&self, keys: &[&String]) -> Result<ArrowSchema, CurateError> {
        raw_schema(&self.zone.storage, &self.name(), keys).await
    }
}

/// The Arrow schema of the raw files `keys` of `table`, merged by column name.
pub async fn raw_schema(
    storage: &Storage,
    table: &str,
    keys: &[&String],
) -> Result<ArrowSchema, CurateError> {
    let mut merged = ArrowSchema::empty();
    for key in keys {
        let file = ParquetFile::open(storage, key).await.map_err(|e| match e {
            InspectError::Storage(e) => CurateError::Storage(e),
            e => CurateError::Unreadable {
                table: table.to_owned(),
                file: storage.uri(key),
                reason: e.to_string(),
            },
        })?;
        let schema = ArrowSchema::new(
            file.schema()
                .fields()
                .iter()
                // Nullable: a file without the column (a LOAD file has no `Op`) reads NULL.
                .map(|f| {
                    f.as_ref()
                        .clone()
                        .with_metadata(Default::default())
                        .with_nullable(true)
                })
                .collect::<Vec<_>>(),
        );
        merged = merge_widening(&merged, &schema).map_err(|e| CurateError::Schema {
            table: table.to_owned(),
            message: format!(
                "{} disagrees with the table's other files: {e}. A column changed type; reload the table",
                storage.uri(key)
            ),
        })?;
    }
    Ok(merged)
}

/// `a` and `b` merged by column name, where a column widened in place (int to bigint,
/// float to double, a decimal's precision up: [`iceberg::promotable`], and smallint to
/// either) takes the wider type; another type change is an error.
fn merge_widening(a: &ArrowSchema, b: &ArrowSchema) -> Result<ArrowSchema, ArrowError> {
    let wider = |x: &DataType, y: &DataType| {
        iceberg::promotable(x, y)
            || matches!((x, y), (DataType::Int16, DataType::Int32 | DataType::Int64))
    };
    let mut fields: Vec<arrow_schema::FieldRef> = a.fields().iter().cloned().collect();
    let mut rest = Vec::new();
    for field in b.fields() {
        match fields.iter_mut().find(|f| f.name() == field.name()) {
            Some(f) if wider(f.data_type(), field.data_type()) => *f = field.clone(),
            Some(f) if wider(field.data_type(), f.data_type()) => {}
            _ => rest.push(field.clone()),
        }
    }
    ArrowSchema::try_merge([ArrowSchema::new(fields), ArrowSchema::new(rest)])
}

/// A session for merges and queries, spilling beyond the configured memory.
pub fn session(
    settings: &CurateSettings,
    buckets: &Buckets,
) -> Result<SessionContext, DataFusionError> {
    let ctx = crate::sql::session(settings.memory_limit_mb as usize * 1024 * 1024)?;
    buckets.register(&ctx)?;
    Ok(ctx)
}

/// The curated table's current snapshot as a SQL table.
pub async fn table_provider(
    table: &IcebergTable,
    file_io: &FileIO,
) -> Result<Arc<dyn TableProvider>, CurateError> {
    let schema = iceberg::arrow_schema(table.metadata.current_schema())
        .map_err(|source| CurateError::iceberg(table.name(), source))?;
    let files: Vec<String> = iceberg::current_data_files(table, file_io)
        .await?
        .iter()
        .map(|f| f.file_path().to_owned())
        .collect();
    files_table(&files, Arc::new(schema)).map_err(|source| CurateError::Sql {
        table: table.name(),
        source,
    })
}

async fn curate_table(job: &TableJob<'_>, rebuild: bool) -> Result<TableOutcome, CurateError> {
    let name = job.name();
    let ident = job.ident()?;
    let existing = job.catalog.load(&ident).await?;
    let summary = existing
        .as_ref()
        .and_then(|t| t.metadata.current_snapshot())
        .map(|s| s.summary().additional_properties.clone());
    let history_name = job
        .settings
        .history
        .contains(&name)
        .then(|| crate::catalog::iceberg::display_ident(&history::history_ident(&ident)));
    let load_id = job.load_id();
    let history_of = existing
        .as_ref()
        .and_then(|t| t.metadata.properties().get(history::HISTORY_OF))
        .cloned();
    let facts = plan::Facts {
        name: &name,
        task: &job.task.name,
        load_status: job.state.tables.get(job.table).map(|l| l.status),
        raw: job.raw,
        primary_key: job.state.primary_keys.get(job.table).map(Vec::as_slice),
        exists: existing.is_some(),
        summary: summary.as_ref(),
        history_of: history_of.as_deref(),
        history: history_name
            .as_deref()
            .map(|h| (h, history::history_name_taken(job))),
        load_id: &load_id,
        rebuild,
    };
    let (raw, key, mut rebuild, mut after) =
        match plan::decide(&facts, |k| job.zone.storage.uri(k))? {
            plan::Decision::Skip(why) => return Ok(job.outcome(Action::Skipped(why.to_owned()))),
            plan::Decision::Curate {
                raw,
                key,
                rebuild,
                after,
            } => (raw, key, rebuild, after),
        };
    let files = plan::raw_files(raw, job.changes_end.is_some(), job.pending);
    let truncates = job.truncates();
    // A rebuild reads its load and every change, a merge the changes after what the table
    // applied; both from the newest truncate (or drop) on.
    let read_from = |rebuild: bool, after: Option<&str>| {
        let truncated = plan::newest_truncate(&truncates, after);
        let (load, changes) = files.from(raw, rebuild, after, truncated.as_deref());
        let read = [load, &changes[..]].concat();
        (changes, read)
    };
    let (mut changes, read) = match rebuild {
        Some(_) => read_from(true, None),
        None => read_from(false, after.as_deref()),
    };
    let mut raw_schema = job.raw_schema(&read).await?;
    let mut current_columns = None;
    if rebuild.is_none() {
        if changes.is_empty() && plan::newest_truncate(&truncates, after.as_deref()).is_none() {
            return Ok(job.outcome(Action::UpToDate));
        }
        let current = existing
            .as_ref()
            .map(|t| iceberg::arrow_schema(t.metadata.current_schema()))
            .transpose()
            .map_err(|source| CurateError::iceberg(name.clone(), source))?
            .unwrap_or_else(ArrowSchema::empty);
        let new = normalized(&data_columns(&raw_schema, job)).ok();
        if plan::columns_changed(&current, new) {
            rebuild = Some(plan::Rebuild::ColumnsChanged);
            after = None;
            let read;
            (changes, read) = read_from(true, None);
            raw_schema = job.raw_schema(&read).await?;
        } else {
            current_columns = Some(plan::without_dropped(
                &current,
                plan::source_columns(job.schema_changes()),
            ));
        }
    }
    // A merge keeps the table's columns, a rebuild takes every column its files have; in
    // both, a column the source dropped leaves the current schema.
    let columns_arrow =
        current_columns.unwrap_or_else(|| nullable(&data_columns(&raw_schema, job)));
    require_key(&name, &key, &columns_arrow)?;
    let truncated_at = plan::newest_truncate(&truncates, after.as_deref());
    let applied = summary
        .as_ref()
        .and_then(|s| s.get(plan::APPLIED_POSITION))
        .map(String::as_str);
    let work = Work {
        name: name.clone(),
        ident,
        existing,
        raw,
        files,
        changes,
        key,
        rebuild,
        current_names: plan::names_in_current(
            job.schema_changes(),
            applied,
            &names(&columns_arrow),
        ),
        raw_columns: raw_schema,
        after_all: plan::apply_after(after.as_deref(), truncated_at.as_deref()),
        truncated_at,
        columns: columns_arrow,
        load_id: load_id.clone(),
        history: history_name.is_some(),
    };
    write_table(job, work).await
}

/// What [`curate_table`] decided to write, and from what.
struct Work<'a> {
    name: String,
    ident: TableIdent,
    existing: Option<IcebergTable>,
    raw: &'a RawTable,
    files: plan::RawFiles<'a>,
    /// The CDC files to read.
    changes: Vec<&'a String>,
    key: Vec<String>,
    rebuild: Option<plan::Rebuild>,
    /// Changes at or before this position are in the base already.
    after_all: Option<String>,
    /// The newest truncate to apply: the base starts empty.
    truncated_at: Option<String>,
    /// The table's columns (Arrow types as the source has them).
    columns: ArrowSchema,
    /// Each column's name in the table's current schema (`None`: added since).
    current_names: Vec<Option<String>>,
    /// The columns of the raw files read, older names included.
    raw_columns: ArrowSchema,
    load_id: String,
    /// Whether the table's history table is written too.
    history: bool,
}

/// Merges (or rebuilds) the table as `work` says and commits it with what it applied.
async fn write_table(job: &TableJob<'_>, work: Work<'_>) -> Result<TableOutcome, CurateError> {
    let Work {
        name,
        ident,
        existing,
        raw,
        files,
        changes,
        key,
        rebuild,
        after_all,
        truncated_at,
        columns: columns_arrow,
        current_names,
        raw_columns,
        load_id,
        history,
    } = work;
    let sql_error = |source| CurateError::Sql {
        table: name.clone(),
        source,
    };
    let file_columns = Arc::new(
        normalized(&columns_arrow).map_err(|source| CurateError::iceberg(name.clone(), source))?,
    );

    let change_files: Vec<String> = changes.iter().map(|k| job.location_of(k)).collect();
    let merging = merge_columns(job, &file_columns, &raw_columns)?;
    register_changes(job, &merging.read, &change_files)?;
    // A rebuild's base is the load, whose rows stand where its snapshot does.
    let base_position = match (&rebuild, &truncated_at) {
        (Some(_), None) => job.load_position(),
        _ => None,
    };
    let merge = merge::Merge {
        columns: &merging.columns,
        key: &key,
        after: after_all.as_deref(),
        before: job.changes_end.as_deref(),
        fills: &merging.fills,
        base_position: base_position.as_deref(),
        sorted: true,
    };
    let known = plan::newest_from_statistics(
        raw,
        &changes,
        after_all.as_deref(),
        job.changes_end.as_deref(),
    );
    let last_position = match known {
        Some(newest) => newest,
        None => merge.last_position(job.ctx).await.map_err(sql_error)?,
    };
    // Files whose newest change is unknown were read; none of their changes is new.
    if rebuild.is_none() && last_position.is_none() && truncated_at.is_none() {
        return Ok(job.outcome(Action::UpToDate));
    }

    // The table to write into: created, or with a new schema for a rebuild.
    let (table, new_schema) = prepare_table(
        job.catalog,
        job.zone,
        existing,
        &ident,
        job.zone.table_location(&job.task.source, job.table),
        iceberg::NextColumns {
            schema: &columns_arrow,
            current_names: &current_names,
        },
        [("tributary.primary-key".to_owned(), key.join(","))],
    )
    .await?;

    // The base: the LOAD files (rebuild), the current data files (merge), nothing (after a
    // truncate).
    let base_files: Vec<String> = if truncated_at.is_some() {
        Vec::new()
    } else if rebuild.is_some() {
        files.load.iter().map(|k| job.location_of(k)).collect()
    } else {
        iceberg::current_data_files(&table, job.catalog.file_io())
            .await?
            .iter()
            .map(|f| f.file_path().to_owned())
            .collect()
    };
    register_files(job, "base", &base_files, merging.read.clone())?;
    let rows = merge.rows(job.ctx).await.map_err(sql_error)?;
    let applied_position = last_position.or(after_all).unwrap_or_default();
    let properties = [
        (plan::APPLIED_POSITION, applied_position),
        (plan::APPLIED_LOAD, load_id),
        (plan::APPLIED_TASK, job.task.name.clone()),
    ];
    let written = write_snapshot(
        job.catalog,
        &table,
        new_schema,
        rows,
        properties.map(|(k, v)| (k.to_owned(), v)),
        job.settings,
    )
    .await?;
    if history {
        history::write_history(
            job,
            &ident,
            history::history_location(job),
            &key,
            &merging,
            &files.load,
            &plan::changes_after(raw, &files.cdc, None),
        )
        .await?;
    }
    let raw_files = change_files.len()
        + if rebuild.is_some() && truncated_at.is_none() {
            files.load.len()
        } else {
            0
        };
    let action = match rebuild.map(plan::Rebuild::reason) {
        Some(None) => Action::Created,
        Some(Some(reason)) => Action::Rebuilt(reason.to_owned()),
        None => Action::Merged,
    };
    Ok(TableOutcome {
        table: name,
        action,
        raw_files,
        rows: written.rows,
        data_files: written.data_files,
        seconds: 0.0,
    })
}

/// Registers the CDC files `files` as table `changes` in the job's session, read as the
/// table's columns (cast from the files' types by DataFusion, NULL where a file lacks one)
/// and the raw zone's two.
fn register_changes(
    job: &TableJob<'_>,
    file_columns: &ArrowSchema,
    files: &[String],
) -> Result<(), CurateError> {
    let change_schema = ArrowSchema::new(
        file_columns
            .fields()
            .iter()
            .cloned()
            .chain([OP, POSITION].map(|c| {
                Arc::new(arrow_schema::Field::new(
                    c,
                    arrow_schema::DataType::Utf8,
                    true,
                ))
            }))
            .collect::<Vec<_>>(),
    );
    register_files(job, "changes", files, Arc::new(change_schema))
}

/// Registers `files`, read as `schema`, as table `name` in the job's session.
fn register_files(
    job: &TableJob<'_>,
    name: &str,
    files: &[String],
    schema: Arc<ArrowSchema>,
) -> Result<(), CurateError> {
    let sql_error = |source| CurateError::Sql {
        table: job.name(),
        source,
    };
    register(
        job.ctx,
        name,
        files_table(files, schema).map_err(sql_error)?,
    )
    .map_err(sql_error)
}

/// What a merge reads: the table's column names (as the data files hold them), their fills
/// with the columns' types, and the schema the raw files are read with (the columns, then
/// the older names the fills read, typed as the raw files `raw` have them).
struct MergeColumns {
    columns: Vec<String>,
    fills: Vec<(plan::Fill, DataType)>,
    read: Arc<ArrowSchema>,
}

fn merge_columns(
    job: &TableJob<'_>,
    file_columns: &ArrowSchema,
    raw: &ArrowSchema,
) -> Result<MergeColumns, CurateError> {
    let columns = names(file_columns);
    let mut read: Vec<arrow_schema::FieldRef> = file_columns.fields().iter().cloned().collect();
    let mut fills = Vec::new();
    for fill in plan::fills(job.schema_changes(), &columns) {
        let Ok(column) = file_columns.field_with_name(&fill.column) else {
            continue;
        };
        if let plan::Read::Column(older) = &fill.read
            && !read.iter().any(|f| f.name() == older)
        {
            // A name no file read has holds nothing to read.
            let Ok(field) = raw.field_with_name(older) else {
                continue;
            };
            read.push(Arc::new(field.clone().with_nullable(true)));
        }
        fills.push((fill, column.data_type().clone()));
    }
    let read = normalized(&ArrowSchema::new(read))
        .map_err(|source| CurateError::iceberg(job.name(), source))?;
    Ok(MergeColumns {
        columns,
        fills,
        read: Arc::new(read),
    })
}

/// The column names of `schema`, in order.
fn names(schema: &ArrowSchema) -> Vec<String> {
    schema.fields().iter().map(|f| f.name().clone()).collect()
}

/// Refuses a table whose primary key columns are not all among `columns`.
fn require_key(name: &str, key: &[String], columns: &ArrowSchema) -> Result<(), CurateError> {
    match key.iter().find(|k| columns.field_with_name(k).is_err()) {
        Some(k) => Err(CurateError::Schema {
            table: name.to_owned(),
            message: format!("primary key column {k} is not in the raw files"),
        }),
        None => Ok(()),
    }
}

/// The table `ident` ready to take rows with `columns`: created at `location` if it does
/// not exist, else with a new schema (returned, to commit with the rows) if its columns
/// differ (a renamed column keeps its field). Files a crashed run left in it are removed, if it is at `location`.
async fn prepare_table(
    catalog: &IcebergCatalog,
    zone: &Zone,
    existing: Option<IcebergTable>,
    ident: &TableIdent,
    location: String,
    columns: iceberg::NextColumns<'_>,
    properties: impl IntoIterator<Item = (String, String)>,
) -> Result<(IcebergTable, Option<Schema>), CurateError> {
    let iceberg_error =
        |source| CurateError::iceberg(crate::catalog::iceberg::display_ident(ident), source);
    let (table, new_schema) = match existing {
        None => {
            let schema = iceberg::schema_from_arrow(columns.schema, 1).map_err(iceberg_error)?;
            let creation = TableCreation::builder()
                .name(ident.name().to_owned())
                .location(location.clone())
                .schema(schema)
                .properties(
                    properties
                        .into_iter()
                        .chain([("write.format.default".to_owned(), "parquet".to_owned())]),
                )
                .build();
            (catalog.create(ident, creation).await?, None)
        }
        Some(table) => {
            let first_id = table.metadata.last_column_id() + 1;
            let candidate =
                iceberg::evolve(Some(table.metadata.current_schema()), columns, first_id)
                    .map_err(iceberg_error)?;
            let changed = !iceberg::same_columns(&candidate, table.metadata.current_schema());
            (table, changed.then_some(candidate))
        }
    };
    // Only in the folder this table belongs in: a location the catalog says is elsewhere
    // (written by hand or by another tool) is not ours to clean.
    if iceberg::same_location(table.metadata.location(), &location) {
        iceberg::remove_orphans(&table, catalog.file_io(), &zone.storage).await?;
    } else {
        tracing::warn!(
            "{}: its location {} is not {location}; files there that nothing references are left alone",
            table.name(),
            table.metadata.location()
        );
    }
    Ok((table, new_schema))
}

/// What a snapshot holds.
struct Written {
    rows: u64,
    data_files: usize,
}

/// Writes `rows` as the table's whole content and commits it as a new snapshot.
async fn write_snapshot(
    catalog: &IcebergCatalog,
    table: &IcebergTable,
    new_schema: Option<Schema>,
    rows: datafusion::physical_plan::SendableRecordBatchStream,
    properties: impl IntoIterator<Item = (String, String)>,
    settings: &CurateSettings,
) -> Result<Written, CurateError> {
    let schema = new_schema
        .clone()
        .unwrap_or_else(|| table.metadata.current_schema().as_ref().clone());
    let files = iceberg::write_data_files(
        table,
        &schema,
        catalog.file_io(),
        rows,
        settings.target_file_size_mb as usize * 1024 * 1024,
    )
    .await?;
    let written = Written {
        rows: files.iter().map(|f| f.record_count()).sum(),
        data_files: files.len(),
    };
    iceberg::replace(
        catalog,
        table,
        iceberg::Replacement {
            schema: new_schema,
            files,
            properties: properties.into_iter().collect(),
            keep_snapshots: settings.keep_snapshots,
        },
    )
    .await?;
    Ok(written)
}

/// Registers `provider` as `name` in the session, replacing a table of that name.
fn register(
    ctx: &SessionContext,
    name: &str,
    provider: Arc<dyn TableProvider>,
) -> Result<(), DataFusionError> {
    ctx.deregister_table(name)?;
    ctx.register_table(name, provider)?;
    Ok(())
}

/// The table's own columns: the raw zone's additions (`Op`, `_position`, the task's
/// timestamp column) and the columns the source dropped left out.
fn data_columns(schema: &ArrowSchema, job: &TableJob<'_>) -> ArrowSchema {
    let timestamp = &job.task.target_settings.timestamp_column_name;
    let own = ArrowSchema::new(
        schema
            .fields()
            .iter()
            .filter(|f| {
                let n = f.name();
                n != OP && n != POSITION && (timestamp.is_empty() || n != timestamp)
            })
            .cloned()
            .collect::<Vec<_>>(),
    );
    plan::without_dropped(&own, plan::source_columns(job.schema_changes()))
}

/// Source table `table`'s columns (`source`) as the lake holds them: nullable, in the types
/// of its files (those Iceberg lacks widened), without field ids.
pub fn lake_columns(table: &str, source: &ArrowSchema) -> Result<ArrowSchema, CurateError> {
    let schema = normalized(&nullable(source))
        .map_err(|source| CurateError::iceberg(table.to_owned(), source))?;
    Ok(ArrowSchema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_metadata(Default::default()))
            .collect::<Vec<_>>(),
    ))
}

/// `schema` as the data files hold it: the types Iceberg lacks widened (Int16 to Int32).
fn normalized(schema: &ArrowSchema) -> Result<ArrowSchema, ::iceberg::Error> {
    iceberg::arrow_schema(&iceberg::schema_from_arrow(schema, 1)?)
}

/// `schema` with every column nullable: curated columns follow the source's, whose
/// constraints are not the lake's to enforce.
fn nullable(schema: &ArrowSchema) -> ArrowSchema {
    ArrowSchema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    )
}

#[cfg(test)]
mod tests {
    use arrow_schema::Field;

    use super::*;

    #[test]
    fn raw_files_merge_to_the_widest_type_a_column_was_promoted_to() {
        let schema = |t: DataType| {
            ArrowSchema::new(vec![
                Field::new("id", DataType::Int64, true),
                Field::new("n", t, true),
            ])
        };
        let merged = merge_widening(&schema(DataType::Int32), &schema(DataType::Int64)).unwrap();
        assert_eq!(merged.field(1).data_type(), &DataType::Int64);
        let merged = merge_widening(&schema(DataType::Int64), &schema(DataType::Int16)).unwrap();
        assert_eq!(merged.field(1).data_type(), &DataType::Int64);
        let wider = merge_widening(
            &schema(DataType::Decimal128(10, 2)),
            &schema(DataType::Decimal128(20, 2)),
        )
        .unwrap();
        assert_eq!(wider.field(1).data_type(), &DataType::Decimal128(20, 2));
        assert!(merge_widening(&schema(DataType::Int32), &schema(DataType::Utf8)).is_err());
        let added = merge_widening(
            &schema(DataType::Int32),
            &ArrowSchema::new(vec![Field::new("m", DataType::Utf8, true)]),
        )
        .unwrap();
        assert_eq!(added.fields().len(), 3);
    }
}
