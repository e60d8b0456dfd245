//! The dashboard's memory, kept by the server so a reload loses nothing: every [`INTERVAL`] a
//! sample of each pool (allocatable bytes, reserved keys, link state), of the post-processing
//! links (state, QBER, efficiency, secret rate) and of the counters (keys delivered, 503
//! answers, with their rates since the sample before), in a ring of [`CAPACITY`] samples (an
//! hour). `/api/history` serves it as JSON with what the page needs to draw it (pool low
//! watermarks, key size, version, uptime); `?since=MS` returns only later samples.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use crate::kme::Kme;

/// Time between samples.
pub(crate) const INTERVAL: Duration = Duration::from_secs(5);
/// Samples kept: one hour at [`INTERVAL`].
pub(crate) const CAPACITY: usize = 720;

/// One pool at one instant.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct PoolSample {
    pub(crate) pool: String,
    pub(crate) allocatable_bytes: u64,
    pub(crate) reserved_keys: u64,
    /// `None` for the local pool.
    pub(crate) link_up: Option<bool>,
}

/// One post-processing link at one instant (from its snapshot).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct LinkSample {
    pub(crate) peer: String,
    pub(crate) state: Option<String>,
    pub(crate) qber: Option<f64>,
    pub(crate) efficiency: Option<f64>,
    pub(crate) secret_bits_per_second: Option<f64>,
}

impl LinkSample {
    fn of(snapshot: &Value) -> Self {
        Self {
            peer: snapshot["peer"].as_str().unwrap_or_default().to_string(),
            state: snapshot["state"].as_str().map(str::to_string),
            qber: snapshot["qber"].as_f64(),
            efficiency: snapshot["efficiency"].as_f64(),
            secret_bits_per_second: snapshot["secret_bits_per_second"].as_f64(),
        }
    }
}

/// Everything sampled at one instant.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Sample {
    /// Unix milliseconds.
    pub(crate) at_ms: u64,
    /// Keys delivered so far (the `qkd_kme_keys_delivered_total` counter).
    pub(crate) keys_delivered: u64,
    /// 503 answers so far on the SAE listener.
    pub(crate) refused: u64,
    /// Keys delivered per second since the sample before (0 for the first).
    pub(crate) keys_per_second: f64,
    /// 503 answers per minute since the sample before (0 for the first).
    pub(crate) refused_per_minute: f64,
    pub(crate) pools: Vec<PoolSample>,
    pub(crate) links: Vec<LinkSample>,
}

/// The ring of samples.
#[derive(Debug)]
pub(crate) struct History {
    ring: Mutex<VecDeque<Sample>>,
    capacity: usize,
}

impl Default for History {
    fn default() -> Self {
        Self::with_capacity(CAPACITY)
    }
}

impl History {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            ring: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
        }
    }

    /// Adds a sample; its rates are computed against the one before. A counter that went
    /// down (it cannot, short of a restart) or a clock that did not advance gives rate 0.
    pub(crate) fn push(&self, mut s: Sample) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(prev) = ring.back()
            && s.at_ms > prev.at_ms
        {
            let secs = (s.at_ms - prev.at_ms) as f64 / 1000.0;
            let delta = |now: u64, then: u64| now.saturating_sub(then) as f64;
            s.keys_per_second = delta(s.keys_delivered, prev.keys_delivered) / secs;
            s.refused_per_minute = delta(s.refused, prev.refused) / secs * 60.0;
        }
        if ring.len() >= self.capacity {
            ring.pop_front();
        }
        ring.push_back(s);
    }

    /// Samples taken after `after_ms` (all of them for `None`), oldest first.
    pub(crate) fn since(&self, after_ms: Option<u64>) -> Vec<Sample> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter()
            .filter(|s| after_ms.is_none_or(|t| s.at_ms > t))
            .cloned()
            .collect()
    }
}

/// Takes one sample of `kme` now.
pub(crate) fn sample(kme: &Kme) -> Sample {
    let pools = crate::pool_rows(kme)
        .into_iter()
        .map(|r| PoolSample {
            pool: r.pool,
            allocatable_bytes: r.allocatable_bytes,
            reserved_keys: r.reserved_keys,
            link_up: r.link_up,
        })
        .collect();
    let mut links: Vec<LinkSample> = kme
        .processing
        .values()
        .map(|rt| LinkSample::of(&rt.snapshot()))
        .collect();
    links.sort_by(|a, b| a.peer.cmp(&b.peer));
    Sample {
        at_ms: crate::kme::now_ms(),
        keys_delivered: kme.monitor.keys_delivered_total(),
        refused: kme.monitor.access.answered(503),
        keys_per_second: 0.0,
        refused_per_minute: 0.0,
        pools,
        links,
    }
}

/// Samples `kme` at once and then every [`INTERVAL`] until `stop`.
pub(crate) async fn run(kme: Arc<Kme>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let k = kme.clone();
        // Pool counts may touch the store: off the async workers.
        match tokio::task::spawn_blocking(move || sample(&k)).await {
            Ok(s) => kme.monitor.history.push(s),
            Err(e) => tracing::warn!(error = %e, "history sample failed"),
        }
    }
}

/// The `/api/history` document: what the dashboard draws, and the samples after `since`.
pub(crate) fn json(kme: &Kme, since: Option<u64>) -> Value {
    let cfg = &kme.cfg;
    let pools: Vec<Value> = crate::pool_rows(kme)
        .into_iter()
        .map(|r| json!({"pool": r.pool, "low_watermark_bytes": r.low_watermark_bytes}))
        .collect();
    json!({
        "kme_id": cfg.kme_id,
        "version": crate::procinfo::VERSION,
        "git": crate::procinfo::GIT_REVISION,
        "uptime_seconds": kme.monitor.uptime_seconds(),
        "interval_seconds": INTERVAL.as_secs(),
        "key_size_bits": cfg.keys.default_size,
        "pools": pools,
        "samples": kme.monitor.history.since(since),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(at_ms: u64, keys: u64, refused: u64) -> Sample {
        Sample {
            at_ms,
            keys_delivered: keys,
            refused,
            keys_per_second: 0.0,
            refused_per_minute: 0.0,
            pools: vec![PoolSample {
                pool: "P".into(),
                allocatable_bytes: at_ms,
                reserved_keys: 0,
                link_up: Some(true),
            }],
            links: Vec::new(),
        }
    }

    #[test]
    fn rates_between_samples_and_the_ring_bound() {
        let h = History::with_capacity(3);
        h.push(at(10_000, 100, 0));
        h.push(at(15_000, 150, 2)); // 50 keys in 5 s; 2 refusals in 5 s = 24 per minute
        h.push(at(15_000, 170, 2)); // no time passed: rate 0, not infinite
        h.push(at(20_000, 10, 1)); // counters went down (a restart): 0, not negative
        let all = h.since(None);
        assert_eq!(all.len(), 3, "the oldest was dropped");
        assert_eq!(all[0].at_ms, 15_000);
        assert_eq!(all[0].keys_per_second, 10.0);
        assert_eq!(all[0].refused_per_minute, 24.0);
        assert_eq!(
            (all[1].keys_per_second, all[1].refused_per_minute),
            (0.0, 0.0)
        );
        assert_eq!(
            (all[2].keys_per_second, all[2].refused_per_minute),
            (0.0, 0.0)
        );
        let later = h.since(Some(15_000));
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].at_ms, 20_000);
        assert!(h.since(Some(20_000)).is_empty());
        let v = serde_json::to_value(&later[0]).unwrap();
        assert_eq!(v["pools"][0]["pool"], "P");
        assert_eq!(v["pools"][0]["link_up"], true);
    }

    #[test]
    fn link_sample_reads_the_snapshot_fields() {
        let s = LinkSample::of(&json!({
            "peer": "KME_B", "state": "qber_alarm", "qber": 0.031, "efficiency": 1.12,
            "secret_bits_per_second": 2.5e5, "raw_bits": 10
        }));
        assert_eq!(s.peer, "KME_B");
        assert_eq!(s.state.as_deref(), Some("qber_alarm"));
        assert_eq!(
            (s.qber, s.efficiency, s.secret_bits_per_second),
            (Some(0.031), Some(1.12), Some(2.5e5))
        );
        let empty = LinkSample::of(&json!({"peer": "X", "qber": null}));
        assert_eq!((empty.qber, empty.state), (None, None));
    }
}
