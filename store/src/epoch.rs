//! The epoch file (`STORE_DIR/epoch`): the store ID and the highest commit counter known to have
//! been committed to the index, kept outside the index so that an older index put back in its
//! place (a backup, a snapshot) is recognised at open.
//!
//! Rule: the index may be ahead of the file, never behind. The writer commits the index (which
//! stores its own counter in `meta`), then writes the new counter here without syncing; the file
//! is synced when the writer is idle, with the overwrite sync. After a crash the file holds an
//! older counter than the index, which is allowed; an index whose counter is *below* the file's
//! (or whose store ID differs) was rolled back or swapped.
//!
//! Format: two 64-byte slots at offsets 0 and 64; counter `c` is written to slot `c % 2` with one
//! `pwrite`, so a torn write damages at most that slot and the other still holds `c - 1`. A slot:
//! `b"qkdEPOCH"`, `u32` format 1 (LE), 4 zero bytes, store ID (`u128` LE), counter (`u64` LE),
//! then the first 24 bytes of BLAKE3 of the 40 bytes before.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::files;

const SLOT: usize = 64;
const MAGIC: &[u8; 8] = b"qkdEPOCH";

/// What the file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Epoch {
    pub store_id: u128,
    pub commit: u64,
}

fn encode(e: Epoch) -> [u8; SLOT] {
    let mut s = [0u8; SLOT];
    s[..8].copy_from_slice(MAGIC);
    s[8..12].copy_from_slice(&1u32.to_le_bytes());
    s[16..32].copy_from_slice(&e.store_id.to_le_bytes());
    s[32..40].copy_from_slice(&e.commit.to_le_bytes());
    let h = blake3::hash(&s[..40]);
    s[40..].copy_from_slice(&h.as_bytes()[..24]);
    s
}

fn decode(s: &[u8]) -> Option<Epoch> {
    if s.len() != SLOT || &s[..8] != MAGIC || s[8..12] != 1u32.to_le_bytes() {
        return None;
    }
    if blake3::hash(&s[..40]).as_bytes()[..24] != s[40..] {
        return None;
    }
    Some(Epoch {
        store_id: u128::from_le_bytes(s[16..32].try_into().ok()?),
        commit: u64::from_le_bytes(s[32..40].try_into().ok()?),
    })
}

/// Reads the epoch file: `Ok(None)` if it does not exist, `Err(detail)` if no slot is valid or
/// the slots name different stores.
pub(crate) fn read(path: &Path) -> io::Result<Result<Option<Epoch>, String>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Ok(None)),
        Err(e) => return Err(e),
    };
    let slots: Vec<Epoch> = bytes.chunks(SLOT).take(2).filter_map(decode).collect();
    Ok(match slots.as_slice() {
        [] => Err(format!("no valid record in its {} bytes", bytes.len())),
        [a, b] if a.store_id != b.store_id => Err("its two records name different stores".into()),
        _ => Ok(slots.iter().copied().max_by_key(|e| e.commit)),
    })
}

/// The open epoch file, written by the writer thread after each commit.
#[derive(Debug)]
pub(crate) struct EpochFile {
    path: PathBuf,
    file: File,
    store_id: u128,
    /// The last counter written; `dirty` until synced.
    last: u64,
    dirty: bool,
}

impl EpochFile {
    /// Creates (or re-seals) the file with both slots at `commit`, synced, directory included.
    pub(crate) fn create(path: &Path, store_id: u128, commit: u64) -> io::Result<Self> {
        let file = files::open_or_create(path)?;
        let e = Epoch { store_id, commit };
        let mut both = [0u8; 2 * SLOT];
        both[..SLOT].copy_from_slice(&encode(e));
        both[SLOT..].copy_from_slice(&encode(e));
        file.write_all_at(&both, 0)?;
        file.set_len(both.len() as u64)?;
        file.sync_all()?;
        if let Some(dir) = path.parent() {
            files::sync_dir(dir)?;
        }
        Ok(Self::with_file(path, file, store_id, commit))
    }

    /// Opens the existing file for updates.
    pub(crate) fn open(path: &Path, store_id: u128, commit: u64) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        Ok(Self::with_file(path, file, store_id, commit))
    }

    fn with_file(path: &Path, file: std::fs::File, store_id: u128, commit: u64) -> Self {
        Self {
            path: path.to_path_buf(),
            file,
            store_id,
            last: commit,
            dirty: false,
        }
    }

    /// Records that the index committed `commit` (not synced).
    pub(crate) fn record(&mut self, commit: u64) {
        self.last = commit;
        self.dirty = true;
        let slot = encode(Epoch {
            store_id: self.store_id,
            commit,
        });
        // A failed write is retried by `sync`.
        let _ = self.file.write_all_at(&slot, (commit % 2) * SLOT as u64);
    }

    /// Whether a recorded counter is not yet synced.
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Makes the last recorded counter durable.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let slot = encode(Epoch {
            store_id: self.store_id,
            commit: self.last,
        });
        self.file
            .write_all_at(&slot, (self.last % 2) * SLOT as u64)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))?;
        self.dirty = false;
        Ok(())
    }
}
