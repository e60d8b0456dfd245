//! Alice's side of a block's session: she draws every public seed, discloses the sample,
//! answers Cascade (or sends LDPC syndromes and reveals), challenges confirmation and announces
//! the secret length and Toeplitz seed.

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
use crate::confirm::{ConfirmInitiator, ConfirmMessage};
use crate::estimate::{self, Bound, QberEstimate};
use crate::reconcile::algorithm::Algorithm;
use crate::reconcile::cascade::Alice;
use crate::reconcile::efficiency;
use crate::reconcile::frames::{FrameBatch, FramedAlice};
use crate::reconcile::ldpc::protocol::{LdpcAlice, LdpcMessage};
use crate::rng::RandomSource;

enum State {
    AwaitEstimate { sifted: BitBlock },
    Cascading(FramedAlice),
    Decoding(LdpcAlice),
    AwaitVerdicts(Vec<ConfirmInitiator>),
    AwaitTag { key: BitBlock },
    Ended,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::AwaitEstimate { .. } => "awaiting the estimate",
            State::Cascading(_) => "reconciling",
            State::Decoding(_) => "waiting for Bob's LDPC decoding",
            State::AwaitVerdicts(_) => "awaiting confirmation verdicts",
            State::AwaitTag { .. } => "awaiting Bob's tag",
            State::Ended => "ended",
        }
    }
}

/// Alice's session of one block.
pub struct AliceSession {
    core: Core,
    rng: Box<dyn RandomSource>,
    lease: AuthLease,
    state: State,
    frames: Option<FrameSet>,
    key_bits: usize,
}

impl std::fmt::Debug for AliceSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AliceSession")
            .field("block_id", &self.core.ch.block_id)
            .field("state", &self.state.name())
            .finish_non_exhaustive()
    }
}

impl Side for AliceSession {
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
        Some(self.lease.hash_key_position)
    }
}

impl AliceSession {
    /// Starts the block `block_id` on Alice's raw sifted bits: takes the block's authentication
    /// lease from the link and queues the hello and the sample. Fails before sending anything
    /// when the block is too short for the sample, the ID is malformed or the authentication
    /// pool is exhausted.
    pub fn new(
        link: Arc<Link>,
        block_id: impl Into<String>,
        raw: BitBlock,
        mut rng: Box<dyn RandomSource>,
    ) -> Result<Self, SessionError> {
        let mut core = Core::new(link, block_id.into(), raw.len(), Direction::AliceToBob)?;
        let sample_bits = core.link.config().sample_bits;
        let t = Instant::now();
        let (sample, sifted) = estimate::disclose_sample(&raw, sample_bits, rng.seed32()?)?;
        drop(raw);
        core.report.times.estimate = t.elapsed().as_secs_f64();
        let lease = {
            let mut keys = core.link.auth_keys();
            let before = keys.spent_bits();
            let lease = keys.lease()?;
            core.report.auth_bits = (keys.spent_bits() - before) as u64;
            lease
        };
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            params: core.link.params(),
            raw_bits: core.report.raw_bits,
            shuffle_seed: core.link.shuffle_seed(),
            hash_key_position: lease.hash_key_position,
            pad_position: lease.pad_position,
        };
        core.ch.send(Body::Hello(hello))?;
        core.ch.send(Body::Sample(sample))?;
        Ok(Self {
            core,
            rng,
            lease,
            key_bits: sifted.len(),
            state: State::AwaitEstimate { sifted },
            frames: None,
        })
    }

    fn on_message(&mut self, message: &[u8]) -> Result<(), SessionError> {
        let body = self.core.ch.receive(message)?;
        let state = std::mem::replace(&mut self.state, State::Ended);
        match (state, body) {
            (_, Body::Abort { reason }) => Err(SessionError::PeerAborted(reason)),
            (State::AwaitEstimate { sifted }, Body::Estimate { sample_errors }) => {
                self.on_estimate(sifted, sample_errors)
            }
            (State::Cascading(framed), Body::Reconcile(batch)) => self.on_reconcile(framed, batch),
            (State::Decoding(ldpc), Body::Ldpc(msg)) => self.on_ldpc(ldpc, msg),
            (
                State::AwaitVerdicts(initiators),
                Body::Verdicts {
                    matched,
                    errors_corrected,
                },
            ) => self.on_verdicts(initiators, &matched, errors_corrected),
            (State::AwaitTag { key }, Body::Tag { tag }) => {
                self.core.ch.received.verify(tag, &self.lease)?;
                self.core
                    .end(check_and_release(self.core.report.clone(), key));
                Ok(())
            }
            (state, body) => Err(SessionError::Unexpected {
                got: body.kind(),
                state: state.name(),
            }),
        }
    }

    fn on_estimate(&mut self, sifted: BitBlock, errors: u64) -> Result<(), SessionError> {
        let cfg = self.core.link.config();
        let r = &mut self.core.report;
        if errors > r.sample_bits {
            return Err(SessionError::Inconsistent {
                message: "Estimate",
                reason: format!("{errors} errors in a {}-bit sample", r.sample_bits),
            });
        }
        let est = QberEstimate::new(
            r.raw_bits,
            r.sample_bits,
            errors,
            cfg.eps_pe,
            Bound::Hypergeometric,
        )?;
        if let Some(why) = record_estimate(r, &est, &self.core.link) {
            self.core.end(discarded(self.core.report.clone(), why));
            return Ok(());
        }
        let frames = FrameSet::new(&sifted, &self.core.link, &est)?;
        drop(sifted);
        self.frames = Some(frames);
        self.start_round(self.core.link.shuffle_seed())
    }

    /// Alice's side of the round: her Cascade parties (Bob opens the round), or her LDPC
    /// syndromes, sent now.
    fn start_round(&mut self, seed: [u8; 32]) -> Result<(), SessionError> {
        let frames = self.frames.as_mut().ok_or(SessionError::Ended)?;
        if let Algorithm::Ldpc(params) = self.core.link.algorithm() {
            let t = Instant::now();
            let plan = frames.ldpc_plan(params)?;
            let (ldpc, first) = LdpcAlice::start(plan, frames.take_round(), self.rng.as_mut())?;
            self.core.ch.send(Body::Ldpc(first))?;
            self.core.report.times.reconcile += t.elapsed().as_secs_f64();
            self.state = State::Decoding(ldpc);
            return Ok(());
        }
        let plans = frames.plans(&self.core.link, seed)?;
        let parties = frames
            .take_round()
            .into_iter()
            .zip(plans)
            .map(|(f, p)| Alice::with_plan(f, p))
            .collect();
        self.state = State::Cascading(FramedAlice::new(parties));
        Ok(())
    }

    fn on_reconcile(
        &mut self,
        mut framed: FramedAlice,
        batch: FrameBatch,
    ) -> Result<(), SessionError> {
        let t = Instant::now();
        self.core.report.round_trips += 1;
        let answer = framed.handle(batch)?;
        let nothing_to_say = answer.messages.is_empty();
        if !nothing_to_say {
            self.core.ch.send(Body::Reconcile(answer))?;
        }
        self.core.report.times.reconcile += t.elapsed().as_secs_f64();
        match (framed.is_done(), nothing_to_say) {
            (false, false) => {
                self.state = State::Cascading(framed);
                Ok(())
            }
            (true, true) => self.finish_round(framed.leak_bits(), framed.into_frames(), &[]),
            (done, _) => Err(SessionError::Inconsistent {
                message: "Reconcile",
                reason: if done {
                    "answers owed after every frame's Done".into()
                } else {
                    "nothing to answer before every frame is done".into()
                },
            }),
        }
    }

    /// Bob's LDPC request: the next reveal, or his `Done`, which ends the round.
    fn on_ldpc(&mut self, mut ldpc: LdpcAlice, msg: LdpcMessage) -> Result<(), SessionError> {
        let t = Instant::now();
        self.core.report.round_trips += 1;
        let reply = ldpc.handle(msg)?;
        self.core.report.times.reconcile += t.elapsed().as_secs_f64();
        if let Some(reply) = reply {
            self.core.ch.send(Body::Ldpc(reply))?;
            self.state = State::Decoding(ldpc);
            return Ok(());
        }
        let leaks = (ldpc.disclosed_bits(), ldpc.bob_leak_bits());
        let failed = ldpc.failed().to_vec();
        self.finish_round(leaks, ldpc.into_frames(), &failed)
    }

    /// The round's reconciliation is over: its leakage (Alice's, Bob's) counted, its frames back
    /// (those that `failed` it dropped), one confirmation challenge per remaining frame.
    fn finish_round(
        &mut self,
        (leak_alice, leak_bob): (u64, u64),
        round_frames: Vec<BitBlock>,
        failed: &[u32],
    ) -> Result<(), SessionError> {
        let t = Instant::now();
        self.core.report.leak_alice_bits += leak_alice;
        self.core.report.leak_bob_bits += leak_bob;
        let frames = self.frames.as_mut().ok_or(SessionError::Ended)?;
        frames.put_round(round_frames)?;
        frames.drop_failed(failed);
        let eps = frames.eps_check(self.core.link.config().eps_cor);
        let mut initiators = Vec::with_capacity(frames.round_len());
        let mut challenges = Vec::with_capacity(frames.round_len());
        for f in frames.round_frames() {
            let (init, challenge) = ConfirmInitiator::start(f, eps, self.rng.as_mut())?;
            initiators.push(init);
            challenges.push(challenge);
        }
        self.core.ch.send(Body::Confirm { challenges })?;
        self.core.report.times.confirm += t.elapsed().as_secs_f64();
        self.state = State::AwaitVerdicts(initiators);
        Ok(())
    }

    fn on_verdicts(
        &mut self,
        initiators: Vec<ConfirmInitiator>,
        matched: &[bool],
        errors_corrected: u64,
    ) -> Result<(), SessionError> {
        if matched.len() != initiators.len() {
            return Err(SessionError::Inconsistent {
                message: "Verdicts",
                reason: format!("{} verdicts for {} frames", matched.len(), initiators.len()),
            });
        }
        if errors_corrected > self.key_bits as u64 {
            return Err(SessionError::Inconsistent {
                message: "Verdicts",
                reason: format!(
                    "{errors_corrected} errors corrected in {} bits",
                    self.key_bits
                ),
            });
        }
        for (mut init, &m) in initiators.into_iter().zip(matched) {
            let outcome = init.finish(ConfirmMessage::Verdict { matched: m })?;
            self.core.report.confirm_tag_bits += outcome.leaked_bits;
        }
        self.core.report.errors_corrected = errors_corrected;
        let frames = self.frames.as_mut().ok_or(SessionError::Ended)?;
        frames.record(matched)?;
        if frames.start_retry(&mut self.core.report) {
            let seed = self.rng.seed32()?;
            self.core.ch.send(Body::Retry { shuffle_seed: seed })?;
            return self.start_round(seed);
        }
        self.amplify()
    }

    /// Confirmation is over: the secret length, the Toeplitz seed, Alice's final key and tag.
    fn amplify(&mut self) -> Result<(), SessionError> {
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
        let m = secret.bits as usize;
        if m == 0 {
            let why = "secret length is zero".to_owned();
            self.core.end(discarded(self.core.report.clone(), why));
            return Ok(());
        }
        let t = Instant::now();
        let seed_len = seed_bits_needed(key.len(), m);
        let mut seed_bytes = zeroize::Zeroizing::new(vec![0u8; seed_len.div_ceil(8)]);
        self.rng.fill(&mut seed_bytes)?;
        let seed = BitBlock::from_bytes(&seed_bytes, seed_len).map_err(amplify_err)?;
        self.core.ch.send(Body::Amplify {
            secret_bits: m as u64,
            seed: seed.to_bytes().to_vec(),
        })?;
        let final_key = toeplitz_hash_with(self.core.link.config().toeplitz, &key, &seed, m)
            .map_err(amplify_err)?;
        drop(key);
        let tag = self.core.ch.sent.tag(&self.lease);
        self.core.ch.send(Body::Tag { tag })?;
        self.core.report.times.amplify = t.elapsed().as_secs_f64();
        self.state = State::AwaitTag { key: final_key };
        Ok(())
    }
}

fn amplify_err(e: impl std::fmt::Display) -> SessionError {
    super::stage("amplify", e)
}
