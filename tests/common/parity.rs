//! The parity check of Tandem's DFlash forward pass against llama.cpp's `dflash` graph
//! (tolerances explained in tests/diffusion_parity.rs).

use std::path::Path;
use std::sync::Arc;

use tandem::draft::diffusion::DflashModel;
use tandem::draft::diffusion::fixture::{FixtureOptions, write_random_dflash};
use tandem::gguf::GgmlType;
use tandem::llama::{LlamaDflash, Model, Outputs, Token};

/// Allowed max |Δ| relative to the largest |logit| of the row, per weight type (see above).
pub fn tol(t: GgmlType) -> f32 {
    match t {
        GgmlType::F16 => 5e-3,
        GgmlType::Bf16 => 1e-2,
        // 4–6-bit drafter weights (measured up to 1.7e-2): each product is ggml's own
        // (`kernels::ggml` is bit-identical to `ggml_mul_mat`, unit-tested), but the
        // activations are quantized to 8 bits in 32- or 256-value blocks before every
        // product, so a last-bit difference upstream (SiLU's exp, softmax) that moves one
        // value across a rounding boundary moves it by a whole quantum (block max / 127).
        _ if t.block().0 > 1 && t != GgmlType::Q8_0 => 2.5e-2,
        _ => 2e-3,
    }
}

fn features(model: &Arc<Model>, layers: &[usize], tokens: &[Token]) -> Vec<f32> {
    let mut ctx = super::context(model, 1024);
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

/// Compare both implementations on several contexts of one target (a manifest name or a
/// GGUF path); returns the worst |Δ| / scale.
pub fn check(name: &str, wtype: GgmlType) -> f32 {
    let _g = super::exclusive();
    let model = super::model(name, false);
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
    let head = super::head(&model);
    let ours = DflashModel::load(&path, &model, || Some(head.clone()), 2).unwrap();
    let mut theirs = LlamaDflash::open(&path, model.clone(), 1024, 2, true).unwrap();
    assert_eq!(theirs.n_features(), ours.n_features());
    let layers = ours.cfg.target_layers.clone();

    let mut worst = 0.0f32;
    let mut positions = 0;
    for (pi, prompt) in super::PROMPTS.iter().take(3).enumerate() {
        let toks = super::prompt_tokens(&model, prompt);
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
    worst
}
