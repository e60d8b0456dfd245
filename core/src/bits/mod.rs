//! Packed bit blocks: the one representation of raw, reconciled and final key in the engine.
//!
//! A [`BitBlock`] stores `len` bits in `u64` words, least significant bit first: bit `i` is bit
//! `i % 64` of word `i / 64`, and, as bytes, bit `i % 8` of byte `i / 8` (DESIGN §4). Bits past
//! `len` in the last word are always zero, so whole-word kernels never see garbage. The words
//! are overwritten with zeros when a block is dropped, and `Debug` prints the length only.
//!
//! The hot loops (XOR, popcount, range parity) live in [`kernels`], dispatched once at run time
//! to the widest instruction set the CPU offers, with a portable path that every backend is
//! tested against.

pub mod kernels;

use std::fmt;
use std::ops::Range;

use zeroize::{Zeroize, Zeroizing};

/// Errors from bit-block operations: always a caller's mistake about lengths or positions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BitsError {
    /// Two blocks that must have the same length do not.
    #[error("length mismatch: {left} bits vs {right} bits")]
    LengthMismatch {
        /// Length of the receiver.
        left: usize,
        /// Length of the argument.
        right: usize,
    },
    /// A bit position is past the end of the block.
    #[error("bit position {position} is out of range for a block of {len} bits")]
    PositionOutOfRange {
        /// The offending position.
        position: usize,
        /// Length of the block.
        len: usize,
    },
    /// A range is reversed or ends past the end of the block.
    #[error("bit range {start}..{end} is invalid for a block of {len} bits")]
    InvalidRange {
        /// Range start.
        start: usize,
        /// Range end (exclusive).
        end: usize,
        /// Length of the block.
        len: usize,
    },
    /// The byte or word buffer holds fewer bits than requested.
    #[error("buffer holds {available} bits but {requested} were requested")]
    BufferTooShort {
        /// Bits available in the buffer.
        available: usize,
        /// Bits requested.
        requested: usize,
    },
    /// An index table is not a permutation of `0..n`.
    #[error("index table is not a permutation of 0..{len}: {reason}")]
    NotAPermutation {
        /// Expected size.
        len: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Number of `u64` words needed for `len` bits.
#[inline]
pub const fn words_for(len: usize) -> usize {
    len.div_ceil(64)
}

/// Mask of the valid bits of the last word of a `len`-bit block (all ones when `len % 64 == 0`).
#[inline]
const fn tail_mask(len: usize) -> u64 {
    match len % 64 {
        0 => u64::MAX,
        r => (1u64 << r) - 1,
    }
}

/// A block of bits packed into `u64` words, LSB-first, tail bits zero, zeroized on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct BitBlock {
    words: Vec<u64>,
    len: usize,
}

impl Drop for BitBlock {
    fn drop(&mut self) {
        self.words.zeroize();
    }
}

impl fmt::Debug for BitBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BitBlock")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl BitBlock {
    /// A block of `len` zero bits.
    pub fn zeros(len: usize) -> Self {
        Self {
            words: vec![0; words_for(len)],
            len,
        }
    }

    /// Takes ownership of `words` as a block of `len` bits; bits past `len` are cleared and
    /// surplus words dropped (and zeroized).
    pub fn from_words(mut words: Vec<u64>, len: usize) -> Result<Self, BitsError> {
        let needed = words_for(len);
        if words.len() < needed {
            return Err(BitsError::BufferTooShort {
                available: words.len() * 64,
                requested: len,
            });
        }
        words[needed..].zeroize();
        words.truncate(needed);
        let mut block = Self { words, len };
        block.mask_tail();
        Ok(block)
    }

    /// Reads the first `len` bits of `bytes` (bit `i` is bit `i % 8` of byte `i / 8`). Bits of
    /// the last byte past `len` are ignored.
    pub fn from_bytes(bytes: &[u8], len: usize) -> Result<Self, BitsError> {
        if len > bytes.len() * 8 {
            return Err(BitsError::BufferTooShort {
                available: bytes.len() * 8,
                requested: len,
            });
        }
        let mut words = vec![0u64; words_for(len)];
        let used = &bytes[..len.div_ceil(8)];
        for (word, chunk) in words.iter_mut().zip(used.chunks(8)) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            *word = u64::from_le_bytes(buf);
            buf.zeroize();
        }
        Self::from_words(words, len)
    }

    /// All bits of `bytes`, `8 * bytes.len()` of them.
    pub fn from_all_bytes(bytes: &[u8]) -> Self {
        match Self::from_bytes(bytes, bytes.len() * 8) {
            Ok(block) => block,
            Err(_) => unreachable!("length is exactly the buffer size"),
        }
    }

    /// A block from booleans, one bit each.
    pub fn from_bools(bits: &[bool]) -> Self {
        let mut block = Self::zeros(bits.len());
        for (i, &b) in bits.iter().enumerate() {
            block.words[i / 64] |= u64::from(b) << (i % 64);
        }
        block
    }

    /// The bits as `ceil(len / 8)` bytes, tail bits of the last byte zero.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let nbytes = self.len.div_ceil(8);
        let mut out = Zeroizing::new(Vec::with_capacity(self.words.len() * 8));
        for w in &self.words {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.truncate(nbytes);
        out
    }

    /// The bits as booleans.
    pub fn to_bools(&self) -> Vec<bool> {
        self.iter().collect()
    }

    /// Number of bits.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the block holds no bits.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The packed words; bits past `len` are zero.
    #[inline]
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Runs `f` on the packed words, then clears the tail bits again so the invariant holds
    /// whatever `f` wrote.
    pub fn with_words_mut<R>(&mut self, f: impl FnOnce(&mut [u64]) -> R) -> R {
        let r = f(&mut self.words);
        self.mask_tail();
        r
    }

    fn mask_tail(&mut self) {
        if let Some(last) = self.words.last_mut() {
            *last &= tail_mask(self.len);
        }
    }

    fn check_position(&self, i: usize) -> Result<(), BitsError> {
        if i < self.len {
            Ok(())
        } else {
            Err(BitsError::PositionOutOfRange {
                position: i,
                len: self.len,
            })
        }
    }

    fn check_range(&self, r: &Range<usize>) -> Result<(), BitsError> {
        if r.start <= r.end && r.end <= self.len {
            Ok(())
        } else {
            Err(BitsError::InvalidRange {
                start: r.start,
                end: r.end,
                len: self.len,
            })
        }
    }

    fn check_same_len(&self, other: &Self) -> Result<(), BitsError> {
        if self.len == other.len {
            Ok(())
        } else {
            Err(BitsError::LengthMismatch {
                left: self.len,
                right: other.len,
            })
        }
    }

    /// Bit `i`.
    #[inline]
    pub fn get(&self, i: usize) -> Result<bool, BitsError> {
        self.check_position(i)?;
        Ok(self.bit(i))
    }

    /// Bit `i` without a bounds check beyond the slice's own (panics when `i / 64` is past
    /// the words; for internal loops over known-good positions).
    #[inline]
    pub(crate) fn bit(&self, i: usize) -> bool {
        (self.words[i / 64] >> (i % 64)) & 1 == 1
    }

    /// Sets bit `i` to `value`.
    #[inline]
    pub fn set(&mut self, i: usize, value: bool) -> Result<(), BitsError> {
        self.check_position(i)?;
        let mask = 1u64 << (i % 64);
        let w = &mut self.words[i / 64];
        *w = (*w & !mask) | (u64::from(value) << (i % 64));
        Ok(())
    }

    /// Flips bit `i`.
    #[inline]
    pub fn flip(&mut self, i: usize) -> Result<(), BitsError> {
        self.check_position(i)?;
        self.words[i / 64] ^= 1u64 << (i % 64);
        Ok(())
    }

    /// Iterates over the bits.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = bool> + '_ {
        (0..self.len).map(|i| self.bit(i))
    }

    /// `self ^= other`.
    pub fn xor_assign(&mut self, other: &Self) -> Result<(), BitsError> {
        self.check_same_len(other)?;
        kernels::best().xor_into(&mut self.words, &other.words);
        Ok(())
    }

    /// `self ^ other` as a new block.
    pub fn xor(&self, other: &Self) -> Result<Self, BitsError> {
        let mut out = self.clone();
        out.xor_assign(other)?;
        Ok(out)
    }

    /// Positions of the one bits, ascending. Walks the words, so its cost follows the number of
    /// ones rather than the length.
    pub fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &w)| {
            std::iter::successors((w != 0).then_some(w), |&rest| {
                let rest = rest & (rest - 1);
                (rest != 0).then_some(rest)
            })
            .map(move |rest| wi * 64 + rest.trailing_zeros() as usize)
        })
    }

    /// Number of one bits.
    pub fn count_ones(&self) -> usize {
        kernels::best().popcount(&self.words) as usize
    }

    /// Number of positions where `self` and `other` differ.
    pub fn hamming_distance(&self, other: &Self) -> Result<usize, BitsError> {
        self.check_same_len(other)?;
        Ok(kernels::best().xor_popcount(&self.words, &other.words) as usize)
    }

    /// Parity (XOR) of the bits in `range`.
    pub fn parity(&self, range: Range<usize>) -> Result<bool, BitsError> {
        self.check_range(&range)?;
        Ok(range_parity(
            kernels::best(),
            &self.words,
            range.start,
            range.end,
        ))
    }

    /// Parity of the whole block.
    pub fn parity_all(&self) -> bool {
        kernels::best().xor_fold(&self.words).count_ones() & 1 == 1
    }

    /// Bits `range` as a new block (bit `range.start` becomes bit 0).
    pub fn slice(&self, range: Range<usize>) -> Result<Self, BitsError> {
        self.check_range(&range)?;
        let len = range.end - range.start;
        let mut out = Self::zeros(len);
        let shift = range.start % 64;
        let first = range.start / 64;
        for (k, w) in out.words.iter_mut().enumerate() {
            let lo = self.words.get(first + k).copied().unwrap_or(0) >> shift;
            let hi = if shift == 0 {
                0
            } else {
                self.words.get(first + k + 1).copied().unwrap_or(0) << (64 - shift)
            };
            *w = lo | hi;
        }
        out.mask_tail();
        Ok(out)
    }

    /// Appends the bits of `other` after the bits of `self`.
    pub fn extend_from(&mut self, other: &Self) {
        let old = self.len;
        let new_len = old + other.len;
        let mut words = vec![0u64; words_for(new_len)];
        words[..self.words.len()].copy_from_slice(&self.words);
        let shift = old % 64;
        let base = old / 64;
        for (k, &w) in other.words.iter().enumerate() {
            words[base + k] |= w << shift;
            if shift != 0 && base + k + 1 < words.len() {
                words[base + k + 1] |= w >> (64 - shift);
            }
        }
        self.words.zeroize();
        self.words = words;
        self.len = new_len;
        self.mask_tail();
    }

    /// The block with its bits rearranged: bit `i` of the result is bit `perm[i]` of `self`.
    pub fn permuted(&self, perm: &Permutation) -> Result<Self, BitsError> {
        if perm.len() != self.len {
            return Err(BitsError::LengthMismatch {
                left: self.len,
                right: perm.len(),
            });
        }
        let mut out = Self::zeros(self.len);
        gather_into(
            &self.words,
            perm.as_slice().iter().map(|&p| p as usize),
            &mut out.words,
        );
        Ok(out)
    }

    /// The bits at `positions`, in that order: bit `i` of the result is bit `positions[i]`.
    pub fn extract(&self, positions: &[usize]) -> Result<Self, BitsError> {
        if let Some(&bad) = positions.iter().find(|&&p| p >= self.len) {
            return Err(BitsError::PositionOutOfRange {
                position: bad,
                len: self.len,
            });
        }
        let mut out = Self::zeros(positions.len());
        gather_into(&self.words, positions.iter().copied(), &mut out.words);
        Ok(out)
    }

    /// The block with the bits at `positions` removed, the others kept in order. Positions may
    /// come in any order; a repeated position is removed once.
    pub fn without_positions(&self, positions: &[usize]) -> Result<Self, BitsError> {
        let mut drop = Self::zeros(self.len);
        for &p in positions {
            drop.set(p, true)?;
        }
        let kept = self.len - drop.count_ones();
        let mut out = Self::zeros(kept);
        let mut j = 0;
        for (wi, (&w, &d)) in self.words.iter().zip(&drop.words).enumerate() {
            let valid = if wi + 1 == self.words.len() {
                tail_mask(self.len)
            } else {
                u64::MAX
            };
            let mut keep = !d & valid;
            while keep != 0 {
                let b = keep.trailing_zeros();
                out.words[j / 64] |= ((w >> b) & 1) << (j % 64);
                j += 1;
                keep &= keep - 1;
            }
        }
        debug_assert_eq!(j, kept);
        Ok(out)
    }
}

/// Writes bit `src[p]` for each `p` of `positions` into consecutive bits of `dst`.
fn gather_into(src: &[u64], positions: impl Iterator<Item = usize>, dst: &mut [u64]) {
    let mut acc = 0u64;
    let mut k = 0usize;
    for (i, p) in positions.enumerate() {
        acc |= ((src[p / 64] >> (p % 64)) & 1) << (i % 64);
        if i % 64 == 63 {
            dst[k] = acc;
            k += 1;
            acc = 0;
        }
    }
    if k < dst.len() {
        dst[k] = acc;
    }
}

/// XORs bits `from..from + len` of `src` into bits `at..at + len` of `dst`, 64 at a time
/// (the caller has checked both ranges).
pub(crate) fn xor_bit_range(dst: &mut [u64], at: usize, src: &[u64], from: usize, len: usize) {
    let mut done = 0;
    while done < len {
        let take = (len - done).min(64);
        let (sw, sb) = ((from + done) / 64, (from + done) % 64);
        let mut bits = src[sw] >> sb;
        if sb != 0 && take > 64 - sb {
            bits |= src[sw + 1] << (64 - sb);
        }
        if take < 64 {
            bits &= (1 << take) - 1;
        }
        let (dw, db) = ((at + done) / 64, (at + done) % 64);
        dst[dw] ^= bits << db;
        if db != 0 && take > 64 - db {
            dst[dw + 1] ^= bits >> (64 - db);
        }
        done += take;
    }
}

/// Parity of bits `start..end` of `words` (caller has checked the range).
pub(crate) fn range_parity(k: &kernels::Kernels, words: &[u64], start: usize, end: usize) -> bool {
    if start >= end {
        return false;
    }
    let (fw, lw) = (start / 64, (end - 1) / 64);
    let first_mask = u64::MAX << (start % 64);
    let last_mask = tail_mask(end);
    let acc = if fw == lw {
        words[fw] & first_mask & last_mask
    } else {
        (words[fw] & first_mask) ^ k.xor_fold(&words[fw + 1..lw]) ^ (words[lw] & last_mask)
    };
    acc.count_ones() & 1 == 1
}

/// A validated permutation of `0..n`, as an index table (`u32` entries, so `n < 2^32`).
#[derive(Clone, PartialEq, Eq)]
pub struct Permutation {
    table: Vec<u32>,
}

impl fmt::Debug for Permutation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permutation")
            .field("len", &self.table.len())
            .finish()
    }
}

impl Permutation {
    /// Checks that `table` holds each of `0..table.len()` exactly once.
    pub fn new(table: Vec<u32>) -> Result<Self, BitsError> {
        let n = table.len();
        if u32::try_from(n).is_err() {
            return Err(BitsError::NotAPermutation {
                len: n,
                reason: "longer than 2^32 entries",
            });
        }
        let mut seen = BitBlock::zeros(n);
        for &t in &table {
            let t = t as usize;
            if t >= n {
                return Err(BitsError::NotAPermutation {
                    len: n,
                    reason: "entry out of range",
                });
            }
            if seen.bit(t) {
                return Err(BitsError::NotAPermutation {
                    len: n,
                    reason: "repeated entry",
                });
            }
            seen.words[t / 64] |= 1 << (t % 64);
        }
        Ok(Self { table })
    }

    /// The identity on `0..n`.
    pub fn identity(n: u32) -> Self {
        Self {
            table: (0..n).collect(),
        }
    }

    /// A uniformly random permutation (Fisher-Yates) drawn with `next_below(k)`, which must
    /// return a uniform value in `0..k`.
    pub fn shuffled(n: u32, mut next_below: impl FnMut(u32) -> u32) -> Self {
        let mut table: Vec<u32> = (0..n).collect();
        for i in (1..table.len()).rev() {
            let j = next_below(i as u32 + 1) as usize;
            table.swap(i, j.min(i));
        }
        Self { table }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True for the permutation of the empty set.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The index table.
    pub fn as_slice(&self) -> &[u32] {
        &self.table
    }

    /// The inverse permutation: `inv[perm[i]] == i`.
    pub fn inverse(&self) -> Self {
        let mut inv = vec![0u32; self.table.len()];
        for (i, &p) in self.table.iter().enumerate() {
            inv[p as usize] = i as u32;
        }
        Self { table: inv }
    }
}

#[cfg(test)]
mod tests;
