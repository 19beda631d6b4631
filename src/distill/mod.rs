//! Self-distillation data for training a diffusion drafter on any GGUF target.
//!
//! `collect` runs the target itself over a prompt corpus, lets it write its own greedy
//! continuations (the drafter must learn what *this* target says, quantization included),
//! and stores per position the token ids and the target features the drafter conditions on
//! (the inputs of its `target_layers`, f16) — captured from the very decodes that generate
//! the text, so collecting costs no extra target pass. Data lands in resumable shards
//! (`shards`).

pub mod collect;
pub mod corpus;
pub mod shards;

pub use crate::draft::diffusion::default_target_layers;
pub use collect::{CollectOptions, CollectSummary, collect, load_prompt_texts};
pub use corpus::{CorpusOptions, generate as generate_corpus};
pub use shards::{DistillMeta, Record, ShardError, Shards};
