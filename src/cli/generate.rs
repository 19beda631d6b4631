//! `tandem generate`: one prompt, streamed to stdout, statistics on stderr.

use std::io::{IsTerminal, Read};

use anyhow::{Context as _, Result, bail};

use tandem::api::{Message, Prompt, Request, SamplingNames, check_draft_max, check_sampling};
use tandem::sampling::SamplingConfig;

use super::{collab, engine, text_out};

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// GGUF path or manifest name (fetched on first use).
    #[arg(short = 'm', long, required_unless_present_any = ["ensemble", "contrastive", "amateur"], default_value = "")]
    model: String,
    #[command(flatten)]
    collab: collab::CollabArgs,
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
    engine: engine::EngineArgs,
    /// Print the statistics as JSON to stderr instead of a line.
    #[arg(long)]
    stats_json: bool,
    /// The answer must follow this GBNF grammar (llama.cpp's format, root rule `root`).
    #[arg(long, value_name = "FILE.gbnf", conflicts_with_all = ["json_schema", "json"])]
    grammar: Option<std::path::PathBuf>,
    /// The answer must be JSON valid against this JSON Schema.
    #[arg(long, value_name = "FILE.json", conflicts_with = "json")]
    json_schema: Option<std::path::PathBuf>,
    /// The answer must be a JSON object.
    #[arg(long)]
    json: bool,
}

/// The answer's required shape from --grammar / --json-schema / --json.
fn constraint(a: &GenerateArgs) -> Result<Option<tandem::api::Constraint>> {
    use tandem::api::Constraint;
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
    };
    Ok(if let Some(p) = &a.grammar {
        Some(Constraint::Gbnf(read(p)?))
    } else if let Some(p) = &a.json_schema {
        Some(Constraint::JsonSchema(read(p)?))
    } else if a.json {
        Some(Constraint::JsonObject)
    } else {
        None
    })
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
    let sampling = SamplingConfig {
        temp: a.temp,
        top_k: a.top_k,
        top_p: a.top_p,
        seed: a.seed,
    };
    check_sampling(&sampling, &SamplingNames::CLI).map_err(anyhow::Error::msg)?;
    Ok(())
}

pub fn generate(a: GenerateArgs) -> Result<()> {
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
        check_draft_max(a.engine.draft_max).map_err(anyhow::Error::msg)?;
        return collab::generate(
            &a.collab,
            &collab::Common {
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
        speculation: Default::default(),
        cache_prompt: false,
        constraint: constraint(&a)?,
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
            "[{} tokens, {:.1} tok/s, stop: {} | draft {} ({}): {} proposed{}, {} accepted ({:.0}%), mean k {:.2}, {:.2} tokens/step | prompt {} tok in {:.0} ms, draft {:.0} ms, verify {:.0} ms, other {:.0} ms]",
            s.n_generated,
            s.tokens_per_s(),
            fin.stop,
            fin.drafter,
            fin.policy,
            s.drafted,
            if s.forced > 0 {
                format!(" ({} forced by the grammar)", s.forced)
            } else {
                String::new()
            },
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
