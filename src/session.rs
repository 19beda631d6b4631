//! A loaded target ready to generate: the library entry point the CLI (and embedders) use.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::draft::diffusion::{DflashModel, DiffusionError};
use crate::draft::{
    DiffusionConfig, DiffusionDrafter, Drafter, NgramConfig, NgramDrafter, NoDrafter,
};
use crate::engine::policy::{cost, cost_cache};
use crate::engine::{
    self, DraftPolicy, EngineConfig, EngineError, FailFast, FixedPolicy, Generation, PolicyKind,
    PolicyMemory,
};
use crate::head::{HeadError, OutputHead};
use crate::llama::{Context, ContextParams, Model, ModelParams, TargetError, Token};
use crate::models::{self, FetchError};

/// Why a session could not be opened or could not generate.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Resolving or fetching the model failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// llama.cpp failed (loading, context, tokenizing).
    #[error(transparent)]
    Target(#[from] TargetError),
    /// Generation failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Tandem's output head could not be loaded.
    #[error(transparent)]
    Head(#[from] HeadError),
    /// The diffusion drafter could not be loaded.
    #[error(transparent)]
    Diffusion(#[from] DiffusionError),
    /// A benchmark setting cannot be run.
    #[error("{0}")]
    Bench(String),
    /// The diffusion drafter was chosen without a drafter file.
    #[error("the diffusion drafter needs a drafter file (--drafter PATH.gguf)")]
    NoDrafterFile,
    /// The prompt is empty or only whitespace.
    #[error("the prompt is empty")]
    EmptyPrompt,
}

/// Who computes the target's logits during verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeadMode {
    /// Tandem's lazy head where it pays (measured: large vocabularies), else llama.cpp.
    #[default]
    Auto,
    /// llama.cpp computes logits for every verified position.
    Llama,
    /// Tandem's lazy head (an error if the model's head format is unsupported).
    Lazy,
}

/// Vocabulary size from which the lazy head is used by default. Measured on this
/// project's 2-core reference machine (docs/losslessness.md, "Lazy output head"): gemma3-270m (262,144)
/// gains 5–25%; smollm2-135m (49,152) gains 3–8% since the head's loops run on ggml's
/// OpenMP team (before, it lost there). Below that nothing was measured: the head is a
/// small share of such a model's decode, and llama.cpp's own head stays the default.
pub const LAZY_HEAD_MIN_VOCAB: usize = 40_000;

impl std::str::FromStr for HeadMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(HeadMode::Auto),
            "llama" => Ok(HeadMode::Llama),
            "lazy" => Ok(HeadMode::Lazy),
            o => Err(format!(
                "unknown head mode '{o}' (choose: auto, llama, lazy)"
            )),
        }
    }
}

/// Which drafter to use. Plain data, parsed from `--draft`.
#[derive(Debug, Clone, PartialEq)]
pub enum DraftSpec {
    /// No drafter: plain target decoding.
    None,
    /// The n-gram (prompt lookup) drafter.
    Ngram(NgramConfig),
    /// The DFlash diffusion drafter.
    Diffusion(DiffusionSpec),
    /// The n-gram drafter and, when the model has one, the diffusion drafter, chosen
    /// between every round by the draft policy (an empty path: no diffusion drafter).
    Auto(NgramConfig, DiffusionSpec),
}

/// The diffusion drafter's file and length policy.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DiffusionSpec {
    /// A `dflash` GGUF (empty: not given yet).
    pub path: PathBuf,
    /// Stop drafting at the first position below this confidence (0 = the whole block).
    pub p_min: f32,
}

impl DraftSpec {
    /// The drafter's name as given to `--draft`.
    pub fn name(&self) -> &'static str {
        match self {
            DraftSpec::None => "none",
            DraftSpec::Ngram(_) => "ngram",
            DraftSpec::Diffusion(_) => "diffusion",
            DraftSpec::Auto(..) => "auto",
        }
    }
}

impl std::str::FromStr for DraftSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(DraftSpec::None),
            "ngram" => Ok(DraftSpec::Ngram(NgramConfig::default())),
            "diffusion" => Ok(DraftSpec::Diffusion(DiffusionSpec::default())),
            "auto" => Ok(DraftSpec::Auto(
                NgramConfig::default(),
                DiffusionSpec::default(),
            )),
            other => Err(format!(
                "unknown drafter '{other}' (choose: auto, none, ngram, diffusion)"
            )),
        }
    }
}

/// How to open a session. Plain data.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// A GGUF path or a manifest name (fetched on first use).
    pub model: String,
    /// llama.cpp context parameters.
    pub context: ContextParams,
    /// llama.cpp model-loading parameters.
    pub model_params: ModelParams,
}

impl SessionConfig {
    /// `model` (a path or manifest name) in a context of `n_ctx` tokens on `threads`
    /// threads, decoding batches of up to `n_batch` tokens; `exact` keeps weights in their
    /// file layout (no CPU repacking).
    pub fn new(
        model: impl Into<String>,
        n_ctx: u32,
        threads: i32,
        n_batch: u32,
        exact: bool,
    ) -> Self {
        Self {
            model: model.into(),
            context: ContextParams {
                n_ctx,
                n_threads: threads,
                n_batch,
                flash_attn: None,
            },
            model_params: ModelParams {
                repack: !exact,
                ..ModelParams::default()
            },
        }
    }
}

/// A loaded target model and its context, with lazily loaded output head and drafter.
pub struct Session {
    /// The loaded target model.
    pub model: Arc<Model>,
    /// The target's llama.cpp context.
    pub ctx: Context,
    /// The resolved GGUF path of the model.
    pub path: PathBuf,
    threads: usize,
    head: Option<Arc<OutputHead>>,
    dflash: Option<(PathBuf, Arc<DflashModel>)>,
    /// The draft policy's memory of this model, per verification head (lazy or not).
    policy_memory: HashMap<bool, Arc<Mutex<PolicyMemory>>>,
}

impl Session {
    /// Resolve (fetching if needed) and load the model, and create its context.
    pub fn open(cfg: &SessionConfig) -> Result<Self, SessionError> {
        let path = models::resolve(&cfg.model)?;
        let model = Arc::new(Model::load(&path, &cfg.model_params)?);
        let ctx = Context::new(model.clone(), &cfg.context)?;
        Ok(Self {
            model,
            ctx,
            path,
            threads: cfg.context.n_threads.max(1) as usize,
            head: None,
            dflash: None,
            policy_memory: HashMap::new(),
        })
    }

    /// Tokenize a user prompt: through the model's chat template unless `raw` or the
    /// model has none.
    pub fn prompt_tokens(&self, prompt: &str, raw: bool) -> Result<Vec<Token>, SessionError> {
        if prompt.trim().is_empty() {
            return Err(SessionError::EmptyPrompt);
        }
        Ok(self.model.prompt_tokens(prompt, raw)?)
    }

    /// Tandem's own output head for this model (read from the GGUF on first use).
    pub fn lazy_head(&mut self) -> Result<Arc<OutputHead>, SessionError> {
        if self.head.is_none() {
            self.head = Some(Arc::new(OutputHead::for_model(&self.model, self.threads)?));
        }
        Ok(self.head.clone().expect("just loaded"))
    }

    /// A DFlash drafter checked against this session's target (loaded once per path).
    pub fn dflash(&mut self, path: &std::path::Path) -> Result<Arc<DflashModel>, SessionError> {
        if let Some((p, m)) = &self.dflash
            && p == path
        {
            return Ok(m.clone());
        }
        let head = self.lazy_head().ok();
        let m = Arc::new(DflashModel::load(path, &self.model, || head, self.threads)?);
        self.dflash = Some((path.to_path_buf(), m.clone()));
        Ok(m)
    }

    /// A fresh single drafter for `spec` (the request's sampling settings come with each
    /// draft). [`Session::drafters`] is the entry point: it expands `Auto` into its drafters.
    fn drafter(&mut self, spec: &DraftSpec) -> Result<Box<dyn Drafter>, SessionError> {
        Ok(match spec {
            DraftSpec::None => Box::new(NoDrafter),
            DraftSpec::Ngram(c) | DraftSpec::Auto(c, _) => Box::new(NgramDrafter::new(c.clone())),
            DraftSpec::Diffusion(d) => {
                if d.path.as_os_str().is_empty() {
                    return Err(SessionError::NoDrafterFile);
                }
                let model = self.dflash(&d.path)?;
                Box::new(DiffusionDrafter::new(
                    model,
                    DiffusionConfig { p_min: d.p_min },
                ))
            }
        })
    }

    /// The drafters `spec` names: one, or for `Auto` the n-gram drafter and the diffusion
    /// drafter when a file is given.
    pub fn drafters(&mut self, spec: &DraftSpec) -> Result<Vec<Box<dyn Drafter>>, SessionError> {
        match spec {
            DraftSpec::Auto(ngram, diffusion) => {
                let mut v = vec![self.drafter(&DraftSpec::Ngram(ngram.clone()))?];
                if !diffusion.path.as_os_str().is_empty() {
                    v.push(self.drafter(&DraftSpec::Diffusion(diffusion.clone()))?);
                }
                Ok(v)
            }
            s => Ok(vec![self.drafter(s)?]),
        }
    }

    /// The draft policy of one request: `kind` over the drafters of `spec`, drafting at
    /// most `draft_max` tokens a round, verified through `head` (for its cost curve).
    /// `Fixed` over `Auto` drafts with the n-gram drafter.
    pub fn policy(
        &mut self,
        spec: &DraftSpec,
        kind: PolicyKind,
        head: Option<&Arc<OutputHead>>,
        draft_max: usize,
    ) -> Result<Box<dyn DraftPolicy>, SessionError> {
        if *spec == DraftSpec::None || draft_max == 0 {
            return Ok(Box::new(FixedPolicy::new(NoDrafter, 0)));
        }
        let mut drafters = self.drafters(spec)?;
        Ok(match kind {
            PolicyKind::Fixed => Box::new(FixedPolicy::boxed(drafters.swap_remove(0), draft_max)),
            PolicyKind::FailFast => {
                let memory = self.policy_memory(head)?;
                Box::new(FailFast::new(drafters, draft_max, memory))
            }
        })
    }

    /// What the draft policy knows of this model under `head`: the verify-cost curve
    /// (measured on first use, a few seconds, then cached on disk) and its calibration.
    pub fn policy_memory(
        &mut self,
        head: Option<&Arc<OutputHead>>,
    ) -> Result<Arc<Mutex<PolicyMemory>>, SessionError> {
        let lazy = head.is_some();
        if let Some(m) = self.policy_memory.get(&lazy) {
            return Ok(m.clone());
        }
        let key = cost_cache::cache_key(&self.path, self.threads, lazy).ok();
        let curve = match key.as_deref().and_then(cost_cache::load) {
            Some(c) => c,
            None => {
                tracing::info!("measuring the verify-cost curve (once per model and machine)");
                let filler = (self.model.n_vocab() / 2) as Token;
                let c = cost::measure(&mut self.ctx, head.map(|h| &**h), filler, 33, 3)?;
                // A small context window measures only part of the curve: use it for
                // this session, but cache only a full one.
                if let Some(k) = key.as_ref().filter(|_| c.max_n() >= 33) {
                    cost_cache::save(k, &c);
                }
                c
            }
        };
        let m = PolicyMemory::shared(curve);
        self.policy_memory.insert(lazy, m.clone());
        Ok(m)
    }

    /// The head to verify with under `mode`: `Auto` picks the lazy head for large
    /// vocabularies when its kernel keeps pace with llama.cpp's for the head's type
    /// ([`OutputHead::keeps_pace_with_llama`]) and the target runs on the CPU, and
    /// llama.cpp otherwise.
    pub fn head_for(&mut self, mode: HeadMode) -> Result<Option<Arc<OutputHead>>, SessionError> {
        match mode {
            HeadMode::Llama => Ok(None),
            HeadMode::Lazy => self.lazy_head().map(Some),
            // On a GPU llama.cpp's head runs beside the layers; Tandem's is CPU-only.
            HeadMode::Auto if self.model.on_gpu() => Ok(None),
            HeadMode::Auto if self.model.n_vocab() >= LAZY_HEAD_MIN_VOCAB => {
                match self.lazy_head() {
                    Ok(h) if h.keeps_pace_with_llama() => Ok(Some(h)),
                    Ok(_) => {
                        tracing::info!(
                            "lazy head not used: llama.cpp's batched kernel is faster for this head's type"
                        );
                        Ok(None)
                    }
                    Err(SessionError::Head(e)) => {
                        tracing::info!("lazy head not used: {e}");
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            }
            HeadMode::Auto => Ok(None),
        }
    }

    /// Generate up to `max_new` tokens after `prompt` under `policy`; see [`engine::run`].
    pub fn run(
        &mut self,
        prompt: &[Token],
        max_new: usize,
        policy: &mut dyn DraftPolicy,
        cfg: &EngineConfig,
        on_token: &mut dyn FnMut(Token) -> bool,
    ) -> Result<Generation, SessionError> {
        Ok(engine::run(
            &mut self.ctx,
            policy,
            prompt,
            max_new,
            cfg,
            on_token,
        )?)
    }

    /// Generate up to `max_new` tokens after `prompt` with one drafter and a constant draft
    /// length; see [`engine::generate`].
    pub fn generate(
        &mut self,
        prompt: &[Token],
        max_new: usize,
        drafter: &mut dyn Drafter,
        cfg: &EngineConfig,
        on_token: &mut dyn FnMut(Token) -> bool,
    ) -> Result<Generation, SessionError> {
        let mut policy = FixedPolicy::new(drafter, cfg.draft_max);
        self.run(prompt, max_new, &mut policy, cfg, on_token)
    }
}
