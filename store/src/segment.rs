//! Segment files: append-only key material, read through a read-only memory map.
//!
//! # The mapping contract
//!
//! `memmap2::Mmap::map` is `unsafe` because the map aliases a file that something else might
//! change: a write into a mapped range changes memory behind a `&[u8]`, and a truncation makes
//! touching the lost pages raise `SIGBUS`. The store keeps these rules, which make its maps
//! sound:
//!
//! 1. **Exclusive owner.** Only the process that holds the store's redb lock (the index file is
//!    opened exclusively) touches the segment files, and inside it only the writer thread. Files
//!    are never modified by other processes while the store is open; doing so is outside the
//!    contract and is documented as such in `docs/store.md`.
//! 2. **No truncation while mapped.** Orphan tails are truncated on open, before any map exists;
//!    a file is deleted only after its map is dropped.
//! 3. **No write under a live slice.** Slices into a map exist only inside [`Segment::read`],
//!    which copies the bytes out before returning; appends and overwrites (of committed-dead
//!    material or of orphan tails) run on the same thread, never during a read. Committed-dead
//!    ranges are never read again after they are overwritten.
//! 4. **Bounds.** A read is checked against the map's length (and the map is re-made from the
//!    file's current length when it is too short), so a short (truncated-while-closed) file
//!    gives an error, never an out-of-range access.

//!
//! # Encryption
//!
//! In an encrypted store a segment carries its data key ([`SegmentKey`]): appends are encrypted
//! on the way in, reads and hashes decrypt on the way out (the seekable stream cipher works on
//! any byte range), and overwrites of dead material write plain zeros over the ciphertext.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use zeroize::Zeroizing;

use super::StoreError;
use super::crypto::{Digester, SegmentKey};
use super::files;

/// The file name of segment `n`.
pub(crate) fn file_name(n: u64) -> String {
    format!("{n:016x}.seg")
}

/// The segment number of a file name, if it is one.
pub(crate) fn parse_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".seg")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// One open segment file.
pub(crate) struct Segment {
    pub path: PathBuf,
    file: File,
    map: Option<Mmap>,
    /// Bytes referenced by committed blocks (or staged in the current batch).
    pub len: u64,
    /// Bytes the file really has, when it is shorter than `len` (damaged); otherwise `None`.
    pub short: Option<u64>,
    pub live_blocks: u64,
    pub sealed: bool,
    /// The data key (encrypted stores only).
    pub key: Option<SegmentKey>,
    /// The data key wrapped under the KEK, for the segment's index record.
    pub wrapped_key: Option<Vec<u8>>,
}

impl Segment {
    /// Opens an existing segment file; `committed_len` from the index.
    pub(crate) fn open(path: &Path, committed_len: u64) -> Result<Self, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| StoreError::io(format!("opening {}", path.display()), e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            map: None,
            len: committed_len,
            short: None,
            live_blocks: 0,
            sealed: false,
            key: None,
            wrapped_key: None,
        })
    }

    /// Creates a new, empty segment file, owner-only (the caller syncs the directory).
    pub(crate) fn create(path: &Path) -> Result<Self, StoreError> {
        let file = files::open_or_create(path)
            .and_then(|f| f.set_len(0).map(|()| f))
            .map_err(|e| StoreError::io(format!("creating {}", path.display()), e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            map: None,
            len: 0,
            short: None,
            live_blocks: 0,
            sealed: false,
            key: None,
            wrapped_key: None,
        })
    }

    /// The file's real length.
    pub(crate) fn file_len(&self) -> Result<u64, StoreError> {
        self.file.metadata().map(|m| m.len()).map_err(|e| {
            StoreError::io(format!("reading the length of {}", self.path.display()), e)
        })
    }

    /// Truncates the file to `len` and syncs it (on open only, before any map exists).
    pub(crate) fn truncate(&mut self, len: u64) -> Result<(), StoreError> {
        self.map = None;
        self.file
            .set_len(len)
            .and_then(|()| self.file.sync_all())
            .map_err(|e| StoreError::io(format!("truncating {}", self.path.display()), e))
    }

    /// Writes `bytes` at `offset` (an append past the committed length, or an overwrite of
    /// committed-dead material). Not durable until [`Segment::sync`].
    pub(crate) fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.file.write_all(bytes))
            .map_err(|e| StoreError::io(format!("writing {}", self.path.display()), e))
    }

    /// Appends material at `offset` (past the committed length), encrypting it when the
    /// segment has a key. Not durable until [`Segment::sync`].
    pub(crate) fn append_at(&mut self, offset: u64, plain: &[u8]) -> Result<(), StoreError> {
        match &self.key {
            None => self.write_at(offset, plain),
            Some(key) => {
                let mut buf = Zeroizing::new(plain.to_vec());
                key.apply(offset, &mut buf)?;
                self.write_at(offset, &buf)
            }
        }
    }

    /// `fdatasync`.
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        self.file
            .sync_data()
            .map_err(|e| StoreError::io(format!("syncing {}", self.path.display()), e))
    }

    /// The map bytes `offset..offset+len`, re-mapping when the map is too short. The slice must
    /// not outlive the caller's use (contract rule 3).
    fn slice(&mut self, offset: u64, len: u64) -> Result<&[u8], StoreError> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| StoreError::Damaged("material range overflows".into()))?;
        let mapped = self.map.as_ref().map_or(0, |m| m.len() as u64);
        if end > mapped {
            let real = self.file_len()?;
            if end > real {
                return Err(StoreError::Damaged(format!(
                    "segment {} has {real} bytes; material at {offset}..{end} is missing",
                    self.path.display()
                )));
            }
            self.map = None;
            // SAFETY: the mapping contract in this module's docs: this process holds the store
            // exclusively, files are never truncated while mapped, and no slice into the map
            // outlives the read or hash that made it, nor overlaps a write.
            let map = unsafe { Mmap::map(&self.file) }
                .map_err(|e| StoreError::io(format!("mapping {}", self.path.display()), e))?;
            self.map = Some(map);
        }
        let map = self
            .map
            .as_ref()
            .ok_or_else(|| StoreError::Damaged("segment not mapped".into()))?;
        match (usize::try_from(offset), usize::try_from(end)) {
            (Ok(s), Ok(e)) => map.get(s..e),
            _ => None,
        }
        .ok_or_else(|| {
            StoreError::Damaged(format!("material at {offset}..{end} is outside the map"))
        })
    }

    /// Appends the `len` bytes of material at `offset` to `out` (decrypted).
    pub(crate) fn read_into(
        &mut self,
        offset: u64,
        len: u64,
        out: &mut Zeroizing<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let start = out.len();
        let s = self.slice(offset, len)?;
        out.extend_from_slice(s);
        if let Some(key) = &self.key {
            key.apply(offset, &mut out[start..])?;
        }
        Ok(())
    }

    /// The digest of the `len` bytes of material at `offset`: hashed straight from the map
    /// (no copy) when plain, decrypted 64 KiB at a time into a zeroized buffer when encrypted.
    pub(crate) fn hash(
        &mut self,
        offset: u64,
        len: u64,
        digester: &Digester,
    ) -> Result<[u8; 32], StoreError> {
        let mut h = digester.hasher();
        if self.key.is_none() {
            h.update(self.slice(offset, len)?);
            return Ok(*h.finalize().as_bytes());
        }
        const CHUNK: u64 = 64 << 10;
        let mut buf = Zeroizing::new(Vec::with_capacity(CHUNK.min(len) as usize));
        let mut pos = offset;
        let end = offset.saturating_add(len);
        while pos < end {
            let n = (end - pos).min(CHUNK);
            buf.clear();
            self.read_into(pos, n, &mut buf)?;
            h.update(&buf);
            pos += n;
        }
        Ok(*h.finalize().as_bytes())
    }
}
