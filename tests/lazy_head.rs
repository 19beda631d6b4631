//! Tandem's own output head against llama.cpp's: for verification batches of several
//! sizes at several depths, the logits computed from the captured final-norm hidden
//! states must equal llama.cpp's logits for the same batch.

mod common;

use common::*;
use tandem::head::{HeadError, OutputHead};
use tandem::llama::Outputs;
use tandem::sampling::argmax;

/// Stated tolerance on |ours - llama.cpp| per logit. The arithmetic is the same sequence of
/// operations as ggml's, so the measured difference is 0; the bound leaves room for a
/// llama.cpp kernel change that reorders a sum.
const TOLERANCE: f32 = 1e-3;

#[test]
fn gemma3_lazy_head_reproduces_llama_logits() {
    let worst = compare("gemma3-270m", true);
    assert!(worst <= TOLERANCE, "max difference {worst} > {TOLERANCE}");
}

/// Heads in the other types users' files carry, each computed on ggml's own kernels: a
/// Q6_K head (the random 256-wide llama re-quantised as q4_k_m, what a stock Q4_K_M
/// download has), an F16 head and a Q4_0 head (SmolLM2 re-quantised with
/// `--output-tensor-type`). Bit-identical to llama.cpp for Q6_K and F16 (the same
/// `vec_dot` per row); Q4_0 as measured, with or without llama.cpp's weight repacking.
#[test]
fn lazy_head_reproduces_llama_logits_for_q6_k_f16_and_q4_0_heads() {
    use tandem::gguf::GgmlType;
    let cases = [
        (common::quant::synthetic("q4_k_m"), GgmlType::Q6K),
        (
            common::quant::quantized("smollm2-135m", "q8_0", Some(GgmlType::F16)),
            GgmlType::F16,
        ),
        (
            common::quant::quantized("smollm2-135m", "q4_0", Some(GgmlType::Q4_0)),
            GgmlType::Q4_0,
        ),
    ];
    for (path, ty) in cases {
        assert_eq!(common::quant::shared_types(&path).0, ty, "{path}");
        for repack in [true, false] {
            let worst = compare(&path, repack);
            eprintln!("{ty:?} head, repack {repack}: max |difference| {worst}");
            assert!(
                worst <= TOLERANCE,
                "{ty:?}: max difference {worst} > {TOLERANCE}"
            );
        }
    }
}

/// Logits of Tandem's head vs llama.cpp's over batches at several depths; argmax identical
/// everywhere (asserted); returns the max |difference|.
fn compare(name: &str, repack: bool) -> f32 {
    let _guard = exclusive();
    let m = model(name, repack);
    let head = std::sync::Arc::new(OutputHead::for_model(&m, 2).unwrap());
    let mut ctx = context(&m, 1024);
    let text = PROMPTS.join("\n");
    let toks = m.tokenize(&text, true, false).unwrap();
    let mut worst = 0f32;
    let mut rows = 0;
    for &(depth, k) in &[(5usize, 1usize), (40, 4), (120, 9), (300, 16), (301, 3)] {
        let depth = depth.min(toks.len() - k);
        ctx.clear();
        ctx.decode(&toks[..depth], 0, Outputs::Last).unwrap();
        ctx.decode(&toks[depth..depth + k], depth, Outputs::All)
            .unwrap();
        let llama: Vec<Vec<f32>> = (0..k).map(|i| ctx.logits(i).to_vec()).collect();
        ctx.truncate(depth).unwrap();
        ctx.decode(&toks[depth..depth + k], depth, Outputs::Hidden)
            .unwrap();
        assert_eq!(
            ctx.kv_len(),
            depth + k,
            "a Hidden decode still fills the KV cache"
        );
        let hidden: Vec<&[f32]> = (0..k).map(|i| ctx.hidden(i)).collect();
        let mut ours = vec![Vec::new(); k];
        head.logits(&hidden, &mut ours);
        let greedy = head.argmax(&hidden);
        for i in 0..k {
            let d = llama[i]
                .iter()
                .zip(&ours[i])
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            worst = worst.max(d);
            assert_eq!(argmax(&llama[i]), argmax(&ours[i]), "depth {depth} row {i}");
            assert_eq!(
                greedy[i].0,
                argmax(&llama[i]),
                "fused argmax, depth {depth} row {i}"
            );
            assert_eq!(greedy[i].1, ours[i][greedy[i].0 as usize]);
            rows += 1;
        }
    }
    eprintln!("lazy head vs llama.cpp on {name}: {rows} rows, max |difference| {worst}");
    worst
}

#[test]
fn a_head_of_the_wrong_shape_is_refused_with_a_clear_error() {
    let m = model("smollm2-135m", true);
    // A wrong shape is an error, not a panic.
    let err = OutputHead::load(std::path::Path::new(m.path()), 7, m.n_embd(), 2).unwrap_err();
    assert!(matches!(err, HeadError::Shape { .. }), "{err}");
}
