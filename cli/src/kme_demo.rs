//! The end of `qkd demo`: the two-site path. A fresh dev PKI with `--raw simulated` configs,
//! KME_A and KME_B as two `qkd serve` processes on loopback that post-process an (INSECURE)
//! simulated device between themselves over mutual TLS, then SAE_1 taking keys at KME_A and
//! SAE_2 fetching them by ID at KME_B.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use qkd_server::client::Client;
use qkd_server::etsi::KeyRequest;
use qkd_server::{Config, pki};
use serde::Serialize;

/// What the KME part of the demo did.
#[derive(Debug, Serialize)]
pub struct KmeDemo {
    /// Blocks KME_A had activated when SAE_1 asked.
    pub blocks_kept: u64,
    /// The link's last QBER at KME_A.
    pub qber: Option<f64>,
    /// Keys SAE_1 received from KME_A.
    pub keys: usize,
    /// Bits per key.
    pub key_bits: u64,
    /// Key IDs (UUIDv4).
    pub key_ids: Vec<String>,
    /// Whether SAE_2's keys from KME_B equal SAE_1's from KME_A, byte for byte.
    pub bytes_match: bool,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn client(dir: &Path, port: u16, sae: &str) -> anyhow::Result<Client> {
    Ok(Client::new(
        &format!("https://localhost:{port}"),
        &dir.join("ca.pem"),
        &dir.join(format!("{sae}.pem")),
        &dir.join(format!("{sae}.key")),
    )?)
}

/// A `qkd serve` child, killed when dropped.
struct Kme(Child);

impl Drop for Kme {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(dir: &Path, cfg: &Config) -> anyhow::Result<Kme> {
    let path = dir.join(format!("{}.demo.toml", cfg.kme_id));
    std::fs::write(&path, toml::to_string_pretty(cfg)?)?;
    let exe = std::env::current_exe().context("locating the qkd binary")?;
    let child = Command::new(exe)
        .args(["serve", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting qkd serve for {}", cfg.kme_id))?;
    Ok(Kme(child))
}

/// Runs the two-KME demo.
pub fn run() -> anyhow::Result<KmeDemo> {
    let lab = tempfile::tempdir().context("creating a temporary directory for the KMEs")?;
    let dir = lab.path();
    let kmes = ["KME_A".to_string(), "KME_B".to_string()];
    let saes = [
        ("SAE_1".to_string(), "KME_A".to_string()),
        ("SAE_2".to_string(), "KME_B".to_string()),
    ];
    pki::init_with(dir, &kmes, &saes, 8443, &[], pki::RawSetup::Simulated)?;
    let mut a = Config::load(&dir.join("KME_A.toml"))?;
    let mut b = Config::load(&dir.join("KME_B.toml"))?;
    // Ephemeral ports instead of the PKI's fixed ones, so the demo never collides with a KME
    // already running here.
    let p: Vec<u16> = (0..4).map(|_| free_port()).collect::<anyhow::Result<_>>()?;
    let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
    a.listen = local(p[0]);
    a.peer_listen = Some(local(p[1]));
    b.listen = local(p[2]);
    b.peer_listen = Some(local(p[3]));
    a.links[0].url = format!("https://127.0.0.1:{}", p[3]);
    b.links[0].url = format!("https://127.0.0.1:{}", p[1]);
    let _kb = spawn(dir, &b)?;
    let _ka = spawn(dir, &a)?;
    crate::kme::runtime()?.block_on(async {
        let sae1 = client(dir, p[0], "SAE_1")?;
        let sae2 = client(dir, p[2], "SAE_2")?;
        let req = KeyRequest {
            number: Some(4),
            size: Some(256),
            ..Default::default()
        };
        // Wait for the first blocks to be post-processed and activated at both sites.
        let start = Instant::now();
        let (enc, status) = loop {
            if start.elapsed() > Duration::from_secs(60) {
                bail!("KME_A had no key for SAE_2 after 60 s");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            let Ok(status) = sae1.status("SAE_2").await else {
                continue;
            };
            if status.stored_key_count < 4 {
                continue;
            }
            if let Ok(enc) = sae1.enc_keys("SAE_2", &req).await {
                break (enc, status);
            }
        };
        let ids: Vec<uuid::Uuid> = enc
            .keys
            .iter()
            .map(|k| uuid::Uuid::parse_str(&k.key_ID))
            .collect::<Result<_, _>>()?;
        // KME_B reserved them durably before KME_A answered.
        let dec = sae2
            .dec_keys("SAE_1", &ids)
            .await
            .context("SAE_2 fetching the keys at KME_B")?;
        let bytes_match = enc.keys.len() == dec.keys.len()
            && enc
                .keys
                .iter()
                .zip(&dec.keys)
                .all(|(x, y)| x.key_ID == y.key_ID && x.key == y.key);
        let pp = status
            .status_extension
            .as_ref()
            .map(|e| e["post_processing"].clone())
            .unwrap_or_default();
        Ok(KmeDemo {
            blocks_kept: pp["blocks_kept"].as_u64().unwrap_or(0),
            qber: pp["qber"].as_f64(),
            keys: enc.keys.len(),
            key_bits: 256,
            key_ids: enc.keys.iter().map(|k| k.key_ID.clone()).collect(),
            bytes_match,
        })
    })
}
