//! The key pool the server needs, as a small trait ([`KeyPool`]), and [`JournalPool`]: an
//! in-memory pool made durable by an append-only journal with group commit.
//!
//! Key material arrives in *blocks* per pool (a pool is one link to a peer KME, or the local
//! pool for master and slave on this KME). Every block has an owner: the side allowed to
//! allocate keys from it (see [`block_owner_is_local`]), so both KMEs of a link can serve
//! masters at the same time without ever handing out the same bytes twice. A key is a byte
//! range of a block, reserved under a random UUIDv4 for one master and its slave SAEs.
//!
//! Every mutation returns a [`Commit`]: wait on it before any byte leaves the process.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zeroize::{Zeroize, Zeroizing};

/// Where a key's material lives: a byte range of a block of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaterialAddr {
    /// Block ID, identical on both KMEs of a link.
    pub block: u64,
    /// Byte offset in the block.
    pub offset: u32,
    /// Length in bytes.
    pub len: u32,
}

/// One key handed out by [`KeyPool::allocate`] or [`KeyPool::take`].
pub struct PoolKey {
    /// Random UUIDv4 key ID.
    pub id: Uuid,
    /// Where the material came from (sent to the peer KME for its reservation).
    pub addr: MaterialAddr,
    /// The key bytes.
    pub material: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for PoolKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolKey")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .field("material_len", &self.material.len())
            .finish()
    }
}

/// A request to allocate keys from a pool.
#[derive(Clone, Debug)]
pub struct AllocRequest {
    /// Pool name (peer KME ID, or [`LOCAL_POOL`]).
    pub pool: String,
    /// Master SAE ID.
    pub master: String,
    /// Every slave SAE named in the request (local or remote).
    pub slaves: Vec<String>,
    /// The slaves that fetch from this KME (a subset of `slaves`).
    pub local_slaves: Vec<String>,
    /// Number of keys.
    pub number: usize,
    /// Key size in bytes.
    pub size_bytes: usize,
    /// Absolute expiry of the slaves' reservation (Unix milliseconds).
    pub expires_at_ms: u64,
    /// `true` when the master delivery must wait for [`KeyPool::confirm_master`] (a peer KME
    /// must reserve first); `false` when the keys go to the master with this commit.
    pub master_pending: bool,
}

/// A peer KME's request to reserve exactly the given material under the given IDs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReserveRequest {
    /// Pool name on this side (the requesting peer's KME ID).
    pub pool: String,
    /// Master SAE ID (at the peer).
    pub master: String,
    /// Slave SAE IDs (all at this KME).
    pub slaves: Vec<String>,
    /// Absolute expiry (Unix milliseconds).
    pub expires_at_ms: u64,
    /// The keys: ID and material address.
    pub keys: Vec<(Uuid, MaterialAddr)>,
}

/// Counts of one pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    /// Bytes this side may still allocate.
    pub allocatable_bytes: u64,
    /// Bytes held in blocks the peer allocates from (not yet reserved by it).
    pub peer_bytes: u64,
    /// Keys reserved and waiting for slaves.
    pub reserved_keys: u64,
    /// Blocks ingested so far.
    pub blocks: u64,
}

/// Errors of the pool operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// Not enough material: nothing was spent.
    #[error(
        "insufficient key material in pool {pool}: {needed} bytes needed, {available} available"
    )]
    Insufficient {
        /// Pool name.
        pool: String,
        /// Bytes requested.
        needed: u64,
        /// Bytes allocatable.
        available: u64,
    },
    /// A reservation names material that is unknown, not the peer's to allocate, or already used.
    #[error("reservation conflict: {0}")]
    Conflict(String),
    /// A key ID is already in use.
    #[error("key ID {0} already exists")]
    DuplicateId(Uuid),
    /// The journal could not be written or read.
    #[error("key journal I/O error: {0}")]
    Io(String),
    /// The journal is corrupt beyond its last complete record.
    #[error("key journal is corrupt: {0}")]
    Corrupt(String),
}

/// Errors of [`KeyPool::take`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TakeError {
    /// One or more IDs are unknown, already fetched by this slave, or of another master.
    #[error("one or more keys specified are not found on KME")]
    NotFound,
    /// The caller is not a slave named in the request that produced the key.
    #[error("SAE {0} is not a slave of one or more of the requested keys")]
    NotSlave(String),
    /// The journal could not be written.
    #[error("key journal I/O error: {0}")]
    Io(String),
}

/// Name of the pool for master and slave on the same KME.
pub const LOCAL_POOL: &str = "@local";

/// Which side allocates from a block: the side whose KME ID sorts first owns even block IDs,
/// the other side odd ones; in the local pool every block is local.
pub fn block_owner_is_local(local_kme: &str, pool: &str, block: u64) -> bool {
    if pool == LOCAL_POOL {
        return true;
    }
    let local_first = local_kme < pool;
    block.is_multiple_of(2) == local_first
}

/// A pending durability point: await [`Commit::wait`] before releasing anything it covers.
#[derive(Debug)]
#[must_use = "wait for the commit before any key leaves the process"]
pub enum Commit {
    /// Already durable (or the pool is not durable at all).
    Done,
    /// Durable when the journal writer answers.
    Pending(tokio::sync::oneshot::Receiver<Result<(), String>>),
}

impl Commit {
    /// Waits until the mutation is durable.
    pub async fn wait(self) -> Result<(), PoolError> {
        match self {
            Commit::Done => Ok(()),
            Commit::Pending(rx) => match rx.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(PoolError::Io(e)),
                Err(_) => Err(PoolError::Io("journal writer stopped".into())),
            },
        }
    }
}

/// The operations the KME server needs from a key pool.
pub trait KeyPool: Send + Sync + 'static {
    /// Adds a block of key material (ignored, with `Ok(false)`, if the block is known).
    fn add_block(
        &self,
        pool: &str,
        block: u64,
        data: Zeroizing<Vec<u8>>,
    ) -> Result<(bool, Commit), PoolError>;
    /// Whether a block was ever ingested into a pool.
    fn has_block(&self, pool: &str, block: u64) -> bool;
    /// The highest block ID ingested into a pool.
    fn max_block(&self, pool: &str) -> Option<u64>;
    /// Counts of a pool.
    fn stats(&self, pool: &str) -> PoolStats;
    /// Allocates `number` keys atomically under fresh UUIDv4s, or fails spending nothing.
    fn allocate(&self, req: &AllocRequest) -> Result<(Vec<PoolKey>, Commit), PoolError>;
    /// Marks keys allocated with `master_pending` as delivered to their master.
    fn confirm_master(&self, ids: &[Uuid]) -> Result<Commit, PoolError>;
    /// Undoes an allocation whose master was never served: the material is free again.
    fn release(&self, ids: &[Uuid]) -> Result<Commit, PoolError>;
    /// Destroys keys (material never re-issued).
    fn destroy(&self, ids: &[Uuid]) -> Result<Commit, PoolError>;
    /// Durably reserves exactly this material under these IDs for a peer KME's master.
    fn reserve_exact(&self, req: &ReserveRequest) -> Result<Commit, PoolError>;
    /// Hands keys to a named slave, all or nothing; each slave gets each key once.
    fn take(
        &self,
        master: &str,
        slave: &str,
        ids: &[Uuid],
    ) -> Result<(Vec<PoolKey>, Commit), TakeError>;
    /// Destroys every reservation whose expiry is at or before `now_ms`; returns their IDs.
    fn expire(&self, now_ms: u64) -> Result<(Vec<Uuid>, Commit), PoolError>;
}

// ---------------------------------------------------------------------------------------------
// Byte range sets

/// Sorted, disjoint, non-adjacent used ranges `[start, end)`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct RangeSet(Vec<(u32, u32)>);

impl RangeSet {
    fn used(&self) -> u64 {
        self.0.iter().map(|&(a, b)| u64::from(b - a)).sum()
    }
    fn overlaps(&self, start: u32, end: u32) -> bool {
        self.0.iter().any(|&(a, b)| a < end && start < b)
    }
    fn insert(&mut self, start: u32, end: u32) {
        let pos = self.0.partition_point(|&(a, _)| a < start);
        self.0.insert(pos, (start, end));
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(self.0.len());
        for &(a, b) in &self.0 {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        self.0 = merged;
    }
    fn remove(&mut self, start: u32, end: u32) {
        let mut out = Vec::with_capacity(self.0.len() + 1);
        for &(a, b) in &self.0 {
            if b <= start || end <= a {
                out.push((a, b));
                continue;
            }
            if a < start {
                out.push((a, start));
            }
            if end < b {
                out.push((end, b));
            }
        }
        self.0 = out;
    }
    /// First gap of `len` bytes in `[0, total)`.
    fn first_fit(&self, len: u32, total: u32) -> Option<u32> {
        let mut cursor = 0u32;
        for &(a, b) in &self.0 {
            if a.checked_sub(cursor).is_some_and(|gap| gap >= len) {
                return Some(cursor);
            }
            cursor = b;
        }
        (total.checked_sub(cursor)? >= len).then_some(cursor)
    }
}

// ---------------------------------------------------------------------------------------------
// State

struct Block {
    data: Zeroizing<Vec<u8>>,
    local: bool,
    used: RangeSet,
}

impl Block {
    fn free(&self) -> u64 {
        self.data.len() as u64 - self.used.used()
    }
}

#[derive(Default)]
struct PoolState {
    blocks: BTreeMap<u64, Block>,
    seen: std::collections::BTreeSet<u64>,
    allocatable: u64,
    peer_bytes: u64,
    reserved: u64,
}

struct KeyEntry {
    pool: String,
    master: String,
    slaves: Vec<String>,
    pending: Vec<String>,
    addr: MaterialAddr,
    material: Zeroizing<Vec<u8>>,
    expires_at_ms: u64,
    master_pending: bool,
}

#[derive(Default)]
struct State {
    pools: HashMap<String, PoolState>,
    keys: HashMap<Uuid, KeyEntry>,
}

/// Journal records (postcard). `Keys` carries the key entries; material is re-read from blocks.
#[derive(Serialize, Deserialize)]
enum Rec {
    Block {
        pool: String,
        id: u64,
        local: bool,
        data: Vec<u8>,
        used: RangeSet,
    },
    Keys {
        pool: String,
        master: String,
        slaves: Vec<String>,
        pending: Vec<String>,
        expires_at_ms: u64,
        master_pending: bool,
        keys: Vec<(u128, MaterialAddr)>,
    },
    MasterDone(Vec<u128>),
    Release(Vec<u128>),
    Destroy(Vec<u128>),
    SlaveTook {
        slave: String,
        ids: Vec<u128>,
    },
}

impl State {
    fn pool_mut(&mut self, pool: &str) -> &mut PoolState {
        self.pools.entry(pool.to_string()).or_default()
    }

    fn apply_block(
        &mut self,
        pool: &str,
        id: u64,
        local: bool,
        data: Zeroizing<Vec<u8>>,
        used: RangeSet,
    ) {
        let p = self.pool_mut(pool);
        if !p.seen.insert(id) {
            return;
        }
        let block = Block { data, local, used };
        let free = block.free();
        if free == 0 {
            return;
        }
        if local {
            p.allocatable += free;
        } else {
            p.peer_bytes += free;
        }
        p.blocks.insert(id, block);
    }

    /// Marks a range used and copies its bytes out, zeroing them in the block.
    fn claim(&mut self, pool: &str, addr: MaterialAddr) -> Option<Zeroizing<Vec<u8>>> {
        let p = self.pools.get_mut(pool)?;
        let b = p.blocks.get_mut(&addr.block)?;
        let end = addr.offset.checked_add(addr.len)?;
        if end as usize > b.data.len() || b.used.overlaps(addr.offset, end) {
            return None;
        }
        b.used.insert(addr.offset, end);
        let range = addr.offset as usize..end as usize;
        let slice = b.data.get_mut(range)?;
        let out = Zeroizing::new(slice.to_vec());
        slice.zeroize();
        if b.local {
            p.allocatable -= u64::from(addr.len);
        } else {
            p.peer_bytes -= u64::from(addr.len);
        }
        Some(out)
    }

    /// Gives a range back (release of an allocation that was never delivered).
    fn unclaim(&mut self, pool: &str, addr: MaterialAddr, material: &[u8]) {
        let Some(p) = self.pools.get_mut(pool) else {
            return;
        };
        let Some(b) = p.blocks.get_mut(&addr.block) else {
            // The block was fully used and dropped: the material is gone for good.
            return;
        };
        let end = addr.offset + addr.len;
        if let Some(slice) = b.data.get_mut(addr.offset as usize..end as usize) {
            slice.copy_from_slice(material);
            b.used.remove(addr.offset, end);
            if b.local {
                p.allocatable += u64::from(addr.len);
            } else {
                p.peer_bytes += u64::from(addr.len);
            }
        }
    }

    /// Frees the memory of used-up blocks no undelivered allocation may still give back.
    fn prune(&mut self) {
        let held: std::collections::HashSet<(String, u64)> = self
            .keys
            .values()
            .filter(|e| e.master_pending)
            .map(|e| (e.pool.clone(), e.addr.block))
            .collect();
        for (name, p) in &mut self.pools {
            p.blocks
                .retain(|id, b| b.free() > 0 || held.contains(&(name.clone(), *id)));
        }
    }

    fn drop_key(&mut self, id: &Uuid) -> Option<KeyEntry> {
        let e = self.keys.remove(id)?;
        if let Some(p) = self.pools.get_mut(&e.pool) {
            p.reserved = p.reserved.saturating_sub(1);
        }
        Some(e)
    }

    fn apply(&mut self, rec: Rec) {
        match rec {
            Rec::Block {
                pool,
                id,
                local,
                data,
                used,
            } => self.apply_block(&pool, id, local, Zeroizing::new(data), used),
            Rec::Keys {
                pool,
                master,
                slaves,
                pending,
                expires_at_ms,
                master_pending,
                keys,
            } => {
                for (id, addr) in keys {
                    let Some(material) = self.claim(&pool, addr) else {
                        continue;
                    };
                    self.insert_key(
                        Uuid::from_u128(id),
                        KeyEntry {
                            pool: pool.clone(),
                            master: master.clone(),
                            slaves: slaves.clone(),
                            pending: pending.clone(),
                            addr,
                            material,
                            expires_at_ms,
                            master_pending,
                        },
                    );
                }
            }
            Rec::MasterDone(ids) => {
                for id in ids {
                    self.master_done(&Uuid::from_u128(id));
                }
            }
            Rec::Release(ids) => {
                for id in ids {
                    if let Some(e) = self.drop_key(&Uuid::from_u128(id)) {
                        self.unclaim(&e.pool, e.addr, &e.material);
                    }
                }
            }
            Rec::Destroy(ids) => {
                for id in ids {
                    self.drop_key(&Uuid::from_u128(id));
                }
            }
            Rec::SlaveTook { slave, ids } => {
                for id in ids {
                    self.slave_took(&Uuid::from_u128(id), &slave);
                }
            }
        }
    }

    fn insert_key(&mut self, id: Uuid, e: KeyEntry) {
        let done = !e.master_pending && e.pending.is_empty();
        if done {
            return; // delivered to everyone already: nothing to keep
        }
        self.pool_mut(&e.pool).reserved += 1;
        self.keys.insert(id, e);
    }

    fn master_done(&mut self, id: &Uuid) {
        let Some(e) = self.keys.get_mut(id) else {
            return;
        };
        e.master_pending = false;
        if e.pending.is_empty() {
            self.drop_key(id);
        }
    }

    fn slave_took(&mut self, id: &Uuid, slave: &str) {
        let Some(e) = self.keys.get_mut(id) else {
            return;
        };
        e.pending.retain(|s| s != slave);
        if e.pending.is_empty() && !e.master_pending {
            self.drop_key(id);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Journal

type Ack = tokio::sync::oneshot::Sender<Result<(), String>>;

struct Journal {
    tx: mpsc::Sender<(Vec<u8>, Ack)>,
}

fn frame(rec: &Rec) -> Result<Vec<u8>, PoolError> {
    let body = postcard::to_allocvec(rec).map_err(|e| PoolError::Io(e.to_string()))?;
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&blake3::hash(&body).as_bytes()[..8]);
    out.extend_from_slice(&body);
    Ok(out)
}

fn writer_thread(mut file: File, rx: mpsc::Receiver<(Vec<u8>, Ack)>) {
    let mut batch: Vec<(Vec<u8>, Ack)> = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
            if batch.len() >= 4096 {
                break;
            }
        }
        buf.clear();
        for (bytes, _) in &batch {
            buf.extend_from_slice(bytes);
        }
        let result = file
            .write_all(&buf)
            .and_then(|()| file.sync_data())
            .map_err(|e| e.to_string());
        buf.zeroize();
        for (mut bytes, ack) in batch.drain(..) {
            bytes.zeroize();
            let _ = ack.send(result.clone());
        }
    }
}

/// An in-memory pool with an optional append-only journal (group commit: one `fdatasync`
/// per batch of concurrent mutations). On open, the journal is replayed and rewritten compacted
/// (consumed material is not copied forward; the old file is replaced by rename).
///
/// The journal holds key material on disk, like the key store's segment files. Allocations
/// whose master was never served when the process stopped are destroyed on open (they may be
/// reserved at the peer, which expires them), so no key is ever delivered twice.
pub struct JournalPool {
    local_kme: String,
    state: Mutex<State>,
    journal: Option<Journal>,
}

impl std::fmt::Debug for JournalPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalPool")
            .field("local_kme", &self.local_kme)
            .field("durable", &self.journal.is_some())
            .finish()
    }
}

impl JournalPool {
    /// A pool in memory only (tests).
    pub fn in_memory(local_kme: &str) -> Self {
        Self {
            local_kme: local_kme.to_string(),
            state: Mutex::new(State::default()),
            journal: None,
        }
    }

    /// Opens (or creates) the durable pool in directory `dir` (file `keys.journal`).
    pub fn open(dir: &Path, local_kme: &str) -> Result<Arc<Self>, PoolError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| PoolError::Io(format!("{}: {e}", dir.display())))?;
        let path = dir.join("keys.journal");
        let mut state = State::default();
        if path.exists() {
            replay(&path, &mut state)?;
        }
        // Allocations never delivered to their master: destroy (the peer's TTL covers its side).
        let orphans: Vec<Uuid> = state
            .keys
            .iter()
            .filter(|(_, e)| e.master_pending)
            .map(|(id, _)| *id)
            .collect();
        for id in &orphans {
            state.drop_key(id);
        }
        state.prune();
        let file = compact(dir, &path, &state)?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("qkd-journal".into())
            .spawn(move || writer_thread(file, rx))
            .map_err(|e| PoolError::Io(e.to_string()))?;
        Ok(Arc::new(Self {
            local_kme: local_kme.to_string(),
            state: Mutex::new(state),
            journal: Some(Journal { tx }),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a record (call with the state lock held, so the journal order is the apply order).
    fn log(&self, rec: &Rec) -> Result<Commit, PoolError> {
        let Some(j) = &self.journal else {
            return Ok(Commit::Done);
        };
        let bytes = frame(rec)?;
        let (ack, rx) = tokio::sync::oneshot::channel();
        j.tx.send((bytes, ack))
            .map_err(|_| PoolError::Io("journal writer stopped".into()))?;
        Ok(Commit::Pending(rx))
    }
}

fn replay(path: &Path, state: &mut State) -> Result<(), PoolError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| PoolError::Io(format!("{}: {e}", path.display())))?;
    let bytes = Zeroizing::new(bytes);
    let mut pos = 0usize;
    while let Some(head) = bytes.get(pos..pos + 12) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let Some(body) = bytes.get(pos + 12..pos + 12 + len) else {
            break;
        };
        if blake3::hash(body).as_bytes()[..8] != head[4..12] {
            break; // torn tail write: everything before it is committed
        }
        let rec: Rec = postcard::from_bytes(body)
            .map_err(|e| PoolError::Corrupt(format!("record at byte {pos}: {e}")))?;
        state.apply(rec);
        pos += 12 + len;
    }
    Ok(())
}

fn compact(dir: &Path, path: &Path, state: &State) -> Result<File, PoolError> {
    let io = |e: std::io::Error| PoolError::Io(format!("{}: {e}", dir.display()));
    let tmp: PathBuf = dir.join("keys.journal.tmp");
    let mut out = Vec::new();
    for (name, p) in &state.pools {
        for (&id, b) in &p.blocks {
            out.extend(frame(&Rec::Block {
                pool: name.clone(),
                id,
                local: b.local,
                data: b.data.to_vec(),
                used: b.used.clone(),
            })?);
        }
        // Remember consumed blocks so a re-delivered file is not ingested twice.
        for &id in p
            .seen
            .iter()
            .filter(|&&id| id < 1 << 63 && !p.blocks.contains_key(&id))
        {
            out.extend(frame(&Rec::Block {
                pool: name.clone(),
                id,
                local: false,
                data: Vec::new(),
                used: RangeSet::default(),
            })?);
        }
    }
    // Live keys: re-create their blocks' ranges as one-key blocks is not possible, so keys are
    // written with their material as a private block each (ID space above 2^63 is never used
    // by sources).
    for (synthetic, (id, e)) in ((1u64 << 63) + 1..).zip(state.keys.iter()) {
        let addr = MaterialAddr {
            block: synthetic,
            offset: 0,
            len: e.material.len() as u32,
        };
        out.extend(frame(&Rec::Block {
            pool: e.pool.clone(),
            id: synthetic,
            local: true,
            data: e.material.to_vec(),
            used: RangeSet::default(),
        })?);
        out.extend(frame(&Rec::Keys {
            pool: e.pool.clone(),
            master: e.master.clone(),
            slaves: e.slaves.clone(),
            pending: e.pending.clone(),
            expires_at_ms: e.expires_at_ms,
            master_pending: false,
            keys: vec![(id.as_u128(), addr)],
        })?);
    }
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(&out).map_err(io)?;
    out.zeroize();
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    OpenOptions::new().append(true).open(path).map_err(io)
}

impl KeyPool for JournalPool {
    fn add_block(
        &self,
        pool: &str,
        block: u64,
        data: Zeroizing<Vec<u8>>,
    ) -> Result<(bool, Commit), PoolError> {
        if data.len() > u32::MAX as usize {
            return Err(PoolError::Conflict(format!(
                "block {block} has {} bytes, at most {} expected",
                data.len(),
                u32::MAX
            )));
        }
        let local = block_owner_is_local(&self.local_kme, pool, block);
        let mut st = self.lock();
        if st.pools.get(pool).is_some_and(|p| p.seen.contains(&block)) {
            return Ok((false, Commit::Done));
        }
        let commit = self.log(&Rec::Block {
            pool: pool.to_string(),
            id: block,
            local,
            data: data.to_vec(),
            used: RangeSet::default(),
        })?;
        st.apply_block(pool, block, local, data, RangeSet::default());
        Ok((true, commit))
    }

    fn has_block(&self, pool: &str, block: u64) -> bool {
        self.lock()
            .pools
            .get(pool)
            .is_some_and(|p| p.seen.contains(&block))
    }

    fn max_block(&self, pool: &str) -> Option<u64> {
        self.lock()
            .pools
            .get(pool)
            .and_then(|p| p.seen.iter().rev().find(|&&id| id < 1 << 63).copied())
    }

    fn stats(&self, pool: &str) -> PoolStats {
        let st = self.lock();
        st.pools
            .get(pool)
            .map_or_else(PoolStats::default, |p| PoolStats {
                allocatable_bytes: p.allocatable,
                peer_bytes: p.peer_bytes,
                reserved_keys: p.reserved,
                blocks: p.seen.len() as u64,
            })
    }

    fn allocate(&self, req: &AllocRequest) -> Result<(Vec<PoolKey>, Commit), PoolError> {
        let size = u32::try_from(req.size_bytes).map_err(|_| {
            PoolError::Conflict(format!("key size {} bytes too large", req.size_bytes))
        })?;
        let needed = req.size_bytes as u64 * req.number as u64;
        let mut st = self.lock();
        let available = st.pools.get(&req.pool).map_or(0, |p| p.allocatable);
        let insufficient = || PoolError::Insufficient {
            pool: req.pool.clone(),
            needed,
            available,
        };
        if needed > available {
            return Err(insufficient());
        }
        // Plan first (no mutation), so a failure spends nothing.
        let mut plan: Vec<MaterialAddr> = Vec::with_capacity(req.number);
        {
            let p = st.pools.get(&req.pool).ok_or_else(insufficient)?;
            let mut tentative: HashMap<u64, RangeSet> = HashMap::new();
            let mut blocks = p
                .blocks
                .iter()
                .filter(|(_, b)| b.local && b.free() >= u64::from(size));
            let mut current = blocks.next();
            while plan.len() < req.number {
                let Some((&id, b)) = current else {
                    return Err(insufficient());
                };
                let t = tentative.entry(id).or_insert_with(|| b.used.clone());
                match t.first_fit(size, b.data.len() as u32) {
                    Some(off) => {
                        t.insert(off, off + size);
                        plan.push(MaterialAddr {
                            block: id,
                            offset: off,
                            len: size,
                        });
                    }
                    None => current = blocks.next(),
                }
            }
        }
        let mut keys = Vec::with_capacity(plan.len());
        for addr in plan {
            let mut id = Uuid::new_v4();
            while st.keys.contains_key(&id) {
                id = Uuid::new_v4();
            }
            keys.push((id, addr));
        }
        let commit = self.log(&Rec::Keys {
            pool: req.pool.clone(),
            master: req.master.clone(),
            slaves: req.slaves.clone(),
            pending: req.local_slaves.clone(),
            expires_at_ms: req.expires_at_ms,
            master_pending: req.master_pending,
            keys: keys.iter().map(|(id, a)| (id.as_u128(), *a)).collect(),
        })?;
        let mut out = Vec::with_capacity(keys.len());
        for (id, addr) in keys {
            let material = st
                .claim(&req.pool, addr)
                .ok_or_else(|| PoolError::Corrupt("planned range not claimable".into()))?;
            if req.master_pending || !req.local_slaves.is_empty() {
                st.insert_key(
                    id,
                    KeyEntry {
                        pool: req.pool.clone(),
                        master: req.master.clone(),
                        slaves: req.slaves.clone(),
                        pending: req.local_slaves.clone(),
                        addr,
                        material: material.clone(),
                        expires_at_ms: req.expires_at_ms,
                        master_pending: req.master_pending,
                    },
                );
            }
            out.push(PoolKey { id, addr, material });
        }
        Ok((out, commit))
    }

    fn confirm_master(&self, ids: &[Uuid]) -> Result<Commit, PoolError> {
        let mut st = self.lock();
        let commit = self.log(&Rec::MasterDone(ids.iter().map(|i| i.as_u128()).collect()))?;
        for id in ids {
            st.master_done(id);
        }
        Ok(commit)
    }

    fn release(&self, ids: &[Uuid]) -> Result<Commit, PoolError> {
        let mut st = self.lock();
        let commit = self.log(&Rec::Release(ids.iter().map(|i| i.as_u128()).collect()))?;
        st.apply(Rec::Release(ids.iter().map(|i| i.as_u128()).collect()));
        Ok(commit)
    }

    fn destroy(&self, ids: &[Uuid]) -> Result<Commit, PoolError> {
        let mut st = self.lock();
        let commit = self.log(&Rec::Destroy(ids.iter().map(|i| i.as_u128()).collect()))?;
        for id in ids {
            st.drop_key(id);
        }
        Ok(commit)
    }

    fn reserve_exact(&self, req: &ReserveRequest) -> Result<Commit, PoolError> {
        let mut st = self.lock();
        // Validate everything before mutating.
        let p = st
            .pools
            .get(&req.pool)
            .ok_or_else(|| PoolError::Conflict(format!("no key material from {}", req.pool)))?;
        let mut seen_ids = std::collections::HashSet::new();
        let mut tentative: HashMap<u64, RangeSet> = HashMap::new();
        for (id, addr) in &req.keys {
            if !seen_ids.insert(*id) || st.keys.contains_key(id) {
                return Err(PoolError::DuplicateId(*id));
            }
            let b = p.blocks.get(&addr.block).ok_or_else(|| {
                PoolError::Conflict(format!("block {} unknown or used up", addr.block))
            })?;
            if b.local {
                return Err(PoolError::Conflict(format!(
                    "block {} is allocated by this KME, not by {}",
                    addr.block, req.pool
                )));
            }
            let end = addr
                .offset
                .checked_add(addr.len)
                .filter(|&e| e as usize <= b.data.len())
                .ok_or_else(|| {
                    PoolError::Conflict(format!("range outside block {}", addr.block))
                })?;
            let t = tentative
                .entry(addr.block)
                .or_insert_with(|| b.used.clone());
            if t.overlaps(addr.offset, end) {
                return Err(PoolError::Conflict(format!(
                    "bytes {}..{end} of block {} already used",
                    addr.offset, addr.block
                )));
            }
            t.insert(addr.offset, end);
        }
        let commit = self.log(&Rec::Keys {
            pool: req.pool.clone(),
            master: req.master.clone(),
            slaves: req.slaves.clone(),
            pending: req.slaves.clone(),
            expires_at_ms: req.expires_at_ms,
            master_pending: false,
            keys: req.keys.iter().map(|(id, a)| (id.as_u128(), *a)).collect(),
        })?;
        for (id, addr) in &req.keys {
            let material = st
                .claim(&req.pool, *addr)
                .ok_or_else(|| PoolError::Corrupt("validated range not claimable".into()))?;
            st.insert_key(
                *id,
                KeyEntry {
                    pool: req.pool.clone(),
                    master: req.master.clone(),
                    slaves: req.slaves.clone(),
                    pending: req.slaves.clone(),
                    addr: *addr,
                    material,
                    expires_at_ms: req.expires_at_ms,
                    master_pending: false,
                },
            );
        }
        Ok(commit)
    }

    fn take(
        &self,
        master: &str,
        slave: &str,
        ids: &[Uuid],
    ) -> Result<(Vec<PoolKey>, Commit), TakeError> {
        let mut st = self.lock();
        // Authorisation first: naming a key you were never a slave of is 401.
        for id in ids {
            if let Some(e) = st.keys.get(id)
                && e.master == master
                && !e.master_pending
                && !e.slaves.iter().any(|s| s == slave)
            {
                return Err(TakeError::NotSlave(slave.to_string()));
            }
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let e = st.keys.get(id).ok_or(TakeError::NotFound)?;
            if e.master != master || e.master_pending || !e.pending.iter().any(|s| s == slave) {
                return Err(TakeError::NotFound);
            }
            out.push(PoolKey {
                id: *id,
                addr: e.addr,
                material: e.material.clone(),
            });
        }
        let rec = Rec::SlaveTook {
            slave: slave.to_string(),
            ids: ids.iter().map(|i| i.as_u128()).collect(),
        };
        let commit = self.log(&rec).map_err(|e| TakeError::Io(e.to_string()))?;
        st.apply(rec);
        Ok((out, commit))
    }

    fn expire(&self, now_ms: u64) -> Result<(Vec<Uuid>, Commit), PoolError> {
        let mut st = self.lock();
        st.prune();
        let ids: Vec<Uuid> = st
            .keys
            .iter()
            .filter(|(_, e)| !e.master_pending && e.expires_at_ms <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        if ids.is_empty() {
            return Ok((ids, Commit::Done));
        }
        let commit = self.log(&Rec::Destroy(ids.iter().map(|i| i.as_u128()).collect()))?;
        for id in &ids {
            st.drop_key(id);
        }
        Ok((ids, commit))
    }
}

#[cfg(test)]
mod tests;
