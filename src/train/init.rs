//! Starting a drafter from the target's own weights instead of from noise (options;
//! random is the default, as measured).
//!
//! The drafter's head is the target's output rows (frozen), so the norm in front of it
//! can start where the target's own `output_norm` is (SmolLM2's weights average ~1.8, a
//! fresh norm's 1.0). Measured on SmolLM2 it hurts: the sharper start makes an untrained
//! drafter's wrong logits costlier and the first thousand steps go to undoing it (held-out
//! first-position acceptance 7% at step 1,000 against 9.5% from unit norms; docs/drafters.md).
//! The layers have the target's widths by construction, so they can start as the target's
//! last layers: the FFN that writes the target's final residual already maps hidden
//! states toward its output space.

use candle_core::{Device, Tensor};

use super::TrainError;
use super::net::Net;
use crate::draft::diffusion::Embeddings;
use crate::draft::diffusion::format::decode_d2t;
use crate::gguf::{Gguf, Value};
use crate::llama::Token;

/// How the drafter's weights start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Init {
    /// Random layers and unit norms.
    #[default]
    Random,
    /// Random layers; the output norm starts as the target's `output_norm`.
    Norm,
    /// As `norm`, and drafter layer `i` of `n` starts as target layer `L − n + i`
    /// (attention, FFN and their norms; q/k norms at 1).
    LastLayers,
}

/// Overwrite `net`'s parameters as `init` says, from the target `tg`.
pub fn apply(net: &Net, tg: &Gguf, init: Init) -> Result<(), TrainError> {
    if init == Init::Random {
        return Ok(());
    }
    set(net, "output_norm.weight", read(tg, "output_norm.weight")?)?;
    if init == Init::Norm {
        return Ok(());
    }
    let s = &net.shape;
    let arch = tg.arch().unwrap_or("llama");
    let n_target = tg
        .get_int(&format!("{arch}.block_count"))
        .ok_or_else(|| TrainError::Data(format!("{}: no block_count", tg.path().display())))?
        as usize;
    // llama.cpp's converter permutes a llama model's Q/K rows for its interleaved RoPE;
    // the drafter rotates NeoX-style (halves), so those rows go back to the HF order.
    let interleaved = arch == "llama";
    for il in 0..s.n_layer {
        let tl = n_target - s.n_layer + il;
        let src = |t: &str| format!("blk.{tl}.{t}.weight");
        let dst = |t: &str| format!("blk.{il}.{t}.weight");
        for t in [
            "attn_norm",
            "attn_v",
            "attn_output",
            "ffn_norm",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        ] {
            set(net, &dst(t), read(tg, &src(t))?)?;
        }
        for (t, heads) in [("attn_q", s.n_head), ("attn_k", s.n_head_kv)] {
            let mut w = read(tg, &src(t))?;
            if interleaved {
                w = unpermute_rope_rows(&w, heads, s.head_dim, s.n_embd);
            }
            set(net, &dst(t), w)?;
        }
    }
    Ok(())
}

/// The draft vocabulary (`d2t`) of an exported drafter, every entry a token of the
/// target's `n_vocab`.
pub fn drafter_vocab(dr: &Gguf, n_vocab: usize) -> Result<Vec<Token>, TrainError> {
    let (ty, b) = dr.read_tensor("d2t")?;
    let bad = |why: String| TrainError::Data(format!("{}: d2t {why}", dr.path().display()));
    let d2t = decode_d2t(ty, &b).ok_or_else(|| bad(format!("has type {ty:?}, expected I64")))?;
    if let Some(t) = d2t.iter().find(|&&t| t < 0 || t as usize >= n_vocab) {
        return Err(bad(format!(
            "maps to token {t}, outside the target vocabulary"
        )));
    }
    Ok(d2t)
}

/// Overwrite every parameter of `net` with the same-named tensor of the exported drafter
/// `dr` (`--init-from`): a drafter continues from its GGUF on new data or on another
/// machine, where neither the checkpoint nor the data survives — only the shipped file
/// does. The file must have been made for the data's feature layers (`target_layers`)
/// and the run's shape. Export folded the old run's feature scale into `fc.weight`
/// (`W · diag(1/s)`); multiplying its columns by this run's `feature_scale` gives the
/// function the file computes on the new run's scaled features. Adam's moments start at 0.
pub fn from_drafter(
    net: &Net,
    dr: &Gguf,
    target_layers: &[usize],
    feature_scale: &[f32],
) -> Result<(), TrainError> {
    let layers: Vec<usize> = match dr.get("dflash.target_layers") {
        Some(Value::Array(v)) => v
            .iter()
            .filter_map(|x| match x {
                Value::Int(i) => Some(*i as usize),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if layers != target_layers {
        return Err(TrainError::Data(format!(
            "{}: a drafter for target layers {layers:?}, the data has {target_layers:?}",
            dr.path().display()
        )));
    }
    for (name, _) in &net.params {
        let mut w = read(dr, name)?;
        if name == "fc.weight" && !feature_scale.is_empty() {
            for row in w.chunks_mut(feature_scale.len()) {
                for (x, s) in row.iter_mut().zip(feature_scale) {
                    *x *= s;
                }
            }
        }
        set(net, name, w)?;
    }
    Ok(())
}

/// All of the target tensor `name`, dequantized, row-major.
fn read(tg: &Gguf, name: &str) -> Result<Vec<f32>, TrainError> {
    let info = tg
        .tensor(name)
        .ok_or_else(|| TrainError::Data(format!("{}: no tensor {name}", tg.path().display())))?;
    let rows: usize = info.dims.iter().skip(1).map(|&d| d as usize).product();
    let ids: Vec<i32> = (0..rows as i32).collect();
    Ok(Embeddings::of_tensor(tg, name)?.rows(&ids))
}

/// Replace parameter `name` with `data` (same number of values, the parameter's shape).
fn set(net: &Net, name: &str, data: Vec<f32>) -> Result<(), TrainError> {
    let var = net
        .var(name)
        .ok_or_else(|| TrainError::Data(format!("no parameter {name}")))?;
    if var.elem_count() != data.len() {
        return Err(TrainError::Data(format!(
            "{name}: the source tensor has {} values, the drafter's {}",
            data.len(),
            var.elem_count()
        )));
    }
    var.set(&Tensor::from_vec(data, var.shape(), &Device::Cpu)?)?;
    Ok(())
}

/// Undo llama.cpp's Q/K permutation: within each head, GGUF row `2i + j` is HF row
/// `j·(head_dim/2) + i`.
fn unpermute_rope_rows(w: &[f32], heads: usize, head_dim: usize, cols: usize) -> Vec<f32> {
    let half = head_dim / 2;
    let mut out = vec![0.0; w.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let from = (h * head_dim + 2 * i + j) * cols;
                let to = (h * head_dim + j * half + i) * cols;
                out[to..to + cols].copy_from_slice(&w[from..from + cols]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inverse of the converter's `permute` (reshape(h, 2, hd/2, c).swapaxes(1, 2)).
    #[test]
    fn unpermute_inverts_the_converters_permutation() {
        let (heads, hd, cols) = (2, 4, 3);
        let hf: Vec<f32> = (0..heads * hd * cols).map(|x| x as f32).collect();
        let mut gguf = vec![0.0; hf.len()];
        for h in 0..heads {
            for j in 0..2 {
                for i in 0..hd / 2 {
                    let from = (h * hd + j * hd / 2 + i) * cols;
                    let to = (h * hd + 2 * i + j) * cols;
                    gguf[to..to + cols].copy_from_slice(&hf[from..from + cols]);
                }
            }
        }
        assert_ne!(gguf, hf);
        assert_eq!(unpermute_rope_rows(&gguf, heads, hd, cols), hf);
    }
}
