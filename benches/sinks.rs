//! Sink throughput end to end, through the real `relais serve` binary:
//!
//! 1. **Notifications**: A04 / A01 / A03 messages for many distinct patients, each with a médecin traitant in
//!    a generated directory extraction (`relais directory import`), in by MLLP → journal → map → route →
//!    embedded bus → notify sink → one mail per event accepted by a local SMTP server: Postfix's `smtp-sink`
//!    (a C SMTP server made for benchmarking clients; Debian `postfix`, installed here when missing without
//!    starting a Postfix daemon) on plain SMTP — **TLS is off for this figure** (the mss sink with
//!    `tls = "none"`, allowed only to a loopback relay) — dumping each accepted mail to its own file; or, with
//!    `BENCH_SMTP=aiosmtpd`, aiosmtpd with STARTTLS (`BENCH_SMTP_PROCS` processes sharing the port with
//!    SO_REUSEPORT, writing a Maildir). Target ≥ 1,000 notifications/s. Beside it, the SMTP server's own
//!    ceiling with bare lettre clients: one connection per mail, and mails on kept connections (what the
//!    sink's pooled lettre transport does).
//! 2. **Documents**: CDA samples of `test-messages/cda/` with distinct uniqueIds, in by `POST /cda` → dmp
//!    sink → a local ITI-41 endpoint (HTTPS, client certificate required) that parses each MTOM request and
//!    answers Success. Target ≥ 500 documents/s.
//!
//! Each figure waits until every notification is in the mailbox (every document at the endpoint), then checks
//! that each arrived once (every file the SMTP server wrote is parsed: one per (patient, event), to the
//! patient's GP). Run: `cargo bench --bench sinks` (as root on Debian for the postfix install; aiosmtpd
//! from scripts/setup.d/50-aiosmtpd.sh, run here when missing). Environment: `BENCH_PATIENTS` (3 events each,
//! 4000), `BENCH_GPS` (500), `BENCH_SMTP` (`smtp-sink` or `aiosmtpd`), `BENCH_SMTP_PROCS` (aiosmtpd, 2),
//! `BENCH_DOCS` (5000), `BENCH_DOC_PATIENTS` (the documents' patients, 1000), `BENCH_VIHF_SIGNED` (1: the
//! VIHF signed, as a real DMP requires; 0: unsigned), `BENCH_CONNS` (MLLP connections and HTTP clients, 8),
//! `BENCH_CEILING_MAILS` (4000), `BENCH_PARTITIONS` (the bus's partitions per sink, 8: each partition
//! delivers one envelope at a time), `BENCH_ONLY` (`notify` or `docs`), `BENCH_DIR` (parent of the work
//! directory, on the disk under test: the system temp dir by default; `/dev/shm` shows the figures without
//! fsync cost), `BENCH_KEEP=1` keeps it, `BENCH_RELAIS_LOG` (the server's `RELAIS_LOG`, `warn`),
//! `BENCH_RELAIS_BIN` runs another build of the server (A/B comparisons).
//!
//! The sinks make their ledger and bus writes durable one by one, so the disk's `fdatasync` rate (printed
//! first) bounds both figures: compare it with the rates.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "common/iti41_endpoint.rs"]
mod iti41_endpoint;
#[path = "common/pki.rs"]
mod pki;
#[path = "../tests/it/ports.rs"]
mod ports;
use ports::free_port;
#[allow(dead_code)] // written_bytes: the ingest bench's
#[path = "common/process.rs"]
mod process;
use process::{cpu_time, load_average};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const TEMPLATE: &str = include_str!("../test-messages/sinkbench/adt_notify_template.hl7");
/// CDA samples with a qualified INS (the DMP route needs one), cycled through.
const CDA_SAMPLES: [&str; 4] = [
    "own_CR-OP_34874-8_N1.xml",
    "own_CR-URG_15507-7_N1.xml",
    "own_LDL-SES_11490-0_N1_text.xml",
    "ans-testcontenucda_LDL-SES_2022.01.xml",
];
/// Give up when nothing new arrives for this long.
const STALL: Duration = Duration::from_secs(60);

struct Options {
    patients: usize,
    gps: usize,
    smtp: String,
    smtp_procs: usize,
    docs: usize,
    doc_patients: usize,
    vihf_signed: bool,
    conns: usize,
    ceiling_mails: usize,
    only: Option<String>,
    partitions: u16,
    dir: Option<PathBuf>,
    keep: bool,
}

impl Options {
    fn from_env() -> Options {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
            std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
        }
        Options {
            patients: var("BENCH_PATIENTS", 4_000).max(1),
            gps: var("BENCH_GPS", 500).max(1),
            smtp: var("BENCH_SMTP", "smtp-sink".to_string()),
            smtp_procs: var("BENCH_SMTP_PROCS", 2).max(1),
            docs: var("BENCH_DOCS", 5_000).max(1),
            doc_patients: var("BENCH_DOC_PATIENTS", 1_000).max(1),
            vihf_signed: var("BENCH_VIHF_SIGNED", 1) != 0,
            conns: var("BENCH_CONNS", 8).max(1),
            ceiling_mails: var("BENCH_CEILING_MAILS", 4_000).max(1),
            only: std::env::var("BENCH_ONLY").ok(),
            partitions: var("BENCH_PARTITIONS", 8).max(1),
            dir: std::env::var_os("BENCH_DIR").map(PathBuf::from),
            keep: var("BENCH_KEEP", 0) != 0,
        }
    }

    fn runs(&self, case: &str) -> bool {
        self.only.as_deref().is_none_or(|o| o == case)
    }
}

/// Rate of `write 4 KiB in place + fdatasync` on a file in `dir`, for about a second.
fn fdatasync_rate(dir: &Path) -> Result<f64> {
    use std::os::unix::fs::FileExt;
    let path = dir.join("fdatasync.probe");
    let file = std::fs::File::create(&path)?;
    let block = [b'x'; 4096];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(1) {
        file.write_all_at(&block, (n % 16) * 4096)?;
        file.sync_data()?;
        n += 1;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    std::fs::remove_file(path)?;
    Ok(rate)
}

fn cpu_of(pids: &[String]) -> Duration {
    pids.iter().filter_map(|p| cpu_time(p)).sum()
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "MISSED" }
}

/// A child process stopped with SIGTERM (then killed) when dropped.
struct Server {
    child: Child,
    name: &'static str,
}

impl Server {
    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &self.pid()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                if !status.success() && self.name == "relais" {
                    eprintln!("{} exited with {status}", self.name);
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop within 20 s of SIGTERM; killed", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where `relais serve` listens, from `listeners.json`.
struct Listeners {
    mllp: std::net::SocketAddr,
    http: std::net::SocketAddr,
}

/// Starts `relais serve` with `config` (relais.toml text) on ports 0 in `data_dir`.
fn start_relais(data_dir: &Path, config: &str) -> Result<(Server, Listeners)> {
    std::fs::create_dir_all(data_dir)?;
    let config_path = data_dir.join("relais.toml");
    std::fs::write(&config_path, config)?;
    let log = std::fs::File::create(data_dir.join("relais.log"))?;
    let binary = std::env::var_os("BENCH_RELAIS_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_relais").into());
    let child = Command::new(binary)
        .arg("serve")
        .arg("--data")
        .arg(data_dir)
        .arg("--config")
        .arg(&config_path)
        .env("RELAIS__MLLP__LISTEN", "127.0.0.1:0")
        .env("RELAIS__HTTP__LISTEN", "127.0.0.1:0")
        .env("RELAIS__FOLDER__ENABLED", "false")
        .env("RELAIS_LOG", std::env::var("BENCH_RELAIS_LOG").unwrap_or_else(|_| "warn".into()))
        .current_dir(ROOT)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let mut server = Server { child, name: "relais" };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(data_dir.join("listeners.json"))
            && let Ok(bound) = serde_json::from_str::<serde_json::Value>(&text)
            && let (Some(mllp), Some(http)) = (bound["mllp"].as_str(), bound["http"].as_str())
        {
            return Ok((server, Listeners { mllp: mllp.parse()?, http: http.parse()? }));
        }
        if let Some(status) = server.child.try_wait()? {
            let log = std::fs::read_to_string(data_dir.join("relais.log")).unwrap_or_default();
            return Err(format!("relais exited during start-up ({status}):\n{log}").into());
        }
        if Instant::now() > deadline {
            server.stop();
            return Err("relais did not write listeners.json within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------------------
// SMTP server and its ceiling

/// The aiosmtpd interpreter: the venv of scripts/setup.d/50-aiosmtpd.sh (run here when missing).
fn python() -> Result<PathBuf> {
    let venv = std::env::var_os("RELAIS_AIOSMTPD_VENV").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/relais-aiosmtpd")
    });
    let py = venv.join("bin/python");
    if !py.exists() {
        let status =
            Command::new("sh").arg(Path::new(ROOT).join("scripts/setup.d/50-aiosmtpd.sh")).status()?;
        if !status.success() {
            return Err("aiosmtpd missing and scripts/setup.d/50-aiosmtpd.sh failed".into());
        }
    }
    Ok(py)
}

/// `procs` aiosmtpd processes sharing `port` (STARTTLS required), writing into `maildir`.
fn start_aiosmtpd(procs: usize, port: u16, pki: &pki::Pki, maildir: &Path) -> Result<Vec<Server>> {
    let python = python()?;
    let script = Path::new(ROOT).join("benches/common/smtp_server.py");
    let mut servers = Vec::new();
    for _ in 0..procs {
        let mut child = Command::new(&python)
            .arg(&script)
            .args(["127.0.0.1", &port.to_string()])
            .arg(&pki.server_cert)
            .arg(&pki.server_key)
            .arg(maildir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout from aiosmtpd")?;
        let server = Server { child, name: "aiosmtpd" };
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        if line.trim() != "ready" {
            return Err(format!("aiosmtpd did not start: {line:?}").into());
        }
        servers.push(server);
    }
    Ok(servers)
}

const SMTP_SINK: &str = "/usr/sbin/smtp-sink";

/// Installs Postfix (for its `smtp-sink`) when missing, without leaving a Postfix daemon running: the package
/// install is told not to start services (`policy-rc.d`, as in `shared/recipes/test-servers.md`) and a
/// running master is stopped.
fn ensure_smtp_sink() -> Result<()> {
    if Path::new(SMTP_SINK).exists() {
        return Ok(());
    }
    println!("installing postfix for {SMTP_SINK} (apt-get)");
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let own_policy = !policy.exists();
    if own_policy {
        std::fs::write(policy, "#!/bin/sh\nexit 101\n")?;
        Command::new("chmod").args(["+x"]).arg(policy).status()?;
    }
    let install = |update: bool| -> Result<bool> {
        if update {
            Command::new("apt-get").args(["update", "-q"]).stdout(Stdio::null()).status()?;
        }
        Ok(Command::new("apt-get")
            .args(["install", "-y", "-q", "postfix"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()?
            .success())
    };
    let installed = install(false)? || install(true)?;
    if own_policy {
        std::fs::remove_file(policy)?;
    }
    if Command::new("/usr/sbin/postfix").arg("status").stderr(Stdio::null()).status()?.success() {
        Command::new("/usr/sbin/postfix").arg("stop").stderr(Stdio::null()).status()?;
    }
    if !installed || !Path::new(SMTP_SINK).exists() {
        return Err("smtp-sink missing and `apt-get install postfix` failed (run as root on Debian)".into());
    }
    Ok(())
}

/// Postfix's `smtp-sink` on `127.0.0.1:port`, plain SMTP, each mail transaction dumped to its own file in
/// `dump_dir` (`mail.<random hex>`).
fn start_smtp_sink(port: u16, dump_dir: &Path) -> Result<Server> {
    ensure_smtp_sink()?;
    std::fs::create_dir_all(dump_dir)?;
    let mut command = Command::new(SMTP_SINK);
    // As root, smtp-sink insists on a user to switch to; the dump directory is root's.
    let uid = Command::new("id").arg("-u").output()?;
    if String::from_utf8_lossy(&uid.stdout).trim() == "0" {
        command.args(["-u", "root"]);
    }
    let child = command
        .arg("-d")
        .arg(dump_dir.join("mail."))
        .arg(format!("127.0.0.1:{port}"))
        .arg("1024")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut server = Server { child, name: "smtp-sink" };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = server.child.try_wait()? {
            return Err(format!("smtp-sink exited during start-up ({status})").into());
        }
        if Instant::now() > deadline {
            server.stop();
            return Err("smtp-sink did not listen within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(server)
}

/// The SMTP server of a run: where its accepted mails land and how to reach it.
struct Smtp {
    servers: Vec<Server>,
    port: u16,
    /// The directory holding one file per accepted mail (Maildir `new/`, or smtp-sink's dump directory).
    mails: PathBuf,
    /// STARTTLS parameters for the bare client; `None`: plain SMTP.
    tls: Option<lettre::transport::smtp::client::TlsParameters>,
    name: &'static str,
}

impl Smtp {
    fn start(opts: &Options, pki: &pki::Pki, work: &Path) -> Result<Smtp> {
        let port = free_port();
        if opts.smtp == "aiosmtpd" {
            let maildir = work.join("Maildir");
            let servers = start_aiosmtpd(opts.smtp_procs, port, pki, &maildir)?;
            println!(
                "SMTP server: aiosmtpd 1.4.6 (STARTTLS required, Maildir writer), {} process(es) on port {port}",
                opts.smtp_procs
            );
            let tls = Some(tls_parameters(pki)?);
            Ok(Smtp { servers, port, mails: maildir.join("new"), tls, name: "aiosmtpd" })
        } else {
            // The server stands for the operator's relay: its files go to memory (/dev/shm) when there is
            // one, not to the disk under test.
            let shm = Path::new("/dev/shm");
            let dump = if shm.is_dir() {
                tempfile::Builder::new().prefix("relais-smtp-sink-").tempdir_in(shm)?.keep()
            } else {
                work.join("smtp-sink")
            };
            let server = start_smtp_sink(port, &dump)?;
            println!(
                "SMTP server: Postfix smtp-sink (plain SMTP, TLS off for this figure; one file per accepted \
                 mail, in {}) on port {port}",
                dump.display()
            );
            Ok(Smtp { servers: vec![server], port, mails: dump, tls: None, name: "smtp-sink" })
        }
    }

    fn pids(&self) -> Vec<String> {
        self.servers.iter().map(Server::pid).collect()
    }

    /// Mails the server accepted so far.
    fn count(&self) -> usize {
        std::fs::read_dir(&self.mails).map(|d| d.count()).unwrap_or(0)
    }

    /// `tls` settings of the mss sink for this server.
    fn sink_tls(&self, pki: &pki::Pki) -> String {
        match self.tls {
            Some(_) => format!("tls_name = \"localhost\"\nca = {:?}\n", pki.ca.display().to_string()),
            None => "tls = \"none\"\n".into(),
        }
    }
}

fn tls_parameters(pki: &pki::Pki) -> Result<lettre::transport::smtp::client::TlsParameters> {
    use lettre::transport::smtp::client::{Certificate, CertificateStore, TlsParameters};
    let ca = Certificate::from_pem(&std::fs::read(&pki.ca)?)?;
    Ok(TlsParameters::builder("localhost".into())
        .certificate_store(CertificateStore::None)
        .add_root_certificate(ca)
        .build_rustls()?)
}

/// A mail the size of a notification (about 1.5 KB).
fn ceiling_mail(n: usize) -> lettre::Message {
    let body = "Madame, Monsieur,\n\nVotre patient(e) a été admis(e) au CH de Test. ".repeat(20);
    lettre::Message::builder()
        .from("notifications@ch-test.mssante.fr".parse().unwrap())
        .to(format!("gp{}@medecin.mssante.fr", n % 500).parse().unwrap())
        .subject(format!("Hospitalisation : CEILING{n}"))
        .body(body)
        .unwrap()
}

/// Sends `total` mails from `conns` tasks; `reuse` keeps one SMTP connection per task, else each mail has its
/// own (connect, EHLO, [STARTTLS, EHLO,] mail, QUIT: what the sink's transport does without a pool).
async fn smtp_ceiling(
    tls: Option<lettre::transport::smtp::client::TlsParameters>,
    port: u16,
    total: usize,
    conns: usize,
    reuse: bool,
) -> Result<f64> {
    use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
    use lettre::transport::smtp::extension::ClientId;
    async fn connect(port: u16, tls: &Option<TlsParameters>) -> Result<AsyncSmtpConnection> {
        let hello = ClientId::default();
        // TCP_NODELAY as the sink does: lettre writes a mail's final `.` apart from its data, and with
        // Nagle's algorithm that write waits for the server's delayed ACK (40 ms).
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        tcp.set_nodelay(true)?;
        let mut c = AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &hello).await?;
        if let Some(tls) = tls {
            c.starttls(tls.clone(), &hello).await?;
        }
        Ok(c)
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for conn in 0..conns {
        let count = total / conns + usize::from(conn < total % conns);
        let tls = tls.clone();
        tasks.spawn(async move {
            let mut kept = None;
            for n in 0..count {
                let mail = ceiling_mail(conn * count + n);
                let c = match kept.take() {
                    Some(c) => c,
                    None => connect(port, &tls).await?,
                };
                let mut c = c;
                c.send(mail.envelope(), &mail.formatted()).await?;
                if reuse {
                    kept = Some(c);
                } else {
                    c.quit().await?;
                }
            }
            if let Some(mut c) = kept {
                c.quit().await?;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

// ---------------------------------------------------------------------------------------------------------
// Notifications

/// The INS (NIR) of synthetic patient `n`: 13 digits and the key 97 − (number mod 97).
fn ins(n: usize) -> String {
    let base = format!("2790351{:06}", n % 1_000_000);
    let number: u64 = base.parse().unwrap();
    format!("{base}{:02}", 97 - number % 97)
}

/// The RPPS (11 digits) of synthetic GP `g`.
fn rpps(g: usize) -> String {
    format!("1{:010}", 900_000_000 + g)
}

/// A directory extraction in the published column layout, with one personal mailbox per GP.
fn directory_file(gps: usize) -> String {
    let mut text = String::from(
        "Type de BAL|Adresse BAL|Type Identifiant PP|Identifiant PP|Identification nationale PP|\
         Civilité d'exercice|Nom d'exercice|Prénom d'exercice|Code Profession|Libellé Profession|\
         Code savoir-faire|Libellé savoir-faire\n",
    );
    for g in 0..gps {
        let id = rpps(g);
        text.push_str(&format!(
            "PER|gp{g}@medecin.mssante.fr|8|{id}|8{id}|DR|MEDECIN{g}|Traitant|10|Médecin|SM54|\
             Médecine générale\n"
        ));
    }
    text
}

/// The three events of patient `p` (A04 emergency entry, A01 admission, A03 discharge), ER7.
fn patient_events(p: usize, gps: usize) -> [Vec<u8>; 3] {
    let events = [
        ("A04", "ADT_A01", "E", "20240306101500", ""),
        ("A01", "ADT_A01", "I", "20240306110000", ""),
        ("A03", "ADT_A03", "I", "20240308120000", "20240308120000"),
    ];
    events.map(|(trigger, structure, class, at, discharge)| {
        TEMPLATE
            .replace("{MSH_TIME}", at)
            .replace("{EVENT_TIME}", at)
            .replace("{DISCHARGE_TIME}", discharge)
            .replace("{TRIGGER}", trigger)
            .replace("{STRUCTURE}", structure)
            .replace("{CONTROL_ID}", &format!("N{p}{trigger}"))
            .replace("{IPP}", &format!("B{p:07}"))
            .replace("{INS}", &ins(p))
            .replace("{FAMILY}", &format!("BENCH{p}"))
            .replace("{VISIT}", &format!("V{p:07}"))
            .replace("{MOVEMENT}", &format!("M{p}{trigger}"))
            .replace("{PATIENT_CLASS}", class)
            .replace("{RPPS}", &rpps(p % gps))
            .into_bytes()
    })
}

/// Sends `messages` on one MLLP connection with at most `window` unanswered; returns the non-AA count.
async fn mllp_connection(addr: std::net::SocketAddr, messages: Vec<Vec<u8>>, window: usize) -> Result<usize> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    let credits = Arc::new(tokio::sync::Semaphore::new(window));
    let total = messages.len();
    let send = {
        let credits = credits.clone();
        tokio::spawn(async move {
            for message in messages {
                credits.acquire().await?.forget();
                let mut frame = Vec::with_capacity(message.len() + 3);
                frame.push(0x0B);
                frame.extend_from_slice(&message);
                frame.extend_from_slice(&[0x1C, 0x0D]);
                writer.write_all(&frame).await?;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(writer)
        })
    };
    let (mut answered, mut not_aa) = (0, 0);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    while answered < total {
        if reader.read_buf(&mut buf).await? == 0 {
            return Err(format!("MLLP connection closed after {answered} of {total} ACKs").into());
        }
        while let Some(end) = memchr::memchr(0x1C, &buf) {
            if memchr::memmem::find(&buf[..end], b"MSA|AA").is_none() {
                not_aa += 1;
                if not_aa <= 3 {
                    eprintln!("not AA: {}", String::from_utf8_lossy(&buf[..end]).replace('\r', "\n  "));
                }
            }
            buf.advance(if buf.get(end + 1) == Some(&0x0D) { end + 2 } else { end + 1 });
            answered += 1;
            credits.add_permits(1);
        }
    }
    send.await??.shutdown().await?;
    Ok(not_aa)
}

/// Waits until `count()` reaches `expected`; gives up after [`STALL`] without progress. Returns when the
/// last one arrived (or `None` on a stall) and the count.
fn wait_for(expected: usize, mut count: impl FnMut() -> usize) -> (Option<Instant>, usize) {
    let mut last = (0, Instant::now());
    loop {
        let n = count();
        if n >= expected {
            return (Some(Instant::now()), n);
        }
        if n > last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > STALL {
            return (None, n);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn notifications(opts: &Options, runtime: &tokio::runtime::Runtime, work: &Path) -> Result<bool> {
    let pki = pki::Pki::new();
    let smtp = Smtp::start(opts, &pki, work)?;
    let (port, smtp_pids, server) = (smtp.port, smtp.pids(), smtp.name);
    let security = if smtp.tls.is_some() { "STARTTLS" } else { "plain SMTP" };

    // The SMTP server's own ceiling, with bare lettre clients (mails kept like the notifications).
    let n = opts.ceiling_mails;
    let per_mail = runtime.block_on(smtp_ceiling(smtp.tls.clone(), port, n, opts.conns, false))?;
    println!(
        "bare lettre, {} clients, one {security} connection per mail ({server} ceiling): {per_mail:.0} \
         mails/s ({n} mails)",
        opts.conns
    );
    let kept = runtime.block_on(smtp_ceiling(smtp.tls.clone(), port, n, opts.conns, true))?;
    println!(
        "bare lettre, {} kept {security} connections ({server} ceiling): {kept:.0} mails/s ({n} mails)",
        opts.conns
    );
    // Let the server finish writing the last files before counting.
    let (_, before) = wait_for(2 * n, || smtp.count());
    if before != 2 * n {
        return Err(format!("{server} kept {before} of the {} ceiling mails", 2 * n).into());
    }

    // The directory, imported before the server starts.
    let data = work.join("data");
    let directory = work.join("directory");
    let extraction = work.join("extraction-mssante-bench.txt");
    std::fs::write(&extraction, directory_file(opts.gps))?;
    let out = Command::new(env!("CARGO_BIN_EXE_relais"))
        .args(["directory", "--data"])
        .arg(&directory)
        .arg("import")
        .arg(&extraction)
        .output()?;
    if !out.status.success() {
        return Err(format!("directory import: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    println!("directory: {}", String::from_utf8_lossy(&out.stdout).trim());

    let routes = work.join("routes");
    std::fs::create_dir_all(&routes)?;
    std::fs::write(
        routes.join("gp.toml"),
        "[[route]]\nname = \"gp-events\"\ndestinations = [\"gp_notify\"]\n[route.when]\nkind = \"hl7v2\"\n\
         event_class = [\"sau_entry\", \"admission\", \"discharge\", \"death\", \"cancel\"]\n\
         gp_known = true\n",
    )?;
    let config = format!(
        "routes_dir = {routes:?}\nmappings_dir = {mappings:?}\n[bus]\npartitions = {partitions}\n\
         [sinks.mss]\nkind = \"mss\"\nhost = \"127.0.0.1\"\nport = {port}\n{tls}\
         from = \"notifications@ch-test.mssante.fr\"\nnil = \"NIL-RELAIS-BENCH\"\n\
         [sinks.gp_notify]\nkind = \"notify\"\nmail_via = \"mss\"\n\
         establishment = \"CH de Test\"\ncontact_phone = \"02 43 00 00 00\"\ndirectory = {directory:?}\n",
        routes = routes.display().to_string(),
        mappings = Path::new(ROOT).join("mappings").display().to_string(),
        tls = smtp.sink_tls(&pki),
        directory = directory.display().to_string(),
        partitions = opts.partitions,
    );
    let (mut relais, listeners) = start_relais(&data, &config)?;

    // Patients spread over the connections; each patient's three events in order on one connection.
    let mut per_conn: Vec<Vec<Vec<u8>>> = vec![Vec::new(); opts.conns];
    for p in 0..opts.patients {
        per_conn[p % opts.conns].extend(patient_events(p, opts.gps));
    }
    let expected = 3 * opts.patients;
    let relais_pid = vec![relais.pid()];
    let cpu_before = (cpu_of(&relais_pid), cpu_of(&smtp_pids));
    let started = Instant::now();
    let sender = runtime.spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for messages in per_conn {
            tasks.spawn(mllp_connection(listeners.mllp, messages, 64));
        }
        let mut not_aa = 0;
        while let Some(done) = tasks.join_next().await {
            not_aa += done??;
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((not_aa, started.elapsed()))
    });
    let (done_at, got) = wait_for(before + expected, || smtp.count());
    let (not_aa, acked_in) = runtime.block_on(sender)??;
    let cpu_after = (cpu_of(&relais_pid), cpu_of(&smtp_pids));
    relais.stop();
    let mails = smtp.mails.clone();
    drop(smtp);
    let Some(done_at) = done_at else {
        let log = std::fs::read_to_string(data.join("relais.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        return Err(format!(
            "stalled: {} of {expected} notifications accepted by {server}; relais log (last lines):\n{}",
            got - before,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
        .into());
    };
    let took = done_at - started;
    let rate = expected as f64 / took.as_secs_f64();
    let per = |d: Duration| d.as_secs_f64() * 1e6 / expected as f64;
    println!(
        "notifications end to end (MLLP -> mail accepted): {rate:.0} notifications/s ({expected} for {} \
         patients \
         in {:.2} s; all ACKed after {:.2} s, {not_aa} not AA)",
        opts.patients,
        took.as_secs_f64(),
        acked_in.as_secs_f64()
    );
    println!(
        "  per notification: relais CPU {:.0} us, {server} CPU {:.0} us; load average {}",
        per(cpu_after.0.saturating_sub(cpu_before.0)),
        per(cpu_after.1.saturating_sub(cpu_before.1)),
        load_average(),
    );

    // Each (patient, event) once, to the patient's GP.
    let mut seen = std::collections::BTreeMap::<(usize, String), usize>::new();
    for entry in std::fs::read_dir(&mails)? {
        let raw = std::fs::read(entry?.path())?;
        let Some(mail) = mail_parser::MessageParser::default().parse(&raw) else { continue };
        let subject = mail.subject().unwrap_or_default();
        let Some(at) = subject.find("BENCH") else { continue };
        let digits: String = subject[at + 5..].chars().take_while(char::is_ascii_digit).collect();
        let patient: usize = digits.parse()?;
        let to = mail.to().and_then(|a| a.first()).and_then(|a| a.address()).unwrap_or_default();
        if to != format!("gp{}@medecin.mssante.fr", patient % opts.gps) {
            return Err(format!("patient {patient}'s notification went to {to}").into());
        }
        let kind = subject.split(':').next().unwrap_or_default().trim().to_string();
        *seen.entry((patient, kind)).or_default() += 1;
    }
    let twice = seen.values().filter(|n| **n > 1).count();
    if seen.len() != expected || twice > 0 {
        return Err(format!("{} distinct notifications of {expected}, {twice} sent twice", seen.len()).into());
    }
    println!("  checked: {expected} distinct (patient, event) notifications, each once, to the patient's GP");
    if mails.starts_with("/dev/shm") && !opts.keep {
        std::fs::remove_dir_all(&mails)?;
    }
    println!(
        "notifications: {rate:.0}/s (target >= 1000: {}); {server} ceiling {per_mail:.0}/s one connection \
         per mail, {kept:.0}/s on kept connections",
        verdict(rate >= 1000.0)
    );
    Ok(rate >= 1000.0)
}

// ---------------------------------------------------------------------------------------------------------
// Documents

/// The samples' patients (INS, IPP): each document gets another patient's instead.
const SAMPLE_PATIENTS: [(&str, &str); 2] =
    [("248098765432174", "IPP-0042"), ("279035121518989", "1234567890121")];

/// The sample with its ClinicalDocument/id and setId made unique for document `n`, for patient `patient`
/// (INS and IPP replaced: documents spread over patients, hence over the bus partitions, as in a hospital).
fn unique_document(sample: &str, n: usize, patient: usize) -> Vec<u8> {
    let mut text = sample.to_string();
    for (sample_ins, sample_ipp) in SAMPLE_PATIENTS {
        text = text.replace(sample_ins, &ins(patient)).replace(sample_ipp, &format!("D{patient:07}"));
    }
    for (element, suffix) in [("<id ", ""), ("<setId ", ".0")] {
        let start = text.find(element).expect("id element");
        let end = start + text[start..].find("/>").expect("empty element") + 2;
        let replacement = format!("{element}root=\"1.2.250.1.999.8.{n}{suffix}\" extension=\"BENCH{n}\"/>");
        text.replace_range(start..end, &replacement);
    }
    text.into_bytes()
}

/// The `vihf.signing_key` / `signing_cert` lines (a real DMP refuses an unsigned VIHF): a self-signed RSA
/// 2048 *certificat de cachet* made with openssl in `work`; none with `BENCH_VIHF_SIGNED=0`.
fn vihf_signing(opts: &Options, work: &Path) -> Result<String> {
    if !opts.vihf_signed {
        println!("VIHF: unsigned (BENCH_VIHF_SIGNED=0)");
        return Ok(String::new());
    }
    let (key, cert) = (work.join("cachet.key"), work.join("cachet.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=relais-cachet"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()?;
    if !out.status.success() {
        return Err(format!("openssl req: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    println!("VIHF: signed (RSA 2048, RSA-SHA256) with a certificat de cachet made by openssl");
    Ok(format!("signing_key = {key:?}\nsigning_cert = {cert:?}\n"))
}

fn documents(opts: &Options, runtime: &tokio::runtime::Runtime, work: &Path) -> Result<bool> {
    let pki = pki::Pki::new();
    let (url, endpoint) = runtime.block_on(iti41_endpoint::start(pki.server_config_mtls()));
    let data = work.join("data-docs");
    let routes = work.join("routes-docs");
    std::fs::create_dir_all(&routes)?;
    std::fs::write(
        routes.join("dmp.toml"),
        "[[route]]\nname = \"documents-to-dmp\"\ndestinations = [\"dmp\"]\n[route.when]\n\
         event_class = \"document\"\nins_qualified = true\ndmp_opposition = false\n",
    )?;
    let config = format!(
        "routes_dir = {routes:?}\nmappings_dir = {mappings:?}\n[bus]\npartitions = {partitions}\n\
         [documents]\ntables = {tables:?}\n\
         [sinks.dmp]\nkind = \"dmp\"\nendpoint = {url:?}\nca = {ca:?}\nclient_cert = {cert:?}\n\
         client_key = {key:?}\nsource_id = \"1.2.250.1.999.3\"\nunique_id_root = \"1.2.250.1.999.3.1\"\n\
         [sinks.dmp.vihf]\nissuer = \"CN=relais-client,O=CH Test\"\nsubject_id = \"801234567897\"\n\
         subject_name = \"Plateforme documentaire CH Test\"\nstructure_id = \"1530000000\"\n\
         roles = [\"10^1.2.250.1.213.1.1.5.5^Médecin\"]\nhomologation = \"HOMOLOGATION-BENCH\"\n{signing}",
        routes = routes.display().to_string(),
        mappings = Path::new(ROOT).join("mappings").display().to_string(),
        tables = Path::new(ROOT).join("mappings/tables/xds").display().to_string(),
        ca = pki.ca.display().to_string(),
        cert = pki.client_cert.display().to_string(),
        key = pki.client_key.display().to_string(),
        partitions = opts.partitions,
        signing = vihf_signing(opts, work)?,
    );
    let (mut relais, listeners) = start_relais(&data, &config)?;
    let samples: Vec<String> = CDA_SAMPLES
        .iter()
        .map(|name| std::fs::read_to_string(Path::new(ROOT).join("test-messages/cda").join(name)))
        .collect::<std::io::Result<_>>()?;
    let bodies: Vec<Vec<u8>> = (0..opts.docs)
        .map(|n| unique_document(&samples[n % samples.len()], n, n % opts.doc_patients))
        .collect();
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    let mut per_client: Vec<Vec<Vec<u8>>> = vec![Vec::new(); opts.conns];
    for (n, body) in bodies.into_iter().enumerate() {
        per_client[n % opts.conns].push(body);
    }
    let post_url = format!("http://{}/cda", listeners.http);
    let relais_pid = vec![relais.pid()];
    let cpu_before = (cpu_of(&relais_pid), cpu_time("self").unwrap_or_default());
    let started = Instant::now();
    let poster = runtime.spawn(async move {
        let client = reqwest::Client::new();
        let mut tasks = tokio::task::JoinSet::new();
        for bodies in per_client {
            let (client, url) = (client.clone(), post_url.clone());
            tasks.spawn(async move {
                let mut refused = 0;
                for body in bodies {
                    let response =
                        client.post(&url).header("content-type", "application/xml").body(body).send().await?;
                    if response.status() != reqwest::StatusCode::ACCEPTED {
                        refused += 1;
                        if refused <= 3 {
                            eprintln!("POST /cda: {} {}", response.status(), response.text().await?);
                        }
                    }
                }
                Ok::<_, reqwest::Error>(refused)
            });
        }
        let mut refused = 0;
        while let Some(done) = tasks.join_next().await {
            refused += done??;
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((refused, started.elapsed()))
    });
    let (done_at, got) = wait_for(opts.docs, || endpoint.lock().unwrap().accepted);
    let (refused, posted_in) = runtime.block_on(poster)??;
    let cpu_after = (cpu_of(&relais_pid), cpu_time("self").unwrap_or_default());
    relais.stop();
    let Some(done_at) = done_at else {
        let log = std::fs::read_to_string(data.join("relais.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        return Err(format!(
            "stalled: {got} of {} documents at the endpoint ({refused} POSTs refused); relais log:\n{}",
            opts.docs,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
        .into());
    };
    let took = done_at - started;
    let rate = opts.docs as f64 / took.as_secs_f64();
    let per = |d: Duration| d.as_secs_f64() * 1e6 / opts.docs as f64;
    println!(
        "documents end to end (POST /cda -> ITI-41 Success): {rate:.0} docs/s ({} documents, {:.1} KB on \
         average, in {:.2} s; all POSTed after {:.2} s, {refused} refused)",
        opts.docs,
        bytes as f64 / 1024.0 / opts.docs as f64,
        took.as_secs_f64(),
        posted_in.as_secs_f64()
    );
    println!(
        "  per document: relais CPU {:.0} us, bench process (HTTP client + endpoint) CPU {:.0} us",
        per(cpu_after.0.saturating_sub(cpu_before.0)),
        per(cpu_after.1.saturating_sub(cpu_before.1)),
    );
    let seen = endpoint.lock().unwrap();
    if seen.unique_ids.len() != opts.docs || seen.duplicates > 0 || seen.refused > 0 {
        return Err(format!(
            "endpoint: {} distinct uniqueIds of {}, {} twice, {} refused",
            seen.unique_ids.len(),
            opts.docs,
            seen.duplicates,
            seen.refused
        )
        .into());
    }
    println!("  checked: {} distinct uniqueIds at the endpoint, each once", opts.docs);
    println!("documents: {rate:.0}/s (target >= 500: {})", verdict(rate >= 500.0));
    Ok(rate >= 500.0)
}

fn main() -> Result<()> {
    let opts = Options::from_env();
    let mut builder = tempfile::Builder::new();
    builder.prefix("relais-sinkbench-").disable_cleanup(opts.keep);
    let work = match &opts.dir {
        Some(parent) => builder.tempdir_in(parent)?,
        None => builder.tempdir()?,
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "sinks bench: {cores} cores, load average {} (before), work dir {}",
        load_average(),
        work.path().display()
    );
    println!("disk: write 4 KiB in place + fdatasync: {:.0}/s in the work dir", fdatasync_rate(work.path())?);
    // The load generators, the ITI-41 endpoint and the ceiling clients: 2 worker threads.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    if opts.runs("notify") {
        notifications(&opts, &runtime, work.path())?;
        println!("load average {}", load_average());
    }
    if opts.runs("docs") {
        documents(&opts, &runtime, work.path())?;
        println!("load average {}", load_average());
    }
    Ok(())
}
