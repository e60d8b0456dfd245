//! A block's whole life between two sites, as one sans-IO state machine per side (DESIGN §9).
//!
//! [`AliceSession`] and [`BobSession`] take a raw sifted block each (the same block ID from each
//! side's raw source) and exchange [`wire::Envelope`]s until both hold the same final key, or
//! both know the block yielded none. They never touch a socket: a driver feeds received bytes
//! with [`Party::handle`] and sends whatever [`Party::poll_transmit`] returns, over any
//! transport ([`drive`] has the in-process and latency-line drivers; the CLI's `qkd bench link`
//! uses TCP between two processes).
//!
//! ```text
//! Alice                                               Bob
//! Hello (params, block length, shuffle seed, auth positions)
//! Sample (seed, bits)                  ---->
//!                                      <----  Estimate (sample errors)
//!                                      <----  Reconcile (every frame's Cascade hello)
//! Reconcile (answers)                  ---->  ... one round trip per Cascade round ...
//!   (LDPC links instead: Ldpc (syndromes) ---->, <---- Ldpc (reveal request or Done),
//!    and up to three more reveal rounds for the frames Bob could not decode)
//! Confirm (a tag per frame)            ---->
//!                                      <----  Verdicts (per frame)
//! [Retry (fresh shuffle seed)          ---->  the failed frames again, then Confirm/Verdicts]
//! Amplify (secret length, Toeplitz seed)
//! Tag (of all Alice sent)              ---->
//!                                      <----  Tag (of all Bob sent)   Bob's key released
//! Alice's key released
//! ```
//!
//! Both sides derive every decision from what they both saw (the sample's error count, the
//! verdicts, the leakage both count), so a block discarded for its QBER, its confirmation or a
//! zero secret length ends on both sides without another message; Alice's secret length is
//! checked against Bob's. Public randomness is Alice's ([`crate::rng::RandomSource`]).
//!
//! **Authentication** ([`crate::auth`]): each side's transcript (every envelope it sent, in
//! order) is tagged once, at the end, with the block's [`crate::auth::AuthLease`]. Bob releases
//! his key only once Alice's tag verifies; Alice hers once Bob's does. Bob's messages are
//! authenticated by his tag alone, which Alice checks after Bob released his key: a lost or
//! altered tag, or an altered Bob message that Alice does not refuse at once (a changed counter
//! in `Verdicts`), leaves Bob with a key that Alice refused. The two stores then disagree on that
//! one block, which the KMEs settle before activating it (a key is usable only when both sides
//! hold it, DESIGN §9).
//!
//! **Errors**: a malformed, out-of-order, replayed, inconsistent or unauthentic message ends the
//! block on that side with a [`SessionError`]; the side queues an `Abort` so that its peer ends
//! too. No key is released after an error.

mod alice;
mod bob;
pub mod drive;
mod frames;
mod link;
pub mod wire;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

pub use alice::AliceSession;
pub use bob::BobSession;
pub use link::Link;

use crate::BitBlock;
use crate::amplify::{Bb84Tlgr2012, FiniteKeyInput, SecretLength, SecretLengthModel};
use crate::auth::{AuthError, Direction, TranscriptMac};
use crate::confirm::ConfirmError;
use crate::entropy::{self, Verdict};
use crate::estimate::{EstimateError, QberEstimate};
use crate::pipeline::{BlockOutcome, BlockReport, StageTimes};
use crate::reconcile::ReconcileError;
use crate::rng::RngError;
use wire::{Body, Envelope, check_block_id};

/// Why a block's session ended without key other than a normal discard: the block is lost on
/// this side and its peer is told.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// A message could not be decoded (or encoded).
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A message for another block.
    #[error("message for block {got:?} reached the session of block {expected:?}")]
    BlockId {
        /// This session's block.
        expected: String,
        /// The message's block.
        got: String,
    },
    /// A sequence number other than the next one: a replayed, dropped or reordered message.
    #[error("message number {got} where {expected} was next (replayed, dropped or reordered)")]
    Sequence {
        /// The next number.
        expected: u32,
        /// The message's number.
        got: u32,
    },
    /// A message this side does not expect now.
    #[error("unexpected {got} message while {state}")]
    Unexpected {
        /// The message kind.
        got: &'static str,
        /// What the session was doing.
        state: &'static str,
    },
    /// The peer's hello disagrees with this side's settings or raw block.
    #[error("hello refused: {0}")]
    Hello(String),
    /// A message's contents are inconsistent with what both sides know.
    #[error("inconsistent {message}: {reason}")]
    Inconsistent {
        /// The message kind.
        message: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The two sides computed different secret lengths.
    #[error("secret length differs: ours {ours} bits, peer's {theirs}")]
    SecretLength {
        /// This side's length.
        ours: u64,
        /// The peer's length.
        theirs: u64,
    },
    /// Authentication failed or its keys ran out; no key is released.
    #[error("authentication: {0}")]
    Auth(#[from] AuthError),
    /// The peer ended the block.
    #[error("the peer aborted the block: {0}")]
    PeerAborted(String),
    /// A stage failed.
    #[error("{stage}: {message}")]
    Stage {
        /// The stage.
        stage: &'static str,
        /// Its error.
        message: String,
    },
    /// The settings are unusable.
    #[error("invalid session configuration: {0}")]
    Config(String),
    /// The randomness source failed.
    #[error("randomness: {0}")]
    Rng(String),
    /// A message arrived after the session had ended.
    #[error("the session of this block has ended")]
    Ended,
}

impl From<RngError> for SessionError {
    fn from(e: RngError) -> Self {
        SessionError::Rng(e.to_string())
    }
}

impl From<ReconcileError> for SessionError {
    fn from(e: ReconcileError) -> Self {
        stage("reconcile", e)
    }
}

impl From<EstimateError> for SessionError {
    fn from(e: EstimateError) -> Self {
        stage("estimate", e)
    }
}

impl From<ConfirmError> for SessionError {
    fn from(e: ConfirmError) -> Self {
        stage("confirm", e)
    }
}

fn stage(stage: &'static str, e: impl std::fmt::Display) -> SessionError {
    SessionError::Stage {
        stage,
        message: e.to_string(),
    }
}

/// How a session ended normally: the block's report and, if it yielded key, the final key.
#[derive(Debug)]
pub struct SessionOutcome {
    /// The report (the same on both sides except the stage times, which are each side's).
    pub report: BlockReport,
    /// The final key, when `report.outcome` is [`BlockOutcome::Key`].
    pub key: Option<BitBlock>,
}

/// What a driver needs of either side.
pub trait Party: Send {
    /// The block this session is for.
    fn block_id(&self) -> &str;
    /// Feeds one received message. An error ends the session (it is also its outcome).
    fn handle(&mut self, message: &[u8]) -> Result<(), SessionError>;
    /// The next message to send, if any.
    fn poll_transmit(&mut self) -> Option<Vec<u8>>;
    /// True once the session has ended (outcome ready or taken; messages may still wait to be
    /// sent).
    fn is_finished(&self) -> bool;
    /// The outcome, once finished (taken once).
    fn take_outcome(&mut self) -> Option<Result<SessionOutcome, SessionError>>;
}

/// What both sides' sessions hold: the link, the channel, the report so far, the outcome.
struct Core {
    link: Arc<Link>,
    ch: Channel,
    report: BlockReport,
    outcome: Option<Result<SessionOutcome, SessionError>>,
    /// Set with the outcome; stays set once the outcome is taken.
    finished: bool,
}

impl Core {
    /// Checks the block ID and the raw block's length (more than twice the sample, under 2^32).
    fn new(
        link: Arc<Link>,
        block_id: String,
        raw_bits: usize,
        outgoing: Direction,
    ) -> Result<Self, SessionError> {
        check_block_id(&block_id).map_err(SessionError::Config)?;
        let sample_bits = link.config().sample_bits;
        if raw_bits <= 2 * sample_bits || raw_bits > u32::MAX as usize {
            return Err(SessionError::Config(format!(
                "block {block_id} has {raw_bits} bits: expected more than twice the \
                 {sample_bits}-bit sample and fewer than 2^32"
            )));
        }
        Ok(Self {
            report: empty_report(&block_id, raw_bits, sample_bits),
            ch: Channel::new(block_id, outgoing),
            link,
            outcome: None,
            finished: false,
        })
    }

    /// Ends the session normally.
    fn end(&mut self, mut outcome: SessionOutcome) {
        outcome.report.messages = self.ch.messages;
        self.outcome = Some(Ok(outcome));
        self.finished = true;
    }

    /// Ends the session without key: the hash key of the block's lease (if it got one) is
    /// retired on this side (docs/security.md, 9) and the peer is told; if it has ended
    /// already, its driver drops the abort.
    fn fail(&mut self, e: SessionError, hash_key_position: Option<u64>) {
        if let Some(h) = hash_key_position {
            self.link.auth_keys().retire_hash_key(h);
        }
        self.ch.abort(&e);
        self.outcome = Some(Err(e));
        self.finished = true;
    }
}

/// One side's protocol logic over its [`Core`]; every [`Party`] method but `handle`'s step is
/// the same for both sides.
trait Side: Send {
    fn core(&self) -> &Core;
    fn core_mut(&mut self) -> &mut Core;
    /// Handles one received message (any error ends the session).
    fn step(&mut self, message: &[u8]) -> Result<(), SessionError>;
    /// Position of the block's hash key, once leased.
    fn hash_key_position(&self) -> Option<u64>;
}

impl<S: Side> Party for S {
    fn block_id(&self) -> &str {
        &self.core().ch.block_id
    }

    fn handle(&mut self, message: &[u8]) -> Result<(), SessionError> {
        if self.core().finished {
            return Err(SessionError::Ended);
        }
        self.step(message).inspect_err(|e| {
            let h = self.hash_key_position();
            self.core_mut().fail(e.clone(), h);
        })
    }

    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.core_mut().ch.outbox.pop_front()
    }

    fn is_finished(&self) -> bool {
        self.core().finished
    }

    fn take_outcome(&mut self) -> Option<Result<SessionOutcome, SessionError>> {
        self.core_mut().outcome.take()
    }
}

/// One side's end of a block's channel: sequence numbers, the two transcripts, the outbox.
struct Channel {
    block_id: String,
    next_tx: u32,
    next_rx: u32,
    sent: TranscriptMac,
    received: TranscriptMac,
    outbox: VecDeque<Vec<u8>>,
    messages: u32,
}

impl Channel {
    fn new(block_id: String, outgoing: Direction) -> Self {
        let incoming = match outgoing {
            Direction::AliceToBob => Direction::BobToAlice,
            Direction::BobToAlice => Direction::AliceToBob,
        };
        Self {
            sent: TranscriptMac::new(block_id.as_bytes(), outgoing),
            received: TranscriptMac::new(block_id.as_bytes(), incoming),
            block_id,
            next_tx: 0,
            next_rx: 0,
            outbox: VecDeque::new(),
            messages: 0,
        }
    }

    /// Queues `body`; everything but tags and aborts joins the sent transcript.
    fn send(&mut self, body: Body) -> Result<(), SessionError> {
        let authenticated = !matches!(body, Body::Tag { .. } | Body::Abort { .. });
        let bytes = Envelope {
            block_id: self.block_id.clone(),
            seq: self.next_tx,
            body,
        }
        .encode()?;
        self.next_tx += 1;
        if authenticated {
            self.sent.absorb(&bytes);
        }
        self.outbox.push_back(bytes);
        self.messages += 1;
        Ok(())
    }

    /// Decodes and checks one received message; everything but tags and aborts joins the
    /// received transcript.
    fn receive(&mut self, bytes: &[u8]) -> Result<Body, SessionError> {
        let env = Envelope::decode(bytes)?;
        if env.block_id != self.block_id {
            return Err(SessionError::BlockId {
                expected: self.block_id.clone(),
                got: env.block_id,
            });
        }
        if env.seq != self.next_rx {
            return Err(SessionError::Sequence {
                expected: self.next_rx,
                got: env.seq,
            });
        }
        self.next_rx += 1;
        self.messages += 1;
        if !matches!(env.body, Body::Tag { .. } | Body::Abort { .. }) {
            self.received.absorb(bytes);
        }
        Ok(env.body)
    }

    /// Tells the peer the block ended here (best effort: it may be gone already).
    fn abort(&mut self, why: &SessionError) {
        if !matches!(why, SessionError::PeerAborted(_) | SessionError::Ended) {
            let reason = why.to_string();
            // An abort that cannot be encoded is not sent; the peer times out instead.
            let _ = self.send(Body::Abort { reason });
        }
    }
}

/// A report with nothing measured yet.
fn empty_report(block_id: &str, raw_bits: usize, sample_bits: usize) -> BlockReport {
    BlockReport {
        index: 0,
        block_id: block_id.to_owned(),
        raw_bits: raw_bits as u64,
        sample_bits: sample_bits as u64,
        sample_errors: 0,
        qber: 0.0,
        qber_upper: 0.0,
        reconciled_bits: (raw_bits - sample_bits) as u64,
        qber_tolerated: None,
        leak_alice_bits: 0,
        leak_bob_bits: 0,
        round_trips: 0,
        messages: 0,
        errors_corrected: 0,
        residual_errors: 0,
        true_errors: 0,
        efficiency: None,
        confirm_tag_bits: 0,
        confirmed: false,
        retried_frames: 0,
        dropped_frames: 0,
        dropped_frame_bits: 0,
        secret: None,
        final_bits: 0,
        auth_bits: 0,
        entropy: None,
        outcome: BlockOutcome::Key,
        times: StageTimes::default(),
    }
}

/// The finite-key length both sides compute from what both know.
fn secret_length(
    link: &Link,
    report: &BlockReport,
    key_bits: usize,
) -> Result<SecretLength, SessionError> {
    let cfg = link.config();
    let input = FiniteKeyInput {
        key_bits: key_bits as u64,
        sample_bits: cfg.sample_bits as u64,
        qber: report.qber_tolerated.unwrap_or(cfg.max_qber),
        // A dropped frame's bits count as disclosed (docs/security.md, section 6).
        leak_ec_bits: report.leak_alice_bits + report.leak_bob_bits + report.dropped_frame_bits,
        confirm_tag_bits: report.confirm_tag_bits,
        length_choices: link.ladder().len(),
        eps_sec: cfg.eps_sec,
        eps_cor: cfg.eps_cor,
    };
    Bb84Tlgr2012::default()
        .secret_length(&input)
        .map_err(|e| stage("secret length", e))
}

/// Records the estimate in the report; the reason to discard the block, if any (both sides
/// decide the same from the same count).
fn record_estimate(r: &mut BlockReport, est: &QberEstimate, link: &Link) -> Option<String> {
    r.sample_errors = est.errors;
    r.qber = est.observed_qber;
    r.qber_upper = est.qber_upper;
    let max = link.config().max_qber;
    if est.qber_upper > max {
        return Some(format!(
            "QBER upper bound {:.4} exceeds the limit {max:.4}",
            est.qber_upper
        ));
    }
    let Some(rung) = link.ladder().rung_for(est.observed_qber) else {
        return Some(format!(
            "sample QBER {:.4} is above the top rung {:.4}",
            est.observed_qber,
            link.ladder().top()
        ));
    };
    r.qber_tolerated = Some(rung);
    None
}

/// The entropy verdict on a final key: the report's last fields, and the key unless it failed.
fn check_and_release(mut report: BlockReport, key: BitBlock) -> SessionOutcome {
    let t = Instant::now();
    let verdict = entropy::assess(&key.to_bytes());
    report.times.check = t.elapsed().as_secs_f64();
    report.entropy = Some(verdict.verdict);
    // Keys too short for a verdict are delivered: the hash output of a uniform seed needs no
    // statistics; only an actual failure quarantines.
    if verdict.verdict == Verdict::Fail {
        report.outcome = BlockOutcome::Quarantined(verdict.reasons.join("; "));
        return SessionOutcome { report, key: None };
    }
    report.final_bits = key.len() as u64;
    SessionOutcome {
        report,
        key: Some(key),
    }
}

/// A normal end without key.
fn discarded(mut report: BlockReport, why: String) -> SessionOutcome {
    report.outcome = BlockOutcome::Discarded(why);
    SessionOutcome { report, key: None }
}

#[cfg(test)]
mod tests;
