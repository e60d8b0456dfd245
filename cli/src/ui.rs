//! Terminal output shared by the subcommands: progress bars on stderr, tables on stdout.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar on stderr for `len` steps (hidden when stderr is not a terminal).
/// With `bits_per_step` (raw bits per step) the bar shows their rate, else steps per second;
/// and the time left.
pub fn progress(len: u64, what: &str, bits_per_step: Option<usize>) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "{msg:>12} [{bar:40}] {pos}/{len} {bit_rate} {elapsed_precise} ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .with_key(
        "bit_rate",
        move |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = match bits_per_step {
                Some(bits) => w.write_str(&rate(s.per_sec() * bits as f64)),
                None => write!(w, "{:.2}/s", s.per_sec()),
            };
        },
    )
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar
}

/// A two-column table of (quantity, value) rows.
pub fn table(header: [&str; 2], rows: &[(String, String)]) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED).set_header(header);
    for (k, v) in rows {
        t.add_row([k, v]);
    }
    t
}

/// `x` as a percentage with `digits` decimals.
pub fn pct(x: f64, digits: usize) -> String {
    format!("{:.*} %", digits, 100.0 * x)
}

/// A rate in bits per second with an SI prefix.
pub fn rate(bits_per_second: f64) -> String {
    let (v, unit) = if bits_per_second >= 1e9 {
        (bits_per_second / 1e9, "Gbit/s")
    } else if bits_per_second >= 1e6 {
        (bits_per_second / 1e6, "Mbit/s")
    } else if bits_per_second >= 1e3 {
        (bits_per_second / 1e3, "kbit/s")
    } else {
        (bits_per_second, "bit/s")
    };
    format!("{v:.2} {unit}")
}

/// Writes `s` and a newline to stdout; a closed pipe (`qkd ... | head`) ends the program
/// quietly in `main` instead of panicking.
pub fn print(s: impl std::fmt::Display) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{s}")?;
    out.flush()?;
    Ok(())
}

/// True when `e` is a broken pipe on stdout.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
