//! Tagged opaque handles.
//!
//! Every handle handed to C is a `Box<Tagged<T>>`: a `repr(C)` struct whose first field is a
//! 64-bit tag naming its kind. On entry the tag is read through the caller's pointer and
//! compared with the kind expected, so a handle of another kind gives `QKD_ERR_WRONG_HANDLE`
//! instead of undefined behaviour. Freeing overwrites the tag first, which catches a second
//! free *as long as the allocator has not reused the memory*: a dangling pointer remains
//! undefined behaviour, as in any C API.

use crate::result::{Error, FfiResult, qkd_result};

/// Tag written over a handle that is being freed.
const FREED: u64 = u64::from_be_bytes(*b"qkdFREED");

/// A Rust type exposed to C as an opaque handle.
pub(crate) trait Handle: Sized {
    /// The opaque C type (`qkd_block`, ...).
    type Opaque;
    /// Distinct tag of this kind.
    const TAG: u64;
    /// The C type name, for error details.
    const NAME: &'static str;
}

#[repr(C)]
struct Tagged<T> {
    tag: u64,
    value: T,
}

/// Known tags and their names, for error details.
const KINDS: &[(u64, &str)] = &[
    (crate::block::BLOCK_TAG, "qkd_block"),
    (crate::buffer::BUFFER_TAG, "qkd_buffer"),
    (crate::cascade::ALICE_TAG, "qkd_cascade_alice"),
    (crate::cascade::BOB_TAG, "qkd_cascade_bob"),
    (crate::confirm::CONFIRM_TAG, "qkd_confirm"),
    (crate::store::STORE_TAG, "qkd_store"),
    (crate::session::LINK_TAG, "qkd_link"),
    (crate::session::SESSION_TAG, "qkd_session"),
];

fn kind_name(tag: u64) -> &'static str {
    if tag == FREED {
        return "a freed handle";
    }
    KINDS
        .iter()
        .find(|(t, _)| *t == tag)
        .map_or("not a live qkd handle", |(_, n)| n)
}

/// Checks the tag at `ptr` and returns the tagged box pointer.
///
/// # Safety
/// `ptr` must be NULL or point to memory that was a live libqkd handle (of any kind).
unsafe fn checked<T: Handle>(ptr: *const T::Opaque, arg: &str) -> FfiResult<*mut Tagged<T>> {
    if ptr.is_null() {
        return Err(Error::null(arg));
    }
    if !(ptr as usize).is_multiple_of(std::mem::align_of::<u64>()) {
        return Err(Error::new(
            qkd_result::QKD_ERR_WRONG_HANDLE,
            format!("argument `{arg}` is not a {}: misaligned pointer", T::NAME),
        ));
    }
    // SAFETY: every libqkd handle is a `Tagged<_>` whose first field (repr(C)) is an aligned
    // u64, so reading a u64 at `ptr` is valid for any live handle kind (the caller's contract);
    // the alignment was checked above.
    let tag = unsafe { std::ptr::read(ptr.cast::<u64>()) };
    if tag != T::TAG {
        return Err(Error::new(
            qkd_result::QKD_ERR_WRONG_HANDLE,
            format!(
                "argument `{arg}` is not a {}: it is {}",
                T::NAME,
                kind_name(tag)
            ),
        ));
    }
    Ok(ptr.cast::<Tagged<T>>().cast_mut())
}

/// Moves `value` into a new handle.
pub(crate) fn into_raw<T: Handle>(value: T) -> *mut T::Opaque {
    Box::into_raw(Box::new(Tagged { tag: T::TAG, value })).cast()
}

/// Borrows the value behind a handle after checking its tag.
///
/// # Safety
/// `ptr` must be NULL or a live libqkd handle not mutated by another thread during `'a`.
pub(crate) unsafe fn get<'a, T: Handle>(ptr: *const T::Opaque, arg: &str) -> FfiResult<&'a T> {
    // SAFETY: forwarded caller contract.
    let p = unsafe { checked::<T>(ptr, arg) }?;
    // SAFETY: the tag says this is a live `Tagged<T>` created by `into_raw`; no other thread
    // mutates it (caller's contract).
    Ok(unsafe { &(*p).value })
}

/// Borrows the value behind a handle mutably after checking its tag.
///
/// # Safety
/// `ptr` must be NULL or a live libqkd handle not used by another thread during `'a`.
pub(crate) unsafe fn get_mut<'a, T: Handle>(
    ptr: *mut T::Opaque,
    arg: &str,
) -> FfiResult<&'a mut T> {
    // SAFETY: forwarded caller contract.
    let p = unsafe { checked::<T>(ptr, arg) }?;
    // SAFETY: the tag says this is a live `Tagged<T>` created by `into_raw`; the caller gives
    // this call exclusive use of it.
    Ok(unsafe { &mut (*p).value })
}

/// Frees a handle: NULL and handles of another kind are ignored (nothing is freed).
///
/// # Safety
/// `ptr` must be NULL or a live libqkd handle that is not used again afterwards.
pub(crate) unsafe fn free<T: Handle>(ptr: *mut T::Opaque) {
    // SAFETY: forwarded caller contract.
    if let Ok(p) = unsafe { checked::<T>(ptr, "handle") } {
        // SAFETY: `p` is a live `Tagged<T>` from `Box::into_raw`; the tag is overwritten before
        // the box is rebuilt and dropped exactly once (the value's Drop zeroizes key material).
        unsafe {
            (*p).tag = FREED;
            drop(Box::from_raw(p));
        }
    }
}

/// Stores a new handle for `value` in the out-parameter.
pub(crate) fn put<T: Handle>(out: &mut *mut T::Opaque, value: T) {
    *out = into_raw(value);
}
