//! `qkd audit`: the store's ledger, the durable trail of every key event (blocks activated or
//! discarded, keys allocated, delivered to whom, expired, destroyed), read beside a running KME.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use qkd_store::{DestroyReason, LedgerEntry, LedgerEvent, StoreView};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::ui;

/// Arguments of `qkd audit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Store directory (the KME's `state_dir/store`); it may be in use by a running KME.
    #[arg(long)]
    store: PathBuf,
    /// Only events at or after this time: RFC 3339 (`2026-12-01T08:00:00Z`), or an age
    /// (`90s`, `15m`, `2h`, `7d`).
    #[arg(long, value_parser = parse_since)]
    since: Option<SinceArg>,
    /// One JSON object per line (for log shippers) instead of text.
    #[arg(long)]
    json: bool,
}

/// A parsed `--since`: Unix milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct SinceArg(u64);

fn parse_since(s: &str) -> Result<SinceArg, String> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        let ms = t.unix_timestamp_nanos() / 1_000_000;
        return u64::try_from(ms)
            .map(SinceArg)
            .map_err(|_| format!("{s} is before 1970"));
    }
    let bad = || {
        format!(
            "expected an RFC 3339 time (2026-12-01T08:00:00Z) or an age such as 90s, 15m, 2h, \
             7d; got {s:?}"
        )
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let n: u64 = n.parse().map_err(|_| bad())?;
    let ago = Duration::from_secs(n.saturating_mul(unit_secs));
    let at = SystemTime::now()
        .checked_sub(ago)
        .unwrap_or(UNIX_EPOCH)
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Ok(SinceArg(at.as_millis() as u64))
}

/// Runs `qkd audit`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let view = StoreView::open(&args.store, None)
        .with_context(|| format!("opening the store {} read-only", args.store.display()))?;
    let since = args.since.map_or(0, |s| s.0);
    const PAGE: usize = 4096;
    let mut from = 0;
    loop {
        let page = view.ledger(from, PAGE)?;
        for e in page.iter().filter(|e| e.unix_ms >= since) {
            ui::print(if args.json {
                serde_json::to_string(e)?
            } else {
                line(e)
            })?;
        }
        match page.last() {
            Some(last) if page.len() == PAGE => from = last.seq + 1,
            _ => return Ok(()),
        }
    }
}

fn ids(ids: &[uuid::Uuid]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// One ledger record as a line of text.
fn line(e: &LedgerEntry) -> String {
    let when = OffsetDateTime::from_unix_timestamp_nanos(i128::from(e.unix_ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| e.unix_ms.to_string());
    let what = match &e.event {
        LedgerEvent::BlockAppended {
            block_id,
            usable_bits,
            ..
        } => format!("block {block_id} activated ({usable_bits} bits usable)"),
        LedgerEvent::KeysReserved {
            by_peer,
            master,
            slaves,
            recipients,
            size_bits,
            key_ids,
        } => format!(
            "{} {} key(s) of {size_bits} bits for master {master}, slaves {} (fetched here by \
             {}): {}",
            if *by_peer {
                "reserved at the peer's request"
            } else {
                "allocated"
            },
            key_ids.len(),
            slaves.join(","),
            recipients.join(","),
            ids(key_ids)
        ),
        LedgerEvent::KeysFetched {
            recipient, key_ids, ..
        } => format!(
            "delivered {} key(s) to {recipient}: {}",
            key_ids.len(),
            ids(key_ids)
        ),
        LedgerEvent::KeysDestroyed { reason, key_ids } => format!(
            "{} {} key(s): {}",
            match reason {
                DestroyReason::Expired => "expired",
                DestroyReason::Requested => "destroyed on request",
                DestroyReason::RestoredFromBackup => "destroyed after a restore",
                _ => "destroyed",
            },
            key_ids.len(),
            ids(key_ids)
        ),
        LedgerEvent::BlockDamaged { block_id, reason } => {
            format!("block {block_id} discarded as damaged: {reason}")
        }
        LedgerEvent::MaterialBurned { blocks, bits } => {
            format!("{blocks} block(s), {bits} unused bits burned after a restore")
        }
        LedgerEvent::Recorded { what, ok, detail } => {
            format!("{what}: {} ({detail})", if *ok { "ok" } else { "FAILED" })
        }
        other => format!("{other:?}"),
    };
    format!("{when} #{} link {} by {}: {what}", e.seq, e.link, e.actor)
}
