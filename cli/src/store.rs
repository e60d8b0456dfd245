//! `qkd store`: import final-key files into a key store and show its state.

use std::path::PathBuf;

use anyhow::Context;
use qkd_store::{ImportOutcome, Store, import_cor_files};

use crate::ui;

/// `qkd store` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Import `.cor` final-key files (same name and bytes on both KMEs) for a link. Files are
    /// appended in name order; re-importing a file is a no-op.
    Import(ImportArgs),
    /// Counts per link and the store's files.
    Status(StatusArgs),
}

/// Arguments of `qkd store import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Store directory (created if missing).
    #[arg(long)]
    store: PathBuf,
    /// The link: the peer KME's ID.
    #[arg(long)]
    link: String,
    /// Key files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print the import report as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `qkd store status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Store directory.
    #[arg(long)]
    store: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `qkd store ...`.
pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Import(a) => {
            let store = Store::open(&a.store)
                .with_context(|| format!("opening the store {}", a.store.display()))?;
            let report = import_cor_files(&store, &a.link, &a.files)?;
            if a.json {
                return ui::print(serde_json::to_string(&report)?);
            }
            for (path, outcome) in &report.files {
                let what = match outcome {
                    ImportOutcome::Imported(b) => format!("imported ({} bits)", b.len_bits),
                    ImportOutcome::AlreadyPresent { .. } => "already present".into(),
                    _ => "done".into(),
                };
                ui::print(format!("{}: {what}", path.display()))?;
            }
            Ok(())
        }
        Command::Status(a) => {
            if !a.store.is_dir() {
                anyhow::bail!("no store at {}", a.store.display());
            }
            let store = Store::open(&a.store)
                .with_context(|| format!("opening the store {}", a.store.display()))?;
            let s = store.status()?;
            if a.json {
                return ui::print(serde_json::to_string(&s)?);
            }
            let mut t = comfy_table::Table::new();
            t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED)
                .set_header([
                    "link",
                    "blocks",
                    "bits available",
                    "bits used",
                    "keys live",
                    "deliveries",
                    "consumed",
                    "destroyed",
                    "damaged blocks",
                ]);
            for l in &s.links {
                t.add_row([
                    l.link.clone(),
                    l.blocks.to_string(),
                    l.bits_available.to_string(),
                    l.bits_used.to_string(),
                    l.keys_live.to_string(),
                    l.deliveries.to_string(),
                    l.keys_consumed.to_string(),
                    l.keys_destroyed.to_string(),
                    l.damaged_blocks.to_string(),
                ]);
            }
            ui::print(t)?;
            ui::print(format!(
                "{}: {} segment file(s), {} bytes, {} ledger entries, encrypted at rest: {}",
                s.directory.display(),
                s.segments,
                s.segment_bytes,
                s.ledger_entries,
                s.encrypted_at_rest
            ))
        }
    }
}
