//! On-disk layout of collected distillation data, written so that an interrupted run
//! resumes where it stopped and loses at most the record being written.
//!
//! `DIR/meta.json` — what was collected (target, layers, widths); a resumed run must match.
//! `DIR/shard-NNNNN.bin` — records back to back, little-endian:
//! `b"TDR1"`, u32 prompt index, u32 prompt length, u32 token count `n`, u32 feature rows
//! `r` (= n − 1: the last token's successor is unknown), i32 × n tokens, f16 × r ×
//! n_features, then (when `meta.top_k` = k > 0) the target's soft labels: i32 × r × k
//! token ids and f16 × r × k probabilities (row i: the target's top k for the token after
//! position i, most likely first).
//! `DIR/index.jsonl` — one line per complete record, appended only after the record's
//! bytes are flushed; on resume, shard bytes beyond the last indexed record are cut off.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::kernels::q8::{f16_to_f32, f32_to_f16};
use crate::llama::Token;

const MAGIC: &[u8; 4] = b"TDR1";
/// A new shard starts once the current one passes this size.
pub const SHARD_BYTES: u64 = 256 << 20;

/// Why a data directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// A file operation failed.
    #[error("{path}: {err}")]
    Io {
        /// The path it failed on.
        path: String,
        /// The cause, shown in the message (not chained as a `source`, so that
        /// `{:#}` printing does not repeat it).
        err: std::io::Error,
    },
    /// A shard, the index or `meta.json` is malformed.
    #[error("{path}: {msg}")]
    Corrupt {
        /// The malformed file.
        path: String,
        /// What is wrong.
        msg: String,
    },
    /// The directory holds data collected with other settings.
    #[error(
        "{dir} holds data collected with different settings ({what}); use another --out or delete it"
    )]
    MetaMismatch {
        /// The data directory.
        dir: String,
        /// The stored and the requested settings.
        what: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ShardError + '_ {
    move |err| ShardError::Io {
        path: path.display().to_string(),
        err,
    }
}

/// What a data directory holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DistillMeta {
    /// Format tag (`tandem-distill-v1`).
    pub format: String,
    /// The target GGUF's file name.
    pub model: String,
    /// The target's vocabulary size.
    pub n_vocab: usize,
    /// The target's embedding width.
    pub n_embd: usize,
    /// Target layers whose inputs are stored (llama.cpp layer-input indices).
    pub target_layers: Vec<usize>,
    /// Features per position (`target_layers.len() × n_embd`).
    pub n_features: usize,
    /// Tokens generated per prompt.
    pub max_new: usize,
    /// Soft labels stored per position: the target's top `top_k` next-token probabilities
    /// (0: none, data from before soft labels).
    #[serde(default)]
    pub top_k: usize,
}

/// Largest finite f16. Features are stored saturated to it: Gemma 3's attention-sink
/// position (0) carries a few values beyond it, and an infinity there turns every
/// training step into NaNs.
const F16_MAX: f32 = 65504.0;

/// An infinity read back (data written before features were saturated) as `±F16_MAX`.
fn saturate(x: f32) -> f32 {
    if x.is_infinite() {
        F16_MAX.copysign(x)
    } else {
        x
    }
}

/// One prompt and its continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Index of the prompt in the prompt list.
    pub prompt_index: usize,
    /// Prompt length (tokens).
    pub n_prompt: usize,
    /// Prompt and continuation tokens.
    pub tokens: Vec<Token>,
    /// `(tokens.len() − 1) × n_features`, rounded to f16 (saturated at ±65,504).
    pub features: Vec<f32>,
    /// `(tokens.len() − 1) × top_k` token ids: the target's most likely next tokens after
    /// each position, most likely first (empty when the data has no soft labels).
    pub top_ids: Vec<Token>,
    /// Their probabilities (full-vocabulary softmax), rounded to f16.
    pub top_p: Vec<f32>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct IndexLine {
    prompt: usize,
    shard: String,
    offset: u64,
    bytes: u64,
    n_prompt: usize,
    n_total: usize,
}

/// A data directory opened for appending (and reading).
#[derive(Debug)]
pub struct Shards {
    dir: PathBuf,
    /// What the directory holds.
    pub meta: DistillMeta,
    index: Vec<IndexLine>,
    shard_no: usize,
    shard: Option<File>,
    shard_len: u64,
}

impl Shards {
    /// Open `dir` (created if missing). An existing directory must hold data with the same
    /// meta; a partial record left by an interrupted run is cut off.
    pub fn open(dir: &Path, meta: DistillMeta) -> Result<Self, ShardError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let meta_path = dir.join("meta.json");
        if meta_path.exists() {
            let old = read_meta(&meta_path)?;
            if old != meta {
                return Err(ShardError::MetaMismatch {
                    dir: dir.display().to_string(),
                    what: format!("have {old:?}, asked for {meta:?}"),
                });
            }
        } else {
            let json = serde_json::to_vec_pretty(&meta).expect("meta serializes");
            std::fs::write(&meta_path, json).map_err(io(&meta_path))?;
        }
        let index = read_index(dir)?;
        let mut s = Self {
            dir: dir.to_path_buf(),
            meta,
            shard_no: 0,
            shard: None,
            shard_len: 0,
            index,
        };
        if let Some(last) = s.index.last().cloned() {
            s.shard_no = shard_number(&last.shard).ok_or_else(|| ShardError::Corrupt {
                path: dir.join("index.jsonl").display().to_string(),
                msg: format!("bad shard name {}", last.shard),
            })?;
            let end = last.offset + last.bytes;
            let p = s.dir.join(&last.shard);
            let f = OpenOptions::new().write(true).open(&p).map_err(io(&p))?;
            let len = f.metadata().map_err(io(&p))?.len();
            if len < end {
                return Err(ShardError::Corrupt {
                    path: p.display().to_string(),
                    msg: format!("{len} bytes, the index says {end}"),
                });
            }
            f.set_len(end).map_err(io(&p))?; // drop a partial record
            s.shard_len = end;
            s.shard = Some(f);
        }
        Ok(s)
    }

    /// Open an existing data directory with whatever it holds (for reading).
    pub fn open_existing(dir: &Path) -> Result<Self, ShardError> {
        Self::open(dir, read_meta(&dir.join("meta.json"))?)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Prompt indices already collected.
    pub fn done(&self) -> std::collections::HashSet<usize> {
        self.index.iter().map(|l| l.prompt).collect()
    }

    /// Number of complete records.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the directory holds no records.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Tokens stored over all records.
    pub fn n_tokens(&self) -> usize {
        self.index.iter().map(|l| l.n_total).sum()
    }

    /// Append one record (durably: bytes first, then its index line).
    pub fn append(&mut self, r: &Record) -> Result<(), ShardError> {
        let nf = self.meta.n_features;
        let rows = r.tokens.len().saturating_sub(1);
        assert_eq!(r.features.len(), rows * nf, "feature rows");
        let k = self.meta.top_k;
        assert_eq!(r.top_ids.len(), rows * k, "soft-label rows");
        assert_eq!(r.top_p.len(), rows * k, "soft-label rows");
        if self.shard.is_none() || self.shard_len >= SHARD_BYTES {
            if self.shard.is_some() {
                self.shard_no += 1;
            }
            let p = self.dir.join(shard_name(self.shard_no));
            let f = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&p)
                .map_err(io(&p))?;
            self.shard = Some(f);
            self.shard_len = 0;
        }
        let mut buf = Vec::with_capacity(
            20 + 4 * r.tokens.len() + 2 * r.features.len() + 6 * r.top_ids.len(),
        );
        buf.extend_from_slice(MAGIC);
        for v in [r.prompt_index, r.n_prompt, r.tokens.len(), rows] {
            buf.extend_from_slice(&(v as u32).to_le_bytes());
        }
        for &t in &r.tokens {
            buf.extend_from_slice(&t.to_le_bytes());
        }
        for &x in &r.features {
            buf.extend_from_slice(&f32_to_f16(x.clamp(-F16_MAX, F16_MAX)).to_le_bytes());
        }
        for &t in &r.top_ids {
            buf.extend_from_slice(&t.to_le_bytes());
        }
        for &x in &r.top_p {
            buf.extend_from_slice(&f32_to_f16(x.clamp(0.0, 1.0)).to_le_bytes());
        }
        let name = shard_name(self.shard_no);
        let p = self.dir.join(&name);
        let f = self.shard.as_mut().expect("opened above");
        f.seek(SeekFrom::Start(self.shard_len)).map_err(io(&p))?;
        f.write_all(&buf).map_err(io(&p))?;
        f.sync_data().map_err(io(&p))?;
        let line = IndexLine {
            prompt: r.prompt_index,
            shard: name,
            offset: self.shard_len,
            bytes: buf.len() as u64,
            n_prompt: r.n_prompt,
            n_total: r.tokens.len(),
        };
        let ip = self.dir.join("index.jsonl");
        let mut idx = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&ip)
            .map_err(io(&ip))?;
        let mut text = serde_json::to_string(&line).expect("index line serializes");
        text.push('\n');
        idx.write_all(text.as_bytes()).map_err(io(&ip))?;
        idx.sync_data().map_err(io(&ip))?;
        self.shard_len += buf.len() as u64;
        self.index.push(line);
        Ok(())
    }

    /// The prompt length and tokens of record `i`, without its features.
    pub fn read_tokens(&self, i: usize) -> Result<(usize, Vec<Token>), ShardError> {
        let l = &self.index[i];
        let p = self.dir.join(&l.shard);
        let mut f = File::open(&p).map_err(io(&p))?;
        f.seek(SeekFrom::Start(l.offset)).map_err(io(&p))?;
        let mut buf = vec![0u8; 20 + 4 * l.n_total];
        f.read_exact(&mut buf).map_err(io(&p))?;
        if &buf[..4] != MAGIC {
            return Err(ShardError::Corrupt {
                path: p.display().to_string(),
                msg: format!("no record at offset {}", l.offset),
            });
        }
        let tokens = buf[20..]
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        Ok((l.n_prompt, tokens))
    }

    /// Read record `i` (in collection order).
    pub fn read(&self, i: usize) -> Result<Record, ShardError> {
        let l = &self.index[i];
        let p = self.dir.join(&l.shard);
        let corrupt = |msg: String| ShardError::Corrupt {
            path: p.display().to_string(),
            msg,
        };
        let mut f = File::open(&p).map_err(io(&p))?;
        f.seek(SeekFrom::Start(l.offset)).map_err(io(&p))?;
        let mut buf = vec![0u8; l.bytes as usize];
        f.read_exact(&mut buf).map_err(io(&p))?;
        if &buf[..4] != MAGIC {
            return Err(corrupt(format!("no record at offset {}", l.offset)));
        }
        let u =
            |k: usize| u32::from_le_bytes(buf[4 + 4 * k..8 + 4 * k].try_into().unwrap()) as usize;
        let (prompt_index, n_prompt, n, rows) = (u(0), u(1), u(2), u(3));
        let (nf, k) = (self.meta.n_features, self.meta.top_k);
        if 20 + 4 * n + 2 * rows * nf + 6 * rows * k != buf.len() || n != l.n_total {
            return Err(corrupt(format!(
                "record at offset {} has the wrong size",
                l.offset
            )));
        }
        let tokens = buf[20..20 + 4 * n]
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let f0 = 20 + 4 * n;
        let (l0, p0) = (f0 + 2 * rows * nf, f0 + 2 * rows * nf + 4 * rows * k);
        let f16s = |b: &[u8]| -> Vec<f32> {
            b.chunks_exact(2)
                .map(|b| saturate(f16_to_f32(u16::from_le_bytes([b[0], b[1]]))))
                .collect()
        };
        let top_ids = buf[l0..p0]
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        Ok(Record {
            prompt_index,
            n_prompt,
            tokens,
            features: f16s(&buf[f0..l0]),
            top_ids,
            top_p: f16s(&buf[p0..]),
        })
    }
}

fn read_meta(p: &Path) -> Result<DistillMeta, ShardError> {
    serde_json::from_slice(&std::fs::read(p).map_err(io(p))?).map_err(|e| ShardError::Corrupt {
        path: p.display().to_string(),
        msg: e.to_string(),
    })
}

fn shard_name(n: usize) -> String {
    format!("shard-{n:05}.bin")
}

fn shard_number(name: &str) -> Option<usize> {
    name.strip_prefix("shard-")?
        .strip_suffix(".bin")?
        .parse()
        .ok()
}

fn read_index(dir: &Path) -> Result<Vec<IndexLine>, ShardError> {
    let p = dir.join("index.jsonl");
    let f = match File::open(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(&p)(e)),
    };
    let mut out = Vec::new();
    for line in BufReader::new(f).lines() {
        let line = line.map_err(io(&p))?;
        if line.trim().is_empty() {
            continue;
        }
        // A torn last line (killed mid-write) ends the index; its record is dropped.
        match serde_json::from_str::<IndexLine>(&line) {
            Ok(l) => out.push(l),
            Err(_) => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> DistillMeta {
        DistillMeta {
            format: "tandem-distill-v1".into(),
            model: "m.gguf".into(),
            n_vocab: 100,
            n_embd: 4,
            target_layers: vec![1, 2],
            n_features: 8,
            max_new: 4,
            top_k: 2,
        }
    }

    fn rec(i: usize, n: usize) -> Record {
        Record {
            prompt_index: i,
            n_prompt: 2,
            tokens: (0..n as i32).collect(),
            features: (0..(n - 1) * 8).map(|v| v as f32 * 0.5).collect(),
            top_ids: (0..(n - 1) * 2).map(|v| v as i32 + 7).collect(),
            top_p: (0..(n - 1) * 2).map(|v| 0.5 / (1 + v % 2) as f32).collect(),
        }
    }

    #[test]
    fn records_round_trip_and_a_torn_write_is_dropped_on_resume() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Shards::open(dir.path(), meta()).unwrap();
        s.append(&rec(0, 5)).unwrap();
        s.append(&rec(3, 7)).unwrap();
        assert_eq!(s.read(1).unwrap(), rec(3, 7));
        drop(s);
        // An interrupted append: bytes without an index line.
        let p = dir.path().join("shard-00000.bin");
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"TDR1garbage").unwrap();
        drop(f);
        let mut s = Shards::open(dir.path(), meta()).unwrap();
        assert_eq!(s.done(), [0, 3].into_iter().collect());
        s.append(&rec(4, 3)).unwrap();
        assert_eq!(s.read(0).unwrap(), rec(0, 5));
        assert_eq!(s.read(2).unwrap(), rec(4, 3));
        assert_eq!(s.n_tokens(), 15);
        // Different settings are refused.
        let mut m = meta();
        m.max_new = 9;
        let e = Shards::open(dir.path(), m).unwrap_err();
        assert!(e.to_string().contains("different settings"), "{e}");
    }

    #[test]
    fn features_beyond_f16_are_stored_saturated_not_infinite() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Shards::open(dir.path(), meta()).unwrap();
        let mut r = rec(0, 2);
        r.features[..4].copy_from_slice(&[1e6, -3e5, f32::INFINITY, 2.5]);
        s.append(&r).unwrap();
        let back = s.read(0).unwrap().features;
        assert_eq!(back[..4], [F16_MAX, -F16_MAX, F16_MAX, 2.5]);
        // Data written before saturation holds f16 infinities; they read back saturated.
        assert_eq!(saturate(f32::NEG_INFINITY), -F16_MAX);
    }
}
