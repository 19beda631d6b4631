//! Tandem's own compute kernels and ggml's per-type ones (`ggml`: every quantized format,
//! through ggml's type traits): tiled f32-accumulating products over F32/F16/BF16 weights
//! (`simd`), the Q8_0 quantization and dot products ggml uses (`q8`, bit-exact), and the
//! parallel loops (`par`) that run on ggml's OpenMP thread team (`omp`), so they never
//! fight llama.cpp's spinning workers for the cores. With `llama/`, the only place where
//! `unsafe` is allowed.

pub mod ggml;
pub mod omp;
pub mod par;
pub mod q8;
pub mod simd;
