//! The prompt cache: after a generation the context keeps its KV cells, and the next
//! request reuses the longest common token prefix (llama-server's `cache_prompt`): a
//! multi-turn conversation re-sends its whole history every turn, and on a CPU
//! re-processing it costs more than speculation saves. One slot — the context's own
//! cache — plus the drafter features of the cached positions (bounded by the context
//! window), so that a drafter conditioned on the target's hidden states still has them.

use super::{Finish, FinishReason};
use crate::draft::Draft;
use crate::engine::{DraftPolicy, Outcome};
use crate::llama::Token;
use crate::sampling::SamplingConfig;

/// What the context's KV cache holds, for the next request.
#[derive(Debug, Default)]
pub(super) struct PromptCache {
    /// Tokens whose KV cells the context holds, positions 0.. in order.
    tokens: Vec<Token>,
    /// Feature layers of `features`.
    layers: Vec<usize>,
    /// Drafter features of the first positions of `tokens` (row-major, `nf` a row).
    features: Vec<f32>,
    nf: usize,
}

/// Length of the common prefix of two token lists.
fn common_prefix(a: &[Token], b: &[Token]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl PromptCache {
    /// How many leading tokens of `prompt` can be reused by a policy conditioned on
    /// `layers` (`nf` features per position): the common prefix, within the positions
    /// whose features are kept when features are wanted, never the whole prompt (its
    /// last token is decoded for its logits).
    pub fn reusable(&self, prompt: &[Token], layers: &[usize], nf: usize) -> usize {
        let mut n = common_prefix(&self.tokens, prompt);
        if !layers.is_empty() {
            n = if layers == self.layers {
                n.min(self.features.len() / nf.max(1))
            } else {
                0
            };
        }
        n.min(prompt.len().saturating_sub(1))
    }

    /// Forget everything (the caller clears the context).
    pub fn forget(&mut self) {
        self.tokens.clear();
        self.features.clear();
    }

    /// Start a request that reuses `reuse` tokens with a policy on `layers`: the kept
    /// features beyond `reuse` (or all, for other layers) are dropped, and the policy is
    /// wrapped so that it gets the kept features at its start and records the new ones.
    pub fn begin<'a>(
        &'a mut self,
        policy: Box<dyn DraftPolicy + 'a>,
        layers: &[usize],
        nf: usize,
        reuse: usize,
    ) -> Recall<'a> {
        if layers != self.layers || nf != self.nf {
            self.layers = layers.to_vec();
            self.nf = nf;
            self.features.clear();
        }
        Recall {
            inner: policy,
            features: &mut self.features,
            nf,
            reuse,
        }
    }

    /// The generation ended with the context holding `kv_len` positions of
    /// `prompt + generated`: remember them (the caller cuts the context to the returned
    /// length, dropping any cell past what was committed).
    pub fn end(&mut self, prompt: &[Token], generated: &[Token], kv_len: usize) -> usize {
        self.tokens.clear();
        self.tokens.extend_from_slice(prompt);
        self.tokens.extend_from_slice(generated);
        self.tokens.truncate(kv_len);
        let n = self.tokens.len();
        self.features.truncate(n * self.nf);
        n
    }
}

/// A policy that is handed the cached features at its start and whose features are
/// recorded for the next request.
pub(super) struct Recall<'a> {
    inner: Box<dyn DraftPolicy + 'a>,
    features: &'a mut Vec<f32>,
    nf: usize,
    reuse: usize,
}

impl DraftPolicy for Recall<'_> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn begin(&mut self, prompt: &[Token]) {
        self.inner.begin(prompt);
        if self.nf == 0 {
            self.features.clear();
            return;
        }
        self.features.truncate(self.reuse * self.nf);
        if self.reuse > 0 {
            self.inner.observe(0, self.features);
        }
    }
    fn feature_layers(&self) -> &[usize] {
        self.inner.feature_layers()
    }
    fn observe(&mut self, pos0: usize, features: &[f32]) {
        if self.nf > 0 && self.features.len() >= pos0 * self.nf {
            self.features.truncate(pos0 * self.nf);
            self.features.extend_from_slice(features);
        }
        self.inner.observe(pos0, features)
    }
    fn draft(&mut self, history: &[Token], max: usize, sampling: &SamplingConfig, out: &mut Draft) {
        self.inner.draft(history, max, sampling, out)
    }
    fn outcome(&mut self, draft: &Draft, o: Outcome) {
        self.inner.outcome(draft, o)
    }
}

/// Whether a finished generation's cells are kept: not a cancelled one (its client is
/// gone; the cells are freed at once, as before the cache).
pub(super) fn keepable(f: &Finish) -> bool {
    f.reason != FinishReason::Cancelled
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::draft::NoDrafter;
    use crate::engine::FixedPolicy;

    #[test]
    fn reuse_is_the_common_prefix_within_the_kept_features() {
        let mut c = PromptCache::default();
        assert_eq!(c.reusable(&[1, 2, 3], &[], 0), 0);
        // A generation over [1, 2, 3] + [4, 5] left 4 positions in the KV cache.
        {
            let mut r = c.begin(Box::new(FixedPolicy::new(NoDrafter, 0)), &[7], 2, 0);
            r.begin(&[1, 2, 3]);
            r.observe(0, &[0.0; 6]);
            r.observe(3, &[1.0; 2]);
        }
        assert_eq!(c.end(&[1, 2, 3], &[4, 5], 4), 4);
        // Next turn: the history plus more.
        assert_eq!(c.reusable(&[1, 2, 3, 4, 5, 6], &[], 0), 4);
        assert_eq!(c.reusable(&[1, 2, 3, 4, 5, 6], &[7], 2), 4);
        // Other layers: no features, no reuse for a policy that wants them.
        assert_eq!(c.reusable(&[1, 2, 3, 4, 5, 6], &[8], 2), 0);
        // A different start, or the same prompt (its last token is decoded again).
        assert_eq!(c.reusable(&[9, 2, 3], &[], 0), 0);
        assert_eq!(c.reusable(&[1, 2, 3, 4], &[], 0), 3);
        // A policy reusing 3 positions gets their features first.
        struct Spy(Vec<(usize, usize)>);
        impl crate::draft::Drafter for Spy {
            fn name(&self) -> &str {
                "spy"
            }
            fn observe(&mut self, pos0: usize, f: &[f32]) {
                self.0.push((pos0, f.len()));
            }
            fn draft(&mut self, _: &[Token], _: usize, _: &SamplingConfig, _: &mut Draft) {}
        }
        let mut spy = Spy(Vec::new());
        {
            let mut r = c.begin(Box::new(FixedPolicy::new(&mut spy, 4)), &[7], 2, 3);
            r.begin(&[1, 2, 3, 4, 5, 6]);
            r.observe(3, &[2.0; 6]);
        }
        assert_eq!(spy.0, vec![(0, 6), (3, 6)]);
        assert_eq!(c.end(&[1, 2, 3, 4, 5, 6], &[], 6), 6);
        assert_eq!(c.reusable(&[1, 2, 3, 4, 5, 6, 7], &[7], 2), 6);
        c.forget();
        assert_eq!(c.reusable(&[1, 2, 3], &[], 0), 0);
    }
}
