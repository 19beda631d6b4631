//! A loaded GGUF model: weights, vocabulary, chat template.

use std::ffi::{CStr, CString, c_char};
use std::path::Path;
use std::sync::Mutex;

use llama_cpp_sys_2 as sys;

use super::{Result, TargetError, Token, init_backend};
use crate::gguf::{Header, HeaderError, read_header};

/// How to load a model. Plain data; `Default` is what the CLI uses.
#[derive(Debug, Clone)]
pub struct ModelParams {
    /// Let ggml repack weights into its interleaved CPU layouts (faster, but its batched
    /// kernels then round differently from its single-token ones). `false` = exact mode.
    pub repack: bool,
    /// Layers on the GPU (llama.cpp's `n_gpu_layers`; negative = all). Only builds with a
    /// GPU backend (`--features cuda|vulkan|metal`) have a GPU to put them on.
    pub gpu_layers: i32,
}

impl Default for ModelParams {
    fn default() -> Self {
        Self {
            repack: true,
            gpu_layers: default_gpu_layers(),
        }
    }
}

/// Everything on the GPU when built with a GPU backend, nothing otherwise.
pub fn default_gpu_layers() -> i32 {
    if gpu_backend().is_some() { -1 } else { 0 }
}

/// The GPU backend this build has (`cuda`, `vulkan`, `metal`), if any.
pub fn gpu_backend() -> Option<&'static str> {
    if cfg!(feature = "cuda") {
        Some("cuda")
    } else if cfg!(feature = "vulkan") {
        Some("vulkan")
    } else if cfg!(feature = "metal") {
        Some("metal")
    } else {
        None
    }
}

/// A llama.cpp model. Immutable after load, so shared freely between contexts.
pub struct Model {
    ptr: *mut sys::llama_model,
    vocab: *const sys::llama_vocab,
    path: String,
    /// Layers were offloaded to a GPU device.
    on_gpu: bool,
    /// The vocabulary's single-byte and end-of-generation tokens, found on first use by a
    /// grammar (a scan of the whole vocabulary: ~0.1 s on a 262k vocabulary).
    byte_tokens: std::sync::OnceLock<std::sync::Arc<super::grammar::ByteTokens>>,
}

// SAFETY: llama.cpp models are read-only after load and documented as shareable across
// contexts and threads.
unsafe impl Send for Model {}
unsafe impl Sync for Model {}

/// The last error line llama.cpp logged while loading, so load failures can say why.
static LAST_LOAD_ERROR: Mutex<String> = Mutex::new(String::new());

impl Model {
    /// Load a GGUF file. The header is checked first so that a non-GGUF or truncated
    /// file is reported as such rather than as a generic llama.cpp failure.
    pub fn load(path: &Path, params: &ModelParams) -> Result<Self> {
        let shown = path.display().to_string();
        check_gguf_header(path)?;
        init_backend();
        let cpath = CString::new(
            path.to_str()
                .ok_or_else(|| TargetError::BadPath(shown.clone()))?,
        )
        .map_err(|_| TargetError::BadPath(shown.clone()))?;
        // SAFETY: default params are plain data; the path is NUL-terminated and lives
        // across the call. llama.cpp returns null on any load failure.
        let ptr = unsafe {
            let mut mp = sys::llama_model_default_params();
            mp.n_gpu_layers = params.gpu_layers;
            mp.use_extra_bufts = params.repack;
            LAST_LOAD_ERROR.lock().map(|mut s| s.clear()).ok();
            sys::llama_log_set(Some(capture_log), std::ptr::null_mut());
            let p = sys::llama_model_load_from_file(cpath.as_ptr(), mp);
            super::backend::restore_log();
            p
        };
        if ptr.is_null() {
            let why = LAST_LOAD_ERROR
                .lock()
                .map(|s| s.clone())
                .unwrap_or_default();
            let msg = if why.is_empty() {
                shown
            } else {
                format!("{shown}: {why}")
            };
            return Err(TargetError::LoadFailed(msg));
        }
        // SAFETY: ptr is a valid model; the vocab lives as long as the model.
        let vocab = unsafe { sys::llama_model_get_vocab(ptr) };
        // SAFETY: a plain query of the loaded backends.
        let on_gpu = params.gpu_layers != 0 && unsafe { sys::llama_supports_gpu_offload() };
        Ok(Self {
            ptr,
            vocab,
            on_gpu,
            path: shown,
            byte_tokens: std::sync::OnceLock::new(),
        })
    }

    /// Whether the model's layers run on a GPU (a GPU build, a device, `gpu_layers` ≠ 0).
    pub fn on_gpu(&self) -> bool {
        self.on_gpu
    }

    pub(super) fn raw(&self) -> *mut sys::llama_model {
        self.ptr
    }

    /// See the `byte_tokens` field.
    pub(super) fn byte_tokens(&self) -> std::sync::Arc<super::grammar::ByteTokens> {
        self.byte_tokens
            .get_or_init(|| std::sync::Arc::new(super::grammar::ByteTokens::of(self)))
            .clone()
    }

    /// The model file's path, as given.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Vocabulary size (tokens).
    pub fn n_vocab(&self) -> usize {
        // SAFETY: valid vocab pointer for the model's lifetime.
        unsafe { sys::llama_vocab_n_tokens(self.vocab) as usize }
    }

    /// Embedding (hidden) width.
    pub fn n_embd(&self) -> usize {
        // SAFETY: valid model pointer.
        unsafe { sys::llama_model_n_embd(self.ptr) as usize }
    }

    /// Number of transformer layers.
    pub fn n_layer(&self) -> usize {
        // SAFETY: valid model pointer.
        unsafe { sys::llama_model_n_layer(self.ptr) as usize }
    }

    /// Context length the model was trained with (tokens).
    pub fn n_ctx_train(&self) -> usize {
        // SAFETY: valid model pointer.
        unsafe { sys::llama_model_n_ctx_train(self.ptr) as usize }
    }

    /// The GGUF's `general.architecture` ("llama", "gemma3", …).
    pub fn architecture(&self) -> String {
        let mut buf = vec![0u8; 64];
        // SAFETY: the key is NUL-terminated, buf writable for its length; llama.cpp
        // NUL-terminates and returns the length (negative when the key is absent).
        let n = unsafe {
            sys::llama_model_meta_val_str(
                self.ptr,
                c"general.architecture".as_ptr(),
                buf.as_mut_ptr() as *mut c_char,
                buf.len(),
            )
        };
        buf.truncate(n.clamp(0, 63) as usize);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Whether llama.cpp's graph for this architecture records its layer inputs, so that
    /// they can be asked for as outputs (`llama_set_embeddings_layer_inp`).
    pub fn records_layer_inputs(&self) -> bool {
        // The architectures whose graph builders in the vendored llama.cpp set
        // `t_layer_inp` (src/models/*.cpp) and that Tandem's drafters target.
        matches!(
            self.architecture().as_str(),
            "llama" | "qwen3" | "qwen3moe" | "qwen35" | "qwen35moe" | "lfm2"
        )
    }

    /// A short description, e.g. "llama 135M Q4_1".
    pub fn description(&self) -> String {
        let mut buf = vec![0u8; 256];
        // SAFETY: buf is writable for its length; llama.cpp NUL-terminates.
        let n =
            unsafe { sys::llama_model_desc(self.ptr, buf.as_mut_ptr() as *mut c_char, buf.len()) };
        buf.truncate(n.max(0) as usize);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// End-of-generation token (EOS, EOT, <end_of_turn>, …)?
    pub fn is_eog(&self, token: Token) -> bool {
        // SAFETY: valid vocab; llama.cpp bounds-checks the id.
        unsafe { sys::llama_vocab_is_eog(self.vocab, token) }
    }

    /// Tokenize text. `add_special` adds BOS where the model wants it; `parse_special`
    /// turns "<|im_start|>"-style text into control tokens (needed for chat templates).
    pub fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<Token>> {
        let len =
            i32::try_from(text.len()).map_err(|_| TargetError::Tokenize("text too long".into()))?;
        let mut out = vec![0 as Token; text.len() + 2];
        // SAFETY: text is valid for len bytes; out is writable for its length. A negative
        // result is the size needed.
        let mut n = unsafe {
            sys::llama_tokenize(
                self.vocab,
                text.as_ptr() as *const c_char,
                len,
                out.as_mut_ptr(),
                out.len() as i32,
                add_special,
                parse_special,
            )
        };
        if n < 0 {
            out.resize((-n) as usize, 0);
            // SAFETY: as above, with the size llama.cpp asked for.
            n = unsafe {
                sys::llama_tokenize(
                    self.vocab,
                    text.as_ptr() as *const c_char,
                    len,
                    out.as_mut_ptr(),
                    out.len() as i32,
                    add_special,
                    parse_special,
                )
            };
            if n < 0 {
                return Err(TargetError::Tokenize(format!(
                    "llama_tokenize returned {n}"
                )));
            }
        }
        out.truncate(n as usize);
        Ok(out)
    }

    /// The bytes a token renders as in generated text (may be part of a UTF-8 character).
    /// Control tokens render as nothing.
    pub fn token_bytes(&self, token: Token) -> Vec<u8> {
        self.piece(token, false)
    }

    /// The bytes as llama.cpp's grammar sees a token: control tokens as their text.
    pub(super) fn token_bytes_special(&self, token: Token) -> Vec<u8> {
        self.piece(token, true)
    }

    fn piece(&self, token: Token, special: bool) -> Vec<u8> {
        let mut buf = vec![0u8; 64];
        loop {
            // SAFETY: buf is writable for its length; a negative result is the size needed.
            let n = unsafe {
                sys::llama_token_to_piece(
                    self.vocab,
                    token,
                    buf.as_mut_ptr() as *mut c_char,
                    buf.len() as i32,
                    0,
                    special,
                )
            };
            if n >= 0 {
                buf.truncate(n as usize);
                return buf;
            }
            buf.resize((-n) as usize, 0);
        }
    }

    /// The vocabulary entry's text as stored in the GGUF (for vocabulary comparison).
    pub fn token_text(&self, token: Token) -> String {
        // SAFETY: valid vocab; llama.cpp returns a pointer into its token table.
        let p = unsafe { sys::llama_vocab_get_text(self.vocab, token) };
        if p.is_null() {
            return String::new();
        }
        // SAFETY: NUL-terminated, owned by the vocab.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    /// Whether the GGUF carries a chat template.
    pub fn has_chat_template(&self) -> bool {
        self.chat_template_raw().is_some()
    }

    fn chat_template_raw(&self) -> Option<&CStr> {
        // SAFETY: valid model; null name = default template; the string is owned by the model.
        let p = unsafe { sys::llama_model_chat_template(self.ptr, std::ptr::null()) };
        if p.is_null() {
            None
        } else {
            Some(unsafe { CStr::from_ptr(p) })
        }
    }

    /// Tokenize a user prompt the way a chat front end would: through the model's chat
    /// template unless `raw` or the model has none (then as plain text with BOS).
    pub fn prompt_tokens(&self, prompt: &str, raw: bool) -> Result<Vec<Token>> {
        if raw {
            self.tokenize(prompt, true, false)
        } else {
            self.chat_tokens(&[("user", prompt)])
        }
    }

    /// Tokenize a conversation (`(role, content)` pairs) through the model's chat
    /// template, ending where the assistant's next turn begins; a model without a
    /// template gets the contents joined by newlines, as plain text with BOS.
    pub fn chat_tokens(&self, messages: &[(&str, &str)]) -> Result<Vec<Token>> {
        match self.apply_chat_template_messages(messages)? {
            Some(t) => self.tokenize(&t, true, true),
            None => {
                let contents: Vec<&str> = messages.iter().map(|(_, c)| *c).collect();
                self.tokenize(&contents.join("\n"), true, false)
            }
        }
    }

    /// Render a conversation (`(role, content)` pairs: system, user, assistant) with the
    /// model's own chat template, ending with the assistant's opening tag so that the
    /// model writes the next assistant turn. `None` if the model has no template.
    pub fn apply_chat_template_messages(
        &self,
        messages: &[(&str, &str)],
    ) -> Result<Option<String>> {
        let Some(tmpl) = self.chat_template_raw() else {
            return Ok(None);
        };
        let nul = |_| TargetError::ChatTemplate("a message contains a NUL byte".into());
        let mut owned = Vec::with_capacity(messages.len());
        let mut total = 0;
        for (role, content) in messages {
            owned.push((
                CString::new(*role).map_err(nul)?,
                CString::new(*content).map_err(nul)?,
            ));
            total += role.len() + content.len();
        }
        let msgs: Vec<sys::llama_chat_message> = owned
            .iter()
            .map(|(r, c)| sys::llama_chat_message {
                role: r.as_ptr(),
                content: c.as_ptr(),
            })
            .collect();
        let mut buf = vec![0u8; total * 2 + 512];
        loop {
            // SAFETY: tmpl and the message strings outlive the call; buf is writable for
            // its length.
            let n = unsafe {
                sys::llama_chat_apply_template(
                    tmpl.as_ptr(),
                    msgs.as_ptr(),
                    msgs.len(),
                    true,
                    buf.as_mut_ptr() as *mut c_char,
                    buf.len() as i32,
                )
            };
            if n < 0 {
                return Err(TargetError::ChatTemplate(
                    "llama.cpp does not support this model's chat template".into(),
                ));
            }
            if (n as usize) <= buf.len() {
                buf.truncate(n as usize);
                return String::from_utf8(buf).map(Some).map_err(|_| {
                    TargetError::ChatTemplate("template produced invalid UTF-8".into())
                });
            }
            buf.resize(n as usize, 0);
        }
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: ptr came from llama_model_load_from_file and is freed once; contexts
        // hold an Arc<Model>, so none outlives it.
        unsafe { sys::llama_model_free(self.ptr) }
    }
}

unsafe extern "C" fn capture_log(
    level: sys::ggml_log_level,
    text: *const std::ffi::c_char,
    _: *mut std::ffi::c_void,
) {
    if level == sys::GGML_LOG_LEVEL_ERROR && !text.is_null() {
        // SAFETY: NUL-terminated string valid for the call.
        let msg = unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .trim()
            .to_string();
        if let Ok(mut s) = LAST_LOAD_ERROR.lock()
            && !msg.is_empty()
            && s.is_empty()
        {
            *s = msg
                .trim_start_matches("llama_model_load: error loading model: ")
                .to_string();
        }
    }
}

/// Check the GGUF magic and that the header's counts are plausible for the file size, so a
/// non-GGUF or a cut-off file gets a precise error before llama.cpp sees it.
pub(super) fn check_gguf_header(path: &Path) -> Result<()> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|_| TargetError::NotFound(shown.clone()))?;
    if !meta.is_file() {
        return Err(TargetError::NotFound(shown));
    }
    let mut f = std::fs::File::open(path).map_err(|_| TargetError::NotFound(shown.clone()))?;
    let corrupt = |why: String| TargetError::CorruptGguf {
        path: shown.clone(),
        why,
    };
    let Header {
        n_tensors, n_kv, ..
    } = read_header(&mut f).map_err(|e| match e {
        HeaderError::TooShort(got) => corrupt(format!("file is only {got} bytes")),
        HeaderError::BadMagic(magic) => TargetError::NotGguf {
            path: shown.clone(),
            magic,
        },
        HeaderError::CutOff => corrupt("header cut off".into()),
        HeaderError::UnsupportedVersion(v) => corrupt(format!("unsupported GGUF version {v}")),
    })?;
    // Every tensor info and key/value pair takes at least ~16 bytes.
    if n_tensors.saturating_add(n_kv).saturating_mul(16) > meta.len() {
        return Err(TargetError::CorruptGguf {
            path: shown,
            why: format!(
                "header claims {n_tensors} tensors and {n_kv} keys, more than the {} byte file holds",
                meta.len()
            ),
        });
    }
    Ok(())
}
