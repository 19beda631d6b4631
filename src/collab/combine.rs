//! Combined next-token distributions of several models: a weighted ensemble or contrastive
//! decoding. Both are written as combined *scores* (logits of r), so the request's sampling
//! transform applies to r exactly as it applies to one model's logits.

/// How the models' next-token distributions are combined. Plain data.
#[derive(Debug, Clone, PartialEq)]
pub enum Combine {
    /// r = Σ λᵢ softmax(lᵢ); scores are ln r.
    Ensemble {
        /// λᵢ, one non-negative weight per model.
        weights: Vec<f32>,
    },
    /// r ∝ exp(l_expert − μ·l_amateur) over the plausible tokens
    /// {v : p_expert(v) ≥ β · max p_expert}; model 0 is the expert, model 1 the amateur.
    Contrastive {
        /// μ, the weight of the amateur's logits subtracted.
        mu: f32,
        /// β, the plausibility cutoff relative to the expert's top probability.
        beta: f32,
    },
}

impl Combine {
    /// Check the settings for `n_models` models.
    pub fn validate(&self, n_models: usize) -> Result<(), String> {
        match self {
            Combine::Ensemble { weights } => {
                if n_models < 2 {
                    return Err("an ensemble needs at least two models".into());
                }
                if weights.len() != n_models {
                    return Err(format!(
                        "{} weights for {n_models} models (one weight per model)",
                        weights.len()
                    ));
                }
                if let Some(w) = weights.iter().find(|w| !w.is_finite() || **w < 0.0) {
                    return Err(format!("ensemble weights must be ≥ 0 (got {w})"));
                }
                let sum: f32 = weights.iter().sum();
                if (sum - 1.0).abs() > 1e-3 {
                    return Err(format!(
                        "ensemble weights must sum to 1 (they sum to {sum})"
                    ));
                }
                Ok(())
            }
            Combine::Contrastive { mu, beta } => {
                if n_models != 2 {
                    return Err("contrastive decoding takes an expert and an amateur".into());
                }
                if !mu.is_finite() || *mu < 0.0 {
                    return Err(format!("the contrastive strength μ must be ≥ 0 (got {mu})"));
                }
                if !(*beta > 0.0 && *beta <= 1.0) {
                    return Err(format!(
                        "the plausibility cut-off must be in (0, 1] (got {beta})"
                    ));
                }
                Ok(())
            }
        }
    }

    /// Combined scores for one position from each model's logits (same vocabulary).
    pub fn scores(&self, rows: &[&[f32]], out: &mut Vec<f32>) {
        let n = rows[0].len();
        out.clear();
        match self {
            Combine::Ensemble { weights } => {
                out.resize(n, 0.0);
                for (row, &w) in rows.iter().zip(weights) {
                    if w == 0.0 {
                        continue;
                    }
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let z: f64 = row.iter().map(|&l| ((l - max) as f64).exp()).sum();
                    let scale = (w as f64 / z) as f32;
                    for (o, &l) in out.iter_mut().zip(row.iter()) {
                        *o += scale * (l - max).exp();
                    }
                }
                for o in out.iter_mut() {
                    *o = if *o > 0.0 { o.ln() } else { f32::NEG_INFINITY };
                }
            }
            Combine::Contrastive { mu, beta } => {
                let (e, a) = (rows[0], rows[1]);
                let max = e.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let cut = max + beta.ln();
                out.extend(e.iter().zip(a).map(|(&le, &la)| {
                    if le >= cut {
                        le - mu * la
                    } else {
                        f32::NEG_INFINITY
                    }
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn softmax(v: &[f32]) -> Vec<f64> {
        let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f64> = v.iter().map(|&x| ((x - m) as f64).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|x| x / s).collect()
    }

    #[test]
    fn ensemble_scores_are_the_log_of_the_weighted_mixture() {
        let a = [2.0f32, 0.0, -1.0, 0.5];
        let b = [-1.0f32, 3.0, 0.0, 0.5];
        let c = Combine::Ensemble {
            weights: vec![0.25, 0.75],
        };
        let mut s = Vec::new();
        c.scores(&[&a, &b], &mut s);
        let (pa, pb) = (softmax(&a), softmax(&b));
        for i in 0..4 {
            let r = 0.25 * pa[i] + 0.75 * pb[i];
            assert!((s[i] as f64 - r.ln()).abs() < 1e-5);
        }
        // The mixture's argmax can be neither model's.
        let a = [3.0f32, -9.0, 2.5];
        let b = [-9.0f32, 3.0, 2.5];
        let c = Combine::Ensemble {
            weights: vec![0.5, 0.5],
        };
        c.scores(&[&a, &b], &mut s);
        assert_eq!(crate::sampling::argmax(&s), 2);
    }

    #[test]
    fn contrastive_scores_keep_plausible_tokens_only() {
        let e = [3.0f32, 2.9, 0.0, 2.0];
        let a = [3.0f32, 1.0, -5.0, 0.0];
        let c = Combine::Contrastive { mu: 1.0, beta: 0.5 };
        let mut s = Vec::new();
        c.scores(&[&e, &a], &mut s);
        // p(3)/p(0) = e^-1 < 0.5: cut; token 2 likewise; tokens 0 and 1 stay.
        assert_eq!(s[2], f32::NEG_INFINITY);
        assert_eq!(s[3], f32::NEG_INFINITY);
        assert_eq!(s[0], 0.0);
        assert!((s[1] - 1.9).abs() < 1e-6);
        assert_eq!(
            crate::sampling::argmax(&s),
            1,
            "the amateur's favourite is penalised"
        );
    }

    /// One proposer's draft token judged against r with speculative sampling: emitted
    /// tokens follow r exactly — also where q puts mass on tokens r excludes.
    #[test]
    fn speculative_acceptance_against_r_emits_r() {
        use crate::sampling::{Rng, SamplingConfig};
        use crate::verify::sampling_check;
        let s = SamplingConfig {
            temp: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        };
        let a = [1.0f32, 0.5, -0.3, 0.0, 2.0, -1.0];
        let b = [0.2f32, 1.5, 0.7, -2.0, 0.1, 0.9];
        for c in [
            Combine::Ensemble {
                weights: vec![0.3, 0.7],
            },
            Combine::Contrastive { mu: 0.5, beta: 0.3 },
        ] {
            let mut sc = Vec::new();
            c.scores(&[&a, &b], &mut sc);
            let r = s.distribution(&sc);
            let q = s.distribution(&a); // model 0 proposes
            let mut rng = Rng::new(11);
            let n = 200_000;
            let mut counts = [0usize; 6];
            for _ in 0..n {
                let x = q.sample_with(rng.uniform());
                let t = sampling_check(&r, &q, x, &mut rng).map_or_else(|t| t, |()| x);
                counts[t as usize] += 1;
            }
            for (t, &k) in counts.iter().enumerate() {
                let want = r.prob(t as i32) as f64;
                let got = k as f64 / n as f64;
                assert!(
                    (got - want).abs() < 0.005,
                    "{c:?} token {t}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        let e = |w: Vec<f32>| Combine::Ensemble { weights: w }.validate(2);
        assert!(e(vec![0.5, 0.5]).is_ok());
        assert!(e(vec![0.6, 0.6]).unwrap_err().contains("sum to 1"));
        assert!(e(vec![1.5, -0.5]).unwrap_err().contains("≥ 0"));
        assert!(e(vec![1.0]).unwrap_err().contains("one weight per model"));
        let c = |mu: f32, beta: f32| Combine::Contrastive { mu, beta }.validate(2);
        assert!(c(0.5, 0.1).is_ok());
        assert!(c(-0.1, 0.1).unwrap_err().contains("μ"));
        assert!(c(0.5, 0.0).is_err());
        assert!(
            Combine::Contrastive { mu: 0.5, beta: 0.1 }
                .validate(3)
                .is_err()
        );
    }
}
