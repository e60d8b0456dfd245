//! Mutual TLS: rustls configurations (aws-lc-rs provider, X25519MLKEM768 offered first), an
//! axum-server acceptor that parses the client certificate once per connection, and the
//! mapping from certificate to SAE or peer KME identity.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;

use crate::cidr::Cidr;
use crate::config::{SaeConfig, SaeMatch};
use crate::limits::{ConnectionLimits, IdleTimeout};

/// Errors building TLS configurations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration rejected: {0}")]
    Rustls(String),
}

/// The crypto provider: aws-lc-rs, whose default key-exchange order (with the
/// `prefer-post-quantum` feature) starts with X25519MLKEM768.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |m: String| TlsError::Pem {
        path: path.display().to_string(),
        message: m,
    };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err(
            "no certificate found; expected PEM \"CERTIFICATE\" blocks".into(),
        ));
    }
    Ok(certs)
}

/// Reads the private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem {
        path: path.display().to_string(),
        message: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no private key found; expected a PEM \"PRIVATE KEY\" block".into()
            }
            other => other.to_string(),
        },
    })
}

fn roots(ca: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for c in ca {
        store
            .add(c.clone())
            .map_err(|e| TlsError::Rustls(format!("CA certificate: {e}")))?;
    }
    Ok(Arc::new(store))
}

fn versions(min: &str) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    if min == "1.3" {
        TLS13_ONLY
    } else {
        rustls::ALL_VERSIONS
    }
}

/// Reads every CRL of the PEM files `paths`.
pub fn load_crls(
    paths: &[std::path::PathBuf],
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let mut out = Vec::new();
    for path in paths {
        let err = |m: String| TlsError::Pem {
            path: path.display().to_string(),
            message: m,
        };
        let crls: Vec<_> = CertificateRevocationListDer::pem_file_iter(path)
            .map_err(|e| err(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| err(e.to_string()))?;
        if crls.is_empty() {
            return Err(err("no CRL found; expected PEM \"X509 CRL\" blocks".into()));
        }
        out.extend(crls);
    }
    Ok(out)
}

/// Whether a listener accepts TLS clients that present no certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every client presents a certificate issued by the CA (the peer listener; the SAE
    /// listener unless an SAE is identified by its address).
    Required,
    /// A client may present no certificate (then its address identifies it, or no one); one
    /// that presents a certificate is still verified against the CA and the CRLs.
    Optional,
}

/// A server configuration that verifies client certificates against `ca` and `crls`, and
/// requires one unless `auth` is [`ClientAuth::Optional`].
pub fn server_config(
    ca: &[CertificateDer<'static>],
    crls: &[CertificateRevocationListDer<'static>],
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    min_version: &str,
    auth: ClientAuth,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider.clone())
        .with_crls(crls.iter().cloned())
        .only_check_end_entity_revocation();
    if auth == ClientAuth::Optional {
        builder = builder.allow_unauthenticated();
    }
    let verifier = builder
        .build()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(min_version))
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A client configuration presenting `chain`/`key` and trusting only `ca`.
pub fn client_config(
    ca: &[CertificateDer<'static>],
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    min_version: &str,
) -> Result<ClientConfig, TlsError> {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(min_version))
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(chain, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))
}

/// A client configuration towards the peer KME `peer`: as [`client_config`], and the server's
/// certificate must also name `peer` (subject CN = its KME ID). Another KME's certificate from
/// the same CA is refused during the handshake.
pub fn peer_client_config(
    ca: &[CertificateDer<'static>],
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    min_version: &str,
    peer: &str,
) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let inner =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots(ca)?, provider.clone())
            .build()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let verifier = Arc::new(PeerNameVerifier {
        inner,
        peer: peer.to_string(),
    });
    ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(min_version))
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))
}

/// The web PKI checks, then: the end-entity certificate's CN is the expected peer KME ID.
#[derive(Debug)]
struct PeerNameVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    peer: String,
}

impl rustls::client::danger::ServerCertVerifier for PeerNameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let cn = parse_identity(end_entity.as_ref()).and_then(|i| i.cn);
        if cn.as_deref() != Some(self.peer.as_str()) {
            return Err(rustls::Error::General(format!(
                "the server's certificate names {cn:?}, not the configured peer KME {:?}",
                self.peer
            )));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// What the server learnt from a client certificate (parsed once per connection).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertIdentity {
    /// Subject common name.
    pub cn: Option<String>,
    /// Serial number, lower-case hex without separators.
    pub serial: String,
    /// Issuer DN as x509-parser prints it.
    pub issuer: String,
    /// SHA-256 of the SubjectPublicKeyInfo, lower-case hex.
    pub spki_sha256: String,
}

/// The authenticated caller of one connection.
#[derive(Clone, Debug, Default)]
pub struct Peer {
    /// Certificate facts (None when the client presented none, or it could not be parsed).
    pub cert: Option<CertIdentity>,
    /// The SAE ID (SAE listener) or KME ID (peer listener) it maps to, if any.
    pub id: Option<String>,
}

/// Parses a DER certificate into the facts used for identification.
pub fn parse_identity(der: &[u8]) -> Option<CertIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_string);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.public_key().raw);
    Some(CertIdentity {
        cn,
        serial: normalize_hex(&cert.raw_serial_as_string()),
        issuer: cert.issuer().to_string(),
        spki_sha256: hex(digest.as_ref()),
    })
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn normalize_hex(s: &str) -> String {
    let t: String = s
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    let t = t.trim_start_matches('0');
    if t.is_empty() {
        "0".into()
    } else {
        t.to_string()
    }
}

/// Maps a certificate (or, for a client without one, its address) to an ID.
pub trait Resolver: Send + Sync + 'static {
    /// The ID for these certificate facts, if any.
    fn resolve(&self, cert: &CertIdentity) -> Option<String>;
    /// The ID of a client that presented no certificate, from the address it connects from
    /// (only SAEs configured with `match = "address"`; none by default).
    fn resolve_address(&self, _ip: IpAddr) -> Option<String> {
        None
    }
}

/// SAE identification per [`SaeConfig`].
#[derive(Debug)]
pub struct SaeResolver(pub Vec<SaeConfig>);

impl Resolver for SaeResolver {
    fn resolve(&self, c: &CertIdentity) -> Option<String> {
        self.0
            .iter()
            .find(|s| match s.matcher {
                SaeMatch::Cn => c.cn.as_deref() == Some(s.value.as_deref().unwrap_or(&s.id)),
                SaeMatch::Serial => {
                    s.value.as_deref().map(normalize_hex).as_deref() == Some(c.serial.as_str())
                        && s.issuer.as_deref() == Some(c.issuer.as_str())
                }
                SaeMatch::Fingerprint => s
                    .value
                    .as_deref()
                    .is_some_and(|v| normalize_hex(v) == normalize_hex(&c.spki_sha256)),
                // Never by a certificate: a certificate that names no SAE does not fall back
                // to the address it comes from.
                SaeMatch::Address => false,
            })
            .map(|s| s.id.clone())
    }

    fn resolve_address(&self, ip: IpAddr) -> Option<String> {
        self.0
            .iter()
            .find(|s| {
                s.matcher == SaeMatch::Address
                    && s.value
                        .as_deref()
                        .and_then(|v| Cidr::parse(v).ok())
                        .is_some_and(|c| c.contains(ip))
            })
            .map(|s| s.id.clone())
    }
}

/// Peer KMEs are recognised by CN = KME ID.
#[derive(Debug)]
pub struct KmeResolver(pub Vec<String>);

impl Resolver for KmeResolver {
    fn resolve(&self, c: &CertIdentity) -> Option<String> {
        let cn = c.cn.as_deref()?;
        self.0.iter().find(|k| k.as_str() == cn).cloned()
    }
}

/// An axum-server acceptor: the listener's connection caps, the TLS handshake (with timeout),
/// TCP_NODELAY, the per-client connection cap once the certificate says who it is, an idle
/// timeout, and an `Arc<Peer>` inserted into every request of the connection.
#[derive(Clone)]
pub struct MtlsAcceptor {
    inner: tokio_rustls::TlsAcceptor,
    resolver: Arc<dyn Resolver>,
    limits: Arc<ConnectionLimits>,
}

impl std::fmt::Debug for MtlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtlsAcceptor").finish_non_exhaustive()
    }
}

impl MtlsAcceptor {
    /// New acceptor.
    pub fn new(
        cfg: Arc<ServerConfig>,
        resolver: Arc<dyn Resolver>,
        limits: Arc<ConnectionLimits>,
    ) -> Self {
        Self {
            inner: tokio_rustls::TlsAcceptor::from(cfg),
            resolver,
            limits,
        }
    }
}

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S: Send + 'static> axum_server::accept::Accept<TcpStream, S> for MtlsAcceptor {
    type Stream = IdleTimeout<tokio_rustls::server::TlsStream<TcpStream>>;
    type Service = WithPeer<S>;
    type Future = BoxFut<io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let acceptor = self.inner.clone();
        let resolver = self.resolver.clone();
        let limits = self.limits.clone();
        Box::pin(async move {
            let admission = limits.admit()?;
            let _ = stream.set_nodelay(true);
            let remote = stream.peer_addr().ok();
            let tls = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream))
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
            // A client that presented a certificate is identified by it alone (even when it
            // maps to no one, or cannot be parsed); only one without a certificate by its
            // address.
            let (cert, id) = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                Some(der) => {
                    let cert = parse_identity(der.as_ref());
                    let id = cert.as_ref().and_then(|c| resolver.resolve(c));
                    (cert, id)
                }
                None => (None, remote.and_then(|a| resolver.resolve_address(a.ip()))),
            };
            let admission = admission.identify(id.as_deref())?;
            Ok((
                IdleTimeout::new(tls, admission),
                WithPeer {
                    inner: service,
                    peer: Arc::new(Peer { cert, id }),
                },
            ))
        })
    }
}

/// The acceptor of the plain-HTTP monitor listener: connection caps and the idle timeout.
#[derive(Clone, Debug)]
pub struct PlainAcceptor(pub Arc<ConnectionLimits>);

impl<S: Send + 'static> axum_server::accept::Accept<TcpStream, S> for PlainAcceptor {
    type Stream = IdleTimeout<TcpStream>;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        std::future::ready(
            self.0
                .admit()
                .and_then(|a| a.identify(None))
                .map(|a| (IdleTimeout::new(stream, a), service)),
        )
    }
}

/// A service adding the connection's [`Peer`] to each request's extensions.
#[derive(Clone, Debug)]
pub struct WithPeer<S> {
    inner: S,
    peer: Arc<Peer>,
}

impl<S, B> tower::Service<http::Request<B>> for WithPeer<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        req.extensions_mut().insert(self.peer.clone());
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sae_identity_by_cn_serial_and_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        crate::pki::init(
            dir.path(),
            &["K".into()],
            &[("SAE_X".into(), "K".into())],
            9000,
            &[],
        )
        .unwrap();
        let der = load_certs(&dir.path().join("SAE_X.pem")).unwrap().remove(0);
        let id = parse_identity(der.as_ref()).unwrap();
        assert_eq!(id.cn.as_deref(), Some("SAE_X"));
        assert_eq!(id.issuer, "CN=qkd dev CA, O=qkd dev PKI");
        assert_eq!(id.spki_sha256.len(), 64);
        let sae = |matcher, value: Option<String>, issuer: Option<String>| SaeConfig {
            id: "ID".into(),
            matcher,
            value,
            issuer,
            ..SaeConfig::default()
        };
        let yes = |s: SaeConfig| SaeResolver(vec![s]).resolve(&id) == Some("ID".into());
        assert!(yes(sae(SaeMatch::Cn, Some("SAE_X".into()), None)));
        assert!(
            !yes(sae(SaeMatch::Cn, None, None)),
            "cn defaults to the SAE ID"
        );
        // Serial with colons and upper case, and the issuer.
        let colons: Vec<String> = id
            .serial
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).to_uppercase())
            .collect();
        let serial = colons.join(":");
        assert!(yes(sae(
            SaeMatch::Serial,
            Some(serial.clone()),
            Some(id.issuer.clone())
        )));
        assert!(!yes(sae(
            SaeMatch::Serial,
            Some(serial),
            Some("CN=other".into())
        )));
        assert!(yes(sae(
            SaeMatch::Fingerprint,
            Some(id.spki_sha256.to_uppercase()),
            None
        )));
        assert!(!yes(sae(
            SaeMatch::Fingerprint,
            Some("00".repeat(32)),
            None
        )));
        assert_eq!(
            KmeResolver(vec!["SAE_X".into()]).resolve(&id),
            Some("SAE_X".into())
        );
    }
}
