//! The Rust-native diffusion drafter: llama.cpp's DFlash block-diffusion drafters, run by
//! Tandem's own forward pass (no ggml). One non-causal pass over
//! `[last token, <mask> × (n − 1)]`, conditioned on the target's hidden states, proposes the
//! whole block at once; each position comes with the drafter's probability (q, for
//! lossless rejection sampling) and a confidence (its top probability, for length policies).

pub mod fixture;
pub mod format;
mod forward;
mod linear;
mod load;
mod model;

use std::sync::Arc;

pub use forward::DflashCache;
pub use linear::Linear;
pub use model::{DflashConfig, DflashModel, DiffusionError, Embeddings};

use super::{Draft, Drafter};
use crate::llama::Token;
use crate::sampling::{Dist, Rng, SamplingConfig};

/// DFlash's conditioning layers for an `n_layer`-layer target, as llama.cpp numbers them
/// (layer inputs, all in 1..n_layer): z-lab's `build_target_layer_ids` spaces five taps
/// evenly over the Hugging Face layers [1, L − 3] (30 layers: 1, 8, 14, 20, 27 — five
/// taps beat three in DFlash's ablation), and llama.cpp captures the *input* of layer
/// id + 1 (the output of layer id). Fewer taps where the target has few layers.
pub fn default_target_layers(n_layer: usize) -> Vec<usize> {
    const TAPS: usize = 5;
    if n_layer < 3 {
        return Vec::new();
    }
    let (start, end) = (1.0f64, n_layer.saturating_sub(3).max(1) as f64);
    let mut v: Vec<usize> = (0..TAPS)
        .map(|i| {
            (start + (end - start) * i as f64 / (TAPS - 1) as f64).round_ties_even() as usize + 1
        })
        .filter(|&l| l >= 1 && l < n_layer)
        .collect();
    v.dedup();
    v
}

/// Plain-data settings of the diffusion drafter. (The request's sampling settings come
/// with every draft call: drafts are sampled from them and q reported under them, so
/// rejection sampling stays exact; greedy drafts the drafter's argmax.)
#[derive(Debug, Clone, Default)]
pub struct DiffusionConfig {
    /// Stop the draft at the first position whose top probability is below this
    /// ("fail fast"; 0 = always the full block).
    pub p_min: f32,
}

/// The DFlash diffusion drafter: proposes a block per pass, conditioned on target features.
pub struct DiffusionDrafter {
    model: Arc<DflashModel>,
    cfg: DiffusionConfig,
    cache: DflashCache,
    /// Features observed but not yet injected into `cache` (rows for positions
    /// `cache.len()..`): injection waits for the next draft, so rounds in which a policy
    /// does not ask this drafter cost only a copy, and catching up is one batched pass.
    pending: Vec<f32>,
    /// Seeded from the request's seed at its first draft.
    rng: Option<Rng>,
    logits: Vec<Vec<f32>>,
}

impl DiffusionDrafter {
    /// A drafter over `model` with an empty cache.
    pub fn new(model: Arc<DflashModel>, cfg: DiffusionConfig) -> Self {
        let cache = model.new_cache();
        Self {
            model,
            cfg,
            cache,
            pending: Vec::new(),
            rng: None,
            logits: Vec::new(),
        }
    }

    /// The shared DFlash model.
    pub fn model(&self) -> &Arc<DflashModel> {
        &self.model
    }

    /// Context positions the drafter holds features for (injected or pending).
    pub fn context_len(&self) -> usize {
        self.cache.len() + self.pending.len() / self.model.n_features()
    }

    /// Inject the pending features.
    fn catch_up(&mut self) {
        if !self.pending.is_empty() {
            self.model.inject(&mut self.cache, &self.pending);
            self.pending.clear();
        }
    }
}

/// Softmax probability of the largest logit (the drafter's confidence).
fn top_prob(logits: &[f32]) -> (Token, f32) {
    let (mut best, mut max) = (0usize, f32::NEG_INFINITY);
    for (i, &v) in logits.iter().enumerate() {
        if v > max {
            (best, max) = (i, v);
        }
    }
    let sum: f64 = logits.iter().map(|&v| ((v - max) as f64).exp()).sum();
    (best as Token, (1.0 / sum) as f32)
}

impl Drafter for DiffusionDrafter {
    fn name(&self) -> &str {
        "diffusion"
    }

    fn begin(&mut self, _prompt: &[Token]) {
        self.cache.clear();
        self.pending.clear();
        self.rng = None;
    }

    fn feature_layers(&self) -> &[usize] {
        &self.model.cfg.target_layers
    }

    fn observe(&mut self, pos0: usize, features: &[f32]) {
        if pos0 != self.context_len() {
            // Out of step (should not happen with the engine): start over from here on.
            self.cache.clear();
            self.pending.clear();
            if pos0 != 0 {
                return;
            }
        }
        self.pending.extend_from_slice(features);
    }

    fn draft(&mut self, history: &[Token], max: usize, sampling: &SamplingConfig, out: &mut Draft) {
        let pos = history.len() - 1;
        // Features must cover exactly the positions before the newest token.
        if self.context_len() != pos || max == 0 {
            return;
        }
        self.catch_up();
        let n = max.min(self.model.cfg.block_size - 1);
        let d = self.model.cfg.n_embd;
        let hidden = self.model.draft_hidden(&self.cache, history[pos], n + 1);
        // The head is most of a block's cost (a vocabulary-wide product per row). With a
        // confidence floor, rows go through it a few at a time (4 share one pass over the
        // head's weights) and drafting stops at the first unconfident row: fail fast.
        let chunk = if self.cfg.p_min > 0.0 { 4 } else { n };
        let greedy = sampling.is_greedy();
        let rng = self
            .rng
            .get_or_insert_with(|| Rng::new(sampling.seed ^ 0x9e37_79b9_7f4a_7c15));
        let mut i = 0;
        'rows: while i < n {
            let c = chunk.min(n - i);
            self.logits.resize_with(c, Vec::new);
            self.model
                .logits(&hidden[i * d..(i + c) * d], &mut self.logits[..c]);
            for row in &self.logits[..c] {
                let (top, conf) = top_prob(row);
                if conf < self.cfg.p_min {
                    break 'rows;
                }
                if greedy {
                    out.tokens.push(top);
                    out.q.push(None);
                } else {
                    let mut q = Dist::default();
                    sampling.distribution_into(row, &mut q);
                    let t = q.sample_with(rng.uniform());
                    out.tokens.push(t);
                    out.q.push(Some(q));
                }
                out.confidence.push(conf);
            }
            i += c;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_prob_is_the_softmax_maximum() {
        let (t, p) = top_prob(&[0.0, (3.0f32).ln(), f32::NEG_INFINITY]);
        assert_eq!(t, 1);
        assert!((p - 0.75).abs() < 1e-6);
    }
}
