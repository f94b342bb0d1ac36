//! Paused sinks: an operator stops a sink taking from its bus partitions, then resumes it.
//!
//! While a sink is paused its partition loops finish the delivery in hand, then stop asking the bus for the
//! next one: envelopes stay queued on the bus in order, nothing is lost or reordered. The set of paused sinks
//! lives in `<data_dir>/paused-sinks.json` (written atomically before the change takes effect), so a pause
//! survives a restart. The gauge `relais_sink_paused{sink}` is 1 while a sink is paused.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use crate::ops::metrics::SINK_PAUSED;

/// The file, inside the data directory, holding the paused sinks (a JSON array of names).
pub const FILE_NAME: &str = "paused-sinks.json";

/// The paused-sinks file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("paused sinks file {path}: {reason}")]
pub struct Error {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

/// The paused sinks, shared by the admin API and the sink loops; cheap to clone.
#[derive(Clone)]
pub struct Pauses {
    inner: Arc<Inner>,
}

struct Inner {
    path: Option<PathBuf>,
    state: watch::Sender<BTreeSet<String>>,
    write: Mutex<()>,
}

impl std::fmt::Debug for Pauses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pauses").field("paused", &self.paused()).finish()
    }
}

impl Pauses {
    /// Reads the paused sinks of `data_dir` (none when the file is absent).
    pub fn open(data_dir: &Path) -> Result<Pauses, Error> {
        let path = data_dir.join(FILE_NAME);
        let fail = |reason: String| Error { path: path.clone(), reason };
        let paused: BTreeSet<String> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| fail(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(fail(e.to_string())),
        };
        Ok(Pauses::with(Some(path), paused))
    }

    /// Paused sinks kept in memory only (nothing paused at first), for loops run outside `relais serve`.
    pub fn in_memory() -> Pauses {
        Pauses::with(None, BTreeSet::new())
    }

    fn with(path: Option<PathBuf>, paused: BTreeSet<String>) -> Pauses {
        Pauses { inner: Arc::new(Inner { path, state: watch::Sender::new(paused), write: Mutex::new(()) }) }
    }

    /// The paused sinks.
    pub fn paused(&self) -> BTreeSet<String> {
        self.inner.state.borrow().clone()
    }

    /// True while `sink` is paused.
    pub fn is_paused(&self, sink: &str) -> bool {
        self.inner.state.borrow().contains(sink)
    }

    /// Pauses (`true`) or resumes `sink`; the file is written first. Returns false when it already was so.
    pub fn set(&self, sink: &str, paused: bool) -> Result<bool, Error> {
        let _one_writer = self.inner.write.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = self.paused();
        let changed = if paused { next.insert(sink.to_owned()) } else { next.remove(sink) };
        if !changed {
            return Ok(false);
        }
        if let Some(path) = &self.inner.path {
            let fail = |e: std::io::Error| Error { path: path.clone(), reason: e.to_string() };
            let tmp = path.with_extension("json.tmp");
            let bytes = serde_json::to_vec(&next).unwrap_or_default();
            std::fs::write(&tmp, bytes).map_err(fail)?;
            std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(fail)?;
            std::fs::rename(&tmp, path).map_err(fail)?;
        }
        self.inner.state.send_replace(next);
        metrics::gauge!(SINK_PAUSED, "sink" => sink.to_owned()).set(if paused { 1.0 } else { 0.0 });
        Ok(true)
    }

    /// Sets `relais_sink_paused` for every sink of `sinks` (0 or 1), so the gauge exists from the start.
    pub fn export(&self, sinks: &[String]) {
        for sink in sinks {
            let value = if self.is_paused(sink) { 1.0 } else { 0.0 };
            metrics::gauge!(SINK_PAUSED, "sink" => sink.clone()).set(value);
        }
    }

    /// Waits until `sink` is not paused (returns at once when it is not).
    pub async fn wait_resumed(&self, sink: &str) {
        let mut state = self.inner.state.subscribe();
        // The sender lives in `self`, so `wait_for` cannot see it dropped while we borrow `self`.
        let _ = state.wait_for(|paused| !paused.contains(sink)).await;
    }

    /// Waits until `sink` becomes paused (never returns while it stays running).
    pub async fn wait_paused(&self, sink: &str) {
        let mut state = self.inner.state.subscribe();
        let _ = state.wait_for(|paused| paused.contains(sink)).await;
    }
}

/// The `sinks` condition of `/ready`: always holds, and lists the configured and the paused sinks.
pub struct SinksCheck {
    sinks: Vec<String>,
    pauses: Pauses,
}

impl SinksCheck {
    /// The check over the configured `sinks`.
    pub fn new(sinks: Vec<String>, pauses: Pauses) -> SinksCheck {
        SinksCheck { sinks, pauses }
    }
}

impl crate::ops::health::ReadinessCheck for SinksCheck {
    fn name(&self) -> &str {
        "sinks"
    }

    fn check(&self) -> Result<serde_json::Value, String> {
        Ok(serde_json::json!({ "configured": self.sinks, "paused": self.pauses.paused() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pause_survives_reopening_and_wakes_the_waiters() {
        let dir = tempfile::tempdir().unwrap();
        let pauses = Pauses::open(dir.path()).unwrap();
        assert!(!pauses.is_paused("mss"));
        assert!(pauses.set("mss", true).unwrap());
        assert!(!pauses.set("mss", true).unwrap(), "pausing twice changes nothing");
        let reopened = Pauses::open(dir.path()).unwrap();
        assert_eq!(reopened.paused(), BTreeSet::from(["mss".to_string()]));

        let waiter = tokio::spawn({
            let reopened = reopened.clone();
            async move { reopened.wait_resumed("mss").await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "still paused");
        assert!(reopened.set("mss", false).unwrap());
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.unwrap().unwrap();
        assert!(Pauses::open(dir.path()).unwrap().paused().is_empty());

        std::fs::write(dir.path().join(FILE_NAME), "not json").unwrap();
        let err = Pauses::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains(FILE_NAME), "{err}");
    }
}
