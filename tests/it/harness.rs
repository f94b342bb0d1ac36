//! Test harness: runs the real `relais` binary and talks to it the way a DPI and an operator would.
//!
//! - [`Relais`]: `relais serve` on a private temporary data dir, every listener on `127.0.0.1:0`; the bound
//!   addresses come from `<data_dir>/listeners.json`. Stop with SIGTERM ([`Relais::stop`]) or SIGKILL
//!   ([`Relais::kill`]), start again on the same data dir ([`Relais::restart`]). Dropped = killed.
//! - [`MllpClient`]: one MLLP connection (plain TCP, or any `Read + Write` stream such as a rustls one):
//!   send framed or raw bytes, read ACK frames; [`mllp_send`] is the one-shot form.
//! - [`Ack`]: an independent reader for the ACKs the tests receive (MSA, ERR, MSH fields), so tests do not
//!   check the server with its own parser.
//! - HTTP through `reqwest::blocking`: [`Relais::post_hl7v2`], [`Relais::get_json`], [`Relais::stats`].
//!
//! Every wait polls against a deadline ([`TIMEOUT`], 30 s): nothing here sleeps to synchronise.

#![allow(dead_code)] // each test module uses its own part of the harness

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for anything (start-up, an ACK, a stop): generous for a loaded 2-core machine.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// MLLP start byte.
pub const SB: u8 = 0x0B;
/// MLLP end bytes.
pub const EB: [u8; 2] = [0x1C, 0x0D];

/// The repository's `test-messages/` directory.
pub fn test_messages() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("test-messages")
}

/// Reads `test-messages/<rel>`.
pub fn sample(rel: &str) -> Vec<u8> {
    let path = test_messages().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The files of `test-messages/<dir>`, sorted by name.
pub fn samples_in(dir: &str) -> Vec<PathBuf> {
    let dir = test_messages().join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x != "md"))
        .collect();
    files.sort();
    files
}

/// The addresses in `listeners.json`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Listeners {
    /// Plain MLLP.
    pub mllp: Option<SocketAddr>,
    /// MLLP over TLS.
    pub mllp_tls: Option<SocketAddr>,
    /// HTTP.
    pub http: Option<SocketAddr>,
}

/// A running (or stopped) `relais serve` process with its own temporary directory.
pub struct Relais {
    /// Holds `data/`, `relais.log` and an optional `relais.toml`; removed on drop.
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    /// Extra arguments after `serve`.
    args: Vec<String>,
    config: Option<PathBuf>,
    child: Option<Child>,
    listeners: Listeners,
    /// Run counter: each start logs to `relais.<n>.log`.
    runs: usize,
}

impl Relais {
    /// Starts `relais serve` with MLLP and HTTP on `127.0.0.1:0` and an empty data dir.
    pub fn start() -> Relais {
        Relais::start_with(&[])
    }

    /// As [`Relais::start`], with extra `RELAIS__…` variables (they override the harness's own, as does
    /// `RELAIS_LOG`, `info` by default).
    pub fn start_with(env: &[(&str, &str)]) -> Relais {
        Relais::launch(None, env)
    }

    /// As [`Relais::start_with`], with a `relais.toml` holding `toml` (for lists and tables that environment
    /// variables cannot express, e.g. `[mllp.tls] allowed_clients = [...]`).
    pub fn start_with_config(toml: &str, env: &[(&str, &str)]) -> Relais {
        Relais::launch(Some(toml), env)
    }

    /// Runs `relais serve` with settings that must be refused: returns its exit status and log once it exits.
    pub fn start_failure(env: &[(&str, &str)]) -> (ExitStatus, String) {
        let mut relais = Relais::prepare(None, env);
        relais.runs += 1;
        let mut child = relais.command().spawn().expect("spawning relais");
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("relais kept running with settings it should refuse; log:\n{}", relais.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (status, relais.log())
    }

    /// As [`Relais::start_with`], with extra `relais serve` arguments; `{data}` in one stands for the data dir
    /// (e.g. `["--data", "{data}"]` with `RELAIS__DATA_DIR` pointing elsewhere).
    pub fn start_with_args(args: &[&str], env: &[(&str, &str)]) -> Relais {
        let mut relais = Relais::prepare(None, env);
        let data = relais.data_dir().display().to_string();
        relais.args = args.iter().map(|a| a.replace("{data}", &data)).collect();
        relais.spawn();
        relais
    }

    fn launch(toml: Option<&str>, env: &[(&str, &str)]) -> Relais {
        let mut relais = Relais::prepare(toml, env);
        relais.spawn();
        relais
    }

    fn prepare(toml: Option<&str>, env: &[(&str, &str)]) -> Relais {
        let dir = tempfile::Builder::new().prefix("relais-it-").tempdir().expect("temp dir");
        let config = toml.map(|text| {
            let path = dir.path().join("relais.toml");
            std::fs::write(&path, text).expect("writing relais.toml");
            path
        });
        let data = dir.path().join("data");
        let mut all = vec![
            ("RELAIS__DATA_DIR".to_string(), data.display().to_string()),
            ("RELAIS__MLLP__LISTEN".to_string(), "127.0.0.1:0".to_string()),
            ("RELAIS__HTTP__LISTEN".to_string(), "127.0.0.1:0".to_string()),
            // Info level, as in production: tests check the log for patient data at that level.
            ("RELAIS_LOG".to_string(), "info".to_string()),
        ];
        for (k, v) in env {
            all.retain(|(key, _)| key != k);
            all.push((k.to_string(), v.to_string()));
        }
        Relais {
            dir,
            env: all,
            args: Vec::new(),
            config,
            child: None,
            listeners: Listeners::default(),
            runs: 0,
        }
    }

    /// Starts the process again on the same data dir and settings (after [`Relais::stop`] or
    /// [`Relais::kill`]). Ports are new: read them again from [`Relais::mllp_addr`] and friends.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart() while relais is still running");
        self.spawn();
    }

    fn spawn(&mut self) {
        let listeners_file = self.data_dir().join("listeners.json");
        // A killed process leaves its listeners.json behind: it must not be mistaken for the new one.
        let _ = std::fs::remove_file(&listeners_file);
        self.runs += 1;
        let child = self.command().spawn().expect("spawning relais");
        self.child = Some(child);

        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Ok(bytes) = std::fs::read(&listeners_file)
                && let Ok(listeners) = serde_json::from_slice::<Listeners>(&bytes)
            {
                self.listeners = listeners;
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                panic!("relais exited during start-up ({status}); log:\n{}", self.log());
            }
            if Instant::now() > deadline {
                panic!("relais did not write listeners.json within {TIMEOUT:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `relais serve` with this instance's settings, logging to the current run's log file.
    fn command(&self) -> Command {
        let log = std::fs::File::create(self.log_path()).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_relais"));
        command.arg("serve").args(&self.args);
        if let Some(config) = &self.config {
            command.arg("--config").arg(config);
        }
        // Only the harness's settings reach the server: nothing from the developer's shell.
        for (key, _) in std::env::vars() {
            if key.starts_with("RELAIS") {
                command.env_remove(key);
            }
        }
        // The server runs in its temp dir: point it at the repository's mapping rules and tables.
        command
            .env("RELAIS__MAPPINGS_DIR", concat!(env!("CARGO_MANIFEST_DIR"), "/mappings"))
            .env("RELAIS__DOCUMENTS__TABLES", concat!(env!("CARGO_MANIFEST_DIR"), "/mappings/tables/xds"))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        command
    }

    /// Sends SIGTERM and waits for the process to exit (graceful stop); returns its exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM)
    }

    /// Sends SIGKILL (`kill -9`) and reaps the process.
    pub fn kill(&mut self) -> ExitStatus {
        self.signal(libc::SIGKILL)
    }

    /// Sends SIGTERM without waiting (to stop while a client is mid-stream); follow with [`Relais::wait`].
    pub fn terminate(&mut self) {
        let child = self.child.as_ref().expect("relais is not running");
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM) failed");
    }

    /// Waits (up to [`TIMEOUT`]) for the process to exit, then SIGKILLs it and fails the test.
    pub fn wait(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("relais is not running");
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("relais did not exit within {TIMEOUT:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&mut self, signal: libc::c_int) -> ExitStatus {
        let child = self.child.as_ref().expect("relais is not running");
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({signal}) failed");
        self.wait()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// The plain MLLP address.
    pub fn mllp_addr(&self) -> SocketAddr {
        self.listeners.mllp.expect("no plain MLLP listener")
    }

    /// The MLLP over TLS address.
    pub fn mllp_tls_addr(&self) -> SocketAddr {
        self.listeners.mllp_tls.expect("no MLLP over TLS listener")
    }

    /// The HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.listeners.http.expect("no HTTP listener")
    }

    /// `http://<http addr>` (no trailing slash); a wildcard bind (`0.0.0.0`) is reached on 127.0.0.1.
    pub fn http_url(&self) -> String {
        let mut addr = self.http_addr();
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    }

    /// The data dir (`journal.redb`, `listeners.json`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The temporary directory holding the data dir, logs and config; a place for test files too.
    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("relais.{}.log", self.runs))
    }

    /// Everything the current (or last) run wrote to stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The bearer token the harness was given (`RELAIS__HTTP__ADMIN_TOKEN`), if any.
    fn admin_token(&self) -> Option<&str> {
        self.env.iter().find(|(k, _)| k == "RELAIS__HTTP__ADMIN_TOKEN").map(|(_, v)| v.as_str())
    }

    /// `POST /hl7v2` with `body`; returns the status and the response body.
    pub fn post_hl7v2(&self, body: &[u8]) -> (u16, Vec<u8>) {
        let response = http()
            .post(format!("{}/hl7v2", self.http_url()))
            .header("content-type", "x-application/hl7-v2+er7")
            .body(body.to_vec())
            .send()
            .expect("POST /hl7v2");
        let status = response.status().as_u16();
        (status, response.bytes().expect("body").to_vec())
    }

    /// `GET <path>` on the HTTP port, with the admin token when one was configured; returns status and body.
    pub fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let mut request = http().get(format!("{}{path}", self.http_url()));
        if let Some(token) = self.admin_token() {
            request = request.bearer_auth(token);
        }
        let response = request.send().unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status().as_u16();
        (status, response.bytes().expect("body").to_vec())
    }

    /// `GET <path>`, expecting 200 and JSON.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e})"))
    }

    /// `GET /api/stats` as a map of counts.
    pub fn stats(&self) -> std::collections::BTreeMap<String, u64> {
        serde_json::from_value(self.get_json("/api/stats")).expect("stats are counts")
    }

    /// Metadata of the newest `limit` entries that were accepted (every state but `rejected`).
    pub fn accepted(&self, limit: usize) -> Vec<serde_json::Value> {
        self.messages("", limit).into_iter().filter(|m| m["state"] != "rejected").collect()
    }

    /// `GET /api/messages?state=<state>&limit=<limit>` (state may be empty for all states).
    pub fn messages(&self, state: &str, limit: usize) -> Vec<serde_json::Value> {
        let value = self.get_json(&format!("/api/messages?state={state}&limit={limit}"));
        value.as_array().expect("a JSON array").clone()
    }
}

impl Drop for Relais {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A blocking HTTP client with the harness timeout.
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(TIMEOUT).build().expect("HTTP client")
}

/// Wraps `message` in MLLP framing.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 3);
    out.push(SB);
    out.extend_from_slice(message);
    out.extend_from_slice(&EB);
    out
}

/// One MLLP connection. Reads are bounded by [`TIMEOUT`].
pub struct MllpClient<S: Read + Write = TcpStream> {
    stream: S,
    buf: Vec<u8>,
}

impl MllpClient<TcpStream> {
    /// Connects over plain TCP.
    pub fn connect(addr: SocketAddr) -> MllpClient<TcpStream> {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connecting to MLLP");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        let _ = stream.set_nodelay(true);
        MllpClient::over(stream)
    }
}

impl<S: Read + Write> MllpClient<S> {
    /// A client over an already connected stream (set its timeouts first).
    pub fn over(stream: S) -> MllpClient<S> {
        MllpClient { stream, buf: Vec::new() }
    }

    /// Sends one message, framed.
    pub fn send(&mut self, message: &[u8]) {
        self.send_raw(&frame(message));
    }

    /// Sends bytes as they are (no framing added).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("writing to MLLP");
        self.stream.flush().expect("flushing MLLP");
    }

    /// Reads the next frame's content; panics on timeout or when the server closes first.
    pub fn read_frame(&mut self) -> Vec<u8> {
        self.try_read_frame().expect("the server closed the connection before answering")
    }

    /// Reads the next frame's content, `None` when the server closed the connection (EOF or reset) first.
    pub fn try_read_frame(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(start) = self.buf.iter().position(|&b| b == SB)
                && let Some(len) = self.buf[start..].windows(2).position(|w| w == EB)
            {
                let content = self.buf[start + 1..start + len].to_vec();
                self.buf.drain(..start + len + 2);
                return Some(content);
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    panic!("no MLLP answer within {TIMEOUT:?}")
                }
                Err(_) => return None,
            }
        }
    }

    /// Reads the next ACK.
    pub fn read_ack(&mut self) -> Ack {
        Ack::parse(&self.read_frame())
    }

    /// Sends one message and reads its ACK.
    pub fn exchange(&mut self, message: &[u8]) -> Ack {
        self.send(message);
        self.read_ack()
    }

    /// Whether the server has closed the connection: reads until EOF (ignoring any further frames).
    pub fn closed_by_server(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    return false;
                }
                Err(_) => return true,
            }
        }
    }

    /// The underlying stream.
    pub fn stream(&mut self) -> &mut S {
        &mut self.stream
    }
}

/// Connects, sends one message, returns the ACK bytes, closes.
pub fn mllp_send(addr: SocketAddr, message: &[u8]) -> Vec<u8> {
    let mut client = MllpClient::connect(addr);
    client.send(message);
    client.read_frame()
}

/// An ACK as the tests read it: segments split on CR, fields on the MSH-1 separator.
#[derive(Debug, Clone)]
pub struct Ack {
    /// The ACK bytes.
    pub raw: Vec<u8>,
    /// Segments (split on CR), as lossy UTF-8; enough for the ASCII fields tests look at.
    segments: Vec<Vec<String>>,
}

impl Ack {
    /// Reads an ACK; panics when it does not start with `MSH`.
    pub fn parse(raw: &[u8]) -> Ack {
        assert!(
            raw.starts_with(b"MSH") && raw.len() > 4,
            "not an HL7 message: {:?}",
            String::from_utf8_lossy(raw)
        );
        let sep = raw[3] as char;
        let text = String::from_utf8_lossy(raw);
        let segments = text
            .split(['\r', '\n'])
            .filter(|s| !s.is_empty())
            .map(|s| {
                let mut fields: Vec<String> = s.split(sep).map(str::to_string).collect();
                if fields[0] == "MSH" {
                    // MSH-1 is the separator itself: keep numbering as in the standard.
                    fields.insert(1, sep.to_string());
                }
                fields
            })
            .collect();
        Ack { raw: raw.to_vec(), segments }
    }

    /// Field `n` of the first segment named `segment` (MSH numbered as in HL7: MSH-1 is the separator).
    pub fn field(&self, segment: &str, n: usize) -> String {
        self.segments.iter().find(|s| s[0] == segment).and_then(|s| s.get(n).cloned()).unwrap_or_default()
    }

    /// Whether a segment with this name exists.
    pub fn has(&self, segment: &str) -> bool {
        self.segments.iter().any(|s| s[0] == segment)
    }

    /// MSA-1: AA, AE or AR.
    pub fn code(&self) -> String {
        self.field("MSA", 1)
    }

    /// MSA-2: the control id of the message acknowledged.
    pub fn acked_id(&self) -> String {
        self.field("MSA", 2)
    }

    /// ERR-2 (`segment^sequence^field`).
    pub fn err_location(&self) -> String {
        self.field("ERR", 2)
    }

    /// ERR-3.1: the table 0357 code.
    pub fn err_code(&self) -> String {
        self.field("ERR", 3).split('^').next().unwrap_or_default().to_string()
    }

    /// ERR-8: the explanation.
    pub fn err_text(&self) -> String {
        self.field("ERR", 8)
    }
}

/// Reads MSH-`n` of a message (MSH-1 = the separator), as lossy UTF-8.
pub fn msh_field(message: &[u8], n: usize) -> String {
    let line_end = message.iter().position(|&b| b == b'\r' || b == b'\n').unwrap_or(message.len());
    let msh = String::from_utf8_lossy(&message[..line_end]).into_owned();
    let sep = msh.chars().nth(3).expect("MSH-1");
    if n == 1 {
        return sep.to_string();
    }
    msh.split(sep).nth(n - 1).unwrap_or_default().to_string()
}

/// Replaces MSH-`n` (n ≥ 3) of `message` with `value`.
pub fn with_msh_field(message: &[u8], n: usize, value: &str) -> Vec<u8> {
    assert!(n >= 3);
    let line_end = message.iter().position(|&b| b == b'\r' || b == b'\n').unwrap_or(message.len());
    let sep = message[3];
    let msh = &message[..line_end];
    let mut fields: Vec<&[u8]> = msh.split(|&b| b == sep).collect();
    while fields.len() < n {
        fields.push(b"");
    }
    fields[n - 1] = value.as_bytes();
    let mut out = fields.join(&[sep][..]);
    out.extend_from_slice(&message[line_end..]);
    out
}

/// Polls `check` until it returns `Some`, or panics with `what` after [`TIMEOUT`].
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {TIMEOUT:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The 1.6 KB PAM FR ADT^A01 of `test-messages/bench/` (CR segment ends) with MSH-10 set to `control_id`.
pub fn adt(control_id: &str) -> Vec<u8> {
    with_msh_field(&sample("bench/adt_a01_fr.hl7"), 10, control_id)
}

/// MSH-10 of every accepted message (any state but `rejected`: the pipeline moves accepted messages on from
/// `received` to `mapped`, `routed`, `unrouted`, `failed`…), newest first.
pub fn accepted_ids(relais: &Relais, limit: usize) -> Vec<String> {
    relais.accepted(limit).iter().filter_map(|m| m["control_id"].as_str().map(str::to_string)).collect()
}

/// Splits the samples into groups in which no two share MSH-4 + MSH-10, so each group can go to one server
/// without tripping de-duplication (the ANS corpus reuses `CHU-X` + `3975` for two different A01s).
pub fn groups_without_shared_control_ids(files: &[PathBuf]) -> Vec<Vec<PathBuf>> {
    /// MSH-4 and MSH-10.
    type Key = (String, String);
    // Each group: the keys it holds, and its files.
    let mut groups: Vec<(Vec<Key>, Vec<PathBuf>)> = Vec::new();
    for file in files {
        let bytes = std::fs::read(file).unwrap();
        let key = (msh_field(&bytes, 4), msh_field(&bytes, 10));
        match groups.iter_mut().find(|(keys, _)| !keys.contains(&key)) {
            Some((keys, members)) => {
                keys.push(key);
                members.push(file.clone());
            }
            None => groups.push((vec![key], vec![file.clone()])),
        }
    }
    groups.into_iter().map(|(_, members)| members).collect()
}

impl Relais {
    /// Sends SIGHUP (reload the routes) to the running process, without waiting.
    pub fn hangup(&self) {
        let child = self.child.as_ref().expect("relais is not running");
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGHUP) };
        assert_eq!(rc, 0, "kill(SIGHUP) failed");
    }
}

/// An admission envelope of journal entry `id` for `sink`, in `patient`'s partition, its bundle `{"id":<id>}`:
/// what the bus and sink tests publish by hand.
pub fn admission_envelope(sink: &str, id: u64, patient: &str) -> relais::bus::Envelope {
    relais::bus::Envelope {
        message_id: id,
        sink: sink.into(),
        route: "gp".into(),
        kind: relais::facts::MessageKind::Hl7v2,
        event_class: Some(relais::facts::EventClass::Admission),
        partition_key: relais::bus::partition_key(patient),
        document: None,
        document_ref: None,
        xds: None,
        bundle: bytes::Bytes::from(format!("{{\"id\":{id}}}")),
    }
}
