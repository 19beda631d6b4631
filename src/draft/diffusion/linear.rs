//! Weight matrices of the drafter and their products with a few activation rows.
//!
//! The arithmetic follows ggml's CPU choices so that Tandem's drafter agrees with
//! llama.cpp's to within summation order: for F16 and BF16 weights ggml first rounds the
//! activations to the weight's type (its `vec_dot_type`), for Q8_0 weights it quantizes them
//! to Q8_0. F16/BF16 weights are widened to f32 once at load (a product of two f16 or two
//! bf16 values is exact in f32, so this changes nothing but speed); Q8_0 stays quantized
//! and uses the lazy head's bit-exact kernel.

use crate::gguf::GgmlType;
use crate::gguf_write::{bf16_to_f32, f32_to_bf16};
use crate::target::head::q8::{self, Q8Rows, QK, f16_to_f32, f32_to_f16};

/// How activations are rounded before a product (ggml's `vec_dot_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    None,
    F16,
    Bf16,
}

#[derive(Debug)]
enum Data {
    F32 { w: Vec<f32>, round: Round },
    Q8 { w: Q8Rows },
}

/// A `rows × cols` matrix (ggml `ne = [cols, rows]`): `y[r] = W[r] · x`.
#[derive(Debug)]
pub struct Linear {
    pub rows: usize,
    pub cols: usize,
    data: Data,
}

impl Linear {
    /// From a GGUF tensor's raw bytes. `None` for a type the drafter does not read.
    pub fn from_ggml(ty: GgmlType, rows: usize, cols: usize, bytes: &[u8]) -> Option<Self> {
        let n = rows * cols;
        let data = match ty {
            GgmlType::F32 => Data::F32 {
                w: bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                round: Round::None,
            },
            GgmlType::F16 => Data::F32 {
                w: bytes
                    .chunks_exact(2)
                    .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                    .collect(),
                round: Round::F16,
            },
            GgmlType::Bf16 => Data::F32 {
                w: bytes
                    .chunks_exact(2)
                    .map(|b| bf16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                    .collect(),
                round: Round::Bf16,
            },
            GgmlType::Q8_0 if cols.is_multiple_of(QK) => Data::Q8 {
                w: q8::from_ggml_blocks(bytes),
            },
            _ => return None,
        };
        let len = match &data {
            Data::F32 { w, .. } => w.len(),
            Data::Q8 { w } => w.qs.len(),
        };
        (len == n).then_some(Self { rows, cols, data })
    }

    /// From f32 values (tests).
    pub fn from_f32(rows: usize, cols: usize, w: Vec<f32>) -> Self {
        assert_eq!(w.len(), rows * cols);
        Self {
            rows,
            cols,
            data: Data::F32 {
                w,
                round: Round::None,
            },
        }
    }

    /// `ys[j] = W · xs[j]` for every activation row (each `cols` long; `ys` is
    /// `xs.len() × rows`), split over `threads`.
    pub fn forward(&self, xs: &[f32], ys: &mut [f32], threads: usize) {
        let m = xs.len() / self.cols;
        assert_eq!(xs.len(), m * self.cols);
        assert_eq!(ys.len(), m * self.rows);
        match &self.data {
            Data::F32 { w, round } => {
                let xr: Vec<f32> = match round {
                    Round::None => xs.to_vec(),
                    Round::F16 => xs.iter().map(|&x| f16_to_f32(f32_to_f16(x))).collect(),
                    Round::Bf16 => xs.iter().map(|&x| bf16_to_f32(f32_to_bf16(x))).collect(),
                };
                let c = self.cols;
                self.par(ys, m, threads, |r, out| {
                    let wr = &w[r * c..(r + 1) * c];
                    // Four activation rows per pass over the weight row: independent FMA
                    // chains (one chain is latency-bound) and one weight load for four.
                    let mut j = 0;
                    while j + 4 <= m {
                        let x = |i: usize| &xr[(j + i) * c..(j + i + 1) * c];
                        out[j..j + 4].copy_from_slice(&dot4_f32(wr, [x(0), x(1), x(2), x(3)]));
                        j += 4;
                    }
                    for (jj, o) in out.iter_mut().enumerate().skip(j) {
                        *o = dot_f32(wr, &xr[jj * c..(jj + 1) * c]);
                    }
                });
            }
            Data::Q8 { w } => {
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
                self.par(ys, m, threads, |r, out| {
                    q8::dot_row(
                        &w.qs[r * self.cols..(r + 1) * self.cols],
                        &w.d[r * nb..(r + 1) * nb],
                        &refs,
                        out,
                    );
                });
            }
        }
    }

    /// Compute `f(row, out_for_that_row[m])` for every weight row over `threads` threads,
    /// then scatter into the row-major `ys` (`m × rows`).
    fn par(&self, ys: &mut [f32], m: usize, threads: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
        // Threads only pay for large enough products (spawning costs tens of µs).
        let t = if self.rows * self.cols * m < 1 << 18 {
            1
        } else {
            threads.clamp(1, self.rows)
        };
        let chunk = self.rows.div_ceil(t);
        let run = |lo: usize, hi: usize| {
            let mut tmp = vec![0.0f32; (hi - lo) * m];
            for r in lo..hi {
                f(r, &mut tmp[(r - lo) * m..(r - lo + 1) * m]);
            }
            (lo, hi, tmp)
        };
        let parts: Vec<(usize, usize, Vec<f32>)> = if t == 1 {
            vec![run(0, self.rows)]
        } else {
            std::thread::scope(|s| {
                let hs: Vec<_> = (0..t)
                    .map(|i| {
                        let run = &run;
                        let lo = i * chunk;
                        let hi = ((i + 1) * chunk).min(self.rows);
                        s.spawn(move || run(lo, hi))
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().expect("matmul worker"))
                    .collect()
            })
        };
        for (lo, hi, tmp) in parts {
            for r in lo..hi {
                for j in 0..m {
                    ys[j * self.rows + r] = tmp[(r - lo) * m + j];
                }
            }
        }
    }
}

pub use crate::target::simd::{dot_f32, dot4_f32};

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
        let w = data(rows * cols, 7);
        let x = data(m * cols, 11);
        let want = naive(&w, rows, cols, &x);
        for (ty, tol) in [
            (GgmlType::F32, 1e-4),
            (GgmlType::F16, 0.05),
            (GgmlType::Bf16, 0.3),
            (GgmlType::Q8_0, 0.3),
        ] {
            let mut wr = crate::gguf_write::GgufWriter::default();
            wr.tensor_f32("w", &[cols as u64, rows as u64], ty, &w);
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("w.gguf");
            wr.write(&p).unwrap();
            let g = crate::gguf::Gguf::open(&p).unwrap();
            let (t, bytes) = g.read_tensor("w").unwrap();
            let lin = Linear::from_ggml(t, rows, cols, &bytes).unwrap();
            for threads in [1, 2] {
                let mut y = vec![0.0; m * rows];
                lin.forward(&x, &mut y, threads);
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
