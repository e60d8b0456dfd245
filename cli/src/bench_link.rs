//! `qkd bench link`: Alice and Bob as two OS processes over a loopback TCP connection with a
//! latency line's delay each way, many blocks in flight, printed as one JSON object.
//!
//! The parent starts `qkd bench link-side --role bob` (which listens on an ephemeral port and
//! prints it), then `--role alice` connecting to it, and merges the JSON line each prints at the
//! end. Both simulate the same raw blocks from `--seed` before the clock starts and recycle them
//! under fresh block IDs (every session still draws fresh sample, shuffle-retry, hash and
//! Toeplitz seeds), and both start from the same simulated pre-shared authentication secret.
//! This is a throughput measurement: INSECURE as a key source.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use qkd_core::BitBlock;
use qkd_core::auth::KeyPool;
use qkd_core::pipeline::{BlockOutcome, PipelineConfig};
use qkd_core::rng::{RandomSource, SeededRandom};
use qkd_core::session::Link;
use qkd_core::session::drive::{DelayLine, Role, SideConfig, read_frame, run_side, write_frame};
use qkd_core::sim::{ErrorModel, simulate};
use serde::{Deserialize, Serialize};

use crate::ui;

/// Arguments of `qkd bench link`.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
pub struct LinkArgs {
    /// Raw bits per block.
    #[arg(long, default_value_t = 1 << 24)]
    block_bits: usize,
    /// Bits per frame (LDPC: the largest code frame that fits, 92160 bits at most).
    #[arg(long, default_value_t = 1 << 16)]
    frame_bits: usize,
    /// Bits per block disclosed for the QBER estimate.
    #[arg(long, default_value_t = 1 << 15)]
    sample_bits: usize,
    /// QBER of the simulated raw key.
    #[arg(long, default_value_t = 0.02)]
    qber: f64,
    /// Round-trip time of the line, in milliseconds (half of it each way).
    #[arg(long, default_value_t = 10.0)]
    rtt_ms: f64,
    /// Bandwidth of the line each way, in Mbit/s (0: unlimited).
    #[arg(long, default_value_t = 0.0)]
    bandwidth_mbps: f64,
    /// Seconds during which Alice starts new blocks (the blocks in flight then finish).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Blocks in flight.
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
    /// Reconciliation: a Cascade variant, ldpc-blind[:F_START:F_END] or ldpc-oneway[:F].
    #[arg(long, default_value = qkd_core::pipeline::DEFAULT_ALGORITHM)]
    algorithm: String,
    /// Seed of the simulated raw blocks and authentication secret.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object on stdout and nothing else.
    #[arg(long)]
    json: bool,
}

/// Arguments of the hidden `qkd bench link-side` (one party of `qkd bench link`).
#[derive(Debug, Clone, clap::Args)]
pub struct SideArgs {
    /// `alice` or `bob`.
    #[arg(long)]
    role: String,
    /// Alice: the port Bob listens on.
    #[arg(long)]
    connect: Option<u16>,
    /// The parent's `LinkArgs`, as JSON.
    #[arg(long)]
    spec: String,
}

/// What one side prints when it is done.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SideReport {
    blocks: u64,
    blocks_with_key: u64,
    raw_bits: u64,
    secret_bits: u64,
    round_trips: u64,
    auth_bits: u64,
    efficiency_sum: f64,
    efficiency_blocks: u64,
    errors: u64,
    first_error: Option<String>,
    wall_seconds: f64,
    /// Seconds from the start to each block's end, in the order blocks ended.
    ended_at: Vec<f64>,
    cpu_seconds: f64,
    bytes_sent: u64,
    messages_sent: u64,
    peak_rss_bytes: Option<u64>,
    /// BLAKE3 of every final key in block order (both sides must agree).
    keys_digest: String,
}

/// The merged result.
#[derive(Debug, Serialize)]
struct LinkReport {
    block_bits: usize,
    frame_bits: usize,
    sample_bits: usize,
    qber: f64,
    rtt_ms: f64,
    bandwidth_mbps: f64,
    in_flight: usize,
    algorithm: String,
    wall_seconds: f64,
    raw_bits_per_second: f64,
    secret_bits_per_second: f64,
    /// Raw bits per second between the first and the last block's end on Alice's side: the
    /// rate once the pipeline of blocks in flight is full (no ramp-up), `None` with one block.
    steady_raw_bits_per_second: Option<f64>,
    round_trips_per_block: f64,
    auth_bits_per_block: f64,
    auth_fraction_of_key: f64,
    blocks: u64,
    blocks_with_key: u64,
    blocks_failed: u64,
    efficiency_mean: Option<f64>,
    cpu_seconds_alice: f64,
    cpu_seconds_bob: f64,
    bytes_alice_to_bob: u64,
    bytes_bob_to_alice: u64,
    peak_rss_bytes_alice: Option<u64>,
    peak_rss_bytes_bob: Option<u64>,
    keys_identical: bool,
}

/// Runs `qkd bench link`: starts both sides and merges their reports.
pub fn run(args: LinkArgs) -> anyhow::Result<()> {
    if args.in_flight == 0 || args.seconds <= 0.0 || args.rtt_ms < 0.0 || args.bandwidth_mbps < 0.0
    {
        bail!(
            "--in-flight must be positive, --seconds positive, --rtt-ms and --bandwidth-mbps non-negative"
        );
    }
    config(&args).validate()?;
    let exe = std::env::current_exe().context("locating the qkd executable")?;
    let spec = serde_json::to_string(&args)?;
    let side = |role: &str| {
        let mut c = Command::new(&exe);
        c.args(["bench", "link-side", "--role", role, "--spec", &spec]);
        c.stdout(Stdio::piped()).stderr(Stdio::inherit());
        c
    };
    let mut bob = side("bob").spawn().context("starting Bob's process")?;
    let mut bob_out = BufReader::new(bob.stdout.take().context("Bob's stdout")?);
    let mut port = String::new();
    bob_out.read_line(&mut port)?;
    let port: u16 = port
        .trim()
        .parse()
        .with_context(|| format!("Bob's port line {port:?}"))?;
    let alice = side("alice")
        .args(["--connect", &port.to_string()])
        .output();
    if !alice.as_ref().is_ok_and(|a| a.status.success()) {
        // Bob may still wait for Alice to connect.
        bob.kill().ok();
        bob.wait().ok();
    }
    let alice = alice.context("running Alice's process")?;
    let mut bob_line = String::new();
    bob_out.read_line(&mut bob_line)?;
    let bob_status = bob.wait()?;
    if !alice.status.success() || !bob_status.success() {
        bail!("a side failed (Alice: {}, Bob: {bob_status})", alice.status);
    }
    let a: SideReport = serde_json::from_slice(&alice.stdout).context("Alice's report")?;
    let b: SideReport = serde_json::from_str(&bob_line).context("Bob's report")?;
    let secs = a.wall_seconds.max(1e-9);
    let report = LinkReport {
        block_bits: args.block_bits,
        frame_bits: args.frame_bits,
        sample_bits: args.sample_bits,
        qber: args.qber,
        rtt_ms: args.rtt_ms,
        bandwidth_mbps: args.bandwidth_mbps,
        in_flight: args.in_flight,
        algorithm: args.algorithm.clone(),
        wall_seconds: a.wall_seconds,
        raw_bits_per_second: a.raw_bits as f64 / secs,
        secret_bits_per_second: a.secret_bits as f64 / secs,
        steady_raw_bits_per_second: steady_rate(&a.ended_at, args.block_bits),
        round_trips_per_block: a.round_trips as f64 / a.blocks.max(1) as f64,
        auth_bits_per_block: a.auth_bits as f64 / a.blocks.max(1) as f64,
        auth_fraction_of_key: a.auth_bits as f64 / a.secret_bits.max(1) as f64,
        blocks: a.blocks,
        blocks_with_key: a.blocks_with_key,
        blocks_failed: a.errors.max(b.errors),
        efficiency_mean: (a.efficiency_blocks > 0)
            .then(|| a.efficiency_sum / a.efficiency_blocks as f64),
        cpu_seconds_alice: a.cpu_seconds,
        cpu_seconds_bob: b.cpu_seconds,
        bytes_alice_to_bob: a.bytes_sent,
        bytes_bob_to_alice: b.bytes_sent,
        peak_rss_bytes_alice: a.peak_rss_bytes,
        peak_rss_bytes_bob: b.peak_rss_bytes,
        keys_identical: a.keys_digest == b.keys_digest && a.blocks_with_key == b.blocks_with_key,
    };
    if let Some(e) = a.first_error.as_ref().or(b.first_error.as_ref()) {
        eprintln!(
            "warning: {} blocks failed; first: {e}",
            report.blocks_failed
        );
    }
    if args.json {
        return ui::print(serde_json::to_string(&report)?);
    }
    let rows = vec![
        ("round trip".into(), format!("{} ms", args.rtt_ms)),
        (
            "blocks (with key)".into(),
            format!("{} ({})", report.blocks, report.blocks_with_key),
        ),
        ("raw key".into(), ui::rate(report.raw_bits_per_second)),
        (
            "raw key, steady".into(),
            report
                .steady_raw_bits_per_second
                .map_or("n/a".into(), ui::rate),
        ),
        ("secret key".into(), ui::rate(report.secret_bits_per_second)),
        (
            "round trips per block".into(),
            format!("{:.1}", report.round_trips_per_block),
        ),
        (
            "auth bits per block".into(),
            format!("{:.0}", report.auth_bits_per_block),
        ),
        (
            "CPU s (Alice / Bob)".into(),
            format!(
                "{:.2} / {:.2}",
                report.cpu_seconds_alice, report.cpu_seconds_bob
            ),
        ),
        ("keys identical".into(), report.keys_identical.to_string()),
    ];
    ui::print(ui::table(["quantity", "value"], &rows))
}

fn config(a: &LinkArgs) -> PipelineConfig {
    PipelineConfig {
        block_bits: a.block_bits,
        sample_bits: a.sample_bits,
        frame_bits: a.frame_bits,
        algorithm: a.algorithm.clone(),
        ..PipelineConfig::default()
    }
}

/// Runs one side (the hidden `qkd bench link-side`).
pub fn run_side_process(args: SideArgs) -> anyhow::Result<()> {
    let la: &LinkArgs = &serde_json::from_str(&args.spec).context("--spec")?;
    let alice = match args.role.as_str() {
        "alice" => true,
        "bob" => false,
        other => bail!("--role {other:?}: expected alice or bob"),
    };
    // Simulated before the clock starts (the raw source is not what is measured): one distinct
    // block more than are in flight, recycled under fresh IDs.
    let raw: Vec<BitBlock> = (0..la.in_flight + 1)
        .map(|i| {
            let p = simulate(
                la.block_bits,
                la.qber,
                ErrorModel::IidExact,
                la.seed * 1000 + i as u64,
            )?;
            Ok(if alice { p.alice } else { p.bob })
        })
        .collect::<anyhow::Result<_>>()?;
    let mut secret = vec![0u8; 1 << 20];
    SeededRandom::from_u64(la.seed ^ 0x5eed).fill(&mut secret)?;
    let link = Link::new(
        config(la),
        Box::new(KeyPool::new(&secret)),
        &mut SeededRandom::from_u64(la.seed),
    )?;
    let stream = if alice {
        let port = args.connect.context("Alice needs --connect PORT")?;
        TcpStream::connect(("127.0.0.1", port)).context("connecting to Bob")?
    } else {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        println!("{}", listener.local_addr()?.port());
        std::io::stdout().flush()?;
        listener.accept()?.0
    };
    stream.set_nodelay(true)?;
    let report = run_over(stream, link, alice, &raw, la)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn run_over(
    stream: TcpStream,
    link: Arc<Link>,
    alice: bool,
    raw: &[BitBlock],
    la: &LinkArgs,
) -> anyhow::Result<SideReport> {
    let (tx, incoming) = mpsc::channel::<Vec<u8>>();
    let mut reader = BufReader::with_capacity(1 << 20, stream.try_clone()?);
    let reader_thread = std::thread::spawn(move || -> std::io::Result<()> {
        while let Some(m) = read_frame(&mut reader)? {
            if tx.send(m).is_err() {
                break;
            }
        }
        Ok(())
    });
    let mut writer = BufWriter::with_capacity(1 << 20, stream.try_clone()?);
    let bps = (la.bandwidth_mbps > 0.0).then_some(la.bandwidth_mbps * 1e6);
    let mut line = DelayLine::new(
        move |m: Vec<u8>| {
            write_frame(&mut writer, &m)?;
            writer.flush()
        },
        Duration::from_secs_f64(la.rtt_ms / 2000.0),
        bps,
    );
    let mut keys: Vec<(u64, blake3::Hash)> = Vec::new();
    let mut report = SideReport::default();
    let t0 = Instant::now();
    let cpu0 = cpu_seconds();
    let deadline = t0 + Duration::from_secs_f64(la.seconds);
    let mut next = 0u64;
    let mut blocks = std::iter::from_fn(|| {
        (Instant::now() < deadline).then(|| {
            let id = next;
            next += 1;
            (format!("b{id}"), raw[id as usize % raw.len()].clone())
        })
    });
    let mut raw_for = |id: &str| {
        let n: usize = id.strip_prefix('b')?.parse().ok()?;
        Some(raw[n % raw.len()].clone())
    };
    let role = if alice {
        Role::Alice {
            link,
            blocks: &mut blocks,
        }
    } else {
        Role::Bob {
            link,
            raw_for: &mut raw_for,
        }
    };
    let side = SideConfig {
        in_flight: la.in_flight,
        block_timeout: Duration::from_secs(120),
    };
    let stats = run_side(
        role,
        &incoming,
        &mut |m| line.send(m),
        side,
        &mut |id, r| {
            report.blocks += 1;
            report.ended_at.push(t0.elapsed().as_secs_f64());
            match r {
                Ok(o) => {
                    let rep = &o.report;
                    report.raw_bits += rep.raw_bits;
                    report.round_trips += u64::from(rep.round_trips);
                    report.auth_bits += rep.auth_bits;
                    if let Some(f) = rep.efficiency {
                        report.efficiency_sum += f;
                        report.efficiency_blocks += 1;
                    }
                    if let (BlockOutcome::Key, Some(k)) = (&rep.outcome, &o.key) {
                        report.blocks_with_key += 1;
                        report.secret_bits += k.len() as u64;
                        let n = id.trim_start_matches('b').parse().unwrap_or(u64::MAX);
                        keys.push((n, blake3::hash(&k.to_bytes())));
                    }
                }
                Err(e) => {
                    report.errors += 1;
                    report
                        .first_error
                        .get_or_insert_with(|| format!("block {id}: {e}"));
                }
            }
        },
    )?;
    report.wall_seconds = t0.elapsed().as_secs_f64();
    report.cpu_seconds = cpu_seconds() - cpu0;
    report.bytes_sent = stats.bytes_sent;
    report.messages_sent = stats.messages_sent;
    report.peak_rss_bytes = qkd_core::amplify::peak_rss_bytes();
    line.finish()?;
    // Alice closing her side ends Bob's reader, and Bob's loop with it.
    stream.shutdown(std::net::Shutdown::Both).ok();
    let _ = reader_thread.join();
    keys.sort_by_key(|k| k.0);
    let mut h = blake3::Hasher::new();
    for (_, k) in &keys {
        h.update(k.as_bytes());
    }
    report.keys_digest = h.finalize().to_hex().to_string();
    Ok(report)
}

/// `(blocks - 1) * block_bits` over the time between the first and the last block's end.
fn steady_rate(ended_at: &[f64], block_bits: usize) -> Option<f64> {
    let (first, last) = (ended_at.first()?, ended_at.last()?);
    (ended_at.len() > 1 && last > first)
        .then(|| (ended_at.len() - 1) as f64 * block_bits as f64 / (last - first))
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat` (clock ticks of
/// 1/100 s, the Linux USER_HZ).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(11) + ticks(12)) / 100.0
}
