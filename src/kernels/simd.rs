//! f32-accumulating kernels for Tandem's own matrix products (the diffusion drafter). Kept
//! here because they use `unsafe` SIMD intrinsics; callers see safe functions.
//!
//! Every (weight row, activation row) product is accumulated in eight lanes with FMA and
//! reduced as ((l0+l4)+(l1+l5))+((l2+l6)+(l3+l7)), then the tail (`k % 8` elements) is
//! added one FMA at a time — the same order in the AVX2 and the portable version, and
//! independent of how products are tiled, so results do not depend on the tiling or on
//! the thread count. F16 and BF16 weights stay in their 2-byte form in memory (half the
//! bandwidth) and are widened in registers (F16C / a 16-bit shift), which is exact.

/// A row-major weight matrix in its storage type.
#[derive(Debug, Clone, Copy)]
pub enum Weights<'a> {
    /// 32-bit floats.
    F32(&'a [f32]),
    /// IEEE half-precision bits.
    F16(&'a [u16]),
    /// bfloat16 bits.
    Bf16(&'a [u16]),
}

impl Weights<'_> {
    fn len(&self) -> usize {
        match self {
            Weights::F32(w) => w.len(),
            Weights::F16(w) | Weights::Bf16(w) => w.len(),
        }
    }

    /// Element `i` widened to f32 (exact).
    #[inline]
    fn get(&self, i: usize) -> f32 {
        match self {
            Weights::F32(w) => w[i],
            Weights::F16(w) => super::q8::f16_to_f32(w[i]),
            Weights::Bf16(w) => f32::from_bits((w[i] as u32) << 16),
        }
    }
}

/// `a · b`.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "f16c"
    ))]
    {
        // SAFETY: the cfg guarantees AVX2/FMA; both slices hold `a.len()` elements.
        unsafe { avx2::dot(a, b) }
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "f16c"
    )))]
    {
        let mut out = [0.0f32];
        scalar_rows(Weights::F32(a), a.len(), 0..1, b, 1, &mut out);
        out[0]
    }
}

/// Weight rows `rows` (each `k` long) times every activation row of `xs` (`m × k`):
/// `out[(r - rows.start) * m + j] = W[r] · xs[j]`.
pub fn matmul_rows(
    w: Weights<'_>,
    k: usize,
    rows: std::ops::Range<usize>,
    xs: &[f32],
    out: &mut [f32],
) {
    let m = xs.len().checked_div(k).unwrap_or(0);
    assert_eq!(xs.len(), m * k);
    assert!(rows.end * k <= w.len());
    assert_eq!(out.len(), rows.len() * m);
    if m == 0 || rows.is_empty() {
        out.fill(0.0);
        return;
    }
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "f16c"
    ))]
    {
        // SAFETY: the cfg guarantees AVX2/FMA/F16C; the sizes were checked above and the
        // kernels only read rows `rows` of `w` and the `m` rows of `xs`.
        unsafe { avx2::matmul_rows(w, k, rows, xs, m, out) }
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "f16c"
    )))]
    scalar_rows(w, k, rows, xs, m, out)
}

/// Round every value to the nearest f16 (ties to even) and back to f32, in place — what
/// ggml does to activations before an F16 product. Hardware F16C when built with it.
pub fn round_to_f16(x: &mut [f32]) {
    use super::q8::{f16_to_f32, f32_to_f16};
    #[cfg(not(all(target_arch = "x86_64", target_feature = "f16c")))]
    let done = 0;
    #[cfg(all(target_arch = "x86_64", target_feature = "f16c"))]
    let done = {
        use std::arch::x86_64::*;
        let done = x.len() / 8 * 8;
        for c in x[..done].chunks_exact_mut(8) {
            // SAFETY: the cfg guarantees F16C (and AVX); `c` holds exactly 8 floats.
            unsafe {
                let v = _mm256_loadu_ps(c.as_ptr());
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
                _mm256_storeu_ps(c.as_mut_ptr(), _mm256_cvtph_ps(h));
            }
        }
        done
    };
    for v in &mut x[done..] {
        *v = f16_to_f32(f32_to_f16(*v));
    }
}

/// The portable version: one product at a time, same lanes and reduction order.
#[allow(dead_code)]
fn scalar_rows(
    w: Weights<'_>,
    k: usize,
    rows: std::ops::Range<usize>,
    xs: &[f32],
    m: usize,
    out: &mut [f32],
) {
    let n8 = k / 8 * 8;
    for (ri, r) in rows.enumerate() {
        for j in 0..m {
            let x = &xs[j * k..(j + 1) * k];
            let mut c = [0.0f32; 8];
            for i in (0..n8).step_by(8) {
                for l in 0..8 {
                    c[l] = w.get(r * k + i + l).mul_add(x[i + l], c[l]);
                }
            }
            let mut s = ((c[0] + c[4]) + (c[1] + c[5])) + ((c[2] + c[6]) + (c[3] + c[7]));
            for (t, &xt) in x.iter().enumerate().skip(n8) {
                s = w.get(r * k + t).mul_add(xt, s);
            }
            out[ri * m + j] = s;
        }
    }
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma",
    target_feature = "f16c"
))]
mod avx2 {
    use super::Weights;
    use std::arch::x86_64::*;

    /// Storage types, as const generic tags.
    const F32: u8 = 0;
    const F16: u8 = 1;
    const BF16: u8 = 2;

    /// Weight rows per register tile, and activation rows per tile: 3 × 4 accumulators
    /// plus 3 weight vectors and one activation vector fill the 16 ymm registers.
    const MR: usize = 3;
    const NR: usize = 4;
    /// Activation rows kept hot in cache while all weight rows of a thread stream by.
    const NC: usize = 32;

    #[inline(always)]
    unsafe fn load_w<const T: u8>(p: *const u8, i: usize) -> __m256 {
        // SAFETY: the caller guarantees 8 elements at `i`.
        unsafe {
            match T {
                F32 => _mm256_loadu_ps((p as *const f32).add(i)),
                F16 => _mm256_cvtph_ps(_mm_loadu_si128((p as *const u16).add(i) as *const __m128i)),
                _ => _mm256_castsi256_ps(_mm256_slli_epi32(
                    _mm256_cvtepu16_epi32(_mm_loadu_si128(
                        (p as *const u16).add(i) as *const __m128i
                    )),
                    16,
                )),
            }
        }
    }

    #[inline(always)]
    unsafe fn load_w1<const T: u8>(p: *const u8, i: usize) -> f32 {
        // SAFETY: the caller guarantees the element exists.
        unsafe {
            match T {
                F32 => *(p as *const f32).add(i),
                F16 => crate::kernels::q8::f16_to_f32(*(p as *const u16).add(i)),
                _ => f32::from_bits((*(p as *const u16).add(i) as u32) << 16),
            }
        }
    }

    /// `R` weight rows × `N` activation rows, every product over the full `k`.
    #[inline(always)]
    unsafe fn tile<const T: u8, const R: usize, const N: usize>(
        w: [*const u8; R],
        x: [*const f32; N],
        k: usize,
    ) -> [[f32; N]; R] {
        let n8 = k / 8 * 8;
        // SAFETY: every pointer covers `k` elements (checked by `matmul_rows`).
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); N]; R];
            let mut i = 0;
            while i < n8 {
                let wv: [__m256; R] = std::array::from_fn(|r| load_w::<T>(w[r], i));
                for j in 0..N {
                    let xv = _mm256_loadu_ps(x[j].add(i));
                    for r in 0..R {
                        acc[r][j] = _mm256_fmadd_ps(wv[r], xv, acc[r][j]);
                    }
                }
                i += 8;
            }
            let mut out = [[0.0f32; N]; R];
            for r in 0..R {
                for j in 0..N {
                    let mut c = [0.0f32; 8];
                    _mm256_storeu_ps(c.as_mut_ptr(), acc[r][j]);
                    let mut s = ((c[0] + c[4]) + (c[1] + c[5])) + ((c[2] + c[6]) + (c[3] + c[7]));
                    for t in n8..k {
                        s = load_w1::<T>(w[r], t).mul_add(*x[j].add(t), s);
                    }
                    out[r][j] = s;
                }
            }
            out
        }
    }

    /// Weight rows `r..r + R` against activation rows `j..j + n` (n ≤ NR).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tiles_for<const T: u8, const R: usize>(
        w: *const u8,
        esz: usize,
        k: usize,
        r: usize,
        xs: *const f32,
        j: usize,
        n: usize,
        out: &mut [f32],
        r0: usize,
        m: usize,
    ) {
        // SAFETY: see `matmul_rows`.
        unsafe {
            let wp: [*const u8; R] = std::array::from_fn(|i| w.add((r + i) * k * esz));
            let xp = |i: usize| xs.add((j + i) * k);
            let o = (r - r0) * m + j;
            match n {
                4 => store(
                    tile::<T, R, 4>(wp, [xp(0), xp(1), xp(2), xp(3)], k),
                    out,
                    o,
                    m,
                ),
                3 => store(tile::<T, R, 3>(wp, [xp(0), xp(1), xp(2)], k), out, o, m),
                2 => store(tile::<T, R, 2>(wp, [xp(0), xp(1)], k), out, o, m),
                _ => store(tile::<T, R, 1>(wp, [xp(0)], k), out, o, m),
            }
        }
    }

    /// A tile's results into `out` (weight-row-major, `m` per row) at offset `o`.
    #[inline(always)]
    fn store<const R: usize, const N: usize>(
        t: [[f32; N]; R],
        out: &mut [f32],
        o: usize,
        m: usize,
    ) {
        for (i, row) in t.iter().enumerate() {
            out[o + i * m..o + i * m + N].copy_from_slice(row);
        }
    }

    unsafe fn run<const T: u8>(
        w: *const u8,
        esz: usize,
        k: usize,
        rows: std::ops::Range<usize>,
        xs: &[f32],
        m: usize,
        out: &mut [f32],
    ) {
        let xp = xs.as_ptr();
        // SAFETY: see `matmul_rows`.
        unsafe {
            for jc in (0..m).step_by(NC) {
                let jend = (jc + NC).min(m);
                let mut r = rows.start;
                while r < rows.end {
                    let full = r + MR <= rows.end;
                    for j in (jc..jend).step_by(NR) {
                        let n = (jend - j).min(NR);
                        if full {
                            tiles_for::<T, MR>(w, esz, k, r, xp, j, n, out, rows.start, m);
                        } else {
                            tiles_for::<T, 1>(w, esz, k, r, xp, j, n, out, rows.start, m);
                        }
                    }
                    r += if full { MR } else { 1 };
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: the caller checked that both hold `a.len()` elements.
        unsafe { tile::<F32, 1, 1>([a.as_ptr() as *const u8], [b.as_ptr()], a.len())[0][0] }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn matmul_rows(
        w: Weights<'_>,
        k: usize,
        rows: std::ops::Range<usize>,
        xs: &[f32],
        m: usize,
        out: &mut [f32],
    ) {
        // SAFETY: the caller checked every size.
        unsafe {
            match w {
                Weights::F32(w) => run::<F32>(w.as_ptr() as *const u8, 4, k, rows, xs, m, out),
                Weights::F16(w) => run::<F16>(w.as_ptr() as *const u8, 2, k, rows, xs, m, out),
                Weights::Bf16(w) => run::<BF16>(w.as_ptr() as *const u8, 2, k, rows, xs, m, out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wave(n: usize, f: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * f).sin()).collect()
    }

    #[test]
    fn simd_and_scalar_agree_bit_for_bit_for_every_tiling() {
        use crate::kernels::q8::f32_to_f16;
        // k = 77: a tail after the 8-lane part; 7 rows and up to 9 activations: every
        // remainder tile is exercised.
        let k = 77;
        let wf = wave(7 * k, 0.37);
        let wh: Vec<u16> = wf.iter().map(|&v| f32_to_f16(v)).collect();
        let wb: Vec<u16> = wf.iter().map(|&v| (v.to_bits() >> 16) as u16).collect();
        for m in 1..=9 {
            let xs = wave(m * k, 0.11);
            for w in [Weights::F32(&wf), Weights::F16(&wh), Weights::Bf16(&wb)] {
                for rows in [0..7, 2..7, 3..4] {
                    let mut a = vec![0.0; rows.len() * m];
                    let mut b = vec![0.0; rows.len() * m];
                    matmul_rows(w, k, rows.clone(), &xs, &mut a);
                    scalar_rows(w, k, rows.clone(), &xs, m, &mut b);
                    assert_eq!(a, b, "{w:?} m={m} rows={rows:?}");
                    for (ri, r) in rows.clone().enumerate() {
                        for j in 0..m {
                            let exact: f64 = (0..k)
                                .map(|t| w.get(r * k + t) as f64 * xs[j * k + t] as f64)
                                .sum();
                            assert!((a[ri * m + j] as f64 - exact).abs() < 1e-4);
                        }
                    }
                }
            }
        }
        let mut r = wave(1000, 0.013)
            .iter()
            .map(|v| v * 1e3)
            .collect::<Vec<_>>();
        let want: Vec<f32> = r
            .iter()
            .map(|&v| crate::kernels::q8::f16_to_f32(f32_to_f16(v)))
            .collect();
        round_to_f16(&mut r);
        assert_eq!(r, want);
        assert_eq!(dot_f32(&wf[..k], &wf[k..2 * k]), {
            let mut o = [0.0];
            scalar_rows(Weights::F32(&wf[..k]), k, 0..1, &wf[k..2 * k], 1, &mut o);
            o[0]
        });
    }
}
