#[path = "../../../../src/source/mysql/row_image.rs"]
pub mod row_image;
#[path = "../../../../src/source/mysql/types.rs"]
pub mod types;
