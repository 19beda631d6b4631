//! A loaded target ready to generate: the library entry point the CLI (and embedders) use.

use std::path::PathBuf;
use std::sync::Arc;

use crate::draft::{Drafter, NgramConfig, NgramDrafter, NoDrafter};
use crate::engine::{self, EngineConfig, EngineError, Generation};
use crate::models::{self, FetchError};
use crate::target::{Context, ContextParams, Model, ModelParams, TargetError, Token};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("the prompt is empty")]
    EmptyPrompt,
}

/// Which drafter to use. Plain data, parsed from `--draft`.
#[derive(Debug, Clone, PartialEq)]
pub enum DraftSpec {
    None,
    Ngram(NgramConfig),
}

impl DraftSpec {
    pub fn build(&self) -> Box<dyn Drafter> {
        match self {
            DraftSpec::None => Box::new(NoDrafter),
            DraftSpec::Ngram(c) => Box::new(NgramDrafter::new(c.clone())),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            DraftSpec::None => "none",
            DraftSpec::Ngram(_) => "ngram",
        }
    }
}

impl std::str::FromStr for DraftSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(DraftSpec::None),
            "ngram" => Ok(DraftSpec::Ngram(NgramConfig::default())),
            other => Err(format!("unknown drafter '{other}' (choose: none, ngram)")),
        }
    }
}

/// How to open a session. Plain data.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// A GGUF path or a manifest name (fetched on first use).
    pub model: String,
    pub context: ContextParams,
    pub model_params: ModelParams,
}

pub struct Session {
    pub model: Arc<Model>,
    pub ctx: Context,
    pub path: PathBuf,
}

impl Session {
    pub fn open(cfg: &SessionConfig) -> Result<Self, SessionError> {
        let path = models::resolve(&cfg.model)?;
        let model = Arc::new(Model::load(&path, &cfg.model_params)?);
        let ctx = Context::new(model.clone(), &cfg.context)?;
        Ok(Self { model, ctx, path })
    }

    /// Tokenize a user prompt: through the model's chat template unless `raw` or the
    /// model has none.
    pub fn prompt_tokens(&self, prompt: &str, raw: bool) -> Result<Vec<Token>, SessionError> {
        if prompt.trim().is_empty() {
            return Err(SessionError::EmptyPrompt);
        }
        let text = if raw {
            None
        } else {
            self.model.apply_chat_template(prompt)?
        };
        Ok(match text {
            Some(t) => self.model.tokenize(&t, true, true)?,
            None => self.model.tokenize(prompt, true, false)?,
        })
    }

    pub fn generate(
        &mut self,
        prompt: &[Token],
        max_new: usize,
        drafter: &mut dyn Drafter,
        cfg: &EngineConfig,
        on_token: &mut dyn FnMut(Token) -> bool,
    ) -> Result<Generation, SessionError> {
        Ok(engine::generate(
            &mut self.ctx,
            drafter,
            prompt,
            max_new,
            cfg,
            on_token,
        )?)
    }
}
