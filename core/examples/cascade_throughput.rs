//! Cascade throughput with reused plans, one rayon thread (by default), both parties in this
//! process.
//!
//! Builds ONE plan per frame length (as a link caches it), then reconciles many frames at the
//! given QBER with it, through [`FramedAlice`]/[`FramedBob`] (blocks of `--block-frames`
//! frames, batches encoded and decoded as on the wire) and through single [`Alice`]/[`Bob`]
//! pairs ([`LoopbackLink`]). Key pairs are drawn before the timed loop; the parties are built
//! inside it. Prints, per case, CPU seconds of the process (all threads) and Mbit/s of frame
//! bits (both sides together, so one side's rate is twice that), and the bits corrected
//! (identical between builds that behave identically).
//!
//! ```sh
//! cargo run --release -p qkd-core --example cascade_throughput -- [--variant yanetal]
//!     [--qber 0.02] [--bits 16777216] [--block-frames 64] [--reps 3] [--mode both|framed|single]
//!     [--threads 1]
//! ```

use std::sync::Arc;
use std::time::Instant;

use qkd_core::bits::BitBlock;
use qkd_core::reconcile::cascade::{Alice, Bob, Params, Plan, Variant};
use qkd_core::reconcile::frames::{FramedAlice, FramedBob, run_loopback};
use qkd_core::reconcile::loopback::LoopbackLink;
use qkd_core::reconcile::testkit::{error_count, noisy_pair};

/// Command-line settings.
struct Args {
    variant: String,
    qber: f64,
    bits: usize,
    block_frames: usize,
    reps: usize,
    mode: String,
    threads: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        variant: "yanetal".into(),
        qber: 0.02,
        bits: 1 << 24,
        block_frames: 64,
        reps: 3,
        mode: "both".into(),
        threads: 1,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for kv in argv.chunks(2) {
        let v = kv.get(1).cloned().unwrap_or_default();
        match kv[0].as_str() {
            "--variant" => a.variant = v,
            "--qber" => a.qber = v.parse().expect("--qber"),
            "--bits" => a.bits = v.parse().expect("--bits"),
            "--block-frames" => a.block_frames = v.parse().expect("--block-frames"),
            "--reps" => a.reps = v.parse().expect("--reps"),
            "--mode" => a.mode = v,
            "--threads" => a.threads = v.parse().expect("--threads"),
            other => panic!("unknown option {other}"),
        }
    }
    a
}

/// CPU time of every thread of this process, in nanoseconds (Linux schedstat).
fn process_cpu_ns() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.filter_map(|t| {
        let s = std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok()?;
        s.split_whitespace().next()?.parse::<u64>().ok()
    })
    .sum()
}

/// The one plan of a frame length.
fn plan_for(variant: &Variant, n: usize, qber: f64) -> Arc<Plan> {
    Plan::new(Params {
        variant: variant.clone(),
        n: n as u32,
        qber,
        seed: [42; 32],
    })
    .expect("plan")
}

/// Reconciles `pairs` in blocks of `block_frames` frames through the framed parties.
fn run_framed(plan: &Arc<Plan>, pairs: &[(BitBlock, BitBlock)], block_frames: usize) -> u64 {
    let mut corrected = 0;
    for block in pairs.chunks(block_frames) {
        let alices = block
            .iter()
            .map(|(a, _)| Alice::with_plan(a.clone(), Arc::clone(plan)))
            .collect();
        let bobs = block
            .iter()
            .map(|(_, b)| Bob::new(Arc::clone(plan), b.clone()).expect("bob"))
            .collect();
        let (mut fa, mut fb) = (FramedAlice::new(alices), FramedBob::new(bobs));
        let r = run_loopback(&mut fa, &mut fb).expect("framed run");
        corrected += r.bob.corrected;
    }
    corrected
}

/// Reconciles `pairs` one frame at a time through single parties.
fn run_single(plan: &Arc<Plan>, pairs: &[(BitBlock, BitBlock)]) -> u64 {
    let mut corrected = 0;
    for (a, b) in pairs {
        let mut alice = Alice::with_plan(a.clone(), Arc::clone(plan));
        let mut bob = Bob::new(Arc::clone(plan), b.clone()).expect("bob");
        let r = LoopbackLink::run(&mut alice, &mut bob).expect("run");
        corrected += r.bob.corrected;
    }
    corrected
}

fn main() {
    let args = parse_args();
    rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build_global()
        .expect("rayon pool");
    let variant = Variant::by_name(&args.variant).expect("variant");
    for log in [14u32, 16] {
        let n = 1usize << log;
        let frames = (args.bits / n).max(1);
        let plan = plan_for(&variant, n, args.qber);
        let pairs: Vec<_> = (0..frames)
            .map(|i| noisy_pair(n, error_count(n, args.qber), 1000 + i as u64))
            .collect();
        let modes: &[&str] = match args.mode.as_str() {
            "both" => &["framed", "single"],
            "framed" => &["framed"],
            _ => &["single"],
        };
        for &mode in modes {
            for rep in 0..args.reps {
                let (c0, t0) = (process_cpu_ns(), Instant::now());
                let corrected = match mode {
                    "framed" => run_framed(&plan, &pairs, args.block_frames),
                    _ => run_single(&plan, &pairs),
                };
                let (cpu, wall) = ((process_cpu_ns() - c0) as f64 * 1e-9, t0.elapsed());
                let bits = (frames * n) as f64;
                println!(
                    "RESULT n=2^{log} mode={mode} rep={rep} frames={frames} corrected={corrected} cpu_s={cpu:.3} wall_s={:.3} cpu_mbps={:.1} wall_mbps={:.1}",
                    wall.as_secs_f64(),
                    bits / cpu / 1e6,
                    bits / wall.as_secs_f64() / 1e6
                );
            }
        }
    }
}
