//! Configuring and starting an [`Engine`]: the settings are checked here once, for the
//! CLI, the server and embedders alike.

use std::path::PathBuf;
use std::sync::Arc;

use super::request::{check_draft_max, validate_sampling};
use super::{ApiError, Engine, EngineInfo, EngineStatus, worker};
use crate::draft::NgramConfig;
use crate::engine::PolicyKind;
use crate::llama::{ContextParams, default_threads};
use crate::sampling::SamplingConfig;
use crate::session::{DiffusionSpec, DraftSpec, HeadMode, Session, SessionConfig};

/// Largest draft per verification step.
pub const MAX_DRAFT: usize = 256;

/// Conversations the prompt cache keeps by default.
pub const DEFAULT_PROMPT_CACHE_SLOTS: usize = 4;

/// Default cap on a round's draft. The fail-fast policy drafts less wherever the verify
/// cost curve or the drafters' calibrated acceptance say so; the fixed policy drafts this.
pub const DEFAULT_DRAFT_MAX: usize = 16;

/// Settings for an [`Engine`]; every setter has a sensible default.
#[derive(Debug, Clone)]
pub struct EngineBuilder {
    model: String,
    draft: DraftSpec,
    drafter_file: Option<PathBuf>,
    draft_max: usize,
    policy: PolicyKind,
    head: HeadMode,
    sampling: SamplingConfig,
    threads: Option<i32>,
    n_ctx: u32,
    exact: bool,
    gpu_layers: i32,
    max_queue: usize,
    prompt_cache_slots: usize,
}

impl EngineBuilder {
    pub(super) fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            draft: DraftSpec::Auto(NgramConfig::default(), DiffusionSpec::default()),
            drafter_file: None,
            draft_max: DEFAULT_DRAFT_MAX,
            policy: PolicyKind::FailFast,
            head: HeadMode::Auto,
            sampling: SamplingConfig::greedy(),
            threads: None,
            n_ctx: 4096,
            exact: false,
            gpu_layers: crate::llama::default_gpu_layers(),
            max_queue: 16,
            prompt_cache_slots: DEFAULT_PROMPT_CACHE_SLOTS,
        }
    }

    /// The drafter (default: `Auto`, the n-gram drafter and the model's shipped diffusion
    /// drafter if it has one, chosen between every round). `DraftSpec::Diffusion` with an
    /// empty path uses the model's shipped drafter (see [`EngineBuilder::drafter_file`]).
    pub fn draft(mut self, spec: DraftSpec) -> Self {
        self.draft = spec;
        self
    }

    /// A `dflash` drafter GGUF for the diffusion drafter (instead of the shipped one).
    pub fn drafter_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.drafter_file = Some(path.into());
        self
    }

    /// Most tokens drafted per verification step (default 16): a cap for the fail-fast
    /// policy, the constant length of the fixed one.
    pub fn draft_max(mut self, k: usize) -> Self {
        self.draft_max = k;
        self
    }

    /// Who decides each round's draft length (default: the cost-aware fail-fast policy).
    pub fn policy(mut self, kind: PolicyKind) -> Self {
        self.policy = kind;
        self
    }

    /// Who computes logits during verification (default: auto).
    pub fn head(mut self, mode: HeadMode) -> Self {
        self.head = mode;
        self
    }

    /// Sampling for requests that give none (default: greedy).
    pub fn sampling(mut self, s: SamplingConfig) -> Self {
        self.sampling = s;
        self
    }

    /// CPU threads (default: the machine's cores, at most 16).
    pub fn threads(mut self, n: i32) -> Self {
        self.threads = Some(n);
        self
    }

    /// Context size in tokens: prompt plus generation (default 4096).
    pub fn context_size(mut self, n: u32) -> Self {
        self.n_ctx = n;
        self
    }

    /// Exact mode: weights stay in their file layout so batched verification rounds
    /// exactly like single-token decoding (slower on some models).
    pub fn exact(mut self, on: bool) -> Self {
        self.exact = on;
        self
    }

    /// Target layers on the GPU (negative = all; the default in builds with a GPU
    /// backend, where it is the only setting that uses the GPU; 0 elsewhere).
    pub fn gpu_layers(mut self, n: i32) -> Self {
        self.gpu_layers = n;
        self
    }

    /// Most requests waiting at once; more are refused with [`ApiError::Busy`]
    /// (default 16).
    pub fn max_queue(mut self, n: usize) -> Self {
        self.max_queue = n;
        self
    }

    /// Keep the KV cache after each generation and let the next request reuse its longest
    /// common prompt prefix (default on; `Request::cache_prompt` opts a request out).
    pub fn prompt_cache(mut self, on: bool) -> Self {
        self.prompt_cache_slots = if on {
            self.prompt_cache_slots.max(1)
        } else {
            0
        };
        self
    }

    /// Conversations the prompt cache keeps (default 4): the context's own cells and up to
    /// `n − 1` saved copies of conversations a request would have overwritten, least
    /// recently used evicted first (within 512 MiB). 0 turns the cache off.
    pub fn prompt_cache_slots(mut self, n: usize) -> Self {
        self.prompt_cache_slots = n;
        self
    }

    fn check(&self) -> Result<(), String> {
        if self.draft != DraftSpec::None {
            check_draft_max(self.draft_max)?;
        }
        if !(16..=1 << 20).contains(&self.n_ctx) {
            return Err(format!(
                "context size (--ctx-size) must be between 16 and {} (got {})",
                1 << 20,
                self.n_ctx
            ));
        }
        if let Some(t) = self.threads
            && !(1..=256).contains(&t)
        {
            return Err(format!(
                "threads (--threads) must be between 1 and 256 (got {t})"
            ));
        }
        if self.max_queue == 0 {
            return Err("the queue (--queue) must hold at least 1 request".into());
        }
        validate_sampling(&self.sampling).map_err(|e| e.to_string())?;
        match &self.draft {
            DraftSpec::Ngram(c) | DraftSpec::Auto(c, _)
                if c.n_min == 0 || c.n_min > c.n_max || c.n_max > 64 =>
            {
                Err(format!(
                    "need 1 <= --ngram-min <= --ngram-max <= 64 (got {}..{})",
                    c.n_min, c.n_max
                ))
            }
            DraftSpec::Diffusion(d) | DraftSpec::Auto(_, d) if !(0.0..=1.0).contains(&d.p_min) => Err(format!(
                "draft p-min (--draft-p-min) must be in [0, 1] (got {})",
                d.p_min
            )),
            _ if self.drafter_file.is_some()
                && !matches!(self.draft, DraftSpec::Diffusion(_) | DraftSpec::Auto(..)) =>
            {
                Err("a drafter file (--drafter) is only used with the diffusion drafter (--draft diffusion or auto)".into())
            }
            _ => Ok(()),
        }
    }

    /// The drafter with its file resolved: given, in the spec, or the model's shipped one.
    fn resolved_draft(&self) -> Result<DraftSpec, String> {
        Ok(match &self.draft {
            DraftSpec::Diffusion(d) => {
                let path = self
                    .drafter_file
                    .clone()
                    .or_else(|| (!d.path.as_os_str().is_empty()).then(|| d.path.clone()))
                    .or_else(|| crate::models::shipped_drafter(&self.model))
                    .ok_or_else(|| {
                        format!(
                            "--draft diffusion needs --drafter PATH.gguf: {} has no shipped drafter (make one with `tandem distill run`)",
                            self.model
                        )
                    })?;
                DraftSpec::Diffusion(DiffusionSpec {
                    path,
                    p_min: d.p_min,
                })
            }
            // Auto: the diffusion drafter only where there is one.
            DraftSpec::Auto(ngram, d) => {
                let path = self
                    .drafter_file
                    .clone()
                    .or_else(|| (!d.path.as_os_str().is_empty()).then(|| d.path.clone()))
                    .or_else(|| crate::models::shipped_drafter(&self.model))
                    .unwrap_or_default();
                DraftSpec::Auto(
                    ngram.clone(),
                    DiffusionSpec {
                        path,
                        p_min: d.p_min,
                    },
                )
            }
            d => d.clone(),
        })
    }

    /// Load the model (and drafter) and start the inference thread.
    pub fn build(self) -> Result<Engine, ApiError> {
        self.check().map_err(ApiError::Setup)?;
        let draft = self.resolved_draft().map_err(ApiError::Setup)?;
        let draft_max = if draft == DraftSpec::None {
            0
        } else {
            self.draft_max
        };
        let mut cfg = SessionConfig::new(
            self.model.clone(),
            self.n_ctx,
            self.threads.unwrap_or_else(default_threads),
            ContextParams::verify_batch(draft_max, self.n_ctx),
            self.exact,
        );
        cfg.model_params.gpu_layers = self.gpu_layers;
        let setup_err = |e: crate::session::SessionError| ApiError::Setup(e.to_string());
        let mut session = Session::open(&cfg).map_err(setup_err)?;
        // Load the drafter and head now, so that a bad drafter file fails here and not
        // in the first request.
        session.drafters(&draft).map_err(setup_err)?;
        let lazy_head = if draft == DraftSpec::None {
            None
        } else {
            session.head_for(self.head).map_err(setup_err)?
        };
        // The policy's cost curve is measured (or read from the cache) now, not in the
        // first request.
        if draft != DraftSpec::None && self.policy == PolicyKind::FailFast {
            session
                .policy_memory(lazy_head.as_ref())
                .map_err(setup_err)?;
        }
        let info = EngineInfo {
            model: self.model,
            path: session.path.clone(),
            draft,
            draft_max,
            policy: self.policy,
            n_ctx: session.ctx.n_ctx(),
            sampling: self.sampling,
            max_queue: self.max_queue,
            prompt_cache_slots: self.prompt_cache_slots,
        };
        let model = session.model.clone();
        let status = Arc::new(EngineStatus::default());
        let (jobs, rx) = std::sync::mpsc::channel();
        let worker = worker::spawn(session, lazy_head, info.clone(), status.clone(), rx)
            .map_err(|e| ApiError::Setup(format!("starting the inference thread: {e}")))?;
        Ok(Engine {
            model,
            info,
            status,
            jobs: Some(jobs),
            worker: Some(worker),
        })
    }
}
