//! Transform buffers. Large ones are anonymous memory maps advised to use transparent huge
//! pages: a 10^8-bit hash touches about 200 MiB of fresh memory, and with 4 KiB pages its
//! page faults (and the unmapping after) took about a fifth of its time on the development
//! machine. Small ones, and large ones where the map fails, live on the heap.

use std::ops::{Deref, DerefMut};

use memmap2::{Advice, MmapMut};
use rayon::prelude::*;
use zeroize::{DefaultIsZeroes, Zeroize};

/// Buffers of at least this many bytes are memory maps.
const MAP_MIN_BYTES: usize = 4 << 20;

/// An element type of a [`Buffer`]: a plain unsigned integer (every bit pattern valid,
/// zero bytes are zero).
pub(super) trait Word: Copy + Default + Send + Sync + DefaultIsZeroes {}

impl Word for u32 {}
impl Word for u64 {}

/// A zero-initialised array of `len` words, zeroized on drop when it holds secrets.
pub(super) struct Buffer<T: Word> {
    storage: Storage<T>,
    secret: bool,
}

enum Storage<T> {
    Map(MmapMut, usize),
    Heap(Vec<T>),
}

impl<T: Word> Buffer<T> {
    /// `len` zero words; `secret` buffers (anything derived from the key) are zeroized when
    /// dropped.
    pub(super) fn zeroed(len: usize, secret: bool) -> Self {
        let bytes = len * size_of::<T>();
        let storage = if bytes >= MAP_MIN_BYTES {
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
            // initialised (zero-filled by the kernel) bytes, every bit pattern is a valid `T`
            // (`Word` is only implemented for unsigned integers), and the borrow of `self`
            // keeps the map alive and unaliased for the slice's lifetime.
            Storage::Map(map, len) => unsafe { std::slice::from_raw_parts(map.as_ptr().cast(), *len) },
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_buffers_start_zeroed_and_hold_what_is_written() {
        for len in [0usize, 5, (MAP_MIN_BYTES / 8) + 3] {
            for secret in [false, true] {
                let mut b = Buffer::<u64>::zeroed(len, secret);
                assert_eq!(b.len(), len);
                assert!(b.iter().all(|&w| w == 0));
                b.iter_mut().enumerate().for_each(|(i, w)| *w = i as u64);
                assert!(b.iter().enumerate().all(|(i, &w)| w == i as u64));
            }
        }
        let b = Buffer::<u32>::zeroed(MAP_MIN_BYTES / 4, true);
        assert!(matches!(b.storage, Storage::Map(..)));
    }
}
