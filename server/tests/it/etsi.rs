//! Integration tests: real KMEs on loopback, generated certificates, real mTLS clients.

use std::time::Duration;

use crate::common::*;
use qkd_server::client::ClientError;
use qkd_server::etsi::KeyRequest;
use qkd_server::pool::LOCAL_POOL;
use serde_json::json;
use uuid::Uuid;

fn api_status(e: &ClientError) -> (u16, String) {
    match e {
        ClientError::Api { status, body } => (
            *status,
            body.as_ref().map(|b| b.message.clone()).unwrap_or_default(),
        ),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_pool_enc_dec_status_and_errors() {
    let lab = lab(60);
    let a = start(&lab.a).await;
    let sae1 = lab.client(&a, "SAE_1");
    let sae3 = lab.client(&a, "SAE_3");

    // Status: every field of Table 9.
    let st = sae1.status("SAE_3").await.unwrap();
    assert_eq!(st.source_KME_ID, "KME_A");
    assert_eq!(st.target_KME_ID, "KME_A");
    assert_eq!(st.master_SAE_ID, "SAE_1");
    assert_eq!(st.slave_SAE_ID, "SAE_3");
    assert_eq!(st.key_size, 256);
    assert!(st.stored_key_count >= (1 << 16) / 32);
    assert_eq!(
        (
            st.min_key_size,
            st.max_key_size,
            st.max_key_per_request,
            st.max_SAE_ID_count
        ),
        (64, 8192, 128, 4)
    );
    let ext = st.status_extension.unwrap();
    assert_eq!(ext["reservation_ttl_seconds"], 60);
    assert_eq!(ext["link_state"], "local");
    let st_b = sae1.status("SAE_2").await.unwrap();
    assert_eq!(st_b.target_KME_ID, "KME_B");

    // POST enc_keys, then the slave fetches by ID (POST and GET).
    let kc = sae1
        .enc_keys(
            "SAE_3",
            &KeyRequest {
                number: Some(3),
                size: Some(512),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(kc.keys.len(), 3);
    let ids: Vec<Uuid> = kc
        .keys
        .iter()
        .map(|k| Uuid::parse_str(&k.key_ID).unwrap())
        .collect();
    for (k, id) in kc.keys.iter().zip(&ids) {
        assert_eq!(id.get_version_num(), 4);
        assert_eq!(b64(&k.key).len(), 64);
    }
    assert_ne!(kc.keys[0].key, kc.keys[1].key);
    let got = sae3.dec_keys("SAE_1", &ids[..2]).await.unwrap();
    assert_eq!(got.keys[0].key, kc.keys[0].key);
    assert_eq!(got.keys[1].key, kc.keys[1].key);
    let one = sae3
        .dec_key_get("SAE_1", &ids[2].to_string())
        .await
        .unwrap();
    assert_eq!(one.keys[0].key, kc.keys[2].key);
    // Already fetched: 400 with the standard's message.
    let e = sae3.dec_keys("SAE_1", &ids[..1]).await.unwrap_err();
    assert_eq!(
        api_status(&e),
        (
            400,
            "one or more keys specified are not found on KME".into()
        )
    );

    // GET enc_keys with query parameters.
    let kc = sae1
        .enc_keys_get("SAE_3", Some(2), Some(128))
        .await
        .unwrap();
    assert_eq!(kc.keys.len(), 2);
    assert_eq!(b64(&kc.keys[0].key).len(), 16);
    let kc = sae1.enc_keys_get("SAE_3", None, None).await.unwrap();
    assert_eq!(b64(&kc.keys[0].key).len(), 32);
    let id = Uuid::parse_str(&kc.keys[0].key_ID).unwrap();

    // Another SAE's keys: SAE_1 (the master) is no slave: 401 with an Error body.
    let e = sae1.dec_keys("SAE_1", &[id]).await.unwrap_err();
    assert_eq!(api_status(&e).0, 401);
    // Wrong master in the path: not found.
    let e = sae3.dec_keys("SAE_2", &[id]).await.unwrap_err();
    assert_eq!(api_status(&e).0, 400);
    // The right slave still gets it.
    assert_eq!(
        sae3.dec_keys("SAE_1", &[id]).await.unwrap().keys[0].key,
        kc.keys[0].key
    );

    // Request validation.
    let cases: Vec<(KeyRequest, &str)> = vec![
        (
            KeyRequest {
                size: Some(100),
                ..Default::default()
            },
            "size shall be a multiple of 8",
        ),
        (
            KeyRequest {
                size: Some(8),
                ..Default::default()
            },
            "size shall be between 64 and 8192 (min_key_size, max_key_size)",
        ),
        (
            KeyRequest {
                size: Some(16384),
                ..Default::default()
            },
            "size shall be between 64 and 8192 (min_key_size, max_key_size)",
        ),
        (
            KeyRequest {
                number: Some(0),
                ..Default::default()
            },
            "number shall be between 1 and 128 (max_key_per_request)",
        ),
        (
            KeyRequest {
                number: Some(129),
                ..Default::default()
            },
            "number shall be between 1 and 128 (max_key_per_request)",
        ),
        (
            KeyRequest {
                extension_mandatory: Some(vec![
                    json!({"abc_route": "x"}).as_object().unwrap().clone(),
                ]),
                ..Default::default()
            },
            "not all extension_mandatory parameters are supported",
        ),
        (
            KeyRequest {
                additional_slave_SAE_IDs: Some(vec!["SAE_9".into()]),
                ..Default::default()
            },
            "unknown SAE ID \"SAE_9\"",
        ),
        (
            KeyRequest {
                additional_slave_SAE_IDs: Some(vec!["SAE_3".into()]),
                ..Default::default()
            },
            "slave SAE ID \"SAE_3\" named twice",
        ),
    ];
    let before = a.pool().stats(LOCAL_POOL).allocatable_bytes;
    for (req, msg) in cases {
        let e = sae1.enc_keys("SAE_3", &req).await.unwrap_err();
        assert_eq!(api_status(&e), (400, msg.to_string()), "{req:?}");
    }
    // (The CSPRNG top-up may add material meanwhile; it never removes any.)
    assert!(
        a.pool().stats(LOCAL_POOL).allocatable_bytes >= before,
        "a refused request spent key material"
    );
    // Master as its own slave, unknown slave in the path.
    assert_eq!(
        api_status(
            &sae1
                .enc_keys("SAE_1", &KeyRequest::default())
                .await
                .unwrap_err()
        )
        .0,
        400
    );
    assert_eq!(
        api_status(
            &sae1
                .enc_keys("NOPE", &KeyRequest::default())
                .await
                .unwrap_err()
        )
        .0,
        400
    );
    assert_eq!(api_status(&sae1.status("NOPE").await.unwrap_err()).0, 400);
    // extension_optional is ignored.
    let kc = sae1
        .enc_keys(
            "SAE_3",
            &KeyRequest {
                extension_optional: Some(vec![json!({"abc_hint": 1}).as_object().unwrap().clone()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(kc.keys.len(), 1);

    // Raw requests: bad JSON, unknown fields, bad query, malformed and duplicate key IDs.
    let raw = raw_tls_client(
        &lab.path("ca.pem"),
        Some((&lab.path("SAE_3.pem"), &lab.path("SAE_3.key"))),
    );
    let base = format!("https://localhost:{}/api/v1/keys", a.sae_addr.port());
    let check = |r: reqwest::Response, code: u16| async move {
        assert_eq!(r.status().as_u16(), code);
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v["message"].is_string(), "{v}");
        v["message"].as_str().unwrap().to_string()
    };
    check(
        raw.post(format!("{base}/SAE_1/enc_keys"))
            .body("{not json")
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    check(
        raw.post(format!("{base}/SAE_1/enc_keys"))
            .body(r#"{"nmber": 1}"#)
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    check(
        raw.post(format!("{base}/SAE_1/enc_keys"))
            .body(r#"{"number": -1}"#)
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    check(
        raw.get(format!("{base}/SAE_1/enc_keys?number=1&foo=2"))
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    check(
        raw.get(format!("{base}/SAE_1/enc_keys?number=x"))
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    let m = check(
        raw.get(format!("{base}/SAE_1/dec_keys?key_ID=not-a-uuid"))
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_eq!(m, "key_ID is not a UUID");
    let u = Uuid::new_v4().to_string();
    let body = json!({"key_IDs": [{"key_ID": u}, {"key_ID": u}]}).to_string();
    let m = check(
        raw.post(format!("{base}/SAE_1/dec_keys"))
            .body(body)
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_eq!(m, "key_ID listed twice");
    let body = json!({"key_IDs": []}).to_string();
    check(
        raw.post(format!("{base}/SAE_1/dec_keys"))
            .body(body)
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    let body = json!({"key_IDs": [{"key_ID": u}]}).to_string();
    let m = check(
        raw.post(format!("{base}/SAE_1/dec_keys"))
            .body(body)
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_eq!(m, "one or more keys specified are not found on KME");
    // Empty POST body is a valid (empty) key request.
    let r = raw
        .post(format!("{base}/SAE_1/enc_keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // Insufficient material: 503 and nothing spent.
    let before = a.pool().stats(LOCAL_POOL).allocatable_bytes;
    let mut huge = 0;
    let mut last = Ok(());
    while huge < 64 && last.is_ok() {
        last = sae1
            .enc_keys(
                "SAE_3",
                &KeyRequest {
                    number: Some(128),
                    size: Some(8192),
                    ..Default::default()
                },
            )
            .await
            .map(|_| ());
        huge += 1;
    }
    let e = last.unwrap_err();
    assert_eq!(api_status(&e).0, 503);
    assert!(before > 0);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multicast_and_identity() {
    let lab = lab(60);
    let a = start(&lab.a).await;
    let b = start(&lab.b).await;
    // Multicast across the link: SAE_1@A -> SAE_2@B and SAE_4@B.
    let kc = lab
        .client(&a, "SAE_1")
        .enc_keys(
            "SAE_2",
            &KeyRequest {
                number: Some(2),
                additional_slave_SAE_IDs: Some(vec!["SAE_4".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let ids: Vec<Uuid> = kc
        .keys
        .iter()
        .map(|k| Uuid::parse_str(&k.key_ID).unwrap())
        .collect();
    for slave in ["SAE_2", "SAE_4"] {
        let got = lab.client(&b, slave).dec_keys("SAE_1", &ids).await.unwrap();
        assert_eq!(got.keys[0].key, kc.keys[0].key);
        assert_eq!(got.keys[1].key, kc.keys[1].key);
        let e = lab
            .client(&b, slave)
            .dec_keys("SAE_1", &ids)
            .await
            .unwrap_err();
        assert_eq!(api_status(&e).0, 400);
    }

    // A certificate from the right CA that maps to no SAE: 401 with an Error body.
    qkd_server::pki::issue(
        &lab.path("ca.pem"),
        &lab.path("ca.key"),
        "STRANGER",
        qkd_server::pki::CertKind::Client,
        &[],
        lab.dir.path(),
        "",
    )
    .unwrap();
    let e = lab
        .client(&a, "STRANGER")
        .status("SAE_3")
        .await
        .unwrap_err();
    assert_eq!(api_status(&e).0, 401);
    // An SAE attached to KME_B calling KME_A: 401.
    let e = lab.client(&a, "SAE_2").status("SAE_1").await.unwrap_err();
    assert_eq!(api_status(&e).0, 401);

    // No client certificate: the handshake is refused.
    let url = format!(
        "https://localhost:{}/api/v1/keys/SAE_3/status",
        a.sae_addr.port()
    );
    let no_cert = raw_tls_client(&lab.path("ca.pem"), None);
    assert!(no_cert.get(&url).send().await.is_err());
    // A certificate from another CA: refused.
    let other = tempfile::tempdir().unwrap();
    qkd_server::pki::init(
        other.path(),
        &["KME_A".into()],
        &[("SAE_1".into(), "KME_A".into())],
        9000,
        &[],
    )
    .unwrap();
    let foreign = raw_tls_client(
        &lab.path("ca.pem"),
        Some((
            &other.path().join("SAE_1.pem"),
            &other.path().join("SAE_1.key"),
        )),
    );
    assert!(foreign.get(&url).send().await.is_err());
    // The right certificate works on the same client stack.
    let good = raw_tls_client(
        &lab.path("ca.pem"),
        Some((&lab.path("SAE_1.pem"), &lab.path("SAE_1.key"))),
    );
    assert_eq!(good.get(&url).send().await.unwrap().status().as_u16(), 200);
    // An SAE certificate on the peer listener: refused by the KME resolver (403, no keys).
    let peer_url = format!(
        "https://localhost:{}/peer/v1/health",
        a.peer_addr.unwrap().port()
    );
    assert_eq!(
        good.get(&peer_url).send().await.unwrap().status().as_u16(),
        403
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_kmes_both_directions_concurrently() {
    let lab = lab(60);
    let a = start(&lab.a).await;
    let b = start(&lab.b).await;
    let run = |master: qkd_server::client::Client,
               slave: qkd_server::client::Client,
               m: &'static str,
               s: &'static str| async move {
        for _ in 0..20 {
            let kc = master
                .enc_keys(
                    s,
                    &KeyRequest {
                        number: Some(2),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            let ids: Vec<Uuid> = kc
                .keys
                .iter()
                .map(|k| Uuid::parse_str(&k.key_ID).unwrap())
                .collect();
            let got = slave.dec_keys(m, &ids).await.unwrap();
            assert_eq!(got.keys[0].key, kc.keys[0].key);
            assert_eq!(got.keys[1].key, kc.keys[1].key);
        }
    };
    let ab = tokio::spawn(run(
        lab.client(&a, "SAE_1"),
        lab.client(&b, "SAE_2"),
        "SAE_1",
        "SAE_2",
    ));
    let ba = tokio::spawn(run(
        lab.client(&b, "SAE_2"),
        lab.client(&a, "SAE_1"),
        "SAE_2",
        "SAE_1",
    ));
    let ab2 = tokio::spawn(run(
        lab.client(&a, "SAE_3"),
        lab.client(&b, "SAE_4"),
        "SAE_3",
        "SAE_4",
    ));
    ab.await.unwrap();
    ba.await.unwrap();
    ab2.await.unwrap();
    let st = lab.client(&a, "SAE_1").status("SAE_2").await.unwrap();
    assert_eq!(st.status_extension.unwrap()["link_state"], "up");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_down_spends_nothing() {
    let lab = lab(60);
    let a = start(&lab.a).await;
    let b = start(&lab.b).await;
    let sae1 = lab.client(&a, "SAE_1");
    sae1.enc_keys("SAE_2", &KeyRequest::default())
        .await
        .unwrap();
    b.shutdown().await;
    // The first request finds out: its allocation is destroyed, never delivered.
    let e = sae1
        .enc_keys("SAE_2", &KeyRequest::default())
        .await
        .unwrap_err();
    assert_eq!(api_status(&e).0, 503);
    // While the link is known down, requests are refused before anything is allocated.
    let before = a.pool().stats("KME_B");
    let e = sae1
        .enc_keys(
            "SAE_2",
            &KeyRequest {
                number: Some(4),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    let (code, msg) = api_status(&e);
    assert_eq!(
        (code, msg.as_str()),
        (503, "peer KME unreachable; no key was delivered")
    );
    assert_eq!(
        a.pool().stats("KME_B"),
        before,
        "material spent although the peer was down"
    );
    let st = sae1.status("SAE_2").await.unwrap();
    assert_eq!(st.status_extension.unwrap()["link_state"], "down");
    assert!(
        a.events()
            .iter()
            .any(|e| serde_json::to_value(e).unwrap()["kind"] == "peer_down")
    );
    // The peer comes back (same state dir): keys flow again once the link is seen up.
    let b = start(&lab.b).await;
    let t0 = std::time::Instant::now();
    while sae1
        .status("SAE_2")
        .await
        .unwrap()
        .status_extension
        .unwrap()["link_state"]
        != "up"
    {
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "link not seen up again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kc = sae1
        .enc_keys("SAE_2", &KeyRequest::default())
        .await
        .unwrap();
    let id = Uuid::parse_str(&kc.keys[0].key_ID).unwrap();
    assert_eq!(
        lab.client(&b, "SAE_2")
            .dec_keys("SAE_1", &[id])
            .await
            .unwrap()
            .keys[0]
            .key,
        kc.keys[0].key
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_expiry_destroys_on_both_kmes() {
    let lab = lab(1);
    let a = start(&lab.a).await;
    let b = start(&lab.b).await;
    let kc = lab
        .client(&a, "SAE_1")
        .enc_keys("SAE_2", &KeyRequest::default())
        .await
        .unwrap();
    let local = lab
        .client(&a, "SAE_1")
        .enc_keys("SAE_3", &KeyRequest::default())
        .await
        .unwrap();
    assert_eq!(b.pool().stats("KME_A").reserved_keys, 1);
    assert_eq!(a.pool().stats(LOCAL_POOL).reserved_keys, 1);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(b.pool().stats("KME_A").reserved_keys, 0);
    assert_eq!(a.pool().stats(LOCAL_POOL).reserved_keys, 0);
    let id = Uuid::parse_str(&kc.keys[0].key_ID).unwrap();
    let e = lab
        .client(&b, "SAE_2")
        .dec_keys("SAE_1", &[id])
        .await
        .unwrap_err();
    assert_eq!(api_status(&e).0, 400);
    let id = Uuid::parse_str(&local.keys[0].key_ID).unwrap();
    let e = lab
        .client(&a, "SAE_3")
        .dec_keys("SAE_1", &[id])
        .await
        .unwrap_err();
    assert_eq!(api_status(&e).0, 400);
    assert!(
        b.events()
            .iter()
            .any(|e| serde_json::to_value(e).unwrap()["kind"] == "expired")
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_preserves_state() {
    let lab = lab(60);
    let a = start(&lab.a).await;
    let b = start(&lab.b).await;
    let remote = lab
        .client(&a, "SAE_1")
        .enc_keys(
            "SAE_2",
            &KeyRequest {
                number: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let local = lab
        .client(&a, "SAE_1")
        .enc_keys("SAE_3", &KeyRequest::default())
        .await
        .unwrap();
    let link_before = a.pool().stats("KME_B").allocatable_bytes;
    a.shutdown().await;
    b.shutdown().await;
    let a = start(&lab.a).await;
    let b = start(&lab.b).await;
    assert_eq!(a.pool().stats("KME_B").allocatable_bytes, link_before);
    let ids: Vec<Uuid> = remote
        .keys
        .iter()
        .map(|k| Uuid::parse_str(&k.key_ID).unwrap())
        .collect();
    let got = lab
        .client(&b, "SAE_2")
        .dec_keys("SAE_1", &ids)
        .await
        .unwrap();
    assert_eq!(got.keys[1].key, remote.keys[1].key);
    let id = Uuid::parse_str(&local.keys[0].key_ID).unwrap();
    assert_eq!(
        lab.client(&a, "SAE_3")
            .dec_keys("SAE_1", &[id])
            .await
            .unwrap()
            .keys[0]
            .key,
        local.keys[0].key
    );
    // Fetched keys stay fetched across a restart.
    a.shutdown().await;
    let a = start(&lab.a).await;
    let e = lab
        .client(&a, "SAE_3")
        .dec_keys("SAE_1", &[id])
        .await
        .unwrap_err();
    assert_eq!(api_status(&e).0, 400);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cor_files_are_picked_up_within_a_second() {
    let lab = cor_lab(100);
    let a = qkd_server::serve(lab.a.clone()).await.unwrap();
    let b = qkd_server::serve(lab.b.clone()).await.unwrap();
    let bytes: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    for k in ["KME_A", "KME_B"] {
        let d = lab.incoming(k);
        std::fs::write(d.join("block-0001.cor"), &bytes).unwrap();
        std::fs::write(d.join("block-0002.cor"), &bytes).unwrap();
    }
    let t0 = std::time::Instant::now();
    while a.pool().stats("KME_B").blocks < 2 || b.pool().stats("KME_A").blocks < 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "cor files not picked up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Which side allocates from which block is the store's split rule, computed on both sides.
    let owns = |me: &str, other: &str| {
        ["block-0001.cor", "block-0002.cor"].iter().any(|n| {
            qkd_store::BlockFilter::split(me, other).allows(&qkd_store::BlockId::new(*n).unwrap())
        })
    };
    let ka = lab
        .client(&a, "SAE_1")
        .enc_keys("SAE_2", &KeyRequest::default())
        .await;
    let kb = lab
        .client(&b, "SAE_2")
        .enc_keys("SAE_1", &KeyRequest::default())
        .await;
    assert_eq!(ka.is_ok(), owns("KME_A", "KME_B"));
    assert_eq!(kb.is_ok(), owns("KME_B", "KME_A"));
    let kc = ka.unwrap_or_else(|_| kb.unwrap());
    assert!(
        bytes
            .windows(32)
            .any(|w| w == b64(&kc.keys[0].key).as_slice())
    );
    assert!(
        std::fs::read_dir(lab.dir.path().join("KME_A/incoming/KME_B"))
            .unwrap()
            .next()
            .is_none()
    );
    a.shutdown().await;
    b.shutdown().await;
}
