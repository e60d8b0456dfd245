//! The durable key store as `qkd.store.Store`. Doc comments are Python docstrings.

use std::time::{Duration, SystemTime};

use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use qkd_store::{
    AllocateRequest, BlockFilter, BlockId, KeyAllocation, NewBlock, OpenError, ReserveRequest,
    StoreError as CoreStoreError,
};
use uuid::Uuid;

use crate::convert::{
    StoreError, count, count32, input_error, key_arg, key_to_py, report_to_py, size,
};

/// Registers the class on the native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Store>()
}

fn store_err(e: CoreStoreError) -> PyErr {
    match e {
        CoreStoreError::InvalidRequest(_) => input_error(e.to_string()),
        _ => StoreError::new_err(e.to_string()),
    }
}

fn open_err(e: OpenError) -> PyErr {
    StoreError::new_err(e.to_string())
}

fn uuids(key_ids: Vec<String>) -> PyResult<Vec<Uuid>> {
    key_ids
        .iter()
        .map(|k| {
            Uuid::parse_str(k).map_err(|e| input_error(format!("key ID {k:?} is not a UUID: {e}")))
        })
        .collect()
}

fn expiry(ttl: f64) -> PyResult<SystemTime> {
    if !(ttl.is_finite() && ttl > 0.0) {
        return Err(input_error(format!(
            "ttl = {ttl}; expected a positive number of seconds"
        )));
    }
    Ok(SystemTime::now() + Duration::from_secs_f64(ttl))
}

/// A Python object (dicts, lists, numbers, strings) as a serde value, through `json`.
fn from_py<T: serde::de::DeserializeOwned>(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<T> {
    let text: String = obj
        .py()
        .import("json")?
        .call_method1("dumps", (obj,))?
        .extract()?;
    serde_json::from_str(&text).map_err(|e| input_error(format!("{what}: {e}")))
}

/// The durable key store: final key material in, single-use keys out, never a key twice.
///
/// A store is a directory (created if needed) holding an index database and append-only
/// segment files. Only one handle may have a store open at a time; `close()` it (or use
/// `with Store(path) as s:`) to release it.
///
/// Args:
///     path: the store directory.
///
/// Raises:
///     StoreError: the directory cannot be opened, is locked by another handle, or is damaged.
#[pyclass(module = "qkd.store")]
struct Store {
    inner: Option<qkd_store::Store>,
}

impl Store {
    fn get(&self) -> PyResult<&qkd_store::Store> {
        self.inner
            .as_ref()
            .ok_or_else(|| StoreError::new_err("the store is closed"))
    }
}

#[pymethods]
impl Store {
    #[new]
    fn new(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Self> {
        let store = py
            .detach(|| qkd_store::Store::open(&path))
            .map_err(open_err)?;
        Ok(Self { inner: Some(store) })
    }

    /// Close the store (idempotent): waits for the writer and releases the directory lock.
    fn close(&mut self, py: Python<'_>) {
        if let Some(store) = self.inner.take() {
            py.detach(|| drop(store));
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &mut self,
        py: Python<'_>,
        _exc_type: &Bound<'_, PyAny>,
        _exc: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> bool {
        self.close(py);
        false
    }

    /// Append a block of final key material for `link` (the peer KME ID) under `block_id`.
    /// Durable when this returns.
    ///
    /// Args:
    ///     link: the link (peer KME ID).
    ///     block_id: a unique name for the block on this link.
    ///     key: the final key (packed uint8 or bool array, or bytes).
    ///     bits: length of a packed key whose length is not a multiple of 8.
    ///     qber, leaked_bits: recorded with the block (ledger).
    ///
    /// Returns:
    ///     dict: link, block_id, len_bits, usable_bits, digest (BLAKE3), qber, leaked_bits.
    #[pyo3(signature = (link, block_id, key, *, bits=None, qber=None, leaked_bits=None))]
    fn append<'py>(
        &self,
        py: Python<'py>,
        link: &str,
        block_id: &str,
        key: &Bound<'py, PyAny>,
        bits: Option<i64>,
        qber: Option<f64>,
        leaked_bits: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = key_arg(key, bits, "key")?;
        let id = BlockId::new(block_id).map_err(store_err)?;
        let mut block = NewBlock::from_bits(link, id, &key);
        if let Some(q) = qber {
            block = block.qber(q);
        }
        if let Some(l) = leaked_bits {
            block = block.leaked_bits(count("leaked_bits", l)?);
        }
        let store = self.get()?;
        let info = py.detach(|| store.append(block)).map_err(store_err)?;
        report_to_py(py, &info)
    }

    /// Allocate `count` keys of `size_bits` bits from the link's material (all or none) for
    /// `master` and its `slaves`, under fresh random key IDs. Durable when this returns.
    ///
    /// Args:
    ///     link: the link whose material is used.
    ///     master: the master SAE ID.
    ///     slaves: slave SAE IDs.
    ///     count: number of keys.
    ///     size_bits: bits per key (a multiple of 8).
    ///     ttl: seconds until the keys expire and are destroyed.
    ///     recipients: who may fetch the keys from this store (default: the master).
    ///
    /// Returns:
    ///     list of dicts: key_id (str), size_bits, material (block_id, bit_offset, bit_len
    ///     per range); give these to the peer store's `reserve_exact`.
    ///
    /// Raises:
    ///     StoreError: not enough key material, the store failed.
    ///     InputError: a bad size or count.
    #[pyo3(signature = (link, master, slaves=Vec::new(), count=1, size_bits=256, *, ttl=60.0, recipients=None))]
    fn allocate<'py>(
        &self,
        py: Python<'py>,
        link: &str,
        master: &str,
        slaves: Vec<String>,
        count: i64,
        size_bits: i64,
        ttl: f64,
        recipients: Option<Vec<String>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (count, size_bits) = (size("count", count)?, count32("size_bits", size_bits)?);
        let slaves: Vec<&str> = slaves.iter().map(String::as_str).collect();
        let mut req = AllocateRequest::new(link, master, &slaves, count, size_bits, expiry(ttl)?);
        if let Some(r) = &recipients {
            let r: Vec<&str> = r.iter().map(String::as_str).collect();
            req = req.recipients(&r);
        }
        let store = self.get()?;
        let keys = py.detach(|| store.allocate(&req)).map_err(store_err)?;
        report_to_py(py, &keys)
    }

    /// The peer's side of an allocation: reserve exactly the material `keys` (as `allocate`
    /// returned them on the other store) under the same key IDs, all or nothing.
    ///
    /// Args:
    ///     link: the allocating KME's ID as seen from this store.
    ///     master, slaves: the SAEs.
    ///     keys: the list `allocate` returned.
    ///     recipients: who may fetch the keys here (typically the slaves).
    ///     ttl: seconds until the keys expire.
    ///     actor: who asks, for the ledger.
    #[pyo3(signature = (link, master, slaves, keys, recipients, *, ttl=60.0, actor="peer"))]
    fn reserve_exact(
        &self,
        py: Python<'_>,
        link: &str,
        master: &str,
        slaves: Vec<String>,
        keys: &Bound<'_, PyAny>,
        recipients: Vec<String>,
        ttl: f64,
        actor: &str,
    ) -> PyResult<()> {
        let keys: Vec<KeyAllocation> = from_py(keys, "keys")?;
        let req = ReserveRequest {
            link: link.to_owned(),
            master: master.to_owned(),
            slaves,
            recipients,
            expires_at: expiry(ttl)?,
            keys,
            peer_filter: BlockFilter::all(),
            actor: actor.to_owned(),
        };
        let store = self.get()?;
        py.detach(|| store.reserve_exact(&req)).map_err(store_err)
    }

    /// Fetch keys for one recipient, all or nothing; each recipient gets each key at most
    /// once (the delivery is committed before the bytes are returned).
    ///
    /// Returns:
    ///     list of (key_id, key) tuples, key as packed uint8 (or bool with packed=False).
    ///
    /// Raises:
    ///     StoreError: an unknown, expired, destroyed or already fetched key, or a recipient
    ///         the key is not for.
    #[pyo3(signature = (key_ids, recipient, *, packed=true))]
    fn fetch<'py>(
        &self,
        py: Python<'py>,
        key_ids: Vec<String>,
        recipient: &str,
        packed: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let ids = uuids(key_ids)?;
        let store = self.get()?;
        let keys = py
            .detach(|| store.fetch(&ids, recipient))
            .map_err(store_err)?;
        let out = PyList::empty(py);
        for k in keys {
            let block = qkd_core::BitBlock::from_bytes(k.bytes(), k.size_bits() as usize)
                .map_err(|e| StoreError::new_err(e.to_string()))?;
            let item = PyTuple::new(
                py,
                [
                    k.key_id().to_string().into_pyobject(py)?.into_any(),
                    key_to_py(py, &block, packed)?,
                ],
            )?;
            out.append(item)?;
        }
        Ok(out)
    }

    /// Destroy keys (finished ones are skipped); returns how many were destroyed.
    #[pyo3(signature = (key_ids, actor="python"))]
    fn destroy(&self, py: Python<'_>, key_ids: Vec<String>, actor: &str) -> PyResult<usize> {
        let ids = uuids(key_ids)?;
        let store = self.get()?;
        py.detach(|| store.destroy(&ids, actor)).map_err(store_err)
    }

    /// Destroy every key whose expiry has passed (or would have, `after` seconds from now);
    /// returns how many.
    #[pyo3(signature = (after=0.0))]
    fn expire(&self, py: Python<'_>, after: f64) -> PyResult<usize> {
        if !(after.is_finite() && after >= 0.0) {
            return Err(input_error(format!(
                "after = {after}; expected seconds >= 0"
            )));
        }
        let now = SystemTime::now() + Duration::from_secs_f64(after);
        let store = self.get()?;
        py.detach(|| store.expire(now)).map_err(store_err)
    }

    /// What the store knows about a key (no key bytes) as a dict, or None.
    fn key_info<'py>(&self, py: Python<'py>, key_id: String) -> PyResult<Bound<'py, PyAny>> {
        let id = Uuid::parse_str(&key_id)
            .map_err(|e| input_error(format!("key ID {key_id:?} is not a UUID: {e}")))?;
        let info = self.get()?.key_info(id).map_err(store_err)?;
        report_to_py(py, &info)
    }

    /// Counts for one link (zeros for an unknown link) as a dict.
    fn link_status<'py>(&self, py: Python<'py>, link: &str) -> PyResult<Bound<'py, PyAny>> {
        let st = self.get()?.link_status(link).map_err(store_err)?;
        report_to_py(py, &st)
    }

    /// The whole store's status as a dict (per-link counts, segments, ledger entries).
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let st = self.get()?.status().map_err(store_err)?;
        report_to_py(py, &st)
    }

    /// Up to `limit` ledger records from sequence number `start` on, as dicts (key IDs, never
    /// key bytes).
    #[pyo3(signature = (start=0, limit=1000))]
    fn ledger<'py>(&self, py: Python<'py>, start: i64, limit: i64) -> PyResult<Bound<'py, PyAny>> {
        let (start, limit) = (count("start", start)?, size("limit", limit)?);
        let entries = self.get()?.ledger(start, limit).map_err(store_err)?;
        report_to_py(py, &entries)
    }

    fn __repr__(&self) -> String {
        match &self.inner {
            Some(s) => format!("store.Store({:?})", s.dir()),
            None => "store.Store(<closed>)".to_owned(),
        }
    }
}
