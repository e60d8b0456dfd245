//! An ETSI GS QKD 014 client over mutual TLS (reqwest + rustls), as an encryptor would call a KME.

use std::path::Path;
use std::time::Duration;

use uuid::Uuid;

use crate::etsi::{ErrorBody, KeyContainer, KeyIdEntry, KeyIds, KeyRequest, Status};
use crate::tls;

/// Errors of client calls.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Certificates or keys unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Connection or protocol failure (including a refused handshake).
    #[error("request to KME failed: {0}")]
    Transport(String),
    /// The KME answered with an error status.
    #[error("KME answered {status}: {}", .body.as_ref().map_or("(no Error body)", |b| b.message.as_str()))]
    Api {
        /// HTTP status.
        status: u16,
        /// The Error body, if it parsed.
        body: Option<ErrorBody>,
    },
    /// A 200 whose body is not what the standard says.
    #[error("KME answered 200 with an unexpected body: {0}")]
    Decode(String),
}

/// An ETSI 014 client bound to one KME.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// A client for KME base URL `kme` (e.g. `https://127.0.0.1:8443`), presenting the PEM
    /// certificate `cert` with key `key`, trusting only the PEM CA `ca`.
    pub fn new(kme: &str, ca: &Path, cert: &Path, key: &Path) -> Result<Self, ClientError> {
        let ca = tls::load_certs(ca)?;
        let chain = tls::load_certs(cert)?;
        let key = tls::load_key(key)?;
        Self::from_der(kme, &ca, chain, key)
    }

    /// Like [`Client::new`] with certificates already loaded.
    pub fn from_der(
        kme: &str,
        ca: &[rustls::pki_types::CertificateDer<'static>],
        chain: Vec<rustls::pki_types::CertificateDer<'static>>,
        key: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> Result<Self, ClientError> {
        let cfg = tls::client_config(ca, chain, key, "1.2")?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(cfg)
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        Ok(Self {
            base: kme.trim_end_matches('/').to_string(),
            http,
        })
    }

    fn url(&self, sae: &str, what: &str) -> String {
        format!("{}/api/v1/keys/{}/{what}", self.base, encode_segment(sae))
    }

    async fn read<T: serde::de::DeserializeOwned>(
        resp: reqwest::Response,
    ) -> Result<T, ClientError> {
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
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
        let r = self.http.get(self.url(slave, "status")).send().await;
        Self::read(r.map_err(|e| ClientError::Transport(format!("{e:?}")))?).await
    }

    /// POST enc_keys for a slave SAE.
    pub async fn enc_keys(
        &self,
        slave: &str,
        req: &KeyRequest,
    ) -> Result<KeyContainer, ClientError> {
        let r = self
            .http
            .post(self.url(slave, "enc_keys"))
            .json(req)
            .send()
            .await;
        Self::read(r.map_err(|e| ClientError::Transport(format!("{e:?}")))?).await
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
        let r = self.http.get(url).send().await;
        Self::read(r.map_err(|e| ClientError::Transport(format!("{e:?}")))?).await
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
        let r = self
            .http
            .post(self.url(master, "dec_keys"))
            .json(&body)
            .send()
            .await;
        Self::read(r.map_err(|e| ClientError::Transport(format!("{e:?}")))?).await
    }

    /// GET dec_keys?key_ID=...: one key.
    pub async fn dec_key_get(&self, master: &str, id: &str) -> Result<KeyContainer, ClientError> {
        let url = format!(
            "{}?key_ID={}",
            self.url(master, "dec_keys"),
            encode_segment(id)
        );
        let r = self.http.get(url).send().await;
        Self::read(r.map_err(|e| ClientError::Transport(format!("{e:?}")))?).await
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
