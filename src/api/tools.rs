//! Tool calls for models whose chat template does not describe tools (SmolLM2's and
//! Gemma 3's do not): the tools are described in the system message, the answer is held
//! to a JSON Schema over the tools' parameter schemas — `{"tool_call": {"name", "arguments"}}`
//! or, unless a call is required, `{"response": "..."}` — and the JSON is turned back into
//! OpenAI's `tool_calls`. The same shape as llama.cpp's generic tool-call format; the
//! grammar makes every call parse and name a real tool with arguments that fit its schema.

use serde_json::{Value, json};

use super::{ApiError, Constraint, Message, Prompt, Request, Role};

/// One callable function.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// The function's name (`[A-Za-z0-9_-]`, at most 64 characters, as OpenAI requires).
    pub name: String,
    /// What it does, for the model.
    pub description: Option<String>,
    /// A JSON Schema of its arguments (an object schema).
    pub parameters: Value,
}

/// Whether and which tool the answer must call (OpenAI's `tool_choice`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    /// Call a tool or answer in text, as the model prefers (the default).
    #[default]
    Auto,
    /// Call one of the tools.
    Required,
    /// Call this tool.
    Named(String),
}

/// The tools a request offers.
#[derive(Debug, Clone, PartialEq)]
pub struct Tools {
    /// The functions.
    pub tools: Vec<Tool>,
    /// Whether a call is required, and of which tool.
    pub choice: ToolChoice,
    /// Allow several calls in one answer (`{"tool_calls": [...]}`).
    pub parallel: bool,
}

/// A call the model asked for; `arguments` is a JSON text, as OpenAI sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The function's name.
    pub name: String,
    /// Its arguments as JSON text.
    pub arguments: String,
}

/// What an answer under [`Tools`] amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolReply {
    /// The model called tools.
    Calls(Vec<ToolCall>),
    /// The model answered in text (`{"response": ...}`, or text that is not the
    /// expected JSON: an answer cut by `max_tokens`).
    Content(String),
}

impl Tool {
    /// A tool from OpenAI's `{"type": "function", "function": {"name", "description",
    /// "parameters"}}`; a one-line reason when it is not one.
    pub fn from_openai(v: &Value) -> Result<Self, String> {
        if v.get("type").and_then(Value::as_str) != Some("function") {
            return Err("each tool must be {\"type\": \"function\", \"function\": {...}}".into());
        }
        let f = v
            .get("function")
            .filter(|f| f.is_object())
            .ok_or("a tool needs a 'function' object")?;
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .ok_or("a tool's function needs a 'name'")?;
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(format!(
                "tool name '{name}' must be 1-64 characters of a-z, A-Z, 0-9, _ and -"
            ));
        }
        let parameters = match f.get("parameters") {
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(p) if p.is_object() => p.clone(),
            Some(_) => return Err(format!("tool '{name}': 'parameters' must be an object")),
        };
        let description = match f.get("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(format!("tool '{name}': 'description' must be a string")),
        };
        Ok(Self {
            name: name.to_string(),
            description,
            parameters,
        })
    }
}

impl ToolChoice {
    /// OpenAI's `tool_choice`: `"auto"`, `"required"`, `{"type": "function", "function":
    /// {"name"}}`; `"none"` is `Ok(None)` (tools offered but not to be called).
    pub fn from_openai(v: Option<&Value>) -> Result<Option<Self>, String> {
        match v {
            None | Some(Value::Null) => Ok(Some(ToolChoice::Auto)),
            Some(Value::String(s)) => match s.as_str() {
                "auto" => Ok(Some(ToolChoice::Auto)),
                "required" => Ok(Some(ToolChoice::Required)),
                "none" => Ok(None),
                o => Err(format!(
                    "unsupported tool_choice '{o}' (none, auto, required, or a named function)"
                )),
            },
            Some(o) => match o.pointer("/function/name").and_then(Value::as_str) {
                Some(n) if o.get("type").and_then(Value::as_str) == Some("function") => {
                    Ok(Some(ToolChoice::Named(n.to_string())))
                }
                _ => Err(
                    "tool_choice must be a string or {\"type\": \"function\", \"function\": {\"name\": ...}}"
                        .into(),
                ),
            },
        }
    }
}

impl Tools {
    /// Check that there is a tool to call and that a named choice names one of them.
    pub fn validate(&self) -> Result<(), String> {
        if self.tools.is_empty() {
            return Err("tools must not be empty".into());
        }
        if let ToolChoice::Named(n) = &self.choice
            && !self.tools.iter().any(|t| &t.name == n)
        {
            return Err(format!(
                "tool_choice names '{n}', which is not among the tools"
            ));
        }
        for (i, t) in self.tools.iter().enumerate() {
            if self.tools[..i].iter().any(|u| u.name == t.name) {
                return Err(format!("tool '{}' is given twice", t.name));
            }
        }
        Ok(())
    }

    fn callable(&self) -> impl Iterator<Item = &Tool> {
        self.tools.iter().filter(move |t| match &self.choice {
            ToolChoice::Named(n) => &t.name == n,
            _ => true,
        })
    }

    /// The JSON Schema the answer must follow; `response` is the schema of a text answer
    /// (a string unless the request also asked for structured output). The embedded
    /// schemas' `$defs` / `definitions` move to the root, where their `#/$defs/…`
    /// references resolve; a name two of them define differently is refused.
    pub fn schema(&self, response: Option<Value>) -> Result<Value, String> {
        let mut defs = serde_json::Map::new();
        let mut hoist = |mut v: Value| -> Result<Value, String> {
            for key in ["$defs", "definitions"] {
                let Some(Value::Object(d)) = v.as_object_mut().and_then(|o| o.remove(key)) else {
                    continue;
                };
                let root = defs
                    .entry(key)
                    .or_insert_with(|| Value::Object(Default::default()));
                let root = root.as_object_mut().expect("an object");
                for (name, def) in d {
                    match root.get(&name) {
                        Some(old) if old != &def => {
                            return Err(format!("tool schemas define '{key}/{name}' differently"));
                        }
                        _ => {
                            root.insert(name, def);
                        }
                    }
                }
            }
            Ok(v)
        };
        let mut calls = Vec::new();
        for t in self.callable() {
            calls.push(json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "const": t.name},
                    "arguments": hoist(t.parameters.clone())?,
                },
                "required": ["name", "arguments"],
            }));
        }
        let response = response.map(&mut hoist).transpose()?;
        let one = if calls.len() == 1 {
            calls[0].clone()
        } else {
            json!({"anyOf": calls})
        };
        let call = if self.parallel {
            json!({
                "type": "object",
                "properties": {"tool_calls": {"type": "array", "items": one, "minItems": 1}},
                "required": ["tool_calls"],
            })
        } else {
            json!({
                "type": "object",
                "properties": {"tool_call": one},
                "required": ["tool_call"],
            })
        };
        let mut schema = match self.choice {
            ToolChoice::Auto => json!({"anyOf": [call, {
                "type": "object",
                "properties": {"response": response.unwrap_or(json!({"type": "string"}))},
                "required": ["response"],
            }]}),
            _ => call,
        };
        for (key, d) in defs {
            schema[key] = d;
        }
        Ok(schema)
    }

    /// The instructions added to the system message: the tools and the answer's shape.
    pub fn system_prompt(&self) -> String {
        let mut s = String::from("You can call these tools:\n");
        for t in &self.tools {
            let mut d = json!({"name": t.name, "parameters": t.parameters});
            if let Some(desc) = &t.description {
                d["description"] = json!(desc);
            }
            s.push_str(&d.to_string());
            s.push('\n');
        }
        let call = if self.parallel {
            r#"{"tool_calls": [{"name": "<tool name>", "arguments": {...}}, ...]}"#
        } else {
            r#"{"tool_call": {"name": "<tool name>", "arguments": {...}}}"#
        };
        match &self.choice {
            ToolChoice::Auto => s.push_str(&format!(
                "\nRespond in JSON, either {call} to call a tool, or {{\"response\": \"<your reply>\"}} to answer the user directly."
            )),
            ToolChoice::Required => {
                s.push_str(&format!("\nRespond in JSON with a tool call: {call}"))
            }
            ToolChoice::Named(n) => s.push_str(&format!(
                "\nRespond in JSON with a call of the tool '{n}': {call}"
            )),
        }
        s
    }

    /// Add the tool instructions to a conversation's system message (one is added first
    /// when there is none).
    pub fn add_to(&self, messages: &mut Vec<Message>) {
        let p = self.system_prompt();
        match messages.first_mut() {
            Some(m) if m.role == Role::System => {
                if !m.content.is_empty() {
                    m.content.push_str("\n\n");
                }
                m.content.push_str(&p);
            }
            _ => messages.insert(0, Message::system(p)),
        }
    }

    /// Read an answer generated under [`Tools::schema`].
    pub fn parse(&self, text: &str) -> ToolReply {
        let Ok(v) = serde_json::from_str::<Value>(text.trim()) else {
            return ToolReply::Content(text.to_string());
        };
        let call = |c: &Value| -> Option<ToolCall> {
            Some(ToolCall {
                name: c.get("name")?.as_str()?.to_string(),
                arguments: c.get("arguments")?.to_string(),
            })
        };
        if let Some(c) = v.get("tool_call").and_then(call) {
            return ToolReply::Calls(vec![c]);
        }
        if let Some(cs) = v.get("tool_calls").and_then(Value::as_array) {
            let calls: Option<Vec<_>> = cs.iter().map(call).collect();
            if let Some(calls) = calls.filter(|c| !c.is_empty()) {
                return ToolReply::Calls(calls);
            }
        }
        match v.get("response") {
            Some(Value::String(s)) => ToolReply::Content(s.clone()),
            Some(o) => ToolReply::Content(o.to_string()),
            None => ToolReply::Content(text.to_string()),
        }
    }
}

/// An earlier assistant turn that called tools, as the model wrote it (for templates
/// without a tool-call syntax): `{"tool_call": ...}` or `{"tool_calls": [...]}`.
pub fn calls_message(calls: &[ToolCall]) -> Message {
    let one = |c: &ToolCall| {
        let args = serde_json::from_str::<Value>(&c.arguments)
            .unwrap_or_else(|_| Value::String(c.arguments.clone()));
        json!({"name": c.name, "arguments": args})
    };
    let v = match calls {
        [c] => json!({"tool_call": one(c)}),
        cs => json!({"tool_calls": cs.iter().map(one).collect::<Vec<_>>()}),
    };
    Message::assistant(v.to_string())
}

/// A tool's result, as a user turn (templates without a `tool` role).
pub fn result_message(name: Option<&str>, call_id: Option<&str>, content: &str) -> Message {
    let mut r = json!({"content": content});
    if let Some(n) = name {
        r["tool"] = json!(n);
    }
    if let Some(id) = call_id {
        r["tool_call_id"] = json!(id);
    }
    Message::user(json!({"tool_response": r}).to_string())
}

impl Request {
    /// Offer `tools` (chat prompts only): the system message describes them and the answer
    /// is held to [`Tools::schema`]; read it back with [`Tools::parse`]. A JSON Schema or
    /// JSON object constraint already set becomes the schema of a text answer.
    pub fn with_tools(mut self, tools: &Tools) -> Result<Self, ApiError> {
        tools.validate().map_err(ApiError::BadRequest)?;
        let Prompt::Chat(messages) = &mut self.prompt else {
            return Err(ApiError::BadRequest("tools need a chat prompt".into()));
        };
        let response = match self.constraint.take() {
            None => None,
            Some(Constraint::JsonObject) => Some(json!({"type": "object"})),
            Some(Constraint::JsonSchema(s)) => Some(serde_json::from_str(&s).map_err(|e| {
                ApiError::BadRequest(format!(
                    "the JSON schema cannot be converted to a grammar: not JSON ({e})"
                ))
            })?),
            Some(Constraint::Gbnf(_)) => {
                return Err(ApiError::BadRequest(
                    "a grammar cannot be combined with tools".into(),
                ));
            }
        };
        let schema = tools.schema(response).map_err(ApiError::BadRequest)?;
        tools.add_to(messages);
        self.constraint = Some(Constraint::JsonSchema(schema.to_string()));
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Tools {
        Tools {
            tools: vec![
                Tool::from_openai(&json!({"type": "function", "function": {
                    "name": "get_weather", "description": "Weather in a city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                   "required": ["city"]}}}))
                .unwrap(),
                Tool::from_openai(&json!({"type": "function", "function": {"name": "now"}}))
                    .unwrap(),
            ],
            choice: ToolChoice::Auto,
            parallel: false,
        }
    }

    #[test]
    fn openai_tools_and_choices_parse_or_say_why() {
        assert!(Tool::from_openai(&json!({"type": "function"})).is_err());
        assert!(
            Tool::from_openai(&json!({"type": "function", "function": {"name": "a b"}}))
                .unwrap_err()
                .contains("a-z")
        );
        assert_eq!(ToolChoice::from_openai(None), Ok(Some(ToolChoice::Auto)));
        assert_eq!(ToolChoice::from_openai(Some(&json!("none"))), Ok(None));
        assert_eq!(
            ToolChoice::from_openai(Some(
                &json!({"type": "function", "function": {"name": "now"}})
            )),
            Ok(Some(ToolChoice::Named("now".into())))
        );
        assert!(ToolChoice::from_openai(Some(&json!("sometimes"))).is_err());
        let mut t = weather();
        t.choice = ToolChoice::Named("nope".into());
        assert!(t.validate().unwrap_err().contains("nope"));
    }

    #[test]
    fn schemas_convert_to_grammars() {
        for (choice, parallel) in [
            (ToolChoice::Auto, false),
            (ToolChoice::Required, true),
            (ToolChoice::Named("get_weather".into()), false),
        ] {
            let t = Tools {
                choice,
                parallel,
                ..weather()
            };
            let s = t.schema(None).unwrap().to_string();
            crate::llama::json_schema_to_gbnf(&s).unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        // A Pydantic-style tool whose parameters refer to their own `$defs`.
        let mut t = weather();
        t.tools[1].parameters = json!({
            "$defs": {"Place": {"type": "object", "properties": {"city": {"type": "string"}}}},
            "type": "object", "properties": {"where": {"$ref": "#/$defs/Place"}}});
        let s = t.schema(None).unwrap().to_string();
        crate::llama::json_schema_to_gbnf(&s).unwrap_or_else(|e| panic!("{s}: {e}"));
        let mut clash = t.clone();
        clash.tools[0].parameters =
            json!({"$defs": {"Place": {"type": "integer"}}, "type": "object"});
        assert!(clash.schema(None).unwrap_err().contains("Place"));
    }

    #[test]
    fn answers_become_calls_or_content() {
        let t = weather();
        assert_eq!(
            t.parse(r#"{"tool_call": {"name": "get_weather", "arguments": {"city": "Oslo"}}}"#),
            ToolReply::Calls(vec![ToolCall {
                name: "get_weather".into(),
                arguments: r#"{"city":"Oslo"}"#.into()
            }])
        );
        assert_eq!(
            t.parse(r#"{"response": "Hello"}"#),
            ToolReply::Content("Hello".into())
        );
        assert_eq!(
            t.parse(r#"{"tool_call": {"na"#),
            ToolReply::Content(r#"{"tool_call": {"na"#.into())
        );
        let back = calls_message(&[ToolCall {
            name: "now".into(),
            arguments: "{}".into(),
        }]);
        assert!(matches!(t.parse(&back.content), ToolReply::Calls(c) if c[0].name == "now"));
    }

    #[test]
    fn requests_gain_the_instructions_and_the_schema() {
        let r = Request::chat(vec![Message::system("Be brief."), Message::user("Oslo?")])
            .with_constraint(Constraint::JsonObject)
            .with_tools(&weather())
            .unwrap();
        let Prompt::Chat(m) = &r.prompt else { panic!() };
        assert_eq!(m.len(), 2);
        assert!(
            m[0].content
                .starts_with("Be brief.\n\nYou can call these tools:")
        );
        let Some(Constraint::JsonSchema(s)) = &r.constraint else {
            panic!()
        };
        assert!(s.contains(r#""response":{"type":"object"}"#), "{s}");
        assert!(
            Request::raw("x")
                .with_tools(&weather())
                .unwrap_err()
                .to_string()
                .contains("chat")
        );
    }
}
