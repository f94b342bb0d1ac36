//! Conversion throughput: the 1.6 KB PAM FR ADT^A01 → FHIR R4 message Bundle (JSON bytes), library call in a
//! loop on one core (no process start, mappings loaded once). Target: ≥ 50,000 bundles/s.
//!
//! Run: `cargo bench --bench convert`. One line per case: `<case>: <N> bundles/s (<ns> ns/bundle)`, measured
//! on the thread's CPU time (so the figure stays a single-core one on a busy machine), wall clock shown too.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use relais::mapping::{BundleKind, Mapper};

mod common;

/// The binary's allocator (src/main.rs), so the figure is the one `relais` gets.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ADT_A01_FR: &[u8] = include_bytes!("../test-messages/bench/adt_a01_fr_mappable.hl7");

fn measure(case: &str, budget: Duration, mut work: impl FnMut() -> usize) {
    let mut bytes = 0usize;
    let m = common::run(2_000, 500, budget, || bytes = black_box(work()));
    let wall_ns = m.ns_per_run(m.wall);
    match m.cpu {
        Some(cpu) => println!(
            "{case}: {:.0} bundles/s ({:.0} ns/bundle, {bytes} B) [CPU time; wall clock: {:.0} bundles/s]",
            1e9 / m.ns_per_run(cpu),
            m.ns_per_run(cpu),
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
