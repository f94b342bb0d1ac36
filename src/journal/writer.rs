//! The single writer thread: group commit of queued appends.
//!
//! It blocks for the first queued request, takes everything else already queued (up to `max_batch`), writes
//! them all in one redb write transaction with `Durability::Immediate` (one `fdatasync`), and only after the
//! commit returned answers each request. If the commit fails every request of the batch gets the error, and
//! nothing of that batch is visible. The thread ends when every sender is gone and the queue is empty.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redb::Database;
use tokio::sync::{mpsc, oneshot};

use super::Error;
use super::record::Appended;
use super::store::{self, Prepared};

/// One queued append and where to send its outcome.
pub(crate) struct Request {
    pub(crate) entry: Prepared,
    pub(crate) reply: oneshot::Sender<Result<Appended, Error>>,
}

/// Group-commit figures since the journal was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Write transactions committed (or attempted: failed commits count too).
    pub commits: u64,
    /// Appends handled by those commits (duplicates included).
    pub entries: u64,
    /// Total time spent writing and committing (fsync included).
    pub commit_time: Duration,
    /// Number of appends in the most recent commit.
    pub last_batch: u64,
}

impl CommitStats {
    /// Mean appends per commit (0 before the first commit).
    pub fn mean_batch(&self) -> f64 {
        if self.commits == 0 { 0.0 } else { self.entries as f64 / self.commits as f64 }
    }
}

/// Lock-free counters behind [`CommitStats`], shared by the writer and readers.
#[derive(Debug, Default)]
pub(crate) struct CommitCounters {
    commits: AtomicU64,
    entries: AtomicU64,
    commit_nanos: AtomicU64,
    last_batch: AtomicU64,
}

impl CommitCounters {
    fn record(&self, batch: usize, took: Duration) {
        let batch = batch as u64;
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.entries.fetch_add(batch, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.commit_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.last_batch.store(batch, Ordering::Relaxed);
        crate::ops::metrics::journal_commit(batch, took);
    }

    pub(crate) fn snapshot(&self) -> CommitStats {
        CommitStats {
            commits: self.commits.load(Ordering::Relaxed),
            entries: self.entries.load(Ordering::Relaxed),
            commit_time: Duration::from_nanos(self.commit_nanos.load(Ordering::Relaxed)),
            last_batch: self.last_batch.load(Ordering::Relaxed),
        }
    }
}

/// What the writer thread needs.
pub(crate) struct Writer {
    pub(crate) db: Arc<Database>,
    pub(crate) queue: mpsc::Receiver<Request>,
    pub(crate) max_batch: usize,
    pub(crate) dedup_window_us: i64,
    pub(crate) counters: Arc<CommitCounters>,
}

impl Writer {
    /// The thread body: one group commit per loop, until the queue is closed and empty.
    pub(crate) fn run(mut self) {
        let max_batch = self.max_batch.max(1);
        let mut entries = Vec::with_capacity(max_batch.min(4096));
        let mut replies = Vec::with_capacity(max_batch.min(4096));
        while let Some(first) = self.queue.blocking_recv() {
            entries.push(first.entry);
            replies.push(first.reply);
            while replies.len() < max_batch {
                let Ok(next) = self.queue.try_recv() else { break };
                entries.push(next.entry);
                replies.push(next.reply);
            }

            let started = Instant::now();
            let result = store::write_batch(&self.db, entries.drain(..), self.dedup_window_us);
            self.counters.record(replies.len(), started.elapsed());

            match result {
                Ok(outcomes) => {
                    for (reply, outcome) in replies.drain(..).zip(outcomes) {
                        // The caller may have given up waiting; its entry is stored all the same.
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Err(error) => {
                    tracing::error!(%error, batch = replies.len(), "journal commit failed");
                    crate::ops::metrics::journal_commit_failed();
                    for reply in replies.drain(..) {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
            // Outcomes short of the batch would leave senders unanswered: drop them so callers see an error.
            replies.clear();
        }
    }
}
