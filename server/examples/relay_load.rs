//! Relayed keys per second: a chain of KMEs in process on loopback (fresh dev PKI from
//! `pki::init_network`, durable stores in a temp dir), an SAE at the first KME taking one
//! 256-bit key per request for an SAE at the last, which fetches it with dec_keys (one
//! enc_keys and one dec_keys per iteration, the bytes compared), from N connections.
//!
//! cargo run --release -p qkd-server --example relay_load -- [hops] [connections] [seconds]
//!
//! `hops` = 1 is the direct link (no relay): the baseline for 2 and 3 hops.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use qkd_server::client::Client;
use qkd_server::config::Config;
use qkd_server::etsi::KeyRequest;
use qkd_server::{pki, serve};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let (hops, conns, secs) = (arg(1, 2) as usize, arg(2, 16) as usize, arg(3, 5));
    assert!((1..=8).contains(&hops), "hops: 1 to 8");

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let kmes: Vec<String> = (0..=hops).map(|i| format!("KME_{i}")).collect();
    let saes = vec![
        ("SAE_FIRST".to_string(), kmes[0].clone()),
        ("SAE_LAST".to_string(), kmes[hops].clone()),
    ];
    let links: Vec<(String, String)> = kmes
        .windows(2)
        .map(|w| (w[0].clone(), w[1].clone()))
        .collect();
    pki::init_network(dir, &kmes, &saes, &links, 8443, &[], pki::RawSetup::Cor).unwrap();
    let mut cfgs: Vec<Config> = kmes
        .iter()
        .map(|k| Config::load(&dir.join(format!("{k}.toml"))).unwrap())
        .collect();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let ports: Vec<(u16, u16)> = kmes.iter().map(|_| (free(), free())).collect();
    pki::on_loopback(&mut cfgs, &ports, 1 << 20, 32);
    for c in &mut cfgs {
        c.keys.max_key_count = 1 << 30;
        c.limits.max_connections_per_client = 4096;
        c.limits.max_in_flight_per_client = 4096;
    }
    let mut handles = Vec::new();
    for c in cfgs {
        handles.push(serve(c).await.unwrap());
    }
    let t0 = Instant::now();
    while handles.iter().zip(&kmes).any(|(h, k)| {
        links.iter().any(|(a, b)| {
            (a == k || b == k) && h.pool().stats(if a == k { b } else { a }).blocks < 32
        })
    }) {
        assert!(t0.elapsed() < Duration::from_secs(60), "pools not filled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let client = |h: &qkd_server::ServerHandle, sae: &str| {
        Client::new(
            &format!("https://localhost:{}", h.sae_addr.port()),
            &dir.join("ca.pem"),
            &dir.join(format!("{sae}.pem")),
            &dir.join(format!("{sae}.key")),
        )
        .unwrap()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (done, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // The first second (TLS handshakes, warm-up) is not counted.
    let measure_from = Instant::now() + Duration::from_secs(1);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (enc, dec) = (
            client(&handles[0], "SAE_FIRST"),
            client(&handles[hops], "SAE_LAST"),
        );
        let (stop, done, errors) = (stop.clone(), done.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let req = KeyRequest::default();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = match enc.enc_keys("SAE_LAST", &req).await {
                    Ok(kc) => {
                        let id = kc.keys[0].key_ID.parse().unwrap();
                        let got = dec.dec_keys("SAE_FIRST", &[id]).await;
                        assert!(
                            got.map(|g| g.keys[0].key == kc.keys[0].key)
                                .unwrap_or(false),
                            "keys differ"
                        );
                        true
                    }
                    Err(_) => false,
                };
                if t >= measure_from {
                    let counter = if ok { &done } else { &errors };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = t.elapsed().as_secs_f64();
    for task in tasks {
        task.await.unwrap();
    }
    let n = done.load(Ordering::Relaxed);
    println!(
        "hops={hops} connections={conns} measured={elapsed:.1}s keys={n} errors={} rate={:.0} keys/s",
        errors.load(Ordering::Relaxed),
        n as f64 / elapsed
    );
    for h in handles {
        h.shutdown().await;
    }
}
