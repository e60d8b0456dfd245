//! Result codes, the per-thread last-error detail, and the panic boundary every exported
//! function runs inside.

use std::cell::RefCell;
use std::ffi::c_char;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::buffer::{out_ref, write_str};

/// The outcome of a call. Values are stable: they never change meaning, and new codes are only
/// appended.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum qkd_result {
    /// Success.
    QKD_OK = 0,
    /// A required pointer argument was NULL.
    QKD_ERR_NULL_ARGUMENT = 1,
    /// A handle of another kind (or a freed handle whose memory is still mapped) was passed.
    QKD_ERR_WRONG_HANDLE = 2,
    /// An output buffer is too small; the out-length parameter holds the capacity needed.
    QKD_ERR_BUFFER_TOO_SHORT = 3,
    /// A numeric argument or option is out of range (details in qkd_last_error_message).
    QKD_ERR_INVALID_ARGUMENT = 4,
    /// Two blocks or a block and a message do not have the lengths they must have.
    QKD_ERR_LENGTH_MISMATCH = 5,
    /// Peer message bytes do not decode, are of another version, or are inconsistent.
    QKD_ERR_MALFORMED_MESSAGE = 6,
    /// The operating system's random number generator failed.
    QKD_ERR_RANDOM_SOURCE = 7,
    /// A bug inside the library (a Rust panic) was caught at the boundary. The handles passed
    /// to the failing call should be freed and not used otherwise.
    QKD_ERR_PANIC = 8,
    /// A protocol message arrived out of turn (or the party failed earlier and is poisoned).
    QKD_ERR_UNEXPECTED_MESSAGE = 9,
    /// An internal protocol step failed where it cannot on valid input (a bug; details in
    /// qkd_last_error_message).
    QKD_ERR_INTERNAL = 10,
    /// The key store failed: I/O, its index database, damaged material, or the store is
    /// already open elsewhere (details in qkd_last_error_message).
    QKD_ERR_STORE = 11,
    /// No key or block with this ID exists.
    QKD_ERR_NOT_FOUND = 12,
    /// The link has less key material than requested; nothing was spent.
    QKD_ERR_INSUFFICIENT_KEY_MATERIAL = 13,
    /// The key (or material) exists but cannot be had: fetched already by this recipient,
    /// expired, destroyed, not for this recipient, or a duplicate.
    QKD_ERR_KEY_UNAVAILABLE = 14,
    /// Authentication of a session's transcript failed: a tag mismatch (a message was altered,
    /// dropped, replayed or forged) or a used or retired pool position named by the peer. No
    /// key is released.
    QKD_ERR_AUTHENTICATION = 15,
    /// The peer ended the session (its reason is in qkd_last_error_message).
    QKD_ERR_PEER_ABORTED = 16,
    /// The session has not ended yet: keep moving its messages.
    QKD_ERR_IN_PROGRESS = 17,
}

use qkd_result::*;

impl qkd_result {
    /// Every code, for tests and the message table.
    pub(crate) const ALL: [qkd_result; 18] = [
        QKD_OK,
        QKD_ERR_NULL_ARGUMENT,
        QKD_ERR_WRONG_HANDLE,
        QKD_ERR_BUFFER_TOO_SHORT,
        QKD_ERR_INVALID_ARGUMENT,
        QKD_ERR_LENGTH_MISMATCH,
        QKD_ERR_MALFORMED_MESSAGE,
        QKD_ERR_RANDOM_SOURCE,
        QKD_ERR_PANIC,
        QKD_ERR_UNEXPECTED_MESSAGE,
        QKD_ERR_INTERNAL,
        QKD_ERR_STORE,
        QKD_ERR_NOT_FOUND,
        QKD_ERR_INSUFFICIENT_KEY_MATERIAL,
        QKD_ERR_KEY_UNAVAILABLE,
        QKD_ERR_AUTHENTICATION,
        QKD_ERR_PEER_ABORTED,
        QKD_ERR_IN_PROGRESS,
    ];

    fn message(self) -> &'static std::ffi::CStr {
        match self {
            QKD_OK => c"success",
            QKD_ERR_NULL_ARGUMENT => c"a required pointer argument was NULL",
            QKD_ERR_WRONG_HANDLE => c"the handle is not of the expected kind",
            QKD_ERR_BUFFER_TOO_SHORT => c"the output buffer is too short",
            QKD_ERR_INVALID_ARGUMENT => c"an argument is out of range",
            QKD_ERR_LENGTH_MISMATCH => c"lengths do not match",
            QKD_ERR_MALFORMED_MESSAGE => c"the peer message is malformed",
            QKD_ERR_RANDOM_SOURCE => c"the random number generator failed",
            QKD_ERR_PANIC => c"internal error (a panic was caught)",
            QKD_ERR_UNEXPECTED_MESSAGE => c"the message is not expected in this protocol state",
            QKD_ERR_INTERNAL => c"internal error in a protocol step",
            QKD_ERR_STORE => c"the key store failed",
            QKD_ERR_NOT_FOUND => c"no such key or block",
            QKD_ERR_INSUFFICIENT_KEY_MATERIAL => c"not enough key material",
            QKD_ERR_KEY_UNAVAILABLE => c"the key is not available to this recipient",
            QKD_ERR_AUTHENTICATION => c"authentication of the transcript failed",
            QKD_ERR_PEER_ABORTED => c"the peer ended the session",
            QKD_ERR_IN_PROGRESS => c"the session has not ended yet",
        }
    }
}

/// A failure inside an exported function: the code returned and the detail kept for
/// `qkd_last_error_message`. Details never contain key material.
#[derive(Debug)]
pub(crate) struct Error {
    pub(crate) code: qkd_result,
    pub(crate) detail: String,
}

impl Error {
    pub(crate) fn new(code: qkd_result, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }

    pub(crate) fn null(arg: &str) -> Self {
        Self::new(QKD_ERR_NULL_ARGUMENT, format!("argument `{arg}` is NULL"))
    }

    pub(crate) fn invalid(detail: impl Into<String>) -> Self {
        Self::new(QKD_ERR_INVALID_ARGUMENT, detail)
    }
}

pub(crate) type FfiResult<T = ()> = Result<T, Error>;

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

fn set_last_error(detail: String) {
    // `try_with`: during thread teardown the slot may be gone; the detail is then dropped.
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = detail);
}

fn panic_detail(payload: &(dyn std::any::Any + Send)) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string payload".into());
    format!("internal error: a panic was caught at the C boundary: {what}")
}

/// Runs the body of a fallible exported function: clears this thread's last error, catches
/// panics, turns errors into codes and records their detail.
pub(crate) fn guard(body: impl FnOnce() -> FfiResult) -> qkd_result {
    set_last_error(String::new());
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => QKD_OK,
        Ok(Err(e)) => {
            set_last_error(e.detail);
            e.code
        }
        Err(payload) => {
            set_last_error(panic_detail(payload.as_ref()));
            QKD_ERR_PANIC
        }
    }
}

/// Runs an infallible exported function that returns a value, with `fallback` if it panics.
pub(crate) fn guard_value<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        set_last_error(panic_detail(payload.as_ref()));
        fallback
    })
}

/// A static, NUL-terminated description of a result code ("unknown result code" for values
/// this library does not define). Never NULL; do not free.
#[unsafe(no_mangle)]
pub extern "C" fn qkd_result_message(code: u32) -> *const c_char {
    guard_value(c"unknown result code".as_ptr(), || {
        qkd_result::ALL
            .iter()
            .find(|r| **r as u32 == code)
            .map_or(c"unknown result code", |r| r.message())
            .as_ptr()
    })
}

/// Copies the detail of the most recent failed call on this thread (empty when the last call
/// succeeded) into `buf` as a NUL-terminated UTF-8 string, and its length without the NUL into
/// `*out_len`. When `cap` is below length + 1, returns QKD_ERR_BUFFER_TOO_SHORT with
/// `*out_len` = length + 1. This call does not change the stored detail.
///
/// # Safety
/// `buf` must be NULL or point to `cap` writable bytes; `out_len` must be NULL or point to a
/// writable `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_last_error_message(
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> qkd_result {
    let detail = LAST_ERROR
        .try_with(|slot| slot.borrow().clone())
        .unwrap_or_default();
    let r = catch_unwind(AssertUnwindSafe(|| -> FfiResult {
        // SAFETY: the caller guarantees `out_len` is NULL or writable.
        let out_len = unsafe { out_ref(out_len, "out_len") }?;
        // SAFETY: the caller guarantees `buf` is NULL or holds `cap` writable bytes.
        unsafe { write_str(&detail, buf, cap, out_len) }
    }));
    match r {
        Ok(Ok(())) => QKD_OK,
        Ok(Err(e)) => e.code,
        Err(_) => QKD_ERR_PANIC,
    }
}
