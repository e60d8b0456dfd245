//! GF(2^128) arithmetic and the polynomial hash that key confirmation ([`crate::confirm`]) and
//! transcript authentication ([`crate::auth`]) share.
//!
//! The field is `GF(2)[x] / (x^128 + x^7 + x^2 + x + 1)` in the plain bit order: bit `i` of a
//! `u128` is the coefficient of `x^i`. `poly_hash` cuts a word slice into `L` 128-bit blocks
//! `m_0..m_{L-1}` (block `j` holds words `2j` (low) and `2j + 1` (high), the last one
//! zero-padded), appends a length block `m_L`, and evaluates `sum_i m_i r^(L + 1 - i)` by Horner
//! (`acc = (acc ^ m_i) * r`). Two inputs whose block sequences differ give a nonzero difference
//! polynomial of degree at most `L + 1` without a constant term, so they collide for at most
//! `L + 1` values of `r`.
//!
//! The product uses PCLMULQDQ when the CPU has it (checked at run time) and a portable
//! carry-less product otherwise. Eight blocks are hashed per step, `acc = (acc ^ m_0) r^8 ^ m_1
//! r^7 ^ ... ^ m_7 r` with `r^2..r^8` computed once: the eight 256-bit products are summed
//! unreduced and reduced once per step (aggregated Horner), which gives exactly the
//! one-block-at-a-time value; the blocks past the last full step and the length block go one at
//! a time.

/// Blocks hashed per aggregated Horner step.
const AGGREGATE: usize = 8;

/// Reduces a 256-bit carry-less product `hi * x^128 + lo` modulo `x^128 + x^7 + x^2 + x + 1`.
///
/// `x^128 = x^7 + x^2 + x + 1`, so `hi * x^128 = hi + hi x + hi x^2 + hi x^7`. The part of
/// that sum of degree 128 and more is `x^128 * ((hi >> 127) + (hi >> 126) + (hi >> 121))`, a
/// cofactor of degree below 7, which folds once more the same way into degree below 14, so a
/// third fold is never needed. Both folds at once: `T = hi ^ (hi >> 121) ^ (hi >> 126) ^
/// (hi >> 127)`, result `lo ^ T ^ T x ^ T x^2 ^ T x^7` (shifts truncated to 128 bits). (The
/// product of two elements has degree at most 254, so `hi >> 127` is zero there; the term keeps
/// the function right for any 256-bit input.)
#[inline]
fn reduce(hi: u128, lo: u128) -> u128 {
    let t = hi ^ (hi >> 121) ^ (hi >> 126) ^ (hi >> 127);
    lo ^ t ^ (t << 1) ^ (t << 2) ^ (t << 7)
}

/// Carry-less 64x64 -> 128-bit product, portable and constant-time.
#[inline]
fn clmul64_portable(a: u64, b: u64) -> u128 {
    let a = u128::from(a);
    let mut p = 0u128;
    for i in 0..64 {
        let m = 0u128.wrapping_sub(u128::from((b >> i) & 1));
        p ^= (a << i) & m;
    }
    p
}

/// Carry-less 128x128 -> 256-bit product `(hi, lo)`, portable (the reference).
#[inline]
fn clmul_portable(a: u128, b: u128) -> (u128, u128) {
    let (a0, a1) = (a as u64, (a >> 64) as u64);
    let (b0, b1) = (b as u64, (b >> 64) as u64);
    let lo = clmul64_portable(a0, b0);
    let hi = clmul64_portable(a1, b1);
    let mid = clmul64_portable(a0, b1) ^ clmul64_portable(a1, b0);
    (hi ^ (mid >> 64), lo ^ (mid << 64))
}

/// Product in GF(2^128) (portable; for tests and the occasional single product).
pub fn gf128_mul(a: u128, b: u128) -> u128 {
    let (h, l) = clmul_portable(a, b);
    reduce(h, l)
}

/// Block `j` of a key from its words: word `2j` low, word `2j + 1` high (zero past the end).
#[inline]
fn block_at(words: &[u64], j: usize) -> u128 {
    let w = |i: usize| u128::from(words.get(i).copied().unwrap_or(0));
    w(2 * j) | (w(2 * j + 1) << 64)
}

/// Portable hash, one block per step: Horner over the key blocks then `len` (the reference).
#[cfg(test)]
fn poly_plain_portable(words: &[u64], len: u64, r: u128) -> u128 {
    let mut acc = 0u128;
    for j in 0..words.len().div_ceil(2) {
        acc = gf128_mul(acc ^ block_at(words, j), r);
    }
    gf128_mul(acc ^ u128::from(len), r)
}

/// Portable hash, [`AGGREGATE`] blocks per step with one reduction each.
fn poly_aggregated_portable(words: &[u64], len: u64, r: u128) -> u128 {
    // pow[k] = r^(AGGREGATE - k): the power that block k of a step gets.
    let mut pow = [r; AGGREGATE];
    for k in (0..AGGREGATE - 1).rev() {
        pow[k] = gf128_mul(pow[k + 1], r);
    }
    let mut chunks = words.chunks_exact(2 * AGGREGATE);
    let mut acc = 0u128;
    for c in &mut chunks {
        let (mut hi, mut lo) = (0u128, 0u128);
        for (k, &p) in pow.iter().enumerate() {
            let mut m = block_at(c, k);
            if k == 0 {
                m ^= acc;
            }
            let (h, l) = clmul_portable(m, p);
            hi ^= h;
            lo ^= l;
        }
        acc = reduce(hi, lo);
    }
    let rest = chunks.remainder();
    for j in 0..rest.len().div_ceil(2) {
        acc = gf128_mul(acc ^ block_at(rest, j), r);
    }
    gf128_mul(acc ^ u128::from(len), r)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The hash with PCLMULQDQ: elements in `__m128i` (lane 0 = coefficients 0..63).
    use std::arch::x86_64::*;

    use super::AGGREGATE;

    /// An unreduced product (or a sum of them): `hi * x^128 + mid * x^64 + lo`.
    #[derive(Clone, Copy)]
    struct Wide {
        lo: __m128i,
        mid: __m128i,
        hi: __m128i,
    }

    #[inline]
    #[target_feature(enable = "pclmulqdq,sse2")]
    fn xor(a: __m128i, b: __m128i) -> __m128i {
        _mm_xor_si128(a, b)
    }

    #[inline]
    #[target_feature(enable = "pclmulqdq,sse2")]
    fn from_u128(x: u128) -> __m128i {
        _mm_set_epi64x((x >> 64) as u64 as i64, x as u64 as i64)
    }

    #[inline]
    #[target_feature(enable = "pclmulqdq,sse2")]
    fn to_u128(v: __m128i) -> u128 {
        let lo = _mm_cvtsi128_si64(v) as u64;
        let hi = _mm_cvtsi128_si64(_mm_unpackhi_epi64(v, v)) as u64;
        (u128::from(hi) << 64) | u128::from(lo)
    }

    /// Block `j` of `words` (word `2j` low, `2j + 1` high, zero past the end).
    #[inline]
    #[target_feature(enable = "pclmulqdq,sse2")]
    fn block(words: &[u64], j: usize) -> __m128i {
        let w = |i: usize| words.get(i).copied().unwrap_or(0) as i64;
        _mm_set_epi64x(w(2 * j + 1), w(2 * j))
    }

    #[inline]
    #[target_feature(enable = "pclmulqdq,sse2")]
    fn zero() -> Wide {
        let z = _mm_setzero_si128();
        Wide {
            lo: z,
            mid: z,
            hi: z,
        }
    }

    /// `w += a * b`, unreduced (four 64x64 products).
    #[inline]
    #[target_feature(enable = "pclmulqdq,sse2")]
    fn mul_add(w: &mut Wide, a: __m128i, b: __m128i) {
        w.lo = xor(w.lo, _mm_clmulepi64_si128(a, b, 0x00));
        w.hi = xor(w.hi, _mm_clmulepi64_si128(a, b, 0x11));
        w.mid = xor(
            w.mid,
            xor(
                _mm_clmulepi64_si128(a, b, 0x01),
                _mm_clmulepi64_si128(a, b, 0x10),
            ),
        );
    }

    /// `w mod (x^128 + x^7 + x^2 + x + 1)`: the same two folds as [`super::reduce`], with the
    /// 128-bit shifts made of lane shifts.
    #[inline]
    #[target_feature(enable = "pclmulqdq,sse2")]
    fn reduce(w: Wide) -> __m128i {
        let lo = xor(w.lo, _mm_slli_si128::<8>(w.mid));
        let hi = xor(w.hi, _mm_srli_si128::<8>(w.mid));
        // hi >> 121, >> 126, >> 127 keep only bits of the high lane, landing in the low lane.
        let s = xor(
            xor(_mm_srli_epi64::<57>(hi), _mm_srli_epi64::<62>(hi)),
            _mm_srli_epi64::<63>(hi),
        );
        let t = xor(hi, _mm_srli_si128::<8>(s));
        // t << 1, << 2, << 7: each lane shifted, plus the bits carried from lane 0 to lane 1.
        let shifted = xor(
            xor(_mm_slli_epi64::<1>(t), _mm_slli_epi64::<2>(t)),
            _mm_slli_epi64::<7>(t),
        );
        let carried = xor(
            xor(_mm_srli_epi64::<63>(t), _mm_srli_epi64::<62>(t)),
            _mm_srli_epi64::<57>(t),
        );
        xor(xor(lo, t), xor(shifted, _mm_slli_si128::<8>(carried)))
    }

    #[inline]
    #[target_feature(enable = "pclmulqdq,sse2")]
    fn mul(a: __m128i, b: __m128i) -> __m128i {
        let mut w = zero();
        mul_add(&mut w, a, b);
        reduce(w)
    }

    /// The unreduced product `(hi, lo)` (for the tests).
    #[cfg(test)]
    #[target_feature(enable = "pclmulqdq,sse2")]
    pub(super) fn clmul(a: u128, b: u128) -> (u128, u128) {
        let mut w = zero();
        mul_add(&mut w, from_u128(a), from_u128(b));
        let lo = xor(w.lo, _mm_slli_si128::<8>(w.mid));
        let hi = xor(w.hi, _mm_srli_si128::<8>(w.mid));
        (to_u128(hi), to_u128(lo))
    }

    /// Product in GF(2^128) with PCLMULQDQ.
    #[cfg(test)]
    #[target_feature(enable = "pclmulqdq,sse2")]
    pub(super) fn gf128_mul(a: u128, b: u128) -> u128 {
        to_u128(mul(from_u128(a), from_u128(b)))
    }

    /// One block per step (the reference of the aggregated version, with this product).
    #[cfg(test)]
    #[target_feature(enable = "pclmulqdq,sse2")]
    pub(super) fn poly_plain(words: &[u64], len: u64, r: u128) -> u128 {
        let r = from_u128(r);
        let mut acc = _mm_setzero_si128();
        for j in 0..words.len().div_ceil(2) {
            acc = mul(xor(acc, block(words, j)), r);
        }
        to_u128(mul(xor(acc, from_u128(u128::from(len))), r))
    }

    /// [`AGGREGATE`] blocks per step, their products summed unreduced and reduced once. Each
    /// product is a Karatsuba one (three PCLMULQDQ): `mid = (a0 + a1)(b0 + b1) + lo + hi`, the
    /// `+ lo + hi` done once per step on the sums.
    #[target_feature(enable = "pclmulqdq,sse2")]
    pub(super) fn poly_aggregated(words: &[u64], len: u64, r: u128) -> u128 {
        let rv = from_u128(r);
        // pow[k] = r^(AGGREGATE - k), and its two halves' sum in the low lane.
        let mut pow = [rv; AGGREGATE];
        for k in (0..AGGREGATE - 1).rev() {
            pow[k] = mul(pow[k + 1], rv);
        }
        let fold = |v: __m128i| xor(v, _mm_shuffle_epi32::<0x4e>(v));
        let kar = pow.map(fold);
        let mut chunks = words.chunks_exact(2 * AGGREGATE);
        let mut acc = _mm_setzero_si128();
        for c in &mut chunks {
            let mut w = zero();
            for k in 0..AGGREGATE {
                let mut m = block(c, k);
                if k == 0 {
                    m = xor(m, acc);
                }
                w.lo = xor(w.lo, _mm_clmulepi64_si128(m, pow[k], 0x00));
                w.hi = xor(w.hi, _mm_clmulepi64_si128(m, pow[k], 0x11));
                w.mid = xor(w.mid, _mm_clmulepi64_si128(fold(m), kar[k], 0x00));
            }
            w.mid = xor(w.mid, xor(w.lo, w.hi));
            acc = reduce(w);
        }
        let rest = chunks.remainder();
        for j in 0..rest.len().div_ceil(2) {
            acc = mul(xor(acc, block(rest, j)), rv);
        }
        to_u128(mul(xor(acc, from_u128(u128::from(len))), rv))
    }
}

fn has_pclmul() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The polynomial value at `r` of the 128-bit blocks of `words` (block `j` = words `2j`,
/// `2j + 1`, zero-padded) followed by the length block `len`; `portable` forces the portable
/// path (for differential tests). Also the hash of the KME's `.cor` block check.
pub fn poly_hash(words: &[u64], len: u64, r: u128, portable: bool) -> u128 {
    #[cfg(target_arch = "x86_64")]
    if !portable && has_pclmul() {
        // SAFETY: the CPU supports PCLMULQDQ (checked just above) and SSE2 (x86-64 baseline).
        return unsafe { x86::poly_aggregated(words, len, r) };
    }
    let _ = portable;
    poly_aggregated_portable(words, len, r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SeededRandom;

    fn u128_of(rng: &mut SeededRandom) -> u128 {
        (u128::from(rng.u64()) << 64) | u128::from(rng.u64())
    }

    fn random_words(rng: &mut SeededRandom, n: usize) -> Vec<u64> {
        let mut w: Vec<u64> = (0..n.div_ceil(64)).map(|_| rng.u64()).collect();
        if let Some(last) = w.last_mut()
            && !n.is_multiple_of(64)
        {
            *last &= (1u64 << (n % 64)) - 1;
        }
        w
    }

    /// `a mod b` for binary polynomials (`b != 0`).
    fn poly_mod(mut a: u128, b: u128) -> u128 {
        let db = 127 - b.leading_zeros();
        while a != 0 && 127 - a.leading_zeros() >= db {
            a ^= b << (127 - a.leading_zeros() - db);
        }
        a
    }

    /// The product of the pclmul path (the portable one when the CPU lacks PCLMULQDQ).
    fn mul_fast(a: u128, b: u128) -> u128 {
        #[cfg(target_arch = "x86_64")]
        if has_pclmul() {
            // SAFETY: PCLMULQDQ is supported (checked); SSE2 is the x86-64 baseline.
            return unsafe { x86::gf128_mul(a, b) };
        }
        gf128_mul(a, b)
    }

    /// The four hash implementations: (portable, pclmul) x (plain, aggregated).
    fn all_hashes(words: &[u64], len: u64, r: u128) -> Vec<u128> {
        let mut v = vec![
            poly_plain_portable(words, len, r),
            poly_aggregated_portable(words, len, r),
        ];
        #[cfg(target_arch = "x86_64")]
        if has_pclmul() {
            // SAFETY: PCLMULQDQ is supported (checked); SSE2 is the x86-64 baseline.
            unsafe {
                v.push(x86::poly_plain(words, len, r));
                v.push(x86::poly_aggregated(words, len, r));
            }
        }
        v
    }

    #[test]
    fn reduction_matches_bitwise_long_division() {
        // Reduce the 256-bit product one bit at a time, from the top: x^k = x^(k - 128) * x^128
        // and x^128 = x^7 + x^2 + x + 1 (the 0x87 of the low coefficients).
        let slow = |mut hi: u128, mut lo: u128| {
            for k in (128..256).rev() {
                if (hi >> (k - 128)) & 1 == 1 {
                    hi ^= 1 << (k - 128);
                    let shifted = 0x87u128 << (k - 128);
                    lo ^= shifted;
                    if k - 128 > 120 {
                        hi ^= 0x87u128 >> (256 - k);
                    }
                }
            }
            assert_eq!(hi, 0);
            lo
        };
        let mut rng = SeededRandom::from_u64(11);
        for _ in 0..500 {
            let (hi, lo) = (u128_of(&mut rng), u128_of(&mut rng));
            assert_eq!(reduce(hi, lo), slow(hi, lo));
        }
        assert_eq!(reduce(u128::MAX, 0), slow(u128::MAX, 0));
    }

    #[test]
    fn field_product_is_a_field_product() {
        let mut rng = SeededRandom::from_u64(1);
        for _ in 0..200 {
            let (a, b, c) = (u128_of(&mut rng), u128_of(&mut rng), u128_of(&mut rng));
            assert_eq!(gf128_mul(a, 1), a);
            assert_eq!(gf128_mul(a, 0), 0);
            assert_eq!(gf128_mul(a, b), gf128_mul(b, a));
            assert_eq!(gf128_mul(gf128_mul(a, b), c), gf128_mul(a, gf128_mul(b, c)));
            assert_eq!(gf128_mul(a, b ^ c), gf128_mul(a, b) ^ gf128_mul(a, c));
            assert_eq!(mul_fast(a, b), gf128_mul(a, b), "pclmul != portable");
            #[cfg(target_arch = "x86_64")]
            if has_pclmul() {
                // The unreduced 256-bit products agree too.
                // SAFETY: PCLMULQDQ is supported (checked); SSE2 is the x86-64 baseline.
                let fast = unsafe { x86::clmul(a, b) };
                assert_eq!(fast, clmul_portable(a, b), "pclmul != portable");
            }
        }
        // x * x^127 = x^128 = x^7 + x^2 + x + 1.
        assert_eq!(gf128_mul(2, 1 << 127), 0x87);
        assert_eq!(mul_fast(2, 1 << 127), 0x87);
        // x^127 * x^127 = x^254 = x^126 * (x^7 + x^2 + x + 1) = x^133 + x^128 + x^127 + x^126,
        // and x^133 = x^5 * x^128 = x^12 + x^7 + x^6 + x^5.
        let x254 = (1u128 << 12) ^ (1 << 7) ^ (1 << 6) ^ (1 << 5) ^ 0x87 ^ (1 << 127) ^ (1 << 126);
        assert_eq!(gf128_mul(1 << 127, 1 << 127), x254);
        assert_eq!(mul_fast(1 << 127, 1 << 127), x254);
        // Frobenius: a^(2^128) = a.
        for _ in 0..20 {
            let a = u128_of(&mut rng);
            let (mut x, mut y) = (a, a);
            for _ in 0..128 {
                x = gf128_mul(x, x);
                y = mul_fast(y, y);
            }
            assert_eq!((x, y), (a, a));
        }
    }

    #[test]
    fn modulus_is_irreducible() {
        // Rabin's test for degree 128 = 2^7: P is irreducible iff x^(2^128) = x mod P and
        // gcd(x^(2^64) - x, P) = 1.
        let mut x = 2u128;
        for i in 1..=128 {
            x = gf128_mul(x, x);
            if i == 64 {
                // g = x^(2^64) + x; gcd(P, g) with P = x^128 + 0x87 reduced mod g first.
                let g = x ^ 2;
                assert_ne!(g, 0);
                let x127 = poly_mod(1 << 127, g);
                let mut a = poly_mod(x127 << 1, g) ^ poly_mod(0x87, g);
                let mut b = g;
                while a != 0 {
                    (a, b) = (poly_mod(b, a), a);
                }
                assert_eq!(b, 1, "gcd(x^(2^64) - x, P) != 1");
            }
        }
        assert_eq!(x, 2);
    }

    #[test]
    fn aggregated_horner_equals_plain_horner() {
        let mut rng = SeededRandom::from_u64(4);
        // Every length up to 2200 bits (all residues mod 128 bits, with zero and one full step of
        // eight blocks and every remainder of 0..8 blocks), then random ones.
        let lengths: Vec<usize> = (0..=2200)
            .chain((0..100).map(|_| rng.below(40_000) as usize))
            .collect();
        for n in lengths {
            let words = random_words(&mut rng, n);
            let r = u128_of(&mut rng);
            let h = all_hashes(&words, n as u64, r);
            assert!(h.iter().all(|&x| x == h[0]), "length {n}: {h:x?}");
            assert_eq!(poly_hash(&words, n as u64, r, false), h[0]);
        }
        // Edge seeds.
        let words = random_words(&mut rng, 1000);
        for r in [0, 1, u128::MAX, 1 << 127] {
            let h = all_hashes(&words, 1000, r);
            assert!(h.iter().all(|&x| x == h[0]));
        }
        // The hash is the polynomial sum_i m_i r^(L + 1 - i), length block last.
        let r = u128_of(&mut rng);
        let words = random_words(&mut rng, 300);
        let w = &words[..];
        let m = [block_at(w, 0), block_at(w, 1), block_at(w, 2), 300];
        let mut expect = 0;
        let mut p = r;
        for &mi in m.iter().rev() {
            expect ^= gf128_mul(mi, p);
            p = gf128_mul(p, r);
        }
        assert_eq!(all_hashes(w, 300, r)[0], expect);
    }
}
