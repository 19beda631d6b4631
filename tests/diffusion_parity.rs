//! Tandem's Rust DFlash forward pass against llama.cpp's own `dflash` graph, on the same
//! drafter file, the same target features and the same block tokens.
//!
//! Tolerance: the two compute the same operations in the same precision classes (weights
//! F16 → activations rounded to f16 before each product, as ggml does; Q8_0 → activations
//! quantized to Q8_0 with ggml's rounding; the shared Q8_0 head bit-exact; attention in
//! f32 on both sides, llama.cpp's cache kept in F32 for this test). What differs is the
//! summation order inside dot products and softmax (ggml's SIMD lanes vs ours), ~1e-6
//! relative per operation; through two layers and a rounding step before each product this
//! grows to ~1e-4 of the logits' scale. We assert max |Δ| ≤ 2e-3 · max |logit| (with the
//! logits' scale ~1–10 that is 10–100× the observed error, and well below the top-2 gaps
//! that decide the argmax) and identical argmax at every position.

mod common;

use std::path::Path;
use std::sync::Arc;

use tandem::draft::diffusion::fixture::{FixtureOptions, write_random_dflash};
use tandem::draft::diffusion::{DflashModel, DiffusionError};
use tandem::gguf::GgmlType;
use tandem::llama::{LlamaDflash, Model, Outputs, Token};

/// Allowed max |Δ| relative to the largest |logit| of the row, per weight type (see above).
fn tol(t: GgmlType) -> f32 {
    match t {
        GgmlType::F16 => 5e-3,
        GgmlType::Bf16 => 1e-2,
        _ => 2e-3,
    }
}

fn features(model: &Arc<Model>, layers: &[usize], tokens: &[Token]) -> Vec<f32> {
    let mut ctx = common::context(model, 1024);
    ctx.set_feature_layers(layers).unwrap();
    ctx.decode(tokens, 0, Outputs::Last).unwrap();
    let mut f = Vec::new();
    ctx.features_into(0..tokens.len(), &mut f).unwrap();
    f
}

fn argmax(v: &[f32]) -> usize {
    let mut b = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[b] {
            b = i;
        }
    }
    b
}

/// Compare both implementations on several contexts of one target.
fn check(name: &str, wtype: GgmlType) {
    let _g = common::exclusive();
    let model = common::model(name, false);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drafter.gguf");
    write_random_dflash(
        Path::new(model.path()),
        &path,
        &FixtureOptions {
            wtype,
            // Three taps, as the shipped drafter: the tolerances above were measured with
            // them (five taps double fc's inputs and, with random F16 weights, its
            // rounding: 5e-3 of the scale at worst).
            target_layers: vec![1, model.n_layer() / 2, model.n_layer() - 2],
            ..FixtureOptions::default()
        },
    )
    .unwrap();
    let head = common::head(&model);
    let ours = DflashModel::load(&path, &model, || Some(head.clone()), 2).unwrap();
    let mut theirs = LlamaDflash::open(&path, model.clone(), 1024, 2, true).unwrap();
    assert_eq!(theirs.n_features(), ours.n_features());
    let layers = ours.cfg.target_layers.clone();

    let mut worst = 0.0f32;
    let mut positions = 0;
    for (pi, prompt) in common::PROMPTS.iter().take(3).enumerate() {
        let toks = common::prompt_tokens(&model, prompt);
        let feats = features(&model, &layers, &toks);
        let nf = ours.n_features();
        // Inject in two steps (the cache grows as rounds commit) and draft after each.
        let split = toks.len() / 2 + pi;
        let mut cache = ours.new_cache();
        theirs.clear();
        for (from, to) in [(0, split), (split, toks.len())] {
            ours.inject(&mut cache, &feats[from * nf..to * nf]);
            theirs.inject(&feats[from * nf..to * nf], from).unwrap();
            let n = 16;
            let last = toks[to - 1];
            let mut block = vec![ours.cfg.mask_token; n];
            block[0] = last;
            let mut a = Vec::new();
            ours.draft_logits(&cache, last, n, &mut a);
            let mut b = Vec::new();
            theirs.block(&block, to, Some(&mut b)).unwrap();
            assert_eq!(a.len(), n - 1);
            assert_eq!(b.len(), n - 1);
            for (i, (ra, rb)) in a.iter().zip(&b).enumerate() {
                let scale = rb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let diff = ra
                    .iter()
                    .zip(rb)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0f32, f32::max);
                worst = worst.max(diff / scale);
                assert!(
                    diff <= tol(wtype) * scale,
                    "{name} {wtype:?} prompt {pi} ctx {to} row {i}: max |diff| {diff} vs scale {scale}"
                );
                assert_eq!(
                    argmax(ra),
                    argmax(rb),
                    "{name} {wtype:?} prompt {pi} ctx {to} row {i}: argmax differs"
                );
                positions += 1;
            }
        }
    }
    eprintln!("{name} {wtype:?}: {positions} positions, worst |diff|/scale = {worst:.2e}");
}

#[test]
fn smollm2_f16_drafter_matches_llama_cpp() {
    check("smollm2-135m", GgmlType::F16);
}

#[test]
fn smollm2_q8_0_drafter_matches_llama_cpp() {
    check("smollm2-135m", GgmlType::Q8_0);
}

#[test]
fn smollm2_f32_and_bf16_drafters_match_llama_cpp() {
    check("smollm2-135m", GgmlType::F32);
    check("smollm2-135m", GgmlType::Bf16);
}

#[test]
fn gemma3_f16_drafter_matches_llama_cpp() {
    check("gemma3-270m", GgmlType::F16);
}

#[test]
fn bad_drafter_files_are_refused_with_clear_errors() {
    let _g = common::exclusive();
    let smol = common::model("smollm2-135m", false);
    let gemma = common::model("gemma3-270m", false);
    let dir = tempfile::tempdir().unwrap();
    let load = |p: &Path, m: &Arc<Model>| DflashModel::load(p, m, || None, 1).map(|_| ());

    // A target model is not a drafter.
    let e = load(Path::new(smol.path()), &smol).unwrap_err();
    assert!(matches!(e, DiffusionError::NotDflash { .. }), "{e}");
    assert!(e.to_string().contains("'llama'"), "{e}");

    // A drafter for another target (gemma: hidden size 640, vocabulary 262k) on smollm2.
    let g = dir.path().join("gemma-drafter.gguf");
    write_random_dflash(Path::new(gemma.path()), &g, &FixtureOptions::default()).unwrap();
    let e = load(&g, &smol).unwrap_err();
    assert!(matches!(e, DiffusionError::Mismatch { .. }), "{e}");
    assert!(e.to_string().contains("vocabulary"), "{e}");

    // Target layers beyond the target's depth.
    let deep = dir.path().join("deep.gguf");
    write_random_dflash(
        Path::new(smol.path()),
        &deep,
        &FixtureOptions {
            target_layers: vec![1, 40],
            ..FixtureOptions::default()
        },
    )
    .unwrap();
    let e = load(&deep, &smol).unwrap_err();
    assert!(
        e.to_string().contains("target layer 40 is out of range"),
        "{e}"
    );

    // Truncated file.
    let ok = dir.path().join("ok.gguf");
    write_random_dflash(Path::new(smol.path()), &ok, &FixtureOptions::default()).unwrap();
    let bytes = std::fs::read(&ok).unwrap();
    for cut in [10, bytes.len() / 3, bytes.len() - 100] {
        let t = dir.path().join(format!("cut{cut}.gguf"));
        std::fs::write(&t, &bytes[..cut]).unwrap();
        let e = load(&t, &smol).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("corrupt")
                || s.contains("truncated")
                || s.contains("end of the file")
                || s.contains("not a GGUF"),
            "cut at {cut}: {s}"
        );
    }
}
