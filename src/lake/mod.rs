//! The lake: where files go ([`layout`]), how they are encoded ([`format`]), where they are
//! stored ([`storage`]), and how they are read back for preview ([`inspect`]).

pub mod format;
pub mod inspect;
pub mod layout;
pub mod storage;

pub use storage::{ObjectMeta, S3Options, Storage, StorageError};
