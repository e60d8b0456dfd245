//! The end of `qkd demo`: two KMEs on loopback with a fresh dev PKI, both filled with the
//! pipeline's final keys, SAE_1 asking KME_A for keys and SAE_2 fetching them by ID at KME_B.

use std::net::{SocketAddr, TcpListener};

use anyhow::{Context, bail};
use qkd_core::BitBlock;
use qkd_server::client::Client;
use qkd_server::etsi::KeyRequest;
use qkd_server::{Config, ServerHandle, pki};
use serde::Serialize;
use zeroize::Zeroizing;

/// What the KME part of the demo did.
#[derive(Debug, Serialize)]
pub struct KmeDemo {
    /// Blocks of final key loaded into each KME.
    pub blocks_loaded: usize,
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

fn client(dir: &std::path::Path, h: &ServerHandle, sae: &str) -> anyhow::Result<Client> {
    Ok(Client::new(
        &format!("https://localhost:{}", h.sae_addr.port()),
        &dir.join("ca.pem"),
        &dir.join(format!("{sae}.pem")),
        &dir.join(format!("{sae}.key")),
    )?)
}

/// Runs the two-KME demo with the final keys of the pipeline (`(block index, key)`).
pub fn run(keys: &[(u64, BitBlock)]) -> anyhow::Result<KmeDemo> {
    if keys.is_empty() {
        bail!("the pipeline produced no final key to serve");
    }
    let lab = tempfile::tempdir().context("creating a temporary directory for the KMEs")?;
    let dir = lab.path();
    let kmes = ["KME_A".to_string(), "KME_B".to_string()];
    let saes = [
        ("SAE_1".to_string(), "KME_A".to_string()),
        ("SAE_2".to_string(), "KME_B".to_string()),
    ];
    pki::init(dir, &kmes, &saes, 8443, &[])?;
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
    crate::kme::runtime()?.block_on(async {
        let ka = qkd_server::serve(a).await?;
        let kb = qkd_server::serve(b).await?;
        // Both KMEs get the same final keys under the same block IDs, as the two ends of a
        // link do after post-processing.
        for (index, key) in keys {
            let id = format!("demo-{index:06}");
            ka.add_block("KME_B", &id, Zeroizing::new(key.to_bytes().to_vec()))
                .await?;
            kb.add_block("KME_A", &id, Zeroizing::new(key.to_bytes().to_vec()))
                .await?;
        }
        let req = KeyRequest {
            number: Some(4),
            size: Some(256),
            ..Default::default()
        };
        let enc = client(dir, &ka, "SAE_1")?.enc_keys("SAE_2", &req).await?;
        let ids: Vec<uuid::Uuid> = enc
            .keys
            .iter()
            .map(|k| uuid::Uuid::parse_str(&k.key_ID))
            .collect::<Result<_, _>>()?;
        let dec = client(dir, &kb, "SAE_2")?.dec_keys("SAE_1", &ids).await?;
        let bytes_match = enc.keys.len() == dec.keys.len()
            && enc
                .keys
                .iter()
                .zip(&dec.keys)
                .all(|(x, y)| x.key_ID == y.key_ID && x.key == y.key);
        ka.shutdown().await;
        kb.shutdown().await;
        Ok(KmeDemo {
            blocks_loaded: keys.len(),
            keys: enc.keys.len(),
            key_bits: 256,
            key_ids: enc.keys.iter().map(|k| k.key_ID.clone()).collect(),
            bytes_match,
        })
    })
}
