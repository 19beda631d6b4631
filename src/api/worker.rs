//! The inference thread: the only thread that touches the llama.cpp context. It takes
//! jobs in arrival order and streams their text; after each one the KV cells stay as the
//! prompt cache for the next (or are freed, with the cache off).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;

use super::prompt_cache::{self, PromptCache};
use super::stop::StopMatcher;
use super::{ApiError, EngineInfo, EngineStatus, Event, Finish, FinishReason, Job};
use crate::engine::{EngineConfig, MinDraft, StopReason};
use crate::head::OutputHead;
use crate::session::{DraftSpec, Session};
use crate::text::Utf8Stream;

/// Memory the saved prompt-cache slots may take (KV cells and drafter features).
const PROMPT_CACHE_BYTES: usize = 512 << 20;

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
    let mut cache = PromptCache::new(info.prompt_cache_slots, PROMPT_CACHE_BYTES);
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
            run_job(
                &mut session,
                &mut cache,
                lazy_head.clone(),
                info,
                status,
                &job,
            )
        }))
        .unwrap_or_else(|_| Err(ApiError::Generation("internal error (see the log)".into())));
        // Keep the KV cells for the next request, or free them now rather than at the
        // next request's start.
        if info.prompt_cache_slots == 0 || !matches!(&outcome, Ok(f) if prompt_cache::keepable(f)) {
            cache.forget();
            session.ctx.clear();
        }
        status
            .kv_tokens
            .store(session.ctx.kv_len(), Ordering::Relaxed);
        status.served.fetch_add(1, Ordering::Relaxed);
        if let Ok(f) = &outcome {
            status.add(f);
        }
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
    cache: &mut PromptCache,
    lazy_head: Option<Arc<OutputHead>>,
    info: &EngineInfo,
    status: &EngineStatus,
    job: &Job,
) -> Result<Finish, ApiError> {
    let gen_err = |e: crate::session::SessionError| ApiError::Generation(e.to_string());
    // The request's speculation settings over the engine's.
    let sp = &job.speculation;
    let draft_max = sp.n_max.unwrap_or(if info.draft_max > 0 {
        info.draft_max
    } else {
        crate::api::DEFAULT_DRAFT_MAX
    });
    let mut draft = job.draft.clone();
    if let Some(p) = sp.p_min
        && let DraftSpec::Diffusion(d) | DraftSpec::Auto(_, d) = &mut draft
    {
        d.p_min = p;
    }
    let mut policy = session
        .policy(
            &draft,
            sp.policy.unwrap_or(info.policy),
            lazy_head.as_ref(),
            draft_max,
        )
        .map_err(gen_err)?;
    if let Some(n) = sp.n_min.filter(|&n| n > 1) {
        policy = Box::new(MinDraft::new(policy, n));
    }
    let layers = policy.feature_layers().to_vec();
    let nf = layers.len() * session.model.n_embd();
    let reuse = if info.prompt_cache_slots > 0 && job.cache_prompt {
        cache
            .prepare(&mut session.ctx, &job.tokens, &layers, nf)
            .map_err(|e| ApiError::Generation(e.to_string()))?
    } else {
        0
    };
    // Without a prompt cache nothing is kept for the next request: no feature copies.
    let kept_nf = if info.prompt_cache_slots > 0 { nf } else { 0 };
    let mut policy = cache.begin(policy, &layers, kept_nf, reuse);
    let cfg = EngineConfig {
        draft_max,
        reuse_prefix: reuse,
        // A cancelled (or hung-up) request stops even inside a long prefill.
        cancel: Some(job.cancel.0.cancelled.clone()),
        sampling: job.sampling.clone(),
        lazy_head,
        grammar: job.grammar.clone(),
        // `--draft none` / n_max 0 is plain decoding: no forced drafts either.
        forced_drafts: draft != DraftSpec::None,
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
        .run(&job.tokens, job.max_tokens, &mut policy, &cfg, &mut |t| {
            let text = stops.push(&utf8.push(&model.token_bytes(t)));
            send(text);
            // (A cancelled job's flag is `cfg.cancel`, which the engine checks itself.)
            !(client_gone.get() || stops.stopped() || status.closing.load(Ordering::Relaxed))
        })
        .map_err(gen_err)?;
    drop(policy);
    // The context now holds the committed positions (the last emitted token has no KV
    // cell yet; a draft rejected in the last round may have left cells past them).
    let kept = cache.end(&job.tokens, &g.tokens, session.ctx.kv_len());
    session
        .ctx
        .truncate(kept)
        .map_err(|e| ApiError::Generation(e.to_string()))?;
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
        cached_tokens: reuse,
        completion_tokens: g.tokens.len(),
        drafter: job.draft.name(),
        policy: sp.policy.unwrap_or(info.policy).name(),
        stats: g.stats,
    })
}
