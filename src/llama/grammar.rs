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
    /// Every other token with text, by its first byte.
    by_first: Vec<Vec<Token>>,
    /// Tokens of tab, newline, carriage return and printable ASCII, where the vocabulary
    /// has them.
    ascii: Vec<(u8, Token)>,
    eog: Vec<Token>,
}

impl ByteTokens {
    pub(super) fn of(model: &Model) -> Self {
        let mut by_byte = vec![None; 256];
        let mut by_first = vec![Vec::new(); 256];
        let mut eog = Vec::new();
        for t in 0..model.n_vocab() as Token {
            if model.is_eog(t) {
                eog.push(t);
                continue;
            }
            // As the grammar sees it (control tokens as their text).
            let b = model.token_bytes_special(t);
            match b.as_slice() {
                [] => {}
                [x] if by_byte[*x as usize].is_none() => by_byte[*x as usize] = Some(t),
                [x, ..] => by_first[*x as usize].push(t),
            }
        }
        let ascii = (0u8..128)
            .filter(|b| matches!(b, b'\t' | b'\n' | b'\r' | b' '..=b'~'))
            .filter_map(|b| by_byte[b as usize].map(|t| (b, t)))
            .collect();
        Self {
            by_byte,
            by_first,
            ascii,
            eog,
        }
    }
}

/// The byte that followed the longest recent earlier occurrence (4 bytes down to 1) of
/// `ctx`'s suffix.
fn lookup_next(ctx: &[u8]) -> Option<u8> {
    let n = ctx.len();
    (1..=4.min(n.saturating_sub(1))).rev().find_map(|m| {
        let suffix = &ctx[n - m..];
        (0..n - m)
            .rev()
            .find(|&s| &ctx[s..s + m] == suffix)
            .map(|s| ctx[s + m])
    })
}

/// A grammar's matching state for one generation.
pub struct Grammar {
    smpl: *mut sys::llama_sampler,
    bytes: Arc<ByteTokens>,
    n_vocab: usize,
    /// Candidate buffer for full-vocabulary masks.
    cand: Vec<sys::llama_token_data>,
    /// The text accepted so far (where forced drafts look up the model's formatting).
    text: Vec<u8>,
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
            text: Vec::new(),
            _model: model.clone(),
        })
    }

    /// A JSON Schema's grammar (llama.cpp's converter) for `model`'s vocabulary.
    pub fn from_schema(model: &Arc<Model>, schema: &str) -> Result<Self, GrammarError> {
        Self::new(model, &json_schema_to_gbnf(schema)?)
    }

    /// Whether `t` may come next.
    pub fn allows(&mut self, t: Token) -> bool {
        let mut ok = false;
        self.apply_to(&[t], |_, a| ok = a);
        ok
    }

    /// Set the logit of every token the grammar forbids next to −∞. Exact, and cheap where
    /// few bytes may come next: a token can only be allowed if its first byte is (the
    /// single-byte tokens are probed first, one pass, with llama.cpp's partial-UTF-8 rule
    /// for lead bytes), so only the tokens starting with an allowed byte go through the
    /// grammar — a forced key name checks a few thousand tokens, not the vocabulary.
    pub fn mask(&mut self, logits: &mut [f32]) {
        assert_eq!(logits.len(), self.n_vocab, "logits of the whole vocabulary");
        let bytes = self.bytes.clone();
        let singles: Vec<(usize, Token)> = (0..256)
            .filter_map(|b| bytes.by_byte[b].map(|t| (b, t)))
            .collect();
        let probes: Vec<Token> = (bytes.eog.iter().copied())
            .chain(singles.iter().map(|&(_, t)| t))
            .collect();
        let mut keep = vec![false; probes.len()];
        self.apply_to(&probes, |i, ok| keep[i] = ok);
        // Bytes without a single-byte token cannot be probed: their tokens are all checked.
        let mut first_ok = [true; 256];
        for (&(b, _), &ok) in singles.iter().zip(&keep[bytes.eog.len()..]) {
            first_ok[b] = ok;
        }
        if first_ok.iter().filter(|&&ok| ok).count() > 128 {
            // Free text (inside a string): nearly every token is a candidate anyway.
            return self.mask_reference(logits);
        }
        let mut allowed: Vec<Token> = (probes.iter().zip(&keep))
            .filter(|&(_, &ok)| ok)
            .map(|(&t, _)| t)
            .collect();
        let rest: Vec<Token> = (0..256)
            .filter(|&b| first_ok[b])
            .flat_map(|b| bytes.by_first[b].iter().copied())
            .collect();
        self.apply_to(&rest, |i, ok| {
            if ok {
                allowed.push(rest[i]);
            }
        });
        let mut out = vec![f32::NEG_INFINITY; logits.len()];
        for t in allowed {
            out[t as usize] = logits[t as usize];
        }
        logits.copy_from_slice(&out);
    }

    /// The whole vocabulary through the grammar in one pass: what [`Grammar::mask`] must
    /// equal (its test), at 20 ms a row on gemma3.
    pub fn mask_reference(&mut self, logits: &mut [f32]) {
        assert_eq!(logits.len(), self.n_vocab, "logits of the whole vocabulary");
        let all: Vec<Token> = (0..self.n_vocab as Token).collect();
        self.apply_to(&all, |i, ok| {
            if !ok {
                logits[i] = f32::NEG_INFINITY;
            }
        });
    }

    /// Run the grammar over `tokens` as one candidate array; `verdict(i, allowed)` for each.
    fn apply_to(&mut self, tokens: &[Token], mut verdict: impl FnMut(usize, bool)) {
        if tokens.is_empty() {
            return;
        }
        self.cand.clear();
        self.cand
            .extend(tokens.iter().map(|&t| sys::llama_token_data {
                id: t,
                logit: 0.0,
                p: 0.0,
            }));
        let mut arr = sys::llama_token_data_array {
            data: self.cand.as_mut_ptr(),
            size: self.cand.len(),
            selected: -1,
            sorted: false,
        };
        // SAFETY: a valid candidate array; the grammar sampler rewrites logits in place and
        // neither reorders nor resizes it.
        unsafe { sys::llama_sampler_apply(self.smpl, &mut arr) };
        for (i, c) in self.cand.iter().enumerate() {
            verdict(i, c.logit != f32::NEG_INFINITY);
        }
    }

    /// The printable ASCII bytes (and tab, newline, carriage return) the grammar allows
    /// next, in one pass of the sampler; `None` when generation may end here. Forced text
    /// is only ever a draft, so leaving other bytes unprobed costs at most a rejected guess.
    fn next_ascii(&mut self) -> Option<Vec<u8>> {
        let bytes = self.bytes.clone();
        let probes: Vec<Token> = (bytes.eog.iter().copied())
            .chain(bytes.ascii.iter().map(|&(_, t)| t))
            .collect();
        let mut ok = vec![false; probes.len()];
        self.apply_to(&probes, |i, a| ok[i] = a);
        let (eog, ascii) = ok.split_at(bytes.eog.len());
        if eog.iter().any(|&a| a) {
            return None;
        }
        Some(
            (bytes.ascii.iter().zip(ascii))
                .filter(|&(_, &a)| a)
                .map(|(&(b, _), _)| b)
                .collect(),
        )
    }

    /// The next byte of a draft of grammar-led text: the one byte the grammar allows, or,
    /// where it allows only a choice of whitespace and at most one other byte (the
    /// formatting points of JSON: after `{`, `,`, `:`), the byte that followed the same
    /// context last time in the text so far — the model's own formatting style — else the
    /// non-whitespace byte. `None` where the text is free (or may end).
    fn lead_byte(&mut self) -> Option<u8> {
        let allowed = self.next_ascii()?;
        let is_ws = |b: &u8| matches!(b, b' ' | b'\n' | b'\t' | b'\r');
        match allowed.as_slice() {
            [] => None,
            [b] => Some(*b),
            _ if allowed.iter().filter(|b| !is_ws(b)).count() > 1 => None,
            _ => lookup_next(&self.text)
                .filter(|b| allowed.contains(b))
                .or_else(|| allowed.iter().copied().find(|b| !is_ws(b))),
        }
    }

    /// Tokens for the text the grammar leads to next (at most `max_tokens`, from at most
    /// 4 × `max_tokens` bytes), tokenized by the model: a key name with its `": `, the
    /// formatting between keys in the model's own style, closing brackets. Empty where the
    /// next byte is free text. Its start must be forced; a draft, verified like any other.
    pub fn forced_tokens(&mut self, max_tokens: usize) -> Vec<Token> {
        let Some(first) = self.next_ascii().filter(|a| a.len() == 1) else {
            return Vec::new();
        };
        let mut g = self.clone();
        let mut text = vec![first[0]];
        g.accept_byte(first[0]);
        while text.len() < 4 * max_tokens {
            match g.lead_byte() {
                Some(b) => {
                    text.push(b);
                    g.accept_byte(b);
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
        // The last token's boundary depends on the free text after the run (`":` vs
        // `": "`): the target often tokenizes across it, so it is not drafted.
        if std::env::var_os("TANDEM_KEEP_LAST").is_none() {
            toks.pop();
        }
        toks.truncate(max_tokens);
        toks
    }

    fn accept_byte(&mut self, b: u8) {
        let t = self.bytes.by_byte[b as usize].expect("a probed byte has a token");
        self.accept(t);
    }

    /// Whether `t` ends generation (such tokens are not fed to the grammar).
    pub fn is_eog(&self, t: Token) -> bool {
        self.bytes.eog.contains(&t)
    }

    /// Advance the state by `t` (which must be allowed). End-of-generation tokens end the
    /// text and are not fed.
    pub fn accept(&mut self, t: Token) {
        // SAFETY: a live sampler; the wrapper catches llama.cpp's exceptions.
        let rc = unsafe { sys::llama_rs_sampler_accept(self.smpl, t) };
        self.text.extend_from_slice(&self._model.token_bytes(t));
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
            text: self.text.clone(),
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

#[cfg(test)]
mod tests {
    use super::lookup_next;

    #[test]
    fn lookup_follows_the_longest_latest_earlier_context() {
        // `": ` was followed by `"` and `1`; the latest 3-byte context `": ` wins.
        assert_eq!(lookup_next(b"{\"a\": \"x\", \"b\": 1, \"c\": "), Some(b'1'));
        // Only a 1-byte context recurs: `,` was followed by a newline.
        assert_eq!(lookup_next(b"[1,\n2,"), Some(b'\n'));
        assert_eq!(lookup_next(b"abc"), None);
        assert_eq!(lookup_next(b""), None);
    }
}
