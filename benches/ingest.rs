//! End-to-end ingest throughput: the real `relais serve` binary with its real on-disk journal, driven over
//! MLLP, beside the disk's fdatasync rate and a peer MLLP server (`@medplum/hl7`, which journals nothing).
//!
//! Run: `cargo bench --bench ingest`. In one run it prints:
//! - the disk's rate of `write 1.6 KB + fdatasync` in the data directory (the ceiling for one connection),
//!   appending and rewriting in place;
//! - Relais, 1 connection, send-wait-send (one blocking socket, as a DPI sends): msg/s, ACK latency
//!   percentiles, and the ratio to the appending fdatasync rate. The load runs in rounds, each right after a
//!   slice of the disk's rate (the server idle meanwhile), and the ratio is taken over the same rounds: the
//!   disk's rate drifts by tens of percent within a minute on a virtual machine;
//! - Relais, M connections with a pipelining window per connection: msg/s, p50/p99 ACK latency;
//! - the server's RSS when idle and its peak (VmHWM) under load;
//! - the same two loads against the peer (`benches/peer`, `npm install` run there when `node_modules` is
//!   missing), and Relais's ratio to it;
//! - the journal's counts read back after the server stopped (every AA'd message must be there, none
//!   rejected).
//!
//! Every message is the 1.6 KB PAM FR ADT^A01 with its own MSH-10, so deduplication never short-circuits.
//! Environment: `BENCH_N` (pipelined messages, 100000), `BENCH_CONNS` (8), `BENCH_WINDOW` (64 in flight per
//! connection), `BENCH_SEQ_N` (send-wait-send messages, 5000), `BENCH_ROUNDS` (5: slices of the
//! send-wait-send load, each after a disk slice), `BENCH_SYNC_SECS` (2: seconds of each disk measurement,
//! split between the rounds for the paired one), `BENCH_DIR` (parent
//! of the temporary data directory; default the system temp dir, which must be on the disk under test),
//! `BENCH_KEEP=1` keeps it (journal, `relais.log`), `BENCH_RELAIS_LOG` sets the server's `RELAIS_LOG`,
//! `BENCH_RELAIS_BIN` runs another build of the server (A/B comparisons), `BENCH_PEER=0` skips the peer.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};

#[path = "common/process.rs"]
mod process;
use process::{cpu_time, load_average, written_bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

const MESSAGE: &[u8] = include_bytes!("../test-messages/bench/adt_a01_fr.hl7");
const PEER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peer");

/// Width of the MSH-10 written into each message: a scenario letter, 2 digits of connection, 9 of sequence.
const CONTROL_ID_WIDTH: usize = 12;

/// Messages sent (and answered) before each measured load, not counted.
const WARM_UP: usize = 2_000;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Options {
    n: usize,
    conns: usize,
    window: usize,
    seq_n: usize,
    rounds: usize,
    sync_secs: f64,
    dir: Option<PathBuf>,
    keep: bool,
    peer: bool,
}

impl Options {
    fn from_env() -> Options {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
            std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
        }
        Options {
            n: var("BENCH_N", 100_000),
            conns: var("BENCH_CONNS", 8).max(1),
            window: var("BENCH_WINDOW", 64).max(1),
            seq_n: var("BENCH_SEQ_N", 5_000).max(1),
            rounds: var("BENCH_ROUNDS", 5).max(1),
            sync_secs: var("BENCH_SYNC_SECS", 2.0),
            dir: std::env::var_os("BENCH_DIR").map(PathBuf::from),
            keep: var("BENCH_KEEP", 0) != 0,
            peer: var("BENCH_PEER", 1) != 0,
        }
    }
}

/// The bench message with MSH-10 replaced by a placeholder of fixed width, and where that placeholder is.
struct Template {
    bytes: Vec<u8>,
    control_id_at: usize,
}

impl Template {
    fn new() -> Template {
        let msh_end = MESSAGE.iter().position(|&b| b == b'\r' || b == b'\n').unwrap_or(MESSAGE.len());
        // MSH-1 is the separator itself, so MSH-10 follows the 9th separator of the segment.
        let separators: Vec<usize> =
            MESSAGE[..msh_end].iter().enumerate().filter(|(_, b)| **b == b'|').map(|(i, _)| i).collect();
        let (start, end) = (separators[8] + 1, separators[9]);
        let mut bytes = Vec::with_capacity(MESSAGE.len() + 16);
        bytes.extend_from_slice(&MESSAGE[..start]);
        bytes.extend_from_slice(&[b'0'; CONTROL_ID_WIDTH]);
        bytes.extend_from_slice(&MESSAGE[end..]);
        Template { bytes, control_id_at: start }
    }

    /// Appends the framed message with control id `<tag><conn:02><seq:09>` to `out`.
    fn frame_into(&self, tag: u8, conn: usize, seq: usize, out: &mut BytesMut) {
        out.reserve(self.bytes.len() + 3);
        out.extend_from_slice(&[0x0B]);
        let at = out.len() + self.control_id_at;
        out.extend_from_slice(&self.bytes);
        let id = format!("{}{:02}{:09}", tag as char, conn % 100, seq % 1_000_000_000);
        out[at..at + CONTROL_ID_WIDTH].copy_from_slice(id.as_bytes());
        out.extend_from_slice(&[0x1C, 0x0D]);
    }
}

/// What one load produced.
struct LoadResult {
    messages: usize,
    elapsed: Duration,
    latencies_us: Vec<u32>,
    not_aa: usize,
    /// CPU time the server and this load generator used during the load.
    server_cpu: Duration,
    client_cpu: Duration,
    /// Bytes the server wrote to storage during the load.
    server_written: u64,
}

impl LoadResult {
    /// The slices of one load as one result: counts, times and latencies added up.
    fn merge(parts: Vec<LoadResult>) -> LoadResult {
        let mut merged = LoadResult {
            messages: 0,
            elapsed: Duration::ZERO,
            latencies_us: Vec::new(),
            not_aa: 0,
            server_cpu: Duration::ZERO,
            client_cpu: Duration::ZERO,
            server_written: 0,
        };
        for part in parts {
            merged.messages += part.messages;
            merged.elapsed += part.elapsed;
            merged.latencies_us.extend(part.latencies_us);
            merged.not_aa += part.not_aa;
            merged.server_cpu += part.server_cpu;
            merged.client_cpu += part.client_cpu;
            merged.server_written += part.server_written;
        }
        merged.latencies_us.sort_unstable();
        merged
    }

    fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let rank = ((self.latencies_us.len() as f64 * p).ceil() as usize).clamp(1, self.latencies_us.len());
        f64::from(self.latencies_us[rank - 1]) / 1000.0
    }

    /// CPU microseconds per message.
    fn cpu_us(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / self.messages as f64
    }

    fn print(&self, name: &str) {
        println!(
            "{name}: {:.0} msg/s ({} messages in {:.2} s), ACK latency p50 {:.2} ms, p99 {:.2} ms{}",
            self.rate(),
            self.messages,
            self.elapsed.as_secs_f64(),
            self.percentile_ms(0.50),
            self.percentile_ms(0.99),
            if self.not_aa > 0 { format!(", {} NOT AA", self.not_aa) } else { String::new() },
        );
        let mean_us = self.latencies_us.iter().map(|&us| f64::from(us)).sum::<f64>()
            / self.latencies_us.len().max(1) as f64;
        println!(
            "  ACK latency: mean {:.3} ms, p90 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            mean_us / 1000.0,
            self.percentile_ms(0.90),
            self.percentile_ms(0.999),
            self.percentile_ms(1.0),
        );
        println!(
            "  per message: server CPU {:.1} us, load generator CPU {:.1} us, server disk writes {:.2} KiB",
            self.cpu_us(self.server_cpu),
            self.cpu_us(self.client_cpu),
            self.server_written as f64 / 1024.0 / self.messages as f64,
        );
    }
}

/// What a load costs: wall clock, server and client CPU, bytes the server wrote, from `start` to `finish`.
struct Meter {
    server_pid: String,
    started: Instant,
    cpu_before: (Option<Duration>, Option<Duration>),
    written_before: Option<u64>,
}

impl Meter {
    fn start(server_pid: &str) -> Meter {
        Meter {
            server_pid: server_pid.to_owned(),
            cpu_before: (cpu_time(server_pid), cpu_time("self")),
            written_before: written_bytes(server_pid),
            started: Instant::now(),
        }
    }

    fn finish(self, mut latencies_us: Vec<u32>, not_aa: usize) -> LoadResult {
        let elapsed = self.started.elapsed();
        let used = |before: Option<Duration>, after: Option<Duration>| {
            before.zip(after).map_or(Duration::ZERO, |(before, after)| after.saturating_sub(before))
        };
        let server_cpu = used(self.cpu_before.0, cpu_time(&self.server_pid));
        let client_cpu = used(self.cpu_before.1, cpu_time("self"));
        let server_written = self
            .written_before
            .zip(written_bytes(&self.server_pid))
            .map_or(0, |(before, after)| after.saturating_sub(before));
        latencies_us.sort_unstable();
        let messages = latencies_us.len();
        LoadResult { messages, elapsed, latencies_us, not_aa, server_cpu, client_cpu, server_written }
    }
}

/// Sends `count` messages on one connection with at most `window` unanswered, timing each ACK.
async fn drive_connection(
    addr: SocketAddr,
    template: Arc<Template>,
    tag: u8,
    conn: usize,
    count: usize,
    window: usize,
) -> Result<(Vec<u32>, usize)> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    let credits = Arc::new(Semaphore::new(window));
    let sent_at = Arc::new(Mutex::new(VecDeque::<Instant>::with_capacity(window)));

    let send = {
        let credits = Arc::clone(&credits);
        let sent_at = Arc::clone(&sent_at);
        tokio::spawn(async move {
            let mut out = BytesMut::with_capacity(window * (template.bytes.len() + 3));
            let mut seq = 0;
            while seq < count {
                // Wait for one free slot, then take every other free slot too: one write for all of them.
                credits.acquire().await?.forget();
                let mut batch = 1;
                while seq + batch < count && credits.try_acquire().map(|permit| permit.forget()).is_ok() {
                    batch += 1;
                }
                out.clear();
                for _ in 0..batch {
                    template.frame_into(tag, conn, seq, &mut out);
                    seq += 1;
                }
                {
                    let now = Instant::now();
                    let mut times = sent_at.lock().unwrap_or_else(|e| e.into_inner());
                    times.extend(std::iter::repeat_n(now, batch));
                }
                writer.write_all(&out).await?;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(writer)
        })
    };

    let mut latencies = Vec::with_capacity(count);
    let mut not_aa = 0;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    while latencies.len() < count {
        if reader.read_buf(&mut buf).await? == 0 {
            return Err(format!("connection {conn} closed after {} of {count} ACKs", latencies.len()).into());
        }
        let now = Instant::now();
        let mut answered = 0;
        while let Some(end) = memchr::memchr(0x1C, &buf) {
            let frame = &buf[..end];
            if memchr::memmem::find(frame, b"MSA|AA").is_none() {
                not_aa += 1;
                if not_aa <= 3 {
                    let text = String::from_utf8_lossy(frame).replace('\r', "\n  ");
                    eprintln!("connection {conn}: answer is not AA:\n  {}", text.trim_start_matches('\u{b}'));
                }
            }
            let skip = if buf.get(end + 1) == Some(&0x0D) { end + 2 } else { end + 1 };
            buf.advance(skip);
            answered += 1;
        }
        if answered > 0 {
            let mut times = sent_at.lock().unwrap_or_else(|e| e.into_inner());
            for _ in 0..answered {
                let sent = times.pop_front().ok_or("an ACK came for a message not sent")?;
                latencies.push(u32::try_from(now.duration_since(sent).as_micros()).unwrap_or(u32::MAX));
            }
            drop(times);
            credits.add_permits(answered);
        }
    }
    let mut writer = send.await??;
    writer.shutdown().await?;
    Ok((latencies, not_aa))
}

/// Sends `total` messages split over `conns` connections (window per connection) and gathers the figures.
async fn drive(
    addr: SocketAddr,
    server_pid: &str,
    tag: u8,
    total: usize,
    conns: usize,
    window: usize,
) -> Result<LoadResult> {
    let template = Arc::new(Template::new());
    let meter = Meter::start(server_pid);
    let mut tasks = Vec::new();
    for conn in 0..conns {
        let count = total / conns + usize::from(conn < total % conns);
        tasks.push(tokio::spawn(drive_connection(addr, Arc::clone(&template), tag, conn, count, window)));
    }
    let mut latencies_us = Vec::with_capacity(total);
    let mut not_aa = 0;
    for task in tasks {
        let (latencies, bad) = task.await??;
        latencies_us.extend(latencies);
        not_aa += bad;
    }
    Ok(meter.finish(latencies_us, not_aa))
}

/// Sends `count` messages one at a time on one blocking socket, each after the previous one's ACK: a DPI's
/// own pattern, and no client-side task hop in the measured round trip (the async driver's reader wakes its
/// sender task for every ACK).
fn drive_sequential(
    addr: SocketAddr,
    server_pid: &str,
    tag: u8,
    first: usize,
    count: usize,
) -> Result<LoadResult> {
    use std::io::Read;
    let template = Template::new();
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let meter = Meter::start(server_pid);
    let (mut out, mut buf) = (BytesMut::with_capacity(template.bytes.len() + 3), BytesMut::new());
    let mut chunk = vec![0u8; 64 * 1024];
    let (mut latencies_us, mut not_aa) = (Vec::with_capacity(count), 0);
    for seq in first..first + count {
        out.clear();
        template.frame_into(tag, 0, seq, &mut out);
        let sent = Instant::now();
        stream.write_all(&out)?;
        let end = loop {
            if let Some(end) = memchr::memchr(0x1C, &buf) {
                break end;
            }
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(format!("connection closed after {seq} of {count} ACKs").into());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        latencies_us.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
        if memchr::memmem::find(&buf[..end], b"MSA|AA").is_none() {
            not_aa += 1;
        }
        let skip = if buf.get(end + 1) == Some(&0x0D) { end + 2 } else { end + 1 };
        buf.advance(skip.min(buf.len()));
    }
    Ok(meter.finish(latencies_us, not_aa))
}

/// The two loads of the bench against one server: send-wait-send on one connection, then pipelined.
struct Loads {
    sequential: LoadResult,
    pipelined: LoadResult,
    /// The disk's appending fdatasync rate measured between the send-wait-send slices, when asked.
    disk_rate: Option<f64>,
}

/// How long the server is left idle before each disk slice of [`sequential_beside_disk`]: past its
/// checkpoint interval (1 s), so that its own background writes never slow the disk probe down.
const IDLE_BEFORE_DISK: Duration = Duration::from_millis(1_300);

/// Send-wait-send on one connection in `opts.rounds` slices, each right after a slice of the disk's appending
/// `write + fdatasync` rate in `dir`: on a virtual machine the disk's rate drifts by tens of percent within
/// a minute, so the ratio is taken between neighbours. Returns the merged slices and the disk's rate over
/// its own slices.
fn sequential_beside_disk(
    addr: SocketAddr,
    server_pid: &str,
    tag: u8,
    opts: &Options,
    dir: &Path,
) -> Result<(LoadResult, f64)> {
    let per_round = opts.seq_n.div_ceil(opts.rounds);
    let disk_secs = opts.sync_secs / opts.rounds as f64;
    let (mut parts, mut syncs, mut disk_time, mut sent) = (Vec::new(), 0, Duration::ZERO, 0);
    while sent < opts.seq_n {
        std::thread::sleep(IDLE_BEFORE_DISK);
        let (count, took) = fdatasync_run(dir, disk_secs, SyncMode::Append)?;
        let count_here = per_round.min(opts.seq_n - sent);
        let part = drive_sequential(addr, server_pid, tag, sent, count_here)?;
        println!(
            "  round {}: disk {:.0} fdatasync/s, 1 connection {:.0} msg/s",
            parts.len() + 1,
            count as f64 / took.as_secs_f64(),
            part.rate()
        );
        (syncs, disk_time, sent) = (syncs + count, disk_time + took, sent + count_here);
        parts.push(part);
    }
    Ok((LoadResult::merge(parts), syncs as f64 / disk_time.as_secs_f64()))
}

/// Runs the loads against `server`; with `disk_dir`, the send-wait-send load in rounds beside the disk's
/// rate measured there ([`sequential_beside_disk`]).
fn run_loads(
    runtime: &tokio::runtime::Runtime,
    name: &str,
    server: &Server,
    addr: SocketAddr,
    opts: &Options,
    disk_dir: Option<&Path>,
) -> Result<Loads> {
    let pid = server.pid().to_string();
    let (warm_tag, seq_tag, pipe_tag) = (b'W', b'S', b'P');
    runtime.block_on(drive(addr, &pid, warm_tag, WARM_UP, opts.conns, opts.window))?;
    let (sequential, disk_rate) = match disk_dir {
        Some(dir) => {
            let (sequential, rate) = sequential_beside_disk(addr, &pid, seq_tag, opts, dir)?;
            (sequential, Some(rate))
        }
        None => (drive_sequential(addr, &pid, seq_tag, 0, opts.seq_n)?, None),
    };
    sequential.print(&format!("{name}, 1 connection, send-wait-send"));
    if let Some(rate) = disk_rate {
        println!("  disk in the same rounds: {rate:.0} fdatasync/s appending");
    }
    let pipelined = runtime.block_on(drive(addr, &pid, pipe_tag, opts.n, opts.conns, opts.window))?;
    pipelined.print(&format!("{name}, {} connections, window {}", opts.conns, opts.window));
    Ok(Loads { sequential, pipelined, disk_rate })
}

/// The disk's rate of `write(1.6 KB) + fdatasync` on a file in `dir`, for about `secs` seconds.
///
/// `Append` grows the file at each write, so every fdatasync also commits the new size (a filesystem journal
/// write); `InPlace` rewrites blocks of a preallocated file, as a database file that has room does.
fn fdatasync_rate(dir: &Path, secs: f64, mode: SyncMode) -> Result<f64> {
    let (count, took) = fdatasync_run(dir, secs, mode)?;
    Ok(count as f64 / took.as_secs_f64())
}

/// `write + fdatasync` for about `secs` seconds: how many, in how long.
fn fdatasync_run(dir: &Path, secs: f64, mode: SyncMode) -> Result<(u64, Duration)> {
    use std::os::unix::fs::FileExt;
    const IN_PLACE_SPAN: u64 = 1 << 20;
    let path = dir.join("fdatasync.bin");
    let mut file = std::fs::File::create(&path)?;
    if mode == SyncMode::InPlace {
        file.write_all(&vec![0; IN_PLACE_SPAN as usize])?;
        file.sync_all()?;
    }
    let budget = Duration::from_secs_f64(secs);
    let started = Instant::now();
    let mut count = 0u64;
    while started.elapsed() < budget {
        match mode {
            SyncMode::Append => file.write_all(MESSAGE)?,
            SyncMode::InPlace => file.write_all_at(MESSAGE, (count * 4096) % IN_PLACE_SPAN)?,
        }
        file.sync_data()?;
        count += 1;
    }
    let took = started.elapsed();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok((count, took))
}

/// How [`fdatasync_rate`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncMode {
    Append,
    InPlace,
}

/// A `VmRSS`/`VmHWM`-style line of `/proc/<pid>/status`, in MiB.
fn proc_status_mib(pid: u32, key: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(key))?;
    let kib: f64 = line[key.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib / 1024.0)
}

/// Samples a process's RSS every 20 ms and keeps the highest (besides VmHWM, which the kernel keeps).
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak_kib: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak_kib = Arc::new(AtomicU64::new(0));
        let thread = std::thread::spawn({
            let (stop, peak_kib) = (Arc::clone(&stop), Arc::clone(&peak_kib));
            move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(mib) = proc_status_mib(pid, "VmRSS:") {
                        peak_kib.fetch_max((mib * 1024.0) as u64, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        });
        RssSampler { stop, peak_kib, thread }
    }

    fn finish(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak_kib.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

/// A child process stopped with SIGTERM (then killed after a grace period) when dropped.
struct Server {
    child: Child,
    name: &'static str,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    eprintln!("{} exited with {status}", self.name);
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        self.child.wait()?;
        Err(format!("{} did not stop within 20 s of SIGTERM; killed", self.name).into())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Starts `relais serve` on ports 0 in `data_dir` and waits for `listeners.json`.
fn start_relais(data_dir: &Path) -> Result<(Server, SocketAddr)> {
    let log = std::fs::File::create(data_dir.join("relais.log"))?;
    let binary = std::env::var_os("BENCH_RELAIS_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_relais").into());
    let child = Command::new(binary)
        .args(["serve", "--data"])
        .arg(data_dir)
        .env("RELAIS__MLLP__LISTEN", "127.0.0.1:0")
        .env("RELAIS__HTTP__LISTEN", "127.0.0.1:0")
        .env(
            "RELAIS_LOG",
            std::env::var("BENCH_RELAIS_LOG").unwrap_or_else(|_| "warn,relais::journal=info".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let mut server = Server { child, name: "relais" };
    let listeners = data_dir.join("listeners.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&listeners)
            && let Ok(bound) = serde_json::from_str::<serde_json::Value>(&text)
            && let Some(addr) = bound["mllp"].as_str()
        {
            return Ok((server, addr.parse()?));
        }
        if let Some(status) = server.child.try_wait()? {
            return Err(
                format!("relais exited during start-up ({status}); see {}", data_dir.display()).into()
            );
        }
        if Instant::now() > deadline {
            server.stop()?;
            return Err("relais did not write listeners.json within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Installs the peer's npm packages if needed, starts it on port 0 and reads the port it prints.
fn start_peer() -> Result<(Server, SocketAddr)> {
    let peer_dir = Path::new(PEER_DIR);
    if !peer_dir.join("node_modules").exists() {
        let status = Command::new("npm").args(["install", "--silent"]).current_dir(peer_dir).status()?;
        if !status.success() {
            return Err(format!("npm install in {PEER_DIR} failed ({status})").into());
        }
    }
    let mut child = Command::new("node")
        .arg("server.js")
        .current_dir(peer_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout from the peer")?;
    let server = Server { child, name: "peer (node)" };
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let ready: serde_json::Value = serde_json::from_str(line.trim())
        .map_err(|e| format!("peer did not print its port ({e}): {line:?}"))?;
    let port = ready["port"].as_u64().ok_or("peer printed no port")?;
    Ok((server, SocketAddr::from(([127, 0, 0, 1], u16::try_from(port)?))))
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "MISSED" }
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    let opts = Options::from_env();
    let mut builder = tempfile::Builder::new();
    builder.prefix("relais-bench-").disable_cleanup(opts.keep);
    let data = match &opts.dir {
        Some(parent) => builder.tempdir_in(parent)?,
        None => builder.tempdir()?,
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "ingest bench: {} B message, data dir {}, {cores} cores, load average {}",
        MESSAGE.len(),
        data.path().display(),
        load_average()
    );

    let sync_rate = fdatasync_rate(data.path(), opts.sync_secs, SyncMode::Append)?;
    let in_place_rate = fdatasync_rate(data.path(), opts.sync_secs, SyncMode::InPlace)?;
    println!(
        "disk before the loads: write {} B + fdatasync: {sync_rate:.0}/s appending; {in_place_rate:.0}/s rewriting in place",
        MESSAGE.len()
    );

    // One client thread for every connection: the load generator takes as little of the 2 cores as it can.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;

    let (mut relais, addr) = start_relais(data.path())?;
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss = proc_status_mib(relais.pid(), "VmRSS:").unwrap_or(f64::NAN);
    println!("relais (pid {}) RSS idle: {idle_rss:.1} MiB", relais.pid());
    let sampler = RssSampler::start(relais.pid());
    let ours = run_loads(&runtime, "relais", &relais, addr, &opts, Some(data.path()))?;
    let sampled_peak = sampler.finish();
    let hwm = proc_status_mib(relais.pid(), "VmHWM:").unwrap_or(f64::NAN);
    println!("relais RSS under load: peak {hwm:.1} MiB (VmHWM; highest 20 ms sample {sampled_peak:.1} MiB)");
    relais.stop()?;

    // Read the journal back: every message that got an AA must be in it, none twice.
    let sent = (WARM_UP + opts.seq_n + opts.n) as u64;
    let stats = {
        let journal = relais::journal::Journal::open(relais::journal::JournalConfig::new(
            data.path().join("journal.redb"),
        ))?;
        let stats = journal.stats()?;
        runtime.block_on(journal.close())?;
        stats
    };
    let journaled = stats.get("journaled").copied().unwrap_or(0);
    let rejected = stats.get("rejected").copied().unwrap_or(0);
    // The pipeline may already have moved entries past `received` (mapped, routed...): count them all.
    let states: Vec<String> =
        stats.iter().filter(|(_, n)| **n > 0).map(|(state, n)| format!("{state} {n}")).collect();
    println!("journal after stop: {} (sent {sent})", states.join(", "));

    let peer = if opts.peer {
        match start_peer() {
            Ok((mut peer, peer_addr)) => {
                let loads = run_loads(&runtime, "peer @medplum/hl7", &peer, peer_addr, &opts, None)?;
                peer.stop()?;
                Some(loads)
            }
            Err(error) => {
                println!("peer @medplum/hl7 skipped: {error} (needs node and npm)");
                None
            }
        }
    } else {
        None
    };

    println!("--- summary (targets on 2 cores)");
    let pipelined = ours.pipelined.rate();
    // The rate measured beside the send-wait-send rounds; the one before the loads if there was none.
    let sync_rate = ours.disk_rate.unwrap_or(sync_rate);
    let sequential_ratio = ours.sequential.rate() / sync_rate;
    println!(
        "{} connections: {pipelined:.0} msg/s (target >= 30000: {})",
        opts.conns,
        verdict(pipelined >= 30_000.0)
    );
    println!(
        "1 connection / fdatasync: {:.0} / {sync_rate:.0} = {sequential_ratio:.2} (target >= 0.8: {})",
        ours.sequential.rate(),
        verdict(sequential_ratio >= 0.8)
    );
    println!(
        "1 connection / in-place fdatasync: {:.0} / {in_place_rate:.0} = {:.2}",
        ours.sequential.rate(),
        ours.sequential.rate() / in_place_rate
    );
    if let Some(peer) = &peer {
        let ratio = pipelined / peer.pipelined.rate();
        println!(
            "vs peer, {} connections: {pipelined:.0} / {:.0} = {ratio:.2}x (target >= 3: {})",
            opts.conns,
            peer.pipelined.rate(),
            verdict(ratio >= 3.0)
        );
        println!(
            "vs peer, 1 connection: {:.0} / {:.0} = {:.2}x (the peer does not fsync)",
            ours.sequential.rate(),
            peer.sequential.rate(),
            ours.sequential.rate() / peer.sequential.rate()
        );
    }
    println!("RSS idle {idle_rss:.1} MiB (target <= 50: {})", verdict(idle_rss <= 50.0));
    println!("RSS peak under load {hwm:.1} MiB (target <= 200: {})", verdict(hwm <= 200.0));

    let all_aa = ours.sequential.not_aa + ours.pipelined.not_aa == 0;
    if !all_aa || journaled != sent || rejected != 0 {
        return Err(format!(
            "relais: every message should be AA'd and journaled once; not AA: {}, journaled {journaled} of {sent}",
            ours.sequential.not_aa + ours.pipelined.not_aa
        )
        .into());
    }
    Ok(())
}
