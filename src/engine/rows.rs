//! A verification round's per-position target outputs, from llama.cpp's logits or,
//! lazily, from Tandem's own output head: positions are computed only when the acceptance
//! check reaches them, a few at a time, so nothing is spent after the first rejection.

use std::time::{Duration, Instant};

use super::Target;
use crate::head::OutputHead;
use crate::llama::Token;
use crate::sampling::argmax;

pub struct RoundRows<'a, T: Target + ?Sized> {
    ctx: &'a T,
    head: Option<&'a OutputHead>,
    n_rows: usize,
    group: usize,
    greedy: Vec<Option<Token>>,
    logits: &'a mut Vec<Vec<f32>>,
    have_logits: Vec<bool>,
    /// Time spent in the lazy head.
    pub head_time: Duration,
}

impl<'a, T: Target + ?Sized> RoundRows<'a, T> {
    /// `head`: the lazy head if the last decode was `Outputs::Hidden`, else `None`.
    /// `group`: positions in the first greedy head pass. A pass reads the whole head once,
    /// so a pass over g positions costs much less than g passes (gemma3-270m, 2 threads:
    /// ~10 ms for 1 or 2 positions, ~16 ms for 4, ~55 ms for 16); each later pass doubles
    /// the group, since a draft that survived so far is likely to go on surviving.
    pub fn new(
        ctx: &'a T,
        head: Option<&'a OutputHead>,
        n_rows: usize,
        group: usize,
        logits: &'a mut Vec<Vec<f32>>,
    ) -> Self {
        if logits.len() < n_rows {
            logits.resize_with(n_rows, Vec::new);
        }
        Self {
            ctx,
            head,
            n_rows,
            group: group.max(1),
            greedy: vec![None; n_rows],
            logits,
            have_logits: vec![false; n_rows],
            head_time: Duration::ZERO,
        }
    }

    /// The target's greedy token at position `i`.
    pub fn argmax(&mut self, i: usize) -> Token {
        if let Some(t) = self.greedy[i] {
            return t;
        }
        let t = match self.head {
            None => argmax(self.ctx.logits(i)),
            Some(h) => {
                let hi = (i + self.group).min(self.n_rows);
                let hidden: Vec<&[f32]> = (i..hi).map(|j| self.ctx.hidden(j)).collect();
                let t0 = Instant::now();
                let best = h.argmax(&hidden);
                self.head_time += t0.elapsed();
                for (j, (tok, _)) in (i..hi).zip(best) {
                    self.greedy[j] = Some(tok);
                }
                self.group = (self.group * 2).min(16);
                return self.greedy[i].expect("just computed");
            }
        };
        self.greedy[i] = Some(t);
        t
    }

    /// The target's full logits at position `i`.
    pub fn logits(&mut self, i: usize) -> &[f32] {
        match self.head {
            None => self.ctx.logits(i),
            Some(h) => {
                if !self.have_logits[i] {
                    let t0 = Instant::now();
                    h.logits(
                        &[self.ctx.hidden(i)],
                        std::slice::from_mut(&mut self.logits[i]),
                    );
                    self.head_time += t0.elapsed();
                    self.have_logits[i] = true;
                }
                &self.logits[i]
            }
        }
    }
}
