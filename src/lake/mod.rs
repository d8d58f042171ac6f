//! The lake: where files go ([`layout`]), how they are encoded ([`format`]), where they are
//! stored ([`storage`]), how they are read back for preview ([`inspect`], through
//! [`parquet_read`]), how the curated layer's engines reach the same storage
//! ([`adapters`]), and local files made durable and private ([`durable`]).

pub mod adapters;
pub mod durable;
pub mod format;
pub mod inspect;
pub mod layout;
pub mod parquet_read;
pub mod storage;

pub use storage::{ObjectMeta, S3Options, Storage, StorageError};

/// A size for people: `512 B`, `1.5 KB`, `3.2 GB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
