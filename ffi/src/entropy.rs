//! Entropy verdict on final keys: Shannon, min-entropy (MCV), SP 800-22 monobit and runs, and
//! the SP 800-90B repetition-count and adaptive-proportion tests, with one overall verdict.

use qkd_core::entropy::{AssessConfig, EntropyReport, Verdict, assess_with};

use crate::block::{block, qkd_block};
use crate::buffer::{in_slice, out_ref};
use crate::result::{Error, FfiResult, guard, qkd_result};

/// Default total false-alarm probability of the verdict: 2^-20 (qkd-core's `DEFAULT_ALPHA`;
/// a literal so that cbindgen can export it, checked equal by a test).
pub const QKD_ENTROPY_DEFAULT_FALSE_ALARM: f64 = 9.5367431640625e-7;

/// Fewer bytes than this give QKD_VERDICT_INSUFFICIENT_DATA.
pub const QKD_ENTROPY_MIN_BYTES: usize = 64;

/// The overall outcome of an assessment.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum qkd_verdict {
    /// Every check passed.
    QKD_VERDICT_PASS = 0,
    /// At least one check failed (see the *_passed fields).
    QKD_VERDICT_FAIL = 1,
    /// Fewer than QKD_ENTROPY_MIN_BYTES bytes: no conclusion (never a pass).
    QKD_VERDICT_INSUFFICIENT_DATA = 2,
}

/// Every statistic of an assessment, its threshold, and pass/fail.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct qkd_entropy_report {
    /// Sample size in bytes.
    pub n_bytes: u64,
    /// The overall verdict (a qkd_verdict value).
    pub verdict: qkd_verdict,
    /// Bound on the probability that ideal data fails (all checks together).
    pub false_alarm: f64,
    /// Plug-in Shannon entropy, bits per byte.
    pub shannon_bits_per_byte: f64,
    /// Shannon check fails below this.
    pub shannon_threshold: f64,
    /// Shannon check passed.
    pub shannon_passed: bool,
    /// Most-common-value min-entropy estimate (SP 800-90B 6.3.1), bits per byte.
    pub min_entropy_bits_per_byte: f64,
    /// Min-entropy check fails below this.
    pub min_entropy_threshold: f64,
    /// Min-entropy check passed.
    pub min_entropy_passed: bool,
    /// SP 800-22 frequency (monobit) p-value.
    pub monobit_p_value: f64,
    /// Monobit check passed.
    pub monobit_passed: bool,
    /// SP 800-22 runs p-value.
    pub runs_p_value: f64,
    /// Runs check passed.
    pub runs_passed: bool,
    /// p-values below this fail (false_alarm / 6).
    pub p_value_threshold: f64,
    /// Longest run of one byte value.
    pub repetition_longest_run: u32,
    /// Repetition count cutoff.
    pub repetition_cutoff: u32,
    /// Repetition count check passed.
    pub repetition_passed: bool,
    /// Largest count of a window's first value (adaptive proportion test).
    pub proportion_max_count: u32,
    /// Adaptive proportion cutoff.
    pub proportion_cutoff: u32,
    /// Adaptive proportion window, in bytes.
    pub proportion_window: u32,
    /// Adaptive proportion check passed.
    pub proportion_passed: bool,
}

impl From<&EntropyReport> for qkd_entropy_report {
    fn from(r: &EntropyReport) -> Self {
        Self {
            n_bytes: r.n_bytes,
            verdict: match r.verdict {
                Verdict::Pass => qkd_verdict::QKD_VERDICT_PASS,
                Verdict::Fail => qkd_verdict::QKD_VERDICT_FAIL,
                _ => qkd_verdict::QKD_VERDICT_INSUFFICIENT_DATA,
            },
            false_alarm: r.false_alarm,
            shannon_bits_per_byte: r.shannon.bits_per_byte,
            shannon_threshold: r.shannon.threshold,
            shannon_passed: r.shannon.passed,
            min_entropy_bits_per_byte: r.min_entropy.estimate.bits_per_sample,
            min_entropy_threshold: r.min_entropy.threshold,
            min_entropy_passed: r.min_entropy.passed,
            monobit_p_value: r.monobit.result.p_value,
            monobit_passed: r.monobit.passed,
            runs_p_value: r.runs.result.p_value,
            runs_passed: r.runs.passed,
            p_value_threshold: r.monobit.threshold,
            repetition_longest_run: r.repetition_count.longest_run,
            repetition_cutoff: r.repetition_count.cutoff,
            repetition_passed: r.repetition_count.passed,
            proportion_max_count: r.adaptive_proportion.max_count,
            proportion_cutoff: r.adaptive_proportion.cutoff,
            proportion_window: r.adaptive_proportion.window,
            proportion_passed: r.adaptive_proportion.passed,
        }
    }
}

fn assess_into(bytes: &[u8], false_alarm: f64, out: &mut qkd_entropy_report) -> FfiResult {
    let report = assess_with(bytes, &AssessConfig { false_alarm })
        .map_err(|e| Error::new(qkd_result::QKD_ERR_INVALID_ARGUMENT, e.to_string()))?;
    *out = (&report).into();
    Ok(())
}

/// Assesses `len` bytes at `bytes` at total false-alarm probability `false_alarm` (in (0, 1);
/// QKD_ENTROPY_DEFAULT_FALSE_ALARM is the default) and fills `*report_out`. A failing verdict
/// is a result, not an error: the call returns QKD_OK.
///
/// # Safety
/// `bytes` must be NULL or point to `len` readable bytes; `report_out` NULL or a writable
/// `qkd_entropy_report`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_entropy_assess(
    bytes: *const u8,
    len: usize,
    false_alarm: f64,
    report_out: *mut qkd_entropy_report,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `report_out` and `bytes`.
        let (out, data) = unsafe {
            (
                out_ref(report_out, "report_out")?,
                in_slice(bytes, len, "bytes")?,
            )
        };
        assess_into(data, false_alarm, out)
    })
}

/// As qkd_entropy_assess, on the bytes of a block (DESIGN §4 order; a partial last byte has
/// zero tail bits).
///
/// # Safety
/// `block` must be NULL or a live handle; `report_out` NULL or a writable
/// `qkd_entropy_report`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkd_entropy_assess_block(
    block: *const qkd_block,
    false_alarm: f64,
    report_out: *mut qkd_entropy_report,
) -> qkd_result {
    guard(|| {
        // SAFETY: caller contract on `report_out` and `block`.
        let (out, b) = unsafe {
            (
                out_ref(report_out, "report_out")?,
                self::block(block, "block")?,
            )
        };
        assess_into(&b.to_bytes(), false_alarm, out)
    })
}
