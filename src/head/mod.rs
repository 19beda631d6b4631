//! The target's output head computed by Tandem itself ("lazy head").
//!
//! On a CPU, a verification batch spends most of its time in the output head when the
//! vocabulary is large (gemma3: 262,144 × 640), and llama.cpp computes it for every draft
//! position although greedy verification stops at the first rejection. With the lazy head,
//! the target's decode stops after the final norm (see `Outputs::Hidden`) and the engine
//! asks this module for logits (or just the argmax) position by position, only as far as
//! the draft survives. Each weight block is loaded once per group of positions, and the
//! arithmetic reproduces ggml's bit for bit: Q8_0 heads on Tandem's own kernel (see `q8`),
//! every other type (F16, BF16, F32, Q4_0…Q5_1, the K-quants) on ggml's own `vec_dot`
//! through its type traits (see `kernels::ggml`), row by row as llama.cpp's `mul_mat` does.

use std::path::Path;

use crate::gguf::{GgmlType, Gguf, GgufError};
use crate::kernels::ggml::{Activation, AlignedBytes, TypeKernels};
use crate::kernels::q8::{self, Q8Rows, QK};
use crate::llama::Token;

/// Why Tandem's own output head could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// The model's GGUF could not be read.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// The GGUF has neither `output.weight` nor `token_embd.weight`.
    #[error("{0}: no output head tensor (output.weight or token_embd.weight)")]
    NoHead(String),
    /// The head is stored in a type the lazy head cannot compute.
    #[error(
        "{path}: output head is {ty:?}, which the lazy head cannot compute for rows of this width"
    )]
    UnsupportedType {
        /// The model file's path.
        path: String,
        /// The head's storage type.
        ty: GgmlType,
    },
    /// The head tensor's shape does not match the model's vocabulary and width.
    #[error("{path}: output head is {rows}x{cols}, the model reports {n_vocab}x{n_embd}")]
    Shape {
        /// The model file's path.
        path: String,
        /// Rows of the head tensor.
        rows: u64,
        /// Columns of the head tensor.
        cols: u64,
        /// The model's vocabulary size.
        n_vocab: usize,
        /// The model's embedding width.
        n_embd: usize,
    },
    /// The head has extra scaling (an output scale or logit scale) the lazy head does not apply.
    #[error(
        "{path}: the output head has extra scaling ({what}) that the lazy head does not reproduce"
    )]
    Unsupported {
        /// The model file's path.
        path: String,
        /// The scaling found.
        what: String,
    },
}

/// The head's rows as the model stores them.
enum Weights {
    /// Q8_0 on Tandem's kernel (many positions per loaded block).
    Q8 { w: Q8Rows, nb: usize },
    /// Any other type, on ggml's kernels.
    Ggml {
        k: TypeKernels,
        w: AlignedBytes,
        row_bytes: usize,
    },
}

/// Hidden states prepared for the head's weight type.
enum Prepared {
    Q8(Vec<Q8Rows>),
    Ggml(Vec<Activation>),
}

impl Prepared {
    /// The Q8_0 kernel's view of the activations (empty for ggml's kernels).
    fn q8_refs(&self) -> Vec<&Q8Rows> {
        match self {
            Prepared::Q8(q) => q.iter().collect(),
            Prepared::Ggml(_) => Vec::new(),
        }
    }
}

/// The output projection, held as the model stores it.
pub struct OutputHead {
    n_embd: usize,
    n_vocab: usize,
    w: Weights,
    softcap: Option<f32>,
    pool: crate::kernels::par::Pool,
}

impl std::fmt::Debug for OutputHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputHead")
            .field("n_embd", &self.n_embd)
            .field("n_vocab", &self.n_vocab)
            .field("softcap", &self.softcap)
            .finish()
    }
}

impl OutputHead {
    /// The head of a loaded model, read from the same GGUF and checked against the
    /// model's vocabulary and width.
    pub fn for_model(model: &crate::llama::Model, threads: usize) -> Result<Self, HeadError> {
        Self::load(
            Path::new(model.path()),
            model.n_vocab(),
            model.n_embd(),
            threads,
        )
    }

    /// Read the head from the model's GGUF: `output.weight`, or the tied `token_embd.weight`.
    pub fn load(
        path: &Path,
        n_vocab: usize,
        n_embd: usize,
        threads: usize,
    ) -> Result<Self, HeadError> {
        let p = path.display().to_string();
        let g = Gguf::open(path)?;
        let name = ["output.weight", "token_embd.weight"]
            .into_iter()
            .find(|n| g.tensor(n).is_some())
            .ok_or_else(|| HeadError::NoHead(p.clone()))?;
        if g.tensor("output.scale").is_some() || g.tensor("output_s.weight").is_some() {
            return Err(HeadError::Unsupported {
                path: p,
                what: "an output scale tensor".into(),
            });
        }
        let arch = g.arch().unwrap_or("").to_string();
        if let Some(s) = g
            .get_float(&format!("{arch}.logit_scale"))
            .filter(|&s| s != 1.0)
        {
            return Err(HeadError::Unsupported {
                path: p,
                what: format!("logit_scale {s}"),
            });
        }
        let softcap = g
            .get_float(&format!("{arch}.final_logit_softcapping"))
            .filter(|&c| c != 0.0)
            .map(|c| c as f32);
        let t = g.tensor(name).expect("checked");
        let (cols, rows) = (t.dims[0], t.dims.get(1).copied().unwrap_or(1));
        if t.dims.len() != 2 || rows != n_vocab as u64 || cols != n_embd as u64 {
            return Err(HeadError::Shape {
                path: p,
                rows,
                cols,
                n_vocab,
                n_embd,
            });
        }
        let (ty, bytes) = g.read_tensor(name)?;
        let widened = match ty {
            GgmlType::Q8_0 => Some(q8::from_ggml_blocks(&bytes)),
            // Q4_0/Q5_0 as Q8_0 integers: the same results as ggml's own kernels, at the
            // speed of Tandem's many-positions-per-block Q8_0 kernel (measured: ggml's
            // per-row calls made a Q4_0 head 1.5x slower than llama.cpp's).
            GgmlType::Q4_0 | GgmlType::Q5_0 if n_embd.is_multiple_of(QK) => {
                q8::widen_q4_0_q5_0(&bytes, ty == GgmlType::Q5_0)
                    .filter(|w| w.qs.len() == n_vocab * n_embd)
            }
            _ => None,
        };
        let w = if let Some(w) = widened {
            Weights::Q8 { w, nb: n_embd / QK }
        } else {
            let k = TypeKernels::new(ty).ok_or_else(|| HeadError::UnsupportedType {
                path: p.clone(),
                ty,
            })?;
            let row_bytes = k.row_bytes(n_embd).filter(|rb| rb * n_vocab == bytes.len());
            let row_bytes = row_bytes.ok_or(HeadError::UnsupportedType { path: p, ty })?;
            Weights::Ggml {
                k,
                w: AlignedBytes::from_slice(&bytes),
                row_bytes,
            }
        };
        Ok(Self {
            n_embd,
            n_vocab,
            w,
            softcap,
            pool: crate::kernels::par::Pool::new(threads),
        })
    }

    /// Whether a full verification batch through this head costs about what llama.cpp's
    /// head costs (measured with `tandem bench calibrate`, 2 threads, k = 16: Q8_0 and the
    /// widened Q4_0/Q5_0 at 0.98–1.03×, F16 1.06×), so that `--head auto` gains whatever
    /// the lazy head skips. For the K-quants and Q4_1/Q5_1 ggml's batched kernels beat its
    /// per-row calls (Q6_K: 1.3× at k = 16, 1.7× at k = 64), and auto keeps llama.cpp's head.
    pub fn keeps_pace_with_llama(&self) -> bool {
        match &self.w {
            Weights::Q8 { .. } => true,
            Weights::Ggml { k, .. } => {
                matches!(k.ty(), GgmlType::F16 | GgmlType::Bf16 | GgmlType::F32)
            }
        }
    }

    /// Vocabulary size (rows of the head).
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    fn prepare(&self, hidden: &[&[f32]]) -> Prepared {
        for h in hidden {
            assert_eq!(h.len(), self.n_embd, "hidden state width");
        }
        match &self.w {
            Weights::Q8 { .. } => Prepared::Q8(
                hidden
                    .iter()
                    .map(|h| {
                        let mut q = Q8Rows::default();
                        q8::quantize_row(h, &mut q);
                        q
                    })
                    .collect(),
            ),
            Weights::Ggml { k, .. } => {
                Prepared::Ggml(hidden.iter().map(|h| k.quantize_activation(h)).collect())
            }
        }
    }

    /// `out[j] = row r · x_j` for every prepared hidden state.
    #[inline]
    fn dot_row(&self, r: usize, xs: &Prepared, q8refs: &[&Q8Rows], out: &mut [f32]) {
        match (&self.w, xs) {
            (Weights::Q8 { w, nb }, _) => {
                let qs = &w.qs[r * self.n_embd..(r + 1) * self.n_embd];
                let d = &w.d[r * nb..(r + 1) * nb];
                q8::dot_row(qs, d, q8refs, out);
            }
            (Weights::Ggml { k, w, row_bytes }, Prepared::Ggml(acts)) => {
                let row = &w.as_ref()[r * row_bytes..(r + 1) * row_bytes];
                for (o, x) in out.iter_mut().zip(acts) {
                    *o = k.dot(row, x);
                }
            }
            (Weights::Ggml { .. }, Prepared::Q8(_)) => unreachable!("prepared for this head"),
        }
    }

    #[inline]
    fn cap(&self, x: f32) -> f32 {
        match self.softcap {
            None => x,
            Some(c) => (x * (1.0 / c)).tanh() * c,
        }
    }

    /// Run `f(first_row, end_row)` over the vocabulary cut into ranges spread over the
    /// pool's threads; results in row order.
    fn par_rows<R: Send>(&self, f: impl Fn(usize, usize) -> R + Sync) -> Vec<R> {
        let ranges = self.pool.ranges(self.n_vocab, 4, 1024);
        self.pool
            .map(ranges.len(), |i| f(ranges[i].start, ranges[i].end))
    }

    /// Greedy tokens (first index of the maximum) and their logits for each hidden state,
    /// without materialising the logit vectors.
    pub fn argmax(&self, hidden: &[&[f32]]) -> Vec<(Token, f32)> {
        let xs = self.prepare(hidden);
        let refs = xs.q8_refs();
        let m = hidden.len();
        let parts = self.par_rows(|lo, hi| {
            let mut best = vec![(0usize, f32::NEG_INFINITY); m];
            let mut out = vec![0.0f32; m];
            for r in lo..hi {
                self.dot_row(r, &xs, &refs, &mut out);
                for (b, &v) in best.iter_mut().zip(&out) {
                    if v > b.1 {
                        *b = (r, v);
                    }
                }
            }
            best
        });
        (0..m)
            .map(|j| {
                // Parts are in row order: a later part wins only with a strictly larger value.
                let (r, v) =
                    parts
                        .iter()
                        .map(|p| p[j])
                        .fold(
                            (0usize, f32::NEG_INFINITY),
                            |a, b| if b.1 > a.1 { b } else { a },
                        );
                (r as Token, self.cap(v))
            })
            .collect()
    }

    /// Full logits for each hidden state into `out[j]` (resized to the vocabulary).
    pub fn logits(&self, hidden: &[&[f32]], out: &mut [Vec<f32>]) {
        self.logits_with(hidden, out, true)
    }

    /// The head's plain matrix product, without the model's logit soft-capping (a DFlash
    /// drafter sharing this head reads raw logits, as in llama.cpp).
    pub fn logits_raw(&self, hidden: &[&[f32]], out: &mut [Vec<f32>]) {
        self.logits_with(hidden, out, false)
    }

    fn logits_with(&self, hidden: &[&[f32]], out: &mut [Vec<f32>], cap: bool) {
        let xs = self.prepare(hidden);
        let refs = xs.q8_refs();
        let m = hidden.len();
        // Each task fills its vocabulary range of every output row in place: no temporary
        // copy of the logits (tens of MB for a large vocabulary: fresh pages cost more than
        // the copy itself).
        let ranges = self.pool.ranges(self.n_vocab, 4, 1024);
        let mut pieces: Vec<Vec<&mut [f32]>> =
            ranges.iter().map(|_| Vec::with_capacity(m)).collect();
        for o in out.iter_mut().take(m) {
            o.resize(self.n_vocab, 0.0);
            let mut rest = &mut o[..];
            for (p, r) in pieces.iter_mut().zip(&ranges) {
                let (a, b) = rest.split_at_mut(r.len());
                p.push(a);
                rest = b;
            }
        }
        self.pool.for_each_owned(pieces, |i, mut rows| {
            let lo = ranges[i].start;
            let mut tmp = vec![0.0f32; m];
            for r in ranges[i].clone() {
                self.dot_row(r, &xs, &refs, &mut tmp);
                for (row, &v) in rows.iter_mut().zip(&tmp) {
                    row[r - lo] = if cap { self.cap(v) } else { v };
                }
            }
        });
    }
}
