//! The catalog beside the lake browser's files: the raw tables a crawl found (formats,
//! files, rows, size, partitions, schema versions), each openable in the browser, and the
//! curated zone's Iceberg tables (rows, files, snapshots, columns), each queryable.
//!
//! Loading the saved catalog and crawling both run on the background runtime; a result
//! for a target that is no longer shown is dropped.

use std::path::PathBuf;

use crate::catalog::{Catalog, CrawlReport};
use crate::config::Workspace;
use crate::curate::CuratedSummary;
use crate::lake::Storage;

use super::{Backend, UiEvent};

/// One raw zone folder's catalog, and what the crawl that made it found (`None`: loaded).
pub type FolderCatalog = (String, Catalog, Option<CrawlReport>);

#[derive(Default)]
pub struct CatalogPanel {
    request: u64,
    busy: bool,
    catalogs: Vec<FolderCatalog>,
    curated: Vec<CuratedSummary>,
    error: Option<String>,
}

/// What the user asked of the catalog panel.
#[derive(Default)]
pub struct CatalogAction {
    pub crawl: bool,
    /// A raw table's folder to open in the browser.
    pub open: Option<String>,
    /// A curated table to query.
    pub query: Option<String>,
}

impl CatalogPanel {
    /// Loads the saved catalogs of `folders` (or crawls them, with `crawl`), and the curated
    /// tables of the workspace at `workspace` (when it has a file).
    pub fn load(
        &mut self,
        backend: &Backend,
        storage: Storage,
        folders: Vec<String>,
        crawl: bool,
        workspace: Option<(Workspace, PathBuf)>,
    ) {
        self.request += 1;
        self.busy = true;
        self.error = None;
        let request = self.request;
        backend.spawn(async move {
            let mut out = Vec::new();
            for folder in folders {
                let result = if crawl {
                    crate::catalog::crawl(&storage, &folder)
                        .await
                        .map(|(c, r)| (c, Some(r)))
                } else {
                    crate::catalog::load(&storage, &folder)
                        .await
                        .map(|c| (c, None))
                };
                match result {
                    Ok((catalog, report)) => out.push((folder, catalog, report)),
                    Err(e) => {
                        return UiEvent::Catalog {
                            request,
                            result: Err(e.to_string()),
                        };
                    }
                }
            }
            let curated = match workspace {
                Some((workspace, path)) => crate::curate::curated_tables(&workspace, &path)
                    .await
                    .map_err(|e| e.to_string()),
                None => Ok(Vec::new()),
            };
            UiEvent::Catalog {
                request,
                result: curated.map(|curated| (out, curated)),
            }
        });
    }

    pub fn loaded(
        &mut self,
        request: u64,
        result: Result<(Vec<FolderCatalog>, Vec<CuratedSummary>), String>,
    ) {
        if request != self.request {
            return;
        }
        self.busy = false;
        match result {
            Ok((catalogs, curated)) => {
                self.catalogs = catalogs;
                self.curated = curated;
            }
            Err(e) => self.error = Some(e),
        }
    }

    /// Draws the catalog; returns what the user asks.
    pub fn catalog_ui(&mut self, ui: &mut egui::Ui) -> CatalogAction {
        let mut crawl = false;
        let mut open = None;
        let mut query = None;
        ui.horizontal(|ui| {
            ui.heading("Catalog");
            crawl = ui
                .add_enabled(!self.busy, egui::Button::new("Crawl"))
                .on_hover_text("Finds new tables, files, partitions and schema changes; reads only new or changed files")
                .clicked();
            if self.busy {
                ui.spinner();
            }
        });
        if let Some(e) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        egui::ScrollArea::vertical()
            .id_salt("catalog-tables")
            .show(ui, |ui| {
                for (folder, catalog, report) in &self.catalogs {
                    let root = if folder.is_empty() { "(root)" } else { folder };
                    match (&catalog.crawled_at, report) {
                        (None, _) => {
                            ui.weak(format!("{root}: not crawled yet"));
                        }
                        (Some(at), None) => {
                            ui.weak(format!("{root}: crawled {}", at.format("%Y-%m-%d %H:%M:%S")));
                        }
                        (Some(_), Some(r)) => {
                            ui.label(format!(
                                "{root}: {} new table(s), {} file(s) added, {} new partition(s), {} schema change(s)",
                                r.tables_added.len(),
                                r.files_added,
                                r.partitions_added.len(),
                                r.schema_changes.len()
                            ));
                            for (key, reason) in &r.unreadable {
                                ui.colored_label(
                                    ui.visuals().error_fg_color,
                                    format!("unreadable {key}: {reason}"),
                                );
                            }
                        }
                    }
                    for t in catalog.tables.values() {
                        egui::CollapsingHeader::new(t.qualified_name())
                            .id_salt(&t.location)
                            .show(ui, |ui| {
                                // Summed over the files only while the table is open.
                                ui.label(t.summary());
                                if ui.link(format!("open {}", t.location)).clicked() {
                                    open = Some(t.location.clone());
                                }
                                for c in t.columns() {
                                    ui.monospace(format!("{}  {}", c.name, c.data_type));
                                }
                                for (name, p) in &t.partitions() {
                                    ui.weak(p.describe(name));
                                }
                            });
                    }
                }
                if !self.curated.is_empty() {
                    ui.separator();
                    ui.strong("Curated tables (Iceberg)");
                }
                for t in &self.curated {
                    egui::CollapsingHeader::new(&t.name)
                        .id_salt(&t.location)
                        .show(ui, |ui| {
                            ui.label(t.describe());
                            if ui.link(format!("query {}", t.name)).clicked() {
                                query = Some(t.name.clone());
                            }
                            for (name, data_type) in &t.columns {
                                ui.monospace(format!("{name}  {data_type}"));
                            }
                        });
                }
            });
        CatalogAction { crawl, open, query }
    }
}
