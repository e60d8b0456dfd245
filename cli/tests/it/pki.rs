//! `qkd pki`: `init` refuses to overwrite a PKI unless `--force`; `csr` and `sign` make
//! certificates that a KME accepts (an SAE's client certificate, a KME's server certificate)
//! and refuse a request whose signature does not verify.

use crate::common::{free_port, ok, qkd};

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use qkd_server::Config;
use qkd_server::client::Client;
use qkd_server::config::SaeConfig;

fn fails(args: &[&str]) -> String {
    let out = qkd(args);
    assert!(!out.status.success(), "qkd {args:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn init(dir: &Path, extra: &[&str]) -> Output {
    let d = dir.to_str().unwrap();
    let mut args = vec!["pki", "init", d, "--kme", "KME_A", "--kme", "KME_B"];
    args.extend(["--sae", "SAE_1@KME_A", "--sae", "SAE_2@KME_B"]);
    args.extend(extra);
    qkd(&args)
}

#[test]
fn pki_init_refuses_an_existing_pki_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lab");
    assert!(init(&dir, &[]).status.success());
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();

    let again = init(&dir, &[]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains(dir.to_str().unwrap()) && err.contains("--force") && err.contains("ca.pem"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        std::fs::read(dir.join("ca.pem")).unwrap(),
        ca,
        "nothing overwritten"
    );

    let forced = init(&dir, &["--force"]);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert_ne!(std::fs::read(dir.join("ca.pem")).unwrap(), ca, "a new CA");

    // Any file init would write counts (here one SAE key), other files do not.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    assert!(init(&other, &[]).status.success());
    let keyed = tmp.path().join("keyed");
    std::fs::create_dir(&keyed).unwrap();
    std::fs::write(keyed.join("SAE_2.key"), "old").unwrap();
    let err = String::from_utf8_lossy(&init(&keyed, &[]).stderr).into_owned();
    assert!(
        err.contains("SAE_2.key") && err.contains("--force"),
        "{err}"
    );
}

/// Replaces one byte of the signature at the end of a PEM request's DER.
fn tamper(csr: &Path, out: &Path) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let text = std::fs::read_to_string(csr).unwrap();
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut der = b64.decode(body).unwrap();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let pem = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        b64.encode(der)
    );
    std::fs::write(out, pem).unwrap();
}

#[test]
fn csr_and_sign_make_certificates_a_kme_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lab");
    assert!(init(&dir, &[]).status.success());
    let d = dir.to_str().unwrap();
    let req = dir.join("req");
    let r = req.to_str().unwrap();

    // An SAE's key pair and request, signed by the lab's CA.
    ok(&["pki", "csr", "--name", "SAE_9", "--kind", "sae", "--out", r]);
    let mode = std::fs::metadata(req.join("SAE_9.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let err = fails(&["pki", "csr", "--name", "SAE_9", "--out", r]);
    assert!(
        err.contains("SAE_9.key") && err.contains("--force"),
        "{err}"
    );
    let csr = req.join("SAE_9.csr");
    let c = csr.to_str().unwrap();
    let out = ok(&[
        "pki", "sign", "--ca-dir", d, "--csr", c, "--kind", "sae", "--days", "30",
    ]);
    assert!(out.contains("CN=SAE_9"), "{out}");
    assert!(req.join("SAE_9.pem").exists());

    // A KME's: its certificate serves the SAE listener (the client checks the name localhost).
    ok(&["pki", "csr", "--name", "KME_A", "--kind", "kme", "--out", r]);
    let kme_csr = req.join("KME_A.csr");
    let out = ok(&[
        "pki",
        "sign",
        "--ca-dir",
        d,
        "--csr",
        kme_csr.to_str().unwrap(),
        "--kind",
        "kme",
    ]);
    assert!(out.contains("CN=KME_A"), "{out}");

    // An altered request is refused, and so is a validity of 0 days.
    let bad = req.join("bad.csr");
    tamper(&csr, &bad);
    let err = fails(&[
        "pki",
        "sign",
        "--ca-dir",
        d,
        "--csr",
        bad.to_str().unwrap(),
        "--kind",
        "sae",
    ]);
    assert!(err.contains("does not verify"), "{err}");
    let err = fails(&[
        "pki", "sign", "--ca-dir", d, "--csr", c, "--kind", "sae", "--days", "0",
    ]);
    assert!(err.contains("0 days"), "{err}");

    let mut cfg = Config::load(&dir.join("KME_A.toml")).unwrap();
    let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
    cfg.listen = local(free_port());
    cfg.peer_listen = Some(local(free_port()));
    cfg.links[0].url = format!("https://127.0.0.1:{}", free_port());
    cfg.tls.cert = req.join("KME_A.pem");
    cfg.tls.key = req.join("KME_A.key");
    cfg.saes.push(SaeConfig {
        id: "SAE_9".into(),
        ..SaeConfig::default()
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let h = qkd_server::serve(cfg).await.unwrap();
        let client = Client::new(
            &format!("https://localhost:{}", h.sae_addr.port()),
            &dir.join("ca.pem"),
            &req.join("SAE_9.pem"),
            &req.join("SAE_9.key"),
        )
        .unwrap();
        let status = client.status("SAE_1").await.unwrap();
        assert_eq!(status.master_SAE_ID, "SAE_9");
        h.shutdown().await;
    });
}
