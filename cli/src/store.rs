//! `qkd store`: import final-key files into a key store, show its state, and burn its unused
//! material after its index was restored from a backup.

use std::path::{Path, PathBuf};

use anyhow::Context;
use qkd_store::{
    BurnScope, ImportOutcome, Kek, OpenError, Store, StoreOptions, StoreStatus, StoreView,
    import_cor_files,
};

use crate::ui;

/// `qkd store` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Import `.cor` final-key files (same name and bytes on both KMEs) for a link. Files are
    /// appended in name order; re-importing a file is a no-op.
    Import(ImportArgs),
    /// Counts per link and the store's files. Works while a KME holds the store (a read-only
    /// view of its last commit).
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
    /// The KME that owns the store: splits the available bits into what it may allocate and
    /// what its peers may (the blocks `BlockFilter::split` gives each side).
    #[arg(long)]
    kme: Option<String>,
    #[command(flatten)]
    kek: KekArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The status, from a full open (which checks the whole store) when the store is free, else
/// from a read-only view beside the process that holds it (`true`).
fn status(a: &StatusArgs) -> anyhow::Result<(StoreStatus, bool)> {
    let sides = a.kme.as_deref().map(qkd_server::pool::sides);
    let options = StoreOptions {
        sides: sides.clone(),
        ..a.kek.options()?
    };
    match Store::open_with(&a.store, options) {
        Ok(store) => Ok((store.status()?, false)),
        Err(OpenError::Locked { .. }) => {
            let view = StoreView::open(&a.store, sides)
                .with_context(|| format!("opening the store {} read-only", a.store.display()))?;
            Ok((view.status()?, true))
        }
        Err(e) => Err(e).with_context(|| format!("opening the store {}", a.store.display())),
    }
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
            let (s, live) = status(&a)?;
            if a.json {
                return ui::print(serde_json::to_string(&s)?);
            }
            let mut t = comfy_table::Table::new();
            let mut header = vec!["link", "blocks", "bits available"];
            if a.kme.is_some() {
                header.extend(["allocatable here", "other side"]);
            }
            header.extend([
                "bits used",
                "keys live",
                "deliveries",
                "consumed",
                "destroyed",
                "damaged blocks",
                "bits burned",
            ]);
            t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED)
                .set_header(header);
            for l in &s.links {
                let mut row = vec![
                    l.link.clone(),
                    l.blocks.to_string(),
                    l.bits_available.to_string(),
                ];
                if a.kme.is_some() {
                    row.extend([
                        l.bits_allocatable.to_string(),
                        l.bits_other_side.to_string(),
                    ]);
                }
                row.extend([
                    l.bits_used.to_string(),
                    l.keys_live.to_string(),
                    l.deliveries.to_string(),
                    l.keys_consumed.to_string(),
                    l.keys_destroyed.to_string(),
                    l.damaged_blocks.to_string(),
                    l.bits_burned.to_string(),
                ]);
                t.add_row(row);
            }
            ui::print(t)?;
            ui::print(format!(
                "{}: {} segment file(s), {} bytes, {} ledger entries, {} commits, encrypted at \
                 rest: {}{}",
                s.directory.display(),
                s.segments,
                s.segment_bytes,
                s.ledger_entries,
                s.commits,
                s.encrypted_at_rest,
                if live {
                    " (live view: a running process holds the store)"
                } else {
                    ""
                }
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
