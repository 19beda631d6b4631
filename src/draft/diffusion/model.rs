//! A DFlash drafter's types: its configuration, weights and errors (loading: `load.rs`).

use std::sync::Arc;

use super::linear::Linear;
use crate::gguf::{GgmlType, Gguf, GgufError};
use crate::head::OutputHead;
use crate::kernels::ggml::{AlignedBytes, TypeKernels};
use crate::kernels::q8;
use crate::llama::Token;

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
    pub(super) data: AlignedBytes,
    /// ggml's dequantizer for the types Tandem does not widen itself.
    kernels: Option<TypeKernels>,
}

impl Embeddings {
    /// Write token `t`'s embedding, widened to f32, into `out`.
    pub fn row(&self, t: Token, out: &mut [f32]) {
        let b = &self.data.as_ref()[t as usize * self.row_bytes..(t as usize + 1) * self.row_bytes];
        if let Some(k) = &self.kernels {
            return k.dequantize(b, out);
        }
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
    /// The target's token embeddings (`token_embd.weight`), kept as stored (any type ggml
    /// can dequantize: rows come out exactly as `ggml_get_rows` gives them) — what a drafter
    /// sharing them reads.
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
        let own = matches!(
            ty,
            GgmlType::F32 | GgmlType::F16 | GgmlType::Bf16 | GgmlType::Q8_0
        );
        let kernels = if own { None } else { TypeKernels::new(ty) };
        let (per, bytes) = ty.block();
        if (!own && kernels.and_then(|k| k.row_bytes(n_embd)).is_none())
            || !n_embd.is_multiple_of(per)
        {
            return Err(DiffusionError::Tensor {
                path: p,
                name: name.into(),
                why: format!("type {ty:?} with rows of {n_embd} values cannot be read"),
            });
        }
        Ok(Self {
            ty,
            row_bytes: n_embd / per * bytes,
            kernels,
            data: AlignedBytes::from_slice(&data),
        })
    }

    /// Embeddings held as f32 rows of `width` (tests, tiny fixtures).
    pub fn from_f32(rows: &[f32], width: usize) -> Self {
        Self {
            ty: GgmlType::F32,
            row_bytes: width * 4,
            kernels: None,
            data: AlignedBytes::from_slice(
                &rows
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect::<Vec<u8>>(),
            ),
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

impl DflashModel {
    /// Width of one position's target features (all target layers concatenated).
    pub fn n_features(&self) -> usize {
        self.fc.cols
    }
}
