//! Passwords in the OS keyring, against a real Secret Service: GNOME Keyring on a private
//! D-Bus session bus this test starts (`scripts/services` installs both). The CLI stores,
//! uses and removes a password; the app's Endpoints screen saves one with "Save in
//! keyring" and tests the connection with it. Neither ever writes it to the workspace file.
//!
//! One test in its own binary: the app reads the bus address from this process's
//! environment, which is set once, before any other thread runs.

#[path = "common/app.rs"]
mod app_harness;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use app_harness::*;
use common::*;
use egui_kittest::kittest::Queryable;
use tributary::config::Workspace;
use tributary::ui::Tab;

/// A private session bus whose Secret Service is GNOME Keyring with an unlocked login
/// keyring (empty password), all under a temporary folder; stopped when dropped.
struct KeyringSession {
    bus: Child,
    address: String,
    _dir: TestDir,
}

impl KeyringSession {
    fn start() -> KeyringSession {
        let dir = TestDir::new();
        let root = dir.path();
        for sub in ["home", "run", "data/dbus-1/services", "config", "cache"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        // Activated on first use, unlocked: a newline on stdin is the empty password.
        std::fs::write(
            root.join("data/dbus-1/services/org.freedesktop.secrets.service"),
            "[D-BUS Service]\nName=org.freedesktop.secrets\n\
             Exec=/bin/sh -c \"echo | exec gnome-keyring-daemon --foreground --components=secrets --unlock\"\n",
        )
        .unwrap();
        let address = format!("unix:path={}", root.join("bus").display());
        let bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nosyslog"])
            .arg(format!("--address={address}"))
            .env("HOME", root.join("home"))
            .env("XDG_RUNTIME_DIR", root.join("run"))
            .env("XDG_DATA_HOME", root.join("data"))
            .env("XDG_CONFIG_HOME", root.join("config"))
            .env("XDG_CACHE_HOME", root.join("cache"))
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon (scripts/services installs it)");
        let started = Instant::now();
        while !root.join("bus").exists() {
            assert!(started.elapsed() < Duration::from_secs(10), "no bus");
            std::thread::sleep(Duration::from_millis(10));
        }
        KeyringSession {
            bus,
            address,
            _dir: dir,
        }
    }

    /// `tributary` with this session's bus.
    fn tributary(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        let mut child = tributary_command(args)
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            use std::io::Write;
            let mut input = input;
            input.write_all(text.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }
}

impl Drop for KeyringSession {
    fn drop(&mut self) {
        // The keyring daemon ends with its bus.
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

fn workspace(pg: &Pg, dir: &TestDir, db: &str) -> PathBuf {
    PathBuf::from(dir.write_workspace(&format!(
        "[[endpoints]]\nname = \"shop\"\nengine = \"postgres\"\nhost = \"{}\"\nport = {}\n\
         database = \"{db}\"\nuser = \"{}\"\npassword_keyring = true\n\n{}\
         [[tasks]]\nname = \"load\"\nsource = \"shop\"\ntarget = \"lake\"\n",
        pg.host,
        pg.port,
        pg.user,
        local_target_toml("lake", &dir.lake())
    )))
}

fn assert_no_secret_in(path: &Path, password: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        !text.contains(password),
        "the password is in {}",
        path.display()
    );
}

#[test]
fn passwords_in_the_os_keyring_from_the_cli_and_the_app() {
    let pg = Pg::from_env();
    let db = "trib_keyring";
    let rt = runtime();
    rt.block_on(async {
        let mut conn = pg.fresh_database(db).await;
        sqlx::raw_sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
            .execute(&mut conn)
            .await
            .unwrap();
    });
    let session = KeyringSession::start();
    let dir = TestDir::new();
    let ws = workspace(&pg, &dir, db);
    let ws_arg = ws.to_str().unwrap();

    // The CLI: no password yet, then stored, used, and removed.
    let out = session.tributary(&["check", ws_arg, "--endpoint", "shop"], None);
    let text = stdout(&out);
    assert!(
        text.contains("FAIL") && text.contains("no password for tributary / postgres://"),
        "{text}"
    );
    assert!(text.contains("tributary password set"), "{text}");
    let out = session.tributary(
        &["password", "set", ws_arg, "--endpoint", "shop"],
        Some(&format!("{}\n", pg.password)),
    );
    assert!(assert_success(&out).contains("stored the password"));
    assert!(
        stdout(&session.tributary(&["check", ws_arg, "--endpoint", "shop"], None))
            .contains("PASS connect")
    );
    assert_success(&session.tributary(&["run", ws_arg, "--task", "load"], None));
    assert_success(&session.tributary(&["password", "delete", ws_arg, "--endpoint", "shop"], None));
    let err = assert_failure(
        &session.tributary(&["run", ws_arg, "--task", "load"], None),
        1,
    );
    assert!(err.contains("no password for"), "{err}");

    // Without a keyring (a server): the error says so and names the alternative.
    let out = tributary_command(&["check", ws_arg, "--endpoint", "shop"])
        .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("OS keyring is not reachable") && text.contains("password_env"),
        "{text}"
    );

    // The app, on the same bus. SAFETY: no other thread of this process runs yet (the
    // harness's runtime is already built, but idle; nothing reads the environment).
    unsafe { std::env::set_var("DBUS_SESSION_BUS_ADDRESS", &session.address) };
    let mut h = harness(&rt, ws.clone(), Workspace::load(&ws).unwrap());
    h.state_mut().set_tab(Tab::Endpoints);
    h.run_steps(4);
    h.get_by_label("shop  (postgres, source)").click();
    h.run_steps(4);
    assert!(
        h.query_by_label_contains("tributary / postgres://")
            .is_some()
    );
    // A wrong password first: the connection test must use what the keyring holds.
    let save = |h: &mut egui_kittest::Harness<'_, tributary::ui::TributaryApp>, password: &str| {
        let field = h.get_by_label("Keyring password");
        field.focus();
        field.type_text(password);
        h.run_steps(2);
        h.get_by_label("Save in keyring").click();
        wait_for(h, "Saved in the OS keyring", Duration::from_secs(20));
    };
    save(&mut h, "not-the-password");
    h.get_by_label("Test connection").click();
    wait_for(&mut h, "FAIL connect", Duration::from_secs(20));
    assert!(
        h.query_by_label_contains("stored in the OS keyring")
            .is_some()
    );
    save(&mut h, &pg.password);
    h.get_by_label("Test connection").click();
    wait_for(&mut h, "PASS connect", Duration::from_secs(20));
    screenshot(&mut h, "keyring");
    // Switching to an environment variable and back is an edit of the endpoint only.
    h.get_by_label("Environment variable").click();
    h.run_steps(2);
    assert!(h.query_by_label("Password variable").is_some());
    h.get_by_label("OS keyring").click();
    h.run_steps(2);
    assert!(h.query_by_label("Keyring password").is_some());
    h.get_by_label("Save").click();
    wait_until_gone(&mut h, "(modified)", Duration::from_secs(10));
    assert_no_secret_in(&ws, "not-the-password");
    let saved = std::fs::read_to_string(&ws).unwrap();
    assert!(saved.contains("password_keyring = true"), "{saved}");
    assert!(!saved.contains("password_env"), "{saved}");
}
