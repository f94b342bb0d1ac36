//! The applier thread: puts what the WAL made durable into redb, off the ACK path, and checkpoints.
//!
//! It receives each logged batch from the writer ([`Applied`]), takes every batch already waiting (so it
//! batches by itself when it lags), and applies them in one redb write transaction with
//! `Durability::None` (no fsync). Less than [`MIN_APPLY_GAP`] after the previous transaction it waits for
//! more batches first (asleep on a condition variable), unless a reader is waiting or [`HURRY_BYTES`] are
//! queued. The queue is bounded in bytes: past [`MAX_BACKLOG_BYTES`] the writer waits for the applier.
//! Every `checkpoint_interval`, or once `checkpoint_bytes` were applied since the last one, that
//! transaction is `Durability::Immediate` instead: a checkpoint, after which the WAL segments it covers are
//! recycled. After each transaction it raises the applied watermark ([`Marks`]), which reads wait for, and
//! publishes the highest stored id for the pipeline.
//!
//! If redb fails, the watermark stops and readers and writers get the error; the WAL keeps everything
//! acknowledged, and the next open replays it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use redb::{Database, Durability};

use super::Error;
use super::op::Op;
use super::store;
use super::wal;
use super::writer::CommitCounters;

/// Most batches applied in one transaction.
const MAX_GROUP: usize = 256;

/// Shortest time between two redb transactions while nobody waits to read: a lone sender's one-message
/// batches are applied a hundred at a time instead of one redb commit (~0.3 ms of CPU, competing with the
/// ACK path for the cores) each. Measured with one send-wait-send connection (p90 round trip): 2 ms 0.44–0.48
/// ms, 10 ms 0.27–0.40 ms, 25 ms 0.23–0.30 ms. The pipeline sees a new entry at most this much later.
const MIN_APPLY_GAP: Duration = Duration::from_millis(25);

/// Bytes of logged ops waiting at which a lingering applier starts at once: above what a lone sender logs
/// in [`MIN_APPLY_GAP`] (~0.3 MiB), so under load the pipeline behind the applier sees new entries every
/// few milliseconds (at 1 MiB the pipeline bench lost ~10 %).
const HURRY_BYTES: u64 = 512 << 10;

/// Bytes of logged ops waiting past which the writer waits for the applier: bounds the memory held by
/// what is durable in the log but not yet in redb (and the size of one redb transaction).
pub(crate) const MAX_BACKLOG_BYTES: u64 = 8 << 20;

/// One durable batch from the writer: its ops, the lsn of its last record, the next id after it.
pub(crate) struct Applied {
    pub(crate) ops: Vec<Op>,
    /// Roughly what applying the ops writes ([`batch_bytes`]).
    pub(crate) bytes: u64,
    pub(crate) lsn: u64,
    pub(crate) next_id: u64,
}

/// The durable and applied watermarks: readers wait until redb holds everything durable.
#[derive(Debug, Default)]
pub(crate) struct Marks {
    /// The last WAL record made durable (and so perhaps acknowledged).
    durable_lsn: AtomicU64,
    /// The last WAL record applied to redb.
    applied_lsn: AtomicU64,
    /// The highest id applied to redb.
    applied_id: AtomicU64,
    /// Readers waiting for the applied watermark.
    waiting: AtomicUsize,
    /// Bytes of the batches sent to the applier and not yet taken by it.
    backlog_bytes: AtomicU64,
    /// Set when the applier failed: nothing more will be applied.
    failed: Mutex<Option<Error>>,
    woken: Condvar,
    /// Wakes the lingering applier when a reader starts waiting or the queue fills (under the `failed` lock).
    reader_came: Condvar,
    /// Wakes a writer waiting for the queue to drain (under the `failed` lock).
    applier_took: Condvar,
}

impl Marks {
    /// Marks that start with everything up to `lsn` and `id` in redb.
    pub(crate) fn new(lsn: u64, id: u64) -> Marks {
        Marks {
            durable_lsn: AtomicU64::new(lsn),
            applied_lsn: AtomicU64::new(lsn),
            applied_id: AtomicU64::new(id),
            ..Marks::default()
        }
    }

    /// The writer made records up to `lsn` durable.
    pub(crate) fn durable(&self, lsn: u64) {
        self.durable_lsn.fetch_max(lsn, Ordering::AcqRel);
    }

    /// The highest id redb holds.
    pub(crate) fn applied_id(&self) -> u64 {
        self.applied_id.load(Ordering::Acquire)
    }

    /// Why the applier stopped, if it did.
    pub(crate) fn failure(&self) -> Option<Error> {
        self.failed.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits until redb holds every record durable at the time of the call (at once when it does).
    pub(crate) fn wait_applied(&self) -> Result<(), Error> {
        let target = self.durable_lsn.load(Ordering::Acquire);
        if self.applied_lsn.load(Ordering::Acquire) >= target {
            return Ok(());
        }
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        self.waiting.fetch_add(1, Ordering::AcqRel);
        self.reader_came.notify_one();
        let outcome = loop {
            if self.applied_lsn.load(Ordering::Acquire) >= target {
                break Ok(());
            }
            if let Some(error) = &*failed {
                break Err(error.clone());
            }
            failed = self.woken.wait(failed).unwrap_or_else(PoisonError::into_inner);
        };
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        outcome
    }

    /// The writer is about to send the applier a batch of `bytes`. Once [`HURRY_BYTES`] wait, it wakes a
    /// lingering applier (the writer must never wait while the applier sleeps through its gap); while more
    /// than [`MAX_BACKLOG_BYTES`] were already waiting, it waits for the applier to take some (or to fail).
    pub(crate) fn batch_sent(&self, bytes: u64) {
        let before = self.backlog_bytes.fetch_add(bytes, Ordering::AcqRel);
        if before + bytes < HURRY_BYTES {
            return;
        }
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        self.reader_came.notify_one();
        // Only what was queued before this batch: a batch larger than the bound alone must still go.
        while self.backlog_bytes.load(Ordering::Acquire).saturating_sub(bytes) > MAX_BACKLOG_BYTES
            && failed.is_none()
        {
            failed = self.applier_took.wait(failed).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// The applier took a batch of `bytes`; wakes the writer if it may be waiting for room.
    fn batch_taken(&self, bytes: u64) {
        let before = self.backlog_bytes.fetch_sub(bytes, Ordering::AcqRel);
        // The writer waits only while more than the bound is queued (and only it adds): below that, nobody
        // to wake, and no lock to take for every batch.
        if before > MAX_BACKLOG_BYTES {
            let _guard = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
            self.applier_took.notify_all();
        }
    }

    /// Blocks the applier until `deadline`, until a reader waits for the watermark, or until
    /// [`HURRY_BYTES`] wait (at once if so already). A condition variable, not a poll: a lone sender's
    /// applier sleeps through the gap.
    fn linger_until(&self, deadline: Instant) {
        let mut guard = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        while self.waiting.load(Ordering::Acquire) == 0
            && self.backlog_bytes.load(Ordering::Acquire) < HURRY_BYTES
            && guard.is_none()
        {
            let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
                break;
            };
            guard = self.reader_came.wait_timeout(guard, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    fn applied(&self, lsn: u64, id: u64) {
        // Under the lock, so a waiter between its check and its wait cannot miss the wake-up.
        let _guard = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        self.applied_id.fetch_max(id, Ordering::AcqRel);
        self.applied_lsn.fetch_max(lsn, Ordering::AcqRel);
        self.woken.notify_all();
    }

    fn fail(&self, error: Error) {
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        failed.get_or_insert(error);
        self.woken.notify_all();
        self.applier_took.notify_all();
    }
}

/// Fails the marks if the applier thread panics, so that nobody waits for it for good.
struct FailOnPanic<'a>(&'a Marks);

impl Drop for FailOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail(Error::WriterLost);
        }
    }
}

/// When to checkpoint.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Checkpoints {
    /// At most this long between a write and its checkpoint.
    pub(crate) interval: Duration,
    /// Or once this many bytes were applied since the last one.
    pub(crate) bytes: u64,
}

/// What the applier thread needs.
pub(crate) struct Applier {
    pub(crate) db: Arc<Database>,
    pub(crate) batches: mpsc::Receiver<Applied>,
    pub(crate) marks: Arc<Marks>,
    pub(crate) segments: Arc<wal::Shared>,
    pub(crate) checkpoints: Checkpoints,
    pub(crate) counters: Arc<CommitCounters>,
    /// The highest stored id, sent after each transaction that stored one.
    pub(crate) committed: tokio::sync::watch::Sender<u64>,
}

impl Applier {
    /// The thread body: until the writer is gone, then a last checkpoint.
    pub(crate) fn run(self) {
        let _fail_on_panic = FailOnPanic(&self.marks);
        // Applied but not yet checkpointed: (last lsn, next id, since when, bytes).
        let mut dirty: Option<(u64, u64, Instant, u64)> = None;
        let mut group = Vec::new();
        let mut last_apply = Instant::now();
        loop {
            let first = match dirty {
                None => self.batches.recv().ok(),
                Some((_, _, since, _)) => {
                    let wait = self.checkpoints.interval.saturating_sub(since.elapsed());
                    match self.batches.recv_timeout(wait) {
                        Ok(batch) => Some(batch),
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            if !self.checkpoint_now(&mut dirty) {
                                return;
                            }
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => None,
                    }
                }
            };
            let Some(first) = first else { break };
            self.marks.batch_taken(first.bytes);
            group.push(first);
            self.marks.linger_until(last_apply + MIN_APPLY_GAP);
            while group.len() < MAX_GROUP
                && let Ok(batch) = self.batches.try_recv()
            {
                self.marks.batch_taken(batch.bytes);
                group.push(batch);
            }
            let last = group.last().expect("one batch at least");
            let (lsn, next_id) = (last.lsn, last.next_id);
            let bytes: u64 = group.iter().map(|b| b.bytes).sum();
            let (since, so_far) = dirty.map_or((Instant::now(), 0), |(_, _, since, b)| (since, b));
            let due =
                since.elapsed() >= self.checkpoints.interval || so_far + bytes >= self.checkpoints.bytes;
            let durability = if due { Durability::Immediate } else { Durability::None };
            let started = Instant::now();
            // Courteous: the CPU is offered to any waiting thread between two ops. A transaction of a few
            // hundred ops takes a millisecond or two; without this, the log writer back from its sync (or a
            // connection's task) could wait that long behind it on a busy core, on an ACK's path (one
            // connection's p99 was 1.5-2.0 ms, 0.6-0.8 ms with it).
            let ops = group.iter().flat_map(|b| &b.ops).inspect(|_| std::thread::yield_now());
            let result = store::apply_ops(&self.db, ops, lsn, next_id, durability);
            last_apply = Instant::now();
            match result {
                Ok(last_id) => {
                    // The watch first: whoever waited for the watermark then sees its value.
                    self.committed.send_if_modified(|current| {
                        let changed = *current != last_id;
                        *current = last_id;
                        changed
                    });
                    self.marks.applied(lsn, last_id);
                    if due {
                        self.checkpointed(lsn, started.elapsed());
                        dirty = None;
                    } else {
                        dirty = Some((lsn, next_id, since, so_far + bytes));
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "applying the WAL to the journal store failed");
                    self.marks.fail(error);
                    return;
                }
            }
            group.clear();
        }
        self.checkpoint_now(&mut dirty);
    }

    /// A durable commit of what is applied; false if it failed.
    fn checkpoint_now(&self, dirty: &mut Option<(u64, u64, Instant, u64)>) -> bool {
        let Some((lsn, next_id, _, _)) = dirty.take() else { return true };
        let started = Instant::now();
        match store::apply_ops(&self.db, std::iter::empty(), lsn, next_id, Durability::Immediate) {
            Ok(_) => {
                self.checkpointed(lsn, started.elapsed());
                true
            }
            Err(error) => {
                tracing::error!(%error, "journal checkpoint failed");
                self.marks.fail(error);
                false
            }
        }
    }

    fn checkpointed(&self, lsn: u64, took: Duration) {
        self.segments.checkpointed(lsn);
        self.counters.checkpoint(took);
        tracing::trace!(lsn, took_us = took.as_micros(), "journal checkpoint");
    }
}

/// Roughly what applying `ops` writes.
pub(crate) fn batch_bytes(ops: &[Op]) -> u64 {
    ops.iter().map(op_size).sum()
}

/// Roughly what applying an op writes.
fn op_size(op: &Op) -> u64 {
    match op {
        Op::Append(append) => (append.record.len() + append.raw.len()) as u64,
        Op::Update { stages, .. } => stages
            .iter()
            .map(|stage| match stage {
                super::record::Stage::Mapped { bundle } => bundle.len() as u64,
                _ => 256,
            })
            .sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `linger_until` a minute ahead on another thread and returns how long it lingered.
    fn linger_while(marks: &Arc<Marks>, meanwhile: impl FnOnce(&Marks)) -> Duration {
        let lingering = {
            let marks = Arc::clone(marks);
            std::thread::spawn(move || {
                let started = Instant::now();
                marks.linger_until(started + Duration::from_secs(60));
                started.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        meanwhile(marks);
        lingering.join().expect("lingering thread")
    }

    #[test]
    fn a_filling_backlog_wakes_the_lingering_applier() {
        let marks = Arc::new(Marks::new(0, 0));
        let lingered = linger_while(&marks, |marks| {
            for _ in 0..4 {
                marks.batch_sent(HURRY_BYTES / 4);
            }
        });
        assert!(lingered < Duration::from_secs(30), "the applier slept through a filling queue");
    }

    #[test]
    fn a_few_small_batches_let_it_linger() {
        let marks = Arc::new(Marks::new(0, 0));
        marks.batch_sent(2_000);
        marks.batch_taken(2_000);
        marks.batch_sent(2_000);
        let started = Instant::now();
        marks.linger_until(started + Duration::from_millis(200));
        assert!(started.elapsed() >= Duration::from_millis(200), "one small batch cut the gap short");
    }

    #[test]
    fn the_writer_waits_while_the_queue_is_over_its_bound_and_goes_on_once_the_applier_takes() {
        let marks = Arc::new(Marks::new(0, 0));
        marks.batch_sent(MAX_BACKLOG_BYTES + 1);
        let sent = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (marks, sent) = (Arc::clone(&marks), Arc::clone(&sent));
            std::thread::spawn(move || {
                marks.batch_sent(1_000);
                sent.store(true, Ordering::Release);
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        assert!(!sent.load(Ordering::Acquire), "the writer went on over the bound");
        marks.batch_taken(MAX_BACKLOG_BYTES + 1);
        writer.join().expect("writer thread");
        assert!(sent.load(Ordering::Acquire));
    }

    #[test]
    fn one_batch_larger_than_the_bound_still_goes() {
        let marks = Marks::new(0, 0);
        marks.batch_sent(MAX_BACKLOG_BYTES * 2);
    }

    #[test]
    fn a_failed_applier_releases_a_waiting_writer() {
        let marks = Arc::new(Marks::new(0, 0));
        marks.batch_sent(MAX_BACKLOG_BYTES + 1);
        let writer = {
            let marks = Arc::clone(&marks);
            std::thread::spawn(move || marks.batch_sent(1_000))
        };
        std::thread::sleep(Duration::from_millis(100));
        marks.fail(Error::WriterLost);
        writer.join().expect("the writer is released");
    }
}
