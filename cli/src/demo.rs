//! `qkd demo`: the engine end to end on the embedded dataset (or a named one).
//!
//! Today: load the raw-key pair, cut it into blocks, estimate the QBER of each block from a
//! disclosed random sample (positions from a fresh OS-random public seed), and run the entropy
//! verdict on Alice's raw key. Each later stage joins the demo as it lands.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use qkd_core::BitBlock;
use qkd_core::dataset::{self, Entry, Manifest};
use qkd_core::entropy;
use qkd_core::estimate::{self, Bound, QberEstimate};
use qkd_core::rng::{OsRandom, RandomSource};
use serde::Serialize;

use crate::ui;

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
    /// Block size in bits.
    #[arg(long, default_value_t = 1 << 18)]
    block_bits: usize,
    /// Bits disclosed per block for QBER estimation.
    #[arg(long, default_value_t = 4096)]
    sample_bits: usize,
    /// Failure probability of the QBER upper bound.
    #[arg(long, default_value_t = 1e-10)]
    eps_pe: f64,
    /// Print one JSON object on stdout instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct DemoReport {
    dataset: String,
    bits: u64,
    nominal_qber: f64,
    blocks: Vec<QberEstimate>,
    entropy: entropy::EntropyReport,
    seconds: f64,
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
    let start = Instant::now();
    let (entry, alice, bob) = match (&args.dataset, &args.name) {
        (Some(dir), Some(name)) => dataset::load_named(dir, name)
            .with_context(|| format!("loading pair '{name}' from {}", dir.display()))?,
        _ => embedded()?,
    };
    if args.block_bits <= args.sample_bits {
        bail!(
            "--block-bits ({}) must exceed --sample-bits ({})",
            args.block_bits,
            args.sample_bits
        );
    }
    let n = alice.len();
    let blocks = n / args.block_bits;
    if blocks == 0 {
        bail!(
            "the pair holds {n} bits, fewer than one block of {} bits",
            args.block_bits
        );
    }
    let bar = ui::progress(blocks as u64, "estimate");
    let mut estimates = Vec::with_capacity(blocks);
    let mut rng = OsRandom;
    for b in 0..blocks {
        let range = b * args.block_bits..(b + 1) * args.block_bits;
        let (a, o) = (alice.slice(range.clone())?, bob.slice(range)?);
        // Alice draws the public sampling seed and discloses her sample; Bob compares.
        let (msg, _alice_rest) = estimate::disclose_sample(&a, args.sample_bits, rng.seed32()?)?;
        let (est, _bob_rest) =
            estimate::compare_sample(&o, &msg, args.eps_pe, Bound::Hypergeometric)?;
        estimates.push(est);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let verdict = entropy::assess(&alice.to_bytes());
    let report = DemoReport {
        dataset: entry.name.clone(),
        bits: n as u64,
        nominal_qber: entry.simulation.qber,
        blocks: estimates,
        entropy: verdict,
        seconds: start.elapsed().as_secs_f64(),
    };
    if args.json {
        return ui::print(serde_json::to_string(&report)?);
    }
    print_tables(&report)
}

fn print_tables(r: &DemoReport) -> anyhow::Result<()> {
    let errors: u64 = r.blocks.iter().map(|e| e.errors).sum();
    let sampled: u64 = r.blocks.iter().map(|e| e.k).sum();
    let worst = r.blocks.iter().map(|e| e.qber_upper).fold(0.0, f64::max);
    let rows = vec![
        ("dataset".into(), format!("{} ({} bits)", r.dataset, r.bits)),
        ("nominal QBER".into(), ui::pct(r.nominal_qber, 2)),
        ("blocks".into(), r.blocks.len().to_string()),
        ("sampled bits".into(), sampled.to_string()),
        (
            "observed QBER".into(),
            ui::pct(errors as f64 / sampled.max(1) as f64, 3),
        ),
        ("worst upper bound".into(), ui::pct(worst, 3)),
        (
            "entropy verdict (Alice raw)".into(),
            format!("{:?}", r.entropy.verdict),
        ),
        (
            "Shannon bits/byte".into(),
            format!(
                "{:.6} (threshold {:.6})",
                r.entropy.shannon.bits_per_byte, r.entropy.shannon.threshold
            ),
        ),
        ("time".into(), format!("{:.3} s", r.seconds)),
    ];
    ui::print(ui::table(["quantity", "value"], &rows))?;
    for reason in &r.entropy.reasons {
        ui::print(format!("entropy: {reason}"))?;
    }
    Ok(())
}
