//! tributary's `source` modules that decode bytes from outside, at their paths there.
#[path = "../../../src/source/decimal.rs"]
pub mod decimal;
pub mod mysql;
pub mod postgres;
