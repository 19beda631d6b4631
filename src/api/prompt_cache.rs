//! The prompt cache: after a generation the context keeps its KV cells, and the next
//! request reuses the longest common token prefix (llama-server's `cache_prompt`): a
//! multi-turn conversation re-sends its whole history every turn, and on a CPU
//! re-processing it costs more than speculation saves. The context's own cache is the
//! live slot; a request that would overwrite a conversation of some length first saves
//! its cells (and the drafter features of its positions) to one of a few saved slots,
//! least recently used evicted first within a byte budget, so that alternating
//! conversations each find their history again.

use super::{Finish, FinishReason};
use crate::draft::Draft;
use crate::engine::{DraftPolicy, Outcome};
use crate::llama::{Context, TargetError, Token};
use crate::sampling::SamplingConfig;

/// A conversation worth saving before it is overwritten has at least this many tokens.
const SAVE_MIN: usize = 64;
/// Restoring a saved slot pays when it reuses this many more tokens than the live one.
const SWITCH_MIN: usize = 32;

/// The prompt cache: the live slot (what the context holds) and saved slots.
#[derive(Debug)]
pub(super) struct PromptCache {
    live: Entry,
    saved: Vec<Saved>,
    /// Conversations kept in all, the live one included (1: the live one only).
    slots: usize,
    /// Bytes the saved slots may take.
    max_bytes: usize,
    clock: u64,
}

#[derive(Debug)]
struct Saved {
    entry: Entry,
    cells: Vec<u8>,
    used: u64,
}

impl Saved {
    fn bytes(&self) -> usize {
        self.cells.len() + 4 * self.entry.features.len() + 4 * self.entry.tokens.len()
    }
}

impl Default for PromptCache {
    fn default() -> Self {
        Self::new(1, 0)
    }
}

impl PromptCache {
    /// A cache keeping `slots` conversations (≥ 1: the live one), the saved ones within
    /// `max_bytes`.
    pub fn new(slots: usize, max_bytes: usize) -> Self {
        Self {
            live: Entry::default(),
            saved: Vec::new(),
            slots: slots.max(1),
            max_bytes,
            clock: 0,
        }
    }

    /// Prepare the context for `prompt`: restore the saved slot that reuses the most of
    /// it when that beats the live one, saving the live conversation first when it is
    /// about to be overwritten. Returns how many prompt tokens the context now holds for
    /// reuse (see [`Entry::reusable`]).
    pub fn prepare(
        &mut self,
        ctx: &mut Context,
        prompt: &[Token],
        layers: &[usize],
        nf: usize,
    ) -> Result<usize, TargetError> {
        self.clock += 1;
        // On a GPU, a change of the captured layers creates the context anew (see
        // `Context::set_feature_layers`): the live conversation's cells are gone with it.
        if ctx.set_feature_layers(layers)? {
            self.live = Entry::default();
        }
        let live = self.live.reusable(prompt, layers, nf);
        let best = self
            .saved
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.entry.reusable(prompt, layers, nf)))
            .max_by_key(|&(_, n)| n);
        let switch = best.filter(|&(_, n)| n >= live + SWITCH_MIN);
        // The live conversation is about to be overwritten: keep it.
        if self.slots > 1
            && (switch.is_some() || live + SWITCH_MIN < self.live.tokens.len())
            && self.live.tokens.len() >= SAVE_MIN
        {
            let cells = ctx.save_cells();
            // Switching replaces the live slot; otherwise the context keeps its cells
            // (the request reuses a prefix of them) and the live slot stays as it is.
            let entry = if switch.is_some() {
                std::mem::take(&mut self.live)
            } else {
                self.live.clone()
            };
            self.saved.push(Saved {
                entry,
                cells,
                used: self.clock,
            });
        }
        let reuse = match switch {
            Some((i, n)) => {
                let s = self.saved.swap_remove(i);
                if let Err(e) = ctx.restore_cells(&s.cells) {
                    self.live = Entry::default();
                    return Err(e);
                }
                self.live = s.entry;
                n
            }
            None => live,
        };
        self.evict();
        Ok(reuse)
    }

    /// Drop least recently used saved slots beyond the slot count or the byte budget.
    fn evict(&mut self) {
        self.saved.sort_by_key(|s| std::cmp::Reverse(s.used));
        let mut bytes = 0;
        let mut keep = 0;
        for s in &self.saved {
            if keep + 1 >= self.slots || bytes + s.bytes() > self.max_bytes {
                break;
            }
            bytes += s.bytes();
            keep += 1;
        }
        self.saved.truncate(keep);
    }
}

/// What one slot holds: tokens whose KV cells it has, and the drafter features of them.
#[derive(Debug, Default, Clone)]
struct Entry {
    /// Tokens whose KV cells the context holds, positions 0.. in order.
    tokens: Vec<Token>,
    /// Feature layers of `features`.
    layers: Vec<usize>,
    /// Drafter features of the first positions of `tokens` (row-major, `nf` a row).
    features: Vec<f32>,
    nf: usize,
}

/// Length of the common prefix of two token lists.
fn common_prefix(a: &[Token], b: &[Token]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl Entry {
    /// How many leading tokens of `prompt` can be reused by a policy conditioned on
    /// `layers` (`nf` features per position): the common prefix, within the positions
    /// whose features are kept when features are wanted, never the whole prompt (its
    /// last token is decoded for its logits).
    fn reusable(&self, prompt: &[Token], layers: &[usize], nf: usize) -> usize {
        let mut n = common_prefix(&self.tokens, prompt);
        if !layers.is_empty() {
            n = if layers == self.layers {
                n.min(self.features.len() / nf.max(1))
            } else {
                0
            };
        }
        n.min(prompt.len().saturating_sub(1))
    }
}

impl PromptCache {
    /// How many leading tokens of `prompt` the live slot can give (without switching).
    #[cfg(test)]
    fn reusable(&self, prompt: &[Token], layers: &[usize], nf: usize) -> usize {
        self.live.reusable(prompt, layers, nf)
    }

    /// Forget the live conversation (the caller clears the context); saved slots stay.
    pub fn forget(&mut self) {
        self.live.tokens.clear();
        self.live.features.clear();
    }

    /// Start a request that reuses `reuse` tokens with a policy on `layers`: the kept
    /// features beyond `reuse` (or all, for other layers) are dropped, and the policy is
    /// wrapped so that it gets the kept features at its start and records the new ones.
    pub fn begin<'a>(
        &'a mut self,
        policy: Box<dyn DraftPolicy + 'a>,
        layers: &[usize],
        nf: usize,
        reuse: usize,
    ) -> Recall<'a> {
        let e = &mut self.live;
        if layers != e.layers || nf != e.nf {
            e.layers = layers.to_vec();
            e.nf = nf;
            e.features.clear();
        }
        Recall {
            inner: policy,
            features: &mut e.features,
            nf,
            reuse,
        }
    }

    /// The generation ended with the context holding `kv_len` positions of
    /// `prompt + generated`: remember them (the caller cuts the context to the returned
    /// length, dropping any cell past what was committed).
    pub fn end(&mut self, prompt: &[Token], generated: &[Token], kv_len: usize) -> usize {
        let e = &mut self.live;
        e.tokens.clear();
        e.tokens.extend_from_slice(prompt);
        e.tokens.extend_from_slice(generated);
        e.tokens.truncate(kv_len);
        let n = e.tokens.len();
        e.features.truncate(n * e.nf);
        n
    }
}

/// A policy that is handed the cached features at its start and whose features are
/// recorded for the next request.
pub(super) struct Recall<'a> {
    inner: Box<dyn DraftPolicy + 'a>,
    features: &'a mut Vec<f32>,
    nf: usize,
    reuse: usize,
}

impl DraftPolicy for Recall<'_> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn begin(&mut self, prompt: &[Token]) {
        self.inner.begin(prompt);
        if self.nf == 0 {
            self.features.clear();
            return;
        }
        self.features.truncate(self.reuse * self.nf);
        if self.reuse > 0 {
            self.inner.observe(0, self.features);
        }
    }
    fn feature_layers(&self) -> &[usize] {
        self.inner.feature_layers()
    }
    fn observe(&mut self, pos0: usize, features: &[f32]) {
        if self.nf > 0 && self.features.len() >= pos0 * self.nf {
            self.features.truncate(pos0 * self.nf);
            self.features.extend_from_slice(features);
        }
        self.inner.observe(pos0, features)
    }
    fn draft(&mut self, history: &[Token], max: usize, sampling: &SamplingConfig, out: &mut Draft) {
        self.inner.draft(history, max, sampling, out)
    }
    fn outcome(&mut self, draft: &Draft, o: Outcome) {
        self.inner.outcome(draft, o)
    }
}

/// Whether a finished generation's cells are kept: not a cancelled one (its client is
/// gone; the cells are freed at once, as before the cache).
pub(super) fn keepable(f: &Finish) -> bool {
    f.reason != FinishReason::Cancelled
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::draft::NoDrafter;
    use crate::engine::FixedPolicy;

    #[test]
    fn reuse_is_the_common_prefix_within_the_kept_features() {
        let mut c = PromptCache::default();
        assert_eq!(c.reusable(&[1, 2, 3], &[], 0), 0);
        // A generation over [1, 2, 3] + [4, 5] left 4 positions in the KV cache.
        {
            let mut r = c.begin(Box::new(FixedPolicy::new(NoDrafter, 0)), &[7], 2, 0);
            r.begin(&[1, 2, 3]);
            r.observe(0, &[0.0; 6]);
            r.observe(3, &[1.0; 2]);
        }
        assert_eq!(c.end(&[1, 2, 3], &[4, 5], 4), 4);
        // Next turn: the history plus more.
        assert_eq!(c.reusable(&[1, 2, 3, 4, 5, 6], &[], 0), 4);
        assert_eq!(c.reusable(&[1, 2, 3, 4, 5, 6], &[7], 2), 4);
        // Other layers: no features, no reuse for a policy that wants them.
        assert_eq!(c.reusable(&[1, 2, 3, 4, 5, 6], &[8], 2), 0);
        // A different start, or the same prompt (its last token is decoded again).
        assert_eq!(c.reusable(&[9, 2, 3], &[], 0), 0);
        assert_eq!(c.reusable(&[1, 2, 3, 4], &[], 0), 3);
        // A policy reusing 3 positions gets their features first.
        struct Spy(Vec<(usize, usize)>);
        impl crate::draft::Drafter for Spy {
            fn name(&self) -> &str {
                "spy"
            }
            fn observe(&mut self, pos0: usize, f: &[f32]) {
                self.0.push((pos0, f.len()));
            }
            fn draft(&mut self, _: &[Token], _: usize, _: &SamplingConfig, _: &mut Draft) {}
        }
        let mut spy = Spy(Vec::new());
        {
            let mut r = c.begin(Box::new(FixedPolicy::new(&mut spy, 4)), &[7], 2, 3);
            r.begin(&[1, 2, 3, 4, 5, 6]);
            r.observe(3, &[2.0; 6]);
        }
        assert_eq!(spy.0, vec![(0, 6), (3, 6)]);
        assert_eq!(c.end(&[1, 2, 3, 4, 5, 6], &[], 6), 6);
        assert_eq!(c.reusable(&[1, 2, 3, 4, 5, 6, 7], &[7], 2), 6);
        c.forget();
        assert_eq!(c.reusable(&[1, 2, 3], &[], 0), 0);
    }
}
