//! Loading a llama.cpp `dflash` drafter GGUF and checking it against the target.

use std::path::Path;
use std::sync::Arc;

use super::linear::Linear;
use crate::gguf::{GgmlType, Gguf, GgufError, Value};
use crate::head::OutputHead;
use crate::kernels::q8;
use crate::llama::{Model, Token};

/// Why a DFlash drafter file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DiffusionError {
    /// The GGUF could not be read.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// The file's architecture is not `dflash`.
    #[error("{path}: architecture is '{arch}', not a DFlash drafter ('dflash')")]
    NotDflash {
        /// The drafter file's path.
        path: String,
        /// The architecture found.
        arch: String,
    },
    /// The file uses a DFlash variant or feature Tandem does not run.
    #[error("{path}: {what} is not supported by Tandem's diffusion drafter (plain DFlash only)")]
    Unsupported {
        /// The drafter file's path.
        path: String,
        /// The unsupported feature.
        what: String,
    },
    /// A required metadata key is missing or invalid.
    #[error("{path}: missing or invalid metadata '{key}'")]
    Meta {
        /// The drafter file's path.
        path: String,
        /// The metadata key.
        key: String,
    },
    /// A tensor is missing or has the wrong type or shape.
    #[error("{path}: tensor {name}: {why}")]
    Tensor {
        /// The path of the file holding the tensor (the drafter's, or the target's when shared).
        path: String,
        /// The tensor's name.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// The drafter does not fit the target (layers, vocabulary, sizes).
    #[error("{path}: drafter does not fit the target {target}: {why}")]
    Mismatch {
        /// The drafter file's path.
        path: String,
        /// The target model's path.
        target: String,
        /// What does not fit.
        why: String,
    },
}

/// Hyper-parameters read from the drafter's metadata.
#[derive(Debug, Clone)]
pub struct DflashConfig {
    /// Hidden size (the target's embedding length).
    pub n_embd: usize,
    /// Number of drafter layers.
    pub n_layer: usize,
    /// Number of attention (query) heads.
    pub n_head: usize,
    /// Number of key/value heads.
    pub n_head_kv: usize,
    /// Size of one attention head.
    pub head_dim: usize,
    /// Feed-forward hidden size.
    pub n_ff: usize,
    /// RMS-norm epsilon.
    pub eps: f32,
    /// RoPE frequency base.
    pub rope_base: f32,
    /// RoPE position scale (1 / linear scaling factor; 1 = none).
    pub rope_freq_scale: f32,
    /// Number of rotated dimensions per head.
    pub n_rot: usize,
    /// Attention score scale (default 1/sqrt(head_dim)).
    pub kq_scale: f32,
    /// Multiplier on the token embeddings, if any.
    pub embd_scale: Option<f32>,
    /// Multiplier on the attention output projection, if any.
    pub value_scale: Option<f32>,
    /// GELU instead of SiLU in the gated MLP.
    pub gelu: bool,
    /// Positions per block (the last token plus `block_size - 1` masks).
    pub block_size: usize,
    /// Causal block attention (always false: loading rejects causal drafters).
    pub causal: bool,
    /// Target layers whose inputs are fused (llama.cpp's layer-input indices).
    pub target_layers: Vec<usize>,
    /// Id of the mask token.
    pub mask_token: Token,
}

pub(super) struct Layer {
    pub attn_norm: Vec<f32>,
    pub wq: Linear,
    pub wk: Linear,
    pub wv: Option<Linear>,
    pub wo: Linear,
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub attn_post_norm: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    pub ffn_gate: Linear,
    pub ffn_up: Linear,
    pub ffn_down: Linear,
    pub ffn_post_norm: Option<Vec<f32>>,
    pub out_scale: Option<f32>,
}

/// The drafter's output projection.
pub(super) enum Head {
    /// The target's own head (full vocabulary, shared weights).
    Shared(Arc<OutputHead>),
    /// The drafter's head; with `d2t` its rows are a reduced vocabulary mapped to target ids.
    Own { w: Linear, d2t: Option<Vec<Token>> },
}

/// Token embeddings: the drafter's own or the target's (shared), kept as stored.
pub struct Embeddings {
    pub(super) ty: GgmlType,
    pub(super) row_bytes: usize,
    pub(super) data: Vec<u8>,
}

impl Embeddings {
    /// Write token `t`'s embedding, widened to f32, into `out`.
    pub fn row(&self, t: Token, out: &mut [f32]) {
        let b = &self.data[t as usize * self.row_bytes..(t as usize + 1) * self.row_bytes];
        match self.ty {
            GgmlType::F32 => {
                for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            GgmlType::F16 => {
                for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
                    *o = q8::f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
                }
            }
            GgmlType::Bf16 => {
                for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
                    *o = crate::gguf::write::bf16_to_f32(u16::from_le_bytes([c[0], c[1]]));
                }
            }
            GgmlType::Q8_0 => {
                for (o, blk) in out.chunks_exact_mut(q8::QK).zip(b.chunks_exact(34)) {
                    let d = q8::f16_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
                    for (x, &q) in o.iter_mut().zip(&blk[2..]) {
                        *x = q as i8 as f32 * d;
                    }
                }
            }
            _ => unreachable!("checked at load"),
        }
    }
}

impl Embeddings {
    /// The target's token embeddings (`token_embd.weight`), kept as stored: F32, F16, BF16
    /// or Q8_0 — what a drafter sharing them reads.
    pub fn of_target(t: &Gguf) -> Result<Self, DiffusionError> {
        Self::of_tensor(t, "token_embd.weight")
    }

    /// Rows of the matrix `name` of `t` (an embedding or output head).
    pub fn of_tensor(t: &Gguf, name: &str) -> Result<Self, DiffusionError> {
        let p = t.path().display().to_string();
        let info = t.tensor(name).ok_or_else(|| DiffusionError::Tensor {
            path: p.clone(),
            name: name.into(),
            why: "missing".into(),
        })?;
        let n_embd = info.dims[0] as usize;
        let (ty, data) = t.read_tensor(name)?;
        if !matches!(
            ty,
            GgmlType::F32 | GgmlType::F16 | GgmlType::Bf16 | GgmlType::Q8_0
        ) {
            return Err(DiffusionError::Tensor {
                path: p,
                name: name.into(),
                why: format!("type {ty:?}: shared embeddings must be F32, F16, BF16 or Q8_0"),
            });
        }
        let (per, bytes) = ty.block();
        Ok(Self {
            ty,
            row_bytes: n_embd / per * bytes,
            data,
        })
    }

    /// Embeddings held as f32 rows of `width` (tests, tiny fixtures).
    pub fn from_f32(rows: &[f32], width: usize) -> Self {
        Self {
            ty: GgmlType::F32,
            row_bytes: width * 4,
            data: rows.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    /// Width of a row.
    pub fn width(&self) -> usize {
        let (per, bytes) = self.ty.block();
        self.row_bytes / bytes * per
    }

    /// Rows of `ids`, concatenated.
    pub fn rows(&self, ids: &[Token]) -> Vec<f32> {
        let d = self.width();
        let mut out = vec![0.0f32; ids.len() * d];
        for (o, &t) in out.chunks_exact_mut(d).zip(ids) {
            self.row(t, o);
        }
        out
    }
}

/// A loaded DFlash drafter, checked against its target.
pub struct DflashModel {
    /// Hyper-parameters from the drafter's metadata.
    pub cfg: DflashConfig,
    pub(super) fc: Linear,
    pub(super) enc_norm: Vec<f32>,
    pub(super) layers: Vec<Layer>,
    pub(super) out_norm: Vec<f32>,
    pub(super) embd: Embeddings,
    pub(super) head: Head,
    /// Target vocabulary size (logits are over target ids).
    pub n_vocab: usize,
    pub(super) pool: crate::kernels::par::Pool,
}

impl std::fmt::Debug for DflashModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DflashModel")
            .field("cfg", &self.cfg)
            .finish()
    }
}

/// Tensor name prefixes of DFlash variants Tandem does not run.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("selector_", "the DFlash2 selector"),
    ("attn_conv_", "the DFlash2 convolutions"),
    ("ffn_conv_", "the DFlash2 convolutions"),
    ("markov_", "the DSpark Markov head"),
    ("conf_proj", "the DSpark confidence head"),
    ("hc_", "DeepSeek-V4 hyper-connections"),
    ("attn_sinks", "attention sinks"),
    ("rope_freqs", "per-dimension RoPE frequencies"),
    ("attn_q_a", "DeepSeek-V4 attention"),
    ("attn_kv", "DeepSeek-V4 attention"),
    ("exp_probs", "a mixture of experts"),
    ("ffn_gate_inp", "a mixture of experts"),
];

impl DflashModel {
    /// Load `path` for `target`. `head` is the target's output head (shared when the drafter
    /// has no head of its own).
    pub fn load(
        path: &Path,
        target: &Model,
        head: impl FnOnce() -> Option<Arc<OutputHead>>,
        threads: usize,
    ) -> Result<Self, DiffusionError> {
        let p = path.display().to_string();
        let g = Gguf::open(path)?;
        let arch = g.arch().unwrap_or("").to_string();
        if arch != "dflash" {
            return Err(DiffusionError::NotDflash { path: p, arch });
        }
        let unsupported = |what: &str| DiffusionError::Unsupported {
            path: p.clone(),
            what: what.to_string(),
        };
        let mismatch = |why: String| DiffusionError::Mismatch {
            path: p.clone(),
            target: target.path().to_string(),
            why,
        };
        for t in &g.tensors {
            let base = t.name.split_once('.').map_or(t.name.as_str(), |(a, b)| {
                if a == "blk" {
                    b.split_once('.').map_or(b, |x| x.1)
                } else {
                    a
                }
            });
            if let Some((_, what)) = UNSUPPORTED.iter().find(|(pre, _)| base.starts_with(pre)) {
                return Err(unsupported(&format!("{what} (tensor {})", t.name)));
            }
            if t.name.ends_with(".scale") {
                return Err(unsupported(&format!("a weight scale (tensor {})", t.name)));
            }
        }

        let key = |k: &str| format!("dflash.{k}");
        let meta = |k: &str| DiffusionError::Meta {
            path: p.clone(),
            key: key(k),
        };
        let int = |k: &str| -> Result<usize, DiffusionError> {
            g.get_int(&key(k))
                .filter(|&v| v > 0)
                .map(|v| v as usize)
                .ok_or_else(|| meta(k))
        };
        let float = |k: &str| g.get_float(&key(k)).map(|v| v as f32);
        for (k, what) in [
            ("hyper_connection_count", "DeepSeek-V4 DSpark"),
            ("selector_rank", "the DFlash2 selector"),
            ("attention.sliding_window", "sliding-window attention"),
        ] {
            if g.get_int(&key(k)).is_some_and(|v| v > 0) {
                return Err(unsupported(what));
            }
        }
        if let Some(Value::Array(s)) = g.get(&key("rope.dimension_sections"))
            && s.iter().any(|v| *v != Value::Int(0))
        {
            return Err(unsupported("M-RoPE sections"));
        }
        let n_embd = int("embedding_length")?;
        let n_layer = int("block_count")?;
        let n_head = int("attention.head_count")?;
        let n_head_kv = g
            .get_int(&key("attention.head_count_kv"))
            .map_or(n_head, |v| v as usize);
        if n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(meta("attention.head_count_kv"));
        }
        let head_dim = g
            .get_int(&key("attention.key_length"))
            .map_or(n_embd / n_head, |v| v as usize);
        if g.get_int(&key("attention.value_length"))
            .is_some_and(|v| v as usize != head_dim)
        {
            return Err(unsupported("different key and value head sizes"));
        }
        let n_rot = g
            .get_int(&key("rope.dimension_count"))
            .map_or(head_dim, |v| v as usize);
        if n_rot > head_dim || n_rot % 2 != 0 {
            return Err(meta("rope.dimension_count"));
        }
        let rope_freq_scale = match g.get_str(&key("rope.scaling.type")) {
            None | Some("none") => 1.0,
            Some("linear") => 1.0 / float("rope.scaling.factor").unwrap_or(1.0),
            Some(t) => return Err(unsupported(&format!("RoPE scaling '{t}'"))),
        };
        let gelu = match g.get_str(&key("hidden_activation")) {
            None | Some("silu") => false,
            Some("gelu") | Some("gelu_pytorch_tanh") => true,
            Some(a) => return Err(unsupported(&format!("hidden activation '{a}'"))),
        };
        let target_layers: Vec<usize> = match g.get(&key("target_layers")) {
            Some(Value::Array(v)) if !v.is_empty() => v
                .iter()
                .map(|x| match x {
                    Value::Int(i) if *i >= 0 => Ok(*i as usize),
                    _ => Err(meta("target_layers")),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(meta("target_layers")),
        };
        for &l in &target_layers {
            if l >= target.n_layer() {
                return Err(mismatch(format!(
                    "target layer {l} is out of range (the target has {} layers)",
                    target.n_layer()
                )));
            }
            if l == 0 {
                return Err(unsupported("target layer 0 (the embedding input)"));
            }
        }
        let causal = matches!(g.get(&key("attention.causal")), Some(Value::Bool(true)))
            || g.get_str(&key("attention.causal")) == Some("true");
        if causal {
            return Err(unsupported("causal block attention"));
        }
        let cfg = DflashConfig {
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            n_ff: int("feed_forward_length")?,
            eps: float("attention.layer_norm_rms_epsilon")
                .ok_or_else(|| meta("attention.layer_norm_rms_epsilon"))?,
            rope_base: float("rope.freq_base").unwrap_or(10_000.0),
            rope_freq_scale,
            n_rot,
            kq_scale: float("attention.scale")
                .filter(|&s| s != 0.0)
                .unwrap_or(1.0 / (head_dim as f32).sqrt()),
            embd_scale: float("embedding_scale").filter(|&s| s != 0.0),
            value_scale: float("attention.value_scale").filter(|&s| s != 0.0),
            gelu,
            block_size: g
                .get_int(&key("block_size"))
                .map_or(16, |v| v.max(2) as usize),
            causal,
            target_layers,
            mask_token: g
                .get_int("tokenizer.ggml.mask_token_id")
                .filter(|&m| m >= 0)
                .ok_or_else(|| DiffusionError::Meta {
                    path: p.clone(),
                    key: "tokenizer.ggml.mask_token_id".into(),
                })? as Token,
        };

        // Vocabulary: the drafter must speak the target's tokens.
        let n_vocab = target.n_vocab();
        if cfg.mask_token as usize >= n_vocab {
            return Err(mismatch(format!(
                "mask token {} is outside the target's vocabulary of {n_vocab}",
                cfg.mask_token
            )));
        }
        let tg = Gguf::open(Path::new(target.path()))?;
        match (
            g.get("tokenizer.ggml.tokens"),
            tg.get("tokenizer.ggml.tokens"),
        ) {
            (Some(Value::Array(a)), Some(Value::Array(b))) => {
                if a.len() != b.len() {
                    return Err(mismatch(format!(
                        "vocabulary of {} tokens, the target has {}",
                        a.len(),
                        b.len()
                    )));
                }
                if let Some(i) = (0..a.len()).find(|&i| a[i] != b[i]) {
                    return Err(mismatch(format!(
                        "a different vocabulary (token {i} differs)"
                    )));
                }
            }
            (None, _) => {
                return Err(DiffusionError::Meta {
                    path: p.clone(),
                    key: "tokenizer.ggml.tokens".into(),
                });
            }
            _ => {}
        }

        // Tensors.
        let check_shape = |gg: &Gguf, name: &str, dims: &[usize]| -> Result<(), DiffusionError> {
            let gp = gg.path().display().to_string();
            let t = gg.tensor(name).ok_or_else(|| DiffusionError::Tensor {
                path: gp.clone(),
                name: name.into(),
                why: "missing".into(),
            })?;
            let got: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
            if got != dims {
                return Err(DiffusionError::Tensor {
                    path: gp,
                    name: name.into(),
                    why: format!("shape {got:?}, expected {dims:?}"),
                });
            }
            Ok(())
        };
        let tensor = |gg: &Gguf,
                      name: &str,
                      dims: &[usize]|
         -> Result<(GgmlType, Vec<u8>), DiffusionError> {
            check_shape(gg, name, dims)?;
            Ok(gg.read_tensor(name)?)
        };
        let vector = |name: &str, n: usize| -> Result<Vec<f32>, DiffusionError> {
            let (ty, b) = tensor(&g, name, &[n])?;
            if ty != GgmlType::F32 {
                return Err(DiffusionError::Tensor {
                    path: p.clone(),
                    name: name.into(),
                    why: format!("type {ty:?}, expected F32"),
                });
            }
            Ok(b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        };
        let opt_vector = |name: &str, n: usize| -> Result<Option<Vec<f32>>, DiffusionError> {
            if g.tensor(name).is_some() {
                vector(name, n).map(Some)
            } else {
                Ok(None)
            }
        };
        let linear = |name: &str, cols: usize, rows: usize| -> Result<Linear, DiffusionError> {
            let (ty, b) = tensor(&g, name, &[cols, rows])?;
            Linear::from_ggml(ty, rows, cols, &b).ok_or_else(|| DiffusionError::Tensor {
                path: p.clone(),
                name: name.into(),
                why: format!("type {ty:?} is not supported (F32, F16, BF16, Q8_0)"),
            })
        };

        let t_embd = target.n_embd();
        let n_inp = cfg.target_layers.len() * t_embd;
        match g.tensor("fc.weight") {
            Some(t) if t.dims.len() == 2 && t.dims[0] as usize != n_inp => {
                return Err(mismatch(format!(
                    "its fc layer fuses {} features, but {} target layers of hidden size {t_embd} give {n_inp}",
                    t.dims[0],
                    cfg.target_layers.len()
                )));
            }
            _ => {}
        }
        let fc = linear("fc.weight", n_inp, n_embd)?;
        let enc_norm = vector("enc.output_norm.weight", n_embd)?;
        let out_norm = vector("output_norm.weight", n_embd)?;
        let (qd, kvd) = (n_head * head_dim, n_head_kv * head_dim);
        let mut layers = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            let out_scale = match g.tensor(&format!("blk.{i}.layer_output_scale.weight")) {
                Some(_) => Some(vector(&format!("blk.{i}.layer_output_scale.weight"), 1)?[0]),
                None => None,
            };
            layers.push(Layer {
                attn_norm: vector(&n("attn_norm"), n_embd)?,
                wq: linear(&n("attn_q"), n_embd, qd)?,
                wk: linear(&n("attn_k"), n_embd, kvd)?,
                wv: if g.tensor(&n("attn_v")).is_some() {
                    Some(linear(&n("attn_v"), n_embd, kvd)?)
                } else {
                    None
                },
                wo: linear(&n("attn_output"), qd, n_embd)?,
                q_norm: opt_vector(&n("attn_q_norm"), head_dim)?,
                k_norm: opt_vector(&n("attn_k_norm"), head_dim)?,
                attn_post_norm: opt_vector(&n("post_attention_norm"), n_embd)?,
                ffn_norm: vector(&n("ffn_norm"), n_embd)?,
                ffn_gate: linear(&n("ffn_gate"), n_embd, cfg.n_ff)?,
                ffn_up: linear(&n("ffn_up"), n_embd, cfg.n_ff)?,
                ffn_down: linear(&n("ffn_down"), cfg.n_ff, n_embd)?,
                ffn_post_norm: opt_vector(&n("post_ffw_norm"), n_embd)?,
                out_scale,
            });
        }

        // Embeddings and head: the drafter's own, else the target's.
        let embd_src = if g.tensor("token_embd.weight").is_some() {
            &g
        } else {
            &tg
        };
        if embd_src.tensor("token_embd.weight").is_some()
            && std::ptr::eq(embd_src, &tg)
            && n_embd != t_embd
        {
            return Err(mismatch(format!(
                "hidden size {n_embd} cannot share the target's embeddings of width {t_embd}"
            )));
        }
        check_shape(embd_src, "token_embd.weight", &[n_embd, n_vocab])?;
        let embd = Embeddings::of_tensor(embd_src, "token_embd.weight")?;

        let head = if let Some(d2t) = g.tensor("d2t") {
            let n_draft = d2t.dims[0] as usize;
            let (ty, b) = tensor(&g, "d2t", &[n_draft])?;
            let map: Vec<Token> = match ty {
                GgmlType::I64 => b
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as Token)
                    .collect(),
                GgmlType::I32 => b
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect(),
                _ => {
                    return Err(DiffusionError::Tensor {
                        path: p.clone(),
                        name: "d2t".into(),
                        why: format!("type {ty:?}, expected I64"),
                    });
                }
            };
            if let Some(bad) = map.iter().find(|&&t| t < 0 || t as usize >= n_vocab) {
                return Err(mismatch(format!(
                    "d2t maps to token {bad}, outside the target vocabulary"
                )));
            }
            let name = if g.tensor("output.weight").is_some() {
                "output.weight"
            } else {
                "token_embd.weight"
            };
            Head::Own {
                w: linear(name, n_embd, n_draft)?,
                d2t: Some(map),
            }
        } else if g.tensor("output.weight").is_some() {
            Head::Own {
                w: linear("output.weight", n_embd, n_vocab)?,
                d2t: None,
            }
        } else {
            if n_embd != t_embd {
                return Err(mismatch(format!(
                    "hidden size {n_embd} cannot share the target's output head of width {t_embd}"
                )));
            }
            Head::Shared(head().ok_or_else(|| {
                unsupported("sharing this target's output head (Tandem reads Q8_0 heads only)")
            })?)
        };

        Ok(Self {
            cfg,
            fc,
            enc_norm,
            layers,
            out_norm,
            embd,
            head,
            n_vocab,
            pool: crate::kernels::par::Pool::new(threads),
        })
    }

    /// Width of one position's target features (all target layers concatenated).
    pub fn n_features(&self) -> usize {
        self.fc.cols
    }
}
