//! The curated zone's Apache Iceberg catalog: a SQL catalog, the one pyiceberg's
//! `SqlCatalog`, Spark's and Trino's JDBC catalogs read, in a SQLite file.
//!
//! Two tables hold it, in the schema's version 1 (the JDBC catalog's, which pyiceberg reads
//! without falling back): `iceberg_tables` (a row per table: namespace, name, the location
//! of its current metadata file and of the previous one, `iceberg_type = 'TABLE'`) and
//! `iceberg_namespace_properties`.
//! Invariants:
//! - a table's state is its metadata file; the catalog row only points at it. A commit
//!   writes a new metadata file, then moves the pointer with a compare-and-swap on the old
//!   location, so a commit is all or nothing and two writers cannot both win;
//! - metadata files are never rewritten: version `N` is `metadata/000NN-<uuid>.metadata.json`.
//!
//! Commits are built here rather than through iceberg-rust's `Transaction`, which in 0.10
//! can only append: the curated tables need snapshots that replace files.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use iceberg::io::FileIO;
use iceberg::spec::{TableMetadata, TableMetadataBuilder};
use iceberg::{MetadataLocation, NamespaceIdent, TableCreation, TableIdent};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

/// The catalog name rows carry (pyiceberg: `SqlCatalog("tributary", uri=...)`).
pub const CATALOG_NAME: &str = "tributary";

#[derive(Debug, thiserror::Error)]
pub enum IcebergCatalogError {
    #[error(
        "cannot open the Iceberg catalog {path}: {source}. Check that its folder exists and is writable"
    )]
    Open {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error("Iceberg catalog {path}: {source}")]
    Database {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error("Iceberg table {table}: {source}")]
    Iceberg {
        table: String,
        #[source]
        source: Box<iceberg::Error>,
    },
    #[error(
        "Iceberg table {table} was changed by another writer while this one committed; run again"
    )]
    Conflict { table: String },
}

/// A table as the catalog points at it: its current metadata and where that is.
#[derive(Debug, Clone)]
pub struct IcebergTable {
    pub ident: TableIdent,
    pub metadata_location: String,
    pub metadata: TableMetadata,
}

impl IcebergTable {
    /// `namespace.name`, dots between namespace levels.
    pub fn name(&self) -> String {
        display_ident(&self.ident)
    }
}

pub fn display_ident(ident: &TableIdent) -> String {
    format!("{}.{}", ident.namespace().join("."), ident.name())
}

/// One row of the catalog.
#[derive(Debug, Clone)]
pub struct CatalogEntry {
    pub ident: TableIdent,
    pub metadata_location: String,
}

pub struct IcebergCatalog {
    path: PathBuf,
    pool: SqlitePool,
    file_io: FileIO,
}

impl IcebergCatalog {
    /// Opens the SQLite catalog at `path`, creating the file and its tables if absent.
    pub async fn open(path: &Path, file_io: FileIO) -> Result<Self, IcebergCatalogError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            // Readers (pyiceberg, the app) go on reading while a commit writes.
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| IcebergCatalogError::Open {
                path: path.to_owned(),
                source,
            })?;
        let catalog = IcebergCatalog {
            path: path.to_owned(),
            pool,
            file_io,
        };
        for ddl in [
            "CREATE TABLE IF NOT EXISTS iceberg_tables (
                catalog_name VARCHAR(255) NOT NULL,
                table_namespace VARCHAR(255) NOT NULL,
                table_name VARCHAR(255) NOT NULL,
                metadata_location VARCHAR(1000),
                previous_metadata_location VARCHAR(1000),
                iceberg_type VARCHAR(5),
                PRIMARY KEY (catalog_name, table_namespace, table_name))",
            "CREATE TABLE IF NOT EXISTS iceberg_namespace_properties (
                catalog_name VARCHAR(255) NOT NULL,
                namespace VARCHAR(255) NOT NULL,
                property_key VARCHAR(255),
                property_value VARCHAR(1000),
                PRIMARY KEY (catalog_name, namespace, property_key))",
        ] {
            sqlx::query(ddl)
                .execute(&catalog.pool)
                .await
                .map_err(|e| catalog.db_error(e))?;
        }
        Ok(catalog)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file_io(&self) -> &FileIO {
        &self.file_io
    }

    fn db_error(&self, source: sqlx::Error) -> IcebergCatalogError {
        IcebergCatalogError::Database {
            path: self.path.clone(),
            source,
        }
    }

    /// Creates the namespace and its parents if absent (a namespace exists when it has a
    /// property row; `exists = true` is the marker pyiceberg writes too).
    pub async fn ensure_namespace(&self, ns: &NamespaceIdent) -> Result<(), IcebergCatalogError> {
        let levels: Vec<String> = ns.clone().inner();
        for depth in 1..=levels.len() {
            sqlx::query(
                "INSERT OR IGNORE INTO iceberg_namespace_properties
                 (catalog_name, namespace, property_key, property_value) VALUES ($1, $2, 'exists', 'true')",
            )
            .bind(CATALOG_NAME)
            .bind(levels[..depth].join("."))
            .execute(&self.pool)
            .await
            .map_err(|e| self.db_error(e))?;
        }
        Ok(())
    }

    /// Every table of the catalog, by namespace and name.
    pub async fn list(&self) -> Result<Vec<CatalogEntry>, IcebergCatalogError> {
        let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT table_namespace, table_name, metadata_location FROM iceberg_tables
             WHERE catalog_name = $1 AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL)
             ORDER BY table_namespace, table_name",
        )
        .bind(CATALOG_NAME)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db_error(e))?;
        Ok(rows
            .into_iter()
            .filter_map(|(ns, name, location)| {
                let ns = NamespaceIdent::from_vec(ns.split('.').map(str::to_owned).collect());
                Some(CatalogEntry {
                    ident: TableIdent::new(ns.ok()?, name),
                    metadata_location: location?,
                })
            })
            .collect())
    }

    /// The table's current metadata, or `None` if the catalog has no such table.
    pub async fn load(
        &self,
        ident: &TableIdent,
    ) -> Result<Option<IcebergTable>, IcebergCatalogError> {
        let location: Option<(Option<String>,)> = sqlx::query_as(
            "SELECT metadata_location FROM iceberg_tables
             WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3
               AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL)",
        )
        .bind(CATALOG_NAME)
        .bind(ident.namespace().join("."))
        .bind(ident.name())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.db_error(e))?;
        let Some((Some(metadata_location),)) = location else {
            return Ok(None);
        };
        let metadata = TableMetadata::read_from(&self.file_io, &metadata_location)
            .await
            .map_err(|source| iceberg_error(ident, source))?;
        Ok(Some(IcebergTable {
            ident: ident.clone(),
            metadata_location,
            metadata,
        }))
    }

    /// Creates a table with no snapshot at `creation.location`.
    pub async fn create(
        &self,
        ident: &TableIdent,
        creation: TableCreation,
    ) -> Result<IcebergTable, IcebergCatalogError> {
        self.ensure_namespace(ident.namespace()).await?;
        let location = creation.location.clone().unwrap_or_default();
        let metadata = TableMetadataBuilder::from_table_creation(creation)
            .and_then(|b| b.build())
            .map_err(|source| iceberg_error(ident, source))?
            .metadata;
        let metadata_location = MetadataLocation::new_with_metadata(&location, &metadata);
        metadata
            .write_to(&self.file_io, &metadata_location)
            .await
            .map_err(|source| iceberg_error(ident, source))?;
        let metadata_location = metadata_location.to_string();
        sqlx::query(
            "INSERT INTO iceberg_tables
             (catalog_name, table_namespace, table_name, metadata_location, iceberg_type)
             VALUES ($1, $2, $3, $4, 'TABLE')",
        )
        .bind(CATALOG_NAME)
        .bind(ident.namespace().join("."))
        .bind(ident.name())
        .bind(&metadata_location)
        .execute(&self.pool)
        .await
        .map_err(|e| self.db_error(e))?;
        Ok(IcebergTable {
            ident: ident.clone(),
            metadata_location,
            metadata,
        })
    }

    /// Writes `metadata` as the table's next metadata file and points the catalog at it,
    /// only if the table still is at `base` (else [`IcebergCatalogError::Conflict`]).
    pub async fn commit(
        &self,
        base: &IcebergTable,
        metadata: TableMetadata,
    ) -> Result<IcebergTable, IcebergCatalogError> {
        let ident = &base.ident;
        let next = MetadataLocation::from_str(&base.metadata_location)
            .map_err(|source| iceberg_error(ident, source))?
            .with_next_version()
            .with_new_metadata(&metadata);
        metadata
            .write_to(&self.file_io, &next)
            .await
            .map_err(|source| iceberg_error(ident, source))?;
        let next = next.to_string();
        let updated = sqlx::query(
            "UPDATE iceberg_tables SET metadata_location = $1, previous_metadata_location = $2
             WHERE catalog_name = $3 AND table_namespace = $4 AND table_name = $5
               AND metadata_location = $2",
        )
        .bind(&next)
        .bind(&base.metadata_location)
        .bind(CATALOG_NAME)
        .bind(ident.namespace().join("."))
        .bind(ident.name())
        .execute(&self.pool)
        .await
        .map_err(|e| self.db_error(e))?;
        if updated.rows_affected() != 1 {
            // The metadata file just written is referenced by nothing; leave it, as Iceberg
            // writers do (orphan-file cleanup removes it).
            return Err(IcebergCatalogError::Conflict {
                table: display_ident(ident),
            });
        }
        Ok(IcebergTable {
            ident: ident.clone(),
            metadata_location: next,
            metadata,
        })
    }
}

fn iceberg_error(ident: &TableIdent, source: iceberg::Error) -> IcebergCatalogError {
    IcebergCatalogError::Iceberg {
        table: display_ident(ident),
        source: Box::new(source),
    }
}
