//! The merge of a table's changes into its current state, as one DataFusion query.
//!
//! The state (the LOAD files, or the curated table's data files) and the CDC files are
//! registered as tables over exactly the files the plan chose. For each primary key the
//! change with the highest `_position` wins: an `I` or `U` replaces the row, a `D` removes
//! it; rows no change touches stay. DataFusion spills its sorts to disk under the memory
//! limit, so a table larger than memory merges; the changes' latest images per key are the
//! hash join's build side and are held in memory.

use std::sync::Arc;

use arrow_schema::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::{SessionConfig, SessionContext};

/// The column names the raw zone adds to a table's own: DMS's `Op` and the change's
/// position in the source's log.
pub const OP: &str = "Op";
pub const POSITION: &str = "_position";

/// A session whose queries spill beyond `memory_limit` bytes.
pub fn session(memory_limit: usize) -> Result<SessionContext, DataFusionError> {
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(memory_limit, 1.0)
        .build_arc()?;
    let config = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema(crate::query::DEFAULT_CATALOG, "public");
    Ok(SessionContext::new_with_config_rt(config, runtime))
}

/// A table over exactly `files` (absolute paths of Parquet files) read as `schema`: columns a
/// file lacks read as NULL.
pub fn files_table(
    files: &[String],
    schema: SchemaRef,
) -> Result<Arc<dyn TableProvider>, DataFusionError> {
    if files.is_empty() {
        return Ok(Arc::new(MemTable::try_new(schema, vec![vec![]])?));
    }
    let urls = files
        .iter()
        .map(ListingTableUrl::parse)
        .collect::<Result<Vec<_>, _>>()?;
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// A SQL identifier, quoted (names keep their case and may hold any character).
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Names as a SQL list: each quoted, separated by commas.
pub fn ident_list<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> String {
    names
        .into_iter()
        .map(|n| ident(n.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A SQL string literal.
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// What to merge: tables `base` and `changes` registered in the session.
pub struct Merge<'a> {
    /// The table's columns, in order (the raw zone's own columns excluded).
    pub columns: &'a [String],
    pub key: &'a [String],
    /// Only changes after this position apply (those before are in the base).
    pub after: Option<&'a str>,
    /// Only changes before this position apply (those after may be of a batch still
    /// being written).
    pub before: Option<&'a str>,
}

impl Merge<'_> {
    fn changes_filter(&self) -> String {
        let position = ident(POSITION);
        let bounds: Vec<String> = [
            self.after.map(|a| format!("{position} > {}", literal(a))),
            self.before.map(|b| format!("{position} < {}", literal(b))),
        ]
        .into_iter()
        .flatten()
        .collect();
        if bounds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", bounds.join(" AND "))
        }
    }

    /// The highest position among the changes that apply.
    pub async fn last_position(
        &self,
        ctx: &SessionContext,
    ) -> Result<Option<String>, DataFusionError> {
        let sql = format!(
            "SELECT CAST(max({p}) AS VARCHAR) FROM changes {filter}",
            p = ident(POSITION),
            filter = self.changes_filter()
        );
        let batches = ctx.sql(&sql).await?.collect().await?;
        let value = batches.first().filter(|b| b.num_rows() > 0).and_then(|b| {
            let column = arrow_cast::cast(b.column(0), &arrow_schema::DataType::Utf8).ok()?;
            let strings = column
                .as_any()
                .downcast_ref::<arrow_array::StringArray>()?
                .clone();
            use arrow_array::Array;
            strings.is_valid(0).then(|| strings.value(0).to_owned())
        });
        Ok(value)
    }

    /// The merged state, ordered by key.
    pub async fn rows(
        &self,
        ctx: &SessionContext,
    ) -> Result<SendableRecordBatchStream, DataFusionError> {
        let columns = ident_list(self.columns);
        let key = ident_list(self.key);
        let key_match = self
            .key
            .iter()
            .map(|c| format!("l.{c} = b.{c}", c = ident(c)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let sql = format!(
            "WITH latest AS (
               SELECT * FROM (
                 SELECT {columns}, {op} AS __op,
                        row_number() OVER (PARTITION BY {key} ORDER BY {position} DESC) AS __rank
                 FROM changes {filter}
               ) WHERE __rank = 1
             )
             SELECT {columns} FROM base b
               WHERE NOT EXISTS (SELECT 1 FROM latest l WHERE {key_match})
             UNION ALL
             SELECT {columns} FROM latest WHERE __op <> 'D'
             ORDER BY {key}",
            op = ident(OP),
            position = ident(POSITION),
            filter = self.changes_filter(),
        );
        ctx.sql(&sql).await?.execute_stream().await
    }
}
