//! The app under egui_kittest, shared by the app's test binaries: a harness on a real tokio
//! runtime, stepping until background work shows, and README screenshots.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::path::PathBuf;
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use tributary::config::Workspace;
use tributary::ui::TributaryApp;

use super::common::TestDir;

/// A folder with a fixed name, emptied first: file paths show on screen, and snapshots must
/// not change from run to run.
pub fn fixed_dir(name: &str) -> TestDir {
    TestDir::at(std::env::temp_dir().join("tributary-app-tests").join(name))
}

/// Saves what the window shows for the README when TRIBUTARY_SCREENSHOTS names a folder.
pub fn screenshot(harness: &mut Harness<'_, TributaryApp>, name: &str) {
    if let Some(dir) = std::env::var_os("TRIBUTARY_SCREENSHOTS") {
        let image = harness.render().unwrap();
        let small =
            image::imageops::resize(&image, 960, 600, image::imageops::FilterType::Triangle);
        small
            .save(PathBuf::from(dir).join(format!("{name}.png")))
            .unwrap();
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub fn harness(
    runtime: &tokio::runtime::Runtime,
    path: PathBuf,
    workspace: Workspace,
) -> Harness<'static, TributaryApp> {
    let handle = runtime.handle().clone();
    Harness::builder()
        .with_size(egui::vec2(1280.0, 800.0))
        .build_eframe(move |cc| TributaryApp::with_workspace(&cc.egui_ctx, handle, path, workspace))
}

/// Steps the app until `label` (a substring) shows, as background work completes.
#[track_caller]
pub fn wait_for(harness: &mut Harness<'_, TributaryApp>, label: &str, timeout: Duration) {
    step_until(harness, true, label, timeout);
}

/// Steps the app until no label contains `label` any more.
#[track_caller]
pub fn wait_until_gone(harness: &mut Harness<'_, TributaryApp>, label: &str, timeout: Duration) {
    step_until(harness, false, label, timeout);
}

/// Steps the app until a label containing `label` shows (`shown`) or is gone; on timeout,
/// saves what the window showed instead, to look at.
#[track_caller]
pub fn step_until(
    harness: &mut Harness<'_, TributaryApp>,
    shown: bool,
    label: &str,
    timeout: Duration,
) {
    let started = Instant::now();
    loop {
        harness.step();
        if harness.query_all_by_label_contains(label).next().is_some() == shown {
            return;
        }
        if started.elapsed() >= timeout {
            let shot = std::env::temp_dir().join("tributary-app-test-failure.png");
            if let Ok(image) = harness.render() {
                let _ = image.save(&shot);
            }
            let what = if shown {
                "did not appear"
            } else {
                "still shows"
            };
            panic!(
                "'{label}' {what} after {timeout:?} (screen: {})",
                shot.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
