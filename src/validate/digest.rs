//! Row digests, and two sides' digests compared by key in bounded memory.
//!
//! A row's digest is its key (in Arrow's row format, which orders and compares like the
//! values) and a 64-bit hash of the whole row in that format, where every value carries
//! its own null marker and length: two rows of one key differ exactly when their encodings
//! do, and then their hashes differ but with a chance of 2^-64.
//!
//! Invariants:
//! - each side's digests are spooled to temporary files, partitioned by a hash of the key
//!   into [`Spool::parts`] parts of about [`PART_ROWS`] rows, so a comparison holds one
//!   part of one side in memory, never a table;
//! - both sides are cast to the same Arrow types ([`Digester::schema`]) before they are
//!   encoded, so a value reads equal whatever type its reader produced it in;
//! - a key found twice on one side counts once more as "extra" (the lake) or "missing"
//!   (the source): each side must hold a key once.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};

use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_row::{RowConverter, SortField};
use arrow_schema::{ArrowError, SchemaRef};

/// Rows per spool part: what a comparison holds in memory at once (about 60 bytes each
/// for a small key).
pub const PART_ROWS: u64 = 1_000_000;

/// The most parts a spool has: a table of more than `MAX_PARTS * PART_ROWS` rows holds
/// larger parts in memory (open files stay few: three spools at most are open).
pub const MAX_PARTS: u64 = 256;

/// How many samples of each kind of difference a report names.
pub const SAMPLES: usize = 5;

/// Errors digesting or comparing rows.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error(
        "column '{column}': {source}. The source and the lake disagree on its type; reload the table"
    )]
    Cast {
        column: String,
        #[source]
        source: ArrowError,
    },
    #[error(
        "column '{column}' is not in the rows read. The table changed shape meanwhile; validate again"
    )]
    MissingColumn { column: String },
    #[error("encoding rows to compare: {0}. This column type cannot be compared; report it")]
    Encode(#[source] ArrowError),
    #[error(
        "a temporary spool file: {0}. Free space in the temporary folder (TMPDIR), or raise the open-files limit (ulimit -n), then validate again"
    )]
    Spool(#[source] std::io::Error),
}

/// A row found by key: its key (the row format's bytes) and its values as text.
pub type FoundRow = (Vec<u8>, Vec<String>);

/// Encodes rows of one table's columns, whichever side they come from.
pub struct Digester {
    schema: SchemaRef,
    key: Vec<usize>,
    keys: RowConverter,
    rows: RowConverter,
}

/// Fixed seeds: both sides of a comparison hash alike (in one process, and in two).
fn row_hasher() -> ahash::RandomState {
    ahash::RandomState::with_seeds(0x7472_6962, 0x7574_6172, 0x7920_7661, 0x6c69_6461)
}

fn part_hasher() -> ahash::RandomState {
    ahash::RandomState::with_seeds(0x7061_7274, 0x6974_696f, 0x6e73_2121, 0x0000_0001)
}

impl Digester {
    /// A digester of rows with `schema`'s columns (in its types), keyed by `key`.
    pub fn new(schema: SchemaRef, key: &[String]) -> Result<Digester, DigestError> {
        let index = |name: &String| {
            schema
                .index_of(name)
                .map_err(|_| DigestError::MissingColumn {
                    column: name.clone(),
                })
        };
        let key: Vec<usize> = key.iter().map(index).collect::<Result<_, _>>()?;
        let field = |i: usize| SortField::new(schema.field(i).data_type().clone());
        let keys = RowConverter::new(key.iter().map(|i| field(*i)).collect())
            .map_err(DigestError::Encode)?;
        let rows = RowConverter::new((0..schema.fields().len()).map(field).collect())
            .map_err(DigestError::Encode)?;
        Ok(Digester {
            schema,
            key,
            keys,
            rows,
        })
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The key's columns, as indexes into [`Self::schema`].
    pub fn key_columns(&self) -> &[usize] {
        &self.key
    }

    /// `batch`'s columns of the digester's schema, found by name and cast to its types.
    fn columns(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>, DigestError> {
        self.schema
            .fields()
            .iter()
            .map(|field| {
                let column = batch.column_by_name(field.name()).ok_or_else(|| {
                    DigestError::MissingColumn {
                        column: field.name().clone(),
                    }
                })?;
                if column.data_type() == field.data_type() {
                    return Ok(column.clone());
                }
                // Not "safe": a value the lake's type cannot hold is an error, not a NULL
                // that could match the lake's.
                let options = arrow_cast::CastOptions {
                    safe: false,
                    ..Default::default()
                };
                arrow_cast::cast_with_options(column, field.data_type(), &options).map_err(
                    |source| DigestError::Cast {
                        column: field.name().clone(),
                        source,
                    },
                )
            })
            .collect()
    }

    /// `batch`'s columns (cast) and its keys in the row format.
    fn columns_and_keys(
        &self,
        batch: &RecordBatch,
    ) -> Result<(Vec<ArrayRef>, arrow_row::Rows), DigestError> {
        let columns = self.columns(batch)?;
        let key_columns: Vec<ArrayRef> = self.key.iter().map(|i| columns[*i].clone()).collect();
        let keys = self
            .keys
            .convert_columns(&key_columns)
            .map_err(DigestError::Encode)?;
        Ok((columns, keys))
    }

    /// Adds `batch`'s rows to `spool`.
    pub fn digest(&self, batch: &RecordBatch, spool: &mut Spool) -> Result<(), DigestError> {
        let (columns, keys) = self.columns_and_keys(batch)?;
        let rows = self
            .rows
            .convert_columns(&columns)
            .map_err(DigestError::Encode)?;
        let hasher = row_hasher();
        for (key, row) in keys.iter().zip(rows.iter()) {
            spool.push(key.as_ref(), hasher.hash_one(row.as_ref()))?;
        }
        Ok(())
    }

    /// The rows of `batch` whose key is in `wanted`, each as its key and its values as text.
    pub fn find(
        &self,
        batch: &RecordBatch,
        wanted: &HashSet<Vec<u8>>,
    ) -> Result<Vec<FoundRow>, DigestError> {
        let (columns, keys) = self.columns_and_keys(batch)?;
        let options = FormatOptions::default().with_null("NULL");
        let formatters: Vec<ArrayFormatter> = columns
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<_, _>>()
            .map_err(DigestError::Encode)?;
        Ok(keys
            .iter()
            .enumerate()
            .filter(|(_, k)| wanted.contains(k.as_ref()))
            .map(|(i, k)| {
                let values = formatters.iter().map(|f| f.value(i).to_string()).collect();
                (k.as_ref().to_vec(), values)
            })
            .collect())
    }

    /// A key for people: `id=7`, or `(a=1, b=x)` for a key of several columns.
    pub fn describe_key(&self, key: &[u8]) -> String {
        let parser = self.keys.parser();
        let values = self
            .keys
            .convert_rows([parser.parse(key)])
            .ok()
            .map(|arrays| {
                let options = FormatOptions::default().with_null("NULL");
                arrays
                    .iter()
                    .map(|a| {
                        ArrayFormatter::try_new(a.as_ref(), &options)
                            .map(|f| f.value(0).to_string())
                            .unwrap_or_else(|_| "?".into())
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let pairs: Vec<String> = self
            .key
            .iter()
            .zip(values)
            .map(|(i, v)| format!("{}={v}", self.schema.field(*i).name()))
            .collect();
        match pairs.as_slice() {
            [one] => one.clone(),
            _ => format!("({})", pairs.join(", ")),
        }
    }
}

/// One side's digests, in temporary files partitioned by key.
pub struct Spool {
    parts: Vec<BufWriter<File>>,
    rows: u64,
}

impl Spool {
    /// A spool for about `rows` rows.
    pub fn new(rows: u64) -> Result<Spool, DigestError> {
        let count = rows.div_ceil(PART_ROWS).clamp(1, MAX_PARTS) as usize;
        let parts = (0..count)
            .map(|_| tempfile::tempfile().map(|f| BufWriter::with_capacity(1 << 16, f)))
            .collect::<Result<_, _>>()
            .map_err(DigestError::Spool)?;
        Ok(Spool { parts, rows: 0 })
    }

    fn push(&mut self, key: &[u8], hash: u64) -> Result<(), DigestError> {
        let part = (part_hasher().hash_one(key) % self.parts.len() as u64) as usize;
        let out = &mut self.parts[part];
        let length = u32::try_from(key.len()).unwrap_or(u32::MAX);
        out.write_all(&length.to_le_bytes())
            .and_then(|()| out.write_all(key))
            .and_then(|()| out.write_all(&hash.to_le_bytes()))
            .map_err(DigestError::Spool)?;
        self.rows += 1;
        Ok(())
    }

    /// Ends writing: the parts are read from their start, as often as needed.
    pub fn finish(self) -> Result<Finished, DigestError> {
        let parts = self
            .parts
            .into_iter()
            .map(|p| p.into_inner().map_err(|e| e.into_error()))
            .collect::<Result<_, _>>()
            .map_err(DigestError::Spool)?;
        Ok(Finished {
            parts,
            rows: self.rows,
        })
    }
}

/// A spool written whole.
pub struct Finished {
    parts: Vec<File>,
    pub rows: u64,
}

impl Finished {
    /// Part `i`'s bytes, read whole from its start (one part is what memory holds).
    fn part(&self, i: usize) -> Result<Vec<u8>, DigestError> {
        let mut file = &self.parts[i];
        file.seek(SeekFrom::Start(0)).map_err(DigestError::Spool)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(DigestError::Spool)?;
        Ok(bytes)
    }
}

/// The digests in a part's bytes: each key (a slice of them) and its row's hash.
fn records(mut bytes: &[u8]) -> impl Iterator<Item = Result<(&[u8], u64), DigestError>> {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let record = (|| {
            let (length, rest) = bytes.split_first_chunk::<4>()?;
            let length = u32::from_le_bytes(*length) as usize;
            let (key, rest) = rest.split_at_checked(length)?;
            let (hash, rest) = rest.split_first_chunk::<8>()?;
            bytes = rest;
            Some((key, u64::from_le_bytes(*hash)))
        })();
        Some(record.ok_or_else(|| {
            bytes = &[];
            DigestError::Spool(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "a spool file ends inside a record",
            ))
        }))
    })
}

/// How two sides differ.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Differences {
    /// Keys on both sides.
    pub matched: u64,
    /// Keys in the source and not in the lake.
    pub missing: u64,
    /// Keys in the lake and not in the source.
    pub extra: u64,
    /// Keys on both sides whose rows differ.
    pub different: u64,
    /// The first few keys of each kind (the row format's bytes).
    pub missing_keys: Vec<Vec<u8>>,
    pub extra_keys: Vec<Vec<u8>>,
    pub different_keys: Vec<Vec<u8>>,
}

impl Differences {
    pub fn equal(&self) -> bool {
        self.missing == 0 && self.extra == 0 && self.different == 0
    }
}

/// Keeps the [`SAMPLES`] smallest keys (the row format orders as the values do).
fn sample(keys: &mut Vec<Vec<u8>>, key: &[u8]) {
    if keys.len() == SAMPLES && keys.last().is_some_and(|last| last.as_slice() <= key) {
        return;
    }
    let at = keys.partition_point(|k| k.as_slice() < key);
    keys.insert(at, key.to_vec());
    keys.truncate(SAMPLES);
}

/// Compares the source's digests with the lake's, part by part (both spooled with the
/// same number of parts, so a key is in the same part on both sides), the parts spread
/// over the machine's cores (memory holds one part per core).
pub fn compare(source: &Finished, lake: &Finished) -> Result<Differences, DigestError> {
    debug_assert_eq!(source.parts.len(), lake.parts.len(), "spooled alike");
    let parts = source.parts.len().min(lake.parts.len());
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, parts.max(1));
    let results: Vec<Result<Differences, DigestError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut d = Differences::default();
                    for i in (t..parts).step_by(threads) {
                        compare_part(source, lake, i, &mut d)?;
                    }
                    Ok(d)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join().unwrap_or_else(|_| {
                    Err(DigestError::Spool(std::io::Error::other(
                        "a comparison thread panicked",
                    )))
                })
            })
            .collect()
    });
    let mut total = Differences::default();
    for d in results {
        let d = d?;
        total.matched += d.matched;
        total.missing += d.missing;
        total.extra += d.extra;
        total.different += d.different;
        for (keys, more) in [
            (&mut total.missing_keys, d.missing_keys),
            (&mut total.extra_keys, d.extra_keys),
            (&mut total.different_keys, d.different_keys),
        ] {
            for key in more {
                sample(keys, &key);
            }
        }
    }
    Ok(total)
}

/// Adds part `i`'s differences to `d`.
fn compare_part(
    source: &Finished,
    lake: &Finished,
    i: usize,
    d: &mut Differences,
) -> Result<(), DigestError> {
    // Not the partitioning hasher: every key of a part shares its value modulo the
    // part count, which would crowd the map's buckets. The keys are slices of the
    // part's bytes: no allocation per row.
    let source_part = source.part(i)?;
    let mut rows: HashMap<&[u8], u64, ahash::RandomState> = HashMap::with_hasher(row_hasher());
    for record in records(&source_part) {
        let (key, hash) = record?;
        if rows.insert(key, hash).is_some() {
            // A key read twice from the source: one of them has no match.
            d.missing += 1;
            sample(&mut d.missing_keys, key);
        }
    }
    let lake_part = lake.part(i)?;
    for record in records(&lake_part) {
        let (key, hash) = record?;
        match rows.remove(key) {
            None => {
                d.extra += 1;
                sample(&mut d.extra_keys, key);
            }
            Some(h) => {
                d.matched += 1;
                if h != hash {
                    d.different += 1;
                    sample(&mut d.different_keys, key);
                }
            }
        }
    }
    d.missing += rows.len() as u64;
    for key in rows.keys() {
        sample(&mut d.missing_keys, key);
    }
    Ok(())
}

/// The columns whose values differ between a key's two rows, as `column: source → lake`.
pub fn differing_columns(schema: &SchemaRef, source: &[String], lake: &[String]) -> Vec<String> {
    schema
        .fields()
        .iter()
        .zip(source.iter().zip(lake))
        .filter(|(_, (s, l))| s != l)
        .map(|(f, (s, l))| format!("{}: {s} → {l}", f.name()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Int32Array, Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Utf8, true),
        ]))
    }

    fn batch(ids: &[i64], a: &[Option<&str>], b: &[Option<&str>]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(a.to_vec())),
                Arc::new(StringArray::from(b.to_vec())),
            ],
        )
        .unwrap()
    }

    fn spooled(d: &Digester, batches: &[RecordBatch], rows: u64) -> Finished {
        let mut spool = Spool::new(rows).unwrap();
        for b in batches {
            d.digest(b, &mut spool).unwrap();
        }
        spool.finish().unwrap()
    }

    #[test]
    fn equal_sides_are_equal_in_any_order_and_part_count() {
        let d = Digester::new(schema(), &["id".into()]).unwrap();
        let source = batch(
            &[1, 2, 3],
            &[Some("x"), None, Some("z")],
            &[None, None, None],
        );
        let lake = batch(
            &[3, 1, 2],
            &[Some("z"), Some("x"), None],
            &[None, None, None],
        );
        for rows in [1, 3 * PART_ROWS] {
            let diff = compare(
                &spooled(&d, std::slice::from_ref(&source), rows),
                &spooled(&d, std::slice::from_ref(&lake), rows),
            )
            .unwrap();
            assert!(diff.equal(), "{diff:?}");
            assert_eq!(diff.matched, 3);
        }
    }

    #[test]
    fn a_null_moved_to_another_column_is_a_difference() {
        // Hashing values one by one and skipping NULLs would take these for equal.
        let d = Digester::new(schema(), &["id".into()]).unwrap();
        let source = spooled(&d, &[batch(&[1], &[None], &[Some("v")])], 1);
        let lake = spooled(&d, &[batch(&[1], &[Some("v")], &[None])], 1);
        let diff = compare(&source, &lake).unwrap();
        assert_eq!(diff.different, 1);
        assert_eq!(d.describe_key(&diff.different_keys[0]), "id=1");
    }

    #[test]
    fn missing_extra_and_different_keys_are_counted_and_named() {
        let d = Digester::new(schema(), &["id".into()]).unwrap();
        let source = spooled(
            &d,
            &[batch(
                &[1, 2, 3, 4],
                &[Some("a"), Some("b"), Some("c"), Some("d")],
                &[None; 4],
            )],
            4,
        );
        let lake = spooled(
            &d,
            &[batch(
                &[1, 3, 4, 9],
                &[Some("a"), Some("C"), Some("d"), Some("e")],
                &[None; 4],
            )],
            4,
        );
        let diff = compare(&source, &lake).unwrap();
        assert_eq!(
            (diff.matched, diff.missing, diff.extra, diff.different),
            (3, 1, 1, 1)
        );
        let names =
            |keys: &[Vec<u8>]| -> Vec<String> { keys.iter().map(|k| d.describe_key(k)).collect() };
        assert_eq!(names(&diff.missing_keys), ["id=2"]);
        assert_eq!(names(&diff.extra_keys), ["id=9"]);
        assert_eq!(names(&diff.different_keys), ["id=3"]);
    }

    #[test]
    fn a_side_read_in_other_types_is_cast_before_it_is_compared() {
        let d = Digester::new(schema(), &["id".into()]).unwrap();
        let narrow = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("b", DataType::Utf8, true),
                Field::new("id", DataType::Int32, true),
                Field::new("a", DataType::Utf8, true),
                Field::new("dropped", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(StringArray::from(vec![Some("q")])),
                Arc::new(Int32Array::from(vec![5])),
                Arc::new(StringArray::from(vec![Some("p")])),
                Arc::new(StringArray::from(vec![Some("gone")])),
            ],
        )
        .unwrap();
        let wide = batch(&[5], &[Some("p")], &[Some("q")]);
        let diff = compare(
            &spooled(&d, std::slice::from_ref(&narrow), 1),
            &spooled(&d, &[wide], 1),
        )
        .unwrap();
        assert!(diff.equal(), "{diff:?}");
        let wanted = HashSet::from([diff_key(&d, 5)]);
        let found = d.find(&narrow, &wanted).unwrap();
        assert_eq!(found[0].1, ["5", "p", "q"]);
        assert_eq!(
            differing_columns(
                d.schema(),
                &found[0].1,
                &["5".into(), "p".into(), "r".into()]
            ),
            ["b: q → r"]
        );
    }

    fn diff_key(d: &Digester, id: i64) -> Vec<u8> {
        let keys = d
            .keys
            .convert_columns(&[Arc::new(Int64Array::from(vec![id])) as ArrayRef])
            .unwrap();
        keys.row(0).as_ref().to_vec()
    }

    #[test]
    fn the_samples_are_the_smallest_keys() {
        let d = Digester::new(schema(), &["id".into()]).unwrap();
        let ids: Vec<i64> = (0..100).rev().collect();
        let source = spooled(&d, &[batch(&ids, &[Some("a"); 100], &[None; 100])], 100);
        let lake = spooled(&d, &[batch(&[], &[], &[])], 1);
        let diff = compare(&source, &lake).unwrap();
        assert_eq!(diff.missing, 100);
        let names: Vec<String> = diff
            .missing_keys
            .iter()
            .map(|k| d.describe_key(k))
            .collect();
        assert_eq!(names, ["id=0", "id=1", "id=2", "id=3", "id=4"]);
    }

    #[test]
    fn a_spool_cut_inside_a_record_is_an_error() {
        let mut bytes = 3u32.to_le_bytes().to_vec();
        bytes.extend(b"abc");
        bytes.extend(7u64.to_le_bytes());
        let read: Vec<_> = records(&bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(read, [(&b"abc"[..], 7)]);
        bytes.extend(9u32.to_le_bytes());
        bytes.extend(b"ab");
        let read: Vec<_> = records(&bytes).collect();
        assert!(read[1].is_err() && read.len() == 2, "{read:?}");
    }

    #[test]
    fn a_missing_column_is_named() {
        let d = Digester::new(schema(), &["id".into()]).unwrap();
        let thin = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)])),
            vec![Arc::new(Int64Array::from(vec![1]))],
        )
        .unwrap();
        let mut spool = Spool::new(1).unwrap();
        let e = d.digest(&thin, &mut spool).unwrap_err();
        assert!(e.to_string().contains("'a'"), "{e}");
    }
}
