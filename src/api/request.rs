//! What one generation asks for, as plain data: the prompt (text or a conversation), how
//! many tokens, how to sample, where to stop.

use crate::sampling::SamplingConfig;
use crate::session::DraftSpec;

use super::ApiError;

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Instructions for the assistant (OpenAI's `developer` role maps here too).
    System,
    /// The person talking to the assistant.
    User,
    /// An earlier reply of the assistant.
    Assistant,
}

impl Role {
    /// The role's name as chat templates spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "system" | "developer" => Ok(Role::System),
            "user" => Ok(Role::User),
            "assistant" => Ok(Role::Assistant),
            o => Err(format!(
                "unsupported message role '{o}' (system, developer, user, assistant)"
            )),
        }
    }
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// What was written.
    pub content: String,
}

impl Message {
    /// A message from `role`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
}

/// The text the model continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// Plain text, tokenized as is (what `/v1/completions` and `tandem generate --raw` do).
    Raw(String),
    /// A conversation rendered with the model's own chat template, ending where the
    /// assistant's next turn begins (`/v1/chat/completions`; `tandem generate` without
    /// `--raw` is a one-message conversation). Models without a template get the messages'
    /// contents joined by newlines.
    Chat(Vec<Message>),
}

/// One generation request. Build it with [`Request::chat`] or [`Request::raw`] and the
/// `with_*` setters.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// What to continue.
    pub prompt: Prompt,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// How to pick tokens; `None` uses the engine's default (see
    /// [`EngineBuilder::sampling`](super::EngineBuilder::sampling)).
    pub sampling: Option<SamplingConfig>,
    /// Generation ends before the first occurrence of any of these strings; the stop
    /// string itself is not returned.
    pub stop: Vec<String>,
    /// Speculation settings for this request (unset ones: the engine's).
    pub speculation: Speculation,
    /// Reuse the KV cells of the previous generation's common prefix, when the engine
    /// keeps them (llama-server's `cache_prompt`; default on).
    pub cache_prompt: bool,
    /// A grammar the answer must follow (`None`: free text).
    pub constraint: Option<Constraint>,
}

/// What the answer must look like: structured output, enforced in verification (output
/// exactly as plain decoding under the same grammar would give).
#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    /// A GBNF grammar (llama.cpp's format, root rule `root`).
    Gbnf(String),
    /// A JSON Schema (converted by llama.cpp's json-schema-to-grammar).
    JsonSchema(String),
    /// Any JSON object (`response_format: json_object`, `--json`).
    JsonObject,
}

impl Constraint {
    /// The grammar for `model`'s vocabulary, or why the schema or grammar is refused.
    pub fn grammar(
        &self,
        model: &std::sync::Arc<crate::llama::Model>,
    ) -> Result<crate::llama::Grammar, crate::llama::GrammarError> {
        use crate::llama::{Grammar, JSON_OBJECT_SCHEMA};
        match self {
            Constraint::Gbnf(g) => Grammar::new(model, g),
            Constraint::JsonSchema(s) => Grammar::from_schema(model, s),
            Constraint::JsonObject => Grammar::from_schema(model, JSON_OBJECT_SCHEMA),
        }
    }
}

/// Per-request speculation settings, llama-server's `speculative.*`: each `None` keeps
/// the engine's setting. None of them changes the output, only how fast it comes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Speculation {
    /// Most tokens drafted per round (`speculative.n_max`; 0 = plain decoding).
    pub n_max: Option<usize>,
    /// Drafts shorter than this are not verified (`speculative.n_min`).
    pub n_min: Option<usize>,
    /// The diffusion drafter's confidence cut: its draft ends at the first position whose
    /// top probability is below this (`speculative.p_min`, in [0, 1]).
    pub p_min: Option<f32>,
    /// Tandem's own: which of the engine's drafters to use (`none`, `ngram`, `diffusion`,
    /// `auto`), parsed as `--draft` is; the diffusion drafter only where the engine has one.
    pub draft: Option<String>,
    /// Tandem's own: the draft policy (`failfast` or `fixed`).
    pub policy: Option<crate::engine::PolicyKind>,
}

impl Speculation {
    /// The drafter this request uses, given the engine's (`engine`, its files resolved):
    /// the engine's own, or a subset of what it loaded.
    pub fn resolve_draft(&self, engine: &DraftSpec) -> Result<DraftSpec, String> {
        let Some(name) = &self.draft else {
            return Ok(engine.clone());
        };
        let asked: DraftSpec = name.parse()?;
        let (ngram, diffusion) = match engine {
            DraftSpec::Auto(n, d) => (n.clone(), Some(d.clone())),
            DraftSpec::Diffusion(d) => (Default::default(), Some(d.clone())),
            DraftSpec::Ngram(n) => (n.clone(), None),
            DraftSpec::None => (Default::default(), None),
        };
        // An Auto without a file is the n-gram drafter alone.
        let diffusion = diffusion.filter(|d| !d.path.as_os_str().is_empty());
        Ok(match asked {
            DraftSpec::None => DraftSpec::None,
            DraftSpec::Ngram(_) => DraftSpec::Ngram(ngram),
            DraftSpec::Diffusion(_) => DraftSpec::Diffusion(diffusion.ok_or_else(|| {
                "this engine has no diffusion drafter (start it with one to ask for it)".to_string()
            })?),
            DraftSpec::Auto(..) => DraftSpec::Auto(ngram, diffusion.unwrap_or_default()),
        })
    }
}

impl Speculation {
    /// Check the ranges.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(n) = self.n_max
            && n > super::MAX_DRAFT
        {
            return Err(format!(
                "speculative.n_max must be between 0 and {} (got {n})",
                super::MAX_DRAFT
            ));
        }
        if let Some(n) = self.n_min
            && n > super::MAX_DRAFT
        {
            return Err(format!(
                "speculative.n_min must be between 0 and {} (got {n})",
                super::MAX_DRAFT
            ));
        }
        if let (Some(lo), Some(hi)) = (self.n_min, self.n_max)
            && lo > hi
        {
            return Err(format!(
                "speculative.n_min ({lo}) must not exceed speculative.n_max ({hi})"
            ));
        }
        if let Some(p) = self.p_min
            && !(0.0..=1.0).contains(&p)
        {
            return Err(format!("speculative.p_min must be in [0, 1] (got {p})"));
        }
        Ok(())
    }
}

/// Most stop strings one request may carry (OpenAI allows 4; a few more cost nothing).
pub const MAX_STOPS: usize = 16;

impl Request {
    /// A request continuing a conversation; 256 tokens at most, engine sampling, no stops.
    pub fn chat(messages: Vec<Message>) -> Self {
        Self {
            prompt: Prompt::Chat(messages),
            max_tokens: 256,
            sampling: None,
            stop: Vec::new(),
            speculation: Speculation::default(),
            cache_prompt: true,
            constraint: None,
        }
    }

    /// A request continuing plain text (no chat template).
    pub fn raw(text: impl Into<String>) -> Self {
        Self {
            prompt: Prompt::Raw(text.into()),
            ..Self::chat(Vec::new())
        }
    }

    /// Set the most tokens to generate.
    pub fn with_max_tokens(mut self, n: usize) -> Self {
        self.max_tokens = n;
        self
    }

    /// Set the sampling for this request.
    pub fn with_sampling(mut self, s: SamplingConfig) -> Self {
        self.sampling = Some(s);
        self
    }

    /// Set the stop strings.
    pub fn with_stop(mut self, stop: Vec<String>) -> Self {
        self.stop = stop;
        self
    }

    /// Constrain the answer (a grammar, a JSON schema, any JSON object).
    pub fn with_constraint(mut self, c: Constraint) -> Self {
        self.constraint = Some(c);
        self
    }

    /// Set this request's speculation settings.
    pub fn with_speculation(mut self, s: Speculation) -> Self {
        self.speculation = s;
        self
    }

    /// Check the settings that do not need the model.
    pub(super) fn validate(&self) -> Result<(), ApiError> {
        let bad = |m: String| Err(ApiError::BadRequest(m));
        if self.max_tokens == 0 {
            return bad("max_tokens must be at least 1".into());
        }
        if self.stop.len() > MAX_STOPS {
            return bad(format!(
                "at most {MAX_STOPS} stop strings (got {})",
                self.stop.len()
            ));
        }
        match &self.prompt {
            Prompt::Raw(t) if t.trim().is_empty() => return Err(ApiError::EmptyPrompt),
            Prompt::Chat(m) if m.is_empty() => return bad("messages must not be empty".into()),
            Prompt::Chat(m) if m.iter().all(|m| m.content.trim().is_empty()) => {
                return Err(ApiError::EmptyPrompt);
            }
            _ => {}
        }
        if let Some(s) = &self.sampling {
            validate_sampling(s)?;
        }
        self.speculation.validate().map_err(ApiError::BadRequest)
    }
}

/// Check a sampling configuration's ranges.
pub(super) fn validate_sampling(s: &SamplingConfig) -> Result<(), ApiError> {
    check_sampling(s, &SamplingNames::API).map_err(ApiError::BadRequest)
}

/// How a front end spells the sampling settings in its error messages.
#[derive(Debug, Clone, Copy)]
pub struct SamplingNames {
    /// The temperature's name.
    pub temp: &'static str,
    /// The nucleus threshold's name.
    pub top_p: &'static str,
}

impl SamplingNames {
    /// The request fields' names (OpenAI's).
    pub const API: Self = Self {
        temp: "temperature",
        top_p: "top_p",
    };
    /// The command line's flags.
    pub const CLI: Self = Self {
        temp: "--temp",
        top_p: "--top-p",
    };
}

/// The one check of sampling settings' ranges, naming them as `names` says.
pub fn check_sampling(s: &SamplingConfig, names: &SamplingNames) -> Result<(), String> {
    if !s.temp.is_finite() || s.temp < 0.0 {
        return Err(format!("{} must be >= 0 (got {})", names.temp, s.temp));
    }
    if !(s.top_p > 0.0 && s.top_p <= 1.0) {
        return Err(format!(
            "{} must be in (0, 1] (got {})",
            names.top_p, s.top_p
        ));
    }
    Ok(())
}

/// The one check of a draft-length cap's range (`--draft-max`).
pub fn check_draft_max(k: usize) -> Result<(), String> {
    if (1..=super::MAX_DRAFT).contains(&k) {
        Ok(())
    } else {
        Err(format!(
            "draft max (--draft-max) must be between 1 and {} (got {k})",
            super::MAX_DRAFT
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::draft::NgramConfig;
    use crate::session::DiffusionSpec;

    #[test]
    fn a_request_picks_among_the_engines_drafters() {
        let file = DiffusionSpec {
            path: "d.gguf".into(),
            p_min: 0.0,
        };
        let auto = DraftSpec::Auto(NgramConfig::default(), file.clone());
        let pick = |d: &str, engine: &DraftSpec| {
            Speculation {
                draft: Some(d.into()),
                ..Default::default()
            }
            .resolve_draft(engine)
        };
        assert_eq!(pick("none", &auto).unwrap(), DraftSpec::None);
        assert_eq!(
            pick("ngram", &auto).unwrap(),
            DraftSpec::Ngram(NgramConfig::default())
        );
        assert_eq!(
            pick("diffusion", &auto).unwrap(),
            DraftSpec::Diffusion(file)
        );
        let ngram_only = DraftSpec::Ngram(NgramConfig::default());
        assert!(
            pick("diffusion", &ngram_only)
                .unwrap_err()
                .contains("no diffusion drafter")
        );
        assert!(pick("magic", &auto).is_err());
        assert_eq!(Speculation::default().resolve_draft(&auto).unwrap(), auto);
    }
}
