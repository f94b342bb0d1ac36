//! Liveness and readiness: what `/health` and `/ready` report.
//!
//! [`Health`] is created by the server before the listeners, told when they are bound and when shutdown
//! begins. Readiness = the journal takes appends, the data directory accepts a synced write, the listeners are
//! bound, not stopping, and every [`ReadinessCheck`] a later stage registered (bus, sinks) passes. Liveness
//! only says the process answers; it never fails because of a dependency.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use serde::Serialize;
use serde_json::{Value, json};

use crate::journal::Journal;
use crate::server::BoundAddresses;

/// A readiness condition a later stage adds (e.g. "bus connected").
pub trait ReadinessCheck: Send + Sync {
    /// Short name, the key in `/ready`'s `checks`.
    fn name(&self) -> &str;
    /// `Ok(details)` when ready, `Err(reason)` otherwise. Must be quick (it runs on every probe).
    fn check(&self) -> Result<Value, String>;
}

/// Shared state behind the probes; cheap to clone.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    started: Instant,
    started_at: jiff::Timestamp,
    data_dir: PathBuf,
    journal: Journal,
    listeners: RwLock<Option<BoundAddresses>>,
    stopping: AtomicBool,
    checks: RwLock<Vec<Arc<dyn ReadinessCheck>>>,
}

/// One readiness condition's result.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// Whether it holds.
    pub ok: bool,
    /// Details when it holds, or why not.
    #[serde(skip_serializing_if = "Value::is_null")]
    pub detail: Value,
}

/// The body of `/ready`.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// True when every check holds.
    pub ready: bool,
    /// Each condition by name.
    pub checks: std::collections::BTreeMap<String, CheckResult>,
}

impl Health {
    /// Health of a server whose journal is `journal` and data directory `data_dir`.
    pub fn new(journal: Journal, data_dir: PathBuf) -> Health {
        Health {
            inner: Arc::new(Inner {
                started: Instant::now(),
                started_at: jiff::Timestamp::now(),
                data_dir,
                journal,
                listeners: RwLock::new(None),
                stopping: AtomicBool::new(false),
                checks: RwLock::new(Vec::new()),
            }),
        }
    }

    /// The listeners are bound (called once `listeners.json` is written).
    pub fn set_listeners(&self, bound: BoundAddresses) {
        *self.inner.listeners.write().unwrap_or_else(PoisonError::into_inner) = Some(bound);
    }

    /// Shutdown has begun: not ready any more.
    pub fn set_stopping(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
    }

    /// Adds a readiness condition.
    pub fn register(&self, check: Arc<dyn ReadinessCheck>) {
        self.inner.checks.write().unwrap_or_else(PoisonError::into_inner).push(check);
    }

    /// The `/health` body: always answered while the process runs.
    pub fn liveness(&self) -> Value {
        let commits = self.inner.journal.commit_stats();
        let listeners = self.inner.listeners.read().unwrap_or_else(PoisonError::into_inner).clone();
        json!({
            "status": if self.inner.stopping.load(Ordering::SeqCst) { "stopping" } else { "ok" },
            "version": env!("CARGO_PKG_VERSION"),
            "started_at": self.inner.started_at.to_string(),
            "uptime_seconds": self.inner.started.elapsed().as_secs(),
            "journal": {
                "accepting": self.inner.journal.is_accepting(),
                "commits": commits.commits,
                "entries": commits.entries,
                "mean_batch": commits.mean_batch(),
            },
            "listeners": listeners,
        })
    }

    /// Runs every readiness condition (blocking: it writes and syncs a probe file).
    pub fn readiness(&self) -> Readiness {
        let mut checks = std::collections::BTreeMap::new();
        let mut put = |name: &str, result: Result<Value, String>| {
            let result = match result {
                Ok(detail) => CheckResult { ok: true, detail },
                Err(reason) => CheckResult { ok: false, detail: Value::String(reason) },
            };
            checks.insert(name.to_string(), result);
        };
        put(
            "stopping",
            if self.inner.stopping.load(Ordering::SeqCst) {
                Err("shutdown in progress".into())
            } else {
                Ok(Value::Null)
            },
        );
        put(
            "journal",
            if self.inner.journal.is_accepting() {
                Ok(Value::Null)
            } else {
                Err("the journal is closed".into())
            },
        );
        put("data_dir", self.probe_data_dir());
        let listeners = self.inner.listeners.read().unwrap_or_else(PoisonError::into_inner).clone();
        put(
            "listeners",
            match listeners {
                Some(bound) => Ok(serde_json::to_value(bound).unwrap_or(Value::Null)),
                None => Err("listeners not bound yet".into()),
            },
        );
        let registered = self.inner.checks.read().unwrap_or_else(PoisonError::into_inner).clone();
        for check in registered {
            put(check.name(), check.check());
        }
        let ready = checks.values().all(|c| c.ok);
        Readiness { ready, checks }
    }

    /// Writes, syncs and removes a small file in the data directory.
    fn probe_data_dir(&self) -> Result<Value, String> {
        use std::io::Write;
        let path = self.inner.data_dir.join(".ready-probe");
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&path)?;
            file.write_all(b"ready")?;
            file.sync_data()?;
            std::fs::remove_file(&path)
        };
        write()
            .map(|()| Value::Null)
            .map_err(|e| format!("{} not writable: {e}", self.inner.data_dir.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::JournalConfig;

    #[tokio::test]
    async fn ready_only_with_listeners_an_open_journal_and_a_writable_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let journal = Journal::open(JournalConfig::new(data.join("journal.redb"))).unwrap();
        let health = Health::new(journal.clone(), data.clone());

        let before = health.readiness();
        assert!(!before.ready);
        assert!(!before.checks["listeners"].ok);
        health.set_listeners(BoundAddresses::default());
        assert!(health.readiness().ready);

        struct Bus(bool);
        impl ReadinessCheck for Bus {
            fn name(&self) -> &str {
                "bus"
            }
            fn check(&self) -> Result<Value, String> {
                if self.0 { Ok(Value::Null) } else { Err("not connected".into()) }
            }
        }
        health.register(Arc::new(Bus(false)));
        let with_bus = health.readiness();
        assert!(!with_bus.ready);
        assert_eq!(with_bus.checks["bus"].detail, "not connected");

        let health = Health::new(journal.clone(), data.join("missing"));
        health.set_listeners(BoundAddresses::default());
        let no_dir = health.readiness();
        assert!(!no_dir.ready);
        assert!(!no_dir.checks["data_dir"].ok);

        let health = Health::new(journal.clone(), data.clone());
        health.set_listeners(BoundAddresses::default());
        journal.close().await.unwrap();
        let closed = health.readiness();
        assert!(!closed.ready);
        assert!(!closed.checks["journal"].ok);
        assert!(closed.checks["data_dir"].ok);
        health.set_stopping();
        assert!(!health.readiness().checks["stopping"].ok);
        assert_eq!(health.liveness()["status"], "stopping");
    }
}
