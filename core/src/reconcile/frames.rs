//! A block reconciled as many Cascade frames that advance together.
//!
//! Cascade is efficient on frames of 2^14-2^16 bits, while privacy amplification wants blocks of
//! 10^6-10^8 bits. [`FramedBob`] and [`FramedAlice`] run one Cascade party per frame and carry
//! the messages of every frame of a round in one [`FrameBatch`], so a block takes about the round
//! trips of one frame, whatever its size, and the frames' work of a round runs in parallel
//! (rayon). Bob sends a batch with the next message of every frame still running (its hello
//! first, its `Done` last); Alice answers every frame that expects an answer. Leakage is the sum
//! over frames, on each side (docs/security.md, section 6: the whole transcript is still
//! prefix-free, so the accounting holds).
//!
//! A batch that names a frame twice, a frame out of range, misses an answer Bob waits for, or
//! carries one he does not, is a [`ReconcileError`]; so is any frame's own error.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::ReconcileError;
use super::cascade::{Alice, Bob, BobStats};
use super::message::Message;
use crate::bits::BitBlock;

/// Version byte of the batch encoding.
pub const FRAME_BATCH_VERSION: u8 = 1;

/// The messages of one round, one per frame that has something to say, by frame index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameBatch {
    /// `(frame index, message)`, indices strictly increasing.
    pub messages: Vec<(u32, Message)>,
}

impl FrameBatch {
    /// The wire encoding: version byte, then postcard.
    pub fn encode(&self) -> Result<Vec<u8>, ReconcileError> {
        super::encode_versioned(FRAME_BATCH_VERSION, self, "frame batch")
    }

    /// Decodes one batch, rejecting another version, malformed bodies and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, ReconcileError> {
        super::decode_versioned(FRAME_BATCH_VERSION, bytes, "frame batch")
    }

    /// Pairs each message with its frame, checking that indices increase and are in range.
    fn pair_with<P>(self, frames: &mut [P]) -> Result<Vec<(u32, &mut P, Message)>, ReconcileError> {
        let count = frames.len();
        let mut rest = frames.iter_mut().enumerate();
        let mut jobs = Vec::with_capacity(self.messages.len());
        let mut last: Option<u32> = None;
        for (i, m) in self.messages {
            if last.is_some_and(|l| i <= l) {
                return Err(ReconcileError::Malformed(format!(
                    "frame {i} after frame {}: indices must increase",
                    last.unwrap_or(0)
                )));
            }
            last = Some(i);
            // Indices increase, so frame `i` is still ahead in `rest` if it exists.
            let frame = rest
                .find(|(j, _)| *j == i as usize)
                .map(|(_, f)| f)
                .ok_or_else(|| {
                    ReconcileError::Malformed(format!("frame {i} of a block of {count} frames"))
                })?;
            jobs.push((i, frame, m));
        }
        Ok(jobs)
    }
}

/// Fewest frames with a message in one round for which the round's work goes to rayon; a
/// round with fewer (the tail of a block, where a few frames chase their last errors) runs on
/// the calling thread, which saves the hand-over to the pool and back.
const PARALLEL_MIN_FRAMES: usize = 8;

/// Runs `f` on every `(frame, message)` job of a round, in parallel when that can pay (more
/// than one rayon thread and at least [`PARALLEL_MIN_FRAMES`] jobs), and returns the results
/// by frame index, in job order.
fn run_round<P, R, F>(
    jobs: Vec<(u32, &mut P, Message)>,
    f: F,
) -> Result<Vec<(u32, R)>, ReconcileError>
where
    P: Send,
    R: Send,
    F: Fn(&mut P, Message) -> Result<R, ReconcileError> + Sync,
{
    if jobs.len() < PARALLEL_MIN_FRAMES || rayon::current_num_threads() <= 1 {
        return jobs
            .into_iter()
            .map(|(i, p, m)| f(p, m).map(|r| (i, r)))
            .collect();
    }
    jobs.into_par_iter()
        .map(|(i, p, m)| f(p, m).map(|r| (i, r)))
        .collect()
}

/// Cuts `key` into frames of `frame_bits` bits (the last one takes the remainder, and a
/// remainder under half a frame joins the frame before it); `frame_bits = 0` or at least the
/// key length gives one frame.
pub fn split_frames(key: &BitBlock, frame_bits: usize) -> Result<Vec<BitBlock>, ReconcileError> {
    let n = key.len();
    let count = if frame_bits == 0 || frame_bits >= n {
        1
    } else {
        (n + frame_bits / 2) / frame_bits
    };
    (0..count)
        .map(|f| {
            let end = if f + 1 == count {
                n
            } else {
                (f + 1) * frame_bits
            };
            key.slice(f * frame_bits..end)
                .map_err(|e| ReconcileError::BadParams(e.to_string()))
        })
        .collect()
}

/// Joins frames back into one key (word copies when every frame but the last is a whole number
/// of words, as [`split_frames`] makes them for frame sizes that are multiples of 64).
pub fn join_frames(frames: &[BitBlock]) -> BitBlock {
    let total: usize = frames.iter().map(BitBlock::len).sum();
    let aligned = frames
        .split_last()
        .is_none_or(|(_, init)| init.iter().all(|f| f.len().is_multiple_of(64)));
    if !aligned {
        let mut out = BitBlock::zeros(0);
        for f in frames {
            out.extend_from(f);
        }
        return out;
    }
    let mut out = BitBlock::zeros(total);
    out.with_words_mut(|words| {
        let mut at = 0;
        for f in frames {
            let w = f.words();
            words[at..at + w.len()].copy_from_slice(w);
            at += w.len();
        }
    });
    out
}

/// Alice's side: one Cascade [`Alice`] per frame.
#[derive(Debug)]
pub struct FramedAlice {
    frames: Vec<Alice>,
}

impl FramedAlice {
    /// Alice over these frames (each with its plan, if agreed beforehand).
    pub fn new(frames: Vec<Alice>) -> Self {
        Self { frames }
    }

    /// Answers one batch of Bob's: an answer for every frame that asked (frames that sent
    /// `Done` answer nothing).
    pub fn handle(&mut self, batch: FrameBatch) -> Result<FrameBatch, ReconcileError> {
        let jobs = batch.pair_with(&mut self.frames)?;
        let answers = run_round(jobs, |alice, m| alice.handle(m))?;
        Ok(FrameBatch {
            messages: answers
                .into_iter()
                .filter_map(|(i, a)| a.map(|a| (i, a)))
                .collect(),
        })
    }

    /// True once every frame has Bob's `Done`.
    pub fn is_done(&self) -> bool {
        self.frames.iter().all(Alice::is_done)
    }

    /// `(Alice's parities, Bob's key-dependent bits)` summed over frames.
    pub fn leak_bits(&self) -> (u64, u64) {
        self.frames.iter().fold((0, 0), |(a, b), f| {
            (a + f.disclosed_bits(), b + f.bob_leak_bits())
        })
    }

    /// The reconciled frames (Alice's never change).
    pub fn into_frames(self) -> Vec<BitBlock> {
        self.frames.into_iter().map(Alice::into_key).collect()
    }
}

/// Bob's side: one Cascade [`Bob`] per frame.
#[derive(Debug)]
pub struct FramedBob {
    frames: Vec<Bob>,
    /// Frames whose last message expects an answer.
    awaiting: Vec<bool>,
}

impl FramedBob {
    /// Bob over these frames.
    pub fn new(frames: Vec<Bob>) -> Self {
        let n = frames.len();
        Self {
            frames,
            awaiting: vec![false; n],
        }
    }

    /// The first batch: every frame's hello.
    pub fn start(&mut self) -> Result<FrameBatch, ReconcileError> {
        let mut messages = Vec::with_capacity(self.frames.len());
        for (i, bob) in self.frames.iter_mut().enumerate() {
            messages.push((i as u32, bob.start()?));
            self.awaiting[i] = true;
        }
        Ok(FrameBatch { messages })
    }

    /// Reads Alice's answers and returns the next batch (each answered frame's next message;
    /// empty once every frame has sent `Done`).
    pub fn handle(&mut self, batch: FrameBatch) -> Result<FrameBatch, ReconcileError> {
        let jobs = batch.pair_with(&mut self.frames)?;
        check_awaited(&jobs, &self.awaiting)?;
        let next = run_round(jobs, |bob, answer| bob.handle(answer))?;
        let mut messages = Vec::with_capacity(next.len());
        // Frames without an answer were not awaiting one (checked) and stay so.
        for (i, m) in next {
            self.awaiting[i as usize] = !matches!(m, Message::Done { .. });
            messages.push((i, m));
        }
        Ok(FrameBatch { messages })
    }

    /// True once every frame has sent `Done`.
    pub fn is_done(&self) -> bool {
        self.frames.iter().all(Bob::is_done)
    }

    /// Bob's counters summed over frames, with `round_trips` the largest of any frame (the
    /// frames advance together).
    pub fn stats(&self) -> BobStats {
        let mut s = BobStats::default();
        for f in &self.frames {
            let t = f.stats();
            s.disclosed_bits += t.disclosed_bits;
            s.corrected += t.corrected;
            s.round_trips = s.round_trips.max(t.round_trips);
            s.messages = s.messages.max(t.messages);
            s.passes = s.passes.max(t.passes);
            s.bob_parity_bits += t.bob_parity_bits;
            s.speculative_bits += t.speculative_bits;
        }
        s
    }

    /// The corrected frames.
    pub fn into_frames(self) -> Vec<BitBlock> {
        self.frames.into_iter().map(Bob::into_key).collect()
    }
}

/// Checks that the frames answered in `jobs` (indices increasing) are exactly the frames whose
/// last message expects an answer.
fn check_awaited<P>(
    jobs: &[(u32, &mut P, Message)],
    awaiting: &[bool],
) -> Result<(), ReconcileError> {
    let mut answered = jobs.iter().map(|(i, _, _)| *i as usize).peekable();
    for (i, &waiting) in awaiting.iter().enumerate() {
        let has = answered.next_if_eq(&i).is_some();
        if has != waiting {
            return Err(ReconcileError::Malformed(format!(
                "frame {i}: {} answer",
                if waiting { "missing" } else { "unexpected" }
            )));
        }
    }
    Ok(())
}

/// What a framed loopback run measured.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct FramedReport {
    /// Bob's counters over all frames.
    pub bob: BobStats,
    /// Parities Alice disclosed, all frames.
    pub alice_disclosed_bits: u64,
    /// Bob's key-dependent bits, all frames ([`BobStats::bob_leak_bits`]).
    pub bob_disclosed_bits: u64,
    /// Batches Bob sent (round trips of the block, the last `Done` batch included).
    pub batches: u32,
    /// Encoded bytes Bob sent.
    pub bytes_to_alice: u64,
    /// Encoded bytes Alice sent.
    pub bytes_to_bob: u64,
}

/// Runs both framed parties in this process through the batch encoding until Bob is done.
pub fn run_loopback(
    alice: &mut FramedAlice,
    bob: &mut FramedBob,
) -> Result<FramedReport, ReconcileError> {
    let (mut to_alice, mut to_bob, mut batches) = (0u64, 0u64, 0u32);
    let mut msg = bob.start()?;
    while !msg.messages.is_empty() {
        let wire = msg.encode()?;
        to_alice += wire.len() as u64;
        batches += 1;
        let answer = alice.handle(FrameBatch::decode(&wire)?)?;
        if answer.messages.is_empty() {
            break;
        }
        let wire = answer.encode()?;
        to_bob += wire.len() as u64;
        msg = bob.handle(FrameBatch::decode(&wire)?)?;
    }
    let (alice_disclosed_bits, bob_disclosed_bits) = alice.leak_bits();
    Ok(FramedReport {
        bob: bob.stats(),
        alice_disclosed_bits,
        bob_disclosed_bits,
        batches,
        bytes_to_alice: to_alice,
        bytes_to_bob: to_bob,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::reconcile::cascade::{Params, Plan, Variant};
    use crate::reconcile::testkit::{error_count, noisy_pair};

    fn framed(
        a: &BitBlock,
        b: &BitBlock,
        frame_bits: usize,
        variant: Variant,
        qber: f64,
    ) -> (FramedAlice, FramedBob) {
        let (fa, fb) = (
            split_frames(a, frame_bits).unwrap(),
            split_frames(b, frame_bits).unwrap(),
        );
        let mut alices = Vec::new();
        let mut bobs = Vec::new();
        for (x, y) in fa.into_iter().zip(fb) {
            let plan = Plan::new(Params {
                variant: variant.clone(),
                n: x.len() as u32,
                qber,
                seed: [7; 32],
            })
            .unwrap();
            alices.push(Alice::with_plan(x, Arc::clone(&plan)));
            bobs.push(Bob::new(plan, y).unwrap());
        }
        (FramedAlice::new(alices), FramedBob::new(bobs))
    }

    #[test]
    fn frames_split_and_join_back() {
        let (a, _) = noisy_pair(100_000, 0, 1);
        for fb in [0, 1 << 14, 30_000, 60_000, 100_000, 1 << 20] {
            let frames = split_frames(&a, fb).unwrap();
            assert_eq!(join_frames(&frames), a, "frame bits {fb}");
            assert!(frames.iter().all(|f| f.len() >= fb.min(100_000) / 2));
        }
        // 100000 / 16384 = 6.1: six frames, the last one 18176 bits.
        let f = split_frames(&a, 1 << 14).unwrap();
        assert_eq!((f.len(), f[5].len()), (6, 100_000 - 5 * 16384));
    }

    #[test]
    fn a_framed_block_reconciles_in_the_round_trips_of_one_frame() {
        let n = 1 << 18;
        for (variant, qber) in [(Variant::yanetal(), 0.02), (Variant::option8(), 0.05)] {
            let name = variant.name.to_string();
            let (a, b) = noisy_pair(n, error_count(n, qber), 3);
            let (mut alice, mut bob) = framed(&a, &b, 1 << 14, variant.clone(), qber);
            let r = run_loopback(&mut alice, &mut bob).unwrap();
            assert!(alice.is_done() && bob.is_done(), "{name}");
            let (ka, kb) = (
                join_frames(&alice.into_frames()),
                join_frames(&bob.into_frames()),
            );
            assert_eq!(ka, a, "{name}: Alice's key never changes");
            assert_eq!(ka.hamming_distance(&kb).unwrap(), 0, "{name}");
            assert_eq!(r.bob.corrected as usize, error_count(n, qber), "{name}");
            assert_eq!(r.alice_disclosed_bits, r.bob.disclosed_bits);
            assert_eq!(r.bob_disclosed_bits, r.bob.bob_leak_bits());
            // One batch per round trip of the slowest frame (its round trips are the block's),
            // plus the final Done batch: 16 frames cost the round trips of one.
            assert!(r.batches >= r.bob.round_trips, "{name}: {r:?}");
            assert!(r.batches <= r.bob.round_trips + 1, "{name}: {r:?}");
        }
    }

    #[test]
    fn bad_batches_are_errors() {
        let n = 1 << 15;
        let (a, b) = noisy_pair(n, error_count(n, 0.03), 4);
        let (mut alice, mut bob) = framed(&a, &b, 1 << 14, Variant::yanetal(), 0.03);
        let hello = bob.start().unwrap();
        assert_eq!(hello.messages.len(), 2);
        // Frame out of range, twice the same frame, decreasing indices.
        let m = hello.messages[0].1.clone();
        for bad in [
            vec![(2, m.clone())],
            vec![(0, m.clone()), (0, m.clone())],
            vec![(1, m.clone()), (0, m.clone())],
        ] {
            let mut x = framed(&a, &b, 1 << 14, Variant::yanetal(), 0.03).0;
            assert!(x.handle(FrameBatch { messages: bad }).is_err());
        }
        let answers = alice.handle(hello).unwrap();
        // An answer missing for a frame Bob waits for.
        let mut partial = answers.clone();
        partial.messages.pop();
        let mut b2 = framed(&a, &b, 1 << 14, Variant::yanetal(), 0.03).1;
        b2.start().unwrap();
        assert!(b2.handle(partial).is_err());
        // Encoding: version, garbage and trailing bytes.
        let wire = answers.encode().unwrap();
        assert_eq!(FrameBatch::decode(&wire).unwrap(), answers);
        assert!(FrameBatch::decode(&[]).is_err());
        assert!(FrameBatch::decode(&[9, 0]).is_err());
        let mut long = wire.clone();
        long.push(0);
        assert!(FrameBatch::decode(&long).is_err());
        let mut rng = crate::rng::SeededRandom::from_u64(5);
        for _ in 0..300 {
            let mut junk = vec![FRAME_BATCH_VERSION; 1 + rng.below(60) as usize];
            crate::rng::RandomSource::fill(&mut rng, &mut junk[1..]).unwrap();
            if let Ok(batch) = FrameBatch::decode(&junk) {
                let _ = bob.handle(batch);
            }
        }
    }

    /// Hashes every batch both ways of a framed run, the corrected frames and the counters.
    fn framed_digest(
        n: usize,
        frame_bits: usize,
        variant: Variant,
        qber: f64,
        seed: u64,
    ) -> String {
        let (a, b) = noisy_pair(n, error_count(n, qber), seed);
        let (mut alice, mut bob) = framed(&a, &b, frame_bits, variant, qber);
        let mut h = blake3::Hasher::new();
        let mut put = |dir: u8, bytes: &[u8]| {
            h.update(&[dir]);
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        let mut msg = bob.start().unwrap();
        while !msg.messages.is_empty() {
            let wire = msg.encode().unwrap();
            put(b'B', &wire);
            let answer = alice.handle(FrameBatch::decode(&wire).unwrap()).unwrap();
            if answer.messages.is_empty() {
                break;
            }
            let wire = answer.encode().unwrap();
            put(b'A', &wire);
            msg = bob.handle(FrameBatch::decode(&wire).unwrap()).unwrap();
        }
        assert!(alice.is_done() && bob.is_done());
        let s = bob.stats();
        let (la, lb) = alice.leak_bits();
        for v in [
            s.disclosed_bits,
            s.corrected,
            u64::from(s.round_trips),
            la,
            lb,
        ] {
            h.update(&v.to_le_bytes());
        }
        h.update(&join_frames(&bob.into_frames()).to_bytes());
        h.finalize().to_hex()[..16].to_string()
    }

    /// Pins the batch transcripts of framed runs (recorded before the Cascade performance
    /// work); see `transcripts_are_pinned` in the Cascade tests.
    #[test]
    fn framed_transcripts_are_pinned() {
        let got = [
            framed_digest((1 << 18) + 5000, 1 << 14, Variant::yanetal(), 0.02, 21),
            framed_digest(1 << 18, 1 << 16, Variant::yanetal(), 0.02, 22),
            framed_digest(
                1 << 17,
                1 << 14,
                Variant::by_name("yanetal-d").unwrap(),
                0.03,
                23,
            ),
            framed_digest(1 << 17, 1 << 15, Variant::option8(), 0.05, 24),
        ];
        if std::env::var_os("QKD_PRINT_DIGESTS").is_some() {
            println!("{got:?}");
        }
        let pinned: [&str; 4] = [
            "5c581fb0992c8fbb",
            "15ace61fa88f4a78",
            "abcdea827682b427",
            "d0c6f5bce7400c3f",
        ];
        assert_eq!(got, pinned, "framed transcript changed");
    }
}
