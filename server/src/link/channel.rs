//! The post-processing channel between two KMEs: one long-lived mutually authenticated TLS
//! connection per link, opened by Alice's KME on Bob's peer listener as an HTTP/1.1 upgrade of
//! `GET /peer/v1/channel` (`Upgrade: qkd-postprocessing/1`), so it shares the port, the
//! certificates and the peer check of the other peer routes.
//!
//! On it, frames: a 4-byte little-endian length and that many bytes (at most
//! [`MAX_FRAME_BYTES`]). A frame is either a session message (its first byte is the session
//! wire version) or a [`Control`] message: [`CONTROL_TAG`] and its postcard encoding.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;

use super::raw::RawRef;
use crate::config::LinkRole;

/// The `Upgrade` token of the channel.
pub(crate) const UPGRADE: &str = "qkd-postprocessing/1";

/// Path of the channel on the peer listener.
pub(crate) const PATH: &str = "/peer/v1/channel";

/// First byte of a control frame (session messages start with their wire version, 1).
pub(crate) const CONTROL_TAG: u8 = 0xC7;

/// Largest frame accepted (a Cascade round of a large block fits easily).
pub(crate) const MAX_FRAME_BYTES: usize = 64 << 20;

/// Most raw files a hello names (the others are named at the next connection).
pub(crate) const MAX_HELLO_FILES: usize = 10_000;

/// Version of the control protocol, in [`Hello`].
pub(crate) const CONTROL_VERSION: u32 = 1;

/// What a side says when a connection opens: enough for the two to settle every block that
/// was in flight before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// [`CONTROL_VERSION`].
    pub(crate) version: u32,
    /// The sender's end of the link.
    pub(crate) role: LinkRole,
    /// Bits of each final key set aside for authentication (must agree).
    pub(crate) auth_share_bits: u32,
    /// The sender's authentication watermark (both take the larger).
    pub(crate) watermark: u64,
    /// Refills the sender's authentication pool has applied.
    pub(crate) refills: u64,
    /// Blocks whose final key the sender holds pending (Bob's; Alice activates or drops each).
    pub(crate) pending: Vec<String>,
    /// Raw files the sender holds (Bob's; Alice names those she has finished).
    pub(crate) files: Vec<String>,
}

/// The messages of the channel besides the sessions' own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Control {
    /// First message of each side.
    Hello(Hello),
    /// Alice: a raw block she would start next.
    Offer(RawRef),
    /// Bob: he holds that raw block, whole; Alice may start it.
    Ready {
        /// The block.
        block: String,
    },
    /// Bob: he does not hold it (yet): Alice keeps it and asks again later.
    Missing {
        /// The block.
        block: String,
        /// Why.
        reason: String,
    },
    /// Bob: he holds the block's final key durably (pending).
    Held {
        /// The block.
        block: String,
    },
    /// Alice: she activated the block (its key is allocatable at her KME) with this refill of
    /// the authentication pool; Bob activates it too, applying refills in number order.
    Activated {
        /// The block.
        block: String,
        /// The refill number of its authentication share.
        refill: Option<u64>,
    },
    /// Either side: no key from this block (the other side drops its copy).
    Dropped {
        /// The block.
        block: String,
        /// Why.
        reason: String,
    },
    /// Alice: every block of this raw file is decided; Bob burns his copy.
    FileDone {
        /// The raw file.
        name: String,
    },
    /// Keeps an idle connection alive (and shows a dead one).
    Ping,
}

impl Control {
    /// The frame of this message.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![CONTROL_TAG];
        // Encoding a value of this type into a Vec cannot fail.
        out.extend(postcard::to_stdvec(self).unwrap_or_default());
        out
    }

    /// Decodes a control frame.
    pub(crate) fn decode(frame: &[u8]) -> Result<Self, String> {
        match frame.split_first() {
            Some((&CONTROL_TAG, body)) => {
                postcard::from_bytes(body).map_err(|e| format!("malformed control message: {e}"))
            }
            _ => Err("not a control message".into()),
        }
    }
}

/// Reads one frame (`None` at a clean end of stream).
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes; at most {MAX_FRAME_BYTES}"),
        ));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

/// Appends one frame to `out`. Messages are far below [`MAX_FRAME_BYTES`] (the largest, a
/// hello, names at most [`MAX_HELLO_FILES`] files), which the reader enforces.
pub(crate) fn push_frame(out: &mut Vec<u8>, frame: &[u8]) {
    out.extend((frame.len() as u32).to_le_bytes());
    out.extend_from_slice(frame);
}

/// A stream the channel runs on.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// Dials the peer's listener at `url` (`https://host:port`) and upgrades to the channel. `tls`
/// must check that the server's certificate names the peer ([`crate::tls::peer_client_config`]).
pub(crate) async fn dial(
    url: &str,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Box<dyn Stream>, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("peer URL {url:?}: {e}"))?;
    let host = uri
        .host()
        .ok_or_else(|| format!("peer URL {url:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let tcp = tokio::time::timeout(
        Duration::from_secs(5),
        TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| format!("connecting to {host}:{port}: timed out"))?
    .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let name =
        ServerName::try_from(host.clone()).map_err(|e| format!("server name {host}: {e}"))?;
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(tls).connect(name, tcp),
    )
    .await
    .map_err(|_| "TLS handshake timed out".to_string())?
    .map_err(|e| format!("TLS handshake: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let req = http::Request::get(PATH)
        .header(http::header::HOST, format!("{host}:{port}"))
        .header(http::header::CONNECTION, "upgrade")
        .header(http::header::UPGRADE, UPGRADE)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .map_err(|_| "upgrade request timed out".to_string())?
        .map_err(|e| format!("upgrade request: {e}"))?;
    if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        return Err(format!(
            "the peer refused the channel: HTTP {}",
            resp.status()
        ));
    }
    let upgraded = hyper::upgrade::on(resp)
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    Ok(Box::new(TokioIo::new(upgraded)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_round_trip_and_are_not_session_messages() {
        let m = Control::Activated {
            block: "f#1".into(),
            refill: Some(7),
        };
        let f = m.encode();
        assert!(!qkd_core::session::wire::is_session_message(&f));
        assert_eq!(Control::decode(&f).unwrap(), m);
        assert!(Control::decode(&[1, 2, 3]).is_err());
        assert!(Control::decode(&[CONTROL_TAG, 200]).is_err());
    }

    #[tokio::test]
    async fn frames_round_trip_and_oversized_ones_are_refused() {
        use tokio::io::AsyncWriteExt;
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let mut out = Vec::new();
        push_frame(&mut out, b"abc");
        push_frame(&mut out, b"");
        a.write_all(&out).await.unwrap();
        assert_eq!(read_frame(&mut b).await.unwrap().unwrap(), b"abc");
        assert_eq!(read_frame(&mut b).await.unwrap().unwrap(), b"");
        a.write_all(&(u32::MAX).to_le_bytes()).await.unwrap();
        assert!(read_frame(&mut b).await.is_err());
        drop(a);
        let (a2, mut b2) = tokio::io::duplex(64);
        drop(a2);
        assert!(read_frame(&mut b2).await.unwrap().is_none());
    }
}
