//! A llama.cpp context over one model: KV cache, batched decode, logits, rollback.

use std::sync::Arc;

use llama_cpp_sys_2 as sys;

use super::{Model, Result, TargetError, Token};

/// Context settings. Plain data.
#[derive(Debug, Clone)]
pub struct ContextParams {
    /// Context size in tokens (at least 16).
    pub n_ctx: u32,
    /// Threads llama.cpp decodes with.
    pub n_threads: i32,
    /// Largest batch one decode may take (prompt chunks, verification batches).
    pub n_batch: u32,
    /// Flash attention: `None` lets llama.cpp decide.
    pub flash_attn: Option<bool>,
}

impl Default for ContextParams {
    fn default() -> Self {
        Self {
            n_ctx: 4096,
            n_threads: default_threads(),
            n_batch: 512,
            flash_attn: None,
        }
    }
}

impl ContextParams {
    /// Largest decode for speculative decoding with drafts of up to `draft_max` tokens:
    /// room for a verification batch (the draft plus the last token) and at least 512
    /// (prompt chunks), never more than the context.
    pub fn verify_batch(draft_max: usize, n_ctx: u32) -> u32 {
        ((draft_max + 1).max(512) as u32).min(n_ctx)
    }
}

/// Threads to use by default: the available parallelism, clamped to 1..=16.
pub fn default_threads() -> i32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as i32)
        .unwrap_or(2)
        .clamp(1, 16)
}

/// Which rows of a decoded batch need logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outputs {
    /// Every position (verification).
    All,
    /// Only the last position (prompt prefill, plain decoding).
    Last,
    /// No logits: the final-norm hidden state of every position, for Tandem's own output
    /// head (the graph stops before llama.cpp's head; see [`Context::hidden`]).
    Hidden,
}

/// What the eval callback captures. Boxed so its address is stable for llama.cpp's callback.
struct Capture {
    /// Capture `result_norm` during the current decode (only `Outputs::Hidden` decodes).
    active: bool,
    /// Rows of `result_norm` captured by the current decode.
    rows: usize,
    data: Vec<f32>,
    /// Graph tensor names holding the wanted target-layer inputs (`l_out-{il-1}`), and the
    /// rows captured for each, appended over every chunk of the current decode.
    feature_names: Vec<Vec<u8>>,
    features: Vec<Vec<f32>>,
    /// Feature layers read from llama.cpp's layer-input outputs instead (a target on a
    /// GPU whose graph records them: no graph split, asynchronous copies).
    layer_inputs: Vec<u32>,
    /// Tokens of the last decode (rows of the layer-input outputs).
    decoded: usize,
    /// The layers asked for by the last `set_feature_layers`.
    layers: Vec<usize>,
}

unsafe extern "C" {
    fn tandem_set_layer_input(ctx: *mut sys::llama_context, layer: u32, on: bool);
    fn tandem_layer_input(ctx: *mut sys::llama_context, layer: u32) -> *const f32;
}

/// ggml's scheduler calls this for every graph node: first asking whether we want the node
/// (`ask`), then, for nodes we want, after computing up to it. Returning `false` then stops
/// the rest of the graph: everything after `result_norm` is the output head, which the lazy
/// head computes itself. The KV cache has been written by then. Target-layer inputs (for
/// drafters conditioned on the target's hidden states) are copied out and the graph goes on.
unsafe extern "C" fn capture_hidden(
    t: *mut sys::ggml_tensor,
    ask: bool,
    user: *mut std::ffi::c_void,
) -> bool {
    // SAFETY: user is the context's boxed Capture (outlives the context); t is a valid
    // tensor for the duration of the call.
    let cap = unsafe { &mut *(user as *mut Capture) };
    let name = unsafe { std::ffi::CStr::from_ptr((*t).name.as_ptr()) }.to_bytes();
    let hidden = cap.active && name == b"result_norm";
    let feature = cap.feature_names.iter().position(|n| n.as_slice() == name);
    if ask {
        return hidden || feature.is_some();
    }
    // SAFETY: a computed f32 tensor [n_embd, rows] on the CPU backend.
    let n = unsafe { sys::ggml_nelements(t) as usize };
    if let Some(i) = feature {
        let buf = &mut cap.features[i];
        let start = buf.len();
        buf.resize(start + n, 0.0);
        unsafe {
            sys::ggml_backend_tensor_get(
                t,
                buf[start..].as_mut_ptr() as *mut std::ffi::c_void,
                0,
                n * 4,
            );
        }
        return true;
    }
    if hidden {
        cap.data.resize(n, 0.0);
        unsafe {
            sys::ggml_backend_tensor_get(
                t,
                cap.data.as_mut_ptr() as *mut std::ffi::c_void,
                0,
                n * 4,
            );
            cap.rows = (*t).ne[1] as usize;
        }
        return false;
    }
    true
}

/// One sequence's llama.cpp context. Not `Sync`: one decode at a time.
pub struct Context {
    ctx: *mut sys::llama_context,
    batch: sys::llama_batch,
    n_batch: usize,
    n_ctx: usize,
    n_vocab: usize,
    /// Number of logit rows the last decode produced.
    n_outputs: usize,
    /// Batch index of output row 0 (llama.cpp addresses logits by batch index).
    first_output: usize,
    capture: Box<Capture>,
    model: Arc<Model>,
    /// What the llama.cpp context was created with (to create it again).
    cparams: sys::llama_context_params,
    /// Whether a graph has been computed since the llama.cpp context was created.
    used: bool,
}

// SAFETY: the context is used from one thread at a time (&mut self for every mutation);
// moving it between threads is fine for llama.cpp.
unsafe impl Send for Context {}

impl Context {
    /// Create a context for `model` with `params`.
    pub fn new(model: Arc<Model>, params: &ContextParams) -> Result<Self> {
        let n_ctx = params.n_ctx.max(16);
        let n_batch = params.n_batch.clamp(1, n_ctx);
        let mut capture = Box::new(Capture {
            active: false,
            rows: 0,
            data: Vec::new(),
            feature_names: Vec::new(),
            features: Vec::new(),
            layer_inputs: Vec::new(),
            decoded: 0,
            layers: Vec::new(),
        });
        // SAFETY: default params are plain data.
        let cparams = unsafe {
            let mut cp = sys::llama_context_default_params();
            cp.n_ctx = n_ctx;
            cp.n_batch = n_batch;
            cp.n_ubatch = n_batch;
            cp.n_seq_max = 1;
            cp.n_threads = params.n_threads;
            cp.n_threads_batch = params.n_threads;
            cp.no_perf = true;
            cp.cb_eval = Some(capture_hidden);
            cp.cb_eval_user_data = &mut *capture as *mut Capture as *mut std::ffi::c_void;
            // Sliding-window models (Gemma 3) must keep their whole window history so that
            // rolling back rejected draft tokens never leaves a hole in the window.
            cp.swa_full = true;
            cp.flash_attn_type = match params.flash_attn {
                None => sys::LLAMA_FLASH_ATTN_TYPE_AUTO,
                Some(true) => sys::LLAMA_FLASH_ATTN_TYPE_ENABLED,
                Some(false) => sys::LLAMA_FLASH_ATTN_TYPE_DISABLED,
            };
            cp
        };
        // SAFETY: model is valid for the context's lifetime (we hold an Arc to it); the
        // callback's user data is the boxed Capture, which the Context owns.
        let ctx = unsafe { sys::llama_init_from_model(model.raw(), cparams) };
        if ctx.is_null() {
            return Err(TargetError::ContextFailed { n_ctx });
        }
        // SAFETY: allocates token/pos/seq/logits arrays for n_batch entries, one seq each.
        let batch = unsafe { sys::llama_batch_init(n_batch as i32, 0, 1) };
        // SAFETY: valid context.
        // llama.cpp may round the context up (to 256); we honour what was asked for.
        let real_ctx = (unsafe { sys::llama_n_ctx(ctx) } as usize).min(n_ctx as usize);
        let n_vocab = model.n_vocab();
        Ok(Self {
            ctx,
            batch,
            n_batch: n_batch as usize,
            n_ctx: real_ctx,
            n_vocab,
            n_outputs: 0,
            first_output: 0,
            capture,
            model,
            cparams,
            used: false,
        })
    }

    #[cfg(feature = "bench")]
    pub(super) fn raw(&mut self) -> *mut sys::llama_context {
        self.ctx
    }

    /// The model this context runs.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Context size in tokens (as asked, even if llama.cpp rounded it up).
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Largest number of tokens one llama.cpp batch takes.
    pub fn n_batch(&self) -> usize {
        self.n_batch
    }

    /// The model's vocabulary size (tokens).
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// Decode `tokens` at positions `start_pos..`, in chunks of at most `n_batch`.
    /// With [`Outputs::All`] every position of the *last chunk* gets a logit row (callers
    /// verifying drafts keep their batch within `n_batch`).
    pub fn decode(&mut self, tokens: &[Token], start_pos: usize, outputs: Outputs) -> Result<()> {
        if tokens.is_empty() {
            return Ok(());
        }
        if start_pos + tokens.len() > self.n_ctx {
            return Err(TargetError::ContextFull { n_ctx: self.n_ctx });
        }
        let n_chunks = tokens.len().div_ceil(self.n_batch);
        self.capture.rows = 0;
        self.capture.features.iter_mut().for_each(Vec::clear);
        // Set again after a successful decode (below).
        self.capture.decoded = 0;
        for (ci, chunk) in tokens.chunks(self.n_batch).enumerate() {
            let last_chunk = ci + 1 == n_chunks;
            let pos0 = start_pos + ci * self.n_batch;
            // SAFETY: the batch arrays were allocated for n_batch >= chunk.len() entries
            // with one seq id each.
            unsafe {
                for (i, &t) in chunk.iter().enumerate() {
                    *self.batch.token.add(i) = t;
                    *self.batch.pos.add(i) = (pos0 + i) as i32;
                    *self.batch.n_seq_id.add(i) = 1;
                    *(*self.batch.seq_id.add(i)) = 0;
                    let want = last_chunk && (outputs != Outputs::Last || i + 1 == chunk.len());
                    *self.batch.logits.add(i) = want as i8;
                }
                self.batch.n_tokens = chunk.len() as i32;
            }
            self.capture.active = last_chunk && outputs == Outputs::Hidden;
            // SAFETY: valid context and a fully initialised batch.
            let rc = unsafe { sys::llama_decode(self.ctx, self.batch) };
            self.capture.active = false;
            self.used = true;
            if rc != 0 {
                return Err(TargetError::Decode(rc));
            }
            if last_chunk {
                (self.n_outputs, self.first_output) = match outputs {
                    Outputs::All => (chunk.len(), 0),
                    Outputs::Last => (1, chunk.len() - 1),
                    Outputs::Hidden => {
                        if self.capture.rows != chunk.len() {
                            return Err(TargetError::NoHidden);
                        }
                        (0, 0)
                    }
                };
            }
        }
        // Layer-input outputs hold one chunk's rows: features of single-chunk decodes only
        // (the engine decodes the prompt chunk by chunk itself).
        if n_chunks == 1 {
            self.capture.decoded = tokens.len();
        }
        Ok(())
    }

    /// Logits of output row `i` of the last decode (row 0 = first position that asked for
    /// logits). Borrowed from llama.cpp: valid until the next decode.
    pub fn logits(&self, i: usize) -> &[f32] {
        assert!(
            i < self.n_outputs,
            "logit row {i} of {} requested",
            self.n_outputs
        );
        // SAFETY: i < n_outputs, so llama.cpp has a row of n_vocab floats for it; the
        // borrow of self keeps the context (and so the buffer) alive and unmodified.
        unsafe {
            let p = sys::llama_get_logits_ith(self.ctx, (self.first_output + i) as i32);
            assert!(!p.is_null(), "llama.cpp has no logits for row {i}");
            std::slice::from_raw_parts(p, self.n_vocab)
        }
    }

    /// Final-norm hidden state of position `i` of the last [`Outputs::Hidden`] decode (the
    /// input of the output head). Valid until the next decode.
    pub fn hidden(&self, i: usize) -> &[f32] {
        let n = self.model.n_embd();
        assert!(
            i < self.capture.rows,
            "hidden row {i} of {}",
            self.capture.rows
        );
        &self.capture.data[i * n..(i + 1) * n]
    }

    /// Capture the inputs of these target layers (llama.cpp's layer-input indices, 1 ..
    /// n_layer − 1) in every decode from now on; empty turns capturing off. `true` when
    /// the KV cache was emptied to do so: on a GPU, a context that has computed graphs is
    /// created afresh when the captured layers change (below).
    pub fn set_feature_layers(&mut self, layers: &[usize]) -> Result<bool> {
        let n_layer = self.model.n_layer();
        if let Some(&bad) = layers.iter().find(|&&l| l == 0 || l >= n_layer) {
            return Err(TargetError::FeatureLayer {
                layer: bad,
                n_layer,
            });
        }
        self.capture.decoded = 0;
        if layers == self.capture.layers.as_slice() {
            // Each change of llama.cpp's layer-input outputs re-reserves its scheduler.
            return Ok(false);
        }
        // On ggml-vulkan (lavapipe, Mesa 22.3) a context that has computed graphs and then
        // computes them with other outputs (layer inputs) or split at other nodes (the eval
        // callback) corrupts memory; one that starts with the new captures runs them. So a
        // GPU context changing its captures after decoding is made anew (cache emptied).
        let rebuild = self.model.on_gpu() && self.used;
        if rebuild {
            // SAFETY: the old context is freed once and replaced; the parameters are the
            // ones it was created with (their callback data, the boxed Capture, lives on).
            let ctx = unsafe { sys::llama_init_from_model(self.model.raw(), self.cparams) };
            if ctx.is_null() {
                return Err(TargetError::ContextFailed {
                    n_ctx: self.cparams.n_ctx,
                });
            }
            // SAFETY: the replaced context is no longer referenced anywhere.
            unsafe { sys::llama_free(std::mem::replace(&mut self.ctx, ctx)) };
            self.used = false;
            self.capture.layer_inputs.clear();
        }
        for &l in &self.capture.layer_inputs {
            // SAFETY: a live context; the layer index is in range.
            unsafe { tandem_set_layer_input(self.ctx, l, false) };
        }
        self.capture.layer_inputs.clear();
        self.capture.feature_names.clear();
        self.capture.features.clear();
        self.capture.layers = layers.to_vec();
        if self.model.on_gpu() && self.model.records_layer_inputs() {
            for &l in layers {
                // SAFETY: as above.
                unsafe { tandem_set_layer_input(self.ctx, l as u32, true) };
                self.capture.layer_inputs.push(l as u32);
            }
            return Ok(rebuild);
        }
        // The input of layer il is the output of layer il − 1, named "l_out-{il-1}" in
        // every llama.cpp model graph.
        self.capture.feature_names = layers
            .iter()
            .map(|l| format!("l_out-{}", l - 1).into_bytes())
            .collect();
        self.capture.features = vec![Vec::new(); layers.len()];
        Ok(rebuild)
    }

    /// The captured features of rows `rows` of the last decode (over all its chunks), one
    /// position after another, each the concatenation of the layers in the order given to
    /// [`Context::set_feature_layers`] — the layout llama.cpp's DFlash drafters read.
    pub fn features_into(&self, rows: std::ops::Range<usize>, out: &mut Vec<f32>) -> Result<()> {
        let n = self.model.n_embd();
        out.clear();
        if !self.capture.layer_inputs.is_empty() {
            if rows.is_empty() {
                return Ok(());
            }
            if rows.end > self.capture.decoded {
                return Err(TargetError::NoFeatures);
            }
            let layers: Vec<&[f32]> = (self.capture.layer_inputs.iter())
                .map(|&l| {
                    // SAFETY: a live context that output layer l's inputs for the last
                    // decode's `decoded` tokens (≤ n_batch rows of n_embd floats).
                    unsafe {
                        let p = tandem_layer_input(self.ctx, l);
                        std::slice::from_raw_parts(p, self.capture.decoded * n)
                    }
                })
                .collect();
            for r in rows {
                for f in &layers {
                    out.extend_from_slice(&f[r * n..(r + 1) * n]);
                }
            }
            return Ok(());
        }
        for f in &self.capture.features {
            if f.len() < rows.end * n {
                return Err(TargetError::NoFeatures);
            }
        }
        for r in rows {
            for f in &self.capture.features {
                out.extend_from_slice(&f[r * n..(r + 1) * n]);
            }
        }
        Ok(())
    }

    /// Number of logit rows available from the last decode.
    pub fn n_outputs(&self) -> usize {
        self.n_outputs
    }

    /// Drop every cached position `>= from` (the rejected tail of a draft).
    pub fn truncate(&mut self, from: usize) -> Result<()> {
        // SAFETY: valid context; its memory handle lives as long as the context.
        let ok = unsafe {
            sys::llama_memory_seq_rm(sys::llama_get_memory(self.ctx), 0, from as i32, -1)
        };
        if ok {
            Ok(())
        } else {
            Err(TargetError::Rollback(from as i32))
        }
    }

    /// Number of positions in the KV cache (max position + 1; 0 when empty).
    pub fn kv_len(&self) -> usize {
        // SAFETY: valid context; -1 means empty.
        let p = unsafe { sys::llama_memory_seq_pos_max(sys::llama_get_memory(self.ctx), 0) };
        (p + 1).max(0) as usize
    }

    /// A copy of the KV cache's cells (the one sequence), to restore later with
    /// [`Context::restore_cells`] (a prompt-cache slot).
    pub fn save_cells(&self) -> Vec<u8> {
        // SAFETY: valid context; the buffer is as large as llama.cpp says it needs.
        unsafe {
            let n = sys::llama_state_seq_get_size(self.ctx, 0);
            let mut buf = vec![0u8; n];
            let w = sys::llama_state_seq_get_data(self.ctx, buf.as_mut_ptr(), n, 0);
            buf.truncate(w);
            buf
        }
    }

    /// Replace the KV cache's cells with ones saved by [`Context::save_cells`] on a
    /// context of the same model.
    pub fn restore_cells(&mut self, data: &[u8]) -> Result<()> {
        self.clear();
        // SAFETY: valid context; data is valid for its length.
        let read = unsafe { sys::llama_state_seq_set_data(self.ctx, data.as_ptr(), data.len(), 0) };
        if read == 0 {
            self.clear();
            return Err(TargetError::Restore);
        }
        Ok(())
    }

    /// Empty the KV cache.
    pub fn clear(&mut self) {
        // SAFETY: valid context.
        unsafe { sys::llama_memory_clear(sys::llama_get_memory(self.ctx), true) }
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: batch and ctx were created in new() and are freed exactly once.
        unsafe {
            sys::llama_batch_free(self.batch);
            sys::llama_free(self.ctx);
        }
    }
}
