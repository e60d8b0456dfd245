//! The durable key store: open a directory, append final keys, allocate keys for SAEs, fetch
//! a key by its ID (once per recipient).
//!
//! Unlike the other handles, `qkd_store` is thread-safe: any number of threads may call
//! functions on the same store at once (requests are group-committed by one writer thread).

use std::ffi::{CStr, c_char};
use std::time::{Duration, SystemTime};

use ::qkd_store::{
    AllocateRequest, BlockId, Kek, NewBlock, OpenError, Store, StoreError, StoreOptions,
};
use uuid::Uuid;

use crate::block::{block, qkd_block};
use crate::buffer::{out_ref, write_bytes};
use crate::handle::{self, Handle};
use crate::result::{Error, FfiResult, guard, qkd_result};

/// A key store opened on a directory. Opaque and thread-safe; close with qkd_store_free (no
/// other thread may use it then).
#[derive(Debug)]
pub struct qkd_store {
    _private: [u8; 0],
}

/// A key ID: a UUID (version 4, random), its 16 bytes in RFC 4122 order.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct qkd_key_id {
    /// The UUID's bytes, most significant first.
    pub bytes: [u8; 16],
}

/// What the store recorded for an appended block.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct qkd_store_block_info {
    /// Length in bits.
    pub len_bits: u64,
    /// Bits usable for keys (the length rounded down to whole bytes).
    pub usable_bits: u64,
    /// BLAKE3 digest of the packed bytes (compare with the peer KME's).
    pub digest: [u8; 32],
}

/// Length of a key ID as text (36 characters plus the NUL).
pub const QKD_KEY_ID_STR_LEN: usize = 37;

pub(crate) const STORE_TAG: u64 = u64::from_be_bytes(*b"qkdSTORE");

impl Handle for Store {
    type Opaque = qkd_store;
    const TAG: u64 = STORE_TAG;
    const NAME: &'static str = "qkd_store";
}

fn open_error(e: OpenError) -> Error {
    Error::new(qkd_result::QKD_ERR_STORE, e.to_string())
}

fn store_error(e: StoreError) -> Error {
    use StoreError::*;
    let code = match &e {
        InvalidRequest(_) => qkd_result::QKD_ERR_INVALID_ARGUMENT,
        InsufficientKeyMaterial { .. } => qkd_result::QKD_ERR_INSUFFICIENT_KEY_MATERIAL,
        UnknownKey(_) | UnknownBlock { .. } => qkd_result::QKD_ERR_NOT_FOUND,
        DuplicateBlock { .. }
        | MaterialUnavailable { .. }
        | DuplicateKeyId(_)
        | NotARecipient { .. }
        | AlreadyFetched { .. }
        | Expired(_)
        | Destroyed(_) => qkd_result::QKD_ERR_KEY_UNAVAILABLE,
        Random(_) => qkd_result::QKD_ERR_RANDOM_SOURCE,
        _ => qkd_result::QKD_ERR_STORE,
    };
    Error::new(code, e.to_string())
}

/// A UTF-8 string argument.
///
/// # Safety
/// `p` must be NULL or a NUL-terminated string valid for `'a`.
unsafe fn in_str<'a>(p: *const c_char, arg: &str) -> FfiResult<&'a str> {
    if p.is_null() {
        return Err(Error::null(arg));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| Error::invalid(format!("argument `{arg}` is not UTF-8")))
}

/// # Safety
/// `ptr` must be NULL or a live handle.
unsafe fn store<'a>(ptr: *const qkd_store) -> FfiResult<&'a Store> {
    // SAFETY: forwarded caller contract; `Store` is `Sync`, so shared use from several threads
    // is sound.
    unsafe { handle::get::<Store>(ptr, "store") }
}

/// Opens (creating if needed) the store in directory `dir`, recovering from any crash. A
/// store is opened by one handle at a time (QKD_ERR_STORE otherwise, "already open").
///
/// # Safety
/// `dir` must be NULL or a NUL-terminated path; `out` NULL or a writable `qkd_store *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_store_open(
    dir: *const c_char,
    out: *mut *mut qkd_store,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `out` and `dir`.
        let (out, dir) = unsafe { (out_ref(out, "out")?, in_str(dir, "dir")?) };
        *out = std::ptr::null_mut();
        let s = Store::open(dir).map_err(open_error)?;
        *out = handle::into_raw(s);
        Ok(())
    })
}

/// Opens (creating if needed) the store in directory `dir`, encrypted at rest under the
/// key-encryption key in the file `kek_file` (32 raw bytes, 64 hex digits or base64 of 32 bytes;
/// mode 0600 or 0400). A new store is created encrypted; an existing store must have been
/// created with the same key (QKD_ERR_STORE otherwise: missing, wrong or unexpected key).
///
/// # Safety
/// `dir` and `kek_file` must be NULL or NUL-terminated paths; `out` NULL or a writable
/// `qkd_store *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_store_open_encrypted(
    dir: *const c_char,
    kek_file: *const c_char,
    out: *mut *mut qkd_store,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `out`, `dir` and `kek_file`.
        let (out, dir, kek_file) = unsafe {
            (
                out_ref(out, "out")?,
                in_str(dir, "dir")?,
                in_str(kek_file, "kek_file")?,
            )
        };
        *out = std::ptr::null_mut();
        let kek = Kek::from_file(kek_file)
            .map_err(|e| Error::new(qkd_result::QKD_ERR_STORE, e.to_string()))?;
        let options = StoreOptions {
            encryption: Some(kek),
            ..StoreOptions::default()
        };
        let s = Store::open_with(dir, options).map_err(open_error)?;
        *out = handle::into_raw(s);
        Ok(())
    })
}

/// Appends a final key as block `block_id` (1..255 bytes of UTF-8, the same ID at both KMEs)
/// of link `link` (the peer KME's ID). Durable when this returns. `qber` is recorded unless it
/// is NaN. `info_out` may be NULL.
///
/// # Safety
/// `store` must be NULL or a live handle; `link`, `block_id` NULL or NUL-terminated strings;
/// `key` NULL or a live block; `info_out` NULL or a writable `qkd_store_block_info`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_store_append(
    store: *const qkd_store,
    link: *const c_char,
    block_id: *const c_char,
    key: *const qkd_block,
    qber: f64,
    info_out: *mut qkd_store_block_info,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on every pointer.
        let (s, link, id, key) = unsafe {
            (
                self::store(store)?,
                in_str(link, "link")?,
                in_str(block_id, "block_id")?,
                block(key, "key")?,
            )
        };
        let mut nb = NewBlock::from_bits(link, BlockId::new(id).map_err(store_error)?, key);
        if !qber.is_nan() {
            nb = nb.qber(qber);
        }
        let info = s.append(nb).map_err(store_error)?;
        if !info_out.is_null() {
            // SAFETY: non-NULL, writable by the caller's contract.
            let out = unsafe { out_ref(info_out, "info_out") }?;
            *out = qkd_store_block_info {
                len_bits: info.len_bits,
                usable_bits: info.usable_bits,
                digest: info.digest,
            };
        }
        Ok(())
    })
}

/// Stores in `*bits` the key material still available on `link` (0 for an unknown link).
///
/// # Safety
/// `store` must be NULL or a live handle; `link` NULL or a NUL-terminated string; `bits` NULL
/// or a writable `uint64_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_store_available_bits(
    store: *const qkd_store,
    link: *const c_char,
    bits: *mut u64,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on every pointer.
        let (s, link, out) = unsafe {
            (
                self::store(store)?,
                in_str(link, "link")?,
                out_ref(bits, "bits")?,
            )
        };
        *out = s.link_status(link).map_err(store_error)?.bits_available;
        Ok(())
    })
}

/// Allocates `count` keys of `size_bits` bits (a multiple of 8, 8..=2^20) from `link`'s
/// material for master SAE `master` and the `slaves_len` slave SAEs in `slaves`, all or none
/// (QKD_ERR_INSUFFICIENT_KEY_MATERIAL). The keys expire `ttl_seconds` from now; the master is
/// the recipient who may fetch them from this store. Their fresh random IDs go to `ids_out`
/// (`*ids_len` = count); `ids_cap` must be at least `count` (QKD_ERR_BUFFER_TOO_SHORT before
/// anything is allocated otherwise). Durable when this returns.
///
/// # Safety
/// `store` must be NULL or a live handle; `link`, `master` NULL or NUL-terminated strings;
/// `slaves` NULL or `slaves_len` pointers to NUL-terminated strings; `ids_out` NULL or
/// `ids_cap` writable `qkd_key_id`; `ids_len` NULL or a writable `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_store_allocate(
    store: *const qkd_store,
    link: *const c_char,
    master: *const c_char,
    slaves: *const *const c_char,
    slaves_len: usize,
    count: usize,
    size_bits: u32,
    ttl_seconds: u64,
    ids_out: *mut qkd_key_id,
    ids_cap: usize,
    ids_len: *mut usize,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on every pointer.
        let (s, link, master, ids_len) = unsafe {
            (
                self::store(store)?,
                in_str(link, "link")?,
                in_str(master, "master")?,
                out_ref(ids_len, "ids_len")?,
            )
        };
        let mut slave_names = Vec::with_capacity(slaves_len);
        if slaves_len > 0 {
            if slaves.is_null() {
                return Err(Error::null("slaves"));
            }
            for i in 0..slaves_len {
                // SAFETY: `slaves` holds `slaves_len` readable pointers (caller's contract).
                let p = unsafe { *slaves.add(i) };
                // SAFETY: each is NULL or NUL-terminated (caller's contract).
                slave_names.push(unsafe { in_str(p, "slaves[i]") }?);
            }
        }
        if ids_cap < count {
            *ids_len = count;
            return Err(Error::new(
                qkd_result::QKD_ERR_BUFFER_TOO_SHORT,
                format!("ids_out holds {ids_cap} key IDs; {count} are needed"),
            ));
        }
        if count > 0 && ids_out.is_null() {
            return Err(Error::null("ids_out"));
        }
        let expires = SystemTime::now()
            .checked_add(Duration::from_secs(ttl_seconds))
            .ok_or_else(|| Error::invalid(format!("ttl_seconds = {ttl_seconds} is too large")))?;
        let req = AllocateRequest::new(link, master, &slave_names, count, size_bits, expires);
        let keys = s.allocate(&req).map_err(store_error)?;
        for (i, k) in keys.iter().enumerate().take(count) {
            // SAFETY: `ids_out` holds `ids_cap >= count` writable elements (caller's contract).
            unsafe {
                *ids_out.add(i) = qkd_key_id {
                    bytes: *k.key_id.as_bytes(),
                }
            };
        }
        *ids_len = keys.len().min(count);
        Ok(())
    })
}

/// Fetches key `key_id` for `recipient` (each recipient gets a key at most once; the delivery
/// is committed before the bytes are returned) into `buf` (`size_bits / 8` bytes;
/// `*out_len` = that). The capacity and `buf` are checked before the delivery: with too small a
/// buffer, QKD_ERR_BUFFER_TOO_SHORT, with a NULL `buf`, QKD_ERR_NULL_ARGUMENT, and nothing is
/// spent. Unknown IDs give QKD_ERR_NOT_FOUND; a key already fetched by this recipient, expired,
/// destroyed or not for it QKD_ERR_KEY_UNAVAILABLE.
/// The bytes are key material: wipe them when done.
///
/// # Safety
/// `store` must be NULL or a live handle; `key_id` NULL or a readable `qkd_key_id`;
/// `recipient` NULL or a NUL-terminated string; `buf` NULL or `cap` writable bytes; `out_len`
/// NULL or a writable `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_store_fetch(
    store: *const qkd_store,
    key_id: *const qkd_key_id,
    recipient: *const c_char,
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on every pointer.
        let (s, id, recipient, out_len) = unsafe {
            (
                self::store(store)?,
                crate::buffer::in_ref(key_id, "key_id")?,
                in_str(recipient, "recipient")?,
                out_ref(out_len, "out_len")?,
            )
        };
        let id = Uuid::from_bytes(id.bytes);
        let info = s
            .key_info(id)
            .map_err(store_error)?
            .ok_or_else(|| store_error(StoreError::UnknownKey(id)))?;
        let need = (info.size_bits / 8) as usize;
        if cap < need {
            *out_len = need;
            return Err(Error::new(
                qkd_result::QKD_ERR_BUFFER_TOO_SHORT,
                format!("buffer holds {cap} bytes; the key needs {need}"),
            ));
        }
        // Every check that can fail happens before the delivery is committed: a failure after
        // it would lose the key.
        if need > 0 && buf.is_null() {
            return Err(Error::null("buf"));
        }
        let keys = s.fetch(&[id], recipient).map_err(store_error)?;
        let key = keys
            .first()
            .ok_or_else(|| Error::new(qkd_result::QKD_ERR_INTERNAL, "fetch returned no key"))?;
        // SAFETY: caller contract on `buf` (`cap >= need` bytes).
        unsafe { write_bytes(key.bytes(), buf, cap, out_len) }
    })
}

/// Writes `id` as text (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lower case, NUL-terminated)
/// into `buf`, which must hold QKD_KEY_ID_STR_LEN bytes.
///
/// # Safety
/// `id` must be NULL or a readable `qkd_key_id`; `buf` NULL or `cap` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_key_id_to_string(
    id: *const qkd_key_id,
    buf: *mut c_char,
    cap: usize,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `id`.
        let id = unsafe { crate::buffer::in_ref(id, "id") }?;
        let text = Uuid::from_bytes(id.bytes).hyphenated().to_string();
        let mut len = 0usize;
        // SAFETY: caller contract on `buf`.
        unsafe { crate::buffer::write_str(&text, buf, cap, &mut len) }
    })
}

/// Parses a key ID from text (hyphenated, simple or braced UUID forms).
///
/// # Safety
/// `text` must be NULL or a NUL-terminated string; `out` NULL or a writable `qkd_key_id`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_key_id_parse(text: *const c_char, out: *mut qkd_key_id) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `text` and `out`.
        let (text, out) = unsafe { (in_str(text, "text")?, out_ref(out, "out")?) };
        let id = Uuid::parse_str(text)
            .map_err(|e| Error::invalid(format!("'{text}' is not a UUID: {e}")))?;
        *out = qkd_key_id {
            bytes: *id.as_bytes(),
        };
        Ok(())
    })
}

/// Closes the store (waits for its writer thread). NULL and handles of another kind are
/// ignored. No other thread may be using the store.
///
/// # Safety
/// `store` must be NULL or a live handle, not used again afterwards by any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_store_free(store: *mut qkd_store) {
    // SAFETY: caller contract.
    crate::result::guard_value((), || unsafe { handle::free::<Store>(store) })
}
