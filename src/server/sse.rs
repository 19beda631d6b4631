//! A generation as server-sent events in OpenAI's chunk format, ending with
//! `data: [DONE]`. Dropping the body (the client went away) drops the [`TextStream`],
//! which cancels the generation.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::response::sse::Event as SseEvent;
use serde_json::{Value, json};
use tokio_stream::Stream;

use super::error::HttpError;
use super::wire::{self, Endpoint};
use crate::api::{Event, TextStream, ToolReply, Tools};

/// What every chunk of one answer shares.
pub struct ChunkHeader {
    /// `chatcmpl-…` or `cmpl-…`.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The served model id.
    pub model: String,
    /// Which endpoint (decides the chunk shape).
    pub endpoint: Endpoint,
    /// Send a usage chunk before `[DONE]`.
    pub include_usage: bool,
    /// The engine's draft length (for the statistics).
    pub draft_max: usize,
    /// Tools offered: the answer is held back and sent whole at the end, as `tool_calls`
    /// or content (the JSON the model writes is not what the client is shown).
    pub tools: Option<Tools>,
    /// Seed of the tool calls' ids.
    pub call_id_seed: u32,
}

impl ChunkHeader {
    fn chunk(&self, text: Option<&str>, finish: Option<&str>, first: bool) -> Value {
        self.chunk_with(text, None, finish, first)
    }

    fn chunk_with(
        &self,
        text: Option<&str>,
        tool_calls: Option<Value>,
        finish: Option<&str>,
        first: bool,
    ) -> Value {
        let choice = match self.endpoint {
            Endpoint::Chat => {
                let mut delta = serde_json::Map::new();
                if first {
                    delta.insert("role".into(), json!("assistant"));
                }
                if let Some(t) = text {
                    delta.insert("content".into(), json!(t));
                }
                if let Some(c) = tool_calls {
                    delta.insert("tool_calls".into(), c);
                }
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            Endpoint::Completions => {
                json!({"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish})
            }
        };
        json!({
            "id": self.id,
            "object": match self.endpoint {
                Endpoint::Chat => "chat.completion.chunk",
                Endpoint::Completions => "text_completion",
            },
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        })
    }
}

/// The event stream of one answer.
pub struct SseBody {
    stream: TextStream,
    header: ChunkHeader,
    queue: VecDeque<SseEvent>,
    started: bool,
    ended: bool,
    /// The answer so far, when tools hold it back.
    held: String,
}

impl SseBody {
    /// Stream `stream` as chunks described by `header`.
    pub fn new(stream: TextStream, header: ChunkHeader) -> Self {
        Self {
            stream,
            header,
            queue: VecDeque::new(),
            started: false,
            ended: false,
            held: String::new(),
        }
    }

    fn push(&mut self, v: Value) {
        self.queue
            .push_back(SseEvent::default().data(v.to_string()));
    }

    fn on_event(&mut self, ev: Option<Event>) {
        if let (Some(Event::Text(t)), Some(_)) = (&ev, &self.header.tools) {
            // Held back whole (nothing sent yet: the first chunk sent still says the role).
            self.held.push_str(t);
            return;
        }
        let first = !self.started;
        self.started = true;
        match ev {
            Some(Event::Text(t)) => {
                let c = self.header.chunk(Some(&t), None, first);
                self.push(c);
            }
            Some(Event::Done(f)) => {
                let mut reason = wire::finish_reason(&f);
                let mut first = first;
                if let Some(tools) = &self.header.tools {
                    let c = match tools.parse(&self.held) {
                        ToolReply::Calls(calls) => {
                            reason = "tool_calls";
                            let tc = wire::tool_calls_json(&calls, self.header.call_id_seed, true);
                            self.header.chunk_with(None, Some(tc), None, first)
                        }
                        ToolReply::Content(t) => self.header.chunk(Some(&t), None, first),
                    };
                    self.push(c);
                    first = false;
                }
                let mut last = self.header.chunk(None, Some(reason), first);
                last["tandem"] = wire::tandem_stats(&f, self.header.draft_max);
                last["timings"] = wire::timings(&f);
                self.push(last);
                if self.header.include_usage {
                    let mut u = self.header.chunk(None, None, false);
                    u["choices"] = json!([]);
                    u["usage"] = wire::usage(&f);
                    self.push(u);
                }
                self.finish();
            }
            Some(Event::Failed(e)) => {
                // Headers are gone already: the error travels as an event.
                self.push(HttpError::from(e).body());
                self.finish();
            }
            None => {
                self.push(HttpError::from(crate::api::ApiError::EngineGone).body());
                self.finish();
            }
        }
    }

    fn finish(&mut self) {
        self.queue.push_back(SseEvent::default().data("[DONE]"));
        self.ended = true;
    }
}

impl Stream for SseBody {
    type Item = Result<SseEvent, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Poll::Ready(Some(Ok(e)));
            }
            if self.ended {
                return Poll::Ready(None);
            }
            match self.stream.poll_event(cx) {
                Poll::Ready(ev) => self.on_event(ev),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
