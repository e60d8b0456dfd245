//! An SAE pair under load while KMEs are killed: what was delivered, what was fetched, and
//! what went wrong.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use qkd_core::rng::{RandomSource, SeededRandom};
use qkd_server::client::Client;
use qkd_server::etsi::KeyRequest;

/// What the SAEs saw: keys the master took at its KME, and what the slave fetched at its own.
#[derive(Default)]
pub struct LoadLog {
    /// The master SAE.
    master: String,
    /// Key ID -> base64 bytes, of every key the master's KME delivered to it.
    pub delivered: std::collections::HashMap<uuid::Uuid, String>,
    /// Delivered, not yet fetched by the slave.
    pub pending: Vec<uuid::Uuid>,
    /// Keys the slave fetched.
    pub fetched: usize,
    /// Keys the slave's KME refused with 400 after a crash: each must be one that its store
    /// shows fetched by the slave (the fetch committed, then the KME died before its answer
    /// left).
    pub suspects: Vec<uuid::Uuid>,
    /// Violations: a key ID or key bytes delivered twice, different bytes at the two sides, or
    /// a delivered key the slave's KME does not know.
    pub violations: Vec<String>,
}

impl LoadLog {
    pub fn record_delivery(&mut self, keys: &[qkd_server::etsi::Key]) {
        for k in keys {
            let id: uuid::Uuid = k.key_ID.parse().unwrap();
            if self.delivered.values().any(|b| *b == *k.key) {
                self.violations
                    .push(format!("key bytes of {id} delivered before"));
            }
            if self.delivered.insert(id, k.key.to_string()).is_some() {
                self.violations.push(format!("key ID {id} delivered twice"));
            }
            self.pending.push(id);
        }
    }

    /// The slave fetches the pending keys (up to 128) at its KME.
    pub async fn fetch_pending(&mut self, dec: &Client) {
        if self.pending.is_empty() {
            return;
        }
        let ids: Vec<uuid::Uuid> = self.pending.iter().take(128).copied().collect();
        match dec.dec_keys(&self.master, &ids).await {
            Ok(got) => {
                for k in &got.keys {
                    let id: uuid::Uuid = k.key_ID.parse().unwrap();
                    if self.delivered.get(&id).map(String::as_str) != Some(&*k.key) {
                        self.violations
                            .push(format!("key {id} differs between the sites"));
                    }
                }
                self.fetched += ids.len();
                self.pending.drain(..ids.len());
            }
            Err(qkd_server::client::ClientError::Api { status: 400, .. }) => {
                // Unknown or already fetched (the standard does not tell them apart): one of
                // them may have been fetched by a request whose answer died with the KME. One by
                // one; the store decides at the end which it was.
                for id in ids {
                    match dec.dec_keys(&self.master, &[id]).await {
                        Ok(_) => self.fetched += 1,
                        Err(_) => self.suspects.push(id),
                    }
                    self.pending.retain(|p| *p != id);
                }
            }
            Err(_) => {} // the slave's KME is down: later
        }
    }
}

/// The master (`pair.0`, client `enc`) takes 4 keys at a time for the slave (`pair.1`, client
/// `dec`), which fetches them, without pause until `stop`.
pub async fn sae_load(
    enc: Client,
    dec: Client,
    pair: (&str, &str),
    stop: Arc<AtomicBool>,
) -> LoadLog {
    let mut log = LoadLog {
        master: pair.0.to_string(),
        ..LoadLog::default()
    };
    let req = KeyRequest {
        number: Some(4),
        size: Some(256),
        ..Default::default()
    };
    while !stop.load(Ordering::Relaxed) {
        if let Ok(kc) = enc.enc_keys(pair.1, &req).await {
            log.record_delivery(&kc.keys);
        }
        log.fetch_pending(&dec).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    log
}

/// Numbers below `n` from a seeded generator: a soak is the same on every run with its seed
/// (which KME is killed, when).
pub fn below(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut rng = SeededRandom::from_u64(seed);
    move |n| {
        let mut b = [0u8; 8];
        rng.fill(&mut b).unwrap();
        u64::from_le_bytes(b) % n
    }
}
