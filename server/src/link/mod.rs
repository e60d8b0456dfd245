//! Post-processing between two KMEs: raw key in at each site, the same final keys out at both.
//!
//! A link with a raw source ([`raw`]) runs the sessions of `qkd_core::session` with its peer KME
//! over one channel ([`channel`]), Alice's KME dialing Bob's. Besides the sessions' messages the
//! channel carries a small control protocol (offers, holds, activations, drops) whose rules
//! make every block end the same on both sides, whatever crashes when:
//!
//! 1. A raw block is started at most once on each side: Alice records `Started` before her
//!    first message, Bob before his first reply ([`ledger`]). A block started but not decided
//!    when its connection ends (crash, cut) is discarded: its disclosures were not accounted
//!    for in any key.
//! 2. A final key is first written pending (a private file, synced) and only then announced:
//!    Bob sends `Held` once his is durable.
//! 3. Alice activates (store, authentication share) only on Bob's `Held`, then sends
//!    `Activated`; Bob activates on it. So a key is allocatable on one side only while the
//!    other holds it durably, and becomes allocatable there on the next message, or at the next
//!    connection at the latest.
//! 4. At every connection the two settle what the last one left open ([`Hello`]): Bob names the
//!    keys he holds pending and the refills he applied, and Alice activates or drops each, and
//!    drops her own pending keys that Bob does not hold.
//!
//! The authentication pool ([`auth`]) is refilled from each activated key in Alice's order of
//! activation (the refill number travels with `Activated`), so both pools stay identical.

mod auth;
mod blocks;
pub(crate) mod channel;
mod connection;
pub(crate) mod ledger;
pub(crate) mod raw;
mod settle;
mod stats;
pub(crate) mod stream;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use qkd_core::rng::OsRandom;
use qkd_core::session::Link;
use tokio::sync::{mpsc, watch};

use crate::config::{LinkConfig, LinkRole, ProcessingConfig};
use crate::monitor::{Event, Monitor};
use crate::pool::KeyPool;
use channel::Control;
use ledger::Ledger;
use raw::{RawRef, RawSource};
pub(crate) use stats::LinkStats;

/// Frames to the peer (the writer task sends them in order).
type Outbox = mpsc::UnboundedSender<Vec<u8>>;

fn send(out: &Outbox, m: &Control) {
    // A closed channel drops it; the next connection settles whatever it was about.
    let _ = out.send(m.encode());
}

/// What the sessions and the control protocol of one link share.
#[derive(Default)]
struct Shared {
    /// Alice: offers sent and not answered.
    offered: HashMap<String, RawRef>,
    /// Alice: blocks Bob is ready for, in order.
    ready: VecDeque<RawRef>,
    /// Alice: blocks Bob lacks, and when to offer them again.
    missing: HashMap<String, Instant>,
    /// Sessions started and not ended.
    live: HashSet<String>,
    /// Alice: `Held` that arrived before her own session ended.
    peer_held: HashSet<String>,
    /// Bob: the offers he answered `Ready`.
    accepted: HashMap<String, RawRef>,
}

/// One post-processing link.
pub(crate) struct LinkRuntime {
    peer: String,
    url: String,
    cfg: ProcessingConfig,
    link: Arc<Link>,
    ledger: Arc<Ledger>,
    pool: Arc<dyn KeyPool>,
    monitor: Arc<Monitor>,
    auth_file: Arc<Mutex<auth::PoolFile>>,
    raw: Mutex<Box<dyn RawSource>>,
    shared: Mutex<Shared>,
    pub(crate) stats: Mutex<LinkStats>,
    stop: watch::Receiver<bool>,
    connection: tokio::sync::Mutex<()>,
    /// Bumped by every connection Bob accepts: each connection ends when it changes.
    kick: watch::Sender<u64>,
    auth_low_watermark: u64,
    auth_below: AtomicBool,
}

impl std::fmt::Debug for LinkRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkRuntime")
            .field("peer", &self.peer)
            .field("role", &self.cfg.role)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LinkRuntime {
    /// Opens the link's durable state under `links_dir` (ledger shared by every link).
    pub(crate) fn open(
        links_dir: &Path,
        ledger: Arc<Ledger>,
        l: &LinkConfig,
        pool: Arc<dyn KeyPool>,
        monitor: Arc<Monitor>,
        stop: watch::Receiver<bool>,
    ) -> Result<Arc<Self>, String> {
        let cfg = l
            .processing
            .clone()
            .ok_or_else(|| format!("link {} has no processing settings", l.peer))?;
        let (keys, auth_file) = auth::open(
            &links_dir.join("auth"),
            ledger.clone(),
            &l.peer,
            &cfg.auth_psk,
        )?;
        let link = Link::new(
            cfg.pipeline(),
            Box::new(auth::DurableAuth::new(keys, auth_file.clone())),
            &mut OsRandom,
        )
        .map_err(|e| format!("link {}: {e}", l.peer))?;
        let min_bits = 2 * cfg.sample_bits as u64 + 1;
        let raw = raw::source(&l.source, cfg.block_bits as u64, min_bits)
            .ok_or_else(|| format!("link {}: not a raw key source", l.peer))?;
        if matches!(
            l.source,
            crate::config::SourceConfig::SimulatedDevice { .. }
        ) {
            tracing::warn!(
                peer = %l.peer,
                "INSECURE simulated device: raw key derived from a seed in the config"
            );
            monitor.event(Event::InsecureSource {
                pool: l.peer.clone(),
            });
        }
        Ok(Arc::new(Self {
            peer: l.peer.clone(),
            url: l.url.clone(),
            auth_low_watermark: l.auth_low_watermark_bits,
            cfg,
            link,
            ledger,
            pool,
            monitor,
            auth_file,
            raw: Mutex::new(raw),
            shared: Mutex::default(),
            stats: Mutex::new(LinkStats::default()),
            stop,
            connection: tokio::sync::Mutex::new(()),
            kick: watch::Sender::new(0),
            auth_below: AtomicBool::new(false),
        }))
    }

    /// The peer KME's ID.
    pub(crate) fn peer(&self) -> &str {
        &self.peer
    }

    /// This KME's end of the link.
    pub(crate) fn role(&self) -> LinkRole {
        self.cfg.role
    }

    /// Bits left in the authentication pool.
    pub(crate) fn auth_available_bits(&self) -> u64 {
        self.link.auth_keys().available_bits() as u64
    }

    fn is_alice(&self) -> bool {
        self.cfg.role == LinkRole::Alice
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }

    fn note(&self, f: impl FnOnce(&mut LinkStats)) {
        f(&mut lock(&self.stats));
    }

    fn check_auth_watermark(&self) {
        if self.auth_low_watermark == 0 {
            return;
        }
        let bits = self.auth_available_bits();
        let below = bits < self.auth_low_watermark;
        if self.auth_below.swap(below, Ordering::Relaxed) != below {
            self.monitor.event(if below {
                Event::LowWatermark {
                    pool: format!("{} authentication", self.peer),
                    bytes: bits / 8,
                }
            } else {
                Event::AboveWatermark {
                    pool: format!("{} authentication", self.peer),
                    bytes: bits / 8,
                }
            });
        }
    }

    /// What Status, `/metrics` and the dashboard show of this link.
    pub(crate) fn snapshot(&self) -> serde_json::Value {
        let auth = self.auth_available_bits();
        let s = lock(&self.stats);
        s.json(&self.peer, self.cfg.role, auth)
    }
}
