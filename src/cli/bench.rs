//! `tandem bench`: configurations side by side on a prompt suite, the verify-cost curve,
//! a drafter's block time, collaborative decoding.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};

use tandem::api::check_draft_max;
use tandem::draft::NgramConfig;
use tandem::session::{DiffusionSpec, HeadMode, Session, SessionConfig};

use super::collab;

/// `tandem bench [suite|calibrate|drafter-speed|collab] [options]`; without a subcommand
/// the old flag spellings choose the mode (`--calibrate`, `--drafter-speed`,
/// `--ensemble`/`--contrastive`), and a suite runs otherwise.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BenchCommand {
    #[command(subcommand)]
    mode: Option<BenchMode>,
    #[command(flatten)]
    args: BenchArgs,
}

#[derive(clap::Subcommand)]
enum BenchMode {
    /// Configurations side by side on a prompt suite (interleaved runs, medians, output
    /// checked against plain decoding).
    Suite(BenchArgs),
    /// The verify-cost curve: a k-token batch against one token, k = 1..=--max-k.
    Calibrate(BenchArgs),
    /// One block of a DFlash drafter (Tandem's and llama.cpp's) against one target step.
    DrafterSpeed(BenchArgs),
    /// Collaborative decoding: naive vs CoS on the suite (with --ensemble or --contrastive).
    Collab(BenchArgs),
}

/// Run `tandem bench` in the mode its subcommand (or its flags) name.
pub fn run(cmd: BenchCommand) -> Result<()> {
    let a = match cmd.mode {
        None => cmd.args,
        Some(BenchMode::Suite(a)) => a,
        Some(BenchMode::Calibrate(mut a)) => {
            a.calibrate = true;
            a
        }
        Some(BenchMode::DrafterSpeed(mut a)) => {
            a.drafter_speed = true;
            a
        }
        Some(BenchMode::Collab(a)) => {
            if !a.collab.active() {
                bail!("bench collab needs --ensemble A,B or --contrastive E --amateur A");
            }
            a
        }
    };
    bench(a)
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// GGUF path or manifest name.
    #[arg(short = 'm', long, required_unless_present_any = ["ensemble", "contrastive", "amateur"], default_value = "")]
    model: String,
    /// Collaborative decoding instead of drafters: naive vs CoS (draft lengths from
    /// --cos-draft) on the suite, with these models (see `generate --ensemble`).
    #[command(flatten)]
    collab: collab::CollabArgs,
    /// CoS draft lengths to compare with naive (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "4")]
    cos_draft: Vec<usize>,
    /// Prompt suite (JSONL: {"id", "category", "prompt", "raw"}).
    #[arg(long, default_value = "bench/prompts/foundation.jsonl")]
    prompts: std::path::PathBuf,
    /// Comma-separated configurations: Tandem drafters (none, ngram, diffusion, auto; `@k`:
    /// the fixed policy at draft length k, else the fail-fast policy capped at --draft-max;
    /// `+lazy`: verified through the lazy head), oracle (replays the
    /// baseline's output at zero cost: the ceiling) and llama.cpp's own
    /// loop as llama:none, llama:ngram-simple, llama:ngram-mod, llama:ngram-map-k, llama:ngram-cache,
    /// llama:draft-dflash (with --drafter; llama-architecture targets only).
    #[arg(long, default_value = "none,ngram")]
    drafters: String,
    /// Tokens generated per run.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 128)]
    max_tokens: usize,
    /// Repetitions of every configuration (interleaved).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Most tokens drafted per round (the fail-fast policy's cap; the fixed policy's
    /// length for `oracle` and configurations without `@k`).
    #[arg(long, default_value_t = 16)]
    draft_max: usize,
    #[arg(short = 't', long, default_value_t = 2)]
    threads: i32,
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
    ctx_size: u32,
    /// Write every figure as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Write a chart (SVG) of the speedup per category per configuration here.
    #[arg(long)]
    chart: Option<std::path::PathBuf>,
    /// Exact mode: no CPU weight repacking (see `generate --exact`).
    #[arg(long)]
    exact: bool,
    /// Sampling temperature (0 = greedy, the default); with sampling the outputs are
    /// samples and are not compared with the baseline's.
    #[arg(long, default_value_t = 0.0)]
    temp: f32,
    /// Top-k cut-off when sampling (0 = off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Top-p cut-off when sampling (1 = off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Sampling seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Fewest positions in the first lazy-head pass of a round (`+lazy` configurations).
    #[arg(long, default_value_t = 2)]
    lazy_group: usize,
    /// Drafter file for `diffusion` configurations (a `dflash` GGUF for this model).
    #[arg(long, value_name = "PATH.gguf")]
    drafter: Option<PathBuf>,
    /// Diffusion drafter confidence cut-off (see `generate --draft-p-min`).
    #[arg(long, default_value_t = 0.0)]
    draft_p_min: f32,
    /// Run at most this many prompts of each category (in file order).
    #[arg(long)]
    limit_per_category: Option<usize>,
    /// Target layers on the GPU (-1 = all, the default in GPU builds; see `generate`).
    #[arg(
        long = "gpu-layers",
        visible_alias = "ngl",
        allow_negative_numbers = true
    )]
    gpu_layers: Option<i32>,
    /// Ignore the prompts' `schema` fields: the same prompts unconstrained (the
    /// comparison for structured output).
    #[arg(long)]
    no_schema: bool,
    /// Instead of prompts: measure the cost of verifying k = 1..=64 tokens in one batch
    /// relative to one token, at context depth --depth, and save it as JSON (--json).
    #[arg(long)]
    calibrate: bool,
    /// Largest batch for --calibrate.
    #[arg(long, default_value_t = 64)]
    max_k: usize,
    /// Context depth for --calibrate and --drafter-speed.
    #[arg(long, default_value_t = 256)]
    depth: usize,
    /// Instead of prompts: time one block of the --drafter (Tandem's Rust forward pass vs
    /// llama.cpp's dflash graph on the same file) against one target step, at --depth.
    #[arg(long)]
    drafter_speed: bool,
    /// Block size for --drafter-speed (the last token plus block − 1 masks).
    #[arg(long, default_value_t = 16)]
    block: usize,
}

fn bench(a: BenchArgs) -> Result<()> {
    use tandem::bench::*;
    if a.reps == 0 || a.max_tokens == 0 {
        bail!("--reps and --max-tokens must be positive");
    }
    check_draft_max(a.draft_max).map_err(anyhow::Error::msg)?;
    if a.calibrate {
        return calibrate_cmd(&a);
    }
    if a.drafter_speed {
        return drafter_speed_cmd(&a);
    }
    let mut prompts = load_prompts(&a.prompts).map_err(anyhow::Error::msg)?;
    if let Some(n) = a.limit_per_category {
        prompts = limit_per_category(prompts, n);
    }
    if a.no_schema {
        prompts.iter_mut().for_each(|p| p.schema = None);
    }
    if prompts.is_empty() {
        bail!("{}: no prompts", a.prompts.display());
    }
    if a.collab.active() {
        return super::collab::bench(
            &a.collab,
            &prompts,
            &a.cos_draft,
            a.max_tokens,
            a.reps,
            a.threads,
            a.ctx_size,
            a.exact,
            a.json.as_deref(),
        );
    }
    let mut configs = vec![BenchConfig::baseline()];
    for c in a
        .drafters
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        let c = BenchConfig::parse(c).map_err(anyhow::Error::msg)?;
        if !configs.contains(&c) {
            configs.push(c);
        }
    }
    let mut cfg = SessionConfig::new(
        a.model.clone(),
        a.ctx_size,
        a.threads,
        512.max(a.draft_max as u32 + 1),
        a.exact,
    );
    if let Some(g) = a.gpu_layers {
        cfg.model_params.gpu_layers = g;
    }
    let mut session = Session::open(&cfg)?;
    let opts = SuiteOptions {
        max_tokens: a.max_tokens,
        reps: a.reps,
        draft_max: a.draft_max,
        ngram: NgramConfig::default(),
        diffusion: DiffusionSpec {
            // The model's shipped drafter unless one is given.
            path: a
                .drafter
                .clone()
                .or_else(|| tandem::models::shipped_drafter(&a.model))
                .unwrap_or_default(),
            p_min: a.draft_p_min,
        },
        lazy_group: a.lazy_group,
        sampling: tandem::sampling::SamplingConfig {
            temp: a.temp,
            top_k: a.top_k,
            top_p: a.top_p,
            seed: a.seed,
        },
        grammar: None,
    };
    tandem::api::check_sampling(&opts.sampling, &tandem::api::SamplingNames::CLI)
        .map_err(anyhow::Error::msg)?;
    if !opts.sampling.is_greedy()
        && configs
            .iter()
            .any(|c| matches!(c, BenchConfig::Llama(_) | BenchConfig::Oracle(_)))
    {
        bail!(
            "llama:* and oracle configurations run greedy only; leave them out when sampling (--temp > 0)"
        );
    }
    let bar = indicatif::ProgressBar::new((prompts.len() * a.reps * configs.len()) as u64)
        .with_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
            )
            .expect("static template"),
        );
    let results = run_suite(&mut session, &prompts, &configs, &opts, &mut |id, c| {
        bar.set_message(format!("{id} {c}"));
        bar.inc(1);
    })?;
    bar.finish_and_clear();

    let report = Report::new(
        session.model.description(),
        a.max_tokens,
        a.threads,
        a.draft_max,
        a.reps,
        configs.iter().map(|c| c.label()).collect(),
        results,
    );
    let mut header = report.header();
    if !opts.sampling.is_greedy() {
        let s = &opts.sampling;
        // The report's header says "greedy"; these runs sampled.
        header = header.replace(
            "greedy",
            &format!(
                "sampled (temp {}, top_k {}, top_p {}, seed {}; outputs are samples, \"same output\" is not checked)",
                s.temp, s.top_k, s.top_p, s.seed
            ),
        );
    }
    println!("{header}\n");
    println!("{}", prompt_table(&report));
    println!("{}", category_table(&report));
    println!("{}", policy_table(&report));
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &a.chart {
        std::fs::write(path, speedup_chart_svg(&report))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(gap) = report.worst_divergence_gap() {
        let n = report.diverged();
        println!(
            "\n{n} (prompt, configuration) pairs diverged from plain decoding; the largest baseline top-2 logit gap at a divergence was {gap:.3} (llama.cpp's batched kernels round differently from single-token ones; see docs/losslessness.md). Use --exact for bit-identical batches up to the model's exact size."
        );
    }
    Ok(())
}

fn drafter_speed_cmd(a: &BenchArgs) -> Result<()> {
    let path = a
        .drafter
        .clone()
        .context("--drafter-speed needs --drafter PATH.gguf")?;
    if !(2..=64).contains(&a.block) || a.reps == 0 || !(1..=8192).contains(&a.depth) {
        bail!("need --block in 2..=64, --reps >= 1, --depth in 1..=8192");
    }
    let mut cfg = SessionConfig::new(
        a.model.clone(),
        (a.depth + a.block + 64) as u32,
        a.threads,
        512,
        false,
    );
    if let Some(g) = a.gpu_layers {
        cfg.model_params.gpu_layers = g;
    }
    let mut session = Session::open(&cfg)?;
    let ours = session.dflash(&path)?;
    let r = tandem::bench::drafter_speed(
        &mut session.ctx,
        &path,
        &ours,
        a.depth,
        a.block,
        a.reps,
        a.threads,
    )?;
    println!(
        "model: {} | drafter: {} | depth {}, block {}, {} threads, {} reps (medians)\n",
        session.model.description(),
        path.display(),
        r.depth,
        r.block,
        a.threads,
        r.reps
    );
    print!("{}", tandem::bench::drafter_speed_table(&r));
    if let Some(j) = &a.json {
        std::fs::write(j, serde_json::to_string_pretty(&r)?)
            .with_context(|| format!("writing {}", j.display()))?;
    }
    Ok(())
}

fn calibrate_cmd(a: &BenchArgs) -> Result<()> {
    let max_k = a.max_k;
    if !(1..=512).contains(&max_k) {
        bail!("--max-k must be in 1..=512");
    }
    let mut cfg = SessionConfig::new(
        a.model.clone(),
        a.ctx_size.max((a.depth + max_k + 16) as u32),
        a.threads,
        512,
        false,
    );
    if let Some(g) = a.gpu_layers {
        cfg.model_params.gpu_layers = g;
    }
    let mut session = Session::open(&cfg)?;
    // Measure the lazy head wherever the model supports it (that is what decides Auto).
    let head = session.head_for(HeadMode::Lazy).ok().flatten();
    let curve =
        tandem::bench::calibrate(&mut session.ctx, head.as_deref(), a.depth, max_k, a.reps)?;
    println!(
        "model: {} | depth {}, {} threads, {} reps (medians)\n",
        session.model.description(),
        a.depth,
        a.threads,
        a.reps
    );
    print!("{}", tandem::bench::calibration_table(&curve));
    if let Some(path) = &a.json {
        let doc = serde_json::json!({"model": session.model.description(), "depth": a.depth, "threads": a.threads, "reps": a.reps, "curve": curve});
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
