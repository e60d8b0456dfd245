//! `qkd_block`: a packed bit string (raw, sifted, reconciled or final key).
//!
//! Bit order (DESIGN §4): bit `i` is bit `i % 8` of byte `i / 8`, least significant first.

use qkd_core::BitBlock;
use qkd_core::rng::{OsRandom, RandomSource, SeededRandom};

use crate::buffer::{in_seed, in_slice, out_ref, write_bytes};
use crate::handle::{self, Handle};
use crate::result::{Error, FfiResult, guard, qkd_result};

/// Length in bytes of the seeds this API takes (`seed` arguments point to this many bytes).
pub const QKD_SEED_LEN: usize = 32;

/// An owned bit string (key material). Opaque; free with `qkd_block_free`, which zeroizes it.
#[derive(Debug)]
pub struct qkd_block {
    _private: [u8; 0],
}

pub(crate) const BLOCK_TAG: u64 = u64::from_be_bytes(*b"qkdBLOCK");

impl Handle for BitBlock {
    type Opaque = qkd_block;
    const TAG: u64 = BLOCK_TAG;
    const NAME: &'static str = "qkd_block";
}

/// Borrows a block argument.
///
/// # Safety
/// As [`handle::get`].
pub(crate) unsafe fn block<'a>(ptr: *const qkd_block, arg: &str) -> FfiResult<&'a BitBlock> {
    // SAFETY: forwarded caller contract.
    unsafe { handle::get::<BitBlock>(ptr, arg) }
}

/// Prepares a `qkd_block **` out-parameter: NULL is an error, otherwise it is set to NULL
/// until the call succeeds.
///
/// # Safety
/// `out` must be NULL or point to a writable `qkd_block *`.
pub(crate) unsafe fn block_out<'a>(
    out: *mut *mut qkd_block,
    arg: &str,
) -> FfiResult<&'a mut *mut qkd_block> {
    // SAFETY: forwarded caller contract.
    let out = unsafe { out_ref(out, arg) }?;
    *out = std::ptr::null_mut();
    Ok(out)
}

/// Expands a public 32-byte seed into `bits` bits: word `i` (64 bits, DESIGN §4 order) is the
/// `i`-th `u64` of the ChaCha20 stream of `SeededRandom::from_seed(seed)`.
pub(crate) fn expand_seed(seed: [u8; 32], bits: usize) -> FfiResult<BitBlock> {
    let mut rng = SeededRandom::from_seed(seed);
    let words = (0..bits.div_ceil(64)).map(|_| rng.u64()).collect();
    BitBlock::from_words(words, bits).map_err(|e| Error::invalid(e.to_string()))
}

/// Creates a block of `bits` bits from `bytes` (DESIGN §4 bit order). `bytes_len` must be at
/// least `ceil(bits / 8)`; bits past `bits` in the last byte are ignored. `bytes` may be NULL
/// when `bytes_len` is 0. The library keeps its own copy; wipe yours when done.
///
/// # Safety
/// `bytes` must be NULL or point to `bytes_len` readable bytes; `out` must be NULL or point to
/// a writable `qkd_block *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_block_from_bytes(
    bytes: *const u8,
    bytes_len: usize,
    bits: usize,
    out: *mut *mut qkd_block,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `out`.
        let out = unsafe { block_out(out, "out") }?;
        // SAFETY: caller contract on `bytes`.
        let src = unsafe { in_slice(bytes, bytes_len, "bytes") }?;
        let b = BitBlock::from_bytes(src, bits).map_err(|_| {
            Error::new(
                qkd_result::QKD_ERR_LENGTH_MISMATCH,
                format!(
                    "{bits} bits need {} bytes but bytes_len is {bytes_len}",
                    bits.div_ceil(8)
                ),
            )
        })?;
        handle::put(out, b);
        Ok(())
    })
}

/// Creates a block of `bits` fresh random bits from the operating system's CSPRNG (for Toeplitz
/// seeds and other public randomness chosen by one side).
///
/// # Safety
/// `out` must be NULL or point to a writable `qkd_block *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_block_random(bits: usize, out: *mut *mut qkd_block) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `out`.
        let out = unsafe { block_out(out, "out") }?;
        let mut seed = OsRandom
            .seed32()
            .map_err(|e| Error::new(qkd_result::QKD_ERR_RANDOM_SOURCE, e.to_string()))?;
        let b = expand_seed(seed, bits);
        zeroize_seed(&mut seed);
        handle::put(out, b?);
        Ok(())
    })
}

fn zeroize_seed(seed: &mut [u8; 32]) {
    use zeroize::Zeroize;
    seed.zeroize();
}

/// Expands a shared public seed (`QKD_SEED_LEN` bytes) into a block of `bits` bits,
/// identically on both sides: word `i` (bits `64 i .. 64 i + 63`, least significant first) is
/// the `i`-th 64-bit output of ChaCha20 keyed with the seed (qkd-core `SeededRandom`). Use it
/// to agree on a Toeplitz seed by sending only 32 bytes.
///
/// # Safety
/// `seed` must be NULL or point to 32 readable bytes; `out` must be NULL or point to a
/// writable `qkd_block *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_block_from_seed(
    seed: *const u8,
    bits: usize,
    out: *mut *mut qkd_block,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `out`.
        let out = unsafe { block_out(out, "out") }?;
        // SAFETY: caller contract on `seed`.
        let seed = unsafe { in_seed(seed, "seed") }?;
        handle::put(out, expand_seed(seed, bits)?);
        Ok(())
    })
}

/// Fills `seed_out` with `QKD_SEED_LEN` fresh bytes from the operating system's CSPRNG.
///
/// # Safety
/// `seed_out` must be NULL or point to 32 writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_random_seed(seed_out: *mut u8) -> qkd_result {
    guard(|| {
        if seed_out.is_null() {
            return Err(Error::null("seed_out"));
        }
        let seed = OsRandom
            .seed32()
            .map_err(|e| Error::new(qkd_result::QKD_ERR_RANDOM_SOURCE, e.to_string()))?;
        // SAFETY: non-NULL, 32 writable bytes by the caller's contract; `seed` is a local.
        unsafe { std::ptr::copy_nonoverlapping(seed.as_ptr(), seed_out, 32) };
        Ok(())
    })
}

/// Copies a block into a new handle.
///
/// # Safety
/// `block` must be NULL or a live handle; `out` must be NULL or point to a writable
/// `qkd_block *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_block_clone(
    block: *const qkd_block,
    out: *mut *mut qkd_block,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `out`.
        let out = unsafe { block_out(out, "out") }?;
        // SAFETY: caller contract on `block`.
        let b = unsafe { self::block(block, "block") }?;
        handle::put(out, b.clone());
        Ok(())
    })
}

/// Stores the length of `block` in bits in `*out_bits`.
///
/// # Safety
/// `block` must be NULL or a live handle; `out_bits` must be NULL or point to a writable
/// `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_block_len(
    block: *const qkd_block,
    out_bits: *mut usize,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `out_bits`.
        let out = unsafe { out_ref(out_bits, "out_bits") }?;
        // SAFETY: caller contract on `block`.
        *out = unsafe { self::block(block, "block") }?.len();
        Ok(())
    })
}

/// Copies the bits of `block` into `buf` as `ceil(len / 8)` bytes (DESIGN §4 order, tail bits
/// zero) and stores that count in `*out_len`. With `cap` too small: QKD_ERR_BUFFER_TOO_SHORT
/// and `*out_len` = the bytes needed. The copy is key material: wipe it when done.
///
/// # Safety
/// `block` must be NULL or a live handle; `buf` must be NULL or point to `cap` writable bytes;
/// `out_len` must be NULL or point to a writable `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_block_to_bytes(
    block: *const qkd_block,
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `out_len`.
        let out_len = unsafe { out_ref(out_len, "out_len") }?;
        // SAFETY: caller contract on `block`.
        let b = unsafe { self::block(block, "block") }?;
        let bytes = b.to_bytes();
        // SAFETY: caller contract on `buf`.
        unsafe { write_bytes(&bytes, buf, cap, out_len) }
    })
}

/// Stores the number of positions where `a` and `b` differ in `*out`. The blocks must have the
/// same length (QKD_ERR_LENGTH_MISMATCH otherwise).
///
/// # Safety
/// `a`, `b` must be NULL or live handles; `out` must be NULL or point to a writable `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_block_hamming_distance(
    a: *const qkd_block,
    b: *const qkd_block,
    out: *mut usize,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `out`.
        let out = unsafe { out_ref(out, "out") }?;
        // SAFETY: caller contract on `a` and `b` (shared borrows; they may be the same handle).
        let (a, b) = unsafe { (block(a, "a")?, block(b, "b")?) };
        *out = a.hamming_distance(b).map_err(|_| {
            Error::new(
                qkd_result::QKD_ERR_LENGTH_MISMATCH,
                format!(
                    "blocks have {} and {} bits; expected equal lengths",
                    a.len(),
                    b.len()
                ),
            )
        })?;
        Ok(())
    })
}

/// Zeroizes and frees a block. NULL is ignored, and so is a handle of another kind (nothing is
/// freed then).
///
/// # Safety
/// `block` must be NULL or a live handle, not used again afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_block_free(block: *mut qkd_block) {
    crate::result::guard_value((), || {
        // SAFETY: caller contract.
        unsafe { handle::free::<BitBlock>(block) }
    })
}
