//! The speculative loop: draft → verify in one batched decode → keep the accepted prefix,
//! roll the rest out of the KV cache → stream.
//!
//! Invariant between rounds: the KV cache holds exactly `history[..len-1]` (prompt plus
//! every committed token except the newest, which is fed as the first row of the next
//! verification batch).

#[cfg(test)]
mod mock;
pub mod policy;
mod round;
mod rows;
mod stats;
pub mod target;

use std::sync::Arc;
use std::time::Instant;

use round::Round;
pub use stats::{Generation, Stats, StopReason};

pub use policy::{DraftPolicy, FailFast, FixedPolicy, MinDraft, Outcome, PolicyKind, PolicyMemory};
pub use target::Target;

use crate::draft::Drafter;
use crate::head::OutputHead;
use crate::llama::{TargetError, Token};
use crate::sampling::SamplingConfig;

/// Per-request settings. Plain data.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most tokens drafted per round (0 = plain decoding).
    pub draft_max: usize,
    /// How tokens are chosen (greedy or sampled).
    pub sampling: SamplingConfig,
    /// Check the KV-cache length after every round (tests; cheap, but off by default).
    pub check_kv: bool,
    /// Record the target's top-2 logit margin for every emitted token (greedy only; tests).
    pub record_margins: bool,
    /// Tandem's own output head: verification decodes stop at the final norm and logits
    /// are computed only for the positions the acceptance check reaches. `None`: llama.cpp
    /// computes logits for every position.
    pub lazy_head: Option<Arc<OutputHead>>,
    /// Fewest positions in the first lazy-head pass of a round (greedy verification); the
    /// engine raises it when drafts have been accepted in long runs.
    pub lazy_group: usize,
    /// The KV cache already holds the first `reuse_prefix` tokens of the prompt (from an
    /// earlier generation: a prompt cache); only the rest is decoded. 0: the cache is
    /// cleared first. At most `prompt.len() − 1` is used (the last prompt token is decoded
    /// for its logits).
    pub reuse_prefix: usize,
    /// Set from any thread to stop the generation; checked between the prompt's chunks
    /// (a long prefill stops within one chunk) and after every committed token.
    pub cancel: Option<CancelFlag>,
    /// A grammar the output must follow (its start state; each generation works on a
    /// copy). Verification masks the target's distribution at every drafted position by
    /// the state reached through the accepted prefix, so the output is exactly that of
    /// plain decoding under the same grammar; drafts stay unconstrained.
    pub grammar: Option<Arc<crate::llama::Grammar>>,
    /// Under a grammar, draft the text it alone determines (off: plain decoding means
    /// one token per step).
    pub forced_drafts: bool,
}

/// A shared "stop now" flag (see [`EngineConfig::cancel`]).
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(pub std::sync::Arc<std::sync::atomic::AtomicBool>);

impl CancelFlag {
    /// Ask the generation to stop.
    pub fn cancel(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether stopping was asked for.
    pub fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            draft_max: 8,
            sampling: SamplingConfig::greedy(),
            check_kv: false,
            record_margins: false,
            lazy_head: None,
            lazy_group: 2,
            reuse_prefix: 0,
            cancel: None,
            grammar: None,
            forced_drafts: true,
        }
    }
}

/// Why [`generate`] failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// llama.cpp failed.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The prompt has no tokens.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// The KV cache is out of step with the history (checked when `check_kv` is set).
    #[error("KV cache holds {got} positions after a round, expected {want}")]
    KvMismatch {
        /// Positions the KV cache holds.
        got: usize,
        /// Positions it should hold.
        want: usize,
    },
}

/// Generate up to `max_new` tokens after `prompt` with one drafter and a constant draft
/// length (`cfg.draft_max`): [`run`] under a [`FixedPolicy`].
pub fn generate<T: Target + ?Sized>(
    ctx: &mut T,
    drafter: &mut dyn Drafter,
    prompt: &[Token],
    max_new: usize,
    cfg: &EngineConfig,
    on_token: &mut dyn FnMut(Token) -> bool,
) -> Result<Generation, EngineError> {
    let mut policy = FixedPolicy::new(drafter, cfg.draft_max);
    run(ctx, &mut policy, prompt, max_new, cfg, on_token)
}

/// Generate up to `max_new` tokens after `prompt`, the policy choosing each round's draft
/// (at most `cfg.draft_max` tokens), calling `on_token` for each emitted token as soon as
/// it is committed (return `false` to stop). The KV cache is cleared first, or cut to the
/// reused prefix (`cfg.reuse_prefix`).
pub fn run<T: Target + ?Sized>(
    ctx: &mut T,
    policy: &mut dyn DraftPolicy,
    prompt: &[Token],
    max_new: usize,
    cfg: &EngineConfig,
    on_token: &mut dyn FnMut(Token) -> bool,
) -> Result<Generation, EngineError> {
    let t0 = Instant::now();
    if prompt.is_empty() {
        return Err(EngineError::EmptyPrompt);
    }
    if prompt.len() >= ctx.n_ctx() {
        return Err(TargetError::PromptTooLong {
            n_prompt: prompt.len(),
            n_ctx: ctx.n_ctx(),
        }
        .into());
    }
    let mut r = Round::new(cfg, prompt);
    let prefilled = r.prefill(ctx, policy, prompt)?;
    r.stats.prefill = t0.elapsed();
    if !prefilled {
        return Ok(r.finish(StopReason::Cancelled, t0.elapsed()));
    }
    let stop = loop {
        if let Some(stop) = r.commit(ctx, max_new, on_token) {
            break stop;
        }
        let pos = r.history.len() - 1;
        if cfg.check_kv && ctx.kv_len() != pos {
            return Err(EngineError::KvMismatch {
                got: ctx.kv_len(),
                want: pos,
            });
        }
        if pos + 1 > ctx.n_ctx() {
            break StopReason::ContextFull;
        }
        // A round emits at most k + 1 tokens; never draft past max_new or the context.
        let k = cfg
            .draft_max
            .min(ctx.n_ctx() - pos - 1)
            .min(ctx.n_batch() - 1)
            .min(max_new - r.generated.len() - 1);
        r.draft(policy, k);
        r.verify(ctx, policy)?;
    };
    Ok(r.finish(stop, t0.elapsed()))
}
