//! Key store: durable ingest of key material (append: write + fdatasync + redb commit) and
//! durable allocate + fetch of 256-bit keys with 64 concurrent callers (group commit).
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use qkd_store::{AllocateRequest, BlockId, NewBlock, Store};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use zeroize::Zeroizing;

fn material(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    ChaCha20Rng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

fn ingest(c: &mut Criterion) {
    let mut g = c.benchmark_group("store_ingest");
    g.sample_size(10).measurement_time(Duration::from_secs(6));
    for (mib, callers) in [(1usize, 1usize), (4, 1), (1, 4), (4, 4)] {
        let bytes = mib << 20;
        let m = material(bytes, 1);
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(dir.path()).expect("open"));
        let next = AtomicU64::new(0);
        g.throughput(Throughput::Bytes(bytes as u64));
        let id = BenchmarkId::new(format!("append_{mib}MiB"), format!("{callers}_callers"));
        g.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let per = iters.div_ceil(callers as u64);
                let t = Instant::now();
                std::thread::scope(|s| {
                    for _ in 0..callers {
                        s.spawn(|| {
                            for _ in 0..per {
                                let n = next.fetch_add(1, Ordering::Relaxed);
                                let block = NewBlock::from_bytes(
                                    "peer",
                                    BlockId::new(format!("b{n}")).expect("id"),
                                    Zeroizing::new(m.clone()),
                                );
                                store.append(block).expect("append");
                            }
                        });
                    }
                });
                t.elapsed()
                    .mul_f64(iters as f64 / (per * callers as u64) as f64)
            })
        });
    }
    g.finish();
}

fn keys(c: &mut Criterion) {
    let mut g = c.benchmark_group("store_keys");
    g.sample_size(10).measurement_time(Duration::from_secs(6));
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(dir.path()).expect("open"));
    for i in 0..96 {
        let block = NewBlock::from_bytes(
            "peer",
            BlockId::new(format!("b{i}")).expect("id"),
            Zeroizing::new(material(1 << 20, i)),
        );
        store.append(block).expect("append");
    }
    let expiry = SystemTime::now() + Duration::from_secs(3600);
    for callers in [1usize, 64] {
        g.throughput(Throughput::Elements(1));
        let id = BenchmarkId::new("alloc_fetch_256", format!("{callers}_callers"));
        g.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let per = iters.div_ceil(callers as u64);
                let t = Instant::now();
                std::thread::scope(|s| {
                    for _ in 0..callers {
                        s.spawn(|| {
                            let req =
                                AllocateRequest::new("peer", "SAE_A", &["SAE_B"], 1, 256, expiry);
                            for _ in 0..per {
                                let k = store.allocate(&req).expect("allocate");
                                let got = store.fetch(&[k[0].key_id], "SAE_A").expect("fetch");
                                std::hint::black_box(got[0].bytes());
                            }
                        });
                    }
                });
                t.elapsed()
                    .mul_f64(iters as f64 / (per * callers as u64) as f64)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, ingest, keys);
criterion_main!(benches);
