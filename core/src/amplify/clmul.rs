//! Carry-less (GF(2)\[X\]) arithmetic on packed 64-bit words: the engine behind
//! [`ToeplitzMethod::Clmul`](super::ToeplitzMethod::Clmul).
//!
//! **Toeplitz matrix-vector product (TMVP).** A square TMVP of `N` words takes a seed `S` of
//! `2N` words and an input `x` of `N` words and returns `y` of `N` words with
//! `y[i] = XOR_j S[i - j + 64N - 1] & x[j]` (bit indices; bit `128N - 1` of `S` is never read).
//! Equivalently `y` is coefficients `64N - 1 ..= 128N - 2` of the product `S(X) x(X)`.
//!
//! **Karatsuba, transposed.** Halving a square Toeplitz matrix gives four Toeplitz blocks
//! `[[A, B], [C, A]]` whose seeds are word ranges of `S` (`B = S[0..2h]`, `A = S[h..3h]`,
//! `C = S[2h..4h]`, `h = N / 2`), so `y0 = A (x0 + x1) + (B - A) x1` and
//! `y1 = A (x0 + x1) + (C - A) x0`: three half-size products plus `O(N)` XORs, about the cost
//! of one `N x N` polynomial product instead of the `1.5N x N` product a full-product method
//! would need. The top levels run on both cores (`rayon::join`).
//!
//! **Base case.** Below a few dozen words the middle product is computed directly from
//! 64 x 64 -> 128-bit carry-less products: PCLMULQDQ (one per instruction), VPCLMULQDQ on
//! AVX-512 (four per instruction), or a portable constant-time software multiply (integer
//! multiplications of bit-masked operands, no secret-dependent table lookups or branches).
//! The backends are chosen at run time and the tests check each against the portable one.

use rayon::join;
use zeroize::Zeroizing;

use crate::bits::kernels;

/// Largest base case, in words (sizes the stack buffers of the base-case kernels).
pub(crate) const MAX_BASE_WORDS: usize = 32;
/// Default base-case size: recursion stops at or below this many words.
pub(crate) const BASE_WORDS: usize = 16;
/// Karatsuba steps on at least this many words fork their three halves onto the rayon pool.
const PARALLEL_WORDS: usize = 2048;

/// Instruction set for the carry-less multiplications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClmulBackend {
    /// Portable software multiply (bit-masked integer products); always available.
    Portable,
    /// x86-64 PCLMULQDQ, one 64 x 64-bit product per instruction.
    Pclmul,
    /// x86-64 VPCLMULQDQ on AVX-512 registers, four products per instruction.
    Vpclmul,
}

impl ClmulBackend {
    /// All backends, narrowest first.
    pub const ALL: [ClmulBackend; 3] = [
        ClmulBackend::Portable,
        ClmulBackend::Pclmul,
        ClmulBackend::Vpclmul,
    ];

    /// Whether this CPU can run the backend.
    pub fn is_supported(self) -> bool {
        match self {
            ClmulBackend::Portable => true,
            #[cfg(target_arch = "x86_64")]
            ClmulBackend::Pclmul => {
                std::arch::is_x86_feature_detected!("pclmulqdq")
                    && std::arch::is_x86_feature_detected!("sse4.1")
            }
            #[cfg(target_arch = "x86_64")]
            ClmulBackend::Vpclmul => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("vpclmulqdq")
                    && std::arch::is_x86_feature_detected!("pclmulqdq")
                    && std::arch::is_x86_feature_detected!("sse4.1")
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
            .unwrap_or(ClmulBackend::Portable)
    }

    /// Short lowercase name, for reports and benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            ClmulBackend::Portable => "portable",
            ClmulBackend::Pclmul => "pclmul",
            ClmulBackend::Vpclmul => "vpclmul",
        }
    }

    /// This backend if the CPU supports it, else the portable one.
    pub(crate) fn or_portable(self) -> Self {
        if self.is_supported() {
            self
        } else {
            ClmulBackend::Portable
        }
    }

    /// `y ^= T x` for a square TMVP of `x.len() <= MAX_BASE_WORDS` words, directly.
    /// `s.len() == 2 * x.len() == 2 * y.len()`. Only called with a supported backend.
    fn base(self, s: &[u64], x: &[u64], y: &mut [u64]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: callers only hold backends that passed `is_supported()` (`or_portable`).
            ClmulBackend::Vpclmul => unsafe { x86::base_vpclmul(s, x, y) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            ClmulBackend::Pclmul => unsafe { x86::base_pclmul(s, x, y) },
            _ => base_generic::<Portable>(s, x, y),
        }
    }
}

/// One 64 x 64 -> 128-bit carry-less product.
trait Clmul {
    fn mul(a: u64, b: u64) -> u128;
}

/// The portable multiply.
struct Portable;

impl Clmul for Portable {
    #[inline(always)]
    fn mul(a: u64, b: u64) -> u128 {
        clmul64_portable(a, b)
    }
}

/// 32 x 32 -> 64-bit carry-less product from four-way bit-masked integer products (each
/// column of a masked product sums at most 8 ones, so it never carries into the next column
/// of its class). Constant time when integer multiplication is.
#[inline(always)]
fn bmul32(x: u32, y: u32) -> u64 {
    const M: [u32; 4] = [0x1111_1111, 0x2222_2222, 0x4444_4444, 0x8888_8888];
    const W: [u64; 4] = [
        0x1111_1111_1111_1111,
        0x2222_2222_2222_2222,
        0x4444_4444_4444_4444,
        0x8888_8888_8888_8888,
    ];
    let xs = M.map(|m| u64::from(x & m));
    let ys = M.map(|m| u64::from(y & m));
    let mut z = 0u64;
    for (r, w) in W.iter().enumerate() {
        let mut acc = 0u64;
        for (i, xi) in xs.iter().enumerate() {
            acc ^= xi.wrapping_mul(ys[(r + 4 - i) % 4]);
        }
        z |= acc & w;
    }
    z
}

/// Portable 64 x 64 -> 128-bit carry-less product (Karatsuba over three [`bmul32`]).
pub(crate) fn clmul64_portable(a: u64, b: u64) -> u128 {
    let (a0, a1) = (a as u32, (a >> 32) as u32);
    let (b0, b1) = (b as u32, (b >> 32) as u32);
    let lo = bmul32(a0, b0);
    let hi = bmul32(a1, b1);
    let mid = bmul32(a0 ^ a1, b0 ^ b1) ^ lo ^ hi;
    u128::from(lo) ^ (u128::from(mid) << 32) ^ (u128::from(hi) << 64)
}

/// Folds 128-bit column sums `acc[k]` (position `k` = product word `k + n - 2`, `k` in
/// `0..n + 2`) into `y ^= ` product bits `64n - 1 ..= 128n - 2`.
#[inline(always)]
fn fold_columns(lo: &[u64], hi: &[u64], y: &mut [u64]) {
    // Product word n - 1 + i is lo[i + 1] ^ hi[i]; we need (P[n-1+i] >> 63) | (P[n+i] << 1).
    let word = |k: usize| lo[k + 1] ^ hi[k];
    for (i, yi) in y.iter_mut().enumerate() {
        *yi ^= (word(i) >> 63) | (word(i + 1) << 1);
    }
}

/// The base case for any scalar [`Clmul`]: all `(a, b)` with `a + b` in `n - 2 ..= 2n - 1`.
#[inline(always)]
fn base_generic<C: Clmul>(s: &[u64], x: &[u64], y: &mut [u64]) {
    let n = x.len();
    debug_assert!(n <= MAX_BASE_WORDS && s.len() == 2 * n && y.len() == n);
    let mut lo = [0u64; MAX_BASE_WORDS + 2];
    let mut hi = [0u64; MAX_BASE_WORDS + 2];
    // Position k (0-based here) is product word k + n - 2; seed index a = k + n - 2 - b.
    for (b, &xb) in x.iter().enumerate() {
        for k in 0..n + 2 {
            let Some(a) = (k + n).checked_sub(2 + b) else {
                continue;
            };
            let Some(&sa) = s.get(a) else { break };
            let p = C::mul(sa, xb);
            lo[k] ^= p as u64;
            hi[k] ^= (p >> 64) as u64;
        }
    }
    fold_columns(&lo[..n + 2], &hi[..n + 2], y);
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::clmul64_pclmul;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Clmul, MAX_BASE_WORDS, base_generic, fold_columns};
    use std::arch::x86_64::*;

    struct Pclmul;

    /// The 128-bit carry-less product of `a` and `b` by PCLMULQDQ. Only for inlining into
    /// functions compiled with PCLMULQDQ and SSE4.1 (`base_pclmul` here, the additive FFT's
    /// PCLMULQDQ kernels), which run only once both were detected.
    #[inline(always)]
    pub(crate) fn clmul64_pclmul(a: u64, b: u64) -> u128 {
        // SAFETY: every caller is compiled with PCLMULQDQ and SSE4.1 and runs only after
        // both were detected (see above).
        unsafe {
            let p = _mm_clmulepi64_si128(
                _mm_cvtsi64_si128(a as i64),
                _mm_cvtsi64_si128(b as i64),
                0x00,
            );
            let lo = _mm_cvtsi128_si64(p) as u64;
            let hi = _mm_extract_epi64(p, 1) as u64;
            u128::from(lo) | (u128::from(hi) << 64)
        }
    }

    impl Clmul for Pclmul {
        #[inline(always)]
        fn mul(a: u64, b: u64) -> u128 {
            clmul64_pclmul(a, b)
        }
    }

    /// PCLMULQDQ base case.
    #[target_feature(enable = "pclmulqdq,sse4.1")]
    pub(super) fn base_pclmul(s: &[u64], x: &[u64], y: &mut [u64]) {
        base_generic::<Pclmul>(s, x, y);
    }

    /// VPCLMULQDQ base case: eight consecutive product positions per group, four products
    /// per instruction (even seed words in one, odd in the other).
    #[target_feature(enable = "avx512f,vpclmulqdq")]
    pub(super) fn base_vpclmul(s: &[u64], x: &[u64], y: &mut [u64]) {
        let n = x.len();
        debug_assert!(n <= MAX_BASE_WORDS && s.len() == 2 * n && y.len() == n);
        // The seed with 8 zero words on either side, so every 8-word window is in bounds.
        let mut pad = [0u64; 2 * MAX_BASE_WORDS + 16];
        pad[8..8 + 2 * n].copy_from_slice(s);
        let mut lo = [0u64; MAX_BASE_WORDS + 10];
        let mut hi = [0u64; MAX_BASE_WORDS + 10];
        let mut g = 0;
        while g < n + 2 {
            // Positions g..g+8 are product words g + n - 2 ..; for input word b the seed
            // window starts at word g + n - 2 - b, i.e. pad index g + n + 6 - b.
            let mut even = _mm512_setzero_si512();
            let mut odd = _mm512_setzero_si512();
            for (b, &xb) in x.iter().enumerate() {
                let start = g + n + 6 - b;
                let win = &pad[start..start + 8];
                // SAFETY: `win` holds exactly 8 u64 (64 bytes); unaligned loads are allowed.
                let v = unsafe { _mm512_loadu_si512(win.as_ptr().cast()) };
                let xv = _mm512_set1_epi64(xb as i64);
                even = _mm512_xor_si512(even, _mm512_clmulepi64_epi128(v, xv, 0x00));
                odd = _mm512_xor_si512(odd, _mm512_clmulepi64_epi128(v, xv, 0x01));
            }
            let mut e = [0u64; 8];
            let mut o = [0u64; 8];
            // SAFETY: both arrays hold 64 bytes.
            unsafe {
                _mm512_storeu_si512(e.as_mut_ptr().cast(), even);
                _mm512_storeu_si512(o.as_mut_ptr().cast(), odd);
            }
            for i in 0..4 {
                lo[g + 2 * i] = e[2 * i];
                hi[g + 2 * i] = e[2 * i + 1];
                lo[g + 2 * i + 1] = o[2 * i];
                hi[g + 2 * i + 1] = o[2 * i + 1];
            }
            g += 8;
        }
        fold_columns(&lo[..n + 2], &hi[..n + 2], y);
    }
}

/// `y ^= T x` for a square TMVP (`s.len() == 2 * x.len() == 2 * y.len()`), by transposed
/// Karatsuba down to `base` words. `scratch` must hold at least `4 * x.len()` words.
pub(crate) fn tmvp_acc(
    be: ClmulBackend,
    base: usize,
    s: &[u64],
    x: &[u64],
    y: &mut [u64],
    scratch: &mut [u64],
) {
    let n = x.len();
    debug_assert!(s.len() == 2 * n && y.len() == n);
    if n <= base.min(MAX_BASE_WORDS) || (n <= MAX_BASE_WORDS && !n.is_multiple_of(2)) {
        be.base(s, x, y);
        return;
    }
    if !n.is_multiple_of(2) {
        // Odd and too large for the base case (never chosen by the drivers): one-word
        // blocks; block (r, c) has seed words starting at r - c + n - 1.
        for (r, yr) in y.chunks_mut(1).enumerate() {
            for (c, xc) in x.chunks(1).enumerate() {
                let start = r + n - 1 - c;
                be.base(&s[start..start + 2], xc, yr);
            }
        }
        return;
    }
    let h = n / 2;
    let k = kernels::best();
    let (x0, x1) = x.split_at(h);
    let (y0, y1) = y.split_at_mut(h);
    let (s_b, s_a, s_c) = (&s[..2 * h], &s[h..3 * h], &s[2 * h..]);
    if n >= PARALLEL_WORDS {
        let mut xs = Zeroizing::new(x0.to_vec());
        k.xor_into(&mut xs, x1);
        let mut sb = s_b.to_vec();
        k.xor_into(&mut sb, s_a);
        let mut sc = s_c.to_vec();
        k.xor_into(&mut sc, s_a);
        let mut p = Zeroizing::new(vec![0u64; h]);
        let run = |s: &[u64], x: &[u64], y: &mut [u64]| {
            let mut scratch = Zeroizing::new(vec![0u64; 4 * x.len()]);
            tmvp_acc(be, base, s, x, y, &mut scratch);
        };
        join(
            || run(s_a, &xs, &mut p),
            || join(|| run(&sb, x1, y0), || run(&sc, x0, y1)),
        );
        k.xor_into(y0, &p);
        k.xor_into(y1, &p);
        return;
    }
    let (xs, rest) = scratch.split_at_mut(h);
    let (ss, rest) = rest.split_at_mut(2 * h);
    let (p, rest) = rest.split_at_mut(h);
    xs.copy_from_slice(x0);
    k.xor_into(xs, x1);
    p.fill(0);
    tmvp_acc(be, base, s_a, xs, p, rest);
    k.xor_into(y0, p);
    k.xor_into(y1, p);
    ss.copy_from_slice(s_b);
    k.xor_into(ss, s_a);
    tmvp_acc(be, base, ss, x1, y0, rest);
    ss.copy_from_slice(s_c);
    k.xor_into(ss, s_a);
    tmvp_acc(be, base, ss, x0, y1, rest);
}

/// Square TMVP block size in words for an `n`-bit input and `m`-bit output: a size
/// `c * 2^r` (`c <= MAX_BASE_WORDS`, so Karatsuba halves cleanly down to the base case)
/// minimising the modelled cost `B * T * K^log2(3)` of the `B x T` block products.
pub(crate) fn choose_block_words(n: usize, m: usize) -> usize {
    let n_words = n.div_ceil(64).max(1);
    let mut best: Option<(f64, usize)> = None;
    let mut r = 0u32;
    loop {
        for c in (MAX_BASE_WORDS / 2 + 1)..=MAX_BASE_WORDS {
            let k = c << r;
            let l = 64 * k;
            let blocks = (n.div_ceil(l) * m.div_ceil(l)) as f64;
            let cost = blocks * (k as f64).powf(1.585) + blocks * k as f64 * 4.0;
            if best.is_none_or(|(bc, _)| cost < bc) {
                best = Some((cost, k));
            }
        }
        if (MAX_BASE_WORDS / 2 + 1) << r > n_words {
            break;
        }
        r += 1;
    }
    let small = (1..=MAX_BASE_WORDS.min(n_words)).map(|k| {
        let l = 64 * k;
        let blocks = (n.div_ceil(l) * m.div_ceil(l)) as f64;
        (blocks * (k * k) as f64, k)
    });
    for (cost, k) in small {
        if best.is_none_or(|(bc, _)| cost < bc) {
            best = Some((cost, k));
        }
    }
    match best {
        Some((_, k)) => k,
        None => unreachable!("the loops visit at least one size"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SeededRandom;

    fn clmul_bitwise(a: u64, b: u64) -> u128 {
        (0..64)
            .filter(|i| (a >> i) & 1 == 1)
            .fold(0u128, |r, i| r ^ (u128::from(b) << i))
    }

    /// `y[i] = XOR_j S[i - j + 64N - 1] & x[j]`, bit by bit.
    fn tmvp_bitwise(s: &[u64], x: &[u64]) -> Vec<u64> {
        let n = x.len();
        let bit = |w: &[u64], i: usize| (w[i / 64] >> (i % 64)) & 1;
        let mut y = vec![0u64; n];
        for i in 0..64 * n {
            let mut acc = 0;
            for j in 0..64 * n {
                acc ^= bit(s, i + 64 * n - 1 - j) & bit(x, j);
            }
            y[i / 64] |= acc << (i % 64);
        }
        y
    }

    fn words(rng: &mut SeededRandom, n: usize) -> Vec<u64> {
        (0..n).map(|_| rng.u64()).collect()
    }

    fn supported() -> Vec<ClmulBackend> {
        ClmulBackend::ALL
            .into_iter()
            .filter(|b| b.is_supported())
            .collect()
    }

    #[test]
    fn portable_clmul_matches_bitwise() {
        let mut rng = SeededRandom::from_u64(11);
        let edge = [0, 1, u64::MAX, 1 << 63, 0x8000_0001, 0xffff_ffff];
        for &a in &edge {
            for &b in &edge {
                assert_eq!(clmul64_portable(a, b), clmul_bitwise(a, b), "{a:x} {b:x}");
            }
        }
        for _ in 0..2000 {
            let (a, b) = (rng.u64(), rng.u64());
            assert_eq!(clmul64_portable(a, b), clmul_bitwise(a, b));
        }
        // (X + 1)^2 = X^2 + 1 over GF(2); X^63 * X^63 = X^126.
        assert_eq!(clmul64_portable(3, 3), 5);
        assert_eq!(clmul64_portable(1 << 63, 1 << 63), 1u128 << 126);
    }

    #[test]
    fn base_cases_match_bitwise_for_every_backend() {
        let mut rng = SeededRandom::from_u64(12);
        for n in 1..=MAX_BASE_WORDS {
            let (s, x) = (words(&mut rng, 2 * n), words(&mut rng, n));
            let expect = tmvp_bitwise(&s, &x);
            for be in supported() {
                let init = words(&mut rng, n);
                let mut y = init.clone();
                be.base(&s, &x, &mut y);
                let got: Vec<u64> = y.iter().zip(&init).map(|(a, b)| a ^ b).collect();
                assert_eq!(got, expect, "{be:?} n={n}");
            }
        }
    }

    #[test]
    fn karatsuba_matches_base_case() {
        let mut rng = SeededRandom::from_u64(13);
        // Sizes with several halvings, odd leftovers and the parallel split.
        let cases = [
            (2, 1),
            (8, 2),
            (24, 3),
            (40, 5),
            (35, 4),
            (70, 4),
            (96, 16),
            (4096, 32),
        ];
        for &(n, base) in &cases {
            let (s, x) = (words(&mut rng, 2 * n), words(&mut rng, n));
            let expect = if n <= 96 {
                tmvp_bitwise(&s, &x)
            } else {
                let mut y = vec![0u64; n];
                let mut scratch = vec![0u64; 4 * n];
                tmvp_acc(ClmulBackend::Portable, 8, &s, &x, &mut y, &mut scratch);
                y
            };
            for be in supported() {
                let mut y = vec![0u64; n];
                let mut scratch = vec![0u64; 4 * n];
                tmvp_acc(be, base, &s, &x, &mut y, &mut scratch);
                assert_eq!(y, expect, "{be:?} n={n} base={base}");
            }
        }
    }

    #[test]
    fn block_choice_covers_the_matrix() {
        for &(n, m) in &[
            (2, 1),
            (100, 1),
            (1000, 999),
            (1_000_000, 500_000),
            (100_000_000, 50_000_000),
            (100_000_000, 1000),
        ] {
            let k = choose_block_words(n, m);
            assert!(k >= 1);
            let c = k >> k.trailing_zeros();
            assert!(
                k <= MAX_BASE_WORDS || c <= MAX_BASE_WORDS,
                "n={n} m={m} k={k}"
            );
            // Never more than twice the words needed for the longer side.
            assert!(
                k <= 2 * n.div_ceil(64).max(MAX_BASE_WORDS),
                "n={n} m={m} k={k}"
            );
        }
    }
}
