//! Q8_0 × Q8_0 dot products that reproduce ggml's CPU arithmetic bit for bit.
//!
//! ggml computes a Q8_0 weight row times an f32 activation by first quantizing the
//! activation to Q8_0 (per 32 values: d = max|x| / 127 stored as f16, q = round(x · 127 /
//! max|x|)), then, per block, an exact integer dot product in eight i32 lanes, scaled by
//! d_w · d_x and accumulated with FMA into eight f32 lanes, summed horizontally at the end
//! (`ggml_vec_dot_q8_0_q8_0`, and llamafile's tinyBLAS uses the same lane order). Doing the
//! very same operations here makes Tandem's head produce llama.cpp's logits exactly, so
//! greedy verification through it is as lossless as through llama.cpp.

/// Values per Q8_0 block.
pub const QK: usize = 32;

/// f16 bits → f32 (exact).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut m = man;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((m & 0x3ff) << 13)
        }
        (0x1f, _) => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// f32 → f16 bits, rounding to nearest even (what F16C's `vcvtps2ph` with mode 0 does).
pub fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = 1u32 << (shift - 1);
        let rest = m & ((1 << shift) - 1);
        let mut r = m >> shift;
        if rest > half || (rest == half && r & 1 == 1) {
            r += 1;
        }
        return sign | r as u16;
    }
    let mut r = ((e as u32) << 10) | (man >> 13);
    let rest = man & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && r & 1 == 1) {
        r += 1; // may carry into the exponent, which is the right answer
    }
    sign | r as u16
}

/// A row (or rows) quantized to Q8_0, with the scales widened to f32 (exactly) and the
/// quants stored contiguously.
#[derive(Debug, Clone, Default)]
pub struct Q8Rows {
    /// The quantized values, [`QK`] per block, blocks in order.
    pub qs: Vec<i8>,
    /// One scale per block.
    pub d: Vec<f32>,
}

/// Quantize an activation row exactly as ggml's `quantize_row_q8_0` does (AVX2 path).
pub fn quantize_row(x: &[f32], out: &mut Q8Rows) {
    assert_eq!(x.len() % QK, 0);
    out.qs.clear();
    out.d.clear();
    for blk in x.chunks_exact(QK) {
        let amax = blk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        out.d.push(f16_to_f32(f32_to_f16(d)));
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        out.qs
            .extend(blk.iter().map(|&v| (v * id).round_ties_even() as i32 as i8));
    }
}

/// Split raw GGUF Q8_0 bytes (34-byte blocks: f16 scale, 32 quants) into a `Q8Rows`.
pub fn from_ggml_blocks(bytes: &[u8]) -> Q8Rows {
    const BLOCK: usize = 2 + QK;
    assert_eq!(bytes.len() % BLOCK, 0);
    let n = bytes.len() / BLOCK;
    let mut r = Q8Rows {
        qs: Vec::with_capacity(n * QK),
        d: Vec::with_capacity(n),
    };
    for b in bytes.chunks_exact(BLOCK) {
        r.d.push(f16_to_f32(u16::from_le_bytes([b[0], b[1]])));
        r.qs.extend(b[2..].iter().map(|&q| q as i8));
    }
    r
}

/// Widen Q4_0 (18-byte blocks: f16 scale, 16 bytes of nibbles) or Q5_0 (22-byte blocks: f16
/// scale, 32 high bits, 16 bytes of nibbles) weights to a `Q8Rows` with the same scales and
/// the same integer values (−8…7, −16…15). ggml's AVX2 `vec_dot_q4_0_q8_0` and
/// `vec_dot_q5_0_q8_0` run exactly the Q8_0 kernel's operations on those integers (per block
/// an exact integer dot product in eight lanes, one FMA with d_w · d_x, the same horizontal
/// sum), so the Q8_0 kernel — which serves many activations per loaded block — gives their
/// results bit for bit. `None` for a byte count that is not whole blocks.
pub fn widen_q4_0_q5_0(bytes: &[u8], q5: bool) -> Option<Q8Rows> {
    let block = if q5 { 22 } else { 18 };
    if !bytes.len().is_multiple_of(block) {
        return None;
    }
    let n = bytes.len() / block;
    let mut r = Q8Rows {
        qs: Vec::with_capacity(n * QK),
        d: Vec::with_capacity(n),
    };
    for b in bytes.chunks_exact(block) {
        r.d.push(f16_to_f32(u16::from_le_bytes([b[0], b[1]])));
        let (qh, qs) = if q5 {
            (u32::from_le_bytes([b[2], b[3], b[4], b[5]]), &b[6..22])
        } else {
            (0, &b[2..18])
        };
        let (lo, hi): (Vec<i8>, Vec<i8>) = qs
            .iter()
            .enumerate()
            .map(|(j, &q)| {
                if q5 {
                    let h0 = ((qh >> j) << 4) & 0x10;
                    let h1 = (qh >> (j + 12)) & 0x10;
                    (
                        ((q as u32 & 0x0f) | h0) as i8 - 16,
                        ((q as u32 >> 4) | h1) as i8 - 16,
                    )
                } else {
                    ((q & 0x0f) as i8 - 8, (q >> 4) as i8 - 8)
                }
            })
            .unzip();
        r.qs.extend(lo);
        r.qs.extend(hi);
    }
    Some(r)
}

/// `out[j] = w_row · x_j` for `xs.len()` activations (each `nb` blocks), one weight row.
/// `w_qs`/`w_d`: the row's quants and scales.
#[inline]
pub fn dot_row(w_qs: &[i8], w_d: &[f32], xs: &[&Q8Rows], out: &mut [f32]) {
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    {
        // SAFETY: the cfg guarantees AVX2 and FMA; slices are bounds-checked inside.
        unsafe { avx2::dot_row(w_qs, w_d, xs, out) }
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )))]
    dot_row_scalar(w_qs, w_d, xs, out)
}

/// Portable version with the same lane structure (eight partial sums, FMA per block, the
/// same horizontal order), so it agrees with the SIMD one.
pub fn dot_row_scalar(w_qs: &[i8], w_d: &[f32], xs: &[&Q8Rows], out: &mut [f32]) {
    let nb = w_d.len();
    for (x, o) in xs.iter().zip(out.iter_mut()) {
        let mut acc = [0.0f32; 8];
        for b in 0..nb {
            let d = w_d[b] * x.d[b];
            let wq = &w_qs[b * QK..(b + 1) * QK];
            let xq = &x.qs[b * QK..(b + 1) * QK];
            for (l, a) in acc.iter_mut().enumerate() {
                let s: i32 = (0..4)
                    .map(|i| wq[4 * l + i] as i32 * xq[4 * l + i] as i32)
                    .sum();
                *a = d.mul_add(s as f32, *a);
            }
        }
        // hsum_float_8: (hi128 + lo128), then (+ movehl), then (+ movehdup).
        let r: [f32; 4] = std::array::from_fn(|i| acc[4 + i] + acc[i]);
        let r2 = [r[0] + r[2], r[1] + r[3]];
        *o = r2[0] + r2[1];
    }
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
mod avx2 {
    use super::{Q8Rows, QK};
    use std::arch::x86_64::*;

    #[inline]
    fn hsum(x: __m256) -> f32 {
        // SAFETY: the module is compiled only with AVX2 enabled.
        unsafe {
            let r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
            let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
            let r = _mm_add_ss(r, _mm_movehdup_ps(r));
            _mm_cvtss_f32(r)
        }
    }

    /// One weight row against N activations: each weight block is loaded (and its
    /// absolute value taken) once for all N, and the N accumulators stay in registers
    /// (N is a constant so the loops unroll).
    #[inline(always)]
    unsafe fn dot_n<const N: usize>(
        w_qs: *const i8,
        w_d: *const f32,
        xq: [*const i8; N],
        xd: [*const f32; N],
        nb: usize,
    ) -> [f32; N] {
        // SAFETY: the caller checked that every pointer covers nb blocks.
        unsafe {
            let ones = _mm256_set1_epi16(1);
            let mut acc = [_mm256_setzero_ps(); N];
            for b in 0..nb {
                let wq = _mm256_loadu_si256(w_qs.add(b * QK) as *const __m256i);
                let ax = _mm256_sign_epi8(wq, wq);
                // The scale product d_w · d_x as a vector product of two broadcasts (the
                // same f32 rounding as the scalar product): the activation's broadcast
                // comes straight from memory, sparing a shuffle per pair.
                let wd = _mm256_broadcast_ss(&*w_d.add(b));
                for j in 0..N {
                    let q = _mm256_loadu_si256(xq[j].add(b * QK) as *const __m256i);
                    let sy = _mm256_sign_epi8(q, wq);
                    let dot = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), ones);
                    let d = _mm256_mul_ps(wd, _mm256_broadcast_ss(&*xd[j].add(b)));
                    acc[j] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot), acc[j]);
                }
            }
            let mut out = [0f32; N];
            for j in 0..N {
                out[j] = hsum(acc[j]);
            }
            out
        }
    }

    pub unsafe fn dot_row(w_qs: &[i8], w_d: &[f32], xs: &[&Q8Rows], out: &mut [f32]) {
        let nb = w_d.len();
        assert!(w_qs.len() >= nb * QK && out.len() >= xs.len());
        for x in xs {
            assert!(x.qs.len() >= nb * QK && x.d.len() >= nb);
        }
        let (wq, wd) = (w_qs.as_ptr(), w_d.as_ptr());
        let mut j0 = 0;
        // SAFETY: every slice was checked above to hold nb blocks.
        unsafe {
            while j0 < xs.len() {
                let n = (xs.len() - j0).min(4);
                let q = |j: usize| xs[j0 + j.min(n - 1)].qs.as_ptr();
                let d = |j: usize| xs[j0 + j.min(n - 1)].d.as_ptr();
                match n {
                    4 => out[j0..j0 + 4].copy_from_slice(&dot_n::<4>(
                        wq,
                        wd,
                        [q(0), q(1), q(2), q(3)],
                        [d(0), d(1), d(2), d(3)],
                        nb,
                    )),
                    3 => out[j0..j0 + 3].copy_from_slice(&dot_n::<3>(
                        wq,
                        wd,
                        [q(0), q(1), q(2)],
                        [d(0), d(1), d(2)],
                        nb,
                    )),
                    2 => out[j0..j0 + 2].copy_from_slice(&dot_n::<2>(
                        wq,
                        wd,
                        [q(0), q(1)],
                        [d(0), d(1)],
                        nb,
                    )),
                    _ => out[j0..j0 + 1].copy_from_slice(&dot_n::<1>(wq, wd, [q(0)], [d(0)], nb)),
                }
                j0 += n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_round_trip_and_rounding() {
        for h in [
            0u16, 1, 0x3c00, 0x3555, 0x7bff, 0x8001, 0xbc00, 0x0400, 0x03ff,
        ] {
            assert_eq!(f32_to_f16(f16_to_f32(h)), h, "{h:#x}");
        }
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f32_to_f16(1.0 + 1.0 / 2048.0), 0x3c00); // tie → even
        assert_eq!(f32_to_f16(1.0 + 3.0 / 2048.0), 0x3c02); // tie → even (up)
        assert_eq!(f32_to_f16(65520.0), 0x7c00); // overflows to inf
    }

    #[cfg(all(target_arch = "x86_64", target_feature = "f16c"))]
    #[test]
    fn f16_conversion_matches_the_hardware() {
        use std::arch::x86_64::*;
        let mut s = 12345u32;
        for _ in 0..100_000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let x = f32::from_bits(s);
            if !x.is_finite() {
                continue;
            }
            // SAFETY: f16c is enabled for this build (cfg above).
            let hw = unsafe { _mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(x), 0), 0) as u16 };
            assert_eq!(f32_to_f16(x), hw, "{x:e}");
            let back = unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_set1_epi16(hw as i16))) };
            assert_eq!(f16_to_f32(hw).to_bits(), back.to_bits());
        }
    }

    #[test]
    fn quantization_follows_ggml() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) * 0.37).collect();
        let mut q = Q8Rows::default();
        quantize_row(&x, &mut q);
        assert_eq!(q.d.len(), 2);
        // The block's largest magnitude maps to ±127.
        assert_eq!(q.qs[0], -127);
        assert_eq!(q.qs[63], 127);
        let back: Vec<f32> = (0..64).map(|i| q.qs[i] as f32 * q.d[i / 32]).collect();
        for (a, b) in x.iter().zip(&back) {
            assert!((a - b).abs() <= q.d[0].max(q.d[1]) * 0.51);
        }
    }

    #[test]
    fn simd_and_scalar_agree_bit_for_bit() {
        let nb = 20;
        let mut s = 7u32;
        let mut rnd = || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s
        };
        let w = Q8Rows {
            qs: (0..nb * QK).map(|_| rnd() as i8).collect(),
            d: (0..nb).map(|_| (rnd() % 1000) as f32 * 1e-4).collect(),
        };
        let xs: Vec<Q8Rows> = (0..7)
            .map(|_| {
                let v: Vec<f32> = (0..nb * QK)
                    .map(|_| (rnd() % 2001) as f32 / 1000.0 - 1.0)
                    .collect();
                let mut q = Q8Rows::default();
                quantize_row(&v, &mut q);
                q
            })
            .collect();
        let refs: Vec<&Q8Rows> = xs.iter().collect();
        let mut a = vec![0.0; 7];
        let mut b = vec![0.0; 7];
        dot_row(&w.qs, &w.d, &refs, &mut a);
        dot_row_scalar(&w.qs, &w.d, &refs, &mut b);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.to_bits(), y.to_bits());
        }
    }
}
