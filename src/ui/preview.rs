//! Parquet preview: schema with logical types, file metadata, row groups with per-column
//! statistics, and rows in a virtual table that reads only the row groups it shows (pages of
//! [`PAGE_ROWS`] rows, fetched in the background as they scroll into view). CSV and
//! JSON-lines files show their first lines.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow_cast::display::{ArrayFormatter, FormatOptions};

use super::{Backend, UiEvent};
use crate::lake::Storage;
use crate::lake::inspect::{self, ParquetFile, ParquetSummary};

pub const PAGE_ROWS: usize = 200;
/// Pages kept in memory; the farthest from the view are dropped first.
const MAX_PAGES: usize = 64;

#[derive(Default)]
pub struct PreviewScreen {
    uri: String,
    request: u64,
    file: Option<Arc<ParquetFile>>,
    summary: Option<ParquetSummary>,
    /// Pages of rows by first row, each row as display strings.
    pages: BTreeMap<usize, Vec<Vec<String>>>,
    requested: HashSet<usize>,
    text: Option<Vec<String>>,
    error: Option<String>,
    loading: bool,
    uri_input: String,
}

impl PreviewScreen {
    /// Opens `uri` (with its storage and key when the caller has them).
    pub fn open(&mut self, backend: &Backend, uri: &str, location: Option<(Storage, String)>) {
        self.request += 1;
        let request = self.request;
        *self = PreviewScreen {
            uri: uri.to_owned(),
            request,
            loading: true,
            uri_input: uri.to_owned(),
            ..Default::default()
        };
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
                Ok((Arc::new(file), summary))
            }
            .await;
            UiEvent::PreviewOpened { request, result }
        });
    }

    pub fn handle(&mut self, event: UiEvent) {
        match event {
            UiEvent::PreviewOpened { request, result } if request == self.request => {
                self.loading = false;
                match result {
                    Ok((file, summary)) => {
                        self.file = Some(file);
                        self.summary = Some(summary);
                    }
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
            _ => {}
        }
    }

    fn request_page(&mut self, backend: &Backend, start: usize) {
        let Some(file) = self.file.clone() else {
            return;
        };
        if !self.requested.insert(start) {
            return;
        }
        let request = self.request;
        backend.spawn(async move {
            let result = file
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
        let Some(summary) = &self.summary else {
            return;
        };
        ui.label(format!(
            "{} rows, {} row group(s), {}, written by {}",
            summary.num_rows,
            summary.row_groups.len(),
            super::lake::human_bytes(summary.size),
            summary.created_by.as_deref().unwrap_or("?")
        ));
        egui::CollapsingHeader::new("Schema")
            .default_open(true)
            .show(ui, |ui| schema_ui(ui, summary));
        egui::CollapsingHeader::new("Row groups and column statistics").show(ui, |ui| {
            row_groups_ui(ui, summary);
        });
        ui.separator();
        self.rows_ui(ui, backend);
    }

    /// The virtual table: only visible rows are drawn, and only their pages are read.
    fn rows_ui(&mut self, ui: &mut egui::Ui, backend: &Backend) {
        use egui_extras::{Column, TableBuilder};
        let Some(summary) = &self.summary else {
            return;
        };
        let names: Vec<String> = summary
            .schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let total = summary.num_rows.max(0) as usize;
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
                    let cells = pages.get(&start).and_then(|p| p.get(i - start));
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

fn to_strings(batches: &[arrow_array::RecordBatch]) -> Vec<Vec<String>> {
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
            super::lake::human_bytes(rg.compressed_bytes.max(0) as u64),
            super::lake::human_bytes(rg.uncompressed_bytes.max(0) as u64)
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
                ui.label(super::lake::human_bytes(c.compressed_bytes.max(0) as u64));
                ui.label(super::lake::human_bytes(c.uncompressed_bytes.max(0) as u64));
                ui.end_row();
            }
        });
    }
}
