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
pub(crate) mod channel;
pub(crate) mod ledger;
pub(crate) mod raw;
mod stats;
pub(crate) mod stream;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use qkd_core::BitBlock;
use qkd_core::pipeline::BlockOutcome;
use qkd_core::rng::OsRandom;
use qkd_core::session::drive::{
    BlockResult, BlockSource, NextBlock, Role, SideConfig, SideEvents, run_side_with,
};
use qkd_core::session::{Link, SessionError};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, mpsc, watch};
use zeroize::Zeroizing;

use crate::config::{LinkConfig, LinkRole, ProcessingConfig};
use crate::monitor::{Event, Monitor};
use crate::pool::KeyPool;
use channel::{Control, Hello};
use ledger::{BlockState, Counter, Ledger};
use raw::{RawRef, RawSource};
pub(crate) use stats::LinkStats;

/// An idle channel sends a ping this often.
const PING_EVERY: Duration = Duration::from_secs(5);
/// A channel with nothing received for this long is closed.
const READ_IDLE: Duration = Duration::from_secs(20);
/// How long each side waits for the other's hello.
const HELLO_WAIT: Duration = Duration::from_secs(15);
/// The writer sends what is queued in writes of up to about this many bytes.
const WRITE_BATCH_BYTES: usize = 1 << 20;
/// A raw block Bob does not hold is offered again after this long.
const MISSING_RETRY: Duration = Duration::from_secs(2);

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
    raw: Mutex<RawSource>,
    shared: Mutex<Shared>,
    pub(crate) stats: Mutex<LinkStats>,
    stop: watch::Receiver<bool>,
    connection: tokio::sync::Mutex<()>,
    kick: Notify,
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

/// The whole bytes of a final key (its bits past the last whole byte are dropped).
fn key_bytes(key: &BitBlock) -> Zeroizing<Vec<u8>> {
    let mut b = key.to_bytes();
    b.truncate(key.len() / 8);
    b
}

/// Splits a final key into its authentication share (the first `share_bytes`, in whole
/// 16-byte words; all of a shorter key's whole words) and the rest, for SAEs.
fn split_share(key: &[u8], share_bytes: usize) -> (Zeroizing<Vec<u8>>, Zeroizing<Vec<u8>>) {
    let n = share_bytes.min(key.len() / 16 * 16);
    (
        Zeroizing::new(key[..n].to_vec()),
        Zeroizing::new(key[n..].to_vec()),
    )
}

/// Why a block yielded no key, as a short category for counters.
fn category(result: &Result<&BlockOutcome, &SessionError>) -> &'static str {
    match result {
        Ok(BlockOutcome::Discarded(why)) if why.contains("QBER") => "qber",
        Ok(BlockOutcome::Discarded(why)) if why.contains("confirmation") => "confirmation",
        Ok(BlockOutcome::Discarded(why)) if why.contains("secret length") => "no_secret_length",
        Ok(BlockOutcome::Discarded(_)) => "other",
        Ok(BlockOutcome::Quarantined(_)) => "entropy_check",
        Ok(BlockOutcome::Key) => "kept",
        Err(SessionError::Auth(_)) => "authentication",
        Err(SessionError::PeerAborted(_)) => "peer_aborted",
        Err(SessionError::Stage {
            stage: "transport", ..
        }) => "transport",
        Err(_) => "error",
    }
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
        let raw = RawSource::new(&l.source, cfg.block_bits as u64, min_bits)
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
            kick: Notify::new(),
            auth_below: AtomicBool::new(false),
        }))
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

    // ---- connections -------------------------------------------------------------------

    /// Alice: dials the peer until stopped, serving each connection until it ends.
    pub(crate) async fn run_alice(self: Arc<Self>, tls: Arc<rustls::ClientConfig>) {
        let mut stop = self.stop.clone();
        let mut backoff = Duration::from_millis(200);
        loop {
            if *stop.borrow() {
                return;
            }
            match channel::dial(&self.url, &self.peer, tls.clone()).await {
                Ok(s) => {
                    backoff = Duration::from_millis(200);
                    self.clone().serve(s).await;
                }
                Err(e) => self.note(|s| s.set_down(&e)),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Bob: a channel arrived on the peer listener; an older one ends first.
    pub(crate) async fn accept(self: Arc<Self>, s: Box<dyn channel::Stream>) {
        self.kick.notify_waiters();
        self.serve(s).await;
    }

    async fn serve(self: Arc<Self>, s: Box<dyn channel::Stream>) {
        let _one = self.connection.lock().await;
        let (rd, mut wr) = tokio::io::split(s);
        let mut rd = tokio::io::BufReader::new(rd);
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let (in_tx, in_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let close = Arc::new(Notify::new());
        let writer = tokio::spawn(async move {
            let mut ping = tokio::time::interval(PING_EVERY);
            let mut batch = Vec::new();
            loop {
                let first = tokio::select! {
                    m = out_rx.recv() => match m {
                        Some(m) => m,
                        None => break,
                    },
                    _ = ping.tick() => Control::Ping.encode(),
                };
                // Everything queued goes out in one write (a Cascade round of every frame of
                // every block in flight, say), then a flush.
                batch.clear();
                channel::push_frame(&mut batch, &first);
                while batch.len() < WRITE_BATCH_BYTES {
                    let Ok(m) = out_rx.try_recv() else { break };
                    channel::push_frame(&mut batch, &m);
                }
                let sent = async {
                    wr.write_all(&batch).await?;
                    wr.flush().await
                };
                if sent.await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        });
        let rt = self.clone();
        let close2 = close.clone();
        let session = tokio::task::spawn_blocking(move || {
            let r = rt.connected(&in_rx, &out_tx, &close2);
            if let Err(e) = &r {
                rt.note(|s| s.set_down(e));
                tracing::warn!(peer = %rt.peer, error = %e, "post-processing channel closed");
            }
            close2.notify_one();
        });
        let mut stop = self.stop.clone();
        loop {
            let frame = tokio::select! {
                f = tokio::time::timeout(READ_IDLE, channel::read_frame(&mut rd)) => f,
                _ = close.notified() => break,
                _ = self.kick.notified() => break,
                _ = stop.changed() => break,
            };
            match frame {
                Ok(Ok(Some(f))) => {
                    if f.first() == Some(&channel::CONTROL_TAG)
                        && Control::decode(&f) == Ok(Control::Ping)
                    {
                        continue;
                    }
                    if in_tx.send(f).is_err() {
                        break;
                    }
                }
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    self.note(|s| s.set_down(&format!("channel: {e}")));
                    break;
                }
                Err(_) => {
                    self.note(|s| s.set_down("channel: nothing received within 20 s"));
                    break;
                }
            }
        }
        drop(in_tx);
        let _ = session.await;
        writer.abort();
        self.note(|s| s.set_down_unless_down("channel closed"));
    }

    /// One connection, on a thread of its own: hellos, settling, then the sessions.
    fn connected(
        &self,
        rx: &Receiver<Vec<u8>>,
        out: &Outbox,
        close: &Notify,
    ) -> Result<(), String> {
        self.handshake(rx, out)?;
        self.note(LinkStats::set_up);
        self.monitor.event(Event::Channel {
            peer: self.peer.clone(),
            up: true,
            reason: None,
        });
        let side = SideConfig {
            in_flight: self.cfg.in_flight,
            block_timeout: Duration::from_secs(self.cfg.block_timeout_secs),
        };
        let mut events = Events {
            rt: self,
            out,
            close,
            fatal: None,
        };
        let mut sender = |m: Vec<u8>| {
            out.send(m)
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "channel closed"))
        };
        let result = if self.is_alice() {
            let mut blocks = AliceBlocks { rt: self, out };
            let role = Role::Alice {
                link: self.link.clone(),
                blocks: &mut blocks,
            };
            run_side_with(role, rx, &mut sender, side, &mut events)
        } else {
            let mut raw_for = |id: &str| self.start_bob(id);
            let role = Role::Bob {
                link: self.link.clone(),
                raw_for: &mut raw_for,
            };
            run_side_with(role, rx, &mut sender, side, &mut events)
        };
        let result = match events.fatal {
            Some(e) => Err(e),
            None => result.map(|_| ()).map_err(|e| format!("channel: {e}")),
        };
        self.monitor.event(Event::Channel {
            peer: self.peer.clone(),
            up: false,
            reason: result.as_ref().err().cloned(),
        });
        result
    }

    fn hello(&self) -> Result<Hello, String> {
        let bob = !self.is_alice();
        Ok(Hello {
            version: channel::CONTROL_VERSION,
            role: self.cfg.role,
            auth_share_bits: self.cfg.auth_share_bits,
            watermark: lock(&self.auth_file).watermark(),
            refills: self.ledger.counter(&self.peer, Counter::Refills)?,
            pending: if bob {
                self.ledger
                    .blocks_where(&self.peer, |s| *s == BlockState::Pending)?
                    .into_iter()
                    .map(|(b, _)| b)
                    .collect()
            } else {
                Vec::new()
            },
            files: if bob {
                let mut files = lock(&self.raw).files();
                files.truncate(channel::MAX_HELLO_FILES);
                files
            } else {
                Vec::new()
            },
        })
    }

    fn handshake(&self, rx: &Receiver<Vec<u8>>, out: &Outbox) -> Result<(), String> {
        // Sessions of an earlier connection (or process) are gone: their blocks end here.
        for (b, _) in self
            .ledger
            .blocks_where(&self.peer, |s| *s == BlockState::Started)?
        {
            self.discard(
                &b,
                "interrupted: the connection or the process ended",
                "interrupted",
                out,
            )?;
        }
        *self.shared() = Shared::default();
        lock(&self.raw).reset_offers();
        send(out, &Control::Hello(self.hello()?));
        let deadline = Instant::now() + HELLO_WAIT;
        let theirs = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(f) => {
                    if let Ok(Control::Hello(h)) = Control::decode(&f) {
                        break h;
                    }
                }
                Err(RecvTimeoutError::Timeout) => return Err("no hello from the peer".into()),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err("the channel closed before the peer's hello".into());
                }
            }
        };
        if theirs.version != channel::CONTROL_VERSION {
            return Err(format!(
                "the peer speaks control protocol {}; this KME {}",
                theirs.version,
                channel::CONTROL_VERSION
            ));
        }
        if theirs.role == self.cfg.role {
            return Err(format!(
                "both KMEs are configured as {:?} on this link",
                self.cfg.role
            ));
        }
        if theirs.auth_share_bits != self.cfg.auth_share_bits {
            return Err(format!(
                "auth_share_bits differ: {} here, {} at the peer",
                self.cfg.auth_share_bits, theirs.auth_share_bits
            ));
        }
        // Words either side may have used are used on both.
        let mark = theirs.watermark.max(lock(&self.auth_file).watermark());
        lock(&self.auth_file).raise(mark)?;
        self.link.auth_keys().discard_below(mark);
        if self.is_alice() {
            self.settle_as_alice(&theirs, out)?;
        }
        Ok(())
    }

    /// Alice settles what Bob's hello says he holds.
    fn settle_as_alice(&self, bob: &Hello, out: &Outbox) -> Result<(), String> {
        let refills = self.ledger.counter(&self.peer, Counter::Refills)?;
        if bob.refills > refills {
            return Err(format!(
                "the peer applied {} authentication refills, this KME only {refills}: \
                 the pools diverged (restored from a backup?)",
                bob.refills
            ));
        }
        for n in bob.refills..refills {
            let block = self
                .ledger
                .refill_block(&self.peer, n)?
                .ok_or_else(|| format!("refill {n} is not in the ledger"))?;
            send(
                out,
                &Control::Activated {
                    block,
                    refill: Some(n),
                },
            );
        }
        let held: HashSet<&String> = bob.pending.iter().collect();
        for block in &bob.pending {
            match self.ledger.state(&self.peer, block)? {
                Some(BlockState::Pending) => self.activate_alice(block, out)?,
                Some(BlockState::Active { refill: None }) => send(
                    out,
                    &Control::Activated {
                        block: block.clone(),
                        refill: None,
                    },
                ),
                // Resent above with its refill.
                Some(BlockState::Active { refill: Some(_) }) => {}
                _ => {
                    self.discard(block, "Alice holds no key of it", "peer_only", out)?;
                }
            }
        }
        for (block, _) in self
            .ledger
            .blocks_where(&self.peer, |s| *s == BlockState::Pending)?
        {
            if !held.contains(&block) {
                self.discard(&block, "Bob holds no key of it", "peer_only", out)?;
            }
        }
        for name in &bob.files {
            if self.ledger.is_file_done(&self.peer, name)? {
                send(out, &Control::FileDone { name: name.clone() });
            }
        }
        Ok(())
    }

    // ---- blocks ------------------------------------------------------------------------

    /// Alice: offers raw blocks until `in_flight` are offered or ready ahead of the sessions.
    fn pump_offers(&self, out: &Outbox) -> Result<(), String> {
        let (want, busy) = {
            let mut sh = self.shared();
            let now = Instant::now();
            sh.missing.retain(|_, t| *t > now);
            let ahead = sh.offered.len() + sh.ready.len();
            let want = self.cfg.in_flight.saturating_sub(ahead);
            if want == 0 {
                return Ok(());
            }
            let busy: HashSet<String> = sh
                .offered
                .keys()
                .chain(sh.ready.iter().map(|r| &r.block))
                .chain(sh.live.iter())
                .chain(sh.missing.keys())
                .cloned()
                .collect();
            (want, busy)
        };
        let offers = lock(&self.raw).poll_new(&self.ledger, &self.peer, &busy, want)?;
        let mut sh = self.shared();
        for r in offers {
            send(out, &Control::Offer(r.clone()));
            sh.offered.insert(r.block.clone(), r);
        }
        Ok(())
    }

    /// Alice starts a block Bob is ready for: recorded, then loaded.
    fn start_alice(&self, r: &RawRef) -> Result<BitBlock, String> {
        match raw::simulated_number(&r.block) {
            Some(n) => {
                let next = self.ledger.counter(&self.peer, Counter::NextSimulated)?;
                self.ledger.start_with_counter(
                    &self.peer,
                    &r.block,
                    Counter::NextSimulated,
                    next.max(n + 1),
                )?;
            }
            None => self
                .ledger
                .set(&self.peer, &r.block, &BlockState::Started)?,
        }
        self.shared().live.insert(r.block.clone());
        lock(&self.raw).load(r, true)
    }

    /// Bob starts a block when Alice's first message for it arrives: only one he answered
    /// `Ready` for and never started.
    fn start_bob(&self, id: &str) -> Option<BitBlock> {
        let r = self.shared().accepted.remove(id)?;
        let fresh = matches!(self.ledger.state(&self.peer, id), Ok(None));
        if !fresh
            || self
                .ledger
                .set(&self.peer, id, &BlockState::Started)
                .is_err()
        {
            return None;
        }
        self.shared().live.insert(id.to_string());
        lock(&self.raw).load(&r, false).ok()
    }

    /// A session ended on this side.
    fn block_ended(&self, id: &str, result: BlockResult, out: &Outbox) -> Result<(), String> {
        self.shared().live.remove(id);
        // Every block spends pool bits, whether or not it refills the pool.
        self.check_auth_watermark();
        let (report, key) = match result {
            Ok(o) => (o.report, o.key),
            Err(e) => {
                let cat = category(&Err(&e));
                return self.discard(id, &e.to_string(), cat, out);
            }
        };
        let alarm = report.sample_bits > 0 && report.qber > self.cfg.max_qber;
        self.note(|s| s.block_measured(&report, alarm));
        if alarm {
            self.monitor.event(Event::QberAlarm {
                peer: self.peer.clone(),
                block: id.to_string(),
                qber: report.qber,
                limit: self.cfg.max_qber,
            });
        }
        let Some(key) = key.filter(|_| report.outcome == BlockOutcome::Key) else {
            let why = match &report.outcome {
                BlockOutcome::Discarded(w) | BlockOutcome::Quarantined(w) => w.clone(),
                BlockOutcome::Key => "no key".into(),
            };
            return self.discard(id, &why, category(&Ok(&report.outcome)), out);
        };
        let bytes = key_bytes(&key);
        drop(key);
        if let Err(e) = self
            .ledger
            .write_pending(&self.peer, id, &bytes)
            .and_then(|()| self.ledger.set(&self.peer, id, &BlockState::Pending))
        {
            let _ = self.ledger.burn_pending(&self.peer, id);
            return self.discard(id, &format!("cannot hold its key: {e}"), "store", out);
        }
        if self.is_alice() {
            if self.shared().peer_held.remove(id) {
                self.activate_alice(id, out)?;
            }
        } else {
            send(
                out,
                &Control::Held {
                    block: id.to_string(),
                },
            );
        }
        Ok(())
    }

    /// No key from this block on this side; the peer is told.
    fn discard(
        &self,
        id: &str,
        why: &str,
        category: &'static str,
        out: &Outbox,
    ) -> Result<(), String> {
        self.ledger.set(
            &self.peer,
            id,
            &BlockState::Discarded {
                reason: why.to_string(),
            },
        )?;
        self.ledger.burn_pending(&self.peer, id)?;
        self.note(|s| s.discarded(category));
        send(
            out,
            &Control::Dropped {
                block: id.to_string(),
                reason: why.to_string(),
            },
        );
        self.raw_decided(id, out)
    }

    fn raw_decided(&self, id: &str, out: &Outbox) -> Result<(), String> {
        if self.is_alice()
            && let Some(name) = lock(&self.raw).decided(&self.ledger, &self.peer, id)?
        {
            send(out, &Control::FileDone { name });
        }
        Ok(())
    }

    /// Moves a pending key into the store and its share into the authentication pool (with
    /// refill `number`, checked against the pool's count when given).
    fn activate(&self, id: &str, number: Option<u64>) -> Result<Option<u64>, String> {
        let key = self.ledger.read_pending(&self.peer, id)?;
        let (share, rest) = split_share(&key, self.cfg.auth_share_bits as usize / 8);
        drop(key);
        let bits = rest.len() as u64 * 8;
        let pool = self.pool.clone();
        pool.add_block(&self.peer, id, rest)
            .map_err(|e| format!("storing block {id}: {e}"))?;
        let refill = if share.is_empty() {
            if number.is_some() {
                return Err(format!("block {id} has no authentication share here"));
            }
            self.ledger.activate(&self.peer, id, None)?;
            None
        } else {
            let next = self.ledger.counter(&self.peer, Counter::Refills)?;
            let n = number.unwrap_or(next);
            if n != next {
                return Err(format!(
                    "refill {n} of block {id} arrived where {next} was next"
                ));
            }
            let mut file = lock(&self.auth_file);
            let r = file.append(&share, n)?;
            self.ledger.activate(&self.peer, id, Some(r))?;
            file.committed(r);
            drop(file);
            self.link.auth_keys().refill(&share);
            Some(n)
        };
        self.ledger.burn_pending(&self.peer, id)?;
        self.note(|s| s.activated(bits));
        self.monitor.event(Event::Activated {
            pool: self.peer.clone(),
            block: id.to_string(),
            bytes: bits / 8,
        });
        self.check_auth_watermark();
        Ok(refill)
    }

    fn activate_alice(&self, id: &str, out: &Outbox) -> Result<(), String> {
        let refill = self.activate(id, None)?;
        send(
            out,
            &Control::Activated {
                block: id.to_string(),
                refill,
            },
        );
        self.raw_decided(id, out)
    }

    /// A control message from the peer.
    fn control(&self, m: Control, out: &Outbox) -> Result<(), String> {
        match m {
            Control::Ready { block } if self.is_alice() => {
                let mut sh = self.shared();
                if let Some(r) = sh.offered.remove(&block) {
                    sh.ready.push_back(r);
                }
            }
            Control::Missing { block, reason } if self.is_alice() => {
                let first = {
                    let mut sh = self.shared();
                    sh.offered.remove(&block);
                    sh.missing
                        .insert(block.clone(), Instant::now() + MISSING_RETRY)
                        .is_none()
                };
                if first && lock(&self.stats).note_missing(&block) {
                    self.monitor.event(Event::RawMissing {
                        peer: self.peer.clone(),
                        block,
                        reason,
                    });
                }
            }
            Control::Held { block } if self.is_alice() => {
                match self.ledger.state(&self.peer, &block)? {
                    Some(BlockState::Pending) => self.activate_alice(&block, out)?,
                    Some(BlockState::Started) => {
                        self.shared().peer_held.insert(block);
                    }
                    Some(BlockState::Active { .. }) => {}
                    _ => send(
                        out,
                        &Control::Dropped {
                            block,
                            reason: "Alice holds no key of it".into(),
                        },
                    ),
                }
            }
            Control::Offer(r) if !self.is_alice() => {
                let reply = match self.ledger.state(&self.peer, &r.block)? {
                    Some(_) => Control::Dropped {
                        block: r.block.clone(),
                        reason: "Bob started or decided it before".into(),
                    },
                    None => match lock(&self.raw).check(&r) {
                        Ok(()) => Control::Ready {
                            block: r.block.clone(),
                        },
                        Err(reason) => Control::Missing {
                            block: r.block.clone(),
                            reason,
                        },
                    },
                };
                if matches!(reply, Control::Ready { .. }) {
                    self.shared().accepted.insert(r.block.clone(), r);
                }
                send(out, &reply);
            }
            Control::Activated { block, refill } if !self.is_alice() => {
                match self.ledger.state(&self.peer, &block)? {
                    Some(BlockState::Pending) => {
                        self.activate(&block, refill)?;
                    }
                    Some(BlockState::Active { .. }) => {}
                    other => {
                        return Err(format!(
                            "Alice activated block {block}, which is {other:?} here"
                        ));
                    }
                }
            }
            Control::FileDone { name } if !self.is_alice() => {
                lock(&self.raw).file_done(&name)?;
            }
            Control::Dropped { block, reason } => {
                match self.ledger.state(&self.peer, &block)? {
                    Some(BlockState::Pending) | None => {
                        self.ledger.burn_pending(&self.peer, &block)?;
                        self.ledger.set(
                            &self.peer,
                            &block,
                            &BlockState::Discarded {
                                reason: format!("the peer dropped it: {reason}"),
                            },
                        )?;
                        self.note(|s| s.discarded("peer_dropped"));
                        self.shared().offered.remove(&block);
                        self.raw_decided(&block, out)?;
                    }
                    Some(BlockState::Active { .. }) => {
                        return Err(format!(
                            "the peer dropped block {block}, which is active here"
                        ));
                    }
                    // A live session ends by itself (the peer aborts it too).
                    Some(BlockState::Started | BlockState::Discarded { .. }) => {}
                }
            }
            Control::Ping | Control::Hello(_) => {}
            other => {
                return Err(format!(
                    "unexpected {other:?} for a {:?} KME",
                    self.cfg.role
                ));
            }
        }
        Ok(())
    }

    /// What Status, `/metrics` and the dashboard show of this link.
    pub(crate) fn snapshot(&self) -> serde_json::Value {
        let auth = self.auth_available_bits();
        let s = lock(&self.stats);
        s.json(&self.peer, self.cfg.role, auth)
    }
}

/// Alice's blocks: offered to Bob first, started once he is ready.
struct AliceBlocks<'a> {
    rt: &'a LinkRuntime,
    out: &'a Outbox,
}

impl BlockSource for AliceBlocks<'_> {
    fn next_block(&mut self) -> NextBlock {
        if *self.rt.stop.borrow() {
            return NextBlock::Done;
        }
        if let Err(e) = self.rt.pump_offers(self.out) {
            self.rt.monitor.event(Event::SourceError {
                pool: self.rt.peer.clone(),
                message: e,
            });
        }
        loop {
            let Some(r) = self.rt.shared().ready.pop_front() else {
                return NextBlock::Later;
            };
            match self.rt.start_alice(&r) {
                Ok(bits) => return NextBlock::Ready(r.block, bits),
                Err(e) => {
                    self.rt.shared().live.remove(&r.block);
                    let _ = self.rt.discard(&r.block, &e, "raw", self.out);
                    self.rt.monitor.event(Event::SourceError {
                        pool: self.rt.peer.clone(),
                        message: e,
                    });
                }
            }
        }
    }
}

/// The events of one connection's sessions.
struct Events<'a> {
    rt: &'a LinkRuntime,
    out: &'a Outbox,
    /// Ends the connection.
    close: &'a Notify,
    /// An error that ends the connection (the next one settles).
    fatal: Option<String>,
}

impl Events<'_> {
    fn fail(&mut self, e: String) {
        tracing::error!(peer = %self.rt.peer, error = %e, "post-processing");
        self.rt.monitor.event(Event::SourceError {
            pool: self.rt.peer.clone(),
            message: e.clone(),
        });
        if self.fatal.is_none() {
            self.fatal = Some(e);
            // The sessions end with the connection, and the next connection settles.
            self.close.notify_one();
        }
    }
}

impl SideEvents for Events<'_> {
    fn on_block(&mut self, id: &str, result: BlockResult) {
        if let Err(e) = self.rt.block_ended(id, result, self.out) {
            self.fail(e);
        }
    }

    fn on_other(&mut self, message: Vec<u8>) {
        let r = Control::decode(&message).and_then(|m| self.rt.control(m, self.out));
        if let Err(e) = r {
            self.fail(e);
        }
    }
}
