//! Experiment harness: runs many seeded blocks of one configuration through the loopback and
//! reports efficiency, frame error rate, round trips and throughput.
//!
//! Efficiency `f` is computed per block with the error rate realized in that block
//! ([`super::efficiency`]); key pairs carry exactly `round(qber * n)` errors (uniform
//! positions), so the realized rate is the nominal one up to rounding. The frame error rate is
//! the fraction of blocks with any residual error after Cascade, *before* confirmation;
//! confirmation then runs on every block ([`crate::confirm`], `eps_cor` from the config) and
//! its failures and leakage are reported separately.
//!
//! Throughput `bits_per_second` is raw key bits over wall-clock time of the reconciliations
//! only (both sides, encoding included, rayon over blocks on a local pool of `threads`
//! threads); key-pair generation, plan building and confirmation are outside the timed
//! sections. The shuffle plans are built once per configuration (`plans` of them, default 1,
//! block `i` using plan `i % plans`): they are public and independent of the i.i.d. errors, so
//! sharing them between blocks leaves the statistics unchanged, and a link that keeps one
//! shuffle seed per session (rather than per block) caches its plan the same way.
//!
//! # Grid files
//!
//! A grid is a JSON object; every key but `runs`, `threads`, `seed`, `eps_cor`, `plans` and
//! `variants` may be a single value or a list, and the configurations are the Cartesian
//! product in the order algorithm, qber, block_bits, qber_estimate:
//!
//! ```json
//! { "algorithm": ["yanetal", "option8"], "qber": [0.01, 0.02, 0.05, 0.1],
//!   "block_bits": 16384, "runs": 1000, "threads": 2, "seed": 1 }
//! ```
//!
//! `algorithm` may also name an LDPC protocol (`ldpc-blind[:F_START:F_END]`,
//! `ldpc-oneway[:F]`; [`super::ldpc::harness`]).
//!
//! `qber_estimate` (optional, single value or list) sets the QBER the protocol is told,
//! default the true one. `variants` (optional) is a list of full [`Variant`] objects, usable
//! by name in `algorithm` (for block-size tuning without code).

use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::ReconcileError;
use super::cascade::{Alice, Bob, Params, Plan, Variant};
use super::loopback::LoopbackLink;
use super::testkit::{error_count, noisy_pair};
use crate::confirm;
use crate::rng::SeededRandom;

/// Most distinct shuffle plans one configuration may use.
pub const MAX_PLANS: usize = 64;

/// Blocks generated, then reconciled, per timed batch.
const BATCH: usize = 512;

/// Errors of the harness.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExperimentError {
    /// No built-in or grid-defined variant has this name.
    #[error("unknown algorithm '{0}'; expected one of: {1}")]
    UnknownAlgorithm(String, String),
    /// A configuration value out of range.
    #[error("invalid experiment configuration: {0}")]
    BadConfig(String),
    /// The grid file is not valid JSON of the documented shape.
    #[error("invalid grid file: {0}")]
    Grid(String),
    /// The thread pool could not be built.
    #[error("cannot build a thread pool of {threads} threads: {error}")]
    ThreadPool {
        /// Threads requested.
        threads: usize,
        /// Why it failed.
        error: String,
    },
    /// A reconciliation failed (a bug: the loopback never sends bad messages).
    #[error("reconciliation failed: {0}")]
    Reconcile(#[from] ReconcileError),
    /// Confirmation could not run with the configured `eps_cor`.
    #[error("confirmation failed: {0}")]
    Confirm(#[from] confirm::ConfirmError),
}

fn default_threads() -> usize {
    1
}

fn default_plans() -> usize {
    1
}

fn default_eps_cor() -> f64 {
    1e-12
}

/// One configuration: many blocks of one variant at one QBER and length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Variant name ([`Variant::by_name`], or the name of `variant`).
    pub algorithm: String,
    /// True error rate of the key pairs.
    pub qber: f64,
    /// Block length in bits.
    pub block_bits: usize,
    /// Number of blocks.
    pub runs: usize,
    /// Worker threads (at least 1).
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Seed of keys, errors and shuffles.
    #[serde(default)]
    pub seed: u64,
    /// QBER given to the protocol (default: `qber`).
    #[serde(default)]
    pub qber_estimate: Option<f64>,
    /// `eps_cor` of the confirmation step.
    #[serde(default = "default_eps_cor")]
    pub eps_cor: f64,
    /// A full variant definition (overrides the built-in lookup of `algorithm`).
    #[serde(default)]
    pub variant: Option<Variant>,
    /// Distinct shuffle plans (seeds) used round-robin over the blocks (1..=[`MAX_PLANS`]).
    #[serde(default = "default_plans")]
    pub plans: usize,
}

impl ExperimentConfig {
    /// A configuration with the default threads (1), seed (0) and `eps_cor` (1e-12).
    pub fn new(algorithm: &str, qber: f64, block_bits: usize, runs: usize) -> Self {
        Self {
            algorithm: algorithm.to_owned(),
            qber,
            block_bits,
            runs,
            threads: 1,
            seed: 0,
            qber_estimate: None,
            eps_cor: default_eps_cor(),
            variant: None,
            plans: 1,
        }
    }

    fn resolve_variant(&self) -> Result<Variant, ExperimentError> {
        if let Some(v) = &self.variant {
            return Ok(v.clone());
        }
        Variant::by_name(&self.algorithm).ok_or_else(|| {
            let names: Vec<String> = Variant::all()
                .into_iter()
                .map(|v| v.name)
                .chain(["ldpc-blind".into(), "ldpc-oneway".into()])
                .collect();
            ExperimentError::UnknownAlgorithm(self.algorithm.clone(), names.join(", "))
        })
    }
}

/// Summary of one configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExperimentResult {
    /// Variant name.
    pub algorithm: String,
    /// True error rate.
    pub qber: f64,
    /// QBER the protocol was told.
    pub qber_estimate: f64,
    /// Block length.
    pub block_bits: usize,
    /// Blocks run.
    pub runs: usize,
    /// Worker threads.
    pub threads: usize,
    /// Seed.
    pub seed: u64,
    /// Mean efficiency (realized error rate per block).
    pub efficiency_mean: f64,
    /// Sample standard deviation of the efficiency.
    pub efficiency_std: f64,
    /// Efficiency counting failed blocks as fully disclosed:
    /// `(1 - FER) f + FER / h(QBER)`.
    pub efficiency_with_failures: f64,
    /// Fraction of blocks with residual errors after Cascade (or, for LDPC, failed or wrongly
    /// decoded frames), before confirmation.
    pub frame_error_rate: f64,
    /// Residual errors over all bits, before confirmation.
    pub bit_error_rate: f64,
    /// Mean round trips per block.
    pub round_trips_mean: f64,
    /// Largest round-trip count seen.
    pub round_trips_max: u32,
    /// Mean messages per block (both directions).
    pub messages_mean: f64,
    /// Mean encoded bytes per block (both directions).
    pub bytes_mean: f64,
    /// Mean parity bits disclosed per block.
    pub disclosed_bits_mean: f64,
    /// Mean errors per block before reconciliation.
    pub errors_mean: f64,
    /// Tag bits of the confirmation (leakage per block, not in `f`).
    pub confirm_tag_bits: u32,
    /// Blocks the confirmation rejected.
    pub confirm_rejected: usize,
    /// Blocks with residual errors that the confirmation accepted (should be 0).
    pub confirm_undetected: usize,
    /// Raw key bits reconciled per second of wall clock (both sides, all threads).
    pub bits_per_second: f64,
    /// Basis of the efficiency: always "realized".
    pub efficiency_basis: &'static str,
}

struct RunOut {
    f: f64,
    residual: u64,
    round_trips: u32,
    messages: u32,
    bytes: u64,
    disclosed: u64,
    errors: u64,
    confirm_ok: bool,
}

/// The seed of item `i` of stream `tag` (keys, plans, confirmation...) of a configuration.
pub(crate) fn derive_seed(base: u64, tag: u64, i: u64) -> u64 {
    let mut r =
        SeededRandom::from_u64(base ^ tag.rotate_left(32) ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    r.u64()
}

/// A rayon pool of `threads` threads for one configuration.
pub(crate) fn thread_pool(threads: usize) -> Result<rayon::ThreadPool, ExperimentError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| ExperimentError::ThreadPool {
            threads,
            error: e.to_string(),
        })
}

/// Runs one configuration.
pub fn run(cfg: &ExperimentConfig) -> Result<ExperimentResult, ExperimentError> {
    if cfg.runs == 0 || cfg.threads == 0 {
        return Err(ExperimentError::BadConfig(format!(
            "runs = {}, threads = {}; expected at least 1",
            cfg.runs, cfg.threads
        )));
    }
    if let Some(params) = super::ldpc::harness::params_for(&cfg.algorithm, cfg.block_bits) {
        return super::ldpc::harness::run(cfg, params?);
    }
    let variant = cfg.resolve_variant()?;
    let n = cfg.block_bits;
    if n == 0 || n > super::cascade::MAX_BITS {
        return Err(ExperimentError::BadConfig(format!(
            "block_bits = {n}; expected 1..={}",
            super::cascade::MAX_BITS
        )));
    }
    if !(cfg.qber >= 0.0 && cfg.qber < 0.5) {
        return Err(ExperimentError::BadConfig(format!(
            "qber = {}; expected 0 <= qber < 0.5",
            cfg.qber
        )));
    }
    if cfg.plans == 0 || cfg.plans > MAX_PLANS {
        return Err(ExperimentError::BadConfig(format!(
            "plans = {}; expected 1..={MAX_PLANS}",
            cfg.plans
        )));
    }
    let estimate = cfg.qber_estimate.unwrap_or(cfg.qber);
    let tag_bits = confirm::tag_bits_for(cfg.eps_cor, n)?;
    let pool = thread_pool(cfg.threads)?;
    let plans: Vec<_> = (0..cfg.runs.min(cfg.plans))
        .map(|i| {
            let mut seed = [0u8; 32];
            SeededRandom::from_u64(derive_seed(cfg.seed, 1, i as u64)).bytes(&mut seed);
            Plan::new(Params {
                variant: variant.clone(),
                n: n as u32,
                qber: estimate,
                seed,
            })
        })
        .collect::<Result<_, _>>()?;
    let errors = error_count(n, cfg.qber);
    let mut outs: Vec<RunOut> = Vec::with_capacity(cfg.runs);
    let mut timed = Duration::ZERO;
    pool.install(|| -> Result<(), ExperimentError> {
        let mut start = 0;
        while start < cfg.runs {
            let end = (start + BATCH).min(cfg.runs);
            let pairs: Vec<_> = (start..end)
                .into_par_iter()
                .map(|i| noisy_pair(n, errors, derive_seed(cfg.seed, 2, i as u64)))
                .collect();
            let t0 = Instant::now();
            let done: Vec<_> = pairs
                .into_par_iter()
                .enumerate()
                .map(|(j, (a, b))| {
                    let plan = &plans[(start + j) % plans.len()];
                    let mut alice = Alice::with_plan(a, plan.clone());
                    let mut bob = Bob::new(plan.clone(), b)?;
                    let rep = LoopbackLink::run(&mut alice, &mut bob)?;
                    Ok((alice.into_key(), bob.into_key(), rep))
                })
                .collect::<Result<_, ReconcileError>>()?;
            timed += t0.elapsed();
            let batch: Vec<RunOut> = done
                .into_par_iter()
                .enumerate()
                .map(|(j, (a, b, rep))| {
                    let mut rng =
                        SeededRandom::from_u64(derive_seed(cfg.seed, 3, (start + j) as u64));
                    let (mut init, ch) =
                        confirm::ConfirmInitiator::start(&a, cfg.eps_cor, &mut rng)?;
                    let (verdict, _) = confirm::respond(&b, cfg.eps_cor, ch)?;
                    let out = init.finish(verdict)?;
                    Ok(RunOut {
                        f: rep.efficiency(),
                        residual: rep.residual_errors,
                        round_trips: rep.bob.round_trips,
                        messages: rep.bob.messages,
                        bytes: rep.bytes_to_alice + rep.bytes_to_bob,
                        disclosed: rep.alice_disclosed_bits,
                        errors: rep.initial_errors,
                        confirm_ok: out.matched,
                    })
                })
                .collect::<Result<_, confirm::ConfirmError>>()?;
            outs.extend(batch);
            start = end;
        }
        Ok(())
    })?;
    let runs = outs.len() as f64;
    let mean = |g: &dyn Fn(&RunOut) -> f64| outs.iter().map(g).sum::<f64>() / runs;
    let f_mean = mean(&|o| o.f);
    let f_var = if outs.len() > 1 {
        outs.iter().map(|o| (o.f - f_mean).powi(2)).sum::<f64>() / (runs - 1.0)
    } else {
        0.0
    };
    let failed = outs.iter().filter(|o| o.residual > 0).count();
    let fer = failed as f64 / runs;
    Ok(ExperimentResult {
        algorithm: cfg.algorithm.clone(),
        qber: cfg.qber,
        qber_estimate: estimate,
        block_bits: n,
        runs: cfg.runs,
        threads: cfg.threads,
        seed: cfg.seed,
        efficiency_mean: f_mean,
        efficiency_std: f_var.sqrt(),
        efficiency_with_failures: super::efficiency_with_failures(
            f_mean,
            fer,
            errors as f64 / n as f64,
        ),
        frame_error_rate: fer,
        bit_error_rate: mean(&|o| o.residual as f64) / n as f64,
        round_trips_mean: mean(&|o| f64::from(o.round_trips)),
        round_trips_max: outs.iter().map(|o| o.round_trips).max().unwrap_or(0),
        messages_mean: mean(&|o| f64::from(o.messages)),
        bytes_mean: mean(&|o| o.bytes as f64),
        disclosed_bits_mean: mean(&|o| o.disclosed as f64),
        errors_mean: mean(&|o| o.errors as f64),
        confirm_tag_bits: tag_bits,
        confirm_rejected: outs.iter().filter(|o| !o.confirm_ok).count(),
        confirm_undetected: outs
            .iter()
            .filter(|o| o.confirm_ok && o.residual > 0)
            .count(),
        bits_per_second: (runs * n as f64) / timed.as_secs_f64().max(1e-12),
        efficiency_basis: "realized",
    })
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    fn to_vec(&self) -> Vec<T> {
        match self {
            OneOrMany::One(x) => vec![x.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GridFile {
    algorithm: OneOrMany<String>,
    qber: OneOrMany<f64>,
    block_bits: OneOrMany<usize>,
    runs: usize,
    #[serde(default = "default_threads")]
    threads: usize,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    qber_estimate: Option<OneOrMany<f64>>,
    #[serde(default = "default_eps_cor")]
    eps_cor: f64,
    #[serde(default)]
    variants: Vec<Variant>,
    #[serde(default = "default_plans")]
    plans: usize,
}

/// Parses a grid file (format in the module docs) into configurations.
pub fn parse_grid(json: &str) -> Result<Vec<ExperimentConfig>, ExperimentError> {
    let g: GridFile =
        serde_json::from_str(json).map_err(|e| ExperimentError::Grid(e.to_string()))?;
    let estimates: Vec<Option<f64>> = match &g.qber_estimate {
        None => vec![None],
        Some(e) => e.to_vec().into_iter().map(Some).collect(),
    };
    let mut out = Vec::new();
    for algorithm in g.algorithm.to_vec() {
        let variant = g.variants.iter().find(|v| v.name == algorithm).cloned();
        // An LDPC name is checked here (its frame size only depends on block_bits).
        let ldpc = super::ldpc::harness::params_for(&algorithm, 0)
            .transpose()?
            .is_some();
        if variant.is_none() && Variant::by_name(&algorithm).is_none() && !ldpc {
            let names: Vec<String> = Variant::all()
                .into_iter()
                .map(|v| v.name)
                .chain(g.variants.iter().map(|v| v.name.clone()))
                .collect();
            return Err(ExperimentError::UnknownAlgorithm(
                algorithm,
                names.join(", "),
            ));
        }
        for qber in g.qber.to_vec() {
            for block_bits in g.block_bits.to_vec() {
                for &qber_estimate in &estimates {
                    out.push(ExperimentConfig {
                        algorithm: algorithm.clone(),
                        qber,
                        block_bits,
                        runs: g.runs,
                        threads: g.threads,
                        seed: g.seed,
                        qber_estimate,
                        eps_cor: g.eps_cor,
                        variant: variant.clone(),
                        plans: g.plans,
                    });
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the grid file named by `QKD_GRID` and prints one JSON result per line (a stand-in
    /// for `qkd bench reconcile --grid` until the CLI is wired):
    /// `QKD_GRID=grid.json cargo test --release -p qkd-core --lib run_grid_from_env -- --ignored --nocapture`
    #[test]
    #[ignore = "measurement driver, run by hand"]
    fn run_grid_from_env() {
        let Some(path) = std::env::var_os("QKD_GRID") else {
            return;
        };
        let grid = std::fs::read_to_string(path).unwrap();
        for cfg in parse_grid(&grid).unwrap() {
            let r = run(&cfg).unwrap();
            println!("{}", serde_json::to_string(&r).unwrap());
        }
    }

    #[test]
    fn grid_expands_the_product() {
        let g = r#"{"algorithm": ["yanetal", "option8"], "qber": [0.01, 0.05],
                    "block_bits": 1024, "runs": 3, "threads": 2, "seed": 7}"#;
        let c = parse_grid(g).unwrap();
        assert_eq!(c.len(), 4);
        assert_eq!(c[1].algorithm, "yanetal");
        assert_eq!(c[1].qber, 0.05);
        assert_eq!(
            (c[3].block_bits, c[3].runs, c[3].threads, c[3].seed),
            (1024, 3, 2, 7)
        );
        assert!(
            parse_grid(r#"{"algorithm": "nope", "qber": 0.1, "block_bits": 8, "runs": 1}"#)
                .is_err()
        );
        assert!(
            parse_grid(
                r#"{"algorithm": "yanetal", "qber": 0.1, "block_bits": 8, "runs": 1, "x": 1}"#
            )
            .is_err()
        );
        let mut v = Variant::option8();
        v.name = "mine".into();
        let custom = format!(
            r#"{{"algorithm": "mine", "qber": 0.02, "block_bits": 512, "runs": 1, "variants": [{}]}}"#,
            serde_json::to_string(&v).unwrap()
        );
        let c = parse_grid(&custom).unwrap();
        assert_eq!(c[0].variant.as_ref().unwrap().passes, 14);
    }

    #[test]
    fn small_experiment_reports_sane_numbers() {
        let mut cfg = ExperimentConfig::new("yanetal", 0.03, 2048, 20);
        cfg.threads = 2;
        let r = run(&cfg).unwrap();
        assert_eq!(r.runs, 20);
        assert_eq!(r.errors_mean, 61.0);
        assert!(r.efficiency_mean > 1.0 && r.efficiency_mean < 2.0);
        assert_eq!(r.frame_error_rate, 0.0);
        assert_eq!(r.confirm_rejected, 0);
        assert!(r.bits_per_second > 0.0);
        assert!(r.round_trips_mean >= 2.0);
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"efficiency_mean\""));
        assert!(run(&ExperimentConfig::new("bogus", 0.03, 2048, 1)).is_err());
        assert!(run(&ExperimentConfig::new("yanetal", 0.6, 2048, 1)).is_err());
    }
}
