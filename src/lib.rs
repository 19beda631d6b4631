//! Tandem: lossless speculative decoding for GGUF models on llama.cpp.
//!
//! - [`target`]: the target model: the llama.cpp boundary (model, context, batched decode,
//!   KV rollback) and Tandem's own exact output head (`target::head`, the lazy head).
//! - [`draft`]: drafters behind the [`draft::Drafter`] trait (none, n-gram).
//! - [`verify`]: greedy and speculative-sampling acceptance.
//! - [`gguf`]: a small GGUF reader.
//! - [`engine`]: the draft → verify → accept/rollback loop and its statistics.
//! - [`models`]: the model manifest and fetching models from PyPI wheels.
//! - [`session`]: a loaded model ready to generate (what the CLI and embedders use).

pub mod bench;
pub mod collab;
pub mod distill;
pub mod draft;
pub mod engine;
pub mod gguf;
pub mod gguf_write;
pub mod models;
pub mod par;
pub mod sampling;
pub mod session;
pub mod target;
pub mod text;
pub mod train;
pub mod verify;
