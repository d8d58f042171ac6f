//! Writers of raw-zone files: Parquet, CSV (DMS's quoting) and JSON lines.
//!
//! A [`RollingWriter`] takes record batches and writes them to files in a spool folder,
//! closing a file once it reaches the size limit (DMS `MaxFileSize`). Closed files are
//! flushed and fsynced before they are handed back, so the caller can move them into place.
//! Invariants: Parquet row groups are cut at about [`ROW_GROUP_BYTES`] of in-memory data, so
//! memory per writer is bounded; the optional `Op` and timestamp columns come first, in that
//! order, as in DMS. Spool files are new files, mode 0600, named
//! `<prefix>-<pid>-<random>-<sequence>.<extension>.tmp` ([`spool_file_name`]): the caller's
//! prefix is made a short, safe file-name part whatever it holds (a table's name may be long
//! or hostile), and the writer's process id and a random part make the name unique and
//! unpredictable.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as ParquetCompression, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::config::{Compression, DataFormat};

/// Target uncompressed size of a Parquet row group: large enough for scans.
pub const ROW_GROUP_BYTES: usize = 128 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no space left on the device writing {path}. Free space there or choose another target"
    )]
    DiskFull { path: PathBuf },
    #[error("encoding {format} file {path}: {source}")]
    Encode {
        format: &'static str,
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl FormatError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        if matches!(source.raw_os_error(), Some(28) | Some(122)) {
            FormatError::DiskFull {
                path: path.to_owned(),
            }
        } else {
            FormatError::Io {
                path: path.to_owned(),
                source,
            }
        }
    }

    /// Parquet and Arrow writers wrap I/O errors in their own; find a full disk inside.
    fn encode(
        format: &'static str,
        path: &Path,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        let message = e.to_string();
        if message.contains("No space left on device") || message.contains("os error 28") {
            FormatError::DiskFull {
                path: path.to_owned(),
            }
        } else {
            FormatError::Encode {
                format,
                path: path.to_owned(),
                source: Box::new(e),
            }
        }
    }
}

/// How files are written; from the task's target settings.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    pub format: DataFormat,
    pub compression: Compression,
    /// Close a file once it holds at least this many bytes.
    pub max_file_bytes: u64,
    /// Add a first column `Op` with this value (`I` for a full load with IncludeOpForFullLoad).
    pub op: Option<&'static str>,
    /// Add a timestamp column with this name (DMS `TimestampColumnName`).
    pub timestamp_column: Option<String>,
    /// Cut a Parquet row group once it holds this many bytes in memory (at most
    /// [`ROW_GROUP_BYTES`]); callers running many writers at once pass a share of their budget.
    pub row_group_bytes: usize,
}

impl WriterOptions {
    /// The file extension, e.g. `parquet` or `csv.gz`.
    pub fn extension(&self) -> String {
        match (self.format, self.compression) {
            (DataFormat::Parquet, _) => "parquet".into(),
            (f, Compression::Gzip) => format!("{}.gz", f.extension()),
            (f, _) => f.extension().into(),
        }
    }

    /// The schema of written files: the optional `Op` and timestamp columns, then the table's.
    pub fn output_schema(&self, table: &Schema) -> SchemaRef {
        let mut fields: Vec<Arc<Field>> = Vec::new();
        if self.op.is_some() {
            fields.push(Arc::new(Field::new("Op", DataType::Utf8, false)));
        }
        if let Some(name) = &self.timestamp_column {
            fields.push(Arc::new(Field::new(
                name,
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            )));
        }
        fields.extend(table.fields().iter().cloned());
        Arc::new(Schema::new_with_metadata(fields, table.metadata().clone()))
    }
}

/// A closed, durable file in the spool folder.
#[derive(Debug, Clone)]
pub struct FinishedFile {
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
}

enum Encoder {
    Parquet(Box<ArrowWriter<BufWriter<File>>>),
    Csv(Box<arrow_csv::Writer<CountingWriter>>),
    Json(arrow_json::LineDelimitedWriter<CountingWriter>),
}

struct OpenFile {
    encoder: Encoder,
    path: PathBuf,
    rows: u64,
    /// The file's size as of the last write.
    size: u64,
    /// Bytes a CSV or JSON encoder has written to the file so far.
    written: Arc<AtomicUsize>,
}

/// The longest part of a spool file's name taken from the caller's prefix, in bytes: with the
/// writer's own part (about 60 bytes) a name stays well within a file name's 255.
const SPOOL_PREFIX_MAX: usize = 120;

/// `prefix` as the start of a spool file's name: every character other than an ASCII letter,
/// digit, `.`, `_` or `-` becomes `_` (no `/`, `\`, NUL or control character; non-ASCII names
/// stay short), cut at [`SPOOL_PREFIX_MAX`] bytes. Task names are left as they are, so a
/// task's files start with `<task>-` ([`crate::lake::Storage::clean_spool`]).
pub fn spool_prefix(prefix: &str) -> String {
    prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(SPOOL_PREFIX_MAX)
        .collect()
}

/// A rolling writer's spool file: `<prefix>-<pid>-<random>-<sequence>.<extension>.tmp`, the
/// prefix made safe by [`spool_prefix`], `random` 32 hex digits.
pub fn spool_file_name(
    prefix: &str,
    pid: u32,
    random: &str,
    sequence: u32,
    extension: &str,
) -> String {
    format!(
        "{}-{pid}-{random}-{sequence:04}.{extension}.tmp",
        spool_prefix(prefix)
    )
}

/// The process id of the writer of the spool file `name` ([`spool_file_name`]), read from
/// the right (the prefix may hold `-`); `None` for any other name.
pub fn spool_writer(name: &str) -> Option<u32> {
    let mut parts = name.strip_suffix(".tmp")?.rsplitn(4, '-');
    let sequence = parts.next()?;
    let random = parts.next()?;
    let pid = parts.next()?;
    parts.next()?;
    let numbered = sequence
        .split_once('.')
        .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    let random_ok = random.len() == 32 && random.bytes().all(|b| b.is_ascii_hexdigit());
    if numbered && random_ok {
        pid.parse().ok()
    } else {
        None
    }
}

pub struct RollingWriter {
    options: WriterOptions,
    schema: SchemaRef,
    spool_dir: PathBuf,
    file_prefix: String,
    /// This writer's random name part.
    random: String,
    sequence: u32,
    open: Option<OpenFile>,
}

impl RollingWriter {
    /// `file_prefix` starts the spool files' names. Callers pass `<task>-<what>` (e.g.
    /// `load-public.orders-r3`, `shop-cdc-cdc-public.orders`): the task first, so that
    /// [`crate::lake::Storage::clean_spool`] finds a killed run's files. It need not be unique,
    /// short or safe: it is sanitised and cut ([`spool_prefix`]), and the writer appends its
    /// process id and a random part.
    pub fn new(
        options: WriterOptions,
        table_schema: &Schema,
        spool_dir: PathBuf,
        file_prefix: String,
    ) -> Self {
        RollingWriter {
            schema: options.output_schema(table_schema),
            options,
            spool_dir,
            file_prefix,
            random: uuid::Uuid::new_v4().simple().to_string(),
            sequence: 0,
            open: None,
        }
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Bytes of the open file so far (encoded, plus what is buffered for the row group).
    pub fn open_bytes(&self) -> u64 {
        self.open.as_ref().map_or(0, |o| o.size)
    }

    /// Bytes the open file holds in memory: a Parquet row group not yet written.
    pub fn buffered_bytes(&self) -> usize {
        match self.open.as_ref().map(|o| &o.encoder) {
            Some(Encoder::Parquet(w)) => w.in_progress_size(),
            _ => 0,
        }
    }

    /// Writes the open Parquet row group out now (callers sharing a memory budget between
    /// writers); nothing for other formats.
    pub fn flush_row_group(&mut self) -> Result<(), FormatError> {
        if let Some(open) = self.open.as_mut()
            && let Encoder::Parquet(w) = &mut open.encoder
        {
            w.flush()
                .map_err(|e| FormatError::encode("parquet", &open.path, e))?;
        }
        Ok(())
    }

    /// Writes a batch of the table's own columns. Returns a file when this batch filled it.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<Option<FinishedFile>, FormatError> {
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        let batch = self.decorate(batch)?;
        if self.open.is_none() {
            self.open = Some(self.create()?);
        }
        let Some(open) = self.open.as_mut() else {
            unreachable!("opened above")
        };
        let path = open.path.clone();
        let size = match &mut open.encoder {
            Encoder::Parquet(w) => {
                w.write(&batch)
                    .map_err(|e| FormatError::encode("parquet", &path, e))?;
                if w.in_progress_size() >= self.options.row_group_bytes {
                    w.flush()
                        .map_err(|e| FormatError::encode("parquet", &path, e))?;
                }
                w.bytes_written() + w.in_progress_size()
            }
            Encoder::Csv(w) => {
                let batch = text_compatible(&batch, true)
                    .map_err(|e| FormatError::encode("csv", &path, e))?;
                w.write(&batch)
                    .map_err(|e| FormatError::encode("csv", &path, e))?;
                open.written.load(Ordering::Relaxed)
            }
            Encoder::Json(w) => {
                let batch = text_compatible(&batch, false)
                    .map_err(|e| FormatError::encode("json", &path, e))?;
                w.write(&batch)
                    .map_err(|e| FormatError::encode("json", &path, e))?;
                open.written.load(Ordering::Relaxed)
            }
        };
        open.rows += batch.num_rows() as u64;
        open.size = size as u64;
        if size as u64 >= self.options.max_file_bytes {
            return self.close();
        }
        Ok(None)
    }

    /// Closes the open file, if any. A file that cannot be finished (a full disk, say) is
    /// removed, so no partial file is left behind.
    pub fn close(&mut self) -> Result<Option<FinishedFile>, FormatError> {
        let Some(open) = self.open.take() else {
            return Ok(None);
        };
        let path = open.path.clone();
        let finished = finish(open);
        if finished.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        finished.map(Some)
    }

    /// Removes the open file without finishing it (after an error).
    pub fn abandon(&mut self) {
        if let Some(open) = self.open.take() {
            let _ = std::fs::remove_file(open.path);
        }
    }

    fn create(&mut self) -> Result<OpenFile, FormatError> {
        self.sequence += 1;
        let path = self.spool_dir.join(spool_file_name(
            &self.file_prefix,
            std::process::id(),
            &self.random,
            self.sequence,
            &self.options.extension(),
        ));
        // A new private file: never one another user put there, never readable by others.
        let file = super::durable::create_private(&path).map_err(|e| FormatError::io(&path, e))?;
        let written = Arc::new(AtomicUsize::new(0));
        let encoder = match self.options.format {
            DataFormat::Parquet => {
                let compression = match self.options.compression {
                    Compression::None => ParquetCompression::UNCOMPRESSED,
                    Compression::Snappy => ParquetCompression::SNAPPY,
                    Compression::Zstd => ParquetCompression::ZSTD(ZstdLevel::default()),
                    Compression::Gzip => ParquetCompression::GZIP(GzipLevel::default()),
                };
                let props = WriterProperties::builder()
                    .set_compression(compression)
                    .set_created_by(format!("tributary {}", env!("CARGO_PKG_VERSION")))
                    // Row groups are cut by size in `write`; this only caps very narrow tables.
                    .set_max_row_group_row_count(Some(10_000_000))
                    .build();
                let writer = ArrowWriter::try_new(
                    BufWriter::with_capacity(1 << 20, file),
                    self.schema.clone(),
                    Some(props),
                )
                .map_err(|e| FormatError::encode("parquet", &path, e))?;
                Encoder::Parquet(Box::new(writer))
            }
            DataFormat::Csv => {
                Encoder::Csv(Box::new(
                    // DMS's CSV: no header, timestamps with a space.
                    arrow_csv::WriterBuilder::new()
                        .with_header(false)
                        .with_timestamp_format("%Y-%m-%d %H:%M:%S%.6f".into())
                        .build(CountingWriter::new(
                            file,
                            self.options.compression,
                            written.clone(),
                        )),
                ))
            }
            DataFormat::Json => Encoder::Json(arrow_json::LineDelimitedWriter::new(
                CountingWriter::new(file, self.options.compression, written.clone()),
            )),
        };
        Ok(OpenFile {
            encoder,
            path,
            rows: 0,
            size: 0,
            written,
        })
    }

    /// Prepends the `Op` and timestamp columns the options ask for.
    fn decorate(&self, batch: &RecordBatch) -> Result<RecordBatch, FormatError> {
        if self.options.op.is_none() && self.options.timestamp_column.is_none() {
            return Ok(batch.clone());
        }
        let n = batch.num_rows();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns() + 2);
        if let Some(op) = self.options.op {
            columns.push(Arc::new(StringArray::from_iter_values(
                std::iter::repeat_n(op, n),
            )));
        }
        if self.options.timestamp_column.is_some() {
            let now = chrono::Utc::now().timestamp_micros();
            columns.push(Arc::new(
                TimestampMicrosecondArray::from_iter_values(std::iter::repeat_n(now, n))
                    .with_timezone("UTC"),
            ));
        }
        columns.extend(batch.columns().iter().cloned());
        RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| FormatError::encode("arrow", &self.spool_dir, e))
    }
}

/// Finishes an open file: footer or gzip trailer written, data synced to disk.
fn finish(open: OpenFile) -> Result<FinishedFile, FormatError> {
    let path = open.path;
    let file = match open.encoder {
        Encoder::Parquet(w) => w
            .into_inner()
            .map_err(|e| FormatError::encode("parquet", &path, e))?
            .into_inner()
            .map_err(|e| FormatError::io(&path, e.into_error()))?,
        Encoder::Csv(w) => w.into_inner().finish(&path)?,
        Encoder::Json(mut w) => {
            w.finish()
                .map_err(|e| FormatError::encode("json", &path, e))?;
            w.into_inner().finish(&path)?
        }
    };
    file.sync_all().map_err(|e| FormatError::io(&path, e))?;
    let bytes = file
        .metadata()
        .map_err(|e| FormatError::io(&path, e))?
        .len();
    Ok(FinishedFile {
        path,
        rows: open.rows,
        bytes,
    })
}

impl Drop for RollingWriter {
    fn drop(&mut self) {
        // A writer dropped with a file open failed or was cancelled: leave no partial file.
        self.abandon();
    }
}

/// Prepares a batch for a text format (CSV, JSON lines).
///
/// Timestamps with a time zone are written as their UTC wall-clock time: their values are
/// UTC already, and the text writers cannot resolve zone names without a zone database.
/// CSV has no nested or binary values, so for CSV (`flatten`) such columns are written as
/// their display text (lists as `[1, 2]`, binary as hex), the way DMS writes them as text.
fn text_compatible(
    batch: &RecordBatch,
    flatten: bool,
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let as_text = |t: &DataType| {
        flatten
            && matches!(
                t,
                DataType::List(_) | DataType::Binary | DataType::LargeBinary | DataType::Struct(_)
            )
    };
    let utc = |t: &DataType| matches!(t, DataType::Timestamp(TimeUnit::Microsecond, Some(_)));
    let schema = batch.schema();
    if !schema
        .fields()
        .iter()
        .any(|f| as_text(f.data_type()) || utc(f.data_type()))
    {
        return Ok(batch.clone());
    }
    let options = arrow_cast::display::FormatOptions::default();
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if as_text(field.data_type()) {
            let formatter =
                arrow_cast::display::ArrayFormatter::try_new(column.as_ref(), &options)?;
            let text: StringArray = (0..column.len())
                .map(|i| column.is_valid(i).then(|| formatter.value(i).to_string()))
                .collect();
            fields.push(Field::new(field.name(), DataType::Utf8, true));
            columns.push(Arc::new(text));
        } else if utc(field.data_type()) {
            let naive = column
                .as_primitive::<TimestampMicrosecondType>()
                .clone()
                .with_timezone_opt(None::<String>);
            fields.push(
                field
                    .as_ref()
                    .clone()
                    .with_data_type(naive.data_type().clone()),
            );
            columns.push(Arc::new(naive));
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// A file sink that counts what reaches the disk, optionally through gzip.
pub struct CountingWriter {
    inner: CountingInner,
}

enum CountingInner {
    Plain(Counted<BufWriter<File>>),
    Gzip(Box<flate2::write::GzEncoder<Counted<BufWriter<File>>>>),
}

pub struct Counted<W> {
    inner: W,
    written: Arc<AtomicUsize>,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written.fetch_add(n, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl CountingWriter {
    fn new(file: File, compression: Compression, written: Arc<AtomicUsize>) -> Self {
        let counted = Counted {
            inner: BufWriter::with_capacity(1 << 20, file),
            written,
        };
        CountingWriter {
            inner: match compression {
                Compression::Gzip => CountingInner::Gzip(Box::new(flate2::write::GzEncoder::new(
                    counted,
                    flate2::Compression::default(),
                ))),
                _ => CountingInner::Plain(counted),
            },
        }
    }

    fn finish(self, path: &Path) -> Result<File, FormatError> {
        let counted = match self.inner {
            CountingInner::Plain(c) => c,
            CountingInner::Gzip(g) => g.finish().map_err(|e| FormatError::io(path, e))?,
        };
        counted
            .inner
            .into_inner()
            .map_err(|e| FormatError::io(path, e.into_error()))
    }
}

impl Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.inner {
            CountingInner::Plain(c) => c.write(buf),
            CountingInner::Gzip(g) => g.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.inner {
            CountingInner::Plain(c) => c.flush(),
            CountingInner::Gzip(g) => g.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Int64Array;

    fn batch(n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(0..n))])
            .expect("batch")
    }

    fn options(format: DataFormat, max_file_bytes: u64) -> WriterOptions {
        WriterOptions {
            format,
            compression: Compression::None,
            max_file_bytes,
            op: Some("I"),
            timestamp_column: Some("ts".into()),
            row_group_bytes: ROW_GROUP_BYTES,
        }
    }

    #[test]
    fn files_roll_at_the_size_limit_and_carry_op_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = batch(10_000);
        let mut w = RollingWriter::new(
            options(DataFormat::Csv, 100_000),
            &b.schema(),
            dir.path().into(),
            "t".into(),
        );
        let mut files = Vec::new();
        for _ in 0..20 {
            files.extend(w.write(&b).expect("write"));
        }
        files.extend(w.close().expect("close"));
        assert!(files.len() > 1, "rolled into {} files", files.len());
        assert_eq!(files.iter().map(|f| f.rows).sum::<u64>(), 200_000);
        let text = std::fs::read_to_string(&files[0].path).expect("read");
        let first = text.lines().next().expect("a line");
        assert!(first.starts_with("I,"), "{first}");
        assert!(first.ends_with(",0"), "{first}");
    }

    #[test]
    fn dropped_writer_leaves_no_partial_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = batch(10);
        let mut w = RollingWriter::new(
            options(DataFormat::Parquet, u64::MAX),
            &b.schema(),
            dir.path().into(),
            "t".into(),
        );
        w.write(&b).expect("write");
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).expect("read").count(), 0);
    }

    #[test]
    fn spool_names_are_safe_short_private_and_unpredictable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = batch(10);
        let hostile = format!("load-../..\\x/\0\u{e9}{}", "t".repeat(300));
        let mut writers: Vec<RollingWriter> = (0..2)
            .map(|_| {
                RollingWriter::new(
                    options(DataFormat::Parquet, u64::MAX),
                    &b.schema(),
                    dir.path().into(),
                    hostile.clone(),
                )
            })
            .collect();
        let files: Vec<FinishedFile> = writers
            .iter_mut()
            .map(|w| {
                w.write(&b).expect("write");
                w.close().expect("close").expect("a file")
            })
            .collect();
        for f in &files {
            assert_eq!(f.path.parent(), Some(dir.path()), "in the spool folder");
            let name = f.path.file_name().unwrap().to_string_lossy().into_owned();
            assert!(name.len() < 200, "{name}");
            assert!(name.starts_with("load-.._.._x___t"), "{name}");
            assert_eq!(spool_writer(&name), Some(std::process::id()), "{name}");
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&f.path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        assert_ne!(files[0].path, files[1].path, "same prefix, two names");
    }

    #[test]
    fn the_writer_of_a_spool_file_is_read_from_its_name() {
        let random = "0123456789abcdef0123456789abcdef";
        let name = spool_file_name("shop-cdc-public.a-b", 4242, random, 7, "csv.gz");
        assert_eq!(
            name,
            format!("shop-cdc-public.a-b-4242-{random}-0007.csv.gz.tmp")
        );
        assert_eq!(spool_writer(&name), Some(4242));
        for other in [
            "load-public.t-1.parquet",
            "load-public.t-1-2-3.parquet.tmp",
            "put-12-abc.tmp",
            "x.tmp",
        ] {
            assert_eq!(spool_writer(other), None, "{other}");
        }
    }
}
