//! Toeplitz privacy amplification on 10^6-, 10^7- and 10^8-bit blocks (m = n/2), for
//! `auto` and every exact method this CPU supports (at 10^8 bits the FFT backends only),
//! plus the finite-key length. Threads: `RAYON_NUM_THREADS` (default: all cores).
//!
//! Other sizes and slow methods: the plain timing mode,
//! `QKD_AMPLIFY_PLAIN=100000000 cargo bench -p qkd-benches --bench amplify`, prints one
//! JSON line per method from `qkd_core::amplify::bench_toeplitz` (a first hash, then
//! `QKD_AMPLIFY_REPEAT` (default 3) timed ones; peak RSS included). `QKD_AMPLIFY_LOG_LEN=24,25,26` adds runs with forced transform lengths;
//! `QKD_AMPLIFY_CLMUL=K:B,K:B` adds carry-less runs with forced block (`K`) and base-case
//! (`B`) sizes in words; `QKD_AMPLIFY_METHODS=ntt-avx512,clmul-vpclmul` restricts the
//! methods (both modes).
use criterion::{BenchmarkId, Criterion, Throughput};
use qkd_core::BitBlock;
use qkd_core::amplify::{
    Bb84Tlgr2012, ClmulBackend, FiniteKeyInput, NttBackend, SecretLengthModel, ToeplitzMethod,
    bench_toeplitz, seed_bits_needed, toeplitz_hash_clmul_tuned, toeplitz_hash_ntt_log_len,
    toeplitz_hash_with,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::hint::black_box;
use std::time::Instant;

fn block(rng: &mut ChaCha20Rng, len: usize) -> BitBlock {
    let words = (0..len.div_ceil(64)).map(|_| rng.next_u64()).collect();
    BitBlock::from_words(words, len).expect("enough words")
}

/// Every supported NTT and carry-less backend (the portable carry-less multiply only on
/// request), or those named in `QKD_AMPLIFY_METHODS` (e.g. `ntt-avx512,clmul-vpclmul`).
fn methods() -> Vec<ToeplitzMethod> {
    let ntt = NttBackend::ALL
        .into_iter()
        .filter(|b| b.is_supported())
        .map(ToeplitzMethod::NttWith);
    let clmul = ClmulBackend::ALL
        .into_iter()
        .filter(|b| b.is_supported())
        .map(ToeplitzMethod::ClmulWith);
    let fft = ClmulBackend::ALL
        .into_iter()
        .filter(|b| b.is_supported())
        .map(ToeplitzMethod::FftWith);
    let all = ntt.chain(clmul).chain(fft);
    match std::env::var("QKD_AMPLIFY_METHODS") {
        Ok(list) => all
            .filter(|m| list.split(',').any(|n| n.trim() == m.name()))
            .collect(),
        Err(_) => all
            .filter(|m| {
                *m != ToeplitzMethod::ClmulWith(ClmulBackend::Portable)
                    && *m != ToeplitzMethod::FftWith(ClmulBackend::Portable)
            })
            .collect(),
    }
}

fn toeplitz(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    for (label, n) in [
        ("1e6", 1_000_000usize),
        ("1e7", 10_000_000),
        ("1e8", 100_000_000),
    ] {
        let m = n / 2;
        let x = block(&mut rng, n);
        let s = block(&mut rng, seed_bits_needed(n, m));
        let mut g = c.benchmark_group(format!("toeplitz_{label}"));
        g.throughput(Throughput::Elements(n as u64));
        g.sample_size(10);
        // At 10^8 bits only the methods that are fast there (Karatsuba and the NTT take
        // seconds to minutes per hash), plus `auto`.
        let at_size: Vec<ToeplitzMethod> = if n >= 100_000_000 {
            g.measurement_time(std::time::Duration::from_secs(10));
            std::iter::once(ToeplitzMethod::Auto)
                .chain(
                    methods()
                        .into_iter()
                        .filter(|m| m.name().starts_with("fft")),
                )
                .collect()
        } else {
            std::iter::once(ToeplitzMethod::Auto)
                .chain(methods())
                .collect()
        };
        for method in at_size {
            g.bench_function(BenchmarkId::from_parameter(method.name()), |bn| {
                bn.iter(|| toeplitz_hash_with(method, black_box(&x), black_box(&s), m))
            });
        }
        g.finish();
    }
}

fn finite_key(c: &mut Criterion) {
    let input = FiniteKeyInput {
        key_bits: 1_000_000,
        sample_bits: 100_000,
        qber: 0.02,
        leak_ec_bits: 150_000,
        confirm_tag_bits: 51,
        length_choices: 41,
        eps_sec: 1e-10,
        eps_cor: 1e-15,
    };
    c.bench_function("finite_key_bb84", |bn| {
        bn.iter(|| Bb84Tlgr2012::default().secret_length(black_box(&input)))
    });
}

/// Hashes timed after the first in the plain mode: `QKD_AMPLIFY_REPEAT` (default 3).
fn repeats() -> usize {
    std::env::var("QKD_AMPLIFY_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

fn plain(n: usize) {
    for method in methods() {
        match bench_toeplitz(n, 0.5, method, repeats()) {
            Ok(r) => println!("{}", serde_json::to_string(&r).unwrap_or_default()),
            Err(e) => println!("{{\"error\": \"{e}\"}}"),
        }
    }
    if let Ok(list) = std::env::var("QKD_AMPLIFY_LOG_LEN") {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let m = n / 2;
        let x = block(&mut rng, n);
        let s = block(&mut rng, seed_bits_needed(n, m));
        for log_len in list.split(',').filter_map(|v| v.trim().parse::<u32>().ok()) {
            let t0 = Instant::now();
            let out = toeplitz_hash_ntt_log_len(NttBackend::best(), log_len, &x, &s, m);
            let secs = t0.elapsed().as_secs_f64();
            black_box(&out);
            println!(
                "{{\"block_bits\": {n}, \"log_len\": {log_len}, \"seconds\": {secs:.4}, \"bits_per_second\": {:.4e}}}",
                n as f64 / secs
            );
        }
    }
}

/// Forced carry-less block/base sizes from `QKD_AMPLIFY_CLMUL=K:B,...`.
fn clmul_tuning(n: usize) {
    let Ok(list) = std::env::var("QKD_AMPLIFY_CLMUL") else {
        return;
    };
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let m = n / 2;
    let x = block(&mut rng, n);
    let s = block(&mut rng, seed_bits_needed(n, m));
    for item in list.split(',') {
        let mut parts = item
            .split(':')
            .filter_map(|v| v.trim().parse::<usize>().ok());
        let (Some(k), Some(base)) = (parts.next(), parts.next()) else {
            continue;
        };
        let t0 = Instant::now();
        let out = toeplitz_hash_clmul_tuned(ClmulBackend::best(), k, base, &x, &s, m);
        let secs = t0.elapsed().as_secs_f64();
        black_box(&out);
        println!(
            "{{\"block_bits\": {n}, \"clmul_block_words\": {k}, \"base_words\": {base}, \"seconds\": {secs:.4}, \"bits_per_second\": {:.4e}}}",
            n as f64 / secs
        );
    }
}

fn main() {
    if let Some(n) = std::env::var("QKD_AMPLIFY_PLAIN")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
    {
        plain(n as usize);
        clmul_tuning(n as usize);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    toeplitz(&mut c);
    finite_key(&mut c);
    c.final_summary();
}
