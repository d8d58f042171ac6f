//! Secrets: endpoint passwords in the OS keyring or in AWS Secrets Manager
//! ([`secrets_manager`]), which environment variables may hold a password, and connection
//! URLs made safe to print.
//!
//! The keyring is the desktop's Secret Service (GNOME Keyring, KWallet, KeePassXC) over
//! D-Bus. An endpoint with `password_keyring = true` keeps its password in the entry with
//! service `tributary` and user `engine://user@host:port` (see [`entry_user`]), like a
//! `.pgpass` line: renaming the endpoint keeps the password, pointing it at another server or
//! user needs that server's password. Nothing here caches a password or writes one anywhere
//! else. Calls are short local IPC and blocking: the app makes them on its background
//! runtime, never on the UI thread.
//!
//! Invariants:
//! - `password_env` names a variable that holds a password and nothing else
//!   ([`check_password_env`]): a workspace file, which may come from anyone, decides which
//!   host gets that variable's value, so it must not be able to name a cloud key, a CI token or
//!   any other secret the user's environment holds;
//! - a connection URL reaches a message, a log line or the app only through [`redact_url`],
//!   and a catalog URL holding a password is refused ([`url_password`]).

pub mod secrets_manager;

use keyring_core::api::CredentialStoreApi;
use zbus_secret_service_keyring_store::Store;

/// The keyring's service name for every Tributary entry.
pub const SERVICE: &str = "tributary";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "endpoint '{endpoint}': the OS keyring is not reachable ({reason}). It needs a desktop session's Secret Service (GNOME Keyring, KWallet); on a server, name an environment variable with password_env instead"
    )]
    Unavailable { endpoint: String, reason: String },
    #[error(
        "endpoint '{endpoint}': the OS keyring has no password for {entry}. Store it with the app's \"Save in keyring\", or `tributary password set WORKSPACE --endpoint {endpoint}`"
    )]
    Missing { endpoint: String, entry: String },
    #[error(
        "endpoint '{endpoint}': the OS keyring refused access to {entry} ({reason}). Unlock the keyring (log in to the desktop session) and try again"
    )]
    Locked {
        endpoint: String,
        entry: String,
        reason: String,
    },
    #[error(
        "endpoint '{endpoint}': AWS Secrets Manager secret '{secret}' (password_secret): {kind}"
    )]
    SecretsManager {
        endpoint: String,
        secret: String,
        kind: secrets_manager::SmFailure,
    },
    #[error("endpoint '{endpoint}': the OS keyring failed on {entry}: {reason}")]
    Failed {
        endpoint: String,
        entry: String,
        reason: String,
    },
}

/// Where an endpoint's password is in the keyring: service `tributary`, user
/// `engine://user@host:port` (like a `.pgpass` line: renaming the endpoint keeps it, another
/// server or user needs its own). [`crate::config::EndpointConfig::keyring_entry`] makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringEntry {
    /// The endpoint's name, for messages.
    pub endpoint: String,
    pub user: String,
}

impl KeyringEntry {
    pub fn new(endpoint: &str, engine: &str, user: &str, host: &str, port: Option<u16>) -> Self {
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        KeyringEntry {
            endpoint: endpoint.to_owned(),
            user: format!("{engine}://{user}@{host}{port}"),
        }
    }

    /// A human name of the entry, for messages.
    pub fn name(&self) -> String {
        format!("{SERVICE} / {}", self.user)
    }
}

/// The endpoint's password from the keyring.
pub fn get(e: &KeyringEntry) -> Result<String, SecretError> {
    entry(e)?.get_password().map_err(|err| classify(e, err))
}

/// Stores (or replaces) the endpoint's password in the keyring.
pub fn set(e: &KeyringEntry, password: &str) -> Result<(), SecretError> {
    entry(e)?
        .set_password(password)
        .map_err(|err| classify(e, err))
}

/// Removes the endpoint's password from the keyring; a missing one is not an error.
pub fn delete(e: &KeyringEntry) -> Result<(), SecretError> {
    match entry(e)?.delete_credential() {
        Ok(()) | Err(keyring_core::Error::NoEntry) => Ok(()),
        Err(err) => Err(classify(e, err)),
    }
}

/// Prefixes of variables other tools keep credentials in, with what they hold. A database
/// password is never named like these, whatever its suffix (`CI_REGISTRY_PASSWORD`,
/// `AZURE_PASSWORD` and `DOCKER_PASSWORD` end like passwords but are not the database's).
const CREDENTIAL_PREFIXES: &[(&str, &str)] = &[
    ("AWS_", "an AWS credential or setting"),
    ("AZURE_", "an Azure credential or setting"),
    ("ARM_", "an Azure (Terraform) credential"),
    ("GOOGLE_", "a Google Cloud credential or setting"),
    ("GCP_", "a Google Cloud credential or setting"),
    ("GCLOUD_", "a Google Cloud credential or setting"),
    ("CLOUDSDK_", "a Google Cloud SDK setting"),
    ("GITHUB_", "a GitHub token or setting"),
    ("GH_", "a GitHub CLI token"),
    ("ACTIONS_", "a GitHub Actions runtime token"),
    ("CI_", "a CI job's credential or setting"),
    ("GITLAB_", "a GitLab token or setting"),
    ("RUNNER_", "a CI runner's setting"),
    ("SSH_", "an SSH agent or key"),
    ("GPG_", "a GnuPG agent or key"),
    ("VAULT_", "a HashiCorp Vault token or setting"),
    ("DOCKER_", "a container registry credential"),
    ("NPM_", "a package registry token"),
    ("NODE_AUTH_", "a package registry token"),
    ("TWINE_", "a package registry credential"),
    ("CARGO_REGISTR", "a package registry token"),
];

/// Words that mark a variable as holding a secret other than a password.
const SECRET_WORDS: &[&str] = &[
    "SECRET",
    "TOKEN",
    "PRIVATE_KEY",
    "ACCESS_KEY",
    "API_KEY",
    "APIKEY",
    "CREDENTIAL",
    "SESSION",
];

/// How a variable holding a password ends: `PGPASSWORD`, `MYSQL_PWD`, `TRIBUTARY_SHOP_PASSWORD`.
const PASSWORD_SUFFIXES: &[&str] = &["PASSWORD", "PASSWD", "_PWD", "_PW", "_PASS"];

/// Whether `password_env` may name `var`, for the endpoint named `endpoint`: `Err` says why
/// not and what to name instead. The rule, case-insensitive:
/// - it is an environment variable name (letters, digits and `_`, not starting with a digit);
/// - it is not another tool's credential variable (`AWS_*`, `AZURE_*`, `GOOGLE_*`,
///   `GITHUB_*`, `GH_*`, `CI_*`, `SSH_*`, … see [`CREDENTIAL_PREFIXES`]) and holds none of the
///   words `SECRET`, `TOKEN`, `PRIVATE_KEY`, `ACCESS_KEY`, `API_KEY`, `CREDENTIAL`, `SESSION`;
/// - it is named like a password: it ends in `PASSWORD`, `PASSWD`, `_PWD`, `_PW` or `_PASS`,
///   so a variable holding anything else (a `DATABASE_URL` with its credentials, a license
///   key) cannot be sent to the server a workspace file names either.
pub fn check_password_env(var: &str, endpoint: &str) -> Result<(), String> {
    let own: String = endpoint
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    let fix = format!(
        "Export the database's password under a name of its own, e.g. \
         `export TRIBUTARY_{own}_PASSWORD=...`, and name that (or use PGPASSWORD, MYSQL_PWD, \
         or the OS keyring: password_keyring = true)"
    );
    let valid = var
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "'{var}' is not an environment variable name (letters, digits and '_'). {fix}"
        ));
    }
    let upper = var.to_ascii_uppercase();
    let why = if let Some((_, what)) = CREDENTIAL_PREFIXES
        .iter()
        .find(|(prefix, _)| upper.starts_with(prefix))
    {
        Some(format!("{var} is where {what} is kept"))
    } else {
        SECRET_WORDS
            .iter()
            .find(|word| upper.contains(*word))
            .map(|word| format!("{var} is named like a secret of another kind ({word})"))
    };
    if let Some(why) = why {
        return Err(format!(
            "{why}, not a database password: the workspace file would send its value to the \
             server it names. {fix}"
        ));
    }
    if !PASSWORD_SUFFIXES.iter().any(|s| upper.ends_with(s)) {
        return Err(format!(
            "{var} is not named like a password: password_env names a variable ending in \
             PASSWORD, PASSWD, _PWD, _PW or _PASS, so that a workspace file cannot send another \
             variable's value (a key, a token, a DATABASE_URL) to the server it names. {fix}"
        ));
    }
    Ok(())
}

/// Where `url` holds a password, if it does: its user part (`user:password@`) or a query (or
/// fragment) parameter named like one (`password`, `sslpassword`, `passwd`, `pwd`, or holding
/// `secret` or `token`), percent-encoded or not, in any case. A text that does not parse as a
/// URL but has a user part or a query may hide one too.
pub fn url_password(url: &str) -> Option<String> {
    let Ok(parsed) = url::Url::parse(url) else {
        let rest = url.split_once("://").map_or("", |(_, rest)| rest);
        return (rest.contains('@') || rest.contains('?') || rest.contains('#'))
            .then(|| "the URL, which does not parse, and may hide one in it".to_owned());
    };
    if parsed.password().is_some() {
        return Some("its user part (user:password@host)".into());
    }
    secret_parameter(&parsed).map(|key| format!("its parameter `{key}`"))
}

/// The first query or fragment parameter of `url` named like a secret.
fn secret_parameter(url: &url::Url) -> Option<String> {
    let fragment = url.fragment().unwrap_or_default();
    url.query_pairs()
        .chain(url::form_urlencoded::parse(fragment.as_bytes()))
        .map(|(key, _)| key.into_owned())
        .find(|key| is_secret_key(key))
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["pass", "pwd", "secret", "token"]
        .iter()
        .any(|word| key.contains(word))
        && key != "passfile"
}

/// `url` as it may be shown: the password of its user part and the values of parameters named
/// like secrets replaced by `***`; a text with `://` that does not parse as a URL keeps only
/// its scheme. Anything else (a file path) is returned as it is.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return match url.split_once("://") {
            Some((scheme, rest)) if rest.contains(['@', '?', '#']) => {
                format!("{scheme}://*** (the rest hidden: it does not parse as a URL)")
            }
            _ => url.to_owned(),
        };
    };
    if parsed.password().is_none() && secret_parameter(&parsed).is_none() {
        return url.to_owned();
    }
    if parsed.password().is_some() && parsed.set_password(Some("***")).is_err() {
        return format!("{}://***", parsed.scheme());
    }
    fn hide(pairs: url::form_urlencoded::Parse<'_>) -> Vec<(String, String)> {
        pairs
            .map(|(k, v)| {
                let v = if is_secret_key(&k) {
                    "***".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect()
    }
    if let Some(query) = parsed.query().map(str::to_owned) {
        let pairs = hide(url::form_urlencoded::parse(query.as_bytes()));
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    if let Some(fragment) = parsed.fragment().map(str::to_owned) {
        let pairs = hide(url::form_urlencoded::parse(fragment.as_bytes()));
        let fragment = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        parsed.set_fragment(Some(&fragment));
    }
    parsed.to_string()
}

fn entry(e: &KeyringEntry) -> Result<keyring_core::Entry, SecretError> {
    // A new connection per call: the session bus may come and go with the desktop session.
    let store = Store::new().map_err(|err| SecretError::Unavailable {
        endpoint: e.endpoint.clone(),
        reason: err.to_string(),
    })?;
    store
        .build(SERVICE, &e.user, None)
        .map_err(|err| classify(e, err))
}

fn classify(e: &KeyringEntry, err: keyring_core::Error) -> SecretError {
    let (endpoint, entry) = (e.endpoint.clone(), e.name());
    match err {
        keyring_core::Error::NoEntry => SecretError::Missing { endpoint, entry },
        keyring_core::Error::NoStorageAccess(reason) => SecretError::Locked {
            endpoint,
            entry,
            reason: reason.to_string(),
        },
        keyring_core::Error::PlatformFailure(reason) => SecretError::Unavailable {
            endpoint,
            reason: reason.to_string(),
        },
        other => SecretError::Failed {
            endpoint,
            entry,
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_named_like_pgpass_lines() {
        let e = KeyringEntry::new("shop", "postgres", "replicator", "db.internal", Some(5433));
        assert_eq!(e.user, "postgres://replicator@db.internal:5433");
        let e = KeyringEntry::new("shop", "postgres", "replicator", "db.internal", None);
        assert_eq!(e.name(), "tributary / postgres://replicator@db.internal");
    }

    #[test]
    fn password_env_names_only_a_password() {
        for ok in [
            "PGPASSWORD",
            "MYSQL_PWD",
            "TRIBUTARY_SHOP_PASSWORD",
            "TEST_PG_PASSWORD",
            "db_passwd",
            "WRONG_PW",
            "_X_PASS",
        ] {
            assert_eq!(check_password_env(ok, "shop"), Ok(()), "{ok}");
        }
        for (refused, reason) in [
            ("AWS_SECRET_ACCESS_KEY", "AWS credential"),
            ("AWS_SESSION_TOKEN", "AWS credential"),
            ("AWS_ACCESS_KEY_ID", "AWS credential"),
            ("AWS_SECURITY_TOKEN", "AWS credential"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "AWS credential"),
            ("aws_secret_access_key", "AWS credential"),
            ("GITHUB_TOKEN", "GitHub"),
            ("GH_TOKEN", "GitHub"),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "GitHub Actions"),
            ("CI_JOB_TOKEN", "CI job"),
            ("CI_REGISTRY_PASSWORD", "CI job"),
            ("GOOGLE_APPLICATION_CREDENTIALS", "Google Cloud"),
            ("AZURE_CLIENT_SECRET", "Azure"),
            ("AZURE_PASSWORD", "Azure"),
            ("SSH_AUTH_SOCK", "SSH"),
            ("DOCKER_PASSWORD", "container registry"),
            ("STRIPE_SECRET_PASSWORD", "SECRET"),
            ("MY_TOKEN_PASSWORD", "TOKEN"),
            ("DEPLOY_PRIVATE_KEY", "PRIVATE_KEY"),
            ("OPENAI_API_KEY", "API_KEY"),
            ("DATABASE_URL", "not named like a password"),
            ("HOME", "not named like a password"),
            ("PWD", "not named like a password"),
            ("", "not an environment variable name"),
            ("A=B_PASSWORD", "not an environment variable name"),
            ("1PASSWORD", "not an environment variable name"),
        ] {
            let err = check_password_env(refused, "shop-eu.1").unwrap_err();
            assert!(err.contains(reason), "{refused}: {err}");
            assert!(
                err.contains("TRIBUTARY_SHOP_EU_1_PASSWORD"),
                "the fix names a variable of its own: {err}"
            );
        }
    }

    #[test]
    fn passwords_are_found_anywhere_in_a_url() {
        for leaky in [
            "postgres://u:hunter2@db/cat",
            "postgresql://u:hunter2@db/cat",
            "postgres://:hunter2@db/cat",
            "postgres://u@db/cat?password=hunter2",
            "postgres://u@db/cat?sslmode=require&PassWord=hunter2",
            "postgres://u@db/cat?pass%77ord=hunter2",
            "postgres://u@db/cat?sslpassword=hunter2",
            "postgres://u@db/cat?api-token=hunter2",
            "postgres://u@db/cat#password=hunter2",
            "postgres://u:hunter 2@db/cat?x",
        ] {
            assert!(url_password(leaky).is_some(), "{leaky}");
            let shown = redact_url(leaky);
            assert!(!shown.contains("hunter"), "{leaky} shown as {shown}");
        }
        for clean in [
            "postgres://u@db:5432/cat",
            "postgres://u@db/cat?sslmode=require&application_name=curate",
            "postgres://u@db/cat?passfile=/home/u/.pgpass",
            "http://127.0.0.1:9000",
            "catalog.db",
            "/srv/lake/catalog.db",
        ] {
            assert_eq!(url_password(clean), None, "{clean}");
            assert_eq!(redact_url(clean), clean, "shown as written");
        }
        assert_eq!(
            redact_url("postgres://u:hunter2@db:5432/cat?sslmode=require&password=x"),
            "postgres://u:***@db:5432/cat?sslmode=require&password=***"
        );
        assert_eq!(
            redact_url("http://key:secret@s3.local:9000"),
            "http://key:***@s3.local:9000/"
        );
    }
}
