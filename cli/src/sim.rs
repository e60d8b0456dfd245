//! `qkd sim`: simulate a QKD link and write a raw-key pair with its manifest.

use std::path::PathBuf;

use anyhow::Context;
use qkd_core::dataset;
use qkd_core::rng::OsRandom;
use qkd_core::sim::{ErrorModel, SimConfig};

use crate::ui;

/// Arguments of `qkd sim`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Key length in bits.
    #[arg(long)]
    bits: usize,
    /// Quantum bit error rate, in [0, 0.5] (e.g. 0.02 for 2 %).
    #[arg(long)]
    qber: f64,
    /// Error model: `iid` (exact error count), `bernoulli` (i.i.d. per bit) or `burst`
    /// (Gilbert-Elliott, calibrated to the QBER).
    #[arg(long, default_value = "iid")]
    model: ErrorModel,
    /// Seed for a reproducible simulation (tests and datasets only); without it the OS CSPRNG is
    /// used.
    #[arg(long)]
    seed: Option<u64>,
    /// Output directory; created if missing. The pair is added to DIR/manifest.json.
    #[arg(long)]
    out: PathBuf,
    /// Name of the pair (files `<name>.alice.bin`, `<name>.bob.bin`); derived from the
    /// parameters if not given.
    #[arg(long)]
    name: Option<String>,
    /// Print the manifest entry as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs `qkd sim`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let config = SimConfig::new(args.bits, args.qber, args.model);
    let pair = match args.seed {
        Some(seed) => config.run_seeded(seed),
        None => config.run(&mut OsRandom),
    }
    .context("simulation failed")?;
    let name = args.name.unwrap_or_else(|| {
        format!(
            "{}-{}bits-qber{:.4}",
            args.model.name(),
            args.bits,
            args.qber
        )
    });
    let entry = dataset::add_pair(&args.out, &name, &pair.alice, &pair.bob, &pair.report)
        .with_context(|| format!("writing the pair to {}", args.out.display()))?;
    if args.json {
        ui::print(serde_json::to_string_pretty(&entry)?)?;
    } else {
        ui::print(format!(
            "wrote {} and {} in {} ({} bits, {} errors, actual QBER {:.4} %, model {})",
            entry.alice.file,
            entry.bob.file,
            args.out.display(),
            pair.report.bits,
            pair.report.errors,
            100.0 * pair.report.actual_qber(),
            pair.report.model.name(),
        ))?;
    }
    Ok(())
}
