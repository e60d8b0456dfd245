//! Test harness: a dev PKI, two KMEs on loopback with ephemeral ports, mTLS clients.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use qkd_server::client::Client;
use qkd_server::config::{Config, SourceConfig};
use qkd_server::{ServerHandle, pki, serve};

pub struct Lab {
    pub dir: tempfile::TempDir,
    pub a: Config,
    pub b: Config,
}

/// Ports below the kernel's ephemeral range, distinct per test in this process (an ephemeral
/// port chosen by the kernel and released could be reused by a parallel test's client).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 10_000 + (std::process::id() * 97 + n) % 20_000;
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
}

/// KME_A with SAE_1, SAE_3; KME_B with SAE_2, SAE_4. Links use a simulated source.
pub fn lab(ttl_secs: u64) -> Lab {
    let mut lab = base_lab(pki::RawSetup::Cor);
    for c in [&mut lab.a, &mut lab.b] {
        c.keys.reservation_ttl_secs = ttl_secs;
        c.links[0].source = SourceConfig::Simulated {
            seed: "test seed".into(),
            block_bytes: 4096,
            initial_blocks: 8,
            interval_ms: 0,
            max_blocks: 8,
        };
        c.local_pool.as_mut().unwrap().source = SourceConfig::Random {
            target_bytes: 1 << 16,
        };
    }
    lab
}

/// Like [`lab`], with links that take `.cor` files from `<lab>/<KME>/incoming/<PEER>`
/// ([`Lab::incoming`]), polled every `poll_ms`.
pub fn cor_lab(poll_ms: u64) -> Lab {
    let mut lab = lab(60);
    for c in [&mut lab.a, &mut lab.b] {
        let dir = lab
            .dir
            .path()
            .join(&c.kme_id)
            .join("incoming")
            .join(&c.links[0].peer);
        c.links[0].source = SourceConfig::Cor { dir, poll_ms };
    }
    lab
}

/// Two KMEs that post-process a simulated device between them (KME_A is Alice), with small
/// blocks, and their stores in the lab directory.
pub fn raw_lab() -> Lab {
    let mut lab = base_lab(pki::RawSetup::Simulated);
    for c in [&mut lab.a, &mut lab.b] {
        let p = c.links[0].processing.as_mut().unwrap();
        p.block_bits = 1 << 18;
        p.sample_bits = 1 << 12;
        p.block_timeout_secs = 10;
        if let SourceConfig::SimulatedDevice {
            raw_bits_per_sec, ..
        } = &mut c.links[0].source
        {
            *raw_bits_per_sec = 1 << 21;
        }
    }
    lab
}

fn base_lab(raw: pki::RawSetup) -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let kmes = vec!["KME_A".to_string(), "KME_B".to_string()];
    let saes: Vec<(String, String)> = ["SAE_1@KME_A", "SAE_2@KME_B", "SAE_3@KME_A", "SAE_4@KME_B"]
        .iter()
        .map(|s| pki::parse_sae_spec(s).unwrap())
        .collect();
    pki::init_with(dir.path(), &kmes, &saes, 8443, &[], raw).unwrap();
    let mut a = Config::load(&dir.path().join("KME_A.toml")).unwrap();
    let mut b = Config::load(&dir.path().join("KME_B.toml")).unwrap();
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    a.listen = SocketAddr::from(([127, 0, 0, 1], ports[0]));
    a.peer_listen = Some(SocketAddr::from(([127, 0, 0, 1], ports[1])));
    b.listen = SocketAddr::from(([127, 0, 0, 1], ports[2]));
    b.peer_listen = Some(SocketAddr::from(([127, 0, 0, 1], ports[3])));
    a.links[0].url = format!("https://127.0.0.1:{}", ports[3]);
    b.links[0].url = format!("https://127.0.0.1:{}", ports[1]);
    Lab { dir, a, b }
}

impl Lab {
    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }
    /// The `.cor` directory of `kme`'s link (see [`cor_lab`]).
    pub fn incoming(&self, kme: &str) -> PathBuf {
        let peer = if kme == "KME_A" { "KME_B" } else { "KME_A" };
        self.dir.path().join(kme).join("incoming").join(peer)
    }
    pub fn client(&self, kme: &ServerHandle, sae: &str) -> Client {
        sae_client(self.dir.path(), kme, sae)
    }
}

/// An ETSI client of `sae` (its certificate in the PKI directory `dir`) at `kme`.
pub fn sae_client(dir: &Path, kme: &ServerHandle, sae: &str) -> Client {
    Client::new(
        &format!("https://localhost:{}", kme.sae_addr.port()),
        &dir.join("ca.pem"),
        &dir.join(format!("{sae}.pem")),
        &dir.join(format!("{sae}.key")),
    )
    .unwrap()
}

pub async fn start(cfg: &Config) -> ServerHandle {
    let h = serve(cfg.clone()).await.unwrap();
    wait_ready(&h).await;
    h
}

/// Waits until the simulated and random sources have filled the pools.
pub async fn wait_ready(h: &ServerHandle) {
    for _ in 0..200 {
        let local = h
            .pool()
            .stats(qkd_server::pool::LOCAL_POOL)
            .allocatable_bytes;
        let peer = h
            .pool()
            .stats(if h.kme_id() == "KME_A" {
                "KME_B"
            } else {
                "KME_A"
            })
            .blocks;
        if local >= 1 << 16 && peer >= 8 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("pools not filled");
}

pub fn b64(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

pub fn raw_tls_client(ca: &Path, cert: Option<(&Path, &Path)>) -> reqwest::Client {
    let roots = qkd_server::tls::load_certs(ca).unwrap();
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(qkd_server::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store);
    let cfg = match cert {
        Some((c, k)) => b
            .with_client_auth_cert(
                qkd_server::tls::load_certs(c).unwrap(),
                qkd_server::tls::load_key(k).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(cfg)
        .build()
        .unwrap()
}

/// The body of `GET path` on `h`'s monitor listener.
pub async fn monitor_get(lab: &Lab, h: &ServerHandle, path: &str) -> String {
    monitor_text(&lab.path("ca.pem"), h, path).await
}

/// The body of `GET path` on `h`'s monitor listener (`ca`: any CA file, for the client).
pub async fn monitor_text(ca: &Path, h: &ServerHandle, path: &str) -> String {
    raw_tls_client(ca, None)
        .get(format!("http://{}{path}", h.monitor_addr.unwrap()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits until `h` has at least `blocks` activated blocks on its link to `peer`.
pub async fn wait_blocks(h: &ServerHandle, peer: &str, blocks: u64) {
    for _ in 0..600 {
        if h.pool().stats(peer).blocks >= blocks {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{} holds fewer than {blocks} blocks", h.kme_id());
}

/// KMEs joined by the given links only, from `qkd pki init --link`: `SAE_<KME>` at each KME,
/// ports free on loopback, each link's key from a simulated source seeded by the link's name
/// (`blocks` blocks of 4 KiB on each).
pub struct NetLab {
    pub dir: tempfile::TempDir,
    pub configs: Vec<Config>,
}

pub fn net_lab(kmes: &[&str], links: &[(&str, &str)], blocks: u64) -> NetLab {
    let dir = tempfile::tempdir().unwrap();
    let kmes: Vec<String> = kmes.iter().map(|k| k.to_string()).collect();
    let saes: Vec<(String, String)> = kmes
        .iter()
        .map(|k| (format!("SAE_{}", &k[4..]), k.clone()))
        .collect();
    let links: Vec<(String, String)> = links
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    pki::init_network(
        dir.path(),
        &kmes,
        &saes,
        &links,
        8443,
        &[],
        pki::RawSetup::Cor,
    )
    .unwrap();
    let mut configs: Vec<Config> = kmes
        .iter()
        .map(|k| Config::load(&dir.path().join(format!("{k}.toml"))).unwrap())
        .collect();
    let ports: Vec<(u16, u16)> = kmes.iter().map(|_| (free_port(), free_port())).collect();
    pki::on_loopback(&mut configs, &ports, 4096, blocks);
    for c in &mut configs {
        c.state_dir = None;
    }
    NetLab { dir, configs }
}

impl NetLab {
    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }
    /// The config of `kme`.
    pub fn config(&self, kme: &str) -> &Config {
        self.configs.iter().find(|c| c.kme_id == kme).unwrap()
    }
    /// Starts `kme` and waits until each of its links holds its blocks.
    pub async fn start(&self, kme: &str) -> ServerHandle {
        let cfg = self.config(kme);
        let h = serve(cfg.clone()).await.unwrap();
        for l in &cfg.links {
            let SourceConfig::Simulated { initial_blocks, .. } = l.source else {
                unreachable!()
            };
            wait_blocks(&h, &l.peer, initial_blocks).await;
        }
        h
    }
    pub fn client(&self, kme: &ServerHandle, sae: &str) -> Client {
        sae_client(self.dir.path(), kme, sae)
    }
}
