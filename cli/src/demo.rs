//! `qkd demo`: the engine end to end on the embedded dataset (or a named one).
//!
//! Loads the raw-key pair (checked against its manifest digest), runs every block through the
//! pipeline (estimate, Cascade, confirmation, finite-key length, Toeplitz, entropy check) with
//! public seeds from the OS CSPRNG, and prints one row per block and a summary.

use std::path::PathBuf;

use anyhow::{Context, bail};
use qkd_core::BitBlock;
use qkd_core::dataset::{self, Entry, Manifest};
use qkd_core::pipeline::{self, BlockOutcome, BlockReport, PipelineError, Summary};
use serde::Serialize;

use crate::process::{self, PipelineArgs};
use crate::{kme_demo, report, ui};

/// The dataset compiled into the binary: 2^20 bits at 2 % i.i.d. errors (`datasets/`).
const EMBEDDED_NAME: &str = "iid-2pct";
const EMBEDDED_MANIFEST: &str = include_str!("../../datasets/manifest.json");
const EMBEDDED_ALICE: &[u8] = include_bytes!("../../datasets/iid-2pct.alice.bin");
const EMBEDDED_BOB: &[u8] = include_bytes!("../../datasets/iid-2pct.bob.bin");

/// Arguments of `qkd demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A dataset directory (with manifest.json) to use instead of the embedded one.
    #[arg(long, requires = "name")]
    dataset: Option<PathBuf>,
    /// The pair's name in the dataset manifest.
    #[arg(long)]
    name: Option<String>,
    /// Where to write the final keys (`block-<index>.key`); not written when absent.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Skip the last step: two `qkd serve` KMEs post-processing a simulated device between
    /// themselves on loopback and serving the keys over ETSI 014.
    #[arg(long)]
    no_kme: bool,
    /// Print one JSON object on stdout instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct DemoReport<'a> {
    dataset: &'a str,
    bits: u64,
    nominal_qber: f64,
    summary: &'a Summary,
    blocks: &'a [BlockReport],
    kme: Option<&'a kme_demo::KmeDemo>,
}

/// Loads the embedded pair, checking it against the embedded manifest like any dataset.
fn embedded() -> anyhow::Result<(Entry, BitBlock, BitBlock)> {
    let manifest: Manifest =
        serde_json::from_str(EMBEDDED_MANIFEST).context("embedded manifest is not valid JSON")?;
    let entry = manifest
        .get(EMBEDDED_NAME)
        .cloned()
        .context("embedded manifest lacks the demo pair")?;
    for (info, bytes) in [(&entry.alice, EMBEDDED_ALICE), (&entry.bob, EMBEDDED_BOB)] {
        if blake3::hash(bytes).to_hex().as_str() != info.blake3 {
            bail!(
                "embedded file {} does not match its manifest digest",
                info.file
            );
        }
    }
    let bits = entry.bits() as usize;
    let alice = BitBlock::from_bytes(EMBEDDED_ALICE, bits)?;
    let bob = BitBlock::from_bytes(EMBEDDED_BOB, bits)?;
    Ok((entry, alice, bob))
}

/// Runs `qkd demo`.
pub fn run(args: Args) -> anyhow::Result<()> {
    // The embedded pair holds 2^20 bits: four blocks of 2^18 unless told otherwise, each with a
    // 2^15-bit sample (at 2 % the finite-key length peaks near there: 0.35 of the raw bits
    // against 0.21 with 2^12). Explicit values always win.
    let cfg = if args.dataset.is_none() {
        args.pipeline.config_or(1 << 18, 1 << 15)?
    } else {
        args.pipeline.config()?
    };
    let (entry, alice, bob) = match (&args.dataset, &args.name) {
        (Some(dir), Some(name)) => dataset::load_named(dir, name)
            .with_context(|| format!("loading pair '{name}' from {}", dir.display()))?,
        _ => embedded()?,
    };
    let blocks = alice.len() / cfg.block_bits;
    if blocks == 0 {
        bail!(
            "the pair holds {} bits, fewer than one block of {} bits",
            alice.len(),
            cfg.block_bits
        );
    }
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    }
    let bar = ui::progress(blocks as u64, "pipeline", Some(cfg.block_bits));
    let mut reports = Vec::with_capacity(blocks);
    let summary = pipeline::process(&alice, &bob, &cfg, |r| {
        if let (Some(out), Some(key)) = (&args.out, &r.key) {
            let path = out.join(format!("block-{:06}.key", r.report.index));
            process::write_key(&path, &key.to_bytes()).map_err(|error| PipelineError::Io {
                side: "output",
                error,
            })?;
        }
        reports.push(r.report);
        bar.inc(1);
        Ok(())
    })?;
    bar.finish_and_clear();
    if !reports.iter().any(|r| r.outcome == BlockOutcome::Key) {
        let why = reports
            .first()
            .map_or("no blocks".into(), |r| match &r.outcome {
                BlockOutcome::Discarded(why) | BlockOutcome::Quarantined(why) => why.clone(),
                BlockOutcome::Key => String::new(),
            });
        bail!(
            "no block yielded key (block 0: {why}); larger --block-bits or --sample-bits shrink \
             the finite-size terms"
        );
    }
    let kme = if args.no_kme {
        None
    } else {
        Some(kme_demo::run()?)
    };
    if let Some(k) = &kme
        && !k.bytes_match
    {
        bail!("the keys SAE_2 fetched at KME_B differ from SAE_1's at KME_A");
    }
    if args.json {
        let r = DemoReport {
            dataset: &entry.name,
            bits: alice.len() as u64,
            nominal_qber: entry.simulation.qber,
            summary: &summary,
            blocks: &reports,
            kme: kme.as_ref(),
        };
        return ui::print(serde_json::to_string(&r)?);
    }
    ui::print(format!(
        "dataset {} ({} bits, nominal QBER {}): {} blocks of {} bits, Cascade {}",
        entry.name,
        alice.len(),
        ui::pct(entry.simulation.qber, 2),
        blocks,
        cfg.block_bits,
        cfg.algorithm
    ))?;
    ui::print(report::blocks_table(&reports))?;
    let tail = (alice.len() - blocks * cfg.block_bits) as u64;
    ui::print(report::summary_table(&summary, tail))?;
    if let Some(k) = &kme {
        ui::print(format!(
            "KME_A and KME_B as two `qkd serve` processes on loopback post-processed an INSECURE \
             simulated device between themselves over mutual TLS ({} blocks kept, QBER {}): SAE_1 \
             got {} keys of {} bits from KME_A (ETSI 014 enc_keys), SAE_2 fetched them by ID at \
             KME_B (dec_keys): bytes match: {}",
            k.blocks_kept,
            k.qber.map_or("-".into(), |q| ui::pct(q, 2)),
            k.keys,
            k.key_bits,
            k.bytes_match
        ))?;
        for id in &k.key_ids {
            ui::print(format!("  key_ID {id}"))?;
        }
    }
    Ok(())
}
