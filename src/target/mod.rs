//! The target model: the only place that touches llama.cpp.
//!
//! Everything `unsafe` in Tandem lives under this module: the FFI, and the SIMD kernel of
//! the target's output head that Tandem computes itself (`head`). The rest of the crate sees
//! RAII types ([`Model`], [`Context`]) with plain-Rust signatures: token ids are `i32`,
//! logits are `&[f32]` rows borrowed from llama.cpp's output buffer (no copies).

mod backend;
mod context;
pub mod head;
mod llama_dflash;
mod llama_spec;
mod model;
pub mod omp;
mod quantize;
pub mod simd;

pub use backend::init_backend;
pub use context::{Context, ContextParams, Outputs, default_threads};
pub use llama_dflash::LlamaDflash;
pub use llama_spec::{LlamaSpecStats, llama_spec_generate};
pub use model::{Model, ModelParams};
pub use quantize::{QUANT_TYPES, quantize};

/// A token id in the target's vocabulary.
pub type Token = i32;

/// Errors from the llama.cpp boundary, each with enough context to act on.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("model file not found: {0}")]
    NotFound(String),
    #[error("{path}: not a GGUF file (bad magic {magic:?})")]
    NotGguf { path: String, magic: [u8; 4] },
    #[error("{path}: corrupt or truncated GGUF: {why}")]
    CorruptGguf { path: String, why: String },
    #[error("llama.cpp could not load the model {0} (corrupt file or unsupported architecture)")]
    LoadFailed(String),
    #[error("llama.cpp could not create a context (n_ctx={n_ctx}): out of memory?")]
    ContextFailed { n_ctx: u32 },
    #[error("prompt has {n_prompt} tokens but the context holds only {n_ctx}")]
    PromptTooLong { n_prompt: usize, n_ctx: usize },
    #[error("the context is full ({n_ctx} tokens)")]
    ContextFull { n_ctx: usize },
    #[error(
        "llama.cpp's graph for this model has no result_norm node: the lazy head cannot be used"
    )]
    NoHidden,
    #[error(
        "target layer {layer} cannot provide features (layers 1 up to but excluding {n_layer} can)"
    )]
    FeatureLayer { layer: usize, n_layer: usize },
    #[error("llama.cpp's graph did not report the requested target-layer features")]
    NoFeatures,
    #[error("llama_decode failed with status {0}")]
    Decode(i32),
    #[error("KV-cache rollback (seq_rm from position {0}) was refused by llama.cpp")]
    Rollback(i32),
    #[error("tokenization failed: {0}")]
    Tokenize(String),
    #[error("chat template: {0}")]
    ChatTemplate(String),
    #[error("llama.cpp speculative decoding: {0}")]
    LlamaSpec(String),
    #[error("path is not valid UTF-8 / contains NUL: {0}")]
    BadPath(String),
    #[error("quantisation: {0}")]
    Quantize(String),
}

pub type Result<T> = std::result::Result<T, TargetError>;
