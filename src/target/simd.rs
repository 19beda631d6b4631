//! f32 dot-product kernels for Tandem's own matrix products (the diffusion drafter). Kept
//! here because they use `unsafe` SIMD intrinsics; callers see safe functions. Each result
//! is accumulated in eight lanes with FMA and reduced as ((l0+l4)+(l1+l5))+((l2+l6)+(l3+l7)),
//! the same order in the AVX2 and the portable version.

/// `a · b`.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    dot4_impl::<1>(a, [b, b, b, b])[0]
}

/// `a · b[k]` for four vectors at once (one pass over `a`).
#[inline]
pub fn dot4_f32(a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
    for x in &b {
        assert_eq!(a.len(), x.len());
    }
    dot4_impl::<4>(a, b)
}

#[inline]
fn dot4_impl<const K: usize>(a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    {
        // SAFETY: the cfg guarantees AVX2/FMA; lengths were checked by the callers and
        // every load stays below n8 <= len.
        unsafe { avx2::dot::<K>(a, b) }
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )))]
    scalar::<K>(a, b)
}

#[allow(dead_code)]
fn scalar<const K: usize>(a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
    let n8 = a.len() / 8 * 8;
    let mut out = [0.0f32; 4];
    for k in 0..K {
        let mut c = [0.0f32; 8];
        for i in (0..n8).step_by(8) {
            for l in 0..8 {
                c[l] = a[i + l].mul_add(b[k][i + l], c[l]);
            }
        }
        let mut s = ((c[0] + c[4]) + (c[1] + c[5])) + ((c[2] + c[6]) + (c[3] + c[7]));
        for t in n8..a.len() {
            s = a[t].mul_add(b[k][t], s);
        }
        out[k] = s;
    }
    out
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
mod avx2 {
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot<const K: usize>(a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
        let n8 = a.len() / 8 * 8;
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i < n8 {
            let x = unsafe { _mm256_loadu_ps(a.as_ptr().add(i)) };
            for k in 0..K {
                let y = unsafe { _mm256_loadu_ps(b[k].as_ptr().add(i)) };
                acc[k] = _mm256_fmadd_ps(x, y, acc[k]);
            }
            i += 8;
        }
        let mut out = [0.0f32; 4];
        for k in 0..K {
            let mut c = [0.0f32; 8];
            unsafe { _mm256_storeu_ps(c.as_mut_ptr(), acc[k]) };
            let mut s = ((c[0] + c[4]) + (c[1] + c[5])) + ((c[2] + c[6]) + (c[3] + c[7]));
            for t in n8..a.len() {
                s = a[t].mul_add(b[k][t], s);
            }
            out[k] = s;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_and_scalar_agree_bit_for_bit() {
        let a: Vec<f32> = (0..77).map(|i| (i as f32 * 0.37).sin()).collect();
        let bs: Vec<Vec<f32>> = (0..4)
            .map(|k| {
                (0..77)
                    .map(|i| ((i * (k + 2)) as f32 * 0.11).cos())
                    .collect()
            })
            .collect();
        let b = [&bs[0][..], &bs[1][..], &bs[2][..], &bs[3][..]];
        let four = dot4_f32(&a, b);
        let want = scalar::<4>(&a, b);
        assert_eq!(four, want);
        for k in 0..4 {
            assert_eq!(dot_f32(&a, b[k]), want[k]);
            let exact: f64 = a.iter().zip(b[k]).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((want[k] as f64 - exact).abs() < 1e-4);
        }
    }
}
