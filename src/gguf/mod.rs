//! GGUF files: a small reader (metadata, tensor directory, tensor bytes; every length
//! checked) and a writer (metadata, F32/F16/BF16/Q8_0 tensors).

mod header;
mod read;
mod types;
pub mod write;

pub use header::{Header, HeaderError, read_header};
pub use read::*;
pub use types::GgmlType;
