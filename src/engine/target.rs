//! The target seam: what the speculative loop needs from the model that has the final
//! say. Implemented by the llama.cpp [`Context`]; a scripted mock (tests) implements it too,
//! so the loop's invariants are checked without a model.

use crate::llama::{Context, Outputs, TargetError, Token};

/// The target model as the loop sees it: batched decodes at a position, per-row outputs,
/// the KV cache's length and rollback.
pub trait Target {
    /// Context window (tokens).
    fn n_ctx(&self) -> usize;
    /// Largest batch one decode accepts.
    fn n_batch(&self) -> usize;
    /// Empty the KV cache.
    fn clear(&mut self);
    /// Decode `tokens` at positions `start_pos..`, producing the rows `outputs` asks for.
    fn decode(
        &mut self,
        tokens: &[Token],
        start_pos: usize,
        outputs: Outputs,
    ) -> Result<(), TargetError>;
    /// Logits of output row `i` of the last decode.
    fn logits(&self, i: usize) -> &[f32];
    /// Final-norm hidden state of row `i` of the last `Outputs::Hidden` decode.
    fn hidden(&self, i: usize) -> &[f32];
    /// Capture the inputs of these layers in every later decode (drafter features);
    /// `true` when the KV cache was emptied to do so.
    fn set_feature_layers(&mut self, layers: &[usize]) -> Result<bool, TargetError>;
    /// The captured features of rows `rows` of the last decode, concatenated.
    fn features_into(
        &self,
        rows: std::ops::Range<usize>,
        out: &mut Vec<f32>,
    ) -> Result<(), TargetError>;
    /// Drop every KV cell from position `from` on.
    fn truncate(&mut self, from: usize) -> Result<(), TargetError>;
    /// Positions the KV cache holds.
    fn kv_len(&self) -> usize;
    /// Whether `t` ends generation.
    fn is_eog(&self, t: Token) -> bool;
}

impl Target for Context {
    fn n_ctx(&self) -> usize {
        Context::n_ctx(self)
    }
    fn n_batch(&self) -> usize {
        Context::n_batch(self)
    }
    fn clear(&mut self) {
        Context::clear(self)
    }
    fn decode(
        &mut self,
        tokens: &[Token],
        start_pos: usize,
        outputs: Outputs,
    ) -> Result<(), TargetError> {
        Context::decode(self, tokens, start_pos, outputs)
    }
    fn logits(&self, i: usize) -> &[f32] {
        Context::logits(self, i)
    }
    fn hidden(&self, i: usize) -> &[f32] {
        Context::hidden(self, i)
    }
    fn set_feature_layers(&mut self, layers: &[usize]) -> Result<bool, TargetError> {
        Context::set_feature_layers(self, layers)
    }
    fn features_into(
        &self,
        rows: std::ops::Range<usize>,
        out: &mut Vec<f32>,
    ) -> Result<(), TargetError> {
        Context::features_into(self, rows, out)
    }
    fn truncate(&mut self, from: usize) -> Result<(), TargetError> {
        Context::truncate(self, from)
    }
    fn kv_len(&self) -> usize {
        Context::kv_len(self)
    }
    fn is_eog(&self, t: Token) -> bool {
        self.model().is_eog(t)
    }
}
