//! The oracle: replays the target's own recorded greedy continuation at zero drafting
//! cost. Its speedup is the ceiling of speculative decoding for a model on a machine.

use super::{Draft, Drafter};
use crate::llama::Token;
use crate::sampling::SamplingConfig;

/// Drafter that replays a recorded greedy continuation (the speedup ceiling).
#[derive(Debug, Clone)]
pub struct OracleDrafter {
    reference: Vec<Token>,
    prompt_len: usize,
    /// Fault injection (tests): replace the token at this draft offset with a wrong one.
    pub corrupt_at: Option<usize>,
}

impl OracleDrafter {
    /// `reference`: the target's greedy continuation of a prompt of `prompt_len` tokens.
    pub fn new(reference: Vec<Token>, prompt_len: usize) -> Self {
        Self {
            reference,
            prompt_len,
            corrupt_at: None,
        }
    }
}

impl Drafter for OracleDrafter {
    fn name(&self) -> &str {
        "oracle"
    }

    fn draft(&mut self, history: &[Token], max: usize, _s: &SamplingConfig, out: &mut Draft) {
        let done = history.len().saturating_sub(self.prompt_len);
        // Once the run has left the reference (a near-tie flipped) there is nothing to replay.
        if done > self.reference.len() || history[self.prompt_len..] != self.reference[..done] {
            return;
        }
        for (i, &t) in self.reference[done..].iter().take(max).enumerate() {
            let t = if Some(i) == self.corrupt_at {
                if t == 0 { 1 } else { t - 1 }
            } else {
                t
            };
            out.push_point(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_the_rest_of_the_reference() {
        let mut o = OracleDrafter::new(vec![5, 6, 7, 8], 2);
        let mut d = Draft::default();
        o.draft(&[1, 2, 5], 2, &SamplingConfig::greedy(), &mut d);
        assert_eq!(d.tokens, vec![6, 7]);
        d.clear();
        o.corrupt_at = Some(0);
        o.draft(&[1, 2, 5, 6], 8, &SamplingConfig::greedy(), &mut d);
        assert_eq!(d.tokens, vec![6, 8]);
        d.clear();
        o.draft(&[1, 2, 9], 2, &SamplingConfig::greedy(), &mut d); // diverged
        assert!(d.is_empty());
    }
}
