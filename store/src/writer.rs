//! The writer thread: the only place that changes the store. It drains a queue of requests into
//! one redb write transaction (group commit), answers each caller after the commit, then
//! overwrites the material that commit made dead.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use redb::{Database, ReadableDatabase, ReadableTable, Table};
use uuid::Uuid;
use zeroize::Zeroizing;

use qkd_core::rng::{OsRandom, RandomSource};

use super::crypto::{Digester, KeyRing};
use super::epoch::{self, EpochFile};
use super::files;
use super::records::{
    BLOCK_IDS, BLOCKS, BlockRecord, CRYPTO, EXPIRY, Extent, FORMAT_VERSION, KEYS, KeyRecord,
    LEDGER, LINKS, LinkCounters, META, SCRUB, SEGMENTS, SegmentRecord, USED, block_remaining,
    count_side, decode, encode,
};
use super::segment::{self, Segment};
use super::{
    AllocateRequest, BlockFilter, BlockInfo, BurnScope, BurnedLink, DestroyReason, Key,
    KeyAllocation, KeyState, LedgerEntry, LedgerEvent, LinkStatus, MaterialRange, NewBlock,
    OpenError, ReserveRequest, SideFilter, StoreError, StoreOptions, unix_ms,
};

/// Per-link status as of the last commit, published by the writer for cheap reads.
pub(crate) type LiveCounts = Arc<RwLock<HashMap<String, LinkStatus>>>;

/// A request to the writer.
pub(crate) struct Op {
    pub kind: OpKind,
    /// Called once, on the writer thread, after the commit (or the failure): must not block.
    pub reply: Reply,
}

/// How the writer answers a request.
pub(crate) type Reply = Box<dyn FnOnce(Result<OpResult, StoreError>) + Send>;

/// What is asked.
pub(crate) enum OpKind {
    Append {
        block: NewBlock,
        /// Plain BLAKE3 (for the caller's [`BlockInfo`]).
        digest: [u8; 32],
        /// What the index keeps (keyed when encrypted).
        stored: [u8; 32],
    },
    Allocate {
        req: AllocateRequest,
        ids: Vec<Uuid>,
        expires_ms: u64,
        /// Fetch the keys for this recipient in the same commit.
        deliver: Option<String>,
    },
    Reserve {
        req: ReserveRequest,
        expires_ms: u64,
    },
    Fetch {
        ids: Vec<Uuid>,
        recipient: String,
    },
    Destroy {
        ids: Vec<Uuid>,
        actor: String,
    },
    Expire {
        now_ms: u64,
    },
    /// Burn every live key and every unused bit of some links (after a restore from a backup).
    Burn(BurnScope),
    /// A ledger record of the owner's ([`crate::Store::record`]).
    Record {
        actor: String,
        link: String,
        event: LedgerEvent,
    },
}

/// How [`open`] treats a rolled-back index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenMode {
    /// Refuse it.
    Normal,
    /// Accept it (the caller burns the store's material next).
    BurnAfterRestore,
}

/// The answer.
pub(crate) enum OpResult {
    Block(BlockInfo),
    Allocations(Vec<KeyAllocation>),
    /// Allocated and fetched in one commit.
    Delivered(Vec<KeyAllocation>, Vec<Key>),
    Unit,
    Keys(Vec<Key>),
    Count(usize),
    Burned(Vec<BurnedLink>),
}

/// A fatal error aborts the whole batch; the inner result is the request's own outcome.
type Fatal<T> = Result<T, StoreError>;
type Outcome = Fatal<Result<OpResult, StoreError>>;

fn werr(e: impl std::fmt::Display) -> StoreError {
    StoreError::db("writing the index", e)
}

fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

struct Tables<'t> {
    meta: Table<'t, &'static str, u64>,
    segments: Table<'t, u64, &'static [u8]>,
    blocks: Table<'t, u64, &'static [u8]>,
    block_ids: Table<'t, (&'static str, &'static str), u64>,
    used: Table<'t, (u64, u64), u64>,
    keys: Table<'t, u128, &'static [u8]>,
    expiry: Table<'t, (u64, u128), ()>,
    links: Table<'t, &'static str, &'static [u8]>,
    ledger: Table<'t, u64, &'static [u8]>,
    scrub: Table<'t, (u64, u64), u64>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t redb::WriteTransaction) -> Fatal<Self> {
        Ok(Self {
            meta: txn.open_table(META).map_err(werr)?,
            segments: txn.open_table(SEGMENTS).map_err(werr)?,
            blocks: txn.open_table(BLOCKS).map_err(werr)?,
            block_ids: txn.open_table(BLOCK_IDS).map_err(werr)?,
            used: txn.open_table(USED).map_err(werr)?,
            keys: txn.open_table(KEYS).map_err(werr)?,
            expiry: txn.open_table(EXPIRY).map_err(werr)?,
            links: txn.open_table(LINKS).map_err(werr)?,
            ledger: txn.open_table(LEDGER).map_err(werr)?,
            scrub: txn.open_table(SCRUB).map_err(werr)?,
        })
    }

    fn get_key(&self, id: Uuid) -> Fatal<Option<KeyRecord>> {
        match self.keys.get(id.as_u128()).map_err(werr)? {
            Some(v) => Ok(Some(decode("key", v.value())?)),
            None => Ok(None),
        }
    }

    fn put_key(&mut self, id: Uuid, rec: &KeyRecord) -> Fatal<()> {
        self.keys
            .insert(id.as_u128(), encode(rec)?.as_slice())
            .map_err(werr)?;
        Ok(())
    }
}

/// The writer's in-memory view: the committed index plus what the current batch staged.
pub(crate) struct State {
    seg_dir: PathBuf,
    segment_max: u64,
    segments: BTreeMap<u64, Segment>,
    active: Option<u64>,
    /// Unspent blocks.
    blocks: HashMap<u64, BlockRecord>,
    /// Per link, unspent undamaged blocks with material past the frontier, in append order.
    open: HashMap<String, BTreeSet<u64>>,
    links: HashMap<String, LinkCounters>,
    next_block: u64,
    next_segment: u64,
    next_ledger: u64,
    dirty_blocks: BTreeSet<u64>,
    dirty_links: BTreeSet<String>,
    dirty_segments: BTreeSet<u64>,
    /// Segments whose records this batch deleted; their files go after the commit.
    deleted_segments: Vec<u64>,
    /// Dead material to overwrite after the commit: (segment, byte offset, byte length).
    scrub_new: Vec<(u64, u64, u64)>,
    /// Overwritten ranges not yet synced.
    scrub_unsynced: Vec<(u64, u64)>,
    last_scrub_sync: Instant,
    /// Overwritten, synced ranges whose `SCRUB` rows the next batch removes.
    scrub_done: Vec<(u64, u64)>,
    /// Requests in the last batch: the next one waits briefly for about as many.
    last_batch: usize,
    last_expiry: Instant,
    broken: Option<StoreError>,
    /// The random store ID (index `meta` and epoch file).
    store_id: u128,
    /// The index's commit counter (`meta["commit"]`).
    commit: u64,
    /// Burn-after-restore: the epoch file's counter, which the burn's commit must exceed.
    commit_floor: u64,
    /// Burn-after-restore: nothing but the burn may commit (no expiry pass), so that no commit
    /// re-seals the store before its material is burned.
    burn_pending: bool,
    /// The epoch file (`None` only while [`State::reload`] runs).
    epoch: Option<EpochFile>,
    last_epoch_sync: Instant,
    /// Keys derived from the KEK (encrypted stores).
    ring: Option<Arc<KeyRing>>,
    digester: Digester,
    /// Which blocks are this side's ([`StoreOptions::sides`]); the filter per link, and the
    /// answer per block number, computed once.
    sides: Option<SideFilter>,
    side_filters: HashMap<String, BlockFilter>,
    mine: HashMap<u64, bool>,
    /// What [`State::publish`] last published.
    live: LiveCounts,
}

pub(crate) fn open_err(path: &Path, e: redb::DatabaseError) -> OpenError {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => OpenError::Locked {
            path: path.to_path_buf(),
        },
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => {
            OpenError::CorruptIndex {
                path: path.to_path_buf(),
                detail,
            }
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(source)) => OpenError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => OpenError::Database {
            path: path.to_path_buf(),
            detail: other.to_string(),
        },
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> OpenError {
    let path = path.to_path_buf();
    move |source| OpenError::Io { path, source }
}

/// What the index's `meta` table says about the store.
pub(crate) struct Meta {
    pub(crate) version: Option<u64>,
    store_id: u128,
    commit: u64,
    encrypted: bool,
    kek_check: Option<Vec<u8>>,
}

pub(crate) fn read_meta(db: &impl ReadableDatabase) -> Result<Meta, StoreError> {
    let rerr = |e: redb::Error| StoreError::db("reading the index meta table", e);
    let txn = db.begin_read().map_err(|e| rerr(e.into()))?;
    let meta = match txn.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            return Ok(Meta {
                version: None,
                store_id: 0,
                commit: 0,
                encrypted: false,
                kek_check: None,
            });
        }
        Err(e) => return Err(rerr(e.into())),
    };
    let get = |k: &str| -> Result<Option<u64>, StoreError> {
        Ok(meta.get(k).map_err(|e| rerr(e.into()))?.map(|v| v.value()))
    };
    let (hi, lo) = (get("store_id_hi")?, get("store_id_lo")?);
    let kek_check = match txn.open_table(CRYPTO) {
        Ok(t) => t
            .get("kek_check")
            .map_err(|e| rerr(e.into()))?
            .map(|v| v.value().to_vec()),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(rerr(e.into())),
    };
    Ok(Meta {
        version: get("version")?,
        store_id: (u128::from(hi.unwrap_or(0)) << 64) | u128::from(lo.unwrap_or(0)),
        commit: get("commit")?.unwrap_or(0),
        encrypted: get("encrypted")? == Some(1),
        kek_check,
    })
}

/// Opens the index and the epoch file and checks them against each other, the permissions and
/// the KEK, all before changing anything; then recovers and loads the writer's state. Returns
/// whether a rolled-back index was accepted (only in [`OpenMode::BurnAfterRestore`]).
pub(crate) fn open(
    dir: &Path,
    options: &StoreOptions,
    mode: OpenMode,
) -> Result<(Database, State, bool), OpenError> {
    let seg_dir = dir.join("segments");
    let index = dir.join("index.redb");
    let epoch_path = dir.join("epoch");
    // 1. Permissions, before anything is created or read.
    if dir.exists() {
        // An empty directory becomes a new store: made owner-only first. Anything else must be
        // owner-only already (never chmod a directory with contents).
        if fs::read_dir(dir).map_err(io_err(dir))?.next().is_none() {
            files::make_private_dir(dir).map_err(io_err(dir))?;
        }
        files::check_private(dir, dir)?;
        files::check_private(&seg_dir, dir)?;
        files::check_private(&index, dir)?;
        files::check_private(&epoch_path, dir)?;
    } else {
        files::create_dir(dir).map_err(io_err(dir))?;
    }
    let mut has_segments = false;
    if seg_dir.exists() {
        for entry in fs::read_dir(&seg_dir).map_err(io_err(&seg_dir))? {
            let entry = entry.map_err(io_err(&seg_dir))?;
            if entry
                .file_name()
                .to_str()
                .and_then(segment::parse_name)
                .is_some()
            {
                has_segments = true;
                files::check_private(&entry.path(), dir)?;
            }
        }
    }
    let has_epoch = epoch_path.exists();
    // 2. A store's files without an index: refuse (never start over them).
    let index_len = match fs::metadata(&index) {
        Ok(m) => Some(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err(&index)(e)),
    };
    let store_files = || {
        let mut v = Vec::new();
        if has_segments {
            v.push("segment files");
        }
        if has_epoch {
            v.push("the epoch file");
        }
        v.join(" and ")
    };
    if (has_segments || has_epoch) && index_len.unwrap_or(0) == 0 {
        return Err(OpenError::MissingIndex {
            path: index.clone(),
            detail: format!(
                "is {} ({} present)",
                if index_len.is_some() {
                    "empty"
                } else {
                    "missing"
                },
                store_files()
            ),
        });
    }
    // 3. The index, created owner-only from its first byte.
    let file = files::open_or_create(&index).map_err(io_err(&index))?;
    let backend = redb::backends::FileBackend::new(file).map_err(|e| open_err(&index, e))?;
    let db = redb::Builder::new()
        // Read-only views (`qkd store status`, `qkd audit`) may open it while this writes.
        .set_concurrency_mode(redb::ConcurrencyMode::SingleWriter)
        .set_check_integrity_on_open(true)
        .set_cache_size(options.cache_bytes)
        .create_with_backend(backend)
        .map_err(|e| open_err(&index, e))?;
    let corrupt = |e: StoreError| OpenError::CorruptIndex {
        path: index.clone(),
        detail: e.to_string(),
    };
    let ring = options
        .encryption
        .as_ref()
        .map(|k| Arc::new(KeyRing::new(k)));
    let mut meta = read_meta(&db).map_err(corrupt)?;
    let mut rolled_back = false;
    let epoch_file = match meta.version {
        None => {
            if has_segments || has_epoch {
                return Err(OpenError::MissingIndex {
                    path: index.clone(),
                    detail: format!("holds no store ({} present)", store_files()),
                });
            }
            meta = init_index(&db, ring.as_deref()).map_err(corrupt)?;
            files::create_dir(&seg_dir).map_err(io_err(&seg_dir))?;
            EpochFile::create(&epoch_path, meta.store_id, meta.commit)
                .map_err(io_err(&epoch_path))?
        }
        Some(v) => {
            if v != FORMAT_VERSION {
                return Err(OpenError::Version {
                    path: index.clone(),
                    found: v,
                    expected: FORMAT_VERSION,
                });
            }
            check_kek(&index, &meta, ring.as_deref())?;
            let found = epoch::read(&epoch_path)
                .map_err(io_err(&epoch_path))?
                .map_err(|detail| OpenError::CorruptEpoch {
                    path: epoch_path.clone(),
                    detail,
                })?;
            let refuse = |detail: String| OpenError::RolledBack {
                path: index.clone(),
                detail,
            };
            match found {
                Some(e) if e.store_id != meta.store_id => {
                    return Err(refuse(format!(
                        "the index belongs to another store (store ID {:032x}; the epoch file \
                         says {:032x})",
                        meta.store_id, e.store_id
                    )));
                }
                Some(e) if e.commit > meta.commit => {
                    if mode == OpenMode::Normal {
                        return Err(refuse(format!(
                            "the index is at commit {}, but the epoch file shows commit {} was \
                             reached: the index was restored from an older copy",
                            meta.commit, e.commit
                        )));
                    }
                    rolled_back = true;
                    meta.commit = e.commit;
                }
                Some(_) => {}
                None if meta.commit == 0 => {}
                None => {
                    if mode == OpenMode::Normal {
                        return Err(refuse(format!(
                            "the epoch file is missing but the index has {} commits (the \
                             epoch file was deleted, or the index was copied from elsewhere)",
                            meta.commit
                        )));
                    }
                    rolled_back = true;
                }
            }
            files::create_dir(&seg_dir).map_err(io_err(&seg_dir))?;
            match found {
                Some(_) if !rolled_back => EpochFile::open(&epoch_path, meta.store_id, meta.commit),
                _ => EpochFile::create(&epoch_path, meta.store_id, meta.commit),
            }
            .map_err(io_err(&epoch_path))?
        }
    };
    // 4. Recovery: orphan files and tails, pending overwrites.
    let loaded = State::load(
        &db,
        &seg_dir,
        options.segment_max_bytes.max(1),
        ring.clone(),
        epoch_file,
    );
    let mut state = loaded.map_err(|e| match e {
        StoreError::Io { context, source } => OpenError::Io {
            path: PathBuf::from(context),
            source: Arc::try_unwrap(source)
                .unwrap_or_else(|a| std::io::Error::new(a.kind(), a.to_string())),
        },
        other => corrupt(other),
    })?;
    // In burn mode the burn's commit must be above both the index and the epoch file, and
    // nothing may commit before it.
    if mode == OpenMode::BurnAfterRestore {
        state.commit_floor = meta.commit;
        state.burn_pending = true;
    }
    // Redo overwrites a crash interrupted.
    let pending = state.pending_scrub(&db).map_err(OpenError::Recovery)?;
    state.scrub_new = pending;
    state.do_scrub();
    state.sync_scrub();
    state.sides = options.sides.clone();
    let links: Vec<String> = state.links.keys().cloned().collect();
    state.publish(links);
    Ok((db, state, rolled_back))
}

/// Refuses a KEK mismatch: an encrypted store without a KEK or with another, a plain store with
/// one.
fn check_kek(index: &Path, meta: &Meta, ring: Option<&KeyRing>) -> Result<(), OpenError> {
    let path = index.to_path_buf();
    match (meta.encrypted, ring) {
        (true, None) => Err(OpenError::EncryptionKeyRequired { path }),
        (false, Some(_)) => Err(OpenError::NotEncrypted { path }),
        (true, Some(r)) if !meta.kek_check.as_deref().is_some_and(|c| r.matches(c)) => {
            Err(OpenError::WrongEncryptionKey { path })
        }
        _ => Ok(()),
    }
}

/// Writes a new store's `meta` (and KEK check value) and creates every table.
fn init_index(db: &Database, ring: Option<&KeyRing>) -> Result<Meta, StoreError> {
    let mut id = [0u8; 16];
    OsRandom.fill(&mut id)?;
    let store_id = u128::from_le_bytes(id);
    let txn = db.begin_write().map_err(werr)?;
    {
        let mut t = Tables::open(&txn)?;
        let hi = u64::try_from(store_id >> 64).unwrap_or(0);
        let lo = u64::try_from(store_id & u128::from(u64::MAX)).unwrap_or(0);
        for (k, v) in [
            ("version", FORMAT_VERSION),
            ("store_id_hi", hi),
            ("store_id_lo", lo),
            ("commit", 0),
            ("encrypted", u64::from(ring.is_some())),
        ] {
            t.meta.insert(k, v).map_err(werr)?;
        }
        let mut c = txn.open_table(CRYPTO).map_err(werr)?;
        if let Some(r) = ring {
            c.insert("kek_check", r.check_value().as_slice())
                .map_err(werr)?;
        }
    }
    txn.commit().map_err(werr)?;
    Ok(Meta {
        version: Some(FORMAT_VERSION),
        store_id,
        commit: 0,
        encrypted: ring.is_some(),
        kek_check: None,
    })
}

impl State {
    fn load(
        db: &Database,
        seg_dir: &Path,
        segment_max: u64,
        ring: Option<Arc<KeyRing>>,
        epoch: EpochFile,
    ) -> Fatal<Self> {
        let rerr = |e: redb::Error| StoreError::db("loading the index", e);
        let txn = db.begin_read().map_err(|e| rerr(e.into()))?;
        let meta = txn.open_table(META).map_err(|e| rerr(e.into()))?;
        let get = |k: &str| -> Fatal<u64> {
            Ok(meta
                .get(k)
                .map_err(|e| rerr(e.into()))?
                .map_or(0, |v| v.value()))
        };
        let (next_block, next_segment, next_ledger) = (
            get("next_block")?,
            get("next_segment")?,
            get("next_ledger")?,
        );
        let store_id = (u128::from(get("store_id_hi")?) << 64) | u128::from(get("store_id_lo")?);
        let commit = get("commit")?;
        let mut records = BTreeMap::new();
        for row in txn
            .open_table(SEGMENTS)
            .map_err(|e| rerr(e.into()))?
            .iter()
            .map_err(|e| rerr(e.into()))?
        {
            let (k, v) = row.map_err(|e| rerr(e.into()))?;
            let r: SegmentRecord = decode("segment", v.value())?;
            records.insert(k.value(), r);
        }
        // Unreferenced files are orphans of an uncommitted batch.
        let entries =
            fs::read_dir(seg_dir).map_err(|e| StoreError::io(seg_dir.display().to_string(), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(seg_dir.display().to_string(), e))?;
            let name = entry.file_name();
            if let Some(n) = name.to_str().and_then(segment::parse_name)
                && !records.contains_key(&n)
            {
                fs::remove_file(entry.path())
                    .map_err(|e| StoreError::io(entry.path().display().to_string(), e))?;
            }
        }
        let mut segments = BTreeMap::new();
        let mut active = None;
        for (n, r) in records {
            let path = seg_dir.join(segment::file_name(n));
            let mut seg = if path.exists() {
                Segment::open(&path, r.committed_len)?
            } else {
                let mut s = Segment::create(&path)?;
                s.len = r.committed_len;
                s
            };
            seg.live_blocks = r.live_blocks;
            seg.sealed = r.sealed;
            match (&ring, &r.wrapped_key) {
                (Some(ring), Some(w)) => {
                    seg.key = Some(ring.unwrap_segment_key(store_id, n, w).ok_or_else(|| {
                        StoreError::Damaged(format!(
                            "the wrapped data key of segment {n} does not authenticate"
                        ))
                    })?);
                    seg.wrapped_key = Some(w.clone());
                }
                (None, None) => {}
                (Some(_), None) => {
                    return Err(StoreError::Damaged(format!(
                        "segment {n} of an encrypted store has no data key"
                    )));
                }
                (None, Some(_)) => {
                    return Err(StoreError::Damaged(format!(
                        "segment {n} of a plain store has a data key"
                    )));
                }
            }
            let real = seg.file_len()?;
            if real > r.committed_len {
                seg.truncate(r.committed_len)?;
            } else if real < r.committed_len {
                seg.short = Some(real);
                seg.sealed = true;
            }
            if !seg.sealed {
                active = Some(n);
            }
            segments.insert(n, seg);
        }
        let mut blocks = HashMap::new();
        let mut open: HashMap<String, BTreeSet<u64>> = HashMap::new();
        for row in txn
            .open_table(BLOCKS)
            .map_err(|e| rerr(e.into()))?
            .iter()
            .map_err(|e| rerr(e.into()))?
        {
            let (k, v) = row.map_err(|e| rerr(e.into()))?;
            let b: BlockRecord = decode("block", v.value())?;
            if b.spent {
                continue;
            }
            if !b.damaged && b.frontier < b.usable_bits {
                open.entry(b.link.clone()).or_default().insert(k.value());
            }
            blocks.insert(k.value(), b);
        }
        let mut links = HashMap::new();
        for row in txn
            .open_table(LINKS)
            .map_err(|e| rerr(e.into()))?
            .iter()
            .map_err(|e| rerr(e.into()))?
        {
            let (k, v) = row.map_err(|e| rerr(e.into()))?;
            links.insert(k.value().to_owned(), decode("link", v.value())?);
        }
        Ok(Self {
            seg_dir: seg_dir.to_path_buf(),
            segment_max,
            segments,
            active,
            blocks,
            open,
            links,
            next_block,
            next_segment,
            next_ledger,
            dirty_blocks: BTreeSet::new(),
            dirty_links: BTreeSet::new(),
            dirty_segments: BTreeSet::new(),
            deleted_segments: Vec::new(),
            scrub_new: Vec::new(),
            scrub_unsynced: Vec::new(),
            last_scrub_sync: Instant::now(),
            scrub_done: Vec::new(),
            last_batch: 0,
            last_expiry: Instant::now(),
            broken: None,
            store_id,
            commit,
            commit_floor: 0,
            burn_pending: false,
            epoch: Some(epoch),
            last_epoch_sync: Instant::now(),
            digester: Digester::new(ring.as_deref()),
            ring,
            sides: None,
            side_filters: HashMap::new(),
            mine: HashMap::new(),
            live: LiveCounts::default(),
        })
    }

    /// The counts [`State::publish`] keeps current.
    pub(crate) fn live_counts(&self) -> LiveCounts {
        self.live.clone()
    }

    /// Whether block `n` is this side's.
    fn is_mine(&mut self, n: u64) -> bool {
        let Some(sides) = &self.sides else {
            return true;
        };
        if let Some(&m) = self.mine.get(&n) {
            return m;
        }
        let Some(b) = self.blocks.get(&n) else {
            return true;
        };
        let filter = self
            .side_filters
            .entry(b.link.clone())
            .or_insert_with(|| sides(&b.link));
        let m = filter.allows(&b.block_id);
        self.mine.insert(n, m);
        m
    }

    /// Publishes the status of `links` (after a commit, before its callers are answered).
    fn publish(&mut self, links: impl IntoIterator<Item = String>) {
        let mut fresh = Vec::new();
        for link in links {
            let open: Vec<u64> = self
                .open
                .get(&link)
                .map(|o| o.iter().copied().collect())
                .unwrap_or_default();
            let mut counts = (0, 0);
            for n in open {
                let remaining = self.blocks.get(&n).map_or(0, block_remaining);
                let mine = self.is_mine(n);
                count_side(&mut counts, mine, remaining);
            }
            let c = self.links.get(&link).cloned().unwrap_or_default();
            fresh.push(c.status(&link, counts.0, counts.1));
        }
        if self.mine.len() > 2 * self.blocks.len() + 64 {
            let blocks = &self.blocks;
            self.mine.retain(|n, _| blocks.contains_key(n));
        }
        if let Ok(mut live) = self.live.write() {
            for s in fresh {
                live.insert(s.link.clone(), s);
            }
        }
    }

    /// How blocks and keys are digested in this store.
    pub(crate) fn digester(&self) -> Digester {
        self.digester.clone()
    }

    /// Whether the epoch file has an unsynced counter.
    fn epoch_dirty(&self) -> bool {
        self.epoch.as_ref().is_some_and(EpochFile::is_dirty)
    }

    /// Syncs the epoch file (when idle, and at least once a second while busy).
    fn sync_epoch(&mut self) {
        if let Some(e) = &mut self.epoch {
            // A failure leaves it dirty: retried at the next sync.
            let _ = e.sync();
        }
        self.last_epoch_sync = Instant::now();
    }

    fn pending_scrub(&self, db: &Database) -> Fatal<Vec<(u64, u64, u64)>> {
        let txn = db.begin_read().map_err(werr)?;
        let t = txn.open_table(SCRUB).map_err(werr)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(werr)? {
            let (k, v) = row.map_err(werr)?;
            let (s, o) = k.value();
            out.push((s, o, v.value()));
        }
        Ok(out)
    }

    /// Whether some live key has expired (a read, so an idle store does not commit).
    fn expiry_due(&self, db: &Database) -> bool {
        let now = now_ms();
        let first = db.begin_read().ok().and_then(|txn| {
            let t = txn.open_table(EXPIRY).ok()?;
            let first = t.first().ok()??;
            Some(first.0.value().0)
        });
        first.is_some_and(|ms| ms <= now)
    }

    fn reload(&mut self, db: &Database) {
        // Drop every map before `load` may truncate files (mapping contract rule 2).
        self.segments.clear();
        let Some(epoch) = self.epoch.take() else {
            self.broken = Some(StoreError::Closed);
            return;
        };
        match Self::load(
            db,
            &self.seg_dir,
            self.segment_max,
            self.ring.clone(),
            epoch,
        ) {
            Ok(fresh) => {
                let (floor, pending) = (self.commit_floor, self.burn_pending);
                let (sides, live) = (self.sides.take(), self.live.clone());
                *self = fresh;
                self.commit_floor = floor;
                self.burn_pending = pending;
                self.sides = sides;
                self.live = live;
                let links: Vec<String> = self.links.keys().cloned().collect();
                self.publish(links);
            }
            Err(e) => self.broken = Some(e),
        }
    }

    fn link(&mut self, link: &str) -> &mut LinkCounters {
        if !self.dirty_links.contains(link) {
            self.dirty_links.insert(link.to_owned());
        }
        self.links.entry(link.to_owned()).or_default()
    }

    fn ledger(
        &mut self,
        t: &mut Tables<'_>,
        now: u64,
        actor: &str,
        link: &str,
        event: LedgerEvent,
    ) -> Fatal<()> {
        let entry = LedgerEntry {
            seq: self.next_ledger,
            unix_ms: now,
            actor: actor.to_owned(),
            link: link.to_owned(),
            event,
        };
        t.ledger
            .insert(self.next_ledger, encode(&entry)?.as_slice())
            .map_err(werr)?;
        self.next_ledger += 1;
        Ok(())
    }

    // ---- the batch ----

    fn batch(&mut self, db: &Database, ops: Vec<Op>, auto_expire: bool) {
        if let Some(e) = &self.broken {
            for op in ops {
                (op.reply)(Err(e.clone()));
            }
            return;
        }
        let mut results: Vec<Option<Result<OpResult, StoreError>>> =
            (0..ops.len()).map(|_| None).collect();
        match self.apply(db, &ops, &mut results, auto_expire) {
            Ok(()) => {
                for (op, r) in ops.into_iter().zip(results) {
                    (op.reply)(r.unwrap_or(Err(StoreError::Closed)));
                }
                self.after_commit();
            }
            Err(e) => {
                for op in ops {
                    (op.reply)(Err(e.clone()));
                }
                self.reload(db);
            }
        }
    }

    fn apply(
        &mut self,
        db: &Database,
        ops: &[Op],
        results: &mut [Option<Result<OpResult, StoreError>>],
        auto_expire: bool,
    ) -> Fatal<()> {
        let now = now_ms();
        let next = self.commit.max(self.commit_floor) + 1;
        let touched: Vec<String>;
        let txn = db.begin_write().map_err(werr)?;
        {
            let mut t = Tables::open(&txn)?;
            for (s, o) in std::mem::take(&mut self.scrub_done) {
                t.scrub.remove((s, o)).map_err(werr)?;
            }
            self.appends(&mut t, ops, results, now)?;
            for (i, op) in ops.iter().enumerate() {
                let r = match &op.kind {
                    OpKind::Append { .. } => continue,
                    OpKind::Allocate {
                        req,
                        ids,
                        expires_ms,
                        deliver,
                    } => match (self.allocate(&mut t, req, ids, *expires_ms, now)?, deliver) {
                        (Ok(OpResult::Allocations(a)), Some(to)) => {
                            match self.fetch(&mut t, ids, to, now)? {
                                Ok(OpResult::Keys(k)) => Ok(OpResult::Delivered(a, k)),
                                other => other,
                            }
                        }
                        (other, _) => other,
                    },
                    OpKind::Reserve { req, expires_ms } => {
                        self.reserve(&mut t, req, *expires_ms, now)?
                    }
                    OpKind::Fetch { ids, recipient } => self.fetch(&mut t, ids, recipient, now)?,
                    OpKind::Destroy { ids, actor } => self.destroy(&mut t, ids, actor, now)?,
                    OpKind::Expire { now_ms } => {
                        self.last_expiry = Instant::now();
                        Ok(OpResult::Count(self.expire(&mut t, *now_ms, now)?))
                    }
                    OpKind::Burn(scope) => Ok(OpResult::Burned(self.burn(&mut t, scope, now)?)),
                    OpKind::Record { actor, link, event } => {
                        self.ledger(&mut t, now, actor, link, event.clone())?;
                        Ok(OpResult::Unit)
                    }
                };
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some(r);
                }
            }
            if auto_expire {
                self.last_expiry = Instant::now();
                self.expire(&mut t, now, now)?;
            }
            touched = self.dirty_links.iter().cloned().collect();
            self.flush(&mut t)?;
            t.meta.insert("commit", next).map_err(werr)?;
        }
        txn.commit().map_err(werr)?;
        self.publish(touched);
        // The index is now ahead of the epoch file; the file follows (synced when idle).
        self.commit = next;
        if ops.iter().any(|op| matches!(op.kind, OpKind::Burn(_))) {
            self.burn_pending = false;
        }
        if let Some(e) = &mut self.epoch {
            e.record(self.commit);
        }
        Ok(())
    }

    fn flush(&mut self, t: &mut Tables<'_>) -> Fatal<()> {
        for n in std::mem::take(&mut self.dirty_blocks) {
            if let Some(b) = self.blocks.get(&n) {
                t.blocks.insert(n, encode(b)?.as_slice()).map_err(werr)?;
            }
        }
        for l in std::mem::take(&mut self.dirty_links) {
            if let Some(c) = self.links.get(&l) {
                t.links
                    .insert(l.as_str(), encode(c)?.as_slice())
                    .map_err(werr)?;
            }
        }
        for n in std::mem::take(&mut self.dirty_segments) {
            if self.deleted_segments.contains(&n) {
                continue;
            }
            if let Some(s) = self.segments.get(&n) {
                let r = SegmentRecord {
                    committed_len: s.len,
                    live_blocks: s.live_blocks,
                    sealed: s.sealed,
                    wrapped_key: s.wrapped_key.clone(),
                };
                t.segments.insert(n, encode(&r)?.as_slice()).map_err(werr)?;
            }
        }
        t.meta.insert("next_block", self.next_block).map_err(werr)?;
        t.meta
            .insert("next_segment", self.next_segment)
            .map_err(werr)?;
        t.meta
            .insert("next_ledger", self.next_ledger)
            .map_err(werr)?;
        Ok(())
    }

    fn after_commit(&mut self) {
        for n in std::mem::take(&mut self.deleted_segments) {
            if let Some(seg) = self.segments.remove(&n) {
                let path = seg.path.clone();
                drop(seg);
                let _ = fs::remove_file(path);
            }
            if self.active == Some(n) {
                self.active = None;
            }
        }
        self.do_scrub();
    }

    /// Overwrites dead material with zeros (page cache only; [`State::sync_scrub`] makes it
    /// durable later, off the hot path). Failures leave the `SCRUB` rows, so the next open
    /// retries.
    fn do_scrub(&mut self) {
        static ZEROS: [u8; 65536] = [0; 65536];
        let mut touched = BTreeSet::new();
        let mut done = Vec::new();
        for (s, off, len) in std::mem::take(&mut self.scrub_new) {
            let Some(seg) = self.segments.get_mut(&s) else {
                continue;
            };
            let end = (off + len).min(seg.short.unwrap_or(u64::MAX));
            let mut pos = off;
            let mut ok = true;
            while pos < end {
                let n = (end - pos).min(ZEROS.len() as u64);
                if seg.write_at(pos, &ZEROS[..n as usize]).is_err() {
                    ok = false;
                    break;
                }
                pos += n;
            }
            if ok {
                touched.insert(s);
                done.push((s, off));
            }
        }
        let _ = touched;
        self.scrub_unsynced.extend(done);
        if self.scrub_unsynced.len() > 65536 {
            self.sync_scrub();
        }
    }

    /// Syncs the overwritten segments; their `SCRUB` rows go in the next batch.
    fn sync_scrub(&mut self) {
        let touched: BTreeSet<u64> = self.scrub_unsynced.iter().map(|&(s, _)| s).collect();
        let mut failed = HashSet::new();
        for s in touched {
            if let Some(seg) = self.segments.get(&s)
                && seg.sync().is_err()
            {
                failed.insert(s);
            }
        }
        let done = std::mem::take(&mut self.scrub_unsynced);
        self.scrub_done.extend(
            done.into_iter()
                .filter(|(s, _)| !failed.contains(s) && self.segments.contains_key(s)),
        );
        self.last_scrub_sync = Instant::now();
    }

    // ---- blocks and segments ----

    fn segment_for(&mut self, t: &mut Tables<'_>, len: u64, created: &mut bool) -> Fatal<u64> {
        if let Some(a) = self.active
            && let Some(seg) = self.segments.get(&a)
            && (seg.len == 0 || seg.len + len <= self.segment_max)
        {
            return Ok(a);
        }
        if let Some(a) = self.active.take()
            && let Some(seg) = self.segments.get_mut(&a)
        {
            seg.sealed = true;
            self.dirty_segments.insert(a);
            if seg.live_blocks == 0 {
                self.delete_segment(t, a)?;
            }
        }
        let n = self.next_segment;
        self.next_segment += 1;
        let mut seg = Segment::create(&self.seg_dir.join(segment::file_name(n)))?;
        if let Some(ring) = &self.ring {
            let (key, wrapped) = ring.new_segment_key(self.store_id, n)?;
            seg.key = Some(key);
            seg.wrapped_key = Some(wrapped);
        }
        self.segments.insert(n, seg);
        self.dirty_segments.insert(n);
        self.active = Some(n);
        *created = true;
        Ok(n)
    }

    fn delete_segment(&mut self, t: &mut Tables<'_>, n: u64) -> Fatal<()> {
        t.segments.remove(n).map_err(werr)?;
        t.scrub
            .retain_in((n, 0)..=(n, u64::MAX), |_, _| false)
            .map_err(werr)?;
        self.deleted_segments.push(n);
        Ok(())
    }

    fn appends(
        &mut self,
        t: &mut Tables<'_>,
        ops: &[Op],
        results: &mut [Option<Result<OpResult, StoreError>>],
        now: u64,
    ) -> Fatal<()> {
        let mut accepted: Vec<(usize, &NewBlock, [u8; 32], [u8; 32])> = Vec::new();
        let mut seen: HashMap<(&str, &str), [u8; 32]> = HashMap::new();
        for (i, op) in ops.iter().enumerate() {
            let OpKind::Append {
                block,
                digest: public,
                stored: digest,
            } = &op.kind
            else {
                continue;
            };
            let key = (block.link.as_str(), block.block_id.as_str());
            let dup = if let Some(n) = t.block_ids.get(key).map_err(werr)? {
                let n = n.value();
                let existing = t.blocks.get(n).map_err(werr)?;
                let same = match existing {
                    Some(v) => decode::<BlockRecord>("block", v.value())?.digest == *digest,
                    None => false,
                };
                Some(same)
            } else {
                seen.get(&key).map(|d| d == digest)
            };
            if let Some(same_material) = dup {
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some(Err(StoreError::DuplicateBlock {
                        link: block.link.clone(),
                        block_id: block.block_id.to_string(),
                        same_material,
                    }));
                }
                continue;
            }
            seen.insert(key, *digest);
            accepted.push((i, block, *digest, *public));
        }
        if accepted.is_empty() {
            return Ok(());
        }
        // 1. Bytes into segments, durable before the commit that references them.
        let mut created = false;
        let mut touched = BTreeSet::new();
        let mut placed = Vec::with_capacity(accepted.len());
        for (_, block, _, _) in &accepted {
            let len = block.bytes.len() as u64;
            let n = self.segment_for(t, len, &mut created)?;
            let seg = self.segments.get_mut(&n).ok_or(StoreError::Closed)?;
            let off = seg.len;
            seg.append_at(off, &block.bytes)?;
            seg.len += len;
            seg.live_blocks += 1;
            self.dirty_segments.insert(n);
            touched.insert(n);
            placed.push((n, off));
        }
        for n in &touched {
            if let Some(seg) = self.segments.get(n) {
                seg.sync()?;
            }
        }
        if created {
            fs::File::open(&self.seg_dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| StoreError::io("syncing the segment directory", e))?;
        }
        // 2. The index.
        for ((i, block, digest, public), (seg, off)) in accepted.into_iter().zip(placed) {
            let n = self.next_block;
            self.next_block += 1;
            let usable = block.len_bits / 8 * 8;
            let rec = BlockRecord {
                link: block.link.clone(),
                block_id: block.block_id.clone(),
                segment: seg,
                offset: off,
                len_bits: block.len_bits,
                usable_bits: usable,
                digest,
                qber: block.qber,
                leaked_bits: block.leaked_bits,
                frontier: 0,
                used_bits: 0,
                live_bits: 0,
                verified: false,
                damaged: false,
                spent: false,
            };
            t.block_ids
                .insert((block.link.as_str(), block.block_id.as_str()), n)
                .map_err(werr)?;
            let c = self.link(&block.link);
            c.blocks += 1;
            c.bits_appended += block.len_bits;
            c.bits_usable += usable;
            self.ledger(
                t,
                now,
                &block.actor,
                &block.link,
                LedgerEvent::BlockAppended {
                    block_id: block.block_id.clone(),
                    len_bits: block.len_bits,
                    usable_bits: usable,
                    qber: block.qber,
                    leaked_bits: block.leaked_bits,
                },
            )?;
            self.blocks.insert(n, rec);
            self.dirty_blocks.insert(n);
            if usable > 0 {
                self.open.entry(block.link.clone()).or_default().insert(n);
            } else {
                self.maybe_spend(t, n)?;
            }
            if let Some(slot) = results.get_mut(i) {
                *slot = Some(Ok(OpResult::Block(BlockInfo {
                    link: block.link.clone(),
                    block_id: block.block_id.clone(),
                    len_bits: block.len_bits,
                    usable_bits: usable,
                    digest: public,
                    qber: block.qber,
                    leaked_bits: block.leaked_bits,
                })));
            }
        }
        Ok(())
    }

    /// Checks a block's digest once, before any of it is handed out (so before any of it is
    /// overwritten). `Ok(false)`: the block is damaged (and now marked so).
    fn ensure_verified(&mut self, t: &mut Tables<'_>, n: u64, now: u64) -> Fatal<bool> {
        let Some(b) = self.blocks.get(&n) else {
            return Ok(false);
        };
        if b.damaged {
            return Ok(false);
        }
        if b.verified {
            return Ok(true);
        }
        let (segn, off, len, digest) = (b.segment, b.offset, b.len_bits.div_ceil(8), b.digest);
        let check = match self.segments.get_mut(&segn) {
            Some(seg) => seg.hash(off, len, &self.digester).map(|d| d == digest),
            None => Err(StoreError::Damaged(format!("segment {segn} is missing"))),
        };
        match check {
            Ok(true) => {
                if let Some(b) = self.blocks.get_mut(&n) {
                    b.verified = true;
                }
                self.dirty_blocks.insert(n);
                Ok(true)
            }
            Ok(false) => {
                self.mark_damaged(t, n, "BLAKE3 digest mismatch".into(), now)?;
                Ok(false)
            }
            Err(StoreError::Damaged(why)) => {
                self.mark_damaged(t, n, why, now)?;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    fn mark_damaged(&mut self, t: &mut Tables<'_>, n: u64, reason: String, now: u64) -> Fatal<()> {
        let Some(b) = self.blocks.get_mut(&n) else {
            return Ok(());
        };
        b.damaged = true;
        let (link, id, lost) = (
            b.link.clone(),
            b.block_id.clone(),
            b.usable_bits - b.used_bits,
        );
        if let Some(o) = self.open.get_mut(&link) {
            o.remove(&n);
        }
        self.dirty_blocks.insert(n);
        let c = self.link(&link);
        c.damaged_blocks += 1;
        c.bits_damaged += lost;
        self.ledger(
            t,
            now,
            "store",
            &link,
            LedgerEvent::BlockDamaged {
                block_id: id,
                reason,
            },
        )?;
        self.maybe_spend(t, n)
    }

    /// A block fully handed out (or damaged) whose keys are all finished is spent: its
    /// never-used bytes are overwritten, its used intervals dropped, its segment reclaimed
    /// when every block in it is spent.
    fn maybe_spend(&mut self, t: &mut Tables<'_>, n: u64) -> Fatal<()> {
        let Some(b) = self.blocks.get(&n) else {
            return Ok(());
        };
        if b.live_bits != 0 || !(b.damaged || b.frontier >= b.usable_bits) {
            return Ok(());
        }
        let Some(mut b) = self.blocks.remove(&n) else {
            return Ok(());
        };
        // Overwrite what no key covered: gaps, the partial last byte, a damaged remainder.
        let mut pos = 0u64;
        let end = b.len_bits.div_ceil(8) * 8;
        let used: Vec<(u64, u64)> = t
            .used
            .range((n, 0)..=(n, u64::MAX))
            .map_err(werr)?
            .map(|r| r.map(|(k, v)| (k.value().1, v.value())))
            .collect::<Result<_, _>>()
            .map_err(werr)?;
        for (o, l) in used.iter().copied().chain(std::iter::once((end, 0))) {
            if o > pos {
                self.queue_scrub(t, b.segment, b.offset + pos / 8, (o - pos) / 8)?;
            }
            pos = pos.max(o + l);
        }
        t.used
            .retain_in((n, 0)..=(n, u64::MAX), |_, _| false)
            .map_err(werr)?;
        b.spent = true;
        t.blocks.insert(n, encode(&b)?.as_slice()).map_err(werr)?;
        self.dirty_blocks.remove(&n);
        if let Some(o) = self.open.get_mut(&b.link) {
            o.remove(&n);
        }
        if let Some(seg) = self.segments.get_mut(&b.segment) {
            seg.live_blocks = seg.live_blocks.saturating_sub(1);
            self.dirty_segments.insert(b.segment);
            if seg.sealed && seg.live_blocks == 0 {
                self.delete_segment(t, b.segment)?;
            }
        }
        Ok(())
    }

    fn queue_scrub(&mut self, t: &mut Tables<'_>, seg: u64, off: u64, len: u64) -> Fatal<()> {
        if len == 0 {
            return Ok(());
        }
        t.scrub.insert((seg, off), len).map_err(werr)?;
        self.scrub_new.push((seg, off, len));
        Ok(())
    }

    fn read_extents(
        &mut self,
        extents: &[Extent],
        size_bits: u32,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let mut out = Zeroizing::new(Vec::with_capacity(size_bits as usize / 8));
        for &(n, off, len) in extents {
            let b = self.blocks.get(&n).ok_or_else(|| {
                StoreError::Damaged(format!("block #{n} of a live key is not live"))
            })?;
            if b.damaged {
                return Err(StoreError::Damaged(format!(
                    "block '{}' is damaged",
                    b.block_id
                )));
            }
            let (segn, base) = (b.segment, b.offset);
            let seg = self
                .segments
                .get_mut(&segn)
                .ok_or_else(|| StoreError::Damaged(format!("segment {segn} is missing")))?;
            seg.read_into(base + off / 8, len / 8, &mut out)?;
        }
        Ok(out)
    }

    /// A key is finished (consumed or destroyed): its material is queued for overwriting.
    fn finish_key(&mut self, t: &mut Tables<'_>, id: Uuid, rec: &mut KeyRecord) -> Fatal<()> {
        for (n, off, len) in std::mem::take(&mut rec.extents) {
            let Some(b) = self.blocks.get_mut(&n) else {
                continue;
            };
            b.live_bits = b.live_bits.saturating_sub(len);
            let (seg, base) = (b.segment, b.offset);
            self.dirty_blocks.insert(n);
            self.queue_scrub(t, seg, base + off / 8, len / 8)?;
            self.maybe_spend(t, n)?;
        }
        rec.digest = [0; 32];
        t.expiry
            .remove((rec.expires_ms, id.as_u128()))
            .map_err(werr)?;
        Ok(())
    }

    // ---- requests ----

    fn check_new_ids(
        t: &Tables<'_>,
        ids: impl Iterator<Item = Uuid>,
    ) -> Fatal<Result<(), StoreError>> {
        let mut seen = HashSet::new();
        for id in ids {
            if !seen.insert(id) || t.keys.get(id.as_u128()).map_err(werr)?.is_some() {
                return Ok(Err(StoreError::DuplicateKeyId(id)));
            }
        }
        Ok(Ok(()))
    }

    fn allocate(
        &mut self,
        t: &mut Tables<'_>,
        req: &AllocateRequest,
        ids: &[Uuid],
        expires_ms: u64,
        now: u64,
    ) -> Outcome {
        if let Err(e) = Self::check_new_ids(t, ids.iter().copied())? {
            return Ok(Err(e));
        }
        let need = ids.len() as u64 * u64::from(req.size_bits);
        let candidates: Vec<u64> = self
            .open
            .get(&req.link)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        // Plan: (block, start, len) pieces from the frontiers, in append order.
        let mut plan: Vec<(u64, u64, u64)> = Vec::new();
        let mut got = 0u64;
        let mut rest = candidates.into_iter();
        for n in rest.by_ref() {
            if got == need {
                break;
            }
            let allowed = self
                .blocks
                .get(&n)
                .is_some_and(|b| req.filter.allows(&b.block_id));
            if !allowed || !self.ensure_verified(t, n, now)? {
                continue;
            }
            let Some(b) = self.blocks.get(&n) else {
                continue;
            };
            let take = (b.usable_bits - b.frontier).min(need - got);
            if take > 0 {
                plan.push((n, b.frontier, take));
                got += take;
            }
        }
        if got < need {
            let more: u64 = rest
                .filter_map(|n| self.blocks.get(&n))
                .filter(|b| req.filter.allows(&b.block_id))
                .map(|b| b.usable_bits - b.frontier)
                .sum();
            return Ok(Err(StoreError::InsufficientKeyMaterial {
                link: req.link.clone(),
                requested_bits: need,
                available_bits: got + more,
            }));
        }
        // Carve keys out of the plan.
        let size = u64::from(req.size_bits);
        let mut keys: Vec<(Uuid, Vec<Extent>)> = Vec::with_capacity(ids.len());
        let (mut pi, mut pos) = (0usize, 0u64);
        for &id in ids {
            let mut remaining = size;
            let mut ex = Vec::with_capacity(1);
            while remaining > 0 {
                let Some(&(n, start, len)) = plan.get(pi) else {
                    break;
                };
                let take = (len - pos).min(remaining);
                ex.push((n, start + pos, take));
                pos += take;
                remaining -= take;
                if pos == len {
                    pi += 1;
                    pos = 0;
                }
            }
            keys.push((id, ex));
        }
        let mut digests = Vec::with_capacity(keys.len());
        for (_, ex) in &keys {
            match self.read_extents(ex, req.size_bits) {
                Ok(bytes) => digests.push(self.digester.digest(&bytes)),
                Err(e) => return Ok(Err(e)),
            }
        }
        // Commit the plan.
        for &(n, start, len) in &plan {
            t.used.insert((n, start), len).map_err(werr)?;
            let Some(b) = self.blocks.get_mut(&n) else {
                continue;
            };
            b.frontier = start + len;
            b.used_bits += len;
            b.live_bits += len;
            let full = b.frontier >= b.usable_bits;
            self.dirty_blocks.insert(n);
            if full && let Some(o) = self.open.get_mut(&req.link) {
                o.remove(&n);
            }
        }
        let mut out = Vec::with_capacity(keys.len());
        for ((id, ex), digest) in keys.into_iter().zip(digests) {
            let rec = KeyRecord {
                link: req.link.clone(),
                master: req.master.clone(),
                slaves: req.slaves.clone(),
                pending: req.recipients.clone(),
                fetched: Vec::new(),
                size_bits: req.size_bits,
                extents: ex,
                expires_ms,
                digest,
                state: KeyState::Reserved,
                by_peer: false,
            };
            t.put_key(id, &rec)?;
            t.expiry
                .insert((expires_ms, id.as_u128()), ())
                .map_err(werr)?;
            let material = rec
                .extents
                .iter()
                .map(|&(n, off, len)| MaterialRange {
                    block_id: self
                        .blocks
                        .get(&n)
                        .map(|b| b.block_id.clone())
                        .unwrap_or_else(|| super::BlockId(String::new())),
                    bit_offset: off,
                    bit_len: len,
                })
                .collect();
            out.push(KeyAllocation {
                key_id: id,
                size_bits: req.size_bits,
                material,
            });
        }
        let c = self.link(&req.link);
        c.bits_used += need;
        c.keys_allocated += ids.len() as u64;
        self.ledger(
            t,
            now,
            &req.master,
            &req.link,
            LedgerEvent::KeysReserved {
                by_peer: false,
                master: req.master.clone(),
                slaves: req.slaves.clone(),
                recipients: req.recipients.clone(),
                size_bits: req.size_bits,
                key_ids: ids.to_vec(),
            },
        )?;
        Ok(Ok(OpResult::Allocations(out)))
    }

    fn reserve(
        &mut self,
        t: &mut Tables<'_>,
        req: &ReserveRequest,
        expires_ms: u64,
        now: u64,
    ) -> Outcome {
        if let Err(e) = Self::check_new_ids(t, req.keys.iter().map(|k| k.key_id))? {
            return Ok(Err(e));
        }
        let unavailable = |m: &MaterialRange, reason: &str| {
            Ok(Err(StoreError::MaterialUnavailable {
                block_id: m.block_id.to_string(),
                bit_offset: m.bit_offset,
                bit_len: m.bit_len,
                reason: reason.to_owned(),
            }))
        };
        let mut per_block: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
        let mut keys: Vec<Vec<Extent>> = Vec::with_capacity(req.keys.len());
        for k in &req.keys {
            let mut ex = Vec::with_capacity(k.material.len());
            for m in &k.material {
                let Some(n) = t
                    .block_ids
                    .get((req.link.as_str(), m.block_id.as_str()))
                    .map_err(werr)?
                else {
                    return Ok(Err(StoreError::UnknownBlock {
                        link: req.link.clone(),
                        block_id: m.block_id.to_string(),
                    }));
                };
                let n = n.value();
                let Some(b) = self.blocks.get(&n) else {
                    return unavailable(m, "the block is used up");
                };
                if b.damaged {
                    return unavailable(m, "the block is damaged");
                }
                if !req.peer_filter.allows(&b.block_id) {
                    return unavailable(m, "the block is not the peer's to allocate");
                }
                let end = m.bit_offset.saturating_add(m.bit_len);
                if end > b.usable_bits {
                    return unavailable(m, "the range ends past the block's usable bits");
                }
                let prev = t.used.range((n, 0)..(n, end)).map_err(werr)?.next_back();
                if let Some(row) = prev {
                    let (k, v) = row.map_err(werr)?;
                    if k.value().1 + v.value() > m.bit_offset {
                        return unavailable(m, "already used");
                    }
                }
                per_block
                    .entry(n)
                    .or_default()
                    .push((m.bit_offset, m.bit_len));
                ex.push((n, m.bit_offset, m.bit_len));
            }
            keys.push(ex);
        }
        for (n, v) in &mut per_block {
            v.sort_unstable();
            if v.windows(2).any(|w| w[0].0 + w[0].1 > w[1].0) {
                let id = self
                    .blocks
                    .get(n)
                    .map(|b| b.block_id.to_string())
                    .unwrap_or_default();
                return Ok(Err(StoreError::InvalidRequest(format!(
                    "the request names overlapping material in block '{id}'"
                ))));
            }
        }
        for &n in per_block.keys() {
            if !self.ensure_verified(t, n, now)? {
                let id = self
                    .blocks
                    .get(&n)
                    .map(|b| b.block_id.to_string())
                    .unwrap_or_default();
                return Ok(Err(StoreError::Damaged(format!(
                    "block '{id}' failed its BLAKE3 check"
                ))));
            }
        }
        let mut digests = Vec::with_capacity(keys.len());
        for (k, ex) in req.keys.iter().zip(&keys) {
            match self.read_extents(ex, k.size_bits) {
                Ok(bytes) => digests.push(self.digester.digest(&bytes)),
                Err(e) => return Ok(Err(e)),
            }
        }
        let mut total = 0;
        for (&n, v) in &per_block {
            for &(off, len) in v {
                t.used.insert((n, off), len).map_err(werr)?;
                total += len;
                if let Some(b) = self.blocks.get_mut(&n) {
                    b.used_bits += len;
                    b.live_bits += len;
                    b.frontier = b.frontier.max(off + len);
                }
            }
            self.dirty_blocks.insert(n);
            if self
                .blocks
                .get(&n)
                .is_some_and(|b| b.frontier >= b.usable_bits)
                && let Some(o) = self.open.get_mut(&req.link)
            {
                o.remove(&n);
            }
        }
        for ((k, ex), digest) in req.keys.iter().zip(keys).zip(digests) {
            let rec = KeyRecord {
                link: req.link.clone(),
                master: req.master.clone(),
                slaves: req.slaves.clone(),
                pending: req.recipients.clone(),
                fetched: Vec::new(),
                size_bits: k.size_bits,
                extents: ex,
                expires_ms,
                digest,
                state: KeyState::Reserved,
                by_peer: true,
            };
            t.put_key(k.key_id, &rec)?;
            t.expiry
                .insert((expires_ms, k.key_id.as_u128()), ())
                .map_err(werr)?;
        }
        let c = self.link(&req.link);
        c.bits_used += total;
        c.keys_reserved_by_peer += req.keys.len() as u64;
        let size_bits = req.keys.first().map_or(0, |k| k.size_bits);
        self.ledger(
            t,
            now,
            &req.actor,
            &req.link,
            LedgerEvent::KeysReserved {
                by_peer: true,
                master: req.master.clone(),
                slaves: req.slaves.clone(),
                recipients: req.recipients.clone(),
                size_bits,
                key_ids: req.keys.iter().map(|k| k.key_id).collect(),
            },
        )?;
        Ok(Ok(OpResult::Unit))
    }

    fn fetch(&mut self, t: &mut Tables<'_>, ids: &[Uuid], recipient: &str, now: u64) -> Outcome {
        let mut recs = Vec::with_capacity(ids.len());
        let mut seen = HashSet::new();
        for &id in ids {
            if !seen.insert(id) {
                return Ok(Err(StoreError::InvalidRequest(format!(
                    "key {id} is named twice"
                ))));
            }
            let Some(rec) = t.get_key(id)? else {
                return Ok(Err(StoreError::UnknownKey(id)));
            };
            let who = || recipient.to_owned();
            if rec.fetched.iter().any(|r| r == recipient) {
                return Ok(Err(StoreError::AlreadyFetched {
                    key_id: id,
                    sae: who(),
                }));
            }
            match rec.state {
                KeyState::Destroyed => return Ok(Err(StoreError::Destroyed(id))),
                KeyState::Reserved if rec.pending.iter().any(|r| r == recipient) => {}
                _ => {
                    return Ok(Err(StoreError::NotARecipient {
                        key_id: id,
                        sae: who(),
                    }));
                }
            }
            if rec.expires_ms <= now {
                return Ok(Err(StoreError::Expired(id)));
            }
            recs.push((id, rec));
        }
        let mut keys = Vec::with_capacity(ids.len());
        for (id, rec) in &recs {
            let bytes = match self.read_extents(&rec.extents, rec.size_bits) {
                Ok(b) => b,
                Err(e) => return Ok(Err(e)),
            };
            if self.digester.digest(&bytes) != rec.digest {
                return Ok(Err(StoreError::Damaged(format!(
                    "key {id} failed its BLAKE3 check; it is not served"
                ))));
            }
            keys.push(Key {
                key_id: *id,
                size_bits: rec.size_bits,
                bytes,
            });
        }
        let mut by_link: BTreeMap<String, (Vec<Uuid>, Vec<Uuid>)> = BTreeMap::new();
        for (id, mut rec) in recs {
            rec.pending.retain(|r| r != recipient);
            rec.fetched.push(recipient.to_owned());
            let entry = by_link.entry(rec.link.clone()).or_default();
            entry.0.push(id);
            let c = self.link(&rec.link);
            c.deliveries += 1;
            if rec.pending.is_empty() {
                c.keys_consumed += 1;
                rec.state = KeyState::Consumed;
                self.finish_key(t, id, &mut rec)?;
                entry.1.push(id);
            }
            t.put_key(id, &rec)?;
        }
        for (link, (key_ids, consumed)) in by_link {
            self.ledger(
                t,
                now,
                recipient,
                &link,
                LedgerEvent::KeysFetched {
                    recipient: recipient.to_owned(),
                    key_ids,
                    consumed,
                },
            )?;
        }
        Ok(Ok(OpResult::Keys(keys)))
    }

    fn destroy_keys(
        &mut self,
        t: &mut Tables<'_>,
        recs: Vec<(Uuid, KeyRecord)>,
        reason: DestroyReason,
        actor: &str,
        now: u64,
    ) -> Fatal<usize> {
        let mut by_link: BTreeMap<String, Vec<Uuid>> = BTreeMap::new();
        let mut n = 0;
        for (id, mut rec) in recs {
            if rec.state != KeyState::Reserved {
                continue;
            }
            rec.state = KeyState::Destroyed;
            self.finish_key(t, id, &mut rec)?;
            t.put_key(id, &rec)?;
            self.link(&rec.link).keys_destroyed += 1;
            by_link.entry(rec.link.clone()).or_default().push(id);
            n += 1;
        }
        for (link, key_ids) in by_link {
            self.ledger(
                t,
                now,
                actor,
                &link,
                LedgerEvent::KeysDestroyed { reason, key_ids },
            )?;
        }
        Ok(n)
    }

    fn destroy(&mut self, t: &mut Tables<'_>, ids: &[Uuid], actor: &str, now: u64) -> Outcome {
        let mut recs = Vec::with_capacity(ids.len());
        let mut seen = HashSet::new();
        for &id in ids {
            if !seen.insert(id) {
                continue;
            }
            let Some(rec) = t.get_key(id)? else {
                return Ok(Err(StoreError::UnknownKey(id)));
            };
            recs.push((id, rec));
        }
        let n = self.destroy_keys(t, recs, DestroyReason::Requested, actor, now)?;
        Ok(Ok(OpResult::Count(n)))
    }

    fn expire(&mut self, t: &mut Tables<'_>, upto_ms: u64, now: u64) -> Fatal<usize> {
        let ids: Vec<Uuid> = t
            .expiry
            .range(..=(upto_ms, u128::MAX))
            .map_err(werr)?
            .map(|r| r.map(|(k, _)| Uuid::from_u128(k.value().1)))
            .collect::<Result<_, _>>()
            .map_err(werr)?;
        let mut recs = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(rec) = t.get_key(id)? {
                recs.push((id, rec));
            }
        }
        self.destroy_keys(t, recs, DestroyReason::Expired, "expiry", now)
    }

    /// After a restore from a backup: destroys every live key, then marks every unspent block
    /// fully used and spends it, so all its unused material is overwritten and never served.
    fn burn(&mut self, t: &mut Tables<'_>, scope: &BurnScope, now: u64) -> Fatal<Vec<BurnedLink>> {
        const ACTOR: &str = "burn-after-restore";
        let ids: Vec<Uuid> = t
            .expiry
            .iter()
            .map_err(werr)?
            .map(|r| r.map(|(k, _)| Uuid::from_u128(k.value().1)))
            .collect::<Result<_, _>>()
            .map_err(werr)?;
        let mut recs = Vec::with_capacity(ids.len());
        let mut out: BTreeMap<String, BurnedLink> = BTreeMap::new();
        for id in ids {
            if let Some(rec) = t.get_key(id)?
                && scope.covers(&rec.link)
            {
                if rec.state == KeyState::Reserved {
                    out.entry(rec.link.clone())
                        .or_insert_with(|| BurnedLink {
                            link: rec.link.clone(),
                            blocks: 0,
                            bits_burned: 0,
                            keys_destroyed: 0,
                        })
                        .keys_destroyed += 1;
                }
                recs.push((id, rec));
            }
        }
        self.destroy_keys(t, recs, DestroyReason::RestoredFromBackup, ACTOR, now)?;
        let mut nums: Vec<u64> = self
            .blocks
            .iter()
            .filter(|(_, b)| scope.covers(&b.link))
            .map(|(&n, _)| n)
            .collect();
        nums.sort_unstable();
        for n in nums {
            let Some(b) = self.blocks.get_mut(&n) else {
                continue;
            };
            // Damaged blocks count their unused bits as damaged already.
            let lost = if b.damaged {
                0
            } else {
                b.usable_bits - b.used_bits
            };
            b.frontier = b.usable_bits;
            let link = b.link.clone();
            self.dirty_blocks.insert(n);
            if let Some(o) = self.open.get_mut(&link) {
                o.remove(&n);
            }
            self.link(&link).bits_burned += lost;
            let e = out.entry(link.clone()).or_insert_with(|| BurnedLink {
                link,
                blocks: 0,
                bits_burned: 0,
                keys_destroyed: 0,
            });
            e.blocks += 1;
            e.bits_burned += lost;
            self.maybe_spend(t, n)?;
        }
        for b in out.values() {
            self.ledger(
                t,
                now,
                ACTOR,
                &b.link,
                LedgerEvent::MaterialBurned {
                    blocks: b.blocks,
                    bits: b.bits_burned,
                },
            )?;
        }
        Ok(out.into_values().collect())
    }
}

/// The writer thread's loop: one batch per wake-up, an expiry pass about once a second,
/// overwrites synced when idle or once a second.
///
/// Group commit: after the first request arrives, the writer drains the queue; if that yields
/// fewer requests than the previous batch had, it waits a little (at most 300 µs) for the rest,
/// since callers answered by the last commit are still resubmitting. One caller never waits.
pub(crate) fn run(db: Arc<Database>, mut state: State, rx: Receiver<Op>, max_batch: usize) {
    const GATHER: Duration = Duration::from_micros(300);
    loop {
        let mut ops = Vec::new();
        let idle_wait = if state.scrub_unsynced.is_empty() && !state.epoch_dirty() {
            Duration::from_secs(1)
        } else {
            Duration::from_millis(5)
        };
        match rx.recv_timeout(idle_wait) {
            Ok(op) => ops.push(op),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if !ops.is_empty() {
            let want = state.last_batch.min(max_batch);
            let deadline = Instant::now() + GATHER;
            while ops.len() < max_batch {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) if ops.len() < want => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        match rx.recv_timeout(left) {
                            Ok(op) => ops.push(op),
                            Err(_) => break,
                        }
                    }
                    Err(_) => break,
                }
            }
            state.last_batch = ops.len();
        }
        if !state.scrub_unsynced.is_empty()
            && (ops.is_empty() || state.last_scrub_sync.elapsed() >= Duration::from_secs(1))
        {
            state.sync_scrub();
        }
        if state.epoch_dirty()
            && (ops.is_empty() || state.last_epoch_sync.elapsed() >= Duration::from_secs(1))
        {
            state.sync_epoch();
        }
        let mut expire =
            !state.burn_pending && state.last_expiry.elapsed() >= Duration::from_secs(1);
        if ops.is_empty() && expire && !state.expiry_due(&db) {
            state.last_expiry = Instant::now();
            expire = false;
        }
        if ops.is_empty() && !expire {
            continue;
        }
        state.batch(&db, ops, expire);
    }
    state.sync_scrub();
    state.sync_epoch();
}
