//! Simulated QKD link: pairs of raw sifted keys with a chosen error model.
//!
//! [`SimConfig::run_seeded`] (or [`simulate`]) returns a [`SimPair`]: Alice's `n` bits,
//! uniform; Bob's bits, Alice's XOR an error pattern drawn from an [`ErrorModel`]; and a
//! [`SimReport`] (serde) saying what was simulated. Everything is generated a word at a time:
//! uniform words for Alice, geometric gaps between errors for Bernoulli patterns, so 10^8 bits
//! take a fraction of a second.
//!
//! Seeded runs use [`SeededRandom`] (ChaCha20) and are reproducible for a given version of this
//! crate: **for tests, benchmarks and datasets only**. A simulated key is never a secret key.
//! [`SimConfig::run`] accepts any [`RandomSource`].
//!
//! # Error models
//! - [`ErrorModel::IidExact`]: exactly `round(p * n)` errors at distinct, uniformly chosen
//!   positions (every such pattern equally likely).
//! - [`ErrorModel::Bernoulli`]: each bit wrong independently with probability `p`; the error
//!   count is Binomial(n, p).
//! - [`ErrorModel::Burst`]: a Gilbert-Elliott chain ([`GilbertElliott`]) calibrated from a
//!   [`BurstShape`] so that its long-run error rate is exactly `p`.
//! - [`ErrorModel::GilbertElliott`]: a chain with parameters set by hand; its long-run error rate
//!   must equal the requested QBER.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::bits::BitBlock;
use crate::rng::{RandomSource, RngError, SeededRandom};

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The requested key length is zero.
    #[error("key length is 0 bits; expected at least 1")]
    ZeroLength,
    /// The requested QBER is outside `[0, 0.5]` or not a number.
    #[error("QBER {qber} is out of range; expected a number in [0, 0.5]")]
    QberOutOfRange {
        /// The requested QBER.
        qber: f64,
    },
    /// A model parameter is outside its valid range.
    #[error("model parameter {name} = {value} is invalid; expected {expected}")]
    InvalidParameter {
        /// Name of the parameter.
        name: &'static str,
        /// Its value.
        value: f64,
        /// The valid range.
        expected: &'static str,
    },
    /// No Gilbert-Elliott chain has this burst shape and long-run error rate.
    #[error("burst shape cannot reach QBER {qber}: {reason}")]
    Uncalibratable {
        /// The requested QBER.
        qber: f64,
        /// Which constraint fails.
        reason: String,
    },
    /// A hand-set chain's long-run error rate differs from the requested QBER.
    #[error(
        "Gilbert-Elliott chain has long-run error rate {model_rate}, but QBER {qber} was requested"
    )]
    ModelQberMismatch {
        /// The requested QBER.
        qber: f64,
        /// The chain's stationary error rate.
        model_rate: f64,
    },
    /// An unknown model name (parsing).
    #[error("unknown error model '{0}'; expected one of: iid, bernoulli, burst")]
    UnknownModel(String),
    /// The random source failed.
    #[error(transparent)]
    Rng(#[from] RngError),
}

/// Shape of the bursts of a calibrated Gilbert-Elliott model, independent of the QBER.
///
/// With requested QBER `q`, mean burst length `L`, bad-state error probability `e_B` and burst
/// fraction `phi`, the chain is ([`GilbertElliott::calibrate`]):
///
/// ```text
/// p_bad_to_good = 1 / L                      (bad-state sojourns are geometric, mean L bits)
/// pi_B          = phi * q / e_B              (long-run fraction of bits in the bad state)
/// error_good    = (1 - phi) * q / (1 - pi_B)
/// p_good_to_bad = p_bad_to_good * pi_B / (1 - pi_B)
/// ```
///
/// so that `pi_B * e_B = phi * q` of the error rate comes from bursts, the rest from the good
/// state, and the long-run error rate `pi_B * e_B + (1 - pi_B) * error_good` is exactly `q`.
///
/// The [`Default`] is `L = 32`, `e_B = 0.5`, `phi = 0.5`: half the errors arrive in bursts during
/// which Bob's bits are uncorrelated with Alice's (as when a phase reference or timing lock is
/// briefly lost), each about 32 bits long with about 16 errors. 32 bits is of the order of
/// Cascade's first-pass block (`0.73 / q`: 73 bits at 1 %, 15 at 5 %), so a burst puts several
/// errors into one block and really stresses reconciliation tuned for i.i.d. errors, while it is
/// far shorter than a key block (10^4 to 10^8 bits): the chain mixes within about `L` bits, so
/// every block sees close to the long-run rate and a random estimation sample stays
/// representative.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BurstShape {
    /// Mean length of a burst (bad-state sojourn) in bits, at least 1.
    pub mean_burst_len: f64,
    /// Error probability inside a burst, in `(0, 1]`.
    pub error_bad: f64,
    /// Fraction of all errors that occur inside bursts, in `[0, 1]`.
    pub burst_fraction: f64,
}

impl Default for BurstShape {
    fn default() -> Self {
        Self {
            mean_burst_len: 32.0,
            error_bad: 0.5,
            burst_fraction: 0.5,
        }
    }
}

/// A two-state (good/bad) Markov chain over bit positions with a per-state error probability:
/// the Gilbert-Elliott burst-error model.
///
/// At each bit the chain is in state G or B; the bit is wrong with probability `error_good` or
/// `error_bad`; then the chain moves G -> B with probability `p_good_to_bad`, B -> G with
/// probability `p_bad_to_good`. Sojourns are geometric with means `1 / p_good_to_bad` and
/// `1 / p_bad_to_good` bits. The first bit's state is drawn from the stationary distribution
/// `pi_B = p_good_to_bad / (p_good_to_bad + p_bad_to_good)`, so the pattern is stationary from
/// bit 0 and the long-run error rate is `(1 - pi_B) * error_good + pi_B * error_bad`
/// ([`GilbertElliott::error_rate`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GilbertElliott {
    /// Probability of moving from the good to the bad state after a bit, in `[0, 1]`.
    pub p_good_to_bad: f64,
    /// Probability of moving from the bad to the good state after a bit, in `[0, 1]`.
    pub p_bad_to_good: f64,
    /// Error probability in the good state, in `[0, 1]`.
    pub error_good: f64,
    /// Error probability in the bad state, in `[0, 1]`.
    pub error_bad: f64,
}

fn check_prob(name: &'static str, value: f64) -> Result<(), SimError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(SimError::InvalidParameter {
            name,
            value,
            expected: "a probability in [0, 1]",
        })
    }
}

fn check_qber(qber: f64) -> Result<(), SimError> {
    if (0.0..=0.5).contains(&qber) {
        Ok(())
    } else {
        Err(SimError::QberOutOfRange { qber })
    }
}

impl GilbertElliott {
    /// Checks that every parameter is a probability and that the chain can leave at least one
    /// state (otherwise it has no unique stationary distribution).
    pub fn validate(&self) -> Result<(), SimError> {
        check_prob("p_good_to_bad", self.p_good_to_bad)?;
        check_prob("p_bad_to_good", self.p_bad_to_good)?;
        check_prob("error_good", self.error_good)?;
        check_prob("error_bad", self.error_bad)?;
        if self.p_good_to_bad + self.p_bad_to_good == 0.0 {
            return Err(SimError::InvalidParameter {
                name: "p_good_to_bad + p_bad_to_good",
                value: 0.0,
                expected: "a positive sum (the chain must be able to change state)",
            });
        }
        Ok(())
    }

    /// Long-run fraction of bits in the bad state, `p_gb / (p_gb + p_bg)`.
    pub fn stationary_bad(&self) -> f64 {
        self.p_good_to_bad / (self.p_good_to_bad + self.p_bad_to_good)
    }

    /// Long-run error rate, `(1 - pi_B) * error_good + pi_B * error_bad`.
    pub fn error_rate(&self) -> f64 {
        let pb = self.stationary_bad();
        (1.0 - pb) * self.error_good + pb * self.error_bad
    }

    /// Mean burst (bad-state sojourn) length in bits, `1 / p_bad_to_good` (infinite if 0).
    pub fn mean_burst_len(&self) -> f64 {
        1.0 / self.p_bad_to_good
    }

    /// The chain with burst shape `shape` and long-run error rate exactly `qber` (formulas on
    /// [`BurstShape`]).
    pub fn calibrate(qber: f64, shape: &BurstShape) -> Result<Self, SimError> {
        check_qber(qber)?;
        if !(shape.mean_burst_len >= 1.0 && shape.mean_burst_len.is_finite()) {
            return Err(SimError::InvalidParameter {
                name: "mean_burst_len",
                value: shape.mean_burst_len,
                expected: "a finite number of bits >= 1",
            });
        }
        if !(shape.error_bad > 0.0 && shape.error_bad <= 1.0) {
            return Err(SimError::InvalidParameter {
                name: "error_bad",
                value: shape.error_bad,
                expected: "a probability in (0, 1]",
            });
        }
        check_prob("burst_fraction", shape.burst_fraction)?;
        let p_bg = 1.0 / shape.mean_burst_len;
        let pi_b = shape.burst_fraction * qber / shape.error_bad;
        if pi_b >= 1.0 {
            return Err(SimError::Uncalibratable {
                qber,
                reason: format!(
                    "bursts would fill the whole key (burst_fraction * qber / error_bad = {pi_b}); \
                     lower burst_fraction or raise error_bad"
                ),
            });
        }
        let error_good = (1.0 - shape.burst_fraction) * qber / (1.0 - pi_b);
        let p_gb = p_bg * pi_b / (1.0 - pi_b);
        if error_good > 1.0 || p_gb > 1.0 {
            return Err(SimError::Uncalibratable {
                qber,
                reason: format!(
                    "needs error_good = {error_good} and p_good_to_bad = {p_gb}, \
                     which must both be <= 1; lengthen the bursts or raise burst_fraction"
                ),
            });
        }
        let chain = Self {
            p_good_to_bad: p_gb,
            p_bad_to_good: p_bg,
            error_good,
            error_bad: shape.error_bad,
        };
        chain.validate()?;
        Ok(chain)
    }
}

/// How Bob's bits differ from Alice's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ErrorModel {
    /// Exactly `round(qber * n)` errors at distinct, uniformly chosen positions.
    IidExact,
    /// Each bit wrong independently with probability `qber`.
    Bernoulli,
    /// Bursty errors: a Gilbert-Elliott chain calibrated from this shape to the requested QBER.
    Burst(BurstShape),
    /// Bursty errors from a chain set by hand; its long-run error rate must equal the QBER
    /// (within 1e-9).
    GilbertElliott(GilbertElliott),
}

impl ErrorModel {
    /// Bursts with the default [`BurstShape`].
    pub fn burst() -> Self {
        Self::Burst(BurstShape::default())
    }

    /// A short name: `iid`, `bernoulli`, `burst` or `gilbert-elliott`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::IidExact => "iid",
            Self::Bernoulli => "bernoulli",
            Self::Burst(_) => "burst",
            Self::GilbertElliott(_) => "gilbert-elliott",
        }
    }
}

impl fmt::Display for ErrorModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ErrorModel {
    type Err = SimError;

    /// `iid` (exact count), `bernoulli`, or `burst` (default shape).
    fn from_str(s: &str) -> Result<Self, SimError> {
        match s.to_ascii_lowercase().as_str() {
            "iid" | "iid-exact" | "exact" => Ok(Self::IidExact),
            "bernoulli" => Ok(Self::Bernoulli),
            "burst" | "gilbert-elliott" => Ok(Self::burst()),
            _ => Err(SimError::UnknownModel(s.to_owned())),
        }
    }
}

/// What was simulated: written to dataset manifests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimReport {
    /// Key length in bits.
    pub bits: u64,
    /// Requested (nominal) QBER.
    pub qber: f64,
    /// Number of positions where Bob's bits differ from Alice's.
    pub errors: u64,
    /// The error model as requested.
    pub model: ErrorModel,
    /// The Gilbert-Elliott chain actually run (burst models only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<GilbertElliott>,
    /// The seed, for seeded runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Name of the random source.
    pub rng: String,
}

impl SimReport {
    /// The actual error rate, `errors / bits`.
    pub fn actual_qber(&self) -> f64 {
        if self.bits == 0 {
            0.0
        } else {
            self.errors as f64 / self.bits as f64
        }
    }
}

/// A simulated raw key pair and what produced it.
#[derive(Debug, Clone)]
pub struct SimPair {
    /// Alice's bits (uniform).
    pub alice: BitBlock,
    /// Bob's bits: Alice's XOR the error pattern.
    pub bob: BitBlock,
    /// What was simulated.
    pub report: SimReport,
}

/// A simulation request: key length, QBER, error model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    /// Key length in bits (> 0).
    pub bits: usize,
    /// QBER in `[0, 0.5]`.
    pub qber: f64,
    /// The error model.
    pub model: ErrorModel,
}

impl SimConfig {
    /// A request for `bits` bits at `qber` with `model`.
    pub fn new(bits: usize, qber: f64, model: ErrorModel) -> Self {
        Self { bits, qber, model }
    }

    /// Checks the request; returns the Gilbert-Elliott chain to run for burst models.
    pub fn validate(&self) -> Result<Option<GilbertElliott>, SimError> {
        if self.bits == 0 {
            return Err(SimError::ZeroLength);
        }
        check_qber(self.qber)?;
        match self.model {
            ErrorModel::IidExact | ErrorModel::Bernoulli => Ok(None),
            ErrorModel::Burst(shape) => GilbertElliott::calibrate(self.qber, &shape).map(Some),
            ErrorModel::GilbertElliott(chain) => {
                chain.validate()?;
                let model_rate = chain.error_rate();
                if (model_rate - self.qber).abs() > 1e-9 {
                    return Err(SimError::ModelQberMismatch {
                        qber: self.qber,
                        model_rate,
                    });
                }
                Ok(Some(chain))
            }
        }
    }

    /// Runs the simulation with randomness from `rng`.
    pub fn run(&self, rng: &mut dyn RandomSource) -> Result<SimPair, SimError> {
        let chain = self.validate()?;
        let n = self.bits;
        let mut words = WordStream::new(rng);
        let mut alice = BitBlock::zeros(n);
        alice.with_words_mut(|w| -> Result<(), RngError> {
            for x in w.iter_mut() {
                *x = words.next()?;
            }
            Ok(())
        })?;
        let mut errors = BitBlock::zeros(n);
        let count = errors.with_words_mut(|w| match (&self.model, chain) {
            (ErrorModel::IidExact, _) => exact_errors(w, n, self.qber, &mut words),
            (_, Some(chain)) => gilbert_elliott(w, n, &chain, &mut words),
            _ => bernoulli_range(w, 0, n, self.qber, &mut words),
        })?;
        debug_assert_eq!(count, errors.count_ones() as u64);
        let mut bob = errors;
        bob.with_words_mut(|b| {
            for (x, a) in b.iter_mut().zip(alice.words()) {
                *x ^= a;
            }
        });
        let rng_name = words.src.name().to_owned();
        Ok(SimPair {
            alice,
            bob,
            report: SimReport {
                bits: n as u64,
                qber: self.qber,
                errors: count,
                model: self.model,
                chain,
                seed: None,
                rng: rng_name,
            },
        })
    }

    /// Runs the simulation reproducibly from `seed` ([`SeededRandom::from_u64`]). For tests,
    /// benchmarks and datasets only.
    pub fn run_seeded(&self, seed: u64) -> Result<SimPair, SimError> {
        let mut rng = SeededRandom::from_u64(seed);
        let mut pair = self.run(&mut rng)?;
        pair.report.seed = Some(seed);
        Ok(pair)
    }
}

/// Simulates `bits` bits at `qber` with `model`, reproducibly from `seed`: shorthand for
/// `SimConfig::new(bits, qber, model).run_seeded(seed)`. For tests, benchmarks and datasets only.
pub fn simulate(bits: usize, qber: f64, model: ErrorModel, seed: u64) -> Result<SimPair, SimError> {
    SimConfig::new(bits, qber, model).run_seeded(seed)
}

/// Buffers random words from a `dyn RandomSource` so per-draw cost is a load, not a call.
struct WordStream<'a> {
    src: &'a mut dyn RandomSource,
    buf: [u64; 256],
    pos: usize,
}

impl<'a> WordStream<'a> {
    fn new(src: &'a mut dyn RandomSource) -> Self {
        Self {
            src,
            buf: [0; 256],
            pos: 256,
        }
    }

    #[inline]
    fn next(&mut self) -> Result<u64, RngError> {
        if self.pos == self.buf.len() {
            let mut bytes = [0u8; 256 * 8];
            self.src.fill(&mut bytes)?;
            for (w, c) in self.buf.iter_mut().zip(bytes.chunks_exact(8)) {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                *w = u64::from_le_bytes(b);
            }
            self.pos = 0;
        }
        let v = self.buf[self.pos];
        self.pos += 1;
        Ok(v)
    }

    /// Uniform in `0..bound` (`bound > 0`), Lemire's multiply-and-reject.
    #[inline]
    fn below(&mut self, bound: u64) -> Result<u64, RngError> {
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let m = u128::from(self.next()?) * u128::from(bound);
            if (m as u64) >= threshold {
                return Ok((m >> 64) as u64);
            }
        }
    }

    /// Uniform in `(0, 1]` with 53 random bits.
    #[inline]
    fn open01(&mut self) -> Result<f64, RngError> {
        Ok(((self.next()? >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64))
    }

    /// Number of failures before the first success of a Bernoulli(p) sequence, where
    /// `inv_ln_q = 1 / ln(1 - p)` (< 0). Saturates at `u64::MAX`.
    #[inline]
    fn geometric(&mut self, inv_ln_q: f64) -> Result<u64, RngError> {
        // Inversion: P(G >= g) = (1-p)^g, so G = floor(ln U / ln(1-p)) for U uniform in (0, 1].
        Ok((self.open01()?.ln() * inv_ln_q) as u64)
    }
}

/// Sets `round(qber * n)` distinct uniformly chosen bits of the zeroed `words` (`qber <= 0.5`).
///
/// Few errors (`k < n / 64`): draw positions and reject repeats (at most 2 draws per error on
/// average). Otherwise, to avoid a cache miss per error: a Bernoulli(qber) pattern (sequential
/// writes), then uniformly random zero bits set, or one bits cleared, until exactly `k` remain.
/// A Bernoulli pattern with `c` ones is a uniform `c`-subset, and adding a uniform non-member
/// (or removing a uniform member) keeps a subset uniform, so the result is a uniform `k`-subset.
fn exact_errors(
    words: &mut [u64],
    n: usize,
    qber: f64,
    w: &mut WordStream<'_>,
) -> Result<u64, RngError> {
    let k = ((qber * n as f64).round() as u64).min(n as u64);
    let mut placed = if k < (n / 64) as u64 {
        0
    } else {
        bernoulli_range(words, 0, n, qber, w)?
    };
    while placed != k {
        let add = placed < k;
        let p = w.below(n as u64)? as usize;
        let (wi, mask) = (p / 64, 1u64 << (p % 64));
        if let Some(word) = words.get_mut(wi)
            && (*word & mask == 0) == add
        {
            *word ^= mask;
            if add {
                placed += 1;
            } else {
                placed -= 1;
            }
        }
    }
    Ok(placed)
}

/// Sets each bit of `start..end` of `words` independently with probability `p` (bits there must
/// be zero on entry); returns how many were set.
fn bernoulli_range(
    words: &mut [u64],
    start: usize,
    end: usize,
    p: f64,
    w: &mut WordStream<'_>,
) -> Result<u64, RngError> {
    if start >= end || p <= 0.0 {
        return Ok(0);
    }
    if p >= 1.0 {
        return Ok(fill_range(words, start, end, true));
    }
    if p == 0.5 {
        // One uniform word per 64 bits.
        let mut count = 0u64;
        let (fw, lw) = (start / 64, (end - 1) / 64);
        for wi in fw..=lw {
            let r = w.next()? & range_mask(wi, start, end);
            if let Some(word) = words.get_mut(wi) {
                *word |= r;
                count += u64::from(r.count_ones());
            }
        }
        return Ok(count);
    }
    // Geometric gaps between marked bits; for p > 1/2 mark the correct bits instead.
    let (q, invert) = if p < 0.5 { (p, false) } else { (1.0 - p, true) };
    if invert {
        fill_range(words, start, end, true);
    }
    let inv_ln_q = 1.0 / (-q).ln_1p();
    let mut pos = start;
    let mut marked = 0u64;
    loop {
        let gap = w.geometric(inv_ln_q)?;
        let remaining = (end - pos) as u64;
        if gap >= remaining {
            break;
        }
        pos += gap as usize;
        if let Some(word) = words.get_mut(pos / 64) {
            *word ^= 1u64 << (pos % 64);
        }
        marked += 1;
        pos += 1;
    }
    Ok(if invert {
        (end - start) as u64 - marked
    } else {
        marked
    })
}

/// The bits of word `wi` that lie in `start..end` (`start < end`).
#[inline]
fn range_mask(wi: usize, start: usize, end: usize) -> u64 {
    let mut mask = u64::MAX;
    if wi == start / 64 {
        mask &= u64::MAX << (start % 64);
    }
    if wi == (end - 1) / 64 && !end.is_multiple_of(64) {
        mask &= (1u64 << (end % 64)) - 1;
    }
    mask
}

/// Sets (or clears) bits `start..end`; returns the number of bits in the range.
fn fill_range(words: &mut [u64], start: usize, end: usize, value: bool) -> u64 {
    if start >= end {
        return 0;
    }
    let (fw, lw) = (start / 64, (end - 1) / 64);
    for wi in fw..=lw {
        let mask = range_mask(wi, start, end);
        if let Some(word) = words.get_mut(wi) {
            if value {
                *word |= mask;
            } else {
                *word &= !mask;
            }
        }
    }
    (end - start) as u64
}

/// Runs the chain over `0..n`, a sojourn at a time (geometric lengths), filling each sojourn
/// with Bernoulli errors at that state's rate.
fn gilbert_elliott(
    words: &mut [u64],
    n: usize,
    chain: &GilbertElliott,
    w: &mut WordStream<'_>,
) -> Result<u64, RngError> {
    let mut bad = 1.0 - w.open01()? < chain.stationary_bad();
    let mut pos = 0usize;
    let mut count = 0u64;
    while pos < n {
        let (leave, err) = if bad {
            (chain.p_bad_to_good, chain.error_bad)
        } else {
            (chain.p_good_to_bad, chain.error_good)
        };
        let remaining = (n - pos) as u64;
        // Sojourn length: 1 + Geometric(leave) bits (the chain moves after each bit).
        let len = if leave <= 0.0 {
            remaining
        } else if leave >= 1.0 {
            1
        } else {
            w.geometric(1.0 / (-leave).ln_1p())?
                .saturating_add(1)
                .min(remaining)
        };
        let end = pos + len as usize;
        count += bernoulli_range(words, pos, end, err, w)?;
        pos = end;
        bad = !bad;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_model_has_exact_count_and_bob_is_alice_xor_errors() {
        // round(0.05 * 10_001) = round(500.05) = 500.
        let pair = simulate(10_001, 0.05, ErrorModel::IidExact, 7).unwrap();
        assert_eq!(pair.report.errors, 500);
        assert_eq!(pair.alice.hamming_distance(&pair.bob).unwrap(), 500);
        assert_eq!(pair.alice.len(), 10_001);
        assert_eq!(pair.bob.len(), 10_001);
        assert_eq!(pair.report.seed, Some(7));
        assert_eq!(pair.report.rng, "seeded-chacha20");
        // round(0.5 * 3) = round(1.5) = 2 (half away from zero).
        assert_eq!(
            simulate(3, 0.5, ErrorModel::IidExact, 1)
                .unwrap()
                .report
                .errors,
            2
        );
    }

    #[test]
    fn exact_model_is_uniform_over_subsets() {
        // n = 8, qber = 0.25: k = 2 (Bernoulli-and-adjust path). Each of the C(8,2) = 28 pairs
        // should appear 2800/28 = 100 times in 2800 runs (sd ~ 9.8); allow 6 sd.
        let mut counts = std::collections::HashMap::new();
        for seed in 0..2800 {
            let p = simulate(8, 0.25, ErrorModel::IidExact, seed).unwrap();
            let e = p.alice.xor(&p.bob).unwrap().words()[0];
            assert_eq!(e.count_ones(), 2);
            *counts.entry(e).or_insert(0i32) += 1;
        }
        assert_eq!(counts.len(), 28);
        assert!(counts.values().all(|&c| (c - 100).abs() < 60), "{counts:?}");
        // Few errors (rejection path): round(0.001 * 100_000) = 100.
        let p = simulate(100_000, 0.001, ErrorModel::IidExact, 4).unwrap();
        assert_eq!(p.alice.hamming_distance(&p.bob).unwrap(), 100);
    }

    #[test]
    fn seeded_runs_are_reproducible_and_seeds_differ() {
        for model in [
            ErrorModel::IidExact,
            ErrorModel::Bernoulli,
            ErrorModel::burst(),
        ] {
            let a = simulate(5000, 0.03, model, 42).unwrap();
            let b = simulate(5000, 0.03, model, 42).unwrap();
            let c = simulate(5000, 0.03, model, 43).unwrap();
            assert_eq!(a.alice, b.alice);
            assert_eq!(a.bob, b.bob);
            assert_eq!(a.report, b.report);
            assert_ne!(a.alice, c.alice);
        }
    }

    #[test]
    fn alice_is_balanced() {
        let pair = simulate(1 << 20, 0.0, ErrorModel::IidExact, 3).unwrap();
        let ones = pair.alice.count_ones() as f64;
        // Binomial(2^20, 1/2): sd = 512; 6 sd = 3072.
        assert!((ones - 524_288.0).abs() < 3072.0, "ones = {ones}");
        assert_eq!(pair.alice, pair.bob);
        assert_eq!(pair.report.errors, 0);
    }

    #[test]
    fn bernoulli_rate_is_within_six_sigma() {
        let n = 1_000_000usize;
        for p in [0.01, 0.11, 0.5] {
            let pair = simulate(n, p, ErrorModel::Bernoulli, 9).unwrap();
            let e = pair.report.errors as f64;
            let sd = (n as f64 * p * (1.0 - p)).sqrt();
            assert!((e - n as f64 * p).abs() < 6.0 * sd, "p = {p}, errors = {e}");
            assert_eq!(
                pair.alice.hamming_distance(&pair.bob).unwrap() as u64,
                pair.report.errors
            );
        }
    }

    #[test]
    fn bernoulli_range_handles_all_regimes_and_tails() {
        // Fixed ranges not aligned to words; count equals bits set and nothing leaks outside.
        for p in [0.0, 0.2, 0.5, 0.8, 1.0] {
            let mut rng = SeededRandom::from_u64(11);
            let mut w = WordStream::new(&mut rng);
            let mut words = vec![0u64; 5];
            let c = bernoulli_range(&mut words, 13, 290, p, &mut w).unwrap();
            let block = BitBlock::from_words(words.clone(), 320).unwrap();
            assert_eq!(c as usize, block.count_ones());
            assert_eq!(block.slice(0..13).unwrap().count_ones(), 0);
            assert_eq!(block.slice(290..320).unwrap().count_ones(), 0);
            if p == 1.0 {
                assert_eq!(c, 277);
            }
            if p == 0.0 {
                assert_eq!(c, 0);
            }
        }
    }

    #[test]
    fn calibration_hits_the_requested_rate() {
        for q in [0.0, 0.01, 0.05, 0.11, 0.25, 0.5] {
            let chain = GilbertElliott::calibrate(q, &BurstShape::default()).unwrap();
            assert!((chain.error_rate() - q).abs() < 1e-12, "q = {q}");
            assert!((chain.mean_burst_len() - 32.0).abs() < 1e-12);
        }
        // By hand, q = 0.11, default shape: pi_B = 0.5 * 0.11 / 0.5 = 0.11,
        // error_good = 0.055 / 0.89 = 0.061797..., p_gb = (1/32) * 0.11 / 0.89 = 0.0038623...
        let c = GilbertElliott::calibrate(0.11, &BurstShape::default()).unwrap();
        assert!((c.error_good - 0.055 / 0.89).abs() < 1e-15);
        assert!((c.p_good_to_bad - 0.003_862_359_550_561_798).abs() < 1e-15);
        assert!((c.stationary_bad() - 0.11).abs() < 1e-15);
    }

    #[test]
    fn burst_model_reaches_rate_and_is_bursty() {
        let n = 2_000_000usize;
        let q = 0.05;
        let pair = simulate(n, q, ErrorModel::burst(), 5).unwrap();
        let e = pair.report.errors as f64 / n as f64;
        // The chain mixes in ~32 bits; the rate over 2e6 bits is within a few tenths of a percent.
        assert!((e - q).abs() < 0.003, "rate {e}");
        let chain = pair.report.chain.unwrap();
        assert!((chain.error_rate() - q).abs() < 1e-12);
        // Burstiness: P(error at i+1 | error at i) is much higher than the marginal rate.
        let err = pair.alice.xor(&pair.bob).unwrap();
        let bits = err.to_bools();
        let (mut both, mut first) = (0u64, 0u64);
        for w in bits.windows(2) {
            if w[0] {
                first += 1;
                both += u64::from(w[1]);
            }
        }
        let cond = both as f64 / first as f64;
        assert!(cond > 0.2, "conditional rate {cond} not bursty");
        // The same test on an i.i.d. pattern stays near q.
        let iid = simulate(n, q, ErrorModel::IidExact, 5).unwrap();
        let bits = iid.alice.xor(&iid.bob).unwrap().to_bools();
        let (mut both, mut first) = (0u64, 0u64);
        for w in bits.windows(2) {
            if w[0] {
                first += 1;
                both += u64::from(w[1]);
            }
        }
        assert!((both as f64 / first as f64) < 0.07);
    }

    #[test]
    fn hand_set_chain_must_match_qber() {
        let chain = GilbertElliott {
            p_good_to_bad: 0.01,
            p_bad_to_good: 0.09,
            error_good: 0.0,
            error_bad: 0.5,
        };
        // pi_B = 0.01 / 0.1 = 0.1, rate = 0.1 * 0.5 = 0.05.
        assert!((chain.error_rate() - 0.05).abs() < 1e-15);
        let ok = simulate(10_000, 0.05, ErrorModel::GilbertElliott(chain), 1).unwrap();
        assert_eq!(ok.report.chain, Some(chain));
        let err = simulate(10_000, 0.06, ErrorModel::GilbertElliott(chain), 1).unwrap_err();
        assert!(matches!(err, SimError::ModelQberMismatch { .. }), "{err}");
    }

    #[test]
    fn invalid_inputs_are_precise_errors() {
        assert!(matches!(
            simulate(0, 0.1, ErrorModel::IidExact, 1),
            Err(SimError::ZeroLength)
        ));
        for q in [-0.1, 0.51, f64::NAN] {
            assert!(matches!(
                simulate(10, q, ErrorModel::Bernoulli, 1),
                Err(SimError::QberOutOfRange { .. })
            ));
        }
        let bad_len = BurstShape {
            mean_burst_len: 0.5,
            ..BurstShape::default()
        };
        assert!(matches!(
            simulate(10, 0.1, ErrorModel::Burst(bad_len), 1),
            Err(SimError::InvalidParameter {
                name: "mean_burst_len",
                ..
            })
        ));
        // phi * q / e_B = 1 * 0.5 / 0.4 > 1: bursts cannot carry that many errors.
        let too_much = BurstShape {
            mean_burst_len: 10.0,
            error_bad: 0.4,
            burst_fraction: 1.0,
        };
        assert!(matches!(
            simulate(10, 0.5, ErrorModel::Burst(too_much), 1),
            Err(SimError::Uncalibratable { .. })
        ));
        let chain = GilbertElliott {
            p_good_to_bad: 1.5,
            p_bad_to_good: 0.1,
            error_good: 0.0,
            error_bad: 0.5,
        };
        assert!(matches!(
            simulate(10, 0.1, ErrorModel::GilbertElliott(chain), 1),
            Err(SimError::InvalidParameter {
                name: "p_good_to_bad",
                ..
            })
        ));
        assert!(matches!(
            "gaussian".parse::<ErrorModel>(),
            Err(SimError::UnknownModel(_))
        ));
    }

    #[test]
    fn model_names_parse_and_report_serializes() {
        assert_eq!("iid".parse::<ErrorModel>().unwrap(), ErrorModel::IidExact);
        assert_eq!("burst".parse::<ErrorModel>().unwrap(), ErrorModel::burst());
        assert_eq!(
            "Bernoulli".parse::<ErrorModel>().unwrap(),
            ErrorModel::Bernoulli
        );
        let pair = simulate(1000, 0.02, ErrorModel::burst(), 8).unwrap();
        let json = serde_json::to_string(&pair.report).unwrap();
        assert!(json.contains("\"kind\":\"burst\""), "{json}");
        assert!(json.contains("\"mean_burst_len\":32.0"), "{json}");
        let back: SimReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, pair.report);
    }

    #[test]
    fn works_with_any_random_source() {
        let mut os = crate::rng::OsRandom;
        let pair = SimConfig::new(4096, 0.1, ErrorModel::IidExact)
            .run(&mut os)
            .unwrap();
        assert_eq!(pair.report.errors, 410); // round(409.6)
        assert_eq!(pair.report.rng, "os");
        assert_eq!(pair.report.seed, None);
    }
}
