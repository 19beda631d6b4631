//! A terminal assistant embedding Tandem: one engine, a conversation history, each reply
//! streamed as it is verified. Run it with
//!
//!     cargo run --release --example assistant -- [MODEL] [MAX_TOKENS]
//!
//! and type a message per line (Ctrl-D ends). MODEL is a manifest name or a GGUF path
//! (default smollm2-135m, fetched on first use).

use std::io::{BufRead, Write};

use tandem::api::{Engine, Message, Request};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = args.next().unwrap_or_else(|| "smollm2-135m".into());
    let max_tokens: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(128);

    // Greedy, n-gram drafter, 2 threads: all defaults but the thread count.
    let engine = Engine::builder(model).threads(2).build()?;
    let mut history = vec![Message::system("You are a helpful, concise assistant.")];

    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        history.push(Message::user(line));
        let mut reply =
            engine.generate(&Request::chat(history.clone()).with_max_tokens(max_tokens))?;
        let mut text = String::new();
        print!("assistant> ");
        for chunk in &mut reply {
            let chunk = chunk?;
            print!("{chunk}");
            std::io::stdout().flush()?;
            text.push_str(&chunk);
        }
        let done = reply.finish()?;
        println!();
        eprintln!(
            "[{} tokens, {:.2} per verification step, {:.0} tok/s]",
            done.completion_tokens,
            done.stats.tokens_per_round(),
            done.stats.tokens_per_s()
        );
        history.push(Message::assistant(text));
    }
    Ok(())
}
