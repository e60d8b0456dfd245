//! SAEs identified by the IP address they connect from (`match = "address"`): a client without
//! a certificate from a configured address is that SAE; a client with a certificate is who its
//! certificate says (or no one), never its address; without such an SAE a client needs a
//! certificate to complete the handshake.

use crate::common::*;
use qkd_server::config::{Config, SaeConfig, SaeMatch};

/// KME_A of the lab with one more SAE, `SAE_X`, recognised by the address `from`.
fn with_address_sae(lab: &Lab, from: &str) -> Config {
    let mut a = lab.a.clone();
    a.saes.push(SaeConfig {
        id: "SAE_X".into(),
        matcher: SaeMatch::Address,
        value: Some(from.into()),
        ..SaeConfig::default()
    });
    a
}

fn url(h: &qkd_server::ServerHandle, path: &str) -> String {
    format!("https://localhost:{}/api/v1/keys/{path}", h.sae_addr.port())
}

async fn status(
    client: &reqwest::Client,
    h: &qkd_server::ServerHandle,
) -> reqwest::Result<(u16, serde_json::Value)> {
    let r = client.get(url(h, "SAE_3/status")).send().await?;
    let code = r.status().as_u16();
    Ok((code, r.json().await?))
}

#[tokio::test]
async fn a_client_without_certificate_from_its_address_is_that_sae() {
    let lab = lab(60);
    let h = start(&with_address_sae(&lab, "127.0.0.0/8")).await;
    let anonymous = raw_tls_client(&lab.path("ca.pem"), None);

    let (code, s) = status(&anonymous, &h).await.unwrap();
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["master_SAE_ID"], "SAE_X");
    let r = anonymous
        .post(url(&h, "SAE_3/enc_keys"))
        .json(&serde_json::json!({"number": 2, "size": 256}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let enc: serde_json::Value = r.json().await.unwrap();
    let keys = enc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let ids: Vec<uuid::Uuid> = keys
        .iter()
        .map(|k| k["key_ID"].as_str().unwrap().parse().unwrap())
        .collect();
    // The slave, with its certificate, gets the same keys from master SAE_X.
    let dec = lab
        .client(&h, "SAE_3")
        .dec_keys("SAE_X", &ids)
        .await
        .unwrap();
    for (k, d) in keys.iter().zip(&dec.keys) {
        assert_eq!(b64(k["key"].as_str().unwrap()), b64(&d.key));
    }

    // A client with the certificate of another SAE, from the same address, is that SAE.
    let sae1 = raw_tls_client(
        &lab.path("ca.pem"),
        Some((&lab.path("SAE_1.pem"), &lab.path("SAE_1.key"))),
    );
    let (code, s) = status(&sae1, &h).await.unwrap();
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["master_SAE_ID"], "SAE_1");

    // A valid certificate that names no SAE of this KME does not fall back to the address.
    let kme_b = raw_tls_client(
        &lab.path("ca.pem"),
        Some((&lab.path("KME_B.pem"), &lab.path("KME_B.key"))),
    );
    let (code, s) = status(&kme_b, &h).await.unwrap();
    assert_eq!(code, 401, "{s}");
    assert!(s["message"].is_string(), "{s}");
    h.shutdown().await;
}

#[tokio::test]
async fn a_client_without_certificate_from_another_address_gets_401() {
    let lab = lab(60);
    // A documentation address (RFC 5737): nothing here connects from it.
    let h = start(&with_address_sae(&lab, "192.0.2.7")).await;
    let anonymous = raw_tls_client(&lab.path("ca.pem"), None);
    let (code, s) = status(&anonymous, &h).await.unwrap();
    assert_eq!(code, 401, "{s}");
    assert!(s["message"].is_string(), "{s}");
    h.shutdown().await;
}

#[tokio::test]
async fn without_an_address_sae_a_client_needs_a_certificate() {
    let lab = lab(60);
    let h = start(&lab.a).await;
    let anonymous = raw_tls_client(&lab.path("ca.pem"), None);
    assert!(
        status(&anonymous, &h).await.is_err(),
        "the handshake must fail without a client certificate"
    );
    let (code, _) = status(
        &raw_tls_client(
            &lab.path("ca.pem"),
            Some((&lab.path("SAE_1.pem"), &lab.path("SAE_1.key"))),
        ),
        &h,
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    h.shutdown().await;
}

#[test]
fn an_address_value_must_be_an_ip_address_or_cidr_block() {
    let lab = lab(60);
    for (bad, says) in [
        ("10.1.2.0/33", "prefix length"),
        ("kme.example", "not an IP address"),
    ] {
        let e = with_address_sae(&lab, bad)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("SAE SAE_X") && e.contains(says), "{bad}: {e}");
    }
    let mut missing = with_address_sae(&lab, "10.1.2.3");
    missing.saes.last_mut().unwrap().value = None;
    let e = missing.validate().unwrap_err().to_string();
    assert!(e.contains("match needs value"), "{e}");
    assert!(with_address_sae(&lab, "fd00::/8").validate().is_ok());
}
