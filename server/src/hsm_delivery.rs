//! Keys for SAEs of `kind = "pkcs11"` (docs/server.md, "Keys delivered into an HSM"). Such an
//! SAE is the slave of a master's request: its keys are fetched from the pool for it (its one
//! delivery, recorded in the ledger) and created in the token of its `[[hsm]]` as persistent,
//! sensitive, non-extractable secret-key objects labelled with their key IDs, so their value
//! exists only in the KME and the HSM.
//!
//! The master's request is answered only once the token holds every key. Should a token refuse
//! one, the keys already created there are destroyed, every key of the request is destroyed in
//! the pool and the request is refused: no one holds a key the HSM does not.

use uuid::Uuid;

use crate::config::{HsmConfig, SaeKind};
use crate::hsm::Hsm;
use crate::kme::{Kme, blocking};
use crate::monitor::Event;
use crate::pool::FetchedKey;

impl Kme {
    /// The `[[hsm]]` of every pkcs11 SAE among `slaves`, with the SAE.
    fn hsm_slaves(&self, slaves: &[String]) -> Vec<(String, HsmConfig)> {
        slaves
            .iter()
            .filter_map(|id| {
                let sae = self.cfg.saes.iter().find(|s| &s.id == id)?;
                let name = sae.hsm.as_ref().filter(|_| sae.kind == SaeKind::Pkcs11)?;
                let hsm = self.cfg.hsms.iter().find(|h| &h.name == name)?;
                Some((id.clone(), hsm.clone()))
            })
            .collect()
    }

    /// Delivers the keys `ids` into the token of every pkcs11 SAE among `slaves` (none: does
    /// nothing). On failure every key of `ids` is destroyed, in the pool and in the tokens, and
    /// the reason returned.
    pub(crate) async fn deliver_into_hsms(
        &self,
        slaves: &[String],
        ids: &[Uuid],
    ) -> Result<(), String> {
        let mut delivered = Vec::new();
        for (sae, hsm) in self.hsm_slaves(slaves) {
            let outcome = self.deliver_into(&sae, &hsm, ids).await;
            self.record_delivery(&sae, &hsm.name, ids.len(), &outcome)
                .await;
            self.monitor
                .hsm_delivered(&hsm.name, outcome.is_ok(), ids.len());
            self.monitor.event(Event::HsmDelivery {
                sae: sae.clone(),
                hsm: hsm.name.clone(),
                number: ids.len() as u64,
                error: outcome.as_ref().err().cloned(),
            });
            if let Err(e) = outcome {
                tracing::warn!(sae, hsm = hsm.name, error = %e, "delivery into an HSM failed");
                let name = hsm.name.clone();
                delivered.push(hsm);
                self.undo_deliveries(delivered, ids).await;
                return Err(format!(
                    "{sae} receives its keys in HSM {name:?}, which failed: {e}"
                ));
            }
            delivered.push(hsm);
        }
        Ok(())
    }

    /// Fetches `ids` for `sae` and creates them in `hsm`'s token.
    async fn deliver_into(&self, sae: &str, hsm: &HsmConfig, ids: &[Uuid]) -> Result<(), String> {
        let (p, sae, wanted) = (self.pool.clone(), sae.to_string(), ids.to_vec());
        let keys = blocking(move || p.fetch(&wanted, &sae))
            .await
            .map_err(|e| e.message())?
            .map_err(|e| format!("fetching the keys: {e}"))?;
        let hsm = hsm.clone();
        blocking(move || import_all(&hsm, &keys))
            .await
            .map_err(|e| e.message())?
    }

    /// The delivery's outcome in the audit trail (the keys' IDs are in the fetch record).
    async fn record_delivery(&self, sae: &str, hsm: &str, n: usize, outcome: &Result<(), String>) {
        let what = format!("create {n} key(s) of {sae} in HSM {hsm}");
        let (pool, outcome) = (self.pool.clone(), outcome.clone());
        let recorded = blocking(move || {
            let r = match &outcome {
                Ok(()) => Ok("created"),
                Err(e) => Err(e.as_str()),
            };
            pool.record("", &what, r)
        })
        .await;
        if !matches!(recorded, Ok(Ok(()))) {
            tracing::warn!(
                sae,
                hsm,
                "an HSM delivery could not be recorded in the ledger"
            );
        }
    }

    /// Destroys `ids` in the pool and in the tokens of `hsms`, as far as they were made.
    async fn undo_deliveries(&self, hsms: Vec<HsmConfig>, ids: &[Uuid]) {
        let (p, wanted) = (self.pool.clone(), ids.to_vec());
        let labels: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        let _ = blocking(move || {
            if let Err(e) = p.destroy(&wanted) {
                tracing::warn!(error = %e, "destroying the keys of a failed HSM delivery");
            }
            for h in &hsms {
                if let Err(e) = Hsm::open_configured(h)
                    .map_err(|e| e.to_string())
                    .and_then(|t| destroy_all(&t, &labels))
                {
                    tracing::warn!(hsm = h.name, error = %e, "removing keys of a failed delivery");
                }
            }
        })
        .await;
    }
}

/// Creates every key in `h`'s token, labelled with its key ID (CKA_ID: the ID's 16 bytes). All
/// or nothing: on a refusal the keys created before it are destroyed again.
fn import_all(h: &HsmConfig, keys: &[FetchedKey]) -> Result<(), String> {
    let token = Hsm::open_configured(h).map_err(|e| e.to_string())?;
    for (i, k) in keys.iter().enumerate() {
        if let Err(e) = token.import_key(&k.id.to_string(), k.id.as_bytes(), &k.material) {
            let made: Vec<String> = keys[..i].iter().map(|k| k.id.to_string()).collect();
            let _ = destroy_all(&token, &made);
            return Err(format!("key {}: {e}", k.id));
        }
    }
    Ok(())
}

fn destroy_all(token: &Hsm, labels: &[String]) -> Result<(), String> {
    for l in labels {
        token.destroy_keys(l).map_err(|e| e.to_string())?;
    }
    Ok(())
}
