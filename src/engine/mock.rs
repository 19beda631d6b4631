//! A scripted target for unit tests of the loop: its greedy continuation is a fixed
//! function of the previous token, its KV cache a counter that checks every decode starts
//! where the cache ends.

use super::Target;
use crate::llama::{Outputs, TargetError, Token};

pub const VOCAB: usize = 16;
pub const EOG: Token = 15;

/// The mock's greedy next token after `t`: cycles 1 → 2 → … → 13 → 1, and `eog_after` → EOG.
pub fn next_of(t: Token, eog_after: Option<Token>) -> Token {
    if Some(t) == eog_after {
        EOG
    } else {
        t % 13 + 1
    }
}

pub struct MockTarget {
    pub n_ctx: usize,
    pub eog_after: Option<Token>,
    kv: usize,
    rows: Vec<Vec<f32>>,
    pub decodes: usize,
}

impl MockTarget {
    pub fn new(n_ctx: usize) -> Self {
        Self {
            n_ctx,
            eog_after: None,
            kv: 0,
            rows: Vec::new(),
            decodes: 0,
        }
    }
}

impl Target for MockTarget {
    fn n_ctx(&self) -> usize {
        self.n_ctx
    }
    fn n_batch(&self) -> usize {
        64
    }
    fn clear(&mut self) {
        self.kv = 0;
    }
    fn decode(
        &mut self,
        tokens: &[Token],
        start: usize,
        outputs: Outputs,
    ) -> Result<(), TargetError> {
        assert_eq!(
            start, self.kv,
            "decode at {start} but the cache holds {}",
            self.kv
        );
        if start + tokens.len() > self.n_ctx {
            return Err(TargetError::ContextFull { n_ctx: self.n_ctx });
        }
        self.kv += tokens.len();
        self.decodes += 1;
        let row = |t: Token| {
            let mut r = vec![0.0f32; VOCAB];
            r[next_of(t, self.eog_after) as usize] = 10.0;
            r
        };
        self.rows = match outputs {
            Outputs::Last => vec![row(*tokens.last().expect("non-empty"))],
            _ => tokens.iter().map(|&t| row(t)).collect(),
        };
        Ok(())
    }
    fn logits(&self, i: usize) -> &[f32] {
        &self.rows[i]
    }
    fn hidden(&self, _i: usize) -> &[f32] {
        unimplemented!("the mock has no hidden states")
    }
    fn set_feature_layers(&mut self, _layers: &[usize]) -> Result<bool, TargetError> {
        Ok(false)
    }
    fn features_into(
        &self,
        _r: std::ops::Range<usize>,
        out: &mut Vec<f32>,
    ) -> Result<(), TargetError> {
        out.clear();
        Ok(())
    }
    fn truncate(&mut self, from: usize) -> Result<(), TargetError> {
        assert!(from <= self.kv);
        self.kv = from;
        Ok(())
    }
    fn kv_len(&self) -> usize {
        self.kv
    }
    fn is_eog(&self, t: Token) -> bool {
        t == EOG
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::draft::{Draft, Drafter};
    use crate::engine::{EngineConfig, StopReason, generate};

    /// Proposes the mock's true continuation, wrong from draft offset `wrong_at` on.
    struct Scripted {
        k: usize,
        wrong_at: Option<usize>,
        eog_after: Option<Token>,
    }

    impl Drafter for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }
        fn draft(
            &mut self,
            history: &[Token],
            max: usize,
            _s: &crate::sampling::SamplingConfig,
            out: &mut Draft,
        ) {
            let mut t = *history.last().expect("history");
            for i in 0..self.k.min(max) {
                t = next_of(t, self.eog_after);
                out.push_point(if Some(i) == self.wrong_at { 14 } else { t });
            }
        }
    }

    fn plain(n_ctx: usize, prompt: &[Token], max: usize, eog_after: Option<Token>) -> Vec<Token> {
        let mut t = MockTarget::new(n_ctx);
        t.eog_after = eog_after;
        let cfg = EngineConfig {
            draft_max: 0,
            check_kv: true,
            ..EngineConfig::default()
        };
        generate(
            &mut t,
            &mut crate::draft::NoDrafter,
            prompt,
            max,
            &cfg,
            &mut |_| true,
        )
        .expect("plain")
        .tokens
    }

    /// Runs the loop with a scripted drafter, checking after every commit that the KV
    /// cache holds the prompt plus every committed token but the newest.
    fn run(
        n_ctx: usize,
        k: usize,
        wrong_at: Option<usize>,
        max: usize,
        eog_after: Option<Token>,
    ) -> (Vec<Token>, StopReason, crate::engine::Stats) {
        let prompt = [3, 4, 5];
        let mut t = MockTarget::new(n_ctx);
        t.eog_after = eog_after;
        let cfg = EngineConfig {
            draft_max: k,
            check_kv: true,
            ..EngineConfig::default()
        };
        let mut d = Scripted {
            k,
            wrong_at,
            eog_after,
        };
        let g = generate(&mut t, &mut d, &prompt, max, &cfg, &mut |_| true).expect("generate");
        if g.stop != StopReason::Eog && g.stop != StopReason::ContextFull {
            // The loop leaves the newest token undecoded.
            assert_eq!(t.kv_len(), prompt.len() + g.tokens.len() - 1);
        }
        assert_eq!(
            g.tokens,
            plain(n_ctx, &prompt, max, eog_after),
            "k={k} wrong_at={wrong_at:?}"
        );
        (g.tokens, g.stop, g.stats)
    }

    #[test]
    fn fully_accepted_drafts_emit_k_plus_one_per_round() {
        let (toks, stop, s) = run(256, 4, None, 20, None);
        assert_eq!((toks.len(), stop), (20, StopReason::MaxTokens));
        // 1 token from the prefill, then rounds of 5 until the last round's cap.
        assert_eq!(s.accepted, s.drafted);
        assert!(s.rounds <= 5, "{} rounds", s.rounds);
    }

    #[test]
    fn drafts_rejected_at_first_still_advance_one_token() {
        let (toks, _, s) = run(256, 4, Some(0), 10, None);
        assert_eq!(toks.len(), 10);
        assert_eq!(s.accepted, 0);
        assert_eq!(s.rounds, 9);
    }

    #[test]
    fn drafts_rejected_late_keep_their_prefix() {
        let (_, _, s) = run(256, 6, Some(4), 30, None);
        assert!(s.accepted > 0 && s.accepted < s.drafted);
        assert!(s.accepted_at[3] > 0 && s.accepted_at[4] == 0);
    }

    #[test]
    fn end_of_generation_inside_a_draft_stops_there() {
        let (toks, stop, _) = run(256, 8, None, 100, Some(9));
        assert_eq!(stop, StopReason::Eog);
        assert_eq!(*toks.last().unwrap(), 9);
    }

    #[test]
    fn a_full_context_stops_cleanly() {
        let (toks, stop, _) = run(24, 8, None, 1000, None);
        assert_eq!(stop, StopReason::ContextFull);
        assert!(toks.len() >= 20 && 3 + toks.len() <= 25, "{}", toks.len());
    }

    #[test]
    fn max_tokens_is_never_exceeded_by_a_draft() {
        for max in 1..12 {
            let (toks, stop, _) = run(256, 8, None, max, None);
            assert_eq!((toks.len(), stop), (max, StopReason::MaxTokens));
        }
    }

    #[test]
    fn rounds_without_a_draft_are_plain_steps() {
        let (toks, _, s) = run(256, 0, None, 7, None);
        assert_eq!(toks.len(), 7);
        assert_eq!((s.drafted, s.rounds, s.k_hist[0]), (0, 6, 6));
    }

    #[test]
    fn the_cost_curve_is_measured_in_any_window_and_leaves_the_cache_empty() {
        use crate::engine::policy::cost::measure;
        for (n_ctx, want) in [(16, 11), (64, 33), (256, 33)] {
            let mut t = MockTarget::new(n_ctx);
            let c = measure(&mut t, None, 1, 33, 1).unwrap();
            assert_eq!(c.max_n(), want, "window {n_ctx}");
            assert_eq!(t.kv_len(), 0);
        }
    }

    #[test]
    fn the_failfast_policy_keeps_the_kv_invariant_and_the_output() {
        use crate::engine::policy::cost::CostModel;
        use crate::engine::{FailFast, PolicyMemory, run as run_policy};
        let mem = PolicyMemory::shared(CostModel::relative(0.001, &[1.0, 1.1, 1.2, 1.3, 1.4]));
        for wrong_at in [None, Some(0), Some(2)] {
            let d = Scripted {
                k: 8,
                wrong_at,
                eog_after: None,
            };
            let mut p = FailFast::new(vec![Box::new(d)], 8, mem.clone());
            let mut t = MockTarget::new(256);
            let cfg = EngineConfig {
                draft_max: 8,
                check_kv: true,
                ..EngineConfig::default()
            };
            let g = run_policy(&mut t, &mut p, &[3, 4, 5], 40, &cfg, &mut |_| true).unwrap();
            assert_eq!(g.tokens, plain(256, &[3, 4, 5], 40, None));
            assert_eq!(t.kv_len(), 3 + 40 - 1);
        }
    }
}
