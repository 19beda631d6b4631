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
use crate::sampling::{Dist, Rng, SamplingConfig, argmax};
use crate::verify::{greedy_check, sampling_check};

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
struct CacheState {
    /// Positions decoded (a prefix of the committed tokens, or beyond during a round).
    kv: usize,
    /// Output row of the last decode whose logits follow position `kv − 1`, if valid.
    last_row: Option<usize>,
}

fn pick(scores: &[f32], s: &SamplingConfig, rng: &mut Rng) -> Token {
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
        CollabMode::Cos => cos(ctxs, prompt, max_new, cfg, &mut rng, on_token, &mut out)?,
    }
    out.stats.n_generated = out.tokens.len();
    out.stats.seconds = t0.elapsed().as_secs_f64();
    Ok(out)
}

/// Commit `t`; returns whether generation goes on.
fn commit(
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

#[allow(clippy::too_many_arguments)]
fn cos(
    ctxs: &mut [Context],
    prompt: &[Token],
    max_new: usize,
    cfg: &CollabConfig,
    rng: &mut Rng,
    on_token: &mut dyn FnMut(Token) -> bool,
    out: &mut CollabOutput,
) -> Result<(), TargetError> {
    let m = ctxs.len();
    let n_ctx = ctxs.iter().map(Context::n_ctx).min().unwrap();
    let n_batch = ctxs.iter().map(Context::n_batch).min().unwrap();
    let greedy = cfg.sampling.is_greedy();
    let mut hist: Vec<Token> = prompt.to_vec();
    let mut st = vec![
        CacheState {
            kv: 0,
            last_row: None
        };
        m
    ];
    let mut turn = 0usize;
    let mut scores = Vec::new();
    // Per round: the proposer's logits before each draft token, and its q.
    let mut p_rows: Vec<Vec<f32>> = Vec::new();
    let mut q: Vec<Dist> = Vec::new();
    // Per verifier: a copy of its cached first row when it had one.
    let mut first_rows: Vec<Option<Vec<f32>>> = vec![None; m];
    loop {
        let n = hist.len();
        if n >= n_ctx {
            out.stop = "context full";
            return Ok(());
        }
        let room = (n_ctx - n).min(max_new.saturating_sub(out.tokens.len()));
        if room == 0 {
            return Ok(());
        }
        let gamma = cfg.draft_len.max(1).min(room).min(n_batch - 1);

        // The proposer: one that already predicts position n, else the next in turn.
        let p = (0..m)
            .map(|k| (turn + k) % m)
            .find(|&k| st[k].kv == n && st[k].last_row.is_some())
            .unwrap_or(turn % m);
        turn = p + 1;
        out.stats.proposer_rounds[p] += 1;
        out.stats.rounds += 1;
        catch_up(&mut ctxs[p], &mut st[p], &hist)?;

        // Draft γ tokens from the proposer's own distribution.
        p_rows.clear();
        q.clear();
        let mut draft: Vec<Token> = Vec::with_capacity(gamma);
        for i in 0..gamma {
            let row = ctxs[p].logits(st[p].last_row.expect("caught up")).to_vec();
            let d = cfg.sampling.distribution(&row);
            let t = if greedy {
                d.items[0].0
            } else {
                d.sample_with(rng.uniform())
            };
            p_rows.push(row);
            q.push(d);
            draft.push(t);
            if i + 1 == gamma || ctxs[0].model().is_eog(t) {
                break;
            }
            ctxs[p].decode(&[t], n + i, Outputs::Last)?;
            st[p] = CacheState {
                kv: n + i + 1,
                last_row: Some(0),
            };
        }
        let g = draft.len();
        out.stats.proposed += g;

        // Every other model checks the whole draft in one batch.
        let mut offset = vec![0usize; m];
        for j in (0..m).filter(|&j| j != p) {
            first_rows[j] = None;
            if st[j].kv == n
                && let Some(r) = st[j].last_row
            {
                first_rows[j] = Some(ctxs[j].logits(r).to_vec());
                ctxs[j].decode(&draft, n, Outputs::All)?;
                st[j] = CacheState {
                    kv: n + g,
                    last_row: Some(g - 1),
                };
            } else {
                let from = st[j].kv.min(n - 1);
                ctxs[j].truncate(from)?;
                if from < n - 1 {
                    ctxs[j].decode(&hist[from..n - 1], from, Outputs::Last)?;
                }
                let mut batch = vec![hist[n - 1]];
                batch.extend_from_slice(&draft);
                ctxs[j].decode(&batch, n - 1, Outputs::All)?;
                offset[j] = 1;
                st[j] = CacheState {
                    kv: n + g,
                    last_row: Some(g),
                };
            }
        }

        // Judge position by position with the combined distribution.
        let mut accepted = 0;
        let mut replacement = None;
        for i in 0..g {
            let rows: Vec<&[f32]> = (0..m)
                .map(|j| -> &[f32] {
                    if j == p {
                        &p_rows[i]
                    } else if offset[j] == 0 && i == 0 {
                        first_rows[j].as_deref().expect("cached row")
                    } else {
                        ctxs[j].logits(i + offset[j] - 1)
                    }
                })
                .collect();
            cfg.combine.scores(&rows, &mut scores);
            let verdict = if greedy {
                greedy_check(argmax(&scores), draft[i])
            } else {
                let r = cfg.sampling.distribution(&scores);
                sampling_check(&r, &q[i], draft[i], rng)
            };
            match verdict {
                Ok(()) => accepted += 1,
                Err(t) => {
                    replacement = Some(t);
                    break;
                }
            }
        }
        out.stats.accepted += accepted;

        // Commit, and trim every cache to the committed prefix.
        let mut go_on = true;
        for &t in &draft[..accepted] {
            hist.push(t);
            if go_on {
                go_on = commit(&ctxs[0], t, max_new, out, on_token);
            }
        }
        if let Some(t) = replacement {
            let keep = hist.len();
            for (c, s) in ctxs.iter_mut().zip(st.iter_mut()) {
                if s.kv > keep {
                    c.truncate(keep)?;
                }
                *s = CacheState {
                    kv: s.kv.min(keep),
                    last_row: None,
                };
            }
            hist.push(t);
            if go_on {
                go_on = commit(&ctxs[0], t, max_new, out, on_token);
            }
        } else {
            // Whole draft accepted: the verifiers predict the next position already; the
            // proposer has not decoded its last draft token.
            st[p].last_row = None;
        }
        if !go_on {
            return Ok(());
        }
    }
}

/// Bring a model's cache up to all committed tokens with logits for the next position.
fn catch_up(ctx: &mut Context, s: &mut CacheState, hist: &[Token]) -> Result<(), TargetError> {
    let n = hist.len();
    if s.kv == n && s.last_row.is_some() {
        return Ok(());
    }
    let from = s.kv.min(n - 1);
    ctx.truncate(from)?;
    ctx.decode(&hist[from..], from, Outputs::Last)?;
    *s = CacheState {
        kv: n,
        last_row: Some(0),
    };
    Ok(())
}
