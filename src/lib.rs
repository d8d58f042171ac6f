//! Tributary: replicate operational databases into an S3 data lake, the way AWS DMS does,
//! as one local-first program.
//!
//! The engine is `config` (the workspace file), `ident` (source table identities),
//! `source` (one module per database), `lake` (layout, formats, storage, inspection) and
//! `task` (runner, checkpoints, statistics, and the command/event API). `cli` drives the
//! engine from a terminal; `ui`, the desktop app, drives it through the same `task` API. The
//! engine never imports UI code.

#[cfg(unix)]
pub mod aws;
pub mod bench;
pub mod catalog;
pub mod check;
pub mod cli;
pub mod config;
pub mod curate;
pub mod ident;
pub mod lake;
pub mod query;
pub mod secret;
pub mod source;
pub mod sql;
pub mod task;
pub mod tls;
pub mod ui;
pub mod validate;
