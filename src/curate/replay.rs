//! A table's rows as the lake holds them at one source position, for `tributary validate`:
//! the raw zone replayed (its load, then every confirmed change before the position, with
//! the fills of added columns), and the curated table when it stands exactly there.
//!
//! Invariants:
//! - the replay is the same merge curate runs ([`super::merge::Merge`]), unsorted, over the
//!   files the same plan chooses; nothing in the lake is written;
//! - a table the lake cannot tell at that position (its load unfinished or taken after the
//!   position, no raw files, no key) is [`Replayed::Unknown`], with why, never a guess;
//! - the curated table is read only when its snapshot was built on the same load and its
//!   newest applied change is the replay's newest: it then holds the same rows.

use std::sync::Arc;

use arrow_schema::Schema as ArrowSchema;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::SessionContext;

use super::{
    CurateError, MergeColumns, TaskLake, data_columns, merge, merge_columns, normalized, nullable,
    plan, register_changes, register_files, require_key, table_provider,
};
use crate::catalog::iceberg::IcebergCatalog;
use crate::config::CurateSettings;
use crate::ident::TableId;

/// What [`replay`] found for a table.
pub enum Replayed {
    Rows(LakeRows),
    /// The lake cannot tell the table's rows at that position, and why.
    Unknown(String),
}

/// A table's rows in the lake at a position.
pub struct LakeRows {
    /// The columns as the lake's files hold them (the source's types, widened where
    /// Iceberg lacks one).
    pub columns: Arc<ArrowSchema>,
    pub key: Vec<String>,
    pub rows: SendableRecordBatchStream,
    /// The newest change the rows hold; `None` when they are the load's alone.
    pub newest: Option<String>,
    /// What identifies the load the rows start from.
    pub load_id: String,
}

/// Table `table`'s rows as the raw zone holds them before source position `before` (the
/// first change they leave out; `None`: every confirmed change), in no order.
pub async fn replay(
    lake: &TaskLake<'_>,
    catalog: &IcebergCatalog,
    ctx: &SessionContext,
    settings: &CurateSettings,
    table: &TableId,
    before: Option<&str>,
) -> Result<Replayed, CurateError> {
    let job = lake.job(table, catalog, ctx, settings);
    let name = job.name();
    let load_id = job.load_id();
    let facts = plan::Facts {
        name: &name,
        task: &job.task.name,
        load_status: job.state.tables.get(table).map(|l| l.status),
        raw: job.raw,
        primary_key: job.state.primary_keys.get(table).map(Vec::as_slice),
        exists: false,
        summary: None,
        history_of: None,
        history: None,
        load_id: &load_id,
        rebuild: false,
    };
    // A table curate would refuse (no key, a file that is not Parquet) is not compared;
    // the others are.
    let (raw, key) = match plan::decide(&facts, |k| job.zone.storage.uri(k)) {
        Ok(plan::Decision::Skip(why)) => return Ok(Replayed::Unknown(why.to_owned())),
        Ok(plan::Decision::Curate { raw, key, .. }) => (raw, key),
        Err(e) => return Ok(Replayed::Unknown(e.to_string())),
    };
    if job.state.reloading.contains(table) {
        return Ok(Replayed::Unknown(
            "it waits for its reload (its changes are passed by until then); validate after the reload".to_owned(),
        ));
    }
    let load_position = job.load_position();
    if let (Some(load), Some(before)) = (load_position.as_deref(), before)
        && load > before
    {
        return Ok(Replayed::Unknown(format!(
            "its load was taken at {load}, after the snapshot's {before} (it was reloaded meanwhile); validate again"
        )));
    }
    let files = plan::raw_files(raw, true, job.pending);
    let truncates: Vec<String> = job
        .truncates()
        .into_iter()
        .filter(|t| before.is_none_or(|b| t.as_str() < b))
        .collect();
    let truncated_at = plan::newest_truncate(&truncates, None);
    let (load, changes) = files.from(raw, true, None, truncated_at.as_deref());
    let raw_schema = job.raw_schema(&[load, &changes[..]].concat()).await?;
    let file_columns = Arc::new(
        normalized(&nullable(&data_columns(&raw_schema, &job)))
            .map_err(|source| CurateError::iceberg(name.clone(), source))?,
    );
    require_key(&name, &key, &file_columns)?;
    let MergeColumns {
        columns,
        fills,
        read,
    } = merge_columns(&job, &file_columns, &raw_schema)?;
    let change_files: Vec<String> = changes.iter().map(|k| job.location_of(k)).collect();
    register_changes(&job, &read, &change_files)?;
    let base_files: Vec<String> = load.iter().map(|k| job.location_of(k)).collect();
    register_files(&job, "base", &base_files, read)?;
    let base_position = match truncated_at {
        Some(_) => None,
        None => load_position,
    };
    let merge = merge::Merge {
        columns: &columns,
        key: &key,
        after: truncated_at.as_deref(),
        before,
        fills: &fills,
        base_position: base_position.as_deref(),
        sorted: false,
    };
    let sql_error = |source| CurateError::Sql {
        table: name.clone(),
        source,
    };
    // The files' statistics say it without a read, unless a file reaches past `before`.
    let newest = match plan::newest_from_statistics(raw, &changes, truncated_at.as_deref(), before)
    {
        Some(newest) => newest,
        None => merge.last_position(ctx).await.map_err(sql_error)?,
    };
    tracing::info!("{name}: replay planned");
    let rows = merge.rows(ctx).await.map_err(sql_error)?;
    Ok(Replayed::Rows(LakeRows {
        columns: file_columns,
        key,
        rows,
        newest,
        load_id,
    }))
}

/// The curated table's rows, when it holds what a replay does (built on the load
/// `load_id`, its newest applied change the replay's `newest`); otherwise why it is not
/// compared.
pub async fn curated_rows(
    lake: &TaskLake<'_>,
    catalog: &IcebergCatalog,
    ctx: &SessionContext,
    settings: &CurateSettings,
    table: &TableId,
    (load_id, newest): (&str, Option<&str>),
) -> Result<Result<SendableRecordBatchStream, String>, CurateError> {
    let job = lake.job(table, catalog, ctx, settings);
    let Some(curated) = catalog.load(&job.ident()?).await? else {
        return Ok(Err("not curated yet".to_owned()));
    };
    let summary = curated
        .metadata
        .current_snapshot()
        .map(|s| s.summary().additional_properties.clone())
        .unwrap_or_default();
    if summary.get(plan::APPLIED_LOAD).map(String::as_str) != Some(load_id) {
        return Ok(Err(
            "it was built on another load of the table; curate it, then validate again".to_owned(),
        ));
    }
    let applied = summary
        .get(plan::APPLIED_POSITION)
        .map(String::as_str)
        .unwrap_or_default();
    let newest = newest.unwrap_or_default();
    if applied != newest {
        return Ok(Err(format!(
            "it applied changes up to '{applied}' and the snapshot holds them up to '{newest}'; it is compared when it stands exactly at the snapshot (curate while the table is quiet)"
        )));
    }
    let provider = table_provider(&curated, catalog.file_io()).await?;
    let sql_error = |source| CurateError::Sql {
        table: job.name(),
        source,
    };
    let rows = ctx
        .read_table(provider)
        .map_err(sql_error)?
        .execute_stream()
        .await
        .map_err(sql_error)?;
    Ok(Ok(rows))
}
