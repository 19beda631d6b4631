//! Collaborative decoding of several GGUF models — a weighted ensemble or contrastive
//! decoding — naive or sped up by speculation with alternating proposer/verifier roles
//! (CoS, arXiv 2502.01662). Lossless with respect to the combined distribution r: greedy
//! output is r's argmax at every position, sampled output is distributed as r.

pub mod combine;
mod cos;
pub mod engine;

use std::path::Path;

pub use combine::Combine;
pub use engine::{CollabConfig, CollabMode, CollabOutput, CollabStats, generate};

use crate::gguf::{Gguf, GgufError, Value};

/// Why models cannot collaborate: their vocabularies could not be read or differ.
#[derive(Debug, thiserror::Error)]
pub enum VocabError {
    /// A model's GGUF could not be read.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// A model file has no tokenizer vocabulary.
    #[error("{path}: no tokenizer vocabulary (tokenizer.ggml.tokens)")]
    NoVocab {
        /// The model file's path.
        path: String,
    },
    /// Two models' vocabularies differ.
    #[error("{a} and {b} have different vocabularies: {why}")]
    Mismatch {
        /// The first model's path.
        a: String,
        /// The path of the model whose vocabulary differs.
        b: String,
        /// How the vocabularies differ.
        why: String,
    },
}

fn tokens(g: &Gguf) -> Option<Vec<&str>> {
    match g.get("tokenizer.ggml.tokens")? {
        Value::Array(a) => a
            .iter()
            .map(|v| match v {
                Value::Str(s) => Some(s.as_str()),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// Models collaborate token by token, so they must share one vocabulary: the same size
/// and the same token texts at every id.
pub fn check_same_vocab(paths: &[&Path]) -> Result<(), VocabError> {
    let files: Vec<Gguf> = paths
        .iter()
        .map(|p| Gguf::open(p))
        .collect::<Result<_, _>>()?;
    let first = tokens(&files[0]).ok_or_else(|| VocabError::NoVocab {
        path: paths[0].display().to_string(),
    })?;
    for (g, p) in files.iter().zip(paths).skip(1) {
        let other = tokens(g).ok_or_else(|| VocabError::NoVocab {
            path: p.display().to_string(),
        })?;
        let mismatch = |why: String| VocabError::Mismatch {
            a: paths[0].display().to_string(),
            b: p.display().to_string(),
            why,
        };
        if other.len() != first.len() {
            return Err(mismatch(format!(
                "{} vs {} tokens",
                first.len(),
                other.len()
            )));
        }
        let diff: Vec<String> = first
            .iter()
            .zip(&other)
            .enumerate()
            .filter(|(_, (x, y))| x != y)
            .take(5)
            .map(|(i, (x, y))| format!("token {i}: {x:?} vs {y:?}"))
            .collect();
        if !diff.is_empty() {
            let n = first.iter().zip(&other).filter(|(x, y)| x != y).count();
            return Err(mismatch(format!(
                "{n} token texts differ, e.g. {}",
                diff.join(", ")
            )));
        }
    }
    Ok(())
}
