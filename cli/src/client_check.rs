//! `qkd client check`: the "test connectivity" button of an encryptor's QKD profile. Prints,
//! step by step, what the TLS handshake negotiated, the KME's certificate and the KME ID in it,
//! the SAE identity the KME sees, and the Status fields; the first failing step ends it with its
//! one-line reason (exit status 1).

use std::time::Duration;

use qkd_server::check::{CertSummary, Probe};
use qkd_server::client::ClientError;

use crate::kme::ClientConn;
use crate::ui;

/// Arguments of `qkd client check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    conn: ClientConn,
    /// A slave SAE to ask Status for (default: this SAE's own certificate CN, which shows the
    /// SAE ID the KME gives it when it is the CN).
    #[arg(long)]
    slave: Option<String>,
}

fn line(label: &str, value: impl std::fmt::Display) -> anyhow::Result<()> {
    ui::print(format!("{label:<22}{value}"))
}

fn cert(c: &CertSummary) -> String {
    let names = if c.names.is_empty() {
        String::new()
    } else {
        format!(", names {}", c.names.join(" "))
    };
    format!(
        "{} (issuer {}), valid {} to {}{names}",
        c.subject, c.issuer, c.not_before, c.not_after
    )
}

/// Runs the check.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let c = &a.conn;
    let timeout = Duration::from_secs(c.timeout.max(1));
    let probe = Probe::new(&c.kme, &c.ca, &c.cert, &c.key, timeout)?;
    let own_cn = probe.client_cert.as_ref().and_then(|s| s.cn.clone());
    if let Some(s) = &probe.client_cert {
        line("SAE certificate:", cert(s))?;
    }
    let conn = probe.connect().await?;
    let h = conn.handshake.clone();
    line(
        "TLS:",
        format!(
            "{}, key exchange {}, cipher suite {}",
            h.version, h.key_exchange, h.cipher_suite
        ),
    )?;
    line("KME certificate:", cert(&h.server_cert))?;
    line(
        "KME ID (certificate):",
        h.server_cert.cn.as_deref().unwrap_or("(no CN)"),
    )?;
    let Some(slave) = a.slave.clone().or(own_cn.clone()) else {
        anyhow::bail!(
            "this SAE's certificate has no CN: pass --slave to ask Status for a slave SAE"
        );
    };
    let status = match conn.status(&slave).await {
        Ok(s) => s,
        // Without --slave, 400 means the KME identified us (401 comes first) but our SAE ID is
        // not the CN we asked about.
        Err(ClientError::Api { status: 400, body }) if a.slave.is_none() => {
            line(
                "SAE identity:",
                format!(
                    "accepted by the KME, but not as {slave:?} ({}); pass --slave to see it",
                    body.map_or("400".into(), |b| b.message)
                ),
            )?;
            return ui::print("ok");
        }
        Err(e @ ClientError::Api { status: 401, .. }) => {
            anyhow::bail!(
                "{e} (the KME takes this certificate for no SAE: is CN={} an [[sae]] of this \
                 KME?)",
                own_cn.as_deref().unwrap_or("?")
            )
        }
        Err(e) => return Err(e.into()),
    };
    line(
        "SAE identity:",
        format!("the KME sees this SAE as {}", status.master_SAE_ID),
    )?;
    if h.server_cert.cn.as_deref() != Some(status.source_KME_ID.as_str()) {
        line(
            "warning:",
            format!(
                "the KME calls itself {} but its certificate names {:?}",
                status.source_KME_ID, h.server_cert.cn
            ),
        )?;
    }
    let ext = status.status_extension.as_ref();
    line(
        "Status:",
        format!(
            "{} -> {} (slave {} at {}), link {}",
            status.master_SAE_ID,
            status.slave_SAE_ID,
            status.slave_SAE_ID,
            status.target_KME_ID,
            ext.and_then(|e| e["link_state"].as_str()).unwrap_or("-")
        ),
    )?;
    line(
        "  keys:",
        format!(
            "{} stored of {} max, {} bits each (sizes {}..{}), at most {} per request, {} \
             additional slaves",
            status.stored_key_count,
            status.max_key_count,
            status.key_size,
            status.min_key_size,
            status.max_key_size,
            status.max_key_per_request,
            status.max_SAE_ID_count
        ),
    )?;
    ui::print("ok")
}
