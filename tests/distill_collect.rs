//! `distill collect` on the real SmolLM2: the stored tokens are the target's own greedy
//! continuation, the soft labels the target's top-k, the stored features are the target's (as a fresh prefill computes them,
//! to f16 and batch rounding), and an interrupted run resumes without redoing or losing
//! prompts.

mod common;

use common::*;
use tandem::distill::{CollectOptions, Shards, collect, default_target_layers};
use tandem::draft::NoDrafter;
use tandem::engine::EngineConfig;
use tandem::llama::Outputs;

#[test]
fn collected_tokens_and_features_are_the_targets_and_runs_resume() {
    let _g = exclusive();
    let m = model("smollm2-135m", true);
    let mut ctx = context(&m, 1024);
    let layers = default_target_layers(m.n_layer());
    assert_eq!(layers, vec![2, 9, 15, 21, 28]);
    let prompts: Vec<Result<Vec<i32>, String>> = PROMPTS[..3]
        .iter()
        .map(|p| Ok(prompt_tokens(&m, p)))
        .chain([Err("could not tokenize".to_string())])
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let opts = CollectOptions {
        max_new: 12,
        target_layers: layers.clone(),
        limit: 2,
        top_k: 8,
    };
    let mut calls = 0;
    let s = collect(&mut ctx, &prompts, dir.path(), &opts, &mut |_, _, _| {
        calls += 1
    })
    .unwrap();
    assert_eq!((s.prompts_collected, calls), (2, 2));

    // Resume: the first two are not redone; the bad prompt is skipped with its reason.
    let opts = CollectOptions { limit: 0, ..opts };
    let s = collect(&mut ctx, &prompts, dir.path(), &opts, &mut |_, _, _| {}).unwrap();
    assert_eq!((s.prompts_done_before, s.prompts_collected), (2, 1));
    assert_eq!(s.prompts_skipped.len(), 1);

    let meta = Shards::open_existing(dir.path()).unwrap();
    assert_eq!(meta.len(), 3);
    let nf = meta.meta.n_features;
    assert_eq!(nf, 5 * m.n_embd());
    for i in 0..3 {
        let r = meta.read(i).unwrap();
        let prompt = prompts[r.prompt_index].as_ref().unwrap();
        assert_eq!(&r.tokens[..r.n_prompt], &prompt[..]);
        // The continuation is the target's plain greedy one.
        let want = run(
            &mut ctx,
            &mut NoDrafter,
            prompt,
            12,
            &EngineConfig {
                draft_max: 0,
                ..EngineConfig::default()
            },
        );
        assert_eq!(&r.tokens[r.n_prompt..], &want.tokens[..]);
        // Soft labels: the target's top 8 after every position, most likely first; inside
        // the continuation the most likely is the token that follows (greedy).
        assert_eq!(r.top_ids.len(), 8 * (r.tokens.len() - 1));
        for (row, (ids, ps)) in r.top_ids.chunks(8).zip(r.top_p.chunks(8)).enumerate() {
            assert!(ps.windows(2).all(|w| w[0] >= w[1]), "row {row}: {ps:?}");
            assert!(ps.iter().sum::<f32>() <= 1.01 && ps[0] > 0.0);
            if row + 1 >= r.n_prompt {
                assert_eq!(ids[0], r.tokens[row + 1], "row {row}");
            }
        }
        // The features match one prefill over the same tokens (f16 storage; the
        // prefill batches positions differently than token-by-token generation).
        ctx.clear();
        ctx.set_feature_layers(&layers).unwrap();
        let n = r.tokens.len() - 1;
        ctx.decode(&r.tokens[..n], 0, Outputs::Last).unwrap();
        let mut f = Vec::new();
        ctx.features_into(0..n, &mut f).unwrap();
        ctx.set_feature_layers(&[]).unwrap();
        assert_eq!(r.features.len(), f.len());
        let scale = f.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let worst = r
            .features
            .iter()
            .zip(&f)
            .fold(0.0f32, |a, (x, y)| a.max((x - y).abs()));
        assert!(worst <= 2e-2 * scale, "worst {worst} vs scale {scale}");
    }
}
