//! The catalog of the raw zone: its tables, their schemas and partitions, found by crawling
//! a target the way a Glue crawler does.
//!
//! A raw table is the folder `<bucket_folder>/<source>/<schema>/<table>/`; the folders
//! between it and a file are the file's partition (`year=2026/month=11/day=25`, or DMS's
//! `2026/11/25`). The catalog is kept beside the data, at
//! `<bucket_folder>/_tributary/catalog.json`, and invariants hold on it:
//! - a crawl is incremental: a file whose key, size and modification time are unchanged is
//!   not read again; only new or changed files have their Parquet footer read;
//! - a table's schema is the union of its Parquet files' columns, by name; every change of
//!   it is a new schema version, the newest last, as Glue keeps table versions;
//! - a file that cannot be read is reported with the reason and kept out of the schema,
//!   never a reason to stop the crawl;
//! - CSV files have no header (as DMS writes them), so a CSV table's columns are unknown
//!   here; its files and partitions are still listed;
//! - names readers skip (a leading `.` or `_`, as Glue and Spark skip them) are not data:
//!   a schema or table whose name starts with `_` is not cataloged.

pub mod iceberg;

use std::collections::{BTreeMap, BTreeSet};

use arrow_schema::Schema;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::lake::inspect::{InspectError, ParquetFile};
use crate::lake::layout;
use crate::lake::{ObjectMeta, Storage, StorageError, human_bytes};

/// How many Parquet footers a crawl reads at once.
const FOOTERS_AT_ONCE: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(
        "the catalog {uri} is unreadable ({source}). Delete it: the next crawl rebuilds it from the files"
    )]
    Corrupt {
        uri: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The raw tables under one `bucket_folder` of a target.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Catalog {
    /// Keyed by the table folder's key ([`RawTable::location`]), which is unique: two
    /// tables never share it, whatever their names hold.
    pub tables: BTreeMap<String, RawTable>,
    pub crawled_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawTable {
    pub source: String,
    pub schema: String,
    pub table: String,
    /// The table folder's key, ending with `/`.
    pub location: String,
    /// `parquet`, `csv`, `json`, with `.gz` when compressed; several when files differ.
    pub formats: BTreeSet<String>,
    /// Schema versions, oldest first; the last is the current one.
    pub versions: Vec<SchemaVersion>,
    /// The distinct column lists of the table's Parquet files, which files point into:
    /// thousands of CDC files share a handful of schemas.
    #[serde(default)]
    pub file_schemas: Vec<Vec<CatalogColumn>>,
    /// Keyed by the file's key.
    pub files: BTreeMap<String, RawFile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaVersion {
    pub columns: Vec<CatalogColumn>,
    pub since: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogColumn {
    pub name: String,
    /// The Arrow type; `mixed: a | b` when files disagree.
    pub data_type: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawFile {
    pub size: u64,
    pub last_modified: Option<DateTime<Utc>>,
    /// The partition folders between the table folder and the file, e.g. `year=2026/month=11/day=25`.
    pub partition: String,
    /// Parquet: rows from the footer, and its columns as an index into
    /// [`RawTable::file_schemas`].
    pub rows: Option<u64>,
    pub schema: Option<usize>,
    /// Why the file could not be read, if it could not.
    pub unreadable: Option<String>,
    /// The largest `_position` in a CDC file, from its statistics: curation reads only the
    /// files with changes after what it applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_position: Option<String>,
}

/// What one partition of a table holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartitionSummary {
    pub files: u64,
    pub bytes: u64,
    pub rows: u64,
    pub last_modified: Option<DateTime<Utc>>,
}

impl PartitionSummary {
    /// One line for people about partition `name` (`""`: the table folder itself).
    pub fn describe(&self, name: &str) -> String {
        let name = if name.is_empty() {
            "(table folder)"
        } else {
            name
        };
        format!(
            "{name}: {} file(s), {} row(s), {}",
            self.files,
            self.rows,
            human_bytes(self.bytes)
        )
    }
}

impl RawTable {
    /// `source.schema.table` for people (parts quoted where they need it).
    pub fn qualified_name(&self) -> String {
        crate::ident::display_name(&[&self.source, &self.schema, &self.table])
    }

    pub fn columns(&self) -> &[CatalogColumn] {
        self.versions.last().map_or(&[], |v| v.columns.as_slice())
    }

    pub fn rows(&self) -> u64 {
        self.files.values().filter_map(|f| f.rows).sum()
    }

    pub fn bytes(&self) -> u64 {
        self.files.values().map(|f| f.size).sum()
    }

    /// One line for people: `parquet, 3 file(s), 1040 row(s), 52.1 KB, 1 partition(s),
    /// schema v1`. Files directly in the table folder are in no partition.
    pub fn summary(&self) -> String {
        let formats: Vec<&str> = self.formats.iter().map(String::as_str).collect();
        let partitions = self.files.values().map(|f| f.partition.as_str());
        let partitions: BTreeSet<&str> = partitions.filter(|p| !p.is_empty()).collect();
        format!(
            "{}, {} file(s), {} row(s), {}, {} partition(s), schema v{}",
            formats.join("+"),
            self.files.len(),
            self.rows(),
            human_bytes(self.bytes()),
            partitions.len(),
            self.versions.len()
        )
    }

    /// Partitions by name (`""`: files directly in the table folder, such as full-load files).
    pub fn partitions(&self) -> BTreeMap<&str, PartitionSummary> {
        let mut out: BTreeMap<&str, PartitionSummary> = BTreeMap::new();
        for f in self.files.values() {
            let p = out.entry(f.partition.as_str()).or_default();
            p.files += 1;
            p.bytes += f.size;
            p.rows += f.rows.unwrap_or(0);
            p.last_modified = p.last_modified.max(f.last_modified);
        }
        out
    }

    /// The index of `columns` in [`Self::file_schemas`], added when new.
    fn schema_index(&mut self, columns: Vec<CatalogColumn>) -> usize {
        match self.file_schemas.iter().position(|s| *s == columns) {
            Some(i) => i,
            None => {
                self.file_schemas.push(columns);
                self.file_schemas.len() - 1
            }
        }
    }

    /// Drops the file schemas no file points to any more.
    fn prune_schemas(&mut self) {
        let used: BTreeSet<usize> = self.files.values().filter_map(|f| f.schema).collect();
        if used.len() == self.file_schemas.len() {
            return;
        }
        let mut renumbered = BTreeMap::new();
        let schemas = std::mem::take(&mut self.file_schemas);
        for (old, columns) in schemas.into_iter().enumerate() {
            if used.contains(&old) {
                renumbered.insert(old, self.file_schemas.len());
                self.file_schemas.push(columns);
            }
        }
        for f in self.files.values_mut() {
            f.schema = f.schema.and_then(|s| renumbered.get(&s).copied());
        }
    }

    /// The union of the readable Parquet files' columns, in first-seen order; a column
    /// whose type differs between files is `mixed: a | b`.
    fn merged_columns(&self) -> Vec<CatalogColumn> {
        let mut merged: Vec<(String, Vec<String>)> = Vec::new();
        let used: BTreeSet<usize> = self.files.values().filter_map(|f| f.schema).collect();
        for columns in used.iter().filter_map(|&i| self.file_schemas.get(i)) {
            for c in columns {
                match merged.iter_mut().find(|(name, _)| *name == c.name) {
                    None => merged.push((c.name.clone(), vec![c.data_type.clone()])),
                    Some((_, types)) if !types.contains(&c.data_type) => {
                        types.push(c.data_type.clone())
                    }
                    Some(_) => {}
                }
            }
        }
        merged
            .into_iter()
            .map(|(name, types)| CatalogColumn {
                name,
                data_type: match types.as_slice() {
                    [one] => one.clone(),
                    many => format!("mixed: {}", many.join(" | ")),
                },
            })
            .collect()
    }
}

/// What a crawl found, for the terminal and the app.
#[derive(Debug, Clone, Default)]
pub struct CrawlReport {
    pub tables_added: Vec<String>,
    pub tables_removed: Vec<String>,
    /// `(table, partition)`.
    pub partitions_added: Vec<(String, String)>,
    pub files_added: usize,
    pub files_changed: usize,
    pub files_removed: usize,
    /// Footers read in this crawl (new or changed Parquet files).
    pub footers_read: usize,
    /// Tables whose schema got a new version.
    pub schema_changes: Vec<String>,
    /// `(file key, reason)`.
    pub unreadable: Vec<(String, String)>,
}

/// The key of the catalog of the raw zone under `bucket_folder`.
pub fn catalog_key(bucket_folder: &str) -> String {
    format!(
        "{}_tributary/catalog.json",
        layout::folder_prefix(bucket_folder)
    )
}

/// Reads the catalog of `bucket_folder` (empty when none was written yet).
pub async fn load(storage: &Storage, bucket_folder: &str) -> Result<Catalog, CatalogError> {
    let key = catalog_key(bucket_folder);
    match storage.get_bytes(&key).await? {
        None => Ok(Catalog::default()),
        Some(bytes) => {
            let mut catalog: Catalog =
                serde_json::from_slice(&bytes).map_err(|e| CatalogError::Corrupt {
                    uri: storage.uri(&key),
                    source: e,
                })?;
            // Catalogs written before tables were keyed by folder keyed them by name.
            catalog.tables = std::mem::take(&mut catalog.tables)
                .into_values()
                .map(|t| (t.location.clone(), t))
                .collect();
            Ok(catalog)
        }
    }
}

/// Crawls the raw zone under `bucket_folder`, updates its catalog from what changed, and
/// writes the catalog back.
pub async fn crawl(
    storage: &Storage,
    bucket_folder: &str,
) -> Result<(Catalog, CrawlReport), CatalogError> {
    let mut catalog = load(storage, bucket_folder).await?;
    let root = layout::folder_prefix(bucket_folder);
    let mut report = CrawlReport::default();
    let now = Utc::now();

    let found = group_by_table(&root, storage.list_all(&root).await?);

    let gone: Vec<String> = catalog
        .tables
        .keys()
        .filter(|k| !found.contains_key(*k))
        .cloned()
        .collect();
    for location in gone {
        if let Some(table) = catalog.tables.remove(&location) {
            report.tables_removed.push(table.qualified_name());
        }
    }

    for (location, (new_table, objects)) in found {
        let name = new_table.qualified_name();
        let entry = catalog.tables.entry(location).or_insert_with(|| {
            report.tables_added.push(name.clone());
            new_table
        });
        let known_partitions: BTreeSet<String> =
            entry.files.values().map(|f| f.partition.clone()).collect();
        let keys: BTreeSet<&str> = objects.iter().map(|(_, o)| o.key.as_str()).collect();
        let before = entry.files.len();
        entry.files.retain(|k, _| keys.contains(k.as_str()));
        report.files_removed += before - entry.files.len();

        let mut to_read = Vec::new();
        for (partition, object) in &objects {
            // A CDC file crawled before positions were kept is read once more for its own.
            let is_change_file = format_of(&object.key) == "parquet"
                && layout::parse_load_number(object.key.rsplit('/').next().unwrap_or("")).is_none();
            let known = entry.files.get(&object.key);
            let same = known
                .is_some_and(|f| f.size == object.size && f.last_modified == object.last_modified);
            let complete = known.is_some_and(|f| {
                f.max_position.is_some() || !is_change_file || f.unreadable.is_some()
            });
            if same && complete {
                continue;
            }
            match (known, same) {
                (None, _) => report.files_added += 1,
                (Some(_), false) => report.files_changed += 1,
                (Some(_), true) => {}
            }
            if !partition.is_empty() && !known_partitions.contains(partition) {
                let p = (name.clone(), partition.clone());
                if !report.partitions_added.contains(&p) {
                    report.partitions_added.push(p);
                }
            }
            entry.files.insert(
                object.key.clone(),
                RawFile {
                    size: object.size,
                    last_modified: object.last_modified,
                    partition: partition.clone(),
                    rows: None,
                    schema: None,
                    unreadable: None,
                    max_position: None,
                },
            );
            if format_of(&object.key) == "parquet" {
                to_read.push(object.key.clone());
            }
        }
        for chunk in to_read.chunks(FOOTERS_AT_ONCE) {
            let reads = chunk
                .iter()
                .map(|key| async move { (key.clone(), ParquetFile::open(storage, key).await) });
            for (key, result) in futures::future::join_all(reads).await {
                report.footers_read += 1;
                match result {
                    Ok(parquet) => {
                        let schema = entry.schema_index(columns_of(parquet.schema()));
                        if let Some(file) = entry.files.get_mut(&key) {
                            file.rows = Some(parquet.num_rows().max(0) as u64);
                            file.schema = Some(schema);
                            file.max_position = max_position(parquet.metadata());
                        }
                    }
                    // Deleted since the listing (a reload, a batch redone): gone.
                    Err(InspectError::Storage(StorageError::NotFound { .. })) => {
                        entry.files.remove(&key);
                    }
                    // The target failing is not the file's fault: the crawl stops.
                    Err(InspectError::Storage(e)) => return Err(e.into()),
                    Err(e) => {
                        if let Some(file) = entry.files.get_mut(&key) {
                            file.unreadable = Some(e.to_string());
                        }
                    }
                }
            }
        }
        entry.prune_schemas();
        // Every unreadable file, on every crawl, until it is replaced or removed.
        for (key, file) in &entry.files {
            if let Some(reason) = &file.unreadable {
                report.unreadable.push((key.clone(), reason.clone()));
            }
        }
        entry.formats = entry.files.keys().map(|k| format_of(k)).collect();
        let columns = entry.merged_columns();
        if entry.versions.last().map(|v| &v.columns) != Some(&columns) {
            if !entry.versions.is_empty() {
                report.schema_changes.push(name.clone());
            }
            entry.versions.push(SchemaVersion {
                columns,
                since: now,
            });
        }
    }
    catalog.crawled_at = Some(now);
    let key = catalog_key(bucket_folder);
    let json = serde_json::to_vec(&catalog).map_err(|e| CatalogError::Corrupt {
        uri: storage.uri(&key),
        source: e,
    })?;
    storage.put_bytes(&key, Bytes::from(json)).await?;
    Ok((catalog, report))
}

/// The objects under `root` by table folder (`<source>/<schema>/<table>/`), each with its
/// partition (the folders between the table and the file), and an empty catalog entry for
/// the table, named as the source has it. Names readers skip (a leading `.` or `_`) are
/// not data.
fn group_by_table(
    root: &str,
    objects: Vec<ObjectMeta>,
) -> BTreeMap<String, (RawTable, Vec<(String, ObjectMeta)>)> {
    let mut found: BTreeMap<String, (RawTable, Vec<(String, ObjectMeta)>)> = BTreeMap::new();
    for object in objects {
        let Some(rest) = object.key.strip_prefix(root) else {
            continue;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.len() < 4 || parts.iter().any(|p| layout::is_hidden_name(p)) {
            continue;
        }
        let (source_key, schema_key, table_key) = (parts[0], parts[1], parts[2]);
        let location = format!("{root}{source_key}/{schema_key}/{table_key}/");
        let partition = parts[3..parts.len() - 1].join("/");
        let (_, objects) = found.entry(location.clone()).or_insert_with(|| {
            // Names as the source has them ([`layout::segment`] escaped them).
            let table = RawTable {
                source: layout::segment_name(source_key),
                schema: layout::segment_name(schema_key),
                table: layout::segment_name(table_key),
                location,
                formats: BTreeSet::new(),
                versions: Vec::new(),
                file_schemas: Vec::new(),
                files: BTreeMap::new(),
            };
            (table, Vec::new())
        });
        objects.push((partition, object));
    }
    found
}

/// `parquet`, `csv`, `json`, `csv.gz`, … from a file name; `other` for anything else.
fn format_of(key: &str) -> String {
    let name = key.rsplit('/').next().unwrap_or(key);
    let gz = name.ends_with(".gz");
    let base = name.trim_end_matches(".gz");
    let format = match base.rsplit_once('.').map(|(_, ext)| ext) {
        Some("parquet") => "parquet",
        Some("csv") => "csv",
        Some("json") | Some("jsonl") => "json",
        _ => "other",
    };
    if gz {
        format!("{format}.gz")
    } else {
        format.to_owned()
    }
}

/// The largest `_position` of a Parquet file, if every row group's statistics hold it
/// exactly.
fn max_position(metadata: &parquet::file::metadata::ParquetMetaData) -> Option<String> {
    use parquet::file::statistics::Statistics;
    let columns = metadata.file_metadata().schema_descr();
    let index = (0..columns.num_columns()).find(|i| columns.column(*i).name() == "_position")?;
    let mut max: Option<String> = None;
    for row_group in metadata.row_groups() {
        let Some(Statistics::ByteArray(stats)) = row_group.column(index).statistics() else {
            return None;
        };
        if !stats.max_is_exact() {
            return None;
        }
        let value = std::str::from_utf8(stats.max_opt()?.data()).ok()?;
        if max.as_deref().is_none_or(|m| value > m) {
            max = Some(value.to_owned());
        }
    }
    max
}

fn columns_of(schema: &Schema) -> Vec<CatalogColumn> {
    schema
        .fields()
        .iter()
        .map(|f| CatalogColumn {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_group_by_table_folder_with_names_read_back() {
        let object = |key: &str| ObjectMeta {
            key: key.into(),
            size: 1,
            last_modified: None,
        };
        let found = group_by_table(
            "raw/",
            vec![
                object("raw/shop/%2E./a%2Fb/LOAD00000001.parquet"),
                object("raw/shop/%2E./a%2Fb/year=2026/month=01/x.parquet"),
                object("raw/shop/public/t/LOAD00000001.parquet"),
                object("raw/_tributary/task/state.json"),
                object("raw/shop/_hidden/t/LOAD00000001.parquet"),
                object("raw/shop/public/notes.txt"),
            ],
        );
        let keys: Vec<&str> = found.keys().map(String::as_str).collect();
        assert_eq!(keys, ["raw/shop/%2E./a%2Fb/", "raw/shop/public/t/"]);
        let (table, objects) = &found["raw/shop/%2E./a%2Fb/"];
        assert_eq!((table.schema.as_str(), table.table.as_str()), ("..", "a/b"));
        assert_eq!(table.qualified_name(), "shop.\"..\".a/b");
        let partitions: Vec<&str> = objects.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(partitions, ["", "year=2026/month=01"]);
    }

    #[test]
    fn formats_come_from_names() {
        assert_eq!(format_of("raw/s/p/t/LOAD00000001.parquet"), "parquet");
        assert_eq!(
            format_of("raw/s/p/t/year=2026/20261125-101010123.csv.gz"),
            "csv.gz"
        );
        assert_eq!(format_of("raw/s/p/t/x.json"), "json");
        assert_eq!(format_of("raw/s/p/t/README"), "other");
    }

    #[test]
    fn differing_types_are_marked_mixed_once_and_unused_schemas_go() {
        let column = |t: &str| {
            vec![CatalogColumn {
                name: "v".into(),
                data_type: t.into(),
            }]
        };
        let file = RawFile {
            size: 1,
            last_modified: None,
            partition: String::new(),
            rows: Some(1),
            schema: None,
            unreadable: None,
            max_position: None,
        };
        let mut table = RawTable {
            source: "s".into(),
            schema: "p".into(),
            table: "t".into(),
            location: "s/p/t/".into(),
            formats: BTreeSet::new(),
            versions: Vec::new(),
            file_schemas: Vec::new(),
            files: BTreeMap::new(),
        };
        for (key, t) in [
            ("a", "Utf8"),
            ("b", "LargeUtf8"),
            ("c", "Utf8"),
            ("d", "Int8"),
        ] {
            let schema = table.schema_index(column(t));
            let f = RawFile {
                schema: Some(schema),
                ..file.clone()
            };
            table.files.insert(key.into(), f);
        }
        assert_eq!(table.file_schemas.len(), 3, "one entry per distinct schema");
        assert_eq!(
            table.merged_columns()[0].data_type,
            "mixed: Utf8 | LargeUtf8 | Int8"
        );
        table.files.remove("b");
        table.files.remove("d");
        table.prune_schemas();
        assert_eq!(table.file_schemas, vec![column("Utf8")]);
        assert_eq!(table.merged_columns()[0].data_type, "Utf8");
        assert!(table.files.values().all(|f| f.schema == Some(0)));
    }
}
