//! Simulated QKD link: a pair of raw keys with a chosen error rate and error model.

use qkd_core::rng::OsRandom;
use qkd_core::sim::{ErrorModel, SimConfig, SimError};

use crate::block::{block_out, qkd_block};
use crate::buffer::{in_ref, out_ref};
use crate::handle;
use crate::result::{Error, FfiResult, guard, qkd_result};

/// How Bob's simulated bits differ from Alice's.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum qkd_error_model {
    /// Exactly round(qber * bits) errors at distinct, uniformly chosen positions.
    QKD_ERROR_MODEL_IID = 0,
    /// Each bit wrong independently with probability qber.
    QKD_ERROR_MODEL_BERNOULLI = 1,
    /// Bursty errors: a Gilbert-Elliott chain with the default burst shape, calibrated to qber.
    QKD_ERROR_MODEL_BURST = 2,
}

/// What a simulation produced.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct qkd_sim_report {
    /// Key length in bits.
    pub bits: u64,
    /// Requested QBER.
    pub qber: f64,
    /// Positions where the two keys differ.
    pub errors: u64,
    /// errors / bits.
    pub actual_qber: f64,
    /// The error model (a qkd_error_model value).
    pub model: qkd_error_model,
}

fn model_from(v: u32) -> FfiResult<ErrorModel> {
    Ok(match v {
        0 => ErrorModel::IidExact,
        1 => ErrorModel::Bernoulli,
        2 => ErrorModel::burst(),
        _ => {
            return Err(Error::invalid(format!(
                "error model {v} is unknown; expected QKD_ERROR_MODEL_IID (0), _BERNOULLI (1) or _BURST (2)"
            )));
        }
    })
}

fn sim_error(e: SimError) -> Error {
    match e {
        SimError::Rng(_) => Error::new(qkd_result::QKD_ERR_RANDOM_SOURCE, e.to_string()),
        _ => Error::invalid(e.to_string()),
    }
}

/// Simulates `bits` raw key bits for Alice and Bob with error rate `qber` (in [0, 0.5]) under
/// `model` (a qkd_error_model value). With `seed` non-NULL the run is reproducible from
/// `*seed`; with NULL it draws from the operating system's CSPRNG. On success `*alice_out` and
/// `*bob_out` are new blocks and, if `report_out` is not NULL, the report is filled in.
///
/// # Safety
/// `seed` must be NULL or point to a readable `uint64_t`; `alice_out`/`bob_out` must be NULL or
/// point to writable `qkd_block *`; `report_out` must be NULL or point to a writable
/// `qkd_sim_report`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_simulate(
    bits: usize,
    qber: f64,
    model: u32,
    seed: *const u64,
    alice_out: *mut *mut qkd_block,
    bob_out: *mut *mut qkd_block,
    report_out: *mut qkd_sim_report,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on the out-parameters.
        let (alice_out, bob_out) = unsafe {
            (
                block_out(alice_out, "alice_out")?,
                block_out(bob_out, "bob_out")?,
            )
        };
        let config = SimConfig::new(bits, qber, model_from(model)?);
        let pair = if seed.is_null() {
            config.run(&mut OsRandom)
        } else {
            // SAFETY: caller contract on `seed` (non-NULL here).
            config.run_seeded(*unsafe { in_ref(seed, "seed") }?)
        }
        .map_err(sim_error)?;
        if !report_out.is_null() {
            // SAFETY: caller contract on `report_out` (non-NULL here).
            let r = unsafe { out_ref(report_out, "report_out") }?;
            *r = qkd_sim_report {
                bits: pair.report.bits,
                qber: pair.report.qber,
                errors: pair.report.errors,
                actual_qber: pair.report.actual_qber(),
                model: match model {
                    0 => qkd_error_model::QKD_ERROR_MODEL_IID,
                    1 => qkd_error_model::QKD_ERROR_MODEL_BERNOULLI,
                    _ => qkd_error_model::QKD_ERROR_MODEL_BURST,
                },
            };
        }
        handle::put(alice_out, pair.alice);
        handle::put(bob_out, pair.bob);
        Ok(())
    })
}
