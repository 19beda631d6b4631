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

use common::parity::check;
use tandem::draft::diffusion::fixture::{FixtureOptions, write_random_dflash};
use tandem::draft::diffusion::{DflashModel, DiffusionError};
use tandem::gguf::GgmlType;
use tandem::llama::Model;

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

/// Targets as users download them: the drafter shares their embeddings and head in
/// whatever type llama.cpp's quantiser chose. SmolLM2 re-quantised as q4_k_m keeps Q8_0
/// shared tensors (576 is not a multiple of 256, so Q6_K falls back to Q8_0), with
/// `--output-tensor-type q4_0` they are Q4_0; the 256-wide random llama re-quantised as
/// q4_k_m has a Q6_K head and Q4_K embeddings, as q4_0 a Q6_K head and Q4_0 embeddings.
#[test]
fn drafter_matches_llama_cpp_on_quantized_targets() {
    use common::quant::{quantized, shared_types, synthetic};
    let cases = [
        (
            quantized("smollm2-135m", "q4_k_m", None),
            (GgmlType::Q8_0, GgmlType::Q8_0),
        ),
        (
            quantized("smollm2-135m", "q4_0", Some(GgmlType::Q4_0)),
            (GgmlType::Q4_0, GgmlType::Q4_0),
        ),
        (synthetic("q4_k_m"), (GgmlType::Q6K, GgmlType::Q4K)),
        (synthetic("q4_0"), (GgmlType::Q6K, GgmlType::Q4_0)),
    ];
    for (path, types) in cases {
        assert_eq!(shared_types(&path), types, "{path}: (head, embeddings)");
        check(&path, GgmlType::F16);
    }
}

/// Drafters quantized to save memory: their own matrices in Q4_0 and the K-quants (on
/// SmolLM2 a K-quant falls back per matrix where rows are 576 wide, as llama.cpp's
/// quantiser does, leaving the 1,536-wide ffn_down in the K-quant; on the 256-wide random
/// llama every matrix is in the K-quant).
#[test]
fn quantized_drafters_match_llama_cpp() {
    for wtype in [GgmlType::Q4_0, GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K] {
        check("smollm2-135m", wtype);
    }
    let k = common::quant::synthetic("q4_k_m");
    for wtype in [GgmlType::Q4K, GgmlType::Q6K] {
        check(&k, wtype);
    }
}
