//! The DFlash forward pass in plain Rust, following llama.cpp's `dflash` graph
//! (src/models/dflash.cpp) operation by operation:
//!
//! * **injection** — each committed position's target features (the inputs of the
//!   `target_layers`, concatenated) go through `fc` and an RMSNorm, then every layer's K/V
//!   projection (K: per-head RMSNorm + RoPE at the position; V: plain, or the normalised K
//!   when the layer has no V projection). Only these K/V are cached: a rejected draft leaves
//!   nothing behind, so there is no drafter rollback.
//! * **block** — `[last token, <mask> × (n−1)]` at the next positions: embeddings, then per
//!   layer RMSNorm → Q/K/V (per-head RMSNorm, RoPE) → attention over [cached context, the
//!   block], non-causal → output projection → residual → RMSNorm → SwiGLU/GELU MLP →
//!   residual; final RMSNorm; logits over the target vocabulary.

use super::model::{DflashModel, Head, Layer};
use crate::llama::Token;

/// The drafter's K/V for committed context positions `0..len`, per layer.
#[derive(Debug, Clone, Default)]
pub struct DflashCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
}

impl DflashCache {
    /// Number of context positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no context positions are held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drop all cached positions, keeping the per-layer allocations.
    pub fn clear(&mut self) {
        self.k.iter_mut().for_each(Vec::clear);
        self.v.iter_mut().for_each(Vec::clear);
        self.len = 0;
    }
}

/// ggml's `rms_norm` (sum of squares in f64) followed by the optional weight.
fn rms_norm(x: &mut [f32], w: Option<&[f32]>, eps: f32) {
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = sum / x.len() as f64;
    let scale = 1.0f32 / ((mean + eps as f64) as f32).sqrt();
    for v in x.iter_mut() {
        *v *= scale;
    }
    if let Some(w) = w {
        for (v, &g) in x.iter_mut().zip(w) {
            *v *= g;
        }
    }
}

/// RMSNorm over each `width`-wide piece of every row (per-head norms).
fn rms_norm_rows(x: &mut [f32], width: usize, w: Option<&[f32]>, eps: f32) {
    for r in x.chunks_exact_mut(width) {
        rms_norm(r, w, eps);
    }
}

impl DflashModel {
    /// An empty cache with one K and one V buffer per drafter layer.
    pub fn new_cache(&self) -> DflashCache {
        DflashCache {
            k: vec![Vec::new(); self.cfg.n_layer],
            v: vec![Vec::new(); self.cfg.n_layer],
            len: 0,
        }
    }

    /// NeoX RoPE (ggml's `rope_f32`, mode NEOX, no YaRN) over every head of `rows` rows
    /// (`n_heads` heads each) at positions `pos0..`.
    fn rope(&self, x: &mut [f32], n_heads: usize, pos0: usize) {
        let c = &self.cfg;
        let hd = c.head_dim;
        let half = c.n_rot / 2;
        let theta_scale = c.rope_base.powf(-2.0 / c.n_rot as f32);
        let mut cs = vec![(0.0f32, 0.0f32); half];
        for (r, row) in x.chunks_exact_mut(n_heads * hd).enumerate() {
            let mut theta = (pos0 + r) as f32;
            for e in cs.iter_mut() {
                let t = c.rope_freq_scale * theta;
                *e = (t.cos(), t.sin());
                theta *= theta_scale;
            }
            for h in row.chunks_exact_mut(hd) {
                for (i, &(cos, sin)) in cs.iter().enumerate() {
                    let (x0, x1) = (h[i], h[i + half]);
                    h[i] = x0 * cos - x1 * sin;
                    h[i + half] = x0 * sin + x1 * cos;
                }
            }
        }
    }

    /// One layer's keys for the rows of `x` at positions `pos0..` into `k` (per-head
    /// RMSNorm, RoPE), and its values: the V projection, or without one the keys' plain
    /// per-head norm before RoPE — for injected context and block rows alike.
    fn keys_values(&self, l: &Layer, x: &[f32], k: &mut [f32], pos0: usize) -> Vec<f32> {
        let c = &self.cfg;
        l.wk.forward(x, k, &self.pool);
        let v = match &l.wv {
            Some(wv) => {
                let mut v = vec![0.0f32; k.len()];
                wv.forward(x, &mut v, &self.pool);
                v
            }
            None => {
                let mut v = k.to_vec();
                rms_norm_rows(&mut v, c.head_dim, None, c.eps);
                v
            }
        };
        rms_norm_rows(k, c.head_dim, l.k_norm.as_deref(), c.eps);
        self.rope(k, c.n_head_kv, pos0);
        v
    }

    /// Append the target features of the next `feats.len() / n_features` positions.
    pub fn inject(&self, cache: &mut DflashCache, feats: &[f32]) {
        let c = &self.cfg;
        let n = feats.len() / self.n_features();
        if n == 0 {
            return;
        }
        let kvd = c.n_head_kv * c.head_dim;
        let mut g = vec![0.0f32; n * c.n_embd];
        self.fc.forward(feats, &mut g, &self.pool);
        rms_norm_rows(&mut g, c.n_embd, Some(&self.enc_norm), c.eps);
        let mut k = vec![0.0f32; n * kvd];
        for (il, l) in self.layers.iter().enumerate() {
            let v = self.keys_values(l, &g, &mut k, cache.len);
            cache.k[il].extend_from_slice(&k);
            cache.v[il].extend_from_slice(&v);
        }
        cache.len += n;
    }

    /// Final-norm hidden states (`tokens.len() × n_embd`) of a block at positions
    /// `cache.len()..`, attending to the whole cached context and the whole block.
    pub fn block_hidden(&self, cache: &DflashCache, tokens: &[Token]) -> Vec<f32> {
        let c = &self.cfg;
        let (n, d, hd) = (tokens.len(), c.n_embd, c.head_dim);
        let (qd, kvd) = (c.n_head * hd, c.n_head_kv * hd);
        let t = &self.pool;
        let mut x = vec![0.0f32; n * d];
        for (row, &tok) in x.chunks_exact_mut(d).zip(tokens) {
            self.embd.row(tok, row);
            if let Some(s) = c.embd_scale {
                row.iter_mut().for_each(|v| *v *= s);
            }
        }
        let (mut h, mut q, mut k) = (vec![0.0; n * d], vec![0.0; n * qd], vec![0.0; n * kvd]);
        let mut attn = vec![0.0f32; n * qd];
        let mut o = vec![0.0f32; n * d];
        let (mut gate, mut up) = (vec![0.0; n * c.n_ff], vec![0.0; n * c.n_ff]);
        let ctx = cache.len;
        let n_keys = ctx + n;
        for (il, l) in self.layers.iter().enumerate() {
            h.copy_from_slice(&x);
            rms_norm_rows(&mut h, d, Some(&l.attn_norm), c.eps);
            l.wq.forward(&h, &mut q, t);
            rms_norm_rows(&mut q, hd, l.q_norm.as_deref(), c.eps);
            self.rope(&mut q, c.n_head, ctx);
            let v = self.keys_values(l, &h, &mut k, ctx);

            // Non-causal attention of every block query over [context, block], one head
            // per task.
            let (ck, cv) = (&cache.k[il], &cache.v[il]);
            let group = c.n_head / c.n_head_kv;
            let heads = t.map(c.n_head, |hh| {
                let kh = hh / group;
                let off = kh * hd;
                let mut scores = vec![0.0f32; n_keys];
                let mut outs = vec![0.0f32; n * hd];
                for (i, out) in outs.chunks_exact_mut(hd).enumerate() {
                    let qv = &q[i * qd + hh * hd..i * qd + (hh + 1) * hd];
                    let mut max = f32::NEG_INFINITY;
                    for (j, s) in scores.iter_mut().enumerate() {
                        *s = super::linear::dot_f32(kv_row(ck, &k, ctx, j, kvd, off, hd), qv)
                            * c.kq_scale;
                        max = max.max(*s);
                    }
                    let mut sum = 0.0f64;
                    for s in scores.iter_mut() {
                        *s = (*s - max).exp();
                        sum += *s as f64;
                    }
                    let inv = (1.0 / sum) as f32;
                    for (j, &s) in scores.iter().enumerate() {
                        let p = s * inv;
                        for (a, &b) in out.iter_mut().zip(kv_row(cv, &v, ctx, j, kvd, off, hd)) {
                            *a = p.mul_add(b, *a);
                        }
                    }
                }
                outs
            });
            for (hh, outs) in heads.iter().enumerate() {
                for (i, o) in outs.chunks_exact(hd).enumerate() {
                    attn[i * qd + hh * hd..i * qd + (hh + 1) * hd].copy_from_slice(o);
                }
            }
            l.wo.forward(&attn, &mut o, t);
            if let Some(s) = c.value_scale {
                o.iter_mut().for_each(|v| *v *= s);
            }
            if let Some(w) = &l.attn_post_norm {
                rms_norm_rows(&mut o, d, Some(w), c.eps);
            }
            for (a, b) in x.iter_mut().zip(&o) {
                *a += b; // x is now the FFN input (residual)
            }
            h.copy_from_slice(&x);
            rms_norm_rows(&mut h, d, Some(&l.ffn_norm), c.eps);
            l.ffn_gate.forward(&h, &mut gate, t);
            l.ffn_up.forward(&h, &mut up, t);
            for (g, &u) in gate.iter_mut().zip(&up) {
                let a = if c.gelu {
                    gelu(*g)
                } else {
                    *g / (1.0 + (-*g).exp())
                };
                *g = a * u;
            }
            l.ffn_down.forward(&gate, &mut o, t);
            if let Some(w) = &l.ffn_post_norm {
                rms_norm_rows(&mut o, d, Some(w), c.eps);
            }
            for (a, b) in x.iter_mut().zip(&o) {
                *a += b;
            }
            if let Some(s) = l.out_scale {
                x.iter_mut().for_each(|v| *v *= s);
            }
        }
        rms_norm_rows(&mut x, d, Some(&self.out_norm), c.eps);
        x
    }

    /// Logits over the target vocabulary for each hidden row (`out[j]` resized to it);
    /// tokens outside a reduced draft vocabulary get −∞, as in llama.cpp.
    pub fn logits(&self, hidden: &[f32], out: &mut [Vec<f32>]) {
        let d = self.cfg.n_embd;
        let rows: Vec<&[f32]> = hidden.chunks_exact(d).collect();
        match &self.head {
            Head::Shared(head) => head.logits_raw(&rows, out),
            Head::Own { w, d2t } => {
                let m = rows.len();
                let mut y = vec![0.0f32; m * w.rows];
                w.forward(hidden, &mut y, &self.pool);
                for (j, o) in out.iter_mut().enumerate().take(m) {
                    let yr = &y[j * w.rows..(j + 1) * w.rows];
                    match d2t {
                        None => {
                            o.clear();
                            o.extend_from_slice(yr);
                        }
                        Some(map) => {
                            o.clear();
                            o.resize(self.n_vocab, f32::NEG_INFINITY);
                            for (&t, &v) in map.iter().zip(yr) {
                                o[t as usize] = v;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Final-norm hidden states of block rows 1.. (the masked positions) of
    /// `[last, <mask> × (n − 1)]`: `(n − 1) × n_embd`.
    pub fn draft_hidden(&self, cache: &DflashCache, last: Token, n: usize) -> Vec<f32> {
        let mut tokens = vec![self.cfg.mask_token; n];
        tokens[0] = last;
        let mut h = self.block_hidden(cache, &tokens);
        h.drain(..self.cfg.n_embd);
        h
    }

    /// Logits for block rows 1.. (the masked positions) of `[last, <mask> × (n − 1)]`.
    pub fn draft_logits(
        &self,
        cache: &DflashCache,
        last: Token,
        n: usize,
        out: &mut Vec<Vec<f32>>,
    ) {
        let h = self.draft_hidden(cache, last, n);
        out.resize_with(n - 1, Vec::new);
        self.logits(&h, out);
    }
}

/// Key or value `j` of the head at offset `off` (width `hd`), from the cached context
/// (`j < ctx`) or the block itself, rows `kvd` wide.
fn kv_row<'a>(
    cached: &'a [f32],
    block: &'a [f32],
    ctx: usize,
    j: usize,
    kvd: usize,
    off: usize,
    hd: usize,
) -> &'a [f32] {
    let (src, j) = if j < ctx {
        (cached, j)
    } else {
        (block, j - ctx)
    };
    &src[j * kvd + off..j * kvd + off + hd]
}

/// tanh-approximated GELU (the form ggml uses).
fn gelu(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2/pi)
    0.5 * x * (1.0 + (C * x * (1.0 + 0.044715 * x * x)).tanh())
}
