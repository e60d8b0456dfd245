//! Key confirmation after reconciliation: Alice sends a universal-hash tag of her key (a
//! polynomial hash over GF(2^128), tags of 1 to 128 bits) with a fresh seed, Bob compares it
//! with his and answers; a mismatch means the block must be discarded. The tag bits are leakage
//! (count them in leak_EC). Keys of up to 2^30 bits are accepted.

use qkd_core::confirm::{ConfirmError, ConfirmInitiator, ConfirmMessage, respond, tag_bits_for};
use qkd_core::rng::OsRandom;

use crate::block::{block, qkd_block};
use crate::buffer::{in_slice, out_ref, write_bytes};
use crate::handle::{self, Handle};
use crate::result::{Error, guard, qkd_result};

/// Alice's pending confirmation (waiting for Bob's verdict). Opaque; free with
/// qkd_confirm_free.
#[derive(Debug)]
pub struct qkd_confirm {
    _private: [u8; 0],
}

/// The outcome of a confirmation, the same on both sides.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct qkd_confirm_outcome {
    /// True when the tags matched; false: discard the block.
    pub matched: bool,
    /// Tag bits disclosed (add them to leak_EC).
    pub leaked_bits: u32,
}

pub(crate) const CONFIRM_TAG: u64 = u64::from_be_bytes(*b"qkdCONFM");

impl Handle for ConfirmInitiator {
    type Opaque = qkd_confirm;
    const TAG: u64 = CONFIRM_TAG;
    const NAME: &'static str = "qkd_confirm";
}

fn confirm_error(e: ConfirmError) -> Error {
    let code = match e {
        ConfirmError::EpsilonOutOfRange { .. } | ConfirmError::KeyTooLong { .. } => {
            qkd_result::QKD_ERR_INVALID_ARGUMENT
        }
        ConfirmError::Rng(_) => qkd_result::QKD_ERR_RANDOM_SOURCE,
        _ => qkd_result::QKD_ERR_MALFORMED_MESSAGE,
    };
    Error::new(code, e.to_string())
}

/// Tag length in bits (1 to 128) that confirmation uses for a `key_bits`-bit key at
/// correctness parameter `eps_cor`: the smallest `t` with `(L + 1) / 2^128 + 2^-t <= eps_cor`,
/// `L = ceil(key_bits / 128)`. QKD_ERR_INVALID_ARGUMENT when `key_bits` is over 2^30 or
/// `eps_cor` is outside `[(L + 2) / 2^128, 1)`.
///
/// # Safety
/// `out` must be NULL or point to a writable `uint32_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_confirm_tag_bits(
    eps_cor: f64,
    key_bits: usize,
    out: *mut u32,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `out`.
        let out = unsafe { out_ref(out, "out") }?;
        *out = tag_bits_for(eps_cor, key_bits).map_err(confirm_error)?;
        Ok(())
    })
}

/// Alice's side: draws a fresh hash seed from the operating system's CSPRNG, tags `key`, writes
/// the challenge for Bob into `msg_buf` (`*msg_len` = its length) and stores the pending
/// confirmation in `*out`. The challenge takes at most 64 bytes. Too small a buffer:
/// QKD_ERR_BUFFER_TOO_SHORT with the size needed, and nothing is created (call again; a new
/// seed is drawn). A key over 2^30 bits: QKD_ERR_INVALID_ARGUMENT.
///
/// # Safety
/// `key` must be NULL or a live handle; `msg_buf` NULL or `msg_cap` writable bytes; `msg_len`
/// NULL or a writable `size_t`; `out` NULL or a writable `qkd_confirm *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_confirm_start(
    key: *const qkd_block,
    eps_cor: f64,
    msg_buf: *mut u8,
    msg_cap: usize,
    msg_len: *mut usize,
    out: *mut *mut qkd_confirm,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on the out-parameters.
        let (out, msg_len) = unsafe { (out_ref(out, "out")?, out_ref(msg_len, "msg_len")?) };
        *out = std::ptr::null_mut();
        // SAFETY: caller contract on `key`.
        let key = unsafe { block(key, "key") }?;
        let (init, msg) =
            ConfirmInitiator::start(key, eps_cor, &mut OsRandom).map_err(confirm_error)?;
        // SAFETY: caller contract on `msg_buf`.
        unsafe { write_bytes(&msg.encode(), msg_buf, msg_cap, msg_len) }?;
        *out = handle::into_raw(init);
        Ok(())
    })
}

/// Alice reads Bob's verdict (`msg`, `msg_len` bytes) and fills `*outcome`. A mismatch is an
/// outcome (matched = false), not an error.
///
/// # Safety
/// `confirm` must be NULL or a live handle used by no other thread; `msg` NULL or `msg_len`
/// readable bytes; `outcome` NULL or a writable `qkd_confirm_outcome`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_confirm_finish(
    confirm: *mut qkd_confirm,
    msg: *const u8,
    msg_len: usize,
    outcome: *mut qkd_confirm_outcome,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on all pointers.
        let (outcome, init, bytes) = unsafe {
            (
                out_ref(outcome, "outcome")?,
                handle::get_mut::<ConfirmInitiator>(confirm, "confirm")?,
                in_slice(msg, msg_len, "msg")?,
            )
        };
        let msg = ConfirmMessage::decode(bytes).map_err(confirm_error)?;
        let o = init.finish(msg).map_err(|e| match e {
            ConfirmError::BadMessage(d) => Error::new(qkd_result::QKD_ERR_UNEXPECTED_MESSAGE, d),
            e => confirm_error(e),
        })?;
        *outcome = qkd_confirm_outcome {
            matched: o.matched,
            leaked_bits: o.leaked_bits,
        };
        Ok(())
    })
}

/// Bob's side: checks Alice's challenge against his `key` at `eps_cor` (a challenge with a
/// shorter tag than eps_cor needs is refused), writes his verdict for Alice into `reply_buf`
/// (`*reply_len` = its length) and fills `*outcome`.
///
/// # Safety
/// `key` must be NULL or a live handle; `msg` NULL or `msg_len` readable bytes; `reply_buf`
/// NULL or `reply_cap` writable bytes; `reply_len` NULL or a writable `size_t`; `outcome`
/// NULL or a writable `qkd_confirm_outcome`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_confirm_respond(
    key: *const qkd_block,
    eps_cor: f64,
    msg: *const u8,
    msg_len: usize,
    reply_buf: *mut u8,
    reply_cap: usize,
    reply_len: *mut usize,
    outcome: *mut qkd_confirm_outcome,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on all pointers.
        let (reply_len, outcome, key, bytes) = unsafe {
            (
                out_ref(reply_len, "reply_len")?,
                out_ref(outcome, "outcome")?,
                block(key, "key")?,
                in_slice(msg, msg_len, "msg")?,
            )
        };
        let msg = ConfirmMessage::decode(bytes).map_err(confirm_error)?;
        let (reply, o) = respond(key, eps_cor, msg).map_err(confirm_error)?;
        // SAFETY: caller contract on `reply_buf`.
        unsafe { write_bytes(&reply.encode(), reply_buf, reply_cap, reply_len) }?;
        *outcome = qkd_confirm_outcome {
            matched: o.matched,
            leaked_bits: o.leaked_bits,
        };
        Ok(())
    })
}

/// Frees a pending confirmation. NULL and handles of another kind are ignored.
///
/// # Safety
/// `confirm` must be NULL or a live handle, not used again afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_confirm_free(confirm: *mut qkd_confirm) {
    // SAFETY: caller contract.
    crate::result::guard_value((), || unsafe { handle::free::<ConfirmInitiator>(confirm) })
}
