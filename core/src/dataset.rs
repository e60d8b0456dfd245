//! Raw-key pairs on disk: packed key files plus a JSON manifest.
//!
//! A dataset directory holds any number of pairs. Pair `<name>` is two files,
//! `<name>.alice.bin` and `<name>.bob.bin`: the key bits packed as bytes in DESIGN §4 order
//! (bit `i` is bit `i % 8` of byte `i / 8`), exactly `ceil(n / 8)` bytes, bits past `n` zero.
//! `manifest.json` lists the pairs:
//!
//! ```json
//! { "format_version": 1,
//!   "entries": [ { "name": "iid-q05", "bits": 1000000, "qber": 0.05, "errors": 50000,
//!                  "model": { "kind": "iid_exact" }, "seed": 5, "rng": "seeded-chacha20",
//!                  "alice": { "file": "iid-q05.alice.bin", "bytes": 125000, "blake3": "<hex>" },
//!                  "bob":   { "file": "iid-q05.bob.bin",   "bytes": 125000, "blake3": "<hex>" } } ] }
//! ```
//!
//! The entry's simulation fields are those of [`SimReport`] (burst models add `chain`). Every
//! file is written to a temporary name, synced and renamed, so a reader never sees half a file;
//! loading checks each file's size and BLAKE3 digest, so truncation and corruption are
//! reported as such. [`read_key_file`] reads a bare key file with no manifest.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::bits::BitBlock;
use crate::sim::SimReport;

/// Manifest format version this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// File name of the manifest inside a dataset directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Why a dataset operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatasetError {
    /// A file could not be read, written or renamed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A file the manifest names (or the manifest itself) does not exist.
    #[error("missing file {path}")]
    MissingFile {
        /// The missing file.
        path: PathBuf,
    },
    /// A key file has the wrong size (truncated, or extra bytes).
    #[error("{path} is {actual} bytes; expected {expected} bytes (truncated or padded)")]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// Size required by the bit count.
        expected: u64,
        /// Size on disk.
        actual: u64,
    },
    /// A key file's BLAKE3 digest differs from the manifest's.
    #[error("{path} is corrupted: BLAKE3 {actual}, manifest says {expected}")]
    DigestMismatch {
        /// The file.
        path: PathBuf,
        /// Digest in the manifest.
        expected: String,
        /// Digest of the file.
        actual: String,
    },
    /// The manifest is not valid JSON of the expected shape.
    #[error("manifest {path} is invalid: {reason}")]
    BadManifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The manifest has another format version.
    #[error("manifest {path} has format version {found}; expected {supported}")]
    UnsupportedVersion {
        /// The manifest file.
        path: PathBuf,
        /// Version found.
        found: u64,
        /// Version this crate reads.
        supported: u32,
    },
    /// A pair name or file name is unusable.
    #[error(
        "name '{name}' is invalid: {reason}; expected letters, digits, '.', '_' or '-', \
         not starting with '.'"
    )]
    InvalidName {
        /// The name.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A pair of that name is already in the manifest.
    #[error("the manifest already has a pair named '{name}'")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// No pair of that name is in the manifest.
    #[error("the manifest has no pair named '{name}'")]
    EntryNotFound {
        /// The name.
        name: String,
    },
    /// Alice's and Bob's keys, or the keys and the report, differ in length.
    #[error("length mismatch: alice {alice} bits, bob {bob} bits, report {report} bits")]
    LengthMismatch {
        /// Alice's key length.
        alice: u64,
        /// Bob's key length.
        bob: u64,
        /// Length in the report or manifest.
        report: u64,
    },
    /// A key file has bits set past its bit count.
    #[error("{path} has bits set past bit {bits}; expected zero padding")]
    NonZeroTail {
        /// The file.
        path: PathBuf,
        /// The bit count.
        bits: u64,
    },
    /// A bit count of zero was requested for a bare key file.
    #[error("bit count 0 requested for {path}; expected at least 1 bit")]
    ZeroBitCount {
        /// The file.
        path: PathBuf,
    },
    /// A bare key file is empty and no bit count was given.
    #[error("{path} is empty; expected at least one byte of key")]
    EmptyFile {
        /// The file.
        path: PathBuf,
    },
}

/// One key file of a pair: name, size and digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// File name, relative to the dataset directory.
    pub file: String,
    /// Size in bytes, `ceil(bits / 8)`.
    pub bytes: u64,
    /// BLAKE3 digest of the file, lowercase hex.
    pub blake3: String,
}

/// One raw-key pair in a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Pair name; files are `<name>.alice.bin` and `<name>.bob.bin`.
    pub name: String,
    /// What was simulated: bits, nominal QBER, actual errors, model, seed (flattened in JSON).
    #[serde(flatten)]
    pub simulation: SimReport,
    /// Alice's key file.
    pub alice: FileInfo,
    /// Bob's key file.
    pub bob: FileInfo,
}

impl Entry {
    /// Key length in bits.
    pub fn bits(&self) -> u64 {
        self.simulation.bits
    }
}

/// The list of pairs in a dataset directory (`manifest.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// The pairs, in insertion order.
    pub entries: Vec<Entry>,
}

impl Default for Manifest {
    fn default() -> Self {
        Self::new()
    }
}

impl Manifest {
    /// An empty manifest.
    pub fn new() -> Self {
        Self {
            format_version: FORMAT_VERSION,
            entries: Vec::new(),
        }
    }

    /// Path of the manifest in `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(MANIFEST_FILE)
    }

    /// Reads `dir/manifest.json`, checking its version and that names are valid and unique.
    pub fn load(dir: &Path) -> Result<Self, DatasetError> {
        let path = Self::path(dir);
        let text = fs::read(&path).map_err(|e| io_error(&path, e))?;
        let bad = |reason: String| DatasetError::BadManifest {
            path: path.clone(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        let version = value
            .get("format_version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| bad("no numeric \"format_version\" field".into()))?;
        if version != u64::from(FORMAT_VERSION) {
            return Err(DatasetError::UnsupportedVersion {
                path,
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let manifest: Self = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        for (i, e) in manifest.entries.iter().enumerate() {
            check_name(&e.name).map_err(|err| bad(err.to_string()))?;
            if manifest.entries[..i].iter().any(|o| o.name == e.name) {
                return Err(bad(format!("pair name '{}' appears twice", e.name)));
            }
        }
        Ok(manifest)
    }

    /// [`Manifest::load`], or an empty manifest if `dir` has none yet.
    pub fn load_or_new(dir: &Path) -> Result<Self, DatasetError> {
        if Self::path(dir).exists() {
            Self::load(dir)
        } else {
            Ok(Self::new())
        }
    }

    /// Writes `dir/manifest.json` atomically (temporary file, sync, rename).
    pub fn save(&self, dir: &Path) -> Result<(), DatasetError> {
        let mut json = serde_json::to_vec_pretty(self).map_err(|e| DatasetError::BadManifest {
            path: Self::path(dir),
            reason: e.to_string(),
        })?;
        json.push(b'\n');
        write_atomic(dir, MANIFEST_FILE, &json)
    }

    /// The pair named `name`.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Adds `entry`; fails if a pair of that name exists.
    pub fn add(&mut self, entry: Entry) -> Result<(), DatasetError> {
        check_name(&entry.name)?;
        if self.get(&entry.name).is_some() {
            return Err(DatasetError::DuplicateName { name: entry.name });
        }
        self.entries.push(entry);
        Ok(())
    }

    /// Adds `entry`, replacing (and returning) a pair of the same name.
    pub fn insert(&mut self, entry: Entry) -> Result<Option<Entry>, DatasetError> {
        check_name(&entry.name)?;
        match self.entries.iter_mut().find(|e| e.name == entry.name) {
            Some(slot) => Ok(Some(std::mem::replace(slot, entry))),
            None => {
                self.entries.push(entry);
                Ok(None)
            }
        }
    }

    /// Removes and returns the pair named `name`.
    pub fn remove(&mut self, name: &str) -> Option<Entry> {
        let i = self.entries.iter().position(|e| e.name == name)?;
        Some(self.entries.remove(i))
    }
}

fn io_error(path: &Path, e: io::Error) -> DatasetError {
    if e.kind() == io::ErrorKind::NotFound {
        DatasetError::MissingFile {
            path: path.to_owned(),
        }
    } else {
        DatasetError::Io {
            path: path.to_owned(),
            source: e,
        }
    }
}

/// Names become file names: keep them plain.
fn check_name(name: &str) -> Result<(), DatasetError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.starts_with('.') {
        Some("starts with '.'")
    } else if name.len() > 200 {
        Some("longer than 200 bytes")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("contains a character other than letters, digits, '.', '_' or '-'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(DatasetError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Writes `dir/file` via a temporary file in `dir`, synced, then renamed over the target.
fn write_atomic(dir: &Path, file: &str, bytes: &[u8]) -> Result<(), DatasetError> {
    let target = dir.join(file);
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(".{file}.{}.{nonce}.tmp", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create_new(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &target)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io_error(&tmp, e));
    }
    // Make the rename durable where the platform allows syncing a directory.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn digest_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Writes `<name>.alice.bin` and `<name>.bob.bin` into `dir` (created if missing), each
/// atomically, and returns the manifest entry for them. The manifest itself is not touched:
/// see [`add_pair`].
pub fn write_pair(
    dir: &Path,
    name: &str,
    alice: &BitBlock,
    bob: &BitBlock,
    report: &SimReport,
) -> Result<Entry, DatasetError> {
    check_name(name)?;
    if alice.len() != bob.len() || alice.len() as u64 != report.bits {
        return Err(DatasetError::LengthMismatch {
            alice: alice.len() as u64,
            bob: bob.len() as u64,
            report: report.bits,
        });
    }
    fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let write = |side: &str, key: &BitBlock| -> Result<FileInfo, DatasetError> {
        let file = format!("{name}.{side}.bin");
        let bytes = key.to_bytes();
        write_atomic(dir, &file, &bytes)?;
        Ok(FileInfo {
            file,
            bytes: bytes.len() as u64,
            blake3: digest_hex(&bytes),
        })
    };
    let alice_info = write("alice", alice)?;
    let bob_info = write("bob", bob)?;
    Ok(Entry {
        name: name.to_owned(),
        simulation: report.clone(),
        alice: alice_info,
        bob: bob_info,
    })
}

/// [`write_pair`], then records the entry in `dir/manifest.json` (created if missing; a pair
/// of the same name is replaced). What `qkd sim --out DIR` does.
pub fn add_pair(
    dir: &Path,
    name: &str,
    alice: &BitBlock,
    bob: &BitBlock,
    report: &SimReport,
) -> Result<Entry, DatasetError> {
    let mut manifest = Manifest::load_or_new(dir)?;
    let entry = write_pair(dir, name, alice, bob, report)?;
    manifest.insert(entry.clone())?;
    manifest.save(dir)?;
    Ok(entry)
}

/// Reads one key file of an entry, checking name, size, digest and padding.
fn load_file(dir: &Path, info: &FileInfo, bits: u64) -> Result<BitBlock, DatasetError> {
    check_name(&info.file)?;
    let path = dir.join(&info.file);
    let bytes = Zeroizing::new(fs::read(&path).map_err(|e| io_error(&path, e))?);
    let expected = bits.div_ceil(8);
    if bytes.len() as u64 != expected {
        return Err(DatasetError::SizeMismatch {
            path,
            expected,
            actual: bytes.len() as u64,
        });
    }
    let actual = digest_hex(&bytes);
    if !actual.eq_ignore_ascii_case(&info.blake3) {
        return Err(DatasetError::DigestMismatch {
            path,
            expected: info.blake3.clone(),
            actual,
        });
    }
    block_from_bytes(&path, &bytes, bits)
}

/// `bytes` (exactly `ceil(bits / 8)` of them) as a block, refusing set padding bits.
fn block_from_bytes(path: &Path, bytes: &[u8], bits: u64) -> Result<BitBlock, DatasetError> {
    let len = usize::try_from(bits).map_err(|_| DatasetError::SizeMismatch {
        path: path.to_owned(),
        expected: bits.div_ceil(8),
        actual: bytes.len() as u64,
    })?;
    if len % 8 != 0
        && let Some(&last) = bytes.last()
        && last >> (len % 8) != 0
    {
        return Err(DatasetError::NonZeroTail {
            path: path.to_owned(),
            bits,
        });
    }
    BitBlock::from_bytes(bytes, len).map_err(|_| DatasetError::SizeMismatch {
        path: path.to_owned(),
        expected: bits.div_ceil(8),
        actual: bytes.len() as u64,
    })
}

/// Loads the pair `entry` describes from `dir`, verifying each file's size and BLAKE3 digest.
pub fn load_pair(dir: &Path, entry: &Entry) -> Result<(BitBlock, BitBlock), DatasetError> {
    let bits = entry.bits();
    let alice = load_file(dir, &entry.alice, bits)?;
    let bob = load_file(dir, &entry.bob, bits)?;
    Ok((alice, bob))
}

/// Loads the manifest of `dir` and the pair named `name`.
pub fn load_named(dir: &Path, name: &str) -> Result<(Entry, BitBlock, BitBlock), DatasetError> {
    let manifest = Manifest::load(dir)?;
    let entry = manifest
        .get(name)
        .cloned()
        .ok_or_else(|| DatasetError::EntryNotFound {
            name: name.to_owned(),
        })?;
    let (alice, bob) = load_pair(dir, &entry)?;
    Ok((entry, alice, bob))
}

/// Reads a bare key file (packed bytes, DESIGN §4 order), as for
/// `qkd process --alice A --bob B`. With `bits`, the file must be exactly `ceil(bits / 8)`
/// bytes with zero padding; without, every bit of the file is key (`8 * size` bits).
pub fn read_key_file(path: &Path, bits: Option<u64>) -> Result<BitBlock, DatasetError> {
    let bytes = Zeroizing::new(fs::read(path).map_err(|e| io_error(path, e))?);
    let bits = match bits {
        Some(0) => {
            return Err(DatasetError::ZeroBitCount {
                path: path.to_owned(),
            });
        }
        Some(b) => {
            let expected = b.div_ceil(8);
            if bytes.len() as u64 != expected {
                return Err(DatasetError::SizeMismatch {
                    path: path.to_owned(),
                    expected,
                    actual: bytes.len() as u64,
                });
            }
            b
        }
        None => {
            if bytes.is_empty() {
                return Err(DatasetError::EmptyFile {
                    path: path.to_owned(),
                });
            }
            bytes.len() as u64 * 8
        }
    };
    block_from_bytes(path, &bytes, bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{ErrorModel, simulate};

    fn pair(n: usize, model: ErrorModel, seed: u64) -> crate::sim::SimPair {
        simulate(n, 0.05, model, seed).unwrap()
    }

    #[test]
    fn round_trip_with_two_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let a = pair(10_001, ErrorModel::IidExact, 1);
        let b = pair(4096, ErrorModel::burst(), 2);
        let ea = add_pair(dir.path(), "iid-q05", &a.alice, &a.bob, &a.report).unwrap();
        add_pair(dir.path(), "burst-q05", &b.alice, &b.bob, &b.report).unwrap();
        assert_eq!(ea.alice.bytes, 1251); // ceil(10_001 / 8)
        assert_eq!(ea.alice.file, "iid-q05.alice.bin");
        // Files hold exactly the packed bytes.
        let raw = fs::read(dir.path().join("iid-q05.alice.bin")).unwrap();
        assert_eq!(raw, a.alice.to_bytes().to_vec());
        assert_eq!(ea.alice.blake3, blake3::hash(&raw).to_hex().to_string());

        let m = Manifest::load(dir.path()).unwrap();
        assert_eq!(m.format_version, FORMAT_VERSION);
        assert_eq!(m.entries.len(), 2);
        assert_eq!(m.get("iid-q05"), Some(&ea));
        let (alice, bob) = load_pair(dir.path(), m.get("iid-q05").unwrap()).unwrap();
        assert_eq!(alice, a.alice);
        assert_eq!(bob, a.bob);
        let (e, alice, bob) = load_named(dir.path(), "burst-q05").unwrap();
        assert_eq!((alice, bob), (b.alice.clone(), b.bob.clone()));
        assert_eq!(e.simulation, b.report);
        assert!(e.simulation.chain.is_some());

        // The JSON carries the listed fields at the entry's top level.
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join(MANIFEST_FILE)).unwrap()).unwrap();
        let first = &json["entries"][0];
        assert_eq!(json["format_version"], 1);
        assert_eq!(first["bits"], 10_001);
        assert_eq!(first["errors"], 500);
        assert_eq!(first["qber"], 0.05);
        assert_eq!(first["seed"], 1);
        assert_eq!(first["model"]["kind"], "iid_exact");
        assert_eq!(first["bob"]["file"], "iid-q05.bob.bin");

        // Re-adding a name replaces it; no temporary files are left behind.
        add_pair(dir.path(), "iid-q05", &b.alice, &b.bob, &b.report).unwrap();
        let m = Manifest::load(dir.path()).unwrap();
        assert_eq!(m.entries.len(), 2);
        assert_eq!(m.get("iid-q05").unwrap().bits(), 4096);
        let leftovers = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn truncated_and_corrupted_files_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let p = pair(1000, ErrorModel::Bernoulli, 3);
        let e = add_pair(dir.path(), "x", &p.alice, &p.bob, &p.report).unwrap();
        let bob_path = dir.path().join("x.bob.bin");
        let mut bytes = fs::read(&bob_path).unwrap();

        fs::write(&bob_path, &bytes[..100]).unwrap();
        match load_pair(dir.path(), &e) {
            Err(DatasetError::SizeMismatch {
                path,
                expected: 125,
                actual: 100,
            }) => assert_eq!(path, bob_path),
            other => panic!("{other:?}"),
        }

        bytes[17] ^= 0x10;
        fs::write(&bob_path, &bytes).unwrap();
        match load_pair(dir.path(), &e) {
            Err(DatasetError::DigestMismatch { expected, .. }) => {
                assert_eq!(expected, e.bob.blake3)
            }
            other => panic!("{other:?}"),
        }

        fs::remove_file(dir.path().join("x.alice.bin")).unwrap();
        assert!(matches!(
            load_pair(dir.path(), &e),
            Err(DatasetError::MissingFile { path }) if path.ends_with("x.alice.bin")
        ));
    }

    #[test]
    fn bad_manifests_are_precise_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Manifest::load(dir.path()),
            Err(DatasetError::MissingFile { .. })
        ));
        assert_eq!(Manifest::load_or_new(dir.path()).unwrap(), Manifest::new());
        let path = dir.path().join(MANIFEST_FILE);
        fs::write(&path, b"{ \"format_version\": 1, \"entries\": [ ").unwrap();
        assert!(matches!(
            Manifest::load(dir.path()),
            Err(DatasetError::BadManifest { .. })
        ));
        fs::write(&path, b"{ \"entries\": [] }").unwrap();
        assert!(matches!(
            Manifest::load(dir.path()),
            Err(DatasetError::BadManifest { .. })
        ));
        fs::write(&path, b"{ \"format_version\": 2, \"entries\": [] }").unwrap();
        assert!(matches!(
            Manifest::load(dir.path()),
            Err(DatasetError::UnsupportedVersion { found: 2, .. })
        ));
        fs::write(
            &path,
            b"{ \"format_version\": 1, \"entries\": [ {\"name\": \"a\"} ] }",
        )
        .unwrap();
        assert!(matches!(
            Manifest::load(dir.path()),
            Err(DatasetError::BadManifest { .. })
        ));
        // A manifest cannot point outside its directory.
        let p = pair(64, ErrorModel::IidExact, 4);
        let mut e = write_pair(dir.path(), "ok", &p.alice, &p.bob, &p.report).unwrap();
        e.alice.file = "../ok.alice.bin".into();
        assert!(matches!(
            load_pair(dir.path(), &e),
            Err(DatasetError::InvalidName { .. })
        ));
        let mut m = Manifest::new();
        e.name = "../evil".into();
        assert!(matches!(
            m.add(e.clone()),
            Err(DatasetError::InvalidName { .. })
        ));
        e.name = "ok".into();
        m.add(e.clone()).unwrap();
        assert!(matches!(
            m.add(e.clone()),
            Err(DatasetError::DuplicateName { .. })
        ));
        m.save(dir.path()).unwrap();
        assert!(matches!(
            load_named(dir.path(), "nope"),
            Err(DatasetError::EntryNotFound { .. })
        ));
        assert!(m.remove("ok").is_some());
    }

    #[test]
    fn write_pair_checks_lengths() {
        let dir = tempfile::tempdir().unwrap();
        let p = pair(100, ErrorModel::IidExact, 5);
        let short = BitBlock::zeros(99);
        assert!(matches!(
            write_pair(dir.path(), "a", &p.alice, &short, &p.report),
            Err(DatasetError::LengthMismatch {
                alice: 100,
                bob: 99,
                report: 100
            })
        ));
    }

    #[test]
    fn bare_key_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.bin");
        // Bits 0, 1 and 9 set: bytes 0x03, 0x02; as 10 bits, byte 1 may only use bits 0-1.
        fs::write(&path, [0x03u8, 0x02]).unwrap();
        let k = read_key_file(&path, Some(10)).unwrap();
        assert_eq!(k.len(), 10);
        assert_eq!(
            k.to_bools(),
            vec![
                true, true, false, false, false, false, false, false, false, true
            ]
        );
        let all = read_key_file(&path, None).unwrap();
        assert_eq!(all.len(), 16);
        assert_eq!(all.count_ones(), 3);
        assert!(matches!(
            read_key_file(&path, Some(9)),
            Err(DatasetError::NonZeroTail { bits: 9, .. })
        ));
        assert!(matches!(
            read_key_file(&path, Some(17)),
            Err(DatasetError::SizeMismatch {
                expected: 3,
                actual: 2,
                ..
            })
        ));
        assert!(matches!(
            read_key_file(&path, Some(0)),
            Err(DatasetError::ZeroBitCount { .. })
        ));
        fs::write(&path, []).unwrap();
        assert!(matches!(
            read_key_file(&path, None),
            Err(DatasetError::EmptyFile { .. })
        ));
        assert!(matches!(
            read_key_file(&dir.path().join("none.bin"), None),
            Err(DatasetError::MissingFile { .. })
        ));
    }
}
