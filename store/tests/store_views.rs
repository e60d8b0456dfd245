//! What a store reports about itself: the per-side split of available material, one commit for
//! an allocation delivered at once, and the read-only view beside a running writer.

mod common;

use std::sync::Arc;

use common::*;
use qkd_store::{
    AllocateRequest, BlockFilter, BlockId, LedgerEvent, OpenError, Store, StoreError, StoreOptions,
    StoreView,
};

const LINK: &str = "KME_B";

fn split_options() -> StoreOptions {
    StoreOptions {
        sides: Some(Arc::new(|link: &str| BlockFilter::split("KME_A", link))),
        ..StoreOptions::default()
    }
}

/// Usable bits of the appended blocks `split("KME_A", LINK)` gives to KME_A, by hand.
fn mine_bits(blocks: &[(String, usize)]) -> (u64, u64) {
    let f = BlockFilter::split("KME_A", LINK);
    let mut out = (0, 0);
    for (id, len) in blocks {
        if f.allows(&BlockId::new(id).unwrap()) {
            out.0 += 8 * *len as u64;
        } else {
            out.1 += 8 * *len as u64;
        }
    }
    out
}

#[test]
fn available_material_is_split_per_side_and_all_of_this_side_can_be_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path().join("s"), split_options()).unwrap();
    let blocks: Vec<(String, usize)> = (0..16).map(|i| (format!("b{i}"), 64 + 8 * i)).collect();
    for (i, (id, len)) in blocks.iter().enumerate() {
        append(&store, LINK, id, &material(i as u64, *len));
    }
    let (mine, theirs) = mine_bits(&blocks);
    assert!(mine > 0 && theirs > 0, "the split gives both sides blocks");
    let s = store.link_status(LINK).unwrap();
    assert_eq!((s.bits_allocatable, s.bits_other_side), (mine, theirs));
    assert_eq!(s.bits_available, mine + theirs);

    // Allocate 8-byte keys with this side's filter until it runs dry: exactly `mine` bits.
    let filter = BlockFilter::split("KME_A", LINK);
    let mut got = 0u64;
    loop {
        let req =
            AllocateRequest::new(LINK, "SAE_1", &["SAE_2"], 1, 64, later()).filter(filter.clone());
        match store.allocate(&req) {
            Ok(_) => got += 64,
            Err(StoreError::InsufficientKeyMaterial { available_bits, .. }) => {
                assert_eq!(
                    available_bits,
                    store.link_status(LINK).unwrap().bits_allocatable
                );
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let s = store.link_status(LINK).unwrap();
    assert_eq!(got + s.bits_allocatable, mine);
    assert!(s.bits_allocatable < 64, "{s:?}");
    assert_eq!(
        s.bits_other_side, theirs,
        "the other side's blocks untouched"
    );
    // The status computed from the index agrees with the published counts.
    let from_index = store.status().unwrap();
    assert_eq!(from_index.links, vec![s]);
}

#[test]
fn allocate_and_fetch_delivers_in_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s")).unwrap();
    append(&store, LINK, "b0", &material(1, 4096));
    let before = store.status().unwrap();
    let req = AllocateRequest::new(LINK, "SAE_1", &["SAE_2"], 3, 256, later())
        .recipients(&["SAE_1", "SAE_2"]);
    let (allocs, keys) = store.allocate_and_fetch(&req, "SAE_1").unwrap();
    let after = store.status().unwrap();
    assert_eq!(after.commits, before.commits + 1);
    assert_eq!(allocs.len(), 3);
    let ids: Vec<_> = allocs.iter().map(|a| a.key_id).collect();
    assert_eq!(keys.iter().map(|k| k.key_id()).collect::<Vec<_>>(), ids);
    // Delivered once to the master; the slave gets the same bytes once.
    assert!(matches!(
        store.fetch(&ids, "SAE_1"),
        Err(StoreError::AlreadyFetched { .. })
    ));
    let slave = store.fetch(&ids, "SAE_2").unwrap();
    for (a, b) in keys.iter().zip(&slave) {
        assert_eq!(a.bytes(), b.bytes());
    }
    // The ledger has the reservation and the delivery.
    let ledger = store.ledger(0, 100).unwrap();
    assert!(ledger.iter().any(|e| matches!(&e.event,
        LedgerEvent::KeysFetched { recipient, key_ids, .. } if recipient == "SAE_1" && *key_ids == ids)));
    assert!(
        ledger.iter().any(
            |e| matches!(&e.event, LedgerEvent::KeysReserved { key_ids, .. } if *key_ids == ids)
        )
    );
    // A recipient the keys are not for is refused before anything is allocated.
    let commits = store.status().unwrap().commits;
    let bad = AllocateRequest::new(LINK, "SAE_1", &["SAE_2"], 1, 256, later());
    assert!(matches!(
        store.allocate_and_fetch(&bad, "SAE_2"),
        Err(StoreError::InvalidRequest(_))
    ));
    assert_eq!(store.status().unwrap().commits, commits);
}

#[test]
fn a_read_only_view_follows_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let store = Store::open_with(&path, split_options()).unwrap();
    append(&store, LINK, "b0", &material(1, 4096));
    append(&store, LINK, "b1", &material(2, 4096));
    let view = StoreView::open(
        &path,
        Some(Arc::new(|link: &str| BlockFilter::split("KME_A", link))),
    )
    .unwrap();
    assert_eq!(view.status().unwrap().links, store.status().unwrap().links);
    // Commits after the view opened are visible through it.
    let req = AllocateRequest::new(LINK, "SAE_1", &["SAE_2"], 1, 256, later())
        .filter(BlockFilter::split("KME_A", LINK));
    store.allocate_and_fetch(&req, "SAE_1").unwrap();
    let s = view.status().unwrap();
    assert_eq!(s.links, vec![store.link_status(LINK).unwrap()]);
    assert_eq!(s.ledger_entries, store.status().unwrap().ledger_entries);
    assert_eq!(view.ledger(0, 100).unwrap(), store.ledger(0, 100).unwrap());
    // A second writer is still refused.
    assert!(Store::open(&path).is_err());
}

#[test]
fn a_view_of_a_directory_that_is_not_a_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = StoreView::open(dir.path(), None).unwrap_err();
    assert!(matches!(err, OpenError::NotAStore { .. }), "{err}");
}
