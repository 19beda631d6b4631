//! Prompt-lookup / n-gram drafting: find the most recent earlier occurrence of the
//! longest suffix of the history (n_max down to n_min tokens) and propose what followed it.
//! Wins on text that repeats its input (code edits, extraction, summaries quoting the source).

use super::{Draft, Drafter};
use crate::llama::Token;
use crate::sampling::SamplingConfig;

/// Longest match length reported as evidence (see [`Draft::match_len`]).
const MATCH_LEN_CAP: usize = 32;

/// Settings of the n-gram drafter: the range of suffix lengths to match.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NgramConfig {
    /// Longest suffix tried.
    pub n_max: usize,
    /// Shortest suffix accepted as a match.
    pub n_min: usize,
}

impl Default for NgramConfig {
    fn default() -> Self {
        Self { n_max: 4, n_min: 2 }
    }
}

/// Prompt-lookup drafter: proposes what followed the latest earlier match of the history's suffix.
#[derive(Debug, Default)]
pub struct NgramDrafter {
    cfg: NgramConfig,
}

impl NgramDrafter {
    /// A drafter with `cfg`, clamped so that `1 <= n_min <= n_max`.
    pub fn new(cfg: NgramConfig) -> Self {
        let n_min = cfg.n_min.max(1);
        Self {
            cfg: NgramConfig {
                n_min,
                n_max: cfg.n_max.max(n_min),
            },
        }
    }
}

impl Drafter for NgramDrafter {
    fn name(&self) -> &str {
        "ngram"
    }

    fn draft(&mut self, history: &[Token], max: usize, _s: &SamplingConfig, out: &mut Draft) {
        if max == 0 {
            return;
        }
        let len = history.len();
        for n in (self.cfg.n_min..=self.cfg.n_max.min(len.saturating_sub(1))).rev() {
            let suffix = &history[len - n..];
            // Most recent earlier occurrence whose continuation is non-empty.
            if let Some(start) = (0..len - n).rev().find(|&s| &history[s..s + n] == suffix) {
                let from = start + n;
                let to = (from + max).min(len);
                for &t in &history[from..to] {
                    out.push_point(t);
                }
                // The evidence is the whole matched context, not only the n looked up:
                // extend the match backwards (bounded) to its true length.
                let mut m = n;
                while m < MATCH_LEN_CAP
                    && start > m - n
                    && history[start - (m - n) - 1] == history[len - m - 1]
                {
                    m += 1;
                }
                out.match_len = m;
                // How often this suffix was followed by the proposed token: one sighting is
                // weak evidence, a continuation seen several times is likely to recur.
                let next = history[from];
                out.seen = (0..len - n)
                    .filter(|&s| &history[s..s + n] == suffix && history[s + n] == next)
                    .count();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(h: &[Token], max: usize, cfg: NgramConfig) -> Vec<Token> {
        let mut d = Draft::default();
        NgramDrafter::new(cfg).draft(h, max, &SamplingConfig::greedy(), &mut d);
        d.tokens
    }

    #[test]
    fn proposes_the_continuation_of_the_latest_longest_match() {
        // ... 1 2 3 [7 8] ... 1 2 3 [9 9] ... 1 2 3  -> the latest match wins: 9 9
        let h = [1, 2, 3, 7, 8, 5, 1, 2, 3, 9, 9, 6, 1, 2, 3];
        assert_eq!(draft(&h, 2, NgramConfig::default()), vec![9, 9]);
        assert_eq!(
            draft(&h, 10, NgramConfig::default()),
            vec![9, 9, 6, 1, 2, 3]
        );
    }

    #[test]
    fn prefers_longer_suffixes() {
        // suffix "4 2" matches at the start (-> 8); longer "5 4 2" matches later (-> 7)
        let h = [4, 2, 8, 5, 4, 2, 7, 0, 5, 4, 2];
        assert_eq!(draft(&h, 1, NgramConfig { n_max: 3, n_min: 2 }), vec![7]);
    }

    #[test]
    fn reports_match_length_and_sightings() {
        let h = [1, 2, 3, 7, 8, 5, 1, 2, 3, 7, 6, 1, 2, 3];
        let mut d = Draft::default();
        NgramDrafter::new(NgramConfig::default()).draft(&h, 2, &SamplingConfig::greedy(), &mut d);
        assert_eq!(d.tokens, vec![7, 6]);
        assert_eq!((d.match_len, d.seen), (3, 2));
        // The match is extended backwards beyond n_max: "5 6 7 8 9 1 2 3" occurs twice.
        let h = [5, 6, 7, 8, 9, 1, 2, 3, 4, 0, 5, 6, 7, 8, 9, 1, 2, 3];
        let mut d = Draft::default();
        NgramDrafter::new(NgramConfig::default()).draft(&h, 2, &SamplingConfig::greedy(), &mut d);
        assert_eq!(d.tokens, vec![4, 0]);
        assert_eq!(d.match_len, 8);
    }

    #[test]
    fn no_match_no_draft() {
        assert!(draft(&[1, 2, 3, 4, 5], 4, NgramConfig::default()).is_empty());
        assert!(draft(&[1], 4, NgramConfig::default()).is_empty());
        assert!(draft(&[], 4, NgramConfig::default()).is_empty());
        assert!(draft(&[1, 2, 1, 2], 0, NgramConfig::default()).is_empty());
    }
}
