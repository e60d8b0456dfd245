//! Where a link's raw sifted key comes from: a directory the QKD device writes files into
//! (`raw_dir`, also the spool of `raw_stream`) or the INSECURE simulated device. Alice's side
//! finds new raw blocks and offers them to Bob ([`RawRef`]); Bob's side checks that it holds the
//! same block and loads its bits. Both read only the blocks in flight, never a whole file.
//!
//! A raw file `NAME` of `8 * len` bits (bit `i` is bit `i % 8` of byte `i / 8`, as in
//! `datasets/README.md`) is cut into blocks `NAME#0`, `NAME#1`, ... of `block_bits` bits, the
//! remainder joining the last block. Once every block of it is decided, Alice overwrites and
//! deletes her file and tells Bob, who does the same with his.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Instant;

use qkd_core::BitBlock;
use qkd_core::rng::SeededRandom;
use qkd_core::sim::{ErrorModel, SimConfig};
use serde::{Deserialize, Serialize};

use super::ledger::{BlockState, Counter, Ledger, burn};
use crate::config::SourceConfig;

/// A raw block as Alice offers it to Bob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RawRef {
    /// The block ID (`NAME#k`, or `sim-N`).
    pub(crate) block: String,
    /// The raw file it comes from, and that file's length in bytes (`raw_dir` only).
    pub(crate) file: Option<(String, u64)>,
    /// First bit in the file.
    pub(crate) offset_bits: u64,
    /// Bits.
    pub(crate) bits: u64,
}

/// Whether `name` can be a raw file name (and so a block-ID prefix): 1 to 100 bytes of
/// `[A-Za-z0-9._-]`, not starting with `.` (the device's temporary files do).
pub(crate) fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The raw file a block ID of a `raw_dir` source comes from.
fn file_of(block: &str) -> Option<&str> {
    block.rsplit_once('#').map(|(name, _)| name)
}

/// One raw source, either side of a link.
pub(crate) trait RawSource: Send {
    /// Alice: up to `max` raw blocks never started here and not in `busy`.
    fn poll_new(
        &mut self,
        ledger: &Ledger,
        peer: &str,
        busy: &HashSet<String>,
        max: usize,
    ) -> Result<Vec<RawRef>, String>;

    /// Alice: forget what was offered and not started (a new connection offers afresh).
    fn reset_offers(&mut self) {}

    /// Bob: checks that the block is here and whole.
    fn check(&self, r: &RawRef) -> Result<(), String>;

    /// Either side: loads a block's bits (after the checks of [`Self::check`]).
    fn load(&self, r: &RawRef, alice: bool) -> Result<BitBlock, String>;

    /// Alice, after a block was decided: when every block of its file is, burns the file,
    /// records it and returns its name (to tell Bob).
    fn decided(
        &mut self,
        _ledger: &Ledger,
        _peer: &str,
        _block: &str,
    ) -> Result<Option<String>, String> {
        Ok(None)
    }

    /// Bob: Alice finished a file: burn this side's copy.
    fn file_done(&mut self, _name: &str) -> Result<(), String> {
        Ok(())
    }

    /// Bob: the raw files present (Alice answers for those she has finished).
    fn files(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The raw source of a link's configuration (`None` if it is not a raw one); `block_bits` and
/// `min_bits` (the smallest block the sessions accept) come from its processing settings.
pub(crate) fn source(
    cfg: &SourceConfig,
    block_bits: u64,
    min_bits: u64,
) -> Option<Box<dyn RawSource>> {
    Some(match cfg {
        SourceConfig::RawDir { dir, poll_ms } => {
            Box::new(RawDir::new(dir.clone(), *poll_ms, block_bits, min_bits))
        }
        SourceConfig::RawStream { dir, .. } => {
            Box::new(RawDir::new(dir.clone(), 50, block_bits, min_bits))
        }
        SourceConfig::SimulatedDevice {
            seed,
            qber,
            errors,
            raw_bits_per_sec,
        } => Box::new(SimDevice {
            seed: seed.clone(),
            qber: *qber,
            model: errors.parse().unwrap_or(ErrorModel::IidExact),
            block_bits,
            raw_bits_per_sec: *raw_bits_per_sec,
            next_offer: None,
            started_at: Instant::now(),
            first: 0,
        }),
        _ => return None,
    })
}

/// Blocks of a file of `bits` bits: `block_bits` each, the remainder joining the last one; none
/// if the file is shorter than `min_bits`.
fn cut(bits: u64, block_bits: u64, min_bits: u64) -> Vec<(u64, u64)> {
    if bits < min_bits.max(1) {
        return Vec::new();
    }
    let n = (bits / block_bits).max(1);
    (0..n)
        .map(|k| {
            let off = k * block_bits;
            let len = if k + 1 == n { bits - off } else { block_bits };
            (off, len)
        })
        .collect()
}

/// A directory of raw files.
pub(crate) struct RawDir {
    dir: PathBuf,
    poll: std::time::Duration,
    block_bits: u64,
    min_bits: u64,
    last_scan: Option<Instant>,
    /// Sizes seen at the last scan: a file is complete once its size held for one poll.
    sizes: HashMap<String, u64>,
    /// Complete files not finished yet, with their length in bytes.
    files: HashMap<String, u64>,
    /// Per file, how many of its first blocks were started here already (never asked again).
    started: HashMap<String, usize>,
}

impl RawDir {
    fn new(dir: PathBuf, poll_ms: u64, block_bits: u64, min_bits: u64) -> Self {
        Self {
            dir,
            poll: std::time::Duration::from_millis(poll_ms.max(10)),
            block_bits,
            min_bits,
            last_scan: None,
            sizes: HashMap::new(),
            files: HashMap::new(),
            started: HashMap::new(),
        }
    }

    fn list(&self) -> Vec<(String, u64)> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<(String, u64)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let meta = e.metadata().ok()?;
                (meta.is_file() && valid_file_name(&name)).then_some((name, meta.len()))
            })
            .collect();
        out.sort();
        out
    }

    fn blocks_of(&self, name: &str, bytes: u64) -> Vec<RawRef> {
        cut(bytes * 8, self.block_bits, self.min_bits)
            .into_iter()
            .enumerate()
            .map(|(k, (offset_bits, bits))| RawRef {
                block: format!("{name}#{k}"),
                file: Some((name.to_string(), bytes)),
                offset_bits,
                bits,
            })
            .collect()
    }

    /// The block's raw file, opened, once its length matches Alice's and the block lies in it.
    fn open_checked(&self, r: &RawRef) -> Result<File, String> {
        let Some((name, bytes)) = &r.file else {
            return Err(format!("block {} names no raw file", r.block));
        };
        if !valid_file_name(name) || file_of(&r.block) != Some(name) {
            return Err(format!(
                "block {} does not belong to file {name:?}",
                r.block
            ));
        }
        let io = |e: std::io::Error| format!("raw file {name:?}: {e}");
        let f = File::open(self.dir.join(name)).map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        if len != *bytes {
            return Err(format!(
                "raw file {name:?} holds {len} bytes here and {bytes} at the peer \
                 (not complete yet, or not the same file)"
            ));
        }
        if !r.offset_bits.is_multiple_of(8) || r.offset_bits.saturating_add(r.bits) > len * 8 {
            return Err(format!(
                "block {} lies outside raw file {name:?} ({len} bytes)",
                r.block
            ));
        }
        Ok(f)
    }

    fn finish(&mut self, ledger: &Ledger, peer: &str, name: &str) -> Result<(), String> {
        ledger.file_done(peer, name)?;
        burn(&self.dir.join(name))?;
        self.files.remove(name);
        self.started.remove(name);
        Ok(())
    }
}

impl RawSource for RawDir {
    fn poll_new(
        &mut self,
        ledger: &Ledger,
        peer: &str,
        busy: &HashSet<String>,
        max: usize,
    ) -> Result<Vec<RawRef>, String> {
        if self.last_scan.is_none_or(|t| t.elapsed() >= self.poll) {
            self.last_scan = Some(Instant::now());
            let now: HashMap<String, u64> = self.list().into_iter().collect();
            for (name, &size) in &now {
                if self.sizes.get(name) == Some(&size)
                    && !self.files.contains_key(name)
                    && !ledger.is_file_done(peer, name)?
                {
                    self.files.insert(name.clone(), size);
                    if self.blocks_of(name, size).is_empty() {
                        // Too short to post-process: finished at once (Bob burns his too).
                        self.finish(ledger, peer, name)?;
                    }
                }
            }
            self.files.retain(|name, _| now.contains_key(name));
            self.started.retain(|name, _| now.contains_key(name));
            self.sizes = now;
        }
        let mut names: Vec<(String, u64)> =
            self.files.iter().map(|(n, &b)| (n.clone(), b)).collect();
        names.sort();
        let mut out = Vec::new();
        for (name, bytes) in names {
            let blocks = self.blocks_of(&name, bytes);
            let cursor = self.started.entry(name).or_default();
            for (k, r) in blocks.into_iter().enumerate().skip(*cursor) {
                if out.len() >= max {
                    return Ok(out);
                }
                if busy.contains(&r.block) {
                    continue;
                }
                if ledger.state(peer, &r.block)?.is_some() {
                    if k == *cursor {
                        *cursor += 1;
                    }
                    continue;
                }
                out.push(r);
            }
        }
        Ok(out)
    }

    fn check(&self, r: &RawRef) -> Result<(), String> {
        self.open_checked(r).map(|_| ())
    }

    fn load(&self, r: &RawRef, _alice: bool) -> Result<BitBlock, String> {
        let mut f = self.open_checked(r)?;
        let (off, bits) = (r.offset_bits, r.bits);
        let io = |e: std::io::Error| format!("raw file of block {}: {e}", r.block);
        let mut buf = zeroize::Zeroizing::new(vec![0u8; bits.div_ceil(8) as usize]);
        f.seek(SeekFrom::Start(off / 8)).map_err(io)?;
        f.read_exact(&mut buf).map_err(io)?;
        BitBlock::from_bytes(&buf, bits as usize).map_err(|e| e.to_string())
    }

    fn decided(
        &mut self,
        ledger: &Ledger,
        peer: &str,
        block: &str,
    ) -> Result<Option<String>, String> {
        let Some(name) = file_of(block) else {
            return Ok(None);
        };
        let Some(&bytes) = self.files.get(name) else {
            return Ok(None);
        };
        for r in self.blocks_of(name, bytes) {
            if !ledger
                .state(peer, &r.block)?
                .is_some_and(|s: BlockState| s.is_decided())
            {
                return Ok(None);
            }
        }
        let name = name.to_string();
        self.finish(ledger, peer, &name)?;
        Ok(Some(name))
    }

    fn file_done(&mut self, name: &str) -> Result<(), String> {
        if valid_file_name(name) {
            burn(&self.dir.join(name))?;
        }
        Ok(())
    }

    fn files(&self) -> Vec<String> {
        self.list().into_iter().map(|(n, _)| n).collect()
    }
}

/// The INSECURE simulated device: block `sim-N` is a correlated pair derived from the seed and
/// `N`, Alice's bits on her side and Bob's (with errors) on his.
pub(crate) struct SimDevice {
    seed: String,
    qber: f64,
    model: ErrorModel,
    block_bits: u64,
    raw_bits_per_sec: u64,
    /// The next block number to offer (from the ledger at the first poll of a connection).
    next_offer: Option<u64>,
    started_at: Instant,
    /// The block number at start-up (the rate counts from there).
    first: u64,
}

impl SimDevice {
    fn number_of(&self, r: &RawRef) -> Result<u64, String> {
        let n = simulated_number(&r.block)
            .ok_or_else(|| format!("{:?} is not a simulated block ID", r.block))?;
        if r.bits != self.block_bits || r.file.is_some() {
            return Err(format!(
                "simulated block {} of {} bits; this device makes {}",
                r.block, r.bits, self.block_bits
            ));
        }
        Ok(n)
    }
}

impl RawSource for SimDevice {
    fn poll_new(
        &mut self,
        ledger: &Ledger,
        peer: &str,
        busy: &HashSet<String>,
        max: usize,
    ) -> Result<Vec<RawRef>, String> {
        let next = match self.next_offer {
            Some(n) => n,
            None => {
                let n = ledger.counter(peer, Counter::NextSimulated)?;
                if self.first == 0 {
                    self.first = n;
                    self.started_at = Instant::now();
                }
                n
            }
        };
        // Blocks the device has produced so far at its rate.
        let produced = if self.raw_bits_per_sec == 0 {
            u64::MAX
        } else {
            let bits = self.started_at.elapsed().as_secs_f64() * self.raw_bits_per_sec as f64;
            self.first + (bits / self.block_bits as f64) as u64
        };
        let mut out = Vec::new();
        let mut n = next;
        while out.len() < max && n < produced {
            let block = format!("sim-{n}");
            if !busy.contains(&block) && ledger.state(peer, &block)?.is_none() {
                out.push(RawRef {
                    block,
                    file: None,
                    offset_bits: 0,
                    bits: self.block_bits,
                });
            }
            n += 1;
        }
        self.next_offer = Some(n);
        Ok(out)
    }

    fn reset_offers(&mut self) {
        self.next_offer = None;
    }

    fn check(&self, r: &RawRef) -> Result<(), String> {
        self.number_of(r).map(|_| ())
    }

    fn load(&self, r: &RawRef, alice: bool) -> Result<BitBlock, String> {
        let n = self.number_of(r)?;
        let mut h = blake3::Hasher::new_derive_key("qkd simulated device block v1");
        h.update(self.seed.as_bytes());
        h.update(&n.to_le_bytes());
        let mut rng = SeededRandom::from_seed(*h.finalize().as_bytes());
        let pair = SimConfig::new(self.block_bits as usize, self.qber, self.model)
            .run(&mut rng)
            .map_err(|e| e.to_string())?;
        Ok(if alice { pair.alice } else { pair.bob })
    }
}

/// The number of a simulated block, for the ledger's counter.
pub(crate) fn simulated_number(block: &str) -> Option<u64> {
    block.strip_prefix("sim-")?.parse().ok()
}

/// Where `raw_stream` spools: the path of block file `name` and its temporary twin.
pub(crate) fn spool_paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (dir.join(name), dir.join(format!(".{name}.part")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_cut_into_blocks_with_the_remainder_in_the_last() {
        assert_eq!(cut(100, 40, 10), vec![(0, 40), (40, 60)]);
        assert_eq!(cut(80, 40, 10), vec![(0, 40), (40, 40)]);
        assert_eq!(cut(30, 40, 10), vec![(0, 30)]);
        assert!(cut(9, 40, 10).is_empty());
        assert!(valid_file_name("run-7.bin") && !valid_file_name(".x.part"));
        assert!(!valid_file_name("a/b") && !valid_file_name("a#1") && !valid_file_name(""));
        assert_eq!(file_of("run-7.bin#3"), Some("run-7.bin"));
    }

    #[test]
    fn a_dir_offers_complete_files_block_by_block_and_burns_them_when_decided() {
        let lab = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&lab.path().join("links")).unwrap();
        let raw = lab.path().join("raw");
        fs::create_dir_all(&raw).unwrap();
        let bytes: Vec<u8> = (0..250u32).map(|i| (i * 7) as u8).collect();
        fs::write(raw.join("f1"), &bytes).unwrap();
        fs::write(raw.join(".f2.part"), b"ignored").unwrap();
        let cfg = SourceConfig::RawDir {
            dir: raw.clone(),
            poll_ms: 10,
        };
        let mut src = source(&cfg, 800, 100).unwrap();
        let busy = HashSet::new();
        // The first scan only notes sizes.
        assert!(src.poll_new(&ledger, "B", &busy, 8).unwrap().is_empty());
        std::thread::sleep(std::time::Duration::from_millis(15));
        let offers = src.poll_new(&ledger, "B", &busy, 8).unwrap();
        assert_eq!(
            offers.iter().map(|r| r.block.as_str()).collect::<Vec<_>>(),
            ["f1#0", "f1#1"]
        );
        assert_eq!(offers[1].bits, 2000 - 800);
        let b = src.load(&offers[1], true).unwrap();
        assert_eq!(b.len(), 1200);
        assert_eq!(b.to_bytes()[0], bytes[100]);
        // A peer whose copy differs in length is told so.
        let mut other = offers[0].clone();
        other.file = Some(("f1".into(), 251));
        assert!(src.load(&other, false).unwrap_err().contains("251"));
        ledger
            .set("B", "f1#0", &BlockState::Discarded { reason: "x".into() })
            .unwrap();
        assert_eq!(src.decided(&ledger, "B", "f1#0").unwrap(), None);
        // A block started or decided here is never offered again; the others are.
        let again = src.poll_new(&ledger, "B", &busy, 8).unwrap();
        assert_eq!(
            again.iter().map(|r| r.block.as_str()).collect::<Vec<_>>(),
            ["f1#1"]
        );
        ledger.activate("B", "f1#1", None).unwrap();
        assert_eq!(
            src.decided(&ledger, "B", "f1#1").unwrap().as_deref(),
            Some("f1")
        );
        assert!(!raw.join("f1").exists());
        assert!(ledger.is_file_done("B", "f1").unwrap());
    }

    #[test]
    fn both_ends_of_a_simulated_device_derive_the_same_block_with_errors() {
        let cfg = SourceConfig::SimulatedDevice {
            seed: "s".into(),
            qber: 0.05,
            errors: "iid".into(),
            raw_bits_per_sec: 0,
        };
        let lab = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(lab.path()).unwrap();
        let mut a = source(&cfg, 4096, 100).unwrap();
        let b = source(&cfg, 4096, 100).unwrap();
        let offers = a.poll_new(&ledger, "B", &HashSet::new(), 3).unwrap();
        assert_eq!(offers.len(), 3);
        let (x, y) = (
            a.load(&offers[2], true).unwrap(),
            b.load(&offers[2], false).unwrap(),
        );
        let diff = x
            .to_bytes()
            .iter()
            .zip(y.to_bytes().iter())
            .map(|(p, q)| (p ^ q).count_ones())
            .sum::<u32>();
        assert_eq!(diff, (0.05f64 * 4096.0).round() as u32);
        assert_eq!(x.to_bytes(), a.load(&offers[2], true).unwrap().to_bytes());
        assert_eq!(simulated_number(&offers[2].block), Some(2));
    }
}
