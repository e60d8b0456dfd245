//! What the KME server needs from a key store ([`KeyPool`]), implemented for the durable
//! [`qkd_store::Store`].
//!
//! A *pool* is the key material of one link (named by the peer KME ID) or the local pool
//! ([`LOCAL_POOL`]) for master and slave on this KME. Which side of a link allocates from which
//! block is [`BlockFilter::split`]: both KMEs compute it, so SAEs on both sides can be masters at
//! once without conflicts. Every call is durable when it returns and may block (an `fsync` in a
//! group commit): call it from `spawn_blocking`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use qkd_store::{
    AllocateRequest, BlockFilter, BlockId, KeyAllocation, NewBlock, Store, StoreError,
};
use serde::Serialize;
use uuid::Uuid;
use zeroize::Zeroizing;

/// Name of the pool for master and slave on the same KME.
pub const LOCAL_POOL: &str = "_local";

/// An answer that arrives after a commit.
pub type Pending<T> = tokio::sync::oneshot::Receiver<Result<T, PoolError>>;

/// What [`KeyPool::allocate_for_master`] gives: where each key lies, and its bytes.
pub type MasterKeys = (Vec<KeyAllocation>, Vec<FetchedKey>);

/// A request to allocate keys from a pool.
#[derive(Clone, Debug)]
pub struct AllocRequest {
    /// Pool name (peer KME ID, or [`LOCAL_POOL`]).
    pub pool: String,
    /// Master SAE ID.
    pub master: String,
    /// Every slave SAE named in the request.
    pub slaves: Vec<String>,
    /// The slaves that fetch from this KME (a subset of `slaves`).
    pub local_slaves: Vec<String>,
    /// Number of keys.
    pub number: usize,
    /// Key size in bits (a multiple of 8).
    pub size_bits: u32,
    /// Absolute expiry (Unix milliseconds).
    pub expires_at_ms: u64,
}

/// A peer KME's request to reserve exactly the material it allocated.
#[derive(Clone, Debug)]
pub struct ReserveRequest {
    /// Pool name on this side (the requesting peer's KME ID).
    pub pool: String,
    /// Master SAE ID (at the peer).
    pub master: String,
    /// Slave SAE IDs (all attached to this KME).
    pub slaves: Vec<String>,
    /// Absolute expiry (Unix milliseconds).
    pub expires_at_ms: u64,
    /// The keys exactly as the peer's store allocated them.
    pub keys: Vec<KeyAllocation>,
}

/// Counts of one pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    /// Bytes this KME may allocate for its own masters: the unused material of the blocks
    /// [`BlockFilter::split`] gives this side (all of the local pool).
    pub allocatable_bytes: u64,
    /// Bytes the peer KME may allocate (the other side's blocks, as far as this KME knows:
    /// material the peer allocated but never reserved here still counts). 0 for the local pool.
    pub peer_allocatable_bytes: u64,
    /// Keys reserved and not yet fetched by every recipient.
    pub reserved_keys: u64,
    /// Blocks ingested so far.
    pub blocks: u64,
    /// Keys destroyed (expiry or request) so far.
    pub destroyed_keys: u64,
}

/// Errors of pool operations other than fetching.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// Not enough material: nothing was spent.
    #[error(
        "insufficient key material in pool {pool}: {needed_bits} bits needed, {available_bits} available"
    )]
    Insufficient {
        /// Pool name.
        pool: String,
        /// Bits requested.
        needed_bits: u64,
        /// Bits allocatable.
        available_bits: u64,
    },
    /// A reservation names material or IDs that are unknown, not the peer's, or already used.
    #[error("reservation conflict: {0}")]
    Conflict(String),
    /// Anything else the store reported.
    #[error("key store: {0}")]
    Store(String),
}

/// Errors of [`KeyPool::fetch`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FetchError {
    /// One or more IDs are unknown, already fetched by this SAE, expired or destroyed.
    #[error("one or more keys specified are not found on KME")]
    NotFound,
    /// The caller is not a recipient of one or more of the keys.
    #[error("SAE {0} is not a recipient of one or more of the requested keys")]
    NotRecipient(String),
    /// Anything else the store reported.
    #[error("key store: {0}")]
    Store(String),
}

/// One fetched key.
pub struct FetchedKey {
    /// Key ID.
    pub id: Uuid,
    /// The key bytes.
    pub material: Zeroizing<Vec<u8>>,
}

impl From<qkd_store::Key> for FetchedKey {
    fn from(k: qkd_store::Key) -> Self {
        Self {
            id: k.key_id(),
            material: k.into_bytes(),
        }
    }
}

impl std::fmt::Debug for FetchedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchedKey")
            .field("id", &self.id)
            .field("len", &self.material.len())
            .finish()
    }
}

/// The operations the KME server needs from a key store. Every call is durable on return.
pub trait KeyPool: Send + Sync + 'static {
    /// Adds a block (`Ok(false)` if a block with this ID exists already).
    fn add_block(
        &self,
        pool: &str,
        block: &str,
        data: Zeroizing<Vec<u8>>,
    ) -> Result<bool, PoolError>;
    /// Counts of a pool.
    fn stats(&self, pool: &str) -> PoolStats;
    /// Allocates keys atomically under fresh UUIDv4s for the master and the local slaves, from
    /// blocks this side owns, and hands them to the master in the same durable step (one
    /// commit), or fails spending nothing. The caller holds the bytes back until the slaves'
    /// KME has reserved them; if it cannot, the caller destroys the keys. Does not block: the
    /// answer arrives on the receiver after the commit.
    fn allocate_for_master(&self, req: &AllocRequest) -> Pending<MasterKeys>;
    /// Durably reserves exactly this material under these IDs for a peer KME's master.
    fn reserve_exact(&self, req: &ReserveRequest) -> Result<(), PoolError>;
    /// Hands keys to one recipient, all or nothing; each recipient gets each key once.
    fn fetch(&self, ids: &[Uuid], recipient: &str) -> Result<Vec<FetchedKey>, FetchError>;
    /// The master SAE a key was made for, if the key is known.
    fn master_of(&self, id: Uuid) -> Option<String>;
    /// Destroys keys (their material is never re-issued).
    fn destroy(&self, ids: &[Uuid]) -> Result<(), PoolError>;
    /// Destroys every key whose expiry is at or before `now_ms`; returns how many.
    fn expire(&self, now_ms: u64) -> Result<u64, PoolError>;
    /// Records an operation of this KME's in the audit trail (the store's ledger), on `link`
    /// (empty: none); never key material.
    fn record(&self, link: &str, what: &str, outcome: Result<&str, &str>) -> Result<(), PoolError>;
}

/// [`KeyPool`] over the durable key store.
#[derive(Debug)]
pub struct StorePool {
    store: Store,
    local_kme: String,
    /// Declared after `store`, so dropped after it: its receivers learn that the store is
    /// closed ([`PoolClosed`]).
    closed: tokio::sync::watch::Sender<()>,
}

/// Resolves once a [`StorePool`] has been dropped and its store closed (the store's writer
/// thread has finished and synced the epoch file): [`StorePool::closed`].
#[derive(Clone, Debug)]
pub struct PoolClosed(tokio::sync::watch::Receiver<()>);

impl PoolClosed {
    /// Waits until the pool's store is closed.
    pub async fn wait(mut self) {
        // Nothing is ever sent: `changed` fails once the sender is dropped with the pool.
        while self.0.changed().await.is_ok() {}
    }
}

impl StorePool {
    /// Opens (or creates) the store in `dir` for KME `local_kme`, unencrypted.
    pub fn open(dir: &Path, local_kme: &str) -> Result<Arc<Self>, PoolError> {
        Self::open_with(dir, local_kme, qkd_store::StoreOptions::default())
    }

    /// Opens (or creates) the store in `dir` for KME `local_kme` with `options` (encryption at
    /// rest).
    pub fn open_with(
        dir: &Path,
        local_kme: &str,
        mut options: qkd_store::StoreOptions,
    ) -> Result<Arc<Self>, PoolError> {
        options.sides = Some(sides(local_kme));
        let store = Store::open_with(dir, options).map_err(|e| PoolError::Store(e.to_string()))?;
        Ok(Arc::new(Self {
            store,
            local_kme: local_kme.to_string(),
            closed: tokio::sync::watch::channel(()).0,
        }))
    }

    /// A signal that this pool is dropped and its store closed.
    pub fn closed(&self) -> PoolClosed {
        PoolClosed(self.closed.subscribe())
    }

    /// The underlying store (ledger, status).
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn filter(&self, pool: &str) -> BlockFilter {
        pool_filter(&self.local_kme, pool)
    }
}

/// The blocks of `pool` KME `kme` allocates from.
fn pool_filter(kme: &str, pool: &str) -> BlockFilter {
    if pool == LOCAL_POOL {
        BlockFilter::all()
    } else {
        BlockFilter::split(kme, pool)
    }
}

/// KME `kme`'s side of every pool, for [`qkd_store::StoreOptions::sides`] (and read-only views
/// of its store, `qkd store status --kme`).
pub fn sides(kme: &str) -> qkd_store::SideFilter {
    let kme = kme.to_string();
    Arc::new(move |pool: &str| pool_filter(&kme, pool))
}

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn store_err(e: StoreError) -> PoolError {
    match e {
        StoreError::InsufficientKeyMaterial {
            link,
            requested_bits,
            available_bits,
        } => PoolError::Insufficient {
            pool: link,
            needed_bits: requested_bits,
            available_bits,
        },
        e @ (StoreError::UnknownBlock { .. }
        | StoreError::MaterialUnavailable { .. }
        | StoreError::DuplicateKeyId(_)) => PoolError::Conflict(e.to_string()),
        other => PoolError::Store(other.to_string()),
    }
}

impl KeyPool for StorePool {
    fn add_block(
        &self,
        pool: &str,
        block: &str,
        data: Zeroizing<Vec<u8>>,
    ) -> Result<bool, PoolError> {
        let id = BlockId::new(block).map_err(store_err)?;
        match self
            .store
            .append(NewBlock::from_bytes(pool, id, data).actor(&self.local_kme))
        {
            Ok(_) => Ok(true),
            Err(StoreError::DuplicateBlock { .. }) => Ok(false),
            Err(e) => Err(store_err(e)),
        }
    }

    fn stats(&self, pool: &str) -> PoolStats {
        let Ok(s) = self.store.link_status(pool) else {
            return PoolStats::default();
        };
        PoolStats {
            allocatable_bytes: s.bits_allocatable / 8,
            peer_allocatable_bytes: s.bits_other_side / 8,
            reserved_keys: s.keys_live,
            blocks: s.blocks,
            destroyed_keys: s.keys_destroyed,
        }
    }

    fn allocate_for_master(&self, req: &AllocRequest) -> Pending<MasterKeys> {
        let mut recipients = vec![req.master.clone()];
        recipients.extend(req.local_slaves.iter().cloned());
        let r = AllocateRequest {
            link: req.pool.clone(),
            master: req.master.clone(),
            slaves: req.slaves.clone(),
            recipients,
            count: req.number,
            size_bits: req.size_bits,
            expires_at: at(req.expires_at_ms),
            filter: self.filter(&req.pool),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.store
            .allocate_and_fetch_then(&r, &req.master, move |outcome| {
                let _ = tx.send(outcome.map_err(store_err).map(|(allocations, keys)| {
                    (
                        allocations,
                        keys.into_iter().map(FetchedKey::from).collect(),
                    )
                }));
            });
        rx
    }

    fn reserve_exact(&self, req: &ReserveRequest) -> Result<(), PoolError> {
        let r = qkd_store::ReserveRequest {
            link: req.pool.clone(),
            master: req.master.clone(),
            slaves: req.slaves.clone(),
            recipients: req.slaves.clone(),
            expires_at: at(req.expires_at_ms),
            keys: req.keys.clone(),
            peer_filter: BlockFilter::split(&req.pool, &self.local_kme),
            actor: req.pool.clone(),
        };
        self.store.reserve_exact(&r).map_err(store_err)
    }

    fn fetch(&self, ids: &[Uuid], recipient: &str) -> Result<Vec<FetchedKey>, FetchError> {
        match self.store.fetch(ids, recipient) {
            Ok(keys) => Ok(keys.into_iter().map(FetchedKey::from).collect()),
            Err(StoreError::NotARecipient { sae, .. }) => Err(FetchError::NotRecipient(sae)),
            Err(
                StoreError::UnknownKey(_)
                | StoreError::AlreadyFetched { .. }
                | StoreError::Expired(_)
                | StoreError::Destroyed(_),
            ) => Err(FetchError::NotFound),
            Err(e) => Err(FetchError::Store(e.to_string())),
        }
    }

    fn master_of(&self, id: Uuid) -> Option<String> {
        self.store.key_info(id).ok().flatten().map(|i| i.master)
    }

    fn destroy(&self, ids: &[Uuid]) -> Result<(), PoolError> {
        self.store
            .destroy(ids, &self.local_kme)
            .map(|_| ())
            .map_err(store_err)
    }

    fn expire(&self, now_ms: u64) -> Result<u64, PoolError> {
        self.store
            .expire(at(now_ms))
            .map(|n| n as u64)
            .map_err(store_err)
    }

    fn record(&self, link: &str, what: &str, outcome: Result<&str, &str>) -> Result<(), PoolError> {
        self.store
            .record(&self.local_kme, link, what, outcome)
            .map_err(store_err)
    }
}

#[cfg(test)]
mod tests;
