//! Prompt-cache reuse inside the engine (`EngineConfig::reuse_prefix`): a follow-up prompt
//! that extends a finished generation reuses its KV cells and gives the output of a fresh
//! prefill, token for token up to near-ties of batched rounding (the reused cells were
//! computed token by token while generating, a fresh prefill computes them in one batch).

mod common;

use common::*;
use tandem::bench::common_prefix_len;
use tandem::draft::{NgramConfig, NgramDrafter, NoDrafter};
use tandem::engine::EngineConfig;

const NEAR_TIE: f32 = 0.5;

#[test]
fn a_follow_up_reusing_the_cells_answers_as_a_fresh_prefill() {
    let _g = exclusive();
    let m = model("smollm2-135m", true);
    let mut ctx = context(&m, 2048);
    let plain = EngineConfig {
        draft_max: 0,
        record_margins: true,
        ..EngineConfig::default()
    };
    let mut ties = 0;
    for (pi, p) in PROMPTS.iter().take(4).enumerate() {
        let first = prompt_tokens(&m, p);
        let g1 = run(&mut ctx, &mut NoDrafter, &first, 40, &plain);
        // The context holds the prompt and the answer (but its last token, unless the
        // answer ended with an end-of-generation token: then that one was not kept).
        let held = ctx.kv_len();
        let n = first.len() + g1.tokens.len();
        assert!(held == n || held == n - 1, "prompt {pi}: {held} of {n}");
        let mut next = first.clone();
        next.extend(&g1.tokens);
        next.extend(
            m.tokenize("\nPlease go on, in more detail.\n", false, true)
                .unwrap(),
        );
        for k in [0usize, 8] {
            let cfg = EngineConfig {
                draft_max: k,
                ..plain.clone()
            };
            let mut ng = NgramDrafter::new(NgramConfig::default());
            // Fresh prefill first, then reuse after a generation that left the cells.
            let fresh = run(&mut ctx, &mut ng, &next, 40, &cfg);
            run(&mut ctx, &mut NoDrafter, &first, 40, &plain);
            let reused = run(
                &mut ctx,
                &mut ng,
                &next,
                40,
                &EngineConfig {
                    reuse_prefix: held,
                    check_kv: true,
                    ..cfg.clone()
                },
            );
            if reused.tokens != fresh.tokens {
                let at = common_prefix_len(&reused.tokens, &fresh.tokens);
                let gap = fresh.margins.get(at).copied().unwrap_or(f32::INFINITY);
                assert!(
                    gap < NEAR_TIE,
                    "prompt {pi} k={k}: reuse differs at token {at}, not a near-tie (gap {gap})"
                );
                eprintln!("prompt {pi} k={k}: near-tie divergence at {at} (gap {gap})");
                ties += 1;
            }
        }
    }
    eprintln!("{ties} near-tie divergences of 8 runs");
}
