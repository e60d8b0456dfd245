//! A block's whole life between two sites as one sans-IO session per side (qkd-core
//! `session`, DESIGN §9): `qkd_link` holds what the sessions of one link share (settings, the
//! authentication key pool, Cascade plans), `qkd_session` is Alice's or Bob's state machine of
//! one block.
//!
//! ```text
//! qkd_link_new(&cfg, psk, psk_len, &link);                  once per link and side
//! qkd_session_alice_new(link, "block-7", raw, &s);          (Bob: qkd_session_bob_new)
//! loop {
//!     while (qkd_session_poll_transmit(s, &msg) == QKD_OK && msg) { send it; qkd_buffer_free }
//!     if (finished) break;
//!     receive a message for "block-7"; qkd_session_handle(s, bytes, len);
//! }
//! qkd_session_outcome(s, &report, &final_key);
//! ```
//!
//! Nothing here decides anything: every call goes to qkd-core.

use std::ffi::{CStr, c_char};
use std::sync::Arc;

use qkd_core::auth::{AuthError, KeyPool};
use qkd_core::pipeline::PipelineConfig;
use qkd_core::rng::OsRandom;
use qkd_core::session::{AliceSession, BobSession, Link, Party, SessionError, wire};

use crate::block::{block, block_out, qkd_block};
use crate::buffer::{Bytes, in_ref, in_slice, out_ref, qkd_buffer, write_str};
use crate::handle::{self, Handle};
use crate::pipeline::{block_report, core_config, qkd_block_report, qkd_pipeline_config};
use crate::result::{Error, FfiResult, guard, guard_value, qkd_result};

/// One side's view of a link: the settings both sides share, the pre-shared authentication
/// key pool, cached Cascade plans. Opaque; free with qkd_link_free. Thread-safe: sessions on
/// any number of threads may use one link at once, and each session keeps its link alive, so
/// the link may be freed before its sessions.
#[derive(Debug)]
pub struct qkd_link {
    _private: [u8; 0],
}

/// Alice's or Bob's session of one block. Opaque; free with qkd_session_free (zeroizes the
/// key material it holds).
#[derive(Debug)]
pub struct qkd_session {
    _private: [u8; 0],
}

/// The longest block ID a session takes, in bytes (without the NUL).
pub const QKD_BLOCK_ID_MAX_BYTES: usize = 128;

pub(crate) const LINK_TAG: u64 = u64::from_be_bytes(*b"qkdLINK_");
pub(crate) const SESSION_TAG: u64 = u64::from_be_bytes(*b"qkdSESSN");

/// The value behind a `qkd_link`.
#[derive(Debug)]
pub(crate) struct LinkHandle(Arc<Link>);

impl Handle for LinkHandle {
    type Opaque = qkd_link;
    const TAG: u64 = LINK_TAG;
    const NAME: &'static str = "qkd_link";
}

/// The value behind a `qkd_session`: the core party and its side's name.
pub(crate) struct SessionHandle {
    party: Box<dyn Party>,
    side: &'static str,
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle")
            .field("side", &self.side)
            .field("block_id", &self.party.block_id())
            .field("finished", &self.finished())
            .finish_non_exhaustive()
    }
}

impl SessionHandle {
    fn finished(&self) -> bool {
        self.party.is_finished()
    }
}

impl Handle for SessionHandle {
    type Opaque = qkd_session;
    const TAG: u64 = SESSION_TAG;
    const NAME: &'static str = "qkd_session";
}

/// The code of a session error; the detail is the core's message.
pub(crate) fn session_error(e: &SessionError) -> Error {
    use qkd_result::*;
    let code = match e {
        SessionError::Malformed(_)
        | SessionError::Hello(_)
        | SessionError::Inconsistent { .. }
        | SessionError::SecretLength { .. } => QKD_ERR_MALFORMED_MESSAGE,
        SessionError::BlockId { .. }
        | SessionError::Sequence { .. }
        | SessionError::Unexpected { .. }
        | SessionError::Ended => QKD_ERR_UNEXPECTED_MESSAGE,
        SessionError::Auth(AuthError::Exhausted { .. }) => QKD_ERR_INSUFFICIENT_KEY_MATERIAL,
        SessionError::Auth(_) => QKD_ERR_AUTHENTICATION,
        SessionError::PeerAborted(_) => QKD_ERR_PEER_ABORTED,
        SessionError::Config(_) => QKD_ERR_INVALID_ARGUMENT,
        SessionError::Rng(_) => QKD_ERR_RANDOM_SOURCE,
        // These stages fail on what the peer sent (a Cascade batch, a sample, a confirmation
        // that does not fit); the others (secret length, amplify) on this side's own values.
        SessionError::Stage {
            stage: "reconcile" | "estimate" | "confirm",
            ..
        } => QKD_ERR_MALFORMED_MESSAGE,
        _ => QKD_ERR_INTERNAL,
    };
    Error::new(code, e.to_string())
}

/// Link settings: `config`, or the defaults when NULL. A link does not use `block_bits` (each
/// session's raw block has its own length); the largest a session takes (2^32 - 1 bits) is set
/// so that the configuration converts.
///
/// # Safety
/// `config` must be NULL or a readable `qkd_pipeline_config` whose `variant` is NULL or
/// NUL-terminated.
unsafe fn link_config(config: *const qkd_pipeline_config) -> FfiResult<PipelineConfig> {
    let block_bits = u32::MAX as usize;
    if config.is_null() {
        return Ok(PipelineConfig {
            block_bits,
            ..PipelineConfig::default()
        });
    }
    // SAFETY: caller contract on `config` and its `variant`.
    unsafe { core_config(in_ref(config, "config")?, block_bits) }
}

/// Creates one side's link: the settings (`config`, NULL for the defaults of
/// qkd_pipeline_config_default; both sides must use the same, or the first hello is refused)
/// and the pre-shared authentication secret (`psk`, `psk_len` bytes, copied; both sides hold
/// the same bytes). Each block costs 256 bits of it (two one-time pads), plus 128 bits
/// whenever a hash key is drawn; qkd_link_auth_refill adds more. The Cascade shuffle seed this
/// side announces as Alice is drawn from the OS CSPRNG.
///
/// # Safety
/// `config` must be NULL or a readable `qkd_pipeline_config` whose `variant` is NULL or
/// NUL-terminated; `psk` NULL (with `psk_len` 0) or `psk_len` readable bytes; `out` NULL or a
/// writable `qkd_link *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_link_new(
    config: *const qkd_pipeline_config,
    psk: *const u8,
    psk_len: usize,
    out: *mut *mut qkd_link,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `out`.
        let out = unsafe { out_ref(out, "out") }?;
        *out = std::ptr::null_mut();
        // SAFETY: caller contract on `config` and `psk`.
        let (cfg, psk) = unsafe { (link_config(config)?, in_slice(psk, psk_len, "psk")?) };
        let link = Link::new(cfg, Box::new(KeyPool::new(psk)), &mut OsRandom)
            .map_err(|e| session_error(&e))?;
        handle::put(out, LinkHandle(link));
        Ok(())
    })
}

/// Stores the authentication key bits the link's pool has left in `*out` (a block takes 256,
/// or 384 when it draws a new hash key).
///
/// # Safety
/// `link` must be NULL or a live handle; `out` NULL or a writable `uint64_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_link_auth_available_bits(
    link: *const qkd_link,
    out: *mut u64,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `out` and `link`.
        let (out, link) = unsafe {
            (
                out_ref(out, "out")?,
                handle::get::<LinkHandle>(link, "link")?,
            )
        };
        *out = link.0.auth_keys().available_bits() as u64;
        Ok(())
    })
}

/// Appends `len` bytes to the link's authentication key pool (copied): final key set aside
/// for authentication, or more pre-shared secret. Both sides must add the same bytes in the
/// same order. Wipe your copy afterwards.
///
/// # Safety
/// `link` must be NULL or a live handle; `key` NULL (with `len` 0) or `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_link_auth_refill(
    link: *const qkd_link,
    key: *const u8,
    len: usize,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `link` and `key`.
        let (link, key) = unsafe {
            (
                handle::get::<LinkHandle>(link, "link")?,
                in_slice(key, len, "key")?,
            )
        };
        link.0.auth_keys().refill(key);
        Ok(())
    })
}

/// Frees this handle on the link (zeroizing the pool once no session uses it any more). NULL
/// and handles of another kind are ignored.
///
/// # Safety
/// `link` must be NULL or a live handle, not used again afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_link_free(link: *mut qkd_link) {
    // SAFETY: caller contract.
    guard_value((), || unsafe { handle::free::<LinkHandle>(link) })
}

/// The arguments both constructors take.
///
/// # Safety
/// As the exported constructors.
unsafe fn session_args<'a>(
    link: *const qkd_link,
    block_id: *const c_char,
    raw: *const qkd_block,
) -> FfiResult<(&'a LinkHandle, String, &'a qkd_core::BitBlock)> {
    // SAFETY: caller contract on `link` and `raw`.
    let (link, raw) = unsafe { (handle::get::<LinkHandle>(link, "link")?, block(raw, "raw")?) };
    if block_id.is_null() {
        return Err(Error::null("block_id"));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    let id = unsafe { CStr::from_ptr(block_id) }
        .to_str()
        .map_err(|_| Error::invalid("block_id is not UTF-8"))?
        .to_owned();
    Ok((link, id, raw))
}

/// Starts Alice's session of block `block_id` on her raw sifted bits `raw` (copied): takes the
/// block's authentication pads from the link and queues the hello and the sample (take them
/// with qkd_session_poll_transmit). Her public seeds come from the OS CSPRNG. Fails before
/// sending anything when the block is too short for the sample (more than twice the sample,
/// fewer than 2^32 bits) or the ID malformed (1 to QKD_BLOCK_ID_MAX_BYTES bytes of UTF-8, no control characters):
/// QKD_ERR_INVALID_ARGUMENT; when the pool is exhausted: QKD_ERR_INSUFFICIENT_KEY_MATERIAL.
///
/// # Safety
/// `link` must be NULL or a live handle; `block_id` NULL or a NUL-terminated string; `raw`
/// NULL or a live handle; `out` NULL or a writable `qkd_session *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_session_alice_new(
    link: *const qkd_link,
    block_id: *const c_char,
    raw: *const qkd_block,
    out: *mut *mut qkd_session,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `out`.
        let out = unsafe { out_ref(out, "out") }?;
        *out = std::ptr::null_mut();
        // SAFETY: caller contract on `link`, `block_id` and `raw`.
        let (link, id, raw) = unsafe { session_args(link, block_id, raw) }?;
        let party = AliceSession::new(Arc::clone(&link.0), id, raw.clone(), Box::new(OsRandom))
            .map_err(|e| session_error(&e))?;
        handle::put(
            out,
            SessionHandle {
                party: Box::new(party),
                side: "Alice",
            },
        );
        Ok(())
    })
}

/// Starts Bob's session of block `block_id` on his raw sifted bits `raw` (copied); it waits for
/// Alice's hello (nothing is queued yet). Errors as qkd_session_alice_new, except that the pool
/// is checked when the hello names its positions.
///
/// # Safety
/// As qkd_session_alice_new.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_session_bob_new(
    link: *const qkd_link,
    block_id: *const c_char,
    raw: *const qkd_block,
    out: *mut *mut qkd_session,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `out`.
        let out = unsafe { out_ref(out, "out") }?;
        *out = std::ptr::null_mut();
        // SAFETY: caller contract on `link`, `block_id` and `raw`.
        let (link, id, raw) = unsafe { session_args(link, block_id, raw) }?;
        let party =
            BobSession::new(Arc::clone(&link.0), id, raw.clone()).map_err(|e| session_error(&e))?;
        handle::put(
            out,
            SessionHandle {
                party: Box::new(party),
                side: "Bob",
            },
        );
        Ok(())
    })
}

/// Feeds one message from the peer (`msg`, `len` bytes) to the session, which queues its
/// answers. A malformed, out-of-order, replayed, unauthentic or inconsistent message, or the
/// peer's abort, ends the session: the call returns the session's error (as
/// qkd_session_outcome will), and the session queues an abort for its peer, so keep sending
/// what qkd_session_poll_transmit gives. After the end every message gives
/// QKD_ERR_UNEXPECTED_MESSAGE and changes nothing.
///
/// # Safety
/// `session` must be NULL or a live handle used by no other thread; `msg` NULL (with `len` 0)
/// or `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_session_handle(
    session: *mut qkd_session,
    msg: *const u8,
    len: usize,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `session` and `msg`.
        let (s, bytes) = unsafe {
            (
                handle::get_mut::<SessionHandle>(session, "session")?,
                in_slice(msg, len, "msg")?,
            )
        };
        s.party.handle(bytes).map_err(|e| session_error(&e))
    })
}

/// Dequeues the session's next message for its peer into `*out` (a new buffer: send its bytes,
/// then qkd_buffer_free it), or sets `*out` to NULL when nothing is queued. Messages may still
/// be queued after the session has finished (Bob's last tag, an abort): send them all.
///
/// # Safety
/// `session` must be NULL or a live handle used by no other thread; `out` NULL or a writable
/// `qkd_buffer *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_session_poll_transmit(
    session: *mut qkd_session,
    out: *mut *mut qkd_buffer,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `out`.
        let out = unsafe { out_ref(out, "out") }?;
        *out = std::ptr::null_mut();
        // SAFETY: caller contract on `session`.
        let s = unsafe { handle::get_mut::<SessionHandle>(session, "session") }?;
        if let Some(m) = s.party.poll_transmit() {
            handle::put(out, Bytes(m));
        }
        Ok(())
    })
}

/// `*out` = whether the session has ended (its outcome is ready, or was taken). Messages may
/// still wait in qkd_session_poll_transmit.
///
/// # Safety
/// `session` must be NULL or a live handle; `out` NULL or a writable `bool`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_session_is_finished(
    session: *const qkd_session,
    out: *mut bool,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `out` and `session`.
        let (out, s) = unsafe {
            (
                out_ref(out, "out")?,
                handle::get::<SessionHandle>(session, "session")?,
            )
        };
        *out = s.finished();
        Ok(())
    })
}

/// Takes the outcome of a finished session (once). When the session ended normally: QKD_OK,
/// `*report_out` filled (a discarded or quarantined block is an outcome, as in
/// qkd_pipeline_process_block) and `*final_key_out` the final key when report_out->outcome is
/// QKD_OUTCOME_KEY, NULL otherwise. When it ended in an error: that error's code (as
/// qkd_session_handle returned it) with its message in qkd_last_error_message, `*report_out`
/// untouched and `*final_key_out` NULL. QKD_ERR_IN_PROGRESS while the session runs;
/// QKD_ERR_KEY_UNAVAILABLE once the outcome was taken.
///
/// # Safety
/// `session` must be NULL or a live handle used by no other thread; `report_out` NULL or a
/// writable `qkd_block_report`; `final_key_out` NULL or a writable `qkd_block *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_session_outcome(
    session: *mut qkd_session,
    report_out: *mut qkd_block_report,
    final_key_out: *mut *mut qkd_block,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on the out-parameters and `session`.
        let (key_out, report, s) = unsafe {
            (
                block_out(final_key_out, "final_key_out")?,
                out_ref(report_out, "report_out")?,
                handle::get_mut::<SessionHandle>(session, "session")?,
            )
        };
        let block_id = s.party.block_id().to_owned();
        // A finished session with no outcome left had it taken (the core's stays finished).
        let Some(outcome) = s.party.take_outcome() else {
            return Err(if s.party.is_finished() {
                Error::new(
                    qkd_result::QKD_ERR_KEY_UNAVAILABLE,
                    format!(
                        "the outcome of {}'s session of block {block_id:?} was taken already",
                        s.side
                    ),
                )
            } else {
                Error::new(
                    qkd_result::QKD_ERR_IN_PROGRESS,
                    format!(
                        "{}'s session of block {block_id:?} has not ended yet; keep moving its \
                         messages",
                        s.side
                    ),
                )
            });
        };
        let outcome = outcome.map_err(|e| session_error(&e))?;
        *report = block_report(&outcome.report);
        if let Some(key) = outcome.key {
            handle::put(key_out, key);
        }
        Ok(())
    })
}

/// Zeroizes and frees a session (a session freed before it ended sends nothing more: its peer
/// times out). NULL and handles of another kind are ignored.
///
/// # Safety
/// `session` must be NULL or a live handle, not used again afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_session_free(session: *mut qkd_session) {
    // SAFETY: caller contract.
    guard_value((), || unsafe { handle::free::<SessionHandle>(session) })
}

/// Copies the block ID a session message is for into `buf` as a NUL-terminated string (its
/// length without the NUL in `*out_len`), so that a side running many blocks over one
/// connection can route each message to its session, and Bob can start the session of a block
/// when its first message arrives. QKD_ERR_MALFORMED_MESSAGE when the bytes are not a session
/// message; QKD_ERR_BUFFER_TOO_SHORT with `*out_len` = the capacity needed (at most
/// QKD_BLOCK_ID_MAX_BYTES + 1).
///
/// # Safety
/// `msg` must be NULL (with `len` 0) or `len` readable bytes; `buf` NULL or `cap` writable
/// bytes; `out_len` NULL or a writable `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_session_message_block_id(
    msg: *const u8,
    len: usize,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `out_len` and `msg`.
        let (out_len, bytes) =
            unsafe { (out_ref(out_len, "out_len")?, in_slice(msg, len, "msg")?) };
        let id = wire::block_id_of(bytes).map_err(|e| session_error(&e))?;
        // SAFETY: caller contract on `buf`.
        unsafe { write_str(&id, buf, cap, out_len) }
    })
}
