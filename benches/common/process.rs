//! What the kernel says about a process and the machine (`/proc`), for the benches that drive the real
//! `relais` binary: CPU time, bytes written to storage, load average.

use std::time::Duration;

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat` (10 ms resolution).
pub fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3; utime and stime are 14 and 15.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    // USER_HZ is 100 on every Linux platform Relais targets.
    Some(Duration::from_millis((user + system) * 10))
}

/// Bytes a process has caused to be written to storage so far (`write_bytes` of `/proc/<pid>/io`).
pub fn written_bytes(pid: &str) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines().find_map(|line| line.strip_prefix("write_bytes:")).and_then(|v| v.trim().parse().ok())
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` writes them.
pub fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}
