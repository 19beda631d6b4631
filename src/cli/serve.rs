//! `tandem serve`: options, engine start-up, and the HTTP server on a small runtime.

use std::sync::Arc;

use anyhow::{Context as _, Result, bail};

use tandem::server::{Limits, ServeConfig};

use crate::cli::engine::EngineArgs;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// GGUF path or manifest name (fetched on first use).
    #[arg(short = 'm', long)]
    model: String,
    #[command(flatten)]
    engine: EngineArgs,
    /// Address to bind. The default serves this machine only; binding another address
    /// exposes the model to the network (use --api-key).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0 picks a free one; the address is printed on stdout).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Model id clients name in requests (default: the model's manifest name or file stem).
    #[arg(long)]
    alias: Option<String>,
    /// Require `Authorization: Bearer KEY` on every request (also read from
    /// TANDEM_API_KEY).
    #[arg(long, env = "TANDEM_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Most requests waiting for the inference thread; more get 503.
    #[arg(long, default_value_t = 16)]
    queue: usize,
    /// Largest request body in bytes; larger gets 413.
    #[arg(long, default_value_t = 1 << 20)]
    max_body: usize,
    /// Largest max_tokens a request may ask for (also the chat default).
    #[arg(long, default_value_t = 2048)]
    max_tokens: usize,
}

pub fn run(a: ServeArgs) -> Result<()> {
    if a.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    if a.max_body < 1024 {
        bail!(
            "--max-body must be at least 1024 bytes (got {})",
            a.max_body
        );
    }
    if a.api_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
        bail!("--api-key must not be empty");
    }
    // A file's stem, or a manifest name as written (names may hold dots).
    let model_id = a.alias.clone().unwrap_or_else(|| {
        let p = std::path::Path::new(&a.model);
        match p.file_stem() {
            Some(stem) if p.is_file() => stem.to_string_lossy().into_owned(),
            _ => a.model.clone(),
        }
    });
    let loopback = matches!(a.host.as_str(), "127.0.0.1" | "::1" | "localhost");
    if !loopback && a.api_key.is_none() {
        eprintln!(
            "warning: serving on {} without --api-key: anyone who can reach this address can use the model",
            a.host
        );
    }
    let engine = Arc::new(a.engine.builder(&a.model).max_queue(a.queue).build()?);
    let cfg = ServeConfig {
        host: a.host.clone(),
        port: a.port,
        model_id,
        api_key: a.api_key.clone(),
        max_body: a.max_body,
        limits: Limits {
            max_tokens: a.max_tokens,
            completion_default: 16,
        },
    };
    // One HTTP thread: it only parses, tokenizes and queues; the cores belong to the
    // inference thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    let info = engine.info().clone();
    rt.block_on(tandem::server::serve(engine, cfg.clone(), |addr| {
        use std::io::Write;
        println!("listening on http://{addr}");
        let _ = std::io::stdout().flush();
        eprintln!(
            "serving '{}' ({}, drafter {}, draft max {}, context {}){}",
            cfg.model_id,
            info.path.display(),
            info.draft.name(),
            info.draft_max,
            info.n_ctx,
            if cfg.api_key.is_some() {
                ", API key required"
            } else {
                ""
            }
        );
    }))
    .with_context(|| format!("serving on {}:{}", a.host, a.port))
}
