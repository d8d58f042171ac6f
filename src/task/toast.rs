//! Recovery of unchanged TOASTed values for tables whose replica identity is not FULL.
//!
//! An UPDATE that leaves an out-of-line (TOASTed) value unchanged does not carry it in the
//! WAL: pgoutput sends `u` instead. Under REPLICA IDENTITY FULL the old tuple has it; under
//! DEFAULT or USING INDEX it is recovered here, exactly as it was just before the update:
//! 1. from the rows of this run: every I and U of such a table keeps the values of its
//!    variable-length columns in [`ToastRecovery`]'s cache, up to a byte budget, the oldest
//!    evicted first;
//! 2. else from the raw zone: the latest row for the key in the table's Parquet files (after
//!    its last truncate). The raw zone holds every change up to the confirmed position, and
//!    row-group statistics on the first key column prune what is read.
//!
//! Invariant: a key whose latest row is in the open batch (not yet in the raw zone) is
//! recovered from the cache or not at all. When that row was evicted, or written while the
//! table's identity was FULL, recovery fails with an error that names the fix; it never
//! guesses or writes a placeholder.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type};
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch, Scalar};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use bytes::Bytes;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{RowSelection, RowSelector};

use crate::ident::TableId;
use crate::lake::inspect::{InspectError, ParquetFile};
use crate::lake::{Storage, StorageError, layout};
use crate::source::postgres::copy_binary::TextBatchBuilder;
use crate::source::postgres::pgoutput::Value;
use crate::source::postgres::types::Kind;

/// Bytes of column values the cache keeps, over all tables.
pub(super) const CACHE_BYTES: usize = 32 * 1024 * 1024;
/// Bookkeeping per cached row, beyond its values: its key's vector and copies, its hash
/// slot, its values' vector and its entry in the eviction order (with the table's name),
/// as measured with heaptrack (with 96, a 64 MB budget held 95 MB).
const ROW_OVERHEAD: usize = 320;
/// Bytes of keys a table remembers as evicted in the open batch; past it, the table only
/// remembers that some were ([`TableCache::evicted_overflow`]), so a huge transaction does
/// not grow the set without bound.
const EVICTED_KEY_BYTES: usize = 8 * 1024 * 1024;
/// Raw files whose footers stay in memory between lookups; later ones are opened each time.
const MAX_OPEN_FILES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum ToastError {
    #[error(
        "the row with key {key} changed earlier in this batch, and its values no longer fit the {} MB recovery cache",
        CACHE_BYTES / 1_048_576
    )]
    EvictedInBatch { key: String },
    #[error(
        "the row with key {key} may have changed earlier in this batch, which changed more rows of the table than the {} MB recovery cache can keep or remember",
        CACHE_BYTES / 1_048_576
    )]
    EvictedManyInBatch { key: String },
    #[error(
        "the row with key {key} changed earlier in this batch while the table's replica identity was FULL or its key was being redefined, so its values were not kept"
    )]
    UncachedInBatch { key: String },
    #[error(
        "column {column} is not among the values kept of the row with key {key}, which changed earlier in this batch"
    )]
    NotKept { column: String, key: String },
    #[error("the key columns of the row are not in the stream")]
    NoKey,
    #[error("no earlier row with key {key} in the raw zone")]
    NotFound { key: String },
    #[error("the latest row with key {key} in {uri} is a delete")]
    Deleted { key: String, uri: String },
    #[error("column {column} is not in {uri}, the latest file with key {key}")]
    MissingColumn {
        column: String,
        key: String,
        uri: String,
    },
    #[error("recovery reads Parquet raw files, and {uri} is not one")]
    NotParquet { uri: String },
    #[error("the key {key} does not parse: {message}")]
    BadKey { key: String, message: String },
    #[error("column {column} in {uri}: {message}")]
    Convert {
        column: String,
        uri: String,
        message: String,
    },
    #[error("column {column} in {uri}: {source}")]
    Cast {
        column: String,
        uri: String,
        #[source]
        source: arrow_schema::ArrowError,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Read(#[from] InspectError),
}

/// What recovery needs to know of a table's current columns.
pub(super) struct Columns<'a> {
    pub names: &'a Arc<[String]>,
    pub kinds: &'a [Kind],
    pub key: &'a [bool],
    /// Variable-length columns: the ones PostgreSQL may store out of line.
    pub toastable: &'a [bool],
}

/// Whether values of this kind are variable-length (may be TOASTed).
pub(super) fn is_toastable(kind: &Kind) -> bool {
    matches!(
        kind,
        Kind::Text | Kind::Jsonb | Kind::Bytea | Kind::Decimal { .. } | Kind::List(_)
    )
}

/// A row key: the text of its key columns, in column order.
type Key = Vec<Option<Bytes>>;

struct CachedRow {
    names: Arc<[String]>,
    /// (column index in `names`, value) of the variable-length, non-key columns.
    values: Vec<(usize, Option<Bytes>)>,
    stamp: u64,
    batch: u64,
    bytes: usize,
}

#[derive(Default)]
struct TableCache {
    rows: HashMap<Key, CachedRow>,
    /// Keys whose latest row is in the open batch but no longer in `rows`...
    evicted_in_batch: HashSet<Key>,
    /// ...and their bytes, up to [`EVICTED_KEY_BYTES`]...
    evicted_bytes: usize,
    /// ...past which the set is dropped and any key not cached may have changed in the
    /// open batch: recovering it fails rather than read an older row from the raw zone.
    evicted_overflow: bool,
    /// The open batch has rows of the table that were not cached (its identity was FULL).
    uncached_in_batch: bool,
    /// The table's raw files, newest first; listed at its first raw-zone lookup.
    files: Option<Vec<RawFile>>,
}

impl TableCache {
    /// Remembers that `key`'s latest row, of the open batch, left the cache.
    fn evicted(&mut self, key: Key) {
        if self.evicted_overflow {
            return;
        }
        self.evicted_bytes += ROW_OVERHEAD + key.iter().flatten().map(Bytes::len).sum::<usize>();
        if self.evicted_bytes > EVICTED_KEY_BYTES {
            self.evicted_in_batch = HashSet::new();
            self.evicted_overflow = true;
        } else {
            self.evicted_in_batch.insert(key);
        }
    }

    /// A new batch (or an emptied table): no row of the open batch was evicted.
    fn forget_evicted(&mut self) {
        self.evicted_in_batch = HashSet::new();
        self.evicted_bytes = 0;
        self.evicted_overflow = false;
    }
}

struct RawFile {
    key: String,
    is_load: bool,
    open: Option<Arc<ParquetFile>>,
}

pub(super) struct ToastRecovery {
    storage: Storage,
    budget: usize,
    used: usize,
    tables: HashMap<TableId, TableCache>,
    /// Cached rows, oldest first: (table, key, stamp). Stale entries are skipped.
    order: VecDeque<(TableId, Key, u64)>,
    stamp: u64,
    /// Number of the open batch.
    batch: u64,
}

impl ToastRecovery {
    pub fn new(storage: Storage, budget: usize) -> Self {
        ToastRecovery {
            storage,
            budget,
            used: 0,
            tables: HashMap::new(),
            order: VecDeque::new(),
            stamp: 0,
            batch: 0,
        }
    }

    /// Keeps `values`, now the latest row of its key (an I, or a U with its values whole).
    pub fn remember(&mut self, table: &TableId, columns: &Columns, values: &[Value]) {
        let Some(key) = key_of(columns.key, values) else {
            self.not_cached(table);
            return;
        };
        let mut kept = Vec::new();
        let mut bytes = ROW_OVERHEAD + key.iter().flatten().map(Bytes::len).sum::<usize>();
        for (i, value) in values.iter().enumerate() {
            if !columns.toastable.get(i).copied().unwrap_or(false)
                || columns.key.get(i).copied().unwrap_or(false)
            {
                continue;
            }
            match value {
                Value::Text(b) => {
                    bytes += b.len();
                    // A copy: a slice would keep the whole stream message alive.
                    kept.push((i, Some(Bytes::copy_from_slice(b))));
                }
                Value::Null => kept.push((i, None)),
                Value::Binary(_) | Value::UnchangedToast => {
                    self.not_cached(table);
                    return;
                }
            }
        }
        self.stamp += 1;
        let row = CachedRow {
            names: columns.names.clone(),
            values: kept,
            stamp: self.stamp,
            batch: self.batch,
            bytes,
        };
        let cache = self.tables.entry(table.clone()).or_default();
        cache.evicted_in_batch.remove(&key);
        if let Some(old) = cache.rows.insert(key.clone(), row) {
            self.used -= old.bytes;
        }
        self.used += bytes;
        self.order.push_back((table.clone(), key, self.stamp));
        self.evict();
        self.compact_order();
    }

    /// Drops the eviction order's stale entries (keys cached again since), so that many
    /// updates of a few keys do not grow it without bound.
    fn compact_order(&mut self) {
        let cached: usize = self.tables.values().map(|t| t.rows.len()).sum();
        if self.order.len() > 2 * cached + 1024 {
            let tables = &self.tables;
            self.order.retain(|(table, key, stamp)| {
                tables
                    .get(table)
                    .and_then(|t| t.rows.get(key))
                    .is_some_and(|r| r.stamp == *stamp)
            });
        }
    }

    /// A delete: the key has no row until it is inserted again.
    pub fn forget(&mut self, table: &TableId, key_columns: &[bool], values: &[Value]) {
        let (Some(key), Some(cache)) = (key_of(key_columns, values), self.tables.get_mut(table))
        else {
            return;
        };
        cache.evicted_in_batch.remove(&key);
        if let Some(old) = cache.rows.remove(&key) {
            self.used -= old.bytes;
        }
    }

    /// A row of `table` went into the open batch without being cached.
    pub fn not_cached(&mut self, table: &TableId) {
        self.tables
            .entry(table.to_owned())
            .or_default()
            .uncached_in_batch = true;
    }

    /// The table's key columns changed: cached keys no longer mean the same rows.
    pub fn reset(&mut self, table: &TableId) {
        self.truncated(table);
        self.not_cached(table);
    }

    /// A truncate: no earlier row of the table can be the latest for a key any more.
    pub fn truncated(&mut self, table: &TableId) {
        if let Some(cache) = self.tables.get_mut(table) {
            self.used -= cache.rows.values().map(|r| r.bytes).sum::<usize>();
            cache.rows.clear();
            cache.forget_evicted();
        }
    }

    /// The open batch is in the raw zone, as the files `placed` ((table, object key)).
    pub fn batch_written<'a>(&mut self, placed: impl IntoIterator<Item = (&'a TableId, &'a str)>) {
        self.batch += 1;
        for cache in self.tables.values_mut() {
            cache.forget_evicted();
            cache.uncached_in_batch = false;
        }
        for (table, key) in placed {
            if let Some(files) = self.tables.get_mut(table).and_then(|c| c.files.as_mut()) {
                files.insert(
                    0,
                    RawFile {
                        key: key.to_owned(),
                        is_load: false,
                        open: None,
                    },
                );
            }
        }
    }

    fn evict(&mut self) {
        while self.used > self.budget {
            let Some((table, key, stamp)) = self.order.pop_front() else {
                return;
            };
            let Some(cache) = self.tables.get_mut(&table) else {
                continue;
            };
            if cache.rows.get(&key).is_some_and(|r| r.stamp == stamp)
                && let Some(row) = cache.rows.remove(&key)
            {
                self.used -= row.bytes;
                if row.batch == self.batch {
                    cache.evicted(key);
                }
            }
        }
    }

    /// Replaces every [`Value::UnchangedToast`] of `values` (a U's new tuple) by the value
    /// the row's latest earlier version has. `old_key` is the U's old key, when the update
    /// changed it; `prefix` is the table's raw-zone folder; `truncated_at`, the position of
    /// its last truncate.
    pub async fn recover(
        &mut self,
        table: &TableId,
        prefix: &str,
        columns: &Columns<'_>,
        values: &mut [Value],
        old_key: Option<&[Value]>,
        truncated_at: Option<&str>,
    ) -> Result<(), ToastError> {
        let key = key_of(columns.key, old_key.unwrap_or(values)).ok_or(ToastError::NoKey)?;
        let missing: Vec<usize> = values
            .iter()
            .enumerate()
            .filter(|(_, v)| matches!(v, Value::UnchangedToast))
            .map(|(i, _)| i)
            .collect();
        let shown = show_key(&key);
        let cache = self.tables.entry(table.clone()).or_default();
        if let Some(row) = cache.rows.get(&key) {
            let cached = |name: &str| {
                let index = row.names.iter().position(|n| n == name)?;
                row.values.iter().find(|(i, _)| *i == index).map(|(_, v)| v)
            };
            let mut found = Vec::with_capacity(missing.len());
            for &i in &missing {
                match cached(&columns.names[i]) {
                    Some(v) => {
                        found.push(v.as_ref().map_or(Value::Null, |b| Value::Text(b.clone())))
                    }
                    // The raw zone has only older versions of a row of the open batch.
                    None if row.batch == self.batch => {
                        return Err(ToastError::NotKept {
                            column: columns.names[i].clone(),
                            key: shown,
                        });
                    }
                    None => break,
                }
            }
            if found.len() == missing.len() {
                for (&i, value) in missing.iter().zip(found) {
                    values[i] = value;
                }
                return Ok(());
            }
        }
        if cache.evicted_in_batch.contains(&key) {
            return Err(ToastError::EvictedInBatch { key: shown });
        }
        if cache.evicted_overflow {
            return Err(ToastError::EvictedManyInBatch { key: shown });
        }
        if cache.uncached_in_batch {
            return Err(ToastError::UncachedInBatch { key: shown });
        }
        if cache.files.is_none() {
            cache.files = Some(list_raw_files(&self.storage, prefix).await?);
        }
        let files = cache.files.as_mut().into_iter().flatten();
        let wanted: Vec<&str> = missing.iter().map(|&i| columns.names[i].as_str()).collect();
        let texts = lookup(&self.storage, files, columns, &key, &wanted, truncated_at).await?;
        for (&i, text) in missing.iter().zip(texts) {
            values[i] = text.map_or(Value::Null, |t| Value::Text(Bytes::from(t)));
        }
        Ok(())
    }
}

fn key_of(key_columns: &[bool], values: &[Value]) -> Option<Key> {
    let mut key = Vec::new();
    for (is_key, value) in key_columns.iter().zip(values) {
        if *is_key {
            key.push(match value {
                // A copy: a slice would keep the whole stream message alive with the key.
                Value::Text(b) => Some(Bytes::copy_from_slice(b)),
                Value::Null => None,
                Value::Binary(_) | Value::UnchangedToast => return None,
            });
        }
    }
    (!key.is_empty()).then_some(key)
}

fn show_key(key: &Key) -> String {
    let parts: Vec<String> = key
        .iter()
        .map(|v| {
            v.as_ref()
                .map_or("NULL".into(), |b| String::from_utf8_lossy(b).into_owned())
        })
        .collect();
    format!("({})", parts.join(", "))
}

/// The table's raw files, newest first: CDC files by name (commit time), then LOAD files.
async fn list_raw_files(storage: &Storage, prefix: &str) -> Result<Vec<RawFile>, ToastError> {
    let mut files = Vec::new();
    for object in storage.list_all(prefix).await? {
        let name = object.key.rsplit('/').next().unwrap_or_default().to_owned();
        // Folder markers and readers' side files (_SUCCESS, .crc) are not data.
        if layout::is_hidden_name(&name) {
            continue;
        }
        if !name.ends_with(".parquet") {
            return Err(ToastError::NotParquet {
                uri: storage.uri(&object.key),
            });
        }
        let is_load = layout::parse_load_number(&name).is_some();
        files.push((is_load, name, object.key));
    }
    files.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(&a.1)));
    Ok(files
        .into_iter()
        .map(|(is_load, _, key)| RawFile {
            key,
            is_load,
            open: None,
        })
        .collect())
}

/// The values of `wanted` in the latest row with `key` among `files` (newest first).
async fn lookup<'a>(
    storage: &Storage,
    files: impl Iterator<Item = &'a mut RawFile>,
    columns: &Columns<'_>,
    key: &Key,
    wanted: &[&str],
    truncated_at: Option<&str>,
) -> Result<Vec<Option<String>>, ToastError> {
    let shown = show_key(key);
    let key_arrays = parse_key(columns, key).map_err(|message| ToastError::BadKey {
        key: shown.clone(),
        message,
    })?;
    let mut read: Vec<&str> = key_arrays.iter().map(|(n, _)| n.as_str()).collect();
    read.extend(["Op", "_position"]);
    for (opened, raw) in files.enumerate() {
        // A truncate after the full load leaves nothing of it.
        if raw.is_load && truncated_at.is_some() {
            continue;
        }
        let file = match &raw.open {
            Some(f) => f.clone(),
            None => {
                let f = Arc::new(ParquetFile::open(storage, &raw.key).await?);
                if opened < MAX_OPEN_FILES {
                    raw.open = Some(f.clone());
                }
                f
            }
        };
        let uri = storage.uri(&raw.key);
        // First the keys (small), then the wanted values of the one row that matches.
        let mut latest: Option<(usize, usize, bool)> = None; // group, row in it, is a delete
        for group in candidate_row_groups(&file, &key_arrays[0].0, &key_arrays[0].1) {
            let mut row_in_group = 0;
            for batch in file.read_columns(&read, vec![group], None).await? {
                let matches = key_mask(&batch, &key_arrays, &shown, &uri)?;
                let positions = batch
                    .column_by_name("_position")
                    .and_then(|c| c.as_string_opt::<i32>());
                let ops = batch
                    .column_by_name("Op")
                    .and_then(|c| c.as_string_opt::<i32>());
                for row in
                    (0..batch.num_rows()).filter(|&r| matches.is_valid(r) && matches.value(r))
                {
                    let after_truncate = match (truncated_at, positions) {
                        (Some(at), Some(p)) => p.value(row) > at,
                        _ => true,
                    };
                    if after_truncate {
                        let delete = ops.is_some_and(|o| o.value(row) == "D");
                        latest = Some((group, row_in_group + row, delete));
                    }
                }
                row_in_group += batch.num_rows();
            }
        }
        let Some((group, row, delete)) = latest else {
            continue;
        };
        if delete {
            return Err(ToastError::Deleted { key: shown, uri });
        }
        let selection = RowSelection::from(vec![RowSelector::skip(row), RowSelector::select(1)]);
        let batches = file
            .read_columns(wanted, vec![group], Some(selection))
            .await?;
        let batch = batches
            .iter()
            .find(|b| b.num_rows() > 0)
            .ok_or_else(|| ToastError::NotFound { key: shown.clone() })?;
        return wanted
            .iter()
            .map(|&column| {
                let array =
                    batch
                        .column_by_name(column)
                        .ok_or_else(|| ToastError::MissingColumn {
                            column: column.to_owned(),
                            key: shown.clone(),
                            uri: uri.clone(),
                        })?;
                pg_text(array, 0).map_err(|message| ToastError::Convert {
                    column: column.to_owned(),
                    uri: uri.clone(),
                    message,
                })
            })
            .collect();
    }
    Err(ToastError::NotFound { key: shown })
}

/// The key's values as one-row arrays of the columns' types, parsed like the stream's rows.
fn parse_key(columns: &Columns, key: &Key) -> Result<Vec<(String, ArrayRef)>, String> {
    let (names, kinds): (Vec<&String>, Vec<Kind>) = columns
        .names
        .iter()
        .zip(columns.kinds)
        .zip(columns.key)
        .filter(|(_, is_key)| **is_key)
        .map(|((n, k), _)| (n, k.clone()))
        .unzip();
    let fields: Vec<Field> = names
        .iter()
        .zip(&kinds)
        .map(|(n, k)| Field::new(n.as_str(), k.data_type(), true))
        .collect();
    let mut builder = TextBatchBuilder::new(Arc::new(Schema::new(fields)), &kinds);
    let texts: Vec<Option<&str>> = key
        .iter()
        .map(|v| v.as_ref().and_then(|b| std::str::from_utf8(b).ok()))
        .collect();
    builder.append_row(texts).map_err(|e| e.message)?;
    let batch = builder.finish();
    Ok(names
        .into_iter()
        .zip(batch.columns())
        .map(|(n, a)| (n.clone(), a.clone()))
        .collect())
}

/// Rows of `batch` whose key columns equal `key` (cast to the file's types).
fn key_mask(
    batch: &RecordBatch,
    key: &[(String, ArrayRef)],
    shown_key: &str,
    uri: &str,
) -> Result<BooleanArray, ToastError> {
    let mut mask = BooleanArray::from(vec![true; batch.num_rows()]);
    for (name, value) in key {
        let column = batch
            .column_by_name(name)
            .ok_or_else(|| ToastError::MissingColumn {
                column: name.clone(),
                key: shown_key.to_owned(),
                uri: uri.to_owned(),
            })?;
        let convert = |source: arrow_schema::ArrowError| ToastError::Cast {
            column: name.clone(),
            uri: uri.to_owned(),
            source,
        };
        let value = arrow_cast::cast(value, column.data_type()).map_err(convert)?;
        let equal = arrow_ord::cmp::eq(column, &Scalar::new(value)).map_err(convert)?;
        mask = both(&mask, &equal);
    }
    Ok(mask)
}

fn both(a: &BooleanArray, b: &BooleanArray) -> BooleanArray {
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| Some(x.unwrap_or(false) && y.unwrap_or(false)))
        .collect()
}

/// Row groups whose statistics for `column` may hold `value`; all when there are none.
fn candidate_row_groups(file: &ParquetFile, column: &str, value: &ArrayRef) -> Vec<usize> {
    let metadata = file.metadata();
    let groups = metadata.row_groups();
    let all: Vec<usize> = (0..groups.len()).collect();
    let Ok(converter) = StatisticsConverter::try_new(
        column,
        file.schema(),
        metadata.file_metadata().schema_descr(),
    ) else {
        return all;
    };
    let (Ok(mins), Ok(maxes)) = (
        converter.row_group_mins(groups.iter()),
        converter.row_group_maxes(groups.iter()),
    ) else {
        return all;
    };
    let Ok(value) = arrow_cast::cast(value, mins.data_type()) else {
        return all;
    };
    let scalar = Scalar::new(value);
    let (Ok(low), Ok(high)) = (
        arrow_ord::cmp::lt_eq(&mins, &scalar),
        arrow_ord::cmp::gt_eq(&maxes, &scalar),
    ) else {
        return all;
    };
    // A missing statistic is null: it cannot rule the group out.
    all.into_iter()
        .filter(|&i| (low.is_null(i) || low.value(i)) && (high.is_null(i) || high.value(i)))
        .collect()
}

/// A raw-zone value as PostgreSQL's text output, which the stream's rows are parsed from.
fn pg_text(array: &ArrayRef, row: usize) -> Result<Option<String>, String> {
    if array.is_null(row) {
        return Ok(None);
    }
    let text = match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value(row).to_owned(),
        DataType::LargeUtf8 => array.as_string::<i64>().value(row).to_owned(),
        DataType::Utf8View => array.as_string_view().value(row).to_owned(),
        DataType::Binary => hex_bytea(array.as_binary::<i32>().value(row)),
        DataType::LargeBinary => hex_bytea(array.as_binary::<i64>().value(row)),
        DataType::Boolean => if array.as_boolean().value(row) {
            "t"
        } else {
            "f"
        }
        .to_owned(),
        DataType::Float32 => float_text(array.as_primitive::<Float32Type>().value(row) as f64),
        DataType::Float64 => float_text(array.as_primitive::<Float64Type>().value(row)),
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            let micros = array
                .as_primitive::<arrow_array::types::TimestampMicrosecondType>()
                .value(row);
            let time = chrono::DateTime::from_timestamp_micros(micros)
                .ok_or_else(|| format!("timestamp {micros} is out of range"))?;
            let text = time.format("%Y-%m-%d %H:%M:%S%.f").to_string();
            if tz.is_some() { text + "+00" } else { text }
        }
        DataType::List(_) => {
            let values = array.as_list::<i32>().value(row);
            let mut elements = Vec::with_capacity(values.len());
            for i in 0..values.len() {
                elements.push(match pg_text(&values, i)? {
                    None => "NULL".to_owned(),
                    Some(v) => quote_array_element(&v),
                });
            }
            format!("{{{}}}", elements.join(","))
        }
        _ => arrow_cast::display::ArrayFormatter::try_new(array.as_ref(), &Default::default())
            .map_err(|e| e.to_string())?
            .value(row)
            .to_string(),
    };
    Ok(Some(text))
}

fn hex_bytea(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(2 + bytes.len() * 2);
    text.push_str("\\x");
    for b in bytes {
        text.push_str(&format!("{b:02x}"));
    }
    text
}

fn float_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        v.to_string()
    }
}

/// An element of an array literal, quoted when PostgreSQL's array output would quote it.
fn quote_array_element(v: &str) -> String {
    let plain = !v.is_empty()
        && !v.eq_ignore_ascii_case("NULL")
        && !v
            .chars()
            .any(|c| matches!(c, '{' | '}' | ',' | '"' | '\\') || c.is_ascii_whitespace());
    if plain {
        return v.to_owned();
    }
    let mut quoted = String::with_capacity(v.len() + 2);
    quoted.push('"');
    for c in v.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns() -> (Arc<[String]>, Vec<Kind>, Vec<bool>, Vec<bool>) {
        let names: Arc<[String]> = vec!["id".to_owned(), "doc".to_owned()].into();
        (
            names,
            vec![Kind::Int64, Kind::Text],
            vec![true, false],
            vec![false, true],
        )
    }

    fn text(s: &str) -> Value {
        Value::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[tokio::test]
    async fn cache_recovers_and_eviction_in_the_open_batch_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (names, kinds, key, toastable) = columns();
        let cols = Columns {
            names: &names,
            kinds: &kinds,
            key: &key,
            toastable: &toastable,
        };
        // Room for about one row.
        let mut toast = ToastRecovery::new(Storage::local(dir.path()), ROW_OVERHEAD + 200);
        toast.remember(
            &TableId::new("p", "t"),
            &cols,
            &[text("1"), text(&"a".repeat(100))],
        );
        let mut update = vec![text("1"), Value::UnchangedToast];
        toast
            .recover(
                &TableId::new("p", "t"),
                "raw/t/",
                &cols,
                &mut update,
                None,
                None,
            )
            .await
            .expect("from the cache");
        assert_eq!(update[1], text(&"a".repeat(100)));

        toast.remember(
            &TableId::new("p", "t"),
            &cols,
            &[text("2"), text(&"b".repeat(100))],
        );
        let mut update = vec![text("1"), Value::UnchangedToast];
        let err = toast
            .recover(
                &TableId::new("p", "t"),
                "raw/t/",
                &cols,
                &mut update,
                None,
                None,
            )
            .await
            .expect_err("evicted in the open batch");
        assert!(matches!(err, ToastError::EvictedInBatch { .. }), "{err}");

        // Once the batch is written, the raw zone is asked (here: empty).
        toast.batch_written([]);
        let err = toast
            .recover(
                &TableId::new("p", "t"),
                "raw/t/",
                &cols,
                &mut update,
                None,
                None,
            )
            .await
            .expect_err("nothing in the raw zone");
        assert!(matches!(err, ToastError::NotFound { .. }), "{err}");
    }

    #[tokio::test]
    async fn evicted_keys_are_bounded_and_then_every_miss_of_the_batch_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (names, kinds, key, toastable) = columns();
        let cols = Columns {
            names: &names,
            kinds: &kinds,
            key: &key,
            toastable: &toastable,
        };
        let table = TableId::new("p", "t");
        let mut toast = ToastRecovery::new(Storage::local(dir.path()), ROW_OVERHEAD + 200);
        // Keys of 1 KB: the eviction set passes its bound after about 8,000 of them.
        let rows = EVICTED_KEY_BYTES / 1024 + 100;
        for i in 0..rows {
            toast.remember(&table, &cols, &[text(&format!("{i:01024}")), text("doc")]);
        }
        let cache = toast.tables.get(&table).expect("cached table");
        assert!(cache.evicted_overflow);
        assert!(cache.evicted_in_batch.is_empty());
        assert!(cache.evicted_bytes <= EVICTED_KEY_BYTES + 2048);
        // A key never seen may still have changed in the batch: no guess from the raw zone.
        let mut update = vec![text("987654321"), Value::UnchangedToast];
        let err = toast
            .recover(&table, "raw/t/", &cols, &mut update, None, None)
            .await
            .expect_err("unknown in an overflowing batch");
        assert!(
            matches!(err, ToastError::EvictedManyInBatch { .. }),
            "{err}"
        );
        // The next batch starts with a clean slate.
        toast.batch_written([]);
        let err = toast
            .recover(&table, "raw/t/", &cols, &mut update, None, None)
            .await
            .expect_err("nothing in the raw zone");
        assert!(matches!(err, ToastError::NotFound { .. }), "{err}");
    }

    #[test]
    fn values_print_as_postgres_text() {
        let list: ArrayRef = Arc::new(arrow_array::ListArray::from_iter_primitive::<
            arrow_array::types::Int32Type,
            _,
            _,
        >(vec![Some(vec![Some(1), None, Some(3)])]));
        assert_eq!(
            pg_text(&list, 0).expect("list").as_deref(),
            Some("{1,NULL,3}")
        );
        let strings: ArrayRef = Arc::new(arrow_array::StringArray::from(vec!["x, y"]));
        assert_eq!(quote_array_element("x, y"), "\"x, y\"");
        assert_eq!(quote_array_element("q\"uote"), "\"q\\\"uote\"");
        assert_eq!(pg_text(&strings, 0).expect("text").as_deref(), Some("x, y"));
        let bytes: ArrayRef = Arc::new(arrow_array::BinaryArray::from(vec![&b"\x01\xab"[..]]));
        assert_eq!(
            pg_text(&bytes, 0).expect("bytea").as_deref(),
            Some("\\x01ab")
        );
        let decimal: ArrayRef = Arc::new(
            arrow_array::Decimal128Array::from(vec![12345])
                .with_precision_and_scale(10, 2)
                .expect("decimal"),
        );
        assert_eq!(
            pg_text(&decimal, 0).expect("decimal").as_deref(),
            Some("123.45")
        );
    }
}
