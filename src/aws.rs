//! The AWS SDK's shared configuration, for every AWS client Tributary makes (S3, Secrets
//! Manager).
//!
//! Invariants:
//! - credentials, region and service endpoints come from the SDK's standard chain
//!   (`AWS_PROFILE`, `AWS_ACCESS_KEY_ID`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
//!   `AWS_ENDPOINT_URL_<SERVICE>`, instance roles, SSO); nothing here has a path of its own for
//!   tests, which point the SDK at moto through those same variables;
//! - TLS is rustls on *ring* (no aws-lc, see Cargo.toml). With a `ca_bundle`, the bundle's
//!   certificates are the only ones trusted, as with the AWS CLI's `ca_bundle`: a private CA
//!   does not widen trust to every public one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_smithy_http_client::tls;

/// Why the SDK could not be configured. Each message says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error(
        "cannot read the CA bundle {path} (ca_bundle): {source}. Fix the path or the file's permissions"
    )]
    ReadCaBundle {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the CA bundle {path} (ca_bundle) holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\"). Point ca_bundle at the PEM file of the CA that signed the server's certificate"
    )]
    EmptyCaBundle { path: PathBuf },
    #[error("the CA bundle {path} (ca_bundle) was refused: {message}. It must be PEM certificates")]
    BadCaBundle { path: PathBuf, message: String },
}

/// What an AWS client may be told beyond the standard chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsOptions {
    /// The region; `None` leaves it to the chain (`AWS_REGION`, the profile).
    pub region: Option<String>,
    /// A named profile of `~/.aws/config`; `None` leaves it to `AWS_PROFILE`.
    pub profile: Option<String>,
    /// PEM certificates to trust instead of the system's (a private CA).
    pub ca_bundle: Option<PathBuf>,
}

/// The shared SDK configuration for `o`: rustls on ring, standard retries (5 attempts).
pub async fn sdk_config(o: &AwsOptions) -> Result<aws_config::SdkConfig, AwsError> {
    let mut http = aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(
        tls::rustls_provider::CryptoMode::Ring,
    ));
    if let Some(path) = &o.ca_bundle {
        http = http.tls_context(trust_only(path)?);
    }
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http.build_https())
        .retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(5)
                .with_initial_backoff(Duration::from_millis(200)),
        );
    if let Some(region) = &o.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(profile) = &o.profile {
        loader = loader.profile_name(profile);
    }
    Ok(loader.load().await)
}

/// A TLS context that trusts the PEM certificates in `path` and nothing else.
fn trust_only(path: &Path) -> Result<tls::TlsContext, AwsError> {
    let pem = std::fs::read(path).map_err(|source| AwsError::ReadCaBundle {
        path: path.to_owned(),
        source,
    })?;
    check_pem_certificates(&pem).map_err(|message| match message {
        None => AwsError::EmptyCaBundle {
            path: path.to_owned(),
        },
        Some(message) => AwsError::BadCaBundle {
            path: path.to_owned(),
            message,
        },
    })?;
    tls::TlsContext::builder()
        .with_trust_store(
            tls::TrustStore::empty()
                .with_native_roots(false)
                .with_pem_certificate(pem),
        )
        .build()
        .map_err(|e| AwsError::BadCaBundle {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

/// Whether `pem` is what the SDK's rustls trust store takes without panicking: PEM
/// certificates, at least one, each a parsable trust anchor. `Err(None)`: no certificate.
fn check_pem_certificates(pem: &[u8]) -> Result<(), Option<String>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let ders = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Some(format!("not PEM ({e})")))?;
    if ders.is_empty() {
        return Err(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    for der in ders {
        roots
            .add(der)
            .map_err(|e| Some(format!("a certificate that does not parse ({e})")))?;
    }
    Ok(())
}

/// Why a request of any AWS client failed before the service answered; the callers word it
/// for their service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undelivered {
    /// The credential chain found no credentials.
    NoCredentials,
    /// The request could not be built (the text says why).
    Unbuilt(String),
    /// The server's TLS certificate failed verification: "signed by a CA that is not
    /// trusted", "issued for another host name", "expired", …
    Certificate(&'static str),
    /// The connection failed (the connector's text).
    Unreachable(String),
    TimedOut,
}

/// What [`Undelivered`] `e` is; `None` when the service answered (its code says more).
/// `SdkError` is the one of aws-smithy that every AWS SDK crate re-exports.
pub fn undelivered<E, R>(e: &aws_sdk_s3::error::SdkError<E, R>) -> Option<Undelivered>
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_s3::error::SdkError;
    match e {
        SdkError::ConstructionFailure(_) => {
            let full = format!("{:?}", std::error::Error::source(e));
            Some(
                if full.contains("credentials") || full.contains("Credentials") {
                    Undelivered::NoCredentials
                } else {
                    Undelivered::Unbuilt(full)
                },
            )
        }
        SdkError::DispatchFailure(d) => {
            let detail = format!("{d:?}");
            Some(match certificate_problem(&detail) {
                Some(problem) => Undelivered::Certificate(problem),
                None => Undelivered::Unreachable(detail),
            })
        }
        SdkError::TimeoutError(_) => Some(Undelivered::TimedOut),
        _ => None,
    }
}

/// The certificate problem in a connector error's text (rustls's words), if that is why the
/// connection failed: "UnknownIssuer", "NotValidForName", "Expired", …
fn certificate_problem(detail: &str) -> Option<&'static str> {
    const PROBLEMS: &[(&str, &str)] = &[
        ("UnknownIssuer", "signed by a CA that is not trusted"),
        ("NotValidForName", "issued for another host name"),
        ("Expired", "expired"),
        ("NotValidYet", "not valid yet (check the clock)"),
        ("invalid peer certificate", "not trusted"),
    ];
    PROBLEMS
        .iter()
        .find(|(needle, _)| detail.contains(needle))
        .map(|(_, problem)| *problem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_without_certificates_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = trust_only(&path).unwrap_err().to_string();
        assert!(
            err.contains("ca.pem") && err.contains("no PEM certificate"),
            "{err}"
        );
        let err = trust_only(&dir.path().join("missing.pem"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing.pem") && err.contains("cannot read"),
            "{err}"
        );
    }
}
