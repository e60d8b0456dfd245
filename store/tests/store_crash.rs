//! Crash safety: a child process (this test binary, re-run with an environment variable) runs
//! append / allocate / fetch loops on a store from several threads and logs what it got *after*
//! it got it; the parent kills it with SIGKILL at random moments, reopens the store and checks:
//! no key ID returned twice to the same slave, no key material under two key IDs, every
//! committed key still retrievable exactly once per slave, counts equal to the ledger.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use qkd_core::rng::{OsRandom, RandomSource, SeededRandom};
use qkd_store::{
    AllocateRequest, BlockId, Kek, LedgerEvent, NewBlock, Store, StoreError, StoreOptions,
};
use uuid::Uuid;
use zeroize::Zeroizing;

const CHILD_ENV: &str = "QKD_STORE_CRASH_CHILD";
/// Set (to the KEK in hex) for the encrypted variant, in the child and read by the parent.
const KEK_ENV: &str = "QKD_STORE_CRASH_KEK";
const KEK_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn options(encrypted: bool) -> StoreOptions {
    StoreOptions {
        encryption: encrypted.then(|| Kek::parse(KEK_HEX).unwrap()),
        ..StoreOptions::default()
    }
}
const SLAVES: [&str; 2] = ["S1", "S2"];

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The child's body: runs until killed.
fn child(dir: &Path, log: &Path) {
    let encrypted = std::env::var_os(KEK_ENV).is_some();
    let store = Arc::new(Store::open_with(dir, options(encrypted)).expect("child opens the store"));
    let log = Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log"),
    ));
    let put = |log: &Mutex<std::fs::File>, line: String| {
        // One write per line; the page cache survives SIGKILL.
        log.lock().unwrap().write_all(line.as_bytes()).unwrap();
    };
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (store, log) = (Arc::clone(&store), Arc::clone(&log));
            std::thread::spawn(move || {
                let mut rng = SeededRandom::from_seed(OsRandom.seed32().unwrap());
                loop {
                    let avail = store.link_status("L").unwrap().bits_available;
                    if avail < 8192 || rng.below(8) == 0 {
                        let mut m = vec![0u8; 1024 + rng.below(4096) as usize];
                        rng.bytes(&mut m);
                        let id = format!("t{t}-{}", hex(&rng.u64().to_le_bytes()));
                        let b =
                            NewBlock::from_bytes("L", BlockId::new(id).unwrap(), Zeroizing::new(m));
                        store.append(b).unwrap();
                    }
                    let n = 1 + rng.below(4) as usize;
                    let size = 8 * (1 + rng.below(64) as u32);
                    let exp = SystemTime::now() + Duration::from_secs(3600);
                    let req =
                        AllocateRequest::new("L", "M", &SLAVES, n, size, exp).recipients(&SLAVES);
                    let keys = match store.allocate(&req) {
                        Ok(k) => k,
                        Err(StoreError::InsufficientKeyMaterial { .. }) => continue,
                        Err(e) => panic!("{e}"),
                    };
                    let ids: Vec<Uuid> = keys.iter().map(|k| k.key_id).collect();
                    put(
                        &log,
                        format!(
                            "ALLOC {}\n",
                            ids.iter()
                                .map(Uuid::to_string)
                                .collect::<Vec<_>>()
                                .join(" ")
                        ),
                    );
                    let order = if rng.below(2) == 0 { [0, 1] } else { [1, 0] };
                    for s in order {
                        if rng.below(6) == 0 {
                            continue; // leave some for the parent
                        }
                        let got = store.fetch(&ids, SLAVES[s]).unwrap();
                        let mut line = String::new();
                        for k in &got {
                            line.push_str(&format!(
                                "FETCH {} {} {}\n",
                                SLAVES[s],
                                k.key_id(),
                                hex(k.bytes())
                            ));
                        }
                        put(&log, line);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

#[test]
fn crash_child_entry() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let dir = Path::new(&dir);
        child(&dir.join("store"), &dir.join("log"));
    }
}

#[derive(Default)]
struct Seen {
    /// (slave, key) -> bytes delivered (to the child or the parent).
    delivered: HashMap<(String, Uuid), Vec<u8>>,
    /// bytes -> key
    owner: HashMap<Vec<u8>, Uuid>,
}

impl Seen {
    fn record(&mut self, slave: &str, id: Uuid, bytes: Vec<u8>) {
        let prev = self.delivered.insert((slave.to_owned(), id), bytes.clone());
        assert!(prev.is_none(), "key {id} returned twice to {slave}");
        // Short keys collide by chance (8 bits: 1 in 256); from 64 bits on a repeat means
        // the same material was handed out twice.
        if bytes.len() < 8 {
            return;
        }
        match self.owner.get(&bytes) {
            Some(o) => assert_eq!(*o, id, "the same material under keys {o} and {id}"),
            None => {
                self.owner.insert(bytes, id);
            }
        }
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn sigkill_never_delivers_twice_or_loses_a_key() {
    sigkill_rounds(false);
}

#[test]
fn sigkill_encrypted_never_delivers_twice_or_loses_a_key() {
    sigkill_rounds(true);
}

fn sigkill_rounds(encrypted: bool) {
    let work = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = SeededRandom::from_u64(0x5eed);
    let mut seen = Seen::default();
    let mut logged_lines = 0usize;
    let mut fetched_by_child = 0usize;
    let iterations = 24;
    let mut ledger_from = 0u64;
    let mut fetched: HashSet<(String, Uuid)> = HashSet::new();
    let mut all_reserved: HashSet<Uuid> = HashSet::new();
    let (mut bits, mut consumed, mut deliveries) = (0u64, 0u64, 0u64);
    for _ in 0..iterations {
        let mut cmd = Command::new(&exe);
        cmd.args([
            "crash_child_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, work.path())
        .env_remove(KEK_ENV)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if encrypted {
            cmd.env(KEK_ENV, KEK_HEX);
        }
        let mut child = cmd.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(40 + rng.below(260)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        // What the child says it got, complete lines only, new since the last round.
        let text = std::fs::read_to_string(work.path().join("log")).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |i| &text[..=i]);
        let lines: Vec<&str> = complete.lines().collect();
        let mut alloc_logged = HashSet::new();
        for line in &lines[logged_lines..] {
            let mut f = line.split(' ');
            match f.next() {
                Some("ALLOC") => alloc_logged.extend(f.map(|s| Uuid::parse_str(s).unwrap())),
                Some("FETCH") => {
                    let (s, id, b) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
                    seen.record(s, Uuid::parse_str(id).unwrap(), unhex(b));
                    fetched_by_child += 1;
                }
                _ => panic!("bad log line {line:?}"),
            }
        }
        logged_lines = lines.len();
        // Truncate a torn last line so the next child appends cleanly.
        if complete.len() != text.len() {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(work.path().join("log"))
                .unwrap();
            f.set_len(complete.len() as u64).unwrap();
        }

        // Reopen and check against the ledger.
        let store = Store::open_with(work.path().join("store"), options(encrypted)).unwrap();
        let ledger = store.ledger(ledger_from, usize::MAX).unwrap();
        let mut reserved: Vec<Uuid> = Vec::new();
        for e in &ledger {
            assert_eq!(e.seq, ledger_from, "ledger sequence has a gap");
            ledger_from += 1;
            match &e.event {
                LedgerEvent::BlockAppended { len_bits, .. } => bits += len_bits,
                LedgerEvent::KeysReserved { key_ids, .. } => reserved.extend(key_ids),
                LedgerEvent::KeysFetched {
                    recipient,
                    key_ids,
                    consumed: c,
                } => {
                    for id in key_ids {
                        assert!(
                            fetched.insert((recipient.clone(), *id)),
                            "ledger: {id} twice"
                        );
                    }
                    deliveries += key_ids.len() as u64;
                    consumed += c.len() as u64;
                }
                _ => {}
            }
        }
        all_reserved.extend(reserved.iter().copied());
        assert!(
            alloc_logged.is_subset(&all_reserved),
            "an allocation the child saw was lost"
        );
        for (s, id) in seen.delivered.keys() {
            assert!(
                fetched.contains(&(s.clone(), *id)),
                "a delivery the child saw was lost"
            );
        }
        let st = store.link_status("L").unwrap();
        assert_eq!(st.bits_appended, bits);
        assert_eq!(st.keys_allocated, all_reserved.len() as u64);
        assert_eq!(st.deliveries, deliveries);
        assert_eq!(st.keys_consumed, consumed);
        // Every committed key: retrievable exactly once per slave that has not had it.
        for id in &reserved {
            for s in SLAVES {
                let r = store.fetch(&[*id], s);
                if fetched.contains(&(s.to_owned(), *id)) {
                    assert!(
                        matches!(r, Err(StoreError::AlreadyFetched { .. })),
                        "{id} {s}: {r:?}"
                    );
                } else {
                    let k = r.unwrap_or_else(|e| panic!("committed key {id} lost for {s}: {e}"));
                    seen.record(s, *id, k[0].bytes().to_vec());
                    assert!(matches!(
                        store.fetch(&[*id], s),
                        Err(StoreError::AlreadyFetched { .. })
                    ));
                }
            }
            // Both slaves got the same bytes whenever both were seen.
            if let (Some(a), Some(b)) = (
                seen.delivered.get(&("S1".to_owned(), *id)),
                seen.delivered.get(&("S2".to_owned(), *id)),
            ) {
                assert_eq!(a, b);
            }
        }
        let st = store.link_status("L").unwrap();
        assert_eq!(st.keys_live, 0);
    }
    eprintln!(
        "{iterations} kills: {} keys committed, {fetched_by_child} deliveries seen by the child, {} in total",
        all_reserved.len(),
        seen.delivered.len()
    );
    // The loop really exercised the store.
    assert!(
        fetched_by_child > 50,
        "the child fetched only {fetched_by_child} keys"
    );
}
