//! The caller's side of one generation: text chunks as they are committed, then the
//! final statistics. Usable as a blocking iterator or, from async code, with
//! [`TextStream::next_event`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use super::channel::Receiver;

use super::{ApiError, EngineStatus};
use crate::engine::{CancelFlag, Stats, StopReason};

/// Why a generation ended, as OpenAI reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its turn or a stop string was reached.
    Stop,
    /// `max_tokens` or the context window was reached.
    Length,
    /// The caller cancelled (or went away).
    Cancelled,
}

/// The end of a generation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finish {
    /// Why it ended.
    pub reason: FinishReason,
    /// The engine's own stop reason (finer than `reason`).
    pub stop: StopReason,
    /// Whether a stop string ended it.
    pub stop_string: bool,
    /// Tokens in the prompt (after the chat template).
    pub prompt_tokens: usize,
    /// Of those, tokens whose KV cells were reused from the previous generation (the
    /// prompt cache) instead of being processed again.
    pub cached_tokens: usize,
    /// Tokens generated (up to and including the one that completed a stop string).
    pub completion_tokens: usize,
    /// The drafter that was used (`none`, `ngram`, `diffusion`).
    pub drafter: &'static str,
    /// The draft policy (`failfast` or `fixed`).
    pub policy: &'static str,
    /// Speculative statistics: rounds, drafted and accepted tokens, time split.
    pub stats: Stats,
}

/// One thing a generation reports.
#[derive(Debug)]
pub enum Event {
    /// Newly committed text (whole characters; never part of a stop string).
    Text(String),
    /// The generation ended normally.
    Done(Box<Finish>),
    /// The generation failed.
    Failed(ApiError),
}

/// Where a job is: waiting in the queue, taken by the inference thread, or abandoned by
/// its caller while it was still waiting.
const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const ABANDONED: u8 = 2;

/// State shared by a queued job, its stream and its cancel handles.
#[derive(Debug)]
pub(super) struct JobShared {
    pub(super) cancelled: CancelFlag,
    state: AtomicU8,
    status: Arc<EngineStatus>,
}

impl JobShared {
    pub(super) fn new(status: Arc<EngineStatus>) -> Arc<Self> {
        Arc::new(Self {
            cancelled: CancelFlag::default(),
            state: AtomicU8::new(QUEUED),
            status,
        })
    }

    /// The inference thread takes the job; `false` if its caller abandoned it while it
    /// waited (its queue slot was given back then).
    pub(super) fn start(&self) -> bool {
        self.state
            .compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// Stops a generation from any thread. Cloning shares the flag.
#[derive(Debug, Clone)]
pub struct CancelHandle(pub(super) Arc<JobShared>);

impl CancelHandle {
    /// Ask the generation to stop; it ends after the token being committed, its KV
    /// cells are freed and the stream finishes with [`FinishReason::Cancelled`]. A request
    /// still waiting in the queue leaves it at once.
    pub fn cancel(&self) {
        let j = &self.0;
        j.cancelled.cancel();
        if j.state
            .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            j.status.leave_queue();
        }
    }

    /// Whether cancellation was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.is_set()
    }
}

/// A generation in progress. Iterating yields text chunks; [`TextStream::finish`] waits
/// for the end and returns the statistics. Dropping the stream cancels the generation.
pub struct TextStream {
    pub(super) rx: Receiver<Event>,
    pub(super) cancel: CancelHandle,
    pub(super) prompt_tokens: usize,
    pub(super) end: Option<Result<Finish, ApiError>>,
}

impl TextStream {
    /// Tokens in the prompt, known as soon as the request is accepted.
    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }

    /// A handle that cancels this generation from elsewhere.
    pub fn cancel_handle(&self) -> CancelHandle {
        self.cancel.clone()
    }

    /// Cancel this generation.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// The next event, awaited (for async callers; blocking callers iterate instead).
    /// `None` after the final [`Event::Done`] or [`Event::Failed`].
    pub async fn next_event(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// Poll for the next event (for hand-written futures and streams).
    pub fn poll_event(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }

    /// Wait for the end (discarding text not yet read) and return the statistics.
    pub fn finish(mut self) -> Result<Finish, ApiError> {
        while self.end.is_none() {
            if self.next().is_none() && self.end.is_none() {
                return Err(ApiError::EngineGone);
            }
        }
        self.end.take().expect("checked")
    }
}

impl Iterator for TextStream {
    type Item = Result<String, ApiError>;

    /// The next text chunk, blocking until it is committed. A failure is yielded once as
    /// an `Err` and ends the iteration. Must not be called from inside an async runtime
    /// (use [`TextStream::next_event`] there).
    fn next(&mut self) -> Option<Self::Item> {
        if self.end.is_some() {
            return None;
        }
        match self.rx.blocking_recv() {
            Some(Event::Text(t)) => Some(Ok(t)),
            Some(Event::Done(f)) => {
                self.end = Some(Ok(*f));
                None
            }
            Some(Event::Failed(e)) => {
                self.end = Some(Err(e.clone()));
                Some(Err(e))
            }
            None => {
                self.end = Some(Err(ApiError::EngineGone));
                None
            }
        }
    }
}

impl Drop for TextStream {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
