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
    let _guard = exclusive();
    let m = model("gemma3-270m", true);
    let head = head(&m);
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
    eprintln!("lazy head vs llama.cpp: {rows} rows, max |difference| {worst}");
    assert!(worst <= TOLERANCE, "max difference {worst} > {TOLERANCE}");
}

#[test]
fn heads_other_than_q8_0_are_refused_with_a_clear_error() {
    let m = model("smollm2-135m", true);
    match OutputHead::load(std::path::Path::new(m.path()), m.n_vocab(), m.n_embd(), 2) {
        Ok(_) => {} // a Q8_0 head: supported
        Err(e @ HeadError::UnsupportedType { .. }) => {
            assert!(e.to_string().contains("Q8_0"), "{e}")
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
    // A wrong shape is an error, not a panic.
    let err = OutputHead::load(std::path::Path::new(m.path()), 7, m.n_embd(), 2).unwrap_err();
    assert!(matches!(err, HeadError::Shape { .. }), "{err}");
}
