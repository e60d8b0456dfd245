//! HSMs against a SoftHSM2 token initialized in a temporary directory
//! (`scripts/install-softhsm.sh` installs SoftHSM2): `qkd hsm test` passes every check with the
//! right PIN and refuses a wrong PIN, a missing module, an unknown token and a readable PIN file
//! clearly; a `qkd serve` reseeds the token on demand and on its schedule, with events, metrics,
//! and the link key it took and each outcome in the audit trail; keys of a pkcs11 SAE are created
//! in the token with the values the master got.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A SoftHSM2 configuration with one token `qkd-test` (user PIN 1234) in its own directory.
struct Token {
    dir: tempfile::TempDir,
}

impl Token {
    fn new() -> Self {
        assert!(
            Path::new(MODULE).exists(),
            "{MODULE} is missing: run scripts/install-softhsm.sh (Debian's softhsm2)"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tokens")).unwrap();
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.path().join("tokens").display()
            ),
        )
        .unwrap();
        let t = Self { dir };
        let out = t
            .command("softhsm2-util")
            .args(["--init-token", "--free", "--label", "qkd-test"])
            .args(["--pin", "1234", "--so-pin", "5678"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        t
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SOFTHSM2_CONF", self.dir.path().join("softhsm2.conf"));
        c
    }

    /// A PIN file holding `pin`, with `mode`.
    fn pin_file(&self, pin: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.dir.path().join(format!("pin-{pin}-{mode:o}"));
        std::fs::write(&p, format!("{pin}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn hsm_test(&self, module: &str, token: &str, pin: &Path) -> Output {
        self.command(env!("CARGO_BIN_EXE_qkd"))
            .args([
                "hsm",
                "test",
                "--module",
                module,
                "--token",
                token,
                "--pin-file",
            ])
            .arg(pin)
            .output()
            .unwrap()
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn hsm_test_passes_every_check_and_refuses_bad_input_clearly() {
    let t = Token::new();
    let good = t.pin_file("1234", 0o600);
    let out = t.hsm_test(MODULE, "qkd-test", &good);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    for check in [
        "login to token \"qkd-test\"",
        "C_SeedRandom: 32 bytes mixed in",
        "C_GenerateRandom",
        "create a secret-key object",
        "wrap and unwrap (AES key wrap)",
    ] {
        assert!(all.contains(&format!("ok      {check}")), "{check}:\n{all}");
    }

    let cases = [
        (
            MODULE,
            "qkd-test",
            t.pin_file("9999", 0o600),
            "PIN is incorrect",
        ),
        (
            "/nonexistent/libpkcs11.so",
            "qkd-test",
            good.clone(),
            "no such file",
        ),
        (
            MODULE,
            "other",
            good.clone(),
            "no token labelled \"other\" (tokens present: qkd-test)",
        ),
        (
            MODULE,
            "qkd-test",
            t.pin_file("1234", 0o644),
            "readable by its owner only",
        ),
        (
            MODULE,
            "qkd-test",
            t.dir.path().to_path_buf(),
            "is a directory",
        ),
    ];
    for (module, token, pin, want) in cases {
        let out = t.hsm_test(module, token, &pin);
        let all = text(&out);
        assert!(
            !out.status.success(),
            "{module} {token} {}: {all}",
            pin.display()
        );
        assert!(all.contains(want), "expected {want:?} in:\n{all}");
        assert!(!all.contains("panicked"), "{all}");
    }
}

/// A client of the SAE listener at `kme` with `sae`'s certificate.
fn sae_http(dir: &Path, sae: &str) -> reqwest::Client {
    use qkd_server::tls;
    let ca = tls::load_certs(&dir.join("ca.pem")).unwrap();
    let chain = tls::load_certs(&dir.join(format!("{sae}.pem"))).unwrap();
    let key = tls::load_key(&dir.join(format!("{sae}.key"))).unwrap();
    let cfg = tls::client_config(&ca, chain, key, "1.2").unwrap();
    reqwest::Client::builder()
        .tls_backend_preconfigured(cfg)
        .build()
        .unwrap()
}

#[test]
fn a_kme_reseeds_the_token_on_demand_and_on_schedule() {
    use qkd_server::config::HsmConfig;
    use qkd_server::{Config, pki};
    let t = Token::new();
    let lab = tempfile::tempdir().unwrap();
    let d = lab.path();
    crate::common::ok(&[
        "pki",
        "init",
        d.to_str().unwrap(),
        "--kme",
        "KME_A",
        "--kme",
        "KME_B",
        "--sae",
        "SAE_1@KME_A",
        "--sae",
        "SAE_2@KME_B",
    ]);
    let mut cfgs = vec![
        Config::load(&d.join("KME_A.toml")).unwrap(),
        Config::load(&d.join("KME_B.toml")).unwrap(),
    ];
    let ports: Vec<(u16, u16)> = (0..2)
        .map(|_| (crate::common::free_port(), crate::common::free_port()))
        .collect();
    pki::on_loopback(&mut cfgs, &ports, 4096, 4);
    let mut a = cfgs.swap_remove(0);
    let monitor = std::net::SocketAddr::from(([127, 0, 0, 1], crate::common::free_port()));
    a.monitor_listen = Some(monitor);
    let hsm = |name: &str, pin: PathBuf, minutes: u8, source: &str| HsmConfig {
        name: name.into(),
        module: MODULE.into(),
        token: "qkd-test".into(),
        user: Default::default(),
        pin_file: Some(pin),
        pin_env: None,
        reseed_minutes: minutes,
        seed_source: source.into(),
        seed_callers: vec!["SAE_1".into()],
    };
    a.hsms = vec![
        hsm("main", t.pin_file("1234", 0o600), 1, "link:KME_B"),
        hsm("badpin", t.pin_file("9999", 0o600), 0, "os"),
    ];
    let sae_port = a.listen.port();
    let mut kmes = crate::common::kmes::Kmes::new(tempfile::TempDir::new_in(d).unwrap(), vec![a]);
    // The KME's paths (store, PIN files) are absolute; its PKI is the lab's.
    for f in ["ca.pem", "KME_A.pem", "KME_A.key", "SAE_1.pem", "SAE_1.key"] {
        std::fs::copy(d.join(f), kmes.dir.path().join(f)).unwrap();
    }
    kmes.env = vec![("SOFTHSM2_CONF".into(), t.dir.path().join("softhsm2.conf"))];
    kmes.start(0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = sae_http(d, "SAE_1");
        let seed = |name: &str| {
            http.post(format!(
                "https://localhost:{sae_port}/admin/v1/hsm/{name}/seed"
            ))
            .send()
        };
        // The link's blocks arrive from the simulated source first.
        let t0 = std::time::Instant::now();
        let ok = loop {
            let r = seed("main").await.unwrap();
            if r.status() == 200 || t0.elapsed() > std::time::Duration::from_secs(10) {
                break r;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        };
        let status = ok.status();
        let text = ok.text().await.unwrap();
        assert_eq!(status, 200, "{text}");
        let body: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(
            body["reseeded"].as_str().unwrap().contains("link:KME_B"),
            "{body}"
        );
        // Two HSMs on one module, reseeded at the same time, share its one context.
        let (again, bad) = tokio::join!(seed("main"), seed("badpin"));
        assert_eq!(again.unwrap().status(), 200);
        let bad = bad.unwrap();
        assert_eq!(bad.status(), 503);
        let msg = bad.text().await.unwrap();
        assert!(msg.contains("PIN is incorrect"), "{msg}");
        assert_eq!(seed("nosuch").await.unwrap().status(), 404);

        // The schedule: one more reseed of `main` within its minute.
        let get = |path: &str| {
            let req = http.get(format!("http://{monitor}{path}")).send();
            async move { req.await.unwrap().text().await.unwrap() }
        };
        let t0 = std::time::Instant::now();
        loop {
            let s: serde_json::Value = serde_json::from_str(&get("/api/state").await).unwrap();
            let reseeds: Vec<&serde_json::Value> = s["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["kind"] == "hsm_reseed" && e["hsm"] == "main" && e["ok"] == true)
                .collect();
            if reseeds.len() >= 3 {
                break;
            }
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(90),
                "no scheduled reseed: {s}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        let metrics = get("/metrics").await;
        assert!(
            metrics.contains(
                "qkd_kme_hsm_reseeds_total{kme=\"KME_A\",hsm=\"badpin\",outcome=\"failed\"} 1"
            ),
            "{metrics}"
        );
        assert!(
            metrics
                .contains("qkd_kme_hsm_reseeds_total{kme=\"KME_A\",hsm=\"main\",outcome=\"ok\"} 3"),
            "{metrics}"
        );
        // The link key each reseed took is in the store's audit trail (read beside the
        // running KME), under hsm:main.
        let store = kmes.cfg[0].state_dir.clone().unwrap();
        let audit = crate::common::ok(&["audit", "--store", store.to_str().unwrap()]);
        assert!(audit.matches("hsm:main").count() >= 3, "{audit}");
        // And each reseed's outcome.
        assert!(
            audit.matches("reseed HSM main from link:KME_B: ok").count() >= 3,
            "{audit}"
        );
        assert!(
            audit.contains("reseed HSM badpin from os: FAILED")
                && audit.contains("PIN is incorrect"),
            "{audit}"
        );
    });
}

/// The AES key check value of `key`, worked out here (RustCrypto's AES): the first 3 bytes of
/// AES-ECB of a zero block.
fn kcv(key: &[u8]) -> String {
    use aes::cipher::{BlockCipherEncrypt, KeyInit};
    let cipher = aes::Aes256::new_from_slice(key).unwrap();
    let mut block = aes::Block::default();
    cipher.encrypt_block(&mut block);
    block[..3].iter().map(|b| format!("{b:02x}")).collect()
}

/// Asserts that `qkd hsm key` showed a persistent AES-256 key that cannot leave the token, with
/// `encrypts`; gives its output.
fn locked_aes_256(out: Output, encrypts: &str) -> String {
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    for line in [
        "type AES",
        "bytes 32",
        "persistent yes",
        "sensitive yes",
        "extractable no",
        encrypts,
    ] {
        assert!(all.contains(line), "{line}:\n{all}");
    }
    all
}

#[test]
fn keys_of_a_pkcs11_sae_are_created_in_the_token_with_the_masters_values() {
    use base64::Engine as _;
    use qkd_server::config::{HsmConfig, SaeConfig, SaeKind};
    use qkd_server::etsi::KeyRequest;
    use qkd_server::{Config, pki};
    let t = Token::new();
    let lab = tempfile::tempdir().unwrap();
    let d = lab.path();
    crate::common::ok(&[
        "pki",
        "init",
        d.to_str().unwrap(),
        "--kme",
        "KME_A",
        "--kme",
        "KME_B",
        "--sae",
        "SAE_1@KME_A",
        "--sae",
        "SAE_H@KME_B",
        "--sae",
        "SAE_X@KME_B",
    ]);
    let mut cfgs = vec![
        Config::load(&d.join("KME_A.toml")).unwrap(),
        Config::load(&d.join("KME_B.toml")).unwrap(),
    ];
    let ports: Vec<(u16, u16)> = (0..2)
        .map(|_| (crate::common::free_port(), crate::common::free_port()))
        .collect();
    pki::on_loopback(&mut cfgs, &ports, 4096, 4);
    let b = &mut cfgs[1];
    let monitor = std::net::SocketAddr::from(([127, 0, 0, 1], crate::common::free_port()));
    b.monitor_listen = Some(monitor);
    let hsm = |name: &str, pin: PathBuf| HsmConfig {
        name: name.into(),
        module: MODULE.into(),
        token: "qkd-test".into(),
        user: Default::default(),
        pin_file: Some(pin),
        pin_env: None,
        reseed_minutes: 0,
        seed_source: "os".into(),
        seed_callers: Vec::new(),
    };
    b.hsms = vec![
        hsm("vault", t.pin_file("1234", 0o600)),
        hsm("locked", t.pin_file("9999", 0o600)),
    ];
    let pkcs11 = |id: &str, hsm: &str| SaeConfig {
        id: id.into(),
        kind: SaeKind::Pkcs11,
        hsm: Some(hsm.into()),
        ..SaeConfig::default()
    };
    b.saes = vec![pkcs11("SAE_H", "vault"), pkcs11("SAE_X", "locked")];
    // KME_B's store KEK is sealed by the same token.
    let sealed = d.join("KME_B.kek.sealed");
    b.store.kek_hsm = Some("vault".into());
    b.store.kek_sealed_file = Some(sealed.clone());
    let mut kmes = crate::common::kmes::Kmes::new(tempfile::TempDir::new_in(d).unwrap(), cfgs);
    for f in [
        "ca.pem",
        "KME_A.pem",
        "KME_A.key",
        "KME_B.pem",
        "KME_B.key",
        "SAE_1.pem",
        "SAE_1.key",
        "SAE_H.pem",
        "SAE_H.key",
    ] {
        std::fs::copy(d.join(f), kmes.dir.path().join(f)).unwrap();
    }
    kmes.env = vec![("SOFTHSM2_CONF".into(), t.dir.path().join("softhsm2.conf"))];
    kmes.start(0);
    kmes.start(1);
    let master = kmes.client(0, "SAE_1");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let req = |number| KeyRequest {
        number: Some(number),
        size: Some(256),
        ..KeyRequest::default()
    };
    let keys = rt.block_on(async {
        let t0 = std::time::Instant::now();
        while !matches!(master.status("SAE_H").await, Ok(s) if s.stored_key_count >= 10) {
            assert!(t0.elapsed() < std::time::Duration::from_secs(20), "no key");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        master.enc_keys("SAE_H", &req(3)).await.unwrap()
    });
    assert_eq!(keys.keys.len(), 3);
    let pin = t.pin_file("1234", 0o600);
    let show = |label: &str| {
        t.command(env!("CARGO_BIN_EXE_qkd"))
            .args(["hsm", "key", "--module", MODULE, "--token", "qkd-test"])
            .arg("--pin-file")
            .arg(&pin)
            .args(["--label", label])
            .output()
            .unwrap()
    };
    for k in &keys.keys {
        let value = base64::engine::general_purpose::STANDARD
            .decode(&k.key)
            .unwrap();
        let all = locked_aes_256(show(&k.key_ID), "encrypts yes");
        assert!(
            all.contains(&format!("kcv {}", kcv(&value))),
            "the token's key differs from the master's:\n{all}"
        );
    }
    let unknown = show("00000000-0000-0000-0000-000000000000");
    assert!(!unknown.status.success());
    assert!(
        text(&unknown).contains("0 secret keys labelled"),
        "{}",
        text(&unknown)
    );

    rt.block_on(async {
        // The token refuses (wrong PIN): nothing is delivered, to the master either.
        let refused = master.enc_keys("SAE_X", &req(2)).await.unwrap_err();
        let msg = refused.to_string();
        assert!(msg.contains("503"), "{msg}");
        assert!(msg.contains("locked"), "{msg}");
        assert!(msg.contains("PIN is incorrect"), "{msg}");
        // A pkcs11 SAE never calls: its certificate names no SAE of KME_B.
        let h = kmes.client(1, "SAE_H");
        let e = h.status("SAE_1").await.unwrap_err().to_string();
        assert!(e.contains("401"), "{e}");

        let http = sae_http(d, "SAE_1");
        let metrics = http
            .get(format!("http://{monitor}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for line in [
            "qkd_kme_hsm_keys_total{kme=\"KME_B\",hsm=\"vault\",outcome=\"ok\"} 3",
            "qkd_kme_hsm_keys_total{kme=\"KME_B\",hsm=\"locked\",outcome=\"failed\"} 2",
        ] {
            assert!(metrics.contains(line), "{line}:\n{metrics}");
        }
    });
    let store = kmes.cfg[1].state_dir.clone().unwrap();
    let audit = crate::common::ok(&["audit", "--store", store.to_str().unwrap()]);
    for line in [
        "create 3 key(s) of SAE_H in HSM vault: ok (created)",
        "create 2 key(s) of SAE_X in HSM locked: FAILED",
        "delivered 3 key(s) to SAE_H",
    ] {
        assert!(audit.contains(line), "{line}:\n{audit}");
    }

    // The sealed KEK: private, and the AES key wrap of 32 bytes (40 bytes).
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&sealed).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 40);
    // The key that seals it stays in the token and only wraps.
    locked_aes_256(show("qkd-store-seal-KME_B"), "encrypts no");
    // Restarted, KME_B unseals the same KEK and opens its store: it still serves SAE_H.
    kmes.kill(1);
    kmes.start(1);
    let again = rt.block_on(async {
        let t0 = std::time::Instant::now();
        loop {
            match master.enc_keys("SAE_H", &req(1)).await {
                Ok(k) => break k,
                Err(e) => assert!(
                    t0.elapsed() < std::time::Duration::from_secs(20),
                    "after the restart: {e}"
                ),
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    assert!(show(&again.keys[0].key_ID).status.success());
    // Without its sealed file the store is refused, not replaced by a new KEK.
    kmes.kill(1);
    std::fs::rename(&sealed, d.join("elsewhere")).unwrap();
    let out = t
        .command(env!("CARGO_BIN_EXE_qkd"))
        .args(["serve", "--config"])
        .arg(kmes.dir.path().join("KME_B.test.toml"))
        .output()
        .unwrap();
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("KME_B.kek.sealed is missing but the store"),
        "{all}"
    );
}
