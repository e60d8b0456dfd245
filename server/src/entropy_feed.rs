//! Reseeding HSMs' random generators with 256 bits (`[[hsm]]`): on a schedule of 1 to 9
//! minutes, and on demand through `POST /admin/v1/hsm/<name>/seed` on the SAE listener (mutual
//! TLS, callers named in `seed_callers`). The bits come from the OS CSPRNG or are fresh QKD key
//! of a link, allocated like a delivery to the pseudo-SAE `hsm:<name>` (so the store's ledger
//! records it). Every reseed is an event with the HSM's name and outcome, a metric, and a
//! record in the store's ledger (the audit trail).

use std::sync::Arc;
use std::time::Duration;

use qkd_core::rng::{OsRandom, RandomSource};
use zeroize::Zeroizing;

use crate::config::HsmConfig;
use crate::hsm::Hsm;
use crate::kme::{Kme, blocking, now_ms};
use crate::monitor::Event;
use crate::pool::AllocRequest;

/// Bytes of one reseed (256 bits).
pub(crate) const SEED_BYTES: usize = 32;

/// The recipient name under which a link's key feeds an HSM.
fn hsm_recipient(name: &str) -> String {
    format!("hsm:{name}")
}

impl Kme {
    /// Reseeds the HSM `name` now: draws the seed, opens the token, `C_SeedRandom`. Records the
    /// outcome (event, counter) and returns it.
    pub(crate) async fn reseed_hsm(&self, name: &str) -> Result<String, String> {
        let Some(h) = self.cfg.hsms.iter().find(|h| h.name == name).cloned() else {
            return Err(format!("no [[hsm]] named {name:?}"));
        };
        let source = h.seed_source.clone();
        let outcome = match self.draw_seed(&h).await {
            Ok(seed) => blocking(move || seed_once(&h, &seed[..]))
                .await
                .unwrap_or_else(|_| Err("HSM task failed".into())),
            Err(e) => Err(e),
        };
        self.monitor.hsm_reseeded(name, outcome.is_ok());
        let (pool, what) = (
            self.pool.clone(),
            format!("reseed HSM {name} from {source}"),
        );
        let link = source.strip_prefix("link:").unwrap_or_default().to_string();
        let recorded = outcome.clone();
        let audit = blocking(move || {
            let r = recorded.as_deref().map_err(String::as_str);
            pool.record(&link, &what, r)
        })
        .await;
        if !matches!(audit, Ok(Ok(()))) {
            tracing::warn!(hsm = name, "the reseed could not be recorded in the ledger");
        }
        self.monitor.event(Event::HsmReseed {
            hsm: name.to_string(),
            source,
            ok: outcome.is_ok(),
            error: outcome.as_ref().err().cloned(),
        });
        match &outcome {
            Ok(_) => tracing::info!(hsm = name, "HSM reseeded with 256 bits"),
            Err(e) => tracing::warn!(hsm = name, error = %e, "HSM reseed failed"),
        }
        outcome
    }

    /// 256 bits for `h`, from its source.
    async fn draw_seed(&self, h: &HsmConfig) -> Result<Zeroizing<[u8; SEED_BYTES]>, String> {
        let mut seed = Zeroizing::new([0u8; SEED_BYTES]);
        let Some(peer) = h.seed_link() else {
            OsRandom
                .fill(&mut seed[..])
                .map_err(|e| format!("OS random generator: {e}"))?;
            return Ok(seed);
        };
        let recipient = hsm_recipient(&h.name);
        let alloc = AllocRequest {
            pool: peer.to_string(),
            master: recipient.clone(),
            slaves: vec![recipient],
            local_slaves: Vec::new(),
            number: 1,
            size_bits: (SEED_BYTES * 8) as u32,
            // Fetched at once by its one recipient; the expiry only has to lie ahead.
            expires_at_ms: now_ms().saturating_add(60_000),
        };
        let (_, keys) = self
            .pool
            .allocate_for_master(&alloc)
            .await
            .map_err(|_| "key pool closed".to_string())?
            .map_err(|e| format!("link {peer}: {e}"))?;
        self.check_watermark(peer);
        let key = keys.first().ok_or("no key allocated")?;
        if key.material.len() != SEED_BYTES {
            return Err(format!(
                "link {peer}: a key of {} bytes",
                key.material.len()
            ));
        }
        seed.copy_from_slice(&key.material);
        Ok(seed)
    }
}

/// Opens `h`'s token, logs in and seeds it.
fn seed_once(h: &HsmConfig, seed: &[u8]) -> Result<String, String> {
    let hsm = Hsm::open_configured(h).map_err(|e| e.to_string())?;
    hsm.seed_random(seed).map_err(|e| e.to_string())?;
    Ok(format!(
        "{} bytes from {} into token {:?}",
        seed.len(),
        h.seed_source,
        hsm.label()
    ))
}

/// Background: each `[[hsm]]` with a period is reseeded every `reseed_minutes`, the first time
/// one period after start.
pub(crate) async fn run(
    kme: Arc<Kme>,
    name: String,
    minutes: u8,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let period = Duration::from_secs(60 * u64::from(minutes));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let _ = kme.reseed_hsm(&name).await;
    }
}
