//! Cost of drafting one block with a DFlash drafter: Tandem's Rust forward pass against
//! llama.cpp's ggml `dflash` graph on the same file, thread count and context depth, both
//! relative to one plain target decoding step. Runs are interleaved; medians reported.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::stats::median;
use crate::draft::diffusion::DflashModel;
use crate::llama::{Context, LlamaDflash, Outputs, Token};

/// Median costs (milliseconds) of drafting with Tandem's DFlash forward pass and with llama.cpp's.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DrafterSpeed {
    /// Context depth measured at (tokens).
    pub depth: usize,
    /// Tokens per block.
    pub block: usize,
    /// Repetitions the medians are over.
    pub reps: usize,
    /// One target decoding step (one token, logits) at this depth.
    pub target_step_ms: f64,
    /// Tandem: one block's forward pass and logits.
    pub tandem_block_ms: f64,
    /// llama.cpp (its defaults: F16 cache, flash attention as it decides): the block decode
    /// and its logits.
    pub llama_block_ms: f64,
    /// Injecting one position's features, per position (Tandem / llama.cpp).
    pub tandem_inject_ms: f64,
    /// llama.cpp's feature injection, per position.
    pub llama_inject_ms: f64,
}

/// Measure at context depth `depth` with `block` tokens per block over `reps` repetitions.
pub fn drafter_speed(
    ctx: &mut Context,
    drafter_path: &Path,
    ours: &Arc<DflashModel>,
    depth: usize,
    block: usize,
    reps: usize,
    threads: i32,
) -> crate::llama::Result<DrafterSpeed> {
    let model = ctx.model().clone();
    let mut theirs = LlamaDflash::open(
        drafter_path,
        model.clone(),
        (depth + block + 64) as u32,
        threads,
        false,
    )?;
    // A context of `depth` tokens: a repeated ordinary sentence.
    let text: Vec<Token> = model
        .tokenize(
            "The quick brown fox jumps over the lazy dog. ",
            false,
            false,
        )
        .unwrap_or_else(|_| vec![1]);
    let tokens: Vec<Token> = text.iter().copied().cycle().take(depth + 1).collect();
    ctx.clear();
    ctx.set_feature_layers(&ours.cfg.target_layers)?;
    ctx.decode(&tokens[..depth], 0, Outputs::Last)?;
    let mut feats = Vec::new();
    ctx.features_into(0..depth, &mut feats)?;
    ctx.set_feature_layers(&[])?;

    let (mut t_step, mut t_ours, mut t_theirs, mut i_ours, mut i_theirs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut block_toks = vec![ours.cfg.mask_token; block];
    block_toks[0] = tokens[depth];
    let mut logits = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        ctx.decode(&tokens[depth..depth + 1], depth, Outputs::All)?;
        t_step.push(t.elapsed().as_secs_f64() * 1e3);
        ctx.truncate(depth)?;

        let mut cache = ours.new_cache();
        let t = Instant::now();
        ours.inject(&mut cache, &feats);
        i_ours.push(t.elapsed().as_secs_f64() * 1e3 / depth as f64);
        theirs.clear();
        let t = Instant::now();
        theirs.inject(&feats, 0)?;
        i_theirs.push(t.elapsed().as_secs_f64() * 1e3 / depth as f64);

        let t = Instant::now();
        ours.draft_logits(&cache, block_toks[0], block, &mut logits);
        t_ours.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        theirs.block(&block_toks, depth, Some(&mut logits))?;
        t_theirs.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(DrafterSpeed {
        depth,
        block,
        reps,
        target_step_ms: median(&t_step),
        tandem_block_ms: median(&t_ours),
        llama_block_ms: median(&t_theirs),
        tandem_inject_ms: median(&i_ours),
        llama_inject_ms: median(&i_theirs),
    })
}

/// The measurement as a Markdown table (ms and multiples of one target step) and a line
/// comparing Tandem's block and feature injection with llama.cpp's.
pub fn drafter_speed_table(r: &DrafterSpeed) -> String {
    use std::fmt::Write;
    let mut out = String::from("| | ms | / target step |\n|---|---|---|\n");
    let _ = writeln!(
        out,
        "| target step (1 token) | {:.2} | 1.00 |",
        r.target_step_ms
    );
    for (name, ms) in [
        ("Tandem block (Rust)", r.tandem_block_ms),
        ("llama.cpp block (ggml dflash)", r.llama_block_ms),
    ] {
        let _ = writeln!(out, "| {name} | {ms:.2} | {:.2} |", ms / r.target_step_ms);
    }
    let _ = writeln!(
        out,
        "\nTandem / llama.cpp block time: {:.2}; feature injection per position: Tandem {:.3} ms, llama.cpp {:.3} ms",
        r.tandem_block_ms / r.llama_block_ms,
        r.tandem_inject_ms,
        r.llama_inject_ms
    );
    out
}
