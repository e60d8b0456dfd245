//! Secret key length with finite-size effects: how many bits privacy amplification may output.
//!
//! A model implements [`SecretLengthModel`]; [`Bb84Tlgr2012`] is the bound of Tomamichel,
//! Lim, Gisin, Renner, "Tight finite-key analysis for quantum cryptography", Nat. Commun. 3,
//! 634 (2012). A decoy-state model (Lim, Curty, Walenta, Xu, Zbinden, PRA 89, 022307 (2014))
//! can be added beside it behind the same trait; its inputs would extend [`FiniteKeyInput`].
//!
//! A zero or negative length is a normal outcome (the block yields no key): it comes back as
//! `bits == 0` with the unrounded value in [`SecretLength::raw_bits`]. Only invalid inputs are
//! errors.

use serde::Serialize;

/// Invalid inputs to a secret-length model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FiniteKeyError {
    /// A security parameter is not strictly between 0 and 1.
    #[error("{name} = {value} is outside (0, 1)")]
    EpsilonOutOfRange {
        /// Which parameter (`eps_sec` or `eps_cor`).
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// The QBER is not a number in `[0, 0.5]`.
    #[error("QBER {0} is outside [0, 0.5]")]
    QberOutOfRange(f64),
    /// The parameter-estimation sample is empty.
    #[error("sample size k = 0; the QBER bound needs k >= 1 sampled bits")]
    EmptySample,
    /// No key bits remain after sampling.
    #[error("key length n = 0; the bound needs n >= 1 key bits")]
    EmptyKey,
}

/// What a model needs to know about one block.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FiniteKeyInput {
    /// `n`: key bits after the sample was removed (the input to privacy amplification).
    pub key_bits: u64,
    /// `k`: bits disclosed to estimate the QBER.
    pub sample_bits: u64,
    /// QBER observed on the sample, in `[0, 0.5]`.
    pub qber: f64,
    /// `leak_EC`: bits revealed by reconciliation plus the confirmation tag.
    pub leak_ec_bits: u64,
    /// Secrecy parameter `eps_sec` in (0, 1).
    pub eps_sec: f64,
    /// Correctness parameter `eps_cor` in (0, 1).
    pub eps_cor: f64,
}

/// A secret length with the terms it was computed from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SecretLength {
    /// Bits privacy amplification may output: `max(0, floor(raw_bits))`.
    pub bits: u64,
    /// The bound before rounding and clamping; negative when the block yields no key.
    pub raw_bits: f64,
    /// The asymptotic length `n (1 - h(Q)) - leak_EC` for comparison (no finite-size terms).
    pub asymptotic_bits: f64,
    /// The statistical allowance `mu` added to the observed QBER.
    pub qber_deviation: f64,
    /// The privacy-amplification cost `log2(2 / (eps_sec^2 eps_cor))`.
    pub pa_cost_bits: f64,
}

/// A finite-key secret-length bound.
pub trait SecretLengthModel {
    /// Short name for reports.
    fn name(&self) -> &'static str;
    /// The secret length for one block; `Err` only for invalid inputs.
    fn secret_length(&self, input: &FiniteKeyInput) -> Result<SecretLength, FiniteKeyError>;
}

/// Binary entropy `h(p) = -p log2 p - (1 - p) log2 (1 - p)`, with `h(0) = h(1) = 0`; inputs
/// are clamped to `[0, 1]`.
pub fn binary_entropy(p: f64) -> f64 {
    let p = p.clamp(0.0, 1.0);
    if p == 0.0 || p == 1.0 {
        0.0
    } else {
        -p * p.log2() - (1.0 - p) * (1.0 - p).log2()
    }
}

/// BB84 finite-key bound of Tomamichel, Lim, Gisin, Renner (Nat. Commun. 3, 634 (2012)):
///
/// ```text
/// l = n (q - h(Q + mu)) - leak_EC - log2(2 / (eps_sec^2 eps_cor)),
/// mu = sqrt( (n + k) / (n k) * (k + 1) / k * ln(2 / eps_sec) ),
/// ```
///
/// with `h` the binary entropy (`h(x) = 1` for `x >= 1/2`), `n` the key bits, `k` the sample
/// bits, `Q` the QBER and `q` the preparation quality (`q = 1` for BB84 with ideal,
/// mutually unbiased bases, the default). The protocol is then `eps_cor`-correct and
/// `eps_sec`-secret (secrecy against general, coherent attacks).
///
/// Assumptions: single-photon BB84 (no multi-photon pulses, hence **no decoy states**: a weak
/// laser source needs the decoy-state bound instead); `Q` stands for the tolerated QBER
/// `Q_tol` of the paper (a block is processed only if its sample QBER does not exceed it; we
/// use the observed value); the sample is chosen uniformly at random and disclosed; the
/// detectors are characterised by `q` (any detection-efficiency mismatch or side channel is
/// outside the model); `leak_EC` counts every bit disclosed about the key after sampling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bb84Tlgr2012 {
    /// Preparation quality `q = -log2 c`, `c` the maximal overlap of the two bases (1 for
    /// ideal BB84).
    pub preparation_quality: f64,
}

impl Default for Bb84Tlgr2012 {
    fn default() -> Self {
        Self {
            preparation_quality: 1.0,
        }
    }
}

fn check_eps(name: &'static str, value: f64) -> Result<(), FiniteKeyError> {
    if value > 0.0 && value < 1.0 {
        Ok(())
    } else {
        Err(FiniteKeyError::EpsilonOutOfRange { name, value })
    }
}

impl SecretLengthModel for Bb84Tlgr2012 {
    fn name(&self) -> &'static str {
        "bb84-tlgr2012"
    }

    fn secret_length(&self, input: &FiniteKeyInput) -> Result<SecretLength, FiniteKeyError> {
        check_eps("eps_sec", input.eps_sec)?;
        check_eps("eps_cor", input.eps_cor)?;
        if !(0.0..=0.5).contains(&input.qber) {
            return Err(FiniteKeyError::QberOutOfRange(input.qber));
        }
        if input.sample_bits == 0 {
            return Err(FiniteKeyError::EmptySample);
        }
        if input.key_bits == 0 {
            return Err(FiniteKeyError::EmptyKey);
        }
        let n = input.key_bits as f64;
        let k = input.sample_bits as f64;
        let leak = input.leak_ec_bits as f64;
        let mu = ((n + k) / (n * k) * ((k + 1.0) / k) * (2.0 / input.eps_sec).ln()).sqrt();
        let q_bound = input.qber + mu;
        let h = if q_bound >= 0.5 {
            1.0
        } else {
            binary_entropy(q_bound)
        };
        let pa_cost = 1.0 - 2.0 * input.eps_sec.log2() - input.eps_cor.log2();
        let raw = n * (self.preparation_quality - h) - leak - pa_cost;
        let asymptotic = n * (1.0 - binary_entropy(input.qber)) - leak;
        let bits = if raw >= 1.0 { raw.floor() as u64 } else { 0 };
        Ok(SecretLength {
            bits,
            raw_bits: raw,
            asymptotic_bits: asymptotic,
            qber_deviation: mu,
            pa_cost_bits: pa_cost,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(n: u64, k: u64, qber: f64, leak: u64) -> FiniteKeyInput {
        FiniteKeyInput {
            key_bits: n,
            sample_bits: k,
            qber,
            leak_ec_bits: leak,
            eps_sec: 1e-10,
            eps_cor: 1e-15,
        }
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn binary_entropy_values() {
        assert_eq!(binary_entropy(0.0), 0.0);
        assert_eq!(binary_entropy(1.0), 0.0);
        assert!(close(binary_entropy(0.5), 1.0, 1e-15));
        // h(1/4) = 1/4 * 2 + 3/4 * log2(4/3) = 0.5 + 0.75 * 0.415037... = 0.811278...
        assert!(close(binary_entropy(0.25), 0.811_278_124_459_133, 1e-12));
        assert!(close(binary_entropy(0.3), binary_entropy(0.7), 1e-15));
    }

    #[test]
    fn a_million_bit_block_at_two_percent() {
        // n = 10^6, k = 10^5, Q = 0.02, leak = 150000, eps_sec = 1e-10, eps_cor = 1e-15.
        // (n + k)/(n k) = 1.1e6 / 1e11 = 1.1e-5;  (k + 1)/k = 1.00001;
        // ln(2 / 1e-10) = ln 2 + 10 ln 10 = 0.693147 + 23.025851 = 23.718998;
        // mu^2 = 1.1e-5 * 1.00001 * 23.718998 = 2.609116e-4, mu = 0.0161528.
        // Q + mu = 0.0361528, h(0.0361528) = 0.0361528 * 4.78974 + 0.963847 * 0.053108
        //        = 0.173162 + 0.051188 = 0.224350 (to the digits shown; 0.2243657 exactly).
        // PA cost = log2(2 / (1e-20 * 1e-15)) = 1 + 35 log2 10 = 1 + 116.26748 = 117.26748.
        // l = 10^6 * (1 - 0.2243657) - 150000 - 117.26748 = 775634.29 - 150117.27 = 625517.03.
        // Asymptotic: h(0.02) = 0.1414405, 10^6 * 0.8585595 - 150000 = 708559.5.
        let r = Bb84Tlgr2012::default()
            .secret_length(&input(1_000_000, 100_000, 0.02, 150_000))
            .unwrap();
        assert!(close(r.qber_deviation, 0.016_152_76, 1e-7), "{r:?}");
        assert!(close(r.pa_cost_bits, 117.267_483, 1e-5), "{r:?}");
        assert!(close(r.raw_bits, 625_517.03, 0.05), "{r:?}");
        assert_eq!(r.bits, 625_517);
        assert!(close(r.asymptotic_bits, 708_559.46, 0.05), "{r:?}");
    }

    #[test]
    fn a_small_noisy_block_yields_no_key() {
        // n = 10^4, k = 10^3, Q = 0.05, leak = 3000: mu^2 = 1.1e-3 * 1.001 * 23.718998
        // = 0.0261168, mu = 0.161608; h(0.211608) = 0.744544;
        // l = 10^4 * 0.255456 - 3000 - 117.27 = 2554.56 - 3117.27 = -562.7: no key, not an
        // error. Asymptotically: 10^4 * (1 - 0.286397) - 3000 = 4136.0 would be positive.
        let r = Bb84Tlgr2012::default()
            .secret_length(&input(10_000, 1_000, 0.05, 3_000))
            .unwrap();
        assert_eq!(r.bits, 0);
        assert!(close(r.raw_bits, -562.71, 0.05), "{r:?}");
        assert!(close(r.asymptotic_bits, 4136.03, 0.05), "{r:?}");
    }

    #[test]
    fn qber_bound_past_one_half_counts_as_full_entropy() {
        // Q + mu > 1/2: h is 1, so l = -leak - PA cost exactly.
        let r = Bb84Tlgr2012::default()
            .secret_length(&input(100, 10, 0.45, 7))
            .unwrap();
        assert_eq!(r.bits, 0);
        assert!(close(r.raw_bits, -7.0 - 117.267_483, 1e-5), "{r:?}");
    }

    #[test]
    fn invalid_inputs_are_errors() {
        let m = Bb84Tlgr2012::default();
        let ok = input(1000, 100, 0.01, 10);
        for eps in [0.0, 1.0, -1e-9, f64::NAN] {
            assert!(matches!(
                m.secret_length(&FiniteKeyInput { eps_sec: eps, ..ok }),
                Err(FiniteKeyError::EpsilonOutOfRange {
                    name: "eps_sec",
                    ..
                })
            ));
            assert!(matches!(
                m.secret_length(&FiniteKeyInput { eps_cor: eps, ..ok }),
                Err(FiniteKeyError::EpsilonOutOfRange {
                    name: "eps_cor",
                    ..
                })
            ));
        }
        for q in [-0.01, 0.5001, f64::NAN] {
            assert!(matches!(
                m.secret_length(&FiniteKeyInput { qber: q, ..ok }),
                Err(FiniteKeyError::QberOutOfRange(_))
            ));
        }
        assert_eq!(
            m.secret_length(&FiniteKeyInput {
                sample_bits: 0,
                ..ok
            }),
            Err(FiniteKeyError::EmptySample)
        );
        assert_eq!(
            m.secret_length(&FiniteKeyInput { key_bits: 0, ..ok }),
            Err(FiniteKeyError::EmptyKey)
        );
        assert!(m.secret_length(&ok).is_ok());
        assert_eq!(m.name(), "bb84-tlgr2012");
    }
}
