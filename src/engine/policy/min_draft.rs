//! llama-server's `speculative.n_min`: a draft shorter than `n_min` tokens is not verified
//! (the round is a plain step), whatever policy wrote it.

use super::{DraftPolicy, Outcome};
use crate::draft::Draft;
use crate::llama::Token;
use crate::sampling::SamplingConfig;

/// A policy whose drafts shorter than `n_min` are dropped.
pub struct MinDraft<'a> {
    inner: Box<dyn DraftPolicy + 'a>,
    n_min: usize,
}

impl<'a> MinDraft<'a> {
    /// Wrap `inner`; `n_min` ≤ 1 changes nothing.
    pub fn new(inner: Box<dyn DraftPolicy + 'a>, n_min: usize) -> Self {
        Self { inner, n_min }
    }
}

impl DraftPolicy for MinDraft<'_> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn begin(&mut self, prompt: &[Token]) {
        self.inner.begin(prompt)
    }
    fn feature_layers(&self) -> &[usize] {
        self.inner.feature_layers()
    }
    fn observe(&mut self, pos0: usize, features: &[f32]) {
        self.inner.observe(pos0, features)
    }
    fn draft(&mut self, history: &[Token], max: usize, sampling: &SamplingConfig, out: &mut Draft) {
        self.inner.draft(history, max, sampling, out);
        if out.len() < self.n_min {
            out.clear();
        }
    }
    fn outcome(&mut self, draft: &Draft, o: Outcome) {
        self.inner.outcome(draft, o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::draft::{Drafter, NoDrafter};
    use crate::engine::FixedPolicy;

    struct Three;
    impl Drafter for Three {
        fn name(&self) -> &str {
            "three"
        }
        fn draft(&mut self, _h: &[Token], max: usize, _s: &SamplingConfig, out: &mut Draft) {
            for t in 0..3.min(max) {
                out.push_point(t as Token);
            }
        }
    }

    #[test]
    fn drafts_shorter_than_n_min_become_plain_steps() {
        let greedy = SamplingConfig::greedy();
        let len = |n_min: usize, max: usize| {
            let mut p = MinDraft::new(Box::new(FixedPolicy::new(Three, 8)), n_min);
            let mut out = Draft::default();
            p.draft(&[1], max, &greedy, &mut out);
            out.len()
        };
        assert_eq!(len(0, 8), 3);
        assert_eq!(len(3, 8), 3);
        assert_eq!(len(4, 8), 0);
        assert_eq!(len(3, 2), 0, "capped below n_min by max");
        let p = MinDraft::new(Box::new(FixedPolicy::new(NoDrafter, 8)), 2);
        assert_eq!(p.name(), FixedPolicy::new(NoDrafter, 8).name());
    }
}
