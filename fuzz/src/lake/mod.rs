//! tributary's Parquet reading, at its path there.
#[path = "../../../src/lake/parquet_read.rs"]
pub mod parquet_read;
