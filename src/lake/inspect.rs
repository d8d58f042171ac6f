//! Reading lake files back: Parquet metadata (schema, row groups, column statistics) and
//! pages of rows ([`super::parquet_read`], here over a [`Storage`] object), and the first
//! lines of CSV and JSON-lines files, from a local folder or S3 alike.
//!
//! Invariants: nothing here reads a whole file, and nothing is read or allocated by a
//! length the file gives: Parquet reads stay within the object's size (see
//! [`super::parquet_read`]), text previews read at most [`MAX_TEXT_READ`] bytes and
//! decompress at most [`MAX_TEXT_BYTES`].

use std::ops::Range;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};

pub use super::parquet_read::{
    ByteSource, ColumnChunkSummary, ParquetSummary, RowGroupSummary, displayable, displayable_batch,
};
use super::storage::{Storage, StorageError};

/// What reading a lake file back can fail with.
pub type InspectError = super::parquet_read::InspectError<StorageError>;

/// A Parquet file of the lake, open.
pub type ParquetFile = super::parquet_read::ParquetFile<StorageObject>;

/// Parquet files of the lake read as one table.
pub type ParquetDataset = super::parquet_read::ParquetDataset<StorageObject>;

/// Files a folder preview opens at most (each costs a footer read).
pub const MAX_DATASET_FILES: usize = 2000;

/// Bytes a text preview reads from the start of a file.
pub const MAX_TEXT_READ: u64 = 4 * 1024 * 1024;

/// Bytes of text a preview decompresses at most: a small gzip file can hold gigabytes.
pub const MAX_TEXT_BYTES: u64 = 16 * 1024 * 1024;

/// One object of a [`Storage`], read by ranges.
pub struct StorageObject {
    storage: Storage,
    key: String,
    size: u64,
}

impl ByteSource for StorageObject {
    type Error = StorageError;

    fn name(&self) -> &str {
        &self.key
    }

    fn uri(&self) -> String {
        self.storage.uri(&self.key)
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn read(&self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes, StorageError>> {
        self.storage.get_range(&self.key, range).boxed()
    }
}

impl ParquetFile {
    /// Opens `key` of `storage`: its size, then its footer.
    pub async fn open(storage: &Storage, key: &str) -> Result<ParquetFile, InspectError> {
        let size = storage.head(key).await?.size;
        Self::from_source(StorageObject {
            storage: storage.clone(),
            key: key.to_owned(),
            size,
        })
        .await
    }
}

impl ParquetDataset {
    /// The Parquet files below `prefix` (footers read a few at a time), at most
    /// [`MAX_DATASET_FILES`] of them.
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
        let files: Vec<(String, std::sync::Arc<ParquetFile>)> =
            futures::stream::iter(keys.into_iter().map(|key| async move {
                let file = ParquetFile::open(storage, &key).await?;
                Ok::<_, InspectError>((key, std::sync::Arc::new(file)))
            }))
            .buffered(16)
            .try_collect()
            .await?;
        Ok(Self::from_files(files, skipped_files))
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
    use std::io::{BufRead, Read};
    let size = storage.head(key).await?.size;
    let head = storage.get_range(key, 0..size.min(MAX_TEXT_READ)).await?;
    let reader: Box<dyn std::io::Read> = if key.ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(std::io::Cursor::new(head)).take(MAX_TEXT_BYTES))
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
