//! `qkd amplify`: Toeplitz hashing of a key file with a seed file, for interoperability checks.

use std::path::PathBuf;

use anyhow::{Context, bail};
use qkd_core::BitBlock;
use qkd_core::amplify::{ToeplitzMethod, seed_bits_needed, toeplitz_hash_with};
use zeroize::Zeroizing;

/// Arguments of `qkd amplify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input key file (DESIGN §4 bit order: bit i is bit i%8 of byte i/8).
    #[arg(long)]
    input: PathBuf,
    /// Seed file, same bit order; must hold at least N+M-1 bits.
    #[arg(long)]
    seed: PathBuf,
    /// Output length M in bits (0 < M < N).
    #[arg(long)]
    output_bits: usize,
    /// Input length N in bits; defaults to 8 * (input file size).
    #[arg(long)]
    input_bits: Option<usize>,
    /// Output file: ceil(M/8) bytes, tail bits zero.
    #[arg(long)]
    out: PathBuf,
    /// Method: auto (default: the fastest exact method for the size), clmul, fft, ntt, reference
    /// (naive O(nm)), or a named backend such as fft-vpclmul.
    #[arg(long, default_value = "auto")]
    method: String,
}

fn read(path: &PathBuf, what: &str) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    Ok(Zeroizing::new(std::fs::read(path).with_context(|| {
        format!("reading the {what} file {}", path.display())
    })?))
}

/// Runs `qkd amplify`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let method = ToeplitzMethod::from_name(&args.method)
        .with_context(|| format!("unknown method '{}'", args.method))?;
    let input_bytes = read(&args.input, "input")?;
    let n = args.input_bits.unwrap_or(input_bytes.len() * 8);
    if n > input_bytes.len() * 8 {
        bail!(
            "--input-bits {n} exceeds the {} bits of {}",
            input_bytes.len() * 8,
            args.input.display()
        );
    }
    let seed_bytes = read(&args.seed, "seed")?;
    let needed = seed_bits_needed(n, args.output_bits);
    if seed_bytes.len() * 8 < needed {
        bail!(
            "seed file {} holds {} bits but N + M - 1 = {n} + {} - 1 = {needed} are needed",
            args.seed.display(),
            seed_bytes.len() * 8,
            args.output_bits
        );
    }
    let x = BitBlock::from_bytes(&input_bytes, n)?;
    let s = BitBlock::from_bytes(&seed_bytes, needed)?;
    let y = toeplitz_hash_with(method, &x, &s, args.output_bits)?;
    std::fs::write(&args.out, &*y.to_bytes())
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote {} bits to {}", y.len(), args.out.display());
    Ok(())
}
