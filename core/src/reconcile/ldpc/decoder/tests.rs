use super::reference::sum_product;
use super::*;
use crate::reconcile::ldpc::codes::builtin;
use crate::reconcile::testkit::{error_count, noisy_pair};

/// Alice's word, its syndrome and Bob's LLRs at `qber`, seeded.
fn frame(graph: &Graph, qber: f64, seed: u64) -> (BitBlock, BitBlock, Vec<i8>) {
    let (x, y) = noisy_pair(graph.n(), error_count(graph.n(), qber), seed);
    let s = graph.syndrome(&x).unwrap();
    let q = channel_llr(qber);
    let llr = y.iter().map(|b| if b { -q } else { q }).collect();
    (x, s, llr)
}

fn frames<'a>(inputs: &'a [(BitBlock, BitBlock, Vec<i8>)]) -> Vec<Frame<'a>> {
    inputs
        .iter()
        .map(|(_, s, l)| Frame {
            llr: l,
            syndrome: s,
        })
        .collect()
}

#[test]
fn syndrome_is_h_times_x() {
    // Every lift: circulants of 24 bits straddle words, the others fill whole words.
    for (rows, z) in [(40, 24), (13, 64), (64, 256), (10, 512)] {
        let code = builtin(rows, z).unwrap();
        let (x, _) = noisy_pair(code.graph.n(), 0, u64::from(z));
        let s = code.graph.syndrome(&x).unwrap();
        for (c, vars) in code.graph.checks().enumerate() {
            let p = vars.iter().fold(false, |p, &v| p ^ x.get(v).unwrap());
            assert_eq!(s.get(c).unwrap(), p, "rows {rows} z {z} check {c}");
        }
    }
    assert!(
        builtin(40, 24)
            .unwrap()
            .graph
            .syndrome(&BitBlock::zeros(5))
            .is_err()
    );
}

#[test]
fn every_backend_decodes_bit_for_bit_alike() {
    // Rate 0.8 at 2.3 % (f = 1.26): near the code's limit, so some frames fail and iteration counts vary.
    let code = builtin(40, 64).unwrap();
    let inputs: Vec<_> = (0..70)
        .map(|i| frame(&code.graph, 0.023, 100 + i))
        .collect();
    let fs = frames(&inputs);
    let params = DecoderParams::default();
    let portable = decode(&code.graph, params, Backend::Portable, &fs).unwrap();
    let ok = portable.iter().filter(|d| d.word.is_some()).count();
    assert!(
        ok > 0 && ok < fs.len(),
        "{ok} of {} decoded: not a mixed batch",
        fs.len()
    );
    for (d, (x, _, _)) in portable.iter().zip(&inputs) {
        if let Some(w) = &d.word {
            assert_eq!(w, x);
        }
    }
    for backend in [Backend::Avx2, Backend::Avx512] {
        if !backend.is_supported() {
            eprintln!("{} not supported here: skipped", backend.name());
            continue;
        }
        let got = decode(&code.graph, params, backend, &fs).unwrap();
        assert_eq!(got, portable, "{}", backend.name());
    }
}

#[test]
fn a_frame_decodes_after_others_as_it_does_alone() {
    // 40 frames on one thread, which keeps its workspace from frame to frame, mixed with some
    // that fail at the limit; then each frame alone.
    let code = builtin(40, 64).unwrap();
    let inputs: Vec<_> = (0..40)
        .map(|i| frame(&code.graph, 0.023, 300 + i))
        .collect();
    let fs = frames(&inputs);
    let params = DecoderParams::default();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let together = pool.install(|| decode(&code.graph, params, Backend::best(), &fs).unwrap());
    let failed = together.iter().filter(|d| d.word.is_none()).count();
    assert!(failed > 0 && failed < fs.len(), "{failed} of 40 failed");
    for (i, d) in together.iter().enumerate() {
        let alone = decode(&code.graph, params, Backend::Portable, &fs[i..=i]).unwrap();
        assert_eq!(alone, vec![d.clone()], "frame {i}");
    }
}

#[test]
fn stalled_frames_are_given_up_early_only_when_asked() {
    // Rate 0.8 at 4 % (f = 0.83): below capacity, so no frame can decode.
    let code = builtin(40, 64).unwrap();
    let hopeless: Vec<_> = (0..8).map(|i| frame(&code.graph, 0.04, 500 + i)).collect();
    let easy: Vec<_> = (0..8).map(|i| frame(&code.graph, 0.012, 600 + i)).collect();
    let full = DecoderParams::default();
    let early = DecoderParams {
        stop_stalled: true,
        ..full
    };
    let run = |p, inputs| decode(&code.graph, p, Backend::best(), &frames(inputs)).unwrap();
    for d in run(full, &hopeless) {
        assert_eq!((d.word, d.iterations), (None, full.max_iterations));
    }
    for d in run(early, &hopeless) {
        assert!(
            d.word.is_none() && d.iterations < full.max_iterations / 2,
            "{d:?}"
        );
    }
    // Frames that decode are not touched.
    assert_eq!(run(early, &easy), run(full, &easy));
    assert!(run(early, &easy).iter().all(|d| d.word.is_some()));
}

#[test]
fn min_sum_agrees_with_floating_point_sum_product() {
    let code = builtin(40, 24).unwrap();
    let graph = &code.graph;
    let params = DecoderParams::default();
    // An easy QBER (f = 1.41): both decode every frame, to Alice's word; then f = 1.19.
    for (qber, expect_all) in [(0.02, true), (0.025, false)] {
        let inputs: Vec<_> = (0..12).map(|i| frame(graph, qber, 7 + i)).collect();
        let quantized = decode(graph, params, Backend::best(), &frames(&inputs)).unwrap();
        let (mut both, mut spa_only, mut ms_only) = (0, 0, 0);
        for ((x, s, llr), q) in inputs.iter().zip(&quantized) {
            let real: Vec<f64> = llr.iter().map(|&l| f64::from(l) / LLR_SCALE).collect();
            let spa = sum_product(graph, &real, s, 100);
            if let Some((w, _)) = &spa {
                assert_eq!(w, x, "sum-product decodes to Alice's word");
            }
            match (&spa, &q.word) {
                (Some(_), Some(w)) => {
                    assert_eq!(w, x);
                    both += 1;
                }
                (Some(_), None) => spa_only += 1,
                (None, Some(_)) => ms_only += 1,
                (None, None) => {}
            }
        }
        if expect_all {
            assert_eq!(both, inputs.len(), "qber {qber}");
        } else {
            // Near the limit: some frames decode and some do not, so the comparison has
            // something to compare.
            assert!(
                both + spa_only > 0 && both < inputs.len(),
                "qber {qber}: {both} {spa_only}"
            );
        }
        // Near the limit, min-sum may lose a little to sum-product, not the other way round
        // by much.
        assert!(
            ms_only <= spa_only + 2,
            "qber {qber}: {ms_only} vs {spa_only}"
        );
    }
}

#[test]
fn known_and_punctured_variables() {
    let code = builtin(50, 24).unwrap();
    let graph = &code.graph;
    let (x, s, mut llr) = frame(graph, 0.01, 3);
    // No noise on the known bits, nothing on the punctured ones.
    for v in (0..graph.n()).step_by(17) {
        llr[v] = if x.get(v).unwrap() { -KNOWN } else { KNOWN };
    }
    for v in (5..graph.n()).step_by(41) {
        llr[v] = 0;
    }
    let d = decode(
        graph,
        DecoderParams::default(),
        Backend::best(),
        &[Frame {
            llr: &llr,
            syndrome: &s,
        }],
    )
    .unwrap();
    assert_eq!(d[0].word.as_ref(), Some(&x));
    // A noiseless frame matches after one iteration.
    let exact: Vec<i8> = x.iter().map(|b| if b { -20 } else { 20 }).collect();
    let d = decode(
        graph,
        DecoderParams::default(),
        Backend::Portable,
        &[Frame {
            llr: &exact,
            syndrome: &s,
        }],
    )
    .unwrap();
    assert_eq!((d[0].word.as_ref(), d[0].iterations), (Some(&x), 1));
}

#[test]
fn bad_inputs_are_errors() {
    let code = builtin(50, 24).unwrap();
    let s = BitBlock::zeros(code.graph.m());
    let short = vec![0i8; 10];
    let f = [Frame {
        llr: &short,
        syndrome: &s,
    }];
    assert!(decode(&code.graph, DecoderParams::default(), Backend::Portable, &f).is_err());
    let params = DecoderParams {
        scaling: Scaling { a: 0, b: 0 },
        ..DecoderParams::default()
    };
    assert!(decode(&code.graph, params, Backend::Portable, &[]).is_err());
    // Circulants of 40 bits: more than the 32 portable lanes and not a multiple of them.
    let odd = BaseMatrix::new(40, 1, vec![vec![(0, 3)], vec![(0, 7)]]).unwrap();
    let odd = Graph::new(&odd).unwrap();
    let (llr, s) = (vec![1i8; 80], BitBlock::zeros(40));
    let f = [Frame {
        llr: &llr,
        syndrome: &s,
    }];
    let err = decode(&odd, DecoderParams::default(), Backend::Portable, &f).unwrap_err();
    assert!(err.to_string().contains("multiple of 32"), "{err}");
    assert!((Scaling::THIRTEEN_SIXTEENTHS.alpha() - 0.8125).abs() < 1e-12);
    assert!((Scaling::TWENTY_SEVEN_THIRTY_SECONDS.alpha() - 0.84375).abs() < 1e-12);
    assert_eq!(channel_llr(0.02), 16);
    assert!((Scaling::THREE_QUARTERS.alpha() - 0.75).abs() < 1e-12);
}

#[test]
fn self_correction_decodes_frames_plain_min_sum_cannot() {
    // Rate 0.8 near its threshold: self-corrected min-sum decodes more frames, and every
    // frame it decodes is Alice's.
    let code = builtin(40, 64).unwrap();
    let inputs: Vec<_> = (0..40)
        .map(|i| frame(&code.graph, 0.026, 700 + i))
        .collect();
    let fs = frames(&inputs);
    let corrected = DecoderParams::default();
    let plain = DecoderParams {
        self_correct: false,
        ..corrected
    };
    let count = |p| {
        let out = decode(&code.graph, p, Backend::best(), &fs).unwrap();
        for (d, (x, _, _)) in out.iter().zip(&inputs) {
            assert!(d.word.as_ref().is_none_or(|w| w == x));
        }
        out.iter().filter(|d| d.word.is_some()).count()
    };
    let (with, without) = (count(corrected), count(plain));
    assert!(
        with > without && with < inputs.len(),
        "{with} vs {without} of 40"
    );
}
