//! Simulated link and QBER estimation: raw-key pair generation per error model (10^8 bits) and
//! the estimation steps (sampling positions, the exact hypergeometric bound).
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use qkd_core::estimate::{self, Bound};
use qkd_core::sim::{ErrorModel, simulate};
use std::hint::black_box;

const SIM_BITS: usize = 100_000_000;

fn sim(c: &mut Criterion) {
    let mut g = c.benchmark_group("sim_1e8");
    g.sample_size(10);
    g.throughput(Throughput::Elements(SIM_BITS as u64));
    for model in [
        ErrorModel::IidExact,
        ErrorModel::Bernoulli,
        ErrorModel::burst(),
    ] {
        g.bench_function(BenchmarkId::new(model.name(), "q=0.11"), |bn| {
            bn.iter(|| simulate(black_box(SIM_BITS), 0.11, model, 1).map(|p| p.report.errors))
        });
    }
    g.finish();
}

fn est(c: &mut Criterion) {
    let mut g = c.benchmark_group("estimate");
    g.bench_function("sample_positions n=1e6 k=1e5", |bn| {
        bn.iter(|| estimate::sample_positions(black_box(1_000_000), 100_000, &[7; 32]))
    });
    for (n, k, x) in [
        (1_000_000u64, 100_000u64, 5_000u64),
        (100_000_000, 1_000_000, 50_000),
    ] {
        for bound in [Bound::Serfling, Bound::Hypergeometric] {
            g.bench_function(
                BenchmarkId::new(format!("{bound:?}"), format!("n={n} k={k}")),
                |bn| bn.iter(|| estimate::qber_upper_bound(black_box(n), k, x, 1e-10, bound)),
            );
        }
    }
    g.finish();
}

criterion_group!(benches, sim, est);
criterion_main!(benches);
