//! One-way LDPC frames decoded by the min-sum decoder, and optionally by the floating-point
//! sum-product reference: how far a mother code, its min-sum normalization and its puncturing
//! leave the decoder from belief propagation. Used to choose
//! `Scaling::for_check_degree` and the set of mother codes.
//!
//! ```text
//! cargo run --release -p qkd-core --example ldpc_frames -- F (--qber Q | --rows R)
//!     [--frames N] [--first K] [--z Z] [--iterations I] [--scaling A,B] [--plain] [--reference]
//! ```
//!
//! `--rows R` picks the QBER at which the mother code of `R` block rows carries efficiency `F`
//! with (almost) nothing punctured; `--scaling A,B` overrides the normalization
//! `1 - 2^-A - 2^-B` (`B = 0`: none); `--plain` turns self-correction off. Frames are seeded:
//! the same arguments give the same counts.

use qkd_core::bits::BitBlock;
use qkd_core::reconcile::binary_entropy;
use qkd_core::reconcile::ldpc::codes::builtin;
use qkd_core::reconcile::ldpc::decoder::reference::sum_product;
use qkd_core::reconcile::ldpc::decoder::{
    Backend, DecoderParams, Frame, KNOWN, Scaling, channel_llr, decode,
};
use qkd_core::reconcile::ldpc::protocol::{FramePlan, LdpcParams};
use qkd_core::reconcile::testkit::{error_count, noisy_pair};
use qkd_core::rng::SeededRandom;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let number = |name: &str, default: f64| -> Result<f64, Box<dyn std::error::Error>> {
        Ok(value(name)
            .map(|v| v.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let f: f64 = args.first().ok_or("give the efficiency F")?.parse()?;
    let (frames, first, z) = (
        number("--frames", 16.0)? as usize,
        number("--first", 0.0)? as usize,
        number("--z", 512.0)? as u32,
    );
    let key_bits = FramePlan::key_bits_for(z);
    let qber = match (value("--qber"), value("--rows")) {
        (Some(q), None) => q.parse()?,
        // Slightly below the syndrome, so that rounding keeps this mother.
        (None, Some(r)) => {
            inverse_entropy(r.parse::<f64>()? * f64::from(z) / (f * 1.0005 * key_bits as f64))
        }
        _ => return Err("give --qber or --rows".into()),
    };
    let plan = FramePlan::choose(&LdpcParams::one_way(z, f), qber)?;
    let scaling = match value("--scaling") {
        Some(s) => {
            let (a, b) = s.split_once(',').ok_or("--scaling A,B")?;
            Scaling {
                a: a.parse()?,
                b: b.parse()?,
            }
        }
        None => plan.decoder.scaling,
    };
    let params = DecoderParams {
        scaling,
        self_correct: !args.iter().any(|a| a == "--plain"),
        max_iterations: number("--iterations", f64::from(plan.decoder.max_iterations))? as u32,
        ..plan.decoder
    };
    let reference = args.iter().any(|a| a == "--reference");
    let graph = &builtin(plan.rows, plan.z)?.graph;
    let (n, q) = (graph.n(), channel_llr(qber));
    let exact = ((1.0 - qber) / qber).ln();
    let (mut min_sum, mut sum_prod) = (0, 0);
    for i in first..first + frames {
        let mut rng = SeededRandom::from_u64(99 + i as u64);
        // Alice's word: key bits in place, random punctured bits, zero shortened ones; Bob's
        // LLRs as `LdpcBob` sets them.
        let (x, y) = noisy_pair(key_bits, error_count(key_bits, qber), 1000 + i as u64);
        let mut word = vec![false; n];
        let mut llr = vec![0i8; n];
        for (j, &v) in plan.key_positions.iter().enumerate() {
            word[v] = x.get(j)?;
            llr[v] = if y.get(j)? { -q } else { q };
        }
        plan.punctured
            .iter()
            .for_each(|&v| word[v] = rng.u64() & 1 == 1);
        plan.shortened.iter().for_each(|&v| llr[v] = KNOWN);
        let word = BitBlock::from_bools(&word);
        let syndrome = graph.syndrome(&word)?;
        let d = decode(
            graph,
            params,
            Backend::best(),
            &[Frame {
                llr: &llr,
                syndrome: &syndrome,
            }],
        )?;
        min_sum += usize::from(d[0].word.as_ref() == Some(&word));
        if d[0].word.as_ref() != Some(&word) {
            let what = if d[0].word.is_some() {
                "a wrong word"
            } else {
                "no word"
            };
            println!("frame {i}: {what} after {} iterations", d[0].iterations);
        }
        if reference {
            let real: Vec<f64> = llr
                .iter()
                .map(|&l| match l {
                    0 => 0.0,
                    KNOWN => 40.0,
                    l => f64::from(l.signum()) * exact,
                })
                .collect();
            let decoded = sum_product(graph, &real, &syndrome, params.max_iterations);
            sum_prod += usize::from(decoded.is_some_and(|(w, _)| w == word));
        }
    }
    println!(
        "f {f} QBER {qber:.5}: mother {} rows, {} punctured, {} shortened, alpha {}: \
         min-sum decoded {min_sum} of {frames}{}",
        plan.rows,
        plan.punctured.len(),
        plan.shortened.len(),
        scaling.alpha(),
        if reference {
            format!(", sum-product {sum_prod}")
        } else {
            String::new()
        }
    );
    Ok(())
}

/// The QBER `p <= 0.5` with `h(p) = target`, by bisection.
fn inverse_entropy(target: f64) -> f64 {
    let (mut lo, mut hi) = (1e-9, 0.5);
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if binary_entropy(mid) < target {
            lo = mid
        } else {
            hi = mid
        }
    }
    lo
}
