//! Lazy-head kernel speed: one pass over the head for m positions, standalone and right
//! after a llama.cpp decode (whose worker threads may still be spinning).
//! Usage: head_speed [MODEL]
use std::sync::Arc;
use std::time::Instant;
use tandem::head::OutputHead;
use tandem::llama::{Context, ContextParams, Model, ModelParams, Outputs};

fn main() {
    let name = std::env::args().nth(1).unwrap_or("gemma3-270m".into());
    let path = tandem::models::resolve(&name).unwrap();
    let m = Arc::new(Model::load(&path, &ModelParams::default()).unwrap());
    let head = OutputHead::for_model(&m, 2).unwrap();
    let mut ctx = Context::new(
        m.clone(),
        &ContextParams {
            n_ctx: 1024,
            n_threads: 2,
            n_batch: 512,
            flash_attn: None,
        },
    )
    .unwrap();
    let toks = m
        .prompt_tokens(
            "Explain how a hash map works, with an example in Python.",
            false,
        )
        .unwrap();
    ctx.decode(&toks, 0, Outputs::Hidden).unwrap();
    let hs: Vec<Vec<f32>> = (0..16)
        .map(|i| ctx.hidden(i % toks.len()).to_vec())
        .collect();
    for &mm in &[1usize, 2, 4, 8, 16] {
        let h: Vec<&[f32]> = hs[..mm].iter().map(|v| v.as_slice()).collect();
        let mut alone = Vec::new();
        let mut after = Vec::new();
        for _ in 0..7 {
            std::thread::sleep(std::time::Duration::from_millis(20));
            let t = Instant::now();
            std::hint::black_box(head.argmax(&h));
            alone.push(t.elapsed().as_secs_f64() * 1e3);
            ctx.truncate(toks.len() - 1).unwrap();
            ctx.decode(&toks[toks.len() - 1..], toks.len() - 1, Outputs::Last)
                .unwrap();
            let t = Instant::now();
            std::hint::black_box(head.argmax(&h));
            after.push(t.elapsed().as_secs_f64() * 1e3);
        }
        alone.sort_by(f64::total_cmp);
        after.sort_by(f64::total_cmp);
        println!(
            "m={mm:2}: alone {:.2} ms, right after a decode {:.2} ms",
            alone[3], after[3]
        );
    }
}
