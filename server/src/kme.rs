//! The KME: shared state, the ETSI 014 handlers and the peer-KME handlers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::config::Config;
use crate::etsi::{ErrorBody, Key, KeyContainer, KeyIds, KeyRequest, Status, messages};
use crate::monitor::{Event, Monitor};
use crate::pool::{
    AllocRequest, FetchError, FetchedKey, KeyPool, LOCAL_POOL, PoolError, ReserveRequest,
};
use crate::tls::Peer;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An HTTP error with the standard's Error body.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                message: message.into(),
                details: None,
            },
        }
    }
    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
    /// Its message, for a caller that reports it in its own words.
    pub(crate) fn message(self) -> String {
        self.body.message
    }
    pub(crate) fn detail(mut self, value: Value) -> Self {
        if let Value::Object(m) = value {
            self.body.details.get_or_insert_with(Vec::new).push(m);
        }
        self
    }
}

/// A refusal on the ETSI routes (limits): the status with the standard's Error object.
pub(crate) fn etsi_refusal(status: StatusCode, message: String) -> Response {
    ApiError::new(status, message).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

/// One link as the handlers see it.
pub(crate) struct LinkState {
    pub(crate) saes: Vec<String>,
    pub(crate) client: Option<reqwest::Client>,
    pub(crate) url: String,
    pub(crate) up: AtomicBool,
    pub(crate) low_watermark: u64,
    pub(crate) below_watermark: AtomicBool,
}

/// Where an SAE is attached.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Site {
    Local,
    /// At a peer KME (a link of this KME).
    Remote(String),
    /// At a KME reached through others (`[network]`): keys are relayed.
    Relayed(String),
}

/// The shared state of one KME.
pub struct Kme {
    pub(crate) cfg: Config,
    pub(crate) pool: Arc<dyn KeyPool>,
    pub(crate) links: HashMap<String, LinkState>,
    /// Links that post-process raw key with their peer, by peer KME ID.
    pub(crate) processing: HashMap<String, Arc<crate::link::LinkRuntime>>,
    /// Links with a `.cor` source (their block check), by peer KME ID.
    pub(crate) cor: HashMap<String, Arc<crate::cor_check::CorLink>>,
    pub(crate) monitor: Arc<Monitor>,
    local_low_watermark: u64,
    local_below: AtomicBool,
    sites: HashMap<String, Site>,
    policy: crate::policy::Policy,
    /// Relaying keys to and through KMEs beyond this one's links.
    pub(crate) relay: crate::relay::Relay,
}

impl std::fmt::Debug for Kme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kme")
            .field("kme_id", &self.cfg.kme_id)
            .finish_non_exhaustive()
    }
}

/// The peer-KME reservation message.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PeerReserve {
    pub(crate) master: String,
    pub(crate) slaves: Vec<String>,
    pub(crate) expires_at_ms: u64,
    pub(crate) keys: Vec<qkd_store::KeyAllocation>,
    /// For keys relayed to this KME: every KME from the master's to this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) path: Option<Vec<String>>,
}

impl Kme {
    pub(crate) fn new(
        cfg: Config,
        pool: Arc<dyn KeyPool>,
        links: HashMap<String, LinkState>,
        processing: HashMap<String, Arc<crate::link::LinkRuntime>>,
        cor: HashMap<String, Arc<crate::cor_check::CorLink>>,
        monitor: Arc<Monitor>,
    ) -> Self {
        let mut sites = HashMap::new();
        for s in &cfg.saes {
            sites.insert(s.id.clone(), Site::Local);
        }
        for l in &cfg.links {
            for s in &l.saes {
                sites.insert(s.clone(), Site::Remote(l.peer.clone()));
            }
        }
        for k in &cfg.network.kmes {
            for s in &k.saes {
                sites.insert(s.clone(), Site::Relayed(k.id.clone()));
            }
        }
        let local_low_watermark = cfg.local_pool.as_ref().map_or(0, |p| p.low_watermark_bytes);
        let policy = crate::policy::Policy::new(&cfg);
        let relay = crate::relay::Relay::new(crate::relay::Topology::of(&cfg));
        Self {
            cfg,
            pool,
            links,
            processing,
            cor,
            monitor,
            local_low_watermark,
            local_below: AtomicBool::new(false),
            sites,
            policy,
            relay,
        }
    }

    /// The KME an SAE is attached to, if known.
    pub(crate) fn kme_of(&self, sae: &str) -> Option<&str> {
        match self.sites.get(sae)? {
            Site::Local => Some(&self.cfg.kme_id),
            Site::Remote(k) | Site::Relayed(k) => Some(k),
        }
    }

    /// The client of the link to `peer` and the URL of `route` on its peer listener.
    pub(crate) fn peer_url(&self, peer: &str, route: &str) -> Option<(&reqwest::Client, String)> {
        let link = self.links.get(peer)?;
        let url = format!("{}{route}", link.url.trim_end_matches('/'));
        Some((link.client.as_ref()?, url))
    }

    fn caller(peer: &Peer) -> Result<String, ApiError> {
        peer.id.clone().ok_or_else(|| {
            ApiError::unauthorized("client certificate does not identify an SAE known to this KME")
        })
    }

    fn site(&self, sae: &str) -> Result<&Site, ApiError> {
        self.sites.get(sae).ok_or_else(|| {
            ApiError::bad(format!("unknown SAE ID {sae:?}")).detail(json!({"SAE_ID": sae}))
        })
    }

    /// The low watermark of a pool in bytes (0: none).
    pub(crate) fn low_watermark(&self, pool: &str) -> u64 {
        if pool == LOCAL_POOL {
            self.local_low_watermark
        } else {
            self.links.get(pool).map_or(0, |l| l.low_watermark)
        }
    }

    /// Checks the low watermark of a pool (this KME's share) and raises an event on crossing
    /// it.
    pub(crate) fn check_watermark(&self, pool: &str) {
        let (mark, flag) = if pool == LOCAL_POOL {
            (self.local_low_watermark, &self.local_below)
        } else if let Some(l) = self.links.get(pool) {
            (l.low_watermark, &l.below_watermark)
        } else {
            return;
        };
        if mark == 0 {
            return;
        }
        let avail = self.pool.stats(pool).allocatable_bytes;
        let below = avail < mark;
        if flag.swap(below, Ordering::Relaxed) != below {
            self.monitor.event(if below {
                Event::LowWatermark {
                    pool: pool.to_string(),
                    bytes: avail,
                }
            } else {
                Event::AboveWatermark {
                    pool: pool.to_string(),
                    bytes: avail,
                }
            });
        }
    }

    async fn status(&self, master: &str, slave: &str) -> Result<Status, ApiError> {
        let site = self.site(slave)?.clone();
        if self.site(master)? != &Site::Local {
            return Err(ApiError::unauthorized("caller is not attached to this KME"));
        }
        let k = &self.cfg.keys;
        let (target, link_state, pool) = match &site {
            Site::Local => (&self.cfg.kme_id, "local", LOCAL_POOL),
            Site::Remote(p) => (p, if self.link_up(p) { "up" } else { "down" }, p.as_str()),
            Site::Relayed(dest) => {
                let (path, hops) = self.relay_status(dest).await;
                let count = hops
                    .as_deref()
                    .map_or(0, |h| crate::relay::keys_over(h, k.default_size));
                let mut extension =
                    crate::relay::status_extension(path.as_deref(), hops.as_deref());
                extension["reservation_ttl_seconds"] = json!(k.reservation_ttl_secs);
                extension["link_state"] = json!(if hops.is_some() { "up" } else { "down" });
                return Ok(self.status_of(master, slave, dest, count, extension));
            }
        };
        let stats = self.pool.stats(pool);
        let key_bytes = u64::from(k.default_size / 8);
        let low_watermark = self.low_watermark(pool);
        let mut extension = json!({
            "reservation_ttl_seconds": k.reservation_ttl_secs,
            "link_state": link_state,
            "pool": pool,
            "stored_key_bits": stats.allocatable_bytes * 8,
            "peer_stored_key_bits": stats.peer_allocatable_bytes * 8,
            "low_watermark_bits": low_watermark * 8,
            "below_low_watermark": low_watermark > 0 && stats.allocatable_bytes < low_watermark,
            "reserved_key_count": stats.reserved_keys,
        });
        if let Site::Remote(p) = &site
            && let Some(rt) = self.processing.get(p)
        {
            extension["post_processing"] = rt.snapshot();
        }
        let count = stats.allocatable_bytes / key_bytes;
        Ok(self.status_of(master, slave, target, count, extension))
    }

    /// The Status object of a pair whose pool holds `count` keys of the default size.
    fn status_of(
        &self,
        master: &str,
        slave: &str,
        target: &str,
        count: u64,
        extension: Value,
    ) -> Status {
        let k = &self.cfg.keys;
        Status {
            source_KME_ID: self.cfg.kme_id.clone(),
            target_KME_ID: target.to_string(),
            master_SAE_ID: master.to_string(),
            slave_SAE_ID: slave.to_string(),
            key_size: u64::from(k.default_size),
            stored_key_count: count.min(k.max_key_count),
            max_key_count: k.max_key_count,
            max_key_per_request: u64::from(k.max_per_request),
            max_key_size: u64::from(k.max_size),
            min_key_size: u64::from(k.min_size),
            max_SAE_ID_count: u64::from(k.max_sae_id_count),
            status_extension: Some(extension),
        }
    }

    fn validate(
        &self,
        master: &str,
        slave: &str,
        req: &KeyRequest,
    ) -> Result<(Vec<String>, u64, u64), ApiError> {
        let k = &self.cfg.keys;
        if let Some(ext) = &req.extension_mandatory
            && !ext.is_empty()
        {
            let mut e = ApiError::bad(messages::EXT_MANDATORY_UNSUPPORTED);
            for m in ext {
                for name in m.keys() {
                    e = e.detail(json!({ "unsupported_extension": name }));
                }
            }
            return Err(e);
        }
        let number = req.number.unwrap_or(1);
        if number < 1 || number > u64::from(k.max_per_request) {
            return Err(ApiError::bad(format!(
                "number shall be between 1 and {} (max_key_per_request)",
                k.max_per_request
            ))
            .detail(json!({"number": number})));
        }
        let size = req.size.unwrap_or(u64::from(k.default_size));
        if !size.is_multiple_of(8) {
            return Err(ApiError::bad(messages::SIZE_MULTIPLE_OF_8).detail(json!({"size": size})));
        }
        if size < u64::from(k.min_size) || size > u64::from(k.max_size) {
            return Err(ApiError::bad(format!(
                "size shall be between {} and {} (min_key_size, max_key_size)",
                k.min_size, k.max_size
            ))
            .detail(json!({"size": size})));
        }
        let extra = req.additional_slave_SAE_IDs.clone().unwrap_or_default();
        if extra.len() > k.max_sae_id_count as usize {
            return Err(ApiError::bad(format!(
                "additional_slave_SAE_IDs has {} entries; at most {} (max_SAE_ID_count)",
                extra.len(),
                k.max_sae_id_count
            )));
        }
        let mut slaves = vec![slave.to_string()];
        let mut seen = HashSet::new();
        seen.insert(slave.to_string());
        for s in extra {
            if !seen.insert(s.clone()) {
                return Err(ApiError::bad(format!("slave SAE ID {s:?} named twice")));
            }
            slaves.push(s);
        }
        if slaves.iter().any(|s| s == master) {
            return Err(ApiError::bad("the master SAE cannot be its own slave"));
        }
        Ok((slaves, number, size))
    }

    async fn enc_keys(
        &self,
        master: &str,
        slave: &str,
        req: KeyRequest,
    ) -> Result<KeyContainer, ApiError> {
        if self.site(master)? != &Site::Local {
            return Err(ApiError::unauthorized("caller is not attached to this KME"));
        }
        let (slaves, number, size) = self.validate(master, slave, &req)?;
        let mut target: Option<&Site> = None;
        let mut local_slaves = Vec::new();
        for s in &slaves {
            match self.site(s)? {
                Site::Local => local_slaves.push(s.clone()),
                other => match target {
                    Some(t) if t != other => {
                        return Err(ApiError::bad(
                            "all slave SAEs must be attached to this KME or to one other KME",
                        ));
                    }
                    _ => target = Some(other),
                },
            }
        }
        if let Some(s) = self.policy.forbidden_slave(master, &slaves) {
            return Err(ApiError::unauthorized(format!(
                "{master} may not request keys for slave {s} (allowed_slaves of its [[sae]] entry)"
            ))
            .detail(json!({"slave_SAE_ID": s})));
        }
        if let Some(Site::Relayed(dest)) = target {
            if !local_slaves.is_empty() {
                return Err(ApiError::bad(format!(
                    "slaves at {dest} get relayed keys; they cannot share them with slaves on \
                     this KME"
                )));
            }
            return self
                .enc_keys_relayed(master, dest, slaves, number, size)
                .await;
        }
        let remote = match target {
            Some(Site::Remote(p)) => Some(p.clone()),
            _ => None,
        };
        let pool = remote.clone().unwrap_or_else(|| LOCAL_POOL.to_string());
        if remote.is_none() && self.cfg.local_pool.is_none() {
            return Err(ApiError::unavailable(
                "no local key pool is configured on this KME",
            ));
        }
        if let Some(peer) = &remote
            && !self.link_up(peer)
        {
            // Known down: around it through other KMEs if the network has a way, else refuse
            // before any material is allocated.
            if local_slaves.is_empty() && self.relay_first_hop(peer).is_some() {
                return self
                    .enc_keys_relayed(master, peer, slaves, number, size)
                    .await;
            }
            return Err(
                ApiError::unavailable("peer KME unreachable; no key was delivered")
                    .detail(json!({"peer": peer, "reason": "link down"})),
            );
        }
        self.admit_request(master, &pool, number, size)?;
        let ttl_ms = self.cfg.keys.reservation_ttl_secs.saturating_mul(1000);
        let alloc = AllocRequest {
            pool: pool.clone(),
            master: master.to_string(),
            slaves: slaves.clone(),
            local_slaves,
            number: number as usize,
            size_bits: size as u32,
            expires_at_ms: now_ms().saturating_add(ttl_ms),
        };
        let (allocs, keys) = self
            .pool
            .allocate_for_master(&alloc)
            .await
            .map_err(|_| ApiError::unavailable("key pool closed"))?
            .map_err(|e| match e {
                PoolError::Insufficient {
                    needed_bits,
                    available_bits,
                    ..
                } => self.insufficient(master, &pool, needed_bits, available_bits),
                other => ApiError::unavailable(format!("key pool error: {other}")),
            })?;
        let ids: Vec<Uuid> = allocs.iter().map(|k| k.key_id).collect();
        if let Some(peer) = &remote {
            let remote_slaves: Vec<String> = slaves
                .iter()
                .filter(|s| self.sites.get(*s) != Some(&Site::Local))
                .cloned()
                .collect();
            let msg = PeerReserve {
                master: master.to_string(),
                slaves: remote_slaves,
                expires_at_ms: alloc.expires_at_ms,
                keys: allocs,
                path: None,
            };
            if let Err(fail) = self.reserve_at_peer(peer, &msg).await {
                // Never delivered to anyone (the bytes are dropped, zeroized, below): destroy
                // the keys here too (the store cannot give material back).
                drop(keys);
                let p = self.pool.clone();
                let _ = blocking(move || p.destroy(&ids)).await;
                let (message, reason) = match fail {
                    PeerFail::Refused(m) => {
                        ("peer KME refused the reservation; no key was delivered", m)
                    }
                    PeerFail::Unreachable(m) => ("peer KME unreachable; no key was delivered", m),
                };
                return Err(
                    ApiError::unavailable(message).detail(json!({"peer": peer, "reason": reason}))
                );
            }
        }
        // Slaves here whose keys go into an HSM: once the peer holds its share (should the
        // HSM fail now, the peer's reservation expires unfetched).
        if let Err(e) = self.deliver_into_hsms(&alloc.local_slaves, &ids).await {
            return Err(ApiError::unavailable(format!("{e}; no key was delivered")));
        }
        self.check_watermark(&pool);
        self.monitor.event(Event::Requested {
            master: master.to_string(),
            slaves: slaves.join(","),
            number,
            size,
        });
        self.monitor.keys_delivered(number);
        Ok(container(&keys))
    }

    /// `enc_keys` for slaves at `dest`, a KME this one has no link with: relayed over the
    /// network (`crate::relay`).
    async fn enc_keys_relayed(
        &self,
        master: &str,
        dest: &str,
        slaves: Vec<String>,
        number: u64,
        size: u64,
    ) -> Result<KeyContainer, ApiError> {
        if let Some(first) = self.relay_first_hop(dest) {
            self.admit_request(master, &first, number, size)?;
        }
        let ttl_ms = self.cfg.keys.reservation_ttl_secs.saturating_mul(1000);
        let order = crate::relay::Order {
            master: master.to_string(),
            slaves: slaves.clone(),
            number: number as u32,
            size_bits: size as u32,
            expires_at_ms: now_ms().saturating_add(ttl_ms),
        };
        let keys = self.relay_enc_keys(dest, order).await?;
        self.monitor.event(Event::Requested {
            master: master.to_string(),
            slaves: slaves.join(","),
            number,
            size,
        });
        self.monitor.keys_delivered(number);
        Ok(container(&keys))
    }

    /// The limits a key request meets before anything is allocated: the pool's
    /// `max_key_count` of keys waiting for their slaves, the master's share of the pool and its
    /// rate (checked last, so a refused request spends no rate budget).
    fn admit_request(
        &self,
        master: &str,
        pool: &str,
        number: u64,
        size: u64,
    ) -> Result<(), ApiError> {
        let stats = self.pool.stats(pool);
        let max = self.cfg.keys.max_key_count;
        if stats.reserved_keys.saturating_add(number) > max {
            return Err(ApiError::unavailable(format!(
                "{} keys already wait for their slaves on this pair; at most {max} \
                 (max_key_count): no key was delivered",
                stats.reserved_keys
            )));
        }
        let share = self.policy.max_share(master);
        let available_bits = stats.allocatable_bytes.saturating_mul(8);
        if share < 1.0 && (number * size) as f64 > share * available_bits as f64 {
            return Err(ApiError::unavailable(format!(
                "the request takes {} of {available_bits} bits available; {master} may take at \
                 most a share of {share} per request (max_pool_share): no key was delivered",
                number * size
            )));
        }
        if !self.policy.take_rate(master, number) {
            return Err(ApiError::unavailable(format!(
                "{master} is over its rate (max_keys_per_sec); retry later: no key was delivered"
            )));
        }
        Ok(())
    }

    /// The refusal of a request the pool cannot serve: an event, a counter, and a 503 that
    /// names the pool that ran dry.
    fn insufficient(&self, master: &str, pool: &str, needed: u64, available: u64) -> ApiError {
        self.monitor.event(Event::InsufficientKey {
            pool: pool.to_string(),
            master: master.to_string(),
            requested_bits: needed,
            available_bits: available,
        });
        self.check_watermark(pool);
        let which = if pool == LOCAL_POOL {
            "the local pool (master and slaves on this KME)".to_string()
        } else {
            format!("pool {pool} (this KME's share of its link to {pool})")
        };
        ApiError::unavailable(format!(
            "insufficient key material in {which}: {needed} bits requested, {available} bits \
             available; no key was delivered"
        ))
        .detail(json!({"pool": pool, "requested_bits": needed, "available_bits": available}))
    }

    pub(crate) async fn reserve_at_peer(
        &self,
        peer: &str,
        msg: &PeerReserve,
    ) -> Result<(), PeerFail> {
        let link = self
            .links
            .get(peer)
            .ok_or_else(|| PeerFail::Unreachable("no such link".into()))?;
        let client = link
            .client
            .as_ref()
            .ok_or_else(|| PeerFail::Unreachable("no TLS client".into()))?;
        let url = format!("{}/peer/v1/reserve", link.url.trim_end_matches('/'));
        let resp = client.post(url).json(msg).send().await.map_err(|e| {
            self.set_link_up(peer, false);
            PeerFail::Unreachable(e.to_string())
        })?;
        self.set_link_up(peer, true);
        match resp.status() {
            s if s.is_success() => Ok(()),
            s => Err(PeerFail::Refused(format!(
                "peer answered {s}: {}",
                resp.text().await.unwrap_or_default()
            ))),
        }
    }

    /// Whether this KME has a link to `peer` and it is up.
    pub(crate) fn link_up(&self, peer: &str) -> bool {
        self.links
            .get(peer)
            .is_some_and(|l| l.up.load(Ordering::Relaxed))
    }

    /// Records a link's state, raising an event when it changes.
    pub(crate) fn set_link_up(&self, peer: &str, up: bool) {
        if let Some(l) = self.links.get(peer)
            && l.up.swap(up, Ordering::Relaxed) != up
        {
            self.monitor.event(if up {
                Event::PeerUp {
                    peer: peer.to_string(),
                }
            } else {
                Event::PeerDown {
                    peer: peer.to_string(),
                }
            });
        }
    }

    async fn dec_keys(
        &self,
        slave: &str,
        master: &str,
        ids: Vec<String>,
    ) -> Result<KeyContainer, ApiError> {
        if ids.is_empty() {
            return Err(ApiError::bad(
                "key_IDs is empty; expected at least one key ID",
            ));
        }
        if ids.len() > self.cfg.keys.max_per_request as usize {
            return Err(ApiError::bad(format!(
                "at most {} key IDs per request (max_key_per_request)",
                self.cfg.keys.max_per_request
            )));
        }
        let mut parsed = Vec::with_capacity(ids.len());
        let mut seen = HashSet::new();
        for s in &ids {
            let id = Uuid::parse_str(s)
                .map_err(|_| ApiError::bad("key_ID is not a UUID").detail(json!({"key_ID": s})))?;
            if !seen.insert(id) {
                return Err(ApiError::bad("key_ID listed twice").detail(json!({"key_ID": s})));
            }
            parsed.push(id);
        }
        let p = self.pool.clone();
        let (m, sl) = (master.to_string(), slave.to_string());
        let keys = blocking(move || {
            for id in &parsed {
                match p.master_of(*id) {
                    Some(km) if km == sl => return Err(FetchError::NotRecipient(sl.clone())),
                    Some(km) if km == m => {}
                    _ => return Err(FetchError::NotFound),
                }
            }
            p.fetch(&parsed, &sl)
        })
        .await?
        .map_err(|e| match e {
            FetchError::NotFound => ApiError::bad(messages::KEYS_NOT_FOUND),
            FetchError::NotRecipient(_) => ApiError::unauthorized(
                "the caller is not a slave SAE of one or more of the requested keys",
            ),
            other => ApiError::unavailable(other.to_string()),
        })?;
        self.monitor.keys_delivered(keys.len() as u64);
        Ok(container(&keys))
    }

    async fn peer_reserve(&self, from: &str, msg: PeerReserve) -> Result<(), (StatusCode, String)> {
        let link = self
            .links
            .get(from)
            .ok_or((StatusCode::FORBIDDEN, "unknown peer".into()))?;
        match &msg.path {
            Some(path) => self
                .check_relayed_reserve(from, &msg.master, path)
                .map_err(|m| (StatusCode::BAD_REQUEST, m))?,
            None if !link.saes.iter().any(|s| s == &msg.master) => {
                return Err((
                    StatusCode::BAD_REQUEST,
                    format!("master {} is not attached to {from}", msg.master),
                ));
            }
            None => {}
        }
        if msg.slaves.is_empty()
            || msg
                .slaves
                .iter()
                .any(|s| self.sites.get(s) != Some(&Site::Local))
        {
            return Err((
                StatusCode::BAD_REQUEST,
                "slaves must be attached to this KME".into(),
            ));
        }
        let waiting = self.pool.stats(from).reserved_keys;
        if waiting.saturating_add(msg.keys.len() as u64) > self.cfg.keys.max_key_count {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{waiting} keys already wait for their slaves; at most {} (max_key_count)",
                    self.cfg.keys.max_key_count
                ),
            ));
        }
        // Never keep a reservation longer than our own TTL.
        let cap = now_ms().saturating_add(self.cfg.keys.reservation_ttl_secs.saturating_mul(1000));
        let req = ReserveRequest {
            pool: from.to_string(),
            master: msg.master,
            slaves: msg.slaves,
            expires_at_ms: msg.expires_at_ms.min(cap),
            keys: msg.keys,
        };
        let n = req.keys.len();
        let req_ids: Vec<Uuid> = req.keys.iter().map(|k| k.key_id).collect();
        let slaves = req.slaves.clone();
        let p = self.pool.clone();
        let r2 = req.clone();
        let mut reserved = blocking(move || p.reserve_exact(&r2)).await;
        if matches!(reserved, Ok(Err(PoolError::Conflict(_))))
            && let Some(rt) = self.processing.get(from).cloned()
        {
            // A block Alice activated a message ago may still be pending here: store it, then
            // try once more.
            let blocks: std::collections::BTreeSet<String> = req
                .keys
                .iter()
                .flat_map(|k| k.material.iter().map(|m| m.block_id.to_string()))
                .collect();
            let p = self.pool.clone();
            reserved = blocking(move || {
                for b in &blocks {
                    if let Err(e) = rt.store_early(b) {
                        tracing::warn!(block = %b, error = %e, "early store for a reservation");
                    }
                }
                p.reserve_exact(&req)
            })
            .await;
        }
        reserved
            .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.body.message))?
            .map_err(|e| match e {
                PoolError::Conflict(_) => (StatusCode::CONFLICT, e.to_string()),
                other => (StatusCode::SERVICE_UNAVAILABLE, other.to_string()),
            })?;
        self.set_link_up(from, true);
        self.deliver_into_hsms(&slaves, &req_ids)
            .await
            .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e))?;
        self.monitor.event(Event::Reserved {
            peer: from.to_string(),
            number: n as u64,
        });
        self.check_watermark(from);
        Ok(())
    }
}

/// The Key container of keys delivered to an SAE.
fn container(keys: &[FetchedKey]) -> KeyContainer {
    let b64 = base64::engine::general_purpose::STANDARD;
    KeyContainer {
        keys: keys
            .iter()
            .map(|k| Key {
                key_ID: k.id.to_string(),
                key_ID_extension: None,
                key: b64.encode(&*k.material),
                key_extension: None,
            })
            .collect(),
        key_container_extension: None,
    }
}

/// Runs a blocking store call off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::unavailable(format!("key pool task failed: {e}")))
}

/// Why a peer KME did not reserve keys.
pub(crate) enum PeerFail {
    /// No answer (transport error, no link).
    Unreachable(String),
    /// It answered with a refusal.
    Refused(String),
}

// ---------------------------------------------------------------------------------------------
// HTTP layer

type AppState = Arc<Kme>;

fn peer_of(ext: Option<Extension<Arc<Peer>>>) -> Arc<Peer> {
    ext.map(|Extension(p)| p).unwrap_or_default()
}

/// The peer KME a request on the peer listener comes from.
fn peer_kme(ext: Option<Extension<Arc<Peer>>>) -> Option<String> {
    peer_of(ext).id.clone()
}

/// The answer to a client certificate that is not a configured peer's.
fn not_a_peer() -> Response {
    (
        StatusCode::FORBIDDEN,
        "certificate is not a configured peer KME",
    )
        .into_response()
}

fn path_id(
    p: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<String, ApiError> {
    p.map(|Path(s)| s)
        .map_err(|e| ApiError::bad(format!("invalid SAE ID in path: {e}")))
}

fn respond<T: Serialize + crate::access::Served>(r: Result<T, ApiError>) -> Response {
    match r {
        Ok(v) => {
            let mut resp = zeroizing_json(&v);
            if let Some(served) = v.served() {
                resp.extensions_mut().insert(served);
            }
            resp
        }
        Err(e) => e.into_response(),
    }
}

/// A 200 JSON response whose body buffer is wiped when hyper drops it: answers carry key bytes
/// (base64). Serialized in one pass into a [`WipingBuf`]. What this cannot reach: hyper may copy
/// a small body into its own write buffer, and rustls copies the plaintext into its record
/// buffers before encrypting; neither wipes (see docs/server.md).
fn zeroizing_json<T: Serialize>(v: &T) -> Response {
    let mut buf = WipingBuf::default();
    if serde_json::to_writer(&mut buf, v).is_err() {
        return ApiError::unavailable("response could not be encoded").into_response();
    }
    (
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from(Bytes::from_owner(buf)),
    )
        .into_response()
}

/// A growable buffer that wipes what it held: on drop, and the old allocation whenever it grows
/// (a plain `Vec` would free it unwiped).
#[derive(Default)]
struct WipingBuf(zeroize::Zeroizing<Vec<u8>>);

impl std::io::Write for WipingBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let need = self.0.len() + b.len();
        if need > self.0.capacity() {
            let mut grown = Vec::with_capacity(need.max(2 * self.0.capacity()).max(256));
            grown.extend_from_slice(&self.0);
            // The old allocation is wiped as it drops.
            self.0 = zeroize::Zeroizing::new(grown);
        }
        self.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl AsRef<[u8]> for WipingBuf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A request body as the standard's JSON object (an empty body is the default request).
/// Arrays and other JSON values are refused, even where serde would map them onto the fields.
fn parse_json<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_object(body, "this request")
}

fn parse_object<T: serde::de::DeserializeOwned>(body: &Bytes, what: &str) -> Result<T, ApiError> {
    // Valid JSON that starts with `{` is an object; anything else (an array, a number) is not
    // one, even where serde would map it onto the fields in order.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad(format!(
            "request body must be a JSON object for {what}"
        )));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad(format!("request body is not valid JSON for {what}: {e}")))
}

fn query_pairs(q: &Option<String>) -> Result<Vec<(String, String)>, ApiError> {
    let Some(q) = q else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for part in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let dec = |s: &str| -> Result<String, ApiError> {
            let s = s.replace('+', " ");
            percent_decode(&s)
                .ok_or_else(|| ApiError::bad("query string is not valid percent-encoded UTF-8"))
        };
        out.push((dec(k)?, dec(v)?));
    }
    Ok(out)
}

pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn parse_uint(name: &str, v: &str) -> Result<u64, ApiError> {
    v.parse::<u64>().map_err(|_| {
        ApiError::bad(format!("{name} shall be a non-negative integer")).detail(json!({ name: v }))
    })
}

async fn status_h(
    State(kme): State<AppState>,
    peer: Option<Extension<Arc<Peer>>>,
    slave: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Response {
    let peer = peer_of(peer);
    let r = async {
        let master = Kme::caller(&peer)?;
        let slave = path_id(slave)?;
        kme.status(&master, &slave).await
    }
    .await;
    respond(r)
}

async fn enc_get(
    State(kme): State<AppState>,
    peer: Option<Extension<Arc<Peer>>>,
    slave: Result<Path<String>, axum::extract::rejection::PathRejection>,
    RawQuery(q): RawQuery,
) -> Response {
    let peer = peer_of(peer);
    let r = async {
        let master = Kme::caller(&peer)?;
        let slave = path_id(slave)?;
        let mut req = KeyRequest::default();
        for (k, v) in query_pairs(&q)? {
            match k.as_str() {
                "number" if req.number.is_none() => req.number = Some(parse_uint("number", &v)?),
                "size" if req.size.is_none() => req.size = Some(parse_uint("size", &v)?),
                _ => {
                    return Err(ApiError::bad(format!(
                        "query parameter {k:?} not allowed (once each: number, size); use POST for other fields"
                    )));
                }
            }
        }
        kme.enc_keys(&master, &slave, req).await
    }
    .await;
    respond(r)
}

async fn enc_post(
    State(kme): State<AppState>,
    peer: Option<Extension<Arc<Peer>>>,
    slave: Result<Path<String>, axum::extract::rejection::PathRejection>,
    body: Bytes,
) -> Response {
    let peer = peer_of(peer);
    let r = async {
        let master = Kme::caller(&peer)?;
        let slave = path_id(slave)?;
        let req: KeyRequest = parse_json(&body)?;
        kme.enc_keys(&master, &slave, req).await
    }
    .await;
    respond(r)
}

async fn dec_get(
    State(kme): State<AppState>,
    peer: Option<Extension<Arc<Peer>>>,
    master: Result<Path<String>, axum::extract::rejection::PathRejection>,
    RawQuery(q): RawQuery,
) -> Response {
    let peer = peer_of(peer);
    let r = async {
        let slave = Kme::caller(&peer)?;
        let master = path_id(master)?;
        let pairs = query_pairs(&q)?;
        let [(k, v)] = pairs.as_slice() else {
            return Err(ApiError::bad(
                "GET dec_keys takes exactly one query parameter key_ID",
            ));
        };
        if k != "key_ID" {
            return Err(ApiError::bad(format!(
                "query parameter {k:?} not allowed; expected key_ID"
            )));
        }
        kme.dec_keys(&slave, &master, vec![v.clone()]).await
    }
    .await;
    respond(r)
}

async fn dec_post(
    State(kme): State<AppState>,
    peer: Option<Extension<Arc<Peer>>>,
    master: Result<Path<String>, axum::extract::rejection::PathRejection>,
    body: Bytes,
) -> Response {
    let peer = peer_of(peer);
    let r = async {
        let slave = Kme::caller(&peer)?;
        let master = path_id(master)?;
        let ids: KeyIds = parse_object(&body, "a Key IDs object")?;
        kme.dec_keys(
            &slave,
            &master,
            ids.key_IDs.into_iter().map(|e| e.key_ID).collect(),
        )
        .await
    }
    .await;
    respond(r)
}

/// The answer to a method the ETSI routes do not define (the standard knows only 200, 400, 401
/// and 503 on them).
async fn etsi_wrong_method(method: http::Method) -> Response {
    ApiError::bad(format!(
        "method {method} is not defined on this route; use GET or POST (status: GET)"
    ))
    .into_response()
}

/// `POST /admin/v1/hsm/{name}/seed`: reseeds an HSM now, for a caller named in its
/// `seed_callers` (not an ETSI route; its errors still carry the Error object).
async fn hsm_seed_h(
    State(kme): State<AppState>,
    peer: Option<Extension<Arc<Peer>>>,
    name: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Response {
    let peer = peer_of(peer);
    let r = async {
        let caller = Kme::caller(&peer)?;
        let name = name
            .map(|Path(n)| n)
            .map_err(|e| ApiError::bad(format!("invalid HSM name: {e}")))?;
        let Some(h) = kme.cfg.hsms.iter().find(|h| h.name == name) else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no HSM named {name:?}"),
            ));
        };
        if !h.seed_callers.contains(&caller) {
            return Err(ApiError::unauthorized(format!(
                "{caller} may not reseed HSM {name} (seed_callers of its [[hsm]] entry)"
            )));
        }
        kme.reseed_hsm(&name)
            .await
            .map(|done| json!({"hsm": name, "reseeded": done}))
            .map_err(|e| ApiError::unavailable(format!("HSM {name} was not reseeded: {e}")))
    }
    .await;
    match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The ETSI 014 router (SAE listener).
pub(crate) fn sae_router(kme: AppState) -> Router {
    Router::new()
        .route("/api/v1/keys/{slave}/status", get(status_h))
        .route("/api/v1/keys/{slave}/enc_keys", get(enc_get).post(enc_post))
        .route(
            "/api/v1/keys/{master}/dec_keys",
            get(dec_get).post(dec_post),
        )
        .route("/admin/v1/hsm/{name}/seed", post(hsm_seed_h))
        .method_not_allowed_fallback(etsi_wrong_method)
        .with_state(kme)
}

/// A JSON request on the peer listener from a configured peer KME, handed to `handle` with the
/// peer's KME ID; a body that does not parse is 400.
async fn peer_json<T, F, Fut>(
    peer: Option<Extension<Arc<Peer>>>,
    body: &Bytes,
    handle: F,
) -> Response
where
    T: serde::de::DeserializeOwned,
    F: FnOnce(String, T) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let Some(from) = peer_kme(peer) else {
        return not_a_peer();
    };
    match serde_json::from_slice(body) {
        Ok(request) => handle(from, request).await,
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn peer_reserve_h(
    State(kme): State<AppState>,
    peer: Option<Extension<Arc<Peer>>>,
    body: Bytes,
) -> Response {
    peer_json(peer, &body, |from, msg| async move {
        match kme.peer_reserve(&from, msg).await {
            Ok(()) => (StatusCode::OK, axum::Json(json!({}))).into_response(),
            Err((s, m)) => (s, m).into_response(),
        }
    })
    .await
}

/// A relay request from the previous hop (`crate::relay`).
async fn peer_relay_h(
    State(kme): State<AppState>,
    peer: Option<Extension<Arc<Peer>>>,
    body: Bytes,
) -> Response {
    peer_json(peer, &body, |from, request| async move {
        match kme.relay_transit(&from, request).await {
            Ok(sealed) => zeroizing_json(&sealed),
            Err((status, failure)) => (status, axum::Json(failure)).into_response(),
        }
    })
    .await
}

/// A relayed pair's status request from the previous hop.
async fn peer_relay_status_h(
    State(kme): State<AppState>,
    peer: Option<Extension<Arc<Peer>>>,
    body: Bytes,
) -> Response {
    peer_json(peer, &body, |from, request| async move {
        match kme.relay_transit_status(&from, request).await {
            Ok(hops) => axum::Json(hops).into_response(),
            Err((status, m)) => (status, m).into_response(),
        }
    })
    .await
}

async fn peer_health_h(
    State(kme): State<AppState>,
    peer: Option<Extension<Arc<Peer>>>,
) -> Response {
    match peer_kme(peer) {
        Some(from) => {
            kme.set_link_up(&from, true);
            axum::Json(json!({"kme_id": kme.cfg.kme_id})).into_response()
        }
        None => not_a_peer(),
    }
}

/// The `.cor` block check (`crate::cor_check`).
async fn peer_block_check_h(
    State(kme): State<AppState>,
    peer: Option<Extension<Arc<Peer>>>,
    body: Bytes,
) -> Response {
    match peer_kme(peer) {
        Some(from) => crate::cor_check::peer_block_check(&kme, &from, &body).await,
        None => not_a_peer(),
    }
}

/// The post-processing channel: Alice's KME upgrades this request on Bob's peer listener.
async fn peer_channel_h(
    State(kme): State<AppState>,
    peer: Option<Extension<Arc<Peer>>>,
    mut req: axum::extract::Request,
) -> Response {
    use crate::link::channel::UPGRADE;
    let Some(from) = peer_kme(peer) else {
        return not_a_peer();
    };
    let Some(rt) = kme.processing.get(&from).cloned() else {
        return (
            StatusCode::NOT_FOUND,
            format!("no post-processing link with {from} here"),
        )
            .into_response();
    };
    if rt.role() != crate::config::LinkRole::Bob {
        return (
            StatusCode::CONFLICT,
            format!("this KME is Alice on the link with {from}: it dials, it is not dialled"),
        )
            .into_response();
    }
    let wants = req
        .headers()
        .get(http::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(UPGRADE.as_bytes()));
    let Some(on_upgrade) = wants
        .then(|| req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>())
        .flatten()
    else {
        return (
            StatusCode::BAD_REQUEST,
            format!("expected an HTTP/1.1 upgrade to {UPGRADE}"),
        )
            .into_response();
    };
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(up) => rt.accept(Box::new(hyper_util::rt::TokioIo::new(up))).await,
            Err(e) => tracing::warn!(peer = %from, error = %e, "channel upgrade failed"),
        }
    });
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (http::header::CONNECTION, "upgrade"),
            (http::header::UPGRADE, UPGRADE),
        ],
    )
        .into_response()
}

/// The peer-KME router.
pub(crate) fn peer_router(kme: AppState) -> Router {
    Router::new()
        .route("/peer/v1/reserve", post(peer_reserve_h))
        .route(crate::relay::RELAY_PATH, post(peer_relay_h))
        .route(crate::relay::STATUS_PATH, post(peer_relay_status_h))
        .route("/peer/v1/health", get(peer_health_h))
        .route(crate::cor_check::PATH, post(peer_block_check_h))
        .route(crate::link::channel::PATH, get(peer_channel_h))
        .with_state(kme)
}

/// Background: expiry of reservations, peer health checks.
pub(crate) async fn housekeeping(kme: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        n += 1;
        let p = kme.pool.clone();
        if let Ok(Ok(count)) = tokio::task::spawn_blocking(move || p.expire(now_ms())).await
            && count > 0
        {
            kme.monitor.event(Event::Expired { number: count });
        }
        {
            for (peer, link) in &kme.links {
                let Some(client) = &link.client else { continue };
                // Up links every 2 s; down links every tick, so service resumes quickly.
                if link.up.load(Ordering::Relaxed) && !n.is_multiple_of(8) {
                    continue;
                }
                let url = format!("{}/peer/v1/health", link.url.trim_end_matches('/'));
                let ok = matches!(
                    tokio::time::timeout(Duration::from_secs(2), client.get(url).send()).await,
                    Ok(Ok(r)) if r.status().is_success()
                );
                kme.set_link_up(peer, ok);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_zeroizing_json_body_is_the_json_of_the_value() {
        // Small, and large enough that the buffer grows several times.
        let keys: Vec<Value> = (0..200)
            .map(|i| json!({"key_ID": i.to_string(), "key": "A".repeat(i)}))
            .collect();
        for v in [
            json!({"keys": [{"key_ID": "x", "key": "AAAA"}], "n": 3}),
            json!({"keys": keys}),
        ] {
            let r = zeroizing_json(&v);
            assert_eq!(r.status(), StatusCode::OK);
            let body = http_body_util::BodyExt::collect(r.into_body())
                .await
                .unwrap()
                .to_bytes();
            assert_eq!(body, serde_json::to_vec(&v).unwrap());
        }
    }
}
