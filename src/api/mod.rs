//! Embedding Tandem: [`Engine`] loads a target model and a drafter once and serves
//! generations from its own inference thread, which alone owns the llama.cpp context.
//!
//! ```no_run
//! use tandem::api::{Engine, Message, Request};
//!
//! let engine = Engine::builder("smollm2-135m").build()?;
//! let mut reply = engine.generate(&Request::chat(vec![Message::user("Hi!")]))?;
//! for chunk in &mut reply {
//!     print!("{}", chunk?);
//! }
//! let stats = reply.finish()?;
//! eprintln!("{} tokens, {:.2} per step", stats.completion_tokens, stats.stats.tokens_per_round());
//! # Ok::<(), tandem::api::ApiError>(())
//! ```
//!
//! Requests are served one at a time in arrival order (a queue, bounded by
//! [`EngineBuilder::max_queue`]): on a CPU a batch of k tokens costs nearly k single
//! steps, so running sequences side by side would not raise throughput, and one at a
//! time each request gets the whole machine and its own full speculative speed-up.

mod builder;
mod channel;
mod prompt_cache;
mod request;
mod stop;
mod stream;
mod tools;
mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;

pub use builder::{DEFAULT_DRAFT_MAX, DEFAULT_PROMPT_CACHE_SLOTS, EngineBuilder, MAX_DRAFT};
pub use request::{
    Constraint, MAX_STOPS, Message, Prompt, Request, Role, SamplingNames, Speculation,
    check_draft_max, check_sampling,
};
pub use stop::StopMatcher;
pub use stream::{CancelHandle, Event, Finish, FinishReason, TextStream};
pub use tools::{Tool, ToolCall, ToolChoice, ToolReply, Tools, calls_message, result_message};

use crate::llama::{Model, Token};
use crate::sampling::SamplingConfig;
use crate::session::DraftSpec;

/// What can go wrong building an engine or serving a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The engine could not be built (model, drafter or settings).
    #[error("{0}")]
    Setup(String),
    /// A request setting is out of range or unsupported.
    #[error("{0}")]
    BadRequest(String),
    /// The prompt has no text.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// The prompt does not leave room for a single generated token.
    #[error("the prompt has {n_prompt} tokens but the context holds only {n_ctx}")]
    PromptTooLong {
        /// Prompt tokens after the chat template.
        n_prompt: usize,
        /// The engine's context size.
        n_ctx: usize,
    },
    /// The queue is full; try again later.
    #[error("the server is busy: {queued} requests are already waiting")]
    Busy {
        /// Requests waiting when this one was refused.
        queued: usize,
    },
    /// The generation failed inside the engine.
    #[error("generation failed: {0}")]
    Generation(String),
    /// The inference thread is gone (it panicked or the engine was dropped).
    #[error("the inference thread has stopped")]
    EngineGone,
}

/// What the engine was built with (read-only after `build`).
#[derive(Debug, Clone)]
pub struct EngineInfo {
    /// The model as it was named (manifest name or path).
    pub model: String,
    /// The GGUF file that was loaded.
    pub path: std::path::PathBuf,
    /// The drafter.
    pub draft: DraftSpec,
    /// Most tokens drafted per verification step (0 with no drafter).
    pub draft_max: usize,
    /// Who decides each round's draft length.
    pub policy: crate::engine::PolicyKind,
    /// Context size in tokens.
    pub n_ctx: usize,
    /// Sampling used by requests that give none.
    pub sampling: SamplingConfig,
    /// Most requests waiting at once.
    pub max_queue: usize,
    /// Conversations the prompt cache keeps (the context's own cells and saved copies);
    /// 0 = no prompt cache: the KV cache is freed after every request.
    pub prompt_cache_slots: usize,
}

/// Live counters shared with the inference thread.
#[derive(Debug, Default)]
pub struct EngineStatus {
    closing: AtomicBool,
    queued: AtomicUsize,
    busy: AtomicBool,
    kv_tokens: AtomicUsize,
    served: AtomicUsize,
    cancelled: AtomicUsize,
    totals: [std::sync::atomic::AtomicU64; 6],
}

/// Token counts over every finished generation (a snapshot; for `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Prompt tokens of finished generations (processed and reused).
    pub prompt_tokens: u64,
    /// Of those, tokens reused from the prompt cache.
    pub prompt_tokens_cached: u64,
    /// Tokens generated.
    pub generation_tokens: u64,
    /// Draft tokens proposed.
    pub draft_tokens: u64,
    /// Draft tokens accepted.
    pub draft_tokens_accepted: u64,
    /// Generations that reused at least one cached prompt token.
    pub prompt_cache_hits: u64,
}

impl EngineStatus {
    /// Count a finished generation.
    fn add(&self, f: &Finish) {
        let v = [
            f.prompt_tokens,
            f.cached_tokens,
            f.completion_tokens,
            f.stats.drafted,
            f.stats.accepted,
            (f.cached_tokens > 0) as usize,
        ];
        for (a, x) in self.totals.iter().zip(v) {
            a.fetch_add(x as u64, Ordering::Relaxed);
        }
    }

    /// Token counts over every finished generation.
    pub fn totals(&self) -> Totals {
        let v: Vec<u64> = self
            .totals
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect();
        Totals {
            prompt_tokens: v[0],
            prompt_tokens_cached: v[1],
            generation_tokens: v[2],
            draft_tokens: v[3],
            draft_tokens_accepted: v[4],
            prompt_cache_hits: v[5],
        }
    }

    fn leave_queue(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }

    /// Requests waiting for the inference thread.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Whether a generation is running.
    pub fn busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    /// KV-cache positions held after the last generation (0: its cells were freed).
    pub fn kv_tokens(&self) -> usize {
        self.kv_tokens.load(Ordering::Relaxed)
    }

    /// Generations finished (including failed and cancelled ones).
    pub fn served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }

    /// Generations cut short because their caller cancelled or went away (including
    /// queued ones that never started).
    pub fn cancelled(&self) -> usize {
        self.cancelled.load(Ordering::Relaxed)
    }
}

/// One queued generation.
struct Job {
    tokens: Vec<Token>,
    max_tokens: usize,
    sampling: SamplingConfig,
    stop: Vec<String>,
    speculation: Speculation,
    /// The drafter (the engine's, or the request's choice among its drafters).
    draft: DraftSpec,
    cache_prompt: bool,
    /// The request's grammar, parsed for this model.
    grammar: Option<Arc<crate::llama::Grammar>>,
    tx: channel::Sender<Event>,
    cancel: CancelHandle,
}

/// A loaded target and drafter serving generations on their own thread. Share it between
/// threads (`Arc<Engine>`): [`Engine::generate`] only tokenizes and queues.
pub struct Engine {
    model: Arc<Model>,
    info: EngineInfo,
    status: Arc<EngineStatus>,
    jobs: Option<Sender<Job>>,
    worker: Option<JoinHandle<()>>,
}

impl Engine {
    /// Start configuring an engine for `model` (a GGUF path or a manifest name, fetched
    /// on first use).
    pub fn builder(model: impl Into<String>) -> EngineBuilder {
        EngineBuilder::new(model)
    }

    /// What the engine was built with.
    pub fn info(&self) -> &EngineInfo {
        &self.info
    }

    /// Live counters (queue length, KV use).
    pub fn status(&self) -> &EngineStatus {
        &self.status
    }

    /// The target model (tokenizer, vocabulary, chat template).
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// The prompt's tokens as the engine will feed them.
    pub fn prompt_tokens(&self, prompt: &Prompt) -> Result<Vec<Token>, ApiError> {
        let tokens = match prompt {
            Prompt::Raw(t) => self.model.prompt_tokens(t, true),
            Prompt::Chat(msgs) => {
                let pairs: Vec<(&str, &str)> = msgs
                    .iter()
                    .map(|m| (m.role.as_str(), m.content.as_str()))
                    .collect();
                self.model.chat_tokens(&pairs)
            }
        };
        tokens.map_err(|e| ApiError::BadRequest(e.to_string()))
    }

    /// Queue a generation. Returns at once with a stream of its text; fails at once on a
    /// bad request, a prompt longer than the context, or a full queue.
    pub fn generate(&self, req: &Request) -> Result<TextStream, ApiError> {
        req.validate()?;
        let tokens = self.prompt_tokens(&req.prompt)?;
        if tokens.is_empty() {
            return Err(ApiError::EmptyPrompt);
        }
        if tokens.len() >= self.info.n_ctx {
            return Err(ApiError::PromptTooLong {
                n_prompt: tokens.len(),
                n_ctx: self.info.n_ctx,
            });
        }
        let draft = req
            .speculation
            .resolve_draft(&self.info.draft)
            .map_err(ApiError::BadRequest)?;
        let grammar = match &req.constraint {
            Some(c) => Some(Arc::new(
                c.grammar(&self.model)
                    .map_err(|e| ApiError::BadRequest(e.to_string()))?,
            )),
            None => None,
        };
        let jobs = self.jobs.as_ref().ok_or(ApiError::EngineGone)?;
        // Reserve a queue slot (refuse when full).
        let reserved = self
            .status
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q < self.info.max_queue).then_some(q + 1)
            });
        if let Err(queued) = reserved {
            return Err(ApiError::Busy { queued });
        }
        let (tx, rx) = channel::unbounded();
        let cancel = CancelHandle(stream::JobShared::new(self.status.clone()));
        let prompt_tokens = tokens.len();
        let job = Job {
            tokens,
            max_tokens: req.max_tokens,
            sampling: req
                .sampling
                .clone()
                .unwrap_or_else(|| self.info.sampling.clone()),
            stop: req.stop.clone(),
            speculation: req.speculation.clone(),
            draft,
            cache_prompt: req.cache_prompt,
            grammar,
            tx,
            cancel: cancel.clone(),
        };
        if let Err(std::sync::mpsc::SendError(job)) = jobs.send(job) {
            job.cancel.cancel(); // gives the slot back
            return Err(ApiError::EngineGone);
        }
        Ok(TextStream {
            rx,
            cancel,
            prompt_tokens,
            end: None,
        })
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Stop the running job at its next token, skip the waiting ones, and let the
        // inference thread end when the queue closes.
        self.status.closing.store(true, Ordering::Release);
        self.jobs.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}
