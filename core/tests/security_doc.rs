//! docs/security.md and the code agree: every number in its "Worked examples" tables is
//! recomputed here, and each table row must appear in the file exactly as formatted below.

use qkd_core::amplify::{Bb84Tlgr2012, FiniteKeyInput, QberLadder, SecretLengthModel};

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/security.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// Asserts that `| label | value |` is a row of the document.
fn row(doc: &str, label: &str, value: String) {
    let line = format!("| {label} | {value} |");
    assert!(
        doc.lines().any(|l| l.trim() == line),
        "docs/security.md lacks the row `{line}` (the code computes this value)"
    );
}

fn tlgr(qber: f64, choices: u32) -> qkd_core::amplify::SecretLength {
    Bb84Tlgr2012::default()
        .secret_length(&FiniteKeyInput {
            key_bits: 1_000_000,
            sample_bits: 100_000,
            qber,
            leak_ec_bits: 150_000,
            confirm_tag_bits: 50,
            length_choices: choices,
            eps_sec: 1e-10,
            eps_cor: 1e-15,
        })
        .unwrap()
}

#[test]
fn w1_tlgr_reference_case() {
    let d = doc();
    let r = tlgr(2000.0 / 100_000.0, 1);
    row(&d, "W1 eps", format!("{:.4e}", r.eps_smooth));
    row(&d, "W1 mu", format!("{:.7}", r.qber_deviation));
    row(&d, "W1 Q_tol + mu", format!("{:.7}", r.phase_error_bound));
    row(&d, "W1 entropy n (1 - h)", format!("{:.2}", r.entropy_bits));
    row(
        &d,
        "W1 confirmation max(t, log2(2/eps_cor))",
        format!("{:.2}", r.confirm_cost_bits),
    );
    row(
        &d,
        "W1 secrecy 2 log2(L/eps_sec)",
        format!("{:.2}", r.secrecy_cost_bits),
    );
    row(&d, "W1 secret bits", r.bits.to_string());
    // The formula this release replaced: mu with ln(2/eps_sec), the 50-bit tag in leak_EC and
    // the paper's log2(2/(eps_sec^2 eps_cor)).
    let (n, k): (f64, f64) = (1e6, 1e5);
    let mu = ((n + k) / (n * k) * ((k + 1.0) / k) * (2.0f64 / 1e-10).ln()).sqrt();
    let old = n * (1.0 - qkd_core::amplify::binary_entropy(0.02 + mu))
        - 150_050.0
        - (2.0f64 / (1e-20 * 1e-15)).log2();
    row(
        &d,
        "W1 before this release (ln(2/eps_sec), tag in leak_EC)",
        (old.floor() as u64).to_string(),
    );
}

#[test]
fn w2_the_same_block_on_the_default_ladder() {
    let d = doc();
    let ladder = QberLadder::default_up_to(0.11).unwrap();
    let rung = ladder.rung_for(0.02).unwrap();
    let r = tlgr(rung, ladder.len());
    row(&d, "W2 rungs", ladder.len().to_string());
    row(&d, "W2 Q_tol", format!("{rung:.7}"));
    row(&d, "W2 mu", format!("{:.7}", r.qber_deviation));
    row(
        &d,
        "W2 secrecy 2 log2(L/eps_sec)",
        format!("{:.2}", r.secrecy_cost_bits),
    );
    row(&d, "W2 secret bits", r.bits.to_string());
}

#[test]
fn w3_confirmation_tags() {
    use qkd_core::confirm::{collision_bound, tag_bits_for};
    let d = doc();
    for log in [18, 22, 26, 30] {
        let t = tag_bits_for(1e-15, 1 << log).unwrap();
        row(&d, &format!("W3 tag bits, 2^{log}-bit key"), t.to_string());
    }
    row(
        &d,
        "W3 collision bound, 2^30-bit key, t = 50",
        format!("{:.4e}", collision_bound(1 << 30, 50)),
    );
}

#[test]
fn w4_lim2014_hand_worked_case() {
    use qkd_core::amplify::{DecoyCounts, DecoyStatistics, Lim2014};
    let d = doc();
    let stats = DecoyStatistics {
        intensities: [0.5, 0.2, 2e-4],
        probabilities: [0.6, 0.2, 0.2],
        x: DecoyCounts {
            detections: [19_000_000, 2_500_000, 4_000],
            errors: [100_000, 13_000, 800],
        },
        z: DecoyCounts {
            detections: [1_200_000, 160_000, 250],
            errors: [6_000, 850, 50],
        },
    };
    let b = Lim2014
        .secret_length(&stats.into_input(1_200_000, 1e-10, 1e-15))
        .unwrap();
    row(&d, "W4 tau_0", format!("{:.7}", b.tau_0));
    row(&d, "W4 tau_1", format!("{:.7}", b.tau_1));
    row(&d, "W4 s_X0", format!("{:.2}", b.s_x0));
    row(&d, "W4 s_X1", format!("{:.2}", b.s_x1));
    row(&d, "W4 s_Z1", format!("{:.2}", b.s_z1));
    row(&d, "W4 v_Z1", format!("{:.2}", b.v_z1));
    row(
        &d,
        "W4 gamma",
        format!("{:.7}", b.gamma.unwrap_or(f64::NAN)),
    );
    row(&d, "W4 phi_X", format!("{:.7}", b.phi_x));
    row(
        &d,
        "W4 secrecy 6 log2(21/eps_sec)",
        format!("{:.2}", b.pa_cost_bits),
    );
    row(&d, "W4 secret bits", b.bits.to_string());
}

#[test]
fn w5_authentication() {
    use qkd_core::auth::{PAD_BITS, forgery_bound};
    let d = doc();
    row(
        &d,
        "W5 forgery bound per tag, 1 MiB transcript",
        format!("{:.4e}", forgery_bound(1 << 20)),
    );
    row(
        &d,
        "W5 pool bits per block (two directions)",
        (2 * PAD_BITS).to_string(),
    );
    row(
        &d,
        "W5 share of the key of a default 2^20-bit block at 2 % (376832 bits)",
        format!("{:.3} %", 100.0 * (2 * PAD_BITS) as f64 / 376_832.0),
    );
}
