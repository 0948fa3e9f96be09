//! Process measurements for benchmarks: peak resident memory from `/proc`.

/// Peak resident set size of this process in bytes (`VmHWM`), if the kernel reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    proc_status_kib("VmHWM:").map(|kib| kib * 1024)
}

/// Current resident set size in bytes (`VmRSS`).
pub fn rss_bytes() -> Option<u64> {
    proc_status_kib("VmRSS:").map(|kib| kib * 1024)
}

/// Resets the peak so the next [`peak_rss_bytes`] covers only what follows.
pub fn reset_peak_rss() {
    // Writing 5 to clear_refs resets VmHWM to the current RSS (Linux ≥ 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// CPU time (user + system, every thread) process `pid` has used so far, in seconds, from
/// `/proc/<pid>/stat`; `None` where that cannot be read.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces:
    // the 14th and 15th of the line (utime, stime) are the 12th and 13th of these.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf only reads a constant of the system.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks_per_second > 0).then(|| (user + system) as f64 / ticks_per_second as f64)
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_seconds_counts_the_work_a_process_does() {
        let pid = std::process::id();
        let before = cpu_seconds(pid).expect("this process's /proc/<pid>/stat is readable");
        // Spin until 100 ms of CPU show (clock ticks are 10 ms), however busy the machine is,
        // giving up after 20 s of wall time.
        let started = std::time::Instant::now();
        let mut spin = 0u64;
        let mut used = 0.0;
        while used < 0.1 && started.elapsed() < std::time::Duration::from_secs(20) {
            for _ in 0..1_000_000 {
                spin = std::hint::black_box(spin.wrapping_mul(31).wrapping_add(7));
            }
            used = cpu_seconds(pid).expect("still readable") - before;
        }
        assert!(used >= 0.1, "spinning for 20 s showed {used:.3} s of CPU");
        assert_eq!(cpu_seconds(u32::MAX), None, "no such process");
    }
}
