//! The verify-cost curve: what a batch of k tokens costs relative to one token.

use super::stats::median;
use crate::head::OutputHead;
use crate::llama::{Context, Outputs, TargetError};

/// Cost of verifying k tokens in one batch, relative to one plain decoding step.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CostPoint {
    /// Tokens in the batch.
    pub k: usize,
    /// llama.cpp computing logits for all k positions (what verification needs without
    /// the lazy head).
    pub median_ms: f64,
    /// `median_ms` relative to one token with logits.
    pub ratio: f64,
    /// llama.cpp computing logits for the last position only: the floor for any head.
    pub last_only_ms: f64,
    /// `last_only_ms` relative to one token with logits.
    pub last_only_ratio: f64,
    /// Decode up to the final norm plus Tandem's lazy head over all k positions in one
    /// pass (every draft token accepted: the oracle's case).
    pub lazy_ms: Option<f64>,
    /// `lazy_ms` relative to one token with logits.
    pub lazy_ratio: Option<f64>,
}

/// The batch sizes measured up to `max_k`: every k to 16, then coarser (the curve is
/// smooth there and large batches dominate the run time).
pub fn calibration_ks(max_k: usize) -> Vec<usize> {
    (1..=max_k)
        .filter(|&k| k <= 16 || (k <= 32 && k % 4 == 0) || k % 8 == 0)
        .collect()
}

/// Measure the verify-cost curve at context depth `depth`: for k in `calibration_ks()`, decode k
/// tokens, roll them back, repeat; the k values and modes are interleaved within each
/// repetition so drift hits all alike. The base (ratio 1) is one token with logits.
pub fn calibrate(
    ctx: &mut Context,
    head: Option<&OutputHead>,
    depth: usize,
    max_k: usize,
    reps: usize,
) -> Result<Vec<CostPoint>, TargetError> {
    let model = ctx.model().clone();
    let text =
        "The quick brown fox jumps over the lazy dog while the river keeps flowing. ".repeat(64);
    let mut toks = model.tokenize(&text, true, false)?;
    toks.truncate(depth + max_k);
    if toks.len() < depth + max_k || depth + max_k > ctx.n_ctx() || max_k > ctx.n_batch() {
        return Err(TargetError::ContextFull { n_ctx: ctx.n_ctx() });
    }
    ctx.clear();
    ctx.decode(&toks[..depth], 0, Outputs::Last)?;
    let ks = calibration_ks(max_k);
    let mut all = vec![Vec::new(); ks.len()];
    let mut last = vec![Vec::new(); ks.len()];
    let mut lazy = vec![Vec::new(); ks.len()];
    for _ in 0..reps {
        for (ki, &k) in ks.iter().enumerate() {
            let batch = &toks[depth..depth + k];
            for (mode, times) in [
                (Outputs::All, &mut all),
                (Outputs::Last, &mut last),
                (Outputs::Hidden, &mut lazy),
            ] {
                if mode == Outputs::Hidden && head.is_none() {
                    continue;
                }
                ctx.truncate(depth)?;
                let t = std::time::Instant::now();
                ctx.decode(batch, depth, mode)?;
                if let (Outputs::Hidden, Some(h)) = (mode, head) {
                    // One pass over all k rows: what the engine converges to when every
                    // draft token is accepted.
                    let hidden: Vec<&[f32]> = (0..k).map(|i| ctx.hidden(i)).collect();
                    std::hint::black_box(h.argmax(&hidden));
                }
                times[ki].push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    ctx.truncate(depth)?;
    let base = median(&all[0]);
    Ok((0..ks.len())
        .map(|i| {
            let m = median(&all[i]);
            let l = median(&last[i]);
            let z = (!lazy[i].is_empty()).then(|| median(&lazy[i]));
            CostPoint {
                k: ks[i],
                median_ms: m,
                ratio: m / base,
                last_only_ms: l,
                last_only_ratio: l / base,
                lazy_ms: z,
                lazy_ratio: z.map(|z| z / base),
            }
        })
        .collect())
}

/// The curve as a Markdown table: per k, the cost of a k-token batch (all logits, last row
/// only, lazy head) relative to one plain step, and k / cost (the oracle ceiling at draft
/// length k − 1).
pub fn calibration_table(curve: &[CostPoint]) -> String {
    use std::fmt::Write;
    let mut out = String::from(
        "Cost of a k-token batch / one plain decoding step; k / cost = the oracle ceiling at draft length k-1.\n\n\
         | k | all logits ms | cost | k / cost | last-only ms | cost | k / cost | lazy head ms | cost | k / cost |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for p in curve {
        let lazy = match (p.lazy_ms, p.lazy_ratio) {
            (Some(m), Some(r)) => format!("{m:.1} | {r:.2} | {:.2}", p.k as f64 / r),
            _ => "- | - | -".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.2} | {:.2} | {:.1} | {:.2} | {:.2} | {lazy} |",
            p.k,
            p.median_ms,
            p.ratio,
            p.k as f64 / p.ratio,
            p.last_only_ms,
            p.last_only_ratio,
            p.k as f64 / p.last_only_ratio,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn calibration_covers_one_to_max_k() {
        let ks = super::calibration_ks(64);
        assert_eq!(&ks[..16], &(1..=16).collect::<Vec<_>>()[..]);
        assert_eq!(&ks[16..], &[20, 24, 28, 32, 40, 48, 56, 64]);
        assert_eq!(super::calibration_ks(5), vec![1, 2, 3, 4, 5]);
    }
}
