//! Calibrated acceptance: online tables that turn what a drafter says about a token (its
//! confidence, or an n-gram's match length and sightings) and the token's place in the
//! draft into the probability that the target accepts it, given that it accepted
//! everything before it.
//!
//! Two levels: a per-model table that outlives requests, and a per-request table whose
//! counts outweigh the model's after a few outcomes (text within one answer is more alike
//! than text across answers). Positions after the first rejection are censored: the target
//! never judged them, so they count neither way.

use crate::draft::Draft;

/// Draft positions grouped: 1, 2, 3–4, 5–8, 9+ (0-based index → bucket).
pub const POS_BUCKETS: usize = 5;

/// The bucket of 0-based draft position `i`.
pub fn pos_bucket(i: usize) -> usize {
    match i {
        0 => 0,
        1 => 1,
        2 | 3 => 2,
        4..=7 => 3,
        _ => 4,
    }
}

/// Confidence bins of model-based drafters (top probability in tenths).
const CONF_BINS: usize = 10;
/// N-gram keys: match length 1, 2, 3, 4–5, 6–9, 10+ × continuation seen once / more.
const NGRAM_KEYS: usize = 12;
const LEN_BUCKETS: [usize; 6] = [1, 2, 3, 4, 6, 10];

/// What kind of evidence a drafter reports, hence how its tokens are keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// Lookup drafts: keyed by match length and sightings.
    Lookup,
    /// Model drafts: keyed by the drafter's confidence.
    Confidence,
}

impl Evidence {
    fn n_keys(self) -> usize {
        match self {
            Evidence::Lookup => NGRAM_KEYS,
            Evidence::Confidence => CONF_BINS,
        }
    }

    /// The key of the draft's token `i`.
    pub fn key(self, d: &Draft, i: usize) -> usize {
        match self {
            Evidence::Lookup => {
                let len = LEN_BUCKETS
                    .iter()
                    .rposition(|&b| d.match_len >= b)
                    .unwrap_or(0);
                len * 2 + usize::from(d.seen >= 2)
            }
            Evidence::Confidence => {
                let c = d.confidence.get(i).copied().unwrap_or(0.0);
                ((c.clamp(0.0, 1.0) * CONF_BINS as f32) as usize).min(CONF_BINS - 1)
            }
        }
    }

    /// Prior acceptance of a cell, before any outcome: an n-gram continuation is more
    /// likely right the longer the match and the more often it was seen; a model's token
    /// about as likely as its confidence says, discounted (small drafters are
    /// over-confident). Later positions are conditional on the earlier ones having been
    /// accepted, which makes them likelier.
    fn prior(self, key: usize, bucket: usize) -> f64 {
        let first = match self {
            Evidence::Lookup => {
                let by_len = [0.15, 0.3, 0.4, 0.5, 0.6, 0.7][key / 2];
                by_len + if key % 2 == 1 { 0.15 } else { 0.0 }
            }
            Evidence::Confidence => 0.8 * (key as f64 + 0.5) / CONF_BINS as f64,
        };
        if bucket == 0 {
            first
        } else {
            first + (0.85 - first).max(0.0) * 0.4
        }
    }
}

/// Counts of one drafter's outcomes: accepted and judged, per (key, position bucket).
#[derive(Debug, Clone)]
pub struct Table {
    evidence: Evidence,
    acc: Vec<f64>,
    n: Vec<f64>,
}

/// Prior strength of a model-level cell (pseudo-outcomes).
const PRIOR_WEIGHT: f64 = 4.0;
/// How many request-level outcomes weigh as much as the model-level estimate.
const REQUEST_WEIGHT: f64 = 6.0;
/// Model-level counts are scaled down beyond this many outcomes per cell, so the table
/// keeps following the text it sees.
const MODEL_CAP: f64 = 400.0;

impl Table {
    /// An empty table for a drafter with this kind of evidence.
    pub fn new(evidence: Evidence) -> Self {
        let cells = evidence.n_keys() * POS_BUCKETS;
        Self {
            evidence,
            acc: vec![0.0; cells],
            n: vec![0.0; cells],
        }
    }

    /// The kind of evidence this table keys on.
    pub fn evidence(&self) -> Evidence {
        self.evidence
    }

    fn cell(&self, key: usize, i: usize) -> usize {
        key * POS_BUCKETS + pos_bucket(i)
    }

    /// Forget every outcome (a new request).
    pub fn reset(&mut self) {
        self.acc.iter_mut().for_each(|v| *v = 0.0);
        self.n.iter_mut().for_each(|v| *v = 0.0);
    }

    /// Record a verified draft of `judged` tokens of which the first `accepted` were kept.
    /// Tokens after the first rejection are censored.
    pub fn record(&mut self, d: &Draft, judged: usize, accepted: usize, cap: Option<f64>) {
        for i in 0..judged.min(accepted + 1).min(d.len()) {
            let c = self.cell(self.evidence.key(d, i), i);
            self.n[c] += 1.0;
            if i < accepted {
                self.acc[c] += 1.0;
            }
            if let Some(cap) = cap
                && self.n[c] > cap
            {
                let s = cap / self.n[c];
                self.n[c] *= s;
                self.acc[c] *= s;
            }
        }
    }

    /// Record into a model-level table (counts capped so it keeps adapting).
    pub fn record_model(&mut self, d: &Draft, judged: usize, accepted: usize) {
        self.record(d, judged, accepted, Some(MODEL_CAP));
    }

    /// Estimated probability that token `i` of `d` is accepted given the earlier ones
    /// were: the request's outcomes in this cell, shrunk towards the model's estimate,
    /// itself shrunk towards the prior. Optimistic only at the first position (below):
    /// an over-estimate further in costs a long verify batch that does not pay.
    /// `self` is the request's table, `model` the model's.
    pub fn estimate(&self, model: &Table, d: &Draft, i: usize) -> f64 {
        let key = self.evidence.key(d, i);
        let bucket = pos_bucket(i);
        let mut m = self.evidence.prior(key, 0);
        let mut r = 0.0;
        for b in 0..=bucket {
            let c = key * POS_BUCKETS + b;
            // A cell with few outcomes leans on its prior. For lookups the prior of a
            // deeper position is at least the estimate of the position before it: a copy
            // that has held so far tends to go on holding, and without this a drafter
            // accepted in full at its first positions would never be tried further in
            // ("win big" could not emerge).
            let prior = match (self.evidence, b) {
                (_, 0) | (Evidence::Confidence, _) => self.evidence.prior(key, b),
                (Evidence::Lookup, _) => self.evidence.prior(key, b).max(m),
            };
            m = (model.acc[c] + PRIOR_WEIGHT * prior) / (model.n[c] + PRIOR_WEIGHT);
            let lean = match (self.evidence, b) {
                (Evidence::Lookup, b) if b > 0 => m.max(r),
                _ => m,
            };
            r = (self.acc[c] + REQUEST_WEIGHT * lean) / (self.n[c] + REQUEST_WEIGHT);
        }
        let c = key * POS_BUCKETS + bucket;
        // The first position alone gets an exploration bonus of one standard error of the
        // request's estimate: a one-token probe is the cheapest way to learn that this
        // request's text repeats (translation, extraction) when the priors say it rarely
        // does; the bonus vanishes as the request's outcomes accumulate.
        let bonus = if i == 0 {
            (r * (1.0 - r) / (self.n[c] + REQUEST_WEIGHT)).sqrt()
        } else {
            0.0
        };
        (r + bonus).min(0.999)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(len: usize, match_len: usize, seen: usize) -> Draft {
        let mut d = Draft::default();
        for t in 0..len {
            d.push_point(t as i32);
        }
        d.match_len = match_len;
        d.seen = seen;
        d
    }

    #[test]
    fn outcomes_after_the_first_rejection_are_censored() {
        let mut t = Table::new(Evidence::Lookup);
        let d = lookup(6, 3, 1);
        t.record(&d, 6, 1, None);
        let key = Evidence::Lookup.key(&d, 0);
        // Position 0 accepted, position 1 rejected, positions 2.. never judged.
        assert_eq!((t.acc[t.cell(key, 0)], t.n[t.cell(key, 0)]), (1.0, 1.0));
        assert_eq!((t.acc[t.cell(key, 1)], t.n[t.cell(key, 1)]), (0.0, 1.0));
        assert_eq!(t.n[t.cell(key, 2)] + t.n[t.cell(key, 4)], 0.0);
    }

    #[test]
    fn estimates_follow_outcomes_and_stronger_evidence_starts_higher() {
        let model = Table::new(Evidence::Lookup);
        let mut req = Table::new(Evidence::Lookup);
        let weak = lookup(1, 2, 1);
        let strong = lookup(1, 4, 3);
        assert!(req.estimate(&model, &strong, 0) > req.estimate(&model, &weak, 0));
        let before = req.estimate(&model, &weak, 0);
        for _ in 0..30 {
            req.record(&weak, 1, 0, None);
        }
        let after = req.estimate(&model, &weak, 0);
        assert!(after < before / 3.0, "{before} → {after}");
        for _ in 0..60 {
            req.record(&weak, 1, 1, None);
        }
        assert!(req.estimate(&model, &weak, 0) > 0.6);
    }

    #[test]
    fn model_counts_are_capped() {
        let mut t = Table::new(Evidence::Confidence);
        let mut d = Draft::default();
        d.push_point(1);
        for _ in 0..1000 {
            t.record_model(&d, 1, 1);
        }
        let c = t.cell(Evidence::Confidence.key(&d, 0), 0);
        assert!(t.n[c] <= MODEL_CAP + 1e-9);
    }
}
