//! `qkd keyrate`: the finite-key secret length of one block under a chosen model, with every
//! term, for sizing blocks and comparing models (docs/security.md has the formulas).

use std::path::PathBuf;

use anyhow::{Context, bail};
use qkd_core::amplify::{
    Bb84Tlgr2012, DecoyStatistics, FiniteKeyInput, Lim2014, QberLadder, SecretLengthModel,
};
use qkd_core::confirm::tag_bits_for;
use serde_json::{Value, json};

/// The models `--model` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Model {
    /// Ideal-qubit BB84, Tomamichel, Lim, Gisin, Renner 2012.
    Tlgr2012,
    /// Decoy-state BB84, Lim, Curty, Walenta, Xu, Zbinden 2014.
    Lim2014,
}

/// Arguments of `qkd keyrate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The secret-length model.
    #[arg(long, value_enum)]
    model: Model,
    /// tlgr2012: key bits n (after the sample is removed).
    #[arg(long, required_if_eq("model", "tlgr2012"))]
    n: Option<u64>,
    /// tlgr2012: sample bits k (test bits; for asymmetric BB84, the other basis' bits).
    #[arg(long, required_if_eq("model", "tlgr2012"))]
    k: Option<u64>,
    /// tlgr2012: errors among the k sample bits.
    #[arg(long, required_if_eq("model", "tlgr2012"))]
    errors: Option<u64>,
    /// tlgr2012: confirmation tag bits (default: the engine's tag for n bits at eps_cor).
    #[arg(long)]
    tag_bits: Option<u32>,
    /// tlgr2012: size for the sample's rung of the engine's QBER ladder (and pay for its
    /// rungs), as the pipeline does, instead of a tolerated QBER of errors/k fixed in advance.
    #[arg(long)]
    ladder: bool,
    /// tlgr2012 with --ladder: the ladder's top rung.
    #[arg(long, default_value_t = 0.11)]
    max_qber: f64,
    /// tlgr2012: preparation quality q (1 for ideal BB84).
    #[arg(long, default_value_t = 1.0)]
    preparation_quality: f64,
    /// lim2014: the counts file, {"intensities": [..3], "probabilities": [..3],
    /// "x": {"detections": [..3], "errors": [..3]}, "z": {...}} (X is the key basis).
    #[arg(long, required_if_eq("model", "lim2014"))]
    counts: Option<PathBuf>,
    /// Bits disclosed by error correction (both sides).
    #[arg(long)]
    leak_ec: u64,
    /// Secrecy parameter.
    #[arg(long, default_value_t = 1e-10)]
    eps_sec: f64,
    /// Correctness parameter.
    #[arg(long, default_value_t = 1e-15)]
    eps_cor: f64,
    /// Print one JSON object (bits and every term) instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `qkd keyrate`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let out = match args.model {
        Model::Tlgr2012 => tlgr(&args)?,
        Model::Lim2014 => lim(&args)?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_table(&out);
    }
    Ok(())
}

fn tlgr(args: &Args) -> anyhow::Result<Value> {
    let (Some(n), Some(k), Some(errors)) = (args.n, args.k, args.errors) else {
        bail!("--model tlgr2012 needs --n, --k and --errors");
    };
    if k == 0 {
        bail!("--k 0: the QBER estimate needs at least one sample bit");
    }
    if errors > k {
        bail!("--errors {errors} exceeds the {k} sample bits");
    }
    let observed = errors as f64 / k as f64;
    let (qber_tolerated, length_choices) = if args.ladder {
        let ladder = QberLadder::default_up_to(args.max_qber)?;
        let Some(rung) = ladder.rung_for(observed) else {
            bail!(
                "sample QBER {observed:.5} is above the ladder's top rung {}: the block aborts",
                ladder.top()
            );
        };
        (rung, ladder.len())
    } else {
        (observed, 1)
    };
    let confirm_tag_bits = match args.tag_bits {
        Some(t) => t,
        None => tag_bits_for(args.eps_cor, usize::try_from(n)?)
            .context("the engine's confirmation tag for these n and eps_cor")?,
    };
    let model = Bb84Tlgr2012 {
        preparation_quality: args.preparation_quality,
    };
    let input = FiniteKeyInput {
        key_bits: n,
        sample_bits: k,
        qber: qber_tolerated,
        leak_ec_bits: args.leak_ec,
        confirm_tag_bits,
        length_choices,
        eps_sec: args.eps_sec,
        eps_cor: args.eps_cor,
    };
    let bound = model.secret_length(&input)?;
    let mut out = json!({ "model": model.name(), "sample_qber": observed });
    merge(&mut out, serde_json::to_value(input)?);
    merge(&mut out, serde_json::to_value(bound)?);
    out["secret_fraction"] = json!(bound.bits as f64 / (n + k) as f64);
    Ok(out)
}

fn lim(args: &Args) -> anyhow::Result<Value> {
    let Some(path) = &args.counts else {
        bail!("--model lim2014 needs --counts FILE.json");
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the counts file {}", path.display()))?;
    let stats: DecoyStatistics = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a counts file", path.display()))?;
    let input = stats.into_input(args.leak_ec, args.eps_sec, args.eps_cor);
    let model = Lim2014;
    let bound = model.secret_length(&input)?;
    let mut out = json!({ "model": model.name() });
    merge(&mut out, serde_json::to_value(bound)?);
    Ok(out)
}

/// Adds the fields of `more` (an object) to `out` (an object).
fn merge(out: &mut Value, more: Value) {
    if let (Value::Object(o), Value::Object(m)) = (out, more) {
        o.extend(m);
    }
}

fn print_table(out: &Value) {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED)
        .set_header(["term", "value"]);
    if let Value::Object(o) = out {
        for (k, v) in o {
            t.add_row([k.clone(), v.to_string()]);
        }
    }
    println!("{t}");
}
