//! The monitor's dashboard in a real headless browser (Debian's chromium, installed by
//! scripts/install-browser.sh): after its JavaScript ran, the page shows each pool with its
//! allocatable key in units, its state (green, then red with the alarm once the peer KME is
//! gone) and the version; a screenshot is drawn. And the files in
//! deploy/: the Grafana dashboard queries only metrics a live `/metrics` has, and the systemd
//! unit passes `systemd-analyze verify`.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use qkd_server::etsi::KeyRequest;
use qkd_server::{ServerHandle, serve};
use serde_json::Value;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Two KMEs post-processing between themselves (KME_A with its monitor listener), after key
/// requests on the link and on the local pool.
async fn site() -> (Lab, ServerHandle, ServerHandle) {
    let mut lab = raw_lab();
    lab.a.monitor_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], free_port())));
    let a = serve(lab.a.clone()).await.unwrap();
    let b = serve(lab.b.clone()).await.unwrap();
    wait_blocks(&a, "KME_B", 3).await;
    wait_blocks(&b, "KME_A", 3).await;
    let req = KeyRequest {
        number: Some(4),
        size: Some(256),
        ..Default::default()
    };
    let (sae1, sae2, sae3) = (
        lab.client(&a, "SAE_1"),
        lab.client(&b, "SAE_2"),
        lab.client(&a, "SAE_3"),
    );
    // A KME allocates only from the blocks it owns: retry until one of them is KME_A's.
    let mut enc = None;
    for _ in 0..300 {
        if let Ok(k) = sae1.enc_keys("SAE_2", &req).await {
            enc = Some(k);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let enc = enc.expect("no keys for SAE_2 within 30 s");
    let ids: Vec<uuid::Uuid> = enc.keys.iter().map(|k| k.key_ID.parse().unwrap()).collect();
    sae2.dec_keys("SAE_1", &ids).await.unwrap();
    let local = sae1.enc_keys("SAE_3", &req).await.unwrap();
    let ids: Vec<uuid::Uuid> = local
        .keys
        .iter()
        .map(|k| k.key_ID.parse().unwrap())
        .collect();
    sae3.dec_keys("SAE_1", &ids).await.unwrap();
    sae1.status("SAE_2").await.unwrap();
    (lab, a, b)
}

/// Runs chromium headless on `url` with `extra` flags (a fresh profile each time, at most two
/// minutes); returns its stdout.
fn chromium(url: &str, extra: &[String]) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} not found: run scripts/install-browser.sh (it installs Debian's chromium)"
    );
    let profile = tempfile::tempdir().unwrap();
    let log = profile.path().join("stderr.txt");
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.path().join("p").display()
        ))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = reader.join().unwrap().unwrap();
    let err = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "chromium failed ({status}):\n{err}");
    out
}

/// The text of the element with this id in a serialized DOM.
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let open = format!("id=\"{id}\"");
    let at = dom
        .find(&open)
        .unwrap_or_else(|| panic!("no element {id} in\n{dom}"));
    let start = at + dom[at..].find('>').unwrap() + 1;
    let end = start + dom[start..].find('<').unwrap();
    &dom[start..end]
}

/// "12.3 KiB", "4.00 MiB", "512 B".
fn is_byte_amount(s: &str) -> bool {
    let Some((num, unit)) = s.split_once(' ') else {
        return false;
    };
    ["B", "KiB", "MiB", "GiB", "TiB"].contains(&unit)
        && num.parse::<f64>().is_ok()
        && num.chars().all(|c| c.is_ascii_digit() || c == '.')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_renders_pools_states_and_version_in_a_browser() {
    let (_lab, a, b) = site().await;
    let url = format!("http://{}/", a.monitor_addr.unwrap());
    let (u, url2) = (url.clone(), url.clone());
    let dom = tokio::task::spawn_blocking(move || chromium(&u, &["--dump-dom".into()]))
        .await
        .unwrap();

    // Only what the page's script wrote counts (the script's own text is cut off): none of
    // these elements is in the served markup.
    let markup = |html: &str| html[..html.find("<script").unwrap()].to_string();
    let served = markup(qkd_server::monitor::DASHBOARD_HTML);
    for id in ["alloc-KME_B", "state-KME_B", "version", "kps"] {
        assert!(!served.contains(&format!("id=\"{id}\"")), "{id} is static");
    }
    let dom = markup(&dom);
    assert_eq!(text_of(&dom, "title"), "qkd KME KME_A");
    assert_eq!(text_of(&dom, "version"), env!("CARGO_PKG_VERSION"));
    assert!(dom.contains("data-pool=\"KME_B\""), "{dom}");
    assert!(dom.contains("data-pool=\"_local\""), "{dom}");
    for pool in ["KME_B", "_local"] {
        let v = text_of(&dom, &format!("alloc-{pool}"));
        assert!(is_byte_amount(v), "allocatable of {pool}: {v:?}");
    }
    // The local pool's random source tops it up to 4 MiB; the link holds KiB.
    assert!(text_of(&dom, "alloc-_local").ends_with("MiB"), "{dom}");
    assert_eq!(text_of(&dom, "state-KME_B"), "link up");
    assert!(
        dom.contains("class=\"badge green\" id=\"state-KME_B\""),
        "the state is drawn green: {dom}"
    );
    assert_eq!(text_of(&dom, "state-_local"), "local");
    // The link's low watermark (4096 bytes in the lab) is drawn on its chart.
    assert!(dom.contains("class=\"watermark\""), "{dom}");
    assert!(dom.contains("low watermark 4.00 KiB"), "{dom}");
    // The post-processing link's QBER is in its table row (about 2 % on the simulated device).
    assert!(dom.contains("<td>KME_B</td><td>alice</td>"), "{dom}");
    assert!(dom.contains("<td>0.0"), "a QBER of 0.0xxx: {dom}");

    // A screenshot of the drawn page: a PNG of the window's size with more than blank in it.
    let png = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&png);
    let arg = format!("--screenshot={}", png.display());
    tokio::task::spawn_blocking(move || {
        chromium(&url, &[arg, "--window-size=1280,1600".into()]);
    })
    .await
    .unwrap();
    let bytes = std::fs::read(&png).expect("no screenshot written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let dim = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    assert_eq!((dim(16), dim(20)), (1280, 1600), "IHDR width and height");
    // A blank page of this size compresses to a few KiB; text, badges and charts take more.
    assert!(
        bytes.len() > 40_000,
        "screenshot only {} bytes",
        bytes.len()
    );

    // KME_B goes away: once KME_A has noticed, its pool and the alarm are drawn red.
    b.shutdown().await;
    let mut noticed = false;
    for _ in 0..300 {
        noticed = a
            .events()
            .iter()
            .any(|e| serde_json::to_value(e).unwrap()["kind"] == "peer_down");
        if noticed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(noticed, "KME_A did not notice KME_B stopping within 30 s");
    let dom = tokio::task::spawn_blocking(move || chromium(&url2, &["--dump-dom".into()]))
        .await
        .unwrap();
    let dom = markup(&dom);
    assert_eq!(text_of(&dom, "state-KME_B"), "link down");
    assert!(
        dom.contains("class=\"badge red\" id=\"state-KME_B\""),
        "{dom}"
    );
    assert!(
        dom.contains("<span class=\"badge red\">peer_down</span>"),
        "{dom}"
    );
    assert_eq!(text_of(&dom, "overall"), "alarm");
    a.shutdown().await;
}

/// Metric names a PromQL expression reads: identifiers that are not functions, keywords,
/// label names (inside braces and `by (...)`), numbers, durations or Grafana variables.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut clean = String::new();
    let mut depth = 0;
    for c in expr.chars() {
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            _ if depth == 0 => clean.push(c),
            _ => {}
        }
    }
    let grouping = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let words = ["and", "or", "unless", "bool", "offset"];
    let mut rest = clean.as_str();
    while !rest.is_empty() {
        let c = rest.chars().next().unwrap();
        if c == '$' {
            let end = rest[1..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(rest.len(), |i| i + 1);
            rest = &rest[end..];
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let word = &rest[..end];
            rest = &rest[end..];
            let next = rest.trim_start().chars().next();
            let next_word = rest
                .trim_start()
                .split(|c: char| !c.is_ascii_alphabetic())
                .next();
            if grouping.contains(&word) {
                // Its label list, if any, up to the ')'.
                if next == Some('(') {
                    rest = &rest[rest.find(')').map_or(rest.len(), |i| i + 1)..];
                }
            } else if !words.contains(&word)
                && next != Some('(')
                && !matches!(next_word, Some("by" | "without"))
            {
                out.insert(word.to_string());
            }
            continue;
        }
        if c.is_ascii_digit() || c == '.' {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.'))
                .unwrap_or(rest.len());
            rest = &rest[end..];
            continue;
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[test]
fn promql_names_are_found() {
    let names = metric_names(
        "histogram_quantile(0.95, sum by (le, route) (rate(x_bucket{kme=~\"$kme\",code=\"503\"}[$__rate_interval]))) * 60 + y",
    );
    assert_eq!(
        names,
        ["x_bucket", "y"].iter().map(|s| s.to_string()).collect()
    );
    let names = metric_names("sum without (pool) (a) / on (kme) group_left (x) b offset 5m");
    assert_eq!(names, ["a", "b"].iter().map(|s| s.to_string()).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_dashboard_queries_only_live_metric_names() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana-dashboard.json"
    ))
    .unwrap();
    let d: Value = serde_json::from_str(&text).unwrap();
    assert!(d["title"].is_string() && d["uid"].is_string());
    assert!(d["schemaVersion"].as_u64().unwrap() >= 30);
    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut queried = BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "panel id twice");
        assert!(p["title"].is_string() && p["type"].is_string(), "{p}");
        let g = &p["gridPos"];
        for k in ["x", "y", "w", "h"] {
            assert!(g[k].is_u64(), "{p}");
        }
        assert!(
            g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
            "{p}"
        );
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{p}");
        for t in targets {
            queried.extend(metric_names(t["expr"].as_str().unwrap()));
        }
    }
    // Grafana's label_values(METRIC, LABEL): the metric.
    for v in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            let args = q.strip_prefix("label_values(").unwrap();
            queried.extend(metric_names(args.split(',').next().unwrap()));
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");

    let (lab, a, b) = site().await;
    let live = monitor_get(&lab, &a, "/metrics").await;
    let m = crate::prom::parse(&live).unwrap_or_else(|e| panic!("{e}\n{live}"));
    let have = m.names();
    let missing: Vec<&String> = queried.iter().filter(|n| !have.contains(*n)).collect();
    assert!(missing.is_empty(), "not in /metrics: {missing:?}\n{live}");
    a.shutdown().await;
    b.shutdown().await;
}

#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/qkd-kme.service"
    ))
    .unwrap();
    for line in [
        "Type=simple",
        "ExecStart=/usr/local/bin/qkd serve --config /etc/qkd/kme.toml --log-format json",
        "KillSignal=SIGTERM",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/qkd",
        "PrivateTmp=yes",
        "User=qkd",
        "UMask=0077",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing");
    }
    assert!(unit.lines().any(|l| l.starts_with("TimeoutStopSec=")));
    // systemd's own check, where systemd is installed (the binary is replaced by one that
    // exists: verify checks the executable is there).
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not installed: syntax not verified");
        return;
    };
    assert!(probe.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qkd-kme.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/qkd", "/bin/true")).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "{err}");
}
