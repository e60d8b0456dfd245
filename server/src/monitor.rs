//! Event log, counters, Prometheus text exposition and a small dashboard.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Something an operator wants to know about.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A block of key material became available.
    Activated {
        /// Pool name.
        pool: String,
        /// Block ID.
        block: String,
        /// Bytes.
        bytes: u64,
    },
    /// A master obtained keys.
    Requested {
        /// Master SAE.
        master: String,
        /// Slaves, comma separated.
        slaves: String,
        /// Number of keys.
        number: u64,
        /// Key size in bits.
        size: u64,
    },
    /// Keys relayed over several hops (`origin`: for a master here; `transit`: through here).
    Relayed {
        /// `origin` or `transit`.
        role: &'static str,
        /// The KMEs from the master's to the slaves', `>`-separated.
        path: String,
        /// Master SAE.
        master: String,
        /// Slaves, comma separated.
        slaves: String,
        /// Number of keys.
        number: u64,
    },
    /// An HSM's random generator was reseeded (or the attempt failed).
    HsmReseed {
        /// The `[[hsm]]` name.
        hsm: String,
        /// Where the 256 bits came from (`os`, `link:<PEER>`).
        source: String,
        /// Whether `C_SeedRandom` succeeded.
        ok: bool,
        /// Why not.
        error: Option<String>,
    },
    /// Keys for a pkcs11 SAE were created in its HSM's token (or the attempt failed, and the
    /// request's keys were destroyed).
    HsmDelivery {
        /// The SAE.
        sae: String,
        /// The `[[hsm]]` name.
        hsm: String,
        /// Number of keys.
        number: u64,
        /// Why it failed.
        error: Option<String>,
    },
    /// A peer KME reserved keys here.
    Reserved {
        /// Peer KME.
        peer: String,
        /// Number of keys.
        number: u64,
    },
    /// Reservations expired unfetched and were destroyed.
    Expired {
        /// Number of keys.
        number: u64,
    },
    /// A pool fell below its low watermark.
    LowWatermark {
        /// Pool name.
        pool: String,
        /// Allocatable bytes.
        bytes: u64,
    },
    /// A key request was refused because this KME's share of the pool ran dry (503).
    InsufficientKey {
        /// Pool name.
        pool: String,
        /// The master SAE that asked.
        master: String,
        /// Bits requested.
        requested_bits: u64,
        /// Bits this KME could allocate for the pair.
        available_bits: u64,
    },
    /// A pool rose above its low watermark again.
    AboveWatermark {
        /// Pool name.
        pool: String,
        /// Allocatable bytes.
        bytes: u64,
    },
    /// A peer KME stopped answering.
    PeerDown {
        /// Peer KME.
        peer: String,
    },
    /// A peer KME answers again.
    PeerUp {
        /// Peer KME.
        peer: String,
    },
    /// A key source is INSECURE (a simulated device: its keys follow from the config).
    InsecureSource {
        /// Pool name.
        pool: String,
    },
    /// The post-processing channel with a peer KME opened or closed.
    Channel {
        /// Peer KME.
        peer: String,
        /// Whether it is open now.
        up: bool,
        /// Why it closed.
        reason: Option<String>,
    },
    /// A block's QBER was above the link's limit: no key from it (link state `qber_alarm`).
    QberAlarm {
        /// Peer KME.
        peer: String,
        /// Block ID.
        block: String,
        /// The sample QBER.
        qber: f64,
        /// The configured limit.
        limit: f64,
    },
    /// Alice holds a raw block that Bob's KME does not (yet): it is held, never processed
    /// alone.
    RawMissing {
        /// Peer KME.
        peer: String,
        /// Block ID.
        block: String,
        /// What Bob's KME said.
        reason: String,
    },
    /// The two KMEs of a link hold different bytes for a `.cor` block: it is refused at both.
    BlockMismatch {
        /// Pool name (the peer KME).
        pool: String,
        /// Block ID (the file name).
        block: String,
    },
    /// A key source failed.
    SourceError {
        /// Pool name.
        pool: String,
        /// What happened.
        message: String,
    },
}

impl Event {
    /// Whether an operator should act (logged as a warning; the dashboard shows it red).
    pub fn is_alarm(&self) -> bool {
        matches!(
            self,
            Self::LowWatermark { .. }
                | Self::InsufficientKey { .. }
                | Self::PeerDown { .. }
                | Self::InsecureSource { .. }
                | Self::QberAlarm { .. }
                | Self::BlockMismatch { .. }
                | Self::SourceError { .. }
                | Self::Channel { up: false, .. }
                | Self::HsmReseed { ok: false, .. }
                | Self::HsmDelivery { error: Some(_), .. }
        )
    }
}

/// One pool as `/metrics` and the dashboard show it.
#[derive(Clone, Debug, Serialize)]
pub struct PoolRow {
    /// Pool name (peer KME ID, or `_local`).
    pub pool: String,
    /// Bytes this KME may allocate for its masters.
    pub allocatable_bytes: u64,
    /// Bytes the peer KME may allocate (0 for the local pool).
    pub peer_allocatable_bytes: u64,
    /// Keys reserved and waiting for slaves.
    pub reserved_keys: u64,
    /// Whether the peer answers (`None` for the local pool).
    pub link_up: Option<bool>,
    /// The configured low watermark in bytes (0: none).
    pub low_watermark_bytes: u64,
    /// Requests refused because this pool ran dry, so far.
    pub insufficient_total: u64,
}

/// A logged event with its time.
#[derive(Clone, Debug, Serialize)]
pub struct LoggedEvent {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

/// The three ETSI routes, for counters.
#[derive(Clone, Copy, Debug)]
pub enum Route {
    /// GET status.
    Status = 0,
    /// enc_keys.
    EncKeys = 1,
    /// dec_keys.
    DecKeys = 2,
}

/// Counters and the recent-event ring.
#[derive(Debug)]
pub struct Monitor {
    events: Mutex<VecDeque<LoggedEvent>>,
    keys_delivered: AtomicU64,
    events_total: AtomicU64,
    /// Requests refused for lack of key, per pool.
    insufficient: Mutex<std::collections::BTreeMap<String, u64>>,
    /// HSM reseeds by (HSM name, succeeded).
    reseeds: Mutex<std::collections::BTreeMap<(String, bool), u64>>,
    /// Keys delivered into HSMs by (HSM name, succeeded).
    hsm_keys: Mutex<std::collections::BTreeMap<(String, bool), u64>>,
    /// Latency histograms of the SAE listener (`crate::access`).
    pub(crate) access: crate::access::AccessMetrics,
    /// The dashboard's samples (`crate::history`).
    pub(crate) history: crate::history::History,
    started: std::time::Instant,
}

impl Default for Monitor {
    fn default() -> Self {
        Self {
            events: Mutex::new(VecDeque::with_capacity(256)),
            keys_delivered: AtomicU64::new(0),
            events_total: AtomicU64::new(0),
            insufficient: Mutex::default(),
            reseeds: Mutex::default(),
            hsm_keys: Mutex::default(),
            access: Default::default(),
            history: Default::default(),
            started: std::time::Instant::now(),
        }
    }
}

impl Monitor {
    /// Logs an event (also to `tracing`).
    pub fn event(&self, event: Event) {
        let json = serde_json::to_string(&event).unwrap_or_default();
        if event.is_alarm() {
            tracing::warn!(target: "qkd::event", event = %json, "kme alarm");
        } else {
            tracing::info!(target: "qkd::event", event = %json, "kme event");
        }
        if let Event::InsufficientKey { pool, .. } = &event {
            let mut m = self.insufficient.lock().unwrap_or_else(|p| p.into_inner());
            *m.entry(pool.clone()).or_default() += 1;
        }
        self.events_total.fetch_add(1, Ordering::Relaxed);
        let mut q = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= 256 {
            q.pop_front();
        }
        q.push_back(LoggedEvent {
            at_ms: crate::kme::now_ms(),
            event,
        });
    }

    /// The most recent events, oldest first.
    pub fn recent(&self) -> Vec<LoggedEvent> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Requests refused so far because `pool` ran dry.
    pub fn insufficient_total(&self, pool: &str) -> u64 {
        let m = self.insufficient.lock().unwrap_or_else(|p| p.into_inner());
        m.get(pool).copied().unwrap_or(0)
    }

    /// Counts an HSM reseed and its outcome.
    pub(crate) fn hsm_reseeded(&self, hsm: &str, ok: bool) {
        let mut m = self.reseeds.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((hsm.to_string(), ok)).or_default() += 1;
    }

    /// Counts keys delivered into an HSM (or not, `ok == false`).
    pub(crate) fn hsm_delivered(&self, hsm: &str, ok: bool, keys: usize) {
        let mut m = self.hsm_keys.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((hsm.to_string(), ok)).or_default() += keys as u64;
    }

    /// `qkd_kme_hsm_reseeds_total` and `qkd_kme_hsm_keys_total` for every configured HSM
    /// (`names`).
    pub(crate) fn hsm_prometheus(&self, kme: &str, names: &[&str]) -> String {
        let mut s = String::new();
        for (metric, help, counts) in [
            (
                "qkd_kme_hsm_reseeds_total",
                "HSM random-generator reseeds (C_SeedRandom), by outcome.",
                &self.reseeds,
            ),
            (
                "qkd_kme_hsm_keys_total",
                "Keys of pkcs11 SAEs created in HSM tokens (failed: destroyed instead), by outcome.",
                &self.hsm_keys,
            ),
        ] {
            let m = counts.lock().unwrap_or_else(|p| p.into_inner());
            let _ = writeln!(s, "# HELP {metric} {help}");
            let _ = writeln!(s, "# TYPE {metric} counter");
            for name in names {
                for (ok, outcome) in [(true, "ok"), (false, "failed")] {
                    let n = m.get(&(name.to_string(), ok)).copied().unwrap_or(0);
                    let _ = writeln!(
                        s,
                        "{metric}{{kme=\"{kme}\",hsm=\"{name}\",outcome=\"{outcome}\"}} {n}"
                    );
                }
            }
        }
        s
    }

    /// Counts delivered keys.
    pub fn keys_delivered(&self, n: u64) {
        self.keys_delivered.fetch_add(n, Ordering::Relaxed);
    }

    /// Keys delivered so far.
    pub(crate) fn keys_delivered_total(&self) -> u64 {
        self.keys_delivered.load(Ordering::Relaxed)
    }

    /// Seconds since this monitor (its KME) started.
    pub(crate) fn uptime_seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Prometheus text format.
    pub fn prometheus(&self, kme: &str, pools: &[PoolRow]) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# HELP qkd_kme_keys_delivered_total Keys delivered to SAEs (master and slave side)."
        );
        let _ = writeln!(s, "# TYPE qkd_kme_keys_delivered_total counter");
        let _ = writeln!(
            s,
            "qkd_kme_keys_delivered_total{{kme=\"{kme}\"}} {}",
            self.keys_delivered.load(Ordering::Relaxed)
        );
        let _ = writeln!(s, "# HELP qkd_kme_events_total Events logged.");
        let _ = writeln!(s, "# TYPE qkd_kme_events_total counter");
        let _ = writeln!(
            s,
            "qkd_kme_events_total{{kme=\"{kme}\"}} {}",
            self.events_total.load(Ordering::Relaxed)
        );
        type Family = (
            &'static str,
            &'static str,
            &'static str,
            fn(&PoolRow) -> u64,
        );
        let per_pool: [Family; 5] = [
            (
                "qkd_kme_pool_allocatable_bytes",
                "gauge",
                "Key material this KME may allocate for its own masters, per pool (its \
                 side of a link's blocks).",
                |p| p.allocatable_bytes,
            ),
            (
                "qkd_kme_pool_peer_allocatable_bytes",
                "gauge",
                "Key material the peer KME may allocate for its masters, per pool (as far \
                 as this KME knows).",
                |p| p.peer_allocatable_bytes,
            ),
            (
                "qkd_kme_pool_low_watermark_bytes",
                "gauge",
                "The pool's configured low watermark (0: none).",
                |p| p.low_watermark_bytes,
            ),
            (
                "qkd_kme_pool_reserved_keys",
                "gauge",
                "Keys reserved and waiting for slaves, per pool.",
                |p| p.reserved_keys,
            ),
            (
                "qkd_kme_insufficient_key_total",
                "counter",
                "Key requests refused (503) because this KME's share of the pool ran \
                 dry.",
                |p| p.insufficient_total,
            ),
        ];
        for (name, kind, help, value) in per_pool {
            let _ = writeln!(s, "# HELP {name} {help}");
            let _ = writeln!(s, "# TYPE {name} {kind}");
            for p in pools {
                let _ = writeln!(
                    s,
                    "{name}{{kme=\"{kme}\",pool=\"{}\"}} {}",
                    p.pool,
                    value(p)
                );
            }
        }
        let _ = writeln!(s, "# HELP qkd_kme_link_up 1 when the peer KME answers.");
        let _ = writeln!(s, "# TYPE qkd_kme_link_up gauge");
        for p in pools {
            if let Some(up) = p.link_up {
                let _ = writeln!(
                    s,
                    "qkd_kme_link_up{{kme=\"{kme}\",peer=\"{}\"}} {}",
                    p.pool,
                    u8::from(up)
                );
            }
        }
        s
    }
}

/// The post-processing links in Prometheus text format, from their snapshots.
pub(crate) fn link_prometheus(kme: &str, links: &[serde_json::Value]) -> String {
    let mut s = String::new();
    let gauges: [(&str, &str, &str, &str); 8] = [
        (
            "qkd_kme_link_qber",
            "gauge",
            "qber",
            "QBER of the last block measured.",
        ),
        (
            "qkd_kme_link_efficiency",
            "gauge",
            "efficiency",
            "Reconciliation efficiency f of the last block.",
        ),
        (
            "qkd_kme_link_raw_bits_total",
            "counter",
            "raw_bits",
            "Raw bits post-processed.",
        ),
        (
            "qkd_kme_link_secret_bits_total",
            "counter",
            "secret_bits",
            "Final key bits made allocatable here.",
        ),
        (
            "qkd_kme_link_raw_bits_per_second",
            "gauge",
            "raw_bits_per_second",
            "Raw bit rate over the last minute.",
        ),
        (
            "qkd_kme_link_secret_bits_per_second",
            "gauge",
            "secret_bits_per_second",
            "Secret bit rate over the last minute.",
        ),
        (
            "qkd_kme_link_blocks_kept_total",
            "counter",
            "blocks_kept",
            "Blocks whose key is allocatable here.",
        ),
        (
            "qkd_kme_auth_pool_bits",
            "gauge",
            "auth_pool_bits",
            "Unused bits of the link's authentication pool.",
        ),
    ];
    for (name, kind, field, help) in gauges {
        let _ = writeln!(s, "# HELP {name} {help}");
        let _ = writeln!(s, "# TYPE {name} {kind}");
        for l in links {
            if let (Some(peer), Some(v)) = (l["peer"].as_str(), l[field].as_f64()) {
                let _ = writeln!(s, "{name}{{kme=\"{kme}\",peer=\"{peer}\"}} {v}");
            }
        }
    }
    let _ = writeln!(
        s,
        "# HELP qkd_kme_link_blocks_discarded_total Blocks that yielded no key, by reason."
    );
    let _ = writeln!(s, "# TYPE qkd_kme_link_blocks_discarded_total counter");
    for l in links {
        let (Some(peer), Some(m)) = (l["peer"].as_str(), l["blocks_discarded"].as_object()) else {
            continue;
        };
        for (reason, v) in m {
            let _ = writeln!(
                s,
                "qkd_kme_link_blocks_discarded_total{{kme=\"{kme}\",peer=\"{peer}\",reason=\"{reason}\"}} {}",
                v.as_u64().unwrap_or(0)
            );
        }
    }
    let _ = writeln!(
        s,
        "# HELP qkd_kme_link_state 1 for the post-processing link's current state (up, down, qber_alarm)."
    );
    let _ = writeln!(s, "# TYPE qkd_kme_link_state gauge");
    for l in links {
        let (Some(peer), Some(cur)) = (l["peer"].as_str(), l["state"].as_str()) else {
            continue;
        };
        for st in ["up", "down", "qber_alarm"] {
            let _ = writeln!(
                s,
                "qkd_kme_link_state{{kme=\"{kme}\",peer=\"{peer}\",state=\"{st}\"}} {}",
                u8::from(st == cur)
            );
        }
    }
    s
}

/// The dashboard page (`dashboard.html`): reads `/api/history` and `/api/state`.
pub const DASHBOARD_HTML: &str = include_str!("dashboard.html");
