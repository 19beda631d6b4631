//! Grammars through llama.cpp's own engine: GBNF parsed and matched by its grammar sampler,
//! JSON Schema turned into GBNF by its `common/json-schema-to-grammar` (both reached through
//! the sys crate's exception-safe wrappers). Tandem uses a grammar only as a mask: which
//! tokens may come next from the state reached through the committed tokens.

use std::ffi::{CStr, CString};
use std::sync::Arc;

use llama_cpp_sys_2 as sys;

use super::{Model, Token};

/// Why a grammar or schema was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GrammarError {
    /// The GBNF text does not parse (llama.cpp logs the details).
    #[error("the grammar does not parse (GBNF; root rule 'root')")]
    BadGrammar,
    /// The JSON Schema is not JSON or uses something llama.cpp's converter rejects.
    #[error("the JSON schema cannot be converted to a grammar: {0}")]
    BadSchema(String),
}

/// GBNF for a JSON Schema (llama.cpp's converter: objects, arrays, enums, consts, numbers,
/// strings with `pattern`/`format`/lengths, `$ref`s, `anyOf`/`oneOf`/`allOf`).
pub fn json_schema_to_gbnf(schema: &str) -> Result<String, GrammarError> {
    serde_json::from_str::<serde_json::Value>(schema)
        .map_err(|e| GrammarError::BadSchema(format!("not JSON ({e})")))?;
    let c = CString::new(schema).map_err(|_| GrammarError::BadSchema("contains NUL".into()))?;
    let mut out: *mut std::ffi::c_char = std::ptr::null_mut();
    // SAFETY: NUL-terminated input; on success the wrapper allocates `out`, which we copy
    // and free with its own deallocator.
    let rc = unsafe { sys::llama_rs_json_schema_to_grammar(c.as_ptr(), true, &mut out) };
    if rc != sys::LLAMA_RS_STATUS_OK || out.is_null() {
        return Err(GrammarError::BadSchema(
            "unsupported or invalid schema (llama.cpp's json-schema-to-grammar refused it)".into(),
        ));
    }
    // SAFETY: `out` is a NUL-terminated string from the wrapper.
    let s = unsafe { CStr::from_ptr(out) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: allocated by the wrapper, freed once.
    unsafe { sys::llama_rs_string_free(out) };
    Ok(s)
}

/// The grammar `--json` and `response_format: json_object` use: any JSON object.
pub const JSON_OBJECT_SCHEMA: &str = r#"{"type": "object"}"#;

/// The vocabulary's single-byte tokens (by byte) and end-of-generation tokens: what
/// probing the grammar byte by byte needs.
#[derive(Debug)]
pub(super) struct ByteTokens {
    by_byte: Vec<Option<Token>>,
    eog: Vec<Token>,
}

impl ByteTokens {
    pub(super) fn of(model: &Model) -> Self {
        let mut by_byte = vec![None; 256];
        let mut eog = Vec::new();
        for t in 0..model.n_vocab() as Token {
            if model.is_eog(t) {
                eog.push(t);
                continue;
            }
            let b = model.token_bytes(t);
            if b.len() == 1 && by_byte[b[0] as usize].is_none() {
                by_byte[b[0] as usize] = Some(t);
            }
        }
        Self { by_byte, eog }
    }
}

/// A grammar's matching state for one generation.
pub struct Grammar {
    smpl: *mut sys::llama_sampler,
    bytes: Arc<ByteTokens>,
    n_vocab: usize,
    /// Candidate buffer for full-vocabulary masks.
    cand: Vec<sys::llama_token_data>,
    _model: Arc<Model>,
}

// SAFETY: the sampler is owned by this value and used through `&mut self` (or cloned
// through `&self`, which llama.cpp's clone only reads).
unsafe impl Send for Grammar {}
unsafe impl Sync for Grammar {}

impl std::fmt::Debug for Grammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammar")
            .field("n_vocab", &self.n_vocab)
            .finish()
    }
}

impl Grammar {
    /// Parse `gbnf` (root rule `root`) for `model`'s vocabulary.
    pub fn new(model: &Arc<Model>, gbnf: &str) -> Result<Self, GrammarError> {
        let g = CString::new(gbnf).map_err(|_| GrammarError::BadGrammar)?;
        let root = c"root";
        // SAFETY: the model is alive (held by the result); both strings are NUL-terminated;
        // the wrapper returns null instead of throwing.
        let smpl = unsafe {
            sys::llama_rs_sampler_init_grammar(
                sys::llama_model_get_vocab(model.raw()),
                g.as_ptr(),
                root.as_ptr(),
            )
        };
        if smpl.is_null() {
            return Err(GrammarError::BadGrammar);
        }
        Ok(Self {
            smpl,
            bytes: model.byte_tokens(),
            n_vocab: model.n_vocab(),
            cand: Vec::new(),
            _model: model.clone(),
        })
    }

    /// Whether `t` may come next.
    pub fn allows(&mut self, t: Token) -> bool {
        let mut one = [sys::llama_token_data {
            id: t,
            logit: 0.0,
            p: 0.0,
        }];
        let mut arr = sys::llama_token_data_array {
            data: one.as_mut_ptr(),
            size: 1,
            selected: -1,
            sorted: false,
        };
        // SAFETY: a valid one-element candidate array; the grammar sampler only rewrites
        // logits in place.
        unsafe { sys::llama_sampler_apply(self.smpl, &mut arr) };
        one[0].logit != f32::NEG_INFINITY
    }

    /// Set the logit of every token the grammar forbids next to −∞.
    pub fn mask(&mut self, logits: &mut [f32]) {
        assert_eq!(logits.len(), self.n_vocab, "logits of the whole vocabulary");
        self.cand.clear();
        self.cand.extend(
            logits
                .iter()
                .enumerate()
                .map(|(i, &l)| sys::llama_token_data {
                    id: i as Token,
                    logit: l,
                    p: 0.0,
                }),
        );
        let mut arr = sys::llama_token_data_array {
            data: self.cand.as_mut_ptr(),
            size: self.cand.len(),
            selected: -1,
            sorted: false,
        };
        // SAFETY: a valid candidate array over the whole vocabulary, in token order; the
        // grammar sampler rewrites logits in place and neither reorders nor resizes it.
        unsafe { sys::llama_sampler_apply(self.smpl, &mut arr) };
        for (l, c) in logits.iter_mut().zip(&self.cand) {
            *l = c.logit;
        }
    }

    /// The one byte the grammar allows next, if exactly one is allowed and generation
    /// may not end here (probing the single-byte tokens; stops at the second allowed).
    fn only_byte(&mut self) -> Option<(u8, Token)> {
        let bytes = self.bytes.clone();
        if bytes.eog.iter().any(|&t| self.allows(t)) {
            return None;
        }
        let mut only = None;
        for (b, t) in bytes.by_byte.iter().enumerate() {
            if let Some(t) = *t
                && self.allows(t)
            {
                if only.is_some() {
                    return None;
                }
                only = Some((b as u8, t));
            }
        }
        only
    }

    /// Tokens for the text the grammar alone determines next (at most `max_tokens`,
    /// from at most 4 × `max_tokens` bytes), tokenized by the model: a key name, a `":`,
    /// a closing bracket. Empty when the next byte is not forced. Cost: up to 256
    /// single-token checks (~1 µs each) per forced byte, usually far fewer.
    pub fn forced_tokens(&mut self, max_tokens: usize) -> Vec<Token> {
        let Some(first) = self.only_byte() else {
            return Vec::new();
        };
        let mut g = self.clone();
        let mut text = vec![first.0];
        g.accept(first.1);
        while text.len() < 4 * max_tokens {
            match g.only_byte() {
                Some((b, t)) => {
                    text.push(b);
                    g.accept(t);
                }
                None => break,
            }
        }
        let valid = match std::str::from_utf8(&text) {
            Ok(s) => s.len(),
            Err(e) => e.valid_up_to(),
        };
        let s = std::str::from_utf8(&text[..valid]).unwrap_or("");
        let mut toks = self._model.tokenize(s, false, false).unwrap_or_default();
        // The last token's boundary depends on the free text after the forced run (`":`
        // vs `": "`): the target often tokenizes across it, so it is not drafted.
        toks.pop();
        toks.truncate(max_tokens);
        toks
    }

    /// Advance the state by `t` (which must be allowed). End-of-generation tokens end the
    /// text and are not fed.
    pub fn accept(&mut self, t: Token) {
        // SAFETY: a live sampler; the wrapper catches llama.cpp's exceptions.
        let rc = unsafe { sys::llama_rs_sampler_accept(self.smpl, t) };
        debug_assert_eq!(
            rc,
            sys::LLAMA_RS_STATUS_OK,
            "token {t} accepted by the grammar"
        );
    }
}

impl Clone for Grammar {
    fn clone(&self) -> Self {
        // SAFETY: a live sampler; llama.cpp's clone copies the grammar and its stacks.
        let smpl = unsafe { sys::llama_sampler_clone(self.smpl) };
        assert!(!smpl.is_null(), "llama_sampler_clone");
        Self {
            smpl,
            bytes: self.bytes.clone(),
            n_vocab: self.n_vocab,
            cand: Vec::new(),
            _model: self._model.clone(),
        }
    }
}

impl Drop for Grammar {
    fn drop(&mut self) {
        // SAFETY: owned, freed once.
        unsafe { sys::llama_sampler_free(self.smpl) }
    }
}
