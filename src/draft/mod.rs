//! Drafters: cheap proposers of the target's next tokens.

pub mod diffusion;
mod ngram;
mod oracle;

pub use diffusion::{DiffusionConfig, DiffusionDrafter};
pub use ngram::{NgramConfig, NgramDrafter};
pub use oracle::OracleDrafter;

use crate::llama::Token;
use crate::sampling::{Dist, SamplingConfig};

/// A proposed continuation. `q[i]` is the drafter's distribution for `tokens[i]` (after
/// the same sampling transform as the target's) — `None` means a point mass on the token,
/// as for drafters that have no distribution (n-gram). `confidence[i]` in [0, 1] feeds
/// length policies.
#[derive(Debug, Clone, Default)]
pub struct Draft {
    /// The proposed tokens, in order.
    pub tokens: Vec<Token>,
    /// The drafter's distribution for each token (`None`: a point mass).
    pub q: Vec<Option<Dist>>,
    /// The drafter's confidence in each token, in [0, 1].
    pub confidence: Vec<f32>,
    /// Evidence behind a lookup draft (n-gram): the length of the matched suffix (0: the
    /// drafter is not a lookup). The draft policy's acceptance tables key on it.
    pub match_len: usize,
    /// Lookup drafts: how many earlier occurrences of the matched suffix were followed by
    /// the proposed first token.
    pub seen: usize,
}

impl Draft {
    /// Empty the draft, keeping its allocations.
    pub fn clear(&mut self) {
        self.tokens.clear();
        self.q.clear();
        self.confidence.clear();
        self.match_len = 0;
        self.seen = 0;
    }

    /// Keep only the first `n` proposed tokens.
    pub fn truncate(&mut self, n: usize) {
        self.tokens.truncate(n);
        self.q.truncate(n);
        self.confidence.truncate(n);
    }

    /// Number of proposed tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether no tokens are proposed.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Add a token proposed with certainty (no distribution).
    pub fn push_point(&mut self, t: Token) {
        self.tokens.push(t);
        self.q.push(None);
        self.confidence.push(1.0);
    }
}

/// The drafter lifecycle, as in llama.cpp's `common_speculative` (begin / draft / accept).
pub trait Drafter: Send {
    /// A short name for stats ("none", "ngram", …).
    fn name(&self) -> &str;

    /// A new request starts with this prompt.
    fn begin(&mut self, _prompt: &[Token]) {}

    /// Propose up to `max` tokens to follow `history` (prompt + everything generated so
    /// far, including the token about to be verified). Write into `out` (already cleared).
    /// `sampling` is the request's: drafters that sample draw from it and report q under
    /// it (rejection sampling stays exact); the same drafter serves any request.
    fn draft(&mut self, history: &[Token], max: usize, sampling: &SamplingConfig, out: &mut Draft);

    /// The last draft's first `n_accepted` tokens were kept.
    fn accept(&mut self, _n_accepted: usize) {}

    /// Target layers whose inputs this drafter conditions on (llama.cpp's layer-input
    /// indices). The engine captures them from its own decodes — prefill and verification —
    /// so they cost no extra target pass.
    fn feature_layers(&self) -> &[usize] {
        &[]
    }

    /// Target features of the committed positions `pos0..` (one row per position, the
    /// layers of [`Drafter::feature_layers`] concatenated). Called after the prefill and
    /// after every verification with the fed token and the accepted drafts only.
    fn observe(&mut self, _pos0: usize, _features: &[f32]) {}
}

/// A borrowed drafter drafts as the drafter itself (lets a policy own `&mut dyn Drafter`).
impl<D: Drafter + ?Sized> Drafter for &mut D {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn begin(&mut self, prompt: &[Token]) {
        (**self).begin(prompt)
    }
    fn draft(&mut self, history: &[Token], max: usize, sampling: &SamplingConfig, out: &mut Draft) {
        (**self).draft(history, max, sampling, out)
    }
    fn accept(&mut self, n_accepted: usize) {
        (**self).accept(n_accepted)
    }
    fn feature_layers(&self) -> &[usize] {
        (**self).feature_layers()
    }
    fn observe(&mut self, pos0: usize, features: &[f32]) {
        (**self).observe(pos0, features)
    }
}

/// No drafting: plain autoregressive decoding through the same engine (the baseline).
#[derive(Debug, Default)]
pub struct NoDrafter;

impl Drafter for NoDrafter {
    fn name(&self) -> &str {
        "none"
    }

    fn draft(&mut self, _history: &[Token], _max: usize, _s: &SamplingConfig, _out: &mut Draft) {}
}
