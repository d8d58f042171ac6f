//! The byte stream under every PostgreSQL connection: TCP, then TLS of our own under
//! libpq's `sslmode` rules ([`crate::tls`]), handed to the clients through a private Unix
//! socket.
//!
//! Neither client lets us give it a stream: sqlx's TLS trusts public CAs beside
//! `sslrootcert` and never checks the chain under `require`, and pgwire-replication's TLS
//! builds aws-lc. So [`open`] does the SSLRequest and the handshake itself (its errors are
//! ours, immediate and explained), and [`relay`] serves the result on a one-shot socket
//! `{dir}/.s.PGSQL.{n}` in a 0700 folder of this process, to which the client connects as
//! to a local server with TLS off.
//!
//! Invariants:
//! - after the SSLRequest exactly one byte is read before the handshake, straight from the
//!   socket, so no byte an attacker sends ahead of TLS is ever taken as the server's
//!   (CVE-2021-23222);
//! - the server's `E` answer before TLS is not shown (the server is not authenticated yet);
//! - a relay socket accepts one connection within the connect timeout and is removed at
//!   once; only this process's user can reach its folder;
//! - [`Relayed::done`] fires when both directions have closed, so a caller that must know the
//!   server saw the end (the replication slot is free again) can wait for it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener};
use tokio::sync::oneshot;

use crate::source::SourceError;
use crate::tls::{Negotiated, Policy, TlsOptions, Use, Verification};

/// The SSLRequest message: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x2F];

/// Where to connect and how.
pub struct Target<'a> {
    pub endpoint: &'a str,
    /// The server's name: what TLS verifies, and where to connect without `addr`.
    pub host: &'a str,
    /// Where to connect instead (libpq's `hostaddr`: a forwarded port, a tunnel).
    pub addr: Option<&'a str>,
    pub port: u16,
    pub tls: &'a TlsOptions,
}

impl Target<'_> {
    fn fail(&self, problem: String, fix: String) -> SourceError {
        SourceError::Tls {
            endpoint: self.endpoint.to_owned(),
            host: self.host.to_owned(),
            port: self.port,
            problem,
            fix,
        }
    }

    fn unreachable(&self, reason: String) -> SourceError {
        SourceError::Unreachable {
            endpoint: self.endpoint.to_owned(),
            host: match self.addr {
                Some(addr) => format!("{} at {addr}", self.host),
                None => self.host.to_owned(),
            },
            port: self.port,
            reason,
        }
    }
}

/// The connection to the server: TLS, or plain where the mode allows it.
pub enum Upstream {
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// The server offers no TLS and the mode allows plain: the caller connects directly.
    Plain,
}

/// What [`open`] decided, from the mode and the server's answer alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Tls,
    Plain,
    Refuse(&'static str),
}

/// What to do with the server's one-byte answer to the SSLRequest (pure).
fn answer(policy: Policy, byte: u8) -> Answer {
    match (byte, policy.tls) {
        (b'S', _) => Answer::Tls,
        (b'N', Use::IfOffered) => Answer::Plain,
        (b'N', _) => Answer::Refuse("the server does not offer TLS"),
        (b'E', _) => Answer::Refuse("the server refused the connection before TLS started"),
        _ => Answer::Refuse("the server answered the TLS request with something else"),
    }
}

/// Connects to `t` and does what its `sslmode` says. `Ok((Upstream::Plain, _))`: talk to
/// the server directly, without TLS.
pub async fn open(
    t: &Target<'_>,
    timeout: Duration,
) -> Result<(Upstream, Negotiated), SourceError> {
    let setup = |source| SourceError::TlsSetup {
        endpoint: t.endpoint.to_owned(),
        source,
    };
    let policy = t.tls.policy().map_err(setup)?;
    // A Unix socket (host is a folder, as libpq allows) is local: no TLS, as libpq.
    if policy.tls == Use::Never || t.host.starts_with('/') {
        return Ok((Upstream::Plain, Negotiated::Plain { mode: t.tls.mode }));
    }
    let config = t
        .tls
        .client_config(policy, &[b"postgresql"])
        .map_err(setup)?;
    let work = async {
        let mut tcp = TcpStream::connect((t.addr.unwrap_or(t.host), t.port))
            .await
            .map_err(|e| t.unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        tcp.write_all(&SSL_REQUEST)
            .await
            .map_err(|e| t.unreachable(e.to_string()))?;
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte)
            .await
            .map_err(|e| t.unreachable(format!("no answer to the TLS request ({e})")))?;
        match answer(policy, byte[0]) {
            Answer::Plain => Ok((Upstream::Plain, Negotiated::Plain { mode: t.tls.mode })),
            Answer::Refuse(problem) => Err(t.fail(
                problem.into(),
                if byte[0] == b'N' {
                    "enable TLS on the server (ssl = on with a certificate), or set sslmode = \
                     prefer to allow plain connections"
                        .into()
                } else {
                    "check that host and port are a PostgreSQL server's".into()
                },
            )),
            Answer::Tls => handshake(t, policy, config, tcp).await,
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(t.unreachable(format!("no answer within {}s", timeout.as_secs()))),
    }
}

async fn handshake(
    t: &Target<'_>,
    policy: Policy,
    config: Arc<rustls::ClientConfig>,
    tcp: TcpStream,
) -> Result<(Upstream, Negotiated), SourceError> {
    let name = rustls::pki_types::ServerName::try_from(t.host.to_owned()).map_err(|e| {
        t.fail(
            format!("{} is not a host name TLS can check ({e})", t.host),
            "set host to the server's DNS name or IP address".into(),
        )
    })?;
    match tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
    {
        Ok(tls) => {
            let negotiated = Negotiated::tls(tls.get_ref().1, policy.verification, t.host);
            Ok((Upstream::Tls(Box::new(tls)), negotiated))
        }
        // libpq retries plain when an unverified `prefer` handshake fails.
        Err(e) if policy.tls == Use::IfOffered && policy.verification == Verification::None => {
            tracing::warn!(
                "endpoint '{}': the TLS handshake with {}:{} failed ({e}); connecting \
                 unencrypted, as sslmode = prefer allows",
                t.endpoint,
                t.host,
                t.port
            );
            Ok((Upstream::Plain, Negotiated::Plain { mode: t.tls.mode }))
        }
        Err(e) => match crate::tls::rustls_error(&e) {
            Some(err) => {
                let (problem, fix) = crate::tls::explain(err, t.host);
                Err(t.fail(problem, fix))
            }
            None => Err(t.unreachable(format!("during the TLS handshake: {e}"))),
        },
    }
}

/// A one-shot local socket in front of an upstream connection.
pub struct Relayed {
    /// The folder holding the socket: the client's "host".
    pub dir: &'static Path,
    /// The socket's number: the client's "port" (`{dir}/.s.PGSQL.{port}`).
    pub port: u16,
    /// Fires once both directions have closed.
    pub done: oneshot::Receiver<()>,
}

/// This process's private folder for relay sockets (0700), made once. Its name carries the
/// process id; folders of processes that are gone (statics are never dropped, so every
/// process leaves its folder) are removed when the next one makes its own.
fn socket_dir() -> std::io::Result<&'static Path> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    if let Some(d) = DIR.get() {
        return Ok(d);
    }
    // A Unix socket path holds at most 107 bytes.
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir() && p.as_os_str().len() < 60)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    remove_stale_dirs(&base);
    let made = tempfile::Builder::new()
        .prefix(&format!("tributary-pg-{}-", std::process::id()))
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir_in(base)?
        .keep();
    Ok(DIR.get_or_init(|| made))
}

/// Removes `tributary-pg-<pid>-*` folders of processes that no longer run.
fn remove_stale_dirs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix("tributary-pg-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Serves `upstream` on a fresh socket for one client; see the module's invariants.
pub async fn relay(
    mut upstream: Box<tokio_rustls::client::TlsStream<TcpStream>>,
    timeout: Duration,
) -> std::io::Result<Relayed> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = socket_dir()?;
    let (path, listener, port) = loop {
        // 1..=65535, wrapping; a number still in use (a live relay) is skipped.
        let n = (NEXT.fetch_add(1, Ordering::Relaxed) % 65535 + 1) as u16;
        let path = dir.join(format!(".s.PGSQL.{n}"));
        match UnixListener::bind(&path) {
            Ok(l) => break (path, l, n),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e),
        }
    };
    let (tx, done) = oneshot::channel();
    tokio::spawn(async move {
        let accepted = tokio::time::timeout(timeout, listener.accept()).await;
        let _ = std::fs::remove_file(&path);
        if let Ok(Ok((mut local, _))) = accepted {
            let _ = tokio::io::copy_bidirectional_with_sizes(
                &mut local,
                &mut upstream,
                64 << 10,
                64 << 10,
            )
            .await;
        }
        let _ = tx.send(());
    });
    Ok(Relayed { dir, port, done })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(tls: Use, verification: Verification) -> Policy {
        Policy { tls, verification }
    }

    #[test]
    fn the_servers_answer_decides_tls_or_plain_by_mode() {
        let prefer = policy(Use::IfOffered, Verification::None);
        let require = policy(Use::Required, Verification::None);
        assert_eq!(answer(prefer, b'S'), Answer::Tls);
        assert_eq!(answer(prefer, b'N'), Answer::Plain);
        assert_eq!(
            answer(require, b'N'),
            Answer::Refuse("the server does not offer TLS")
        );
        assert!(matches!(answer(prefer, b'E'), Answer::Refuse(_)));
        assert!(matches!(answer(require, b'H'), Answer::Refuse(_)));
    }

    #[tokio::test]
    async fn a_unix_socket_host_is_local_and_never_negotiates_tls() {
        let tls = TlsOptions {
            mode: crate::config::SslMode::Require,
            rootcert: None,
            cert: None,
            key: None,
        };
        let target = Target {
            endpoint: "local",
            host: "/var/run/postgresql",
            addr: None,
            port: 5432,
            tls: &tls,
        };
        let (up, negotiated) = open(&target, Duration::from_secs(1)).await.unwrap();
        assert!(matches!(up, Upstream::Plain));
        assert!(matches!(negotiated, Negotiated::Plain { .. }));
    }

    #[test]
    fn relay_sockets_live_in_a_private_folder() {
        use std::os::unix::fs::PermissionsExt;
        let dir = socket_dir().unwrap();
        let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(dir.join(".s.PGSQL.65535").as_os_str().len() < 108);
    }
}
