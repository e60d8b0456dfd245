//! qkd-server: the key management entity (KME) serving ETSI GS QKD 014 V1.1.1 over mutual TLS.
//!
//! - [`serve`] starts a KME from a [`Config`] and returns a [`ServerHandle`] (bound addresses,
//!   shutdown), so tests and `qkd demo` can run two KMEs in one process.
//! - [`client::Client`] is an ETSI 014 client (mutual TLS) the way an encryptor calls a KME.
//! - [`pki`] writes a development PKI and ready configurations.
//! - [`pool::KeyPool`] is what the server needs from a key store.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod access;
pub mod check;
mod cidr;
pub mod client;
pub mod config;
mod cor_check;
mod entropy_feed;
pub mod etsi;
mod history;
pub mod hsm;
mod hsm_delivery;
mod kme;
mod limits;
mod link;
pub mod monitor;
pub mod pki;
mod policy;
pub mod pool;
mod procinfo;
mod relay;
mod sealing;
pub mod sources;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

pub use config::Config;
pub use kme::now_ms;
use kme::{Kme, LinkState};
use monitor::{LoggedEvent, Monitor};
use pool::{KeyPool, LOCAL_POOL, PoolError, StorePool};

/// Errors starting a KME.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// TLS material unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The key pool could not be opened.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The store's sealed KEK could not be unsealed or made.
    #[error(transparent)]
    Sealing(#[from] sealing::SealingError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// A post-processing link could not open its durable state.
    #[error("post-processing link: {0}")]
    Link(String),
    /// The HTTP client towards a peer could not be built.
    #[error("peer client for {peer}: {message}")]
    PeerClient {
        /// Peer KME.
        peer: String,
        /// What failed.
        message: String,
    },
}

/// A running KME.
pub struct ServerHandle {
    /// Address of the ETSI 014 (SAE) listener.
    pub sae_addr: SocketAddr,
    /// Address of the peer-KME listener.
    pub peer_addr: Option<SocketAddr>,
    /// Address of the monitoring listener.
    pub monitor_addr: Option<SocketAddr>,
    kme: Arc<Kme>,
    handles: Vec<axum_server::Handle<SocketAddr>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The key store opened by [`serve`] (`None`: the caller's pool).
    store_closed: Option<pool::PoolClosed>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("kme_id", &self.kme.cfg.kme_id)
            .field("sae_addr", &self.sae_addr)
            .field("peer_addr", &self.peer_addr)
            .field("monitor_addr", &self.monitor_addr)
            .finish()
    }
}

impl ServerHandle {
    /// This KME's ID.
    pub fn kme_id(&self) -> &str {
        &self.kme.cfg.kme_id
    }

    /// The key pool (counts, or feeding blocks from an `external` source such as the pipeline).
    pub fn pool(&self) -> Arc<dyn KeyPool> {
        self.kme.pool.clone()
    }

    /// Adds a block of key material to a pool (`peer` KME ID, or [`pool::LOCAL_POOL`]),
    /// durably (`Ok(false)`: a block with this ID exists). Both KMEs of a link must add the same
    /// bytes under the same block ID. This is the entry point of the built-in pipeline.
    pub async fn add_block(
        &self,
        pool: &str,
        block: &str,
        data: Zeroizing<Vec<u8>>,
    ) -> Result<bool, PoolError> {
        let p = self.kme.pool.clone();
        let (pl, b) = (pool.to_string(), block.to_string());
        let added = tokio::task::spawn_blocking(move || p.add_block(&pl, &b, data))
            .await
            .map_err(|e| PoolError::Store(e.to_string()))??;
        if added {
            self.kme.check_watermark(pool);
        }
        Ok(added)
    }

    /// Recent events, oldest first.
    pub fn events(&self) -> Vec<LoggedEvent> {
        self.kme.monitor.recent()
    }

    /// Stops accepting connections and stops the background tasks; requests in flight may
    /// finish within `limits.shutdown_grace_ms`, then their connections are closed. A KME
    /// started by [`serve`] has closed its key store when this returns (the store's writer
    /// thread finished, its epoch file synced), unless something still held the store for
    /// another grace period after the listeners stopped (logged as an error).
    pub async fn shutdown(self) {
        let Self {
            kme,
            handles,
            stop,
            tasks,
            store_closed,
            ..
        } = self;
        let grace_ms = kme.cfg.limits.shutdown_grace_ms;
        let grace = Duration::from_millis(grace_ms);
        let _ = stop.send(true);
        for h in &handles {
            h.graceful_shutdown(Some(grace));
        }
        for t in tasks {
            let _ = t.await;
        }
        drop(kme);
        if let Some(closed) = store_closed
            && tokio::time::timeout(grace, closed.wait()).await.is_err()
        {
            tracing::error!(
                grace_ms,
                "the key store is still in use after the listeners stopped; not closed"
            );
        }
    }
}

/// The acceptor of one listener.
enum Acceptor {
    Mtls(tls::MtlsAcceptor),
    Plain(tls::PlainAcceptor),
}

/// Serves `app` on `listener`: headers (and the first request of a connection) within
/// `header_timeout`, the acceptor's caps and timeouts on every connection.
fn spawn_listener(
    listener: std::net::TcpListener,
    acceptor: Acceptor,
    app: Router,
    header_timeout: Duration,
    what: &'static str,
) -> std::io::Result<(JoinHandle<()>, axum_server::Handle<SocketAddr>)> {
    let handle = axum_server::Handle::new();
    let mut server = axum_server::from_tcp(listener)?
        .handle(handle.clone())
        .first_request_timeout(header_timeout);
    server
        .http_builder()
        .http1()
        .header_read_timeout(Some(header_timeout));
    let app = app.into_make_service();
    let task = match acceptor {
        Acceptor::Mtls(a) => {
            let server = server.acceptor(a);
            tokio::spawn(async move {
                if let Err(e) = server.serve(app).await {
                    tracing::error!(%e, listener = what, "listener stopped");
                }
            })
        }
        Acceptor::Plain(a) => {
            let server = server.acceptor(a);
            tokio::spawn(async move {
                if let Err(e) = server.serve(app).await {
                    tracing::error!(%e, listener = what, "listener stopped");
                }
            })
        }
    };
    Ok((task, handle))
}

/// `app` under the request caps of a listener (they replace the body limit of axum's
/// extractors).
fn with_request_limits(app: Router, limits: Arc<limits::RequestLimits>) -> Router {
    app.layer(axum::middleware::from_fn(move |req, next| {
        limits.clone().handle(req, next)
    }))
    .layer(axum::extract::DefaultBodyLimit::disable())
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, ServeError> {
    let l =
        std::net::TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
    l.set_nonblocking(true)
        .map_err(|source| ServeError::Bind { addr, source })?;
    Ok(l)
}

/// Starts a KME (listeners, key sources, housekeeping) on the current tokio runtime.
pub async fn serve(config: Config) -> Result<ServerHandle, ServeError> {
    config.validate()?;
    let dir = match &config.state_dir {
        Some(dir) => dir.clone(),
        None => {
            let d = std::env::temp_dir().join(format!(
                "qkd-kme-{}-{}",
                config.kme_id,
                uuid::Uuid::new_v4()
            ));
            tracing::warn!(dir = %d.display(), "no state_dir configured: keys kept in a temporary store");
            d
        }
    };
    let mut options = config.store.options()?;
    if let Some(kek) = sealing::sealed_kek(&config, &dir)? {
        options.encryption = Some(kek);
    }
    let store = StorePool::open_with(&dir, &config.kme_id, options)?;
    let closed = store.closed();
    let mut handle = serve_in(config, store, &dir.join("links")).await?;
    handle.store_closed = Some(closed);
    Ok(handle)
}

/// Like [`serve`] with a key pool of the caller's choosing (post-processing links keep their
/// state under `state_dir/links`, or a temporary directory).
pub async fn serve_with_pool(
    config: Config,
    pool: Arc<dyn KeyPool>,
) -> Result<ServerHandle, ServeError> {
    let links_dir = match &config.state_dir {
        Some(d) => d.join("links"),
        None => std::env::temp_dir().join(format!("qkd-links-{}", uuid::Uuid::new_v4())),
    };
    serve_in(config, pool, &links_dir).await
}

async fn serve_in(
    config: Config,
    pool: Arc<dyn KeyPool>,
    links_dir: &std::path::Path,
) -> Result<ServerHandle, ServeError> {
    config.validate()?;
    let ca = tls::load_certs(&config.tls.ca)?;
    let chain = tls::load_certs(&config.tls.cert)?;
    let key = tls::load_key(&config.tls.key)?;
    let crls = tls::load_crls(&config.tls.crl)?;
    let min = config.tls.min_version.clone();

    let mut links = HashMap::new();
    for l in &config.links {
        let client_tls =
            tls::peer_client_config(&ca, chain.clone(), key.clone_key(), &min, &l.peer)?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(client_tls)
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ServeError::PeerClient {
                peer: l.peer.clone(),
                message: e.to_string(),
            })?;
        links.insert(
            l.peer.clone(),
            LinkState {
                saes: l.saes.clone(),
                client: Some(client),
                url: l.url.clone(),
                up: AtomicBool::new(true),
                low_watermark: l.low_watermark_bytes,
                below_watermark: AtomicBool::new(false),
            },
        );
    }
    let monitor = Arc::new(Monitor::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut processing = HashMap::new();
    let mut cor = HashMap::new();
    let is_cor = |l: &config::LinkConfig| matches!(l.source, config::SourceConfig::Cor { .. });
    if config
        .links
        .iter()
        .any(|l| l.processing.is_some() || is_cor(l))
    {
        let ledger = Arc::new(link::ledger::Ledger::open(links_dir).map_err(ServeError::Link)?);
        for l in &config.links {
            if let config::SourceConfig::Cor { dir, .. } = &l.source {
                let c = cor_check::CorLink::new(&l.peer, dir, ledger.clone());
                cor.insert(l.peer.clone(), Arc::new(c));
            }
        }
        for l in config.links.iter().filter(|l| l.processing.is_some()) {
            let rt = link::LinkRuntime::open(
                links_dir,
                ledger.clone(),
                l,
                pool.clone(),
                monitor.clone(),
                stop_rx.clone(),
            )
            .map_err(ServeError::Link)?;
            processing.insert(l.peer.clone(), rt);
        }
    }
    let kme = Arc::new(Kme::new(
        config.clone(),
        pool,
        links,
        processing.clone(),
        cor,
        monitor,
    ));
    let mut handles = Vec::new();
    let mut tasks = Vec::new();

    let header_timeout = Duration::from_millis(config.limits.header_timeout_ms);
    let mut listen = |addr: SocketAddr, acceptor, app: Router, what: &'static str| {
        let listener = bind(addr)?;
        let local = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        let (task, h) = spawn_listener(listener, acceptor, app, header_timeout, what)
            .map_err(|source| ServeError::Bind { addr, source })?;
        tasks.push(task);
        handles.push(h);
        Ok::<_, ServeError>(local)
    };

    // SAE listener: without client certificates too once an SAE is identified by address.
    let mut sae_auth = tls::ClientAuth::Required;
    for s in config
        .saes
        .iter()
        .filter(|s| s.matcher == config::SaeMatch::Address)
    {
        let from = s.value.as_deref().unwrap_or_default();
        tracing::warn!(sae = %s.id, from, "SAE {} is authenticated by its IP address only", s.id);
        sae_auth = tls::ClientAuth::Optional;
    }
    let sae_cfg = tls::server_config(&ca, &crls, chain.clone(), key.clone_key(), &min, sae_auth)?;
    // An SAE whose keys go into an HSM never calls: no certificate or address is it.
    let callers = config
        .saes
        .iter()
        .filter(|s| s.kind == config::SaeKind::Etsi);
    let sae_resolver: Arc<dyn tls::Resolver> =
        Arc::new(tls::SaeResolver(callers.cloned().collect()));
    let sae_acceptor = tls::MtlsAcceptor::new(
        sae_cfg,
        sae_resolver,
        limits::ConnectionLimits::new(&config),
    );
    let sae_app = with_request_limits(
        kme::sae_router(kme.clone()),
        limits::RequestLimits::new(&config, config.limits.max_body_bytes, kme::etsi_refusal),
    );
    // Outermost: the access log and latency histograms see the limits' refusals too.
    let monitor = kme.monitor.clone();
    let sae_app = sae_app.layer(axum::middleware::from_fn(move |req, next| {
        access::middleware(monitor.clone(), req, next)
    }));
    let sae_addr = listen(config.listen, Acceptor::Mtls(sae_acceptor), sae_app, "SAE")?;

    // Peer listener.
    let mut peer_addr = None;
    if let Some(addr) = config.peer_listen {
        let peer_cfg = tls::server_config(
            &ca,
            &crls,
            chain.clone(),
            key.clone_key(),
            &min,
            tls::ClientAuth::Required,
        )?;
        let resolver: Arc<dyn tls::Resolver> = Arc::new(tls::KmeResolver(
            config.links.iter().map(|l| l.peer.clone()).collect(),
        ));
        let acceptor =
            tls::MtlsAcceptor::new(peer_cfg, resolver, limits::ConnectionLimits::new(&config));
        let app = with_request_limits(
            kme::peer_router(kme.clone()),
            limits::RequestLimits::new(
                &config,
                config.limits.peer_max_body_bytes,
                limits::refuse_text,
            ),
        );
        peer_addr = Some(listen(addr, Acceptor::Mtls(acceptor), app, "peer")?);
    }

    // Monitoring listener (plain HTTP, no authentication: keep it on localhost).
    let mut monitor_addr = None;
    if let Some(addr) = config.monitor_listen {
        let acceptor = tls::PlainAcceptor(limits::ConnectionLimits::new(&config));
        let app = with_request_limits(
            monitor_router(kme.clone()),
            limits::RequestLimits::new(&config, config.limits.max_body_bytes, limits::refuse_text),
        );
        monitor_addr = Some(listen(addr, Acceptor::Plain(acceptor), app, "monitor")?);
        tasks.push(tokio::spawn(history::run(kme.clone(), stop_rx.clone())));
    }

    // Sources.
    let mut sources: Vec<(String, config::SourceConfig)> = config
        .links
        .iter()
        .map(|l| (l.peer.clone(), l.source.clone()))
        .collect();
    if let Some(lp) = &config.local_pool {
        sources.push((LOCAL_POOL.to_string(), lp.source.clone()));
    }
    for (pool, src) in sources {
        let kme = kme.clone();
        let stop = stop_rx.clone();
        match src {
            config::SourceConfig::Cor { dir, poll_ms } => {
                if !dir.exists() {
                    let _ = link::ledger::private_dir(&dir);
                }
                tasks.push(tokio::spawn(sources::watch_cor(
                    kme,
                    pool,
                    dir,
                    Duration::from_millis(poll_ms.max(10)),
                    stop,
                )));
            }
            config::SourceConfig::Simulated {
                seed,
                block_bytes,
                initial_blocks,
                interval_ms,
                max_blocks,
            } => {
                tasks.push(tokio::spawn(sources::simulated(
                    kme,
                    pool,
                    seed,
                    block_bytes,
                    initial_blocks,
                    Duration::from_millis(interval_ms),
                    max_blocks,
                    stop,
                )));
            }
            config::SourceConfig::Random { target_bytes } => {
                tasks.push(tokio::spawn(sources::random_topup(
                    kme,
                    pool,
                    target_bytes,
                    stop,
                )));
            }
            config::SourceConfig::RawStream { socket, dir } => {
                tasks.push(tokio::spawn(link::stream::serve(socket, dir, stop)));
            }
            config::SourceConfig::RawDir { dir, .. } => {
                // Created private if missing; an existing one keeps the modes the device's
                // writer needs.
                if !dir.exists() {
                    let _ = link::ledger::private_dir(&dir);
                }
            }
            config::SourceConfig::SimulatedDevice { .. } | config::SourceConfig::External => {}
        }
    }
    // Post-processing: Alice's KME dials each of its links' peers.
    for rt in processing.values() {
        if rt.role() == config::LinkRole::Alice {
            let mut tls =
                tls::peer_client_config(&ca, chain.clone(), key.clone_key(), &min, rt.peer())?;
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            tasks.push(tokio::spawn(rt.clone().run_alice(Arc::new(tls))));
        }
    }
    for h in kme.cfg.hsms.iter().filter(|h| h.reseed_minutes > 0) {
        tasks.push(tokio::spawn(entropy_feed::run(
            kme.clone(),
            h.name.clone(),
            h.reseed_minutes,
            stop_rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(kme::housekeeping(
        kme.clone(),
        stop_rx.clone(),
    )));

    Ok(ServerHandle {
        sae_addr,
        peer_addr,
        monitor_addr,
        kme,
        handles,
        stop: stop_tx,
        tasks,
        store_closed: None,
    })
}

fn pool_rows(kme: &Kme) -> Vec<monitor::PoolRow> {
    let mut names: Vec<String> = kme.links.keys().cloned().collect();
    names.sort();
    if kme.cfg.local_pool.is_some() {
        names.insert(0, LOCAL_POOL.to_string());
    }
    names
        .into_iter()
        .map(|n| {
            let s = kme.pool.stats(&n);
            let link = kme.links.get(&n);
            monitor::PoolRow {
                allocatable_bytes: s.allocatable_bytes,
                peer_allocatable_bytes: s.peer_allocatable_bytes,
                reserved_keys: s.reserved_keys,
                link_up: link.map(|l| l.up.load(std::sync::atomic::Ordering::Relaxed)),
                low_watermark_bytes: kme.low_watermark(&n),
                insufficient_total: kme.monitor.insufficient_total(&n),
                pool: n,
            }
        })
        .collect()
}

/// The post-processing links' part of `/metrics`.
fn link_metrics(kme: &Kme) -> String {
    let mut peers: Vec<&String> = kme.processing.keys().collect();
    peers.sort();
    let snaps: Vec<serde_json::Value> = peers
        .iter()
        .map(|p| kme.processing[*p].snapshot())
        .collect();
    monitor::link_prometheus(&kme.cfg.kme_id, &snaps)
}

fn monitor_router(kme: Arc<Kme>) -> Router {
    let k1 = kme.clone();
    let k2 = kme.clone();
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let kme = k1.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        kme.monitor.prometheus(&kme.cfg.kme_id, &pool_rows(&kme))
                            + &link_metrics(&kme)
                            + &kme.relay_prometheus()
                            + &kme.monitor.hsm_prometheus(
                                &kme.cfg.kme_id,
                                &kme.cfg.hsms.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
                            )
                            + &kme.monitor.access.prometheus(&kme.cfg.kme_id)
                            + &procinfo::prometheus(
                                &kme.cfg.kme_id,
                                kme.monitor.uptime_seconds(),
                            ),
                    )
                }
            }),
        )
        .route(
            "/api/state",
            get(move || {
                let kme = k2.clone();
                async move {
                    let pools = pool_rows(&kme);
                    let mut links: Vec<_> = kme.processing.values().map(|rt| rt.snapshot()).collect();
                    links.sort_by(|a, b| a["peer"].as_str().cmp(&b["peer"].as_str()));
                    // Each event says whether it is an alarm (the dashboard draws those red).
                    let events: Vec<_> = kme.monitor.recent().into_iter().map(|e| {
                        let mut v = serde_json::to_value(&e).unwrap_or_default();
                        v["alarm"] = e.event.is_alarm().into();
                        v
                    }).collect();
                    let relay = kme.relay_state();
                    axum::Json(json!({"kme_id": kme.cfg.kme_id, "pools": pools, "links": links, "relay": relay, "events": events}))
                }
            }),
        )
        .route("/api/history", get(history_h).with_state(kme.clone()))
        .route("/", get(|| async { axum::response::Html(monitor::DASHBOARD_HTML) }))
}

/// `/api/history[?since=MS]` (see [`history`]).
async fn history_h(
    axum::extract::State(kme): axum::extract::State<Arc<Kme>>,
    axum::extract::Query(q): axum::extract::Query<HistoryQuery>,
) -> axum::Json<serde_json::Value> {
    axum::Json(history::json(&kme, q.since))
}

#[derive(Debug, serde::Deserialize)]
struct HistoryQuery {
    since: Option<u64>,
}
