//! Latency of a well-behaved SAE while others hold idle and slow-header connections open against
//! the same KME (`scripts/bench-dos.sh` runs it against a `qkd serve` process).
//!
//!   dos_probe PKI_DIR URL GOOD_SAE SLAVE ATTACKER_PREFIX ATTACKERS IDLE SLOW REQUESTS
//!
//! IDLE connections finish the TLS handshake as one of `ATTACKER_PREFIX1..=ATTACKERS` and send
//! nothing; SLOW connections send half a request line and then one header byte per second. Each
//! reconnects 100 ms after the KME closes it, so the load is held for the whole run. After a
//! 3 s ramp, GOOD_SAE asks for one key for SLAVE REQUESTS times (20 ms apart) over one
//! keep-alive connection. Prints one JSON line: latency percentiles in ms, errors, and how many
//! attacker connections were open (sampled at each request).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

struct Attack {
    dir: PathBuf,
    port: u16,
    prefix: String,
    identities: usize,
    open: AtomicUsize,
    stop: AtomicBool,
}

impl Attack {
    fn tls(&self, who: &str) -> Arc<rustls::ClientConfig> {
        let load_certs = |f: &str| qkd_server::tls::load_certs(&self.dir.join(f)).unwrap();
        let cfg = qkd_server::tls::client_config(
            &load_certs("ca.pem"),
            load_certs(&format!("{who}.pem")),
            qkd_server::tls::load_key(&self.dir.join(format!("{who}.key"))).unwrap(),
            "1.2",
        )
        .unwrap();
        Arc::new(cfg)
    }

    async fn connect(&self, cfg: Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        tokio_rustls::TlsConnector::from(cfg)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    }

    /// One attacker connection, reopened whenever the KME closes it.
    async fn hold(self: Arc<Self>, n: usize, slow: bool) {
        let who = format!("{}{}", self.prefix, n % self.identities + 1);
        let cfg = self.tls(&who);
        while !self.stop.load(Ordering::Relaxed) {
            if let Ok(mut s) = self.connect(cfg.clone()).await {
                self.open.fetch_add(1, Ordering::Relaxed);
                if slow {
                    let _ = s
                        .write_all(b"GET /api/v1/keys/x/status HTTP/1.1\r\nX-Slow: ")
                        .await;
                    while !self.stop.load(Ordering::Relaxed) && s.write_all(b"a").await.is_ok() {
                        let mut b = [0u8; 1];
                        // A closed connection shows up as a read of 0 (or an error).
                        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut b)).await {
                            Err(_) => continue,
                            Ok(_) => break,
                        }
                    }
                } else {
                    let mut b = [0u8; 64];
                    let _ = s.read(&mut b).await;
                }
                self.open.fetch_sub(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() != 9 {
        eprintln!(
            "usage: dos_probe PKI_DIR URL GOOD_SAE SLAVE ATTACKER_PREFIX ATTACKERS IDLE SLOW REQUESTS"
        );
        std::process::exit(2);
    }
    let num = |i: usize| -> usize {
        a[i].parse().unwrap_or_else(|_| {
            eprintln!("argument {} ({:?}) is not a number", i + 1, a[i]);
            std::process::exit(2)
        })
    };
    let dir = PathBuf::from(&a[0]);
    let url = a[1].clone();
    let port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(443);
    let (idle, slow, requests) = (num(6), num(7), num(8));
    let attack = Arc::new(Attack {
        dir: dir.clone(),
        port,
        prefix: a[4].clone(),
        identities: num(5).max(1),
        open: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    });
    let mut tasks = Vec::new();
    for n in 0..idle + slow {
        tasks.push(tokio::spawn(attack.clone().hold(n, n >= idle)));
        if n % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    if idle + slow > 0 {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let p = |f: &str| -> PathBuf { Path::new(&dir).join(f) };
    let good = qkd_server::client::Client::new(
        &url,
        &p("ca.pem"),
        &p(&format!("{}.pem", a[2])),
        &p(&format!("{}.key", a[2])),
    )
    .expect("client for the good SAE");
    let mut lat = Vec::with_capacity(requests);
    let (mut errors, mut open_min, mut open_max) = (0usize, usize::MAX, 0usize);
    for _ in 0..requests {
        let t = Instant::now();
        match good.enc_keys_get(&a[3], Some(1), None).await {
            Ok(_) => lat.push(t.elapsed().as_secs_f64() * 1e3),
            Err(e) => {
                errors += 1;
                if errors <= 3 {
                    eprintln!("good SAE: {e}");
                }
            }
        }
        let open = attack.open.load(Ordering::Relaxed);
        open_min = open_min.min(open);
        open_max = open_max.max(open);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    attack.stop.store(true, Ordering::Relaxed);
    lat.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({
            "idle": idle, "slow": slow, "requests": requests, "errors": errors,
            "p50_ms": percentile(&lat, 0.5), "p99_ms": percentile(&lat, 0.99),
            "max_ms": lat.last().copied().unwrap_or(f64::NAN),
            "attacker_connections_open_min": open_min, "attacker_connections_open_max": open_max,
        })
    );
    std::process::exit(0);
}
