//! What a generation did: why it stopped, what it emitted, and where its time went.

use std::time::Duration;

use crate::llama::Token;

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
    /// Prompt tokens decoded by the prefill: the prompt less what the prompt cache held
    /// (fewer when the generation was cancelled during the prefill).
    pub prompt_processed: usize,
    /// Tokens emitted.
    pub n_generated: usize,
    /// Verification decodes (one per round; plain decoding = one per token).
    pub rounds: usize,
    /// Draft tokens proposed, over all rounds.
    pub drafted: usize,
    /// Draft tokens accepted, over all rounds.
    pub accepted: usize,
    /// Of `drafted`: tokens of text a grammar alone determined (drafted at no cost).
    pub forced: usize,
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

    pub(super) fn record_round(&mut self, drafted: usize, accepted: usize) {
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
