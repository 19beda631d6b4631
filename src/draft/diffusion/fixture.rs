//! A random-weight `dflash` drafter GGUF shaped for a given target: the test fixture for
//! parity with llama.cpp and for losslessness (a drafter that proposes nonsense must never
//! change the output). Loadable by both Tandem and llama.cpp.

use std::path::Path;

use crate::gguf::{GgmlType, Gguf, GgufError};
use crate::gguf_write::GgufWriter;
use crate::sampling::Rng;

#[derive(Debug, Clone)]
pub struct FixtureOptions {
    pub n_layer: usize,
    /// Target layers to condition on; empty = three spread over the target's depth.
    pub target_layers: Vec<usize>,
    /// Storage type of the weight matrices (F32, F16, BF16, Q8_0).
    pub wtype: GgmlType,
    pub block_size: usize,
    pub seed: u64,
}

impl Default for FixtureOptions {
    fn default() -> Self {
        Self {
            n_layer: 2,
            target_layers: Vec::new(),
            wtype: GgmlType::F16,
            block_size: 16,
            seed: 1,
        }
    }
}

/// Write a random DFlash drafter for the target GGUF at `target` to `out`. It shares the
/// target's token embeddings and output head and copies its tokenizer.
pub fn write_random_dflash(target: &Path, out: &Path, o: &FixtureOptions) -> Result<(), GgufError> {
    let t = Gguf::open(target)?;
    let arch = t.arch().unwrap_or("llama").to_string();
    let ti = |k: &str, d: i64| t.get_int(&format!("{arch}.{k}")).unwrap_or(d) as usize;
    let n_embd = ti("embedding_length", 0);
    let n_layer_t = ti("block_count", 0);
    let n_head = ti("attention.head_count", 1);
    let n_head_kv = ti("attention.head_count_kv", n_head as i64);
    let head_dim = ti("attention.key_length", (n_embd / n_head.max(1)) as i64);
    let n_ff = ti("feed_forward_length", 4 * n_embd as i64);
    let eps = t
        .get_float(&format!("{arch}.attention.layer_norm_rms_epsilon"))
        .unwrap_or(1e-6) as f32;
    let layers: Vec<usize> = if o.target_layers.is_empty() {
        super::default_target_layers(n_layer_t)
    } else {
        o.target_layers.clone()
    };
    let n_vocab = match t.get("tokenizer.ggml.tokens") {
        Some(crate::gguf::Value::Array(a)) => a.len(),
        _ => 0,
    };

    let mut w = GgufWriter::default();
    w.str("general.architecture", "dflash");
    w.str("general.name", "tandem random dflash fixture");
    w.u32("dflash.context_length", ti("context_length", 4096) as u32);
    w.u32("dflash.embedding_length", n_embd as u32);
    w.u32("dflash.block_count", o.n_layer as u32);
    w.u32("dflash.feed_forward_length", n_ff as u32);
    w.u32("dflash.attention.head_count", n_head as u32);
    w.u32("dflash.attention.head_count_kv", n_head_kv as u32);
    w.u32("dflash.attention.key_length", head_dim as u32);
    w.u32("dflash.attention.value_length", head_dim as u32);
    w.f32("dflash.attention.layer_norm_rms_epsilon", eps);
    w.f32("dflash.rope.freq_base", 1_000_000.0);
    w.u32("dflash.block_size", o.block_size as u32);
    w.i32_array(
        "dflash.target_layers",
        &layers.iter().map(|&l| l as i32).collect::<Vec<_>>(),
    );
    let keys: Vec<String> = t
        .metadata
        .keys()
        .filter(|k| k.starts_with("tokenizer."))
        .cloned()
        .collect();
    for k in &keys {
        w.copy_from(&t, k)?;
    }
    if t.get("tokenizer.ggml.mask_token_id").is_none() {
        w.u32("tokenizer.ggml.mask_token_id", (n_vocab.max(1) - 1) as u32);
    }

    let mut rng = Rng::new(o.seed);
    let mut uniform = |n: usize, scale: f32| -> Vec<f32> {
        // Uniform with standard deviation `scale`.
        (0..n)
            .map(|_| ((rng.uniform() * 2.0 - 1.0) * 3f64.sqrt()) as f32 * scale)
            .collect()
    };
    let mut mat = |w: &mut GgufWriter, name: &str, cols: usize, rows: usize| {
        let v = uniform(cols * rows, 1.0 / (cols as f32).sqrt());
        w.tensor_f32(name, &[cols as u64, rows as u64], o.wtype, &v);
    };
    let norm = |w: &mut GgufWriter, name: &str, n: usize, rng_v: Vec<f32>| {
        let v: Vec<f32> = rng_v.iter().map(|x| 1.0 + x).collect();
        w.tensor_f32(name, &[n as u64], GgmlType::F32, &v);
    };
    let n_inp = layers.len() * n_embd;
    mat(&mut w, "fc.weight", n_inp, n_embd);
    let (qd, kvd) = (n_head * head_dim, n_head_kv * head_dim);
    let mut norms = Vec::new();
    for i in 0..o.n_layer {
        let n = |s: &str| format!("blk.{i}.{s}.weight");
        mat(&mut w, &n("attn_q"), n_embd, qd);
        mat(&mut w, &n("attn_k"), n_embd, kvd);
        mat(&mut w, &n("attn_v"), n_embd, kvd);
        mat(&mut w, &n("attn_output"), qd, n_embd);
        mat(&mut w, &n("ffn_gate"), n_embd, n_ff);
        mat(&mut w, &n("ffn_up"), n_embd, n_ff);
        mat(&mut w, &n("ffn_down"), n_ff, n_embd);
        norms.push((n("attn_norm"), n_embd));
        norms.push((n("ffn_norm"), n_embd));
        norms.push((n("attn_q_norm"), head_dim));
        norms.push((n("attn_k_norm"), head_dim));
    }
    norms.push(("enc.output_norm.weight".to_string(), n_embd));
    norms.push(("output_norm.weight".to_string(), n_embd));
    for (name, n) in norms {
        let v = uniform(n, 0.1);
        norm(&mut w, &name, n, v);
    }
    w.write(out).map_err(|err| GgufError::Io {
        path: out.display().to_string(),
        err,
    })
}
