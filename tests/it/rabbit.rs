//! A private, throwaway RabbitMQ node on 127.0.0.1 for tests and benches: its own ports (AMQP P,
//! distribution P+1, epmd P+2, CLI P+3..P+9), data dir and epmd, started and stopped by PID, nothing left
//! running; the ports lie below the ephemeral range, so that none is taken while the broker is stopped
//! (see `ports`). Installs Debian's rabbitmq-server through `scripts/setup.d/30-rabbitmq.sh` when absent.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ports::free_port_block;

const RABBIT_BIN: &str = "/usr/lib/rabbitmq/bin";

/// A running node (broker + its epmd); dropped = stopped.
pub struct RabbitNode {
    base: tempfile::TempDir,
    port: u16,
    epmd: Child,
    broker: Option<Child>,
}

impl RabbitNode {
    /// Starts epmd and the broker; returns once AMQP answers.
    pub fn start() -> RabbitNode {
        ensure_rabbitmq_installed();
        let base = tempfile::tempdir().unwrap();
        let port = free_port_block(10);
        for dir in ["home", "mnesia", "log", "plugins-expand"] {
            std::fs::create_dir_all(base.path().join(dir)).unwrap();
        }
        std::fs::write(base.path().join("enabled_plugins"), "[].\n").unwrap();
        std::fs::write(
            base.path().join("rabbitmq.conf"),
            format!(
                "listeners.tcp.1 = 127.0.0.1:{port}\nloopback_users.guest = true\n\
                 disk_free_limit.absolute = 50MB\nlog.console = false\n"
            ),
        )
        .unwrap();
        let epmd = Command::new("epmd")
            .args(["-address", "127.0.0.1", "-port", &(port + 2).to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting epmd");
        let mut node = RabbitNode { base, port, epmd, broker: None };
        node.start_broker();
        node
    }

    fn env(&self) -> Vec<(String, String)> {
        let b = self.base.path().display().to_string();
        let p = self.port;
        let dist = "-kernel inet_dist_use_interface {127,0,0,1}";
        [
            ("RABBITMQ_NODENAME", format!("rabbit-test-{p}@localhost")),
            ("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1".into()),
            ("RABBITMQ_NODE_PORT", p.to_string()),
            ("RABBITMQ_DIST_PORT", (p + 1).to_string()),
            ("ERL_EPMD_PORT", (p + 2).to_string()),
            ("ERL_EPMD_ADDRESS", "127.0.0.1".into()),
            ("RABBITMQ_CTL_DIST_PORT_MIN", (p + 3).to_string()),
            ("RABBITMQ_CTL_DIST_PORT_MAX", (p + 9).to_string()),
            ("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", dist.into()),
            ("RABBITMQ_CTL_ERL_ARGS", dist.into()),
            ("RABBITMQ_CONF_ENV_FILE", "/dev/null".into()),
            ("RABBITMQ_CONFIG_FILE", format!("{b}/rabbitmq.conf")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE", format!("{b}/enabled_plugins")),
            ("RABBITMQ_MNESIA_BASE", format!("{b}/mnesia")),
            ("RABBITMQ_LOG_BASE", format!("{b}/log")),
            // A node that fails early writes its crash dump in the working directory otherwise.
            ("ERL_CRASH_DUMP", format!("{b}/log/erl_crash.dump")),
            ("RABBITMQ_PID_FILE", format!("{b}/rabbit.pid")),
            ("RABBITMQ_PLUGINS_EXPAND_DIR", format!("{b}/plugins-expand")),
            ("RABBITMQ_ALLOW_INPUT", "1".into()),
            ("HOME", format!("{b}/home")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Starts the broker again (same data dir and ports); returns once AMQP answers.
    pub fn start_broker(&mut self) {
        let broker = Command::new(format!("{RABBIT_BIN}/rabbitmq-server"))
            .arg("-noinput")
            .envs(self.env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting rabbitmq-server");
        self.broker = Some(broker);
        // A restart on a loaded 2-core machine (the other tests run beside it) has taken over 60 s.
        let deadline = Instant::now() + Duration::from_secs(120);
        while !amqp_answers(self.port) {
            if let Some(status) = self.broker.as_mut().and_then(|b| b.try_wait().unwrap()) {
                self.broker = None; // reaped: its PID may be reused, never signal it again
                panic!(
                    "RabbitMQ on port {} exited before answering ({status}); its log ends:\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "RabbitMQ did not answer on port {} within 120 s; its log ends:\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines of the node's log files and the reason of a crash dump, for a failure message.
    fn log_tail(&self) -> String {
        let mut tail = String::new();
        for entry in std::fs::read_dir(self.base.path().join("log")).into_iter().flatten().flatten() {
            let text = String::from_utf8_lossy(&std::fs::read(entry.path()).unwrap_or_default()).into_owned();
            let lines: Vec<&str> = if entry.file_name() == "erl_crash.dump" {
                text.lines().filter(|line| line.starts_with("Slogan:")).collect()
            } else {
                text.lines().collect()
            };
            tail += &format!("== {}\n", entry.path().display());
            for line in &lines[lines.len().saturating_sub(25)..] {
                tail += line;
                tail.push('\n');
            }
        }
        tail
    }

    /// Stops the broker cleanly (SIGTERM, SIGKILL after 30 s); epmd stays.
    pub fn stop_broker(&mut self) {
        if let Some(mut broker) = self.broker.take() {
            signal(broker.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if broker.try_wait().unwrap().is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = broker.kill();
                    let _ = broker.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// The AMQP URL of the node (user guest).
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        self.stop_broker();
        let _ = self.epmd.kill();
        let _ = self.epmd.wait();
    }
}

fn ensure_rabbitmq_installed() {
    if Path::new(RABBIT_BIN).join("rabbitmq-server").exists() {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup.d/30-rabbitmq.sh");
    let status = Command::new("sh").arg(&script).status().expect("running 30-rabbitmq.sh");
    assert!(
        status.success() && Path::new(RABBIT_BIN).join("rabbitmq-server").exists(),
        "rabbitmq-server missing"
    );
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status();
}

fn amqp_answers(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"AMQP\x00\x00\x09\x01").is_err() {
        return false;
    }
    let mut first = [0u8; 1];
    stream.read_exact(&mut first).is_ok() && first[0] == 1
}
