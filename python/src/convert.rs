//! Conversions between Python values and core types: keys as numpy arrays, reports as dicts,
//! core errors as the `qkd.errors` exception hierarchy.

use numpy::{PyArray1, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyDict, PyList};
use qkd_core::BitBlock;

pyo3::import_exception!(qkd.errors, QkdError);
pyo3::import_exception!(qkd.errors, InputError);
pyo3::import_exception!(qkd.errors, ProtocolError);
pyo3::import_exception!(qkd.errors, StoreError);
pyo3::import_exception!(qkd.errors, InputWarning);

/// The Toeplitz method called `name` ([`ToeplitzMethod::from_name`]), or an input error.
pub fn toeplitz_method(name: &str) -> PyResult<qkd_core::amplify::ToeplitzMethod> {
    qkd_core::amplify::ToeplitzMethod::from_name(name).ok_or_else(|| {
        input_error(format!(
            "unknown Toeplitz method '{name}'; expected auto, reference, ntt, clmul or fft, \
             optionally with a backend (ntt-avx2, clmul-pclmul, fft-vpclmul, ...)"
        ))
    })
}

/// An input error (`qkd.errors.InputError`, a `ValueError`) with `msg`.
pub fn input_error(msg: impl Into<String>) -> PyErr {
    InputError::new_err(msg.into())
}

/// A protocol error (`qkd.errors.ProtocolError`) with `msg`.
pub fn protocol_error(msg: impl Into<String>) -> PyErr {
    ProtocolError::new_err(msg.into())
}

/// A generic `qkd.errors.QkdError` with `msg`.
pub fn qkd_error(msg: impl Into<String>) -> PyErr {
    QkdError::new_err(msg.into())
}

/// A size argument given as a Python int (`i64`, so a negative value gets here): the value, or
/// an input error naming the argument.
pub fn size(name: &str, v: i64) -> PyResult<usize> {
    usize::try_from(v).map_err(|_| {
        input_error(format!(
            "{name} = {v} is negative; expected an integer >= 0"
        ))
    })
}

/// An optional size argument (`bits=None`), as [`size`].
pub fn opt_size(name: &str, v: Option<i64>) -> PyResult<Option<usize>> {
    v.map(|v| size(name, v)).transpose()
}

/// A count argument: a non-negative integer, as [`size`].
pub fn count(name: &str, v: i64) -> PyResult<u64> {
    Ok(size(name, v)? as u64)
}

/// A count argument that fits 32 bits.
pub fn count32(name: &str, v: i64) -> PyResult<u32> {
    u32::try_from(size(name, v)?)
        .map_err(|_| input_error(format!("{name} = {v} is too large; expected below 2^32")))
}

/// Checks packed key bytes against a bit count: `ceil(bits / 8)` bytes, bits past `bits`
/// zero (DESIGN §4). Returns the bit count (`8 * len` when `bits` is `None`). Pure Rust so it is
/// unit-tested without an interpreter.
pub fn check_packed(bytes: &[u8], bits: Option<usize>, what: &str) -> Result<usize, String> {
    let Some(bits) = bits else {
        return Ok(bytes.len() * 8);
    };
    let want = bits.div_ceil(8);
    if bytes.len() != want {
        return Err(format!(
            "{what}: {} packed bytes for {bits} bits; expected ceil({bits} / 8) = {want} bytes",
            bytes.len()
        ));
    }
    if bits % 8 != 0
        && let Some(&last) = bytes.last()
        && last >> (bits % 8) != 0
    {
        return Err(format!(
            "{what}: bits past bit {bits} are set in the last byte; expected them zero"
        ));
    }
    Ok(bits)
}

/// A key argument with its `bits=` argument as Python gave it: [`key_from_py`] after checking
/// that `bits` is not negative.
pub fn key_arg(obj: &Bound<'_, PyAny>, bits: Option<i64>, what: &str) -> PyResult<BitBlock> {
    key_from_py(obj, opt_size("bits", bits)?, what)
}

/// Reads a key from Python: a 1-D numpy `uint8` array (packed, DESIGN §4 bit order), a 1-D
/// numpy `bool` array (one element per bit), or `bytes`/`bytearray` (packed). `bits` gives the
/// length of a packed key whose length is not a multiple of 8.
pub fn key_from_py(obj: &Bound<'_, PyAny>, bits: Option<usize>, what: &str) -> PyResult<BitBlock> {
    if obj.is_none() {
        return Err(PyTypeError::new_err(format!(
            "{what}: expected a numpy uint8 (packed) or bool array, got None"
        )));
    }
    if let Ok(arr) = obj.cast::<PyArray1<u8>>() {
        let ro = arr.try_readonly()?;
        let copy;
        let bytes = match ro.as_slice() {
            Ok(s) => s,
            // Non-contiguous (e.g. a strided view): one copy.
            Err(_) => {
                copy = zeroize::Zeroizing::new(ro.as_array().to_vec());
                copy.as_slice()
            }
        };
        if looks_one_bit_per_byte(bytes) {
            let msg = format!(
                "{what}: a uint8 array of only 0 and 1 values looks like one bit per element, \
                 but uint8 keys are packed (8 bits per byte); pass arr.astype(bool) for one bit \
                 per element"
            );
            let msg = std::ffi::CString::new(msg).map_err(|e| qkd_error(e.to_string()))?;
            PyErr::warn(obj.py(), &obj.py().get_type::<InputWarning>(), &msg, 1)?;
        }
        return packed_block(bytes, bits, what);
    }
    if let Ok(arr) = obj.cast::<PyArray1<bool>>() {
        let ro = arr.try_readonly()?;
        if let Some(b) = bits
            && b != ro.len()
        {
            return Err(input_error(format!(
                "{what}: bool array has {} elements but bits = {b}; expected equal",
                ro.len()
            )));
        }
        return Ok(match ro.as_slice() {
            Ok(s) => BitBlock::from_bools(s),
            Err(_) => BitBlock::from_bools(&ro.as_array().to_vec()),
        });
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return packed_block(b.as_bytes(), bits, what);
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return packed_block(&b.to_vec(), bits, what);
    }
    if let Ok(arr) = obj.cast::<PyUntypedArray>() {
        return Err(input_error(format!(
            "{what}: array of dtype {} with {} dimension(s); expected a 1-D uint8 (packed) or bool array",
            arr.dtype(),
            arr.ndim()
        )));
    }
    Err(PyTypeError::new_err(format!(
        "{what}: expected a numpy uint8 (packed) or bool array, got {}",
        obj.get_type().name()?
    )))
}

/// Shortest array [`looks_one_bit_per_byte`] judges: a packed random key of this many bytes has
/// only 0 and 1 bytes with probability (2/256)^16 = 2^-112.
const UNPACKED_CHECK_MIN_BYTES: usize = 16;

/// Whether packed key bytes look like one bit per byte instead (`numpy.random.randint(0, 2,
/// n, dtype=uint8)` passed where packed bytes are expected): at least
/// [`UNPACKED_CHECK_MIN_BYTES`] bytes, every byte 0 or 1, some 1. Stops at the first other byte,
/// so a packed key costs a byte or two.
fn looks_one_bit_per_byte(bytes: &[u8]) -> bool {
    bytes.len() >= UNPACKED_CHECK_MIN_BYTES && bytes.iter().all(|&b| b <= 1) && bytes.contains(&1)
}

fn packed_block(bytes: &[u8], bits: Option<usize>, what: &str) -> PyResult<BitBlock> {
    let len = check_packed(bytes, bits, what).map_err(input_error)?;
    let used = bytes.get(..len.div_ceil(8)).unwrap_or(bytes);
    BitBlock::from_words(words_le(used), len).map_err(|e| input_error(format!("{what}: {e}")))
}

/// Packed bytes (DESIGN §4 order) as little-endian words, a word at a time: about three times
/// faster than `BitBlock::from_bytes`, which goes through a zeroized buffer per word. Full words
/// are loaded directly; the last, partial word is assembled in a zeroized buffer.
fn words_le(bytes: &[u8]) -> Vec<u64> {
    let mut words = Vec::with_capacity(bytes.len().div_ceil(8));
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        words.push(u64::from_le_bytes(w));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = zeroize::Zeroizing::new([0u8; 8]);
        w[..rest.len()].copy_from_slice(rest);
        words.push(u64::from_le_bytes(*w));
    }
    words
}

/// A key as a numpy array: packed `uint8` (`ceil(len / 8)` bytes, DESIGN §4 order, tail bits
/// zero) or `bool` (one element per bit). One copy out of the block's words.
pub fn key_to_py<'py>(
    py: Python<'py>,
    block: &BitBlock,
    packed: bool,
) -> PyResult<Bound<'py, PyAny>> {
    if !packed {
        return Ok(PyArray1::from_vec(py, block.to_bools()).into_any());
    }
    let nbytes = block.len().div_ceil(8);
    let arr = PyArray1::<u8>::zeros(py, nbytes, false);
    {
        let mut rw = arr.try_readwrite()?;
        let out = rw
            .as_slice_mut()
            .map_err(|e| qkd_error(format!("fresh array is not contiguous: {e}")))?;
        for (chunk, word) in out.chunks_mut(8).zip(block.words()) {
            let le = word.to_le_bytes();
            chunk.copy_from_slice(&le[..chunk.len()]);
        }
    }
    Ok(arr.into_any())
}

/// A serde value (a core report) as plain Python objects: dicts, lists, ints, floats, strings.
pub fn json_to_py<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value;
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => s.into_pyobject(py)?.into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, item) in map {
                dict.set_item(k, json_to_py(py, item)?)?;
            }
            dict.into_any()
        }
    })
}

/// A serializable core report as a Python dict.
pub fn report_to_py<'py, T: serde::Serialize>(
    py: Python<'py>,
    report: &T,
) -> PyResult<Bound<'py, PyAny>> {
    let value = serde_json::to_value(report)
        .map_err(|e| qkd_error(format!("report does not serialize: {e}")))?;
    json_to_py(py, &value)
}

/// A 32-byte seed from `bytes`, or a fresh one from the OS CSPRNG when `None`.
pub fn seed32(seed: Option<&[u8]>, what: &str) -> PyResult<[u8; 32]> {
    use qkd_core::rng::{OsRandom, RandomSource};
    match seed {
        Some(s) => <[u8; 32]>::try_from(s).map_err(|_| {
            input_error(format!(
                "{what}: {} bytes; expected exactly 32 bytes",
                s.len()
            ))
        }),
        None => OsRandom
            .seed32()
            .map_err(|e| qkd_error(format!("OS random source failed: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::check_packed;

    #[test]
    fn packed_lengths() {
        assert_eq!(check_packed(&[0xff, 0x01], None, "k"), Ok(16));
        assert_eq!(check_packed(&[0xff, 0x01], Some(9), "k"), Ok(9));
        assert_eq!(check_packed(&[0xff, 0x01], Some(16), "k"), Ok(16));
        // 9 bits fit in 2 bytes, not 3; 17 bits need 3.
        assert!(check_packed(&[0, 0, 0], Some(9), "k").is_err());
        assert!(check_packed(&[0, 0], Some(17), "k").is_err());
        assert!(check_packed(&[], Some(1), "k").is_err());
        assert_eq!(check_packed(&[], Some(0), "k"), Ok(0));
    }

    #[test]
    fn one_bit_per_byte_arrays_are_recognized() {
        use super::looks_one_bit_per_byte as looks;
        let bits: Vec<u8> = (0..64).map(|i| (i % 3 == 0) as u8).collect();
        assert!(looks(&bits));
        assert!(!looks(&bits[..15]), "too short to judge");
        assert!(!looks(&[0; 64]), "all zero: the same key either way");
        let mut packed = bits.clone();
        packed[40] = 2;
        assert!(!looks(&packed));
    }

    #[test]
    fn words_are_little_endian_bytes() {
        let bytes: Vec<u8> = (1..=11).collect();
        let w = super::words_le(&bytes);
        assert_eq!(w, vec![0x0807_0605_0403_0201, 0x0b_0a09]);
        assert!(super::words_le(&[]).is_empty());
    }

    #[test]
    fn packed_tail_bits_must_be_zero() {
        // 9 bits: only bit 0 of the second byte may be set.
        assert!(check_packed(&[0, 0x02], Some(9), "k").is_err());
        let err = check_packed(&[0, 0x80], Some(15), "key").unwrap_err();
        assert!(err.starts_with("key: bits past bit 15"), "{err}");
        assert_eq!(check_packed(&[0, 0x7f], Some(15), "k"), Ok(15));
    }
}
