//! Live routes: the current [`RouteSet`], swapped on SIGHUP or when a file of the directory changes.
//!
//! A reload validates the whole directory first; on any error the previous set stays live and each error is
//! logged with `file:line` (route files hold no patient data). Readers take an `Arc` snapshot, so a message
//! is routed by one set from start to end.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;

use super::{RouteErrors, RouteSet};
use crate::shutdown::Shutdown;

/// The live route set of one directory.
#[derive(Debug)]
pub struct LiveRoutes {
    /// Empty for a fixed set ([`LiveRoutes::fixed`]): nothing to read back.
    dir: PathBuf,
    sinks: BTreeSet<String>,
    current: RwLock<Arc<RouteSet>>,
}

impl LiveRoutes {
    /// Loads `dir` once; fails (with every error) if it does not load.
    pub fn load(dir: &Path, sinks: BTreeSet<String>) -> Result<Arc<LiveRoutes>, RouteErrors> {
        let set = RouteSet::load_dir(dir, &sinks)?;
        Ok(Arc::new(LiveRoutes { dir: dir.to_path_buf(), sinks, current: RwLock::new(Arc::new(set)) }))
    }

    /// A live set over fixed routes, never reloaded (no sinks or no routes directory, tests, `routes explain`).
    pub fn fixed(set: RouteSet) -> Arc<LiveRoutes> {
        Arc::new(LiveRoutes {
            dir: PathBuf::new(),
            sinks: BTreeSet::new(),
            current: RwLock::new(Arc::new(set)),
        })
    }

    /// The set in force now.
    pub fn current(&self) -> Arc<RouteSet> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// True for a set with no directory behind it ([`LiveRoutes::fixed`]).
    pub fn is_fixed(&self) -> bool {
        self.dir.as_os_str().is_empty()
    }

    /// Re-reads the directory: swaps in the new set and returns its route count, or keeps the old set, logs
    /// each error and returns them. A fixed set stays as it is (its route count, nothing read).
    pub fn reload(&self) -> Result<usize, RouteErrors> {
        if self.is_fixed() {
            return Ok(self.current().routes().len());
        }
        match RouteSet::load_dir(&self.dir, &self.sinks) {
            Ok(set) => {
                let count = set.routes().len();
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(set);
                tracing::info!(routes = count, dir = %self.dir.display(), "routes reloaded");
                Ok(count)
            }
            Err(errors) => {
                for error in &errors.0 {
                    tracing::error!(%error, "route reload refused; previous routes stay live");
                }
                Err(errors)
            }
        }
    }
}

/// Reloads `live` on SIGHUP and on any change in its directory (debounced by 200 ms) until `shutdown`. A fixed
/// set has no directory to watch (SIGHUP is still taken, and changes nothing).
pub async fn watch(live: Arc<LiveRoutes>, mut shutdown: Shutdown) {
    let (tx, mut changes) = mpsc::channel::<()>(16);
    // An empty path would watch the working directory, where the data directory usually is.
    let watcher = if live.is_fixed() { None } else { file_watcher(&live.dir, tx) };
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<()>();
        tokio::select! {
            _ = shutdown.recv() => break,
            _ = hangup => {}
            Some(()) = changes.recv() => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                while changes.try_recv().is_ok() {}
            }
        }
        let _ = live.reload();
    }
    drop(watcher);
}

fn file_watcher(dir: &Path, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let handler = move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.try_send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(watcher) => watcher,
        Err(error) => {
            tracing::warn!(%error, "cannot watch the routes directory; reload with SIGHUP");
            return None;
        }
    };
    if let Err(error) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
        tracing::warn!(%error, dir = %dir.display(), "cannot watch the routes directory; reload with SIGHUP");
        return None;
    }
    Some(watcher)
}
