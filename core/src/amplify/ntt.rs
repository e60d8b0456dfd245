//! Exact cyclic convolution of 0/1 sequences by a number-theoretic transform (NTT) modulo the
//! prime `P = 7 * 2^26 + 1`, the engine behind [`ToeplitzMethod::Ntt`](super::ToeplitzMethod).
//!
//! **Why it is exact.** A coefficient of the integer convolution of two 0/1 sequences counts
//! overlapping ones, so it lies in `0..=len`; the Toeplitz driver sums at most `n` such terms
//! per output bit and keeps `n < P` (see [`MAX_SUM`]), so the residue mod `P` *is* the integer
//! and its low bit is the GF(2) coefficient. No rounding is involved anywhere.
//!
//! **Layout (four-step NTT).** A transform of length `N = R * C` (both powers of two) sees the
//! sequence as an `R x C` row-major matrix (`t = r * C + c`) and stores it column-panel-major:
//! panel `q` holds columns `16q..16q+16`, one `[u32; 16]` vector per row. Step 1 runs length-`R`
//! transforms down the columns, 16 columns at once in the 16 lanes of a vector (panels are
//! contiguous, so rayon splits them safely); step 2 multiplies element `(k1, c)` by
//! `w_N^(c * k1)`; step 3 transposes 16 rows at a time into a scratch buffer and runs length-`C`
//! transforms across them, again 16 at once. Forward transforms are decimation-in-frequency
//! (natural order in, bit-reversed out) and inverse ones decimation-in-time (bit-reversed in,
//! natural out), so the pointwise product never needs a permutation.
//!
//! **Arithmetic.** Montgomery multiplication with `2^32`, values kept lazily in `[0, 2P)`
//! (`4P < 2^32`). The butterflies are plain loops over 16 lanes, compiled once per instruction
//! set (AVX-512, AVX2, portable) and chosen at run time; the tests run every supported backend
//! against the portable one.

use rayon::prelude::*;
use zeroize::Zeroizing;

/// The prime modulus, `7 * 2^26 + 1`: below `2^30`, so lazy values in `[0, 4P)` fit in `u32`.
pub(crate) const P: u32 = 469_762_049;
/// Largest supported transform length, `2^26` (the 2-adic part of `P - 1`).
pub(crate) const MAX_LOG_LEN: u32 = 26;
/// Smallest transform length used, `2^12` (so `R >= 64` and `C >= 64`).
pub(crate) const MIN_LOG_LEN: u32 = 12;
/// Upper bound on any integer this engine must recover exactly: values must stay below `P`.
pub(crate) const MAX_SUM: u64 = P as u64 - 1;

const P2: u32 = 2 * P;
/// `-P^-1 mod 2^32`.
const P_NEG_INV: u32 = neg_inv(P);
/// `2^32 mod P`: one in Montgomery form.
const MONT_ONE: u32 = ((1u64 << 32) % P as u64) as u32;

const fn neg_inv(p: u32) -> u32 {
    // Newton iteration for p^-1 mod 2^32 (p odd): each step doubles the correct low bits.
    let mut x: u32 = 1;
    let mut i = 0;
    while i < 5 {
        x = x.wrapping_mul(2u32.wrapping_sub(p.wrapping_mul(x)));
        i += 1;
    }
    x.wrapping_neg()
}

fn pow_mod(mut b: u64, mut e: u64) -> u64 {
    let p = u64::from(P);
    let mut r = 1u64;
    b %= p;
    while e > 0 {
        if e & 1 == 1 {
            r = r * b % p;
        }
        b = b * b % p;
        e >>= 1;
    }
    r
}

/// `x * 2^32 mod P` for a reduced `x`.
fn to_mont(x: u64) -> u32 {
    ((x % u64::from(P)) * u64::from(MONT_ONE) % u64::from(P)) as u32
}

/// A generator of the multiplicative group mod `P` (`P - 1 = 2^26 * 7`).
fn generator() -> u64 {
    let p1 = u64::from(P) - 1;
    (2u64..)
        .find(|&g| pow_mod(g, p1 / 2) != 1 && pow_mod(g, p1 / 7) != 1)
        .unwrap_or(3)
}

/// Sixteen lanes: one row of a 16-column panel.
pub(crate) type V = [u32; 16];

/// `a * b * 2^-32 mod P`, result in `[0, 2P)`; needs `a * b < P * 2^32`.
#[inline(always)]
fn mont(a: u32, b: u32) -> u32 {
    let t = u64::from(a) * u64::from(b);
    let m = (t as u32).wrapping_mul(P_NEG_INV);
    ((t + u64::from(m) * u64::from(P)) >> 32) as u32
}

/// `[0, 4P) -> [0, 2P)`.
#[inline(always)]
fn red2(x: u32) -> u32 {
    x.min(x.wrapping_sub(P2))
}

/// Sixteen-lane arithmetic mod `P`, one implementation per instruction set.
mod lanes {
    use super::{P, P_NEG_INV, P2, V, mont, red2};

    /// Lane-wise operations on a [`V`] held in registers.
    ///
    /// # Safety
    ///
    /// Every method may use the instructions of its implementation: call them only when the
    /// CPU supports them (the dispatch in `NttBackend` checks this once per plan).
    pub(super) trait Lanes {
        type R: Copy;
        unsafe fn load(v: &V) -> Self::R;
        unsafe fn store(v: &mut V, r: Self::R);
        unsafe fn splat(x: u32) -> Self::R;
        /// `red2(a + b)`, inputs in `[0, 2P)`.
        unsafe fn add_red2(a: Self::R, b: Self::R) -> Self::R;
        /// `a + 2P - b`, inputs in `[0, 2P)`, output in `(0, 4P)`.
        unsafe fn sub_2p(a: Self::R, b: Self::R) -> Self::R;
        /// Montgomery product, output in `[0, 2P)`.
        unsafe fn mont(a: Self::R, b: Self::R) -> Self::R;
    }

    /// Plain Rust.
    pub(super) struct Scalar;

    impl Lanes for Scalar {
        type R = V;
        #[inline(always)]
        unsafe fn load(v: &V) -> V {
            *v
        }
        #[inline(always)]
        unsafe fn store(v: &mut V, r: V) {
            *v = r;
        }
        #[inline(always)]
        unsafe fn splat(x: u32) -> V {
            [x; 16]
        }
        #[inline(always)]
        unsafe fn add_red2(a: V, b: V) -> V {
            std::array::from_fn(|i| red2(a[i] + b[i]))
        }
        #[inline(always)]
        unsafe fn sub_2p(a: V, b: V) -> V {
            std::array::from_fn(|i| a[i] + P2 - b[i])
        }
        #[inline(always)]
        unsafe fn mont(a: V, b: V) -> V {
            std::array::from_fn(|i| mont(a[i], b[i]))
        }
    }

    #[cfg(target_arch = "x86_64")]
    pub(super) use x86::{X256, X512};

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use super::{Lanes, P, P_NEG_INV, P2, V};
        use std::arch::x86_64::*;

        /// AVX-512F: one `__m512i`.
        pub(in super::super) struct X512;

        impl Lanes for X512 {
            type R = __m512i;
            #[inline(always)]
            unsafe fn load(v: &V) -> __m512i {
                // SAFETY: `v` is 64 readable bytes; unaligned load; AVX-512F per the trait.
                unsafe { _mm512_loadu_si512(v.as_ptr().cast()) }
            }
            #[inline(always)]
            unsafe fn store(v: &mut V, r: __m512i) {
                // SAFETY: `v` is 64 writable bytes; unaligned store; AVX-512F per the trait.
                unsafe { _mm512_storeu_si512(v.as_mut_ptr().cast(), r) }
            }
            #[inline(always)]
            unsafe fn splat(x: u32) -> __m512i {
                // SAFETY: AVX-512F per the trait contract.
                unsafe { _mm512_set1_epi32(x as i32) }
            }
            #[inline(always)]
            unsafe fn add_red2(a: __m512i, b: __m512i) -> __m512i {
                // SAFETY: AVX-512F per the trait contract.
                unsafe {
                    let s = _mm512_add_epi32(a, b);
                    _mm512_min_epu32(s, _mm512_sub_epi32(s, _mm512_set1_epi32(P2 as i32)))
                }
            }
            #[inline(always)]
            unsafe fn sub_2p(a: __m512i, b: __m512i) -> __m512i {
                // SAFETY: AVX-512F per the trait contract.
                unsafe { _mm512_sub_epi32(_mm512_add_epi32(a, _mm512_set1_epi32(P2 as i32)), b) }
            }
            #[inline(always)]
            unsafe fn mont(a: __m512i, b: __m512i) -> __m512i {
                // SAFETY: AVX-512F per the trait contract.
                unsafe {
                    let p = _mm512_set1_epi64(i64::from(P));
                    let pn = _mm512_set1_epi64(i64::from(P_NEG_INV));
                    // Even lanes in the low halves of 64-bit lanes, odd lanes shifted down.
                    let te = _mm512_mul_epu32(a, b);
                    let to = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), _mm512_srli_epi64(b, 32));
                    let me = _mm512_mul_epu32(te, pn);
                    let mo = _mm512_mul_epu32(to, pn);
                    let ue = _mm512_add_epi64(te, _mm512_mul_epu32(me, p));
                    let uo = _mm512_add_epi64(to, _mm512_mul_epu32(mo, p));
                    // Result = high 32 bits of each u: even ones shifted down, odd ones in place.
                    _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(ue, 32), uo)
                }
            }
        }

        /// AVX2: two `__m256i`.
        pub(in super::super) struct X256;

        #[inline(always)]
        unsafe fn mont256(a: __m256i, b: __m256i) -> __m256i {
            // SAFETY: AVX2 per the trait contract of the caller.
            unsafe {
                let p = _mm256_set1_epi64x(i64::from(P));
                let pn = _mm256_set1_epi64x(i64::from(P_NEG_INV));
                let te = _mm256_mul_epu32(a, b);
                let to = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), _mm256_srli_epi64(b, 32));
                let me = _mm256_mul_epu32(te, pn);
                let mo = _mm256_mul_epu32(to, pn);
                let ue = _mm256_add_epi64(te, _mm256_mul_epu32(me, p));
                let uo = _mm256_add_epi64(to, _mm256_mul_epu32(mo, p));
                _mm256_blend_epi32::<0b1010_1010>(_mm256_srli_epi64(ue, 32), uo)
            }
        }

        impl Lanes for X256 {
            type R = [__m256i; 2];
            #[inline(always)]
            unsafe fn load(v: &V) -> [__m256i; 2] {
                // SAFETY: `v` is 64 readable bytes; unaligned loads; AVX per the trait.
                unsafe {
                    let ptr: *const __m256i = v.as_ptr().cast();
                    [_mm256_loadu_si256(ptr), _mm256_loadu_si256(ptr.add(1))]
                }
            }
            #[inline(always)]
            unsafe fn store(v: &mut V, r: [__m256i; 2]) {
                // SAFETY: `v` is 64 writable bytes; unaligned stores; AVX per the trait.
                unsafe {
                    let ptr: *mut __m256i = v.as_mut_ptr().cast();
                    _mm256_storeu_si256(ptr, r[0]);
                    _mm256_storeu_si256(ptr.add(1), r[1]);
                }
            }
            #[inline(always)]
            unsafe fn splat(x: u32) -> [__m256i; 2] {
                // SAFETY: AVX per the trait contract.
                unsafe { [_mm256_set1_epi32(x as i32); 2] }
            }
            #[inline(always)]
            unsafe fn add_red2(a: [__m256i; 2], b: [__m256i; 2]) -> [__m256i; 2] {
                // SAFETY: AVX2 per the trait contract.
                unsafe {
                    let p2 = _mm256_set1_epi32(P2 as i32);
                    let f = |x: __m256i, y: __m256i| {
                        let s = _mm256_add_epi32(x, y);
                        _mm256_min_epu32(s, _mm256_sub_epi32(s, p2))
                    };
                    [f(a[0], b[0]), f(a[1], b[1])]
                }
            }
            #[inline(always)]
            unsafe fn sub_2p(a: [__m256i; 2], b: [__m256i; 2]) -> [__m256i; 2] {
                // SAFETY: AVX2 per the trait contract.
                unsafe {
                    let p2 = _mm256_set1_epi32(P2 as i32);
                    [
                        _mm256_sub_epi32(_mm256_add_epi32(a[0], p2), b[0]),
                        _mm256_sub_epi32(_mm256_add_epi32(a[1], p2), b[1]),
                    ]
                }
            }
            #[inline(always)]
            unsafe fn mont(a: [__m256i; 2], b: [__m256i; 2]) -> [__m256i; 2] {
                // SAFETY: AVX2 per the trait contract.
                unsafe { [mont256(a[0], b[0]), mont256(a[1], b[1])] }
            }
        }
    }

    #[allow(dead_code)]
    const _: () = assert!(4 * (P as u64) < (1 << 32) && P_NEG_INV != 0);
}

/// The algorithms, generic over the lane arithmetic; `#[inline(always)]` so each backend
/// compiles its own copy under its target features.
mod generic {
    use super::lanes::Lanes;
    use super::{MONT_ONE, V};

    /// Radix-2 decimation-in-frequency transform across lanes; `tw[h + j]` is
    /// `w_(2h)^j` in Montgomery form. Inputs and outputs in `[0, 2P)`.
    ///
    /// # Safety
    ///
    /// The CPU supports `L`'s instructions.
    #[inline(always)]
    pub(super) unsafe fn dif<L: Lanes>(x: &mut [V], tw: &[u32]) {
        let mut h = x.len() / 2;
        while h >= 1 {
            let tws = &tw[h..2 * h];
            for blk in x.chunks_exact_mut(2 * h) {
                let (lo, hi) = blk.split_at_mut(h);
                for ((a, b), &w) in lo.iter_mut().zip(hi.iter_mut()).zip(tws) {
                    // SAFETY: the caller guarantees `L`'s instructions.
                    unsafe {
                        let (u, v) = (L::load(a), L::load(b));
                        L::store(a, L::add_red2(u, v));
                        L::store(b, L::mont(L::sub_2p(u, v), L::splat(w)));
                    }
                }
            }
            h /= 2;
        }
    }

    /// Radix-2 decimation-in-time transform across lanes (bit-reversed in, natural out) with
    /// the inverse table. Inputs and outputs in `[0, 2P)`.
    ///
    /// # Safety
    ///
    /// The CPU supports `L`'s instructions.
    #[inline(always)]
    pub(super) unsafe fn dit<L: Lanes>(x: &mut [V], tw: &[u32]) {
        let n = x.len();
        let mut h = 1;
        while h < n {
            let tws = &tw[h..2 * h];
            for blk in x.chunks_exact_mut(2 * h) {
                let (lo, hi) = blk.split_at_mut(h);
                for ((a, b), &w) in lo.iter_mut().zip(hi.iter_mut()).zip(tws) {
                    // SAFETY: the caller guarantees `L`'s instructions.
                    unsafe {
                        let u = L::load(a);
                        let t = L::mont(L::load(b), L::splat(w));
                        L::store(a, L::add_red2(u, t));
                        // u + 2P - t < 4P; one more add_red2 with zero brings it below 2P.
                        L::store(b, L::add_red2(L::sub_2p(u, t), L::splat(0)));
                    }
                }
            }
            h *= 2;
        }
    }

    /// Multiplies vector `c` of `x` lane-wise by `step^c` (`step` lane-wise roots in
    /// Montgomery form).
    ///
    /// # Safety
    ///
    /// The CPU supports `L`'s instructions.
    #[inline(always)]
    pub(super) unsafe fn twiddle<L: Lanes>(x: &mut [V], step: V) {
        // SAFETY: the caller guarantees `L`'s instructions.
        unsafe {
            let mut w = L::splat(MONT_ONE);
            let s = L::load(&step);
            for v in x.iter_mut() {
                L::store(v, L::mont(L::load(v), w));
                w = L::mont(w, s);
            }
        }
    }

    /// `acc += x * s * 2^-32`, all in `[0, 2P)`.
    ///
    /// # Safety
    ///
    /// The CPU supports `L`'s instructions.
    #[inline(always)]
    pub(super) unsafe fn mul_acc<L: Lanes>(acc: &mut [V], x: &[V], s: &[V]) {
        for ((a, u), v) in acc.iter_mut().zip(x).zip(s) {
            // SAFETY: the caller guarantees `L`'s instructions.
            unsafe {
                let prod = L::mont(L::load(u), L::load(v));
                L::store(a, L::add_red2(L::load(a), prod));
            }
        }
    }
}

macro_rules! backend_module {
    ($name:ident, $lanes:ident, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        mod $name {
            use super::lanes::$lanes;
            use super::{V, generic};
            #[target_feature(enable = $features)]
            pub(super) fn dif(x: &mut [V], tw: &[u32]) {
                // SAFETY: this function only runs with the features enabled above.
                unsafe { generic::dif::<$lanes>(x, tw) }
            }
            #[target_feature(enable = $features)]
            pub(super) fn dit(x: &mut [V], tw: &[u32]) {
                // SAFETY: as above.
                unsafe { generic::dit::<$lanes>(x, tw) }
            }
            #[target_feature(enable = $features)]
            pub(super) fn twiddle(x: &mut [V], step: V) {
                // SAFETY: as above.
                unsafe { generic::twiddle::<$lanes>(x, step) }
            }
            #[target_feature(enable = $features)]
            pub(super) fn mul_acc(acc: &mut [V], x: &[V], s: &[V]) {
                // SAFETY: as above.
                unsafe { generic::mul_acc::<$lanes>(acc, x, s) }
            }
        }
    };
}

backend_module!(avx2, X256, "avx2");
backend_module!(avx512, X512, "avx512f,avx512bw,avx512vl,avx512dq");

/// The portable backend: scalar lane arithmetic.
mod portable {
    use super::lanes::Scalar;
    use super::{V, generic};
    pub(super) fn dif(x: &mut [V], tw: &[u32]) {
        // SAFETY: `Scalar` uses no special instructions.
        unsafe { generic::dif::<Scalar>(x, tw) }
    }
    pub(super) fn dit(x: &mut [V], tw: &[u32]) {
        // SAFETY: as above.
        unsafe { generic::dit::<Scalar>(x, tw) }
    }
    pub(super) fn twiddle(x: &mut [V], step: V) {
        // SAFETY: as above.
        unsafe { generic::twiddle::<Scalar>(x, step) }
    }
    pub(super) fn mul_acc(acc: &mut [V], x: &[V], s: &[V]) {
        // SAFETY: as above.
        unsafe { generic::mul_acc::<Scalar>(acc, x, s) }
    }
}

/// Instruction set of the NTT kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NttBackend {
    /// Plain Rust for the build target's baseline; always available.
    Portable,
    /// x86-64 AVX2.
    Avx2,
    /// x86-64 AVX-512 (F, BW, VL, DQ).
    Avx512,
}

impl NttBackend {
    /// All backends, narrowest first.
    pub const ALL: [NttBackend; 3] = [NttBackend::Portable, NttBackend::Avx2, NttBackend::Avx512];

    /// Whether this CPU can run the backend.
    pub fn is_supported(self) -> bool {
        match self {
            NttBackend::Portable => true,
            #[cfg(target_arch = "x86_64")]
            NttBackend::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            NttBackend::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512dq")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The widest backend this CPU supports.
    pub fn best() -> Self {
        Self::ALL
            .iter()
            .rev()
            .copied()
            .find(|b| b.is_supported())
            .unwrap_or(NttBackend::Portable)
    }

    /// Short lowercase name, for reports and benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            NttBackend::Portable => "portable",
            NttBackend::Avx2 => "avx2",
            NttBackend::Avx512 => "avx512",
        }
    }

    fn dif(self, x: &mut [V], tw: &[u32]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a `Plan` only holds a backend whose `is_supported()` returned true.
            NttBackend::Avx512 => unsafe { avx512::dif(x, tw) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above, AVX2 was detected at run time.
            NttBackend::Avx2 => unsafe { avx2::dif(x, tw) },
            _ => portable::dif(x, tw),
        }
    }

    fn dit(self, x: &mut [V], tw: &[u32]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a `Plan` only holds a backend whose `is_supported()` returned true.
            NttBackend::Avx512 => unsafe { avx512::dit(x, tw) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above, AVX2 was detected at run time.
            NttBackend::Avx2 => unsafe { avx2::dit(x, tw) },
            _ => portable::dit(x, tw),
        }
    }

    fn twiddle(self, x: &mut [V], step: V) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a `Plan` only holds a backend whose `is_supported()` returned true.
            NttBackend::Avx512 => unsafe { avx512::twiddle(x, step) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above, AVX2 was detected at run time.
            NttBackend::Avx2 => unsafe { avx2::twiddle(x, step) },
            _ => portable::twiddle(x, step),
        }
    }

    fn mul_acc(self, acc: &mut [V], x: &[V], s: &[V]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a `Plan` only holds a backend whose `is_supported()` returned true.
            NttBackend::Avx512 => unsafe { avx512::mul_acc(acc, x, s) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above, AVX2 was detected at run time.
            NttBackend::Avx2 => unsafe { avx2::mul_acc(acc, x, s) },
            _ => portable::mul_acc(acc, x, s),
        }
    }
}

/// Twiddle table for a lane transform of length `len` with primitive `len`-th root `root`:
/// entry `h + j` is `root^((len / 2h) * j)` in Montgomery form, for `h = 1, 2, .., len/2`.
fn lane_table(root: u64, len: usize) -> Vec<u32> {
    let mut tw = vec![0u32; len.max(2)];
    let mut h = 1;
    while h < len {
        let wh = pow_mod(root, (len / (2 * h)) as u64);
        let mut w = 1u64;
        for j in 0..h {
            tw[h + j] = to_mont(w);
            w = w * wh % u64::from(P);
        }
        h *= 2;
    }
    tw
}

fn bit_reverse(x: usize, bits: u32) -> usize {
    if bits == 0 {
        0
    } else {
        x.reverse_bits() >> (usize::BITS - bits)
    }
}

/// A transform of one length: tables and shape. Buffers are `Vec<V>` of `len / 16` vectors.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    log_len: u32,
    rows: usize,
    cols: usize,
    tw_rows_fwd: Vec<u32>,
    tw_rows_inv: Vec<u32>,
    tw_cols_fwd: Vec<u32>,
    tw_cols_inv: Vec<u32>,
    /// `w_N^k1` and `w_N^-k1` in Montgomery form, indexed by the row's *frequency* `k1`.
    row_step_fwd: Vec<u32>,
    row_step_inv: Vec<u32>,
    /// `N^-1 * 2^64 mod P`: undoes the transform scale and the Montgomery factor of the
    /// pointwise product in one multiplication.
    final_scale: u32,
    backend: NttBackend,
}

impl Plan {
    /// A plan for length `2^log_len` (`MIN_LOG_LEN..=MAX_LOG_LEN`) on `backend` (which must
    /// be supported; otherwise the portable kernels are used).
    pub(crate) fn new(log_len: u32, backend: NttBackend) -> Self {
        let log_len = log_len.clamp(MIN_LOG_LEN, MAX_LOG_LEN);
        let backend = if backend.is_supported() {
            backend
        } else {
            NttBackend::Portable
        };
        let log_rows = log_len.div_ceil(2);
        let log_cols = log_len - log_rows;
        let (rows, cols) = (1usize << log_rows, 1usize << log_cols);
        let n = 1u64 << log_len;
        let p1 = u64::from(P) - 1;
        let w = pow_mod(generator(), p1 / n);
        let w_inv = pow_mod(w, p1 - 1);
        let w_rows = pow_mod(w, cols as u64);
        let w_cols = pow_mod(w, rows as u64);
        let mut row_step_fwd = Vec::with_capacity(rows);
        let mut row_step_inv = Vec::with_capacity(rows);
        let (mut a, mut b) = (1u64, 1u64);
        for _ in 0..rows {
            row_step_fwd.push(to_mont(a));
            row_step_inv.push(to_mont(b));
            a = a * w % u64::from(P);
            b = b * w_inv % u64::from(P);
        }
        let n_inv = pow_mod(n, p1 - 1);
        let r2 = u64::from(MONT_ONE) * u64::from(MONT_ONE) % u64::from(P);
        let final_scale = (n_inv * r2 % u64::from(P)) as u32;
        Self {
            log_len,
            rows,
            cols,
            tw_rows_fwd: lane_table(w_rows, rows),
            tw_rows_inv: lane_table(pow_mod(w_rows, p1 - 1), rows),
            tw_cols_fwd: lane_table(w_cols, cols),
            tw_cols_inv: lane_table(pow_mod(w_cols, p1 - 1), cols),
            row_step_fwd,
            row_step_inv,
            final_scale,
            backend,
        }
    }

    /// Transform length.
    pub(crate) fn len(&self) -> usize {
        1 << self.log_len
    }

    /// A zeroed buffer for this plan, wiped on drop.
    pub(crate) fn alloc(&self) -> Zeroizing<Vec<V>> {
        Zeroizing::new(vec![[0u32; 16]; self.len() / 16])
    }

    /// Fills `buf` with the bits `start..start + count` of `words` (natural order; a bit
    /// outside `0..words.len() * 64` reads as zero), zero beyond `count`.
    pub(crate) fn load_bits(&self, buf: &mut [V], words: &[u64], start: i64, count: usize) {
        let (rows, cols) = (self.rows, self.cols);
        buf.par_chunks_mut(rows).enumerate().for_each(|(q, panel)| {
            for (r, v) in panel.iter_mut().enumerate() {
                let t = r * cols + 16 * q;
                let bits = if t >= count {
                    0
                } else {
                    let avail = count - t;
                    let raw = read64(words, start + t as i64);
                    if avail >= 16 {
                        raw & 0xffff
                    } else {
                        raw & ((1u64 << avail) - 1)
                    }
                };
                for (l, lane) in v.iter_mut().enumerate() {
                    *lane = ((bits >> l) & 1) as u32;
                }
            }
        });
    }

    /// Forward transform in place (natural order in, scrambled order out).
    pub(crate) fn forward(&self, buf: &mut [V]) {
        let be = self.backend;
        buf.par_chunks_mut(self.rows)
            .for_each(|panel| be.dif(panel, &self.tw_rows_fwd));
        self.row_pass(buf, true);
    }

    /// Inverse transform in place, times `len` (scrambled in, natural out).
    pub(crate) fn inverse(&self, buf: &mut [V]) {
        self.row_pass(buf, false);
        let be = self.backend;
        buf.par_chunks_mut(self.rows)
            .for_each(|panel| be.dit(panel, &self.tw_rows_inv));
    }

    /// Middle twiddles and the transforms along the rows, 16 rows at a time.
    fn row_pass(&self, buf: &mut [V], forward: bool) {
        let (rows, cols) = (self.rows, self.cols);
        let log_rows = rows.trailing_zeros();
        let groups_n = rows / 16;
        let mut groups: Vec<Vec<&mut [V]>> = (0..groups_n)
            .map(|_| Vec::with_capacity(cols / 16))
            .collect();
        for panel in buf.chunks_mut(rows) {
            for (g, blk) in panel.chunks_mut(16).enumerate() {
                groups[g].push(blk);
            }
        }
        let be = self.backend;
        groups.par_iter_mut().enumerate().for_each_init(
            || Zeroizing::new(vec![[0u32; 16]; cols]),
            |scratch, (g, blocks)| {
                // Transpose in: scratch[16q + l][j] = row (16g + j), column (16q + l).
                for (q, blk) in blocks.iter().enumerate() {
                    for (j, v) in blk.iter().enumerate() {
                        for (l, &x) in v.iter().enumerate() {
                            scratch[16 * q + l][j] = x;
                        }
                    }
                }
                let mut step = [0u32; 16];
                for (j, s) in step.iter_mut().enumerate() {
                    let k1 = bit_reverse(16 * g + j, log_rows);
                    *s = if forward {
                        self.row_step_fwd[k1]
                    } else {
                        self.row_step_inv[k1]
                    };
                }
                if forward {
                    be.twiddle(scratch, step);
                    be.dif(scratch, &self.tw_cols_fwd);
                } else {
                    be.dit(scratch, &self.tw_cols_inv);
                    be.twiddle(scratch, step);
                }
                for (q, blk) in blocks.iter_mut().enumerate() {
                    for (j, v) in blk.iter_mut().enumerate() {
                        for (l, x) in v.iter_mut().enumerate() {
                            *x = scratch[16 * q + l][j];
                        }
                    }
                }
            },
        );
    }

    /// `acc += x * s` pointwise (in the transform domain, up to the factor the final scale
    /// removes).
    pub(crate) fn mul_acc(&self, acc: &mut [V], x: &[V], s: &[V]) {
        let be = self.backend;
        let chunk = self.rows;
        acc.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .zip(s.par_chunks(chunk))
            .for_each(|((a, u), v)| be.mul_acc(a, u, v));
    }

    /// After [`inverse`](Self::inverse) of an accumulated product: the low bits of the exact
    /// convolution values, as `len` bits in natural order.
    pub(crate) fn parities(&self, buf: &[V]) -> Vec<u64> {
        let (rows, cols) = (self.rows, self.cols);
        let scale = self.final_scale;
        let mut out = vec![0u64; self.len() / 64];
        out.par_chunks_mut(cols / 64)
            .enumerate()
            .for_each(|(r, row_words)| {
                for (q, chunk) in row_words.iter_mut().enumerate() {
                    let mut word = 0u64;
                    for k in 0..4 {
                        let v = &buf[(4 * q + k) * rows + r];
                        let mut bits = 0u64;
                        for (l, &x) in v.iter().enumerate() {
                            let y = mont(x, scale);
                            let y = y.min(y.wrapping_sub(P));
                            bits |= u64::from(y & 1) << l;
                        }
                        word |= bits << (16 * k);
                    }
                    *chunk = word;
                }
            });
        out
    }
}

/// The 64 bits of `words` starting at bit `pos` (which may be negative); bits outside the
/// slice read as zero.
pub(crate) fn read64(words: &[u64], pos: i64) -> u64 {
    if pos <= -64 {
        return 0;
    }
    if pos < 0 {
        return read64(words, 0) << (-pos) as u32;
    }
    let pos = pos as usize;
    let (w, sh) = (pos / 64, pos % 64);
    let lo = words.get(w).copied().unwrap_or(0) >> sh;
    let hi = if sh == 0 {
        0
    } else {
        words.get(w + 1).copied().unwrap_or(0) << (64 - sh)
    };
    lo | hi
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SeededRandom;

    #[test]
    fn constants_are_consistent() {
        assert_eq!(P, 7 * (1 << 26) + 1);
        assert_eq!(P.wrapping_mul(P_NEG_INV.wrapping_neg()), 1);
        assert!(4 * u64::from(P) < 1 << 32);
        // A Montgomery product of one (in Montgomery form) with x is x.
        assert_eq!(mont(MONT_ONE, 12345) % P, 12345);
    }

    #[test]
    fn read64_handles_offsets_and_edges() {
        let words = [0x0123_4567_89ab_cdefu64, 0xfedc_ba98_7654_3210];
        assert_eq!(read64(&words, 0), words[0]);
        assert_eq!(read64(&words, 4), (words[0] >> 4) | (words[1] << 60));
        assert_eq!(read64(&words, 64), words[1]);
        assert_eq!(read64(&words, 100), words[1] >> 36);
        assert_eq!(read64(&words, 128), 0);
        assert_eq!(read64(&words, -8), words[0] << 8);
        assert_eq!(read64(&words, -64), 0);
    }

    fn naive_cyclic(a: &[u32], b: &[u32]) -> Vec<u64> {
        let n = a.len();
        let mut c = vec![0u64; n];
        for i in 0..n {
            if a[i] == 0 {
                continue;
            }
            for j in 0..n {
                c[(i + j) % n] += u64::from(a[i]) * u64::from(b[j]);
            }
        }
        c
    }

    /// The full round trip (forward, product, inverse) reproduces the exact cyclic convolution
    /// of random 0/1 sequences, on every supported backend.
    #[test]
    fn cyclic_convolution_matches_naive_on_every_backend() {
        let log = MIN_LOG_LEN;
        let n = 1usize << log;
        let mut rng = SeededRandom::from_u64(11);
        let wa: Vec<u64> = (0..n / 64).map(|_| rng.u64()).collect();
        let wb: Vec<u64> = (0..n / 64).map(|_| rng.u64()).collect();
        let bits = |w: &[u64]| -> Vec<u32> {
            (0..n)
                .map(|i| ((w[i / 64] >> (i % 64)) & 1) as u32)
                .collect()
        };
        let expect = naive_cyclic(&bits(&wa), &bits(&wb));
        let mut results = Vec::new();
        for be in NttBackend::ALL.into_iter().filter(|b| b.is_supported()) {
            let plan = Plan::new(log, be);
            assert_eq!(plan.backend, be);
            let (mut a, mut b, mut acc) = (plan.alloc(), plan.alloc(), plan.alloc());
            plan.load_bits(&mut a, &wa, 0, n);
            plan.load_bits(&mut b, &wb, 0, n);
            plan.forward(&mut a);
            plan.forward(&mut b);
            plan.mul_acc(&mut acc, &a, &b);
            plan.inverse(&mut acc);
            let par = plan.parities(&acc);
            for (i, e) in expect.iter().enumerate() {
                assert_eq!(
                    (par[i / 64] >> (i % 64)) & 1,
                    e & 1,
                    "{} bit {i}",
                    be.name()
                );
            }
            results.push(par);
        }
        assert!(results.windows(2).all(|w| w[0] == w[1]));
    }
}
