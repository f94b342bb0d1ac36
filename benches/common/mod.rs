//! Measuring code shared by the benches: the thread's CPU time and a timed loop around the work.

use std::time::{Duration, Instant};

/// CPU time this thread has run (user + system), from `/proc/thread-self/stat`; `None` off Linux.
/// Used so that figures stay single-core figures on a busy machine (10 ms resolution, hence long runs).
pub fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at field 3; utime and stime are 14 and 15.
    let after_name = stat.rsplit_once(')')?.1;
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    // USER_HZ is 100 on every Linux platform Relais targets.
    Some(Duration::from_millis((user + system) * 10))
}

/// What a timed loop measured.
pub struct Measured {
    /// How many times the work ran (warm-up excluded).
    pub iterations: u64,
    /// Wall-clock time of those runs.
    pub wall: Duration,
    /// The thread's CPU time of those runs, when known and not zero.
    pub cpu: Option<Duration>,
}

impl Measured {
    /// Nanoseconds per run for `time` (the wall or the CPU time).
    pub fn ns_per_run(&self, time: Duration) -> f64 {
        time.as_nanos() as f64 / self.iterations as f64
    }
}

/// Runs `work` `warm_up` times, then in batches of `batch` until about `budget` has passed.
pub fn run(warm_up: u32, batch: u64, budget: Duration, mut work: impl FnMut()) -> Measured {
    for _ in 0..warm_up {
        work();
    }
    let mut iterations: u64 = 0;
    let cpu_started = thread_cpu_time();
    let started = Instant::now();
    while started.elapsed() < budget {
        for _ in 0..batch {
            work();
        }
        iterations += batch;
    }
    let wall = started.elapsed();
    let cpu = cpu_started.zip(thread_cpu_time()).map(|(b, a)| a.saturating_sub(b)).filter(|c| !c.is_zero());
    Measured { iterations, wall, cpu }
}
