//! Entropy estimates and health checks on byte streams.
//!
//! Three layers:
//! - Estimators: [`shannon_entropy`] (plug-in, bits per byte), [`mcv_min_entropy`] (most common
//!   value, NIST SP 800-90B §6.3.1), and the SP 800-22 [`monobit_test`] and [`runs_test`] on bits.
//! - The SP 800-90B continuous health tests, [`RepetitionCountTest`] (§4.4.1) and
//!   [`AdaptiveProportionTest`] (§4.4.2), combined in [`HealthTests`] for a live source such as
//!   [`crate::rng::ExternalRandom`].
//! - One verdict, [`assess`], returning an [`EntropyReport`] with every statistic, its threshold
//!   and pass/fail, for final keys and sample files.
//!
//! # Bit order
//! Bytes are read as bits least significant first (DESIGN §4): bit `i` is bit `i % 8` of byte
//! `i / 8`. This matters for the runs test only (it counts transitions between adjacent bits).
//!
//! # Thresholds of [`assess`]
//! The verdict tests the hypothesis "these `N` bytes are independent and uniform". Its total
//! false-alarm probability on ideal data is at most `alpha` ([`AssessConfig::false_alarm`],
//! default 2^-20), split evenly (Bonferroni) over the six checks, `alpha_i = alpha / 6`:
//! - **Shannon.** For ideal data `E[H] ~ 8 - 255 / (2 N ln 2)` (reported as `expected_ideal`);
//!   the deficit in nats is `D(p_hat || uniform) <= ln(1 + X^2 / N)` with `X^2` Pearson's
//!   statistic (255 degrees of freedom). For `N >= 16384` (64 expected per value) the threshold
//!   is `8 - log2(1 + q / N)` with `q` the upper `alpha_i` quantile of chi-square(255)
//!   (Wilson-Hilferty): asymptotic, but the regime where the chi-square law is accurate. For
//!   smaller `N` it is rigorous at every `N`: `E[H] >= 8 - log2(1 + 255 / N)` (Jensen) and
//!   McDiarmid's inequality with the bounded difference `(log2 e + log2 N) / N` of the plug-in
//!   estimator give `8 - log2(1 + 255/N) - (log2 e + log2 N) sqrt(ln(1/alpha_i) / (2N))`.
//! - **Min-entropy (MCV).** The largest count `M` of ideal data satisfies
//!   `P(M >= m) <= 256 exp(-N KL(m/N || 1/256))` (union and Chernoff bounds); the limit `m*` is
//!   the smallest `m` with that bound `<= alpha_i`, and the threshold is the MCV estimate at
//!   `M = m* - 1`. Rigorous at every `N`.
//! - **Monobit, runs.** Pass when the SP 800-22 p-value is `>= alpha_i` (not 0.01: a per-block
//!   check must not quarantine one good block in a hundred). Both p-values are SP 800-22's
//!   normal approximations, accurate for the sizes judged here. The runs p-value is computed even
//!   when SP 800-22's frequency prerequisite fails (that case is reported and left to monobit).
//! - **Repetition count, adaptive proportion.** Run over the whole sample with claimed
//!   min-entropy 8 bits per byte; the cutoffs are chosen for a per-sample (per-window) false
//!   alarm of `alpha_i / N` (`alpha_i / windows`), so the whole scan stays within `alpha_i`.
//!
//! Below [`MIN_ASSESS_BYTES`] bytes the verdict is [`Verdict::InsufficientData`], never a pass.

use serde::{Deserialize, Serialize};

use crate::bits::BitBlock;

/// Default false-alarm probability: 2^-20, for the health tests (per sample or window) and for
/// the whole [`assess`] verdict.
pub const DEFAULT_ALPHA: f64 = 1.0 / 1_048_576.0;

/// Fewer bytes than this give [`Verdict::InsufficientData`].
pub const MIN_ASSESS_BYTES: usize = 64;

/// From this many bytes on, the Shannon threshold uses the chi-square law of Pearson's
/// statistic (64 expected occurrences per byte value); below, the rigorous McDiarmid bound.
pub const ASYMPTOTIC_SHANNON_BYTES: usize = 16_384;

/// The 99.5 % normal quantile SP 800-90B §6.3.1 uses for the upper bound on `p_max`.
const MCV_Z: f64 = 2.576;

/// Number of checks in the [`assess`] verdict (the false-alarm budget is split over them).
const CHECKS: f64 = 6.0;

/// Invalid parameters for a health test or an assessment.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EntropyError {
    /// The claimed min-entropy per sample is not in `(0, bits per sample]`.
    #[error("claimed min-entropy {value} bits per sample is out of range: expected 0 < H <= {max}")]
    InvalidEntropy {
        /// The value given.
        value: f64,
        /// Bits per sample (8 for bytes, 1 for bits).
        max: f64,
    },
    /// A false-alarm probability is not in `(0, 1)`.
    #[error("false-alarm probability {0} is out of range: expected 0 < alpha < 1")]
    InvalidAlpha(f64),
    /// The adaptive proportion window is unusable.
    #[error("adaptive proportion window of {window} samples is invalid: expected 2..=2^24")]
    InvalidWindow {
        /// The window given.
        window: usize,
    },
}

/// A continuous health test tripped. Messages carry counts and positions, never sample values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HealthFailure {
    /// SP 800-90B §4.4.1: one value repeated `cutoff` times in a row.
    #[error(
        "repetition count test failed: a value repeated {run} times in a row ending at sample {offset} (cutoff {cutoff})"
    )]
    Repetition {
        /// Length of the run when it tripped.
        run: u32,
        /// The cutoff `C`.
        cutoff: u32,
        /// Index of the sample that tripped it (0-based, from the start of the stream).
        offset: u64,
    },
    /// SP 800-90B §4.4.2: a window's first value occurred `cutoff` times in that window.
    #[error(
        "adaptive proportion test failed: a value occurred {count} times in a window of {window} samples, at sample {offset} (cutoff {cutoff})"
    )]
    Proportion {
        /// The count when it tripped.
        count: u32,
        /// The cutoff `C`.
        cutoff: u32,
        /// The window size `W`.
        window: u32,
        /// Index of the sample that tripped it (0-based, from the start of the stream).
        offset: u64,
    },
}

// ---------------------------------------------------------------------------------------------
// Special functions
// ---------------------------------------------------------------------------------------------

/// The complementary error function `erfc(x) = 1 - erf(x)`, to a relative error of about
/// 1e-14 for `x < 2` and near machine precision beyond (where p-values get small).
///
/// For `|x| < 2`: `erf(x) = (2/sqrt(pi)) e^{-x^2} sum_n 2^n x^{2n+1} / (1*3*...*(2n+1))`, a
/// series of positive terms (no cancellation). For `x >= 2`: the Laplace continued fraction
/// `erfc(x) = e^{-x^2}/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))`, evaluated with
/// the modified Lentz method. `erfc(-x) = 2 - erfc(x)`.
pub fn erfc(x: f64) -> f64 {
    const FRAC_2_SQRT_PI: f64 = std::f64::consts::FRAC_2_SQRT_PI;
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 2.0 {
        let x2 = x * x;
        let (mut term, mut sum) = (x, x);
        let mut n = 0.0;
        while term > sum * 1e-17 {
            term *= 2.0 * x2 / (2.0 * n + 3.0);
            sum += term;
            n += 1.0;
        }
        return 1.0 - FRAC_2_SQRT_PI * (-x2).exp() * sum;
    }
    if x > 27.3 {
        return 0.0; // below the smallest subnormal
    }
    // Lentz: f = b0 + a1/(b1 + a2/(b2 + ...)), b_k = x, a_k = k/2.
    const TINY: f64 = 1e-300;
    let mut f = x;
    let (mut c, mut d) = (f, 0.0);
    for k in 1..500 {
        let a = f64::from(k) * 0.5;
        d = x + a * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = x + a / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-x * x).exp() / (std::f64::consts::PI.sqrt() * f)
}

/// The upper-tail standard normal quantile: `z` with `P(Z > z) = alpha` (bisection on [`erfc`]).
fn normal_upper_quantile(alpha: f64) -> f64 {
    let (mut lo, mut hi) = (-40.0_f64, 40.0_f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if 0.5 * erfc(mid / std::f64::consts::SQRT_2) > alpha {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Upper `alpha` quantile of chi-square with `k` degrees of freedom (Wilson-Hilferty).
fn chi_square_upper_quantile(k: f64, alpha: f64) -> f64 {
    let z = normal_upper_quantile(alpha);
    let c = 2.0 / (9.0 * k);
    k * (1.0 - c + z * c.sqrt()).powi(3)
}

/// `P(X >= k)` for `X ~ Binomial(n, p)`, for every `k` in `0..=n+1` (the last is 0), computed in
/// the log domain so that tiny tails stay accurate.
fn binomial_upper_tails(n: u32, p: f64) -> Vec<f64> {
    let n_us = n as usize;
    let mut log_pmf = Vec::with_capacity(n_us + 1);
    let mut lp = f64::from(n) * (-p).ln_1p();
    let log_odds = p.ln() - (-p).ln_1p();
    for k in 0..=n {
        log_pmf.push(lp);
        lp += (f64::from(n - k) / f64::from(k + 1)).ln() + log_odds;
    }
    let mut tails = vec![0.0; n_us + 2];
    let mut acc = f64::NEG_INFINITY;
    for k in (0..=n_us).rev() {
        let v = log_pmf[k];
        acc = if acc == f64::NEG_INFINITY {
            v
        } else {
            let (hi, lo) = if acc > v { (acc, v) } else { (v, acc) };
            hi + (lo - hi).exp().ln_1p()
        };
        tails[k] = acc.exp();
    }
    tails
}

/// Kullback-Leibler divergence `KL(q || p)` of Bernoulli laws, in nats.
fn bernoulli_kl(q: f64, p: f64) -> f64 {
    let term = |a: f64, b: f64| if a <= 0.0 { 0.0 } else { a * (a / b).ln() };
    term(q, p) + term(1.0 - q, 1.0 - p)
}

// ---------------------------------------------------------------------------------------------
// Estimators
// ---------------------------------------------------------------------------------------------

/// Counts of each byte value (one pass, 8 bytes per step into four interleaved tables).
pub fn byte_histogram(bytes: &[u8]) -> [u64; 256] {
    let mut h = Histogram::new();
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        h.add_word(u64::from_le_bytes([
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
        ]));
    }
    for &b in chunks.remainder() {
        h.add(b);
    }
    h.finish()
}

/// Four interleaved histograms, so consecutive equal bytes do not serialise on one counter.
struct Histogram {
    t: [[u64; 256]; 4],
}

impl Histogram {
    fn new() -> Self {
        Self { t: [[0; 256]; 4] }
    }

    #[inline(always)]
    fn add_word(&mut self, w: u64) {
        let [t0, t1, t2, t3] = &mut self.t;
        t0[(w & 0xff) as usize] += 1;
        t1[((w >> 8) & 0xff) as usize] += 1;
        t2[((w >> 16) & 0xff) as usize] += 1;
        t3[((w >> 24) & 0xff) as usize] += 1;
        t0[((w >> 32) & 0xff) as usize] += 1;
        t1[((w >> 40) & 0xff) as usize] += 1;
        t2[((w >> 48) & 0xff) as usize] += 1;
        t3[(w >> 56) as usize] += 1;
    }

    #[inline(always)]
    fn add(&mut self, b: u8) {
        self.t[0][usize::from(b)] += 1;
    }

    fn finish(&self) -> [u64; 256] {
        std::array::from_fn(|v| self.t.iter().map(|t| t[v]).sum())
    }
}

/// Plug-in Shannon entropy, in bits per byte, of a byte histogram (0 for an empty one).
pub fn shannon_from_histogram(hist: &[u64; 256]) -> f64 {
    let n: u64 = hist.iter().sum();
    if n == 0 {
        return 0.0;
    }
    let nf = n as f64;
    // H = log2 N - (1/N) sum c log2 c
    let s: f64 = hist
        .iter()
        .filter(|&&c| c > 1)
        .map(|&c| (c as f64) * (c as f64).log2())
        .sum();
    (nf.log2() - s / nf).max(0.0)
}

/// Plug-in Shannon entropy of `bytes`, in bits per byte (0 to 8).
pub fn shannon_entropy(bytes: &[u8]) -> f64 {
    shannon_from_histogram(&byte_histogram(bytes))
}

/// A most-common-value min-entropy estimate (NIST SP 800-90B §6.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MinEntropy {
    /// Number of samples `L`.
    pub samples: u64,
    /// Count of the most common value.
    pub max_count: u64,
    /// `p_hat = max_count / L`.
    pub p_max_hat: f64,
    /// `p_u = min(1, p_hat + 2.576 sqrt(p_hat (1 - p_hat) / (L - 1)))` (1 when `L < 2`).
    pub p_upper: f64,
    /// `-log2(p_u)`, bits per sample.
    pub bits_per_sample: f64,
}

/// The MCV estimate from a sample count and the count of its most common value.
pub fn mcv_from_counts(samples: u64, max_count: u64) -> MinEntropy {
    let p_max_hat = if samples == 0 {
        1.0
    } else {
        max_count as f64 / samples as f64
    };
    let p_upper = if samples < 2 {
        1.0
    } else {
        let l1 = (samples - 1) as f64;
        (p_max_hat + MCV_Z * (p_max_hat * (1.0 - p_max_hat) / l1).sqrt()).min(1.0)
    };
    MinEntropy {
        samples,
        max_count,
        p_max_hat,
        p_upper,
        bits_per_sample: -p_upper.log2() + 0.0,
    }
}

/// The MCV min-entropy estimate of `bytes` as 8-bit samples (SP 800-90B §6.3.1).
pub fn mcv_min_entropy(bytes: &[u8]) -> MinEntropy {
    let hist = byte_histogram(bytes);
    mcv_from_counts(bytes.len() as u64, hist.iter().copied().max().unwrap_or(0))
}

/// Ones and transitions of a bit stream fed one `u64` word (LSB first) at a time.
#[derive(Debug, Default, Clone, Copy)]
struct BitCounter {
    bits: u64,
    ones: u64,
    transitions: u64,
    last: Option<bool>,
}

impl BitCounter {
    /// Adds the low `valid` bits (1..=64) of `w`; the bits above must be zero.
    #[inline(always)]
    fn push_word(&mut self, w: u64, valid: u32) {
        self.bits += u64::from(valid);
        self.ones += u64::from(w.count_ones());
        // Transitions between bit j and j+1 for j + 1 < valid.
        let inner = if valid >= 64 {
            u64::MAX >> 1
        } else {
            (1u64 << (valid - 1)) - 1
        };
        self.transitions += u64::from(((w ^ (w >> 1)) & inner).count_ones());
        if let Some(prev) = self.last {
            self.transitions += u64::from(prev != (w & 1 == 1));
        }
        self.last = Some((w >> (valid - 1)) & 1 == 1);
    }

    fn over_bits(bits: &BitBlock) -> Self {
        let mut c = Self::default();
        let mut left = bits.len();
        for &w in bits.words() {
            let valid = left.min(64) as u32;
            c.push_word(w, valid);
            left -= valid as usize;
        }
        c
    }

    /// Number of runs `V_n = transitions + 1` (0 for an empty stream).
    fn runs(&self) -> u64 {
        if self.bits == 0 {
            0
        } else {
            self.transitions + 1
        }
    }
}

/// The SP 800-22 §2.1 frequency (monobit) test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MonobitResult {
    /// Number of bits `n`.
    pub n: u64,
    /// Number of ones.
    pub ones: u64,
    /// `S_n = ones - zeros`.
    pub s_n: i64,
    /// `s_obs = |S_n| / sqrt(n)`.
    pub s_obs: f64,
    /// `P = erfc(s_obs / sqrt 2)` (0 for an empty input).
    pub p_value: f64,
}

/// The monobit test from counts: `n` bits of which `ones` are 1.
pub fn monobit_from_counts(n: u64, ones: u64) -> MonobitResult {
    let ones = ones.min(n);
    let s_n = 2 * i128::from(ones) - i128::from(n);
    let s_n = i64::try_from(s_n).unwrap_or(if s_n < 0 { i64::MIN } else { i64::MAX });
    if n == 0 {
        return MonobitResult {
            n,
            ones,
            s_n,
            s_obs: 0.0,
            p_value: 0.0,
        };
    }
    let s_obs = (s_n as f64).abs() / (n as f64).sqrt();
    MonobitResult {
        n,
        ones,
        s_n,
        s_obs,
        p_value: erfc(s_obs / std::f64::consts::SQRT_2),
    }
}

/// The SP 800-22 §2.1 frequency (monobit) test on a bit block.
pub fn monobit_test(bits: &BitBlock) -> MonobitResult {
    monobit_from_counts(bits.len() as u64, bits.count_ones() as u64)
}

/// The SP 800-22 §2.3 runs test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RunsResult {
    /// Number of bits `n`.
    pub n: u64,
    /// Proportion of ones `pi`.
    pub pi: f64,
    /// The prerequisite bound `tau = 2 / sqrt(n)`.
    pub tau: f64,
    /// Whether `|pi - 1/2| < tau`. SP 800-22 declares the test not applicable (P = 0) otherwise;
    /// `p_value` below is the formula's value regardless, and the caller decides.
    pub prerequisite_met: bool,
    /// Number of runs `V_n(obs)` (maximal blocks of equal bits).
    pub runs: u64,
    /// `P = erfc(|V - 2 n pi (1 - pi)| / (2 sqrt(2n) pi (1 - pi)))`; 0 when `pi` is 0 or 1 or `n = 0`.
    pub p_value: f64,
}

/// The runs test from counts: `n` bits, `ones` of them 1, `runs` runs.
pub fn runs_from_counts(n: u64, ones: u64, runs: u64) -> RunsResult {
    if n == 0 {
        return RunsResult {
            n,
            pi: 0.0,
            tau: 0.0,
            prerequisite_met: false,
            runs,
            p_value: 0.0,
        };
    }
    let nf = n as f64;
    let pi = ones.min(n) as f64 / nf;
    let tau = 2.0 / nf.sqrt();
    let prerequisite_met = (pi - 0.5).abs() < tau;
    let q = pi * (1.0 - pi);
    let p_value = if q <= 0.0 {
        0.0
    } else {
        erfc((runs as f64 - 2.0 * nf * q).abs() / (2.0 * (2.0 * nf).sqrt() * q))
    };
    RunsResult {
        n,
        pi,
        tau,
        prerequisite_met,
        runs,
        p_value,
    }
}

/// The SP 800-22 §2.3 runs test on a bit block (bit order as stored: index 0 first).
pub fn runs_test(bits: &BitBlock) -> RunsResult {
    let c = BitCounter::over_bits(bits);
    runs_from_counts(c.bits, c.ones, c.runs())
}

// ---------------------------------------------------------------------------------------------
// Continuous health tests (SP 800-90B §4.4)
// ---------------------------------------------------------------------------------------------

/// What one sample of a noise source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SampleKind {
    /// Each byte is one 8-bit sample (non-binary; APT window 512).
    Byte,
    /// Each bit is one sample, bytes unpacked LSB first (binary; APT window 1024).
    Bit,
}

impl SampleKind {
    /// Bits per sample: the largest possible min-entropy per sample.
    pub fn bits(self) -> u32 {
        match self {
            Self::Byte => 8,
            Self::Bit => 1,
        }
    }

    /// The SP 800-90B §4.4.2 window: 1024 for binary samples, 512 otherwise.
    pub fn default_window(self) -> usize {
        match self {
            Self::Byte => 512,
            Self::Bit => 1024,
        }
    }
}

/// Parameters of the continuous health tests.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HealthConfig {
    /// What a sample is.
    pub kind: SampleKind,
    /// The claimed min-entropy `H` per sample, `0 < H <= kind.bits()`.
    pub min_entropy: f64,
    /// False-alarm probability `alpha` per sample (RCT) and per window (APT), `0 < alpha < 1`.
    pub alpha: f64,
    /// The APT window `W` (samples).
    pub window: usize,
}

impl Default for HealthConfig {
    /// Byte samples, full claimed entropy (8 bits), `alpha = 2^-20`, window 512.
    fn default() -> Self {
        Self::bytes(8.0)
    }
}

impl HealthConfig {
    /// Byte samples with claimed min-entropy `h` bits per byte, `alpha = 2^-20`, window 512.
    pub fn bytes(h: f64) -> Self {
        Self {
            kind: SampleKind::Byte,
            min_entropy: h,
            alpha: DEFAULT_ALPHA,
            window: 512,
        }
    }

    /// Bit samples with claimed min-entropy `h` per bit, `alpha = 2^-20`, window 1024.
    pub fn binary(h: f64) -> Self {
        Self {
            kind: SampleKind::Bit,
            min_entropy: h,
            alpha: DEFAULT_ALPHA,
            window: 1024,
        }
    }

    /// The same with another `alpha`.
    pub fn with_alpha(self, alpha: f64) -> Self {
        Self { alpha, ..self }
    }

    /// Checks the ranges of every field.
    pub fn validate(&self) -> Result<(), EntropyError> {
        let max = f64::from(self.kind.bits());
        if !(self.min_entropy > 0.0 && self.min_entropy <= max) {
            return Err(EntropyError::InvalidEntropy {
                value: self.min_entropy,
                max,
            });
        }
        check_alpha(self.alpha)?;
        if !(2..=1 << 24).contains(&self.window) {
            return Err(EntropyError::InvalidWindow {
                window: self.window,
            });
        }
        Ok(())
    }

    /// The repetition count cutoff `C = 1 + ceil(-log2(alpha) / H)` (SP 800-90B §4.4.1).
    pub fn rct_cutoff(&self) -> Result<u32, EntropyError> {
        self.validate()?;
        Ok(rct_cutoff(self.min_entropy, self.alpha))
    }

    /// The adaptive proportion cutoff `C = 1 + CRITBINOM(W, 2^-H, 1 - alpha)` (SP 800-90B
    /// §4.4.2): one more than the smallest `k` with `P(Binomial(W, 2^-H) > k) <= alpha`.
    pub fn apt_cutoff(&self) -> Result<u32, EntropyError> {
        self.validate()?;
        let tails = binomial_upper_tails(self.window as u32, (-self.min_entropy).exp2());
        // tails[j] = P(X >= j); smallest j >= 1 with P(X > j - 1) <= alpha is 1 + CRITBINOM.
        let j = (1..tails.len())
            .find(|&j| tails[j] <= self.alpha)
            .unwrap_or(tails.len() - 1);
        Ok(j as u32)
    }
}

fn check_alpha(alpha: f64) -> Result<(), EntropyError> {
    if alpha > 0.0 && alpha < 1.0 {
        Ok(())
    } else {
        Err(EntropyError::InvalidAlpha(alpha))
    }
}

/// `1 + ceil(-log2(alpha) / h)`, saturating.
fn rct_cutoff(h: f64, alpha: f64) -> u32 {
    let c = 1.0 + (-alpha.log2() / h).ceil();
    if c >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        c as u32
    }
}

/// The smallest APT cutoff `C` whose false-alarm probability for the test as run (the first
/// sample plus `W - 1` more) is at most `alpha`: `P(Binomial(W - 1, p) >= C - 1) <= alpha`.
fn apt_cutoff_exact(window: u32, p: f64, alpha: f64) -> u32 {
    let tails = binomial_upper_tails(window.saturating_sub(1), p);
    let j = (0..tails.len())
        .find(|&j| tails[j] <= alpha)
        .unwrap_or(tails.len() - 1);
    j as u32 + 1
}

const LO_BYTES: u64 = 0x0101_0101_0101_0101;
const HI_BYTES: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `x` is zero.
#[inline(always)]
fn has_zero_byte(x: u64) -> bool {
    x.wrapping_sub(LO_BYTES) & !x & HI_BYTES != 0
}

/// Number of zero bytes of `x` (exact: no borrow between bytes).
#[inline(always)]
fn zero_bytes(x: u64) -> u32 {
    let t = ((x & !HI_BYTES).wrapping_add(!HI_BYTES)) | x;
    (!t & HI_BYTES).count_ones()
}

/// SP 800-90B §4.4.1 repetition count test: fails when one value repeats `cutoff` times in a row.
#[derive(Clone)]
pub struct RepetitionCountTest {
    cutoff: u32,
    last: u8,
    run: u32,
    longest: u32,
    seen: u64,
}

impl std::fmt::Debug for RepetitionCountTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The last sample value is source output: not printed.
        f.debug_struct("RepetitionCountTest")
            .field("cutoff", &self.cutoff)
            .field("run", &self.run)
            .field("seen", &self.seen)
            .finish()
    }
}

impl RepetitionCountTest {
    /// A test with cutoff `C` (runs of length `>= C` fail).
    pub fn new(cutoff: u32) -> Self {
        Self {
            cutoff: cutoff.max(2),
            last: 0,
            run: 0,
            longest: 0,
            seen: 0,
        }
    }

    /// The test for a configuration (cutoff from [`HealthConfig::rct_cutoff`]).
    pub fn from_config(config: &HealthConfig) -> Result<Self, EntropyError> {
        Ok(Self::new(config.rct_cutoff()?))
    }

    /// The cutoff `C`.
    pub fn cutoff(&self) -> u32 {
        self.cutoff
    }

    /// Length of the current run.
    pub fn run(&self) -> u32 {
        self.run
    }

    /// Longest run seen so far.
    pub fn longest_run(&self) -> u32 {
        self.longest
    }

    /// Whether the 8 byte samples of `w` (little-endian) can take the fast path: no sample
    /// equals its predecessor, so every run ends at length 1 and nothing can fail.
    #[inline(always)]
    fn word_is_simple(&self, w: u64) -> bool {
        self.run > 0 && !has_zero_byte(w ^ ((w << 8) | u64::from(self.last)))
    }

    /// The fast path for a word accepted by [`Self::word_is_simple`].
    #[inline(always)]
    fn push_simple_word(&mut self, w: u64) {
        self.last = (w >> 56) as u8;
        self.run = 1;
        self.seen += 8;
    }

    /// Feeds one sample; fails while the current run is at least the cutoff.
    #[inline]
    pub fn push(&mut self, sample: u8) -> Result<(), HealthFailure> {
        if self.run > 0 && sample == self.last {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = sample;
            self.run = 1;
        }
        self.longest = self.longest.max(self.run);
        let offset = self.seen;
        self.seen += 1;
        if self.run >= self.cutoff {
            return Err(HealthFailure::Repetition {
                run: self.run,
                cutoff: self.cutoff,
                offset,
            });
        }
        Ok(())
    }
}

/// SP 800-90B §4.4.2 adaptive proportion test: in each window of `W` samples, fails when the
/// window's first value occurs `cutoff` times (the first occurrence included).
#[derive(Clone)]
pub struct AdaptiveProportionTest {
    window: u32,
    cutoff: u32,
    first: u8,
    count: u32,
    index: u32,
    max_count: u32,
    seen: u64,
}

impl std::fmt::Debug for AdaptiveProportionTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdaptiveProportionTest")
            .field("window", &self.window)
            .field("cutoff", &self.cutoff)
            .field("count", &self.count)
            .field("seen", &self.seen)
            .finish()
    }
}

impl AdaptiveProportionTest {
    /// A test with window `W >= 2` and cutoff `C >= 2`.
    pub fn new(window: u32, cutoff: u32) -> Self {
        Self {
            window: window.max(2),
            cutoff: cutoff.max(2),
            first: 0,
            count: 0,
            index: 0,
            max_count: 0,
            seen: 0,
        }
    }

    /// The test for a configuration (cutoff from [`HealthConfig::apt_cutoff`]).
    pub fn from_config(config: &HealthConfig) -> Result<Self, EntropyError> {
        Ok(Self::new(config.window as u32, config.apt_cutoff()?))
    }

    /// The window `W`.
    pub fn window(&self) -> u32 {
        self.window
    }

    /// The cutoff `C`.
    pub fn cutoff(&self) -> u32 {
        self.cutoff
    }

    /// Count of the current window's first value so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Largest count reached in any window so far.
    pub fn max_count(&self) -> u32 {
        self.max_count
    }

    /// The count after the 8 byte samples of `w` (little-endian), when they lie in one window
    /// starting at a multiple of 8 and do not reach the cutoff; `None` sends the caller to
    /// [`Self::push`] byte by byte.
    #[inline(always)]
    fn simple_word_count(&self, w: u64) -> Option<u32> {
        if !self.index.is_multiple_of(8) || self.index + 8 > self.window {
            return None;
        }
        let (first, base) = if self.index == 0 {
            (w as u8, 0)
        } else {
            (self.first, self.count)
        };
        let count = base + zero_bytes(w ^ (u64::from(first) * LO_BYTES));
        (count < self.cutoff).then_some(count)
    }

    /// The fast path for a word with the count from [`Self::simple_word_count`].
    #[inline(always)]
    fn push_simple_word(&mut self, w: u64, count: u32) {
        if self.index == 0 {
            self.first = w as u8;
        }
        self.count = count;
        self.max_count = self.max_count.max(count);
        self.index += 8;
        if self.index == self.window {
            self.index = 0;
        }
        self.seen += 8;
    }

    /// Feeds one sample; fails while the window's count is at least the cutoff.
    #[inline]
    pub fn push(&mut self, sample: u8) -> Result<(), HealthFailure> {
        if self.index == 0 {
            self.first = sample;
            self.count = 1;
        } else if sample == self.first {
            self.count += 1;
        }
        self.index += 1;
        if self.index == self.window {
            self.index = 0;
        }
        self.max_count = self.max_count.max(self.count);
        let offset = self.seen;
        self.seen += 1;
        if self.count >= self.cutoff {
            return Err(HealthFailure::Proportion {
                count: self.count,
                cutoff: self.cutoff,
                window: self.window,
                offset,
            });
        }
        Ok(())
    }
}

/// Both continuous health tests on one stream. The first failure latches: every later
/// [`feed`](Self::feed) returns it again.
#[derive(Debug, Clone)]
pub struct HealthTests {
    config: HealthConfig,
    rct: RepetitionCountTest,
    apt: AdaptiveProportionTest,
    samples: u64,
    failed: Option<HealthFailure>,
}

impl HealthTests {
    /// Tests for a validated configuration.
    pub fn new(config: HealthConfig) -> Result<Self, EntropyError> {
        Ok(Self {
            rct: RepetitionCountTest::from_config(&config)?,
            apt: AdaptiveProportionTest::from_config(&config)?,
            config,
            samples: 0,
            failed: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &HealthConfig {
        &self.config
    }

    /// The repetition count cutoff in use.
    pub fn rct_cutoff(&self) -> u32 {
        self.rct.cutoff()
    }

    /// The adaptive proportion cutoff in use.
    pub fn apt_cutoff(&self) -> u32 {
        self.apt.cutoff()
    }

    /// Samples tested so far (bytes, or bits for [`SampleKind::Bit`]).
    pub fn samples_seen(&self) -> u64 {
        self.samples
    }

    /// The latched failure, if any.
    pub fn failure(&self) -> Option<&HealthFailure> {
        self.failed.as_ref()
    }

    /// Runs both tests on every sample of `bytes`, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), HealthFailure> {
        if let Some(f) = &self.failed {
            return Err(f.clone());
        }
        let result = match self.config.kind {
            SampleKind::Byte => self.feed_bytes(bytes),
            SampleKind::Bit => bytes
                .iter()
                .try_for_each(|&b| (0..8).try_for_each(|i| self.push((b >> i) & 1))),
        };
        if let Err(f) = &result {
            self.failed = Some(f.clone());
        }
        result
    }

    fn feed_bytes(&mut self, bytes: &[u8]) -> Result<(), HealthFailure> {
        // Byte by byte until the APT window position is a multiple of 8, then by words.
        let lead = ((8 - self.apt.index % 8) % 8) as usize;
        let (head, rest) = bytes.split_at(lead.min(bytes.len()));
        head.iter().try_for_each(|&b| self.push(b))?;
        let mut words = rest.chunks_exact(8);
        for c in &mut words {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            if self.rct.word_is_simple(w)
                && let Some(count) = self.apt.simple_word_count(w)
            {
                self.rct.push_simple_word(w);
                self.apt.push_simple_word(w, count);
                self.samples += 8;
            } else {
                c.iter().try_for_each(|&b| self.push(b))?;
            }
        }
        words.remainder().iter().try_for_each(|&b| self.push(b))
    }

    #[inline]
    fn push(&mut self, s: u8) -> Result<(), HealthFailure> {
        self.samples += 1;
        self.rct.push(s)?;
        self.apt.push(s)
    }
}

// ---------------------------------------------------------------------------------------------
// The verdict
// ---------------------------------------------------------------------------------------------

/// Parameters of [`assess_with`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AssessConfig {
    /// Bound on the probability that ideal random data gets [`Verdict::Fail`] (split evenly over
    /// the six checks). Default 2^-20.
    pub false_alarm: f64,
}

impl Default for AssessConfig {
    fn default() -> Self {
        Self {
            false_alarm: DEFAULT_ALPHA,
        }
    }
}

/// The overall outcome of [`assess`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Verdict {
    /// Every check passed.
    Pass,
    /// At least one check failed; see `reasons`.
    Fail,
    /// Fewer than [`MIN_ASSESS_BYTES`] bytes: no conclusion (never a pass).
    InsufficientData,
}

/// Shannon entropy check.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ShannonCheck {
    /// Plug-in estimate, bits per byte.
    pub bits_per_byte: f64,
    /// `8 - 255 / (2 N ln 2)`: the approximate mean for ideal data of this size (a second-order
    /// expansion: accurate from about 1 KiB, an underestimate below; e.g. 5.13 vs about 5.7 at
    /// 64 bytes). Informational: the threshold does not rely on it.
    pub expected_ideal: f64,
    /// Fail below this.
    pub threshold: f64,
    /// `"chi_square"` (asymptotic, N >= 16384) or `"mcdiarmid"` (rigorous).
    pub method: &'static str,
    /// `bits_per_byte >= threshold`.
    pub passed: bool,
}

/// Most-common-value min-entropy check.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MinEntropyCheck {
    /// The SP 800-90B §6.3.1 estimate.
    pub estimate: MinEntropy,
    /// Ideal data has `max_count < max_count_limit` with probability `>= 1 - alpha_i`.
    pub max_count_limit: u64,
    /// The estimate at `max_count = max_count_limit - 1`; fail below.
    pub threshold: f64,
    /// `estimate.max_count < max_count_limit`.
    pub passed: bool,
}

/// A p-value check (monobit or runs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PValueCheck<T> {
    /// The test's statistics.
    pub result: T,
    /// Fail when `p_value` is below this (`alpha_i`).
    pub threshold: f64,
    /// `p_value >= threshold`.
    pub passed: bool,
}

/// Repetition count test over the whole sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RepetitionCheck {
    /// Claimed min-entropy per byte used for the cutoff (8: ideal).
    pub claimed_min_entropy: f64,
    /// Per-sample false-alarm probability the cutoff was computed for.
    pub alpha_per_sample: f64,
    /// The cutoff `C`.
    pub cutoff: u32,
    /// Longest run of one value.
    pub longest_run: u32,
    /// Number of runs that reached the cutoff.
    pub failures: u64,
    /// Offset (byte index) of the first failure.
    pub first_failure: Option<u64>,
    /// `failures == 0`.
    pub passed: bool,
}

/// Adaptive proportion test over the whole sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProportionCheck {
    /// Claimed min-entropy per byte used for the cutoff (8: ideal).
    pub claimed_min_entropy: f64,
    /// Window `W`.
    pub window: u32,
    /// Per-window false-alarm probability the cutoff was computed for.
    pub alpha_per_window: f64,
    /// The cutoff `C`.
    pub cutoff: u32,
    /// Largest count of a window's first value.
    pub max_count: u32,
    /// Windows that reached the cutoff.
    pub failed_windows: u64,
    /// Offset (byte index) of the first failure.
    pub first_failure: Option<u64>,
    /// `failed_windows == 0`.
    pub passed: bool,
}

/// Everything [`assess`] measured, the thresholds it used, and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntropyReport {
    /// Sample size `N` in bytes.
    pub n_bytes: u64,
    /// The overall verdict.
    pub verdict: Verdict,
    /// One line per failed check (or why no conclusion was drawn); empty on a pass.
    pub reasons: Vec<String>,
    /// Bound on the probability that ideal data fails (all checks together).
    pub false_alarm: f64,
    /// The share of it for each check, `false_alarm / 6`.
    pub false_alarm_per_check: f64,
    /// Shannon entropy per byte.
    pub shannon: ShannonCheck,
    /// Min-entropy per byte (MCV).
    pub min_entropy: MinEntropyCheck,
    /// SP 800-22 frequency (monobit) test.
    pub monobit: PValueCheck<MonobitResult>,
    /// SP 800-22 runs test.
    pub runs: PValueCheck<RunsResult>,
    /// SP 800-90B repetition count test over the sample.
    pub repetition_count: RepetitionCheck,
    /// SP 800-90B adaptive proportion test over the sample.
    pub adaptive_proportion: ProportionCheck,
}

impl EntropyReport {
    /// Whether the verdict is [`Verdict::Pass`].
    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Pass
    }
}

/// Assesses `bytes` with the default configuration (total false alarm 2^-20). See the module
/// documentation for how every threshold follows from the sample size.
pub fn assess(bytes: &[u8]) -> EntropyReport {
    let config = AssessConfig::default();
    assess_checked(bytes, &config)
}

/// Assesses `bytes` with an explicit false-alarm budget.
pub fn assess_with(bytes: &[u8], config: &AssessConfig) -> Result<EntropyReport, EntropyError> {
    check_alpha(config.false_alarm)?;
    Ok(assess_checked(bytes, config))
}

/// The Shannon threshold for `n` ideal bytes at false alarm `alpha`, and the method used.
fn shannon_threshold(n: u64, alpha: f64) -> (f64, &'static str) {
    if n == 0 {
        return (8.0, "mcdiarmid");
    }
    let nf = n as f64;
    if n >= ASYMPTOTIC_SHANNON_BYTES as u64 {
        let q = chi_square_upper_quantile(255.0, alpha);
        (
            8.0 - (q / nf).ln_1p() / std::f64::consts::LN_2,
            "chi_square",
        )
    } else {
        let mean_lower = 8.0 - (255.0 / nf).ln_1p() / std::f64::consts::LN_2;
        let spread =
            (std::f64::consts::LOG2_E + nf.log2()) * ((1.0 / alpha).ln() / (2.0 * nf)).sqrt();
        (mean_lower - spread, "mcdiarmid")
    }
}

/// Smallest `m` with `256 P(Binomial(n, 1/256) >= m) <= alpha` by the Chernoff bound.
fn mcv_count_limit(n: u64, alpha: f64) -> u64 {
    let p = 1.0 / 256.0;
    let nf = n as f64;
    let target = (256.0 / alpha).ln();
    let bound_ok = |m: u64| m > n || nf * bernoulli_kl(m as f64 / nf, p) >= target;
    let (mut lo, mut hi) = ((nf * p).ceil() as u64, n + 1); // bound_ok(hi) is true
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if bound_ok(mid) {
            hi = mid
        } else {
            lo = mid + 1
        }
    }
    lo
}

fn assess_checked(bytes: &[u8], config: &AssessConfig) -> EntropyReport {
    let n = bytes.len() as u64;
    let alpha_i = config.false_alarm / CHECKS;
    let nf = (n.max(1)) as f64;

    // Health-test cutoffs for ideal bytes (H = 8) over the whole scan.
    let alpha_sample = alpha_i / nf;
    let rct_c = rct_cutoff(8.0, alpha_sample);
    const W: u32 = 512;
    let windows = n.div_ceil(u64::from(W)).max(1);
    let alpha_window = alpha_i / windows as f64;
    let apt_c = apt_cutoff_exact(W, 1.0 / 256.0, alpha_window);

    // One pass: histogram, bit counts, RCT and APT.
    let mut hist = Histogram::new();
    let mut bitc = BitCounter::default();
    let mut rct = RepetitionCountTest::new(rct_c);
    let mut apt = AdaptiveProportionTest::new(W, apt_c);
    let (mut rct_fail, mut rct_first) = (0u64, None);
    let (mut apt_fail, mut apt_first) = (0u64, None);
    let mut offset = 0u64;
    let mut health =
        |rct: &mut RepetitionCountTest, apt: &mut AdaptiveProportionTest, b: u8, offset: u64| {
            if rct.push(b).is_err() && rct.run() == rct.cutoff() {
                rct_fail += 1;
                rct_first.get_or_insert(offset);
            }
            if apt.push(b).is_err() && apt.count() == apt.cutoff() && b == apt.first {
                apt_fail += 1;
                apt_first.get_or_insert(offset);
            }
        };
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        hist.add_word(w);
        bitc.push_word(w, 64);
        if rct.word_is_simple(w)
            && let Some(count) = apt.simple_word_count(w)
        {
            rct.push_simple_word(w);
            apt.push_simple_word(w, count);
            offset += 8;
        } else {
            for &b in c {
                health(&mut rct, &mut apt, b, offset);
                offset += 1;
            }
        }
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = 0u64;
        for (i, &b) in rest.iter().enumerate() {
            hist.add(b);
            w |= u64::from(b) << (8 * i);
            health(&mut rct, &mut apt, b, offset);
            offset += 1;
        }
        bitc.push_word(w, 8 * rest.len() as u32);
    }
    let hist = hist.finish();

    // Shannon.
    let h = shannon_from_histogram(&hist);
    let (shannon_thr, method) = shannon_threshold(n, alpha_i);
    let shannon = ShannonCheck {
        bits_per_byte: h,
        expected_ideal: 8.0 - 255.0 / (2.0 * nf * std::f64::consts::LN_2),
        threshold: shannon_thr,
        method,
        passed: n > 0 && h >= shannon_thr,
    };

    // Min-entropy.
    let max_count = hist.iter().copied().max().unwrap_or(0);
    let estimate = mcv_from_counts(n, max_count);
    let limit = mcv_count_limit(n, alpha_i);
    let min_entropy = MinEntropyCheck {
        estimate,
        max_count_limit: limit,
        threshold: mcv_from_counts(n, limit.saturating_sub(1)).bits_per_sample,
        passed: n > 0 && max_count < limit,
    };

    // Monobit and runs.
    let mono = monobit_from_counts(bitc.bits, bitc.ones);
    let monobit = PValueCheck {
        result: mono,
        threshold: alpha_i,
        passed: mono.p_value >= alpha_i,
    };
    let runs_r = runs_from_counts(bitc.bits, bitc.ones, bitc.runs());
    let runs = PValueCheck {
        result: runs_r,
        threshold: alpha_i,
        passed: runs_r.p_value >= alpha_i,
    };

    let repetition_count = RepetitionCheck {
        claimed_min_entropy: 8.0,
        alpha_per_sample: alpha_sample,
        cutoff: rct_c,
        longest_run: rct.longest_run(),
        failures: rct_fail,
        first_failure: rct_first,
        passed: rct_fail == 0,
    };
    let adaptive_proportion = ProportionCheck {
        claimed_min_entropy: 8.0,
        window: W,
        alpha_per_window: alpha_window,
        cutoff: apt_c,
        max_count: apt.max_count(),
        failed_windows: apt_fail,
        first_failure: apt_first,
        passed: apt_fail == 0,
    };

    let mut reasons = Vec::new();
    if !shannon.passed {
        reasons.push(format!(
            "Shannon entropy {:.6} bits/byte is below the threshold {:.6} for {n} bytes",
            shannon.bits_per_byte, shannon.threshold
        ));
    }
    if !min_entropy.passed {
        reasons.push(format!(
            "min-entropy (MCV) {:.4} bits/byte is below the threshold {:.4}: most common value seen {} times, limit {}",
            estimate.bits_per_sample, min_entropy.threshold, max_count, limit
        ));
    }
    if !monobit.passed {
        reasons.push(format!(
            "monobit test p-value {:.3e} < {:.3e}: {} ones in {} bits",
            mono.p_value, alpha_i, mono.ones, mono.n
        ));
    }
    if !runs.passed {
        reasons.push(format!(
            "runs test p-value {:.3e} < {:.3e}: {} runs in {} bits",
            runs_r.p_value, alpha_i, runs_r.runs, runs_r.n
        ));
    }
    if !repetition_count.passed {
        reasons.push(format!(
            "repetition count test: {rct_fail} run(s) of >= {rct_c} equal bytes (longest {})",
            repetition_count.longest_run
        ));
    }
    if !adaptive_proportion.passed {
        reasons.push(format!(
            "adaptive proportion test: {apt_fail} window(s) of {W} bytes with a value >= {apt_c} times (max {})",
            adaptive_proportion.max_count
        ));
    }
    let verdict = if (n as usize) < MIN_ASSESS_BYTES {
        reasons.insert(
            0,
            format!("insufficient data: {n} bytes, at least {MIN_ASSESS_BYTES} are needed"),
        );
        Verdict::InsufficientData
    } else if reasons.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail
    };

    EntropyReport {
        n_bytes: n,
        verdict,
        reasons,
        false_alarm: config.false_alarm,
        false_alarm_per_check: alpha_i,
        shannon,
        min_entropy,
        monobit,
        runs,
        repetition_count,
        adaptive_proportion,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{OsRandom, RandomSource, SeededRandom};

    fn bits_of(s: &str) -> BitBlock {
        BitBlock::from_bools(&s.bytes().map(|c| c == b'1').collect::<Vec<_>>())
    }

    fn chacha(seed: u64, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        SeededRandom::from_u64(seed).bytes(&mut v);
        v
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(f64::MIN_POSITIVE)
    }

    #[test]
    fn erfc_matches_known_values() {
        // Reference values of erfc (C99 libm / tables), relative accuracy 1e-13.
        let table = [
            (0.0, 1.0),
            (0.1, 0.887_537_083_981_715_2),
            (0.5, 0.479_500_122_186_953_5),
            (1.0, 0.157_299_207_050_285_13),
            (1.5, 0.033_894_853_524_689_27),
            (2.0, 0.004_677_734_981_047_266),
            (3.0, 2.209_049_699_858_544e-5),
            (5.0, 1.537_459_794_428_035e-12),
            (10.0, 2.088_487_583_762_545e-45),
            (20.0, 5.395_865_611_607_900_5e-176),
            (26.0, 5.663_192_408_856_143e-296),
        ];
        for (x, want) in table {
            let got = erfc(x);
            assert!(
                close(got, want, 1e-13),
                "erfc({x}) = {got:e}, want {want:e}"
            );
            assert!(close(erfc(-x), 2.0 - want, 1e-15), "erfc(-{x})");
        }
        // The two branches agree where they meet.
        let (below, at) = (erfc(2.0 - 1e-12), erfc(2.0));
        assert!(close(below, at, 1e-10));
        assert_eq!(erfc(40.0), 0.0);
        assert!(erfc(f64::NAN).is_nan());
    }

    #[test]
    fn quantiles_and_binomial_tails() {
        // P(Z > 1.959964) = 0.025, P(Z > 3.090232) = 0.001.
        assert!((normal_upper_quantile(0.025) - 1.959_964).abs() < 1e-5);
        assert!((normal_upper_quantile(0.001) - 3.090_232).abs() < 1e-5);
        // Binomial(4, 1/2): P(X >= k) = 1, 15/16, 11/16, 5/16, 1/16, 0.
        let t = binomial_upper_tails(4, 0.5);
        let want = [1.0, 15.0 / 16.0, 11.0 / 16.0, 5.0 / 16.0, 1.0 / 16.0, 0.0];
        for (g, w) in t.iter().zip(want) {
            assert!((g - w).abs() < 1e-14, "{t:?}");
        }
        // Binomial(3, 0.1): P(X >= 3) = 0.001, P(X >= 2) = 3*0.01*0.9 + 0.001 = 0.028.
        let t = binomial_upper_tails(3, 0.1);
        assert!(close(t[3], 0.001, 1e-12) && close(t[2], 0.028, 1e-12));
    }

    #[test]
    fn shannon_and_mcv_by_hand() {
        assert_eq!(shannon_entropy(&[]), 0.0);
        assert_eq!(shannon_entropy(&[7; 100]), 0.0);
        assert!((shannon_entropy(&[0, 0, 1, 1]) - 1.0).abs() < 1e-15);
        assert!((shannon_entropy(&[0, 1, 2, 3]) - 2.0).abs() < 1e-15);
        // p = (3/4, 1/4): H = 0.811278124459133.
        assert!((shannon_entropy(&[9, 9, 9, 4]) - 0.811_278_124_459_133).abs() < 1e-12);
        let all: Vec<u8> = (0..=255).collect();
        assert!((shannon_entropy(&all) - 8.0).abs() < 1e-12);
        // More than 8 bytes exercises the word path: 16 bytes, 2 values, 8 each -> 1 bit.
        let two: Vec<u8> = (0..16).map(|i| (i % 2) as u8 * 200).collect();
        assert!((shannon_entropy(&two) - 1.0).abs() < 1e-15);

        // MCV, L = 10, most common value 3 times: p_hat = 0.3,
        // p_u = 0.3 + 2.576 sqrt(0.3 * 0.7 / 9) = 0.6934904996735415, H = 0.5280519760987581.
        let m = mcv_min_entropy(&[5, 5, 5, 1, 2, 3, 4, 6, 7, 8]);
        assert_eq!((m.samples, m.max_count), (10, 3));
        assert!((m.p_upper - 0.693_490_499_673_541_5).abs() < 1e-12);
        assert!((m.bits_per_sample - 0.528_051_976_098_758_1).abs() < 1e-12);
        // Stuck: p_u = 1, H = 0 (and not -0).
        let s = mcv_min_entropy(&[1; 50]);
        assert_eq!(s.bits_per_sample.to_bits(), 0.0f64.to_bits());
        assert_eq!(mcv_from_counts(1, 1).p_upper, 1.0);
        assert_eq!(
            byte_histogram(&[1, 2, 2, 255, 2, 1, 0, 0, 0, 7, 7])
                .iter()
                .sum::<u64>(),
            11
        );
        let h = byte_histogram(&[1, 2, 2, 255, 2, 1, 0, 0, 0, 7, 7]);
        assert_eq!((h[0], h[1], h[2], h[7], h[255], h[3]), (3, 2, 3, 2, 1, 0));
    }

    #[test]
    fn monobit_sp800_22_examples() {
        // SP 800-22 §2.1.4/§2.1.8: epsilon = 1011010101, S_10 = 2, s_obs = 0.632455532,
        // P-value = 0.527089.
        let r = monobit_test(&bits_of("1011010101"));
        assert_eq!((r.n, r.ones, r.s_n), (10, 6, 2));
        assert!((r.s_obs - 0.632_455_532).abs() < 1e-9);
        assert!((r.p_value - 0.527_089).abs() < 1e-6);
        // §2.1.8 example 2: the 100-bit epsilon below, S_100 = -16, s_obs = 1.6, P = 0.109599.
        let e100 = "11001001000011111101101010100010001000010110100011\
                    00001000110100110001001100011001100010100010111000";
        let r = monobit_test(&bits_of(e100));
        assert_eq!((r.n, r.s_n), (100, -16));
        assert!((r.s_obs - 1.6).abs() < 1e-12);
        assert!((r.p_value - 0.109_599).abs() < 1e-6);
    }

    #[test]
    fn runs_sp800_22_examples() {
        // SP 800-22 §2.3.4: epsilon = 1001101011, pi = 3/5, tau = 0.632, V_10(obs) = 7,
        // P-value = 0.147232.
        let r = runs_test(&bits_of("1001101011"));
        assert_eq!((r.n, r.runs), (10, 7));
        assert!((r.pi - 0.6).abs() < 1e-15 && (r.tau - 0.632_455_532).abs() < 1e-9);
        assert!(r.prerequisite_met);
        assert!((r.p_value - 0.147_232).abs() < 1e-6);
        // §2.3.8: the 100-bit epsilon, pi = 0.42, V_100(obs) = 52, P-value = 0.500798.
        let e100 = "11001001000011111101101010100010001000010110100011\
                    00001000110100110001001100011001100010100010111000";
        let r = runs_test(&bits_of(e100));
        assert_eq!(r.runs, 52);
        assert!((r.pi - 0.42).abs() < 1e-15 && r.prerequisite_met);
        assert!((r.p_value - 0.500_798).abs() < 1e-6);
        // Prerequisite |pi - 1/2| < 2/sqrt(n): 9 ones of 10 meets it (0.4 < 0.632), 80 of 100
        // does not (0.3 >= 0.2).
        assert!(runs_test(&bits_of("1111111011")).prerequisite_met);
        let biased = format!("{}{}", "1".repeat(80), "0".repeat(20));
        assert!(!runs_test(&bits_of(&biased)).prerequisite_met);
        assert_eq!(runs_test(&bits_of("1111111111")).p_value, 0.0);
    }

    #[test]
    fn bit_counter_matches_naive_across_word_boundaries() {
        let mut r = SeededRandom::from_u64(3);
        for len in [1usize, 2, 63, 64, 65, 127, 128, 129, 1000] {
            let bools: Vec<bool> = (0..len).map(|_| r.below(2) == 1).collect();
            let b = BitBlock::from_bools(&bools);
            let c = BitCounter::over_bits(&b);
            let runs = 1 + bools.windows(2).filter(|w| w[0] != w[1]).count() as u64;
            assert_eq!(c.runs(), runs, "len {len}");
            assert_eq!(c.ones, bools.iter().filter(|&&x| x).count() as u64);
        }
        // assess reads bytes LSB first, exactly as BitBlock::from_all_bytes.
        for n in [64usize, 67, 1001] {
            let bytes = chacha(n as u64, n);
            let rep = assess(&bytes);
            let rr = runs_test(&BitBlock::from_all_bytes(&bytes));
            assert_eq!(rep.runs.result.runs, rr.runs);
            assert_eq!(
                rep.monobit.result.ones,
                BitBlock::from_all_bytes(&bytes).count_ones() as u64
            );
        }
    }

    #[test]
    fn health_cutoffs_follow_sp800_90b() {
        // RCT: C = 1 + ceil(20 / H).
        assert_eq!(HealthConfig::bytes(8.0).rct_cutoff().unwrap(), 4); // 1 + ceil(2.5)
        assert_eq!(HealthConfig::bytes(2.0).rct_cutoff().unwrap(), 11);
        assert_eq!(HealthConfig::binary(1.0).rct_cutoff().unwrap(), 21);
        assert_eq!(HealthConfig::binary(0.5).rct_cutoff().unwrap(), 41);
        assert_eq!(
            HealthConfig::bytes(8.0)
                .with_alpha(2f64.powi(-40))
                .rct_cutoff()
                .unwrap(),
            6
        );
        // APT, non-binary W = 512, alpha = 2^-20: SP 800-90B Table 2 gives
        // H = 0.5 -> 410, 1 -> 311, 2 -> 177, 4 -> 62, 8 -> 13.
        for (h, c) in [(0.5, 410), (1.0, 311), (2.0, 177), (4.0, 62), (8.0, 13)] {
            assert_eq!(HealthConfig::bytes(h).apt_cutoff().unwrap(), c, "H = {h}");
        }
        // Exact variant (first sample plus W - 1): never below the standard's.
        assert!(apt_cutoff_exact(512, 1.0 / 256.0, DEFAULT_ALPHA) >= 13);
        // Invalid configurations are errors, not panics.
        assert!(matches!(
            HealthConfig::bytes(9.0).validate(),
            Err(EntropyError::InvalidEntropy { .. })
        ));
        assert!(HealthConfig::binary(1.5).validate().is_err());
        assert!(HealthConfig::bytes(0.0).validate().is_err());
        assert!(HealthConfig::bytes(f64::NAN).validate().is_err());
        assert!(matches!(
            HealthConfig::bytes(8.0).with_alpha(1.0).validate(),
            Err(EntropyError::InvalidAlpha(_))
        ));
        let w = HealthConfig {
            window: 1,
            ..HealthConfig::default()
        };
        assert!(matches!(
            w.validate(),
            Err(EntropyError::InvalidWindow { window: 1 })
        ));
        assert!(assess_with(&[0; 100], &AssessConfig { false_alarm: 0.0 }).is_err());
    }

    #[test]
    fn rct_and_apt_trip_exactly_at_the_cutoff() {
        let mut rct = RepetitionCountTest::new(4);
        for s in [1, 1, 1, 2, 2, 2, 1] {
            assert!(rct.push(s).is_ok());
        }
        assert!(rct.push(1).is_ok() && rct.push(1).is_ok());
        assert_eq!(
            rct.push(1),
            Err(HealthFailure::Repetition {
                run: 4,
                cutoff: 4,
                offset: 9
            })
        );
        let mut apt = AdaptiveProportionTest::new(8, 3);
        // Window 1: first value 5 occurs twice; window 2: first value 9 occurs 3 times.
        for s in [5, 1, 5, 2, 3, 4, 6, 7, 9, 1, 9, 2] {
            assert!(apt.push(s).is_ok());
        }
        assert_eq!(
            apt.push(9),
            Err(HealthFailure::Proportion {
                count: 3,
                cutoff: 3,
                window: 8,
                offset: 12
            })
        );
        // Latching in HealthTests, and bit samples.
        let mut t = HealthTests::new(HealthConfig::binary(1.0)).unwrap();
        assert_eq!(t.rct_cutoff(), 21);
        assert!(t.feed(&[0b1010_1010; 8]).is_ok());
        assert!(t.feed(&[0, 0, 0]).is_err()); // 24 equal bits >= 21
        assert!(t.feed(&[0b1010_1010]).is_err());
        assert!(t.failure().is_some());
        // Debug does not show sample values.
        let mut r = RepetitionCountTest::new(4);
        r.push(0xAB).unwrap();
        assert!(!format!("{r:?}").contains("171"));
    }

    /// Data with structure for the health tests: random, then runs and low-alphabet stretches.
    fn structured(seed: u64, n: usize) -> Vec<u8> {
        let mut r = SeededRandom::from_u64(seed);
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            match r.below(6) {
                0 => {
                    let b = r.below(256) as u8;
                    v.extend(std::iter::repeat_n(b, 1 + r.below(12) as usize));
                }
                1 => v.extend((0..r.below(300)).map(|_| r.below(3) as u8)),
                _ => v.extend((0..r.below(200)).map(|_| r.below(256) as u8)),
            }
        }
        v.truncate(n);
        v
    }

    #[test]
    fn word_fast_path_matches_per_byte_reference() {
        let (mut clean, mut tripped) = (0, 0);
        for seed in 0..40u64 {
            let data = structured(seed, 5000);
            for (h, window, alpha) in [
                (8.0, 512usize, 1e-30),
                (8.0, 512, 1e-3),
                (4.0, 100, 1e-12),
                (1.0, 64, 1e-6),
            ] {
                let cfg = HealthConfig {
                    window,
                    ..HealthConfig::bytes(h)
                }
                .with_alpha(alpha);
                // Reference: plain per-byte pushes.
                let mut rct = RepetitionCountTest::from_config(&cfg).unwrap();
                let mut apt = AdaptiveProportionTest::from_config(&cfg).unwrap();
                let want = data
                    .iter()
                    .try_for_each(|&b| rct.push(b).and_then(|()| apt.push(b)))
                    .err();
                // Fast path, fed in random pieces.
                let mut t = HealthTests::new(cfg).unwrap();
                let mut r = SeededRandom::from_u64(seed);
                let mut rest = &data[..];
                let mut got = None;
                while !rest.is_empty() && got.is_none() {
                    let k = (r.below(40) as usize).min(rest.len());
                    let (a, b) = rest.split_at(k);
                    got = t.feed(a).err();
                    rest = b;
                }
                assert_eq!(got, want, "seed {seed}, H {h}, W {window}");
                if got.is_none() {
                    assert_eq!(t.samples_seen(), 5000);
                    clean += 1;
                } else {
                    tripped += 1;
                }
            }
            // assess's scan against the same per-byte logic.
            let rep = assess(&data);
            let mut rct = RepetitionCountTest::new(rep.repetition_count.cutoff);
            let mut apt = AdaptiveProportionTest::new(512, rep.adaptive_proportion.cutoff);
            let (mut rf, mut af) = (0u64, 0u64);
            for &b in &data {
                rf += u64::from(rct.push(b).is_err() && rct.run() == rct.cutoff());
                af += u64::from(
                    apt.push(b).is_err() && apt.count() == apt.cutoff() && b == apt.first,
                );
            }
            assert_eq!(rep.repetition_count.failures, rf, "seed {seed}");
            assert_eq!(rep.repetition_count.longest_run, rct.longest_run());
            assert_eq!(rep.adaptive_proportion.failed_windows, af);
            assert_eq!(rep.adaptive_proportion.max_count, apt.max_count());
        }
        assert!(
            clean >= 20 && tripped >= 20,
            "clean {clean}, tripped {tripped}"
        );
    }

    #[test]
    fn swar_byte_helpers() {
        let mut r = SeededRandom::from_u64(8);
        for _ in 0..10_000 {
            // Bytes biased towards 0, 0x80 and 0x01 to hit the borrow cases.
            let w = (0..8).fold(0u64, |w, i| {
                let b = [0u8, 0x80, 0x01, 0xff][r.below(4) as usize]
                    ^ (r.below(2) as u8 * r.below(256) as u8);
                w | u64::from(b) << (8 * i)
            });
            let zeros = w.to_le_bytes().iter().filter(|&&b| b == 0).count() as u32;
            assert_eq!(zero_bytes(w), zeros, "{w:#x}");
            assert_eq!(has_zero_byte(w), zeros > 0, "{w:#x}");
        }
    }

    fn assert_passes(bytes: &[u8], what: &str) {
        let r = assess(bytes);
        assert_eq!(r.verdict, Verdict::Pass, "{what}: {:?}", r.reasons);
        assert!(r.reasons.is_empty());
    }

    #[test]
    fn ideal_data_passes_at_1k_64k_4m() {
        for (i, n) in [1024usize, 65_536, 4 << 20].into_iter().enumerate() {
            assert_passes(&chacha(100 + i as u64, n), "chacha");
            let mut os = vec![0u8; n];
            OsRandom.fill(&mut os).unwrap();
            assert_passes(&os, "os");
        }
    }

    #[test]
    fn ideal_data_passes_at_small_sizes_for_many_seeds() {
        for seed in 0..300 {
            for n in [64usize, 100, 256, 1000, 4096] {
                assert_passes(&chacha(seed * 7 + n as u64, n), "small");
            }
        }
    }

    #[test]
    fn expected_shannon_of_ideal_data_is_8_minus_255_over_2n_ln2() {
        let n = 4096usize;
        let runs = 64;
        let mean: f64 = (0..runs)
            .map(|s| shannon_entropy(&chacha(1000 + s, n)))
            .sum::<f64>()
            / runs as f64;
        let expected = 8.0 - 255.0 / (2.0 * n as f64 * std::f64::consts::LN_2);
        // sd of one estimate ~ sqrt(510) / (2 N ln 2) = 0.004; of the mean ~ 0.0005.
        assert!(
            (mean - expected).abs() < 0.003,
            "mean {mean}, expected {expected}"
        );
        let r = assess(&chacha(1, n));
        assert!((r.shannon.expected_ideal - expected).abs() < 1e-12);
        // Thresholds rise with N and stay below the ideal mean.
        let thr = |n: u64| shannon_threshold(n, DEFAULT_ALPHA / 6.0).0;
        let sizes = [64u64, 1024, 16_383, 16_384, 65_536, 4 << 20, 12_500_000];
        for w in sizes.windows(2) {
            assert!(thr(w[0]) < thr(w[1]), "{w:?}");
        }
        for n in sizes {
            assert!(thr(n) < 8.0 - 255.0 / (2.0 * n as f64 * std::f64::consts::LN_2));
        }
        assert!(
            thr(4 << 20) > 7.999,
            "a fixed 7.9 would be far too lax at 4 MiB"
        );
    }

    #[test]
    fn too_little_data_is_not_a_pass() {
        for n in [0usize, 1, 10, 63] {
            let r = assess(&chacha(5, n));
            assert_eq!(r.verdict, Verdict::InsufficientData, "n = {n}");
            assert!(r.reasons[0].contains("insufficient data"));
        }
        assert_eq!(assess(&chacha(5, 64)).verdict, Verdict::Pass);
    }

    #[test]
    fn stuck_sources_fail() {
        let zeros = vec![0u8; 4096];
        let r = assess(&zeros);
        assert_eq!(r.verdict, Verdict::Fail);
        assert!(!r.shannon.passed && !r.min_entropy.passed && !r.monobit.passed);
        assert!(!r.repetition_count.passed && !r.adaptive_proportion.passed);
        assert_eq!(r.repetition_count.longest_run, 4096);

        // 0xAA: balanced bits (monobit passes) but every adjacent bit differs (runs fails).
        let r = assess(&vec![0xAA; 4096]);
        assert_eq!(r.verdict, Verdict::Fail);
        assert!(r.monobit.passed, "{:?}", r.monobit);
        assert!(!r.runs.passed && r.runs.result.runs == 4096 * 8);
        assert!(!r.shannon.passed && !r.repetition_count.passed);
        assert!(r.reasons.iter().any(|s| s.starts_with("runs test")));
    }

    fn biased(seed: u64, n: usize, p_one: f64) -> Vec<u8> {
        let mut r = SeededRandom::from_u64(seed);
        (0..n)
            .map(|_| (0..8).fold(0u8, |b, i| b | (u8::from(r.unit_f64() < p_one) << i)))
            .collect()
    }

    #[test]
    fn biased_source_fails_monobit() {
        for n in [1024usize, 65_536] {
            let r = assess(&biased(9, n, 0.55));
            assert_eq!(r.verdict, Verdict::Fail, "n = {n}");
            assert!(!r.monobit.passed, "n = {n}: {:?}", r.monobit);
            assert!(r.repetition_count.passed && r.runs.passed);
        }
        // At 64 KiB the Shannon and min-entropy thresholds catch it too (7.94 bits/byte).
        let r = assess(&biased(9, 65_536, 0.55));
        assert!(!r.shannon.passed && !r.min_entropy.passed);
    }

    #[test]
    fn injected_run_fails_the_repetition_count_test() {
        let mut data = chacha(11, 65_536);
        data[1100..1140].fill(0x5C);
        let r = assess(&data);
        assert_eq!(r.verdict, Verdict::Fail);
        assert!(!r.repetition_count.passed);
        assert_eq!(
            r.repetition_count.first_failure,
            Some(1100 + u64::from(r.repetition_count.cutoff) - 1)
        );
        assert!(r.repetition_count.longest_run >= 40);
        assert!(r.shannon.passed && r.min_entropy.passed && r.monobit.passed);
    }

    #[test]
    fn low_alphabet_source_fails_entropy_checks() {
        // 16 values 0x00, 0x11, ..., 0xFF: balanced bits, 4 bits per byte.
        let mut r = SeededRandom::from_u64(12);
        let data: Vec<u8> = (0..65_536).map(|_| (r.below(16) as u8) * 0x11).collect();
        let rep = assess(&data);
        assert_eq!(rep.verdict, Verdict::Fail);
        assert!(!rep.shannon.passed && (rep.shannon.bits_per_byte - 4.0).abs() < 0.01);
        assert!(!rep.min_entropy.passed && !rep.adaptive_proportion.passed);
        assert!(rep.monobit.passed);
    }

    #[test]
    fn report_serializes_to_json() {
        let r = assess(&[0u8; 100]);
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["verdict"], "fail");
        assert_eq!(v["n_bytes"], 100);
        assert_eq!(v["shannon"]["passed"], false);
        assert!(v["min_entropy"]["estimate"]["p_upper"].is_number());
        assert!(v["runs"]["result"]["prerequisite_met"].is_boolean());
        let s = serde_json::to_string(&assess(&[])).unwrap();
        assert!(s.contains("\"insufficient_data\""));
    }
}
