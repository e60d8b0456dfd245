//! The durable authentication pool of one link: the pre-shared secret installed at
//! commissioning, then a share of every activated final key, in the order Alice activated them
//! (both KMEs hold the same words at the same positions).
//!
//! On disk it is one private file (`links/auth/<peer>.pool`): the secret, then each share. The
//! ledger holds how many bytes of it are committed (a longer file is an interrupted refill and
//! is cut back) and the **watermark**: words below it may have served and are never used again.
//! The watermark moves ahead of use in steps of [`RESERVE_WORDS`], durably before a lease that
//! needs it is handed out, and the file's words below it are overwritten with zeros, so after a
//! crash no pad can serve twice and no spent pad is left to read. At each connection both sides
//! agree on the larger of their watermarks.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use qkd_core::auth::{AuthError, AuthKeys, AuthLease, KeyPool};
use zeroize::Zeroizing;

use super::ledger::{Counter, Ledger, Refill, private_dir, sync_dir};

/// Words the watermark moves ahead of use (64 words: 8192 bits, a few blocks' worth).
pub(crate) const RESERVE_WORDS: u64 = 64;

/// The pool file and its durable counters.
pub(crate) struct PoolFile {
    path: PathBuf,
    ledger: Arc<Ledger>,
    peer: String,
    watermark: u64,
    bytes: u64,
}

impl std::fmt::Debug for PoolFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolFile")
            .field("path", &self.path)
            .field("watermark", &self.watermark)
            .field("bytes", &self.bytes)
            .finish()
    }
}

/// Opens the pool of `peer` (created from the pre-shared secret at `psk` the first time) and
/// returns the in-memory pool, resumed past the watermark, with its file.
pub(crate) fn open(
    dir: &std::path::Path,
    ledger: Arc<Ledger>,
    peer: &str,
    psk: &std::path::Path,
) -> Result<(KeyPool, Arc<Mutex<PoolFile>>), String> {
    private_dir(dir)?;
    let path = dir.join(format!("{peer}.pool"));
    let mut bytes = ledger.counter(peer, Counter::PoolBytes)?;
    if bytes == 0 {
        let secret = Zeroizing::new(
            fs::read(psk).map_err(|e| format!("authentication secret {}: {e}", psk.display()))?,
        );
        if secret.len() < 1024 {
            return Err(format!(
                "authentication secret {} holds {} bytes; expected at least 1024",
                psk.display(),
                secret.len()
            ));
        }
        super::ledger::write_private(&path, &secret)?;
        bytes = secret.len() as u64;
        ledger.set_counter(peer, Counter::PoolBytes, bytes)?;
    }
    let io = |e: std::io::Error| format!("authentication pool {}: {e}", path.display());
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    if len < bytes {
        return Err(format!(
            "authentication pool {} holds {len} bytes where {bytes} were committed: \
             it was damaged or replaced",
            path.display()
        ));
    }
    if len > bytes {
        // An interrupted refill: its block is activated again.
        f.set_len(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    let mut material = Zeroizing::new(Vec::with_capacity(bytes as usize));
    f.read_to_end(&mut material).map_err(io)?;
    let mut pool = KeyPool::new(&material);
    let watermark = ledger.counter(peer, Counter::Watermark)?;
    pool.discard_below(watermark);
    let mut file = PoolFile {
        path,
        ledger,
        peer: peer.to_string(),
        watermark,
        bytes,
    };
    file.wipe_below(0, watermark)?;
    Ok((pool, Arc::new(Mutex::new(file))))
}

impl PoolFile {
    /// The watermark (in words).
    pub(crate) fn watermark(&self) -> u64 {
        self.watermark
    }

    /// Raises the watermark to at least `position` (durably, before anything below it serves),
    /// and wipes the file's words below it.
    pub(crate) fn raise(&mut self, position: u64) -> Result<(), String> {
        if position <= self.watermark {
            return Ok(());
        }
        let old = self.watermark;
        self.ledger
            .set_counter(&self.peer, Counter::Watermark, position)?;
        self.watermark = position;
        self.wipe_below(old, position)
    }

    fn wipe_below(&mut self, from: u64, to: u64) -> Result<(), String> {
        let start = (from * 16).min(self.bytes);
        let end = (to * 16).min(self.bytes);
        if end <= start {
            return Ok(());
        }
        let io = |e: std::io::Error| format!("wiping {}: {e}", self.path.display());
        let mut f = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(io)?;
        f.seek(SeekFrom::Start(start)).map_err(io)?;
        f.write_all(&vec![0u8; (end - start) as usize])
            .map_err(io)?;
        f.sync_all().map_err(io)
    }

    /// Appends a share to the file (synced) and returns the refill to commit with its block's
    /// activation; the pool in memory is refilled only after that commit.
    pub(crate) fn append(&mut self, share: &[u8], number: u64) -> Result<Refill, String> {
        let io = |e: std::io::Error| format!("authentication pool {}: {e}", self.path.display());
        let mut f = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(io)?;
        f.set_len(self.bytes).map_err(io)?;
        f.seek(SeekFrom::Start(self.bytes)).map_err(io)?;
        f.write_all(share).map_err(io)?;
        f.sync_all().map_err(io)?;
        sync_dir(self.path.parent().unwrap_or(std::path::Path::new(".")))?;
        Ok(Refill {
            number,
            pool_bytes: self.bytes + share.len() as u64,
        })
    }

    /// Records that a refill returned by [`Self::append`] was committed.
    pub(crate) fn committed(&mut self, refill: Refill) {
        self.bytes = refill.pool_bytes;
    }
}

/// The [`AuthKeys`] of a link's sessions: the in-memory pool, whose every lease first moves the
/// durable watermark past the words it takes.
pub(crate) struct DurableAuth {
    pool: KeyPool,
    file: Arc<Mutex<PoolFile>>,
}

impl DurableAuth {
    pub(crate) fn new(pool: KeyPool, file: Arc<Mutex<PoolFile>>) -> Self {
        Self { pool, file }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolFile> {
        self.file.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the lease durable: the watermark passes every word taken so far (and
    /// [`RESERVE_WORDS`] more, so most leases need no write). On failure the lease is dropped
    /// (its words are spent, never reused) and the block fails.
    fn secured(&mut self, lease: AuthLease) -> Result<AuthLease, AuthError> {
        let high = self.pool.high_water();
        let mut file = self.lock();
        if high > file.watermark() {
            file.raise(high + RESERVE_WORDS)
                .map_err(AuthError::Durability)?;
        }
        Ok(lease)
    }
}

impl AuthKeys for DurableAuth {
    fn lease(&mut self) -> Result<AuthLease, AuthError> {
        let lease = self.pool.lease()?;
        self.secured(lease)
    }

    fn lease_at(
        &mut self,
        hash_key_position: u64,
        pad_position: u64,
    ) -> Result<AuthLease, AuthError> {
        let lease = self.pool.lease_at(hash_key_position, pad_position)?;
        self.secured(lease)
    }

    fn retire_hash_key(&mut self, position: u64) {
        self.pool.retire_hash_key(position);
    }

    fn spent_bits(&self) -> usize {
        self.pool.spent_bits()
    }

    fn available_bits(&self) -> usize {
        self.pool.available_bits()
    }

    fn refill(&mut self, key: &[u8]) {
        self.pool.refill(key);
    }

    /// Callers raise the file's watermark first ([`PoolFile::raise`]).
    fn discard_below(&mut self, position: u64) {
        self.pool.discard_below(position);
    }

    fn high_water(&self) -> u64 {
        self.pool.high_water()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Arc<Ledger>, PathBuf) {
        let lab = tempfile::tempdir().unwrap();
        let ledger = Arc::new(Ledger::open(&lab.path().join("links")).unwrap());
        let psk = lab.path().join("psk");
        let secret: Vec<u8> = (0..4096u32).map(|i| (i * 31 + 7) as u8).collect();
        fs::write(&psk, secret).unwrap();
        (lab, ledger, psk)
    }

    #[test]
    fn after_a_restart_no_word_below_the_watermark_serves_and_spent_words_are_wiped() {
        let (lab, ledger, psk) = setup();
        let dir = lab.path().join("links/auth");
        let (pool, file) = open(&dir, ledger.clone(), "B", &psk).unwrap();
        let mut auth = DurableAuth::new(pool, file.clone());
        let first = auth.lease().unwrap();
        let mark = file.lock().unwrap().watermark();
        assert!(
            mark > first.pad_position + 1,
            "the watermark passed the lease"
        );
        assert_eq!(ledger.counter("B", Counter::Watermark).unwrap(), mark);
        // The file's words below the watermark are zero; the rest is the secret.
        let bytes = fs::read(dir.join("B.pool")).unwrap();
        assert!(bytes[..(mark * 16) as usize].iter().all(|&b| b == 0));
        assert_eq!(
            bytes[(mark * 16) as usize],
            ((mark * 16 * 31 + 7) % 256) as u8
        );
        drop(auth);
        // A restart (the same secret file is not read again) resumes past the watermark.
        fs::remove_file(&psk).unwrap();
        let (pool, file) = open(&dir, ledger.clone(), "B", &psk).unwrap();
        let mut auth = DurableAuth::new(pool, file);
        let again = auth.lease().unwrap();
        assert!(again.hash_key_position >= mark && again.pad_position >= mark);
    }

    #[test]
    fn an_interrupted_refill_is_cut_back_and_a_committed_one_is_kept() {
        let (lab, ledger, psk) = setup();
        let dir = lab.path().join("links/auth");
        let (pool, file) = open(&dir, ledger.clone(), "B", &psk).unwrap();
        let before = pool.available_bits();
        let r = file.lock().unwrap().append(&[9u8; 128], 0).unwrap();
        ledger.activate("B", "x#0", Some(r)).unwrap();
        file.lock().unwrap().committed(r);
        // A second share written but never committed (a crash before the ledger's commit).
        file.lock().unwrap().append(&[7u8; 128], 1).unwrap();
        drop(file);
        let (pool, _) = open(&dir, ledger, "B", &psk).unwrap();
        assert_eq!(pool.available_bits(), before + 128 * 8);
        assert_eq!(fs::metadata(dir.join("B.pool")).unwrap().len(), 4096 + 128);
    }

    #[test]
    fn a_short_or_missing_secret_is_refused_with_its_path() {
        let (lab, ledger, _) = setup();
        let short = lab.path().join("short");
        fs::write(&short, [1u8; 100]).unwrap();
        let dir = lab.path().join("links/auth");
        let e = open(&dir, ledger.clone(), "B", &short).unwrap_err();
        assert!(e.contains("100 bytes") && e.contains("short"), "{e}");
        let e = open(&dir, ledger, "C", &lab.path().join("none")).unwrap_err();
        assert!(e.contains("none"), "{e}");
    }
}
