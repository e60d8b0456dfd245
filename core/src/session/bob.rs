//! Bob's side of a block's session: he checks Alice's hello against his own settings and raw
//! block, compares the sample, asks Cascade's questions (or decodes Alice's LDPC syndromes),
//! answers confirmation, checks Alice's secret length and tag, and only then releases his key.

use std::sync::Arc;
use std::time::Instant;

use super::frames::FrameSet;
use super::wire::{Body, Hello, PROTOCOL_VERSION};
use super::{
    Core, Link, SessionError, Side, check_and_release, discarded, record_estimate, secret_length,
};
use crate::BitBlock;
use crate::amplify::{seed_bits_needed, toeplitz_hash_with};
use crate::auth::{AuthLease, Direction};
use crate::confirm;
use crate::estimate::{self, Bound, SampleMessage};
use crate::reconcile::algorithm::Algorithm;
use crate::reconcile::cascade::Bob;
use crate::reconcile::efficiency;
use crate::reconcile::frames::{FrameBatch, FramedBob};
use crate::reconcile::ldpc::decoder::Backend;
use crate::reconcile::ldpc::protocol::{LdpcBob, LdpcMessage};

enum State {
    AwaitHello,
    AwaitSample { shuffle_seed: [u8; 32] },
    Cascading(FramedBob),
    Decoding(LdpcBob),
    AwaitConfirm,
    AwaitRetry,
    AwaitAmplify { key: BitBlock, secret_bits: u64 },
    AwaitTag { key: BitBlock, seed: BitBlock },
    Ended,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::AwaitHello => "awaiting the hello",
            State::AwaitSample { .. } => "awaiting the sample",
            State::Cascading(_) => "reconciling",
            State::Decoding(_) => "decoding LDPC syndromes",
            State::AwaitConfirm => "awaiting confirmation challenges",
            State::AwaitRetry => "awaiting the retry",
            State::AwaitAmplify { .. } => "awaiting the secret length",
            State::AwaitTag { .. } => "awaiting Alice's tag",
            State::Ended => "ended",
        }
    }
}

/// Bob's session of one block.
pub struct BobSession {
    core: Core,
    raw: Option<BitBlock>,
    lease: Option<AuthLease>,
    state: State,
    frames: Option<FrameSet>,
    key_bits: usize,
}

impl std::fmt::Debug for BobSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BobSession")
            .field("block_id", &self.core.ch.block_id)
            .field("state", &self.state.name())
            .finish_non_exhaustive()
    }
}

impl Side for BobSession {
    fn core(&self) -> &Core {
        &self.core
    }

    fn core_mut(&mut self) -> &mut Core {
        &mut self.core
    }

    fn step(&mut self, message: &[u8]) -> Result<(), SessionError> {
        self.on_message(message)
    }

    fn hash_key_position(&self) -> Option<u64> {
        self.lease.as_ref().map(|l| l.hash_key_position)
    }
}

impl BobSession {
    /// Waits for Alice's hello of `block_id`, on Bob's raw sifted bits of that block.
    pub fn new(
        link: Arc<Link>,
        block_id: impl Into<String>,
        raw: BitBlock,
    ) -> Result<Self, SessionError> {
        let core = Core::new(link, block_id.into(), raw.len(), Direction::BobToAlice)?;
        Ok(Self {
            key_bits: raw.len() - core.link.config().sample_bits,
            core,
            raw: Some(raw),
            lease: None,
            state: State::AwaitHello,
            frames: None,
        })
    }

    fn on_message(&mut self, message: &[u8]) -> Result<(), SessionError> {
        let body = self.core.ch.receive(message)?;
        let state = std::mem::replace(&mut self.state, State::Ended);
        match (state, body) {
            (_, Body::Abort { reason }) => Err(SessionError::PeerAborted(reason)),
            (State::AwaitHello, Body::Hello(hello)) => self.on_hello(&hello),
            (State::AwaitSample { shuffle_seed }, Body::Sample(sample)) => {
                self.on_sample(&sample, shuffle_seed)
            }
            (State::Cascading(framed), Body::Reconcile(batch)) => self.on_reconcile(framed, batch),
            (State::Decoding(ldpc), Body::Ldpc(msg)) => self.on_ldpc(ldpc, msg),
            (State::AwaitConfirm, Body::Confirm { challenges }) => self.on_confirm(challenges),
            (State::AwaitRetry, Body::Retry { shuffle_seed }) => self.start_round(shuffle_seed),
            (
                State::AwaitAmplify { key, secret_bits },
                Body::Amplify {
                    secret_bits: theirs,
                    seed,
                },
            ) => self.on_amplify(key, secret_bits, theirs, &seed),
            (State::AwaitTag { key, seed }, Body::Tag { tag }) => self.on_tag(&key, &seed, tag),
            (state, body) => Err(SessionError::Unexpected {
                got: body.kind(),
                state: state.name(),
            }),
        }
    }

    fn on_hello(&mut self, hello: &Hello) -> Result<(), SessionError> {
        if hello.protocol != PROTOCOL_VERSION {
            return Err(SessionError::Hello(format!(
                "protocol version {}; this side speaks {PROTOCOL_VERSION}",
                hello.protocol
            )));
        }
        if let Some(why) = self.core.link.params().mismatch(&hello.params) {
            return Err(SessionError::Hello(why));
        }
        if hello.raw_bits != self.core.report.raw_bits {
            return Err(SessionError::Hello(format!(
                "Alice's block has {} raw bits, ours {}",
                hello.raw_bits, self.core.report.raw_bits
            )));
        }
        let mut keys = self.core.link.auth_keys();
        let before = keys.spent_bits();
        self.lease = Some(keys.lease_at(hello.hash_key_position, hello.pad_position)?);
        self.core.report.auth_bits = (keys.spent_bits() - before) as u64;
        drop(keys);
        self.state = State::AwaitSample {
            shuffle_seed: hello.shuffle_seed,
        };
        Ok(())
    }

    fn on_sample(
        &mut self,
        sample: &SampleMessage,
        shuffle_seed: [u8; 32],
    ) -> Result<(), SessionError> {
        let t = Instant::now();
        let raw = self.raw.take().ok_or(SessionError::Ended)?;
        let cfg = self.core.link.config();
        if sample.k != cfg.sample_bits as u64 {
            return Err(SessionError::Inconsistent {
                message: "Sample",
                reason: format!(
                    "{} sampled bits; the link samples {}",
                    sample.k, cfg.sample_bits
                ),
            });
        }
        let (est, sifted) =
            estimate::compare_sample(&raw, sample, cfg.eps_pe, Bound::Hypergeometric)?;
        drop(raw);
        self.core.report.times.estimate = t.elapsed().as_secs_f64();
        self.core.ch.send(Body::Estimate {
            sample_errors: est.errors,
        })?;
        if let Some(why) = record_estimate(&mut self.core.report, &est, &self.core.link) {
            self.core.end(discarded(self.core.report.clone(), why));
            return Ok(());
        }
        self.frames = Some(FrameSet::new(&sifted, &self.core.link, &est)?);
        self.start_round(shuffle_seed)
    }

    /// Bob's side of the round: his Cascade parties, whose hellos he sends, or his LDPC decoder,
    /// which waits for Alice's syndromes.
    fn start_round(&mut self, seed: [u8; 32]) -> Result<(), SessionError> {
        let t = Instant::now();
        let frames = self.frames.as_mut().ok_or(SessionError::Ended)?;
        if let Algorithm::Ldpc(params) = self.core.link.algorithm() {
            let plan = frames.ldpc_plan(params)?;
            let ldpc = LdpcBob::new(plan, frames.take_round(), Backend::best())?;
            self.state = State::Decoding(ldpc);
            return Ok(());
        }
        let plans = frames.plans(&self.core.link, seed)?;
        let parties = frames
            .take_round()
            .into_iter()
            .zip(plans)
            .map(|(f, p)| Bob::new(p, f))
            .collect::<Result<Vec<_>, _>>()?;
        let mut framed = FramedBob::new(parties);
        let first = framed.start()?;
        self.core.ch.send(Body::Reconcile(first))?;
        self.core.report.round_trips += 1;
        self.core.report.times.reconcile += t.elapsed().as_secs_f64();
        self.state = State::Cascading(framed);
        Ok(())
    }

    fn on_reconcile(
        &mut self,
        mut framed: FramedBob,
        batch: FrameBatch,
    ) -> Result<(), SessionError> {
        let t = Instant::now();
        let next = framed.handle(batch)?;
        if !next.messages.is_empty() {
            self.core.ch.send(Body::Reconcile(next))?;
            self.core.report.round_trips += 1;
        }
        self.core.report.times.reconcile += t.elapsed().as_secs_f64();
        if !framed.is_done() {
            self.state = State::Cascading(framed);
            return Ok(());
        }
        let stats = framed.stats();
        let leaks = (stats.disclosed_bits, stats.bob_leak_bits());
        self.finish_round(leaks, stats.corrected, framed.into_frames(), &[])
    }

    /// Decodes with Alice's syndromes or reveals; answers with a reveal request or `Done`.
    fn on_ldpc(&mut self, mut ldpc: LdpcBob, msg: LdpcMessage) -> Result<(), SessionError> {
        let t = Instant::now();
        let reply = ldpc.handle(msg)?;
        self.core.ch.send(Body::Ldpc(reply))?;
        self.core.report.round_trips += 1;
        self.core.report.times.reconcile += t.elapsed().as_secs_f64();
        if !ldpc.is_done() {
            self.state = State::Decoding(ldpc);
            return Ok(());
        }
        let leaks = (ldpc.disclosed_bits(), ldpc.bob_leak_bits());
        let failed = ldpc.failed().to_vec();
        let corrected = ldpc.stats().corrected;
        self.finish_round(leaks, corrected, ldpc.into_frames(), &failed)
    }

    /// The round's reconciliation is over: its leakage (Alice's, Bob's) and corrections counted,
    /// its frames back, those that `failed` it dropped; confirmation comes next.
    fn finish_round(
        &mut self,
        (leak_alice, leak_bob): (u64, u64),
        corrected: u64,
        round_frames: Vec<BitBlock>,
        failed: &[u32],
    ) -> Result<(), SessionError> {
        self.core.report.leak_alice_bits += leak_alice;
        self.core.report.leak_bob_bits += leak_bob;
        self.core.report.errors_corrected += corrected;
        let frames = self.frames.as_mut().ok_or(SessionError::Ended)?;
        frames.put_round(round_frames)?;
        frames.drop_failed(failed);
        self.state = State::AwaitConfirm;
        Ok(())
    }

    fn on_confirm(&mut self, challenges: Vec<confirm::ConfirmMessage>) -> Result<(), SessionError> {
        let t = Instant::now();
        let frames = self.frames.as_mut().ok_or(SessionError::Ended)?;
        if challenges.len() != frames.round_len() {
            return Err(SessionError::Inconsistent {
                message: "Confirm",
                reason: format!(
                    "{} challenges for {} frames",
                    challenges.len(),
                    frames.round_len()
                ),
            });
        }
        let eps = frames.eps_check(self.core.link.config().eps_cor);
        let mut matched = Vec::with_capacity(challenges.len());
        for (f, c) in frames.round_frames().zip(challenges) {
            let (_, outcome) = confirm::respond(f, eps, c)?;
            self.core.report.confirm_tag_bits += outcome.leaked_bits;
            matched.push(outcome.matched);
        }
        frames.record(&matched)?;
        self.core.ch.send(Body::Verdicts {
            matched,
            errors_corrected: self.core.report.errors_corrected,
        })?;
        self.core.report.times.confirm += t.elapsed().as_secs_f64();
        if frames.start_retry(&mut self.core.report) {
            self.state = State::AwaitRetry;
            return Ok(());
        }
        self.finish_confirmation()
    }

    /// Confirmation is over: the kept key and the secret length Alice must announce.
    fn finish_confirmation(&mut self) -> Result<(), SessionError> {
        let frames = self.frames.take().ok_or(SessionError::Ended)?;
        let basis = frames.efficiency_basis_bits();
        let Some(key) = frames.finish(&mut self.core.report) else {
            let why = "confirmation tags differ".to_owned();
            self.core.end(discarded(self.core.report.clone(), why));
            return Ok(());
        };
        let r = &mut self.core.report;
        if r.errors_corrected > 0 {
            r.efficiency = Some(efficiency(r.leak_alice_bits, basis, r.errors_corrected));
        }
        let secret = secret_length(&self.core.link, r, self.key_bits)?;
        r.secret = Some(secret);
        if secret.bits == 0 {
            let why = "secret length is zero".to_owned();
            self.core.end(discarded(self.core.report.clone(), why));
            return Ok(());
        }
        self.state = State::AwaitAmplify {
            key,
            secret_bits: secret.bits,
        };
        Ok(())
    }

    fn on_amplify(
        &mut self,
        key: BitBlock,
        ours: u64,
        theirs: u64,
        seed: &[u8],
    ) -> Result<(), SessionError> {
        if ours != theirs {
            return Err(SessionError::SecretLength { ours, theirs });
        }
        let seed_len = seed_bits_needed(key.len(), ours as usize);
        if seed.len() != seed_len.div_ceil(8) {
            return Err(SessionError::Inconsistent {
                message: "Amplify",
                reason: format!(
                    "a {}-byte seed; {seed_len} bits need {}",
                    seed.len(),
                    seed_len.div_ceil(8)
                ),
            });
        }
        let seed =
            BitBlock::from_bytes(seed, seed_len).map_err(|e| SessionError::Inconsistent {
                message: "Amplify",
                reason: e.to_string(),
            })?;
        self.state = State::AwaitTag { key, seed };
        Ok(())
    }

    /// Alice's tag: verified before anything else; then Bob's key and his own tag.
    fn on_tag(&mut self, key: &BitBlock, seed: &BitBlock, tag: u128) -> Result<(), SessionError> {
        let lease = self.lease.as_ref().ok_or(SessionError::Ended)?;
        self.core.ch.received.verify(tag, lease)?;
        let t = Instant::now();
        let m = self.core.report.secret.map_or(0, |s| s.bits as usize);
        let final_key = toeplitz_hash_with(self.core.link.config().toeplitz, key, seed, m)
            .map_err(|e| super::stage("amplify", e))?;
        self.core.report.times.amplify = t.elapsed().as_secs_f64();
        let tag = self.core.ch.sent.tag(lease);
        self.core.ch.send(Body::Tag { tag })?;
        let outcome = check_and_release(self.core.report.clone(), final_key);
        self.core.end(outcome);
        Ok(())
    }
}
