//! The lake's SQL engine, shared by curation (merges, history, models) and `tributary
//! query`: DataFusion sessions whose memory is bounded (queries spill beyond it), tables over
//! exactly the files a caller chose, and SQL text built safely (identifiers quoted,
//! literals escaped).
//!
//! Invariants: a session never holds more than its memory limit in its pool (operators that
//! cannot spill fail with the top consumers named); a files table reads exactly the listed
//! files, whose names are taken literally (no glob, no URL decoding).

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
use datafusion::prelude::{SessionConfig, SessionContext};

/// The default catalog of a session: model outputs and unqualified names.
pub const DEFAULT_CATALOG: &str = "lake";

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
        .with_default_catalog_and_schema(DEFAULT_CATALOG, "public");
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
