//! Database credentials from AWS Secrets Manager (`password_secret`).
//!
//! The secret is the JSON that RDS-managed secrets and DMS endpoints use: `username` and
//! `password`, and optionally `host`, `port` (a number or a string) and `dbname`
//! ([`DbSecret`]). It is fetched with the AWS credential chain through [`crate::aws`], so
//! `AWS_ENDPOINT_URL_SECRETS_MANAGER` (or `AWS_ENDPOINT_URL`) points it elsewhere, as for any
//! AWS SDK. The region is the ARN's when the endpoint names an ARN, the chain's otherwise.
//!
//! Invariants:
//! - the secret's value lives only in memory, in the returned [`DbSecret`], whose `Debug`
//!   hides the password; nothing here logs or writes it;
//! - every failure names the endpoint and the secret (its id, never its value) and says what
//!   to fix: a missing secret, refused access, no credentials, a value that is not a database
//!   secret's JSON.

use super::SecretError;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};

/// A database secret as RDS and DMS keep it.
#[derive(Clone, PartialEq, Eq)]
pub struct DbSecret {
    pub username: Option<String>,
    pub password: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub dbname: Option<String>,
}

impl std::fmt::Debug for DbSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbSecret")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .finish()
    }
}

/// Parses a secret's text. `Err` says what is wrong without quoting any value (serde's own
/// messages would: "invalid type: integer `123`").
pub fn parse(text: &str) -> Result<DbSecret, String> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("it is not JSON (line {}, column {})", e.line(), e.column()))?;
    let serde_json::Value::Object(fields) = value else {
        return Err("it is JSON but not an object".into());
    };
    let text = |key: &str| -> Result<Option<String>, String> {
        match fields.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("its \"{key}\" is not a string")),
        }
    };
    let password = text("password")?.ok_or("it has no \"password\" field")?;
    let port = match fields.get("port") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        Some(_) => None,
    }
    .filter(|&p| p != 0);
    if port.is_none() && !matches!(fields.get("port"), None | Some(serde_json::Value::Null)) {
        return Err("its \"port\" is not a port number (1-65535)".into());
    }
    Ok(DbSecret {
        username: text("username")?,
        password,
        host: text("host")?,
        port,
        dbname: text("dbname")?,
    })
}

/// The region of a Secrets Manager ARN (`arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME`),
/// `None` for a plain name.
pub fn arn_region(secret_id: &str) -> Option<&str> {
    let mut parts = secret_id.splitn(6, ':');
    let (Some("arn"), Some(_partition), Some("secretsmanager"), Some(region)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    (!region.is_empty()).then_some(region)
}

/// Fetches and parses secret `secret_id` for endpoint `endpoint`.
pub async fn fetch(endpoint: &str, secret_id: &str) -> Result<DbSecret, SecretError> {
    let fail = |kind: SmFailure| SecretError::SecretsManager {
        endpoint: endpoint.to_owned(),
        secret: secret_id.to_owned(),
        kind,
    };
    let shared = crate::aws::sdk_config(&crate::aws::AwsOptions {
        region: arn_region(secret_id).map(str::to_owned),
        ..Default::default()
    })
    .await
    .map_err(|e| fail(SmFailure::Unreachable(e.to_string())))?;
    if shared.region().is_none() {
        return Err(fail(SmFailure::NoRegion));
    }
    let client = aws_sdk_secretsmanager::Client::new(&shared);
    let out = client
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| fail(classify(&e)))?;
    let Some(text) = out.secret_string() else {
        return Err(fail(SmFailure::Invalid(
            "it holds binary data (SecretBinary), not a JSON string".into(),
        )));
    };
    parse(text).map_err(|reason| fail(SmFailure::Invalid(reason)))
}

/// What went wrong fetching a secret; [`SecretError::SecretsManager`] words each with its fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmFailure {
    NotFound,
    Denied(String),
    NoCredentials,
    NoRegion,
    Unreachable(String),
    Invalid(String),
}

impl std::fmt::Display for SmFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SmFailure::NotFound => write!(
                f,
                "AWS Secrets Manager has no such secret. Check password_secret (the secret's name \
                 or full ARN) and the region (AWS_REGION; an ARN carries its own)"
            ),
            SmFailure::Denied(message) => write!(
                f,
                "access denied ({message}). Grant secretsmanager:GetSecretValue on the secret \
                 (and kms:Decrypt on its key if it uses a customer-managed key) to the \
                 credentials in use (AWS_PROFILE, AWS_ACCESS_KEY_ID, the instance role)"
            ),
            SmFailure::NoCredentials => write!(
                f,
                "no AWS credentials. Set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, \
                 or run where an instance role or SSO session provides them"
            ),
            SmFailure::NoRegion => write!(
                f,
                "no AWS region. Set AWS_REGION, or name the secret by its full ARN, which carries \
                 the region"
            ),
            SmFailure::Unreachable(message) => write!(
                f,
                "AWS Secrets Manager is not reachable ({message}). Check the network, and \
                 AWS_ENDPOINT_URL_SECRETS_MANAGER if it is set"
            ),
            SmFailure::Invalid(reason) => write!(
                f,
                "its value is not a database secret: {reason}. Store it as RDS and DMS do: \
                 {{\"username\": \"...\", \"password\": \"...\", \"host\": \"...\", \"port\": 5432, \
                 \"dbname\": \"...\"}} (host, port and dbname are optional)"
            ),
        }
    }
}

type GetError = SdkError<
    aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError,
    aws_sdk_secretsmanager::config::http::HttpResponse,
>;

fn classify(e: &GetError) -> SmFailure {
    if let SdkError::ServiceError(service) = e {
        let err = service.err();
        let code = err.code().unwrap_or_default();
        let message = err.message().unwrap_or(code).to_owned();
        return match code {
            "ResourceNotFoundException" => SmFailure::NotFound,
            "AccessDeniedException"
            | "AccessDenied"
            | "InvalidClientTokenId"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "ExpiredTokenException"
            | "DecryptionFailure" => SmFailure::Denied(format!("{code}: {message}")),
            // A 403 whose body is not the JSON error (a proxy's, or moto's XML).
            _ if service.raw().status().as_u16() == 403 => {
                SmFailure::Denied(format!("HTTP 403 {message}").trim_end().to_owned())
            }
            _ => SmFailure::Unreachable(format!(
                "HTTP {} {code}: {message}",
                service.raw().status().as_u16()
            )),
        };
    }
    use crate::aws::Undelivered;
    SmFailure::Unreachable(match crate::aws::undelivered(e) {
        Some(Undelivered::NoCredentials) => return SmFailure::NoCredentials,
        Some(Undelivered::Certificate(problem)) => format!("its TLS certificate is {problem}"),
        Some(Undelivered::Unreachable(detail) | Undelivered::Unbuilt(detail)) => detail,
        Some(Undelivered::TimedOut) => "timed out".into(),
        None => aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rds_and_dms_secrets_parse_with_port_as_number_or_text() {
        let s = parse(
            r#"{"username":"dms","password":"p@ss\"w","engine":"postgres","host":"db.example.com","port":5432,"dbname":"shop","dbInstanceIdentifier":"x"}"#,
        )
        .unwrap();
        assert_eq!(s.username.as_deref(), Some("dms"));
        assert_eq!(s.password, "p@ss\"w");
        assert_eq!(s.host.as_deref(), Some("db.example.com"));
        assert_eq!(s.port, Some(5432));
        assert_eq!(s.dbname.as_deref(), Some("shop"));
        // An RDS-managed master password: only username and password.
        let s = parse(r#"{"username":"postgres","password":"x"}"#).unwrap();
        assert_eq!((s.host, s.port), (None, None));
        assert_eq!(
            parse(r#"{"password":"x","port":"3306"}"#).unwrap().port,
            Some(3306)
        );
    }

    #[test]
    fn bad_secrets_are_refused_without_quoting_the_value() {
        let err = parse("hunter2").unwrap_err();
        assert!(
            err.contains("not JSON") && !err.contains("hunter2"),
            "{err}"
        );
        let err = parse(r#"["hunter2"]"#).unwrap_err();
        assert!(err.contains("not an object"), "{err}");
        let err = parse(r#"{"username":"u","pass":"hunter2"}"#).unwrap_err();
        assert!(err.contains("no \"password\""), "{err}");
        let err = parse(r#"{"password":"hunter2","port":"fifty"}"#).unwrap_err();
        assert!(err.contains("port") && !err.contains("hunter2"), "{err}");
        let err = parse(r#"{"password":"x","port":0}"#).unwrap_err();
        assert!(err.contains("not a port number"), "{err}");
        let err = parse(r#"{"password":12345678}"#).unwrap_err();
        assert!(
            err.contains("not a string") && !err.contains("12345678"),
            "{err}"
        );
        let shown = format!("{:?}", parse(r#"{"password":"hunter2"}"#).unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn an_arn_carries_its_region_and_a_name_does_not() {
        assert_eq!(
            arn_region("arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/shop-AbCdEf"),
            Some("eu-west-1")
        );
        assert_eq!(
            arn_region("arn:aws-cn:secretsmanager:cn-north-1:1:secret:x"),
            Some("cn-north-1")
        );
        assert_eq!(arn_region("prod/shop"), None);
        assert_eq!(arn_region("arn:aws:s3:::bucket"), None);
    }
}
