//! The GPU path (builds with `--features cuda|vulkan|metal`; `scripts/test-gpu`): the
//! target on the GPU, Tandem's drafters on the CPU fed with features copied back from GPU
//! decodes; greedy output with the n-gram and the diffusion drafter equals `--draft none`
//! on the same build (GPU kernels round batches differently from single tokens, so only
//! near-ties may flip, as on gemma3's CPU path). Ignored in CPU builds, which the other
//! lossless tests cover.

mod common;

use common::*;
use tandem::bench::common_prefix_len;
use tandem::draft::{
    DiffusionConfig, DiffusionDrafter, Drafter, NgramConfig, NgramDrafter, NoDrafter,
};
use tandem::engine::EngineConfig;

const N_TOKENS: usize = 48;
/// Largest top-2 logit gap of the reference at which a divergence is tolerated.
const NEAR_TIE: f32 = 0.5;

fn check(name: &str, prompts: usize) {
    let _g = exclusive();
    let m = model(name, true);
    // (Run with --ignored on a CPU build, the same checks run on the CPU.)
    assert!(
        m.on_gpu() || tandem::llama::gpu_backend().is_none(),
        "{name}: not on a GPU (a GPU build with a visible device; lavapipe needs GGML_VK_VISIBLE_DEVICES=0)"
    );
    let mut ctx = context(&m, 1024);
    let base_cfg = EngineConfig {
        draft_max: 0,
        record_margins: true,
        ..EngineConfig::default()
    };
    let cfg = EngineConfig {
        draft_max: 4,
        check_kv: true,
        ..EngineConfig::default()
    };
    let shipped = tandem::models::shipped_drafter(name);
    for (pi, prompt) in PROMPTS.iter().take(prompts).enumerate() {
        let toks = prompt_tokens(&m, prompt);
        let base = run(&mut ctx, &mut NoDrafter, &toks, N_TOKENS, &base_cfg);
        let dflash = match &shipped {
            Some(path) => {
                let h = head(&m);
                std::sync::Arc::new(
                    tandem::draft::diffusion::DflashModel::load(path, &m, || Some(h), 2).unwrap(),
                )
            }
            None => random_dflash(&m),
        };
        let drafters: Vec<(&str, Box<dyn Drafter>)> = vec![
            (
                "ngram",
                Box::new(NgramDrafter::new(NgramConfig { n_max: 4, n_min: 1 })),
            ),
            (
                "diffusion",
                Box::new(DiffusionDrafter::new(dflash, DiffusionConfig::default())),
            ),
        ];
        for (label, mut d) in drafters {
            let g = run(&mut ctx, &mut *d, &toks, N_TOKENS, &cfg);
            assert!(g.stats.drafted > 0, "{name} {label}: nothing drafted");
            if g.tokens != base.tokens {
                let at = common_prefix_len(&g.tokens, &base.tokens);
                let gap = base.margins.get(at).copied().unwrap_or(f32::INFINITY);
                assert!(
                    gap < NEAR_TIE,
                    "{name} prompt {pi} {label}: output differs at token {at} (top-2 gap {gap})"
                );
                eprintln!("{name} prompt {pi} {label}: near-tie divergence at {at} (gap {gap})");
            } else {
                eprintln!(
                    "{name} prompt {pi} {label}: identical ({} drafted, {} accepted)",
                    g.stats.drafted, g.stats.accepted
                );
            }
        }
    }
}

#[test]
#[cfg_attr(
    not(any(feature = "cuda", feature = "vulkan", feature = "metal")),
    ignore = "a GPU build"
)]
fn smollm2_on_the_gpu_is_lossless() {
    check("smollm2-135m", 3);
}

#[test]
#[cfg_attr(
    not(any(feature = "cuda", feature = "vulkan", feature = "metal")),
    ignore = "a GPU build"
)]
fn gemma3_on_the_gpu_is_lossless() {
    check("gemma3-270m", 2);
}
