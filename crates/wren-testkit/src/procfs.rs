//! What /proc says about a process: resident memory and CPU time.

/// Resident set size in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    kib_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// Proportional set size in KiB: resident pages, each shared page divided
/// by the number of processes mapping it (the binary's pages are shared
/// by the signaling node and its SFUs).
pub fn pss_kib(pid: u32) -> Option<u64> {
    kib_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

fn kib_field(path: &str, name: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(name))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// CPU seconds used so far, to the nanosecond where the kernel says so.
///
/// `/proc/PID/stat` counts in clock ticks of 10 ms: a light load measured
/// over a second or two (a bench scenario in a test) can read as no CPU at
/// all. The scheduler's own sum of run time, per thread in
/// `/proc/PID/task/*/schedstat`, is in nanoseconds. It leaves out threads
/// that have ended, which is fine for the processes measured here (wren's
/// SFUs keep their threads for life). Kernels without it get the ticks.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    run_time_ns(pid)
        .map(|ns| ns as f64 / 1e9)
        .or_else(|| tick_seconds(pid))
}

fn run_time_ns(pid: u32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/schedstat")).ok()?;
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    // A thread that ends while this reads is left out, not an error.
    let ns = tasks.filter_map(|task| {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        stat.split_whitespace().next()?.parse::<u64>().ok()
    });
    Some(ns.sum())
}

/// User + system CPU seconds in clock ticks.
fn tick_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // Linux reports clock ticks of USER_HZ, 100 on every architecture.
    Some((utime + stime) / 100.0)
}

/// Child processes of `pid`, whichever of its threads started them.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn cpu_time_is_finer_than_a_clock_tick() {
        let pid = std::process::id();
        let before = cpu_seconds(pid).unwrap();
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(start.elapsed());
        }
        let after = cpu_seconds(pid).unwrap();
        assert!(after > before, "{before} -> {after}");
        // Ticks would give whole hundredths of a second.
        let ticks = after * 100.0;
        assert!((ticks - ticks.round()).abs() > 1e-6, "{after}");
    }
}
