//! Checkpoints: parameters and optimizer moments in a safetensors file, the step, draft
//! vocabulary and validation history in `train.json`, which names the tensor file. A new
//! tensor file is written before `train.json` is replaced (atomically), so an interrupted
//! save leaves the previous checkpoint intact.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor, Var};

use super::net::Net;
use super::optim::AdamW;
use super::{TrainError, ValStats};
use crate::draft::diffusion::format::DflashShape;

/// Training progress kept beside the tensors.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TrainState {
    /// Steps completed.
    pub step: usize,
    /// Draft row → target token id.
    pub d2t: Vec<i32>,
    /// Share of the target's output tokens the draft vocabulary covers.
    pub coverage: f64,
    /// Training time over all runs so far (seconds).
    pub seconds: f64,
    /// Validation results, one per checkpoint.
    pub history: Vec<ValStats>,
    /// Per-feature scale the network's inputs are divided by (see
    /// `train::feature_scale`); empty in checkpoints from before it existed (no scaling).
    #[serde(default)]
    pub feature_scale: Vec<f32>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Meta {
    shape: DflashShape,
    tensors: String,
    names: Vec<String>,
    adam_t: usize,
    state: TrainState,
}

fn io(p: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |err| TrainError::Io {
        path: p.display().to_string(),
        err,
    }
}

/// Save a checkpoint to `out`: tensors first, then `train.json` replaced atomically.
pub fn save(out: &Path, net: &Net, opt: &AdamW, state: &TrainState) -> Result<(), TrainError> {
    let file = format!("ckpt-{:07}.safetensors", state.step);
    let mut map: HashMap<String, Tensor> = HashMap::new();
    for (i, (name, p)) in net.params.iter().enumerate() {
        map.insert(name.clone(), p.as_tensor().clone());
        map.insert(format!("adam.m.{name}"), opt.m[i].clone());
        map.insert(format!("adam.v.{name}"), opt.v[i].clone());
    }
    candle_core::safetensors::save(&map, out.join(&file))?;
    let meta = Meta {
        shape: net.shape.clone(),
        tensors: file.clone(),
        names: net.params.iter().map(|(n, _)| n.clone()).collect(),
        adam_t: opt.t,
        state: state.clone(),
    };
    let json = out.join("train.json");
    let old = read_meta(out)?.map(|m| m.tensors);
    let tmp = out.join("train.json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&meta).expect("serialisable"),
    )
    .map_err(io(&tmp))?;
    std::fs::rename(&tmp, &json).map_err(io(&json))?;
    if let Some(old) = old.filter(|o| *o != file) {
        let _ = std::fs::remove_file(out.join(old));
    }
    Ok(())
}

fn read_meta(out: &Path) -> Result<Option<Meta>, TrainError> {
    let json = out.join("train.json");
    match std::fs::read(&json) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| TrainError::Data(format!("{}: {e}", json.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&json)(e)),
    }
}

/// The checkpoint in `out`, if any; it must have been made for `shape`.
pub fn load(
    out: &Path,
    shape: &DflashShape,
) -> Result<Option<(Net, AdamW, TrainState)>, TrainError> {
    let Some(meta) = read_meta(out)? else {
        return Ok(None);
    };
    if meta.shape != *shape {
        return Err(TrainError::Data(format!(
            "{}: the checkpoint there was made with other settings ({:?}); use another output \
             directory or the same settings",
            out.display(),
            meta.shape
        )));
    }
    let tensors = candle_core::safetensors::load(out.join(&meta.tensors), &Device::Cpu)?;
    let get = |k: &str| {
        tensors
            .get(k)
            .cloned()
            .ok_or_else(|| TrainError::Data(format!("{}: no tensor {k}", meta.tensors)))
    };
    let mut params = Vec::new();
    let (mut m, mut v) = (Vec::new(), Vec::new());
    for name in &meta.names {
        params.push((name.clone(), Var::from_tensor(&get(name)?)?));
        m.push(get(&format!("adam.m.{name}"))?);
        v.push(get(&format!("adam.v.{name}"))?);
    }
    let net = Net::from_params(meta.shape, meta.state.d2t.len(), params);
    let mut opt = AdamW::new(&net)?;
    opt.t = meta.adam_t;
    opt.m = m;
    opt.v = v;
    Ok(Some((net, opt, meta.state)))
}
