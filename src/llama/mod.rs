//! The target model: the only place that touches llama.cpp.
//!
//! Everything `unsafe` in Tandem lives under this module: the FFI, and the SIMD kernel of
//! the target's output head that Tandem computes itself (`head`). The rest of the crate sees
//! RAII types ([`Model`], [`Context`]) with plain-Rust signatures: token ids are `i32`,
//! logits are `&[f32]` rows borrowed from llama.cpp's output buffer (no copies).

mod backend;
#[cfg(feature = "bench")]
pub mod baseline;
mod context;
mod grammar;
mod model;
mod quantize;

pub use backend::init_backend;
#[cfg(feature = "bench")]
pub use baseline::{LlamaDflash, LlamaSpecStats, llama_spec_generate};
pub use context::{Context, ContextParams, Outputs, default_threads};
pub use grammar::{Grammar, GrammarError, JSON_OBJECT_SCHEMA, json_schema_to_gbnf};
pub use model::{Model, ModelParams, default_gpu_layers, gpu_backend};
pub use quantize::{QUANT_TYPES, QuantOverrides, quantize, quantize_with};

/// A token id in the target's vocabulary.
pub type Token = i32;

/// Errors from the llama.cpp boundary, each with enough context to act on.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The model file does not exist.
    #[error("model file not found: {0}")]
    NotFound(String),
    /// The file does not start with the GGUF magic.
    #[error("{path}: not a GGUF file (bad magic {magic:?})")]
    NotGguf {
        /// The file's path.
        path: String,
        /// The first 4 bytes found.
        magic: [u8; 4],
    },
    /// The GGUF header is invalid, cut off, or claims more than the file holds.
    #[error("{path}: corrupt or truncated GGUF: {why}")]
    CorruptGguf {
        /// The file's path.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// llama.cpp could not load the model.
    #[error("llama.cpp could not load the model {0} (corrupt file or unsupported architecture)")]
    LoadFailed(String),
    /// llama.cpp could not create a context.
    #[error("llama.cpp could not create a context (n_ctx={n_ctx}): out of memory?")]
    ContextFailed {
        /// The requested context size (tokens).
        n_ctx: u32,
    },
    /// The prompt does not fit in the context.
    #[error("prompt has {n_prompt} tokens but the context holds only {n_ctx}")]
    PromptTooLong {
        /// Prompt length (tokens).
        n_prompt: usize,
        /// Context size (tokens).
        n_ctx: usize,
    },
    /// Generation reached the end of the context.
    #[error("the context is full ({n_ctx} tokens)")]
    ContextFull {
        /// Context size (tokens).
        n_ctx: usize,
    },
    /// llama.cpp's graph exposes no final hidden state, which the lazy head needs.
    #[error(
        "llama.cpp's graph for this model has no result_norm node: the lazy head cannot be used"
    )]
    NoHidden,
    /// A requested feature layer is outside 1..n_layer.
    #[error(
        "target layer {layer} cannot provide features (layers 1 up to but excluding {n_layer} can)"
    )]
    FeatureLayer {
        /// The requested layer.
        layer: usize,
        /// The target's number of layers.
        n_layer: usize,
    },
    /// llama.cpp did not report the requested target-layer features.
    #[error("llama.cpp's graph did not report the requested target-layer features")]
    NoFeatures,
    /// `llama_decode` returned a nonzero status.
    #[error("llama_decode failed with status {0}")]
    Decode(i32),
    /// llama.cpp refused to remove KV-cache entries from this position.
    #[error("KV-cache rollback (seq_rm from position {0}) was refused by llama.cpp")]
    Rollback(i32),
    /// Saved KV cells could not be restored.
    #[error("llama.cpp could not restore the saved KV cells")]
    Restore,
    /// Tokenization failed.
    #[error("tokenization failed: {0}")]
    Tokenize(String),
    /// Applying the chat template failed.
    #[error("chat template: {0}")]
    ChatTemplate(String),
    /// llama.cpp's own speculative decoding failed.
    #[error("llama.cpp speculative decoding: {0}")]
    LlamaSpec(String),
    /// A path is not valid UTF-8 or contains NUL.
    #[error("path is not valid UTF-8 / contains NUL: {0}")]
    BadPath(String),
    /// Quantizing a model failed.
    #[error("quantisation: {0}")]
    Quantize(String),
}

/// Result with a [`TargetError`].
pub type Result<T> = std::result::Result<T, TargetError>;
