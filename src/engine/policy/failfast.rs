//! The cost-aware, calibrated draft policy: fail fast where the drafters are unsure, win
//! big where they are sure, never slower than plain decoding.
//!
//! Each round, for each candidate draft, with a_i the calibrated probability that token i
//! is accepted given the earlier ones were and S_i = a_1 ⋯ a_i:
//!
//! ```text
//! k* = argmax_k  E[1 + S_1 + … + S_k] / (C(k + 1) + D)
//! ```
//!
//! C is the measured verify-cost curve, D the drafter's own cost. k = 0 is a plain step
//! (rate 1 / C(1)), so a draft is verified only when it is expected to beat plain decoding.
//! Free drafters (n-gram lookup) are always asked; a costly one (the diffusion drafter) is
//! run only when its recent expected value, its cost included, beats the free candidate,
//! or as a probe whose interval doubles while probes keep failing. A guard compares the
//! realised throughput with plain decoding's and pauses drafting, with probes, if it falls
//! behind (miscalibration cannot make the policy slower than plain decoding for long).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::acceptance::{Evidence, Table};
use super::cost::CostModel;
use super::{DraftPolicy, Outcome};
use crate::draft::{Draft, Drafter};
use crate::llama::Token;
use crate::sampling::SamplingConfig;

/// Rounds between probes of a costly drafter that is not paying: starts here, doubles
/// after each failed probe up to [`PROBE_MAX`].
const PROBE_MIN: usize = 16;
const PROBE_MAX: usize = 1024;
/// Throughput guard: rounds per window, and the share of plain decoding's rate a window
/// must reach.
const GUARD_WINDOW: usize = 32;
const GUARD_FLOOR: f64 = 0.95;
/// A draft is verified only when its expected rate beats a plain step's by this factor:
/// the cost curve leaves out the round's bookkeeping, and estimates are noisy.
const MIN_GAIN: f64 = 1.03;

/// What the policy remembers about a model across requests (shared by the requests of a
/// session or an `Engine`): the cost curve and each drafter's calibration.
#[derive(Debug)]
pub struct PolicyMemory {
    /// The verify-cost curve, refreshed by every request.
    pub cost: CostModel,
    drafters: HashMap<String, DrafterMemory>,
}

#[derive(Debug, Clone)]
struct DrafterMemory {
    table: Table,
    /// Seconds per call (exponential moving average).
    secs: f64,
    /// Expected tokens per second of its best draft relative to plain decoding, its own
    /// cost included (moving average over the rounds it ran).
    value: f64,
    /// Rounds to wait before probing it again while it does not pay.
    probe_gap: usize,
}

impl PolicyMemory {
    /// Memory for a model whose verify-cost curve is `cost`.
    pub fn new(cost: CostModel) -> Self {
        Self {
            cost,
            drafters: HashMap::new(),
        }
    }

    /// Shared, for handing to each request's policy.
    pub fn shared(cost: CostModel) -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Self::new(cost)))
    }

    fn drafter(&mut self, name: &str, evidence: Evidence) -> &mut DrafterMemory {
        self.drafters
            .entry(name.to_string())
            .or_insert_with(|| DrafterMemory {
                table: Table::new(evidence),
                secs: 0.0,
                // Neutral until tried: the first probe comes after PROBE_MIN rounds.
                value: 1.0,
                probe_gap: PROBE_MIN,
            })
    }
}

struct Slot {
    drafter: Box<dyn Drafter>,
    evidence: Evidence,
    /// Costly drafters are run only when they are expected to pay.
    costly: bool,
    request: Table,
    draft: Draft,
    since_run: usize,
}

/// The cost-aware, calibrated policy over one or more drafters.
pub struct FailFast {
    slots: Vec<Slot>,
    memory: Arc<Mutex<PolicyMemory>>,
    cap: usize,
    layers: Vec<usize>,
    name: String,
    chosen: Option<usize>,
    guard: Guard,
    round_draft_secs: f64,
    /// `TANDEM_POLICY_TRACE` set: every decision and outcome on stderr.
    trace: bool,
    /// Longest run of draft tokens accepted in one round of this request.
    longest_run: usize,
}

impl FailFast {
    /// A policy over `drafters` (n-gram lookups are free; drafters conditioned on target
    /// features are costly), drafting at most `cap` tokens a round, remembering across
    /// requests in `memory`. At most one drafter may need target features.
    pub fn new(
        drafters: Vec<Box<dyn Drafter>>,
        cap: usize,
        memory: Arc<Mutex<PolicyMemory>>,
    ) -> Self {
        let mut layers = Vec::new();
        let mut slots: Vec<Slot> = drafters
            .into_iter()
            .map(|d| {
                let costly = !d.feature_layers().is_empty();
                if costly && layers.is_empty() {
                    layers = d.feature_layers().to_vec();
                }
                let evidence = if costly {
                    Evidence::Confidence
                } else {
                    Evidence::Lookup
                };
                Slot {
                    drafter: d,
                    evidence,
                    costly,
                    request: Table::new(evidence),
                    draft: Draft::default(),
                    since_run: 0,
                }
            })
            .collect();
        // Free drafters first: each round their candidate is the bar a costly drafter must
        // beat (a stable sort keeps the given order otherwise).
        slots.sort_by_key(|s| s.costly);
        let name = match slots.len() {
            1 => slots[0].drafter.name().to_string(),
            _ => "auto".to_string(),
        };
        Self {
            slots,
            memory,
            cap,
            layers,
            name,
            chosen: None,
            guard: Guard::default(),
            round_draft_secs: 0.0,
            trace: std::env::var_os("TANDEM_POLICY_TRACE").is_some(),
            longest_run: 0,
        }
    }
}

/// The best draft length for `d` and its expected rate (tokens per second), with `extra`
/// seconds of drafting charged to the round.
fn best_length(
    d: &Draft,
    request: &Table,
    model: &Table,
    cost: &CostModel,
    cap: usize,
    extra: f64,
) -> (usize, f64) {
    let mut best = (0, 1.0 / (cost.step() + extra));
    let (mut survive, mut expected) = (1.0, 1.0);
    for i in 0..d.len().min(cap) {
        survive *= request.estimate(model, d, i);
        expected += survive;
        let rate = expected / (cost.cost(i + 2) + extra);
        if rate > best.1 {
            best = (i + 1, rate);
        }
        if survive < 1e-3 {
            break;
        }
    }
    best
}

impl DraftPolicy for FailFast {
    fn name(&self) -> &str {
        &self.name
    }

    fn begin(&mut self, prompt: &[Token]) {
        for s in &mut self.slots {
            s.drafter.begin(prompt);
            s.request.reset();
            s.since_run = 0;
        }
        self.guard = Guard::default();
        self.chosen = None;
        self.longest_run = 0;
    }

    fn feature_layers(&self) -> &[usize] {
        &self.layers
    }

    fn observe(&mut self, pos0: usize, features: &[f32]) {
        for s in self.slots.iter_mut().filter(|s| s.costly) {
            s.drafter.observe(pos0, features);
        }
    }

    fn draft(&mut self, history: &[Token], max: usize, sampling: &SamplingConfig, out: &mut Draft) {
        self.chosen = None;
        self.round_draft_secs = 0.0;
        if self.cap.min(max) == 0 || self.guard.paused() {
            return;
        }
        let mut mem = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        // Trust region: a draft at most twice as long as the longest run this request has
        // had accepted (at least 2), or any draft whose whole rejection costs at most one more step
        // (C(k+1) ≤ 2 C(1)). Estimates for deep positions rest on little data, and on a
        // CPU a long rejected draft costs several steps; on a flat (GPU) curve the second
        // bound lets long drafts through from the start.
        let cheap = (1..=self.cap)
            .take_while(|&k| mem.cost.cost(k + 1) <= 2.0 * mem.cost.step())
            .last()
            .unwrap_or(0);
        let cap = self
            .cap
            .min(max)
            .min((2 * self.longest_run).max(cheap).max(2));
        let plain = 1.0 / mem.cost.step();
        // (slot, k, expected rate with sunk drafting costs not charged)
        let mut best: (Option<usize>, usize, f64) = (None, 0, plain * MIN_GAIN);
        // Slots are in order, free drafters first (see `new`).
        for i in 0..self.slots.len() {
            let s = &mut self.slots[i];
            let name = s.drafter.name().to_string();
            let dm = mem.drafter(&name, s.evidence).clone();
            if s.costly {
                s.since_run += 1;
                let hoped = dm.value * plain;
                if hoped <= best.2 && s.since_run < dm.probe_gap {
                    continue;
                }
            }
            s.draft.clear();
            let t0 = Instant::now();
            s.drafter.draft(history, cap, sampling, &mut s.draft);
            let secs = t0.elapsed().as_secs_f64();
            self.round_draft_secs += secs;
            let (k, rate) = best_length(&s.draft, &s.request, &dm.table, &mem.cost, cap, 0.0);
            if s.costly {
                s.since_run = 0;
                let d_secs = if dm.secs == 0.0 {
                    secs
                } else {
                    dm.secs + 0.2 * (secs - dm.secs)
                };
                // Its value had it been chosen with its cost charged: what decides whether
                // running it next round is worth it.
                let (_, charged) =
                    best_length(&s.draft, &s.request, &dm.table, &mem.cost, cap, d_secs);
                let v = charged / plain;
                let m = mem.drafter(&name, s.evidence);
                m.secs = d_secs;
                m.value += 0.3 * (v - m.value);
                m.probe_gap = if v >= 1.0 {
                    PROBE_MIN
                } else {
                    (m.probe_gap * 2).min(PROBE_MAX)
                };
            }
            if k > 0 && rate > best.2 {
                best = (Some(i), k, rate);
            }
        }
        if self.trace {
            eprintln!(
                "policy: plain {:.1} ms, best {:?} k={} rate×{:.2}",
                1e3 / plain,
                best.0.map(|i| self.slots[i].drafter.name()),
                best.1,
                best.2 / plain
            );
        }
        if let (Some(i), k) = (best.0, best.1) {
            let d = &self.slots[i].draft;
            out.tokens.extend_from_slice(&d.tokens[..k]);
            out.q.extend_from_slice(&d.q[..k]);
            out.confidence.extend_from_slice(&d.confidence[..k]);
            out.match_len = d.match_len;
            out.seen = d.seen;
            self.chosen = Some(i);
        }
    }

    fn outcome(&mut self, draft: &Draft, o: Outcome) {
        let mut mem = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        if self.trace {
            eprintln!(
                "  outcome: {}/{} accepted, verify {:.1} ms (model {:.1} ms), draft {:.2} ms",
                o.accepted,
                o.drafted,
                o.verify.as_secs_f64() * 1e3,
                mem.cost.cost(o.batch) * 1e3,
                self.round_draft_secs * 1e3
            );
        }
        mem.cost.observe(o.batch, o.verify.as_secs_f64());
        self.longest_run = self.longest_run.max(o.accepted);
        if let Some(i) = self.chosen {
            let s = &mut self.slots[i];
            s.request.record(draft, o.drafted, o.accepted, None);
            let name = s.drafter.name().to_string();
            mem.drafter(&name, s.evidence)
                .table
                .record_model(draft, o.drafted, o.accepted);
            s.drafter.accept(o.accepted);
        }
        let secs = o.verify.as_secs_f64() + self.round_draft_secs;
        let plain = 1.0 / mem.cost.step();
        self.guard.record(
            o.committed,
            secs,
            o.drafted > 0 || self.round_draft_secs > 0.0,
            plain,
        );
    }
}

/// Realised-throughput guard: over windows of rounds that spent anything on drafting, if
/// tokens per second fall below [`GUARD_FLOOR`] × plain decoding's, drafting pauses for a
/// while (doubling while it keeps failing), then resumes as a probe.
#[derive(Debug)]
struct Guard {
    tokens: usize,
    secs: f64,
    rounds: usize,
    pause: usize,
    paused_for: usize,
}

impl Default for Guard {
    fn default() -> Self {
        Self {
            tokens: 0,
            secs: 0.0,
            rounds: 0,
            pause: PROBE_MIN,
            paused_for: 0,
        }
    }
}

impl Guard {
    /// Whether this round is a plain step imposed by the guard (counts the round).
    fn paused(&mut self) -> bool {
        if self.paused_for > 0 {
            self.paused_for -= 1;
            true
        } else {
            false
        }
    }

    fn record(&mut self, tokens: usize, secs: f64, spent: bool, plain_rate: f64) {
        if !spent {
            return;
        }
        self.tokens += tokens;
        self.secs += secs;
        self.rounds += 1;
        if self.rounds < GUARD_WINDOW {
            return;
        }
        if (self.tokens as f64) < GUARD_FLOOR * plain_rate * self.secs {
            self.paused_for = self.pause;
            self.pause = (self.pause * 2).min(PROBE_MAX);
        } else {
            self.pause = PROBE_MIN;
        }
        (self.tokens, self.secs, self.rounds) = (0, 0.0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Proposes a fixed continuation with a given match evidence.
    struct Scripted {
        tokens: Vec<Token>,
        match_len: usize,
        seen: usize,
    }

    impl Drafter for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }
        fn draft(&mut self, _h: &[Token], max: usize, _s: &SamplingConfig, out: &mut Draft) {
            for &t in self.tokens.iter().take(max) {
                out.push_point(t);
            }
            out.match_len = self.match_len;
            out.seen = self.seen;
        }
    }

    fn cpu_curve() -> CostModel {
        // A 2-core SmolLM2-like curve: a second row costs 0.8 of a step.
        CostModel::relative(0.01, &[1.0, 1.8, 2.1, 2.6, 3.1, 3.9, 4.2, 4.3, 4.3])
    }

    fn policy(curve: CostModel, match_len: usize, seen: usize) -> FailFast {
        let d = Scripted {
            tokens: (1..=8).collect(),
            match_len,
            seen,
        };
        FailFast::new(vec![Box::new(d)], 8, PolicyMemory::shared(curve))
    }

    fn round(p: &mut FailFast, accepted: usize) -> usize {
        let mut out = Draft::default();
        p.draft(&[0], 8, &SamplingConfig::greedy(), &mut out);
        let k = out.len();
        // The verify time the curve predicts, so the online refresh leaves it as it is.
        let secs = p.memory.lock().unwrap().cost.cost(k + 1);
        let o = Outcome {
            drafted: k,
            accepted: accepted.min(k),
            batch: k + 1,
            committed: accepted.min(k) + 1,
            verify: Duration::from_secs_f64(secs),
        };
        p.outcome(&out, o);
        k
    }

    #[test]
    fn a_weak_match_on_a_steep_curve_is_not_verified_a_strong_one_is() {
        let mut weak = policy(cpu_curve(), 2, 1);
        assert_eq!(round(&mut weak, 0), 0);
        let mut strong = policy(cpu_curve(), 4, 5);
        assert!(round(&mut strong, 8) > 0);
    }

    #[test]
    fn fails_fast_after_rejections_and_wins_big_after_acceptances() {
        let mut p = policy(cpu_curve(), 4, 5);
        for _ in 0..20 {
            round(&mut p, 0);
        }
        assert_eq!(round(&mut p, 0), 0, "rejected drafts stop being verified");
        let mut q = policy(cpu_curve(), 4, 5);
        for _ in 0..20 {
            round(&mut q, 8);
        }
        assert_eq!(round(&mut q, 8), 8, "accepted drafts grow to the cap");
    }

    #[test]
    fn a_flat_cost_curve_drafts_long_even_when_unsure() {
        // GPU-like: a batch of 9 costs about one step.
        let flat =
            CostModel::relative(0.01, &[1.0, 1.02, 1.03, 1.04, 1.05, 1.06, 1.07, 1.08, 1.09]);
        let mut p = policy(flat, 2, 1);
        assert!(round(&mut p, 1) >= 4);
    }

    #[test]
    fn the_guard_pauses_drafting_when_realised_speed_falls_behind() {
        let mut g = Guard::default();
        for _ in 0..GUARD_WINDOW {
            g.record(1, 0.02, true, 100.0); // 50 tokens/s vs plain 100
        }
        assert!(g.paused());
        let mut ok = Guard::default();
        for _ in 0..GUARD_WINDOW {
            ok.record(3, 0.02, true, 100.0);
        }
        assert!(!ok.paused());
    }
}
