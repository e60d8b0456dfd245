//! The butterfly kernels of the additive FFT, one implementation per carry-less backend:
//! portable, PCLMULQDQ (one product at a time) and AVX-512 VPCLMULQDQ (eight at a time).
//!
//! A transform is a sequence of levels; at level `q` of a block with index `b`, sub-block
//! `u` (of `2^(L-q)` elements) pairs its halves element by element with the butterfly
//! `a += lambda c; c += a`, `lambda = lambda(b 2^q + u)` (the inverse: `c += a; a += lambda c`).
//! The kernels run several levels per pass over memory:
//! - [`Kernels::group`]: the first `t <= 4` levels of a block seen as `2^t` rows (element
//!   `j s + i` is `rows[j][i]`); every column is an independent `2^t`-point network, so a
//!   pass loads each element once for `t` levels, and columns can be split among threads.
//! - [`Kernels::leaf`]: every level of a block of at most [`LEAF`] elements.

use super::field::{Twiddles, gf_mul_portable};

/// Largest block [`Kernels::leaf`] transforms in one call.
pub(super) const LEAF: usize = 64;
/// Most levels [`Kernels::group`] does in one pass (`rows.len() <= 2^GROUP_LOG`).
pub(super) const GROUP_LOG: u32 = 4;

/// The transform kernels of one backend.
pub(super) trait Kernels: Sync {
    /// The first `log2(rows.len())` levels of block `b`, forward or `inverse` (then in
    /// reverse order); `rows` are equally long column ranges of the block's `2^t` rows.
    fn group(rows: &mut [&mut [u64]], tw: &Twiddles, b: usize, inverse: bool);
    /// Every level of block `b` (`d.len()` a power of two, at most [`LEAF`]).
    fn leaf(d: &mut [u64], tw: &Twiddles, b: usize, inverse: bool);
    /// `a *= b` element-wise.
    fn pointwise(a: &mut [u64], b: &[u64]);
}

/// The levels of block `b` on `v` (`2^t` elements), one field product at a time.
#[inline(always)]
fn levels_scalar(
    v: &mut [u64],
    tw: &Twiddles,
    b: usize,
    inverse: bool,
    mul: impl Fn(u64, u64) -> u64 + Copy,
) {
    let t = v.len().trailing_zeros();
    let level = |v: &mut [u64], q: u32| {
        let half = v.len() >> (q + 1);
        for (u, block) in v.chunks_exact_mut(2 * half).enumerate() {
            let lambda = tw.at((b << q) + u);
            let (lo, hi) = block.split_at_mut(half);
            for (a, c) in lo.iter_mut().zip(hi.iter_mut()) {
                if inverse {
                    *c ^= *a;
                    *a ^= mul(lambda, *c);
                } else {
                    *a ^= mul(lambda, *c);
                    *c ^= *a;
                }
            }
        }
    };
    if inverse {
        (0..t).rev().for_each(|q| level(v, q));
    } else {
        (0..t).for_each(|q| level(v, q));
    }
}

/// [`Kernels::group`] column by column, one field product at a time.
#[inline(always)]
fn group_scalar(
    rows: &mut [&mut [u64]],
    tw: &Twiddles,
    b: usize,
    inverse: bool,
    mul: impl Fn(u64, u64) -> u64 + Copy,
) {
    let mut column = [0u64; 1 << GROUP_LOG];
    let column = &mut column[..rows.len()];
    let len = rows.first().map_or(0, |r| r.len());
    for i in 0..len {
        for (v, row) in column.iter_mut().zip(rows.iter()) {
            *v = row[i];
        }
        levels_scalar(column, tw, b, inverse, mul);
        for (v, row) in column.iter().zip(rows.iter_mut()) {
            row[i] = *v;
        }
    }
}

/// [`Kernels::pointwise`], one field product at a time.
#[inline(always)]
fn pointwise_scalar(a: &mut [u64], b: &[u64], mul: impl Fn(u64, u64) -> u64) {
    for (x, y) in a.iter_mut().zip(b) {
        *x = mul(*x, *y);
    }
}

/// The portable backend.
pub(super) struct Portable;

impl Kernels for Portable {
    fn group(rows: &mut [&mut [u64]], tw: &Twiddles, b: usize, inverse: bool) {
        group_scalar(rows, tw, b, inverse, gf_mul_portable);
    }
    fn leaf(d: &mut [u64], tw: &Twiddles, b: usize, inverse: bool) {
        levels_scalar(d, tw, b, inverse, gf_mul_portable);
    }
    fn pointwise(a: &mut [u64], b: &[u64]) {
        pointwise_scalar(a, b, gf_mul_portable);
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) use x86::{Pclmul, Vpclmul};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::super::clmul::clmul64_pclmul;
    use super::super::field::{Twiddles, reduce};
    use super::{GROUP_LOG, Kernels, LEAF, group_scalar, levels_scalar, pointwise_scalar};
    use std::arch::x86_64::*;

    /// Product in GF(2^64); only inlined into the PCLMULQDQ kernels below.
    #[inline(always)]
    fn mul1(a: u64, b: u64) -> u64 {
        let p = clmul64_pclmul(a, b);
        reduce(p as u64, (p >> 64) as u64)
    }

    /// The PCLMULQDQ backend.
    pub(in super::super) struct Pclmul;

    #[target_feature(enable = "pclmulqdq,sse4.1")]
    fn group_pclmul(rows: &mut [&mut [u64]], tw: &Twiddles, b: usize, inverse: bool) {
        group_scalar(rows, tw, b, inverse, mul1);
    }
    #[target_feature(enable = "pclmulqdq,sse4.1")]
    fn leaf_pclmul(d: &mut [u64], tw: &Twiddles, b: usize, inverse: bool) {
        levels_scalar(d, tw, b, inverse, mul1);
    }
    #[target_feature(enable = "pclmulqdq,sse4.1")]
    fn pointwise_pclmul(a: &mut [u64], b: &[u64]) {
        pointwise_scalar(a, b, mul1);
    }

    impl Kernels for Pclmul {
        fn group(rows: &mut [&mut [u64]], tw: &Twiddles, b: usize, inverse: bool) {
            // SAFETY: `Pclmul` kernels are only selected after `ClmulBackend::Pclmul` (or
            // `Vpclmul`, which implies it) passed `is_supported()`.
            unsafe { group_pclmul(rows, tw, b, inverse) }
        }
        fn leaf(d: &mut [u64], tw: &Twiddles, b: usize, inverse: bool) {
            // SAFETY: as above.
            unsafe { leaf_pclmul(d, tw, b, inverse) }
        }
        fn pointwise(a: &mut [u64], b: &[u64]) {
            // SAFETY: as above.
            unsafe { pointwise_pclmul(a, b) }
        }
    }

    /// Eight products in GF(2^64): even and odd lanes in one VPCLMULQDQ each, then the
    /// reduction of [`reduce`] on 512-bit vectors.
    #[target_feature(enable = "avx512f,vpclmulqdq")]
    #[inline]
    fn mul8(v: __m512i, w: __m512i) -> __m512i {
        let pe = _mm512_clmulepi64_epi128(v, w, 0x00);
        let po = _mm512_clmulepi64_epi128(v, w, 0x11);
        let lo = _mm512_unpacklo_epi64(pe, po);
        let hi = _mm512_unpackhi_epi64(pe, po);
        let ov = _mm512_ternarylogic_epi64(
            _mm512_srli_epi64(hi, 63),
            _mm512_srli_epi64(hi, 61),
            _mm512_srli_epi64(hi, 60),
            0x96,
        );
        let t = _mm512_xor_si512(hi, ov);
        let r = _mm512_ternarylogic_epi64(lo, t, _mm512_slli_epi64(t, 1), 0x96);
        _mm512_ternarylogic_epi64(r, _mm512_slli_epi64(t, 3), _mm512_slli_epi64(t, 4), 0x96)
    }

    /// Eight butterflies with the lane constants `l`.
    #[target_feature(enable = "avx512f,vpclmulqdq")]
    #[inline]
    fn bfly8(a: &mut __m512i, c: &mut __m512i, l: __m512i, inverse: bool) {
        if inverse {
            *c = _mm512_xor_si512(*c, *a);
            *a = _mm512_xor_si512(*a, mul8(l, *c));
        } else {
            *a = _mm512_xor_si512(*a, mul8(l, *c));
            *c = _mm512_xor_si512(*c, *a);
        }
    }

    /// Level `q` of block `b` across the `2^levels` vectors `v` (whole vectors pair up).
    #[target_feature(enable = "avx512f,vpclmulqdq")]
    #[inline]
    fn vector_level(v: &mut [__m512i], tw: &Twiddles, b: usize, q: u32, inverse: bool) {
        let half = v.len() >> (q + 1);
        for (u, block) in v.chunks_exact_mut(2 * half).enumerate() {
            let l = _mm512_set1_epi64(tw.at((b << q) + u) as i64);
            let (lo, hi) = block.split_at_mut(half);
            for (a, c) in lo.iter_mut().zip(hi.iter_mut()) {
                bfly8(a, c, l, inverse);
            }
        }
    }

    /// [`Kernels::group`] on `T` levels, eight columns at a time.
    #[target_feature(enable = "avx512f,vpclmulqdq")]
    fn group_vpclmul<const T: u32>(
        rows: &mut [&mut [u64]],
        tw: &Twiddles,
        b: usize,
        inverse: bool,
    ) {
        let n = 1usize << T;
        let mut v = [_mm512_setzero_si512(); 1 << GROUP_LOG];
        let v = &mut v[..n];
        let len = rows.first().map_or(0, |r| r.len());
        for i in (0..len).step_by(8) {
            for (x, row) in v.iter_mut().zip(rows.iter()) {
                // SAFETY: `row[i..i + 8]` is in bounds (checked by the slice); unaligned
                // loads are allowed.
                *x = unsafe { _mm512_loadu_si512(row[i..i + 8].as_ptr().cast()) };
            }
            for q in 0..T {
                let q = if inverse { T - 1 - q } else { q };
                vector_level(v, tw, b, q, inverse);
            }
            for (x, row) in v.iter().zip(rows.iter_mut()) {
                // SAFETY: as above, for the store.
                unsafe { _mm512_storeu_si512(row[i..i + 8].as_mut_ptr().cast(), *x) };
            }
        }
    }

    /// Lane permutations that split a vector pair `(A, B)` (elements `0..16`) into the low
    /// and high halves of the sub-blocks of 8, 4 and 2 elements (levels 3, 4 and 5 of a
    /// 64-element leaf), and put them back.
    const SPLIT_LO: [[i64; 8]; 3] = [
        [0, 1, 2, 3, 8, 9, 10, 11],
        [0, 1, 4, 5, 8, 9, 12, 13],
        [0, 2, 4, 6, 8, 10, 12, 14],
    ];
    const SPLIT_HI: [[i64; 8]; 3] = [
        [4, 5, 6, 7, 12, 13, 14, 15],
        [2, 3, 6, 7, 10, 11, 14, 15],
        [1, 3, 5, 7, 9, 11, 13, 15],
    ];
    const MERGE_A: [[i64; 8]; 3] = [
        [0, 1, 2, 3, 8, 9, 10, 11],
        [0, 1, 8, 9, 2, 3, 10, 11],
        [0, 8, 1, 9, 2, 10, 3, 11],
    ];
    const MERGE_B: [[i64; 8]; 3] = [
        [4, 5, 6, 7, 12, 13, 14, 15],
        [4, 5, 12, 13, 6, 7, 14, 15],
        [4, 12, 5, 13, 6, 14, 7, 15],
    ];

    /// The sub-block of each lane, per level `3 + r`.
    const SPREAD: [[i64; 8]; 3] = [
        [0, 0, 0, 0, 1, 1, 1, 1],
        [0, 0, 1, 1, 2, 2, 3, 3],
        [0, 1, 2, 3, 4, 5, 6, 7],
    ];

    #[target_feature(enable = "avx512f,vpclmulqdq")]
    #[inline]
    fn idx(i: [i64; 8]) -> __m512i {
        _mm512_set_epi64(i[7], i[6], i[5], i[4], i[3], i[2], i[1], i[0])
    }

    /// Level `3 + r` (`r < 3`) of a 64-element leaf `b`: pairs inside each vector, so each
    /// vector pair `(v[2p], v[2p + 1])` is split into halves, butterflied and merged.
    #[target_feature(enable = "avx512f,vpclmulqdq")]
    #[inline]
    fn lane_level(v: &mut [__m512i; 8], tw: &Twiddles, b: usize, r: usize, inverse: bool) {
        let q = 3 + r as u32;
        let (split_lo, split_hi) = (idx(SPLIT_LO[r]), idx(SPLIT_HI[r]));
        let (merge_a, merge_b) = (idx(MERGE_A[r]), idx(MERGE_B[r]));
        // Sub-blocks per vector pair: 2, 4 or 8; their constants fill the lanes in order,
        // each repeated over its 4, 2 or 1 butterflies.
        let per_pair = 2usize << r;
        let low = tw.low();
        let spread = idx(SPREAD[r]);
        // SAFETY: `low[..8]` is in bounds (checked by the slice); unaligned loads are allowed.
        let offsets = _mm512_permutexvar_epi64(spread, unsafe {
            _mm512_loadu_si512(low[..8].as_ptr().cast())
        });
        for p in 0..4 {
            // `first` is a multiple of `per_pair`, so lambda(first + i) = lambda(first) ^
            // low[i] for i < per_pair <= 8.
            let first = (b << q) + p * per_pair;
            let l = _mm512_xor_si512(_mm512_set1_epi64(tw.at(first) as i64), offsets);
            let (a, c) = (v[2 * p], v[2 * p + 1]);
            let mut lo = _mm512_permutex2var_epi64(a, split_lo, c);
            let mut hi = _mm512_permutex2var_epi64(a, split_hi, c);
            bfly8(&mut lo, &mut hi, l, inverse);
            v[2 * p] = _mm512_permutex2var_epi64(lo, merge_a, hi);
            v[2 * p + 1] = _mm512_permutex2var_epi64(lo, merge_b, hi);
        }
    }

    /// Every level of a 64-element leaf `b` in registers.
    #[target_feature(enable = "avx512f,vpclmulqdq")]
    fn leaf_vpclmul(d: &mut [u64], tw: &Twiddles, b: usize, inverse: bool) {
        let mut v = [_mm512_setzero_si512(); 8];
        for (x, chunk) in v.iter_mut().zip(d.chunks_exact(8)) {
            // SAFETY: each chunk holds 8 u64 (64 bytes); unaligned loads are allowed.
            *x = unsafe { _mm512_loadu_si512(chunk.as_ptr().cast()) };
        }
        if inverse {
            for r in (0..3).rev() {
                lane_level(&mut v, tw, b, r, true);
            }
            for q in (0..3).rev() {
                vector_level(&mut v, tw, b, q, true);
            }
        } else {
            for q in 0..3 {
                vector_level(&mut v, tw, b, q, false);
            }
            for r in 0..3 {
                lane_level(&mut v, tw, b, r, false);
            }
        }
        for (x, chunk) in v.iter().zip(d.chunks_exact_mut(8)) {
            // SAFETY: as above, for the store.
            unsafe { _mm512_storeu_si512(chunk.as_mut_ptr().cast(), *x) };
        }
    }

    #[target_feature(enable = "avx512f,vpclmulqdq")]
    fn pointwise_vpclmul(a: &mut [u64], b: &[u64]) {
        let mut ac = a.chunks_exact_mut(8);
        let mut bc = b.chunks_exact(8);
        for (x, y) in (&mut ac).zip(&mut bc) {
            // SAFETY: both chunks hold exactly 8 u64 (64 bytes); unaligned access is fine.
            unsafe {
                let vx = _mm512_loadu_si512(x.as_ptr().cast());
                let vy = _mm512_loadu_si512(y.as_ptr().cast());
                _mm512_storeu_si512(x.as_mut_ptr().cast(), mul8(vx, vy));
            }
        }
        for (x, y) in ac.into_remainder().iter_mut().zip(bc.remainder()) {
            *x = super::gf_mul_portable(*x, *y);
        }
    }

    /// The AVX-512 VPCLMULQDQ backend.
    pub(in super::super) struct Vpclmul;

    impl Kernels for Vpclmul {
        fn group(rows: &mut [&mut [u64]], tw: &Twiddles, b: usize, inverse: bool) {
            let vectors = rows.first().is_some_and(|r| r.len() % 8 == 0);
            // SAFETY: `Vpclmul` kernels are only selected after `ClmulBackend::Vpclmul`
            // passed `is_supported()` (AVX-512F, VPCLMULQDQ, PCLMULQDQ, SSE4.1).
            unsafe {
                match rows.len() {
                    2 if vectors => group_vpclmul::<1>(rows, tw, b, inverse),
                    4 if vectors => group_vpclmul::<2>(rows, tw, b, inverse),
                    8 if vectors => group_vpclmul::<3>(rows, tw, b, inverse),
                    16 if vectors => group_vpclmul::<4>(rows, tw, b, inverse),
                    _ => group_pclmul(rows, tw, b, inverse),
                }
            }
        }
        fn leaf(d: &mut [u64], tw: &Twiddles, b: usize, inverse: bool) {
            // SAFETY: as above.
            unsafe {
                if d.len() == LEAF && tw.low().len() >= 8 {
                    leaf_vpclmul(d, tw, b, inverse)
                } else {
                    leaf_pclmul(d, tw, b, inverse)
                }
            }
        }
        fn pointwise(a: &mut [u64], b: &[u64]) {
            // SAFETY: as above.
            unsafe { pointwise_vpclmul(a, b) }
        }
    }
}
