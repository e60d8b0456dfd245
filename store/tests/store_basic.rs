//! Functional tests of the key store: allocation, fetch, peer reservation, expiry, import,
//! overwriting, reclamation, damaged data.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::*;
use qkd_core::rng::SeededRandom;
use qkd_store::{
    AllocateRequest, BlockFilter, BlockId, DestroyReason, ImportOutcome, KeyAllocation, KeyState,
    LedgerEvent, OpenError, ReserveRequest, Store, StoreError, StoreOptions, import_cor_files,
};

/// The key bytes a material address names, computed from the appended blocks by hand.
fn expected(blocks: &[(&str, &[u8])], alloc: &KeyAllocation) -> Vec<u8> {
    let mut out = Vec::new();
    for m in &alloc.material {
        let (_, bytes) = blocks
            .iter()
            .find(|(id, _)| *id == m.block_id.as_str())
            .unwrap();
        let (s, l) = ((m.bit_offset / 8) as usize, (m.bit_len / 8) as usize);
        out.extend_from_slice(&bytes[s..s + l]);
    }
    out
}

fn opts(seed: u64) -> StoreOptions {
    StoreOptions {
        random: Box::new(SeededRandom::from_u64(seed)),
        ..StoreOptions::default()
    }
}

#[test]
fn store_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Store>();
}

#[test]
fn allocate_fetch_single_use_per_slave() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), opts(1)).unwrap();
    let b0 = material(10, 100);
    append(&store, "KME_B", "b0", &b0);
    let req = AllocateRequest::new("KME_B", "SAE_A", &["SAE_B", "SAE_C"], 3, 256, later())
        .recipients(&["SAE_B", "SAE_C"]);
    let keys = store.allocate(&req).unwrap();
    assert_eq!(keys.len(), 3);
    // In append order, back to back: 0..256, 256..512, 512..768.
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(k.material.len(), 1);
        assert_eq!(k.material[0].bit_offset, 256 * i as u64);
        assert_eq!(k.material[0].bit_len, 256);
        assert_eq!(k.key_id.get_version_num(), 4);
    }
    let ids: Vec<_> = keys.iter().map(|k| k.key_id).collect();
    let got_b = store.fetch(&ids, "SAE_B").unwrap();
    for (k, a) in got_b.iter().zip(&keys) {
        assert_eq!(
            k.bytes(),
            &b0[(a.material[0].bit_offset / 8) as usize..][..32]
        );
        assert!(!format!("{k:?}").contains(&format!("{:?}", &k.bytes()[..4])));
    }
    assert!(matches!(
        store.fetch(&ids[..1], "SAE_B"),
        Err(StoreError::AlreadyFetched { .. })
    ));
    assert!(matches!(
        store.fetch(&ids[..1], "SAE_A"),
        Err(StoreError::NotARecipient { .. })
    ));
    assert_eq!(
        store.key_info(ids[0]).unwrap().unwrap().state,
        KeyState::Reserved
    );
    // All or nothing: a batch with one bad ID delivers nothing.
    let mut mixed = ids.clone();
    mixed.push(uuid::Uuid::from_u128(7));
    assert!(matches!(
        store.fetch(&mixed, "SAE_C"),
        Err(StoreError::UnknownKey(_))
    ));
    let got_c = store.fetch(&ids, "SAE_C").unwrap();
    for (x, y) in got_b.iter().zip(&got_c) {
        assert_eq!(x.bytes(), y.bytes());
    }
    assert_eq!(
        store.key_info(ids[0]).unwrap().unwrap().state,
        KeyState::Consumed
    );
    assert!(matches!(
        store.fetch(&ids[..1], "SAE_C"),
        Err(StoreError::AlreadyFetched { .. })
    ));
    let s = store.link_status("KME_B").unwrap();
    assert_eq!(
        (s.bits_appended, s.bits_used, s.bits_available),
        (800, 768, 32)
    );
    assert_eq!(
        (s.keys_allocated, s.deliveries, s.keys_consumed, s.keys_live),
        (3, 6, 3, 0)
    );
}

#[test]
fn insufficient_material_spends_nothing_and_keys_span_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), opts(2)).unwrap();
    let blocks: Vec<(String, Vec<u8>)> =
        (0..4).map(|i| (format!("b{i}"), material(i, 5))).collect();
    for (id, b) in &blocks {
        append(&store, "L", id, b);
    }
    let view: Vec<(&str, &[u8])> = blocks
        .iter()
        .map(|(i, b)| (i.as_str(), b.as_slice()))
        .collect();
    // 160 bits in total: 3 keys of 64 bits need 192.
    let err = store
        .allocate(&AllocateRequest::new("L", "M", &["S"], 3, 64, later()))
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::InsufficientKeyMaterial {
            requested_bits: 192,
            available_bits: 160,
            ..
        }
    ));
    assert_eq!(store.link_status("L").unwrap().bits_used, 0);
    let keys = store
        .allocate(&AllocateRequest::new("L", "M", &["S"], 2, 64, later()))
        .unwrap();
    assert_eq!(keys[0].material.len(), 2); // b0[0..40] + b1[0..24]
    assert_eq!(keys[1].material.len(), 3); // b1[24..40] + b2[0..40] + b3[0..8]
    assert_eq!(keys[1].material[0].bit_offset, 24);
    let ids: Vec<_> = keys.iter().map(|k| k.key_id).collect();
    let got = store.fetch(&ids, "M").unwrap();
    for (k, a) in got.iter().zip(&keys) {
        assert_eq!(k.bytes(), expected(&view, a).as_slice());
    }
    assert!(matches!(
        store.allocate(&AllocateRequest::new("L", "M", &["S"], 1, 40, later())),
        Err(StoreError::InsufficientKeyMaterial {
            available_bits: 32,
            ..
        })
    ));
    for bad in [0u32, 12, (1 << 20) + 8] {
        assert!(matches!(
            store.allocate(&AllocateRequest::new("L", "M", &["S"], 1, bad, later())),
            Err(StoreError::InvalidRequest(_))
        ));
    }
}

#[test]
fn two_kmes_reserve_exact_in_both_directions() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Store::open_with(da.path(), opts(3)).unwrap();
    let b = Store::open_with(db.path(), opts(4)).unwrap();
    for i in 0..16 {
        let m = material(100 + i, 64);
        append(&a, "KME_B", &format!("blk{i}"), &m);
        append(&b, "KME_A", &format!("blk{i}"), &m);
    }
    let (fa, fb) = (
        BlockFilter::split("KME_A", "KME_B"),
        BlockFilter::split("KME_B", "KME_A"),
    );
    for i in 0..16 {
        let id = BlockId::new(format!("blk{i}")).unwrap();
        assert_ne!(fa.allows(&id), fb.allows(&id));
    }
    // A -> B: A allocates for SAE_1 (master) / SAE_2, B reserves exactly that.
    let ka = a
        .allocate(
            &AllocateRequest::new("KME_B", "SAE_1", &["SAE_2"], 4, 256, later()).filter(fa.clone()),
        )
        .unwrap();
    let rb = ReserveRequest {
        link: "KME_A".into(),
        master: "SAE_1".into(),
        slaves: vec!["SAE_2".into()],
        recipients: vec!["SAE_2".into()],
        expires_at: later(),
        keys: ka.clone(),
        peer_filter: fa.clone(),
        actor: "KME_A".into(),
    };
    b.reserve_exact(&rb).unwrap();
    // B -> A at the same time, from the other blocks.
    let kb = b
        .allocate(
            &AllocateRequest::new("KME_A", "SAE_3", &["SAE_4"], 4, 256, later()).filter(fb.clone()),
        )
        .unwrap();
    let ra = ReserveRequest {
        link: "KME_B".into(),
        master: "SAE_3".into(),
        slaves: vec!["SAE_4".into()],
        recipients: vec!["SAE_4".into()],
        expires_at: later(),
        keys: kb.clone(),
        peer_filter: fb.clone(),
        actor: "KME_B".into(),
    };
    a.reserve_exact(&ra).unwrap();
    let ids = |k: &[KeyAllocation]| k.iter().map(|k| k.key_id).collect::<Vec<_>>();
    let (x, y) = (
        a.fetch(&ids(&ka), "SAE_1").unwrap(),
        b.fetch(&ids(&ka), "SAE_2").unwrap(),
    );
    let (u, v) = (
        b.fetch(&ids(&kb), "SAE_3").unwrap(),
        a.fetch(&ids(&kb), "SAE_4").unwrap(),
    );
    for (p, q) in x.iter().zip(&y).chain(u.iter().zip(&v)) {
        assert_eq!(p.key_id(), q.key_id());
        assert_eq!(p.bytes(), q.bytes());
    }
    assert_ne!(x[0].bytes(), u[0].bytes());
    // Reserving the same material again (fresh IDs) is refused, spending nothing.
    let before = b.link_status("KME_A").unwrap();
    let mut again = rb.clone();
    for k in &mut again.keys {
        k.key_id = uuid::Uuid::from_u128(u128::from(k.size_bits) + 99);
    }
    again.keys.truncate(1);
    assert!(matches!(
        b.reserve_exact(&again),
        Err(StoreError::MaterialUnavailable { .. })
    ));
    // Reusing a key ID is refused.
    assert!(matches!(
        b.reserve_exact(&rb),
        Err(StoreError::DuplicateKeyId(_))
    ));
    // Material on a block the peer may not allocate from is refused.
    let mut wrong = rb.clone();
    wrong.keys = vec![KeyAllocation {
        key_id: uuid::Uuid::from_u128(5),
        size_bits: 8,
        material: vec![qkd_store::MaterialRange {
            block_id: kb[0].material[0].block_id.clone(),
            bit_offset: 504,
            bit_len: 8,
        }],
    }];
    assert!(matches!(
        b.reserve_exact(&wrong),
        Err(StoreError::MaterialUnavailable { .. })
    ));
    assert_eq!(b.link_status("KME_A").unwrap(), before);
}

#[test]
fn expiry_destroys_and_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), opts(5)).unwrap();
    let m = material(7, 64);
    append(&store, "L", "b", &m);
    let k = store
        .allocate(&AllocateRequest::new("L", "M", &["S"], 2, 128, later()))
        .unwrap();
    assert_eq!(store.expire(SystemTime::now()).unwrap(), 0);
    assert_eq!(store.expire(later() + Duration::from_secs(1)).unwrap(), 2);
    assert!(matches!(
        store.fetch(&[k[0].key_id], "M"),
        Err(StoreError::Destroyed(_))
    ));
    let s = store.link_status("L").unwrap();
    assert_eq!((s.keys_destroyed, s.keys_live), (2, 0));
    let ledger = store.ledger(0, 100).unwrap();
    assert!(ledger.iter().any(|e| matches!(
        &e.event,
        LedgerEvent::KeysDestroyed { reason: DestroyReason::Expired, key_ids } if key_ids.len() == 2
    )));
    drop(store);
    // The destroyed material is zeros on disk; the rest is intact.
    let seg = std::fs::read(dir.path().join("segments/0000000000000000.seg")).unwrap();
    assert!(seg[..32].iter().all(|&b| b == 0));
    assert_eq!(&seg[32..], &m[32..]);
}

#[test]
fn state_survives_reopen_and_ledger_matches_counts() {
    let dir = tempfile::tempdir().unwrap();
    let ids;
    {
        let store = Store::open_with(dir.path(), opts(6)).unwrap();
        append(&store, "L", "b0", &material(1, 256));
        let k = store
            .allocate(&AllocateRequest::new("L", "M", &["S"], 5, 64, later()).recipients(&["S"]))
            .unwrap();
        ids = k.iter().map(|k| k.key_id).collect::<Vec<_>>();
        store.fetch(&ids[..2], "S").unwrap();
    }
    let store = Store::open_with(dir.path(), opts(7)).unwrap();
    assert!(matches!(
        store.fetch(&ids[..1], "S"),
        Err(StoreError::AlreadyFetched { .. })
    ));
    assert_eq!(store.fetch(&ids[2..], "S").unwrap().len(), 3);
    let s = store.link_status("L").unwrap();
    let ledger = store.ledger(0, 1000).unwrap();
    let (mut reserved, mut consumed, mut bits) = (0, 0, 0);
    for (i, e) in ledger.iter().enumerate() {
        assert_eq!(e.seq, i as u64);
        match &e.event {
            LedgerEvent::BlockAppended { len_bits, .. } => bits += len_bits,
            LedgerEvent::KeysReserved { key_ids, .. } => reserved += key_ids.len() as u64,
            LedgerEvent::KeysFetched { consumed: c, .. } => consumed += c.len() as u64,
            _ => {}
        }
    }
    assert_eq!(
        (bits, reserved, consumed),
        (s.bits_appended, s.keys_allocated, s.keys_consumed)
    );
    assert_eq!(store.status().unwrap().ledger_entries, ledger.len() as u64);
    // A second handle on the same directory is refused.
    assert!(matches!(
        Store::open(dir.path()),
        Err(OpenError::Locked { .. })
    ));
}

#[test]
fn owner_records_are_durable_ledger_entries_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open_with(dir.path(), opts(8)).unwrap();
        store
            .record("KME_A", "KME_B", "reseed HSM main", Ok("32 bytes"))
            .unwrap();
        store
            .record("KME_A", "", "reseed HSM spare", Err("PIN is incorrect"))
            .unwrap();
        let long = "x".repeat(5000);
        assert!(matches!(
            store.record("KME_A", "", "reseed", Err(&long)),
            Err(StoreError::InvalidRequest(_))
        ));
        assert!(matches!(
            store.record("", "", "reseed", Ok("")),
            Err(StoreError::InvalidRequest(_))
        ));
    }
    let store = Store::open_with(dir.path(), opts(9)).unwrap();
    let ledger = store.ledger(0, 100).unwrap();
    let recorded: Vec<_> = ledger
        .iter()
        .filter_map(|e| match &e.event {
            LedgerEvent::Recorded { what, ok, detail } => Some((
                e.actor.as_str(),
                e.link.as_str(),
                what.as_str(),
                *ok,
                detail.as_str(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        recorded,
        [
            ("KME_A", "KME_B", "reseed HSM main", true, "32 bytes"),
            ("KME_A", "", "reseed HSM spare", false, "PIN is incorrect"),
        ]
    );
}

#[test]
fn spent_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        dir.path(),
        StoreOptions {
            segment_max_bytes: 64,
            ..opts(8)
        },
    )
    .unwrap();
    for i in 0..4 {
        append(&store, "L", &format!("b{i}"), &material(i, 64));
    }
    let count = || {
        std::fs::read_dir(dir.path().join("segments"))
            .unwrap()
            .count()
    };
    assert_eq!(count(), 4);
    let k = store
        .allocate(&AllocateRequest::new("L", "M", &[], 3, 512, later()))
        .unwrap();
    let ids: Vec<_> = k.iter().map(|k| k.key_id).collect();
    store.fetch(&ids, "M").unwrap();
    // Three sealed segments fully consumed are gone; the active one stays. (Files are removed
    // after the commit is answered: drop the store to wait for its writer.)
    assert_eq!(store.status().unwrap().segments, 1);
    drop(store);
    assert_eq!(count(), 1);
}

#[test]
fn concurrent_callers_never_share_material() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    append(&store, "L", "b", &material(9, 32 * 400));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let s = Arc::clone(&store);
            std::thread::spawn(move || {
                let mut out = Vec::new();
                for _ in 0..50 {
                    let k = s
                        .allocate(&AllocateRequest::new("L", "M", &["S"], 1, 256, later()))
                        .unwrap();
                    let got = s.fetch(&[k[0].key_id], "M").unwrap();
                    out.push(got[0].bytes().to_vec());
                }
                out
            })
        })
        .collect();
    let mut all: Vec<Vec<u8>> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 400);
    assert!(matches!(
        store.allocate(&AllocateRequest::new("L", "M", &["S"], 1, 8, later())),
        Err(StoreError::InsufficientKeyMaterial { .. })
    ));
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn cor_import_is_ordered_and_idempotent() {
    let files = tempfile::tempdir().unwrap();
    let (p1, p2) = (files.path().join("0002.cor"), files.path().join("0001.cor"));
    write(&p1, &material(1, 40));
    write(&p2, &material(2, 40));
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Store::open_with(da.path(), opts(1)).unwrap();
    let b = Store::open_with(db.path(), opts(2)).unwrap();
    let ra = import_cor_files(&a, "B", &[p1.clone(), p2.clone()]).unwrap();
    let rb = import_cor_files(&b, "A", &[p2.clone(), p1.clone()]).unwrap();
    assert_eq!(ra.files[0].0, p2);
    assert_eq!(rb.files[0].0, p2);
    let again = import_cor_files(&a, "B", std::slice::from_ref(&p1)).unwrap();
    assert!(matches!(
        again.files[0].1,
        ImportOutcome::AlreadyPresent { .. }
    ));
    assert_eq!(a.link_status("B").unwrap().blocks, 2);
    // Same name, different bytes: refused.
    let other = tempfile::tempdir().unwrap();
    let p3 = other.path().join("0001.cor");
    write(&p3, &material(3, 40));
    assert!(import_cor_files(&a, "B", &[p3]).is_err());
    // Both sides allocate identical keys from the imported blocks, in name order.
    let ka = a
        .allocate(&AllocateRequest::new("B", "M", &[], 1, 320, later()))
        .unwrap();
    assert_eq!(ka[0].material[0].block_id.as_str(), "0001.cor");
    let got = a.fetch(&[ka[0].key_id], "M").unwrap();
    assert_eq!(got[0].bytes(), material(2, 40).as_slice());
    let status = serde_json::to_string(&a.status().unwrap()).unwrap();
    assert!(status.contains("\"bits_appended\":640"));
}

fn flip(path: &Path, at: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[at as usize] ^= 0x40;
    std::fs::write(path, b).unwrap();
}

#[test]
fn corrupted_segment_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let seg = dir.path().join("segments/0000000000000000.seg");
    let ids;
    {
        let store = Store::open_with(dir.path(), opts(11)).unwrap();
        append(&store, "L", "b0", &material(1, 64));
        append(&store, "L", "b1", &material(2, 64));
        let k = store
            .allocate(&AllocateRequest::new("L", "M", &[], 2, 128, later()))
            .unwrap();
        ids = k.iter().map(|k| k.key_id).collect::<Vec<_>>();
    }
    flip(&seg, 3); // inside the first key
    flip(&seg, 64 + 10); // inside the never-allocated block b1
    let store = Store::open_with(dir.path(), opts(12)).unwrap();
    assert!(matches!(
        store.fetch(&ids[..1], "M"),
        Err(StoreError::Damaged(_))
    ));
    assert_eq!(store.fetch(&ids[1..], "M").unwrap().len(), 1);
    // b0 has 256 bits left, b1 is damaged: asking for more is refused, not served from b1.
    assert!(matches!(
        store.allocate(&AllocateRequest::new("L", "M", &[], 1, 512, later())),
        Err(StoreError::InsufficientKeyMaterial {
            available_bits: 256,
            ..
        })
    ));
    let s = store.link_status("L").unwrap();
    assert_eq!((s.damaged_blocks, s.bits_damaged), (1, 512));
    assert!(
        store
            .ledger(0, 100)
            .unwrap()
            .iter()
            .any(|e| matches!(e.event, LedgerEvent::BlockDamaged { .. }))
    );
}

#[test]
fn truncated_segment_gives_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let seg = dir.path().join("segments/0000000000000000.seg");
    let ids;
    {
        let store = Store::open_with(dir.path(), opts(13)).unwrap();
        append(&store, "L", "b0", &material(1, 64));
        append(&store, "L", "b1", &material(2, 64));
        let k = store
            .allocate(&AllocateRequest::new("L", "M", &[], 2, 256, later()))
            .unwrap();
        ids = k.iter().map(|k| k.key_id).collect::<Vec<_>>();
    }
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(40).unwrap();
    drop(f);
    let store = Store::open_with(dir.path(), opts(14)).unwrap();
    assert!(matches!(
        store.fetch(&ids[1..], "M"),
        Err(StoreError::Damaged(_))
    ));
    assert!(matches!(
        store.allocate(&AllocateRequest::new("L", "M", &[], 1, 8, later())),
        Err(StoreError::InsufficientKeyMaterial { .. })
    ));
    // New material goes to a fresh segment and works.
    append(&store, "L", "b2", &material(3, 64));
    let k = store
        .allocate(&AllocateRequest::new("L", "M", &[], 1, 256, later()))
        .unwrap();
    assert_eq!(
        store.fetch(&[k[0].key_id], "M").unwrap()[0].bytes(),
        &material(3, 64)[..32]
    );
}

#[test]
fn corrupted_index_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open_with(dir.path(), opts(15)).unwrap();
        for i in 0..20 {
            append(&store, "L", &format!("b{i}"), &material(i, 64));
        }
    }
    let index = dir.path().join("index.redb");
    let len = std::fs::metadata(&index).unwrap().len();
    let mut bytes = std::fs::read(&index).unwrap();
    let mut rng = SeededRandom::from_u64(3);
    for _ in 0..64 {
        let at = 4096 + rng.below(len - 4096) as usize;
        bytes[at] ^= 0xff;
    }
    std::fs::write(&index, bytes).unwrap();
    match Store::open(dir.path()) {
        Err(OpenError::CorruptIndex { .. }) | Err(OpenError::Database { .. }) => {}
        Err(e) => panic!("unexpected error kind: {e}"),
        Ok(_) => panic!("a corrupted index opened"),
    }
    // Garbage in place of the index: also an error.
    std::fs::write(&index, material(4, 8192)).unwrap();
    assert!(Store::open(dir.path()).is_err());
}

#[test]
fn expired_reservations_are_destroyed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let id;
    {
        let store = Store::open_with(dir.path(), opts(16)).unwrap();
        append(&store, "L", "b", &material(1, 64));
        let soon = SystemTime::now() + Duration::from_millis(300);
        let k = store
            .allocate(&AllocateRequest::new("L", "M", &[], 1, 256, soon))
            .unwrap();
        id = k[0].key_id;
    }
    std::thread::sleep(Duration::from_millis(400));
    let store = Store::open_with(dir.path(), opts(17)).unwrap();
    assert_eq!(
        store.key_info(id).unwrap().unwrap().state,
        KeyState::Destroyed
    );
    assert!(matches!(
        store.fetch(&[id], "M"),
        Err(StoreError::Destroyed(_))
    ));
    // The destroyed key's material is not handed out again.
    let k = store
        .allocate(&AllocateRequest::new("L", "M", &[], 1, 256, later()))
        .unwrap();
    assert_eq!(k[0].material[0].bit_offset, 256);
}
