//! Parsing throughput on the 1.6 KB PAM FR ADT^A01: Relais's header fast path, Relais's full index with
//! every field read, and hl7-parser 0.3 doing the same walk for comparison.
//!
//! Run: `cargo bench --bench parse`. One line per case: `<case>: <N> msg/s (<ns> ns/msg)`.

use std::hint::black_box;
use std::time::Duration;

use relais::hl7v2::{Header, Message};

mod common;

const ADT_A01_FR: &[u8] = include_bytes!("../test-messages/bench/adt_a01_fr.hl7");

/// Runs `work` repeatedly for about `budget` (after a short warm-up) and prints its throughput, computed on
/// the thread's CPU time when available (wall-clock time shown too).
fn measure(case: &str, budget: Duration, work: impl FnMut()) {
    let m = common::run(10_000, 1_000, budget, work);
    let wall_ns = m.ns_per_run(m.wall);
    match m.cpu {
        Some(cpu) => {
            let cpu_ns = m.ns_per_run(cpu);
            println!(
                "{case}: {:.0} msg/s ({cpu_ns:.0} ns/msg) [CPU time; wall clock: {:.0} msg/s]",
                1e9 / cpu_ns,
                1e9 / wall_ns
            );
        }
        None => println!("{case}: {:.0} msg/s ({wall_ns:.0} ns/msg) [wall clock]", 1e9 / wall_ns),
    }
}

fn main() {
    let budget = Duration::from_secs(3);
    let raw = black_box(ADT_A01_FR);
    println!("message: {} bytes", raw.len());

    measure("relais Header::parse + MSH-3,4,9,10,12,18 + charset", budget, || {
        let header = Header::parse(black_box(raw)).expect("bench message has a valid MSH");
        for n in [3, 4, 9, 10, 12, 18] {
            black_box(header.field(n));
        }
        black_box(header.charset().expect("bench message has a known MSH-18"));
    });

    let mut fields_seen = 0usize;
    measure("relais Message::parse + every field raw", budget, || {
        let message = Message::parse(black_box(raw)).expect("bench message parses");
        for segment in message.segments() {
            for field in segment.fields() {
                black_box(field.raw());
                fields_seen += 1;
            }
        }
    });
    black_box(fields_seen);

    let text = std::str::from_utf8(raw).expect("bench message is UTF-8");
    measure("hl7-parser 0.3 parse_message + every field raw", budget, || {
        let message = hl7_parser::parse_message(black_box(text)).expect("bench message parses");
        for segment in message.segments() {
            for field in segment.fields() {
                black_box(field.raw_value());
            }
        }
    });
}
