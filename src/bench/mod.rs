//! The benchmark harness: every configuration run on the same prompts, interleaved
//! (A B C A B C …) so machine noise hits all alike, medians over repetitions, and every
//! output checked against the plain-decoding baseline.

mod calibrate;
mod chart;
pub mod collab;
mod drafter_speed;
mod report;
mod stats;

pub use calibrate::{CostPoint, calibrate, calibration_table};
pub use chart::speedup_chart_svg;
pub use drafter_speed::{DrafterSpeed, drafter_speed, drafter_speed_table};
pub use report::{PromptResult, Report, category_table, policy_table, prompt_table};
pub use stats::{
    CategorySummary, Divergence, Summary, common_prefix_len, median, overall_speedup, per_category,
    set_oracle_fractions, summarize,
};

use crate::draft::{NgramConfig, OracleDrafter};
use crate::engine::{DraftPolicy, EngineConfig, FixedPolicy, PolicyKind};
use crate::llama::{Token, llama_spec_generate};
use crate::session::{DiffusionSpec, DraftSpec, Session, SessionError};
use std::sync::Arc;

/// One prompt of a suite (JSONL: {"id", "category", "prompt", "raw"}).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BenchPrompt {
    /// Prompt identifier, unique within the suite.
    pub id: String,
    /// Category the prompt is summarised under.
    pub category: String,
    /// The prompt text.
    pub prompt: String,
    /// Tokenize the prompt as is, without the chat template.
    #[serde(default)]
    pub raw: bool,
    /// A JSON Schema the answer must follow (structured output; Tandem configurations).
    #[serde(default)]
    pub schema: Option<serde_json::Value>,
}

/// Read a JSONL prompt suite (blank lines skipped).
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
    /// A Tandem drafter; `true`: verified through the lazy head (label suffix `+lazy`);
    /// `Some(k)`: the fixed policy at draft length k (label `DRAFTER@k`), else the
    /// fail-fast policy capped at the suite's draft max.
    Tandem(DraftSpec, bool, Option<usize>),
    /// Replays the baseline's own output at zero cost: the ceiling (`oracle`, `oracle+lazy`).
    Oracle(bool),
    /// llama.cpp's speculative loop with these `common_speculative` types ("none" = plain).
    Llama(String),
}

impl BenchConfig {
    /// The baseline every other configuration is compared with.
    pub fn baseline() -> Self {
        BenchConfig::Tandem(DraftSpec::None, false, None)
    }

    /// Parse a label: `llama:TYPES`, `oracle[+lazy]`, or a drafter name with an optional
    /// fixed draft length `@k` and an optional `+lazy`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(t) = s.strip_prefix("llama:") {
            return Ok(BenchConfig::Llama(t.to_string()));
        }
        let (name, lazy) = match s.strip_suffix("+lazy") {
            Some(n) => (n, true),
            None => (s, false),
        };
        if name == "oracle" {
            return Ok(BenchConfig::Oracle(lazy));
        }
        let (name, fixed) = match name.split_once('@') {
            Some((n, k)) => {
                let k: usize = k.parse().ok().filter(|&k| k >= 1).ok_or_else(|| {
                    format!("'{s}': the draft length after @ must be a positive number")
                })?;
                (n, Some(k))
            }
            None => (name, None),
        };
        name.parse().map(|d| BenchConfig::Tandem(d, lazy, fixed))
    }

    /// The configuration's label, as [`BenchConfig::parse`] reads it.
    pub fn label(&self) -> String {
        match self {
            BenchConfig::Tandem(d, lazy, fixed) => format!(
                "{}{}{}",
                d.name(),
                fixed.map(|k| format!("@{k}")).unwrap_or_default(),
                lazy_suffix(*lazy)
            ),
            BenchConfig::Oracle(lazy) => format!("oracle{}", lazy_suffix(*lazy)),
            BenchConfig::Llama(t) => format!("llama:{t}"),
        }
    }
}

fn lazy_suffix(lazy: bool) -> &'static str {
    if lazy { "+lazy" } else { "" }
}

/// One run's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunResult {
    /// Tokens generated.
    pub tokens: usize,
    /// Generation-phase tokens per second (prefill excluded).
    pub tok_per_s: f64,
    /// Verification decodes (rounds).
    pub rounds: usize,
    /// Draft tokens proposed.
    pub drafted: usize,
    /// Draft tokens accepted.
    pub accepted: usize,
    /// Drafting time (seconds).
    pub draft_s: f64,
    /// Verification time (seconds).
    pub verify_s: f64,
    /// Generation time not spent drafting or verifying (acceptance, sampling, bookkeeping).
    pub overhead_s: f64,
    /// Generation-phase time, prefill excluded (seconds).
    pub gen_s: f64,
    /// Rounds whose draft reached position i / kept it (empty where unknown: llama.cpp).
    pub drafted_at: Vec<usize>,
    /// Per draft position: rounds that kept the token there (see `drafted_at`).
    pub accepted_at: Vec<usize>,
    /// `k_hist[k]`: rounds that verified k draft tokens (empty where unknown: llama.cpp).
    #[serde(default)]
    pub k_hist: Vec<usize>,
    /// Draft tokens a grammar forced (structured output).
    #[serde(default)]
    pub forced: usize,
}

/// Run one configuration on one prompt. `reference` is what the oracle replays (ignored
/// by the other configurations).
pub fn run_one(
    session: &mut Session,
    cfg: &BenchConfig,
    prompt: &[Token],
    opts: &SuiteOptions,
    reference: Option<&[Token]>,
) -> Result<(Vec<Token>, RunResult), SessionError> {
    let (n, draft_max) = (opts.max_tokens, opts.draft_max);
    match cfg {
        BenchConfig::Tandem(_, lazy, _) | BenchConfig::Oracle(lazy) => {
            let head = if *lazy {
                Some(session.lazy_head()?)
            } else {
                None
            };
            let (mut policy, k): (Box<dyn DraftPolicy>, usize) = match cfg {
                BenchConfig::Tandem(spec, _, fixed) => {
                    // The suite's drafter settings stand in for the label's defaults.
                    let spec = match spec {
                        DraftSpec::None => DraftSpec::None,
                        DraftSpec::Ngram(_) => DraftSpec::Ngram(opts.ngram.clone()),
                        DraftSpec::Diffusion(_) => DraftSpec::Diffusion(opts.diffusion.clone()),
                        DraftSpec::Auto(..) => {
                            DraftSpec::Auto(opts.ngram.clone(), opts.diffusion.clone())
                        }
                    };
                    let (kind, k) = match (&spec, fixed) {
                        (DraftSpec::None, _) => (PolicyKind::Fixed, 0),
                        (_, Some(k)) => (PolicyKind::Fixed, *k),
                        (_, None) => (PolicyKind::FailFast, draft_max),
                    };
                    let p = session.policy(&spec, kind, head.as_ref(), k)?;
                    (p, k)
                }
                _ => {
                    let reference = reference.unwrap_or_default().to_vec();
                    let oracle = OracleDrafter::new(reference, prompt.len());
                    (Box::new(FixedPolicy::new(oracle, draft_max)), draft_max)
                }
            };
            let ecfg = EngineConfig {
                draft_max: k,
                lazy_head: head,
                lazy_group: opts.lazy_group,
                sampling: opts.sampling.clone(),
                grammar: opts.grammar.clone(),
                // `none` is plain decoding under the grammar: no forced drafts either.
                forced_drafts: k > 0,
                ..Default::default()
            };
            let g = session.run(prompt, n, policy.as_mut(), &ecfg, &mut |_| true)?;
            let s = &g.stats;
            let gen_s = (s.total - s.prefill).as_secs_f64();
            let r = RunResult {
                tokens: s.n_generated,
                tok_per_s: s.tokens_per_s(),
                rounds: s.rounds,
                drafted: s.drafted,
                accepted: s.accepted,
                forced: s.forced,
                draft_s: s.draft.as_secs_f64(),
                verify_s: s.verify.as_secs_f64(),
                overhead_s: s.overhead.as_secs_f64(),
                gen_s,
                drafted_at: s.drafted_at.clone(),
                accepted_at: s.accepted_at.clone(),
                k_hist: s.k_hist.clone(),
            };
            Ok((g.tokens, r))
        }
        BenchConfig::Llama(types) => {
            let drafter = types
                .contains("draft-dflash")
                .then_some(opts.diffusion.path.as_path());
            let (toks, s) =
                llama_spec_generate(&mut session.ctx, prompt, n, types, draft_max, drafter)?;
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
                overhead_s: (gen_s - s.t_draft_s - s.t_verify_s).max(0.0),
                gen_s,
                drafted_at: Vec::new(),
                accepted_at: Vec::new(),
                k_hist: Vec::new(),
                forced: 0,
            };
            Ok((toks, r))
        }
    }
}

/// The oracle's reference: the target's own greedy continuation *as batched verification
/// computes it*. It starts as the baseline's output; where llama.cpp's batch rounding flips
/// a near-tie, the oracle's drafts stop matching from there on and the ceiling would be
/// understated. So the oracle runs untimed and its own output becomes the reference, twice
/// at most (each pass moves the first flip later; more passes would lengthen bench runs).
fn refine_oracle_reference(
    session: &mut Session,
    cfg: &BenchConfig,
    prompt: &[Token],
    opts: &SuiteOptions,
    baseline: &[Token],
) -> Result<Vec<Token>, SessionError> {
    let mut reference = baseline.to_vec();
    for _ in 0..2 {
        let (out, _) = run_one(session, cfg, prompt, opts, Some(&reference))?;
        if out == reference {
            break;
        }
        reference = out;
    }
    Ok(reference)
}

/// The baseline's top-2 logit gap at every token it emits (untimed diagnostics).
fn baseline_margins(
    session: &mut Session,
    prompt: &[Token],
    n: usize,
    grammar: Option<Arc<crate::llama::Grammar>>,
) -> Result<Vec<f32>, SessionError> {
    let cfg = EngineConfig {
        draft_max: 0,
        record_margins: true,
        grammar,
        ..Default::default()
    };
    let g = session.generate(prompt, n, &mut crate::draft::NoDrafter, &cfg, &mut |_| true)?;
    Ok(g.margins)
}

/// Settings of a suite run. Plain data.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    /// Tokens generated per prompt at most.
    pub max_tokens: usize,
    /// Timed repetitions of every configuration on every prompt.
    pub reps: usize,
    /// Most tokens drafted per round.
    pub draft_max: usize,
    /// Settings of `ngram` configurations.
    pub ngram: NgramConfig,
    /// The drafter file and policy for `diffusion` configurations.
    pub diffusion: DiffusionSpec,
    /// Fewest positions in the first lazy-head pass of a round (`+lazy` configurations).
    pub lazy_group: usize,
    /// How tokens are chosen (greedy, or sampled: then outputs are samples and are not
    /// compared with the baseline's).
    pub sampling: crate::sampling::SamplingConfig,
    /// The grammar of the current prompt (set by [`run_suite`] from its `schema`).
    pub grammar: Option<Arc<crate::llama::Grammar>>,
}

/// Keep at most `n` prompts of each category, in file order.
pub fn limit_per_category(prompts: Vec<BenchPrompt>, n: usize) -> Vec<BenchPrompt> {
    let mut seen = std::collections::HashMap::<String, usize>::new();
    prompts
        .into_iter()
        .filter(|p| {
            let c = seen.entry(p.category.clone()).or_default();
            *c += 1;
            *c <= n
        })
        .collect()
}

/// Run every configuration on every prompt, repetitions interleaved (A B C A B C …),
/// the first configuration being the baseline whose first output is the reference (the
/// oracle replays it; every other output is compared with it). `progress` is called once
/// per run with the prompt id and configuration label.
pub fn run_suite(
    session: &mut Session,
    prompts: &[BenchPrompt],
    configs: &[BenchConfig],
    opts: &SuiteOptions,
    progress: &mut dyn FnMut(&str, &str),
) -> Result<Vec<PromptResult>, SessionError> {
    assert_eq!(
        configs.first(),
        Some(&BenchConfig::baseline()),
        "baseline first"
    );
    let mut out = Vec::with_capacity(prompts.len());
    for p in prompts {
        let toks = session.prompt_tokens(&p.prompt, p.raw)?;
        // A prompt with a schema: every Tandem configuration decodes under its grammar.
        let grammar = match &p.schema {
            Some(s) => {
                let bad = |e: crate::llama::GrammarError| {
                    SessionError::Bench(format!("prompt {}: {e}", p.id))
                };
                if configs.iter().any(|c| matches!(c, BenchConfig::Llama(_))) {
                    return Err(SessionError::Bench(format!(
                        "prompt {} has a schema: llama.cpp configurations cannot follow it",
                        p.id
                    )));
                }
                Some(Arc::new(
                    crate::llama::Grammar::from_schema(&session.model, &s.to_string())
                        .map_err(bad)?,
                ))
            }
            None => None,
        };
        let popts = SuiteOptions {
            grammar,
            ..opts.clone()
        };
        let opts = &popts;
        let mut runs: Vec<Vec<RunResult>> = vec![Vec::new(); configs.len()];
        // First token index where each configuration's output left the baseline's (over all
        // repetitions; None = identical every time).
        let mut first_diff: Vec<Option<usize>> = vec![None; configs.len()];
        let mut reference: Option<Vec<Token>> = None;
        let mut oracle_ref: Option<Vec<Token>> = None;
        for _ in 0..opts.reps {
            for (ci, c) in configs.iter().enumerate() {
                progress(&p.id, &c.label());
                if let (BenchConfig::Oracle(_), None, Some(rf)) = (c, &oracle_ref, &reference) {
                    oracle_ref = Some(refine_oracle_reference(session, c, &toks, opts, rf)?);
                }
                let replay = match c {
                    BenchConfig::Oracle(_) => oracle_ref.as_deref(),
                    _ => reference.as_deref(),
                };
                let (tokens, r) = run_one(session, c, &toks, opts, replay)?;
                match &reference {
                    // Samples differ from one another by design.
                    _ if !opts.sampling.is_greedy() => {}
                    None => reference = Some(tokens),
                    Some(rf) if *rf != tokens => {
                        let at = common_prefix_len(rf, &tokens);
                        first_diff[ci] = Some(first_diff[ci].map_or(at, |d| d.min(at)));
                    }
                    Some(_) => {}
                }
                runs[ci].push(r);
            }
        }
        let base = median(&runs[0].iter().map(|r| r.tok_per_s).collect::<Vec<_>>());
        let mut summaries: Vec<Summary> = configs
            .iter()
            .zip(&runs)
            .zip(&first_diff)
            .map(|((c, r), d)| summarize(&c.label(), r, base, d.is_none()))
            .collect();
        set_oracle_fractions(&mut summaries);
        // Where an output differs, say whether it is llama.cpp's batch rounding flipping a
        // near-tie: one untimed baseline pass recording the target's top-2 logit gaps.
        if let Some(last) = first_diff.iter().flatten().max() {
            let margins = baseline_margins(session, &toks, last + 1, opts.grammar.clone())?;
            for (s, d) in summaries.iter_mut().zip(&first_diff) {
                if let Some(at) = *d {
                    s.divergence = Some(Divergence {
                        at,
                        baseline_gap: margins.get(at).copied().unwrap_or(f32::NAN),
                    });
                }
            }
        }
        out.push(PromptResult {
            id: p.id.clone(),
            category: p.category.clone(),
            summaries,
            runs,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_parse() {
        assert_eq!(
            BenchConfig::parse("llama:ngram-mod").unwrap(),
            BenchConfig::Llama("ngram-mod".into())
        );
        assert_eq!(BenchConfig::parse("none").unwrap(), BenchConfig::baseline());
        assert_eq!(
            BenchConfig::parse("oracle").unwrap(),
            BenchConfig::Oracle(false)
        );
        assert_eq!(
            BenchConfig::parse("oracle+lazy").unwrap(),
            BenchConfig::Oracle(true)
        );
        let c = BenchConfig::parse("ngram+lazy").unwrap();
        assert_eq!(c.label(), "ngram+lazy");
        let c = BenchConfig::parse("ngram@4+lazy").unwrap();
        assert!(matches!(c, BenchConfig::Tandem(_, true, Some(4))));
        assert_eq!(c.label(), "ngram@4+lazy");
        assert_eq!(BenchConfig::parse("auto").unwrap().label(), "auto");
        assert!(BenchConfig::parse("ngram@0").is_err());
        assert!(BenchConfig::parse("ngram@x").is_err());
        assert!(BenchConfig::parse("bogus+lazy").is_err());
        assert!(BenchConfig::parse("bogus").is_err());
    }

    #[test]
    fn per_category_limit_keeps_file_order() {
        let p = |id: &str, c: &str| BenchPrompt {
            id: id.into(),
            category: c.into(),
            prompt: "x".into(),
            raw: false,
            schema: None,
        };
        let kept = limit_per_category(vec![p("a", "x"), p("b", "y"), p("c", "x"), p("d", "x")], 2);
        let ids: Vec<&str> = kept.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }
}
