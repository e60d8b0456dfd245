//! The connectivity check of an SAE towards its KME (`qkd client check`): one TLS connection,
//! whose handshake facts are reported (TLS version, key-exchange group, cipher suite, the
//! KME's certificate), then one ETSI Status request over it that shows which SAE the KME takes
//! the caller for. Every step fails with a one-line [`ClientError`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::client::{self, ClientError, Target, TransportKind};
use crate::etsi::Status;
use crate::tls;

/// What a certificate says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSummary {
    /// Subject DN.
    pub subject: String,
    /// Subject common name (a KME's is its KME ID, an SAE's its SAE ID).
    pub cn: Option<String>,
    /// Issuer DN.
    pub issuer: String,
    /// Start of validity (RFC 2822).
    pub not_before: String,
    /// End of validity (RFC 2822).
    pub not_after: String,
    /// Subject alternative names (DNS names and IP addresses).
    pub names: Vec<String>,
}

impl CertSummary {
    /// Parses a DER certificate.
    pub fn parse(der: &[u8]) -> Option<Self> {
        use x509_parser::extensions::GeneralName;
        let (_, c) = x509_parser::parse_x509_certificate(der).ok()?;
        let cn = c
            .subject()
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .map(str::to_string);
        let time =
            |t: x509_parser::time::ASN1Time| t.to_rfc2822().unwrap_or_else(|_| t.to_string());
        let mut names = Vec::new();
        if let Ok(Some(san)) = c.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(d) => names.push(d.to_string()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => names.push(
                            std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).ok()?).to_string(),
                        ),
                        16 => names.push(
                            std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).ok()?).to_string(),
                        ),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        Some(Self {
            subject: c.subject().to_string(),
            cn,
            issuer: c.issuer().to_string(),
            not_before: time(c.validity().not_before),
            not_after: time(c.validity().not_after),
            names,
        })
    }
}

/// What the TLS handshake negotiated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// "TLSv1_3" or "TLSv1_2".
    pub version: String,
    /// The key-exchange group, e.g. "X25519MLKEM768".
    pub key_exchange: String,
    /// The cipher suite.
    pub cipher_suite: String,
    /// The KME's end-entity certificate.
    pub server_cert: CertSummary,
}

/// A KME to check, with the SAE's credentials.
#[derive(Debug)]
pub struct Probe {
    target: Target,
    config: Arc<rustls::ClientConfig>,
    /// The SAE's own certificate.
    pub client_cert: Option<CertSummary>,
    timeout: Duration,
}

/// An established connection after [`Probe::connect`].
pub struct Connected {
    target: Target,
    timeout: Duration,
    tls: tokio_rustls::client::TlsStream<TcpStream>,
    /// What the handshake negotiated.
    pub handshake: Handshake,
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected")
            .field("target", &self.target)
            .field("handshake", &self.handshake)
            .finish_non_exhaustive()
    }
}

impl Probe {
    /// A probe of the KME at `kme` (`https://host:port`) with these PEM files; each step may
    /// take up to `timeout`.
    pub fn new(
        kme: &str,
        ca: &Path,
        cert: &Path,
        key: &Path,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let (target, _) = Target::parse(kme)?;
        let (ca, chain, key) = client::load_identity(ca, cert, key)?;
        let client_cert = chain.first().and_then(|c| CertSummary::parse(c.as_ref()));
        let mut cfg = tls::client_config(&ca, chain, key, "1.2").map_err(ClientError::Tls)?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            target,
            config: Arc::new(cfg),
            client_cert,
            timeout,
        })
    }

    /// Resolves the host, connects and completes the TLS handshake.
    pub async fn connect(&self) -> Result<Connected, ClientError> {
        let t = &self.target;
        let addrs = match tokio::time::timeout(self.timeout, client::resolve(t)).await {
            Ok(r) => r?,
            Err(_) => return Err(client::timeout_error(t, self.timeout)),
        };
        let tcp = match tokio::time::timeout(self.timeout, TcpStream::connect(&addrs[..])).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(client::classify(t, &e, self.timeout)),
            Err(_) => return Err(client::timeout_error(t, self.timeout)),
        };
        let name = ServerName::try_from(t.host.clone()).map_err(|e| ClientError::Url {
            url: t.to_string(),
            reason: format!("{e}"),
        })?;
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let tls = match tokio::time::timeout(self.timeout, connector.connect(name, tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(client::classify(t, &e, self.timeout)),
            Err(_) => return Err(client::timeout_error(t, self.timeout)),
        };
        let conn = tls.get_ref().1;
        let other = |m: &str| ClientError::Transport {
            kind: TransportKind::Tls,
            message: format!("TLS with the KME at {t}: {m}"),
        };
        let server_cert = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c: &CertificateDer<'_>| CertSummary::parse(c.as_ref()))
            .ok_or_else(|| other("the KME's certificate cannot be parsed"))?;
        let handshake = Handshake {
            version: conn
                .protocol_version()
                .map_or("unknown".into(), |v| format!("{v:?}")),
            key_exchange: conn
                .negotiated_key_exchange_group()
                .map_or("unknown".into(), |g| format!("{:?}", g.name())),
            cipher_suite: conn
                .negotiated_cipher_suite()
                .map_or("unknown".into(), |s| format!("{:?}", s.suite())),
            server_cert,
        };
        Ok(Connected {
            target: t.clone(),
            timeout: self.timeout,
            tls,
            handshake,
        })
    }
}

impl Connected {
    /// GET status for `slave` on this connection. With TLS 1.3 a KME that refuses the client
    /// certificate says so only now (its alert follows the handshake).
    pub async fn status(self, slave: &str) -> Result<Status, ClientError> {
        let Self {
            target: t,
            timeout,
            tls,
            ..
        } = self;
        let fut = async {
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| client::classify(&t, &e, timeout))?;
            let mut driver = Some(tokio::spawn(conn));
            // A failure of the request is often only "canceled": the connection task holds the
            // cause (a TLS alert after the handshake, for one).
            let mut cause = async |e: hyper::Error| {
                if let Some(d) = driver.take()
                    && let Ok(Err(conn_err)) = d.await
                {
                    return client::classify(&t, &conn_err, timeout);
                }
                client::classify(&t, &e, timeout)
            };
            let req = http::Request::get(format!(
                "/api/v1/keys/{}/status",
                client::encode_segment(slave)
            ))
            .header(http::header::HOST, t.to_string())
            .body(http_body_util::Empty::<axum::body::Bytes>::new())
            .map_err(|e| ClientError::Url {
                url: t.to_string(),
                reason: e.to_string(),
            })?;
            let resp = match send.send_request(req).await {
                Ok(r) => r,
                Err(e) => return Err(cause(e).await),
            };
            let status = resp.status();
            let body = match resp.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return Err(cause(e).await),
            };
            if !status.is_success() {
                return Err(ClientError::Api {
                    status: status.as_u16(),
                    body: serde_json::from_slice(&body).ok(),
                });
            }
            serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(client::timeout_error(&t, timeout)),
        }
    }
}
