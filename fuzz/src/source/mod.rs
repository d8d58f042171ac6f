//! tributary's `source` modules that decode bytes from outside, at their paths there.
pub mod mysql;
pub mod postgres;
