//! The durable key store: final key material in, single-use keys out, never a key twice.
//!
//! A store is a directory, owner-only (0700, files 0600): `index.redb` (a redb database holding
//! the index of blocks, the key records, the used-material intervals and the ledger), `epoch`
//! (the store ID and commit counter, which make a rolled-back index detectable) and
//! `segments/*.seg` (append-only files holding the key material, read through a read-only memory
//! map; encrypted at rest under per-segment keys wrapped by a [`Kek`] when
//! [`StoreOptions::encryption`] is set). The on-disk bytes, the commit protocol, the checks on
//! open and the recovery from a restored backup ([`Store::burn_after_restore`]) are specified in
//! `docs/store.md`.
//!
//! - [`Store::append`] adds a block of final key material for a link (the peer KME ID). Its bytes
//!   are durable (`fdatasync`) before the redb commit that makes the block visible.
//! - [`Store::allocate`] carves `count` keys of `size_bits` bits out of the link's material, all
//!   or nothing, under fresh random UUIDv4 key IDs, and returns the stable material address of
//!   every key ([`MaterialRange`]: block ID, bit offset, length) for the peer KME.
//! - [`Store::reserve_exact`] is the peer's side: reserve exactly the material the allocating KME
//!   chose, under the same key IDs, refusing if any of it is already used.
//! - [`Store::fetch`] hands a key to one of its recipients, each at most once; the state change
//!   and its ledger record commit before the bytes leave the store. A key whose recipients have
//!   all fetched it is consumed: its bytes are overwritten on disk.
//! - Keys expire: [`Store::expire`] (also run on open and about once a second by the writer)
//!   destroys them. [`Store::destroy`] destroys on request.
//!
//! Concurrency: the store is `Send + Sync` (share it through an `Arc`). One writer thread drains
//! a queue of requests into one redb transaction (group commit), each caller waiting for its own
//! answer, so throughput is not one `fsync` per key. [`Store::allocate_and_fetch`] allocates
//! and delivers to one recipient in one commit; [`Store::allocate_and_fetch_then`] does it
//! without holding the caller's thread. Per-link counts ([`Store::link_status`], split per side
//! by [`StoreOptions::sides`]) are read from memory; status and ledger reads run on redb read
//! transactions, also from another process while this one writes ([`StoreView`]).

mod crypto;
mod epoch;
mod files;
mod import;
mod records;
mod segment;
mod view;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};
use std::{fmt, io};

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zeroize::Zeroizing;

use qkd_core::BitBlock;
use qkd_core::rng::{OsRandom, RandomSource, RngError};

pub use crypto::{Kek, KekError};
pub use import::{ImportError, ImportOutcome, ImportReport, import_cor_files};
pub use view::StoreView;

/// Smallest key size in bits.
pub const MIN_KEY_BITS: u32 = 8;
/// Largest key size in bits (128 KiB).
pub const MAX_KEY_BITS: u32 = 1 << 20;
/// Most keys one allocation, reservation or fetch may name.
pub const MAX_KEYS_PER_REQUEST: usize = 1 << 16;
/// Longest link, SAE, actor or block name in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Errors opening a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The directory or a file in it could not be created or read.
    #[error("cannot open store directory {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Another process (or another `Store` in this one) has the store open.
    #[error("store {path} is already open by another process or handle; expected exclusive access")]
    Locked {
        /// The index file.
        path: PathBuf,
    },
    /// The index database is damaged: it failed redb's page checksums or has the wrong layout.
    #[error("store index {path} is corrupted: {detail}")]
    CorruptIndex {
        /// The index file.
        path: PathBuf,
        /// What redb or the loader reported.
        detail: String,
    },
    /// The index was written by an incompatible version of this store.
    #[error("store index {path} has format version {found}; expected {expected}")]
    Version {
        /// The index file.
        path: PathBuf,
        /// The version found.
        found: u64,
        /// The version this code writes.
        expected: u64,
    },
    /// Any other index database failure.
    #[error("store index {path} could not be opened: {detail}")]
    Database {
        /// The index file.
        path: PathBuf,
        /// What redb reported.
        detail: String,
    },
    /// The store directory or one of its files is accessible to group or others. Nothing was
    /// changed.
    #[error(
        "store path {path} has mode {mode:o}: a key store must be accessible to its owner only \
         (directories 0700, files 0600); fix with `{fix}`"
    )]
    InsecurePermissions {
        /// The directory or file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// The command that fixes it (`chmod -R go-rwx STORE_DIR`).
        fix: String,
    },
    /// The directory holds a store (segment files or the epoch file) but its index is missing,
    /// empty or holds no store. Nothing was changed: restore the index, or move the directory
    /// away to start a new store.
    #[error(
        "store index {path} {detail}, but the directory holds a store's files; refusing to \
         start a new store over them (restore the index, or move the directory away)"
    )]
    MissingIndex {
        /// The index file.
        path: PathBuf,
        /// What was found (missing, empty, no store in it).
        detail: String,
    },
    /// A read-only view ([`StoreView`]) was asked for a directory that holds no store.
    #[error("no key store at {path}: it has no index holding a store")]
    NotAStore {
        /// The directory.
        path: PathBuf,
    },
    /// The index is older than the store's epoch file (restored from a backup or a snapshot),
    /// or belongs to another store. Serving from it could re-issue keys already delivered or
    /// serve material overwritten since. Nothing was changed.
    #[error(
        "store index {path} was rolled back or swapped: {detail}. Serving from it could re-issue \
         keys already delivered. If it was restored from a backup, run \
         `qkd store burn-after-restore --store DIR` here and burn the same links at the peer \
         KME (docs/store.md, \"Rollback\")"
    )]
    RolledBack {
        /// The index file.
        path: PathBuf,
        /// What the index and the epoch file say.
        detail: String,
    },
    /// The epoch file exists but holds no valid record.
    #[error("store epoch file {path} is damaged: {detail}")]
    CorruptEpoch {
        /// The epoch file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// The store is encrypted at rest and no key-encryption key was given.
    #[error("store {path} is encrypted at rest; open it with its key-encryption key")]
    EncryptionKeyRequired {
        /// The index file.
        path: PathBuf,
    },
    /// The key-encryption key given is not the store's.
    #[error("the key-encryption key does not match store {path} (wrong KEK)")]
    WrongEncryptionKey {
        /// The index file.
        path: PathBuf,
    },
    /// A key-encryption key was given for a store that is not encrypted at rest.
    #[error(
        "store {path} is not encrypted at rest, but a key-encryption key was given; refusing to \
         mix (open it without a KEK, or create a new encrypted store)"
    )]
    NotEncrypted {
        /// The index file.
        path: PathBuf,
    },
    /// The recovery step on open (orphan truncation, scrubbing, expiry) failed.
    #[error("store recovery on open failed: {0}")]
    Recovery(#[source] StoreError),
}

/// Errors of store operations (append, allocate, reserve, fetch, destroy, expire, read).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A request argument is malformed (empty name, bad size, duplicate key ID in one request).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The link has fewer usable bits (for this side, under the block filter) than requested.
    /// Nothing was spent.
    #[error(
        "insufficient key material on link '{link}': requested {requested_bits} bits, \
         {available_bits} available to this side"
    )]
    InsufficientKeyMaterial {
        /// The link.
        link: String,
        /// Bits requested (count × size).
        requested_bits: u64,
        /// Bits that could have been allocated.
        available_bits: u64,
    },
    /// A block with this ID already exists on the link.
    #[error("block '{block_id}' already exists on link '{link}' (same material: {same_material})")]
    DuplicateBlock {
        /// The link.
        link: String,
        /// The block ID.
        block_id: String,
        /// Whether the stored block has the same BLAKE3 digest as the one offered.
        same_material: bool,
    },
    /// A block named in a material address does not exist on the link.
    #[error("block '{block_id}' is unknown on link '{link}'")]
    UnknownBlock {
        /// The link.
        link: String,
        /// The block ID.
        block_id: String,
    },
    /// Material named for reservation is (partly) used already, or lies outside the block.
    #[error("material {block_id}[{bit_offset}..+{bit_len}] is not available: {reason}")]
    MaterialUnavailable {
        /// The block ID.
        block_id: String,
        /// First bit.
        bit_offset: u64,
        /// Length in bits.
        bit_len: u64,
        /// Why (already used, out of range, not the peer's to allocate).
        reason: String,
    },
    /// No key with this ID exists.
    #[error("unknown key ID {0}")]
    UnknownKey(Uuid),
    /// A key with this ID exists already (a peer reservation reused an ID).
    #[error("key ID {0} already exists")]
    DuplicateKeyId(Uuid),
    /// The SAE is not a recipient of this key at this store.
    #[error("key {key_id} is not for '{sae}'")]
    NotARecipient {
        /// The key.
        key_id: Uuid,
        /// The SAE that asked.
        sae: String,
    },
    /// The SAE fetched this key before: keys are single use per recipient.
    #[error("key {key_id} was already fetched by '{sae}'")]
    AlreadyFetched {
        /// The key.
        key_id: Uuid,
        /// The SAE that asked.
        sae: String,
    },
    /// The key has expired.
    #[error("key {0} has expired")]
    Expired(Uuid),
    /// The key was destroyed (expiry or request) before this recipient fetched it.
    #[error("key {0} was destroyed")]
    Destroyed(Uuid),
    /// Stored key material failed its BLAKE3 check or lies in a truncated segment; nothing from
    /// it is served.
    #[error("damaged key material: {0}")]
    Damaged(String),
    /// A file operation failed.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What the store was doing.
        context: String,
        /// The I/O error.
        #[source]
        source: Arc<io::Error>,
    },
    /// The index database failed.
    #[error("index database error while {context}: {detail}")]
    Database {
        /// What the store was doing.
        context: String,
        /// What redb reported.
        detail: String,
    },
    /// The random source for key IDs failed.
    #[error("random source failed: {0}")]
    Random(String),
    /// The writer thread is gone (the store is shutting down or it panicked).
    #[error("the store's writer thread is not running")]
    Closed,
}

impl StoreError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn db(context: impl Into<String>, detail: impl fmt::Display) -> Self {
        Self::Database {
            context: context.into(),
            detail: detail.to_string(),
        }
    }
}

impl From<RngError> for StoreError {
    fn from(e: RngError) -> Self {
        Self::Random(e.to_string())
    }
}

/// Identifies a block of key material on a link; both KMEs use the same ID for the same block.
/// 1 to 255 bytes of UTF-8 without control characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlockId(String);

impl BlockId {
    /// Validates and wraps a block ID.
    pub fn new(id: impl Into<String>) -> Result<Self, StoreError> {
        let id = id.into();
        validate_name("block ID", &id)?;
        Ok(Self(id))
    }

    /// The ID as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlockId({:?})", self.0)
    }
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Most bytes of the texts of one [`LedgerEvent::Recorded`].
const MAX_RECORD_BYTES: usize = 4096;

pub(crate) fn validate_name(what: &str, s: &str) -> Result<(), StoreError> {
    if s.is_empty() || s.len() > MAX_NAME_BYTES || s.chars().any(char::is_control) {
        return Err(StoreError::InvalidRequest(format!(
            "{what} must be 1..={MAX_NAME_BYTES} bytes without control characters, got {} bytes",
            s.len()
        )));
    }
    Ok(())
}

/// Decides which blocks a side may allocate from. Both KMEs of a link compute the same rule, so
/// each block is allocated by exactly one side and both directions work at once.
#[derive(Clone)]
pub struct BlockFilter(Option<Arc<BlockPredicate>>);

type BlockPredicate = dyn Fn(&BlockId) -> bool + Send + Sync;

impl fmt::Debug for BlockFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "BlockFilter(custom)"
        } else {
            "BlockFilter(all)"
        })
    }
}

impl Default for BlockFilter {
    fn default() -> Self {
        Self::all()
    }
}

impl BlockFilter {
    /// Every block (one-directional use, tests).
    pub fn all() -> Self {
        Self(None)
    }

    /// A custom predicate over block IDs.
    pub fn new(f: impl Fn(&BlockId) -> bool + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(f)))
    }

    /// The standard split between two KMEs: block `b` belongs to `allocator` iff the low bit of
    /// `BLAKE3("qkd-store block owner" || lo || 0x00 || hi || 0x00 || b)[0]` is 0 when
    /// `allocator` is the lexicographically smaller of the two KME IDs (`lo`), 1 otherwise.
    /// `BlockFilter::split(a, b)` and `BlockFilter::split(b, a)` are complements.
    pub fn split(allocator: &str, other: &str) -> Self {
        let (lo, hi) = if allocator <= other {
            (allocator, other)
        } else {
            (other, allocator)
        };
        let want = u8::from(allocator > other);
        let mut prefix = blake3::Hasher::new();
        prefix.update(b"qkd-store block owner");
        prefix.update(lo.as_bytes());
        prefix.update(&[0]);
        prefix.update(hi.as_bytes());
        prefix.update(&[0]);
        Self::new(move |b| {
            let mut h = prefix.clone();
            h.update(b.as_str().as_bytes());
            h.finalize().as_bytes()[0] & 1 == want
        })
    }

    /// Whether the side may allocate from `block`.
    pub fn allows(&self, block: &BlockId) -> bool {
        self.0.as_ref().is_none_or(|f| f(block))
    }
}

/// A stable address of key material: `bit_len` bits of block `block_id` starting at `bit_offset`
/// (bit order as DESIGN §4). Offsets and lengths are multiples of 8.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MaterialRange {
    /// The block.
    pub block_id: BlockId,
    /// First bit inside the block.
    pub bit_offset: u64,
    /// Number of bits.
    pub bit_len: u64,
}

/// One allocated key: its ID, size and where its material lies. No key bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyAllocation {
    /// The fresh key ID (UUIDv4).
    pub key_id: Uuid,
    /// Key size in bits.
    pub size_bits: u32,
    /// The material, in key-bit order (the key is the concatenation of the ranges).
    pub material: Vec<MaterialRange>,
}

/// Key material for a new block.
pub struct NewBlock {
    link: String,
    block_id: BlockId,
    bytes: Zeroizing<Vec<u8>>,
    len_bits: u64,
    qber: Option<f64>,
    leaked_bits: Option<u64>,
    expected_digest: Option<[u8; 32]>,
    actor: String,
}

impl fmt::Debug for NewBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewBlock")
            .field("link", &self.link)
            .field("block_id", &self.block_id)
            .field("len_bits", &self.len_bits)
            .finish_non_exhaustive()
    }
}

impl NewBlock {
    /// A block from a final key.
    pub fn from_bits(link: &str, block_id: BlockId, key: &BitBlock) -> Self {
        Self::build(link, block_id, key.to_bytes(), key.len() as u64)
    }

    /// A block from whole bytes (`8 × bytes.len()` bits).
    pub fn from_bytes(link: &str, block_id: BlockId, bytes: Zeroizing<Vec<u8>>) -> Self {
        let len_bits = bytes.len() as u64 * 8;
        Self::build(link, block_id, bytes, len_bits)
    }

    fn build(link: &str, block_id: BlockId, bytes: Zeroizing<Vec<u8>>, len_bits: u64) -> Self {
        Self {
            link: link.to_owned(),
            block_id,
            bytes,
            len_bits,
            qber: None,
            leaked_bits: None,
            expected_digest: None,
            actor: "append".to_owned(),
        }
    }

    /// Records the block's estimated QBER.
    pub fn qber(mut self, qber: f64) -> Self {
        self.qber = Some(qber);
        self
    }

    /// Records the bits leaked during reconciliation.
    pub fn leaked_bits(mut self, bits: u64) -> Self {
        self.leaked_bits = Some(bits);
        self
    }

    /// Asks the store to refuse the block unless its BLAKE3 digest (of the packed bytes) is this.
    pub fn expect_digest(mut self, digest: [u8; 32]) -> Self {
        self.expected_digest = Some(digest);
        self
    }

    /// Names who appends (for the ledger); default `"append"`.
    pub fn actor(mut self, actor: &str) -> Self {
        actor.clone_into(&mut self.actor);
        self
    }
}

/// What the store recorded for an appended block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockInfo {
    /// The link.
    pub link: String,
    /// The block ID.
    pub block_id: BlockId,
    /// Length in bits.
    pub len_bits: u64,
    /// Bits usable for keys (the length rounded down to whole bytes).
    pub usable_bits: u64,
    /// BLAKE3 digest of the packed bytes.
    pub digest: [u8; 32],
    /// Estimated QBER, if given.
    pub qber: Option<f64>,
    /// Bits leaked, if given.
    pub leaked_bits: Option<u64>,
}

/// A request to allocate `count` keys of `size_bits` for a master SAE and its slaves.
#[derive(Debug, Clone)]
pub struct AllocateRequest {
    /// The link (peer KME ID) whose material is used.
    pub link: String,
    /// The master SAE.
    pub master: String,
    /// The slave SAEs.
    pub slaves: Vec<String>,
    /// Who may fetch each key from this store, once each: the master and/or slaves.
    /// Default: the master (the allocating KME hands the key to its master SAE).
    pub recipients: Vec<String>,
    /// Number of keys.
    pub count: usize,
    /// Bits per key: a multiple of 8 in `MIN_KEY_BITS..=MAX_KEY_BITS`.
    pub size_bits: u32,
    /// When the keys expire and are destroyed.
    pub expires_at: SystemTime,
    /// Blocks this side may allocate from.
    pub filter: BlockFilter,
}

impl AllocateRequest {
    /// A request with the master as the only recipient here and every block allowed.
    pub fn new(
        link: &str,
        master: &str,
        slaves: &[&str],
        count: usize,
        size_bits: u32,
        expires_at: SystemTime,
    ) -> Self {
        Self {
            link: link.to_owned(),
            master: master.to_owned(),
            slaves: slaves.iter().map(|s| (*s).to_owned()).collect(),
            recipients: vec![master.to_owned()],
            count,
            size_bits,
            expires_at,
            filter: BlockFilter::all(),
        }
    }

    /// Sets who may fetch the keys from this store.
    pub fn recipients(mut self, recipients: &[&str]) -> Self {
        self.recipients = recipients.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Sets the block filter.
    pub fn filter(mut self, filter: BlockFilter) -> Self {
        self.filter = filter;
        self
    }
}

/// The peer's side of an allocation: reserve exactly the named material under the named key IDs.
#[derive(Debug, Clone)]
pub struct ReserveRequest {
    /// The link (the allocating KME's ID, as seen from this store).
    pub link: String,
    /// The master SAE.
    pub master: String,
    /// The slave SAEs.
    pub slaves: Vec<String>,
    /// Who may fetch each key from this store, once each (typically the slaves).
    pub recipients: Vec<String>,
    /// When the keys expire.
    pub expires_at: SystemTime,
    /// The keys exactly as the allocating store returned them.
    pub keys: Vec<KeyAllocation>,
    /// Blocks the *allocating peer* may allocate from; material outside is refused.
    pub peer_filter: BlockFilter,
    /// Who asks (for the ledger), e.g. the peer KME ID.
    pub actor: String,
}

/// A fetched key. `Debug` shows the ID and size, never the bytes; the bytes are zeroized on drop.
pub struct Key {
    key_id: Uuid,
    size_bits: u32,
    bytes: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("key_id", &self.key_id)
            .field("size_bits", &self.size_bits)
            .finish()
    }
}

impl Key {
    /// The key ID.
    pub fn key_id(&self) -> Uuid {
        self.key_id
    }

    /// Size in bits.
    pub fn size_bits(&self) -> u32 {
        self.size_bits
    }

    /// The key bytes (`size_bits / 8` bytes, bit order as DESIGN §4).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The key bytes, still zeroized on drop.
    pub fn into_bytes(self) -> Zeroizing<Vec<u8>> {
        self.bytes
    }
}

/// Lifecycle state of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum KeyState {
    /// Reserved for its master and slaves; some recipients have not fetched it yet.
    Reserved,
    /// Every recipient fetched it; its material is overwritten.
    Consumed,
    /// Destroyed on expiry or request; its material is overwritten.
    Destroyed,
}

/// What the store knows about a key (no key bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// The key ID.
    pub key_id: Uuid,
    /// The link.
    pub link: String,
    /// Master SAE.
    pub master: String,
    /// Slave SAEs.
    pub slaves: Vec<String>,
    /// Recipients that have not fetched it yet.
    pub pending: Vec<String>,
    /// Recipients that fetched it.
    pub fetched: Vec<String>,
    /// Size in bits.
    pub size_bits: u32,
    /// Expiry, milliseconds since the Unix epoch.
    pub expires_unix_ms: u64,
    /// State.
    pub state: KeyState,
    /// Whether this store allocated it (`false`: reserved at a peer's request).
    pub allocated_here: bool,
}

/// Why keys were destroyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DestroyReason {
    /// Their expiry time passed.
    Expired,
    /// Someone asked ([`Store::destroy`]).
    Requested,
    /// The index was restored from a backup and its unused material burned
    /// ([`Store::burn_after_restore`]).
    RestoredFromBackup,
}

/// One state change, as recorded in the ledger. Key IDs, never key bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum LedgerEvent {
    /// A block of material was appended.
    BlockAppended {
        /// The block ID.
        block_id: BlockId,
        /// Length in bits.
        len_bits: u64,
        /// Usable bits.
        usable_bits: u64,
        /// Estimated QBER.
        qber: Option<f64>,
        /// Bits leaked.
        leaked_bits: Option<u64>,
    },
    /// Keys were allocated here (`by_peer == false`) or reserved at the peer's request.
    KeysReserved {
        /// Whether the peer KME chose the material.
        by_peer: bool,
        /// Master SAE.
        master: String,
        /// Slave SAEs.
        slaves: Vec<String>,
        /// Recipients at this store.
        recipients: Vec<String>,
        /// Bits per key.
        size_bits: u32,
        /// The keys.
        key_ids: Vec<Uuid>,
    },
    /// A recipient fetched keys; those whose recipients have now all fetched are consumed.
    KeysFetched {
        /// The recipient.
        recipient: String,
        /// The keys delivered.
        key_ids: Vec<Uuid>,
        /// The keys consumed by this delivery.
        consumed: Vec<Uuid>,
    },
    /// Keys were destroyed.
    KeysDestroyed {
        /// Why.
        reason: DestroyReason,
        /// The keys.
        key_ids: Vec<Uuid>,
    },
    /// A block failed its digest check or lies in a truncated segment; it is never served.
    BlockDamaged {
        /// The block ID.
        block_id: BlockId,
        /// What was wrong.
        reason: String,
    },
    /// After a restore from a backup, every unused bit of the link's blocks was burned (marked
    /// spent and overwritten) by [`Store::burn_after_restore`].
    MaterialBurned {
        /// Blocks burned.
        blocks: u64,
        /// Usable bits burned (never handed out).
        bits: u64,
    },
    /// Something the store's owner did outside the store that the audit trail must show, such
    /// as a KME reseeding an HSM ([`Store::record`]). Never key material.
    Recorded {
        /// What was done.
        what: String,
        /// Whether it succeeded.
        ok: bool,
        /// How, or why it failed.
        detail: String,
    },
}

/// A ledger record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Sequence number, from 0, without gaps.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Who caused it (SAE, peer KME, `"expiry"`, ...).
    pub actor: String,
    /// The link.
    pub link: String,
    /// What happened.
    pub event: LedgerEvent,
}

/// Counts for one link.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStatus {
    /// The link (peer KME ID).
    pub link: String,
    /// Blocks appended.
    pub blocks: u64,
    /// Bits appended.
    pub bits_appended: u64,
    /// Bits usable for keys.
    pub bits_usable: u64,
    /// Bits allocated or reserved into keys.
    pub bits_used: u64,
    /// Bits lost in damaged blocks (usable, never used).
    pub bits_damaged: u64,
    /// Bits still available (both sides' shares).
    pub bits_available: u64,
    /// Of those, the bits this side may allocate: its own blocks
    /// ([`StoreOptions::sides`]) past their allocation frontier. What a request here can get.
    pub bits_allocatable: u64,
    /// Of those, the bits in the other side's blocks (reserved here only at its request).
    pub bits_other_side: u64,
    /// Keys allocated by this store.
    pub keys_allocated: u64,
    /// Keys reserved at the peer's request.
    pub keys_reserved_by_peer: u64,
    /// Deliveries (one per key and recipient).
    pub deliveries: u64,
    /// Keys consumed (all recipients fetched).
    pub keys_consumed: u64,
    /// Keys destroyed (expiry or request).
    pub keys_destroyed: u64,
    /// Keys currently reserved and not finished.
    pub keys_live: u64,
    /// Blocks found damaged.
    pub damaged_blocks: u64,
    /// Usable bits burned after a restore from a backup ([`Store::burn_after_restore`]).
    pub bits_burned: u64,
}

/// The state of a store, for `qkd store status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatus {
    /// The store directory.
    pub directory: PathBuf,
    /// Per-link counts, sorted by link.
    pub links: Vec<LinkStatus>,
    /// Segment files.
    pub segments: u64,
    /// Committed bytes in segment files.
    pub segment_bytes: u64,
    /// Ledger records.
    pub ledger_entries: u64,
    /// Commits of the index so far (its commit counter, see the epoch file).
    pub commits: u64,
    /// Whether key material is encrypted at rest (segments under per-segment keys wrapped by
    /// a KEK, see [`StoreOptions::encryption`]).
    pub encrypted_at_rest: bool,
}

/// Which links [`Store::burn_after_restore`] burns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BurnScope {
    /// Every link of the store: the side whose index was restored.
    AllLinks,
    /// Only these links: the peer KME burns its link to the restored side.
    Links(Vec<String>),
}

impl BurnScope {
    pub(crate) fn covers(&self, link: &str) -> bool {
        match self {
            Self::AllLinks => true,
            Self::Links(l) => l.iter().any(|x| x == link),
        }
    }
}

/// What [`Store::burn_after_restore`] burned on one link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BurnedLink {
    /// The link.
    pub link: String,
    /// Blocks burned (all unspent blocks of the link).
    pub blocks: u64,
    /// Usable bits burned (never handed out).
    pub bits_burned: u64,
    /// Live keys destroyed.
    pub keys_destroyed: u64,
}

/// The result of [`Store::burn_after_restore`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BurnReport {
    /// The store directory.
    pub directory: PathBuf,
    /// Whether a rolled-back index was detected (`false`: the store was consistent and was
    /// burned on request, e.g. after restoring the whole directory).
    pub rollback_detected: bool,
    /// Per link, sorted by link.
    pub links: Vec<BurnedLink>,
}

/// Tuning knobs for [`Store::open_with`].
pub struct StoreOptions {
    /// A new segment file is started when the active one would grow past this. Default 64 MiB.
    pub segment_max_bytes: u64,
    /// Most requests in one group commit. Default 4096.
    pub max_batch: usize,
    /// Source of key IDs. Default: the OS CSPRNG.
    pub random: Box<dyn RandomSource>,
    /// redb page cache in bytes. Default 64 MiB.
    pub cache_bytes: usize,
    /// Encryption at rest: the key-encryption key. `None` (default): segments hold plain
    /// material. A store is created encrypted or not and must always be opened the same way
    /// ([`OpenError::EncryptionKeyRequired`], [`OpenError::WrongEncryptionKey`],
    /// [`OpenError::NotEncrypted`]).
    pub encryption: Option<Kek>,
    /// Which blocks of a link this side allocates from: the filter its allocate requests pass
    /// (e.g. [`BlockFilter::split`] with the peer). It splits [`LinkStatus::bits_available`]
    /// into [`LinkStatus::bits_allocatable`] and [`LinkStatus::bits_other_side`]. `None`
    /// (default): every block is this side's.
    pub sides: Option<SideFilter>,
}

/// Per link, the blocks this side allocates from ([`StoreOptions::sides`]).
pub type SideFilter = Arc<dyn Fn(&str) -> BlockFilter + Send + Sync>;

impl fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreOptions")
            .field("segment_max_bytes", &self.segment_max_bytes)
            .field("max_batch", &self.max_batch)
            .field("random", &self.random.name())
            .field("cache_bytes", &self.cache_bytes)
            .field("encrypted", &self.encryption.is_some())
            .field("sides", &self.sides.is_some())
            .finish()
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            segment_max_bytes: 64 << 20,
            max_batch: 4096,
            random: Box::new(OsRandom),
            cache_bytes: 64 << 20,
            encryption: None,
            sides: None,
        }
    }
}

/// The durable key store. `Send + Sync`; share it through an `Arc`.
pub struct Store {
    dir: PathBuf,
    db: Arc<redb::Database>,
    tx: Option<Sender<writer::Op>>,
    writer: Option<JoinHandle<()>>,
    random: Mutex<Box<dyn RandomSource>>,
    digester: crypto::Digester,
    /// Per-link counts as of the last commit, published by the writer.
    live: writer::LiveCounts,
    sides: Option<SideFilter>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
    }
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn check_names(master: &str, slaves: &[String], recipients: &[String]) -> Result<(), StoreError> {
    validate_name("master SAE ID", master)?;
    for s in slaves {
        validate_name("slave SAE ID", s)?;
    }
    if recipients.is_empty() {
        return Err(StoreError::InvalidRequest(
            "a key needs at least one recipient".into(),
        ));
    }
    for (i, r) in recipients.iter().enumerate() {
        if r != master && !slaves.contains(r) {
            return Err(StoreError::InvalidRequest(format!(
                "recipient '{r}' is neither the master nor a slave"
            )));
        }
        if recipients[..i].contains(r) {
            return Err(StoreError::InvalidRequest(format!(
                "recipient '{r}' is named twice"
            )));
        }
    }
    Ok(())
}

fn check_size(size_bits: u32) -> Result<(), StoreError> {
    if !(MIN_KEY_BITS..=MAX_KEY_BITS).contains(&size_bits) || !size_bits.is_multiple_of(8) {
        return Err(StoreError::InvalidRequest(format!(
            "key size must be a multiple of 8 in {MIN_KEY_BITS}..={MAX_KEY_BITS} bits, got {size_bits}"
        )));
    }
    Ok(())
}

fn check_count(count: usize) -> Result<(), StoreError> {
    if count == 0 || count > MAX_KEYS_PER_REQUEST {
        return Err(StoreError::InvalidRequest(format!(
            "number of keys must be in 1..={MAX_KEYS_PER_REQUEST}, got {count}"
        )));
    }
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the store in `dir` with default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, OpenError> {
        Self::open_with(dir, StoreOptions::default())
    }

    /// Opens (creating if needed) the store in `dir`. Recovery runs before this returns: segment
    /// tails no commit refers to are truncated, unreferenced segment files deleted, pending
    /// overwrites redone, expired keys destroyed.
    ///
    /// Refused, before anything is changed: a store accessible to group or others
    /// ([`OpenError::InsecurePermissions`]), a store whose index is missing or empty
    /// ([`OpenError::MissingIndex`]), an index older than the epoch file or of another store
    /// ([`OpenError::RolledBack`]), a KEK mismatch. A nonexistent or empty directory becomes a
    /// new store, encrypted iff `options.encryption` is set.
    pub fn open_with(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Self, OpenError> {
        Self::open_mode(dir.as_ref(), options, writer::OpenMode::Normal).map(|(s, _)| s)
    }

    /// The operator's way out after restoring an older index (a backup, a VM snapshot): opens
    /// the store accepting the rolled-back index, then in one commit destroys every live key and
    /// burns every unused bit of the links in `scope` (marked spent, overwritten), and re-seals
    /// the epoch file so the store opens normally again. Material appended after the backup was
    /// taken is lost with it. **The peer KME must burn the same links** (the keys of that period
    /// are burned on both sides): there, `BurnScope::Links(vec![restored_kme_id])`; see
    /// `docs/store.md` §11. An index of another store is still refused.
    pub fn burn_after_restore(
        dir: impl AsRef<Path>,
        options: StoreOptions,
        scope: &BurnScope,
    ) -> Result<BurnReport, OpenError> {
        if let BurnScope::Links(l) = scope {
            if l.is_empty() {
                return Err(OpenError::Recovery(StoreError::InvalidRequest(
                    "burn scope names no link".into(),
                )));
            }
            for link in l {
                validate_name("link", link).map_err(OpenError::Recovery)?;
            }
        }
        let (store, rollback_detected) =
            Self::open_mode(dir.as_ref(), options, writer::OpenMode::BurnAfterRestore)?;
        let links = match store.submit(writer::OpKind::Burn(scope.clone())) {
            Ok(writer::OpResult::Burned(l)) => l,
            Ok(_) => return Err(OpenError::Recovery(StoreError::Closed)),
            Err(e) => return Err(OpenError::Recovery(e)),
        };
        let directory = store.dir.clone();
        drop(store);
        Ok(BurnReport {
            directory,
            rollback_detected,
            links,
        })
    }

    fn open_mode(
        dir: &Path,
        options: StoreOptions,
        mode: writer::OpenMode,
    ) -> Result<(Self, bool), OpenError> {
        let dir = dir.to_path_buf();
        let (db, state, rollback) = writer::open(&dir, &options, mode)?;
        let digester = state.digester();
        let live = state.live_counts();
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel();
        let max_batch = options.max_batch.max(1);
        let wdb = Arc::clone(&db);
        let handle = std::thread::Builder::new()
            .name("qkd-store-writer".into())
            .spawn(move || writer::run(wdb, state, rx, max_batch))
            .map_err(|source| OpenError::Io {
                path: dir.clone(),
                source,
            })?;
        let store = Self {
            dir,
            db,
            tx: Some(tx),
            writer: Some(handle),
            random: Mutex::new(options.random),
            digester,
            live,
            sides: options.sides,
        };
        // A burn commits first (it destroys every live key itself): no commit may re-seal the
        // store before its material is burned.
        if mode == writer::OpenMode::Normal {
            store
                .expire(SystemTime::now())
                .map_err(OpenError::Recovery)?;
        }
        Ok((store, rollback))
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn submit(&self, kind: writer::OpKind) -> Result<writer::OpResult, StoreError> {
        let (reply, rx) = mpsc::sync_channel(1);
        self.submit_then(
            kind,
            Box::new(move |r| {
                let _ = reply.send(r);
            }),
        );
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// Queues a request; `reply` gets its outcome (inline if the store is closed).
    fn submit_then(&self, kind: writer::OpKind, reply: writer::Reply) {
        let Some(tx) = self.tx.as_ref() else {
            return reply(Err(StoreError::Closed));
        };
        if let Err(mpsc::SendError(op)) = tx.send(writer::Op { kind, reply }) {
            (op.reply)(Err(StoreError::Closed));
        }
    }

    /// Appends a block of final key material. Durable when this returns.
    pub fn append(&self, block: NewBlock) -> Result<BlockInfo, StoreError> {
        validate_name("link", &block.link)?;
        validate_name("actor", &block.actor)?;
        let need = usize::try_from(block.len_bits.div_ceil(8)).unwrap_or(usize::MAX);
        if block.bytes.len() != need {
            return Err(StoreError::InvalidRequest(format!(
                "block of {} bits needs {need} bytes, got {}",
                block.len_bits,
                block.bytes.len()
            )));
        }
        let mut block = block;
        if !block.len_bits.is_multiple_of(8)
            && let Some(last) = block.bytes.last_mut()
        {
            *last &= (1u8 << (block.len_bits % 8)) - 1;
        }
        let digest = *blake3::hash(&block.bytes).as_bytes();
        if let Some(expected) = block.expected_digest
            && expected != digest
        {
            return Err(StoreError::InvalidRequest(
                "block material does not match the expected BLAKE3 digest".into(),
            ));
        }
        // What the index keeps: keyed BLAKE3 when encrypted (reveals nothing), else the same.
        let stored = self.digester.digest(&block.bytes);
        match self.submit(writer::OpKind::Append {
            block,
            digest,
            stored,
        })? {
            writer::OpResult::Block(info) => Ok(info),
            _ => Err(StoreError::Closed),
        }
    }

    /// Allocates `count` keys of `size_bits` bits from the link's material, in append order,
    /// from blocks the filter allows: all of them or none ([`StoreError::InsufficientKeyMaterial`]).
    /// Durable when this returns. The key IDs are fresh UUIDv4s from the store's random source.
    pub fn allocate(&self, req: &AllocateRequest) -> Result<Vec<KeyAllocation>, StoreError> {
        match self.submit_allocation(req, None)? {
            writer::OpResult::Allocations(a) => Ok(a),
            _ => Err(StoreError::Closed),
        }
    }

    /// [`Store::allocate`] and [`Store::fetch`] by `recipient` (one of `req.recipients`) in one
    /// commit: the keys' allocations and their bytes, in the same order. This is how a KME
    /// serves its master SAE with one commit per request. Should the fetch fail after the
    /// allocation (a key failing its digest check), nothing is delivered and the allocated keys
    /// are left to expire.
    pub fn allocate_and_fetch(
        &self,
        req: &AllocateRequest,
        recipient: &str,
    ) -> Result<(Vec<KeyAllocation>, Vec<Key>), StoreError> {
        let (reply, rx) = mpsc::sync_channel(1);
        self.allocate_and_fetch_then(req, recipient, move |r| {
            let _ = reply.send(r);
        });
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// [`Store::allocate_and_fetch`] without waiting: `done` is called exactly once with the
    /// outcome, on the writer thread after the commit (or inline for a refused request), so it
    /// must not block (send it into a channel). An async caller awaits its commit this way
    /// without holding a thread.
    pub fn allocate_and_fetch_then(
        &self,
        req: &AllocateRequest,
        recipient: &str,
        done: impl FnOnce(Result<(Vec<KeyAllocation>, Vec<Key>), StoreError>) + Send + 'static,
    ) {
        if !req.recipients.iter().any(|r| r == recipient) {
            return done(Err(StoreError::InvalidRequest(format!(
                "'{recipient}' is not a recipient of the keys it would fetch"
            ))));
        }
        let kind = match self.allocation(req, Some(recipient.to_owned())) {
            Ok(kind) => kind,
            Err(e) => return done(Err(e)),
        };
        self.submit_then(
            kind,
            Box::new(move |r| {
                done(r.and_then(|r| match r {
                    writer::OpResult::Delivered(a, k) => Ok((a, k)),
                    _ => Err(StoreError::Closed),
                }))
            }),
        );
    }

    fn submit_allocation(
        &self,
        req: &AllocateRequest,
        deliver: Option<String>,
    ) -> Result<writer::OpResult, StoreError> {
        let kind = self.allocation(req, deliver)?;
        self.submit(kind)
    }

    /// The checked allocation request for the writer, with fresh key IDs.
    fn allocation(
        &self,
        req: &AllocateRequest,
        deliver: Option<String>,
    ) -> Result<writer::OpKind, StoreError> {
        validate_name("link", &req.link)?;
        check_names(&req.master, &req.slaves, &req.recipients)?;
        check_size(req.size_bits)?;
        check_count(req.count)?;
        let expires_ms = unix_ms(req.expires_at);
        if expires_ms <= unix_ms(SystemTime::now()) {
            return Err(StoreError::InvalidRequest(
                "expiry time is in the past".into(),
            ));
        }
        let mut ids = Vec::with_capacity(req.count);
        {
            let mut rng = self.random.lock().map_err(|_| StoreError::Closed)?;
            let mut buf = vec![0u8; 16 * req.count];
            rng.fill(&mut buf)?;
            for chunk in buf.chunks_exact(16) {
                let mut b = [0u8; 16];
                b.copy_from_slice(chunk);
                ids.push(uuid::Builder::from_random_bytes(b).into_uuid());
            }
        }
        Ok(writer::OpKind::Allocate {
            req: req.clone(),
            ids,
            expires_ms,
            deliver,
        })
    }

    /// Reserves exactly the material the peer allocated, under its key IDs, all or nothing.
    /// Refuses (spending nothing) if a key ID exists, a block is unknown or damaged, material
    /// lies outside the peer's blocks or overlaps anything used. Durable when this returns.
    pub fn reserve_exact(&self, req: &ReserveRequest) -> Result<(), StoreError> {
        validate_name("link", &req.link)?;
        validate_name("actor", &req.actor)?;
        check_names(&req.master, &req.slaves, &req.recipients)?;
        check_count(req.keys.len())?;
        for k in &req.keys {
            check_size(k.size_bits)?;
            let total: u64 = k.material.iter().map(|m| m.bit_len).sum();
            if total != u64::from(k.size_bits) {
                return Err(StoreError::InvalidRequest(format!(
                    "key {} has {} bits of material for a {}-bit key",
                    k.key_id, total, k.size_bits
                )));
            }
            for m in &k.material {
                if m.bit_len == 0 || !m.bit_len.is_multiple_of(8) || !m.bit_offset.is_multiple_of(8)
                {
                    return Err(StoreError::InvalidRequest(format!(
                        "material range {}[{}..+{}] is not whole non-empty bytes",
                        m.block_id, m.bit_offset, m.bit_len
                    )));
                }
            }
        }
        let expires_ms = unix_ms(req.expires_at);
        if expires_ms <= unix_ms(SystemTime::now()) {
            return Err(StoreError::InvalidRequest(
                "expiry time is in the past".into(),
            ));
        }
        match self.submit(writer::OpKind::Reserve {
            req: req.clone(),
            expires_ms,
        })? {
            writer::OpResult::Unit => Ok(()),
            _ => Err(StoreError::Closed),
        }
    }

    /// Fetches keys for one recipient, all or nothing. Each recipient gets each key at most
    /// once; the delivery is committed (with its ledger record) before this returns the bytes.
    /// Every key's BLAKE3 digest is checked before it is served.
    pub fn fetch(&self, key_ids: &[Uuid], recipient: &str) -> Result<Vec<Key>, StoreError> {
        validate_name("recipient", recipient)?;
        check_count(key_ids.len())?;
        match self.submit(writer::OpKind::Fetch {
            ids: key_ids.to_vec(),
            recipient: recipient.to_owned(),
        })? {
            writer::OpResult::Keys(k) => Ok(k),
            _ => Err(StoreError::Closed),
        }
    }

    /// Destroys keys (already finished keys are skipped); their material is overwritten.
    /// Returns how many were destroyed.
    pub fn destroy(&self, key_ids: &[Uuid], actor: &str) -> Result<usize, StoreError> {
        validate_name("actor", actor)?;
        check_count(key_ids.len())?;
        match self.submit(writer::OpKind::Destroy {
            ids: key_ids.to_vec(),
            actor: actor.to_owned(),
        })? {
            writer::OpResult::Count(n) => Ok(n),
            _ => Err(StoreError::Closed),
        }
    }

    /// Records an operation of the store's owner in the ledger, durably (a
    /// [`LedgerEvent::Recorded`] by `actor` on `link`, which may be empty): what happened
    /// outside the store that the audit trail must show. The texts are the caller's and must
    /// never hold key material.
    pub fn record(
        &self,
        actor: &str,
        link: &str,
        what: &str,
        outcome: Result<&str, &str>,
    ) -> Result<(), StoreError> {
        validate_name("actor", actor)?;
        if !link.is_empty() {
            validate_name("link", link)?;
        }
        let (ok, detail) = match outcome {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        if what.len() + detail.len() > MAX_RECORD_BYTES {
            return Err(StoreError::InvalidRequest(format!(
                "a record's texts may hold {MAX_RECORD_BYTES} bytes, got {}",
                what.len() + detail.len()
            )));
        }
        match self.submit(writer::OpKind::Record {
            actor: actor.to_owned(),
            link: link.to_owned(),
            event: LedgerEvent::Recorded {
                what: what.to_owned(),
                ok,
                detail: detail.to_owned(),
            },
        })? {
            writer::OpResult::Unit => Ok(()),
            _ => Err(StoreError::Closed),
        }
    }

    /// Destroys every key whose expiry is at or before `now`. Returns how many.
    pub fn expire(&self, now: SystemTime) -> Result<usize, StoreError> {
        match self.submit(writer::OpKind::Expire {
            now_ms: unix_ms(now),
        })? {
            writer::OpResult::Count(n) => Ok(n),
            _ => Err(StoreError::Closed),
        }
    }

    /// What the store knows about a key, or `None`.
    pub fn key_info(&self, key_id: Uuid) -> Result<Option<KeyInfo>, StoreError> {
        records::key_info(&*self.db, key_id)
    }

    /// Counts for one link as of the last commit (zeros for an unknown link). Read from memory:
    /// cheap enough for every request.
    pub fn link_status(&self, link: &str) -> Result<LinkStatus, StoreError> {
        let live = self.live.read().map_err(|_| StoreError::Closed)?;
        Ok(live
            .get(link)
            .cloned()
            .unwrap_or_else(|| records::LinkCounters::default().status(link, 0, 0)))
    }

    /// The whole store's status.
    pub fn status(&self) -> Result<StoreStatus, StoreError> {
        records::status(&*self.db, &self.dir, self.sides.as_ref())
    }

    /// Up to `limit` ledger records from sequence number `from` on.
    pub fn ledger(&self, from: u64, limit: usize) -> Result<Vec<LedgerEntry>, StoreError> {
        records::ledger(&*self.db, from, limit)
    }
}
