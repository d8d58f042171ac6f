//! SQL over the lake, the workspace's Athena: one DataFusion session in which every
//! curated table and every raw table is a table.
//!
//! Names: a curated table is `<source>.<schema>.<table>` (its Iceberg namespace and name);
//! the raw zone's files of the same table are `<source>_raw.<schema>.<table>`, with DMS's
//! `Op` and `_position` columns and one row per load row and per change. Model outputs
//! ([`crate::curate::models`]) are `<schema>.<name>` in the default catalog `lake`.
//! Invariants: the session reads each table's files as of when it was built (a curated
//! table's current snapshot); nothing is loaded into memory until a query runs.

use std::path::Path;
use std::sync::Arc;

use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;

use crate::catalog::iceberg::IcebergCatalog;
use crate::config::Workspace;
use crate::curate::{self, CurateError};
use crate::lake::adapters::Buckets;

pub use crate::sql::DEFAULT_CATALOG;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Curate(#[from] CurateError),
    #[error(transparent)]
    Catalog(#[from] crate::catalog::iceberg::IcebergCatalogError),
    #[error("{0}")]
    Sql(#[from] DataFusionError),
    #[error("cannot export to {path}: name a .csv or .parquet file")]
    Export { path: std::path::PathBuf },
}

/// A session over the workspace's lake: curated tables from the Iceberg catalog, raw tables
/// from the raw zone's catalog (crawled first, so new files are seen).
pub async fn lake_session(
    workspace: &Workspace,
    workspace_path: &Path,
) -> Result<SessionContext, QueryError> {
    // A catalog with no table yet still opens; the curated tables appear once curated.
    let catalog = curate::open_catalog(workspace, workspace_path).await?;
    let ctx = curate::session(&workspace.curate, catalog.buckets())?;
    register_curated(&ctx, &catalog).await?;
    register_raw(&ctx, workspace, catalog.buckets()).await?;
    Ok(ctx)
}

/// Registers every table of the Iceberg catalog, as of its current snapshot.
pub async fn register_curated(
    ctx: &SessionContext,
    catalog: &IcebergCatalog,
) -> Result<(), QueryError> {
    for entry in catalog.list().await? {
        let Some(table) = catalog.load(&entry.ident).await? else {
            continue;
        };
        let provider = curate::table_provider(&table, catalog.file_io()).await?;
        let levels = entry.ident.namespace().clone().inner();
        let (catalog_name, schema_name) = match levels.as_slice() {
            [schema] => (DEFAULT_CATALOG.to_owned(), schema.clone()),
            [catalog, rest @ ..] => (catalog.clone(), rest.join(".")),
            [] => (DEFAULT_CATALOG.to_owned(), "public".to_owned()),
        };
        register(
            ctx,
            &catalog_name,
            &schema_name,
            entry.ident.name(),
            provider,
        )?;
    }
    Ok(())
}

async fn register_raw(
    ctx: &SessionContext,
    workspace: &Workspace,
    buckets: &Buckets,
) -> Result<(), QueryError> {
    let mut seen = std::collections::BTreeSet::new();
    for task in &workspace.tasks {
        let Some(target) = workspace.endpoints.iter().find(|e| e.name == task.target) else {
            continue;
        };
        let bucket_folder = &task.target_settings.bucket_folder;
        if !seen.insert((target.name.clone(), bucket_folder.clone())) {
            continue;
        }
        // A target that cannot be read (a bucket offline, access denied) leaves its raw
        // tables out, not the lake: the curated tables and the other targets stay queryable.
        let storage = curate::target_storage(target, buckets).await?;
        let raw = match crate::catalog::crawl(&storage, bucket_folder).await {
            Ok((raw, _)) => raw,
            Err(e) => {
                tracing::warn!("the raw zone of task {} is not queryable: {e}", task.name);
                continue;
            }
        };
        for table in raw.tables.values() {
            if table.formats.iter().any(|f| f != "parquet") {
                continue;
            }
            let keys: Vec<&String> = table
                .files
                .iter()
                .filter(|(_, f)| f.unreadable.is_none())
                .map(|(k, _)| k)
                .collect();
            let name = table.qualified_name();
            // A table whose files disagree (a column changed type) is left out, not the lake.
            let schema = match curate::raw_schema(&storage, &name, &keys).await {
                Ok(schema) => schema,
                Err(e) => {
                    tracing::warn!("raw table {name} is not queryable: {e}");
                    continue;
                }
            };
            let files: Vec<String> = keys.iter().map(|k| storage.uri(k)).collect();
            let provider = crate::sql::files_table(&files, Arc::new(schema))?;
            register(
                ctx,
                &format!("{}_raw", table.source),
                &table.schema,
                &table.table,
                provider,
            )?;
        }
    }
    Ok(())
}

fn register(
    ctx: &SessionContext,
    catalog: &str,
    schema: &str,
    table: &str,
    provider: Arc<dyn datafusion::catalog::TableProvider>,
) -> Result<(), DataFusionError> {
    let catalog_provider = match ctx.catalog(catalog) {
        Some(c) => c,
        None => {
            let c: Arc<dyn CatalogProvider> = Arc::new(MemoryCatalogProvider::new());
            ctx.register_catalog(catalog, c.clone());
            c
        }
    };
    let schema_provider = match catalog_provider.schema(schema) {
        Some(s) => s,
        None => {
            let s = Arc::new(MemorySchemaProvider::new());
            catalog_provider.register_schema(schema, s.clone())?;
            s
        }
    };
    // Registered again after a model's run: the newest snapshot replaces the older one.
    schema_provider.deregister_table(table)?;
    schema_provider.register_table(table.to_owned(), provider)?;
    Ok(())
}

/// Writes the whole result of `frame` to `path` (`.csv` or `.parquet`, by extension),
/// streaming; returns the rows written.
pub async fn export(
    frame: datafusion::dataframe::DataFrame,
    path: &Path,
) -> Result<u64, QueryError> {
    use datafusion::dataframe::DataFrameWriteOptions;
    let target = path.to_string_lossy().into_owned();
    let options = DataFrameWriteOptions::new().with_single_file_output(true);
    let written = match path.extension().and_then(|e| e.to_str()) {
        Some("parquet") => frame.write_parquet(&target, options, None).await?,
        Some("csv") => frame.write_csv(&target, options, None).await?,
        _ => {
            return Err(QueryError::Export {
                path: path.to_owned(),
            });
        }
    };
    Ok(written
        .iter()
        .filter_map(|b| {
            use arrow_array::Array;
            let counts = b
                .column(0)
                .as_any()
                .downcast_ref::<arrow_array::UInt64Array>()?;
            Some((0..counts.len()).map(|i| counts.value(i)).sum::<u64>())
        })
        .sum())
}

/// Prints the first `limit` rows of `frame` as a table and counts the rest, streaming.
pub async fn print(
    frame: datafusion::dataframe::DataFrame,
    limit: usize,
    out: &mut impl std::io::Write,
) -> Result<(), QueryError> {
    use futures::StreamExt;
    let mut stream = frame.execute_stream().await?;
    let mut shown = Vec::new();
    let (mut rows, mut kept) = (0usize, 0usize);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows();
        if kept < limit {
            let take = batch.num_rows().min(limit - kept);
            kept += take;
            shown.push(batch.slice(0, take));
        }
    }
    let table = arrow_cast::pretty::pretty_format_batches(&shown).map_err(DataFusionError::from)?;
    let _ = writeln!(out, "{table}");
    let _ = if rows > kept {
        writeln!(out, "{rows} row(s), the first {kept} shown")
    } else {
        writeln!(out, "{rows} row(s)")
    };
    Ok(())
}
