//! Keys across several hops: real KMEs on loopback joined as a chain or a ring, master and
//! slave SAEs at KMEs without a link of their own.

use std::net::SocketAddr;

use crate::common::*;
use qkd_server::client::{Client, ClientError};
use qkd_server::etsi::{KeyContainer, KeyRequest};
use uuid::Uuid;

/// Four KMEs, and the ring A-B-C-D-A that joins them.
const FOUR: [&str; 4] = ["KME_A", "KME_B", "KME_C", "KME_D"];
const RING: [(&str, &str); 4] = [
    ("KME_A", "KME_B"),
    ("KME_B", "KME_C"),
    ("KME_C", "KME_D"),
    ("KME_D", "KME_A"),
];

fn request(number: u64, size: u64) -> KeyRequest {
    KeyRequest {
        number: Some(number),
        size: Some(size),
        ..Default::default()
    }
}

/// The slave fetches every key of `kc` from its KME: the same bytes; a second fetch fails.
async fn slave_gets_the_same_keys(slave: &Client, master: &str, kc: &KeyContainer) {
    let ids: Vec<Uuid> = kc.keys.iter().map(|k| k.key_ID.parse().unwrap()).collect();
    let got = slave.dec_keys(master, &ids).await.unwrap();
    assert_eq!(got.keys.len(), kc.keys.len());
    for (a, b) in kc.keys.iter().zip(&got.keys) {
        assert_eq!(a.key_ID, b.key_ID);
        assert_eq!(b64(&a.key), b64(&b.key), "key {}", a.key_ID);
    }
    let again = slave.dec_keys(master, &ids).await.unwrap_err();
    assert!(
        matches!(again, ClientError::Api { status: 400, .. }),
        "{again}"
    );
}

fn api_error(e: &ClientError) -> (u16, String, String) {
    match e {
        ClientError::Api { status, body } => {
            let b = body.as_ref().expect("an Error body");
            (
                *status,
                b.message.clone(),
                serde_json::to_string(&b.details).unwrap(),
            )
        }
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_cross_two_hops_both_ways_and_status_is_the_minimum_over_the_path() {
    let mut lab = net_lab(
        &["KME_A", "KME_B", "KME_C"],
        &[("KME_A", "KME_B"), ("KME_B", "KME_C")],
        8,
    );
    lab.configs[1].monitor_listen = Some(SocketAddr::from(([127, 0, 0, 1], free_port())));
    let b = lab.start("KME_B").await;
    let a = lab.start("KME_A").await;
    let c = lab.start("KME_C").await;
    let (sae_a, sae_c) = (lab.client(&a, "SAE_A"), lab.client(&c, "SAE_C"));

    let st = sae_a.status("SAE_C").await.unwrap();
    assert_eq!(st.target_KME_ID, "KME_C");
    let ext = st.status_extension.clone().unwrap();
    assert_eq!(ext["relay_path"], "KME_A>KME_B>KME_C");
    assert_eq!(ext["link_state"], "up");
    let hops = ext["relay_hops"].as_array().unwrap();
    assert_eq!(hops.len(), 2);
    // A pad on the first hop takes the key and its 256-bit tag share, the last hop the key.
    let bits = |i: usize| hops[i]["allocatable_bits"].as_u64().unwrap();
    let expected = (bits(0) / 512).min(bits(1) / 256).min(st.max_key_count);
    assert_eq!(st.stored_key_count, expected);
    assert!(expected > 0);

    for (number, size) in [(1, 256), (5, 128), (3, 1024)] {
        let kc = sae_a
            .enc_keys("SAE_C", &request(number, size))
            .await
            .unwrap();
        assert_eq!(kc.keys.len(), number as usize);
        assert!(
            kc.keys
                .iter()
                .all(|k| b64(&k.key).len() == size as usize / 8)
        );
        slave_gets_the_same_keys(&sae_c, "SAE_A", &kc).await;
    }
    // The other way: master at C, slave at A.
    let kc = sae_c.enc_keys("SAE_A", &request(2, 256)).await.unwrap();
    slave_gets_the_same_keys(&sae_a, "SAE_C", &kc).await;

    // The middle node shows its per-hop consumption and the transit count.
    let ca = lab.path("ca.pem");
    let metrics = monitor_text(&ca, &b, "/metrics").await;
    let exp = crate::prom::parse(&metrics).unwrap();
    assert_eq!(
        exp.value(
            "qkd_kme_relayed_keys_total",
            &[("kme", "KME_B"), ("role", "transit")]
        ),
        11.0
    );
    // A→C: 9 keys over B-C as keys (1*256 + 5*128 + 3*1024 bits); C→A: 2 keys over B-A.
    assert_eq!(
        exp.value(
            "qkd_kme_relay_hop_bits_total",
            &[("kme", "KME_B"), ("peer", "KME_C")]
        ),
        (256 + 5 * 128 + 3 * 1024 + 2 * (256 + 128)) as f64
    );
    assert_eq!(
        exp.value(
            "qkd_kme_relay_hop_keys_total",
            &[("kme", "KME_B"), ("peer", "KME_A")]
        ),
        11.0
    );
    let state: serde_json::Value =
        serde_json::from_str(&monitor_text(&ca, &b, "/api/state").await).unwrap();
    assert_eq!(state["relay"]["keys"]["transit"], 11);
    assert!(
        state["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "relayed" && e["path"] == "KME_C>KME_B>KME_A")
    );
    for h in [a, b, c] {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_cross_three_hops() {
    let kmes = FOUR;
    let lab = net_lab(
        &kmes,
        &[("KME_A", "KME_B"), ("KME_B", "KME_C"), ("KME_C", "KME_D")],
        8,
    );
    let mut hs = Vec::new();
    for k in kmes {
        hs.push(lab.start(k).await);
    }
    let (sae_a, sae_d) = (lab.client(&hs[0], "SAE_A"), lab.client(&hs[3], "SAE_D"));
    let st = sae_a.status("SAE_D").await.unwrap();
    assert_eq!(
        st.status_extension.unwrap()["relay_path"],
        "KME_A>KME_B>KME_C>KME_D"
    );
    let kc = sae_a.enc_keys("SAE_D", &request(4, 256)).await.unwrap();
    slave_gets_the_same_keys(&sae_d, "SAE_A", &kc).await;
    let kc = sae_d.enc_keys("SAE_A", &request(1, 512)).await.unwrap();
    slave_gets_the_same_keys(&sae_a, "SAE_D", &kc).await;
    // An SAE at B, one hop from D's other neighbour, is two hops from D.
    let sae_b = lab.client(&hs[1], "SAE_B");
    let kc = sae_d.enc_keys("SAE_B", &request(2, 256)).await.unwrap();
    slave_gets_the_same_keys(&sae_b, "SAE_D", &kc).await;
    for h in hs {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_down_on_the_path_is_503_and_a_ring_takes_the_other_way() {
    // A chain: C stopped, so B cannot reach it.
    let lab = net_lab(
        &["KME_A", "KME_B", "KME_C"],
        &[("KME_A", "KME_B"), ("KME_B", "KME_C")],
        8,
    );
    let a = lab.start("KME_A").await;
    let b = lab.start("KME_B").await;
    let c = lab.start("KME_C").await;
    let sae_a = lab.client(&a, "SAE_A");
    let before = a.pool().stats("KME_B");
    c.shutdown().await;
    let e = sae_a.enc_keys("SAE_C", &request(2, 256)).await.unwrap_err();
    let (status, message, details) = api_error(&e);
    assert_eq!(status, 503, "{message}");
    assert!(
        message.contains("no path") && message.contains("no key was delivered"),
        "{message}"
    );
    assert!(
        details.contains("KME_A>KME_B>KME_C") && details.contains("KME_C"),
        "{details}"
    );
    // The pads A spent on the failed attempt are burned, not handed out again.
    let after = a.pool().stats("KME_B");
    assert!(after.allocatable_bytes < before.allocatable_bytes);
    let st = sae_a.status("SAE_C").await.unwrap();
    assert_eq!(st.stored_key_count, 0);
    assert_eq!(st.status_extension.unwrap()["link_state"], "down");
    a.shutdown().await;
    b.shutdown().await;

    // A ring A-B-C-D-A: with B down, keys for C go through D.
    let kmes = FOUR;
    let ring = RING;
    let lab = net_lab(&kmes, &ring, 8);
    let mut hs = Vec::new();
    for k in kmes {
        hs.push(Some(lab.start(k).await));
    }
    let sae_a = lab.client(hs[0].as_ref().unwrap(), "SAE_A");
    let sae_c = lab.client(hs[2].as_ref().unwrap(), "SAE_C");
    let path = |st: qkd_server::etsi::Status| st.status_extension.unwrap()["relay_path"].clone();
    assert_eq!(
        path(sae_a.status("SAE_C").await.unwrap()),
        "KME_A>KME_B>KME_C"
    );
    hs[1].take().unwrap().shutdown().await;
    let kc = sae_a.enc_keys("SAE_C", &request(3, 256)).await.unwrap();
    slave_gets_the_same_keys(&sae_c, "SAE_A", &kc).await;
    assert_eq!(
        path(sae_a.status("SAE_C").await.unwrap()),
        "KME_A>KME_D>KME_C"
    );
    for h in hs.into_iter().flatten() {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_link_down_is_gone_around_through_the_ring() {
    let kmes = FOUR;
    let ring = RING;
    let mut lab = net_lab(&kmes, &ring, 8);
    // A's side of the link to D leads nowhere: A sees D down, D sees A up.
    let a_to_d = lab.configs[0]
        .links
        .iter_mut()
        .find(|l| l.peer == "KME_D")
        .unwrap();
    a_to_d.url = format!("https://127.0.0.1:{}", free_port());
    let b = lab.start("KME_B").await;
    let c = lab.start("KME_C").await;
    let d = lab.start("KME_D").await;
    let a = lab.start("KME_A").await;
    let (sae_a, sae_d) = (lab.client(&a, "SAE_A"), lab.client(&d, "SAE_D"));
    // The first request finds the link down (or the health check did already); from then on
    // the keys go A>B>C>D.
    let mut kc = sae_a.enc_keys("SAE_D", &request(2, 256)).await;
    if kc.is_err() {
        kc = sae_a.enc_keys("SAE_D", &request(2, 256)).await;
    }
    let kc = kc.unwrap();
    slave_gets_the_same_keys(&sae_d, "SAE_A", &kc).await;
    let relayed = |h: &qkd_server::ServerHandle| {
        h.events()
            .iter()
            .any(|e| serde_json::to_value(e).unwrap()["path"] == "KME_A>KME_B>KME_C>KME_D")
    };
    assert!(relayed(&a) && relayed(&b) && relayed(&c));
    for h in [a, b, c, d] {
        h.shutdown().await;
    }
}

#[test]
fn pki_init_link_writes_a_chain_and_refuses_what_is_not_a_network() {
    let lab = net_lab(
        &["KME_A", "KME_B", "KME_C"],
        &[("KME_A", "KME_B"), ("KME_B", "KME_C")],
        1,
    );
    let a = lab.config("KME_A");
    assert_eq!(
        a.links.iter().map(|l| l.peer.as_str()).collect::<Vec<_>>(),
        ["KME_B"]
    );
    assert_eq!(
        a.network.links,
        vec![["KME_B".to_string(), "KME_C".to_string()]]
    );
    assert_eq!(a.network.kmes.len(), 1);
    assert_eq!(
        (
            a.network.kmes[0].id.as_str(),
            a.network.kmes[0].saes.as_slice()
        ),
        ("KME_C", &["SAE_C".to_string()][..])
    );
    let b = lab.config("KME_B");
    assert_eq!(b.links.len(), 2);
    assert!(b.network.is_empty());

    let kmes: Vec<String> = ["K-1", "K-2", "K-3"].map(String::from).to_vec();
    assert_eq!(
        qkd_server::pki::parse_link_spec("K-1-K-3", &kmes).unwrap(),
        ("K-1".to_string(), "K-3".to_string())
    );
    for (spec, want) in [("K-1-K-9", "expected KME-KME"), ("K-1-K-1", "with itself")] {
        let e = qkd_server::pki::parse_link_spec(spec, &kmes)
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{spec}: {e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    for (links, want) in [
        (vec![pair("K-1", "K-2")], "K-3 is not joined to K-1"),
        (
            vec![pair("K-1", "K-2"), pair("K-2", "K-1"), pair("K-2", "K-3")],
            "given twice",
        ),
    ] {
        let e = qkd_server::pki::init_network(
            dir.path(),
            &kmes,
            &[],
            &links,
            9000,
            &[],
            qkd_server::pki::RawSetup::Cor,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(want), "{e}");
    }
}

#[test]
fn a_network_config_that_cannot_be_routed_is_refused() {
    let lab = net_lab(
        &["KME_A", "KME_B", "KME_C"],
        &[("KME_A", "KME_B"), ("KME_B", "KME_C")],
        1,
    );
    let a = lab.config("KME_A").clone();
    let edit = |f: &dyn Fn(&mut qkd_server::Config)| {
        let mut c = a.clone();
        f(&mut c);
        c.validate().unwrap_err().to_string()
    };
    type Edit<'a> = &'a dyn Fn(&mut qkd_server::Config);
    let cases: [(Edit<'_>, &str); 5] = [
        (
            &|c| c.network.links.clear(),
            "no path of links from KME_A to KME \"KME_C\"",
        ),
        (&|c| c.network.kmes[0].id = "KME_B".into(), "a direct peer"),
        (&|c| c.network.kmes[0].id = "KME_A".into(), "this KME"),
        (
            &|c| c.network.kmes[0].saes.push("SAE_A".into()),
            "more than one KME",
        ),
        (
            &|c| c.network.links.push(["KME_C".into(), "KME_C".into()]),
            "two different",
        ),
    ];
    for (f, want) in cases {
        let e = edit(f);
        assert!(e.contains(want), "{e}");
    }
    assert!(a.validate().is_ok());
}
