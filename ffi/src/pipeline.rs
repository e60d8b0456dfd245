//! The whole pipeline on one block pair (both parties in this process): estimate -> reconcile ->
//! confirm -> secret length -> Toeplitz -> entropy check, with its report.

use std::ffi::{CStr, c_char};

use qkd_core::entropy::Verdict;
use qkd_core::pipeline::{BlockOutcome, BlockReport, PipelineConfig, PipelineError, process_block};
use qkd_core::rng::OsRandom;

use crate::block::{block, block_out, qkd_block};
use crate::buffer::{in_ref, out_ref};
use crate::entropy::qkd_verdict;
use crate::handle;
use crate::result::{Error, FfiResult, guard, qkd_result};

/// Capacity of `qkd_block_report.outcome_reason`, NUL included.
pub const QKD_REASON_LEN: usize = 160;

/// Settings of the pipeline; fill with qkd_pipeline_config_default, then adjust.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct qkd_pipeline_config {
    /// Bits disclosed per block to estimate the QBER (0 < sample_bits < block length / 2).
    pub sample_bits: u64,
    /// Reconciliation algorithm, NUL-terminated: a Cascade variant, "ldpc-blind[:F_START:F_END]" or "ldpc-oneway[:F]" (NULL: the engine's default, "yanetal" at this version). Must stay valid during the call.
    pub variant: *const c_char,
    /// Failure probability of the QBER upper bound (parameter estimation), in (0, 1).
    pub eps_pe: f64,
    /// Secrecy parameter of the final key, in (0, 1).
    pub eps_sec: f64,
    /// Correctness parameter (confirmation tag length), in (0, 1).
    pub eps_cor: f64,
    /// The top rung of the QBER ladder (rungs from 0.25 % by a factor 1.1): blocks whose sample
    /// QBER or QBER upper bound exceeds it are discarded before reconciliation; in (0, 0.5].
    pub max_qber: f64,
    /// Bits per frame: a block (sample removed) is reconciled as frames of this size that
    /// advance together and are confirmed one by one; 0 reconciles it as one frame, otherwise
    /// at least 1024. LDPC frames are the largest code frame that fits (0: 92160 bits, at least
    /// 4320); the block's tail after its whole frames is charged as disclosed.
    pub frame_bits: u64,
}

/// What happened to a block.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum qkd_block_outcome {
    /// A final key was produced.
    QKD_OUTCOME_KEY = 0,
    /// No key: QBER too high, confirmation mismatch, or a secret length of zero.
    QKD_OUTCOME_DISCARDED = 1,
    /// A final key was produced but failed the entropy check; it is withheld.
    QKD_OUTCOME_QUARANTINED = 2,
}

/// Everything one block went through (DESIGN §2). Floating-point fields that did not apply are
/// NaN.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct qkd_block_report {
    /// What happened (a qkd_block_outcome value).
    pub outcome: qkd_block_outcome,
    /// Why the block was discarded or quarantined (empty for a key), NUL-terminated, truncated
    /// to fit.
    pub outcome_reason: [c_char; QKD_REASON_LEN],
    /// Raw bits in.
    pub raw_bits: u64,
    /// Bits disclosed for estimation.
    pub sample_bits: u64,
    /// Errors in the sample.
    pub sample_errors: u64,
    /// QBER observed on the sample.
    pub qber: f64,
    /// Upper bound on the QBER of the rest at eps_pe.
    pub qber_upper: f64,
    /// Bits reconciled (raw minus sample).
    pub reconciled_bits: u64,
    /// The tolerated QBER the block was sized for (its rung of the ladder); NaN before
    /// estimation ended.
    pub qber_tolerated: f64,
    /// Bits Alice disclosed: Cascade parities, or LDPC syndromes and reveals (the numerator of the efficiency).
    pub leak_alice_bits: u64,
    /// Bits of Bob's messages that depend on his key (counted conservatively; with
    /// leak_alice_bits it sizes the key).
    pub leak_bob_bits: u64,
    /// Reconciliation round trips.
    pub round_trips: u32,
    /// Messages of the block's session.
    pub messages: u32,
    /// Errors reconciliation corrected.
    pub errors_corrected: u64,
    /// Errors left after reconciliation (this in-process run knows both keys).
    pub residual_errors: u64,
    /// Errors present before reconciliation.
    pub true_errors: u64,
    /// Reconciliation efficiency f (DESIGN §4); NaN when nothing was corrected or Cascade did
    /// not run.
    pub efficiency: f64,
    /// Confirmation tag bits, every check of every frame (leaked; reported apart from f).
    pub confirm_tag_bits: u32,
    /// Whether every frame's confirmation tags matched in the end (after any retry).
    pub confirmed: bool,
    /// Frames whose first confirmation failed and that were reconciled once more.
    pub retried_frames: u32,
    /// Frames that still failed and were dropped on both sides (their bits count as disclosed).
    pub dropped_frames: u32,
    /// Secret length from the finite-key bound (0 when it did not run).
    pub secret_bits: u64,
    /// The bound before rounding (NaN when it did not run).
    pub secret_raw_bits: f64,
    /// Final key bits delivered (0 unless the outcome is QKD_OUTCOME_KEY).
    pub final_bits: u64,
    /// Authentication key spent on this block, in bits (one-time pads, and a new hash key when
    /// one was drawn); 0 for qkd_pipeline_process_block, which authenticates nothing.
    pub auth_bits: u64,
    /// Whether an entropy verdict was made (then `entropy` holds it).
    pub entropy_checked: bool,
    /// The entropy verdict of the final key (a qkd_verdict value), if entropy_checked.
    pub entropy: qkd_verdict,
    /// Seconds in estimation.
    pub seconds_estimate: f64,
    /// Seconds in reconciliation (both sides).
    pub seconds_reconcile: f64,
    /// Seconds in confirmation.
    pub seconds_confirm: f64,
    /// Seconds in Toeplitz hashing (both sides).
    pub seconds_amplify: f64,
    /// Seconds in the entropy check.
    pub seconds_check: f64,
}

/// Fills `*config` with the defaults: a 16384-bit sample, the default variant (NULL), eps_pe = eps_sec =
/// 1e-10, eps_cor = 1e-15, max_qber = 0.11, 65536-bit frames.
///
/// # Safety
/// `config` must be NULL or point to a writable `qkd_pipeline_config`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_pipeline_config_default(
    config: *mut qkd_pipeline_config,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `config`.
        let out = unsafe { out_ref(config, "config") }?;
        let d = PipelineConfig::default();
        *out = qkd_pipeline_config {
            sample_bits: d.sample_bits as u64,
            variant: std::ptr::null(),
            eps_pe: d.eps_pe,
            eps_sec: d.eps_sec,
            eps_cor: d.eps_cor,
            max_qber: d.max_qber,
            frame_bits: d.frame_bits as u64,
        };
        Ok(())
    })
}

fn reason_array(s: &str) -> [c_char; QKD_REASON_LEN] {
    let mut out = [0 as c_char; QKD_REASON_LEN];
    let mut end = s.len().min(QKD_REASON_LEN - 1);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    for (dst, &b) in out.iter_mut().zip(&s.as_bytes()[..end]) {
        *dst = b as c_char;
    }
    out
}

#[cfg(test)]
pub(crate) fn reason_array_for_tests(s: &str) -> [c_char; QKD_REASON_LEN] {
    reason_array(s)
}

/// The C report of a core block report (the pipeline's and the sessions').
pub(crate) fn block_report(r: &BlockReport) -> qkd_block_report {
    let (outcome, reason) = match &r.outcome {
        BlockOutcome::Key => (qkd_block_outcome::QKD_OUTCOME_KEY, ""),
        BlockOutcome::Discarded(why) => (qkd_block_outcome::QKD_OUTCOME_DISCARDED, why.as_str()),
        BlockOutcome::Quarantined(why) => {
            (qkd_block_outcome::QKD_OUTCOME_QUARANTINED, why.as_str())
        }
    };
    qkd_block_report {
        outcome,
        outcome_reason: reason_array(reason),
        raw_bits: r.raw_bits,
        sample_bits: r.sample_bits,
        sample_errors: r.sample_errors,
        qber: r.qber,
        qber_upper: r.qber_upper,
        reconciled_bits: r.reconciled_bits,
        qber_tolerated: r.qber_tolerated.unwrap_or(f64::NAN),
        leak_alice_bits: r.leak_alice_bits,
        leak_bob_bits: r.leak_bob_bits,
        round_trips: r.round_trips,
        messages: r.messages,
        errors_corrected: r.errors_corrected,
        residual_errors: r.residual_errors,
        true_errors: r.true_errors,
        efficiency: r.efficiency.unwrap_or(f64::NAN),
        confirm_tag_bits: r.confirm_tag_bits,
        confirmed: r.confirmed,
        retried_frames: r.retried_frames,
        dropped_frames: r.dropped_frames,
        secret_bits: r.secret.map_or(0, |s| s.bits),
        secret_raw_bits: r.secret.map_or(f64::NAN, |s| s.raw_bits),
        final_bits: r.final_bits,
        auth_bits: r.auth_bits,
        entropy_checked: r.entropy.is_some(),
        entropy: match r.entropy {
            Some(Verdict::Pass) => qkd_verdict::QKD_VERDICT_PASS,
            Some(Verdict::Fail) => qkd_verdict::QKD_VERDICT_FAIL,
            _ => qkd_verdict::QKD_VERDICT_INSUFFICIENT_DATA,
        },
        seconds_estimate: r.times.estimate,
        seconds_reconcile: r.times.reconcile,
        seconds_confirm: r.times.confirm,
        seconds_amplify: r.times.amplify,
        seconds_check: r.times.check,
    }
}

fn pipeline_error(e: PipelineError) -> Error {
    let code = match e {
        PipelineError::LengthMismatch { .. } => qkd_result::QKD_ERR_LENGTH_MISMATCH,
        PipelineError::Rng(_) => qkd_result::QKD_ERR_RANDOM_SOURCE,
        PipelineError::Config(_) | PipelineError::ShorterThanBlock { .. } => {
            qkd_result::QKD_ERR_INVALID_ARGUMENT
        }
        _ => qkd_result::QKD_ERR_INTERNAL,
    };
    Error::new(code, e.to_string())
}

/// The core configuration of `c` for blocks of `block_bits` bits.
///
/// # Safety
/// `c.variant` must be NULL or a NUL-terminated string.
pub(crate) unsafe fn core_config(
    c: &qkd_pipeline_config,
    block_bits: usize,
) -> FfiResult<PipelineConfig> {
    let algorithm = if c.variant.is_null() {
        qkd_core::pipeline::DEFAULT_ALGORITHM.to_owned()
    } else {
        // SAFETY: non-NULL and NUL-terminated by the caller's contract.
        unsafe { CStr::from_ptr(c.variant) }
            .to_str()
            .map_err(|_| Error::invalid("variant name is not UTF-8"))?
            .to_owned()
    };
    Ok(PipelineConfig {
        block_bits,
        sample_bits: crate::buffer::to_usize(c.sample_bits, "sample_bits")?,
        algorithm,
        frame_bits: crate::buffer::to_usize(c.frame_bits, "frame_bits")?,
        eps_pe: c.eps_pe,
        eps_sec: c.eps_sec,
        eps_cor: c.eps_cor,
        max_qber: c.max_qber,
        ..PipelineConfig::default()
    })
}

/// Runs the whole pipeline on one block pair in this process (public seeds from the OS CSPRNG)
/// and fills `*report_out`. When the outcome is QKD_OUTCOME_KEY, `*final_key_out` is the final
/// key (identical on both sides, checked); otherwise it is NULL. A discarded or quarantined
/// block is an outcome, not an error: the call returns QKD_OK. `config` NULL uses the
/// defaults.
///
/// # Safety
/// `alice`, `bob` must be NULL or live handles; `config` NULL or a readable
/// `qkd_pipeline_config` whose `variant` is NULL or NUL-terminated; `report_out` NULL or a
/// writable `qkd_block_report`; `final_key_out` NULL or a writable `qkd_block *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_pipeline_process_block(
    alice: *const qkd_block,
    bob: *const qkd_block,
    config: *const qkd_pipeline_config,
    report_out: *mut qkd_block_report,
    final_key_out: *mut *mut qkd_block,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on the out-parameters and the blocks.
        let (key_out, report, a, b) = unsafe {
            (
                block_out(final_key_out, "final_key_out")?,
                out_ref(report_out, "report_out")?,
                block(alice, "alice")?,
                block(bob, "bob")?,
            )
        };
        let cfg = if config.is_null() {
            PipelineConfig {
                block_bits: a.len(),
                ..PipelineConfig::default()
            }
        } else {
            // SAFETY: caller contract on `config` and its `variant`.
            unsafe { core_config(in_ref(config, "config")?, a.len()) }?
        };
        let result = process_block(0, a, b, &cfg, &mut OsRandom).map_err(pipeline_error)?;
        *report = block_report(&result.report);
        if let Some(key) = result.key {
            handle::put(key_out, key);
        }
        Ok(())
    })
}
