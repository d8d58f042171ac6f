//! Endpoints screen: list, add, edit and delete sources and targets, validated as you type,
//! and "Test connection" with the same checks as `tributary check`.
//!
//! Passwords never reach the workspace file: an endpoint names the environment variable
//! that holds its password (`password_env`), or keeps it in the OS keyring
//! (`password_keyring`). A password typed here lives in this screen's state until "Save in
//! keyring" hands it to the background runtime, which stores it and drops it.

use std::collections::HashMap;
use std::path::PathBuf;

use super::{Backend, WorkspaceDoc};
use crate::check::{CheckResult, CheckStatus};
use crate::config::{EndpointConfig, Engine};

#[derive(Default)]
pub struct EndpointsScreen {
    selected: Option<usize>,
    /// Results of the last test per endpoint; `None` while one runs.
    checks: HashMap<String, Option<Vec<CheckResult>>>,
    /// The password being typed for the keyring (never saved anywhere else), and the entry
    /// it was typed for: it is dropped when the endpoint's server or user changes.
    keyring_password: String,
    keyring_entry: String,
    /// The last keyring save per endpoint: `None` while it runs, then what happened.
    keyring_saves: HashMap<String, Option<Result<String, String>>>,
}

const GREEN: egui::Color32 = egui::Color32::from_rgb(60, 170, 90);

impl EndpointsScreen {
    pub fn checked(&mut self, endpoint: String, results: Vec<CheckResult>) {
        self.checks.insert(endpoint, Some(results));
    }

    /// A keyring save ended: `Ok` names the entry.
    pub fn password_saved(&mut self, endpoint: String, result: Result<String, String>) {
        self.keyring_saves.insert(endpoint, Some(result));
    }

    pub fn endpoints_ui(&mut self, ui: &mut egui::Ui, doc: &mut WorkspaceDoc, backend: &Backend) {
        egui::Panel::left("endpoint-list")
            .resizable(true)
            .default_size(260.0)
            .show(ui, |ui| self.list_ui(ui, doc));
        let Some(index) = self.selected.filter(|i| *i < doc.workspace.endpoints.len()) else {
            ui.label("Select an endpoint, or add one.");
            return;
        };
        let mut delete = false;
        let mut test = false;
        egui::ScrollArea::vertical().show(ui, |ui| {
            let endpoint = &mut doc.workspace.endpoints[index];
            let before = endpoint.clone();
            editor_ui(ui, endpoint);
            if endpoint.engine.is_source() && endpoint.password_keyring {
                self.keyring_ui(ui, endpoint, backend);
            }
            secrets_note_ui(ui, endpoint.engine);
            ui.add_space(8.0);
            ui.horizontal(|ui| {
                test = ui.button("Test connection").clicked();
                delete = ui.button("Delete endpoint").clicked();
            });
            if !same(&before, endpoint) {
                doc.dirty = true;
            }
            if let Some(state) = self.checks.get(&endpoint.name) {
                checks_ui(ui, state.as_deref());
            }
        });
        if test {
            let mut endpoint = doc.workspace.endpoints[index].clone();
            // Certificate and target paths are relative to the workspace file, as when run.
            if let Some(file) = &doc.path {
                endpoint.resolve_relative_path(file);
            }
            self.checks.insert(endpoint.name.clone(), None);
            backend.check_endpoint(&doc.workspace, &endpoint);
        }
        if delete {
            doc.workspace.endpoints.remove(index);
            self.selected = None;
            doc.dirty = true;
        }
    }

    /// The password field and "Save in keyring" of an endpoint that keeps it in the keyring.
    fn keyring_ui(&mut self, ui: &mut egui::Ui, endpoint: &EndpointConfig, backend: &Backend) {
        let entry = endpoint.keyring_entry().user;
        if entry != self.keyring_entry {
            self.keyring_password.clear();
            self.keyring_entry = entry;
        }
        let complete = endpoint.host.is_some() && endpoint.user.is_some();
        ui.horizontal(|ui| {
            let label = ui.label("Keyring password");
            ui.add_sized(
                [200.0, 20.0],
                egui::TextEdit::singleline(&mut self.keyring_password).password(true),
            )
            .labelled_by(label.id);
            let save = egui::Button::new("Save in keyring");
            if ui
                .add_enabled(complete && !self.keyring_password.is_empty(), save)
                .on_hover_text(format!(
                    "Stores the password in the OS keyring as {}",
                    endpoint.keyring_entry().name()
                ))
                .clicked()
            {
                let password = std::mem::take(&mut self.keyring_password);
                self.keyring_saves.insert(endpoint.name.clone(), None);
                backend.save_password(endpoint, password);
            }
        });
        match self.keyring_saves.get(&endpoint.name) {
            Some(None) => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("Saving in the keyring…");
                });
            }
            Some(Some(Ok(entry))) => {
                ui.colored_label(GREEN, format!("Saved in the OS keyring as {entry}"));
            }
            Some(Some(Err(e))) => {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
            None => {}
        }
    }

    fn list_ui(&mut self, ui: &mut egui::Ui, doc: &mut WorkspaceDoc) {
        ui.heading("Endpoints");
        for (i, e) in doc.workspace.endpoints.iter().enumerate() {
            let role = if e.engine.is_source() {
                "source"
            } else {
                "target"
            };
            let label = format!("{}  ({}, {role})", e.name, e.engine.name());
            if ui
                .selectable_label(self.selected == Some(i), label)
                .clicked()
            {
                self.selected = Some(i);
            }
        }
        ui.separator();
        ui.horizontal_wrapped(|ui| {
            for engine in Engine::ALL {
                if ui.button(format!("+ {}", engine.label())).clicked() {
                    let name = unique_name(doc, engine.name());
                    doc.workspace.endpoints.push(new_endpoint(name, engine));
                    self.selected = Some(doc.workspace.endpoints.len() - 1);
                    doc.dirty = true;
                }
            }
        });
    }
}

fn same(a: &EndpointConfig, b: &EndpointConfig) -> bool {
    toml::to_string(a).ok() == toml::to_string(b).ok()
}

fn unique_name(doc: &WorkspaceDoc, base: &str) -> String {
    (1..)
        .map(|i| format!("{base}{i}"))
        .find(|n| !doc.workspace.endpoints.iter().any(|e| &e.name == n))
        .unwrap_or_else(|| base.to_owned())
}

fn new_endpoint(name: String, engine: Engine) -> EndpointConfig {
    let mut e: EndpointConfig = match toml::from_str(&format!(
        "name = \"{name}\"\nengine = \"{}\"",
        engine.name()
    )) {
        Ok(e) => e,
        Err(_) => unreachable!("a name and an engine always parse"),
    };
    match engine.database_defaults() {
        Some(defaults) => {
            e.host = Some("127.0.0.1".into());
            e.port = Some(defaults.port);
            e.user = Some(defaults.user.into());
            e.password_env = Some(defaults.password_env.into());
        }
        None if engine == Engine::Local => e.path = Some(PathBuf::from("lake")),
        None => e.bucket = Some(String::new()),
    }
    e
}

/// A text field for an optional setting, with its problem shown beside it.
fn field_ui(ui: &mut egui::Ui, label: &str, value: &mut Option<String>, problem: Option<&str>) {
    let label = ui.label(label);
    let mut text = value.clone().unwrap_or_default();
    let response = ui
        .add_sized([280.0, 20.0], egui::TextEdit::singleline(&mut text))
        .labelled_by(label.id);
    if response.changed() {
        *value = (!text.is_empty()).then_some(text);
    }
    match problem {
        Some(p) => ui.colored_label(ui.visuals().error_fg_color, p),
        None => ui.label(""),
    };
    ui.end_row();
}

/// [`field_ui`] for an optional path.
fn path_field_ui(
    ui: &mut egui::Ui,
    label: &str,
    value: &mut Option<PathBuf>,
    problem: Option<&str>,
) {
    let mut text = value.as_ref().map(|p| p.display().to_string());
    field_ui(ui, label, &mut text, problem);
    *value = text.map(PathBuf::from);
}

/// The per-engine form; problems show as you type.
fn editor_ui(ui: &mut egui::Ui, e: &mut EndpointConfig) {
    ui.heading(format!("{} endpoint", e.engine.name()));
    egui::Grid::new("endpoint-form")
        .num_columns(3)
        .spacing([12.0, 6.0])
        .show(ui, |ui| {
            let mut name = Some(e.name.clone());
            let name_problem = name_problem(&e.name);
            field_ui(ui, "Name", &mut name, name_problem.as_deref());
            e.name = name.unwrap_or_default();
            match e.engine {
                Engine::Local => {
                    let problem = e.path.is_none().then_some("required");
                    path_field_ui(ui, "Folder", &mut e.path, problem);
                }
                Engine::S3 => {
                    let problem = e
                        .bucket
                        .as_deref()
                        .is_none_or(str::is_empty)
                        .then_some("required");
                    field_ui(ui, "Bucket", &mut e.bucket, problem);
                    field_ui(ui, "Region", &mut e.region, None);
                    let url_problem = e.endpoint_url.as_deref().and_then(|u| {
                        if crate::secret::url_password(u).is_some() {
                            Some("no credentials here: they come from the AWS chain")
                        } else if !u.starts_with("http://") && !u.starts_with("https://") {
                            Some("must start with http:// or https://")
                        } else {
                            None
                        }
                    });
                    field_ui(ui, "Endpoint URL", &mut e.endpoint_url, url_problem);
                    field_ui(ui, "Profile", &mut e.profile, None);
                    path_field_ui(ui, "CA bundle (PEM)", &mut e.ca_bundle, None);
                    ui.label("Path-style");
                    let mut path_style = e.force_path_style.unwrap_or(false);
                    if ui.checkbox(&mut path_style, "").changed() {
                        e.force_path_style = Some(path_style);
                    }
                    ui.end_row();
                }
                // Every source database.
                _ => {
                    // A Secrets Manager secret may hold the host and the user.
                    let required = if e.password_secret.is_some() {
                        None
                    } else {
                        Some("required")
                    };
                    let host_problem = e.host.is_none().then_some(required).flatten();
                    field_ui(ui, "Host", &mut e.host, host_problem);
                    let mut port = e.port.map(|p| p.to_string());
                    let port_problem = port
                        .as_deref()
                        .filter(|p| p.parse::<u16>().is_err())
                        .map(|_| "a port number, 1 to 65535");
                    field_ui(ui, "Port", &mut port, port_problem);
                    if let Some(p) = port.as_deref().and_then(|p| p.parse().ok()) {
                        e.port = Some(p);
                    } else if port.is_none() {
                        e.port = None;
                    }
                    let addr_problem = e
                        .hostaddr
                        .as_deref()
                        .filter(|a| a.parse::<std::net::IpAddr>().is_err())
                        .map(|_| "an IP address (the host name stays for TLS)");
                    field_ui(ui, "Host address", &mut e.hostaddr, addr_problem);
                    field_ui(ui, "Database", &mut e.database, None);
                    let user_problem = e.user.is_none().then_some(required).flatten();
                    field_ui(ui, "User", &mut e.user, user_problem);
                    password_source_ui(ui, e);
                    tls_ui(ui, e);
                }
            }
        });
}

/// Where an endpoint's secrets come from, said under its form.
fn secrets_note_ui(ui: &mut egui::Ui, engine: Engine) {
    if engine.is_source() {
        ui.weak(
            "The password is read from the named environment variable, the OS keyring or AWS \
             Secrets Manager (with the AWS credential chain); it is never stored in the workspace \
             file.",
        );
    } else if engine == Engine::S3 {
        ui.weak("Credentials come from the AWS chain: environment, profile, SSO or instance role.");
    }
}

/// Where a source's password comes from: an environment variable, the OS keyring, or an AWS
/// Secrets Manager secret (shown by its name only; its value is never fetched here).
fn password_source_ui(ui: &mut egui::Ui, e: &mut EndpointConfig) {
    #[derive(PartialEq, Clone, Copy)]
    enum From {
        Env,
        Keyring,
        Secret,
    }
    let from = if e.password_keyring {
        From::Keyring
    } else if e.password_secret.is_some() {
        From::Secret
    } else {
        From::Env
    };
    ui.label("Password from");
    let mut chosen = from;
    ui.horizontal(|ui| {
        ui.radio_value(&mut chosen, From::Env, "Environment variable");
        ui.radio_value(&mut chosen, From::Keyring, "OS keyring");
        ui.radio_value(&mut chosen, From::Secret, "AWS Secrets Manager");
    });
    ui.label("");
    ui.end_row();
    if chosen != from {
        e.password_keyring = chosen == From::Keyring;
        e.password_env = (chosen == From::Env)
            .then(|| {
                e.engine
                    .database_defaults()
                    .map(|d| d.password_env.to_owned())
            })
            .flatten();
        e.password_secret = (chosen == From::Secret).then(String::new);
    }
    match chosen {
        From::Keyring => {
            ui.label("Keyring entry");
            ui.monospace(e.keyring_entry().name());
            ui.label("");
            ui.end_row();
        }
        From::Secret => {
            let mut id = e.password_secret.clone().filter(|s| !s.is_empty());
            let problem = id.is_none().then_some("the secret's name or ARN");
            field_ui(ui, "Secret", &mut id, problem);
            // Kept even when empty, so the choice stays until a name is typed.
            e.password_secret = Some(id.unwrap_or_default());
        }
        From::Env => {
            let env_problem = match &e.password_env {
                // The same refusal as the workspace file's and Test connection's.
                Some(var) => crate::secret::check_password_env(var, &e.name)
                    .err()
                    .map(|why| first_clause(&why).to_owned())
                    .or_else(|| {
                        std::env::var_os(var)
                            .is_none()
                            .then(|| format!("{var} is not set in this app's environment"))
                    }),
                None => None,
            };
            field_ui(
                ui,
                "Password variable",
                &mut e.password_env,
                env_problem.as_deref(),
            );
        }
    }
}

/// TLS: the mode (libpq's, for both engines) and its certificate files.
fn tls_ui(ui: &mut egui::Ui, e: &mut EndpointConfig) {
    use crate::config::SslMode;
    let label = ui.label("TLS (sslmode)");
    let current = e.sslmode.map_or("prefer (default)", SslMode::name);
    egui::ComboBox::from_id_salt("sslmode")
        .selected_text(current)
        .show_ui(ui, |ui| {
            for mode in SslMode::ALL {
                ui.selectable_value(&mut e.sslmode, Some(mode), mode.name());
            }
        })
        .response
        .labelled_by(label.id);
    let needs_root = matches!(e.sslmode, Some(SslMode::VerifyCa | SslMode::VerifyFull))
        && e.sslrootcert.is_none();
    match e.sslmode {
        Some(SslMode::Disable) => ui.label("not encrypted"),
        Some(SslMode::VerifyFull) => ui.label("chain and host name verified"),
        Some(SslMode::VerifyCa) => ui.label("chain verified, any host name"),
        _ => ui.label("encrypted when offered; verified with a root certificate"),
    };
    ui.end_row();
    if e.sslmode == Some(SslMode::Disable) {
        return;
    }
    let root_problem = needs_root.then_some("required: the CA bundle (PEM), or \"system\"");
    field_ui(ui, "Root certificate", &mut e.sslrootcert, root_problem);
    let (cert, key) = (e.sslcert.is_some(), e.sslkey.is_some());
    let cert_problem = (!cert && key).then_some("goes with the client key");
    let key_problem = (!key && cert).then_some("goes with the certificate");
    path_field_ui(ui, "Client certificate", &mut e.sslcert, cert_problem);
    path_field_ui(ui, "Client key", &mut e.sslkey, key_problem);
}

/// A message's first clause, short enough for the form's problem column.
fn first_clause(message: &str) -> &str {
    let end = [". ", ": "]
        .iter()
        .filter_map(|sep| message.find(sep))
        .min()
        .unwrap_or(message.len());
    &message[..end]
}

fn name_problem(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    (!ok).then(|| "letters, digits, '-', '_' and '.'".to_owned())
}

/// Each prerequisite in green or red, with its fix.
fn checks_ui(ui: &mut egui::Ui, results: Option<&[CheckResult]>) {
    ui.separator();
    let Some(results) = results else {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label("Testing…");
        });
        return;
    };
    for r in results {
        let (mark, color) = match r.status {
            CheckStatus::Pass => ("PASS", GREEN),
            CheckStatus::Warn => ("WARN", ui.visuals().warn_fg_color),
            CheckStatus::Fail => ("FAIL", ui.visuals().error_fg_color),
        };
        ui.horizontal_wrapped(|ui| {
            ui.colored_label(color, format!("{mark} {}", r.name));
            ui.label(&r.detail);
        });
        if let Some(fix) = &r.fix {
            ui.indent(&r.name, |ui| ui.weak(format!("fix: {fix}")));
        }
    }
}
