//! A read-only view of a store, which a running KME may be writing at the same time: its
//! status and its ledger (the audit trail of every key event), for `qkd store status` and
//! `qkd audit`. It never changes a file and never reads key material.

use std::path::{Path, PathBuf};

use super::records::{self, FORMAT_VERSION};
use super::writer::{open_err, read_meta};
use super::{LedgerEntry, OpenError, SideFilter, StoreError, StoreStatus, files};

/// A read-only view of a store directory ([`StoreView::open`]).
pub struct StoreView {
    dir: PathBuf,
    db: redb::ReadOnlyDatabase,
    sides: Option<SideFilter>,
}

impl std::fmt::Debug for StoreView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreView")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl StoreView {
    /// Opens the index of the store in `dir` read-only, alongside the process that writes it.
    /// `sides` splits the available bits per side as [`super::StoreOptions::sides`] does.
    ///
    /// Refused: a directory that is not a store ([`OpenError::NotAStore`]), one accessible
    /// to group or others, an index of another format version, and an index whose writer
    /// crashed and which has not been opened for writing since (redb must repair it first).
    pub fn open(dir: impl AsRef<Path>, sides: Option<SideFilter>) -> Result<Self, OpenError> {
        let dir = dir.as_ref().to_path_buf();
        let index = dir.join("index.redb");
        if !index.exists() {
            return Err(OpenError::NotAStore { path: dir });
        }
        files::check_private(&dir, &dir)?;
        files::check_private(&index, &dir)?;
        let db = redb::Builder::new()
            .set_concurrency_mode(redb::ConcurrencyMode::SingleWriter)
            .open_read_only(&index)
            .map_err(|e| open_err(&index, e))?;
        let meta = read_meta(&db).map_err(|e| OpenError::CorruptIndex {
            path: index.clone(),
            detail: e.to_string(),
        })?;
        match meta.version {
            Some(FORMAT_VERSION) => {}
            Some(found) => {
                return Err(OpenError::Version {
                    path: index,
                    found,
                    expected: FORMAT_VERSION,
                });
            }
            None => return Err(OpenError::NotAStore { path: dir }),
        }
        Ok(Self { dir, db, sides })
    }

    /// The store's status as of its last commit.
    pub fn status(&self) -> Result<StoreStatus, StoreError> {
        records::status(&self.db, &self.dir, self.sides.as_ref())
    }

    /// Up to `limit` ledger records from sequence number `from` on.
    pub fn ledger(&self, from: u64, limit: usize) -> Result<Vec<LedgerEntry>, StoreError> {
        records::ledger(&self.db, from, limit)
    }
}
