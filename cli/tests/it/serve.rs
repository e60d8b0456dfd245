//! `qkd serve` as a process: its log (text or one JSON object per line, filtered by RUST_LOG),
//! its shutdown on SIGTERM or SIGINT (exit status 0, the key store closed and readable), and
//! its store read by `qkd store status` and `qkd audit` while it runs.

use crate::common::{free_port, ok};

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use qkd_server::Config;
use qkd_server::client::Client;

fn qkd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_qkd"));
    c.env_remove("RUST_LOG");
    c
}

/// A PKI from `qkd pki init` (KME_A with SAE_1 and SAE_3, KME_B with SAE_2; links `raw`), and
/// KME_A's configuration on free ports (its peer KME_B not running), written to
/// `KME_A.test.toml`; `edit` changes it first.
fn lab(raw: &str, edit: impl FnOnce(&mut Config)) -> (tempfile::TempDir, PathBuf, Config) {
    let dir = tempfile::tempdir().unwrap();
    let out = qkd()
        .args(["pki", "init"])
        .arg(dir.path())
        .args(["--kme", "KME_A", "--kme", "KME_B", "--raw", raw])
        .args([
            "--sae",
            "SAE_1@KME_A",
            "--sae",
            "SAE_3@KME_A",
            "--sae",
            "SAE_2@KME_B",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut a = Config::load(&dir.path().join("KME_A.toml")).unwrap();
    let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
    a.listen = local(free_port());
    a.peer_listen = Some(local(free_port()));
    a.links[0].url = format!("https://127.0.0.1:{}", free_port());
    edit(&mut a);
    let path = dir.path().join("KME_A.test.toml");
    std::fs::write(&path, toml::to_string(&a).unwrap()).unwrap();
    (dir, path, a)
}

/// A running `qkd serve` whose stderr lines arrive on `lines`; killed if still running when
/// dropped.
struct Serve {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Serve {
    fn start(config: &Path, args: &[&str], env: &[(&str, &Path)], rust_log: Option<&str>) -> Self {
        let mut c = qkd();
        c.args(["serve", "--config"])
            .arg(config)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        if let Some(f) = rust_log {
            c.env("RUST_LOG", f);
        }
        let mut child = c.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Sends `signal` (TERM or INT), waits for the exit, and returns the exit status with
    /// every stderr line.
    fn stop(mut self, signal: &str) -> (ExitStatus, Vec<String>) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-s", signal, &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -s {signal} {pid}");
        let t = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "qkd serve did not exit after SIG{signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends at EOF, once the process has exited.
        let lines = self.lines.iter().collect();
        (status, lines)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until the KME answers an ETSI status request of SAE_1 (its certificate from the PKI
/// directory) on its SAE listener.
fn wait_ready(dir: &Path, cfg: &Config) {
    let client = Client::new(
        &format!("https://localhost:{}", cfg.listen.port()),
        &dir.join("ca.pem"),
        &dir.join("SAE_1.pem"),
        &dir.join("SAE_1.key"),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let t = Instant::now();
    while rt.block_on(client.status("SAE_3")).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the KME never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn store_status_succeeds(store: &Path) {
    let out = qkd()
        .args(["store", "status", "--json", "--store"])
        .arg(store)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the store does not open after the shutdown: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(s["links"].is_array(), "{s}");
}

#[test]
fn sigterm_stops_serve_cleanly_and_json_logs_are_json_lines() {
    let (dir, path, cfg) = lab("simulated", |_| {});
    let serve = Serve::start(&path, &["--log-format", "json"], &[], None);
    wait_ready(dir.path(), &cfg);
    let (status, lines) = serve.stop("TERM");
    assert_eq!(status.code(), Some(0), "{status}: {lines:#?}");
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let message = |e: &serde_json::Value| e["fields"]["message"].as_str().unwrap_or("").to_string();
    assert!(
        events
            .iter()
            .any(|e| e["level"] == "WARN" && message(e).contains("INSECURE simulated source")),
        "no warning about the simulated source: {lines:#?}"
    );
    let serving = format!("serving SAEs on https://{}", cfg.listen);
    assert!(
        events
            .iter()
            .any(|e| e["level"] == "INFO" && message(e) == serving),
        "{lines:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["fields"]["signal"] == "SIGTERM" && message(e).contains("shutting down")),
        "{lines:#?}"
    );
    store_status_succeeds(&dir.path().join("KME_A/store"));
}

#[test]
fn sigint_stops_serve_cleanly() {
    let (dir, path, cfg) = lab("cor", |_| {});
    let serve = Serve::start(&path, &[], &[], None);
    wait_ready(dir.path(), &cfg);
    let (status, lines) = serve.stop("INT");
    assert_eq!(status.code(), Some(0), "{status}: {lines:#?}");
    let log = lines.join("\n");
    assert!(log.contains("SIGINT: shutting down"), "{log}");
    assert!(log.contains("stopped"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
    store_status_succeeds(&dir.path().join("KME_A/store"));
}

/// RUST_LOG filters the log (default `info`), and a malformed one is refused; the server's own
/// warnings (here: no state_dir, keys in a temporary store) go through the same log.
#[test]
fn rust_log_filters_the_log_and_server_warnings_appear() {
    let (dir, path, cfg) = lab("cor", |c| c.state_dir = None);
    let tmp = tempfile::tempdir().unwrap();
    let env = [("TMPDIR", tmp.path())];

    let serve = Serve::start(&path, &[], &env, None);
    wait_ready(dir.path(), &cfg);
    let (status, lines) = serve.stop("TERM");
    assert_eq!(status.code(), Some(0), "{lines:#?}");
    let log = lines.join("\n");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("WARN") && l.contains("no state_dir configured")),
        "{log}"
    );
    assert!(log.contains("serving SAEs on"), "{log}");

    let serve = Serve::start(&path, &[], &env, Some("error"));
    wait_ready(dir.path(), &cfg);
    let (status, lines) = serve.stop("TERM");
    assert_eq!(status.code(), Some(0), "{lines:#?}");
    assert!(lines.is_empty(), "RUST_LOG=error, yet: {lines:#?}");

    let out = qkd()
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "qkd_server=loudest")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("RUST_LOG"), "{err}");
}

fn client(dir: &Path, cfg: &Config, sae: &str) -> Client {
    Client::new(
        &format!("https://localhost:{}", cfg.listen.port()),
        &dir.join("ca.pem"),
        &dir.join(format!("{sae}.pem")),
        &dir.join(format!("{sae}.key")),
    )
    .unwrap()
}

#[test]
fn audit_and_store_status_read_the_store_while_serve_runs() {
    let (dir, path, cfg) = lab("cor", |_| {});
    let serve = Serve::start(&path, &[], &[], None);
    wait_ready(dir.path(), &cfg);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let kc = rt
        .block_on(client(dir.path(), &cfg, "SAE_1").enc_keys("SAE_3", &Default::default()))
        .unwrap();
    let id: uuid::Uuid = kc.keys[0].key_ID.parse().unwrap();
    rt.block_on(client(dir.path(), &cfg, "SAE_3").dec_keys("SAE_1", &[id]))
        .unwrap();
    let store = dir.path().join("KME_A/store");
    let store = store.to_str().unwrap();

    // The store is held by the running KME: status comes from a read-only view.
    let text = ok(&["store", "status", "--store", store, "--kme", "KME_A"]);
    assert!(text.contains("live view"), "{text}");
    assert!(text.contains("allocatable here"), "{text}");
    let s: serde_json::Value =
        serde_json::from_str(&ok(&["store", "status", "--json", "--store", store])).unwrap();
    let local = s["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["link"] == "_local")
        .unwrap()
        .clone();
    assert_eq!(local["deliveries"], 2);
    assert_eq!(local["keys_consumed"], 1);

    // The audit trail names who got the key, as JSON lines or text.
    let json = ok(&["audit", "--store", store, "--json"]);
    let entries: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let key = serde_json::json!(id.to_string());
    for who in ["SAE_1", "SAE_3"] {
        assert!(
            entries.iter().any(|e| {
                let f = &e["event"]["KeysFetched"];
                f["recipient"] == who && f["key_ids"].as_array().unwrap().contains(&key)
            }),
            "no delivery to {who} in {json}"
        );
    }
    assert!(
        entries
            .iter()
            .any(|e| e["event"].get("BlockAppended").is_some())
    );
    let text = ok(&["audit", "--store", store, "--since", "1h"]);
    assert!(
        text.contains(&format!("delivered 1 key(s) to SAE_3: {id}")),
        "{text}"
    );
    // The local pool's top-up may append a block between the two calls: never fewer lines.
    assert!(text.lines().count() >= entries.len());
    let none = ok(&["audit", "--store", store, "--since", "2099-01-01T00:00:00Z"]);
    assert!(none.is_empty(), "{none}");
    let bad = qkd()
        .args(["audit", "--store", store, "--since", "yesterday"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("RFC 3339"));

    let (status, lines) = serve.stop("TERM");
    assert_eq!(status.code(), Some(0), "{lines:#?}");
}
