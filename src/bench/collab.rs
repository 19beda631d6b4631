//! Collaborative decoding in the bench: naive vs CoS on a prompt suite, repetitions
//! interleaved, generation-phase tokens/s medians, outputs compared with naive's.

use std::collections::BTreeMap;

use super::BenchPrompt;
use super::stats::{common_prefix_len, median};
use crate::collab::{self, CollabConfig, CollabMode, Combine};
use crate::llama::{Context, TargetError, Token};
use crate::sampling::SamplingConfig;

/// One prompt's figures for one configuration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CollabRun {
    /// The prompt's id.
    pub id: String,
    /// The prompt's category.
    pub category: String,
    /// Configuration label (`naive` or `cos k=N`).
    pub config: String,
    /// Median tokens per second over the repetitions (whole call timed, prefill included).
    pub median_tok_per_s: f64,
    /// `median_tok_per_s` relative to naive's on the same prompt.
    pub speedup: f64,
    /// Tokens proposed (CoS; last repetition).
    pub proposed: usize,
    /// Proposed tokens accepted (CoS; last repetition).
    pub accepted: usize,
    /// Index of the first token that differs from naive's output (None: identical).
    pub first_diff: Option<usize>,
}

/// Run naive and CoS (one per draft length) on every prompt, `reps` times interleaved.
pub fn run(
    ctxs: &mut [Context],
    prompts: &[BenchPrompt],
    combine: &Combine,
    draft_lens: &[usize],
    max_tokens: usize,
    reps: usize,
    progress: &mut dyn FnMut(&str, &str),
) -> Result<Vec<CollabRun>, TargetError> {
    let mut configs = vec![(String::from("naive"), CollabMode::Naive, 1)];
    configs.extend(
        draft_lens
            .iter()
            .map(|&k| (format!("cos k={k}"), CollabMode::Cos, k)),
    );
    let mut out = Vec::new();
    for p in prompts {
        let toks = ctxs[0].model().prompt_tokens(&p.prompt, p.raw)?;
        let mut tps: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
        let mut counts = vec![(0usize, 0usize); configs.len()];
        let mut diffs: Vec<Option<usize>> = vec![None; configs.len()];
        let mut reference: Option<Vec<Token>> = None;
        for _ in 0..reps.max(1) {
            for (ci, (label, mode, k)) in configs.iter().enumerate() {
                progress(&p.id, label);
                let cfg = CollabConfig {
                    combine: combine.clone(),
                    mode: *mode,
                    draft_len: *k,
                    sampling: SamplingConfig::greedy(),
                };
                let t0 = std::time::Instant::now();
                let g = collab::generate(ctxs, &toks, max_tokens, &cfg, &mut |_| true)?;
                let secs = t0.elapsed().as_secs_f64();
                tps[ci].push(g.tokens.len() as f64 / secs.max(1e-9));
                counts[ci] = (g.stats.proposed, g.stats.accepted);
                match &reference {
                    None => reference = Some(g.tokens),
                    Some(r) if *r != g.tokens => {
                        let at = common_prefix_len(r, &g.tokens);
                        diffs[ci] = Some(diffs[ci].map_or(at, |d: usize| d.min(at)));
                    }
                    Some(_) => {}
                }
            }
        }
        let base = median(&tps[0]);
        for (ci, (label, _, _)) in configs.iter().enumerate() {
            let m = median(&tps[ci]);
            out.push(CollabRun {
                id: p.id.clone(),
                category: p.category.clone(),
                config: label.clone(),
                median_tok_per_s: m,
                speedup: if base > 0.0 { m / base } else { 0.0 },
                proposed: counts[ci].0,
                accepted: counts[ci].1,
                first_diff: diffs[ci],
            });
        }
    }
    Ok(out)
}

/// Markdown table: per category, each configuration's median tokens/s, its ratio to naive
/// (geometric mean over the category's prompts) and its acceptance.
pub fn category_table(runs: &[CollabRun]) -> String {
    let mut configs: Vec<&str> = Vec::new();
    for r in runs {
        if !configs.contains(&r.config.as_str()) {
            configs.push(&r.config);
        }
    }
    let mut by_cat: BTreeMap<&str, Vec<&CollabRun>> = BTreeMap::new();
    for r in runs {
        by_cat.entry(&r.category).or_default().push(r);
    }
    let mut s = String::from("| category |");
    for c in &configs {
        s.push_str(&format!(" {c} tok/s |"));
    }
    for c in configs.iter().skip(1) {
        s.push_str(&format!(" {c} vs naive | {c} accepted |"));
    }
    s.push_str(" identical |\n|---|");
    for _ in 0..configs.len() + 2 * (configs.len() - 1) + 1 {
        s.push_str("---|");
    }
    s.push('\n');
    for (cat, rs) in &by_cat {
        s.push_str(&format!("| {cat} |"));
        let of =
            |c: &str| -> Vec<&CollabRun> { rs.iter().copied().filter(|r| r.config == c).collect() };
        for c in &configs {
            let v: Vec<f64> = of(c).iter().map(|r| r.median_tok_per_s).collect();
            s.push_str(&format!(" {:.1} |", median(&v)));
        }
        for c in configs.iter().skip(1) {
            let v: Vec<f64> = of(c).iter().map(|r| r.speedup.max(1e-9).ln()).collect();
            let geo = (v.iter().sum::<f64>() / v.len().max(1) as f64).exp();
            let (p, a) = of(c)
                .iter()
                .fold((0, 0), |(p, a), r| (p + r.proposed, a + r.accepted));
            s.push_str(&format!(
                " {geo:.2}× | {:.0}% |",
                100.0 * a as f64 / p.max(1) as f64
            ));
        }
        let same = rs.iter().filter(|r| r.first_diff.is_none()).count();
        s.push_str(&format!(" {same}/{} |\n", rs.len()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn category_table_aggregates_per_configuration() {
        let r = |id: &str, cat: &str, config: &str, tps: f64, speedup: f64| CollabRun {
            id: id.into(),
            category: cat.into(),
            config: config.into(),
            median_tok_per_s: tps,
            speedup,
            proposed: 10,
            accepted: 5,
            first_diff: None,
        };
        let t = category_table(&[
            r("a", "chat", "naive", 10.0, 1.0),
            r("a", "chat", "cos k=4", 20.0, 2.0),
            r("b", "chat", "naive", 30.0, 1.0),
            r("b", "chat", "cos k=4", 15.0, 0.5),
        ]);
        assert!(
            t.contains("| chat | 20.0 | 17.5 | 1.00× | 50% | 4/4 |"),
            "{t}"
        );
    }
}
