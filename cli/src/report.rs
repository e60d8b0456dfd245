//! Tables for pipeline runs, shared by `qkd process` and `qkd demo`.

use qkd_core::pipeline::{BlockOutcome, BlockReport, Summary};

use crate::ui;

/// One row per block: QBER, efficiency, bits disclosed by Alice and Bob, round trips, final bits,
/// authentication key spent, outcome.
pub fn blocks_table(reports: &[BlockReport]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED)
        .set_header([
            "block",
            "QBER",
            "QBER bound",
            "f",
            "leak A+B",
            "round trips",
            "final bits",
            "auth bits",
            "outcome",
        ]);
    for r in reports {
        let outcome = match &r.outcome {
            BlockOutcome::Key => "key".to_owned(),
            BlockOutcome::Discarded(why) => format!("discarded: {why}"),
            BlockOutcome::Quarantined(why) => format!("quarantined: {why}"),
        };
        t.add_row([
            r.index.to_string(),
            ui::pct(r.qber, 3),
            ui::pct(r.qber_upper, 3),
            r.efficiency.map_or("-".into(), |f| format!("{f:.4}")),
            format!("{}+{}", r.leak_alice_bits, r.leak_bob_bits),
            r.round_trips.to_string(),
            r.final_bits.to_string(),
            r.auth_bits.to_string(),
            outcome,
        ]);
    }
    t
}

/// The run's totals and per-stage throughput (raw bits over the stage's summed time), and the
/// input bits left out when its end did not fill a block.
pub fn summary_table(s: &Summary, ignored_tail_bits: u64) -> comfy_table::Table {
    let per = |secs: f64| {
        if secs > 0.0 {
            ui::rate(s.raw_bits as f64 / secs)
        } else {
            "-".into()
        }
    };
    let mut rows = vec![
        (
            "blocks (key / discarded / quarantined)".into(),
            format!(
                "{} ({} / {} / {})",
                s.blocks, s.blocks_with_key, s.blocks_discarded, s.blocks_quarantined
            ),
        ),
        ("raw bits".into(), s.raw_bits.to_string()),
        ("mean QBER".into(), ui::pct(s.qber_mean, 3)),
        (
            "mean efficiency f".into(),
            s.efficiency_mean.map_or("-".into(), |f| format!("{f:.4}")),
        ),
        ("final bits".into(), s.final_bits.to_string()),
        ("secret fraction".into(), ui::pct(s.secret_fraction, 2)),
        (
            "authentication key spent".into(),
            format!(
                "{} bits ({} of the final bits)",
                s.auth_bits,
                ui::pct(s.auth_bits as f64 / s.final_bits.max(1) as f64, 3)
            ),
        ),
        ("stage throughput: estimate".into(), per(s.times.estimate)),
        ("stage throughput: reconcile".into(), per(s.times.reconcile)),
        ("stage throughput: confirm".into(), per(s.times.confirm)),
        (
            "stage throughput: amplify (both sides)".into(),
            per(s.times.amplify),
        ),
        ("stage throughput: entropy check".into(), per(s.times.check)),
        ("wall time".into(), format!("{:.3} s", s.wall_seconds)),
        (
            "end-to-end throughput (raw key)".into(),
            ui::rate(s.raw_bits_per_second),
        ),
    ];
    if ignored_tail_bits > 0 {
        rows.insert(
            2,
            (
                "ignored tail bits".into(),
                format!("{ignored_tail_bits} (the input's end, short of a whole block)"),
            ),
        );
    }
    ui::table(["quantity", "value"], &rows)
}
