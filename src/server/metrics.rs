//! `GET /metrics`: the engine's counters in the OpenMetrics text format (which Prometheus
//! scrapes), encoded by the `prometheus-client` crate. Names follow vLLM's and
//! llama-server's (`prompt_tokens`, `generation_tokens`, speculative draft tokens proposed
//! and accepted, requests, queue length, prompt-cache hits) under the `tandem_` prefix.
//! Behind the API key like every route.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{AppState, HttpError};

pub(super) async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let s = st.engine.status();
    let t = s.totals();
    let counters: [(&str, &str, u64); 8] = [
        (
            "prompt_tokens",
            "Prompt tokens of finished requests (processed and reused).",
            t.prompt_tokens,
        ),
        (
            "prompt_tokens_cached",
            "Prompt tokens reused from the prompt cache.",
            t.prompt_tokens_cached,
        ),
        (
            "prompt_cache_hits",
            "Requests that reused cached prompt tokens.",
            t.prompt_cache_hits,
        ),
        (
            "generation_tokens",
            "Tokens generated.",
            t.generation_tokens,
        ),
        (
            "spec_decode_num_draft_tokens",
            "Draft tokens proposed.",
            t.draft_tokens,
        ),
        (
            "spec_decode_num_accepted_tokens",
            "Draft tokens accepted.",
            t.draft_tokens_accepted,
        ),
        (
            "requests",
            "Requests finished (cancelled ones included).",
            s.served() as u64,
        ),
        (
            "requests_cancelled",
            "Requests cancelled or abandoned by their client.",
            s.cancelled() as u64,
        ),
    ];
    let gauges: [(&str, &str, i64); 3] = [
        (
            "num_requests_waiting",
            "Requests waiting in the queue.",
            s.queued() as i64,
        ),
        (
            "num_requests_running",
            "Requests being generated.",
            s.busy() as i64,
        ),
        (
            "kv_cache_tokens",
            "Positions held in the KV cache.",
            s.kv_tokens() as i64,
        ),
    ];
    let mut reg = Registry::with_prefix("tandem");
    for (name, help, v) in counters {
        let c: Counter = Counter::default();
        c.inc_by(v);
        reg.register(name, help, c);
    }
    for (name, help, v) in gauges {
        let g: Gauge = Gauge::default();
        g.set(v);
        reg.register(name, help, g);
    }
    let mut text = String::new();
    if encode(&mut text, &reg).is_err() {
        return HttpError::bad_request("metrics could not be encoded").into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
