//! Tests of the C surface called from Rust: codes, out-parameters, handle checks, and
//! agreement with qkd-core (the reference) on every wrapped operation.

use std::ffi::CStr;
use std::ptr::{null, null_mut};

use qkd_core::BitBlock;
use qkd_core::rng::SeededRandom;

use crate::result::qkd_result::*;
use crate::*;

fn last_error() -> String {
    let mut buf = [0 as std::ffi::c_char; 512];
    let mut len = 0usize;
    // SAFETY: buffer and length are valid locals.
    let r = unsafe { qkd_last_error_message(buf.as_mut_ptr(), buf.len(), &mut len) };
    assert_eq!(r, QKD_OK);
    // SAFETY: the call wrote a NUL-terminated string into `buf`.
    let s = unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(s.len(), len);
    s
}

fn block_from(bytes: &[u8], bits: usize) -> *mut qkd_block {
    let mut b = null_mut();
    assert_eq!(
        // SAFETY: valid slice and out-pointer.
        unsafe { qkd_block_from_bytes(bytes.as_ptr(), bytes.len(), bits, &mut b) },
        QKD_OK
    );
    assert!(!b.is_null());
    b
}

fn bytes_of(b: *const qkd_block) -> Vec<u8> {
    let mut len = 0usize;
    // SAFETY: size query with a NULL buffer and zero capacity.
    let r = unsafe { qkd_block_to_bytes(b, null_mut(), 0, &mut len) };
    let mut out = vec![0u8; len];
    if len > 0 {
        assert_eq!(r, QKD_ERR_BUFFER_TOO_SHORT);
    }
    let mut len2 = 0usize;
    assert_eq!(
        // SAFETY: buffer of `len` bytes.
        unsafe { qkd_block_to_bytes(b, out.as_mut_ptr(), out.len(), &mut len2) },
        QKD_OK
    );
    assert_eq!(len2, len);
    out
}

fn to_block(b: *const qkd_block) -> BitBlock {
    let mut bits = 0usize;
    // SAFETY: live handle, valid out-pointer.
    assert_eq!(unsafe { qkd_block_len(b, &mut bits) }, QKD_OK);
    BitBlock::from_bytes(&bytes_of(b), bits).unwrap()
}

#[test]
fn every_code_has_a_distinct_message_and_unknown_codes_are_named() {
    let mut seen = std::collections::HashSet::new();
    for code in crate::result::qkd_result::ALL {
        // SAFETY: qkd_result_message returns a static C string.
        let m = unsafe { CStr::from_ptr(qkd_result_message(code as u32)) };
        assert!(!m.is_empty());
        assert!(seen.insert(m.to_owned()), "duplicate message for {code:?}");
    }
    // SAFETY: as above.
    let unknown = unsafe { CStr::from_ptr(qkd_result_message(9999)) };
    assert_eq!(unknown.to_str().unwrap(), "unknown result code");
    // The numbering is part of the ABI.
    assert_eq!(QKD_ERR_BUFFER_TOO_SHORT as u32, 3);
    assert_eq!(QKD_ERR_PANIC as u32, 8);
}

#[test]
fn version_matches_the_crate() {
    // SAFETY: static C string.
    let v = unsafe { CStr::from_ptr(qkd_version()) };
    assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

#[test]
fn a_panic_becomes_a_code_with_a_detail() {
    let r = crate::result::guard(|| panic!("boom in test"));
    assert_eq!(r, QKD_ERR_PANIC);
    let e = last_error();
    assert!(e.contains("panic") && e.contains("boom in test"), "{e}");
    // A successful call clears the detail.
    let mut bits = 0usize;
    let b = block_from(&[1], 3);
    // SAFETY: live handle.
    assert_eq!(unsafe { qkd_block_len(b, &mut bits) }, QKD_OK);
    assert_eq!(last_error(), "");
    // SAFETY: live handle, freed once.
    unsafe { qkd_block_free(b) };
}

#[test]
fn last_error_reports_the_needed_capacity() {
    assert_eq!(
        // SAFETY: NULL out-parameter on purpose.
        unsafe { qkd_block_len(null(), null_mut()) },
        QKD_ERR_NULL_ARGUMENT
    );
    let full = last_error();
    assert_eq!(full, "argument `out_bits` is NULL");
    let mut len = 0usize;
    let mut small = [0 as std::ffi::c_char; 4];
    // SAFETY: 4-byte buffer.
    let r = unsafe { qkd_last_error_message(small.as_mut_ptr(), small.len(), &mut len) };
    assert_eq!(r, QKD_ERR_BUFFER_TOO_SHORT);
    assert_eq!(len, full.len() + 1);
    // Reading it did not change it.
    assert_eq!(last_error(), full);
}

#[test]
fn bytes_round_trip_with_tail_bits_masked() {
    // 12 bits of 0xA5, 0xFF: the upper nibble of the second byte is past the end.
    let b = block_from(&[0xA5, 0xFF], 12);
    assert_eq!(bytes_of(b), vec![0xA5, 0x0F]);
    let core = to_block(b);
    assert_eq!(core.len(), 12);
    assert!(core.get(0).unwrap() && !core.get(1).unwrap() && core.get(11).unwrap());
    let mut small = [0u8; 1];
    let mut len = 0usize;
    // SAFETY: 1-byte buffer.
    let r = unsafe { qkd_block_to_bytes(b, small.as_mut_ptr(), 1, &mut len) };
    assert_eq!((r, len, small[0]), (QKD_ERR_BUFFER_TOO_SHORT, 2, 0));
    // SAFETY: live handle, freed once.
    unsafe { qkd_block_free(b) };
}

#[test]
fn bad_arguments_give_codes() {
    let mut out = null_mut();
    // SAFETY: each call passes an invalid argument on purpose; pointers that are non-NULL are
    // valid.
    unsafe {
        assert_eq!(
            qkd_block_from_bytes(null(), 4, 8, &mut out),
            QKD_ERR_NULL_ARGUMENT
        );
        assert_eq!(
            qkd_block_from_bytes([0u8].as_ptr(), 1, 9, &mut out),
            QKD_ERR_LENGTH_MISMATCH
        );
        assert!(out.is_null());
        assert_eq!(
            qkd_block_from_bytes([0u8].as_ptr(), 1, 8, null_mut()),
            QKD_ERR_NULL_ARGUMENT
        );
        assert_eq!(
            qkd_block_from_seed(null(), 8, &mut out),
            QKD_ERR_NULL_ARGUMENT
        );
        assert_eq!(qkd_random_seed(null_mut()), QKD_ERR_NULL_ARGUMENT);
        let mut a = null_mut();
        let mut b = null_mut();
        assert_eq!(
            qkd_simulate(100, 0.7, 0, &1, &mut a, &mut b, null_mut()),
            QKD_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            qkd_simulate(100, 0.1, 7, &1, &mut a, &mut b, null_mut()),
            QKD_ERR_INVALID_ARGUMENT
        );
        assert!(a.is_null() && b.is_null());
        let x = block_from(&[1, 2], 16);
        let y = block_from(&[1], 8);
        let mut d = 0usize;
        assert_eq!(
            qkd_block_hamming_distance(x, y, &mut d),
            QKD_ERR_LENGTH_MISMATCH
        );
        assert!(last_error().contains("16 and 8"));
        let mut est = std::mem::zeroed();
        assert_eq!(
            qkd_qber_estimate_from_counts(10, 10, 0, 0.1, 0, &mut est),
            QKD_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            qkd_qber_upper_bound(100, 10, 1, 0.1, 2, &mut 0.0),
            QKD_ERR_INVALID_ARGUMENT
        );
        qkd_block_free(x);
        qkd_block_free(y);
        qkd_block_free(null_mut());
    }
}

#[test]
fn a_handle_of_another_kind_is_refused() {
    // Something laid out like a handle (a tag first) but of no kind this library made.
    #[repr(C)]
    struct Fake {
        tag: u64,
        payload: [u64; 4],
    }
    let mut fake = Fake {
        tag: u64::from_be_bytes(*b"qkdALICE"),
        payload: [0; 4],
    };
    let p = (&mut fake as *mut Fake).cast::<qkd_block>();
    let mut bits = 0usize;
    // SAFETY: `p` points to a live, aligned struct whose first field is a u64.
    assert_eq!(unsafe { qkd_block_len(p, &mut bits) }, QKD_ERR_WRONG_HANDLE);
    assert!(last_error().contains("not a qkd_block"));
    // Freeing it is refused too: nothing happens to the foreign memory.
    // SAFETY: as above.
    unsafe { qkd_block_free(p) };
    assert_eq!(fake.tag, u64::from_be_bytes(*b"qkdALICE"));
    assert_eq!(fake.payload, [0; 4]);
    // A misaligned pointer is refused before anything is read.
    let misaligned = (&mut fake.payload as *mut [u64; 4])
        .cast::<u8>()
        .wrapping_add(1);
    assert_eq!(
        // SAFETY: checked for alignment before any read.
        unsafe { qkd_block_len(misaligned.cast(), &mut bits) },
        QKD_ERR_WRONG_HANDLE
    );
}

#[test]
fn seed_expansion_is_the_chacha_word_stream() {
    let seed = [7u8; 32];
    let mut b = null_mut();
    assert_eq!(
        // SAFETY: 32-byte seed, valid out-pointer.
        unsafe { qkd_block_from_seed(seed.as_ptr(), 130, &mut b) },
        QKD_OK
    );
    let mut rng = SeededRandom::from_seed(seed);
    let words: Vec<u64> = (0..3).map(|_| rng.u64()).collect();
    assert_eq!(to_block(b), BitBlock::from_words(words, 130).unwrap());
    // SAFETY: freed once.
    unsafe { qkd_block_free(b) };
}

#[test]
fn sim_and_two_party_estimation_agree_with_core() {
    let (mut a, mut b) = (null_mut(), null_mut());
    // SAFETY: a repr(C) struct of integers, floats, bools and fieldless enums with a 0
    // variant: all zero bytes is a valid value.
    let mut rep: qkd_sim_report = unsafe { std::mem::zeroed() };
    assert_eq!(
        // SAFETY: valid out-pointers and seed.
        unsafe { qkd_simulate(20_000, 0.05, 0, &42, &mut a, &mut b, &mut rep) },
        QKD_OK
    );
    let reference =
        qkd_core::sim::simulate(20_000, 0.05, qkd_core::sim::ErrorModel::IidExact, 42).unwrap();
    assert_eq!(to_block(a), reference.alice);
    assert_eq!(to_block(b), reference.bob);
    assert_eq!((rep.bits, rep.errors), (20_000, 1_000));
    assert_eq!(rep.model, qkd_error_model::QKD_ERROR_MODEL_IID);

    let seed = [3u8; 32];
    let mut msg = vec![0u8; 8];
    let (mut len, mut a_rest, mut b_rest) = (0usize, null_mut(), null_mut());
    // SAFETY: valid handles, buffers and out-pointers throughout.
    unsafe {
        let r = qkd_sample_disclose(
            a,
            2_000,
            seed.as_ptr(),
            msg.as_mut_ptr(),
            msg.len(),
            &mut len,
            &mut a_rest,
        );
        assert_eq!(r, QKD_ERR_BUFFER_TOO_SHORT);
        assert!(a_rest.is_null());
        msg.resize(len, 0);
        let r = qkd_sample_disclose(
            a,
            2_000,
            seed.as_ptr(),
            msg.as_mut_ptr(),
            msg.len(),
            &mut len,
            &mut a_rest,
        );
        assert_eq!(r, QKD_OK);
        let mut est = std::mem::zeroed();
        let r = qkd_sample_compare(b, msg.as_ptr(), len, 1e-10, 0, &mut est, &mut b_rest);
        assert_eq!(r, QKD_OK);
        let (core_msg, core_a) =
            qkd_core::estimate::disclose_sample(&reference.alice, 2_000, seed).unwrap();
        assert_eq!(core_msg.to_bytes(), msg);
        let (core_est, core_b) = qkd_core::estimate::compare_sample(
            &reference.bob,
            &core_msg,
            1e-10,
            qkd_core::estimate::Bound::Hypergeometric,
        )
        .unwrap();
        assert_eq!(to_block(a_rest), core_a);
        assert_eq!(to_block(b_rest), core_b);
        assert_eq!(
            (est.n, est.k, est.errors, est.remaining_bits),
            (20_000, 2_000, core_est.errors, 18_000)
        );
        assert_eq!(est.qber_upper, core_est.qber_upper);
        assert!(est.qber_upper > est.observed_qber);
        let mut from_counts = std::mem::zeroed();
        assert_eq!(
            qkd_qber_estimate_from_counts(20_000, 2_000, est.errors, 1e-10, 0, &mut from_counts),
            QKD_OK
        );
        assert_eq!(from_counts.qber_upper, est.qber_upper);

        // Garbage and truncated messages are refused with codes, never a crash.
        let mut junk = null_mut();
        for bad in [&[0xFFu8; 3][..], &msg[..msg.len() - 1], &[]] {
            let r = qkd_sample_compare(b, bad.as_ptr(), bad.len(), 1e-10, 0, &mut est, &mut junk);
            assert_eq!(r, QKD_ERR_MALFORMED_MESSAGE, "{bad:?}");
            assert!(junk.is_null());
        }
        // A message for a key of another length.
        let r = qkd_sample_compare(b_rest, msg.as_ptr(), len, 1e-10, 0, &mut est, &mut junk);
        assert_eq!(r, QKD_ERR_LENGTH_MISMATCH);
        for h in [a, b, a_rest, b_rest] {
            qkd_block_free(h);
        }
    }
}

#[test]
fn secret_length_and_toeplitz_agree_with_core() {
    use qkd_core::amplify::{Bb84Tlgr2012, FiniteKeyInput, SecretLengthModel, toeplitz_reference};
    let input = qkd_finite_key_input {
        key_bits: 1_000_000,
        sample_bits: 100_000,
        qber: 0.02,
        leak_ec_bits: 160_000,
        confirm_tag_bits: 51,
        length_choices: 41,
        eps_sec: 1e-10,
        eps_cor: 1e-15,
        preparation_quality: 1.0,
    };
    // SAFETY: a repr(C) struct of integers, floats, bools and fieldless enums with a 0
    // variant: all zero bytes is a valid value.
    let mut out: qkd_secret_length = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers.
    assert_eq!(unsafe { qkd_secret_length_bb84(&input, &mut out) }, QKD_OK);
    let core = Bb84Tlgr2012::default()
        .secret_length(&FiniteKeyInput {
            key_bits: 1_000_000,
            sample_bits: 100_000,
            qber: 0.02,
            leak_ec_bits: 160_000,
            confirm_tag_bits: 51,
            length_choices: 41,
            eps_sec: 1e-10,
            eps_cor: 1e-15,
        })
        .unwrap();
    assert_eq!(out.bits, core.bits);
    assert_eq!(out.raw_bits, core.raw_bits);
    assert_eq!(out.qber_deviation, core.qber_deviation);
    assert_eq!(out.secrecy_cost_bits, core.secrecy_cost_bits);
    assert!(out.bits > 0);
    let bad = qkd_finite_key_input {
        preparation_quality: f64::NAN,
        ..input
    };
    assert_eq!(
        // SAFETY: valid pointers.
        unsafe { qkd_secret_length_bb84(&bad, &mut out) },
        QKD_ERR_INVALID_ARGUMENT
    );
    let bad = qkd_finite_key_input {
        length_choices: 0,
        ..input
    };
    assert_eq!(
        // SAFETY: valid pointers.
        unsafe { qkd_secret_length_bb84(&bad, &mut out) },
        QKD_ERR_INVALID_ARGUMENT
    );
    let bad = qkd_finite_key_input {
        eps_sec: 0.0,
        ..input
    };
    assert_eq!(
        // SAFETY: valid pointers.
        unsafe { qkd_secret_length_bb84(&bad, &mut out) },
        QKD_ERR_INVALID_ARGUMENT
    );
    assert!((qkd_binary_entropy(0.25) - 0.811_278_124_459_133).abs() < 1e-12);
    assert_eq!(qkd_toeplitz_seed_bits(1000, 300), 1299);

    // A 3-bit input hashed to 2 bits with seed s = s0..s3: T = [[s2 s1 s0], [s3 s2 s1]].
    // x = (1, 0, 1), s = (1, 1, 0, 1): y0 = s2 ^ s0 = 0 ^ 1 = 1, y1 = s3 ^ s1 = 1 ^ 1 = 0.
    let x = block_from(&[0b101], 3);
    let s = block_from(&[0b1011], 4);
    let mut y = null_mut();
    // SAFETY: live handles, valid out-pointer.
    assert_eq!(unsafe { qkd_toeplitz_hash(x, s, 2, &mut y) }, QKD_OK);
    assert_eq!(bytes_of(y), vec![0b01]);
    let mut z = null_mut();
    // SAFETY: as above; a too-short seed and an output not shorter than the input.
    unsafe {
        assert_eq!(qkd_toeplitz_hash(x, x, 2, &mut z), QKD_ERR_LENGTH_MISMATCH);
        assert_eq!(qkd_toeplitz_hash(x, s, 3, &mut z), QKD_ERR_INVALID_ARGUMENT);
        assert!(z.is_null());
        for h in [x, s, y] {
            qkd_block_free(h);
        }
    }

    // Larger: the default (NTT) method through the C API equals the row-by-row reference.
    let mut rng = SeededRandom::from_u64(5);
    let input: Vec<u8> = (0..1250).map(|_| rng.u64() as u8).collect();
    let seed_bytes: Vec<u8> = (0..2000).map(|_| rng.u64() as u8).collect();
    let (xi, si) = (block_from(&input, 10_000), block_from(&seed_bytes, 15_999));
    let mut yi = null_mut();
    // SAFETY: live handles.
    assert_eq!(unsafe { qkd_toeplitz_hash(xi, si, 6_000, &mut yi) }, QKD_OK);
    let want = toeplitz_reference(&to_block(xi), &to_block(si), 6_000).unwrap();
    assert_eq!(to_block(yi), want);
    // SAFETY: freed once each.
    unsafe {
        for h in [xi, si, yi] {
            qkd_block_free(h);
        }
    }
}

#[test]
fn entropy_verdicts() {
    // SAFETY: a repr(C) struct of integers, floats, bools and fieldless enums with a 0
    // variant: all zero bytes is a valid value.
    let mut rep: qkd_entropy_report = unsafe { std::mem::zeroed() };
    let zeros = vec![0u8; 4096];
    // SAFETY: valid buffers.
    unsafe {
        assert_eq!(
            qkd_entropy_assess(
                zeros.as_ptr(),
                zeros.len(),
                QKD_ENTROPY_DEFAULT_FALSE_ALARM,
                &mut rep
            ),
            QKD_OK
        );
        assert_eq!(rep.verdict, qkd_verdict::QKD_VERDICT_FAIL);
        assert!(!rep.shannon_passed && !rep.monobit_passed && !rep.repetition_passed);
        assert_eq!(rep.n_bytes, 4096);
        assert_eq!(
            qkd_entropy_assess(
                zeros.as_ptr(),
                10,
                QKD_ENTROPY_DEFAULT_FALSE_ALARM,
                &mut rep
            ),
            QKD_OK
        );
        assert_eq!(rep.verdict, qkd_verdict::QKD_VERDICT_INSUFFICIENT_DATA);
        assert_eq!(
            qkd_entropy_assess(zeros.as_ptr(), 100, 1.5, &mut rep),
            QKD_ERR_INVALID_ARGUMENT
        );
        let mut b = null_mut();
        assert_eq!(
            qkd_block_from_seed([9u8; 32].as_ptr(), 8 * 8192, &mut b),
            QKD_OK
        );
        assert_eq!(
            qkd_entropy_assess_block(b, QKD_ENTROPY_DEFAULT_FALSE_ALARM, &mut rep),
            QKD_OK
        );
        assert_eq!(rep.verdict, qkd_verdict::QKD_VERDICT_PASS);
        let core = qkd_core::entropy::assess(&to_block(b).to_bytes());
        assert_eq!(rep.shannon_bits_per_byte, core.shannon.bits_per_byte);
        assert_eq!(rep.runs_p_value, core.runs.result.p_value);
        qkd_block_free(b);
    }
}

#[test]
fn exported_constants_equal_the_core_values() {
    assert_eq!(
        QKD_ENTROPY_DEFAULT_FALSE_ALARM,
        qkd_core::entropy::DEFAULT_ALPHA
    );
    assert_eq!(QKD_ENTROPY_MIN_BYTES, qkd_core::entropy::MIN_ASSESS_BYTES);
    assert_eq!(
        QKD_TOEPLITZ_MAX_INPUT_BITS,
        qkd_core::amplify::MAX_INPUT_BITS
    );
    assert_eq!(
        QKD_BLOCK_ID_MAX_BYTES,
        qkd_core::session::wire::MAX_BLOCK_ID_BYTES
    );
}

#[test]
fn pipeline_on_a_block_pair() {
    let (mut a, mut b) = (null_mut(), null_mut());
    let mut cfg: qkd_pipeline_config = qkd_pipeline_config {
        sample_bits: 0,
        variant: null(),
        eps_pe: 0.0,
        eps_sec: 0.0,
        eps_cor: 0.0,
        max_qber: 0.0,
        frame_bits: 0,
    };
    // SAFETY: a repr(C) struct of integers, floats, bools, fieldless enums with a 0 variant and
    // a char array: all zero bytes is a valid value.
    let mut rep: qkd_block_report = unsafe { std::mem::zeroed() };
    let mut key = null_mut();
    // SAFETY: valid pointers throughout; handles freed once at the end.
    unsafe {
        assert_eq!(qkd_pipeline_config_default(&mut cfg), QKD_OK);
        assert_eq!(cfg.sample_bits, 16_384);
        cfg.sample_bits = 4_000;
        cfg.variant = c"option7".as_ptr();
        assert_eq!(
            qkd_simulate(100_000, 0.03, 0, &9, &mut a, &mut b, null_mut()),
            QKD_OK
        );
        assert_eq!(
            qkd_pipeline_process_block(a, b, &cfg, &mut rep, &mut key),
            QKD_OK
        );
        assert_eq!(rep.outcome, qkd_block_outcome::QKD_OUTCOME_KEY);
        assert_eq!(
            (rep.raw_bits, rep.sample_bits, rep.reconciled_bits),
            (100_000, 4_000, 96_000)
        );
        assert_eq!(rep.residual_errors, 0);
        assert_eq!(rep.errors_corrected + rep.sample_errors, 3_000);
        assert!(rep.confirmed && rep.entropy_checked);
        assert_eq!(rep.entropy, qkd_verdict::QKD_VERDICT_PASS);
        assert!(rep.final_bits > 0 && rep.final_bits == rep.secret_bits);
        assert_eq!(rep.outcome_reason[0], 0);
        assert_eq!(to_block(key).len() as u64, rep.final_bits);
        qkd_block_free(key);

        // A QBER above max_qber: discarded with a reason, no key, still QKD_OK.
        let (mut c, mut d) = (null_mut(), null_mut());
        assert_eq!(
            qkd_simulate(100_000, 0.2, 0, &9, &mut c, &mut d, null_mut()),
            QKD_OK
        );
        assert_eq!(
            qkd_pipeline_process_block(c, d, &cfg, &mut rep, &mut key),
            QKD_OK
        );
        assert_eq!(rep.outcome, qkd_block_outcome::QKD_OUTCOME_DISCARDED);
        assert!(key.is_null());
        let reason = CStr::from_ptr(rep.outcome_reason.as_ptr())
            .to_str()
            .unwrap();
        assert!(!reason.is_empty(), "{reason}");
        assert!(rep.efficiency.is_nan());

        // Bad settings and mismatched blocks are errors.
        cfg.variant = c"nope".as_ptr();
        assert_eq!(
            qkd_pipeline_process_block(a, b, &cfg, &mut rep, &mut key),
            QKD_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("unknown algorithm"));
        cfg.variant = null();
        assert_eq!(
            qkd_pipeline_process_block(a, d, &cfg, &mut rep, &mut key),
            QKD_OK
        );
        let short = block_from(&[0u8; 100], 800);
        assert_eq!(
            qkd_pipeline_process_block(a, short, &cfg, &mut rep, &mut key),
            QKD_ERR_LENGTH_MISMATCH
        );
        for h in [a, b, c, d, short, key] {
            qkd_block_free(h);
        }
    }
}

#[test]
fn reasons_are_truncated_on_a_character_boundary() {
    let long = "é".repeat(200);
    let arr = crate::pipeline::reason_array_for_tests(&long);
    let bytes: Vec<u8> = arr
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    assert_eq!(bytes.len(), 158); // 79 two-byte characters fit before the NUL
    assert!(std::str::from_utf8(&bytes).is_ok());
}

#[test]
fn a_hello_for_a_huge_key_is_refused_before_any_plan_is_built() {
    use qkd_core::reconcile::cascade::{Params, Variant};
    use qkd_core::reconcile::message::Message;
    // Without the length check first, Alice would draw shuffles for 2^31 bits per pass.
    let hello = Message::Hello(Params {
        variant: Variant::by_name("option8").unwrap(),
        n: 1 << 31,
        qber: 0.01,
        seed: [0; 32],
    })
    .encode()
    .unwrap();
    let key = block_from(&[0u8; 128], 1024);
    let mut alice = null_mut();
    // SAFETY: valid handles, buffers and out-pointers; each handle freed once.
    unsafe {
        assert_eq!(qkd_cascade_alice_new(key, &mut alice), QKD_OK);
        let r = qkd_cascade_alice_receive(alice, hello.as_ptr(), hello.len());
        assert_eq!(r, QKD_ERR_LENGTH_MISMATCH);
        assert!(last_error().contains("2147483648"), "{}", last_error());
        // Poisoned from now on.
        let r = qkd_cascade_alice_receive(alice, hello.as_ptr(), hello.len());
        assert_eq!(r, QKD_ERR_UNEXPECTED_MESSAGE);
        qkd_cascade_alice_free(alice);
        qkd_block_free(key);
    }
}

#[test]
fn two_party_cascade_through_the_c_api_equals_loopback() {
    let (mut a, mut b) = (null_mut(), null_mut());
    let seed = [8u8; 32];
    // SAFETY: valid handles, buffers and out-pointers; each handle freed once.
    unsafe {
        assert_eq!(
            qkd_simulate(20_000, 0.04, 0, &3, &mut a, &mut b, null_mut()),
            QKD_OK
        );
        let (mut alice, mut bob) = (null_mut(), null_mut());
        assert_eq!(qkd_cascade_alice_new(a, &mut alice), QKD_OK);
        assert_eq!(
            qkd_cascade_bob_new(b, c"option7".as_ptr(), 0.04, seed.as_ptr(), &mut bob),
            QKD_OK
        );
        let mut buf = vec![0u8; 1 << 16];
        let mut len = 0usize;
        let mut stats: qkd_cascade_stats = std::mem::zeroed();
        let mut done = false;
        let mut disclosed = 0u64;
        loop {
            assert_eq!(
                qkd_cascade_bob_take_message(bob, buf.as_mut_ptr(), buf.len(), &mut len),
                QKD_OK
            );
            assert!(len > 0);
            assert_eq!(qkd_cascade_alice_receive(alice, buf.as_ptr(), len), QKD_OK);
            assert_eq!(qkd_cascade_bob_stats(bob, &mut stats), QKD_OK);
            if stats.done {
                break;
            }
            assert_eq!(
                qkd_cascade_alice_take_message(alice, buf.as_mut_ptr(), buf.len(), &mut len),
                QKD_OK
            );
            assert_eq!(qkd_cascade_bob_receive(bob, buf.as_ptr(), len), QKD_OK);
        }
        assert_eq!(
            qkd_cascade_alice_is_done(alice, &mut done, &mut disclosed),
            QKD_OK
        );
        assert!(done);
        assert_eq!(disclosed, stats.disclosed_bits);
        let mut fixed = null_mut();
        assert_eq!(qkd_cascade_bob_key(bob, &mut fixed), QKD_OK);
        assert_eq!(to_block(fixed), to_block(a));

        let mut looped = null_mut();
        let mut rep: qkd_cascade_report = std::mem::zeroed();
        let r = qkd_cascade_loopback(
            a,
            b,
            c"option7".as_ptr(),
            0.04,
            seed.as_ptr(),
            &mut looped,
            &mut rep,
        );
        assert_eq!(r, QKD_OK);
        assert_eq!(to_block(looped), to_block(a));
        assert_eq!(rep.stats.disclosed_bits, stats.disclosed_bits);
        assert_eq!(rep.stats.round_trips, stats.round_trips);
        assert_eq!((rep.initial_errors, rep.residual_errors), (800, 0));
        assert_eq!(rep.stats.corrected, 800);
        for h in [a, b, fixed, looped] {
            qkd_block_free(h);
        }
        qkd_cascade_alice_free(alice);
        qkd_cascade_bob_free(bob);
    }
}

#[test]
fn store_open_append_allocate_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let path = std::ffi::CString::new(dir.path().to_str().unwrap()).unwrap();
    let mut store = null_mut();
    let mut other = null_mut();
    let mut key = null_mut();
    let material: Vec<u8> = (0..512u32).map(|i| (i * 7 + 3) as u8).collect();
    let block = block_from(&material, 4096);
    // SAFETY: valid handles, strings, buffers and out-pointers; each handle freed once.
    unsafe {
        assert_eq!(qkd_store_open(path.as_ptr(), &mut store), QKD_OK);
        // One handle per store at a time.
        assert_eq!(qkd_store_open(path.as_ptr(), &mut other), QKD_ERR_STORE);
        assert!(other.is_null());
        let mut info: qkd_store_block_info = std::mem::zeroed();
        let r = qkd_store_append(
            store,
            c"KME_B".as_ptr(),
            c"block-1".as_ptr(),
            block,
            0.02,
            &mut info,
        );
        assert_eq!(r, QKD_OK);
        assert_eq!((info.len_bits, info.usable_bits), (4096, 4096));
        assert_eq!(&info.digest, blake3_of(&material).as_slice());
        // The same block ID again is refused.
        let r = qkd_store_append(
            store,
            c"KME_B".as_ptr(),
            c"block-1".as_ptr(),
            block,
            f64::NAN,
            null_mut(),
        );
        assert_eq!(r, QKD_ERR_KEY_UNAVAILABLE);
        let mut avail = 0u64;
        assert_eq!(
            qkd_store_available_bits(store, c"KME_B".as_ptr(), &mut avail),
            QKD_OK
        );
        assert_eq!(avail, 4096);

        let slaves = [c"SAE_B".as_ptr()];
        let mut ids = [qkd_key_id { bytes: [0; 16] }; 2];
        let mut n = 0usize;
        let r = qkd_store_allocate(
            store,
            c"KME_B".as_ptr(),
            c"SAE_A".as_ptr(),
            slaves.as_ptr(),
            1,
            3,
            256,
            60,
            ids.as_mut_ptr(),
            2,
            &mut n,
        );
        assert_eq!((r, n), (QKD_ERR_BUFFER_TOO_SHORT, 3));
        assert_eq!(
            qkd_store_available_bits(store, c"KME_B".as_ptr(), &mut avail),
            QKD_OK
        );
        assert_eq!(avail, 4096, "nothing spent by a refused allocation");
        let r = qkd_store_allocate(
            store,
            c"KME_B".as_ptr(),
            c"SAE_A".as_ptr(),
            slaves.as_ptr(),
            1,
            2,
            256,
            60,
            ids.as_mut_ptr(),
            2,
            &mut n,
        );
        assert_eq!((r, n), (QKD_OK, 2));
        assert_ne!(ids[0], ids[1]);
        assert_eq!(ids[0].bytes[6] >> 4, 4, "UUID version 4");
        let r = qkd_store_allocate(
            store,
            c"KME_B".as_ptr(),
            c"SAE_A".as_ptr(),
            null(),
            0,
            100,
            256,
            60,
            ids.as_mut_ptr(),
            0,
            &mut n,
        );
        assert_eq!(r, QKD_ERR_BUFFER_TOO_SHORT);
        let mut many = vec![qkd_key_id { bytes: [0; 16] }; 100];
        let r = qkd_store_allocate(
            store,
            c"KME_B".as_ptr(),
            c"SAE_A".as_ptr(),
            null(),
            0,
            100,
            256,
            60,
            many.as_mut_ptr(),
            100,
            &mut n,
        );
        assert_eq!(r, QKD_ERR_INSUFFICIENT_KEY_MATERIAL);

        let mut buf = [0u8; 64];
        let mut len = 0usize;
        let r = qkd_store_fetch(
            store,
            &ids[0],
            c"SAE_A".as_ptr(),
            buf.as_mut_ptr(),
            16,
            &mut len,
        );
        assert_eq!((r, len), (QKD_ERR_BUFFER_TOO_SHORT, 32));
        let r = qkd_store_fetch(
            store,
            &ids[0],
            c"SAE_A".as_ptr(),
            buf.as_mut_ptr(),
            64,
            &mut len,
        );
        assert_eq!((r, len), (QKD_OK, 32));
        let first = buf[..32].to_vec();
        assert_eq!(
            qkd_store_fetch(
                store,
                &ids[1],
                c"SAE_A".as_ptr(),
                buf.as_mut_ptr(),
                64,
                &mut len
            ),
            QKD_OK
        );
        let second = buf[..32].to_vec();
        // The keys are two distinct 32-byte windows of the appended material.
        let windows: Vec<&[u8]> = material.chunks(32).collect();
        assert!(windows.contains(&first.as_slice()) && windows.contains(&second.as_slice()));
        assert_ne!(first, second);
        // Single use per recipient; the slave is not a recipient at this store.
        let r = qkd_store_fetch(
            store,
            &ids[0],
            c"SAE_A".as_ptr(),
            buf.as_mut_ptr(),
            64,
            &mut len,
        );
        assert_eq!(r, QKD_ERR_KEY_UNAVAILABLE);
        let unknown = qkd_key_id { bytes: [0x42; 16] };
        let r = qkd_store_fetch(
            store,
            &unknown,
            c"SAE_A".as_ptr(),
            buf.as_mut_ptr(),
            64,
            &mut len,
        );
        assert_eq!(r, QKD_ERR_NOT_FOUND);
        // Wrong handle kinds.
        let r = qkd_store_available_bits(block.cast(), c"KME_B".as_ptr(), &mut avail);
        assert_eq!(r, QKD_ERR_WRONG_HANDLE);
        assert_eq!(qkd_block_len(store.cast(), &mut len), QKD_ERR_WRONG_HANDLE);

        // Key IDs as text.
        let mut text = [0 as std::ffi::c_char; QKD_KEY_ID_STR_LEN];
        assert_eq!(
            qkd_key_id_to_string(&ids[0], text.as_mut_ptr(), text.len()),
            QKD_OK
        );
        let s = CStr::from_ptr(text.as_ptr()).to_str().unwrap().to_owned();
        assert_eq!(s, uuid::Uuid::from_bytes(ids[0].bytes).to_string());
        let mut back = qkd_key_id { bytes: [0; 16] };
        assert_eq!(qkd_key_id_parse(text.as_ptr(), &mut back), QKD_OK);
        assert_eq!(back, ids[0]);
        assert_eq!(
            qkd_key_id_parse(c"not-a-uuid".as_ptr(), &mut back),
            QKD_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            qkd_key_id_to_string(&ids[0], text.as_mut_ptr(), 36),
            QKD_ERR_BUFFER_TOO_SHORT
        );

        qkd_store_free(store);
        // Closed: it opens again, and the fetched key stays fetched.
        assert_eq!(qkd_store_open(path.as_ptr(), &mut store), QKD_OK);
        let r = qkd_store_fetch(
            store,
            &ids[1],
            c"SAE_A".as_ptr(),
            buf.as_mut_ptr(),
            64,
            &mut len,
        );
        assert_eq!(r, QKD_ERR_KEY_UNAVAILABLE);
        qkd_store_free(store);
        qkd_block_free(block);
        qkd_block_free(key);
        key = null_mut();
    }
    assert!(key.is_null());
}

/// A NULL `buf` for a non-empty key is refused before the delivery is committed: the key is
/// still there for the next call with a real buffer.
#[test]
fn store_fetch_with_null_buf_spends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = std::ffi::CString::new(dir.path().to_str().unwrap()).unwrap();
    let mut store = null_mut();
    let material: Vec<u8> = (0..64u32).map(|i| (i * 5 + 1) as u8).collect();
    let block = block_from(&material, 512);
    // SAFETY: valid handles, strings, buffers and out-pointers; each handle freed once.
    unsafe {
        assert_eq!(qkd_store_open(path.as_ptr(), &mut store), QKD_OK);
        let r = qkd_store_append(
            store,
            c"KME_B".as_ptr(),
            c"b".as_ptr(),
            block,
            f64::NAN,
            null_mut(),
        );
        assert_eq!(r, QKD_OK);
        let mut id = qkd_key_id { bytes: [0; 16] };
        let mut n = 0usize;
        let r = qkd_store_allocate(
            store,
            c"KME_B".as_ptr(),
            c"SAE_A".as_ptr(),
            null(),
            0,
            1,
            256,
            60,
            &mut id,
            1,
            &mut n,
        );
        assert_eq!((r, n), (QKD_OK, 1));
        let mut len = 0usize;
        let r = qkd_store_fetch(store, &id, c"SAE_A".as_ptr(), null_mut(), 64, &mut len);
        assert_eq!(r, QKD_ERR_NULL_ARGUMENT);
        let mut buf = [0u8; 32];
        let r = qkd_store_fetch(
            store,
            &id,
            c"SAE_A".as_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
            &mut len,
        );
        assert_eq!((r, len), (QKD_OK, 32));
        assert_eq!(&buf[..], &material[..32]);
        qkd_store_free(store);
        qkd_block_free(block);
    }
}

/// An encrypted store opens only with its key-encryption key file.
#[test]
fn store_open_encrypted_needs_its_kek() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store_dir = std::ffi::CString::new(dir.path().join("s").to_str().unwrap()).unwrap();
    let kek_path = dir.path().join("kek");
    std::fs::write(&kek_path, "ab".repeat(32)).unwrap();
    std::fs::set_permissions(&kek_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let kek = std::ffi::CString::new(kek_path.to_str().unwrap()).unwrap();
    let other_path = dir.path().join("other");
    std::fs::write(&other_path, "cd".repeat(32)).unwrap();
    std::fs::set_permissions(&other_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let other = std::ffi::CString::new(other_path.to_str().unwrap()).unwrap();
    let mut store = null_mut();
    // SAFETY: valid strings and out-pointers; each handle freed once.
    unsafe {
        let r = qkd_store_open_encrypted(store_dir.as_ptr(), kek.as_ptr(), &mut store);
        assert_eq!(r, QKD_OK);
        qkd_store_free(store);
        assert_eq!(
            qkd_store_open(store_dir.as_ptr(), &mut store),
            QKD_ERR_STORE
        );
        assert!(store.is_null());
        let r = qkd_store_open_encrypted(store_dir.as_ptr(), other.as_ptr(), &mut store);
        assert_eq!(r, QKD_ERR_STORE);
        let r = qkd_store_open_encrypted(store_dir.as_ptr(), null(), &mut store);
        assert_eq!(r, QKD_ERR_NULL_ARGUMENT);
        let r = qkd_store_open_encrypted(store_dir.as_ptr(), kek.as_ptr(), &mut store);
        assert_eq!(r, QKD_OK);
        qkd_store_free(store);
    }
}

fn blake3_of(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

/// One bit of one Cascade message flipped in transit: every run ends (an error code, or a
/// finished run whose key confirmation tells the truth), never a hang. Before the consistency
/// check in `Bob::resolve`, some of these runs made Bob flip bits back and forth forever.
#[test]
fn cascade_messages_corrupted_in_transit_end_with_a_code() {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let (mut a, mut b) = (null_mut(), null_mut());
    let mut buf = vec![0u8; 1 << 16];
    let (mut refused, mut finished) = (0, 0);
    // SAFETY: valid handles, buffers and out-pointers; each handle freed once.
    unsafe {
        assert_eq!(
            qkd_simulate(4096, 0.04, 0, &21, &mut a, &mut b, null_mut()),
            QKD_OK
        );
        for run in 0..40u8 {
            let (mut alice, mut bob) = (null_mut(), null_mut());
            let mut seed = [0u8; 32];
            seed[0] = run;
            assert_eq!(qkd_cascade_alice_new(a, &mut alice), QKD_OK);
            assert_eq!(
                qkd_cascade_bob_new(b, c"option7".as_ptr(), 0.04, seed.as_ptr(), &mut bob),
                QKD_OK
            );
            let flip_at = next() % 12;
            let (mut step, mut len) = (0u64, 0usize);
            let mut stats: qkd_cascade_stats = std::mem::zeroed();
            let mut corrupt = |buf: &mut [u8], len: usize, step: &mut u64| {
                if *step == flip_at && len > 0 {
                    buf[(next() % len as u64) as usize] ^= 1 << (next() % 8);
                }
                *step += 1;
            };
            let ok = loop {
                assert_eq!(
                    qkd_cascade_bob_take_message(bob, buf.as_mut_ptr(), buf.len(), &mut len),
                    QKD_OK
                );
                corrupt(&mut buf, len, &mut step);
                if qkd_cascade_alice_receive(alice, buf.as_ptr(), len) != QKD_OK {
                    break false;
                }
                assert_eq!(qkd_cascade_bob_stats(bob, &mut stats), QKD_OK);
                if stats.done {
                    break true;
                }
                assert_eq!(
                    qkd_cascade_alice_take_message(alice, buf.as_mut_ptr(), buf.len(), &mut len),
                    QKD_OK
                );
                corrupt(&mut buf, len, &mut step);
                let r = qkd_cascade_bob_receive(bob, buf.as_ptr(), len);
                if r != QKD_OK {
                    assert!(
                        matches!(
                            r,
                            QKD_ERR_MALFORMED_MESSAGE
                                | QKD_ERR_UNEXPECTED_MESSAGE
                                | QKD_ERR_LENGTH_MISMATCH
                        ),
                        "{r:?}: {}",
                        last_error()
                    );
                    break false;
                }
            };
            if ok {
                finished += 1
            } else {
                refused += 1
            }
            qkd_cascade_alice_free(alice);
            qkd_cascade_bob_free(bob);
        }
        qkd_block_free(a);
        qkd_block_free(b);
    }
    assert_eq!(refused + finished, 40);
    assert!(
        refused > 0 && finished > 0,
        "{refused} refused, {finished} finished"
    );
}

// ---------------------------------------------------------------------------------------------
// Sessions (qkd_link, qkd_session, qkd_buffer)
// ---------------------------------------------------------------------------------------------

/// Settings of the session tests: a 2^12-bit sample and 2^14-bit frames.
fn session_config() -> qkd_pipeline_config {
    // SAFETY: a repr(C) struct of integers, floats and a pointer: all zero is valid, and
    // qkd_pipeline_config_default overwrites it.
    let mut cfg: qkd_pipeline_config = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { qkd_pipeline_config_default(&mut cfg) }, QKD_OK);
    cfg.sample_bits = 1 << 12;
    cfg.frame_bits = 1 << 14;
    cfg
}

fn new_link(cfg: Option<&qkd_pipeline_config>, psk: &[u8]) -> *mut qkd_link {
    let mut link = null_mut();
    let cfg = cfg.map_or(null(), |c| c as *const _);
    assert_eq!(
        // SAFETY: valid config, slice and out-pointer.
        unsafe { qkd_link_new(cfg, psk.as_ptr(), psk.len(), &mut link) },
        QKD_OK,
        "{}",
        last_error()
    );
    assert!(!link.is_null());
    link
}

/// Alice's and Bob's sessions of block `id` over a simulated raw pair.
fn new_sessions(
    alice_link: *const qkd_link,
    bob_link: *const qkd_link,
    id: &std::ffi::CStr,
    bits: usize,
    qber: f64,
    seed: u64,
) -> (*mut qkd_session, *mut qkd_session) {
    let (mut a, mut b, mut alice, mut bob) = (null_mut(), null_mut(), null_mut(), null_mut());
    // SAFETY: live handles and valid out-pointers; the raw blocks are copied by the sessions
    // and freed once here.
    unsafe {
        assert_eq!(
            qkd_simulate(bits, qber, 0, &seed, &mut a, &mut b, null_mut()),
            QKD_OK
        );
        assert_eq!(
            qkd_session_alice_new(alice_link, id.as_ptr(), a, &mut alice),
            QKD_OK,
            "{}",
            last_error()
        );
        assert_eq!(
            qkd_session_bob_new(bob_link, id.as_ptr(), b, &mut bob),
            QKD_OK,
            "{}",
            last_error()
        );
        qkd_block_free(a);
        qkd_block_free(b);
    }
    (alice, bob)
}

/// Dequeues one message of `s` through a `qkd_buffer`.
fn poll(s: *mut qkd_session) -> Option<Vec<u8>> {
    let mut buf = null_mut();
    // SAFETY: live session, valid out-pointer.
    assert_eq!(unsafe { qkd_session_poll_transmit(s, &mut buf) }, QKD_OK);
    if buf.is_null() {
        return None;
    }
    let (mut data, mut len) = (null(), 0usize);
    // SAFETY: live buffer, valid out-pointers.
    assert_eq!(unsafe { qkd_buffer_data(buf, &mut data, &mut len) }, QKD_OK);
    assert!(len > 0 && !data.is_null());
    // SAFETY: qkd_buffer_data gave `len` readable bytes, valid until the buffer is freed.
    let m = unsafe { std::slice::from_raw_parts(data, len) }.to_vec();
    // SAFETY: live buffer, freed once.
    unsafe { qkd_buffer_free(buf) };
    Some(m)
}

fn finished(s: *const qkd_session) -> bool {
    let mut done = false;
    // SAFETY: live session, valid out-pointer.
    assert_eq!(unsafe { qkd_session_is_finished(s, &mut done) }, QKD_OK);
    done
}

/// What one side's `qkd_session_handle` returned, in order.
#[derive(Debug, Default)]
struct Handled {
    alice: Vec<qkd_result>,
    bob: Vec<qkd_result>,
}

/// Moves messages between the two sessions until neither has anything to send; `tap(to_bob,
/// index, message)` may alter each message (`index` counts that direction's messages).
fn drive(
    alice: *mut qkd_session,
    bob: *mut qkd_session,
    mut tap: impl FnMut(bool, usize, &mut Vec<u8>),
) -> Handled {
    let mut handled = Handled::default();
    let (mut to_bob, mut to_alice) = (0, 0);
    loop {
        let mut moved = false;
        while let Some(mut m) = poll(alice) {
            moved = true;
            tap(true, to_bob, &mut m);
            to_bob += 1;
            // SAFETY: live session, `m` is a valid slice.
            handled
                .bob
                .push(unsafe { qkd_session_handle(bob, m.as_ptr(), m.len()) });
        }
        while let Some(mut m) = poll(bob) {
            moved = true;
            tap(false, to_alice, &mut m);
            to_alice += 1;
            // SAFETY: as above.
            handled
                .alice
                .push(unsafe { qkd_session_handle(alice, m.as_ptr(), m.len()) });
        }
        if !moved {
            return handled;
        }
    }
}

/// A session's outcome: the code, the detail, the report (when QKD_OK) and the final key.
fn outcome(
    s: *mut qkd_session,
) -> (
    qkd_result,
    String,
    Option<qkd_block_report>,
    Option<BitBlock>,
) {
    // SAFETY: all-zero is a valid qkd_block_report (see pipeline_on_a_block_pair).
    let mut rep: qkd_block_report = unsafe { std::mem::zeroed() };
    let mut key = null_mut();
    // SAFETY: live session, valid out-pointers.
    let r = unsafe { qkd_session_outcome(s, &mut rep, &mut key) };
    let detail = last_error();
    let k = (!key.is_null()).then(|| to_block(key));
    // SAFETY: NULL or a live block, freed once.
    unsafe { qkd_block_free(key) };
    (r, detail, (r == QKD_OK).then_some(rep), k)
}

fn available(link: *const qkd_link) -> u64 {
    let mut bits = 0u64;
    assert_eq!(
        // SAFETY: live link, valid out-pointer.
        unsafe { qkd_link_auth_available_bits(link, &mut bits) },
        QKD_OK
    );
    bits
}

#[test]
fn sessions_through_the_c_api_give_identical_keys_and_spend_pads() {
    let cfg = session_config();
    let psk = [0x5Au8; 128];
    let (la, lb) = (new_link(Some(&cfg), &psk), new_link(Some(&cfg), &psk));
    assert_eq!((available(la), available(lb)), (1024, 1024));
    for (i, id) in [c"blk-1", c"blk-2"].into_iter().enumerate() {
        let (alice, bob) = new_sessions(la, lb, id, 1 << 17, 0.02, 40 + i as u64);
        assert!(!finished(alice) && !finished(bob));
        // Bob waits for the hello; Alice has queued it with the sample.
        assert!(poll(bob).is_none());
        let handled = drive(alice, bob, |_, _, _| {});
        assert!(
            handled
                .alice
                .iter()
                .chain(&handled.bob)
                .all(|r| *r == QKD_OK),
            "{handled:?}"
        );
        assert!(finished(alice) && finished(bob));
        let (ra, _, rep_a, key_a) = outcome(alice);
        let (rb, _, rep_b, key_b) = outcome(bob);
        assert_eq!((ra, rb), (QKD_OK, QKD_OK));
        let (rep_a, rep_b) = (rep_a.unwrap(), rep_b.unwrap());
        let (key_a, key_b) = (key_a.unwrap(), key_b.unwrap());
        assert_eq!(key_a, key_b);
        for r in [&rep_a, &rep_b] {
            assert_eq!(r.outcome, qkd_block_outcome::QKD_OUTCOME_KEY);
            assert_eq!((r.raw_bits, r.sample_bits), (1 << 17, 1 << 12));
            assert_eq!(r.final_bits, key_a.len() as u64);
            assert!(
                r.confirmed && r.final_bits > 20_000 && r.residual_errors == 0,
                "{r:?}"
            );
            // The first block draws the hash key (128 bits) besides its two pads.
            assert_eq!(r.auth_bits, if i == 0 { 384 } else { 256 });
        }
        assert_eq!(
            (
                rep_a.leak_alice_bits,
                rep_a.leak_bob_bits,
                rep_a.round_trips
            ),
            (
                rep_b.leak_alice_bits,
                rep_b.leak_bob_bits,
                rep_b.round_trips
            )
        );
        // The outcome is had once; the session stays finished.
        let (again, detail, _, _) = outcome(alice);
        assert_eq!(again, QKD_ERR_KEY_UNAVAILABLE);
        assert_eq!(
            detail,
            format!(
                "the outcome of Alice's session of block {:?} was taken already",
                id.to_str().unwrap()
            )
        );
        assert!(finished(alice));
        // SAFETY: live handles, freed once.
        unsafe {
            qkd_session_free(alice);
            qkd_session_free(bob);
        }
    }
    assert_eq!((available(la), available(lb)), (1024 - 640, 1024 - 640));
    // Refilling both pools alike adds to both.
    let more = [7u8; 32];
    for l in [la, lb] {
        assert_eq!(
            // SAFETY: live link, valid slice.
            unsafe { qkd_link_auth_refill(l, more.as_ptr(), more.len()) },
            QKD_OK
        );
        assert_eq!(available(l), 1024 - 640 + 256);
    }
    // SAFETY: live handles, freed once.
    unsafe {
        qkd_link_free(la);
        qkd_link_free(lb);
    }
}

#[test]
fn a_flipped_bit_in_a_session_message_leaves_no_key_on_either_side() {
    let cfg = session_config();
    let psk = [0xA5u8; 256];
    // (direction, message index): Alice's hello, her sample, a Cascade answer; Bob's estimate
    // and his first Cascade batch.
    for (to_bob, index) in [(true, 0), (true, 1), (true, 2), (false, 0), (false, 1)] {
        for pick in 0..3u64 {
            let (la, lb) = (new_link(Some(&cfg), &psk), new_link(Some(&cfg), &psk));
            let (alice, bob) = new_sessions(la, lb, c"flip", 1 << 16, 0.02, 7);
            let mut flipped = false;
            let handled = drive(alice, bob, |dir, i, m| {
                if dir == to_bob && i == index {
                    let at = (pick * 7919 + 13) as usize % m.len();
                    m[at] ^= 1 << (pick % 8);
                    flipped = true;
                }
            });
            assert!(flipped);
            // The receiving side refused the message (or one after it) with a code.
            let receiver = if to_bob { &handled.bob } else { &handled.alice };
            assert!(receiver.iter().any(|r| *r != QKD_OK), "{handled:?}");
            for (side, s) in [("Alice", alice), ("Bob", bob)] {
                assert!(
                    finished(s),
                    "{side} did not finish ({to_bob}, {index}, {pick})"
                );
                let (r, detail, rep, key) = outcome(s);
                assert!(
                    key.is_none(),
                    "{side} kept a key ({to_bob}, {index}, {pick})"
                );
                match rep {
                    Some(rep) => assert_ne!(rep.outcome, qkd_block_outcome::QKD_OUTCOME_KEY),
                    None => assert!(r != QKD_OK && !detail.is_empty(), "{r:?}"),
                }
            }
            // SAFETY: live handles, freed once.
            unsafe {
                qkd_session_free(alice);
                qkd_session_free(bob);
                qkd_link_free(la);
                qkd_link_free(lb);
            }
        }
    }
}

#[test]
fn different_secrets_fail_authentication_and_the_peer_is_told() {
    let cfg = session_config();
    let (la, lb) = (
        new_link(Some(&cfg), &[1u8; 64]),
        new_link(Some(&cfg), &[2u8; 64]),
    );
    let (alice, bob) = new_sessions(la, lb, c"auth", 1 << 16, 0.02, 8);
    let handled = drive(alice, bob, |_, _, _| {});
    assert_eq!(handled.bob.last(), Some(&QKD_ERR_AUTHENTICATION));
    assert_eq!(handled.alice.last(), Some(&QKD_ERR_PEER_ABORTED));
    let (rb, bob_detail, _, bob_key) = outcome(bob);
    assert_eq!(rb, QKD_ERR_AUTHENTICATION);
    assert_eq!(
        bob_detail,
        "authentication: transcript tag mismatch: a message was altered, dropped, replayed or forged"
    );
    let (ra, alice_detail, _, alice_key) = outcome(alice);
    assert_eq!(ra, QKD_ERR_PEER_ABORTED);
    assert!(
        alice_detail.starts_with("the peer aborted the block: authentication"),
        "{alice_detail}"
    );
    assert!(alice_key.is_none() && bob_key.is_none());
    // SAFETY: live handles, freed once.
    unsafe {
        qkd_session_free(alice);
        qkd_session_free(bob);
        qkd_link_free(la);
        qkd_link_free(lb);
    }
}

#[test]
fn session_arguments_and_states_give_precise_errors() {
    let cfg = session_config();
    let psk = [3u8; 64];
    let la = new_link(None, &psk);
    let lb = new_link(Some(&cfg), &psk);
    let raw = block_from(&[0u8; 1 << 13], 1 << 16);
    let mut link = null_mut();
    let mut s = null_mut();
    let mut bits = 0u64;
    let mut done = false;
    let mut buf = null_mut();
    // SAFETY: all-zero is a valid qkd_block_report.
    let mut rep: qkd_block_report = unsafe { std::mem::zeroed() };
    let mut key = null_mut();
    let expect = |r: qkd_result, code: qkd_result, detail: &str| {
        assert_eq!(r, code, "{}", last_error());
        assert_eq!(last_error(), detail);
    };
    // SAFETY: NULL and wrong-kind pointers on purpose (the library checks them); every other
    // pointer is valid; handles freed once at the end.
    unsafe {
        // Links.
        expect(
            qkd_link_new(null(), psk.as_ptr(), psk.len(), null_mut()),
            QKD_ERR_NULL_ARGUMENT,
            "argument `out` is NULL",
        );
        expect(
            qkd_link_new(null(), null(), 16, &mut link),
            QKD_ERR_NULL_ARGUMENT,
            "argument `psk` is NULL",
        );
        assert!(link.is_null());
        let mut bad = cfg;
        bad.sample_bits = 0;
        expect(
            qkd_link_new(&bad, psk.as_ptr(), psk.len(), &mut link),
            QKD_ERR_INVALID_ARGUMENT,
            "invalid session configuration: invalid pipeline configuration: sample bits must be \
             positive",
        );
        bad = cfg;
        bad.frame_bits = 100;
        assert_eq!(
            qkd_link_new(&bad, psk.as_ptr(), psk.len(), &mut link),
            QKD_ERR_INVALID_ARGUMENT
        );
        assert!(
            last_error().contains("frame bits (100)"),
            "{}",
            last_error()
        );
        expect(
            qkd_link_auth_available_bits(null(), &mut bits),
            QKD_ERR_NULL_ARGUMENT,
            "argument `link` is NULL",
        );
        expect(
            qkd_link_auth_available_bits(la, null_mut()),
            QKD_ERR_NULL_ARGUMENT,
            "argument `out` is NULL",
        );
        expect(
            qkd_link_auth_available_bits(raw.cast(), &mut bits),
            QKD_ERR_WRONG_HANDLE,
            "argument `link` is not a qkd_link: it is qkd_block",
        );
        expect(
            qkd_link_auth_refill(la, null(), 1),
            QKD_ERR_NULL_ARGUMENT,
            "argument `key` is NULL",
        );

        // Sessions that cannot start.
        expect(
            qkd_session_alice_new(la, c"b".as_ptr(), raw, null_mut()),
            QKD_ERR_NULL_ARGUMENT,
            "argument `out` is NULL",
        );
        expect(
            qkd_session_alice_new(null(), c"b".as_ptr(), raw, &mut s),
            QKD_ERR_NULL_ARGUMENT,
            "argument `link` is NULL",
        );
        expect(
            qkd_session_bob_new(lb, null(), raw, &mut s),
            QKD_ERR_NULL_ARGUMENT,
            "argument `block_id` is NULL",
        );
        expect(
            qkd_session_bob_new(lb, c"b".as_ptr(), null(), &mut s),
            QKD_ERR_NULL_ARGUMENT,
            "argument `raw` is NULL",
        );
        expect(
            qkd_session_bob_new(raw.cast(), c"b".as_ptr(), raw, &mut s),
            QKD_ERR_WRONG_HANDLE,
            "argument `link` is not a qkd_link: it is qkd_block",
        );
        expect(
            qkd_session_alice_new(lb, c"".as_ptr(), raw, &mut s),
            QKD_ERR_INVALID_ARGUMENT,
            "invalid session configuration: block ID \"\": expected 1 to 128 bytes without control characters",
        );
        expect(
            qkd_session_alice_new(lb, c"b\x01".as_ptr(), raw, &mut s),
            QKD_ERR_INVALID_ARGUMENT,
            "invalid session configuration: block ID \"b\\u{1}\": expected 1 to 128 bytes without control \
             characters",
        );
        expect(
            qkd_session_alice_new(lb, c"\xff".as_ptr(), raw, &mut s),
            QKD_ERR_INVALID_ARGUMENT,
            "block_id is not UTF-8",
        );
        // The default sample (2^14 bits) needs more than 2^15 raw bits.
        let short = block_from(&[0u8; 4096], 1 << 15);
        expect(
            qkd_session_bob_new(la, c"b".as_ptr(), short, &mut s),
            QKD_ERR_INVALID_ARGUMENT,
            "invalid session configuration: block b has 32768 bits: expected more than twice \
             the 16384-bit sample and fewer than 2^32",
        );
        assert!(s.is_null());
        // A pool of 64 bytes serves one block (384 bits), not two.
        let empty = new_link(Some(&cfg), &[9u8; 48]);
        let mut first = null_mut();
        assert_eq!(
            qkd_session_alice_new(empty, c"p1".as_ptr(), raw, &mut first),
            QKD_OK
        );
        expect(
            qkd_session_alice_new(empty, c"p2".as_ptr(), raw, &mut s),
            QKD_ERR_INSUFFICIENT_KEY_MATERIAL,
            "authentication: authentication key pool exhausted: 256 bits needed, 0 available",
        );
        qkd_session_free(first);
        qkd_link_free(empty);

        // A running session.
        let (sa, sb) = (
            new_link(Some(&cfg), &[4u8; 256]),
            new_link(Some(&cfg), &[4u8; 256]),
        );
        let (alice, bob) = new_sessions(sa, sb, c"s-1", 1 << 16, 0.02, 3);
        expect(
            qkd_session_handle(null_mut(), null(), 0),
            QKD_ERR_NULL_ARGUMENT,
            "argument `session` is NULL",
        );
        expect(
            qkd_session_handle(bob, null(), 3),
            QKD_ERR_NULL_ARGUMENT,
            "argument `msg` is NULL",
        );
        expect(
            qkd_session_handle(raw.cast(), null(), 0),
            QKD_ERR_WRONG_HANDLE,
            "argument `session` is not a qkd_session: it is qkd_block",
        );
        expect(
            qkd_session_poll_transmit(alice, null_mut()),
            QKD_ERR_NULL_ARGUMENT,
            "argument `out` is NULL",
        );
        expect(
            qkd_session_poll_transmit(la.cast(), &mut buf),
            QKD_ERR_WRONG_HANDLE,
            "argument `session` is not a qkd_session: it is qkd_link",
        );
        expect(
            qkd_session_is_finished(null(), &mut done),
            QKD_ERR_NULL_ARGUMENT,
            "argument `session` is NULL",
        );
        expect(
            qkd_session_is_finished(alice, null_mut()),
            QKD_ERR_NULL_ARGUMENT,
            "argument `out` is NULL",
        );
        expect(
            qkd_session_outcome(alice, null_mut(), &mut key),
            QKD_ERR_NULL_ARGUMENT,
            "argument `report_out` is NULL",
        );
        expect(
            qkd_session_outcome(alice, &mut rep, null_mut()),
            QKD_ERR_NULL_ARGUMENT,
            "argument `final_key_out` is NULL",
        );
        expect(
            qkd_session_outcome(alice, &mut rep, &mut key),
            QKD_ERR_IN_PROGRESS,
            "Alice's session of block \"s-1\" has not ended yet; keep moving its messages",
        );
        assert!(key.is_null());
        // The block ID of a message, for routing.
        let hello = poll(alice).unwrap();
        let mut id = [0 as std::ffi::c_char; QKD_BLOCK_ID_MAX_BYTES + 1];
        let mut len = 0usize;
        assert_eq!(
            qkd_session_message_block_id(hello.as_ptr(), hello.len(), id.as_mut_ptr(), 2, &mut len),
            QKD_ERR_BUFFER_TOO_SHORT
        );
        assert_eq!(len, 4);
        assert_eq!(
            qkd_session_message_block_id(
                hello.as_ptr(),
                hello.len(),
                id.as_mut_ptr(),
                id.len(),
                &mut len
            ),
            QKD_OK
        );
        assert_eq!(CStr::from_ptr(id.as_ptr()), c"s-1");
        assert_eq!(len, 3);
        expect(
            qkd_session_message_block_id([9u8].as_ptr(), 1, id.as_mut_ptr(), id.len(), &mut len),
            QKD_ERR_MALFORMED_MESSAGE,
            "malformed message: wire version 9; expected 1",
        );
        // Garbage ends Bob's session; its outcome is that error, and he tells Alice.
        expect(
            qkd_session_handle(bob, [1u8, 2, 3].as_ptr(), 3),
            QKD_ERR_MALFORMED_MESSAGE,
            "malformed message: undecodable message: Hit the end of buffer, expected more data",
        );
        assert!(finished(bob));
        expect(
            qkd_session_handle(bob, hello.as_ptr(), hello.len()),
            QKD_ERR_UNEXPECTED_MESSAGE,
            "the session of this block has ended",
        );
        let abort = poll(bob).unwrap();
        assert!(poll(bob).is_none());
        assert_eq!(
            qkd_session_handle(alice, abort.as_ptr(), abort.len()),
            QKD_ERR_PEER_ABORTED
        );
        assert!(last_error().starts_with("the peer aborted the block: malformed message"));
        let (r, detail, rep_b, key_b) = outcome(bob);
        assert_eq!(r, QKD_ERR_MALFORMED_MESSAGE);
        assert!(detail.starts_with("malformed message"), "{detail}");
        assert!(rep_b.is_none() && key_b.is_none());
        let (r, _, _, _) = outcome(alice);
        assert_eq!(r, QKD_ERR_PEER_ABORTED);
        // After the outcome was taken, messages are still refused.
        expect(
            qkd_session_handle(alice, abort.as_ptr(), abort.len()),
            QKD_ERR_UNEXPECTED_MESSAGE,
            "the session of this block has ended",
        );
        expect(
            qkd_buffer_data(null(), &mut null(), &mut len),
            QKD_ERR_NULL_ARGUMENT,
            "argument `buffer` is NULL",
        );
        expect(
            qkd_buffer_data(raw.cast(), &mut null(), &mut len),
            QKD_ERR_WRONG_HANDLE,
            "argument `buffer` is not a qkd_buffer: it is qkd_block",
        );
        // The wrong _free does nothing; NULL is fine.
        qkd_session_free(la.cast());
        qkd_link_free(alice.cast());
        qkd_buffer_free(raw.cast());
        qkd_session_free(null_mut());
        qkd_link_free(null_mut());
        qkd_buffer_free(null_mut());
        assert!(finished(alice) && available(la) == 512);

        // A session of another block refuses the hello, naming both IDs.
        let (alice, unused_bob) = new_sessions(sa, sb, c"b-1", 1 << 16, 0.02, 4);
        let (unused_alice, bob) = new_sessions(sa, sb, c"b-2", 1 << 16, 0.02, 4);
        let handled = drive(alice, bob, |_, _, _| {});
        assert_eq!(handled.bob.first(), Some(&QKD_ERR_UNEXPECTED_MESSAGE));
        let (r, detail, _, _) = outcome(bob);
        assert_eq!(r, QKD_ERR_UNEXPECTED_MESSAGE);
        assert_eq!(
            detail,
            "message for block \"b-1\" reached the session of block \"b-2\""
        );
        let (r, _, _, key) = outcome(alice);
        assert!(r != QKD_OK && key.is_none());

        for s in [alice, bob, unused_alice, unused_bob] {
            qkd_session_free(s);
        }
        qkd_block_free(raw);
        qkd_block_free(short);
        for l in [la, lb, sa, sb] {
            qkd_link_free(l);
        }
    }
}
