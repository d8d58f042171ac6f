//! History tables, slowly changing dimensions of type 2: for a table named in `[curate]
//! history`, `<table>_history` beside its current-state table holds every version of every
//! row: the load's, then one per change, each with the change's `op` (I/U/D), when it
//! became valid and when the next version replaced it (`valid_from`/`valid_to` from the
//! task's timestamp column, if it has one; always `valid_from_position`/`valid_to_position`)
//! and `is_current`.
//!
//! Names: a source table may itself be called `<table>_history`. The history table never
//! takes that name: when the task replicates such a table, or the catalog holds a table of
//! that name that is not this history (its `tributary.history-of` property says whose it
//! is), the history is refused with the fix; and a source table is never curated into an
//! Iceberg table that is another table's history.
//!
//! It is rebuilt from the raw zone whenever its table changes (copy-on-write, as the
//! current-state table). A truncate does not end versions: the history keeps what was
//! there. Changes are those of the batches the task confirmed.

use std::sync::Arc;

use ::iceberg::TableIdent;
use arrow_schema::{DataType, Field, Schema as ArrowSchema};

use super::merge::{image_columns, rows_at};
use super::plan::{Fill, Read};
use super::{CurateError, MergeColumns, TableJob, prepare_table, register, write_snapshot};
use crate::ident::TableId;
use crate::lake::layout;
use crate::sql::{files_table, ident, ident_list, literal};

/// Rebuilds the history table of the table `job` curates, with the `merging` columns;
/// returns its rows. An image older than a column's rename shows its value under the new
/// name; one older than its addition shows it as the raw zone has it (NULL).
pub(super) async fn write_history(
    job: &TableJob<'_>,
    table: &TableIdent,
    location: String,
    key: &[String],
    merging: &MergeColumns,
    load_files: &[&String],
    cdc_files: &[&String],
) -> Result<u64, CurateError> {
    let name = format!("{}_history", job.name());
    let sql_error = |source| CurateError::Sql {
        table: name.clone(),
        source,
    };
    let timestamp = &job.task.target_settings.timestamp_column_name;
    let stamp = (!timestamp.is_empty()).then_some(timestamp.as_str());
    let renames: Vec<(Fill, DataType)> = merging
        .fills
        .iter()
        .filter(|(f, _)| matches!(f.read, Read::Column(_)))
        .cloned()
        .collect();
    // The raw files' own columns (older names included), read as the table's (and the raw
    // zone's) types.
    let with = |extra: &[(&str, DataType)]| -> Arc<ArrowSchema> {
        let mut fields: Vec<Field> = merging
            .read
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.extend(extra.iter().map(|(n, t)| Field::new(*n, t.clone(), true)));
        if let Some(s) = stamp {
            let utc = DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, Some("UTC".into()));
            fields.push(Field::new(s, utc, true));
        }
        Arc::new(ArrowSchema::new(fields))
    };
    let locations =
        |keys: &[&String]| -> Vec<String> { keys.iter().map(|k| job.location_of(k)).collect() };
    register(
        job.ctx,
        "history_load",
        files_table(&locations(load_files), with(&[])).map_err(sql_error)?,
    )
    .map_err(sql_error)?;
    register(
        job.ctx,
        "history_changes",
        files_table(
            &locations(cdc_files),
            with(&[
                (super::OP, DataType::Utf8),
                (super::POSITION, DataType::Utf8),
            ]),
        )
        .map_err(sql_error)?,
    )
    .map_err(sql_error)?;

    let cols = ident_list(&merging.columns);
    let load_cols = rows_at(&merging.columns, &renames, job.load_position().as_deref());
    let change_cols = image_columns(&merging.columns, &renames);
    let partition = ident_list(key);
    let window = format!("OVER (PARTITION BY {partition} ORDER BY __pos ASC NULLS FIRST)");
    let ts = stamp.map(ident);
    let (load_ts, change_ts, valid) = match &ts {
        Some(ts) => (
            format!(", {ts} AS __ts"),
            format!(", {ts} AS __ts"),
            format!("__ts AS valid_from, lead(__ts) {window} AS valid_to, "),
        ),
        None => (String::new(), String::new(), String::new()),
    };
    let end = match &job.changes_end {
        Some(end) => format!("WHERE {} < {}", ident(super::POSITION), literal(end)),
        None => "WHERE false".to_owned(),
    };
    let sql = format!(
        "WITH versions AS (
           SELECT {load_cols}, 'I' AS op, CAST(NULL AS VARCHAR) AS __pos{load_ts} FROM history_load b
           UNION ALL
           SELECT {change_cols}, {op} AS op, {position} AS __pos{change_ts} FROM history_changes {end}
         )
         SELECT {cols}, op, {valid}__pos AS valid_from_position,
                lead(__pos) {window} AS valid_to_position,
                (lead(__pos) {window} IS NULL AND op <> 'D') AS is_current
         FROM versions
         ORDER BY {partition}, __pos ASC NULLS FIRST",
        op = ident(super::OP),
        position = ident(super::POSITION),
    );
    let frame = job.ctx.sql(&sql).await.map_err(sql_error)?;
    let history_columns = super::nullable(frame.schema().as_arrow());
    let rows = frame.execute_stream().await.map_err(sql_error)?;
    let ident = history_ident(table);
    let existing = job.catalog.load(&ident).await?;
    if let Some(other) = &existing
        && other.metadata.properties().get(HISTORY_OF) != Some(&job.name())
    {
        return Err(CurateError::HistoryCollision {
            table: job.name(),
            history: crate::catalog::iceberg::display_ident(&ident),
        });
    }
    let (history, new_schema) = prepare_table(
        job.catalog,
        job.zone,
        existing,
        &ident,
        location,
        (&history_columns).into(),
        [(HISTORY_OF.to_owned(), job.name())],
    )
    .await?;
    let written = write_snapshot(
        job.catalog,
        &history,
        new_schema,
        rows,
        [("tributary.task".to_owned(), job.task.name.clone())],
        job.settings,
    )
    .await?;
    Ok(written.rows)
}

/// The Iceberg property that marks a history table, naming the table it is the history of.
pub(super) const HISTORY_OF: &str = "tributary.history-of";

/// The history table of `table`: `<table>_history` beside it.
pub(super) fn history_ident(table: &TableIdent) -> TableIdent {
    TableIdent::new(
        table.namespace().clone(),
        format!("{}_history", table.name()),
    )
}

/// The source table whose name the history table of `table` would take, if the task
/// replicates one: then the history is refused ([`CurateError::HistoryCollision`]).
pub(super) fn history_name_taken(job: &TableJob<'_>) -> bool {
    let taken = TableId::new(&job.table.schema, format!("{}_history", job.table.table));
    job.state.tables.contains_key(&taken)
        || job
            .state
            .cdc
            .as_ref()
            .is_some_and(|c| c.tables.contains_key(&taken))
}

/// The folder of a history table: beside its table's.
pub(super) fn history_location(job: &TableJob<'_>) -> String {
    let table = TableId::new(&job.table.schema, format!("{}_history", job.table.table));
    let key = layout::table_prefix(&job.zone.folder, &job.task.source, &table);
    job.zone.storage.uri(key.trim_end_matches('/'))
}
