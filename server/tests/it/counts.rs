//! What a KME reports about its key: its own share of a link's material (the blocks
//! `BlockFilter::split` gives it), per side, in Status, `/metrics` and the dashboard's state,
//! and a 503 for lack of key that names the pool, raises an event and counts.

use std::net::SocketAddr;

use crate::common::*;
use qkd_server::client::ClientError;
use qkd_server::config::SourceConfig;
use qkd_server::etsi::KeyRequest;
use qkd_store::{BlockFilter, BlockId};
use zeroize::Zeroizing;

/// `n` block IDs that belong to `owner` on the link between KME_A and KME_B.
fn blocks_of(owner: &str, n: usize) -> Vec<String> {
    let other = if owner == "KME_A" { "KME_B" } else { "KME_A" };
    let f = BlockFilter::split(owner, other);
    (0..)
        .map(|i| format!("blk-{i}"))
        .filter(|id| f.allows(&BlockId::new(id).unwrap()))
        .take(n)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_side_without_its_own_blocks_reports_none_and_says_which_pool_ran_dry() {
    let mut lab = lab(60);
    for c in [&mut lab.a, &mut lab.b] {
        c.links[0].source = SourceConfig::External;
        c.links[0].low_watermark_bytes = 1024;
        c.monitor_listen = Some(SocketAddr::from(([127, 0, 0, 1], free_port())));
    }
    let a = qkd_server::serve(lab.a.clone()).await.unwrap();
    let b = qkd_server::serve(lab.b.clone()).await.unwrap();
    // Four blocks of 4 KiB at both KMEs, every one of them KME_B's to allocate from.
    for id in blocks_of("KME_B", 4) {
        let data = vec![7u8; 4096];
        assert!(
            a.add_block("KME_B", &id, Zeroizing::new(data.clone()))
                .await
                .unwrap()
        );
        assert!(
            b.add_block("KME_A", &id, Zeroizing::new(data))
                .await
                .unwrap()
        );
    }
    let (sa, sb) = (a.pool().stats("KME_B"), b.pool().stats("KME_A"));
    assert_eq!(
        (sa.allocatable_bytes, sa.peer_allocatable_bytes),
        (0, 4 * 4096)
    );
    assert_eq!(
        (sb.allocatable_bytes, sb.peer_allocatable_bytes),
        (4 * 4096, 0)
    );

    // KME_A's Status says there is nothing for SAE_1 -> SAE_2, and why.
    let sae1 = lab.client(&a, "SAE_1");
    let st = sae1.status("SAE_2").await.unwrap();
    assert_eq!(st.stored_key_count, 0);
    let ext = st.status_extension.unwrap();
    assert_eq!(ext["stored_key_bits"], 0);
    assert_eq!(ext["peer_stored_key_bits"], 4 * 4096 * 8);
    assert_eq!(ext["pool"], "KME_B");
    assert_eq!(ext["below_low_watermark"], true);
    // KME_B's Status for the reverse pair counts its own blocks.
    let sae2 = lab.client(&b, "SAE_2");
    let st = sae2.status("SAE_1").await.unwrap();
    assert_eq!(st.stored_key_count, 4 * 4096 * 8 / 256);

    // A request at KME_A: 503 naming the pool, an event, a counter.
    let e = sae1
        .enc_keys("SAE_2", &KeyRequest::default())
        .await
        .unwrap_err();
    let ClientError::Api { status, body } = e else {
        panic!("expected an API error, got {e}");
    };
    assert_eq!(status, 503);
    let message = body.unwrap().message;
    assert!(
        message.contains("pool KME_B") && message.contains("0 bits available"),
        "{message}"
    );
    assert!(a.events().iter().any(|e| {
        let v = serde_json::to_value(e).unwrap();
        v["kind"] == "insufficient_key" && v["pool"] == "KME_B" && v["master"] == "SAE_1"
    }));
    let metrics = monitor_get(&lab, &a, "/metrics").await;
    for line in [
        "qkd_kme_insufficient_key_total{kme=\"KME_A\",pool=\"KME_B\"} 1",
        "qkd_kme_pool_allocatable_bytes{kme=\"KME_A\",pool=\"KME_B\"} 0",
        "qkd_kme_pool_peer_allocatable_bytes{kme=\"KME_A\",pool=\"KME_B\"} 16384",
        "qkd_kme_pool_low_watermark_bytes{kme=\"KME_A\",pool=\"KME_B\"} 1024",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
    let state: serde_json::Value =
        serde_json::from_str(&monitor_get(&lab, &a, "/api/state").await).unwrap();
    let pool = state["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pool"] == "KME_B")
        .unwrap()
        .clone();
    assert_eq!(pool["allocatable_bytes"], 0);
    assert_eq!(pool["insufficient_total"], 1);

    // The reverse direction is served from KME_B's blocks, and KME_A's slave gets the key.
    let kc = sae2
        .enc_keys("SAE_1", &KeyRequest::default())
        .await
        .unwrap();
    let id: uuid::Uuid = kc.keys[0].key_ID.parse().unwrap();
    let got = sae1.dec_keys("SAE_2", &[id]).await.unwrap();
    assert_eq!(got.keys[0].key, kc.keys[0].key);
    assert_eq!(
        a.pool().stats("KME_B").peer_allocatable_bytes,
        4 * 4096 - 32,
        "KME_A sees the peer's share shrink by the reserved key"
    );
    a.shutdown().await;
    b.shutdown().await;
}
