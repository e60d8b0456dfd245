//! An ETSI GS QKD 014 client over mutual TLS (reqwest + rustls), as an encryptor would call a KME.
//!
//! Every failure is a [`ClientError`] whose message is one line saying what went wrong and what
//! to check: transport failures are classified ([`TransportKind`]) from the error's source
//! chain (rustls errors and alerts, I/O error kinds, timeouts), not from debug text.

use std::error::Error as StdError;
use std::path::Path;
use std::time::Duration;

use uuid::Uuid;

use crate::etsi::{ErrorBody, KeyContainer, KeyIdEntry, KeyIds, KeyRequest, Status};
use crate::tls;

/// How long a request may take unless the caller says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What kind of transport failure a [`ClientError::Transport`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportKind {
    /// Nothing listens at the address.
    Refused,
    /// The host name does not resolve.
    Dns,
    /// No answer in time.
    Timeout,
    /// The KME's certificate does not chain to the CA the client trusts.
    ServerCertUntrusted,
    /// The KME's certificate does not name the host the client connected to.
    HostnameMismatch,
    /// The KME's certificate is expired or not yet valid.
    ServerCertExpired,
    /// The KME refused the client's certificate (a TLS alert).
    ClientCertRejected,
    /// The KME closed the connection before answering.
    ConnectionClosed,
    /// Any other TLS failure.
    Tls,
    /// Anything else.
    Other,
}

/// Errors of client calls.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A certificate or key file is unusable.
    #[error("{what} {path}: {message}")]
    File {
        /// Which file ("CA certificate", "client certificate", "client key").
        what: &'static str,
        /// Its path.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// Certificates or keys that rustls refuses together.
    #[error(transparent)]
    Tls(tls::TlsError),
    /// The KME URL is unusable.
    #[error("KME URL {url:?}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The KME could not be reached or the connection failed; the message says what to check.
    #[error("{message}")]
    Transport {
        /// The kind of failure.
        kind: TransportKind,
        /// One line: what happened and what to check.
        message: String,
    },
    /// The KME answered with an error status.
    #[error(
        "the KME answered {status}{}: {}{}",
        reason(*status),
        .body.as_ref().map_or("(no Error body)", |b| b.message.as_str()),
        details(.body.as_ref())
    )]
    Api {
        /// HTTP status.
        status: u16,
        /// The Error body, if it parsed.
        body: Option<ErrorBody>,
    },
    /// A 200 whose body is not what the standard says.
    #[error("the KME answered 200 with an unexpected body: {0}")]
    Decode(String),
}

fn reason(status: u16) -> String {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .map_or(String::new(), |r| format!(" {r}"))
}

fn details(body: Option<&ErrorBody>) -> String {
    match body.and_then(|b| b.details.as_ref()) {
        Some(d) if !d.is_empty() => {
            format!(" {}", serde_json::to_string(d).unwrap_or_default())
        }
        _ => String::new(),
    }
}

impl ClientError {
    /// The transport kind, for a [`ClientError::Transport`].
    pub fn transport_kind(&self) -> Option<TransportKind> {
        match self {
            Self::Transport { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    fn file(what: &'static str) -> impl Fn(tls::TlsError) -> Self {
        move |e| match e {
            tls::TlsError::Pem { path, message } => Self::File {
                what,
                path,
                message,
            },
            other => Self::Tls(other),
        }
    }
}

/// Reads the CA, the client certificate chain and its key (errors name the file).
pub fn load_identity(
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<
    (
        Vec<rustls::pki_types::CertificateDer<'static>>,
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
    ClientError,
> {
    Ok((
        tls::load_certs(ca).map_err(ClientError::file("CA certificate"))?,
        tls::load_certs(cert).map_err(ClientError::file("client certificate"))?,
        tls::load_key(key).map_err(ClientError::file("client key"))?,
    ))
}

/// The host and port of a KME URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Host name or IP address (without brackets).
    pub host: String,
    /// Port (443 when the URL names none).
    pub port: u16,
    /// Whether `host` is an IP address.
    pub is_ip: bool,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Target {
    /// Parses an `https://host[:port]` URL.
    pub fn parse(kme: &str) -> Result<(Self, reqwest::Url), ClientError> {
        let bad = |reason: String| ClientError::Url {
            url: kme.to_string(),
            reason,
        };
        let url = reqwest::Url::parse(kme)
            .map_err(|e| bad(format!("{e}; expected https://HOST:PORT")))?;
        match url.scheme() {
            "https" => {}
            "http" => {
                return Err(bad(
                    "the KME speaks HTTPS only (mutual TLS): use https://".into()
                ));
            }
            other => return Err(bad(format!("scheme {other}: expected https://HOST:PORT"))),
        }
        let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
            return Err(bad("no host: expected https://HOST:PORT".into()));
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let is_ip = host.parse::<std::net::IpAddr>().is_ok();
        let port = url.port_or_known_default().unwrap_or(443);
        Ok((Self { host, port, is_ip }, url))
    }
}

/// The errors of a source chain, with the inner error of every `io::Error` (whose `source()`
/// skips it).
fn chain<'a>(err: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut out = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        out.push(e);
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => e.source(),
        };
    }
    out
}

/// One line for a failure talking to `target`, from the error's source chain.
pub(crate) fn classify(
    target: &Target,
    err: &(dyn StdError + 'static),
    timeout: Duration,
) -> ClientError {
    use rustls::{AlertDescription as A, CertificateError as C};
    let t = |kind, message: String| ClientError::Transport { kind, message };
    let errors = chain(err);
    for e in &errors {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return match r {
                rustls::Error::InvalidCertificate(c) => match c {
                    C::UnknownIssuer | C::BadSignature | C::UnknownRevocationStatus => t(
                        TransportKind::ServerCertUntrusted,
                        format!(
                            "the KME's certificate at {target} is not trusted by the CA \
                             certificate given (--ca): wrong CA file, or a KME of another PKI? \
                             ({r})"
                        ),
                    ),
                    C::NotValidForName | C::NotValidForNameContext { .. } => t(
                        TransportKind::HostnameMismatch,
                        format!(
                            "the KME's certificate does not name {}: connect with a name it \
                             lists ({c})",
                            target.host
                        ),
                    ),
                    C::Expired
                    | C::ExpiredContext { .. }
                    | C::NotValidYet
                    | C::NotValidYetContext { .. } => t(
                        TransportKind::ServerCertExpired,
                        format!(
                            "the KME's certificate at {target} is outside its validity period: \
                             renew it, or check this machine's clock ({c})"
                        ),
                    ),
                    other => t(
                        TransportKind::Tls,
                        format!("the KME's certificate at {target} was refused: {other}"),
                    ),
                },
                rustls::Error::AlertReceived(a) => match a {
                    A::CertificateRevoked => t(
                        TransportKind::ClientCertRejected,
                        format!(
                            "the KME at {target} rejected our client certificate as revoked \
                             (TLS alert CertificateRevoked): its CRL lists the SAE certificate; \
                             issue a new one"
                        ),
                    ),
                    A::CertificateExpired => t(
                        TransportKind::ClientCertRejected,
                        format!(
                            "the KME at {target} rejected our client certificate as expired \
                             (TLS alert CertificateExpired): renew the SAE certificate, or check \
                             the clocks"
                        ),
                    ),
                    A::UnknownCA
                    | A::DecryptError
                    | A::BadCertificate
                    | A::UnsupportedCertificate
                    | A::CertificateUnknown
                    | A::AccessDenied
                    | A::CertificateRequired => t(
                        TransportKind::ClientCertRejected,
                        format!(
                            "the KME at {target} rejected our client certificate (TLS alert \
                             {a:?}): is the SAE certificate (--cert) issued by the KME's CA, and \
                             --key its private key?"
                        ),
                    ),
                    A::ProtocolVersion | A::HandshakeFailure | A::InsufficientSecurity => t(
                        TransportKind::Tls,
                        format!(
                            "the KME at {target} refused the TLS handshake (TLS alert {a:?}): no \
                             TLS version or cipher suite in common (its tls.min_version?)"
                        ),
                    ),
                    other => t(
                        TransportKind::Tls,
                        format!("the KME at {target} ended TLS with alert {other:?}"),
                    ),
                },
                other => t(
                    TransportKind::Tls,
                    format!("TLS with the KME at {target} failed: {other}"),
                ),
            };
        }
    }
    let timed_out = errors.iter().any(|e| {
        e.downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_timeout)
            || e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    });
    if timed_out {
        return timeout_error(target, timeout);
    }
    for e in &errors {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            match io.kind() {
                K::ConnectionRefused => return refused(target),
                K::ConnectionReset | K::ConnectionAborted | K::UnexpectedEof | K::BrokenPipe => {
                    return closed(target);
                }
                _ => {}
            }
        }
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_incomplete_message() || h.is_closed() || h.is_canceled())
        {
            return closed(target);
        }
    }
    // The innermost message only: each layer repeats the one below it.
    let innermost = errors.last().map_or(String::new(), |e| e.to_string());
    t(
        TransportKind::Other,
        format!("request to the KME at {target} failed: {innermost}"),
    )
}

pub(crate) fn refused(target: &Target) -> ClientError {
    ClientError::Transport {
        kind: TransportKind::Refused,
        message: format!(
            "connection refused by {target}: is the KME running, and is {} its SAE port \
             (`listen` in its config)?",
            target.port
        ),
    }
}

pub(crate) fn closed(target: &Target) -> ClientError {
    ClientError::Transport {
        kind: TransportKind::ConnectionClosed,
        message: format!(
            "the KME at {target} closed the connection before answering: it may refuse our \
             client certificate or be at its connection limits (see its log)"
        ),
    }
}

pub(crate) fn timeout_error(target: &Target, timeout: Duration) -> ClientError {
    ClientError::Transport {
        kind: TransportKind::Timeout,
        message: format!(
            "no answer from {target} within {} s: is this the KME's SAE port, and is the KME \
             reachable and not overloaded?",
            timeout.as_secs_f64()
        ),
    }
}

/// Resolves the target's host; a failure is a [`TransportKind::Dns`] error.
pub(crate) async fn resolve(target: &Target) -> Result<Vec<std::net::SocketAddr>, ClientError> {
    let dns = |detail: String| ClientError::Transport {
        kind: TransportKind::Dns,
        message: format!(
            "cannot resolve host {:?}: check the host name in the KME URL ({detail})",
            target.host
        ),
    };
    match tokio::net::lookup_host((target.host.as_str(), target.port)).await {
        Ok(a) => {
            let addrs: Vec<_> = a.collect();
            if addrs.is_empty() {
                Err(dns("no address".into()))
            } else {
                Ok(addrs)
            }
        }
        Err(e) => Err(dns(e.to_string())),
    }
}

/// An ETSI 014 client bound to one KME.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    target: Target,
    timeout: Duration,
    http: reqwest::Client,
}

impl Client {
    /// A client for KME base URL `kme` (`https://host:port`), presenting the PEM certificate
    /// `cert` with key `key`, trusting only the PEM CA `ca`; requests time out after
    /// [`DEFAULT_TIMEOUT`].
    pub fn new(kme: &str, ca: &Path, cert: &Path, key: &Path) -> Result<Self, ClientError> {
        Self::with_timeout(kme, ca, cert, key, DEFAULT_TIMEOUT)
    }

    /// Like [`Client::new`] with another request timeout.
    pub fn with_timeout(
        kme: &str,
        ca: &Path,
        cert: &Path,
        key: &Path,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let (ca, chain, key) = load_identity(ca, cert, key)?;
        Self::build(kme, &ca, chain, key, timeout)
    }

    /// Like [`Client::new`] with certificates already loaded.
    pub fn from_der(
        kme: &str,
        ca: &[rustls::pki_types::CertificateDer<'static>],
        chain: Vec<rustls::pki_types::CertificateDer<'static>>,
        key: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> Result<Self, ClientError> {
        Self::build(kme, ca, chain, key, DEFAULT_TIMEOUT)
    }

    fn build(
        kme: &str,
        ca: &[rustls::pki_types::CertificateDer<'static>],
        chain: Vec<rustls::pki_types::CertificateDer<'static>>,
        key: rustls::pki_types::PrivateKeyDer<'static>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let (target, _) = Target::parse(kme)?;
        let cfg = tls::client_config(ca, chain, key, "1.2").map_err(ClientError::Tls)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(cfg)
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| classify(&target, &e, timeout))?;
        Ok(Self {
            base: kme.trim_end_matches('/').to_string(),
            target,
            timeout,
            http,
        })
    }

    fn url(&self, sae: &str, what: &str) -> String {
        format!("{}/api/v1/keys/{}/{what}", self.base, encode_segment(sae))
    }

    /// A transport error as one line; a connection failure to a name that does not resolve
    /// is reported as such.
    async fn transport(&self, e: reqwest::Error) -> ClientError {
        if e.is_connect()
            && !self.target.is_ip
            && let Err(dns) = resolve(&self.target).await
        {
            return dns;
        }
        classify(&self.target, &e, self.timeout)
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Err(self.transport(e).await),
        };
        let status = resp.status();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return Err(self.transport(e).await),
        };
        if !status.is_success() {
            return Err(ClientError::Api {
                status: status.as_u16(),
                body: serde_json::from_slice(&bytes).ok(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// GET status for a slave SAE.
    pub async fn status(&self, slave: &str) -> Result<Status, ClientError> {
        self.send(self.http.get(self.url(slave, "status"))).await
    }

    /// POST enc_keys for a slave SAE.
    pub async fn enc_keys(
        &self,
        slave: &str,
        req: &KeyRequest,
    ) -> Result<KeyContainer, ClientError> {
        self.send(self.http.post(self.url(slave, "enc_keys")).json(req))
            .await
    }

    /// GET enc_keys with `number` and `size` query parameters.
    pub async fn enc_keys_get(
        &self,
        slave: &str,
        number: Option<u64>,
        size: Option<u64>,
    ) -> Result<KeyContainer, ClientError> {
        let mut q = Vec::new();
        if let Some(n) = number {
            q.push(("number", n));
        }
        if let Some(s) = size {
            q.push(("size", s));
        }
        let qs: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut url = self.url(slave, "enc_keys");
        if !qs.is_empty() {
            url = format!("{url}?{}", qs.join("&"));
        }
        self.send(self.http.get(url)).await
    }

    /// POST dec_keys: the keys with these IDs, produced for master SAE `master`.
    pub async fn dec_keys(&self, master: &str, ids: &[Uuid]) -> Result<KeyContainer, ClientError> {
        let body = KeyIds {
            key_IDs: ids
                .iter()
                .map(|i| KeyIdEntry {
                    key_ID: i.to_string(),
                    key_ID_extension: None,
                })
                .collect(),
            key_IDs_extension: None,
        };
        self.send(self.http.post(self.url(master, "dec_keys")).json(&body))
            .await
    }

    /// GET dec_keys?key_ID=...: one key.
    pub async fn dec_key_get(&self, master: &str, id: &str) -> Result<KeyContainer, ClientError> {
        let url = format!(
            "{}?key_ID={}",
            self.url(master, "dec_keys"),
            encode_segment(id)
        );
        self.send(self.http.get(url)).await
    }
}

/// Percent-encodes a path segment (everything but unreserved characters).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_https_with_a_host() {
        let (t, _) = Target::parse("https://localhost:8443/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.is_ip),
            ("localhost", 8443, false)
        );
        let (t, _) = Target::parse("https://[::1]:9").unwrap();
        assert_eq!((t.host.as_str(), t.is_ip), ("::1", true));
        assert_eq!(t.to_string(), "[::1]:9");
        assert_eq!(Target::parse("https://10.0.0.1").unwrap().0.port, 443);
        for (url, says) in [
            ("http://localhost:8443", "use https://"),
            ("ftp://x", "scheme ftp"),
            ("localhost:8443", "expected https://"),
            ("not a url", "expected https://"),
        ] {
            let e = Target::parse(url).unwrap_err().to_string();
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn io_errors_are_classified_by_kind_and_inner_rustls_error() {
        let t = Target::parse("https://kme:1").unwrap().0;
        let d = Duration::from_secs(3);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = classify(&t, &refused, d);
        assert_eq!(e.transport_kind(), Some(TransportKind::Refused));
        assert!(e.to_string().contains("is the KME running"), "{e}");
        // tokio-rustls wraps rustls errors in io::Error, whose source() skips them.
        let alert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::DecryptError),
        );
        let e = classify(&t, &alert, d);
        assert_eq!(e.transport_kind(), Some(TransportKind::ClientCertRejected));
        let untrusted = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let e = classify(&t, &untrusted, d);
        assert_eq!(e.transport_kind(), Some(TransportKind::ServerCertUntrusted));
        let e = classify(&t, &std::io::Error::from(std::io::ErrorKind::TimedOut), d);
        assert_eq!(e.transport_kind(), Some(TransportKind::Timeout));
        assert!(e.to_string().contains("within 3 s"), "{e}");
    }

    #[test]
    fn api_errors_name_status_message_and_details() {
        let body: ErrorBody = serde_json::from_value(serde_json::json!({
            "message": "insufficient key material: no key was delivered",
            "details": [{"requested_bits": 512}]
        }))
        .unwrap();
        let e = ClientError::Api {
            status: 503,
            body: Some(body),
        };
        assert_eq!(
            e.to_string(),
            "the KME answered 503 Service Unavailable: insufficient key material: no key was \
             delivered [{\"requested_bits\":512}]"
        );
    }
}
