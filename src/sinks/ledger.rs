//! What each sink has already delivered, so that a redelivery from the bus (at-least-once) never becomes a
//! second mail, POST or DMP submission.
//!
//! One redb file, `<data_dir>/sinks.redb`, table `delivered`: key `(sink, business key)` → (journal id, unix
//! seconds); table `outcomes`: `(sink, journal id)` → the last [`SinkRecord`] (outcome, reason, attempts) as
//! JSON, for the admin API. Business keys: the notification key ([`crate::sinks::notify::idempotency_key`]) for
//! notifications, the document uniqueId (+ recipient set) for documents, the journal id otherwise. A key is
//! written only after the far side accepted the delivery; the write is durable before it returns.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::sinks::retry::Outcome;

const DELIVERED: TableDefinition<(&str, &str), (u64, i64)> = TableDefinition::new("delivered");
const OUTCOMES: TableDefinition<(&str, u64), &str> = TableDefinition::new("outcomes");
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
    db: Database,
}

impl Ledger {
    /// Opens (or creates) the ledger in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Ledger, Error> {
        std::fs::create_dir_all(data_dir).map_err(storage)?;
        let db = Database::create(data_dir.join(FILE_NAME)).map_err(storage)?;
        let txn = db.begin_write().map_err(storage)?;
        txn.open_table(DELIVERED).map_err(storage)?;
        txn.open_table(OUTCOMES).map_err(storage)?;
        txn.commit().map_err(storage)?;
        Ok(Ledger { db })
    }

    /// The journal id that delivered `key` in `sink`, if it was delivered.
    pub fn delivered(&self, sink: &str, key: &str) -> Result<Option<u64>, Error> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(DELIVERED).map_err(storage)?;
        Ok(table.get((sink, key)).map_err(storage)?.map(|v| v.value().0))
    }

    /// Records that `journal_id` delivered `key` in `sink`; false if it already was (the first one is kept).
    pub fn record(&self, sink: &str, key: &str, journal_id: u64) -> Result<bool, Error> {
        let txn = self.db.begin_write().map_err(storage)?;
        let fresh = {
            let mut table = txn.open_table(DELIVERED).map_err(storage)?;
            if table.get((sink, key)).map_err(storage)?.is_some() {
                false
            } else {
                let now = jiff::Timestamp::now().as_second();
                table.insert((sink, key), (journal_id, now)).map_err(storage)?;
                true
            }
        };
        txn.commit().map_err(storage)?;
        Ok(fresh)
    }
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
        let record =
            SinkRecord { outcome: outcome.clone(), attempts, at: jiff::Timestamp::now().as_second() };
        let json = serde_json::to_string(&record).map_err(storage)?;
        let txn = self.db.begin_write().map_err(storage)?;
        txn.open_table(OUTCOMES)
            .map_err(storage)?
            .insert((sink, journal_id), json.as_str())
            .map_err(storage)?;
        txn.commit().map_err(storage)
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
}
