//! The DFlash drafter as a trainable network (candle, f32, CPU): the same computation as
//! `draft::diffusion::forward` (llama.cpp's `dflash` graph), batched over many blocks of one
//! sequence so that training sees "blocks anchored at every position" at once.
//!
//! A batch is one sequence: its target features for context positions `0..C`, and `A`
//! blocks. Block `b` starts at anchor position `a_b`: its tokens are
//! `[t(a_b), <mask> × (B − 1)]` at positions `a_b..a_b + B`; its queries see the context
//! positions `< a_b` and every position of their own block (non-causal), nothing else.

use std::collections::HashMap;

use candle_core::{D, DType, Device, Result, Tensor, Var};

use crate::draft::diffusion::format::DflashShape;
use crate::sampling::Rng;

/// Parameters by their GGUF tensor names; matrices are `[rows (out), cols (in)]`.
pub struct Net {
    /// The drafter's shape.
    pub shape: DflashShape,
    /// Rows of the drafter's head (the draft vocabulary size).
    pub n_draft_vocab: usize,
    /// Whether the head (`output.weight`) is trained; frozen (the default), it stays the
    /// target's own output rows, as DFlash keeps it.
    pub train_head: bool,
    /// Trainable parameters with their GGUF tensor names, in a fixed order.
    pub params: Vec<(String, Var)>,
    by_name: HashMap<String, usize>,
}

/// One sequence's blocks, ready for the network.
pub struct Batch {
    /// `[C, n_features]`: target features of context positions `0..C`.
    pub features: Tensor,
    /// `[A·B, n_embd]`: embeddings of the block tokens (frozen: the target's).
    pub block_embd: Tensor,
    /// Position of every block row (`a_b + i`).
    pub block_pos: Vec<usize>,
    /// `[A·B, C]`: 0 where a block row may attend to a context position (before its
    /// anchor), −1e9 where not; every row attends to all rows of its own block.
    pub mask: Tensor,
    /// Positions per block (B).
    pub block_size: usize,
    /// Rows (into the `A·B` block rows) that carry a loss, their draft-vocabulary targets
    /// and weights.
    pub rows: Tensor,
    /// `[rows, K]`: draft-vocabulary targets of each loss row (K = 1: a hard label; more:
    /// the target's top-k).
    pub targets: Tensor,
    /// `[rows, K]`: each target's weight: the row's position weight × its probability.
    pub weights: Tensor,
    /// Sum of the rows' position weights (the loss is divided by it).
    pub weight_sum: f32,
    /// Draft-vocabulary index of each row's true token, −1 outside the vocabulary.
    pub truth: Vec<i32>,
}

fn rms_norm(x: &Tensor, w: Option<&Tensor>, eps: f32) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let y = x.broadcast_div(&(ms + eps as f64)?.sqrt()?)?;
    match w {
        Some(w) => y.broadcast_mul(w),
        None => Ok(y),
    }
}

/// NeoX rotary embedding of `x: [rows, heads, head_dim]` at `pos[row]`.
fn rope(x: &Tensor, pos: &[usize], base: f32) -> Result<Tensor> {
    let (rows, _, hd) = x.dims3()?;
    let half = hd / 2;
    let scale = base.powf(-2.0 / hd as f32);
    let mut cos = Vec::with_capacity(rows * half);
    let mut sin = Vec::with_capacity(rows * half);
    for &p in pos {
        let mut theta = p as f32;
        for _ in 0..half {
            cos.push(theta.cos());
            sin.push(theta.sin());
            theta *= scale;
        }
    }
    let cos = Tensor::from_vec(cos, (rows, 1, half), x.device())?;
    let sin = Tensor::from_vec(sin, (rows, 1, half), x.device())?;
    let x0 = x.narrow(2, 0, half)?;
    let x1 = x.narrow(2, half, half)?;
    let a = (x0.broadcast_mul(&cos)? - x1.broadcast_mul(&sin)?)?;
    let b = (x0.broadcast_mul(&sin)? + x1.broadcast_mul(&cos)?)?;
    Tensor::cat(&[a, b], 2)
}

/// `x @ w^T` for `x: [n, in]`, `w: [out, in]`.
fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    x.matmul(&w.t()?)
}

impl Net {
    /// A freshly initialised network. `head_init` (`[n_draft_vocab, n_embd]`) seeds the
    /// head — the target's own output rows for the draft vocabulary.
    pub fn new(shape: DflashShape, head_init: Vec<f32>, seed: u64) -> Result<Self> {
        let dev = Device::Cpu;
        let mut rng = Rng::new(seed);
        let d = shape.n_embd;
        let n_draft_vocab = head_init.len() / d;
        let mut params = Vec::new();
        let mut uniform = |rows: usize, cols: usize, std: f32| -> Result<Var> {
            let v: Vec<f32> = (0..rows * cols)
                .map(|_| ((rng.uniform() * 2.0 - 1.0) * 3f64.sqrt()) as f32 * std)
                .collect();
            Var::from_tensor(&Tensor::from_vec(v, (rows, cols), &dev)?)
        };
        let ones = |n: usize| Var::from_tensor(&Tensor::ones(n, DType::F32, &dev)?);
        let (qd, kvd) = (
            shape.n_head * shape.head_dim,
            shape.n_head_kv * shape.head_dim,
        );
        let nf = shape.n_features();
        // Residual branches start small so that the untrained stack is near identity.
        let out_std = 0.5 / ((2 * shape.n_layer) as f32).sqrt();
        params.push((
            "fc.weight".into(),
            uniform(d, nf, 1.0 / (nf as f32).sqrt())?,
        ));
        params.push(("enc.output_norm.weight".into(), ones(d)?));
        for i in 0..shape.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            let inv = |c: usize| 1.0 / (c as f32).sqrt();
            params.push((n("attn_norm"), ones(d)?));
            params.push((n("attn_q"), uniform(qd, d, inv(d))?));
            params.push((n("attn_k"), uniform(kvd, d, inv(d))?));
            params.push((n("attn_v"), uniform(kvd, d, inv(d))?));
            params.push((n("attn_q_norm"), ones(shape.head_dim)?));
            params.push((n("attn_k_norm"), ones(shape.head_dim)?));
            params.push((n("attn_output"), uniform(d, qd, inv(qd) * out_std)?));
            params.push((n("ffn_norm"), ones(d)?));
            params.push((n("ffn_gate"), uniform(shape.n_ff, d, inv(d))?));
            params.push((n("ffn_up"), uniform(shape.n_ff, d, inv(d))?));
            params.push((
                n("ffn_down"),
                uniform(d, shape.n_ff, inv(shape.n_ff) * out_std)?,
            ));
        }
        params.push(("output_norm.weight".into(), ones(d)?));
        params.push((
            "output.weight".into(),
            Var::from_tensor(&Tensor::from_vec(head_init, (n_draft_vocab, d), &dev)?)?,
        ));
        Ok(Self::from_params(shape, n_draft_vocab, params))
    }

    /// A network from named parameters (e.g. loaded from a checkpoint).
    pub fn from_params(
        shape: DflashShape,
        n_draft_vocab: usize,
        params: Vec<(String, Var)>,
    ) -> Self {
        let by_name = params
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.clone(), i))
            .collect();
        Self {
            shape,
            n_draft_vocab,
            train_head: false,
            params,
            by_name,
        }
    }

    /// The trainable variable named `name`, if there is one.
    pub fn var(&self, name: &str) -> Option<&Var> {
        self.by_name.get(name).map(|&i| &self.params[i].1)
    }

    /// The parameter named `name` (panics if there is none).
    pub fn p(&self, name: &str) -> &Tensor {
        self.params[self.by_name[name]].1.as_tensor()
    }

    /// Number of trainable values.
    pub fn n_params(&self) -> usize {
        self.params.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Final-norm hidden states of every block row: `[A·B, n_embd]`.
    pub fn hidden(&self, b: &Batch) -> Result<Tensor> {
        let s = &self.shape;
        let (hd, nh, nkv) = (s.head_dim, s.n_head, s.n_head_kv);
        let group = nh / nkv;
        let c = b.features.dim(0)?;
        let n = b.block_pos.len();
        let bs = b.block_size;
        let nb = n / bs;
        let ctx_pos: Vec<usize> = (0..c).collect();
        let g = rms_norm(
            &linear(&b.features, self.p("fc.weight"))?,
            Some(self.p("enc.output_norm.weight")),
            s.eps,
        )?;
        let kq_scale = 1.0 / (hd as f64).sqrt();
        let mut x = b.block_embd.clone();
        for il in 0..s.n_layer {
            let w = |t: &str| self.p(&format!("blk.{il}.{t}.weight"));
            let keys = |h: &Tensor, rows: usize, pos: &[usize]| -> Result<(Tensor, Tensor)> {
                let k = linear(h, w("attn_k"))?.reshape((rows, nkv, hd))?;
                let k = rope(
                    &rms_norm(&k, Some(w("attn_k_norm")), s.eps)?,
                    pos,
                    s.rope_base,
                )?;
                let v = linear(h, w("attn_v"))?.reshape((rows, nkv, hd))?;
                Ok((k, v))
            };
            let (ck, cv) = keys(&g, c, &ctx_pos)?;
            let h = rms_norm(&x, Some(w("attn_norm")), s.eps)?;
            let q = linear(&h, w("attn_q"))?.reshape((n, nh, hd))?;
            let q = rope(
                &rms_norm(&q, Some(w("attn_q_norm")), s.eps)?,
                &b.block_pos,
                s.rope_base,
            )?;
            let (bk, bv) = keys(&h, n, &b.block_pos)?;
            // [keys, kv heads, hd] → [keys, heads, hd], kv head repeated for its group.
            let expand = |t: Tensor| -> Result<Tensor> {
                let m = t.dim(0)?;
                t.reshape((m, nkv, 1, hd))?
                    .broadcast_as((m, nkv, group, hd))?
                    .reshape((m, nh, hd))
            };
            // Context keys are shared by all blocks (masked past each block's anchor);
            // block keys only within their own block, so the block-to-block scores are
            // A products of B × B rather than one (A·B)² product that is mostly masked.
            let ck = expand(ck)?.transpose(0, 1)?.contiguous()?; // [nh, C, hd]
            let cv = expand(cv)?.transpose(0, 1)?.contiguous()?;
            let per_block = |t: Tensor| -> Result<Tensor> {
                // [n, nh, hd] → [A, nh, B, hd]
                t.reshape((nb, bs, nh, hd))?.transpose(1, 2)?.contiguous()
            };
            let bk = per_block(expand(bk)?)?;
            let bv = per_block(expand(bv)?)?;
            let qc = q.transpose(0, 1)?.contiguous()?; // [nh, n, hd]
            let qb = per_block(q)?;
            let s_ctx = (qc.matmul(&ck.t()?)? * kq_scale)?.broadcast_add(&b.mask)?;
            let s_blk = (qb.matmul(&bk.t()?)? * kq_scale)? // [A, nh, B, B]
                .transpose(0, 1)?
                .reshape((nh, n, bs))?;
            let scores = Tensor::cat(&[s_ctx, s_blk], 2)?; // [nh, n, C + B]
            let max = scores.max_keepdim(D::Minus1)?.detach();
            let e = scores.broadcast_sub(&max)?.exp()?;
            let p = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
            let o_ctx = p.narrow(2, 0, c)?.matmul(&cv)?; // [nh, n, hd]
            let o_blk = p
                .narrow(2, c, bs)?
                .reshape((nh, nb, bs, bs))?
                .transpose(0, 1)?
                .contiguous()?
                .matmul(&bv)? // [A, nh, B, hd]
                .transpose(0, 1)?
                .reshape((nh, n, hd))?;
            let o = (o_ctx + o_blk)?.transpose(0, 1)?.reshape((n, nh * hd))?;
            x = (x + linear(&o, w("attn_output"))?)?;
            let h = rms_norm(&x, Some(w("ffn_norm")), s.eps)?;
            let a = (linear(&h, w("ffn_gate"))?.silu()? * linear(&h, w("ffn_up"))?)?;
            x = (x + linear(&a, w("ffn_down"))?)?;
        }
        rms_norm(&x, Some(self.p("output_norm.weight")), s.eps)
    }

    /// Draft-vocabulary logits of the loss rows: `[rows, n_draft_vocab]`.
    pub fn logits(&self, b: &Batch) -> Result<Tensor> {
        let h = self.hidden(b)?.index_select(&b.rows, 0)?;
        let head = self.p("output.weight");
        if self.train_head {
            linear(&h, head)
        } else {
            // No gradient reaches a detached head: the optimizer leaves it as it is.
            linear(&h, &head.detach())
        }
    }

    /// Weighted cross-entropy of the loss rows against their labels (soft labels: the
    /// cross-entropy to the target's top-k, i.e. the KL divergence up to a constant), and
    /// the logits it came from.
    pub fn loss(&self, b: &Batch) -> Result<(Tensor, Tensor)> {
        let logits = self.logits(b)?;
        let max = logits.max_keepdim(D::Minus1)?.detach();
        let z = logits.broadcast_sub(&max)?;
        let lse = z.exp()?.sum_keepdim(D::Minus1)?.log()?;
        let logp = z.broadcast_sub(&lse)?;
        let picked = logp.gather(&b.targets, 1)?;
        let wsum = b.weight_sum.max(1e-6);
        let loss = ((picked * &b.weights)?.sum_all()?.neg()? / wsum as f64)?;
        Ok((loss, logits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distill::Record;
    use crate::draft::diffusion::Embeddings;
    use crate::train::data::{BlockOptions, DraftVocab, Labels, make_batch};

    fn tiny() -> (Net, Embeddings, DraftVocab, BlockOptions) {
        let shape = DflashShape {
            n_embd: 8,
            n_layer: 1,
            n_head: 2,
            n_head_kv: 1,
            head_dim: 4,
            n_ff: 16,
            eps: 1e-6,
            rope_base: 10_000.0,
            block_size: 4,
            target_layers: vec![1],
            context_length: 64,
            n_vocab: 12,
            mask_token: 11,
        };
        let mut rng = Rng::new(7);
        let mut noise =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.uniform() as f32 - 0.5).collect() };
        let vocab = DraftVocab::from_d2t(vec![1, 2, 3, 4, 5, 6, 7, 8], 12);
        let net = Net::new(shape, noise(8 * 8), 3).unwrap();
        let embd = Embeddings::from_f32(&noise(12 * 8), 8);
        let block = BlockOptions {
            block_size: 4,
            anchors: 2,
            gamma: 2.0,
            loss_positions: 0,
            max_context: 64,
            labels: Labels::Hard,
            prompt_anchors: true,
        };
        (net, embd, vocab, block)
    }

    fn record(seed: u64) -> Record {
        let mut rng = Rng::new(seed);
        let tokens: Vec<i32> = vec![0, 1, 2, 3, 4, 9, 6, 7, 8, 1, 2];
        Record {
            prompt_index: 0,
            n_prompt: 3,
            features: (0..(tokens.len() - 1) * 8)
                .map(|_| rng.uniform() as f32 - 0.5)
                .collect(),
            tokens,
            top_ids: Vec::new(),
            top_p: Vec::new(),
        }
    }

    #[test]
    fn toy_batch_masks_and_targets() {
        let (_, embd, vocab, o) = tiny();
        let rec = record(1);
        let mask_embd = embd.rows(&[11]);
        let b = make_batch(&rec, &[3, 8], &embd, &mask_embd, &vocab, &o).unwrap();
        // Context = features of positions 0..8 (the last anchor).
        assert_eq!(b.features.dims(), &[8, 8]);
        assert_eq!(b.block_pos, vec![3, 4, 5, 6, 8, 9, 10, 11]);
        let m: Vec<Vec<f32>> = b.mask.to_vec2().unwrap();
        // Block 0 (anchor 3) sees context 0..3, block 1 (anchor 8) context 0..8 (and each
        // its own rows, outside the mask).
        assert_eq!(m[1], [vec![0.0; 3], vec![-1e9; 5]].concat());
        assert_eq!(m[6], vec![0.0; 8]);
        // Rows 1..4 of block 0 predict tokens 4, 9, 6 (9 is outside the draft vocabulary:
        // no loss, counted as a miss); block 1 predicts 1, 2 and runs off the end.
        assert_eq!(b.rows.to_vec1::<u32>().unwrap(), vec![1, 2, 3, 5, 6]);
        assert_eq!(b.truth, vec![3, -1, 5, 0, 1]);
        let w: Vec<Vec<f32>> = b.weights.to_vec2().unwrap();
        let e = |i: f32| (-i / 2.0).exp();
        assert_eq!(w, vec![[e(0.0)], [0.0], [e(2.0)], [e(0.0)], [e(1.0)]]);
        assert_eq!(b.weight_sum, e(0.0) + e(2.0) + e(0.0) + e(1.0));
        // The block input: anchor token, then the mask embedding.
        let x: Vec<Vec<f32>> = b.block_embd.to_vec2().unwrap();
        assert_eq!(x[0], embd.rows(&[3]));
        assert_eq!(x[1], mask_embd);
        assert_eq!(x[4], embd.rows(&[8]));
    }

    #[test]
    fn loss_is_the_weighted_cross_entropy_of_the_logits() {
        let (net, embd, vocab, o) = tiny();
        let rec = record(2);
        let mask_embd = embd.rows(&[11]);
        let b = make_batch(&rec, &[3, 8], &embd, &mask_embd, &vocab, &o).unwrap();
        let (loss, logits) = net.loss(&b).unwrap();
        let logits: Vec<Vec<f32>> = logits.to_vec2().unwrap();
        let w: Vec<Vec<f32>> = b.weights.to_vec2().unwrap();
        let t: Vec<Vec<u32>> = b.targets.to_vec2().unwrap();
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for ((row, wi), ti) in logits.iter().zip(&w).zip(&t) {
            let (wi, ti) = (wi[0], ti[0]);
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = row
                .iter()
                .map(|&v| (v as f64 - max).exp())
                .sum::<f64>()
                .ln()
                + max;
            num += wi as f64 * (lse - row[ti as usize] as f64);
            den += wi as f64;
        }
        let l = loss.to_scalar::<f32>().unwrap() as f64;
        assert!((l - num / den).abs() < 1e-5, "{l} vs {}", num / den);
    }

    /// Soft labels: each row's loss is the cross-entropy to the target's top-k
    /// distribution, renormalised over the draft vocabulary (tokens outside it dropped).
    #[test]
    fn soft_labels_give_the_cross_entropy_to_the_targets_top_k() {
        let (net, embd, vocab, mut o) = tiny();
        o.labels = Labels::Soft;
        let mut rec = record(5);
        let rows = rec.tokens.len() - 1;
        // Top 3 after every position: token r % 8 + 1 (in the vocabulary), 9 (outside),
        // 2 — probabilities 0.5, 0.3, 0.1.
        for r in 0..rows {
            rec.top_ids.extend([(r % 8 + 1) as i32, 9, 2]);
            rec.top_p.extend([0.5, 0.3, 0.1]);
        }
        let mask_embd = embd.rows(&[11]);
        let b = make_batch(&rec, &[3, 8], &embd, &mask_embd, &vocab, &o).unwrap();
        let (loss, logits) = net.loss(&b).unwrap();
        let logits: Vec<Vec<f32>> = logits.to_vec2().unwrap();
        let row_ids: Vec<u32> = b.rows.to_vec1().unwrap();
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for (row, &r) in logits.iter().zip(&row_ids) {
            // Block row r = b·4 + i predicts the token after position anchor + i − 1.
            let (anchor, i) = ([3usize, 8][r as usize / 4], r as usize % 4);
            let pos = anchor + i - 1;
            let w = (-((i - 1) as f64) / 2.0).exp();
            let lse = row.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
            let first = vocab.t2d[pos % 8 + 1] as usize;
            let second = vocab.t2d[2] as usize;
            let ce = if first == second {
                lse - row[first] as f64
            } else {
                (0.5 * (lse - row[first] as f64) + 0.1 * (lse - row[second] as f64)) / 0.6
            };
            num += w * ce;
            den += w;
        }
        let l = loss.to_scalar::<f32>().unwrap() as f64;
        assert!((l - num / den).abs() < 1e-4, "{l} vs {}", num / den);
        // Prompt positions are anchors too with soft labels.
        assert_eq!(crate::train::data::anchor_range(&rec, &o).start, 1);
    }

    /// A block sees only the context before its anchor and its own rows: changing later
    /// features or another block's tokens leaves its outputs alone.
    #[test]
    fn blocks_see_only_their_context_and_themselves() {
        let (net, embd, vocab, o) = tiny();
        let rec = record(3);
        let mask_embd = embd.rows(&[11]);
        let h = |rec: &Record| -> Vec<Vec<f32>> {
            let b = make_batch(rec, &[3, 8], &embd, &mask_embd, &vocab, &o).unwrap();
            net.hidden(&b).unwrap().to_vec2().unwrap()
        };
        let base = h(&rec);
        let mut later = rec.clone();
        for v in &mut later.features[3 * 8..] {
            *v += 1.0;
        }
        let mut other = rec.clone();
        other.tokens[8] = 5;
        let (a, c) = (h(&later), h(&other));
        for r in 0..4 {
            assert_eq!(
                base[r], a[r],
                "block 0 row {r} saw features after its anchor"
            );
            assert_eq!(base[r], c[r], "block 0 row {r} saw block 1");
        }
        assert_ne!(base[4], a[4], "block 1 must see features before its anchor");
        assert_ne!(base[4], c[4]);
    }

    /// Blocks batched together give each block's rows as that block alone does (one
    /// block is the case the export test pins to the run-time drafter).
    #[test]
    fn batched_blocks_equal_each_block_alone() {
        let (net, embd, vocab, o) = tiny();
        let rec = record(6);
        let mask_embd = embd.rows(&[11]);
        let h = |anchors: &[usize]| -> Vec<Vec<f32>> {
            let b = make_batch(&rec, anchors, &embd, &mask_embd, &vocab, &o).unwrap();
            net.hidden(&b).unwrap().to_vec2().unwrap()
        };
        let both = h(&[2, 5, 8]);
        for (k, a) in [2usize, 5, 8].into_iter().enumerate() {
            let alone = h(&[a]);
            for r in 0..4 {
                for (x, y) in both[k * 4 + r].iter().zip(&alone[r]) {
                    assert!((x - y).abs() < 1e-5, "block at {a} row {r}: {x} vs {y}");
                }
            }
        }
    }

    #[test]
    fn training_lowers_the_loss_on_a_repeated_batch() {
        let (net, embd, vocab, o) = tiny();
        let rec = record(4);
        let mask_embd = embd.rows(&[11]);
        let b = make_batch(&rec, &[3, 8], &embd, &mask_embd, &vocab, &o).unwrap();
        let mut opt = crate::train::optim::AdamW::new(&net).unwrap();
        let first = net.loss(&b).unwrap().0.to_scalar::<f32>().unwrap();
        for _ in 0..30 {
            let (loss, _) = net.loss(&b).unwrap();
            let g = loss.backward().unwrap();
            opt.step(&net, &g, 1e-2).unwrap();
        }
        let last = net.loss(&b).unwrap().0.to_scalar::<f32>().unwrap();
        assert!(last < 0.5 * first, "{first} → {last}");
    }
}
