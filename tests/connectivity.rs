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

// ---- PostgreSQL over TLS, with libpq's sslmode ----

/// The `Op` of every change the raw zone holds for `table` (its CDC files), sorted.
fn change_ops(dir: &TestDir, table: &str) -> Vec<String> {
    let mut ops = Vec::new();
    for f in files_under(&dir.lake()) {
        if f.contains(&format!("{table}/")) && !f.contains("LOAD") && f.ends_with(".parquet") {
            for b in read_parquet_file(&dir.lake().join(&f)) {
                let op = b.column_by_name("Op").unwrap();
                let op = op
                    .as_any()
                    .downcast_ref::<arrow_array::StringArray>()
                    .unwrap();
                ops.extend(op.iter().map(|o| o.unwrap_or_default().to_owned()));
            }
        }
    }
    ops.sort();
    ops
}

fn tls_dir() -> PathBuf {
    PathBuf::from(required_env("TRIBUTARY_TEST_TLS_DIR"))
}

/// The TLS-only cluster (`scripts/services`: hostssl lines only, the test CA's localhost
/// certificate).
fn pg_tls() -> Pg {
    Pg::from_url_env("TRIBUTARY_TEST_PG_TLS_URL")
}

/// A source endpoint block of `engine` with TLS keys; the password comes from the variable
/// [`tributary`] sets for that engine.
fn tls_endpoint(
    engine: &str,
    user: &str,
    host: &str,
    port: u16,
    db: &str,
    tls_keys: &str,
) -> String {
    let password_env = match engine {
        "postgres" => "TEST_PG_PASSWORD",
        _ => "TEST_MY_PASSWORD",
    };
    format!(
        "[[endpoints]]\nname = \"shop\"\nengine = \"{engine}\"\nhost = \"{host}\"\nport = {port}\n\
         database = \"{db}\"\nuser = \"{user}\"\npassword_env = \"{password_env}\"\n{tls_keys}\n\n"
    )
}

fn pg_tls_endpoint(pg: &Pg, host: &str, port: u16, db: &str, tls_keys: &str) -> String {
    tls_endpoint("postgres", &pg.user, host, port, db, tls_keys)
}

fn tls_workspace(dir: &TestDir, source: &str, migration: &str) -> String {
    dir.write_workspace(&format!(
        "{source}{}[[tasks]]\nname = \"cdc\"\nsource = \"shop\"\ntarget = \"lake\"\n\
         migration_type = \"{migration}\"\n[tasks.target_settings]\ndata_format = \"parquet\"\n",
        local_target_toml("lake", &dir.lake())
    ))
}

fn verify_full(ca: &str) -> String {
    format!(
        "sslmode = \"verify-full\"\nsslrootcert = \"{}\"",
        tls_dir().join(ca).display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn full_load_and_cdc_over_verify_full_to_a_tls_only_server() {
    let pg = pg_tls();
    let db = "trib_tls_cdc";
    let mut conn = pg.fresh_database(db).await;
    use sqlx::Executor;
    conn.execute(
        "CREATE TABLE items (id int PRIMARY KEY, v text);
         INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 1000) g;",
    )
    .await
    .unwrap();
    let dir = TestDir::new();
    let ws = tls_workspace(
        &dir,
        &pg_tls_endpoint(&pg, "localhost", pg.port, db, &verify_full("ca.crt")),
        "full-load-and-cdc",
    );
    let check = assert_success(&tributary(&["check", &ws, "--endpoint", "shop"]));
    assert!(
        check.contains("PASS tls: TLS 1.3, certificate verified for localhost"),
        "{check}"
    );
    assert_success(&run_until_caught_up(&ws, "cdc"));
    conn.execute(
        "INSERT INTO items VALUES (1001, 'new');
         UPDATE items SET v = 'changed' WHERE id = 7;
         DELETE FROM items WHERE id = 8;",
    )
    .await
    .unwrap();
    assert_success(&run_until_caught_up(&ws, "cdc"));
    let ops = change_ops(&dir, "items");
    assert_eq!(ops, ["D", "I", "U"], "the changes, each once");
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_problems_are_refused_with_what_is_wrong() {
    let pg = pg_tls();
    let db = "trib_tls_refused";
    pg.fresh_database(db).await;
    let run_check = |source: String| {
        let dir = TestDir::new();
        let ws = tls_workspace(&dir, &source, "full-load-and-cdc");
        let out = tributary(&["check", &ws, "--endpoint", "shop"]);
        let load = tributary(&["run", &ws, "--task", "cdc"]);
        (out, load)
    };
    let ca = tls_dir().join("ca.crt").display().to_string();
    let cases: Vec<(String, Vec<&str>)> = vec![
        // Another CA: under verify-full, and under require with a root file (libpq: as
        // verify-ca).
        (
            pg_tls_endpoint(&pg, "localhost", pg.port, db, &verify_full("other-ca.crt")),
            vec!["not signed by a CA in sslrootcert", "sslrootcert"],
        ),
        (
            pg_tls_endpoint(
                &pg,
                "localhost",
                pg.port,
                db,
                &format!(
                    "sslmode = \"require\"\nsslrootcert = \"{}\"",
                    tls_dir().join("other-ca.crt").display()
                ),
            ),
            vec!["not signed by a CA in sslrootcert"],
        ),
        // The certificate is for localhost only.
        (
            pg_tls_endpoint(&pg, "127.0.0.1", pg.port, db, &verify_full("ca.crt")),
            vec!["certificate is for localhost, not 127.0.0.1", "verify-ca"],
        ),
        // No root certificate to verify with.
        (
            pg_tls_endpoint(&pg, "localhost", pg.port, db, "sslmode = \"verify-full\""),
            vec!["needs a root certificate", "sslrootcert"],
        ),
        // A TLS-only server and sslmode = disable.
        (
            pg_tls_endpoint(&pg, "localhost", pg.port, db, "sslmode = \"disable\""),
            vec!["accepts only encrypted connections", "sslmode"],
        ),
    ];
    for (source, needles) in cases {
        let (check, load) = run_check(source.clone());
        assert_eq!(check.status.code(), Some(1), "{source}");
        assert_eq!(load.status.code(), Some(1), "{source}");
        for text in [stdout(&check), stderr(&load)] {
            for n in &needles {
                assert!(text.contains(n), "'{n}' missing ({source}):\n{text}");
            }
        }
    }
    // verify-ca checks the chain only: 127.0.0.1 is accepted, and check says what it is.
    let (check, _) = run_check(pg_tls_endpoint(
        &pg,
        "127.0.0.1",
        pg.port,
        db,
        &format!("sslmode = \"verify-ca\"\nsslrootcert = \"{ca}\""),
    ));
    let out = assert_success(&check);
    assert!(out.contains("host name not checked"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn require_needs_a_server_with_tls_and_prefer_says_when_there_is_none() {
    // The nologic cluster has ssl = off.
    let pg = Pg::from_url_env("TRIBUTARY_TEST_PG_NOLOGIC_URL");
    let dir = TestDir::new();
    let ws = tls_workspace(
        &dir,
        &pg_tls_endpoint(&pg, &pg.host, pg.port, "postgres", "sslmode = \"require\""),
        "full-load",
    );
    let out = tributary(&["check", &ws, "--endpoint", "shop"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("does not offer TLS") && stdout(&out).contains("ssl = on"),
        "{}",
        stdout(&out)
    );
    let ws = tls_workspace(
        &dir,
        &pg_tls_endpoint(&pg, &pg.host, pg.port, "postgres", ""),
        "full-load",
    );
    let out = assert_success(&tributary(&["check", &ws, "--endpoint", "shop"]));
    assert!(
        out.contains("WARN tls: not encrypted: the server offered no TLS"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificate_logs_in_and_a_key_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let pg = pg_tls();
    let db = "trib_tls_client";
    let mut conn = pg.fresh_database(db).await;
    use sqlx::Executor;
    conn.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);")
        .await
        .unwrap();
    let dir = TestDir::new();
    // Copies, so the test sets their modes.
    let cert = dir.path().join("client.crt");
    let key = dir.path().join("client.key");
    std::fs::copy(tls_dir().join("client.crt"), &cert).unwrap();
    std::fs::copy(tls_dir().join("client.key"), &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let source = format!(
        "[[endpoints]]\nname = \"shop\"\nengine = \"postgres\"\nhost = \"localhost\"\nport = {}\n\
         database = \"{db}\"\nuser = \"tls_client\"\n{}\nsslcert = \"client.crt\"\nsslkey = \"client.key\"\n\n",
        pg.port,
        verify_full("ca.crt")
    );
    let ws = tls_workspace(&dir, &source, "full-load-and-cdc");
    // No password anywhere: the certificate is the login (pg_hba.conf `cert`).
    let out = assert_success(&tributary(&["check", &ws, "--endpoint", "shop"]));
    assert!(out.contains("certificate verified for localhost"), "{out}");
    assert_success(&run_until_caught_up(&ws, "cdc"));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = tributary(&["check", &ws, "--endpoint", "shop"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("chmod 600"), "{}", stdout(&out));
    std::fs::remove_file(&key).unwrap();
    let out = tributary(&["check", &ws, "--endpoint", "shop"]);
    assert!(
        stdout(&out).contains("cannot read the client key (sslkey)"),
        "{}",
        stdout(&out)
    );
}

/// A server that answers the TLS request with `S` and presents the test CA's expired
/// certificate: what an expired server certificate looks like.
async fn expired_certificate_server() -> u16 {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(tls_dir().join("expired.crt"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key =
        rustls::pki_types::PrivateKeyDer::from_pem_file(tls_dir().join("expired.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 8];
                if tcp.read_exact(&mut request).await.is_ok() && tcp.write_all(b"S").await.is_ok() {
                    let _ = acceptor.accept(tcp).await;
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_server_certificate_is_named_with_its_date() {
    let port = expired_certificate_server().await;
    let pg = Pg::from_env();
    let dir = TestDir::new();
    let ws = tls_workspace(
        &dir,
        &pg_tls_endpoint(&pg, "localhost", port, "postgres", &verify_full("ca.crt")),
        "full-load",
    );
    let out = tributary(&["check", &ws, "--endpoint", "shop"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("the server's certificate expired on 2020-01-02")
            && stdout(&out).contains("renew"),
        "{}",
        stdout(&out)
    );
}

// ---- MySQL/MariaDB over TLS: sslmode mapped to MySQL's modes ----

fn my_tls() -> My {
    My::from_url_env("TRIBUTARY_TEST_MYSQL_TLS_URL")
}

fn my_tls_endpoint(my: &My, host: &str, port: u16, db: &str, tls_keys: &str) -> String {
    tls_endpoint("mysql", &my.user, host, port, db, tls_keys)
}

fn my_tls_workspace(dir: &TestDir, source: &str, db: &str) -> String {
    dir.write_workspace(&format!(
        "{source}{}[[tasks]]\nname = \"cdc\"\nsource = \"shop\"\ntarget = \"lake\"\n\
         migration_type = \"full-load-and-cdc\"\ninclude = [\"{db}.%\"]\n\
         [tasks.target_settings]\ndata_format = \"parquet\"\n",
        local_target_toml("lake", &dir.lake())
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_full_load_and_binlog_cdc_over_verify_full() {
    use mysql_async::prelude::Queryable;
    let my = my_tls();
    let db = "trib_tls_my";
    let mut conn = my.fresh_database(db).await;
    conn.query_drop(
        "CREATE TABLE items (id int PRIMARY KEY, v varchar(20));
         INSERT INTO items VALUES (1, 'a'), (2, 'b'), (3, 'c');",
    )
    .await
    .unwrap();
    let dir = TestDir::new();
    let ws = my_tls_workspace(
        &dir,
        &my_tls_endpoint(&my, "localhost", my.port, db, &verify_full("ca.crt")),
        db,
    );
    let check = stdout(&tributary(&["check", &ws, "--endpoint", "shop"]));
    assert!(
        check.contains("PASS tls: TLS 1.3, certificate verified for localhost"),
        "{check}"
    );
    assert_success(&run_until_caught_up(&ws, "cdc"));
    conn.query_drop(
        "INSERT INTO items VALUES (4, 'd'); UPDATE items SET v = 'x' WHERE id = 1;
         DELETE FROM items WHERE id = 2;",
    )
    .await
    .unwrap();
    assert_success(&run_until_caught_up(&ws, "cdc"));
    let ops = change_ops(&dir, "items");
    assert_eq!(ops, ["D", "I", "U"], "the binlog's changes, each once");
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_certificate_problems_and_modes() {
    let my = my_tls();
    let db = "trib_tls_my_refused";
    my.fresh_database(db).await;
    let check = |source: String| {
        let dir = TestDir::new();
        let ws = my_tls_workspace(&dir, &source, db);
        tributary(&["check", &ws, "--endpoint", "shop"])
    };
    let ca = tls_dir().join("ca.crt").display().to_string();
    let refused: Vec<(String, Vec<&str>)> = vec![
        (
            my_tls_endpoint(&my, "localhost", my.port, db, &verify_full("other-ca.crt")),
            vec!["not signed by a CA in sslrootcert"],
        ),
        (
            my_tls_endpoint(&my, "127.0.0.1", my.port, db, &verify_full("ca.crt")),
            vec!["certificate is for localhost, not 127.0.0.1"],
        ),
        (
            my_tls_endpoint(&my, "localhost", my.port, db, "sslmode = \"disable\""),
            // MariaDB answers a plain login to a TLS-only server as "access denied".
            vec!["not encrypted", "require_secure_transport", "sslmode"],
        ),
    ];
    for (source, needles) in refused {
        let out = check(source.clone());
        assert_eq!(out.status.code(), Some(1), "{source}");
        for n in needles {
            assert!(
                stdout(&out).contains(n),
                "'{n}' missing ({source}):\n{}",
                stdout(&out)
            );
        }
    }
    // VERIFY_CA: the chain only, so 127.0.0.1 passes (the vendored mysql_async fix).
    let out = check(my_tls_endpoint(
        &my,
        "127.0.0.1",
        my.port,
        db,
        &format!("sslmode = \"verify-ca\"\nsslrootcert = \"{ca}\""),
    ));
    assert!(
        stdout(&out).contains("host name not checked"),
        "{}",
        stdout(&out)
    );
    // REQUIRED against a server without TLS (the main MariaDB) fails clearly.
    let plain = My::from_env();
    let out = check(my_tls_endpoint(
        &plain,
        &plain.host,
        plain.port,
        db,
        "sslmode = \"require\"",
    ));
    assert!(
        stdout(&out).contains("does not offer TLS"),
        "{}",
        stdout(&out)
    );
    // A client certificate is the login of tls_client (REQUIRE SUBJECT).
    let dir = TestDir::new();
    let key = dir.path().join("client.key");
    std::fs::copy(tls_dir().join("client.key"), &key).unwrap();
    let source = format!(
        "[[endpoints]]\nname = \"shop\"\nengine = \"mysql\"\nhost = \"localhost\"\nport = {}\n\
         database = \"{db}\"\nuser = \"tls_client\"\n{}\nsslcert = \"{}\"\nsslkey = \"{}\"\n\n",
        my.port,
        verify_full("ca.crt"),
        tls_dir().join("client.crt").display(),
        key.display()
    );
    let ws = my_tls_workspace(&dir, &source, db);
    let out = stdout(&tributary(&["check", &ws, "--endpoint", "shop"]));
    assert!(
        out.contains("PASS connect") && out.contains("certificate verified"),
        "{out}"
    );
}

/// libpq's `hostaddr`: connect by address (a forwarded port, `ssh -L`), verify the name.
#[tokio::test(flavor = "multi_thread")]
async fn hostaddr_connects_by_address_and_tls_verifies_the_host_name() {
    let pg = pg_tls();
    let my = my_tls();
    let db = "trib_tls_hostaddr";
    pg.fresh_database(db).await;
    my.fresh_database(db).await;
    let run_check = |source: String| {
        let dir = TestDir::new();
        let ws = tls_workspace(&dir, &source, "full-load");
        tributary(&["check", &ws, "--endpoint", "shop"])
    };
    let by_address = format!("hostaddr = \"127.0.0.1\"\n{}", verify_full("ca.crt"));
    let out = assert_success(&run_check(pg_tls_endpoint(
        &pg,
        "localhost",
        pg.port,
        db,
        &by_address,
    )));
    assert!(out.contains("certificate verified for localhost"), "{out}");
    let out = run_check(pg_tls_endpoint(
        &pg,
        "db.example.com",
        pg.port,
        db,
        &by_address,
    ));
    assert!(
        stdout(&out).contains("certificate is for localhost, not db.example.com"),
        "{}",
        stdout(&out)
    );
    let keys = |name: &str| my_tls_endpoint(&my, name, my.port, db, &by_address);
    let out = stdout(&run_check(keys("localhost")));
    assert!(
        out.contains("PASS tls: TLS 1.3, certificate verified for localhost"),
        "{out}"
    );
    let out = stdout(&run_check(keys("db.example.com")));
    assert!(
        out.contains("certificate is for localhost, not db.example.com"),
        "{out}"
    );
    // hostaddr is an address; a name belongs in host.
    let out = run_check(
        keys("localhost").replace("hostaddr = \"127.0.0.1\"", "hostaddr = \"localhost\""),
    );
    assert!(
        stderr(&out).contains("is not an IP address"),
        "{}",
        stderr(&out)
    );
}
