//! A random-weight `dflash` drafter GGUF shaped for a given target: the test fixture for
//! parity with llama.cpp and for losslessness (a drafter that proposes nonsense must never
//! change the output). Loadable by both Tandem and llama.cpp.

use std::path::Path;

use super::format::DflashShape;
use crate::gguf::write::GgufWriter;
use crate::gguf::{GgmlType, Gguf, GgufError};
use crate::sampling::Rng;

/// Shape and seed of a random-weight DFlash fixture.
#[derive(Debug, Clone)]
pub struct FixtureOptions {
    /// Number of drafter layers.
    pub n_layer: usize,
    /// Target layers to condition on; empty = three spread over the target's depth.
    pub target_layers: Vec<usize>,
    /// Storage type of the weight matrices (any; a K-quant falls back per matrix as
    /// llama.cpp's quantiser does where a row is not whole 256-value super-blocks).
    pub wtype: GgmlType,
    /// Positions per block (the last token plus `block_size - 1` masks).
    pub block_size: usize,
    /// Seed for the random weights.
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
    let shape = DflashShape::for_target(&t, o.n_layer, &o.target_layers, o.block_size);
    let DflashShape {
        n_embd,
        n_head,
        n_head_kv,
        head_dim,
        n_ff,
        ..
    } = shape;
    let layers = &shape.target_layers;
    let mut w = GgufWriter::default();
    shape.write_header(&mut w, &t, "tandem random dflash fixture")?;

    let mut rng = Rng::new(o.seed);
    let mut uniform = |n: usize, scale: f32| -> Vec<f32> {
        // Uniform with standard deviation `scale`.
        (0..n)
            .map(|_| ((rng.uniform() * 2.0 - 1.0) * 3f64.sqrt()) as f32 * scale)
            .collect()
    };
    let mut mat = |w: &mut GgufWriter, name: &str, cols: usize, rows: usize| {
        let v = uniform(cols * rows, 1.0 / (cols as f32).sqrt());
        w.tensor_f32(
            name,
            &[cols as u64, rows as u64],
            o.wtype.fallback_for(cols),
            &v,
        );
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
