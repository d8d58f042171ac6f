//! Parquet files read back through ranged reads of a byte source: metadata (schema, row
//! groups, column statistics) and pages of rows. [`super::inspect`] reads lake files through
//! it (`tributary preview`, the app's preview, the crawler, curate); `fuzz/` reads bytes in
//! memory ([`MemorySource`]).
//!
//! Invariants, whatever the file (a file in a lake can be anyone's, and `fuzz/` feeds this
//! module arbitrary ones):
//! - nothing here reads a whole file: metadata comes from the footer (one ranged read with a
//!   prefetch hint), and rows come only from the row groups (pages) that hold them;
//! - every read lies within the file: a footer that points past its end is an error before
//!   anything is read or allocated for it, and a source that returns fewer bytes than asked
//!   is an error too;
//! - the footer and the page index are checked ([`thrift_fits`]) before the parquet crate
//!   decodes them, which sizes its vectors by the counts they hold: every count and length
//!   must fit in the bytes that remain, so what is allocated is bounded by the metadata's own
//!   size. (A page's size, an i32 in its header, is the format's: pages are allocated as
//!   their headers say, below 2 GiB.)
//! - pages are checked before the parquet crate decodes them ([`check_pages`]): at most
//!   [`MAX_PAGE_BYTES`] uncompressed, and a dictionary of no more values than its bytes hold
//!   (the crate sizes and zero-fills the dictionary by the header's count).
//! - the Arrow schema a file embeds (`ARROW:schema`) is used only when every type in it is
//!   one arrow-ipc decodes without panicking ([`arrow_schema_is_sound`]); otherwise the
//!   schema comes from the Parquet types alone;
//! - a malformed file is an error naming it, never a panic. The parquet crate (58) itself
//!   panics on some malformed pages (an `expect` when a data page in dictionary encoding has
//!   no dictionary, unchecked arithmetic on page headers): every call into it on a file's
//!   bytes runs inside [`contain`], which turns its panic into [`InspectError::Read`].
//!
//! This module uses nothing else of the crate: `fuzz/` compiles it on its own (see
//! `fuzz/src/lib.rs`).

use std::ops::Range;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::MetadataFetch;
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::errors::ParquetError;
use parquet::file::metadata::{
    FooterTail, PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader,
};
use std::panic::AssertUnwindSafe;

/// Bytes read from the end of a file to find its metadata: usually all of it, in one read.
const FOOTER_PREFETCH: u64 = 64 * 1024;
/// The footer's last 8 bytes: the metadata's length and the magic `PAR1`.
const FOOTER_TAIL: u64 = 8;

/// Ranged reads of one object that does not change while it is read, of known size: a lake
/// file, or bytes in memory.
pub trait ByteSource: Send + Sync + 'static {
    /// What the source itself fails with (the lake's storage errors).
    type Error: std::error::Error + Send + Sync + 'static;

    /// The object's name in its store (a key), to tell files apart.
    fn name(&self) -> &str;

    /// Where the object is, for messages.
    fn uri(&self) -> String;

    /// The object's size in bytes.
    fn size(&self) -> u64;

    /// The bytes of `range`, which the caller keeps within `0..size()`.
    fn read(&self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes, Self::Error>>;
}

/// A file held in memory.
pub struct MemorySource {
    pub uri: String,
    pub bytes: Bytes,
}

impl ByteSource for MemorySource {
    type Error = std::convert::Infallible;

    fn name(&self) -> &str {
        &self.uri
    }

    fn uri(&self) -> String {
        self.uri.clone()
    }

    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read(&self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes, Self::Error>> {
        // Ranges are checked against the size by the reader; clamped again here, so that a
        // caller's mistake is a short read (an error), not a panic.
        let len = self.bytes.len();
        let start = usize::try_from(range.start).unwrap_or(len).min(len);
        let end = usize::try_from(range.end).unwrap_or(len).clamp(start, len);
        futures::future::ready(Ok(self.bytes.slice(start..end))).boxed()
    }
}

/// What reading a file back can fail with; `E` is the byte source's own error.
#[derive(Debug, thiserror::Error)]
pub enum InspectError<E: std::error::Error + Send + Sync + 'static> {
    /// The byte source (the lake's storage) failed.
    #[error(transparent)]
    Storage(E),
    #[error(
        "{uri} is not a readable Parquet file ({message}). It may be truncated, corrupt, or not Parquet at all"
    )]
    NotParquet { uri: String, message: String },
    #[error("reading {uri}: {message}")]
    Read { uri: String, message: String },
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for InspectError<E> {
    fn from(e: E) -> Self {
        InspectError::Storage(e)
    }
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

/// Parquet's async reader over a [`ByteSource`], by ranged reads that stay within the file.
struct RangeReader<S> {
    source: Arc<S>,
    /// Where each column chunk lies and the fewest bytes one of its values takes, to check
    /// the pages of data reads; empty while the metadata is read.
    chunks: Arc<Vec<(Range<u64>, ValueWidth)>>,
}

impl<S: ByteSource> RangeReader<S> {
    /// Refuses a range past the end of the file, before anything is read or allocated for it:
    /// the ranges come from the file's own footer.
    fn check(&self, range: &Range<u64>) -> parquet::errors::Result<()> {
        let size = self.source.size();
        if range.start > range.end || range.end > size {
            return Err(ParquetError::General(format!(
                "its metadata points at bytes {}..{}, outside its {size} bytes",
                range.start, range.end
            )));
        }
        Ok(())
    }

    async fn read(&self, range: Range<u64>) -> parquet::errors::Result<Bytes> {
        let expected = range.end - range.start;
        let bytes = self
            .source
            .read(range.clone())
            .await
            .map_err(|e| ParquetError::External(Box::new(e)))?;
        if bytes.len() as u64 != expected {
            return Err(ParquetError::General(format!(
                "reading bytes {}..{} returned {} bytes: the file changed or is shorter than its size",
                range.start,
                range.end,
                bytes.len()
            )));
        }
        Ok(bytes)
    }
}

impl<S: ByteSource> AsyncFileReader for RangeReader<S> {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.check(&range)?;
            let bytes = self.read(range.clone()).await?;
            self.check_data(&range, &bytes)?;
            Ok(bytes)
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
            for range in &ranges {
                self.check(range)?;
            }
            let this = &*self;
            let read = ranges.iter().map(|range| this.read(range.clone()));
            let all = futures::future::try_join_all(read).await?;
            for (range, bytes) in ranges.iter().zip(&all) {
                self.check_data(range, bytes)?;
            }
            Ok(all)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move { self.load_metadata().await.map(Arc::new) }.boxed()
    }
}

impl<S: ByteSource> RangeReader<S> {
    /// Checks the pages of `bytes`, read at `range` for a column chunk's data.
    fn check_data(&self, range: &Range<u64>, bytes: &[u8]) -> parquet::errors::Result<()> {
        let Some((_, width)) = self.chunks.iter().find(|(c, _)| c.contains(&range.start)) else {
            return Ok(());
        };
        check_pages(bytes, *width).map_err(|e| {
            ParquetError::General(format!(
                "a page at bytes {}..{} {e}",
                range.start, range.end
            ))
        })
    }

    /// The file's metadata, with its offset index when it has a sound one: the footer is
    /// checked, then decoded; the offset index (where each page starts, which lets a read of
    /// a few rows fetch only their pages: the first rows of a GB file on S3 come in well
    /// under a second) is checked, and left out when it does not decode.
    async fn load_metadata(&self) -> parquet::errors::Result<ParquetMetaData> {
        let size = self.source.size();
        // One read of the end of the file usually holds the whole footer.
        let tail_start = size.saturating_sub(FOOTER_PREFETCH);
        let range = tail_start..size;
        self.check(&range)?;
        let tail = self.read(range).await?;
        let footer = tail
            .len()
            .checked_sub(FOOTER_TAIL as usize)
            .and_then(|at| tail.get(at..))
            .and_then(|b| <&[u8; FOOTER_TAIL as usize]>::try_from(b).ok())
            .ok_or_else(|| {
                ParquetError::General(format!("it has {size} bytes, too few for a footer"))
            })?;
        let length = FooterTail::try_new(footer)?.metadata_length() as u64;
        let start = (size - FOOTER_TAIL).checked_sub(length).ok_or_else(|| {
            ParquetError::General(format!(
                "its footer says its metadata has {length} bytes, more than the file"
            ))
        })?;
        let metadata = if start >= tail_start {
            let from = (start - tail_start) as usize;
            tail.slice(from..tail.len() - FOOTER_TAIL as usize)
        } else {
            let range = start..size - FOOTER_TAIL;
            self.check(&range)?;
            self.read(range).await?
        };
        thrift_fits(&metadata, footer_spec::FILE_META_DATA)
            .map_err(|e| ParquetError::General(format!("its metadata is malformed ({e})")))?;
        let metadata = ParquetMetaDataReader::decode_metadata(&metadata)?;
        let fetch = CheckedFetch {
            reader: self,
            metadata: &metadata,
        };
        let mut with_index = ParquetMetaDataReader::new_with_metadata(metadata.clone())
            .with_offset_index_policy(PageIndexPolicy::Optional)
            .with_column_index_policy(PageIndexPolicy::Skip);
        let indexed = match with_index.load_page_index(fetch).await {
            Ok(()) => with_index.finish(),
            Err(e) => Err(e),
        };
        // A page index that does not decode, or points outside its column chunks, only costs
        // speed: rows are then read by whole row groups.
        Ok(indexed
            .ok()
            .filter(|m| offset_index_fits(m, size))
            .unwrap_or(metadata))
    }
}

/// Whether the Arrow schema a file embeds (base64 of an IPC message, as the `ARROW:schema`
/// key holds it) has only types that arrow-ipc 58 decodes without panicking: known types,
/// with the widths, units and children its decoder expects. The checks mirror
/// `arrow_ipc::convert::get_data_type`; unions and run-end encoding, which Parquet cannot
/// hold, count as unsound. An embedded schema that does not even parse is left to the
/// parquet crate, which reports it.
pub fn arrow_schema_is_sound(encoded: &str) -> bool {
    use base64::Engine;
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
        return true;
    };
    let slice = match bytes.get(..4) {
        Some([255, 255, 255, 255]) if bytes.len() > 8 => &bytes[8..],
        _ => bytes.as_slice(),
    };
    let Ok(message) = arrow_ipc::root_as_message(slice) else {
        return true;
    };
    let Some(schema) = message.header_as_schema() else {
        return true;
    };
    let big_endian = schema.endianness() == arrow_ipc::Endianness::Big;
    schema
        .fields()
        .is_some_and(|fields| fields.iter().all(|f| ipc_field_is_sound(f, big_endian)))
}

fn ipc_field_is_sound(field: arrow_ipc::Field<'_>, big_endian: bool) -> bool {
    use arrow_ipc::{DateUnit, IntervalUnit, Precision, TimeUnit, Type};
    let int =
        |i: Option<arrow_ipc::Int<'_>>| i.is_some_and(|i| matches!(i.bitWidth(), 8 | 16 | 32 | 64));
    if let Some(dictionary) = field.dictionary()
        && !int(dictionary.indexType())
    {
        return false;
    }
    let units = [
        TimeUnit::SECOND,
        TimeUnit::MILLISECOND,
        TimeUnit::MICROSECOND,
        TimeUnit::NANOSECOND,
    ];
    let one_child = || field.children().is_some_and(|c| c.len() == 1);
    let children_sound = || {
        field
            .children()
            .is_none_or(|c| c.iter().all(|f| ipc_field_is_sound(f, big_endian)))
    };
    let own = match field.type_type() {
        Type::Null
        | Type::Bool
        | Type::Binary
        | Type::BinaryView
        | Type::LargeBinary
        | Type::Utf8
        | Type::Utf8View
        | Type::LargeUtf8
        | Type::Struct_ => true,
        Type::Int => int(field.type_as_int()),
        Type::FixedSizeBinary => field.type_as_fixed_size_binary().is_some(),
        Type::FloatingPoint => field.type_as_floating_point().is_some_and(|f| {
            matches!(
                f.precision(),
                Precision::HALF | Precision::SINGLE | Precision::DOUBLE
            )
        }),
        Type::Date => field
            .type_as_date()
            .is_some_and(|d| matches!(d.unit(), DateUnit::DAY | DateUnit::MILLISECOND)),
        Type::Time => field.type_as_time().is_some_and(|t| {
            matches!(
                (t.bitWidth(), t.unit()),
                (32, TimeUnit::SECOND | TimeUnit::MILLISECOND)
                    | (64, TimeUnit::MICROSECOND | TimeUnit::NANOSECOND)
            )
        }),
        Type::Timestamp => field
            .type_as_timestamp()
            .is_some_and(|t| units.contains(&t.unit())),
        Type::Duration => field
            .type_as_duration()
            .is_some_and(|d| units.contains(&d.unit())),
        Type::Interval => field.type_as_interval().is_some_and(|i| {
            matches!(
                i.unit(),
                IntervalUnit::YEAR_MONTH | IntervalUnit::DAY_TIME | IntervalUnit::MONTH_DAY_NANO
            )
        }),
        Type::List | Type::LargeList | Type::ListView | Type::LargeListView => one_child(),
        Type::FixedSizeList => one_child() && field.type_as_fixed_size_list().is_some(),
        Type::Map => one_child() && field.type_as_map().is_some(),
        Type::Decimal => {
            !big_endian
                && field.type_as_decimal().is_some_and(|d| {
                    u8::try_from(d.precision()).is_ok()
                        && i8::try_from(d.scale()).is_ok()
                        && matches!(d.bitWidth(), 32 | 64 | 128 | 256)
                })
        }
        _ => false,
    };
    own && children_sound()
}

/// Where a column chunk lies, as the parquet crate computes it (which asserts both are not
/// negative), if all of it is within the file's `size` bytes.
fn chunk_range(
    chunk: &parquet::file::metadata::ColumnChunkMetaData,
    size: u64,
) -> Option<Range<u64>> {
    let start = chunk
        .dictionary_page_offset()
        .unwrap_or_else(|| chunk.data_page_offset());
    let start = u64::try_from(start).ok()?;
    let end = start.checked_add(u64::try_from(chunk.compressed_size()).ok()?)?;
    (end <= size).then_some(start..end)
}

/// Whether every page of `metadata`'s offset index lies within its column chunk, in order,
/// with first rows from 0 and increasing within its row group: the parquet crate adds and
/// subtracts these unchecked.
fn offset_index_fits(metadata: &ParquetMetaData, size: u64) -> bool {
    let Some(index) = metadata.offset_index() else {
        return true;
    };
    index.len() == metadata.num_row_groups()
        && metadata
            .row_groups()
            .iter()
            .zip(index)
            .all(|(rg, columns)| {
                columns.len() == rg.num_columns()
                    && rg.columns().iter().zip(columns).all(|(chunk, pages)| {
                        let Some(range) = chunk_range(chunk, size) else {
                            return false;
                        };
                        let mut next_offset = range.start;
                        let mut next_row = 0i64;
                        pages.page_locations().iter().all(|page| {
                            let fits = u64::try_from(page.offset)
                                .ok()
                                .zip(u64::try_from(page.compressed_page_size).ok());
                            let Some((offset, len)) = fits else {
                                return false;
                            };
                            let ok = offset >= next_offset
                                && offset.checked_add(len).is_some_and(|end| end <= range.end)
                                && page.first_row_index >= next_row
                                && page.first_row_index < rg.num_rows().max(1)
                                && (next_row > 0 || page.first_row_index == 0);
                            next_offset = offset.saturating_add(len);
                            next_row = page.first_row_index.saturating_add(1);
                            ok
                        })
                    })
            })
}

/// Fetches of the page index: within the file, and each column chunk's offset index in the
/// fetched bytes checked ([`thrift_fits`]) before the parquet crate decodes it.
struct CheckedFetch<'a, S> {
    reader: &'a RangeReader<S>,
    metadata: &'a ParquetMetaData,
}

impl<S: ByteSource> MetadataFetch for CheckedFetch<'_, S> {
    fn fetch(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.reader.check(&range)?;
            let bytes = self.reader.read(range.clone()).await?;
            for chunk in self
                .metadata
                .row_groups()
                .iter()
                .flat_map(|rg| rg.columns())
            {
                let (Some(offset), Some(length)) =
                    (chunk.offset_index_offset(), chunk.offset_index_length())
                else {
                    continue;
                };
                let start = u64::try_from(offset)
                    .ok()
                    .and_then(|o| o.checked_sub(range.start));
                let slice = start
                    .and_then(|s| usize::try_from(s).ok())
                    .zip(usize::try_from(length).ok())
                    .and_then(|(s, l)| bytes.get(s..s.checked_add(l)?));
                if let Some(slice) = slice {
                    thrift_fits(slice, footer_spec::OFFSET_INDEX).map_err(|e| {
                        ParquetError::General(format!("its page index is malformed ({e})"))
                    })?;
                }
            }
            Ok(bytes)
        }
        .boxed()
    }
}

/// The thrift structures of a Parquet footer and page index, as parquet 58 decodes them: the
/// type each field is read as, whatever type its header declares. Fields not listed are
/// skipped by their declared type, as the parquet crate skips them.
mod footer_spec {
    /// How a value is read.
    #[derive(Clone, Copy)]
    pub enum Ty {
        /// i8.
        Byte,
        /// A zigzag varint (i16, i32, i64, enums).
        Varint,
        Double,
        Binary,
        /// A struct field's boolean: its value is in the field header.
        Bool,
        List(&'static Ty),
        Struct(&'static [(i16, Ty)]),
        /// One field, then the end; an unknown variant is skipped (`true`) or an error.
        Union(&'static [(i16, Ty)], bool),
        /// An empty struct of a union: one 0 byte.
        Empty,
    }
    use Ty::*;

    const DECIMAL: &[(i16, Ty)] = &[(1, Varint), (2, Varint)];
    const TIME_UNIT: Ty = Union(&[(1, Empty), (2, Empty), (3, Empty)], false);
    const TIME: &[(i16, Ty)] = &[(1, Bool), (2, TIME_UNIT)];
    const LOGICAL_TYPE: Ty = Union(
        &[
            (1, Empty),
            (2, Empty),
            (3, Empty),
            (4, Empty),
            (5, Struct(DECIMAL)),
            (6, Empty),
            (7, Struct(TIME)),
            (8, Struct(TIME)),
            (10, Struct(&[(1, Byte), (2, Bool)])),
            (11, Empty),
            (12, Empty),
            (13, Empty),
            (14, Empty),
            (15, Empty),
            (16, Struct(&[(1, Byte)])),
            (17, Struct(&[(1, Binary)])),
            (18, Struct(&[(1, Binary), (2, Varint)])),
        ],
        true,
    );
    const SCHEMA_ELEMENT: Ty = Struct(&[
        (1, Varint),
        (2, Varint),
        (3, Varint),
        (4, Binary),
        (5, Varint),
        (6, Varint),
        (7, Varint),
        (8, Varint),
        (9, Varint),
        (10, LOGICAL_TYPE),
    ]);
    const STATISTICS: Ty = Struct(&[
        (1, Binary),
        (2, Binary),
        (3, Varint),
        (4, Varint),
        (5, Binary),
        (6, Binary),
        (7, Bool),
        (8, Bool),
    ]);
    const PAGE_ENCODING_STATS: Ty = Struct(&[(1, Varint), (2, Varint), (3, Varint)]);
    const SIZE_STATISTICS: Ty = Struct(&[(1, Varint), (2, List(&Varint)), (3, List(&Varint))]);
    const BOUNDING_BOX: Ty = Struct(&[
        (1, Double),
        (2, Double),
        (3, Double),
        (4, Double),
        (5, Double),
        (6, Double),
        (7, Double),
        (8, Double),
    ]);
    const GEOSPATIAL_STATISTICS: Ty = Struct(&[(1, BOUNDING_BOX), (2, List(&Varint))]);
    /// Fields 3 (path_in_schema) and 8 (key_value_metadata) are skipped by the crate.
    const COLUMN_META_DATA: Ty = Struct(&[
        (1, Varint),
        (2, List(&Varint)),
        (4, Varint),
        (5, Varint),
        (6, Varint),
        (7, Varint),
        (9, Varint),
        (10, Varint),
        (11, Varint),
        (12, STATISTICS),
        (13, List(&PAGE_ENCODING_STATS)),
        (14, Varint),
        (15, Varint),
        (16, SIZE_STATISTICS),
        (17, GEOSPATIAL_STATISTICS),
    ]);
    /// Fields 8 and 9 (encryption) are skipped: the crate is built without it.
    const COLUMN_CHUNK: Ty = Struct(&[
        (1, Binary),
        (2, Varint),
        (3, COLUMN_META_DATA),
        (4, Varint),
        (5, Varint),
        (6, Varint),
        (7, Varint),
    ]);
    const SORTING_COLUMN: Ty = Struct(&[(1, Varint), (2, Bool), (3, Bool)]);
    const ROW_GROUP: Ty = Struct(&[
        (1, List(&COLUMN_CHUNK)),
        (2, Varint),
        (3, Varint),
        (4, List(&SORTING_COLUMN)),
        (5, Varint),
        (7, Varint),
    ]);
    const KEY_VALUE: Ty = Struct(&[(1, Binary), (2, Binary)]);
    const COLUMN_ORDER: Ty = Union(&[(1, Empty)], true);
    pub const FILE_META_DATA: Ty = Struct(&[
        (1, Varint),
        (2, List(&SCHEMA_ELEMENT)),
        (3, Varint),
        (4, List(&ROW_GROUP)),
        (5, List(&KEY_VALUE)),
        (6, Binary),
        (7, List(&COLUMN_ORDER)),
    ]);
    const PAGE_LOCATION: Ty = Struct(&[(1, Varint), (2, Varint), (3, Varint)]);
    pub const OFFSET_INDEX: Ty = Struct(&[(1, List(&PAGE_LOCATION)), (2, List(&Varint))]);
}

/// The largest uncompressed page read: no value a source sends is larger than 1 GiB
/// (PostgreSQL's largest field), and a page holds at least one.
pub const MAX_PAGE_BYTES: i64 = (1 << 30) + (1 << 20);

/// The fewest bits one value of a column takes in a PLAIN dictionary page.
#[derive(Debug, Clone, Copy)]
struct ValueWidth {
    bits: u64,
}

impl ValueWidth {
    fn of(column: &parquet::schema::types::ColumnDescriptor) -> Self {
        use parquet::basic::Type;
        let bytes = match column.physical_type() {
            Type::BOOLEAN => return ValueWidth { bits: 1 },
            Type::INT32 | Type::FLOAT | Type::BYTE_ARRAY => 4,
            Type::INT64 | Type::DOUBLE => 8,
            Type::INT96 => 12,
            Type::FIXED_LEN_BYTE_ARRAY => column.type_length().max(1) as u64,
        };
        ValueWidth { bits: bytes * 8 }
    }
}

/// Checks the page headers in `bytes`, whole pages of one column chunk, as the parquet crate
/// reads them: an uncompressed size of at most [`MAX_PAGE_BYTES`], and a dictionary page's
/// value count within what its uncompressed bytes hold at `width`. A page cut short by the
/// end of `bytes` ends the check: the crate refuses it.
fn check_pages(bytes: &[u8], width: ValueWidth) -> Result<(), String> {
    let mut walker = ThriftWalker { bytes, pos: 0 };
    while walker.remaining() > 0 {
        let Ok(head) = walker.page_head() else {
            return Ok(());
        };
        if !(0..=MAX_PAGE_BYTES).contains(&i64::from(head.uncompressed)) {
            return Err(format!(
                "declares {} uncompressed bytes (at most {MAX_PAGE_BYTES} are read)",
                head.uncompressed
            ));
        }
        if let Some(values) = head.dictionary_values {
            let holds = u64::try_from(head.uncompressed).unwrap_or(0) * 8 / width.bits;
            if u64::try_from(values).map_or(true, |v| v > holds) {
                return Err(format!(
                    "declares a dictionary of {values} values in {} bytes",
                    head.uncompressed
                ));
            }
        }
        match u64::try_from(head.compressed) {
            Ok(n) if walker.skip_bytes(n).is_ok() => {}
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// What [`check_pages`] reads of a page header.
struct PageHead {
    uncompressed: i32,
    compressed: i32,
    dictionary_values: Option<i32>,
}

/// How deep the parquet crate skips unknown fields.
const THRIFT_SKIP_DEPTH: u32 = 64;

/// Checks, as the parquet crate would read `bytes` as `ty` (compact protocol), that every
/// list it would size a vector by holds no more items than bytes remain after its header
/// (each item takes at least one). What the crate would refuse anyway may pass or fail here.
fn thrift_fits(bytes: &[u8], ty: footer_spec::Ty) -> Result<(), String> {
    ThriftWalker { bytes, pos: 0 }.read(ty)
}

/// A reader of thrift compact-protocol values that only checks them, in step with the
/// parquet crate's decoder.
struct ThriftWalker<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl ThriftWalker<'_> {
    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.bytes.get(self.pos).ok_or("cut short")?;
        self.pos += 1;
        Ok(b)
    }

    fn skip_bytes(&mut self, n: u64) -> Result<(), String> {
        match usize::try_from(n) {
            Ok(n) if n <= self.remaining() => {
                self.pos += n;
                Ok(())
            }
            _ => Err(format!(
                "{n} bytes announced where {} remain",
                self.remaining()
            )),
        }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        let mut shift = 0u32;
        loop {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f).wrapping_shl(shift);
            if b & 0x80 == 0 {
                return Ok(value);
            }
            shift = shift.saturating_add(7);
        }
    }

    fn zigzag(&mut self) -> Result<i64, String> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    /// A list header: its element type and size, the size checked against what remains.
    fn list_begin(&mut self) -> Result<(u8, usize), String> {
        let header = self.byte()?;
        if header == 0 {
            return Ok((3, 0));
        }
        let element = header & 0x0f;
        if !(1..=12).contains(&element) {
            return Err(format!("list of unknown type {element}"));
        }
        let size = match header >> 4 {
            15 => {
                let n = self.varint()?;
                i32::try_from(n).map_err(|_| format!("list of {n} items"))? as u64
            }
            n => u64::from(n),
        };
        match usize::try_from(size) {
            Ok(n) if n <= self.remaining() => Ok((element, n)),
            _ => Err(format!(
                "a list of {size} items where {} bytes remain",
                self.remaining()
            )),
        }
    }

    /// A field header after field `last`: `None` at the end of the struct.
    fn field_begin(&mut self, last: i16) -> Result<Option<(i16, u8)>, String> {
        let header = self.byte()?;
        let kind = header & 0x0f;
        if kind > 12 {
            return Err(format!("field of unknown type {kind}"));
        }
        if kind == 0 {
            return Ok(None);
        }
        let delta = header >> 4;
        let id = if delta != 0 {
            last.checked_add(i16::from(delta))
                .ok_or("field id overflow")?
        } else {
            self.zigzag()? as i16
        };
        Ok(Some((id, kind)))
    }

    /// A page header, read as the parquet crate reads one (statistics skipped).
    fn page_head(&mut self) -> Result<PageHead, String> {
        use footer_spec::Ty;
        let mut head = PageHead {
            uncompressed: 0,
            compressed: 0,
            dictionary_values: None,
        };
        let mut last = 0;
        while let Some((id, kind)) = self.field_begin(last)? {
            match id {
                1 | 4 => self.varint().map(drop)?,
                2 => head.uncompressed = self.zigzag()? as i32,
                3 => head.compressed = self.zigzag()? as i32,
                5 => self.read(Ty::Struct(&[
                    (1, Ty::Varint),
                    (2, Ty::Varint),
                    (3, Ty::Varint),
                    (4, Ty::Varint),
                ]))?,
                6 => self.read(Ty::Struct(&[]))?,
                7 => {
                    let mut last = 0;
                    while let Some((id, kind)) = self.field_begin(last)? {
                        match id {
                            1 => head.dictionary_values = Some(self.zigzag()? as i32),
                            2 => self.varint().map(drop)?,
                            3 if matches!(kind, 1 | 2) => {}
                            3 => return Err("a boolean field of another type".into()),
                            _ => self.skip(kind, THRIFT_SKIP_DEPTH)?,
                        }
                        last = id;
                    }
                }
                8 => self.read(Ty::Struct(&[
                    (1, Ty::Varint),
                    (2, Ty::Varint),
                    (3, Ty::Varint),
                    (4, Ty::Varint),
                    (5, Ty::Varint),
                    (6, Ty::Varint),
                    (7, Ty::Bool),
                ]))?,
                _ => self.skip(kind, THRIFT_SKIP_DEPTH)?,
            }
            last = id;
        }
        Ok(head)
    }

    fn read(&mut self, ty: footer_spec::Ty) -> Result<(), String> {
        use footer_spec::Ty;
        match ty {
            Ty::Byte => self.byte().map(drop),
            Ty::Varint => self.varint().map(drop),
            Ty::Double => self.skip_bytes(8),
            Ty::Binary => {
                let len = self.varint()?;
                self.skip_bytes(len)
            }
            // Only as a list element: one byte.
            Ty::Bool => match self.byte()? {
                0..=2 => Ok(()),
                b => Err(format!("boolean {b}")),
            },
            Ty::List(element) => {
                let (_, size) = self.list_begin()?;
                for _ in 0..size {
                    self.read(*element)?;
                }
                Ok(())
            }
            Ty::Struct(fields) => {
                let mut last = 0;
                while let Some((id, kind)) = self.field_begin(last)? {
                    match fields.iter().find(|(f, _)| *f == id).map(|(_, t)| *t) {
                        Some(Ty::Bool) if matches!(kind, 1 | 2) => {}
                        Some(Ty::Bool) => return Err("a boolean field of another type".into()),
                        Some(t) => self.read(t)?,
                        None => self.skip(kind, THRIFT_SKIP_DEPTH)?,
                    }
                    last = id;
                }
                Ok(())
            }
            Ty::Union(variants, skip_unknown) => {
                let (id, kind) = self.field_begin(0)?.ok_or("an empty union")?;
                match variants.iter().find(|(v, _)| *v == id).map(|(_, t)| *t) {
                    Some(t) => self.read(t)?,
                    None if skip_unknown => self.skip(kind, THRIFT_SKIP_DEPTH)?,
                    None => return Err(format!("unknown union variant {id}")),
                }
                match self.field_begin(id)? {
                    None => Ok(()),
                    Some(_) => Err("a union with two fields".into()),
                }
            }
            Ty::Empty => match self.byte()? {
                0 => Ok(()),
                _ => Err("an empty struct with fields".into()),
            },
        }
    }

    /// Skips a value of declared type `kind`, as the parquet crate does (booleans in a
    /// skipped list take no bytes there).
    fn skip(&mut self, kind: u8, depth: u32) -> Result<(), String> {
        if depth == 0 {
            return Err("nested too deep".into());
        }
        match kind {
            1 | 2 => Ok(()),
            3 => self.byte().map(drop),
            4..=6 => self.varint().map(drop),
            7 => self.skip_bytes(8),
            8 => {
                let len = self.varint()?;
                self.skip_bytes(len)
            }
            12 => {
                let mut last = 0;
                while let Some((id, kind)) = self.field_begin(last)? {
                    self.skip(kind, depth - 1)?;
                    last = id;
                }
                Ok(())
            }
            9 => {
                let (element, size) = self.list_begin()?;
                if matches!(element, 10 | 11) {
                    return Err("a set or map".into());
                }
                for _ in 0..size {
                    self.skip(element, depth - 1)?;
                }
                Ok(())
            }
            k => Err(format!("cannot skip type {k}")),
        }
    }
}

/// An open Parquet file: metadata read once, rows read page by page.
pub struct ParquetFile<S> {
    source: Arc<S>,
    metadata: Arc<ParquetMetaData>,
    schema: SchemaRef,
    /// The metadata with the Arrow schema and the options it was read with.
    arrow: ArrowReaderMetadata,
}

impl<S: ByteSource> ParquetFile<S> {
    /// Reads the footer of the file `source` holds.
    pub async fn from_source(source: S) -> Result<Self, InspectError<S::Error>> {
        let source = Arc::new(source);
        let reader = RangeReader {
            source: source.clone(),
            chunks: Arc::default(),
        };
        let load = async {
            let metadata = reader.load_metadata().await?;
            let embedded = metadata
                .file_metadata()
                .key_value_metadata()
                .and_then(|kv| kv.iter().find(|kv| kv.key == "ARROW:schema"))
                .and_then(|kv| kv.value.as_deref());
            let options = ArrowReaderOptions::new()
                .with_skip_arrow_metadata(embedded.is_some_and(|e| !arrow_schema_is_sound(e)));
            ArrowReaderMetadata::try_new(Arc::new(metadata), options)
        };
        let arrow = contain(source.as_ref(), load)
            .await?
            .map_err(|e| not_parquet(source.as_ref(), e))?;
        Ok(ParquetFile {
            source,
            metadata: arrow.metadata().clone(),
            schema: arrow.schema().clone(),
            arrow,
        })
    }

    pub fn source(&self) -> &S {
        &self.source
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn key(&self) -> &str {
        self.source.name()
    }

    pub fn size(&self) -> u64 {
        self.source.size()
    }

    pub fn num_rows(&self) -> i64 {
        self.metadata.file_metadata().num_rows()
    }

    pub fn summary(&self) -> Result<ParquetSummary, InspectError<S::Error>> {
        // Statistics are decoded by the parquet crate.
        std::panic::catch_unwind(AssertUnwindSafe(|| self.summary_uncontained()))
            .unwrap_or_else(|panic| Err(panicked(self.source.as_ref(), panic)))
    }

    fn summary_uncontained(&self) -> Result<ParquetSummary, InspectError<S::Error>> {
        let uri = self.source.uri();
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
            size: self.source.size(),
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
    ) -> Result<Vec<RecordBatch>, InspectError<S::Error>> {
        let end_row = offset.saturating_add(limit);
        let mut start = 0usize;
        let mut groups = Vec::new();
        let mut skip = 0usize;
        for (i, rg) in self.metadata.row_groups().iter().enumerate() {
            // Row counts come from the footer: summed without overflow, whatever they say.
            let end = start.saturating_add(usize::try_from(rg.num_rows()).unwrap_or(0));
            if end > offset && start < end_row {
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
        self.check_row_groups(&groups)?;
        let read = async {
            let stream = self
                .stream_builder()?
                .with_row_groups(groups)
                .with_offset(skip)
                .with_limit(limit)
                .with_batch_size(limit.clamp(1, 8192))
                .build()
                .map_err(|e| self.read_error(e))?;
            stream.try_collect().await.map_err(|e| self.read_error(e))
        };
        contain(self.source.as_ref(), read).await?
    }

    /// A reader of this file's rows, from the metadata already read.
    fn stream_builder(
        &self,
    ) -> Result<ParquetRecordBatchStreamBuilder<RangeReader<S>>, InspectError<S::Error>> {
        let size = self.source.size();
        let chunks = self
            .metadata
            .row_groups()
            .iter()
            .flat_map(|rg| rg.columns())
            .filter_map(|c| Some((chunk_range(c, size)?, ValueWidth::of(c.column_descr()))))
            .collect();
        let reader = RangeReader {
            source: self.source.clone(),
            chunks: Arc::new(chunks),
        };
        Ok(ParquetRecordBatchStreamBuilder::new_with_metadata(
            reader,
            self.arrow.clone(),
        ))
    }

    /// Refuses to read row groups that do not exist or whose column chunks lie outside the
    /// file, before the parquet crate computes their ranges (it asserts, then adds, unchecked).
    fn check_row_groups(&self, groups: &[usize]) -> Result<(), InspectError<S::Error>> {
        let size = self.source.size();
        for &g in groups {
            let Some(rg) = self.metadata.row_groups().get(g) else {
                return Err(self.read_error(format!("the file has no row group {g}")));
            };
            if rg.num_rows() < 0 {
                return Err(self.not_parquet(format!("row group {g} has {} rows", rg.num_rows())));
            }
            if let Some(c) = rg.columns().iter().find(|c| chunk_range(c, size).is_none()) {
                return Err(self.not_parquet(format!(
                    "column {} of row group {g} lies outside its {size} bytes",
                    c.column_path()
                )));
            }
        }
        Ok(())
    }

    fn not_parquet(&self, message: String) -> InspectError<S::Error> {
        InspectError::NotParquet {
            uri: self.source.uri(),
            message,
        }
    }

    fn read_error(&self, e: impl std::fmt::Display) -> InspectError<S::Error> {
        InspectError::Read {
            uri: self.source.uri(),
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
    ) -> Result<Vec<RecordBatch>, InspectError<S::Error>> {
        if row_groups.is_empty() {
            return Ok(Vec::new());
        }
        self.check_row_groups(&row_groups)?;
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
        let read = async {
            let stream = builder.build().map_err(|e| self.read_error(e))?;
            stream.try_collect().await.map_err(|e| self.read_error(e))
        };
        contain(self.source.as_ref(), read).await?
    }
}

/// Several Parquet files read as one table: a folder or a partition. The schema is the
/// union of the files' columns by name, in order of first appearance; a column whose type
/// differs between files is read as text. Rows are numbered across the files in key order.
pub struct ParquetDataset<S> {
    files: Vec<(String, Arc<ParquetFile<S>>)>,
    /// Row number at which each file starts.
    starts: Vec<usize>,
    schema: SchemaRef,
    /// Files that were not opened because there were too many.
    pub skipped_files: usize,
}

impl<S: ByteSource> ParquetDataset<S> {
    /// One file as a dataset (no I/O).
    pub fn single(file: Arc<ParquetFile<S>>) -> Self {
        Self::from_files(vec![(file.key().to_owned(), file)], 0)
    }

    /// Open files (with their keys) as one table; `skipped_files` were left out.
    pub fn from_files(files: Vec<(String, Arc<ParquetFile<S>>)>, skipped_files: usize) -> Self {
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
            rows = rows.saturating_add(usize::try_from(file.num_rows()).unwrap_or(0));
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

    pub fn files(&self) -> impl Iterator<Item = (&str, &ParquetFile<S>)> {
        self.files.iter().map(|(k, f)| (k.as_str(), f.as_ref()))
    }

    pub fn num_rows(&self) -> usize {
        self.starts.last().copied().unwrap_or(0).saturating_add(
            self.files
                .last()
                .map_or(0, |(_, f)| usize::try_from(f.num_rows()).unwrap_or(0)),
        )
    }

    /// Rows `[offset, offset + limit)` across files, in the merged schema.
    pub async fn read_rows(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<RecordBatch>, InspectError<S::Error>> {
        let mut out = Vec::new();
        let end = offset.saturating_add(limit);
        for ((_, file), &start) in self.files.iter().zip(&self.starts) {
            let rows = usize::try_from(file.num_rows()).unwrap_or(0);
            let file_end = start.saturating_add(rows);
            if file_end <= offset || start >= end {
                continue;
            }
            let from = offset.saturating_sub(start);
            let take = end.min(file_end).saturating_sub(start.saturating_add(from));
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
    ) -> Result<Vec<RecordBatch>, InspectError<S::Error>> {
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
            let matched = arrow_select::filter::filter_record_batch(&batch, &keep)
                .map_err(|e| f.read_error(e))?;
            if matched.num_rows() > 0 {
                out.push(self.conform(&matched)?);
            }
        }
        Ok(out)
    }

    /// A file's batch in the merged schema: missing columns null, differing types as text.
    fn conform(&self, batch: &RecordBatch) -> Result<RecordBatch, InspectError<S::Error>> {
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

/// Runs `work`, calls into the parquet crate on `source`'s bytes, turning a panic of the
/// crate into an error naming the file (see the module doc).
async fn contain<S: ByteSource, T>(
    source: &S,
    work: impl std::future::Future<Output = T>,
) -> Result<T, InspectError<S::Error>> {
    AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .map_err(|panic| panicked(source, panic))
}

/// The error for a panic of the parquet crate while it read `source`.
fn panicked<S: ByteSource>(
    source: &S,
    panic: Box<dyn std::any::Any + Send>,
) -> InspectError<S::Error> {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    InspectError::Read {
        uri: source.uri(),
        message: format!(
            "the Parquet decoder failed on this file ({message}): it is corrupt, or written in a way this reader does not support"
        ),
    }
}

/// A Parquet error while opening `source`: the source's own error when it failed, otherwise
/// the file is not readable Parquet.
fn not_parquet<S: ByteSource>(source: &S, e: ParquetError) -> InspectError<S::Error> {
    let message = match e {
        ParquetError::External(inner) => match inner.downcast::<S::Error>() {
            Ok(s) => return InspectError::Storage(*s),
            Err(other) => other.to_string(),
        },
        other => other.to_string(),
    };
    InspectError::NotParquet {
        uri: source.uri(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use arrow_array::{Int64Array, StringArray};

    /// A small file: `id` 0..n, `name` with a NULL every third row.
    fn parquet_bytes(n: i64) -> Bytes {
        parquet_bytes_with(n, None)
    }

    fn parquet_bytes_with(
        n: i64,
        properties: Option<parquet::file::properties::WriterProperties>,
    ) -> Bytes {
        let batch = RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef,
            ),
            (
                "name",
                Arc::new(StringArray::from_iter(
                    (0..n).map(|i| (i % 3 != 0).then(|| format!("n{i}"))),
                )) as ArrayRef,
            ),
        ])
        .expect("batch");
        let mut out = Vec::new();
        let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), properties)
            .expect("writer");
        writer.write(&batch).expect("write");
        writer.close().expect("close");
        Bytes::from(out)
    }

    /// Bytes in memory that fail the test if asked for a range outside them.
    struct Strict {
        bytes: Bytes,
    }

    impl ByteSource for Strict {
        type Error = std::convert::Infallible;
        fn name(&self) -> &str {
            "strict.parquet"
        }
        fn uri(&self) -> String {
            "mem://strict.parquet".into()
        }
        fn size(&self) -> u64 {
            self.bytes.len() as u64
        }
        fn read(&self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes, Self::Error>> {
            assert!(
                range.start <= range.end && range.end <= self.size(),
                "asked for {range:?} of {} bytes",
                self.size()
            );
            let slice = self.bytes.slice(range.start as usize..range.end as usize);
            futures::future::ready(Ok(slice)).boxed()
        }
    }

    fn strict(bytes: Bytes) -> Strict {
        Strict { bytes }
    }

    #[tokio::test]
    async fn a_file_reads_back_by_ranges() {
        let file = ParquetFile::from_source(strict(parquet_bytes(10)))
            .await
            .expect("opens");
        assert_eq!(file.num_rows(), 10);
        let summary = file.summary().expect("summary");
        assert_eq!(summary.row_groups.len(), 1);
        assert_eq!(summary.row_groups[0].columns[1].nulls, Some(4));
        let rows = file.read_rows(8, 5).await.expect("rows");
        let total: usize = rows.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(total, 2);
    }

    #[tokio::test]
    async fn a_footer_that_points_past_the_end_is_an_error_before_any_read() {
        // Without page indexes, whose ranges the footer reader checks itself.
        let properties = parquet::file::properties::WriterProperties::builder()
            .set_offset_index_disabled(true)
            .set_statistics_enabled(parquet::file::properties::EnabledStatistics::Chunk)
            .build();
        let good = parquet_bytes_with(1000, Some(properties));
        // The footer alone (metadata, its length, the magic), after the leading magic: every
        // column chunk it describes now lies past the end of the file.
        let len_at = good.len() - 8;
        let metadata_len =
            u32::from_le_bytes(good[len_at..len_at + 4].try_into().expect("4 bytes")) as usize;
        let footer_start = len_at - metadata_len;
        assert!(
            footer_start > 4 + metadata_len + 8,
            "the data is larger than the footer"
        );
        let mut cut = good[..4].to_vec();
        cut.extend_from_slice(&good[footer_start..]);
        // The strict source fails the test if any read goes past the end: the footer's
        // ranges are refused before they are read, when the page index or the rows are.
        let err = match ParquetFile::from_source(strict(Bytes::from(cut))).await {
            Err(e) => e,
            Ok(file) => file
                .read_rows(0, 200)
                .await
                .expect_err("chunks past the end"),
        };
        assert!(err.to_string().contains("outside its"), "{err}");

        // A footer length larger than the file.
        let mut long = good.to_vec();
        long[len_at..len_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = ParquetFile::from_source(strict(Bytes::from(long)))
            .await
            .err()
            .expect("refused");
        assert!(matches!(err, InspectError::NotParquet { .. }), "{err}");
    }

    #[test]
    fn thrift_counts_must_fit_in_the_bytes() {
        use footer_spec::{FILE_META_DATA, OFFSET_INDEX};
        // FileMetaData { 2: schema } whose list announces 2^31 - 1 elements.
        let huge = [0x29, 0xfc, 0xff, 0xff, 0xff, 0xff, 0x07, 0x00];
        assert!(thrift_fits(&huge, FILE_META_DATA).is_err());
        // The same field declared as an i32: the crate reads a list there all the same.
        let declared_i32 = [0x25, 0xfc, 0xff, 0xff, 0xff, 0xff, 0x07, 0x00];
        assert!(thrift_fits(&declared_i32, FILE_META_DATA).is_err());
        // Two schema elements { 4: name }, then the end.
        let two = [
            0x29, 0x2c, 0x48, 0x01, b'a', 0x00, 0x48, 0x01, b'b', 0x00, 0x00,
        ];
        assert_eq!(thrift_fits(&two, FILE_META_DATA), Ok(()));
        assert!(thrift_fits(&two[..8], FILE_META_DATA).is_err(), "cut short");
        // An unknown field skipped, holding a list too long for the bytes.
        let skipped = [0xf9, 0xf5, 0xff, 0xff, 0xff, 0x07, 0x00];
        assert!(thrift_fits(&skipped, FILE_META_DATA).is_err());
        // An offset index of one page location, and one announcing more than it holds.
        let index = [0x19, 0x1c, 0x16, 0x08, 0x15, 0x10, 0x16, 0x00, 0x00, 0x00];
        assert_eq!(thrift_fits(&index, OFFSET_INDEX), Ok(()));
        let index = [0x19, 0xfc, 0x80, 0x80, 0x04, 0x00];
        assert!(thrift_fits(&index, OFFSET_INDEX).is_err());
    }

    /// A dictionary page header of `values` values in 8 bytes, then the 8 bytes.
    fn dictionary_page(values: u64, uncompressed: u64) -> Vec<u8> {
        let varint = |mut v: u64, out: &mut Vec<u8>| loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        };
        let mut page = vec![0x15, 0x04, 0x15];
        varint(uncompressed * 2, &mut page);
        page.extend([0x15, 0x10, 0x4c, 0x15]);
        varint(values * 2, &mut page);
        page.extend([0x15, 0x00, 0x00, 0x00]);
        page.extend([0; 8]);
        page
    }

    #[test]
    fn pages_are_checked_before_they_are_decoded() {
        let int64 = ValueWidth { bits: 64 };
        assert_eq!(check_pages(&dictionary_page(1, 8), int64), Ok(()));
        // Found by fuzzing: the parquet crate zero-filled a dictionary of the header's count.
        assert!(check_pages(&dictionary_page(1_000_000_000, 8), int64).is_err());
        assert!(check_pages(&dictionary_page(2, 8), int64).is_err());
        assert_eq!(
            check_pages(&dictionary_page(64, 8), ValueWidth { bits: 1 }),
            Ok(())
        );
        // An uncompressed size past the cap.
        assert!(check_pages(&dictionary_page(1, 1 << 31), int64).is_err());
        // Two pages; a page cut short is left to the crate.
        let mut two = dictionary_page(1, 8);
        two.extend(dictionary_page(1, 8));
        assert_eq!(check_pages(&two, int64), Ok(()));
        assert_eq!(check_pages(&two[..two.len() - 3], int64), Ok(()));
    }

    #[tokio::test]
    async fn files_written_by_the_arrow_writer_pass_the_checks() {
        for rows in [1000, 1, 0] {
            let bytes = parquet_bytes(rows);
            let file = ParquetFile::from_source(strict(bytes))
                .await
                .expect("opens");
            assert_eq!(
                file.metadata().offset_index().is_some(),
                rows > 0,
                "the page index of the row group is kept"
            );
        }
    }

    #[tokio::test]
    async fn a_footer_whose_counts_do_not_fit_is_refused_before_it_is_decoded() {
        // Found by fuzzing: a schema list of ~2^24 elements in a 72-byte file (the parquet
        // crate allocated 2.4 GB for it).
        let file = b"]\x07\x07\x07\x07\x07\x9b\xff\x06\x01\x00\x07\xf9\xf8\xf8$\xf8\xf8\xec\xf9\x0b\x07PAR1\x0aPAR\x07\x07\x9b\x07\x01\x00\x07AR\x07\x07\x9b\x07\x01\x00\x07\xf9\xf9\xf8\x00\x00\x01\x00\x00\x00\x00\x00\x8c\x00\x00\x00PAR1\x00\x00\x00PAR1";
        let err = ParquetFile::from_source(strict(Bytes::from_static(file)))
            .await
            .err()
            .expect("refused");
        assert!(err.to_string().contains("metadata is malformed"), "{err}");
    }

    /// Files that made the parquet crate panic or allocate gigabytes before the checks here
    /// (fuzz/regressions/parquet_preview/): read as the preview reads them, they are errors.
    #[tokio::test]
    async fn files_found_by_fuzzing_are_errors_not_panics() {
        let files: [&[u8]; 5] = [
            // Page locations whose offset plus size overflowed.
            include_bytes!("../../fuzz/regressions/parquet_preview/page-offset-overflow"),
            // A schema list of about 2^24 elements in 72 bytes.
            include_bytes!("../../fuzz/regressions/parquet_preview/schema-list-2g"),
            // An embedded Arrow schema with a Time of bit width 0 (arrow-ipc panicked).
            include_bytes!("../../fuzz/regressions/parquet_preview/arrow-schema-time-unit"),
            // A data page in dictionary encoding without a dictionary page (the parquet crate
            // `expect`s one: contained, an error).
            include_bytes!("../../fuzz/regressions/parquet_preview/dictionary-page-missing"),
            // A dictionary page declaring about a billion values (7.5 GB zero-filled).
            include_bytes!("../../fuzz/regressions/parquet_preview/dictionary-of-a-billion-values"),
        ];
        for bytes in files {
            let source = MemorySource {
                uri: "mem://regression".into(),
                bytes: Bytes::from_static(bytes),
            };
            if let Ok(file) = ParquetFile::from_source(source).await {
                let _ = file.summary();
                let _ = file.read_rows(0, 200).await;
            }
        }
    }

    #[tokio::test]
    async fn the_embedded_arrow_schema_is_kept_when_sound() {
        let at = arrow_array::TimestampMicrosecondArray::from(vec![0, 1]).with_timezone("UTC");
        let batch = RecordBatch::try_from_iter([("at", Arc::new(at) as ArrayRef)]).expect("batch");
        let mut out = Vec::new();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).expect("writer");
        writer.write(&batch).expect("write");
        let metadata = writer.close().expect("close");
        let encoded = metadata
            .file_metadata()
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|kv| kv.key == "ARROW:schema"))
            .and_then(|kv| kv.value.clone())
            .expect("an embedded schema");
        assert!(arrow_schema_is_sound(&encoded));
        let file = ParquetFile::from_source(strict(Bytes::from(out)))
            .await
            .expect("opens");
        assert_eq!(
            file.schema().field(0).data_type(),
            &DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, Some("UTC".into())),
            "the time zone's name comes from the embedded schema"
        );
        // What does not parse is left to the parquet crate, which reports it.
        assert!(arrow_schema_is_sound("/////w=="));
    }

    /// A source that returns fewer bytes than asked (an object that shrank).
    struct Short(Bytes);

    impl ByteSource for Short {
        type Error = std::convert::Infallible;
        fn name(&self) -> &str {
            "short"
        }
        fn uri(&self) -> String {
            "mem://short".into()
        }
        fn size(&self) -> u64 {
            self.0.len() as u64
        }
        fn read(&self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes, Self::Error>> {
            let end = (range.end as usize).min(self.0.len()).saturating_sub(1);
            let start = (range.start as usize).min(end);
            futures::future::ready(Ok(self.0.slice(start..end))).boxed()
        }
    }

    #[tokio::test]
    async fn a_short_read_is_an_error() {
        let err = ParquetFile::from_source(Short(parquet_bytes(5)))
            .await
            .err()
            .expect("refused");
        assert!(err.to_string().contains("returned"), "{err}");
    }

    #[tokio::test]
    async fn row_counts_from_the_footer_do_not_overflow() {
        let file = Arc::new(
            ParquetFile::from_source(MemorySource {
                uri: "m".into(),
                bytes: parquet_bytes(3),
            })
            .await
            .expect("opens"),
        );
        let dataset =
            ParquetDataset::from_files(vec![("a".into(), file.clone()), ("b".into(), file)], 0);
        assert_eq!(dataset.num_rows(), 6);
        let rows = dataset
            .read_rows(usize::MAX - 1, usize::MAX)
            .await
            .expect("none");
        assert!(rows.is_empty());
        let rows = dataset.read_rows(2, usize::MAX).await.expect("rows");
        assert_eq!(rows.iter().map(RecordBatch::num_rows).sum::<usize>(), 4);
    }
}
