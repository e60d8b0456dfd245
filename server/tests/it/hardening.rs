//! The KME under misuse: only the standard's status codes on the ETSI routes, per-SAE policy
//! and `max_key_count`, the peer listener's identity check, and the listeners' timeouts and
//! caps (slow headers, slow bodies, idle connections, too many connections or requests from
//! one SAE) while a well-behaved SAE keeps being served.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use qkd_server::etsi::KeyRequest;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to `port` as `who` (a certificate in the lab directory).
async fn connect(lab: &Lab, port: u16, who: &str) -> std::io::Result<Tls> {
    let ca = qkd_server::tls::load_certs(&lab.path("ca.pem")).unwrap();
    let cfg = qkd_server::tls::client_config(
        &ca,
        qkd_server::tls::load_certs(&lab.path(&format!("{who}.pem"))).unwrap(),
        qkd_server::tls::load_key(&lab.path(&format!("{who}.key"))).unwrap(),
        "1.2",
    )
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// Reads until the server closes the connection (or 10 s pass: `None`); returns what it sent.
async fn read_to_close(s: &mut Tls) -> Option<String> {
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    r.ok().map(|()| String::from_utf8_lossy(&out).into_owned())
}

/// The status line and the JSON body of one raw response.
fn parse(resp: &str) -> (u16, serde_json::Value) {
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or_default())
}

async fn raw_request(lab: &Lab, port: u16, who: &str, request: &[u8]) -> (u16, serde_json::Value) {
    let mut s = connect(lab, port, who).await.unwrap();
    s.write_all(request).await.unwrap();
    let resp = read_to_close(&mut s)
        .await
        .expect("the server answers and closes");
    parse(&resp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etsi_routes_answer_only_200_400_401_503() {
    let lab = lab(60);
    let a = start(&lab.a).await;
    let port = a.sae_addr.port();
    let post = |path: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    // A JSON array is not a key request (serde would read it as the fields in order).
    let (status, body) = raw_request(
        &lab,
        port,
        "SAE_1",
        &post("/api/v1/keys/SAE_3/enc_keys", "[3,128]"),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("JSON object"),
        "{body}"
    );
    let (status, _) = raw_request(
        &lab,
        port,
        "SAE_3",
        &post("/api/v1/keys/SAE_1/dec_keys", r#"[[{"key_ID":"x"}]]"#),
    )
    .await;
    assert_eq!(status, 400);
    // A body over the limit: 400 with the Error object, not 413 text.
    let big = format!("{{\"number\":1,\"pad\":\"{}\"}}", "x".repeat(300 << 10));
    let (status, body) = raw_request(
        &lab,
        port,
        "SAE_1",
        &post("/api/v1/keys/SAE_3/enc_keys", &big),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("larger than"),
        "{body}"
    );
    // A method the routes do not define: 400 with the Error object, not 405.
    let (status, body) = raw_request(
        &lab,
        port,
        "SAE_1",
        b"DELETE /api/v1/keys/SAE_3/enc_keys HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("DELETE"),
        "{body}"
    );
    // A well-formed object still works.
    let (status, body) = raw_request(
        &lab,
        port,
        "SAE_1",
        &post("/api/v1/keys/SAE_3/enc_keys", r#"{"number":2}"#),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["keys"].as_array().unwrap().len(), 2);
    a.shutdown().await;
}

fn api_status(
    r: Result<qkd_server::etsi::KeyContainer, qkd_server::client::ClientError>,
) -> (u16, String) {
    match r {
        Ok(_) => (200, String::new()),
        Err(qkd_server::client::ClientError::Api { status, body }) => {
            (status, body.map(|b| b.message).unwrap_or_default())
        }
        Err(e) => panic!("expected an API answer, got {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sae_policy_and_max_key_count_are_enforced() {
    let mut lab = lab(60);
    lab.a.keys.max_key_count = 6;
    lab.a.keys.max_per_request = 3;
    for s in &mut lab.a.saes {
        match s.id.as_str() {
            "SAE_1" => {
                s.allowed_slaves = Some(vec!["SAE_3".into()]);
                s.max_pool_share = Some(0.01);
            }
            "SAE_3" => s.max_keys_per_sec = Some(0.5),
            _ => {}
        }
    }
    let a = start(&lab.a).await;
    let sae1 = lab.client(&a, "SAE_1");
    let sae3 = lab.client(&a, "SAE_3");
    let req = |n: u64, size: u64| KeyRequest {
        number: Some(n),
        size: Some(size),
        ..Default::default()
    };

    // allowed_slaves: SAE_1 may name SAE_3, not SAE_2.
    let (status, msg) = api_status(sae1.enc_keys("SAE_2", &req(1, 256)).await);
    assert_eq!(status, 401, "{msg}");
    assert!(msg.contains("allowed_slaves"), "{msg}");
    // max_keys_per_sec: a burst of one full request (3 keys), then refused; SAE_1 is not
    // affected by SAE_3's rate.
    assert_eq!(
        api_status(sae3.enc_keys("SAE_1", &req(3, 256)).await).0,
        200
    );
    let (status, msg) = api_status(sae3.enc_keys("SAE_1", &req(1, 256)).await);
    assert_eq!(status, 503, "{msg}");
    assert!(msg.contains("max_keys_per_sec"), "{msg}");
    // max_pool_share: 1 % of the local pool per request.
    let (status, msg) = api_status(sae1.enc_keys("SAE_3", &req(3, 8192)).await);
    assert_eq!(status, 503, "{msg}");
    assert!(msg.contains("max_pool_share"), "{msg}");
    assert_eq!(
        api_status(sae1.enc_keys("SAE_3", &req(3, 256)).await).0,
        200
    );
    // max_key_count: 6 keys wait for their slaves; one more is refused.
    let (status, msg) = api_status(sae1.enc_keys("SAE_3", &req(1, 256)).await);
    assert_eq!(status, 503, "{msg}");
    assert!(msg.contains("max_key_count"), "{msg}");
    let st = sae1.status("SAE_3").await.unwrap();
    assert_eq!(st.max_key_count, 6);
    assert!(
        st.stored_key_count <= 6,
        "stored_key_count {}",
        st.stored_key_count
    );
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_listener_serves_only_configured_peers() {
    let lab = lab(60);
    let b = start(&lab.b).await;
    // A KME certificate from the same CA, for a KME that is not B's peer.
    qkd_server::pki::issue(
        &lab.path("ca.pem"),
        &lab.path("ca.key"),
        "KME_C",
        qkd_server::pki::CertKind::Both,
        &["localhost".into()],
        lab.dir.path(),
        "",
    )
    .unwrap();
    let port = b.peer_addr.unwrap().port();
    let body = r#"{"master":"SAE_1","slaves":["SAE_2"],"expires_at_ms":0,"keys":[]}"#;
    let req = format!(
        "POST /peer/v1/reserve HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = connect(&lab, port, "KME_C").await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let resp = read_to_close(&mut s).await.unwrap();
    assert_eq!(parse(&resp).0, 403, "{resp}");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_idle_and_greedy_clients_are_cut_off_while_others_are_served() {
    let mut lab = lab(60);
    lab.a.limits.header_timeout_ms = 400;
    lab.a.limits.body_timeout_ms = 400;
    lab.a.limits.idle_timeout_ms = 600;
    lab.a.limits.max_connections_per_client = 3;
    lab.a.limits.max_in_flight_per_client = 1;
    let a = start(&lab.a).await;
    let port = a.sae_addr.port();
    let sae1 = lab.client(&a, "SAE_1");

    // Slow headers: half a request, then nothing. Closed by the header timeout.
    let mut slow = connect(&lab, port, "SAE_3").await.unwrap();
    slow.write_all(b"GET /api/v1/keys/SAE_1/status HTTP/1.1\r\nHost: loc")
        .await
        .unwrap();
    // Idle after the handshake: closed by the first-request timeout.
    let mut idle = connect(&lab, port, "SAE_3").await.unwrap();
    // Slow body: headers promise 100 bytes, 10 come. 400 once the body timeout passes; while
    // it waits, it is SAE_3's one request in flight.
    let mut body = connect(&lab, port, "SAE_3").await.unwrap();
    body.write_all(
        b"POST /api/v1/keys/SAE_1/enc_keys HTTP/1.1\r\nHost: localhost\r\n\
          Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"number\":",
    )
    .await
    .unwrap();
    // A fourth connection of SAE_3 is over its cap: closed without an answer.
    tokio::time::sleep(Duration::from_millis(100)).await;
    if let Ok(mut fourth) = connect(&lab, port, "SAE_3").await {
        fourth
            .write_all(b"GET /api/v1/keys/SAE_1/status HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .ok();
        assert_eq!(read_to_close(&mut fourth).await.as_deref(), Some(""));
    }
    // SAE_1 is not affected.
    let kc = sae1
        .enc_keys("SAE_3", &KeyRequest::default())
        .await
        .unwrap();
    assert_eq!(kc.keys.len(), 1);

    assert_eq!(
        read_to_close(&mut slow).await.as_deref(),
        Some(""),
        "slow headers"
    );
    assert_eq!(read_to_close(&mut idle).await.as_deref(), Some(""), "idle");
    let resp = read_to_close(&mut body).await.expect("slow body answered");
    let (status, json) = parse(&resp);
    assert_eq!(status, 400, "{resp}");
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .contains("body_timeout_ms"),
        "{resp}"
    );

    // Requests in flight: SAE_3's slow body holds its only slot; a second request gets 503.
    let mut holder = connect(&lab, port, "SAE_3").await.unwrap();
    holder
        .write_all(
            b"POST /api/v1/keys/SAE_1/enc_keys HTTP/1.1\r\nHost: localhost\r\n\
              Content-Length: 50\r\n\r\n{",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, json) = raw_request(
        &lab,
        port,
        "SAE_3",
        b"GET /api/v1/keys/SAE_1/status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 503, "{json}");
    assert!(
        json["message"].as_str().unwrap().contains("in flight"),
        "{json}"
    );
    drop(holder);
    a.shutdown().await;
}

/// A KME with a valid certificate of the same CA, set up like KME_B (same SAEs, same
/// simulated source) but named KME_C, sits at the URL of KME_A's link to KME_B. The old
/// reservation client accepted its certificate, and about half of the requests (the blocks both
/// split rules give to KME_A) were delivered with 200 although KME_B never reserved them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kme_impersonating_the_peer_gets_no_reservation() {
    let mut lab = lab(60);
    qkd_server::pki::issue(
        &lab.path("ca.pem"),
        &lab.path("ca.key"),
        "KME_C",
        qkd_server::pki::CertKind::Both,
        &["localhost".into(), "127.0.0.1".into()],
        lab.dir.path(),
        "",
    )
    .unwrap();
    let mut c = lab.b.clone();
    c.kme_id = "KME_C".into();
    c.tls.cert = lab.path("KME_C.pem");
    c.tls.key = lab.path("KME_C.key");
    c.state_dir = Some(lab.path("KME_C/store"));
    c.listen = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let c_peer = free_port();
    c.peer_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], c_peer)));
    lab.a.links[0].url = format!("https://127.0.0.1:{c_peer}");
    let impostor = start(&c).await;
    let a = start(&lab.a).await;
    let sae1 = lab.client(&a, "SAE_1");
    // Large requests, so they run through every block KME_A owns (a block that the impostor's
    // split rule gives to itself would be refused anyway).
    let big = KeyRequest {
        number: Some(3),
        size: Some(8192),
        ..Default::default()
    };
    for _ in 0..12 {
        let r = sae1.enc_keys("SAE_2", &big).await;
        let (status, msg) = api_status(r);
        assert_eq!(
            status, 503,
            "a key was delivered through an impostor: {msg}"
        );
    }
    assert_eq!(impostor.pool().stats("KME_A").reserved_keys, 0);
    a.shutdown().await;
    impostor.shutdown().await;
}

/// The idle timeout of the stream itself (hyper's header timeout set far away): a connection
/// that sends nothing is closed; one that keeps sending stays open past the idle time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_timeout_counts_from_the_last_byte() {
    let mut lab = lab(60);
    lab.a.limits.header_timeout_ms = 30_000;
    lab.a.limits.idle_timeout_ms = 300;
    let a = start(&lab.a).await;
    let port = a.sae_addr.port();
    let mut quiet = connect(&lab, port, "SAE_3").await.unwrap();
    let mut busy = connect(&lab, port, "SAE_1").await.unwrap();
    busy.write_all(b"GET /api/v1/keys/SAE_3/status HTTP/1.1\r\nX-Slow: ")
        .await
        .unwrap();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        busy.write_all(b"a").await.unwrap();
    }
    // Nearly a second of activity, three times the idle time: still served.
    busy.write_all(b"\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let resp = read_to_close(&mut busy).await.unwrap();
    assert_eq!(parse(&resp).0, 200, "{resp}");
    assert_eq!(read_to_close(&mut quiet).await.as_deref(), Some(""));
    a.shutdown().await;
}
