//! llama.cpp's own DFlash speculative loop (`llama:draft-dflash` in the bench), driven
//! through `cpp/llama_spec.cpp` on a Tandem context: it runs on a llama-architecture
//! target with a random drafter (every draft rejected, output = plain greedy), and it is
//! refused with a clear error — not a process abort — where llama.cpp cannot run it.

mod common;

use std::path::Path;

use common::*;
use tandem::draft::diffusion::fixture::{FixtureOptions, write_random_dflash};
use tandem::llama::llama_spec_generate;

#[test]
fn llama_cpp_dflash_loop_runs_on_smollm2_and_is_refused_on_gemma3() {
    let _g = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let smol = model("smollm2-135m", true);
    let d = dir.path().join("smol-drafter.gguf");
    write_random_dflash(Path::new(smol.path()), &d, &FixtureOptions::default()).unwrap();
    let mut ctx = context(&smol, 1024);
    let prompt = prompt_tokens(&smol, PROMPTS[0]);
    let (plain, _) = llama_spec_generate(&mut ctx, &prompt, 24, "none", 8, None).unwrap();
    let (spec, s) =
        llama_spec_generate(&mut ctx, &prompt, 24, "draft-dflash", 8, Some(&d)).unwrap();
    assert_eq!(spec, plain);
    assert!(s.n_drafted > 0 && s.n_rounds > 0, "{s:?}");
    // The target context is left as it was: plain runs still match.
    let (again, _) = llama_spec_generate(&mut ctx, &prompt, 24, "none", 8, None).unwrap();
    assert_eq!(again, plain);

    let e = llama_spec_generate(&mut ctx, &prompt, 8, "draft-dflash", 8, None).unwrap_err();
    assert!(e.to_string().contains("needs a drafter file"), "{e}");

    let gemma = model("gemma3-270m", true);
    let gd = dir.path().join("gemma-drafter.gguf");
    write_random_dflash(Path::new(gemma.path()), &gd, &FixtureOptions::default()).unwrap();
    let mut gctx = context(&gemma, 512);
    let gp = prompt_tokens(&gemma, PROMPTS[0]);
    let e = llama_spec_generate(&mut gctx, &gp, 8, "draft-dflash", 8, Some(&gd)).unwrap_err();
    assert!(
        e.to_string().contains("cannot run on a 'gemma3' target"),
        "{e}"
    );
}
