//! The sampling transform (temperature, top-k, top-p) as plain data, a deterministic RNG,
//! and a fast argmax. The same transform is applied to the target's p and the drafter's q,
//! which speculative sampling needs for losslessness.

use crate::llama::Token;

/// How tokens are chosen. `temp <= 0` means greedy.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplingConfig {
    /// Softmax temperature; `<= 0` means greedy.
    pub temp: f32,
    /// Keep the k most likely tokens (0 = no limit).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose mass reaches top_p (1.0 = no limit).
    pub top_p: f32,
    /// Seed for the sampling RNG.
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            temp: 0.0,
            top_k: 40,
            top_p: 0.95,
            seed: 42,
        }
    }
}

impl SamplingConfig {
    /// Greedy decoding (temperature 0), other fields at their defaults.
    pub fn greedy() -> Self {
        Self {
            temp: 0.0,
            ..Self::default()
        }
    }

    /// Whether tokens are chosen greedily (`temp <= 0`).
    pub fn is_greedy(&self) -> bool {
        self.temp <= 0.0
    }

    /// The target's distribution over tokens after the transform, as sparse
    /// (token, probability) pairs sorted by decreasing probability, summing to 1.
    pub fn distribution(&self, logits: &[f32]) -> Dist {
        let mut d = Dist::default();
        self.distribution_into(logits, &mut d);
        d
    }

    /// As [`Self::distribution`], reusing `out`'s allocation.
    pub fn distribution_into(&self, logits: &[f32], out: &mut Dist) {
        out.items.clear();
        if self.is_greedy() {
            let (t, _) = argmax_margin(logits);
            out.items.push((t, 1.0));
            return;
        }
        let inv_t = 1.0 / self.temp;
        out.items.extend(
            logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as Token, l * inv_t)),
        );
        let by_desc = |a: &(Token, f32), b: &(Token, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if self.top_k > 0 && self.top_k < out.items.len() {
            out.items.select_nth_unstable_by(self.top_k - 1, by_desc);
            out.items.truncate(self.top_k);
        }
        out.items.sort_unstable_by(by_desc);
        // softmax over the kept candidates
        let max = out.items.first().map_or(0.0, |x| x.1);
        let mut sum = 0.0f64;
        for x in out.items.iter_mut() {
            x.1 = (x.1 - max).exp();
            sum += x.1 as f64;
        }
        for x in out.items.iter_mut() {
            x.1 = (x.1 as f64 / sum) as f32;
        }
        if self.top_p < 1.0 {
            let mut cum = 0.0f64;
            let mut keep = out.items.len();
            for (i, x) in out.items.iter().enumerate() {
                cum += x.1 as f64;
                if cum >= self.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            out.items.truncate(keep.max(1));
            out.normalize();
        }
    }
}

/// A sparse probability distribution: (token, probability), sorted by decreasing
/// probability for distributions made by [`SamplingConfig::distribution`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dist {
    /// The (token, probability) pairs.
    pub items: Vec<(Token, f32)>,
}

impl Dist {
    /// All mass on token `t`.
    pub fn point(t: Token) -> Self {
        Self {
            items: vec![(t, 1.0)],
        }
    }

    /// The probability of token `t` (0 if absent).
    pub fn prob(&self, t: Token) -> f32 {
        self.items.iter().find(|x| x.0 == t).map_or(0.0, |x| x.1)
    }

    /// Rescale the probabilities to sum to 1 (no-op if they sum to 0).
    pub fn normalize(&mut self) {
        let s: f64 = self.items.iter().map(|x| x.1 as f64).sum();
        if s > 0.0 {
            for x in self.items.iter_mut() {
                x.1 = (x.1 as f64 / s) as f32;
            }
        }
    }

    /// Draw a token. `u` is uniform in [0, 1).
    pub fn sample_with(&self, u: f64) -> Token {
        let total: f64 = self.items.iter().map(|x| x.1 as f64).sum();
        let mut target = u * total;
        for &(t, p) in &self.items {
            target -= p as f64;
            if target < 0.0 {
                return t;
            }
        }
        // rounding: fall back to the last token with mass
        self.items
            .iter()
            .rev()
            .find(|x| x.1 > 0.0)
            .map_or(0, |x| x.0)
    }
}

/// Index of the largest logit and its margin over the runner-up (ties go to the lowest
/// index, as llama.cpp's greedy sampler does).
pub fn argmax_margin(logits: &[f32]) -> (Token, f32) {
    let idx = argmax(logits) as usize;
    let second = logits
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != idx)
        .fold(f32::NEG_INFINITY, |m, (_, &x)| m.max(x));
    (idx as Token, logits.get(idx).map_or(0.0, |&b| b - second))
}

/// Fast argmax (the hot path of greedy verification): an 8-lane max the compiler
/// vectorises, then one scan for the first index holding it.
pub fn argmax(logits: &[f32]) -> Token {
    const W: usize = 8;
    let mut lane = [f32::NEG_INFINITY; W];
    let chunks = logits.chunks_exact(W);
    let rest = chunks.remainder();
    for c in chunks {
        for j in 0..W {
            lane[j] = lane[j].max(c[j]);
        }
    }
    let best = lane
        .iter()
        .chain(rest)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    logits.iter().position(|&x| x == best).unwrap_or(0) as Token
}

/// A small, fast, seedable RNG (xoshiro256**), so runs are reproducible without
/// depending on a crate's stream staying stable across versions.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// An RNG seeded from `seed` (expanded with splitmix64).
    pub fn new(seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        Self {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let r = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        r
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_picks_first_of_ties_and_reports_margin() {
        let l = [0.0, 3.0, 1.0, 3.0, -1.0, 2.5, 0.0, 0.0, 0.0, 1.0];
        assert_eq!(argmax_margin(&l), (1, 0.0));
        assert_eq!(argmax(&l), 1);
        let l = [0.0, 1.0, 5.0, 2.0];
        assert_eq!(argmax_margin(&l), (2, 3.0));
    }

    #[test]
    fn greedy_distribution_is_point_mass() {
        let d = SamplingConfig::greedy().distribution(&[0.1, 0.9, 0.3]);
        assert_eq!(d, Dist::point(1));
    }

    #[test]
    fn top_k_and_top_p_truncate_and_renormalise() {
        let logits = [(0.5f32).ln(), (0.3f32).ln(), (0.15f32).ln(), (0.05f32).ln()];
        let cfg = SamplingConfig {
            temp: 1.0,
            top_k: 3,
            top_p: 1.0,
            seed: 0,
        };
        let d = cfg.distribution(&logits);
        assert_eq!(d.items.len(), 3);
        assert!((d.prob(0) - 0.5 / 0.95).abs() < 1e-6);
        let cfg = SamplingConfig {
            temp: 1.0,
            top_k: 0,
            top_p: 0.75,
            seed: 0,
        };
        let d = cfg.distribution(&logits);
        assert_eq!(d.items.iter().map(|x| x.0).collect::<Vec<_>>(), vec![0, 1]);
        assert!((d.prob(1) - 0.375).abs() < 1e-6);
    }

    #[test]
    fn temperature_sharpens() {
        let logits = [1.0f32, 0.0];
        let hot = SamplingConfig {
            temp: 2.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
        .distribution(&logits);
        let cold = SamplingConfig {
            temp: 0.5,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
        .distribution(&logits);
        assert!(cold.prob(0) > hot.prob(0));
        assert!((hot.prob(0) - 1.0 / (1.0 + (-0.5f32).exp())).abs() < 1e-6);
    }

    #[test]
    fn rng_is_deterministic_and_uniformish() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<f64> = (0..1000).map(|_| a.uniform()).collect();
        let ys: Vec<f64> = (0..1000).map(|_| b.uniform()).collect();
        assert_eq!(xs, ys);
        let mean = xs.iter().sum::<f64>() / 1000.0;
        assert!((mean - 0.5).abs() < 0.05);
        assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
    }
}
