//! The KME configuration file (TOML). Every field is documented in docs/server.md.
//! Relative paths are resolved against the directory of the configuration file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use qkd_core::pipeline::PipelineError;
use serde::{Deserialize, Serialize};

/// Errors loading or checking a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The path.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The whole configuration of one KME.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This KME's ID (a string, e.g. `KME_A`).
    pub kme_id: String,
    /// Directory of the durable key pool. `None`: keys in memory only (tests).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Address of the SAE-facing ETSI 014 listener (port 0: ephemeral).
    pub listen: SocketAddr,
    /// Address of the listener for peer KMEs (omit when there are no links).
    #[serde(default)]
    pub peer_listen: Option<SocketAddr>,
    /// Optional plain-HTTP monitoring listener (metrics, events, dashboard): keep it on localhost.
    #[serde(default)]
    pub monitor_listen: Option<SocketAddr>,
    /// TLS material.
    pub tls: TlsConfig,
    /// Key request limits and the reservation TTL.
    #[serde(default)]
    pub keys: KeyLimits,
    /// SAEs attached to this KME.
    #[serde(default, rename = "sae")]
    pub saes: Vec<SaeConfig>,
    /// The local pool (master and slave both on this KME). `None`: no local deliveries.
    #[serde(default)]
    pub local_pool: Option<LocalPoolConfig>,
    /// Links to peer KMEs.
    #[serde(default, rename = "link")]
    pub links: Vec<LinkConfig>,
    /// Timeouts and caps of the listeners.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// How the key store in `state_dir` is opened.
    #[serde(default)]
    pub store: StoreConfig,
    /// The network beyond this KME's own links: keys for SAEs there are relayed hop by hop.
    #[serde(default, skip_serializing_if = "NetworkConfig::is_empty")]
    pub network: NetworkConfig,
    /// HSMs whose random generators this KME reseeds (PKCS#11).
    #[serde(default, rename = "hsm", skip_serializing_if = "Vec::is_empty")]
    pub hsms: Vec<HsmConfig>,
}

/// An HSM this KME reseeds with 256 bits (docs/server.md, "HSMs over PKCS#11"): on a schedule
/// and on demand.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmConfig {
    /// Its name (in events, metrics and the on-demand route).
    pub name: String,
    /// The PKCS#11 module (shared library).
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// Who logs in.
    #[serde(default)]
    pub user: crate::hsm::HsmUser,
    /// A file holding the PIN (mode 0600 or 0400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_file: Option<PathBuf>,
    /// An environment variable holding the PIN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_env: Option<String>,
    /// Minutes between reseeds, 1 to 9; 0: on demand only.
    #[serde(default)]
    pub reseed_minutes: u8,
    /// Where the 256 bits come from: `os` (the OS CSPRNG) or `link:<PEER>` (fresh QKD key from
    /// this KME's share of the link to PEER, consumed like a delivery).
    pub seed_source: String,
    /// SAE IDs whose certificates may ask for a reseed (`POST /admin/v1/hsm/<name>/seed` on
    /// the SAE listener).
    #[serde(default)]
    pub seed_callers: Vec<String>,
}

impl HsmConfig {
    /// The peer whose link feeds the seeds, for `seed_source = "link:<PEER>"`.
    pub fn seed_link(&self) -> Option<&str> {
        self.seed_source.strip_prefix("link:")
    }
}

/// The KME network as this KME must know it to relay keys through trusted nodes
/// (docs/server.md, "Keys across several hops"): every link of the network, and the SAEs of the
/// KMEs this KME has no link with. Paths are the shortest over these links.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Every link between two KMEs, as pairs of KME IDs. This KME's own links (`[[link]]`)
    /// are part of the network whether listed here or not.
    #[serde(default)]
    pub links: Vec<[String; 2]>,
    /// The KMEs this KME has no link with, and their SAEs.
    #[serde(default, rename = "kme")]
    pub kmes: Vec<RemoteKmeConfig>,
}

impl NetworkConfig {
    /// Nothing beyond this KME's own links.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty() && self.kmes.is_empty()
    }
}

/// A KME reached only through others, and the SAEs attached to it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteKmeConfig {
    /// Its KME ID.
    pub id: String,
    /// The SAE IDs attached to it.
    pub saes: Vec<String>,
}

/// The key store's encryption at rest (docs/store.md §7): the key-encryption key (KEK) comes
/// from a file or an environment variable, never from the configuration text.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// A file (mode 0600 or 0400) holding the 32-byte KEK: raw, 64 hex digits or base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kek_file: Option<PathBuf>,
    /// An environment variable holding the KEK (hex or base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kek_env: Option<String>,
    /// The `[[hsm]]` that seals the KEK: the KEK is made at the store's creation, wrapped by a
    /// key that never leaves the token, and kept only wrapped, in `kek_sealed_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kek_hsm: Option<String>,
    /// Where the sealed (wrapped) KEK is kept, with `kek_hsm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kek_sealed_file: Option<PathBuf>,
}

impl StoreConfig {
    /// The store options: encrypted when a KEK is configured. A KEK sealed by an HSM
    /// (`kek_hsm`) is not read here but by `qkd serve` (`crate::sealing`).
    pub fn options(&self) -> Result<qkd_store::StoreOptions, ConfigError> {
        // At most one source: `Config::validate` checks it.
        let kek = match (&self.kek_file, &self.kek_env) {
            (Some(f), _) => Some(qkd_store::Kek::from_file(f)),
            (None, Some(v)) => Some(qkd_store::Kek::from_env(v)),
            (None, None) => None,
        }
        .transpose()
        .map_err(|e| ConfigError::Invalid(format!("store: {e}")))?;
        Ok(qkd_store::StoreOptions {
            encryption: kek,
            ..qkd_store::StoreOptions::default()
        })
    }
}

/// Timeouts and caps that keep slow, idle or greedy clients from taking a listener away from
/// everyone else. Each listener (SAE, peer, monitor) counts on its own.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// A TLS handshake must finish within this many milliseconds.
    pub handshake_timeout_ms: u64,
    /// Request headers must arrive within this many milliseconds, counted from the moment the
    /// server waits for them (so it is also the keep-alive idle time of HTTP/1.1); the first
    /// request of a connection must arrive within it too.
    pub header_timeout_ms: u64,
    /// A connection without a byte in either direction for this many milliseconds is closed.
    pub idle_timeout_ms: u64,
    /// A request body must arrive within this many milliseconds.
    pub body_timeout_ms: u64,
    /// Largest request body on the SAE and monitor listeners, in bytes.
    pub max_body_bytes: usize,
    /// Largest request body on the peer listener (reservations of many keys), in bytes.
    pub peer_max_body_bytes: usize,
    /// Open connections per listener, handshakes included.
    pub max_connections: usize,
    /// Open connections per client identity (SAE, peer KME, or all unidentified ones together).
    pub max_connections_per_client: usize,
    /// Requests in flight per listener.
    pub max_in_flight: usize,
    /// Requests in flight per client identity.
    pub max_in_flight_per_client: usize,
    /// On shutdown, requests in flight may finish within this many milliseconds; then their
    /// connections are closed.
    pub shutdown_grace_ms: u64,
}

impl LimitsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let fields = [
            ("handshake_timeout_ms", self.handshake_timeout_ms as usize),
            ("header_timeout_ms", self.header_timeout_ms as usize),
            ("idle_timeout_ms", self.idle_timeout_ms as usize),
            ("body_timeout_ms", self.body_timeout_ms as usize),
            ("max_body_bytes", self.max_body_bytes),
            ("peer_max_body_bytes", self.peer_max_body_bytes),
            ("max_connections", self.max_connections),
            (
                "max_connections_per_client",
                self.max_connections_per_client,
            ),
            ("max_in_flight", self.max_in_flight),
            ("max_in_flight_per_client", self.max_in_flight_per_client),
            ("shutdown_grace_ms", self.shutdown_grace_ms as usize),
        ];
        for (name, v) in fields {
            if v == 0 {
                return Err(ConfigError::Invalid(format!(
                    "limits.{name} is 0; expected a positive value"
                )));
            }
        }
        Ok(())
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            handshake_timeout_ms: 5_000,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            body_timeout_ms: 10_000,
            max_body_bytes: 256 << 10,
            peer_max_body_bytes: 16 << 20,
            max_connections: 4096,
            max_connections_per_client: 64,
            max_in_flight: 512,
            max_in_flight_per_client: 32,
            shutdown_grace_ms: 5_000,
        }
    }
}

/// TLS files and protocol settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA that issued every SAE and peer KME certificate.
    pub ca: PathBuf,
    /// PEM certificate (chain) of this KME (server certificate; also its client certificate
    /// towards peer KMEs).
    pub cert: PathBuf,
    /// PEM private key of this KME.
    pub key: PathBuf,
    /// Lowest TLS version accepted: `"1.2"` (default) or `"1.3"`.
    #[serde(default = "default_min_tls")]
    pub min_version: String,
    /// PEM certificate revocation lists of the CA (e.g. from `qkd pki revoke`): SAE and peer
    /// certificates they list are refused. Read at start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crl: Vec<PathBuf>,
}

fn default_min_tls() -> String {
    "1.2".into()
}

/// Limits published in Status and enforced on key requests.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyLimits {
    /// Default key size in bits (Status `key_size`).
    pub default_size: u32,
    /// Smallest key size in bits.
    pub min_size: u32,
    /// Largest key size in bits.
    pub max_size: u32,
    /// Most keys in one request.
    pub max_per_request: u32,
    /// Status `max_key_count` (keys of `default_size` the KME can hold).
    pub max_key_count: u64,
    /// Most additional slave SAE IDs in one request (0: no multicast).
    pub max_sae_id_count: u32,
    /// Seconds a reserved key waits for its slave(s) before it is destroyed (both KMEs).
    pub reservation_ttl_secs: u64,
}

impl Default for KeyLimits {
    fn default() -> Self {
        Self {
            default_size: 256,
            min_size: 64,
            max_size: 8192,
            max_per_request: 128,
            max_key_count: 1_000_000,
            max_sae_id_count: 4,
            reservation_ttl_secs: 300,
        }
    }
}

/// How an SAE is recognised: from its client certificate, or (opt-in) its IP address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaeMatch {
    /// Subject common name equals `value` (default: the SAE ID).
    #[default]
    Cn,
    /// Serial number (hex, colons optional) equals `value` and the issuer DN equals `issuer`.
    Serial,
    /// SHA-256 of the SubjectPublicKeyInfo (hex) equals `value`.
    Fingerprint,
    /// No certificate: the client connects from `value`, an IP address or CIDR block. For
    /// encryptors that cannot present a client certificate; anyone who can send from that
    /// address is this SAE (docs/server.md).
    Address,
}

/// One SAE attached to this KME, and what it may do.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaeConfig {
    /// The SAE ID.
    pub id: String,
    /// How its certificate is recognised (default `cn`).
    #[serde(default = "default_match", rename = "match")]
    pub matcher: SaeMatch,
    /// The value to match (CN, serial, fingerprint, or IP address / CIDR block); for `cn`
    /// defaults to the SAE ID.
    #[serde(default)]
    pub value: Option<String>,
    /// Issuer DN (RFC 4514 string as x509-parser prints it), required for `serial`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The slave SAEs this SAE may name as master (`None`: every SAE this KME knows).
    #[serde(default)]
    pub allowed_slaves: Option<Vec<String>>,
    /// Most keys per second it may take as master (token bucket; the burst is one full
    /// request of `keys.max_per_request`). `None`: no rate limit.
    #[serde(default)]
    pub max_keys_per_sec: Option<f64>,
    /// Largest share (0 < share <= 1) of the key material this KME can allocate for the pair
    /// that one request may take. `None`: 1.
    #[serde(default)]
    pub max_pool_share: Option<f64>,
    /// Its own cap on open connections (default `limits.max_connections_per_client`).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Its own cap on requests in flight (default `limits.max_in_flight_per_client`).
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// How it receives its keys (default `etsi`).
    #[serde(default, skip_serializing_if = "SaeKind::is_etsi")]
    pub kind: SaeKind,
    /// For `kind = "pkcs11"`: the `[[hsm]]` whose token receives its keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsm: Option<String>,
}

/// How an SAE receives its keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SaeKind {
    /// It calls the ETSI GS QKD 014 routes over mutual TLS.
    #[default]
    Etsi,
    /// Its keys are created in the token of an `[[hsm]]` as secret-key objects labelled with
    /// their key IDs, as the slave of a master's request; it never calls this KME.
    Pkcs11,
}

impl SaeKind {
    fn is_etsi(&self) -> bool {
        *self == Self::Etsi
    }
}

fn default_match() -> SaeMatch {
    SaeMatch::Cn
}

/// Where a pool's key material comes from.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// Watch a directory for `.cor` files (same name and bytes at both KMEs). A file is taken
    /// when its size has not changed for one poll; a link's file becomes key (its bytes `32..`)
    /// once the peer KME holds equal bytes (the block check), then it is overwritten and
    /// deleted.
    Cor {
        /// The directory.
        dir: PathBuf,
        /// Poll interval in milliseconds.
        #[serde(default = "default_poll_ms")]
        poll_ms: u64,
    },
    /// INSECURE, for demos: both KMEs derive identical blocks from a seed in their configs.
    Simulated {
        /// Shared seed (any string; both KMEs must use the same).
        seed: String,
        /// Bytes per block.
        #[serde(default = "default_block_bytes")]
        block_bytes: u32,
        /// Blocks made at start-up.
        #[serde(default = "default_initial_blocks")]
        initial_blocks: u64,
        /// A new block every this many milliseconds (0: none after start-up).
        #[serde(default)]
        interval_ms: u64,
        /// Stop after this many blocks.
        #[serde(default = "default_max_blocks")]
        max_blocks: u64,
    },
    /// Local pool only: fresh bytes from the OS CSPRNG, topped up to `target_bytes`.
    Random {
        /// Allocatable bytes kept available.
        #[serde(default = "default_target_bytes")]
        target_bytes: u64,
    },
    /// Fed by the caller (e.g. the built-in pipeline) through [`crate::ServerHandle::add_block`].
    External,
    /// Raw sifted key files written by the QKD device, post-processed with the peer KME (the
    /// link needs `processing`). A file is taken once its size has not changed for one poll;
    /// names are block-ID prefixes (`[A-Za-z0-9._-]`, not starting with `.`).
    RawDir {
        /// The directory.
        dir: PathBuf,
        /// Poll interval in milliseconds.
        #[serde(default = "default_poll_ms")]
        poll_ms: u64,
    },
    /// Raw sifted key blocks from the device driver over a Unix socket (framing in
    /// docs/server.md), spooled durably into `dir` and then handled as `raw_dir`.
    RawStream {
        /// The Unix socket the driver connects to.
        socket: PathBuf,
        /// The spool directory.
        dir: PathBuf,
    },
    /// INSECURE, for demos and benchmarks: both KMEs derive correlated raw key from a seed in
    /// their configs (Alice's bits, and Bob's with errors at `qber`), then post-process it.
    SimulatedDevice {
        /// Shared seed (any string; both KMEs must use the same).
        seed: String,
        /// Error rate of Bob's raw key.
        #[serde(default = "default_sim_qber")]
        qber: f64,
        /// Error model: `iid` or `burst` (DESIGN §6).
        #[serde(default = "default_sim_errors")]
        errors: String,
        /// Raw bits per second the simulated device produces (0: as fast as they are used).
        #[serde(default)]
        raw_bits_per_sec: u64,
    },
}

impl SourceConfig {
    /// Whether this source delivers raw key that the two KMEs post-process.
    pub fn is_raw(&self) -> bool {
        matches!(
            self,
            Self::RawDir { .. } | Self::RawStream { .. } | Self::SimulatedDevice { .. }
        )
    }
}

fn default_sim_qber() -> f64 {
    0.02
}
fn default_sim_errors() -> String {
    "iid".into()
}

/// Which end of the QKD link this KME's device is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkRole {
    /// The transmitter: drives the protocol and dials the peer.
    Alice,
    /// The receiver: answers on its peer listener.
    Bob,
}

/// How a link with a raw source post-processes its raw key with the peer KME (both KMEs of a
/// link must agree on everything but `role`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessingConfig {
    /// This KME's end of the link.
    pub role: LinkRole,
    /// The pre-shared authentication secret installed at commissioning (read once, when the
    /// link's authentication pool is created; both KMEs hold the same bytes).
    pub auth_psk: PathBuf,
    /// Raw bits per block (a raw file is cut into blocks of this size).
    #[serde(default = "default_pp_block_bits")]
    pub block_bits: usize,
    /// Bits disclosed per block for the QBER estimate.
    #[serde(default = "default_pp_sample_bits")]
    pub sample_bits: usize,
    /// Cascade variant.
    #[serde(default = "default_pp_algorithm")]
    pub algorithm: String,
    /// Cascade frame bits.
    #[serde(default = "default_pp_frame_bits")]
    pub frame_bits: usize,
    /// QBER limit: blocks above it yield no key and raise the `qber_alarm` link state.
    #[serde(default = "default_pp_max_qber")]
    pub max_qber: f64,
    /// Secrecy parameter of each final key.
    #[serde(default = "default_pp_eps")]
    pub eps_sec: f64,
    /// Failure probability of the QBER bound.
    #[serde(default = "default_pp_eps")]
    pub eps_pe: f64,
    /// Correctness parameter.
    #[serde(default = "default_pp_eps_cor")]
    pub eps_cor: f64,
    /// Blocks Alice keeps in flight (raise it with the round trip).
    #[serde(default = "default_pp_in_flight")]
    pub in_flight: usize,
    /// Bits of each final key set aside for future authentication (a multiple of 128).
    #[serde(default = "default_pp_auth_share")]
    pub auth_share_bits: u32,
    /// A block with no message for this many seconds ends on both sides (discarded).
    #[serde(default = "default_pp_block_timeout")]
    pub block_timeout_secs: u64,
}

fn default_pp_block_bits() -> usize {
    1 << 24
}
fn default_pp_sample_bits() -> usize {
    1 << 16
}
fn default_pp_algorithm() -> String {
    qkd_core::pipeline::DEFAULT_ALGORITHM.into()
}
fn default_pp_frame_bits() -> usize {
    qkd_core::pipeline::DEFAULT_FRAME_BITS
}
fn default_pp_max_qber() -> f64 {
    0.11
}
fn default_pp_eps() -> f64 {
    1e-10
}
fn default_pp_eps_cor() -> f64 {
    1e-15
}
fn default_pp_in_flight() -> usize {
    4
}
fn default_pp_auth_share() -> u32 {
    1024
}
fn default_pp_block_timeout() -> u64 {
    60
}

impl ProcessingConfig {
    /// The defaults for `role`, authenticated from the secret at `auth_psk`.
    pub fn new(role: LinkRole, auth_psk: PathBuf) -> Self {
        Self {
            role,
            auth_psk,
            block_bits: default_pp_block_bits(),
            sample_bits: default_pp_sample_bits(),
            algorithm: default_pp_algorithm(),
            frame_bits: default_pp_frame_bits(),
            max_qber: default_pp_max_qber(),
            eps_sec: default_pp_eps(),
            eps_pe: default_pp_eps(),
            eps_cor: default_pp_eps_cor(),
            in_flight: default_pp_in_flight(),
            auth_share_bits: default_pp_auth_share(),
            block_timeout_secs: default_pp_block_timeout(),
        }
    }

    /// The protocol settings of the sessions.
    pub fn pipeline(&self) -> qkd_core::pipeline::PipelineConfig {
        qkd_core::pipeline::PipelineConfig {
            block_bits: self.block_bits,
            sample_bits: self.sample_bits,
            algorithm: self.algorithm.clone(),
            frame_bits: self.frame_bits,
            eps_pe: self.eps_pe,
            eps_sec: self.eps_sec,
            eps_cor: self.eps_cor,
            max_qber: self.max_qber,
            ..Default::default()
        }
    }
}

fn default_poll_ms() -> u64 {
    200
}
fn default_block_bytes() -> u32 {
    1 << 16
}
fn default_initial_blocks() -> u64 {
    16
}
fn default_max_blocks() -> u64 {
    1 << 20
}
fn default_target_bytes() -> u64 {
    1 << 22
}

/// The local pool.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalPoolConfig {
    /// Its source (usually `random`).
    pub source: SourceConfig,
    /// Low-watermark in bytes: an event when allocatable material drops below.
    #[serde(default)]
    pub low_watermark_bytes: u64,
}

/// A link to a peer KME.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    /// The peer's KME ID (the CN of its certificate).
    pub peer: String,
    /// Base URL of the peer's KME listener, e.g. `https://127.0.0.1:8446`.
    pub url: String,
    /// SAE IDs attached to the peer KME.
    pub saes: Vec<String>,
    /// Source of key material on this link.
    pub source: SourceConfig,
    /// Low-watermark in bytes (allocatable by this side).
    #[serde(default)]
    pub low_watermark_bytes: u64,
    /// Post-processing with the peer KME (required with a raw source, refused without one).
    #[serde(default)]
    pub processing: Option<ProcessingConfig>,
    /// Low-watermark of the authentication pool in bits: an event when it drops below.
    #[serde(default = "default_auth_low_watermark")]
    pub auth_low_watermark_bits: u64,
}

fn default_auth_low_watermark() -> u64 {
    1 << 16
}

impl Config {
    /// Reads, parses and checks a configuration file; relative paths become absolute.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.resolve_paths(base);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Makes every relative path absolute against `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(d) = &mut self.state_dir {
            fix(d);
        }
        fix(&mut self.tls.ca);
        fix(&mut self.tls.cert);
        fix(&mut self.tls.key);
        self.tls.crl.iter_mut().for_each(fix);
        if let Some(f) = &mut self.store.kek_sealed_file {
            fix(f);
        }
        if let Some(f) = &mut self.store.kek_file {
            fix(f);
        }
        for h in &mut self.hsms {
            h.pin_file.iter_mut().for_each(fix);
        }
        for l in &mut self.links {
            match &mut l.source {
                SourceConfig::Cor { dir, .. } | SourceConfig::RawDir { dir, .. } => fix(dir),
                SourceConfig::RawStream { socket, dir } => {
                    fix(socket);
                    fix(dir);
                }
                _ => {}
            }
            if let Some(p) = &mut l.processing {
                fix(&mut p.auth_psk);
            }
        }
    }

    /// Checks limits and IDs for consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let k = &self.keys;
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.kme_id.is_empty() {
            return bad("kme_id is empty".into());
        }
        for (name, v) in [
            ("min_size", k.min_size),
            ("max_size", k.max_size),
            ("default_size", k.default_size),
        ] {
            if v == 0 || v % 8 != 0 {
                return bad(format!(
                    "keys.{name} is {v}; expected a positive multiple of 8"
                ));
            }
        }
        if !(k.min_size <= k.default_size && k.default_size <= k.max_size) {
            return bad(format!(
                "keys: expected min_size <= default_size <= max_size, got {} / {} / {}",
                k.min_size, k.default_size, k.max_size
            ));
        }
        if k.max_size > 1 << 20 {
            return bad(format!(
                "keys.max_size is {}; at most 1048576 bits supported",
                k.max_size
            ));
        }
        if k.max_per_request == 0 {
            return bad("keys.max_per_request must be at least 1".into());
        }
        if !matches!(self.tls.min_version.as_str(), "1.2" | "1.3") {
            return bad(format!(
                "tls.min_version is {:?}; expected \"1.2\" or \"1.3\"",
                self.tls.min_version
            ));
        }
        let mut ids = std::collections::HashSet::new();
        for s in &self.saes {
            if s.id.is_empty() || !ids.insert(s.id.clone()) {
                return bad(format!("SAE ID {:?} is empty or listed twice", s.id));
            }
            match (s.kind, &s.hsm) {
                (SaeKind::Pkcs11, Some(h)) if self.hsms.iter().any(|x| &x.name == h) => {}
                (SaeKind::Pkcs11, Some(h)) => {
                    return bad(format!("SAE {}: hsm {h:?} is not an [[hsm]]", s.id));
                }
                (SaeKind::Pkcs11, None) => {
                    return bad(format!(
                        "SAE {}: kind = \"pkcs11\" needs hsm, the [[hsm]] that receives its keys",
                        s.id
                    ));
                }
                (SaeKind::Etsi, Some(_)) => {
                    return bad(format!("SAE {}: hsm is only for kind = \"pkcs11\"", s.id));
                }
                (SaeKind::Etsi, None) => {}
            }
            if s.kind == SaeKind::Pkcs11 && (s.matcher != SaeMatch::Cn || s.value.is_some()) {
                return bad(format!(
                    "SAE {}: a pkcs11 SAE never calls this KME; remove match and value",
                    s.id
                ));
            }
            if s.matcher == SaeMatch::Serial && s.issuer.is_none() {
                return bad(format!("SAE {}: match = \"serial\" needs issuer", s.id));
            }
            if s.matcher != SaeMatch::Cn && s.value.is_none() {
                return bad(format!("SAE {}: match needs value", s.id));
            }
            if s.matcher == SaeMatch::Address
                && let Some(v) = &s.value
            {
                crate::cidr::Cidr::parse(v)
                    .map_err(|e| ConfigError::Invalid(format!("SAE {}: value {e}", s.id)))?;
            }
            if let Some(r) = s.max_keys_per_sec
                && !(r.is_finite() && r > 0.0)
            {
                return bad(format!(
                    "SAE {}: max_keys_per_sec is {r}; expected a positive number",
                    s.id
                ));
            }
            if let Some(f) = s.max_pool_share
                && !(f > 0.0 && f <= 1.0)
            {
                return bad(format!(
                    "SAE {}: max_pool_share is {f}; expected 0 < share <= 1",
                    s.id
                ));
            }
            if s.max_connections == Some(0) || s.max_in_flight == Some(0) {
                return bad(format!(
                    "SAE {}: max_connections and max_in_flight must be at least 1",
                    s.id
                ));
            }
        }
        self.limits.validate()?;
        let mut peers = std::collections::HashSet::new();
        for l in &self.links {
            if l.peer == self.kme_id || !peers.insert(l.peer.clone()) {
                return bad(format!(
                    "link peer {:?} is this KME or listed twice",
                    l.peer
                ));
            }
            for s in &l.saes {
                if !ids.insert(s.clone()) {
                    return bad(format!("SAE ID {s:?} is attached to more than one KME"));
                }
            }
            if matches!(l.source, SourceConfig::Random { .. }) {
                return bad(format!(
                    "link {}: source kind \"random\" is for the local pool only",
                    l.peer
                ));
            }
            match (&l.processing, l.source.is_raw()) {
                (None, true) => {
                    return bad(format!(
                        "link {}: a raw key source needs a [links.processing] table",
                        l.peer
                    ));
                }
                (Some(_), false) => {
                    return bad(format!(
                        "link {}: [links.processing] needs a raw source \
                         (raw_dir, raw_stream or simulated_device)",
                        l.peer
                    ));
                }
                (Some(p), true) => p.validate(&l.peer, &l.source)?,
                (None, false) => {}
            }
        }
        if let Some(lp) = &self.local_pool
            && lp.source.is_raw()
        {
            return bad("the local pool cannot have a raw key source".into());
        }
        if !self.links.is_empty() && self.peer_listen.is_none() {
            return bad("links are configured but peer_listen is not".into());
        }
        self.validate_network(&mut ids)?;
        self.validate_hsms()?;
        self.validate_sealing()
    }

    /// Checks `[store]`'s KEK sources: at most one, and `kek_hsm` with its file, naming an
    /// `[[hsm]]`.
    fn validate_sealing(&self) -> Result<(), ConfigError> {
        let s = &self.store;
        let bad = |m: &str| Err(ConfigError::Invalid(format!("store: {m}")));
        let sources = [
            s.kek_file.is_some(),
            s.kek_env.is_some(),
            s.kek_hsm.is_some(),
        ];
        if sources.iter().filter(|b| **b).count() > 1 {
            return bad("set one of kek_file, kek_env and kek_hsm");
        }
        match (&s.kek_hsm, &s.kek_sealed_file) {
            (Some(h), Some(_)) if self.hsms.iter().any(|x| &x.name == h) => Ok(()),
            (Some(h), Some(_)) => bad(&format!("kek_hsm {h:?} is not an [[hsm]]")),
            (Some(_), None) => bad("kek_hsm needs kek_sealed_file, where the sealed KEK is kept"),
            (None, Some(_)) => bad("kek_sealed_file is only for kek_hsm"),
            (None, None) => Ok(()),
        }
    }

    /// Checks `[[hsm]]`: distinct names, a period of 0 to 9 minutes, one PIN source, a seed
    /// source that exists, callers that are SAEs of this KME.
    fn validate_hsms(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for h in &self.hsms {
            let bad = |m: String| Err(ConfigError::Invalid(format!("hsm {:?}: {m}", h.name)));
            let valid_name = !h.name.is_empty()
                && h.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !valid_name || !names.insert(&h.name) {
                return bad("the name must be unique and of [A-Za-z0-9._-]".into());
            }
            if h.reseed_minutes > 9 {
                return bad(format!(
                    "reseed_minutes is {}; expected 0 (on demand only) to 9",
                    h.reseed_minutes
                ));
            }
            if h.pin_file.is_some() == h.pin_env.is_some() {
                return bad("give exactly one of pin_file and pin_env".into());
            }
            match h.seed_link() {
                Some(p) if self.links.iter().any(|l| l.peer == p) => {}
                Some(p) => {
                    return bad(format!(
                        "seed_source names link {p:?}, which is not a [[link]]"
                    ));
                }
                None if h.seed_source == "os" => {}
                None => {
                    return bad(format!(
                        "seed_source is {:?}; expected \"os\" or \"link:<PEER>\"",
                        h.seed_source
                    ));
                }
            }
            if let Some(c) = h.seed_callers.iter().find(|c| {
                !self
                    .saes
                    .iter()
                    .any(|s| &s.id == *c && s.kind == SaeKind::Etsi)
            }) {
                return bad(format!(
                    "seed_callers names {c:?}, which is not an ETSI [[sae]] of this KME"
                ));
            }
        }
        Ok(())
    }

    /// Checks `[network]`: distinct remote KMEs that are neither this KME nor a peer, SAE IDs
    /// attached to one KME only, links between two different KMEs, and a path to every
    /// remote KME.
    fn validate_network(
        &self,
        ids: &mut std::collections::HashSet<String>,
    ) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(format!("network: {m}")));
        for [a, b] in &self.network.links {
            if a.is_empty() || b.is_empty() || a == b {
                return bad(format!(
                    "link [{a:?}, {b:?}] must join two different, named KMEs"
                ));
            }
        }
        let mut kmes = std::collections::HashSet::new();
        for k in &self.network.kmes {
            if k.id == self.kme_id || self.links.iter().any(|l| l.peer == k.id) {
                return bad(format!(
                    "KME {:?} is this KME or a direct peer ([[link]]); list only KMEs \
                     reached through others",
                    k.id
                ));
            }
            if !kmes.insert(k.id.clone()) {
                return bad(format!("KME {:?} listed twice", k.id));
            }
            for s in &k.saes {
                if !ids.insert(s.clone()) {
                    return bad(format!("SAE ID {s:?} is attached to more than one KME"));
                }
            }
        }
        let topology = crate::relay::Topology::of(self);
        for k in &self.network.kmes {
            if topology
                .path(&self.kme_id, &k.id, &Default::default())
                .is_none()
            {
                return bad(format!(
                    "no path of links from {} to KME {:?}; add the links between them to \
                     network.links",
                    self.kme_id, k.id
                ));
            }
        }
        Ok(())
    }
}

impl ProcessingConfig {
    fn validate(&self, peer: &str, source: &SourceConfig) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(format!("link {peer}: processing.{m}")));
        let pipeline = self.pipeline();
        let invalid =
            |e: PipelineError| ConfigError::Invalid(format!("link {peer}: processing: {e}"));
        let algorithm = pipeline.validate_protocol().map_err(invalid)?;
        pipeline
            .check_frame_fits(&algorithm, self.block_bits)
            .map_err(invalid)?;
        if self.block_bits <= 2 * self.sample_bits || self.block_bits > 1 << 30 {
            return bad(format!(
                "block_bits is {}; expected more than twice sample_bits ({}) and at most 2^30",
                self.block_bits, self.sample_bits
            ));
        }
        if self.in_flight == 0 || self.in_flight > 256 {
            return bad(format!(
                "in_flight is {}; expected 1 to 256",
                self.in_flight
            ));
        }
        if self.auth_share_bits < 384 || !self.auth_share_bits.is_multiple_of(128) {
            return bad(format!(
                "auth_share_bits is {}; expected a multiple of 128 of at least 384 \
                 (a block spends 256 bits of pads, and hash keys are redrawn)",
                self.auth_share_bits
            ));
        }
        if !self.block_bits.is_multiple_of(8) {
            return bad(format!(
                "block_bits is {}; expected a multiple of 8",
                self.block_bits
            ));
        }
        if self.block_timeout_secs == 0 {
            return bad("block_timeout_secs must be at least 1".into());
        }
        if let SourceConfig::SimulatedDevice { qber, errors, .. } = source {
            if !(0.0..0.5).contains(qber) {
                return bad(format!(
                    "simulated_device qber {qber}: expected 0 <= qber < 0.5"
                ));
            }
            if !matches!(errors.as_str(), "iid" | "burst") {
                return bad(format!(
                    "simulated_device errors {errors:?}: expected \"iid\" or \"burst\""
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Config;

    /// A configuration with one `[[hsm]]` named `vault`, then `extra` (more TOML).
    fn with(extra: &str) -> Result<(), String> {
        let text = format!(
            r#"kme_id = "KME_A"
listen = "127.0.0.1:8443"
[tls]
ca = "/ca.pem"
cert = "/a.pem"
key = "/a.key"
[[hsm]]
name = "vault"
module = "/usr/lib/softhsm/libsofthsm2.so"
token = "t"
pin_env = "PIN"
seed_source = "os"
{extra}"#
        );
        let c: Config = toml::from_str(&text).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn pkcs11_saes_and_a_sealed_kek_name_an_existing_hsm() {
        assert_eq!(with(""), Ok(()));
        let sae = |fields: &str| with(&format!("[[sae]]\nid = \"SAE_H\"\n{fields}"));
        assert_eq!(sae("kind = \"pkcs11\"\nhsm = \"vault\""), Ok(()));
        for (fields, error) in [
            ("kind = \"pkcs11\"", "needs hsm"),
            (
                "kind = \"pkcs11\"\nhsm = \"nosuch\"",
                "\"nosuch\" is not an [[hsm]]",
            ),
            ("hsm = \"vault\"", "hsm is only for kind = \"pkcs11\""),
            (
                "kind = \"pkcs11\"\nhsm = \"vault\"\nmatch = \"address\"\nvalue = \"10.0.0.1\"",
                "remove match and value",
            ),
        ] {
            let e = sae(fields).unwrap_err();
            assert!(e.contains(error), "{fields}: {e}");
        }
        let store = |fields: &str| with(&format!("[store]\n{fields}"));
        assert_eq!(
            store("kek_hsm = \"vault\"\nkek_sealed_file = \"/kek.sealed\""),
            Ok(())
        );
        for (fields, error) in [
            ("kek_hsm = \"vault\"", "kek_hsm needs kek_sealed_file"),
            ("kek_sealed_file = \"/kek.sealed\"", "only for kek_hsm"),
            (
                "kek_hsm = \"nosuch\"\nkek_sealed_file = \"/k\"",
                "\"nosuch\" is not an [[hsm]]",
            ),
            (
                "kek_hsm = \"vault\"\nkek_sealed_file = \"/k\"\nkek_env = \"K\"",
                "set one of",
            ),
            ("kek_file = \"/kek\"\nkek_env = \"K\"", "set one of"),
        ] {
            let e = store(fields).unwrap_err();
            assert!(e.contains(error), "{fields}: {e}");
        }
    }
}
