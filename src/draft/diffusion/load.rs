//! Loading a llama.cpp `dflash` drafter GGUF and checking it against its target, step by
//! step: nothing Tandem does not run, the configuration, the vocabulary, the layers, the
//! embeddings and the head.

use std::path::Path;
use std::sync::Arc;

use super::linear::Linear;
use super::model::{DflashConfig, DflashModel, DiffusionError, Embeddings, Head, Layer};
use crate::gguf::{GgmlType, Gguf, Value};
use crate::head::OutputHead;
use crate::llama::{Model, Token};

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
        let l = Loader {
            g: Gguf::open(path)?,
            p: path.display().to_string(),
            target,
        };
        l.check_supported()?;
        let cfg = l.config()?;
        let tg = l.check_vocabulary(&cfg)?;
        let t_embd = target.n_embd();
        let n_inp = cfg.target_layers.len() * t_embd;
        match l.g.tensor("fc.weight") {
            Some(t) if t.dims.len() == 2 && t.dims[0] as usize != n_inp => {
                return Err(l.mismatch(format!(
                    "its fc layer fuses {} features, but {} target layers of hidden size {t_embd} give {n_inp}",
                    t.dims[0],
                    cfg.target_layers.len()
                )));
            }
            _ => {}
        }
        let fc = l.linear("fc.weight", n_inp, cfg.n_embd)?;
        let enc_norm = l.vector("enc.output_norm.weight", cfg.n_embd)?;
        let out_norm = l.vector("output_norm.weight", cfg.n_embd)?;
        let layers = (0..cfg.n_layer)
            .map(|i| l.layer(&cfg, i))
            .collect::<Result<_, _>>()?;
        let embd = l.embeddings(&tg, &cfg)?;
        let head = l.head(&cfg, head)?;
        Ok(Self {
            cfg,
            fc,
            enc_norm,
            layers,
            out_norm,
            embd,
            head,
            n_vocab: target.n_vocab(),
            pool: crate::kernels::par::Pool::new(threads),
        })
    }
}

/// The drafter file being loaded and the target it must fit.
struct Loader<'a> {
    g: Gguf,
    p: String,
    target: &'a Model,
}

fn key(k: &str) -> String {
    format!("dflash.{k}")
}

/// `name`'s shape in `gg` is `dims`, else an error naming the file and tensor.
fn check_shape(gg: &Gguf, name: &str, dims: &[usize]) -> Result<(), DiffusionError> {
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
}

fn tensor(gg: &Gguf, name: &str, dims: &[usize]) -> Result<(GgmlType, Vec<u8>), DiffusionError> {
    check_shape(gg, name, dims)?;
    Ok(gg.read_tensor(name)?)
}

impl Loader<'_> {
    fn unsupported(&self, what: &str) -> DiffusionError {
        DiffusionError::Unsupported {
            path: self.p.clone(),
            what: what.to_string(),
        }
    }

    fn mismatch(&self, why: String) -> DiffusionError {
        DiffusionError::Mismatch {
            path: self.p.clone(),
            target: self.target.path().to_string(),
            why,
        }
    }

    fn meta(&self, k: &str) -> DiffusionError {
        DiffusionError::Meta {
            path: self.p.clone(),
            key: key(k),
        }
    }

    fn int(&self, k: &str) -> Result<usize, DiffusionError> {
        self.g
            .get_int(&key(k))
            .filter(|&v| v > 0)
            .map(|v| v as usize)
            .ok_or_else(|| self.meta(k))
    }

    fn float(&self, k: &str) -> Option<f32> {
        self.g.get_float(&key(k)).map(|v| v as f32)
    }

    /// A `dflash` file with nothing in it that Tandem does not run.
    fn check_supported(&self) -> Result<(), DiffusionError> {
        let g = &self.g;
        let arch = g.arch().unwrap_or("").to_string();
        if arch != "dflash" {
            return Err(DiffusionError::NotDflash {
                path: self.p.clone(),
                arch,
            });
        }
        for t in &g.tensors {
            let base = t.name.split_once('.').map_or(t.name.as_str(), |(a, b)| {
                if a == "blk" {
                    b.split_once('.').map_or(b, |x| x.1)
                } else {
                    a
                }
            });
            if let Some((_, what)) = UNSUPPORTED.iter().find(|(pre, _)| base.starts_with(pre)) {
                return Err(self.unsupported(&format!("{what} (tensor {})", t.name)));
            }
            if t.name.ends_with(".scale") {
                return Err(self.unsupported(&format!("a weight scale (tensor {})", t.name)));
            }
        }
        for (k, what) in [
            ("hyper_connection_count", "DeepSeek-V4 DSpark"),
            ("selector_rank", "the DFlash2 selector"),
            ("attention.sliding_window", "sliding-window attention"),
        ] {
            if g.get_int(&key(k)).is_some_and(|v| v > 0) {
                return Err(self.unsupported(what));
            }
        }
        if let Some(Value::Array(s)) = g.get(&key("rope.dimension_sections"))
            && s.iter().any(|v| *v != Value::Int(0))
        {
            return Err(self.unsupported("M-RoPE sections"));
        }
        Ok(())
    }

    /// The hyper-parameters, checked for consistency and against the target's layers.
    fn config(&self) -> Result<DflashConfig, DiffusionError> {
        let g = &self.g;
        let target = self.target;
        let n_embd = self.int("embedding_length")?;
        let n_layer = self.int("block_count")?;
        let n_head = self.int("attention.head_count")?;
        let n_head_kv = g
            .get_int(&key("attention.head_count_kv"))
            .map_or(n_head, |v| v as usize);
        if n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(self.meta("attention.head_count_kv"));
        }
        let head_dim = g
            .get_int(&key("attention.key_length"))
            .map_or(n_embd / n_head, |v| v as usize);
        if g.get_int(&key("attention.value_length"))
            .is_some_and(|v| v as usize != head_dim)
        {
            return Err(self.unsupported("different key and value head sizes"));
        }
        let n_rot = g
            .get_int(&key("rope.dimension_count"))
            .map_or(head_dim, |v| v as usize);
        if n_rot > head_dim || !n_rot.is_multiple_of(2) {
            return Err(self.meta("rope.dimension_count"));
        }
        let rope_freq_scale = match g.get_str(&key("rope.scaling.type")) {
            None | Some("none") => 1.0,
            Some("linear") => 1.0 / self.float("rope.scaling.factor").unwrap_or(1.0),
            Some(t) => return Err(self.unsupported(&format!("RoPE scaling '{t}'"))),
        };
        let gelu = match g.get_str(&key("hidden_activation")) {
            None | Some("silu") => false,
            Some("gelu") | Some("gelu_pytorch_tanh") => true,
            Some(a) => return Err(self.unsupported(&format!("hidden activation '{a}'"))),
        };
        let target_layers: Vec<usize> = match g.get(&key("target_layers")) {
            Some(Value::Array(v)) if !v.is_empty() => v
                .iter()
                .map(|x| match x {
                    Value::Int(i) if *i >= 0 => Ok(*i as usize),
                    _ => Err(self.meta("target_layers")),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(self.meta("target_layers")),
        };
        for &l in &target_layers {
            if l >= target.n_layer() {
                return Err(self.mismatch(format!(
                    "target layer {l} is out of range (the target has {} layers)",
                    target.n_layer()
                )));
            }
            if l == 0 {
                return Err(self.unsupported("target layer 0 (the embedding input)"));
            }
        }
        let causal = matches!(g.get(&key("attention.causal")), Some(Value::Bool(true)))
            || g.get_str(&key("attention.causal")) == Some("true");
        if causal {
            return Err(self.unsupported("causal block attention"));
        }
        Ok(DflashConfig {
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            n_ff: self.int("feed_forward_length")?,
            eps: self
                .float("attention.layer_norm_rms_epsilon")
                .ok_or_else(|| self.meta("attention.layer_norm_rms_epsilon"))?,
            rope_base: self.float("rope.freq_base").unwrap_or(10_000.0),
            rope_freq_scale,
            n_rot,
            kq_scale: self
                .float("attention.scale")
                .filter(|&s| s != 0.0)
                .unwrap_or(1.0 / (head_dim as f32).sqrt()),
            embd_scale: self.float("embedding_scale").filter(|&s| s != 0.0),
            value_scale: self.float("attention.value_scale").filter(|&s| s != 0.0),
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
                    path: self.p.clone(),
                    key: "tokenizer.ggml.mask_token_id".into(),
                })? as Token,
        })
    }

    /// The drafter speaks the target's tokens; returns the target's file (for the shared
    /// embeddings).
    fn check_vocabulary(&self, cfg: &DflashConfig) -> Result<Gguf, DiffusionError> {
        let n_vocab = self.target.n_vocab();
        if cfg.mask_token as usize >= n_vocab {
            return Err(self.mismatch(format!(
                "mask token {} is outside the target's vocabulary of {n_vocab}",
                cfg.mask_token
            )));
        }
        let tg = Gguf::open(Path::new(self.target.path()))?;
        match (
            self.g.get("tokenizer.ggml.tokens"),
            tg.get("tokenizer.ggml.tokens"),
        ) {
            (Some(Value::Array(a)), Some(Value::Array(b))) => {
                if a.len() != b.len() {
                    return Err(self.mismatch(format!(
                        "vocabulary of {} tokens, the target has {}",
                        a.len(),
                        b.len()
                    )));
                }
                if let Some(i) = (0..a.len()).find(|&i| a[i] != b[i]) {
                    return Err(
                        self.mismatch(format!("a different vocabulary (token {i} differs)"))
                    );
                }
            }
            (None, _) => {
                return Err(DiffusionError::Meta {
                    path: self.p.clone(),
                    key: "tokenizer.ggml.tokens".into(),
                });
            }
            _ => {}
        }

        Ok(tg)
    }

    fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>, DiffusionError> {
        let (ty, b) = tensor(&self.g, name, &[n])?;
        if ty != GgmlType::F32 {
            return Err(DiffusionError::Tensor {
                path: self.p.clone(),
                name: name.into(),
                why: format!("type {ty:?}, expected F32"),
            });
        }
        Ok(b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn opt_vector(&self, name: &str, n: usize) -> Result<Option<Vec<f32>>, DiffusionError> {
        if self.g.tensor(name).is_some() {
            self.vector(name, n).map(Some)
        } else {
            Ok(None)
        }
    }

    fn linear(&self, name: &str, cols: usize, rows: usize) -> Result<Linear, DiffusionError> {
        let (ty, b) = tensor(&self.g, name, &[cols, rows])?;
        Linear::from_ggml(ty, rows, cols, &b).ok_or_else(|| DiffusionError::Tensor {
            path: self.p.clone(),
            name: name.into(),
            why: format!("type {ty:?} is not supported for a {rows}x{cols} matrix (rows must be whole blocks of the type)"),
        })
    }

    /// Layer `i`'s weights.
    fn layer(&self, cfg: &DflashConfig, i: usize) -> Result<Layer, DiffusionError> {
        let (n_embd, head_dim) = (cfg.n_embd, cfg.head_dim);
        let (qd, kvd) = (cfg.n_head * head_dim, cfg.n_head_kv * head_dim);
        let n = |s: &str| format!("blk.{i}.{s}.weight");
        let scale = format!("blk.{i}.layer_output_scale.weight");
        let out_scale = match self.g.tensor(&scale) {
            Some(_) => Some(self.vector(&scale, 1)?[0]),
            None => None,
        };
        Ok(Layer {
            attn_norm: self.vector(&n("attn_norm"), n_embd)?,
            wq: self.linear(&n("attn_q"), n_embd, qd)?,
            wk: self.linear(&n("attn_k"), n_embd, kvd)?,
            wv: if self.g.tensor(&n("attn_v")).is_some() {
                Some(self.linear(&n("attn_v"), n_embd, kvd)?)
            } else {
                None
            },
            wo: self.linear(&n("attn_output"), qd, n_embd)?,
            q_norm: self.opt_vector(&n("attn_q_norm"), head_dim)?,
            k_norm: self.opt_vector(&n("attn_k_norm"), head_dim)?,
            attn_post_norm: self.opt_vector(&n("post_attention_norm"), n_embd)?,
            ffn_norm: self.vector(&n("ffn_norm"), n_embd)?,
            ffn_gate: self.linear(&n("ffn_gate"), n_embd, cfg.n_ff)?,
            ffn_up: self.linear(&n("ffn_up"), n_embd, cfg.n_ff)?,
            ffn_down: self.linear(&n("ffn_down"), cfg.n_ff, n_embd)?,
            ffn_post_norm: self.opt_vector(&n("post_ffw_norm"), n_embd)?,
            out_scale,
        })
    }

    /// The drafter's own token embeddings, else the target's (`tg`).
    fn embeddings(&self, tg: &Gguf, cfg: &DflashConfig) -> Result<Embeddings, DiffusionError> {
        let (n_embd, t_embd) = (cfg.n_embd, self.target.n_embd());
        let own = self.g.tensor("token_embd.weight").is_some();
        let src = if own { &self.g } else { tg };
        if !own && src.tensor("token_embd.weight").is_some() && n_embd != t_embd {
            return Err(self.mismatch(format!(
                "hidden size {n_embd} cannot share the target's embeddings of width {t_embd}"
            )));
        }
        check_shape(src, "token_embd.weight", &[n_embd, self.target.n_vocab()])?;
        Embeddings::of_tensor(src, "token_embd.weight")
    }

    /// The drafter's own head (over a reduced vocabulary with `d2t`, or the full one),
    /// else the target's.
    fn head(
        &self,
        cfg: &DflashConfig,
        shared: impl FnOnce() -> Option<Arc<OutputHead>>,
    ) -> Result<Head, DiffusionError> {
        let g = &self.g;
        let (n_embd, t_embd, n_vocab) = (cfg.n_embd, self.target.n_embd(), self.target.n_vocab());
        Ok(if let Some(d2t) = g.tensor("d2t") {
            let n_draft = d2t.dims[0] as usize;
            let (ty, b) = tensor(g, "d2t", &[n_draft])?;
            let map = super::format::decode_d2t(ty, &b).ok_or_else(|| DiffusionError::Tensor {
                path: self.p.clone(),
                name: "d2t".into(),
                why: format!("type {ty:?}, expected I64"),
            })?;
            if let Some(bad) = map.iter().find(|&&t| t < 0 || t as usize >= n_vocab) {
                return Err(self.mismatch(format!(
                    "d2t maps to token {bad}, outside the target vocabulary"
                )));
            }
            let name = if g.tensor("output.weight").is_some() {
                "output.weight"
            } else {
                "token_embd.weight"
            };
            Head::Own {
                w: self.linear(name, n_embd, n_draft)?,
                d2t: Some(map),
            }
        } else if g.tensor("output.weight").is_some() {
            Head::Own {
                w: self.linear("output.weight", n_embd, n_vocab)?,
                d2t: None,
            }
        } else {
            if n_embd != t_embd {
                return Err(self.mismatch(format!(
                    "hidden size {n_embd} cannot share the target's output head of width {t_embd}"
                )));
            }
            Head::Shared(shared().ok_or_else(|| {
                self.unsupported(
                    "sharing this target's output head (its type or width cannot be read)",
                )
            })?)
        })
    }
}
