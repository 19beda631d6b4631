//! Weight matrices of the drafter and their products with a few activation rows.
//!
//! The arithmetic follows ggml's CPU choices so that Tandem's drafter agrees with
//! llama.cpp's to within summation order: for F16 and BF16 weights ggml first rounds the
//! activations to the weight's type (its `vec_dot_type`), for Q8_0 weights it quantizes them
//! to Q8_0. F16/BF16 weights stay 2-byte in memory and are widened in registers by
//! `kernels::simd` (a product of two f16 or two bf16 values is exact in f32); Q8_0 stays
//! quantized and uses the lazy head's bit-exact kernel. Every other quantized type (Q4_0…Q5_1,
//! the K-quants) runs on ggml's own kernels (`kernels::ggml`): the activation quantized to
//! the type's `vec_dot_type`, then ggml's `vec_dot` per weight row.

use crate::gguf::GgmlType;
use crate::gguf::write::{bf16_to_f32, f32_to_bf16};
use crate::kernels::ggml::{AlignedBytes, TypeKernels};
use crate::kernels::par::Pool;
use crate::kernels::q8::{self, Q8Rows, QK};
use crate::kernels::simd::{Weights, matmul_rows};

/// How activations are rounded before a product (ggml's `vec_dot_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    None,
    F16,
    Bf16,
}

#[derive(Debug)]
enum Data {
    F32 {
        w: Vec<f32>,
    },
    F16 {
        w: Vec<u16>,
    },
    Bf16 {
        w: Vec<u16>,
    },
    Q8 {
        w: Q8Rows,
    },
    Ggml {
        k: TypeKernels,
        w: AlignedBytes,
        row_bytes: usize,
    },
}

/// A `rows × cols` matrix (ggml `ne = [cols, rows]`): `y[r] = W[r] · x`.
#[derive(Debug)]
pub struct Linear {
    /// Output size (number of rows).
    pub rows: usize,
    /// Input size (length of a row).
    pub cols: usize,
    data: Data,
}

impl Linear {
    /// From a GGUF tensor's raw bytes. `None` for a type the drafter does not read.
    pub fn from_ggml(ty: GgmlType, rows: usize, cols: usize, bytes: &[u8]) -> Option<Self> {
        let n = rows * cols;
        let halves = || -> Vec<u16> {
            bytes
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect()
        };
        let data = match ty {
            GgmlType::F32 => Data::F32 {
                w: bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            },
            GgmlType::F16 => Data::F16 { w: halves() },
            GgmlType::Bf16 => Data::Bf16 { w: halves() },
            GgmlType::Q8_0 if cols.is_multiple_of(QK) => Data::Q8 {
                w: q8::from_ggml_blocks(bytes),
            },
            GgmlType::Q8_0 => return None,
            // Q4_0/Q5_0 widened to Q8_0 integers: ggml's results exactly, on the faster
            // kernel (see `q8::widen_q4_0_q5_0`).
            GgmlType::Q4_0 | GgmlType::Q5_0 if cols.is_multiple_of(QK) => Data::Q8 {
                w: q8::widen_q4_0_q5_0(bytes, ty == GgmlType::Q5_0)?,
            },
            _ => {
                let k = TypeKernels::new(ty)?;
                let row_bytes = k.row_bytes(cols)?;
                Data::Ggml {
                    k,
                    w: AlignedBytes::from_slice(bytes),
                    row_bytes,
                }
            }
        };
        // Every element present: counted in elements, or for ggml's blocks in bytes.
        let complete = match &data {
            Data::F32 { w } => w.len() == n,
            Data::F16 { w } | Data::Bf16 { w } => w.len() == n,
            Data::Q8 { w } => w.qs.len() == n,
            Data::Ggml { row_bytes, .. } => bytes.len() == rows * row_bytes,
        };
        complete.then_some(Self { rows, cols, data })
    }

    /// From f32 values (tests).
    pub fn from_f32(rows: usize, cols: usize, w: Vec<f32>) -> Self {
        assert_eq!(w.len(), rows * cols);
        Self {
            rows,
            cols,
            data: Data::F32 { w },
        }
    }

    /// `ys[j] = W · xs[j]` for every activation row (each `cols` long; `ys` is
    /// `xs.len() × rows`), split over the pool's threads.
    pub fn forward(&self, xs: &[f32], ys: &mut [f32], pool: &Pool) {
        let m = xs.len() / self.cols;
        assert_eq!(xs.len(), m * self.cols);
        assert_eq!(ys.len(), m * self.rows);
        let (w, round) = match &self.data {
            Data::F32 { w } => (Weights::F32(w), Round::None),
            Data::F16 { w } => (Weights::F16(w), Round::F16),
            Data::Bf16 { w } => (Weights::Bf16(w), Round::Bf16),
            Data::Q8 { w } => return self.forward_q8(w, xs, ys, m, pool),
            Data::Ggml { k, w, row_bytes } => {
                return self.forward_ggml(k, w.as_ref(), *row_bytes, xs, ys, m, pool);
            }
        };
        let rounded: Vec<f32>;
        let xr = match round {
            Round::None => xs,
            Round::F16 => {
                rounded = {
                    let mut r = xs.to_vec();
                    crate::kernels::simd::round_to_f16(&mut r);
                    r
                };
                &rounded
            }
            Round::Bf16 => {
                rounded = xs.iter().map(|&x| bf16_to_f32(f32_to_bf16(x))).collect();
                &rounded
            }
        };
        let c = self.cols;
        self.par(ys, m, pool, |lo, hi, out| {
            matmul_rows(w, c, lo..hi, xr, out)
        });
    }

    fn forward_q8(&self, w: &Q8Rows, xs: &[f32], ys: &mut [f32], m: usize, pool: &Pool) {
        let qx: Vec<Q8Rows> = xs
            .chunks_exact(self.cols)
            .map(|x| {
                let mut q = Q8Rows::default();
                q8::quantize_row(x, &mut q);
                q
            })
            .collect();
        let refs: Vec<&Q8Rows> = qx.iter().collect();
        let nb = self.cols / QK;
        self.par(ys, m, pool, |lo, hi, out| {
            for (r, o) in (lo..hi).zip(out.chunks_exact_mut(m)) {
                q8::dot_row(
                    &w.qs[r * self.cols..(r + 1) * self.cols],
                    &w.d[r * nb..(r + 1) * nb],
                    &refs,
                    o,
                );
            }
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_ggml(
        &self,
        k: &TypeKernels,
        w: &[u8],
        row_bytes: usize,
        xs: &[f32],
        ys: &mut [f32],
        m: usize,
        pool: &Pool,
    ) {
        let qx: Vec<_> = xs
            .chunks_exact(self.cols)
            .map(|x| k.quantize_activation(x))
            .collect();
        self.par(ys, m, pool, |lo, hi, out| {
            for (r, o) in (lo..hi).zip(out.chunks_exact_mut(m)) {
                let row = &w[r * row_bytes..(r + 1) * row_bytes];
                for (x, v) in qx.iter().zip(o.iter_mut()) {
                    *v = k.dot(row, x);
                }
            }
        });
    }

    /// Compute `f(lo, hi, out)` (`out[(r - lo) * m + j]`) for the weight rows split over
    /// the pool, then scatter into the row-major `ys` (`m × rows`).
    fn par(
        &self,
        ys: &mut [f32],
        m: usize,
        pool: &Pool,
        f: impl Fn(usize, usize, &mut [f32]) + Sync,
    ) {
        // Tiny products are not worth waking the workers for.
        let ranges = if self.rows * self.cols * m < 1 << 16 {
            std::iter::once(0..self.rows).collect()
        } else {
            pool.ranges(self.rows, 4, 16)
        };
        let parts = pool.map(ranges.len(), |i| {
            let (lo, hi) = (ranges[i].start, ranges[i].end);
            let mut tmp = vec![0.0f32; (hi - lo) * m];
            f(lo, hi, &mut tmp);
            tmp
        });
        for (r, tmp) in ranges.iter().zip(parts) {
            for (i, row) in r.clone().zip(tmp.chunks_exact(m)) {
                for (j, &v) in row.iter().enumerate() {
                    ys[j * self.rows + i] = v;
                }
            }
        }
    }
}

pub use crate::kernels::simd::dot_f32;

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(w: &[f32], rows: usize, cols: usize, x: &[f32]) -> Vec<f32> {
        let m = x.len() / cols;
        let mut y = vec![0.0; m * rows];
        for j in 0..m {
            for r in 0..rows {
                y[j * rows + r] = (0..cols)
                    .map(|c| w[r * cols + c] as f64 * x[j * cols + c] as f64)
                    .sum::<f64>() as f32;
            }
        }
        y
    }

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    #[test]
    fn products_match_a_naive_reference_for_every_type() {
        let (rows, cols, m) = (48, 64, 3);
        for (ty, tol) in [
            (GgmlType::F32, 1e-4),
            (GgmlType::F16, 0.05),
            (GgmlType::Bf16, 0.3),
            (GgmlType::Q8_0, 0.3),
            (GgmlType::Q4_0, 3.0),
            (GgmlType::Q5_1, 1.5),
        ] {
            check_type(ty, tol, rows, cols, m);
        }
        // The K-quants need rows of whole 256-value super-blocks.
        for (ty, tol) in [
            (GgmlType::Q4K, 6.0),
            (GgmlType::Q5K, 3.0),
            (GgmlType::Q6K, 1.5),
        ] {
            check_type(ty, tol, 24, 256, 3);
        }
    }

    fn check_type(ty: GgmlType, tol: f32, rows: usize, cols: usize, m: usize) {
        let w = data(rows * cols, 7);
        let x = data(m * cols, 11);
        let want = naive(&w, rows, cols, &x);
        {
            let mut wr = crate::gguf::write::GgufWriter::default();
            wr.tensor_f32("w", &[cols as u64, rows as u64], ty, &w);
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("w.gguf");
            wr.write(&p).unwrap();
            let g = crate::gguf::Gguf::open(&p).unwrap();
            let (t, bytes) = g.read_tensor("w").unwrap();
            let lin = Linear::from_ggml(t, rows, cols, &bytes).unwrap();
            for threads in [1, 2] {
                let mut y = vec![0.0; m * rows];
                lin.forward(&x, &mut y, &Pool::new(threads));
                let err = y
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(err < tol, "{ty:?}: max error {err}");
            }
        }
    }
}
