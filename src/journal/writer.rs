//! The single writer thread: group commit of queued appends.
//!
//! It blocks for the first queued request, takes everything else already queued (up to `max_batch`), writes
//! them all in one redb write transaction with `Durability::Immediate` (one `fdatasync`), and only after the
//! commit returned answers each request. If the commit fails every request of the batch gets the error, and
//! nothing of that batch is visible. The thread ends when every sender is gone and the queue is empty.
//!
//! Pipeline updates ([`Request::Update`]) share the queue and the group commit with appends; after each
//! commit the highest stored id is published on a `watch` channel so the pipeline wakes up.
//!
//! Under load the batches tend to alternate, big then small: while a big batch is being synced only a few
//! messages arrive (the senders wait for their ACKs), and committing those few costs a whole fsync, during
//! which the big wave comes back. So when the previous batch was large and the queue holds less than half
//! of it, the writer lingers a little (a quarter of the last commit's time, at most [`MAX_LINGER`]) for the
//! queue to fill, as PostgreSQL's `commit_delay` does when other transactions are active. A lone sender
//! (send, wait for the ACK, send) makes batches of one and never waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redb::Database;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};

use super::Error;
use super::record::Appended;
use super::store::{self, Prepared, Update, UpdateRefused};

/// The longest the writer waits for a batch to fill before committing it.
pub(crate) const MAX_LINGER: Duration = Duration::from_millis(5);

/// Only after a batch at least this large does the writer linger for the next one to fill.
const LINGER_AFTER_BATCH: usize = 32;

/// How often a lingering writer looks at the queue again.
const LINGER_POLL: Duration = Duration::from_micros(100);

/// How many requests to wait for before committing, given the size of the previous batch and how many are
/// queued; `None`: commit now.
fn linger_target(last_batch: usize, queued: usize, max_batch: usize) -> Option<usize> {
    let target = (last_batch / 2).min(max_batch);
    (last_batch >= LINGER_AFTER_BATCH && queued < target).then_some(target)
}

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
        let mut last_batch = 0;
        let mut last_commit = Duration::ZERO;
        while let Some(first) = self.queue.blocking_recv() {
            let mut batch = Batch {
                entries: &mut entries,
                replies: &mut replies,
                updates: &mut updates,
                update_replies: &mut update_replies,
            };
            batch.push(first);
            self.take_queued(&mut batch, max_batch);
            if let Some(target) = linger_target(last_batch, batch.len(), max_batch) {
                let deadline = Instant::now() + (last_commit / 4).min(MAX_LINGER);
                while batch.len() < target && Instant::now() < deadline {
                    std::thread::sleep(LINGER_POLL);
                    if !self.take_queued(&mut batch, target) {
                        break;
                    }
                }
            }

            let started = Instant::now();
            let result =
                store::write_batch(&self.db, entries.drain(..), updates.drain(..), self.dedup_window_us);
            last_commit = started.elapsed();
            last_batch = replies.len() + update_replies.len();
            tracing::trace!(batch = last_batch, commit_us = last_commit.as_micros(), "group commit");
            self.counters.record(last_batch, last_commit);

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
        let stats = self.counters.snapshot();
        tracing::info!(
            commits = stats.commits,
            entries = stats.entries,
            mean_batch = format_args!("{:.1}", stats.mean_batch()),
            mean_commit_us =
                stats.commit_time.as_micros().checked_div(u128::from(stats.commits)).unwrap_or(0),
            "journal writer stopped"
        );
    }

    /// Moves what is already queued into the batch, up to `limit` requests in all. Returns false once the
    /// queue is closed and empty.
    fn take_queued(&mut self, batch: &mut Batch<'_>, limit: usize) -> bool {
        while batch.len() < limit {
            match self.queue.try_recv() {
                Ok(request) => batch.push(request),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
        true
    }
}

/// The requests of the next group commit, split by kind (borrowed buffers, reused from one commit to the
/// next).
struct Batch<'a> {
    entries: &'a mut Vec<Prepared>,
    replies: &'a mut Vec<oneshot::Sender<Result<Appended, Error>>>,
    updates: &'a mut Vec<Update>,
    update_replies: &'a mut Vec<oneshot::Sender<Result<(), Error>>>,
}

impl Batch<'_> {
    fn push(&mut self, request: Request) {
        match request {
            Request::Append { entry, reply } => {
                self.entries.push(entry);
                self.replies.push(reply);
            }
            Request::Update { update, reply } => {
                self.updates.push(update);
                self.update_replies.push(reply);
            }
        }
    }

    fn len(&self) -> usize {
        self.replies.len() + self.update_replies.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_sender_never_waits() {
        // Send, wait for the ACK, send: every batch holds one message.
        assert_eq!(linger_target(1, 1, 4096), None);
        assert_eq!(linger_target(0, 1, 4096), None);
        assert_eq!(linger_target(LINGER_AFTER_BATCH - 1, 1, 4096), None);
    }

    #[test]
    fn after_a_big_batch_a_small_one_waits_for_half_of_it() {
        assert_eq!(linger_target(448, 55, 4096), Some(224));
        assert_eq!(linger_target(448, 224, 4096), None);
        assert_eq!(linger_target(448, 300, 4096), None);
    }

    #[test]
    fn the_target_never_exceeds_the_batch_limit() {
        assert_eq!(linger_target(4096, 10, 100), Some(100));
        assert_eq!(linger_target(4096, 100, 100), None);
    }
}
