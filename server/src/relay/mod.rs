//! Keys across several hops: trusted-node relay between KMEs (docs/server.md, "Keys across
//! several hops").
//!
//! For a master SAE at KME `path[0]` and slaves at KME `path[n]`, the keys are made on the last
//! link, exactly as for one hop: `path[n-1]` allocates them from its share of that link and
//! `path[n]` durably reserves them for the pair. They then travel back hop by hop: each KME
//! `path[i]` (`0 < i < n`) received from `path[i-1]` a request naming pads, material
//! `path[i-1]` allocated on their link (the key's size plus a share of a 32-byte tag key); it
//! takes the same pads from its own copy of the link, and answers with the keys XOR the pads
//! and one Wegman-Carter tag with a fresh hash key and pad ([`wire::seal`]). `path[0]` opens
//! the answer, checks the tag and only then gives the keys to the master: never a key the
//! slaves cannot fetch. Every intermediate KME sees the keys (the trusted-node model).
//!
//! A hop that cannot go on answers 503 with the link that failed; every KME behind it destroys
//! what it allocated or received for the request (burned, never released: the stores cannot
//! give material back), and the master's KME tries another path that avoids the link, then
//! answers 503.

mod route;
mod wire;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};

use route::LinkName;
pub(crate) use route::Topology;
use wire::{HopStatus, RelayFailure, RelayRequest, RelayResponse, StatusRequest, pad_bits};
pub(crate) use wire::{RELAY_PATH, STATUS_PATH};

use crate::kme::{ApiError, Kme, PeerFail, PeerReserve, blocking, now_ms};
use crate::monitor::Event;
use crate::pool::{AllocRequest, FetchedKey, MasterKeys, PoolError, ReserveRequest};

/// How long a link beyond this KME's own that failed a relay is avoided while another path
/// exists.
const FAILED_LINK_HOLD: Duration = Duration::from_secs(5);

/// Paths a request tries before its master gets 503.
const MAX_PATHS: usize = 3;

/// What a relayed request asks for, as every hop sees it.
#[derive(Clone, Debug)]
pub(crate) struct Order {
    pub(crate) master: String,
    pub(crate) slaves: Vec<String>,
    pub(crate) number: u32,
    pub(crate) size_bits: u32,
    pub(crate) expires_at_ms: u64,
}

/// The recipient name under which a KME takes pads off a link: `relay:<KME>` in the ledgers of
/// both ends of the link.
fn relay_recipient(kme: &str) -> String {
    format!("relay:{kme}")
}

/// A relay's failure at this KME or behind it.
#[derive(Debug)]
pub(crate) struct Failure {
    message: String,
    link: Option<LinkName>,
    status: StatusCode,
}

impl Failure {
    fn at(link: LinkName, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            link: Some(link),
            status: StatusCode::SERVICE_UNAVAILABLE,
        }
    }
    fn refused(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            link: None,
            status,
        }
    }
    fn wire(&self) -> RelayFailure {
        RelayFailure {
            message: self.message.clone(),
            failed_link: self.link.as_ref().map(|l| l.ends().map(str::to_string)),
        }
    }
}

/// Relay counters of one link of this KME.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(crate) struct HopCounters {
    /// Keys relayed over the link (as pads or as the keys of the last hop).
    pub(crate) keys: u64,
    /// Bits of the link's material they took.
    pub(crate) bits: u64,
}

/// This KME's part in relaying: the network, the links that failed lately, the counters.
#[derive(Debug, Default)]
pub(crate) struct Relay {
    topology: Topology,
    failed: Mutex<HashMap<LinkName, Instant>>,
    hops: Mutex<BTreeMap<String, HopCounters>>,
    relayed: Mutex<BTreeMap<&'static str, u64>>,
}

impl Relay {
    pub(crate) fn new(topology: Topology) -> Self {
        Self {
            topology,
            ..Self::default()
        }
    }

    fn count_hop(&self, peer: &str, keys: u64, bits: u64) {
        let mut h = self.hops.lock().unwrap_or_else(|p| p.into_inner());
        let c = h.entry(peer.to_string()).or_default();
        c.keys += keys;
        c.bits += bits;
    }

    fn count_role(&self, role: &'static str, keys: u64) {
        *self
            .relayed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(role)
            .or_default() += keys;
    }

    /// Relay counters by link (peer KME ID).
    pub(crate) fn hop_counters(&self) -> BTreeMap<String, HopCounters> {
        self.hops.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Keys relayed by role (`origin`: for a master here; `transit`: passed through).
    pub(crate) fn role_counters(&self) -> BTreeMap<&'static str, u64> {
        self.relayed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn mark_failed(&self, link: &LinkName) {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(link.clone(), Instant::now());
    }

    /// Links that failed a relay within [`FAILED_LINK_HOLD`].
    fn recently_failed(&self) -> HashSet<LinkName> {
        let mut f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        f.retain(|_, at| at.elapsed() < FAILED_LINK_HOLD);
        f.keys().cloned().collect()
    }
}

impl Kme {
    /// The path a relay to `dest` takes now: none of `avoid`, none of this KME's links that are
    /// down, and preferably none of the links beyond that failed lately (when every path has
    /// one, they are tried again: they may be back).
    fn relay_path(&self, dest: &str, avoid: &HashSet<LinkName>) -> Option<Vec<String>> {
        let me = &self.cfg.kme_id;
        let mut avoid = avoid.clone();
        for peer in self.links.keys() {
            if !self.link_up(peer) {
                avoid.insert(LinkName::new(me, peer));
            }
        }
        let mut preferred = avoid.clone();
        preferred.extend(self.relay.recently_failed());
        let topology = &self.relay.topology;
        topology
            .path(me, dest, &preferred)
            .or_else(|| topology.path(me, dest, &avoid))
    }

    /// The first hop toward `dest` now.
    pub(crate) fn relay_first_hop(&self, dest: &str) -> Option<String> {
        self.relay_path(dest, &HashSet::new())?.get(1).cloned()
    }

    /// `enc_keys` for slaves at `dest`, a KME reached through others: the keys come over the
    /// shortest path that works, or the master gets 503.
    pub(crate) async fn relay_enc_keys(
        &self,
        dest: &str,
        order: Order,
    ) -> Result<Vec<FetchedKey>, ApiError> {
        let mut avoid = HashSet::new();
        let mut failures: Vec<Value> = Vec::new();
        for _ in 0..MAX_PATHS {
            let Some(path) = self.relay_path(dest, &avoid) else {
                break;
            };
            match self.relay_obtain(&path, 0, &order).await {
                Ok(keys) => {
                    self.relay.count_role("origin", keys.len() as u64);
                    self.monitor.event(Event::Relayed {
                        role: "origin",
                        path: path.join(">"),
                        master: order.master.clone(),
                        slaves: order.slaves.join(","),
                        number: keys.len() as u64,
                    });
                    return Ok(keys);
                }
                Err(f) => {
                    failures.push(json!({"path": path.join(">"), "reason": f.message}));
                    let Some(link) = f.link else { break };
                    // This KME's own links are followed by their health checks.
                    if !link.ends().contains(&self.cfg.kme_id.as_str()) {
                        self.relay.mark_failed(&link);
                    }
                    avoid.insert(link);
                }
            }
        }
        let mut e = ApiError::unavailable(format!(
            "no path of working links from {} to {dest}; no key was delivered",
            self.cfg.kme_id
        ));
        for f in failures {
            e = e.detail(f);
        }
        Err(e)
    }

    /// Keys for `order` obtained over `path` from this KME (`path[at]`) on: on the last link,
    /// allocated here and reserved at the slaves' KME; else through the next hop, sealed with
    /// pads of the link to it. Whatever this KME allocated is destroyed on failure.
    async fn relay_obtain(
        &self,
        path: &[String],
        at: usize,
        order: &Order,
    ) -> Result<Vec<FetchedKey>, Failure> {
        let me = &path[at];
        let next = &path[at + 1];
        let link = LinkName::new(me, next);
        if !self.link_up(next) {
            return Err(Failure::at(link, format!("link {me}-{next} is down")));
        }
        if at + 2 == path.len() {
            let (allocs, keys) = self
                .relay_allocate(next, order, order.slaves.clone(), order.size_bits)
                .await?;
            let ids: Vec<_> = allocs.iter().map(|a| a.key_id).collect();
            let msg = PeerReserve {
                master: order.master.clone(),
                slaves: order.slaves.clone(),
                expires_at_ms: order.expires_at_ms,
                keys: allocs,
                path: Some(path.to_vec()),
            };
            if let Err(fail) = self.reserve_at_peer(next, &msg).await {
                drop(keys);
                self.destroy_quietly(ids).await;
                let why = match fail {
                    PeerFail::Refused(m) | PeerFail::Unreachable(m) => m,
                };
                return Err(Failure::at(link, format!("{next} did not reserve: {why}")));
            }
            self.relay.count_hop(
                next,
                keys.len() as u64,
                order.size_bits as u64 * keys.len() as u64,
            );
            return Ok(keys);
        }
        let bits = pad_bits(order.number, order.size_bits);
        let (allocs, pads) = self
            .relay_allocate(next, order, vec![relay_recipient(next)], bits)
            .await?;
        let pad_ids: Vec<_> = allocs.iter().map(|a| a.key_id).collect();
        let pads = in_order(pads, &pad_ids).ok_or_else(|| {
            Failure::refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "pads do not match their allocation",
            )
        })?;
        let request = RelayRequest {
            master: order.master.clone(),
            slaves: order.slaves.clone(),
            path: path.to_vec(),
            number: order.number,
            size_bits: order.size_bits,
            expires_at_ms: order.expires_at_ms,
            pads: allocs,
        };
        let answer = self.send_relay(next, &request).await;
        let opened = answer.and_then(|r| {
            wire::open(&request, &r, &pads)
                .map_err(|m| Failure::at(link.clone(), format!("{next}: {m}")))
        });
        drop(pads);
        let keys = match opened {
            Ok(keys) => keys,
            Err(f) => {
                self.destroy_quietly(pad_ids).await;
                return Err(f);
            }
        };
        self.relay
            .count_hop(next, keys.len() as u64, u64::from(bits) * keys.len() as u64);
        Ok(keys)
    }

    /// Allocates `number` keys of `size_bits` on the link to `peer` for the order's master.
    async fn relay_allocate(
        &self,
        peer: &str,
        order: &Order,
        slaves: Vec<String>,
        size_bits: u32,
    ) -> Result<MasterKeys, Failure> {
        let link = LinkName::new(&self.cfg.kme_id, peer);
        let alloc = AllocRequest {
            pool: peer.to_string(),
            master: order.master.clone(),
            slaves,
            local_slaves: Vec::new(),
            number: order.number as usize,
            size_bits,
            expires_at_ms: order.expires_at_ms,
        };
        let outcome =
            self.pool.allocate_for_master(&alloc).await.map_err(|_| {
                Failure::refused(StatusCode::SERVICE_UNAVAILABLE, "key pool closed")
            })?;
        outcome.map_err(|e| match e {
            PoolError::Insufficient {
                needed_bits,
                available_bits,
                ..
            } => {
                self.check_watermark(peer);
                Failure::at(
                    link.clone(),
                    format!(
                        "insufficient key material on link {link} at {}: {needed_bits} bits \
                         needed, {available_bits} available",
                        self.cfg.kme_id
                    ),
                )
            }
            other => Failure::at(link.clone(), format!("key pool error: {other}")),
        })
    }

    /// Destroys keys this KME allocated for a relay that failed. The allocation handed them to
    /// the master already (so the store counts them spent, never to be allocated again); this
    /// makes sure, as for one hop. A failure here is logged: the keys expire anyway.
    async fn destroy_quietly(&self, ids: Vec<uuid::Uuid>) {
        let p = self.pool.clone();
        if let Ok(Err(e)) = blocking(move || p.destroy(&ids)).await {
            tracing::warn!(error = %e, "relay: destroying used pads");
        }
    }

    /// Sends a relay request to the next hop and reads its answer.
    async fn send_relay(
        &self,
        next: &str,
        request: &RelayRequest,
    ) -> Result<RelayResponse, Failure> {
        let link = LinkName::new(&self.cfg.kme_id, next);
        let (client, url) = self
            .peer_url(next, RELAY_PATH)
            .ok_or_else(|| Failure::at(link.clone(), format!("no client for {next}")))?;
        let resp = client.post(url).json(request).send().await.map_err(|e| {
            self.set_link_up(next, false);
            Failure::at(link.clone(), format!("{next} unreachable: {e}"))
        })?;
        self.set_link_up(next, true);
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| Failure::at(link.clone(), format!("{next}: answer cut: {e}")))?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| Failure::at(link, format!("{next}: bad answer: {e}")));
        }
        // A failure further on names its link; anything else is this link's.
        match serde_json::from_slice::<RelayFailure>(&body) {
            Ok(RelayFailure {
                message,
                failed_link: Some([a, b]),
            }) => Err(Failure::at(LinkName::new(&a, &b), message)),
            Ok(RelayFailure { message, .. }) => {
                Err(Failure::at(link, format!("{next}: {message}")))
            }
            Err(_) => Err(Failure::at(
                link,
                format!(
                    "{next} answered {status}: {}",
                    String::from_utf8_lossy(&body)
                ),
            )),
        }
    }

    /// The peer listener's relay request from `from`: take the pads, obtain the keys over the
    /// rest of the path, answer them sealed.
    pub(crate) async fn relay_transit(
        &self,
        from: &str,
        request: RelayRequest,
    ) -> Result<RelayResponse, (StatusCode, RelayFailure)> {
        let fail = |f: Failure| (f.status, f.wire());
        let at = self.check_transit(from, &request).map_err(fail)?;
        let cap = now_ms().saturating_add(self.cfg.keys.reservation_ttl_secs.saturating_mul(1000));
        let order = Order {
            master: request.master.clone(),
            slaves: request.slaves.clone(),
            number: request.number,
            size_bits: request.size_bits,
            expires_at_ms: request.expires_at_ms.min(cap),
        };
        let recipient = relay_recipient(&self.cfg.kme_id);
        let reserve = ReserveRequest {
            pool: from.to_string(),
            master: order.master.clone(),
            slaves: vec![recipient.clone()],
            expires_at_ms: order.expires_at_ms,
            keys: request.pads.clone(),
        };
        let ids: Vec<_> = request.pads.iter().map(|a| a.key_id).collect();
        let (p, fetch_ids) = (self.pool.clone(), ids.clone());
        let pads = blocking(move || {
            p.reserve_exact(&reserve)?;
            p.fetch(&fetch_ids, &recipient)
                .map_err(|e| PoolError::Store(e.to_string()))
        })
        .await
        .map_err(|_| {
            fail(Failure::refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "key pool task failed",
            ))
        })?
        .map_err(|e| {
            let status = match e {
                PoolError::Conflict(_) => StatusCode::CONFLICT,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            fail(Failure::refused(status, format!("pads: {e}")))
        })?;
        let pads = in_order(pads, &ids).ok_or_else(|| {
            fail(Failure::refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "pads do not match the request",
            ))
        })?;
        let keys = self
            .relay_obtain(&request.path, at, &order)
            .await
            .map_err(fail)?;
        let sealed = wire::seal(&request, &keys, &pads)
            .map_err(|m| fail(Failure::refused(StatusCode::SERVICE_UNAVAILABLE, m)))?;
        let bits = u64::from(pad_bits(request.number, request.size_bits));
        self.relay
            .count_hop(from, keys.len() as u64, bits * keys.len() as u64);
        self.relay.count_role("transit", keys.len() as u64);
        self.monitor.event(Event::Relayed {
            role: "transit",
            path: request.path.join(">"),
            master: order.master,
            slaves: order.slaves.join(","),
            number: keys.len() as u64,
        });
        Ok(sealed)
    }

    /// Checks a relay request from `from`; returns this KME's position on its path.
    fn check_transit(&self, from: &str, r: &RelayRequest) -> Result<usize, Failure> {
        let bad = |m: String| Failure::refused(StatusCode::BAD_REQUEST, m);
        let path = &r.path;
        let unique: HashSet<&String> = path.iter().collect();
        let at = path.iter().position(|k| k == &self.cfg.kme_id);
        let Some(at) = at.filter(|&i| unique.len() == path.len() && i > 0 && i + 1 < path.len())
        else {
            return Err(bad(format!(
                "path {} does not pass through {} (distinct KMEs, this one neither first nor last)",
                path.join(">"),
                self.cfg.kme_id
            )));
        };
        if path[at - 1] != from || !self.links.contains_key(&path[at + 1]) {
            return Err(bad(format!(
                "path {}: {from} is not the hop before this KME, or {} is not a peer of it",
                path.join(">"),
                path[at + 1]
            )));
        }
        let k = &self.cfg.keys;
        if r.number == 0 || r.number > k.max_per_request {
            return Err(bad(format!(
                "number {} outside 1..={}",
                r.number, k.max_per_request
            )));
        }
        if !r.size_bits.is_multiple_of(8) || r.size_bits < k.min_size || r.size_bits > k.max_size {
            return Err(bad(format!(
                "size {} bits: expected a multiple of 8 in {}..={}",
                r.size_bits, k.min_size, k.max_size
            )));
        }
        let want = pad_bits(r.number, r.size_bits);
        if r.pads.len() != r.number as usize || r.pads.iter().any(|p| p.size_bits != want) {
            return Err(bad(format!("expected {} pads of {want} bits", r.number)));
        }
        if r.master.is_empty() || r.slaves.is_empty() {
            return Err(bad("master and slaves must be named".into()));
        }
        Ok(at)
    }

    /// Whether a reservation from `from` for `master` relayed along `path` is one this KME
    /// ends: the path's last KME, `from` before it, the master at its first.
    pub(crate) fn check_relayed_reserve(
        &self,
        from: &str,
        master: &str,
        path: &[String],
    ) -> Result<(), String> {
        let unique: HashSet<&String> = path.iter().collect();
        let n = path.len();
        if n < 3
            || unique.len() != n
            || path[n - 1] != self.cfg.kme_id
            || path[n - 2] != from
            || self.kme_of(master) != Some(path[0].as_str())
        {
            return Err(format!(
                "relayed reservation along {} from {from} for {master}: not a path that ends \
                 here with {master} at its first KME",
                path.join(">")
            ));
        }
        Ok(())
    }

    /// The allocatable material of every hop toward `dest`, and the path (`None`: no path
    /// of links up, or a hop did not answer).
    pub(crate) async fn relay_status(
        &self,
        dest: &str,
    ) -> (Option<Vec<String>>, Option<Vec<HopStatus>>) {
        let Some(path) = self.relay_path(dest, &HashSet::new()) else {
            return (None, None);
        };
        let hops = self.hops_from(&path, 0).await.ok();
        (Some(path), hops)
    }

    /// The hops of `path` from this KME (`path[at]`) on.
    async fn hops_from(&self, path: &[String], at: usize) -> Result<Vec<HopStatus>, String> {
        let next = &path[at + 1];
        if !self.link_up(next) {
            return Err(format!("link {}-{next} is down", self.cfg.kme_id));
        }
        let mut hops = vec![HopStatus {
            from: self.cfg.kme_id.clone(),
            to: next.clone(),
            allocatable_bits: self.pool.stats(next).allocatable_bytes.saturating_mul(8),
        }];
        if at + 2 < path.len() {
            let (client, url) = self.peer_url(next, STATUS_PATH).ok_or("no client")?;
            let resp = client
                .post(url)
                .json(&StatusRequest {
                    path: path.to_vec(),
                })
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("{next} answered {}", resp.status()));
            }
            let rest: Vec<HopStatus> = resp.json().await.map_err(|e| e.to_string())?;
            if rest.len() != path.len() - at - 2 {
                return Err(format!("{next} reported {} hops", rest.len()));
            }
            hops.extend(rest);
        }
        Ok(hops)
    }

    /// The peer listener's status request from `from`.
    pub(crate) async fn relay_transit_status(
        &self,
        from: &str,
        r: StatusRequest,
    ) -> Result<Vec<HopStatus>, (StatusCode, String)> {
        let at = r.path.iter().position(|k| k == &self.cfg.kme_id);
        match at {
            Some(i)
                if i > 0
                    && i + 1 < r.path.len()
                    && r.path[i - 1] == from
                    && self.links.contains_key(&r.path[i + 1]) =>
            {
                self.hops_from(&r.path, i)
                    .await
                    .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e))
            }
            _ => Err((
                StatusCode::BAD_REQUEST,
                format!(
                    "path {} does not pass through {} after {from}",
                    r.path.join(">"),
                    self.cfg.kme_id
                ),
            )),
        }
    }
}

impl Kme {
    /// The relay's part of `/metrics`: per link of this KME, the keys relayed over it and the
    /// bits they took; per role, the keys relayed.
    pub(crate) fn relay_prometheus(&self) -> String {
        use std::fmt::Write as _;
        let kme = &self.cfg.kme_id;
        let hops = self.relay.hop_counters();
        let mut s = String::new();
        for (name, help, pick) in [
            (
                "qkd_kme_relay_hop_keys_total",
                "Keys relayed over a link of this KME (as pads, or as the keys of the last hop).",
                (|c: &HopCounters| c.keys) as fn(&HopCounters) -> u64,
            ),
            (
                "qkd_kme_relay_hop_bits_total",
                "Bits of a link's key material that relays took.",
                |c: &HopCounters| c.bits,
            ),
        ] {
            let _ = writeln!(s, "# HELP {name} {help}");
            let _ = writeln!(s, "# TYPE {name} counter");
            for (peer, c) in &hops {
                let _ = writeln!(s, "{name}{{kme=\"{kme}\",peer=\"{peer}\"}} {}", pick(c));
            }
        }
        let name = "qkd_kme_relayed_keys_total";
        let _ = writeln!(
            s,
            "# HELP {name} Keys relayed over several hops, for a master here (origin) or through \
             here (transit)."
        );
        let _ = writeln!(s, "# TYPE {name} counter");
        let roles = self.relay.role_counters();
        for role in ["origin", "transit"] {
            let n = roles.get(role).copied().unwrap_or(0);
            let _ = writeln!(s, "{name}{{kme=\"{kme}\",role=\"{role}\"}} {n}");
        }
        s
    }

    /// The relay's part of `/api/state`: per-hop consumption and keys by role.
    pub(crate) fn relay_state(&self) -> Value {
        json!({
            "hops": self.relay.hop_counters(),
            "keys": self.relay.role_counters(),
            "remote_kmes": self.cfg.network.kmes.iter().map(|k| &k.id).collect::<Vec<_>>(),
        })
    }
}

/// `keys` in the order of `ids` (each exactly once), whatever order the store gave them in.
fn in_order(keys: Vec<FetchedKey>, ids: &[uuid::Uuid]) -> Option<Vec<FetchedKey>> {
    let mut by_id: HashMap<uuid::Uuid, FetchedKey> = keys.into_iter().map(|k| (k.id, k)).collect();
    let ordered: Vec<FetchedKey> = ids.iter().filter_map(|id| by_id.remove(id)).collect();
    (ordered.len() == ids.len() && by_id.is_empty()).then_some(ordered)
}

/// The keys a relayed pair can still get: the fewest over the hops, each hop's material divided
/// by what one key of `size_bits` takes there (pads carry their tag share).
pub(crate) fn keys_over(hops: &[HopStatus], size_bits: u32) -> u64 {
    let n = hops.len();
    hops.iter()
        .enumerate()
        .map(|(i, h)| {
            let per_key = if i + 1 == n {
                size_bits
            } else {
                pad_bits(1, size_bits)
            };
            h.allocatable_bits / u64::from(per_key.max(1))
        })
        .min()
        .unwrap_or(0)
}

/// The status extension of a relayed pair: its path and hops.
pub(crate) fn status_extension(path: Option<&[String]>, hops: Option<&[HopStatus]>) -> Value {
    json!({
        "relay_path": path.map(|p| p.join(">")),
        "relay_hops": hops,
    })
}
