//! GGUF files: a small reader (metadata, tensor directory, tensor bytes; every length
//! checked), a writer (metadata, tensors of any type ggml quantizes) and a random-weight
//! llama target for tests (`fixture`).

pub mod fixture;
mod header;
mod read;
mod types;
pub mod write;

pub use header::{Header, HeaderError, read_header};
pub use read::*;
pub use types::GgmlType;
