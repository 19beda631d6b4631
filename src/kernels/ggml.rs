//! ggml's own CPU kernels for every quantized type, reached through its type traits:
//! dequantize a row (`to_float`, what `ggml_get_rows` does for embeddings), quantize an
//! activation to the weight's `vec_dot_type` (Q8_K for the K-quants, Q8_0/Q8_1 for the
//! 32-blocks, F16 for F16) and the weight-row × activation dot product (`vec_dot`). These
//! are the very functions llama.cpp's matrix products call per row, so a product computed
//! through them equals llama.cpp's bit for bit wherever llama.cpp takes the `vec_dot` path
//! (the K-quants, F16); for Q4_0 llama.cpp may repack the weights into interleaved rows
//! whose kernel sums in another order (see docs/quant-types.md for what was measured).
//!
//! Why call ggml rather than port the kernels: there are a dozen block formats, each with
//! hand-written AVX2/NEON code in ggml; re-implementing them bit-exactly is a large
//! surface for no gain in speed. Tandem keeps its own kernels where it beats ggml's per-row
//! calls (Q8_0 rows against many activations at once, F16/BF16/F32 tiles).

use std::ffi::c_void;
use std::sync::Once;

use llama_cpp_sys_2 as sys;

use crate::gguf::GgmlType;

/// Bytes kept 8-byte aligned (ggml's block structs hold `f32`/`f16` fields).
#[derive(Debug, Clone, Default)]
pub struct AlignedBytes {
    words: Vec<u64>,
    len: usize,
}

impl AlignedBytes {
    /// A zeroed buffer of `len` bytes.
    pub fn zeroed(len: usize) -> Self {
        Self {
            words: vec![0; len.div_ceil(8)],
            len,
        }
    }

    /// A copy of `b`.
    pub fn from_slice(b: &[u8]) -> Self {
        let mut a = Self::zeroed(b.len());
        a.as_mut().copy_from_slice(b);
        a
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl AsRef<[u8]> for AlignedBytes {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes; u8 has no alignment.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr() as *const u8, self.len) }
    }
}

impl AsMut<[u8]> for AlignedBytes {
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and the borrow is unique.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr() as *mut u8, self.len) }
    }
}

type ToFloat = unsafe extern "C" fn(*const c_void, *mut f32, i64);
type FromFloat = unsafe extern "C" fn(*const f32, *mut c_void, i64);
type VecDot =
    unsafe extern "C" fn(i32, *mut f32, usize, *const c_void, usize, *const c_void, usize, i32);

/// ggml's kernels for one weight type.
#[derive(Clone, Copy)]
pub struct TypeKernels {
    ty: GgmlType,
    blck: usize,
    size: usize,
    to_float: ToFloat,
    vec_dot: VecDot,
    dot_blck: usize,
    dot_size: usize,
    quantize_x: FromFloat,
}

impl std::fmt::Debug for TypeKernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypeKernels").field("ty", &self.ty).finish()
    }
}

fn cpu_init() {
    static INIT: Once = Once::new();
    // SAFETY: ggml's CPU initialiser (tables for f16 conversions and activations) is
    // idempotent; `Once` serialises the first call.
    INIT.call_once(|| unsafe { sys::ggml_cpu_init() });
}

impl TypeKernels {
    /// ggml's kernels for `ty`, or `None` where ggml's CPU backend has no dot product for
    /// it (I32, I64).
    pub fn new(ty: GgmlType) -> Option<Self> {
        if matches!(ty, GgmlType::I32 | GgmlType::I64) {
            return None;
        }
        cpu_init();
        // SAFETY: both trait tables are static arrays indexed by a valid ggml type id (ids
        // from `GgmlType::id`, all below GGML_TYPE_COUNT); the pointers returned are
        // 'static.
        unsafe {
            let t = &*sys::ggml_get_type_traits(ty.id() as sys::ggml_type);
            let c = &*sys::ggml_get_type_traits_cpu(ty.id() as sys::ggml_type);
            let d = &*sys::ggml_get_type_traits(c.vec_dot_type);
            let dc = &*sys::ggml_get_type_traits_cpu(c.vec_dot_type);
            Some(Self {
                ty,
                blck: usize::try_from(t.blck_size).ok()?,
                size: t.type_size,
                to_float: t.to_float?,
                vec_dot: c.vec_dot?,
                dot_blck: usize::try_from(d.blck_size).ok()?,
                dot_size: d.type_size,
                quantize_x: dc.from_float?,
            })
        }
    }

    /// The weight type.
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// Bytes of a row of `n` values, or `None` if `n` is not a whole number of blocks.
    pub fn row_bytes(&self, n: usize) -> Option<usize> {
        (n > 0 && n.is_multiple_of(self.blck) && n.is_multiple_of(self.dot_blck))
            .then(|| n / self.blck * self.size)
    }

    /// Dequantize one row (`out.len()` values) exactly as ggml does.
    pub fn dequantize(&self, row: &[u8], out: &mut [f32]) {
        assert_eq!(Some(row.len()), self.row_bytes(out.len()), "row size");
        // SAFETY: `row` holds exactly the blocks of `out.len()` values (checked above), and
        // `out` has room for them; ggml reads and writes nothing else.
        unsafe {
            (self.to_float)(
                row.as_ptr() as *const c_void,
                out.as_mut_ptr(),
                out.len() as i64,
            )
        }
    }

    /// An activation row rounded/quantized as ggml does before a product with this type.
    pub fn quantize_activation(&self, x: &[f32]) -> Activation {
        assert!(self.row_bytes(x.len()).is_some(), "activation size");
        let mut q = AlignedBytes::zeroed(x.len() / self.dot_blck * self.dot_size);
        // SAFETY: `q` has room for the quantized blocks of `x.len()` values, a whole number
        // of `vec_dot_type` blocks (checked); it is 8-byte aligned.
        unsafe {
            (self.quantize_x)(
                x.as_ptr(),
                q.as_mut().as_mut_ptr() as *mut c_void,
                x.len() as i64,
            )
        };
        Activation { n: x.len(), q }
    }

    /// `row · x` as ggml's `vec_dot` computes it. `row` must be 2-byte aligned (as rows of
    /// an [`AlignedBytes`] with an even row size are).
    #[inline]
    pub fn dot(&self, row: &[u8], x: &Activation) -> f32 {
        assert_eq!(Some(row.len()), self.row_bytes(x.n), "row size");
        let mut s = 0.0f32;
        // SAFETY: `row` holds one row of `x.n` values of this type and `x.q` its quantized
        // activation (checked); nrc = 1 reads one row and one column only.
        unsafe {
            (self.vec_dot)(
                x.n as i32,
                &mut s,
                0,
                row.as_ptr() as *const c_void,
                0,
                x.q.as_ref().as_ptr() as *const c_void,
                0,
                1,
            )
        };
        s
    }
}

/// An activation row in a weight type's `vec_dot_type`.
#[derive(Debug, Clone)]
pub struct Activation {
    n: usize,
    q: AlignedBytes,
}

/// Quantize `x` (a whole number of blocks) to `ty` with ggml's reference quantizer — for
/// writing test files and quantized drafters.
pub fn quantize(ty: GgmlType, x: &[f32], n_per_row: usize) -> Option<Vec<u8>> {
    let k = TypeKernels::new(ty)?;
    let rb = k.row_bytes(n_per_row)?;
    if x.is_empty() || !x.len().is_multiple_of(n_per_row) {
        return None;
    }
    let rows = x.len() / n_per_row;
    let mut out = vec![0u8; rows * rb];
    // SAFETY: `out` has room for `rows` rows of `rb` bytes; no importance matrix.
    let written = unsafe {
        sys::ggml_quantize_chunk(
            ty.id() as sys::ggml_type,
            x.as_ptr(),
            out.as_mut_ptr() as *mut c_void,
            0,
            rows as i64,
            n_per_row as i64,
            std::ptr::null(),
        )
    };
    (written == out.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    #[test]
    fn every_quant_type_round_trips_and_dots_close_to_f32() {
        let n = 512;
        let w = data(n, 3);
        let x = data(n, 5);
        let exact: f64 = w.iter().zip(&x).map(|(a, b)| *a as f64 * *b as f64).sum();
        for (ty, tol) in [
            (GgmlType::F16, 0.05),
            (GgmlType::Q8_0, 0.3),
            (GgmlType::Q4_0, 3.0),
            (GgmlType::Q4_1, 3.0),
            (GgmlType::Q5_0, 1.5),
            (GgmlType::Q5_1, 1.5),
            (GgmlType::Q2K, 8.0),
            (GgmlType::Q3K, 5.0),
            (GgmlType::Q4K, 3.0),
            (GgmlType::Q5K, 1.5),
            (GgmlType::Q6K, 0.8),
        ] {
            let k = TypeKernels::new(ty).unwrap();
            let q = AlignedBytes::from_slice(&quantize(ty, &w, n).unwrap());
            let mut back = vec![0.0; n];
            k.dequantize(q.as_ref(), &mut back);
            let err = back
                .iter()
                .zip(&w)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(err < 0.5, "{ty:?}: dequantized error {err}");
            let d = k.dot(q.as_ref(), &k.quantize_activation(&x));
            assert!((d as f64 - exact).abs() < tol, "{ty:?}: {d} vs {exact}");
        }
        assert!(
            TypeKernels::new(GgmlType::Q4K)
                .unwrap()
                .row_bytes(576)
                .is_none()
        );
    }
}

#[cfg(test)]
mod against_ggml {
    use super::*;

    /// ggml's own `mul_mat` of `w` (rows × cols, type `ty`) with `m` f32 activations.
    fn ggml_mul_mat(
        ty: GgmlType,
        w: &[u8],
        rows: usize,
        cols: usize,
        x: &[f32],
        m: usize,
    ) -> Vec<f32> {
        // SAFETY: a private ggml context sized for the three tensors and the graph; every
        // pointer written stays inside the tensors' own buffers.
        unsafe {
            let ctx = sys::ggml_init(sys::ggml_init_params {
                mem_size: w.len() + x.len() * 4 + rows * m * 4 + (64 << 20),
                mem_buffer: std::ptr::null_mut(),
                no_alloc: false,
            });
            let a =
                sys::ggml_new_tensor_2d(ctx, ty.id() as sys::ggml_type, cols as i64, rows as i64);
            std::ptr::copy_nonoverlapping(w.as_ptr(), (*a).data as *mut u8, w.len());
            let b = sys::ggml_new_tensor_2d(ctx, 0, cols as i64, m as i64);
            std::ptr::copy_nonoverlapping(x.as_ptr(), (*b).data as *mut f32, x.len());
            let c = sys::ggml_mul_mat(ctx, a, b);
            let g = sys::ggml_new_graph(ctx);
            sys::ggml_build_forward_expand(g, c);
            sys::ggml_graph_compute_with_ctx(ctx, g, 1);
            let out = std::slice::from_raw_parts((*c).data as *const f32, rows * m).to_vec();
            sys::ggml_free(ctx);
            out
        }
    }

    /// Q4_0 and Q5_0 rows widened to Q8_0 integers give ggml's own dot products exactly.
    #[test]
    fn widened_q4_0_and_q5_0_rows_give_ggml_dots_bit_for_bit() {
        use crate::kernels::q8;
        let (rows, cols) = (8, 256);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
            .collect();
        let x: Vec<f32> = (0..3 * cols)
            .map(|i| ((i * 104729 % 997) as f32 / 498.0) - 1.0)
            .collect();
        for ty in [GgmlType::Q4_0, GgmlType::Q5_0] {
            let k = TypeKernels::new(ty).unwrap();
            let q = AlignedBytes::from_slice(&quantize(ty, &w, cols).unwrap());
            let wide = q8::widen_q4_0_q5_0(q.as_ref(), ty == GgmlType::Q5_0).unwrap();
            let rb = k.row_bytes(cols).unwrap();
            let xs: Vec<q8::Q8Rows> = x
                .chunks_exact(cols)
                .map(|c| {
                    let mut r = q8::Q8Rows::default();
                    q8::quantize_row(c, &mut r);
                    r
                })
                .collect();
            let refs: Vec<&q8::Q8Rows> = xs.iter().collect();
            let nb = cols / q8::QK;
            for r in 0..rows {
                let mut ours = vec![0.0; 3];
                q8::dot_row(
                    &wide.qs[r * cols..(r + 1) * cols],
                    &wide.d[r * nb..(r + 1) * nb],
                    &refs,
                    &mut ours,
                );
                for (j, o) in ours.iter().enumerate() {
                    let a = k.quantize_activation(&x[j * cols..(j + 1) * cols]);
                    let theirs = k.dot(&q.as_ref()[r * rb..(r + 1) * rb], &a);
                    assert_eq!(o.to_bits(), theirs.to_bits(), "{ty:?} row {r} x {j}");
                }
            }
        }
    }

    /// Our per-row products are ggml's: the same results as `ggml_mul_mat` itself.
    #[test]
    fn per_row_vec_dot_equals_ggml_mul_mat() {
        let (rows, cols) = (16, 512);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
            .collect();
        for ty in [
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q4_0,
            GgmlType::Q6K,
            GgmlType::Q4K,
        ] {
            let k = TypeKernels::new(ty).unwrap();
            let q = AlignedBytes::from_slice(&quantize(ty, &w, cols).unwrap());
            let rb = k.row_bytes(cols).unwrap();
            for m in [1usize, 4, 16] {
                let x: Vec<f32> = (0..m * cols)
                    .map(|i| ((i * 104729 % 997) as f32 / 498.0) - 1.0)
                    .collect();
                let theirs = ggml_mul_mat(ty, q.as_ref(), rows, cols, &x, m);
                let mut worst = 0f32;
                for j in 0..m {
                    let a = k.quantize_activation(&x[j * cols..(j + 1) * cols]);
                    for r in 0..rows {
                        let ours = k.dot(&q.as_ref()[r * rb..(r + 1) * rb], &a);
                        worst = worst.max((ours - theirs[j * rows + r]).abs());
                    }
                }
                // ggml multiplies K-quant weights by batches of 8+ rows in its tiled
                // kernel, which sums in another order; everything else is bit-identical.
                let tiled = m >= 8 && matches!(ty, GgmlType::Q4K | GgmlType::Q6K);
                let bound = if tiled { 1e-4 } else { 0.0 };
                assert!(
                    worst <= bound,
                    "{ty:?} m={m}: max |ours - ggml| = {worst:e}"
                );
            }
        }
    }
}
