//! `tandem generate --ensemble …` / `--contrastive …`: the command-line side of
//! `tandem::collab`, and `tandem quantize`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};

use tandem::collab::{self, CollabConfig, CollabMode, Combine};
use tandem::llama::{Context, ContextParams, Model, ModelParams};
use tandem::models;
use tandem::sampling::SamplingConfig;

#[derive(clap::Args, Debug, Clone)]
pub struct CollabArgs {
    /// Collaborative decoding: a weighted ensemble of these models (paths or manifest
    /// names, comma-separated; they must share a vocabulary). Replaces -m.
    #[arg(long, value_delimiter = ',', value_name = "A,B[,C]")]
    pub ensemble: Vec<String>,
    /// Ensemble weights, one per model, ≥ 0, summing to 1 (default: equal).
    #[arg(long, value_delimiter = ',', requires = "ensemble")]
    pub weights: Vec<f32>,
    /// Contrastive decoding: the expert model (with --amateur). Replaces -m.
    #[arg(long, value_name = "EXPERT", conflicts_with = "ensemble")]
    pub contrastive: Option<String>,
    /// Contrastive decoding: the amateur model, whose preferences are subtracted.
    #[arg(long)]
    pub amateur: Option<String>,
    /// Contrastive strength μ: scores are l_expert − μ·l_amateur.
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    pub alpha: f32,
    /// Contrastive plausibility cut-off β: only tokens with p_expert ≥ β·max p_expert.
    #[arg(long, default_value_t = 0.1)]
    pub plausibility: f32,
    /// naive (every model decodes every token) or cos (speculation with alternating
    /// proposer/verifier roles; same output).
    #[arg(long, default_value = "cos")]
    pub collab: String,
}

impl CollabArgs {
    pub fn active(&self) -> bool {
        !self.ensemble.is_empty() || self.contrastive.is_some() || self.amateur.is_some()
    }

    /// Model arguments and the combination rule, checked.
    pub fn plan(&self) -> Result<(Vec<String>, Combine, CollabMode)> {
        let mode = match self.collab.as_str() {
            "naive" => CollabMode::Naive,
            "cos" => CollabMode::Cos,
            other => bail!("--collab must be naive or cos (got '{other}')"),
        };
        if self.amateur.is_some() && self.contrastive.is_none() {
            bail!("--amateur needs --contrastive EXPERT");
        }
        let (names, combine) = if let Some(e) = &self.contrastive {
            let a = self
                .amateur
                .clone()
                .context("--contrastive needs --amateur")?;
            (
                vec![e.clone(), a],
                Combine::Contrastive {
                    mu: self.alpha,
                    beta: self.plausibility,
                },
            )
        } else {
            let n = self.ensemble.len();
            let weights = if self.weights.is_empty() {
                vec![1.0 / n as f32; n]
            } else {
                self.weights.clone()
            };
            (self.ensemble.clone(), Combine::Ensemble { weights })
        };
        combine.validate(names.len()).map_err(anyhow::Error::msg)?;
        Ok((names, combine, mode))
    }
}

/// Settings shared with plain `generate`.
pub struct Common {
    pub prompt: String,
    pub max_tokens: usize,
    pub sampling: SamplingConfig,
    pub ctx_size: u32,
    pub threads: i32,
    pub draft_max: usize,
    pub raw: bool,
    pub exact: bool,
    pub stats_json: bool,
}

/// Load the models (same vocabulary checked first) and open a context on each.
pub fn open(names: &[String], c: &Common) -> Result<Vec<Context>> {
    let paths: Vec<PathBuf> = names
        .iter()
        .map(|n| models::resolve(n).with_context(|| format!("model {n}")))
        .collect::<Result<_>>()?;
    for p in &paths {
        if !p.is_file() {
            bail!("model file not found: {}", p.display());
        }
    }
    let refs: Vec<&std::path::Path> = paths.iter().map(PathBuf::as_path).collect();
    collab::check_same_vocab(&refs)?;
    paths
        .iter()
        .map(|p| {
            let m = Arc::new(Model::load(
                p,
                &ModelParams {
                    repack: !c.exact,
                    ..ModelParams::default()
                },
            )?);
            Ok(Context::new(
                m,
                &ContextParams {
                    n_ctx: c.ctx_size,
                    n_threads: c.threads,
                    n_batch: ContextParams::verify_batch(c.draft_max, c.ctx_size),
                    flash_attn: None,
                },
            )?)
        })
        .collect()
}

pub fn generate(a: &CollabArgs, c: &Common) -> Result<()> {
    let (names, combine, mode) = a.plan()?;
    let mut ctxs = open(&names, c)?;
    let model = ctxs[0].model().clone();
    let tokens = model.prompt_tokens(&c.prompt, c.raw)?;
    let cfg = CollabConfig {
        combine,
        mode,
        draft_len: c.draft_max,
        sampling: c.sampling.clone(),
    };
    let mut text = crate::cli::text_out::TextOut::new();
    let g = collab::generate(&mut ctxs, &tokens, c.max_tokens, &cfg, &mut |t| {
        text.push(&model.token_bytes(t))
    })?;
    let written = text.finish();
    let s = &g.stats;
    if c.stats_json {
        eprintln!(
            "{}",
            serde_json::json!({"stop": g.stop, "collab": a.collab, "stats": s})
        );
    } else if written {
        eprintln!(
            "[{} tokens, {:.1} tok/s, stop: {} | {} over {} models: {} rounds, {} proposed, {} accepted]",
            s.n_generated,
            s.n_generated as f64 / s.seconds.max(1e-9),
            g.stop,
            a.collab,
            names.len(),
            s.rounds,
            s.proposed,
            s.accepted
        );
    }
    Ok(())
}

/// `tandem bench --ensemble …` / `--contrastive …`: naive vs CoS on a prompt suite.
#[allow(clippy::too_many_arguments)]
pub fn bench(
    a: &CollabArgs,
    prompts: &[tandem::bench::BenchPrompt],
    draft_lens: &[usize],
    max_tokens: usize,
    reps: usize,
    threads: i32,
    ctx_size: u32,
    exact: bool,
    json: Option<&std::path::Path>,
) -> Result<()> {
    let (names, combine, _) = a.plan()?;
    if draft_lens.iter().any(|&k| k == 0 || k > 256) {
        bail!("--cos-draft lengths must be in 1..=256");
    }
    let common = Common {
        prompt: String::new(),
        max_tokens,
        sampling: SamplingConfig::greedy(),
        ctx_size,
        threads,
        draft_max: draft_lens.iter().copied().max().unwrap_or(4),
        raw: false,
        exact,
        stats_json: false,
    };
    let mut ctxs = open(&names, &common)?;
    let runs = tandem::bench::collab::run(
        &mut ctxs,
        prompts,
        &combine,
        draft_lens,
        max_tokens,
        reps,
        &mut |id, label| eprint!("\r{id}: {label}          "),
    )?;
    eprintln!();
    println!(
        "models: {} | {:?} | greedy, {} tokens, {} threads, {} reps (medians, interleaved)\n",
        names.join(", "),
        combine,
        max_tokens,
        threads,
        reps
    );
    println!("{}", tandem::bench::collab::category_table(&runs));
    if let Some(p) = json {
        let doc = serde_json::json!({"models": names, "combine": format!("{combine:?}"), "max_tokens": max_tokens, "threads": threads, "reps": reps, "exact": exact, "runs": runs});
        std::fs::write(p, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
