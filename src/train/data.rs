//! Training data: the reduced draft vocabulary, and batches of blocks from collected
//! sequences (`distill::Shards`).

use candle_core::{Device, Result, Tensor};

use super::net::Batch;
use crate::distill::Record;
use crate::draft::diffusion::Embeddings;
use crate::llama::Token;
use crate::sampling::Rng;

/// The draft vocabulary: the target tokens the drafter's head can propose.
#[derive(Debug, Clone, PartialEq)]
pub struct DraftVocab {
    /// Draft row → target token id (llama.cpp's `d2t`).
    pub d2t: Vec<Token>,
    /// Target token id → draft row, −1 where absent.
    pub t2d: Vec<i32>,
}

impl DraftVocab {
    /// The `n` most frequent tokens of `counts` (target id → count), ties to the lower id.
    pub fn most_frequent(counts: &[u64], n: usize) -> Self {
        let mut ids: Vec<usize> = (0..counts.len()).collect();
        ids.sort_by(|&a, &b| counts[b].cmp(&counts[a]).then(a.cmp(&b)));
        ids.truncate(n.min(counts.len()));
        ids.sort_unstable();
        Self::from_d2t(ids.into_iter().map(|t| t as Token).collect(), counts.len())
    }

    /// The vocabulary with draft rows `d2t`, over a target vocabulary of `n_vocab` tokens.
    pub fn from_d2t(d2t: Vec<Token>, n_vocab: usize) -> Self {
        let mut t2d = vec![-1i32; n_vocab];
        for (i, &t) in d2t.iter().enumerate() {
            t2d[t as usize] = i as i32;
        }
        Self { d2t, t2d }
    }

    /// Number of draft rows.
    pub fn len(&self) -> usize {
        self.d2t.len()
    }

    /// Whether the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.d2t.is_empty()
    }

    /// Share of `counts` the vocabulary covers.
    pub fn coverage(&self, counts: &[u64]) -> f64 {
        let total: u64 = counts.iter().sum();
        let inside: u64 = self.d2t.iter().map(|&t| counts[t as usize]).sum();
        inside as f64 / total.max(1) as f64
    }
}

/// What a block position learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Labels {
    /// The target's top-k next-token distribution (renormalised over the draft
    /// vocabulary); records without soft labels fall back to `Hard`.
    Soft,
    /// One token: the target's most likely next token where the data has soft labels,
    /// else the recorded next token (the target's own greedy continuation).
    Hard,
}

/// How blocks are cut from a sequence.
#[derive(Debug, Clone)]
pub struct BlockOptions {
    /// Positions per block (the anchor token plus `block_size - 1` masks).
    pub block_size: usize,
    /// Blocks per batch (anchors drawn without replacement).
    pub anchors: usize,
    /// Loss weight of block position `i` (1-based): `exp(−(i − 1) / gamma)`.
    pub gamma: f32,
    /// Block positions that carry a loss (1..=this; 0 = all). The later positions still
    /// run (their masks shape the earlier ones' attention) but skip the head: half the
    /// head's cost at 8 of 15, where `gamma` puts most of the weight anyway.
    pub loss_positions: usize,
    /// Anchors lie below this position (bounds the attention context).
    pub max_context: usize,
    /// What the block positions learn.
    pub labels: Labels,
    /// Anchor blocks inside the prompt too (teacher forcing over the prompt's text; needs
    /// soft labels: the target's own predictions there).
    pub prompt_anchors: bool,
}

/// Anchors of a record: positions whose block predicts at least one token the target
/// has labelled — every position from 1 where the record has soft labels and prompt
/// anchors are on, else those predicting generated tokens.
pub fn anchor_range(rec: &Record, o: &BlockOptions) -> std::ops::Range<usize> {
    let lo = if o.prompt_anchors && !rec.top_ids.is_empty() {
        1
    } else {
        rec.n_prompt.saturating_sub(1).max(1)
    };
    let hi = (rec.tokens.len() - 1).min(o.max_context);
    lo..hi.max(lo)
}

/// The label of row `r` (the token after position `r`) as (draft row, probability)
/// pairs, probabilities summing to 1 over the draft vocabulary; empty when the target's
/// choice lies outside it.
fn label(rec: &Record, r: usize, vocab: &DraftVocab, labels: Labels, out: &mut Vec<(u32, f32)>) {
    out.clear();
    let k = rec.top_ids.len() / (rec.tokens.len() - 1).max(1);
    if k == 0 {
        let d = vocab.t2d[rec.tokens[r + 1] as usize];
        if d >= 0 {
            out.push((d as u32, 1.0));
        }
        return;
    }
    let (ids, ps) = (
        &rec.top_ids[r * k..(r + 1) * k],
        &rec.top_p[r * k..(r + 1) * k],
    );
    let take = if labels == Labels::Hard { 1 } else { k };
    for (&t, &p) in ids.iter().zip(ps).take(take) {
        let d = vocab.t2d[t as usize];
        if d >= 0 && p > 0.0 {
            out.push((d as u32, if take == 1 { 1.0 } else { p }));
        }
    }
    let z: f32 = out.iter().map(|x| x.1).sum();
    for x in out.iter_mut() {
        x.1 /= z;
    }
}

/// A batch of blocks from `rec` at `anchors` (sorted). `mask_embd` is the mask token's
/// embedding row.
pub fn make_batch(
    rec: &Record,
    anchors: &[usize],
    embd: &Embeddings,
    mask_embd: &[f32],
    vocab: &DraftVocab,
    o: &BlockOptions,
) -> Result<Batch> {
    let dev = Device::Cpu;
    let bs = o.block_size;
    let d = mask_embd.len();
    let nf = rec.features.len() / (rec.tokens.len() - 1);
    let c = *anchors.last().expect("at least one anchor");
    let n = anchors.len() * bs;
    let mut block_embd = Vec::with_capacity(n * d);
    let mut block_pos = Vec::with_capacity(n);
    let mut mask = vec![-1e9f32; n * c];
    let (mut rows, mut row_weights, mut lab) = (Vec::new(), Vec::new(), Vec::new());
    let mut truth = Vec::new();
    let mut one = Vec::new();
    for (b, &a) in anchors.iter().enumerate() {
        block_embd.extend(embd.rows(&[rec.tokens[a]]));
        for i in 0..bs {
            if i > 0 {
                block_embd.extend_from_slice(mask_embd);
            }
            let r = b * bs + i;
            block_pos.push(a + i);
            mask[r * c..r * c + a].fill(0.0);
            // Every masked row with a token to predict; a row whose label lies outside
            // the draft vocabulary carries no loss but counts as a miss.
            if i > 0 && (o.loss_positions == 0 || i <= o.loss_positions) && a + i < rec.tokens.len()
            {
                label(rec, a + i - 1, vocab, o.labels, &mut one);
                rows.push(r as u32);
                truth.push(vocab.t2d[rec.tokens[a + i] as usize]);
                row_weights.push(if one.is_empty() {
                    0.0
                } else {
                    (-((i - 1) as f32) / o.gamma).exp()
                });
                lab.push(one.clone());
            }
        }
    }
    let m = rows.len();
    // Label columns: as many as the widest row, short rows padded with weight 0.
    let kk = lab.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let (mut targets, mut weights) = (vec![0u32; m * kk], vec![0f32; m * kk]);
    for (j, (l, &w)) in lab.iter().zip(&row_weights).enumerate() {
        for (c, &(d, p)) in l.iter().enumerate() {
            targets[j * kk + c] = d;
            weights[j * kk + c] = w * p;
        }
    }
    let weight_sum = row_weights.iter().sum::<f32>();
    Ok(Batch {
        features: Tensor::from_slice(&rec.features[..c * nf], (c, nf), &dev)?,
        block_embd: Tensor::from_vec(block_embd, (n, d), &dev)?,
        block_pos,
        mask: Tensor::from_vec(mask, (n, c), &dev)?,
        block_size: bs,
        rows: Tensor::from_vec(rows, m, &dev)?,
        targets: Tensor::from_vec(targets, (m, kk), &dev)?,
        weights: Tensor::from_vec(weights, (m, kk), &dev)?,
        weight_sum,
        truth,
    })
}

/// Up to `k` distinct anchors from `range`, sorted.
pub fn pick_anchors(range: std::ops::Range<usize>, k: usize, rng: &mut Rng) -> Vec<usize> {
    let mut all: Vec<usize> = range.collect();
    // Partial Fisher–Yates.
    let k = k.min(all.len());
    for i in 0..k {
        let j = i + (rng.next_u64() % (all.len() - i) as u64) as usize;
        all.swap(i, j);
    }
    all.truncate(k);
    all.sort_unstable();
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_takes_the_most_frequent_tokens() {
        let v = DraftVocab::most_frequent(&[5, 0, 9, 5, 1], 3);
        assert_eq!(v.d2t, vec![0, 2, 3]);
        assert_eq!(v.t2d, vec![0, -1, 1, 2, -1]);
        assert!((v.coverage(&[5, 0, 9, 5, 1]) - 19.0 / 20.0).abs() < 1e-12);
    }

    #[test]
    fn anchors_are_distinct_sorted_and_in_range() {
        let mut rng = Rng::new(3);
        let a = pick_anchors(10..50, 8, &mut rng);
        assert_eq!(a.len(), 8);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert!(a.iter().all(|x| (10..50).contains(x)));
        assert_eq!(pick_anchors(3..5, 8, &mut rng), vec![3, 4]);
    }
}
