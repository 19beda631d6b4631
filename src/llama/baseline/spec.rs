//! llama.cpp's own speculative decoding (its `common_speculative` n-gram and DFlash modes), run on a
//! Tandem context through `cpp/llama_spec.cpp`. The benchmark baseline: same binary, same
//! build flags, same llama.cpp version.

use std::ffi::{CString, c_char};

use crate::llama::{Context, Result, TargetError, Token};

/// Counters and timings of one [`llama_spec_generate`] run (filled in by the C++ shim).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct LlamaSpecStats {
    /// Tokens generated.
    pub n_generated: i32,
    /// Draft-and-verify rounds.
    pub n_rounds: i32,
    /// Draft tokens proposed.
    pub n_drafted: i32,
    /// Draft tokens accepted.
    pub n_accepted: i32,
    /// Prompt prefill time (seconds).
    pub t_prefill_s: f64,
    /// Drafting time, feature injection included (seconds).
    pub t_draft_s: f64,
    /// Verification decode time (seconds).
    pub t_verify_s: f64,
    /// Total time, prefill included (seconds).
    pub t_total_s: f64,
}

unsafe extern "C" {
    fn tandem_llama_spec_generate(
        ctx: *mut llama_cpp_sys_2::llama_context,
        prompt: *const i32,
        n_prompt: i32,
        n_predict: i32,
        spec_types: *const c_char,
        draft_max: i32,
        drafter_path: *const c_char,
        out_tokens: *mut i32,
        stats: *mut LlamaSpecStats,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
}

/// Greedy generation with llama.cpp's speculative loop. `spec_types` is "none" or
/// llama.cpp's names ("ngram-simple", "ngram-mod", "ngram-map-k", "ngram-cache",
/// "draft-dflash", comma-separated); `drafter` is the dflash GGUF for "draft-dflash".
pub fn llama_spec_generate(
    ctx: &mut Context,
    prompt: &[Token],
    n_predict: usize,
    spec_types: &str,
    draft_max: usize,
    drafter: Option<&std::path::Path>,
) -> Result<(Vec<Token>, LlamaSpecStats)> {
    let types =
        CString::new(spec_types).map_err(|_| TargetError::Tokenize("NUL in spec type".into()))?;
    let drafter = CString::new(
        drafter
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
    )
    .map_err(|_| TargetError::Tokenize("NUL in drafter path".into()))?;
    let mut out = vec![0 as Token; n_predict.max(1)];
    let mut stats = LlamaSpecStats::default();
    let mut err = vec![0u8; 512];
    // SAFETY: ctx is a live context we hold mutably; prompt/out/stats/err are valid for the
    // lengths passed; the shim catches C++ exceptions and writes at most n_predict tokens.
    let rc = unsafe {
        tandem_llama_spec_generate(
            ctx.raw(),
            prompt.as_ptr(),
            prompt.len() as i32,
            n_predict as i32,
            types.as_ptr(),
            draft_max as i32,
            drafter.as_ptr(),
            out.as_mut_ptr(),
            &mut stats,
            err.as_mut_ptr() as *mut c_char,
            err.len(),
        )
    };
    if rc != 0 {
        let n = err.iter().position(|&b| b == 0).unwrap_or(err.len());
        return Err(TargetError::LlamaSpec(
            String::from_utf8_lossy(&err[..n]).into_owned(),
        ));
    }
    out.truncate(stats.n_generated.max(0) as usize);
    Ok((out, stats))
}
