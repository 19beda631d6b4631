//! A random-weight `llama` target GGUF with a real model's tokenizer: the test fixture for
//! shared-tensor formats our two real models cannot have. Their widths (576, 640) are not
//! multiples of 256, so llama.cpp's quantiser never stores their embeddings or head in a
//! K-quant (it falls back to Q8_0); a 256-wide llama with an untied head, re-quantised as
//! `q4_k_m`, gets the Q6_K head and Q4_K embeddings of a stock download. Its text is
//! nonsense, which is all a parity or losslessness test needs.

use std::path::Path;

use super::write::GgufWriter;
use super::{GgmlType, Gguf, GgufError};
use crate::sampling::Rng;

/// Shape of a random llama target.
#[derive(Debug, Clone)]
pub struct RandomLlama {
    /// Hidden size.
    pub n_embd: usize,
    /// Transformer layers.
    pub n_layer: usize,
    /// Feed-forward size.
    pub n_ff: usize,
    /// Attention heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
    /// A separate `output.weight` (else the head is tied to the embeddings).
    pub untied: bool,
    /// Storage type of every matrix (re-quantise with `llama::quantize` for others).
    pub wtype: GgmlType,
    /// Seed for the weights.
    pub seed: u64,
}

impl Default for RandomLlama {
    fn default() -> Self {
        Self {
            n_embd: 256,
            n_layer: 6,
            n_ff: 512,
            n_head: 4,
            n_head_kv: 2,
            untied: true,
            wtype: GgmlType::F16,
            seed: 1,
        }
    }
}

/// Write a random llama with the tokenizer (and chat template) of the GGUF at `tokenizer`.
pub fn write_random_llama(tokenizer: &Path, out: &Path, o: &RandomLlama) -> Result<(), GgufError> {
    let t = Gguf::open(tokenizer)?;
    let n_vocab = match t.get("tokenizer.ggml.tokens") {
        Some(super::Value::Array(a)) => a.len(),
        _ => 0,
    };
    let mut w = GgufWriter::default();
    w.str("general.architecture", "llama");
    w.str("general.name", "tandem random llama fixture");
    w.u32("llama.context_length", 4096);
    w.u32("llama.embedding_length", o.n_embd as u32);
    w.u32("llama.block_count", o.n_layer as u32);
    w.u32("llama.feed_forward_length", o.n_ff as u32);
    w.u32("llama.attention.head_count", o.n_head as u32);
    w.u32("llama.attention.head_count_kv", o.n_head_kv as u32);
    w.f32("llama.attention.layer_norm_rms_epsilon", 1e-5);
    w.f32("llama.rope.freq_base", 10_000.0);
    w.u32("llama.vocab_size", n_vocab as u32);
    w.copy_tokenizer(&t)?;
    let mut rng = Rng::new(o.seed);
    let mut uniform = |n: usize, scale: f32| -> Vec<f32> {
        (0..n)
            .map(|_| ((rng.uniform() * 2.0 - 1.0) * 3f64.sqrt()) as f32 * scale)
            .collect()
    };
    let e = o.n_embd;
    let hd = e / o.n_head;
    let (qd, kvd) = (o.n_head * hd, o.n_head_kv * hd);
    let mut mat = |w: &mut GgufWriter, name: &str, cols: usize, rows: usize, scale: f32| {
        let v = uniform(cols * rows, scale);
        w.tensor_f32(name, &[cols as u64, rows as u64], o.wtype, &v);
    };
    mat(&mut w, "token_embd.weight", e, n_vocab, 1.0);
    if o.untied {
        mat(&mut w, "output.weight", e, n_vocab, 1.0 / (e as f32).sqrt());
    }
    let inv = |n: usize| 1.0 / (n as f32).sqrt();
    for i in 0..o.n_layer {
        let n = |s: &str| format!("blk.{i}.{s}.weight");
        mat(&mut w, &n("attn_q"), e, qd, inv(e));
        mat(&mut w, &n("attn_k"), e, kvd, inv(e));
        mat(&mut w, &n("attn_v"), e, kvd, inv(e));
        mat(&mut w, &n("attn_output"), qd, e, inv(qd));
        mat(&mut w, &n("ffn_gate"), e, o.n_ff, inv(e));
        mat(&mut w, &n("ffn_up"), e, o.n_ff, inv(e));
        mat(&mut w, &n("ffn_down"), o.n_ff, e, inv(o.n_ff));
        for s in ["attn_norm", "ffn_norm"] {
            w.tensor_f32(&n(s), &[e as u64], GgmlType::F32, &vec![1.0; e]);
        }
    }
    w.tensor_f32(
        "output_norm.weight",
        &[e as u64],
        GgmlType::F32,
        &vec![1.0; e],
    );
    w.write(out).map_err(|err| GgufError::Io {
        path: out.display().to_string(),
        err,
    })
}
