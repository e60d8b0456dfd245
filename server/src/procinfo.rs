//! Facts about this build and process for `/metrics` and the dashboard: version and git
//! revision (`qkd_build_info`), and the standard `process_*` metrics read from `/proc/self`
//! (Linux; elsewhere they are left out).

use std::fmt::Write as _;

/// The crate version.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git revision the binary was built from (`build.rs`; "unknown" outside a checkout).
pub(crate) const GIT_REVISION: &str = env!("QKD_GIT_REVISION");

/// Clock ticks per second of `/proc` times (`USER_HZ`: 100 on every Linux architecture's ABI).
const USER_HZ: f64 = 100.0;

/// What `/proc/self` tells about the process (each `None` when it could not be read).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct ProcStats {
    /// Resident set size in bytes.
    pub(crate) resident_bytes: Option<u64>,
    /// User plus system CPU time in seconds.
    pub(crate) cpu_seconds: Option<f64>,
    /// Open file descriptors.
    pub(crate) open_fds: Option<u64>,
    /// Start time, Unix seconds.
    pub(crate) start_time_seconds: Option<f64>,
}

/// `VmRSS` of `/proc/self/status`, in bytes.
fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut it = line["VmRSS:".len()..].split_whitespace();
    let n: u64 = it.next()?.parse().ok()?;
    (it.next()? == "kB").then_some(n * 1024)
}

/// (CPU seconds, start time in ticks after boot) from `/proc/self/stat`.
fn parse_stat(stat: &str) -> Option<(f64, u64)> {
    // The command name (field 2) is in parentheses and may hold spaces and ')': the fields
    // after the last ')' start with field 3 (state).
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { f.get(n - 3)?.parse().ok() };
    let (utime, stime, start) = (field(14)?, field(15)?, field(22)?);
    Some(((utime + stime) as f64 / USER_HZ, start))
}

/// `btime` of `/proc/stat`: boot time, Unix seconds.
fn parse_btime(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// Reads `/proc/self`.
pub(crate) fn read() -> ProcStats {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let stat = read("/proc/self/stat").and_then(|s| parse_stat(&s));
    let btime = read("/proc/stat").and_then(|s| parse_btime(&s));
    ProcStats {
        resident_bytes: read("/proc/self/status").and_then(|s| parse_rss(&s)),
        cpu_seconds: stat.map(|(cpu, _)| cpu),
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64),
        start_time_seconds: stat
            .zip(btime)
            .map(|((_, ticks), boot)| boot as f64 + ticks as f64 / USER_HZ),
    }
}

/// `qkd_build_info`, `qkd_kme_uptime_seconds` and the `process_*` families.
pub(crate) fn prometheus(kme: &str, uptime_seconds: f64) -> String {
    let mut s = String::new();
    let mut family = |name: &str, kind: &str, help: &str, sample: String| {
        let _ = writeln!(s, "# HELP {name} {help}");
        let _ = writeln!(s, "# TYPE {name} {kind}");
        let _ = writeln!(s, "{sample}");
    };
    family(
        "qkd_build_info",
        "gauge",
        "Version and git revision of the running binary (always 1).",
        format!("qkd_build_info{{version=\"{VERSION}\",git=\"{GIT_REVISION}\"}} 1"),
    );
    family(
        "qkd_kme_uptime_seconds",
        "gauge",
        "Seconds since this KME started.",
        format!("qkd_kme_uptime_seconds{{kme=\"{kme}\"}} {uptime_seconds}"),
    );
    let p = read();
    if let Some(v) = p.resident_bytes {
        family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            format!("process_resident_memory_bytes {v}"),
        );
    }
    if let Some(v) = p.cpu_seconds {
        family(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            format!("process_cpu_seconds_total {v}"),
        );
    }
    if let Some(v) = p.open_fds {
        family(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            format!("process_open_fds {v}"),
        );
    }
    if let Some(v) = p.start_time_seconds {
        family(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            format!("process_start_time_seconds {v}"),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let status = "Name:\tqkd\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t4\n";
        assert_eq!(parse_rss(status), Some(1234 * 1024));
        assert_eq!(parse_rss("VmRSS: 12 pages\n"), None);
        // A command name with spaces and a ')' of its own.
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 \
                    4 0 123456 1000000 300 18446744073709551615";
        let (cpu, start) = parse_stat(stat).unwrap();
        assert_eq!(cpu, 3.0);
        assert_eq!(start, 123456);
        assert_eq!(parse_stat("4242 (x) S 1 2"), None);
        assert_eq!(
            parse_btime("cpu 1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1700000000)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_on_linux() {
        let p = read();
        assert!(p.resident_bytes.unwrap() > 1 << 20, "{p:?}");
        assert!(p.open_fds.unwrap() >= 3, "{p:?}");
        assert!(p.cpu_seconds.unwrap() >= 0.0);
        let now = crate::kme::now_ms() as f64 / 1000.0;
        let start = p.start_time_seconds.unwrap();
        assert!(
            start <= now + 1.0 && start > now - 86400.0 * 365.0,
            "{start} vs {now}"
        );
    }
}
