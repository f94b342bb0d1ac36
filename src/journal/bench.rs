//! Throughput figures of the journal on the real disk (ignored test; prints, asserts nothing about speed).
//!
//! Run: `cargo test --release --lib journal::bench -- --ignored --nocapture`
//! (`RELAIS_BENCH_DIR` picks the directory of the temporary files; default: the system temp dir, which must
//! not be a tmpfs for the figures to mean anything).

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use jiff::Timestamp;

use super::*;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/test-messages/bench/adt_a01_fr.hl7");

fn body() -> Bytes {
    // The 1.6 KB French ADT^A01 bench message; a same-sized stand-in when the corpus is not there.
    let bytes = std::fs::read(CORPUS).unwrap_or_else(|_| vec![b'x'; 1594]);
    Bytes::from(bytes)
}

fn temp_dir() -> tempfile::TempDir {
    match std::env::var_os("RELAIS_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

fn entry(body: &Bytes, control_id: String) -> NewEntry {
    NewEntry {
        received_at: Timestamp::now(),
        transport: Transport::Mllp,
        peer: "10.1.2.3:51234".into(),
        raw: body.clone(),
        charset: Some("8859/15".into()),
        header: Some(HeaderFields {
            sending_application: "GAM".into(),
            sending_facility: "CHU_NORD".into(),
            message_type: "ADT^A01^ADT_A01".into(),
            control_id,
            version: "2.5".into(),
        }),
        state: State::Received,
        reason: None,
        kind: crate::facts::MessageKind::Hl7v2,
    }
}

fn rate(count: usize, took: Duration) -> f64 {
    count as f64 / took.as_secs_f64()
}

/// (a) The disk's ceiling: append 1.6 KB then `fdatasync`, one at a time.
fn fdatasync_rate(dir: &std::path::Path, body: &[u8], count: usize) -> f64 {
    let mut file = std::fs::File::create(dir.join("sync.bin")).unwrap();
    let started = Instant::now();
    for _ in 0..count {
        file.write_all(body).unwrap();
        file.sync_data().unwrap();
    }
    rate(count, started.elapsed())
}

#[test]
#[ignore = "benchmark: run with --release --ignored --nocapture"]
fn journal_throughput() {
    let body = body();
    let dir = temp_dir();
    println!("journal bench in {} with {}-byte entries", dir.path().display(), body.len());

    let sync_rate = fdatasync_rate(dir.path(), &body, 2000);
    println!("(a) write+fdatasync of {} B: {sync_rate:.0}/s", body.len());

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let journal = Journal::open(JournalConfig::new(dir.path().join("seq.redb"))).unwrap();
        let count = 3000;
        let started = Instant::now();
        for n in 0..count {
            journal.append(entry(&body, format!("seq-{n}"))).await.unwrap();
        }
        let took = started.elapsed();
        let seq_rate = rate(count, took);
        let stats = journal.commit_stats();
        println!(
            "(b) 1 in flight: {seq_rate:.0} entries/s = {:.2}x fdatasync; mean commit {:.0} us",
            seq_rate / sync_rate,
            stats.commit_time.as_secs_f64() * 1e6 / stats.commits as f64,
        );
        journal.close().await.unwrap();
    });

    for appenders in [8usize, 16, 32, 64] {
        let path = dir.path().join(format!("conc-{appenders}.redb"));
        let journal = runtime.block_on(async { Journal::open(JournalConfig::new(&path)).unwrap() });
        let per_task = 48_000 / appenders;
        let started = Instant::now();
        runtime.block_on(async {
            let mut tasks = Vec::new();
            for task in 0..appenders {
                let journal = journal.clone();
                let body = body.clone();
                tasks.push(tokio::spawn(async move {
                    for n in 0..per_task {
                        journal.append(entry(&body, format!("c{task}-{n}"))).await.unwrap();
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
        });
        let took = started.elapsed();
        let stats = journal.commit_stats();
        println!(
            "(c) {appenders} appenders: {:.0} entries/s, {} commits, mean batch {:.1}, mean commit {:.0} us",
            rate(appenders * per_task, took),
            stats.commits,
            stats.mean_batch(),
            stats.commit_time.as_secs_f64() * 1e6 / stats.commits as f64,
        );
        runtime.block_on(journal.close()).unwrap();
    }
}
