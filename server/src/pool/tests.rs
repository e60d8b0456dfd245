use super::*;

fn z(v: Vec<u8>) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(v)
}

fn later() -> u64 {
    crate::now_ms() + 60_000
}

#[test]
fn local_pool_allocate_fetch_once_per_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let p = StorePool::open(dir.path(), "A").unwrap();
    let data: Vec<u8> = (0..64u8).collect();
    assert!(p.add_block(LOCAL_POOL, "b0", z(data.clone())).unwrap());
    assert!(!p.add_block(LOCAL_POOL, "b0", z(data.clone())).unwrap());
    assert_eq!(p.stats(LOCAL_POOL).allocatable_bytes, 64);
    let req = |n| AllocRequest {
        pool: LOCAL_POOL.into(),
        master: "M".into(),
        slaves: vec!["S".into()],
        local_slaves: vec!["S".into()],
        number: n,
        size_bits: 128,
        expires_at_ms: later(),
    };
    assert!(matches!(
        p.allocate_for_master(&req(5)).blocking_recv().unwrap(),
        Err(PoolError::Insufficient { .. })
    ));
    assert_eq!(
        p.stats(LOCAL_POOL).allocatable_bytes,
        64,
        "a refused allocation spent material"
    );
    let (a, m) = p
        .allocate_for_master(&req(2))
        .blocking_recv()
        .unwrap()
        .unwrap();
    let ids: Vec<Uuid> = a.iter().map(|k| k.key_id).collect();
    assert_eq!(&m[0].material[..], &data[0..16]);
    assert_eq!(p.fetch(&ids, "M").unwrap_err(), FetchError::NotFound);
    assert_eq!(
        p.fetch(&ids, "X").unwrap_err(),
        FetchError::NotRecipient("X".into())
    );
    let s = p.fetch(&ids, "S").unwrap();
    assert_eq!(s[1].material, m[1].material);
    assert_eq!(p.fetch(&ids[..1], "S").unwrap_err(), FetchError::NotFound);
    assert_eq!(
        p.fetch(&[Uuid::new_v4()], "S").unwrap_err(),
        FetchError::NotFound
    );
    assert_eq!(p.master_of(ids[0]).as_deref(), Some("M"));
}

#[test]
fn peer_reservation_mirrors_allocation_and_split_is_complementary() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = StorePool::open(da.path(), "A").unwrap();
    let b = StorePool::open(db.path(), "B").unwrap();
    for i in 0..8u8 {
        a.add_block("B", &format!("blk{i}"), z(vec![i; 32]))
            .unwrap();
        b.add_block("A", &format!("blk{i}"), z(vec![i; 32]))
            .unwrap();
    }
    let fa = BlockFilter::split("A", "B");
    let fb = BlockFilter::split("B", "A");
    let mut a_owns = 0;
    for i in 0..8 {
        let id = BlockId::new(format!("blk{i}")).unwrap();
        assert_ne!(fa.allows(&id), fb.allows(&id));
        a_owns += u64::from(fa.allows(&id));
    }
    // Each side counts exactly its own blocks as allocatable, and the other's as the peer's.
    let (sa, sb) = (a.stats("B"), b.stats("A"));
    assert_eq!(sa.allocatable_bytes, 32 * a_owns);
    assert_eq!(sa.peer_allocatable_bytes, 32 * (8 - a_owns));
    assert_eq!(sb.allocatable_bytes, sa.peer_allocatable_bytes);
    assert_eq!(sb.peer_allocatable_bytes, sa.allocatable_bytes);
    let (alloc, ka) = a
        .allocate_for_master(&AllocRequest {
            pool: "B".into(),
            master: "M".into(),
            slaves: vec!["S".into()],
            local_slaves: vec![],
            number: 1,
            size_bits: 256,
            expires_at_ms: later(),
        })
        .blocking_recv()
        .unwrap()
        .unwrap();
    assert!(fa.allows(&alloc[0].material[0].block_id));
    let r = ReserveRequest {
        pool: "A".into(),
        master: "M".into(),
        slaves: vec!["S".into()],
        expires_at_ms: later(),
        keys: alloc.clone(),
    };
    b.reserve_exact(&r).unwrap();
    assert!(matches!(b.reserve_exact(&r), Err(PoolError::Conflict(_))));
    assert_eq!(
        b.stats("A").peer_allocatable_bytes,
        a.stats("B").allocatable_bytes
    );
    let kb = b.fetch(&[alloc[0].key_id], "S").unwrap();
    assert_eq!(ka[0].material, kb[0].material);
}
