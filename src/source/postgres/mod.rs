//! PostgreSQL source: discovery from the catalog, an exported snapshot shared by all
//! readers, and ranged binary COPY decoded straight into Arrow.
//!
//! Large tables are split by heap page (`ctid` ranges, a TID range scan since PostgreSQL 14),
//! which works for every table, with or without a primary key, and reads each page once.
//! Partitioned tables load as their leaf partitions (each is a table of its own).

pub mod copy_binary;
pub mod pgoutput;
pub mod replication;
pub mod transport;
pub mod types;

use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::{Field, Schema};
use futures::StreamExt;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{Connection, Executor, Row};
use tokio::sync::{Mutex, mpsc};

use self::copy_binary::CopyBinaryDecoder;
use self::types::{Kind, scalar_kind};
use super::{
    CheckResult, ColumnInfo, SelectionRules, Snapshot, Source, SourceError, SourceIdentity,
    TableInfo, TableRange,
};
use crate::config::EndpointConfig;
use crate::source::position::{SourcePosition, parse_lsn};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Session settings of every connection, so values read as text (types without a Parquet
/// mapping in the full load, every value in CDC) are formatted the same way everywhere.
pub const SESSION_SETTINGS: [(&str, &str); 5] = [
    ("DateStyle", "ISO"),
    ("IntervalStyle", "postgres"),
    ("TimeZone", "UTC"),
    ("bytea_output", "hex"),
    ("extra_float_digits", "1"),
];

/// Connection settings of a PostgreSQL endpoint, its password resolved
/// ([`crate::config::EndpointConfig::resolve`]).
#[derive(Clone)]
pub struct PgEndpoint {
    pub name: String,
    pub host: String,
    /// Where to connect instead of `host` (libpq's `hostaddr`); TLS still verifies `host`.
    pub hostaddr: Option<String>,
    pub port: u16,
    pub database: String,
    pub user: String,
    /// Where the password comes from, to say so when it is refused.
    password_hint: String,
    password: Option<String>,
    /// `sslmode` and its files ([`crate::tls`]), applied by [`transport`].
    tls: Arc<crate::tls::TlsOptions>,
    /// What the last connection negotiated, for `check`.
    last_tls: Arc<std::sync::Mutex<Option<crate::tls::Negotiated>>>,
}

/// Where a client connects: the server itself (plain) or a relay of our TLS connection.
pub struct Via {
    pub host: String,
    pub port: u16,
    /// The relay's end: both sides closed ([`transport::Relayed::done`]).
    pub done: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl std::fmt::Debug for PgEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password is deliberately left out.
        write!(
            f,
            "postgres://{}@{}:{}/{}",
            self.user, self.host, self.port, self.database
        )
    }
}

impl PgEndpoint {
    pub fn from_config(e: &EndpointConfig, password: Option<String>) -> Self {
        PgEndpoint {
            name: e.name.clone(),
            host: e.host.clone().unwrap_or_else(|| "127.0.0.1".into()),
            hostaddr: e.hostaddr.clone(),
            port: e.port.unwrap_or(5432),
            database: e.database.clone().unwrap_or_else(|| "postgres".into()),
            user: e.user.clone().unwrap_or_else(|| "postgres".into()),
            password_hint: e.password_hint(),
            password,
            tls: Arc::new(crate::tls::TlsOptions::from_endpoint(e, true)),
            last_tls: Arc::default(),
        }
    }

    /// What the last connection negotiated (TLS version, what was verified), if any.
    pub fn last_tls(&self) -> Option<crate::tls::Negotiated> {
        self.last_tls.lock().ok().and_then(|t| t.clone())
    }

    /// Opens the stream under a new connection as `sslmode` says ([`transport::open`]) and
    /// says where the client should connect.
    pub async fn via(&self) -> Result<Via, SourceError> {
        let target = transport::Target {
            endpoint: &self.name,
            host: &self.host,
            addr: self.hostaddr.as_deref(),
            port: self.port,
            tls: &self.tls,
        };
        let (up, negotiated) = transport::open(&target, CONNECT_TIMEOUT).await?;
        if let Ok(mut last) = self.last_tls.lock() {
            *last = Some(negotiated);
        }
        match up {
            transport::Upstream::Plain => Ok(Via {
                host: self.hostaddr.clone().unwrap_or_else(|| self.host.clone()),
                port: self.port,
                done: None,
            }),
            transport::Upstream::Tls(tls) => {
                let r = transport::relay(tls, CONNECT_TIMEOUT).await.map_err(|e| {
                    SourceError::Driver {
                        endpoint: self.name.clone(),
                        context: "opening a local socket for the TLS connection".into(),
                        source: Box::new(e),
                    }
                })?;
                Ok(Via {
                    host: r.dir.display().to_string(),
                    port: r.port,
                    done: Some(r.done),
                })
            }
        }
    }

    /// sqlx's options for a connection through `via`; TLS is ours, so sqlx's is off (and
    /// PGSSLMODE and friends from the environment are ignored).
    fn options(&self, via: &Via) -> PgConnectOptions {
        let mut o = PgConnectOptions::new()
            .host(&via.host)
            .port(via.port)
            .ssl_mode(PgSslMode::Disable)
            .username(&self.user)
            .database(&self.database)
            .application_name("tributary")
            .options(SESSION_SETTINGS);
        if let Some(p) = &self.password {
            o = o.password(p);
        }
        o
    }

    pub async fn connect(&self) -> Result<PgConnection, SourceError> {
        let connect = async {
            let via = self.via().await?;
            PgConnection::connect_with(&self.options(&via))
                .await
                .map_err(|e| self.classify(e, "connecting"))
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(r) => r,
            Err(_) => Err(SourceError::Unreachable {
                endpoint: self.name.clone(),
                host: self.host.clone(),
                port: self.port,
                reason: format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
            }),
        }
    }

    /// A WAL location the server printed while `context`, or an error that says what came
    /// instead.
    pub fn lsn(&self, context: &str, text: &str) -> Result<u64, SourceError> {
        parse_lsn(text).ok_or_else(|| SourceError::Database {
            endpoint: self.name.clone(),
            context: context.to_owned(),
            message: format!("the server returned {text:?}, not an LSN"),
        })
    }

    /// Turns a driver error into one that says what is wrong and how to fix it.
    pub fn classify(&self, e: sqlx::Error, context: &str) -> SourceError {
        let endpoint = self.name.clone();
        match &e {
            sqlx::Error::Io(io) => SourceError::Unreachable {
                endpoint,
                host: self.host.clone(),
                port: self.port,
                reason: io.to_string(),
            },
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.to_string()).unwrap_or_default();
                match code.as_str() {
                    "28P01" => SourceError::Authentication {
                        endpoint,
                        user: self.user.clone(),
                        hint: self.password_hint.clone(),
                    },
                    // pg_hba.conf had no line for this client; whether the connection was
                    // encrypted decides which lines apply (host, hostssl, hostnossl).
                    "28000" if db.message().ends_with("no encryption") => {
                        SourceError::Authentication {
                            endpoint,
                            user: self.user.clone(),
                            hint: format!(
                                "The server refused this unencrypted connection ({}): allow it \
                                 in pg_hba.conf, or, if the server accepts only encrypted \
                                 connections (hostssl lines, rds.force_ssl), set sslmode = \
                                 \"verify-full\" with sslrootcert",
                                db.message()
                            ),
                        }
                    }
                    "28000" => SourceError::Authentication {
                        endpoint,
                        user: self.user.clone(),
                        hint: format!(
                            "The server refused this client ({}): allow it in pg_hba.conf",
                            db.message()
                        ),
                    },
                    "3D000" => SourceError::MissingDatabase {
                        endpoint,
                        database: self.database.clone(),
                    },
                    "42501" => SourceError::PermissionDenied {
                        endpoint,
                        context: format!(" while {context}"),
                        message: db.message().to_string(),
                        fix: format!("GRANT SELECT on the task's tables to {}", self.user),
                    },
                    _ => SourceError::Database {
                        endpoint,
                        context: context.to_string(),
                        message: format!("{} (SQLSTATE {code})", db.message()),
                    },
                }
            }
            _ => SourceError::Driver {
                endpoint,
                context: context.to_string(),
                source: Box::new(e),
            },
        }
    }
}

/// What [`PostgresSource::read_range`] needs, computed once at discovery.
struct PgReadPlan {
    kinds: Vec<Kind>,
    /// `"a", "b"::text, …`: the SELECT list, with unmapped types cast to text.
    select_list: String,
    block_size: u64,
}

pub struct PostgresSource {
    endpoint: PgEndpoint,
    /// The connection whose transaction exported the snapshot; it must stay open while
    /// readers import the snapshot.
    snapshot_holder: Mutex<Option<PgConnection>>,
    /// A snapshot exported by the task's replication slot, used instead of a new one.
    slot_snapshot: Option<Snapshot>,
}

impl PostgresSource {
    pub fn new(endpoint: PgEndpoint) -> Self {
        PostgresSource {
            endpoint,
            snapshot_holder: Mutex::new(None),
            slot_snapshot: None,
        }
    }

    /// Reads the full load from `snapshot`, exported when the replication slot was created
    /// (its holder must stay open until the load ends), so CDC starts exactly where it ends.
    pub fn with_slot_snapshot(mut self, snapshot: Snapshot) -> Self {
        self.slot_snapshot = Some(snapshot);
        self
    }

    pub fn pg(&self) -> &PgEndpoint {
        &self.endpoint
    }

    async fn fetch_checks(&self, conn: &mut PgConnection) -> Result<Vec<CheckResult>, sqlx::Error> {
        let mut checks = Vec::new();
        let row = sqlx::query(
            "SELECT current_setting('server_version'), current_setting('wal_level'), \
             current_setting('max_replication_slots')::int4, \
             (SELECT count(*)::int4 FROM pg_replication_slots), \
             (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)",
        )
        .fetch_one(&mut *conn)
        .await?;
        let version: String = row.try_get(0)?;
        let wal_level: String = row.try_get(1)?;
        let max_slots: i32 = row.try_get(2)?;
        let used_slots: i32 = row.try_get(3)?;
        let replication: Option<bool> = row.try_get(4)?;
        checks.push(CheckResult::pass(
            "connect",
            format!(
                "connected to PostgreSQL {version} at {}:{} as {}",
                self.endpoint.host, self.endpoint.port, self.endpoint.user
            ),
        ));
        checks.push(if wal_level == "logical" {
            CheckResult::pass("wal_level", "wal_level = logical".into())
        } else {
            CheckResult::warn(
                "wal_level",
                format!("wal_level = {wal_level}: full load works, CDC needs logical"),
                "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL".into(),
            )
        });
        checks.push(if used_slots < max_slots {
            CheckResult::pass(
                "replication slots",
                format!("{used_slots} of max_replication_slots = {max_slots} in use"),
            )
        } else {
            CheckResult::warn(
                "replication slots",
                format!("all {max_slots} replication slots are in use: CDC cannot create one"),
                "raise max_replication_slots (restart) or drop an unused slot with pg_drop_replication_slot()".into(),
            )
        });
        checks.push(if replication == Some(true) {
            CheckResult::pass(
                "replication privilege",
                format!("{} may replicate", self.endpoint.user),
            )
        } else {
            CheckResult::warn(
                "replication privilege",
                format!(
                    "{} has no REPLICATION attribute: full load works, CDC does not",
                    self.endpoint.user
                ),
                format!("ALTER ROLE {} WITH REPLICATION", self.endpoint.user),
            )
        });
        checks.extend(self.table_checks(conn).await?);
        checks.extend(self.slot_checks(conn).await?);
        Ok(checks)
    }

    /// Tables without a primary key, and what each table's replica identity lets the
    /// change stream carry.
    async fn table_checks(&self, conn: &mut PgConnection) -> Result<Vec<CheckResult>, sqlx::Error> {
        let mut checks = Vec::new();
        let no_pk: Vec<String> = sqlx::query_scalar(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname NOT LIKE 'pg_toast%' \
               AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) \
             ORDER BY 1 LIMIT 20",
        )
        .fetch_all(&mut *conn)
        .await?;
        checks.push(if no_pk.is_empty() {
            CheckResult::pass("primary keys", "every table has a primary key".into())
        } else {
            CheckResult::warn(
                "primary keys",
                format!(
                    "tables without a primary key (loaded, but CDC needs a replica identity): {}",
                    no_pk.join(", ")
                ),
                "add a primary key, or ALTER TABLE … REPLICA IDENTITY FULL".into(),
            )
        });

        let identities: Vec<(String, String, bool)> = sqlx::query_as(
            "SELECT n.nspname || '.' || c.relname, c.relreplident::text, \
                    EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 \
                            AND NOT a.attisdropped AND a.attstorage IN ('x', 'e')) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1",
        )
        .fetch_all(&mut *conn)
        .await?;
        let nothing: Vec<&str> = identities
            .iter()
            .filter(|(_, ident, _)| ident == "n")
            .map(|(t, _, _)| t.as_str())
            .collect();
        if !nothing.is_empty() {
            checks.push(CheckResult::warn(
                "replica identity",
                format!(
                    "REPLICA IDENTITY NOTHING: updates and deletes of {} cannot be captured",
                    list_some(&nothing)
                ),
                "ALTER TABLE … REPLICA IDENTITY FULL (or DEFAULT with a primary key)".into(),
            ));
        }
        let toast: Vec<&str> = identities
            .iter()
            .filter(|(_, ident, toastable)| *toastable && ident != "f" && ident != "n")
            .map(|(t, _, _)| t.as_str())
            .collect();
        checks.push(if toast.is_empty() {
            CheckResult::pass(
                "TOAST and replica identity",
                "every table with TOASTable columns has REPLICA IDENTITY FULL".into(),
            )
        } else {
            CheckResult::warn(
                "TOAST and replica identity",
                format!(
                    "{} have TOASTable columns without REPLICA IDENTITY FULL: an UPDATE that leaves \
                     a large value unchanged does not carry it, so CDC recovers it from its own \
                     rows or by a lookup in the raw zone, which costs time on large tables",
                    list_some(&toast)
                ),
                "ALTER TABLE … REPLICA IDENTITY FULL on tables whose large text/bytea/json values \
                 can exceed 2 kB and are often left unchanged by updates"
                    .into(),
            )
        });
        Ok(checks)
    }

    /// This tool's replication slots of the endpoint's database and what they hold back
    /// (a cluster's other databases have their own).
    async fn slot_checks(&self, conn: &mut PgConnection) -> Result<Vec<CheckResult>, sqlx::Error> {
        let mut checks = Vec::new();
        let slots: Vec<(String, bool, i64)> = sqlx::query_as(
            "SELECT slot_name::text, active, \
                    COALESCE(pg_current_wal_lsn() - restart_lsn, 0)::int8 \
             FROM pg_replication_slots \
             WHERE slot_name LIKE 'tributary%' AND database = current_database() ORDER BY 1",
        )
        .fetch_all(&mut *conn)
        .await?;
        for (slot, active, retained) in slots {
            let detail = format!(
                "slot {slot} is {} and holds {} MB of WAL",
                if active { "streaming" } else { "idle" },
                retained / 1_048_576
            );
            checks.push(if !active && retained > 1024 * 1_048_576 {
                CheckResult::warn(
                    "replication slot",
                    detail,
                    format!("run the task that owns {slot}, or delete it: tributary delete-task WORKSPACE --task NAME"),
                )
            } else {
                CheckResult::pass("replication slot", detail)
            });
        }
        Ok(checks)
    }
}

const DISCOVER_SQL: &str = "
SELECT n.nspname::text, c.relname::text,
       pg_relation_size(c.oid)::int8,
       GREATEST(c.reltuples, 0)::int8,
       a.attname::text,
       format_type(a.atttypid, a.atttypmod),
       NOT a.attnotnull,
       bt.oid::int8,
       (CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END)::int4,
       bt.typtype::text,
       COALESCE(et.oid::int8, 0),
       COALESCE(et.typtype::text, ''),
       current_setting('block_size')::int8,
       COALESCE((SELECT k.ord FROM pg_index i, unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
                   WHERE i.indrelid = c.oid AND i.indisprimary AND k.attnum = a.attnum), 0)::int4,
       c.oid::int8,
       a.attnum::int4
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
LEFT JOIN pg_type et ON et.oid = bt.typelem AND bt.typcategory = 'A' AND bt.typlen = -1
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
ORDER BY n.nspname, c.relname, a.attnum";

/// Up to 10 names, then how many more.
fn list_some(names: &[&str]) -> String {
    let mut text = names
        .iter()
        .take(10)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > 10 {
        text.push_str(&format!(" and {} more", names.len() - 10));
    }
    text
}

/// The decode kind of a column from its catalog facts (base type of a domain, element type
/// of an array), or `None` when it is read as text.
fn kind_of(
    base_oid: i64,
    typmod: i32,
    typtype: &str,
    elem_oid: i64,
    elem_typtype: &str,
) -> Option<Kind> {
    if elem_oid != 0 {
        scalar_kind(elem_oid as u32, typmod, elem_typtype == "e").map(|k| Kind::List(Box::new(k)))
    } else {
        scalar_kind(base_oid as u32, typmod, typtype == "e")
    }
}

/// The type facts [`kind_of`] needs, for one type OID and typmod (as pgoutput gives them).
const TYPE_SQL: &str = "
SELECT bt.oid::int8,
       (CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE $2 END)::int4,
       bt.typtype::text,
       COALESCE(et.oid::int8, 0),
       COALESCE(et.typtype::text, ''),
       format_type($1::oid, $2)
FROM pg_type t
JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
LEFT JOIN pg_type et ON et.oid = bt.typelem AND bt.typcategory = 'A' AND bt.typlen = -1
WHERE t.oid = $1::oid";

impl PgEndpoint {
    /// The decode kind of a column of type `oid` with `typmod` (`None`: read as text), and the
    /// type's name, e.g. `numeric(12,2)`.
    pub async fn type_kind(
        &self,
        conn: &mut PgConnection,
        oid: u32,
        typmod: i32,
    ) -> Result<(Option<Kind>, String), SourceError> {
        let row = sqlx::query(TYPE_SQL)
            .bind(oid as i64)
            .bind(typmod)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| self.classify(e, &format!("looking up type {oid}")))?;
        let get = |e| self.classify(e, "reading pg_type");
        let base_oid: i64 = row.try_get(0).map_err(get)?;
        let typmod: i32 = row.try_get(1).map_err(get)?;
        let typtype: String = row.try_get(2).map_err(get)?;
        let elem_oid: i64 = row.try_get(3).map_err(get)?;
        let elem_typtype: String = row.try_get(4).map_err(get)?;
        let name: String = row.try_get(5).map_err(get)?;
        Ok((
            kind_of(base_oid, typmod, &typtype, elem_oid, &elem_typtype),
            name,
        ))
    }
}

/// A live column of a table as the catalog has it now, with what rows that lack it
/// physically read for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogColumn {
    pub name: String,
    /// The column's number (`attnum`): kept when it is renamed, never given out again.
    pub number: i32,
    /// A generated column (`GENERATED ALWAYS AS … STORED`), which pgoutput leaves out
    /// unless the publication publishes generated columns.
    pub generated: bool,
    pub type_oid: u32,
    pub typmod: i32,
    /// The fast default (`pg_attribute.attmissingval`, in the type's text form): rows
    /// written before the column was added read it. Set once by the ADD COLUMN and never
    /// changed by a later `SET DEFAULT`; cleared by any rewrite of the table.
    pub missing: Option<String>,
    /// Whether values of rows older than the column could be anything but `missing` or
    /// NULL: the column has a default, is an identity or generated column, or is of a
    /// domain type (whose default or constraints make ADD COLUMN rewrite the table).
    pub may_be_rewritten: bool,
}

const COLUMNS_SQL: &str = "SELECT a.attname::text, a.atttypid::int8, a.atttypmod, \
     CASE WHEN a.atthasmissing THEN array_to_string(a.attmissingval, '') END, \
     a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '' OR t.typtype = 'd', \
     a.attnum::int4, a.attgenerated <> '' \
     FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
     WHERE a.attrelid = $1::int8::oid AND a.attnum > 0 AND NOT a.attisdropped \
     ORDER BY a.attnum";

impl PgEndpoint {
    /// The live columns of relation `relid`, in order, with their fast defaults.
    pub async fn catalog_columns(
        &self,
        conn: &mut PgConnection,
        relid: u32,
    ) -> Result<Vec<CatalogColumn>, SourceError> {
        let context = format!("reading the columns of relation {relid}");
        let rows = sqlx::query(COLUMNS_SQL)
            .bind(i64::from(relid))
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| self.classify(e, &context))?;
        let get = |e| self.classify(e, &context);
        rows.iter()
            .map(|row| {
                let oid: i64 = row.try_get(1).map_err(get)?;
                Ok(CatalogColumn {
                    name: row.try_get(0).map_err(get)?,
                    type_oid: u32::try_from(oid).unwrap_or(0),
                    typmod: row.try_get(2).map_err(get)?,
                    missing: row.try_get(3).map_err(get)?,
                    may_be_rewritten: row.try_get(4).map_err(get)?,
                    number: row.try_get(5).map_err(get)?,
                    generated: row.try_get(6).map_err(get)?,
                })
            })
            .collect()
    }
}

pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `schema.table` as PostgreSQL reads it: each part plain when it is a simple lower-case
/// name, else quoted, so the SQL in a message can be pasted as it is.
pub fn sql_table_name(table: &crate::ident::TableId) -> String {
    let part = |p: &str| {
        let simple = p.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if simple { p.to_owned() } else { quote_ident(p) }
    };
    format!("{}.{}", part(&table.schema), part(&table.table))
}

impl Source for PostgresSource {
    fn endpoint(&self) -> &str {
        &self.endpoint.name
    }

    async fn check(&self) -> Vec<CheckResult> {
        let mut conn = match self.endpoint.connect().await {
            Ok(c) => c,
            Err(e) => return vec![CheckResult::fail_from("connect", &e)],
        };
        let mut result = match self.fetch_checks(&mut conn).await {
            Ok(checks) => checks,
            Err(e) => vec![CheckResult::fail_from(
                "catalog",
                &self.endpoint.classify(e, "reading server settings"),
            )],
        };
        // After the connection's own line.
        if let Some(tls) = self.endpoint.last_tls() {
            let at = result.len().min(1);
            result.insert(
                at,
                tls.check_result("every connection, replication included"),
            );
        }
        let _ = conn.close().await;
        result
    }

    async fn discover(&self, rules: &SelectionRules) -> Result<Vec<TableInfo>, SourceError> {
        let mut conn = self.endpoint.connect().await?;
        let rows = sqlx::query(DISCOVER_SQL)
            .fetch_all(&mut conn)
            .await
            .map_err(|e| self.endpoint.classify(e, "listing tables"))?;
        let _ = conn.close().await;

        struct Pending {
            schema: String,
            name: String,
            size: i64,
            est_rows: i64,
            block_size: i64,
            columns: Vec<ColumnInfo>,
            kinds: Vec<Kind>,
            key: Vec<(i32, String)>,
            identity: SourceIdentity,
        }
        let mut tables: Vec<Pending> = Vec::new();
        for row in rows {
            let get = |e: sqlx::Error| self.endpoint.classify(e, "reading the catalog");
            let schema: String = row.try_get(0).map_err(get)?;
            let name: String = row.try_get(1).map_err(get)?;
            if !rules.matches(&schema, &name) {
                continue;
            }
            let column: String = row.try_get(4).map_err(get)?;
            let source_type: String = row.try_get(5).map_err(get)?;
            let nullable: bool = row.try_get(6).map_err(get)?;
            let base_oid: i64 = row.try_get(7).map_err(get)?;
            let typmod: i32 = row.try_get(8).map_err(get)?;
            let typtype: String = row.try_get(9).map_err(get)?;
            let elem_oid: i64 = row.try_get(10).map_err(get)?;
            let elem_typtype: String = row.try_get(11).map_err(get)?;
            let key_position: i32 = row.try_get(13).map_err(get)?;
            let relation: i64 = row.try_get(14).map_err(get)?;
            let number: i32 = row.try_get(15).map_err(get)?;
            let kind = kind_of(base_oid, typmod, &typtype, elem_oid, &elem_typtype);
            let new_table = tables
                .last()
                .is_none_or(|t| t.schema != schema || t.name != name);
            if new_table {
                tables.push(Pending {
                    schema,
                    name,
                    size: row.try_get(2).map_err(get)?,
                    est_rows: row.try_get(3).map_err(get)?,
                    block_size: row.try_get(12).map_err(get)?,
                    columns: Vec::new(),
                    kinds: Vec::new(),
                    key: Vec::new(),
                    identity: SourceIdentity {
                        relation: u32::try_from(relation).unwrap_or(0),
                        columns: Vec::new(),
                    },
                });
            }
            let Some(t) = tables.last_mut() else { continue };
            if key_position > 0 {
                t.key.push((key_position, column.clone()));
            }
            t.columns.push(ColumnInfo {
                name: column,
                source_type,
                nullable,
                cast_to_text: kind.is_none(),
            });
            t.kinds.push(kind.unwrap_or(Kind::Text));
            t.identity.columns.push(number);
        }
        if tables.is_empty() {
            return Err(SourceError::NoTables {
                endpoint: self.endpoint.name.clone(),
                rules: rules.describe(),
            });
        }
        Ok(tables
            .into_iter()
            .map(|mut t| {
                t.key.sort();
                // Every field nullable, whatever the catalog says: see `TableInfo::arrow_schema`.
                let fields: Vec<Field> = t
                    .columns
                    .iter()
                    .zip(&t.kinds)
                    .map(|(c, k)| Field::new(&c.name, k.data_type(), true))
                    .collect();
                let select_list = t
                    .columns
                    .iter()
                    .map(|c| {
                        if c.cast_to_text {
                            format!("{}::text", quote_ident(&c.name))
                        } else {
                            quote_ident(&c.name)
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                TableInfo {
                    arrow_schema: Arc::new(Schema::new(fields)),
                    primary_key: t.key.into_iter().map(|(_, c)| c).collect(),
                    size_bytes: t.size.max(0) as u64,
                    estimated_rows: t.est_rows.max(0) as u64,
                    identity: Some(t.identity),
                    read_plan: Arc::new(PgReadPlan {
                        kinds: t.kinds,
                        select_list,
                        block_size: t.block_size.max(1) as u64,
                    }),
                    schema: t.schema,
                    name: t.name,
                    columns: t.columns,
                }
            })
            .collect())
    }

    fn plan_ranges(&self, table: &TableInfo, range_bytes: u64) -> Vec<TableRange> {
        let block_size = plan_of(table).block_size;
        let pages = table.size_bytes / block_size;
        let pages_per_range = (range_bytes / block_size).max(1);
        let count = pages.div_ceil(pages_per_range).max(1);
        (0..count)
            .map(|i| TableRange {
                index: i as u32,
                start: (i > 0).then_some(i * pages_per_range),
                // The last range is open so rows on pages added since the size was read
                // (visible in the snapshot if committed before it) are not missed.
                end: (i + 1 < count).then_some((i + 1) * pages_per_range),
            })
            .collect()
    }

    async fn open_snapshot(&self) -> Result<Snapshot, SourceError> {
        if let Some(snapshot) = &self.slot_snapshot {
            return Ok(snapshot.clone());
        }
        let mut conn = self.endpoint.connect().await?;
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(|e| {
                self.endpoint
                    .classify(e, "opening the snapshot transaction")
            })?;
        let row = sqlx::query(
            "SELECT pg_export_snapshot(), \
             (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text",
        )
        .fetch_one(&mut conn)
        .await
        .map_err(|e| self.endpoint.classify(e, "exporting a snapshot"))?;
        let snapshot = Snapshot {
            id: row
                .try_get(0)
                .map_err(|e| self.endpoint.classify(e, "exporting a snapshot"))?,
            position: Some(SourcePosition::Lsn(
                self.endpoint.lsn(
                    "reading the WAL position",
                    &row.try_get::<String, _>(1)
                        .map_err(|e| self.endpoint.classify(e, "reading the WAL position"))?,
                )?,
            )),
        };
        *self.snapshot_holder.lock().await = Some(conn);
        Ok(snapshot)
    }

    async fn release_snapshot(&self) {
        if let Some(mut conn) = self.snapshot_holder.lock().await.take() {
            let _ = conn.execute("COMMIT").await;
            let _ = conn.close().await;
        }
    }

    async fn read_range(
        &self,
        table: &TableInfo,
        range: &TableRange,
        snapshot: Option<&Snapshot>,
        out: mpsc::Sender<RecordBatch>,
    ) -> Result<u64, SourceError> {
        let plan = plan_of(table);
        let qualified = format!(
            "{}.{}",
            quote_ident(&table.schema),
            quote_ident(&table.name)
        );
        let context = format!("reading {}", table.qualified_name());
        let classify = |e: sqlx::Error| self.endpoint.classify(e, &context);

        let mut conn = self.endpoint.connect().await?;
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(classify)?;
        if let Some(s) = snapshot {
            let statement = format!("SET TRANSACTION SNAPSHOT '{}'", s.id.replace('\'', ""));
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut conn)
                .await
                .map_err(classify)?;
        }
        let mut filter = Vec::new();
        if let Some(start) = range.start {
            filter.push(format!("ctid >= '({start},0)'::tid"));
        }
        if let Some(end) = range.end {
            filter.push(format!("ctid < '({end},0)'::tid"));
        }
        let filter = if filter.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", filter.join(" AND "))
        };
        let statement = format!(
            "COPY (SELECT {} FROM ONLY {qualified}{filter}) TO STDOUT (FORMAT binary)",
            plan.select_list
        );

        let mut decoder = CopyBinaryDecoder::new(table.arrow_schema.clone(), &plan.kinds);
        let mut rows = 0u64;
        let mut ready = Vec::new();
        let decode_error = |e: copy_binary::DecodeError| SourceError::Decode {
            endpoint: self.endpoint.name.clone(),
            table: table.qualified_name(),
            column: e
                .column
                .and_then(|i| table.columns.get(i))
                .map(|c| c.name.clone())
                .unwrap_or_else(|| "(row framing)".into()),
            message: format!("{}{} of range {}", e.message, e.position(), range.index),
        };
        {
            let mut stream = conn.copy_out_raw(&statement).await.map_err(classify)?;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(classify)?;
                decoder
                    .feed(&chunk, &mut |b| ready.push(b))
                    .map_err(decode_error)?;
                for batch in ready.drain(..) {
                    rows += batch.num_rows() as u64;
                    if out.send(batch).await.is_err() {
                        // The writer stopped; it reports its own error.
                        return Ok(rows);
                    }
                }
            }
        }
        if let Some(batch) = decoder.finish().map_err(decode_error)? {
            rows += batch.num_rows() as u64;
            let _ = out.send(batch).await;
        }
        let _ = conn.execute("COMMIT").await;
        let _ = conn.close().await;
        Ok(rows)
    }
}

fn plan_of(table: &TableInfo) -> &PgReadPlan {
    table
        .read_plan
        .downcast_ref::<PgReadPlan>()
        .unwrap_or_else(|| {
            panic!(
                "table {} was not discovered by the PostgreSQL source",
                table.qualified_name()
            )
        })
}
