//! The merge of a table's changes into its current state, as one DataFusion query.
//!
//! The state (the LOAD files, or the curated table's data files) and the CDC files are
//! registered as tables over exactly the files the plan chose. For each primary key the
//! change with the highest `_position` wins: an `I` or `U` replaces the row, a `D` removes
//! it; rows no change touches stay. The base streams through a hash anti-join whose build
//! side is the changed keys, and one sort by key spills to disk under the memory limit, so
//! a table larger than memory merges; the changed keys are held in memory.

use std::sync::Arc;

use arrow_schema::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::{SessionConfig, SessionContext};

/// The column names the raw zone adds to a table's own: DMS's `Op` and the change's
/// position in the source's log.
pub const OP: &str = "Op";
pub const POSITION: &str = "_position";

/// How many of the largest memory consumers an out-of-memory error names.
const TOP_CONSUMERS: std::num::NonZeroUsize = std::num::NonZeroUsize::new(5).unwrap();

/// A session whose queries spill beyond `memory_limit` bytes. The pool is fair: each
/// spilling operator (the merge's sorts, one per partition) gets an equal share of what
/// the hash tables leave, so one cannot starve another (with a greedy pool, the merge of
/// a 5M-row table at 1 GB failed now and then with "not enough memory to continue
/// external sort").
pub fn session(memory_limit: usize) -> Result<SessionContext, DataFusionError> {
    let runtime = RuntimeEnvBuilder::new()
        // Tracked: an error names the operators that hold the most memory.
        .with_memory_pool(Arc::new(TrackConsumersPool::new(
            FairSpillPool::new(memory_limit),
            TOP_CONSUMERS,
        )))
        .build_arc()?;
    let config = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema(crate::query::DEFAULT_CATALOG, "public");
    Ok(SessionContext::new_with_config_rt(config, runtime))
}

/// A table over exactly `files` (absolute paths or `s3://` URIs of Parquet files) read as
/// `schema`: columns a file lacks read as NULL.
pub fn files_table(
    files: &[String],
    schema: SchemaRef,
) -> Result<Arc<dyn TableProvider>, DataFusionError> {
    if files.is_empty() {
        return Ok(Arc::new(MemTable::try_new(schema, vec![vec![]])?));
    }
    let urls = files
        .iter()
        .map(|f| ListingTableUrl::try_new(file_url(f)?, None))
        .collect::<Result<Vec<_>, _>>()?;
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// The URL of a file location (`s3://bucket/key` or a local path), each segment encoded:
/// DataFusion decodes URL paths into object keys, and the lake's keys may hold `%` (a table
/// named `a/b` is the folder `a%2Fb`), `#`, `?` or glob characters, all meant literally.
fn file_url(location: &str) -> Result<url::Url, DataFusionError> {
    let invalid = || DataFusionError::Plan(format!("'{location}' is not a file location"));
    if let Some(rest) = location.strip_prefix("s3://") {
        let (bucket, key) = rest.split_once('/').ok_or_else(invalid)?;
        let mut url = url::Url::parse(&format!("s3://{bucket}")).map_err(|_| invalid())?;
        url.path_segments_mut()
            .map_err(|_| invalid())?
            .extend(key.split('/'));
        Ok(url)
    } else if location.starts_with("file:") {
        url::Url::parse(location).map_err(|_| invalid())
    } else {
        url::Url::from_file_path(location).map_err(|_| invalid())
    }
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
        // Every change has a position; one without (a foreign file) must not count as the
        // newest of its key, which would remove the key's row and put nothing in its place.
        let conditions: Vec<String> = [
            Some(format!("{position} IS NOT NULL")),
            self.after.map(|a| format!("{position} > {}", literal(a))),
            self.before.map(|b| format!("{position} < {}", literal(b))),
        ]
        .into_iter()
        .flatten()
        .collect();
        format!("WHERE {}", conditions.join(" AND "))
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

    /// The merged state, ordered by key: the base's rows no change touches, then each
    /// touched key's newest change unless it is a delete. The newest position per key is a
    /// hash aggregate over the changes alone, and it is the joins' build side (the left),
    /// so the base and the changes' full rows stream through; one sort orders the result, spilling to disk
    /// under the memory limit. (A window over base and changes is 3x slower in DataFusion,
    /// and a base-side build emits its unmatched rows as one batch as large as the table.)
    pub async fn rows(
        &self,
        ctx: &SessionContext,
    ) -> Result<SendableRecordBatchStream, DataFusionError> {
        let on = |left: &str, right: &str| {
            self.key
                .iter()
                .map(|k| format!("{left}.{k} = {right}.{k}", k = ident(k)))
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        let key = ident_list(self.key);
        let position = ident(POSITION);
        let sql = format!(
            "WITH applied AS (SELECT * FROM changes {filter}),
             newest AS (
               SELECT {key}, max({position}) AS __newest FROM applied GROUP BY {key}
             ),
             latest AS (
               SELECT a.* FROM newest n JOIN applied a
                 ON {a_n} AND a.{position} = n.__newest
             )
             SELECT {base_columns} FROM newest n RIGHT ANTI JOIN base b ON {n_b}
             UNION ALL
             SELECT {columns} FROM latest WHERE {op} <> 'D'
             ORDER BY {key}",
            filter = self.changes_filter(),
            a_n = on("a", "n"),
            n_b = on("n", "b"),
            base_columns = self
                .columns
                .iter()
                .map(|c| format!("b.{}", ident(c)))
                .collect::<Vec<_>>()
                .join(", "),
            columns = ident_list(self.columns),
            op = ident(OP),
        );
        ctx.sql(&sql).await?.execute_stream().await
    }
}
