//! The harness's arithmetic: medians, per-prompt summaries, per-category aggregates.
//! Pure functions over plain data, so the tests below pin every figure the reports print.

use std::collections::BTreeMap;

use super::RunResult;

/// Median of a non-empty sample (mean of the middle two for even sizes).
pub fn median(xs: &[f64]) -> f64 {
    assert!(!xs.is_empty(), "median of nothing");
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Length of the common prefix of two outputs: the index of their first differing token.
pub fn common_prefix_len<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// Where an output first left the baseline's, and the baseline's top-2 logit gap there
/// (a small gap means batched rounding in llama.cpp flipped a near-tie).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Divergence {
    /// Index of the first token that differs from the baseline's.
    pub at: usize,
    /// The baseline's top-2 logit gap at that token.
    pub baseline_gap: f32,
}

/// Per-configuration summary of one prompt's repetitions.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    /// Configuration label.
    pub config: String,
    /// Median generation-phase tokens per second over the repetitions.
    pub median_tok_per_s: f64,
    /// Median tok/s divided by the baseline's median tok/s on the same prompt.
    pub speedup: f64,
    /// This speedup divided by the oracle's on the same prompt (when the oracle ran).
    pub oracle_fraction: Option<f64>,
    /// Tokens emitted per verification step.
    pub tokens_per_step: f64,
    /// Accepted / drafted tokens over all repetitions.
    pub acceptance: f64,
    /// Acceptance rate at each draft position: of the rounds whose draft reached position
    /// i, the share that kept it (empty where the runner does not report it).
    pub acceptance_at: Vec<f64>,
    /// Shares of generation time spent drafting, verifying, and on everything else.
    pub draft_share: f64,
    /// Share of generation time spent verifying.
    pub verify_share: f64,
    /// Share of generation time spent on everything else.
    pub overhead_share: f64,
    /// Draft tokens verified per round (plain steps count 0).
    pub mean_k: f64,
    /// `k_hist[k]`: rounds, over all repetitions, that verified k draft tokens.
    pub k_hist: Vec<usize>,
    /// Output identical to the baseline's in every repetition.
    pub identical: bool,
    /// Earliest divergence over the repetitions (when not identical).
    pub divergence: Option<Divergence>,
}

/// Summarize one configuration's `runs` on a prompt against the baseline's median tok/s
/// (`oracle_fraction` and `divergence` are left unset).
pub fn summarize(
    config: &str,
    runs: &[RunResult],
    baseline_tok_per_s: f64,
    identical: bool,
) -> Summary {
    let tps: Vec<f64> = runs.iter().map(|r| r.tok_per_s).collect();
    let med = median(&tps);
    let sum = |f: fn(&RunResult) -> f64| runs.iter().map(f).sum::<f64>();
    let tokens = sum(|r| r.tokens as f64);
    let gen_s = sum(|r| r.gen_s);
    let width = runs.iter().map(|r| r.drafted_at.len()).max().unwrap_or(0);
    let mut drafted_at = vec![0usize; width];
    let mut accepted_at = vec![0usize; width];
    let mut k_hist = vec![0usize; runs.iter().map(|r| r.k_hist.len()).max().unwrap_or(0)];
    for r in runs {
        for (k, &n) in r.k_hist.iter().enumerate() {
            k_hist[k] += n;
        }
        for (i, (&d, &a)) in r.drafted_at.iter().zip(&r.accepted_at).enumerate() {
            drafted_at[i] += d;
            accepted_at[i] += a;
        }
    }
    Summary {
        config: config.to_string(),
        median_tok_per_s: med,
        speedup: ratio(med, baseline_tok_per_s),
        oracle_fraction: None,
        tokens_per_step: ratio(tokens, sum(|r| r.rounds as f64)),
        acceptance: ratio(sum(|r| r.accepted as f64), sum(|r| r.drafted as f64)),
        acceptance_at: drafted_at
            .iter()
            .zip(&accepted_at)
            .map(|(&d, &a)| ratio(a as f64, d as f64))
            .collect(),
        draft_share: ratio(sum(|r| r.draft_s), gen_s),
        verify_share: ratio(sum(|r| r.verify_s), gen_s),
        overhead_share: ratio(sum(|r| r.overhead_s), gen_s),
        mean_k: ratio(sum(|r| r.drafted as f64), sum(|r| r.rounds as f64)),
        k_hist,
        identical,
        divergence: None,
    }
}

/// Geometric mean of the per-prompt speedups of configuration `config` over `rows` (the
/// suite's overall figure: every prompt weighs the same, whatever its length).
pub fn overall_speedup(rows: &[&Summary]) -> f64 {
    if rows.is_empty() {
        return 0.0;
    }
    let logs: f64 = rows.iter().map(|s| s.speedup.max(1e-9).ln()).sum();
    (logs / rows.len() as f64).exp()
}

/// Fill in every summary's `oracle_fraction` from the oracle's speedup on the same prompt
/// (the best of the oracle configurations, e.g. `oracle` and `oracle+lazy`).
pub fn set_oracle_fractions(sums: &mut [Summary]) {
    let Some(oracle) = sums
        .iter()
        .filter(|s| s.config.starts_with("oracle"))
        .map(|s| s.speedup)
        .reduce(f64::max)
    else {
        return;
    };
    for s in sums {
        s.oracle_fraction = Some(ratio(s.speedup, oracle));
    }
}

/// One configuration over one category: medians over the category's prompts.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CategorySummary {
    /// Number of prompts in the category.
    pub prompts: usize,
    /// Median speedup over the baseline.
    pub speedup: f64,
    /// Median fraction of the oracle's speedup (when the oracle ran).
    pub oracle_fraction: Option<f64>,
    /// Median tokens emitted per verification step.
    pub tokens_per_step: f64,
    /// Median acceptance rate.
    pub acceptance: f64,
    /// Median draft tokens verified per round.
    pub mean_k: f64,
    /// Median acceptance at the first draft position (of the rounds that drafted).
    pub first_acceptance: f64,
    /// Rounds per draft length, summed over the category's prompts.
    pub k_hist: Vec<usize>,
    /// Every prompt's output was identical to the baseline's.
    pub identical: bool,
}

/// Per category and configuration, the median over prompts of each figure.
pub fn per_category(
    rows: &[(String, Vec<Summary>)],
) -> BTreeMap<String, BTreeMap<String, CategorySummary>> {
    let mut acc: BTreeMap<String, BTreeMap<String, Vec<&Summary>>> = BTreeMap::new();
    for (cat, sums) in rows {
        for s in sums {
            acc.entry(cat.clone())
                .or_default()
                .entry(s.config.clone())
                .or_default()
                .push(s);
        }
    }
    acc.into_iter()
        .map(|(c, m)| {
            let m = m
                .into_iter()
                .map(|(k, v)| {
                    let med = |f: fn(&Summary) -> f64| {
                        median(&v.iter().map(|s| f(s)).collect::<Vec<_>>())
                    };
                    let fractions: Vec<f64> = v.iter().filter_map(|s| s.oracle_fraction).collect();
                    let cs = CategorySummary {
                        prompts: v.len(),
                        speedup: med(|s| s.speedup),
                        oracle_fraction: (!fractions.is_empty()).then(|| median(&fractions)),
                        tokens_per_step: med(|s| s.tokens_per_step),
                        acceptance: med(|s| s.acceptance),
                        mean_k: med(|s| s.mean_k),
                        first_acceptance: med(|s| s.acceptance_at.first().copied().unwrap_or(0.0)),
                        k_hist: v.iter().fold(Vec::new(), |mut h, s| {
                            if h.len() < s.k_hist.len() {
                                h.resize(s.k_hist.len(), 0);
                            }
                            for (k, &n) in s.k_hist.iter().enumerate() {
                                h[k] += n;
                            }
                            h
                        }),
                        identical: v.iter().all(|s| s.identical),
                    };
                    (k, cs)
                })
                .collect();
            (c, m)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(tps: f64, tokens: usize, rounds: usize, drafted: usize, accepted: usize) -> RunResult {
        RunResult {
            tokens,
            tok_per_s: tps,
            rounds,
            drafted,
            accepted,
            draft_s: 0.1,
            verify_s: 0.6,
            overhead_s: 0.3,
            gen_s: 1.0,
            drafted_at: vec![],
            accepted_at: vec![],
            k_hist: vec![],
            forced: 0,
        }
    }

    fn summary(config: &str, speedup: f64) -> Summary {
        Summary {
            config: config.into(),
            median_tok_per_s: 0.0,
            speedup,
            oracle_fraction: None,
            tokens_per_step: 0.0,
            acceptance: 0.0,
            acceptance_at: vec![],
            draft_share: 0.0,
            verify_share: 0.0,
            overhead_share: 0.0,
            mean_k: 0.0,
            k_hist: vec![],
            identical: true,
            divergence: None,
        }
    }

    #[test]
    fn overall_is_the_geometric_mean_of_prompt_speedups() {
        let (a, b) = (summary("x", 2.0), summary("x", 0.5));
        assert!((overall_speedup(&[&a, &b]) - 1.0).abs() < 1e-12);
        assert_eq!(overall_speedup(&[]), 0.0);
    }

    #[test]
    fn common_prefix_is_the_first_difference() {
        assert_eq!(common_prefix_len(&[1, 2, 3], &[1, 2, 4]), 2);
        assert_eq!(common_prefix_len(&[1, 2], &[1, 2, 3]), 2);
        assert_eq!(common_prefix_len::<i32>(&[], &[1]), 0);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
    }

    #[test]
    fn summary_ratios_acceptance_and_time_split() {
        let runs = [
            run(10.0, 100, 50, 80, 50),
            run(30.0, 100, 50, 80, 50),
            run(20.0, 100, 50, 80, 50),
        ];
        let s = summarize("ngram", &runs, 10.0, true);
        assert_eq!(s.median_tok_per_s, 20.0);
        assert_eq!(s.speedup, 2.0);
        assert_eq!(s.tokens_per_step, 2.0);
        assert_eq!(s.acceptance, 150.0 / 240.0);
        assert!((s.draft_share - 0.1).abs() < 1e-12);
        assert!((s.verify_share - 0.6).abs() < 1e-12);
        assert!((s.overhead_share - 0.3).abs() < 1e-12);
    }

    #[test]
    fn acceptance_per_position_pools_repetitions() {
        let mut a = run(1.0, 10, 5, 6, 3);
        a.drafted_at = vec![4, 2];
        a.accepted_at = vec![3, 0];
        let mut b = run(1.0, 10, 5, 6, 3);
        b.drafted_at = vec![4, 2, 1];
        b.accepted_at = vec![1, 1, 1];
        let s = summarize("ngram", &[a, b], 1.0, true);
        assert_eq!(s.acceptance_at, vec![0.5, 0.25, 1.0]);
    }

    #[test]
    fn zero_baseline_and_no_drafts_give_zero_not_nan() {
        let s = summarize("none", &[run(5.0, 10, 0, 0, 0)], 0.0, true);
        assert_eq!(s.speedup, 0.0);
        assert_eq!(s.tokens_per_step, 0.0);
        assert_eq!(s.acceptance, 0.0);
        assert!(s.acceptance_at.is_empty());
    }

    #[test]
    fn oracle_fraction_is_speedup_over_oracle_speedup() {
        let mut sums = vec![
            summary("none", 1.0),
            summary("ngram", 1.2),
            summary("oracle", 1.6),
        ];
        set_oracle_fractions(&mut sums);
        assert!((sums[1].oracle_fraction.unwrap() - 0.75).abs() < 1e-12);
        assert_eq!(sums[2].oracle_fraction, Some(1.0));
        let mut two = vec![
            summary("oracle", 1.5),
            summary("oracle+lazy", 2.0),
            summary("ngram", 1.0),
        ];
        set_oracle_fractions(&mut two);
        assert_eq!(two[2].oracle_fraction, Some(0.5));
        let mut no_oracle = vec![summary("ngram", 1.2)];
        set_oracle_fractions(&mut no_oracle);
        assert_eq!(no_oracle[0].oracle_fraction, None);
    }

    #[test]
    fn categories_take_the_median_over_prompts() {
        let rows = vec![
            ("code".to_string(), vec![summary("ngram", 1.5)]),
            ("code".to_string(), vec![summary("ngram", 2.5)]),
            ("code".to_string(), vec![summary("ngram", 1.0)]),
            ("chat".to_string(), vec![summary("ngram", 0.9)]),
        ];
        let c = per_category(&rows);
        assert_eq!(c["code"]["ngram"].speedup, 1.5);
        assert_eq!(c["code"]["ngram"].prompts, 3);
        assert_eq!(c["chat"]["ngram"].speedup, 0.9);
        assert!(c["chat"]["ngram"].identical);
    }
}
