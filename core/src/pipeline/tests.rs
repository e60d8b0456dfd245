use super::*;
use crate::amplify::{Bb84Tlgr2012, FiniteKeyInput, SecretLengthModel};
use crate::rng::SeededRandom;
use crate::sim::{ErrorModel, simulate};

fn cfg(block_bits: usize, sample_bits: usize) -> PipelineConfig {
    PipelineConfig {
        block_bits,
        sample_bits,
        ..PipelineConfig::default()
    }
}

#[test]
fn one_block_at_two_percent_yields_identical_final_keys() {
    let p = simulate(1 << 18, 0.02, ErrorModel::IidExact, 1).unwrap();
    let c = cfg(1 << 18, 1 << 12);
    let mut rng = SeededRandom::from_u64(2);
    let r = process_block(0, &p.alice, &p.bob, &c, &mut rng).unwrap();
    let rep = &r.report;
    assert_eq!(rep.outcome, BlockOutcome::Key, "{rep:?}");
    assert_eq!(rep.residual_errors, 0);
    assert!(rep.confirmed);
    assert_eq!(rep.reconciled_bits, (1 << 18) - (1 << 12));
    // The sample removed some of the 5243 errors; Cascade corrected all that remained.
    assert_eq!(rep.errors_corrected, rep.true_errors);
    assert!(rep.true_errors + rep.sample_errors == 5243);
    let f = rep.efficiency.unwrap();
    assert!(f > 1.0 && f < 1.3, "efficiency {f}");
    let secret = rep.secret.unwrap();
    assert_eq!(rep.final_bits, secret.bits);
    // Bob's side of Cascade is counted (never less than Alice's), and the length obeys the
    // bound with every bit either side disclosed.
    assert!(rep.leak_bob_bits >= rep.leak_alice_bits);
    let disclosed = rep.leak_alice_bits + rep.leak_bob_bits + u64::from(rep.confirm_tag_bits);
    assert!(secret.bits < rep.reconciled_bits - disclosed);
    // The block is sized for its rung of the default ladder (41 rungs up to 11 %), the
    // smallest at or above its sample QBER.
    let ladder = crate::amplify::QberLadder::default_up_to(c.max_qber).unwrap();
    let rung = rep.qber_tolerated.unwrap();
    assert!(
        rung >= rep.qber && ladder.rungs().contains(&rung),
        "{rep:?}"
    );
    assert!(ladder.rungs().iter().all(|&q| q < rep.qber || q >= rung));
    // ... and is exactly the model's answer for the block's figures.
    let expect = Bb84Tlgr2012::default()
        .secret_length(&FiniteKeyInput {
            key_bits: rep.reconciled_bits,
            sample_bits: rep.sample_bits,
            qber: rung,
            leak_ec_bits: rep.leak_alice_bits + rep.leak_bob_bits + rep.dropped_frame_bits,
            confirm_tag_bits: rep.confirm_tag_bits,
            length_choices: 41,
            eps_sec: c.eps_sec,
            eps_cor: c.eps_cor,
        })
        .unwrap();
    assert_eq!(secret, expect);
    assert!(secret.bits > 50_000, "{secret:?}");
    let key = r.key.unwrap();
    assert_eq!(key.len() as u64, rep.final_bits);
    assert_eq!(rep.entropy, Some(Verdict::Pass));
}

#[test]
fn same_seeds_give_the_same_key_and_other_seeds_another() {
    let p = simulate(1 << 18, 0.02, ErrorModel::IidExact, 5).unwrap();
    let c = cfg(1 << 18, 1 << 13);
    let run = |s| process_block(0, &p.alice, &p.bob, &c, &mut SeededRandom::from_u64(s)).unwrap();
    let (a, b, d) = (run(9), run(9), run(10));
    assert_eq!(a.key, b.key);
    assert!(a.key.is_some());
    assert_ne!(a.key, d.key);
}

#[test]
fn high_qber_block_is_discarded_before_reconciliation() {
    let p = simulate(1 << 16, 0.2, ErrorModel::IidExact, 3).unwrap();
    let c = cfg(1 << 16, 1 << 11);
    let r = process_block(7, &p.alice, &p.bob, &c, &mut SeededRandom::from_u64(1)).unwrap();
    assert!(r.key.is_none());
    assert_eq!(r.report.index, 7);
    assert_eq!(r.report.leak_alice_bits, 0, "nothing may be disclosed");
    match &r.report.outcome {
        BlockOutcome::Discarded(why) => assert!(why.contains("QBER"), "{why}"),
        o => panic!("expected a discard, got {o:?}"),
    }
}

#[test]
fn small_block_gives_no_key_but_no_error() {
    // 4096 bits at 8 %: the finite-key penalty exceeds what is left.
    let p = simulate(4096, 0.08, ErrorModel::IidExact, 4).unwrap();
    let c = cfg(4096, 512);
    let r = process_block(0, &p.alice, &p.bob, &c, &mut SeededRandom::from_u64(1)).unwrap();
    assert!(r.key.is_none());
    assert!(
        matches!(r.report.outcome, BlockOutcome::Discarded(_)),
        "{:?}",
        r.report.outcome
    );
}

#[test]
fn process_runs_blocks_in_order_and_sums_them() {
    let p = simulate(
        5 * (1 << 15) + 100,
        0.02,
        ErrorModel::Burst(Default::default()),
        6,
    )
    .unwrap();
    let c = cfg(1 << 15, 1 << 10);
    let mut seen = Vec::new();
    let s = process(&p.alice, &p.bob, &c, |r| {
        if let Some(k) = &r.key {
            assert_eq!(k.len() as u64, r.report.final_bits);
        }
        seen.push(r.report.index);
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, vec![0, 1, 2, 3, 4]);
    assert_eq!(s.blocks, 5);
    assert_eq!(s.raw_bits, 5 * (1 << 15));
    assert_eq!(
        s.blocks_with_key + s.blocks_discarded + s.blocks_quarantined,
        5
    );
}

#[test]
fn stream_matches_block_count_and_reports_the_tail() {
    let p = simulate(3 * (1 << 15) + 800, 0.02, ErrorModel::IidExact, 8).unwrap();
    let (a, b) = (p.alice.to_bytes(), p.bob.to_bytes());
    let c = cfg(1 << 15, 1 << 10);
    let mut n = 0;
    let s = process_stream(&a[..], &b[..], &c, 2, |_| {
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 3);
    assert_eq!(s.summary.blocks, 3);
    assert_eq!(s.ignored_tail_bits, 800);
    // Bob's stream one byte short: a precise length error, not a silent truncation.
    let err = process_stream(&a[..], &b[..b.len() - 1], &c, 2, |_| Ok(())).unwrap_err();
    assert!(matches!(err, PipelineError::LengthMismatch { .. }), "{err}");
    let odd = cfg((1 << 15) + 3, 1 << 10);
    assert!(matches!(
        process_stream(&a[..], &b[..], &odd, 2, |_| Ok(())),
        Err(PipelineError::Config(_))
    ));
}

#[test]
fn bad_configuration_is_an_error() {
    let p = simulate(1 << 14, 0.02, ErrorModel::IidExact, 1).unwrap();
    let mut c = cfg(1 << 14, 1 << 10);
    c.algorithm = "nope".into();
    let e = process_block(0, &p.alice, &p.bob, &c, &mut SeededRandom::from_u64(1)).unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
    let c = cfg(1 << 14, 1 << 13);
    assert!(matches!(c.validate(), Err(PipelineError::Config(_))));
    let mut c = cfg(1 << 14, 1 << 10);
    c.eps_sec = 0.0;
    assert!(c.validate().is_err());
    let short = p.bob.slice(0..1000).unwrap();
    let c = cfg(1 << 14, 1 << 10);
    let e = process_block(0, &p.alice, &short, &c, &mut SeededRandom::from_u64(1)).unwrap_err();
    assert!(matches!(e, PipelineError::LengthMismatch { .. }));
}

#[test]
fn blocks_through_one_session_reconcile_exactly_and_spend_two_pads_each() {
    let c = cfg(1 << 14, 1 << 10);
    let s = Session::new(c, &mut SeededRandom::from_u64(1)).unwrap();
    for seed in 0..3 {
        let p = simulate(1 << 14, 0.02, ErrorModel::IidExact, seed).unwrap();
        let r = s
            .process_block(seed, &p.alice, &p.bob, &mut SeededRandom::from_u64(seed))
            .unwrap();
        assert_eq!(r.report.residual_errors, 0);
        // The first block also draws the link's hash key.
        let pads = 2 * crate::auth::PAD_BITS as u64;
        let hash_key = if seed == 0 {
            crate::auth::HASH_KEY_BITS as u64
        } else {
            0
        };
        assert_eq!(r.report.auth_bits, pads + hash_key);
    }
}

#[test]
fn a_four_megabit_block_confirms_with_the_default_eps_cor() {
    // The GF(2^64) confirmation refused keys above ~1.18 Mbit at eps_cor = 1e-15; GF(2^128)
    // confirms the whole 4-Mbit block as one frame.
    let p = simulate(1 << 22, 0.02, ErrorModel::IidExact, 11).unwrap();
    let c = PipelineConfig {
        block_bits: 1 << 22,
        frame_bits: 0,
        ..PipelineConfig::default()
    };
    let r = process_block(0, &p.alice, &p.bob, &c, &mut SeededRandom::from_u64(3)).unwrap();
    assert_eq!(r.report.outcome, BlockOutcome::Key, "{:?}", r.report);
    assert!(r.report.confirmed);
    // One frame, two checks at most: 1e-15 / 2 needs 51 bits (2^-50 = 8.9e-16 > 5e-16).
    assert_eq!(r.report.confirm_tag_bits, 51);
    assert!(r.report.final_bits > (1 << 22) / 3, "{:?}", r.report.secret);
}

#[test]
fn frames_are_confirmed_one_by_one_and_a_failed_frame_is_reconciled_again() {
    // 2^20 bits as 63 frames of 2^14: every check gets its own tag at eps_cor / (2 * 63).
    let c = PipelineConfig {
        frame_bits: 1 << 14,
        ..cfg(1 << 20, 1 << 14)
    };
    let frames: u32 = 63;
    let tag = crate::confirm::tag_bits_for(c.eps_cor / f64::from(2 * frames), 1 << 14).unwrap();
    // Some seed makes Cascade leave an error in a frame (about 0.3 % of 2^14-bit frames, so
    // about one 2^20-bit block in six): that frame is reconciled again with a fresh shuffle.
    let retried = (20..80).find_map(|seed| {
        let p = simulate(1 << 20, 0.02, ErrorModel::IidExact, seed).unwrap();
        let r = process_block(0, &p.alice, &p.bob, &c, &mut SeededRandom::from_u64(seed)).unwrap();
        (r.report.retried_frames > 0).then_some(r)
    });
    let r = retried.expect("a block with a retried frame among 60 seeds");
    let rep = &r.report;
    assert_eq!(rep.outcome, BlockOutcome::Key, "{rep:?}");
    assert_eq!(rep.confirm_tag_bits, (frames + rep.retried_frames) * tag);
    assert_eq!(rep.dropped_frames, 0, "{rep:?}");
    assert!(rep.confirmed && rep.residual_errors == 0);
    assert_eq!(rep.errors_corrected, rep.true_errors);
    assert_eq!(r.key.map(|k| k.len() as u64), Some(rep.final_bits));
}

#[test]
fn keys_shorter_than_one_block_are_an_error() {
    let p = simulate(1 << 14, 0.02, ErrorModel::IidExact, 8).unwrap();
    let err = process(&p.alice, &p.bob, &cfg(1 << 15, 1 << 10), |_| Ok(())).unwrap_err();
    assert!(
        matches!(
            err,
            PipelineError::ShorterThanBlock {
                bits: 16384,
                block_bits: 32768
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("16384 bits, fewer than one block (block_bits = 32768)")
    );
}
