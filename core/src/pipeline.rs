//! Block in, final key out: estimate -> reconcile -> confirm -> secret length -> amplify ->
//! entropy check, with one [`BlockReport`] per block (DESIGN §2).
//!
//! [`process_block`] runs Alice's and Bob's [`crate::session`]s of a block against each other in
//! this process, every message through its wire encoding and both transcripts authenticated:
//! the same state machines a two-site deployment drives over the network. The stages:
//!
//! 1. **Estimate**: Alice draws a public seed, discloses `sample_bits` bits at the positions it
//!    selects; Bob compares, bounds the QBER, and both drop the sample. The block is sized for
//!    the smallest rung of the session's [`QberLadder`] (fixed by `max_qber` before any
//!    sample is seen) at or above its sample QBER; a block above the top rung, or whose upper
//!    bound exceeds `max_qber`, is discarded before any parity is disclosed.
//! 2. **Reconcile**: Cascade ([`crate::reconcile::cascade`]) with the configured variant, on
//!    frames of `frame_bits` that advance together ([`crate::reconcile::frames`]); the observed
//!    QBER sets Cascade's block sizes.
//! 3. **Confirm**: a universal-hash tag of each reconciled frame ([`crate::confirm`]) at
//!    `eps_cor / (2 frames)`; the frames whose tags differ are reconciled once more, together,
//!    with a fresh shuffle and checked again, then dropped on both sides if they still differ
//!    (their bits count as disclosed); a block with no frame left is discarded.
//! 4. **Secret length**: the finite-key bound ([`crate::amplify::finite_key`]) from the key
//!    length, sample size, the block's rung and the ladder's size, Cascade's leakage on both
//!    sides (Alice's parities plus Bob's key-dependent bits) and the confirmation tag
//!    (charged once).
//! 5. **Amplify**: each side Toeplitz-hashes its key with the same fresh public seed; after the
//!    transcript tags, the two final keys are compared (the simulation knows both) and must be
//!    identical.
//! 6. **Check**: the entropy verdict on the final key; a failure quarantines the block.
//!
//! [`process`] runs many blocks in parallel (rayon) and [`process_stream`] feeds them from a
//! reader in bounded batches, so memory stays proportional to the batch, not the input.

use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::BitBlock;
use crate::amplify::{QberLadder, SecretLength, ToeplitzMethod};
use crate::auth::KeyPool;
use crate::entropy::Verdict;
use crate::reconcile::algorithm::Algorithm;
use crate::reconcile::efficiency;
use crate::rng::{OsRandom, RandomSource, RngError, SeededRandom};
use crate::session::drive::run_pair;
use crate::session::{AliceSession, BobSession, Link, SessionOutcome};

/// Settings of the pipeline; [`PipelineConfig::default`] is a sensible start.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineConfig {
    /// Raw bits per block, sample included.
    pub block_bits: usize,
    /// Bits disclosed per block to estimate the QBER.
    pub sample_bits: usize,
    /// Reconciliation algorithm: a Cascade variant or LDPC ([`Algorithm::parse`]).
    pub algorithm: String,
    /// Bits per frame: the block (sample removed) is reconciled as frames of this size that
    /// advance together ([`crate::reconcile::frames`]); 0 reconciles it as one frame. LDPC
    /// frames are the largest built-in code's key part that fits (0: the largest, 92160 bits),
    /// and the block's tail after its whole frames is left out of the key (charged as disclosed).
    pub frame_bits: usize,
    /// Failure probability of the reported QBER upper bound (parameter estimation).
    pub eps_pe: f64,
    /// Secrecy parameter of the final key.
    pub eps_sec: f64,
    /// Correctness parameter (confirmation tag length).
    pub eps_cor: f64,
    /// The top rung of the QBER ladder ([`QberLadder::default_up_to`]): blocks whose sample
    /// QBER or whose QBER upper bound exceeds it are discarded before reconciliation.
    pub max_qber: f64,
    /// Toeplitz method.
    #[serde(serialize_with = "ser_method")]
    pub toeplitz: ToeplitzMethod,
}

fn ser_method<S: serde::Serializer>(m: &ToeplitzMethod, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&m.name())
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            block_bits: 1 << 20,
            sample_bits: 1 << 14,
            algorithm: DEFAULT_ALGORITHM.into(),
            frame_bits: DEFAULT_FRAME_BITS,
            eps_pe: 1e-10,
            eps_sec: 1e-10,
            eps_cor: 1e-15,
            max_qber: 0.11,
            toeplitz: ToeplitzMethod::default(),
        }
    }
}

/// The reconciliation algorithm when none is named: the Cascade variant the pipeline, sessions,
/// the KME, the CLI, the C API and the Python module all default to.
pub const DEFAULT_ALGORITHM: &str = "yanetal";

/// Default Cascade frame: 2^16 bits. Measured at 2 % (`qkd process --frame-bits 0` against the
/// default), blocks of 2^20 bits ran about twice as fast as one frame and blocks of 2^24 10 to 27
/// times as fast, for f 1.058 instead of 1.054.
pub const DEFAULT_FRAME_BITS: usize = 1 << 16;

/// Smallest Cascade frame accepted (below it the finite passes of Cascade waste parities).
pub const MIN_FRAME_BITS: usize = 1 << 10;

/// Why the pipeline cannot run at all (bad configuration or input), as opposed to a block that
/// yields no key, which is a normal [`BlockOutcome`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// A setting is out of range.
    #[error("invalid pipeline configuration: {0}")]
    Config(String),
    /// Alice's and Bob's inputs differ in length.
    #[error("Alice's input has {alice} bits but Bob's has {bob}")]
    LengthMismatch {
        /// Alice's bits.
        alice: u64,
        /// Bob's bits.
        bob: u64,
    },
    /// The inputs are shorter than one block: no block to process.
    #[error(
        "the keys have {bits} bits, fewer than one block (block_bits = {block_bits}); pass longer keys or a smaller block size"
    )]
    ShorterThanBlock {
        /// Bits of each input.
        bits: u64,
        /// Bits per block.
        block_bits: u64,
    },
    /// Reading an input failed.
    #[error("reading {side}'s input: {error}")]
    Io {
        /// `alice` or `bob`.
        side: &'static str,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The randomness source failed.
    #[error(transparent)]
    Rng(#[from] RngError),
    /// A stage failed on a block (a protocol error: a bug or a corrupted message).
    #[error("block {block}: {stage} failed: {message}")]
    Stage {
        /// Block index.
        block: u64,
        /// Stage name.
        stage: &'static str,
        /// The stage's error.
        message: String,
    },
}

impl PipelineConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), PipelineError> {
        let bad = |m: String| Err(PipelineError::Config(m));
        if self.sample_bits >= self.block_bits / 2 {
            return bad(format!(
                "sample bits ({}) must be under half the block ({} bits)",
                self.sample_bits, self.block_bits
            ));
        }
        if self.block_bits > u32::MAX as usize {
            return bad(format!(
                "block bits ({}) must be below 2^32",
                self.block_bits
            ));
        }
        let algorithm = self.validate_protocol()?;
        self.check_frame_fits(&algorithm, self.block_bits)
    }

    /// Checks that blocks of `block_bits` raw bits hold, after the sample, at least one whole
    /// frame of `algorithm` when it fixes the frame length (LDPC).
    pub fn check_frame_fits(
        &self,
        algorithm: &Algorithm,
        block_bits: usize,
    ) -> Result<(), PipelineError> {
        let left = block_bits.saturating_sub(self.sample_bits);
        match algorithm.fixed_frame_bits() {
            Some(frame) if left < frame => Err(PipelineError::Config(format!(
                "a block of {block_bits} bits holds {left} after the sample: fewer than one \
                 {frame}-bit LDPC frame"
            ))),
            _ => Ok(()),
        }
    }

    /// Checks every setting but the block size (a link's sessions each take their raw block's
    /// own length, checked by the session) and returns the reconciliation algorithm they name.
    pub fn validate_protocol(&self) -> Result<Algorithm, PipelineError> {
        let bad = |m: String| Err(PipelineError::Config(m));
        if self.sample_bits == 0 {
            return bad("sample bits must be positive".into());
        }
        for (name, v) in [
            ("eps_pe", self.eps_pe),
            ("eps_sec", self.eps_sec),
            ("eps_cor", self.eps_cor),
        ] {
            if !(v > 0.0 && v < 1.0) {
                return bad(format!("{name} ({v}) must lie strictly between 0 and 1"));
            }
        }
        if self.frame_bits != 0 && self.frame_bits < MIN_FRAME_BITS {
            return bad(format!(
                "frame bits ({}) must be 0 (one frame) or at least {MIN_FRAME_BITS}",
                self.frame_bits
            ));
        }
        if !(self.max_qber > 0.0 && self.max_qber <= 0.5) {
            return bad(format!("max_qber ({}) must lie in (0, 0.5]", self.max_qber));
        }
        Algorithm::parse(&self.algorithm, self.frame_bits)
            .map_err(|e| PipelineError::Config(e.to_string()))
    }
}

/// What happened to a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "reason")]
pub enum BlockOutcome {
    /// Final key produced and delivered.
    Key,
    /// No key: QBER too high, confirmation mismatch, or a secret length of zero.
    Discarded(String),
    /// A final key was produced but failed the entropy check; it is withheld.
    Quarantined(String),
}

/// Seconds spent in each stage of one block (both parties together).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StageTimes {
    /// Sampling and QBER bound.
    pub estimate: f64,
    /// Cascade, both sides, encoding included.
    pub reconcile: f64,
    /// Confirmation tags.
    pub confirm: f64,
    /// Toeplitz hashing, both sides.
    pub amplify: f64,
    /// Entropy verdict.
    pub check: f64,
}

impl StageTimes {
    /// Sum of the stages.
    pub fn total(&self) -> f64 {
        self.estimate + self.reconcile + self.confirm + self.amplify + self.check
    }

    fn add(&mut self, o: &StageTimes) {
        self.estimate += o.estimate;
        self.reconcile += o.reconcile;
        self.confirm += o.confirm;
        self.amplify += o.amplify;
        self.check += o.check;
    }
}

/// Everything one block went through (DESIGN §2): what the CLI, benchmarks, Python and C read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlockReport {
    /// Block index in the input (0 for a session on its own).
    pub index: u64,
    /// The block's ID on the link (both raw sources name it; the pipeline uses the index).
    pub block_id: String,
    /// Raw bits in.
    pub raw_bits: u64,
    /// Bits disclosed for estimation.
    pub sample_bits: u64,
    /// Errors in the sample.
    pub sample_errors: u64,
    /// QBER observed on the sample.
    pub qber: f64,
    /// Upper bound on the QBER of the rest at `eps_pe`.
    pub qber_upper: f64,
    /// Bits reconciled (raw minus sample).
    pub reconciled_bits: u64,
    /// The tolerated QBER the block was sized for (its rung of the ladder), once estimated.
    pub qber_tolerated: Option<f64>,
    /// Cascade parity bits Alice disclosed (the numerator of `efficiency`).
    pub leak_alice_bits: u64,
    /// Bits of Bob's Cascade messages that depend on his key (counted conservatively; with
    /// `leak_alice_bits` it sizes the key: docs/security.md, "Cascade leakage").
    pub leak_bob_bits: u64,
    /// Cascade round trips (batches carrying every frame's messages).
    pub round_trips: u32,
    /// Messages of the block's session, both directions (this side's count).
    pub messages: u32,
    /// Errors Cascade corrected.
    pub errors_corrected: u64,
    /// Bits in which Alice's and Bob's final keys differ (the simulation knows both; 0 unless
    /// confirmation missed an error).
    pub residual_errors: u64,
    /// Errors actually present before reconciliation (simulation only; 0 in a session).
    pub true_errors: u64,
    /// Reconciliation efficiency `f` (DESIGN §4): in a session with the errors Cascade
    /// corrected, in the simulation with the block's true errors; `None` when there was
    /// nothing to correct or reconciliation did not run.
    pub efficiency: Option<f64>,
    /// Confirmation tag bits, all frames (leaked, reported apart from `f`, charged once in the
    /// length).
    pub confirm_tag_bits: u32,
    /// Whether every frame's confirmation tags matched in the end (after any retry).
    pub confirmed: bool,
    /// Frames whose first confirmation failed and that were reconciled once more.
    pub retried_frames: u32,
    /// Frames dropped on both sides: Cascade frames whose tags still differed after the retry,
    /// LDPC frames Bob could not decode or whose tags differed.
    pub dropped_frames: u32,
    /// Bits of the dropped frames and of an LDPC block's tail after its whole frames (counted
    /// as disclosed in the length).
    pub dropped_frame_bits: u64,
    /// The finite-key computation, when it ran.
    pub secret: Option<SecretLength>,
    /// Final key bits delivered (0 unless `outcome` is `Key`).
    pub final_bits: u64,
    /// Authentication key spent on this block (pads, and a new hash key when one was drawn).
    pub auth_bits: u64,
    /// Entropy verdict of the final key, when one was made.
    pub entropy: Option<Verdict>,
    /// What happened.
    pub outcome: BlockOutcome,
    /// Time per stage.
    pub times: StageTimes,
}

/// A processed block: its report and, if it yielded key, the final key (identical for Alice
/// and Bob, checked).
#[derive(Debug)]
pub struct BlockResult {
    /// The report.
    pub report: BlockReport,
    /// The final key, when `report.outcome` is [`BlockOutcome::Key`].
    pub key: Option<BitBlock>,
}

fn stage_err(block: u64, stage: &'static str) -> impl Fn(String) -> PipelineError {
    move |message| PipelineError::Stage {
        block,
        stage,
        message,
    }
}

/// Runs one block pair through every stage with a one-off [`Session`]. `rng` keys the stream
/// of Alice's public seeds (sampling, shuffle, hash and Toeplitz seeds); use [`OsRandom`]
/// outside tests.
pub fn process_block(
    index: u64,
    alice_raw: &BitBlock,
    bob_raw: &BitBlock,
    cfg: &PipelineConfig,
    rng: &mut dyn RandomSource,
) -> Result<BlockResult, PipelineError> {
    Session::new(cfg.clone(), rng)?.process_block(index, alice_raw, bob_raw, rng)
}

/// Both sides of a simulated link in this process: Alice's and Bob's [`Link`]s (plans cached
/// across blocks, as a deployment caches them), with authentication pools that start from a
/// simulated pre-shared secret and are topped up before each batch of blocks.
#[derive(Debug)]
pub struct Session {
    alice: Arc<Link>,
    bob: Arc<Link>,
}

/// Pool bits a block may take: two pads and, after a failure, a new hash key.
const AUTH_WORDS_PER_BLOCK: usize = 3;

impl Session {
    /// A session for `cfg`, with the link's shuffle seed drawn from `rng`.
    pub fn new(cfg: PipelineConfig, rng: &mut dyn RandomSource) -> Result<Self, PipelineError> {
        cfg.validate()?;
        let link = |rng: &mut dyn RandomSource| {
            Link::new(cfg.clone(), Box::new(KeyPool::new(&[])), rng)
                .map_err(|e| PipelineError::Config(e.to_string()))
        };
        Ok(Self {
            alice: link(rng)?,
            bob: link(rng)?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PipelineConfig {
        self.alice.config()
    }

    /// The tolerated QBERs blocks are sized for, fixed by `max_qber`.
    pub fn ladder(&self) -> &QberLadder {
        self.alice.ladder()
    }

    /// Adds simulated pre-shared secret for `blocks` more blocks to both pools (the same
    /// bytes, from the OS CSPRNG).
    fn top_up_auth(&self, blocks: usize) -> Result<(), PipelineError> {
        let mut secret = zeroize::Zeroizing::new(vec![0u8; blocks * AUTH_WORDS_PER_BLOCK * 16]);
        OsRandom.fill(&mut secret)?;
        for link in [&self.alice, &self.bob] {
            link.auth_keys().refill(&secret);
        }
        Ok(())
    }

    /// Runs one block pair through both sessions (every message through its encoding). The
    /// sessions' public seeds are a ChaCha20 stream keyed by 32 bytes from `rng`.
    pub fn process_block(
        &self,
        index: u64,
        alice_raw: &BitBlock,
        bob_raw: &BitBlock,
        rng: &mut dyn RandomSource,
    ) -> Result<BlockResult, PipelineError> {
        self.top_up_auth(1)?;
        self.run_block(
            index,
            alice_raw,
            bob_raw,
            Box::new(SeededRandom::from_seed(rng.seed32()?)),
        )
    }

    fn run_block(
        &self,
        index: u64,
        alice_raw: &BitBlock,
        bob_raw: &BitBlock,
        rng: Box<dyn RandomSource>,
    ) -> Result<BlockResult, PipelineError> {
        let cfg = self.config();
        if alice_raw.len() != bob_raw.len() {
            return Err(PipelineError::LengthMismatch {
                alice: alice_raw.len() as u64,
                bob: bob_raw.len() as u64,
            });
        }
        if alice_raw.len() <= 2 * cfg.sample_bits {
            return Err(PipelineError::Config(format!(
                "block {index} has {} bits, too few for a {}-bit sample",
                alice_raw.len(),
                cfg.sample_bits
            )));
        }
        let err = stage_err(index, "session");
        let id = index.to_string();
        let mut alice =
            AliceSession::new(Arc::clone(&self.alice), id.clone(), alice_raw.clone(), rng)
                .map_err(|e| err(e.to_string()))?;
        let mut bob = BobSession::new(Arc::clone(&self.bob), id, bob_raw.clone())
            .map_err(|e| err(e.to_string()))?;
        let (a, b) = run_pair(&mut alice, &mut bob);
        let (a, b) = (
            a.map_err(|e| err(e.to_string()))?,
            b.map_err(|e| err(e.to_string()))?,
        );
        let raw_errors = alice_raw
            .hamming_distance(bob_raw)
            .map_err(|e| err(e.to_string()))? as u64;
        Ok(merge(index, a, b, raw_errors))
    }
}

/// One report from both sides' outcomes: Alice's, with both sides' stage times and what only a
/// simulation knows (the true errors, whether the final keys are equal).
fn merge(index: u64, alice: SessionOutcome, bob: SessionOutcome, raw_errors: u64) -> BlockResult {
    let mut report = alice.report;
    report.index = index;
    report.times.add(&bob.report.times);
    report.true_errors = raw_errors.saturating_sub(report.sample_errors);
    // Reconciliation ran exactly when the block got a rung.
    if report.true_errors > 0 && report.qber_tolerated.is_some() {
        report.efficiency = Some(efficiency(
            report.leak_alice_bits,
            report.reconciled_bits as usize,
            report.true_errors,
        ));
    }
    let key = match (alice.key, bob.key) {
        (Some(ka), Some(kb)) => {
            let differ = ka.hamming_distance(&kb).unwrap_or(ka.len()) as u64;
            report.residual_errors = differ;
            if differ == 0 {
                Some(ka)
            } else {
                report.final_bits = 0;
                report.outcome =
                    BlockOutcome::Discarded("final keys differ despite matching tags".into());
                None
            }
        }
        (None, None) => None,
        (ka, _) => {
            let side = if ka.is_some() { "Alice" } else { "Bob" };
            report.final_bits = 0;
            report.outcome = BlockOutcome::Discarded(format!("only {side} released a key"));
            None
        }
    };
    BlockResult { report, key }
}

/// Totals over many blocks, for summaries.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Blocks processed.
    pub blocks: u64,
    /// Blocks that yielded key.
    pub blocks_with_key: u64,
    /// Blocks discarded (QBER, confirmation, zero length).
    pub blocks_discarded: u64,
    /// Blocks quarantined by the entropy check.
    pub blocks_quarantined: u64,
    /// Raw bits in.
    pub raw_bits: u64,
    /// Final bits out.
    pub final_bits: u64,
    /// Authentication key spent, all blocks (pads and hash keys).
    pub auth_bits: u64,
    /// Final bits per raw bit.
    pub secret_fraction: f64,
    /// Mean observed QBER over blocks.
    pub qber_mean: f64,
    /// Mean efficiency over blocks that had errors to correct.
    pub efficiency_mean: Option<f64>,
    /// Number of blocks in `efficiency_mean`.
    pub efficiency_blocks: u64,
    /// Stage times summed over blocks (CPU-side sums; stages of different blocks overlap).
    pub times: StageTimes,
    /// Wall-clock seconds of the whole run.
    pub wall_seconds: f64,
    /// Raw bits per wall-clock second.
    pub raw_bits_per_second: f64,
}

impl Summary {
    /// Adds one block's report.
    pub fn add(&mut self, r: &BlockReport) {
        let prev = self.blocks as f64;
        self.blocks += 1;
        match r.outcome {
            BlockOutcome::Key => self.blocks_with_key += 1,
            BlockOutcome::Discarded(_) => self.blocks_discarded += 1,
            BlockOutcome::Quarantined(_) => self.blocks_quarantined += 1,
        }
        self.raw_bits += r.raw_bits;
        self.final_bits += r.final_bits;
        self.auth_bits += r.auth_bits;
        self.secret_fraction = self.final_bits as f64 / self.raw_bits.max(1) as f64;
        self.qber_mean = (self.qber_mean * prev + r.qber) / self.blocks as f64;
        if let Some(f) = r.efficiency {
            let k = self.efficiency_blocks as f64;
            self.efficiency_mean =
                Some(self.efficiency_mean.map_or(f, |m| (m * k + f) / (k + 1.0)));
            self.efficiency_blocks += 1;
        }
        self.times.add(&r.times);
    }

    /// Records the wall-clock time and derives the throughput.
    pub fn finish(&mut self, wall_seconds: f64) {
        self.wall_seconds = wall_seconds;
        self.raw_bits_per_second = self.raw_bits as f64 / wall_seconds.max(1e-9);
    }
}

/// Processes `alice` and `bob` (equal length, at least one block) cut into
/// `cfg.block_bits`-bit blocks (a shorter tail is dropped), in parallel over blocks; `on_block` sees every result in block order.
/// Public seeds come from the OS CSPRNG.
pub fn process(
    alice: &BitBlock,
    bob: &BitBlock,
    cfg: &PipelineConfig,
    mut on_block: impl FnMut(BlockResult) -> Result<(), PipelineError>,
) -> Result<Summary, PipelineError> {
    cfg.validate()?;
    if alice.len() != bob.len() {
        return Err(PipelineError::LengthMismatch {
            alice: alice.len() as u64,
            bob: bob.len() as u64,
        });
    }
    if alice.len() < cfg.block_bits {
        return Err(PipelineError::ShorterThanBlock {
            bits: alice.len() as u64,
            block_bits: cfg.block_bits as u64,
        });
    }
    let t0 = Instant::now();
    let session = Session::new(cfg.clone(), &mut OsRandom)?;
    let blocks = alice.len() / cfg.block_bits;
    session.top_up_auth(blocks)?;
    let mut summary = Summary::default();
    let results: Vec<Result<BlockResult, PipelineError>> = (0..blocks)
        .into_par_iter()
        .map(|b| {
            let range = b * cfg.block_bits..(b + 1) * cfg.block_bits;
            let a = alice
                .slice(range.clone())
                .map_err(|e| stage_err(b as u64, "split")(e.to_string()))?;
            let o = bob
                .slice(range)
                .map_err(|e| stage_err(b as u64, "split")(e.to_string()))?;
            session.run_block(b as u64, &a, &o, Box::new(OsRandom))
        })
        .collect();
    for r in results {
        let r = r?;
        summary.add(&r.report);
        on_block(r)?;
    }
    summary.finish(t0.elapsed().as_secs_f64());
    Ok(summary)
}

/// Streams two readers of packed key bytes (DESIGN §4 order) through the pipeline in batches of
/// `batch_blocks` blocks processed in parallel, so memory is bounded by the batch whatever the
/// input size. `cfg.block_bits` must be a multiple of 8. A trailing partial block is ignored
/// (reported in [`StreamSummary::ignored_tail_bits`]).
pub fn process_stream(
    mut alice: impl Read,
    mut bob: impl Read,
    cfg: &PipelineConfig,
    batch_blocks: usize,
    mut on_block: impl FnMut(BlockResult) -> Result<(), PipelineError>,
) -> Result<StreamSummary, PipelineError> {
    cfg.validate()?;
    if !cfg.block_bits.is_multiple_of(8) {
        return Err(PipelineError::Config(format!(
            "streaming needs a block size in whole bytes; {} bits is not a multiple of 8",
            cfg.block_bits
        )));
    }
    let block_bytes = cfg.block_bits / 8;
    let batch = batch_blocks.max(1);
    let session = Session::new(cfg.clone(), &mut OsRandom)?;
    let t0 = Instant::now();
    let mut summary = Summary::default();
    let mut next_index = 0u64;
    let mut ignored_tail_bits = 0u64;
    let mut buf_a = zeroize::Zeroizing::new(vec![0u8; block_bytes * batch]);
    let mut buf_b = zeroize::Zeroizing::new(vec![0u8; block_bytes * batch]);
    loop {
        let got_a = read_full(&mut alice, &mut buf_a).map_err(|error| PipelineError::Io {
            side: "alice",
            error,
        })?;
        let got_b = read_full(&mut bob, &mut buf_b)
            .map_err(|error| PipelineError::Io { side: "bob", error })?;
        if got_a != got_b {
            let (a, b) = (
                next_index * block_bytes as u64 + got_a as u64,
                next_index * block_bytes as u64 + got_b as u64,
            );
            return Err(PipelineError::LengthMismatch {
                alice: a * 8,
                bob: b * 8,
            });
        }
        let whole = got_a / block_bytes;
        session.top_up_auth(whole)?;
        ignored_tail_bits += ((got_a % block_bytes) * 8) as u64;
        let results: Vec<Result<BlockResult, PipelineError>> = (0..whole)
            .into_par_iter()
            .map(|i| {
                let r = i * block_bytes..(i + 1) * block_bytes;
                let idx = next_index + i as u64;
                let split = |e: crate::BitsError| stage_err(idx, "split")(e.to_string());
                let a = BitBlock::from_bytes(&buf_a[r.clone()], cfg.block_bits).map_err(split)?;
                let o = BitBlock::from_bytes(&buf_b[r], cfg.block_bits).map_err(split)?;
                session.run_block(idx, &a, &o, Box::new(OsRandom))
            })
            .collect();
        for r in results {
            let r = r?;
            summary.add(&r.report);
            on_block(r)?;
        }
        next_index += whole as u64;
        if got_a < buf_a.len() {
            break;
        }
    }
    summary.finish(t0.elapsed().as_secs_f64());
    Ok(StreamSummary {
        summary,
        ignored_tail_bits,
    })
}

/// A streamed run's summary plus the bits of a trailing partial block that were not used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamSummary {
    /// Totals.
    #[serde(flatten)]
    pub summary: Summary,
    /// Bits at the end of the input that did not fill a block.
    pub ignored_tail_bits: u64,
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests;
