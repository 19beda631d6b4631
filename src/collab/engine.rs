//! Collaborative decoding loops: naive (every model decodes every token) and CoS
//! (speculation with alternating proposer/verifier roles).
//!
//! **CoS round.** A proposer P — a model whose cache already holds every committed token
//! and whose last logits predict the next one, if any, else the next model in turn — drafts
//! γ tokens from its own distribution q (under the request's sampling transform). Every other
//! model decodes `[last committed token?] + draft` in one batch. Position by position the
//! combined distribution r (all models' logits there) judges the draft token: greedy keeps it
//! if it is r's argmax; sampling keeps it with probability min(1, r/q) and otherwise draws the
//! replacement from the residual max(0, r − q). So every emitted token is r's own, exactly.
//! When the whole draft is accepted the verifiers' last logits already predict the next
//! token, so one of them proposes next (the roles alternate) and no model decodes a token
//! only to produce a bonus. Each model's cache is trimmed to the committed prefix.

use std::time::Instant;

use super::combine::Combine;
use crate::llama::{Context, Outputs, TargetError, Token};
use crate::sampling::{Rng, SamplingConfig, argmax};

/// Naive or speculative collaboration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollabMode {
    /// Every model decodes every token; each token is picked from the combined distribution.
    Naive,
    /// Collaborative speculation (CoS): models take turns proposing drafts the others verify.
    Cos,
}

/// Settings of a collaborative generation. Plain data.
#[derive(Debug, Clone)]
pub struct CollabConfig {
    /// How the models' distributions are combined.
    pub combine: Combine,
    /// Naive or speculative (CoS) decoding.
    pub mode: CollabMode,
    /// Tokens a proposer drafts per round (CoS).
    pub draft_len: usize,
    /// How tokens are chosen from the combined distribution.
    pub sampling: SamplingConfig,
}

/// Counters and timing of a collaborative generation.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CollabStats {
    /// Prompt length (tokens).
    pub n_prompt: usize,
    /// Tokens committed.
    pub n_generated: usize,
    /// Rounds (naive: one per token; CoS: one per proposal).
    pub rounds: usize,
    /// Tokens proposed (CoS).
    pub proposed: usize,
    /// Proposed tokens accepted (CoS).
    pub accepted: usize,
    /// Rounds each model proposed in.
    pub proposer_rounds: Vec<usize>,
    /// Wall time of the generation, prefill included (seconds).
    pub seconds: f64,
}

/// The result of a collaborative generation.
#[derive(Debug, Clone)]
pub struct CollabOutput {
    /// The committed tokens.
    pub tokens: Vec<Token>,
    /// "end of generation", "max tokens" or "context full".
    pub stop: &'static str,
    /// Counters and timing.
    pub stats: CollabStats,
}

/// What a model's cache holds.
#[derive(Debug, Clone, Copy)]
pub(super) struct CacheState {
    /// Positions decoded (a prefix of the committed tokens, or beyond during a round).
    pub(super) kv: usize,
    /// Output row of the last decode whose logits follow position `kv − 1`, if valid.
    pub(super) last_row: Option<usize>,
}

pub(super) fn pick(scores: &[f32], s: &SamplingConfig, rng: &mut Rng) -> Token {
    if s.is_greedy() {
        argmax(scores)
    } else {
        s.distribution(scores).sample_with(rng.uniform())
    }
}

/// Generate up to `max_new` tokens after `prompt` with the models of `ctxs` (same
/// vocabulary, checked by the caller), calling `on_token` per committed token (return
/// `false` to stop). Stops at an end-of-generation token of the first model.
pub fn generate(
    ctxs: &mut [Context],
    prompt: &[Token],
    max_new: usize,
    cfg: &CollabConfig,
    on_token: &mut dyn FnMut(Token) -> bool,
) -> Result<CollabOutput, TargetError> {
    let t0 = Instant::now();
    let n_ctx = ctxs.iter().map(Context::n_ctx).min().unwrap_or(0);
    if prompt.len() >= n_ctx {
        return Err(TargetError::PromptTooLong {
            n_prompt: prompt.len(),
            n_ctx,
        });
    }
    let mut out = CollabOutput {
        tokens: Vec::new(),
        stop: "max tokens",
        stats: CollabStats {
            n_prompt: prompt.len(),
            proposer_rounds: vec![0; ctxs.len()],
            ..Default::default()
        },
    };
    for c in ctxs.iter_mut() {
        c.clear();
    }
    let mut rng = Rng::new(cfg.sampling.seed);
    match cfg.mode {
        CollabMode::Naive => naive(ctxs, prompt, max_new, cfg, &mut rng, on_token, &mut out)?,
        CollabMode::Cos => {
            super::cos::cos(ctxs, prompt, max_new, cfg, &mut rng, on_token, &mut out)?
        }
    }
    out.stats.n_generated = out.tokens.len();
    out.stats.seconds = t0.elapsed().as_secs_f64();
    Ok(out)
}

/// Commit `t`; returns whether generation goes on.
pub(super) fn commit(
    ctx0: &Context,
    t: Token,
    max_new: usize,
    out: &mut CollabOutput,
    on_token: &mut dyn FnMut(Token) -> bool,
) -> bool {
    out.tokens.push(t);
    if ctx0.model().is_eog(t) {
        out.stop = "end of generation";
        return false;
    }
    if !on_token(t) {
        out.stop = "stopped";
        return false;
    }
    if out.tokens.len() >= max_new {
        out.stop = "max tokens";
        return false;
    }
    true
}

fn naive(
    ctxs: &mut [Context],
    prompt: &[Token],
    max_new: usize,
    cfg: &CollabConfig,
    rng: &mut Rng,
    on_token: &mut dyn FnMut(Token) -> bool,
    out: &mut CollabOutput,
) -> Result<(), TargetError> {
    for c in ctxs.iter_mut() {
        c.decode(prompt, 0, Outputs::Last)?;
    }
    let mut scores = Vec::new();
    let mut pos = prompt.len();
    let n_ctx = ctxs.iter().map(Context::n_ctx).min().unwrap();
    loop {
        let rows: Vec<&[f32]> = ctxs.iter().map(|c| c.logits(0)).collect();
        cfg.combine.scores(&rows, &mut scores);
        let t = pick(&scores, &cfg.sampling, rng);
        out.stats.rounds += 1;
        if !commit(&ctxs[0], t, max_new, out, on_token) {
            return Ok(());
        }
        if pos >= n_ctx {
            out.stop = "context full";
            return Ok(());
        }
        for c in ctxs.iter_mut() {
            c.decode(&[t], pos, Outputs::Last)?;
        }
        pos += 1;
    }
}
