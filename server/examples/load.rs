//! Load generator: starts KMEs in process on loopback (fresh dev PKI, durable stores in a temp
//! dir) and drives enc_keys over mutual TLS from N keep-alive connections.
//!
//! cargo run --release -p qkd-server --example load -- [local|status|two-kme] [connections] [seconds]
//!
//! `local`: SAE_1 -> SAE_3, both on KME_A (local pool), one 256-bit key per request.
//! `status`: GET status only (TLS + HTTP + store read, no key delivery): the transport ceiling.
//! `two-kme`: SAE_1@KME_A -> SAE_2@KME_B (peer reservation on every request), and every key is
//! then fetched by SAE_2 with dec_keys at KME_B (one enc + one dec per iteration).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use qkd_server::config::{Config, SourceConfig};
use qkd_server::etsi::{KeyContainer, KeyIdEntry, KeyIds};
use qkd_server::{pki, serve};

fn client(dir: &std::path::Path, sae: &str) -> reqwest::Client {
    let ca = qkd_server::tls::load_certs(&dir.join("ca.pem")).unwrap();
    let chain = qkd_server::tls::load_certs(&dir.join(format!("{sae}.pem"))).unwrap();
    let key = qkd_server::tls::load_key(&dir.join(format!("{sae}.key"))).unwrap();
    let cfg = qkd_server::tls::client_config(&ca, chain, key, "1.2").unwrap();
    reqwest::Client::builder()
        .tls_backend_preconfigured(cfg)
        .http1_only()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .build()
        .unwrap()
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("local", String::as_str).to_string();
    let conns: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let secs: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let kmes = vec!["KME_A".to_string(), "KME_B".to_string()];
    let saes: Vec<(String, String)> = ["SAE_1@KME_A", "SAE_2@KME_B", "SAE_3@KME_A"]
        .iter()
        .map(|s| pki::parse_sae_spec(s).unwrap())
        .collect();
    let port = 20_000 + (std::process::id() % 20_000) as u16;
    pki::init(&dir, &kmes, &saes, port, &[]).unwrap();
    let mut a = Config::load(&dir.join("KME_A.toml")).unwrap();
    let mut b = Config::load(&dir.join("KME_B.toml")).unwrap();
    for c in [&mut a, &mut b] {
        c.keys.max_key_count = 1 << 30;
        // One SAE drives every connection: lift the per-client caps (an operator sizes them
        // for its biggest SAE the same way).
        c.limits.max_connections_per_client = 4096;
        c.limits.max_in_flight_per_client = 4096;
        c.links[0].source = SourceConfig::Simulated {
            seed: "load".into(),
            block_bytes: 1 << 20,
            initial_blocks: 64,
            interval_ms: 0,
            max_blocks: 64,
        };
        c.local_pool.as_mut().unwrap().source = SourceConfig::Random {
            target_bytes: 16 << 20,
        };
    }
    let ha = serve(a).await.unwrap();
    let hb = if mode == "two-kme" {
        Some(serve(b).await.unwrap())
    } else {
        None
    };
    // Let the sources fill the pools.
    let t0 = Instant::now();
    loop {
        let local = ha
            .pool()
            .stats(qkd_server::pool::LOCAL_POOL)
            .allocatable_bytes;
        let link = ha.pool().stats("KME_B").blocks;
        if (mode != "two-kme" && local >= 16 << 20) || (mode == "two-kme" && link >= 64) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "pools not filled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let base_a = format!("https://localhost:{}/api/v1/keys", ha.sae_addr.port());
    let base_b = hb
        .as_ref()
        .map(|h| format!("https://localhost:{}/api/v1/keys", h.sae_addr.port()));
    let stop = Arc::new(AtomicBool::new(false));
    // The first second (TLS handshakes, warm-up) is not counted.
    let measure_from = Instant::now() + Duration::from_secs(1);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let ca = client(&dir, "SAE_1");
        let cb = client(&dir, "SAE_2");
        let (base_a, base_b, mode, stop) =
            (base_a.clone(), base_b.clone(), mode.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat: Vec<u32> = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            let (slave, body) = if mode == "two-kme" {
                ("SAE_2", "{}")
            } else {
                ("SAE_3", "{}")
            };
            let url = format!("{base_a}/{slave}/enc_keys");
            let status_url = format!("{base_a}/SAE_3/status");
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = if mode == "status" {
                    ca.get(&status_url).send().await
                } else {
                    ca.post(&url).body(body).send().await
                };
                let ok = match r {
                    Ok(r) if r.status().is_success() => r.bytes().await.ok(),
                    _ => None,
                };
                let Some(bytes) = ok else {
                    errors += 1;
                    continue;
                };
                if let Some(bb) = &base_b {
                    let kc: KeyContainer = serde_json::from_slice(&bytes).unwrap();
                    let ids = KeyIds {
                        key_IDs: kc
                            .keys
                            .iter()
                            .map(|k| KeyIdEntry {
                                key_ID: k.key_ID.clone(),
                                key_ID_extension: None,
                            })
                            .collect(),
                        key_IDs_extension: None,
                    };
                    let r = cb
                        .post(format!("{bb}/SAE_1/dec_keys"))
                        .json(&ids)
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => {
                            let got: KeyContainer = r.json().await.unwrap();
                            assert_eq!(got.keys[0].key, kc.keys[0].key, "keys differ");
                        }
                        _ => errors += 1,
                    }
                }
                if t >= measure_from {
                    lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                }
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = t.elapsed().as_secs_f64();
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await.unwrap();
        all.extend(l);
        errors += e;
    }
    all.sort_unstable();
    println!(
        "mode={mode} connections={conns} measured={:.1}s (after 1 s warm-up) iterations={} errors={errors}",
        elapsed,
        all.len()
    );
    println!(
        "rate={:.0} iterations/s  latency p50={:.2} ms p99={:.2} ms max={:.2} ms",
        all.len() as f64 / elapsed,
        pct(&all, 0.5),
        pct(&all, 0.99),
        pct(&all, 1.0)
    );
    ha.shutdown().await;
    if let Some(h) = hb {
        h.shutdown().await;
    }
}
