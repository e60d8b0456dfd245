//! `qkd process`: raw key pair in, final keys and block reports out.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use qkd_core::amplify::ToeplitzMethod;
use qkd_core::pipeline::{self, BlockReport, PipelineConfig, PipelineError, StreamSummary};
use qkd_store::{BlockId, NewBlock, Store};

use crate::{report, ui};

/// Arguments of `qkd process`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Alice's raw key file (packed bytes, DESIGN §4 bit order).
    #[arg(long)]
    pub alice: PathBuf,
    /// Bob's raw key file, same length.
    #[arg(long)]
    pub bob: PathBuf,
    /// Output directory: `block-<index>.key` per block with key (mode 0600), `reports.jsonl`,
    /// `summary.json`.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Also append every final key to this key store (as a block of the link `--link`).
    #[arg(long, requires = "link")]
    pub store: Option<PathBuf>,
    /// The link (peer KME ID) the keys belong to in the store.
    #[arg(long)]
    pub link: Option<String>,
    /// Block IDs in the store are `<prefix>-<index>`; default: Alice's file name without
    /// extension. Both KMEs must use the same prefix.
    #[arg(long)]
    pub block_prefix: Option<String>,
    /// Blocks read and processed in parallel at a time (bounds memory).
    #[arg(long, default_value_t = 8)]
    pub batch_blocks: usize,
    /// Print one JSON object (the summary) on stdout and nothing else.
    #[arg(long)]
    pub json: bool,
}

/// Pipeline settings shared by `qkd process` and `qkd demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct PipelineArgs {
    /// Raw bits per block (a multiple of 8) [default: 1048576; `qkd demo` on its embedded
    /// pair: 262144].
    #[arg(long)]
    pub block_bits: Option<usize>,
    /// Bits per block disclosed for QBER estimation [default: 16384; `qkd demo` on its
    /// embedded pair: 32768].
    #[arg(long)]
    pub sample_bits: Option<usize>,
    /// Reconciliation: a Cascade variant, ldpc-blind[:F_START:F_END] or ldpc-oneway[:F].
    #[arg(long, default_value = qkd_core::pipeline::DEFAULT_ALGORITHM)]
    pub algorithm: String,
    /// Bits per frame: a block's frames advance together and are confirmed one by one, a failed
    /// Cascade frame being reconciled again (0: the whole block is one frame). LDPC frames are
    /// the largest code frame that fits (0: 92160 bits); a block's tail after its whole frames
    /// is left out of the key.
    #[arg(long, default_value_t = qkd_core::pipeline::DEFAULT_FRAME_BITS)]
    pub frame_bits: usize,
    /// Secrecy parameter.
    #[arg(long, default_value_t = 1e-10)]
    pub eps_sec: f64,
    /// Correctness parameter.
    #[arg(long, default_value_t = 1e-15)]
    pub eps_cor: f64,
    /// The top rung of the QBER ladder: blocks whose sample QBER or QBER upper bound exceeds it
    /// are discarded.
    #[arg(long, default_value_t = 0.11)]
    pub max_qber: f64,
    /// Toeplitz method: auto (default), clmul, fft, ntt, reference.
    #[arg(long, default_value = "auto")]
    pub toeplitz: String,
}

impl PipelineArgs {
    /// Default of `--block-bits`.
    pub const DEFAULT_BLOCK_BITS: usize = 1 << 20;
    /// Default of `--sample-bits`.
    pub const DEFAULT_SAMPLE_BITS: usize = 1 << 14;

    /// The core configuration, with the usual defaults for what was not given.
    pub fn config(&self) -> anyhow::Result<PipelineConfig> {
        self.config_or(Self::DEFAULT_BLOCK_BITS, Self::DEFAULT_SAMPLE_BITS)
    }

    /// The core configuration: `--block-bits` and `--sample-bits` when given, else these.
    pub fn config_or(
        &self,
        block_bits: usize,
        sample_bits: usize,
    ) -> anyhow::Result<PipelineConfig> {
        let toeplitz = ToeplitzMethod::from_name(&self.toeplitz)
            .with_context(|| format!("unknown Toeplitz method '{}'", self.toeplitz))?;
        let cfg = PipelineConfig {
            block_bits: self.block_bits.unwrap_or(block_bits),
            sample_bits: self.sample_bits.unwrap_or(sample_bits),
            algorithm: self.algorithm.clone(),
            frame_bits: self.frame_bits,
            eps_sec: self.eps_sec,
            eps_cor: self.eps_cor,
            max_qber: self.max_qber,
            toeplitz,
            ..PipelineConfig::default()
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Writes a final key file readable by the owner only.
pub fn write_key(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_data()
}

/// Opens a raw key file and gives its length in bytes. A directory, or a text file of `0` and
/// `1` characters (raw keys are binary, 8 bits per byte), is refused with what to do instead.
fn open_raw_key(path: &Path, side: &str) -> anyhow::Result<(File, u64)> {
    let mut f =
        File::open(path).with_context(|| format!("opening {side}'s key {}", path.display()))?;
    let meta = f.metadata()?;
    if meta.is_dir() {
        bail!(
            "{side}'s key {} is a directory; give the raw key file itself",
            path.display()
        );
    }
    let mut head = Vec::with_capacity(4096);
    (&mut f)
        .take(4096)
        .read_to_end(&mut head)
        .with_context(|| format!("reading {side}'s key {}", path.display()))?;
    if looks_like_bit_text(&head) {
        bail!(
            "{side}'s key {} looks like text of '0' and '1' characters; raw keys are binary, 8 \
             bits per byte, bit i in bit i % 8 of byte i / 8 (convert with numpy: \
             np.packbits(bits, bitorder=\"little\").tofile(path))",
            path.display()
        );
    }
    f.seek(SeekFrom::Start(0))?;
    Ok((f, meta.len()))
}

/// Whether `head` (a file's first bytes) is only ASCII `0`, `1`, whitespace and commas, with at
/// least 8 digits: a random binary file starts so with negligible probability.
fn looks_like_bit_text(head: &[u8]) -> bool {
    let digits = head.iter().filter(|b| matches!(b, b'0' | b'1')).count();
    digits >= 8
        && head
            .iter()
            .all(|b| matches!(b, b'0' | b'1' | b' ' | b'\t' | b'\r' | b'\n' | b','))
}

/// Runs `qkd process`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = args.pipeline.config()?;
    let (fa, la) = open_raw_key(&args.alice, "Alice")?;
    let (fb, lb) = open_raw_key(&args.bob, "Bob")?;
    if la != lb {
        bail!("Alice's key has {la} bytes but Bob's has {lb}; they must be equal");
    }
    let blocks = la * 8 / cfg.block_bits as u64;
    if blocks == 0 {
        bail!(
            "the inputs hold {} bits, fewer than one block of {} bits",
            la * 8,
            cfg.block_bits
        );
    }
    fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let store = match &args.store {
        Some(dir) => {
            Some(Store::open(dir).with_context(|| format!("opening the store {}", dir.display()))?)
        }
        None => None,
    };
    let link = args.link.clone().unwrap_or_default();
    let prefix = match &args.block_prefix {
        Some(p) => p.clone(),
        None => args
            .alice
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "block".into()),
    };
    let mut reports_file = BufWriter::new(
        File::create(args.out.join("reports.jsonl")).context("creating reports.jsonl")?,
    );
    let bar = ui::progress(blocks, "process", Some(cfg.block_bits));
    let mut reports: Vec<BlockReport> = Vec::new();
    let out = args.out.clone();
    let summary = pipeline::process_stream(
        BufReader::new(fa),
        BufReader::new(fb),
        &cfg,
        args.batch_blocks,
        |r| {
            let io = |error: std::io::Error| PipelineError::Io {
                side: "output",
                error,
            };
            if let Some(key) = &r.key {
                write_key(
                    &out.join(format!("block-{:06}.key", r.report.index)),
                    &key.to_bytes(),
                )
                .map_err(io)?;
                if let Some(store) = &store {
                    let stage = |message: String| PipelineError::Stage {
                        block: r.report.index,
                        stage: "store",
                        message,
                    };
                    let id = BlockId::new(format!("{prefix}-{:06}", r.report.index))
                        .map_err(|e| stage(e.to_string()))?;
                    let leaked = r.report.leak_alice_bits
                        + r.report.leak_bob_bits
                        + u64::from(r.report.confirm_tag_bits);
                    let block = NewBlock::from_bits(&link, id, key)
                        .qber(r.report.qber)
                        .leaked_bits(leaked)
                        .actor("qkd process");
                    store.append(block).map_err(|e| stage(e.to_string()))?;
                }
            }
            let line = serde_json::to_string(&r.report).map_err(|e| io(e.into()))?;
            writeln!(reports_file, "{line}").map_err(io)?;
            reports.push(r.report);
            bar.inc(1);
            Ok(())
        },
    )?;
    bar.finish_and_clear();
    reports_file.flush()?;
    fs::write(
        args.out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    print_run(&summary, &reports, args.json)
}

/// Prints a run: JSON summary, or the block and summary tables.
pub fn print_run(s: &StreamSummary, reports: &[BlockReport], json: bool) -> anyhow::Result<()> {
    if json {
        return ui::print(serde_json::to_string(s)?);
    }
    if reports.len() <= 32 {
        ui::print(report::blocks_table(reports))?;
    }
    ui::print(report::summary_table(&s.summary, s.ignored_tail_bits))
}
