//! The Iceberg side of curation: a curated table's schema from the raw zone's Arrow schema,
//! its data files rolled at the target size, and the snapshots that replace them.
//!
//! Curated tables are copy-on-write: a snapshot holds the whole current state in plain
//! Parquet data files, with no delete files, so every Iceberg reader (pyiceberg, DuckDB,
//! Spark, Trino, Athena) reads them alike. Invariants:
//! - a snapshot's summary carries what it applied (`tributary.*` properties): that and
//!   the data files are committed together, by one compare-and-swap in the catalog;
//! - files are removed only after the commit that stops referencing them, and only if no
//!   snapshot still kept references them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, new_null_array};
use arrow_schema::{DataType, Field, FieldRef, Fields, Schema as ArrowSchema};
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::StreamExt;
use iceberg::arrow::{arrow_schema_to_schema, schema_to_arrow_schema};
use iceberg::io::FileIO;
use iceberg::spec::{
    DataFile, DataFileFormat, ManifestList, ManifestListWriter, ManifestWriterBuilder, Operation,
    Schema, Snapshot, SnapshotReference, SnapshotRetention, Summary, TableMetadata,
};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use parquet::arrow::PARQUET_FIELD_ID_META_KEY;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::CurateError;
use crate::catalog::iceberg::{IcebergCatalog, IcebergTable};
use crate::lake::Storage;

/// The Iceberg schema of Arrow `schema`, field ids from `first_id` on.
pub fn schema_from_arrow(schema: &ArrowSchema, first_id: i32) -> iceberg::Result<Schema> {
    evolve(None, schema.into(), first_id)
}

/// A table's next columns, each with its name in the current schema
/// ([`super::plan::names_in_current`]; `None`: a column created since, which gets a new
/// field id whatever the current schema holds under its name). Without names, each column
/// is the current schema's column of its own name.
#[derive(Clone, Copy)]
pub struct NextColumns<'a> {
    pub schema: &'a ArrowSchema,
    pub current_names: &'a [Option<String>],
}

impl<'a> From<&'a ArrowSchema> for NextColumns<'a> {
    fn from(schema: &'a ArrowSchema) -> Self {
        NextColumns {
            schema,
            current_names: &[],
        }
    }
}

impl NextColumns<'_> {
    /// The name column `index` has in the current schema, if it is one of its columns.
    fn current_name(&self, index: usize) -> Option<&str> {
        match self.current_names.get(index) {
            Some(name) => name.as_deref(),
            None => Some(self.schema.field(index).name()),
        }
    }
}

/// The Iceberg schema of the `next` columns as the next schema of a table whose current one
/// is `current`: a column with the same name, or renamed from a column of the current
/// schema, keeps its field id (readers match columns by id across schemas) when its type
/// is the same or one Iceberg promotes it to in place ([`promotable`]: int to long, float
/// to double, a decimal's precision up); any other gets new ids from `first_id` on (ids
/// are never reused, so that is after the table's `last_column_id`).
pub fn evolve(
    current: Option<&Schema>,
    next_columns: NextColumns<'_>,
    first_id: i32,
) -> iceberg::Result<Schema> {
    let current = current.map(schema_to_arrow_schema).transpose()?;
    let mut next = first_id;
    let mut fields = Vec::new();
    for (index, field) in next_columns.schema.fields().iter().enumerate() {
        let new_type = file_type(field);
        let kept = current
            .as_ref()
            .zip(next_columns.current_name(index))
            .and_then(|(c, name)| c.field_with_name(name).ok())
            .filter(|old| {
                let old_type = strip_ids(&ArrowSchema::new(vec![(*old).clone()]))
                    .field(0)
                    .data_type()
                    .clone();
                old_type == new_type || promotable(&old_type, &new_type)
            });
        fields.push(match kept {
            Some(old) => Arc::new(old.as_ref().clone().with_name(field.name()).with_data_type(
                match old.data_type() {
                    // Nested types keep their children's ids as they are.
                    DataType::List(_) | DataType::LargeList(_) | DataType::Struct(_) => {
                        old.data_type().clone()
                    }
                    _ => new_type,
                },
            )),
            None => with_field_ids(field, &mut next),
        });
    }
    arrow_schema_to_schema(&ArrowSchema::new(fields))
}

/// Whether Iceberg promotes a column of type `old` to `new` in place (its spec's allowed
/// type promotions): its files keep the old type and readers widen the values.
pub fn promotable(old: &DataType, new: &DataType) -> bool {
    match (old, new) {
        (DataType::Int32, DataType::Int64) | (DataType::Float32, DataType::Float64) => true,
        (DataType::Decimal128(p1, s1), DataType::Decimal128(p2, s2)) => s1 == s2 && p2 >= p1,
        _ => false,
    }
}

/// The type a column of `field`'s type has in the data files (Int16 is written as Int32).
fn file_type(field: &FieldRef) -> DataType {
    let mut next = 1;
    let single = ArrowSchema::new(vec![with_field_ids(field, &mut next)]);
    arrow_schema_to_schema(&single)
        .and_then(|s| arrow_schema(&s))
        .map(|s| s.field(0).data_type().clone())
        .unwrap_or_else(|_| field.data_type().clone())
}

fn with_field_ids(field: &FieldRef, next: &mut i32) -> FieldRef {
    let id = *next;
    *next += 1;
    let data_type = match field.data_type() {
        DataType::List(item) => DataType::List(with_field_ids(item, next)),
        DataType::LargeList(item) => DataType::LargeList(with_field_ids(item, next)),
        DataType::Struct(children) => DataType::Struct(Fields::from(
            children
                .iter()
                .map(|c| with_field_ids(c, next))
                .collect::<Vec<_>>(),
        )),
        other => other.clone(),
    };
    let mut metadata = field.metadata().clone();
    metadata.insert(PARQUET_FIELD_ID_META_KEY.to_owned(), id.to_string());
    Arc::new(Field::new(field.name(), data_type, field.is_nullable()).with_metadata(metadata))
}

/// The Arrow schema a curated table's data files have, without Iceberg's field ids: what
/// SQL reads them as.
pub fn arrow_schema(schema: &Schema) -> Result<ArrowSchema, iceberg::Error> {
    Ok(strip_ids(&schema_to_arrow_schema(schema)?))
}

fn strip_ids(schema: &ArrowSchema) -> ArrowSchema {
    fn strip(field: &FieldRef) -> FieldRef {
        let data_type = match field.data_type() {
            DataType::List(item) => DataType::List(strip(item)),
            DataType::LargeList(item) => DataType::LargeList(strip(item)),
            DataType::Struct(children) => {
                DataType::Struct(Fields::from(children.iter().map(strip).collect::<Vec<_>>()))
            }
            other => other.clone(),
        };
        Arc::new(Field::new(field.name(), data_type, true))
    }
    ArrowSchema::new(schema.fields().iter().map(strip).collect::<Vec<_>>())
}

/// Whether two schemas have the same columns with the same types (ids aside).
pub fn same_columns(a: &Schema, b: &Schema) -> bool {
    match (arrow_schema(a), arrow_schema(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Writes `rows` as the table's new data files, rolled at `target_file_size` bytes.
pub async fn write_data_files(
    table: &IcebergTable,
    schema: &Schema,
    file_io: &FileIO,
    mut rows: SendableRecordBatchStream,
    target_file_size: usize,
) -> Result<Vec<DataFile>, CurateError> {
    let name = table.name();
    let iceberg_error = |source| CurateError::iceberg(name.clone(), source);
    let file_schema = Arc::new(schema_to_arrow_schema(schema).map_err(iceberg_error)?);
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let rolling = RollingFileWriterBuilder::new(
        ParquetWriterBuilder::new(properties, Arc::new(schema.clone())),
        target_file_size,
        file_io.clone(),
        DefaultLocationGenerator::new(&table.metadata).map_err(iceberg_error)?,
        DefaultFileNameGenerator::new(
            // One prefix per run: a crashed run's files are told apart from the next run's.
            uuid_like(),
            None,
            DataFileFormat::Parquet,
        ),
    );
    let mut writer = DataFileWriterBuilder::new(rolling)
        .build(None)
        .await
        .map_err(iceberg_error)?;
    while let Some(batch) = rows.next().await {
        let batch = batch.map_err(|source| CurateError::Sql {
            table: name.clone(),
            source,
        })?;
        if batch.num_rows() == 0 {
            continue;
        }
        let batch = conform(&batch, &file_schema).map_err(|message| CurateError::Schema {
            table: name.clone(),
            message,
        })?;
        writer.write(batch).await.map_err(iceberg_error)?;
    }
    writer.close().await.map_err(iceberg_error)
}

/// `batch` with the data files' exact schema: columns by name, cast to the file types,
/// absent ones NULL.
fn conform(batch: &RecordBatch, schema: &Arc<ArrowSchema>) -> Result<RecordBatch, String> {
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) if column.data_type() == field.data_type() => Ok(column.clone()),
            Some(column) => arrow_cast::cast(column.as_ref(), field.data_type()).map_err(|e| {
                format!(
                    "column {} ({}) cannot be written as {}: {e}",
                    field.name(),
                    column.data_type(),
                    field.data_type()
                )
            }),
            None => Ok(new_null_array(field.data_type(), batch.num_rows())),
        })
        .collect::<Result<_, _>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())
}

/// A random 128-bit hex name, for file-name prefixes.
fn uuid_like() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The data files of the table's current snapshot.
pub async fn current_data_files(
    table: &IcebergTable,
    file_io: &FileIO,
) -> Result<Vec<DataFile>, CurateError> {
    match table.metadata.current_snapshot() {
        None => Ok(Vec::new()),
        Some(snapshot) => snapshot_files(table, file_io, snapshot)
            .await
            .map(|f| f.data),
    }
}

/// What one snapshot references.
struct SnapshotFiles {
    manifest_list: String,
    manifests: Vec<String>,
    data: Vec<DataFile>,
}

async fn snapshot_files(
    table: &IcebergTable,
    file_io: &FileIO,
    snapshot: &Snapshot,
) -> Result<SnapshotFiles, CurateError> {
    let iceberg_error = |source| CurateError::iceberg(table.name(), source);
    let bytes = file_io
        .new_input(snapshot.manifest_list())
        .map_err(iceberg_error)?
        .read()
        .await
        .map_err(iceberg_error)?;
    let list = ManifestList::parse_with_version(&bytes, table.metadata.format_version())
        .map_err(iceberg_error)?;
    let mut files = SnapshotFiles {
        manifest_list: snapshot.manifest_list().to_owned(),
        manifests: Vec::new(),
        data: Vec::new(),
    };
    for manifest_file in list.entries() {
        files.manifests.push(manifest_file.manifest_path.clone());
        let manifest = manifest_file
            .load_manifest(file_io)
            .await
            .map_err(iceberg_error)?;
        files.data.extend(
            manifest
                .entries()
                .iter()
                .filter(|e| e.is_alive())
                .map(|e| e.data_file().clone()),
        );
    }
    Ok(files)
}

/// What a replacing commit records besides its files.
pub struct Replacement {
    /// A new current schema (the table's columns changed), or `None` to keep it.
    pub schema: Option<Schema>,
    pub files: Vec<DataFile>,
    /// `tributary.*` summary properties: what the snapshot applied.
    pub properties: HashMap<String, String>,
    /// How many of the newest snapshots to keep (at least 1: the new one).
    pub keep_snapshots: usize,
}

/// Commits a snapshot whose data files are exactly `replacement.files`, expires snapshots
/// beyond the newest `keep_snapshots`, and then deletes the files only they referenced.
pub async fn replace(
    catalog: &IcebergCatalog,
    table: &IcebergTable,
    replacement: Replacement,
) -> Result<IcebergTable, CurateError> {
    let name = table.name();
    let iceberg_error = |source| CurateError::iceberg(name.clone(), source);
    let file_io = catalog.file_io();
    let metadata = &table.metadata;
    // Staged without a previous location: the commit's own build below logs it, once.
    let mut builder = metadata.clone().into_builder(None);
    if let Some(schema) = replacement.schema.clone() {
        builder = builder.add_current_schema(schema).map_err(iceberg_error)?;
    }
    // The builder knows the new schema's id only once built; build to learn it.
    let staged = builder.build().map_err(iceberg_error)?.metadata;
    let schema = staged.current_schema().clone();

    let snapshot_id = new_snapshot_id(metadata);
    let sequence_number = metadata.next_sequence_number();
    let commit = uuid_like();
    let metadata_dir = format!("{}/metadata", metadata.location().trim_end_matches('/'));
    let manifest_path = format!("{metadata_dir}/{commit}-m0.avro");
    let mut manifest = ManifestWriterBuilder::new(
        file_io.new_output(&manifest_path).map_err(iceberg_error)?,
        Some(snapshot_id),
        schema.clone(),
        staged.default_partition_spec().as_ref().clone(),
    )
    .build_v2_data();
    let (mut records, mut bytes) = (0u64, 0u64);
    for file in &replacement.files {
        records += file.record_count();
        bytes += file.file_size_in_bytes();
        manifest
            .add_file(file.clone(), sequence_number)
            .map_err(iceberg_error)?;
    }
    let manifest = manifest
        .write_manifest_file()
        .await
        .map_err(iceberg_error)?;
    let list_path = format!("{metadata_dir}/snap-{snapshot_id}-0-{commit}.avro");
    let mut list = ManifestListWriter::v2(
        file_io
            .new_output(&list_path)
            .map_err(iceberg_error)?
            .writer()
            .await
            .map_err(iceberg_error)?,
        snapshot_id,
        metadata.current_snapshot_id(),
        sequence_number,
    );
    list.add_manifests(std::iter::once(manifest))
        .map_err(iceberg_error)?;
    list.close().await.map_err(iceberg_error)?;

    let previous = current_data_files(table, file_io).await?;
    let (previous_records, previous_bytes) = previous.iter().fold((0, 0), |(r, b), f| {
        (r + f.record_count(), b + f.file_size_in_bytes())
    });
    let mut properties = replacement.properties;
    for (key, value) in [
        ("added-data-files", replacement.files.len() as u64),
        ("added-records", records),
        ("added-files-size", bytes),
        ("deleted-data-files", previous.len() as u64),
        ("deleted-records", previous_records),
        ("removed-files-size", previous_bytes),
        ("total-data-files", replacement.files.len() as u64),
        ("total-records", records),
        ("total-files-size", bytes),
        ("total-delete-files", 0),
        ("total-position-deletes", 0),
        ("total-equality-deletes", 0),
    ] {
        properties.insert(key.to_owned(), value.to_string());
    }
    let operation = if previous.is_empty() {
        Operation::Append
    } else {
        Operation::Overwrite
    };
    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(metadata.current_snapshot_id())
        .with_sequence_number(sequence_number)
        .with_timestamp_ms(chrono::Utc::now().timestamp_millis())
        .with_manifest_list(list_path)
        .with_summary(Summary {
            operation,
            additional_properties: properties,
        })
        .with_schema_id(schema.schema_id())
        .build();

    // Expiry: the newest snapshots stay, the new one among them.
    let mut by_age: Vec<(i64, i64)> = staged
        .snapshots()
        .map(|s| (s.timestamp_ms(), s.snapshot_id()))
        .collect();
    by_age.sort_unstable_by(|a, b| b.cmp(a));
    let expired: Vec<i64> = by_age
        .iter()
        .skip(replacement.keep_snapshots.max(1) - 1)
        .map(|(_, id)| *id)
        .collect();
    let mut builder = staged
        .clone()
        .into_builder(Some(table.metadata_location.clone()))
        .add_snapshot(snapshot)
        .map_err(iceberg_error)?
        .set_ref(
            "main",
            SnapshotReference::new(snapshot_id, SnapshotRetention::branch(None, None, None)),
        )
        .map_err(iceberg_error)?;
    if !expired.is_empty() {
        builder = builder.remove_snapshots(&expired);
    }
    let new_metadata = builder.build().map_err(iceberg_error)?.metadata;
    let committed = catalog.commit(table, new_metadata).await?;

    // Only now may the expired snapshots' own files go.
    let mut expired_files = Vec::new();
    for id in &expired {
        if let Some(snapshot) = metadata.snapshot_by_id(*id) {
            expired_files.push(snapshot_files(table, file_io, snapshot).await?);
        }
    }
    let live = live_files(&committed, file_io).await?;
    let location = committed.metadata.location().to_owned();
    for files in expired_files {
        let paths = std::iter::once(files.manifest_list)
            .chain(files.manifests)
            .chain(files.data.iter().map(|f| f.file_path().to_owned()));
        for path in paths.filter(|p| !live.contains(p)) {
            // A file outside the table's own folder is not the table's to delete, whatever
            // a manifest says (one written by hand, or by another tool).
            if inside_location(&location, &path) {
                delete_file(file_io, &path, &name).await?;
            } else {
                tracing::warn!(
                    "{name}: an expired snapshot lists {path}, outside the table's location {location}; it is left in place"
                );
            }
        }
    }
    Ok(committed)
}

/// Whether two table locations name the same folder (a path, a `file:` or an `s3://` URI,
/// with or without a trailing `/`).
pub fn same_location(a: &str, b: &str) -> bool {
    let plain = |p: &str| {
        p.strip_prefix("file://")
            .or_else(|| p.strip_prefix("file:"))
            .unwrap_or(p)
            .trim_end_matches('/')
            .to_owned()
    };
    plain(a) == plain(b)
}

/// Whether `path` lies strictly inside the table folder `location` (both as Iceberg
/// metadata writes them: a path, a `file:` or an `s3://` URI), with no `.` or `..` step.
pub fn inside_location(location: &str, path: &str) -> bool {
    let plain = |p: &str| {
        p.strip_prefix("file://")
            .or_else(|| p.strip_prefix("file:"))
            .unwrap_or(p)
            .to_owned()
    };
    let folder = format!("{}/", plain(location).trim_end_matches('/'));
    crate::lake::layout::is_inside(&folder, &plain(path))
}

/// Every file a kept snapshot of `table` references (metadata files aside).
pub async fn live_files(
    table: &IcebergTable,
    file_io: &FileIO,
) -> Result<HashSet<String>, CurateError> {
    let mut live = HashSet::new();
    for snapshot in table.metadata.snapshots() {
        let files = snapshot_files(table, file_io, snapshot).await?;
        live.insert(files.manifest_list);
        live.extend(files.manifests);
        live.extend(files.data.iter().map(|f| f.file_path().to_owned()));
    }
    Ok(live)
}

/// Removes the files under the table's `data/` and `metadata/` folders that nothing
/// references: what a run that crashed before its commit, or lost its commit, wrote. Runs
/// under the curate lock, so no other writer is between writing and committing. `storage`
/// is the table's target; a table whose location is elsewhere is left alone.
pub async fn remove_orphans(
    table: &IcebergTable,
    file_io: &FileIO,
    storage: &Storage,
) -> Result<(), CurateError> {
    let Some(location) = storage.key_of(table.metadata.location().trim_end_matches('/')) else {
        return Ok(());
    };
    let live = live_files(table, file_io).await?;
    let mut referenced_paths: Vec<&str> = live.iter().map(String::as_str).collect();
    referenced_paths.push(&table.metadata_location);
    referenced_paths.extend(
        table
            .metadata
            .metadata_log()
            .iter()
            .map(|m| m.metadata_file.as_str()),
    );
    let referenced: Option<HashSet<String>> =
        referenced_paths.iter().map(|p| storage.key_of(p)).collect();
    // A referenced file outside the storage (or written another way) cannot be told from an
    // orphan: remove nothing rather than risk it.
    let Some(referenced) = referenced else {
        tracing::warn!(
            "{}: a referenced file is not in {}; its folder is not cleaned",
            table.name(),
            storage.describe()
        );
        return Ok(());
    };
    for folder in ["data", "metadata"] {
        for object in storage.list_all(&format!("{location}/{folder}/")).await? {
            if !referenced.contains(&object.key) {
                storage.delete(&object.key).await?;
            }
        }
    }
    Ok(())
}

pub async fn delete_file(file_io: &FileIO, path: &str, table: &str) -> Result<(), CurateError> {
    file_io
        .delete(path)
        .await
        .map_err(|source| CurateError::iceberg(table.to_owned(), source))
}

/// A snapshot id not used by the table: positive, as the spec's readers expect.
fn new_snapshot_id(metadata: &TableMetadata) -> i64 {
    loop {
        let id = (uuid::Uuid::new_v4().as_u64_pair().0 & (i64::MAX as u64)) as i64;
        if id != 0 && metadata.snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_inside_the_table_folder_are_its_own() {
        let location = "s3://b/curated/src/public/t";
        assert!(inside_location(
            location,
            "s3://b/curated/src/public/t/data/x.parquet"
        ));
        assert!(!inside_location(
            location,
            "s3://b/curated/src/public/t2/data/x.parquet"
        ));
        assert!(!inside_location(
            location,
            "s3://b/curated/src/public/t/../u/x.parquet"
        ));
        assert!(!inside_location(
            location,
            "s3://b/raw/_tributary/t/state.json"
        ));
        let local = "/lake/curated/s/p/t";
        assert!(inside_location(
            local,
            "file:///lake/curated/s/p/t/metadata/1.avro"
        ));
        assert!(inside_location(
            &format!("file:{local}/"),
            "/lake/curated/s/p/t/data/a"
        ));
        assert!(!inside_location(local, "/etc/passwd"));
        assert!(same_location("file:///lake/t/", "/lake/t"));
        assert!(!same_location("/lake/t", "/lake/t2"));
    }

    #[test]
    fn field_ids_start_where_asked_and_cover_nested_fields() {
        let arrow = ArrowSchema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new(
                "tags",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                true,
            ),
            Field::new("small", DataType::Int16, true),
        ]);
        let schema = schema_from_arrow(&arrow, 10).unwrap();
        let ids: Vec<i32> = schema.as_struct().fields().iter().map(|f| f.id).collect();
        assert_eq!(ids, vec![10, 11, 13]);
        assert_eq!(schema.highest_field_id(), 13);
        // Int16 has no Iceberg type of its own: it is written as int.
        let files = arrow_schema(&schema).unwrap();
        assert_eq!(files.field(2).data_type(), &DataType::Int32);
        assert!(same_columns(
            &schema,
            &schema_from_arrow(&arrow, 1).unwrap()
        ));

        // A new column: the others keep their ids, the new one gets the next.
        let mut wider = arrow.fields().to_vec();
        wider.push(Arc::new(Field::new("note", DataType::Utf8, true)));
        let next = evolve(Some(&schema), (&ArrowSchema::new(wider)).into(), 14).unwrap();
        let ids: Vec<i32> = next.as_struct().fields().iter().map(|f| f.id).collect();
        assert_eq!(ids, vec![10, 11, 13, 14]);
    }

    #[test]
    fn a_renamed_column_keeps_its_field_id_under_its_new_name() {
        let arrow = |names: [&str; 3]| {
            ArrowSchema::new(
                names
                    .iter()
                    .map(|n| Field::new(*n, DataType::Utf8, true))
                    .collect::<Vec<_>>(),
            )
        };
        let before = schema_from_arrow(&arrow(["id", "label", "note"]), 1).unwrap();
        // label renamed to title, note to label: each keeps its own id; extra is new.
        let next = arrow(["id", "title", "label"]);
        let names = [Some("id".into()), Some("label".into()), Some("note".into())];
        let columns = NextColumns {
            schema: &next,
            current_names: &names,
        };
        let after = evolve(Some(&before), columns, 4).unwrap();
        let fields: Vec<(i32, String)> = after
            .as_struct()
            .fields()
            .iter()
            .map(|f| (f.id, f.name.clone()))
            .collect();
        assert_eq!(
            fields,
            vec![(1, "id".into()), (2, "title".into()), (3, "label".into())]
        );
    }

    #[test]
    fn a_widened_column_keeps_its_field_id_and_another_type_change_does_not() {
        let arrow = |count: DataType, price: DataType, label: DataType| {
            ArrowSchema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("count", count, true),
                Field::new("price", price, true),
                Field::new("label", label, true),
            ])
        };
        let before = schema_from_arrow(
            &arrow(DataType::Int32, DataType::Decimal128(10, 2), DataType::Utf8),
            1,
        )
        .unwrap();
        // int to bigint, numeric(10,2) to numeric(20,2): promoted in place.
        let widened = evolve(
            Some(&before),
            (&arrow(DataType::Int64, DataType::Decimal128(20, 2), DataType::Utf8)).into(),
            5,
        )
        .unwrap();
        let ids: Vec<i32> = widened.as_struct().fields().iter().map(|f| f.id).collect();
        assert_eq!(ids, vec![1, 2, 3, 4]);
        let files = arrow_schema(&widened).unwrap();
        assert_eq!(files.field(1).data_type(), &DataType::Int64);
        assert_eq!(files.field(2).data_type(), &DataType::Decimal128(20, 2));
        // A scale change and text to integer are not promotions: new fields.
        let changed = evolve(
            Some(&before),
            (&arrow(
                DataType::Int32,
                DataType::Decimal128(10, 3),
                DataType::Int64,
            ))
                .into(),
            5,
        )
        .unwrap();
        let ids: Vec<i32> = changed.as_struct().fields().iter().map(|f| f.id).collect();
        assert_eq!(ids, vec![1, 2, 5, 6]);
        assert!(promotable(&DataType::Float32, &DataType::Float64));
        assert!(!promotable(&DataType::Int64, &DataType::Int32));
    }
}
