//! Sampling losslessness end to end: with temperature sampling, the distribution of the
//! tokens produced by verification (generated positions 1..=3; position 0 comes from the
//! prompt's logits and involves no draft) with `--draft ngram` matches `--draft none`.
//!
//! Two-sample chi-square test of homogeneity per position, rare tokens pooled, rejected at
//! p < 0.001. Seeds are fixed, so the test is deterministic (not flaky): it passes or
//! fails the same way on every run of the same build.

mod common;

use common::stats::{chi_critical_p001, chi_square};
use common::*;
use tandem::draft::{DiffusionConfig, DiffusionDrafter, NgramConfig, NgramDrafter, NoDrafter};
use tandem::engine::EngineConfig;
use tandem::llama::Token;
use tandem::sampling::SamplingConfig;

const TRIALS: u64 = 300;
const POSITIONS: std::ops::RangeInclusive<usize> = 1..=3;

#[test]
fn chi_square_helper_detects_difference() {
    let a: Vec<Token> = (0..400).map(|i| (i % 4) as Token).collect();
    let b: Vec<Token> = (0..400).map(|i| (i % 4) as Token).collect();
    let (chi, df) = chi_square(&a, &b);
    assert!(chi < 1e-9 && df == 3);
    let c: Vec<Token> = (0..400)
        .map(|i| if i % 2 == 0 { 0 } else { (i % 4) as Token })
        .collect();
    let (chi, df) = chi_square(&a, &c);
    assert!(chi > chi_critical_p001(df));
    assert!((chi_critical_p001(3) - 16.27).abs() < 0.3);
}

#[test]
fn ngram_sampling_matches_plain_sampling_in_distribution() {
    check_sampling(false, false);
}

/// A random-weight diffusion drafter: its sampled drafts are almost always rejected, so the
/// emitted tokens come from the residual distribution, which must still give exactly p.
#[test]
fn diffusion_sampling_matches_plain_sampling_in_distribution() {
    check_sampling(false, true);
}

/// The same through Tandem's lazy output head (logits computed by Tandem per position).
#[test]
fn ngram_sampling_through_the_lazy_head_matches_plain_sampling() {
    check_sampling(true, false);
}

#[test]
fn ngram_sampling_under_the_failfast_policy_matches_plain_sampling() {
    check_sampling_with("smollm2-135m", false, false, true, false);
}

/// The server's defaults (top_k 0, top_p 1): the diffusion drafter's q covers the whole
/// vocabulary, so every rejection computes the residual max(0, p − q) over it — linear in
/// the vocabulary since the verify rewrite (it was quadratic: a request could stall the
/// server). On both models, Gemma's vocabulary being 262,144 tokens.
#[test]
fn diffusion_sampling_over_the_whole_vocabulary_matches_plain_sampling() {
    check_sampling_with("smollm2-135m", false, true, false, true);
    check_sampling_with("gemma3-270m", false, true, false, true);
}

/// A target as users download it: SmolLM2 re-quantised as q4_k_m, with the shipped
/// drafter.
#[test]
fn diffusion_sampling_on_q4_k_m_targets_matches_plain_sampling() {
    SHIPPED.with(|s| s.set(true));
    check_sampling_with(
        &quant::quantized("smollm2-135m", "q4_k_m", None),
        false,
        true,
        false,
        false,
    );
}

/// Sampling under a grammar: plain and speculative sampling from the grammar-masked
/// target distribution must agree (the draft stays unconstrained: a drafted token the
/// grammar forbids has p = 0 and is rejected, the residual keeps only allowed tokens).
#[test]
fn ngram_sampling_under_a_grammar_matches_plain_sampling() {
    GRAMMAR.with(|g| {
        *g.borrow_mut() =
            // After " o" or " f" the grammar forces the rest of the phrase: forced drafts
            // (point-mass proposals) are exercised under sampling too.
            Some(r#"root ::= (" one two three" | " four five six" | ",")+"#.into())
    });
    check_sampling_with("smollm2-135m", false, false, false, true);
}

thread_local! {
    /// A GBNF grammar for the generations (see the test above).
    static GRAMMAR: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
    /// Draft with the shipped SmolLM2 drafter instead of a random one (it gets drafts
    /// accepted, so acceptance and residual sampling are both exercised).
    static SHIPPED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn check_sampling(lazy: bool, diffusion: bool) {
    check_sampling_with("smollm2-135m", lazy, diffusion, false, false)
}

/// `failfast`: the fail-fast policy (flat cost curve, so it drafts long) decides the draft
/// lengths instead of a constant. `full_vocab`: top_k 0 and top_p 1 instead of 40 / 0.95.
fn check_sampling_with(name: &str, lazy: bool, diffusion: bool, failfast: bool, full_vocab: bool) {
    let _guard = exclusive();
    let m = model(name, true);
    let lazy_head = lazy.then(|| head(&m));
    let grammar = GRAMMAR
        .with(|g| g.borrow().clone())
        .map(|gbnf| std::sync::Arc::new(tandem::llama::Grammar::new(&m, &gbnf).expect("grammar")));
    let mut ctx = context(&m, 256);
    // Repetitive text so the n-gram drafter proposes at every step.
    let toks = m
        .tokenize(
            "one two three four one two three four one two three four one two",
            true,
            false,
        )
        .unwrap();
    let n = *POSITIONS.end() + 1;
    let mut plain: Vec<Vec<Token>> = vec![Vec::new(); n];
    let mut spec: Vec<Vec<Token>> = vec![Vec::new(); n];
    let (mut drafted, mut accepted) = (0, 0);
    for trial in 0..TRIALS {
        let sampling = SamplingConfig {
            temp: 1.0,
            top_k: if full_vocab { 0 } else { 40 },
            top_p: if full_vocab { 1.0 } else { 0.95 },
            seed: 1000 + trial,
        };
        let cfg = EngineConfig {
            draft_max: 4,
            sampling,
            check_kv: true,
            lazy_head: lazy_head.clone(),
            grammar: grammar.clone(),
            ..EngineConfig::default()
        };
        let base = run(
            &mut ctx,
            &mut NoDrafter,
            &toks,
            n,
            &EngineConfig {
                draft_max: 0,
                lazy_head: None,
                ..cfg.clone()
            },
        );
        // A different seed stream for the speculative run: the samples must be independent.
        let cfg2 = EngineConfig {
            sampling: SamplingConfig {
                seed: 900_000 + trial,
                ..cfg.sampling.clone()
            },
            ..cfg
        };
        let mut d: Box<dyn tandem::draft::Drafter> = if diffusion {
            let d = if SHIPPED.with(|s| s.get()) {
                let path = tandem::models::shipped_drafter("smollm2-135m").unwrap();
                let h = head(&m);
                std::sync::Arc::new(
                    tandem::draft::diffusion::DflashModel::load(&path, &m, || Some(h), 2).unwrap(),
                )
            } else {
                random_dflash(&m)
            };
            Box::new(DiffusionDrafter::new(d, DiffusionConfig { p_min: 0.0 }))
        } else {
            Box::new(NgramDrafter::new(NgramConfig { n_max: 3, n_min: 1 }))
        };
        let s = if failfast {
            run_failfast(&mut ctx, vec![d], true, &toks, n, &cfg2)
        } else {
            run(&mut ctx, d.as_mut(), &toks, n, &cfg2)
        };
        drafted += s.stats.drafted;
        accepted += s.stats.accepted;
        for i in POSITIONS {
            if let (Some(&a), Some(&b)) = (base.tokens.get(i), s.tokens.get(i)) {
                plain[i].push(a);
                spec[i].push(b);
            }
        }
    }
    eprintln!(
        "{name}, lazy head: {lazy}, diffusion: {diffusion}, full vocabulary: {full_vocab}; drafted {drafted}, accepted {accepted}"
    );
    if diffusion {
        assert!(
            drafted >= TRIALS as usize,
            "the diffusion drafter must draft every trial"
        );
    } else {
        assert!(
            accepted > 0 && accepted < drafted,
            "drafts must be both accepted and rejected"
        );
    }
    for i in POSITIONS {
        let (chi, df) = chi_square(&plain[i], &spec[i]);
        let crit = chi_critical_p001(df);
        eprintln!("position {i}: chi2 = {chi:.2}, df = {df}, critical(p=0.001) = {crit:.2}");
        assert!(
            chi < crit,
            "position {i}: distributions differ (chi2 {chi:.2} >= {crit:.2}, df {df})"
        );
    }
}
