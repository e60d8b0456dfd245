//! Encryption at rest: segment bytes are ciphertext, index digests are keyed, the store works
//! the same through the API, and a missing, wrong or unexpected KEK is refused.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use qkd_store::{
    AllocateRequest, BlockFilter, BurnScope, Kek, KekError, OpenError, ReserveRequest, Store,
    StoreError, StoreOptions,
};

fn kek(seed: u8) -> Kek {
    Kek::from_bytes(&[seed; 32])
}

fn enc(k: Kek) -> StoreOptions {
    StoreOptions {
        encryption: Some(k),
        ..StoreOptions::default()
    }
}

/// Whether any 32-byte window of `needle` occurs in `hay`.
fn contains_window(hay: &[u8], needle: &[u8]) -> bool {
    needle.windows(32).any(|w| hay.windows(32).any(|h| h == w))
}

fn all_segment_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir.join("segments")).unwrap() {
        out.extend(std::fs::read(e.unwrap().path()).unwrap());
    }
    out
}

#[test]
fn segments_hold_no_material_and_the_index_no_plain_digest() {
    let m = material(1, 4096);
    let digest = blake3::hash(&m);
    for encrypted in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = if encrypted {
            Store::open_with(dir.path(), enc(kek(7))).unwrap()
        } else {
            Store::open(dir.path()).unwrap()
        };
        append(&store, "L", "b0", &m);
        assert_eq!(store.status().unwrap().encrypted_at_rest, encrypted);
        drop(store);
        let segs = all_segment_bytes(dir.path());
        assert_eq!(segs.len(), m.len());
        // The search finds the material in a plain store, so it would find it if it leaked.
        assert_eq!(
            contains_window(&segs, &m),
            !encrypted,
            "encrypted: {encrypted}"
        );
        let index = std::fs::read(dir.path().join("index.redb")).unwrap();
        assert_eq!(
            index.windows(32).any(|w| w == digest.as_bytes()),
            !encrypted,
            "plain BLAKE3 of the block in the index (encrypted: {encrypted})"
        );
    }
}

#[test]
fn encrypted_round_trip_allocate_reserve_fetch_reopen() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let m0 = material(2, 300);
    let m1 = material(3, 300);
    let ids;
    {
        let a = Store::open_with(
            da.path(),
            StoreOptions {
                segment_max_bytes: 400,
                ..enc(kek(1))
            },
        )
        .unwrap();
        let b = Store::open_with(db.path(), enc(kek(2))).unwrap();
        for s in [&a, &b] {
            append(s, "P", "b0", &m0);
            append(s, "P", "b1", &m1);
        }
        // Keys spanning both blocks (and, at A, two segments).
        let req =
            AllocateRequest::new("P", "MA", &["SB"], 3, 1600, later()).filter(BlockFilter::all());
        let keys = a.allocate(&req).unwrap();
        assert!(keys.iter().any(|k| k.material.len() == 2));
        b.reserve_exact(&ReserveRequest {
            link: "P".into(),
            master: "MA".into(),
            slaves: vec!["SB".into()],
            recipients: vec!["SB".into()],
            expires_at: later(),
            keys: keys.clone(),
            peer_filter: BlockFilter::all(),
            actor: "A".into(),
        })
        .unwrap();
        ids = keys.iter().map(|k| k.key_id).collect::<Vec<_>>();
        let ka = a.fetch(&ids[..1], "MA").unwrap();
        let kb = b.fetch(&ids[..1], "SB").unwrap();
        let mut whole = m0.clone();
        whole.extend_from_slice(&m1);
        assert_eq!(ka[0].bytes(), &whole[..200]);
        assert_eq!(ka[0].bytes(), kb[0].bytes());
    }
    // After reopening (segment keys unwrapped from the index) the rest is served.
    let a = Store::open_with(da.path(), enc(kek(1))).unwrap();
    let got = a.fetch(&ids[1..], "MA").unwrap();
    let mut whole = m0.clone();
    whole.extend_from_slice(&m1);
    assert_eq!(got[0].bytes(), &whole[200..400]);
    assert_eq!(got[1].bytes(), &whole[400..600]);
    assert!(matches!(
        a.fetch(&ids[..1], "MA"),
        Err(StoreError::AlreadyFetched { .. })
    ));
}

#[test]
fn encrypted_damage_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let id;
    {
        let s = Store::open_with(dir.path(), enc(kek(3))).unwrap();
        append(&s, "L", "b0", &material(4, 64));
        id = s
            .allocate(&AllocateRequest::new("L", "M", &[], 1, 256, later()))
            .unwrap()[0]
            .key_id;
    }
    let seg = dir.path().join("segments/0000000000000000.seg");
    let mut b = std::fs::read(&seg).unwrap();
    b[5] ^= 1;
    std::fs::write(&seg, b).unwrap();
    let s = Store::open_with(dir.path(), enc(kek(3))).unwrap();
    assert!(matches!(s.fetch(&[id], "M"), Err(StoreError::Damaged(_))));
}

#[test]
fn missing_wrong_or_unexpected_kek_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open_with(dir.path(), enc(kek(5))).unwrap();
        append(&s, "L", "b0", &material(5, 64));
    }
    assert!(matches!(
        Store::open(dir.path()),
        Err(OpenError::EncryptionKeyRequired { .. })
    ));
    assert!(matches!(
        Store::open_with(dir.path(), enc(kek(6))),
        Err(OpenError::WrongEncryptionKey { .. })
    ));
    Store::open_with(dir.path(), enc(kek(5))).unwrap();
    let plain = tempfile::tempdir().unwrap();
    drop(Store::open(plain.path()).unwrap());
    assert!(matches!(
        Store::open_with(plain.path(), enc(kek(5))),
        Err(OpenError::NotEncrypted { .. })
    ));
}

#[test]
fn kek_from_file_and_env() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = [0x5au8; 32];
    let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
    let b64 = "WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlo=";
    let store_dir = dir.path().join("s");
    drop(Store::open_with(&store_dir, enc(Kek::from_bytes(&bytes))).unwrap());
    let file = |name: &str, content: &[u8], mode: u32| {
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    };
    for (name, content) in [
        ("raw", bytes.to_vec()),
        ("hex", format!("{hex}\n").into_bytes()),
        ("b64", format!("  {b64}\n").into_bytes()),
        (
            "b64-unpadded",
            b64.trim_end_matches('=').as_bytes().to_vec(),
        ),
    ] {
        let k = Kek::from_file(file(name, &content, 0o400)).unwrap();
        drop(Store::open_with(&store_dir, enc(k)).unwrap_or_else(|e| panic!("{name}: {e}")));
    }
    assert!(matches!(
        Kek::from_file(file("open", &bytes, 0o644)),
        Err(KekError::Permissions { mode: 0o644, .. })
    ));
    assert!(matches!(
        Kek::from_file(file("short", b"00ff", 0o600)),
        Err(KekError::Format { .. })
    ));
    assert!(matches!(
        Kek::from_file(dir.path().join("none")),
        Err(KekError::Io { .. })
    ));
    // SAFETY: set before any thread of this test reads the environment; no other test in this
    // binary touches the environment.
    unsafe { std::env::set_var("QKD_TEST_STORE_KEK", &hex) };
    let k = Kek::from_env("QKD_TEST_STORE_KEK").unwrap();
    drop(Store::open_with(&store_dir, enc(k)).unwrap());
    assert!(matches!(
        Kek::from_env("QKD_TEST_STORE_KEK_UNSET"),
        Err(KekError::EnvMissing(_))
    ));
    assert!(Kek::parse("not a key").is_err());
    let dbg = format!("{:?}", Kek::from_bytes(&bytes));
    assert!(!dbg.contains("90") && !dbg.contains("5a"), "{dbg}");
    let opts = format!("{:?}", enc(Kek::from_bytes(&bytes)));
    assert!(!opts.contains("90,") && !opts.contains("5a"), "{opts}");
}

#[test]
fn encrypted_burn_after_restore() {
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("index.backup");
    {
        let s = Store::open_with(dir.path(), enc(kek(9))).unwrap();
        append(&s, "L", "b0", &material(6, 128));
    }
    std::fs::copy(dir.path().join("index.redb"), &backup).unwrap();
    {
        let s = Store::open_with(dir.path(), enc(kek(9))).unwrap();
        let k = s
            .allocate(&AllocateRequest::new("L", "M", &[], 1, 256, later()))
            .unwrap();
        s.fetch(&[k[0].key_id], "M").unwrap();
    }
    std::fs::copy(&backup, dir.path().join("index.redb")).unwrap();
    assert!(matches!(
        Store::open_with(dir.path(), enc(kek(9))),
        Err(OpenError::RolledBack { .. })
    ));
    assert!(matches!(
        Store::burn_after_restore(dir.path(), StoreOptions::default(), &BurnScope::AllLinks),
        Err(OpenError::EncryptionKeyRequired { .. })
    ));
    let r = Store::burn_after_restore(dir.path(), enc(kek(9)), &BurnScope::AllLinks).unwrap();
    assert!(r.rollback_detected);
    assert_eq!(r.links[0].bits_burned, 1024);
    let s = Store::open_with(dir.path(), enc(kek(9))).unwrap();
    assert!(matches!(
        s.allocate(&AllocateRequest::new("L", "M", &[], 1, 8, later())),
        Err(StoreError::InsufficientKeyMaterial { .. })
    ));
}
