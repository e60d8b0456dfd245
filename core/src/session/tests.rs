use std::sync::Arc;
use std::time::Duration;

use super::drive::{LineConfig, SideConfig, run_latency_line, run_pair, run_pair_with};
use super::wire::{Body, Envelope};
use super::*;
use crate::auth::KeyPool;
use crate::pipeline::PipelineConfig;
use crate::reconcile::cascade::Variant;
use crate::rng::{RandomSource, SeededRandom};
use crate::sim::{ErrorModel, simulate};

fn cfg(block_bits: usize, sample_bits: usize, frame_bits: usize) -> PipelineConfig {
    PipelineConfig {
        block_bits,
        sample_bits,
        frame_bits,
        ..PipelineConfig::default()
    }
}

/// Alice's and Bob's links over the same pre-shared secret of `auth_bytes`.
fn links(c: &PipelineConfig, auth_bytes: usize, seed: u64) -> (Arc<Link>, Arc<Link>) {
    let mut secret = vec![0u8; auth_bytes];
    SeededRandom::from_u64(seed).fill(&mut secret).unwrap();
    let mut rng = SeededRandom::from_u64(seed + 1);
    let a = Link::new(c.clone(), Box::new(KeyPool::new(&secret)), &mut rng).unwrap();
    let b = Link::new(c.clone(), Box::new(KeyPool::new(&secret)), &mut rng).unwrap();
    (a, b)
}

fn sessions(
    a: &Arc<Link>,
    b: &Arc<Link>,
    id: &str,
    bits: usize,
    qber: f64,
    seed: u64,
) -> (AliceSession, BobSession) {
    let p = simulate(bits, qber, ErrorModel::IidExact, seed).unwrap();
    let rng = Box::new(SeededRandom::from_u64(seed + 100));
    (
        AliceSession::new(Arc::clone(a), id, p.alice, rng).unwrap(),
        BobSession::new(Arc::clone(b), id, p.bob).unwrap(),
    )
}

/// Both sides ended normally with the same report (times apart) and the same key.
fn assert_agree(a: &BlockResult, b: &BlockResult) -> bool {
    let (a, b) = match (a, b) {
        (Ok(a), Ok(b)) => (a, b),
        other => panic!("expected two outcomes, got {other:?}"),
    };
    let strip = |r: &crate::pipeline::BlockReport| {
        let mut r = r.clone();
        r.times = Default::default();
        r
    };
    assert_eq!(strip(&a.report), strip(&b.report));
    assert_eq!(a.key, b.key);
    assert_eq!(a.key.is_some(), a.report.outcome == BlockOutcome::Key);
    a.key.is_some()
}

type BlockResult = Result<SessionOutcome, SessionError>;

#[test]
fn one_block_yields_the_same_key_on_both_sides_and_costs_two_pads() {
    let c = cfg(1 << 18, 1 << 12, 1 << 14);
    let (la, lb) = links(&c, 1024, 1);
    let (mut a, mut b) = sessions(&la, &lb, "blk-1", 1 << 18, 0.02, 2);
    let (ra, rb) = run_pair(&mut a, &mut b);
    assert!(assert_agree(&ra, &rb));
    let rep = ra.unwrap().report;
    assert_eq!(rep.block_id, "blk-1");
    assert!(rep.confirmed && rep.final_bits > 50_000, "{rep:?}");
    // A first block draws the hash key too; each later block two pads only.
    assert_eq!(rep.auth_bits, 384);
    let (mut a, mut b) = sessions(&la, &lb, "blk-2", 1 << 18, 0.02, 3);
    let (ra, rb) = run_pair(&mut a, &mut b);
    assert!(assert_agree(&ra, &rb));
    let rep = ra.unwrap().report;
    assert_eq!(rep.auth_bits, 256);
    assert!(rep.auth_bits * 100 < rep.final_bits, "{rep:?}");
    assert_eq!(la.auth_keys().spent_bits(), lb.auth_keys().spent_bits());
}

#[test]
fn every_variant_agrees_at_every_qber_over_the_latency_line() {
    // One latency line per variant, four blocks in flight (one per QBER).
    let qbers = [0.005, 0.02, 0.05, 0.11];
    // Blocks at 0.5 % that yielded key (Alice's sample positions come from the OS, so the
    // margin must hold for any sample: at 0.5 % a 2^16-bit block keeps tens of kbit).
    let mut keyed_at_half_percent = 0;
    for (v, variant) in Variant::all().into_iter().enumerate() {
        let c = PipelineConfig {
            algorithm: variant.name.clone(),
            ..cfg(1 << 16, 1 << 11, 1 << 13)
        };
        let (la, lb) = links(&c, 4096, v as u64);
        let blocks = qbers
            .iter()
            .enumerate()
            .map(|(i, &q)| {
                let p = simulate(1 << 16, q, ErrorModel::IidExact, (v * 10 + i) as u64).unwrap();
                (format!("{}-{i}", variant.name), p.alice, p.bob)
            })
            .collect();
        let line = LineConfig {
            one_way: Duration::from_micros(200),
            bits_per_second: None,
            side: SideConfig {
                in_flight: 4,
                ..SideConfig::default()
            },
        };
        let run = run_latency_line(la, lb, blocks, line).unwrap();
        for (i, (id, a, b)) in run.blocks.iter().enumerate() {
            let got_key = assert_agree(a, b);
            let rep = &a.as_ref().unwrap().report;
            if rep.qber_tolerated.is_some() {
                // Reconciled: Alice disclosed parities, and Bob corrected errors.
                assert!(
                    rep.leak_alice_bits > 0 && rep.errors_corrected > 0,
                    "{id}: {rep:?}"
                );
            }
            if i == 0 {
                keyed_at_half_percent += usize::from(got_key);
            }
        }
    }
    assert_eq!(keyed_at_half_percent, Variant::all().len());
}

#[test]
fn a_megabit_block_in_frames_of_2_14_and_several_blocks_in_flight() {
    let c = cfg(1 << 20, 1 << 14, 1 << 14);
    let (la, lb) = links(&c, 4096, 7);
    let blocks = (0..3)
        .map(|i| {
            let p = simulate(1 << 20, 0.02, ErrorModel::IidExact, 70 + i).unwrap();
            (format!("m{i}"), p.alice, p.bob)
        })
        .collect();
    let line = LineConfig {
        one_way: Duration::from_millis(2),
        bits_per_second: Some(1e9),
        side: SideConfig {
            in_flight: 3,
            ..SideConfig::default()
        },
    };
    let run = run_latency_line(la, lb, blocks, line).unwrap();
    for (_, a, b) in &run.blocks {
        assert!(assert_agree(a, b));
        let rep = &a.as_ref().unwrap().report;
        // 63 frames advance together: the block takes the round trips of its slowest frame
        // (220 to 330 here), not 63 frames' worth.
        assert!(rep.round_trips < 500, "{rep:?}");
        assert!(rep.auth_bits * 100 < rep.final_bits);
    }
    assert_eq!(run.alice.messages_dropped, 0);
}

/// An LDPC configuration with the z = 64 code's 11520-bit frames.
fn ldpc_cfg(algorithm: &str, block_bits: usize, sample_bits: usize) -> PipelineConfig {
    PipelineConfig {
        algorithm: algorithm.into(),
        ..cfg(block_bits, sample_bits, 11520)
    }
}

#[test]
fn ldpc_blocks_agree_over_the_latency_line_and_charge_the_tail() {
    // 2^18 raw bits less a 2^14 sample hold 21 frames of 11520 bits; 3840 bits are left out.
    for (v, (algorithm, qbers)) in [
        ("ldpc-blind", &[0.01, 0.03, 0.06][..]),
        ("ldpc-blind:1.0:1.6", &[0.02][..]),
        ("ldpc-oneway:1.8", &[0.01, 0.03][..]),
    ]
    .into_iter()
    .enumerate()
    {
        let c = ldpc_cfg(algorithm, 1 << 18, 1 << 14);
        let (la, lb) = links(&c, 4096, 40 + v as u64);
        let blocks = qbers
            .iter()
            .enumerate()
            .map(|(i, &q)| {
                let p = simulate(1 << 18, q, ErrorModel::IidExact, (v * 10 + i) as u64).unwrap();
                (format!("{algorithm}-{i}"), p.alice, p.bob)
            })
            .collect();
        let line = LineConfig {
            one_way: Duration::from_micros(200),
            bits_per_second: None,
            side: SideConfig {
                in_flight: 3,
                ..SideConfig::default()
            },
        };
        let run = run_latency_line(la, lb, blocks, line).unwrap();
        for ((id, a, b), &qber) in run.blocks.iter().zip(qbers) {
            let rep = &a.as_ref().unwrap().report;
            // At 6 % a 2^18-bit block is too short for a positive finite-key length. The
            // sample comes from the OS generator, and one that reads the QBER low (a 4096-bit
            // sample read 0.63 % at 1 %) makes one-way LDPC plan too short a syndrome and drop
            // most frames.
            let underestimated = rep.qber < 0.8 * qber;
            assert!(
                assert_agree(a, b) || qber > 0.05 || underestimated,
                "{id}: {a:?}"
            );
            // The tail is charged as disclosed, as are frames that failed (one-way LDPC fails
            // a frame now and then when the sample underestimates the QBER).
            let dropped = u64::from(rep.dropped_frames);
            assert_eq!(
                rep.dropped_frame_bits,
                3840 + dropped * 11520,
                "{id}: {rep:?}"
            );
            // Frames of 11 520 bits fail now and then near their code's threshold (one-way at
            // f 1.8 and 3 % dropped 3 of 22 with the sample reading 3.08 %; about 1 run in 15
            // dropped more than 2), and more when the sample underestimated the QBER: LDPC
            // picks its rate from the sample's QBER.
            assert!(dropped <= 8 || underestimated, "{id}: {rep:?}");
            assert!(
                rep.leak_alice_bits > 0 && rep.errors_corrected > 0,
                "{id}: {rep:?}"
            );
            // Bob answers every attempt: at least one feedback bit per frame.
            assert!(rep.leak_bob_bits >= 21, "{id}: {rep:?}");
            if algorithm.starts_with("ldpc-oneway") {
                assert_eq!(rep.round_trips, 1, "{id}: {rep:?}");
            } else if algorithm.ends_with(":1.0:1.6") {
                // f 1.0 never decodes at the first attempt: reveals follow.
                assert!(rep.round_trips > 1, "{id}: {rep:?}");
            }
        }
    }
}

#[test]
fn an_ldpc_block_shorter_than_a_frame_is_refused_with_its_sizes() {
    let c = ldpc_cfg("ldpc", 1 << 16, 1 << 11);
    let (la, lb) = links(&c, 1024, 3);
    // 12000 raw bits less the 2048-bit sample: 9952 bits, under one 11520-bit frame.
    let (mut a, mut b) = sessions(&la, &lb, "short", 12000, 0.02, 3);
    let (ra, rb) = run_pair(&mut a, &mut b);
    let e = ra.unwrap_err().to_string();
    assert!(
        e.contains("9952 bits") && e.contains("11520-bit LDPC frame"),
        "{e}"
    );
    assert!(rb.is_err());
    let short = PipelineConfig {
        block_bits: 12000,
        ..c
    };
    let e = short.validate().unwrap_err().to_string();
    assert!(e.contains("fewer than one 11520-bit LDPC frame"), "{e}");
}

/// Flips one bit of message `k` in `dir` (byte chosen by `pick`).
fn flip_at(dir: Direction, k: usize, pick: u64) -> impl FnMut(Direction, Vec<u8>) -> Vec<Vec<u8>> {
    let mut seen = 0usize;
    move |d, mut m| {
        if d == dir {
            if seen == k {
                let i = (pick as usize) % m.len();
                m[i] ^= 1 << (pick % 8);
            }
            seen += 1;
        }
        vec![m]
    }
}

/// The kinds of the messages each side sends in one clean run, in order.
fn message_kinds(c: &PipelineConfig, seed: u64) -> (Vec<&'static str>, Vec<&'static str>) {
    let (la, lb) = links(c, 1024, seed);
    let (mut a, mut b) = sessions(&la, &lb, "k", 1 << 16, 0.02, seed);
    let mut kinds = (Vec::new(), Vec::new());
    let (ra, rb) = run_pair_with(&mut a, &mut b, |d, m| {
        let kind = Envelope::decode(&m).unwrap().body.kind();
        match d {
            Direction::AliceToBob => kinds.0.push(kind),
            Direction::BobToAlice => kinds.1.push(kind),
        }
        vec![m]
    });
    assert!(assert_agree(&ra, &rb));
    kinds
}

#[test]
fn a_flipped_bit_in_any_message_kind_leaves_no_key_on_either_side() {
    flipped_bits_leave_no_key(&cfg(1 << 16, 1 << 11, 1 << 13));
}

#[test]
fn a_flipped_bit_in_any_ldpc_message_leaves_no_key_on_either_side() {
    flipped_bits_leave_no_key(&ldpc_cfg("ldpc-blind:1.0:1.8", 1 << 16, 1 << 11));
}

fn flipped_bits_leave_no_key(c: &PipelineConfig) {
    let c = c.clone();
    let (to_bob, to_alice) = message_kinds(&c, 11);
    assert_eq!(to_bob.first(), Some(&"Hello"));
    assert_eq!(to_alice.last(), Some(&"Tag"));
    let mut rng = SeededRandom::from_u64(5);
    for (dir, kinds) in [
        (Direction::AliceToBob, &to_bob),
        (Direction::BobToAlice, &to_alice),
    ] {
        // The first message of each kind, and the last message.
        let mut picks: Vec<usize> = Vec::new();
        for (i, k) in kinds.iter().enumerate() {
            if !kinds[..i].contains(k) {
                picks.push(i);
            }
        }
        picks.push(kinds.len() - 1);
        for &k in &picks {
            for _ in 0..3 {
                let (la, lb) = links(&c, 1024, 11);
                let (mut a, mut b) = sessions(&la, &lb, "k", 1 << 16, 0.02, 11);
                let (ra, rb) =
                    run_pair_with(&mut a, &mut b, flip_at(dir, k, rng.next_u64().unwrap()));
                let key = |r: &BlockResult| r.as_ref().ok().and_then(|o| o.key.clone());
                assert!(
                    key(&ra).is_none(),
                    "{dir:?} message {k} ({}): Alice kept a key",
                    kinds[k]
                );
                if dir == Direction::BobToAlice && key(&rb).is_some() {
                    // Bob's messages are authenticated by his tag alone, which Alice checks
                    // after Bob released his key: she refuses it and the block ends in error on
                    // her side. The stores settle such a block before activation (module docs).
                    assert!(ra.is_err(), "{dir:?} message {k} ({}): {ra:?}", kinds[k]);
                } else {
                    assert!(
                        key(&rb).is_none(),
                        "{dir:?} message {k} ({}): Bob kept a key",
                        kinds[k]
                    );
                }
            }
        }
    }
}

#[test]
fn a_replayed_or_dropped_message_ends_the_block_without_key() {
    let c = cfg(1 << 16, 1 << 11, 1 << 13);
    let (to_bob, _) = message_kinds(&c, 12);
    for k in [0, 1, 2, to_bob.len() - 2] {
        for replay in [true, false] {
            let (la, lb) = links(&c, 1024, 12);
            let (mut a, mut b) = sessions(&la, &lb, "k", 1 << 16, 0.02, 12);
            let mut seen = 0;
            let (ra, rb) = run_pair_with(&mut a, &mut b, |d, m| {
                let hit = d == Direction::AliceToBob && seen == k;
                if d == Direction::AliceToBob {
                    seen += 1;
                }
                match (hit, replay) {
                    (true, true) => vec![m.clone(), m],
                    (true, false) => vec![],
                    _ => vec![m],
                }
            });
            assert!(
                ra.as_ref().map_or(true, |o| o.key.is_none()),
                "{k} {replay}: {ra:?}"
            );
            assert!(
                rb.as_ref().map_or(true, |o| o.key.is_none()),
                "{k} {replay}: {rb:?}"
            );
            if replay {
                assert!(matches!(rb, Err(SessionError::Sequence { .. })), "{rb:?}");
            }
        }
    }
}

#[test]
fn a_wrong_block_id_or_other_settings_are_refused_at_hello() {
    let c = cfg(1 << 16, 1 << 11, 1 << 13);
    let (la, lb) = links(&c, 1024, 13);
    let p = simulate(1 << 16, 0.02, ErrorModel::IidExact, 1).unwrap();
    let rng = || Box::new(SeededRandom::from_u64(1));
    let mut a = AliceSession::new(Arc::clone(&la), "b-1", p.alice.clone(), rng()).unwrap();
    let mut b = BobSession::new(Arc::clone(&lb), "b-2", p.bob.clone()).unwrap();
    let (ra, rb) = run_pair(&mut a, &mut b);
    assert!(
        matches!(&rb, Err(SessionError::BlockId { expected, got }) if expected == "b-2" && got == "b-1"),
        "{rb:?}"
    );
    // Bob's abort names his block, which Alice's session refuses in turn: no key either way.
    assert!(ra.is_err(), "{ra:?}");
    // Bob's link samples twice as much: refused, naming the setting.
    let other = PipelineConfig {
        sample_bits: 1 << 12,
        ..c.clone()
    };
    let (_, lb2) = links(&other, 1024, 13);
    let mut a = AliceSession::new(Arc::clone(&la), "b-3", p.alice.clone(), rng()).unwrap();
    let mut b = BobSession::new(lb2, "b-3", p.bob.clone()).unwrap();
    let (_, rb) = run_pair(&mut a, &mut b);
    assert!(
        matches!(&rb, Err(SessionError::Hello(why)) if why.contains("sample_bits")),
        "{rb:?}"
    );
}

#[test]
fn an_exhausted_pool_gives_a_clear_error_and_no_key() {
    let c = cfg(1 << 16, 1 << 11, 1 << 13);
    // Alice cannot even start.
    let (la, _) = links(&c, 32, 14);
    let p = simulate(1 << 16, 0.02, ErrorModel::IidExact, 1).unwrap();
    let e = AliceSession::new(
        la,
        "x",
        p.alice.clone(),
        Box::new(SeededRandom::from_u64(1)),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            SessionError::Auth(crate::auth::AuthError::Exhausted { .. })
        ),
        "{e}"
    );
    // Bob's pool is shorter than Alice's: he refuses her hello.
    let (la, _) = links(&c, 1024, 15);
    let (_, lb) = links(&c, 32, 15);
    let mut a = AliceSession::new(la, "x", p.alice, Box::new(SeededRandom::from_u64(1))).unwrap();
    let mut b = BobSession::new(lb, "x", p.bob).unwrap();
    let (ra, rb) = run_pair(&mut a, &mut b);
    assert!(matches!(rb, Err(SessionError::Auth(_))), "{rb:?}");
    assert!(ra.is_err());
}

#[test]
fn random_bytes_and_mutated_messages_never_panic() {
    mutated_messages_never_panic(&cfg(1 << 15, 1 << 11, 1 << 13));
}

#[test]
fn random_bytes_and_mutated_ldpc_messages_never_panic() {
    mutated_messages_never_panic(&ldpc_cfg("ldpc-blind:1.0:1.8", 1 << 15, 1 << 11));
}

fn mutated_messages_never_panic(c: &PipelineConfig) {
    let c = c.clone();
    let mut rng = SeededRandom::from_u64(99);
    // Pure noise into fresh sessions.
    for i in 0..300 {
        let (la, lb) = links(&c, 1024, 16);
        let (mut a, mut b) = sessions(&la, &lb, "f", 1 << 15, 0.02, 16);
        let len = (rng.next_u64().unwrap() % 200) as usize;
        let mut noise = vec![0u8; len];
        rng.fill(&mut noise).unwrap();
        if i % 2 == 0 && !noise.is_empty() {
            noise[0] = wire::SESSION_WIRE_VERSION;
        }
        assert!(b.handle(&noise).is_err());
        assert!(a.handle(&noise).is_err());
        assert!(b.take_outcome().is_some() && a.take_outcome().is_some());
    }
    // Real messages with random bytes overwritten, anywhere in a session.
    for round in 0..40u64 {
        let (la, lb) = links(&c, 1024, 17);
        let (mut a, mut b) = sessions(&la, &lb, "f", 1 << 15, 0.02, 17);
        let mut n = 0u64;
        let target = round % 12;
        let (ra, rb) = run_pair_with(&mut a, &mut b, |_, mut m| {
            if n == target {
                for _ in 0..4 {
                    let i = (rng.next_u64().unwrap() as usize) % m.len();
                    m[i] = rng.next_u64().unwrap() as u8;
                }
            }
            n += 1;
            vec![m]
        });
        // Whatever happened, no key differs between the sides.
        if let (Ok(a), Ok(b)) = (&ra, &rb)
            && let (Some(x), Some(y)) = (&a.key, &b.key)
        {
            assert_eq!(x, y);
        }
    }
}

#[test]
fn messages_after_the_end_are_refused() {
    let c = cfg(1 << 15, 1 << 11, 1 << 13);
    let (la, lb) = links(&c, 1024, 18);
    let (mut a, mut b) = sessions(&la, &lb, "e", 1 << 15, 0.02, 18);
    let hello = a.poll_transmit().unwrap();
    let sample = a.poll_transmit().unwrap();
    b.handle(&hello).unwrap();
    b.handle(&sample).unwrap();
    // Bob now waits for Cascade answers; a hello again is out of sequence.
    assert!(matches!(
        b.handle(&hello),
        Err(SessionError::Sequence {
            expected: 2,
            got: 0
        })
    ));
    assert!(matches!(b.handle(&sample), Err(SessionError::Ended)));
    // Envelope of the right number but the wrong kind.
    let env = Envelope {
        block_id: "e".into(),
        seq: 0,
        body: Body::Tag { tag: 1 },
    };
    let (_, mut b2) = sessions(&la, &lb, "e", 1 << 15, 0.02, 19);
    assert!(matches!(
        b2.handle(&env.encode().unwrap()),
        Err(SessionError::Unexpected { got: "Tag", .. })
    ));
    assert!(
        b2.is_finished() && b2.poll_transmit().is_some(),
        "Bob ends and tells Alice"
    );
}

#[test]
fn frames_round_trip_and_bad_lengths_are_refused() {
    use super::drive::{MAX_FRAME_BYTES, read_frame, write_frame};
    let mut buf = Vec::new();
    write_frame(&mut buf, b"abc").unwrap();
    write_frame(&mut buf, b"").unwrap();
    let mut r = &buf[..];
    assert_eq!(read_frame(&mut r).unwrap().unwrap(), b"abc");
    assert_eq!(read_frame(&mut r).unwrap().unwrap(), b"");
    assert!(read_frame(&mut r).unwrap().is_none());
    // A cut frame and an over-long one are errors, not hangs or huge allocations.
    assert!(read_frame(&mut &buf[..5]).is_err());
    assert!(read_frame(&mut &buf[..2]).is_err());
    let huge = ((MAX_FRAME_BYTES + 1) as u32).to_le_bytes();
    assert!(read_frame(&mut &huge[..]).is_err());
}

#[test]
fn a_block_bob_has_no_raw_key_for_ends_on_both_sides_at_once() {
    use super::drive::{Role, run_side};
    use std::sync::mpsc;
    let c = cfg(1 << 15, 1 << 11, 1 << 13);
    let (la, lb) = links(&c, 4096, 20);
    let pairs: Vec<_> = (0..2)
        .map(|i| simulate(1 << 15, 0.02, ErrorModel::IidExact, 200 + i).unwrap())
        .collect();
    let mut bob_raw: std::collections::HashMap<String, crate::BitBlock> =
        std::collections::HashMap::from([("have".to_owned(), pairs[0].bob.clone())]);
    let (to_bob, bob_rx) = mpsc::channel::<Vec<u8>>();
    let (to_alice, alice_rx) = mpsc::channel::<Vec<u8>>();
    // A long timeout: the refused block must end by Bob's abort, not by the clock.
    let side = SideConfig {
        in_flight: 2,
        block_timeout: Duration::from_secs(600),
    };
    let bob = std::thread::spawn(move || {
        let mut raw_for = |id: &str| bob_raw.remove(id);
        let mut results = Vec::new();
        let role = Role::Bob {
            link: lb,
            raw_for: &mut raw_for,
        };
        let mut send = |m| to_alice.send(m).map_err(std::io::Error::other);
        run_side(role, &bob_rx, &mut send, side, &mut |id, r| {
            results.push((id.to_owned(), r.is_ok()))
        })
        .unwrap();
        results
    });
    let mut blocks = vec![
        ("have".to_owned(), pairs[0].alice.clone()),
        ("missing".to_owned(), pairs[1].alice.clone()),
    ]
    .into_iter();
    let mut alice = Vec::new();
    let role = Role::Alice {
        link: la,
        blocks: &mut blocks,
    };
    let mut send = |m| to_bob.send(m).map_err(std::io::Error::other);
    run_side(role, &alice_rx, &mut send, side, &mut |id, r| {
        alice.push((id.to_owned(), r))
    })
    .unwrap();
    drop(to_bob);
    let mut bob = bob.join().unwrap();
    alice.sort_by(|a, b| a.0.cmp(&b.0));
    bob.sort();
    assert_eq!(alice[0].0, "have");
    assert!(alice[0].1.as_ref().is_ok_and(|o| o.key.is_some()));
    assert_eq!(alice[1].0, "missing");
    assert!(
        matches!(&alice[1].1, Err(SessionError::PeerAborted(why)) if why.contains("no raw block")),
        "{:?}",
        alice[1].1
    );
    assert_eq!(bob, vec![("have".into(), true), ("missing".into(), false)]);
}

#[test]
fn a_source_that_says_later_is_asked_again_and_other_messages_reach_the_caller_in_order() {
    use super::drive::{BlockResult, BlockSource, NextBlock, Role, SideEvents, run_side_with};
    use std::sync::mpsc;
    let c = cfg(1 << 15, 1 << 11, 1 << 13);
    let (la, lb) = links(&c, 4096, 21);
    let pair = simulate(1 << 15, 0.02, ErrorModel::IidExact, 300).unwrap();
    let (to_bob, bob_rx) = mpsc::channel::<Vec<u8>>();
    let (to_alice, alice_rx) = mpsc::channel::<Vec<u8>>();
    let side = SideConfig {
        in_flight: 1,
        block_timeout: Duration::from_secs(600),
    };
    /// Bob's events: the non-session messages, and the block IDs seen before each.
    #[derive(Default)]
    struct BobEvents {
        ended: Vec<String>,
        other: Vec<(Vec<u8>, usize)>,
    }
    impl SideEvents for BobEvents {
        fn on_block(&mut self, id: &str, _: BlockResult) {
            self.ended.push(id.to_owned());
        }
        fn on_other(&mut self, m: Vec<u8>) {
            self.other.push((m, self.ended.len()));
        }
    }
    let bob_bits = pair.bob.clone();
    let bob = std::thread::spawn(move || {
        let mut raw = Some(bob_bits);
        let mut raw_for = |_: &str| raw.take();
        let role = Role::Bob {
            link: lb,
            raw_for: &mut raw_for,
        };
        let mut send = |m| to_alice.send(m).map_err(std::io::Error::other);
        let mut events = BobEvents::default();
        run_side_with(role, &bob_rx, &mut send, side, &mut events).unwrap();
        events
    });
    /// Says `Later` three times, then yields its block, then is done.
    struct Slow {
        later: u32,
        block: Option<(String, crate::BitBlock)>,
    }
    impl BlockSource for Slow {
        fn next_block(&mut self) -> NextBlock {
            if self.later > 0 {
                self.later -= 1;
                return NextBlock::Later;
            }
            match self.block.take() {
                Some((id, raw)) => NextBlock::Ready(id, raw),
                None => NextBlock::Done,
            }
        }
    }
    let mut source = Slow {
        later: 3,
        block: Some(("b0".into(), pair.alice.clone())),
    };
    // A message of the caller's own protocol, before any session message.
    to_bob.send(vec![0xC7, 1, 2]).unwrap();
    let mut alice = Vec::new();
    let role = Role::Alice {
        link: la,
        blocks: &mut source,
    };
    let mut send = |m| to_bob.send(m).map_err(std::io::Error::other);
    super::drive::run_side(role, &alice_rx, &mut send, side, &mut |id, r| {
        alice.push((id.to_owned(), r.map(|o| o.key.is_some())))
    })
    .unwrap();
    // And one after the block ended on both sides.
    to_bob.send(vec![0xC7, 3]).unwrap();
    drop(to_bob);
    let bob = bob.join().unwrap();
    assert_eq!(source.later, 0);
    assert_eq!(alice.len(), 1);
    assert_eq!(alice[0].0, "b0");
    assert_eq!(alice[0].1, Ok(true));
    assert_eq!(bob.ended, vec!["b0".to_owned()]);
    assert_eq!(bob.other, vec![(vec![0xC7, 1, 2], 0), (vec![0xC7, 3], 1)]);
}
