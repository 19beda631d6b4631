//! The OpenAI wire format: request bodies (completions and chat completions share one
//! permissive struct; unknown fields are ignored as OpenAI's own clients add new ones)
//! and the JSON of responses and stream chunks.

use serde::Deserialize;
use serde_json::{Value, json};

use super::error::HttpError;
use crate::api::{self, Finish, FinishReason, Message, Prompt, Request, Role};
use crate::sampling::SamplingConfig;

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` before `[DONE]`.
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// The body of `POST /v1/completions` and `POST /v1/chat/completions`.
#[derive(Debug, Default, Deserialize)]
pub struct Body {
    /// Model id (must be the served one; absent = the served one).
    pub model: Option<String>,
    /// Completions: a string (or a list holding one string).
    pub prompt: Option<Value>,
    /// Chat: the conversation.
    pub messages: Option<Vec<ChatMessage>>,
    /// Most tokens to generate.
    pub max_tokens: Option<u32>,
    /// Chat's newer name for `max_tokens`.
    pub max_completion_tokens: Option<u32>,
    /// Sampling temperature (OpenAI's default is 1; 0 = greedy).
    pub temperature: Option<f32>,
    /// Nucleus cut-off.
    pub top_p: Option<f32>,
    /// Top-k cut-off (an extension llama.cpp's server also accepts; 0 = off).
    pub top_k: Option<u32>,
    /// Sampling seed.
    pub seed: Option<i64>,
    /// A stop string or a list of them.
    pub stop: Option<Value>,
    /// Stream the answer as server-sent events.
    pub stream: Option<bool>,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Number of choices (only 1).
    pub n: Option<u32>,
    /// Not supported unless 0.
    pub presence_penalty: Option<f32>,
    /// Not supported unless 0.
    pub frequency_penalty: Option<f32>,
    /// Not supported (any truthy value is refused).
    pub logprobs: Option<Value>,
    /// Completions: echo the prompt (not supported).
    pub echo: Option<bool>,
    /// Chat: functions the model may call (OpenAI's `tools`).
    pub tools: Option<Vec<Value>>,
    /// Chat: `none`, `auto` (default), `required` or `{"type": "function", "function":
    /// {"name"}}`.
    pub tool_choice: Option<Value>,
    /// Chat: allow several tool calls in one answer (default false, as llama-server).
    pub parallel_tool_calls: Option<bool>,
    /// Structured output: `{"type": "text" | "json_object" | "json_schema", ...}`
    /// (OpenAI's shape; llama-server's `json_object` + `schema` too).
    pub response_format: Option<Value>,
    /// llama-server's extension: a GBNF grammar the answer must follow.
    pub grammar: Option<String>,
    /// llama-server's extension: a JSON Schema the answer must follow.
    pub json_schema: Option<Value>,
    /// llama-server's `cache_prompt`: reuse the previous generation's KV cells for the
    /// common prompt prefix (default true).
    pub cache_prompt: Option<bool>,
    /// llama-server's `speculative.n_max`: most tokens drafted per round (0 = none).
    #[serde(rename = "speculative.n_max")]
    pub spec_n_max: Option<i64>,
    /// llama-server's `speculative.n_min`: shorter drafts are not verified.
    #[serde(rename = "speculative.n_min")]
    pub spec_n_min: Option<i64>,
    /// llama-server's `speculative.p_min`: the diffusion drafter's confidence cut.
    #[serde(rename = "speculative.p_min")]
    pub spec_p_min: Option<f32>,
    /// Tandem's own: which of the server's drafters (`none`, `ngram`, `diffusion`, `auto`).
    #[serde(rename = "tandem.draft")]
    pub tandem_draft: Option<String>,
    /// Tandem's own: the draft policy (`failfast`, `fixed`).
    #[serde(rename = "tandem.policy")]
    pub tandem_policy: Option<String>,
}

/// One chat message as sent.
#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    /// system, developer, user, assistant.
    pub role: String,
    /// A string, or a list of `{"type": "text", "text": ...}` parts.
    #[serde(default)]
    pub content: Value,
    /// An assistant turn's tool calls.
    pub tool_calls: Option<Vec<Value>>,
    /// A `tool` turn: the call it answers.
    pub tool_call_id: Option<String>,
    /// A `tool` turn: the tool's name.
    pub name: Option<String>,
}

/// Which endpoint a body was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/completions`.
    Completions,
    /// `/v1/chat/completions`.
    Chat,
}

/// Server-side limits applied to every request.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest `max_tokens` accepted (and the chat default).
    pub max_tokens: usize,
    /// `max_tokens` when a completions request gives none (OpenAI's default is 16).
    pub completion_default: usize,
}

impl Body {
    /// Check the body and turn it into an engine request.
    pub fn to_request(&self, endpoint: Endpoint, limits: &Limits) -> Result<Request, HttpError> {
        let bad = |m: String| Err(HttpError::bad_request(m));
        if self.n.unwrap_or(1) != 1 {
            return bad("only n = 1 is supported".into());
        }
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if v.unwrap_or(0.0) != 0.0 {
                return bad(format!(
                    "{name} is not supported (it would change the model's distribution)"
                ));
            }
        }
        if matches!(&self.logprobs, Some(v) if !(v.is_null() || v == &json!(false) || v == &json!(0)))
        {
            return bad("logprobs are not supported".into());
        }
        if self.echo == Some(true) {
            return bad("echo is not supported".into());
        }
        let tools = self.tools()?;
        if tools.is_some() && endpoint == Endpoint::Completions {
            return bad("tools belong to /v1/chat/completions".into());
        }
        let prompt = match endpoint {
            Endpoint::Completions => {
                if self.messages.is_some() {
                    return bad(
                        "'messages' belongs to /v1/chat/completions; completions take 'prompt'"
                            .into(),
                    );
                }
                Prompt::Raw(completion_prompt(self.prompt.as_ref())?)
            }
            Endpoint::Chat => {
                if self.prompt.is_some() {
                    return bad(
                        "'prompt' belongs to /v1/completions; chat completions take 'messages'"
                            .into(),
                    );
                }
                let Some(msgs) = &self.messages else {
                    return bad("'messages' is required".into());
                };
                Prompt::Chat(msgs.iter().map(chat_message).collect::<Result<_, _>>()?)
            }
        };
        let asked = self.max_completion_tokens.or(self.max_tokens);
        let max_tokens = match (asked, endpoint) {
            (Some(n), _) => n as usize,
            (None, Endpoint::Completions) => limits.completion_default.min(limits.max_tokens),
            (None, Endpoint::Chat) => limits.max_tokens,
        };
        if max_tokens == 0 || max_tokens > limits.max_tokens {
            return bad(format!(
                "max_tokens must be between 1 and {} on this server (got {max_tokens})",
                limits.max_tokens
            ));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        let sampling = SamplingConfig {
            // top_p = 0 keeps only the most likely token: greedy (OpenAI accepts 0).
            temp: if top_p == 0.0 {
                0.0
            } else {
                self.temperature.unwrap_or(1.0)
            },
            top_k: self.top_k.unwrap_or(0) as usize,
            top_p: if top_p == 0.0 { 1.0 } else { top_p },
            // No seed: a fresh one per request, as OpenAI samples.
            seed: self.seed.map(|s| s as u64).unwrap_or_else(fresh_seed),
        };
        let count = |name: &str, v: Option<i64>| -> Result<Option<usize>, HttpError> {
            match v {
                Some(n) if n < 0 => Err(HttpError::bad_request(format!(
                    "{name} must be >= 0 (got {n})"
                ))),
                Some(n) => Ok(Some(n as usize)),
                None => Ok(None),
            }
        };
        let speculation = api::Speculation {
            n_max: count("speculative.n_max", self.spec_n_max)?,
            n_min: count("speculative.n_min", self.spec_n_min)?,
            p_min: self.spec_p_min,
            draft: self.tandem_draft.clone(),
            policy: self
                .tandem_policy
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e: String| HttpError::bad_request(format!("tandem.policy: {e}")))?,
        };
        if let Some(d) = &speculation.draft {
            d.parse::<crate::session::DraftSpec>()
                .map_err(|e| HttpError::bad_request(format!("tandem.draft: {e}")))?;
        }
        speculation.validate().map_err(HttpError::bad_request)?;
        let request = Request {
            prompt,
            max_tokens,
            sampling: Some(sampling),
            stop: stop_strings(self.stop.as_ref())?,
            speculation,
            cache_prompt: self.cache_prompt.unwrap_or(true),
            constraint: self.constraint()?,
        };
        match &tools {
            Some(t) => Ok(request.with_tools(t)?),
            None => Ok(request),
        }
    }

    /// The tools the answer may call: `None` without tools or with `tool_choice: none`.
    pub fn tools(&self) -> Result<Option<api::Tools>, HttpError> {
        let Some(list) = self.tools.as_ref().filter(|t| !t.is_empty()) else {
            if self.tool_choice.is_some() && self.tool_choice != Some(json!("none")) {
                return Err(HttpError::bad_request("tool_choice needs tools"));
            }
            return Ok(None);
        };
        let Some(choice) = api::ToolChoice::from_openai(self.tool_choice.as_ref())
            .map_err(HttpError::bad_request)?
        else {
            return Ok(None);
        };
        let tools = api::Tools {
            tools: list
                .iter()
                .map(api::Tool::from_openai)
                .collect::<Result<_, _>>()
                .map_err(HttpError::bad_request)?,
            choice,
            parallel: self.parallel_tool_calls.unwrap_or(false),
        };
        tools.validate().map_err(HttpError::bad_request)?;
        Ok(Some(tools))
    }

    /// The answer's required shape from `response_format`, `json_schema` or `grammar`
    /// (at most one of them).
    fn constraint(&self) -> Result<Option<api::Constraint>, HttpError> {
        let bad = |m: String| Err(HttpError::bad_request(m));
        let schema_text = |v: &Value| -> Result<String, HttpError> {
            if !v.is_object() && !v.is_boolean() {
                return Err(HttpError::bad_request("the JSON schema must be an object"));
            }
            Ok(v.to_string())
        };
        let mut found = Vec::new();
        if let Some(rf) = &self.response_format {
            let ty = rf.get("type").and_then(Value::as_str);
            match ty {
                Some("text") => {}
                Some("json_object") => found.push(match rf.get("schema") {
                    Some(s) => api::Constraint::JsonSchema(schema_text(s)?),
                    None => api::Constraint::JsonObject,
                }),
                Some("json_schema") => {
                    let Some(js) = rf.get("json_schema") else {
                        return bad(
                            "response_format json_schema needs a 'json_schema' object".into()
                        );
                    };
                    let Some(schema) = js.get("schema") else {
                        return bad("response_format.json_schema needs a 'schema'".into());
                    };
                    found.push(api::Constraint::JsonSchema(schema_text(schema)?));
                }
                Some(o) => {
                    return bad(format!(
                        "unsupported response_format type '{o}' (text, json_object, json_schema)"
                    ));
                }
                None => return bad("response_format needs a 'type'".into()),
            }
        }
        if let Some(s) = &self.json_schema {
            found.push(api::Constraint::JsonSchema(schema_text(s)?));
        }
        if let Some(g) = &self.grammar {
            found.push(api::Constraint::Gbnf(g.clone()));
        }
        if found.len() > 1 {
            return bad("give at most one of response_format, json_schema and grammar".into());
        }
        Ok(found.pop())
    }

    /// Whether to stream.
    pub fn streaming(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether a streamed answer ends with a usage chunk.
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }
}

fn fresh_seed() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn completion_prompt(v: Option<&Value>) -> Result<String, HttpError> {
    match v {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
            Ok(a[0].as_str().expect("checked").to_string())
        }
        Some(Value::Array(_)) => Err(HttpError::bad_request(
            "'prompt' must be one string (lists of prompts and token arrays are not supported)",
        )),
        None | Some(Value::Null) => Err(HttpError::bad_request("'prompt' is required")),
        Some(_) => Err(HttpError::bad_request("'prompt' must be a string")),
    }
}

/// One message as the engine takes it. Tool turns become text in the shape the tool
/// instructions describe (see [`api::Tools`]): an assistant's calls as its JSON, a tool's
/// result as a user turn.
fn chat_message(m: &ChatMessage) -> Result<Message, HttpError> {
    if m.role == "tool" {
        let content = message_text(&m.content)?;
        return Ok(api::result_message(
            m.name.as_deref(),
            m.tool_call_id.as_deref(),
            &content,
        ));
    }
    let role: Role = m
        .role
        .parse()
        .map_err(|e: String| HttpError::bad_request(e.replace("assistant)", "assistant, tool)")))?;
    if let Some(calls) = m.tool_calls.as_ref().filter(|c| !c.is_empty()) {
        if role != Role::Assistant {
            return Err(HttpError::bad_request(
                "only assistant messages carry tool_calls",
            ));
        }
        let calls = calls
            .iter()
            .map(|c| {
                let name = c.pointer("/function/name").and_then(Value::as_str);
                let args = c.pointer("/function/arguments");
                match (name, args) {
                    (Some(n), Some(Value::String(a))) => Ok(api::ToolCall {
                        name: n.to_string(),
                        arguments: a.clone(),
                    }),
                    (Some(n), Some(a)) if a.is_object() => Ok(api::ToolCall {
                        name: n.to_string(),
                        arguments: a.to_string(),
                    }),
                    _ => Err(HttpError::bad_request(
                        "a tool call needs {\"function\": {\"name\", \"arguments\"}}",
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(api::calls_message(&calls));
    }
    Ok(Message {
        role,
        content: message_text(&m.content)?,
    })
}

fn message_text(content: &Value) -> Result<String, HttpError> {
    Ok(match content {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(parts) => {
            let mut text = String::new();
            for p in parts {
                match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => text.push_str(t),
                    _ => {
                        return Err(HttpError::bad_request(
                            "message content parts must be {\"type\": \"text\", \"text\": ...} (images and audio are not supported)",
                        ));
                    }
                }
            }
            text
        }
        _ => {
            return Err(HttpError::bad_request(
                "message content must be a string or a list of text parts",
            ));
        }
    })
}

fn stop_strings(v: Option<&Value>) -> Result<Vec<String>, HttpError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| s.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                HttpError::bad_request("'stop' must be a string or a list of strings")
            })?,
        Some(_) => {
            return Err(HttpError::bad_request(
                "'stop' must be a string or a list of strings",
            ));
        }
    };
    if list.len() > api::MAX_STOPS {
        return Err(HttpError::bad_request(format!(
            "at most {} stop strings",
            api::MAX_STOPS
        )));
    }
    Ok(list)
}

/// OpenAI's `tool_calls` list for `calls` (stream chunks carry each call's `index`).
pub fn tool_calls_json(calls: &[api::ToolCall], id_seed: u32, streamed: bool) -> Value {
    Value::Array(
        calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut v = json!({
                    "id": format!("call_{:08x}{i}", id_seed),
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                });
                if streamed {
                    v["index"] = json!(i);
                }
                v
            })
            .collect(),
    )
}

/// OpenAI's `finish_reason` (a cancelled generation has no client left to read it).
pub fn finish_reason(f: &Finish) -> &'static str {
    match f.reason {
        FinishReason::Stop => "stop",
        FinishReason::Length | FinishReason::Cancelled => "length",
    }
}

/// The `usage` object, with OpenAI's `prompt_tokens_details.cached_tokens`: the prompt
/// tokens reused from the prompt cache.
pub fn usage(f: &Finish) -> Value {
    json!({
        "prompt_tokens": f.prompt_tokens,
        "completion_tokens": f.completion_tokens,
        "total_tokens": f.prompt_tokens + f.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": f.cached_tokens},
    })
}

/// llama-server's `timings` object (its field names, so that tools reading llama-server's
/// statistics read Tandem's): prompt processing and generation times and rates, and the
/// speculative draft counts.
pub fn timings(f: &Finish) -> Value {
    let s = &f.stats;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    // Like llama-server: prompt_n counts the prompt tokens processed, cache_n those reused.
    let processed = f.prompt_tokens - f.cached_tokens;
    let prompt_ms = ms(s.prefill);
    let predicted_ms = ms(s.total.saturating_sub(s.prefill));
    let per_token = |ms: f64, n: usize| if n > 0 { ms / n as f64 } else { 0.0 };
    let per_second = |ms: f64, n: usize| if ms > 0.0 { 1e3 * n as f64 / ms } else { 0.0 };
    json!({
        "cache_n": f.cached_tokens,
        "prompt_n": processed,
        "prompt_ms": prompt_ms,
        "prompt_per_token_ms": per_token(prompt_ms, processed),
        "prompt_per_second": per_second(prompt_ms, processed),
        "predicted_n": f.completion_tokens,
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": per_token(predicted_ms, f.completion_tokens),
        "predicted_per_second": per_second(predicted_ms, f.completion_tokens),
        "draft_n": s.drafted,
        "draft_n_accepted": s.accepted,
    })
}

/// The `tandem` extension field: the speculative statistics of this generation.
pub fn tandem_stats(f: &Finish, draft_max: usize) -> Value {
    let s = &f.stats;
    let ms = |d: std::time::Duration| (d.as_secs_f64() * 1e4).round() / 10.0;
    json!({
        "drafter": f.drafter,
        "policy": f.policy,
        "draft_max": draft_max,
        "mean_k": s.mean_k(),
        "k_hist": s.k_hist,
        "rounds": s.rounds,
        "drafted": s.drafted,
        "accepted": s.accepted,
        "acceptance_rate": s.acceptance_rate(),
        "tokens_per_step": s.tokens_per_round(),
        "drafted_at": s.drafted_at,
        "accepted_at": s.accepted_at,
        "stop_string": f.stop_string,
        "prefill_ms": ms(s.prefill),
        "draft_ms": ms(s.draft),
        "verify_ms": ms(s.verify),
        "total_ms": ms(s.total),
        "tokens_per_s": s.tokens_per_s(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_tokens: 100,
            completion_default: 16,
        }
    }

    fn parse(v: Value, e: Endpoint) -> Result<Request, HttpError> {
        serde_json::from_value::<Body>(v)
            .unwrap()
            .to_request(e, &limits())
    }

    #[test]
    fn completion_defaults_follow_openai() {
        let r = parse(json!({"model": "m", "prompt": "Hi"}), Endpoint::Completions).unwrap();
        assert_eq!(r.prompt, Prompt::Raw("Hi".into()));
        assert_eq!(r.max_tokens, 16);
        let s = r.sampling.unwrap();
        assert_eq!((s.temp, s.top_p, s.top_k), (1.0, 1.0, 0));
        let r = parse(
            json!({"prompt": ["Hi"], "stop": "\n", "seed": 7, "temperature": 0}),
            Endpoint::Completions,
        )
        .unwrap();
        assert_eq!(r.stop, vec!["\n".to_string()]);
        assert_eq!(r.sampling.unwrap().seed, 7);
    }

    #[test]
    fn chat_messages_become_a_conversation() {
        let r = parse(
            json!({"messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]}
            ], "max_completion_tokens": 5}),
            Endpoint::Chat,
        )
        .unwrap();
        assert_eq!(
            r.prompt,
            Prompt::Chat(vec![
                Message::system("Be brief."),
                Message::user("Hi there")
            ])
        );
        assert_eq!(r.max_tokens, 5);
    }

    fn tool() -> Value {
        json!({"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}})
    }

    #[test]
    fn tools_describe_themselves_and_tool_turns_become_text() {
        let r = parse(
            json!({"messages": [
                {"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "12 C"},
            ], "tools": [tool()], "tool_choice": "required"}),
            Endpoint::Chat,
        )
        .unwrap();
        let Prompt::Chat(m) = &r.prompt else { panic!() };
        assert_eq!(m[0].role, Role::System);
        assert!(m[0].content.contains("get_weather"));
        assert_eq!(
            m[2].content,
            r#"{"tool_call":{"arguments":{"city":"Oslo"},"name":"get_weather"}}"#
        );
        assert_eq!(m[3].role, Role::User);
        assert!(m[3].content.contains(r#""tool_response""#) && m[3].content.contains("12 C"));
        assert!(
            matches!(&r.constraint, Some(api::Constraint::JsonSchema(s)) if s.contains("get_weather"))
        );
        // tool_choice none: the tools are not offered.
        let r = parse(
            json!({"messages": [{"role": "user", "content": "x"}], "tools": [tool()], "tool_choice": "none"}),
            Endpoint::Chat,
        )
        .unwrap();
        assert!(r.constraint.is_none());
    }

    #[test]
    fn bad_settings_are_400s() {
        for (body, e) in [
            (json!({"prompt": "x", "n": 2}), Endpoint::Completions),
            (
                json!({"prompt": "x", "max_tokens": 101}),
                Endpoint::Completions,
            ),
            (
                json!({"prompt": "x", "max_tokens": 0}),
                Endpoint::Completions,
            ),
            (json!({"prompt": [1, 2]}), Endpoint::Completions),
            (json!({"prompt": 5}), Endpoint::Completions),
            (json!({}), Endpoint::Completions),
            (json!({"prompt": "x", "stop": 3}), Endpoint::Completions),
            (
                json!({"prompt": "x", "presence_penalty": 0.5}),
                Endpoint::Completions,
            ),
            (json!({"prompt": "x", "logprobs": 2}), Endpoint::Completions),
            (
                json!({"messages": [{"role": "wizard", "content": "x"}]}),
                Endpoint::Chat,
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
                Endpoint::Chat,
            ),
            (json!({"prompt": "x"}), Endpoint::Chat),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "tools": [{}]}),
                Endpoint::Chat,
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "tools": [tool()],
                       "tool_choice": {"type": "function", "function": {"name": "other"}}}),
                Endpoint::Chat,
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}),
                Endpoint::Chat,
            ),
            (
                json!({"prompt": "x", "tools": [tool()]}),
                Endpoint::Completions,
            ),
            (
                json!({"messages": [{"role": "user", "content": "x", "tool_calls": [{}]}]}),
                Endpoint::Chat,
            ),
            (
                json!({"prompt": "x", "speculative.n_max": -1}),
                Endpoint::Completions,
            ),
            (
                json!({"prompt": "x", "speculative.n_max": 1000}),
                Endpoint::Completions,
            ),
            (
                json!({"prompt": "x", "speculative.n_max": 2, "speculative.n_min": 4}),
                Endpoint::Completions,
            ),
            (
                json!({"prompt": "x", "speculative.p_min": 1.5}),
                Endpoint::Completions,
            ),
            (
                json!({"prompt": "x", "tandem.draft": "magic"}),
                Endpoint::Completions,
            ),
            (
                json!({"prompt": "x", "tandem.policy": "greedy"}),
                Endpoint::Completions,
            ),
        ] {
            let err = parse(body.clone(), e).expect_err(&body.to_string());
            assert_eq!(err.status, 400, "{body}");
        }
    }

    #[test]
    fn speculation_settings_use_llama_servers_names() {
        let r = parse(
            json!({"prompt": "x", "speculative.n_max": 0, "speculative.n_min": 0, "speculative.p_min": 0.4}),
            Endpoint::Completions,
        )
        .unwrap();
        assert_eq!(
            r.speculation,
            api::Speculation {
                n_max: Some(0),
                n_min: Some(0),
                p_min: Some(0.4),
                ..Default::default()
            }
        );
        let r = parse(json!({"prompt": "x"}), Endpoint::Completions).unwrap();
        assert_eq!(r.speculation, api::Speculation::default());
    }

    #[test]
    fn wrong_types_fail_to_parse() {
        assert!(serde_json::from_value::<Body>(json!({"max_tokens": "ten"})).is_err());
        assert!(serde_json::from_value::<Body>(json!({"temperature": [1]})).is_err());
        assert!(serde_json::from_value::<Body>(json!({"messages": "hi"})).is_err());
    }
}
