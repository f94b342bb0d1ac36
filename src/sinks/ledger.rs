//! What each sink has already delivered, so that a redelivery from the bus (at-least-once) never becomes a
//! second mail, POST or DMP submission.
//!
//! One redb file, `<data_dir>/sinks.redb`, table `delivered`: key `(sink, business key)` → (journal id, unix
//! seconds); table `outcomes`: `(sink, journal id)` → the last [`SinkRecord`] (outcome, reason, attempts) as
//! JSON, for the admin API; table `history`: `(sink, journal id, n)` → every recorded outcome in turn (the
//! timeline's attempts with their errors); table `purged`: `(sink, journal id)` → unix seconds when an
//! operator dropped the dead letter (cleared by the next outcome). Retention [`Ledger::forget`]s the outcomes
//! of the messages it prunes; the `delivered` keys stay (they are what stops a duplicate delivery). Business
//! keys: the notification key ([`crate::sinks::notify::idempotency_key`]) for
//! notifications, the document uniqueId (+ recipient set) for documents, the journal id otherwise. A key is
//! written only after the far side accepted the delivery; the write is durable before it returns.
//!
//! The sinks' loops write through [`Ledger::write`]: one writer thread takes every write queued while it
//! was committing and makes them durable together (group commit: one fsync for the deliveries of all the
//! partitions in flight, none blocking the async runtime's threads).

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use crate::sinks::retry::Outcome;

const DELIVERED: TableDefinition<(&str, &str), (u64, i64)> = TableDefinition::new("delivered");
const OUTCOMES: TableDefinition<(&str, u64), &str> = TableDefinition::new("outcomes");
const PURGED: TableDefinition<(&str, u64), i64> = TableDefinition::new("purged");
const HISTORY: TableDefinition<(&str, u64, u32), &str> = TableDefinition::new("history");
/// The ledger's file name inside the data directory.
pub const FILE_NAME: &str = "sinks.redb";

/// The ledger's storage failed.
#[derive(Debug, thiserror::Error)]
#[error("sinks ledger: {0}")]
pub struct Error(String);

fn storage(e: impl std::fmt::Display) -> Error {
    Error(e.to_string())
}

/// The record of deliveries, shared by every sink.
#[derive(Debug)]
pub struct Ledger {
    db: Arc<Database>,
    /// Delivered keys queued ([`Ledger::queue`]) and not committed yet, so that reads see them.
    queued: Arc<std::sync::Mutex<Queued>>,
    writer: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One write of [`Ledger::write`].
#[derive(Debug, Clone)]
pub enum Write {
    /// [`Ledger::record`]: `journal_id` delivered `key` in `sink` (kept if already there); gives whether it
    /// was fresh.
    Delivered {
        /// The sink (ledger name).
        sink: String,
        /// The business or journal key.
        key: String,
        /// The journal entry.
        journal_id: u64,
    },
    /// [`Ledger::record_outcome`]: the outcome of an attempt; gives `true`.
    Outcome {
        /// The sink.
        sink: String,
        /// The journal entry.
        journal_id: u64,
        /// What the attempt came to.
        outcome: Outcome,
        /// Attempts made so far.
        attempts: u32,
    },
}

type Queued = std::collections::HashMap<(String, String), u64>;

struct Job {
    writes: Vec<Write>,
    done: tokio::sync::oneshot::Sender<Result<Vec<bool>, Error>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("writes", &self.writes.len()).finish()
    }
}

/// The writer thread: commits every job queued meanwhile in one durable transaction.
fn run_writer(db: Arc<Database>, jobs: mpsc::Receiver<Job>, queued: Arc<std::sync::Mutex<Queued>>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < 4096
            && let Ok(job) = jobs.try_recv()
        {
            batch.push(job);
        }
        let committed = (|| {
            let txn = db.begin_write().map_err(storage)?;
            let mut results = Vec::with_capacity(batch.len());
            for job in &batch {
                let mut result = Vec::with_capacity(job.writes.len());
                for write in &job.writes {
                    result.push(apply(&txn, write)?);
                }
                results.push(result);
            }
            txn.commit().map_err(storage)?;
            Ok::<_, Error>(results)
        })();
        {
            let mut queued = queued.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for write in batch.iter().flat_map(|job| &job.writes) {
                if let Write::Delivered { sink, key, .. } = write {
                    queued.remove(&(sink.clone(), key.clone()));
                }
            }
        }
        match committed {
            Ok(results) => {
                for (job, result) in batch.into_iter().zip(results) {
                    let _ = job.done.send(Ok(result));
                }
            }
            Err(e) => {
                for job in batch {
                    let _ = job.done.send(Err(Error(e.0.clone())));
                }
            }
        }
    }
}

fn apply(txn: &WriteTransaction, write: &Write) -> Result<bool, Error> {
    match write {
        Write::Delivered { sink, key, journal_id } => insert_delivered(txn, sink, key, *journal_id),
        Write::Outcome { sink, journal_id, outcome, attempts } => {
            insert_outcome(txn, sink, *journal_id, outcome, *attempts).map(|()| true)
        }
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        // The writer ends once its queue is closed and drained; wait so the file is closed on return.
        drop(self.writer.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Ledger {
    /// Opens (or creates) the ledger in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Ledger, Error> {
        std::fs::create_dir_all(data_dir).map_err(storage)?;
        let db = Database::create(data_dir.join(FILE_NAME)).map_err(storage)?;
        let txn = db.begin_write().map_err(storage)?;
        txn.open_table(DELIVERED).map_err(storage)?;
        txn.open_table(OUTCOMES).map_err(storage)?;
        txn.open_table(PURGED).map_err(storage)?;
        txn.open_table(HISTORY).map_err(storage)?;
        txn.commit().map_err(storage)?;
        let db = Arc::new(db);
        let (writer, jobs) = mpsc::channel();
        let queued = Arc::new(std::sync::Mutex::new(Queued::new()));
        let thread = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn({
                let (db, queued) = (db.clone(), queued.clone());
                move || run_writer(db, jobs, queued)
            })
            .map_err(storage)?;
        Ok(Ledger { db, queued, writer: Some(writer), thread: Some(thread) })
    }

    /// Queues `writes` without waiting for them: the single writer commits in queue order, so they are durable
    /// once a [`Ledger::write`] queued after them returns (the consumption loop's record of the same
    /// delivery does that before the bus is answered), in the same fsync.
    /// Until then [`Ledger::delivered`] already answers from the queued keys.
    pub fn queue(&self, writes: Vec<Write>) -> Result<(), Error> {
        let (done, _) = tokio::sync::oneshot::channel();
        {
            let mut queued = self.queued.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for write in &writes {
                if let Write::Delivered { sink, key, journal_id } = write {
                    queued.entry((sink.clone(), key.clone())).or_insert(*journal_id);
                }
            }
        }
        let writer = self.writer.as_ref().ok_or_else(|| Error("ledger closed".into()))?;
        writer.send(Job { writes, done }).map_err(|_| Error("ledger writer stopped".into()))
    }

    /// Applies `writes` in order in one durable commit shared with the other writes queued meanwhile;
    /// returns each write's result (see [`Write`]) once durable. Does not block the async runtime.
    pub async fn write(&self, writes: Vec<Write>) -> Result<Vec<bool>, Error> {
        let (done, result) = tokio::sync::oneshot::channel();
        let writer = self.writer.as_ref().ok_or_else(|| Error("ledger closed".into()))?;
        writer.send(Job { writes, done }).map_err(|_| Error("ledger writer stopped".into()))?;
        result.await.map_err(|_| Error("ledger writer stopped".into()))?
    }

    /// The journal id that delivered `key` in `sink`, if it was delivered.
    pub fn delivered(&self, sink: &str, key: &str) -> Result<Option<u64>, Error> {
        // Queued first: the writer forgets a queued key only once its commit is done, so a key missing from
        // both places was not delivered.
        let queued = self.queued.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(id) = queued.get(&(sink.to_owned(), key.to_owned())) {
            return Ok(Some(*id));
        }
        drop(queued);
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(DELIVERED).map_err(storage)?;
        Ok(table.get((sink, key)).map_err(storage)?.map(|v| v.value().0))
    }

    /// Records that `journal_id` delivered `key` in `sink`; false if it already was (the first one is kept).
    pub fn record(&self, sink: &str, key: &str, journal_id: u64) -> Result<bool, Error> {
        let txn = self.db.begin_write().map_err(storage)?;
        let fresh = insert_delivered(&txn, sink, key, journal_id)?;
        txn.commit().map_err(storage)?;
        Ok(fresh)
    }

    /// [`Ledger::record`] and [`Ledger::record_outcome`] of a delivery in one commit (one fsync).
    pub fn record_delivered(
        &self,
        sink: &str,
        key: &str,
        journal_id: u64,
        outcome: &Outcome,
        attempts: u32,
    ) -> Result<bool, Error> {
        let txn = self.db.begin_write().map_err(storage)?;
        let fresh = insert_delivered(&txn, sink, key, journal_id)?;
        insert_outcome(&txn, sink, journal_id, outcome, attempts)?;
        txn.commit().map_err(storage)?;
        Ok(fresh)
    }
}

/// Inserts `(sink, key) -> journal_id` unless present; false if it was.
fn insert_delivered(txn: &WriteTransaction, sink: &str, key: &str, journal_id: u64) -> Result<bool, Error> {
    let mut table = txn.open_table(DELIVERED).map_err(storage)?;
    if table.get((sink, key)).map_err(storage)?.is_some() {
        return Ok(false);
    }
    let now = jiff::Timestamp::now().as_second();
    table.insert((sink, key), (journal_id, now)).map_err(storage)?;
    Ok(true)
}

/// Writes `outcome` as the last outcome of `(sink, journal_id)` and appends it to its history.
fn insert_outcome(
    txn: &WriteTransaction,
    sink: &str,
    journal_id: u64,
    outcome: &Outcome,
    attempts: u32,
) -> Result<(), Error> {
    let record = SinkRecord { outcome: outcome.clone(), attempts, at: jiff::Timestamp::now().as_second() };
    let json = serde_json::to_string(&record).map_err(storage)?;
    txn.open_table(OUTCOMES).map_err(storage)?.insert((sink, journal_id), json.as_str()).map_err(storage)?;
    txn.open_table(PURGED).map_err(storage)?.remove((sink, journal_id)).map_err(storage)?;
    let mut history = txn.open_table(HISTORY).map_err(storage)?;
    let last = history
        .range((sink, journal_id, 0)..=(sink, journal_id, u32::MAX))
        .map_err(storage)?
        .next_back()
        .transpose()
        .map_err(storage)?
        .map(|(key, _)| key.value().2);
    let next = last.map_or(0, |n| n.saturating_add(1));
    history.insert((sink, journal_id, next), json.as_str()).map_err(storage)?;
    Ok(())
}

/// The last outcome a sink reported for a journal entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SinkRecord {
    /// The outcome and its reason.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Attempts made so far.
    pub attempts: u32,
    /// When, unix seconds.
    pub at: i64,
}

impl Ledger {
    /// Records the outcome of attempt `attempts` of `sink` for journal entry `journal_id` (replaces the last).
    pub fn record_outcome(
        &self,
        sink: &str,
        journal_id: u64,
        outcome: &Outcome,
        attempts: u32,
    ) -> Result<(), Error> {
        let txn = self.db.begin_write().map_err(storage)?;
        insert_outcome(&txn, sink, journal_id, outcome, attempts)?;
        txn.commit().map_err(storage)
    }

    /// Every outcome `sink` recorded for `journal_id`, oldest first.
    pub fn history(&self, sink: &str, journal_id: u64) -> Result<Vec<SinkRecord>, Error> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(HISTORY).map_err(storage)?;
        let mut records = Vec::new();
        for row in table.range((sink, journal_id, 0)..=(sink, journal_id, u32::MAX)).map_err(storage)? {
            let (_, value) = row.map_err(storage)?;
            records.push(serde_json::from_str(value.value()).map_err(storage)?);
        }
        Ok(records)
    }

    /// Drops the outcomes, history and purge mark of `journal_id` in `sink` (retention pruned the message).
    pub fn forget(&self, sink: &str, journal_id: u64) -> Result<(), Error> {
        let txn = self.db.begin_write().map_err(storage)?;
        txn.open_table(OUTCOMES).map_err(storage)?.remove((sink, journal_id)).map_err(storage)?;
        txn.open_table(PURGED).map_err(storage)?.remove((sink, journal_id)).map_err(storage)?;
        {
            let mut history = txn.open_table(HISTORY).map_err(storage)?;
            history
                .retain_in((sink, journal_id, 0)..=(sink, journal_id, u32::MAX), |_, _| false)
                .map_err(storage)?;
        }
        txn.commit().map_err(storage)
    }

    /// Records that an operator dropped the dead letter of `journal_id` in `sink`.
    pub fn record_purged(&self, sink: &str, journal_id: u64) -> Result<(), Error> {
        let txn = self.db.begin_write().map_err(storage)?;
        let now = jiff::Timestamp::now().as_second();
        txn.open_table(PURGED).map_err(storage)?.insert((sink, journal_id), now).map_err(storage)?;
        txn.commit().map_err(storage)
    }

    /// When (unix seconds) an operator dropped the dead letter of `journal_id` in `sink`, since its last
    /// outcome.
    pub fn purged(&self, sink: &str, journal_id: u64) -> Result<Option<i64>, Error> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(PURGED).map_err(storage)?;
        Ok(table.get((sink, journal_id)).map_err(storage)?.map(|v| v.value()))
    }

    /// True when `sink` is done with `journal_id` for good: delivered, undeliverable, or failed and purged.
    /// A retry, a hold (waiting for a person), a dead letter still queued, or no outcome yet is not final.
    pub fn settled(&self, sink: &str, journal_id: u64) -> Result<bool, Error> {
        Ok(match self.outcome(sink, journal_id)? {
            Some(SinkRecord { outcome: Outcome::Delivered | Outcome::Undeliverable { .. }, .. }) => true,
            Some(SinkRecord { outcome: Outcome::Failed { .. }, .. }) => {
                self.purged(sink, journal_id)?.is_some()
            }
            _ => false,
        })
    }

    /// The last outcomes named `outcome` (`undeliverable`, `held`...), newest journal id first, of `sink` or
    /// of every sink, at most `limit`.
    pub fn outcomes_named(
        &self,
        sink: Option<&str>,
        outcome: &str,
        limit: usize,
    ) -> Result<Vec<(String, u64, SinkRecord)>, Error> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(OUTCOMES).map_err(storage)?;
        let rows = match sink {
            Some(sink) => table.range((sink, 0)..=(sink, u64::MAX)).map_err(storage)?,
            None => table.range::<(&str, u64)>(..).map_err(storage)?,
        };
        // Records are compact JSON with the outcome first: skip the others without decoding them.
        let tag = format!("{{\"outcome\":\"{outcome}\"");
        let mut found = Vec::new();
        for row in rows {
            let (key, value) = row.map_err(storage)?;
            if !value.value().starts_with(&tag) {
                continue;
            }
            let record: SinkRecord = serde_json::from_str(value.value()).map_err(storage)?;
            if record.outcome.as_str() == outcome {
                let (sink, id) = key.value();
                found.push((sink.to_owned(), id, record));
            }
        }
        found.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        found.truncate(limit);
        Ok(found)
    }

    /// The last outcome `sink` reported for `journal_id`.
    pub fn outcome(&self, sink: &str, journal_id: u64) -> Result<Option<SinkRecord>, Error> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(OUTCOMES).map_err(storage)?;
        let Some(v) = table.get((sink, journal_id)).map_err(storage)? else { return Ok(None) };
        serde_json::from_str(v.value()).map(Some).map_err(storage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_delivered_once_per_sink_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        assert_eq!(ledger.delivered("notify", "k1").unwrap(), None);
        assert!(ledger.record("notify", "k1", 7).unwrap());
        assert!(!ledger.record("notify", "k1", 9).unwrap());
        assert_eq!(ledger.delivered("mss", "k1").unwrap(), None);
        drop(ledger);
        let ledger = Ledger::open(dir.path()).unwrap();
        assert_eq!(ledger.delivered("notify", "k1").unwrap(), Some(7));
        ledger.record_outcome("mss", 7, &Outcome::retry("SMTP 421"), 2).unwrap();
        let rec = ledger.outcome("mss", 7).unwrap().unwrap();
        assert_eq!((rec.outcome, rec.attempts), (Outcome::retry("SMTP 421"), 2));
        assert_eq!(ledger.outcome("mss", 8).unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_are_durable_and_keep_the_first_delivery() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Arc::new(Ledger::open(dir.path()).unwrap());
        let mut tasks = tokio::task::JoinSet::new();
        for id in 0..64u64 {
            let ledger = ledger.clone();
            tasks.spawn(async move {
                let delivered =
                    Write::Delivered { sink: "gp".into(), key: format!("k{}", id % 32), journal_id: id };
                let outcome = Write::Outcome {
                    sink: "gp".into(),
                    journal_id: id,
                    outcome: Outcome::Delivered,
                    attempts: 1,
                };
                ledger.write(vec![delivered, outcome]).await.unwrap()
            });
        }
        let mut fresh = 0;
        while let Some(result) = tasks.join_next().await {
            let result = result.unwrap();
            assert!(result[1]);
            fresh += usize::from(result[0]);
        }
        assert_eq!(fresh, 32, "each key delivered once");
        ledger
            .queue(vec![Write::Delivered { sink: "gp".into(), key: "queued".into(), journal_id: 99 }])
            .unwrap();
        assert_eq!(ledger.delivered("gp", "queued").unwrap(), Some(99), "a queued key is seen at once");
        let after =
            Write::Outcome { sink: "gp".into(), journal_id: 99, outcome: Outcome::Delivered, attempts: 1 };
        ledger.write(vec![after]).await.unwrap();
        assert_eq!(ledger.delivered("gp", "queued").unwrap(), Some(99), "queued before: committed before");
        drop(Arc::into_inner(ledger).unwrap());
        let ledger = Ledger::open(dir.path()).unwrap();
        for id in 0..64u64 {
            assert_eq!(ledger.outcome("gp", id).unwrap().unwrap().outcome, Outcome::Delivered);
            let first = ledger.delivered("gp", &format!("k{}", id % 32)).unwrap().unwrap();
            assert_eq!(first % 32, id % 32);
        }
    }

    #[test]
    fn settled_only_when_delivered_undeliverable_or_failed_and_purged() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        assert!(!ledger.settled("mss", 1).unwrap(), "no outcome yet");
        ledger.record_outcome("mss", 1, &Outcome::retry("SMTP 421"), 1).unwrap();
        assert!(!ledger.settled("mss", 1).unwrap());
        ledger.record_outcome("mss", 1, &Outcome::Delivered, 2).unwrap();
        assert!(ledger.settled("mss", 1).unwrap());
        ledger.record_outcome("gp", 2, &Outcome::Undeliverable { reason: "no GP".into() }, 1).unwrap();
        assert!(ledger.settled("gp", 2).unwrap());
        ledger.record_outcome("dmp", 3, &Outcome::Held { reason: "identity review".into() }, 1).unwrap();
        assert!(!ledger.settled("dmp", 3).unwrap());
        ledger.record_outcome("mss", 4, &Outcome::failed("SMTP 550"), 1).unwrap();
        assert!(!ledger.settled("mss", 4).unwrap(), "a dead letter still queued");
        ledger.record_purged("mss", 4).unwrap();
        assert!(ledger.settled("mss", 4).unwrap());
        ledger.record_outcome("mss", 4, &Outcome::failed("SMTP 550"), 1).unwrap();
        assert!(!ledger.settled("mss", 4).unwrap(), "a new outcome clears the purge");

        ledger.record_outcome("gp", 5, &Outcome::Undeliverable { reason: "opposition".into() }, 1).unwrap();
        let all = ledger.outcomes_named(None, "undeliverable", 10).unwrap();
        let ids: Vec<(String, u64)> = all.iter().map(|(s, id, _)| (s.clone(), *id)).collect();
        assert_eq!(ids, [("gp".to_string(), 5), ("gp".to_string(), 2)]);
        assert_eq!(all[0].2.outcome.reason(), Some("opposition"));
        assert_eq!(ledger.outcomes_named(Some("mss"), "undeliverable", 10).unwrap().len(), 0);
        assert_eq!(ledger.outcomes_named(None, "undeliverable", 1).unwrap().len(), 1);

        let history: Vec<&str> =
            ledger.history("mss", 1).unwrap().iter().map(|r| r.outcome.as_str()).collect();
        assert_eq!(history, ["retry", "delivered"]);
        assert_eq!(ledger.history("mss", 1).unwrap()[0].outcome.reason(), Some("SMTP 421"));
        ledger.forget("mss", 1).unwrap();
        assert_eq!((ledger.outcome("mss", 1).unwrap(), ledger.history("mss", 1).unwrap().len()), (None, 0));
        assert_eq!(ledger.history("mss", 4).unwrap().len(), 2, "other messages keep theirs");
    }
}
