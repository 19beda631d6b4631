//! One generation's state and the steps of its loop: prefill, commit, draft, verify
//! (accept, the next token, roll back), each a method so the loop in `run` reads as the
//! algorithm.

use std::time::{Duration, Instant};

use super::rows::RoundRows;
use super::{
    DraftPolicy, EngineConfig, EngineError, Generation, Outcome, Stats, StopReason, Target,
};
use crate::draft::Draft;
use crate::llama::{Grammar, Outputs, Token};
use crate::sampling::{Dist, Rng, SamplingConfig, argmax, argmax_margin};
use crate::verify::{greedy_check, sampling_check};

/// The loop's state. Invariant between rounds: the KV cache holds `history[..len-1]`.
pub(super) struct Round<'c> {
    cfg: &'c EngineConfig,
    pub(super) history: Vec<Token>,
    pub(super) generated: Vec<Token>,
    pub(super) stats: Stats,
    margins: Vec<f32>,
    rng: Rng,
    greedy: bool,
    wants_features: bool,
    features: Vec<f32>,
    draft: Draft,
    batch: Vec<Token>,
    p: Dist,
    /// Tokens this round decided, to be committed.
    emit: Vec<Token>,
    logit_bufs: Vec<Vec<f32>>,
    /// The grammar's state after the committed tokens (and this round's accepted ones).
    grammar: Option<Grammar>,
    /// Scratch for a masked logit row.
    masked: Vec<f32>,
    /// The policy's share of this round's draft (`None`: the policy was not asked); the
    /// rest is text the grammar forced.
    policy_span: Option<std::ops::Range<usize>>,
    /// Scratch: the policy's draft before merging, and the history + forced text.
    policy_draft: Draft,
    ctx_scratch: Vec<Token>,
}

impl<'c> Round<'c> {
    pub(super) fn new(cfg: &'c EngineConfig, prompt: &[Token]) -> Self {
        Self {
            cfg,
            history: prompt.to_vec(),
            generated: Vec::new(),
            stats: Stats {
                n_prompt: prompt.len(),
                ..Stats::default()
            },
            margins: Vec::new(),
            rng: Rng::new(cfg.sampling.seed),
            greedy: cfg.sampling.is_greedy(),
            wants_features: false,
            features: Vec::new(),
            draft: Draft::default(),
            batch: Vec::with_capacity(cfg.draft_max + 1),
            p: Dist::default(),
            emit: Vec::with_capacity(cfg.draft_max + 1),
            logit_bufs: Vec::new(),
            grammar: cfg.grammar.as_ref().map(|g| (**g).clone()),
            masked: Vec::new(),
            policy_span: None,
            policy_draft: Draft::default(),
            ctx_scratch: Vec::new(),
        }
    }

    /// Clear the cache (or cut it to the reused prefix), decode the rest of the prompt in
    /// chunks (its features to the policy's drafters) and pick the first token from its
    /// last logits; `false` when cancelled before the prompt was read.
    pub(super) fn prefill<T: Target + ?Sized>(
        &mut self,
        ctx: &mut T,
        policy: &mut dyn DraftPolicy,
        prompt: &[Token],
    ) -> Result<bool, EngineError> {
        // Drafters conditioned on the target's hidden states get them from these same
        // decodes (the reused prefix's came with the generation that computed it).
        self.wants_features = !policy.feature_layers().is_empty();
        let emptied = ctx.set_feature_layers(policy.feature_layers())?;
        let reuse = match emptied {
            true => 0,
            false => self.cfg.reuse_prefix.min(prompt.len() - 1),
        };
        if reuse == 0 {
            ctx.clear();
        } else {
            ctx.truncate(reuse)?;
        }
        policy.begin(prompt);
        // Chunk by chunk, so that a cancelled request stops within one chunk.
        let step = ctx.n_batch().max(1);
        let mut pos = reuse;
        while pos < prompt.len() {
            if self.cfg.cancel.as_ref().is_some_and(|c| c.is_set()) {
                ctx.truncate(pos)?;
                return Ok(false);
            }
            let end = (pos + step).min(prompt.len());
            ctx.decode(&prompt[pos..end], pos, Outputs::Last)?;
            if self.wants_features {
                ctx.features_into(0..end - pos, &mut self.features)?;
                policy.observe(pos, &self.features);
            }
            self.stats.prompt_processed += end - pos;
            pos = end;
        }
        let first = pick(
            ctx.logits(0),
            &self.cfg.sampling,
            &mut self.rng,
            &mut self.p,
            self.greedy,
            &mut self.grammar,
            &mut self.masked,
        );
        if self.cfg.record_margins && self.greedy {
            self.margins
                .push(margin(ctx.logits(0), &mut self.grammar, &mut self.masked));
        }
        if let Some(g) = self.grammar.as_mut().filter(|_| !ctx.is_eog(first)) {
            g.accept(first);
        }
        self.emit.push(first);
        Ok(true)
    }

    /// Commit this round's tokens, stopping at end of generation, `max_new` or a callback
    /// that says stop.
    pub(super) fn commit<T: Target + ?Sized>(
        &mut self,
        ctx: &T,
        max_new: usize,
        on_token: &mut dyn FnMut(Token) -> bool,
    ) -> Option<StopReason> {
        let mut stop = None;
        for &t in &self.emit {
            if ctx.is_eog(t) {
                stop = Some(StopReason::Eog);
                break;
            }
            self.generated.push(t);
            self.history.push(t);
            if !on_token(t) || self.cfg.cancel.as_ref().is_some_and(|c| c.is_set()) {
                stop = Some(StopReason::Cancelled);
                break;
            }
            if self.generated.len() >= max_new {
                stop = Some(StopReason::MaxTokens);
                break;
            }
        }
        self.emit.clear();
        stop
    }

    /// Ask the policy for at most `k` draft tokens.
    /// Under a grammar the draft is merged with the text the grammar alone determines (a
    /// key name, `":`, closing brackets), drafted at no cost as point masses outside the
    /// policy's calibration: forced text first, then the policy's tokens (lookups see the
    /// forced text as context) as far as the grammar allows them, then the text forced
    /// after those.
    pub(super) fn draft(&mut self, policy: &mut dyn DraftPolicy, k: usize) {
        let td = Instant::now();
        self.draft.clear();
        self.policy_span = None;
        if k > 0 {
            match self.grammar.as_mut().filter(|_| self.cfg.forced_drafts) {
                None => {
                    policy.draft(&self.history, k, &self.cfg.sampling, &mut self.draft);
                    self.draft.truncate(k);
                    self.policy_span = Some(0..self.draft.len());
                }
                Some(g) => {
                    let mut g = g.clone();
                    let greedy = self.greedy;
                    let d = &mut self.draft;
                    let mut forced = g.forced_tokens(k);
                    // A tokenizer may render forced text with tokens the grammar does not
                    // take one by one (a SentencePiece space prefix): draft what it allows.
                    for i in 0..forced.len() {
                        if !g.allows(forced[i]) {
                            forced.truncate(i);
                            break;
                        }
                        d.push_point(forced[i]);
                        g.accept(forced[i]);
                    }
                    let room = k - d.len();
                    if room > 0 {
                        let ctx: &[Token] = if forced.is_empty() {
                            &self.history
                        } else {
                            self.ctx_scratch.clear();
                            self.ctx_scratch.extend_from_slice(&self.history);
                            self.ctx_scratch.extend_from_slice(&forced);
                            &self.ctx_scratch
                        };
                        let pd = &mut self.policy_draft;
                        pd.clear();
                        policy.draft(ctx, room, &self.cfg.sampling, pd);
                        pd.truncate(room);
                        let start = d.len();
                        let mut open = true;
                        for i in 0..pd.len() {
                            let t = pd.tokens[i];
                            let allowed = g.allows(t);
                            // A token the grammar forbids is certainly rejected. Greedy
                            // drops it; sampling keeps it (its rejection draws from the
                            // residual, which exactness needs) and drafts nothing after.
                            if allowed || !greedy {
                                d.tokens.push(t);
                                d.q.push(pd.q[i].take());
                                d.confidence.push(pd.confidence[i]);
                            }
                            if !allowed || g.is_eog(t) {
                                open = false;
                                break;
                            }
                            g.accept(t);
                        }
                        d.match_len = pd.match_len;
                        d.seen = pd.seen;
                        self.policy_span = Some(start..d.len());
                        if open && d.len() > start && d.len() < k {
                            for t in g.forced_tokens(k - d.len()) {
                                if !g.allows(t) {
                                    break;
                                }
                                d.push_point(t);
                                g.accept(t);
                            }
                        }
                    }
                    self.stats.forced +=
                        self.draft.len() - self.policy_span.as_ref().map_or(0, |r| r.len());
                }
            }
        }
        self.stats.draft += td.elapsed();
    }

    /// Decode the newest token with the draft in one batch, accept the longest agreeing
    /// prefix, take the target's token after it, tell the policy, hand the drafters the
    /// committed positions' features and roll the rejected tail out of the cache.
    pub(super) fn verify<T: Target + ?Sized>(
        &mut self,
        ctx: &mut T,
        policy: &mut dyn DraftPolicy,
    ) -> Result<(), EngineError> {
        let cfg = self.cfg;
        let pos = self.history.len() - 1;
        self.batch.clear();
        self.batch.push(self.history[pos]);
        self.batch.extend_from_slice(&self.draft.tokens);
        // The lazy head only pays when there is a draft to check.
        let head = cfg.lazy_head.as_deref().filter(|_| !self.draft.is_empty());
        let tv = Instant::now();
        let outputs = if head.is_some() {
            Outputs::Hidden
        } else {
            Outputs::All
        };
        ctx.decode(&self.batch, pos, outputs)?;
        self.stats.verify += tv.elapsed();

        // First lazy pass: the configured minimum, or more when rounds have been accepting
        // long runs (mean accepted per round + the row after them).
        let mean_run = self.stats.accepted.div_ceil(self.stats.rounds.max(1));
        let first_group = cfg.lazy_group.max(mean_run + 1);
        let mut rows = RoundRows::new(
            &*ctx,
            head,
            self.batch.len(),
            first_group,
            &mut self.logit_bufs,
        );
        let (n_acc, next) = accept(
            &mut rows,
            &self.draft,
            cfg,
            self.greedy,
            &mut self.rng,
            &mut self.p,
            &mut self.margins,
            &mut self.emit,
            &mut self.grammar,
            &mut self.masked,
        );
        if let Some(g) = self.grammar.as_mut().filter(|_| !ctx.is_eog(next)) {
            g.accept(next);
        }
        let head_time = rows.head_time;
        self.stats.head += head_time;
        self.stats.verify += head_time;
        self.emit.push(next);
        self.stats.record_round(self.draft.len(), n_acc);
        // The policy learns from its own tokens only, and only when they were judged
        // (forced text before them was accepted).
        match self.policy_span.clone() {
            Some(span) if span.start == 0 && span.end == self.draft.len() => policy.outcome(
                &self.draft,
                Outcome {
                    drafted: self.draft.len(),
                    accepted: n_acc,
                    batch: self.batch.len(),
                    committed: n_acc + 1,
                    verify: tv.elapsed(),
                },
            ),
            Some(span) if n_acc >= span.start => {
                let mut own = self.draft.clone();
                own.tokens.drain(..span.start);
                own.q.drain(..span.start);
                own.confidence.drain(..span.start);
                own.truncate(span.len());
                policy.outcome(
                    &own,
                    Outcome {
                        drafted: span.len(),
                        accepted: (n_acc - span.start).min(span.len()),
                        batch: self.batch.len(),
                        committed: n_acc + 1,
                        verify: tv.elapsed(),
                    },
                );
            }
            _ => {}
        }
        if self.wants_features {
            let to = Instant::now();
            ctx.features_into(0..n_acc + 1, &mut self.features)?;
            policy.observe(pos, &self.features);
            self.stats.draft += to.elapsed();
        }
        // Roll back the rejected tail: keep the fed token and the accepted drafts.
        if n_acc < self.draft.len() {
            ctx.truncate(pos + 1 + n_acc)?;
        }
        Ok(())
    }

    /// The generation's result; `total` is its wall time.
    pub(super) fn finish(mut self, stop: StopReason, total: Duration) -> Generation {
        if self.cfg.record_margins {
            self.margins.truncate(self.generated.len());
        }
        let s = &mut self.stats;
        s.n_generated = self.generated.len();
        s.total = total;
        s.overhead = total.saturating_sub(s.prefill + s.draft + s.verify);
        Generation {
            tokens: self.generated,
            stop,
            stats: self.stats,
            margins: self.margins,
        }
    }
}

/// The target's greedy token at row `i` under the grammar: its plain argmax when the grammar
/// allows it (the common case: one check), else the argmax of the masked row.
fn constrained_argmax<T: Target + ?Sized>(
    rows: &mut RoundRows<'_, T>,
    i: usize,
    grammar: &mut Option<Grammar>,
    masked: &mut Vec<f32>,
) -> Token {
    let t = rows.argmax(i);
    let Some(g) = grammar.as_mut() else {
        return t;
    };
    if g.allows(t) {
        return t;
    }
    best_allowed(rows.logits(i), g, masked)
}

/// The argmax of `row` among the tokens the grammar allows. It is usually among the row's
/// best few: those are checked one by one in order of logit, the full-vocabulary mask
/// (20 ms on gemma3's 262k tokens) only when none of them is allowed.
fn best_allowed(row: &[f32], g: &mut Grammar, masked: &mut Vec<f32>) -> Token {
    match top_k(row).into_iter().find(|&(_, t)| g.allows(t as Token)) {
        Some((_, t)) => t as Token,
        None => argmax(masked_copy(g, row, masked)),
    }
}

/// How many of a row's best logits are checked against the grammar one by one.
const TOP_K: usize = 16;

/// The row's [`TOP_K`] largest logits with their tokens, best first (equal logits in
/// token order, as [`argmax`] breaks ties): one pass over the row.
fn top_k(row: &[f32]) -> Vec<(f32, usize)> {
    let mut top: Vec<(f32, usize)> = Vec::with_capacity(TOP_K + 1);
    for (i, &l) in row.iter().enumerate() {
        if top.len() < TOP_K || l > top[TOP_K - 1].0 {
            let at = top.partition_point(|&(x, _)| x >= l);
            top.insert(at, (l, i));
            top.truncate(TOP_K);
        }
    }
    top
}

/// The greedy margin of `row` (top logit minus the runner-up) among the tokens the grammar
/// allows, the two looked for among the row's best first (a full-vocabulary mask costs a
/// whole target step on gemma3). When only one of those is allowed and it stands at least
/// [`CLEAR_MARGIN`] above the rest, that lower bound is returned: no near-tie either way.
fn margin(row: &[f32], grammar: &mut Option<Grammar>, scratch: &mut Vec<f32>) -> f32 {
    let Some(g) = grammar.as_mut() else {
        return argmax_margin(row).1;
    };
    let top = top_k(row);
    let mut allowed = top.iter().filter(|&&(_, t)| g.allows(t as Token));
    match (allowed.next(), allowed.next()) {
        (Some(a), Some(b)) => a.0 - b.0,
        (Some(a), None) if top.len() == TOP_K && a.0 - top[TOP_K - 1].0 >= CLEAR_MARGIN => {
            a.0 - top[TOP_K - 1].0
        }
        _ => argmax_margin(masked_copy(g, row, scratch)).1,
    }
}

/// A margin no batched-rounding difference comes near (logits).
const CLEAR_MARGIN: f32 = 1.0;

/// `row` copied into `scratch` with the tokens the grammar forbids set to −∞.
fn masked_copy<'s>(g: &mut Grammar, row: &[f32], scratch: &'s mut Vec<f32>) -> &'s [f32] {
    scratch.clear();
    scratch.extend_from_slice(row);
    g.mask(scratch);
    scratch
}

/// Row `i`'s logits, masked by the grammar if there is one.
fn constrained_row<'r, T: Target + ?Sized>(
    rows: &'r mut RoundRows<'_, T>,
    i: usize,
    grammar: &mut Option<Grammar>,
    masked: &'r mut Vec<f32>,
) -> &'r [f32] {
    match grammar {
        Some(g) => masked_copy(g, rows.logits(i), masked),
        None => rows.logits(i),
    }
}

/// The acceptance check over one round's rows: accepted draft tokens go to `emit` (and
/// into the grammar's state); returns how many were accepted and the target's own next
/// token (the rejection's replacement, or the token after a fully accepted draft). Under a
/// grammar the target's distribution at each position is masked by the state reached
/// through the accepted prefix; a drafted token the grammar forbids has p = 0 and is
/// rejected, and the residual holds only allowed tokens, so the output follows exactly the
/// masked target distribution (q needs no mask).
#[allow(clippy::too_many_arguments)]
fn accept<T: Target + ?Sized>(
    rows: &mut RoundRows<'_, T>,
    draft: &Draft,
    cfg: &EngineConfig,
    greedy: bool,
    rng: &mut Rng,
    p: &mut Dist,
    margins: &mut Vec<f32>,
    emit: &mut Vec<Token>,
    grammar: &mut Option<Grammar>,
    masked: &mut Vec<f32>,
) -> (usize, Token) {
    let mut n_acc = 0;
    for (i, &x) in draft.tokens.iter().enumerate() {
        if cfg.record_margins && greedy {
            margins.push(margin(rows.logits(i), grammar, masked));
        }
        let verdict = if greedy {
            greedy_check(constrained_argmax(rows, i, grammar, masked), x)
        } else {
            let row = constrained_row(rows, i, grammar, masked);
            cfg.sampling.distribution_into(row, p);
            let point;
            let q = match &draft.q[i] {
                Some(q) => q,
                None => {
                    point = Dist::point(x);
                    &point
                }
            };
            sampling_check(p, q, x, rng)
        };
        match verdict {
            Ok(()) => {
                emit.push(x);
                if let Some(g) = grammar.as_mut() {
                    g.accept(x);
                }
                n_acc += 1;
            }
            Err(t) => return (n_acc, t),
        }
    }
    if cfg.record_margins && greedy {
        margins.push(margin(rows.logits(n_acc), grammar, masked));
    }
    let next = if greedy {
        constrained_argmax(rows, n_acc, grammar, masked)
    } else {
        let row = constrained_row(rows, n_acc, grammar, masked);
        cfg.sampling.distribution_into(row, p);
        p.sample_with(rng.uniform())
    };
    (n_acc, next)
}

/// The first token, from the prefill's last logits (masked by the grammar, if any).
#[allow(clippy::too_many_arguments)]
fn pick(
    row: &[f32],
    s: &SamplingConfig,
    rng: &mut Rng,
    scratch: &mut Dist,
    greedy: bool,
    grammar: &mut Option<Grammar>,
    masked: &mut Vec<f32>,
) -> Token {
    let row = match grammar {
        Some(g) if greedy => {
            let t = argmax(row);
            return if g.allows(t) {
                t
            } else {
                best_allowed(row, g, masked)
            };
        }
        Some(g) => masked_copy(g, row, masked),
        None => row,
    };
    if greedy {
        argmax(row)
    } else {
        s.distribution_into(row, scratch);
        scratch.sample_with(rng.uniform())
    }
}
