//! Parsing throughput on the 1.6 KB PAM FR ADT^A01: Relais's header fast path, Relais's full index with
//! every field read, and hl7-parser 0.3 doing the same walk for comparison.
//!
//! Run: `cargo bench --bench parse`. One line per case: `<case>: <N> msg/s (<ns> ns/msg)`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use relais::hl7v2::{Header, Message};

const ADT_A01_FR: &[u8] = include_bytes!("../test-messages/bench/adt_a01_fr.hl7");

/// CPU time this thread has run (user + system), from `/proc/thread-self/stat`; `None` off Linux.
/// Used so that figures stay single-core figures on a busy machine (10 ms resolution, hence long runs).
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at field 3; utime and stime are 14 and 15.
    let after_name = stat.rsplit_once(')')?.1;
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    // USER_HZ is 100 on every Linux platform Relais targets.
    Some(Duration::from_millis((user + system) * 10))
}

/// Runs `work` repeatedly for about `budget` (after a short warm-up) and prints its throughput, computed on
/// the thread's CPU time when available (wall-clock time shown too).
fn measure(case: &str, budget: Duration, mut work: impl FnMut()) {
    for _ in 0..10_000 {
        work();
    }
    let mut iterations: u64 = 0;
    let cpu_started = thread_cpu_time();
    let started = Instant::now();
    while started.elapsed() < budget {
        for _ in 0..1_000 {
            work();
        }
        iterations += 1_000;
    }
    let wall = started.elapsed();
    let cpu = cpu_started.zip(thread_cpu_time()).map(|(before, after)| after.saturating_sub(before));
    let per_message = |time: Duration| time.as_nanos() as f64 / iterations as f64;
    let wall_ns = per_message(wall);
    match cpu.filter(|cpu| !cpu.is_zero()) {
        Some(cpu) => {
            let cpu_ns = per_message(cpu);
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
