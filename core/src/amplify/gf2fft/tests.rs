use super::field::{cantor_basis, gf_mul_portable};
use super::*;
use crate::rng::SeededRandom;

fn mul_bitwise(a: &[u64], a_bits: usize, b: &[u64], b_bits: usize) -> Vec<u64> {
    let bit = |w: &[u64], i: usize| (w[i / 64] >> (i % 64)) & 1;
    let mut out = vec![0u64; (a_bits + b_bits).div_ceil(64)];
    for i in 0..a_bits {
        if bit(a, i) == 1 {
            for j in 0..b_bits {
                out[(i + j) / 64] ^= bit(b, j) << ((i + j) % 64);
            }
        }
    }
    out
}

/// Bits `start .. start + len` of `words`, as words.
fn bits_of(words: &[u64], start: usize, len: usize) -> Vec<u64> {
    let mut out = vec![0u64; len.div_ceil(64)];
    for i in 0..len {
        let p = start + i;
        let bit = words.get(p / 64).map_or(0, |w| (w >> (p % 64)) & 1);
        out[i / 64] |= bit << (i % 64);
    }
    out
}

fn supported() -> Vec<ClmulBackend> {
    ClmulBackend::ALL
        .into_iter()
        .filter(|b| b.is_supported())
        .collect()
}

fn random_words(rng: &mut SeededRandom, n: usize) -> Vec<u64> {
    (0..n).map(|_| rng.u64()).collect()
}

/// Runs `f` with the kernels of `backend`.
fn with_kernels(backend: ClmulBackend, data: &mut [u64], tw: &Twiddles, b: usize, inv: bool) {
    fn run<K: Kernels>(d: &mut [u64], tw: &Twiddles, b: usize, inv: bool) {
        if inv {
            inverse::<K>(d, None, tw, b)
        } else {
            forward::<K>(d, None, tw, b)
        }
    }
    match backend {
        #[cfg(target_arch = "x86_64")]
        ClmulBackend::Vpclmul => run::<kernels::Vpclmul>(data, tw, b, inv),
        #[cfg(target_arch = "x86_64")]
        ClmulBackend::Pclmul => run::<kernels::Pclmul>(data, tw, b, inv),
        _ => run::<Portable>(data, tw, b, inv),
    }
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
fn twiddles_are_the_subset_sums_of_the_basis() {
    let v = cantor_basis();
    for k in [1u32, 5, 13, 14, 24] {
        let tw = Twiddles::new(k);
        let mut rng = SeededRandom::from_u64(u64::from(k));
        for _ in 0..100 {
            let b = (rng.u64() as usize) & ((1usize << (k - 1)) - 1);
            let expect = (0..k - 1)
                .filter(|t| b >> t & 1 == 1)
                .fold(0, |acc, t| acc ^ v[t as usize + 1]);
            assert_eq!(tw.at(b), expect, "k={k} b={b}");
        }
    }
}

#[test]
fn transform_evaluates_the_novel_basis_polynomial() {
    // D(x) = sum d_j X_j(x) evaluated directly at omega_l, for the leaf alone (8, 64) and
    // group passes above leaves (128: one level, 2048: four plus one).
    let v = cantor_basis();
    let s = |i: u32, x: u64| (0..i).fold(x, |y, _| gf_mul_portable(y, y) ^ y);
    let mut rng = SeededRandom::from_u64(22);
    for k in [3u32, 6, 7, 11] {
        let n = 1usize << k;
        let d = random_words(&mut rng, n);
        let tw = Twiddles::new(k);
        let mut got = d.clone();
        forward::<Portable>(&mut got, None, &tw, 0);
        for (l, &g) in got.iter().enumerate().step_by(n / 8 + 1) {
            let w = (0..k)
                .filter(|t| l >> t & 1 == 1)
                .fold(0, |a, t| a ^ v[t as usize]);
            let expect = d.iter().enumerate().fold(0u64, |acc, (j, &dj)| {
                let xj = (0..k)
                    .filter(|i| j >> i & 1 == 1)
                    .fold(1u64, |p, i| gf_mul_portable(p, s(i, w)));
                acc ^ gf_mul_portable(dj, xj)
            });
            assert_eq!(g, expect, "k={k} l={l}");
        }
        let mut back = got.clone();
        inverse::<Portable>(&mut back, None, &tw, 0);
        assert_eq!(back, d, "k={k}");
    }
}

#[test]
fn every_backend_transforms_blocks_like_the_portable_one() {
    // Blocks with nonzero indices (inside a larger transform), through leaves, every group
    // depth and the parallel column passes; then back.
    let mut rng = SeededRandom::from_u64(26);
    let big = 22u32;
    let tw = Twiddles::new(big);
    for l in [6u32, 7, 8, 9, 10, 12, 15, 16] {
        let d = random_words(&mut rng, 1 << l);
        let b = (rng.u64() as usize) & ((1usize << (big - l)) - 1);
        let mut expect = d.clone();
        forward::<Portable>(&mut expect, None, &tw, b);
        for be in supported() {
            let mut got = d.clone();
            with_kernels(be, &mut got, &tw, b, false);
            assert_eq!(got, expect, "{be:?} l={l} b={b}");
            with_kernels(be, &mut got, &tw, b, true);
            assert_eq!(got, d, "{be:?} l={l} b={b} inverse");
        }
    }
}

#[test]
fn basis_conversion_round_trips_and_matches_x2_plus_x() {
    // x^2 = X_2 + X_1 (s_1 = x^2 + x, X_1 = x): coefficients [0, 1, 1, 0].
    let mut f = vec![0u64, 0, 7, 0];
    basis::to_novel(&mut f);
    assert_eq!(f, vec![0, 7, 7, 0]);
    let mut rng = SeededRandom::from_u64(23);
    for log in [1, 3, 6, 11, 16] {
        let orig = random_words(&mut rng, 1 << log);
        let mut f = orig.clone();
        basis::to_novel(&mut f);
        // The same XORs on 32-bit coefficients give the low halves.
        let mut low: Vec<u32> = orig.iter().map(|&w| w as u32).collect();
        basis::to_novel(&mut low);
        assert!(
            f.iter().zip(&low).all(|(a, b)| *a as u32 == *b),
            "log={log}"
        );
        basis::from_novel(&mut f);
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
        (40_000, 9_000),
    ] {
        // Words past the bit counts carry garbage that must be ignored.
        let a = random_words(&mut rng, ab.div_ceil(64) + 1);
        let b = random_words(&mut rng, bb.div_ceil(64) + 1);
        let expect = mul_bitwise(&a, ab, &b, bb);
        let start = (rng.u64() as usize) % (ab + bb);
        let len = 1 + (rng.u64() as usize) % (ab + bb - start);
        for be in supported() {
            let got = product_bits(be, (&a, ab), (&b, bb), 0, ab + bb);
            assert_eq!(got.as_slice(), expect.as_slice(), "{be:?} {ab}x{bb}");
            let window = product_bits(be, (&a, ab), (&b, bb), start, len);
            assert_eq!(
                window.as_slice(),
                bits_of(&expect, start, len).as_slice(),
                "{be:?} {ab}x{bb} bits {start}+{len}"
            );
        }
    }
}

#[test]
fn large_products_agree_across_backends() {
    // 2^18-element transforms: parallel recursion and column passes, vector kernels, one
    // operand with a zero top (converted at 2^17 and copied).
    let mut rng = SeededRandom::from_u64(25);
    let (ab, bb) = (5_000_000, 2_000_000);
    let a = random_words(&mut rng, ab / 64 + 1);
    let b = random_words(&mut rng, bb / 64 + 1);
    let expect = product_bits(
        ClmulBackend::Portable,
        (&a, ab),
        (&b, bb),
        1_999_999,
        3_000_001,
    );
    for be in supported() {
        let got = product_bits(be, (&a, ab), (&b, bb), 1_999_999, 3_000_001);
        assert!(got == expect, "{be:?}");
    }
}
