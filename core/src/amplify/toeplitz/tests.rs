use super::*;
use crate::amplify::{ClmulBackend, NttBackend};

/// `y[i] = XOR_j s[i - j + n - 1] & x[j]`, bit by bit, straight from DESIGN §4.
fn by_definition(x: &BitBlock, s: &BitBlock, m: usize) -> BitBlock {
    let n = x.len();
    let mut y = BitBlock::zeros(m);
    for i in 0..m {
        let mut acc = false;
        for j in 0..n {
            acc ^= s.get(i + n - 1 - j).unwrap() & x.get(j).unwrap();
        }
        y.set(i, acc).unwrap();
    }
    y
}

fn random_block(rng: &mut SeededRandom, len: usize) -> BitBlock {
    let words = (0..len.div_ceil(64)).map(|_| rng.u64()).collect();
    BitBlock::from_words(words, len).unwrap()
}

fn all_methods() -> Vec<ToeplitzMethod> {
    let mut v = vec![
        ToeplitzMethod::Auto,
        ToeplitzMethod::Reference,
        ToeplitzMethod::Ntt,
        ToeplitzMethod::Clmul,
        ToeplitzMethod::Fft,
    ];
    v.extend(
        NttBackend::ALL
            .into_iter()
            .filter(|b| b.is_supported())
            .map(ToeplitzMethod::NttWith),
    );
    v.extend(
        ClmulBackend::ALL
            .into_iter()
            .filter(|b| b.is_supported())
            .map(ToeplitzMethod::ClmulWith),
    );
    v.extend(
        ClmulBackend::ALL
            .into_iter()
            .filter(|b| b.is_supported())
            .map(ToeplitzMethod::FftWith),
    );
    v
}

#[test]
fn four_by_two_example_worked_by_hand() {
    // n = 4, m = 2, seed s0..s4 = 1 0 1 1 0, x = 0 1 1 0.
    // T[i][j] = s[i - j + 3]:
    //   row 0: s3 s2 s1 s0 = 1 1 0 1  -> 1*0 + 1*1 + 0*1 + 1*0 = 1 -> y0 = 1
    //   row 1: s4 s3 s2 s1 = 0 1 1 0  -> 0*0 + 1*1 + 1*1 + 0*0 = 2 -> y1 = 0
    // As a product: s(X) x(X) = (1 + X^2 + X^3)(X + X^2) = X + X^2 + X^3 + X^4 + X^4 + X^5
    //   = X + X^2 + X^3 + X^5; coefficients n-1 = 3 and 4 are 1 and 0: the same y.
    let s = BitBlock::from_bools(&[true, false, true, true, false]);
    let x = BitBlock::from_bools(&[false, true, true, false]);
    for method in all_methods() {
        let y = toeplitz_hash_with(method, &x, &s, 2).unwrap();
        assert_eq!(y.to_bools(), vec![true, false], "{method:?}");
    }
    assert_eq!(by_definition(&x, &s, 2).to_bools(), vec![true, false]);
}

#[test]
fn bytes_follow_the_design_bit_order() {
    // Same example through bytes: seed byte 0b0000_1101 (bits 0,2,3), input 0b0000_0110.
    let s = BitBlock::from_bytes(&[0b0000_1101], 5).unwrap();
    let x = BitBlock::from_bytes(&[0b0000_0110], 4).unwrap();
    let y = toeplitz_hash(&x, &s, 2).unwrap();
    assert_eq!(y.to_bytes().as_slice(), &[0b01]);
}

#[test]
fn reference_matches_definition_on_small_random_inputs() {
    let mut rng = SeededRandom::from_u64(3);
    for &(n, m) in &[
        (2, 1),
        (5, 3),
        (64, 1),
        (65, 64),
        (130, 7),
        (300, 299),
        (1000, 333),
    ] {
        let x = random_block(&mut rng, n);
        let s = random_block(&mut rng, n + m - 1);
        let expect = by_definition(&x, &s, m);
        assert_eq!(
            toeplitz_reference(&x, &s, m).unwrap(),
            expect,
            "n={n} m={m}"
        );
        for method in all_methods() {
            assert_eq!(
                toeplitz_hash_with(method, &x, &s, m).unwrap(),
                expect,
                "{method:?} n={n} m={m}"
            );
        }
    }
}

#[test]
fn ntt_matches_reference_on_many_shapes() {
    // Shapes that hit one block, several input and output blocks, partial blocks, word
    // boundaries and the smallest transform.
    let mut rng = SeededRandom::from_u64(4);
    for &(n, m) in &[
        (1000, 500),
        (2047, 2046),
        (2048, 1),
        (4099, 1500),
        (5000, 4999),
        (20_000, 3),
        (33_333, 11_111),
    ] {
        let x = random_block(&mut rng, n);
        let s = random_block(&mut rng, n + m - 1);
        let expect = toeplitz_reference(&x, &s, m).unwrap();
        for method in all_methods() {
            assert_eq!(
                toeplitz_hash_with(method, &x, &s, m).unwrap(),
                expect,
                "{method:?} n={n} m={m}"
            );
        }
    }
}

#[test]
fn ntt_matches_reference_at_1e5_bits() {
    let mut rng = SeededRandom::from_u64(5);
    let (n, m) = (100_000, 50_000);
    let x = random_block(&mut rng, n);
    let s = random_block(&mut rng, n + m - 1);
    let expect = toeplitz_reference(&x, &s, m).unwrap();
    assert_eq!(toeplitz_hash(&x, &s, m).unwrap(), expect);
}

#[test]
fn multi_block_tiling_matches_reference() {
    // Force many input and output blocks through the smallest transform (block L = 2048).
    let mut rng = SeededRandom::from_u64(6);
    let (n, m) = (9_000, 5_000);
    let x = random_block(&mut rng, n);
    let s = random_block(&mut rng, n + m - 1);
    let expect = toeplitz_reference(&x, &s, m).unwrap();
    let tiling = Tiling {
        log_len: ntt::MIN_LOG_LEN,
        input_blocks: n.div_ceil(2048),
        output_blocks: m.div_ceil(2048),
    };
    let got = ntt_hash_tiled(NttBackend::best(), &x, &s, m, tiling);
    assert_eq!(got, expect);
}

#[test]
fn longer_seed_uses_its_prefix() {
    let mut rng = SeededRandom::from_u64(7);
    let (n, m) = (3000, 1000);
    let x = random_block(&mut rng, n);
    let s = random_block(&mut rng, n + m + 500);
    let prefix = s.slice(0..n + m - 1).unwrap();
    let expect = toeplitz_reference(&x, &prefix, m).unwrap();
    for method in all_methods() {
        assert_eq!(
            toeplitz_hash_with(method, &x, &s, m).unwrap(),
            expect,
            "{method:?}"
        );
    }
}

#[test]
fn linear_in_the_input() {
    // T(x1 ^ x2) = T x1 ^ T x2 for a fixed seed.
    let mut rng = SeededRandom::from_u64(8);
    let (n, m) = (50_000, 20_000);
    let s = random_block(&mut rng, n + m - 1);
    let (a, b) = (random_block(&mut rng, n), random_block(&mut rng, n));
    let ya = toeplitz_hash(&a, &s, m).unwrap();
    let yb = toeplitz_hash(&b, &s, m).unwrap();
    let yab = toeplitz_hash(&a.xor(&b).unwrap(), &s, m).unwrap();
    assert_eq!(yab, ya.xor(&yb).unwrap());
}

#[test]
fn bad_lengths_are_errors() {
    let x = BitBlock::zeros(100);
    let s = BitBlock::zeros(149);
    assert_eq!(toeplitz_hash(&x, &s, 0), Err(ToeplitzError::EmptyOutput));
    assert_eq!(
        toeplitz_hash(&x, &BitBlock::zeros(300), 100),
        Err(ToeplitzError::OutputNotShorter {
            output_bits: 100,
            input_bits: 100
        })
    );
    let err = toeplitz_hash(&x, &s, 51).unwrap_err();
    assert_eq!(
        err,
        ToeplitzError::SeedTooShort {
            seed_bits: 149,
            needed: 150,
            input_bits: 100,
            output_bits: 51
        }
    );
    assert!(err.to_string().contains("150 are needed"));
    assert!(toeplitz_hash(&x, &s, 50).is_ok());
    assert_eq!(seed_bits_needed(100, 50), 149);
    assert!(matches!(
        toeplitz_hash(&BitBlock::zeros(1), &BitBlock::zeros(10), 1),
        Err(ToeplitzError::OutputNotShorter { .. })
    ));
}

#[test]
fn tiling_choice_is_sane() {
    for &(n, m) in &[
        (1000, 1),
        (1_000_000, 500_000),
        (100_000_000, 50_000_000),
        (NTT_MAX_INPUT_BITS, NTT_MAX_INPUT_BITS - 1),
    ] {
        let t = choose_tiling(n, m);
        let l = t.block();
        assert!(t.input_blocks * l >= n && t.output_blocks * l >= m);
        assert!((ntt::MIN_LOG_LEN..=ntt::MAX_LOG_LEN).contains(&t.log_len));
    }
    // 10^8 -> 5 * 10^7 stays within the buffer budget with several blocks.
    let t = choose_tiling(100_000_000, 50_000_000);
    assert!((t.input_blocks + t.output_blocks + 1) << (t.log_len + 2) <= MEMORY_BUDGET_BYTES);
    assert!(t.input_blocks >= 2);
}

#[test]
fn method_names_round_trip() {
    for m in all_methods() {
        if ![
            ToeplitzMethod::Ntt,
            ToeplitzMethod::Clmul,
            ToeplitzMethod::Fft,
        ]
        .contains(&m)
        {
            assert_eq!(ToeplitzMethod::from_name(&m.name()), Some(m));
        }
    }
    assert_eq!(ToeplitzMethod::from_name("ntt"), Some(ToeplitzMethod::Ntt));
    assert_eq!(
        ToeplitzMethod::from_name("clmul"),
        Some(ToeplitzMethod::Clmul)
    );
    assert_eq!(ToeplitzMethod::from_name("fft"), Some(ToeplitzMethod::Fft));
    assert_eq!(ToeplitzMethod::from_name("fast"), None);
}

#[test]
fn bench_helper_reports_consistent_numbers() {
    let r = bench_toeplitz(10_000, 0.5, ToeplitzMethod::Auto, 3).unwrap();
    assert_eq!((r.block_bits, r.output_bits, r.repeats), (10_000, 5_000, 3));
    assert_eq!(r.method, ToeplitzMethod::Auto.resolve(10_000, 5_000).name());
    assert_eq!(r.threads, rayon::current_num_threads());
    assert!(r.min_seconds > 0.0 && r.min_seconds <= r.seconds);
    assert!((r.bits_per_second - 10_000.0 / r.seconds).abs() < 1e-6 * r.bits_per_second);
    assert!(bench_toeplitz(10_000, 1.0, ToeplitzMethod::Ntt, 0).is_err());
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains("\"bits_per_second\"") && json.contains("\"threads\""));
}

#[test]
fn clmul_block_tilings_match_reference() {
    // Forced block sizes: one word (many blocks in both directions), odd sizes, sizes that
    // halve through Karatsuba, and every backend including the portable multiply.
    let mut rng = SeededRandom::from_u64(9);
    let (n, m) = (9_000, 5_000);
    let x = random_block(&mut rng, n);
    let s = random_block(&mut rng, n + m - 1);
    let expect = toeplitz_reference(&x, &s, m).unwrap();
    for backend in ClmulBackend::ALL {
        for &(k, base) in &[
            (1, 1),
            (3, 3),
            (17, 17),
            (24, 3),
            (40, 5),
            (64, 16),
            (141, 32),
        ] {
            let got = toeplitz_hash_clmul_tuned(backend, k, base, &x, &s, m).unwrap();
            assert_eq!(got, expect, "{backend:?} k={k} base={base}");
        }
    }
}

#[test]
fn clmul_matches_ntt_at_3e5_bits_with_parallel_karatsuba() {
    // Large enough for the rayon split inside Karatsuba (blocks of >= 2048 words).
    let mut rng = SeededRandom::from_u64(10);
    for &(n, m) in &[(300_000, 150_000), (262_144, 131_072), (200_001, 3)] {
        let x = random_block(&mut rng, n);
        let s = random_block(&mut rng, n + m - 1);
        let ntt = toeplitz_hash_with(ToeplitzMethod::Ntt, &x, &s, m).unwrap();
        let fast = toeplitz_hash_with(ToeplitzMethod::Clmul, &x, &s, m).unwrap();
        assert_eq!(fast, ntt, "n={n} m={m}");
        let fft = toeplitz_hash_with(ToeplitzMethod::Fft, &x, &s, m).unwrap();
        assert_eq!(fft, ntt, "fft n={n} m={m}");
    }
}

#[test]
fn auto_picks_karatsuba_then_fft() {
    assert_eq!(
        ToeplitzMethod::Auto.resolve(AUTO_FFT_MIN_BITS - 1, 1),
        ToeplitzMethod::Clmul
    );
    assert_eq!(
        ToeplitzMethod::Auto.resolve(AUTO_FFT_MIN_BITS, 1),
        ToeplitzMethod::Fft
    );
    assert_eq!(
        ToeplitzMethod::Ntt.resolve(100_000_000, 1),
        ToeplitzMethod::Ntt
    );
}

#[test]
fn the_ntt_refuses_inputs_past_its_exactness_bound() {
    let n = NTT_MAX_INPUT_BITS + 1;
    let input = BitBlock::zeros(n);
    let seed = BitBlock::zeros(seed_bits_needed(n, 1));
    let err = toeplitz_hash_with(ToeplitzMethod::Ntt, &input, &seed, 1).unwrap_err();
    assert!(matches!(
        err,
        ToeplitzError::InputTooLongForMethod { input_bits, max, .. }
            if input_bits == n && max == NTT_MAX_INPUT_BITS
    ));
    // The tuning entry point as well.
    let err = toeplitz_hash_ntt_log_len(NttBackend::best(), 20, &input, &seed, 1).unwrap_err();
    assert!(matches!(err, ToeplitzError::InputTooLongForMethod { .. }));
    let too_long = BitBlock::zeros(MAX_INPUT_BITS + 1);
    let err = toeplitz_hash(&too_long, &seed, 1).unwrap_err();
    assert!(matches!(err, ToeplitzError::InputTooLong { .. }));
}
