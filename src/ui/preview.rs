//! Parquet preview: schema with logical types, file metadata, row groups with per-column
//! statistics, and rows in a virtual table that reads only the row groups it shows (pages of
//! [`PAGE_ROWS`] rows, fetched in the background as they scroll into view). A folder or
//! partition previews as one table ([`ParquetDataset`]: schemas merged by column name). A
//! filter on a column scans one row group at a time in the background and shows the first
//! [`FILTER_LIMIT`] matches as they come. CSV and JSON-lines files show their first lines.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow_cast::display::{ArrayFormatter, FormatOptions};

use super::{Backend, UiEvent};
use crate::lake::Storage;
use crate::lake::inspect::{self, ParquetDataset, ParquetFile, ParquetSummary};

pub const PAGE_ROWS: usize = 200;
/// Pages kept in memory; the farthest from the view are dropped first.
const MAX_PAGES: usize = 64;
/// Matching rows a filter collects before it stops scanning.
pub const FILTER_LIMIT: usize = 1000;

/// What was opened: one file (with its metadata), or a folder.
pub enum Opened {
    File(Arc<ParquetFile>, ParquetSummary),
    Folder(Arc<ParquetDataset>),
}

/// A filter's progress: the next row group to scan and the matches so far.
struct FilterRun {
    id: u64,
    column: String,
    needle: String,
    matches: Vec<Vec<String>>,
    /// (file, row group) scanned next; `None` when done.
    next: Option<(usize, usize)>,
    scanned_groups: usize,
    total_groups: usize,
}

#[derive(Default)]
pub struct PreviewScreen {
    uri: String,
    request: u64,
    /// The rows being shown: the file, or the folder's files.
    dataset: Option<Arc<ParquetDataset>>,
    /// The file's metadata (not for a folder).
    summary: Option<ParquetSummary>,
    /// Pages of rows by first row, each row as display strings.
    pages: BTreeMap<usize, Vec<Vec<String>>>,
    requested: HashSet<usize>,
    text: Option<Vec<String>>,
    error: Option<String>,
    loading: bool,
    uri_input: String,
    filter_column: String,
    filter_text: String,
    filter: Option<FilterRun>,
    filters_started: u64,
}

impl PreviewScreen {
    fn reset(&mut self, uri: &str) -> u64 {
        let request = self.request + 1;
        *self = PreviewScreen {
            uri: uri.to_owned(),
            request,
            loading: true,
            uri_input: uri.to_owned(),
            filters_started: self.filters_started,
            ..Default::default()
        };
        request
    }

    /// Opens `uri` (with its storage and key when the caller has them).
    pub fn open(&mut self, backend: &Backend, uri: &str, location: Option<(Storage, String)>) {
        let request = self.reset(uri);
        let uri = uri.to_owned();
        let is_text = inspect::is_text_file(&uri);
        backend.spawn(async move {
            let (storage, key) = match location {
                Some(l) => l,
                None => match Storage::from_uri(&uri, Default::default()).await {
                    Ok(l) => l,
                    Err(e) => {
                        return UiEvent::PreviewOpened {
                            request,
                            result: Err(e.to_string()),
                        };
                    }
                },
            };
            if is_text {
                let result = inspect::read_text_lines(&storage, &key, 500)
                    .await
                    .map_err(|e| e.to_string());
                return UiEvent::PreviewText { request, result };
            }
            let result = async {
                let file = ParquetFile::open(&storage, &key)
                    .await
                    .map_err(|e| e.to_string())?;
                let summary = file.summary().map_err(|e| e.to_string())?;
                Ok(Opened::File(Arc::new(file), summary))
            }
            .await;
            UiEvent::PreviewOpened { request, result }
        });
    }

    /// Opens the Parquet files below `prefix` as one table.
    pub fn open_folder(&mut self, backend: &Backend, storage: Storage, prefix: String) {
        let request = self.reset(&storage.uri(&prefix));
        backend.spawn(async move {
            let result = ParquetDataset::open(&storage, &prefix)
                .await
                .map_err(|e| e.to_string())
                .and_then(|d| {
                    if d.files().next().is_none() {
                        Err(format!("no Parquet file below {}", storage.uri(&prefix)))
                    } else {
                        Ok(Opened::Folder(Arc::new(d)))
                    }
                });
            UiEvent::PreviewOpened { request, result }
        });
    }

    pub fn handle(&mut self, backend: &Backend, event: UiEvent) {
        match event {
            UiEvent::PreviewOpened { request, result } if request == self.request => {
                self.loading = false;
                match result {
                    Ok(Opened::File(file, summary)) => {
                        self.dataset = Some(Arc::new(ParquetDataset::single(file)));
                        self.summary = Some(summary);
                    }
                    Ok(Opened::Folder(dataset)) => self.dataset = Some(dataset),
                    Err(e) => self.error = Some(e),
                }
            }
            UiEvent::PreviewRows {
                request,
                start,
                result,
            } if request == self.request => match result {
                Ok(rows) => {
                    self.pages.insert(start, rows);
                }
                Err(e) => self.error = Some(e),
            },
            UiEvent::PreviewText { request, result } if request == self.request => {
                self.loading = false;
                match result {
                    Ok(lines) => self.text = Some(lines),
                    Err(e) => self.error = Some(e),
                }
            }
            UiEvent::PreviewFiltered {
                request,
                filter,
                result,
            } if request == self.request => {
                let Some(run) = self.filter.as_mut().filter(|f| f.id == filter) else {
                    return;
                };
                match result {
                    Ok(rows) => {
                        run.matches.extend(rows);
                        run.matches.truncate(FILTER_LIMIT);
                        run.scanned_groups += 1;
                        run.next = run.next.and_then(|at| {
                            self.dataset.as_deref().and_then(|d| next_row_group(d, at))
                        });
                        if run.matches.len() >= FILTER_LIMIT {
                            run.next = None;
                        }
                        self.filter_step(backend);
                    }
                    Err(e) => {
                        run.next = None;
                        self.error = Some(e);
                    }
                }
            }
            _ => {}
        }
    }

    fn request_page(&mut self, backend: &Backend, start: usize) {
        let Some(dataset) = self.dataset.clone() else {
            return;
        };
        if !self.requested.insert(start) {
            return;
        }
        let request = self.request;
        backend.spawn(async move {
            let result = dataset
                .read_rows(start, PAGE_ROWS)
                .await
                .map_err(|e| e.to_string())
                .map(|batches| to_strings(&batches));
            UiEvent::PreviewRows {
                request,
                start,
                result,
            }
        });
    }

    /// Starts a filter over the whole table (one row group per step).
    fn start_filter(&mut self, backend: &Backend) {
        let Some(dataset) = self.dataset.as_deref() else {
            return;
        };
        self.filters_started += 1;
        let total_groups = dataset
            .files()
            .map(|(_, f)| f.metadata().num_row_groups())
            .sum();
        self.filter = Some(FilterRun {
            id: self.filters_started,
            column: self.filter_column.clone(),
            needle: self.filter_text.clone(),
            matches: Vec::new(),
            next: first_row_group(dataset),
            scanned_groups: 0,
            total_groups,
        });
        self.filter_step(backend);
    }

    /// Scans the filter's next row group in the background.
    fn filter_step(&mut self, backend: &Backend) {
        let (Some(dataset), Some(run)) = (self.dataset.clone(), self.filter.as_ref()) else {
            return;
        };
        let Some((file, group)) = run.next else {
            return;
        };
        let (request, filter) = (self.request, run.id);
        let (column, needle) = (run.column.clone(), run.needle.clone());
        backend.spawn(async move {
            let result = dataset
                .filter_row_group(file, group, &column, &needle)
                .await
                .map_err(|e| e.to_string())
                .map(|batches| to_strings(&batches));
            UiEvent::PreviewFiltered {
                request,
                filter,
                result,
            }
        });
    }

    /// Drops the pages farthest from `near` beyond [`MAX_PAGES`].
    fn evict(&mut self, near: usize) {
        while self.pages.len() > MAX_PAGES {
            let farthest = self
                .pages
                .keys()
                .copied()
                .max_by_key(|start| start.abs_diff(near));
            if let Some(start) = farthest {
                self.pages.remove(&start);
                self.requested.remove(&start);
            }
        }
    }

    pub fn preview_ui(&mut self, ui: &mut egui::Ui, backend: &Backend) {
        ui.horizontal(|ui| {
            ui.label("File");
            let response = ui.add(
                egui::TextEdit::singleline(&mut self.uri_input)
                    .hint_text("/path/to/file.parquet or s3://bucket/key")
                    .desired_width(520.0),
            );
            let enter = response.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            if ui.button("Open").clicked() || enter {
                let uri = self.uri_input.clone();
                self.open(backend, &uri, None);
            }
        });
        if self.loading {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(format!("Reading {}…", self.uri));
            });
        }
        if let Some(e) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        if let Some(lines) = &self.text {
            egui::ScrollArea::both().show(ui, |ui| {
                for l in lines {
                    ui.monospace(l);
                }
            });
            return;
        }
        let Some(dataset) = self.dataset.clone() else {
            return;
        };
        match &self.summary {
            Some(summary) => {
                ui.label(format!(
                    "{} rows, {} row group(s), {}, written by {}",
                    summary.num_rows,
                    summary.row_groups.len(),
                    crate::lake::human_bytes(summary.size),
                    summary.created_by.as_deref().unwrap_or("?")
                ));
                egui::CollapsingHeader::new("Schema")
                    .default_open(true)
                    .show(ui, |ui| schema_ui(ui, summary));
                egui::CollapsingHeader::new("Row groups and column statistics").show(ui, |ui| {
                    row_groups_ui(ui, summary);
                });
            }
            None => folder_ui(ui, &dataset),
        }
        ui.separator();
        self.filter_ui(ui, backend, &dataset);
        self.rows_ui(ui, backend, &dataset);
    }

    fn filter_ui(&mut self, ui: &mut egui::Ui, backend: &Backend, dataset: &ParquetDataset) {
        ui.horizontal(|ui| {
            let filter_label = ui.label("Filter on");
            egui::ComboBox::from_id_salt("filter-column")
                .selected_text(if self.filter_column.is_empty() {
                    "column…"
                } else {
                    self.filter_column.as_str()
                })
                .show_ui(ui, |ui| {
                    for f in dataset.schema().fields() {
                        ui.selectable_value(&mut self.filter_column, f.name().clone(), f.name());
                    }
                })
                .response
                .labelled_by(filter_label.id);
            let contains = ui.label("contains");
            let response = ui
                .add(
                    egui::TextEdit::singleline(&mut self.filter_text)
                        .hint_text("text")
                        .desired_width(200.0),
                )
                .labelled_by(contains.id);
            let enter = response.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            let ready = !self.filter_column.is_empty();
            if (ui.add_enabled(ready, egui::Button::new("Apply")).clicked() || enter) && ready {
                self.start_filter(backend);
            }
            if self.filter.is_some() && ui.button("Clear filter").clicked() {
                self.filter = None;
            }
            if let Some(run) = &self.filter {
                if run.next.is_some() {
                    ui.add(
                        egui::ProgressBar::new(
                            run.scanned_groups as f32 / run.total_groups.max(1) as f32,
                        )
                        .desired_width(120.0)
                        .text(format!(
                            "{}/{} row groups",
                            run.scanned_groups, run.total_groups
                        )),
                    );
                }
                ui.label(format!(
                    "{}{} matching row(s) where {} contains \"{}\"",
                    run.matches.len(),
                    if run.matches.len() >= FILTER_LIMIT {
                        " (first)"
                    } else {
                        ""
                    },
                    run.column,
                    run.needle
                ));
            }
        });
    }

    /// The virtual table: only visible rows are drawn, and only their pages are read.
    fn rows_ui(&mut self, ui: &mut egui::Ui, backend: &Backend, dataset: &ParquetDataset) {
        use egui_extras::{Column, TableBuilder};
        let names: Vec<String> = dataset
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let filtered = self.filter.as_ref().map(|f| &f.matches);
        let total = filtered.map_or(dataset.num_rows(), Vec::len);
        let mut wanted = Vec::new();
        let pages = &self.pages;
        TableBuilder::new(ui)
            .striped(true)
            .column(Column::initial(60.0))
            .columns(
                Column::initial(140.0).resizable(true).clip(true),
                names.len(),
            )
            .header(20.0, |mut header| {
                header.col(|ui| {
                    ui.strong("#");
                });
                for n in &names {
                    header.col(|ui| {
                        ui.strong(n);
                    });
                }
            })
            .body(|body| {
                body.rows(20.0, total, |mut row| {
                    let i = row.index();
                    let start = i / PAGE_ROWS * PAGE_ROWS;
                    let cells = match filtered {
                        Some(matches) => matches.get(i),
                        None => pages.get(&start).and_then(|p| p.get(i - start)),
                    };
                    row.col(|ui| {
                        ui.weak(i.to_string());
                    });
                    match cells {
                        Some(cells) => {
                            for c in cells {
                                row.col(|ui| {
                                    ui.label(c);
                                });
                            }
                        }
                        None => {
                            wanted.push(start);
                            row.col(|ui| {
                                ui.spinner();
                            });
                        }
                    }
                });
            });
        wanted.dedup();
        if let Some(first) = wanted.first().copied() {
            self.evict(first);
        }
        for start in wanted {
            self.request_page(backend, start);
        }
    }
}

/// The first row group of the dataset, if any.
fn first_row_group(dataset: &ParquetDataset) -> Option<(usize, usize)> {
    dataset
        .files()
        .position(|(_, f)| f.metadata().num_row_groups() > 0)
        .map(|file| (file, 0))
}

/// The row group after `(file, group)`, across files.
fn next_row_group(
    dataset: &ParquetDataset,
    (file, group): (usize, usize),
) -> Option<(usize, usize)> {
    let counts: Vec<usize> = dataset
        .files()
        .map(|(_, f)| f.metadata().num_row_groups())
        .collect();
    if counts
        .get(file)
        .is_some_and(|&n| group.saturating_add(1) < n)
    {
        return Some((file, group + 1));
    }
    (file + 1..counts.len())
        .find(|&f| counts[f] > 0)
        .map(|f| (f, 0))
}

fn folder_ui(ui: &mut egui::Ui, dataset: &ParquetDataset) {
    let files: Vec<_> = dataset.files().collect();
    let bytes: u64 = files.iter().map(|(_, f)| f.size()).sum();
    ui.label(format!(
        "{} rows in {} file(s), {}, as one table{}",
        dataset.num_rows(),
        files.len(),
        crate::lake::human_bytes(bytes),
        if dataset.skipped_files > 0 {
            format!(
                " (the first {}; {} more not shown)",
                files.len(),
                dataset.skipped_files
            )
        } else {
            String::new()
        }
    ));
    egui::CollapsingHeader::new("Merged schema")
        .default_open(true)
        .show(ui, |ui| {
            egui::Grid::new("merged-schema")
                .striped(true)
                .show(ui, |ui| {
                    ui.strong("column");
                    ui.strong("Arrow type");
                    ui.strong("in files");
                    ui.end_row();
                    for f in dataset.schema().fields() {
                        let present = files
                            .iter()
                            .filter(|(_, file)| file.schema().field_with_name(f.name()).is_ok())
                            .count();
                        ui.label(f.name());
                        ui.monospace(f.data_type().to_string());
                        ui.label(format!("{present} of {}", files.len()));
                        ui.end_row();
                    }
                });
        });
    egui::CollapsingHeader::new("Files").show(ui, |ui| {
        egui::Grid::new("folder-files")
            .striped(true)
            .show(ui, |ui| {
                for (key, f) in &files {
                    ui.label(*key);
                    ui.label(format!("{} rows", f.num_rows()));
                    ui.label(crate::lake::human_bytes(f.size()));
                    ui.end_row();
                }
            });
    });
}

pub(super) fn to_strings(batches: &[arrow_array::RecordBatch]) -> Vec<Vec<String>> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let batch = inspect::displayable_batch(batch);
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .filter_map(|c| ArrayFormatter::try_new(c.as_ref(), &options).ok())
            .collect();
        for i in 0..batch.num_rows() {
            rows.push(formatters.iter().map(|f| f.value(i).to_string()).collect());
        }
    }
    rows
}

fn schema_ui(ui: &mut egui::Ui, summary: &ParquetSummary) {
    egui::Grid::new("schema").striped(true).show(ui, |ui| {
        ui.strong("column");
        ui.strong("Arrow type");
        ui.strong("Parquet type");
        ui.strong("nullable");
        ui.end_row();
        for (f, (_, parquet)) in summary.schema.fields().iter().zip(
            summary
                .parquet_columns
                .iter()
                .chain(std::iter::repeat(&(String::new(), String::new()))),
        ) {
            ui.label(f.name());
            ui.monospace(f.data_type().to_string());
            ui.monospace(parquet);
            ui.label(if f.is_nullable() { "yes" } else { "no" });
            ui.end_row();
        }
    });
}

fn row_groups_ui(ui: &mut egui::Ui, summary: &ParquetSummary) {
    for (i, rg) in summary.row_groups.iter().enumerate() {
        ui.label(format!(
            "row group {i}: {} rows, {} compressed, {} uncompressed",
            rg.rows,
            crate::lake::human_bytes(rg.compressed_bytes.max(0) as u64),
            crate::lake::human_bytes(rg.uncompressed_bytes.max(0) as u64)
        ));
        egui::Grid::new(("rg", i)).striped(true).show(ui, |ui| {
            for h in [
                "column",
                "min",
                "max",
                "nulls",
                "encodings",
                "codec",
                "compressed",
                "uncompressed",
            ] {
                ui.strong(h);
            }
            ui.end_row();
            for c in &rg.columns {
                ui.label(&c.name);
                ui.label(c.min.as_deref().unwrap_or("-"));
                ui.label(c.max.as_deref().unwrap_or("-"));
                ui.label(c.nulls.map_or("-".into(), |n| n.to_string()));
                ui.label(&c.encodings);
                ui.label(&c.compression);
                ui.label(crate::lake::human_bytes(c.compressed_bytes.max(0) as u64));
                ui.label(crate::lake::human_bytes(c.uncompressed_bytes.max(0) as u64));
                ui.end_row();
            }
        });
    }
}
