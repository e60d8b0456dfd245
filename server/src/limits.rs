//! What keeps slow, idle or greedy clients from taking a listener away from everyone else:
//! caps on connections (per listener and per client identity), an idle timeout on every
//! connection, and per-request caps (requests in flight, body size, body time).
//!
//! - [`ConnectionLimits`] is asked at accept time ([`ConnectionLimits::admit`]) and again when
//!   the TLS handshake has told who the client is ([`Admission::identify`]); the connection
//!   carries its [`Admission`] until it closes.
//! - [`IdleTimeout`] wraps a connection's stream and fails it after `idle_timeout_ms` without a
//!   byte in either direction (HTTP/2 and upgraded channels included, which hyper's HTTP/1 header
//!   timeout does not cover).
//! - [`RequestLimits`] is an axum middleware: requests in flight per listener and per client,
//!   and the request body read in full, within a size and a time bound, before any handler runs.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::config::{Config, LimitsConfig};
use crate::tls::Peer;

/// The identity under which clients without a known identity are counted together.
pub const UNIDENTIFIED: &str = "<unidentified>";

/// Counts of something per client identity, each under its own cap.
#[derive(Debug)]
struct PerClient {
    default_cap: usize,
    caps: HashMap<String, usize>,
    counts: Mutex<HashMap<String, usize>>,
}

impl PerClient {
    fn new(default_cap: usize, caps: HashMap<String, usize>) -> Arc<Self> {
        Arc::new(Self {
            default_cap,
            caps,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// One more for `client`, if it is under its cap.
    fn acquire(self: &Arc<Self>, client: &str) -> Option<ClientSlot> {
        let cap = self.caps.get(client).copied().unwrap_or(self.default_cap);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(client.to_string()).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            owner: self.clone(),
            client: client.to_string(),
        })
    }
}

/// One unit of a client's share; given back on drop.
#[derive(Debug)]
struct ClientSlot {
    owner: Arc<PerClient>,
    client: String,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.client);
            }
        }
    }
}

/// Per-SAE overrides of a per-client cap, from the `[[sae]]` entries.
fn sae_caps(
    cfg: &Config,
    pick: impl Fn(&crate::config::SaeConfig) -> Option<usize>,
) -> HashMap<String, usize> {
    cfg.saes
        .iter()
        .filter_map(|s| pick(s).map(|cap| (s.id.clone(), cap)))
        .collect()
}

/// Connection caps of one listener.
#[derive(Debug)]
pub struct ConnectionLimits {
    open: Arc<Semaphore>,
    per_client: Arc<PerClient>,
    /// The handshake bound (TLS listeners).
    pub handshake_timeout: Duration,
    /// The idle bound of every connection.
    pub idle_timeout: Duration,
}

impl ConnectionLimits {
    /// The caps of `cfg.limits`, with the per-SAE overrides of `cfg.saes`.
    pub fn new(cfg: &Config) -> Arc<Self> {
        let l = &cfg.limits;
        Arc::new(Self {
            open: Arc::new(Semaphore::new(l.max_connections)),
            per_client: PerClient::new(
                l.max_connections_per_client,
                sae_caps(cfg, |s| s.max_connections),
            ),
            handshake_timeout: Duration::from_millis(l.handshake_timeout_ms),
            idle_timeout: Duration::from_millis(l.idle_timeout_ms),
        })
    }

    /// A slot for a just-accepted connection, if the listener is under its cap.
    pub fn admit(self: &Arc<Self>) -> io::Result<Admission> {
        let permit = self.open.clone().try_acquire_owned().map_err(|_| {
            io::Error::other("connection refused: the listener is at limits.max_connections")
        })?;
        Ok(Admission {
            limits: self.clone(),
            _open: permit,
            client: None,
        })
    }
}

/// A connection's place under its listener's caps, held until the connection closes.
#[derive(Debug)]
pub struct Admission {
    limits: Arc<ConnectionLimits>,
    _open: OwnedSemaphorePermit,
    client: Option<ClientSlot>,
}

impl Admission {
    /// Counts the connection against its client's share (`None`: unidentified); refused when
    /// the client is at its cap.
    pub fn identify(mut self, client: Option<&str>) -> io::Result<Self> {
        let who = client.unwrap_or(UNIDENTIFIED);
        let slot = self.limits.per_client.acquire(who).ok_or_else(|| {
            io::Error::other(format!(
                "connection refused: {who} is at its connection cap"
            ))
        })?;
        self.client = Some(slot);
        Ok(self)
    }
}

/// A stream that fails after `idle` without a byte read or written, and holds its connection's
/// [`Admission`] until it is dropped.
#[derive(Debug)]
pub struct IdleTimeout<S> {
    inner: S,
    idle: Duration,
    /// The last byte read or written.
    last: Instant,
    /// Armed at `last + idle` as of when it was last armed; re-armed lazily when it fires.
    deadline: Pin<Box<Sleep>>,
    _admission: Admission,
}

impl<S> IdleTimeout<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, admission: Admission) -> Self {
        let idle = admission.limits.idle_timeout;
        Self {
            inner,
            idle,
            last: Instant::now(),
            deadline: Box::pin(tokio::time::sleep(idle)),
            _admission: admission,
        }
    }

    /// Notes activity (a clock read, not a timer update on every read and write).
    fn touch(&mut self) {
        self.last = Instant::now();
    }

    /// On `Pending`: an error once `idle` has passed since the last byte. A timer that fires
    /// after more recent activity is re-armed at the new deadline.
    fn check(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            if self.deadline.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let due = self.last + self.idle;
            if due <= Instant::now() {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle for longer than limits.idle_timeout_ms",
                ));
            }
            self.deadline.as_mut().reset(due);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                self.touch();
                Poll::Ready(r)
            }
            Poll::Pending => self.check(cx).map(Err),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                self.touch();
                Poll::Ready(r)
            }
            Poll::Pending => self.check(cx).map(Err),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.check(cx).map(Err),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                self.touch();
                Poll::Ready(r)
            }
            Poll::Pending => self.check(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// How a refused request is answered on a listener (the ETSI routes answer with the
/// standard's Error object).
pub type Refusal = fn(http::StatusCode, String) -> Response;

/// Request caps of one listener (an axum middleware, see [`RequestLimits::layer`]).
#[derive(Debug)]
pub struct RequestLimits {
    in_flight: Arc<Semaphore>,
    per_client: Arc<PerClient>,
    max_body: usize,
    body_timeout: Duration,
    refuse: Refusal,
}

impl RequestLimits {
    /// The caps of `cfg.limits` (bodies up to `max_body` bytes), refusals made by `refuse`.
    pub fn new(cfg: &Config, max_body: usize, refuse: Refusal) -> Arc<Self> {
        let l: &LimitsConfig = &cfg.limits;
        Arc::new(Self {
            in_flight: Arc::new(Semaphore::new(l.max_in_flight)),
            per_client: PerClient::new(
                l.max_in_flight_per_client,
                sae_caps(cfg, |s| s.max_in_flight),
            ),
            max_body,
            body_timeout: Duration::from_millis(l.body_timeout_ms),
            refuse,
        })
    }

    /// Runs `req` through `next` if it is within the caps; its body is read in full first.
    pub async fn handle(self: Arc<Self>, req: Request, next: axum::middleware::Next) -> Response {
        let client = req
            .extensions()
            .get::<Arc<Peer>>()
            .and_then(|p| p.id.clone())
            .unwrap_or_else(|| UNIDENTIFIED.to_string());
        let unavailable = http::StatusCode::SERVICE_UNAVAILABLE;
        let Ok(_all) = self.in_flight.clone().try_acquire_owned() else {
            return (self.refuse)(
                unavailable,
                "too many requests in flight at this KME (limits.max_in_flight); retry later"
                    .into(),
            );
        };
        let Some(_mine) = self.per_client.acquire(&client) else {
            return (self.refuse)(
                unavailable,
                format!("too many requests in flight from {client} (max_in_flight); retry later"),
            );
        };
        let (parts, body) = req.into_parts();
        let body = match self.read_body(body).await {
            Ok(b) => b,
            Err(message) => {
                let mut r = (self.refuse)(http::StatusCode::BAD_REQUEST, message);
                // The rest of the body is not read: the connection cannot be reused.
                r.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
                return r;
            }
        };
        next.run(Request::from_parts(parts, Body::from(body))).await
    }

    async fn read_body(&self, body: Body) -> Result<Bytes, String> {
        let limited = http_body_util::Limited::new(body, self.max_body);
        match tokio::time::timeout(self.body_timeout, limited.collect()).await {
            Err(_) => Err(format!(
                "request body not received within {} ms (limits.body_timeout_ms)",
                self.body_timeout.as_millis()
            )),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                Err(format!("request body larger than {} bytes", self.max_body))
            }
            Ok(Err(e)) => Err(format!("request body could not be read: {e}")),
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
        }
    }
}

/// A plain-text refusal (peer and monitor listeners).
pub fn refuse_text(status: http::StatusCode, message: String) -> Response {
    (status, message).into_response()
}
