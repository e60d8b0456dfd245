//! Two KMEs post-process simulated raw key between themselves over their peer listeners, and
//! serve the same final keys over ETSI 014.

use std::time::Duration;

use crate::common::wait_blocks;
use qkd_server::etsi::KeyRequest;
use qkd_server::serve;

/// enc_keys until it succeeds: a KME allocates only from the blocks it owns (about half of
/// them, by block ID), so the first few blocks may all be the other side's.
async fn enc_until(
    c: &qkd_server::client::Client,
    slave: &str,
    req: &KeyRequest,
) -> qkd_server::etsi::KeyContainer {
    for _ in 0..300 {
        if let Ok(k) = c.enc_keys(slave, req).await {
            return k;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no keys for {slave} within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_kmes_post_process_and_serve_the_same_keys() {
    let mut lab = crate::common::raw_lab();
    lab.a.monitor_listen = Some("127.0.0.1:0".parse().unwrap());
    let a = serve(lab.a.clone()).await.unwrap();
    let b = serve(lab.b.clone()).await.unwrap();
    wait_blocks(&a, "KME_B", 3).await;
    wait_blocks(&b, "KME_A", 3).await;
    let req = KeyRequest {
        number: Some(8),
        size: Some(256),
        ..Default::default()
    };
    let enc = enc_until(&lab.client(&a, "SAE_1"), "SAE_2", &req).await;
    let ids: Vec<uuid::Uuid> = enc.keys.iter().map(|k| k.key_ID.parse().unwrap()).collect();
    // KME_B reserved them durably before KME_A answered: SAE_2 gets them at once.
    let dec = lab
        .client(&b, "SAE_2")
        .dec_keys("SAE_1", &ids)
        .await
        .unwrap();
    assert_eq!(enc.keys.len(), 8);
    for (x, y) in enc.keys.iter().zip(&dec.keys) {
        assert_eq!(x.key_ID, y.key_ID);
        assert_eq!(x.key, y.key);
    }
    // And the other way round: SAE_2 is master at KME_B.
    let enc = enc_until(&lab.client(&b, "SAE_2"), "SAE_1", &req).await;
    let ids: Vec<uuid::Uuid> = enc.keys.iter().map(|k| k.key_ID.parse().unwrap()).collect();
    let dec = lab
        .client(&a, "SAE_1")
        .dec_keys("SAE_2", &ids)
        .await
        .unwrap();
    assert_eq!(
        enc.keys.iter().map(|k| &k.key).collect::<Vec<_>>(),
        dec.keys.iter().map(|k| &k.key).collect::<Vec<_>>()
    );
    // Status shows the link.
    let st = lab.client(&a, "SAE_1").status("SAE_2").await.unwrap();
    let pp = &st.status_extension.as_ref().unwrap()["post_processing"];
    assert_eq!(pp["role"], "alice");
    assert!(pp["blocks_kept"].as_u64().unwrap() >= 3, "{pp}");
    assert!(pp["qber"].as_f64().unwrap() > 0.005, "{pp}");
    assert!(pp["auth_pool_bits"].as_u64().unwrap() > 0, "{pp}");
    // So do /metrics and the dashboard's state.
    let mon = format!("http://{}", a.monitor_addr.unwrap());
    let http = crate::common::raw_tls_client(&lab.path("ca.pem"), None);
    let metrics = http
        .get(format!("{mon}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "qkd_kme_link_state{kme=\"KME_A\",peer=\"KME_B\",state=\"up\"} 1",
        "qkd_kme_link_blocks_kept_total{kme=\"KME_A\",peer=\"KME_B\"}",
        "qkd_kme_auth_pool_bits{kme=\"KME_A\",peer=\"KME_B\"}",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    let state: serde_json::Value = http
        .get(format!("{mon}/api/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["links"][0]["peer"], "KME_B");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_certificate_for_another_kme_is_refused() {
    let mut lab = crate::common::raw_lab();
    // KME_A dials its own peer listener: the certificate there names KME_A, not KME_B.
    lab.a.links[0].url = format!("https://127.0.0.1:{}", lab.a.peer_listen.unwrap().port());
    let a = serve(lab.a.clone()).await.unwrap();
    let mut last = String::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let st = lab.client(&a, "SAE_1").status("SAE_2").await.unwrap();
        last = st.status_extension.unwrap()["post_processing"]["last_error"].to_string();
        if last.contains("certificate") {
            break;
        }
    }
    assert!(last.contains("not the configured peer KME"), "{last}");
    assert_eq!(a.pool().stats("KME_B").blocks, 0);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_file_at_one_site_only_is_held_until_the_other_has_it() {
    use qkd_server::config::SourceConfig;
    let mut lab = crate::common::raw_lab();
    let raw_a = lab.path("raw-a");
    let raw_b = lab.path("raw-b");
    for (c, d) in [(&mut lab.a, &raw_a), (&mut lab.b, &raw_b)] {
        c.links[0].source = SourceConfig::RawDir {
            dir: d.clone(),
            poll_ms: 20,
        };
    }
    let a = serve(lab.a.clone()).await.unwrap();
    let b = serve(lab.b.clone()).await.unwrap();
    // A correlated pair of 3 blocks' worth of raw key, 2 % errors.
    let pair =
        qkd_core::sim::simulate(3 << 18, 0.02, qkd_core::sim::ErrorModel::IidExact, 5).unwrap();
    std::fs::write(raw_a.join("run-1"), &*pair.alice.to_bytes()).unwrap();
    let mut held = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        held = a.events().iter().any(|e| {
            let v = serde_json::to_value(e).unwrap();
            v["kind"] == "raw_missing" || v.to_string().contains("raw_missing")
        });
        if held {
            break;
        }
    }
    assert!(
        held,
        "no event for the raw file at one site: {:?}",
        a.events()
    );
    assert!(raw_a.join("run-1").exists(), "held, not processed alone");
    assert_eq!(a.pool().stats("KME_B").blocks, 0);
    std::fs::write(raw_b.join("run-1"), &*pair.bob.to_bytes()).unwrap();
    wait_blocks(&a, "KME_B", 3).await;
    wait_blocks(&b, "KME_A", 3).await;
    // Both copies are burned once every block is decided.
    for _ in 0..100 {
        if !raw_a.join("run-1").exists() && !raw_b.join("run-1").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!raw_a.join("run-1").exists() && !raw_b.join("run-1").exists());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qber_above_the_limit_raises_the_alarm_and_yields_no_key() {
    use qkd_server::config::SourceConfig;
    let mut lab = crate::common::raw_lab();
    for c in [&mut lab.a, &mut lab.b] {
        if let SourceConfig::SimulatedDevice { qber, .. } = &mut c.links[0].source {
            *qber = 0.15;
        }
    }
    // A watermark above the whole pre-shared secret: the first block's end reports it.
    lab.a.links[0].auth_low_watermark_bits = 1 << 30;
    let a = serve(lab.a.clone()).await.unwrap();
    let b = serve(lab.b.clone()).await.unwrap();
    let mut pp = serde_json::Value::Null;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let st = lab.client(&a, "SAE_1").status("SAE_2").await.unwrap();
        pp = st.status_extension.unwrap()["post_processing"].clone();
        if pp["blocks_discarded"]["qber"].as_u64().unwrap_or(0) >= 2 {
            break;
        }
    }
    assert_eq!(pp["state"], "qber_alarm", "{pp}");
    assert!(pp["qber"].as_f64().unwrap() > 0.11, "{pp}");
    assert_eq!(pp["blocks_kept"], 0, "{pp}");
    let events: Vec<serde_json::Value> = a
        .events()
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    assert!(
        events.iter().any(|e| e["kind"] == "qber_alarm"),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "low_watermark" && e["pool"] == "KME_B authentication"),
        "{events:?}"
    );
    assert_eq!(a.pool().stats("KME_B").blocks, 0);
    assert_eq!(b.pool().stats("KME_A").blocks, 0);
    a.shutdown().await;
    b.shutdown().await;
}
