//! `POST /tokenize` and `POST /detokenize` in llama-server's shapes: tools that count or
//! inspect tokens against llama-server work against Tandem unchanged.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, HttpError, read_json};
use crate::llama::Model;

/// `POST /tokenize` body.
#[derive(Debug, Deserialize)]
struct TokenizeBody {
    content: String,
    /// Add BOS where the model wants it (llama-server's default: no).
    #[serde(default)]
    add_special: bool,
    /// Read "<|im_start|>"-style text as control tokens (llama-server's default: yes).
    #[serde(default = "yes")]
    parse_special: bool,
    /// Return `{"id", "piece"}` objects instead of bare ids.
    #[serde(default)]
    with_pieces: bool,
}

fn yes() -> bool {
    true
}

/// `POST /detokenize` body.
#[derive(Debug, Deserialize)]
struct DetokenizeBody {
    tokens: Vec<i64>,
}

/// A token's piece: its text, or its bytes where they are not whole UTF-8 (as
/// llama-server writes them).
fn piece(model: &Model, id: i32) -> Value {
    let b = model.token_bytes(id);
    match String::from_utf8(b) {
        Ok(s) => json!(s),
        Err(e) => json!(e.into_bytes()),
    }
}

pub(super) async fn tokenize(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let go = async {
        let body: TokenizeBody = read_json(&st, req).await?;
        let model = st.engine.model().clone();
        let tokens = tokio::task::spawn_blocking(move || {
            let ids = model
                .tokenize(&body.content, body.add_special, body.parse_special)
                .map_err(|e| HttpError::bad_request(e.to_string()))?;
            Ok::<_, HttpError>(if body.with_pieces {
                ids.iter()
                    .map(|&id| json!({"id": id, "piece": piece(&model, id)}))
                    .collect::<Vec<_>>()
            } else {
                ids.iter().map(|&id| json!(id)).collect()
            })
        })
        .await
        .map_err(|_| HttpError::bad_request("tokenizer task failed"))??;
        Ok::<_, HttpError>(axum::Json(json!({ "tokens": tokens })).into_response())
    };
    go.await.unwrap_or_else(IntoResponse::into_response)
}

pub(super) async fn detokenize(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let go = async {
        let body: DetokenizeBody = read_json(&st, req).await?;
        let model = st.engine.model().clone();
        let n_vocab = model.n_vocab() as i64;
        if let Some(bad) = body.tokens.iter().find(|&&t| !(0..n_vocab).contains(&t)) {
            return Err(HttpError::bad_request(format!(
                "token {bad} is outside the vocabulary (0..{n_vocab})"
            )));
        }
        let content = tokio::task::spawn_blocking(move || {
            let mut bytes = Vec::new();
            for &t in &body.tokens {
                bytes.extend(model.token_bytes(t as i32));
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
        .await
        .map_err(|_| HttpError::bad_request("tokenizer task failed"))?;
        Ok(axum::Json(json!({ "content": content })).into_response())
    };
    go.await.unwrap_or_else(IntoResponse::into_response)
}
