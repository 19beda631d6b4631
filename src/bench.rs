//! The benchmark harness: every configuration run on the same prompts, interleaved
//! (A B C A B C …) so machine noise hits all alike, medians over repetitions, and every
//! output checked against the plain-decoding baseline.

use std::collections::BTreeMap;

use crate::draft::{NgramConfig, OracleDrafter};
use crate::engine::EngineConfig;
use crate::session::{DraftSpec, Session, SessionError};
use crate::target::{Context, Outputs, TargetError, Token, llama_spec_generate};

/// One prompt of a suite (JSONL: {"id", "category", "prompt", "raw"}).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BenchPrompt {
    pub id: String,
    pub category: String,
    pub prompt: String,
    #[serde(default)]
    pub raw: bool,
}

pub fn load_prompts(path: &std::path::Path) -> Result<Vec<BenchPrompt>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}

/// A configuration under test: Tandem with a drafter, or llama.cpp's own loop.
#[derive(Debug, Clone, PartialEq)]
pub enum BenchConfig {
    Tandem(DraftSpec),
    /// Replays the baseline's own output at zero cost: the ceiling.
    Oracle,
    /// llama.cpp's speculative loop with these `common_speculative` types ("none" = plain).
    Llama(String),
}

impl BenchConfig {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "oracle" {
            return Ok(BenchConfig::Oracle);
        }
        match s.strip_prefix("llama:") {
            Some(t) => Ok(BenchConfig::Llama(t.to_string())),
            None => s.parse().map(BenchConfig::Tandem),
        }
    }

    pub fn label(&self) -> String {
        match self {
            BenchConfig::Tandem(d) => d.name().to_string(),
            BenchConfig::Oracle => "oracle".to_string(),
            BenchConfig::Llama(t) => format!("llama:{t}"),
        }
    }
}

/// One run's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunResult {
    pub tokens: usize,
    /// Generation-phase tokens per second (prefill excluded).
    pub tok_per_s: f64,
    pub rounds: usize,
    pub drafted: usize,
    pub accepted: usize,
    pub draft_s: f64,
    pub verify_s: f64,
    pub gen_s: f64,
}

/// Run one configuration on one prompt. `reference` is the baseline's output (the oracle
/// replays it).
pub fn run_one(
    session: &mut Session,
    cfg: &BenchConfig,
    prompt: &[Token],
    n: usize,
    draft_max: usize,
    ngram: &NgramConfig,
    reference: Option<&[Token]>,
) -> Result<(Vec<Token>, RunResult), SessionError> {
    match cfg {
        BenchConfig::Tandem(_) | BenchConfig::Oracle => {
            let (mut d, k): (Box<dyn crate::draft::Drafter>, usize) = match cfg {
                BenchConfig::Tandem(DraftSpec::None) => (DraftSpec::None.build(), 0),
                BenchConfig::Tandem(DraftSpec::Ngram(_)) => {
                    (DraftSpec::Ngram(ngram.clone()).build(), draft_max)
                }
                _ => {
                    let reference = reference.unwrap_or_default().to_vec();
                    (
                        Box::new(OracleDrafter::new(reference, prompt.len())),
                        draft_max,
                    )
                }
            };
            let ecfg = EngineConfig {
                draft_max: k,
                ..Default::default()
            };
            let g = session.generate(prompt, n, d.as_mut(), &ecfg, &mut |_| true)?;
            let s = &g.stats;
            let gen_s = (s.total - s.prefill).as_secs_f64();
            let r = RunResult {
                tokens: s.n_generated,
                tok_per_s: s.tokens_per_s(),
                rounds: s.rounds,
                drafted: s.drafted,
                accepted: s.accepted,
                draft_s: s.draft.as_secs_f64(),
                verify_s: s.verify.as_secs_f64(),
                gen_s,
            };
            Ok((g.tokens, r))
        }
        BenchConfig::Llama(types) => {
            let (toks, s) = llama_spec_generate(&mut session.ctx, prompt, n, types, draft_max)?;
            let gen_s = s.t_total_s - s.t_prefill_s;
            let r = RunResult {
                tokens: s.n_generated as usize,
                tok_per_s: if gen_s > 0.0 {
                    s.n_generated as f64 / gen_s
                } else {
                    0.0
                },
                rounds: s.n_rounds as usize,
                drafted: s.n_drafted as usize,
                accepted: s.n_accepted as usize,
                draft_s: s.t_draft_s,
                verify_s: s.t_verify_s,
                gen_s,
            };
            Ok((toks, r))
        }
    }
}

/// Cost of verifying k tokens in one batch, relative to one token.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CostPoint {
    pub k: usize,
    pub median_ms: f64,
    pub ratio: f64,
}

/// Measure the verify-cost curve at context depth `depth`: for k = 1..=max_k, decode k
/// tokens with logits for every row, roll them back, repeat; the k values are interleaved
/// within each repetition so drift hits all alike.
pub fn calibrate(
    ctx: &mut Context,
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
    let mut times = vec![Vec::new(); max_k];
    for _ in 0..reps {
        for k in 1..=max_k {
            ctx.truncate(depth)?;
            let t = std::time::Instant::now();
            ctx.decode(&toks[depth..depth + k], depth, Outputs::All)?;
            times[k - 1].push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    ctx.truncate(depth)?;
    let base = median(&times[0]);
    Ok(times
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let m = median(t);
            CostPoint {
                k: i + 1,
                median_ms: m,
                ratio: m / base,
            }
        })
        .collect())
}

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

/// Per-configuration summary of one prompt's repetitions.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub config: String,
    pub median_tok_per_s: f64,
    /// Median tok/s divided by the baseline's median tok/s on the same prompt.
    pub speedup: f64,
    /// Tokens emitted per verification step.
    pub tokens_per_step: f64,
    pub acceptance: f64,
    /// Output identical to the baseline's in every repetition.
    pub identical: bool,
}

pub fn summarize(
    config: &str,
    runs: &[RunResult],
    baseline_tok_per_s: f64,
    identical: bool,
) -> Summary {
    let tps: Vec<f64> = runs.iter().map(|r| r.tok_per_s).collect();
    let med = median(&tps);
    let (tok, rounds, drafted, acc) = runs.iter().fold((0, 0, 0, 0), |a, r| {
        (
            a.0 + r.tokens,
            a.1 + r.rounds,
            a.2 + r.drafted,
            a.3 + r.accepted,
        )
    });
    Summary {
        config: config.to_string(),
        median_tok_per_s: med,
        speedup: if baseline_tok_per_s > 0.0 {
            med / baseline_tok_per_s
        } else {
            0.0
        },
        tokens_per_step: if rounds > 0 {
            tok as f64 / rounds as f64
        } else {
            0.0
        },
        acceptance: if drafted > 0 {
            acc as f64 / drafted as f64
        } else {
            0.0
        },
        identical,
    }
}

/// Geometric-free per-category view: the median over prompts of each config's speedup.
pub fn per_category(rows: &[(String, Vec<Summary>)]) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut acc: BTreeMap<String, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    for (cat, sums) in rows {
        for s in sums {
            acc.entry(cat.clone())
                .or_default()
                .entry(s.config.clone())
                .or_default()
                .push(s.speedup);
        }
    }
    acc.into_iter()
        .map(|(c, m)| (c, m.into_iter().map(|(k, v)| (k, median(&v))).collect()))
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
            draft_s: 0.0,
            verify_s: 0.0,
            gen_s: 1.0,
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
    }

    #[test]
    fn summary_ratios_and_acceptance() {
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
    }

    #[test]
    fn categories_take_the_median_speedup() {
        let mk = |c: &str, x: f64| Summary {
            config: c.into(),
            median_tok_per_s: 0.0,
            speedup: x,
            tokens_per_step: 0.0,
            acceptance: 0.0,
            identical: true,
        };
        let rows = vec![
            ("code".to_string(), vec![mk("ngram", 1.5)]),
            ("code".to_string(), vec![mk("ngram", 2.5)]),
            ("code".to_string(), vec![mk("ngram", 1.0)]),
            ("chat".to_string(), vec![mk("ngram", 0.9)]),
        ];
        let c = per_category(&rows);
        assert_eq!(c["code"]["ngram"], 1.5);
        assert_eq!(c["chat"]["ngram"], 0.9);
    }

    #[test]
    fn configs_parse() {
        assert_eq!(
            BenchConfig::parse("llama:ngram-mod").unwrap(),
            BenchConfig::Llama("ngram-mod".into())
        );
        assert_eq!(
            BenchConfig::parse("none").unwrap(),
            BenchConfig::Tandem(DraftSpec::None)
        );
        assert!(BenchConfig::parse("bogus").is_err());
    }
}
