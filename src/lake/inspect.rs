//! Reading lake files back: Parquet metadata (schema, row groups, column statistics) and
//! pages of rows, from a local folder or S3 alike.
//!
//! Invariant: nothing here reads a whole file. Metadata comes from the footer (one ranged
//! read with a prefetch hint), and rows come only from the row groups that hold them.

use std::ops::Range;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use super::storage::{Storage, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(
        "{uri} is not a readable Parquet file ({message}). It may be truncated, corrupt, or not Parquet at all"
    )]
    NotParquet { uri: String, message: String },
    #[error("reading {uri}: {message}")]
    Read { uri: String, message: String },
}

/// A Parquet file's metadata, ready to show.
#[derive(Debug, Clone)]
pub struct ParquetSummary {
    pub uri: String,
    pub size: u64,
    pub num_rows: i64,
    pub created_by: Option<String>,
    pub schema: SchemaRef,
    /// Parquet's own view of each leaf column: physical and logical type.
    pub parquet_columns: Vec<(String, String)>,
    pub row_groups: Vec<RowGroupSummary>,
}

#[derive(Debug, Clone)]
pub struct RowGroupSummary {
    pub rows: i64,
    pub compressed_bytes: i64,
    pub uncompressed_bytes: i64,
    pub columns: Vec<ColumnChunkSummary>,
}

#[derive(Debug, Clone)]
pub struct ColumnChunkSummary {
    pub name: String,
    /// Formatted with the column's logical type; `None` when the file has no statistics.
    pub min: Option<String>,
    pub max: Option<String>,
    pub nulls: Option<u64>,
    pub encodings: String,
    pub compression: String,
    pub compressed_bytes: i64,
    pub uncompressed_bytes: i64,
}

/// A column chunk's formatted min, max and null count.
type ChunkStats = (Option<String>, Option<String>, Option<u64>);

/// Parquet's async reader over a [`Storage`] object, by ranged reads.
struct StorageReader {
    storage: Storage,
    key: String,
    size: u64,
}

impl AsyncFileReader for StorageReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.storage
                .get_range(&self.key, range)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    /// The ranges a read needs (a page of each column), fetched at once rather than one
    /// after another: object stores answer each request with a fixed latency.
    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            futures::future::try_join_all(ranges.into_iter().map(|range| async {
                self.storage
                    .get_range(&self.key, range)
                    .await
                    .map_err(|e| ParquetError::External(Box::new(e)))
            }))
            .await
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            // One read of the last 64 KB usually holds the whole footer. The offset index
            // (where each page starts) lets a read of a few rows fetch only their pages, not
            // whole row groups: the first rows of a GB file on S3 come in well under a second.
            let metadata = ParquetMetaDataReader::new()
                .with_prefetch_hint(Some(64 * 1024))
                .with_offset_index_policy(parquet::file::metadata::PageIndexPolicy::Optional)
                .load_and_finish(&mut *self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// An open Parquet file: metadata read once, rows read page by page.
pub struct ParquetFile {
    storage: Storage,
    key: String,
    size: u64,
    metadata: Arc<ParquetMetaData>,
    schema: SchemaRef,
}

impl ParquetFile {
    pub async fn open(storage: &Storage, key: &str) -> Result<ParquetFile, InspectError> {
        let size = storage.head(key).await?.size;
        let reader = StorageReader {
            storage: storage.clone(),
            key: key.to_owned(),
            size,
        };
        let builder = ParquetRecordBatchStreamBuilder::new(reader)
            .await
            .map_err(|e| not_parquet(storage, key, e))?;
        let metadata = builder.metadata().clone();
        let schema = builder.schema().clone();
        Ok(ParquetFile {
            storage: storage.clone(),
            key: key.to_owned(),
            size,
            metadata,
            schema,
        })
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn num_rows(&self) -> i64 {
        self.metadata.file_metadata().num_rows()
    }

    pub fn summary(&self) -> Result<ParquetSummary, InspectError> {
        let uri = self.storage.uri(&self.key);
        let file = self.metadata.file_metadata();
        let parquet_schema = file.schema_descr();
        let parquet_columns = parquet_schema
            .columns()
            .iter()
            .map(|c| {
                let logical = c
                    .logical_type_ref()
                    .map(|l| format!("{l:?}"))
                    .unwrap_or_else(|| format!("{:?}", c.converted_type()));
                (
                    c.path().string(),
                    format!("{} {logical}", c.physical_type()),
                )
            })
            .collect();
        let format_options = arrow_cast::display::FormatOptions::default();
        let row_groups = self.metadata.row_groups();
        // Statistics per top-level column, formatted with its Arrow (logical) type.
        let mut per_column: Vec<Vec<ChunkStats>> = Vec::new();
        for field in self.schema.fields() {
            let stats = StatisticsConverter::try_new(field.name(), &self.schema, parquet_schema)
                .and_then(|c| {
                    Ok((
                        c.row_group_mins(row_groups.iter())?,
                        c.row_group_maxes(row_groups.iter())?,
                        c.row_group_null_counts(row_groups.iter())?,
                    ))
                });
            let column = match stats {
                Ok((mins, maxes, nulls)) => {
                    let (mins, maxes) = (displayable(&mins), displayable(&maxes));
                    let fmt = |a: &arrow_array::ArrayRef, i: usize| {
                        use arrow_array::Array;
                        if a.is_null(i) {
                            return None;
                        }
                        arrow_cast::display::ArrayFormatter::try_new(a.as_ref(), &format_options)
                            .ok()
                            .map(|f| f.value(i).to_string())
                    };
                    (0..row_groups.len())
                        .map(|i| {
                            use arrow_array::Array;
                            (
                                fmt(&mins, i),
                                fmt(&maxes, i),
                                nulls.is_valid(i).then(|| nulls.value(i)),
                            )
                        })
                        .collect()
                }
                // Nested columns have no single min/max.
                Err(_) => vec![(None, None, None); row_groups.len()],
            };
            per_column.push(column);
        }
        let summaries = row_groups
            .iter()
            .enumerate()
            .map(|(g, rg)| RowGroupSummary {
                rows: rg.num_rows(),
                compressed_bytes: rg.compressed_size(),
                uncompressed_bytes: rg.total_byte_size(),
                columns: rg
                    .columns()
                    .iter()
                    .map(|c| {
                        let name = c.column_path().string();
                        let top = c.column_path().parts().first().cloned().unwrap_or_default();
                        let stats = self
                            .schema
                            .index_of(&top)
                            .ok()
                            .and_then(|i| per_column.get(i))
                            .and_then(|s| s.get(g))
                            .cloned()
                            .unwrap_or((None, None, None));
                        ColumnChunkSummary {
                            name,
                            min: stats.0,
                            max: stats.1,
                            nulls: stats.2,
                            encodings: c
                                .encodings()
                                .map(|e| format!("{e:?}"))
                                .collect::<Vec<_>>()
                                .join(","),
                            compression: format!("{:?}", c.compression()),
                            compressed_bytes: c.compressed_size(),
                            uncompressed_bytes: c.uncompressed_size(),
                        }
                    })
                    .collect(),
            })
            .collect();
        Ok(ParquetSummary {
            uri,
            size: self.size,
            num_rows: file.num_rows(),
            created_by: file.created_by().map(str::to_owned),
            schema: self.schema.clone(),
            parquet_columns,
            row_groups: summaries,
        })
    }

    /// Rows `[offset, offset + limit)`, reading only the row groups that hold them.
    pub async fn read_rows(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<RecordBatch>, InspectError> {
        let mut start = 0usize;
        let mut groups = Vec::new();
        let mut skip = 0usize;
        for (i, rg) in self.metadata.row_groups().iter().enumerate() {
            let end = start + rg.num_rows().max(0) as usize;
            if end > offset && start < offset + limit {
                if groups.is_empty() {
                    skip = offset.saturating_sub(start);
                }
                groups.push(i);
            }
            start = end;
        }
        if groups.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let stream = self
            .stream_builder()?
            .with_row_groups(groups)
            .with_offset(skip)
            .with_limit(limit)
            .with_batch_size(limit.clamp(1, 8192))
            .build()
            .map_err(|e| self.read_error(e))?;
        stream.try_collect().await.map_err(|e| self.read_error(e))
    }

    /// A reader of this file's rows, from the metadata already read.
    fn stream_builder(
        &self,
    ) -> Result<ParquetRecordBatchStreamBuilder<StorageReader>, InspectError> {
        let reader = StorageReader {
            storage: self.storage.clone(),
            key: self.key.clone(),
            size: self.size,
        };
        let metadata = parquet::arrow::arrow_reader::ArrowReaderMetadata::try_new(
            self.metadata.clone(),
            Default::default(),
        )
        .map_err(|e| not_parquet(&self.storage, &self.key, e))?;
        Ok(ParquetRecordBatchStreamBuilder::new_with_metadata(
            reader, metadata,
        ))
    }

    fn read_error(&self, e: impl std::fmt::Display) -> InspectError {
        InspectError::Read {
            uri: self.storage.uri(&self.key),
            message: e.to_string(),
        }
    }

    pub fn metadata(&self) -> &Arc<ParquetMetaData> {
        &self.metadata
    }

    /// The named columns (those the file has, in file order) of the given row groups, and
    /// of only the selected rows of them when `rows` is given.
    pub async fn read_columns(
        &self,
        columns: &[&str],
        row_groups: Vec<usize>,
        rows: Option<parquet::arrow::arrow_reader::RowSelection>,
    ) -> Result<Vec<RecordBatch>, InspectError> {
        if row_groups.is_empty() {
            return Ok(Vec::new());
        }
        let roots: Vec<usize> = self
            .schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| columns.contains(&f.name().as_str()))
            .map(|(i, _)| i)
            .collect();
        let mask = parquet::arrow::ProjectionMask::roots(
            self.metadata.file_metadata().schema_descr(),
            roots,
        );
        let mut builder = self
            .stream_builder()?
            .with_row_groups(row_groups)
            .with_projection(mask);
        if let Some(rows) = rows {
            builder = builder.with_row_selection(rows);
        }
        let stream = builder.build().map_err(|e| self.read_error(e))?;
        stream.try_collect().await.map_err(|e| self.read_error(e))
    }
}

/// Files a folder preview opens at most (each costs a footer read).
pub const MAX_DATASET_FILES: usize = 2000;

/// Several Parquet files read as one table: a folder or a partition. The schema is the
/// union of the files' columns by name, in order of first appearance; a column whose type
/// differs between files is read as text. Rows are numbered across the files in key order.
pub struct ParquetDataset {
    files: Vec<(String, Arc<ParquetFile>)>,
    /// Row number at which each file starts.
    starts: Vec<usize>,
    schema: SchemaRef,
    /// Files that were not opened because of [`MAX_DATASET_FILES`].
    pub skipped_files: usize,
}

impl ParquetDataset {
    /// The Parquet files below `prefix` (footers read a few at a time).
    pub async fn open(storage: &Storage, prefix: &str) -> Result<ParquetDataset, InspectError> {
        let mut keys: Vec<String> = storage
            .list_all(prefix)
            .await?
            .into_iter()
            .map(|o| o.key)
            .filter(|k| {
                let name = k.rsplit('/').next().unwrap_or_default();
                name.ends_with(".parquet") && !super::layout::is_hidden_name(name)
            })
            .collect();
        keys.sort();
        let skipped_files = keys.len().saturating_sub(MAX_DATASET_FILES);
        keys.truncate(MAX_DATASET_FILES);
        let files: Vec<(String, Arc<ParquetFile>)> =
            futures::stream::iter(keys.into_iter().map(|key| async move {
                let file = ParquetFile::open(storage, &key).await?;
                Ok::<_, InspectError>((key, Arc::new(file)))
            }))
            .buffered(16)
            .try_collect()
            .await?;
        Ok(Self::from_files(files, skipped_files))
    }

    /// One file as a dataset (no I/O).
    pub fn single(file: Arc<ParquetFile>) -> ParquetDataset {
        Self::from_files(vec![(file.key().to_owned(), file)], 0)
    }

    fn from_files(files: Vec<(String, Arc<ParquetFile>)>, skipped_files: usize) -> Self {
        let mut fields: Vec<Field> = Vec::new();
        for (_, file) in &files {
            for f in file.schema().fields() {
                match fields.iter_mut().find(|m| m.name() == f.name()) {
                    Some(m) if m.data_type() != f.data_type() => {
                        *m = Field::new(f.name(), DataType::Utf8, true);
                    }
                    Some(_) => {}
                    None => fields.push(f.as_ref().clone().with_nullable(true)),
                }
            }
        }
        let mut starts = Vec::with_capacity(files.len());
        let mut rows = 0usize;
        for (_, file) in &files {
            starts.push(rows);
            rows += file.num_rows().max(0) as usize;
        }
        ParquetDataset {
            files,
            starts,
            schema: Arc::new(Schema::new(fields)),
            skipped_files,
        }
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn files(&self) -> impl Iterator<Item = (&str, &ParquetFile)> {
        self.files.iter().map(|(k, f)| (k.as_str(), f.as_ref()))
    }

    pub fn num_rows(&self) -> usize {
        self.starts.last().copied().unwrap_or(0)
            + self
                .files
                .last()
                .map_or(0, |(_, f)| f.num_rows().max(0) as usize)
    }

    /// Rows `[offset, offset + limit)` across files, in the merged schema.
    pub async fn read_rows(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<RecordBatch>, InspectError> {
        let mut out = Vec::new();
        let end = offset + limit;
        for ((_, file), &start) in self.files.iter().zip(&self.starts) {
            let rows = file.num_rows().max(0) as usize;
            if start + rows <= offset || start >= end {
                continue;
            }
            let from = offset.saturating_sub(start);
            let take = (end.min(start + rows)) - (start + from);
            for batch in file.read_rows(from, take).await? {
                out.push(self.conform(&batch)?);
            }
        }
        Ok(out)
    }

    /// The rows of one row group of file `file` whose column `column` shows `needle`
    /// (case-insensitive), in the merged schema: one step of a filter over the dataset.
    pub async fn filter_row_group(
        &self,
        file: usize,
        row_group: usize,
        column: &str,
        needle: &str,
    ) -> Result<Vec<RecordBatch>, InspectError> {
        let Some((_, f)) = self.files.get(file) else {
            return Ok(Vec::new());
        };
        if f.schema().field_with_name(column).is_err() {
            return Ok(Vec::new());
        }
        let needle = needle.to_lowercase();
        let columns: Vec<&str> = f
            .schema()
            .fields()
            .iter()
            .map(|c| c.name().as_str())
            .collect();
        let mut out = Vec::new();
        for batch in f.read_columns(&columns, vec![row_group], None).await? {
            let Some(values) = batch.column_by_name(column) else {
                continue;
            };
            let formatter = arrow_cast::display::ArrayFormatter::try_new(
                values.as_ref(),
                &arrow_cast::display::FormatOptions::default(),
            )
            .map_err(|e| f.read_error(e))?;
            let keep: arrow_array::BooleanArray = (0..batch.num_rows())
                .map(|i| {
                    Some(
                        values.is_valid(i)
                            && formatter
                                .value(i)
                                .to_string()
                                .to_lowercase()
                                .contains(&needle),
                    )
                })
                .collect();
            let matched =
                arrow_select::filter::filter_record_batch(&batch, &keep).map_err(|e| {
                    InspectError::Read {
                        uri: f.storage.uri(&f.key),
                        message: e.to_string(),
                    }
                })?;
            if matched.num_rows() > 0 {
                out.push(self.conform(&matched)?);
            }
        }
        Ok(out)
    }

    /// A file's batch in the merged schema: missing columns null, differing types as text.
    fn conform(&self, batch: &RecordBatch) -> Result<RecordBatch, InspectError> {
        let rows = batch.num_rows();
        let error = |e: arrow_schema::ArrowError| InspectError::Read {
            uri: String::from("(merged schema)"),
            message: e.to_string(),
        };
        let columns = self
            .schema
            .fields()
            .iter()
            .map(|field| match batch.column_by_name(field.name()) {
                Some(c) if c.data_type() == field.data_type() => Ok(c.clone()),
                Some(c) => arrow_cast::cast(c, field.data_type()).map_err(error),
                None => Ok(arrow_array::new_null_array(field.data_type(), rows)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(self.schema.clone(), columns, &options).map_err(error)
    }
}

/// The array with named time zones replaced by `+00:00`, the same instants: formatting a
/// named zone needs the tz database (chrono-tz), which the build leaves out.
pub fn displayable(array: &ArrayRef) -> ArrayRef {
    match array.data_type() {
        DataType::Timestamp(unit, Some(tz)) if tz.as_ref() != "+00:00" => {
            arrow_cast::cast(array, &DataType::Timestamp(*unit, Some("+00:00".into())))
                .unwrap_or_else(|_| array.clone())
        }
        _ => array.clone(),
    }
}

/// [`displayable`] for every column of a batch.
pub fn displayable_batch(batch: &RecordBatch) -> RecordBatch {
    let columns: Vec<ArrayRef> = batch.columns().iter().map(displayable).collect();
    let fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .zip(&columns)
        .map(|(f, c)| f.as_ref().clone().with_data_type(c.data_type().clone()))
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap_or_else(|_| batch.clone())
}

fn not_parquet(storage: &Storage, key: &str, e: ParquetError) -> InspectError {
    match e {
        ParquetError::External(inner) => match inner.downcast::<StorageError>() {
            Ok(s) => InspectError::Storage(*s),
            Err(other) => InspectError::NotParquet {
                uri: storage.uri(key),
                message: other.to_string(),
            },
        },
        other => InspectError::NotParquet {
            uri: storage.uri(key),
            message: other.to_string(),
        },
    }
}

/// Whether `key` names a CSV or JSON-lines file (gzip-compressed or not), which
/// [`read_text_lines`] previews.
pub fn is_text_file(key: &str) -> bool {
    [".csv", ".json", ".csv.gz", ".json.gz", ".jsonl"]
        .iter()
        .any(|ext| key.ends_with(ext))
}

/// The first `limit` lines of a CSV or JSON-lines file (gzip-compressed or not), reading at
/// most a few MB from its start.
pub async fn read_text_lines(
    storage: &Storage,
    key: &str,
    limit: usize,
) -> Result<Vec<String>, InspectError> {
    use std::io::BufRead;
    const MAX_READ: u64 = 4 * 1024 * 1024;
    let size = storage.head(key).await?.size;
    let head = storage.get_range(key, 0..size.min(MAX_READ)).await?;
    let reader: Box<dyn std::io::Read> = if key.ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(std::io::Cursor::new(head)))
    } else {
        Box::new(std::io::Cursor::new(head))
    };
    // A line cut by the read limit, or a truncated gzip stream, ends the preview there.
    Ok(std::io::BufReader::new(reader)
        .lines()
        .map_while(Result::ok)
        .take(limit)
        .collect())
}
