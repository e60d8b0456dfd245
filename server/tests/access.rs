//! The SAE listener's access log and the monitor's `/metrics` on a live KME: one log line per
//! SAE request (caller, route, the SAE named in the path, method, status, keys, key size, body
//! size, latency; never key bytes), the latency histogram's counts by route and status, the
//! build, uptime and process families, and an exposition a strict parser accepts.
//!
//! A binary of its own: it installs the process's global log subscriber and counts every
//! access line, which the other tests (`tests/it`) would add to.

#[path = "it/common/mod.rs"]
mod common;
#[path = "it/common/prom.rs"]
mod prom;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use common::*;
use qkd_server::etsi::KeyRequest;
use serde_json::Value;
use uuid::Uuid;

/// Everything logged in this test binary, as JSON lines.
#[derive(Clone)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber once (server tasks log from any thread: global).
fn captured() -> Captured {
    static LOG: OnceLock<Captured> = OnceLock::new();
    LOG.get_or_init(|| {
        let c = Captured(Arc::default());
        let w = c.clone();
        tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || w.clone())
            .init();
        c
    })
    .clone()
}

fn access_lines(log: &Captured) -> Vec<Value> {
    let bytes = log.0.lock().unwrap().clone();
    String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["target"] == "qkd_server::access")
        .map(|v| v["fields"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_and_request_metrics() {
    let log = captured();
    let mut lab = lab(60);
    lab.a.monitor_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], free_port())));
    let a = start(&lab.a).await;
    let sae1 = lab.client(&a, "SAE_1");
    let sae3 = lab.client(&a, "SAE_3");

    // 200s on each route.
    let kc = sae1
        .enc_keys(
            "SAE_3",
            &KeyRequest {
                number: Some(2),
                size: Some(512),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let ids: Vec<Uuid> = kc.keys.iter().map(|k| k.key_ID.parse().unwrap()).collect();
    let got = sae3.dec_keys("SAE_1", &ids).await.unwrap();
    assert_eq!(got.keys.len(), 2);
    sae1.status("SAE_3").await.unwrap();
    // 400: fetched already.
    sae3.dec_keys("SAE_1", &ids[..1]).await.unwrap_err();
    // 503: SAE_2 is behind KME_B, which is not running.
    let e = sae1
        .enc_keys("SAE_2", &KeyRequest::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("503"), "{e}");
    // 401: a certificate of the CA that names no SAE (a KME's); 404: no such route.
    let base = format!("https://localhost:{}", a.sae_addr.port());
    let kme_cert = raw_tls_client(
        &lab.path("ca.pem"),
        Some((&lab.path("KME_B.pem"), &lab.path("KME_B.key"))),
    );
    let r = kme_cert
        .get(format!("{base}/api/v1/keys/SAE_3/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let sae1_raw = raw_tls_client(
        &lab.path("ca.pem"),
        Some((&lab.path("SAE_1.pem"), &lab.path("SAE_1.key"))),
    );
    let r = sae1_raw
        .get(format!("{base}/api/v1/keys/SAE_3/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // One access line per request, in order.
    let lines = access_lines(&log);
    assert_eq!(lines.len(), 7, "{lines:#?}");
    let enc = &lines[0];
    assert_eq!(enc["message"], "sae request");
    assert_eq!(enc["sae"], "SAE_1");
    assert_eq!(enc["route"], "enc_keys");
    assert_eq!(enc["slave"], "SAE_3");
    assert!(enc.get("master").is_none());
    assert_eq!(enc["method"], "POST");
    assert_eq!(enc["status"], 200);
    assert_eq!(
        (enc["keys"].as_u64(), enc["key_size"].as_u64()),
        (Some(2), Some(512))
    );
    // Two keys of 64 bytes in base64 and their IDs make a body of more than 250 bytes.
    assert!(enc["bytes"].as_u64().unwrap() > 250, "{enc}");
    assert!(enc["latency_ms"].as_f64().unwrap() >= 0.0);
    let dec = &lines[1];
    assert_eq!(
        (
            &dec["sae"],
            &dec["route"],
            &dec["master"],
            &dec["status"],
            &dec["keys"]
        ),
        (
            &"SAE_3".into(),
            &"dec_keys".into(),
            &"SAE_1".into(),
            &200.into(),
            &2.into()
        )
    );
    assert!(dec.get("slave").is_none());
    assert_eq!(
        (&lines[2]["route"], &lines[2]["method"]),
        (&"status".into(), &"GET".into())
    );
    assert!(lines[2].get("keys").is_none(), "status serves no keys");
    assert_eq!(lines[3]["status"], 400);
    assert!(lines[3].get("keys").is_none());
    assert_eq!(
        (&lines[4]["status"], &lines[4]["route"]),
        (&503.into(), &"enc_keys".into())
    );
    assert!(lines[4]["bytes"].as_u64().unwrap() > 0, "the Error body");
    let unknown = &lines[5];
    assert_eq!(
        (&unknown["sae"], &unknown["cn"], &unknown["status"]),
        (&"<unidentified>".into(), &"KME_B".into(), &401.into())
    );
    assert_eq!(
        (&lines[6]["route"], &lines[6]["status"]),
        (&"other".into(), &404.into())
    );
    // No key byte anywhere in the log.
    let all = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    for k in &kc.keys {
        assert!(!all.contains(&k.key));
    }

    // The histograms count the same requests; the whole exposition is valid.
    let text = monitor_get(&lab, &a, "/metrics").await;
    let m = prom::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(m.types["qkd_kme_request_duration_seconds"], "histogram");
    let count = |route: &str, code: &str| {
        m.value(
            "qkd_kme_request_duration_seconds_count",
            &[("kme", "KME_A"), ("route", route), ("code", code)],
        )
    };
    for (route, code) in [
        ("enc_keys", "200"),
        ("dec_keys", "200"),
        ("status", "200"),
        ("dec_keys", "400"),
        ("enc_keys", "503"),
        ("status", "401"),
        ("other", "404"),
    ] {
        assert_eq!(count(route, code), 1.0, "{route} {code}");
    }
    assert_eq!(
        m.find("qkd_kme_request_duration_seconds_count", &[])
            .count(),
        7,
        "series that counted nothing are left out"
    );
    let inf = m.value(
        "qkd_kme_request_duration_seconds_bucket",
        &[("route", "enc_keys"), ("code", "200"), ("le", "+Inf")],
    );
    assert_eq!(inf, 1.0);
    assert_eq!(
        m.value("qkd_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0
    );
    let git = &m.find("qkd_build_info", &[]).next().unwrap().labels["git"];
    assert!(!git.is_empty());
    assert!(m.value("qkd_kme_uptime_seconds", &[("kme", "KME_A")]) >= 0.0);
    assert!(m.value("process_resident_memory_bytes", &[]) > 1e6);
    assert!(m.value("process_open_fds", &[]) >= 3.0);
    assert!(m.value("process_cpu_seconds_total", &[]) >= 0.0);
    assert!(m.value("process_start_time_seconds", &[]) > 1.6e9);
    // The handlers' own counter agrees where both count.
    assert_eq!(
        m.value(
            "qkd_kme_requests_total",
            &[("route", "enc_keys"), ("code", "503")]
        ),
        1.0
    );
    a.shutdown().await;
}
#[test]
fn the_strict_parser_refuses_what_prometheus_would() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 3\n\
              # TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.3\nh_count 2\n";
    let e = prom::parse(ok).unwrap();
    assert_eq!(e.value("a_total", &[("x", "1")]), 3.0);
    assert_eq!(e.value("h_count", &[]), 2.0);
    let bad = [
        "a 1\n",                                                          // no TYPE
        "# TYPE a gauge\n# TYPE a gauge\na 1\n",                          // TYPE twice
        "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na 2\n",                // not contiguous
        "# TYPE a gauge\na{x=\"1\"} 1\na{x=\"1\"} 2\n",                   // series twice
        "# TYPE a counter\na -1\n",                                       // counter below 0
        "# TYPE a gauge\na{x=1} 1\n",                                     // unquoted
        "# TYPE a gauge\na one\n",                                        // not a number
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", // no +Inf
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n", // count differs
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n",          // no sum
    ];
    for b in bad {
        assert!(prom::parse(b).is_err(), "accepted:\n{b}");
    }
}
