#[path = "../../../../src/source/postgres/copy_binary.rs"]
pub mod copy_binary;
#[path = "../../../../src/source/postgres/pgoutput.rs"]
pub mod pgoutput;
#[path = "../../../../src/source/postgres/types.rs"]
pub mod types;
