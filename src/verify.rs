//! Acceptance rules: greedy and speculative (rejection) sampling.
//!
//! Both are lossless: greedy keeps a draft token only if it is the target's argmax;
//! speculative sampling keeps token x drawn from q with probability min(1, p(x)/q(x)) and
//! otherwise draws from the normalised residual max(0, p − q), so every emitted token is
//! distributed exactly as p (Leviathan et al. 2023; Chen et al. 2023).

use crate::llama::Token;
use crate::sampling::{Dist, Rng};

/// Greedy check of one draft token against the target's greedy token at its position
/// (the argmax of its logits, however computed: llama.cpp's row or the lazy head's fused
/// argmax): `Ok(())` keeps it, `Err(t)` rejects it and names the target's own token.
pub fn greedy_check(target: Token, draft: Token) -> Result<(), Token> {
    if target == draft { Ok(()) } else { Err(target) }
}

/// Speculative-sampling check of draft token `x` (drawn from `q`) against `p`.
/// `Ok(())` keeps it; `Err(t)` rejects it with `t` drawn from the residual.
/// A drafter without a distribution passes the point mass `Dist::point(x)`.
pub fn sampling_check(p: &Dist, q: &Dist, x: Token, rng: &mut Rng) -> Result<(), Token> {
    let px = p.prob(x) as f64;
    let qx = q.prob(x) as f64;
    // q(x) = 0 cannot happen for a token drawn from q, but a careless drafter may say so;
    // then any p(x) > 0 is accepted (ratio = ∞) and p(x) = 0 is rejected.
    let accept = if qx <= 0.0 {
        px > 0.0
    } else {
        rng.uniform() < (px / qx).min(1.0)
    };
    if accept {
        return Ok(());
    }
    Err(residual(p, q).sample_with(rng.uniform()))
}

/// The normalised residual max(0, p − q). If it has no mass (p ≤ q everywhere, which
/// only happens when p = q and then rejection has probability 0) fall back to p.
///
/// O((|p| + |q|) log |q|): q is looked up through a copy sorted by token, not scanned per
/// token of p — with full-vocabulary p and q (temperature sampling with top-k and top-p
/// off, a diffusion drafter) a scan would be |V|² per rejection and stall the loop.
pub fn residual(p: &Dist, q: &Dist) -> Dist {
    let mut by_token: Vec<(Token, f32)> = q.items.clone();
    by_token.sort_unstable_by_key(|x| x.0);
    let q_of = |t: Token| {
        by_token
            .binary_search_by_key(&t, |x| x.0)
            .map_or(0.0, |i| by_token[i].1)
    };
    let mut r = Dist {
        items: p
            .items
            .iter()
            .map(|&(t, pt)| (t, (pt - q_of(t)).max(0.0)))
            .filter(|x| x.1 > 0.0)
            .collect(),
    };
    if r.items.is_empty() {
        return p.clone();
    }
    r.normalize();
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::argmax;

    fn dist(items: &[(Token, f32)]) -> Dist {
        Dist {
            items: items.to_vec(),
        }
    }

    fn approx(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn greedy_keeps_only_the_argmax() {
        let target = argmax(&[0.0, 2.0, 1.0]);
        assert_eq!(greedy_check(target, 1), Ok(()));
        assert_eq!(greedy_check(target, 2), Err(1));
    }

    #[test]
    fn residual_is_positive_part_of_p_minus_q() {
        let p = dist(&[(0, 0.5), (1, 0.3), (2, 0.2)]);
        let q = dist(&[(0, 0.7), (1, 0.1), (3, 0.2)]);
        let r = residual(&p, &q);
        // max(0, p-q) = {1: 0.2, 2: 0.2} -> normalised 0.5 / 0.5
        assert_eq!(r.items.len(), 2);
        assert!(approx(r.prob(1), 0.5) && approx(r.prob(2), 0.5));
        assert_eq!(r.prob(0), 0.0);
    }

    #[test]
    fn residual_over_full_vocabularies_is_fast() {
        // 262,144 tokens each (Gemma's vocabulary): with a per-token scan of q this test
        // would run for minutes; the sorted lookup takes milliseconds.
        let n = 262_144;
        let p = Dist {
            items: (0..n).map(|t| (t as Token, 1.0 / n as f32)).collect(),
        };
        let q = Dist {
            items: (0..n)
                .rev()
                .map(|t| (t as Token, if t % 2 == 0 { 2.0 / n as f32 } else { 0.0 }))
                .collect(),
        };
        let r = residual(&p, &q);
        assert_eq!(r.items.len(), n / 2);
        assert!(r.items.iter().all(|&(t, _)| t % 2 == 1));
    }

    #[test]
    fn point_mass_q_residual_is_p_without_the_draft() {
        let p = dist(&[(0, 0.6), (1, 0.3), (2, 0.1)]);
        let r = residual(&p, &Dist::point(0));
        assert!(approx(r.prob(1), 0.75) && approx(r.prob(2), 0.25) && r.prob(0) == 0.0);
    }

    #[test]
    fn p_zero_where_q_positive_always_rejects() {
        let p = dist(&[(0, 1.0)]);
        let q = dist(&[(1, 1.0)]);
        let mut rng = Rng::new(1);
        for _ in 0..100 {
            assert_eq!(sampling_check(&p, &q, 1, &mut rng), Err(0));
        }
    }

    #[test]
    fn q_zero_where_p_positive_accepts() {
        let p = dist(&[(0, 0.5), (1, 0.5)]);
        let q = dist(&[(0, 1.0)]);
        let mut rng = Rng::new(1);
        assert_eq!(sampling_check(&p, &q, 1, &mut rng), Ok(()));
    }

    #[test]
    fn p_equal_q_always_accepts() {
        let p = dist(&[(0, 0.25), (1, 0.75)]);
        let mut rng = Rng::new(3);
        for x in [0, 1, 0, 1] {
            assert_eq!(sampling_check(&p, &p, x, &mut rng), Ok(()));
        }
        assert_eq!(residual(&p, &p), p);
    }

    /// Draw x ~ q, verify, and check the emitted token's frequencies against p:
    /// the defining property of speculative sampling.
    fn emitted_frequencies(p: &Dist, q: &Dist, n: usize, seed: u64) -> Vec<f64> {
        let mut rng = Rng::new(seed);
        let mut counts = vec![0usize; 8];
        for _ in 0..n {
            let x = q.sample_with(rng.uniform());
            let out = match sampling_check(p, q, x, &mut rng) {
                Ok(()) => x,
                Err(t) => t,
            };
            counts[out as usize] += 1;
        }
        counts.into_iter().map(|c| c as f64 / n as f64).collect()
    }

    #[test]
    fn emitted_tokens_follow_p_for_dense_q() {
        let p = dist(&[(0, 0.1), (1, 0.4), (2, 0.3), (3, 0.2)]);
        let q = dist(&[(0, 0.4), (1, 0.1), (2, 0.3), (4, 0.2)]);
        let f = emitted_frequencies(&p, &q, 200_000, 11);
        for &(t, pt) in &p.items {
            assert!(
                (f[t as usize] - pt as f64).abs() < 0.005,
                "token {t}: {} vs {pt}",
                f[t as usize]
            );
        }
        assert_eq!(f[4], 0.0, "a token with p = 0 must never be emitted");
    }

    #[test]
    fn emitted_tokens_follow_p_for_point_mass_q() {
        let p = dist(&[(0, 0.1), (1, 0.6), (2, 0.3)]);
        let f = emitted_frequencies(&p, &Dist::point(2), 200_000, 5);
        for &(t, pt) in &p.items {
            assert!(
                (f[t as usize] - pt as f64).abs() < 0.005,
                "token {t}: {} vs {pt}",
                f[t as usize]
            );
        }
    }

    #[test]
    fn truncated_p_never_emits_outside_its_support() {
        // top-k/top-p truncation leaves p with small support; q proposes outside it.
        let p = dist(&[(1, 0.7), (2, 0.3)]);
        let q = dist(&[(0, 0.5), (1, 0.5)]);
        let f = emitted_frequencies(&p, &q, 100_000, 9);
        assert_eq!(f[0], 0.0);
        assert!((f[1] - 0.7).abs() < 0.006 && (f[2] - 0.3).abs() < 0.006);
    }
}
