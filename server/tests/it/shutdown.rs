//! `ServerHandle::shutdown` of a KME started by `serve`: a request still in flight after the
//! grace period is cut, and when shutdown returns the key store is closed (another open of the
//! same directory succeeds instead of finding it locked), with the keys delivered before it.

use std::sync::Arc;

use crate::common::*;
use qkd_server::etsi::KeyRequest;
use qkd_store::{OpenError, Store};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A connection of SAE_1 whose request is being handled, its body one byte of 100.
async fn stalled_request(
    lab: &Lab,
    port: u16,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let cfg = qkd_server::tls::client_config(
        &qkd_server::tls::load_certs(&lab.path("ca.pem")).unwrap(),
        qkd_server::tls::load_certs(&lab.path("SAE_1.pem")).unwrap(),
        qkd_server::tls::load_key(&lab.path("SAE_1.key")).unwrap(),
        "1.2",
    )
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(
        b"POST /api/v1/keys/SAE_3/enc_keys HTTP/1.1\r\nhost: localhost\r\n\
          content-type: application/json\r\ncontent-length: 100\r\n\
          expect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    tls.flush().await.unwrap();
    // The server asks for the body once the request is being handled: from here on it is in
    // flight.
    let mut seen = Vec::new();
    while !seen.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).await.unwrap();
        seen.push(b[0]);
    }
    assert!(seen.starts_with(b"HTTP/1.1 100"), "{seen:?}");
    tls.write_all(b"{").await.unwrap();
    tls.flush().await.unwrap();
    tls
}

#[tokio::test]
async fn shutdown_returns_with_the_store_closed() {
    let lab = lab(60);
    let state = lab.path("KME_A/store");
    let mut cfg = lab.a.clone();
    cfg.state_dir = Some(state.clone());
    cfg.limits.shutdown_grace_ms = 200;
    let h = start(&cfg).await;
    let req = KeyRequest {
        number: Some(2),
        size: Some(256),
        ..Default::default()
    };
    let enc = lab
        .client(&h, "SAE_1")
        .enc_keys("SAE_3", &req)
        .await
        .unwrap();
    assert_eq!(enc.keys.len(), 2);
    // While the KME runs, its store is held open.
    assert!(
        matches!(Store::open(&state), Err(OpenError::Locked { .. })),
        "a running KME's store must be locked"
    );
    let mut stalled = stalled_request(&lab, h.sae_addr.port()).await;
    h.shutdown().await;
    // The stalled request did not finish within the grace period: its connection is closed.
    let mut rest = Vec::new();
    let _ = stalled.read_to_end(&mut rest).await;
    assert!(
        !String::from_utf8_lossy(&rest).contains(" 200 "),
        "a request whose body never came got no keys"
    );
    let store = Store::open(&state).expect("the store is closed once shutdown returns");
    let live: u64 = store
        .status()
        .unwrap()
        .links
        .iter()
        .map(|l| l.keys_live)
        .sum();
    assert_eq!(live, 2, "the two keys wait for their slave");
}
