//! `qkd store`: import final-key files into a key store, show its state, and burn its unused
//! material after its index was restored from a backup.

use std::path::{Path, PathBuf};

use anyhow::Context;
use qkd_store::{BurnScope, ImportOutcome, Kek, Store, StoreOptions, import_cor_files};

use crate::ui;

/// `qkd store` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Import `.cor` final-key files (same name and bytes on both KMEs) for a link. Files are
    /// appended in name order; re-importing a file is a no-op.
    Import(ImportArgs),
    /// Counts per link and the store's files.
    Status(StatusArgs),
    /// After restoring the store's index from a backup or snapshot (the store then refuses to
    /// open): destroy every live key and burn all unused material of every link (or of the
    /// `--link`s named), then re-seal the store. The peer KME must burn the same links (there:
    /// `--link <restored KME ID>`): the keys of that period are burned on both sides
    /// (docs/store.md §11).
    BurnAfterRestore(BurnArgs),
}

/// The key-encryption key of an encrypted store.
#[derive(Debug, clap::Args)]
pub struct KekArgs {
    /// File holding the store's key-encryption key (32 raw bytes, 64 hex digits or base64;
    /// mode 0600 or 0400).
    #[arg(long, conflicts_with = "kek_env")]
    kek_file: Option<PathBuf>,
    /// Environment variable holding the key-encryption key (hex or base64).
    #[arg(long)]
    kek_env: Option<String>,
}

impl KekArgs {
    fn options(&self) -> anyhow::Result<StoreOptions> {
        let encryption = match (&self.kek_file, &self.kek_env) {
            (Some(f), _) => Some(Kek::from_file(f)?),
            (None, Some(v)) => Some(Kek::from_env(v)?),
            (None, None) => None,
        };
        Ok(StoreOptions {
            encryption,
            ..StoreOptions::default()
        })
    }
}

/// Arguments of `qkd store burn-after-restore`.
#[derive(Debug, clap::Args)]
pub struct BurnArgs {
    /// Store directory.
    #[arg(long)]
    store: PathBuf,
    /// Burn only this link (repeatable; default: every link).
    #[arg(long = "link")]
    links: Vec<String>,
    #[command(flatten)]
    kek: KekArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn open(dir: &Path, kek: &KekArgs) -> anyhow::Result<Store> {
    Store::open_with(dir, kek.options()?)
        .with_context(|| format!("opening the store {}", dir.display()))
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
    #[command(flatten)]
    kek: KekArgs,
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
    #[command(flatten)]
    kek: KekArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `qkd store ...`.
pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Import(a) => {
            let store = open(&a.store, &a.kek)?;
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
            let store = open(&a.store, &a.kek)?;
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
                    "bits burned",
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
                    l.bits_burned.to_string(),
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
        Command::BurnAfterRestore(a) => {
            if !a.store.is_dir() {
                anyhow::bail!("no store at {}", a.store.display());
            }
            let scope = if a.links.is_empty() {
                BurnScope::AllLinks
            } else {
                BurnScope::Links(a.links.clone())
            };
            let report = Store::burn_after_restore(&a.store, a.kek.options()?, &scope)
                .with_context(|| format!("burning the store {}", a.store.display()))?;
            if a.json {
                return ui::print(serde_json::to_string(&report)?);
            }
            ui::print(format!(
                "{}: {}",
                report.directory.display(),
                if report.rollback_detected {
                    "rolled-back index accepted and re-sealed"
                } else {
                    "no rollback detected; burned on request"
                }
            ))?;
            for l in &report.links {
                ui::print(format!(
                    "link {}: {} block(s), {} bits burned, {} live key(s) destroyed",
                    l.link, l.blocks, l.bits_burned, l.keys_destroyed
                ))?;
            }
            ui::print(
                "Burn the same links at the peer KME now (qkd store burn-after-restore there): \
                 the keys of the restored period are burned on both sides.",
            )
        }
    }
}
