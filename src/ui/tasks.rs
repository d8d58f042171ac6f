//! Tasks screen: create and edit tasks (source, target, migration type, selection rules with
//! the live list of source tables they match, target settings with DMS's defaults shown), and
//! start, stop, resume or reload them, and validate them against their source (with the
//! per-table results as they come).

use std::collections::HashMap;

use super::monitoring::Runs;
use super::{Backend, UiEvent, WorkspaceDoc};
use crate::config::{
    CdcSettings, Compression, DataFormat, DatePartitionSequence, DatePartitionStyle, MigrationType,
    SchemaChangePolicy, TargetSettings, TaskConfig,
};
use crate::ident::TableId;
use crate::source::SelectionRules;
use crate::task::RunOptions;
use crate::validate::{TableReport, ValidateEvent, ValidateOptions, ValidateReport};

#[derive(Default)]
pub struct TasksScreen {
    selected: Option<usize>,
    /// Every table of each source, fetched once per source; `None` while fetching. Rules
    /// are matched against it as they are typed.
    source_tables: HashMap<String, Option<Result<Vec<TableId>, String>>>,
    include_text: String,
    exclude_text: String,
    /// A table whose Reload button was clicked: the run controls start it.
    reload_table: Option<TableId>,
    /// The last validation of each task.
    validations: HashMap<String, Validation>,
    next_request: u64,
}

/// What a validation running in the background says.
#[derive(Debug, Clone)]
pub enum ValidationUpdate {
    Event(ValidateEvent),
    Done(Result<ValidateReport, String>),
}

/// A task's validation, as far as its events have come.
#[derive(Default)]
struct Validation {
    request: u64,
    /// What it is doing, while it runs.
    status: Option<String>,
    tables: Vec<TableReport>,
    /// The summary, or the error.
    outcome: Option<Result<String, String>>,
}

impl TasksScreen {
    pub fn source_tables(&mut self, source: String, tables: Result<Vec<TableId>, String>) {
        self.source_tables.insert(source, Some(tables));
    }

    /// Applies a validation's update, unless a newer validation of the task started since.
    pub fn validation(&mut self, task: String, request: u64, update: ValidationUpdate) {
        let Some(v) = self
            .validations
            .get_mut(&task)
            .filter(|v| v.request == request)
        else {
            return;
        };
        match update {
            ValidationUpdate::Event(ValidateEvent::Snapshot { position, tables }) => {
                v.status = Some(format!(
                    "source snapshot at {position}: comparing {tables} table(s)"
                ));
            }
            ValidationUpdate::Event(ValidateEvent::Waiting { confirmed }) => {
                v.status = Some(format!(
                    "waiting for the task to reach the snapshot (its stream stands at {confirmed}); run the task if it is stopped"
                ));
            }
            ValidationUpdate::Event(ValidateEvent::Table(report)) => v.tables.push(report),
            ValidationUpdate::Event(ValidateEvent::Repairing(tables)) => {
                v.status = Some(format!(
                    "repairing: reloading {}",
                    crate::ident::list(&tables)
                ));
            }
            ValidationUpdate::Done(result) => {
                v.status = None;
                v.outcome = Some(result.map(|report| {
                    let differing = report.tables.iter().filter(|t| !t.equal()).count();
                    let repaired = match &report.repaired {
                        Some((tables, _)) => format!(
                            "; {} asked to reload (validate again to confirm)",
                            crate::ident::list(tables)
                        ),
                        None => String::new(),
                    };
                    format!(
                        "validated at {} in {:.1}s: {} equal, {differing} not{repaired}",
                        report.position,
                        report.seconds,
                        report.tables.len() - differing
                    )
                }));
            }
        }
    }

    /// Validates `task` in the background ([`crate::validate`]).
    fn start_validation(
        &mut self,
        backend: &Backend,
        doc: &WorkspaceDoc,
        path: std::path::PathBuf,
        task: &str,
        repair: bool,
    ) {
        self.next_request += 1;
        let request = self.next_request;
        self.validations.insert(
            task.to_owned(),
            Validation {
                request,
                status: Some("opening a snapshot of the source".into()),
                ..Validation::default()
            },
        );
        let workspace = doc.workspace.clone();
        let options = ValidateOptions {
            task: task.to_owned(),
            tables: Vec::new(),
            repair,
            wait: std::time::Duration::from_secs(300),
        };
        let emitter = backend.clone();
        backend.runtime().spawn(async move {
            let emit = |update| {
                emitter.emit(UiEvent::Validation {
                    task: options.task.clone(),
                    request,
                    update,
                })
            };
            let result = crate::validate::validate(&workspace, &path, &options, |event| {
                emit(ValidationUpdate::Event(event))
            })
            .await
            .map_err(|e| e.to_string());
            emit(ValidationUpdate::Done(result));
        });
    }

    /// The task's last validation: per table, the verdict and each side's counts, and
    /// what differs below.
    fn validation_ui(&self, ui: &mut egui::Ui, task: &str) {
        let Some(v) = self.validations.get(task) else {
            return;
        };
        ui.separator();
        ui.strong("Validation");
        if let Some(status) = &v.status {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(status);
            });
        }
        match &v.outcome {
            Some(Ok(summary)) if v.tables.iter().all(TableReport::equal) => {
                ui.colored_label(egui::Color32::from_rgb(60, 170, 90), summary);
            }
            Some(Ok(summary)) => {
                ui.colored_label(ui.visuals().error_fg_color, summary);
            }
            Some(Err(e)) => {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
            None => {}
        }
        if v.tables.is_empty() {
            return;
        }
        egui::Grid::new("validation")
            .striped(true)
            .num_columns(5)
            .show(ui, |ui| {
                for header in ["Table", "Result", "Source rows", "Raw zone", "Curated"] {
                    ui.strong(header);
                }
                ui.end_row();
                for t in &v.tables {
                    ui.label(t.table.to_string());
                    let color = if t.equal() {
                        egui::Color32::from_rgb(60, 170, 90)
                    } else {
                        ui.visuals().error_fg_color
                    };
                    ui.colored_label(color, t.verdict());
                    ui.label(t.source_rows.to_string());
                    ui.label(t.raw.describe());
                    ui.label(t.curated.describe());
                    ui.end_row();
                }
            });
        for t in v.tables.iter().filter(|t| t.details().next().is_some()) {
            ui.collapsing(format!("What differs in {}", t.table), |ui| {
                for line in t.details() {
                    ui.monospace(line);
                }
            });
        }
    }

    pub fn tasks_ui(
        &mut self,
        ui: &mut egui::Ui,
        doc: &mut WorkspaceDoc,
        backend: &Backend,
        runs: &mut Runs,
    ) {
        egui::Panel::left("task-list")
            .resizable(true)
            .default_size(260.0)
            .show(ui, |ui| self.list_ui(ui, doc, runs));
        let Some(index) = self.selected.filter(|i| *i < doc.workspace.tasks.len()) else {
            ui.label("Select a task, or add one.");
            return;
        };
        egui::ScrollArea::vertical().show(ui, |ui| {
            self.run_controls_ui(ui, doc, backend, runs, index);
            self.validation_ui(ui, &doc.workspace.tasks[index].name);
            ui.separator();
            let before = toml::to_string(&doc.workspace.tasks[index]).ok();
            self.editor_ui(ui, doc, backend, index);
            if toml::to_string(&doc.workspace.tasks[index]).ok() != before {
                doc.dirty = true;
            }
        });
    }

    fn list_ui(&mut self, ui: &mut egui::Ui, doc: &mut WorkspaceDoc, runs: &Runs) {
        ui.heading("Tasks");
        for (i, t) in doc.workspace.tasks.iter().enumerate() {
            let state = if runs.is_running(&t.name) {
                "  (running)"
            } else {
                ""
            };
            if ui
                .selectable_label(self.selected == Some(i), format!("{}{state}", t.name))
                .clicked()
            {
                self.select(doc, i);
            }
        }
        ui.separator();
        let source = doc
            .workspace
            .endpoints
            .iter()
            .find(|e| e.engine.is_source());
        let target = doc
            .workspace
            .endpoints
            .iter()
            .find(|e| !e.engine.is_source());
        match (source, target) {
            (Some(s), Some(t)) => {
                if ui.button("+ New task").clicked() {
                    let name = (1..)
                        .map(|i| format!("task{i}"))
                        .find(|n| !doc.workspace.tasks.iter().any(|t| &t.name == n))
                        .unwrap_or_default();
                    let task: Result<TaskConfig, _> = toml::from_str(&format!(
                        "name = \"{name}\"\nsource = \"{}\"\ntarget = \"{}\"",
                        s.name, t.name
                    ));
                    if let Ok(task) = task {
                        doc.workspace.tasks.push(task);
                        doc.dirty = true;
                        let i = doc.workspace.tasks.len() - 1;
                        self.select(doc, i);
                    }
                }
            }
            _ => {
                ui.weak("A task needs a source and a target endpoint: add them first.");
            }
        }
    }

    fn select(&mut self, doc: &WorkspaceDoc, i: usize) {
        self.selected = Some(i);
        if let Some(t) = doc.workspace.tasks.get(i) {
            self.include_text = t.include.join(", ");
            self.exclude_text = t.exclude.join(", ");
        }
    }

    fn run_controls_ui(
        &mut self,
        ui: &mut egui::Ui,
        doc: &mut WorkspaceDoc,
        backend: &Backend,
        runs: &mut Runs,
        index: usize,
    ) {
        let task = doc.workspace.tasks[index].name.clone();
        let running = runs.is_running(&task);
        ui.horizontal(|ui| {
            let Some(path) = doc.path.clone() else {
                ui.weak("Save the workspace to a file (Export…) before running its tasks.");
                return;
            };
            let can_start = !running && !doc.dirty;
            let start = ui
                .add_enabled(can_start, egui::Button::new("Start / resume"))
                .on_hover_text("Runs the task; a task stopped or killed resumes where it was");
            let reload = ui
                .add_enabled(can_start, egui::Button::new("Reload"))
                .on_hover_text("Deletes the task's load files and loads every table again");
            let reload_table = self.reload_table.take().filter(|_| can_start);
            if start.clicked() || reload.clicked() || reload_table.is_some() {
                runs.start(
                    backend,
                    &doc.workspace,
                    path.clone(),
                    &task,
                    RunOptions {
                        reload: reload.clicked(),
                        until_caught_up: false,
                        reload_tables: reload_table.into_iter().collect(),
                    },
                );
            }
            if ui.add_enabled(running, egui::Button::new("Stop")).clicked() {
                runs.stop(&task);
            }
            let validating = self
                .validations
                .get(&task)
                .is_some_and(|v| v.outcome.is_none());
            let can_validate = !validating && !doc.dirty;
            let validate = ui
                .add_enabled(can_validate, egui::Button::new("Validate"))
                .on_hover_text(
                    "Compares the source with the lake at one exact position (a CDC task must run meanwhile)",
                );
            let repair = ui
                .add_enabled(can_validate, egui::Button::new("Validate and repair"))
                .on_hover_text("Validates, then reloads the tables that differ");
            if validate.clicked() || repair.clicked() {
                self.start_validation(backend, doc, path, &task, repair.clicked());
            }
            if doc.dirty {
                ui.weak("Save the workspace to run with these settings.");
            }
        });
    }

    fn editor_ui(
        &mut self,
        ui: &mut egui::Ui,
        doc: &mut WorkspaceDoc,
        backend: &Backend,
        index: usize,
    ) {
        let sources: Vec<String> = doc
            .workspace
            .endpoints
            .iter()
            .filter(|e| e.engine.is_source())
            .map(|e| e.name.clone())
            .collect();
        let targets: Vec<String> = doc
            .workspace
            .endpoints
            .iter()
            .filter(|e| !e.engine.is_source())
            .map(|e| e.name.clone())
            .collect();
        let task = &mut doc.workspace.tasks[index];
        egui::Grid::new("task-form")
            .num_columns(2)
            .spacing([12.0, 6.0])
            .show(ui, |ui| {
                ui.label("Name");
                ui.text_edit_singleline(&mut task.name);
                ui.end_row();
                choice_ui(ui, "Source", &mut task.source, &sources);
                choice_ui(ui, "Target", &mut task.target, &targets);
                ui.label("Migration type");
                ui.horizontal(|ui| {
                    for (m, label) in [
                        (MigrationType::FullLoad, "full load"),
                        (MigrationType::Cdc, "CDC"),
                        (MigrationType::FullLoadAndCdc, "full load + CDC"),
                    ] {
                        ui.radio_value(&mut task.migration_type, m, label);
                    }
                });
                ui.end_row();
                ui.label("Include");
                if ui.text_edit_singleline(&mut self.include_text).changed() {
                    task.include = rules(&self.include_text);
                }
                ui.end_row();
                ui.label("Exclude");
                if ui.text_edit_singleline(&mut self.exclude_text).changed() {
                    task.exclude = rules(&self.exclude_text);
                }
                ui.end_row();
            });
        ui.weak("Rules are schema.table, comma-separated; % matches any run of characters.");
        self.matched_tables_ui(ui, &doc.workspace, backend, index);
        ui.separator();
        let task = &mut doc.workspace.tasks[index];
        ui.collapsing("Target settings (DMS defaults shown)", |ui| {
            target_settings_ui(ui, &mut task.target_settings);
        });
        if task.has_cdc() {
            ui.collapsing("Change capture settings", |ui| {
                cdc_settings_ui(ui, &mut task.cdc_settings);
            });
        }
    }

    /// The source's tables that the rules select, matched locally as they are typed.
    fn matched_tables_ui(
        &mut self,
        ui: &mut egui::Ui,
        workspace: &crate::config::Workspace,
        backend: &Backend,
        index: usize,
    ) {
        let task = &workspace.tasks[index];
        let Some(source) = workspace.endpoints.iter().find(|e| e.name == task.source) else {
            return;
        };
        let fetch = ui.button("Refresh source tables").clicked();
        if fetch || !self.source_tables.contains_key(&source.name) {
            self.source_tables.insert(source.name.clone(), None);
            let source = source.clone();
            backend.spawn(async move {
                let tables = list_tables(&source).await;
                UiEvent::SourceTables {
                    source: source.name,
                    tables,
                }
            });
        }
        match self.source_tables.get(&source.name) {
            Some(None) | None => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("Reading the source's tables…");
                });
            }
            Some(Some(Err(e))) => {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
            Some(Some(Ok(all))) => {
                let rules = SelectionRules::new(&task.include, &task.exclude);
                let matched: Vec<&TableId> = all.iter().filter(|t| rules.matches_id(t)).collect();
                ui.label(format!(
                    "{} of {} tables selected",
                    matched.len(),
                    all.len()
                ));
                // One table of a task with a full load can be loaded again on its own; in a
                // CDC task, the stream then goes on from the table's new snapshot.
                let reloadable = task.has_full_load();
                egui::ScrollArea::vertical()
                    .id_salt("matched")
                    .max_height(160.0)
                    .show(ui, |ui| {
                        for t in matched {
                            ui.horizontal(|ui| {
                                ui.monospace(t.to_string());
                                if reloadable
                                    && ui
                                        .small_button(format!("Reload {t}"))
                                        .on_hover_text("Loads this table again from a new snapshot, replacing its files; the others stay, and changes go on being captured")
                                        .clicked()
                                {
                                    self.reload_table = Some(t.clone());
                                }
                            });
                        }
                    });
            }
        }
    }
}

/// Every table of a source.
async fn list_tables(source: &crate::config::EndpointConfig) -> Result<Vec<TableId>, String> {
    crate::task::list_source_tables(source, &SelectionRules::new(&[], &[]))
        .await
        .map_err(|e| e.to_string())
}

fn rules(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect()
}

fn choice_ui(ui: &mut egui::Ui, label: &str, value: &mut String, choices: &[String]) {
    ui.label(label);
    egui::ComboBox::from_id_salt(label)
        .selected_text(value.as_str())
        .show_ui(ui, |ui| {
            for c in choices {
                ui.selectable_value(value, c.clone(), c);
            }
        });
    ui.end_row();
}

fn cdc_settings_ui(ui: &mut egui::Ui, s: &mut CdcSettings) {
    let defaults = CdcSettings::default();
    egui::Grid::new("cdc-settings")
        .num_columns(3)
        .spacing([12.0, 6.0])
        .show(ui, |ui| {
            ui.label("Schema changes");
            ui.horizontal(|ui| {
                for (policy, label, hover) in [
                    (
                        SchemaChangePolicy::Apply,
                        "apply",
                        "Record what rows older than a change hold (a constant default, a renamed column) and reload a table where the change log does not say",
                    ),
                    (
                        SchemaChangePolicy::Reload,
                        "reload",
                        "Reload a table on any change of its columns",
                    ),
                    (
                        SchemaChangePolicy::Stop,
                        "stop",
                        "Stop the task at any change of a table's columns, naming it",
                    ),
                ] {
                    ui.radio_value(&mut s.schema_change_policy, policy, label)
                        .on_hover_text(hover);
                }
            });
            ui.weak("default: apply");
            ui.end_row();
            ui.label("Slot name");
            ui.text_edit_singleline(&mut s.slot_name);
            ui.weak("default: tributary_<task>_<database>_<hash> (PostgreSQL)");
            ui.end_row();
            ui.label("Publication name");
            ui.text_edit_singleline(&mut s.publication_name);
            ui.weak("default: tributary_<task> (PostgreSQL)");
            ui.end_row();
            ui.label("Heartbeat");
            ui.checkbox(&mut s.heartbeat_enable, "");
            ui.weak(if defaults.heartbeat_enable {
                "default: on"
            } else {
                "default: off"
            });
            ui.end_row();
            ui.label("Heartbeat every (min)");
            ui.add(egui::DragValue::new(&mut s.heartbeat_frequency).range(1..=1440));
            ui.weak(format!("default: {}", defaults.heartbeat_frequency));
            ui.end_row();
            ui.label("Slot WAL warning (MB)");
            ui.add(egui::DragValue::new(&mut s.slot_wal_warning_mb).range(1..=u64::MAX));
            ui.weak(format!("default: {}", defaults.slot_wal_warning_mb));
            ui.end_row();
        });
}

fn target_settings_ui(ui: &mut egui::Ui, s: &mut TargetSettings) {
    let defaults = TargetSettings::default();
    egui::Grid::new("target-settings")
        .num_columns(3)
        .spacing([12.0, 6.0])
        .show(ui, |ui| {
            ui.label("Bucket folder");
            ui.text_edit_singleline(&mut s.bucket_folder);
            ui.weak("default: none");
            ui.end_row();
            ui.label("Format");
            egui::ComboBox::from_id_salt("format")
                .selected_text(format!("{:?}", s.data_format).to_lowercase())
                .show_ui(ui, |ui| {
                    for f in [DataFormat::Parquet, DataFormat::Csv, DataFormat::Json] {
                        ui.selectable_value(&mut s.data_format, f, format!("{f:?}").to_lowercase());
                    }
                });
            ui.weak(format!("default: {:?}", defaults.data_format).to_lowercase());
            ui.end_row();
            ui.label("Compression");
            egui::ComboBox::from_id_salt("compression")
                .selected_text(format!("{:?}", s.compression).to_lowercase())
                .show_ui(ui, |ui| {
                    for c in [
                        Compression::Snappy,
                        Compression::Zstd,
                        Compression::Gzip,
                        Compression::None,
                    ] {
                        ui.selectable_value(&mut s.compression, c, format!("{c:?}").to_lowercase());
                    }
                });
            ui.weak(format!("default: {:?}", defaults.compression).to_lowercase());
            ui.end_row();
            ui.label("Op column in full load");
            ui.checkbox(&mut s.include_op_for_full_load, "");
            ui.weak("default: off");
            ui.end_row();
            ui.label("Timestamp column");
            ui.text_edit_singleline(&mut s.timestamp_column_name);
            ui.weak("default: none");
            ui.end_row();
            ui.label("Max file size (KB)");
            ui.add(egui::DragValue::new(&mut s.max_file_size).range(1..=u64::MAX));
            ui.weak(format!("default: {}", defaults.max_file_size));
            ui.end_row();
            ui.label("Date partitions");
            ui.checkbox(&mut s.date_partition_enabled, "");
            ui.weak("default: off");
            ui.end_row();
            ui.label("Partition sequence");
            egui::ComboBox::from_id_salt("sequence")
                .selected_text(format!("{:?}", s.date_partition_sequence))
                .show_ui(ui, |ui| {
                    for q in [
                        DatePartitionSequence::YyyyMmDd,
                        DatePartitionSequence::YyyyMmDdHh,
                        DatePartitionSequence::YyyyMm,
                        DatePartitionSequence::MmYyyyDd,
                        DatePartitionSequence::DdMmYyyy,
                    ] {
                        ui.selectable_value(&mut s.date_partition_sequence, q, format!("{q:?}"));
                    }
                });
            ui.weak("default: YyyyMmDd");
            ui.end_row();
            ui.label("Partition style");
            ui.horizontal(|ui| {
                ui.radio_value(
                    &mut s.date_partition_style,
                    DatePartitionStyle::Hive,
                    "hive",
                );
                ui.radio_value(&mut s.date_partition_style, DatePartitionStyle::Dms, "dms");
            });
            ui.weak("default: dms");
            ui.end_row();
            ui.label("CDC batch interval (s)");
            ui.add(egui::DragValue::new(&mut s.cdc_max_batch_interval).range(1..=86_400));
            ui.weak(format!("default: {}", defaults.cdc_max_batch_interval));
            ui.end_row();
            ui.label("CDC min file size (KB)");
            ui.add(egui::DragValue::new(&mut s.cdc_min_file_size).range(1..=u64::MAX));
            ui.weak(format!("default: {}", defaults.cdc_min_file_size));
            ui.end_row();
        });
}
