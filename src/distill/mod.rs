//! Self-distillation data for training a diffusion drafter on any GGUF target.
//!
//! `collect` runs the target itself over a prompt corpus: it reads each prompt (teacher
//! forcing, at prefill speed) and writes its own greedy continuation (the drafter must
//! learn what *this* target says, quantization included). Per position it stores the
//! token, the target features the drafter conditions on (the inputs of its
//! `target_layers`, f16) and the target's top-k next-token probabilities (soft labels) —
//! all from the very decodes that read and write the text, so collecting costs no extra
//! target pass. Data lands in resumable shards (`shards`); `corpus` writes the prompts,
//! with a held-out split that shares no template or source file with training.

pub mod collect;
pub mod corpus;
pub mod eval;
pub mod shards;
pub mod walk;

pub use crate::draft::diffusion::default_target_layers;
pub use collect::{CollectOptions, CollectSummary, collect, load_prompt_texts};
pub use corpus::{CorpusOptions, generate as generate_corpus};
pub use shards::{DistillMeta, Record, ShardError, Shards};
pub use walk::Walk;
