//! Entropy checks on a 10^8-bit key (12.5 MB): the full `assess` verdict, the byte histogram
//! alone, and the streaming SP 800-90B health tests.
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use qkd_core::entropy::{HealthConfig, HealthTests, assess, byte_histogram};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::hint::black_box;

const BYTES: usize = 12_500_000;

fn entropy(c: &mut Criterion) {
    let mut data = vec![0u8; BYTES];
    ChaCha20Rng::seed_from_u64(7).fill_bytes(&mut data);
    let mut g = c.benchmark_group("entropy_1e8_bits");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(BYTES as u64));
    g.bench_function("assess", |b| b.iter(|| assess(black_box(&data))));
    g.bench_function("histogram", |b| b.iter(|| byte_histogram(black_box(&data))));
    g.bench_function("health_tests_feed", |b| {
        b.iter(|| {
            let mut t = HealthTests::new(HealthConfig::default().with_alpha(1e-30)).expect("valid");
            t.feed(black_box(&data)).is_ok()
        })
    });
    g.finish();
}

criterion_group!(benches, entropy);
criterion_main!(benches);
