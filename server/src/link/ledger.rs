//! The durable state of post-processing, per link: what happened to every raw block (started,
//! held pending, active, discarded), the order of the authentication pool's refills, the pool's
//! watermark, and the raw files finished. One redb database (`links/ledger.redb` in the state
//! directory); every write is one durable transaction.
//!
//! Final keys that wait for the peer (pending) are files of their own beside it
//! ([`Ledger::write_pending`]), created 0600, synced, and overwritten before deletion.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// (peer, block ID) -> [`BlockState`].
const BLOCKS: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("blocks");
/// (peer, block ID) -> (): the blocks not decided yet (started or pending), so that settling a
/// connection reads those and not every block the link ever had.
const OPEN: TableDefinition<'_, (&str, &str), ()> = TableDefinition::new("open_blocks");
/// (peer, refill number) -> block ID whose share it was.
const REFILLS: TableDefinition<'_, (&str, u64), &str> = TableDefinition::new("refills");
/// (peer, name) -> counter (see [`Counter`]).
const META: TableDefinition<'_, (&str, &str), u64> = TableDefinition::new("meta");
/// (peer, raw file name) -> Unix ms when every block of it was decided.
const FILES_DONE: TableDefinition<'_, (&str, &str), u64> = TableDefinition::new("files_done");

/// What became of a raw block on this side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum BlockState {
    /// A session was started on it: it is never started again.
    Started,
    /// Its final key is held here (a pending file), waiting for the peer to hold it too.
    Pending,
    /// Its final key is in the store (allocatable) and its share in the authentication pool
    /// (refill number, if it had one).
    Active {
        /// The refill number of its authentication share.
        refill: Option<u64>,
    },
    /// No key from it, on either side.
    Discarded {
        /// Why.
        reason: String,
    },
}

impl BlockState {
    /// Whether nothing more will happen to the block.
    pub(crate) fn is_decided(&self) -> bool {
        matches!(self, Self::Active { .. } | Self::Discarded { .. })
    }
}

/// The per-link counters kept in the ledger.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    /// Authentication pool words below this position may have served (see `auth.rs`).
    Watermark,
    /// Bytes of the authentication pool file that are committed.
    PoolBytes,
    /// Refills applied so far (the next refill's number).
    Refills,
    /// Next block number of a simulated device.
    NextSimulated,
}

impl Counter {
    fn name(self) -> &'static str {
        match self {
            Self::Watermark => "auth_watermark",
            Self::PoolBytes => "auth_pool_bytes",
            Self::Refills => "auth_refills",
            Self::NextSimulated => "next_simulated",
        }
    }
}

/// An activation's refill: its number and the pool length after it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refill {
    pub(crate) number: u64,
    pub(crate) pool_bytes: u64,
}

/// The ledger of every link of this KME.
pub(crate) struct Ledger {
    db: Database,
    pending_dir: PathBuf,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("pending_dir", &self.pending_dir)
            .finish_non_exhaustive()
    }
}

type Result<T> = std::result::Result<T, String>;

fn err(what: &str) -> impl Fn(&dyn std::fmt::Display) -> String + '_ {
    move |e| format!("link ledger: {what}: {e}")
}

/// Creates a private directory (0700 from the start, missing parents too) or makes an existing
/// one private.
pub(crate) fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("securing {}: {e}", dir.display()))
}

/// Syncs a directory, so a file created, renamed or removed in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("syncing {}: {e}", dir.display()))
}

/// Writes `bytes` to a new private file (0600) at `path` and syncs it and its directory.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Overwrites a file with zeros, syncs, and deletes it (nothing if it does not exist).
pub(crate) fn burn(path: &Path) -> Result<()> {
    let len = match fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let io = |e: std::io::Error| format!("overwriting {}: {e}", path.display());
    let mut f = OpenOptions::new().write(true).open(path).map_err(io)?;
    let zeros = vec![0u8; 1 << 16];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n]).map_err(io)?;
        left -= n as u64;
    }
    f.sync_all().map_err(io)?;
    fs::remove_file(path).map_err(|e| format!("deleting {}: {e}", path.display()))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Writes a block's state in `txn`, keeping [`OPEN`] in step.
fn put_block(
    txn: &redb::WriteTransaction,
    peer: &str,
    block: &str,
    state: &BlockState,
) -> std::result::Result<(), String> {
    let e = err("recording a block");
    let bytes = postcard::to_stdvec(state).map_err(|x| e(&x))?;
    let mut t = txn.open_table(BLOCKS).map_err(|x| e(&x))?;
    t.insert((peer, block), bytes.as_slice())
        .map_err(|x| e(&x))?;
    let mut open = txn.open_table(OPEN).map_err(|x| e(&x))?;
    if state.is_decided() {
        open.remove((peer, block)).map_err(|x| e(&x))?;
    } else {
        open.insert((peer, block), ()).map_err(|x| e(&x))?;
    }
    Ok(())
}

impl Ledger {
    /// Opens (or creates) the ledger in `dir` (the KME's `links` directory).
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        private_dir(dir)?;
        let pending_dir = dir.join("pending");
        private_dir(&pending_dir)?;
        let path = dir.join("ledger.redb");
        let db = Database::create(&path).map_err(|e| err("opening")(&e))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("securing {}: {e}", path.display()))?;
        let txn = db.begin_write().map_err(|e| err("opening")(&e))?;
        {
            txn.open_table(BLOCKS).map_err(|e| err("opening")(&e))?;
            txn.open_table(OPEN).map_err(|e| err("opening")(&e))?;
            txn.open_table(REFILLS).map_err(|e| err("opening")(&e))?;
            txn.open_table(META).map_err(|e| err("opening")(&e))?;
            txn.open_table(FILES_DONE).map_err(|e| err("opening")(&e))?;
        }
        txn.commit().map_err(|e| err("opening")(&e))?;
        Ok(Self { db, pending_dir })
    }

    /// The state of a block, if it was ever started here.
    pub(crate) fn state(&self, peer: &str, block: &str) -> Result<Option<BlockState>> {
        let e = err("reading a block");
        let txn = self.db.begin_read().map_err(|x| e(&x))?;
        let t = txn.open_table(BLOCKS).map_err(|x| e(&x))?;
        match t.get((peer, block)).map_err(|x| e(&x))? {
            Some(v) => postcard::from_bytes(v.value()).map(Some).map_err(|x| e(&x)),
            None => Ok(None),
        }
    }

    /// Records a block's new state.
    pub(crate) fn set(&self, peer: &str, block: &str, state: &BlockState) -> Result<()> {
        let e = err("recording a block");
        let txn = self.db.begin_write().map_err(|x| e(&x))?;
        put_block(&txn, peer, block, state)?;
        txn.commit().map_err(|x| e(&x))
    }

    /// Marks a block active, with its refill (if any) recorded in the same transaction.
    pub(crate) fn activate(&self, peer: &str, block: &str, refill: Option<Refill>) -> Result<()> {
        let e = err("activating a block");
        let state = BlockState::Active {
            refill: refill.map(|r| r.number),
        };
        let txn = self.db.begin_write().map_err(|x| e(&x))?;
        put_block(&txn, peer, block, &state)?;
        if let Some(r) = refill {
            let mut refills = txn.open_table(REFILLS).map_err(|x| e(&x))?;
            refills.insert((peer, r.number), block).map_err(|x| e(&x))?;
            let mut meta = txn.open_table(META).map_err(|x| e(&x))?;
            meta.insert((peer, Counter::Refills.name()), r.number + 1)
                .map_err(|x| e(&x))?;
            meta.insert((peer, Counter::PoolBytes.name()), r.pool_bytes)
                .map_err(|x| e(&x))?;
        }
        txn.commit().map_err(|x| e(&x))
    }

    /// The blocks of `peer` not decided yet (started or pending) in a state `keep` selects.
    pub(crate) fn open_blocks(
        &self,
        peer: &str,
        keep: impl Fn(&BlockState) -> bool,
    ) -> Result<Vec<(String, BlockState)>> {
        let e = err("listing blocks");
        let txn = self.db.begin_read().map_err(|x| e(&x))?;
        let open = txn.open_table(OPEN).map_err(|x| e(&x))?;
        let blocks = txn.open_table(BLOCKS).map_err(|x| e(&x))?;
        let mut out = Vec::new();
        for row in open.range((peer, "")..).map_err(|x| e(&x))? {
            let (k, _) = row.map_err(|x| e(&x))?;
            let (p, block) = k.value();
            if p != peer {
                break;
            }
            let Some(v) = blocks.get((peer, block)).map_err(|x| e(&x))? else {
                continue;
            };
            let state: BlockState = postcard::from_bytes(v.value()).map_err(|x| e(&x))?;
            if keep(&state) {
                out.push((block.to_string(), state));
            }
        }
        Ok(out)
    }

    /// The block whose share was refill `number`.
    pub(crate) fn refill_block(&self, peer: &str, number: u64) -> Result<Option<String>> {
        let e = err("reading a refill");
        let txn = self.db.begin_read().map_err(|x| e(&x))?;
        let t = txn.open_table(REFILLS).map_err(|x| e(&x))?;
        Ok(t.get((peer, number))
            .map_err(|x| e(&x))?
            .map(|v| v.value().to_string()))
    }

    /// A counter (0 if never set).
    pub(crate) fn counter(&self, peer: &str, c: Counter) -> Result<u64> {
        let e = err("reading a counter");
        let txn = self.db.begin_read().map_err(|x| e(&x))?;
        let t = txn.open_table(META).map_err(|x| e(&x))?;
        Ok(t.get((peer, c.name()))
            .map_err(|x| e(&x))?
            .map_or(0, |v| v.value()))
    }

    /// Sets a counter.
    pub(crate) fn set_counter(&self, peer: &str, c: Counter, value: u64) -> Result<()> {
        let e = err("writing a counter");
        let txn = self.db.begin_write().map_err(|x| e(&x))?;
        {
            let mut t = txn.open_table(META).map_err(|x| e(&x))?;
            t.insert((peer, c.name()), value).map_err(|x| e(&x))?;
        }
        txn.commit().map_err(|x| e(&x))
    }

    /// Starts a block and advances a counter in one transaction (a simulated device's next
    /// block number moves with the block it made).
    pub(crate) fn start_with_counter(
        &self,
        peer: &str,
        block: &str,
        c: Counter,
        value: u64,
    ) -> Result<()> {
        let e = err("starting a block");
        let txn = self.db.begin_write().map_err(|x| e(&x))?;
        put_block(&txn, peer, block, &BlockState::Started)?;
        {
            let mut m = txn.open_table(META).map_err(|x| e(&x))?;
            m.insert((peer, c.name()), value).map_err(|x| e(&x))?;
        }
        txn.commit().map_err(|x| e(&x))
    }

    /// Records that every block of a raw file was decided.
    pub(crate) fn file_done(&self, peer: &str, name: &str) -> Result<()> {
        let e = err("recording a raw file");
        let txn = self.db.begin_write().map_err(|x| e(&x))?;
        {
            let mut t = txn.open_table(FILES_DONE).map_err(|x| e(&x))?;
            t.insert((peer, name), crate::kme::now_ms())
                .map_err(|x| e(&x))?;
        }
        txn.commit().map_err(|x| e(&x))
    }

    /// Whether every block of a raw file was decided here.
    pub(crate) fn is_file_done(&self, peer: &str, name: &str) -> Result<bool> {
        let e = err("reading a raw file");
        let txn = self.db.begin_read().map_err(|x| e(&x))?;
        let t = txn.open_table(FILES_DONE).map_err(|x| e(&x))?;
        Ok(t.get((peer, name)).map_err(|x| e(&x))?.is_some())
    }

    fn pending_path(&self, peer: &str, block: &str) -> PathBuf {
        let mut h = blake3::Hasher::new();
        h.update(peer.as_bytes());
        h.update(&[0]);
        h.update(block.as_bytes());
        self.pending_dir
            .join(format!("{}.key", h.finalize().to_hex()))
    }

    /// Writes a final key that waits for the peer (then the caller records `Pending`).
    pub(crate) fn write_pending(&self, peer: &str, block: &str, key: &[u8]) -> Result<()> {
        write_private(&self.pending_path(peer, block), key)
    }

    /// Reads a pending final key.
    pub(crate) fn read_pending(&self, peer: &str, block: &str) -> Result<Zeroizing<Vec<u8>>> {
        let path = self.pending_path(peer, block);
        let mut out = Zeroizing::new(Vec::new());
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut out))
            .map_err(|e| format!("pending key of block {block:?}: {e}"))?;
        Ok(out)
    }

    /// Overwrites and deletes a pending final key (none: nothing to do).
    pub(crate) fn burn_pending(&self, peer: &str, block: &str) -> Result<()> {
        burn(&self.pending_path(peer, block))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_counters_and_pending_keys_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let l = Ledger::open(dir.path()).unwrap();
            l.set("B", "x#0", &BlockState::Started).unwrap();
            l.write_pending("B", "x#1", b"secret").unwrap();
            l.set("B", "x#1", &BlockState::Pending).unwrap();
            l.activate(
                "B",
                "x#2",
                Some(Refill {
                    number: 0,
                    pool_bytes: 4096,
                }),
            )
            .unwrap();
            l.set("C", "x#0", &BlockState::Pending).unwrap();
            l.file_done("B", "x").unwrap();
        }
        let l = Ledger::open(dir.path()).unwrap();
        assert_eq!(l.state("B", "x#0").unwrap(), Some(BlockState::Started));
        assert_eq!(
            l.state("B", "x#2").unwrap(),
            Some(BlockState::Active { refill: Some(0) })
        );
        assert_eq!(l.state("B", "nope").unwrap(), None);
        let pending = l.open_blocks("B", |s| *s == BlockState::Pending).unwrap();
        assert_eq!(pending, vec![("x#1".to_string(), BlockState::Pending)]);
        // Only undecided blocks are open: x#0 (started) and x#1; x#2 is active.
        let open: Vec<String> = l
            .open_blocks("B", |_| true)
            .unwrap()
            .into_iter()
            .map(|(b, _)| b)
            .collect();
        assert_eq!(open, ["x#0", "x#1"]);
        l.set("B", "x#0", &BlockState::Discarded { reason: "r".into() })
            .unwrap();
        assert_eq!(l.open_blocks("B", |_| true).unwrap().len(), 1);
        assert_eq!(&**l.read_pending("B", "x#1").unwrap(), b"secret");
        assert_eq!(l.counter("B", Counter::Refills).unwrap(), 1);
        assert_eq!(l.counter("B", Counter::PoolBytes).unwrap(), 4096);
        assert_eq!(l.counter("C", Counter::Refills).unwrap(), 0);
        assert_eq!(l.refill_block("B", 0).unwrap().as_deref(), Some("x#2"));
        assert!(l.is_file_done("B", "x").unwrap());
        assert!(!l.is_file_done("C", "x").unwrap());
        let path = l.pending_path("B", "x#1");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        l.burn_pending("B", "x#1").unwrap();
        assert!(!path.exists());
        assert!(l.read_pending("B", "x#1").is_err());
    }
}
