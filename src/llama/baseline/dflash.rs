//! llama.cpp's own DFlash drafter graph, through `cpp/llama_dflash.cpp`: the reference that
//! Tandem's Rust drafter is checked against (parity tests) and timed against (bench).

use std::ffi::CString;
use std::path::Path;
use std::sync::Arc;

use crate::llama::{Context, ContextParams, Model, Result, TargetError, Token};

#[repr(C)]
struct RawDflash {
    _private: [u8; 0],
}

unsafe extern "C" {
    fn tandem_dflash_open(
        path: *const std::ffi::c_char,
        ctx_tgt: *mut llama_cpp_sys_2::llama_context,
        n_ctx: i32,
        n_threads: i32,
        n_features: i32,
        exact: bool,
        err: *mut std::ffi::c_char,
        err_len: usize,
    ) -> *mut RawDflash;
    fn tandem_dflash_inject(d: *mut RawDflash, feats: *const f32, n: i32, pos0: i32) -> i32;
    fn tandem_dflash_block(
        d: *mut RawDflash,
        tokens: *const i32,
        n: i32,
        pos0: i32,
        out: *mut f32,
    ) -> i32;
    fn tandem_dflash_clear(d: *mut RawDflash);
    fn tandem_dflash_free(d: *mut RawDflash);
}

/// A DFlash drafter run by llama.cpp. It owns a small context of the target model, which
/// llama.cpp's graph reads the shared embeddings and output head through (`ctx_other`).
pub struct LlamaDflash {
    raw: *mut RawDflash,
    n_vocab: usize,
    n_features: usize,
    // Declared after `raw`: dropped after the drafter that points into it.
    _target_ctx: Box<Context>,
}

// SAFETY: used from one thread at a time (&mut self for every call).
unsafe impl Send for LlamaDflash {}

impl LlamaDflash {
    /// `exact`: F32 KV cache, no flash attention, no weight repacking (plain f32 attention
    /// arithmetic, for parity); otherwise llama.cpp's defaults (for speed comparisons).
    pub fn open(
        path: &Path,
        target: Arc<Model>,
        n_ctx: u32,
        threads: i32,
        exact: bool,
    ) -> Result<Self> {
        let shown = path.display().to_string();
        let cpath = CString::new(shown.clone()).map_err(|_| TargetError::BadPath(shown.clone()))?;
        let n_vocab = target.n_vocab();
        // Features per position: the drafter's target layers times the target's width.
        let g = crate::gguf::Gguf::open(path).map_err(|e| TargetError::LlamaSpec(e.to_string()))?;
        let n_features = match g.get("dflash.target_layers") {
            Some(crate::gguf::Value::Array(a)) => a.len() * target.n_embd(),
            _ => {
                return Err(TargetError::LlamaSpec(format!(
                    "{shown}: no dflash.target_layers"
                )));
            }
        };
        let mut tctx = Box::new(Context::new(
            target,
            &ContextParams {
                n_ctx: 32,
                n_threads: threads,
                n_batch: 32,
                flash_attn: None,
            },
        )?);
        let mut err = vec![0 as std::ffi::c_char; 512];
        // SAFETY: valid C string, live target context (owned by the result), error buffer
        // of the given length.
        let raw = unsafe {
            tandem_dflash_open(
                cpath.as_ptr(),
                tctx.raw(),
                n_ctx as i32,
                threads,
                n_features as i32,
                exact,
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if raw.is_null() {
            // SAFETY: the shim NUL-terminates the message.
            let msg = unsafe { std::ffi::CStr::from_ptr(err.as_ptr()) }
                .to_string_lossy()
                .into_owned();
            return Err(TargetError::LlamaSpec(format!("{shown}: {msg}")));
        }
        Ok(Self {
            raw,
            n_vocab,
            n_features,
            _target_ctx: tctx,
        })
    }

    /// Width of one position's features (target layers × target embedding width).
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// Inject features of positions `pos0..` (rows of `n_features`).
    pub fn inject(&mut self, feats: &[f32], pos0: usize) -> Result<()> {
        let n = feats.len() / self.n_features;
        assert_eq!(n * self.n_features, feats.len());
        // SAFETY: live drafter; feats holds n rows.
        let rc = unsafe { tandem_dflash_inject(self.raw, feats.as_ptr(), n as i32, pos0 as i32) };
        if rc != 0 {
            return Err(TargetError::Decode(rc));
        }
        Ok(())
    }

    /// Logits of block rows 1.. for `tokens` at positions `pos0..` (the block is removed from
    /// the drafter's cache afterwards). `None`: decode only (timing).
    pub fn block(
        &mut self,
        tokens: &[Token],
        pos0: usize,
        logits: Option<&mut Vec<Vec<f32>>>,
    ) -> Result<()> {
        let n = tokens.len();
        let mut buf = if logits.is_some() {
            vec![0.0f32; (n - 1) * self.n_vocab]
        } else {
            Vec::new()
        };
        let out = if logits.is_some() {
            buf.as_mut_ptr()
        } else {
            std::ptr::null_mut()
        };
        // SAFETY: live drafter; tokens has n entries; out is null or (n-1) x n_vocab floats.
        let rc =
            unsafe { tandem_dflash_block(self.raw, tokens.as_ptr(), n as i32, pos0 as i32, out) };
        if rc != 0 {
            return Err(TargetError::Decode(rc));
        }
        if let Some(l) = logits {
            l.clear();
            l.extend(buf.chunks_exact(self.n_vocab).map(<[f32]>::to_vec));
        }
        Ok(())
    }

    /// Empty the drafter's KV cache.
    pub fn clear(&mut self) {
        // SAFETY: live drafter.
        unsafe { tandem_dflash_clear(self.raw) }
    }
}

impl Drop for LlamaDflash {
    fn drop(&mut self) {
        // SAFETY: created in open, freed once; the target context is dropped afterwards.
        unsafe { tandem_dflash_free(self.raw) }
    }
}
