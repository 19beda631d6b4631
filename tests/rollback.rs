//! After every round the target's KV cache holds exactly prompt + accepted tokens,
//! including when a whole draft is rejected and when it is fully accepted.

mod common;

use common::*;
use tandem::draft::NoDrafter;
use tandem::engine::EngineConfig;

#[test]
fn kv_cache_holds_exactly_prompt_plus_accepted_tokens() {
    let _guard = exclusive();
    for name in MODELS {
        // Exact mode with batches of at most 7 tokens is bit-identical to plain decoding on
        // both models (see greedy_lossless.rs), so outputs can be compared token for token.
        let m = model(name, false);
        let mut ctx = context(&m, 1024);
        let toks = prompt_tokens(&m, PROMPTS[1]);
        let n = 40;
        let base = run(
            &mut ctx,
            &mut NoDrafter,
            &toks,
            n,
            &EngineConfig {
                draft_max: 0,
                ..EngineConfig::default()
            },
        );
        assert_eq!(
            base.tokens.len(),
            n,
            "{name}: the reference run should use all {n} tokens"
        );

        // corrupt_at = None: every draft fully accepted; Some(0): every draft fully rejected.
        for (corrupt, label) in [
            (None, "all accepted"),
            (Some(0), "all rejected"),
            (Some(3), "partial"),
        ] {
            let cfg = EngineConfig {
                draft_max: 6,
                check_kv: true,
                ..EngineConfig::default()
            };
            let mut d = replay(base.tokens.clone(), toks.len(), corrupt);
            let g = run(&mut ctx, &mut d, &toks, n, &cfg);
            assert_eq!(g.tokens, base.tokens, "{name} {label}");
            let s = &g.stats;
            match corrupt {
                None => assert_eq!(s.accepted, s.drafted, "{name}: {label}"),
                Some(0) => assert_eq!(s.accepted, 0, "{name}: {label}"),
                _ => assert!(s.accepted > 0 && s.accepted < s.drafted, "{name}: {label}"),
            }
            assert!(s.drafted > 0);
            // After the last round the cache holds everything but the newest token, which
            // was never fed (the engine checked the same invariant after every round).
            assert_eq!(
                ctx.kv_len(),
                toks.len() + g.tokens.len() - 1,
                "{name} {label}"
            );
        }
    }
}

#[test]
fn full_context_stops_cleanly() {
    let _guard = exclusive();
    let m = model("smollm2-135m", true);
    let mut ctx = context(&m, 64);
    let toks = prompt_tokens(&m, PROMPTS[11]);
    assert!(toks.len() < 64);
    let cfg = EngineConfig {
        draft_max: 16,
        check_kv: true,
        ..EngineConfig::default()
    };
    let mut d = tandem::draft::NgramDrafter::new(Default::default());
    let g = run(&mut ctx, &mut d, &toks, 1000, &cfg);
    if g.stop == tandem::engine::StopReason::ContextFull {
        assert_eq!(
            toks.len() + g.tokens.len(),
            64 + 1,
            "fills the context exactly"
        );
    } else {
        assert_eq!(g.stop, tandem::engine::StopReason::Eog);
    }
}
