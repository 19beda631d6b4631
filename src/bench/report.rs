//! A bench run's results as one value, and its renderings: Markdown tables and JSON.
//! The chart (chart.rs) reads the same value, so table, JSON and chart always agree.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::RunResult;
use super::stats::{CategorySummary, Summary, overall_speedup, per_category};

/// One prompt's results.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PromptResult {
    /// The prompt's id.
    pub id: String,
    /// The prompt's category.
    pub category: String,
    /// One per configuration, in `Report::configs` order (the baseline first).
    pub summaries: Vec<Summary>,
    /// Every repetition of every configuration, same order.
    pub runs: Vec<Vec<RunResult>>,
}

/// Everything one `tandem bench` run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Description of the target model.
    pub model: String,
    /// Tokens generated per prompt at most.
    pub max_tokens: usize,
    /// Threads the target ran with.
    pub threads: i32,
    /// Most tokens drafted per round.
    pub draft_max: usize,
    /// Repetitions per configuration and prompt.
    pub reps: usize,
    /// Configuration labels, the baseline first.
    pub configs: Vec<String>,
    /// Per-prompt results.
    pub prompts: Vec<PromptResult>,
    /// Per category, per configuration label: the category's summary.
    pub categories: BTreeMap<String, BTreeMap<String, CategorySummary>>,
}

impl Report {
    /// A report of these runs; the per-category summaries are computed from `prompts`.
    pub fn new(
        model: String,
        max_tokens: usize,
        threads: i32,
        draft_max: usize,
        reps: usize,
        configs: Vec<String>,
        prompts: Vec<PromptResult>,
    ) -> Self {
        let rows: Vec<(String, Vec<Summary>)> = prompts
            .iter()
            .map(|p| (p.category.clone(), p.summaries.clone()))
            .collect();
        let categories = per_category(&rows);
        Self {
            model,
            max_tokens,
            threads,
            draft_max,
            reps,
            configs,
            prompts,
            categories,
        }
    }

    /// Largest baseline top-2 logit gap at which any output diverged (None: all identical).
    pub fn worst_divergence_gap(&self) -> Option<f32> {
        self.prompts
            .iter()
            .flat_map(|p| p.summaries.iter().filter_map(|s| s.divergence))
            .map(|d| d.baseline_gap)
            .reduce(f32::max)
    }

    /// Geometric mean over prompts of configuration `config`'s speedup.
    pub fn overall(&self, config: &str) -> f64 {
        let rows: Vec<&Summary> = self
            .prompts
            .iter()
            .flat_map(|p| p.summaries.iter().filter(|s| s.config == config))
            .collect();
        overall_speedup(&rows)
    }

    /// Number of (prompt, configuration) pairs whose output differed from the baseline's.
    pub fn diverged(&self) -> usize {
        self.prompts
            .iter()
            .flat_map(|p| &p.summaries)
            .filter(|s| !s.identical)
            .count()
    }

    /// One line describing the run's settings (model, tokens, threads, draft-max, reps).
    pub fn header(&self) -> String {
        format!(
            "model: {} | {} tokens, greedy, {} threads, draft-max {}, {} reps (medians)",
            self.model, self.max_tokens, self.threads, self.draft_max, self.reps
        )
    }
}

fn pct(x: f64) -> String {
    format!("{:.0}%", 100.0 * x)
}

/// Per prompt: tok/s, speedup, oracle fraction, acceptance, tokens per step, and the
/// draft/verify/overhead split of generation time.
pub fn prompt_table(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| prompt | category | config | tok/s | speedup | of oracle | acceptance | by position | tok/step | draft/verify/other | same output |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    for p in &r.prompts {
        for s in &p.summaries {
            let by_pos = s
                .acceptance_at
                .iter()
                .map(|&a| format!("{:.0}", 100.0 * a))
                .collect::<Vec<_>>()
                .join(" ");
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1} | {:.2}x | {} | {} | {} | {:.2} | {}/{}/{} | {} |",
                p.id,
                p.category,
                s.config,
                s.median_tok_per_s,
                s.speedup,
                s.oracle_fraction.map(pct).unwrap_or_else(|| "-".into()),
                pct(s.acceptance),
                if by_pos.is_empty() {
                    "-".into()
                } else {
                    by_pos
                },
                s.tokens_per_step,
                pct(s.draft_share),
                pct(s.verify_share),
                pct(s.overhead_share),
                match (s.identical, s.divergence) {
                    (true, _) => "yes".to_string(),
                    (false, Some(d)) => format!(
                        "**NO** from token {} (baseline top-2 gap {:.3})",
                        d.at, d.baseline_gap
                    ),
                    (false, None) => "**NO**".to_string(),
                },
            );
        }
    }
    out
}

/// Per category: median speedup of every configuration (with its share of the oracle's
/// speedup where the oracle ran).
pub fn category_table(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| category | {} |", r.configs.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(r.configs.len()));
    for (cat, m) in &r.categories {
        let cells: Vec<String> = r
            .configs
            .iter()
            .map(|c| match m.get(c) {
                None => "-".into(),
                Some(cs) => {
                    let mut cell = format!("{:.2}x", cs.speedup);
                    if let (Some(f), false) = (cs.oracle_fraction, c == "oracle") {
                        let _ = write!(cell, " ({})", pct(f));
                    }
                    if !cs.identical {
                        cell.push_str(" **DIFFERS**");
                    }
                    cell
                }
            })
            .collect();
        let _ = writeln!(out, "| {cat} | {} |", cells.join(" | "));
    }
    let overall: Vec<String> = r
        .configs
        .iter()
        .map(|c| format!("{:.2}x", r.overall(c)))
        .collect();
    let _ = writeln!(out, "| **overall** (geomean) | {} |", overall.join(" | "));
    out
}

/// k = 0, 1–3, 4–7, 8–15, 16+: shares of rounds.
fn k_shares(h: &[usize]) -> String {
    let total: usize = h.iter().sum();
    if total == 0 {
        return "-".into();
    }
    let bins = [(0, 0), (1, 3), (4, 7), (8, 15), (16, usize::MAX)];
    bins.iter()
        .map(|&(a, b)| {
            let n: usize = h
                .iter()
                .enumerate()
                .filter(|(k, _)| *k >= a && *k <= b)
                .map(|(_, n)| n)
                .sum();
            format!("{:.0}", 100.0 * n as f64 / total as f64)
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Per category, for the Tandem configurations: tokens per verification step, mean draft
/// length verified, acceptance at the first draft position, and the share of rounds by
/// draft length (k = 0 / 1–3 / 4–7 / 8–15 / 16+, in %).
pub fn policy_table(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| category | config | tok/step | mean k | 1st-position acceptance | rounds by k: 0/1-3/4-7/8-15/16+ % |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for (cat, m) in &r.categories {
        for c in r.configs.iter().filter(|c| !c.starts_with("llama:")) {
            if let Some(cs) = m.get(c) {
                let _ = writeln!(
                    out,
                    "| {cat} | {c} | {:.2} | {:.2} | {} | {} |",
                    cs.tokens_per_step,
                    cs.mean_k,
                    pct(cs.first_acceptance),
                    k_shares(&cs.k_hist)
                );
            }
        }
    }
    out
}
