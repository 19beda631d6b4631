//! Does a k-token batch produce the same logits as k single-token decodes?
//! Prints the max |difference| per model and weight-layout mode, and the decode speed of
//! each mode. `cargo run --release --example batch_invariance`
use std::sync::Arc;
use std::time::Instant;

use tandem::llama::{Context, ContextParams, Model, ModelParams, Outputs};
use tandem::models;
use tandem::sampling::argmax;

fn main() {
    let names: Vec<String> = std::env::args().skip(1).collect();
    let names = if names.is_empty() {
        vec!["smollm2-135m".into(), "gemma3-270m".into()]
    } else {
        names
    };
    for name in &names {
        let path = models::resolve(name).unwrap();
        for repack in [true, false] {
            let m = Arc::new(
                Model::load(
                    &path,
                    &ModelParams {
                        repack,
                        ..ModelParams::default()
                    },
                )
                .unwrap(),
            );
            let mut ctx = Context::new(
                m.clone(),
                &ContextParams {
                    n_ctx: 1024,
                    n_threads: std::env::var("THREADS")
                        .map(|t| t.parse().unwrap())
                        .unwrap_or(2),
                    n_batch: 512,
                    flash_attn: std::env::var("FA").ok().map(|v| v == "1"),
                },
            )
            .unwrap();
            let prompt = m
                .tokenize("The history of the printing press begins in", true, false)
                .unwrap();
            ctx.decode(&prompt, 0, Outputs::Last).unwrap();
            let mut toks = vec![argmax(ctx.logits(0))];
            let mut single = Vec::new();
            let t0 = Instant::now();
            for i in 0..32 {
                ctx.decode(&toks[i..i + 1], prompt.len() + i, Outputs::Last)
                    .unwrap();
                single.push(ctx.logits(0).to_vec());
                toks.push(argmax(ctx.logits(0)));
            }
            let per_tok = t0.elapsed().as_secs_f64() / 32.0;
            // Determinism: the same single-token decodes again.
            ctx.truncate(prompt.len()).unwrap();
            let mut again = 0f32;
            for i in 0..32 {
                ctx.decode(&toks[i..i + 1], prompt.len() + i, Outputs::Last)
                    .unwrap();
                again = again.max(
                    ctx.logits(0)
                        .iter()
                        .zip(&single[i])
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f32::max),
                );
            }
            // And the same 8-token batch twice.
            ctx.truncate(prompt.len()).unwrap();
            ctx.decode(&toks[..8], prompt.len(), Outputs::All).unwrap();
            let b1: Vec<Vec<f32>> = (0..8).map(|i| ctx.logits(i).to_vec()).collect();
            ctx.truncate(prompt.len()).unwrap();
            ctx.decode(&toks[..8], prompt.len(), Outputs::All).unwrap();
            let mut bagain = 0f32;
            for (i, b) in b1.iter().enumerate() {
                bagain = bagain.max(
                    ctx.logits(i)
                        .iter()
                        .zip(b)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f32::max),
                );
            }
            let mx = single.iter().flatten().fold(0f32, |m, x| m.max(x.abs()));
            println!(
                "{name} repack={repack}: single-vs-single {again:e}, batch-vs-batch {bagain:e}, max |logit| {mx}"
            );
            let mut worst = 0f32;
            let mut flips = 0;
            for k in [2usize, 3, 4, 5, 6, 7, 8, 16] {
                ctx.truncate(prompt.len()).unwrap();
                let tb = Instant::now();
                ctx.decode(&toks[..k], prompt.len(), Outputs::All).unwrap();
                let bt = tb.elapsed().as_secs_f64();
                let mut d = 0f32;
                for (i, s) in single.iter().take(k).enumerate() {
                    let row = ctx.logits(i);
                    d = d.max(
                        row.iter()
                            .zip(s)
                            .map(|(a, b)| (a - b).abs())
                            .fold(0.0, f32::max),
                    );
                    if argmax(row) != argmax(s) {
                        flips += 1;
                    }
                }
                worst = worst.max(d);
                println!(
                    "{name} repack={repack} k={k}: max|diff|={d:e} batch cost={:.2}x single",
                    bt / per_tok
                );
            }
            println!(
                "{name} repack={repack}: single token {:.1} ms, max|diff| {worst:e}, argmax flips {flips}",
                per_tok * 1e3
            );
        }
    }
}
