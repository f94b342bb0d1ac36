//! The single writer thread: group commit of queued appends.
//!
//! It blocks for the first queued request, takes everything else already queued (up to `max_batch`), writes
//! them all in one redb write transaction with `Durability::Immediate` (one `fdatasync`), and only after the
//! commit returned answers each request. If the commit fails every request of the batch gets the error, and
//! nothing of that batch is visible. The thread ends when every sender is gone and the queue is empty.
//!
//! Pipeline updates ([`Request::Update`]) share the queue and the group commit with appends; after each
//! commit the highest stored id is published on a `watch` channel so the pipeline wakes up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redb::Database;
use tokio::sync::{mpsc, oneshot};

use super::Error;
use super::record::Appended;
use super::store::{self, Prepared, Update, UpdateRefused};

/// One queued write and where to send its outcome.
// Appends are the hot path: boxing their entry would cost one allocation per message.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Request {
    /// A new entry from ingest.
    Append { entry: Prepared, reply: oneshot::Sender<Result<Appended, Error>> },
    /// A pipeline stage of an existing entry.
    Update { update: Update, reply: oneshot::Sender<Result<(), Error>> },
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
    /// The highest stored id, sent after each successful commit.
    pub(crate) committed: tokio::sync::watch::Sender<u64>,
}

impl Writer {
    /// The thread body: one group commit per loop, until the queue is closed and empty.
    pub(crate) fn run(mut self) {
        let max_batch = self.max_batch.max(1);
        let mut entries = Vec::with_capacity(max_batch.min(4096));
        let mut replies = Vec::with_capacity(max_batch.min(4096));
        let mut updates = Vec::new();
        let mut update_replies = Vec::new();
        while let Some(first) = self.queue.blocking_recv() {
            let mut next = Some(first);
            while let Some(request) = next.take() {
                match request {
                    Request::Append { entry, reply } => {
                        entries.push(entry);
                        replies.push(reply);
                    }
                    Request::Update { update, reply } => {
                        updates.push(update);
                        update_replies.push(reply);
                    }
                }
                if replies.len() + update_replies.len() < max_batch {
                    next = self.queue.try_recv().ok();
                }
            }

            let started = Instant::now();
            let result =
                store::write_batch(&self.db, entries.drain(..), updates.drain(..), self.dedup_window_us);
            self.counters.record(replies.len() + update_replies.len(), started.elapsed());

            match result {
                Ok(store::Written { appended: outcomes, updated, last_id: last }) => {
                    self.committed.send_if_modified(|current| {
                        let changed = *current != last;
                        *current = last;
                        changed
                    });
                    for (reply, outcome) in replies.drain(..).zip(outcomes) {
                        // The caller may have given up waiting; its entry is stored all the same.
                        let _ = reply.send(Ok(outcome));
                    }
                    for (reply, outcome) in update_replies.drain(..).zip(updated) {
                        let _ = reply.send(outcome.map_err(|UpdateRefused::Unknown(id)| Error::Unknown(id)));
                    }
                }
                Err(error) => {
                    tracing::error!(%error, batch = replies.len(), "journal commit failed");
                    crate::ops::metrics::journal_commit_failed();
                    for reply in replies.drain(..) {
                        let _ = reply.send(Err(error.clone()));
                    }
                    for reply in update_replies.drain(..) {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
            // Outcomes short of the batch would leave senders unanswered: drop them so callers see an error.
            replies.clear();
            update_replies.clear();
        }
    }
}
