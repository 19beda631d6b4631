//! Training a DFlash diffusion drafter on self-distillation data (`distill::Shards`), in
//! Rust on candle (CPU, f32), and exporting it as a `dflash` GGUF that Tandem and
//! llama.cpp both load.
//!
//! Objective: blocks anchored at random positions of the collected sequences (prompts
//! read by the target and its own continuations); every block is `[t(a), <mask> × (B − 1)]`
//! and learns, at position `i`, the target's next-token distribution after `a + i − 1`
//! (soft labels: its top-k; or its top token), with a cross-entropy weighted
//! `exp(−(i − 1)/γ)` toward early positions (those decide acceptance). The head covers a
//! reduced draft vocabulary (`d2t`: the target's most frequent output tokens) and is the
//! target's own output rows, frozen by default (DFlash trains only the draft layers).
//! Deterministic for a seed: every step draws its sequence and anchors from a generator
//! seeded by (seed, step), so a resumed run continues exactly where it stopped.

pub mod checkpoint;
pub mod data;
pub mod export;
pub mod init;
pub mod net;
pub mod optim;
pub mod validate;

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::distill::{Record, ShardError, Shards};
use crate::draft::diffusion::Embeddings;
use crate::draft::diffusion::format::DflashShape;
use crate::gguf::{GgmlType, Gguf, GgufError};
use crate::sampling::Rng;
pub use checkpoint::TrainState;
pub use data::{BlockOptions, DraftVocab, Labels};
pub use init::Init;
use net::Net;
use optim::AdamW;

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Reading the distillation data failed.
    #[error(transparent)]
    Shards(#[from] ShardError),
    /// Reading the target GGUF failed.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// Reading the target's embeddings or output rows failed.
    #[error(transparent)]
    Drafter(#[from] crate::draft::diffusion::DiffusionError),
    /// A tensor operation failed.
    #[error("tensor computation: {0}")]
    Candle(#[from] candle_core::Error),
    /// The data or a checkpoint is unusable (the message says why).
    #[error("{0}")]
    Data(String),
    /// A file operation failed.
    #[error("{path}: {err}")]
    Io {
        /// The path it failed on.
        path: String,
        /// The cause.
        err: std::io::Error,
    },
}

/// Settings of a training run. Plain data.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TrainOptions {
    /// Total optimizer steps (a resumed run continues up to this count).
    pub steps: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Warm-up steps of the learning-rate schedule.
    pub warmup: usize,
    /// Number of drafter layers.
    pub n_layer: usize,
    /// Feed-forward width (default: the target's).
    pub n_ff: Option<usize>,
    /// Size of the draft vocabulary (the target's most frequent output tokens).
    pub draft_vocab: usize,
    /// Positions per block (the anchor token plus `block_size - 1` masks).
    pub block_size: usize,
    /// Blocks per step (all from one sequence).
    pub anchors: usize,
    /// Loss weight decay over block positions: `exp(−(i − 1) / gamma)`.
    pub gamma: f32,
    /// Block positions that carry a loss (`1..=loss_positions`; 0 = all).
    #[serde(default)]
    pub loss_positions: usize,
    /// How a new run's weights start (a resumed run keeps its own).
    #[serde(default)]
    pub init: Init,
    /// Stop after this step (checkpointed there) without changing the schedule, which
    /// `steps` sets: a run spread over several sittings.
    #[serde(default)]
    pub until: Option<usize>,
    /// Start a new run from this exported drafter (its weights and draft vocabulary)
    /// instead of `init` (a resumed run keeps its own).
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    /// Uniform noise in `[-x, x]` added to the (scaled, RMS 1) context features of every
    /// training batch, as EAGLE adds U(−0.1, 0.1): the drafter then leans less on exact
    /// feature values (a regulariser; 0 = none).
    #[serde(default)]
    pub feature_noise: f32,
    /// Anchors lie below this position (bounds the attention context).
    pub max_context: usize,
    /// Seed for initialisation and for drawing batches.
    pub seed: u64,
    /// Validate, checkpoint and export every this many steps.
    pub checkpoint_every: usize,
    /// Held-out sequences (every `val_every`-th record) and how many of them to score.
    pub val_every: usize,
    /// Number of held-out sequences scored per validation.
    pub val_records: usize,
    /// What block positions learn (soft: the target's top-k).
    pub labels: Labels,
    /// Anchor blocks inside prompts too (teacher forcing over their text; soft-label data).
    pub prompt_anchors: bool,
    /// Train the head too instead of keeping the target's rows.
    pub train_head: bool,
    /// A held-out data directory (prompts sharing no template or source with training);
    /// without one, every `val_every`-th record is held out.
    pub val_data: Option<PathBuf>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            steps: 4000,
            lr: 1e-3,
            warmup: 100,
            n_layer: 1,
            n_ff: None,
            draft_vocab: 8192,
            block_size: 16,
            anchors: 16,
            gamma: 5.0,
            // γ = 5 puts 84% of the loss weight on positions 1–8, and a draft reaches a
            // later position only through all of them: measured the same held-out
            // acceptance at a third less time a step (docs/drafters.md).
            loss_positions: 8,
            init: Init::default(),
            until: None,
            init_from: None,
            feature_noise: 0.0,
            max_context: 1024,
            seed: 1,
            checkpoint_every: 500,
            val_every: 50,
            val_records: 24,
            labels: Labels::Soft,
            prompt_anchors: true,
            train_head: false,
            val_data: None,
        }
    }
}

/// Held-out accuracy of the drafter, greedy, full blocks only.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ValStats {
    /// Step the drafter was validated at.
    pub step: usize,
    /// Held-out blocks scored.
    pub blocks: usize,
    /// Mean accepted length + 1: the expected tokens per verification step.
    pub tokens_per_step: f64,
    /// Share of blocks whose prediction is right at positions 1..=i.
    pub prefix_acc: Vec<f64>,
    /// Mean loss over the held-out batches.
    pub loss: f64,
    /// Rounds walked over the held-out continuations as run time walks them
    /// (`validate::Walk`).
    #[serde(default)]
    pub rounds: usize,
    /// Tokens per verification round over those rounds (run time's tokens per step).
    #[serde(default)]
    pub round_tokens_per_step: f64,
    /// Share of those rounds whose first draft token was accepted.
    #[serde(default)]
    pub round_first_acceptance: f64,
}

/// What the progress callback sees.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Steps completed.
    pub step: usize,
    /// Total steps of the run.
    pub steps: usize,
    /// Training loss, an exponential moving average (NaN before the first update).
    pub loss: f64,
    /// Learning rate of this step.
    pub lr: f64,
    /// Time since this invocation started (seconds).
    pub seconds: f64,
    /// Validation result, on checkpoint steps.
    pub val: Option<ValStats>,
}

/// A training run's outcome.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Path of the exported drafter GGUF.
    pub drafter: PathBuf,
    /// Trainable values in the network.
    pub n_params: usize,
    /// Share of the target's output tokens the draft vocabulary covers.
    pub vocab_coverage: f64,
    /// Steps run in this invocation.
    pub steps_run: usize,
    /// Wall time of this invocation (seconds).
    pub seconds: f64,
    /// The latest validation result, if any.
    pub last_val: Option<ValStats>,
}

/// Everything a step needs besides the network.
struct Ctx {
    shards: Shards,
    embd: Embeddings,
    mask_embd: Vec<f32>,
    vocab: DraftVocab,
    block: BlockOptions,
    train_ids: Vec<usize>,
    val_ids: Vec<usize>,
    /// The held-out directory, when one was given (`val_ids` index it, else `shards`).
    val_shards: Option<Shards>,
    /// Per-feature divisor of the network's inputs (empty: none).
    scale: Vec<f32>,
}

impl Ctx {
    /// Record `i` with its features divided by the feature scale.
    fn read(&self, i: usize) -> Result<Record, TrainError> {
        let mut r = self.shards.read(i)?;
        divide_columns(&mut r.features, &self.scale);
        Ok(r)
    }

    /// Held-out record `i`, scaled like the training records.
    fn read_val(&self, i: usize) -> Result<Record, TrainError> {
        let mut r = self.val_shards.as_ref().unwrap_or(&self.shards).read(i)?;
        divide_columns(&mut r.features, &self.scale);
        Ok(r)
    }
}

/// Divide every row of the row-major `data` (rows as wide as `scale`) by `scale`, column
/// by column; an empty `scale` leaves `data` as it is. Training scales feature rows with
/// it, export folds the same scale into `fc.weight`'s rows.
pub fn divide_columns(data: &mut [f32], scale: &[f32]) {
    if scale.is_empty() {
        return;
    }
    for row in data.chunks_mut(scale.len()) {
        for (x, s) in row.iter_mut().zip(scale) {
            *x /= s;
        }
    }
}

/// Records sampled for the feature scale.
const SCALE_RECORDS: usize = 64;

/// Per-feature root mean square over the context rows of (up to) `SCALE_RECORDS` training
/// records, position 0 left out. Why: the target's residual stream has a few "massive"
/// dimensions (SmolLM2: one dimension of layer 28 carries ~45% of the energy, and layers
/// 1/15/28 differ ~13× in scale); fed raw, the drafter's `fc` + norm drown every other
/// feature in them and it learns little more than a bigram. Dividing by this scale (and
/// folding it into `fc.weight` on export) gives every feature an equal start. Position 0
/// (the attention sink, ~100× larger still) would dominate the estimate.
fn feature_scale(shards: &Shards, ids: &[usize]) -> Result<Vec<f32>, TrainError> {
    let mut rms = FeatureRms::new(shards.meta.n_features);
    let step = (ids.len() / SCALE_RECORDS).max(1);
    for &i in ids.iter().step_by(step).take(SCALE_RECORDS) {
        rms.add(&shards.read(i)?.features);
    }
    Ok(rms.finish())
}

/// Per-feature root mean square, accumulated record by record (so that no more than one
/// record's features are held): every row of a record's row-major feature block but its
/// row 0 (see `feature_scale`).
pub struct FeatureRms {
    sumsq: Vec<f64>,
    rows: usize,
}

impl FeatureRms {
    /// An empty accumulator for rows `nf` features wide.
    pub fn new(nf: usize) -> Self {
        Self {
            sumsq: vec![0.0; nf],
            rows: 0,
        }
    }

    /// Add one record's features (row-major), its row 0 left out.
    pub fn add(&mut self, features: &[f32]) {
        for row in features.chunks(self.sumsq.len()).skip(1) {
            for (a, &x) in self.sumsq.iter_mut().zip(row) {
                *a += (x as f64) * (x as f64);
            }
            self.rows += 1;
        }
    }

    /// The root mean square of every feature, at least 1e-3.
    pub fn finish(&self) -> Vec<f32> {
        self.sumsq
            .iter()
            .map(|&a| ((a / self.rows.max(1) as f64).sqrt() as f32).max(1e-3))
            .collect()
    }
}

/// Train on the data in `data` for the target GGUF `target`; checkpoints and the drafter
/// (`drafter.gguf`) go to `out`. An existing checkpoint in `out` is resumed.
pub fn train(
    data: &Path,
    target: &Path,
    out: &Path,
    o: &TrainOptions,
    on: &mut dyn FnMut(&Progress),
) -> Result<TrainSummary, TrainError> {
    let t0 = Instant::now();
    let shards = Shards::open_existing(data)?;
    let tg = Gguf::open(target)?;
    let mut shape =
        DflashShape::for_target(&tg, o.n_layer, &shards.meta.target_layers, o.block_size);
    if let Some(ff) = o.n_ff {
        shape.n_ff = ff;
    }
    if shards.meta.n_embd != shape.n_embd || shards.meta.n_vocab != shape.n_vocab {
        return Err(TrainError::Data(format!(
            "{}: data was collected from {} (vocabulary {}, width {}), not from {}",
            data.display(),
            shards.meta.model,
            shards.meta.n_vocab,
            shards.meta.n_embd,
            target.display()
        )));
    }
    let n = shards.len();
    let val_every = o.val_every.max(2);
    let val_shards = match &o.val_data {
        Some(d) => {
            let v = Shards::open_existing(d)?;
            if v.meta.target_layers != shards.meta.target_layers
                || v.meta.model != shards.meta.model
            {
                return Err(TrainError::Data(format!(
                    "{}: held-out data from {} (layers {:?}) does not match {} (layers {:?})",
                    d.display(),
                    v.meta.model,
                    v.meta.target_layers,
                    shards.meta.model,
                    shards.meta.target_layers
                )));
            }
            Some(v)
        }
        None => None,
    };
    let (val_ids, train_ids): (Vec<usize>, Vec<usize>) = match &val_shards {
        Some(v) => ((0..v.len()).collect(), (0..n).collect()),
        None => (0..n).partition(|i| i % val_every == val_every - 1),
    };
    if train_ids.is_empty() {
        return Err(TrainError::Data(format!(
            "{}: no collected sequences",
            data.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(|err| TrainError::Io {
        path: out.display().to_string(),
        err,
    })?;
    let embd = Embeddings::of_target(&tg)?;

    // Resume, or start: vocabulary from the target's output frequencies, head from its rows.
    let (mut net, mut opt, mut state) = match checkpoint::load(out, &shape)? {
        Some(x) => x,
        None => {
            let mut counts = vec![0u64; shape.n_vocab];
            for &i in &train_ids {
                let (np, toks) = shards.read_tokens(i)?;
                // The tokens the blocks learn: the continuation's, and the prompt's when
                // blocks are anchored there too.
                let from = if o.prompt_anchors { 1 } else { np };
                for &t in &toks[from.min(toks.len())..] {
                    counts[t as usize] += 1;
                }
            }
            let start_from = o.init_from.as_deref().map(Gguf::open).transpose()?;
            let vocab = match &start_from {
                Some(dr) => {
                    DraftVocab::from_d2t(init::drafter_vocab(dr, shape.n_vocab)?, shape.n_vocab)
                }
                None => DraftVocab::most_frequent(&counts, o.draft_vocab),
            };
            let head = output_rows(&tg, &vocab.d2t)?;
            let feature_scale = feature_scale(&shards, &train_ids)?;
            let mut net = Net::new(shape.clone(), head, o.seed)?;
            match &start_from {
                Some(dr) => {
                    init::from_drafter(&net, dr, &shards.meta.target_layers, &feature_scale)?
                }
                None => init::apply(&net, &tg, o.init)?,
            }
            net.train_head = o.train_head;
            let opt = AdamW::new(&net)?;
            let coverage = vocab.coverage(&counts);
            (
                net,
                opt,
                TrainState {
                    step: 0,
                    d2t: vocab.d2t,
                    coverage,
                    seconds: 0.0,
                    history: Vec::new(),
                    feature_scale,
                },
            )
        }
    };
    net.train_head = o.train_head;
    let vocab = DraftVocab::from_d2t(state.d2t.clone(), shape.n_vocab);
    let mask_embd = embd.rows(&[shape.mask_token as i32]);
    let block = BlockOptions {
        block_size: o.block_size,
        anchors: o.anchors,
        gamma: o.gamma,
        loss_positions: o.loss_positions,
        max_context: o.max_context,
        labels: o.labels,
        prompt_anchors: o.prompt_anchors,
    };
    let ctx = Ctx {
        shards,
        embd,
        mask_embd,
        vocab,
        block,
        train_ids,
        val_ids,
        val_shards,
        scale: state.feature_scale.clone(),
    };
    let drafter = out.join("drafter.gguf");
    let export_drafter =
        |net: &Net| export::export(net, &ctx.vocab, &ctx.scale, &tg, &drafter, GgmlType::F16);
    let start = state.step;
    let mut last_val = state.history.last().cloned();
    let run0 = Instant::now();
    let seconds_before = state.seconds;
    let mut loss_avg = f64::NAN;
    let end = o.until.map_or(o.steps, |u| u.min(o.steps));
    for step in start..end {
        let lr = optim::schedule(step, o.steps, o.warmup, o.lr);
        let mut rng = Rng::new(o.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ step as u64);
        let id = ctx.train_ids[(rng.next_u64() % ctx.train_ids.len() as u64) as usize];
        let mut rec = ctx.read(id)?;
        let anchors = data::pick_anchors(data::anchor_range(&rec, &ctx.block), o.anchors, &mut rng);
        if o.feature_noise > 0.0 {
            // Drawn after the anchors, so a run with noise sees the same blocks.
            let x = o.feature_noise as f64;
            for f in rec.features.iter_mut() {
                *f += ((rng.uniform() * 2.0 - 1.0) * x) as f32;
            }
        }
        if !anchors.is_empty() {
            let b = data::make_batch(
                &rec,
                &anchors,
                &ctx.embd,
                &ctx.mask_embd,
                &ctx.vocab,
                &ctx.block,
            )?;
            let (loss, _) = net.loss(&b)?;
            let l = loss.to_scalar::<f32>()? as f64;
            // Stop before a non-finite loss poisons the weights (and every later checkpoint).
            if !l.is_finite() {
                return Err(TrainError::Data(format!(
                    "training diverged at step {step}: loss {l} on record {id} \
                     (non-finite features in the data, or try a lower --lr)"
                )));
            }
            let grads = loss.backward()?;
            opt.step(&net, &grads, lr)?;
            loss_avg = if loss_avg.is_nan() {
                l
            } else {
                0.98 * loss_avg + 0.02 * l
            };
        }
        state.step = step + 1;
        let done = state.step == end;
        let mut val = None;
        if done || state.step % o.checkpoint_every.max(1) == 0 {
            let v = validate::validate(&net, &ctx, o, state.step)?;
            state.history.push(v.clone());
            state.seconds = seconds_before + run0.elapsed().as_secs_f64();
            checkpoint::save(out, &net, &opt, &state)?;
            export_drafter(&net)?;
            last_val = Some(v.clone());
            val = Some(v);
        }
        on(&Progress {
            step: state.step,
            steps: o.steps,
            loss: loss_avg,
            lr,
            seconds: run0.elapsed().as_secs_f64(),
            val,
        });
    }
    if start >= end && !drafter.exists() {
        export_drafter(&net)?;
    }
    Ok(TrainSummary {
        drafter,
        n_params: net.n_params(),
        vocab_coverage: state.coverage,
        steps_run: end.saturating_sub(start),
        seconds: t0.elapsed().as_secs_f64(),
        last_val,
    })
}

/// The target's output rows (its head, or its tied embeddings) for `ids`, as f32.
fn output_rows(tg: &Gguf, ids: &[i32]) -> Result<Vec<f32>, TrainError> {
    let e = if tg.tensor("output.weight").is_some() {
        Embeddings::of_tensor(tg, "output.weight")?
    } else {
        Embeddings::of_target(tg)?
    };
    Ok(e.rows(ids))
}
