//! Bit kernels on 10^6-bit blocks: XOR, Hamming distance, popcount and range parity, for every
//! backend this CPU supports.
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use qkd_core::BitBlock;
use qkd_core::bits::kernels::{Backend, Kernels};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::hint::black_box;

const BITS: usize = 1_000_000;

fn block(rng: &mut ChaCha20Rng) -> BitBlock {
    let words = (0..BITS.div_ceil(64)).map(|_| rng.next_u64()).collect();
    BitBlock::from_words(words, BITS).expect("enough words")
}

fn kernels(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let a = block(&mut rng);
    let b = block(&mut rng);
    let mut g = c.benchmark_group("bits_1e6");
    g.throughput(Throughput::Elements(BITS as u64));
    for backend in Backend::ALL {
        let Some(k) = Kernels::new(backend) else {
            continue;
        };
        let name = backend.name();
        let mut dst = a.words().to_vec();
        g.bench_function(BenchmarkId::new("xor", name), |bn| {
            bn.iter(|| k.xor_into(black_box(&mut dst), black_box(b.words())))
        });
        g.bench_function(BenchmarkId::new("hamming", name), |bn| {
            bn.iter(|| k.xor_popcount(black_box(a.words()), black_box(b.words())))
        });
        g.bench_function(BenchmarkId::new("popcount", name), |bn| {
            bn.iter(|| k.popcount(black_box(a.words())))
        });
        g.bench_function(BenchmarkId::new("xor_fold", name), |bn| {
            bn.iter(|| k.xor_fold(black_box(a.words())))
        });
    }
    // The public API on the best backend, unaligned range as Cascade asks.
    g.bench_function("BitBlock::parity(3..999_990)", |bn| {
        bn.iter(|| black_box(&a).parity(3..999_990))
    });
    g.bench_function("BitBlock::xor_assign", |bn| {
        let mut x = a.clone();
        bn.iter(|| x.xor_assign(black_box(&b)))
    });
    g.bench_function("BitBlock::hamming_distance", |bn| {
        bn.iter(|| black_box(&a).hamming_distance(black_box(&b)))
    });
    g.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
