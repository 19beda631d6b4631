//! Collaborative decoding (ensembles, contrastive decoding) on SmolLM2 and low-bit copies
//! of it made by `tandem quantize` (same vocabulary, weaker models):
//!
//! * greedy CoS output equals greedy naive output token for token — ensembles of two and
//!   three models and contrastive decoding, on the varied prompts of the foundation tests;
//! * sampled CoS output has the naive distribution (two-sample chi-square per position);
//! * bad settings and mismatched vocabularies are refused with clear errors.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use common::stats::{chi_critical_p001, chi_square};
use tandem::collab::{self, CollabConfig, CollabMode, Combine};
use tandem::llama::{Context, Model, ModelParams, Token};
use tandem::sampling::SamplingConfig;

/// SmolLM2 re-quantised to `ty`, made once per test binary.
fn requant(ty: &str) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    let out = dir.path().join(format!("smollm2-{ty}.gguf"));
    if !out.exists() {
        let src = tandem::models::resolve("smollm2-135m").unwrap();
        tandem::llama::quantize(&src, &out, ty, 2).unwrap();
    }
    out
}

fn contexts(paths: &[PathBuf]) -> Vec<Context> {
    paths
        .iter()
        .map(|p| {
            // Exact mode (weights in file layout): llama.cpp then rounds a batch like single
            // tokens for these types, so naive and CoS see the same logits (docs/collaborative.md,
            // "Exactness of batched verification").
            let m = Arc::new(
                Model::load(
                    p,
                    &ModelParams {
                        repack: false,
                        ..ModelParams::default()
                    },
                )
                .unwrap(),
            );
            common::context(&m, 1024)
        })
        .collect()
}

fn base() -> PathBuf {
    tandem::models::resolve("smollm2-135m").unwrap()
}

fn run(ctxs: &mut [Context], prompt: &[Token], n: usize, cfg: &CollabConfig) -> Vec<Token> {
    collab::generate(ctxs, prompt, n, cfg, &mut |_| true)
        .unwrap()
        .tokens
}

fn greedy_cos_equals_naive(paths: &[PathBuf], combine: Combine) {
    let mut ctxs = contexts(paths);
    let mut accepted = 0;
    for (i, prompt) in common::PROMPTS.iter().enumerate() {
        let toks = common::prompt_tokens(ctxs[0].model(), prompt);
        let cfg = |mode, draft_len| CollabConfig {
            combine: combine.clone(),
            mode,
            draft_len,
            sampling: SamplingConfig::greedy(),
        };
        let naive = run(&mut ctxs, &toks, 40, &cfg(CollabMode::Naive, 1));
        for k in [1, 4, 8] {
            let g = collab::generate(&mut ctxs, &toks, 40, &cfg(CollabMode::Cos, k), &mut |_| {
                true
            })
            .unwrap();
            accepted += g.stats.accepted;
            assert_eq!(
                g.tokens, naive,
                "prompt {i}, draft length {k}: CoS differs from naive"
            );
        }
    }
    assert!(accepted > 0, "no draft token was ever accepted");
}

#[test]
fn greedy_cos_equals_naive_for_a_two_model_ensemble() {
    let _g = common::exclusive();
    greedy_cos_equals_naive(
        &[base(), requant("q4_0")],
        Combine::Ensemble {
            weights: vec![0.6, 0.4],
        },
    );
}

#[test]
fn greedy_cos_equals_naive_for_a_three_model_ensemble() {
    let _g = common::exclusive();
    greedy_cos_equals_naive(
        &[base(), requant("q4_0"), requant("q8_0")],
        Combine::Ensemble {
            weights: vec![0.5, 0.25, 0.25],
        },
    );
}

#[test]
fn greedy_cos_equals_naive_for_contrastive_decoding() {
    let _g = common::exclusive();
    greedy_cos_equals_naive(
        &[base(), requant("q4_0")],
        Combine::Contrastive { mu: 0.5, beta: 0.1 },
    );
}

/// The first tokens sampled by CoS and by naive collaboration come from one distribution.
#[test]
fn sampled_cos_has_the_naive_distribution() {
    let _g = common::exclusive();
    let mut ctxs = contexts(&[base(), requant("q4_0")]);
    let toks = ctxs[0]
        .model()
        .tokenize("one two three four one two three four one two", true, false)
        .unwrap();
    let n = 3;
    let (mut naive, mut cos): (Vec<Vec<Token>>, Vec<Vec<Token>>) =
        (vec![Vec::new(); n], vec![Vec::new(); n]);
    let mut accepted = 0;
    for trial in 0..300u64 {
        let cfg = |mode, seed| CollabConfig {
            combine: Combine::Ensemble {
                weights: vec![0.5, 0.5],
            },
            mode,
            draft_len: 3,
            sampling: SamplingConfig {
                temp: 1.0,
                top_k: 40,
                top_p: 0.95,
                seed,
            },
        };
        let a = run(&mut ctxs, &toks, n, &cfg(CollabMode::Naive, 1000 + trial));
        let g = collab::generate(
            &mut ctxs,
            &toks,
            n,
            &cfg(CollabMode::Cos, 5000 + trial),
            &mut |_| true,
        )
        .unwrap();
        accepted += g.stats.accepted;
        for i in 0..n {
            naive[i].push(a[i]);
            cos[i].push(g.tokens[i]);
        }
    }
    assert!(accepted > 0);
    for i in 0..n {
        let (chi, df) = chi_square(&naive[i], &cos[i]);
        let crit = chi_critical_p001(df);
        eprintln!(
            "position {}: chi2 = {chi:.2}, df = {df}, critical(p=0.001) = {crit:.2}",
            i + 1
        );
        assert!(chi < crit, "position {}: chi2 {chi} ≥ {crit}", i + 1);
    }
}

#[test]
fn bad_collaborations_are_clear_errors() {
    let _g = common::exclusive();
    common::model("gemma3-270m", false);
    let b = base().display().to_string();
    let q = requant("q4_0").display().to_string();
    let generate_err = |extra: &[&str]| {
        let mut a = vec!["generate", "-p", "hi", "-n", "4"];
        a.extend(extra);
        common::tandem_err(&a)
    };
    let e = generate_err(&["--ensemble", &format!("{b},gemma3-270m")]);
    assert!(e.contains("different vocabularies"), "{e}");
    let e = generate_err(&["--ensemble", &format!("{b},/no/such/model.gguf")]);
    assert!(e.contains("/no/such/model.gguf"), "{e}");
    let e = generate_err(&["--ensemble", &format!("{b},{q}"), "--weights", "0.7,0.7"]);
    assert!(e.contains("sum to 1"), "{e}");
    let e = generate_err(&["--ensemble", &format!("{b},{q}"), "--weights", "1.5,-0.5"]);
    assert!(e.contains("≥ 0"), "{e}");
    let e = generate_err(&["--ensemble", &format!("{b},{q}"), "--weights", "1"]);
    assert!(e.contains("one weight per model"), "{e}");
    let e = generate_err(&["--contrastive", &b, "--amateur", &q, "--alpha", "-1"]);
    assert!(e.contains("μ"), "{e}");
    let e = generate_err(&["--contrastive", &b]);
    assert!(e.contains("--amateur"), "{e}");
    let e = generate_err(&["--ensemble", &format!("{b},{q}"), "--collab", "fast"]);
    assert!(e.contains("naive or cos"), "{e}");
}
