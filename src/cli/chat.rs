//! `tandem chat`: an interactive terminal chat. Multi-turn over the engine's prompt cache
//! (each turn reuses the previous one's KV cells), answers streamed as they are verified,
//! Ctrl-C stops the current answer without quitting, end of input (Ctrl-D) quits.
//! Commands: `/stats`, `/reset`, `/system TEXT`, `/help`.

use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};

use anyhow::{Result, bail};

use super::engine::EngineArgs;
use tandem::api::{CancelHandle, Finish, Message, Request};

#[derive(clap::Args)]
pub struct ChatArgs {
    /// GGUF path or manifest name (fetched on first use).
    #[arg(short = 'm', long)]
    model: String,
    /// Most tokens per answer.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 512)]
    max_tokens: usize,
    /// The system prompt.
    #[arg(long, default_value = "You are a helpful, concise assistant.")]
    system: String,
    #[command(flatten)]
    engine: EngineArgs,
}

const HELP: &str = "commands: /stats (the last answer's statistics), /reset (forget the conversation), /system TEXT (new system prompt, conversation reset), /help; Ctrl-C stops an answer, Ctrl-D quits";

/// Ctrl-C cancels the answer being generated (if any) instead of ending the process.
fn catch_ctrl_c(current: Arc<Mutex<Option<CancelHandle>>>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("ctrl-c".into())
        .spawn(move || {
            rt.block_on(async move {
                while tokio::signal::ctrl_c().await.is_ok() {
                    match current.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                        Some(c) => c.cancel(),
                        None => eprintln!("\n(Ctrl-D quits)"),
                    }
                }
            })
        })?;
    Ok(())
}

fn stats_line(f: &Finish) -> String {
    let s = &f.stats;
    format!(
        "[{} tokens, {:.1} tok/s, stop: {} | prompt {} tokens ({} reused from the cache) in {:.0} ms | {} ({}): {} drafted, {} accepted, {:.2} tokens/step]",
        f.completion_tokens,
        s.tokens_per_s(),
        f.stop,
        f.prompt_tokens,
        f.cached_tokens,
        s.prefill.as_secs_f64() * 1e3,
        f.drafter,
        f.policy,
        s.drafted,
        s.accepted,
        s.tokens_per_round()
    )
}

pub fn run(a: ChatArgs) -> Result<()> {
    if a.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    let engine = a.engine.builder(&a.model).build()?;
    let current: Arc<Mutex<Option<CancelHandle>>> = Arc::default();
    catch_ctrl_c(current.clone())?;
    let mut system = a.system.clone();
    let mut history = vec![Message::system(&system)];
    let mut last: Option<Finish> = None;
    eprintln!("tandem chat with {} — {HELP}", a.model);
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    loop {
        write!(out, "> ")?;
        out.flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            writeln!(out)?;
            return Ok(()); // end of input
        }
        let line = line.trim();
        match line
            .split_once(' ')
            .map_or((line, ""), |(c, r)| (c, r.trim()))
        {
            ("", _) => continue,
            ("/help", _) => {
                eprintln!("{HELP}");
                continue;
            }
            ("/stats", _) => {
                match &last {
                    Some(f) => eprintln!("{}", stats_line(f)),
                    None => eprintln!("no answer yet"),
                }
                continue;
            }
            ("/reset", _) => {
                history = vec![Message::system(&system)];
                eprintln!("(conversation reset)");
                continue;
            }
            ("/system", text) => {
                if text.is_empty() {
                    eprintln!("usage: /system TEXT");
                } else {
                    system = text.to_string();
                    history = vec![Message::system(&system)];
                    eprintln!("(system prompt set, conversation reset)");
                }
                continue;
            }
            (c, _) if c.starts_with('/') => {
                eprintln!("unknown command {c}; {HELP}");
                continue;
            }
            _ => {}
        }
        history.push(Message::user(line));
        let mut reply =
            engine.generate(&Request::chat(history.clone()).with_max_tokens(a.max_tokens))?;
        *current.lock().unwrap_or_else(|e| e.into_inner()) = Some(reply.cancel_handle());
        let mut text = String::new();
        for chunk in &mut reply {
            let chunk = chunk?;
            write!(out, "{chunk}")?;
            out.flush()?;
            text.push_str(&chunk);
        }
        *current.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let f = reply.finish()?;
        writeln!(out)?;
        if f.reason == tandem::api::FinishReason::Cancelled {
            eprintln!("(stopped)");
        }
        // The answer as far as it went stays in the conversation.
        history.push(Message::assistant(text));
        last = Some(f);
    }
}
