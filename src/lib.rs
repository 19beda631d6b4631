//! Tandem: lossless speculative decoding for GGUF models on llama.cpp.
//!
//! - [`llama`]: the only FFI to llama.cpp (model, context, batched decode, KV rollback,
//!   tokenizer, chat template, quantize; `llama::baseline`: llama.cpp's own speculative
//!   loops for the bench).
//! - [`kernels`]: Tandem's own SIMD/quantized products and its OpenMP-team parallel loops.
//! - [`head`]: Tandem's own exact output head (the lazy head).
//! - [`draft`]: drafters behind the [`draft::Drafter`] trait (none, n-gram, oracle, the
//!   Rust-native diffusion drafter).
//! - [`verify`]: greedy and speculative-sampling acceptance.
//! - [`gguf`]: a small GGUF reader and writer.
//! - [`engine`]: the draft → verify → accept/rollback loop and its statistics.
//! - [`models`]: the model manifest and fetching models from PyPI wheels.
//! - [`collab`]: collaborative decoding (ensembles, contrastive decoding, CoS).
//! - [`distill`], [`train`]: making a diffusion drafter for a target (data, training).
//! - [`bench`](mod@bench): the benchmark harness.
//! - [`session`]: a loaded model ready to generate (the building block under [`api`]).
//! - [`api`]: [`Engine`], the embedding API: a model and drafter on their own inference
//!   thread, generations as text streams with statistics (the CLI and the server use it).
//! - [`server`]: `tandem serve`, the OpenAI-compatible HTTP server over an [`Engine`].

#![warn(missing_docs)]
// Unsafe code lives in `llama` (the FFI) and `kernels` (SIMD) only.
#![deny(unsafe_code)]

pub mod api;
#[cfg(feature = "bench")]
pub mod bench;
pub mod collab;
#[cfg(feature = "train")]
pub mod distill;
pub mod draft;
pub mod engine;
pub mod gguf;
pub mod head;
#[allow(unsafe_code)]
pub mod kernels;
#[allow(unsafe_code)]
pub mod llama;
pub mod models;
pub mod sampling;
#[cfg(feature = "server")]
pub mod server;
pub mod session;
pub mod text;
#[cfg(feature = "train")]
pub mod train;
pub mod verify;

pub use api::Engine;
