//! SQL models (`tributary transform`), as dbt has them: each model is a query over the
//! lake (curated tables, raw tables, earlier models) whose result becomes an Iceberg table
//! `<schema>.<name>`, after its data-quality checks.
//!
//! A model runs in three steps: its checks are counted over the query's rows; if a check
//! with `on_fail = "fail"` finds any, the run fails and the table keeps its previous
//! snapshot; otherwise the rows no quarantining check rejects become the table's new
//! snapshot, and the rejected ones, with the checks they failed, `<name>_quarantine`'s.
//! Table-wide checks (row count, freshness) are judged on the rows kept.

use std::path::Path;
use std::time::Instant;

use std::sync::Arc;

use ::iceberg::{NamespaceIdent, TableIdent};
use arrow_array::{Array, Float64Array, Int64Array, RecordBatch};
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::prelude::SessionContext;

use super::{CurateError, Zone, prepare_table, write_snapshot};
use crate::catalog::iceberg::IcebergCatalog;
use crate::config::{CheckConfig, CheckKind, CurateSettings, ModelConfig, OnFail, Workspace};
use crate::lake::adapters::Buckets;
use crate::lake::layout;
use crate::sql::{files_table, ident, ident_list, literal};

/// One check's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOutcome {
    /// e.g. `not_null(email)`.
    pub check: String,
    pub on_fail: OnFail,
    /// Rows that fail it (row checks), or what was found (table checks), if it failed.
    pub failure: Option<String>,
}

impl CheckOutcome {
    pub fn status(&self) -> super::Status {
        match (&self.failure, self.on_fail) {
            (None, _) => super::Status::Ok,
            (Some(_), OnFail::Fail) => super::Status::Failed,
            (Some(_), OnFail::Quarantine | OnFail::Warn) => super::Status::Warn,
        }
    }

    pub fn describe(&self) -> String {
        match (&self.failure, self.on_fail) {
            (None, _) => format!("PASS {}", self.check),
            (Some(f), OnFail::Fail) => format!("FAIL {}: {f}", self.check),
            (Some(f), OnFail::Quarantine) => format!("QUARANTINED {}: {f}", self.check),
            (Some(f), OnFail::Warn) => format!("WARN {}: {f}", self.check),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ModelOutcome {
    /// `<schema>.<name>`.
    pub model: String,
    /// Whether a failing check stopped it (its table kept its previous rows).
    pub failed: bool,
    pub rows: u64,
    pub quarantined: u64,
    pub checks: Vec<CheckOutcome>,
    pub seconds: f64,
}

impl ModelOutcome {
    /// The model's own line and then one per check, each with its status.
    pub fn lines(&self) -> Vec<(super::Status, String)> {
        let head = if self.failed {
            (
                super::Status::Failed,
                format!("{}: FAILED, its table is unchanged", self.model),
            )
        } else {
            (
                super::Status::Ok,
                format!(
                    "{}: {} rows, {} quarantined, {:.1}s",
                    self.model, self.rows, self.quarantined, self.seconds
                ),
            )
        };
        std::iter::once(head)
            .chain(
                self.checks
                    .iter()
                    .map(|c| (c.status(), format!("  {}", c.describe()))),
            )
            .collect()
    }

    pub fn describe(&self) -> String {
        self.lines()
            .into_iter()
            .map(|(_, line)| line)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Runs the workspace's models in order (only `only`, if given), reporting each.
pub async fn run_models(
    workspace: &Workspace,
    workspace_path: &Path,
    only: Option<&str>,
    mut on_model: impl FnMut(&ModelOutcome),
) -> Result<Vec<ModelOutcome>, CurateError> {
    let models: Vec<&ModelConfig> = workspace
        .models
        .iter()
        .filter(|m| only.is_none_or(|o| o == m.name || o == format!("{}.{}", m.schema, m.name)))
        .collect();
    if let Some(name) = only
        && models.is_empty()
    {
        return Err(CurateError::UnknownModel {
            name: name.to_owned(),
            known: workspace
                .models
                .iter()
                .map(|m| format!("{}.{}", m.schema, m.name))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let catalog = super::open_catalog(workspace, workspace_path).await?;
    let zone = models_zone(workspace, workspace_path, catalog.buckets()).await?;
    let _lock = catalog.lock().await?;
    let ctx = crate::query::lake_session(workspace, workspace_path)
        .await
        .map_err(|e| match e {
            crate::query::QueryError::Curate(e) => e,
            e => CurateError::Model {
                model: String::new(),
                source: Box::new(e),
            },
        })?;
    let mut outcomes = Vec::new();
    for model in models {
        let outcome = run_model(&ctx, &catalog, &zone, &workspace.curate, model).await?;
        on_model(&outcome);
        outcomes.push(outcome);
        // Later models read this one as it is now.
        crate::query::register_curated(&ctx, &catalog)
            .await
            .map_err(|e| CurateError::Model {
                model: model.name.clone(),
                source: Box::new(e),
            })?;
    }
    Ok(outcomes)
}

/// Models live in the curated zone of `[curate] target`, or of the first task's target.
async fn models_zone(
    workspace: &Workspace,
    path: &Path,
    buckets: &Buckets,
) -> Result<Zone, CurateError> {
    let target = match &workspace.curate.target {
        Some(t) => t.clone(),
        None => workspace
            .tasks
            .first()
            .map(|t| t.target.clone())
            .ok_or(CurateError::NoModelsTarget)?,
    };
    let endpoint = workspace.endpoint(&target, path)?;
    Ok(Zone {
        storage: super::target_storage(endpoint, buckets).await?,
        folder: workspace.curate.folder.clone(),
    })
}

async fn run_model(
    ctx: &SessionContext,
    catalog: &IcebergCatalog,
    zone: &Zone,
    settings: &CurateSettings,
    model: &ModelConfig,
) -> Result<ModelOutcome, CurateError> {
    let started = Instant::now();
    let name = format!("{}.{}", model.schema, model.name);
    let sql_error = |e: datafusion::error::DataFusionError| CurateError::Model {
        model: name.clone(),
        source: Box::new(e),
    };
    // Kept until the model is written: `__model` reads its rows from there.
    let (columns, _scratch) = query_once(ctx, model, &sql_error).await?;
    let verdict = judge(ctx, model, &sql_error).await?;
    let outcome = |rows: u64| ModelOutcome {
        model: name.clone(),
        failed: verdict.failed(),
        rows,
        quarantined: verdict.quarantined,
        checks: verdict.checks.clone(),
        seconds: started.elapsed().as_secs_f64(),
    };
    if verdict.failed() {
        return Ok(outcome(verdict.kept));
    }

    let select = ident_list(&columns);
    let rejected = &verdict.rejected;
    let kept_rows = ctx
        .sql(&format!(
            "SELECT {select} FROM __checked WHERE NOT ({rejected})"
        ))
        .await
        .map_err(sql_error)?;
    let target = Materialize {
        catalog,
        zone,
        settings,
        model,
    };
    let written = target.write(&model.name, kept_rows).await?;
    if let Some(reasons) = &verdict.quarantine_reasons {
        let rows = ctx
            .sql(&format!(
                "SELECT {select}, concat_ws('; ', {reasons}) AS failed_checks FROM __checked WHERE {rejected}"
            ))
            .await
            .map_err(sql_error)?;
        let table = format!("{}_quarantine", model.name);
        target.write(&table, rows).await?;
    }
    Ok(outcome(written))
}

/// Runs the model's query once, into a scratch file registered as `__model`: the checks
/// judge, and the tables get, the same rows (a query over raw tables or `now()` would
/// differ run to run). Returns the query's columns and the scratch folder, which must live
/// as long as `__model` is read.
async fn query_once(
    ctx: &SessionContext,
    model: &ModelConfig,
    sql_error: &impl Fn(datafusion::error::DataFusionError) -> CurateError,
) -> Result<(Vec<String>, tempfile::TempDir), CurateError> {
    let frame = ctx.sql(&model.sql).await.map_err(sql_error)?;
    let columns: Vec<String> = frame
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let scratch = tempfile::tempdir().map_err(|source| CurateError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let rows_file = scratch.path().join("rows.parquet");
    let rows_path = rows_file.to_string_lossy().into_owned();
    let schema = Arc::new(frame.schema().as_arrow().clone());
    frame
        .write_parquet(
            &rows_path,
            DataFrameWriteOptions::new().with_single_file_output(true),
            None,
        )
        .await
        .map_err(sql_error)?;
    super::register(
        ctx,
        "__model",
        files_table(&[rows_path], schema).map_err(sql_error)?,
    )
    .map_err(sql_error)?;
    Ok((columns, scratch))
}

/// What a model's checks found.
struct Verdict {
    /// In the order the model declares them.
    checks: Vec<CheckOutcome>,
    /// Rows that stay in the model's table, and rows that go to its quarantine.
    kept: u64,
    quarantined: u64,
    /// SQL over `__checked`: whether a row is quarantined.
    rejected: String,
    /// SQL: the quarantine checks a row failed, when some check quarantines.
    quarantine_reasons: Option<String>,
}

impl Verdict {
    /// Whether a failing `fail` check stops the model (its table keeps its rows).
    fn failed(&self) -> bool {
        self.checks
            .iter()
            .any(|c| c.failure.is_some() && c.on_fail == OnFail::Fail)
    }
}

/// Runs the model's checks over `__model`, registering `__checked` (its rows with a boolean
/// `__check_<i>` per row check, never NULL).
async fn judge(
    ctx: &SessionContext,
    model: &ModelConfig,
    sql_error: &impl Fn(datafusion::error::DataFusionError) -> CurateError,
) -> Result<Verdict, CurateError> {
    let row_checks: Vec<(usize, &CheckConfig, String)> = model
        .checks
        .iter()
        .enumerate()
        .filter(|(_, c)| c.check.is_per_row())
        .map(|(i, c)| (i, c, failing_row(c)))
        .collect();
    let flags = row_checks
        .iter()
        .map(|(i, _, predicate)| format!(", ({predicate}) AS __check_{i}"))
        .collect::<String>();
    let _ = ctx.deregister_table("__checked").map_err(sql_error)?;
    let checked = ctx
        .sql(&format!("SELECT *{flags} FROM __model"))
        .await
        .map_err(sql_error)?;
    ctx.register_table("__checked", checked.into_view())
        .map_err(sql_error)?;
    let quarantining: Vec<&(usize, &CheckConfig, String)> = row_checks
        .iter()
        .filter(|(_, c, _)| c.on_fail == OnFail::Quarantine)
        .collect();
    let rejected = if quarantining.is_empty() {
        "false".to_owned()
    } else {
        let flags: Vec<String> = quarantining
            .iter()
            .map(|(i, _, _)| format!("__check_{i}"))
            .collect();
        flags.join(" OR ")
    };
    let counts = row_checks
        .iter()
        .map(|(i, _, _)| format!(", sum(CASE WHEN __check_{i} THEN 1 ELSE 0 END) AS __failing_{i}"))
        .collect::<String>();
    let batches = ctx
        .sql(&format!(
            "SELECT sum(CASE WHEN {rejected} THEN 1 ELSE 0 END) AS __rejected, count(*) AS __rows{counts} \
             FROM __checked"
        ))
        .await
        .map_err(sql_error)?
        .collect()
        .await
        .map_err(sql_error)?;
    let count = |column: usize| -> u64 { int_at(&batches, column).max(0) as u64 };
    let quarantined = count(0);
    let kept = count(1) - quarantined;

    let mut checks = Vec::new();
    for (n, (i, check, _)) in row_checks.iter().enumerate() {
        let failing = count(2 + n);
        let failure = (failing > 0).then(|| format!("{failing} row(s)"));
        checks.push((*i, outcome_of(check, failure)));
    }
    for (i, check) in model.checks.iter().enumerate() {
        let failure = match check.check {
            CheckKind::RowCount => {
                let low = check.min.is_some_and(|min| kept < min);
                let high = check.max.is_some_and(|max| kept > max);
                (low || high).then(|| format!("{kept} row(s) kept"))
            }
            CheckKind::Freshness => freshness(ctx, check, &rejected, sql_error).await?,
            _ => continue,
        };
        checks.push((i, outcome_of(check, failure)));
    }
    checks.sort_by_key(|(i, _)| *i);
    let quarantine_reasons = (!quarantining.is_empty()).then(|| {
        quarantining
            .iter()
            .map(|(i, c, _)| {
                format!(
                    "CASE WHEN __check_{i} THEN {} ELSE NULL END",
                    literal(&describe_check(c))
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    });
    Ok(Verdict {
        checks: checks.into_iter().map(|(_, c)| c).collect(),
        kept,
        quarantined,
        rejected,
        quarantine_reasons,
    })
}

fn outcome_of(check: &CheckConfig, failure: Option<String>) -> CheckOutcome {
    CheckOutcome {
        check: describe_check(check),
        on_fail: check.on_fail,
        failure,
    }
}

/// A freshness check over the kept rows: why it fails, if it does.
async fn freshness(
    ctx: &SessionContext,
    check: &CheckConfig,
    rejected: &str,
    sql_error: &impl Fn(datafusion::error::DataFusionError) -> CurateError,
) -> Result<Option<String>, CurateError> {
    let column = ident(&check.columns[0]);
    let batches = ctx
        .sql(&format!(
            "SELECT CAST(date_part('epoch', now()) - date_part('epoch', max(CAST({column} AS TIMESTAMP))) AS DOUBLE) \
             FROM __checked WHERE NOT ({rejected})"
        ))
        .await
        .map_err(sql_error)?
        .collect()
        .await
        .map_err(sql_error)?;
    let limit = check.max_age_hours.unwrap_or(0.0);
    Ok(match float_at(&batches, 0) {
        Some(age) if age / 3600.0 <= limit => None,
        Some(age) => Some(format!("newest value is {:.1} h old", age / 3600.0)),
        None => Some("no value".to_owned()),
    })
}

/// Where a model's tables go.
struct Materialize<'a> {
    catalog: &'a IcebergCatalog,
    zone: &'a Zone,
    settings: &'a CurateSettings,
    model: &'a ModelConfig,
}

impl Materialize<'_> {
    /// Replaces the content of table `<model schema>.<table>` with `rows`.
    async fn write(
        &self,
        table: &str,
        rows: datafusion::dataframe::DataFrame,
    ) -> Result<u64, CurateError> {
        let model = self.model;
        let model_name = format!("{}.{}", model.schema, model.name);
        let ident = TableIdent::new(NamespaceIdent::new(model.schema.clone()), table.to_owned());
        let columns = super::nullable(rows.schema().as_arrow());
        let existing = self.catalog.load(&ident).await?;
        let key = layout::model_prefix(&self.zone.folder, &model.schema, table);
        let location = self.zone.storage.uri(key.trim_end_matches('/'));
        let property = [("tributary.model".to_owned(), model_name.clone())];
        let (iceberg_table, new_schema) = prepare_table(
            self.catalog,
            self.zone,
            existing,
            &ident,
            location,
            (&columns).into(),
            property.clone(),
        )
        .await?;
        let stream = rows
            .execute_stream()
            .await
            .map_err(|e| CurateError::Model {
                model: model_name.clone(),
                source: Box::new(e),
            })?;
        let written = write_snapshot(
            self.catalog,
            &iceberg_table,
            new_schema,
            stream,
            property,
            self.settings,
        )
        .await?;
        Ok(written.rows)
    }
}

/// The SQL predicate true for a row that fails `check` (never NULL).
fn failing_row(check: &CheckConfig) -> String {
    match check.check {
        CheckKind::NotNull => check
            .columns
            .iter()
            .map(|c| format!("{} IS NULL", ident(c)))
            .collect::<Vec<_>>()
            .join(" OR "),
        CheckKind::AcceptedValues => {
            let column = ident(&check.columns[0]);
            let values = check
                .values
                .iter()
                .map(|v| literal(v))
                .collect::<Vec<_>>()
                .join(", ");
            format!("{column} IS NOT NULL AND CAST({column} AS VARCHAR) NOT IN ({values})")
        }
        // As dbt's: rows with a NULL in the key are not duplicates of each other.
        CheckKind::Unique => {
            let columns: Vec<String> = check.columns.iter().map(|c| ident(c)).collect();
            let present = columns
                .iter()
                .map(|c| format!("{c} IS NOT NULL"))
                .collect::<Vec<_>>()
                .join(" AND ");
            format!(
                "{present} AND count(*) OVER (PARTITION BY {}) > 1",
                columns.join(", ")
            )
        }
        CheckKind::RowCount | CheckKind::Freshness => "false".to_owned(),
    }
}

fn describe_check(check: &CheckConfig) -> String {
    let kind = check.check.name();
    match check.check {
        CheckKind::RowCount => format!(
            "{kind}({}..{})",
            check.min.map(|m| m.to_string()).unwrap_or_default(),
            check.max.map(|m| m.to_string()).unwrap_or_default()
        ),
        CheckKind::Freshness => format!(
            "{kind}({} within {} h)",
            check.columns.join(", "),
            check.max_age_hours.unwrap_or(0.0)
        ),
        CheckKind::AcceptedValues => {
            format!(
                "{kind}({} in {})",
                check.columns.join(", "),
                check.values.join(" | ")
            )
        }
        _ => format!("{kind}({})", check.columns.join(", ")),
    }
}

fn int_at(batches: &[RecordBatch], column: usize) -> i64 {
    batches
        .first()
        .filter(|b| b.num_rows() > 0)
        .and_then(|b| {
            let c = arrow_cast::cast(b.column(column), &arrow_schema::DataType::Int64).ok()?;
            let c = c.as_any().downcast_ref::<Int64Array>()?.clone();
            Some(if c.is_valid(0) { c.value(0) } else { 0 })
        })
        .unwrap_or(0)
}

fn float_at(batches: &[RecordBatch], column: usize) -> Option<f64> {
    let b = batches.first().filter(|b| b.num_rows() > 0)?;
    let c = arrow_cast::cast(b.column(column), &arrow_schema::DataType::Float64).ok()?;
    let c = c.as_any().downcast_ref::<Float64Array>()?.clone();
    c.is_valid(0).then(|| c.value(0))
}
