//! Export a trained network as a `dflash` GGUF: the drafter's own layers and head, the
//! target's tokenizer, a `d2t` map for the reduced vocabulary; token embeddings stay the
//! target's (shared, not copied).

use std::path::Path;

use super::data::DraftVocab;
use super::net::Net;
use crate::gguf::write::GgufWriter;
use crate::gguf::{GgmlType, Gguf, GgufError};

/// Write `net` to `out`; matrices as `wtype` (F32, F16, BF16, Q8_0), norms as F32. The file
/// is written beside `out` and renamed into place. `feature_scale` (empty: none) is what the
/// network's feature inputs were divided by in training; it is folded into `fc.weight`
/// (`W · diag(1/s)`), so the exported drafter takes the target's raw features — the format
/// and llama.cpp's graph stay unchanged.
pub fn export(
    net: &Net,
    vocab: &DraftVocab,
    feature_scale: &[f32],
    target: &Gguf,
    out: &Path,
    wtype: GgmlType,
) -> Result<(), GgufError> {
    let mut w = GgufWriter::default();
    net.shape
        .write_header(&mut w, target, "tandem trained dflash drafter")?;
    for (name, p) in &net.params {
        let t = p.as_tensor();
        let mut data: Vec<f32> = t
            .flatten_all()
            .and_then(|x| x.to_vec1())
            .expect("f32 parameters");
        if name == "fc.weight" {
            super::divide_columns(&mut data, feature_scale);
        }
        let dims: Vec<u64> = t.dims().iter().rev().map(|&d| d as u64).collect();
        // fc.weight multiplies the target's raw residual stream, which can exceed f16's
        // range (Gemma 3's attention-sink position does); an F16 weight makes ggml and
        // Tandem round those activations to f16 — infinities, then NaN everywhere. F32
        // keeps the product in f32 (1.2 M weights on Gemma: +2.5 MB).
        let ty = if dims.len() == 1 || name == "fc.weight" {
            GgmlType::F32
        } else {
            wtype
        };
        w.tensor_f32(name, &dims, ty, &data);
    }
    let d2t: Vec<u8> = vocab
        .d2t
        .iter()
        .flat_map(|&t| (t as i64).to_le_bytes())
        .collect();
    w.tensor_raw("d2t", &[vocab.len() as u64], GgmlType::I64, d2t);
    let tmp = out.with_extension("gguf.part");
    let io = |err| GgufError::Io {
        path: out.display().to_string(),
        err,
    };
    w.write(&tmp).map_err(io)?;
    std::fs::rename(&tmp, out).map_err(io)
}
