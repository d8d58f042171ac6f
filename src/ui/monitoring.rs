//! Monitoring screen: per running task, DMS-like table statistics with progress bars,
//! throughput and latency / slot lag over time, and the task's log with errors highlighted.
//!
//! [`Runs`] owns the running tasks: their engine handles, and everything their events said.
//! It is drained once per frame ([`Runs::poll`]); nothing here waits.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use egui_plot::{Legend, Line, Plot, PlotPoints};

use super::Backend;
use crate::config::Workspace;
use crate::task::{
    CdcStats, LogLevel, RunOptions, TableState, TableStats, TaskCommand, TaskEvent, TaskHandle,
};

/// The longest history a plot keeps (points).
const HISTORY: usize = 3600;

pub struct Run {
    handle: Option<TaskHandle>,
    started: Instant,
    pub tables: BTreeMap<String, TableStats>,
    pub log: Vec<(LogLevel, String)>,
    pub cdc: Option<CdcStats>,
    /// (seconds since start, rows or changes per second).
    throughput: Vec<[f64; 2]>,
    /// (seconds since start, latency in ms).
    latency: Vec<[f64; 2]>,
    /// (seconds since start, slot lag in MB).
    lag: Vec<[f64; 2]>,
    /// (seconds since start, rows counted then), for the next throughput point.
    last_sample: Option<(f64, u64)>,
    /// How it ended: `Ok(summary)` or the error.
    pub outcome: Option<Result<String, String>>,
    outcome_rx: Option<tokio::sync::oneshot::Receiver<Result<String, String>>>,
}

impl Run {
    fn new(handle: Option<TaskHandle>) -> Run {
        Run {
            handle,
            started: Instant::now(),
            tables: BTreeMap::new(),
            log: Vec::new(),
            cdc: None,
            throughput: Vec::new(),
            latency: Vec::new(),
            lag: Vec::new(),
            last_sample: None,
            outcome: None,
            outcome_rx: None,
        }
    }

    pub fn is_running(&self) -> bool {
        self.outcome.is_none()
    }

    fn rows(&self) -> u64 {
        self.tables
            .values()
            .map(|t| t.full_load_rows + t.inserts + t.updates + t.deletes)
            .sum()
    }

    /// Applies one event that arrived `at` seconds after the start.
    fn apply(&mut self, event: TaskEvent, at: f64) {
        match event {
            TaskEvent::Planned { tables } => {
                for t in tables {
                    self.tables.insert(t.qualified_name(), t);
                }
            }
            TaskEvent::Table(t) => {
                self.tables.insert(t.qualified_name(), t);
            }
            TaskEvent::Log { level, message } => self.log.push((level, message)),
            TaskEvent::Cdc(stats) => {
                push(&mut self.latency, [at, stats.latency_ms as f64]);
                push(
                    &mut self.lag,
                    [at, stats.slot_lag_bytes as f64 / 1_048_576.0],
                );
                self.cdc = Some(stats);
            }
        }
    }

    /// At most one throughput point per second, from the rows counted by `now` (seconds
    /// since the start).
    fn sample(&mut self, now: f64) {
        let rows = self.rows();
        match self.last_sample {
            Some((at, before)) if now - at >= 1.0 => {
                let rate = rows.saturating_sub(before) as f64 / (now - at);
                push(&mut self.throughput, [now, rate]);
                self.last_sample = Some((now, rows));
            }
            None => self.last_sample = Some((now, rows)),
            _ => {}
        }
    }
}

fn push(series: &mut Vec<[f64; 2]>, point: [f64; 2]) {
    if series.len() >= HISTORY {
        series.remove(0);
    }
    series.push(point);
}

/// The tasks started from this app, running or finished.
#[derive(Default)]
pub struct Runs {
    pub runs: BTreeMap<String, Run>,
    /// The task whose details are shown.
    pub selected: Option<String>,
}

impl Runs {
    pub fn any_running(&self) -> bool {
        self.runs.values().any(Run::is_running)
    }

    pub fn is_running(&self, task: &str) -> bool {
        self.runs.get(task).is_some_and(Run::is_running)
    }

    /// Starts `task` on the background runtime through the engine's API.
    pub fn start(
        &mut self,
        backend: &Backend,
        workspace: &Workspace,
        path: PathBuf,
        task: &str,
        options: RunOptions,
    ) {
        // Relative target folders are relative to the workspace file, as in the CLI.
        let mut workspace = workspace.clone();
        workspace.resolve_relative_paths(&path);
        let mut handle =
            crate::task::start_task(backend.runtime(), Arc::new(workspace), path, task, options);
        // The summary arrives through a oneshot, so the UI never awaits the task.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let join = handle.take_join();
        let ctx = backend.ctx().clone();
        backend.runtime().spawn(async move {
            let result = match join {
                Some(join) => join.await,
                None => Err("the task was already awaited".into()),
            };
            let _ = tx.send(result);
            ctx.request_repaint();
        });
        let mut run = Run::new(Some(handle));
        run.outcome_rx = Some(rx);
        self.runs.insert(task.to_owned(), run);
        self.selected = Some(task.to_owned());
    }

    /// Shows a run rebuilt from recorded events, each with its time in seconds since the
    /// start, and how it ended (`None`: shown as running). For fixtures: the app's tests and
    /// screenshots, which must look the same on every run.
    #[doc(hidden)]
    pub fn replay(
        &mut self,
        task: &str,
        events: Vec<(f64, TaskEvent)>,
        outcome: Option<Result<String, String>>,
    ) {
        let mut run = Run::new(None);
        for (at, event) in events {
            run.apply(event, at);
            run.sample(at);
        }
        run.outcome = outcome;
        self.runs.insert(task.to_owned(), run);
        self.selected = Some(task.to_owned());
    }

    pub fn stop(&mut self, task: &str) {
        if let Some(h) = self.runs.get(task).and_then(|r| r.handle.as_ref()) {
            h.send(TaskCommand::Stop);
        }
    }

    /// Applies every pending event of every run.
    pub fn poll(&mut self) {
        for run in self.runs.values_mut() {
            if let Some(handle) = &mut run.handle {
                let mut events = Vec::new();
                while let Ok(event) = handle.events.try_recv() {
                    events.push(event);
                }
                let at = run.started.elapsed().as_secs_f64();
                for e in events {
                    run.apply(e, at);
                }
            }
            if let Some(rx) = &mut run.outcome_rx
                && let Ok(outcome) = rx.try_recv()
            {
                run.outcome = Some(outcome);
                run.outcome_rx = None;
            }
            if run.is_running() && run.handle.is_some() {
                run.sample(run.started.elapsed().as_secs_f64());
            }
        }
    }
}

#[derive(Default)]
pub struct MonitoringScreen;

impl MonitoringScreen {
    pub fn monitoring_ui(&mut self, ui: &mut egui::Ui, runs: &mut Runs) {
        if runs.runs.is_empty() {
            ui.label("No task has run yet: start one on the Tasks tab.");
            return;
        }
        ui.horizontal(|ui| {
            for (name, run) in &runs.runs {
                let state = match &run.outcome {
                    None => "running",
                    Some(Ok(_)) => "done",
                    Some(Err(_)) => "failed",
                };
                let label = format!("{name} ({state})");
                if ui
                    .selectable_label(runs.selected.as_deref() == Some(name.as_str()), label)
                    .clicked()
                {
                    runs.selected = Some(name.clone());
                }
            }
        });
        let Some(name) = runs.selected.clone() else {
            return;
        };
        let running = runs.is_running(&name);
        if running && ui.button("Stop").clicked() {
            runs.stop(&name);
        }
        let Some(run) = runs.runs.get(&name) else {
            return;
        };
        match &run.outcome {
            Some(Ok(_)) => {
                ui.colored_label(egui::Color32::from_rgb(60, 170, 90), "Task completed");
            }
            Some(Err(e)) => {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
            None => {}
        }
        if let Some(cdc) = &run.cdc {
            ui.label(format!(
                "CDC: confirmed {}   batches {}   latency {} ms   {:.0} changes/s   slot lag {:.1} MB",
                cdc.confirmed_position,
                cdc.batches,
                cdc.latency_ms,
                cdc.changes_per_second,
                cdc.slot_lag_bytes as f64 / 1_048_576.0
            ));
        }
        table_stats_ui(ui, run);
        ui.separator();
        // One plot per unit: slot lag in MB beside latency in ms would be a flat line.
        ui.columns(3, |columns| {
            plot_ui(
                &mut columns[0],
                "throughput",
                "rows/s",
                &[("rows or changes per second", &run.throughput)],
            );
            plot_ui(
                &mut columns[1],
                "latency",
                "ms",
                &[("latency, commit to file (ms)", &run.latency)],
            );
            plot_ui(
                &mut columns[2],
                "slot lag",
                "MB",
                &[("slot lag (MB)", &run.lag)],
            );
        });
        ui.separator();
        log_ui(ui, run);
    }
}

/// The DMS-like table statistics grid.
fn table_stats_ui(ui: &mut egui::Ui, run: &Run) {
    use egui_extras::{Column, TableBuilder};
    ui.push_id("table-stats", |ui| {
        TableBuilder::new(ui)
            .striped(true)
            .column(Column::initial(220.0).resizable(true))
            .column(Column::initial(120.0))
            .column(Column::initial(220.0))
            .columns(Column::initial(80.0), 4)
            .column(Column::remainder())
            .max_scroll_height(260.0)
            .header(20.0, |mut header| {
                for h in [
                    "table",
                    "state",
                    "full-load rows",
                    "inserts",
                    "updates",
                    "deletes",
                    "DDLs",
                    "last error",
                ] {
                    header.col(|ui| {
                        ui.strong(h);
                    });
                }
            })
            .body(|body| {
                let tables: Vec<&TableStats> = run.tables.values().collect();
                body.rows(22.0, tables.len(), |mut row| {
                    let t = tables[row.index()];
                    row.col(|ui| {
                        ui.label(t.qualified_name());
                    });
                    row.col(|ui| {
                        let text = t.state.to_string();
                        if t.state == TableState::TableError {
                            ui.colored_label(ui.visuals().error_fg_color, text);
                        } else {
                            ui.label(text);
                        }
                    });
                    row.col(|ui| {
                        let total = t.estimated_rows.max(t.full_load_rows).max(1);
                        let done = t.state == TableState::TableCompleted;
                        let fraction = if done {
                            1.0
                        } else {
                            t.full_load_rows as f32 / total as f32
                        };
                        ui.add(
                            egui::ProgressBar::new(fraction)
                                .text(t.full_load_rows.to_string())
                                .desired_width(200.0),
                        );
                    });
                    for n in [t.inserts, t.updates, t.deletes, t.ddls] {
                        row.col(|ui| {
                            ui.label(n.to_string());
                        });
                    }
                    row.col(|ui| {
                        if let Some(e) = &t.last_error {
                            ui.colored_label(ui.visuals().error_fg_color, e);
                        }
                    });
                });
            });
    });
}

fn plot_ui(ui: &mut egui::Ui, id: &str, y_label: &str, series: &[(&str, &Vec<[f64; 2]>)]) {
    Plot::new(id)
        .height(180.0)
        .legend(Legend::default())
        .x_axis_label("seconds")
        .y_axis_label(y_label)
        .show(ui, |plot| {
            for (name, points) in series {
                plot.line(Line::new(*name, PlotPoints::from(points.to_vec())));
            }
        });
}

fn log_ui(ui: &mut egui::Ui, run: &Run) {
    ui.strong("Log");
    egui::ScrollArea::vertical()
        .id_salt("task-log")
        .stick_to_bottom(true)
        .max_height(200.0)
        .show(ui, |ui| {
            for (level, message) in &run.log {
                match level {
                    LogLevel::Error => ui.colored_label(ui.visuals().error_fg_color, message),
                    LogLevel::Warn => ui.colored_label(ui.visuals().warn_fg_color, message),
                    LogLevel::Info => ui.label(message),
                };
            }
            if let Some(Err(e)) = &run.outcome {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
        });
}
