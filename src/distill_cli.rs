//! `tandem distill …`: the command-line side of `tandem::distill`.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};

use tandem::distill::{self, CollectOptions};
use tandem::session::{Session, SessionConfig};
use tandem::target::{ContextParams, ModelParams};

#[derive(clap::Subcommand)]
pub enum DistillCmd {
    /// Run the target over a prompt corpus, let it write its own greedy continuations, and
    /// store tokens + the target features a drafter conditions on (resumable).
    Collect(CollectArgs),
    /// Write an offline prompt corpus (JSON lines) from built-in templates and passages of
    /// local text files, keeping the bench suites out.
    Prompts(PromptsArgs),
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
    let mut session = Session::open(&SessionConfig {
        model: a.model.clone(),
        context: ContextParams {
            n_ctx: a.ctx_size,
            n_threads: a.threads.unwrap_or_else(tandem::target::default_threads),
            n_batch: 512,
            flash_attn: None,
        },
        model_params: ModelParams::default(),
    })?;
    let layers = a
        .layers
        .clone()
        .unwrap_or_else(|| distill::default_target_layers(session.model.n_layer()));
    let prompts: Vec<_> = texts
        .iter()
        .map(|t| session.prompt_tokens(t, a.raw).map_err(|e| e.to_string()))
        .collect();
    eprintln!(
        "collecting {} prompts × up to {} tokens from {} (layers {:?}) into {}",
        prompts.len(),
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
