//! The measured verify-cost curve, cached on disk so that only the first run on a machine
//! pays the few seconds of measurement. Keyed by the model file (size and a hash of its
//! first and last MiB), the thread count, the verification head and this build.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::cost::CostModel;

/// Where cached curves live: `$TANDEM_CACHE_DIR`, else `$XDG_CACHE_HOME/tandem`, else
/// `~/.cache/tandem`; `None` when none can be named.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("TANDEM_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("tandem"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("tandem"))
}

/// The cache key of a curve for this model file and settings (hex).
pub fn cache_key(model: &Path, threads: usize, lazy_head: bool) -> std::io::Result<String> {
    const MIB: u64 = 1 << 20;
    let mut f = std::fs::File::open(model)?;
    let size = f.metadata()?.len();
    let mut h = Sha256::new();
    h.update(size.to_le_bytes());
    let mut buf = vec![0u8; MIB.min(size) as usize];
    f.read_exact(&mut buf)?;
    h.update(&buf);
    f.seek(SeekFrom::Start(size - buf.len() as u64))?;
    f.read_exact(&mut buf)?;
    h.update(&buf);
    h.update(format!(
        "threads={threads} lazy={lazy_head} build={} debug={}",
        env!("CARGO_PKG_VERSION"),
        cfg!(debug_assertions)
    ));
    Ok(h.finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn path_for(key: &str) -> Option<PathBuf> {
    cache_dir().map(|d| d.join(format!("cost-{key}.json")))
}

/// The cached curve for `key`, if there is a readable one.
pub fn load(key: &str) -> Option<CostModel> {
    let text = std::fs::read_to_string(path_for(key)?).ok()?;
    serde_json::from_str(&text).ok()
}

/// Cache `model` under `key` (best effort: a read-only home only costs a re-measurement).
pub fn save(key: &str, model: &CostModel) {
    let Some(path) = path_for(key) else { return };
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(path.parent().expect("a file in a folder"))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec(model)?)?;
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        tracing::info!("cost curve not cached at {}: {e}", path.display());
    }
}
