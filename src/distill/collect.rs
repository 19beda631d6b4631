//! `tandem distill collect`: the target reads each prompt (teacher forcing: one batched
//! prefill gives features and next-token distributions at every prompt position) and
//! writes its own greedy continuation; the features and soft labels of the continuation
//! come from the same decodes.

use std::collections::HashSet;
use std::path::Path;

use super::shards::{DistillMeta, Record, ShardError, Shards};
use crate::llama::{Context, Outputs, TargetError, Token};
use crate::sampling::argmax;

/// Settings of a collection run. Plain data.
#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// Tokens generated per prompt (greedy; 0 = teacher forcing over the prompt text only).
    pub max_new: usize,
    /// Soft labels per position: the target's top `top_k` next-token probabilities.
    pub top_k: usize,
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

/// The target's `k` most likely next tokens and their probabilities (full-vocabulary
/// softmax) from one row of logits, most likely first, appended to `ids`/`ps`.
pub fn top_k_probs(logits: &[f32], k: usize, ids: &mut Vec<Token>, ps: &mut Vec<f32>) {
    if k == 0 {
        return;
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let z: f64 = logits.iter().map(|&x| ((x - max) as f64).exp()).sum();
    // A small sorted list (descending): one comparison per logit once it is full.
    let mut best: Vec<(f32, Token)> = Vec::with_capacity(k + 1);
    for (i, &x) in logits.iter().enumerate() {
        if best.len() == k && x <= best[k - 1].0 {
            continue;
        }
        let at = best.partition_point(|&(y, _)| y >= x);
        best.insert(at, (x, i as Token));
        best.truncate(k);
    }
    for &(x, t) in &best {
        ids.push(t);
        ps.push((((x - max) as f64).exp() / z) as f32);
    }
}

/// One prompt scored and continued: tokens, features and soft labels of every position
/// whose successor is known.
fn run_prompt(
    ctx: &mut Context,
    prompt: &[Token],
    opts: &CollectOptions,
    nf: usize,
) -> Result<Record, CollectError> {
    ctx.clear();
    let mut tokens = prompt.to_vec();
    let (mut features, mut top_ids, mut top_p) = (Vec::new(), Vec::new(), Vec::new());
    let mut buf = Vec::new();
    let mut last = 0;
    // Teacher forcing: the prompt in chunks, every position's features and labels.
    let mut pos = 0;
    for chunk in prompt.chunks(ctx.n_batch()) {
        ctx.decode(chunk, pos, Outputs::All)?;
        ctx.features_into(0..chunk.len(), &mut buf)?;
        features.extend_from_slice(&buf);
        for i in 0..chunk.len() {
            top_k_probs(ctx.logits(i), opts.top_k, &mut top_ids, &mut top_p);
        }
        last = chunk.len() - 1;
        pos += chunk.len();
    }
    // The target's own greedy continuation, one decode per token (plain decoding).
    for step in 0..opts.max_new {
        let t = argmax(ctx.logits(last));
        tokens.push(t);
        if step + 1 == opts.max_new || ctx.model().is_eog(t) || pos + 1 >= ctx.n_ctx() {
            break;
        }
        ctx.decode(&[t], pos, Outputs::All)?;
        ctx.features_into(0..1, &mut buf)?;
        features.extend_from_slice(&buf);
        top_k_probs(ctx.logits(0), opts.top_k, &mut top_ids, &mut top_p);
        last = 0;
        pos += 1;
    }
    // Rows of every position but the last (its successor is unknown).
    let rows = tokens.len() - 1;
    features.truncate(rows * nf);
    top_ids.truncate(rows * opts.top_k);
    top_p.truncate(rows * opts.top_k);
    Ok(Record {
        prompt_index: 0,
        n_prompt: prompt.len(),
        tokens,
        features,
        top_ids,
        top_p,
    })
}

/// Collect `prompts` (already tokenized; `Err` = skip with that reason) and their
/// continuations
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
        top_k: opts.top_k,
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
    for (k, &i) in todo.iter().enumerate() {
        let prompt = match &prompts[i] {
            Ok(p) if p.len() >= 2 && p.len() + opts.max_new < ctx.n_ctx() => p,
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
        let mut rec = run_prompt(ctx, prompt, opts, nf)?;
        rec.prompt_index = i;
        summary.tokens_collected += rec.tokens.len();
        shards.append(&rec)?;
        summary.prompts_collected += 1;
        progress(k + 1, todo.len(), summary.tokens_collected);
    }
    summary.seconds = t0.elapsed().as_secs_f64();
    Ok(summary)
}
