//! The desktop app: endpoints, tasks, live monitoring, the lake browser, Parquet preview and
//! SQL over the lake.
//!
//! Structure (after rerun's viewer):
//! - UI state lives in the screens ([`endpoints`], [`tasks`], [`monitoring`], [`lake`],
//!   [`preview`], [`query`]); engine state lives in the engine and reaches the UI as events.
//! - The UI thread never waits on I/O: every request runs on the background tokio runtime
//!   through [`Backend::spawn`], whose result comes back as a [`UiEvent`] over a channel,
//!   followed by `request_repaint`. Running tasks are driven through the engine's
//!   command/event API ([`crate::task::start_task`]).
//! - Functions that draw take `&mut egui::Ui` and are named `*_ui`.
//! - Preferences (the open workspace, the small-file threshold, the tab) persist through
//!   eframe storage.

pub mod catalog;
pub mod endpoints;
pub mod lake;
pub mod monitoring;
pub mod preview;
pub mod query;
pub mod tasks;

use std::path::PathBuf;

use tokio::sync::mpsc;

use crate::check::CheckResult;
use crate::config::{EndpointConfig, Workspace};
use crate::lake::storage::ListPage;

/// Results of background work, delivered to the UI thread.
pub enum UiEvent {
    WorkspaceLoaded(Result<(PathBuf, Workspace), String>),
    WorkspaceSaved(Result<PathBuf, String>),
    CheckDone {
        endpoint: String,
        results: Vec<CheckResult>,
    },
    /// A password was stored in the OS keyring (`Ok`: the entry's name).
    PasswordSaved {
        endpoint: String,
        result: Result<String, String>,
    },
    SourceTables {
        source: String,
        tables: Result<Vec<crate::ident::TableId>, String>,
    },
    LakeOpened {
        target: String,
        storage: Result<crate::lake::Storage, String>,
    },
    Catalog {
        request: u64,
        result: Result<
            (
                Vec<catalog::FolderCatalog>,
                Vec<crate::curate::CuratedSummary>,
            ),
            String,
        >,
    },
    LakePage {
        request: u64,
        prefix: String,
        page: Result<ListPage, String>,
    },
    PreviewOpened {
        request: u64,
        result: Result<preview::Opened, String>,
    },
    PreviewFiltered {
        request: u64,
        filter: u64,
        result: Result<Vec<Vec<String>>, String>,
    },
    PreviewRows {
        request: u64,
        start: usize,
        result: Result<Vec<Vec<String>>, String>,
    },
    PreviewText {
        request: u64,
        result: Result<Vec<String>, String>,
    },
    QueryDone {
        request: u64,
        result: Result<query::QueryResult, String>,
    },
    LakeTables {
        request: u64,
        result: Result<Vec<String>, String>,
    },
    /// A curate or models run finished.
    ZoneActivity(query::Activity),
    /// A validation of task `task` moved on (request `request`; an older one's are dropped).
    Validation {
        task: String,
        request: u64,
        update: tasks::ValidationUpdate,
    },
    Exported(Result<String, String>),
}

/// Runs work on the background runtime and brings the result back to the UI thread.
#[derive(Clone)]
pub struct Backend {
    runtime: tokio::runtime::Handle,
    tx: mpsc::UnboundedSender<UiEvent>,
    ctx: egui::Context,
}

impl Backend {
    pub fn new(
        runtime: tokio::runtime::Handle,
        ctx: egui::Context,
    ) -> (Backend, mpsc::UnboundedReceiver<UiEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Backend { runtime, tx, ctx }, rx)
    }

    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    pub fn ctx(&self) -> &egui::Context {
        &self.ctx
    }

    /// Sends `event` to the UI from background work, which is then repainted.
    pub fn emit(&self, event: UiEvent) {
        let _ = self.tx.send(event);
        self.ctx.request_repaint();
    }

    /// Runs `work` in the background; its event reaches the UI, which is then repainted.
    pub fn spawn(&self, work: impl Future<Output = UiEvent> + Send + 'static) {
        let tx = self.tx.clone();
        let ctx = self.ctx.clone();
        self.runtime.spawn(async move {
            let _ = tx.send(work.await);
            ctx.request_repaint();
        });
    }

    pub fn load_workspace(&self, path: PathBuf) {
        self.spawn(async move {
            let loaded = tokio::task::spawn_blocking(move || {
                Workspace::load(&path)
                    .map(|w| (path, w))
                    .map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            UiEvent::WorkspaceLoaded(loaded)
        });
    }

    /// Validates `workspace` as the CLI would read it, then writes it atomically: a crash or a
    /// full disk leaves the previous file whole, and the file keeps its permissions
    /// ([`crate::lake::durable::write_atomically`]).
    pub fn save_workspace(&self, path: PathBuf, workspace: &Workspace) {
        let text = workspace.to_toml();
        self.spawn(async move {
            let saved = match Workspace::parse(&text, &path) {
                Err(e) => Err(e.to_string()),
                Ok(_) => tokio::task::spawn_blocking(move || {
                    crate::lake::durable::write_atomically(&path, text.as_bytes())
                        .map(|()| path)
                        .map_err(|e| e.to_string())
                })
                .await
                .unwrap_or_else(|e| Err(e.to_string())),
            };
            UiEvent::WorkspaceSaved(saved)
        });
    }

    /// Stores `password` in the OS keyring for `endpoint`; the password is dropped after.
    pub fn save_password(&self, endpoint: &EndpointConfig, password: String) {
        let entry = endpoint.keyring_entry();
        self.spawn(async move {
            let name = entry.endpoint.clone();
            let result = tokio::task::spawn_blocking(move || {
                crate::secret::set(&entry, &password)
                    .map(|()| entry.name())
                    .map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            UiEvent::PasswordSaved {
                endpoint: name,
                result,
            }
        });
    }

    pub fn check_endpoint(&self, workspace: &Workspace, endpoint: &EndpointConfig) {
        let (workspace, endpoint) = (workspace.clone(), endpoint.clone());
        self.spawn(async move {
            let results = crate::task::check_endpoint(&workspace, &endpoint).await;
            UiEvent::CheckDone {
                endpoint: endpoint.name,
                results,
            }
        });
    }
}

/// The workspace being edited and where it lives.
#[derive(Default)]
pub struct WorkspaceDoc {
    pub path: Option<PathBuf>,
    pub workspace: Workspace,
    /// Changed since it was loaded or saved.
    pub dirty: bool,
    pub error: Option<String>,
    pub status: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Tab {
    Endpoints,
    Tasks,
    Monitoring,
    Lake,
    Preview,
    Query,
}

/// What survives a restart of the app.
#[derive(serde::Serialize, serde::Deserialize)]
struct Preferences {
    workspace: Option<PathBuf>,
    tab: Tab,
    small_file_kb: u64,
}

pub struct TributaryApp {
    backend: Backend,
    events: mpsc::UnboundedReceiver<UiEvent>,
    doc: WorkspaceDoc,
    tab: Tab,
    endpoints: endpoints::EndpointsScreen,
    tasks: tasks::TasksScreen,
    monitoring: monitoring::MonitoringScreen,
    runs: monitoring::Runs,
    lake: lake::LakeScreen,
    preview: preview::PreviewScreen,
    query: query::QueryScreen,
}

const PREFERENCES_KEY: &str = "tributary.preferences";

impl TributaryApp {
    /// An app on `runtime`; opens `workspace` (else the one used last time).
    pub fn new(
        ctx: &egui::Context,
        runtime: tokio::runtime::Handle,
        storage: Option<&dyn eframe::Storage>,
        workspace: Option<PathBuf>,
    ) -> Self {
        let (backend, events) = Backend::new(runtime, ctx.clone());
        let preferences: Option<Preferences> =
            storage.and_then(|s| eframe::get_value(s, PREFERENCES_KEY));
        let app = TributaryApp {
            backend,
            events,
            doc: WorkspaceDoc::default(),
            tab: preferences.as_ref().map_or(Tab::Endpoints, |p| p.tab),
            endpoints: Default::default(),
            tasks: Default::default(),
            monitoring: Default::default(),
            runs: Default::default(),
            lake: lake::LakeScreen::new(preferences.as_ref().map_or(1024, |p| p.small_file_kb)),
            preview: Default::default(),
            query: Default::default(),
        };
        if let Some(path) = workspace.or(preferences.and_then(|p| p.workspace)) {
            app.backend.load_workspace(path);
        }
        app
    }

    /// An app showing `workspace` at once (for tests and fixtures).
    pub fn with_workspace(
        ctx: &egui::Context,
        runtime: tokio::runtime::Handle,
        path: PathBuf,
        workspace: Workspace,
    ) -> Self {
        let mut app = TributaryApp::new(ctx, runtime, None, None);
        app.doc = WorkspaceDoc {
            path: Some(path),
            workspace,
            ..Default::default()
        };
        app
    }

    pub fn set_tab(&mut self, tab: Tab) {
        self.tab = tab;
    }

    pub fn doc(&self) -> &WorkspaceDoc {
        &self.doc
    }

    pub fn runs(&self) -> &monitoring::Runs {
        &self.runs
    }

    pub fn runs_mut(&mut self) -> &mut monitoring::Runs {
        &mut self.runs
    }

    /// Runs `sql` in the query tab and shows it.
    pub fn query_sql(&mut self, sql: &str) {
        self.query.run_sql(&self.backend, &self.doc, sql.to_owned());
        self.tab = Tab::Query;
    }

    /// Opens a lake file in the preview tab.
    pub fn preview_uri(&mut self, uri: &str) {
        self.preview.open(&self.backend, uri, None);
        self.tab = Tab::Preview;
    }

    fn handle(&mut self, event: UiEvent) {
        match event {
            UiEvent::WorkspaceLoaded(Ok((path, workspace))) => {
                self.doc = WorkspaceDoc {
                    status: Some(format!("opened {}", path.display())),
                    path: Some(path),
                    workspace,
                    ..Default::default()
                };
            }
            UiEvent::WorkspaceLoaded(Err(e)) => self.doc.error = Some(e),
            UiEvent::WorkspaceSaved(Ok(path)) => {
                self.doc.dirty = false;
                self.doc.error = None;
                self.doc.status = Some(format!("saved {}", path.display()));
            }
            UiEvent::WorkspaceSaved(Err(e)) => self.doc.error = Some(e),
            UiEvent::CheckDone { endpoint, results } => self.endpoints.checked(endpoint, results),
            UiEvent::PasswordSaved { endpoint, result } => {
                self.endpoints.password_saved(endpoint, result)
            }
            UiEvent::SourceTables { source, tables } => self.tasks.source_tables(source, tables),
            UiEvent::Validation {
                task,
                request,
                update,
            } => self.tasks.validation(task, request, update),
            UiEvent::LakeOpened { target, storage } => {
                self.lake.opened(&self.backend, &self.doc, target, storage)
            }
            UiEvent::LakePage {
                request,
                prefix,
                page,
            } => self.lake.page(request, prefix, page),
            UiEvent::Catalog { request, result } => self.lake.catalog.loaded(request, result),
            event @ (UiEvent::PreviewOpened { .. }
            | UiEvent::PreviewRows { .. }
            | UiEvent::PreviewText { .. }
            | UiEvent::PreviewFiltered { .. }) => self.preview.handle(&self.backend, event),
            event @ (UiEvent::QueryDone { .. }
            | UiEvent::LakeTables { .. }
            | UiEvent::ZoneActivity(_)
            | UiEvent::Exported(_)) => self.query.handle(&self.backend, &self.doc, event),
        }
    }

    fn top_bar_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.heading("Tributary");
            ui.separator();
            for (tab, label) in [
                (Tab::Endpoints, "Endpoints"),
                (Tab::Tasks, "Tasks"),
                (Tab::Monitoring, "Monitoring"),
                (Tab::Lake, "Lake"),
                (Tab::Preview, "Preview"),
                (Tab::Query, "Query"),
            ] {
                if ui.selectable_value(&mut self.tab, tab, label).clicked() && tab == Tab::Query {
                    self.query.refresh_tables(&self.backend, &self.doc);
                }
            }
            ui.separator();
            if ui.button("Open…").clicked() {
                let backend = self.backend.clone();
                self.backend.runtime().spawn(async move {
                    if let Some(file) = rfd::AsyncFileDialog::new()
                        .add_filter("workspace", &["toml"])
                        .pick_file()
                        .await
                    {
                        backend.load_workspace(file.path().to_owned());
                    }
                });
            }
            let can_save = self.doc.path.is_some();
            if ui
                .add_enabled(can_save, egui::Button::new("Save"))
                .clicked()
                && let Some(path) = self.doc.path.clone()
            {
                self.backend.save_workspace(path, &self.doc.workspace);
            }
            if ui.button("Export…").clicked() {
                let backend = self.backend.clone();
                let workspace = self.doc.workspace.clone();
                self.backend.runtime().spawn(async move {
                    if let Some(file) = rfd::AsyncFileDialog::new()
                        .set_file_name("workspace.toml")
                        .save_file()
                        .await
                    {
                        backend.save_workspace(file.path().to_owned(), &workspace);
                    }
                });
            }
            match &self.doc.path {
                Some(p) => ui.weak(format!(
                    "{}{}",
                    p.display(),
                    if self.doc.dirty { " (modified)" } else { "" }
                )),
                None => ui.weak("no workspace file: Open… one, or add endpoints and Export…"),
            };
        });
        if let Some(e) = &self.doc.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        } else if let Some(s) = &self.doc.status {
            ui.weak(s);
        }
    }
}

impl eframe::App for TributaryApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        while let Ok(event) = self.events.try_recv() {
            self.handle(event);
        }
        self.runs.poll();
        if self.runs.any_running() {
            // Live figures: redraw a few times a second while tasks run.
            ui.ctx()
                .request_repaint_after(std::time::Duration::from_millis(250));
        }
        egui::Panel::top("top").show(ui, |ui| self.top_bar_ui(ui));
        egui::CentralPanel::default().show(ui, |ui| match self.tab {
            Tab::Endpoints => self
                .endpoints
                .endpoints_ui(ui, &mut self.doc, &self.backend),
            Tab::Tasks => self
                .tasks
                .tasks_ui(ui, &mut self.doc, &self.backend, &mut self.runs),
            Tab::Monitoring => self.monitoring.monitoring_ui(ui, &mut self.runs),
            Tab::Lake => match self.lake.lake_ui(ui, &self.doc, &self.backend) {
                Some(lake::Open::File { uri, storage, key }) => {
                    self.preview.open(&self.backend, &uri, Some((storage, key)));
                    self.tab = Tab::Preview;
                }
                Some(lake::Open::Folder { storage, prefix }) => {
                    self.preview.open_folder(&self.backend, storage, prefix);
                    self.tab = Tab::Preview;
                }
                Some(lake::Open::Query(table)) => {
                    self.query_sql(&query::select_all(&table));
                }
                None => {}
            },
            Tab::Preview => self.preview.preview_ui(ui, &self.backend),
            Tab::Query => self.query.query_ui(ui, &self.doc, &self.backend),
        });
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(
            storage,
            PREFERENCES_KEY,
            &Preferences {
                workspace: self.doc.path.clone(),
                tab: self.tab,
                small_file_kb: self.lake.small_file_kb(),
            },
        );
    }
}

/// `tributary` with no arguments: the app, or a pointer to the CLI without a display.
pub fn run(workspace: Option<PathBuf>) -> std::process::ExitCode {
    let has_display = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|d| !d.is_empty()));
    if cfg!(target_os = "linux") && !has_display {
        eprintln!(
            "tributary: no display (neither DISPLAY nor WAYLAND_DISPLAY is set), so the app cannot open.\n\
             Use the command line instead, e.g.:\n  \
             tributary run WORKSPACE --task NAME\n  \
             tributary check WORKSPACE\n  \
             tributary --help"
        );
        return std::process::ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tributary-engine")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the background runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let handle = runtime.handle().clone();
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Tributary")
            .with_inner_size([1280.0, 800.0]),
        ..Default::default()
    };
    let result = eframe::run_native(
        "Tributary",
        options,
        Box::new(move |cc| {
            Ok(Box::new(TributaryApp::new(
                &cc.egui_ctx,
                handle,
                cc.storage,
                workspace,
            )))
        }),
    );
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "error: the app could not start ({e}). The command line works without a window: tributary --help"
            );
            std::process::ExitCode::FAILURE
        }
    }
}
