//! Cascade reconciliation as two-party message passing, plus an in-process loopback.
//!
//! Each side runs on its own device. Bob (noisy key) creates `qkd_cascade_bob` with the run's
//! parameters, Alice (reference key) creates `qkd_cascade_alice`; then messages alternate:
//!
//! ```text
//! Bob:   take_message -> send; loop { if done: stop; recv -> receive; take_message -> send }
//! Alice: loop { recv -> receive; if done: stop; take_message -> send }
//! ```
//!
//! `*_receive` consumes the peer's bytes and queues this side's reply; `*_take_message`
//! copies the queued reply out (length 0: nothing queued). A reply that does not fit the
//! buffer stays queued (QKD_ERR_BUFFER_TOO_SHORT reports its size). After any protocol error
//! the party is poisoned: every later call fails; free it.

use std::ffi::{CStr, c_char};

use qkd_core::BitBlock;
use qkd_core::reconcile::ReconcileError;
use qkd_core::reconcile::cascade::{Alice, Bob, Params, Plan, Variant};
use qkd_core::reconcile::loopback::LoopbackLink;
use qkd_core::reconcile::message::Message;

use crate::block::{block, block_out, qkd_block};
use crate::buffer::{in_seed, in_slice, out_ref, write_bytes};
use crate::handle::{self, Handle};
use crate::result::{Error, FfiResult, guard, qkd_result};

/// Alice's side of a Cascade run (holds the reference key, answers parity questions). Opaque;
/// free with qkd_cascade_alice_free (zeroizes the key).
#[derive(Debug)]
pub struct qkd_cascade_alice {
    _private: [u8; 0],
}

/// Bob's side of a Cascade run (holds the noisy key, asks and corrects). Opaque; free with
/// qkd_cascade_bob_free (zeroizes the key).
#[derive(Debug)]
pub struct qkd_cascade_bob {
    _private: [u8; 0],
}

/// What Bob counted during a run.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct qkd_cascade_stats {
    /// Parity bits Alice disclosed (her leakage; the numerator of the efficiency).
    pub disclosed_bits: u64,
    /// Bits of Bob's messages that depend on his key (his leakage, counted conservatively:
    /// one per parity Alice disclosed plus his own parities in descend questions). Size the
    /// key with disclosed_bits + bob_leak_bits.
    pub bob_leak_bits: u64,
    /// Bits Bob flipped.
    pub corrected: u64,
    /// Round trips (hello plus queries).
    pub round_trips: u32,
    /// Messages sent by either side.
    pub messages: u32,
    /// Passes run, BICONF rounds included.
    pub passes: u32,
    /// Bob has sent his final message.
    pub done: bool,
}

/// What an in-process (loopback) run measured; it knows both keys.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct qkd_cascade_report {
    /// Bob's counters.
    pub stats: qkd_cascade_stats,
    /// Key length in bits.
    pub n: u64,
    /// Differences between the keys before the run.
    pub initial_errors: u64,
    /// Differences after the run (0 unless Cascade failed to find every error).
    pub residual_errors: u64,
    /// Encoded bytes Bob sent.
    pub bytes_to_alice: u64,
    /// Encoded bytes Alice sent.
    pub bytes_to_bob: u64,
    /// Efficiency f = disclosed / (n h(initial_errors / n)) (DESIGN §4); infinite when the
    /// keys were equal and something was disclosed.
    pub efficiency: f64,
    /// Wall-clock seconds of the run.
    pub seconds: f64,
}

pub(crate) struct AliceParty {
    alice: Alice,
    outbox: Option<Vec<u8>>,
    /// Set when this layer refused a message (Alice's own state machine did not see it).
    failed: bool,
}

pub(crate) struct BobParty {
    bob: Bob,
    outbox: Option<Vec<u8>>,
}

pub(crate) const ALICE_TAG: u64 = u64::from_be_bytes(*b"qkdALICE");
pub(crate) const BOB_TAG: u64 = u64::from_be_bytes(*b"qkdCBOB_");

impl Handle for AliceParty {
    type Opaque = qkd_cascade_alice;
    const TAG: u64 = ALICE_TAG;
    const NAME: &'static str = "qkd_cascade_alice";
}

impl Handle for BobParty {
    type Opaque = qkd_cascade_bob;
    const TAG: u64 = BOB_TAG;
    const NAME: &'static str = "qkd_cascade_bob";
}

pub(crate) fn reconcile_error(e: ReconcileError) -> Error {
    use ReconcileError::*;
    let code = match e {
        BadParams(_) => qkd_result::QKD_ERR_INVALID_ARGUMENT,
        KeyLength { .. } => qkd_result::QKD_ERR_LENGTH_MISMATCH,
        Unexpected { .. } | OutOfOrder { .. } | Poisoned => qkd_result::QKD_ERR_UNEXPECTED_MESSAGE,
        _ => qkd_result::QKD_ERR_MALFORMED_MESSAGE,
    };
    Error::new(code, e.to_string())
}

/// The variant named by a C string (NULL: the engine's default,
/// [`qkd_core::pipeline::DEFAULT_ALGORITHM`]).
///
/// # Safety
/// `name` must be NULL or a NUL-terminated string.
unsafe fn variant(name: *const c_char) -> FfiResult<Variant> {
    let name = if name.is_null() {
        qkd_core::pipeline::DEFAULT_ALGORITHM
    } else {
        // SAFETY: non-NULL and NUL-terminated by the caller's contract.
        unsafe { CStr::from_ptr(name) }
            .to_str()
            .map_err(|_| Error::invalid("variant name is not UTF-8"))?
    };
    Variant::by_name(name).ok_or_else(|| {
        let known: Vec<String> = Variant::all().into_iter().map(|v| v.name).collect();
        Error::invalid(format!(
            "unknown Cascade variant '{name}'; expected one of {}",
            known.join(", ")
        ))
    })
}

/// # Safety
/// As [`variant`] and [`in_seed`].
unsafe fn plan_for(
    key: &BitBlock,
    name: *const c_char,
    qber: f64,
    seed: *const u8,
) -> FfiResult<std::sync::Arc<Plan>> {
    // SAFETY: forwarded caller contract.
    let (variant, seed) = unsafe { (variant(name)?, in_seed(seed, "seed")?) };
    let n = u32::try_from(key.len()).map_err(|_| {
        Error::invalid(format!("key of {} bits is too long for Cascade", key.len()))
    })?;
    Plan::new(Params {
        variant,
        n,
        qber,
        seed,
    })
    .map_err(reconcile_error)
}

fn stats_of(bob: &Bob) -> qkd_cascade_stats {
    let s = bob.stats();
    qkd_cascade_stats {
        disclosed_bits: s.disclosed_bits,
        bob_leak_bits: s.bob_leak_bits(),
        corrected: s.corrected,
        round_trips: s.round_trips,
        messages: s.messages,
        passes: s.passes,
        done: bob.is_done(),
    }
}

/// Creates Bob's side for his noisy `key` (copied). `variant` names the Cascade variant (NULL:
/// the engine's default, "yanetal" at this version; also "original", "biconf", "option3",
/// "option4", "option7", "option8", "yanetal-x", "option8-x", "option8-xb"); `qber` (in (0, 0.5)) is the estimate the block
/// sizes come from (e.g. qkd_qber_estimate.qber_upper); `seed` (QKD_SEED_LEN bytes, fresh from
/// qkd_random_seed) selects the shuffles and travels to Alice in the first message, which is
/// queued: take it with qkd_cascade_bob_take_message.
///
/// # Safety
/// `key` must be NULL or a live handle; `variant` NULL or a NUL-terminated string; `seed` NULL
/// or 32 readable bytes; `out` NULL or a writable `qkd_cascade_bob *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_cascade_bob_new(
    key: *const qkd_block,
    variant: *const c_char,
    qber: f64,
    seed: *const u8,
    out: *mut *mut qkd_cascade_bob,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `out`.
        let out = unsafe { out_ref(out, "out") }?;
        *out = std::ptr::null_mut();
        // SAFETY: caller contract on `key`.
        let key = unsafe { block(key, "key") }?;
        // SAFETY: caller contract on `variant` and `seed`.
        let plan = unsafe { plan_for(key, variant, qber, seed) }?;
        let mut bob = Bob::new(plan, key.clone()).map_err(reconcile_error)?;
        let hello = bob
            .start()
            .and_then(|m| m.encode())
            .map_err(reconcile_error)?;
        *out = handle::into_raw(BobParty {
            bob,
            outbox: Some(hello),
        });
        Ok(())
    })
}

/// Creates Alice's side for her `key` (copied). The run's parameters arrive in Bob's first
/// message, and its key length must equal hers.
///
/// # Safety
/// `key` must be NULL or a live handle; `out` NULL or a writable `qkd_cascade_alice *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_cascade_alice_new(
    key: *const qkd_block,
    out: *mut *mut qkd_cascade_alice,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `out`.
        let out = unsafe { out_ref(out, "out") }?;
        *out = std::ptr::null_mut();
        // SAFETY: caller contract on `key`.
        let key = unsafe { block(key, "key") }?;
        *out = handle::into_raw(AliceParty {
            alice: Alice::new(key.clone()),
            outbox: None,
            failed: false,
        });
        Ok(())
    })
}

fn pending_error(side: &str) -> Error {
    Error::new(
        qkd_result::QKD_ERR_UNEXPECTED_MESSAGE,
        format!("{side} still has a message queued; take it before receiving the next one"),
    )
}

/// Alice consumes Bob's message (`msg`, `msg_len` bytes) and queues her reply (none after
/// Bob's final message: then qkd_cascade_alice_is_done reports true). Garbage gives
/// QKD_ERR_MALFORMED_MESSAGE, a message out of turn QKD_ERR_UNEXPECTED_MESSAGE.
///
/// # Safety
/// `alice` must be NULL or a live handle used by no other thread; `msg` NULL or `msg_len`
/// readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_cascade_alice_receive(
    alice: *mut qkd_cascade_alice,
    msg: *const u8,
    msg_len: usize,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `alice` and `msg`.
        let (party, bytes) = unsafe {
            (
                handle::get_mut::<AliceParty>(alice, "alice")?,
                in_slice(msg, msg_len, "msg")?,
            )
        };
        if party.outbox.is_some() {
            return Err(pending_error("Alice"));
        }
        if party.failed {
            return Err(reconcile_error(ReconcileError::Poisoned));
        }
        let key_bits = party.alice.key().len();
        let alice = &mut party.alice;
        let reply = (|| {
            let msg = Message::decode(bytes).map_err(reconcile_error)?;
            // Refuse a hello for another key length before the plan (the shuffles of every
            // pass, sized by the peer's `n`) is built: garbage must not allocate gigabytes.
            if let Message::Hello(params) = &msg
                && params.n as usize != key_bits
            {
                return Err(reconcile_error(ReconcileError::KeyLength {
                    got: key_bits,
                    expected: params.n as usize,
                }));
            }
            alice
                .handle(msg)
                .and_then(|r| r.map(|m| m.encode()).transpose())
                .map_err(reconcile_error)
        })();
        party.failed = reply.is_err();
        party.outbox = reply?;
        Ok(())
    })
}

/// Bob consumes Alice's message and queues his next one (a query, or his final message).
/// Errors as qkd_cascade_alice_receive.
///
/// # Safety
/// `bob` must be NULL or a live handle used by no other thread; `msg` NULL or `msg_len`
/// readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_cascade_bob_receive(
    bob: *mut qkd_cascade_bob,
    msg: *const u8,
    msg_len: usize,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `bob` and `msg`.
        let (party, bytes) = unsafe {
            (
                handle::get_mut::<BobParty>(bob, "bob")?,
                in_slice(msg, msg_len, "msg")?,
            )
        };
        if party.outbox.is_some() {
            return Err(pending_error("Bob"));
        }
        if party.bob.is_done() {
            return Err(Error::new(
                qkd_result::QKD_ERR_UNEXPECTED_MESSAGE,
                "Bob has finished; no message is expected",
            ));
        }
        party.outbox = Some(party.bob.handle_bytes(bytes).map_err(reconcile_error)?);
        Ok(())
    })
}

fn take(outbox: &mut Option<Vec<u8>>, buf: *mut u8, cap: usize, out_len: &mut usize) -> FfiResult {
    match outbox {
        None => {
            *out_len = 0;
            Ok(())
        }
        Some(bytes) => {
            // SAFETY: the caller of the exported function guarantees `buf` holds `cap` bytes.
            unsafe { write_bytes(bytes, buf, cap, out_len) }?;
            *outbox = None;
            Ok(())
        }
    }
}

/// Copies Alice's queued message into `buf` and dequeues it; `*out_len` = its length, or 0
/// when nothing is queued. Too small a buffer: QKD_ERR_BUFFER_TOO_SHORT, `*out_len` = the size
/// needed, and the message stays queued.
///
/// # Safety
/// `alice` must be NULL or a live handle used by no other thread; `buf` NULL or `cap`
/// writable bytes; `out_len` NULL or a writable `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_cascade_alice_take_message(
    alice: *mut qkd_cascade_alice,
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `out_len` and `alice`.
        let (out_len, party) = unsafe {
            (
                out_ref(out_len, "out_len")?,
                handle::get_mut::<AliceParty>(alice, "alice")?,
            )
        };
        take(&mut party.outbox, buf, cap, out_len)
    })
}

/// As qkd_cascade_alice_take_message, for Bob.
///
/// # Safety
/// `bob` must be NULL or a live handle used by no other thread; `buf` NULL or `cap` writable
/// bytes; `out_len` NULL or a writable `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_cascade_bob_take_message(
    bob: *mut qkd_cascade_bob,
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `out_len` and `bob`.
        let (out_len, party) = unsafe {
            (
                out_ref(out_len, "out_len")?,
                handle::get_mut::<BobParty>(bob, "bob")?,
            )
        };
        take(&mut party.outbox, buf, cap, out_len)
    })
}

/// `*done` = whether Bob's final message has arrived (the run is over on Alice's side), and
/// `*disclosed_bits` (if not NULL) = the parity bits she disclosed so far.
///
/// # Safety
/// `alice` must be NULL or a live handle; `done` NULL or a writable `bool`; `disclosed_bits`
/// NULL or a writable `uint64_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_cascade_alice_is_done(
    alice: *const qkd_cascade_alice,
    done: *mut bool,
    disclosed_bits: *mut u64,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `done` and `alice`.
        let (done, party) = unsafe {
            (
                out_ref(done, "done")?,
                handle::get::<AliceParty>(alice, "alice")?,
            )
        };
        *done = party.alice.is_done();
        if !disclosed_bits.is_null() {
            // SAFETY: non-NULL, writable by the caller's contract.
            unsafe { *disclosed_bits = party.alice.disclosed_bits() };
        }
        Ok(())
    })
}

/// Cascade's leakage as Alice counts it: `*alice_bits` = the parities she disclosed,
/// `*bob_bits` = Bob's key-dependent bits (the same numbers Bob's `qkd_cascade_stats` gives).
/// The key is sized with their sum (docs/security.md, "Cascade leakage").
///
/// # Safety
/// `alice` must be NULL or a live handle; `alice_bits` and `bob_bits` NULL or writable
/// `uint64_t`s.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_cascade_alice_leak_bits(
    alice: *const qkd_cascade_alice,
    alice_bits: *mut u64,
    bob_bits: *mut u64,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on the pointers.
        let (alice_bits, bob_bits, party) = unsafe {
            (
                out_ref(alice_bits, "alice_bits")?,
                out_ref(bob_bits, "bob_bits")?,
                handle::get::<AliceParty>(alice, "alice")?,
            )
        };
        *alice_bits = party.alice.disclosed_bits();
        *bob_bits = party.alice.bob_leak_bits();
        Ok(())
    })
}

/// Fills `*stats` with Bob's counters; `stats->done` tells whether his final message has been
/// queued (send it, then stop).
///
/// # Safety
/// `bob` must be NULL or a live handle; `stats` NULL or a writable `qkd_cascade_stats`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_cascade_bob_stats(
    bob: *const qkd_cascade_bob,
    stats: *mut qkd_cascade_stats,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `stats` and `bob`.
        let (stats, party) = unsafe {
            (
                out_ref(stats, "stats")?,
                handle::get::<BobParty>(bob, "bob")?,
            )
        };
        *stats = stats_of(&party.bob);
        Ok(())
    })
}

/// Copies Bob's key (corrected as far as the run got) into a new block.
///
/// # Safety
/// `bob` must be NULL or a live handle; `out` NULL or a writable `qkd_block *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_cascade_bob_key(
    bob: *const qkd_cascade_bob,
    out: *mut *mut qkd_block,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `out` and `bob`.
        let (out, party) =
            unsafe { (block_out(out, "out")?, handle::get::<BobParty>(bob, "bob")?) };
        handle::put(out, party.bob.key().clone());
        Ok(())
    })
}

/// Zeroizes and frees Alice's side. NULL and handles of another kind are ignored.
///
/// # Safety
/// `alice` must be NULL or a live handle, not used again afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_cascade_alice_free(alice: *mut qkd_cascade_alice) {
    // SAFETY: caller contract.
    crate::result::guard_value((), || unsafe { handle::free::<AliceParty>(alice) })
}

/// Zeroizes and frees Bob's side. NULL and handles of another kind are ignored.
///
/// # Safety
/// `bob` must be NULL or a live handle, not used again afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_cascade_bob_free(bob: *mut qkd_cascade_bob) {
    // SAFETY: caller contract.
    crate::result::guard_value((), || unsafe { handle::free::<BobParty>(bob) })
}

/// Runs both sides in this process (through the wire encoding): reconciles `bob_key` against
/// `alice_key` with the given variant (NULL: the engine's default), QBER estimate and seed, stores Bob's
/// corrected key in `*bob_corrected_out` and, if `report_out` is not NULL, the report.
///
/// # Safety
/// `alice_key`, `bob_key` must be NULL or live handles; `variant` NULL or a NUL-terminated
/// string; `seed` NULL or 32 readable bytes; `bob_corrected_out` NULL or a writable
/// `qkd_block *`; `report_out` NULL or a writable `qkd_cascade_report`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_cascade_loopback(
    alice_key: *const qkd_block,
    bob_key: *const qkd_block,
    variant: *const c_char,
    qber: f64,
    seed: *const u8,
    bob_corrected_out: *mut *mut qkd_block,
    report_out: *mut qkd_cascade_report,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on the out-parameter and the keys.
        let (out, a, b) = unsafe {
            (
                block_out(bob_corrected_out, "bob_corrected_out")?,
                block(alice_key, "alice_key")?,
                block(bob_key, "bob_key")?,
            )
        };
        if a.len() != b.len() {
            return Err(Error::new(
                qkd_result::QKD_ERR_LENGTH_MISMATCH,
                format!(
                    "Alice's key has {} bits and Bob's {}; expected equal lengths",
                    a.len(),
                    b.len()
                ),
            ));
        }
        // SAFETY: caller contract on `variant` and `seed`.
        let plan = unsafe { plan_for(b, variant, qber, seed) }?;
        let mut alice = Alice::with_plan(a.clone(), std::sync::Arc::clone(&plan));
        let mut bob = Bob::new(plan, b.clone()).map_err(reconcile_error)?;
        let r = LoopbackLink::run(&mut alice, &mut bob).map_err(reconcile_error)?;
        if !report_out.is_null() {
            // SAFETY: non-NULL, writable by the caller's contract.
            let rep = unsafe { out_ref(report_out, "report_out") }?;
            *rep = qkd_cascade_report {
                stats: stats_of(&bob),
                n: r.n as u64,
                initial_errors: r.initial_errors,
                residual_errors: r.residual_errors,
                bytes_to_alice: r.bytes_to_alice,
                bytes_to_bob: r.bytes_to_bob,
                efficiency: r.efficiency(),
                seconds: r.elapsed.as_secs_f64(),
            };
        }
        handle::put(out, bob.into_key());
        Ok(())
    })
}
