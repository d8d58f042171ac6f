//! MySQL and MariaDB source: discovery from `information_schema`, a consistent snapshot
//! shared by parallel readers, ranged reads by primary key, and the binlog ([`binlog`]).
//!
//! Invariants:
//! - every connection uses `utf8mb4` and the UTC time zone, so text and `timestamp` values
//!   read by the full load are the ones the binlog decodes to ([`types`]);
//! - all readers of one full load see the same snapshot: under `FLUSH TABLES WITH READ
//!   LOCK`, each opens `START TRANSACTION WITH CONSISTENT SNAPSHOT` and the binlog position
//!   is read before the lock is released. Without the RELOAD privilege (MariaDB only) one
//!   reader opens the snapshot alone and MariaDB reports its exact binlog position
//!   (`binlog_snapshot_file/position`);
//! - a table with a single integer primary key splits into key ranges; others read whole.

pub mod binlog;
pub mod ddl;
pub mod row_image;
pub mod types;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Value};
use tokio::sync::{Mutex, Semaphore, mpsc};

use self::types::{ColumnDecoder, Kind, RowBuilder};
use super::{
    CheckResult, CheckStatus, ColumnInfo, SelectionRules, Snapshot, Source, SourceError, TableInfo,
    TableRange,
};
use crate::config::EndpointConfig;
use crate::source::position::{BinlogPosition, SourcePosition};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Rows per record batch sent by a reader, or bytes, whichever comes first.
const BATCH_ROWS: usize = 8192;
const BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Schemas that hold the server's own tables, never replicated.
const SYSTEM_SCHEMAS: &str = "'mysql', 'information_schema', 'performance_schema', 'sys'";

/// Connection settings of a MySQL/MariaDB endpoint, its password resolved
/// ([`crate::config::EndpointConfig::resolve`]).
#[derive(Clone)]
pub struct MyEndpoint {
    pub name: String,
    pub host: String,
    /// Where to connect instead of `host` (libpq's `hostaddr`); TLS still verifies `host`.
    pub hostaddr: Option<String>,
    pub port: u16,
    /// The default database; tables of every schema can be selected.
    pub database: Option<String>,
    pub user: String,
    /// Where the password comes from, to say so when it is refused.
    password_hint: String,
    password: Option<String>,
    /// Whether the server offers TLS, learnt on the first connection (see [`Self::connect`]).
    tls: Arc<std::sync::OnceLock<bool>>,
    /// `sslmode` and its files, with libpq's meaning mapped to MySQL's modes
    /// ([`Self::ssl_opts`]).
    tls_options: Arc<crate::tls::TlsOptions>,
}

impl std::fmt::Debug for MyEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password is deliberately left out.
        write!(f, "mysql://{}@{}:{}", self.user, self.host, self.port)
    }
}

/// The binlog settings CDC depends on.
#[derive(Debug, Clone)]
pub struct BinlogSettings {
    pub version: String,
    pub mariadb: bool,
    pub log_bin: bool,
    pub format: String,
    pub row_image: String,
    pub row_metadata: String,
}

impl BinlogSettings {
    /// One check per setting; `Warn` rather than `Fail` because a full load needs none.
    pub fn checks(&self) -> Vec<CheckResult> {
        let binlog = if self.log_bin {
            CheckResult::pass("binlog", "the binary log is on".into())
        } else {
            CheckResult::warn(
                "binlog",
                "the binary log is off: full load works, CDC needs it".into(),
                format!("set log_bin = mysql-bin and server_id = 1 {RESTART}"),
            )
        };
        vec![
            binlog,
            setting_check("binlog_format", &self.format, "ROW", "", ""),
            setting_check(
                "binlog_row_image",
                &self.row_image,
                "FULL",
                " (whole rows before and after each change)",
                "",
            ),
            setting_check(
                "binlog_row_metadata",
                &self.row_metadata,
                "FULL",
                " (column names, signedness and charsets in the binlog, so every change is read with the schema it was written with)",
                " (MariaDB 10.5+, MySQL 8.0.1+)",
            ),
        ]
    }

    /// The first unmet CDC prerequisite, as an error.
    pub fn require_cdc(&self, endpoint: &str) -> Result<(), SourceError> {
        match self
            .checks()
            .into_iter()
            .find(|c| c.status != CheckStatus::Pass)
        {
            None => Ok(()),
            Some(c) => Err(SourceError::Database {
                endpoint: endpoint.into(),
                context: format!("checking {} for CDC", c.name),
                message: format!("{}. Fix: {}", c.detail, c.fix.unwrap_or_default()),
            }),
        }
    }
}

/// Where a server setting is made to last.
const RESTART: &str = "in the server's option file ([mysqld] section), then restart it";

/// The check that global variable `name` (now `value`, empty when the server has no such
/// variable) is `want`; `why` says what CDC needs it for, `since` which servers have it.
fn setting_check(name: &str, value: &str, want: &str, why: &str, since: &str) -> CheckResult {
    if value.eq_ignore_ascii_case(want) {
        return CheckResult::pass(name, format!("{name} = {want}"));
    }
    let value = if value.is_empty() {
        "unsupported"
    } else {
        value
    };
    CheckResult::warn(
        name,
        format!("{name} = {value}: CDC needs {want}{why}"),
        format!("SET GLOBAL {name} = '{want}', and set {name} = {want} {RESTART}{since}"),
    )
}

impl MyEndpoint {
    pub fn from_config(e: &EndpointConfig, password: Option<String>) -> Self {
        MyEndpoint {
            name: e.name.clone(),
            host: e.host.clone().unwrap_or_else(|| "127.0.0.1".into()),
            hostaddr: e.hostaddr.clone(),
            port: e.port.unwrap_or(3306),
            database: e.database.clone().filter(|d| !d.is_empty()),
            user: e.user.clone().unwrap_or_else(|| "root".into()),
            password_hint: e.password_hint(),
            password,
            tls: Arc::new(std::sync::OnceLock::new()),
            tls_options: Arc::new(crate::tls::TlsOptions::from_endpoint(e, false)),
        }
    }

    fn tls_policy(&self) -> Result<crate::tls::Policy, SourceError> {
        self.tls_options
            .policy()
            .map_err(|source| SourceError::TlsSetup {
                endpoint: self.name.clone(),
                source,
            })
    }

    /// MySQL's TLS settings for this endpoint's `sslmode`: `require` is REQUIRED (verified
    /// as VERIFY_CA when there is a root certificate, as in libpq), `verify-ca` VERIFY_CA,
    /// `verify-full` VERIFY_IDENTITY. Only the root certificate is trusted, never the
    /// built-in public roots.
    fn ssl_opts(&self, policy: crate::tls::Policy) -> Result<mysql_async::SslOpts, SourceError> {
        use crate::tls::Verification;
        let setup = |source| SourceError::TlsSetup {
            endpoint: self.name.clone(),
            source,
        };
        let mut ssl = mysql_async::SslOpts::default();
        let roots = match policy.verification {
            Verification::None => None,
            _ => self.tls_options.root_certificates().map_err(setup)?,
        };
        ssl = match roots {
            None => ssl
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true),
            // Each certificate as its own DER buffer (mysql_async reads a buffer that is not
            // PEM as one DER certificate).
            Some(ders) => ssl
                .with_root_certs(ders.into_iter().map(|c| c.to_vec().into()).collect())
                .with_disable_built_in_roots(true)
                .with_danger_skip_domain_validation(policy.verification == Verification::Chain),
        };
        if self.hostaddr.is_some() {
            // Connected by address: TLS checks the server's name all the same.
            ssl = ssl.with_danger_tls_hostname_override(Some(self.host.clone()));
        }
        if self.tls_options.identity().map_err(setup)?.is_some()
            && let (Some(cert), Some(key)) = (&self.tls_options.cert, &self.tls_options.key)
        {
            ssl = ssl.with_client_identity(Some(mysql_async::ClientIdentity::new(
                cert.clone().into(),
                key.clone().into(),
            )));
        }
        Ok(ssl)
    }

    fn opts(&self, ssl: Option<mysql_async::SslOpts>) -> Opts {
        OptsBuilder::default()
            .ssl_opts(ssl)
            .ip_or_hostname(self.hostaddr.clone().unwrap_or_else(|| self.host.clone()))
            .tcp_port(self.port)
            .prefer_socket(false)
            .user(Some(self.user.clone()))
            .pass(self.password.clone())
            .db_name(self.database.clone())
            .init(vec![
                "SET NAMES utf8mb4",
                "SET time_zone = '+00:00'",
                // Zero dates and the like are read as they are stored.
                "SET SESSION sql_mode = ''",
            ])
            .into()
    }

    /// The password, for tools run beside the task (the benchmark's reference client).
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// What `conn` negotiated, from the server's view of the session.
    pub async fn negotiated(&self, conn: &mut Conn) -> crate::tls::Negotiated {
        let version: Option<(String, String)> = conn
            .query_first("SHOW SESSION STATUS LIKE 'Ssl_version'")
            .await
            .ok()
            .flatten();
        match version.map(|(_, v)| v).filter(|v| !v.is_empty()) {
            Some(v) => crate::tls::Negotiated::Tls {
                version: v.replace("TLSv", "TLS "),
                verification: self
                    .tls_policy()
                    .map_or(crate::tls::Verification::None, |p| p.verification),
                host: self.host.clone(),
            },
            None => crate::tls::Negotiated::Plain {
                mode: self.tls_options.mode,
            },
        }
    }

    /// A connection, with TLS as `sslmode` says. Under `prefer` the first connection tries
    /// TLS and remembers whether the server has it, so later ones connect once.
    pub async fn connect(&self) -> Result<Conn, SourceError> {
        use crate::tls::Use;
        let policy = self.tls_policy()?;
        let ssl = match policy.tls {
            Use::Never => None,
            _ => Some(self.ssl_opts(policy)?),
        };
        let tls = ssl.is_some() && self.tls.get().copied().unwrap_or(true);
        let attempt = |tls: bool| {
            let ssl = if tls { ssl.clone() } else { None };
            tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(self.opts(ssl)))
        };
        let result = match attempt(tls).await {
            Ok(Err(mysql_async::Error::Driver(
                mysql_async::DriverError::NoClientSslFlagFromServer,
            ))) if policy.tls == Use::IfOffered => {
                let _ = self.tls.set(false);
                attempt(false).await
            }
            Ok(Ok(conn)) => {
                let _ = self.tls.set(tls);
                Ok(Ok(conn))
            }
            other => other,
        };
        match result {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(self.classify(e, "connecting")),
            Err(_) => Err(SourceError::Unreachable {
                endpoint: self.name.clone(),
                host: self.host.clone(),
                port: self.port,
                reason: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
            }),
        }
    }

    /// Whether connections go unencrypted: `sslmode = "disable"`, or a server that offered
    /// no TLS under `prefer`.
    fn connected_plain(&self) -> bool {
        self.tls_options.mode == crate::config::SslMode::Disable || self.tls.get() == Some(&false)
    }

    /// A TLS failure as [`SourceError::Tls`], when that is what `e` is.
    fn tls_failure(&self, e: &mysql_async::Error) -> Option<SourceError> {
        use mysql_async::{DriverError, Error, IoError, TlsError};
        let fail = |problem: String, fix: String| SourceError::Tls {
            endpoint: self.name.clone(),
            host: self.host.clone(),
            port: self.port,
            problem,
            fix,
        };
        let rustls = match e {
            Error::Io(IoError::Io(io)) => crate::tls::rustls_error(io),
            Error::Io(IoError::Tls(TlsError::Tls(e))) => Some(e),
            Error::Io(IoError::Tls(other)) => {
                return Some(fail(
                    format!("the TLS settings were refused ({other})"),
                    "check sslrootcert, sslcert and sslkey".into(),
                ));
            }
            Error::Driver(DriverError::NoClientSslFlagFromServer) => {
                return Some(fail(
                    "the server does not offer TLS".into(),
                    "enable TLS on the server (ssl_cert, ssl_key), or set sslmode = \"prefer\" \
                     to allow plain connections"
                        .into(),
                ));
            }
            Error::Server(s)
                if s.code == 3159
                    || s.message.contains("secure transport")
                    || s.message.contains("insecure transport") =>
            {
                return Some(fail(
                    "the server accepts only encrypted connections (require_secure_transport)"
                        .into(),
                    "set sslmode = \"verify-full\" with sslrootcert (or \"require\")".into(),
                ));
            }
            _ => None,
        }?;
        let (problem, fix) = crate::tls::explain(rustls, &self.host);
        Some(fail(problem, fix))
    }

    /// Turns a driver error into an error that says what to do.
    pub fn classify(&self, e: mysql_async::Error, context: &str) -> SourceError {
        if let Some(tls) = self.tls_failure(&e) {
            return tls;
        }
        let endpoint = self.name.clone();
        match &e {
            mysql_async::Error::Io(io) => SourceError::Unreachable {
                endpoint,
                host: self.host.clone(),
                port: self.port,
                reason: io.to_string(),
            },
            mysql_async::Error::Server(s) => match s.code {
                1045 => SourceError::Authentication {
                    endpoint,
                    user: self.user.clone(),
                    hint: format!(
                        "{}; and check that '{}' may connect from this host{}",
                        self.password_hint,
                        self.user,
                        if self.connected_plain() {
                            ". The connection was not encrypted: a server that accepts only \
                             encrypted connections (require_secure_transport = ON) answers a \
                             plain login this way, so set sslmode = \"verify-full\" with \
                             sslrootcert (or \"require\") if it does"
                        } else {
                            ""
                        }
                    ),
                },
                1049 => SourceError::MissingDatabase {
                    endpoint,
                    database: self.database.clone().unwrap_or_default(),
                },
                1044 | 1142 | 1143 | 1227 => SourceError::PermissionDenied {
                    endpoint,
                    context: format!(" while {context}"),
                    message: s.message.clone(),
                    fix: if context.contains("binlog") || context.contains("snapshot") {
                        format!(
                            "GRANT RELOAD, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{}' (MariaDB 10.5+: BINLOG MONITOR for REPLICATION CLIENT)",
                            self.user
                        )
                    } else {
                        format!("GRANT SELECT on the task's tables to '{}'", self.user)
                    },
                },
                code => SourceError::Database {
                    endpoint,
                    context: context.to_string(),
                    message: format!("{} (error {code})", s.message),
                },
            },
            _ => SourceError::Driver {
                endpoint,
                context: context.to_string(),
                source: Box::new(e),
            },
        }
    }

    pub async fn binlog_settings(&self, conn: &mut Conn) -> Result<BinlogSettings, SourceError> {
        let row: Option<(String, i64, String, String)> = conn
            .query_first("SELECT @@version, @@log_bin, @@binlog_format, @@binlog_row_image")
            .await
            .map_err(|e| self.classify(e, "reading binlog settings"))?;
        let Some((version, log_bin, format, row_image)) = row else {
            return Err(SourceError::Database {
                endpoint: self.name.clone(),
                context: "reading binlog settings".into(),
                message: "the server returned no settings".into(),
            });
        };
        // Older servers have no binlog_row_metadata at all.
        let row_metadata: Option<String> = conn
            .query_first("SELECT @@binlog_row_metadata")
            .await
            .unwrap_or(None);
        Ok(BinlogSettings {
            mariadb: version.to_ascii_lowercase().contains("mariadb"),
            version,
            log_bin: log_bin == 1,
            format,
            row_image,
            row_metadata: row_metadata.unwrap_or_default(),
        })
    }

    /// The server's current binlog end (`SHOW MASTER STATUS`), `None` with the binlog off.
    pub async fn current_position(
        &self,
        conn: &mut Conn,
    ) -> Result<Option<BinlogPosition>, SourceError> {
        // MySQL 8.4 renamed SHOW MASTER STATUS; MariaDB and older MySQL know only that.
        let row: Option<mysql_async::Row> = match conn.query_first("SHOW BINARY LOG STATUS").await {
            Ok(row) => row,
            Err(_) => conn.query_first("SHOW MASTER STATUS").await.map_err(|e| {
                self.classify(e, "reading the binlog position (SHOW MASTER STATUS)")
            })?,
        };
        let Some(row) = row else {
            return Ok(None);
        };
        let file: Option<String> = row.get(0);
        let pos: Option<u64> = row.get(1);
        let gtid = self.gtid_position(conn).await?;
        Ok(file
            .zip(pos)
            .map(|(file, pos)| BinlogPosition { file, pos, gtid }))
    }

    /// The GTID position of everything binlogged so far (MariaDB `gtid_binlog_pos`, MySQL
    /// `gtid_executed`), if the server uses GTIDs.
    pub async fn gtid_position(&self, conn: &mut Conn) -> Result<Option<String>, SourceError> {
        let mariadb: Option<String> = conn
            .query_first("SELECT @@gtid_binlog_pos")
            .await
            .unwrap_or(None);
        let gtid = match mariadb {
            Some(g) => Some(g),
            None => conn
                .query_first("SELECT @@gtid_executed")
                .await
                .unwrap_or(None),
        };
        Ok(gtid.filter(|g| !g.trim().is_empty()))
    }

    /// The binlog files the server still has, oldest first.
    pub async fn binlog_files(&self, conn: &mut Conn) -> Result<Vec<String>, SourceError> {
        let rows: Vec<mysql_async::Row> = conn
            .query("SHOW BINARY LOGS")
            .await
            .map_err(|e| self.classify(e, "listing binlog files (SHOW BINARY LOGS)"))?;
        Ok(rows.iter().filter_map(|r| r.get::<String, _>(0)).collect())
    }

    /// Whether the user holds the replication grants, read from `SHOW GRANTS`.
    async fn replication_grants(&self, conn: &mut Conn) -> Result<(bool, bool), SourceError> {
        let grants: Vec<String> = conn
            .query("SHOW GRANTS")
            .await
            .map_err(|e| self.classify(e, "reading grants"))?;
        let global: Vec<String> = grants
            .iter()
            .filter(|g| g.contains(" ON *.* "))
            .map(|g| g.to_ascii_uppercase())
            .collect();
        let has = |names: &[&str]| {
            global
                .iter()
                .any(|g| g.contains("ALL PRIVILEGES") || names.iter().any(|n| g.contains(n)))
        };
        Ok((
            has(&["REPLICATION SLAVE"]),
            has(&["REPLICATION CLIENT", "BINLOG MONITOR", "SUPER"]),
        ))
    }

    /// CDC's grants as checks (`Warn`: a full load needs neither).
    pub async fn grant_checks(&self, conn: &mut Conn) -> Result<Vec<CheckResult>, SourceError> {
        let (slave, client) = self.replication_grants(conn).await?;
        let mut checks = Vec::new();
        for (name, ok, grant) in [
            ("REPLICATION SLAVE", slave, "REPLICATION SLAVE"),
            (
                "REPLICATION CLIENT",
                client,
                "REPLICATION CLIENT (MariaDB 10.5+: BINLOG MONITOR)",
            ),
        ] {
            checks.push(if ok {
                CheckResult::pass(name, format!("'{}' holds {name}", self.user))
            } else {
                CheckResult::warn(
                    name,
                    format!(
                        "'{}' lacks {name}: full load works, CDC does not",
                        self.user
                    ),
                    format!("GRANT {grant} ON *.* TO '{}'", self.user),
                )
            });
        }
        Ok(checks)
    }
}

/// What a reader of one table needs.
struct ReadPlan {
    decoders: Vec<ColumnDecoder>,
    /// `` `a`, CAST(`b` AS CHAR), … `` in column order.
    select_list: String,
    /// A single integer primary key and its bounds, for key ranges.
    int_key: Option<(String, i64, i64)>,
}

/// Connections that hold one snapshot, lent to readers one at a time.
struct SnapshotPool {
    conns: Mutex<Vec<Conn>>,
    available: Semaphore,
}

pub struct MysqlSource {
    endpoint: MyEndpoint,
    /// Readers that run at once (the task's `max_full_load_sub_tasks`).
    readers: usize,
    pool: Mutex<Option<Arc<SnapshotPool>>>,
}

impl MysqlSource {
    pub fn new(endpoint: MyEndpoint, readers: usize) -> Self {
        MysqlSource {
            endpoint,
            readers: readers.max(1),
            pool: Mutex::new(None),
        }
    }

    fn database_error(&self, context: &str, message: impl Into<String>) -> SourceError {
        SourceError::Database {
            endpoint: self.endpoint.name.clone(),
            context: context.into(),
            message: message.into(),
        }
    }

    /// A connection inside a consistent snapshot of its own.
    async fn snapshot_connection(&self) -> Result<Conn, SourceError> {
        let e = &self.endpoint;
        let mut c = e.connect().await?;
        for sql in [
            "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            "START TRANSACTION WITH CONSISTENT SNAPSHOT",
        ] {
            c.query_drop(sql)
                .await
                .map_err(|err| e.classify(err, "opening the snapshot"))?;
        }
        Ok(c)
    }

    /// Opens `count` connections on one snapshot; returns them and the snapshot's position.
    async fn snapshot_connections(
        &self,
        count: usize,
    ) -> Result<(Vec<Conn>, Option<BinlogPosition>), SourceError> {
        let e = &self.endpoint;
        let mut lock = e.connect().await?;
        let locked = match lock.query_drop("SET SESSION lock_wait_timeout = 60").await {
            Ok(()) => lock.query_drop("FLUSH TABLES WITH READ LOCK").await,
            Err(err) => Err(err),
        };
        match locked {
            Ok(()) => {
                let mut conns = Vec::with_capacity(count);
                for _ in 0..count {
                    conns.push(self.snapshot_connection().await?);
                }
                let position = e.current_position(&mut lock).await;
                let _ = lock.query_drop("UNLOCK TABLES").await;
                let _ = lock.disconnect().await;
                Ok((conns, position?))
            }
            Err(mysql_async::Error::Server(s)) if s.code == 1227 => {
                // No RELOAD: MariaDB reports the exact position of a snapshot on its own.
                let _ = lock.disconnect().await;
                let mut c = self.snapshot_connection().await?;
                let rows: Vec<(String, String)> = c
                    .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
                    .await
                    .map_err(|err| e.classify(err, "reading the snapshot's binlog position"))?;
                let get = |name: &str| {
                    rows.iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.clone())
                };
                let (Some(file), Some(pos)) =
                    (get("binlog_snapshot_file"), get("binlog_snapshot_position"))
                else {
                    return Err(SourceError::PermissionDenied {
                        endpoint: e.name.clone(),
                        context: " while opening the snapshot".into(),
                        message: s.message.clone(),
                        fix: format!(
                            "GRANT RELOAD ON *.* TO '{}' (parallel readers share a snapshot under FLUSH TABLES WITH READ LOCK)",
                            e.user
                        ),
                    });
                };
                let pos: u64 = pos.parse().unwrap_or(4);
                // The GTID position of every domain at that point, so a resume by GTID
                // leaves no domain out.
                let gtid: Option<String> = c
                    .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (file.clone(), pos))
                    .await
                    .unwrap_or(None);
                let position = (!file.is_empty()).then(|| BinlogPosition {
                    file,
                    pos,
                    gtid: gtid.filter(|g| !g.is_empty()),
                });
                Ok((vec![c], position))
            }
            Err(err) => Err(e.classify(err, "locking tables for the snapshot")),
        }
    }

    async fn read_with(
        &self,
        conn: &mut Conn,
        table: &TableInfo,
        plan: &ReadPlan,
        range: &TableRange,
        out: &mpsc::Sender<RecordBatch>,
    ) -> Result<u64, SourceError> {
        let mut sql = format!(
            "SELECT {} FROM {}.{}",
            plan.select_list,
            quote(&table.schema),
            quote(&table.name)
        );
        let mut params: Vec<Value> = Vec::new();
        if let Some((key, ..)) = &plan.int_key {
            let mut conditions = Vec::new();
            if let Some(start) = range.start {
                conditions.push(format!("{} >= ?", quote(key)));
                params.push(Value::Int(start as i64));
            }
            if let Some(end) = range.end {
                conditions.push(format!("{} < ?", quote(key)));
                params.push(Value::Int(end as i64));
            }
            if !conditions.is_empty() {
                sql.push_str(" WHERE ");
                sql.push_str(&conditions.join(" AND "));
            }
        }
        let context = format!("reading {}", table.qualified_name());
        let e = &self.endpoint;
        let mut result = conn
            .exec_iter(sql, params)
            .await
            .map_err(|err| e.classify(err, &context))?;
        let mut builder = RowBuilder::new(table.arrow_schema.clone(), plan.decoders.clone());
        let mut rows = 0u64;
        while let Some(row) = result
            .next()
            .await
            .map_err(|err| e.classify(err, &context))?
        {
            let values = row.unwrap();
            builder
                .append_row(&values)
                .map_err(|(i, message)| SourceError::Decode {
                    endpoint: e.name.clone(),
                    table: table.qualified_name(),
                    column: table.columns.get(i).map_or("?".into(), |c| c.name.clone()),
                    message: format!("{message} (at row {rows} of range {})", range.index),
                })?;
            rows += 1;
            if (builder.len() >= BATCH_ROWS || builder.bytes() >= BATCH_BYTES)
                && out.send(builder.finish()).await.is_err()
            {
                return Ok(rows);
            }
        }
        if !builder.is_empty() {
            let _ = out.send(builder.finish()).await;
        }
        Ok(rows)
    }
}

/// `` `name` `` with backquotes doubled.
pub fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// One row of the column listing.
type ColumnRow = (
    String,
    String,
    String,
    String,
    String,
    Option<u64>,
    Option<u64>,
    String,
);

impl Source for MysqlSource {
    fn endpoint(&self) -> &str {
        &self.endpoint.name
    }

    async fn check(&self) -> Vec<CheckResult> {
        let e = &self.endpoint;
        let mut conn = match e.connect().await {
            Ok(c) => c,
            Err(err) => return vec![CheckResult::fail_from("connect", &err)],
        };
        let mut checks = Vec::new();
        match e.binlog_settings(&mut conn).await {
            Ok(s) => {
                checks.push(CheckResult::pass(
                    "connect",
                    format!(
                        "connected to {} {} at {}:{} as {}",
                        if s.mariadb { "MariaDB" } else { "MySQL" },
                        s.version,
                        e.host,
                        e.port,
                        e.user,
                    ),
                ));
                checks.push(
                    e.negotiated(&mut conn)
                        .await
                        .check_result("every connection, the binlog stream included"),
                );
                checks.extend(s.checks());
            }
            Err(err) => checks.push(CheckResult::fail_from("connect", &err)),
        }
        match e.grant_checks(&mut conn).await {
            Ok(c) => checks.extend(c),
            Err(err) => checks.push(CheckResult::fail_from("grants", &err)),
        }
        let no_pk: Result<Vec<String>, _> = conn
            .query(format!(
                "SELECT CONCAT(t.table_schema, '.', t.table_name) FROM information_schema.tables t \
                 WHERE t.table_type = 'BASE TABLE' AND t.table_schema NOT IN ({SYSTEM_SCHEMAS}) \
                   AND NOT EXISTS (SELECT 1 FROM information_schema.table_constraints c \
                     WHERE c.table_schema = t.table_schema AND c.table_name = t.table_name \
                       AND c.constraint_type = 'PRIMARY KEY') \
                 ORDER BY 1 LIMIT 20"
            ))
            .await;
        checks.push(match no_pk {
            Ok(tables) if tables.is_empty() => {
                CheckResult::pass("primary keys", "every table has a primary key".into())
            }
            Ok(tables) => CheckResult::warn(
                "primary keys",
                format!("tables without a primary key: {}", tables.join(", ")),
                "add a primary key: the full load reads them whole, and CDC can only apply their changes by whole row".into(),
            ),
            Err(err) => CheckResult::fail_from("primary keys", &e.classify(err, "listing tables")),
        });
        let _ = conn.disconnect().await;
        checks
    }

    async fn discover(&self, rules: &SelectionRules) -> Result<Vec<TableInfo>, SourceError> {
        let e = &self.endpoint;
        let mut conn = e.connect().await?;
        let tables: Vec<(String, String, Option<u64>, Option<u64>)> = conn
            .query(format!(
                "SELECT table_schema, table_name, data_length + index_length, table_rows \
                 FROM information_schema.tables \
                 WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ({SYSTEM_SCHEMAS}) \
                 ORDER BY table_schema, table_name"
            ))
            .await
            .map_err(|err| e.classify(err, "listing tables"))?;
        let tables: Vec<_> = tables
            .into_iter()
            .filter(|(s, t, ..)| rules.matches(s, t))
            .collect();
        let columns: Vec<ColumnRow> = conn
            .query(format!(
                "SELECT table_schema, table_name, column_name, data_type, column_type, \
                   numeric_precision, numeric_scale, is_nullable \
                 FROM information_schema.columns WHERE table_schema NOT IN ({SYSTEM_SCHEMAS}) \
                 ORDER BY table_schema, table_name, ordinal_position"
            ))
            .await
            .map_err(|err| e.classify(err, "listing columns"))?;
        let keys: Vec<(String, String, String)> = conn
            .query(format!(
                "SELECT table_schema, table_name, column_name FROM information_schema.key_column_usage \
                 WHERE constraint_name = 'PRIMARY' AND table_schema NOT IN ({SYSTEM_SCHEMAS}) \
                 ORDER BY table_schema, table_name, ordinal_position"
            ))
            .await
            .map_err(|err| e.classify(err, "listing primary keys"))?;

        // Both listings are ordered by table: one pass groups them, however many tables
        // the server has.
        let mut columns_of: HashMap<(String, String), Vec<&ColumnRow>> = HashMap::new();
        for c in &columns {
            columns_of
                .entry((c.0.clone(), c.1.clone()))
                .or_default()
                .push(c);
        }
        let mut keys_of: HashMap<(String, String), Vec<String>> = HashMap::new();
        for (schema, table, column) in keys {
            keys_of.entry((schema, table)).or_default().push(column);
        }
        let mut found = Vec::new();
        for (schema, name, size, rows) in tables {
            let mut infos = Vec::new();
            let mut decoders = Vec::new();
            let mut select = Vec::new();
            let table_key = (schema, name);
            let table_columns = columns_of.remove(&table_key);
            let primary_key = keys_of.remove(&table_key).unwrap_or_default();
            let (schema, name) = table_key;
            for (_, _, column, data_type, column_type, precision, scale, nullable) in
                table_columns.into_iter().flatten()
            {
                let kind =
                    Kind::from_information_schema(data_type, column_type, *precision, *scale);
                let cast_to_text = kind.is_none();
                select.push(if cast_to_text {
                    format!("CAST({} AS CHAR)", quote(column))
                } else {
                    quote(column)
                });
                // Enum and set values arrive as their text here: no labels needed.
                decoders.push(ColumnDecoder::new(kind.unwrap_or(Kind::Text {
                    charset: "utf8mb4".into(),
                })));
                infos.push(ColumnInfo {
                    name: column.clone(),
                    source_type: column_type.clone(),
                    nullable: nullable == "YES",
                    cast_to_text,
                });
            }

            let names: Vec<String> = infos.iter().map(|c| c.name.clone()).collect();
            let arrow_schema = RowBuilder::schema_for(&names, &decoders);
            let int_key = match primary_key.as_slice() {
                [key]
                    if infos.iter().zip(&decoders).any(|(c, d)| {
                        &c.name == key
                            && matches!(
                                d.kind,
                                Kind::Int8 | Kind::Int16 | Kind::Int24 | Kind::Int32 | Kind::Int64
                            )
                    }) =>
                {
                    let bounds: Option<(Option<i64>, Option<i64>)> = conn
                        .query_first(format!(
                            "SELECT MIN({k}), MAX({k}) FROM {}.{}",
                            quote(&schema),
                            quote(&name),
                            k = quote(key)
                        ))
                        .await
                        .map_err(|err| e.classify(err, "reading key bounds"))?;
                    match bounds {
                        Some((Some(lo), Some(hi))) => Some((key.clone(), lo, hi)),
                        _ => None,
                    }
                }
                _ => None,
            };
            found.push(TableInfo {
                schema,
                name,
                columns: infos,
                arrow_schema,
                primary_key,
                size_bytes: size.unwrap_or(0),
                estimated_rows: rows.unwrap_or(0),
                identity: None,
                read_plan: Arc::new(ReadPlan {
                    decoders,
                    select_list: select.join(", "),
                    int_key,
                }),
            });
        }
        let _ = conn.disconnect().await;
        if found.is_empty() {
            return Err(SourceError::NoTables {
                endpoint: e.name.clone(),
                rules: rules.describe(),
            });
        }
        Ok(found)
    }

    fn plan_ranges(&self, table: &TableInfo, range_bytes: u64) -> Vec<TableRange> {
        let whole = vec![TableRange {
            index: 0,
            start: None,
            end: None,
        }];
        let Some(plan) = table.read_plan.downcast_ref::<ReadPlan>() else {
            return whole;
        };
        let Some((_, lo, hi)) = &plan.int_key else {
            return whole;
        };
        let parts = table.size_bytes.div_ceil(range_bytes.max(1)).clamp(1, 1024) as i128;
        let span = (*hi as i128 - *lo as i128 + 1).max(1);
        if parts <= 1 || span < parts {
            return whole;
        }
        // Bounds are stored as the bits of an i64 (keys may be negative).
        let bound = |k: i128| (*lo as i128 + span * k / parts) as i64 as u64;
        (0..parts)
            .map(|k| TableRange {
                index: k as u32,
                start: (k > 0).then(|| bound(k)),
                end: (k < parts - 1).then(|| bound(k + 1)),
            })
            .collect()
    }

    async fn open_snapshot(&self) -> Result<Snapshot, SourceError> {
        let (conns, position) = self.snapshot_connections(self.readers).await?;
        let pool = SnapshotPool {
            available: Semaphore::new(conns.len()),
            conns: Mutex::new(conns),
        };
        *self.pool.lock().await = Some(Arc::new(pool));
        Ok(Snapshot {
            id: "consistent snapshot".into(),
            position: position.map(SourcePosition::Binlog),
        })
    }

    async fn release_snapshot(&self) {
        if let Some(pool) = self.pool.lock().await.take() {
            for c in pool.conns.lock().await.drain(..) {
                let _ = c.disconnect().await;
            }
        }
    }

    async fn read_range(
        &self,
        table: &TableInfo,
        range: &TableRange,
        snapshot: Option<&Snapshot>,
        out: mpsc::Sender<RecordBatch>,
    ) -> Result<u64, SourceError> {
        let Some(plan) = table.read_plan.downcast_ref::<ReadPlan>() else {
            return Err(self.database_error(
                &format!("reading {}", table.qualified_name()),
                "the table was not discovered by this source",
            ));
        };
        let pool = self.pool.lock().await.clone();
        match (snapshot, pool) {
            (Some(_), Some(pool)) => {
                let _permit = pool
                    .available
                    .acquire()
                    .await
                    .map_err(|_| self.database_error("reading", "the snapshot was released"))?;
                let conn = pool.conns.lock().await.pop();
                let Some(mut conn) = conn else {
                    return Err(self.database_error("reading", "no snapshot connection is free"));
                };
                let result = self.read_with(&mut conn, table, plan, range, &out).await;
                pool.conns.lock().await.push(conn);
                result
            }
            _ => {
                let (mut conns, _) = self.snapshot_connections(1).await?;
                let Some(mut conn) = conns.pop() else {
                    return Err(self.database_error("reading", "no snapshot connection"));
                };
                let result = self.read_with(&mut conn, table, plan, range, &out).await;
                let _ = conn.disconnect().await;
                result
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_binlog_setting_cdc_needs_is_checked_with_its_fix() {
        let good = BinlogSettings {
            version: "10.11.19-MariaDB".into(),
            mariadb: true,
            log_bin: true,
            format: "ROW".into(),
            row_image: "FULL".into(),
            row_metadata: "FULL".into(),
        };
        assert!(good.checks().iter().all(|c| c.status == CheckStatus::Pass));
        assert!(good.require_cdc("m").is_ok());
        let bad = BinlogSettings {
            log_bin: false,
            format: "STATEMENT".into(),
            row_image: "MINIMAL".into(),
            row_metadata: "MINIMAL".into(),
            ..good
        };
        let checks = bad.checks();
        assert_eq!(
            checks
                .iter()
                .filter(|c| c.status == CheckStatus::Warn)
                .count(),
            4
        );
        let fixes: Vec<String> = checks.iter().filter_map(|c| c.fix.clone()).collect();
        assert!(fixes[0].contains("log_bin"));
        assert!(fixes[1].contains("binlog_format = 'ROW'"));
        assert!(fixes[2].contains("binlog_row_image = 'FULL'"));
        assert!(fixes[3].contains("binlog_row_metadata = 'FULL'"));
        let error = bad.require_cdc("m").unwrap_err().to_string();
        assert!(error.contains("the binary log is off"), "{error}");
        assert!(error.contains("Fix: set log_bin"), "{error}");
    }
}
