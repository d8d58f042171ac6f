//! Endpoint passwords in the OS keyring: the desktop's Secret Service (GNOME Keyring,
//! KWallet, KeePassXC) over D-Bus.
//!
//! An endpoint with `password_keyring = true` keeps its password in the entry with service
//! `tributary` and user `engine://user@host:port` (see [`entry_user`]), like a `.pgpass`
//! line: renaming the endpoint keeps the password, pointing it at another server or user
//! needs that server's password. Nothing here caches a password or writes one anywhere
//! else. Calls are short local IPC and blocking: the app makes them on its background
//! runtime, never on the UI thread.

use keyring_core::api::CredentialStoreApi;
use zbus_secret_service_keyring_store::Store;

use crate::config::EndpointConfig;

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
    #[error("endpoint '{endpoint}': the OS keyring failed on {entry}: {reason}")]
    Failed {
        endpoint: String,
        entry: String,
        reason: String,
    },
}

/// The keyring user an endpoint's password is stored under: `engine://user@host:port`.
pub fn entry_user(e: &EndpointConfig) -> String {
    let engine = e.engine.name();
    let port = e.port.map(|p| format!(":{p}")).unwrap_or_default();
    format!(
        "{engine}://{}@{}{port}",
        e.user.as_deref().unwrap_or(""),
        e.host.as_deref().unwrap_or("")
    )
}

/// A human name of the entry, for messages.
pub fn entry_name(e: &EndpointConfig) -> String {
    format!("{SERVICE} / {}", entry_user(e))
}

/// The endpoint's password from the keyring.
pub fn get(e: &EndpointConfig) -> Result<String, SecretError> {
    entry(e)?.get_password().map_err(|err| classify(e, err))
}

/// Stores (or replaces) the endpoint's password in the keyring.
pub fn set(e: &EndpointConfig, password: &str) -> Result<(), SecretError> {
    entry(e)?
        .set_password(password)
        .map_err(|err| classify(e, err))
}

/// Removes the endpoint's password from the keyring; a missing one is not an error.
pub fn delete(e: &EndpointConfig) -> Result<(), SecretError> {
    match entry(e)?.delete_credential() {
        Ok(()) | Err(keyring_core::Error::NoEntry) => Ok(()),
        Err(err) => Err(classify(e, err)),
    }
}

fn entry(e: &EndpointConfig) -> Result<keyring_core::Entry, SecretError> {
    // A new connection per call: the session bus may come and go with the desktop session.
    let store = Store::new().map_err(|err| SecretError::Unavailable {
        endpoint: e.name.clone(),
        reason: err.to_string(),
    })?;
    store
        .build(SERVICE, &entry_user(e), None)
        .map_err(|err| classify(e, err))
}

fn classify(e: &EndpointConfig, err: keyring_core::Error) -> SecretError {
    let (endpoint, entry) = (e.name.clone(), entry_name(e));
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
        let mut e: EndpointConfig =
            toml::from_str("name = \"shop\"\nengine = \"postgres\"").unwrap();
        e.host = Some("db.internal".into());
        e.port = Some(5433);
        e.user = Some("replicator".into());
        assert_eq!(entry_user(&e), "postgres://replicator@db.internal:5433");
        e.port = None;
        assert_eq!(
            entry_name(&e),
            "tributary / postgres://replicator@db.internal"
        );
    }
}
