//! Cascade (the two sans-IO parties and a one-call loopback run) and the whole pipeline, as
//! `qkd.cascade` and `qkd.pipeline` re-export them. Doc comments are Python docstrings.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use qkd_core::BitBlock;
use qkd_core::pipeline::{self, DEFAULT_ALGORITHM, PipelineConfig, PipelineError};
use qkd_core::reconcile::ReconcileError;
use qkd_core::reconcile::cascade::{self, MIN_QBER, Params, Plan, Variant};
use qkd_core::reconcile::loopback::LoopbackLink;

use crate::convert::{
    input_error, key_arg, key_to_py, protocol_error, qkd_error, report_to_py, seed32, size,
    toeplitz_method,
};

/// Registers the classes and functions on the native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Alice>()?;
    m.add_class::<Bob>()?;
    m.add_function(wrap_pyfunction!(reconcile, m)?)?;
    m.add_function(wrap_pyfunction!(variants, m)?)?;
    m.add_function(wrap_pyfunction!(process, m)?)?;
    m.add("DEFAULT_ALGORITHM", DEFAULT_ALGORITHM)?;
    Ok(())
}

/// The algorithm named by `algorithm=`, or the engine's default when it is None.
pub(crate) fn algorithm_or_default(algorithm: Option<&str>) -> String {
    algorithm.unwrap_or(DEFAULT_ALGORITHM).to_owned()
}

fn reconcile_err(e: ReconcileError) -> PyErr {
    match e {
        ReconcileError::BadParams(_) | ReconcileError::KeyLength { .. } => {
            input_error(e.to_string())
        }
        _ => protocol_error(e.to_string()),
    }
}

fn pipeline_err(e: PipelineError) -> PyErr {
    match e {
        PipelineError::Config(_)
        | PipelineError::LengthMismatch { .. }
        | PipelineError::ShorterThanBlock { .. } => input_error(e.to_string()),
        PipelineError::Stage { .. } => protocol_error(e.to_string()),
        _ => qkd_error(e.to_string()),
    }
}

fn variant(name: &str) -> PyResult<Variant> {
    Variant::by_name(name).ok_or_else(|| {
        let names: Vec<String> = Variant::all().into_iter().map(|v| v.name).collect();
        input_error(format!(
            "unknown Cascade algorithm '{name}'; expected one of: {}",
            names.join(", ")
        ))
    })
}

fn plan(
    algorithm: Option<&str>,
    n: usize,
    qber: f64,
    seed: Option<&[u8]>,
) -> PyResult<std::sync::Arc<Plan>> {
    let n32 = u32::try_from(n).map_err(|_| {
        input_error(format!(
            "key of {n} bits; Cascade takes at most {} bits",
            cascade::MAX_BITS
        ))
    })?;
    let params = Params {
        variant: variant(algorithm.unwrap_or(DEFAULT_ALGORITHM))?,
        n: n32,
        qber,
        seed: seed32(seed, "seed")?,
    };
    Plan::new(params).map_err(reconcile_err)
}

/// Names of the built-in Cascade variants (Martinez-Mateo et al. 2014 and extras), for
/// `algorithm=`.
#[pyfunction]
fn variants() -> Vec<String> {
    Variant::all().into_iter().map(|v| v.name).collect()
}

/// Reconcile Bob's noisy key with Alice's by Cascade, both parties in this process,
/// every message through its wire encoding (as two sites would exchange them).
///
/// Args:
///     alice: Alice's key (packed uint8 or bool array, or bytes).
///     bob: Bob's key, same length.
///     algorithm: Cascade variant (see `variants()`); None: `DEFAULT_ALGORITHM` ("yanetal"),
///         the engine's default everywhere.
///     qber: QBER estimate that sets the block sizes, in (0, 0.5). None uses the error rate
///         actually present in the pair (simulation only: a real Bob does not know it).
///     seed: 32 public bytes for the shuffles, or None for fresh ones.
///     bits: length of packed keys whose length is not a multiple of 8.
///     packed: return the corrected key packed (default) or as bools.
///
/// Returns:
///     (corrected, stats): Bob's corrected key and a dict: disclosed_bits (leakage),
///     efficiency (disclosed / (n h(e/n)), e the errors actually present), initial_errors,
///     residual_errors, round_trips, messages, passes, corrected, bytes_to_alice,
///     bytes_to_bob, n, algorithm, qber, elapsed (seconds).
///
/// Raises:
///     InputError: keys of different lengths, an unknown algorithm, qber out of range.
#[pyfunction]
#[pyo3(signature = (alice, bob, algorithm=None, qber=None, seed=None, *, bits=None, packed=true))]
fn reconcile<'py>(
    py: Python<'py>,
    alice: &Bound<'py, PyAny>,
    bob: &Bound<'py, PyAny>,
    algorithm: Option<&str>,
    qber: Option<f64>,
    seed: Option<&[u8]>,
    bits: Option<i64>,
    packed: bool,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let a = key_arg(alice, bits, "alice")?;
    let b = key_arg(bob, bits, "bob")?;
    if a.len() != b.len() {
        return Err(input_error(format!(
            "alice has {} bits and bob {} bits; expected equal lengths",
            a.len(),
            b.len()
        )));
    }
    let qber = match qber {
        Some(q) => q,
        None => {
            let e = a
                .hamming_distance(&b)
                .map_err(|e| input_error(e.to_string()))?;
            (e as f64 / a.len().max(1) as f64).clamp(MIN_QBER, 0.49)
        }
    };
    let plan = plan(algorithm, a.len(), qber, seed)?;
    let plan_name = plan.params().variant.name.clone();
    let (report, key) = py
        .detach(|| {
            let mut alice = cascade::Alice::with_plan(a, plan.clone());
            let mut bob = cascade::Bob::new(plan, b)?;
            let report = LoopbackLink::run(&mut alice, &mut bob)?;
            Ok::<_, ReconcileError>((report, bob.into_key()))
        })
        .map_err(reconcile_err)?;
    let stats = report_to_py(py, &report)?;
    let d = stats.cast::<PyDict>()?;
    // Flatten Bob's counters into the top level: one flat dict per run suits a DataFrame.
    if let Some(bob_stats) = d.get_item("bob")? {
        for (k, v) in bob_stats.cast::<PyDict>()?.iter() {
            d.set_item(k, v)?;
        }
        d.del_item("bob")?;
    }
    d.set_item("efficiency", report.efficiency())?;
    d.set_item("algorithm", plan_name)?;
    d.set_item("qber", qber)?;
    Ok((key_to_py(py, &key, packed)?, stats))
}

/// Alice's side of Cascade: holds the reference key and answers Bob's parity questions.
///
/// Feed every message from Bob to `handle`; send what it returns back to Bob. It returns None
/// once Bob said he is done. Alice's key never changes.
///
/// Args:
///     key: Alice's key (packed uint8 or bool array, or bytes).
///     bits: length of a packed key whose length is not a multiple of 8.
#[pyclass(module = "qkd.cascade")]
struct Alice {
    inner: cascade::Alice,
}

#[pymethods]
impl Alice {
    #[new]
    #[pyo3(signature = (key, *, bits=None))]
    fn new(key: &Bound<'_, PyAny>, bits: Option<i64>) -> PyResult<Self> {
        Ok(Self {
            inner: cascade::Alice::new(key_arg(key, bits, "key")?),
        })
    }

    /// Handle one message from Bob (bytes); returns Alice's reply (bytes), or None when the
    /// run is over. Raises ProtocolError for a malformed or unexpected message (the session
    /// then accepts nothing more).
    fn handle<'py>(
        &mut self,
        py: Python<'py>,
        message: &[u8],
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let inner = &mut self.inner;
        let reply = py
            .detach(|| inner.handle_bytes(message))
            .map_err(reconcile_err)?;
        Ok(reply.map(|r| PyBytes::new(py, &r)))
    }

    /// Parity bits disclosed so far (the reconciliation leakage).
    #[getter]
    fn disclosed_bits(&self) -> u64 {
        self.inner.disclosed_bits()
    }

    /// True once Bob's final message arrived.
    #[getter]
    fn done(&self) -> bool {
        self.inner.is_done()
    }

    /// Alice's key length in bits.
    fn __len__(&self) -> usize {
        self.inner.key().len()
    }

    fn __repr__(&self) -> String {
        format!(
            "cascade.Alice(bits={}, disclosed_bits={}, done={})",
            self.inner.key().len(),
            self.inner.disclosed_bits(),
            self.inner.is_done()
        )
    }
}

/// Bob's side of Cascade: holds the noisy key, asks parity questions and corrects his key.
///
/// `start()` gives the first message (the run's parameters); then pass every reply from
/// Alice to `handle`, which returns the next message for Alice. The run is over when `done`
/// is true (Bob's last message, which tells Alice so, must still be delivered to her).
///
/// Args:
///     key: Bob's key (packed uint8 or bool array, or bytes).
///     qber: QBER estimate in (0, 0.5); it sets the block sizes.
///     algorithm: Cascade variant (see `variants()`); None: `DEFAULT_ALGORITHM`.
///     seed: 32 public bytes for the shuffles, or None for fresh ones (Alice learns them
///         from the first message).
///     bits: length of a packed key whose length is not a multiple of 8.
#[pyclass(module = "qkd.cascade")]
struct Bob {
    inner: cascade::Bob,
    algorithm: String,
}

#[pymethods]
impl Bob {
    #[new]
    #[pyo3(signature = (key, qber, algorithm=None, seed=None, *, bits=None))]
    fn new(
        key: &Bound<'_, PyAny>,
        qber: f64,
        algorithm: Option<&str>,
        seed: Option<&[u8]>,
        bits: Option<i64>,
    ) -> PyResult<Self> {
        let key = key_arg(key, bits, "key")?;
        let plan = plan(algorithm, key.len(), qber, seed)?;
        Ok(Self {
            algorithm: plan.params().variant.name.clone(),
            inner: cascade::Bob::new(plan, key).map_err(reconcile_err)?,
        })
    }

    /// The first message for Alice (bytes): the hello with the run's parameters.
    fn start<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let msg = self.inner.start().map_err(reconcile_err)?;
        let bytes = msg.encode().map_err(reconcile_err)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Handle one reply from Alice (bytes); returns Bob's next message (bytes) for Alice.
    /// Raises ProtocolError for a malformed or unexpected message.
    fn handle<'py>(&mut self, py: Python<'py>, message: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let inner = &mut self.inner;
        let reply = py
            .detach(|| inner.handle_bytes(message))
            .map_err(reconcile_err)?;
        Ok(PyBytes::new(py, &reply))
    }

    /// True once Bob has sent his final message.
    #[getter]
    fn done(&self) -> bool {
        self.inner.is_done()
    }

    /// Bob's key as corrected so far (packed uint8 by default).
    #[pyo3(signature = (*, packed=true))]
    fn key<'py>(&self, py: Python<'py>, packed: bool) -> PyResult<Bound<'py, PyAny>> {
        key_to_py(py, self.inner.key(), packed)
    }

    /// Bob's counters: disclosed_bits, corrected, round_trips, messages, passes, algorithm.
    #[getter]
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let d = report_to_py(py, &self.inner.stats())?;
        d.cast::<PyDict>()?.set_item("algorithm", &self.algorithm)?;
        Ok(d)
    }

    /// Bob's key length in bits.
    fn __len__(&self) -> usize {
        self.inner.key().len()
    }

    fn __repr__(&self) -> String {
        format!(
            "cascade.Bob(bits={}, algorithm={:?}, done={})",
            self.inner.key().len(),
            self.algorithm,
            self.inner.is_done()
        )
    }
}

/// Run the whole post-processing pipeline on a raw key pair, block by block (in parallel):
/// estimate -> Cascade -> confirm -> finite-key length -> Toeplitz -> entropy check.
///
/// Args:
///     alice, bob: the raw sifted keys (packed uint8 or bool arrays, or bytes), equal length;
///         cut into blocks of block_bits bits (a shorter tail is dropped).
///     block_bits: raw bits per block, sample included (default 2^20).
///     sample_bits: bits disclosed per block to estimate the QBER (default 2^14).
///     algorithm: Cascade variant or LDPC (`ldpc-blind`, ...); None: `DEFAULT_ALGORITHM`.
///     frame_bits: bits per Cascade frame; a block's frames advance together and are confirmed
///         one by one, a failed frame being reconciled again (default 2^16; 0: one frame).
///     eps_pe, eps_sec, eps_cor: parameter-estimation, secrecy and correctness parameters.
///     max_qber: the top rung of the QBER ladder: blocks whose sample QBER or QBER upper bound
///         exceeds it are discarded (default 0.11).
///     toeplitz: Toeplitz method (default "auto": the fastest exact one for the size).
///     bits: length of packed keys whose length is not a multiple of 8.
///     packed: return final keys packed (default) or as bools.
///
/// Returns:
///     (keys, reports, summary): `keys[i]` is block i's final key (identical on both sides)
///     or None when the block yielded none; `reports[i]` is a flat dict per block (qber,
///     leak_alice_bits, leak_bob_bits, efficiency, final_bits, outcome, stage times, ...):
///     `pandas.DataFrame(reports)` takes it; summary totals the run (secret_fraction,
///     efficiency_mean, raw_bits_per_second, ...).
///
/// Raises:
///     InputError: a bad setting or keys of different lengths.
///     ProtocolError: a stage failed on a block.
#[pyfunction]
#[pyo3(signature = (alice, bob, *, block_bits=1<<20, sample_bits=1<<14, algorithm=None, frame_bits=1<<16, eps_pe=1e-10, eps_sec=1e-10, eps_cor=1e-15, max_qber=0.11, toeplitz="auto", bits=None, packed=true))]
fn process<'py>(
    py: Python<'py>,
    alice: &Bound<'py, PyAny>,
    bob: &Bound<'py, PyAny>,
    block_bits: i64,
    sample_bits: i64,
    algorithm: Option<&str>,
    frame_bits: i64,
    eps_pe: f64,
    eps_sec: f64,
    eps_cor: f64,
    max_qber: f64,
    toeplitz: &str,
    bits: Option<i64>,
    packed: bool,
) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>, Bound<'py, PyAny>)> {
    let a: BitBlock = key_arg(alice, bits, "alice")?;
    let b: BitBlock = key_arg(bob, bits, "bob")?;
    let toeplitz = toeplitz_method(toeplitz)?;
    let block_bits = size("block_bits", block_bits)?;
    if block_bits == 0 {
        return Err(input_error(
            "block_bits = 0; expected a positive block size",
        ));
    }
    let cfg = PipelineConfig {
        block_bits,
        sample_bits: size("sample_bits", sample_bits)?,
        algorithm: algorithm_or_default(algorithm),
        frame_bits: size("frame_bits", frame_bits)?,
        eps_pe,
        eps_sec,
        eps_cor,
        max_qber,
        toeplitz,
    };
    let (results, summary) = py
        .detach(|| {
            let mut results = Vec::new();
            let summary = pipeline::process(&a, &b, &cfg, |r| {
                results.push(r);
                Ok(())
            })?;
            Ok::<_, PipelineError>((results, summary))
        })
        .map_err(pipeline_err)?;
    let keys = PyList::empty(py);
    let reports = PyList::empty(py);
    for r in &results {
        match &r.key {
            Some(k) => keys.append(key_to_py(py, k, packed)?)?,
            None => keys.append(py.None())?,
        }
        reports.append(flat_report(py, &r.report)?)?;
    }
    Ok((keys, reports, report_to_py(py, &summary)?))
}

/// A block report as one flat dict: nested parts (`secret`, `times`, `outcome`) become
/// prefixed columns so `pandas.DataFrame(reports)` gets one scalar per cell.
pub(crate) fn flat_report<'py>(
    py: Python<'py>,
    report: &pipeline::BlockReport,
) -> PyResult<Bound<'py, PyDict>> {
    let value = serde_json::to_value(report)
        .map_err(|e| qkd_error(format!("report does not serialize: {e}")))?;
    let out = PyDict::new(py);
    let serde_json::Value::Object(map) = value else {
        return Err(qkd_error("block report is not a JSON object"));
    };
    for (k, v) in &map {
        match (k.as_str(), v) {
            ("outcome", serde_json::Value::Object(o)) => {
                let kind = o.get("kind").and_then(|x| x.as_str()).unwrap_or("unknown");
                out.set_item("outcome", kind)?;
                out.set_item(
                    "outcome_reason",
                    o.get("reason").and_then(|x| x.as_str()).unwrap_or(""),
                )?;
            }
            (prefix @ ("secret" | "times"), serde_json::Value::Object(inner)) => {
                for (ik, iv) in inner {
                    let col = if prefix == "times" {
                        format!("seconds_{ik}")
                    } else {
                        format!("secret_{ik}")
                    };
                    out.set_item(col, crate::convert::json_to_py(py, iv)?)?;
                }
            }
            ("secret", serde_json::Value::Null) => {}
            _ => out.set_item(k, crate::convert::json_to_py(py, v)?)?,
        }
    }
    Ok(out)
}
