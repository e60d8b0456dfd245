//! Binary-polynomial multiplication by an additive FFT over GF(2^64), the engine behind
//! [`ToeplitzMethod::Fft`](super::ToeplitzMethod::Fft).
//!
//! **Encoding.** A binary polynomial is cut into 32-bit chunks; chunk `e` becomes the
//! GF(2^64) element whose bits are the chunk (field `GF(2)[z] / (z^64 + z^4 + z^3 + z + 1)`),
//! and the polynomial becomes `A(Y) = sum_e a_e Y^e` over GF(2^64). Two chunks multiply to a
//! polynomial in `z` of degree at most 62, and sums of such products stay below degree 64,
//! so the coefficients of `A(Y) B(Y)` over GF(2^64) are *exactly* the GF(2)\[z\] polynomials
//! that, shifted by `32 e` bits and XORed, give the binary product (Kronecker substitution,
//! no reduction ever happens). `A B` is computed by evaluation at `2^k` points and
//! interpolation, `2^k > deg(A B)`.
//!
//! **Transform** (Lin, Chung, Han, FOCS 2014; Cantor basis as in Gao and Mateer 2010 and
//! Chen, Cheng, Kuo, Li, Yang, arXiv:1708.09746). With a Cantor basis `v_0 = 1`,
//! `v_i^2 + v_i = v_(i-1)`, the subspace polynomials are `s_i = (x^2 + x)` composed `i`
//! times, with coefficients in GF(2) and `s_i(v_i) = 1`; the "novel" basis is
//! `X_j = prod_{bit i of j} s_i`. A polynomial is first converted from the monomial basis to
//! the novel basis (division by the sparse `s_i`: XORs only), then evaluated at the `2^k`
//! points `omega_l = sum_{bit t of l} l_t v_t` by `k` levels of butterflies
//! `a += lambda c; c += a` with `lambda = s_i(omega_(2^(i+1) b)) = omega_(2b)` (because
//! `s_i(v_j) = v_(j-i)`), so one table serves every level. The inverse runs the butterflies
//! backwards and converts back; no division by field elements is needed anywhere.
//! Recursion is depth-first (cache friendly) and the halves run on both cores.

use std::sync::OnceLock;

use rayon::join;
use rayon::prelude::*;
use zeroize::Zeroizing;

use super::clmul::{ClmulBackend, clmul64_portable};

/// Largest transform, `2^MAX_LOG` elements (`2^31` bits per operand).
pub(crate) const MAX_LOG: u32 = 28;
/// Blocks at most this long are transformed iteratively (they sit in L1/L2).
const LEAF: usize = 1 << 10;
/// Recursion splits at least this long run their halves on the rayon pool.
const PARALLEL: usize = 1 << 14;
/// Butterfly and conversion passes over at least this many elements are split into
/// chunks of this size for the rayon pool.
const CHUNK: usize = 1 << 14;

/// `lo + hi z^64` reduced modulo `z^64 + z^4 + z^3 + z + 1`: `hi z^64 = hi (1 + z + z^3 + z^4)`,
/// whose bits past 63 (`ov`, at most 4 bits) wrap around once more without overflowing.
#[inline(always)]
fn reduce(lo: u64, hi: u64) -> u64 {
    let ov = (hi >> 63) ^ (hi >> 61) ^ (hi >> 60);
    let t = hi ^ ov;
    lo ^ t ^ (t << 1) ^ (t << 3) ^ (t << 4)
}

/// Product in GF(2^64), portable.
pub(crate) fn gf_mul_portable(a: u64, b: u64) -> u64 {
    let p = clmul64_portable(a, b);
    reduce(p as u64, (p >> 64) as u64)
}

/// A solution of `z^2 + z = c` in GF(2^64), if any (Gaussian elimination on the GF(2)-linear
/// map `z -> z^2 + z`).
fn solve_artin_schreier(c: u64) -> Option<u64> {
    let mut pivots: [Option<(u64, u64)>; 64] = [None; 64];
    for j in 0..64 {
        let e = 1u64 << j;
        let (mut v, mut comb) = (gf_mul_portable(e, e) ^ e, e);
        while v != 0 {
            let top = 63 - v.leading_zeros() as usize;
            match pivots[top] {
                Some((pv, pc)) => {
                    v ^= pv;
                    comb ^= pc;
                }
                None => {
                    pivots[top] = Some((v, comb));
                    break;
                }
            }
        }
    }
    let (mut c, mut z) = (c, 0u64);
    while c != 0 {
        let top = 63 - c.leading_zeros() as usize;
        let (pv, pc) = pivots[top]?;
        c ^= pv;
        z ^= pc;
    }
    Some(z)
}

/// The Cantor basis `v_0 = 1`, `v_i^2 + v_i = v_(i-1)` (it exists for `i < 64` in
/// GF(2^64)); the first `MAX_LOG + 1` elements.
fn cantor_basis() -> &'static [u64] {
    static BASIS: OnceLock<Vec<u64>> = OnceLock::new();
    BASIS.get_or_init(|| {
        let mut v = vec![1u64];
        for _ in 0..MAX_LOG {
            match v.last().copied().and_then(solve_artin_schreier) {
                Some(next) => v.push(next),
                None => unreachable!("a Cantor basis exists in GF(2^64) (trace of v_i is 0)"),
            }
        }
        v
    })
}

/// `lambda[b] = omega_(2b) = sum_{bit t of b} v_(t+1)`, for `b < 2^(k-1)`.
fn lambda_table(k: u32) -> Vec<u64> {
    let v = cantor_basis();
    let len = 1usize << k.saturating_sub(1);
    let mut lam = vec![0u64; len];
    let mut filled = 1;
    let mut t = 0;
    while filled < len {
        let vt = v[t + 1];
        for b in 0..filled {
            lam[filled + b] = lam[b] ^ vt;
        }
        filled *= 2;
        t += 1;
    }
    lam
}

/// The three slice kernels of one backend.
trait Kernels {
    /// `a += lambda c; c += a` element-wise.
    fn bfly(lo: &mut [u64], hi: &mut [u64], lambda: u64);
    /// The inverse: `c += a; a += lambda c`.
    fn ibfly(lo: &mut [u64], hi: &mut [u64], lambda: u64);
    /// `a *= b` element-wise.
    fn pointwise(a: &mut [u64], b: &[u64]);
}

/// Scalar loops over a field multiply.
#[inline(always)]
fn bfly_scalar(lo: &mut [u64], hi: &mut [u64], lambda: u64, mul: impl Fn(u64, u64) -> u64) {
    if lambda == 0 {
        for (a, c) in lo.iter().zip(hi.iter_mut()) {
            *c ^= *a;
        }
        return;
    }
    for (a, c) in lo.iter_mut().zip(hi.iter_mut()) {
        *a ^= mul(lambda, *c);
        *c ^= *a;
    }
}

#[inline(always)]
fn ibfly_scalar(lo: &mut [u64], hi: &mut [u64], lambda: u64, mul: impl Fn(u64, u64) -> u64) {
    if lambda == 0 {
        for (a, c) in lo.iter().zip(hi.iter_mut()) {
            *c ^= *a;
        }
        return;
    }
    for (a, c) in lo.iter_mut().zip(hi.iter_mut()) {
        *c ^= *a;
        *a ^= mul(lambda, *c);
    }
}

struct Portable;

impl Kernels for Portable {
    fn bfly(lo: &mut [u64], hi: &mut [u64], lambda: u64) {
        bfly_scalar(lo, hi, lambda, gf_mul_portable);
    }
    fn ibfly(lo: &mut [u64], hi: &mut [u64], lambda: u64) {
        ibfly_scalar(lo, hi, lambda, gf_mul_portable);
    }
    fn pointwise(a: &mut [u64], b: &[u64]) {
        for (x, y) in a.iter_mut().zip(b) {
            *x = gf_mul_portable(*x, *y);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Kernels, bfly_scalar, ibfly_scalar, reduce};
    use std::arch::x86_64::*;

    #[inline(always)]
    fn mul1(a: u64, b: u64) -> u64 {
        // SAFETY: only inlined into functions compiled with PCLMULQDQ and SSE4.1, which run
        // only after both were detected.
        unsafe {
            let p = _mm_clmulepi64_si128(
                _mm_cvtsi64_si128(a as i64),
                _mm_cvtsi64_si128(b as i64),
                0x00,
            );
            reduce(_mm_cvtsi128_si64(p) as u64, _mm_extract_epi64(p, 1) as u64)
        }
    }

    pub(super) struct Pclmul;

    #[target_feature(enable = "pclmulqdq,sse4.1")]
    fn bfly_pclmul(lo: &mut [u64], hi: &mut [u64], lambda: u64) {
        bfly_scalar(lo, hi, lambda, mul1);
    }
    #[target_feature(enable = "pclmulqdq,sse4.1")]
    fn ibfly_pclmul(lo: &mut [u64], hi: &mut [u64], lambda: u64) {
        ibfly_scalar(lo, hi, lambda, mul1);
    }
    #[target_feature(enable = "pclmulqdq,sse4.1")]
    fn pointwise_pclmul(a: &mut [u64], b: &[u64]) {
        for (x, y) in a.iter_mut().zip(b) {
            *x = mul1(*x, *y);
        }
    }

    impl Kernels for Pclmul {
        fn bfly(lo: &mut [u64], hi: &mut [u64], lambda: u64) {
            // SAFETY: `Pclmul` kernels are only selected after `ClmulBackend::Pclmul` (or
            // `Vpclmul`, which implies it) passed `is_supported()`.
            unsafe { bfly_pclmul(lo, hi, lambda) }
        }
        fn ibfly(lo: &mut [u64], hi: &mut [u64], lambda: u64) {
            // SAFETY: as above.
            unsafe { ibfly_pclmul(lo, hi, lambda) }
        }
        fn pointwise(a: &mut [u64], b: &[u64]) {
            // SAFETY: as above.
            unsafe { pointwise_pclmul(a, b) }
        }
    }

    /// Eight products in GF(2^64): even and odd lanes in one VPCLMULQDQ each, then the
    /// reduction of [`reduce`] on 512-bit vectors.
    #[inline(always)]
    fn mul8(v: __m512i, w: __m512i) -> __m512i {
        // SAFETY: only inlined into functions compiled with AVX-512F and VPCLMULQDQ, which
        // run only after both were detected.
        unsafe {
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
    }

    #[target_feature(enable = "avx512f,vpclmulqdq,pclmulqdq,sse4.1")]
    fn bfly_vpclmul(lo: &mut [u64], hi: &mut [u64], lambda: u64) {
        if lambda == 0 || lo.len() < 8 {
            return bfly_scalar(lo, hi, lambda, mul1);
        }
        let l = _mm512_set1_epi64(lambda as i64);
        let mut lc = lo.chunks_exact_mut(8);
        let mut hc = hi.chunks_exact_mut(8);
        for (a, c) in (&mut lc).zip(&mut hc) {
            // SAFETY: both chunks hold exactly 8 u64 (64 bytes); unaligned access is fine.
            unsafe {
                let va = _mm512_loadu_si512(a.as_ptr().cast());
                let vc = _mm512_loadu_si512(c.as_ptr().cast());
                let na = _mm512_xor_si512(va, mul8(l, vc));
                _mm512_storeu_si512(a.as_mut_ptr().cast(), na);
                _mm512_storeu_si512(c.as_mut_ptr().cast(), _mm512_xor_si512(vc, na));
            }
        }
        bfly_scalar(lc.into_remainder(), hc.into_remainder(), lambda, mul1);
    }

    #[target_feature(enable = "avx512f,vpclmulqdq,pclmulqdq,sse4.1")]
    fn ibfly_vpclmul(lo: &mut [u64], hi: &mut [u64], lambda: u64) {
        if lambda == 0 || lo.len() < 8 {
            return ibfly_scalar(lo, hi, lambda, mul1);
        }
        let l = _mm512_set1_epi64(lambda as i64);
        let mut lc = lo.chunks_exact_mut(8);
        let mut hc = hi.chunks_exact_mut(8);
        for (a, c) in (&mut lc).zip(&mut hc) {
            // SAFETY: both chunks hold exactly 8 u64 (64 bytes); unaligned access is fine.
            unsafe {
                let va = _mm512_loadu_si512(a.as_ptr().cast());
                let vc = _mm512_xor_si512(_mm512_loadu_si512(c.as_ptr().cast()), va);
                _mm512_storeu_si512(c.as_mut_ptr().cast(), vc);
                _mm512_storeu_si512(a.as_mut_ptr().cast(), _mm512_xor_si512(va, mul8(l, vc)));
            }
        }
        ibfly_scalar(lc.into_remainder(), hc.into_remainder(), lambda, mul1);
    }

    #[target_feature(enable = "avx512f,vpclmulqdq,pclmulqdq,sse4.1")]
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
            *x = mul1(*x, *y);
        }
    }

    pub(super) struct Vpclmul;

    impl Kernels for Vpclmul {
        fn bfly(lo: &mut [u64], hi: &mut [u64], lambda: u64) {
            // SAFETY: `Vpclmul` kernels are only selected after `ClmulBackend::Vpclmul`
            // passed `is_supported()` (AVX-512F, VPCLMULQDQ, PCLMULQDQ, SSE4.1).
            unsafe { bfly_vpclmul(lo, hi, lambda) }
        }
        fn ibfly(lo: &mut [u64], hi: &mut [u64], lambda: u64) {
            // SAFETY: as above.
            unsafe { ibfly_vpclmul(lo, hi, lambda) }
        }
        fn pointwise(a: &mut [u64], b: &[u64]) {
            // SAFETY: as above.
            unsafe { pointwise_vpclmul(a, b) }
        }
    }
}

/// One butterfly pass over two halves, in parallel chunks when long.
fn pass<K: Kernels>(lo: &mut [u64], hi: &mut [u64], lambda: u64, inverse: bool) {
    let run = |a: &mut [u64], c: &mut [u64]| {
        if inverse {
            K::ibfly(a, c, lambda)
        } else {
            K::bfly(a, c, lambda)
        }
    };
    if lo.len() >= 2 * CHUNK {
        lo.par_chunks_mut(CHUNK)
            .zip(hi.par_chunks_mut(CHUNK))
            .for_each(|(a, c)| run(a, c));
    } else {
        run(lo, hi);
    }
}

/// Forward transform of `d` (length `2^L`), block index `b` at level `L - 1`.
fn forward<K: Kernels>(d: &mut [u64], b: usize, lam: &[u64]) {
    let len = d.len();
    if len <= LEAF {
        let levels = len.trailing_zeros();
        for i in (0..levels).rev() {
            let half = 1usize << i;
            for (j, block) in d.chunks_exact_mut(2 * half).enumerate() {
                let (lo, hi) = block.split_at_mut(half);
                K::bfly(lo, hi, lam[(b << (levels - 1 - i)) + j]);
            }
        }
        return;
    }
    let (lo, hi) = d.split_at_mut(len / 2);
    pass::<K>(lo, hi, lam[b], false);
    if len >= PARALLEL {
        join(
            || forward::<K>(lo, 2 * b, lam),
            || forward::<K>(hi, 2 * b + 1, lam),
        );
    } else {
        forward::<K>(lo, 2 * b, lam);
        forward::<K>(hi, 2 * b + 1, lam);
    }
}

/// Inverse of [`forward`].
fn inverse<K: Kernels>(d: &mut [u64], b: usize, lam: &[u64]) {
    let len = d.len();
    if len <= LEAF {
        let levels = len.trailing_zeros();
        for i in 0..levels {
            let half = 1usize << i;
            for (j, block) in d.chunks_exact_mut(2 * half).enumerate() {
                let (lo, hi) = block.split_at_mut(half);
                K::ibfly(lo, hi, lam[(b << (levels - 1 - i)) + j]);
            }
        }
        return;
    }
    let (lo, hi) = d.split_at_mut(len / 2);
    if len >= PARALLEL {
        join(
            || inverse::<K>(lo, 2 * b, lam),
            || inverse::<K>(hi, 2 * b + 1, lam),
        );
    } else {
        inverse::<K>(lo, 2 * b, lam);
        inverse::<K>(hi, 2 * b + 1, lam);
    }
    pass::<K>(lo, hi, lam[b], true);
}

/// `dst ^= src`, in parallel chunks when long.
fn xor_slices(dst: &mut [u64], src: &[u64]) {
    if dst.len() >= 2 * CHUNK {
        dst.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(d, s)| d.iter_mut().zip(s).for_each(|(x, y)| *x ^= *y));
    } else {
        dst.iter_mut().zip(src).for_each(|(x, y)| *x ^= *y);
    }
}

/// Taylor expansion in `y = x^tau + x`, `tau = 2^b`, of a polynomial with `2^k` coefficients,
/// each a row of `row` field elements (`f.len() = row << k`): afterwards block `i` (of `tau`
/// coefficients) holds `g_i` with `f = sum_i g_i(x) y^i`, `deg g_i < tau`.
///
/// With `n = 2^k` and `m = n / (2 tau)` (a power of two), `y^m = x^(n/2) + x^m`; dividing by
/// it ("`f[e - n/2 + m] ^= f[e]`" from the top down) leaves the remainder in the lower half
/// and the quotient in the upper one, whose expansions are the low and high `y` powers. Every
/// coefficient moves by at least `n/4`, so each quarter is one slice XOR.
fn taylor(f: &mut [u64], k: u32, b: u32, row: usize, inverse: bool) {
    if k <= b {
        return;
    }
    let n = 1usize << k;
    let (q, m) = (n / 4, n >> (b + 1));
    let dist = n / 2 - m;
    let step = |f: &mut [u64], start: usize| {
        let (below, from) = f.split_at_mut(start * row);
        let t = (start - dist) * row;
        xor_slices(&mut below[t..t + q * row], &from[..q * row]);
    };
    if !inverse {
        step(f, 3 * q);
        step(f, 2 * q);
    }
    let (lo, hi) = f.split_at_mut((n / 2) * row);
    if lo.len() >= PARALLEL {
        join(
            || taylor(lo, k - 1, b, row, inverse),
            || taylor(hi, k - 1, b, row, inverse),
        );
    } else {
        taylor(lo, k - 1, b, row, inverse);
        taylor(hi, k - 1, b, row, inverse);
    }
    if inverse {
        step(f, 2 * q);
        step(f, 3 * q);
    }
}

/// Monomial basis to the novel basis `X_j` (`inverse`: back), in place, for a polynomial with
/// `2^k` coefficients that are rows of `row` elements.
///
/// With `b` the largest power of two below `k` and `y = s_b(x) = x^(2^b) + x`: expand
/// `f = sum_i g_i(x) y^i` ([`taylor`]), convert each `g_i` (`2^b` coefficients), then convert
/// the polynomials in `y` formed by each coefficient position across the `g_i` (rows of
/// `2^b` elements), because `X_(j + 2^b m)(x) = X_j(x) X_m(y)` (`s_(b+t) = s_t o s_b`).
fn novel(f: &mut [u64], k: u32, row: usize, inverse: bool) {
    if k <= 1 {
        return; // X_0 = 1, X_1 = x: already the monomial basis.
    }
    if k <= SMALL_LOG {
        // The same XORs, replayed from a recorded list (no recursion on tiny slices).
        let ops = small_ops(k, inverse);
        if row == 1 {
            for &(dst, src) in ops {
                if let (Some(&v), true) = (f.get(usize::from(src)), usize::from(dst) < f.len()) {
                    f[usize::from(dst)] ^= v;
                }
            }
            return;
        }
        for &(dst, src) in ops {
            let (d, s) = (usize::from(dst) * row, usize::from(src) * row);
            if d < s {
                let (lo, hi) = f.split_at_mut(s);
                lo[d..d + row]
                    .iter_mut()
                    .zip(&hi[..row])
                    .for_each(|(x, y)| *x ^= *y);
            } else {
                let (lo, hi) = f.split_at_mut(d);
                hi[..row]
                    .iter_mut()
                    .zip(&lo[s..s + row])
                    .for_each(|(x, y)| *x ^= *y);
            }
        }
        return;
    }
    let b = 1u32 << (31 - (k - 1).leading_zeros());
    let block = row << b;
    let blocks = |f: &mut [u64]| {
        if f.len() >= 2 * PARALLEL && f.len() > block {
            f.par_chunks_mut(block)
                .for_each(|g| novel(g, b, row, inverse));
        } else {
            f.chunks_mut(block).for_each(|g| novel(g, b, row, inverse));
        }
    };
    if inverse {
        novel(f, k - b, block, true);
        blocks(f);
        taylor(f, k, b, row, true);
    } else {
        taylor(f, k, b, row, false);
        blocks(f);
        novel(f, k - b, block, false);
    }
}

/// Conversions of at most `2^SMALL_LOG` coefficients replay a recorded XOR list.
const SMALL_LOG: u32 = 6;

/// The coefficient XORs `(dst, src)` that [`novel`] performs on `2^k` coefficients
/// (`k <= SMALL_LOG`), in order, recorded once by running it symbolically.
fn small_ops(k: u32, inverse: bool) -> &'static [(u8, u8)] {
    static OPS: OnceLock<Vec<Vec<(u8, u8)>>> = OnceLock::new();
    let all = OPS.get_or_init(|| {
        let mut v = Vec::new();
        for k in 0..=SMALL_LOG {
            for inverse in [false, true] {
                let mut ops = Vec::new();
                record_novel(&mut ops, 0, k, 1, inverse);
                v.push(ops);
            }
        }
        v
    });
    let idx = (k.min(SMALL_LOG) as usize) * 2 + usize::from(inverse);
    all.get(idx).map_or(&[], Vec::as_slice)
}

/// [`novel`] on coefficients `off + (0..2^k) * row`, emitting element XORs instead of doing
/// them.
fn record_novel(ops: &mut Vec<(u8, u8)>, off: usize, k: u32, row: usize, inverse: bool) {
    if k <= 1 {
        return;
    }
    let b = 1u32 << (31 - (k - 1).leading_zeros());
    let block = row << b;
    let blocks = |ops: &mut Vec<(u8, u8)>| {
        for g in 0..1usize << (k - b) {
            record_novel(ops, off + g * block, b, row, inverse);
        }
    };
    if inverse {
        record_novel(ops, off, k - b, block, true);
        blocks(ops);
        record_taylor(ops, off, k, b, row, true);
    } else {
        record_taylor(ops, off, k, b, row, false);
        blocks(ops);
        record_novel(ops, off, k - b, block, false);
    }
}

/// [`taylor`], emitting element XORs.
fn record_taylor(ops: &mut Vec<(u8, u8)>, off: usize, k: u32, b: u32, row: usize, inverse: bool) {
    if k <= b {
        return;
    }
    let n = 1usize << k;
    let (q, m) = (n / 4, n >> (b + 1));
    let dist = n / 2 - m;
    let step = |ops: &mut Vec<(u8, u8)>, start: usize| {
        for i in 0..q * row {
            let src = off + start * row + i;
            let dst = off + (start - dist) * row + i;
            ops.push((dst as u8, src as u8));
        }
    };
    if !inverse {
        step(ops, 3 * q);
        step(ops, 2 * q);
    }
    record_taylor(ops, off, k - 1, b, row, inverse);
    record_taylor(ops, off + (n / 2) * row, k - 1, b, row, inverse);
    if inverse {
        step(ops, 2 * q);
        step(ops, 3 * q);
    }
}

/// Monomial basis to the novel basis `X_j`, in place (length a power of two).
fn to_novel(f: &mut [u64]) {
    novel(f, f.len().trailing_zeros(), 1, false);
}

/// Inverse of [`to_novel`].
fn from_novel(f: &mut [u64]) {
    novel(f, f.len().trailing_zeros(), 1, true);
}

/// 32-bit chunks of the first `bits` bits of `words`, zero-padded to `len` elements.
fn chunks32(words: &[u64], bits: usize, len: usize) -> Vec<u64> {
    let count = bits.div_ceil(32);
    let mut out = vec![0u64; len];
    for (e, slot) in out.iter_mut().enumerate().take(count) {
        let w = words.get(e / 2).copied().unwrap_or(0);
        let mut v = (w >> (32 * (e % 2))) & 0xffff_ffff;
        let rest = bits - 32 * e;
        if rest < 32 {
            v &= (1u64 << rest) - 1;
        }
        *slot = v;
    }
    out
}

/// The binary product of `a` (`a_bits` bits) and `b` (`b_bits` bits) as words
/// (`(a_bits + b_bits).div_ceil(64) + 1` of them), with a supported `backend`.
pub(crate) fn multiply(
    backend: ClmulBackend,
    a: &[u64],
    a_bits: usize,
    b: &[u64],
    b_bits: usize,
) -> Zeroizing<Vec<u64>> {
    match backend {
        #[cfg(target_arch = "x86_64")]
        ClmulBackend::Vpclmul => multiply_with::<x86::Vpclmul>(a, a_bits, b, b_bits),
        #[cfg(target_arch = "x86_64")]
        ClmulBackend::Pclmul => multiply_with::<x86::Pclmul>(a, a_bits, b, b_bits),
        _ => multiply_with::<Portable>(a, a_bits, b, b_bits),
    }
}

/// Transform length (log2) for a product of `a_bits` and `b_bits` bits.
pub(crate) fn log_len(a_bits: usize, b_bits: usize) -> u32 {
    let coeffs = a_bits.div_ceil(32) + b_bits.div_ceil(32);
    coeffs.next_power_of_two().trailing_zeros().max(1)
}

fn multiply_with<K: Kernels>(
    a: &[u64],
    a_bits: usize,
    b: &[u64],
    b_bits: usize,
) -> Zeroizing<Vec<u64>> {
    let k = log_len(a_bits, b_bits);
    let len = 1usize << k;
    let lam = lambda_table(k);
    let mut fa = Zeroizing::new(chunks32(a, a_bits, len));
    let mut fb = Zeroizing::new(chunks32(b, b_bits, len));
    join(
        || {
            to_novel(&mut fa);
            forward::<K>(&mut fa, 0, &lam);
        },
        || {
            to_novel(&mut fb);
            forward::<K>(&mut fb, 0, &lam);
        },
    );
    if len >= 2 * CHUNK {
        fb.par_chunks_mut(CHUNK)
            .zip(fa.par_chunks(CHUNK))
            .for_each(|(x, y)| K::pointwise(x, y));
    } else {
        K::pointwise(&mut fb, &fa);
    }
    drop(fa);
    inverse::<K>(&mut fb, 0, &lam);
    from_novel(&mut fb);
    let mut out = Zeroizing::new(vec![0u64; (a_bits + b_bits).div_ceil(64) + 1]);
    for (e, &c) in fb.iter().enumerate() {
        let w = e / 2;
        if w >= out.len() {
            break;
        }
        if e % 2 == 0 {
            out[w] ^= c;
        } else {
            out[w] ^= c << 32;
            if let Some(next) = out.get_mut(w + 1) {
                *next ^= c >> 32;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SeededRandom;

    fn mul_bitwise(a: &[u64], a_bits: usize, b: &[u64], b_bits: usize) -> Vec<u64> {
        let bit = |w: &[u64], i: usize| (w[i / 64] >> (i % 64)) & 1;
        let mut out = vec![0u64; (a_bits + b_bits).div_ceil(64) + 1];
        for i in 0..a_bits {
            if bit(a, i) == 1 {
                for j in 0..b_bits {
                    out[(i + j) / 64] ^= bit(b, j) << ((i + j) % 64);
                }
            }
        }
        out
    }

    fn supported() -> Vec<ClmulBackend> {
        ClmulBackend::ALL
            .into_iter()
            .filter(|b| b.is_supported())
            .collect()
    }

    #[test]
    fn field_is_consistent() {
        // z * z^63 = z^64 = z^4 + z^3 + z + 1.
        assert_eq!(gf_mul_portable(2, 1 << 63), 0b1_1011);
        // Frobenius: z^(2^64) = z, and squaring is additive.
        let mut z = 2u64;
        for _ in 0..64 {
            z = gf_mul_portable(z, z);
        }
        assert_eq!(z, 2);
        let mut rng = SeededRandom::from_u64(21);
        for _ in 0..200 {
            let (a, b, c) = (rng.u64(), rng.u64(), rng.u64());
            assert_eq!(
                gf_mul_portable(a, b ^ c),
                gf_mul_portable(a, b) ^ gf_mul_portable(a, c)
            );
            assert_eq!(
                gf_mul_portable(gf_mul_portable(a, b), c),
                gf_mul_portable(a, gf_mul_portable(b, c))
            );
        }
    }

    #[test]
    fn cantor_basis_satisfies_its_recurrence() {
        let v = cantor_basis();
        assert_eq!(v[0], 1);
        for i in 1..v.len() {
            assert_eq!(gf_mul_portable(v[i], v[i]) ^ v[i], v[i - 1], "i={i}");
        }
        // s_i(v_j) = v_(j - i): s_i is x -> x^2 + x applied i times.
        let mut w = v[9];
        for i in 0..9 {
            assert_eq!(w, v[9 - i]);
            w = gf_mul_portable(w, w) ^ w;
        }
    }

    #[test]
    fn transform_evaluates_the_novel_basis_polynomial() {
        // 8 points: D(x) = sum d_j X_j(x) evaluated directly at omega_l.
        let v = cantor_basis();
        let mut rng = SeededRandom::from_u64(22);
        let d: Vec<u64> = (0..8).map(|_| rng.u64()).collect();
        let s = |i: u32, x: u64| (0..i).fold(x, |y, _| gf_mul_portable(y, y) ^ y);
        let mut got = d.clone();
        forward::<Portable>(&mut got, 0, &lambda_table(3));
        for (l, &g) in got.iter().enumerate() {
            let w = (0..3).filter(|t| l >> t & 1 == 1).fold(0, |a, t| a ^ v[t]);
            let expect = d.iter().enumerate().fold(0u64, |acc, (j, &dj)| {
                let xj = (0..3)
                    .filter(|i| j >> i & 1 == 1)
                    .fold(1u64, |p, i| gf_mul_portable(p, s(i, w)));
                acc ^ gf_mul_portable(dj, xj)
            });
            assert_eq!(g, expect, "l={l}");
        }
        let mut back = got.clone();
        inverse::<Portable>(&mut back, 0, &lambda_table(3));
        assert_eq!(back, d);
    }

    #[test]
    fn basis_conversion_round_trips_and_matches_x2_plus_x() {
        // x^2 = X_2 + X_1 (s_1 = x^2 + x, X_1 = x): coefficients [0, 1, 1, 0].
        let mut f = vec![0, 0, 7, 0];
        to_novel(&mut f);
        assert_eq!(f, vec![0, 7, 7, 0]);
        let mut rng = SeededRandom::from_u64(23);
        for log in [1, 3, 6, 11, 16] {
            let orig: Vec<u64> = (0..1usize << log).map(|_| rng.u64()).collect();
            let mut f = orig.clone();
            to_novel(&mut f);
            from_novel(&mut f);
            assert_eq!(f, orig, "log={log}");
        }
    }

    #[test]
    fn products_match_schoolbook_for_every_backend() {
        let mut rng = SeededRandom::from_u64(24);
        for &(ab, bb) in &[
            (1usize, 1usize),
            (31, 33),
            (64, 64),
            (100, 7),
            (1000, 999),
            (5000, 3001),
        ] {
            let a: Vec<u64> = (0..ab.div_ceil(64)).map(|_| rng.u64()).collect();
            let b: Vec<u64> = (0..bb.div_ceil(64)).map(|_| rng.u64()).collect();
            let expect = mul_bitwise(&a, ab, &b, bb);
            for be in supported() {
                let got = multiply(be, &a, ab, &b, bb);
                assert_eq!(got.as_slice(), expect.as_slice(), "{be:?} {ab}x{bb}");
            }
        }
    }

    #[test]
    fn large_products_agree_across_backends() {
        // 2^18-element transforms: parallel recursion, chunked passes, vector kernels.
        let mut rng = SeededRandom::from_u64(25);
        let (ab, bb) = (4_000_000, 3_000_000);
        let a: Vec<u64> = (0..ab / 64 + 1).map(|_| rng.u64()).collect();
        let b: Vec<u64> = (0..bb / 64 + 1).map(|_| rng.u64()).collect();
        let expect = multiply(ClmulBackend::Portable, &a, ab, &b, bb);
        for be in supported() {
            assert_eq!(multiply(be, &a, ab, &b, bb), expect, "{be:?}");
        }
    }
}
