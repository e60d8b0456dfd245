//! `qkd bench`: throughput of single stages, printed as a table or one JSON object.

use anyhow::Context;
use qkd_core::amplify::{ToeplitzMethod, bench_toeplitz};

use crate::ui;

/// The stage to benchmark.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Toeplitz privacy amplification on a random block.
    Amplify(AmplifyArgs),
}

/// Arguments of `qkd bench amplify`.
#[derive(Debug, clap::Args)]
pub struct AmplifyArgs {
    /// Input length n in bits.
    #[arg(long, default_value_t = 1_000_000)]
    block_bits: usize,
    /// Output length as a fraction of n (0 < R < 1).
    #[arg(long, default_value_t = 0.5)]
    ratio: f64,
    /// Method (ntt, reference, or a named backend).
    #[arg(long, default_value = "ntt")]
    method: String,
    /// Print one JSON object on stdout and nothing else.
    #[arg(long)]
    json: bool,
}

/// Runs `qkd bench ...`.
pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Amplify(args) => amplify(args),
    }
}

fn amplify(args: AmplifyArgs) -> anyhow::Result<()> {
    let method = ToeplitzMethod::from_name(&args.method)
        .with_context(|| format!("unknown method '{}'", args.method))?;
    let r = bench_toeplitz(args.block_bits, args.ratio, method)?;
    if args.json {
        return ui::print(serde_json::to_string(&r)?);
    }
    let rows = vec![
        ("method".into(), r.method.clone()),
        ("block bits".into(), r.block_bits.to_string()),
        ("output bits".into(), r.output_bits.to_string()),
        ("time".into(), format!("{:.3} s", r.seconds)),
        ("throughput (input)".into(), ui::rate(r.bits_per_second)),
        (
            "peak RSS".into(),
            r.peak_rss_bytes
                .map_or("n/a".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0)),
        ),
    ];
    ui::print(ui::table(["quantity", "value"], &rows))
}
