//! Re-quantising a GGUF through llama.cpp's own quantiser (`llama_model_quantize`): the
//! file types `llama-quantize` offers (`q4_k_m`, `q6_k`, …), optionally with the output head
//! and the token embeddings in a chosen tensor type (as its `--output-tensor-type` and
//! `--token-embedding-type`). Used for test targets in the quant types users download and
//! for weaker "amateur" copies in contrastive decoding.

use std::ffi::CString;
use std::path::Path;

use llama_cpp_sys_2 as sys;

use super::{Result, TargetError, init_backend};

/// File types offered, by `llama-quantize`'s names (llama.cpp's `LLAMA_FTYPE_*`).
pub const QUANT_TYPES: &[(&str, u32)] = &[
    ("q4_0", sys::LLAMA_FTYPE_MOSTLY_Q4_0),
    ("q4_1", sys::LLAMA_FTYPE_MOSTLY_Q4_1),
    ("q5_0", sys::LLAMA_FTYPE_MOSTLY_Q5_0),
    ("q5_1", sys::LLAMA_FTYPE_MOSTLY_Q5_1),
    ("q8_0", sys::LLAMA_FTYPE_MOSTLY_Q8_0),
    ("q2_k", sys::LLAMA_FTYPE_MOSTLY_Q2_K),
    ("q2_k_s", sys::LLAMA_FTYPE_MOSTLY_Q2_K_S),
    ("q3_k_s", sys::LLAMA_FTYPE_MOSTLY_Q3_K_S),
    ("q3_k_m", sys::LLAMA_FTYPE_MOSTLY_Q3_K_M),
    ("q3_k_l", sys::LLAMA_FTYPE_MOSTLY_Q3_K_L),
    ("q4_k_s", sys::LLAMA_FTYPE_MOSTLY_Q4_K_S),
    ("q4_k_m", sys::LLAMA_FTYPE_MOSTLY_Q4_K_M),
    ("q5_k_s", sys::LLAMA_FTYPE_MOSTLY_Q5_K_S),
    ("q5_k_m", sys::LLAMA_FTYPE_MOSTLY_Q5_K_M),
    ("q6_k", sys::LLAMA_FTYPE_MOSTLY_Q6_K),
    ("f16", sys::LLAMA_FTYPE_MOSTLY_F16),
    ("bf16", sys::LLAMA_FTYPE_MOSTLY_BF16),
    ("f32", sys::LLAMA_FTYPE_ALL_F32),
];

/// Tensor types forced for the shared tensors (`None`: llama.cpp's choice for the file
/// type).
#[derive(Debug, Clone, Copy, Default)]
pub struct QuantOverrides {
    /// `output.weight` (and tied token embeddings), as `--output-tensor-type`.
    pub output: Option<crate::gguf::GgmlType>,
    /// `token_embd.weight` of untied models, as `--token-embedding-type`.
    pub token_embd: Option<crate::gguf::GgmlType>,
}

/// Write `input` re-quantised as `ty` (a name from [`QUANT_TYPES`]) to `output`.
pub fn quantize(input: &Path, output: &Path, ty: &str, threads: i32) -> Result<()> {
    quantize_with(input, output, ty, threads, QuantOverrides::default())
}

/// [`quantize`] with the shared tensors' types forced.
pub fn quantize_with(
    input: &Path,
    output: &Path,
    ty: &str,
    threads: i32,
    over: QuantOverrides,
) -> Result<()> {
    let ftype = QUANT_TYPES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(ty))
        .map(|x| x.1)
        .ok_or_else(|| {
            TargetError::Quantize(format!(
                "unknown type '{ty}' (known: {})",
                QUANT_TYPES
                    .iter()
                    .map(|x| x.0)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    super::model::check_gguf_header(input)?;
    let c = |p: &Path| {
        p.to_str()
            .and_then(|s| CString::new(s).ok())
            .ok_or_else(|| TargetError::BadPath(p.display().to_string()))
    };
    let (ci, co) = (c(input)?, c(output)?);
    init_backend();
    // SAFETY: default params are plain data; both paths are NUL-terminated and outlive the
    // call; llama.cpp returns non-zero on failure.
    let rc = unsafe {
        let mut p = sys::llama_model_quantize_default_params();
        p.nthread = threads;
        p.ftype = ftype;
        p.allow_requantize = true;
        if let Some(t) = over.output {
            p.output_tensor_type = t.id() as sys::ggml_type;
        }
        if let Some(t) = over.token_embd {
            p.token_embedding_type = t.id() as sys::ggml_type;
        }
        sys::llama_model_quantize(ci.as_ptr(), co.as_ptr(), &p)
    };
    if rc != 0 {
        let _ = std::fs::remove_file(output);
        return Err(TargetError::Quantize(format!(
            "llama.cpp could not quantise {} to {ty}",
            input.display()
        )));
    }
    Ok(())
}
