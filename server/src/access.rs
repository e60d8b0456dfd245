//! The SAE listener's access log and request metrics.
//!
//! [`middleware`] wraps the whole SAE router (request limits included, so their refusals count):
//! per request it writes one `tracing` line at INFO (target `qkd_server::access`) with the
//! caller's SAE identity, the ETSI route and the SAE ID named in the path, method, status, the
//! number and size of the keys served, the response body size and the latency; and it counts
//! the request in the `qkd_kme_request_duration_seconds` histogram. Key bytes never reach it:
//! the handlers leave only a [`KeysServed`] count in the response's extensions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::HttpBody;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

use crate::etsi::{KeyContainer, Status};
use crate::monitor::{Monitor, Route};
use crate::tls::Peer;

/// What a 200 answer carried, for the access log (left in the response's extensions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeysServed {
    /// Keys in the answer.
    pub(crate) number: u64,
    /// Size of the largest key in bits.
    pub(crate) size_bits: u64,
}

/// An answer body that may carry keys.
pub(crate) trait Served {
    /// The keys it carries, if it is a key container.
    fn served(&self) -> Option<KeysServed>;
}

impl Served for Status {
    fn served(&self) -> Option<KeysServed> {
        None
    }
}

impl Served for KeyContainer {
    /// Counted from the base64 lengths only (the key bytes are not decoded).
    fn served(&self) -> Option<KeysServed> {
        let size = |k: &str| {
            let pad = k.bytes().rev().take_while(|&b| b == b'=').count();
            ((k.len() / 4 * 3).saturating_sub(pad) as u64) * 8
        };
        Some(KeysServed {
            number: self.keys.len() as u64,
            size_bits: self.keys.iter().map(|k| size(&k.key)).max().unwrap_or(0),
        })
    }
}

/// Upper bounds of the latency buckets, in seconds (a request answered from memory takes well
/// under a millisecond; one that waits for the peer KME's durable reservation, several).
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Route labels: the three ETSI routes, then anything else.
const ROUTES: [&str; 4] = ["status", "enc_keys", "dec_keys", "other"];
/// Status labels; the last one stands for every other status.
const CODES: [&str; 6] = ["200", "400", "401", "404", "503", "other"];

fn code_index(status: u16) -> usize {
    match status {
        200 => 0,
        400 => 1,
        401 => 2,
        404 => 3,
        503 => 4,
        _ => 5,
    }
}

/// One latency histogram: counts per bucket (not cumulative; the last is above every bound)
/// and the sum in microseconds.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Cumulative counts, one per bound and the last for `+Inf` (the count).
    fn cumulative(&self) -> [u64; BUCKETS.len() + 1] {
        let mut out = [0; BUCKETS.len() + 1];
        let mut acc = 0u64;
        for (o, b) in out.iter_mut().zip(&self.buckets) {
            acc = acc.saturating_add(b.load(Ordering::Relaxed));
            *o = acc;
        }
        out
    }
}

/// Latency histograms of the SAE listener by route and status.
#[derive(Debug, Default)]
pub(crate) struct AccessMetrics {
    hist: [[Histogram; CODES.len()]; ROUTES.len()],
}

impl AccessMetrics {
    fn observe(&self, route: Option<Route>, status: u16, d: Duration) {
        let r = route.map_or(ROUTES.len() - 1, |r| r as usize);
        self.hist[r][code_index(status)].observe(d);
    }

    /// Requests answered with `status` so far, every route (503: refusals, the limits' too).
    pub(crate) fn answered(&self, status: u16) -> u64 {
        let c = code_index(status);
        self.hist
            .iter()
            .map(|row| row[c].cumulative()[BUCKETS.len()])
            .sum()
    }

    /// `qkd_kme_requests_total` and the latency histograms, in Prometheus text format.
    pub(crate) fn prometheus(&self, kme: &str) -> String {
        self.requests_prometheus(kme) + &self.histogram_prometheus(kme)
    }

    /// `qkd_kme_requests_total`: the histograms' counts, every route and status (zeros too).
    fn requests_prometheus(&self, kme: &str) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# HELP qkd_kme_requests_total SAE requests answered, by route and status; refusals \
             by the request limits included."
        );
        let _ = writeln!(s, "# TYPE qkd_kme_requests_total counter");
        for (r, route) in ROUTES.iter().enumerate() {
            for (c, code) in CODES.iter().enumerate() {
                let count = self.hist[r][c].cumulative()[BUCKETS.len()];
                let _ = writeln!(
                    s,
                    "qkd_kme_requests_total{{kme=\"{kme}\",route=\"{route}\",code=\"{code}\"}} {count}"
                );
            }
        }
        s
    }

    /// The histogram family (series that have counted something).
    fn histogram_prometheus(&self, kme: &str) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let name = "qkd_kme_request_duration_seconds";
        let _ = writeln!(
            s,
            "# HELP {name} Time to answer an SAE request (to the response head), by route and \
             status; refusals by the request limits included."
        );
        let _ = writeln!(s, "# TYPE {name} histogram");
        for (r, route) in ROUTES.iter().enumerate() {
            for (c, code) in CODES.iter().enumerate() {
                let h = &self.hist[r][c];
                let cum = h.cumulative();
                let count = cum[BUCKETS.len()];
                if count == 0 {
                    continue;
                }
                let labels = format!("kme=\"{kme}\",route=\"{route}\",code=\"{code}\"");
                for (b, n) in BUCKETS.iter().zip(&cum) {
                    let _ = writeln!(s, "{name}_bucket{{{labels},le=\"{b}\"}} {n}");
                }
                let _ = writeln!(s, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
                let sum = h.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
                let _ = writeln!(s, "{name}_sum{{{labels}}} {sum}");
                let _ = writeln!(s, "{name}_count{{{labels}}} {count}");
            }
        }
        s
    }
}

/// The ETSI route of a path and the SAE ID it names (percent-decoded, at most 128 bytes).
fn classify(path: &str) -> (Option<Route>, Option<String>) {
    let Some((id, op)) = path
        .strip_prefix("/api/v1/keys/")
        .and_then(|rest| rest.split_once('/'))
    else {
        return (None, None);
    };
    let route = match op {
        "status" => Route::Status,
        "enc_keys" => Route::EncKeys,
        "dec_keys" => Route::DecKeys,
        _ => return (None, None),
    };
    let mut id = crate::kme::percent_decode(id).unwrap_or_else(|| id.to_string());
    if id.len() > 128 {
        let mut end = 128;
        while !id.is_char_boundary(end) {
            end -= 1;
        }
        id.truncate(end);
        id.push('…');
    }
    (Some(route), Some(id))
}

/// The access-log and metrics middleware of the SAE router.
pub(crate) async fn middleware(monitor: Arc<Monitor>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let (route, named) = classify(req.uri().path());
    let peer = req.extensions().get::<Arc<Peer>>().cloned();
    let resp = next.run(req).await;
    let elapsed = start.elapsed();
    let status = resp.status().as_u16();
    monitor.access.observe(route, status, elapsed);

    let sae = peer
        .as_ref()
        .and_then(|p| p.id.as_deref())
        .unwrap_or(crate::limits::UNIDENTIFIED);
    // The certificate's CN when it maps to no SAE (what an operator needs to fix a 401).
    let cn = peer
        .as_ref()
        .filter(|p| p.id.is_none())
        .and_then(|p| p.cert.as_ref())
        .and_then(|c| c.cn.as_deref());
    let (slave, master) = match route {
        Some(Route::DecKeys) => (None, named.as_deref()),
        _ => (named.as_deref(), None),
    };
    let served = resp.extensions().get::<KeysServed>().copied();
    let size = HttpBody::size_hint(resp.body());
    let bytes = size.exact().unwrap_or(size.lower());
    tracing::info!(
        sae,
        cn,
        route = route.map_or("other", |r| ROUTES[r as usize]),
        slave,
        master,
        method = method.as_str(),
        status,
        keys = served.map(|s| s.number),
        key_size = served.map(|s| s.size_bits),
        bytes,
        latency_ms = elapsed.as_micros() as f64 / 1000.0,
        "sae request"
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etsi::Key;

    #[test]
    fn routes_and_path_ids() {
        let (r, id) = classify("/api/v1/keys/SAE_2/enc_keys");
        assert!(matches!(r, Some(Route::EncKeys)));
        assert_eq!(id.as_deref(), Some("SAE_2"));
        let (r, id) = classify("/api/v1/keys/SAE%201/dec_keys");
        assert!(matches!(r, Some(Route::DecKeys)));
        assert_eq!(id.as_deref(), Some("SAE 1"));
        assert!(matches!(
            classify("/api/v1/keys/X/status").0,
            Some(Route::Status)
        ));
        for other in [
            "/",
            "/api/v1/keys/X",
            "/api/v1/keys/X/other",
            "/api/v1/keys/a/b/status",
        ] {
            assert!(classify(other).0.is_none(), "{other}");
        }
        let long = format!("/api/v1/keys/{}/status", "é".repeat(100));
        let id = classify(&long).1.unwrap();
        assert!(
            id.len() <= 128 + '…'.len_utf8() && id.ends_with('…'),
            "{id}"
        );
    }

    #[test]
    fn keys_served_from_base64_lengths() {
        let key = |b64: &str| Key {
            key_ID: "x".into(),
            key_ID_extension: None,
            key: b64.into(),
            key_extension: None,
        };
        // 32 bytes = 44 base64 characters with one '='; 1 byte = "AA==".
        let c = KeyContainer {
            keys: vec![key(&format!("{}=", "A".repeat(43))), key("AA==")],
            key_container_extension: None,
        };
        assert_eq!(
            c.served(),
            Some(KeysServed {
                number: 2,
                size_bits: 256
            })
        );
    }

    #[test]
    fn histogram_text_is_cumulative_with_inf_equal_to_count() {
        let m = AccessMetrics::default();
        m.observe(
            Some(Route::EncKeys),
            200,
            Duration::from_micros(300), // first bucket
        );
        m.observe(Some(Route::EncKeys), 200, Duration::from_millis(3)); // le 0.005
        m.observe(Some(Route::EncKeys), 200, Duration::from_secs(60)); // above every bound
        m.observe(None, 404, Duration::from_millis(1)); // le 0.001 exactly
        m.observe(Some(Route::Status), 503, Duration::from_millis(20));
        assert_eq!(m.answered(503), 1);
        assert_eq!(m.answered(200), 3);
        let requests = m.requests_prometheus("K");
        assert!(
            requests
                .contains("qkd_kme_requests_total{kme=\"K\",route=\"enc_keys\",code=\"200\"} 3\n")
        );
        assert!(
            requests
                .contains("qkd_kme_requests_total{kme=\"K\",route=\"dec_keys\",code=\"200\"} 0\n")
        );
        let text = m.histogram_prometheus("K");
        let series = |labels: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.contains(labels))
                .map(str::to_string)
                .collect()
        };
        let enc = series("route=\"enc_keys\",code=\"200\"");
        let p = "qkd_kme_request_duration_seconds";
        let l = "kme=\"K\",route=\"enc_keys\",code=\"200\"";
        assert_eq!(enc.len(), BUCKETS.len() + 3);
        assert_eq!(enc[0], format!("{p}_bucket{{{l},le=\"0.0005\"}} 1"));
        assert_eq!(enc[2], format!("{p}_bucket{{{l},le=\"0.0025\"}} 1"));
        assert_eq!(enc[3], format!("{p}_bucket{{{l},le=\"0.005\"}} 2"));
        assert_eq!(enc[13], format!("{p}_bucket{{{l},le=\"10\"}} 2"));
        assert_eq!(enc[14], format!("{p}_bucket{{{l},le=\"+Inf\"}} 3"));
        assert_eq!(enc[15], format!("{p}_sum{{{l}}} 60.0033"));
        assert_eq!(enc[16], format!("{p}_count{{{l}}} 3"));
        let other = series("route=\"other\",code=\"404\"");
        assert!(other[1].ends_with("le=\"0.001\"} 1"), "{other:?}");
        // Series that counted nothing are left out; HELP and TYPE once.
        assert!(series("route=\"dec_keys\"").is_empty());
        assert_eq!(text.matches("# TYPE").count(), 1);
        assert_eq!(text.matches("# HELP").count(), 1);
    }
}
