//! The workspace file: endpoints and tasks, the contract the CLI and the app share.
//!
//! Keys are the snake_case forms of AWS DMS's names where DMS has a name, and every key not
//! given takes DMS's default (so `data_format` defaults to `csv`, as in DMS). Invariants the
//! rest of the engine relies on, checked by [`Workspace::parse`]:
//! - endpoint and task names are unique and usable as path segments;
//! - every endpoint has the fields its engine needs, and no plain password; `password_env`
//!   names a variable holding a password, never another tool's credential
//!   ([`crate::secret::check_password_env`]);
//! - no URL in the file (`[curate] catalog`, `endpoint_url`) holds a password, and errors
//!   show URLs only through [`crate::secret::redact_url`];
//! - every task names an existing source endpoint and an existing target endpoint.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why a workspace file was refused. Messages name the line, the key and what is expected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read workspace file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid workspace file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("invalid workspace file {path}, line {line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("no task named '{name}' in {path} (tasks: {known})")]
    UnknownTask {
        path: PathBuf,
        name: String,
        known: String,
    },
    #[error("no endpoint named '{name}' in {path} (endpoints: {known})")]
    UnknownEndpoint {
        path: PathBuf,
        name: String,
        known: String,
    },
    #[error(
        "endpoint '{endpoint}': environment variable {var} named by password_env is not set; \
         export it before running (e.g. `export {var}=...`)"
    )]
    MissingPasswordEnv { endpoint: String, var: String },
    /// Checked where the password is read too, for endpoints built without parsing a file.
    #[error("endpoint '{endpoint}': password_env = \"{var}\" is refused: {reason}")]
    RefusedPasswordEnv {
        endpoint: String,
        var: String,
        reason: String,
    },
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
    /// A workspace file cannot send a secret's password to a server the secret does not name.
    #[error(
        "endpoint '{endpoint}': its {key} is {ours} but secret '{secret}' (password_secret) is for {key} {theirs}. The secret's password is only sent where the secret says: remove `{key}` from the endpoint to use the secret's, or correct it"
    )]
    SecretConflict {
        endpoint: String,
        secret: String,
        key: &'static str,
        ours: String,
        theirs: String,
    },
    #[error(
        "endpoint '{endpoint}': no {key}: neither the endpoint nor secret '{secret}' (password_secret) gives one. Set `{key}` in the endpoint, or add \"{field}\" to the secret"
    )]
    SecretIncomplete {
        endpoint: String,
        secret: String,
        key: &'static str,
        field: &'static str,
    },
}

/// A parsed and validated workspace file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workspace {
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
    #[serde(default)]
    pub tasks: Vec<TaskConfig>,
    #[serde(default)]
    pub curate: CurateSettings,
    /// SQL models over the lake (`tributary transform`), run in this order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelConfig>,
}

/// A SQL model, as dbt has them: a table the query builds over curated, raw and earlier
/// models' tables, and the data-quality checks its rows must pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub name: String,
    /// The Iceberg namespace of its table: query it as `<schema>.<name>`.
    #[serde(default = "default_model_schema")]
    pub schema: String,
    pub sql: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckConfig>,
}

fn default_model_schema() -> String {
    "analytics".into()
}

/// One data-quality check of a model's rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    pub check: CheckKind,
    /// not_null, unique: the columns; accepted_values, freshness: one column.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// accepted_values: the values allowed (as text).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// row_count: bounds on the rows the model keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
    /// freshness: the newest value of the column is at most this old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_hours: Option<f64>,
    #[serde(default)]
    pub on_fail: OnFail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    NotNull,
    Unique,
    AcceptedValues,
    RowCount,
    Freshness,
}

impl CheckKind {
    pub fn name(self) -> &'static str {
        match self {
            CheckKind::NotNull => "not_null",
            CheckKind::Unique => "unique",
            CheckKind::AcceptedValues => "accepted_values",
            CheckKind::RowCount => "row_count",
            CheckKind::Freshness => "freshness",
        }
    }

    /// Whether the check judges single rows (which can then be quarantined).
    pub fn is_per_row(self) -> bool {
        matches!(
            self,
            CheckKind::NotNull | CheckKind::Unique | CheckKind::AcceptedValues
        )
    }
}

/// What a failing check does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFail {
    /// The model's run fails and its table keeps its previous rows.
    #[default]
    Fail,
    /// The failing rows go to `<name>_quarantine` instead of the model's table.
    Quarantine,
    /// Reported, nothing else.
    Warn,
}

/// The curated zone (`tributary curate`, [`crate::curate`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CurateSettings {
    /// The curated zone's folder in each task's target, beside its raw zone.
    pub folder: String,
    /// The target whose curated zone holds the models' tables (default: the first task's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The Iceberg SQL catalog: a SQLite file, relative to the workspace file's folder, or
    /// a `postgres://user@host:port/database` URL (the password from PGPASSWORD).
    pub catalog: String,
    /// Data files are rolled at this size, so no small files remain (MB).
    pub target_file_size_mb: u64,
    /// How many snapshots of a curated table to keep for time travel (at least 1).
    pub keep_snapshots: usize,
    /// Memory for a merge's sorts and joins before they spill to disk (MB).
    pub memory_limit_mb: u64,
    /// Tables (`source.schema.table`) that also get a history table, SCD type 2:
    /// `<table>_history` with every version of every row.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<String>,
}

impl Default for CurateSettings {
    fn default() -> Self {
        CurateSettings {
            folder: "curated".into(),
            target: None,
            catalog: "catalog.db".into(),
            target_file_size_mb: 256,
            keep_snapshots: 3,
            memory_limit_mb: 1024,
            history: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Postgres,
    Mysql,
    Local,
    S3,
}

/// A source database engine's defaults for a new endpoint: what its own tools assume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatabaseDefaults {
    pub port: u16,
    pub user: &'static str,
    /// The variable the engine's own client reads the password from.
    pub password_env: &'static str,
}

impl Engine {
    /// Every engine, sources first, in the order the app offers them.
    pub const ALL: [Engine; 4] = [Engine::Postgres, Engine::Mysql, Engine::Local, Engine::S3];

    /// The engine for people: `PostgreSQL`, `Local folder`.
    pub fn label(self) -> &'static str {
        match self {
            Engine::Postgres => "PostgreSQL",
            Engine::Mysql => "MySQL",
            Engine::Local => "Local folder",
            Engine::S3 => "S3 bucket",
        }
    }

    /// A source database's defaults for a new endpoint; `None` for a target.
    pub fn database_defaults(self) -> Option<DatabaseDefaults> {
        match self {
            Engine::Postgres => Some(DatabaseDefaults {
                port: 5432,
                user: "postgres",
                password_env: "PGPASSWORD",
            }),
            Engine::Mysql => Some(DatabaseDefaults {
                port: 3306,
                user: "root",
                password_env: "MYSQL_PWD",
            }),
            Engine::Local | Engine::S3 => None,
        }
    }

    /// The name the workspace file uses: `postgres`, `mysql`, `local`, `s3`.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Mysql => "mysql",
            Engine::Local => "local",
            Engine::S3 => "s3",
        }
    }

    pub fn is_source(self) -> bool {
        self.database_defaults().is_some()
    }
}

/// One endpoint: a source database or a target lake. Fields that do not apply to the
/// engine are refused by [`Workspace::parse`], so the file stays unambiguous.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub name: String,
    pub engine: Engine,
    // Databases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The IP address to connect to instead of resolving `host` (libpq's `hostaddr`): a
    /// port forward, an SSH tunnel (`ssh -L`), a proxy. `host` stays the name TLS verifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostaddr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Name of the environment variable holding the password; the password itself never
    /// lives in the workspace file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// The password is in the OS keyring ([`crate::secret`]), under the endpoint's server
    /// and user.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub password_keyring: bool,
    /// An AWS Secrets Manager secret (name or ARN) holding the password as RDS and DMS keep
    /// it: JSON with `username`, `password` and optionally `host`, `port`, `dbname`, which
    /// fill what the endpoint leaves out ([`crate::secret::DbSecret`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<String>,
    /// TLS, with libpq's meaning for both engines ([`crate::tls`]); `None` is `prefer`
    /// (`verify-full` with `sslrootcert = "system"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslmode: Option<SslMode>,
    /// The CA bundle (PEM) the server's certificate must chain to, or `"system"`; relative
    /// to the workspace file's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslrootcert: Option<String>,
    /// A client certificate (PEM) and its private key (PEM, unencrypted, mode 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslcert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslkey: Option<PathBuf>,
    /// Refused on parse with an explanation; declared so the error can say why.
    #[serde(default, skip_serializing)]
    pub password: Option<toml::Value>,
    // Local target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    // S3 target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_path_style: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// PEM certificates trusted instead of the system's, for an S3-compatible server with a
    /// private CA; relative to the workspace file's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<PathBuf>,
}

impl EndpointConfig {
    /// Makes a relative local target path relative to the folder of the workspace file at
    /// `workspace_file`, rather than to the current directory.
    pub fn resolve_relative_path(&mut self, workspace_file: &Path) {
        let base = workspace_file.parent().unwrap_or(Path::new("."));
        let paths = [
            &mut self.path,
            &mut self.ca_bundle,
            &mut self.sslcert,
            &mut self.sslkey,
        ];
        for local in paths.into_iter().flatten() {
            if local.is_relative() {
                *local = normalize(&base.join(&*local));
            }
        }
        if let Some(root) = &mut self.sslrootcert
            && root != "system"
            && Path::new(root).is_relative()
        {
            *root = normalize(&base.join(&*root)).display().to_string();
        }
    }

    /// Where the endpoint's password is in the OS keyring (with `password_keyring`).
    pub fn keyring_entry(&self) -> crate::secret::KeyringEntry {
        crate::secret::KeyringEntry::new(
            &self.name,
            self.engine.name(),
            self.user.as_deref().unwrap_or(""),
            self.host.as_deref().unwrap_or(""),
            self.port,
        )
    }

    /// The endpoint as its engine connects to it and its password: from the environment
    /// variable named by `password_env`, the OS keyring (`password_keyring`), or the AWS
    /// Secrets Manager secret `password_secret`, whose fields fill what the endpoint leaves
    /// out ([`EndpointConfig::filled_from`]).
    pub async fn resolve(&self) -> Result<Connection, ConfigError> {
        if let Some(id) = &self.password_secret {
            let secret = crate::secret::secrets_manager::fetch(&self.name, id).await?;
            return Ok(Connection {
                endpoint: self.filled_from(id, &secret)?,
                password: Some(secret.password),
            });
        }
        Ok(Connection {
            endpoint: self.clone(),
            password: self.resolve_password().await?,
        })
    }

    /// This endpoint with what secret `id` holds filling what it leaves out. A host, port or
    /// user the endpoint names must be the secret's own (when the secret names one): a
    /// workspace file cannot send a secret's password to another server or as another user.
    /// The database may differ (one server, many databases).
    pub fn filled_from(
        &self,
        id: &str,
        secret: &crate::secret::secrets_manager::DbSecret,
    ) -> Result<EndpointConfig, ConfigError> {
        let conflict = |key, ours: String, theirs: String| ConfigError::SecretConflict {
            endpoint: self.name.clone(),
            secret: id.to_owned(),
            key,
            ours,
            theirs,
        };
        let incomplete = |key, field| ConfigError::SecretIncomplete {
            endpoint: self.name.clone(),
            secret: id.to_owned(),
            key,
            field,
        };
        let mut e = self.clone();
        match (&self.host, &secret.host) {
            (Some(ours), Some(theirs)) if !ours.eq_ignore_ascii_case(theirs) => {
                return Err(conflict("host", ours.clone(), theirs.clone()));
            }
            (None, None) => return Err(incomplete("host", "host")),
            (None, Some(theirs)) => e.host = Some(theirs.clone()),
            _ => {}
        }
        match (self.port, secret.port) {
            (Some(ours), Some(theirs)) if ours != theirs => {
                return Err(conflict("port", ours.to_string(), theirs.to_string()));
            }
            (None, theirs) => e.port = theirs,
            _ => {}
        }
        match (&self.user, &secret.username) {
            (Some(ours), Some(theirs)) if ours != theirs => {
                return Err(conflict("user", ours.clone(), theirs.clone()));
            }
            (None, None) => return Err(incomplete("user", "username")),
            (None, Some(theirs)) => e.user = Some(theirs.clone()),
            _ => {}
        }
        if e.database.is_none() {
            e.database = secret.dbname.clone();
        }
        Ok(e)
    }

    /// The password from the environment variable named by `password_env`, or from the OS
    /// keyring with `password_keyring`; `None` when the endpoint names neither (or names a
    /// secret: [`EndpointConfig::resolve`] reads that).
    async fn resolve_password(&self) -> Result<Option<String>, ConfigError> {
        if let Some(var) = &self.password_env {
            // Again here: the app builds endpoints without parsing a file.
            crate::secret::check_password_env(var, &self.name).map_err(|reason| {
                ConfigError::RefusedPasswordEnv {
                    endpoint: self.name.clone(),
                    var: var.clone(),
                    reason,
                }
            })?;
            return std::env::var(var)
                .map(Some)
                .map_err(|_| ConfigError::MissingPasswordEnv {
                    endpoint: self.name.clone(),
                    var: var.clone(),
                });
        }
        if self.password_keyring {
            // A blocking D-Bus call (it may wait on an unlock prompt): off the async workers.
            let entry = self.keyring_entry();
            let got = tokio::task::spawn_blocking(move || crate::secret::get(&entry)).await;
            let got = got.unwrap_or_else(|e| {
                Err(crate::secret::SecretError::Failed {
                    endpoint: self.name.clone(),
                    entry: self.keyring_entry().name(),
                    reason: e.to_string(),
                })
            });
            return Ok(Some(got?));
        }
        Ok(None)
    }

    /// What to check when the server refuses the password: where it comes from.
    pub fn password_hint(&self) -> String {
        if let Some(id) = &self.password_secret {
            return format!(
                "Check the password in AWS Secrets Manager secret '{id}' (password_secret)"
            );
        }
        match &self.password_env {
            Some(var) => {
                format!(
                    "Check the password in the environment variable {var} (named by password_env)"
                )
            }
            None if self.password_keyring => format!(
                "Check the password stored in the OS keyring as {} (password_keyring); replace it with the app's \"Save in keyring\" or `tributary password set`",
                self.keyring_entry().name()
            ),
            None => "The server wants a password: name an environment variable that holds it \
                     (password_env), store it in the OS keyring (password_keyring), or name an \
                     AWS Secrets Manager secret (password_secret)"
                .into(),
        }
    }
}

/// libpq's `sslmode` values (`allow` is not offered: it prefers plain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub const ALL: [SslMode; 5] = [
        SslMode::Disable,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// A source endpoint ready to connect ([`EndpointConfig::resolve`]). No `Debug`: it holds
/// the password.
#[derive(Clone)]
pub struct Connection {
    /// The endpoint with what its secret fills.
    pub endpoint: EndpointConfig,
    pub password: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MigrationType {
    FullLoad,
    Cdc,
    FullLoadAndCdc,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    pub name: String,
    pub source: String,
    pub target: String,
    #[serde(default = "default_migration_type")]
    pub migration_type: MigrationType,
    /// DMS selection rules, `schema.table` with `%` as the wildcard. Empty: every table
    /// outside the system schemas.
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub target_settings: TargetSettings,
    #[serde(default)]
    pub full_load_settings: FullLoadSettings,
    #[serde(default)]
    pub cdc_settings: CdcSettings,
}

impl TaskConfig {
    pub fn has_full_load(&self) -> bool {
        self.migration_type != MigrationType::Cdc
    }

    pub fn has_cdc(&self) -> bool {
        self.migration_type != MigrationType::FullLoad
    }

    /// The task's replication slot on a PostgreSQL `database`: `cdc_settings.slot_name`;
    /// else [`Self::legacy_slot_name`] where `legacy_is_its_own` (a slot of that name
    /// belongs to `database`: tasks from before names carried the database keep their slot);
    /// else `tributary_<task>_<database>_<hash>`. A cluster's slot names are shared by all
    /// its databases, so the default is unique per database and task: the name in the slot
    /// alphabet (lower case, digits, underscore), cut to 54 bytes, and a hash of the task
    /// and database (8 hex digits), within 63 bytes.
    pub fn slot_name(&self, database: &str, legacy_is_its_own: bool) -> String {
        if !self.cdc_settings.slot_name.is_empty() {
            return self.cdc_settings.slot_name.clone();
        }
        if legacy_is_its_own {
            return self.legacy_slot_name();
        }
        // The hash keeps names apart that the alphabet or the cut would make equal (task
        // `a_b` on `c` and task `a` on `b_c`), and from every `tributary_<task>` of before.
        let mut name = slot_alphabet(&format!("tributary_{}_{database}", self.name));
        name.truncate(54);
        let hash = fnv1a(format!("{}\0{database}", self.name).as_bytes());
        format!("{name}_{hash:08x}")
    }

    /// The slot name of tasks created before names carried the database: `tributary_<task>`
    /// in the slot alphabet, at most 63 bytes.
    pub fn legacy_slot_name(&self) -> String {
        named_after_task("", &self.name)
    }

    /// The publication of the task: `cdc_settings.publication_name`, or one named after it.
    pub fn publication_name(&self) -> String {
        named_after_task(&self.cdc_settings.publication_name, &self.name)
    }
}

/// `tributary_<task>` in the alphabet PostgreSQL allows for slot names (lower case, digits,
/// underscore; at most 63 bytes), unless `given` is set.
fn named_after_task(given: &str, task: &str) -> String {
    if !given.is_empty() {
        return given.to_owned();
    }
    let mut name = slot_alphabet(&format!("tributary_{task}"));
    name.truncate(63);
    name
}

/// `text` with every character outside PostgreSQL's slot alphabet (lower-case ASCII
/// letters, digits, underscore) lowered or made an underscore: one byte each.
fn slot_alphabet(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// FNV-1a, 32 bits: a short hash that stays the same from build to build.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, b| {
        (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

fn default_migration_type() -> MigrationType {
    MigrationType::FullLoad
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    Parquet,
    Csv,
    Json,
}

impl DataFormat {
    pub fn extension(self) -> &'static str {
        match self {
            DataFormat::Parquet => "parquet",
            DataFormat::Csv => "csv",
            DataFormat::Json => "json",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Snappy,
    Zstd,
    Gzip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DatePartitionSequence {
    #[serde(rename = "YYYYMMDD")]
    YyyyMmDd,
    #[serde(rename = "YYYYMMDDHH")]
    YyyyMmDdHh,
    #[serde(rename = "YYYYMM")]
    YyyyMm,
    #[serde(rename = "MMYYYYDD")]
    MmYyyyDd,
    #[serde(rename = "DDMMYYYY")]
    DdMmYyyy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatePartitionStyle {
    /// `year=YYYY/month=MM/day=DD`, what Glue crawlers and Athena read as partitions.
    Hive,
    /// `YYYY/MM/DD`, DMS's own layout.
    Dms,
}

/// S3 target endpoint settings, as in DMS (`S3Settings`), with DMS's defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetSettings {
    pub bucket_folder: String,
    pub data_format: DataFormat,
    pub compression: Compression,
    pub include_op_for_full_load: bool,
    pub timestamp_column_name: String,
    /// KB, as DMS's `MaxFileSize`.
    pub max_file_size: u64,
    pub date_partition_enabled: bool,
    pub date_partition_sequence: DatePartitionSequence,
    pub date_partition_style: DatePartitionStyle,
    /// Seconds.
    pub cdc_max_batch_interval: u64,
    /// KB.
    pub cdc_min_file_size: u64,
}

impl Default for TargetSettings {
    fn default() -> Self {
        TargetSettings {
            bucket_folder: String::new(),
            data_format: DataFormat::Csv,
            compression: Compression::None,
            include_op_for_full_load: false,
            timestamp_column_name: String::new(),
            max_file_size: 1_048_576,
            date_partition_enabled: false,
            date_partition_sequence: DatePartitionSequence::YyyyMmDd,
            date_partition_style: DatePartitionStyle::Dms,
            cdc_max_batch_interval: 60,
            cdc_min_file_size: 32_000,
        }
    }
}

/// Full-load tuning, after DMS's `FullLoadSettings` and parallel-load table settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FullLoadSettings {
    /// How many table ranges load at once (DMS `MaxFullLoadSubTasks`, default 8).
    pub max_full_load_sub_tasks: usize,
    /// A table larger than this (MB on disk) loads in ranges of about this size.
    pub parallel_load_range_mb: u64,
}

/// Change data capture settings (PostgreSQL: the slot and publication, as DMS names them,
/// and slot hygiene).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CdcSettings {
    /// Replication slot; empty: `tributary_<task>_<database>_<hash>` (or `tributary_<task>` for a
    /// task that already has a slot of that name in its database; [`TaskConfig::slot_name`]).
    /// Created if absent, reused on restart.
    pub slot_name: String,
    /// Publication; empty: `tributary_<task>`. Created if absent, reused on restart.
    pub publication_name: String,
    /// Write a heartbeat into the WAL so an idle database does not hold WAL forever
    /// (DMS `HeartbeatEnable`).
    pub heartbeat_enable: bool,
    /// Minutes between heartbeats (DMS `HeartbeatFrequency`).
    pub heartbeat_frequency: u64,
    /// Warn when the slot holds more WAL than this many MB.
    pub slot_wal_warning_mb: u64,
    /// What a schema change does to the task ([`SchemaChangePolicy`]).
    pub schema_change_policy: SchemaChangePolicy,
}

/// What a change of a table's columns does to a CDC task
/// (`cdc_settings.schema_change_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemaChangePolicy {
    /// Record what the rows the change did not touch hold (a constant default), and
    /// reload the table where the log does not say (a volatile default, a rewrite).
    #[default]
    Apply,
    /// Reload the table on any change of its columns.
    Reload,
    /// Stop the task at any change of a table's columns, naming it.
    Stop,
}

impl Default for CdcSettings {
    fn default() -> Self {
        CdcSettings {
            slot_name: String::new(),
            publication_name: String::new(),
            heartbeat_enable: true,
            heartbeat_frequency: 5,
            slot_wal_warning_mb: 1024,
            schema_change_policy: SchemaChangePolicy::Apply,
        }
    }
}

impl Default for FullLoadSettings {
    fn default() -> Self {
        FullLoadSettings {
            max_full_load_sub_tasks: 8,
            parallel_load_range_mb: 512,
        }
    }
}

impl Workspace {
    /// Reads and validates a workspace file. A relative `path` of a local target is taken
    /// relative to the workspace file's folder, so the CLI and the app agree whatever the
    /// current directory.
    pub fn load(path: &Path) -> Result<Workspace, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut workspace = Workspace::parse(&text, path)?;
        workspace.resolve_relative_paths(path);
        Ok(workspace)
    }

    /// Makes relative local target paths relative to the folder of the workspace file at
    /// `path`, rather than to the current directory.
    pub fn resolve_relative_paths(&mut self, path: &Path) {
        for e in &mut self.endpoints {
            e.resolve_relative_path(path);
        }
    }

    /// Parses and validates `text`; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Workspace, ConfigError> {
        let workspace: Workspace = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        workspace.validate(text, path)?;
        Ok(workspace)
    }

    pub fn to_toml(&self) -> String {
        // Serialising plain data structs cannot fail.
        toml::to_string_pretty(self).unwrap_or_default()
    }

    pub fn task(&self, name: &str, path: &Path) -> Result<&TaskConfig, ConfigError> {
        self.tasks
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| ConfigError::UnknownTask {
                path: path.to_owned(),
                name: name.to_owned(),
                known: join_names(self.tasks.iter().map(|t| t.name.as_str())),
            })
    }

    /// The raw zone folders (`bucket_folder`) of the tasks that write to target `target`; the
    /// target's root when no task does.
    pub fn raw_folders(&self, target: &str) -> Vec<String> {
        let mut folders: Vec<String> = self
            .tasks
            .iter()
            .filter(|t| t.target == target)
            .map(|t| t.target_settings.bucket_folder.clone())
            .collect();
        folders.sort();
        folders.dedup();
        if folders.is_empty() {
            folders.push(String::new());
        }
        folders
    }

    pub fn endpoint(&self, name: &str, path: &Path) -> Result<&EndpointConfig, ConfigError> {
        self.endpoints
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| ConfigError::UnknownEndpoint {
                path: path.to_owned(),
                name: name.to_owned(),
                known: join_names(self.endpoints.iter().map(|e| e.name.as_str())),
            })
    }

    fn validate(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let invalid_at = |name: &str, key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            line: line_of(text, name, key),
            message,
        };
        let invalid = |name: &str, message: String| invalid_at(name, "", message);
        let mut seen = std::collections::HashSet::new();
        for e in &self.endpoints {
            check_name("endpoint", &e.name).map_err(|m| invalid(&e.name, m))?;
            if e.name.starts_with('_') {
                return Err(invalid(
                    &e.name,
                    format!(
                        "endpoint name '{}' starts with '_': a source's folder of that name is skipped by Glue, Athena and Spark (and `_tributary` holds the tasks' state). Choose a name that starts with a letter or digit",
                        e.name
                    ),
                ));
            }
            if !seen.insert(e.name.as_str()) {
                return Err(invalid(
                    &e.name,
                    format!("endpoint name '{}' is used twice", e.name),
                ));
            }
            validate_endpoint(e).map_err(|(key, m)| {
                invalid_at(&e.name, key, format!("endpoint '{}': {m}", e.name))
            })?;
        }
        let mut seen = std::collections::HashSet::new();
        for t in &self.tasks {
            check_name("task", &t.name).map_err(|m| invalid(&t.name, m))?;
            if !seen.insert(t.name.as_str()) {
                return Err(invalid(
                    &t.name,
                    format!("task name '{}' is used twice", t.name),
                ));
            }
            validate_task(self, t)
                .map_err(|(key, m)| invalid_at(&t.name, key, format!("task '{}': {m}", t.name)))?;
        }
        let mut seen = std::collections::HashSet::new();
        for m in &self.models {
            check_name("model", &m.name).map_err(|e| invalid(&m.name, e))?;
            if !seen.insert((m.schema.as_str(), m.name.as_str())) {
                return Err(invalid(
                    &m.name,
                    format!("model {}.{} is declared twice", m.schema, m.name),
                ));
            }
            validate_model(self, m)
                .map_err(|(key, e)| invalid_at(&m.name, key, format!("model '{}': {e}", m.name)))?;
        }
        let curate_invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            line: line_in_table(text, "curate", key),
            message,
        };
        validate_catalog(&self.curate.catalog).map_err(|m| curate_invalid("catalog", m))?;
        if self.curate.keep_snapshots == 0 {
            return Err(curate_invalid(
                "keep_snapshots",
                "[curate] keep_snapshots must be at least 1 (the current snapshot)".into(),
            ));
        }
        Ok(())
    }
}

/// `[curate] catalog` is a SQLite file path or a PostgreSQL URL without a password anywhere
/// (user part, query string, percent-encoded or not): secrets never live in the file.
fn validate_catalog(catalog: &str) -> Result<(), String> {
    let Some((scheme, _)) = catalog.split_once("://") else {
        return Ok(());
    };
    if !is_postgres_url(catalog) {
        return Err(format!(
            "[curate] catalog '{}': the scheme {scheme}:// is not a catalog's. Give a SQLite \
             file path (catalog = \"catalog.db\") or postgres://user@host:port/database",
            crate::secret::redact_url(catalog)
        ));
    }
    match crate::secret::url_password(catalog) {
        Some(place) => Err(format!(
            "[curate] catalog '{}' holds a password in {place}: secrets never live in the \
             workspace file. Write postgres://user@host:port/database and put the password in \
             PGPASSWORD",
            crate::secret::redact_url(catalog)
        )),
        None => Ok(()),
    }
}

fn join_names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = names.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn validate_model(workspace: &Workspace, m: &ModelConfig) -> Result<(), Refusal> {
    check_name("schema", &m.schema).map_err(|e| ("schema", e))?;
    if workspace.endpoints.iter().any(|e| e.name == m.schema) {
        return Err((
            "schema",
            format!(
                "schema '{}' is also an endpoint's name, whose curated tables are `{}.<schema>.<table>`: choose another",
                m.schema, m.schema
            ),
        ));
    }
    if m.sql.trim().is_empty() {
        return Err(("sql", "sql is empty: give the model's SELECT".into()));
    }
    for c in &m.checks {
        let kind = c.check.name();
        let needs = |ok: bool, what: &str| -> Result<(), Refusal> {
            if ok {
                Ok(())
            } else {
                Err(("check", format!("check {kind} needs {what}")))
            }
        };
        match c.check {
            CheckKind::NotNull | CheckKind::Unique => {
                needs(!c.columns.is_empty(), "columns = [\"...\"]")?
            }
            CheckKind::AcceptedValues => needs(
                c.columns.len() == 1 && !c.values.is_empty(),
                "one column (columns = [\"status\"]) and values = [...]",
            )?,
            CheckKind::RowCount => needs(c.min.is_some() || c.max.is_some(), "min or max")?,
            CheckKind::Freshness => needs(
                c.columns.len() == 1 && c.max_age_hours.is_some(),
                "one column and max_age_hours",
            )?,
        }
        if c.on_fail == OnFail::Quarantine && !c.check.is_per_row() {
            return Err((
                "on_fail",
                format!(
                    "check {kind} judges the whole table, not rows: it can fail or warn, not quarantine"
                ),
            ));
        }
    }
    Ok(())
}

/// Whether `[curate] catalog` names a PostgreSQL database (else it is a SQLite file).
pub fn is_postgres_url(text: &str) -> bool {
    text.split_once("://").is_some_and(|(scheme, _)| {
        scheme.eq_ignore_ascii_case("postgres") || scheme.eq_ignore_ascii_case("postgresql")
    })
}

/// Names become path segments in the lake, so keep them to a portable alphabet.
fn check_name(kind: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{kind} name '{name}' is invalid: use letters, digits, '-', '_' and '.' (it becomes a folder name in the lake)"
        ))
    }
}

/// The 1-based line of `key` in the `[[...]]` block whose `name = "<name>"` it is, so errors
/// point into the file; the block's `name` line when `key` is empty or not written there.
fn line_of(text: &str, name: &str, key: &str) -> usize {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let is_key = |l: &str, k: &str| {
        l.strip_prefix(k)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    };
    let Some(name_at) = lines
        .iter()
        .position(|l| is_key(l, "name") && l.contains(&format!("\"{name}\"")))
    else {
        return 1;
    };
    let start = lines[..name_at]
        .iter()
        .rposition(|l| l.starts_with("[["))
        .unwrap_or(0);
    let end = lines[name_at + 1..]
        .iter()
        .position(|l| l.starts_with("[["))
        .map_or(lines.len(), |i| name_at + 1 + i);
    let at = (!key.is_empty())
        .then(|| (start..end).find(|&i| is_key(lines[i], key)))
        .flatten()
        .unwrap_or(name_at);
    at + 1
}

/// The 1-based line of `key` in the `[table]` section (`[curate]`); the section's line when
/// `key` is not written there, 1 when the section is not either.
fn line_in_table(text: &str, table: &str, key: &str) -> usize {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let header = format!("[{table}]");
    let Some(start) = lines.iter().position(|l| *l == header) else {
        return 1;
    };
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.starts_with('['))
        .map_or(lines.len(), |i| start + 1 + i);
    let at = (start + 1..end)
        .find(|&i| {
            lines[i]
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .unwrap_or(start);
    at + 1
}

/// `a/b/../c` as `a/c`, without touching the file system (the folder may not exist yet).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir
                if matches!(
                    out.components().next_back(),
                    Some(std::path::Component::Normal(_))
                ) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Why an endpoint or task is refused: the key at fault (empty: the whole block) and why.
type Refusal = (&'static str, String);

/// Why `sslrootcert = "system"` goes only with verify-full: refused here when the file is
/// read, and by [`crate::tls::TlsOptions::policy`] on every other path (the app's forms).
pub const SYSTEM_ROOTS_NEED_VERIFY_FULL: &str = "sslrootcert = \"system\" trusts every public CA, \
     so it only goes with sslmode = \"verify-full\" (as in libpq): set that, or name your CA's file";

/// `hostaddr` and the TLS keys make sense together ([`crate::tls`] has the table of modes).
fn validate_tls(e: &EndpointConfig) -> Result<(), Refusal> {
    if let Some(addr) = &e.hostaddr
        && addr.parse::<std::net::IpAddr>().is_err()
    {
        return Err((
            "hostaddr",
            format!(
                "hostaddr = \"{addr}\" is not an IP address: it is where to connect (as in \
                 libpq), while host stays the name TLS verifies; put a name in host"
            ),
        ));
    }
    if e.sslcert.is_some() != e.sslkey.is_some() {
        let (has, lacks) = if e.sslcert.is_some() {
            ("sslcert", "sslkey")
        } else {
            ("sslkey", "sslcert")
        };
        return Err((
            has,
            format!("{has} needs {lacks}: a client certificate goes with its private key"),
        ));
    }
    let root = e.sslrootcert.as_deref();
    if root == Some("system") && e.sslmode.is_some_and(|m| m != SslMode::VerifyFull) {
        return Err(("sslrootcert", SYSTEM_ROOTS_NEED_VERIFY_FULL.into()));
    }
    let unused = [
        ("sslrootcert", root.is_some()),
        ("sslcert", e.sslcert.is_some()),
        ("sslkey", e.sslkey.is_some()),
    ]
    .into_iter()
    .find_map(|(key, set)| set.then_some(key));
    if e.sslmode == Some(SslMode::Disable)
        && let Some(key) = unused
    {
        return Err((
            key,
            format!(
                "{key} is unused with sslmode = \"disable\": remove it, or choose verify-full \
                 to use it"
            ),
        ));
    }
    Ok(())
}

fn validate_endpoint(e: &EndpointConfig) -> Result<(), Refusal> {
    if e.password.is_some() {
        return Err((
            "password",
            "a plain `password` key is refused: secrets never live in the workspace file. \
             Put the password in an environment variable and name it, e.g. password_env = \"PGPASSWORD\", \
             or store it in the OS keyring and set password_keyring = true"
                .into(),
        ));
    }
    if let Some(var) = &e.password_env {
        crate::secret::check_password_env(var, &e.name).map_err(|reason| {
            (
                "password_env",
                format!("password_env = \"{var}\" is refused: {reason}"),
            )
        })?;
    }
    let sources = [
        ("password_env", e.password_env.is_some()),
        ("password_keyring", e.password_keyring),
        ("password_secret", e.password_secret.is_some()),
    ];
    let named: Vec<&str> = sources
        .iter()
        .filter(|(_, on)| *on)
        .map(|(k, _)| *k)
        .collect();
    if let [_, second, ..] = named[..] {
        return Err((
            second,
            format!(
                "{} {} say where the password is: keep one",
                named.join(" and "),
                if named.len() == 2 { "both" } else { "all" }
            ),
        ));
    }
    if e.password_secret
        .as_deref()
        .is_some_and(|id| id.trim().is_empty())
    {
        return Err((
            "password_secret",
            "password_secret is empty: name the AWS Secrets Manager secret (its name or ARN)"
                .into(),
        ));
    }
    let present = |field: &str| -> bool {
        match field {
            "host" => e.host.is_some(),
            "port" => e.port.is_some(),
            "hostaddr" => e.hostaddr.is_some(),
            "database" => e.database.is_some(),
            "user" => e.user.is_some(),
            "password_env" => e.password_env.is_some(),
            "password_keyring" => e.password_keyring,
            "password_secret" => e.password_secret.is_some(),
            "sslmode" => e.sslmode.is_some(),
            "sslrootcert" => e.sslrootcert.is_some(),
            "sslcert" => e.sslcert.is_some(),
            "sslkey" => e.sslkey.is_some(),
            "path" => e.path.is_some(),
            "bucket" => e.bucket.is_some(),
            "region" => e.region.is_some(),
            "endpoint_url" => e.endpoint_url.is_some(),
            "force_path_style" => e.force_path_style.is_some(),
            "profile" => e.profile.is_some(),
            "ca_bundle" => e.ca_bundle.is_some(),
            _ => false,
        }
    };
    const DATABASE_KEYS: &[&str] = &[
        "host",
        "port",
        "hostaddr",
        "database",
        "user",
        "password_env",
        "password_keyring",
        "password_secret",
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
    ];
    const LOCAL_KEYS: &[&str] = &["path"];
    const S3_KEYS: &[&str] = &[
        "bucket",
        "region",
        "endpoint_url",
        "force_path_style",
        "profile",
        "ca_bundle",
    ];
    let (required, allowed): (&[&str], &[&str]) = match e.engine {
        Engine::Postgres | Engine::Mysql => (&["host", "user"], DATABASE_KEYS),
        Engine::Local => (&["path"], LOCAL_KEYS),
        Engine::S3 => (&["bucket"], S3_KEYS),
    };
    for field in required {
        // A secret may hold the host and the user ([`EndpointConfig::filled_from`]).
        let from_secret = e.password_secret.is_some() && matches!(*field, "host" | "user");
        if !present(field) && !from_secret {
            return Err(("", format!("engine {} needs `{field}`", e.engine.name())));
        }
    }
    for &field in DATABASE_KEYS.iter().chain(LOCAL_KEYS).chain(S3_KEYS) {
        if present(field) && !allowed.contains(&field) {
            return Err((
                field,
                format!(
                    "`{field}` does not apply to engine {} (it takes: {})",
                    e.engine.name(),
                    allowed.join(", ")
                ),
            ));
        }
    }
    validate_tls(e)?;
    if let Some(url) = &e.endpoint_url {
        let shown = crate::secret::redact_url(url);
        if let Some(place) = crate::secret::url_password(url) {
            return Err((
                "endpoint_url",
                format!(
                    "endpoint_url '{shown}' holds a secret in {place}: S3 credentials come from \
                     the AWS credential chain (environment, `profile`, SSO, instance role), \
                     never from the workspace file"
                ),
            ));
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err((
                "endpoint_url",
                format!("endpoint_url '{shown}' must start with http:// or https://"),
            ));
        }
    }
    Ok(())
}

fn validate_task(ws: &Workspace, t: &TaskConfig) -> Result<(), Refusal> {
    let engine_of = |name: &str| {
        ws.endpoints
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.engine)
    };
    match engine_of(&t.source) {
        None => {
            return Err((
                "source",
                format!("source endpoint '{}' is not defined", t.source),
            ));
        }
        Some(e) if !e.is_source() => {
            return Err((
                "source",
                format!(
                    "source '{}' is a target endpoint (engine {e:?}); a source is postgres or mysql",
                    t.source
                ),
            ));
        }
        _ => {}
    }
    match engine_of(&t.target) {
        None => {
            return Err((
                "target",
                format!("target endpoint '{}' is not defined", t.target),
            ));
        }
        Some(e) if e.is_source() => {
            return Err((
                "target",
                format!(
                    "target '{}' is a source endpoint (engine {e:?}); a target is local or s3",
                    t.target
                ),
            ));
        }
        _ => {}
    }
    for rule in t.include.iter().chain(&t.exclude) {
        if let Err(message) = crate::ident::parse_rule(rule) {
            let key = if t.include.contains(rule) {
                "include"
            } else {
                "exclude"
            };
            return Err((key, message));
        }
    }
    let s = &t.target_settings;
    if s.data_format != DataFormat::Parquet
        && matches!(s.compression, Compression::Snappy | Compression::Zstd)
    {
        return Err((
            "compression",
            format!(
                "compression {:?} applies to parquet only; {} files take gzip or none",
                s.compression,
                s.data_format.extension()
            )
            .to_lowercase(),
        ));
    }
    if s.max_file_size < 1 {
        return Err((
            "max_file_size",
            "max_file_size is in KB and must be at least 1".into(),
        ));
    }
    if s.bucket_folder.starts_with('/') || s.bucket_folder.split('/').any(|p| p == "..") {
        return Err((
            "bucket_folder",
            format!(
                "bucket_folder '{}' must be a relative folder name",
                s.bucket_folder
            ),
        ));
    }
    if t.full_load_settings.max_full_load_sub_tasks == 0 {
        return Err((
            "max_full_load_sub_tasks",
            "full_load_settings.max_full_load_sub_tasks must be at least 1".into(),
        ));
    }
    let c = &t.cdc_settings;
    for (key, name) in [
        ("slot_name", &c.slot_name),
        ("publication_name", &c.publication_name),
    ] {
        let valid = name.len() <= 63
            && name
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
        if !name.is_empty() && !valid {
            return Err((
                key,
                format!("{key} '{name}': use lower-case letters, digits and '_', at most 63"),
            ));
        }
    }
    if c.heartbeat_frequency == 0 {
        return Err((
            "heartbeat_frequency",
            "heartbeat_frequency is in minutes and must be at least 1".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_slot_names_are_unique_per_database_and_task_and_fit_postgresql() {
        let mut task = TaskConfig {
            name: "cdc".into(),
            ..serde_json::from_value(serde_json::json!({
                "name": "cdc", "source": "s", "target": "t"
            }))
            .expect("a task")
        };
        let name = task.slot_name("shop", false);
        assert!(
            name.starts_with("tributary_cdc_shop_") && name.len() == 27,
            "{name}"
        );
        assert_eq!(task.slot_name("shop", true), "tributary_cdc");
        // Never another task's name of before, nor another pair's.
        let other = TaskConfig {
            name: "cdc_shop".into(),
            ..task.clone()
        };
        assert_ne!(name, other.legacy_slot_name());
        assert_ne!(
            task.slot_name("b_c", false),
            TaskConfig {
                name: "cdc_b".into(),
                ..task.clone()
            }
            .slot_name("c", false)
        );
        assert_ne!(
            task.slot_name("shop", false),
            task.slot_name("shop2", false)
        );
        // Names the alphabet changes, or too long: cut, with a hash that keeps them apart.
        let (a, b) = (
            task.slot_name("Shop-EU", false),
            task.slot_name("shop_eu", false),
        );
        assert_ne!(a, b);
        assert!(
            a.starts_with("tributary_cdc_shop_eu_") && a.len() <= 63,
            "{a}"
        );
        let long = task.slot_name(&"d".repeat(80), false);
        assert!(long.len() <= 63 && long.is_ascii(), "{long}");
        assert_ne!(long, task.slot_name(&"d".repeat(81), false));
        task.cdc_settings.slot_name = "mine".into();
        assert_eq!(task.slot_name("shop", false), "mine");
    }

    const GOOD: &str = r#"
[[endpoints]]
name = "shop"
engine = "postgres"
host = "127.0.0.1"
port = 5432
database = "shop"
user = "postgres"
password_env = "PGPASSWORD"

[[endpoints]]
name = "lake"
engine = "local"
path = "/tmp/lake"

[[tasks]]
name = "shop-to-lake"
source = "shop"
target = "lake"
include = ["public.%"]

[tasks.target_settings]
data_format = "parquet"
compression = "snappy"
"#;

    fn parse(text: &str) -> Result<Workspace, ConfigError> {
        Workspace::parse(text, Path::new("ws.toml"))
    }

    #[test]
    fn good_file_takes_dms_defaults() {
        let ws = parse(GOOD).expect("valid");
        let t = &ws.tasks[0];
        assert_eq!(t.migration_type, MigrationType::FullLoad);
        assert_eq!(t.target_settings.data_format, DataFormat::Parquet);
        assert_eq!(t.target_settings.max_file_size, 1_048_576);
        assert_eq!(t.target_settings.cdc_max_batch_interval, 60);
        assert_eq!(t.target_settings.cdc_min_file_size, 32_000);
        assert!(!t.target_settings.date_partition_enabled);
        // Round trip: what the app writes, the CLI reads.
        let again = parse(&ws.to_toml()).expect("round trip");
        assert_eq!(again.tasks[0].name, "shop-to-lake");
        assert_eq!(again.endpoints.len(), 2);
    }

    #[test]
    fn plain_password_is_refused_with_line_and_fix() {
        let text = GOOD.replace("password_env = \"PGPASSWORD\"", "password = \"hunter2\"");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("line 9"), "{err}");
        assert!(err.contains("password_env"), "{err}");
        assert!(
            !err.contains("hunter2"),
            "the error must not echo the secret: {err}"
        );
    }

    #[test]
    fn a_secret_may_hold_host_and_user_but_not_share_the_password_source() {
        let only_secret = GOOD
            .replace("host = \"127.0.0.1\"\n", "")
            .replace("user = \"postgres\"\n", "")
            .replace(
                "password_env = \"PGPASSWORD\"",
                "password_secret = \"prod/shop\"",
            );
        let ws = parse(&only_secret).unwrap();
        assert_eq!(
            ws.endpoints[0].password_secret.as_deref(),
            Some("prod/shop")
        );
        let both = GOOD.replace(
            "password_env = \"PGPASSWORD\"",
            "password_env = \"PGPASSWORD\"\npassword_secret = \"prod/shop\"",
        );
        let err = parse(&both).unwrap_err().to_string();
        assert!(
            err.contains("password_env and password_secret both") && err.contains("keep one"),
            "{err}"
        );
        let empty = GOOD.replace("password_env = \"PGPASSWORD\"", "password_secret = \" \"");
        let err = parse(&empty).unwrap_err().to_string();
        assert!(err.contains("password_secret is empty"), "{err}");
        // Without a secret, host stays required.
        let err = parse(&GOOD.replace("host = \"127.0.0.1\"\n", ""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs `host`"), "{err}");
        // ca_bundle is an S3 key, resolved against the workspace file's folder.
        let err = parse(&GOOD.replace(
            "path = \"/tmp/lake\"",
            "path = \"/tmp/lake\"\nca_bundle = \"ca.pem\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("`ca_bundle` does not apply"), "{err}");
        let s3 = GOOD.replace(
            "engine = \"local\"\npath = \"/tmp/lake\"",
            "engine = \"s3\"\nbucket = \"b\"\nca_bundle = \"certs/ca.pem\"",
        );
        let mut ws = Workspace::parse(&s3, Path::new("/etc/ws/ws.toml")).unwrap();
        ws.resolve_relative_paths(Path::new("/etc/ws/ws.toml"));
        assert_eq!(
            ws.endpoints[1].ca_bundle.as_deref(),
            Some(Path::new("/etc/ws/certs/ca.pem"))
        );
    }

    #[test]
    fn tls_keys_must_make_sense_together() {
        let with = |keys: &str| {
            GOOD.replace(
                "password_env = \"PGPASSWORD\"",
                &format!("password_env = \"PGPASSWORD\"\n{keys}"),
            )
        };
        for (keys, needle) in [
            ("sslcert = \"c.pem\"", "sslcert needs sslkey"),
            ("sslkey = \"k.pem\"", "sslkey needs sslcert"),
            (
                "sslmode = \"verify-ca\"\nsslrootcert = \"system\"",
                "only goes with sslmode = \"verify-full\"",
            ),
            (
                "sslmode = \"disable\"\nsslrootcert = \"ca.pem\"",
                "unused with sslmode = \"disable\"",
            ),
            ("sslmode = \"allow\"", "verify-full"),
        ] {
            let err = parse(&with(keys)).unwrap_err().to_string();
            assert!(err.contains(needle), "{keys}: {err}");
        }
        let ok = with("sslmode = \"verify-full\"\nsslrootcert = \"certs/ca.pem\"");
        let mut ws = Workspace::parse(&ok, Path::new("/etc/ws/ws.toml")).unwrap();
        ws.resolve_relative_paths(Path::new("/etc/ws/ws.toml"));
        assert_eq!(
            ws.endpoints[0].sslrootcert.as_deref(),
            Some("/etc/ws/certs/ca.pem")
        );
        let system = with("sslrootcert = \"system\"");
        let mut ws = Workspace::parse(&system, Path::new("/etc/ws/ws.toml")).unwrap();
        ws.resolve_relative_paths(Path::new("/etc/ws/ws.toml"));
        assert_eq!(ws.endpoints[0].sslrootcert.as_deref(), Some("system"));
        // ... and with no sslmode it means verify-full, as in libpq 16.
        let tls = crate::tls::TlsOptions::from_endpoint(&ws.endpoints[0], false);
        assert_eq!(tls.mode, SslMode::VerifyFull);
    }

    #[test]
    fn a_secret_fills_what_the_endpoint_leaves_out_and_never_goes_elsewhere() {
        use crate::secret::secrets_manager::DbSecret;
        let secret = DbSecret {
            username: Some("dms".into()),
            password: "pw".into(),
            host: Some("db.example.com".into()),
            port: Some(5433),
            dbname: Some("shop".into()),
        };
        let mut e: EndpointConfig =
            toml::from_str("name = \"src\"\nengine = \"postgres\"\npassword_secret = \"s\"")
                .unwrap();
        let filled = e.filled_from("s", &secret).unwrap();
        assert_eq!(filled.host.as_deref(), Some("db.example.com"));
        assert_eq!(filled.port, Some(5433));
        assert_eq!(filled.user.as_deref(), Some("dms"));
        assert_eq!(filled.database.as_deref(), Some("shop"));
        // The endpoint's own database wins (one server, many databases); the same host in
        // other letters is the same host.
        e.database = Some("other".into());
        e.host = Some("DB.example.com".into());
        let filled = e.filled_from("s", &secret).unwrap();
        assert_eq!(filled.database.as_deref(), Some("other"));
        // Another host, port or user would send the secret's password elsewhere.
        for (key, edit) in [
            (
                "host",
                (|e: &mut EndpointConfig| e.host = Some("evil.example.com".into()))
                    as fn(&mut EndpointConfig),
            ),
            ("port", |e| e.port = Some(5432)),
            ("user", |e| e.user = Some("postgres".into())),
        ] {
            let mut bad = e.clone();
            edit(&mut bad);
            let err = bad.filled_from("s", &secret).unwrap_err().to_string();
            assert!(
                err.contains(&format!("its {key} is")) && err.contains(&format!("remove `{key}`")),
                "{err}"
            );
        }
        // Nothing gives a host: say where to put one.
        let bare = DbSecret {
            host: None,
            ..secret
        };
        e.host = None;
        let err = e.filled_from("s", &bare).unwrap_err().to_string();
        assert!(
            err.contains("no host") && err.contains("\"host\" to the secret"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_names_line_key_and_expected() {
        let text = GOOD.replace("compression = \"snappy\"", "compresion = \"snappy\"");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("compresion"), "{err}");
        assert!(err.contains("line 24"), "{err}");
        assert!(err.contains("compression"), "expected keys listed: {err}");
    }

    #[test]
    fn bad_enum_value_lists_choices() {
        let text = GOOD.replace("data_format = \"parquet\"", "data_format = \"orc\"");
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("orc") && err.contains("parquet") && err.contains("csv"),
            "{err}"
        );
    }

    #[test]
    fn task_must_reference_existing_endpoints() {
        let text = GOOD.replace("target = \"lake\"", "target = \"nowhere\"");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("'nowhere' is not defined"), "{err}");
        let text = GOOD.replace("target = \"lake\"", "target = \"shop\"");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("is a source endpoint"), "{err}");
    }

    #[test]
    fn engine_fields_are_checked() {
        let text = GOOD.replace("path = \"/tmp/lake\"", "bucket = \"b\"");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("needs `path`"), "{err}");
        let text = GOOD.replace("include = [\"public.%\"]", "include = [\"orders\"]");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("schema.table"), "{err}");
    }

    #[test]
    fn password_env_naming_another_secret_is_refused_with_line_and_fix() {
        for var in ["AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "DATABASE_URL"] {
            let text = GOOD.replace("\"PGPASSWORD\"", &format!("\"{var}\""));
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains("line 9"), "{err}");
            assert!(
                err.contains(&format!("password_env = \"{var}\" is refused")),
                "{err}"
            );
            assert!(err.contains("TRIBUTARY_SHOP_PASSWORD"), "the fix: {err}");
        }
    }

    #[tokio::test]
    async fn password_env_is_checked_again_where_the_password_is_read() {
        let mut ws = parse(GOOD).expect("valid");
        // As the app builds it, without parsing a file.
        ws.endpoints[0].password_env = Some("AWS_SECRET_ACCESS_KEY".into());
        let err = ws.endpoints[0].resolve_password().await.unwrap_err();
        assert!(
            matches!(err, ConfigError::RefusedPasswordEnv { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("AWS credential"), "{err}");
    }

    #[test]
    fn a_password_anywhere_in_the_catalog_url_is_refused_and_not_shown() {
        for catalog in [
            "postgres://u:hunter2@db/cat",
            "postgresql://u:hunter2@db/cat",
            "POSTGRES://u:hunter2@db/cat",
            "postgres://u@db/cat?password=hunter2",
            "postgres://u@db/cat?sslmode=require&pass%77ord=hunter2",
            "postgres://u@db/cat?sslpassword=hunter2",
        ] {
            let text = format!("{GOOD}\n[curate]\nfolder = \"c\"\ncatalog = \"{catalog}\"\n");
            let line = text.lines().position(|l| l.starts_with("catalog")).unwrap() + 1;
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(&format!("line {line}:")), "{err}");
            assert!(err.contains("put the password in PGPASSWORD"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        let text = format!("{GOOD}\n[curate]\ncatalog = \"mysql://u:hunter2@db/cat\"\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("SQLite") && !err.contains("hunter2"), "{err}");
        let text = format!("{GOOD}\n[curate]\ncatalog = \"postgres://u@db:5432/cat\"\n");
        parse(&text).expect("no password: valid");
        let text = format!("{GOOD}\n[curate]\nkeep_snapshots = 0\n");
        let line = text.lines().position(|l| l.starts_with("keep_")).unwrap() + 1;
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains(&format!("line {line}:")), "{err}");
    }

    #[test]
    fn credentials_in_an_s3_endpoint_url_are_refused_and_not_shown() {
        let text = GOOD.replace(
            "engine = \"local\"\npath = \"/tmp/lake\"",
            "engine = \"s3\"\nbucket = \"b\"\nendpoint_url = \"http://AKIA:hunter2@s3.local:9000\"",
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("credential chain"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
