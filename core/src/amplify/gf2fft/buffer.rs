//! Transform buffers. Large ones are anonymous memory maps advised to use transparent huge
//! pages, kept in a small pool for the next hash: a 10^8-bit hash works on about 200 MiB,
//! and fresh memory costs page faults and the kernel's zeroing of every page, which took a
//! fifth (4 KiB pages) and then a quarter (huge pages) of its time on the development
//! machine. Blocks of one size follow each other in a pipeline, so the pool serves them all
//! after the first. Secret buffers are zeroized before they return to the pool. Small
//! buffers, and large ones where the map fails, live on the heap.

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

use memmap2::{Advice, MmapMut};
use rayon::prelude::*;
use zeroize::{DefaultIsZeroes, Zeroize};

/// Buffers of at least this many bytes are memory maps.
const MAP_MIN_BYTES: usize = 4 << 20;
/// The pool keeps at most this many bytes of unused maps (the oldest go first).
const POOL_MAX_BYTES: usize = 1 << 30;

/// Unused maps, oldest first.
static POOL: Mutex<Vec<MmapMut>> = Mutex::new(Vec::new());

/// A pooled map of exactly `bytes` bytes, if any.
fn take_pooled(bytes: usize) -> Option<MmapMut> {
    let mut pool = POOL.lock().ok()?;
    let i = pool.iter().rposition(|m| m.len() == bytes)?;
    Some(pool.remove(i))
}

/// Returns `map` to the pool, dropping the oldest maps beyond [`POOL_MAX_BYTES`].
fn give_back(map: MmapMut) {
    let Ok(mut pool) = POOL.lock() else {
        return;
    };
    if map.len() > POOL_MAX_BYTES {
        return;
    }
    pool.push(map);
    while pool.iter().map(|m| m.len()).sum::<usize>() > POOL_MAX_BYTES {
        pool.remove(0);
    }
}

/// An element type of a [`Buffer`]: a plain unsigned integer (every bit pattern valid,
/// zero bytes are zero).
pub(super) trait Word: Copy + Default + Send + Sync + DefaultIsZeroes {}

impl Word for u32 {}
impl Word for u64 {}

/// An array of `len` words whose contents start unspecified (zero, or what an earlier
/// buffer of this process left: callers write every element before reading it), zeroized
/// on drop when it holds secrets.
pub(super) struct Buffer<T: Word> {
    storage: Storage<T>,
    secret: bool,
}

enum Storage<T> {
    Map(MmapMut, usize),
    Heap(Vec<T>),
}

impl<T: Word> Buffer<T> {
    /// `len` words; `secret` buffers (anything derived from the key) are zeroized when
    /// dropped.
    pub(super) fn scratch(len: usize, secret: bool) -> Self {
        let bytes = len * size_of::<T>();
        let storage = if bytes >= MAP_MIN_BYTES {
            if let Some(map) = take_pooled(bytes) {
                return Buffer {
                    storage: Storage::Map(map, len),
                    secret,
                };
            }
            match MmapMut::map_anon(bytes) {
                Ok(map) => {
                    // Advice only: without huge pages the map works the same, slower.
                    let _ = map.advise(Advice::HugePage);
                    Storage::Map(map, len)
                }
                Err(_) => Storage::Heap(vec![T::default(); len]),
            }
        } else {
            Storage::Heap(vec![T::default(); len])
        };
        Buffer { storage, secret }
    }
}

impl<T: Word> Deref for Buffer<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match &self.storage {
            // SAFETY: the map is page aligned (so aligned for `T`), holds `len * size_of::<T>()`
            // initialised bytes (zero-filled by the kernel, then written only through `T`), every bit pattern is a valid `T`
            // (`Word` is only implemented for unsigned integers), and the borrow of `self`
            // keeps the map alive and unaliased for the slice's lifetime.
            Storage::Map(map, len) => unsafe {
                std::slice::from_raw_parts(map.as_ptr().cast(), *len)
            },
            Storage::Heap(v) => v,
        }
    }
}

impl<T: Word> DerefMut for Buffer<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match &mut self.storage {
            // SAFETY: as in `deref`, with the exclusive borrow of `self` for the mutable slice.
            Storage::Map(map, len) => unsafe {
                std::slice::from_raw_parts_mut(map.as_mut_ptr().cast(), *len)
            },
            Storage::Heap(v) => v,
        }
    }
}

impl<T: Word> Drop for Buffer<T> {
    fn drop(&mut self) {
        if self.secret {
            self.par_chunks_mut(1 << 16).for_each(|c| c.zeroize());
        }
        if let Storage::Map(map, _) =
            std::mem::replace(&mut self.storage, Storage::Heap(Vec::new()))
        {
            give_back(map);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_hold_what_is_written_and_secret_ones_return_zeroized() {
        // An odd size no other test uses, so the pooled map is this test's own.
        let len = MAP_MIN_BYTES / 8 + 24_577;
        for secret in [false, true] {
            let mut b = Buffer::<u64>::scratch(len, secret);
            assert!(matches!(b.storage, Storage::Map(..)));
            assert_eq!(b.len(), len);
            b.iter_mut()
                .enumerate()
                .for_each(|(i, w)| *w = i as u64 + 1);
            assert!(b.iter().enumerate().all(|(i, &w)| w == i as u64 + 1));
            drop(b);
            let again = Buffer::<u64>::scratch(len, false);
            assert_eq!(again.iter().all(|&w| w == 0), secret, "secret={secret}");
            drop(again);
        }
        let small = Buffer::<u32>::scratch(5, true);
        assert!(matches!(small.storage, Storage::Heap(..)) && small.len() == 5);
    }
}
