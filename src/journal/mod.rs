//! The durable message store: `append` returns an id only after the entry is on disk (logged and fsynced).
//!
//! Ingest hands each message to [`Journal::append`] (accepted as `Received`, refused as `Rejected` with a
//! reason) and acknowledges only once it returns; the admin API reads [`Journal::stats`], [`Journal::list`],
//! [`Journal::get`] and [`Journal::raw`]. The pipeline (which owns the state transitions after `received`)
//! waits on [`Journal::committed`], reads [`Journal::unfinished`] in id order and records each stage with
//! [`Journal::update`]: received → mapped → routed | unrouted | failed → published.
//!
//! - One redb file (format in [`store`]) behind a write-ahead log (format in [`wal`]); ids are dense,
//!   monotonic and continue after a restart.
//! - Group commit: one writer thread logs everything queued in one WAL write and one `fdatasync`, then
//!   answers every caller of that batch (see [`writer`]); an answer never precedes its sync.
//! - Pipeline stages ([`Flush::Deferred`]) are logged without a write or sync of their own (the log holds
//!   them in memory): the next append's sync, or the next checkpoint, makes them durable. A stage lost in a
//!   crash is one the pipeline redoes from the entry's last durable state (and the sinks never deliver
//!   twice), so a lone sender pays one `fdatasync` per message, not one per message and per stage.
//! - An applier thread puts the logged batches into redb without fsync, and checkpoints (a durable redb
//!   commit, after which the covered WAL segments are recycled) every `checkpoint_interval` or
//!   `wal_segment_bytes` applied (see [`applier`]). [`Journal::open`] replays the log past redb's last
//!   checkpoint, so whatever was answered survives a crash (kill -9, power loss).
//! - Deduplication: a `Received` entry with the same MSH-4 + MSH-10 and the same bytes as one stored within
//!   `dedup_window` is not stored again ([`Appended::Duplicate`]); different bytes are stored as `Rejected`
//!   for review ([`Appended::Conflict`]); after the window the key is simply reused.
//!
//! Reads are synchronous and use their own read transactions. They first wait until redb holds every write
//! answered before the call (read-your-writes; the applier is microseconds to a few milliseconds behind).
//! `stats` and `get` take tens of microseconds and may be called from async code directly; `list` and `raw`
//! read more and belong in `tokio::task::spawn_blocking` when called from a request handler.
//!
//! It never logs message content.

mod applier;
mod op;
mod record;
mod store;
mod wal;
mod writer;

#[cfg(test)]
mod bench;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use jiff::Timestamp;
use redb::Database;
use tokio::sync::{mpsc, oneshot};

pub use record::{
    Appended, Delivery, DocumentMeta, EntryMeta, Event, HeaderFields, NewEntry, Progress, ReplayFrom, Stage,
    State, Transport,
};
pub use store::{Filter, Pruned};
pub use writer::CommitStats;

use applier::{Applier, Checkpoints, Marks};
use op::Op;
use store::{Prepared, Update};
use writer::{CommitCounters, Request, Writer};

/// Appends waiting for the writer before `append` itself waits for room.
const QUEUE_CAPACITY: usize = 65_536;

/// Logged batches waiting for the applier before the writer itself waits, a backstop: the queue is bounded
/// in bytes ([`applier::MAX_BACKLOG_BYTES`]).
const APPLIER_BACKLOG: usize = 1024;

/// Where the journal lives and how it behaves.
#[derive(Debug, Clone)]
pub struct JournalConfig {
    /// The redb file (created if missing; its directory must exist).
    pub path: PathBuf,
    /// How long a resent message (same MSH-4 + MSH-10 + bytes) counts as a duplicate.
    pub dedup_window: Duration,
    /// Most appends in one group commit (default 4096).
    pub max_batch: usize,
    /// Size of each write-ahead log segment file (default 16 MiB), preallocated; also the most bytes
    /// applied between two checkpoints.
    pub wal_segment_bytes: u64,
    /// Longest time between a write and the checkpoint that makes it durable in redb (default 1 s).
    pub checkpoint_interval: Duration,
    /// redb's page cache (default 32 MiB). Appends touch only the right edge of each table, so a small
    /// cache is enough; it is most of the server's memory under load.
    pub cache_bytes: usize,
}

impl JournalConfig {
    /// A config for `path` with the default window (24 h), batch size (4096), WAL segment (16 MiB),
    /// checkpoint interval (1 s) and page cache (32 MiB).
    pub fn new(path: impl Into<PathBuf>) -> JournalConfig {
        JournalConfig {
            path: path.into(),
            dedup_window: Duration::from_secs(24 * 3600),
            max_batch: 4096,
            wal_segment_bytes: 16 << 20,
            checkpoint_interval: Duration::from_secs(1),
            cache_bytes: 32 << 20,
        }
    }

    /// The write-ahead log directory: beside the redb file (`journal.redb` -> `journal-wal/`).
    pub fn wal_dir(&self) -> PathBuf {
        wal::dir_for(&self.path)
    }
}

/// When a journal update must reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Before the update is answered: an operator's action (a replay) that must survive a crash.
    Now,
    /// With the next synced write (an append's group commit) or checkpoint, at most
    /// `journal.checkpoint_ms` later: a pipeline stage, redone after a crash if it was lost.
    Deferred,
}

/// What can go wrong in the journal. Cheap to clone, so one failed commit can answer every caller.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// `close` was called: no more appends.
    #[error("the journal is closed")]
    Closed,
    /// The writer thread ended without answering (it panicked).
    #[error("the journal writer stopped without answering")]
    WriterLost,
    /// redb failed (open, read, write or commit).
    #[error("journal storage: {0}")]
    Storage(Arc<redb::Error>),
    /// A stored record no longer decodes.
    #[error("journal entry {id} cannot be decoded: {source}")]
    Corrupt {
        /// The entry's id.
        id: u64,
        /// The decoding error.
        source: Arc<serde_json::Error>,
    },
    /// An entry's metadata could not be encoded.
    #[error("journal entry cannot be encoded: {0}")]
    Encode(Arc<serde_json::Error>),
    /// An update named an id the journal does not hold.
    #[error("no journal entry {0}")]
    Unknown(u64),
    /// The writer thread could not be started.
    #[error("cannot start the journal writer thread: {0}")]
    Thread(Arc<std::io::Error>),
    /// The write-ahead log could not be read, written or synced.
    #[error("journal write-ahead log: {0}")]
    Wal(Arc<std::io::Error>),
    /// A write-ahead log record with a valid checksum does not decode (written by another version?).
    #[error("journal write-ahead log record {lsn} cannot be decoded: {reason}")]
    WalRecord {
        /// The record's number.
        lsn: u64,
        /// What is wrong with it.
        reason: String,
    },
}

/// Every redb error type converts into [`Error::Storage`].
macro_rules! from_redb {
    ($($source:ty),*) => {$(
        impl From<$source> for Error {
            fn from(error: $source) -> Error {
                Error::Storage(Arc::new(error.into()))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// A handle on the journal; cheap to clone (all clones share one file and one writer thread).
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    intake: RwLock<Option<mpsc::Sender<Request>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    counters: Arc<CommitCounters>,
    committed: tokio::sync::watch::Receiver<u64>,
    replays: tokio::sync::watch::Sender<u64>,
    marks: Arc<Marks>,
}

/// An entry the pipeline has not finished with, as [`Journal::unfinished`] returns it.
#[derive(Debug, Clone)]
pub struct Unfinished {
    /// Its metadata (state, and progress once routed).
    pub meta: EntryMeta,
    /// The message bytes exactly as received.
    pub raw: Vec<u8>,
    /// The FHIR Bundle, once mapped.
    pub bundle: Option<Vec<u8>>,
}

impl Journal {
    /// Opens or creates the store, replays the write-ahead log past redb's last checkpoint (ids continue
    /// after the highest stored), checkpoints, and starts the writer and applier threads.
    pub fn open(cfg: JournalConfig) -> Result<Journal, Error> {
        let wal_error = |error: std::io::Error| Error::Wal(Arc::new(error));
        let db = redb::Builder::new().set_cache_size(cfg.cache_bytes).create(&cfg.path)?;
        store::create_tables(&db)?;
        let db = Arc::new(db);
        let wal_dir = cfg.wal_dir();
        let recovered = wal::recover(&wal_dir).map_err(wal_error)?;
        let (lsn, next_id) = replay(&db, &recovered.records)?;
        let segments = Arc::new(wal::Shared::default());
        segments.checkpointed(lsn);
        let segment_bytes = cfg.wal_segment_bytes.max(1 << 16);
        let wal =
            wal::Wal::start(&wal_dir, segment_bytes, &recovered, Arc::clone(&segments)).map_err(wal_error)?;
        drop(recovered);

        let last_id = store::last_id(&db)?;
        let marks = Arc::new(Marks::new(lsn, last_id));
        let counters = Arc::new(CommitCounters::default());
        let (committed_tx, committed) = tokio::sync::watch::channel(last_id);
        let (to_applier, batches) = std::sync::mpsc::sync_channel(APPLIER_BACKLOG);
        let applier = Applier {
            db: Arc::clone(&db),
            batches,
            marks: Arc::clone(&marks),
            segments,
            checkpoints: Checkpoints { interval: cfg.checkpoint_interval, bytes: segment_bytes },
            counters: Arc::clone(&counters),
            committed: committed_tx,
        };
        let thread = |error| Error::Thread(Arc::new(error));
        let applier_thread = std::thread::Builder::new()
            .name("journal-apply".into())
            .spawn(move || applier.run())
            .map_err(thread)?;
        let (sender, queue) = mpsc::channel(QUEUE_CAPACITY);
        let writer = Writer {
            db: Arc::clone(&db),
            queue,
            max_batch: cfg.max_batch,
            dedup_window_us: i64::try_from(cfg.dedup_window.as_micros()).unwrap_or(i64::MAX),
            counters: Arc::clone(&counters),
            wal,
            next_lsn: lsn + 1,
            next_id,
            marks: Arc::clone(&marks),
            applier: to_applier,
            applier_thread,
        };
        let handle = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer.run())
            .map_err(thread)?;
        Ok(Journal {
            inner: Arc::new(Inner {
                db,
                intake: RwLock::new(Some(sender)),
                writer: Mutex::new(Some(handle)),
                counters,
                committed,
                replays: tokio::sync::watch::Sender::new(0),
                marks,
            }),
        })
    }

    /// Queues the entry for the next group commit; resolves once that commit is durable.
    ///
    /// Deduplication applies only to entries with state `Received` and a header (key: sending_facility +
    /// control_id). If the future is dropped after the entry was queued, the entry is still written.
    pub async fn append(&self, entry: NewEntry) -> Result<Appended, Error> {
        self.enqueue(entry).await?.await
    }

    /// Queues the entry and returns at once with a [`Pending`] outcome to await later. Entries queued one
    /// after the other (from one connection) are journaled in that order, so a caller can keep several in
    /// flight and still answer them in order.
    pub async fn enqueue(&self, entry: NewEntry) -> Result<Pending, Error> {
        let entry = Prepared::new(entry)?;
        let sender = {
            let intake = self.inner.intake.read().unwrap_or_else(PoisonError::into_inner);
            intake.clone().ok_or(Error::Closed)?
        };
        let (reply, answer) = oneshot::channel();
        sender.send(Request::Append { entry, reply }).await.map_err(|_| Error::Closed)?;
        Ok(Pending(answer))
    }

    /// Records pipeline stages of entry `id` (in the next group commit); resolves once durable.
    pub async fn update(&self, id: u64, stages: Vec<Stage>) -> Result<(), Error> {
        self.enqueue_update(id, stages, Flush::Now).await?.await.unwrap_or(Err(Error::WriterLost))
    }

    /// Queues an update and returns its answer to await later; updates queued one after the other are
    /// written in that order. The answer comes once the update is logged, and synced if `flush` is
    /// [`Flush::Now`].
    pub async fn enqueue_update(
        &self,
        id: u64,
        stages: Vec<Stage>,
        flush: Flush,
    ) -> Result<oneshot::Receiver<Result<(), Error>>, Error> {
        let sender = {
            let intake = self.inner.intake.read().unwrap_or_else(PoisonError::into_inner);
            intake.clone().ok_or(Error::Closed)?
        };
        let (reply, answer) = oneshot::channel();
        let request = Request::Update { update: Update { id, stages, flush }, reply };
        sender.send(request).await.map_err(|_| Error::Closed)?;
        Ok(answer)
    }

    /// The highest stored id, updated once each batch is in redb: the pipeline waits on it for new entries.
    /// Every append answered before this call is already counted in the receiver's current value.
    pub fn committed(&self) -> tokio::sync::watch::Receiver<u64> {
        // A failed applier stops the watch; readers then see the error.
        let _ = self.inner.marks.wait_applied();
        self.inner.committed.clone()
    }

    /// Entries in a state the pipeline has not finished ([`State::UNFINISHED`]) with an id above `after`, in
    /// id order, at most `limit`.
    pub fn unfinished(&self, after: u64, limit: usize) -> Result<Vec<Unfinished>, Error> {
        self.inner.marks.wait_applied()?;
        store::unfinished(&self.inner.db, after, limit)
    }

    /// As [`Journal::unfinished`], but reads what redb holds now instead of waiting for every logged write
    /// to be applied: for a reader that [`Journal::committed`] wakes (it is bumped after each apply, so an
    /// entry applied after this read still wakes it). Waiting would make the applier commit each of the
    /// pipeline's own deferred stages in a redb transaction of its own.
    pub fn unfinished_applied(&self, after: u64, limit: usize) -> Result<Vec<Unfinished>, Error> {
        if let Some(error) = self.inner.marks.failure() {
            return Err(error);
        }
        store::unfinished(&self.inner.db, after, limit)
    }

    /// The FHIR Bundle stored for entry `id`, once mapped.
    pub fn bundle(&self, id: u64) -> Result<Option<Vec<u8>>, Error> {
        self.inner.marks.wait_applied()?;
        store::bundle(&self.inner.db, id)
    }

    /// Counts: `{"journaled": total, "received": n, "rejected": n, ...}` (every state, zeros included).
    pub fn stats(&self) -> Result<BTreeMap<String, u64>, Error> {
        self.inner.marks.wait_applied()?;
        store::stats(&self.inner.db)
    }

    /// Metadata, newest first, optionally of one state only, at most `limit` entries.
    pub fn list(&self, state: Option<State>, limit: usize) -> Result<Vec<EntryMeta>, Error> {
        self.inner.marks.wait_applied()?;
        store::list(&self.inner.db, state, limit)
    }

    /// Newest first, the entries `filter` matches, at most `limit`, looking at no more than `scan` entries
    /// (the newest ones, or of the filter's state). Blocking: call it from `spawn_blocking`.
    pub fn search(&self, filter: &Filter, limit: usize, scan: usize) -> Result<Vec<EntryMeta>, Error> {
        self.inner.marks.wait_applied()?;
        store::search(&self.inner.db, filter, limit, scan)
    }

    /// Sends entry `id` through the pipeline again from `from` (a journal update through the writer), and
    /// wakes the pipeline, which then re-reads the journal from the start.
    pub async fn replay(&self, id: u64, from: ReplayFrom) -> Result<(), Error> {
        self.replay_many(&[id], from).await.remove(0)
    }

    /// As [`Journal::replay`] for several entries at once: queued together so they share group commits;
    /// one result per id, in order.
    pub async fn replay_many(&self, ids: &[u64], from: ReplayFrom) -> Vec<Result<(), Error>> {
        let mut answers = Vec::with_capacity(ids.len());
        for &id in ids {
            answers.push(self.enqueue_update(id, vec![Stage::Replay { from }], Flush::Now).await);
        }
        let mut results = Vec::with_capacity(ids.len());
        for answer in answers {
            results.push(match answer {
                Ok(answer) => answer.await.unwrap_or(Err(Error::WriterLost)),
                Err(error) => Err(error),
            });
        }
        if results.iter().any(Result::is_ok) {
            self.inner.replays.send_modify(|count| *count += 1);
        }
        results
    }

    /// Bumped after every [`Journal::replay`]: the pipeline watches it to look behind its cursor.
    pub fn replays(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.replays.subscribe()
    }

    /// One retention batch: removes at most `limit` published entries received before `meta_before`, raw
    /// bytes received before `raw_before` (never after `meta_before`). One short write transaction, so
    /// appends wait at most that long. Blocking: call it from `spawn_blocking`.
    pub fn prune(
        &self,
        meta_before: Timestamp,
        raw_before: Timestamp,
        limit: usize,
    ) -> Result<Pruned, Error> {
        // Decide on what was answered: the published states still in the log are applied first.
        self.inner.marks.wait_applied()?;
        store::prune(&self.inner.db, meta_before, raw_before.min(meta_before), limit)
    }

    /// [`Journal::prune`] of the published entries from id `from` on that `may_prune` accepts (retention
    /// asks the sinks' ledger whether every destination is done); skipped entries stay. Looks at most
    /// `20 * limit` entries; returns what went and the id to go on from (`None`: the pass is over).
    pub fn prune_where(
        &self,
        meta_before: Timestamp,
        raw_before: Timestamp,
        limit: usize,
        from: u64,
        may_prune: &dyn Fn(&EntryMeta) -> bool,
    ) -> Result<(Pruned, Option<u64>), Error> {
        self.inner.marks.wait_applied()?;
        store::prune_where(&self.inner.db, meta_before, raw_before.min(meta_before), limit, from, may_prune)
    }

    /// Metadata of entry `id`, if stored.
    pub fn get(&self, id: u64) -> Result<Option<EntryMeta>, Error> {
        self.inner.marks.wait_applied()?;
        store::get(&self.inner.db, id)
    }

    /// The bytes of entry `id` exactly as received, if stored.
    pub fn raw(&self, id: u64) -> Result<Option<Vec<u8>>, Error> {
        self.inner.marks.wait_applied()?;
        store::raw(&self.inner.db, id)
    }

    /// Stops taking appends, commits what is already queued, and joins the writer thread.
    ///
    /// Appends started before `close` are answered; later ones get [`Error::Closed`]. Calling it twice is
    /// harmless.
    pub async fn close(&self) -> Result<(), Error> {
        self.inner.stop_intake();
        let handle = self.inner.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(handle) = handle {
            let joined = tokio::task::spawn_blocking(move || handle.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                return Err(Error::WriterLost);
            }
        }
        Ok(())
    }

    /// True until `close`: appends are taken.
    pub fn is_accepting(&self) -> bool {
        self.inner.intake.read().unwrap_or_else(PoisonError::into_inner).is_some()
    }

    /// Group-commit figures since `open`.
    pub fn commit_stats(&self) -> CommitStats {
        self.inner.counters.snapshot()
    }
}

/// Applies the recovered WAL records past redb's checkpoint (contiguous from it) in one durable commit;
/// returns the last lsn redb now holds and the next id.
fn replay(db: &Database, records: &[(u64, Vec<u8>)]) -> Result<(u64, u64), Error> {
    let (applied, mut next_id) = store::wal_state(db)?;
    let mut lsn = applied;
    let mut ops = Vec::new();
    for (record_lsn, payload) in records {
        if *record_lsn <= applied {
            continue;
        }
        if *record_lsn != lsn + 1 {
            tracing::warn!(expected = lsn + 1, found = record_lsn, "journal WAL has a gap: replay stops");
            break;
        }
        let op = Op::decode(payload)
            .map_err(|error| Error::WalRecord { lsn: *record_lsn, reason: error.to_string() })?;
        if let Op::Append(append) = &op {
            next_id = next_id.max(append.id + 1);
        }
        ops.push(op);
        lsn = *record_lsn;
    }
    if lsn > applied {
        tracing::info!(records = ops.len(), from = applied + 1, to = lsn, "journal WAL replayed");
    }
    // Durable either way: the log files are reused once this returns.
    store::apply_ops(db, &ops, lsn, next_id, redb::Durability::Immediate)?;
    Ok((lsn, next_id))
}

/// The outcome of a queued append; resolves once its group commit is durable (or failed).
#[derive(Debug)]
pub struct Pending(oneshot::Receiver<Result<Appended, Error>>);

impl std::future::Future for Pending {
    type Output = Result<Appended, Error>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|answer| answer.unwrap_or(Err(Error::WriterLost)))
    }
}

impl Inner {
    fn stop_intake(&self) {
        self.intake.write().unwrap_or_else(PoisonError::into_inner).take();
    }
}

impl Drop for Inner {
    /// The last handle gone: let the writer finish what is queued, so the file is closed on return and can
    /// be opened again at once.
    fn drop(&mut self) {
        self.stop_intake();
        if let Some(handle) = self.writer.get_mut().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = handle.join();
        }
    }
}
