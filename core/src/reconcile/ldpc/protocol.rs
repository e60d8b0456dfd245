//! LDPC reconciliation of many frames as two sans-IO parties: one-way (Alice's syndromes, Bob
//! decodes) or blind (Martinez-Mateo, Elkouss and Martin, "Blind reconciliation", Quantum Inf.
//! Comput. 12, 2012): for the frames Bob could not decode, Alice reveals a share of the
//! punctured bits, in up to [`MAX_REVEAL_ROUNDS`] short rounds.
//!
//! **Rate adaption** ([`FramePlan::choose`]; Elkouss, Martinez-Mateo and Martin, "Untainted
//! puncturing for irregular LDPC codes", 2011). Each frame carries `key_bits = n - d` bits of
//! key in a mother code of length `n`; the other `d = n / 10` positions are punctured (filled
//! by Alice with fresh secret random bits, unknown to Bob: LLR 0) or shortened (zero, known to
//! everyone: LLR [`KNOWN`]). Punctured positions are variables of every other staircase column
//! (degree 2), so no check sees two of them: their columns of `H` have disjoint supports and are
//! independent, which is what makes the count below exact. They are spread along the
//! staircase's chains (`puncturable`), and revealed densest first. The plan picks the mother
//! code and the number `p` of punctured bits from the QBER estimate so that the first attempt
//! discloses `f_start * h(QBER) * key_bits` bits, and, in blind mode, the last one (every
//! punctured bit revealed) at least `f_end * h(QBER bound) * key_bits`
//! ([`FramePlan::choose_bounded`]).
//!
//! **Leakage** (docs/security.md, section 11): Alice's syndrome is `m` bits, but `p` of them are
//! masked by her secret punctured bits, so it tells Eve at most `m - p` bits about the key;
//! every punctured bit revealed later adds one. Shortened bits are public and carry no key.
//! Bob's success/failure answer per frame and round is one more key-dependent bit, counted in
//! [`LdpcAlice::bob_leak_bits`]. A frame still undecoded after the last round is dropped.

use std::sync::Arc;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::codes::{BASE_COLUMNS, BASE_ROWS, builtin};
use super::decoder::{Backend, DecoderParams, Frame, Graph, KNOWN, Scaling, channel_llr, decode};
use crate::bits::{BitBlock, xor_bit_range};
use crate::reconcile::message::Parities;
use crate::reconcile::{ReconcileError, binary_entropy};
use crate::rng::RandomSource;

/// Most rounds of reveals in blind mode.
pub const MAX_REVEAL_ROUNDS: u8 = 3;

/// Version byte of [`LdpcMessage`]'s encoding.
pub const LDPC_WIRE_VERSION: u8 = 1;

/// How a block is reconciled with LDPC codes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LdpcParams {
    /// Circulant size of the mother codes ([`super::codes::LIFTS`]).
    pub z: u32,
    /// Efficiency of the first attempt.
    pub f_start: f64,
    /// Efficiency with every punctured bit revealed (chooses the mother code).
    pub f_end: f64,
    /// Reveal rounds after the first attempt (0: one-way).
    pub rounds: u8,
    /// Most decoder iterations per attempt (the min-sum normalization comes with the mother
    /// code: [`Scaling::for_check_degree`]).
    pub max_iterations: u32,
}

impl LdpcParams {
    /// One-way: a single syndrome at efficiency `f`.
    pub fn one_way(z: u32, f: f64) -> Self {
        Self {
            z,
            f_start: f,
            f_end: f,
            rounds: 0,
            max_iterations: DecoderParams::default().max_iterations,
        }
    }

    /// The forms of the names [`LdpcParams::parse`] reads.
    pub const NAME_FORMS: [&'static str; 2] = ["ldpc-blind[:F_START:F_END]", "ldpc-oneway[:F]"];

    /// The parameters an algorithm name stands for on codes of circulant `z`, `None` if it is
    /// not an LDPC name: `ldpc-blind[:F_START:F_END]` (default 1.15 to 1.45, three reveal
    /// rounds; `ldpc` is the same) or `ldpc-oneway[:F]` (default 1.5).
    pub fn parse(name: &str, z: u32) -> Option<Result<Self, ReconcileError>> {
        let mut parts = name.split(':');
        let kind = parts.next()?;
        if !matches!(kind, "ldpc" | "ldpc-blind" | "ldpc-oneway") {
            return None;
        }
        let bad = || {
            ReconcileError::BadParams(format!(
                "'{name}': expected {}",
                Self::NAME_FORMS.join(" or ")
            ))
        };
        let Ok(numbers) = parts
            .map(str::parse::<f64>)
            .collect::<Result<Vec<f64>, _>>()
        else {
            return Some(Err(bad()));
        };
        Some(match (kind, numbers.as_slice()) {
            ("ldpc-oneway", []) => Ok(Self::one_way(z, 1.5)),
            ("ldpc-oneway", [f]) => Ok(Self::one_way(z, *f)),
            ("ldpc-oneway", _) => Err(bad()),
            // Sessions plan F_END at a bound three standard deviations above the sample's
            // QBER (`FramePlan::choose_bounded`), which covers a sample that read low. With the
            // estimate exact (frames of 92 160 bits, QBER 1-8 %) these reach f 1.23-1.39
            // where 1.25 to 1.7 reached 1.25-1.42.
            (_, []) => Ok(Self::blind(z, 1.15, 1.45)),
            (_, [a, b]) => Ok(Self::blind(z, *a, *b)),
            _ => Err(bad()),
        })
    }

    /// Blind: first attempt at `f_start`, up to three reveals towards `f_end`.
    pub fn blind(z: u32, f_start: f64, f_end: f64) -> Self {
        Self {
            z,
            f_start,
            f_end,
            rounds: MAX_REVEAL_ROUNDS,
            max_iterations: DecoderParams::default().max_iterations,
        }
    }
}

/// The code and the positions of one frame shape, the same on both sides.
#[derive(Debug, Clone, PartialEq)]
pub struct FramePlan {
    /// Mother code block rows.
    pub rows: u32,
    /// Circulant size.
    pub z: u32,
    /// Punctured positions, in reveal order.
    pub punctured: Vec<usize>,
    /// Shortened positions.
    pub shortened: Vec<usize>,
    /// Key positions (the rest), increasing.
    pub key_positions: Vec<usize>,
    /// The same as runs of consecutive positions: `(first position, first key bit, length)`.
    pub key_runs: Vec<(usize, usize, usize)>,
    /// Reveal rounds.
    pub rounds: u8,
    /// The QBER the LLRs are computed for.
    pub qber: f64,
    /// Decoder settings.
    pub decoder: DecoderParams,
}

impl FramePlan {
    /// The plan for frames at QBER estimate `qber` (module docs), known exactly.
    pub fn choose(params: &LdpcParams, qber: f64) -> Result<Self, ReconcileError> {
        Self::choose_bounded(params, qber, qber)
    }

    /// The plan for frames at QBER estimate `qber` that may be as high as `qber_high`: the
    /// first attempt discloses `f_start * h(qber) * key_bits`; in blind mode the last covers
    /// `f_end * h(qber_high) * key_bits`, so that a sample that read the QBER low costs reveals
    /// rather than frames. One-way plans use `qber` alone (one attempt, at `f_start`).
    pub fn choose_bounded(
        params: &LdpcParams,
        qber: f64,
        qber_high: f64,
    ) -> Result<Self, ReconcileError> {
        let valid = qber > 0.0
            && qber <= qber_high
            && qber_high < 0.5
            && (1.0..=3.0).contains(&params.f_start);
        if !valid
            || params.f_end < params.f_start
            || params.f_end > 3.0
            || params.rounds > MAX_REVEAL_ROUNDS
        {
            return Err(ReconcileError::BadParams(format!(
                "LDPC plan for QBER {qber} (at most {qber_high}) with {params:?}: expected \
                 0 < QBER <= its bound < 0.5, 1 <= f_start <= f_end <= 3 and at most \
                 {MAX_REVEAL_ROUNDS} rounds"
            )));
        }
        let z = params.z as usize;
        let n = BASE_COLUMNS as usize * z;
        let key_bits = Self::key_bits_for(params.z);
        let d = n - key_bits;
        let h = binary_entropy(qber);
        let h_end = if params.rounds == 0 {
            h
        } else {
            binary_entropy(qber_high)
        };
        let leak_start = (params.f_start * h * key_bits as f64).ceil() as usize;
        let leak_end = (params.f_end * h_end * key_bits as f64).ceil() as usize;
        // The highest-rate mother whose syndrome covers the last attempt, else the lowest-rate
        // one if it still covers the first.
        let available = |r: u32| builtin(r, params.z).is_ok();
        let rows = BASE_ROWS
            .iter()
            .rev()
            .copied()
            .find(|&r| r as usize * z >= leak_end && available(r))
            .or_else(|| BASE_ROWS.iter().copied().find(|&r| available(r)))
            .filter(|&r| r as usize * z >= leak_start)
            .ok_or_else(|| {
                ReconcileError::BadParams(format!(
                    "QBER {qber} needs more than the lowest-rate code's syndrome at f = {}",
                    params.f_start
                ))
            })?;
        let m = rows as usize * z;
        let candidates = puncturable(rows, params.z);
        let p = m.saturating_sub(leak_start).min(d).min(candidates.len());
        // Revealed last-chosen first, so that what stays punctured is always the most spread.
        let punctured: Vec<usize> = candidates[..p].iter().rev().copied().collect();
        // Shortened: spread evenly over the columns after the staircase, which are never
        // punctured.
        let first_info = (rows as usize - 1) * z;
        let info = n - first_info;
        let count = d - p;
        let shortened: Vec<usize> = (0..count).map(|k| first_info + k * info / count).collect();
        let mut is_special = vec![false; n];
        punctured
            .iter()
            .chain(&shortened)
            .for_each(|&v| is_special[v] = true);
        let key_positions: Vec<usize> = (0..n).filter(|&v| !is_special[v]).collect();
        let mut key_runs: Vec<(usize, usize, usize)> = Vec::new();
        for (i, &v) in key_positions.iter().enumerate() {
            match key_runs.last_mut() {
                Some((at, _, len)) if *at + *len == v => *len += 1,
                _ => key_runs.push((v, i, 1)),
            }
        }
        Ok(Self {
            rows,
            z: params.z,
            punctured,
            shortened,
            key_positions,
            key_runs,
            rounds: params.rounds,
            qber,
            decoder: DecoderParams {
                max_iterations: params.max_iterations,
                scaling: Scaling::for_check_degree(
                    builtin(rows, params.z)?.graph.mean_check_degree(),
                ),
                ..DecoderParams::default()
            },
        })
    }

    /// Key bits per frame of the mother codes of circulant `z`: all but `n / 10` positions.
    pub fn key_bits_for(z: u32) -> usize {
        let n = BASE_COLUMNS as usize * z as usize;
        n - n / 10
    }

    /// Sets the key bits of a frame's words (`n` bits, key positions zero) from `key`, a run at
    /// a time.
    fn place_key(&self, key: &BitBlock, words: &mut [u64]) {
        for &(at, from, len) in &self.key_runs {
            xor_bit_range(words, at, key.words(), from, len);
        }
    }

    /// The key bits of a frame's word, a run at a time.
    fn take_key(&self, word: &BitBlock) -> Result<BitBlock, ReconcileError> {
        let mut key = vec![0u64; self.key_bits().div_ceil(64)];
        for &(at, to, len) in &self.key_runs {
            xor_bit_range(&mut key, to, word.words(), at, len);
        }
        BitBlock::from_words(key, self.key_bits())
            .map_err(|e| ReconcileError::BadParams(format!("extracting the key positions: {e}")))
    }

    /// Key bits per frame.
    pub fn key_bits(&self) -> usize {
        self.key_positions.len()
    }

    /// Syndrome bits.
    pub fn m(&self) -> usize {
        self.rows as usize * self.z as usize
    }

    /// Punctured bits revealed after `round` reveal rounds (all of them after the last).
    pub fn revealed_after(&self, round: u8) -> usize {
        if self.rounds == 0 {
            return 0;
        }
        (self.punctured.len() * usize::from(round)).div_ceil(usize::from(self.rounds))
    }

    /// Bits a frame decoded after `round` reveal rounds disclosed: `m - p + revealed`.
    pub fn leak_after(&self, round: u8) -> u64 {
        (self.m() - self.punctured.len() + self.revealed_after(round)) as u64
    }

    fn graph(&self) -> Result<&'static Graph, ReconcileError> {
        Ok(&builtin(self.rows, self.z)?.graph)
    }
}

/// Variables of the even staircase columns (rows `2j`, `2j + 1`), in puncturing order.
///
/// The staircase's variables at one position `x` of their circulants form a chain (column `j`
/// on rows `j` and `j + 1`, shift 0): flipping a run of consecutive ones changes two checks
/// only, and when every other one is punctured the run costs the decoder just the channel
/// evidence of the key bits between. Min-sum stuck on such runs: one-way at QBER 2 % and
/// f = 1.6 (2183 of 23 040 syndrome bits punctured, ten in each of the first chains) left
/// 2.3-3.3 % of the frames undecoded (four runs of 512 frames), two to six staircase bits
/// wrong in one chain and two checks unsatisfied, where the sum-product reference decoded all
/// of the first 470. So each chain is punctured
/// level by level, one variable per chain per level, far from the chain's earlier ones
/// ([`spread_order`]); the chains start at different columns, so the rows stay balanced.
fn puncturable(rows: u32, z: u32) -> Vec<usize> {
    let z = z as usize;
    let cols: Vec<usize> = (0..rows as usize - 1).step_by(2).collect();
    let orders: Vec<Vec<usize>> = (0..cols.len())
        .map(|start| spread_order(cols.len(), start))
        .collect();
    let mut order = Vec::with_capacity(cols.len() * z);
    for level in 0..cols.len() {
        for x in 0..z {
            order.push(cols[orders[x % cols.len()][level]] * z + x);
        }
    }
    order
}

/// `0..len` from `start`, each next the farthest from all before it (the smallest on ties).
fn spread_order(len: usize, start: usize) -> Vec<usize> {
    let mut distance: Vec<usize> = (0..len).map(|i| i.abs_diff(start)).collect();
    let mut order = vec![start];
    while order.len() < len {
        let next = (0..len)
            .max_by_key(|&i| (distance[i], std::cmp::Reverse(i)))
            .expect("len > 0");
        order.push(next);
        for (i, d) in distance.iter_mut().enumerate() {
            *d = (*d).min(i.abs_diff(next));
        }
    }
    order
}

/// Messages of the LDPC protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LdpcMessage {
    /// Alice -> Bob: the code and every frame's syndrome.
    Syndromes {
        /// Mother code block rows.
        rows: u32,
        /// Circulant size.
        z: u32,
        /// Punctured bits per frame.
        punctured: u32,
        /// One syndrome per frame.
        syndromes: Vec<Parities>,
    },
    /// Bob -> Alice: the frames still undecoded; reveal the next share of their punctured bits.
    Reveal {
        /// Reveal round (1-based).
        round: u8,
        /// Frame indices, increasing.
        frames: Vec<u32>,
    },
    /// Alice -> Bob: the punctured bits of the asked frames for this round.
    Revealed {
        /// Reveal round.
        round: u8,
        /// Values in reveal order, one entry per asked frame.
        values: Vec<Parities>,
    },
    /// Bob -> Alice: reconciliation over; these frames failed and are dropped.
    Done {
        /// Frame indices, increasing.
        failed: Vec<u32>,
    },
}

impl LdpcMessage {
    fn kind(&self) -> &'static str {
        match self {
            LdpcMessage::Syndromes { .. } => "syndromes",
            LdpcMessage::Reveal { .. } => "reveal",
            LdpcMessage::Revealed { .. } => "revealed",
            LdpcMessage::Done { .. } => "done",
        }
    }

    /// Version byte, then postcard.
    pub fn encode(&self) -> Result<Vec<u8>, ReconcileError> {
        crate::reconcile::encode_versioned(LDPC_WIRE_VERSION, self, "LDPC message")
    }

    /// Decodes one message, rejecting another version, malformed bodies and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, ReconcileError> {
        crate::reconcile::decode_versioned(LDPC_WIRE_VERSION, bytes, "LDPC message")
    }
}

/// Checks that `frames` increase and stay below `count`.
fn check_indices(frames: &[u32], count: usize) -> Result<(), ReconcileError> {
    for (k, &f) in frames.iter().enumerate() {
        if f as usize >= count || (k > 0 && frames[k - 1] >= f) {
            return Err(ReconcileError::Malformed(format!(
                "frame index {f}: indices must increase and stay below {count}"
            )));
        }
    }
    Ok(())
}

/// What a block's frames disclosed, counted alike on both sides from the messages they
/// exchanged: the reveal rounds each frame went through, Bob's answers, the frames that failed.
#[derive(Debug)]
struct Disclosure {
    /// Reveal rounds each frame went through.
    revealed_rounds: Vec<u8>,
    /// The last reveal round asked for.
    round: u8,
    feedback_bits: u64,
    failed: Option<Vec<u32>>,
}

impl Disclosure {
    fn new(frames: usize) -> Self {
        Self {
            revealed_rounds: vec![0; frames],
            round: 0,
            feedback_bits: 0,
            failed: None,
        }
    }

    /// Checks that `frames` increase and were all still undecoded at Bob's last answer (a
    /// frame Bob decoded earlier cannot ask for more, nor fail).
    fn check_pending(&self, frames: &[u32]) -> Result<(), ReconcileError> {
        check_indices(frames, self.revealed_rounds.len())?;
        match frames
            .iter()
            .find(|&&f| self.revealed_rounds[f as usize] != self.round)
        {
            Some(f) => Err(ReconcileError::Malformed(format!(
                "frame {f} was decoded in an earlier round"
            ))),
            None => Ok(()),
        }
    }

    /// Bob's answer reports on every frame of the last attempt: one bit each.
    fn count_answer(&mut self) {
        let attempted = self.revealed_rounds.iter().filter(|&&r| r == self.round);
        self.feedback_bits += attempted.count() as u64;
    }

    /// Bob asked for round `round`'s reveals of `frames` (checked by the caller).
    fn reveal(&mut self, round: u8, frames: &[u32]) {
        self.count_answer();
        self.round = round;
        frames
            .iter()
            .for_each(|&f| self.revealed_rounds[f as usize] = round);
    }

    /// Bob is done; `failed` are dropped.
    fn finish(&mut self, failed: Vec<u32>) {
        self.count_answer();
        self.failed = Some(failed);
    }

    fn is_done(&self) -> bool {
        self.failed.is_some()
    }

    fn failed(&self) -> &[u32] {
        self.failed.as_deref().unwrap_or(&[])
    }

    fn frame_disclosed(&self, plan: &FramePlan, f: usize) -> Option<u64> {
        let round = *self.revealed_rounds.get(f)?;
        let failed = self.failed().binary_search(&(f as u32)).is_ok();
        (!failed).then(|| plan.leak_after(round))
    }

    fn disclosed_bits(&self, plan: &FramePlan) -> u64 {
        (0..self.revealed_rounds.len())
            .filter_map(|f| self.frame_disclosed(plan, f))
            .sum()
    }
}

/// Alice: holds the reference frames, sends syndromes, reveals punctured bits on request.
#[derive(Debug)]
pub struct LdpcAlice {
    plan: Arc<FramePlan>,
    keys: Vec<BitBlock>,
    /// Each frame's secret punctured bits, in reveal order.
    padding: Vec<BitBlock>,
    disclosure: Disclosure,
}

impl LdpcAlice {
    /// Alice over `frames` (each `plan.key_bits()` long); the punctured bits come from `rng`
    /// (the OS generator or the configured entropy source outside simulations). Returns her
    /// first message.
    pub fn start(
        plan: Arc<FramePlan>,
        frames: Vec<BitBlock>,
        rng: &mut dyn RandomSource,
    ) -> Result<(Self, LdpcMessage), ReconcileError> {
        let graph = plan.graph()?;
        let n = graph.n();
        let p = plan.punctured.len();
        let mut padding = Vec::with_capacity(frames.len());
        let mut random = zeroize::Zeroizing::new(vec![0u8; p.div_ceil(8)]);
        for f in &frames {
            if f.len() != plan.key_bits() {
                return Err(ReconcileError::KeyLength {
                    got: f.len(),
                    expected: plan.key_bits(),
                });
            }
            rng.fill(&mut random[..])
                .map_err(|e| ReconcileError::Randomness(e.to_string()))?;
            let pad = BitBlock::from_bytes(&random, p)
                .map_err(|e| ReconcileError::BadParams(e.to_string()))?;
            padding.push(pad);
        }
        // The frames' words (key and padding in place) and syndromes, in parallel.
        let syndromes = frames
            .par_iter()
            .zip(&padding)
            .map(|(key, pad)| {
                // Straight into words: a checked `set` per bit cost 10-15 % of one-way
                // throughput at QBER 8 % (interleaved runs).
                let mut words = zeroize::Zeroizing::new(vec![0u64; n.div_ceil(64)]);
                plan.place_key(key, &mut words);
                scatter(pad, &plan.punctured, &mut words);
                let word = BitBlock::from_words(std::mem::take(&mut *words), n)
                    .map_err(|e| ReconcileError::BadParams(e.to_string()))?;
                Ok(Parities::from_block(&graph.syndrome(&word)?))
            })
            .collect::<Result<Vec<_>, ReconcileError>>()?;
        let message = LdpcMessage::Syndromes {
            rows: plan.rows,
            z: plan.z,
            punctured: plan.punctured.len() as u32,
            syndromes,
        };
        Ok((
            Self {
                disclosure: Disclosure::new(frames.len()),
                plan,
                keys: frames,
                padding,
            },
            message,
        ))
    }

    /// Answers Bob: the next reveal, or nothing once he is done.
    pub fn handle(&mut self, msg: LdpcMessage) -> Result<Option<LdpcMessage>, ReconcileError> {
        if self.disclosure.is_done() {
            return Err(ReconcileError::Unexpected {
                got: msg.kind(),
                state: "done",
            });
        }
        match msg {
            LdpcMessage::Reveal { round, frames } => {
                let next = self.disclosure.round + 1;
                if round != next || round > self.plan.rounds {
                    return Err(ReconcileError::OutOfOrder {
                        got: u32::from(round),
                        expected: u32::from(next),
                    });
                }
                self.disclosure.check_pending(&frames)?;
                self.disclosure.reveal(round, &frames);
                let (from, to) = (
                    self.plan.revealed_after(round - 1),
                    self.plan.revealed_after(round),
                );
                let values = frames
                    .iter()
                    .map(|&f| {
                        let pad = &self.padding[f as usize];
                        Parities::from_bits((from..to).map(|i| pad.get(i).unwrap_or(false)))
                    })
                    .collect();
                Ok(Some(LdpcMessage::Revealed { round, values }))
            }
            LdpcMessage::Done { failed } => {
                self.disclosure.check_pending(&failed)?;
                self.disclosure.finish(failed);
                Ok(None)
            }
            other => Err(ReconcileError::Unexpected {
                got: other.kind(),
                state: "waiting for Bob",
            }),
        }
    }

    /// True once Bob said he is done.
    pub fn is_done(&self) -> bool {
        self.disclosure.is_done()
    }

    /// The frames Bob could not decode (empty until done).
    pub fn failed(&self) -> &[u32] {
        self.disclosure.failed()
    }

    /// Syndrome and revealed bits of the frames that were not dropped: `sum (m - p + revealed)`.
    pub fn disclosed_bits(&self) -> u64 {
        self.disclosure.disclosed_bits(&self.plan)
    }

    /// What frame `f` disclosed, `None` if it failed (or does not exist).
    pub fn frame_disclosed(&self, f: usize) -> Option<u64> {
        self.disclosure.frame_disclosed(&self.plan, f)
    }

    /// Bob's success/failure answers: one key-dependent bit per frame and answer.
    pub fn bob_leak_bits(&self) -> u64 {
        self.disclosure.feedback_bits
    }

    /// Alice's frames (never changed).
    pub fn into_frames(self) -> Vec<BitBlock> {
        self.keys
    }
}

/// What Bob's side measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LdpcStats {
    /// Frames.
    pub frames: u64,
    /// Frames decoded at the first attempt.
    pub first_attempt: u64,
    /// Frames that failed after every round.
    pub failed: u64,
    /// Reveal rounds run.
    pub rounds: u32,
    /// Decoder iterations summed over frames and attempts.
    pub iterations: u64,
    /// Bits corrected in the decoded frames.
    pub corrected: u64,
}

/// Bob: decodes with his noisy frames, asks for reveals, ends with the failed frames.
#[derive(Debug)]
pub struct LdpcBob {
    plan: Arc<FramePlan>,
    backend: Backend,
    keys: Vec<BitBlock>,
    llrs: Vec<Vec<i8>>,
    syndromes: Vec<BitBlock>,
    decoded: Vec<Option<BitBlock>>,
    disclosure: Disclosure,
    stats: LdpcStats,
}

impl LdpcBob {
    /// Bob over his frames, decoding on `backend`.
    pub fn new(
        plan: Arc<FramePlan>,
        frames: Vec<BitBlock>,
        backend: Backend,
    ) -> Result<Self, ReconcileError> {
        let n = plan.graph()?.n();
        let q = channel_llr(plan.qber);
        if let Some(f) = frames.iter().find(|f| f.len() != plan.key_bits()) {
            return Err(ReconcileError::KeyLength {
                got: f.len(),
                expected: plan.key_bits(),
            });
        }
        // Every frame's LLRs: shortened bits known, punctured ones unknown, key bits +-q.
        let mut template = vec![0i8; n];
        plan.shortened.iter().for_each(|&v| template[v] = KNOWN);
        plan.key_positions.iter().for_each(|&v| template[v] = q);
        let llrs = frames
            .par_iter()
            .map(|f| {
                let mut llr = template.clone();
                f.ones().for_each(|i| llr[plan.key_positions[i]] = -q);
                llr
            })
            .collect();
        let count = frames.len();
        Ok(Self {
            plan,
            backend,
            keys: frames,
            llrs,
            syndromes: Vec::new(),
            decoded: vec![None; count],
            disclosure: Disclosure::new(count),
            stats: LdpcStats {
                frames: count as u64,
                ..LdpcStats::default()
            },
        })
    }

    /// Reads Alice's message and answers it (a reveal request or `Done`).
    pub fn handle(&mut self, msg: LdpcMessage) -> Result<LdpcMessage, ReconcileError> {
        if self.disclosure.is_done() {
            return Err(ReconcileError::Unexpected {
                got: msg.kind(),
                state: "done",
            });
        }
        let round = self.disclosure.round;
        match msg {
            LdpcMessage::Syndromes {
                rows,
                z,
                punctured,
                syndromes,
            } if self.syndromes.is_empty() => {
                if (rows, z, punctured as usize)
                    != (self.plan.rows, self.plan.z, self.plan.punctured.len())
                {
                    return Err(ReconcileError::ParamsMismatch(format!(
                        "Alice's code {rows}x{z} with {punctured} punctured bits; this side \
                         planned {}x{} with {}",
                        self.plan.rows,
                        self.plan.z,
                        self.plan.punctured.len()
                    )));
                }
                if syndromes.len() != self.keys.len() {
                    return Err(ReconcileError::WrongLength {
                        what: "syndromes",
                        got: syndromes.len(),
                        expected: self.keys.len(),
                    });
                }
                let m = self.plan.m();
                for s in &syndromes {
                    s.check(m)?;
                }
                self.syndromes = syndromes
                    .iter()
                    .map(|s| BitBlock::from_bytes(&s.bytes, m))
                    .collect::<Result<_, _>>()
                    .map_err(|e| ReconcileError::Malformed(e.to_string()))?;
                let all: Vec<u32> = (0..self.keys.len() as u32).collect();
                self.attempt(&all)?;
                self.stats.first_attempt =
                    self.decoded.iter().filter(|d| d.is_some()).count() as u64;
                Ok(self.next_request())
            }
            LdpcMessage::Revealed {
                round: theirs,
                values,
            } if theirs == round && round > 0 => {
                let asked = self.pending();
                if values.len() != asked.len() {
                    return Err(ReconcileError::WrongLength {
                        what: "revealed frames",
                        got: values.len(),
                        expected: asked.len(),
                    });
                }
                let (from, to) = (
                    self.plan.revealed_after(round - 1),
                    self.plan.revealed_after(round),
                );
                for (&f, bits) in asked.iter().zip(&values) {
                    bits.check(to - from)?;
                    let llr = &mut self.llrs[f as usize];
                    for (k, &v) in self.plan.punctured[from..to].iter().enumerate() {
                        llr[v] = if bits.get(k) { -KNOWN } else { KNOWN };
                    }
                }
                self.attempt(&asked)?;
                Ok(self.next_request())
            }
            other => Err(ReconcileError::Unexpected {
                got: other.kind(),
                state: if self.syndromes.is_empty() {
                    "waiting for syndromes"
                } else {
                    "waiting for revealed bits"
                },
            }),
        }
    }

    /// Frames not decoded yet.
    fn pending(&self) -> Vec<u32> {
        (0..self.decoded.len() as u32)
            .filter(|&f| self.decoded[f as usize].is_none())
            .collect()
    }

    /// Decodes `frames` with the current LLRs.
    fn attempt(&mut self, frames: &[u32]) -> Result<(), ReconcileError> {
        let graph = self.plan.graph()?;
        let inputs: Vec<Frame<'_>> = frames
            .iter()
            .map(|&f| Frame {
                llr: &self.llrs[f as usize],
                syndrome: &self.syndromes[f as usize],
            })
            .collect();
        // A frame that fails before the last round only costs more reveals: give stalled
        // frames up early there.
        let decoder = DecoderParams {
            stop_stalled: self.disclosure.round < self.plan.rounds,
            ..self.plan.decoder
        };
        let out = decode(graph, decoder, self.backend, &inputs)?;
        self.stats.iterations += out.iter().map(|d| u64::from(d.iterations)).sum::<u64>();
        // Each decoded frame's key bits, in parallel. A word that matches the syndrome but
        // contradicts a known (shortened or revealed) bit is not Alice's: treat it as undecoded.
        let plan = &self.plan;
        let revealed = &plan.punctured[..plan.revealed_after(self.disclosure.round)];
        let keys: Vec<Option<BitBlock>> = frames
            .par_iter()
            .zip(out)
            .map(|(&f, d)| {
                let llr = &self.llrs[f as usize];
                let agrees = |w: &BitBlock| {
                    plan.shortened.iter().all(|&v| !w.bit(v))
                        && revealed.iter().all(|&v| w.bit(v) == (llr[v] < 0))
                };
                d.word.filter(agrees).map(|w| plan.take_key(&w)).transpose()
            })
            .collect::<Result<Vec<_>, ReconcileError>>()?;
        for (&f, key) in frames.iter().zip(keys) {
            if let Some(key) = key {
                self.stats.corrected +=
                    key.hamming_distance(&self.keys[f as usize]).unwrap_or(0) as u64;
                self.decoded[f as usize] = Some(key);
            }
        }
        Ok(())
    }

    /// A reveal request for the undecoded frames while rounds remain, else `Done`.
    fn next_request(&mut self) -> LdpcMessage {
        let pending = self.pending();
        if pending.is_empty() || self.disclosure.round >= self.plan.rounds {
            self.disclosure.finish(pending.clone());
            return LdpcMessage::Done { failed: pending };
        }
        let round = self.disclosure.round + 1;
        self.disclosure.reveal(round, &pending);
        LdpcMessage::Reveal {
            round,
            frames: pending,
        }
    }

    /// True once Bob sent `Done`.
    pub fn is_done(&self) -> bool {
        self.disclosure.is_done()
    }

    /// The frames that failed (empty until done).
    pub fn failed(&self) -> &[u32] {
        self.disclosure.failed()
    }

    /// What the kept frames disclosed, as Alice counts it ([`LdpcAlice::disclosed_bits`]).
    pub fn disclosed_bits(&self) -> u64 {
        self.disclosure.disclosed_bits(&self.plan)
    }

    /// Bob's success/failure answers ([`LdpcAlice::bob_leak_bits`]).
    pub fn bob_leak_bits(&self) -> u64 {
        self.disclosure.feedback_bits
    }

    /// Counters.
    pub fn stats(&self) -> LdpcStats {
        LdpcStats {
            failed: self.disclosure.failed().len() as u64,
            rounds: u32::from(self.disclosure.round),
            ..self.stats
        }
    }

    /// Bob's frames: corrected, or as he had them for the [`failed`](Self::failed) ones.
    pub fn into_frames(self) -> Vec<BitBlock> {
        self.decoded
            .into_iter()
            .zip(self.keys)
            .map(|(decoded, own)| decoded.unwrap_or(own))
            .collect()
    }
}

/// Round trips and bytes of a loopback run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LdpcTranscript {
    /// Messages Alice sent (her syndromes and every reveal).
    pub alice_messages: u32,
    /// Encoded bytes both ways.
    pub bytes: u64,
}

/// Runs both parties in this process through the wire encoding until Bob is done.
pub fn run_loopback(
    alice: &mut LdpcAlice,
    first: LdpcMessage,
    bob: &mut LdpcBob,
) -> Result<LdpcTranscript, ReconcileError> {
    let mut t = LdpcTranscript::default();
    let mut to_bob = Some(first);
    while let Some(m) = to_bob.take() {
        let wire = m.encode()?;
        t.bytes += wire.len() as u64;
        t.alice_messages += 1;
        let answer = bob.handle(LdpcMessage::decode(&wire)?)?;
        let wire = answer.encode()?;
        t.bytes += wire.len() as u64;
        to_bob = alice.handle(LdpcMessage::decode(&wire)?)?;
    }
    Ok(t)
}

/// Sets bit `positions[i]` of `words` for every one bit `i` of `bits`.
fn scatter(bits: &BitBlock, positions: &[usize], words: &mut [u64]) {
    for v in bits.ones().map(|i| positions[i]) {
        words[v / 64] |= 1 << (v % 64);
    }
}

#[cfg(test)]
mod tests;
