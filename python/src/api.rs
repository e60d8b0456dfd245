//! The functions of `qkd._qkd`, grouped as the Python submodules re-export them.
//!
//! Doc comments here are the Python docstrings (`help(qkd.amplify.toeplitz)`), so they are
//! written for Python users.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use qkd_core::BitBlock;
use qkd_core::amplify::{
    Bb84Tlgr2012, DecoyDevice, DecoyStatistics, FiniteKeyError, FiniteKeyInput, Lim2014,
    QberLadder, SecretLengthModel, ToeplitzError, expected_statistics,
};
use qkd_core::entropy::{self, AssessConfig, EntropyError};
use qkd_core::estimate::{self, Bound as QberBound, EstimateError, SampleMessage};
use qkd_core::rng::OsRandom;
use qkd_core::sim::{BurstShape, ErrorModel, SimConfig, SimError};

use crate::convert::{
    count, count32, input_error, key_arg, key_from_py, key_to_py, opt_size, protocol_error,
    qkd_error, report_to_py, seed32, size, toeplitz_method,
};

/// Registers every function on the native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(simulate, m)?)?;
    m.add_function(wrap_pyfunction!(qber_upper_bound, m)?)?;
    m.add_function(wrap_pyfunction!(sample_positions, m)?)?;
    m.add_function(wrap_pyfunction!(disclose_sample, m)?)?;
    m.add_function(wrap_pyfunction!(compare_sample, m)?)?;
    m.add_function(wrap_pyfunction!(estimate_qber, m)?)?;
    m.add_function(wrap_pyfunction!(toeplitz, m)?)?;
    m.add_function(wrap_pyfunction!(seed_bits_needed, m)?)?;
    m.add_function(wrap_pyfunction!(secret_length, m)?)?;
    m.add_function(wrap_pyfunction!(qber_rung, m)?)?;
    m.add_function(wrap_pyfunction!(decoy_secret_length_json, m)?)?;
    m.add_function(wrap_pyfunction!(decoy_expected_counts_json, m)?)?;
    m.add_function(wrap_pyfunction!(decoy_typical_device_json, m)?)?;
    m.add_function(wrap_pyfunction!(binary_entropy, m)?)?;
    m.add_function(wrap_pyfunction!(assess, m)?)?;
    m.add_function(wrap_pyfunction!(shannon_entropy, m)?)?;
    m.add_function(wrap_pyfunction!(min_entropy, m)?)?;
    m.add_function(wrap_pyfunction!(pack_bits, m)?)?;
    m.add_function(wrap_pyfunction!(unpack_bits, m)?)?;
    m.add("DEFAULT_FALSE_ALARM", entropy::DEFAULT_ALPHA)?;
    m.add("MAX_TOEPLITZ_INPUT_BITS", qkd_core::amplify::MAX_INPUT_BITS)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Error translation
// ---------------------------------------------------------------------------------------------

fn sim_err(e: SimError) -> PyErr {
    match e {
        SimError::Rng(_) => qkd_error(e.to_string()),
        _ => input_error(e.to_string()),
    }
}

fn estimate_err(e: EstimateError) -> PyErr {
    match e {
        EstimateError::KeyLengthMismatch { .. }
        | EstimateError::MalformedSample { .. }
        | EstimateError::UnsupportedVersion { .. }
        | EstimateError::Decode(_) => protocol_error(e.to_string()),
        _ => input_error(e.to_string()),
    }
}

fn toeplitz_err(e: ToeplitzError) -> PyErr {
    input_error(e.to_string())
}

fn finite_key_err(e: FiniteKeyError) -> PyErr {
    input_error(e.to_string())
}

fn entropy_err(e: EntropyError) -> PyErr {
    input_error(e.to_string())
}

fn parse_bound(bound: &str) -> PyResult<QberBound> {
    match bound.to_ascii_lowercase().as_str() {
        "hypergeometric" | "exact" => Ok(QberBound::Hypergeometric),
        "serfling" => Ok(QberBound::Serfling),
        _ => Err(input_error(format!(
            "unknown bound '{bound}'; expected 'hypergeometric' or 'serfling'"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Simulation
// ---------------------------------------------------------------------------------------------

/// Simulate a raw sifted key pair: Alice's `n` uniform bits and Bob's copy with errors.
///
/// Args:
///     n: key length in bits (> 0).
///     qber: quantum bit error rate in [0, 0.5].
///     model: error model: "iid" (exactly round(qber * n) errors at uniformly chosen
///         positions), "bernoulli" (each bit wrong independently with probability qber) or
///         "burst" (a Gilbert-Elliott chain whose long-run error rate is qber).
///     seed: an integer for a reproducible run (tests, studies), or None for the OS random
///         source. A simulated key is never a secret key.
///     mean_burst_len, error_bad, burst_fraction: the burst shape for model="burst"
///         (defaults 32 bits, 0.5, 0.5: half the errors arrive in bursts of about 32 bits).
///     packed: return packed uint8 arrays (default) or bool arrays.
///
/// Returns:
///     (alice, bob, report): two keys and a dict describing the run (bits, qber, errors,
///     model, chain, seed, rng).
///
/// Raises:
///     InputError: n == 0, qber outside [0, 0.5], an unknown model, a bad burst shape.
#[pyfunction]
#[pyo3(signature = (n, qber, model="iid", seed=None, *, mean_burst_len=None, error_bad=None, burst_fraction=None, packed=true))]
fn simulate<'py>(
    py: Python<'py>,
    n: i64,
    qber: f64,
    model: &str,
    seed: Option<i64>,
    mean_burst_len: Option<f64>,
    error_bad: Option<f64>,
    burst_fraction: Option<f64>,
    packed: bool,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let n = size("n", n)?;
    let seed = opt_size("seed", seed)?.map(|s| s as u64);
    let mut model: ErrorModel = model.parse().map_err(sim_err)?;
    let shaped = mean_burst_len.is_some() || error_bad.is_some() || burst_fraction.is_some();
    if shaped {
        if !matches!(model, ErrorModel::Burst(_)) {
            return Err(input_error(format!(
                "burst shape parameters apply to model='burst' only, not '{}'",
                model.name()
            )));
        }
        let d = BurstShape::default();
        model = ErrorModel::Burst(BurstShape {
            mean_burst_len: mean_burst_len.unwrap_or(d.mean_burst_len),
            error_bad: error_bad.unwrap_or(d.error_bad),
            burst_fraction: burst_fraction.unwrap_or(d.burst_fraction),
        });
    }
    let config = SimConfig::new(n, qber, model);
    let pair = py
        .detach(|| match seed {
            Some(s) => config.run_seeded(s),
            None => config.run(&mut OsRandom),
        })
        .map_err(sim_err)?;
    Ok((
        key_to_py(py, &pair.alice, packed)?,
        key_to_py(py, &pair.bob, packed)?,
        report_to_py(py, &pair.report)?,
    ))
}

// ---------------------------------------------------------------------------------------------
// QBER estimation
// ---------------------------------------------------------------------------------------------

/// Upper bound on the error rate of the n - k bits left after `errors` errors were seen in a
/// uniformly random k-bit sample of n bits; it fails with probability at most `eps`.
///
/// Args:
///     n: key length before sampling, in bits.
///     k: sample size (0 < k < n).
///     errors: errors seen in the sample (<= k).
///     eps: failure probability in (0, 1).
///     bound: "hypergeometric" (exact tail, tightest; default) or "serfling".
///
/// Raises:
///     InputError: sizes or eps out of range, an unknown bound.
#[pyfunction]
#[pyo3(signature = (n, k, errors, eps=1e-10, bound="hypergeometric"))]
fn qber_upper_bound(n: i64, k: i64, errors: i64, eps: f64, bound: &str) -> PyResult<f64> {
    let (n, k, errors) = (count("n", n)?, count("k", k)?, count("errors", errors)?);
    let bound = parse_bound(bound)?;
    estimate::qber_upper_bound(n, k, errors, eps, bound).map_err(estimate_err)
}

/// The uniformly random k-subset of range(n) that a 32-byte public seed selects, ascending
/// (numpy int64). Both sides get the same positions from the same seed.
///
/// Raises:
///     InputError: not 0 < k < n, or a seed that is not 32 bytes.
#[pyfunction]
fn sample_positions<'py>(
    py: Python<'py>,
    n: i64,
    k: i64,
    seed: &[u8],
) -> PyResult<Bound<'py, numpy::PyArray1<i64>>> {
    let (n, k) = (size("n", n)?, size("k", k)?);
    let seed = seed32(Some(seed), "seed")?;
    let pos = py
        .detach(|| estimate::sample_positions(n, k, &seed))
        .map_err(estimate_err)?;
    let pos: Vec<i64> = pos.into_iter().map(|p| p as i64).collect();
    Ok(numpy::PyArray1::from_vec(py, pos))
}

/// Alice's side of QBER estimation: disclose k bits of `key` at positions chosen by `seed`.
///
/// Args:
///     key: Alice's key (packed uint8 or bool array, or bytes).
///     k: bits to disclose (0 < k < len(key)).
///     seed: 32 public random bytes that select the positions, or None for fresh ones from
///         the OS random source.
///     bits: key length in bits when a packed key's length is not a multiple of 8.
///     packed: return the remaining key packed (default) or as bools.
///
/// Returns:
///     (message, rest): the message for Bob (bytes, compact binary) and Alice's key with the
///     sample removed.
///
/// Raises:
///     InputError: a bad key or sample size.
#[pyfunction]
#[pyo3(signature = (key, k, seed=None, *, bits=None, packed=true))]
fn disclose_sample<'py>(
    py: Python<'py>,
    key: &Bound<'py, PyAny>,
    k: i64,
    seed: Option<&[u8]>,
    bits: Option<i64>,
    packed: bool,
) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyAny>)> {
    let key = key_arg(key, bits, "key")?;
    let k = size("k", k)?;
    let seed = seed32(seed, "seed")?;
    let (msg, rest) = py
        .detach(|| estimate::disclose_sample(&key, k, seed))
        .map_err(estimate_err)?;
    Ok((
        PyBytes::new(py, &msg.to_bytes()),
        key_to_py(py, &rest, packed)?,
    ))
}

/// Bob's side of QBER estimation: compare Alice's disclosed sample with his key.
///
/// Args:
///     key: Bob's key (packed uint8 or bool array, or bytes).
///     message: the bytes `disclose_sample` returned on Alice's side.
///     eps: failure probability of the bound, in (0, 1).
///     bound: "hypergeometric" (default) or "serfling".
///     bits: key length in bits when a packed key's length is not a multiple of 8.
///     packed: return the remaining key packed (default) or as bools.
///
/// Returns:
///     (estimate, rest): a dict (n, k, errors, observed_qber, remaining_bits, eps, bound,
///     qber_upper) and Bob's key with the sample removed.
///
/// Raises:
///     ProtocolError: a message that does not decode, has another version, or does not fit
///         this key.
///     InputError: bad eps, bound or key.
#[pyfunction]
#[pyo3(signature = (key, message, eps=1e-10, bound="hypergeometric", *, bits=None, packed=true))]
fn compare_sample<'py>(
    py: Python<'py>,
    key: &Bound<'py, PyAny>,
    message: &[u8],
    eps: f64,
    bound: &str,
    bits: Option<i64>,
    packed: bool,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let key = key_arg(key, bits, "key")?;
    let bound = parse_bound(bound)?;
    let msg = SampleMessage::from_bytes(message).map_err(estimate_err)?;
    let (est, rest) = py
        .detach(|| estimate::compare_sample(&key, &msg, eps, bound))
        .map_err(estimate_err)?;
    Ok((report_to_py(py, &est)?, key_to_py(py, &rest, packed)?))
}

/// Both sides of QBER estimation in one call (simulation and studies): Alice discloses k
/// bits chosen by `seed`, Bob compares, both drop the sample.
///
/// Returns:
///     (estimate, alice_rest, bob_rest): the estimate dict (as `compare_sample`) and both
///     keys with the sample removed.
///
/// Raises:
///     InputError: keys of different lengths, bad k, eps, bound or seed.
#[pyfunction]
#[pyo3(signature = (alice, bob, k, eps=1e-10, bound="hypergeometric", seed=None, *, bits=None, packed=true))]
fn estimate_qber<'py>(
    py: Python<'py>,
    alice: &Bound<'py, PyAny>,
    bob: &Bound<'py, PyAny>,
    k: i64,
    eps: f64,
    bound: &str,
    seed: Option<&[u8]>,
    bits: Option<i64>,
    packed: bool,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let alice = key_arg(alice, bits, "alice")?;
    let bob = key_arg(bob, bits, "bob")?;
    if alice.len() != bob.len() {
        return Err(input_error(format!(
            "alice has {} bits and bob {} bits; expected equal lengths",
            alice.len(),
            bob.len()
        )));
    }
    let k = size("k", k)?;
    let bound = parse_bound(bound)?;
    let seed = seed32(seed, "seed")?;
    let (est, a_rest, b_rest) = py
        .detach(|| {
            let (msg, a_rest) = estimate::disclose_sample(&alice, k, seed)?;
            let (est, b_rest) = estimate::compare_sample(&bob, &msg, eps, bound)?;
            Ok::<_, EstimateError>((est, a_rest, b_rest))
        })
        .map_err(estimate_err)?;
    Ok((
        report_to_py(py, &est)?,
        key_to_py(py, &a_rest, packed)?,
        key_to_py(py, &b_rest, packed)?,
    ))
}

// ---------------------------------------------------------------------------------------------
// Privacy amplification
// ---------------------------------------------------------------------------------------------

/// Toeplitz hash of key `x` (n bits) down to `m` bits with a public random `seed`.
///
/// Convention (DESIGN §4, fixed so two vendors' KMEs agree): the seed s has n + m - 1 bits,
/// T[i][j] = s[i - j + n - 1] for 0 <= i < m, 0 <= j < n, and the output is y = T x over
/// GF(2). Bit i of a packed array is bit i % 8 of byte i // 8. A longer seed is accepted; only
/// its first n + m - 1 bits are used.
///
/// Args:
///     x: the input key (packed uint8 or bool array, or bytes).
///     seed: the seed, same formats; at least n + m - 1 bits.
///     m: output length in bits, 0 < m < n.
///     bits: length of a packed `x` whose length is not a multiple of 8.
///     seed_bits: length of a packed seed whose length is not a multiple of 8.
///     method: "auto" (default: the fastest exact method for the size), "clmul", "fft", "ntt" or "reference"
///         (the matrix definition, O(n m): small inputs only); every method gives the same bits.
///     packed: return packed uint8 (default) or bool.
///
/// Raises:
///     InputError: m out of range, a seed that is too short, an unknown method, bad arrays.
#[pyfunction]
#[pyo3(signature = (x, seed, m, *, bits=None, seed_bits=None, method="auto", packed=true))]
fn toeplitz<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    seed: &Bound<'py, PyAny>,
    m: i64,
    bits: Option<i64>,
    seed_bits: Option<i64>,
    method: &str,
    packed: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let method = toeplitz_method(method)?;
    let x = key_arg(x, bits, "x")?;
    let seed = key_from_py(seed, opt_size("seed_bits", seed_bits)?, "seed")?;
    let m = size("m", m)?;
    let y = py
        .detach(|| qkd_core::amplify::toeplitz_hash_with(method, &x, &seed, m))
        .map_err(toeplitz_err)?;
    key_to_py(py, &y, packed)
}

/// Seed length in bits to hash n bits down to m bits: n + m - 1.
#[pyfunction]
fn seed_bits_needed(n: i64, m: i64) -> PyResult<usize> {
    Ok(qkd_core::amplify::seed_bits_needed(
        size("n", n)?,
        size("m", m)?,
    ))
}

/// Finite-key secret length of ideal-qubit BB84 (Tomamichel, Lim, Gisin, Renner, Nat. Commun.
/// 3, 634 (2012)) with the constants of docs/security.md:
///
///     l = n (q - h(Q_tol + mu)) - leak_EC - max(t, log2(2 / eps_cor)) - 2 log2(L / eps_sec),
///     mu = sqrt((n + k) / (n k) * (k + 1) / k * ln(4 L / eps_sec))
///
/// Single-photon BB84 (no decoy states; see decoy_secret_length); q is the preparation
/// quality (1 for ideal BB84). `qkd.amplify.secret_length` broadcasts this over numpy arrays.
///
/// Args:
///     key_bits: n, key bits after the sample was removed.
///     sample_bits: k, bits disclosed to estimate the QBER.
///     qber: Q_tol, the tolerated QBER the block is sized for, in [0, 0.5] (fixed before the
///         sample is seen; the block aborts when its sample QBER exceeds it).
///     leak_ec_bits: bits disclosed by reconciliation on both sides (no confirmation tag).
///     confirm_tag_bits: t, the confirmation tag length (charged as max(t, log2(2/eps_cor))).
///     length_choices: L, the rungs of the QBER ladder the length was chosen from (1: fixed).
///     eps_sec, eps_cor: secrecy and correctness parameters in (0, 1).
///     preparation_quality: q (default 1).
///
/// Returns:
///     dict: bits (the length to use; 0 when the block yields no key), raw_bits (before
///     rounding, may be negative), and every term: asymptotic_bits, eps_smooth,
///     qber_deviation (mu), phase_error_bound, entropy_bits, leak_ec_bits, confirm_cost_bits,
///     secrecy_cost_bits, model.
///
/// Raises:
///     InputError: parameters out of range or negative (a block that yields no key is not an
///     error).
#[pyfunction]
#[pyo3(signature = (key_bits, sample_bits, qber, leak_ec_bits, confirm_tag_bits=0, length_choices=1, eps_sec=1e-10, eps_cor=1e-15, preparation_quality=1.0))]
#[allow(clippy::too_many_arguments)]
fn secret_length<'py>(
    py: Python<'py>,
    key_bits: i64,
    sample_bits: i64,
    qber: f64,
    leak_ec_bits: i64,
    confirm_tag_bits: i64,
    length_choices: i64,
    eps_sec: f64,
    eps_cor: f64,
    preparation_quality: f64,
) -> PyResult<Bound<'py, PyAny>> {
    let model = Bb84Tlgr2012 {
        preparation_quality,
    };
    let input = FiniteKeyInput {
        key_bits: count("key_bits", key_bits)?,
        sample_bits: count("sample_bits", sample_bits)?,
        qber,
        leak_ec_bits: count("leak_ec_bits", leak_ec_bits)?,
        confirm_tag_bits: count32("confirm_tag_bits", confirm_tag_bits)?,
        length_choices: count32("length_choices", length_choices)?,
        eps_sec,
        eps_cor,
    };
    let len = model.secret_length(&input).map_err(finite_key_err)?;
    let out = report_to_py(py, &len)?;
    out.cast::<PyDict>()?.set_item("model", model.name())?;
    Ok(out)
}

/// The tolerated QBER a block is sized for on the engine's default QBER ladder (rungs
/// 0.0025 * 1.1^i below max_qber, then max_qber; fixed before any sample is seen).
///
/// Returns:
///     (rung, rungs): the smallest rung at or above `observed` (None when the sample QBER is
///     above the top rung: the block aborts) and the number of rungs (`length_choices` of
///     `secret_length`).
///
/// Raises:
///     InputError: max_qber outside (0, 0.5].
#[pyfunction]
#[pyo3(signature = (observed, max_qber=0.11))]
fn qber_rung(observed: f64, max_qber: f64) -> PyResult<(Option<f64>, u32)> {
    let ladder = QberLadder::default_up_to(max_qber).map_err(finite_key_err)?;
    Ok((ladder.rung_for(observed), ladder.len()))
}

/// Decoy-state secret length (Lim et al. 2014) from counts given as the JSON text of
/// `qkd keyrate --counts` (`qkd.amplify.decoy_secret_length` builds it from a dict).
#[pyfunction]
#[pyo3(signature = (counts_json, leak_ec_bits, eps_sec=1e-10, eps_cor=1e-15))]
fn decoy_secret_length_json<'py>(
    py: Python<'py>,
    counts_json: &str,
    leak_ec_bits: i64,
    eps_sec: f64,
    eps_cor: f64,
) -> PyResult<Bound<'py, PyAny>> {
    let stats: DecoyStatistics =
        serde_json::from_str(counts_json).map_err(|e| input_error(format!("counts: {e}")))?;
    let input = stats.into_input(count("leak_ec_bits", leak_ec_bits)?, eps_sec, eps_cor);
    let model = Lim2014;
    let bound = model
        .secret_length(&input)
        .map_err(|e| input_error(e.to_string()))?;
    let out = report_to_py(py, &bound)?;
    out.cast::<PyDict>()?.set_item("model", model.name())?;
    Ok(out)
}

/// Expected counts of `pulses` pulses over a `loss_db` channel for a device given as JSON
/// (`qkd.amplify.decoy_expected_counts` builds it): (counts as JSON, leak_EC estimate).
#[pyfunction]
fn decoy_expected_counts_json(
    device_json: &str,
    loss_db: f64,
    pulses: f64,
) -> PyResult<(String, u64)> {
    let device: DecoyDevice =
        serde_json::from_str(device_json).map_err(|e| input_error(format!("device: {e}")))?;
    let stats =
        expected_statistics(&device, loss_db, pulses).map_err(|e| input_error(e.to_string()))?;
    let json = serde_json::to_string(&stats)
        .map_err(|e| qkd_error(format!("counts do not serialize: {e}")))?;
    Ok((json, device.leak_ec_bits(&stats)))
}

/// The typical device of Lim et al.'s numerical section (fixed, not optimised intensities), as
/// JSON.
#[pyfunction]
fn decoy_typical_device_json() -> PyResult<String> {
    serde_json::to_string(&DecoyDevice::lim2014_typical())
        .map_err(|e| qkd_error(format!("device does not serialize: {e}")))
}

/// Binary entropy h(p) = -p log2 p - (1 - p) log2(1 - p), with h(0) = h(1) = 0.
#[pyfunction]
fn binary_entropy(p: f64) -> f64 {
    qkd_core::amplify::binary_entropy(p)
}

// ---------------------------------------------------------------------------------------------
// Entropy
// ---------------------------------------------------------------------------------------------

fn data_bytes(data: &Bound<'_, PyAny>, bits: Option<i64>) -> PyResult<Vec<u8>> {
    let block = key_arg(data, bits, "data")?;
    Ok(block.to_bytes().to_vec())
}

/// Entropy verdict on a final key or sample: Shannon and min-entropy (most common value,
/// SP 800-90B) per byte, SP 800-22 monobit and runs tests, SP 800-90B repetition count and
/// adaptive proportion tests, each with its threshold.
///
/// Args:
///     data: bytes, a packed uint8 array, or a bool array (packed before testing).
///     false_alarm: total probability that ideal random data fails, in (0, 1) (default 2^-20).
///
/// Returns:
///     dict: verdict ("pass", "fail" or "insufficient_data": fewer than 64 bytes), passed
///     (bool), reasons, and one entry per check with its statistic, threshold and outcome.
///
/// Raises:
///     InputError: false_alarm out of range, bad data.
#[pyfunction]
#[pyo3(signature = (data, false_alarm=entropy::DEFAULT_ALPHA, *, bits=None))]
fn assess<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    false_alarm: f64,
    bits: Option<i64>,
) -> PyResult<Bound<'py, PyAny>> {
    let bytes = data_bytes(data, bits)?;
    let config = AssessConfig { false_alarm };
    let report = py
        .detach(|| entropy::assess_with(&bytes, &config))
        .map_err(entropy_err)?;
    let out = report_to_py(py, &report)?;
    out.cast::<PyDict>()?.set_item("passed", report.passed())?;
    Ok(out)
}

/// Plug-in Shannon entropy of the byte distribution of `data`, in bits per byte (0..8).
#[pyfunction]
#[pyo3(signature = (data, *, bits=None))]
fn shannon_entropy(py: Python<'_>, data: &Bound<'_, PyAny>, bits: Option<i64>) -> PyResult<f64> {
    let bytes = data_bytes(data, bits)?;
    Ok(py.detach(|| entropy::shannon_entropy(&bytes)))
}

/// Most-common-value min-entropy estimate of `data` (NIST SP 800-90B §6.3.1), per byte.
///
/// Returns:
///     dict: samples, max_count, p_max_hat, p_upper, bits_per_sample.
#[pyfunction]
#[pyo3(signature = (data, *, bits=None))]
fn min_entropy<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    bits: Option<i64>,
) -> PyResult<Bound<'py, PyAny>> {
    let bytes = data_bytes(data, bits)?;
    let est = py.detach(|| entropy::mcv_min_entropy(&bytes));
    report_to_py(py, &est)
}

// ---------------------------------------------------------------------------------------------
// Bit helpers
// ---------------------------------------------------------------------------------------------

/// Pack a key (bool array, packed uint8 array or bytes) into a packed uint8 array: bit i is
/// bit i % 8 of byte i // 8 (least significant first), tail bits zero. Unlike
/// numpy.packbits, whose default order is most significant first.
#[pyfunction]
#[pyo3(signature = (key, *, bits=None))]
fn pack_bits<'py>(
    py: Python<'py>,
    key: &Bound<'py, PyAny>,
    bits: Option<i64>,
) -> PyResult<Bound<'py, PyAny>> {
    let block: BitBlock = key_arg(key, bits, "key")?;
    key_to_py(py, &block, true)
}

/// Unpack a key (packed uint8 array, bytes or bool array) into a bool array, one element per
/// bit; `bits` gives the length when it is not 8 times the number of bytes.
#[pyfunction]
#[pyo3(signature = (key, *, bits=None))]
fn unpack_bits<'py>(
    py: Python<'py>,
    key: &Bound<'py, PyAny>,
    bits: Option<i64>,
) -> PyResult<Bound<'py, PyAny>> {
    let block: BitBlock = key_arg(key, bits, "key")?;
    key_to_py(py, &block, false)
}
