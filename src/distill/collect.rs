//! `tandem distill collect`: the target writes its own continuations; its features are
//! recorded from the same decodes.

use std::collections::HashSet;
use std::path::Path;

use super::shards::{DistillMeta, Record, ShardError, Shards};
use crate::draft::{Draft, Drafter};
use crate::engine::{self, EngineConfig, EngineError};
use crate::llama::{Context, TargetError, Token};

/// Settings of a collection run. Plain data.
#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// Tokens generated per prompt (greedy).
    pub max_new: usize,
    /// Target layers whose inputs are stored (llama.cpp layer-input indices).
    pub target_layers: Vec<usize>,
    /// Stop after this many prompts in this run (0 = all).
    pub limit: usize,
}

/// What a collection run did.
#[derive(Debug, Clone, Default)]
pub struct CollectSummary {
    /// Prompts already in the shards when the run started.
    pub prompts_done_before: usize,
    /// Prompts collected in this run.
    pub prompts_collected: usize,
    /// Prompts skipped in this run: (prompt index, reason).
    pub prompts_skipped: Vec<(usize, String)>,
    /// Tokens recorded in this run, prompts and continuations.
    pub tokens_collected: usize,
    /// Wall time of the run (seconds).
    pub seconds: f64,
}

/// Why a collection run failed.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// Reading or writing the shards failed.
    #[error(transparent)]
    Shards(#[from] ShardError),
    /// Generation failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// llama.cpp failed (e.g. the feature layers were refused).
    #[error(transparent)]
    Target(#[from] TargetError),
}

/// Prompts from a file: JSON lines with a `"prompt"` field (the bench format), or plain
/// text, one prompt per line.
pub fn load_prompt_texts(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            if l.trim_start().starts_with('{') {
                let v: serde_json::Value = serde_json::from_str(l)
                    .map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
                v.get("prompt")
                    .and_then(|p| p.as_str())
                    .map(str::to_string)
                    .ok_or_else(|| format!("{}:{}: no \"prompt\" string", path.display(), i + 1))
            } else {
                Ok(l.to_string())
            }
        })
        .collect()
}

/// Records the features the engine hands a drafter, and drafts nothing: plain decoding
/// whose decodes also capture the conditioning layers.
struct Recorder {
    layers: Vec<usize>,
    /// Features per position (all layers).
    width: usize,
    features: Vec<f32>,
    next: usize,
}

impl Drafter for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    fn begin(&mut self, _prompt: &[Token]) {
        self.features.clear();
        self.next = 0;
    }
    fn feature_layers(&self) -> &[usize] {
        &self.layers
    }
    fn observe(&mut self, pos0: usize, features: &[f32]) {
        assert_eq!(pos0, self.next, "features arrive in order");
        self.features.extend_from_slice(features);
        self.next = pos0 + features.len() / self.width;
    }
    fn draft(
        &mut self,
        _h: &[Token],
        _max: usize,
        _s: &crate::sampling::SamplingConfig,
        _out: &mut Draft,
    ) {
    }
}

/// Collect continuations of `prompts` (already tokenized; `Err` = skip with that reason)
/// into `out`, skipping prompts collected before. `progress(done, total, tokens)` is
/// called after each prompt.
pub fn collect(
    ctx: &mut Context,
    prompts: &[Result<Vec<Token>, String>],
    out: &Path,
    opts: &CollectOptions,
    progress: &mut dyn FnMut(usize, usize, usize),
) -> Result<CollectSummary, CollectError> {
    let t0 = std::time::Instant::now();
    let model = ctx.model().clone();
    // The context's own check of the layers, before anything is written.
    ctx.set_feature_layers(&opts.target_layers)?;
    let meta = DistillMeta {
        format: "tandem-distill-v1".into(),
        model: Path::new(model.path())
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        n_vocab: model.n_vocab(),
        n_embd: model.n_embd(),
        target_layers: opts.target_layers.clone(),
        n_features: model.n_embd() * opts.target_layers.len(),
        max_new: opts.max_new,
    };
    let nf = meta.n_features;
    let mut shards = Shards::open(out, meta)?;
    let done: HashSet<usize> = shards.done();
    let mut summary = CollectSummary {
        prompts_done_before: done.len(),
        ..CollectSummary::default()
    };
    let mut todo: Vec<usize> = (0..prompts.len()).filter(|i| !done.contains(i)).collect();
    if opts.limit > 0 {
        todo.truncate(opts.limit);
    }
    let cfg = EngineConfig {
        draft_max: 0,
        ..EngineConfig::default()
    };
    let mut rec = Recorder {
        layers: opts.target_layers.clone(),
        width: nf,
        features: Vec::new(),
        next: 0,
    };
    for (k, &i) in todo.iter().enumerate() {
        let prompt = match &prompts[i] {
            Ok(p) if !p.is_empty() && p.len() + opts.max_new < ctx.n_ctx() => p,
            Ok(p) => {
                summary.prompts_skipped.push((
                    i,
                    format!(
                        "{} prompt tokens + {} new do not fit the context of {}",
                        p.len(),
                        opts.max_new,
                        ctx.n_ctx()
                    ),
                ));
                continue;
            }
            Err(e) => {
                summary.prompts_skipped.push((i, e.clone()));
                continue;
            }
        };
        let g = engine::generate(ctx, &mut rec, prompt, opts.max_new, &cfg, &mut |_| true)?;
        let mut tokens = prompt.clone();
        tokens.extend_from_slice(&g.tokens);
        // Every position but the last was decoded, so has features.
        let rows = tokens.len() - 1;
        debug_assert!(rec.features.len() >= rows * nf);
        rec.features.truncate(rows * nf);
        shards.append(&Record {
            prompt_index: i,
            n_prompt: prompt.len(),
            tokens,
            features: std::mem::take(&mut rec.features),
        })?;
        summary.prompts_collected += 1;
        summary.tokens_collected += g.tokens.len() + prompt.len();
        progress(k + 1, todo.len(), summary.tokens_collected);
    }
    summary.seconds = t0.elapsed().as_secs_f64();
    Ok(summary)
}
