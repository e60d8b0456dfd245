//! Where one-way LDPC reconciliation spends its time: Alice's syndromes, Bob's set-up and the
//! decoder, with the decoder's iterations per frame
//! (`cargo run --release -p qkd-core --example ldpc_profile -- [QBER] [F] [FRAMES] [Z]`).

use std::sync::Arc;
use std::time::Instant;

use qkd_core::reconcile::ldpc::decoder::Backend;
use qkd_core::reconcile::ldpc::protocol::{FramePlan, LdpcAlice, LdpcBob, LdpcParams};
use qkd_core::reconcile::testkit::{error_count, noisy_pair};
use qkd_core::rng::SeededRandom;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: f64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (qber, f, frames, z) = (
        arg(0, 0.02),
        arg(1, 1.5),
        arg(2, 512.0) as usize,
        arg(3, 512.0) as u32,
    );
    let plan = Arc::new(FramePlan::choose(&LdpcParams::one_way(z, f), qber)?);
    let k = plan.key_bits();
    let (xs, ys): (Vec<_>, Vec<_>) = (0..frames)
        .map(|i| noisy_pair(k, error_count(k, qber), i as u64))
        .unzip();
    let mut rng = SeededRandom::from_u64(7);
    let t0 = Instant::now();
    let (_alice, first) = LdpcAlice::start(Arc::clone(&plan), xs, &mut rng)?;
    let t1 = Instant::now();
    let mut bob = LdpcBob::new(Arc::clone(&plan), ys, Backend::best())?;
    let t2 = Instant::now();
    bob.handle(first)?;
    let t3 = Instant::now();
    let s = bob.stats();
    let bits = (frames * k) as f64;
    let mbps = |d: std::time::Duration| bits / d.as_secs_f64() / 1e6;
    println!(
        "rows {} key {k} qber {qber} f {f}: alice {:.1} ms, bob setup {:.1} ms, bob decode {:.1} ms; \
         total {:.1} Mbit/s (decode alone {:.1}); {:.1} iterations/frame, {} of {frames} failed",
        plan.rows,
        (t1 - t0).as_secs_f64() * 1e3,
        (t2 - t1).as_secs_f64() * 1e3,
        (t3 - t2).as_secs_f64() * 1e3,
        mbps(t3 - t0),
        mbps(t3 - t2),
        s.iterations as f64 / frames as f64,
        frames as u64 - s.first_attempt,
    );
    Ok(())
}
