//! llama.cpp's own speculative loops, driven through small C++ shims (`cpp/`): the
//! benchmark's baselines (`common_speculative`: n-gram modes, draft-dflash) and the parity
//! reference for Tandem's diffusion drafter (llama.cpp's `dflash` graph).

mod dflash;
mod spec;

pub use dflash::LlamaDflash;
pub use spec::{LlamaSpecStats, llama_spec_generate};
