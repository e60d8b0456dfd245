//! The redb tables and the records in them (postcard-encoded). Nothing here leaves the module:
//! a redb upgrade stays local to this file and `writer.rs`.

use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    BlockFilter, BlockId, KeyInfo, KeyState, LedgerEntry, LinkStatus, SideFilter, StoreError,
    StoreStatus,
};

/// Format version of the index, in `META["version"]`.
pub(crate) const FORMAT_VERSION: u64 = 2;

/// `version`, `store_id_hi`, `store_id_lo` (the random store ID), `commit` (commit counter, see
/// the epoch file), `encrypted` (0 or 1), and the counters `next_block`, `next_segment`,
/// `next_ledger`.
pub(crate) const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
/// Segment number -> [`SegmentRecord`].
pub(crate) const SEGMENTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("segments");
/// Block number -> [`BlockRecord`].
pub(crate) const BLOCKS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("blocks");
/// (link, block ID) -> block number.
pub(crate) const BLOCK_IDS: TableDefinition<'_, (&str, &str), u64> =
    TableDefinition::new("block_ids");
/// (block number, bit offset) -> bit length: material used by keys, per unspent block.
pub(crate) const USED: TableDefinition<'_, (u64, u64), u64> = TableDefinition::new("used");
/// Key ID (u128) -> [`KeyRecord`].
pub(crate) const KEYS: TableDefinition<'_, u128, &[u8]> = TableDefinition::new("keys");
/// (expiry ms, key ID) -> (): live keys by expiry.
pub(crate) const EXPIRY: TableDefinition<'_, (u64, u128), ()> = TableDefinition::new("expiry");
/// Link -> [`LinkCounters`].
pub(crate) const LINKS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("links");
/// Sequence -> [`LedgerEntry`].
pub(crate) const LEDGER: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("ledger");
/// (segment, byte offset) -> byte length: committed-dead material not yet overwritten.
pub(crate) const SCRUB: TableDefinition<'_, (u64, u64), u64> = TableDefinition::new("scrub");
/// `kek_check` -> the KEK check value (encrypted stores only).
pub(crate) const CRYPTO: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("crypto");

/// A segment file's committed state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SegmentRecord {
    /// Bytes referenced by committed blocks; anything past this is an orphan tail.
    pub committed_len: u64,
    /// Blocks in it not yet spent.
    pub live_blocks: u64,
    /// No more appends go to it.
    pub sealed: bool,
    /// The segment's data key wrapped under the KEK (encrypted stores only).
    pub wrapped_key: Option<Vec<u8>>,
}

/// A block's committed state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BlockRecord {
    pub link: String,
    pub block_id: BlockId,
    pub segment: u64,
    /// Byte offset in the segment.
    pub offset: u64,
    pub len_bits: u64,
    pub usable_bits: u64,
    pub digest: [u8; 32],
    pub qber: Option<f64>,
    pub leaked_bits: Option<u64>,
    /// End of the highest used interval (local allocation continues from here).
    pub frontier: u64,
    /// Sum of used interval lengths.
    pub used_bits: u64,
    /// Bits of keys not yet consumed or destroyed.
    pub live_bits: u64,
    /// The block digest has been checked (before any of it was overwritten).
    pub verified: bool,
    /// The block failed its check; never served.
    pub damaged: bool,
    /// Fully used and every key finished: its used intervals are dropped.
    pub spent: bool,
}

/// Where a key's material lies: block number, bit offset, bit length.
pub(crate) type Extent = (u64, u64, u64);

/// A key's committed state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KeyRecord {
    pub link: String,
    pub master: String,
    pub slaves: Vec<String>,
    pub pending: Vec<String>,
    pub fetched: Vec<String>,
    pub size_bits: u32,
    /// Emptied when the key is finished.
    pub extents: Vec<Extent>,
    pub expires_ms: u64,
    /// BLAKE3 of the key bytes; zero when finished.
    pub digest: [u8; 32],
    pub state: KeyState,
    pub by_peer: bool,
}

/// Per-link counters (see [`LinkStatus`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct LinkCounters {
    pub blocks: u64,
    pub bits_appended: u64,
    pub bits_usable: u64,
    pub bits_used: u64,
    pub bits_damaged: u64,
    pub keys_allocated: u64,
    pub keys_reserved_by_peer: u64,
    pub deliveries: u64,
    pub keys_consumed: u64,
    pub keys_destroyed: u64,
    pub damaged_blocks: u64,
    pub bits_burned: u64,
}

impl LinkCounters {
    /// The status, with the available bits split between this side (`allocatable`) and the
    /// other (`other_side`), as [`side_bits`] counts them.
    pub(crate) fn status(&self, link: &str, allocatable: u64, other_side: u64) -> LinkStatus {
        LinkStatus {
            link: link.to_owned(),
            blocks: self.blocks,
            bits_appended: self.bits_appended,
            bits_usable: self.bits_usable,
            bits_used: self.bits_used,
            bits_damaged: self.bits_damaged,
            bits_available: self
                .bits_usable
                .saturating_sub(self.bits_used)
                .saturating_sub(self.bits_damaged)
                .saturating_sub(self.bits_burned),
            bits_allocatable: allocatable,
            bits_other_side: other_side,
            keys_allocated: self.keys_allocated,
            keys_reserved_by_peer: self.keys_reserved_by_peer,
            deliveries: self.deliveries,
            keys_consumed: self.keys_consumed,
            keys_destroyed: self.keys_destroyed,
            keys_live: (self.keys_allocated + self.keys_reserved_by_peer)
                .saturating_sub(self.keys_consumed + self.keys_destroyed),
            damaged_blocks: self.damaged_blocks,
            bits_burned: self.bits_burned,
        }
    }
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(v).map_err(|e| StoreError::db("encoding a record", e))
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(what: &str, b: &'a [u8]) -> Result<T, StoreError> {
    postcard::from_bytes(b).map_err(|e| StoreError::db(format!("decoding a {what} record"), e))
}

fn rerr(e: impl std::fmt::Display) -> StoreError {
    StoreError::db("reading", e)
}

pub(crate) fn key_info(
    db: &impl ReadableDatabase,
    id: Uuid,
) -> Result<Option<KeyInfo>, StoreError> {
    let txn = db.begin_read().map_err(rerr)?;
    let t = txn.open_table(KEYS).map_err(rerr)?;
    let Some(v) = t.get(id.as_u128()).map_err(rerr)? else {
        return Ok(None);
    };
    let r: KeyRecord = decode("key", v.value())?;
    Ok(Some(KeyInfo {
        key_id: id,
        link: r.link,
        master: r.master,
        slaves: r.slaves,
        pending: r.pending,
        fetched: r.fetched,
        size_bits: r.size_bits,
        expires_unix_ms: r.expires_ms,
        state: r.state,
        allocated_here: !r.by_peer,
    }))
}

/// What is left to allocate in a block, and whether it is this side's: the material past its
/// frontier (local allocations continue there; the peer's reservations push it too), nothing
/// in a damaged or spent block.
pub(crate) fn block_remaining(b: &BlockRecord) -> u64 {
    if b.damaged || b.spent {
        0
    } else {
        b.usable_bits.saturating_sub(b.frontier)
    }
}

/// Adds a block's remaining bits to this side's or the other side's count.
pub(crate) fn count_side(counts: &mut (u64, u64), mine: bool, remaining: u64) {
    if mine {
        counts.0 += remaining;
    } else {
        counts.1 += remaining;
    }
}

/// Per link, (this side's, the other side's) remaining bits, from the block table.
fn side_bits(
    txn: &redb::ReadTransaction,
    sides: Option<&SideFilter>,
) -> Result<std::collections::HashMap<String, (u64, u64)>, StoreError> {
    let mut filters: std::collections::HashMap<String, BlockFilter> = Default::default();
    let mut out: std::collections::HashMap<String, (u64, u64)> = Default::default();
    for row in txn.open_table(BLOCKS).map_err(rerr)?.iter().map_err(rerr)? {
        let (_, v) = row.map_err(rerr)?;
        let b: BlockRecord = decode("block", v.value())?;
        let remaining = block_remaining(&b);
        if remaining == 0 {
            continue;
        }
        let mine = match sides {
            None => true,
            Some(f) => filters
                .entry(b.link.clone())
                .or_insert_with(|| f(&b.link))
                .allows(&b.block_id),
        };
        count_side(out.entry(b.link).or_default(), mine, remaining);
    }
    Ok(out)
}

/// The store's status from the index (`sides`: see [`super::StoreOptions::sides`]).
pub(crate) fn status(
    db: &impl ReadableDatabase,
    dir: &Path,
    sides: Option<&SideFilter>,
) -> Result<StoreStatus, StoreError> {
    let txn = db.begin_read().map_err(rerr)?;
    let split = side_bits(&txn, sides)?;
    let links = txn.open_table(LINKS).map_err(rerr)?;
    let mut out = Vec::new();
    for row in links.iter().map_err(rerr)? {
        let (k, v) = row.map_err(rerr)?;
        let c: LinkCounters = decode("link", v.value())?;
        let (here, other) = split.get(k.value()).copied().unwrap_or_default();
        out.push(c.status(k.value(), here, other));
    }
    let segs = txn.open_table(SEGMENTS).map_err(rerr)?;
    let (mut segments, mut segment_bytes) = (0, 0);
    for row in segs.iter().map_err(rerr)? {
        let (_, v) = row.map_err(rerr)?;
        let s: SegmentRecord = decode("segment", v.value())?;
        segments += 1;
        segment_bytes += s.committed_len;
    }
    let meta = txn.open_table(META).map_err(rerr)?;
    let ledger_entries = meta
        .get("next_ledger")
        .map_err(rerr)?
        .map_or(0, |v| v.value());
    let commits = meta.get("commit").map_err(rerr)?.map_or(0, |v| v.value());
    let encrypted_at_rest = meta
        .get("encrypted")
        .map_err(rerr)?
        .map_or(0, |v| v.value())
        == 1;
    Ok(StoreStatus {
        directory: dir.to_path_buf(),
        links: out,
        segments,
        segment_bytes,
        ledger_entries,
        commits,
        encrypted_at_rest,
    })
}

pub(crate) fn ledger(
    db: &impl ReadableDatabase,
    from: u64,
    limit: usize,
) -> Result<Vec<LedgerEntry>, StoreError> {
    let txn = db.begin_read().map_err(rerr)?;
    let t = txn.open_table(LEDGER).map_err(rerr)?;
    let mut out = Vec::new();
    for row in t.range(from..).map_err(rerr)?.take(limit) {
        let (_, v) = row.map_err(rerr)?;
        out.push(decode("ledger", v.value())?);
    }
    Ok(out)
}
