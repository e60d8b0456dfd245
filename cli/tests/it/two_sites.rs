//! Two `qkd serve` processes post-processing a simulated device between themselves, killed
//! with SIGKILL at random points and cut apart through a proxy: after every recovery, a key
//! one side serves is served by the other with the same bytes, and once both have settled
//! their stores hold the same blocks.

use crate::common::free_port;
use crate::common::kmes::Kmes;
use crate::common::load::{below, sae_load};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use qkd_server::config::SourceConfig;
use qkd_server::etsi::KeyRequest;
use qkd_server::{Config, pki};
use qkd_store::{LedgerEvent, Store};

/// KME_A (Alice) and KME_B, small blocks, the device as fast as the sessions go; KME_A
/// reaches KME_B's peer listener through a proxy (at the port returned) if `proxy`, else
/// directly.
fn new_site(proxy: bool) -> (Kmes, u16) {
    let dir = tempfile::tempdir().unwrap();
    let kmes = ["KME_A".to_string(), "KME_B".to_string()];
    let saes = [
        ("SAE_1".to_string(), "KME_A".to_string()),
        ("SAE_2".to_string(), "KME_B".to_string()),
    ];
    pki::init_with(
        dir.path(),
        &kmes,
        &saes,
        8443,
        &[],
        pki::RawSetup::Simulated,
    )
    .unwrap();
    let mut a = Config::load(&dir.path().join("KME_A.toml")).unwrap();
    let mut b = Config::load(&dir.path().join("KME_B.toml")).unwrap();
    let p: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
    a.listen = local(p[0]);
    a.peer_listen = Some(local(p[1]));
    b.listen = local(p[2]);
    b.peer_listen = Some(local(p[3]));
    let b_peer = if proxy { p[4] } else { p[3] };
    a.links[0].url = format!("https://127.0.0.1:{b_peer}");
    b.links[0].url = format!("https://127.0.0.1:{}", p[1]);
    for c in [&mut a, &mut b] {
        let pp = c.links[0].processing.as_mut().unwrap();
        pp.block_bits = 1 << 17;
        pp.sample_bits = 1 << 12;
        pp.block_timeout_secs = 5;
        set_rate(c, 1 << 22);
    }
    (Kmes::new(dir, vec![a, b]), p[3])
}

/// The blocks (ID, bits) in a KME's store for its link, read offline.
fn stored_blocks(site: &Kmes, kme: &str, peer: &str) -> BTreeMap<String, u64> {
    let store = Store::open(site.dir.path().join(kme).join("store")).unwrap();
    let mut out = BTreeMap::new();
    let mut from = 0;
    loop {
        let entries = store.ledger(from, 1000).unwrap();
        let Some(last) = entries.last() else { break };
        from = last.seq + 1;
        for e in entries {
            if let (
                true,
                LedgerEvent::BlockAppended {
                    block_id, len_bits, ..
                },
            ) = (e.link == peer, &e.event)
            {
                out.insert(block_id.to_string(), *len_bits);
            }
        }
    }
    out
}

fn set_rate(c: &mut Config, rate: u64) {
    if let SourceConfig::SimulatedDevice {
        raw_bits_per_sec, ..
    } = &mut c.links[0].source
    {
        *raw_bits_per_sec = rate;
    }
}

/// SAE_1 takes keys at KME_A (if it has any to give); SAE_2 must then get the same bytes at
/// KME_B within a few seconds. Returns whether keys were served.
async fn keys_agree(site: &Kmes) -> bool {
    let req = KeyRequest {
        number: Some(2),
        size: Some(256),
        ..Default::default()
    };
    let enc = match site.client(0, "SAE_1").enc_keys("SAE_2", &req).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("no keys from KME_A now: {e}");
            return false;
        }
    };
    let ids: Vec<uuid::Uuid> = enc.keys.iter().map(|k| k.key_ID.parse().unwrap()).collect();
    let t = Instant::now();
    loop {
        match site.client(1, "SAE_2").dec_keys("SAE_1", &ids).await {
            Ok(dec) => {
                for (x, y) in enc.keys.iter().zip(&dec.keys) {
                    assert_eq!((&x.key_ID, &x.key), (&y.key_ID, &y.key));
                }
                return true;
            }
            Err(e) => {
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "KME_A served keys that KME_B does not: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Stops the device (Alice restarted with a rate that makes no new block), lets the two
/// settle, stops both, and compares their stores.
async fn settle_and_compare(site: &mut Kmes) {
    site.kill(0);
    site.kill(1);
    set_rate(&mut site.cfg[0], 1);
    site.write(0);
    site.start(1);
    site.start(0);
    // Settled once KME_B holds what KME_A holds (the handshake activates or drops the rest).
    let t = Instant::now();
    let (a, b) = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let up = site
            .client(0, "SAE_1")
            .status("SAE_2")
            .await
            .ok()
            .and_then(|s| s.status_extension)
            .is_some_and(|e| e["post_processing"]["state"] == "up");
        if !up && t.elapsed() < Duration::from_secs(20) {
            continue;
        }
        site.kill(0);
        site.kill(1);
        let a = stored_blocks(site, "KME_A", "KME_B");
        let b = stored_blocks(site, "KME_B", "KME_A");
        if a == b || t.elapsed() > Duration::from_secs(20) {
            break (a, b);
        }
        site.start(1);
        site.start(0);
    };
    assert!(!a.is_empty(), "no block was ever kept");
    assert_eq!(a, b, "the two stores hold different blocks");
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Kills per run: 20 in the test suite; `scripts/soak-kme.sh` sets `QKD_SOAK_KILLS` (and a
/// seed in `QKD_SOAK_SEED`) for a longer run.
fn kills() -> (u64, u64) {
    let var = |k: &str| std::env::var(k).ok().and_then(|v| v.parse().ok());
    (
        var("QKD_SOAK_KILLS").unwrap_or(20),
        var("QKD_SOAK_SEED").unwrap_or(13),
    )
}

#[test]
fn sigkill_at_random_points_never_breaks_both_or_neither() {
    let (mut site, _) = new_site(false);
    let (rounds, seed) = kills();
    let mut r = below(seed);
    rt().block_on(async {
        site.start(1);
        site.start(0);
        let mut served = 0;
        for _ in 0..rounds {
            tokio::time::sleep(Duration::from_millis(200 + r(800))).await;
            let victim = r(2) as usize;
            site.kill(victim);
            tokio::time::sleep(Duration::from_millis(r(300))).await;
            site.start(victim);
            tokio::time::sleep(Duration::from_millis(300)).await;
            if keys_agree(&site).await {
                served += 1;
            }
        }
        assert!(
            served >= rounds / 4,
            "keys were served after only {served} of {rounds} restarts"
        );
        settle_and_compare(&mut site).await;
    });
}

/// A TCP proxy that can cut every connection through it.
async fn proxy(
    listen: u16,
    to: u16,
    cut: Arc<AtomicBool>,
    epoch: Arc<std::sync::atomic::AtomicU64>,
) {
    let l = tokio::net::TcpListener::bind(("127.0.0.1", listen))
        .await
        .unwrap();
    loop {
        let (mut inbound, _) = l.accept().await.unwrap();
        if cut.load(Ordering::Relaxed) {
            continue; // dropped: refused
        }
        let (cut, epoch) = (cut.clone(), epoch.clone());
        tokio::spawn(async move {
            let Ok(mut out) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else {
                return;
            };
            let mine = epoch.load(Ordering::Relaxed);
            let copy = tokio::io::copy_bidirectional(&mut inbound, &mut out);
            let watch = async {
                while !cut.load(Ordering::Relaxed) && epoch.load(Ordering::Relaxed) == mine {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            tokio::select! { _ = copy => {}, _ = watch => {} }
        });
    }
}

#[test]
fn a_peer_connection_cut_mid_block_settles_without_duplicates() {
    let (mut site, b_peer) = new_site(true);
    let proxy_port: u16 = site.cfg[0].links[0]
        .url
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let cut = Arc::new(AtomicBool::new(false));
    let epoch = Arc::new(std::sync::atomic::AtomicU64::new(0));
    rt().block_on(async {
        tokio::spawn(proxy(proxy_port, b_peer, cut.clone(), epoch.clone()));
        site.start(1);
        site.start(0);
        for round in 0..3 {
            // Blocks are always in flight: let some finish, then cut.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            cut.store(true, Ordering::Relaxed);
            epoch.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(500 + 300 * round)).await;
            cut.store(false, Ordering::Relaxed);
            let t = Instant::now();
            while !keys_agree(&site).await {
                assert!(
                    t.elapsed() < Duration::from_secs(20),
                    "no keys after reconnect {round}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        settle_and_compare(&mut site).await;
    });
}

/// `scripts/crash-soak.sh N`: SIGKILLs either KME at random moments while SAE_1 takes keys at
/// KME_A and SAE_2 fetches them at KME_B without pause. No key ID or key is delivered twice,
/// every key KME_A delivered is served by KME_B with the same bytes (except a fetch whose answer
/// died with KME_B, counted), and in the end the stores hold the same blocks.
#[test]
fn sigkill_under_sae_load_delivers_nothing_twice_and_loses_nothing() {
    let (mut site, _) = new_site(false);
    let var = |k: &str| std::env::var(k).ok().and_then(|v| v.parse().ok());
    let rounds: u64 = var("QKD_CRASH_KILLS").unwrap_or(8);
    let mut r = below(var("QKD_CRASH_SEED").unwrap_or(29));
    rt().block_on(async {
        site.start(1);
        site.start(0);
        let stop = Arc::new(AtomicBool::new(false));
        let load = tokio::spawn(sae_load(
            site.client(0, "SAE_1"),
            site.client(1, "SAE_2"),
            ("SAE_1", "SAE_2"),
            stop.clone(),
        ));
        for _ in 0..rounds {
            tokio::time::sleep(Duration::from_millis(300 + r(700))).await;
            let victim = r(2) as usize;
            site.kill(victim);
            tokio::time::sleep(Duration::from_millis(r(300))).await;
            site.start(victim);
        }
        stop.store(true, Ordering::Relaxed);
        let mut log = load.await.unwrap();
        let dec = site.client(1, "SAE_2");
        let t = Instant::now();
        while !log.pending.is_empty() && t.elapsed() < Duration::from_secs(30) {
            log.fetch_pending(&dec).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        settle_and_compare(&mut site).await;
        let store = Store::open(site.dir.path().join("KME_B").join("store")).unwrap();
        for id in &log.suspects {
            match store.key_info(*id).unwrap() {
                Some(k) if k.fetched.iter().any(|s| s == "SAE_2") => {}
                other => log
                    .violations
                    .push(format!("KME_B lost delivered key {id}: {other:?}")),
            }
        }
        eprintln!(
            "crash soak: {rounds} kills, {} keys delivered, {} fetched at the other site, {} \
             fetched but the answer died with KME_B, {} never fetched, {} violations",
            log.delivered.len(),
            log.fetched,
            log.suspects.len(),
            log.pending.len(),
            log.violations.len()
        );
        assert!(log.violations.is_empty(), "{:?}", log.violations);
        assert!(log.pending.is_empty(), "delivered keys KME_B never served");
        assert!(!log.delivered.is_empty(), "no key was delivered");
    });
}
