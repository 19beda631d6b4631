//! Re-quantising a GGUF through llama.cpp's own quantiser (`llama_model_quantize`), e.g. a
//! weaker low-bit copy of a model with the same vocabulary (an "amateur" for contrastive
//! decoding).

use std::ffi::CString;
use std::path::Path;

use llama_cpp_sys_2 as sys;

use super::{Result, TargetError, init_backend};

/// Quantisation types offered (llama.cpp's `LLAMA_FTYPE_MOSTLY_*`).
pub const QUANT_TYPES: &[(&str, u32)] = &[
    ("q2_k", sys::LLAMA_FTYPE_MOSTLY_Q2_K),
    ("q3_k_s", sys::LLAMA_FTYPE_MOSTLY_Q3_K_S),
    ("q4_0", sys::LLAMA_FTYPE_MOSTLY_Q4_0),
    ("q8_0", sys::LLAMA_FTYPE_MOSTLY_Q8_0),
];

/// Write `input` re-quantised as `ty` (a name from [`QUANT_TYPES`]) to `output`.
pub fn quantize(input: &Path, output: &Path, ty: &str, threads: i32) -> Result<()> {
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
