//! A drafter measured two ways on the same recorded sequences: offline (the drafter fed
//! the recorded features, its blocks checked against the recorded continuation, rounds
//! walked as the engine walks them) and at run time (the engine, the same drafter, the
//! target verifying). The two agree when the offline measure is the one run time makes.

use super::shards::Record;
use super::walk::Walk;
use crate::draft::{Draft, Drafter};
use crate::engine::{self, EngineConfig, EngineError, Target};
use crate::sampling::SamplingConfig;

/// Offline rounds of `drafter` over `rec`'s continuation, drafting up to `k` tokens per
/// round: at each round's anchor `a` the drafter holds the recorded features of positions
/// `0..a` and drafts after `tokens[a]`; the round keeps the draft's prefix that matches
/// the record. `nf`: features per position.
pub fn offline_walk(drafter: &mut dyn Drafter, rec: &Record, nf: usize, k: usize) -> Walk {
    let n = rec.tokens.len();
    let mut w = Walk::default();
    if n < 2 || rec.n_prompt >= n {
        return w;
    }
    drafter.begin(&rec.tokens[..rec.n_prompt]);
    let greedy = SamplingConfig::greedy();
    let mut out = Draft::default();
    let mut fed = 0;
    let mut a = rec.n_prompt;
    while a < n - 1 {
        if a > fed {
            drafter.observe(fed, &rec.features[fed * nf..a * nf]);
            fed = a;
        }
        out.clear();
        drafter.draft(&rec.tokens[..=a], k.min(n - 1 - a), &greedy, &mut out);
        let l = out
            .tokens
            .iter()
            .zip(&rec.tokens[a + 1..])
            .take_while(|(d, t)| d == t)
            .count();
        w.rounds += 1;
        w.tokens += l + 1;
        w.first_accepted += (l >= 1) as usize;
        a += l + 1;
    }
    w
}

/// Run-time rounds: the engine generates `rec`'s continuation length after its prompt
/// with `drafter` drafting up to `k` tokens per round (greedy). Also returns whether the
/// output is the recorded continuation (it is, up to near-ties of batched rounding).
pub fn runtime_walk<T: Target + ?Sized>(
    ctx: &mut T,
    drafter: &mut dyn Drafter,
    rec: &Record,
    k: usize,
    cfg: &EngineConfig,
) -> Result<(Walk, bool), EngineError> {
    let prompt = &rec.tokens[..rec.n_prompt];
    let want = &rec.tokens[rec.n_prompt..];
    let cfg = EngineConfig {
        draft_max: k,
        sampling: SamplingConfig::greedy(),
        ..cfg.clone()
    };
    let g = engine::generate(ctx, drafter, prompt, want.len(), &cfg, &mut |_| true)?;
    let s = &g.stats;
    let w = Walk {
        rounds: s.rounds,
        tokens: s.accepted + s.rounds,
        first_accepted: s.accepted_at.first().copied().unwrap_or(0),
    };
    // The record keeps a final end-of-generation token; the engine does not emit it.
    let same = want.starts_with(&g.tokens) && want.len() - g.tokens.len() <= 1;
    Ok((w, same))
}
