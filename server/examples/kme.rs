//! Runs one KME until interrupted: `cargo run -p qkd-server --example kme -- DIR [PORT]`.
//! If `DIR/KME_A.toml` is missing, writes a dev PKI first (KME_A with SAE_1 and SAE_2 attached,
//! local pool only), so a fuzzer or an encryptor can talk to it with `DIR/SAE_1.pem`.

use std::path::PathBuf;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(args.get(1).map_or("kme-lab", String::as_str));
    let port: u16 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(8443);
    let cfg_path = dir.join("KME_A.toml");
    if !cfg_path.exists() {
        let saes = vec![
            ("SAE_1".to_string(), "KME_A".to_string()),
            ("SAE_2".to_string(), "KME_A".to_string()),
        ];
        qkd_server::pki::init(&dir, &["KME_A".to_string()], &saes, port, &[]).expect("pki init");
    }
    let cfg = qkd_server::Config::load(&cfg_path).expect("config");
    let h = qkd_server::serve(cfg).await.expect("serve");
    println!("KME_A listening on https://localhost:{}", h.sae_addr.port());
    let _ = tokio::signal::ctrl_c().await;
    h.shutdown().await;
}
