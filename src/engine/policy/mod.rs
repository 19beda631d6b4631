//! The draft policy: per round, which drafter to ask, how long a draft to verify and where
//! to cut it; it sees every round's outcome. Two policies:
//!
//! - [`FixedPolicy`]: one drafter, a constant draft length (the classic loop, kept for
//!   comparison: `--policy fixed`).
//! - [`FailFast`]: cost-aware and calibrated (`--policy failfast`, the default): chooses k
//!   maximising expected tokens per second, E[1 + S₁ + … + S_k] / (C(k + 1) + D), between
//!   several drafters each round (see `failfast.rs`).

pub mod acceptance;
pub mod cost;
pub mod cost_cache;
mod failfast;
mod min_draft;

use std::time::Duration;

pub use failfast::{FailFast, PolicyMemory};
pub use min_draft::MinDraft;

use crate::draft::{Draft, Drafter};
use crate::llama::Token;
use crate::sampling::SamplingConfig;

/// Which policy decides draft lengths. Parsed from `--policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PolicyKind {
    /// Cost-aware, calibrated draft lengths (the default).
    #[default]
    FailFast,
    /// Always the full `--draft-max` (what the drafter proposes, up to it).
    Fixed,
}

impl PolicyKind {
    /// The name `--policy` takes.
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::FailFast => "failfast",
            PolicyKind::Fixed => "fixed",
        }
    }
}

impl std::str::FromStr for PolicyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "failfast" => Ok(PolicyKind::FailFast),
            "fixed" => Ok(PolicyKind::Fixed),
            o => Err(format!("unknown policy '{o}' (choose: failfast, fixed)")),
        }
    }
}

/// What the engine reports about a verified round.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// The policy's draft tokens verified.
    pub drafted: usize,
    /// Of those, accepted (a prefix).
    pub accepted: usize,
    /// Tokens in the verification batch: the fed token, the policy's draft and any text a
    /// grammar forced around it (what `verify` paid for).
    pub batch: usize,
    /// Tokens the round committed (every accepted draft token, forced ones included, and
    /// the target's own next token).
    pub committed: usize,
    /// Time of the verification decode (head included).
    pub verify: Duration,
}

/// The policy seam of the loop.
pub trait DraftPolicy: Send {
    /// A short name for statistics.
    fn name(&self) -> &str;

    /// A new request starts with this prompt.
    fn begin(&mut self, prompt: &[Token]);

    /// Target layers whose inputs the policy's drafters condition on.
    fn feature_layers(&self) -> &[usize];

    /// Target features of the committed positions `pos0..` (see [`Drafter::observe`]).
    fn observe(&mut self, pos0: usize, features: &[f32]);

    /// Write this round's draft (at most `max` tokens) into `out` (already cleared); an
    /// empty draft means a plain step.
    fn draft(&mut self, history: &[Token], max: usize, sampling: &SamplingConfig, out: &mut Draft);

    /// The draft just written was verified.
    fn outcome(&mut self, draft: &Draft, o: Outcome);
}

/// One drafter, a constant draft length.
pub struct FixedPolicy<'a> {
    drafter: Box<dyn Drafter + 'a>,
    k: usize,
}

impl<'a> FixedPolicy<'a> {
    /// Draft up to `k` tokens every round with `drafter` (owned, or a `&mut` borrow).
    pub fn new(drafter: impl Drafter + 'a, k: usize) -> Self {
        Self {
            drafter: Box::new(drafter),
            k,
        }
    }

    /// Draft up to `k` tokens every round with a boxed drafter.
    pub fn boxed(drafter: Box<dyn Drafter + 'a>, k: usize) -> Self {
        Self { drafter, k }
    }
}

impl DraftPolicy for FixedPolicy<'_> {
    fn name(&self) -> &str {
        self.drafter.name()
    }
    fn begin(&mut self, prompt: &[Token]) {
        self.drafter.begin(prompt);
    }
    fn feature_layers(&self) -> &[usize] {
        self.drafter.feature_layers()
    }
    fn observe(&mut self, pos0: usize, features: &[f32]) {
        self.drafter.observe(pos0, features);
    }
    fn draft(&mut self, history: &[Token], max: usize, sampling: &SamplingConfig, out: &mut Draft) {
        let k = self.k.min(max);
        if k > 0 {
            self.drafter.draft(history, k, sampling, out);
            out.truncate(k);
        }
    }
    fn outcome(&mut self, _draft: &Draft, o: Outcome) {
        self.drafter.accept(o.accepted);
    }
}
