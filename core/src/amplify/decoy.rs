//! Decoy-state BB84 finite-key bound of Lim, Curty, Walenta, Xu, Zbinden, "Concise security
//! bounds for practical decoy-state quantum key distribution", Phys. Rev. A 89, 022307 (2014),
//! arXiv:1311.7129 ([`Lim2014`]), and a simple expected-value channel model to feed it
//! ([`expected_statistics`], [`DecoyDevice`]).
//!
//! # The bound
//!
//! Alice sends phase-randomised weak coherent pulses with three intensities
//! `mu1 > mu2 + mu3`, `mu2 > mu3 >= 0`, chosen with probabilities `p1, p2, p3`; both parties
//! pick basis X (key) or Z (test). Per basis `B` and intensity `k` the input is the number of
//! detections `n_{B,k}` and of bit errors `m_{B,k}`, plus the error-correction leakage
//! `lambda_EC`, `eps_sec` and `eps_cor`. With `eps_1 = eps_sec / 21` and
//! `delta(n) = sqrt(n/2 · ln(21/eps_sec))` (Hoeffding, Eqs. (A1), (A2)):
//!
//! ```text
//! n±_{B,k} = e^k / p_k · (n_{B,k} ± delta(n_B)),  n_B = sum_k n_{B,k}     (after Eq. 2)
//! m±_{B,k} = e^k / p_k · (m_{B,k} ± delta(m_B)),  m_B = sum_k m_{B,k}     (after Eq. 4)
//! tau_j    = sum_k e^{-k} k^j p_k / j!                                    (after Eq. 2)
//! s_{B,0} >= tau_0 (mu2 n-_{B,mu3} - mu3 n+_{B,mu2}) / (mu2 - mu3)            (Eq. 2, A4)
//! s_{B,1} >= tau_1 mu1 [n-_{B,mu2} - n+_{B,mu3}
//!                       - (mu2² - mu3²)/mu1² (n+_{B,mu1} - s_{B,0}/tau_0)]
//!            / [mu1 (mu2 - mu3) - mu2² + mu3²]                               (Eq. 3, A5)
//! v_{Z,1} <= tau_1 (m+_{Z,mu2} - m-_{Z,mu3}) / (mu2 - mu3)                  (Eq. 4, A6)
//! phi_X   <= v_{Z,1}/s_{Z,1} + gamma(eps_sec, v_{Z,1}/s_{Z,1}, s_{Z,1}, s_{X,1})  (Eq. 5, B2)
//! gamma(a, b, c, d) = sqrt( (c+d)(1-b)b / (c d ln 2) · log2( (c+d)/(c d (1-b) b) · 21²/a² ) )
//! l = floor( s_{X,0} + s_{X,1} - s_{X,1} h(phi_X) - lambda_EC
//!            - 6 log2(21/eps_sec) - log2(2/eps_cor) )                       (Eq. 1, B3)
//! ```
//!
//! `h` is the binary entropy ([`binary_entropy`]), taken as 1 for `phi_X >= 1/2`. The result
//! is `eps_cor`-correct and `eps_sec`-secret against general attacks.
//!
//! **Where the 21 comes from.** The paper composes its failure probabilities as
//! `eps_sec = 2 (2 alpha_1 + alpha_2 + alpha_3) + nu + 10 eps_1 + 2 eps_2` (Eq. (B4)): the
//! phase-error sampling (`alpha_1`), two chain-rule smoothing terms (`alpha_2`, `alpha_3`),
//! privacy amplification (`nu`) and the Hoeffding estimates of the detections (`eps_1`, ten
//! times) and errors (`eps_2`, twice). Setting every term to the same `eps_sec / 21` gives the
//! `ln(21/eps_sec)` in `delta`, the `21²/a²` in `gamma`, and the privacy-amplification cost
//! `log2(2 / (eps_cor beta))`, `beta = (alpha_2 alpha_3 nu)²`, i.e. `6 log2(21/eps_sec) +
//! log2(2/eps_cor)`. Equation numbers are those of the published PRA version.
//!
//! # Assumptions (of the paper; outside them the bound means nothing)
//!
//! - Alice's source emits phase-randomised weak coherent pulses, so the photon number of a
//!   pulse of intensity `k` is Poissonian with mean `k`; the intensities are exactly the
//!   stated `mu1, mu2, mu3` (no fluctuation, no correlation between pulses).
//! - Intensity and basis are chosen independently and identically for every pulse (i.i.d.),
//!   with the stated probabilities; Eve learns the intensity only after detection.
//! - Bob's detection probability does not depend on his basis choice (basis-independent
//!   efficiency, Sec. V of the paper); X and Z are mutually unbiased; double clicks are given
//!   a random bit; vacuum events carry no information; every multi-photon event is insecure.
//! - `lambda_EC` counts every bit revealed by error correction; the error verification
//!   publishes `log2(2/eps_cor)` bits (charged above). The protocol's abort test
//!   `phi_X < phi_tol` is the caller's business: we evaluate Eq. (1) at the observed bounds.
//!
//! # Edge cases and conservative readings
//!
//! The paper states the bounds for well-behaved data. Here every input passes validation
//! ([`DecoyError`]) or gives a finite [`DecoyBound`]; the choices below never lengthen the key
//! beyond what the paper's formulas give, and coincide with them on typical data:
//!
//! 1. **Clamping.** A lower bound below zero is replaced by 0 (`s_{B,0}`, `s_{B,1} >= 0`
//!    trivially); the clamped `s_{B,0}` enters Eq. (3). This is valid because the true
//!    vacuum count is non-negative and Eq. (3) increases with `s_{B,0}`. An upper bound
//!    `v_{Z,1} < 0` is raised to 0. The unclamped values are reported too.
//! 2. **No phase-error estimate.** If `s_{Z,1} < 1` or `s_{X,1} < 1` (fewer than one
//!    single-photon event: the random-sampling bound says nothing, and `gamma` diverges at 0),
//!    or `v_{Z,1}/s_{Z,1} >= 1/2`, then `phi_X = 1/2`, i.e. no single-photon key. Otherwise
//!    `phi_X = min(v_{Z,1}/s_{Z,1} + gamma, 1/2)`.
//! 3. **Few single-photon errors.** The paper's `gamma` vanishes as `b -> 0` (`b log(1/b)
//!    -> 0`), so zero estimated errors would certify a zero phase-error rate from a finite
//!    sample, which no sampling argument gives. We evaluate `gamma` at
//!    `b_gamma = max(b, min(ln(21/eps_sec)/s_{Z,1}, 1/2))`, i.e. as if at least
//!    `ln(21/eps_sec)` (≈ 26 for `eps_sec = 1e-10`) single-photon errors had been estimated:
//!    the smallest error rate that observing none in `s_{Z,1}` samples excludes only with
//!    probability `(1-b)^{s_{Z,1}} <= e^{-b s_{Z,1}} = eps_sec/21`. The additive `b` stays the
//!    estimated one. `gamma` (with item 4) increases with `b` on `(0, 1/2]`: `x log2(K/x)`,
//!    `x = b(1-b)`, has derivative `log2(K/x) - 1/ln 2 > 0` once the logarithm is at least
//!    `log2 21`; so this only enlarges the bound (also checked in the tests).
//! 4. **Logarithm floor.** For very large samples or large `eps_sec` the argument of the
//!    `log2` in `gamma` can fall below 1, giving the square root of a negative number. We
//!    floor that logarithm at `log2(21/eps_sec)`, which keeps `gamma²` at least
//!    `(1/c + 1/d) b (1-b) ln(21/eps_sec) / ln²2`, about a Bernstein-type width
//!    `2 (1/c + 1/d) b (1-b) ln(21/eps_sec)`. The floor is inactive unless
//!    `(c+d)/(c d b (1-b)) < eps_sec/21`, which needs both `s_{Z,1}` and `s_{X,1}` above
//!    `84/eps_sec` (`8.4e11` at `eps_sec = 1e-10`).
//! 5. **Zero errors.** `m_B = 0` gives `delta(m_B) = 0` and `m±_{B,k} = 0` exactly, as
//!    written in the paper (all per-intensity error counts are then known to be 0); item 3
//!    still charges a sampling term.
//! 6. **No key.** A length `<= 0` is `bits == 0` with the value in [`DecoyBound::raw_bits`];
//!    only invalid inputs are errors. Inputs so extreme that a bound overflows `f64`
//!    (e.g. `p_k = 1e-300`) give [`DecoyError::Overflow`], never NaN.
//!
//! Later analyses tighten parts of this treatment (e.g. multiplicative Chernoff bounds in
//! place of Hoeffding, and the fixed-length versus variable-length protocol question); this
//! module implements the 2014 bounds as published, with the readings above.

use std::f64::consts::LN_2;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::finite_key::{SecretLengthBound, SecretLengthModel, binary_entropy, whole_bits};

/// Number of equal parts `eps_sec` is split into by the paper's composition, Eq. (B4).
const EPS_PARTS: f64 = 21.0;

/// Tolerance on `p1 + p2 + p3 = 1`.
const PROBABILITY_SUM_TOLERANCE: f64 = 1e-9;

/// A measurement basis: X carries the key, Z tests it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Basis {
    /// The key basis.
    X,
    /// The test basis (phase-error estimation).
    Z,
}

impl fmt::Display for Basis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Basis::X => "X",
            Basis::Z => "Z",
        })
    }
}

/// Invalid inputs to the decoy-state bound or the channel model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecoyError {
    /// A real-valued input is NaN or infinite.
    #[error("{field} = {value} is not a finite number")]
    NonFinite {
        /// Which input (e.g. `intensities[0]`, `eps_sec`, `loss_db`).
        field: &'static str,
        /// The value given.
        value: f64,
    },
    /// The intensities violate `mu1 > mu2 + mu3`, `mu2 > mu3 >= 0`.
    #[error("intensities {intensities:?} violate mu1 > mu2 + mu3, mu2 > mu3 >= 0")]
    IntensityOrdering {
        /// The intensities `[mu1, mu2, mu3]` given.
        intensities: [f64; 3],
    },
    /// An intensity probability is zero or negative.
    #[error("probability p{index} = {value} is not positive")]
    ProbabilityNotPositive {
        /// Which probability, 1-based (`p1` belongs to `mu1`).
        index: usize,
        /// The value given.
        value: f64,
    },
    /// The intensity probabilities do not sum to 1 (within `1e-9`).
    #[error("probabilities sum to {sum}, not 1 (tolerance 1e-9)")]
    ProbabilitySum {
        /// `p1 + p2 + p3`.
        sum: f64,
    },
    /// More errors than detections for one basis and intensity.
    #[error("{basis} basis, intensity mu{index}: {errors} errors exceed {detections} detections")]
    ErrorsExceedDetections {
        /// The basis.
        basis: Basis,
        /// Which intensity, 1-based.
        index: usize,
        /// Errors given.
        errors: u64,
        /// Detections given.
        detections: u64,
    },
    /// A security parameter is not strictly between 0 and 1.
    #[error("{name} = {value} is outside (0, 1)")]
    EpsilonOutOfRange {
        /// Which parameter (`eps_sec` or `eps_cor`).
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// There are no detections at all in the key basis X.
    #[error("no detections in the key basis X")]
    NoKeyBasisDetections,
    /// A device or channel parameter is outside its range.
    #[error("{field} = {value} is outside {range}")]
    DeviceParameter {
        /// Which parameter (e.g. `q_x`, `loss_db`).
        field: &'static str,
        /// The value given.
        value: f64,
        /// The allowed range, as text.
        range: &'static str,
    },
    /// Valid but extreme inputs (e.g. a probability of `1e-300`, an intensity of 800) made an
    /// intermediate bound overflow `f64`.
    #[error("{quantity} is not finite: the inputs are too extreme for f64 arithmetic")]
    Overflow {
        /// Which intermediate quantity.
        quantity: &'static str,
    },
}

/// Detections and bit errors of one basis, per intensity `[mu1, mu2, mu3]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecoyCounts {
    /// `n_{B,k}`: detections (after sifting: both parties chose this basis).
    pub detections: [u64; 3],
    /// `m_{B,k}`: bit errors among them (`<= detections`).
    pub errors: [u64; 3],
}

impl DecoyCounts {
    /// `n_B = sum_k n_{B,k}` (as `f64`; no overflow).
    pub fn total_detections(&self) -> f64 {
        self.detections.iter().map(|&n| n as f64).sum()
    }

    /// `m_B = sum_k m_{B,k}` (as `f64`; no overflow).
    pub fn total_errors(&self) -> f64 {
        self.errors.iter().map(|&m| m as f64).sum()
    }

    /// Observed error rate `m_B / n_B`, or `None` without detections.
    pub fn error_rate(&self) -> Option<f64> {
        let n = self.total_detections();
        (n > 0.0).then(|| self.total_errors() / n)
    }
}

/// The observed statistics of a decoy-state run: exactly the JSON
/// `{"intensities": [mu1, mu2, mu3], "probabilities": [p1, p2, p3],
///   "x": {"detections": [..], "errors": [..]}, "z": {"detections": [..], "errors": [..]}}`
/// (unknown fields are rejected).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecoyStatistics {
    /// `[mu1, mu2, mu3]`, mean photon numbers with `mu1 > mu2 + mu3`, `mu2 > mu3 >= 0`.
    pub intensities: [f64; 3],
    /// `[p1, p2, p3]`, the probabilities of choosing each intensity (positive, sum 1).
    pub probabilities: [f64; 3],
    /// Key-basis counts.
    pub x: DecoyCounts,
    /// Test-basis counts.
    pub z: DecoyCounts,
}

impl DecoyStatistics {
    /// The full input for [`Lim2014::secret_length`], adding the leakage and security
    /// parameters.
    pub fn into_input(self, leak_ec_bits: u64, eps_sec: f64, eps_cor: f64) -> DecoyInput {
        DecoyInput {
            intensities: self.intensities,
            probabilities: self.probabilities,
            x: self.x,
            z: self.z,
            leak_ec_bits,
            eps_sec,
            eps_cor,
        }
    }
}

/// Everything [`Lim2014`] needs about one block.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecoyInput {
    /// `[mu1, mu2, mu3]`, mean photon numbers with `mu1 > mu2 + mu3`, `mu2 > mu3 >= 0`.
    pub intensities: [f64; 3],
    /// `[p1, p2, p3]`, the probabilities of choosing each intensity (positive, sum 1).
    pub probabilities: [f64; 3],
    /// Key-basis counts.
    pub x: DecoyCounts,
    /// Test-basis counts.
    pub z: DecoyCounts,
    /// `lambda_EC`: bits revealed by error correction (the verification tag is charged
    /// separately as `log2(2/eps_cor)`).
    pub leak_ec_bits: u64,
    /// Secrecy parameter `eps_sec` in (0, 1).
    pub eps_sec: f64,
    /// Correctness parameter `eps_cor` in (0, 1).
    pub eps_cor: f64,
}

impl DecoyInput {
    /// The statistics part of the input.
    pub fn statistics(&self) -> DecoyStatistics {
        DecoyStatistics {
            intensities: self.intensities,
            probabilities: self.probabilities,
            x: self.x,
            z: self.z,
        }
    }
}

/// The Hoeffding-corrected counts of one basis and the decoy bounds derived from them.
/// Arrays are indexed by intensity `[mu1, mu2, mu3]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DecoyBasisBounds {
    /// `delta(n_B) = sqrt(n_B/2 · ln(21/eps_sec))`.
    pub delta_n: f64,
    /// `n-_{B,k} = e^k/p_k (n_{B,k} - delta(n_B))` (may be negative).
    pub n_minus: [f64; 3],
    /// `n+_{B,k} = e^k/p_k (n_{B,k} + delta(n_B))`.
    pub n_plus: [f64; 3],
    /// `delta(m_B) = sqrt(m_B/2 · ln(21/eps_sec))`.
    pub delta_m: f64,
    /// `m-_{B,k} = e^k/p_k (m_{B,k} - delta(m_B))` (may be negative).
    pub m_minus: [f64; 3],
    /// `m+_{B,k} = e^k/p_k (m_{B,k} + delta(m_B))`.
    pub m_plus: [f64; 3],
    /// Eq. (2) before clamping at 0.
    pub s0_unclamped: f64,
    /// Eq. (3) before clamping at 0 (evaluated with the clamped `s_{B,0}`).
    pub s1_unclamped: f64,
}

/// A decoy-state secret length with every intermediate bound.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DecoyBound {
    /// Bits privacy amplification may output: `max(0, floor(raw_bits))`.
    pub bits: u64,
    /// Eq. (1) before rounding and clamping; negative when the block yields no key.
    pub raw_bits: f64,
    /// Hoeffding-corrected counts and unclamped bounds of the key basis.
    pub x: DecoyBasisBounds,
    /// Hoeffding-corrected counts and unclamped bounds of the test basis.
    pub z: DecoyBasisBounds,
    /// `tau_0 = sum_k p_k e^{-k}`: probability of sending vacuum.
    pub tau_0: f64,
    /// `tau_1 = sum_k p_k e^{-k} k`: probability of sending one photon.
    pub tau_1: f64,
    /// Lower bound on the vacuum events in X, `>= 0`.
    pub s_x0: f64,
    /// Lower bound on the single-photon events in X, `>= 0`.
    pub s_x1: f64,
    /// Lower bound on the vacuum events in Z, `>= 0`.
    pub s_z0: f64,
    /// Lower bound on the single-photon events in Z, `>= 0`.
    pub s_z1: f64,
    /// Eq. (4) before clamping at 0.
    pub v_z1_unclamped: f64,
    /// Upper bound on the single-photon bit errors in Z, `>= 0`.
    pub v_z1: f64,
    /// `b = v_{Z,1}/s_{Z,1}`, the single-photon error-rate bound in Z; `None` when
    /// `s_{Z,1} < 1` or `s_{X,1} < 1` (no estimate).
    pub v_z1_over_s_z1: Option<f64>,
    /// The error rate `b_gamma = max(b, min(ln(21/eps_sec)/s_{Z,1}, 1/2))` at which `gamma`
    /// was evaluated; `None` when `gamma` was not needed.
    pub gamma_error_rate: Option<f64>,
    /// The sampling term `gamma` of Eq. (5); `None` when not evaluated (`phi_X = 1/2` then).
    pub gamma: Option<f64>,
    /// Upper bound on the single-photon phase-error rate in X, in `[0, 1/2]`.
    pub phi_x: f64,
    /// `h(phi_X)`.
    pub h_phi_x: f64,
    /// `lambda_EC` as given.
    pub leak_ec_bits: u64,
    /// Privacy-amplification cost `6 log2(21/eps_sec)`.
    pub pa_cost_bits: f64,
    /// Error-verification (correctness) cost `log2(2/eps_cor)`.
    pub cor_cost_bits: f64,
    /// For comparison only (not a secure length): Eq. (1) on the same counts with every
    /// finite-size term removed (`delta = 0`, `gamma = 0`, no `eps` costs), i.e. the
    /// three-intensity asymptotic bound `s_{X,0} + s_{X,1}(1 - h(v_{Z,1}/s_{Z,1})) - lambda_EC`
    /// with the same clamping rules.
    pub asymptotic_bits: f64,
}

/// The decoy-state BB84 bound of Lim, Curty, Walenta, Xu, Zbinden, PRA 89, 022307 (2014).
/// See the [module documentation](self) for the formulas, assumptions and edge cases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lim2014;

impl SecretLengthBound for DecoyBound {
    fn bits(&self) -> u64 {
        self.bits
    }
    fn raw_bits(&self) -> f64 {
        self.raw_bits
    }
}

impl SecretLengthModel for Lim2014 {
    type Input = DecoyInput;
    type Bound = DecoyBound;
    type Error = DecoyError;

    fn name(&self) -> &'static str {
        "decoy-lim2014"
    }

    /// The secret length for one block; `Err` only for invalid (or overflowing) inputs.
    fn secret_length(&self, input: &DecoyInput) -> Result<DecoyBound, DecoyError> {
        validate_input(input)?;
        let source = Source::new(input.intensities, input.probabilities)?;
        let ln_eps = EPS_PARTS.ln() - input.eps_sec.ln(); // ln(21/eps_sec), no overflow
        let log2_eps = ln_eps / LN_2;

        let x = source.basis(&input.x, ln_eps)?;
        let z = source.basis(&input.z, ln_eps)?;
        let (v_z1_unclamped, v_z1) = source.single_photon_errors(&z.bounds)?;
        let phase = phase_error(v_z1, z.s1, x.s1, Some(ln_eps));
        let h_phi_x = binary_entropy(phase.phi);
        let leak = input.leak_ec_bits as f64;
        let pa_cost_bits = 6.0 * log2_eps;
        let cor_cost_bits = 1.0 - input.eps_cor.log2();
        let raw_bits = finite(
            "raw_bits",
            x.s0 + x.s1 - x.s1 * h_phi_x - leak - pa_cost_bits - cor_cost_bits,
        )?;

        // Asymptotic yardstick: the same formulas without finite-size terms.
        let xa = source.basis(&input.x, 0.0)?;
        let za = source.basis(&input.z, 0.0)?;
        let (_, va) = source.single_photon_errors(&za.bounds)?;
        let phase_a = phase_error(va, za.s1, xa.s1, None);
        let asymptotic_bits = finite(
            "asymptotic_bits",
            xa.s0 + xa.s1 * (1.0 - binary_entropy(phase_a.phi)) - leak,
        )?;

        Ok(DecoyBound {
            bits: whole_bits(raw_bits),
            raw_bits,
            x: x.bounds,
            z: z.bounds,
            tau_0: source.tau_0,
            tau_1: source.tau_1,
            s_x0: x.s0,
            s_x1: x.s1,
            s_z0: z.s0,
            s_z1: z.s1,
            v_z1_unclamped,
            v_z1,
            v_z1_over_s_z1: phase.ratio,
            gamma_error_rate: phase.gamma_error_rate,
            gamma: phase.gamma,
            phi_x: phase.phi,
            h_phi_x,
            leak_ec_bits: input.leak_ec_bits,
            pa_cost_bits,
            cor_cost_bits,
            asymptotic_bits,
        })
    }
}

fn finite(quantity: &'static str, value: f64) -> Result<f64, DecoyError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(DecoyError::Overflow { quantity })
    }
}

fn check_finite(field: &'static str, value: f64) -> Result<(), DecoyError> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(DecoyError::NonFinite { field, value })
    }
}

const INTENSITY_FIELDS: [&str; 3] = ["intensities[0]", "intensities[1]", "intensities[2]"];
const PROBABILITY_FIELDS: [&str; 3] = ["probabilities[0]", "probabilities[1]", "probabilities[2]"];

/// Checks intensities and probabilities (shared by the bound and the channel model).
fn validate_source(intensities: [f64; 3], probabilities: [f64; 3]) -> Result<(), DecoyError> {
    for (field, &v) in INTENSITY_FIELDS.iter().zip(&intensities) {
        check_finite(field, v)?;
    }
    for (field, &v) in PROBABILITY_FIELDS.iter().zip(&probabilities) {
        check_finite(field, v)?;
    }
    let [mu1, mu2, mu3] = intensities;
    let denominator = mu1 * (mu2 - mu3) - mu2 * mu2 + mu3 * mu3;
    if !(mu3 >= 0.0 && mu2 > mu3 && mu1 > mu2 + mu3 && denominator > 0.0) {
        return Err(DecoyError::IntensityOrdering { intensities });
    }
    for (i, &p) in probabilities.iter().enumerate() {
        if p <= 0.0 {
            return Err(DecoyError::ProbabilityNotPositive {
                index: i + 1,
                value: p,
            });
        }
    }
    let sum: f64 = probabilities.iter().sum();
    if (sum - 1.0).abs() > PROBABILITY_SUM_TOLERANCE {
        return Err(DecoyError::ProbabilitySum { sum });
    }
    Ok(())
}

fn check_eps(name: &'static str, value: f64) -> Result<(), DecoyError> {
    check_finite(name, value)?;
    if value > 0.0 && value < 1.0 {
        Ok(())
    } else {
        Err(DecoyError::EpsilonOutOfRange { name, value })
    }
}

fn validate_input(input: &DecoyInput) -> Result<(), DecoyError> {
    check_finite("eps_sec", input.eps_sec)?;
    check_finite("eps_cor", input.eps_cor)?;
    validate_source(input.intensities, input.probabilities)?;
    check_eps("eps_sec", input.eps_sec)?;
    check_eps("eps_cor", input.eps_cor)?;
    for (basis, counts) in [(Basis::X, &input.x), (Basis::Z, &input.z)] {
        for i in 0..3 {
            if counts.errors[i] > counts.detections[i] {
                return Err(DecoyError::ErrorsExceedDetections {
                    basis,
                    index: i + 1,
                    errors: counts.errors[i],
                    detections: counts.detections[i],
                });
            }
        }
    }
    if input.x.detections.iter().all(|&n| n == 0) {
        return Err(DecoyError::NoKeyBasisDetections);
    }
    Ok(())
}

/// A validated source: intensities, probabilities, `e^k/p_k` and `tau_0`, `tau_1`.
struct Source {
    mu: [f64; 3],
    /// `e^k / p_k`.
    weight: [f64; 3],
    tau_0: f64,
    tau_1: f64,
}

/// One basis: its bounds and the clamped `s_{B,0}`, `s_{B,1}`.
struct BasisEstimate {
    bounds: DecoyBasisBounds,
    s0: f64,
    s1: f64,
}

impl Source {
    fn new(mu: [f64; 3], p: [f64; 3]) -> Result<Self, DecoyError> {
        let mut weight = [0.0; 3];
        let (mut tau_0, mut tau_1) = (0.0, 0.0);
        for k in 0..3 {
            weight[k] = finite("e^k / p_k", mu[k].exp() / p[k])?;
            let e = (-mu[k]).exp() * p[k];
            tau_0 += e;
            tau_1 += e * mu[k];
        }
        if !(tau_0 > 0.0 && tau_1 > 0.0) {
            return Err(DecoyError::Overflow { quantity: "tau_0" });
        }
        Ok(Self {
            mu,
            weight,
            tau_0,
            tau_1,
        })
    }

    /// `(e^k/p_k)(c_k ∓ delta)` for the three intensities, `delta = sqrt(total/2 · ln_eps)`.
    fn hoeffding(
        &self,
        counts: &[u64; 3],
        ln_eps: f64,
        name: &'static str,
    ) -> Result<(f64, [f64; 3], [f64; 3]), DecoyError> {
        let total: f64 = counts.iter().map(|&c| c as f64).sum();
        let delta = (total / 2.0 * ln_eps).sqrt();
        let mut minus = [0.0; 3];
        let mut plus = [0.0; 3];
        for k in 0..3 {
            let c = counts[k] as f64;
            minus[k] = finite(name, self.weight[k] * (c - delta))?;
            plus[k] = finite(name, self.weight[k] * (c + delta))?;
        }
        Ok((delta, minus, plus))
    }

    /// Eqs. (2) and (3) for one basis; `ln_eps = ln(21/eps_sec)`, or 0 for the asymptotic
    /// (expected-value) version.
    fn basis(&self, counts: &DecoyCounts, ln_eps: f64) -> Result<BasisEstimate, DecoyError> {
        let [mu1, mu2, mu3] = self.mu;
        let (delta_n, n_minus, n_plus) = self.hoeffding(&counts.detections, ln_eps, "n±")?;
        let (delta_m, m_minus, m_plus) = self.hoeffding(&counts.errors, ln_eps, "m±")?;
        let s0_unclamped = finite(
            "s_0",
            self.tau_0 * (mu2 * n_minus[2] - mu3 * n_plus[1]) / (mu2 - mu3),
        )?;
        let s0 = s0_unclamped.max(0.0);
        let s1_unclamped = finite(
            "s_1",
            self.tau_1
                * mu1
                * (n_minus[1]
                    - n_plus[2]
                    - (mu2 * mu2 - mu3 * mu3) / (mu1 * mu1) * (n_plus[0] - s0 / self.tau_0))
                / (mu1 * (mu2 - mu3) - mu2 * mu2 + mu3 * mu3),
        )?;
        let s1 = s1_unclamped.max(0.0);
        Ok(BasisEstimate {
            bounds: DecoyBasisBounds {
                delta_n,
                n_minus,
                n_plus,
                delta_m,
                m_minus,
                m_plus,
                s0_unclamped,
                s1_unclamped,
            },
            s0,
            s1,
        })
    }

    /// Eq. (4): `(unclamped, clamped)` upper bound on the single-photon errors in Z.
    fn single_photon_errors(&self, z: &DecoyBasisBounds) -> Result<(f64, f64), DecoyError> {
        let [_, mu2, mu3] = self.mu;
        let v = finite(
            "v_z1",
            self.tau_1 * (z.m_plus[1] - z.m_minus[2]) / (mu2 - mu3),
        )?;
        Ok((v, v.max(0.0)))
    }
}

/// Phase-error estimate of Eq. (5) with the readings of the module doc.
struct PhaseError {
    ratio: Option<f64>,
    gamma_error_rate: Option<f64>,
    gamma: Option<f64>,
    phi: f64,
}

/// `ln_eps = Some(ln(21/eps_sec))` for the finite-key bound, `None` for the asymptotic one
/// (no `gamma`).
fn phase_error(v_z1: f64, s_z1: f64, s_x1: f64, ln_eps: Option<f64>) -> PhaseError {
    let none = PhaseError {
        ratio: None,
        gamma_error_rate: None,
        gamma: None,
        phi: 0.5,
    };
    if !(s_z1 >= 1.0 && s_x1 >= 1.0) {
        return none;
    }
    let b = v_z1 / s_z1;
    if b >= 0.5 {
        return PhaseError {
            ratio: Some(b),
            ..none
        };
    }
    let Some(ln_eps) = ln_eps else {
        return PhaseError {
            ratio: Some(b),
            gamma_error_rate: None,
            gamma: None,
            phi: b,
        };
    };
    let b_gamma = b.max((ln_eps / s_z1).min(0.5));
    let g = gamma(ln_eps, b_gamma, s_z1, s_x1);
    if !g.is_finite() {
        return PhaseError {
            ratio: Some(b),
            ..none
        };
    }
    PhaseError {
        ratio: Some(b),
        gamma_error_rate: Some(b_gamma),
        gamma: Some(g),
        phi: (b + g).min(0.5),
    }
}

/// `gamma(eps_sec, b, c, d)` of Eq. (5) with the logarithm floored at `log2(21/eps_sec)`
/// (module doc, item 4). Takes `ln_eps = ln(21/eps_sec)` so that tiny `eps_sec` cannot
/// overflow `21²/eps_sec²`. Requires `0 < b <= 1/2`, `c, d >= 1`.
fn gamma(ln_eps: f64, b: f64, c: f64, d: f64) -> f64 {
    let x = b * (1.0 - b);
    let spread = (c + d) / (c * d);
    let log2_eps = ln_eps / LN_2;
    let log_term = ((spread / x).log2() + 2.0 * log2_eps).max(log2_eps);
    (spread * x / LN_2 * log_term).sqrt()
}

/// A simple device and channel for simulations: the fibre-based model of the paper's
/// Sec. IV, without afterpulsing.
///
/// With channel loss `L` dB the total transmittance is `eta = eta_bob · 10^(-L/10)`; a pulse
/// of intensity `k` is detected (either of Bob's two detectors clicks) with probability
///
/// ```text
/// D_k = 1 - (1 - p_dc)² e^{-eta k}
/// ```
///
/// (the paper writes `1 - (1 - 2 p_dc) e^{-eta k}`, equal to first order in `p_dc`), and
/// gives a bit error with probability (per pulse)
///
/// ```text
/// E_k = e_mis (1 - e^{-eta k}) + p_dc
/// ```
///
/// as in the paper: the `2 p_dc` dark clicks land in the wrong detector half of the time.
/// (The paper prints `eta_ch` in the misalignment term; we read it as the total `eta`, which
/// makes `e_mis` the optical QBER.) Both parties pick X with probability `q_x`, so the
/// sifted X counts carry a factor `q_x²` and the Z counts `(1 - q_x)²`. The paper's
/// afterpulse term (`p_ap = 4e-2`: `R_k = D_k (1 + p_ap)`, `+ p_ap D_k / 2` errors) is not
/// modelled.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecoyDevice {
    /// `[mu1, mu2, mu3]`, mean photon numbers.
    pub intensities: [f64; 3],
    /// `[p1, p2, p3]`, intensity probabilities.
    pub probabilities: [f64; 3],
    /// Probability that Alice (and, independently, Bob) chooses the key basis X, in `[0, 1]`.
    pub q_x: f64,
    /// Bob's detection efficiency including his internal losses, in `[0, 1]`.
    pub eta_bob: f64,
    /// Dark-count probability per detector and pulse, in `[0, 1]`.
    pub p_dc: f64,
    /// Misalignment (optical) error probability, in `[0, 1/2]`.
    pub e_mis: f64,
    /// Error-correction efficiency `f_EC >= 1`: `lambda_EC = f_EC · n_X · h(E_X)`.
    pub f_ec: f64,
}

impl DecoyDevice {
    /// `eps_sec` used with [`DecoyDevice::lim2014_typical`] in examples and tests.
    pub const TYPICAL_EPS_SEC: f64 = 1e-10;
    /// `eps_cor` used with [`DecoyDevice::lim2014_typical`] (as in the paper).
    pub const TYPICAL_EPS_COR: f64 = 1e-15;

    /// A typical device after the numerical section of Lim et al. (Sec. IV): InGaAs
    /// detectors with `eta_bob = 0.1`, `p_dc = 6e-7`, `e_mis = 5e-3`, `f_EC = 1.16`, and
    /// `mu3 = 2e-4`; use it with [`Self::TYPICAL_EPS_SEC`] `= 1e-10` and
    /// [`Self::TYPICAL_EPS_COR`] `= 1e-15` (the paper takes `eps_cor = 1e-15` and
    /// `eps_sec = 1e-15 · l`, which is `1e-10` at `l = 10^5`).
    ///
    /// The remaining parameters are **fixed, not optimised** (the paper optimises `q_x`,
    /// `p1`, `p2`, `mu1`, `mu2` for every distance): `mu1 = 0.5`, `mu2 = 0.2`,
    /// `p = (0.6, 0.2, 0.2)`, `q_x = 0.8`, picked on a coarse grid so that `10^10` pulses
    /// give key up to 20 dB of channel loss. (With `mu2 = 0.1`, `p = (0.8, 0.1, 0.1)`,
    /// `q_x = 0.9` the Z-basis statistics of `10^10` pulses are too thin for any key at 20 dB.)
    pub fn lim2014_typical() -> Self {
        Self {
            intensities: [0.5, 0.2, 2e-4],
            probabilities: [0.6, 0.2, 0.2],
            q_x: 0.8,
            eta_bob: 0.1,
            p_dc: 6e-7,
            e_mis: 5e-3,
            f_ec: 1.16,
        }
    }

    /// Checks every parameter (intensities and probabilities as for [`Lim2014`]).
    pub fn validate(&self) -> Result<(), DecoyError> {
        validate_source(self.intensities, self.probabilities)?;
        let ranges: [(&'static str, f64, f64, f64, &'static str); 5] = [
            ("q_x", self.q_x, 0.0, 1.0, "[0, 1]"),
            ("eta_bob", self.eta_bob, 0.0, 1.0, "[0, 1]"),
            ("p_dc", self.p_dc, 0.0, 1.0, "[0, 1]"),
            ("e_mis", self.e_mis, 0.0, 0.5, "[0, 1/2]"),
            ("f_ec", self.f_ec, 1.0, f64::MAX, "[1, inf)"),
        ];
        for (field, value, lo, hi, range) in ranges {
            check_finite(field, value)?;
            if !(lo..=hi).contains(&value) {
                return Err(DecoyError::DeviceParameter {
                    field,
                    value,
                    range,
                });
            }
        }
        Ok(())
    }

    /// `lambda_EC = ceil(f_EC · n_X · h(m_X / n_X))` for the X counts of `stats` (0 without
    /// X detections), the paper's leakage model with `e_obs` the observed X error rate.
    pub fn leak_ec_bits(&self, stats: &DecoyStatistics) -> u64 {
        match stats.x.error_rate() {
            Some(e) => (self.f_ec * stats.x.total_detections() * binary_entropy(e)).ceil() as u64,
            None => 0,
        }
    }

    /// [`expected_statistics`] with the leakage of [`Self::leak_ec_bits`]: a ready input for
    /// [`Lim2014::secret_length`].
    pub fn expected_input(
        &self,
        loss_db: f64,
        pulses: f64,
        eps_sec: f64,
        eps_cor: f64,
    ) -> Result<DecoyInput, DecoyError> {
        let stats = expected_statistics(self, loss_db, pulses)?;
        Ok(stats.into_input(self.leak_ec_bits(&stats), eps_sec, eps_cor))
    }
}

/// Expected (rounded) counts for `pulses` pulses sent through a channel of `loss_db` dB with
/// `device` (model in [`DecoyDevice`]):
/// `n_{X,k} = round(pulses · p_k · q_x² · D_k)`, `m_{X,k} = round(pulses · p_k · q_x² · E_k)`,
/// and likewise for Z with `(1 - q_x)²`. Errors never exceed detections; counts saturate at
/// `u64::MAX`. `loss_db` and `pulses` must be finite and non-negative.
pub fn expected_statistics(
    device: &DecoyDevice,
    loss_db: f64,
    pulses: f64,
) -> Result<DecoyStatistics, DecoyError> {
    device.validate()?;
    for (field, value) in [("loss_db", loss_db), ("pulses", pulses)] {
        check_finite(field, value)?;
        if value < 0.0 {
            return Err(DecoyError::DeviceParameter {
                field,
                value,
                range: "[0, inf)",
            });
        }
    }
    let eta = device.eta_bob * 10f64.powf(-loss_db / 10.0);
    let no_dark = (1.0 - device.p_dc) * (1.0 - device.p_dc);
    let counts = |basis_factor: f64| {
        let mut c = DecoyCounts::default();
        for k in 0..3 {
            let signal = -(-eta * device.intensities[k]).exp_m1(); // 1 - e^{-eta k}
            let detect = 1.0 - no_dark * (1.0 - signal);
            let error = device.e_mis * signal + device.p_dc;
            let scale = pulses * device.probabilities[k] * basis_factor;
            c.detections[k] = (scale * detect).round() as u64;
            c.errors[k] = ((scale * error).round() as u64).min(c.detections[k]);
        }
        c
    };
    Ok(DecoyStatistics {
        intensities: device.intensities,
        probabilities: device.probabilities,
        x: counts(device.q_x * device.q_x),
        z: counts((1.0 - device.q_x) * (1.0 - device.q_x)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MU: [f64; 3] = [0.5, 0.2, 2e-4];
    const P: [f64; 3] = [0.6, 0.2, 0.2];

    /// The hand-worked block: round counts near the typical device at 10 dB, 1e10 pulses.
    fn hand() -> DecoyInput {
        DecoyInput {
            intensities: MU,
            probabilities: P,
            x: DecoyCounts {
                detections: [19_000_000, 2_500_000, 4_000],
                errors: [100_000, 13_000, 800],
            },
            z: DecoyCounts {
                detections: [1_200_000, 160_000, 250],
                errors: [6_000, 850, 50],
            },
            leak_ec_bits: 1_200_000,
            eps_sec: 1e-10,
            eps_cor: 1e-15,
        }
    }

    #[track_caller]
    fn rel(actual: f64, expected: f64, tol: f64) {
        let scale = expected.abs().max(f64::MIN_POSITIVE);
        assert!(
            (actual - expected).abs() <= tol * scale,
            "actual {actual:e}, expected {expected:e}, rel. error {:e}",
            (actual - expected).abs() / scale
        );
    }

    #[track_caller]
    fn rel3(actual: [f64; 3], expected: [f64; 3], tol: f64) {
        for k in 0..3 {
            rel(actual[k], expected[k], tol);
        }
    }

    fn assert_all_finite(b: &DecoyBound) {
        let mut all = vec![
            b.raw_bits,
            b.tau_0,
            b.tau_1,
            b.s_x0,
            b.s_x1,
            b.s_z0,
            b.s_z1,
            b.v_z1_unclamped,
            b.v_z1,
            b.phi_x,
            b.h_phi_x,
            b.pa_cost_bits,
            b.cor_cost_bits,
            b.asymptotic_bits,
        ];
        all.extend(b.v_z1_over_s_z1);
        all.extend(b.gamma_error_rate);
        all.extend(b.gamma);
        for basis in [&b.x, &b.z] {
            all.extend([
                basis.delta_n,
                basis.delta_m,
                basis.s0_unclamped,
                basis.s1_unclamped,
            ]);
            for arr in [basis.n_minus, basis.n_plus, basis.m_minus, basis.m_plus] {
                all.extend(arr);
            }
        }
        assert!(all.iter().all(|v| v.is_finite()), "{b:?}");
        assert!(b.s_x0 >= 0.0 && b.s_x1 >= 0.0 && b.s_z0 >= 0.0 && b.s_z1 >= 0.0);
        assert!(b.v_z1 >= 0.0 && (0.0..=0.5).contains(&b.phi_x), "{b:?}");
        assert!(b.raw_bits < 1.0 || b.bits == b.raw_bits.floor() as u64);
        assert!(b.raw_bits >= 1.0 || b.bits == 0);
    }

    fn bound(input: &DecoyInput) -> DecoyBound {
        let b = Lim2014.secret_length(input).unwrap();
        assert_all_finite(&b);
        b
    }

    #[test]
    fn name_is_stable() {
        assert_eq!(Lim2014.name(), "decoy-lim2014");
    }

    /// Every intermediate of the hand-worked block against an independent evaluation of the
    /// paper's formulas in Python (mpmath, 50 digits), with the readings of the module doc:
    ///
    /// ```python
    /// from mpmath import mp, mpf, exp, sqrt, log
    /// mp.dps = 50
    /// mu = [mpf('0.5'), mpf('0.2'), mpf('0.0002')]; p = [mpf('0.6'), mpf('0.2'), mpf('0.2')]
    /// es, ec = mpf('1e-10'), mpf('1e-15'); L = log(21 / es)
    /// tau0 = sum(p[i] * exp(-mu[i]) for i in range(3))
    /// tau1 = sum(p[i] * exp(-mu[i]) * mu[i] for i in range(3))
    /// def hoef(c):                      # delta, [minus], [plus]
    ///     d = sqrt(mpf(sum(c)) / 2 * L)
    ///     return d, [exp(mu[i]) / p[i] * (c[i] - d) for i in range(3)], \
    ///               [exp(mu[i]) / p[i] * (c[i] + d) for i in range(3)]
    /// def s01(c):
    ///     d, nm, npl = hoef(c)
    ///     s0r = tau0 * (mu[1] * nm[2] - mu[2] * npl[1]) / (mu[1] - mu[2]); s0 = max(s0r, 0)
    ///     s1r = tau1 * mu[0] * (nm[1] - npl[2] - (mu[1]**2 - mu[2]**2) / mu[0]**2
    ///           * (npl[0] - s0 / tau0)) / (mu[0] * (mu[1] - mu[2]) - mu[1]**2 + mu[2]**2)
    ///     return s0r, s0, s1r, max(s1r, 0)
    /// # x: n = [19e6, 2.5e6, 4000], m = [1e5, 13000, 800]; z: n = [1.2e6, 160000, 250],
    /// # m = [6000, 850, 50]; leak = 1.2e6
    /// _, mzm, mzp = hoef([6000, 850, 50])
    /// v = max(tau1 * (mzp[1] - mzm[2]) / (mu[1] - mu[2]), 0); b = v / sz1   # sz1 from s01(z)
    /// bg = max(b, min(L / sz1, mpf(1) / 2)); c, d = sz1, sx1; x = bg * (1 - bg)
    /// lg = max(log((c + d) / (c * d * x) * 21**2 / es**2, 2), log(21 / es, 2))
    /// g = sqrt((c + d) * x / (c * d * log(2)) * lg); phi = min(b + g, mpf(1) / 2)
    /// h = -phi * log(phi, 2) - (1 - phi) * log(1 - phi, 2)
    /// raw = sx0 + sx1 - sx1 * h - leak - 6 * log(21 / es, 2) - log(2 / ec, 2)
    /// # asymptotic: the same with L = 0 in hoef, g = 0 and no log costs.
    /// ```
    #[test]
    fn hand_worked_case_matches_independent_reference() {
        let b = bound(&hand());
        let t = 1e-9;
        rel(b.tau_0, 0.727_624_550_442_909_7, t);
        rel(b.tau_1, 0.214_748_420_037_709_24, t);

        rel(b.x.delta_n, 16_742.420_806_117_676, t);
        rel3(
            b.x.n_minus,
            [
                52_163_500.929_993_962,
                15_165_288.282_247_77,
                -63_724.847_725_721_53,
            ],
            t,
        );
        rel3(
            b.x.n_plus,
            [
                52_255_512.881_014_16,
                15_369_780.671_756_474,
                103_732.848_525_774_86,
            ],
            t,
        );
        rel(b.x.delta_m, 1_217.950_838_342_859_7, t);
        rel3(
            b.x.m_minus,
            [
                271_440.109_360_283_2,
                71_953.136_714_133_74,
                -2_090.172_184_350_511_6,
            ],
            t,
        );
        rel3(
            b.x.m_plus,
            [
                278_133.647_539_759_6,
                86_829.221_846_688_34,
                10_091.772_344_361_178,
            ],
            t,
        );
        // The vacuum bound is negative (n-_{X,mu3} < 0): clamped to 0 and fed as 0 to Eq. (3).
        rel(b.x.s0_unclamped, -57_608.802_232_396_33, t);
        assert_eq!(b.s_x0, 0.0);
        rel(b.x.s1_unclamped, 12_011_351.039_791_568, t);
        rel(b.s_x1, 12_011_351.039_791_568, t);

        rel(b.z.delta_n, 4_210.832_778_285_359, t);
        rel3(
            b.z.n_minus,
            [
                3_285_871.725_452_055_8,
                951_406.592_680_390_9,
                -19_808.125_120_314_764,
            ],
            t,
        );
        rel3(
            b.z.n_plus,
            [
                3_309_013.357_348_457,
                1_002_837.820_375_880_8,
                22_308.625_170_318_098,
            ],
            t,
        );
        rel(b.z.delta_m, 299.904_631_705_548, t);
        rel3(
            b.z.m_minus,
            [
                15_663.114_131_210_574,
                3_359.440_000_429_890_4,
                -1_249.773_088_151_574_8,
            ],
            t,
        );
        rel3(
            b.z.m_plus,
            [
                17_311.311_282_791_99,
                7_022.483_443_931_553,
                1_749.873_098_152_241_4,
            ],
            t,
        );
        rel(b.z.s0_unclamped, -15_157.725_279_283_37, t);
        assert_eq!(b.s_z0, 0.0);
        rel(b.s_z1, 716_406.631_948_963_5, t);

        rel(b.v_z1_unclamped, 8_891.161_263_320_677, t);
        rel(b.v_z1, 8_891.161_263_320_677, t);
        rel(b.v_z1_over_s_z1.unwrap(), 0.012_410_774_645_026_011, t);
        // b > ln(21/eps_sec)/s_{Z,1}: gamma is the paper's, at b itself.
        rel(b.gamma_error_rate.unwrap(), 0.012_410_774_645_026_011, t);
        rel(b.gamma.unwrap(), 0.001_275_538_199_970_634_4, t);
        rel(b.phi_x, 0.013_686_312_844_996_645, t);
        rel(b.h_phi_x, 0.104_343_073_135_155_53, t);
        rel(b.pa_cost_bits, 225.669_590_229_914_3, t);
        rel(b.cor_cost_bits, 50.828_921_423_310_43, t);
        rel(b.raw_bits, 9_557_773.261_282_917, t);
        assert_eq!(b.bits, 9_557_773);
        assert_eq!(b.leak_ec_bits, 1_200_000);
        rel(b.asymptotic_bits, 10_453_864.461_826_303, t);
    }

    #[test]
    fn gamma_increases_with_the_error_rate() {
        // The floor of item 3 relies on this (module doc).
        for eps in [1e-300, 1e-10, 1e-3, 0.5, 0.999] {
            let ln_eps = EPS_PARTS.ln() - f64::ln(eps);
            for c in [1.0, 30.0, 1e3, 1e6, 1e9, 1e12, 1e15] {
                for d in [1.0, 1e3, 1e7, 1e13] {
                    let mut last = 0.0;
                    for i in 1..=2000 {
                        let b = 0.5 * (i as f64 / 2000.0).powi(4);
                        let g = gamma(ln_eps, b, c, d);
                        assert!(g.is_finite() && g >= last, "eps {eps} c {c} d {d} b {b}");
                        last = g;
                    }
                }
            }
        }
    }

    #[test]
    fn more_test_errors_give_fewer_bits() {
        let mut last = u64::MAX;
        let mut first = None;
        for m2 in [0, 10, 100, 850, 3_000, 10_000, 30_000, 80_000, 160_000] {
            let mut input = hand();
            input.z.errors[1] = m2;
            let b = bound(&input);
            assert!(b.bits <= last, "m_Z,mu2 = {m2}: {} > {last}", b.bits);
            last = b.bits;
            first.get_or_insert(b.bits);
        }
        assert!(first.unwrap() > 0);
        assert_eq!(last, 0);
        // Scaling all Z errors up also only loses key.
        let mut last = u64::MAX;
        for scale in [0, 1, 2, 4, 8, 16, 40] {
            let mut input = hand();
            for k in 0..3 {
                input.z.errors[k] = (input.z.errors[k] * scale).min(input.z.detections[k]);
            }
            let b = bound(&input);
            assert!(b.bits <= last, "scale {scale}");
            last = b.bits;
        }
        assert_eq!(last, 0);
    }

    #[test]
    fn more_misalignment_gives_fewer_bits() {
        let mut last = u64::MAX;
        for e_mis in [0.0, 0.005, 0.01, 0.02, 0.04, 0.08] {
            let device = DecoyDevice {
                e_mis,
                ..DecoyDevice::lim2014_typical()
            };
            let input = device.expected_input(10.0, 1e10, 1e-10, 1e-15).unwrap();
            let b = bound(&input);
            assert!(b.bits < last || b.bits == 0, "e_mis {e_mis}");
            last = b.bits;
        }
    }

    #[test]
    fn more_pulses_give_a_higher_key_rate_per_pulse() {
        let device = DecoyDevice::lim2014_typical();
        for loss in [0.0, 10.0, 20.0] {
            let mut last = 0.0;
            for pulses in [1e8, 1e9, 1e10, 1e11, 1e12] {
                let input = device.expected_input(loss, pulses, 1e-10, 1e-15).unwrap();
                let rate = bound(&input).bits as f64 / pulses;
                assert!(
                    rate > last || (rate == 0.0 && last == 0.0),
                    "{loss} dB, {pulses} pulses: rate {rate} after {last}"
                );
                last = rate;
            }
            assert!(last > 0.0);
        }
    }

    #[test]
    fn invalid_inputs_are_errors() {
        let m = Lim2014;
        let ok = hand();
        let err = |input: DecoyInput| m.secret_length(&input).unwrap_err();

        for (i, field) in INTENSITY_FIELDS.iter().enumerate() {
            for v in [f64::NAN, f64::INFINITY] {
                let mut input = ok;
                input.intensities[i] = v;
                assert!(
                    matches!(err(input), DecoyError::NonFinite { field: f, .. } if f == *field)
                );
            }
        }
        let mut input = ok;
        input.probabilities[1] = f64::NEG_INFINITY;
        assert!(matches!(
            err(input),
            DecoyError::NonFinite {
                field: "probabilities[1]",
                ..
            }
        ));
        for (name, eps) in [("eps_sec", f64::NAN), ("eps_cor", f64::INFINITY)] {
            let mut input = ok;
            if name == "eps_sec" {
                input.eps_sec = eps;
            } else {
                input.eps_cor = eps;
            }
            assert!(matches!(err(input), DecoyError::NonFinite { field, .. } if field == name));
        }

        for mu in [
            [0.3, 0.2, 0.1],   // mu1 = mu2 + mu3 (in floating point, mu1 < mu2 + mu3)
            [0.4, 0.2, 0.2],   // mu2 = mu3
            [0.5, 0.1, 0.2],   // mu2 < mu3
            [0.5, 0.2, -1e-6], // mu3 < 0
            [0.1, 0.2, 0.0],   // mu1 < mu2
            [0.0, 0.0, 0.0],
        ] {
            let input = DecoyInput {
                intensities: mu,
                ..ok
            };
            assert_eq!(
                err(input),
                DecoyError::IntensityOrdering { intensities: mu },
                "{mu:?}"
            );
        }

        for (p, index) in [
            ([1.0, 0.0, 0.0], 2),
            ([1.1, 0.0, -0.1], 2),
            ([0.0, 0.5, 0.5], 1),
        ] {
            let input = DecoyInput {
                probabilities: p,
                ..ok
            };
            assert!(
                matches!(err(input), DecoyError::ProbabilityNotPositive { index: i, .. } if i == index),
                "{p:?}"
            );
        }
        for p in [
            [0.6, 0.2, 0.1],
            [0.6, 0.2, 0.2 + 2e-9],
            [0.6, 0.2, 0.2 - 2e-9],
        ] {
            let input = DecoyInput {
                probabilities: p,
                ..ok
            };
            assert!(
                matches!(err(input), DecoyError::ProbabilitySum { .. }),
                "{p:?}"
            );
        }
        // Within the tolerance is fine.
        let input = DecoyInput {
            probabilities: [0.6, 0.2, 0.2 + 5e-10],
            ..ok
        };
        assert!(m.secret_length(&input).is_ok());

        let mut input = ok;
        input.x.errors[1] = input.x.detections[1] + 1;
        assert_eq!(
            err(input),
            DecoyError::ErrorsExceedDetections {
                basis: Basis::X,
                index: 2,
                errors: 2_500_001,
                detections: 2_500_000
            }
        );
        let mut input = ok;
        input.z.errors[2] = 251;
        assert!(matches!(
            err(input),
            DecoyError::ErrorsExceedDetections {
                basis: Basis::Z,
                index: 3,
                ..
            }
        ));

        for eps in [0.0, 1.0, -1e-9, 1.5] {
            assert_eq!(
                err(DecoyInput { eps_sec: eps, ..ok }),
                DecoyError::EpsilonOutOfRange {
                    name: "eps_sec",
                    value: eps
                }
            );
            assert_eq!(
                err(DecoyInput { eps_cor: eps, ..ok }),
                DecoyError::EpsilonOutOfRange {
                    name: "eps_cor",
                    value: eps
                }
            );
        }

        let input = DecoyInput {
            x: DecoyCounts::default(),
            ..ok
        };
        assert_eq!(err(input), DecoyError::NoKeyBasisDetections);

        // Valid but beyond f64: an error, never NaN.
        let input = DecoyInput {
            probabilities: [0.5, 0.5, 1e-307],
            ..ok
        };
        assert!(matches!(err(input), DecoyError::Overflow { .. }));
        let input = DecoyInput {
            intensities: [800.0, 0.2, 2e-4],
            ..ok
        };
        assert!(matches!(err(input), DecoyError::Overflow { .. }));
        // Messages are precise.
        assert_eq!(
            DecoyError::ProbabilityNotPositive {
                index: 2,
                value: 0.0
            }
            .to_string(),
            "probability p2 = 0 is not positive"
        );
    }

    #[test]
    fn zero_errors_still_pay_a_sampling_term() {
        // Python (as above, all m = 0): v = 0, b = 0, b_gamma = ln(21/eps_sec)/s_{Z,1}.
        let mut input = hand();
        input.x.errors = [0; 3];
        input.z.errors = [0; 3];
        let b = bound(&input);
        assert_eq!(b.z.delta_m, 0.0);
        assert_eq!(b.z.m_plus, [0.0; 3]);
        assert_eq!(b.v_z1, 0.0);
        assert_eq!(b.v_z1_over_s_z1, Some(0.0));
        let floor = (21.0f64 / 1e-10).ln() / b.s_z1;
        rel(b.gamma_error_rate.unwrap(), floor, 1e-12);
        rel(b.gamma_error_rate.unwrap(), 3.639_046_905_071_242e-5, 1e-9);
        rel(b.gamma.unwrap(), 7.404_290_039_609_668e-5, 1e-9);
        rel(b.phi_x, 7.404_290_039_609_668e-5, 1e-9);
        rel(b.raw_bits, 10_797_588.428_517_117, 1e-9);
        assert_eq!(b.bits, 10_797_588);
        assert!(b.bits > bound(&hand()).bits);
    }

    #[test]
    fn negative_error_bound_is_clamped() {
        // All Z errors at mu3: m+_{Z,mu2} < m-_{Z,mu3}, so Eq. (4) is negative.
        let mut input = hand();
        input.z.errors = [0, 0, 250];
        let b = bound(&input);
        assert!(b.v_z1_unclamped < 0.0, "{b:?}");
        assert_eq!(b.v_z1, 0.0);
        assert!(b.gamma.unwrap() > 0.0);
    }

    #[test]
    fn no_test_basis_detections_means_no_single_photon_key() {
        let mut input = hand();
        input.z = DecoyCounts::default();
        let b = bound(&input);
        assert_eq!(b.s_z1, 0.0);
        assert_eq!(b.v_z1_over_s_z1, None);
        assert_eq!(b.gamma, None);
        assert_eq!(b.phi_x, 0.5);
        assert_eq!(b.h_phi_x, 1.0);
        assert_eq!(b.bits, 0);
        // s_{X,0} = 0 here, and s_{X,1} - s_{X,1} h = 0: only the costs remain.
        rel(
            b.raw_bits,
            -(1_200_000.0 + b.pa_cost_bits + b.cor_cost_bits),
            1e-12,
        );
        // Asymptotically (delta = 0) the vacuum bound is positive: s_{X,0} = 3449.8187066355316
        // (Python), and h = 1 again.
        rel(
            b.asymptotic_bits,
            3_449.818_706_635_531_6 - 1_200_000.0,
            1e-9,
        );
    }

    #[test]
    fn error_rate_of_one_half_means_no_single_photon_key() {
        let mut input = hand();
        input.z.errors = [600_000, 80_000, 0];
        let b = bound(&input);
        assert!(b.v_z1_over_s_z1.unwrap() >= 0.5, "{b:?}");
        assert_eq!((b.phi_x, b.gamma), (0.5, None));
        assert_eq!(b.bits, 0);
    }

    #[test]
    fn huge_counts_stay_finite_and_approach_the_asymptotic_bound() {
        let mut input = hand();
        for c in [&mut input.x, &mut input.z] {
            for k in 0..3 {
                c.detections[k] *= 100_000;
                c.errors[k] *= 100_000;
            }
        }
        input.leak_ec_bits *= 100_000;
        assert!(input.x.detections[0] > 1_000_000_000_000);
        let b = bound(&input);
        assert!(b.bits > 0);
        assert!(b.raw_bits <= b.asymptotic_bits);
        assert!(b.raw_bits > 0.99 * b.asymptotic_bits, "{b:?}");
        // Counts near u64::MAX are fine too.
        let mut input = hand();
        input.x.detections = [u64::MAX / 2, u64::MAX / 8, u64::MAX / 4096];
        input.z.detections = [u64::MAX / 32, u64::MAX / 256, u64::MAX / 65536];
        bound(&input);
    }

    #[test]
    fn extreme_security_parameters_stay_finite() {
        for (eps_sec, eps_cor) in [(1e-300, 1e-300), (f64::MIN_POSITIVE, 0.5), (0.999, 0.999)] {
            let input = DecoyInput {
                eps_sec,
                eps_cor,
                ..hand()
            };
            bound(&input);
        }
    }

    #[test]
    fn logarithm_floor_keeps_gamma_real() {
        // eps_sec = 1/2: (c+d)/(c d b (1-b)) * 21²/eps² = 0.22 < 1, so the paper's log2 is
        // negative; the floor log2(21/eps_sec) = log2 42 applies.
        let input = DecoyInput {
            eps_sec: 0.5,
            ..hand()
        };
        let b = bound(&input);
        let (c, d, bg) = (b.s_z1, b.s_x1, b.gamma_error_rate.unwrap());
        let spread = (c + d) / (c * d);
        let x = bg * (1.0 - bg);
        assert!(spread / x * 21.0 * 21.0 / 0.25 < 1.0);
        rel(
            b.gamma.unwrap(),
            (spread * x / LN_2 * 42f64.log2()).sqrt(),
            1e-12,
        );
    }

    #[test]
    fn statistics_json_round_trips_and_rejects_unknown_fields() {
        let json = r#"{"intensities": [0.5, 0.2, 0.0002], "probabilities": [0.6, 0.2, 0.2],
            "x": {"detections": [19000000, 2500000, 4000], "errors": [100000, 13000, 800]},
            "z": {"detections": [1200000, 160000, 250], "errors": [6000, 850, 50]}}"#;
        let stats: DecoyStatistics = serde_json::from_str(json).unwrap();
        assert_eq!(stats, hand().statistics());
        assert_eq!(stats.into_input(1_200_000, 1e-10, 1e-15), hand());
        let back: DecoyStatistics =
            serde_json::from_str(&serde_json::to_string(&stats).unwrap()).unwrap();
        assert_eq!(back, stats);
        for bad in [
            json.replace("\"z\":", "\"extra\": 1, \"z\":"),
            json.replace("\"errors\": [6000", "\"errorz\": [6000"),
            json.replace("[6000, 850, 50]", "[6000, 850]"),
            json.replace("[6000, 850, 50]", "[6000, 850, -50]"),
        ] {
            assert!(
                serde_json::from_str::<DecoyStatistics>(&bad).is_err(),
                "{bad}"
            );
        }
        // The bound serializes (Options as null, everything else finite numbers).
        let out = serde_json::to_value(bound(&hand())).unwrap();
        assert_eq!(out["bits"], 9_557_773);
        assert!(out["x"]["n_minus"].is_array());
    }

    #[test]
    fn expected_statistics_follow_the_channel_model() {
        let device = DecoyDevice::lim2014_typical();
        device.validate().unwrap();
        // Python: round(1e10 * p_k * q² * (1 - (1 - 6e-7)² e^{-0.1 k})), etc.
        let s = expected_statistics(&device, 0.0, 1e10).unwrap();
        assert_eq!(s.x.detections, [187_283_393, 25_347_204, 27_136]);
        assert_eq!(s.x.errors, [938_699, 127_496, 896]);
        assert_eq!(s.z.detections, [11_705_212, 1_584_200, 1_696]);
        assert_eq!(s.z.errors, [58_669, 7_969, 56]);
        assert_eq!(device.leak_ec_bits(&s), 11_236_703);
        assert_eq!((s.intensities, s.probabilities), (MU, P));
        // No pulses: no counts (and the bound then refuses: no X detections).
        let empty = expected_statistics(&device, 0.0, 0.0).unwrap();
        assert_eq!(
            (empty.x, empty.z),
            (DecoyCounts::default(), DecoyCounts::default())
        );
        assert_eq!(device.leak_ec_bits(&empty), 0);
    }

    #[test]
    fn key_rate_falls_with_loss_for_the_typical_device() {
        let device = DecoyDevice::lim2014_typical();
        let pulses = 1e10;
        let rate = |loss_db: f64| {
            let input = device
                .expected_input(
                    loss_db,
                    pulses,
                    DecoyDevice::TYPICAL_EPS_SEC,
                    DecoyDevice::TYPICAL_EPS_COR,
                )
                .unwrap();
            bound(&input).bits as f64 / pulses
        };
        let (r0, r20) = (rate(0.0), rate(20.0));
        assert!(r0 > 0.0 && r20 > 0.0 && r20 < r0, "{r0} {r20}");
        assert_eq!(rate(60.0), 0.0);
        let mut last = f64::INFINITY;
        for loss in (0..=60).step_by(5) {
            let r = rate(loss as f64);
            assert!(r < last || r == 0.0, "{loss} dB");
            last = r;
        }
    }

    #[test]
    fn invalid_devices_are_errors() {
        let ok = DecoyDevice::lim2014_typical();
        for (device, field) in [
            (DecoyDevice { q_x: 1.5, ..ok }, "q_x"),
            (
                DecoyDevice {
                    eta_bob: -0.1,
                    ..ok
                },
                "eta_bob",
            ),
            (DecoyDevice { p_dc: 2.0, ..ok }, "p_dc"),
            (DecoyDevice { e_mis: 0.6, ..ok }, "e_mis"),
            (DecoyDevice { f_ec: 0.9, ..ok }, "f_ec"),
        ] {
            assert!(
                matches!(
                    expected_statistics(&device, 0.0, 1e6),
                    Err(DecoyError::DeviceParameter { field: f, .. }) if f == field
                ),
                "{field}"
            );
        }
        assert!(matches!(
            expected_statistics(
                &DecoyDevice {
                    f_ec: f64::NAN,
                    ..ok
                },
                0.0,
                1e6
            ),
            Err(DecoyError::NonFinite { field: "f_ec", .. })
        ));
        assert!(matches!(
            expected_statistics(
                &DecoyDevice {
                    intensities: [0.1, 0.2, 0.0],
                    ..ok
                },
                0.0,
                1e6
            ),
            Err(DecoyError::IntensityOrdering { .. })
        ));
        assert!(matches!(
            expected_statistics(&ok, -1.0, 1e6),
            Err(DecoyError::DeviceParameter {
                field: "loss_db",
                ..
            })
        ));
        assert!(matches!(
            expected_statistics(&ok, 0.0, f64::NAN),
            Err(DecoyError::NonFinite {
                field: "pulses",
                ..
            })
        ));
        assert!(matches!(
            expected_statistics(&ok, 0.0, -5.0),
            Err(DecoyError::DeviceParameter {
                field: "pulses",
                ..
            })
        ));
        // Absurd pulse counts saturate instead of panicking.
        let s = expected_statistics(&ok, 0.0, 1e30).unwrap();
        assert_eq!(s.x.detections[0], u64::MAX);
    }
}
