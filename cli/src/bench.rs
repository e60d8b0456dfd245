//! `qkd bench`: throughput of single stages, printed as a table or one JSON object.

use std::path::PathBuf;

use anyhow::{Context, bail};
use qkd_core::amplify::{ToeplitzMethod, bench_toeplitz};
use qkd_core::reconcile::experiment::{self, ExperimentConfig, ExperimentResult};

use crate::ui;

/// The stage to benchmark.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Toeplitz privacy amplification on a random block.
    Amplify(AmplifyArgs),
    /// Cascade reconciliation, both parties in process, over many seeded blocks.
    Reconcile(ReconcileArgs),
    /// The whole block protocol between two processes over loopback TCP with a latency line.
    Link(crate::bench_link::LinkArgs),
    /// One side of `qkd bench link` (started by it).
    #[command(hide = true)]
    LinkSide(crate::bench_link::SideArgs),
}

/// Arguments of `qkd bench reconcile`.
#[derive(Debug, clap::Args)]
pub struct ReconcileArgs {
    /// Cascade variant: original, biconf, yanetal, option3, option4, option7, option8, or an
    /// extra variant (see the core docs); or LDPC: ldpc-blind[:F_START:F_END] (blind, up to 3
    /// reveal rounds), ldpc-oneway[:F] (one syndrome). For LDPC, --block-bits picks the frame
    /// (4320, 11520, 46080 or 92160 key bits: the largest that fits).
    #[arg(long, default_value = qkd_core::pipeline::DEFAULT_ALGORITHM, conflicts_with = "grid")]
    algorithm: String,
    /// True error rate of the simulated key pairs.
    #[arg(long, default_value_t = 0.02)]
    qber: f64,
    /// Block length in bits.
    #[arg(long, default_value_t = 1 << 14)]
    block_bits: usize,
    /// Number of blocks.
    #[arg(long, default_value_t = 1000)]
    runs: usize,
    /// Worker threads (rayon over blocks).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Seed of keys, errors and shuffles (the experiment is reproducible).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A JSON sweep file (format: `qkd_core::reconcile::experiment` docs); prints one JSON object
    /// per configuration and line.
    #[arg(long)]
    grid: Option<PathBuf>,
    /// Print JSON on stdout and nothing else.
    #[arg(long)]
    json: bool,
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
    /// Method: auto (default), clmul, fft, ntt, reference, or a named backend.
    #[arg(long, default_value = "auto")]
    method: String,
    /// Hashes timed after the first (the report gives their median; the first, which also
    /// pays for fresh memory, is reported apart). Threads: RAYON_NUM_THREADS (default: all
    /// cores).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Print one JSON object on stdout and nothing else.
    #[arg(long)]
    json: bool,
}

/// Runs `qkd bench ...`.
pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Amplify(args) => amplify(args),
        Command::Reconcile(args) => reconcile(args),
        Command::Link(args) => crate::bench_link::run(args),
        Command::LinkSide(args) => crate::bench_link::run_side_process(args),
    }
}

fn reconcile(args: ReconcileArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.grid {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the grid file {}", path.display()))?;
        let configs = experiment::parse_grid(&text)
            .with_context(|| format!("parsing the grid file {}", path.display()))?;
        let bar = (!args.json).then(|| ui::progress(configs.len() as u64, "configs", None));
        for cfg in &configs {
            let r = experiment::run(cfg)?;
            match &bar {
                None => ui::print(serde_json::to_string(&r)?)?,
                Some(b) => {
                    b.suspend(|| print_reconcile(&r))?;
                    b.inc(1);
                }
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        return Ok(());
    }
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    let mut cfg = ExperimentConfig::new(&args.algorithm, args.qber, args.block_bits, args.runs);
    cfg.threads = args.threads;
    cfg.seed = args.seed;
    let r = experiment::run(&cfg)?;
    if args.json {
        return ui::print(serde_json::to_string(&r)?);
    }
    print_reconcile(&r)
}

fn print_reconcile(r: &ExperimentResult) -> anyhow::Result<()> {
    let rows = vec![
        ("algorithm".into(), r.algorithm.clone()),
        ("QBER".into(), ui::pct(r.qber, 2)),
        ("block bits".into(), r.block_bits.to_string()),
        (
            "runs / threads".into(),
            format!("{} / {}", r.runs, r.threads),
        ),
        (
            "efficiency f".into(),
            format!("{:.4} ± {:.4}", r.efficiency_mean, r.efficiency_std),
        ),
        (
            "efficiency with failures".into(),
            format!("{:.4}", r.efficiency_with_failures),
        ),
        (
            "frame error rate".into(),
            format!("{:.2e}", r.frame_error_rate),
        ),
        (
            "round trips (mean / max)".into(),
            format!("{:.1} / {}", r.round_trips_mean, r.round_trips_max),
        ),
        ("messages (mean)".into(), format!("{:.1}", r.messages_mean)),
        (
            "confirmation tag bits".into(),
            r.confirm_tag_bits.to_string(),
        ),
        ("throughput (raw key)".into(), ui::rate(r.bits_per_second)),
    ];
    ui::print(ui::table(["quantity", "value"], &rows))
}

fn amplify(args: AmplifyArgs) -> anyhow::Result<()> {
    let method = ToeplitzMethod::from_name(&args.method)
        .with_context(|| format!("unknown method '{}'", args.method))?;
    let r = bench_toeplitz(args.block_bits, args.ratio, method, args.repeat)?;
    if args.json {
        return ui::print(serde_json::to_string(&r)?);
    }
    let rows = vec![
        ("method".into(), r.method.clone()),
        ("threads".into(), r.threads.to_string()),
        ("block bits".into(), r.block_bits.to_string()),
        ("output bits".into(), r.output_bits.to_string()),
        ("first hash".into(), format!("{:.3} s", r.first_seconds)),
        (
            format!("time (median of {})", r.repeats),
            format!("{:.3} s (fastest {:.3} s)", r.seconds, r.min_seconds),
        ),
        ("throughput (input)".into(), ui::rate(r.bits_per_second)),
        (
            "peak RSS".into(),
            r.peak_rss_bytes
                .map_or("n/a".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0)),
        ),
    ];
    ui::print(ui::table(["quantity", "value"], &rows))
}
