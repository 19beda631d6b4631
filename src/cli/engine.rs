//! The engine options `generate` and `serve` share, mapped onto `tandem::api::EngineBuilder`
//! (which checks them).

use std::path::PathBuf;

use tandem::api::{Engine, EngineBuilder};
use tandem::draft::NgramConfig;
use tandem::engine::PolicyKind;
use tandem::session::{DiffusionSpec, DraftSpec, HeadMode};

#[derive(clap::Args, Clone)]
pub struct EngineArgs {
    /// Context size in tokens.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
    pub ctx_size: u32,
    /// CPU threads.
    #[arg(short = 't', long)]
    pub threads: Option<i32>,
    /// Drafter: auto (n-gram lookup and, when the model has one, its diffusion drafter,
    /// chosen between every round by the policy), none (plain decoding), ngram (prompt
    /// lookup) or diffusion (a DFlash block-diffusion drafter run by Tandem: the model's
    /// shipped one, or --drafter).
    #[arg(long, default_value = "auto")]
    pub draft: DraftSpec,
    /// Draft policy: failfast (each round's draft length from the measured verify cost and
    /// the drafters' calibrated acceptance; plain steps where drafting does not pay) or
    /// fixed (always --draft-max).
    #[arg(long, default_value = "failfast")]
    pub policy: PolicyKind,
    /// Drafter file for --draft diffusion: a `dflash` GGUF made for this target.
    #[arg(long, value_name = "PATH.gguf")]
    pub drafter: Option<PathBuf>,
    /// Diffusion drafter: end the draft at the first position whose confidence (top
    /// probability) is below this (0 = always the whole block).
    #[arg(long, default_value_t = 0.0)]
    pub draft_p_min: f32,
    /// Most tokens drafted per verification step (a cap for --policy failfast).
    #[arg(long, default_value_t = tandem::api::DEFAULT_DRAFT_MAX)]
    pub draft_max: usize,
    /// n-gram drafter: longest suffix to match.
    #[arg(long, default_value_t = 4)]
    pub ngram_max: usize,
    /// n-gram drafter: shortest suffix to match.
    #[arg(long, default_value_t = 2)]
    pub ngram_min: usize,
    /// Exact mode: keep weights in their file layout (no CPU repacking) so batched
    /// verification rounds exactly like single-token decoding. Slower on some models.
    #[arg(long)]
    pub exact: bool,
    /// Target layers on the GPU (-1 = all, the default in builds with a GPU backend:
    /// `--features cuda|vulkan|metal`; CPU builds have none).
    #[arg(
        long = "gpu-layers",
        visible_alias = "ngl",
        allow_negative_numbers = true
    )]
    pub gpu_layers: Option<i32>,
    /// Free the KV cache after every generation instead of keeping it for the next
    /// request's common prompt prefix (the prompt cache).
    #[arg(long)]
    pub no_prompt_cache: bool,
    /// Conversations the prompt cache keeps (the live one and saved copies, least
    /// recently used evicted first).
    #[arg(long, default_value_t = tandem::api::DEFAULT_PROMPT_CACHE_SLOTS)]
    pub prompt_cache_slots: usize,
    /// Who computes logits during verification: auto (Tandem's lazy head for large
    /// vocabularies), llama (llama.cpp, every position), lazy (Tandem's, only the positions
    /// acceptance reaches).
    #[arg(long, default_value = "auto")]
    pub head: HeadMode,
}

impl EngineArgs {
    /// A builder for `model` with these options.
    pub fn builder(&self, model: &str) -> EngineBuilder {
        let ngram = NgramConfig {
            n_max: self.ngram_max,
            n_min: self.ngram_min,
        };
        let diffusion = DiffusionSpec {
            path: PathBuf::new(), // the shipped drafter unless --drafter
            p_min: self.draft_p_min,
        };
        let draft = match &self.draft {
            DraftSpec::Ngram(_) => DraftSpec::Ngram(ngram),
            DraftSpec::Diffusion(_) => DraftSpec::Diffusion(diffusion),
            DraftSpec::Auto(..) => DraftSpec::Auto(ngram, diffusion),
            d => d.clone(),
        };
        let mut b = Engine::builder(model)
            .draft(draft)
            .draft_max(self.draft_max)
            .policy(self.policy)
            .head(self.head)
            .context_size(self.ctx_size)
            .exact(self.exact)
            .prompt_cache_slots(if self.no_prompt_cache {
                0
            } else {
                self.prompt_cache_slots
            });
        if let Some(t) = self.threads {
            b = b.threads(t);
        }
        if let Some(n) = self.gpu_layers {
            b = b.gpu_layers(n);
        }
        if let Some(d) = &self.drafter {
            b = b.drafter_file(d);
        }
        b
    }

    /// Threads to use (the given number or the machine's default).
    pub fn threads_or_default(&self) -> i32 {
        self.threads.unwrap_or_else(tandem::llama::default_threads)
    }
}
