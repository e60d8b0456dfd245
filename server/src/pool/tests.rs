use super::*;

fn z(v: Vec<u8>) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(v)
}

fn req(
    pool: &str,
    number: usize,
    size: usize,
    local_slaves: &[&str],
    master_pending: bool,
) -> AllocRequest {
    AllocRequest {
        pool: pool.into(),
        master: "M".into(),
        slaves: vec!["S".into()],
        local_slaves: local_slaves.iter().map(|s| s.to_string()).collect(),
        number,
        size_bytes: size,
        expires_at_ms: u64::MAX,
        master_pending,
    }
}

#[test]
fn range_set_first_fit_merge_and_remove() {
    let mut r = RangeSet::default();
    assert_eq!(r.first_fit(4, 10), Some(0));
    r.insert(0, 4);
    r.insert(6, 8);
    assert_eq!(r.first_fit(2, 10), Some(4));
    assert_eq!(r.first_fit(3, 10), None);
    r.insert(4, 6);
    assert_eq!(r.0, vec![(0, 8)]);
    r.remove(2, 3);
    assert_eq!(r.0, vec![(0, 2), (3, 8)]);
    assert_eq!(r.used(), 7);
    assert!(r.overlaps(1, 2) && !r.overlaps(2, 3));
}

#[test]
fn ownership_rule_is_complementary() {
    for block in 0..10 {
        assert_ne!(
            block_owner_is_local("A", "B", block),
            block_owner_is_local("B", "A", block)
        );
        assert!(block_owner_is_local("A", LOCAL_POOL, block));
    }
    assert!(block_owner_is_local("A", "B", 0));
}

#[test]
fn allocate_is_all_or_nothing_and_bytes_match_block() {
    let p = JournalPool::in_memory("A");
    let data: Vec<u8> = (0..64u8).collect();
    let (added, _) = p.add_block(LOCAL_POOL, 7, z(data.clone())).unwrap();
    assert!(added);
    assert!(!p.add_block(LOCAL_POOL, 7, z(data.clone())).unwrap().0);
    assert!(matches!(
        p.allocate(&req(LOCAL_POOL, 5, 16, &["S"], false)),
        Err(PoolError::Insufficient { .. })
    ));
    assert_eq!(p.stats(LOCAL_POOL).allocatable_bytes, 64);
    let (keys, _) = p.allocate(&req(LOCAL_POOL, 3, 16, &["S"], false)).unwrap();
    assert_eq!(&keys[0].material[..], &data[0..16]);
    assert_eq!(&keys[2].material[..], &data[32..48]);
    assert_eq!(p.stats(LOCAL_POOL).allocatable_bytes, 16);
    assert_eq!(p.stats(LOCAL_POOL).reserved_keys, 3);
    // The slave takes each key once; a stranger is refused; unknown IDs are not found.
    assert_eq!(
        p.take("M", "X", &[keys[0].id]).unwrap_err(),
        TakeError::NotSlave("X".into())
    );
    let (got, _) = p.take("M", "S", &[keys[0].id, keys[1].id]).unwrap();
    assert_eq!(got[1].material, keys[1].material);
    assert_eq!(
        p.take("M", "S", &[keys[0].id]).unwrap_err(),
        TakeError::NotFound
    );
    assert_eq!(
        p.take("M", "S", &[keys[2].id, Uuid::new_v4()]).unwrap_err(),
        TakeError::NotFound
    );
    assert_eq!(
        p.take("OTHER", "S", &[keys[2].id]).unwrap_err(),
        TakeError::NotFound
    );
    assert!(p.take("M", "S", &[keys[2].id]).is_ok());
    assert_eq!(p.stats(LOCAL_POOL).reserved_keys, 0);
}

#[test]
fn peer_reservation_mirrors_master_allocation() {
    let a = JournalPool::in_memory("A");
    let b = JournalPool::in_memory("B");
    let blocks: Vec<Vec<u8>> = (0..2u8).map(|i| vec![i + 1; 32]).collect();
    for (i, d) in blocks.iter().enumerate() {
        let _ = a.add_block("B", i as u64, z(d.clone())).unwrap();
        let _ = b.add_block("A", i as u64, z(d.clone())).unwrap();
    }
    // A owns block 0 ("A" < "B", even), B owns block 1.
    assert_eq!(a.stats("B").allocatable_bytes, 32);
    assert_eq!(b.stats("A").allocatable_bytes, 32);
    let (keys, _) = a.allocate(&req("B", 2, 16, &[], true)).unwrap();
    assert!(keys.iter().all(|k| k.addr.block == 0));
    let r = ReserveRequest {
        pool: "A".into(),
        master: "M".into(),
        slaves: vec!["S".into()],
        expires_at_ms: u64::MAX,
        keys: keys.iter().map(|k| (k.id, k.addr)).collect(),
    };
    let _ = b.reserve_exact(&r).unwrap();
    // The same material twice, or material B owns, is a conflict.
    assert!(matches!(
        b.reserve_exact(&r),
        Err(PoolError::DuplicateId(_))
    ));
    let mut r2 = r.clone();
    r2.keys = vec![(Uuid::new_v4(), keys[0].addr)];
    assert!(matches!(b.reserve_exact(&r2), Err(PoolError::Conflict(_))));
    r2.keys = vec![(
        Uuid::new_v4(),
        MaterialAddr {
            block: 1,
            offset: 0,
            len: 16,
        },
    )];
    assert!(matches!(b.reserve_exact(&r2), Err(PoolError::Conflict(_))));
    let _ = a
        .confirm_master(&keys.iter().map(|k| k.id).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(a.stats("B").reserved_keys, 0);
    let (got, _) = b.take("M", "S", &[keys[1].id]).unwrap();
    assert_eq!(got[0].material, keys[1].material);
}

#[test]
fn release_returns_material_and_expire_destroys() {
    let p = JournalPool::in_memory("A");
    let _ = p.add_block(LOCAL_POOL, 0, z(vec![9; 32])).unwrap();
    let (keys, _) = p.allocate(&req(LOCAL_POOL, 1, 32, &[], true)).unwrap();
    assert_eq!(p.stats(LOCAL_POOL).allocatable_bytes, 0);
    let _ = p.release(&[keys[0].id]).unwrap();
    assert_eq!(p.stats(LOCAL_POOL).allocatable_bytes, 32);
    let mut r = req(LOCAL_POOL, 1, 32, &["S"], false);
    r.expires_at_ms = 1000;
    let (keys, _) = p.allocate(&r).unwrap();
    assert!(p.expire(999).unwrap().0.is_empty());
    assert_eq!(p.expire(1000).unwrap().0, vec![keys[0].id]);
    assert_eq!(
        p.take("M", "S", &[keys[0].id]).unwrap_err(),
        TakeError::NotFound
    );
}

#[tokio::test]
async fn journal_survives_reopen_and_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let id;
    {
        let p = JournalPool::open(dir.path(), "A").unwrap();
        let (_, c) = p.add_block(LOCAL_POOL, 0, z((0..64).collect())).unwrap();
        c.wait().await.unwrap();
        let (keys, c) = p.allocate(&req(LOCAL_POOL, 2, 16, &["S"], false)).unwrap();
        c.wait().await.unwrap();
        let (_, c) = p.take("M", "S", &[keys[0].id]).unwrap();
        c.wait().await.unwrap();
        // Pending master delivery when the process stops: destroyed on open.
        let (_, c) = p.allocate(&req(LOCAL_POOL, 1, 16, &["S"], true)).unwrap();
        c.wait().await.unwrap();
        id = (keys[0].id, keys[1].id);
    }
    // A torn record at the tail is ignored.
    let path = dir.path().join("keys.journal");
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
    drop(f);
    let p = JournalPool::open(dir.path(), "A").unwrap();
    assert_eq!(p.stats(LOCAL_POOL).allocatable_bytes, 16);
    assert_eq!(p.take("M", "S", &[id.0]).unwrap_err(), TakeError::NotFound);
    let (got, c) = p.take("M", "S", &[id.1]).unwrap();
    c.wait().await.unwrap();
    assert_eq!(&got[0].material[..], &(16..32).collect::<Vec<u8>>()[..]);
    drop(p);
    // Reopen once more (after a compaction): consumed keys stay consumed.
    let p = JournalPool::open(dir.path(), "A").unwrap();
    assert_eq!(p.take("M", "S", &[id.1]).unwrap_err(), TakeError::NotFound);
    assert_eq!(p.stats(LOCAL_POOL).allocatable_bytes, 16);
}
