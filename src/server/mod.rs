//! `tandem serve`: an OpenAI-compatible HTTP server over an [`Engine`].
//!
//! Routes: `GET /health`, `GET /metrics` (OpenMetrics), `GET /v1/models`, `GET /v1/models/{id}`,
//! `POST /v1/completions`, `POST /v1/chat/completions` (streaming as server-sent events
//! or not), `POST /tokenize`, `POST /detokenize` (llama-server's shapes). The HTTP side runs on a small tokio runtime and only tokenizes and queues;
//! the engine's inference thread owns the llama.cpp context. Every error is an
//! OpenAI-shaped JSON body with the usual status (400, 401, 404, 405, 413, 503).

mod error;
mod metrics;
mod sse;
mod tokens;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

pub use error::HttpError;
pub use wire::{Body, Endpoint, Limits};

use crate::api::{Engine, Event};

/// How to serve. Plain data.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to bind (default 127.0.0.1: loopback only).
    pub host: String,
    /// Port (0 = any free port; the bound address is reported to `on_ready`).
    pub port: u16,
    /// The model id clients must name (default: the model's manifest name or file stem).
    pub model_id: String,
    /// When set, every request must carry `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Largest request body in bytes.
    pub max_body: usize,
    /// Per-request token limits.
    pub limits: Limits,
}

struct AppState {
    engine: Arc<Engine>,
    cfg: ServeConfig,
    created: u64,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The application's routes over `engine` (exposed for tests that drive it in-process).
pub fn router(engine: Arc<Engine>, cfg: ServeConfig) -> Router {
    let state = Arc::new(AppState {
        engine,
        cfg,
        created: now(),
    });
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics::metrics))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/tokenize", post(tokens::tokenize))
        .route("/detokenize", post(tokens::detokenize))
        .fallback(|| async { HttpError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { HttpError::method_not_allowed() })
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

/// Serve until the process is interrupted (Ctrl-C). `on_ready` gets the bound address.
pub async fn serve(
    engine: Arc<Engine>,
    cfg: ServeConfig,
    on_ready: impl FnOnce(SocketAddr),
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind((cfg.host.as_str(), cfg.port)).await?;
    on_ready(listener.local_addr()?);
    // Ctrl-C ends at once: dropping the open streams cancels their generations, and
    // dropping the engine stops the running one at its next token.
    tokio::select! {
        r = axum::serve(listener, router(engine, cfg)) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// Constant-time comparison, so the key cannot be guessed byte by byte from timings.
fn same_key(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &st.cfg.api_key {
        // The scheme name is case-insensitive (RFC 9110).
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, k)| k);
        match given {
            None => {
                return HttpError::unauthorized(
                    "missing API key: send 'Authorization: Bearer <key>'",
                )
                .into_response();
            }
            Some(k) if !same_key(k.trim().as_bytes(), key.as_bytes()) => {
                return HttpError::unauthorized("incorrect API key").into_response();
            }
            Some(_) => {}
        }
    }
    next.run(req).await
}

async fn health(State(st): State<Arc<AppState>>) -> Response {
    let s = st.engine.status();
    axum::Json(json!({
        "status": "ok",
        "model": st.cfg.model_id,
        "busy": s.busy(),
        "queued": s.queued(),
        "served": s.served(),
        "cancelled": s.cancelled(),
        "kv_tokens": s.kv_tokens(),
    }))
    .into_response()
}

fn model_object(st: &AppState) -> serde_json::Value {
    let info = st.engine.info();
    json!({
        "id": st.cfg.model_id,
        "object": "model",
        "created": st.created,
        "owned_by": "tandem",
        "tandem": {
            "path": info.path.display().to_string(),
            "drafter": info.draft.name(),
            "draft_max": info.draft_max,
            "n_ctx": info.n_ctx,
        },
    })
}

async fn models(State(st): State<Arc<AppState>>) -> Response {
    axum::Json(json!({"object": "list", "data": [model_object(&st)]})).into_response()
}

async fn model(State(st): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    if id == st.cfg.model_id {
        axum::Json(model_object(&st)).into_response()
    } else {
        HttpError::unknown_model(&id, &st.cfg.model_id).into_response()
    }
}

async fn completions(State(st): State<Arc<AppState>>, req: Request) -> Response {
    answer(st, Endpoint::Completions, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn chat_completions(State(st): State<Arc<AppState>>, req: Request) -> Response {
    answer(st, Endpoint::Chat, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Read the body within the size limit and parse it.
async fn read_body(st: &AppState, req: Request) -> Result<Body, HttpError> {
    read_json(st, req).await
}

/// Read a JSON body of any shape within the size limit.
async fn read_json<T: serde::de::DeserializeOwned>(
    st: &AppState,
    req: Request,
) -> Result<T, HttpError> {
    let limit = st.cfg.max_body;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(HttpError::too_large(limit));
    }
    let bytes = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| HttpError::too_large(limit))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| HttpError::bad_request(format!("invalid JSON body: {e}")))
}

async fn answer(
    st: Arc<AppState>,
    endpoint: Endpoint,
    req: Request,
) -> Result<Response, HttpError> {
    let body = read_body(&st, req).await?;
    if let Some(m) = &body.model
        && m != &st.cfg.model_id
    {
        return Err(HttpError::unknown_model(m, &st.cfg.model_id));
    }
    let request = body.to_request(endpoint, &st.cfg.limits)?;
    let tools = body.tools()?;
    // Tokenizing a large prompt takes a while: off the HTTP thread.
    let engine = st.engine.clone();
    let mut stream = tokio::task::spawn_blocking(move || engine.generate(&request))
        .await
        .map_err(|_| {
            HttpError::from(crate::api::ApiError::Generation(
                "tokenizer task failed".into(),
            ))
        })??;
    let created = now();
    let id = format!(
        "{}-{created:x}{:08x}",
        match endpoint {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completions => "cmpl",
        },
        rand_suffix()
    );
    let header = sse::ChunkHeader {
        id,
        created,
        model: st.cfg.model_id.clone(),
        endpoint,
        include_usage: body.include_usage(),
        draft_max: st.engine.info().draft_max,
        tools,
        call_id_seed: rand_suffix(),
    };
    if body.streaming() {
        let events = sse::SseBody::new(stream, header);
        return Ok(Sse::new(events)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    // Not streaming: collect. If the client goes away, this future is dropped with the
    // stream, which cancels the generation.
    let mut text = String::new();
    let finish = loop {
        match stream.next_event().await {
            Some(Event::Text(t)) => text.push_str(&t),
            Some(Event::Done(f)) => break *f,
            Some(Event::Failed(e)) => return Err(e.into()),
            None => return Err(crate::api::ApiError::EngineGone.into()),
        }
    };
    let mut reason = wire::finish_reason(&finish);
    let mut message = json!({"role": "assistant", "content": text});
    if let Some(tools) = &header.tools {
        match tools.parse(&text) {
            crate::api::ToolReply::Calls(calls) => {
                reason = "tool_calls";
                message["content"] = serde_json::Value::Null;
                message["tool_calls"] = wire::tool_calls_json(&calls, header.call_id_seed, false);
            }
            crate::api::ToolReply::Content(t) => message["content"] = json!(t),
        }
    }
    let choice = match endpoint {
        Endpoint::Chat => json!({
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": reason,
        }),
        Endpoint::Completions => json!({
            "index": 0, "text": text, "logprobs": null, "finish_reason": reason,
        }),
    };
    Ok(axum::Json(json!({
        "id": header.id,
        "object": match endpoint {
            Endpoint::Chat => "chat.completion",
            Endpoint::Completions => "text_completion",
        },
        "created": header.created,
        "model": header.model,
        "choices": [choice],
        "usage": wire::usage(&finish),
        "tandem": wire::tandem_stats(&finish, header.draft_max),
        "timings": wire::timings(&finish),
    }))
    .into_response())
}

/// A per-process counter mixed with the clock: unique ids without a random source.
fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ N.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9)
}
