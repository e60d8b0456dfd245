//! Privacy amplification: the finite-key secret length and the Toeplitz hash.
//!
//! Toeplitz convention (DESIGN §4, so two vendors' KMEs get the same bits): for input `x` of
//! `n` bits and output of `m` bits, the seed `s` has `n + m - 1` bits and
//! `T[i][j] = s[i - j + n - 1]` (0 <= i < m, 0 <= j < n); the output is `y = T x` over GF(2).

use qkd_core::BitBlock;
use qkd_core::amplify::{
    Bb84Tlgr2012, FiniteKeyInput, QberLadder, SecretLengthModel, ToeplitzError, binary_entropy,
    seed_bits_needed, toeplitz_hash,
};

use crate::block::{block, block_out, qkd_block};
use crate::buffer::{in_ref, out_ref};
use crate::handle;
use crate::result::{Error, guard, guard_value, qkd_result};

/// Largest Toeplitz input accepted, in bits (2^30; qkd-core's `MAX_INPUT_BITS`, checked equal by
/// a test).
pub const QKD_TOEPLITZ_MAX_INPUT_BITS: usize = 1_073_741_824;

/// What the finite-key bound needs to know about one block.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct qkd_finite_key_input {
    /// n: key bits after the estimation sample was removed (the input to amplification).
    pub key_bits: u64,
    /// k: bits disclosed to estimate the QBER.
    pub sample_bits: u64,
    /// Q_tol: the tolerated QBER the block is sized for, in [0, 0.5], fixed before the sample
    /// was seen (a rung of a ladder of length_choices rungs); the block aborts when its sample
    /// QBER exceeds it.
    pub qber: f64,
    /// leak_EC: bits disclosed by reconciliation on both sides (for Cascade, Alice's parities
    /// plus Bob's key-dependent bits), without the confirmation tag.
    pub leak_ec_bits: u64,
    /// t: confirmation tag bits sent (charged once, as max(t, log2(2/eps_cor))).
    pub confirm_tag_bits: u32,
    /// L >= 1: how many lengths the protocol chooses between (1 for a fixed Q_tol).
    pub length_choices: u32,
    /// Secrecy parameter eps_sec in (0, 1).
    pub eps_sec: f64,
    /// Correctness parameter eps_cor in (0, 1).
    pub eps_cor: f64,
    /// Preparation quality q = -log2 c in (0, 1], c the maximal overlap of the two bases;
    /// 1 for ideal BB84.
    pub preparation_quality: f64,
}

/// A secret length with the terms it was computed from:
/// raw_bits = entropy_bits - leak_ec_bits - confirm_cost_bits - secrecy_cost_bits.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct qkd_secret_length {
    /// Bits privacy amplification may output: max(0, floor(raw_bits)). 0 is a normal outcome
    /// (the block yields no key), not an error.
    pub bits: u64,
    /// The bound before rounding and clamping; negative when the block yields no key.
    pub raw_bits: f64,
    /// The asymptotic length n (1 - h(Q)) - leak_EC - t, for comparison.
    pub asymptotic_bits: f64,
    /// The smoothing parameter eps_sec / (4 L).
    pub eps_smooth: f64,
    /// The statistical allowance mu added to Q_tol.
    pub qber_deviation: f64,
    /// Q_tol + mu, capped at 1/2.
    pub phase_error_bound: f64,
    /// n (q - h(Q_tol + mu)).
    pub entropy_bits: f64,
    /// max(t, log2(2 / eps_cor)).
    pub confirm_cost_bits: f64,
    /// 2 log2(L / eps_sec).
    pub secrecy_cost_bits: f64,
}

/// The finite-key secret length of single-photon BB84 after Tomamichel, Lim, Gisin, Renner,
/// Nat. Commun. 3, 634 (2012) with the constants of docs/security.md (no decoy states): fills
/// `*out`. Invalid inputs (eps outside (0, 1), QBER outside [0, 0.5], k = 0, n = 0, L = 0, q
/// outside (0, 1]) give QKD_ERR_INVALID_ARGUMENT.
///
/// # Safety
/// `input` must be NULL or point to a readable `qkd_finite_key_input`; `out` NULL or a
/// writable `qkd_secret_length`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_secret_length_bb84(
    input: *const qkd_finite_key_input,
    out: *mut qkd_secret_length,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `input` and `out`.
        let (input, out) = unsafe { (in_ref(input, "input")?, out_ref(out, "out")?) };
        let model = Bb84Tlgr2012 {
            preparation_quality: input.preparation_quality,
        };
        let len = model
            .secret_length(&FiniteKeyInput {
                key_bits: input.key_bits,
                sample_bits: input.sample_bits,
                qber: input.qber,
                leak_ec_bits: input.leak_ec_bits,
                confirm_tag_bits: input.confirm_tag_bits,
                length_choices: input.length_choices,
                eps_sec: input.eps_sec,
                eps_cor: input.eps_cor,
            })
            .map_err(|e| Error::invalid(e.to_string()))?;
        *out = qkd_secret_length {
            bits: len.bits,
            raw_bits: len.raw_bits,
            asymptotic_bits: len.asymptotic_bits,
            eps_smooth: len.eps_smooth,
            qber_deviation: len.qber_deviation,
            phase_error_bound: len.phase_error_bound,
            entropy_bits: len.entropy_bits,
            confirm_cost_bits: len.confirm_cost_bits,
            secrecy_cost_bits: len.secrecy_cost_bits,
        };
        Ok(())
    })
}

/// The tolerated QBER a block is sized for: the smallest rung at or above `observed` of the
/// engine's default ladder up to `max_qber` (rungs 0.0025 * 1.1^i, then max_qber; fixed before
/// any sample is seen), in `*rung`, and the ladder's number of rungs (the `length_choices` of
/// `qkd_finite_key_input`) in `*rungs`. A sample QBER above the top rung means the block aborts:
/// `*rung` is then NaN (QKD_OK). max_qber outside (0, 0.5] gives QKD_ERR_INVALID_ARGUMENT.
///
/// # Safety
/// `rung` must be NULL or a writable `double`; `rungs` NULL or a writable `uint32_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_qber_ladder_rung(
    max_qber: f64,
    observed: f64,
    rung: *mut f64,
    rungs: *mut u32,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `rung` and `rungs`.
        let (rung, rungs) = unsafe { (out_ref(rung, "rung")?, out_ref(rungs, "rungs")?) };
        let ladder =
            QberLadder::default_up_to(max_qber).map_err(|e| Error::invalid(e.to_string()))?;
        *rung = ladder.rung_for(observed).unwrap_or(f64::NAN);
        *rungs = ladder.len();
        Ok(())
    })
}

/// Binary entropy h(p) = -p log2 p - (1 - p) log2 (1 - p), with h(0) = h(1) = 0; p is clamped
/// to [0, 1].
#[unsafe(no_mangle)]
pub extern "C" fn qkd_binary_entropy(p: f64) -> f64 {
    guard_value(f64::NAN, || binary_entropy(p))
}

/// Seed length in bits for hashing `input_bits` down to `output_bits`: n + m - 1 (saturating).
#[unsafe(no_mangle)]
pub extern "C" fn qkd_toeplitz_seed_bits(input_bits: usize, output_bits: usize) -> usize {
    guard_value(0, || seed_bits_needed(input_bits, output_bits))
}

/// Toeplitz hash of `input` (n bits) to `output_bits` (m) bits with `seed` (at least n + m - 1
/// bits; extra bits are ignored), by the fastest exact method (NTT, SIMD dispatched at run
/// time). Requires 0 < m < n <= QKD_TOEPLITZ_MAX_INPUT_BITS. The result is a new block in
/// `*out`.
///
/// # Safety
/// `input`, `seed` must be NULL or live handles; `out` NULL or a writable `qkd_block *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_toeplitz_hash(
    input: *const qkd_block,
    seed: *const qkd_block,
    output_bits: usize,
    out: *mut *mut qkd_block,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `out`, `input` and `seed`.
        let (out, input, seed) = unsafe {
            (
                block_out(out, "out")?,
                block(input, "input")?,
                block(seed, "seed")?,
            )
        };
        let hashed: BitBlock = toeplitz_hash(input, seed, output_bits).map_err(|e| {
            let code = match e {
                ToeplitzError::SeedTooShort { .. } => qkd_result::QKD_ERR_LENGTH_MISMATCH,
                _ => qkd_result::QKD_ERR_INVALID_ARGUMENT,
            };
            Error::new(code, e.to_string())
        })?;
        handle::put(out, hashed);
        Ok(())
    })
}
