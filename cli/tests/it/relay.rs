//! Keys relayed through a middle KME: three `qkd serve` processes in a chain set up by
//! `qkd pki init --link`, the middle one SIGKILLed at random points while an SAE at one end
//! takes keys for an SAE at the other. Afterwards no key delivered at the first KME is missing
//! at the last one, and nothing is delivered twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::kmes::Kmes;
use crate::common::load::{below, sae_load};
use crate::common::{free_port, ok};
use qkd_server::{Config, pki};

/// KME_A - KME_B - KME_C, SAE_A at A and SAE_C at C; each link's key from a simulated source
/// seeded by the link (64 blocks of 4 KiB), durable stores.
fn chain() -> Kmes {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    ok(&[
        "pki",
        "init",
        d,
        "--kme",
        "KME_A",
        "--kme",
        "KME_B",
        "--kme",
        "KME_C",
        "--sae",
        "SAE_A@KME_A",
        "--sae",
        "SAE_C@KME_C",
        "--link",
        "KME_A-KME_B",
        "--link",
        "KME_B-KME_C",
    ]);
    let ids = ["KME_A", "KME_B", "KME_C"];
    let mut cfgs: Vec<Config> = ids
        .iter()
        .map(|k| Config::load(&dir.path().join(format!("{k}.toml"))).unwrap())
        .collect();
    assert_eq!(cfgs[0].network.kmes[0].id, "KME_C");
    assert_eq!(cfgs[1].links.len(), 2);
    let ports: Vec<(u16, u16)> = ids.iter().map(|_| (free_port(), free_port())).collect();
    pki::on_loopback(&mut cfgs, &ports, 4096, 64);
    Kmes::new(dir, cfgs)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `QKD_RELAY_KILLS` (default 6) SIGKILLs of KME_B, at moments from `QKD_RELAY_SEED`.
#[test]
fn sigkill_of_the_middle_node_never_delivers_a_key_the_far_end_lacks() {
    let var = |k: &str| std::env::var(k).ok().and_then(|v| v.parse().ok());
    let rounds: u64 = var("QKD_RELAY_KILLS").unwrap_or(6);
    let mut r = below(var("QKD_RELAY_SEED").unwrap_or(31));
    let mut kmes = chain();
    rt().block_on(async {
        for i in [1, 2, 0] {
            kmes.start(i);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let load = tokio::spawn(sae_load(
            kmes.client(0, "SAE_A"),
            kmes.client(2, "SAE_C"),
            ("SAE_A", "SAE_C"),
            stop.clone(),
        ));
        for _ in 0..rounds {
            tokio::time::sleep(Duration::from_millis(200 + r(600))).await;
            kmes.kill(1);
            tokio::time::sleep(Duration::from_millis(r(400))).await;
            kmes.start(1);
        }
        // Relays work again once B is back.
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::Relaxed);
        let mut log = load.await.unwrap();
        let dec = kmes.client(2, "SAE_C");
        let t = Instant::now();
        while !log.pending.is_empty() && t.elapsed() < Duration::from_secs(20) {
            log.fetch_pending(&dec).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "relay crash: {rounds} kills of KME_B, {} keys delivered at KME_A, {} fetched at \
             KME_C, {} refused there, {} never fetched, {} violations",
            log.delivered.len(),
            log.fetched,
            log.suspects.len(),
            log.pending.len(),
            log.violations.len()
        );
        assert!(log.violations.is_empty(), "{:?}", log.violations);
        // KME_C never died: it can have refused no delivered key.
        assert!(log.suspects.is_empty(), "KME_C lacks {:?}", log.suspects);
        assert!(log.pending.is_empty(), "delivered keys KME_C never served");
        assert!(!log.delivered.is_empty(), "no key was relayed");
        // And after the last restart a relay goes through.
        let kc = kmes
            .client(0, "SAE_A")
            .enc_keys("SAE_C", &Default::default())
            .await
            .unwrap();
        assert_eq!(kc.keys.len(), 1);
    });
}
