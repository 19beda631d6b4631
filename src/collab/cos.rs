//! The CoS loop (see `engine.rs` for the round): each round picks a proposer, drafts from
//! its own distribution, lets every other model check the draft in one batch, judges it
//! position by position with the combined distribution, commits and trims the caches.

use super::engine::{CacheState, CollabConfig, CollabOutput, commit};
use crate::llama::{Context, Outputs, TargetError, Token};
use crate::sampling::{Dist, Rng, argmax};
use crate::verify::{greedy_check, sampling_check};

/// The state CoS keeps across rounds.
struct Cos<'a> {
    cfg: &'a CollabConfig,
    greedy: bool,
    hist: Vec<Token>,
    st: Vec<CacheState>,
    turn: usize,
    scores: Vec<f32>,
    /// Per round: the proposer's logits before each draft token, and its q.
    p_rows: Vec<Vec<f32>>,
    q: Vec<Dist>,
    draft: Vec<Token>,
    /// Per verifier: a copy of its cached first row when it had one.
    first_rows: Vec<Option<Vec<f32>>>,
    /// Per verifier: 1 when its batch started with the last committed token.
    offset: Vec<usize>,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn cos(
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
    let mut c = Cos {
        cfg,
        greedy: cfg.sampling.is_greedy(),
        hist: prompt.to_vec(),
        st: vec![
            CacheState {
                kv: 0,
                last_row: None
            };
            m
        ],
        turn: 0,
        scores: Vec::new(),
        p_rows: Vec::new(),
        q: Vec::new(),
        draft: Vec::new(),
        first_rows: vec![None; m],
        offset: vec![0; m],
    };
    loop {
        let n = c.hist.len();
        if n >= n_ctx {
            out.stop = "context full";
            return Ok(());
        }
        let room = (n_ctx - n).min(max_new.saturating_sub(out.tokens.len()));
        if room == 0 {
            return Ok(());
        }
        let gamma = cfg.draft_len.max(1).min(room).min(n_batch - 1);
        let p = c.proposer();
        out.stats.proposer_rounds[p] += 1;
        out.stats.rounds += 1;
        c.propose(ctxs, p, gamma, rng)?;
        out.stats.proposed += c.draft.len();
        c.check(ctxs, p)?;
        let (accepted, replacement) = c.judge(ctxs, p, rng);
        out.stats.accepted += accepted;
        if !c.commit(ctxs, p, accepted, replacement, max_new, out, on_token)? {
            return Ok(());
        }
    }
}

impl Cos<'_> {
    /// One that already predicts the next position, else the next model in turn.
    fn proposer(&mut self) -> usize {
        let (m, n) = (self.st.len(), self.hist.len());
        let p = (0..m)
            .map(|k| (self.turn + k) % m)
            .find(|&k| self.st[k].kv == n && self.st[k].last_row.is_some())
            .unwrap_or(self.turn % m);
        self.turn = p + 1;
        p
    }

    /// Draft up to `gamma` tokens from the proposer's own distribution.
    fn propose(
        &mut self,
        ctxs: &mut [Context],
        p: usize,
        gamma: usize,
        rng: &mut Rng,
    ) -> Result<(), TargetError> {
        let n = self.hist.len();
        catch_up(&mut ctxs[p], &mut self.st[p], &self.hist)?;
        self.p_rows.clear();
        self.q.clear();
        self.draft.clear();
        for i in 0..gamma {
            let row = ctxs[p]
                .logits(self.st[p].last_row.expect("caught up"))
                .to_vec();
            let d = self.cfg.sampling.distribution(&row);
            let t = if self.greedy {
                d.items[0].0
            } else {
                d.sample_with(rng.uniform())
            };
            self.p_rows.push(row);
            self.q.push(d);
            self.draft.push(t);
            if i + 1 == gamma || ctxs[0].model().is_eog(t) {
                break;
            }
            ctxs[p].decode(&[t], n + i, Outputs::Last)?;
            self.st[p] = CacheState {
                kv: n + i + 1,
                last_row: Some(0),
            };
        }
        Ok(())
    }

    /// Every other model checks the whole draft in one batch.
    fn check(&mut self, ctxs: &mut [Context], p: usize) -> Result<(), TargetError> {
        let (n, g) = (self.hist.len(), self.draft.len());
        self.offset.iter_mut().for_each(|o| *o = 0);
        for j in (0..ctxs.len()).filter(|&j| j != p) {
            self.first_rows[j] = None;
            if self.st[j].kv == n
                && let Some(r) = self.st[j].last_row
            {
                self.first_rows[j] = Some(ctxs[j].logits(r).to_vec());
                ctxs[j].decode(&self.draft, n, Outputs::All)?;
                self.st[j] = CacheState {
                    kv: n + g,
                    last_row: Some(g - 1),
                };
            } else {
                let from = self.st[j].kv.min(n - 1);
                ctxs[j].truncate(from)?;
                if from < n - 1 {
                    ctxs[j].decode(&self.hist[from..n - 1], from, Outputs::Last)?;
                }
                let mut batch = vec![self.hist[n - 1]];
                batch.extend_from_slice(&self.draft);
                ctxs[j].decode(&batch, n - 1, Outputs::All)?;
                self.offset[j] = 1;
                self.st[j] = CacheState {
                    kv: n + g,
                    last_row: Some(g),
                };
            }
        }
        Ok(())
    }

    /// Judge the draft position by position with the combined distribution: how many
    /// tokens are accepted, and the replacement at the first rejection.
    fn judge(&mut self, ctxs: &[Context], p: usize, rng: &mut Rng) -> (usize, Option<Token>) {
        let m = ctxs.len();
        for i in 0..self.draft.len() {
            let rows: Vec<&[f32]> = (0..m)
                .map(|j| -> &[f32] {
                    if j == p {
                        &self.p_rows[i]
                    } else if self.offset[j] == 0 && i == 0 {
                        self.first_rows[j].as_deref().expect("cached row")
                    } else {
                        ctxs[j].logits(i + self.offset[j] - 1)
                    }
                })
                .collect();
            self.cfg.combine.scores(&rows, &mut self.scores);
            let verdict = if self.greedy {
                greedy_check(argmax(&self.scores), self.draft[i])
            } else {
                let r = self.cfg.sampling.distribution(&self.scores);
                sampling_check(&r, &self.q[i], self.draft[i], rng)
            };
            if let Err(t) = verdict {
                return (i, Some(t));
            }
        }
        (self.draft.len(), None)
    }

    /// Commit the accepted tokens (and the replacement), trimming every cache to the
    /// committed prefix; returns whether generation goes on.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &mut self,
        ctxs: &mut [Context],
        p: usize,
        accepted: usize,
        replacement: Option<Token>,
        max_new: usize,
        out: &mut CollabOutput,
        on_token: &mut dyn FnMut(Token) -> bool,
    ) -> Result<bool, TargetError> {
        let mut go_on = true;
        for &t in &self.draft[..accepted] {
            self.hist.push(t);
            if go_on {
                go_on = commit(&ctxs[0], t, max_new, out, on_token);
            }
        }
        if let Some(t) = replacement {
            let keep = self.hist.len();
            for (c, s) in ctxs.iter_mut().zip(self.st.iter_mut()) {
                if s.kv > keep {
                    c.truncate(keep)?;
                }
                *s = CacheState {
                    kv: s.kv.min(keep),
                    last_row: None,
                };
            }
            self.hist.push(t);
            if go_on {
                go_on = commit(&ctxs[0], t, max_new, out, on_token);
            }
        } else {
            // Whole draft accepted: the verifiers predict the next position already; the
            // proposer has not decoded its last draft token.
            self.st[p].last_row = None;
        }
        Ok(go_on)
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
