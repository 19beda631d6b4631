//! The verify-cost curve C(n): seconds for the target to check a batch of n tokens (the
//! newest committed token + n − 1 drafts). Seeded by a short measurement (cached on disk by
//! the session), refreshed online from the verify times the engine observes.
//!
//! On a CPU, C(n) grows with n (a 2-core SmolLM2 run measures C(2) ≈ 1.8 · C(1)); on a
//! GPU it is nearly flat for small n. The policy reads only this curve, so the same code
//! drafts little on the first and much on the second.

use std::time::Instant;

use crate::engine::target::Target;
use crate::head::OutputHead;
use crate::llama::{Outputs, TargetError, Token};

/// Batch sizes measured by [`measure`]: dense where the curve bends, sparse beyond.
pub const MEASURED_SIZES: &[usize] = &[1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32];

/// Weight of one observed round in the online refresh (exponential moving average).
const EMA: f64 = 0.1;

/// Verify cost per batch size. Plain data (serialised into the on-disk cache).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CostModel {
    /// `secs[n - 1]`: seconds to verify a batch of n.
    secs: Vec<f64>,
}

impl CostModel {
    /// A curve through measured points `(n, seconds)`, linear between them and extended
    /// beyond the last one with the slope of the last two (at least flat). Sizes up to
    /// `max_n` are tabulated.
    pub fn from_points(points: &[(usize, f64)], max_n: usize) -> Self {
        let mut pts: Vec<(usize, f64)> = points
            .iter()
            .copied()
            .filter(|&(n, s)| n >= 1 && s.is_finite() && s > 0.0)
            .collect();
        pts.sort_by_key(|p| p.0);
        pts.dedup_by_key(|p| p.0);
        if pts.is_empty() {
            pts.push((1, 1.0));
        }
        let max_n = max_n.max(1);
        let secs = (1..=max_n)
            .map(|n| interpolate(&pts, n))
            .collect::<Vec<_>>();
        let mut m = Self { secs };
        m.make_monotone();
        m
    }

    /// A curve of the given shape relative to one step (tests, priors): `rel[n-1]` × `step`.
    pub fn relative(step: f64, rel: &[f64]) -> Self {
        let pts: Vec<(usize, f64)> = rel
            .iter()
            .enumerate()
            .map(|(i, r)| (i + 1, r * step))
            .collect();
        Self::from_points(&pts, rel.len())
    }

    /// Seconds to verify a batch of `n` (n ≥ 1); beyond the table, extrapolated linearly.
    pub fn cost(&self, n: usize) -> f64 {
        let n = n.max(1);
        if n <= self.secs.len() {
            return self.secs[n - 1];
        }
        let last = self.secs.len();
        let slope = if last >= 2 {
            (self.secs[last - 1] - self.secs[last - 2]).max(0.0)
        } else {
            self.secs[0]
        };
        self.secs[last - 1] + slope * (n - last) as f64
    }

    /// One plain decoding step.
    pub fn step(&self) -> f64 {
        self.secs[0]
    }

    /// Largest batch tabulated.
    pub fn max_n(&self) -> usize {
        self.secs.len()
    }

    /// The draft length beyond which even certain acceptance stops paying: the k whose
    /// batch of k + 1 has the best tokens-per-second ratio (k + 1) / C(k + 1).
    pub fn ceiling_k(&self) -> usize {
        (1..=self.secs.len())
            .max_by(|&a, &b| {
                let ra = a as f64 / self.cost(a);
                let rb = b as f64 / self.cost(b);
                ra.total_cmp(&rb)
            })
            .map_or(0, |n| n - 1)
    }

    /// Fold one observed verification (a batch of `n`, `secs` seconds) into the curve. A
    /// sample is clamped to [½, 2] × the current value so one preempted round cannot
    /// swing it.
    pub fn observe(&mut self, n: usize, secs: f64) {
        if n == 0 || n > self.secs.len() || !secs.is_finite() || secs <= 0.0 {
            return;
        }
        let cur = self.secs[n - 1];
        let s = secs.clamp(cur * 0.5, cur * 2.0);
        self.secs[n - 1] = cur + EMA * (s - cur);
        self.make_monotone();
    }

    /// A bigger batch never costs less than a smaller one (noise can say otherwise).
    fn make_monotone(&mut self) {
        for i in 1..self.secs.len() {
            if self.secs[i] < self.secs[i - 1] {
                self.secs[i] = self.secs[i - 1];
            }
        }
    }
}

fn interpolate(pts: &[(usize, f64)], n: usize) -> f64 {
    if let Some(&(_, s)) = pts.iter().find(|p| p.0 == n) {
        return s;
    }
    match pts.iter().position(|p| p.0 > n) {
        Some(0) => pts[0].1,
        Some(j) => {
            let (a, b) = (pts[j - 1], pts[j]);
            a.1 + (b.1 - a.1) * (n - a.0) as f64 / (b.0 - a.0) as f64
        }
        None => {
            let last = pts[pts.len() - 1];
            let slope = if pts.len() >= 2 {
                let prev = pts[pts.len() - 2];
                ((last.1 - prev.1) / (last.0 - prev.0) as f64).max(0.0)
            } else {
                last.1
            };
            last.1 + slope * (n - last.0) as f64
        }
    }
}

/// Measure the curve on `target`: a context of up to 64 tokens (a quarter of the window
/// at most), then batches of each size in [`MEASURED_SIZES`] (up to `max_n` and what the
/// window leaves) decoded `reps` times, medians. With `head`, batches stop at the final
/// norm and Tandem's lazy head computes every row (the path verification takes). The KV
/// cache is cleared afterwards. A window too small for any batch gives a one-point curve
/// (see [`CostModel::max_n`]; callers should not cache it).
pub fn measure<T: Target + ?Sized>(
    target: &mut T,
    head: Option<&OutputHead>,
    filler: Token,
    max_n: usize,
    reps: usize,
) -> Result<CostModel, TargetError> {
    let n_ctx = target.n_ctx();
    let depth = 64.min(n_ctx / 4);
    let max_n = max_n
        .min(target.n_batch())
        .min(n_ctx.saturating_sub(depth + 1))
        .max(1);
    target.clear();
    if depth > 0 {
        target.decode(&vec![filler; depth], 0, Outputs::Last)?;
    }
    let mut points = Vec::new();
    let batch = vec![filler; max_n];
    for &n in MEASURED_SIZES.iter().filter(|&&n| n <= max_n) {
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps.max(1) {
            let t0 = Instant::now();
            match head {
                Some(h) => {
                    target.decode(&batch[..n], depth, Outputs::Hidden)?;
                    let rows: Vec<&[f32]> = (0..n).map(|i| target.hidden(i)).collect();
                    std::hint::black_box(h.argmax(&rows));
                }
                None => target.decode(&batch[..n], depth, Outputs::All)?,
            }
            times.push(t0.elapsed().as_secs_f64());
            target.truncate(depth)?;
        }
        times.sort_by(f64::total_cmp);
        points.push((n, times[times.len() / 2]));
    }
    target.clear();
    Ok(CostModel::from_points(&points, max_n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_between_points_and_extends_beyond() {
        let m = CostModel::from_points(&[(1, 1.0), (3, 2.0), (5, 4.0)], 8);
        assert_eq!(m.cost(1), 1.0);
        assert_eq!(m.cost(2), 1.5);
        assert_eq!(m.cost(4), 3.0);
        assert_eq!(m.cost(6), 5.0);
        assert_eq!(m.cost(10), 9.0);
    }

    #[test]
    fn stays_monotone_and_observes_with_clamped_ema() {
        let mut m = CostModel::from_points(&[(1, 1.0), (2, 0.8), (3, 2.0)], 3);
        assert_eq!(m.cost(2), 1.0);
        m.observe(1, 100.0); // clamped to 2× → 1.0 + 0.1 × 1.0
        assert!((m.cost(1) - 1.1).abs() < 1e-12);
        assert!(m.cost(2) >= m.cost(1));
    }

    #[test]
    fn ceiling_is_where_tokens_per_second_peak() {
        // cost 1, 1.8, 2.1, 2.6, 3.1 → ratio n/C: 1, 1.11, 1.43, 1.54, 1.61 → n = 5, k = 4
        let m = CostModel::relative(0.01, &[1.0, 1.8, 2.1, 2.6, 3.1]);
        assert_eq!(m.ceiling_k(), 4);
        // A flat curve (GPU-like) pays up to the largest batch.
        let flat = CostModel::relative(0.01, &[1.0; 16]);
        assert_eq!(flat.ceiling_k(), 15);
    }
}
