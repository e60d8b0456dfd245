//! Cascade as two sans-IO state machines.
//!
//! Bob starts with [`Bob::start`] (a [`Message::Hello`] carrying the [`Params`]: variant,
//! length, QBER estimate, public shuffle seed); Alice answers with the parities of every
//! top-level block of every normal pass at once (those parities do not depend on Bob's
//! corrections, and every pass discloses them anyway, so sending them up front costs no extra
//! leakage and saves one round trip per pass). Bob then runs the passes in order; all
//! bisection steps pending in one round travel in one [`Message::Query`] and Alice answers
//! them in one [`Message::Answer`]. BICONF rounds ask their block parity in a query of their
//! own. Bob ends with [`Message::Done`]. Variants with [`Tweaks::descend`] send
//! [`Message::Descend`] instead of queries: Bob adds his own parity of each block's left half,
//! so Alice knows the odd half and answers its left half too, two bisection levels per round
//! trip with the same parities disclosed (and, with [`Tweaks::speculate_below`], three levels
//! in the serial tail, one extra parity of Bob's counted as disclosed). Neither side does I/O: a driver (such as
//! [`LoopbackLink`](super::loopback::LoopbackLink)) moves the messages. Any malformed,
//! out-of-order or inconsistent message is a [`ReconcileError`] and poisons the session.
//!
//! Bisection: a block with an odd number of errors is split in a left part of
//! `ceil(len / 2)` bits and a right part; Bob asks the left parity and infers the right one.
//! Every parity Alice disclosed is remembered per pass (a binary tree of intervals per
//! top-level block), so no parity is ever asked twice and a later bisection of the same block
//! walks down through known parities without a round trip. After a correction, the top-level
//! block containing the bit in every started pass (with sub-block reuse: the smallest known
//! block containing it that became odd) is bisected again: the cascade step.
//!
//! The [`Plan`] (block sizes and shuffles) is derived from the public parameters only, so one
//! `Arc<Plan>` can serve many blocks; building it (a Fisher-Yates shuffle per pass) costs more
//! than reconciling one block. Each side keeps, per pass, its key in that pass's shuffled
//! order (built when first needed), so every block and every bisection interval is a
//! contiguous bit range whose parity is a word-level range parity; a correction flips the bit
//! in every copy through the inverse permutation. Passes with few blocks get their top-level
//! parities from precomputed masks instead of a copy.

mod plan;
mod variant;

use std::sync::Arc;

use zeroize::Zeroizing;

pub use plan::{MAX_BITS, Params, Plan};
pub use variant::{Biconf, BlockRule, MIN_QBER, Tweaks, Variant};

use super::ReconcileError;
use super::message::{Message, Parities, Question};
use crate::bits::{BitBlock, kernels, range_parity};
use plan::PassPlan;

#[cfg(test)]
mod tests;

/// Parity of bits `s..e` of `words` (`e <= 64 * words.len()`): inline for ranges spanning
/// up to eight words (most bisection intervals), the run-time dispatched kernel beyond.
#[inline]
fn parity(words: &[u64], s: usize, e: usize) -> bool {
    if e <= s {
        return false;
    }
    let (fw, lw) = (s / 64, (e - 1) / 64);
    if lw - fw < 8
        && let Some(ws) = words.get(fw..=lw)
    {
        let mut acc = ws.iter().fold(0, |a, w| a ^ w);
        // Drop the bits below `s` of the first word and above `e - 1` of the last (for one
        // word, the bits above `e - 1` are all at or above `s`, so the two steps compose).
        let (first, last) = (ws.first().unwrap_or(&0), ws.last().unwrap_or(&0));
        acc ^= first & !(u64::MAX << (s % 64));
        acc ^= last & !(u64::MAX >> (63 - (e - 1) % 64));
        return acc.count_ones() & 1 == 1;
    }
    range_parity(kernels::best(), words, s, e)
}

/// Parity of every used top-level block of pass `pp` of `key`, in block order.
fn top_parities(key: &BitBlock, copy: Option<&BitBlock>, pp: &PassPlan, n: usize) -> Vec<bool> {
    let k = kernels::best();
    let words = match (&pp.perm, copy) {
        (None, _) => Some(key.words()),
        (Some(_), Some(c)) => Some(c.words()),
        _ => None,
    };
    if let Some(words) = words {
        return (0..pp.used_blocks)
            .map(|b| {
                let (s, e) = pp.block_range(b, n);
                range_parity(k, words, s, e)
            })
            .collect();
    }
    if let Some(masks) = &pp.masks {
        let mut out: Vec<bool> = masks
            .iter()
            .map(|m| {
                let acc = key
                    .words()
                    .iter()
                    .zip(m.words())
                    .fold(0u64, |acc, (a, b)| acc ^ (a & b));
                acc.count_ones() & 1 == 1
            })
            .collect();
        if out.len() < pp.used_blocks {
            let rest = out.iter().fold(key.parity_all(), |acc, &p| acc ^ p);
            out.push(rest);
        }
        return out;
    }
    let c = shuffled_copy(key, pp);
    top_parities(key, Some(&c), pp, n)
}

/// `key` in the order of pass `pp`: bit `j` of the result is bit `perm[j]` of `key`.
fn shuffled_copy(key: &BitBlock, pp: &PassPlan) -> BitBlock {
    let Some(perm) = &pp.perm else {
        return key.clone();
    };
    let mut out = BitBlock::zeros(key.len());
    if perm.len() != key.len() {
        // Never happens (both sides check the key length against the plan); stay safe.
        return out;
    }
    out.with_words_mut(|dst| gather(key.words(), perm, dst, true));
    out
}

/// `dst` bit `j` = `src` bit `perm[j]`, where `perm` holds values below `64 * src.len()` and
/// `dst` has `ceil(perm.len() / 64)` words. Uses AVX-512 or AVX2 gathers when allowed and
/// available.
fn gather(src: &[u64], perm: &[u32], dst: &mut [u64], simd: bool) {
    debug_assert!(perm.iter().all(|&i| (i as usize) < 64 * src.len()));
    #[cfg(target_arch = "x86_64")]
    if simd && std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F is available (checked); the caller guarantees every index is
        // below `64 * src.len()`, which is what `gather_avx512` needs.
        unsafe { gather_avx512(src, perm, dst) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if simd && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is available (checked); the caller guarantees every index is below
        // `64 * src.len()`, which is what `gather_avx2` needs.
        unsafe { gather_avx2(src, perm, dst) };
        return;
    }
    let _ = simd;
    gather_scalar(src, perm, dst);
}

fn gather_scalar(src: &[u64], perm: &[u32], dst: &mut [u64]) {
    let bit = |i: u32| -> u64 {
        let i = i as usize;
        // SAFETY: every index is below `64 * src.len()` (the caller's contract, checked in
        // debug builds), so `i / 64 < src.len()`. This gather is the hottest loop of Cascade
        // and the bounds check a large part of it.
        let word = unsafe { *src.get_unchecked(i >> 6) };
        (word >> (i & 63)) & 1
    };
    for (w, chunk) in dst.iter_mut().zip(perm.chunks(64)) {
        // Four independent accumulators keep the OR chain from serializing the loads.
        let mut acc = [0u64; 4];
        let mut quads = chunk.chunks_exact(4);
        for (q, c) in (&mut quads).enumerate() {
            for (a, (&i, lane)) in acc.iter_mut().zip(c.iter().zip(0..)) {
                *a |= bit(i) << (4 * q + lane);
            }
        }
        let base = chunk.len() - quads.remainder().len();
        for (j, &i) in quads.remainder().iter().enumerate() {
            acc[0] |= bit(i) << (base + j);
        }
        *w = acc[0] | acc[1] | acc[2] | acc[3];
    }
}

/// AVX-512 version of [`gather_scalar`]: 16 bits per gather of 32-bit words.
///
/// # Safety
/// The CPU must support AVX-512F, and every index in `perm` must be below `64 * src.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gather_avx512(src: &[u64], perm: &[u32], dst: &mut [u64]) {
    use std::arch::x86_64::*;
    let base = src.as_ptr().cast::<i32>();
    let low5 = _mm512_set1_epi32(31);
    let one = _mm512_set1_epi32(1);
    let full = perm.len() / 64;
    for (w, chunk) in dst.iter_mut().zip(perm.chunks_exact(64)) {
        let mut out = 0u64;
        for q in 0..4 {
            // SAFETY: `chunk` has 64 entries, so 16 u32 from `16 * q` are in bounds.
            let idx = unsafe { _mm512_loadu_si512(chunk.as_ptr().add(16 * q).cast()) };
            let word = _mm512_srli_epi32::<5>(idx);
            // SAFETY: each index `i < 64 * src.len()`, so the 32-bit word `i / 32` lies
            // within `src` viewed as `2 * src.len()` little-endian u32 words (x86 is
            // little-endian, so bit `i % 32` of that word is bit `i` of the block).
            let g = unsafe { _mm512_i32gather_epi32::<4>(word, base) };
            let bits = _mm512_srlv_epi32(g, _mm512_and_si512(idx, low5));
            out |= u64::from(_mm512_test_epi32_mask(bits, one)) << (16 * q);
        }
        *w = out;
    }
    if let (Some(tail), Some(last)) = (perm.get(full * 64..), dst.get_mut(full..)) {
        gather_scalar(src, tail, last);
    }
}

/// AVX2 version of [`gather_scalar`]: 8 bits per gather of 32-bit words, each moved to its
/// lane's sign bit and collected with a movemask.
///
/// # Safety
/// The CPU must support AVX2, and every index in `perm` must be below `64 * src.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gather_avx2(src: &[u64], perm: &[u32], dst: &mut [u64]) {
    use std::arch::x86_64::*;
    let base = src.as_ptr().cast::<i32>();
    let low5 = _mm256_set1_epi32(31);
    let full = perm.len() / 64;
    for (w, chunk) in dst.iter_mut().zip(perm.chunks_exact(64)) {
        let mut out = 0u64;
        for q in 0..8 {
            // SAFETY: `chunk` has 64 entries, so 8 u32 from `8 * q` are in bounds.
            let idx = unsafe { _mm256_loadu_si256(chunk.as_ptr().add(8 * q).cast()) };
            let word = _mm256_srli_epi32::<5>(idx);
            // SAFETY: each index `i < 64 * src.len()`, so the 32-bit word `i / 32` lies
            // within `src` viewed as `2 * src.len()` little-endian u32 words (x86 is
            // little-endian, so bit `i % 32` of that word is bit `i` of the block).
            let g = unsafe { _mm256_i32gather_epi32::<4>(base, word) };
            // Shift bit `i % 32` up to bit 31: by `31 - i % 32`, which is `(i % 32) ^ 31`.
            let up = _mm256_xor_si256(_mm256_and_si256(idx, low5), low5);
            let bits = _mm256_sllv_epi32(g, up);
            let mask = _mm256_movemask_ps(_mm256_castsi256_ps(bits)) as u32;
            out |= u64::from(mask & 0xff) << (8 * q);
        }
        *w = out;
    }
    if let (Some(tail), Some(last)) = (perm.get(full * 64..), dst.get_mut(full..)) {
        gather_scalar(src, tail, last);
    }
}

/// Checks a question against the plan: returns its pass and range `s..e`.
fn check_question(plan: &Plan, q: &Question) -> Result<(usize, usize, usize), ReconcileError> {
    let pass = q.pass as usize;
    if plan.get_pass(pass).is_none() {
        return Err(ReconcileError::BadQuestion(format!(
            "pass {pass}; the plan has {} passes",
            plan.total_passes()
        )));
    }
    let (s, e) = check_range(plan, q)?;
    Ok((pass, s, e))
}

/// Checks the range of a question whose pass is known to exist: returns `s..e`.
#[inline]
fn check_range(plan: &Plan, q: &Question) -> Result<(usize, usize), ReconcileError> {
    let (s, len) = (q.start as usize, q.len as usize);
    let e = s.saturating_add(len);
    if len == 0 || e > plan.n {
        return Err(ReconcileError::BadQuestion(format!(
            "range {s}+{len} in pass {}; expected a non-empty range within 0..{}",
            q.pass, plan.n
        )));
    }
    Ok((s, e))
}

/// Alice's key in the order of pass `pass` (checked by the caller), built on first use.
fn alice_words<'a>(
    key: &'a BitBlock,
    copies: &'a mut Vec<Option<BitBlock>>,
    plan: &Plan,
    pass: usize,
) -> &'a [u64] {
    let pp = plan.pass(pass);
    if pp.perm.is_none() {
        return key.words();
    }
    if copies.len() <= pass {
        copies.resize_with(pass + 1, || None);
    }
    copies[pass]
        .get_or_insert_with(|| shuffled_copy(key, pp))
        .words()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AliceState {
    AwaitHello,
    Answering,
    Done,
    Failed,
}

/// Alice: holds the reference key and answers Bob's parity questions. Her key never changes.
pub struct Alice {
    key: BitBlock,
    expected_plan: Option<Arc<Plan>>,
    plan: Option<Arc<Plan>>,
    copies: Vec<Option<BitBlock>>,
    state: AliceState,
    next_round: u32,
    disclosed: u64,
    bob_parities: u64,
}

impl std::fmt::Debug for Alice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alice")
            .field("key_bits", &self.key.len())
            .field("state", &self.state)
            .field("disclosed", &self.disclosed)
            .finish_non_exhaustive()
    }
}

impl Alice {
    /// Alice with her key; she builds the plan from Bob's hello.
    pub fn new(key: BitBlock) -> Self {
        Self {
            key,
            expected_plan: None,
            plan: None,
            copies: Vec::new(),
            state: AliceState::AwaitHello,
            next_round: 1,
            disclosed: 0,
            bob_parities: 0,
        }
    }

    /// Alice with a plan agreed beforehand (or cached); Bob's hello must match it.
    pub fn with_plan(key: BitBlock, plan: Arc<Plan>) -> Self {
        let mut a = Self::new(key);
        a.expected_plan = Some(plan);
        a
    }

    /// Alice's key.
    pub fn key(&self) -> &BitBlock {
        &self.key
    }

    /// Takes the key back.
    pub fn into_key(self) -> BitBlock {
        self.key
    }

    /// Parity bits disclosed so far (Alice's leakage).
    pub fn disclosed_bits(&self) -> u64 {
        self.disclosed
    }

    /// Bob's key-dependent bits so far, as he counts them ([`BobStats::bob_leak_bits`]): one
    /// per parity Alice disclosed plus the parities Bob sent in descend questions. Both sides
    /// get the same number, so both can size the key.
    pub fn bob_leak_bits(&self) -> u64 {
        self.disclosed + self.bob_parities
    }

    /// True once Bob's `Done` arrived.
    pub fn is_done(&self) -> bool {
        self.state == AliceState::Done
    }

    /// Decodes `bytes`, handles the message and encodes the reply, if any.
    pub fn handle_bytes(&mut self, bytes: &[u8]) -> Result<Option<Vec<u8>>, ReconcileError> {
        let msg = Message::decode(bytes).inspect_err(|_| self.state = AliceState::Failed)?;
        match self.handle(msg)? {
            Some(reply) => reply.encode().map(Some),
            None => Ok(None),
        }
    }

    /// Handles one message from Bob; returns the reply (`None` after `Done`).
    pub fn handle(&mut self, msg: Message) -> Result<Option<Message>, ReconcileError> {
        if self.state == AliceState::Failed {
            return Err(ReconcileError::Poisoned);
        }
        let r = self.handle_inner(msg);
        if r.is_err() {
            self.state = AliceState::Failed;
        }
        r
    }

    fn handle_inner(&mut self, msg: Message) -> Result<Option<Message>, ReconcileError> {
        match (self.state, msg) {
            (AliceState::AwaitHello, Message::Hello(params)) => {
                // Check the cheap things before drawing any shuffle.
                if params.n as usize != self.key.len() {
                    return Err(ReconcileError::KeyLength {
                        got: self.key.len(),
                        expected: params.n as usize,
                    });
                }
                let plan = match &self.expected_plan {
                    Some(p) => {
                        if p.params != params {
                            return Err(ReconcileError::ParamsMismatch(format!(
                                "hello for variant '{}', n = {}, qber = {}; plan has '{}', n = {}, qber = {} (or another seed)",
                                params.variant.name,
                                params.n,
                                params.qber,
                                p.params.variant.name,
                                p.params.n,
                                p.params.qber
                            )));
                        }
                        Arc::clone(p)
                    }
                    None => Plan::new(params)?,
                };
                if plan.n != self.key.len() {
                    return Err(ReconcileError::KeyLength {
                        got: self.key.len(),
                        expected: plan.n,
                    });
                }
                self.copies = (0..plan.normal).map(|_| None).collect();
                let infer = plan.params.variant.tweaks.infer_last_block;
                let mut out = Parities::default();
                if infer {
                    out.push(self.key.parity_all());
                }
                for (pp, slot) in plan.passes[..plan.normal].iter().zip(&mut self.copies) {
                    if pp.perm.is_some() && pp.masks.is_none() {
                        *slot = Some(shuffled_copy(&self.key, pp));
                    }
                    let par = top_parities(&self.key, slot.as_ref(), pp, plan.n);
                    let keep = par.len() - usize::from(infer);
                    for &p in &par[..keep] {
                        out.push(p);
                    }
                }
                self.disclosed += u64::from(out.count);
                self.plan = Some(plan);
                self.state = AliceState::Answering;
                Ok(Some(Message::TopParities(out)))
            }
            (AliceState::Answering, Message::Query { round, questions }) => {
                if round != self.next_round {
                    return Err(ReconcileError::OutOfOrder {
                        got: round,
                        expected: self.next_round,
                    });
                }
                let Some(plan) = self.plan.clone() else {
                    return Err(ReconcileError::Unexpected {
                        got: "Query",
                        state: "waiting for Hello",
                    });
                };
                let mut out = Parities::with_capacity(questions.len());
                // Bob sorts his questions by pass: look the pass up once per run of them.
                for run in questions.chunk_by(|x, y| x.pass == y.pass) {
                    let Some(first) = run.first() else { continue };
                    let (pass, _, _) = check_question(&plan, first)?;
                    let words = alice_words(&self.key, &mut self.copies, &plan, pass);
                    for q in run {
                        let (s, e) = check_range(&plan, q)?;
                        out.push(parity(words, s, e));
                    }
                }
                self.disclosed += u64::from(out.count);
                self.next_round += 1;
                Ok(Some(Message::Answer {
                    round,
                    parities: out,
                }))
            }
            (
                AliceState::Answering,
                Message::Descend {
                    round,
                    questions,
                    bob,
                    deep,
                },
            ) => {
                if round != self.next_round {
                    return Err(ReconcileError::OutOfOrder {
                        got: round,
                        expected: self.next_round,
                    });
                }
                let Some(plan) = self.plan.clone() else {
                    return Err(ReconcileError::Unexpected {
                        got: "Descend",
                        state: "waiting for Hello",
                    });
                };
                deep.check(questions.len())?;
                let mut out = Parities::with_capacity(2 * questions.len());
                let mut j = 0;
                let mut next_bob = || {
                    j += 1;
                    bob.get(j - 1)
                };
                let mut speculative = 0u64;
                for (i, q) in questions.iter().enumerate() {
                    let (pass, s, e) = check_question(&plan, q)?;
                    let is_deep = deep.get(i);
                    if e - s < 2 || (is_deep && q.len < DEEP_MIN_LEN) {
                        return Err(ReconcileError::BadQuestion(format!(
                            "block {s}+{} in pass {pass} to bisect {} levels; expected at least {} positions",
                            e - s,
                            if is_deep { 3 } else { 2 },
                            if is_deep { DEEP_MIN_LEN } else { 2 }
                        )));
                    }
                    let mut bits = BobBits::default();
                    if q.len >= 3 {
                        bits.left = Some(next_bob());
                    }
                    if is_deep {
                        bits.deep = Some((next_bob(), next_bob()));
                        speculative += 1;
                    }
                    let words = alice_words(&self.key, &mut self.copies, &plan, pass);
                    let t = Task {
                        pass: 0,
                        block: 0,
                        node: 1,
                        s: s as u32,
                        e: e as u32,
                        a: false,
                        bob: false,
                        at: NOT_CACHED,
                    };
                    descend_walk(
                        &t,
                        bits,
                        |s, e| {
                            let p = parity(words, s as usize, e as usize);
                            out.push(p);
                            p
                        },
                        |_, _, _| {},
                    );
                }
                bob.check(j)?;
                self.bob_parities += j as u64;
                // One of Bob's two deep parities lies off the bisection path: counted.
                self.disclosed += speculative;
                self.disclosed += u64::from(out.count);
                self.next_round += 1;
                Ok(Some(Message::Answer {
                    round,
                    parities: out,
                }))
            }
            (AliceState::Answering, Message::Done { rounds }) => {
                if rounds + 1 != self.next_round {
                    return Err(ReconcileError::OutOfOrder {
                        got: rounds,
                        expected: self.next_round - 1,
                    });
                }
                self.state = AliceState::Done;
                self.copies.clear();
                Ok(None)
            }
            (state, msg) => Err(ReconcileError::Unexpected {
                got: msg.kind(),
                state: match state {
                    AliceState::AwaitHello => "waiting for Hello",
                    AliceState::Answering => "answering queries",
                    _ => "finished",
                },
            }),
        }
    }
}

/// What Bob counted during a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BobStats {
    /// Parity bits Alice disclosed (all answers received).
    pub disclosed_bits: u64,
    /// Bits Bob flipped.
    pub corrected: u64,
    /// Round trips (hello plus queries).
    pub round_trips: u32,
    /// Messages sent by either side (hello, top parities, queries, answers, done).
    pub messages: u32,
    /// Passes run, BICONF rounds included.
    pub passes: u32,
    /// Parities of his own key Bob sent in [`Message::Descend`] questions (0 for variants
    /// without [`Tweaks::descend`]); not part of `disclosed_bits` (see `Tweaks::descend` for
    /// why one-level bisection reveals the same bits implicitly), speculative ones included.
    pub bob_parity_bits: u64,
    /// Speculative parities of Bob's key off the bisection path ([`Tweaks::speculate_below`]):
    /// one per three-level question, counted as disclosed (in `disclosed_bits` and in
    /// [`Alice::disclosed_bits`]).
    pub speculative_bits: u64,
}

impl BobStats {
    /// Bits of Bob's messages that depend on his key, counted conservatively (Tupkary and
    /// Lütkenhaus, "Using Cascade in quantum key distribution", PRApplied 20, 064040 (2023):
    /// Bob's side of the exchange leaks too). Every question Bob sends after an answer reveals
    /// whether his parity of an interval Alice disclosed matched hers (one bit per parity
    /// Alice disclosed, [`Self::disclosed_bits`]), and [`Tweaks::descend`] variants also send
    /// parities of his own ([`Self::bob_parity_bits`]); the sum bounds the number of binary
    /// choices in Bob's transcript from above (docs/security.md, "Cascade leakage").
    pub fn bob_leak_bits(&self) -> u64 {
        self.disclosed_bits + self.bob_parity_bits
    }
}

#[derive(Debug, Clone, Copy)]
struct Task {
    pass: u32,
    block: u32,
    node: u32,
    s: u32,
    e: u32,
    /// Alice's parity of `s..e`.
    a: bool,
    /// Bob's parity of `s..e` as of his flip count `at` ([`NOT_CACHED`]: not known); saves
    /// recomputing it in the next step when no bit flipped since.
    bob: bool,
    at: u32,
}

/// [`Task::at`] of a task whose Bob parity is not cached (Bob's flip count never gets there:
/// he gives up after `n <= 2^31` corrections).
const NOT_CACHED: u32 = u32::MAX;

/// Smallest block a descend question may go three levels into (both halves then have four or
/// more positions, so every parity Bob sends on the path is one that one-level bisection also
/// reveals through its next question).
const DEEP_MIN_LEN: u32 = 8;

/// Bob's own parities sent with one descend question.
#[derive(Debug, Clone, Copy, Default)]
struct BobBits {
    /// Parity of the left half `L` (blocks of three or more positions).
    left: Option<bool>,
    /// Parities of the left halves of `L` and of the right half `R` (three-level questions).
    deep: Option<(bool, bool)>,
}

/// The walk of one descend question on node `t` (Alice's parity `t.a`), shared by both sides:
/// `alice(s, e)` yields Alice's parity of `s..e` (Alice computes it, Bob reads the next
/// answer bit), `learn(node, left, parent)` records the left child's parity of `node`.
fn descend_walk(
    t: &Task,
    bits: BobBits,
    mut alice: impl FnMut(u32, u32) -> bool,
    mut learn: impl FnMut(u32, bool, bool),
) {
    let (mut node, mut s, mut e, mut pa) = (t.node, t.s, t.e, t.a);
    let mid = |s: u32, e: u32| s + (e - s).div_ceil(2);
    let m = mid(s, e);
    let al = alice(s, m);
    learn(node, al, pa);
    let Some(b) = bits.left else {
        return;
    };
    let went_left = al != b;
    (node, s, e, pa) = if went_left {
        (2 * node, s, m, al)
    } else {
        (2 * node + 1, m, e, al ^ pa)
    };
    if e - s < 2 {
        return;
    }
    let m = mid(s, e);
    let al = alice(s, m);
    learn(node, al, pa);
    let Some((bll, brl)) = bits.deep else {
        return;
    };
    let b = if went_left { bll } else { brl };
    (node, s, e, pa) = if al != b {
        (2 * node, s, m, al)
    } else {
        (2 * node + 1, m, e, al ^ pa)
    };
    if e - s >= 2 {
        let m = mid(s, e);
        let al = alice(s, m);
        learn(node, al, pa);
    }
}

#[derive(Debug, Clone, Copy)]
enum Asked {
    /// Left child of the task's node.
    Left(Task),
    /// Two levels below the task's node; Bob's parity of the left child when he sent one.
    Descend(Task, BobBits),
    /// The single block of a BICONF round.
    Top(usize),
}

#[derive(Debug, Default)]
struct BobPass {
    started: bool,
    alice_top: Vec<bool>,
    /// Bob's own block parities: derived from his key, so wiped on drop.
    bob_top: Zeroizing<Vec<bool>>,
    copy: Option<BitBlock>,
    /// Alice's parities Bob learned, by node slot: per 64 slots a word of which are known
    /// and a word of their values, side by side so one lookup touches one cache line.
    known: Vec<[u64; 2]>,
}

impl BobPass {
    #[inline]
    fn known(&self, slot: usize) -> Option<bool> {
        let [k, v] = *self.known.get(slot / 64)?;
        if (k >> (slot % 64)) & 1 == 1 {
            Some((v >> (slot % 64)) & 1 == 1)
        } else {
            None
        }
    }

    #[inline]
    fn learn(&mut self, pp: &PassPlan, slot: usize, value: bool) {
        if self.known.is_empty() {
            let words = (pp.nblocks * pp.stride).div_ceil(64);
            self.known = vec![[0; 2]; words];
        }
        let bit = 1u64 << (slot % 64);
        let [k, v] = &mut self.known[slot / 64];
        *k |= bit;
        *v = (*v & !bit) | (u64::from(value) << (slot % 64));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BobState {
    Start,
    AwaitTop,
    AwaitAnswer,
    Done,
    Failed,
}

enum Step {
    Drop,
    Flip(usize),
    Ask,
}

/// Bob: holds the noisy key, asks parity questions and corrects his key.
pub struct Bob {
    plan: Arc<Plan>,
    key: BitBlock,
    passes: Vec<BobPass>,
    started: Vec<usize>,
    tasks: Vec<Task>,
    asked: Vec<Asked>,
    current: usize,
    round: u32,
    state: BobState,
    biconf_streak: u32,
    flips_in_pass: u64,
    /// Bits flipped so far (the clock of [`Task::at`]).
    flips: u32,
    stats: BobStats,
}

impl std::fmt::Debug for Bob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bob")
            .field("key_bits", &self.key.len())
            .field("state", &self.state)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Bob {
    /// Bob with his noisy key and the plan of the run.
    pub fn new(plan: Arc<Plan>, key: BitBlock) -> Result<Self, ReconcileError> {
        if key.len() != plan.n {
            return Err(ReconcileError::KeyLength {
                got: key.len(),
                expected: plan.n,
            });
        }
        let passes = (0..plan.normal).map(|_| BobPass::default()).collect();
        Ok(Self {
            plan,
            key,
            passes,
            started: Vec::new(),
            tasks: Vec::new(),
            asked: Vec::new(),
            current: 0,
            round: 0,
            state: BobState::Start,
            biconf_streak: 0,
            flips_in_pass: 0,
            flips: 0,
            stats: BobStats::default(),
        })
    }

    /// Bob's key (corrected as far as the run got).
    pub fn key(&self) -> &BitBlock {
        &self.key
    }

    /// Takes the key back.
    pub fn into_key(self) -> BitBlock {
        self.key
    }

    /// What Bob counted so far.
    pub fn stats(&self) -> BobStats {
        self.stats
    }

    /// True once Bob sent `Done`.
    pub fn is_done(&self) -> bool {
        self.state == BobState::Done
    }

    /// The first message: the hello with the run's parameters.
    pub fn start(&mut self) -> Result<Message, ReconcileError> {
        if self.state != BobState::Start {
            self.state = BobState::Failed;
            return Err(ReconcileError::Unexpected {
                got: "start",
                state: "already started",
            });
        }
        self.state = BobState::AwaitTop;
        self.stats.round_trips = 1;
        self.stats.messages = 1;
        Ok(Message::Hello(self.plan.params.clone()))
    }

    /// Decodes `bytes`, handles the message and encodes Bob's next message.
    pub fn handle_bytes(&mut self, bytes: &[u8]) -> Result<Vec<u8>, ReconcileError> {
        let msg = Message::decode(bytes).inspect_err(|_| self.state = BobState::Failed)?;
        self.handle(msg)?.encode()
    }

    /// Handles one message from Alice; returns Bob's next message (a query, or `Done`).
    pub fn handle(&mut self, msg: Message) -> Result<Message, ReconcileError> {
        if self.state == BobState::Failed {
            return Err(ReconcileError::Poisoned);
        }
        let r = self.handle_inner(msg);
        if r.is_err() {
            self.state = BobState::Failed;
        }
        r
    }

    fn handle_inner(&mut self, msg: Message) -> Result<Message, ReconcileError> {
        self.stats.messages += 1;
        match (self.state, msg) {
            (BobState::AwaitTop, Message::TopParities(p)) => {
                let plan = Arc::clone(&self.plan);
                p.check(plan.top_parity_count())?;
                let infer = plan.params.variant.tweaks.infer_last_block;
                let mut i = 0;
                let total = if infer {
                    i = 1;
                    p.get(0)
                } else {
                    false
                };
                for (pp, bp) in plan.passes[..plan.normal].iter().zip(&mut self.passes) {
                    let keep = pp.nblocks - usize::from(infer);
                    bp.alice_top = (i..i + keep).map(|j| p.get(j)).collect();
                    i += keep;
                    if infer {
                        let last = bp.alice_top.iter().fold(total, |acc, &x| acc ^ x);
                        bp.alice_top.push(last);
                    }
                }
                self.stats.disclosed_bits += u64::from(p.count);
                self.start_pass(0);
                self.advance()
            }
            (BobState::AwaitAnswer, Message::Answer { round, parities }) => {
                if round != self.round {
                    return Err(ReconcileError::OutOfOrder {
                        got: round,
                        expected: self.round,
                    });
                }
                let expected = self.expected_answer(&parities);
                parities.check(expected)?;
                self.stats.disclosed_bits += u64::from(parities.count);
                let asked = std::mem::take(&mut self.asked);
                // Answer bits are read in order; a descend question takes one to three.
                let mut i = 0;
                let next = |i: &mut usize| {
                    *i += 1;
                    parities.get(*i - 1)
                };
                for q in &asked {
                    let al = next(&mut i);
                    match *q {
                        Asked::Left(t) => {
                            self.learn_children(t.pass as usize, t.block, t.node, al, t.a);
                            self.tasks.push(t);
                        }
                        Asked::Descend(t, bits) => {
                            let mut learned = [(0u32, false, false); 3];
                            let mut nl = 0;
                            let mut first = Some(al);
                            descend_walk(
                                &t,
                                bits,
                                |_, _| first.take().unwrap_or_else(|| next(&mut i)),
                                |node, left, parent| {
                                    if let Some(slot) = learned.get_mut(nl) {
                                        *slot = (node, left, parent);
                                        nl += 1;
                                    }
                                },
                            );
                            for &(node, left, parent) in &learned[..nl] {
                                self.learn_children(t.pass as usize, t.block, node, left, parent);
                            }
                            if bits.deep.is_some() {
                                self.stats.disclosed_bits += 1;
                                self.stats.speculative_bits += 1;
                            }
                            self.tasks.push(t);
                        }
                        Asked::Top(pass) => {
                            self.passes[pass].alice_top = vec![al];
                            self.start_pass(pass);
                        }
                    }
                }
                self.asked = asked;
                self.asked.clear();
                self.advance()
            }
            (state, msg) => Err(ReconcileError::Unexpected {
                got: msg.kind(),
                state: match state {
                    BobState::Start => "not started",
                    BobState::AwaitTop => "waiting for TopParities",
                    BobState::AwaitAnswer => "waiting for an Answer",
                    _ => "finished",
                },
            }),
        }
    }

    /// Number of parity bits Alice's answer to the pending questions must hold (a descend
    /// question's second bit depends on her first).
    fn expected_answer(&self, parities: &Parities) -> usize {
        let mut i = 0;
        for q in &self.asked {
            match q {
                Asked::Descend(t, bits) => descend_walk(
                    t,
                    *bits,
                    |_, _| {
                        i += 1;
                        parities.get(i - 1)
                    },
                    |_, _, _| {},
                ),
                _ => i += 1,
            }
        }
        i
    }

    /// Records Alice's parity `left` of the left child of `node` (whose parity is `parent`)
    /// in block `block` of pass `q`, and the right child's by inference.
    fn learn_children(&mut self, q: usize, block: u32, node: u32, left: bool, parent: bool) {
        let pp = self.plan.pass(q);
        let base = block as usize * pp.stride;
        let l = 2 * node as usize;
        let bp = &mut self.passes[q];
        bp.learn(pp, base + l, left);
        bp.learn(pp, base + l + 1, left ^ parent);
    }

    fn start_pass(&mut self, q: usize) {
        let plan = Arc::clone(&self.plan);
        let pp = plan.pass(q);
        if self.passes.len() <= q {
            self.passes.resize_with(q + 1, BobPass::default);
        }
        self.current = q;
        self.flips_in_pass = 0;
        self.stats.passes += 1;
        if pp.masks.is_none() {
            self.ensure_copy(q);
        }
        let bp = &mut self.passes[q];
        bp.started = true;
        self.started.push(q);
        bp.bob_top = Zeroizing::new(top_parities(&self.key, bp.copy.as_ref(), pp, plan.n));
        for b in 0..pp.used_blocks {
            if bp.alice_top.get(b) != bp.bob_top.get(b) {
                let (s, e) = pp.block_range(b, plan.n);
                self.tasks.push(Task {
                    pass: q as u32,
                    block: b as u32,
                    node: 1,
                    s: s as u32,
                    e: e as u32,
                    a: bp.alice_top[b],
                    bob: bp.bob_top[b],
                    at: self.flips,
                });
            }
        }
        if !self.tasks.is_empty() {
            self.ensure_copy(q);
        }
    }

    fn ensure_copy(&mut self, q: usize) {
        let pp = self.plan.pass(q);
        if self.passes.len() <= q {
            self.passes.resize_with(q + 1, BobPass::default);
        }
        if pp.perm.is_some() && self.passes[q].copy.is_none() {
            self.passes[q].copy = Some(shuffled_copy(&self.key, pp));
        }
    }

    #[inline]
    fn bob_parity(&self, q: usize, s: usize, e: usize) -> bool {
        let words = match &self.passes[q].copy {
            Some(c) => c.words(),
            None => self.key.words(),
        };
        parity(words, s, e)
    }

    /// Resolves tasks as far as known parities allow, then asks, moves to the next pass, or
    /// finishes.
    fn advance(&mut self) -> Result<Message, ReconcileError> {
        loop {
            self.resolve()?;
            if !self.tasks.is_empty() {
                self.tasks
                    .sort_unstable_by_key(|t| (t.pass, t.block, t.node));
                self.tasks.dedup_by_key(|t| (t.pass, t.block, t.node));
                let mut questions = Vec::with_capacity(self.tasks.len());
                self.asked.clear();
                let tweaks = self.plan.params.variant.tweaks;
                let factor = tweaks.smallest_first;
                let mut waiting = Vec::new();
                if tweaks.lowest_pass_first {
                    let low = self.tasks.iter().map(|t| t.pass).min().unwrap_or(0);
                    let (now, later): (Vec<Task>, Vec<Task>) =
                        self.tasks.drain(..).partition(|t| t.pass == low);
                    self.tasks = now;
                    waiting = later;
                } else if factor > 0 {
                    let min = self.tasks.iter().map(|t| t.e - t.s).min().unwrap_or(0);
                    let limit = min.saturating_mul(factor);
                    let (now, later): (Vec<Task>, Vec<Task>) =
                        self.tasks.drain(..).partition(|t| t.e - t.s <= limit);
                    self.tasks = now;
                    waiting = later;
                }
                if tweaks.descend {
                    let speculate = self.tasks.len() <= tweaks.speculate_below as usize;
                    let mut bob = Parities::with_capacity(self.tasks.len());
                    let mut deep = Parities::with_capacity(self.tasks.len());
                    let mut now = std::mem::take(&mut self.tasks);
                    for t in now.drain(..) {
                        let len = t.e - t.s;
                        questions.push(Question {
                            pass: t.pass as u16,
                            start: t.s,
                            len,
                        });
                        let q = t.pass as usize;
                        let mid = |s: u32, e: u32| s + (e - s).div_ceil(2);
                        let m = mid(t.s, t.e);
                        let mut bits = BobBits::default();
                        if len >= 3 {
                            let b = self.bob_parity(q, t.s as usize, m as usize);
                            bob.push(b);
                            bits.left = Some(b);
                        }
                        let is_deep = speculate && len >= DEEP_MIN_LEN;
                        deep.push(is_deep);
                        if is_deep {
                            let bll = self.bob_parity(q, t.s as usize, mid(t.s, m) as usize);
                            let brl = self.bob_parity(q, m as usize, mid(m, t.e) as usize);
                            bob.push(bll);
                            bob.push(brl);
                            bits.deep = Some((bll, brl));
                        }
                        self.asked.push(Asked::Descend(t, bits));
                    }
                    // Keep the task list's allocation for the next round.
                    now.append(&mut waiting);
                    self.tasks = now;
                    self.stats.bob_parity_bits += u64::from(bob.count);
                    return Ok(Message::Descend {
                        round: self.next_round(),
                        questions,
                        bob,
                        deep,
                    });
                }
                for t in self.tasks.drain(..) {
                    let m = t.s + (t.e - t.s).div_ceil(2);
                    questions.push(Question {
                        pass: t.pass as u16,
                        start: t.s,
                        len: m - t.s,
                    });
                    self.asked.push(Asked::Left(t));
                }
                // Keep the task list's allocation for the next round.
                self.tasks.append(&mut waiting);
                return Ok(self.query(questions));
            }
            let plan = Arc::clone(&self.plan);
            let was_biconf = self.current >= plan.normal;
            if was_biconf {
                if self.flips_in_pass == 0 {
                    self.biconf_streak += 1;
                } else {
                    self.biconf_streak = 0;
                }
            }
            let next = self.current + 1;
            if next < plan.normal {
                self.start_pass(next);
                continue;
            }
            let more_biconf = match plan.params.variant.biconf {
                Some(b) if next < plan.total_passes() => {
                    if b.error_free_streak {
                        self.biconf_streak < b.rounds
                    } else {
                        next - plan.normal < b.rounds as usize
                    }
                }
                _ => false,
            };
            if more_biconf {
                self.current = next;
                self.asked.clear();
                self.asked.push(Asked::Top(next));
                let pp = plan.pass(next);
                let q = Question {
                    pass: next as u16,
                    start: 0,
                    len: pp.k as u32,
                };
                self.ensure_copy(next);
                return Ok(self.query(vec![q]));
            }
            self.state = BobState::Done;
            self.stats.messages += 1;
            return Ok(Message::Done { rounds: self.round });
        }
    }

    fn query(&mut self, questions: Vec<Question>) -> Message {
        Message::Query {
            round: self.next_round(),
            questions,
        }
    }

    /// Counts one more query and waits for its answer; returns its round number.
    fn next_round(&mut self) -> u32 {
        self.round += 1;
        self.stats.round_trips += 1;
        self.stats.messages += 1;
        self.state = BobState::AwaitAnswer;
        self.round
    }

    fn resolve(&mut self) -> Result<(), ReconcileError> {
        loop {
            let mut flipped = false;
            let mut i = 0;
            while i < self.tasks.len() {
                let mut t = self.tasks[i];
                match self.step(&mut t) {
                    Step::Drop => {
                        self.tasks.swap_remove(i);
                    }
                    Step::Flip(x) => {
                        self.tasks.swap_remove(i);
                        self.flip(x);
                        flipped = true;
                        // With Alice's true parities every flip fixes a real error, so a run
                        // flips at most n bits. More means the parities received contradict
                        // each other (a corrupted message): without this check the cascade
                        // step could flip the same bits back and forth forever.
                        if self.stats.corrected > self.plan.n as u64 {
                            return Err(ReconcileError::Malformed(format!(
                                "Alice's parities are inconsistent: more than {} corrections \
                                 on a {}-bit key",
                                self.plan.n, self.plan.n
                            )));
                        }
                    }
                    Step::Ask => {
                        self.tasks[i] = t;
                        i += 1;
                    }
                }
            }
            if !flipped {
                return Ok(());
            }
        }
    }

    /// Walks task `t` down through known parities.
    fn step(&self, t: &mut Task) -> Step {
        let q = t.pass as usize;
        let pp = self.plan.pass(q);
        let bp = &self.passes[q];
        let base = t.block as usize * pp.stride;
        let mut bob = if t.at == self.flips {
            t.bob
        } else {
            self.bob_parity(q, t.s as usize, t.e as usize)
        };
        loop {
            if bob == t.a {
                return Step::Drop;
            }
            if t.e - t.s == 1 {
                let j = t.s as usize;
                let x = match &pp.perm {
                    Some(perm) => perm[j] as usize,
                    None => j,
                };
                return Step::Flip(x);
            }
            let m = t.s + (t.e - t.s).div_ceil(2);
            let left = 2 * t.node;
            let Some(al) = bp.known(base + left as usize) else {
                (t.bob, t.at) = (bob, self.flips);
                return Step::Ask;
            };
            let bl = self.bob_parity(q, t.s as usize, m as usize);
            if al != bl {
                t.node = left;
                t.e = m;
                t.a = al;
                bob = bl;
            } else {
                t.node = left + 1;
                t.s = m;
                t.a ^= al;
                bob ^= bl;
            }
        }
    }

    /// Flips original bit `x` everywhere and schedules the cascade step.
    fn flip(&mut self, x: usize) {
        let plan = Arc::clone(&self.plan);
        let _ = self.key.flip(x);
        self.stats.corrected += 1;
        self.flips = self.flips.wrapping_add(1);
        self.flips_in_pass += 1;
        let cascade = self.current < plan.normal;
        for i in 0..self.started.len() {
            let q = self.started[i];
            let pp = plan.pass(q);
            let bp = &mut self.passes[q];
            if let Some(c) = &mut bp.copy {
                let _ = c.flip(pp.pos(x));
            }
            let b = pp.block_of(x);
            if b >= pp.used_blocks {
                continue;
            }
            bp.bob_top[b] = !bp.bob_top[b];
            if cascade && q < plan.normal {
                self.schedule(q, b, x);
            }
        }
    }

    /// The cascade step for pass `q`, top-level block `b`, after original bit `x` flipped.
    fn schedule(&mut self, q: usize, b: usize, x: usize) {
        let pp = self.plan.pass(q);
        let bp = &self.passes[q];
        let (s, e) = pp.block_range(b, self.plan.n);
        let root = Task {
            pass: q as u32,
            block: b as u32,
            node: 1,
            s: s as u32,
            e: e as u32,
            a: bp.alice_top[b],
            bob: bp.bob_top[b],
            at: self.flips,
        };
        let mut best = (bp.alice_top[b] != bp.bob_top[b]).then_some(root);
        if self.plan.params.variant.sub_block_reuse && !bp.known.is_empty() {
            let j = pp.pos(x);
            let base = b * pp.stride;
            let mut t = root;
            while t.e - t.s > 1 {
                let m = t.s + (t.e - t.s).div_ceil(2);
                let (child, cs, ce) = if (j as u32) < m {
                    (2 * t.node, t.s, m)
                } else {
                    (2 * t.node + 1, m, t.e)
                };
                let Some(a) = bp.known(base + child as usize) else {
                    break;
                };
                t = Task {
                    node: child,
                    s: cs,
                    e: ce,
                    a,
                    at: NOT_CACHED,
                    ..t
                };
                if self.bob_parity(q, cs as usize, ce as usize) != a {
                    best = Some(Task {
                        bob: !a,
                        at: self.flips,
                        ..t
                    });
                }
            }
        }
        if let Some(t) = best {
            self.tasks.push(t);
            self.ensure_copy(q);
        }
    }
}
