//! CDA header + XDS metadata extraction throughput, and the parser's memory on a 50 MB document.
//!
//! Run: `cargo bench --bench documents`. Prints:
//! - `cda header+metadata (200 KB, embedded PDF)`: documents/s on one core (thread CPU time), target ≥ 5,000;
//! - `cda header+metadata (LDL-SES level 3, 76 KB)`: the same on a structured ANS sample;
//! - `50 MB document`: the process's peak RSS growth while extracting (input already in memory): flat means
//!   the parser keeps no copy of the document.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use relais::cda;
use relais::documents::XdsTables;
use relais::documents::metadata::{self, Context};

mod common;

/// `VmHWM` (peak resident set) of this process, in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A CI-SIS level 1 document whose base64 PDF makes it `size` bytes long.
fn document_of_size(template: &str, size: usize) -> String {
    let start =
        template.find("representation=\"B64\">").expect("a nonXMLBody") + "representation=\"B64\">".len();
    let end = start + template[start..].find('<').unwrap();
    let mut pdf = b"%PDF-1.4\n%".to_vec();
    let target_b64 = size.saturating_sub(template.len() - (end - start));
    pdf.resize(target_b64 / 4 * 3, b'x');
    let b64 = base64::engine::general_purpose::STANDARD.encode(&pdf);
    format!("{}{}{}", &template[..start], b64, &template[end..])
}

fn measure(case: &str, bytes: &[u8], tables: &XdsTables) {
    let run = || {
        let header = cda::extract(black_box(bytes)).unwrap();
        black_box(metadata::build(&header, bytes, tables, &Context::default()).unwrap());
    };
    let m = common::run(200, 100, Duration::from_secs(3), run);
    let (n, wall) = (m.iterations, m.wall);
    let cpu = m.cpu.unwrap_or(wall);
    println!(
        "{case}: {:.0} documents/s per core ({:.1} µs/doc, {:.0} MB/s; wall {:.0}/s)",
        n as f64 / cpu.as_secs_f64(),
        m.ns_per_run(cpu) / 1e3,
        (n as f64 * bytes.len() as f64) / cpu.as_secs_f64() / 1e6,
        n as f64 / wall.as_secs_f64(),
    );
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tables = XdsTables::load(&root.join("mappings/tables/xds")).unwrap();
    let template = std::fs::read_to_string(root.join("test-messages/cda/own_CR-URG_15507-7_N1.xml")).unwrap();
    let doc_200k = document_of_size(&template, 200 * 1024);
    measure("cda header+metadata (200 KB, embedded PDF)", doc_200k.as_bytes(), &tables);
    let ldl = std::fs::read(root.join("test-messages/cda/ans-testcontenucda_LDL-SES_2022.01.xml")).unwrap();
    measure("cda header+metadata (LDL-SES level 3, 76 KB)", &ldl, &tables);

    let big = document_of_size(&template, 50 * 1024 * 1024).into_bytes();
    let before = peak_rss_kib().unwrap_or(0);
    let started = Instant::now();
    let header = cda::extract(&big).unwrap();
    let meta = metadata::build(&header, &big, &tables, &Context::default()).unwrap();
    let after = peak_rss_kib().unwrap_or(0);
    println!(
        "50 MB document: extracted in {:.0} ms, peak RSS {} MiB before, {} MiB after (+{} MiB; document {} MiB)",
        started.elapsed().as_secs_f64() * 1e3,
        before / 1024,
        after / 1024,
        after.saturating_sub(before) / 1024,
        meta.entry.size / (1024 * 1024),
    );
}
