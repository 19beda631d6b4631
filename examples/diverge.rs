//! Where does a speculative run first differ from plain decoding, and how close was the
//! reference's top-2 there? `cargo run --release --example diverge -- MODEL PROMPT_FILE_LINE N K`
use std::sync::Arc;

use tandem::bench::{common_prefix_len, load_prompts};
use tandem::draft::{NgramDrafter, NoDrafter};
use tandem::engine::{EngineConfig, generate};
use tandem::llama::{Context, ContextParams, Model, ModelParams};
use tandem::models;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (name, line, n, k) = (
        &a[1],
        a[2].parse::<usize>().unwrap(),
        a[3].parse().unwrap(),
        a[4].parse().unwrap(),
    );
    let repack = std::env::var("EXACT").is_err();
    let prompts = load_prompts(std::path::Path::new("bench/prompts/foundation.jsonl")).unwrap();
    let m = Arc::new(
        Model::load(
            &models::resolve(name).unwrap(),
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
            n_ctx: 4096,
            n_threads: 2,
            n_batch: 512,
            flash_attn: None,
        },
    )
    .unwrap();
    let p = &prompts[line];
    let toks = m.prompt_tokens(&p.prompt, p.raw).unwrap();
    let base_cfg = EngineConfig {
        draft_max: 0,
        record_margins: true,
        ..Default::default()
    };
    let base = generate(&mut ctx, &mut NoDrafter, &toks, n, &base_cfg, &mut |_| true).unwrap();
    let cfg = EngineConfig {
        draft_max: k,
        check_kv: true,
        ..Default::default()
    };
    let spec = generate(
        &mut ctx,
        &mut NgramDrafter::new(Default::default()),
        &toks,
        n,
        &cfg,
        &mut |_| true,
    )
    .unwrap();
    let at = common_prefix_len(&spec.tokens, &base.tokens);
    println!(
        "prompt {} tokens; base {} spec {}; first difference at {at} (margin there {:?}); min margin overall {:?}",
        toks.len(),
        base.tokens.len(),
        spec.tokens.len(),
        base.margins.get(at),
        base.margins.iter().cloned().fold(f32::INFINITY, f32::min)
    );
}
