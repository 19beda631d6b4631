//! The `dflash` GGUF layout shared by every drafter Tandem writes (the random-weight test
//! fixture and trained, exported drafters): hyper-parameters shaped for a target, and the
//! metadata both Tandem and llama.cpp read.

use crate::gguf::write::GgufWriter;
use crate::gguf::{Gguf, GgufError, Value};

/// A drafter's shape. Its hidden size is the target's: the drafter reads the target's
/// token embeddings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DflashShape {
    /// Hidden size (the target's embedding length).
    pub n_embd: usize,
    /// Number of drafter layers.
    pub n_layer: usize,
    /// Number of attention (query) heads.
    pub n_head: usize,
    /// Number of key/value heads.
    pub n_head_kv: usize,
    /// Size of one attention head.
    pub head_dim: usize,
    /// Feed-forward hidden size.
    pub n_ff: usize,
    /// RMS-norm epsilon.
    pub eps: f32,
    /// RoPE frequency base.
    pub rope_base: f32,
    /// Positions per block (the last token plus `block_size - 1` masks).
    pub block_size: usize,
    /// Target layers whose inputs are fused (llama.cpp's layer-input indices).
    pub target_layers: Vec<usize>,
    /// Context length written to the GGUF metadata (tokens).
    pub context_length: usize,
    /// Vocabulary size (the target's).
    pub n_vocab: usize,
    /// Id of the mask token.
    pub mask_token: usize,
}

impl DflashShape {
    /// Attention and feed-forward sizes as the target's own, `n_layer` layers, conditioned
    /// on `target_layers` (empty = `default_target_layers`).
    pub fn for_target(
        t: &Gguf,
        n_layer: usize,
        target_layers: &[usize],
        block_size: usize,
    ) -> Self {
        let arch = t.arch().unwrap_or("llama").to_string();
        let ti = |k: &str, d: i64| t.get_int(&format!("{arch}.{k}")).unwrap_or(d) as usize;
        let n_embd = ti("embedding_length", 0);
        let n_head = ti("attention.head_count", 1);
        let n_vocab = match t.get("tokenizer.ggml.tokens") {
            Some(Value::Array(a)) => a.len(),
            _ => 0,
        };
        let target_layers = if target_layers.is_empty() {
            super::default_target_layers(ti("block_count", 0))
        } else {
            target_layers.to_vec()
        };
        Self {
            n_embd,
            n_layer,
            n_head,
            n_head_kv: ti("attention.head_count_kv", n_head as i64),
            head_dim: ti("attention.key_length", (n_embd / n_head.max(1)) as i64),
            n_ff: ti("feed_forward_length", 4 * n_embd as i64),
            eps: t
                .get_float(&format!("{arch}.attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-6) as f32,
            rope_base: 1_000_000.0,
            block_size,
            target_layers,
            context_length: ti("context_length", 4096),
            n_vocab,
            mask_token: t
                .get_int("tokenizer.ggml.mask_token_id")
                .map(|m| m as usize)
                .unwrap_or(n_vocab.max(1) - 1),
        }
    }

    /// Width of one position's target features.
    pub fn n_features(&self) -> usize {
        self.target_layers.len() * self.n_embd
    }

    /// Write the drafter's metadata, the target's tokenizer (copied exactly) and the mask
    /// token (the target's, else its last token).
    pub fn write_header(
        &self,
        w: &mut GgufWriter,
        target: &Gguf,
        name: &str,
    ) -> Result<(), GgufError> {
        w.str("general.architecture", "dflash");
        w.str("general.name", name);
        w.u32("dflash.context_length", self.context_length as u32);
        w.u32("dflash.embedding_length", self.n_embd as u32);
        w.u32("dflash.block_count", self.n_layer as u32);
        w.u32("dflash.feed_forward_length", self.n_ff as u32);
        w.u32("dflash.attention.head_count", self.n_head as u32);
        w.u32("dflash.attention.head_count_kv", self.n_head_kv as u32);
        w.u32("dflash.attention.key_length", self.head_dim as u32);
        w.u32("dflash.attention.value_length", self.head_dim as u32);
        w.f32("dflash.attention.layer_norm_rms_epsilon", self.eps);
        w.f32("dflash.rope.freq_base", self.rope_base);
        w.u32("dflash.block_size", self.block_size as u32);
        w.i32_array(
            "dflash.target_layers",
            &self
                .target_layers
                .iter()
                .map(|&l| l as i32)
                .collect::<Vec<_>>(),
        );
        w.copy_tokenizer(target)?;
        if target.get("tokenizer.ggml.mask_token_id").is_none() {
            w.u32("tokenizer.ggml.mask_token_id", self.mask_token as u32);
        }
        Ok(())
    }
}

/// The `d2t` map (draft row → target token) from its tensor bytes: I64 as the format
/// writes it, I32 as some converters do; `None` for any other type.
pub fn decode_d2t(ty: crate::gguf::GgmlType, bytes: &[u8]) -> Option<Vec<crate::llama::Token>> {
    use crate::gguf::GgmlType;
    match ty {
        GgmlType::I64 => Some(
            bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as i32)
                .collect(),
        ),
        GgmlType::I32 => Some(
            bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
        ),
        _ => None,
    }
}
