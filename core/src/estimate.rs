//! QBER estimation from a disclosed random sample, with a confidence bound.
//!
//! Both sides expand a shared 32-byte public seed with [`SeededRandom::from_seed`] into the same
//! uniformly random `k`-subset of `0..n` ([`sample_positions`], ascending). Alice discloses her
//! bits at those positions in a [`SampleMessage`] ([`disclose_sample`]); Bob compares them with
//! his ([`compare_sample`]) and gets a [`QberEstimate`]: the errors in the sample, the observed
//! QBER, and an upper bound on the error rate of the *remaining* `n - k` bits that holds except
//! with probability `eps`. Both sides drop the sampled bits from their keys
//! ([`split_sample`]).
//!
//! # Bounds
//! Let `n' = n - k` bits remain, `x` errors be seen in the `k` sampled bits, and `W` be the
//! (unknown) number of errors in all `n` bits. Two bounds are offered ([`Bound`]):
//!
//! - [`Bound::Serfling`]: Serfling's inequality for sampling without replacement, in the form
//!   used by Tomamichel, Lim, Gisin and Renner, "Tight finite-key analysis for quantum
//!   cryptography", Nat. Commun. 3, 634 (2012) (and Tomamichel and Leverrier, Quantum 1, 14
//!   (2017), Lemma 6):
//!   `Pr[ (W - x)/n' >= x/k + d ] <= exp(-2 d^2 n' k^2 / ((n' + k)(k + 1)))`, so
//!   `qber_upper = x/k + d` with `d = sqrt( (n' + k)(k + 1) ln(1/eps) / (2 n' k^2) )`
//!   (capped at 1). The finite-key length's `mu = sqrt((n+k)/(nk) (k+1)/k ln(4/eps_sec))`
//!   ([`crate::amplify::Bb84Tlgr2012`]) is this `d` at `eps = (eps_sec / 4)^2` (with a ladder
//!   of `L` rungs, `(eps_sec / (4 L))^2`; docs/security.md).
//! - [`Bound::Hypergeometric`] (the default): the exact tail. `x` is hypergeometric
//!   (`n` bits, `W` errors, `k` drawn), `F_W(x) = Pr_W[X <= x]`, which decreases in `W`. With
//!   `W_up(x) = max { W : F_W(x) > eps }`, `Pr_W[W > W_up(X)] <= Pr_W[F_W(X) <= eps] <= eps` for
//!   every `W`, so `qber_upper = (W_up(x) - x) / n'`. This is the exact computation proposed by
//!   Sakakibara and Matsumoto, IEICE ComEX 3(2), 68 (2014), in place of Serfling's bound; it is
//!   never looser in the cases we test and much tighter for small samples. Probabilities are
//!   computed in log space with Loader's saddle-point binomial terms (C. Loader, "Fast and
//!   accurate computation of binomial probabilities", 2000), accurate to about 1e-13 relative.

use serde::{Deserialize, Serialize};

use crate::bits::{BitBlock, BitsError};
use crate::rng::SeededRandom;

/// Version of [`SampleMessage`] this crate writes and accepts.
pub const SAMPLE_MESSAGE_VERSION: u16 = 1;

/// Why an estimation step failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EstimateError {
    /// The key holds no bits.
    #[error("key is empty; expected at least 2 bits to sample from")]
    EmptyKey,
    /// A sample of zero bits was requested.
    #[error("sample size is 0; expected at least 1 bit")]
    EmptySample,
    /// The sample would leave no key.
    #[error("sample of {k} bits from a {n}-bit key leaves no key; expected k < n")]
    SampleTooLarge {
        /// Sample size.
        k: u64,
        /// Key length.
        n: u64,
    },
    /// More errors than sampled bits.
    #[error("{errors} errors in a sample of {k} bits; expected at most {k}")]
    TooManyErrors {
        /// Errors claimed.
        errors: u64,
        /// Sample size.
        k: u64,
    },
    /// The failure probability is outside `(0, 1)`.
    #[error("eps = {eps} is invalid; expected a number strictly between 0 and 1")]
    EpsOutOfRange {
        /// The value given.
        eps: f64,
    },
    /// The key is not as long as the message says.
    #[error("key has {actual} bits but the sample was drawn from {expected} bits")]
    KeyLengthMismatch {
        /// Length in the message.
        expected: u64,
        /// Length of the local key.
        actual: u64,
    },
    /// The disclosed bits do not fill `ceil(k / 8)` bytes, or have tail bits set.
    #[error("disclosed sample is malformed: {reason}")]
    MalformedSample {
        /// What is wrong.
        reason: String,
    },
    /// A message of another version.
    #[error("sample message version {found} is not supported; expected {supported}")]
    UnsupportedVersion {
        /// Version in the message.
        found: u16,
        /// Version this crate speaks.
        supported: u16,
    },
    /// The message bytes do not decode.
    #[error("sample message does not decode: {0}")]
    Decode(String),
    /// Sample positions are not strictly increasing.
    #[error("sample positions must be strictly increasing; position {index} is {position}")]
    PositionsNotIncreasing {
        /// Index in the list.
        index: usize,
        /// The offending position.
        position: usize,
    },
    /// A sample position is past the end of the key.
    #[error(transparent)]
    Bits(#[from] BitsError),
}

/// Which confidence bound to put on the remaining bits' error rate (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// Serfling's inequality (Tomamichel et al. 2012): closed form, looser.
    Serfling,
    /// The exact hypergeometric tail: tightest, a few microseconds to milliseconds.
    #[default]
    Hypergeometric,
}

fn check_eps(eps: f64) -> Result<(), EstimateError> {
    if eps > 0.0 && eps < 1.0 {
        Ok(())
    } else {
        Err(EstimateError::EpsOutOfRange { eps })
    }
}

fn check_sizes(n: u64, k: u64) -> Result<(), EstimateError> {
    if n == 0 {
        return Err(EstimateError::EmptyKey);
    }
    if k == 0 {
        return Err(EstimateError::EmptySample);
    }
    if k >= n {
        return Err(EstimateError::SampleTooLarge { k, n });
    }
    Ok(())
}

/// The uniformly random `k`-subset of `0..n` that `seed` selects, in ascending order. Both
/// sides call this with the same public seed and get the same positions.
///
/// The seed is expanded with [`SeededRandom::from_seed`]; `min(k, n - k)` distinct positions
/// are drawn uniformly by rejection into a bitmap (at most two draws per position on average),
/// and the complement is taken when `k > n / 2`. Requires `0 < k < n`.
pub fn sample_positions(n: usize, k: usize, seed: &[u8; 32]) -> Result<Vec<usize>, EstimateError> {
    check_sizes(n as u64, k as u64)?;
    let mut rng = SeededRandom::from_seed(*seed);
    let complement = k > n / 2;
    let draw = if complement { n - k } else { k };
    let mut chosen = BitBlock::zeros(n);
    let mut placed = 0usize;
    chosen.with_words_mut(|words| {
        while placed < draw {
            let p = rng.below(n as u64) as usize;
            let (wi, mask) = (p / 64, 1u64 << (p % 64));
            if let Some(w) = words.get_mut(wi)
                && *w & mask == 0
            {
                *w |= mask;
                placed += 1;
            }
        }
    });
    let mut out = Vec::with_capacity(k);
    for (wi, &w) in chosen.words().iter().enumerate() {
        let mut bits = if complement { !w } else { w };
        while bits != 0 {
            let p = wi * 64 + bits.trailing_zeros() as usize;
            if p >= n {
                break;
            }
            out.push(p);
            bits &= bits - 1;
        }
    }
    debug_assert_eq!(out.len(), k);
    Ok(out)
}

/// Splits `key` into (the bits at `positions`, in that order; the key with those bits removed,
/// the others in order). `positions` must be strictly increasing and inside the key, as
/// [`sample_positions`] returns them.
pub fn split_sample(
    key: &BitBlock,
    positions: &[usize],
) -> Result<(BitBlock, BitBlock), EstimateError> {
    if let Some(i) = positions.windows(2).position(|w| w[0] >= w[1]) {
        return Err(EstimateError::PositionsNotIncreasing {
            index: i + 1,
            position: positions[i + 1],
        });
    }
    let sample = key.extract(positions)?;
    let rest = key.without_positions(positions)?;
    Ok((sample, rest))
}

/// Alice's disclosed sample: the seed that selects the positions and her bits there.
///
/// Encoded with postcard ([`SampleMessage::to_bytes`]). The bits are public once sent; `Debug`
/// shows sizes only all the same.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleMessage {
    /// Message format version ([`SAMPLE_MESSAGE_VERSION`]).
    pub version: u16,
    /// Length of the key the sample was drawn from, in bits.
    pub n: u64,
    /// Number of sampled bits.
    pub k: u64,
    /// The public seed that selects the positions ([`sample_positions`]).
    pub seed: [u8; 32],
    /// Alice's sampled bits, packed (DESIGN §4 order), `ceil(k / 8)` bytes, tail bits zero.
    pub bits: Vec<u8>,
}

impl std::fmt::Debug for SampleMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SampleMessage")
            .field("version", &self.version)
            .field("n", &self.n)
            .field("k", &self.k)
            .finish_non_exhaustive()
    }
}

impl SampleMessage {
    /// The compact binary encoding (postcard).
    pub fn to_bytes(&self) -> Vec<u8> {
        match postcard::to_stdvec(self) {
            Ok(v) => v,
            Err(_) => unreachable!("postcard cannot fail on plain data in memory"),
        }
    }

    /// Decodes and checks the version.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EstimateError> {
        let msg: Self =
            postcard::from_bytes(bytes).map_err(|e| EstimateError::Decode(e.to_string()))?;
        if msg.version != SAMPLE_MESSAGE_VERSION {
            return Err(EstimateError::UnsupportedVersion {
                found: msg.version,
                supported: SAMPLE_MESSAGE_VERSION,
            });
        }
        Ok(msg)
    }

    /// The disclosed bits as a block, after checking the version, sizes and tail bits.
    pub fn sample_bits(&self) -> Result<BitBlock, EstimateError> {
        if self.version != SAMPLE_MESSAGE_VERSION {
            return Err(EstimateError::UnsupportedVersion {
                found: self.version,
                supported: SAMPLE_MESSAGE_VERSION,
            });
        }
        check_sizes(self.n, self.k)?;
        let k = usize::try_from(self.k).map_err(|_| EstimateError::MalformedSample {
            reason: format!("k = {} does not fit this platform", self.k),
        })?;
        let want = k.div_ceil(8);
        if self.bits.len() != want {
            return Err(EstimateError::MalformedSample {
                reason: format!(
                    "{} bytes of sample bits; expected ceil({k} / 8) = {want}",
                    self.bits.len()
                ),
            });
        }
        if k % 8 != 0
            && let Some(&last) = self.bits.last()
            && last >> (k % 8) != 0
        {
            return Err(EstimateError::MalformedSample {
                reason: "bits past the sample length are set; expected zero".into(),
            });
        }
        Ok(BitBlock::from_bytes(&self.bits, k)?)
    }
}

/// Alice's side: samples `k` bits of `key` at the positions `seed` selects, returns the message
/// to send and the key with the sample removed. Draw `seed` fresh from a
/// [`RandomSource`](crate::rng::RandomSource) (`seed32`) in production.
pub fn disclose_sample(
    key: &BitBlock,
    k: usize,
    seed: [u8; 32],
) -> Result<(SampleMessage, BitBlock), EstimateError> {
    let positions = sample_positions(key.len(), k, &seed)?;
    let (sample, rest) = split_sample(key, &positions)?;
    let msg = SampleMessage {
        version: SAMPLE_MESSAGE_VERSION,
        n: key.len() as u64,
        k: k as u64,
        seed,
        bits: sample.to_bytes().to_vec(),
    };
    Ok((msg, rest))
}

/// Outcome of comparing a disclosed sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QberEstimate {
    /// Key length before sampling, in bits.
    pub n: u64,
    /// Sampled (disclosed and removed) bits.
    pub k: u64,
    /// Positions in the sample where the two sides differ.
    pub errors: u64,
    /// `errors / k`.
    pub observed_qber: f64,
    /// Bits left after the sample is removed, `n - k`.
    pub remaining_bits: u64,
    /// Failure probability of the bound.
    pub eps: f64,
    /// Which bound was used.
    pub bound: Bound,
    /// Upper bound on the error rate of the remaining bits, holding except with probability
    /// `eps`.
    pub qber_upper: f64,
}

impl QberEstimate {
    /// The estimate for `errors` errors in a `k`-bit sample of an `n`-bit key.
    pub fn new(n: u64, k: u64, errors: u64, eps: f64, bound: Bound) -> Result<Self, EstimateError> {
        let qber_upper = qber_upper_bound(n, k, errors, eps, bound)?;
        Ok(Self {
            n,
            k,
            errors,
            observed_qber: errors as f64 / k as f64,
            remaining_bits: n - k,
            eps,
            bound,
            qber_upper,
        })
    }
}

/// Bob's side: checks Alice's message against his key, counts the errors in the sample, bounds
/// the remaining bits' error rate at `eps`, and returns the estimate with his key minus the
/// sample.
pub fn compare_sample(
    key: &BitBlock,
    msg: &SampleMessage,
    eps: f64,
    bound: Bound,
) -> Result<(QberEstimate, BitBlock), EstimateError> {
    check_eps(eps)?;
    let theirs = msg.sample_bits()?;
    if msg.n != key.len() as u64 {
        return Err(EstimateError::KeyLengthMismatch {
            expected: msg.n,
            actual: key.len() as u64,
        });
    }
    let positions = sample_positions(key.len(), theirs.len(), &msg.seed)?;
    let (ours, rest) = split_sample(key, &positions)?;
    let errors = ours.hamming_distance(&theirs)? as u64;
    let est = QberEstimate::new(msg.n, msg.k, errors, eps, bound)?;
    Ok((est, rest))
}

/// Upper bound on the error rate of the `n - k` bits left after `errors` errors were seen in a
/// uniformly random `k`-bit sample of `n` bits, failing with probability at most `eps` (module
/// docs give both formulas).
pub fn qber_upper_bound(
    n: u64,
    k: u64,
    errors: u64,
    eps: f64,
    bound: Bound,
) -> Result<f64, EstimateError> {
    check_sizes(n, k)?;
    check_eps(eps)?;
    if errors > k {
        return Err(EstimateError::TooManyErrors { errors, k });
    }
    let rest = n - k;
    Ok(match bound {
        Bound::Serfling => {
            let (nr, kf) = (rest as f64, k as f64);
            let d = ((nr + kf) * (kf + 1.0) * (1.0 / eps).ln() / (2.0 * nr * kf * kf)).sqrt();
            (errors as f64 / kf + d).min(1.0)
        }
        Bound::Hypergeometric => {
            let w_up = hyper::max_total_errors(n, k, errors, eps.ln());
            (w_up - errors) as f64 / rest as f64
        }
    })
}

/// Hypergeometric probabilities in log space.
mod hyper {
    const LN_2PI: f64 = 1.837_877_066_409_345_5;

    /// `ln(n!) - ln(sqrt(2 pi n) (n/e)^n)`, `n >= 1`.
    fn stirlerr(n: f64) -> f64 {
        if n <= 15.0 {
            let mut lf = 0.0;
            let mut i = 2.0;
            while i <= n {
                lf += f64::ln(i);
                i += 1.0;
            }
            lf - ((n + 0.5) * n.ln() - n + 0.5 * LN_2PI)
        } else {
            // Stirling's series 1/(12n) - 1/(360n^3) + 1/(1260n^5) - 1/(1680n^7) + 1/(1188n^9).
            let nn = n * n;
            (1.0 / 12.0
                - (1.0 / 360.0 - (1.0 / 1260.0 - (1.0 / 1680.0 - 1.0 / 1188.0 / nn) / nn) / nn)
                    / nn)
                / n
        }
    }

    /// `x ln(x / m) + m - x`, accurately also when `x` is close to `m` (`x > 0`, `m > 0`).
    fn bd0(x: f64, m: f64) -> f64 {
        if (x - m).abs() < 0.1 * (x + m) {
            // With v = (x - m)/(x + m): x ln(x/m) + m - x = (x - m) v + 2x (v^3/3 + v^5/5 + ...).
            let v = (x - m) / (x + m);
            let mut s = (x - m) * v;
            let mut ej = 2.0 * x * v;
            let v2 = v * v;
            for j in 1..1000 {
                ej *= v2;
                let s1 = s + ej / f64::from(2 * j + 1);
                if s1 == s {
                    return s1;
                }
                s = s1;
            }
            s
        } else {
            x * (x / m).ln() + m - x
        }
    }

    /// `ln( C(n, x) p^x q^(n - x) )`, `0 <= x <= n`, `p + q = 1`, `p, q > 0`.
    fn ln_dbinom(x: f64, n: f64, p: f64, q: f64) -> f64 {
        if n == 0.0 {
            return 0.0;
        }
        if x == 0.0 {
            return n * q.ln();
        }
        if x == n {
            return n * p.ln();
        }
        let lc = stirlerr(n) - stirlerr(x) - stirlerr(n - x) - bd0(x, n * p) - bd0(n - x, n * q);
        let lf = LN_2PI + x.ln() + (-x / n).ln_1p();
        lc - 0.5 * lf
    }

    /// `ln Pr[X = x]` for `X` hypergeometric: `k` drawn from `n` items of which `w` are marked.
    /// Requires `0 < k < n` and `x` in the support.
    pub(super) fn ln_pmf(x: u64, n: u64, w: u64, k: u64) -> f64 {
        // C(w,x) C(n-w,k-x) / C(n,k) = dbinom(x; w, p) dbinom(k-x; n-w, p) / dbinom(k; n, p)
        // for any p; p = k/n keeps every term near its mode (Loader's dhyper).
        let (nf, kf) = (n as f64, k as f64);
        let p = kf / nf;
        let q = (n - k) as f64 / nf;
        ln_dbinom(x as f64, w as f64, p, q) + ln_dbinom((k - x) as f64, (n - w) as f64, p, q)
            - ln_dbinom(kf, nf, p, q)
    }

    /// `ln Pr[X <= x]` (hypergeometric as in [`ln_pmf`]), `0 < k < n`, `w <= n`.
    pub(super) fn ln_cdf(x: u64, n: u64, w: u64, k: u64) -> f64 {
        let lo = k.saturating_sub(n - w);
        let hi = k.min(w);
        if x >= hi {
            return 0.0;
        }
        if x < lo {
            return f64::NEG_INFINITY;
        }
        let (wf, bf, kf) = (w as f64, (n - w) as f64, k as f64);
        // pmf(i-1)/pmf(i) = i (b - k + i) / ((w - i + 1)(k - i + 1)).
        let down = |i: f64| i * (bf - kf + i) / ((wf - i + 1.0) * (kf - i + 1.0));
        let sum_down = |x: u64| {
            let (mut s, mut t, mut i) = (1.0f64, 1.0f64, x);
            while i > lo {
                t *= down(i as f64);
                s += t;
                i -= 1;
                if t < s * 1e-17 {
                    break;
                }
            }
            ln_pmf(x, n, w, k) + s.ln()
        };
        let mode = ((u128::from(k) + 1) * (u128::from(w) + 1) / (u128::from(n) + 2)) as u64;
        if x <= mode {
            return sum_down(x);
        }
        // Above the mode: 1 - upper tail, the upper tail summed from x + 1 up (terms fall).
        // pmf(i+1)/pmf(i) = (w - i)(k - i) / ((i + 1)(b - k + i + 1)).
        let (mut s, mut t, mut i) = (1.0f64, 1.0f64, x + 1);
        while i < hi {
            let f = i as f64;
            t *= (wf - f) * (kf - f) / ((f + 1.0) * (bf - kf + f + 1.0));
            s += t;
            i += 1;
            if t < s * 1e-17 {
                break;
            }
        }
        let upper = (ln_pmf(x + 1, n, w, k) + s.ln()).exp();
        if upper > 0.5 {
            // Pr[X <= x] < 1/2: sum it directly to keep relative accuracy. Each of the at most k
            // terms above x is <= pmf(x), so pmf(x) > 1/(2k) and the sum cannot overflow.
            sum_down(x)
        } else {
            (-upper).ln_1p()
        }
    }

    /// `max { W in [x, n - k + x] : ln Pr_W[X <= x] > ln_eps }`: the most errors the whole
    /// `n`-bit key can hold at confidence `1 - eps` after `x` errors in a `k`-bit sample.
    pub(super) fn max_total_errors(n: u64, k: u64, x: u64, ln_eps: f64) -> u64 {
        let (mut lo, mut hi) = (x, n - k + x);
        // Invariant: F_lo(x) > eps (F_x(x) = 1); answer in [lo, hi]. F_W(x) decreases in W.
        if ln_cdf(x, n, hi, k) > ln_eps {
            return hi;
        }
        // Now F_hi(x) <= eps.
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if ln_cdf(x, n, mid, k) > ln_eps {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }

    #[cfg(test)]
    pub(super) mod reference {
        /// Exact `C(n, k)` (`n <= 120`, fits u128).
        pub fn binom(n: u64, k: u64) -> u128 {
            if k > n {
                return 0;
            }
            let k = k.min(n - k);
            let mut c: u128 = 1;
            for i in 0..k {
                c = c * u128::from(n - i) / u128::from(i + 1);
            }
            c
        }

        /// Exact pmf as f64 from u128 binomials.
        pub fn pmf(x: u64, n: u64, w: u64, k: u64) -> f64 {
            if x > k || x > w || k - x > n - w {
                return 0.0;
            }
            (binom(w, x) * binom(n - w, k - x)) as f64 / binom(n, k) as f64
        }

        /// `ln C(n, k)` as a plain sum of logs (slow, accurate to ~1e-13 for k up to 10^4).
        pub fn ln_binom_sum(n: u64, k: u64) -> f64 {
            (0..k).map(|j| ((n - j) as f64 / (j + 1) as f64).ln()).sum()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::hyper::reference;
    use super::*;
    use crate::sim::{ErrorModel, simulate};

    #[test]
    fn serfling_by_hand() {
        // n = 10_000, k = 1_000, x = 20, eps = 1e-10; n' = 9_000.
        // ln(1/eps) = 10 ln 10 = 23.025850930.
        // d^2 = (9_000 + 1_000)(1_000 + 1) * 23.025850930 / (2 * 9_000 * 1_000^2)
        //     = 10_010_000 * 23.025850930 / 1.8e10 = 230_488_767.8 / 1.8e10 = 0.012804931545
        // d   = 0.113158877; bound = 20/1000 + d = 0.133158877.
        let b = qber_upper_bound(10_000, 1_000, 20, 1e-10, Bound::Serfling).unwrap();
        assert!((b - 0.133_158_877).abs() < 1e-8, "{b}");
    }

    #[test]
    fn exact_bound_by_hand() {
        // n = 10, k = 5, x = 0, eps = 0.05: F_W(0) = C(10 - W, 5) / C(10, 5) = C(10 - W, 5)/252.
        // W = 3: C(7,5) = 21, 21/252 = 0.083 > 0.05; W = 4: C(6,5) = 6, 6/252 = 0.024 <= 0.05.
        // So W_up = 3 and the 5 remaining bits hold at most 3 errors: bound 3/5 = 0.6.
        let b = qber_upper_bound(10, 5, 0, 0.05, Bound::Hypergeometric).unwrap();
        assert!((b - 0.6).abs() < 1e-15, "{b}");
        // x = 1, eps = 0.05: F_W(1) = [C(10-W,5) + W C(10-W,4)] / 252.
        // W = 6: 0 + 6*1 = 6 -> 0.024 <= 0.05; W = 5: 1 + 5*5 = 26 -> 0.103 > 0.05.
        // W_up = 5, remaining errors <= 4 of 5 bits: 0.8.
        let b = qber_upper_bound(10, 5, 1, 0.05, Bound::Hypergeometric).unwrap();
        assert!((b - 0.8).abs() < 1e-15, "{b}");
    }

    #[test]
    fn exact_is_tighter_than_serfling() {
        let s = qber_upper_bound(10_000, 1_000, 20, 1e-10, Bound::Serfling).unwrap();
        let e = qber_upper_bound(10_000, 1_000, 20, 1e-10, Bound::Hypergeometric).unwrap();
        assert!(e < s, "exact {e} vs serfling {s}");
        // Reference: exact integer arithmetic (Python math.comb, binary search on W) gives
        // W_up = 607: F_607(20) > 1e-10 >= F_608(20). Bound (607 - 20) / 9_000 = 0.065222...
        assert!((e - 587.0 / 9_000.0).abs() < 1e-15, "{e}");
        for (n, k, x) in [(1_000_000, 10_000, 300), (100_000, 5_000, 0), (200, 50, 5)] {
            let s = qber_upper_bound(n, k, x, 1e-6, Bound::Serfling).unwrap();
            let e = qber_upper_bound(n, k, x, 1e-6, Bound::Hypergeometric).unwrap();
            assert!(
                e < s && e >= x as f64 / k as f64,
                "n={n}: exact {e} vs serfling {s}"
            );
        }
    }

    #[test]
    fn pmf_matches_exact_binomials() {
        for (n, k) in [(40u64, 13u64), (100, 50), (100, 1), (100, 99)] {
            for w in [0, 1, 7, n / 2, n - 1, n] {
                for x in 0..=k.min(w) {
                    let r = reference::pmf(x, n, w, k);
                    if r == 0.0 {
                        continue;
                    }
                    let got = hyper::ln_pmf(x, n, w, k).exp();
                    assert!((got - r).abs() <= 1e-12 * r, "n={n} k={k} w={w} x={x}");
                }
            }
        }
    }

    #[test]
    fn pmf_matches_log_sums_for_large_n() {
        let (n, k) = (10_000_000u64, 2_000u64);
        for (w, x) in [
            (100_000u64, 20u64),
            (100_000, 0),
            (1_100_000, 200),
            (5_000_000, 1_000),
        ] {
            let r = reference::ln_binom_sum(w, x) + reference::ln_binom_sum(n - w, k - x)
                - reference::ln_binom_sum(n, k);
            let got = hyper::ln_pmf(x, n, w, k);
            assert!((got - r).abs() < 1e-9, "w={w} x={x}: {got} vs {r}");
        }
    }

    #[test]
    fn cdf_matches_exact_sums() {
        let (n, k) = (90u64, 30u64);
        for w in 0..=n {
            let mut acc = 0.0;
            for x in 0..=k {
                acc += reference::pmf(x, n, w, k);
                let got = hyper::ln_cdf(x, n, w, k).exp();
                assert!((got - acc).abs() <= 1e-12 * acc.max(1e-300), "w={w} x={x}");
            }
        }
    }

    #[test]
    fn exact_bound_matches_integer_reference() {
        let (n, k) = (80u64, 24u64);
        for eps in [0.3, 0.05, 1e-3, 1e-6] {
            for x in 0..=k {
                // Largest W with F_W(x) > eps, F from exact binomials.
                let w_up = (x..=n - k + x)
                    .filter(|&w| (0..=x).map(|i| reference::pmf(i, n, w, k)).sum::<f64>() > eps)
                    .max()
                    .unwrap();
                let got = qber_upper_bound(n, k, x, eps, Bound::Hypergeometric).unwrap();
                assert_eq!(got, (w_up - x) as f64 / (n - k) as f64, "eps={eps} x={x}");
            }
        }
    }

    /// The exact guarantee, checked exactly: for every true error count W, the probability over
    /// the sample that the remaining bits' error rate exceeds the bound is at most eps.
    #[test]
    fn both_bounds_cover_with_probability_one_minus_eps() {
        let (n, k) = (80u64, 24u64);
        for eps in [0.2, 0.05, 0.01] {
            for bound in [Bound::Serfling, Bound::Hypergeometric] {
                let ub: Vec<f64> = (0..=k)
                    .map(|x| qber_upper_bound(n, k, x, eps, bound).unwrap())
                    .collect();
                for w in 0..=n {
                    let fail: f64 = (0..=k.min(w))
                        .filter(|&x| (w - x) as f64 / (n - k) as f64 > ub[x as usize] + 1e-12)
                        .map(|x| reference::pmf(x, n, w, k))
                        .sum();
                    assert!(fail <= eps + 1e-12, "{bound:?} eps={eps} w={w}: {fail}");
                }
            }
        }
    }

    #[test]
    fn positions_are_a_uniform_ascending_subset() {
        let seed = [7u8; 32];
        let p = sample_positions(1000, 100, &seed).unwrap();
        assert_eq!(p.len(), 100);
        assert!(p.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(p, sample_positions(1000, 100, &seed).unwrap());
        assert_ne!(p, sample_positions(1000, 100, &[8u8; 32]).unwrap());
        // Complement path.
        let q = sample_positions(1000, 900, &seed).unwrap();
        assert_eq!(q.len(), 900);
        assert!(q.windows(2).all(|w| w[0] < w[1]) && *q.last().unwrap() < 1000);
        // Uniformity: each position of 0..20 is chosen with probability 5/20; over 4000 seeds
        // the count is Binomial(4000, 1/4): mean 1000, sd 27.4; allow 6 sd.
        let mut hits = [0u32; 20];
        for s in 0..4000u32 {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&s.to_le_bytes());
            for i in sample_positions(20, 5, &seed).unwrap() {
                hits[i] += 1;
            }
        }
        assert!(
            hits.iter().all(|&h| (h as i64 - 1000).abs() < 165),
            "{hits:?}"
        );
    }

    #[test]
    fn split_removes_the_sample() {
        let key = BitBlock::from_bools(&[true, false, true, true, false, false, true, false]);
        let (s, r) = split_sample(&key, &[0, 3, 6]).unwrap();
        assert_eq!(s.to_bools(), vec![true, true, true]);
        assert_eq!(r.to_bools(), vec![false, true, false, false, false]);
        assert!(matches!(
            split_sample(&key, &[3, 3]),
            Err(EstimateError::PositionsNotIncreasing {
                index: 1,
                position: 3
            })
        ));
        assert!(matches!(
            split_sample(&key, &[1, 8]),
            Err(EstimateError::Bits(BitsError::PositionOutOfRange {
                position: 8,
                ..
            }))
        ));
    }

    #[test]
    fn alice_bob_round_trip() {
        let pair = simulate(100_000, 0.05, ErrorModel::IidExact, 1).unwrap();
        let seed = [42u8; 32];
        let (msg, alice_rest) = disclose_sample(&pair.alice, 10_000, seed).unwrap();
        let wire = msg.to_bytes();
        let got = SampleMessage::from_bytes(&wire).unwrap();
        assert_eq!(got, msg);
        let (est, bob_rest) =
            compare_sample(&pair.bob, &got, 1e-10, Bound::Hypergeometric).unwrap();
        // Reference count of errors in the sample, bit by bit.
        let positions = sample_positions(100_000, 10_000, &seed).unwrap();
        let expected = positions
            .iter()
            .filter(|&&p| pair.alice.get(p).unwrap() != pair.bob.get(p).unwrap())
            .count() as u64;
        assert_eq!(est.errors, expected);
        assert_eq!(est.k, 10_000);
        assert_eq!(est.remaining_bits, 90_000);
        assert_eq!(alice_rest.len(), 90_000);
        assert_eq!(bob_rest.len(), 90_000);
        // All errors are either in the sample or in the rest.
        let rest_errors = alice_rest.hamming_distance(&bob_rest).unwrap() as u64;
        assert_eq!(rest_errors + est.errors, 5_000);
        assert!(est.qber_upper >= rest_errors as f64 / 90_000.0);
        assert!((est.observed_qber - est.errors as f64 / 10_000.0).abs() < 1e-15);
    }

    #[test]
    fn bad_inputs_are_precise_errors() {
        use EstimateError as E;
        let q = |n, k, x, eps| qber_upper_bound(n, k, x, eps, Bound::Serfling);
        assert_eq!(q(10, 11, 0, 0.1), Err(E::SampleTooLarge { k: 11, n: 10 }));
        assert_eq!(q(10, 10, 0, 0.1), Err(E::SampleTooLarge { k: 10, n: 10 }));
        assert_eq!(q(10, 0, 0, 0.1), Err(E::EmptySample));
        assert_eq!(q(0, 0, 0, 0.1), Err(E::EmptyKey));
        assert_eq!(q(10, 5, 6, 0.1), Err(E::TooManyErrors { errors: 6, k: 5 }));
        for eps in [0.0, 1.0, -1.0, f64::NAN] {
            assert!(matches!(q(10, 5, 0, eps), Err(E::EpsOutOfRange { .. })));
        }
        let key = BitBlock::zeros(100);
        let (msg, _) = disclose_sample(&key, 10, [1; 32]).unwrap();
        // Wrong key length on Bob's side.
        let other = BitBlock::zeros(99);
        assert_eq!(
            compare_sample(&other, &msg, 0.01, Bound::Serfling).unwrap_err(),
            E::KeyLengthMismatch {
                expected: 100,
                actual: 99
            }
        );
        // Sample of the wrong length.
        let mut short = msg.clone();
        short.bits.pop();
        assert!(matches!(
            compare_sample(&key, &short, 0.01, Bound::Serfling),
            Err(E::MalformedSample { .. })
        ));
        // Tail bits set (k = 10: bits 10..16 of the 2 bytes must be zero).
        let mut tail = msg.clone();
        tail.bits[1] |= 0x80;
        assert!(matches!(
            compare_sample(&key, &tail, 0.01, Bound::Serfling),
            Err(E::MalformedSample { .. })
        ));
        // Another version.
        let mut v2 = msg.clone();
        v2.version = 2;
        assert_eq!(
            SampleMessage::from_bytes(&v2.to_bytes()).unwrap_err(),
            E::UnsupportedVersion {
                found: 2,
                supported: 1
            }
        );
        assert!(matches!(
            SampleMessage::from_bytes(&[1, 2]),
            Err(E::Decode(_))
        ));
        assert!(matches!(
            compare_sample(&key, &msg, 1.5, Bound::Serfling),
            Err(E::EpsOutOfRange { .. })
        ));
        assert!(!format!("{msg:?}").contains("bits"));
    }
}
