//! The speculative loop: draft → verify in one batched decode → keep the accepted prefix,
//! roll the rest out of the KV cache → stream.
//!
//! Invariant between rounds: the KV cache holds exactly `history[..len-1]` (prompt plus
//! every committed token except the newest, which is fed as the first row of the next
//! verification batch).

#[cfg(test)]
mod mock;
pub mod policy;
mod rows;
pub mod target;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rows::RoundRows;

pub use policy::{DraftPolicy, FailFast, FixedPolicy, Outcome, PolicyKind, PolicyMemory};
pub use target::Target;

use crate::draft::{Draft, Drafter};
use crate::head::OutputHead;
use crate::llama::{Outputs, TargetError, Token};
use crate::sampling::{Dist, Rng, SamplingConfig, argmax, argmax_margin};
use crate::verify::{greedy_check, sampling_check};

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
        }
    }
}

/// Why a generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The target produced an end-of-generation token.
    Eog,
    /// `max_tokens` reached.
    MaxTokens,
    /// The context window is full.
    ContextFull,
    /// The token callback asked to stop.
    Cancelled,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::Eog => "end of generation",
            StopReason::MaxTokens => "max tokens",
            StopReason::ContextFull => "context full",
            StopReason::Cancelled => "cancelled",
        })
    }
}

/// What a generation did and where its time went.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    /// Prompt length (tokens).
    pub n_prompt: usize,
    /// Tokens emitted.
    pub n_generated: usize,
    /// Verification decodes (one per round; plain decoding = one per token).
    pub rounds: usize,
    /// Draft tokens proposed, over all rounds.
    pub drafted: usize,
    /// Draft tokens accepted, over all rounds.
    pub accepted: usize,
    /// `drafted_at[i]`: rounds whose draft had a token at position i; `accepted_at[i]`:
    /// rounds that kept it.
    pub drafted_at: Vec<usize>,
    /// Per draft position: rounds that kept the token there (see `drafted_at`).
    pub accepted_at: Vec<usize>,
    /// `k_hist[k]`: rounds that verified a draft of k tokens (k = 0: plain steps).
    pub k_hist: Vec<usize>,
    /// Prompt prefill time (the drafter's first feature injection included).
    pub prefill: Duration,
    /// Drafting time, feature injection included.
    pub draft: Duration,
    /// Target decode time of verification batches.
    pub verify: Duration,
    /// Part of `verify` spent in Tandem's lazy output head.
    pub head: Duration,
    /// Everything else in the loop (acceptance checks, sampling, bookkeeping, callbacks).
    pub overhead: Duration,
    /// Wall time of the whole generation, prefill included.
    pub total: Duration,
}

impl Stats {
    /// Tokens per second over the generation phase (prefill excluded).
    pub fn tokens_per_s(&self) -> f64 {
        let t = (self.total - self.prefill).as_secs_f64();
        if t > 0.0 {
            self.n_generated as f64 / t
        } else {
            0.0
        }
    }

    /// Mean tokens emitted per verification decode (accepted + the target's own token).
    pub fn tokens_per_round(&self) -> f64 {
        if self.rounds == 0 {
            0.0
        } else {
            self.n_generated as f64 / self.rounds as f64
        }
    }

    /// Fraction of drafted tokens that were accepted (0 if none were drafted).
    pub fn acceptance_rate(&self) -> f64 {
        if self.drafted == 0 {
            0.0
        } else {
            self.accepted as f64 / self.drafted as f64
        }
    }

    /// Mean draft length verified per round (plain steps count as 0).
    pub fn mean_k(&self) -> f64 {
        if self.rounds == 0 {
            0.0
        } else {
            self.drafted as f64 / self.rounds as f64
        }
    }

    fn record_round(&mut self, drafted: usize, accepted: usize) {
        if self.k_hist.len() <= drafted {
            self.k_hist.resize(drafted + 1, 0);
        }
        self.k_hist[drafted] += 1;
        if self.drafted_at.len() < drafted {
            self.drafted_at.resize(drafted, 0);
            self.accepted_at.resize(drafted, 0);
        }
        for i in 0..drafted {
            self.drafted_at[i] += 1;
            if i < accepted {
                self.accepted_at[i] += 1;
            }
        }
        self.drafted += drafted;
        self.accepted += accepted;
        self.rounds += 1;
    }
}

/// The result of [`generate`]: emitted tokens, why it stopped, and statistics.
#[derive(Debug, Clone)]
pub struct Generation {
    /// The emitted tokens (the end-of-generation token excluded).
    pub tokens: Vec<Token>,
    /// Why generation stopped.
    pub stop: StopReason,
    /// Counters and timings.
    pub stats: Stats,
    /// Top-2 logit margin of the target at each emitted token (if recorded).
    pub margins: Vec<f32>,
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
/// it is committed (return `false` to stop). The KV cache is cleared first.
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
    let mut stats = Stats {
        n_prompt: prompt.len(),
        ..Stats::default()
    };
    let mut margins = Vec::new();
    let mut rng = Rng::new(cfg.sampling.seed);
    let greedy = cfg.sampling.is_greedy();
    let max_batch = ctx.n_batch();

    ctx.clear();
    policy.begin(prompt);
    // Drafters conditioned on the target's hidden states get them from these same decodes.
    let wants_features = !policy.feature_layers().is_empty();
    ctx.set_feature_layers(policy.feature_layers())?;
    let mut features: Vec<f32> = Vec::new();
    ctx.decode(prompt, 0, Outputs::Last)?;
    if wants_features {
        ctx.features_into(0..prompt.len(), &mut features)?;
        policy.observe(0, &features);
    }
    stats.prefill = t0.elapsed();

    let mut history: Vec<Token> = prompt.to_vec();
    let mut generated: Vec<Token> = Vec::new();
    let mut draft = Draft::default();
    let mut batch: Vec<Token> = Vec::with_capacity(cfg.draft_max + 1);
    let mut p = Dist::default();
    let mut emit: Vec<Token> = Vec::with_capacity(cfg.draft_max + 1);
    let mut logit_bufs: Vec<Vec<f32>> = Vec::new();

    // The first token comes from the prompt's last logits.
    let first = pick(ctx.logits(0), &cfg.sampling, &mut rng, &mut p, greedy);
    if cfg.record_margins && greedy {
        margins.push(argmax_margin(ctx.logits(0)).1);
    }
    emit.push(first);

    let stop = loop {
        // Commit this round's tokens, stopping at EOG / max / cancel.
        let mut stop = None;
        for &t in &emit {
            if ctx.is_eog(t) {
                stop = Some(StopReason::Eog);
                break;
            }
            generated.push(t);
            history.push(t);
            if !on_token(t) {
                stop = Some(StopReason::Cancelled);
                break;
            }
            if generated.len() >= max_new {
                stop = Some(StopReason::MaxTokens);
                break;
            }
        }
        if let Some(s) = stop {
            break s;
        }
        emit.clear();

        // KV holds history[..len-1]; the newest token is decoded now with the draft.
        let pos = history.len() - 1;
        if cfg.check_kv && ctx.kv_len() != pos {
            return Err(EngineError::KvMismatch {
                got: ctx.kv_len(),
                want: pos,
            });
        }
        if pos + 1 > ctx.n_ctx() {
            break StopReason::ContextFull;
        }
        let room = ctx.n_ctx() - pos - 1;
        // A round emits at most k + 1 tokens; never draft past max_new.
        let k = cfg
            .draft_max
            .min(room)
            .min(max_batch - 1)
            .min(max_new - generated.len() - 1);

        let td = Instant::now();
        draft.clear();
        if k > 0 {
            policy.draft(&history, k, &cfg.sampling, &mut draft);
            draft.truncate(k);
        }
        stats.draft += td.elapsed();

        batch.clear();
        batch.push(history[pos]);
        batch.extend_from_slice(&draft.tokens);
        // The lazy head only pays when there is a draft to check.
        let head = cfg.lazy_head.as_deref().filter(|_| !draft.is_empty());
        let tv = Instant::now();
        ctx.decode(
            &batch,
            pos,
            if head.is_some() {
                Outputs::Hidden
            } else {
                Outputs::All
            },
        )?;
        stats.verify += tv.elapsed();

        // Accept the longest agreeing prefix; the row after it gives the next token.
        // First lazy pass: the configured minimum, or more when rounds have been accepting
        // long runs (mean accepted per round + the row after them).
        let mean_run = stats.accepted.div_ceil(stats.rounds.max(1));
        let first_group = cfg.lazy_group.max(mean_run + 1);
        let mut rows = RoundRows::new(ctx, head, batch.len(), first_group, &mut logit_bufs);
        let mut n_acc = 0;
        let mut next = None;
        for (i, &x) in draft.tokens.iter().enumerate() {
            if cfg.record_margins && greedy {
                margins.push(argmax_margin(rows.logits(i)).1);
            }
            let verdict = if greedy {
                greedy_check(rows.argmax(i), x)
            } else {
                cfg.sampling.distribution_into(rows.logits(i), &mut p);
                let point;
                let q = match &draft.q[i] {
                    Some(q) => q,
                    None => {
                        point = Dist::point(x);
                        &point
                    }
                };
                sampling_check(&p, q, x, &mut rng)
            };
            match verdict {
                Ok(()) => {
                    emit.push(x);
                    n_acc += 1;
                }
                Err(t) => {
                    next = Some(t);
                    break;
                }
            }
        }
        let next = match next {
            Some(t) => t,
            None => {
                if cfg.record_margins && greedy {
                    margins.push(argmax_margin(rows.logits(n_acc)).1);
                }
                if greedy {
                    rows.argmax(n_acc)
                } else {
                    pick(rows.logits(n_acc), &cfg.sampling, &mut rng, &mut p, false)
                }
            }
        };
        stats.head += rows.head_time;
        stats.verify += rows.head_time;
        emit.push(next);
        stats.record_round(draft.len(), n_acc);
        policy.outcome(
            &draft,
            Outcome {
                drafted: draft.len(),
                accepted: n_acc,
                verify: tv.elapsed(),
            },
        );
        if wants_features {
            let to = Instant::now();
            ctx.features_into(0..n_acc + 1, &mut features)?;
            policy.observe(pos, &features);
            stats.draft += to.elapsed();
        }

        // Roll back the rejected tail: keep the fed token and the accepted drafts.
        if n_acc < draft.len() {
            ctx.truncate(pos + 1 + n_acc)?;
        }
    };

    if cfg.record_margins {
        margins.truncate(generated.len());
    }
    stats.n_generated = generated.len();
    stats.total = t0.elapsed();
    stats.overhead = stats
        .total
        .saturating_sub(stats.prefill + stats.draft + stats.verify);
    Ok(Generation {
        tokens: generated,
        stop,
        stats,
        margins,
    })
}

fn pick(row: &[f32], s: &SamplingConfig, rng: &mut Rng, scratch: &mut Dist, greedy: bool) -> Token {
    if greedy {
        argmax(row)
    } else {
        s.distribution_into(row, scratch);
        scratch.sample_with(rng.uniform())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_statistics_accumulate_per_position() {
        let mut s = Stats::default();
        s.record_round(3, 1);
        s.record_round(2, 2);
        s.record_round(0, 0);
        assert_eq!(s.drafted_at, vec![2, 2, 1]);
        assert_eq!(s.accepted_at, vec![2, 1, 0]);
        assert_eq!((s.drafted, s.accepted, s.rounds), (5, 3, 3));
        s.n_generated = 6;
        assert!((s.tokens_per_round() - 2.0).abs() < 1e-12);
        assert!((s.acceptance_rate() - 0.6).abs() < 1e-12);
    }
}
