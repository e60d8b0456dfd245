//! The store's key-encryption key sealed by an HSM (`[store] kek_hsm`): made from the OS
//! CSPRNG when the store is created, wrapped in the token by a persistent AES-256 key that
//! never leaves it (AES key wrap with padding), and kept on disk only wrapped, in
//! `kek_sealed_file` (0600). Each start unwraps it in the token; without the token (or its
//! PIN) the store's key material cannot be read.

use std::path::Path;

use qkd_core::rng::{OsRandom, RandomSource};
use qkd_store::Kek;
use zeroize::Zeroizing;

use crate::config::Config;
use crate::hsm::Hsm;

/// Why the sealed KEK could not be had.
#[derive(Debug, thiserror::Error)]
#[error("store sealed by HSM {hsm:?}: {message}")]
pub struct SealingError {
    hsm: String,
    message: String,
}

/// The label of the token's sealing key for the KME `kme_id`.
fn sealing_label(kme_id: &str) -> String {
    format!("qkd-store-seal-{kme_id}")
}

/// The KEK of the store in `store_dir` when `[store] kek_hsm` is set: unsealed from
/// `kek_sealed_file`, or, for a store not created yet, made and sealed now. A store that exists
/// without its sealed file is refused (a new KEK would not open it).
pub fn sealed_kek(config: &Config, store_dir: &Path) -> Result<Option<Kek>, SealingError> {
    let (Some(name), Some(file)) = (&config.store.kek_hsm, &config.store.kek_sealed_file) else {
        return Ok(None);
    };
    let fail = |message: String| SealingError {
        hsm: name.clone(),
        message,
    };
    let h = config
        .hsms
        .iter()
        .find(|h| &h.name == name)
        .ok_or_else(|| fail("no such [[hsm]]".into()))?;
    let label = sealing_label(&config.kme_id);
    let token = Hsm::open_configured(h).map_err(|e| fail(e.to_string()))?;
    let kek = match std::fs::read(file) {
        Ok(wrapped) => token
            .unseal(&label, &wrapped)
            .map_err(|e| fail(format!("unsealing {}: {e}", file.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            refuse_existing_store(store_dir, file).map_err(fail)?;
            seal_new(&token, &label, file).map_err(fail)?
        }
        Err(e) => return Err(fail(format!("cannot read {}: {e}", file.display()))),
    };
    Ok(Some(Kek::from_bytes(&kek)))
}

/// A store already in `store_dir` was sealed by a file that is gone.
fn refuse_existing_store(store_dir: &Path, file: &Path) -> Result<(), String> {
    if store_dir.join("index.redb").exists() {
        return Err(format!(
            "{} is missing but the store {} exists; restore the sealed file (a new KEK would \
             not open the store)",
            file.display(),
            store_dir.display()
        ));
    }
    Ok(())
}

/// Makes a KEK, seals it under `label` and writes the sealed form to `file` (0600).
fn seal_new(token: &Hsm, label: &str, file: &Path) -> Result<Zeroizing<[u8; 32]>, String> {
    let mut kek = Zeroizing::new([0u8; 32]);
    OsRandom
        .fill(kek.as_mut())
        .map_err(|e| format!("making the KEK: {e}"))?;
    let wrapped = token
        .seal(label, &kek)
        .map_err(|e| format!("sealing: {e}"))?;
    crate::pki::write_private(file, &wrapped)
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    tracing::info!(file = %file.display(), "store KEK made and sealed by the HSM");
    Ok(kek)
}
