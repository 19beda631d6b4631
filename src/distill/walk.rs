//! Run-time-comparable acceptance of a drafter on recorded sequences.
//!
//! For greedy decoding the accepted length of a block anchored at position `a`, L(a),
//! depends only on the sequence, not on how decoding got there: the target's greedy
//! continuation is the same whatever was drafted. So L can be computed on a recorded
//! continuation (of a held-out prompt) and walked like the engine walks it: start at the
//! first generated token, commit L + 1 tokens per round. The per-round figures skip the
//! easy positions inside accepted runs, as run time does — the offline figure that scored
//! every position read 1.67 tokens/step where run time saw 1.22.

/// Rounds walked over accepted lengths.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Walk {
    /// Verification rounds.
    pub rounds: usize,
    /// Tokens committed (accepted drafts + one target token per round).
    pub tokens: usize,
    /// Rounds whose first draft token was accepted.
    pub first_accepted: usize,
}

impl Walk {
    /// Walk `lengths[a]` (the accepted length of a block anchored at `a`) from `start`, as
    /// the engine does: a round at `a` commits `L(a) + 1` tokens and the next round is
    /// anchored at the last of them.
    pub fn over(lengths: &[usize], start: usize) -> Self {
        let mut w = Self::default();
        let mut a = start;
        while a < lengths.len() {
            let l = lengths[a];
            w.rounds += 1;
            w.tokens += l + 1;
            w.first_accepted += (l >= 1) as usize;
            a += l + 1;
        }
        w
    }

    /// Add another walk's counts.
    pub fn add(&mut self, o: &Self) {
        self.rounds += o.rounds;
        self.tokens += o.tokens;
        self.first_accepted += o.first_accepted;
    }

    /// Tokens per verification round (1.0 when there were none).
    pub fn tokens_per_step(&self) -> f64 {
        if self.rounds == 0 {
            1.0
        } else {
            self.tokens as f64 / self.rounds as f64
        }
    }

    /// Share of rounds whose first draft token was accepted.
    pub fn first_rate(&self) -> f64 {
        self.first_accepted as f64 / self.rounds.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The walk skips the positions inside accepted runs, as run time does: a sequence
    /// where every fourth anchor accepts 3 reads 1.75 tokens per anchor on average but
    /// walks 4-token rounds when it starts on a good anchor.
    #[test]
    fn walking_rounds_skips_positions_inside_accepted_runs() {
        // Anchors 0..8: L = 3 at 0 and 4, 0 elsewhere.
        let l = [3, 0, 0, 0, 3, 0, 0, 0];
        let w = Walk::over(&l, 0);
        assert_eq!(
            w,
            Walk {
                rounds: 2,
                tokens: 8,
                first_accepted: 2
            }
        );
        assert_eq!(w.tokens_per_step(), 4.0);
        assert_eq!(w.first_rate(), 1.0);
        // From anchor 1: three one-token rounds, then the good anchor at 4.
        let w = Walk::over(&l, 1);
        assert_eq!((w.rounds, w.tokens, w.first_accepted), (4, 7, 1));
        // The last round may run past the end (its block was cut by the sequence's end).
        assert_eq!(Walk::over(&[0, 5], 0).tokens, 7);
        assert_eq!(Walk::over(&[], 0), Walk::default());
    }
}
