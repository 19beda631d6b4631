//! Held-out measures of the network in training, comparable with what run time measures:
//! the accepted length at every anchor of a held-out continuation, walked as the engine
//! walks it (`distill::Walk`); the every-anchor averages (`prefix_acc`) are kept beside
//! it and read higher (they count the easy positions inside accepted runs).

use super::data::{self, BlockOptions};
use super::net::Net;
use super::{Ctx, TrainError, TrainOptions, ValStats};
use crate::distill::Walk;

/// Greedy accepted length at every anchor of the continuation of a held-out record
/// (`lengths[a]`, 0 before the continuation) and the mean loss of those blocks.
fn accepted_lengths(
    net: &Net,
    ctx: &Ctx,
    rec: &crate::distill::Record,
    block: &BlockOptions,
) -> Result<(Vec<usize>, f64, usize), TrainError> {
    let bs = block.block_size;
    let n = rec.tokens.len();
    let mut lengths = vec![0usize; n.saturating_sub(1)];
    let anchors: Vec<usize> = (rec.n_prompt..n.saturating_sub(1))
        .filter(|&a| a < block.max_context)
        .collect();
    let (mut loss_sum, mut batches) = (0.0f64, 0usize);
    for chunk in anchors.chunks(block.anchors.max(1)) {
        let b = data::make_batch(rec, chunk, &ctx.embd, &ctx.mask_embd, &ctx.vocab, block)?;
        let (loss, logits) = net.loss(&b)?;
        loss_sum += loss.to_scalar::<f32>()? as f64;
        batches += 1;
        let pred: Vec<u32> = logits.argmax(candle_core::D::Minus1)?.to_vec1()?;
        let rows: Vec<u32> = b.rows.to_vec1()?;
        // Rows come block by block, slot 1 first; a block accepts its correct prefix.
        let mut run = vec![(0usize, true); chunk.len()];
        for ((&r, &p), &t) in rows.iter().zip(&pred).zip(&b.truth) {
            let blk = r as usize / bs;
            let (len, alive) = &mut run[blk];
            if *alive && t >= 0 && p as i32 == t {
                *len += 1;
            } else {
                *alive = false;
            }
        }
        for (&a, (len, _)) in chunk.iter().zip(run) {
            lengths[a] = len;
        }
    }
    Ok((lengths, loss_sum, batches))
}

/// Score the drafter on the held-out records: per-round (walked) and every-anchor figures.
pub(super) fn validate(
    net: &Net,
    ctx: &Ctx,
    o: &TrainOptions,
    step: usize,
) -> Result<ValStats, TrainError> {
    let bs = o.block_size;
    let block = BlockOptions {
        anchors: 32,
        // Every position is scored, whatever training skips.
        loss_positions: 0,
        ..ctx.block.clone()
    };
    let mut at_least = vec![0usize; bs];
    let (mut anchors, mut loss_sum, mut loss_n) = (0usize, 0.0f64, 0usize);
    let mut walk = Walk::default();
    for &id in ctx.val_ids.iter().take(o.val_records) {
        let rec = ctx.read_val(id)?;
        if rec.tokens.len() <= rec.n_prompt + 1 {
            continue;
        }
        let (lengths, ls, lb) = accepted_lengths(net, ctx, &rec, &block)?;
        loss_sum += ls;
        loss_n += lb;
        walk.add(&Walk::over(&lengths, rec.n_prompt));
        // Every-anchor figures over full blocks only.
        for &l in lengths
            .iter()
            .enumerate()
            .filter(|&(a, _)| a >= rec.n_prompt && a + bs <= rec.tokens.len())
            .map(|(_, l)| l)
        {
            anchors += 1;
            for c in at_least.iter_mut().take(l + 1) {
                *c += 1;
            }
        }
    }
    let prefix_acc: Vec<f64> = (1..bs)
        .map(|i| at_least[i] as f64 / anchors.max(1) as f64)
        .collect();
    Ok(ValStats {
        step,
        blocks: anchors,
        tokens_per_step: 1.0 + prefix_acc.iter().sum::<f64>(),
        prefix_acc,
        loss: loss_sum / loss_n.max(1) as f64,
        rounds: walk.rounds,
        round_tokens_per_step: walk.tokens_per_step(),
        round_first_acceptance: walk.first_rate(),
    })
}
