//! The query tab, the workspace's Athena: SQL over the lake's curated, raw and model tables
//! (the same session as `tributary query`), results in a virtual table, export to CSV or
//! Parquet; and the curated zone's two actions, *Curate* and *Run models*, with what they
//! did.
//!
//! Queries, exports, curation and models run on the background runtime; a result for a
//! query that is no longer the latest is dropped. A result keeps its first
//! [`KEPT_ROWS`] rows for display and counts the rest; *Export* runs the query again and
//! streams every row to the file.

use std::path::PathBuf;
use std::time::Instant;

use futures::StreamExt;

use super::{Backend, UiEvent, WorkspaceDoc};
use crate::config::Workspace;
use crate::curate::Status;

/// Rows of a result held for display.
pub const KEPT_ROWS: usize = 10_000;

pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Every row of the result, shown or not.
    pub total: usize,
    pub seconds: f64,
}

/// What the curated zone's actions report: their lines, and whether they failed.
pub struct Activity {
    pub title: String,
    /// Each table's, model's and check's line, with how it went.
    pub lines: Vec<(Status, String)>,
    pub failed: bool,
}

#[derive(Default)]
pub struct QueryScreen {
    pub sql: String,
    request: u64,
    running: bool,
    result: Option<Result<QueryResult, String>>,
    tables: Vec<String>,
    tables_error: Option<String>,
    tables_request: u64,
    busy: bool,
    activity: Option<Activity>,
    export: Option<Result<String, String>>,
}

impl QueryScreen {
    /// Runs `sql` now (a table chosen elsewhere, e.g. in the lake browser).
    pub fn run_sql(&mut self, backend: &Backend, doc: &WorkspaceDoc, sql: String) {
        self.sql = sql;
        self.run(backend, doc);
    }

    fn run(&mut self, backend: &Backend, doc: &WorkspaceDoc) {
        let Some(path) = doc.path.clone() else {
            self.result = Some(Err("save the workspace first: queries read its lake".into()));
            return;
        };
        self.request += 1;
        self.running = true;
        self.export = None;
        let (request, workspace, sql) = (self.request, doc.workspace.clone(), self.sql.clone());
        backend.spawn(async move {
            UiEvent::QueryDone {
                request,
                result: run_query(&workspace, &path, &sql).await,
            }
        });
    }

    /// Lists the tables a query can name.
    pub fn refresh_tables(&mut self, backend: &Backend, doc: &WorkspaceDoc) {
        let Some(path) = doc.path.clone() else {
            return;
        };
        self.tables_request += 1;
        let (request, workspace) = (self.tables_request, doc.workspace.clone());
        backend.spawn(async move {
            let sql = "SELECT table_catalog, table_schema, table_name \
                       FROM information_schema.tables \
                       WHERE table_schema <> 'information_schema' ORDER BY 1, 2, 3";
            // Names as SQL takes them: a part holding a `.` in double quotes.
            let result = run_query(&workspace, &path, sql).await.map(|r| {
                r.rows
                    .iter()
                    .map(|row| {
                        let parts: Vec<&str> = row.iter().map(String::as_str).collect();
                        crate::ident::display_name(&parts)
                    })
                    .collect()
            });
            UiEvent::LakeTables { request, result }
        });
    }

    pub fn handle(&mut self, backend: &Backend, doc: &WorkspaceDoc, event: UiEvent) {
        match event {
            UiEvent::QueryDone { request, result } if request == self.request => {
                self.running = false;
                self.result = Some(result);
            }
            UiEvent::LakeTables { request, result } if request == self.tables_request => {
                match result {
                    Ok(tables) => {
                        self.tables = tables;
                        self.tables_error = None;
                    }
                    Err(e) => self.tables_error = Some(e),
                }
            }
            UiEvent::ZoneActivity(activity) => {
                self.busy = false;
                self.activity = Some(activity);
                // New or changed tables: list them again.
                self.refresh_tables(backend, doc);
            }
            UiEvent::Exported(result) => self.export = Some(result),
            _ => {}
        }
    }

    pub fn query_ui(&mut self, ui: &mut egui::Ui, doc: &WorkspaceDoc, backend: &Backend) {
        egui::Panel::left("lake-tables")
            .resizable(true)
            .default_size(260.0)
            .show(ui, |ui| self.tables_ui(ui, doc, backend));
        ui.horizontal(|ui| {
            ui.heading("Query");
            let run = ui
                .add_enabled(!self.running, egui::Button::new("Run"))
                .on_hover_text("Ctrl+Enter");
            let shortcut = ui.input(|i| i.modifiers.command && i.key_pressed(egui::Key::Enter));
            if run.clicked() || (shortcut && !self.running) {
                self.run(backend, doc);
            }
            if self.running {
                ui.spinner();
            }
            let can_export = !self.running && matches!(self.result, Some(Ok(_)));
            for (label, extension) in [("Export CSV…", "csv"), ("Export Parquet…", "parquet")] {
                if ui
                    .add_enabled(can_export, egui::Button::new(label))
                    .clicked()
                {
                    self.export(backend, doc, extension);
                }
            }
        });
        ui.add(
            egui::TextEdit::multiline(&mut self.sql)
                .code_editor()
                .desired_rows(5)
                .desired_width(f32::INFINITY)
                .hint_text("SELECT * FROM shop.public.customers LIMIT 100"),
        );
        match &self.export {
            Some(Ok(m)) => {
                ui.label(m);
            }
            Some(Err(e)) => {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
            None => {}
        }
        match &self.result {
            None => {
                ui.weak("Curated tables are source.schema.table, raw ones source_raw.schema.table, models schema.name.");
            }
            Some(Err(e)) => {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
            Some(Ok(result)) => {
                ui.weak(if result.total > result.rows.len() {
                    format!(
                        "{} rows in {:.2}s, the first {} shown (Export writes them all)",
                        result.total,
                        result.seconds,
                        result.rows.len()
                    )
                } else {
                    format!("{} rows in {:.2}s", result.total, result.seconds)
                });
                rows_ui(ui, result);
            }
        }
    }

    fn tables_ui(&mut self, ui: &mut egui::Ui, doc: &WorkspaceDoc, backend: &Backend) {
        ui.horizontal(|ui| {
            if ui
                .add_enabled(!self.busy, egui::Button::new("Curate"))
                .on_hover_text("Merge the raw zone's new changes into the curated Iceberg tables")
                .clicked()
            {
                self.zone_action(backend, doc, false);
            }
            if ui
                .add_enabled(!self.busy, egui::Button::new("Run models"))
                .on_hover_text("Run the workspace's SQL models and their quality checks")
                .clicked()
            {
                self.zone_action(backend, doc, true);
            }
            if self.busy {
                ui.spinner();
            }
        });
        if let Some(a) = &self.activity {
            let color = if a.failed {
                ui.visuals().error_fg_color
            } else {
                ui.visuals().text_color()
            };
            ui.colored_label(color, &a.title);
            for (status, line) in &a.lines {
                let line = line.trim();
                match status {
                    Status::Failed => ui.colored_label(ui.visuals().error_fg_color, line),
                    Status::Warn => ui.colored_label(ui.visuals().warn_fg_color, line),
                    Status::Ok => ui.label(line),
                };
            }
        }
        ui.separator();
        ui.horizontal(|ui| {
            ui.strong("Tables");
            if ui.small_button("Refresh").clicked() {
                self.refresh_tables(backend, doc);
            }
        });
        if let Some(e) = &self.tables_error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        let mut chosen = None;
        egui::ScrollArea::vertical()
            .id_salt("lake-table-list")
            .show(ui, |ui| {
                for t in &self.tables {
                    if ui.link(t).clicked() {
                        chosen = Some(t.clone());
                    }
                }
            });
        if let Some(t) = chosen {
            self.run_sql(backend, doc, select_all(&t));
        }
    }

    fn zone_action(&mut self, backend: &Backend, doc: &WorkspaceDoc, models: bool) {
        let Some(path) = doc.path.clone() else {
            return;
        };
        self.busy = true;
        let workspace = doc.workspace.clone();
        backend.spawn(async move {
            let mut lines = Vec::new();
            let result = if models {
                crate::curate::models::run_models(&workspace, &path, None, |m| {
                    lines.extend(m.lines())
                })
                .await
                .map(|outcomes| {
                    let failed = outcomes.iter().filter(|m| m.failed).count();
                    (
                        format!("ran {} model(s), {failed} failed", outcomes.len()),
                        failed > 0,
                    )
                })
            } else {
                crate::curate::curate(&workspace, &path, &Default::default(), |t| {
                    lines.push((t.status(), t.describe()))
                })
                .await
                .map(|outcomes| {
                    let failed = outcomes
                        .iter()
                        .filter(|t| matches!(t.action, crate::curate::Action::Failed(_)))
                        .count();
                    (
                        format!("curated {} table(s), {failed} failed", outcomes.len()),
                        failed > 0,
                    )
                })
            };
            UiEvent::ZoneActivity(match result {
                Ok((title, failed)) => Activity {
                    title,
                    lines,
                    failed,
                },
                Err(e) => Activity {
                    title: format!("error: {e}"),
                    lines,
                    failed: true,
                },
            })
        });
    }

    fn export(&mut self, backend: &Backend, doc: &WorkspaceDoc, extension: &'static str) {
        let Some(path) = doc.path.clone() else {
            return;
        };
        let (workspace, sql, tx_backend) =
            (doc.workspace.clone(), self.sql.clone(), backend.clone());
        backend.runtime().spawn(async move {
            let Some(file) = rfd::AsyncFileDialog::new()
                .set_file_name(format!("result.{extension}"))
                .save_file()
                .await
            else {
                return;
            };
            let target = file.path().to_owned();
            tx_backend.spawn(async move {
                UiEvent::Exported(export_query(&workspace, &path, &sql, target).await)
            });
        });
    }
}

/// `SELECT * FROM` table `name` (`a.b.c`, a part holding a `.` in double quotes), each part
/// quoted: DataFusion folds unquoted names to lower case, and source tables may have
/// upper-case letters.
pub fn select_all(name: &str) -> String {
    let parts = crate::ident::split_parts(name)
        .unwrap_or_else(|_| name.split('.').map(str::to_owned).collect());
    let reference: Vec<String> = parts.iter().map(|p| crate::sql::ident(p)).collect();
    format!("SELECT * FROM {} LIMIT 1000", reference.join("."))
}

/// Runs `sql` over the workspace's lake, keeping the first [`KEPT_ROWS`] rows as text.
pub async fn run_query(
    workspace: &Workspace,
    path: &std::path::Path,
    sql: &str,
) -> Result<QueryResult, String> {
    let started = Instant::now();
    let ctx = crate::query::lake_session(workspace, path)
        .await
        .map_err(|e| e.to_string())?;
    let frame = ctx.sql(sql).await.map_err(|e| e.to_string())?;
    let columns = frame
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut stream = frame.execute_stream().await.map_err(|e| e.to_string())?;
    let (mut rows, mut total) = (Vec::new(), 0);
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| e.to_string())?;
        total += batch.num_rows();
        if rows.len() < KEPT_ROWS {
            let take = batch.num_rows().min(KEPT_ROWS - rows.len());
            rows.extend(super::preview::to_strings(&[batch.slice(0, take)]));
        }
    }
    Ok(QueryResult {
        columns,
        rows,
        total,
        seconds: started.elapsed().as_secs_f64(),
    })
}

async fn export_query(
    workspace: &Workspace,
    path: &std::path::Path,
    sql: &str,
    target: PathBuf,
) -> Result<String, String> {
    let ctx = crate::query::lake_session(workspace, path)
        .await
        .map_err(|e| e.to_string())?;
    let frame = ctx.sql(sql).await.map_err(|e| e.to_string())?;
    let rows = crate::query::export(frame, &target)
        .await
        .map_err(|e| e.to_string())?;
    Ok(format!("wrote {rows} row(s) to {}", target.display()))
}

fn rows_ui(ui: &mut egui::Ui, result: &QueryResult) {
    use egui_extras::{Column, TableBuilder};
    TableBuilder::new(ui)
        .striped(true)
        .column(Column::initial(50.0))
        .columns(
            Column::initial(140.0).resizable(true).clip(true),
            result.columns.len(),
        )
        .header(20.0, |mut header| {
            header.col(|ui| {
                ui.strong("#");
            });
            for c in &result.columns {
                header.col(|ui| {
                    ui.strong(c);
                });
            }
        })
        .body(|body| {
            // Only the rows in view are laid out.
            body.rows(20.0, result.rows.len(), |mut row| {
                let i = row.index();
                row.col(|ui| {
                    ui.weak(i.to_string());
                });
                for cell in &result.rows[i] {
                    row.col(|ui| {
                        ui.label(cell);
                    });
                }
            });
        });
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_table_with_dots_in_its_names_is_selected_whole() {
        assert_eq!(
            super::select_all("shop.\"a.b\".Orders"),
            "SELECT * FROM \"shop\".\"a.b\".\"Orders\" LIMIT 1000"
        );
    }
}
