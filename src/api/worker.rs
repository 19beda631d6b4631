//! The inference thread: the only thread that touches the llama.cpp context. It takes
//! jobs in arrival order, streams their text, and frees the KV cells after each one.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;

use super::stop::StopMatcher;
use super::{ApiError, EngineInfo, EngineStatus, Event, Finish, FinishReason, Job};
use crate::engine::{EngineConfig, StopReason};
use crate::head::OutputHead;
use crate::session::Session;
use crate::text::Utf8Stream;

pub(super) fn spawn(
    session: Session,
    lazy_head: Option<Arc<OutputHead>>,
    info: EngineInfo,
    status: Arc<EngineStatus>,
    jobs: Receiver<Job>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("tandem-inference".into())
        .spawn(move || run(session, lazy_head, &info, &status, jobs))
}

fn run(
    mut session: Session,
    lazy_head: Option<Arc<OutputHead>>,
    info: &EngineInfo,
    status: &EngineStatus,
    jobs: Receiver<Job>,
) {
    while let Ok(job) = jobs.recv() {
        // A job abandoned while waiting gave its queue slot back then.
        let taken = job.cancel.0.start();
        if taken {
            status.leave_queue();
        }
        if !taken || job.tx.is_closed() || status.closing.load(Ordering::Acquire) {
            status.served.fetch_add(1, Ordering::Relaxed);
            status.cancelled.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        status.busy.store(true, Ordering::Release);
        // A panic in a generation (a bug) fails that request, not the engine.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_job(&mut session, lazy_head.clone(), info, status, &job)
        }))
        .unwrap_or_else(|_| Err(ApiError::Generation("internal error (see the log)".into())));
        // Free the KV cells now rather than at the next request's start.
        session.ctx.clear();
        status
            .kv_tokens
            .store(session.ctx.kv_len(), Ordering::Relaxed);
        status.served.fetch_add(1, Ordering::Relaxed);
        if matches!(&outcome, Ok(f) if f.reason == FinishReason::Cancelled) {
            status.cancelled.fetch_add(1, Ordering::Relaxed);
        }
        // Counters first, then `busy`: whoever sees the engine idle sees them updated.
        status.busy.store(false, Ordering::Release);
        let _ = job.tx.send(match outcome {
            Ok(f) => Event::Done(Box::new(f)),
            Err(e) => Event::Failed(e),
        });
    }
}

fn run_job(
    session: &mut Session,
    lazy_head: Option<Arc<OutputHead>>,
    info: &EngineInfo,
    status: &EngineStatus,
    job: &Job,
) -> Result<Finish, ApiError> {
    let gen_err = |e: crate::session::SessionError| ApiError::Generation(e.to_string());
    let mut policy = session
        .policy(&info.draft, info.policy, lazy_head.as_ref(), info.draft_max)
        .map_err(gen_err)?;
    let cfg = EngineConfig {
        draft_max: info.draft_max,
        sampling: job.sampling.clone(),
        lazy_head,
        ..EngineConfig::default()
    };
    let model = session.model.clone();
    let mut utf8 = Utf8Stream::default();
    let mut stops = StopMatcher::new(&job.stop);
    let client_gone = std::cell::Cell::new(false);
    let send = |text: String| {
        if !text.is_empty() && job.tx.send(Event::Text(text)).is_err() {
            client_gone.set(true);
        }
    };
    let g = session
        .run(
            &job.tokens,
            job.max_tokens,
            policy.as_mut(),
            &cfg,
            &mut |t| {
                let text = stops.push(&utf8.push(&model.token_bytes(t)));
                send(text);
                !(client_gone.get()
                    || stops.stopped()
                    || job.cancel.is_cancelled()
                    || status.closing.load(Ordering::Relaxed))
            },
        )
        .map_err(gen_err)?;
    if !stops.stopped() {
        let tail = stops.push(&utf8.finish());
        send(tail);
        send(stops.finish());
    }
    let stop_string = stops.stopped();
    let reason = match g.stop {
        _ if stop_string => FinishReason::Stop,
        StopReason::Eog => FinishReason::Stop,
        StopReason::MaxTokens | StopReason::ContextFull => FinishReason::Length,
        StopReason::Cancelled => FinishReason::Cancelled,
    };
    Ok(Finish {
        reason,
        stop: g.stop,
        stop_string,
        prompt_tokens: job.tokens.len(),
        completion_tokens: g.tokens.len(),
        drafter: info.draft.name(),
        policy: info.policy.name(),
        stats: g.stats,
    })
}
