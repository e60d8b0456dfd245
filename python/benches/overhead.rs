//! Rust side of the Python call-overhead measurement: times the core calls that
//! `qkd.cascade.reconcile`, `qkd.amplify.toeplitz` and `qkd.pipeline.process` make, on the
//! same inputs as python/benches/overhead.py, and prints one JSON line per case (median and
//! minimum of `QKD_OVERHEAD_REPS` runs, default 15).
//!
//! `cargo bench -p qkd-python --bench overhead`

use std::hint::black_box;
use std::time::Instant;

use qkd_core::BitBlock;
use qkd_core::amplify::{seed_bits_needed, toeplitz_hash};
use qkd_core::pipeline::{self, PipelineConfig};
use qkd_core::reconcile::cascade::{Alice, Bob, Params, Plan, Variant};
use qkd_core::reconcile::loopback::LoopbackLink;
use qkd_core::rng::SeededRandom;
use qkd_core::sim::{ErrorModel, simulate};

fn time(name: &str, reps: usize, mut f: impl FnMut()) {
    f(); // warm-up
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    println!(
        "{{\"side\": \"rust\", \"case\": \"{name}\", \"median_s\": {:.6}, \"min_s\": {:.6}, \"reps\": {reps}}}",
        t[reps / 2],
        t[0]
    );
}

fn random_block(seed: u64, bits: usize) -> BitBlock {
    let mut rng = SeededRandom::from_u64(seed);
    let mut bytes = vec![0u8; bits.div_ceil(8)];
    rng.bytes(&mut bytes);
    BitBlock::from_bytes(&bytes, bits).expect("buffer sized for the bits")
}

fn main() {
    let reps: usize = std::env::var("QKD_OVERHEAD_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let n = 1_000_000;
    let pair = simulate(n, 0.03, ErrorModel::IidExact, 1).expect("valid simulation");

    time("reconcile_option8_1e6_q3", reps, || {
        let params = Params {
            variant: Variant::by_name("option8").expect("built-in variant"),
            n: n as u32,
            qber: 0.03,
            seed: [0u8; 32],
        };
        let plan = Plan::new(params).expect("valid plan");
        let mut alice = Alice::with_plan(pair.alice.clone(), plan.clone());
        let mut bob = Bob::new(plan, pair.bob.clone()).expect("lengths match");
        let report = LoopbackLink::run(&mut alice, &mut bob).expect("run completes");
        assert_eq!(report.residual_errors, 0);
        black_box(bob.into_key());
    });

    let m = n / 2;
    let x = random_block(2, n);
    let s = random_block(3, seed_bits_needed(n, m));
    time("toeplitz_1e6_to_5e5", reps, || {
        black_box(toeplitz_hash(&x, &s, m).expect("valid lengths"));
    });

    let bits = 1 << 20;
    let big = simulate(bits, 0.03, ErrorModel::IidExact, 4).expect("valid simulation");
    let cfg = PipelineConfig {
        block_bits: bits,
        sample_bits: 1 << 14,
        ..PipelineConfig::default()
    };
    time("pipeline_2e20_q3", reps, || {
        let mut keys = Vec::new();
        let summary = pipeline::process(&big.alice, &big.bob, &cfg, |r| {
            keys.push(r);
            Ok(())
        })
        .expect("pipeline runs");
        assert_eq!(summary.blocks_with_key, 1);
        black_box(keys);
    });
}
