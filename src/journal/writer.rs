//! The single writer thread: group commit of queued appends and updates into the write-ahead log.
//!
//! It blocks for the first queued request, takes everything else already queued (up to `max_batch`) and
//! decides each one: an append gets the next id, or is found a duplicate (same dedup key and bytes within
//! the window) or a conflict (stored as `rejected`); an update of an unknown id is refused. The decisions
//! are logged as [`Op`]s in one WAL write and one `fdatasync` ([`Wal::write`]), and only then is each
//! request answered (a batch of deferred pipeline updates only, [`Flush::Deferred`], is logged without a
//! write or `fdatasync` of its own: the next synced batch or checkpoint covers it); the ops go on to the
//! applier thread, which puts them in redb. If the log write fails, that batch and every later request get
//! the error (what reached the disk is unknown: restart to recover).
//! The thread ends when every sender is gone and the queue is empty, after the applier finished.
//!
//! Deduplication must see appends that are durable in the log but not yet in redb: the writer keeps them
//! (key -> id, received-at, bytes) until the applier reports them applied, and looks there before redb.
//!
//! Under load the batches tend to alternate, big then small: while a big batch is being synced only a few
//! messages arrive (the senders wait for their ACKs), and committing those few costs a whole fsync, during
//! which the big wave comes back. So when the previous batch was large and the queue holds less than half
//! of it, the writer lingers a little (a quarter of the last commit's time, at most [`MAX_LINGER`]) for the
//! queue to fill, as PostgreSQL's `commit_delay` does when other transactions are active. A lone sender
//! (send, wait for the ACK, send) makes batches of one and never waits.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use jiff::Timestamp;
use redb::Database;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};

use super::applier::{Applied, Marks};
use super::op::{Append, Op};
use super::record::Appended;
use super::store::{Lookup, Prepared, Update};
use super::wal::Wal;
use super::{Error, Flush};

/// The longest the writer waits for a batch to fill before committing it.
pub(crate) const MAX_LINGER: Duration = Duration::from_millis(5);

/// Only after a batch at least this large does the writer linger for the next one to fill.
const LINGER_AFTER_BATCH: usize = 32;

/// How long the writer keeps polling its empty queue (yielding the CPU to any runnable thread) before it
/// sleeps: a lone sender's next message comes back within this after its ACK, and waking a sleeping thread
/// costs tens of microseconds on a virtual machine, on the ACK's path.
const POLL_BEFORE_SLEEP: Duration = Duration::from_micros(250);

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
    /// Group commits: WAL writes (or attempts: failed ones count too).
    pub commits: u64,
    /// Requests handled by those commits (appends, duplicates included, and updates).
    pub entries: u64,
    /// Total time spent writing the WAL and syncing it (`fdatasync` included): what an ACK waits for.
    pub commit_time: Duration,
    /// Number of requests in the most recent commit.
    pub last_batch: u64,
    /// WAL `fdatasync`s: commits holding an append or an urgent update (deferred updates wait for one).
    pub syncs: u64,
    /// Checkpoints: durable redb commits of what the WAL holds.
    pub checkpoints: u64,
    /// Total time spent in checkpoints (off the ACK path).
    pub checkpoint_time: Duration,
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
    syncs: AtomicU64,
    checkpoints: AtomicU64,
    checkpoint_nanos: AtomicU64,
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

    pub(crate) fn checkpoint(&self, took: Duration) {
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.checkpoint_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> CommitStats {
        CommitStats {
            commits: self.commits.load(Ordering::Relaxed),
            entries: self.entries.load(Ordering::Relaxed),
            commit_time: Duration::from_nanos(self.commit_nanos.load(Ordering::Relaxed)),
            last_batch: self.last_batch.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            checkpoints: self.checkpoints.load(Ordering::Relaxed),
            checkpoint_time: Duration::from_nanos(self.checkpoint_nanos.load(Ordering::Relaxed)),
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
    pub(crate) wal: Wal,
    /// The lsn of the next WAL record.
    pub(crate) next_lsn: u64,
    /// The next id to assign.
    pub(crate) next_id: u64,
    pub(crate) marks: Arc<Marks>,
    /// Where durable batches go to be applied to redb.
    pub(crate) applier: std::sync::mpsc::SyncSender<Applied>,
    /// The applier thread, joined when the writer ends.
    pub(crate) applier_thread: std::thread::JoinHandle<()>,
}

/// Appends logged but perhaps not yet applied, by dedup key, so deduplication sees them.
#[derive(Default)]
struct Unapplied {
    by_key: HashMap<String, (u64, i64, Bytes)>,
    /// `(id, key)` in id order, to forget them once applied.
    order: VecDeque<(u64, String)>,
}

impl Unapplied {
    /// Forgets the appends redb holds (ids up to `applied_id`).
    fn forget_up_to(&mut self, applied_id: u64) {
        while let Some((id, _)) = self.order.front()
            && *id <= applied_id
        {
            let (id, key) = self.order.pop_front().expect("front exists");
            if self.by_key.get(&key).is_some_and(|(current, _, _)| *current == id) {
                self.by_key.remove(&key);
            }
        }
    }
}

/// Now, to the microsecond: what the log keeps, so a replayed stage carries the very same time.
fn now_us() -> Timestamp {
    Timestamp::from_microsecond(Timestamp::now().as_microsecond()).unwrap_or_else(|_| Timestamp::now())
}

/// The batch's read view of redb, begun on first use.
fn lookup<'a>(view: &'a mut Option<Lookup>, db: &Database) -> Result<&'a Lookup, Error> {
    if view.is_none() {
        *view = Some(Lookup::begin(db)?);
    }
    Ok(view.as_ref().expect("just set"))
}

/// A request's answer, decided before the log write and sent after it.
enum Answer {
    Append(oneshot::Sender<Result<Appended, Error>>, Appended),
    Update(oneshot::Sender<Result<(), Error>>, Result<(), Error>),
}

impl Answer {
    fn send(self) {
        // The caller may have given up waiting; its write is durable all the same.
        match self {
            Answer::Append(reply, outcome) => drop(reply.send(Ok(outcome))),
            Answer::Update(reply, outcome) => drop(reply.send(outcome)),
        }
    }

    fn fail(self, error: &Error) {
        match self {
            Answer::Append(reply, _) => drop(reply.send(Err(error.clone()))),
            Answer::Update(reply, _) => drop(reply.send(Err(error.clone()))),
        }
    }
}

impl Writer {
    /// The thread body: one group commit per loop, until the queue is closed and empty.
    pub(crate) fn run(mut self) {
        let max_batch = self.max_batch.max(1);
        let mut batch = Vec::with_capacity(max_batch.min(4096));
        let mut unapplied = Unapplied::default();
        let mut failed: Option<Error> = None;
        let mut last_batch = 0;
        let mut last_commit = Duration::ZERO;
        while let Some(first) = self.next_request() {
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
            if let Some(error) = &failed {
                for request in batch.drain(..) {
                    match request {
                        Request::Append { reply, .. } => drop(reply.send(Err(error.clone()))),
                        Request::Update { reply, .. } => drop(reply.send(Err(error.clone()))),
                    }
                }
                continue;
            }

            last_batch = batch.len();
            let result = self.commit(&mut batch, &mut unapplied, &mut last_commit);
            if let Err(error) = result {
                tracing::error!(%error, batch = last_batch, "journal commit failed; refusing writes until restart");
                crate::ops::metrics::journal_commit_failed();
                failed = Some(error);
            }
        }
        let Writer { applier, applier_thread, wal, counters, .. } = self;
        drop(applier);
        let _ = applier_thread.join();
        drop(wal);
        let stats = counters.snapshot();
        tracing::info!(
            commits = stats.commits,
            entries = stats.entries,
            mean_batch = format_args!("{:.1}", stats.mean_batch()),
            mean_commit_us =
                stats.commit_time.as_micros().checked_div(u128::from(stats.commits)).unwrap_or(0),
            checkpoints = stats.checkpoints,
            "journal writer stopped"
        );
    }

    /// Decides, logs and answers one batch, then hands its ops to the applier. On error every request of
    /// the batch is answered with it.
    fn commit(
        &mut self,
        batch: &mut Vec<Request>,
        unapplied: &mut Unapplied,
        took: &mut Duration,
    ) -> Result<(), Error> {
        let started = Instant::now();
        let size = batch.len();
        let (first_id, first_lsn) = (self.next_id, self.next_lsn);
        let mut answers = Vec::with_capacity(batch.len());
        let mut ops = Vec::with_capacity(batch.len());
        let mut sync = false;
        let decided = self.decide(batch.drain(..), unapplied, &mut answers, &mut ops, &mut sync);
        let logged = decided.and_then(|()| self.log(&ops, sync));
        *took = started.elapsed();
        tracing::trace!(batch = size, commit_us = took.as_micros(), "group commit");
        self.counters.record(size, *took);
        if let Err(error) = logged {
            self.next_id = first_id;
            self.next_lsn = first_lsn;
            for answer in answers {
                answer.fail(&error);
            }
            return Err(error);
        }
        let last_lsn = self.next_lsn - 1;
        if sync {
            self.counters.syncs.fetch_add(1, Ordering::Relaxed);
        }
        if !ops.is_empty() {
            self.marks.durable(last_lsn);
        }
        for answer in answers {
            answer.send();
        }
        if !ops.is_empty() {
            let bytes = super::applier::batch_bytes(&ops);
            let applied = Applied { ops, bytes, lsn: last_lsn, next_id: self.next_id };
            self.marks.batch_sent(bytes);
            self.applier.send(applied).map_err(|_| self.marks.failure().unwrap_or(Error::WriterLost))?;
        }
        Ok(())
    }

    /// Gives each request its op (if it writes anything) and its answer.
    fn decide(
        &mut self,
        requests: impl Iterator<Item = Request>,
        unapplied: &mut Unapplied,
        answers: &mut Vec<Answer>,
        ops: &mut Vec<Op>,
        sync: &mut bool,
    ) -> Result<(), Error> {
        // Read what redb holds no earlier than the watermark, so nothing unapplied is forgotten unseen.
        let applied_id = self.marks.applied_id();
        unapplied.forget_up_to(applied_id);
        let mut view: Option<Lookup> = None;
        for request in requests {
            match request {
                Request::Append { mut entry, reply } => {
                    let id = self.next_id;
                    let mut clash = None;
                    if let Some(key) = &entry.dedup {
                        let previous = match unapplied.by_key.get(&key.key) {
                            Some((original, at_us, raw)) => {
                                Some((*original, *at_us, Some(raw.as_ref() == entry.raw.as_ref())))
                            }
                            None => lookup(&mut view, &self.db)?
                                .dedup(&key.key)?
                                .map(|(original, at_us)| (original, at_us, None)),
                        };
                        if let Some((original, original_at_us, same)) = previous
                            && original_at_us.abs_diff(key.received_at_us)
                                <= self.dedup_window_us.unsigned_abs()
                        {
                            let same = match same {
                                Some(same) => same,
                                None => lookup(&mut view, &self.db)?.same_raw(original, &entry.raw)?,
                            };
                            if same {
                                answers.push(Answer::Append(reply, Appended::Duplicate { original }));
                                continue;
                            }
                            clash = Some(original);
                        }
                    }
                    let dedup = match (clash, entry.dedup.take()) {
                        (None, Some(key)) => {
                            unapplied
                                .by_key
                                .insert(key.key.clone(), (id, key.received_at_us, entry.raw.clone()));
                            unapplied.order.push_back((id, key.key.clone()));
                            Some((key.key, key.received_at_us))
                        }
                        _ => None,
                    };
                    if let Some(original) = clash {
                        entry.reject_conflict(original)?;
                    }
                    *sync = true;
                    ops.push(Op::Append(Append {
                        id,
                        state: entry.record.state,
                        record: entry.encoded,
                        raw: entry.raw,
                        dedup,
                    }));
                    self.next_id += 1;
                    let outcome = match clash {
                        Some(original) => Appended::Conflict { id, original },
                        None => Appended::Stored { id },
                    };
                    answers.push(Answer::Append(reply, outcome));
                }
                Request::Update { update: Update { id, stages, flush }, reply } => {
                    let known = id != 0
                        && id < self.next_id
                        && (id > applied_id || lookup(&mut view, &self.db)?.exists(id)?);
                    if known {
                        *sync |= flush == Flush::Now;
                        ops.push(Op::Update { id, at: now_us(), stages });
                        answers.push(Answer::Update(reply, Ok(())));
                    } else {
                        answers.push(Answer::Update(reply, Err(Error::Unknown(id))));
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes the ops to the log, one record each, and syncs it if `sync` (an append, or an update that
    /// must not wait: see [`Flush`]).
    fn log(&mut self, ops: &[Op], sync: bool) -> Result<(), Error> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut payloads = Vec::new();
        let mut ends = Vec::with_capacity(ops.len());
        for op in ops {
            op.encode(&mut payloads);
            ends.push(payloads.len());
        }
        let mut records = Vec::with_capacity(ops.len());
        let mut start = 0;
        for end in ends {
            records.push((self.next_lsn, &payloads[start..end]));
            self.next_lsn += 1;
            start = end;
        }
        self.wal.write(&records, sync).map_err(|error| Error::Wal(Arc::new(error)))
    }

    /// The next request: polled for [`POLL_BEFORE_SLEEP`], then waited for asleep; `None` once the queue is
    /// closed and empty.
    fn next_request(&mut self) -> Option<Request> {
        let until = Instant::now() + POLL_BEFORE_SLEEP;
        loop {
            match self.queue.try_recv() {
                Ok(request) => return Some(request),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) if Instant::now() < until => std::thread::yield_now(),
                Err(TryRecvError::Empty) => return self.queue.blocking_recv(),
            }
        }
    }

    /// Moves what is already queued into the batch, up to `limit` requests in all. Returns false once the
    /// queue is closed and empty.
    fn take_queued(&mut self, batch: &mut Vec<Request>, limit: usize) -> bool {
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
