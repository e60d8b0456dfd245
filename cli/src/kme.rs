//! `qkd serve`, `qkd pki` and `qkd client`: the KME (ETSI GS QKD 014 over mutual TLS), its dev
//! PKI, and a client that talks to a KME the way an encryptor does.

use std::path::PathBuf;

use anyhow::Context;
use qkd_server::client::Client;
use qkd_server::etsi::KeyRequest;
use qkd_server::pki::{self, CertKind};

use crate::ui;

/// Arguments of `qkd serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The KME's configuration (TOML; every field is documented in docs/server.md).
    #[arg(long)]
    config: PathBuf,
}

/// Runs a KME until Ctrl-C.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = qkd_server::Config::load(&args.config)
        .with_context(|| format!("loading {}", args.config.display()))?;
    for l in &cfg.links {
        if matches!(
            l.source,
            qkd_server::config::SourceConfig::SimulatedDevice { .. }
                | qkd_server::config::SourceConfig::Simulated { .. }
        ) {
            eprintln!(
                "WARNING: the link to {} uses an INSECURE simulated source: its keys follow \
                 from the seed in the config (demos and benchmarks only)",
                l.peer
            );
        }
    }
    runtime()?.block_on(async {
        let h = qkd_server::serve(cfg).await?;
        eprintln!("{} serving SAEs on https://{}", h.kme_id(), h.sae_addr);
        if let Some(p) = h.peer_addr {
            eprintln!("{} serving peer KMEs on https://{p}", h.kme_id());
        }
        if let Some(m) = h.monitor_addr {
            eprintln!("dashboard and /metrics on http://{m}");
        }
        tokio::signal::ctrl_c().await?;
        eprintln!("shutting down");
        h.shutdown().await;
        Ok(())
    })
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
            let s = pki::init_with(&a.dir, &a.kmes, &saes, a.port_base, &a.hosts, raw)?;
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
