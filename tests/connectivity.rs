//! Production connectivity against real servers: passwords from AWS Secrets Manager (moto,
//! found through the SDK's standard `AWS_ENDPOINT_URL_SECRETS_MANAGER`), and S3 over TLS to
//! a server whose certificate a private CA signed (`ca_bundle`; moto over HTTPS with the
//! test CA `scripts/services` makes).

mod common;

use std::path::PathBuf;

use common::*;

/// A secret on moto, replaced if it exists.
async fn put_secret(name: &str, value: &str) -> String {
    let shared = tributary::aws::sdk_config(&Default::default())
        .await
        .unwrap();
    let config = aws_sdk_secretsmanager::config::Builder::from(&shared)
        .endpoint_url(s3_endpoint())
        .region(aws_sdk_secretsmanager::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .build();
    let client = aws_sdk_secretsmanager::Client::from_conf(config);
    let _ = client
        .delete_secret()
        .secret_id(name)
        .force_delete_without_recovery(true)
        .send()
        .await;
    client
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_owned()
}

/// `tributary` with Secrets Manager at `endpoint` through the SDK's standard variable.
fn tributary_sm(args: &[&str], endpoint: &str) -> std::process::Output {
    tributary_command(args)
        .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", endpoint)
        .output()
        .unwrap()
}

const SECRET_PASSWORD: &str = "pw-from-secrets-manager-7f3a";

fn secret_workspace(dir: &TestDir, endpoint_keys: &str) -> String {
    dir.write_workspace(&format!(
        "[[endpoints]]\nname = \"shop\"\nengine = \"postgres\"\n{endpoint_keys}\n\n{}\
         [[tasks]]\nname = \"load\"\nsource = \"shop\"\ntarget = \"lake\"\n\
         [tasks.target_settings]\ndata_format = \"parquet\"\n",
        local_target_toml("lake", &dir.lake())
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secrets_manager_secret_gives_the_password_user_host_port_and_database() {
    let pg = Pg::from_env();
    let db = "trib_secret_db";
    let mut conn = pg.fresh_database(db).await;
    use sqlx::Executor;
    conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP ROLE IF EXISTS trib_secret_user;
         CREATE ROLE trib_secret_user LOGIN PASSWORD '{SECRET_PASSWORD}';
         CREATE TABLE items (id int PRIMARY KEY, v text);
         INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 500) g;
         GRANT SELECT ON items TO trib_secret_user;"
    ))))
    .await
    .unwrap();
    // As an RDS/DMS secret: every connection field in it, the endpoint names only the secret.
    let arn = put_secret(
        "tributary/test/shop",
        &format!(
            r#"{{"username":"trib_secret_user","password":"{SECRET_PASSWORD}","engine":"postgres","host":"{}","port":"{}","dbname":"{db}"}}"#,
            pg.host, pg.port
        ),
    )
    .await;
    let dir = TestDir::new();
    let ws = secret_workspace(&dir, &format!("password_secret = \"{arn}\""));
    let check = tributary_sm(&["check", &ws, "--endpoint", "shop"], &s3_endpoint());
    let out = assert_success(&check);
    assert!(out.contains("AWS Secrets Manager secret"), "{out}");
    let run = tributary_sm(&["run", &ws, "--task", "load"], &s3_endpoint());
    assert_success(&run);
    let files = files_under(&dir.lake());
    let load = files
        .iter()
        .find(|f| f.contains("items/LOAD"))
        .unwrap_or_else(|| panic!("no load file in {files:?}"));
    let rows: usize = read_parquet_file(&dir.lake().join(load))
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 500);
    // The password is nowhere: not in the output, the workspace file or the lake's files.
    for text in [stdout(&check), stderr(&check), stdout(&run), stderr(&run)] {
        assert!(!text.contains(SECRET_PASSWORD), "{text}");
    }
    for f in files_under(dir.path()) {
        let bytes = std::fs::read(dir.path().join(&f)).unwrap();
        assert!(
            !bytes
                .windows(SECRET_PASSWORD.len())
                .any(|w| w == SECRET_PASSWORD.as_bytes()),
            "{f} holds the password"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_secrets_are_refused_with_the_fix() {
    let pg = Pg::from_env();
    put_secret("tributary/test/not-json", "hunter2-not-json").await;
    put_secret(
        "tributary/test/elsewhere",
        r#"{"username":"postgres","password":"hunter2","host":"db.example.com","port":5432}"#,
    )
    .await;
    let host = format!("host = \"{}\"\nport = {}\n", pg.host, pg.port);
    let cases: Vec<(String, String, Vec<&str>)> = vec![
        (
            "password_secret = \"tributary/test/no-such-secret\"".into(),
            s3_endpoint(),
            vec!["tributary/test/no-such-secret", "no such secret", "ARN"],
        ),
        (
            "password_secret = \"tributary/test/not-json\"".into(),
            s3_endpoint(),
            vec!["not-json", "not JSON", "\"username\""],
        ),
        (
            // moto with IAM on: GetSecretValue is refused.
            "password_secret = \"tributary/test/not-json\"".into(),
            required_env("TRIBUTARY_TEST_S3_DENY_ENDPOINT"),
            vec!["access denied", "secretsmanager:GetSecretValue"],
        ),
        (
            // The secret is for db.example.com: its password never goes to another host.
            format!("{host}password_secret = \"tributary/test/elsewhere\""),
            s3_endpoint(),
            vec!["db.example.com", "remove `host`"],
        ),
    ];
    for (keys, endpoint, needles) in cases {
        let dir = TestDir::new();
        let ws = secret_workspace(&dir, &keys);
        for args in [
            vec!["check", ws.as_str(), "--endpoint", "shop"],
            vec!["run", ws.as_str(), "--task", "load"],
        ] {
            let out = tributary_sm(&args, &endpoint);
            assert_eq!(out.status.code(), Some(1), "{args:?} {keys}");
            let text = format!("{}{}", stdout(&out), stderr(&out));
            for n in &needles {
                assert!(text.contains(n), "'{n}' missing ({keys}):\n{text}");
            }
            assert!(!text.contains("hunter2"), "{text}");
        }
    }
}

/// A bucket on the HTTPS moto, through an SDK configured by the library with the test CA.
async fn fresh_tls_bucket(endpoint: &str, ca: PathBuf, bucket: &str) {
    let shared = tributary::aws::sdk_config(&tributary::aws::AwsOptions {
        ca_bundle: Some(ca),
        ..Default::default()
    })
    .await
    .unwrap();
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .endpoint_url(endpoint)
        .force_path_style(true)
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .build();
    let client = aws_sdk_s3::Client::from_conf(config);
    if client.head_bucket().bucket(bucket).send().await.is_err() {
        client.create_bucket().bucket(bucket).send().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_over_tls_with_a_private_ca_needs_its_ca_bundle() {
    let endpoint = required_env("TRIBUTARY_TEST_S3_TLS_ENDPOINT");
    let tls = PathBuf::from(required_env("TRIBUTARY_TEST_TLS_DIR"));
    let pg = Pg::from_env();
    let db = "trib_s3_tls";
    let mut conn = pg.fresh_database(db).await;
    use sqlx::Executor;
    conn.execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g;",
    )
    .await
    .unwrap();
    fresh_tls_bucket(&endpoint, tls.join("ca.crt"), "private-ca-lake").await;
    let workspace = |ca: Option<&str>| {
        let dir = TestDir::new();
        let ca = ca
            .map(|c| format!("ca_bundle = \"{}\"\n", tls.join(c).display()))
            .unwrap_or_default();
        let ws = dir.write_workspace(&format!(
            "{}{}\n{ca}\n[[tasks]]\nname = \"load\"\nsource = \"shop\"\ntarget = \"lake\"\n\
             [tasks.target_settings]\ndata_format = \"parquet\"\n",
            pg.endpoint_toml("shop", db),
            s3_target_toml("lake", "private-ca-lake", &endpoint).trim_end(),
        ));
        (dir, ws)
    };
    // Trusted through the bundle: the load lands.
    let (_dir, ws) = workspace(Some("ca.crt"));
    assert_success(&tributary(&["check", &ws, "--endpoint", "lake"]));
    assert_success(&tributary(&["run", &ws, "--task", "load"]));
    // Without it, or with another CA's, the certificate is refused and the fix named.
    for ca in [None, Some("other-ca.crt")] {
        let (_dir, ws) = workspace(ca);
        let out = tributary(&["run", &ws, "--task", "load"]);
        assert_eq!(out.status.code(), Some(1), "{ca:?}");
        let err = stderr(&out);
        assert!(
            err.contains("not trusted") && err.contains("ca_bundle"),
            "{ca:?}: {err}"
        );
    }
    // A bundle that is not PEM is refused before anything is sent.
    let (dir, _) = workspace(None);
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let (_d, ws) = workspace(Some(bad.to_str().unwrap()));
    let err = stderr(&tributary(&["run", &ws, "--task", "load"]));
    assert!(
        err.contains("bad.pem") && err.contains("no PEM certificate"),
        "{err}"
    );
}
