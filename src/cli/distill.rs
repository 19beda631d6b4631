//! `tandem distill …`: the command-line side of `tandem::distill`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};

use tandem::distill::{self, CollectOptions};
use tandem::session::{Session, SessionConfig};

#[derive(clap::Subcommand)]
pub enum DistillCmd {
    /// Run the target over a prompt corpus (teacher forcing over the prompt, then its own
    /// greedy continuation) and store tokens, the target features a drafter conditions on
    /// and the target's top-k next-token probabilities (resumable).
    Collect(CollectArgs),
    /// Write an offline prompt corpus (JSON lines) from built-in templates and passages of
    /// local text files, keeping the bench suites out.
    Prompts(PromptsArgs),
    /// Train a DFlash drafter on collected data and export it as a GGUF (resumable).
    Train(TrainArgs),
    /// The whole pipeline, target GGUF to drafter GGUF: prompts, collect, train, export.
    Run(RunArgs),
    /// Measure a drafter on collected (held-out) sequences two ways: offline, walking
    /// rounds over the recorded continuations, and at run time, the engine verifying.
    Eval(EvalArgs),
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// GGUF path or manifest name of the target the data was collected from.
    #[arg(short = 'm', long)]
    model: String,
    /// The drafter GGUF (default: the model's shipped drafter).
    #[arg(long)]
    drafter: Option<PathBuf>,
    /// Data directory written by `tandem distill collect` (held-out prompts).
    #[arg(long)]
    data: PathBuf,
    /// Records measured (0 = all).
    #[arg(long, default_value_t = 0)]
    records: usize,
    /// Tokens drafted per round (the drafter's block minus one at most).
    #[arg(long, default_value_t = 15)]
    k: usize,
    #[arg(short = 't', long)]
    threads: Option<i32>,
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
    #[arg(long, default_value_t = 32)]
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
    /// What block positions learn: soft (the target's top-k distribution) or hard (its
    /// top token).
    #[arg(long, value_enum, default_value_t = LabelsArg::Soft)]
    labels: LabelsArg,
    /// Train the drafter's head too (default: frozen to the target's own output rows).
    #[arg(long)]
    train_head: bool,
    /// Anchor blocks only in the target's continuations, not inside prompts.
    #[arg(long)]
    no_prompt_anchors: bool,
    /// Held-out sequences scored per validation.
    #[arg(long, default_value_t = 24)]
    val_records: usize,
    /// Block positions that learn (1..=N; 0 = all): later positions skip the head (a
    /// third less time a step at 8 of 15, the same held-out acceptance).
    #[arg(long, default_value_t = 8)]
    loss_positions: usize,
    /// How a new run's weights start: random, norm (the output norm from the target's),
    /// last-layers (and the layers from the target's last ones).
    #[arg(long, value_enum, default_value_t = InitArg::Random)]
    init: InitArg,
    /// Start a new run from this exported drafter (e.g. a shipped `models/*-dflash.gguf`):
    /// its weights and draft vocabulary; it must use the data's feature layers.
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// Stop after this step, checkpointed, keeping the --steps schedule (resume later).
    #[arg(long)]
    until: Option<usize>,
    /// Uniform noise in [-X, X] added to the (RMS-scaled) target features of every
    /// training batch (EAGLE adds 0.1); 0 = none.
    #[arg(long, default_value_t = 0.0)]
    feature_noise: f32,
    /// Threads for the trainer's matrix products (RAYON_NUM_THREADS, when set, wins).
    /// Default 1: on this project's 2-core machine two threads made a step 26% slower
    /// (candle's other operations run on one thread anyway; docs/drafters.md).
    #[arg(long, default_value_t = 1)]
    train_threads: usize,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum InitArg {
    Random,
    Norm,
    LastLayers,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LabelsArg {
    Soft,
    Hard,
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
            labels: match self.labels {
                LabelsArg::Soft => tandem::train::Labels::Soft,
                LabelsArg::Hard => tandem::train::Labels::Hard,
            },
            train_head: self.train_head,
            prompt_anchors: !self.no_prompt_anchors,
            val_records: self.val_records,
            loss_positions: self.loss_positions,
            init: match self.init {
                InitArg::Random => tandem::train::Init::Random,
                InitArg::Norm => tandem::train::Init::Norm,
                InitArg::LastLayers => tandem::train::Init::LastLayers,
            },
            until: self.until,
            init_from: self.init_from.clone(),
            feature_noise: self.feature_noise,
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
    /// Held-out data directory (collected from `distill prompts`' held-out file);
    /// without one every 50th record is held out.
    #[arg(long)]
    heldout: Option<PathBuf>,
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
    /// Prompts to collect (plus a held-out set of --heldout prompts).
    #[arg(long, default_value_t = 1500)]
    prompts: usize,
    /// Held-out prompts (their groups share no template or source file with training).
    #[arg(long, default_value_t = 48)]
    heldout: usize,
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
    /// Output file (JSON lines: {"prompt": …}); the held-out prompts go beside it, to
    /// the same name with `.heldout` before the extension.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 5000)]
    count: usize,
    /// Held-out prompts, from groups (templates, source files) kept out of training.
    #[arg(long, default_value_t = 48)]
    heldout: usize,
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
    /// Tokens generated per prompt (0: teacher forcing over the prompt text only).
    #[arg(long, default_value_t = 128)]
    max_new: usize,
    /// Soft labels stored per position: the target's top-k next-token probabilities.
    #[arg(long, default_value_t = 32)]
    top_k: usize,
    /// Target layers to record, comma-separated (default: five taps spaced evenly, as
    /// DFlash's converter places them).
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
        DistillCmd::Eval(a) => eval(a),
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
    let c = distill::generate_corpus(&distill::CorpusOptions {
        count: a.count,
        seed: a.seed,
        sources: a.from,
        exclude: exclude.clone(),
        heldout: a.heldout,
    })
    .map_err(anyhow::Error::msg)?;
    let held = heldout_path(&a.out);
    for (path, ps) in [(&a.out, &c.train), (&held, &c.heldout)] {
        let mut text = String::new();
        for p in ps {
            text.push_str(&serde_json::json!({ "prompt": p }).to_string());
            text.push('\n');
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!(
        "wrote {} prompts to {} and {} held-out to {} (excluded: {:?})",
        c.train.len(),
        a.out.display(),
        c.heldout.len(),
        held.display(),
        exclude
    );
    Ok(())
}

/// `prompts.jsonl` → `prompts.heldout.jsonl`.
fn heldout_path(p: &Path) -> PathBuf {
    let stem = p
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = p
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    p.with_file_name(format!("{stem}.heldout{ext}"))
}

fn collect(a: CollectArgs) -> Result<()> {
    let texts = distill::load_prompt_texts(&a.prompts).map_err(anyhow::Error::msg)?;
    if texts.is_empty() {
        bail!("{}: no prompts", a.prompts.display());
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
        top_k: a.top_k,
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
    train_into(&target, &a.data, a.heldout.as_deref(), &a.out, &a.train)?;
    Ok(())
}

fn train_into(
    target: &Path,
    data: &Path,
    heldout: Option<&Path>,
    out: &Path,
    t: &TrainOpts,
) -> Result<PathBuf> {
    let mut o = t.options();
    o.val_data = heldout.map(Path::to_path_buf);
    // candle's matrix products split their work over rayon's current pool: training runs
    // inside a pool of its own size (on its thread, so a one-thread pool hands nothing off).
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(t.train_threads.max(1));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("starting the trainer's threads")?;
    let bar = ProgressBar::new(o.steps as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps, {msg} [{elapsed_precise}, eta {eta}]",
        )
        .expect("valid template"),
    );
    let s = pool.install(|| tandem::train::train(data, target, out, &o, &mut |p| {
        bar.set_position(p.step as u64);
        bar.set_message(format!("loss {:.3}, lr {:.1e}", p.loss, p.lr));
        if let Some(v) = &p.val {
            // Printed above the bar, and in logs too (a hidden bar prints nothing).
            bar.suspend(|| eprintln!(
                "step {}: held-out loss {:.3}; per round (as run time): {:.2} tokens/step, 1st accepted {:.0}% ({} rounds); per anchor: {:.2} tokens/step (block {}), accepted ≥1/≥2/≥4: {:.0}%/{:.0}%/{:.0}%, {:.0} s",
                v.step,
                v.loss,
                v.round_tokens_per_step,
                100.0 * v.round_first_acceptance,
                v.rounds,
                v.tokens_per_step,
                o.block_size,
                100.0 * v.prefix_acc.first().copied().unwrap_or(0.0),
                100.0 * v.prefix_acc.get(1).copied().unwrap_or(0.0),
                100.0 * v.prefix_acc.get(3).copied().unwrap_or(0.0),
                p.seconds,
            ));
        }
    }))
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
            "held-out: {:.2} tokens per verification round, first draft token accepted in {:.0}% of rounds (greedy, block {})",
            v.round_tokens_per_step,
            100.0 * v.round_first_acceptance,
            o.block_size
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
    let collect_min = (a.prompts + a.heldout) as f64 * (a.max_new as f64 + 60.0) / tok_s / 60.0;
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
            heldout: a.heldout,
            seed: a.train.seed,
            from: sources,
            exclude: Vec::new(),
        })?;
    }
    let held = a.out.join("heldout");
    for (prompts, out) in [
        (heldout_path(&corpus), held.clone()),
        (corpus, data.clone()),
    ] {
        collect(CollectArgs {
            model: target.display().to_string(),
            prompts,
            out,
            max_new: a.max_new,
            top_k: 32,
            layers: None,
            limit: 0,
            raw: false,
            threads: Some(threads),
            ctx_size: 2048,
        })?;
    }
    let drafter = train_into(&target, &data, Some(&held), &work, &a.train)?;
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

fn eval(a: EvalArgs) -> Result<()> {
    use tandem::distill::{Walk, eval};
    use tandem::draft::diffusion::{DiffusionConfig, DiffusionDrafter};
    let shards = distill::Shards::open_existing(&a.data)?;
    let mut session = Session::open(&SessionConfig::new(
        a.model.clone(),
        4096,
        a.threads.unwrap_or_else(tandem::llama::default_threads),
        512,
        false,
    ))?;
    let path = match &a.drafter {
        Some(p) => p.clone(),
        None => tandem::models::shipped_drafter(&a.model)
            .with_context(|| format!("{} has no shipped drafter; pass --drafter", a.model))?,
    };
    let model = session.dflash(&path)?;
    if model.cfg.target_layers != shards.meta.target_layers {
        bail!(
            "{} conditions on layers {:?}, the data holds {:?}",
            path.display(),
            model.cfg.target_layers,
            shards.meta.target_layers
        );
    }
    let n = if a.records == 0 {
        shards.len()
    } else {
        a.records.min(shards.len())
    };
    let (mut off, mut rt, mut same) = (Walk::default(), Walk::default(), 0);
    let cfg = tandem::engine::EngineConfig::default();
    for i in 0..n {
        let rec = shards.read(i)?;
        let mut d = DiffusionDrafter::new(model.clone(), DiffusionConfig::default());
        off.add(&eval::offline_walk(
            &mut d,
            &rec,
            shards.meta.n_features,
            a.k,
        ));
        let mut d = DiffusionDrafter::new(model.clone(), DiffusionConfig::default());
        let (w, s) = eval::runtime_walk(&mut session.ctx, &mut d, &rec, a.k, &cfg)?;
        rt.add(&w);
        same += s as usize;
    }
    let rel = |x: f64, y: f64| 100.0 * (x - y) / y.max(1e-9);
    println!(
        "{n} sequences of {} ({same} with run-time output identical to the record), k = {}",
        a.data.display(),
        a.k
    );
    println!("| measure | rounds | tokens/step | 1st-position acceptance |");
    println!("|---|---|---|---|");
    for (name, w) in [("offline (walked)", &off), ("run time (engine)", &rt)] {
        println!(
            "| {name} | {} | {:.3} | {:.1}% |",
            w.rounds,
            w.tokens_per_step(),
            100.0 * w.first_rate()
        );
    }
    println!(
        "offline vs run time: tokens/step {:+.1}%, 1st-position acceptance {:+.1}%",
        rel(off.tokens_per_step(), rt.tokens_per_step()),
        rel(off.first_rate(), rt.first_rate())
    );
    Ok(())
}
