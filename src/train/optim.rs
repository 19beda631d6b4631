//! AdamW with decoupled weight decay (matrices only), global gradient-norm clipping and a
//! warm-up + cosine learning-rate schedule. Its moments are plain tensors, saved in the
//! checkpoint so that a resumed run continues exactly.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor};

use super::net::Net;

/// The AdamW optimizer's settings and state.
#[derive(Debug, Clone)]
pub struct AdamW {
    /// Decay rate of the first moments.
    pub beta1: f64,
    /// Decay rate of the second moments.
    pub beta2: f64,
    /// Added to the denominator for numerical stability.
    pub eps: f64,
    /// Decoupled weight decay (matrices only).
    pub weight_decay: f64,
    /// Global gradient-norm clipping threshold.
    pub clip: f64,
    /// Steps taken.
    pub t: usize,
    /// First and second moments, in the network's parameter order.
    pub m: Vec<Tensor>,
    /// Second moments, in the same order as `m`.
    pub v: Vec<Tensor>,
}

impl AdamW {
    /// An optimizer with default settings and zero moments for `net`'s parameters.
    pub fn new(net: &Net) -> Result<Self> {
        let zeros = |net: &Net| -> Result<Vec<Tensor>> {
            net.params.iter().map(|(_, p)| p.zeros_like()).collect()
        };
        Ok(Self {
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-8,
            weight_decay: 0.01,
            clip: 1.0,
            t: 0,
            m: zeros(net)?,
            v: zeros(net)?,
        })
    }

    /// One update at learning rate `lr`; returns the gradient norm before clipping.
    pub fn step(&mut self, net: &Net, grads: &GradStore, lr: f64) -> Result<f64> {
        let gs: Vec<Option<&Tensor>> = net.params.iter().map(|(_, p)| grads.get(p)).collect();
        let mut sq = 0.0f64;
        for g in gs.iter().flatten() {
            sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
        let norm = sq.sqrt();
        let scale = if norm > self.clip {
            self.clip / norm
        } else {
            1.0
        };
        self.t += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let c1 = 1.0 - b1.powi(self.t as i32);
        let c2 = 1.0 - b2.powi(self.t as i32);
        for (i, ((_, p), g)) in net.params.iter().zip(&gs).enumerate() {
            let Some(g) = g else { continue };
            let g = (*g * scale)?;
            self.m[i] = ((&self.m[i] * b1)? + (&g * (1.0 - b1))?)?;
            self.v[i] = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let update = ((&self.m[i] / c1)? / ((&self.v[i] / c2)?.sqrt()? + self.eps)?)?;
            let decay = if p.rank() >= 2 {
                self.weight_decay
            } else {
                0.0
            };
            let next = ((p.as_tensor() * (1.0 - lr * decay))? - (update * lr)?)?;
            p.set(&next)?;
        }
        Ok(norm)
    }
}

/// Learning rate at `step` of `total`: linear warm-up, then cosine down to a tenth.
pub fn schedule(step: usize, total: usize, warmup: usize, peak: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let f = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    let cos = 0.5 * (1.0 + (std::f64::consts::PI * f.min(1.0)).cos());
    peak * (0.1 + 0.9 * cos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_a_tenth() {
        assert!((schedule(0, 100, 10, 1.0) - 0.1).abs() < 1e-12);
        assert!((schedule(9, 100, 10, 1.0) - 1.0).abs() < 1e-12);
        assert!((schedule(10, 100, 10, 1.0) - 1.0).abs() < 1e-12);
        assert!((schedule(100, 100, 10, 1.0) - 0.1).abs() < 1e-12);
    }
}
