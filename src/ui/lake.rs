//! Lake browser: a target (local folder or S3) as a tree of folders
//! (`raw/<source>/<schema>/<table>/<partitions>`), with object counts, sizes, last-modified
//! times and a small-file warning below a size the user sets.
//!
//! Listing is paged and asynchronous: pages of the current folder arrive one after another
//! in the background, and only the visible rows are drawn, so a folder with 100k objects
//! never freezes the window.

use crate::lake::inspect;
use crate::lake::storage::ListPage;
use crate::lake::{ObjectMeta, Storage, human_bytes};

use super::{Backend, UiEvent, WorkspaceDoc};

pub struct LakeScreen {
    target: Option<String>,
    storage: Option<Storage>,
    prefix: String,
    folders: Vec<String>,
    objects: Vec<ObjectMeta>,
    /// Identifies the listing in flight; pages of an older one are dropped.
    request: u64,
    listing: bool,
    error: Option<String>,
    small_file_kb: u64,
    /// The next page to ask for: (prefix, continuation token).
    pending: Option<(String, String)>,
    pub catalog: super::catalog::CatalogPanel,
}

impl LakeScreen {
    pub fn new(small_file_kb: u64) -> Self {
        LakeScreen {
            target: None,
            storage: None,
            prefix: String::new(),
            folders: Vec::new(),
            objects: Vec::new(),
            request: 0,
            listing: false,
            error: None,
            small_file_kb,
            pending: None,
            catalog: Default::default(),
        }
    }

    pub fn small_file_kb(&self) -> u64 {
        self.small_file_kb
    }

    /// A page of the current listing arrived; asks for the next one.
    pub fn page(&mut self, request: u64, prefix: String, page: Result<ListPage, String>) {
        if request != self.request {
            return;
        }
        match page {
            Ok(page) => {
                self.folders.extend(page.prefixes);
                self.objects.extend(page.objects);
                match page.next {
                    Some(token) => self.pending = Some((prefix, token)),
                    None => self.listing = false,
                }
            }
            Err(e) => {
                self.error = Some(e);
                self.listing = false;
            }
        }
    }

    /// The chosen target's storage is ready: list its root, and show the catalog of the raw
    /// zones in it (`doc` says which folders those are).
    pub fn opened(
        &mut self,
        backend: &Backend,
        doc: &WorkspaceDoc,
        target: String,
        storage: Result<Storage, String>,
    ) {
        if self.target.as_deref() != Some(target.as_str()) {
            return;
        }
        match storage {
            Ok(storage) => {
                let folders = doc.workspace.raw_folders(&target);
                self.catalog
                    .load(backend, storage.clone(), folders, false, workspace_of(doc));
                self.storage = Some(storage);
                self.list(backend, String::new(), None);
            }
            Err(e) => self.error = Some(e),
        }
    }

    fn list(&mut self, backend: &Backend, prefix: String, token: Option<String>) {
        let Some(storage) = self.storage.clone() else {
            return;
        };
        if token.is_none() {
            self.request += 1;
            self.folders.clear();
            self.objects.clear();
            self.error = None;
            self.prefix = prefix.clone();
        }
        self.listing = true;
        let request = self.request;
        backend.spawn(async move {
            let page = storage
                .list_page(&prefix, true, token)
                .await
                .map_err(|e| e.to_string());
            UiEvent::LakePage {
                request,
                prefix,
                page,
            }
        });
    }

    /// Draws the browser; returns what to preview, when the user picks something.
    pub fn lake_ui(
        &mut self,
        ui: &mut egui::Ui,
        doc: &WorkspaceDoc,
        backend: &Backend,
    ) -> Option<Open> {
        if let Some((prefix, token)) = self.pending.take() {
            self.list(backend, prefix, Some(token));
        }
        let targets: Vec<_> = doc
            .workspace
            .endpoints
            .iter()
            .filter(|e| !e.engine.is_source())
            .collect();
        self.target_ui(ui, doc, backend, &targets);
        if targets.is_empty() {
            ui.label("Add a local or S3 target endpoint to browse it.");
            return None;
        }
        if let Some(e) = self.error.as_ref().filter(|_| self.storage.is_none()) {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        let storage = self.storage.clone()?;
        let mut go_to = None;
        let mut query = None;
        egui::Panel::right("lake-catalog")
            .resizable(true)
            .default_size(440.0)
            .min_size(360.0)
            .show(ui, |ui| {
                let action = self.catalog.catalog_ui(ui);
                if action.crawl
                    && let Some(target) = &self.target
                {
                    let folders = doc.workspace.raw_folders(target);
                    self.catalog
                        .load(backend, storage.clone(), folders, true, workspace_of(doc));
                }
                go_to = action.open;
                query = action.query;
            });
        // Breadcrumb.
        ui.horizontal_wrapped(|ui| {
            if ui.link(storage.describe()).clicked() {
                go_to = Some(String::new());
            }
            let mut acc = String::new();
            for part in self.prefix.split('/').filter(|p| !p.is_empty()) {
                acc.push_str(part);
                acc.push('/');
                ui.label("/");
                if ui.link(part).clicked() {
                    go_to = Some(acc.clone());
                }
            }
        });
        let mut preview_folder = false;
        let total: u64 = self.objects.iter().map(|o| o.size).sum();
        let small_limit = self.small_file_kb * 1024;
        let small = self.objects.iter().filter(|o| o.size < small_limit).count();
        ui.horizontal(|ui| {
            ui.label(format!(
                "{} folder(s), {} object(s), {}",
                self.folders.len(),
                self.objects.len(),
                human_bytes(total)
            ));
            if self.listing {
                ui.spinner();
                ui.weak("listing…");
            }
            let has_parquet = !self.folders.is_empty()
                || self.objects.iter().any(|o| o.key.ends_with(".parquet"));
            if has_parquet
                && ui
                    .button("Preview as one table")
                    .on_hover_text("every Parquet file below this folder, schemas merged")
                    .clicked()
            {
                preview_folder = true;
            }
            if small > 0 {
                ui.colored_label(
                    ui.visuals().warn_fg_color,
                    format!(
                        "{small} small file(s) below {} KB: query engines read many small files slowly",
                        self.small_file_kb
                    ),
                );
            }
        });
        if let Some(e) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        ui.separator();
        let (picked_folder, open) = self.entries_ui(ui, small_limit);
        go_to = go_to.or(picked_folder);
        if let Some(prefix) = go_to {
            self.list(backend, prefix, None);
        }
        if let Some(table) = query {
            return Some(Open::Query(table));
        }
        if preview_folder {
            return Some(Open::Folder {
                storage,
                prefix: self.prefix.clone(),
            });
        }
        open.map(|key| Open::File {
            uri: storage.uri(&key),
            storage: storage.clone(),
            key,
        })
    }

    /// The target chooser and the small-file limit.
    fn target_ui(
        &mut self,
        ui: &mut egui::Ui,
        doc: &WorkspaceDoc,
        backend: &Backend,
        targets: &[&crate::config::EndpointConfig],
    ) {
        ui.horizontal(|ui| {
            ui.label("Target");
            let current = self.target.clone().unwrap_or_else(|| "choose…".into());
            egui::ComboBox::from_id_salt("lake-target")
                .selected_text(current)
                .show_ui(ui, |ui| {
                    for t in targets {
                        if ui
                            .selectable_label(self.target.as_deref() == Some(&t.name), &t.name)
                            .clicked()
                        {
                            self.target = Some(t.name.clone());
                            self.storage = None;
                            self.error = None;
                            let mut endpoint = (*t).clone();
                            // A relative folder is relative to the workspace file, as in the CLI.
                            if let Some(file) = &doc.path {
                                endpoint.resolve_relative_path(file);
                            }
                            // Building an S3 client reads the credential chain: not on this thread.
                            backend.spawn(async move {
                                let storage = Storage::from_endpoint(&endpoint)
                                    .await
                                    .map_err(|e| e.to_string());
                                UiEvent::LakeOpened {
                                    target: endpoint.name,
                                    storage,
                                }
                            });
                        }
                    }
                });
            ui.separator();
            ui.label("small files below (KB)");
            ui.add(egui::DragValue::new(&mut self.small_file_kb).range(1..=10_000_000));
        });
    }

    /// The current folder's sub-folders and files, only the visible rows drawn. Returns the
    /// folder to go to and the file to open, if one was clicked.
    fn entries_ui(&self, ui: &mut egui::Ui, small_limit: u64) -> (Option<String>, Option<String>) {
        let mut go_to = None;
        let mut open = None;
        let rows = self.folders.len() + self.objects.len();
        let row_height = ui.text_style_height(&egui::TextStyle::Body) + 4.0;
        egui::ScrollArea::vertical().show_rows(ui, row_height, rows, |ui, range| {
            for i in range {
                if let Some(folder) = self.folders.get(i) {
                    let name = folder
                        .trim_end_matches('/')
                        .rsplit('/')
                        .next()
                        .unwrap_or(folder);
                    if ui.link(format!("{name}/")).clicked() {
                        go_to = Some(folder.clone());
                    }
                } else if let Some(o) = self.objects.get(i - self.folders.len()) {
                    let name = o.key.rsplit('/').next().unwrap_or(&o.key);
                    ui.horizontal(|ui| {
                        let previewable = name.ends_with(".parquet") || inspect::is_text_file(name);
                        if previewable {
                            if ui.link(name).clicked() {
                                open = Some(o.key.clone());
                            }
                        } else {
                            ui.label(name);
                        }
                        ui.weak(human_bytes(o.size));
                        if let Some(t) = o.last_modified {
                            ui.weak(t.format("%Y-%m-%d %H:%M:%S").to_string());
                        }
                        if o.size < small_limit {
                            ui.colored_label(ui.visuals().warn_fg_color, "small");
                        }
                    });
                }
            }
        });
        (go_to, open)
    }
}

/// What the browser asks to preview.
pub enum Open {
    File {
        uri: String,
        storage: Storage,
        key: String,
    },
    /// Every Parquet file below `prefix`, as one table.
    Folder { storage: Storage, prefix: String },
    /// A curated table, in the query tab.
    Query(String),
}

/// The workspace and its file, for what reads the workspace's Iceberg catalog.
fn workspace_of(doc: &WorkspaceDoc) -> Option<(crate::config::Workspace, std::path::PathBuf)> {
    doc.path.clone().map(|p| (doc.workspace.clone(), p))
}
