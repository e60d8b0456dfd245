//! Cascade reconciliation (both sides, in process, through the wire encoding) on 2^14-bit
//! blocks, and the confirmation tag on 2^14- and 2^26-bit keys. Throughput is in raw key bits.
use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use qkd_core::confirm::{self, HashSeed};
use qkd_core::reconcile::cascade::{Alice, Bob, Params, Plan, Variant};
use qkd_core::reconcile::loopback::LoopbackLink;
use qkd_core::reconcile::testkit::{error_count, noisy_pair};

const BITS: usize = 1 << 14;
const PAIRS: usize = 64;

fn cascade(c: &mut Criterion) {
    let mut g = c.benchmark_group("reconcile_2e14");
    g.throughput(Throughput::Elements(BITS as u64));
    g.sample_size(20);
    for (name, qber) in [
        ("yanetal", 0.02),
        ("yanetal-d", 0.02),
        ("yanetal", 0.05),
        ("option8", 0.02),
        ("option8-d", 0.02),
        ("option8-x", 0.02),
    ] {
        let Some(variant) = Variant::by_name(name) else {
            continue;
        };
        let plan: Arc<Plan> = Plan::new(Params {
            variant,
            n: BITS as u32,
            qber,
            seed: [7; 32],
        })
        .expect("valid parameters");
        let pairs: Vec<_> = (0..PAIRS)
            .map(|i| noisy_pair(BITS, error_count(BITS, qber), i as u64))
            .collect();
        let mut i = 0;
        g.bench_function(BenchmarkId::new(name, qber), |b| {
            b.iter(|| {
                let (a, k) = &pairs[i % PAIRS];
                i += 1;
                let mut alice = Alice::with_plan(a.clone(), plan.clone());
                let mut bob = Bob::new(plan.clone(), k.clone()).expect("same length");
                black_box(LoopbackLink::run(&mut alice, &mut bob).expect("loopback run"))
            })
        });
    }
    g.finish();
}

fn confirmation(c: &mut Criterion) {
    let mut g = c.benchmark_group("confirm");
    let seed = HashSeed {
        r: 0x1234_5678_9abc_def1_0fed_cba9_8765_4321,
        a: 0x0fed_cba9_8765_4321_1234_5678_9abc_def1,
    };
    for (name, bits) in [("tag_2e14", BITS), ("tag_2e26", 1 << 26)] {
        let (key, _) = noisy_pair(bits, 0, 1);
        let t = confirm::tag_bits_for(1e-15, bits).expect("eps_cor in range");
        g.throughput(Throughput::Elements(bits as u64));
        g.bench_function(name, |b| b.iter(|| confirm::tag(black_box(&key), &seed, t)));
    }
    g.finish();
}

criterion_group!(benches, cascade, confirmation);
criterion_main!(benches);
