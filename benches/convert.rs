//! Conversion throughput: the 1.6 KB PAM FR ADT^A01 → FHIR R4 message Bundle (JSON bytes), library call in a
//! loop on one core (no process start, mappings loaded once). Target: ≥ 50,000 bundles/s.
//!
//! Run: `cargo bench --bench convert`. One line per case: `<case>: <N> bundles/s (<ns> ns/bundle)`, measured
//! on the thread's CPU time (so the figure stays a single-core one on a busy machine), wall clock shown too.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use relais::mapping::{BundleKind, Mapper};

const ADT_A01_FR: &[u8] = include_bytes!("../test-messages/bench/adt_a01_fr_mappable.hl7");

/// CPU time this thread has run (user + system), from `/proc/thread-self/stat`; `None` off Linux.
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((user + system) * 10))
}

fn measure(case: &str, budget: Duration, mut work: impl FnMut() -> usize) {
    let mut bytes = 0usize;
    for _ in 0..2_000 {
        bytes = work();
    }
    let mut iterations: u64 = 0;
    let cpu_started = thread_cpu_time();
    let started = Instant::now();
    while started.elapsed() < budget {
        for _ in 0..500 {
            bytes = black_box(work());
        }
        iterations += 500;
    }
    let wall = started.elapsed();
    let cpu = cpu_started.zip(thread_cpu_time()).map(|(b, a)| a.saturating_sub(b)).filter(|c| !c.is_zero());
    let per = |t: Duration| t.as_nanos() as f64 / iterations as f64;
    let wall_ns = per(wall);
    match cpu {
        Some(cpu) => println!(
            "{case}: {:.0} bundles/s ({:.0} ns/bundle, {bytes} B) [CPU time; wall clock: {:.0} bundles/s]",
            1e9 / per(cpu),
            per(cpu),
            1e9 / wall_ns
        ),
        None => println!(
            "{case}: {:.0} bundles/s ({wall_ns:.0} ns/bundle, {bytes} B) [wall clock]",
            1e9 / wall_ns
        ),
    }
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
    let mapper = Mapper::load(&dir).unwrap_or_else(|e| panic!("mappings: {e}"));
    let raw = black_box(ADT_A01_FR);
    let budget = Duration::from_secs(3);
    for (case, kind) in
        [("convert message", BundleKind::Message), ("convert transaction", BundleKind::Transaction)]
    {
        measure(case, budget, || match mapper.convert(black_box(raw), kind, false) {
            Ok(mapped) => mapped.bundle.len(),
            Err(e) => panic!("bench message does not map: {e}"),
        });
    }
}
