//! Greedy losslessness on the real models: speculative output must equal `--draft none`
//! token for token, for 12 varied prompts and draft lengths 1, 4, 8 and 16, with the KV
//! cache checked after every round.
//!
//! llama.cpp's CPU kernels may round a k-token batch differently from a single token
//! (repacked weight layouts use different gemm/gemv kernels). Where that flips a
//! near-tie, the speculative run can legitimately pick the other token. In exact mode
//! (`repack = false`) the test demands bit-for-bit identical output; in the default mode
//! it demands that every divergence starts at a near-tie of the reference run (top-2
//! logit gap below `NEAR_TIE`) and reports how often that happens.

mod common;

use common::*;
use tandem::draft::{NgramConfig, NgramDrafter, NoDrafter};
use tandem::engine::EngineConfig;

const N_TOKENS: usize = 48;
const DRAFT_LENGTHS: [usize; 4] = [1, 4, 8, 16];
/// Largest top-2 logit gap at which batched rounding may flip the argmax.
const NEAR_TIE: f32 = 0.05;

#[derive(Debug)]
struct Divergence {
    prompt: usize,
    drafter: String,
    at: usize,
    margin: f32,
}

fn check_model(name: &str, exact: bool) {
    let _guard = exclusive();
    let m = model(name, !exact);
    let mut ctx = context(&m, 2048);
    let base_cfg = EngineConfig { draft_max: 0, check_kv: true, record_margins: true, ..EngineConfig::default() };
    let mut divergences = Vec::new();
    let mut runs = 0;
    let mut accepted = 0;
    for (pi, prompt) in PROMPTS.iter().enumerate() {
        let toks = prompt_tokens(&m, prompt);
        let base = run(&mut ctx, &mut NoDrafter, &toks, N_TOKENS, &base_cfg);
        assert!(!base.tokens.is_empty());
        let mut candidates: Vec<(String, EngineConfig, Box<dyn tandem::draft::Drafter>)> = Vec::new();
        for k in DRAFT_LENGTHS {
            let cfg = EngineConfig { draft_max: k, check_kv: true, ..EngineConfig::default() };
            let d = NgramDrafter::new(NgramConfig { n_max: 4, n_min: 1 });
            candidates.push((format!("ngram k={k}"), cfg, Box::new(d)));
        }
        // Replaying the reference exercises full acceptance and rejection at a chosen
        // position on every prompt, not only where n-grams happen to match.
        for corrupt in [None, Some(0), Some(5)] {
            let cfg = EngineConfig { draft_max: 8, check_kv: true, ..EngineConfig::default() };
            let d = ReplayDrafter { reference: base.tokens.clone(), prompt_len: toks.len(), corrupt_at: corrupt };
            candidates.push((format!("replay k=8 corrupt={corrupt:?}"), cfg, Box::new(d)));
        }
        for (label, cfg, mut d) in candidates {
            let spec = run(&mut ctx, d.as_mut(), &toks, N_TOKENS, &cfg);
            runs += 1;
            accepted += spec.stats.accepted;
            if spec.tokens != base.tokens {
                let at = spec.tokens.iter().zip(&base.tokens).take_while(|(a, b)| a == b).count();
                let margin = base.margins.get(at).copied().unwrap_or(f32::INFINITY);
                divergences.push(Divergence { prompt: pi, drafter: label, at, margin });
            } else {
                assert_eq!(spec.stop, base.stop);
            }
        }
    }
    eprintln!(
        "{name} (exact={exact}): {runs} speculative runs, {accepted} draft tokens accepted, {} diverged: {divergences:?}",
        divergences.len()
    );
    assert!(accepted > 0, "the drafters must actually get tokens accepted");
    if exact {
        assert!(divergences.is_empty(), "exact mode must be bit-for-bit lossless: {divergences:?}");
    } else {
        for d in &divergences {
            assert!(d.margin < NEAR_TIE, "divergence not at a near-tie (gap {} >= {NEAR_TIE}): {d:?}", d.margin);
        }
    }
}

#[test]
fn smollm2_greedy_is_lossless() {
    check_model("smollm2-135m", false);
}

#[test]
fn gemma3_greedy_is_lossless() {
    check_model("gemma3-270m", false);
}

#[test]
fn smollm2_exact_mode_is_bit_identical() {
    check_model("smollm2-135m", true);
}

#[test]
fn gemma3_exact_mode_is_bit_identical() {
    check_model("gemma3-270m", true);
}
