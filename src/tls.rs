//! TLS for source databases, with libpq's `sslmode` semantics: what each mode requires
//! ([`decide`]), the rustls client configuration that enforces it ([`TlsOptions::client_config`]),
//! certificate problems in people's words ([`explain`]) and what a connection negotiated
//! ([`Negotiated`]), for `check` and the app.
//!
//! | sslmode | without a root certificate | with one (`sslrootcert`, `~/.postgresql/root.crt`) |
//! |---|---|---|
//! | `disable` | plain | refused by the workspace check (the root certificate would be unused) |
//! | `prefer` (default) | TLS if the server offers it, not verified; else plain | TLS if offered, chain verified |
//! | `require` | TLS, not verified | TLS, chain verified (libpq: "as verify-ca") |
//! | `verify-ca` | refused: needs a root certificate | TLS, chain verified, any host name |
//! | `verify-full` | refused: needs a root certificate | TLS, chain and host name verified |
//!
//! `sslrootcert = "system"` trusts the system's CAs and allows only `verify-full` (libpq 16).
//!
//! Invariants:
//! - the crypto provider is *ring*, passed explicitly here (mysql_async installs *ring* as
//!   the process default for its own connections; it must stay the only provider built);
//! - "not verified" still checks the handshake's signatures with the certificate's key, so
//!   only verification is skipped, never the cryptography;
//! - under `verify-ca` only a host-name mismatch is forgiven (by error variant, not text);
//! - a client key readable by group or others is refused as libpq does (0600, or 0640 when
//!   owned by root), and so is an encrypted one (no `sslpassword`);
//! - nothing here reads or writes a password.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::{EndpointConfig, SslMode};

/// A TLS setting that cannot be used, with the fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "sslmode = \"{mode}\" needs a root certificate to verify the server with: set sslrootcert to the CA bundle that signed the server's certificate (RDS: the region's global-bundle.pem), or \"system\" for the system's CAs"
    )]
    NoRootCert { mode: &'static str },
    #[error("cannot read {what} {path}: {source}. Fix the path or the file's permissions")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} holds no {expected}: {reason}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
        reason: String,
    },
    #[error(
        "the client key {path} is readable by others (mode {mode:o}): the server's password equivalent must be private. Run `chmod 600 {path}`"
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error(
        "the client key {path} is encrypted, which is not supported: decrypt it with `openssl pkey -in {path} -out plain.key` and keep that file private (chmod 600)"
    )]
    EncryptedKey { path: PathBuf },
    #[error("the system's CA certificates could not be loaded: {reason}")]
    SystemRoots { reason: String },
    #[error("{}", crate::config::SYSTEM_ROOTS_NEED_VERIFY_FULL)]
    SystemNeedsVerifyFull,
    #[error("the client certificate and key do not fit together: {reason}")]
    Identity { reason: String },
    #[error("the TLS configuration was refused: {reason}")]
    Config { reason: String },
}

/// Where the root certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    File(PathBuf),
    /// The system's CAs (`sslrootcert = "system"`).
    System,
}

/// Whether to use TLS at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Never,
    /// TLS when the server offers it, plain otherwise.
    IfOffered,
    Required,
}

/// What is checked of the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    None,
    /// The chain up to a trusted root; any host name (verify-ca).
    Chain,
    /// The chain and the host name (verify-full).
    ChainAndName,
}

/// What a mode asks of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub tls: Use,
    pub verification: Verification,
}

/// The policy of `mode` with or without a root certificate (the table in the module doc).
pub fn decide(mode: SslMode, have_roots: bool) -> Result<Policy, TlsError> {
    let verified = if have_roots {
        Verification::Chain
    } else {
        Verification::None
    };
    Ok(match mode {
        SslMode::Disable => Policy {
            tls: Use::Never,
            verification: Verification::None,
        },
        SslMode::Prefer => Policy {
            tls: Use::IfOffered,
            verification: verified,
        },
        SslMode::Require => Policy {
            tls: Use::Required,
            verification: verified,
        },
        SslMode::VerifyCa | SslMode::VerifyFull if !have_roots => {
            return Err(TlsError::NoRootCert { mode: mode.name() });
        }
        SslMode::VerifyCa => Policy {
            tls: Use::Required,
            verification: Verification::Chain,
        },
        SslMode::VerifyFull => Policy {
            tls: Use::Required,
            verification: Verification::ChainAndName,
        },
    })
}

/// An endpoint's TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    pub mode: SslMode,
    pub rootcert: Option<RootCert>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl TlsOptions {
    /// The endpoint's keys. `libpq_default_root`: with no `sslrootcert`, use
    /// `~/.postgresql/root.crt` when it exists, as libpq does (PostgreSQL only).
    pub fn from_endpoint(e: &EndpointConfig, libpq_default_root: bool) -> TlsOptions {
        let rootcert = match e.sslrootcert.as_deref() {
            Some("system") => Some(RootCert::System),
            Some(path) => Some(RootCert::File(PathBuf::from(path))),
            None if libpq_default_root => std::env::var_os("HOME")
                .map(|home| Path::new(&home).join(".postgresql/root.crt"))
                .filter(|p| p.is_file())
                .map(RootCert::File),
            None => None,
        };
        let mode = e.sslmode.unwrap_or(if rootcert == Some(RootCert::System) {
            SslMode::VerifyFull
        } else {
            SslMode::Prefer
        });
        TlsOptions {
            mode,
            rootcert,
            cert: e.sslcert.clone(),
            key: e.sslkey.clone(),
        }
    }

    /// What this endpoint's mode asks; `system` roots only under verify-full, whatever
    /// path the settings came by (a file, the app).
    pub fn policy(&self) -> Result<Policy, TlsError> {
        if self.rootcert == Some(RootCert::System) && self.mode != SslMode::VerifyFull {
            return Err(TlsError::SystemNeedsVerifyFull);
        }
        decide(self.mode, self.rootcert.is_some())
    }

    /// The trusted roots, `None` without a root certificate.
    pub fn roots(&self) -> Result<Option<RootCertStore>, TlsError> {
        Ok(self.load_roots()?.map(|(_, store)| store))
    }

    /// The same roots as DER certificates, for a client that builds its own store (MySQL).
    pub fn root_certificates(&self) -> Result<Option<Vec<CertificateDer<'static>>>, TlsError> {
        Ok(self.load_roots()?.map(|(ders, _)| ders))
    }

    /// The root certificates, each a usable trust anchor, read once: as DER and as a store.
    fn load_roots(
        &self,
    ) -> Result<Option<(Vec<CertificateDer<'static>>, RootCertStore)>, TlsError> {
        let mut store = RootCertStore::empty();
        let mut ders = Vec::new();
        match &self.rootcert {
            None => return Ok(None),
            Some(RootCert::System) => {
                let found = rustls_native_certs::load_native_certs();
                let reason = found.errors.first().map(ToString::to_string);
                for der in found.certs {
                    if store.add(der.clone()).is_ok() {
                        ders.push(der);
                    }
                }
                if ders.is_empty() {
                    return Err(TlsError::SystemRoots {
                        reason: reason.unwrap_or_else(|| "none found".into()),
                    });
                }
            }
            Some(RootCert::File(path)) => {
                for der in certificates(path, "the root certificate file (sslrootcert)")? {
                    store.add(der.clone()).map_err(|e| TlsError::Pem {
                        what: "the root certificate file (sslrootcert)",
                        path: path.clone(),
                        expected: "usable CA certificate",
                        reason: e.to_string(),
                    })?;
                    ders.push(der);
                }
            }
        }
        Ok(Some((ders, store)))
    }

    /// The client certificate chain and key (`sslcert`, `sslkey`), checked as libpq does.
    pub fn identity(
        &self,
    ) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, TlsError> {
        let (Some(cert), Some(key)) = (&self.cert, &self.key) else {
            return Ok(None);
        };
        let chain = certificates(cert, "the client certificate (sslcert)")?;
        let text = std::fs::read(key).map_err(|source| TlsError::Read {
            what: "the client key (sslkey)",
            path: key.clone(),
            source,
        })?;
        check_key_permissions(key)?;
        if text
            .windows(b"ENCRYPTED PRIVATE KEY".len())
            .any(|w| w == b"ENCRYPTED PRIVATE KEY")
            || text
                .windows(b"Proc-Type: 4,ENCRYPTED".len())
                .any(|w| w == b"Proc-Type: 4,ENCRYPTED")
        {
            return Err(TlsError::EncryptedKey { path: key.clone() });
        }
        let der = PrivateKeyDer::from_pem_slice(&text).map_err(|e| TlsError::Pem {
            what: "the client key (sslkey)",
            path: key.clone(),
            expected: "PEM private key",
            reason: e.to_string(),
        })?;
        Ok(Some((chain, der)))
    }

    /// The rustls configuration enforcing this endpoint's policy (`alpn`: the protocol names
    /// to offer, e.g. `postgresql`).
    pub fn client_config(
        &self,
        policy: Policy,
        alpn: &[&[u8]],
    ) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match (policy.verification, self.roots()?) {
            (Verification::None, _) | (_, None) => Arc::new(NoVerification(provider.clone())),
            (verification, Some(roots)) => {
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| TlsError::Config {
                            reason: e.to_string(),
                        })?;
                if verification == Verification::Chain {
                    Arc::new(ChainOnly(webpki))
                } else {
                    webpki
                }
            }
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config {
                reason: e.to_string(),
            })?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match self.identity()? {
            Some((chain, key)) => {
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsError::Identity {
                        reason: e.to_string(),
                    })?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

fn certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    let pem = |reason: String| TlsError::Pem {
        what,
        path: path.to_owned(),
        expected: "PEM certificate (-----BEGIN CERTIFICATE-----)",
        reason,
    };
    let ders = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(e.to_string()))?;
    if ders.is_empty() {
        return Err(pem("none found".into()));
    }
    Ok(ders)
}

/// libpq's rule: a key file must not be readable by group or others (0600), except one
/// owned by root, which the group may read (0640).
fn check_key_permissions(path: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|source| TlsError::Read {
        what: "the client key (sslkey)",
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.mode() & 0o777;
    let allowed = if meta.uid() == 0 { 0o640 } else { 0o600 };
    if mode & !allowed != 0 {
        return Err(TlsError::KeyPermissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Accepts any certificate (no verification was asked for) but still checks that the
/// server signed the handshake with the certificate's key.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// verify-ca: the chain must verify; a certificate for another host name is accepted.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A failed handshake in people's words: what is wrong and how to fix it.
pub fn explain(err: &rustls::Error, host: &str) -> (String, String) {
    use rustls::AlertDescription as Alert;
    let ca_fix = "set sslrootcert to the CA bundle that signed the server's certificate \
                  (RDS: the region's global-bundle.pem)"
        .to_owned();
    match err {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => (
                "the server's certificate is not signed by a CA in sslrootcert".into(),
                ca_fix,
            ),
            CertificateError::NotValidForNameContext { presented, .. } => (
                format!(
                    "the server's certificate is for {}, not {host}",
                    presented
                        .iter()
                        .map(|p| presented_name(p))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                "connect by a name the certificate holds (host), or use sslmode = verify-ca \
                 to check the chain only"
                    .into(),
            ),
            CertificateError::NotValidForName => (
                format!("the server's certificate is not for {host}"),
                "connect by a name the certificate holds (host), or use sslmode = verify-ca \
                 to check the chain only (a certificate without subjectAltName needs one)"
                    .into(),
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                let when = match c {
                    CertificateError::ExpiredContext { not_after, .. } => {
                        format!(" on {}", day(not_after.as_secs()))
                    }
                    _ => String::new(),
                };
                (
                    format!("the server's certificate expired{when}"),
                    "renew the server's certificate".into(),
                )
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => (
                "the server's certificate is not valid yet".into(),
                "check this machine's clock, or the certificate's start date".into(),
            ),
            CertificateError::Revoked => (
                "the server's certificate is revoked".into(),
                "renew the server's certificate".into(),
            ),
            other => (
                format!("the server's certificate was refused ({other:?})"),
                ca_fix,
            ),
        },
        rustls::Error::AlertReceived(
            Alert::CertificateRequired
            | Alert::BadCertificate
            | Alert::UnknownCA
            | Alert::AccessDenied
            | Alert::CertificateUnknown,
        ) => (
            format!("the server refused this client's certificate ({err})"),
            "set sslcert and sslkey to a client certificate the server's CA signed".into(),
        ),
        rustls::Error::PeerIncompatible(_) | rustls::Error::AlertReceived(_) => (
            format!("the server and this client share no TLS version or cipher ({err})"),
            "enable TLS 1.2 or 1.3 on the server".into(),
        ),
        other => (format!("TLS failed ({other})"), ca_fix),
    }
}

/// A name as rustls presents it (`DnsName("db.example.com")`, `IpAddress(10.0.0.1)`), bare.
fn presented_name(p: &str) -> &str {
    let inner = p
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or(p);
    inner.trim_matches('"')
}

/// `YYYY-MM-DD` of a Unix time.
fn day(secs: u64) -> String {
    chrono::DateTime::from_timestamp(i64::try_from(secs).unwrap_or(i64::MAX), 0)
        .map_or_else(|| secs.to_string(), |t| t.format("%Y-%m-%d").to_string())
}

/// The rustls error inside an I/O error, if TLS is why it failed.
pub fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// What one connection negotiated, for `check` and the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Negotiated {
    Plain {
        mode: SslMode,
    },
    Tls {
        version: String,
        verification: Verification,
        host: String,
    },
}

impl Negotiated {
    pub fn tls(conn: &rustls::ClientConnection, verification: Verification, host: &str) -> Self {
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3".to_owned(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2".to_owned(),
            Some(other) => format!("{other:?}"),
            None => "TLS".to_owned(),
        };
        Negotiated::Tls {
            version,
            verification,
            host: host.to_owned(),
        }
    }

    /// "TLS 1.3, certificate verified for db.example.com", or what is not checked and how
    /// to check it.
    pub fn describe(&self) -> String {
        match self {
            Negotiated::Tls {
                version,
                verification: Verification::ChainAndName,
                host,
            } => format!("{version}, certificate verified for {host}"),
            Negotiated::Tls {
                version,
                verification: Verification::Chain,
                ..
            } => format!("{version}, certificate chain verified (host name not checked)"),
            Negotiated::Tls { version, .. } => format!("{version}, certificate not verified"),
            Negotiated::Plain {
                mode: SslMode::Disable,
            } => "not encrypted (sslmode = disable)".into(),
            Negotiated::Plain { .. } => {
                "not encrypted: the server offered no TLS (or, under prefer, its handshake failed)"
                    .into()
            }
        }
    }

    /// The `tls` line of `check`: passed when verified, a warning saying how otherwise.
    pub fn check_result(&self, scope: &str) -> crate::check::CheckResult {
        let detail = format!("{} ({scope})", self.describe());
        if self.is_verified() {
            crate::check::CheckResult::pass("tls", detail)
        } else {
            crate::check::CheckResult::warn(
                "tls",
                detail,
                "set sslmode = \"verify-full\" and sslrootcert to the server's CA bundle, so that \
                 the connection is encrypted and the server proven"
                    .into(),
            )
        }
    }

    /// Whether the connection is encrypted and its certificate verified with the host name.
    pub fn is_verified(&self) -> bool {
        matches!(
            self,
            Negotiated::Tls {
                verification: Verification::ChainAndName,
                ..
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_modes_follow_libpq() {
        use Use::*;
        use Verification as V;
        let p = |mode, roots| decide(mode, roots).map(|p| (p.tls, p.verification));
        assert_eq!(p(SslMode::Disable, true).unwrap(), (Never, V::None));
        assert_eq!(p(SslMode::Prefer, false).unwrap(), (IfOffered, V::None));
        assert_eq!(p(SslMode::Prefer, true).unwrap(), (IfOffered, V::Chain));
        assert_eq!(p(SslMode::Require, false).unwrap(), (Required, V::None));
        // libpq: require with a root certificate verifies as verify-ca.
        assert_eq!(p(SslMode::Require, true).unwrap(), (Required, V::Chain));
        assert_eq!(p(SslMode::VerifyCa, true).unwrap(), (Required, V::Chain));
        assert_eq!(
            p(SslMode::VerifyFull, true).unwrap(),
            (Required, V::ChainAndName)
        );
        for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
            let err = decide(mode, false).unwrap_err().to_string();
            assert!(
                err.contains("needs a root certificate") && err.contains("sslrootcert"),
                "{err}"
            );
        }
    }

    #[test]
    fn system_roots_go_only_with_verify_full_on_every_path() {
        let options = |mode| TlsOptions {
            mode,
            rootcert: Some(RootCert::System),
            cert: None,
            key: None,
        };
        for mode in [SslMode::Prefer, SslMode::Require, SslMode::VerifyCa] {
            let err = options(mode).policy().unwrap_err().to_string();
            assert!(
                err.contains("only goes with sslmode = \"verify-full\""),
                "{err}"
            );
        }
        assert_eq!(
            options(SslMode::VerifyFull).policy().unwrap().verification,
            Verification::ChainAndName
        );
    }

    #[test]
    fn a_key_others_can_read_is_refused_with_chmod() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("client.key");
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        // Root may own a 0640 key, so look at what the rule says for this user.
        let err = check_key_permissions(&key).unwrap_err().to_string();
        assert!(
            err.contains("chmod 600") && err.contains("client.key"),
            "{err}"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        check_key_permissions(&key).unwrap();
    }

    #[test]
    fn problems_are_said_with_their_fix() {
        let (problem, fix) = explain(
            &rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
            "db",
        );
        assert!(
            problem.contains("not signed by a CA in sslrootcert"),
            "{problem}"
        );
        assert!(fix.contains("global-bundle.pem"), "{fix}");
        let (problem, _) = explain(
            &rustls::Error::InvalidCertificate(CertificateError::ExpiredContext {
                time: UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_700_000_000)),
                not_after: UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                    1_577_923_200,
                )),
            }),
            "db",
        );
        assert_eq!(problem, "the server's certificate expired on 2020-01-02");
        assert_eq!(presented_name("DnsName(\"localhost\")"), "localhost");
        assert_eq!(presented_name("IpAddress(10.0.0.1)"), "10.0.0.1");
        assert_eq!(presented_name("plain"), "plain");
    }
}
