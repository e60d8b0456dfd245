//! `qkd serve`, `qkd pki` and `qkd client`: the KME (ETSI GS QKD 014 over mutual TLS), its dev
//! PKI, and a client that talks to a KME the way an encryptor does.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use qkd_server::client::Client;
use qkd_server::etsi::KeyRequest;
use qkd_server::pki::{self, CertKind};
use tokio::signal::unix::{SignalKind, signal};

use crate::logging::{self, LogFormat};
use crate::ui;

/// Arguments of `qkd serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The KME's configuration (TOML; every field is documented in docs/server.md).
    #[arg(long)]
    config: PathBuf,
    /// Log lines on stderr: `text`, or `json` (one JSON object per line, for log shippers).
    /// The RUST_LOG environment variable filters them (default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// Runs a KME until SIGTERM or SIGINT, then shuts it down: no new connections, requests in
/// flight get `limits.shutdown_grace_ms`, the key store is closed, exit status 0.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    logging::init(args.log_format)?;
    let cfg = qkd_server::Config::load(&args.config)
        .with_context(|| format!("loading {}", args.config.display()))?;
    for l in &cfg.links {
        if matches!(
            l.source,
            qkd_server::config::SourceConfig::SimulatedDevice { .. }
                | qkd_server::config::SourceConfig::Simulated { .. }
        ) {
            tracing::warn!(
                peer = %l.peer,
                "the link to {} uses an INSECURE simulated source: its keys follow from the \
                 seed in the config (demos and benchmarks only)",
                l.peer
            );
        }
    }
    let grace_ms = cfg.limits.shutdown_grace_ms;
    let grace = Duration::from_millis(grace_ms);
    let rt = runtime()?;
    let served = rt.block_on(async {
        // Before the listeners are bound: from the first connection on, a signal shuts the KME
        // down cleanly instead of killing it.
        let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
        let h = qkd_server::serve(cfg).await?;
        let kme = h.kme_id().to_string();
        tracing::info!(kme, addr = %h.sae_addr, "serving SAEs on https://{}", h.sae_addr);
        if let Some(p) = h.peer_addr {
            tracing::info!(kme, addr = %p, "serving peer KMEs on https://{p}");
        }
        if let Some(m) = h.monitor_addr {
            tracing::info!(kme, addr = %m, "dashboard and /metrics on http://{m}");
        }
        let sig = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(kme, signal = sig, grace_ms, "{sig}: shutting down");
        h.shutdown().await;
        tracing::info!(kme, "stopped");
        anyhow::Ok(())
    });
    // Blocking work still running (a store call of a request cut at the end of the grace
    // period) gets as long again.
    rt.shutdown_timeout(grace);
    served
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// `qkd pki` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PkiCommand {
    /// Write a development CA, certificates for KMEs and SAEs, and one config per KME.
    Init(PkiInitArgs),
    /// Issue one certificate from an existing CA (ca.pem + ca.key).
    Issue(PkiIssueArgs),
    /// Generate a key pair (0600) and a PKCS#10 certificate signing request for a KME or an
    /// SAE, to be signed by `qkd pki sign` (or another CA) without the key leaving this machine.
    Csr(PkiCsrArgs),
    /// Sign a certificate signing request with an existing CA (ca.pem + ca.key) into a KME or
    /// SAE certificate; prints the subject it signed.
    Sign(PkiSignArgs),
    /// Write a certificate revocation list (PEM) of the CA revoking the given certificates;
    /// KMEs load it through `tls.crl`.
    Revoke(PkiRevokeArgs),
}

/// Arguments of `qkd pki revoke`.
#[derive(Debug, clap::Args)]
pub struct PkiRevokeArgs {
    /// Directory holding ca.pem and ca.key.
    #[arg(long)]
    ca_dir: PathBuf,
    /// The CRL file to write (every certificate it should revoke must be named each time).
    #[arg(long)]
    out: PathBuf,
    /// Days until the CRL's nextUpdate.
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// PEM certificates to revoke.
    #[arg(required = true)]
    certs: Vec<PathBuf>,
}

/// Arguments of `qkd pki init`.
#[derive(Debug, clap::Args)]
pub struct PkiInitArgs {
    /// Output directory.
    dir: PathBuf,
    /// A KME ID (repeat for each KME; KME i listens on P+2i for SAEs and P+2i+1 for peers).
    #[arg(long = "kme", required = true)]
    kmes: Vec<String>,
    /// An SAE attached to a KME, as SAE_ID@KME_ID (repeat).
    #[arg(long = "sae")]
    saes: Vec<String>,
    /// A link between two KMEs, as KME_A-KME_B (repeat: a chain, a ring, a mesh). Keys for
    /// SAEs at KMEs without a link of their own are relayed through the others. Default:
    /// every pair of KMEs linked.
    #[arg(long = "link")]
    links: Vec<String>,
    /// First port P.
    #[arg(long, default_value_t = 8443)]
    port_base: u16,
    /// Extra DNS names or IP addresses for the server certificates (repeat).
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// Where the links get key: `cor` (final keys made elsewhere, as .cor files) or
    /// `simulated` (each pair post-processes an INSECURE simulated device between them).
    #[arg(long, default_value = "cor", value_parser = ["cor", "simulated"])]
    raw: String,
    /// Overwrite a PKI already in the directory (its CA, keys, certificates, configurations
    /// and secrets; the key stores under DIR/<KME>/store are kept). Without it, a directory
    /// holding any file this command would write is refused.
    #[arg(long)]
    force: bool,
}

/// What a certificate of `qkd pki csr` / `qkd pki sign` is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// A KME: server and client authentication, with subject alternative names.
    Kme,
    /// An SAE: client authentication.
    Sae,
}

impl Role {
    fn kind(self) -> CertKind {
        match self {
            Self::Kme => CertKind::Both,
            Self::Sae => CertKind::Client,
        }
    }
}

/// Arguments of `qkd pki csr`.
#[derive(Debug, clap::Args)]
pub struct PkiCsrArgs {
    /// The KME or SAE ID: the subject CN, and the names of the files written (NAME.key,
    /// NAME.csr).
    #[arg(long)]
    name: String,
    /// kme or sae.
    #[arg(long, value_enum, default_value_t = Role::Sae)]
    kind: Role,
    /// Subject alternative names of a KME (DNS names or IP addresses; repeat). Default:
    /// localhost and 127.0.0.1.
    #[arg(long = "san")]
    sans: Vec<String>,
    /// Output directory.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Replace an existing NAME.key / NAME.csr (with a new key).
    #[arg(long)]
    force: bool,
}

/// Arguments of `qkd pki sign`.
#[derive(Debug, clap::Args)]
pub struct PkiSignArgs {
    /// Directory holding ca.pem and ca.key.
    #[arg(long)]
    ca_dir: PathBuf,
    /// The certificate signing request (PEM, PKCS#10). One whose signature does not verify is
    /// refused.
    #[arg(long)]
    csr: PathBuf,
    /// kme (server and client authentication, the request's subject alternative names and
    /// --san) or sae (client authentication).
    #[arg(long, value_enum)]
    kind: Role,
    /// Days the certificate is valid.
    #[arg(long, default_value_t = pki::DEFAULT_DAYS)]
    days: u32,
    /// More subject alternative names for a KME certificate (repeat).
    #[arg(long = "san")]
    sans: Vec<String>,
    /// The certificate to write (PEM). Default: the request's path with extension .pem.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Arguments of `qkd pki issue`.
#[derive(Debug, clap::Args)]
pub struct PkiIssueArgs {
    /// Directory holding ca.pem and ca.key.
    #[arg(long)]
    ca_dir: PathBuf,
    /// Common name (the SAE or KME ID).
    #[arg(long)]
    cn: String,
    /// client (an SAE), server, or both (a KME).
    #[arg(long, default_value = "client")]
    kind: String,
    /// Subject alternative names for server certificates (repeat).
    #[arg(long = "san")]
    sans: Vec<String>,
    /// Output directory (default: the CA directory).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Password of the PKCS#12 file (client certificates).
    #[arg(long, default_value = "")]
    p12_password: String,
}

/// Runs `qkd pki ...`.
pub fn pki(cmd: PkiCommand) -> anyhow::Result<()> {
    match cmd {
        PkiCommand::Init(a) => {
            let saes = a
                .saes
                .iter()
                .map(|s| pki::parse_sae_spec(s))
                .collect::<Result<Vec<_>, _>>()?;
            let raw = match a.raw.as_str() {
                "simulated" => pki::RawSetup::Simulated,
                _ => pki::RawSetup::Cor,
            };
            let links = if a.links.is_empty() {
                pki::full_mesh(&a.kmes)
            } else {
                a.links
                    .iter()
                    .map(|l| pki::parse_link_spec(l, &a.kmes))
                    .collect::<Result<Vec<_>, _>>()?
            };
            if !a.force {
                pki::check_fresh(&a.dir, &a.kmes, &saes, &links, raw)?;
            }
            let s = pki::init_network(&a.dir, &a.kmes, &saes, &links, a.port_base, &a.hosts, raw)?;
            ui::print(format!("trust anchor: {}", s.ca.display()))?;
            for c in &s.kme_configs {
                ui::print(format!("KME config:   {}", c.display()))?;
            }
            for c in &s.sae_certs {
                ui::print(format!("SAE cert:     {}", c.display()))?;
            }
            Ok(())
        }
        PkiCommand::Issue(a) => {
            let kind = match a.kind.as_str() {
                "client" => CertKind::Client,
                "server" => CertKind::Server,
                "both" => CertKind::Both,
                other => anyhow::bail!("--kind {other:?}: expected client, server or both"),
            };
            let out = a.out.clone().unwrap_or_else(|| a.ca_dir.clone());
            let p = pki::issue(
                &a.ca_dir.join("ca.pem"),
                &a.ca_dir.join("ca.key"),
                &a.cn,
                kind,
                &a.sans,
                &out,
                &a.p12_password,
            )?;
            ui::print(format!("wrote {}", p.display()))
        }
        PkiCommand::Csr(a) => {
            let (key, csr) = pki::csr(&a.name, a.kind.kind(), &a.sans, &a.out, a.force)?;
            ui::print(format!("wrote {} and {}", key.display(), csr.display()))
        }
        PkiCommand::Sign(a) => {
            let out = a.out.clone().unwrap_or_else(|| a.csr.with_extension("pem"));
            let s = pki::sign(
                &a.ca_dir.join("ca.pem"),
                &a.ca_dir.join("ca.key"),
                &a.csr,
                a.kind.kind(),
                &a.sans,
                a.days,
                &out,
            )?;
            let what = match a.kind {
                Role::Kme => "KME",
                Role::Sae => "SAE",
            };
            ui::print(format!(
                "signed {what} certificate for {} (valid {} days): wrote {}",
                s.subject,
                a.days,
                s.cert.display()
            ))
        }
        PkiCommand::Revoke(a) => {
            let n = pki::revoke(
                &a.ca_dir.join("ca.pem"),
                &a.ca_dir.join("ca.key"),
                &a.certs,
                a.days,
                &a.out,
            )?;
            ui::print(format!("wrote {} ({n} revoked)", a.out.display()))
        }
    }
}

/// Connection options of `qkd client`.
#[derive(Debug, clap::Args)]
pub struct ClientConn {
    /// The KME's base URL, e.g. https://localhost:8443.
    #[arg(long)]
    pub(crate) kme: String,
    /// The SAE's client certificate (PEM).
    #[arg(long)]
    pub(crate) cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long)]
    pub(crate) key: PathBuf,
    /// The CA that signed the KME's certificate (PEM).
    #[arg(long)]
    pub(crate) ca: PathBuf,
    /// Seconds a request (or each step of `check`) may take.
    #[arg(long, default_value_t = 30)]
    pub(crate) timeout: u64,
}

/// `qkd client` subcommands (output: the KME's JSON answer).
#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// GET status for a slave SAE.
    Status {
        #[command(flatten)]
        conn: ClientConn,
        /// The slave SAE ID.
        #[arg(long)]
        slave: String,
    },
    /// POST enc_keys: new keys for a slave SAE (this SAE is the master).
    Enc {
        #[command(flatten)]
        conn: ClientConn,
        /// The slave SAE ID.
        #[arg(long)]
        slave: String,
        /// Number of keys.
        #[arg(long, default_value_t = 1)]
        number: u64,
        /// Key size in bits.
        #[arg(long)]
        size: Option<u64>,
        /// More slaves that may fetch the same keys (repeat).
        #[arg(long = "additional-slave")]
        additional: Vec<String>,
    },
    /// POST dec_keys: fetch keys by ID (this SAE is a slave).
    Dec {
        #[command(flatten)]
        conn: ClientConn,
        /// The master SAE ID.
        #[arg(long)]
        master: String,
        /// Key IDs (repeat).
        #[arg(long = "key-id", required = true)]
        key_ids: Vec<uuid::Uuid>,
    },
    /// Test connectivity: TLS version and key exchange, the KME's certificate and KME ID, the
    /// SAE identity the KME sees, and Status (exit status 1 with the reason if a step fails).
    Check(crate::client_check::Args),
}

fn connect(c: &ClientConn) -> anyhow::Result<Client> {
    let timeout = std::time::Duration::from_secs(c.timeout.max(1));
    Ok(Client::with_timeout(
        &c.kme, &c.ca, &c.cert, &c.key, timeout,
    )?)
}

/// Runs `qkd client ...`.
pub fn client(cmd: ClientCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let json = match cmd {
            ClientCommand::Status { conn, slave } => {
                serde_json::to_string_pretty(&connect(&conn)?.status(&slave).await?)?
            }
            ClientCommand::Enc {
                conn,
                slave,
                number,
                size,
                additional,
            } => {
                let req = KeyRequest {
                    number: Some(number),
                    size,
                    additional_slave_SAE_IDs: (!additional.is_empty()).then_some(additional),
                    extension_mandatory: None,
                    extension_optional: None,
                };
                serde_json::to_string_pretty(&connect(&conn)?.enc_keys(&slave, &req).await?)?
            }
            ClientCommand::Dec {
                conn,
                master,
                key_ids,
            } => serde_json::to_string_pretty(&connect(&conn)?.dec_keys(&master, &key_ids).await?)?,
            ClientCommand::Check(args) => return crate::client_check::run(args).await,
        };
        ui::print(json)
    })
}
