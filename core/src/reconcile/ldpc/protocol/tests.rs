use super::*;
use crate::reconcile::testkit::{error_count, noisy_pair};
use crate::rng::SeededRandom;

fn parties(
    params: &LdpcParams,
    qber: f64,
    frames: usize,
    seed: u64,
) -> (LdpcAlice, LdpcMessage, LdpcBob, Vec<BitBlock>) {
    let plan = Arc::new(FramePlan::choose(params, qber).unwrap());
    let k = plan.key_bits();
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for i in 0..frames {
        let (x, y) = noisy_pair(k, error_count(k, qber), seed + i as u64);
        xs.push(x);
        ys.push(y);
    }
    let mut rng = SeededRandom::from_u64(seed);
    let (alice, first) = LdpcAlice::start(Arc::clone(&plan), xs.clone(), &mut rng).unwrap();
    let bob = LdpcBob::new(plan, ys, Backend::best()).unwrap();
    (alice, first, bob, xs)
}

#[test]
fn plans_hit_the_requested_efficiency() {
    for (qber, f) in [(0.01, 1.2), (0.03, 1.15), (0.08, 1.3)] {
        let plan = FramePlan::choose(&LdpcParams::one_way(64, f), qber).unwrap();
        let n = BASE_COLUMNS as usize * 64;
        assert_eq!(
            plan.key_bits() + plan.punctured.len() + plan.shortened.len(),
            n
        );
        let got = plan.leak_after(0) as f64 / (plan.key_bits() as f64 * binary_entropy(qber));
        assert!((got - f).abs() < 0.01, "qber {qber}: f {got}");
        // Punctured variables never share a check: disjoint columns of H.
        let graph = plan.graph().unwrap();
        let mut punct = vec![false; n];
        plan.punctured.iter().for_each(|&v| punct[v] = true);
        for vars in graph.checks() {
            assert!(vars.iter().filter(|&&v| punct[v]).count() <= 1);
        }
        // The key runs are the key positions, in order.
        let expanded: Vec<usize> = plan
            .key_runs
            .iter()
            .flat_map(|&(at, from, len)| {
                assert_eq!(plan.key_positions[from], at);
                at..at + len
            })
            .collect();
        assert_eq!(expanded, plan.key_positions);
        assert!(plan.key_runs.len() < plan.key_bits() / 4);
    }
    assert!(FramePlan::choose(&LdpcParams::one_way(64, 1.1), 0.3).is_err());
    assert!(FramePlan::choose(&LdpcParams::one_way(64, 0.9), 0.02).is_err());
    assert!(FramePlan::choose(&LdpcParams::one_way(63, 1.2), 0.02).is_err());
}

#[test]
fn blind_plans_cover_the_bound_and_one_way_plans_the_estimate() {
    let (q, high) = (0.02, 0.025);
    let k = FramePlan::key_bits_for(64) as f64;
    let blind = LdpcParams::blind(64, 1.15, 1.45);
    let plan = FramePlan::choose_bounded(&blind, q, high).unwrap();
    let first = plan.leak_after(0) as f64 / (k * binary_entropy(q));
    assert!((first - 1.15).abs() < 0.01, "{first}");
    let last = plan.leak_after(plan.rounds) as f64 / (k * binary_entropy(high));
    assert!(last >= 1.45, "{last}");
    let unbounded = FramePlan::choose(&blind, q).unwrap();
    assert!(unbounded.leak_after(unbounded.rounds) < plan.leak_after(plan.rounds));
    let one_way = LdpcParams::one_way(64, 1.35);
    assert_eq!(
        FramePlan::choose_bounded(&one_way, q, high).unwrap(),
        FramePlan::choose(&one_way, q).unwrap()
    );
    let err = FramePlan::choose_bounded(&blind, q, 0.01).unwrap_err();
    assert!(err.to_string().contains("bound"), "{err}");
}

#[test]
fn punctured_bits_are_spread_along_each_staircase_chain() {
    // QBER 2 %, f = 1.6: 45 rows, 2183 of 23 040 syndrome bits punctured at z = 512.
    let z = 512;
    let plan = FramePlan::choose(&LdpcParams::one_way(z, 1.6), 0.02).unwrap();
    let (p, chains) = (plan.punctured.len(), z as usize);
    assert!(p > 4 * chains, "{p}");
    // Only the even staircase columns are punctured.
    let even = (plan.rows as usize - 1).div_ceil(2);
    // Whatever a blind round revealed, what stays punctured (a suffix) has at most one more
    // variable in any chain than in another, and those of one chain are far apart.
    for kept in [p, p - 1000, chains + 7, 3] {
        let mut by_chain = vec![Vec::new(); chains];
        for &v in &plan.punctured[p - kept..] {
            by_chain[v % chains].push(v / chains);
        }
        let counts: Vec<usize> = by_chain.iter().map(Vec::len).collect();
        let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(hi - lo <= 1, "kept {kept}: {lo}..{hi} per chain");
        // A third of the best spacing at least (`spread_orders_keep_every_prefix_apart`).
        let gap = 2 * ((even - 1) / (3 * hi.saturating_sub(1).max(1))).max(1);
        for columns in &mut by_chain {
            columns.sort_unstable();
            for pair in columns.windows(2) {
                assert!(pair[1] - pair[0] >= gap, "kept {kept}: {columns:?}");
            }
        }
    }
}

#[test]
fn spread_orders_keep_every_prefix_apart() {
    for len in 1..=50 {
        for start in 0..len {
            let order = spread_order(len, start);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..len).collect::<Vec<_>>());
            for k in 2..=len {
                let mut prefix = order[..k].to_vec();
                prefix.sort_unstable();
                let gap = prefix.windows(2).map(|w| w[1] - w[0]).min().unwrap();
                // A third of the best possible spacing of k points on 0..len - 1, at least
                // (the greedy order from an end point gets half; from elsewhere, down to 0.35
                // of it at len 50).
                assert!(
                    3 * (k - 1) * gap >= len - 1,
                    "len {len} start {start} k {k}: {gap}"
                );
            }
        }
    }
}

#[test]
fn one_way_reconciles_in_one_message() {
    let params = LdpcParams::one_way(64, 1.8);
    let (mut alice, first, mut bob, xs) = parties(&params, 0.03, 40, 1);
    let t = run_loopback(&mut alice, first, &mut bob).unwrap();
    assert_eq!(t.alice_messages, 1);
    assert!(
        alice.is_done() && bob.is_done() && alice.failed().is_empty(),
        "{:?}",
        bob.stats()
    );
    let s = bob.stats();
    assert_eq!((s.frames, s.first_attempt, s.failed), (40, 40, 0));
    assert_eq!(alice.bob_leak_bits(), 40);
    let plan = FramePlan::choose(&params, 0.03).unwrap();
    assert_eq!(alice.disclosed_bits(), 40 * plan.leak_after(0));
    assert_eq!(bob.into_frames(), xs);
}

#[test]
fn blind_reveals_until_frames_decode_and_counts_every_bit() {
    // f_start 1.0 is below what the codes decode: every frame needs reveals.
    let params = LdpcParams::blind(64, 1.0, 1.6);
    let (mut alice, first, mut bob, xs) = parties(&params, 0.02, 33, 9);
    let t = run_loopback(&mut alice, first, &mut bob).unwrap();
    let s = bob.stats();
    assert!(
        s.rounds >= 1 && t.alice_messages == 1 + s.rounds,
        "{s:?} {t:?}"
    );
    assert!(s.first_attempt < 33);
    let plan = FramePlan::choose(&params, 0.02).unwrap();
    let failed = alice.failed().to_vec();
    assert_eq!(failed.len() as u64, s.failed);
    assert_eq!(bob.failed(), failed);
    assert_eq!(bob.disclosed_bits(), alice.disclosed_bits());
    assert_eq!(bob.bob_leak_bits(), alice.bob_leak_bits());
    let decoded = bob.into_frames();
    let mut expect_leak = 0;
    for (f, (got, want)) in decoded.iter().zip(&xs).enumerate() {
        if failed.contains(&(f as u32)) {
            assert_ne!(got, want, "a failed frame is returned as Bob had it");
        } else {
            assert_eq!(got, want);
            expect_leak += plan.leak_after(0);
        }
    }
    // Every kept frame disclosed at least the first syndrome, and reveals add on top.
    assert!(alice.disclosed_bits() > expect_leak);
    assert!(alice.disclosed_bits() <= (33 - failed.len() as u64) * plan.leak_after(3));
}

#[test]
fn bad_messages_are_errors() {
    let params = LdpcParams::blind(24, 1.1, 1.5);
    let (mut alice, first, mut bob, _) = parties(&params, 0.03, 3, 2);
    // Alice refuses her own kinds and rounds out of order.
    assert!(alice.handle(first.clone()).is_err());
    assert!(
        alice
            .handle(LdpcMessage::Reveal {
                round: 2,
                frames: vec![0]
            })
            .is_err()
    );
    assert!(
        alice
            .handle(LdpcMessage::Reveal {
                round: 1,
                frames: vec![1, 0]
            })
            .is_err()
    );
    assert!(
        alice
            .handle(LdpcMessage::Reveal {
                round: 1,
                frames: vec![3]
            })
            .is_err()
    );
    // Bob: wrong code, wrong count, wrong syndrome length, reveals before syndromes.
    let LdpcMessage::Syndromes {
        rows,
        z,
        punctured,
        syndromes,
    } = first.clone()
    else {
        unreachable!()
    };
    let plan = Arc::new(FramePlan::choose(&params, 0.03).unwrap());
    let fresh = || {
        LdpcBob::new(
            Arc::clone(&plan),
            vec![BitBlock::zeros(plan.key_bits()); 3],
            Backend::Portable,
        )
        .unwrap()
    };
    for bad in [
        LdpcMessage::Syndromes {
            rows: rows + 1,
            z,
            punctured,
            syndromes: syndromes.clone(),
        },
        LdpcMessage::Syndromes {
            rows,
            z,
            punctured,
            syndromes: syndromes[..2].to_vec(),
        },
        LdpcMessage::Syndromes {
            rows,
            z,
            punctured,
            syndromes: vec![Parities::from_bits([true]); 3],
        },
        LdpcMessage::Revealed {
            round: 1,
            values: vec![],
        },
    ] {
        assert!(fresh().handle(bad).is_err());
    }
    assert!(
        LdpcBob::new(
            Arc::clone(&plan),
            vec![BitBlock::zeros(5)],
            Backend::Portable
        )
        .is_err()
    );
    // Encoding: round trip, version, trailing bytes, garbage never panics.
    let wire = first.encode().unwrap();
    assert_eq!(LdpcMessage::decode(&wire).unwrap(), first);
    assert!(LdpcMessage::decode(&[]).is_err());
    assert!(LdpcMessage::decode(&[9, 0]).is_err());
    let mut long = wire.clone();
    long.push(0);
    assert!(LdpcMessage::decode(&long).is_err());
    let mut rng = SeededRandom::from_u64(5);
    for _ in 0..300 {
        let mut junk = vec![LDPC_WIRE_VERSION; 1 + rng.below(40) as usize];
        RandomSource::fill(&mut rng, &mut junk[1..]).unwrap();
        if let Ok(m) = LdpcMessage::decode(&junk) {
            let _ = fresh().handle(m.clone());
            let _ = alice.handle(m);
        }
    }
    // The untouched Bob still takes Alice's real first message.
    assert!(bob.handle(first).is_ok());
}

#[test]
fn alice_refuses_reveals_for_frames_bob_already_decoded() {
    let params = LdpcParams::blind(24, 1.1, 1.5);
    let (mut alice, _, _, _) = parties(&params, 0.03, 3, 4);
    // Round 1 asks for frame 0 only: frames 1 and 2 were decoded.
    let r1 = alice
        .handle(LdpcMessage::Reveal {
            round: 1,
            frames: vec![0],
        })
        .unwrap();
    assert!(
        matches!(r1, Some(LdpcMessage::Revealed { round: 1, ref values }) if values.len() == 1)
    );
    assert!(
        alice
            .handle(LdpcMessage::Reveal {
                round: 2,
                frames: vec![0, 1]
            })
            .is_err()
    );
    assert!(alice.handle(LdpcMessage::Done { failed: vec![2] }).is_err());
    // Frame 0 may still fail.
    assert_eq!(
        alice.handle(LdpcMessage::Done { failed: vec![0] }),
        Ok(None)
    );
    assert_eq!(alice.frame_disclosed(0), None);
    let plan = FramePlan::choose(&params, 0.03).unwrap();
    assert_eq!(alice.frame_disclosed(1), Some(plan.leak_after(0)));
    // Answers: 3 frames at the first attempt, then frame 0 once more.
    assert_eq!(alice.bob_leak_bits(), 4);
}

#[test]
fn the_min_sum_normalization_follows_the_mother_code() {
    // 9 % needs the rate-0.5 mother (checks of 6.5 variables), 1 % a high-rate one.
    let low = FramePlan::choose(&LdpcParams::one_way(64, 1.2), 0.09).unwrap();
    let high = FramePlan::choose(&LdpcParams::one_way(64, 1.2), 0.01).unwrap();
    assert_eq!(low.rows, 100);
    assert_eq!(low.decoder.scaling, Scaling::TWENTY_SEVEN_THIRTY_SECONDS);
    assert!(high.rows < 50, "{}", high.rows);
    assert_eq!(high.decoder.scaling, Scaling::THREE_QUARTERS);
    assert_eq!(
        low.decoder.max_iterations,
        DecoderParams::default().max_iterations
    );
}
