//! The `.cor` block check between two KMEs: a block is allocatable only once both KMEs hold it
//! with equal bytes; different bytes under one name are refused at both, and every imported or
//! refused file is overwritten with zeros before it is deleted.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;
use qkd_server::ServerHandle;
use qkd_server::etsi::KeyRequest;
use uuid::Uuid;

/// Two KMEs whose link takes `.cor` files from `<lab>/<KME>/incoming/<PEER>`, polled every
/// 50 ms.
async fn cor_kmes() -> (Lab, ServerHandle, ServerHandle) {
    let mut lab = crate::common::cor_lab(50);
    lab.a.monitor_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], free_port())));
    let a = qkd_server::serve(lab.a.clone()).await.unwrap();
    let b = qkd_server::serve(lab.b.clone()).await.unwrap();
    (lab, a, b)
}

fn bytes(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(7).wrapping_add(seed * 13 + 3)) as u8)
        .collect()
}

/// Writes `data` as `dir/name` by a rename, with a hard link to it in `keep` (same file
/// system), so the test can read what became of the file's content after the KME deleted it.
fn drop_file(dir: &Path, name: &str, data: &[u8], keep: &Path) -> PathBuf {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, data).unwrap();
    std::fs::create_dir_all(keep).unwrap();
    let link = keep.join(format!("{}-{name}", Uuid::new_v4()));
    std::fs::hard_link(&tmp, &link).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
    link
}

async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn has_event(h: &ServerHandle, kind: &str, block: &str) -> bool {
    h.events().iter().any(|e| {
        let v = serde_json::to_value(e).unwrap();
        v["kind"] == kind && v["block"] == block
    })
}

fn zeroed(path: &Path, len: usize) -> bool {
    std::fs::read(path).unwrap() == vec![0u8; len]
}

/// Keys from both directions of the link: each KME's SAE asks for one key; the one that owns
/// material gets it, and the peer's SAE fetches the same bytes.
async fn one_key_each_way(lab: &Lab, a: &ServerHandle, b: &ServerHandle) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (m, s, mk, sk) in [("SAE_1", "SAE_2", a, b), ("SAE_2", "SAE_1", b, a)] {
        let Ok(k) = lab.client(mk, m).enc_keys(s, &KeyRequest::default()).await else {
            continue;
        };
        let id = Uuid::parse_str(&k.keys[0].key_ID).unwrap();
        let got = lab.client(sk, s).dec_keys(m, &[id]).await.unwrap();
        assert_eq!(got.keys[0].key, k.keys[0].key, "{m} -> {s}: keys differ");
        out.push(b64(&k.keys[0].key));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_bytes_under_one_name_are_refused_at_both_kmes() {
    let (lab, a, b) = cor_kmes().await;
    let keep = lab.path("keep");
    let (da, db) = (lab.incoming("KME_A"), lab.incoming("KME_B"));
    let la = drop_file(&da, "blk-1.cor", &bytes(8192, 1), &keep);
    let mut other = bytes(8192, 1);
    other[5000] ^= 0x10; // one bit of the material differs
    let lb = drop_file(&db, "blk-1.cor", &other, &keep);
    wait_for("both KMEs refuse the block", 10, || {
        has_event(&a, "block_mismatch", "blk-1.cor") && has_event(&b, "block_mismatch", "blk-1.cor")
    })
    .await;
    for d in [&da, &db] {
        wait_for("marker written, key file gone", 5, || {
            d.join("blk-1.cor.rejected").exists() && !d.join("blk-1.cor").exists()
        })
        .await;
        assert_eq!(
            std::fs::metadata(d.join("blk-1.cor.rejected"))
                .unwrap()
                .len(),
            0
        );
    }
    assert!(
        zeroed(&la, 8192) && zeroed(&lb, 8192),
        "refused files not overwritten"
    );
    assert_eq!(a.pool().stats("KME_B").blocks, 0);
    assert_eq!(b.pool().stats("KME_A").blocks, 0);
    for (m, s, h) in [("SAE_1", "SAE_2", &a), ("SAE_2", "SAE_1", &b)] {
        let e = lab
            .client(h, m)
            .enc_keys(s, &KeyRequest::default())
            .await
            .unwrap_err();
        match e {
            qkd_server::client::ClientError::Api { status, body } => {
                assert_eq!(status, 503);
                assert!(body.unwrap().message.contains("insufficient key material"));
            }
            other => panic!("expected 503, got {other}"),
        }
    }
    let metrics = monitor_get(&lab, &a, "/metrics").await;
    let events: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("qkd_kme_events_total{kme=\"KME_A\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(events >= 1, "{metrics}");
    // The decision survives a restart: a file of that name that turns up again is not key.
    a.shutdown().await;
    let a = qkd_server::serve(lab.a.clone()).await.unwrap();
    let again = drop_file(&da, "blk-1.cor", &bytes(8192, 1), &lab.path("keep"));
    wait_for("a decided file is erased", 5, || {
        !da.join("blk-1.cor").exists()
    })
    .await;
    assert!(zeroed(&again, 8192));
    assert_eq!(a.pool().stats("KME_B").blocks, 0);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_files_give_equal_keys_without_their_first_32_bytes() {
    let (lab, a, b) = cor_kmes().await;
    let keep = lab.path("keep");
    let data = bytes(8192, 2);
    let mut links = Vec::new();
    for k in ["KME_A", "KME_B"] {
        for n in ["blk-1.cor", "blk-2.cor"] {
            links.push(drop_file(&lab.incoming(k), n, &data, &keep));
        }
    }
    wait_for("both blocks at both KMEs", 10, || {
        a.pool().stats("KME_B").blocks == 2 && b.pool().stats("KME_A").blocks == 2
    })
    .await;
    // The material is the files less 32 bytes each; each side counts its own blocks as
    // allocatable and the other's as the peer's.
    let (sa, sb) = (a.pool().stats("KME_B"), b.pool().stats("KME_A"));
    assert_eq!(
        sa.allocatable_bytes + sa.peer_allocatable_bytes,
        2 * (8192 - 32)
    );
    assert_eq!(sa.allocatable_bytes, sb.peer_allocatable_bytes);
    assert_eq!(sb.allocatable_bytes, sa.peer_allocatable_bytes);
    let keys = one_key_each_way(&lab, &a, &b).await;
    assert!(!keys.is_empty());
    for k in &keys {
        let at = data[32..].windows(k.len()).position(|w| w == k.as_slice());
        assert!(at.is_some(), "a key that is not from the material");
    }
    wait_for("files deleted", 5, || {
        ["KME_A", "KME_B"]
            .iter()
            .all(|k| std::fs::read_dir(lab.incoming(k)).unwrap().next().is_none())
    })
    .await;
    for l in &links {
        assert!(
            zeroed(l, 8192),
            "imported file not overwritten: {}",
            l.display()
        );
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_at_one_kme_waits_for_the_other() {
    let (lab, a, b) = cor_kmes().await;
    let keep = lab.path("keep");
    let data = bytes(4096, 3);
    drop_file(&lab.incoming("KME_A"), "blk-1.cor", &data, &keep);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(a.pool().stats("KME_B").blocks, 0, "appended alone");
    assert_eq!(a.pool().stats("KME_B").allocatable_bytes, 0);
    assert!(lab.incoming("KME_A").join("blk-1.cor").exists());
    assert!(one_key_each_way(&lab, &a, &b).await.is_empty());
    drop_file(&lab.incoming("KME_B"), "blk-1.cor", &data, &keep);
    wait_for("the block at both KMEs", 10, || {
        a.pool().stats("KME_B").blocks == 1 && b.pool().stats("KME_A").blocks == 1
    })
    .await;
    assert_eq!(one_key_each_way(&lab, &a, &b).await.len(), 1);
    assert!(!has_event(&a, "block_mismatch", "blk-1.cor"));
    assert!(!has_event(&b, "block_mismatch", "blk-1.cor"));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_32_bytes_is_refused_with_an_event() {
    let (lab, a, b) = cor_kmes().await;
    for k in ["KME_A", "KME_B"] {
        std::fs::write(lab.incoming(k).join("tiny.cor"), [9u8; 32]).unwrap();
    }
    wait_for("source_error", 5, || {
        a.events().iter().any(|e| {
            let v = serde_json::to_value(e).unwrap();
            v["kind"] == "source_error" && v["message"].as_str().unwrap().contains("too short")
        })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.pool().stats("KME_B").blocks, 0);
    assert_eq!(b.pool().stats("KME_A").blocks, 0);
    a.shutdown().await;
    b.shutdown().await;
}
