//! Secret key length with finite-size effects: how many bits privacy amplification may output.
//!
//! A model implements [`SecretLengthModel`]: [`Bb84Tlgr2012`] is the ideal-qubit BB84 bound of
//! Tomamichel, Lim, Gisin, Renner, "Tight finite-key analysis for quantum cryptography",
//! Nat. Commun. 3, 634 (2012), arXiv:1103.4130 (for simulations and single-photon sources);
//! [`super::decoy::Lim2014`] is the decoy-state bound of Lim, Curty, Walenta, Xu, Zbinden,
//! PRA 89, 022307 (2014) (for weak-coherent-pulse devices). docs/security.md states every term,
//! its source and its assumptions.
//!
//! A zero or negative length is a normal outcome (the block yields no key): it comes back as
//! `bits == 0` with the unrounded value in `raw_bits`. Only invalid inputs are errors.

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
    /// The number of lengths the protocol chooses between is zero.
    #[error("length_choices = 0; expected at least 1 (1 for a fixed tolerated QBER)")]
    NoLengthChoices,
    /// The preparation quality is not in `(0, 1]`.
    #[error("preparation quality q = {0} is outside (0, 1]; 1 is ideal BB84")]
    PreparationQualityOutOfRange(f64),
    /// A QBER ladder that is not strictly increasing in `(0, 0.5]`.
    #[error("invalid QBER ladder: {0}")]
    BadLadder(String),
}

/// A finite-key secret-length model: from what one block (or one run) observed to the number
/// of secret bits.
pub trait SecretLengthModel {
    /// What the model needs to know.
    type Input;
    /// The length with every term it was computed from.
    type Bound: SecretLengthBound;
    /// Invalid inputs.
    type Error: std::error::Error;
    /// Short name for reports (`bb84-tlgr2012`, `decoy-lim2014`).
    fn name(&self) -> &'static str;
    /// The secret length; `Err` only for invalid inputs.
    fn secret_length(&self, input: &Self::Input) -> Result<Self::Bound, Self::Error>;
}

/// What every model's result offers, beside its own terms.
pub trait SecretLengthBound: Serialize {
    /// Bits privacy amplification may output: `max(0, floor(raw_bits))`.
    fn bits(&self) -> u64;
    /// The bound before rounding and clamping; negative when no key can be made.
    fn raw_bits(&self) -> f64;
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

/// `max(0, floor(raw))` as a bit count.
pub(crate) fn whole_bits(raw: f64) -> u64 {
    if raw >= 1.0 { raw.floor() as u64 } else { 0 }
}

fn check_eps(name: &'static str, value: f64) -> Result<(), FiniteKeyError> {
    if value > 0.0 && value < 1.0 {
        Ok(())
    } else {
        Err(FiniteKeyError::EpsilonOutOfRange { name, value })
    }
}

/// What [`Bb84Tlgr2012`] needs to know about one block.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FiniteKeyInput {
    /// `n`: key bits after the sample was removed (the input to privacy amplification).
    pub key_bits: u64,
    /// `k`: bits disclosed to estimate the QBER.
    pub sample_bits: u64,
    /// `Q_tol`: the tolerated QBER the block is sized for, in `[0, 0.5]`. It must be fixed
    /// before the sample is seen (a rung of a [`super::QberLadder`]), and the block must abort
    /// when its sample QBER exceeds it; the sample QBER itself is only a valid choice with
    /// `length_choices` counting every value it could take.
    pub qber: f64,
    /// `leak_EC`: bits disclosed by reconciliation, by both sides (for Cascade, Alice's
    /// parities plus Bob's; docs/security.md), without the confirmation tag.
    pub leak_ec_bits: u64,
    /// `t`: length of the confirmation tag actually sent (charged as `max(t, log2(2/eps_cor))`,
    /// once).
    pub confirm_tag_bits: u32,
    /// `L`: how many lengths the protocol chooses between before this block (the rungs of its
    /// QBER ladder); 1 for a single fixed `Q_tol`. Each choice runs at `eps_sec / L`.
    pub length_choices: u32,
    /// Secrecy parameter `eps_sec` in (0, 1).
    pub eps_sec: f64,
    /// Correctness parameter `eps_cor` in (0, 1).
    pub eps_cor: f64,
}

/// A [`Bb84Tlgr2012`] length with every term it was computed from:
/// `raw_bits = entropy_bits - leak_ec_bits - confirm_cost_bits - secrecy_cost_bits`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SecretLength {
    /// Bits privacy amplification may output: `max(0, floor(raw_bits))`.
    pub bits: u64,
    /// The bound before rounding and clamping; negative when the block yields no key.
    pub raw_bits: f64,
    /// The asymptotic length `n (1 - h(Q)) - leak_EC - t` for comparison (no finite-size
    /// terms).
    pub asymptotic_bits: f64,
    /// `eps = eps_sec / (4 L)`: the smoothing parameter of each of the `L` choices.
    pub eps_smooth: f64,
    /// The statistical allowance `mu` added to `Q_tol`.
    pub qber_deviation: f64,
    /// `Q_tol + mu` (the phase-error bound the entropy is computed at).
    pub phase_error_bound: f64,
    /// `n (q - h(Q_tol + mu))`: the smooth min-entropy bound before any disclosure.
    pub entropy_bits: f64,
    /// `leak_EC` as given (reconciliation, both sides).
    pub leak_ec_bits: u64,
    /// `max(t, log2(2 / eps_cor))`: the confirmation, charged once.
    pub confirm_cost_bits: f64,
    /// `2 log2(L / eps_sec)`: the leftover-hash cost at `eps_PA = eps_sec / (2 L)`.
    pub secrecy_cost_bits: f64,
}

impl SecretLengthBound for SecretLength {
    fn bits(&self) -> u64 {
        self.bits
    }
    fn raw_bits(&self) -> f64 {
        self.raw_bits
    }
}

/// BB84 finite-key bound of Tomamichel, Lim, Gisin, Renner (Nat. Commun. 3, 634 (2012);
/// Supplementary Theorem 2 with Lemma 3), with its constants composed exactly:
///
/// ```text
/// l   = n (q - h(Q_tol + mu)) - leak_EC - max(t, log2(2 / eps_cor)) - 2 log2(L / eps_sec),
/// mu  = sqrt( (n + k) / (n k) * (k + 1) / k * ln(4 L / eps_sec) ),
/// ```
///
/// with `h` the binary entropy (`h(x) = 1` for `x >= 1/2`), `n` the key bits, `k` the sample
/// bits, `Q_tol` the tolerated QBER, `t` the confirmation tag length, `L` the number of
/// lengths the protocol chooses between (the rungs of a [`super::QberLadder`]; 1 for a fixed
/// `Q_tol`) and `q` the preparation quality (`q = 1` for ideal BB84, the default).
///
/// Why these constants (docs/security.md works them out): secrecy needs `2 eps + eps_PA <=
/// eps_sec` for each choice; the paper's `log2(2/(eps_sec^2 eps_cor))` term fixes
/// `eps_PA = eps_sec / 2`, so `eps = eps_sec / 4` and Serfling's bound at failure `eps^2`
/// gives `ln(4 / eps_sec)` (the main text's `ln(2 / eps_sec)` would deliver `1.5 eps_sec`).
/// With `L` choices each runs at `eps_sec / L`. The term `log2(2/eps_cor)` pays for the
/// confirmation hash; a tag longer than that is charged at its real length, and the tag is
/// not counted again in `leak_EC`.
///
/// Assumptions: single-photon BB84 (no multi-photon pulses, hence **no decoy states**: a weak
/// laser source needs [`super::decoy::Lim2014`]); the `k` sample bits are a uniformly random
/// subset, disclosed and dropped; their bit-error rate estimates the phase-error rate of the
/// key bits, which holds for symmetric BB84 with independent uniform basis choices whose two
/// bases show the same error rate (otherwise the sample must come from the other basis);
/// the detectors are characterised by `q` (detection-efficiency mismatch and side channels
/// are outside the model); `leak_EC` counts every bit either side disclosed about its key
/// after sampling.
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

impl SecretLengthModel for Bb84Tlgr2012 {
    type Input = FiniteKeyInput;
    type Bound = SecretLength;
    type Error = FiniteKeyError;

    fn name(&self) -> &'static str {
        "bb84-tlgr2012"
    }

    fn secret_length(&self, input: &FiniteKeyInput) -> Result<SecretLength, FiniteKeyError> {
        check_eps("eps_sec", input.eps_sec)?;
        check_eps("eps_cor", input.eps_cor)?;
        let q = self.preparation_quality;
        if !(q > 0.0 && q <= 1.0) {
            return Err(FiniteKeyError::PreparationQualityOutOfRange(q));
        }
        if !(0.0..=0.5).contains(&input.qber) {
            return Err(FiniteKeyError::QberOutOfRange(input.qber));
        }
        if input.sample_bits == 0 {
            return Err(FiniteKeyError::EmptySample);
        }
        if input.key_bits == 0 {
            return Err(FiniteKeyError::EmptyKey);
        }
        if input.length_choices == 0 {
            return Err(FiniteKeyError::NoLengthChoices);
        }
        let n = input.key_bits as f64;
        let k = input.sample_bits as f64;
        let choices = f64::from(input.length_choices);
        let leak = input.leak_ec_bits as f64;
        let eps_smooth = input.eps_sec / (4.0 * choices);
        let mu = ((n + k) / (n * k) * ((k + 1.0) / k) * (1.0 / eps_smooth).ln()).sqrt();
        let phase_error_bound = (input.qber + mu).min(0.5);
        let entropy = n * (q - binary_entropy(phase_error_bound));
        let confirm_cost = f64::from(input.confirm_tag_bits).max(1.0 - input.eps_cor.log2());
        let secrecy_cost = 2.0 * (choices / input.eps_sec).log2();
        let raw = entropy - leak - confirm_cost - secrecy_cost;
        let asymptotic =
            n * (1.0 - binary_entropy(input.qber)) - leak - f64::from(input.confirm_tag_bits);
        Ok(SecretLength {
            bits: whole_bits(raw),
            raw_bits: raw,
            asymptotic_bits: asymptotic,
            eps_smooth,
            qber_deviation: mu,
            phase_error_bound,
            entropy_bits: entropy,
            leak_ec_bits: input.leak_ec_bits,
            confirm_cost_bits: confirm_cost,
            secrecy_cost_bits: secrecy_cost,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(n: u64, k: u64, qber: f64, leak: u64, tag: u32, choices: u32) -> FiniteKeyInput {
        FiniteKeyInput {
            key_bits: n,
            sample_bits: k,
            qber,
            leak_ec_bits: leak,
            confirm_tag_bits: tag,
            length_choices: choices,
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

    /// The issue's reference case (docs/security.md, "Worked example"): n = 10^6, k = 10^5,
    /// 2000 sample errors (Q_tol = 2 %, fixed in advance: L = 1), leak_EC = 150000, a 50-bit
    /// tag, eps_sec = 1e-10, eps_cor = 1e-15.
    #[test]
    fn a_million_bit_block_at_two_percent_by_hand() {
        // eps = eps_sec / 4 = 2.5e-11; ln(1/eps) = ln 4 + 10 ln 10 = 1.386294 + 23.025851
        //   = 24.412145;
        // (n + k)/(n k) = 1.1e6 / 1e11 = 1.1e-5;  (k + 1)/k = 1.00001;
        // mu^2 = 1.1e-5 * 1.00001 * 24.412145 = 2.685363e-4, mu = 0.0163871.
        // Q + mu = 0.0363871; h(0.0363871) = 0.0363871 * log2(1/0.0363871)
        //   + 0.9636129 * log2(1/0.9636129) = 0.0363871 * 4.780399 + 0.9636129 * 0.053474
        //   = 0.173945 + 0.051529 = 0.225474 (0.2254745 to more digits);
        // entropy = 10^6 * (1 - 0.2254745) = 774525.5.
        // Confirmation: log2(2 / 1e-15) = 1 + 15 log2 10 = 1 + 49.828921 = 50.828921 > t = 50.
        // Secrecy: 2 log2(1 / 1e-10) = 20 log2 10 = 66.438562.
        // l = 774525.55 - 150000 - 50.83 - 66.44 = 624408.28 -> 624408 bits.
        // Before the fix (ln(2/eps_sec), the tag also in leak_EC): 625467 bits, 1059 more.
        let r = Bb84Tlgr2012::default()
            .secret_length(&input(
                1_000_000,
                100_000,
                2000.0 / 100_000.0,
                150_000,
                50,
                1,
            ))
            .unwrap();
        assert!(close(r.eps_smooth, 2.5e-11, 1e-24), "{r:?}");
        assert!(close(r.qber_deviation, 0.016_387_08, 1e-7), "{r:?}");
        assert!(close(r.phase_error_bound, 0.036_387_08, 1e-7), "{r:?}");
        assert!(close(r.entropy_bits, 774_525.55, 0.05), "{r:?}");
        assert!(close(r.confirm_cost_bits, 50.828_921, 1e-5), "{r:?}");
        assert!(close(r.secrecy_cost_bits, 66.438_562, 1e-5), "{r:?}");
        assert!(close(r.raw_bits, 624_408.28, 0.05), "{r:?}");
        assert_eq!(r.bits, 624_408);
        // Asymptotic: 10^6 (1 - h(0.02)) - 150000 - 50 = 858559.46 - 150050 = 708509.46.
        assert!(close(r.asymptotic_bits, 708_509.46, 0.05), "{r:?}");
    }

    #[test]
    fn a_ladder_of_41_rungs_costs_its_share_of_eps() {
        // The default ladder (41 rungs) sizes a 2 % sample for Q_tol = 0.0025 * 1.1^22
        // = 0.0203507, each rung at eps_sec / 41:
        // ln(4 * 41 / 1e-10) = ln(1.64e12) = 28.125717; mu^2 = 1.100011e-5 * 28.125717
        //   = 3.093860e-4, mu = 0.0175894; Q_tol + mu = 0.0379401, h = 0.2327664;
        // entropy = 767233.62; secrecy = 2 log2(41e10) = 66.438562 + 2 log2 41 = 77.153666;
        // l = 767233.62 - 150000 - 50.83 - 77.15 = 617105.64.
        let ladder = super::super::QberLadder::default_up_to(0.11).unwrap();
        let q_tol = ladder.rung_for(0.02).unwrap();
        let r = Bb84Tlgr2012::default()
            .secret_length(&input(1_000_000, 100_000, q_tol, 150_000, 50, ladder.len()))
            .unwrap();
        assert!(close(r.qber_deviation, 0.017_589_37, 1e-7), "{r:?}");
        assert!(close(r.secrecy_cost_bits, 77.153_666, 1e-5), "{r:?}");
        assert!(close(r.raw_bits, 617_105.64, 0.05), "{r:?}");
        assert_eq!(r.bits, 617_105);
    }

    #[test]
    fn a_tag_longer_than_log2_2_over_eps_cor_is_charged_at_its_length() {
        // Same block with a 64-bit tag: confirm cost 64 instead of 50.83, so 13.17 bits less:
        // 624408.28 - 13.17 = 624395.11.
        let r = Bb84Tlgr2012::default()
            .secret_length(&input(1_000_000, 100_000, 0.02, 150_000, 64, 1))
            .unwrap();
        assert_eq!(r.confirm_cost_bits, 64.0);
        assert!(close(r.raw_bits, 624_395.11, 0.05), "{r:?}");
    }

    #[test]
    fn a_small_noisy_block_yields_no_key() {
        // n = 10^4, k = 10^3, Q = 0.05, leak = 3000, t = 40: mu^2 = 1.1e-3 * 1.001 * 24.412145
        // = 0.0268802, mu = 0.163952; h(0.213952) = 0.748969; entropy = 2510.31;
        // l = 2510.31 - 3000 - 50.83 - 66.44 = -606.96: no key, not an error.
        // Asymptotically: 10^4 * (1 - 0.286397) - 3040 = 4096.03 would be positive.
        let r = Bb84Tlgr2012::default()
            .secret_length(&input(10_000, 1_000, 0.05, 3_000, 40, 1))
            .unwrap();
        assert_eq!(r.bits, 0);
        assert!(close(r.raw_bits, -606.96, 0.05), "{r:?}");
        assert!(close(r.asymptotic_bits, 4096.03, 0.05), "{r:?}");
    }

    #[test]
    fn qber_bound_past_one_half_counts_as_full_entropy() {
        // Q + mu > 1/2: h is 1, so l = -leak - costs exactly.
        let r = Bb84Tlgr2012::default()
            .secret_length(&input(100, 10, 0.45, 7, 0, 1))
            .unwrap();
        assert_eq!(r.bits, 0);
        assert_eq!(r.phase_error_bound, 0.5);
        assert!(
            close(r.raw_bits, -7.0 - 50.828_921 - 66.438_562, 1e-5),
            "{r:?}"
        );
    }

    #[test]
    fn invalid_inputs_are_errors() {
        let m = Bb84Tlgr2012::default();
        let ok = input(1000, 100, 0.01, 10, 20, 1);
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
        assert_eq!(
            m.secret_length(&FiniteKeyInput {
                length_choices: 0,
                ..ok
            }),
            Err(FiniteKeyError::NoLengthChoices)
        );
        for q in [0.0, 1.5, f64::NAN] {
            assert!(matches!(
                Bb84Tlgr2012 {
                    preparation_quality: q
                }
                .secret_length(&ok),
                Err(FiniteKeyError::PreparationQualityOutOfRange(_))
            ));
        }
        assert!(m.secret_length(&ok).is_ok());
        assert_eq!(m.name(), "bb84-tlgr2012");
    }
}
