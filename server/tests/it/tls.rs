//! TLS parameters of the SAE listener: TLS 1.3 with X25519MLKEM768 when the client offers it,
//! TLS 1.2 accepted by default and refused when `min_version = "1.3"`.

use std::sync::Arc;

use crate::common::*;
use rustls::pki_types::ServerName;

async fn handshake(
    lab: &Lab,
    port: u16,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> std::io::Result<(rustls::ProtocolVersion, Option<rustls::NamedGroup>)> {
    let ca = qkd_server::tls::load_certs(&lab.path("ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in ca {
        roots.add(c).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(qkd_server::tls::provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            qkd_server::tls::load_certs(&lab.path("SAE_1.pem")).unwrap(),
            qkd_server::tls::load_key(&lab.path("SAE_1.key")).unwrap(),
        )
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    let conn = tls.get_ref().1;
    Ok((
        conn.protocol_version().unwrap(),
        conn.negotiated_key_exchange_group().map(|g| g.name()),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_post_quantum_first_and_tls12_policy() {
    let mut lab = lab(60);
    let a = start(&lab.a).await;
    let (v, g) = handshake(&lab, a.sae_addr.port(), &[&rustls::version::TLS13])
        .await
        .unwrap();
    assert_eq!(v, rustls::ProtocolVersion::TLSv1_3);
    assert_eq!(g, Some(rustls::NamedGroup::X25519MLKEM768));
    let (v, _) = handshake(&lab, a.sae_addr.port(), &[&rustls::version::TLS12])
        .await
        .unwrap();
    assert_eq!(v, rustls::ProtocolVersion::TLSv1_2);
    a.shutdown().await;
    // TLS 1.3 minimum: a TLS 1.2-only client is refused.
    lab.a.tls.min_version = "1.3".into();
    let a = start(&lab.a).await;
    assert!(
        handshake(&lab, a.sae_addr.port(), &[&rustls::version::TLS12])
            .await
            .is_err()
    );
    assert!(
        handshake(&lab, a.sae_addr.port(), &[&rustls::version::TLS13])
            .await
            .is_ok()
    );
    a.shutdown().await;
}

/// Towards a peer KME, a certificate from the right CA is not enough: it must name the peer.
/// (Before, the peer clients took any certificate of the CA, e.g. another KME's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_clients_refuse_a_certificate_for_another_kme() {
    let lab = lab(60);
    let a = start(&lab.a).await;
    let dial = |peer: &'static str| {
        let ca = qkd_server::tls::load_certs(&lab.path("ca.pem")).unwrap();
        let cfg = qkd_server::tls::peer_client_config(
            &ca,
            qkd_server::tls::load_certs(&lab.path("KME_B.pem")).unwrap(),
            qkd_server::tls::load_key(&lab.path("KME_B.key")).unwrap(),
            "1.2",
            peer,
        )
        .unwrap();
        let port = a.peer_addr.unwrap().port();
        async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
        }
    };
    // KME_A's listener presents KME_A's certificate.
    let err = dial("KME_C").await.unwrap_err();
    assert!(
        err.to_string().contains("not the configured peer KME"),
        "{err}"
    );
    assert!(dial("KME_A").await.is_ok());
    a.shutdown().await;
}

/// A certificate on the configured CRL is refused; the others are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_sae_certificate_is_refused() {
    let mut lab = lab(60);
    let crl = lab.path("crl.pem");
    let n = qkd_server::pki::revoke(
        &lab.path("ca.pem"),
        &lab.path("ca.key"),
        &[lab.path("SAE_3.pem")],
        30,
        &crl,
    )
    .unwrap();
    assert_eq!(n, 1);
    lab.a.tls.crl = vec![crl];
    let a = start(&lab.a).await;
    assert!(lab.client(&a, "SAE_1").status("SAE_3").await.is_ok());
    let err = lab.client(&a, "SAE_3").status("SAE_1").await.unwrap_err();
    assert_eq!(
        err.transport_kind(),
        Some(qkd_server::client::TransportKind::ClientCertRejected),
        "{err}"
    );
    assert!(err.to_string().contains("revoked"), "{err}");
    a.shutdown().await;
}
