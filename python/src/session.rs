//! A block's whole life between two sites as one sans-IO session per side (qkd-core
//! `session`, DESIGN §9), as `qkd.session` re-exports it: `Link`, `AliceSession`,
//! `BobSession` (both `Session`s) and `block_id_of`. `qkd.session.run_pair` is pure Python over
//! these methods. Doc comments are Python docstrings.

use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use qkd_core::auth::KeyPool;
use qkd_core::pipeline::PipelineConfig;
use qkd_core::rng::OsRandom;
use qkd_core::session::{self, Party, SessionError, SessionOutcome};

use crate::convert::{
    input_error, key_arg, key_to_py, protocol_error, qkd_error, size, toeplitz_method,
};
use crate::protocol::{algorithm_or_default, flat_report};

pyo3::import_exception!(qkd.errors, AuthenticationError);

/// Registers the classes and functions on the native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Link>()?;
    m.add_class::<Session>()?;
    m.add_class::<AliceSession>()?;
    m.add_class::<BobSession>()?;
    m.add_function(wrap_pyfunction!(block_id_of, m)?)?;
    Ok(())
}

/// A session error as the `qkd.errors` exception of its kind, with the core's message.
fn session_err(e: &SessionError) -> PyErr {
    let msg = e.to_string();
    match e {
        SessionError::Config(_) => input_error(msg),
        SessionError::Auth(_) => AuthenticationError::new_err(msg),
        SessionError::Rng(_) => qkd_error(msg),
        SessionError::Stage { stage, .. }
            if !matches!(*stage, "reconcile" | "estimate" | "confirm") =>
        {
            qkd_error(msg)
        }
        _ => protocol_error(msg),
    }
}

/// One side's view of a link: the settings both sides share, the pre-shared authentication key
/// pool and the cached Cascade plans. Create one per link and side, and pass it to every
/// session of that side (sessions on several threads may share it).
///
/// Args:
///     psk: the pre-shared authentication secret (bytes; both sides the same). Each block
///         spends 256 bits of it (two one-time pads), plus 128 bits whenever a hash key is
///         drawn; `auth_refill` adds more.
///     sample_bits, algorithm, frame_bits, eps_pe, eps_sec, eps_cor, max_qber, toeplitz: the
///         settings, as `qkd.pipeline.process` takes them (both sides must use the same
///         settings, or the first hello is refused; the Toeplitz method is each side's own).
///         The block length is each session's raw block.
///
/// Raises:
///     InputError: a bad setting.
#[pyclass(module = "qkd.session", frozen)]
struct Link {
    inner: Arc<session::Link>,
}

#[pymethods]
impl Link {
    #[new]
    #[pyo3(signature = (psk, *, sample_bits=1<<14, algorithm=None, frame_bits=1<<16, eps_pe=1e-10, eps_sec=1e-10, eps_cor=1e-15, max_qber=0.11, toeplitz="auto"))]
    fn new(
        psk: &[u8],
        sample_bits: i64,
        algorithm: Option<&str>,
        frame_bits: i64,
        eps_pe: f64,
        eps_sec: f64,
        eps_cor: f64,
        max_qber: f64,
        toeplitz: &str,
    ) -> PyResult<Self> {
        let toeplitz = toeplitz_method(toeplitz)?;
        let cfg = PipelineConfig {
            // Not used by a link: each session's raw block has its own length.
            block_bits: u32::MAX as usize,
            sample_bits: size("sample_bits", sample_bits)?,
            algorithm: algorithm_or_default(algorithm),
            frame_bits: size("frame_bits", frame_bits)?,
            eps_pe,
            eps_sec,
            eps_cor,
            max_qber,
            toeplitz,
        };
        let inner = session::Link::new(cfg, Box::new(KeyPool::new(psk)), &mut OsRandom)
            .map_err(|e| session_err(&e))?;
        Ok(Self { inner })
    }

    /// Authentication key bits left in the pool.
    #[getter]
    fn auth_available_bits(&self) -> usize {
        self.inner.auth_keys().available_bits()
    }

    /// Authentication key bits spent so far.
    #[getter]
    fn auth_spent_bits(&self) -> usize {
        self.inner.auth_keys().spent_bits()
    }

    /// Append key to the authentication pool (bytes: final key set aside for authentication,
    /// or more pre-shared secret). Both sides must add the same bytes in the same order.
    fn auth_refill(&self, key: &[u8]) {
        self.inner.auth_keys().refill(key);
    }

    fn __repr__(&self) -> String {
        let cfg = self.inner.config();
        format!(
            "session.Link(sample_bits={}, algorithm={:?}, frame_bits={}, auth_available_bits={})",
            cfg.sample_bits,
            cfg.algorithm,
            cfg.frame_bits,
            self.inner.auth_keys().available_bits()
        )
    }
}

struct Inner {
    party: Box<dyn Party>,
    /// The outcome once taken from the party (kept: `outcome()` may be called again).
    outcome: Option<Result<SessionOutcome, SessionError>>,
}

/// One side's session of one block (the base class of `AliceSession` and `BobSession`).
///
/// Feed every message from the peer to `handle`; send every message `poll_transmit` returns
/// (until it returns None), also after the session has finished (Bob's last tag, an abort).
/// Once `finished`, `outcome()` gives the block's report and final key.
#[pyclass(module = "qkd.session", subclass)]
struct Session {
    // A mutex only so that the class is `Sync`; every method holds `&mut self` or locks it.
    inner: Mutex<Inner>,
    side: &'static str,
    block_id: String,
}

impl Session {
    fn new(party: Box<dyn Party>, side: &'static str) -> Self {
        Self {
            block_id: party.block_id().to_owned(),
            inner: Mutex::new(Inner {
                party,
                outcome: None,
            }),
            side,
        }
    }

    fn inner(&mut self) -> &mut Inner {
        self.inner.get_mut().unwrap_or_else(|p| p.into_inner())
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Inner {
    fn finished(&self) -> bool {
        self.party.is_finished()
    }
}

#[pymethods]
impl Session {
    /// The block this session is for.
    #[getter]
    fn block_id(&self) -> &str {
        &self.block_id
    }

    /// "alice" or "bob".
    #[getter]
    fn side(&self) -> String {
        self.side.to_ascii_lowercase()
    }

    /// Handle one message from the peer (bytes). A malformed, replayed, reordered, unauthentic
    /// or inconsistent message, or the peer's abort, ends the session: this raises the
    /// session's error (ProtocolError; AuthenticationError when authentication failed), which
    /// is also its outcome, and queues an abort for the peer. After the end every message
    /// raises ProtocolError and changes nothing.
    fn handle(&mut self, py: Python<'_>, message: &[u8]) -> PyResult<()> {
        let inner = self.inner();
        if inner.outcome.is_some() {
            return Err(session_err(&SessionError::Ended));
        }
        let party = &mut inner.party;
        py.detach(|| party.handle(message))
            .map_err(|e| session_err(&e))
    }

    /// The next message for the peer (bytes), or None when nothing is queued.
    fn poll_transmit<'py>(&mut self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.inner()
            .party
            .poll_transmit()
            .map(|m| PyBytes::new(py, &m))
    }

    /// True once the session has ended (messages may still wait in `poll_transmit`).
    #[getter]
    fn finished(&self) -> bool {
        self.with(|i| i.finished())
    }

    /// The outcome of a finished session: (report, key). `report` is a flat dict as
    /// `qkd.pipeline.process` gives per block (with block_id and auth_bits); `key` is the final
    /// key (packed uint8, or bool with packed=False), identical on both sides, or None when the
    /// block yielded none (report["outcome"] says why: "discarded" or "quarantined").
    ///
    /// Raises:
    ///     ProtocolError (AuthenticationError, InputError, QkdError): the error that ended the
    ///         session, with its message (every call).
    ///     QkdError: the session has not ended yet.
    #[pyo3(signature = (*, packed=true))]
    fn outcome<'py>(
        &mut self,
        py: Python<'py>,
        packed: bool,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let (side, id) = (self.side, self.block_id.clone());
        let inner = self.inner();
        if inner.outcome.is_none() {
            inner.outcome = inner.party.take_outcome();
        }
        match &inner.outcome {
            None => Err(qkd_error(format!(
                "{side}'s session of block {id:?} has not ended yet; keep moving its messages"
            ))),
            Some(Err(e)) => Err(session_err(e)),
            Some(Ok(o)) => {
                let report = flat_report(py, &o.report)?.into_any();
                let key = match &o.key {
                    Some(k) => key_to_py(py, k, packed)?,
                    None => py.None().into_bound(py),
                };
                Ok((report, key))
            }
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "session.{}Session(block_id={:?}, finished={})",
            self.side,
            self.block_id,
            self.finished()
        )
    }
}

/// Alice's session of one block: she draws every public seed, discloses the sample, answers
/// Cascade, challenges confirmation and announces the secret length and Toeplitz seed. Her
/// hello and sample are queued at once (take them with `poll_transmit`).
///
/// Args:
///     link: Alice's `Link`.
///     block_id: the block's ID, the same on both sides (1 to 128 bytes of UTF-8, no control
///         characters).
///     raw: Alice's raw sifted bits (packed uint8 or bool array, or bytes): more than twice
///         the sample and fewer than 2^32 bits.
///     bits: length of a packed `raw` whose length is not a multiple of 8.
///
/// Raises:
///     InputError: a malformed block ID, a raw block too short for the sample.
///     AuthenticationError: the link's authentication pool is exhausted.
#[pyclass(module = "qkd.session", extends = Session)]
struct AliceSession;

#[pymethods]
impl AliceSession {
    #[new]
    #[pyo3(signature = (link, block_id, raw, *, bits=None))]
    fn new(
        link: &Link,
        block_id: &str,
        raw: &Bound<'_, PyAny>,
        bits: Option<i64>,
    ) -> PyResult<PyClassInitializer<Self>> {
        let raw = key_arg(raw, bits, "raw")?;
        let party =
            session::AliceSession::new(Arc::clone(&link.inner), block_id, raw, Box::new(OsRandom))
                .map_err(|e| session_err(&e))?;
        Ok(PyClassInitializer::from(Session::new(Box::new(party), "Alice")).add_subclass(Self))
    }
}

/// Bob's session of one block: it waits for Alice's hello, then estimates, asks Cascade's
/// questions and checks confirmation. Arguments and errors as `AliceSession` (the pool is
/// checked when the hello names its positions).
#[pyclass(module = "qkd.session", extends = Session)]
struct BobSession;

#[pymethods]
impl BobSession {
    #[new]
    #[pyo3(signature = (link, block_id, raw, *, bits=None))]
    fn new(
        link: &Link,
        block_id: &str,
        raw: &Bound<'_, PyAny>,
        bits: Option<i64>,
    ) -> PyResult<PyClassInitializer<Self>> {
        let raw = key_arg(raw, bits, "raw")?;
        let party = session::BobSession::new(Arc::clone(&link.inner), block_id, raw)
            .map_err(|e| session_err(&e))?;
        Ok(PyClassInitializer::from(Session::new(Box::new(party), "Bob")).add_subclass(Self))
    }
}

/// The block ID a session message is for (to route messages of many blocks over one
/// connection, and to start Bob's session when a block's first message arrives).
///
/// Raises:
///     ProtocolError: the bytes are not a session message.
#[pyfunction]
fn block_id_of(message: &[u8]) -> PyResult<String> {
    session::wire::block_id_of(message).map_err(|e| session_err(&e))
}
