//! `tandem distill …`: the command-line side of `tandem::distill`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};

use tandem::distill::{self, CollectOptions};
use tandem::session::{Session, SessionConfig};

#[derive(clap::Subcommand)]
pub enum DistillCmd {
    /// Run the target over a prompt corpus, let it write its own greedy continuations, and
    /// store tokens + the target features a drafter conditions on (resumable).
    Collect(CollectArgs),
    /// Write an offline prompt corpus (JSON lines) from built-in templates and passages of
    /// local text files, keeping the bench suites out.
    Prompts(PromptsArgs),
    /// Train a DFlash drafter on collected data and export it as a GGUF (resumable).
    Train(TrainArgs),
    /// The whole pipeline, target GGUF to drafter GGUF: prompts, collect, train, export.
    Run(RunArgs),
}

#[derive(clap::Args, Clone)]
pub struct TrainOpts {
    /// Training steps (one sequence, --anchors blocks each).
    #[arg(long, default_value_t = 4000)]
    steps: usize,
    /// Drafter layers.
    #[arg(long = "drafter-layers", default_value_t = 1)]
    drafter_layers: usize,
    /// Feed-forward width of the drafter (default: the target's).
    #[arg(long)]
    ff: Option<usize>,
    /// Draft vocabulary: the target's most frequent output tokens.
    #[arg(long, default_value_t = 8192)]
    vocab: usize,
    #[arg(long, default_value_t = 16)]
    block: usize,
    /// Blocks per step.
    #[arg(long, default_value_t = 16)]
    anchors: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Loss weight of block position i: exp(-(i-1)/gamma).
    #[arg(long, default_value_t = 5.0)]
    gamma: f32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Validate, checkpoint and export every this many steps.
    #[arg(long, default_value_t = 500)]
    checkpoint_every: usize,
}

impl TrainOpts {
    fn options(&self) -> tandem::train::TrainOptions {
        tandem::train::TrainOptions {
            steps: self.steps,
            n_layer: self.drafter_layers,
            n_ff: self.ff,
            draft_vocab: self.vocab,
            block_size: self.block,
            anchors: self.anchors,
            lr: self.lr,
            gamma: self.gamma,
            seed: self.seed,
            checkpoint_every: self.checkpoint_every,
            ..Default::default()
        }
    }
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// GGUF path or manifest name of the target the data was collected from.
    #[arg(short = 'm', long)]
    model: String,
    /// Data directory written by `tandem distill collect`.
    #[arg(long)]
    data: PathBuf,
    /// Output directory: checkpoints and drafter.gguf (an existing run is resumed).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    train: TrainOpts,
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// GGUF path or manifest name of the target.
    #[arg(short = 'm', long)]
    model: String,
    /// Work directory: prompts.jsonl, data/, train/, and the result drafter.gguf.
    #[arg(long)]
    out: PathBuf,
    /// Prompts to collect continuations for.
    #[arg(long, default_value_t = 1500)]
    prompts: usize,
    /// Tokens generated per prompt.
    #[arg(long, default_value_t = 128)]
    max_new: usize,
    /// Text files or directories for prompt passages (default: local documentation and
    /// Python's standard library, where present).
    #[arg(long = "from")]
    from: Vec<PathBuf>,
    #[arg(short = 't', long)]
    threads: Option<i32>,
    #[command(flatten)]
    train: TrainOpts,
}

#[derive(clap::Args)]
pub struct PromptsArgs {
    /// Output file (JSON lines: {"prompt": …}).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 5000)]
    count: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Files or directories of text (source code, documentation) for code, RAG and
    /// summarization passages, e.g. /usr/lib/python3.12 (repeatable).
    #[arg(long = "from")]
    from: Vec<PathBuf>,
    /// Prompt files to keep out (default: bench/prompts/*.jsonl).
    #[arg(long)]
    exclude: Vec<PathBuf>,
}

#[derive(clap::Args)]
pub struct CollectArgs {
    /// GGUF path or manifest name of the target.
    #[arg(short = 'm', long)]
    model: String,
    /// Prompts: JSON lines with a "prompt" field, or plain text, one prompt per line.
    #[arg(long)]
    prompts: PathBuf,
    /// Output directory (created; an existing one is resumed).
    #[arg(long)]
    out: PathBuf,
    /// Tokens generated per prompt.
    #[arg(long, default_value_t = 128)]
    max_new: usize,
    /// Target layers to record, comma-separated (default: 1, n_layer/2, n_layer-2).
    #[arg(long, value_delimiter = ',')]
    layers: Option<Vec<usize>>,
    /// Collect at most this many new prompts in this run (0 = all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// Feed prompts to the model as they are, without its chat template.
    #[arg(long)]
    raw: bool,
    #[arg(short = 't', long)]
    threads: Option<i32>,
    #[arg(short = 'c', long = "ctx-size", default_value_t = 2048)]
    ctx_size: u32,
}

pub fn run(cmd: DistillCmd) -> Result<()> {
    match cmd {
        DistillCmd::Collect(a) => collect(a),
        DistillCmd::Prompts(a) => prompts(a),
        DistillCmd::Train(a) => train(a),
        DistillCmd::Run(a) => run_all(a),
    }
}

fn prompts(a: PromptsArgs) -> Result<()> {
    if let Some(p) = a.from.iter().find(|p| !p.exists()) {
        bail!("--from {}: no such file or directory", p.display());
    }
    let exclude = if a.exclude.is_empty() {
        ["bench/prompts/dev.jsonl", "bench/prompts/foundation.jsonl"]
            .into_iter()
            .map(PathBuf::from)
            .filter(|p| p.is_file())
            .collect()
    } else {
        a.exclude
    };
    let ps = distill::generate_corpus(&distill::CorpusOptions {
        count: a.count,
        seed: a.seed,
        sources: a.from,
        exclude: exclude.clone(),
    })
    .map_err(anyhow::Error::msg)?;
    let mut text = String::new();
    for p in &ps {
        text.push_str(&serde_json::json!({ "prompt": p }).to_string());
        text.push('\n');
    }
    std::fs::write(&a.out, text).with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!(
        "wrote {} prompts to {} (excluded: {:?})",
        ps.len(),
        a.out.display(),
        exclude
    );
    Ok(())
}

fn collect(a: CollectArgs) -> Result<()> {
    let texts = distill::load_prompt_texts(&a.prompts).map_err(anyhow::Error::msg)?;
    if texts.is_empty() {
        bail!("{}: no prompts", a.prompts.display());
    }
    if a.max_new == 0 {
        bail!("--max-new must be at least 1");
    }
    let mut session = Session::open(&SessionConfig::new(
        a.model.clone(),
        a.ctx_size,
        a.threads.unwrap_or_else(tandem::llama::default_threads),
        512,
        false,
    ))?;
    let layers = a
        .layers
        .clone()
        .unwrap_or_else(|| distill::default_target_layers(session.model.n_layer()));
    let prompts: Vec<_> = texts
        .iter()
        .map(|t| session.prompt_tokens(t, a.raw).map_err(|e| e.to_string()))
        .collect();
    let how_many = if a.limit > 0 && a.limit < prompts.len() {
        format!("up to {} new of {}", a.limit, prompts.len())
    } else {
        prompts.len().to_string()
    };
    eprintln!(
        "collecting {how_many} prompts × up to {} tokens from {} (layers {:?}) into {}",
        a.max_new,
        session.model.description(),
        layers,
        a.out.display()
    );
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} prompts, {msg} [{elapsed_precise}, eta {eta}]",
        )
        .expect("valid template"),
    );
    let opts = CollectOptions {
        max_new: a.max_new,
        target_layers: layers,
        limit: a.limit,
    };
    let s = distill::collect(
        &mut session.ctx,
        &prompts,
        &a.out,
        &opts,
        &mut |done, total, toks| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_message(format!("{toks} tokens"));
        },
    )
    .with_context(|| format!("collecting into {}", a.out.display()))?;
    bar.finish_and_clear();
    for (i, why) in &s.prompts_skipped {
        eprintln!("skipped prompt {}: {why}", i + 1);
    }
    eprintln!(
        "collected {} prompts ({} tokens) in {:.1} s; {} were already there",
        s.prompts_collected, s.tokens_collected, s.seconds, s.prompts_done_before
    );
    Ok(())
}

fn train(a: TrainArgs) -> Result<()> {
    let target = tandem::models::resolve(&a.model)?;
    train_into(&target, &a.data, &a.out, &a.train)?;
    Ok(())
}

fn train_into(target: &Path, data: &Path, out: &Path, t: &TrainOpts) -> Result<PathBuf> {
    let o = t.options();
    let bar = ProgressBar::new(o.steps as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps, {msg} [{elapsed_precise}, eta {eta}]",
        )
        .expect("valid template"),
    );
    let s = tandem::train::train(data, target, out, &o, &mut |p| {
        bar.set_position(p.step as u64);
        bar.set_message(format!("loss {:.3}, lr {:.1e}", p.loss, p.lr));
        if let Some(v) = &p.val {
            // Printed above the bar, and in logs too (a hidden bar prints nothing).
            bar.suspend(|| eprintln!(
                "step {}: held-out loss {:.3}, tokens/step {:.2} (block {}), accepted ≥1/≥2/≥4: {:.0}%/{:.0}%/{:.0}%, {:.0} s",
                v.step,
                v.loss,
                v.tokens_per_step,
                o.block_size,
                100.0 * v.prefix_acc.first().copied().unwrap_or(0.0),
                100.0 * v.prefix_acc.get(1).copied().unwrap_or(0.0),
                100.0 * v.prefix_acc.get(3).copied().unwrap_or(0.0),
                p.seconds,
            ));
        }
    })
    .with_context(|| format!("training on {} into {}", data.display(), out.display()))?;
    bar.finish_and_clear();
    eprintln!(
        "drafter {} ({:.1} M parameters, draft vocabulary covers {:.1}% of the target's output); {} steps in {:.0} s",
        s.drafter.display(),
        s.n_params as f64 / 1e6,
        100.0 * s.vocab_coverage,
        s.steps_run,
        s.seconds
    );
    if let Some(v) = &s.last_val {
        eprintln!(
            "held-out: {:.2} tokens per verification step (greedy, block {})",
            v.tokens_per_step, o.block_size
        );
    }
    Ok(s.drafter)
}

/// Local text for prompt passages when none is given.
fn default_sources() -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("/usr/share/doc")];
    for dir in ["/usr/lib", "/usr/local/lib"] {
        if let Ok(rd) = std::fs::read_dir(dir) {
            let mut py: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("python3"))
                })
                .collect();
            py.sort();
            v.extend(py.pop());
        }
    }
    v.retain(|p| p.is_dir());
    v
}

fn run_all(a: RunArgs) -> Result<()> {
    let target = tandem::models::resolve(&a.model)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let corpus = a.out.join("prompts.jsonl");
    let data = a.out.join("data");
    let work = a.out.join("train");
    // Estimate from this machine: one short greedy generation.
    let threads = a.threads.unwrap_or_else(tandem::llama::default_threads);
    let tok_s = {
        let mut session = Session::open(&SessionConfig::new(
            target.display().to_string(),
            512,
            threads,
            512,
            false,
        ))?;
        let p = session.prompt_tokens("Write a short note about rivers.", false)?;
        let t0 = std::time::Instant::now();
        let g = session.generate(
            &p,
            32,
            &mut tandem::draft::NoDrafter,
            &tandem::engine::EngineConfig::default(),
            &mut |_| true,
        )?;
        g.tokens.len().max(1) as f64 / t0.elapsed().as_secs_f64()
    };
    let collect_min = a.prompts as f64 * (a.max_new as f64 + 60.0) / tok_s / 60.0;
    eprintln!(
        "plan: {} prompts × {} tokens at ~{:.0} tokens/s ≈ {:.0} min of collection, then {} training steps (timed after the first ones)",
        a.prompts, a.max_new, tok_s, collect_min, a.train.steps
    );
    if !corpus.exists() {
        let mut sources = a.from.clone();
        if sources.is_empty() {
            sources = default_sources();
        }
        prompts(PromptsArgs {
            out: corpus.clone(),
            count: a.prompts,
            seed: a.train.seed,
            from: sources,
            exclude: Vec::new(),
        })?;
    }
    collect(CollectArgs {
        model: target.display().to_string(),
        prompts: corpus,
        out: data.clone(),
        max_new: a.max_new,
        layers: None,
        limit: 0,
        raw: false,
        threads: Some(threads),
        ctx_size: 2048,
    })?;
    let drafter = train_into(&target, &data, &work, &a.train)?;
    let dest = a.out.join("drafter.gguf");
    std::fs::copy(&drafter, &dest).with_context(|| format!("copying to {}", dest.display()))?;
    eprintln!(
        "done: {} — use it with `tandem generate -m {} --draft diffusion --drafter {}`",
        dest.display(),
        a.model,
        dest.display()
    );
    Ok(())
}
