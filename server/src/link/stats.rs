//! What an operator sees of a post-processing link: its state, the last QBER and efficiency,
//! raw and secret bit rates, blocks kept and discarded by reason.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Instant;

use qkd_core::pipeline::BlockReport;
use serde_json::json;

use crate::config::LinkRole;

/// Seconds of history the rates are taken over.
const RATE_WINDOW_SECS: f64 = 60.0;

/// Counters of one link (behind the link's mutex).
#[derive(Debug, Default)]
pub(crate) struct LinkStats {
    up: bool,
    qber_alarm: bool,
    last_error: Option<String>,
    qber: Option<f64>,
    efficiency: Option<f64>,
    raw_bits: u64,
    secret_bits: u64,
    kept: u64,
    discarded: BTreeMap<&'static str, u64>,
    /// (time, raw bits so far, secret bits so far), oldest first.
    history: VecDeque<(Instant, u64, u64)>,
    missing_noted: HashSet<String>,
}

impl LinkStats {
    pub(crate) fn set_up(&mut self) {
        self.up = true;
        self.last_error = None;
    }

    pub(crate) fn set_down(&mut self, why: &str) {
        self.up = false;
        self.last_error = Some(why.to_string());
    }

    /// Marks the link down unless it already is (keeps the first reason).
    pub(crate) fn set_down_unless_down(&mut self, why: &str) {
        if self.up {
            self.set_down(why);
        }
    }

    /// A block's estimate and reconciliation were measured (kept or not).
    pub(crate) fn block_measured(&mut self, r: &BlockReport, qber_alarm: bool) {
        self.raw_bits += r.raw_bits;
        if r.sample_bits > 0 {
            self.qber = Some(r.qber);
        }
        if r.efficiency.is_some() {
            self.efficiency = r.efficiency;
        }
        self.qber_alarm = qber_alarm;
        self.mark();
    }

    /// A block's key became allocatable here.
    pub(crate) fn activated(&mut self, bits: u64) {
        self.kept += 1;
        self.secret_bits += bits;
        self.mark();
    }

    pub(crate) fn discarded(&mut self, category: &'static str) {
        *self.discarded.entry(category).or_default() += 1;
    }

    /// Whether a missing raw block is new (reported once).
    pub(crate) fn note_missing(&mut self, block: &str) -> bool {
        if self.missing_noted.len() > 10_000 {
            self.missing_noted.clear();
        }
        self.missing_noted.insert(block.to_string())
    }

    fn mark(&mut self) {
        let now = Instant::now();
        self.history
            .push_back((now, self.raw_bits, self.secret_bits));
        while self
            .history
            .front()
            .is_some_and(|(t, ..)| (now - *t).as_secs_f64() > RATE_WINDOW_SECS)
            && self.history.len() > 2
        {
            self.history.pop_front();
        }
    }

    /// (raw, secret) bits per second over the window.
    fn rates(&self) -> (f64, f64) {
        match (self.history.front(), self.history.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                let dt = (b.0 - a.0).as_secs_f64();
                ((b.1 - a.1) as f64 / dt, (b.2 - a.2) as f64 / dt)
            }
            _ => (0.0, 0.0),
        }
    }

    /// The link state: `up`, `down` or `qber_alarm`.
    pub(crate) fn state(&self) -> &'static str {
        match (self.up, self.qber_alarm) {
            (false, _) => "down",
            (true, true) => "qber_alarm",
            (true, false) => "up",
        }
    }

    pub(crate) fn json(&self, peer: &str, role: LinkRole, auth_bits: u64) -> serde_json::Value {
        let (raw_rate, secret_rate) = self.rates();
        json!({
            "peer": peer,
            "role": role,
            "state": self.state(),
            "last_error": self.last_error,
            "qber": self.qber,
            "efficiency": self.efficiency,
            "raw_bits": self.raw_bits,
            "secret_bits": self.secret_bits,
            "raw_bits_per_second": raw_rate,
            "secret_bits_per_second": secret_rate,
            "blocks_kept": self.kept,
            "blocks_discarded": self.discarded,
            "auth_pool_bits": auth_bits,
        })
    }
}
