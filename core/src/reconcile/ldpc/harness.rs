//! LDPC in the experiment harness ([`crate::reconcile::experiment`]): algorithm names, and one
//! configuration's run.
//!
//! Names are [`LdpcParams::parse`]'s. A run is one frame; the frame's
//! code length is the largest built-in lift whose key part fits `block_bits` (the smallest if
//! none does), and the result's `block_bits` is that frame's key length. Frames are reconciled
//! [`FRAMES_PER_BLOCK`] at a time, as a block would be, the decoder's batches in parallel on a
//! pool of `threads`. Efficiency is per decoded frame with its realized error count; frames
//! that failed, or decoded to a wrong word, count in `frame_error_rate` and in
//! `efficiency_with_failures`. Confirmation is not run here (the `confirm_*` fields are 0).
//! Round trips are the block's (every frame of a block takes as many as its slowest), and
//! `messages_mean` is per block of frames.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::codes::LIFTS;
use super::decoder::Backend;
use super::protocol::{FramePlan, LdpcAlice, LdpcBob, LdpcParams, run_loopback};
use crate::reconcile::algorithm::ldpc_lift_for;
use crate::reconcile::experiment::{
    ExperimentConfig, ExperimentError, ExperimentResult, derive_seed, thread_pool,
};
use crate::reconcile::testkit::{error_count, noisy_pair};
use crate::reconcile::{ReconcileError, efficiency, efficiency_with_failures};
use crate::rng::SeededRandom;

/// Frames reconciled together (one block's worth).
pub const FRAMES_PER_BLOCK: usize = 256;

/// The LDPC parameters an algorithm name stands for ([`LdpcParams::parse`]), on the largest
/// built-in code whose frame fits `block_bits` (the smallest if none does); `None` if it is not
/// an LDPC name.
pub fn params_for(name: &str, block_bits: usize) -> Option<Result<LdpcParams, ExperimentError>> {
    let z = ldpc_lift_for(block_bits).unwrap_or(LIFTS[0]);
    LdpcParams::parse(name, z).map(|r| r.map_err(|e| ExperimentError::BadConfig(e.to_string())))
}

/// Runs one LDPC configuration.
pub(crate) fn run(
    cfg: &ExperimentConfig,
    params: LdpcParams,
) -> Result<ExperimentResult, ExperimentError> {
    let estimate = cfg.qber_estimate.unwrap_or(cfg.qber);
    let plan = Arc::new(FramePlan::choose(&params, estimate)?);
    let k = plan.key_bits();
    let errors = error_count(k, cfg.qber);
    let pool = thread_pool(cfg.threads)?;
    let backend = Backend::best();
    let (mut fs, mut failed, mut residual_frames, mut residual_bits) = (Vec::new(), 0usize, 0, 0);
    let (mut messages, mut bytes, mut round_trips, mut round_trips_max) = (0u64, 0u64, 0u64, 0);
    let mut disclosed = 0u64;
    let mut timed = Duration::ZERO;
    let mut start = 0;
    while start < cfg.runs {
        let end = (start + FRAMES_PER_BLOCK).min(cfg.runs);
        let (xs, ys): (Vec<_>, Vec<_>) = (start..end)
            .map(|i| noisy_pair(k, errors, derive_seed(cfg.seed, 2, i as u64)))
            .unzip();
        let mut rng = SeededRandom::from_u64(derive_seed(cfg.seed, 4, start as u64));
        let t0 = Instant::now();
        let outcome = pool.install(|| -> Result<_, ReconcileError> {
            let (mut alice, first) = LdpcAlice::start(Arc::clone(&plan), xs, &mut rng)?;
            let mut bob = LdpcBob::new(Arc::clone(&plan), ys, backend)?;
            let t = run_loopback(&mut alice, first, &mut bob)?;
            let leaks: Vec<Option<u64>> =
                (0..end - start).map(|f| alice.frame_disclosed(f)).collect();
            Ok((
                alice.into_frames(),
                leaks,
                bob.stats(),
                t,
                bob.into_frames(),
            ))
        })?;
        timed += t0.elapsed();
        let (xs, leaks, stats, transcript, frames) = outcome;
        disclosed += leaks.iter().flatten().sum::<u64>();
        messages += 2 * u64::from(transcript.alice_messages);
        bytes += transcript.bytes;
        let trips = 1 + stats.rounds;
        round_trips += u64::from(trips) * (end - start) as u64;
        round_trips_max = round_trips_max.max(trips);
        for ((got, want), frame_leak) in frames.iter().zip(&xs).zip(leaks) {
            let Some(frame_leak) = frame_leak else {
                failed += 1;
                continue;
            };
            let wrong = got.hamming_distance(want).unwrap_or(k) as u64;
            if wrong > 0 {
                residual_frames += 1;
                residual_bits += wrong;
            }
            fs.push(efficiency(frame_leak, k, errors as u64));
        }
        start = end;
    }
    let runs = cfg.runs as f64;
    let decoded = fs.len().max(1) as f64;
    let f_mean = fs.iter().sum::<f64>() / decoded;
    let f_var = fs.iter().map(|f| (f - f_mean).powi(2)).sum::<f64>() / (decoded - 1.0).max(1.0);
    let fer = (failed + residual_frames) as f64 / runs;
    Ok(ExperimentResult {
        algorithm: cfg.algorithm.clone(),
        qber: cfg.qber,
        qber_estimate: estimate,
        block_bits: k,
        runs: cfg.runs,
        threads: cfg.threads,
        seed: cfg.seed,
        efficiency_mean: f_mean,
        efficiency_std: f_var.sqrt(),
        efficiency_with_failures: efficiency_with_failures(f_mean, fer, errors as f64 / k as f64),
        frame_error_rate: fer,
        bit_error_rate: residual_bits as f64 / (runs * k as f64),
        round_trips_mean: round_trips as f64 / runs,
        round_trips_max,
        messages_mean: messages as f64 / (runs / FRAMES_PER_BLOCK as f64).ceil(),
        bytes_mean: bytes as f64 / runs,
        disclosed_bits_mean: disclosed as f64 / decoded,
        errors_mean: errors as f64,
        confirm_tag_bits: 0,
        confirm_rejected: 0,
        confirm_undetected: 0,
        bits_per_second: runs * k as f64 / timed.as_secs_f64().max(1e-12),
        efficiency_basis: "realized",
    })
}
