//! Hardening of the store's files: permissions from the first byte, refusal of group/world
//! accessible stores, detection of a rolled-back or swapped index (and the operator's way out),
//! refusal of a store whose index is missing or empty while it has segments.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use qkd_store::{AllocateRequest, BurnScope, OpenError, Store, StoreError, StoreOptions};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn chmod(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

const SEG0: &str = "segments/0000000000000000.seg";

/// Allocates and fetches one key; returns its bytes.
fn take_key(store: &Store, link: &str, bits: u32) -> (uuid::Uuid, Vec<u8>) {
    let k = store
        .allocate(&AllocateRequest::new(link, "M", &[], 1, bits, later()))
        .unwrap();
    let got = store.fetch(&[k[0].key_id], "M").unwrap();
    (k[0].key_id, got[0].bytes().to_vec())
}

#[test]
fn files_and_directories_are_private_from_creation() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("store");
    {
        let store = Store::open(&dir).unwrap();
        append(&store, "L", "b0", &material(1, 64));
    }
    assert_eq!(mode(&dir), 0o700, "store directory");
    assert_eq!(mode(&dir.join("segments")), 0o700, "segments directory");
    assert_eq!(mode(&dir.join("index.redb")), 0o600, "index");
    assert_eq!(mode(&dir.join(SEG0)), 0o600, "segment");
    assert_eq!(mode(&dir.join("epoch")), 0o600, "epoch file");
}

fn refused_for(what: &str, target: &str, m: u32) {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        append(&store, "L", "b0", &material(1, 64));
    }
    let p = if target.is_empty() {
        dir.path().to_path_buf()
    } else {
        dir.path().join(target)
    };
    chmod(&p, m);
    let e = Store::open(dir.path()).expect_err(what);
    assert!(
        matches!(&e, OpenError::InsecurePermissions { path, mode, .. }
            if *path == p && *mode == m),
        "{what}: {e}"
    );
    let msg = e.to_string();
    assert!(msg.contains("chmod -R go-rwx"), "{what}: {msg}");
    assert!(msg.contains(&format!("{m:o}")), "{what}: {msg}");
    // After the fix the store opens.
    chmod(
        &p,
        if target.is_empty() || target == "segments" {
            0o700
        } else {
            0o600
        },
    );
    Store::open(dir.path()).unwrap();
}

#[test]
fn group_or_world_accessible_store_is_refused() {
    refused_for("a 0644 segment", SEG0, 0o644);
    refused_for("a 0644 index", "index.redb", 0o644);
    refused_for("a 0640 epoch file", "epoch", 0o640);
    refused_for("a 0755 segments directory", "segments", 0o755);
    refused_for("a 0755 store directory", "", 0o755);
}

/// A store with some history, a copy of its index at an earlier point, and more history after.
/// Returns (key fetched before the backup, keys fetched after it).
fn store_with_stale_backup(dir: &Path, backup: &Path) -> (uuid::Uuid, Vec<uuid::Uuid>) {
    let store = Store::open(dir).unwrap();
    append(&store, "L", "b0", &material(1, 256));
    append(&store, "L", "b1", &material(2, 256));
    let (before, _) = take_key(&store, "L", 256);
    drop(store);
    std::fs::copy(dir.join("index.redb"), backup).unwrap();
    let store = Store::open(dir).unwrap();
    let mut after = Vec::new();
    for _ in 0..3 {
        after.push(take_key(&store, "L", 256).0);
    }
    append(&store, "L", "b2", &material(3, 256));
    drop(store);
    (before, after)
}

#[test]
fn rolled_back_index_is_refused_before_recovery_touches_files() {
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("index.backup");
    store_with_stale_backup(dir.path(), &backup);
    std::fs::copy(&backup, dir.path().join("index.redb")).unwrap();
    let seg = std::fs::read(dir.path().join(SEG0)).unwrap();
    let e = Store::open(dir.path()).expect_err("a rolled-back index opened");
    assert!(matches!(e, OpenError::RolledBack { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("burn-after-restore"), "{msg}");
    // Nothing was "recovered": the segment bytes the old index does not know are still there.
    assert_eq!(std::fs::read(dir.path().join(SEG0)).unwrap(), seg);
    // Refused again (the refusal did not re-seal anything).
    assert!(matches!(
        Store::open(dir.path()),
        Err(OpenError::RolledBack { .. })
    ));
}

#[test]
fn index_of_another_store_is_refused() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for d in [a.path(), b.path()] {
        let store = Store::open(d).unwrap();
        append(&store, "L", "b0", &material(1, 64));
    }
    std::fs::copy(b.path().join("index.redb"), a.path().join("index.redb")).unwrap();
    let e = Store::open(a.path()).expect_err("a swapped index opened");
    assert!(matches!(e, OpenError::RolledBack { .. }), "{e}");
    assert!(e.to_string().contains("another store"), "{e}");
}

#[test]
fn burn_after_restore_burns_unused_material_and_reseals() {
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("index.backup");
    let (before, after) = store_with_stale_backup(dir.path(), &backup);
    std::fs::copy(&backup, dir.path().join("index.redb")).unwrap();
    let report =
        Store::burn_after_restore(dir.path(), StoreOptions::default(), &BurnScope::AllLinks)
            .unwrap();
    // b0 (256 bytes, one key of 32 taken before the backup) and b1: everything unused.
    assert_eq!(report.links.len(), 1);
    assert_eq!(report.links[0].link, "L");
    assert_eq!(report.links[0].bits_burned, (256 - 32 + 256) * 8);
    let store = Store::open(dir.path()).unwrap();
    // Nothing from the burned material is served: not the keys delivered after the backup
    // (unknown to the restored index), nothing new.
    for id in &after {
        assert!(matches!(
            store.fetch(&[*id], "M"),
            Err(StoreError::UnknownKey(_))
        ));
    }
    assert!(matches!(
        store.fetch(&[before], "M"),
        Err(StoreError::AlreadyFetched { .. })
    ));
    assert!(matches!(
        store.allocate(&AllocateRequest::new("L", "M", &[], 1, 8, later())),
        Err(StoreError::InsufficientKeyMaterial {
            available_bits: 0,
            ..
        })
    ));
    let st = store.link_status("L").unwrap();
    assert_eq!(st.bits_available, 0);
    assert_eq!(st.bits_burned, (256 - 32 + 256) * 8);
    // New material works (b2 was lost with the rollback: the ID is free again).
    append(&store, "L", "b3", &material(4, 64));
    let (_, bytes) = take_key(&store, "L", 256);
    assert_eq!(bytes, material(4, 64)[..32]);
    drop(store);
    // Re-sealed: the store opens again, and the old backup is still refused.
    drop(Store::open(dir.path()).unwrap());
    std::fs::copy(&backup, dir.path().join("index.redb")).unwrap();
    assert!(matches!(
        Store::open(dir.path()),
        Err(OpenError::RolledBack { .. })
    ));
}

#[test]
fn burn_after_restore_refuses_an_index_of_another_store() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for d in [a.path(), b.path()] {
        drop(Store::open(d).unwrap());
    }
    std::fs::copy(b.path().join("index.redb"), a.path().join("index.redb")).unwrap();
    assert!(matches!(
        Store::burn_after_restore(a.path(), StoreOptions::default(), &BurnScope::AllLinks),
        Err(OpenError::RolledBack { .. })
    ));
}

fn store_with_segments(dir: &Path) {
    let store = Store::open(dir).unwrap();
    append(&store, "L", "b0", &material(1, 64));
}

#[test]
fn empty_index_with_segments_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    store_with_segments(dir.path());
    std::fs::File::create(dir.path().join("index.redb")).unwrap();
    let e = Store::open(dir.path()).expect_err("an empty index opened");
    assert!(matches!(e, OpenError::MissingIndex { .. }), "{e}");
    assert!(dir.path().join(SEG0).exists(), "a segment was deleted");
    assert_eq!(std::fs::metadata(dir.path().join(SEG0)).unwrap().len(), 64);
}

#[test]
fn missing_index_with_segments_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    store_with_segments(dir.path());
    std::fs::remove_file(dir.path().join("index.redb")).unwrap();
    let e = Store::open(dir.path()).expect_err("a missing index was re-created");
    assert!(matches!(e, OpenError::MissingIndex { .. }), "{e}");
    assert!(dir.path().join(SEG0).exists(), "a segment was deleted");
    assert!(!dir.path().join("index.redb").exists());
}

#[test]
fn missing_index_with_only_the_epoch_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    std::fs::remove_file(dir.path().join("index.redb")).unwrap();
    assert!(matches!(
        Store::open(dir.path()),
        Err(OpenError::MissingIndex { .. })
    ));
}

#[test]
fn new_or_empty_directory_creates_a_store() {
    let parent = tempfile::tempdir().unwrap();
    let fresh = parent.path().join("a/b");
    let store = Store::open(&fresh).unwrap();
    append(&store, "L", "b0", &material(1, 64));
    drop(store);
    let empty = tempfile::tempdir().unwrap();
    let store = Store::open(empty.path()).unwrap();
    append(&store, "L", "b0", &material(1, 64));
    assert_eq!(take_key(&store, "L", 64).1, material(1, 64)[..8]);
}

#[test]
fn epoch_file_deleted_after_commits_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    store_with_segments(dir.path());
    std::fs::remove_file(dir.path().join("epoch")).unwrap();
    assert!(matches!(
        Store::open(dir.path()),
        Err(OpenError::RolledBack { .. })
    ));
}

#[test]
fn peer_burns_only_the_named_link() {
    let dir = tempfile::tempdir().unwrap();
    let live;
    {
        let store = Store::open(dir.path()).unwrap();
        append(&store, "A", "a0", &material(1, 64));
        append(&store, "C", "c0", &material(2, 64));
        live = store
            .allocate(&AllocateRequest::new("A", "M", &[], 1, 64, later()))
            .unwrap()[0]
            .key_id;
    }
    let scope = BurnScope::Links(vec!["A".into()]);
    let r = Store::burn_after_restore(dir.path(), StoreOptions::default(), &scope).unwrap();
    assert!(!r.rollback_detected);
    assert_eq!(r.links.len(), 1);
    assert_eq!(
        (r.links[0].bits_burned, r.links[0].keys_destroyed),
        (448, 1)
    );
    let store = Store::open(dir.path()).unwrap();
    assert!(matches!(
        store.fetch(&[live], "M"),
        Err(StoreError::Destroyed(_))
    ));
    assert_eq!(store.link_status("A").unwrap().bits_available, 0);
    assert_eq!(store.link_status("C").unwrap().bits_available, 512);
    assert!(matches!(
        Store::burn_after_restore(
            dir.path(),
            StoreOptions::default(),
            &BurnScope::Links(vec![])
        ),
        Err(OpenError::Recovery(StoreError::InvalidRequest(_)))
    ));
}
