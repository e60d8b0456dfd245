//! Checked access to the caller's pointers (input slices, out-parameters and output buffers),
//! and `qkd_buffer`, bytes the library hands out (a session's messages).

use std::ffi::c_char;

use crate::handle::{self, Handle};
use crate::result::{Error, FfiResult, guard, guard_value, qkd_result};

/// The `len` bytes at `ptr`; NULL is accepted only when `len == 0`.
///
/// # Safety
/// `ptr` must be NULL or point to `len` readable bytes that stay valid and unmodified for
/// `'a`.
pub(crate) unsafe fn in_slice<'a>(ptr: *const u8, len: usize, arg: &str) -> FfiResult<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Error::null(arg));
    }
    // SAFETY: non-NULL and, by the caller's contract, `len` readable bytes valid for 'a.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A 32-byte seed at `ptr`.
///
/// # Safety
/// `ptr` must be NULL or point to 32 readable bytes.
pub(crate) unsafe fn in_seed(ptr: *const u8, arg: &str) -> FfiResult<[u8; 32]> {
    if ptr.is_null() {
        return Err(Error::null(arg));
    }
    let mut seed = [0u8; 32];
    // SAFETY: non-NULL and, by the caller's contract, 32 readable bytes; `seed` is a distinct
    // local array.
    unsafe { std::ptr::copy_nonoverlapping(ptr, seed.as_mut_ptr(), 32) };
    Ok(seed)
}

/// A reference to a caller-provided input struct.
///
/// # Safety
/// `ptr` must be NULL or point to a valid, initialized `T` (plain numbers only) for `'a`.
pub(crate) unsafe fn in_ref<'a, T>(ptr: *const T, arg: &str) -> FfiResult<&'a T> {
    // SAFETY: by the caller's contract a non-NULL `ptr` points to a valid `T`.
    unsafe { ptr.as_ref() }.ok_or_else(|| Error::null(arg))
}

/// The out-parameter at `ptr` as a mutable reference.
///
/// # Safety
/// `ptr` must be NULL or point to a writable, properly aligned `T` for `'a` (any current
/// contents; only plain data types are used, so every bit pattern is a valid `T`).
pub(crate) unsafe fn out_ref<'a, T>(ptr: *mut T, arg: &str) -> FfiResult<&'a mut T> {
    // SAFETY: by the caller's contract a non-NULL `ptr` is writable and aligned; the types used
    // here (integers, floats, raw pointers, repr(C) structs of them) accept any bit pattern.
    unsafe { ptr.as_mut() }.ok_or_else(|| Error::null(arg))
}

/// Copies `src` into the caller's buffer (`buf`, `cap`) and stores the length in `out_len`;
/// when `cap` is too small stores the needed capacity and fails with
/// `QKD_ERR_BUFFER_TOO_SHORT`, writing nothing.
///
/// # Safety
/// `buf` must be NULL or point to `cap` writable bytes.
pub(crate) unsafe fn write_bytes(
    src: &[u8],
    buf: *mut u8,
    cap: usize,
    out_len: &mut usize,
) -> FfiResult {
    if cap < src.len() {
        *out_len = src.len();
        return Err(Error::new(
            qkd_result::QKD_ERR_BUFFER_TOO_SHORT,
            format!("output buffer holds {cap} bytes; {} are needed", src.len()),
        ));
    }
    if !src.is_empty() {
        if buf.is_null() {
            return Err(Error::null("buf"));
        }
        // SAFETY: `buf` is non-NULL with `cap >= src.len()` writable bytes (caller's contract);
        // `src` is our own memory, so the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), buf, src.len()) };
    }
    *out_len = src.len();
    Ok(())
}

/// Writes `s` and a NUL into (`buf`, `cap`); `out_len` gets `s.len()`, or `s.len() + 1` (the
/// capacity needed) with `QKD_ERR_BUFFER_TOO_SHORT`.
///
/// # Safety
/// `buf` must be NULL or point to `cap` writable bytes.
pub(crate) unsafe fn write_str(
    s: &str,
    buf: *mut c_char,
    cap: usize,
    out_len: &mut usize,
) -> FfiResult {
    let needed = s.len() + 1;
    if cap < needed {
        *out_len = needed;
        return Err(Error::new(
            qkd_result::QKD_ERR_BUFFER_TOO_SHORT,
            format!("string buffer holds {cap} bytes; {needed} are needed"),
        ));
    }
    if buf.is_null() {
        return Err(Error::null("buf"));
    }
    // SAFETY: `buf` is non-NULL with `cap >= s.len() + 1` writable bytes (caller's contract);
    // `s` is our own memory.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), buf.cast::<u8>(), s.len());
        *buf.add(s.len()) = 0;
    }
    *out_len = s.len();
    Ok(())
}

/// Converts a caller-provided length (`u64`) to `usize`.
pub(crate) fn to_usize(v: u64, arg: &str) -> FfiResult<usize> {
    usize::try_from(v).map_err(|_| Error::invalid(format!("{arg} = {v} does not fit in size_t")))
}

/// Bytes the library hands out (a session's next message): read them with qkd_buffer_data,
/// release them with qkd_buffer_free. Opaque.
#[derive(Debug)]
pub struct qkd_buffer {
    _private: [u8; 0],
}

pub(crate) const BUFFER_TAG: u64 = u64::from_be_bytes(*b"qkdBUFFR");

/// The bytes behind a `qkd_buffer`. `Debug` shows the length only.
pub(crate) struct Bytes(pub(crate) Vec<u8>);

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bytes({} bytes)", self.0.len())
    }
}

impl Handle for Bytes {
    type Opaque = qkd_buffer;
    const TAG: u64 = BUFFER_TAG;
    const NAME: &'static str = "qkd_buffer";
}

/// Stores a pointer to the bytes of `buffer` in `*data_out` and their number in `*len_out`.
/// The bytes stay valid, and unchanged, until qkd_buffer_free(buffer); `*data_out` is NULL
/// when the length is 0.
///
/// # Safety
/// `buffer` must be NULL or a live handle; `data_out` NULL or a writable `const uint8_t *`;
/// `len_out` NULL or a writable `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_buffer_data(
    buffer: *const qkd_buffer,
    data_out: *mut *const u8,
    len_out: *mut usize,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on the out-parameters and `buffer`.
        let (data, len, bytes) = unsafe {
            (
                out_ref(data_out, "data_out")?,
                out_ref(len_out, "len_out")?,
                handle::get::<Bytes>(buffer, "buffer")?,
            )
        };
        *data = if bytes.0.is_empty() {
            std::ptr::null()
        } else {
            bytes.0.as_ptr()
        };
        *len = bytes.0.len();
        Ok(())
    })
}

/// Frees a buffer. NULL is ignored, and so is a handle of another kind (nothing is freed then).
///
/// # Safety
/// `buffer` must be NULL or a live handle, not used again afterwards (nor the pointer
/// qkd_buffer_data gave).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_buffer_free(buffer: *mut qkd_buffer) {
    // SAFETY: caller contract.
    guard_value((), || unsafe { handle::free::<Bytes>(buffer) })
}
