//! The curated zone's Apache Iceberg catalog: a SQL catalog, the one pyiceberg's
//! `SqlCatalog`, Spark's and Trino's JDBC catalogs read, in a SQLite file (the default) or
//! a PostgreSQL database.
//!
//! Two tables hold it, in the schema's version 1 (the JDBC catalog's, which pyiceberg reads
//! without falling back): `iceberg_tables` (a row per table: namespace, name, the location
//! of its current metadata file and of the previous one, `iceberg_type = 'TABLE'`) and
//! `iceberg_namespace_properties`.
//! Invariants:
//! - a table's state is its metadata file; the catalog row only points at it. A commit
//!   writes a new metadata file, then moves the pointer with a compare-and-swap on the old
//!   location, so a commit is all or nothing and two writers cannot both win;
//! - metadata files are never rewritten: version `N` is `metadata/000NN-<uuid>.metadata.json`;
//! - every file a commit points at (metadata, manifest lists, manifests, data files) is
//!   durable before the compare-and-swap: the FileIO's local writes are fsynced, file and
//!   folder ([`crate::lake::adapters`]), and S3 puts are durable when they return;
//! - a PostgreSQL catalog's URL holds no password (refused on open) and is shown only
//!   redacted ([`crate::secret::redact_url`]).
//!
//! Commits are built here rather than through iceberg-rust's `Transaction`, which in 0.10
//! can only append: the curated tables need snapshots that replace files.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use iceberg::io::FileIO;
use iceberg::spec::{TableMetadata, TableMetadataBuilder};
use iceberg::{MetadataLocation, NamespaceIdent, TableCreation, TableIdent};
use sqlx::any::AnyPoolOptions;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool};

use crate::lake::adapters::Buckets;

/// The catalog name rows carry (pyiceberg: `SqlCatalog("tributary", uri=...)`).
pub const CATALOG_NAME: &str = "tributary";

#[derive(Debug, thiserror::Error)]
pub enum IcebergCatalogError {
    #[error(
        "cannot open the Iceberg catalog {location}: {source}. Check that its folder exists and is writable (SQLite), or the server, database and PGPASSWORD (PostgreSQL)"
    )]
    Open {
        location: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("Iceberg catalog {location}: {source}")]
    Database {
        location: String,
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
    #[error(
        "another tributary curate or transform holds {lock}; wait for it to finish (one at a time per catalog)"
    )]
    Busy { lock: String },
    #[error(
        "the Iceberg catalog {location} holds a password in {place}: secrets never live in the workspace file. Write postgres://user@host:port/database and put the password in PGPASSWORD"
    )]
    PasswordInUrl { location: String, place: String },
    #[error("cannot create {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where the catalog's tables are: a SQLite file (the default) or a PostgreSQL database.
#[derive(Debug, Clone, PartialEq)]
pub enum CatalogLocation {
    Sqlite(PathBuf),
    /// A `postgres://user@host:port/database` URL, without a password: it comes from
    /// PGPASSWORD, as for psql.
    Postgres(String),
}

impl CatalogLocation {
    /// `postgres://…` (or `postgresql://…`) is a PostgreSQL database; anything else a SQLite
    /// file, relative to `base`.
    pub fn parse(text: &str, base: &Path) -> CatalogLocation {
        if Self::is_postgres_url(text) {
            CatalogLocation::Postgres(text.to_owned())
        } else {
            CatalogLocation::Sqlite(base.join(text))
        }
    }

    /// Whether `text` is a PostgreSQL URL (`postgres://` or `postgresql://`, in any case, as
    /// URL schemes are).
    pub fn is_postgres_url(text: &str) -> bool {
        crate::config::is_postgres_url(text)
    }
}

/// Shown (messages, logs, the app) with any password in a URL replaced by `***`.
impl std::fmt::Display for CatalogLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CatalogLocation::Sqlite(path) => write!(f, "{}", path.display()),
            // Never with a password, even one that got past the workspace's validation.
            CatalogLocation::Postgres(url) => f.write_str(&crate::secret::redact_url(url)),
        }
    }
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

/// `namespace.name` for people, a level or name holding a `.` in double quotes.
pub fn display_ident(ident: &TableIdent) -> String {
    let mut parts: Vec<&str> = ident.namespace().iter().map(String::as_str).collect();
    parts.push(ident.name());
    crate::ident::display_name(&parts)
}

/// A namespace as the SQL catalog stores it: its levels joined by `.`, as pyiceberg, Spark
/// and Trino join them. A level's own `.` (a schema named `a.b`) would read back as two
/// levels, so in a level `%` is `%25` and `.` is `%2E`; a level that is empty or only white
/// space (which pyiceberg refuses) is written whole as `%XX` (`%` for an empty one).
/// Ordinary names are unchanged.
pub fn namespace_text(ns: &NamespaceIdent) -> String {
    levels_text(&ns.clone().inner())
}

fn levels_text(levels: &[String]) -> String {
    levels
        .iter()
        .map(|level| match level.as_str() {
            "" => "%".to_owned(),
            blank if blank.trim().is_empty() => {
                blank.bytes().map(|b| format!("%{b:02X}")).collect()
            }
            name => name.replace('%', "%25").replace('.', "%2E"),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The namespace [`namespace_text`] stored.
pub fn namespace_from_text(text: &str) -> Result<NamespaceIdent, iceberg::Error> {
    NamespaceIdent::from_vec(
        text.split('.')
            .map(crate::lake::layout::segment_name)
            .collect(),
    )
}

/// One row of the catalog.
#[derive(Debug, Clone)]
pub struct CatalogEntry {
    pub ident: TableIdent,
    pub metadata_location: String,
}

pub struct IcebergCatalog {
    location: CatalogLocation,
    pool: AnyPool,
    buckets: Buckets,
    file_io: FileIO,
}

/// Held while one writer works on the catalog's tables (see [`IcebergCatalog::lock`]).
pub enum CatalogLock {
    File(std::fs::File),
    /// A connection holding a session advisory lock; closing it releases the lock.
    Session(Option<PoolConnection<Any>>),
}

impl Drop for CatalogLock {
    fn drop(&mut self) {
        if let CatalogLock::Session(connection) = self
            && let Some(connection) = connection.take()
        {
            // Detached, the connection closes instead of returning (locked) to the pool.
            drop(connection.detach());
        }
    }
}

/// The advisory lock key of curation on a PostgreSQL catalog ("tributar" in ASCII).
const ADVISORY_LOCK: i64 = 0x7472_6962_7574_6172;

impl IcebergCatalog {
    /// Opens the catalog, creating the SQLite file and the catalog's tables if absent. Its
    /// tables' files are local or in `buckets`.
    pub async fn open(
        location: &CatalogLocation,
        buckets: Buckets,
    ) -> Result<Self, IcebergCatalogError> {
        sqlx::any::install_default_drivers();
        let url = match location {
            // Absolute: sqlx parses the URL, and `sqlite://dir/../x.db` would make `dir` a
            // host and the file `/x.db`.
            CatalogLocation::Sqlite(path) => format!(
                "sqlite://{}?mode=rwc",
                std::path::absolute(path).unwrap_or(path.clone()).display()
            ),
            CatalogLocation::Postgres(url) => {
                // Checked again here: a location may come from elsewhere than a validated
                // workspace file, and the driver would log unknown parameters' values.
                if let Some(place) = crate::secret::url_password(url) {
                    return Err(IcebergCatalogError::PasswordInUrl {
                        location: location.to_string(),
                        place,
                    });
                }
                url.clone()
            }
        };
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .after_connect(|connection, _| {
                Box::pin(async move {
                    if connection.backend_name() == "SQLite" {
                        // Readers (pyiceberg, the app) go on reading while a commit writes.
                        sqlx::raw_sql("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 30000")
                            .execute(connection)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(|source| IcebergCatalogError::Open {
                location: location.to_string(),
                source,
            })?;
        let catalog = IcebergCatalog {
            location: location.clone(),
            pool,
            file_io: buckets.file_io(),
            buckets,
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

    pub fn location(&self) -> &CatalogLocation {
        &self.location
    }

    pub fn file_io(&self) -> &FileIO {
        &self.file_io
    }

    /// The S3 buckets the tables' files may be in, for SQL sessions over them.
    pub fn buckets(&self) -> &Buckets {
        &self.buckets
    }

    fn db_error(&self, source: sqlx::Error) -> IcebergCatalogError {
        IcebergCatalogError::Database {
            location: self.location.to_string(),
            source,
        }
    }

    /// Takes the catalog's writer lock, or says who holds it: a lock file beside a SQLite
    /// catalog, a session advisory lock in a PostgreSQL one (so curates on two machines
    /// sharing it also take turns). Writers clean up each other's unreferenced files, so
    /// only one may run at a time.
    pub async fn lock(&self) -> Result<CatalogLock, IcebergCatalogError> {
        match &self.location {
            CatalogLocation::Sqlite(path) => {
                let mut lock = path.as_os_str().to_owned();
                lock.push(".lock");
                let lock = PathBuf::from(lock);
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock)
                    .map_err(|source| IcebergCatalogError::Lock {
                        path: lock.clone(),
                        source,
                    })?;
                use std::os::fd::AsRawFd;
                // SAFETY: flock on a descriptor this function owns; released when it closes.
                let taken =
                    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
                if !taken {
                    return Err(IcebergCatalogError::Busy {
                        lock: lock.display().to_string(),
                    });
                }
                Ok(CatalogLock::File(file))
            }
            CatalogLocation::Postgres(_) => {
                let mut connection = self.pool.acquire().await.map_err(|e| self.db_error(e))?;
                let (taken,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
                    .bind(ADVISORY_LOCK)
                    .fetch_one(&mut *connection)
                    .await
                    .map_err(|e| self.db_error(e))?;
                if !taken {
                    return Err(IcebergCatalogError::Busy {
                        lock: format!("the advisory lock {ADVISORY_LOCK} in {}", self.location),
                    });
                }
                Ok(CatalogLock::Session(Some(connection)))
            }
        }
    }

    /// Creates the namespace and its parents if absent (a namespace exists when it has a
    /// property row; `exists = true` is the marker pyiceberg writes too).
    pub async fn ensure_namespace(&self, ns: &NamespaceIdent) -> Result<(), IcebergCatalogError> {
        let levels: Vec<String> = ns.clone().inner();
        for depth in 1..=levels.len() {
            sqlx::query(
                "INSERT INTO iceberg_namespace_properties
                 (catalog_name, namespace, property_key, property_value)
                 VALUES ($1, $2, 'exists', 'true') ON CONFLICT DO NOTHING",
            )
            .bind(CATALOG_NAME)
            .bind(levels_text(&levels[..depth]))
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
                let ns = namespace_from_text(&ns);
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
        .bind(namespace_text(ident.namespace()))
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
        .bind(namespace_text(ident.namespace()))
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
        .bind(namespace_text(ident.namespace()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_read_back_whatever_their_levels_hold() {
        for levels in [
            vec!["shop", "public"],
            vec!["shop", "a.b"],
            vec!["my.src", "."],
            vec!["s", ".."],
            vec!["s", " "],
            vec!["s", ""],
            vec!["s", "100%"],
            vec!["s", "%2E"],
        ] {
            let ns = NamespaceIdent::from_strs(&levels).unwrap();
            let text = namespace_text(&ns);
            assert_eq!(text.split('.').count(), levels.len(), "{text}");
            assert_eq!(namespace_from_text(&text).unwrap(), ns, "{text}");
        }
        let plain = NamespaceIdent::from_strs(["shop", "public"]).unwrap();
        assert_eq!(namespace_text(&plain), "shop.public");
    }

    #[tokio::test]
    async fn a_relative_sqlite_path_through_a_parent_folder_opens_there() {
        let dir = tempfile::tempdir_in(".").unwrap();
        let name = dir.path().file_name().unwrap().to_string_lossy();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let location = CatalogLocation::Sqlite(PathBuf::from(format!("{name}/sub/../catalog.db")));
        let catalog = IcebergCatalog::open(&location, Buckets::default())
            .await
            .unwrap();
        assert!(catalog.list().await.unwrap().is_empty());
        assert!(dir.path().join("catalog.db").exists());
    }

    #[tokio::test]
    async fn a_password_in_a_postgresql_catalog_url_is_refused_and_never_shown() {
        let url = "postgresql://u@127.0.0.1:1/cat?sslmode=disable&PASSWORD=hunter2";
        let location = CatalogLocation::parse(url, Path::new("/ws"));
        assert!(matches!(location, CatalogLocation::Postgres(_)));
        assert!(!location.to_string().contains("hunter2"), "{location}");
        let Err(err) = IcebergCatalog::open(&location, Buckets::default()).await else {
            panic!("a password in the URL must be refused before connecting");
        };
        let text = err.to_string();
        assert!(
            matches!(err, IcebergCatalogError::PasswordInUrl { .. }),
            "{text}"
        );
        assert!(
            !text.contains("hunter2") && text.contains("PGPASSWORD"),
            "{text}"
        );
        assert!(matches!(
            CatalogLocation::parse("PostgreSQL://u@db/cat", Path::new("/ws")),
            CatalogLocation::Postgres(_)
        ));
    }
}
