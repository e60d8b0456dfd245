//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use std::time::{Duration, SystemTime};

use qkd_core::rng::SeededRandom;
use qkd_store::{BlockId, NewBlock, Store};
use zeroize::Zeroizing;

/// An expiry an hour from now.
pub fn later() -> SystemTime {
    SystemTime::now() + Duration::from_secs(3600)
}

/// `len` reproducible pseudo-random bytes.
pub fn material(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    SeededRandom::from_u64(seed).bytes(&mut v);
    v
}

/// Appends `bytes` as block `id` of `link`.
pub fn append(store: &Store, link: &str, id: &str, bytes: &[u8]) {
    let b = NewBlock::from_bytes(
        link,
        BlockId::new(id).unwrap(),
        Zeroizing::new(bytes.to_vec()),
    );
    store.append(b).unwrap();
}
