//! QBER estimation: Alice discloses a random sample of her key, Bob compares it with his.
//!
//! Alice: `qkd_sample_disclose` -> message bytes (send to Bob) and her key minus the sample.
//! Bob: `qkd_sample_compare` on those bytes -> the estimate and his key minus the sample.
//! Both keys lose the same positions, so they stay aligned.

use qkd_core::estimate::{
    Bound, EstimateError, QberEstimate, SampleMessage, compare_sample, disclose_sample,
    qber_upper_bound,
};

use crate::block::{block, block_out, qkd_block};
use crate::buffer::{in_seed, in_slice, out_ref, to_usize, write_bytes};
use crate::handle;
use crate::result::{Error, FfiResult, guard, qkd_result};

/// Which confidence bound to put on the QBER of the remaining bits.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum qkd_bound {
    /// The exact hypergeometric tail (tightest; the recommended default).
    QKD_BOUND_HYPERGEOMETRIC = 0,
    /// Serfling's inequality (Tomamichel et al. 2012): closed form, looser.
    QKD_BOUND_SERFLING = 1,
}

/// The outcome of comparing a disclosed sample.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct qkd_qber_estimate {
    /// Key length before sampling, in bits.
    pub n: u64,
    /// Sampled (disclosed and removed) bits.
    pub k: u64,
    /// Positions in the sample where the two sides differ.
    pub errors: u64,
    /// errors / k.
    pub observed_qber: f64,
    /// Bits left after the sample is removed, n - k.
    pub remaining_bits: u64,
    /// Failure probability of the bound.
    pub eps: f64,
    /// The bound used (a qkd_bound value).
    pub bound: qkd_bound,
    /// Upper bound on the error rate of the remaining bits, except with probability eps.
    pub qber_upper: f64,
}

fn bound_from(v: u32) -> FfiResult<Bound> {
    match v {
        0 => Ok(Bound::Hypergeometric),
        1 => Ok(Bound::Serfling),
        _ => Err(Error::invalid(format!(
            "bound {v} is unknown; expected QKD_BOUND_HYPERGEOMETRIC (0) or QKD_BOUND_SERFLING (1)"
        ))),
    }
}

fn estimate_error(e: EstimateError) -> Error {
    let code = match e {
        EstimateError::Decode(_)
        | EstimateError::UnsupportedVersion { .. }
        | EstimateError::MalformedSample { .. } => qkd_result::QKD_ERR_MALFORMED_MESSAGE,
        EstimateError::KeyLengthMismatch { .. } => qkd_result::QKD_ERR_LENGTH_MISMATCH,
        _ => qkd_result::QKD_ERR_INVALID_ARGUMENT,
    };
    Error::new(code, e.to_string())
}

impl From<QberEstimate> for qkd_qber_estimate {
    fn from(e: QberEstimate) -> Self {
        Self {
            n: e.n,
            k: e.k,
            errors: e.errors,
            observed_qber: e.observed_qber,
            remaining_bits: e.remaining_bits,
            eps: e.eps,
            bound: match e.bound {
                Bound::Serfling => qkd_bound::QKD_BOUND_SERFLING,
                Bound::Hypergeometric => qkd_bound::QKD_BOUND_HYPERGEOMETRIC,
            },
            qber_upper: e.qber_upper,
        }
    }
}

/// Alice's side: draws `k` positions of `key` from the public `seed` (`QKD_SEED_LEN` bytes;
/// fresh from qkd_random_seed in production), writes the message for Bob (her bits there and
/// the seed) into `msg_buf`, its length into `*msg_len`, and her key without the sample into
/// `*rest_out`. Requires 0 < k < key length. With `msg_cap` too small:
/// QKD_ERR_BUFFER_TOO_SHORT, `*msg_len` = bytes needed, and no block is created (call again).
///
/// # Safety
/// `key` must be NULL or a live handle; `seed` NULL or 32 readable bytes; `msg_buf` NULL or
/// `msg_cap` writable bytes; `msg_len` NULL or a writable `size_t`; `rest_out` NULL or a
/// writable `qkd_block *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_sample_disclose(
    key: *const qkd_block,
    k: usize,
    seed: *const u8,
    msg_buf: *mut u8,
    msg_cap: usize,
    msg_len: *mut usize,
    rest_out: *mut *mut qkd_block,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on the out-parameters.
        let (rest_out, msg_len) = unsafe {
            (
                block_out(rest_out, "rest_out")?,
                out_ref(msg_len, "msg_len")?,
            )
        };
        // SAFETY: caller contract on `key` and `seed`.
        let (key, seed) = unsafe { (block(key, "key")?, in_seed(seed, "seed")?) };
        let (msg, rest) = disclose_sample(key, k, seed).map_err(estimate_error)?;
        let bytes = msg.to_bytes();
        // SAFETY: caller contract on `msg_buf`.
        unsafe { write_bytes(&bytes, msg_buf, msg_cap, msg_len) }?;
        handle::put(rest_out, rest);
        Ok(())
    })
}

/// Bob's side: checks Alice's message (`msg`, `msg_len` bytes) against `key`, counts the
/// errors in the sample, bounds the remaining bits' error rate at failure probability `eps`
/// (in (0, 1)) with `bound` (a qkd_bound value), fills `*estimate_out`, and stores his key
/// without the sample in `*rest_out`. Garbage bytes give QKD_ERR_MALFORMED_MESSAGE; a message
/// for a key of another length QKD_ERR_LENGTH_MISMATCH.
///
/// # Safety
/// `key` must be NULL or a live handle; `msg` NULL or `msg_len` readable bytes;
/// `estimate_out` NULL or a writable `qkd_qber_estimate`; `rest_out` NULL or a writable
/// `qkd_block *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_sample_compare(
    key: *const qkd_block,
    msg: *const u8,
    msg_len: usize,
    eps: f64,
    bound: u32,
    estimate_out: *mut qkd_qber_estimate,
    rest_out: *mut *mut qkd_block,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on the out-parameters.
        let (rest_out, est_out) = unsafe {
            (
                block_out(rest_out, "rest_out")?,
                out_ref(estimate_out, "estimate_out")?,
            )
        };
        // SAFETY: caller contract on `key` and `msg`.
        let (key, bytes) = unsafe { (block(key, "key")?, in_slice(msg, msg_len, "msg")?) };
        let bound = bound_from(bound)?;
        let msg = SampleMessage::from_bytes(bytes).map_err(estimate_error)?;
        let (est, rest) = compare_sample(key, &msg, eps, bound).map_err(estimate_error)?;
        *est_out = est.into();
        handle::put(rest_out, rest);
        Ok(())
    })
}

/// The estimate for `errors` errors seen in a `k`-bit sample of an `n`-bit key (for Alice once
/// Bob reports his error count, or for planning): fills `*estimate_out`.
///
/// # Safety
/// `estimate_out` must be NULL or point to a writable `qkd_qber_estimate`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_qber_estimate_from_counts(
    n: u64,
    k: u64,
    errors: u64,
    eps: f64,
    bound: u32,
    estimate_out: *mut qkd_qber_estimate,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `estimate_out`.
        let out = unsafe { out_ref(estimate_out, "estimate_out") }?;
        to_usize(n, "n")?;
        let est =
            QberEstimate::new(n, k, errors, eps, bound_from(bound)?).map_err(estimate_error)?;
        *out = est.into();
        Ok(())
    })
}

/// Stores in `*out` the upper bound on the error rate of the `n - k` bits left after `errors`
/// errors were seen in a uniformly random `k`-bit sample of `n` bits, failing with probability
/// at most `eps`.
///
/// # Safety
/// `out` must be NULL or point to a writable `double`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_qber_upper_bound(
    n: u64,
    k: u64,
    errors: u64,
    eps: f64,
    bound: u32,
    out: *mut f64,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `out`.
        let out = unsafe { out_ref(out, "out") }?;
        *out = qber_upper_bound(n, k, errors, eps, bound_from(bound)?).map_err(estimate_error)?;
        Ok(())
    })
}
