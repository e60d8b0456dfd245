//! Key sources feeding the pools: `.cor` directory watching (a link's files go through the
//! block check of [`crate::cor_check`]), the INSECURE simulated source (both KMEs derive
//! identical blocks from a shared seed) and the local CSPRNG top-up.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use qkd_core::rng::{OsRandom, RandomSource, SeededRandom};
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::kme::Kme;
use crate::monitor::Event;

/// Bytes of block `n` of a simulated link with `seed` (identical on both KMEs).
pub fn simulated_block(seed: &str, n: u64, len: usize) -> Zeroizing<Vec<u8>> {
    let mut h = blake3::Hasher::new_derive_key("qkd simulated link block v1");
    h.update(seed.as_bytes());
    h.update(&n.to_le_bytes());
    let mut rng = SeededRandom::from_seed(*h.finalize().as_bytes());
    let mut out = Zeroizing::new(vec![0u8; len]);
    rng.bytes(&mut out);
    out
}

pub(crate) async fn add(
    kme: &Kme,
    pool: &str,
    id: String,
    data: Zeroizing<Vec<u8>>,
) -> Result<bool, String> {
    let bytes = data.len() as u64;
    let p = kme.pool.clone();
    let (pl, bid) = (pool.to_string(), id.clone());
    let added = tokio::task::spawn_blocking(move || p.add_block(&pl, &bid, data))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if added {
        kme.monitor.event(Event::Activated {
            pool: pool.to_string(),
            block: id,
            bytes,
        });
        kme.check_watermark(pool);
    }
    Ok(added)
}

/// Watches `dir` for `.cor` files; a file is taken once its size is unchanged across one poll.
/// A link's file becomes pending and is appended once the peer KME holds equal bytes
/// ([`crate::cor_check`]); the local pool's is appended whole at once. Either is then
/// overwritten and deleted.
pub(crate) async fn watch_cor(
    kme: Arc<Kme>,
    pool: String,
    dir: PathBuf,
    poll: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut sizes: HashMap<PathBuf, u64> = HashMap::new();
    let mut tick = tokio::time::interval(poll);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(_) => continue, // directory not there (yet)
        };
        let mut now: HashMap<PathBuf, u64> = HashMap::new();
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("cor") {
                continue;
            }
            let Ok(meta) = e.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            now.insert(path, meta.len());
        }
        let check = kme.cor.get(&pool).cloned();
        let mut errors = Vec::new();
        for (path, &size) in &now {
            if size == 0 || sizes.get(path) != Some(&size) {
                continue;
            }
            let taken = match (&check, file_name(path)) {
                (Some(c), Ok(name)) => c.offer(name, size).await,
                (None, Ok(_)) => ingest_cor(&kme, &pool, path).await,
                (_, Err(m)) => Err(m),
            };
            errors.extend(taken.err());
        }
        if let Some(c) = &check {
            let present = now
                .keys()
                .filter_map(|p| file_name(p).ok())
                .map(String::from);
            c.retain(&present.collect()).await;
            errors.extend(c.check_pending(&kme).await);
        }
        for message in errors {
            kme.monitor.event(Event::SourceError {
                pool: pool.clone(),
                message,
            });
        }
        sizes = now;
    }
}

fn file_name(path: &Path) -> Result<&str, String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{}: file name is not UTF-8", path.display()))
}

/// The local pool's `.cor` file: appended whole, then overwritten and deleted.
async fn ingest_cor(kme: &Kme, pool: &str, path: &Path) -> Result<(), String> {
    let id = file_name(path)?.to_string();
    let data = Zeroizing::new(std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?);
    add(kme, pool, id, data).await?;
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || crate::link::ledger::burn(&p))
        .await
        .map_err(|e| e.to_string())?
}

/// The INSECURE simulated source.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn simulated(
    kme: Arc<Kme>,
    pool: String,
    seed: String,
    block_bytes: u32,
    initial: u64,
    interval: Duration,
    max_blocks: u64,
    mut stop: watch::Receiver<bool>,
) {
    tracing::warn!(
        pool,
        "INSECURE simulated key source: key material derived from a seed in the config"
    );
    // Block IDs `sim-<n>`; after a restart the blocks already stored are skipped as duplicates.
    let mut n = 0;
    while n < initial.min(max_blocks) {
        let data = simulated_block(&seed, n, block_bytes as usize);
        if let Err(m) = add(&kme, &pool, format!("sim-{n}"), data).await {
            kme.monitor.event(Event::SourceError {
                pool: pool.clone(),
                message: m,
            });
            return;
        }
        n += 1;
    }
    if interval.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    let mut catching_up = true;
    while n < max_blocks {
        if !catching_up {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
        }
        let data = simulated_block(&seed, n, block_bytes as usize);
        match add(&kme, &pool, format!("sim-{n}"), data).await {
            Ok(added) => catching_up = !added,
            Err(m) => {
                catching_up = false;
                kme.monitor.event(Event::SourceError {
                    pool: pool.clone(),
                    message: m,
                });
            }
        }
        n += 1;
    }
}

/// Local pool: keeps `target` bytes allocatable with fresh OS CSPRNG bytes.
pub(crate) async fn random_topup(
    kme: Arc<Kme>,
    pool: String,
    target: u64,
    mut stop: watch::Receiver<bool>,
) {
    let block = target.clamp(4096, 1 << 20) as usize;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        while kme.pool.stats(&pool).allocatable_bytes < target {
            let mut data = Zeroizing::new(vec![0u8; block]);
            if let Err(e) = OsRandom.fill(&mut data) {
                kme.monitor.event(Event::SourceError {
                    pool: pool.clone(),
                    message: e.to_string(),
                });
                break;
            }
            let id = format!("rnd-{}", uuid::Uuid::new_v4());
            if let Err(m) = add(&kme, &pool, id, data).await {
                kme.monitor.event(Event::SourceError {
                    pool: pool.clone(),
                    message: m,
                });
                break;
            }
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
    }
}
