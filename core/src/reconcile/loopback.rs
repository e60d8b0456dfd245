//! Runs both sides of a reconciliation in one process, through the wire encoding.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::ReconcileError;
use super::cascade::{Alice, Bob, BobStats};
use super::message::Message;

/// In-process driver: moves encoded messages between an [`Alice`] and a [`Bob`].
#[derive(Debug, Default, Clone, Copy)]
pub struct LoopbackLink;

/// What a loopback run measured; it knows both keys, so it reports the residual errors.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LoopbackReport {
    /// Bob's counters.
    pub bob: BobStats,
    /// Parity bits Alice disclosed (equals `bob.disclosed_bits` in a correct run).
    pub alice_disclosed_bits: u64,
    /// Bits of Bob's messages that depend on his key ([`BobStats::bob_leak_bits`]; equals
    /// [`Alice::bob_leak_bits`] in a correct run).
    pub bob_disclosed_bits: u64,
    /// Encoded bytes Bob sent.
    pub bytes_to_alice: u64,
    /// Encoded bytes Alice sent.
    pub bytes_to_bob: u64,
    /// Key length in bits.
    pub n: usize,
    /// Differences between the keys before the run.
    pub initial_errors: u64,
    /// Differences after the run.
    pub residual_errors: u64,
    /// Wall-clock time of the run, both sides, encoding included.
    #[serde(serialize_with = "ser_secs")]
    pub elapsed: Duration,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl LoopbackReport {
    /// Efficiency `f = disclosed / (n h(e / n))` with `e` the errors actually present in this
    /// block (the realized error rate; see [`super::efficiency`]).
    pub fn efficiency(&self) -> f64 {
        super::efficiency(self.alice_disclosed_bits, self.n, self.initial_errors)
    }
}

impl LoopbackLink {
    /// Runs the whole protocol: Bob's hello, then messages back and forth until Bob's `Done`.
    pub fn run(alice: &mut Alice, bob: &mut Bob) -> Result<LoopbackReport, ReconcileError> {
        let n = alice.key().len();
        let initial =
            alice
                .key()
                .hamming_distance(bob.key())
                .map_err(|_| ReconcileError::KeyLength {
                    got: bob.key().len(),
                    expected: n,
                })? as u64;
        let t0 = Instant::now();
        let (mut to_alice, mut to_bob) = (0u64, 0u64);
        let (mut msg, mut reply) = (Vec::new(), Vec::new());
        bob.start()?.encode_into(&mut msg)?;
        loop {
            to_alice += msg.len() as u64;
            let Some(answer) = alice.handle(Message::decode(&msg)?)? else {
                break;
            };
            answer.encode_into(&mut reply)?;
            to_bob += reply.len() as u64;
            bob.handle(Message::decode(&reply)?)?
                .encode_into(&mut msg)?;
        }
        let elapsed = t0.elapsed();
        let residual = alice.key().hamming_distance(bob.key()).unwrap_or(n) as u64;
        Ok(LoopbackReport {
            bob: bob.stats(),
            alice_disclosed_bits: alice.disclosed_bits(),
            bob_disclosed_bits: bob.stats().bob_leak_bits(),
            bytes_to_alice: to_alice,
            bytes_to_bob: to_bob,
            n,
            initial_errors: initial,
            residual_errors: residual,
            elapsed,
        })
    }
}
