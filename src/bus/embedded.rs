//! The embedded bus: a redb file (`<data_dir>/bus.redb`) with the AMQP back-end's semantics, so
//! `relais serve` needs no broker.
//!
//! Tables:
//! - `queue`: (sink, partition, journal id) → encoded [`Envelope`]; a partition is read in key order, so in
//!   journal order, and publishing the same journal id twice keeps one copy;
//! - `attempts`: same key → deliveries so far (absent = none);
//! - `dead`: (sink, journal id) → encoded envelope: the sink's dead-letter queue.
//!
//! `publish` returns once its write transaction is durable (the "confirm"). One consumer per partition at a
//! time (single active consumer); a delivery stays at the head of its partition until acked, retried past
//! `max_attempts` or dead-lettered, so order holds across retries and restarts.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::Notify;

use super::{BusSettings, Envelope, Error};

const QUEUE: TableDefinition<(&str, u16, u64), &[u8]> = TableDefinition::new("queue");
const ATTEMPTS: TableDefinition<(&str, u16, u64), u32> = TableDefinition::new("attempts");
const DEAD: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("dead");

/// The embedded bus; cheap to clone.
#[derive(Clone)]
pub struct EmbeddedBus {
    shared: Arc<Shared>,
}

struct Shared {
    db: Database,
    settings: BusSettings,
    sinks: BTreeSet<String>,
    notify: Notify,
    taken: Mutex<HashSet<(String, u16)>>,
}

impl EmbeddedBus {
    /// Opens or creates the file; `sinks` are the sink instances that may be published to.
    pub fn open(path: &Path, settings: BusSettings, sinks: &[String]) -> Result<EmbeddedBus, Error> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        {
            txn.open_table(QUEUE)?;
            txn.open_table(ATTEMPTS)?;
            txn.open_table(DEAD)?;
        }
        txn.commit()?;
        Ok(EmbeddedBus {
            shared: Arc::new(Shared {
                db,
                settings,
                sinks: sinks.iter().cloned().collect(),
                notify: Notify::new(),
                taken: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// The settings it was opened with.
    pub fn settings(&self) -> &BusSettings {
        &self.shared.settings
    }

    /// Writes the batch in one durable transaction.
    pub async fn publish(&self, batch: &[Envelope]) -> Result<(), Error> {
        let partitions = self.shared.settings.partitions;
        let mut rows = Vec::with_capacity(batch.len());
        for envelope in batch {
            if !self.shared.sinks.contains(&envelope.sink) {
                return Err(Error::Unknown { sink: envelope.sink.clone(), partition: 0 });
            }
            rows.push((
                envelope.sink.clone(),
                envelope.partition(partitions),
                envelope.message_id,
                envelope.encode(),
            ));
        }
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || -> Result<(), Error> {
            let mut txn = shared.db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            {
                let mut queue = txn.open_table(QUEUE)?;
                for (sink, partition, id, bytes) in &rows {
                    queue.insert((sink.as_str(), *partition, *id), bytes.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        })
        .await
        .map_err(|e| Error::Envelope(format!("embedded publish task: {e}")))??;
        self.shared.notify.notify_waiters();
        Ok(())
    }

    /// Takes a partition of a sink; fails if another consumer holds it.
    pub fn consume(&self, sink: &str, partition: u16) -> Result<EmbeddedConsumer, Error> {
        if !self.shared.sinks.contains(sink) || partition >= self.shared.settings.partitions {
            return Err(Error::Unknown { sink: sink.into(), partition });
        }
        let key = (sink.to_owned(), partition);
        if !self.shared.taken.lock().unwrap_or_else(PoisonError::into_inner).insert(key) {
            return Err(Error::PartitionBusy { sink: sink.into(), partition });
        }
        Ok(EmbeddedConsumer { bus: self.clone(), sink: sink.into(), partition })
    }

    /// Removes and returns up to `limit` dead letters of `sink`, oldest journal id first.
    pub fn take_dead_letters(&self, sink: &str, limit: usize) -> Result<Vec<Envelope>, Error> {
        let txn = self.shared.db.begin_write()?;
        let mut taken = Vec::new();
        {
            let mut dead = txn.open_table(DEAD)?;
            let mut keys = Vec::new();
            for item in dead.range((sink, 0)..=(sink, u64::MAX))?.take(limit) {
                let (key, value) = item?;
                keys.push(key.value().1);
                taken.push(Envelope::decode(value.value())?);
            }
            for id in keys {
                dead.remove((sink, id))?;
            }
        }
        txn.commit()?;
        Ok(taken)
    }

    /// Up to `limit` dead letters of `sink`, oldest journal id first, left in the queue.
    pub fn dead_letters(&self, sink: &str, limit: usize) -> Result<Vec<Envelope>, Error> {
        let txn = self.shared.db.begin_read()?;
        let dead = txn.open_table(DEAD)?;
        let mut found = Vec::new();
        for item in dead.range((sink, 0)..=(sink, u64::MAX))?.take(limit) {
            found.push(Envelope::decode(item?.1.value())?);
        }
        Ok(found)
    }

    /// The dead letter of journal entry `id` in `sink`, left in the queue.
    pub fn dead_letter(&self, sink: &str, id: u64) -> Result<Option<Envelope>, Error> {
        let txn = self.shared.db.begin_read()?;
        let dead = txn.open_table(DEAD)?;
        dead.get((sink, id))?.map(|bytes| Envelope::decode(bytes.value())).transpose()
    }

    /// How many dead letters `sink` has.
    pub fn dead_letter_count(&self, sink: &str) -> Result<u64, Error> {
        let txn = self.shared.db.begin_read()?;
        let dead = txn.open_table(DEAD)?;
        let mut count = 0;
        for item in dead.range((sink, 0)..=(sink, u64::MAX))? {
            item?;
            count += 1;
        }
        Ok(count)
    }

    /// True when journal entry `id` is among the dead letters of `sink`.
    pub fn is_dead_letter(&self, sink: &str, id: u64) -> Result<bool, Error> {
        let txn = self.shared.db.begin_read()?;
        Ok(txn.open_table(DEAD)?.get((sink, id))?.is_some())
    }

    /// Removes and returns the dead letter of journal entry `id` in `sink`, if there is one.
    pub fn take_dead_letter(&self, sink: &str, id: u64) -> Result<Option<Envelope>, Error> {
        let txn = self.shared.db.begin_write()?;
        let taken = {
            let mut dead = txn.open_table(DEAD)?;
            let removed = dead.remove((sink, id))?;
            removed.map(|bytes| Envelope::decode(bytes.value())).transpose()?
        };
        txn.commit()?;
        Ok(taken)
    }

    fn head(&self, sink: &str, partition: u16) -> Result<Option<(u64, Envelope, u32)>, Error> {
        let txn = self.shared.db.begin_read()?;
        let queue = txn.open_table(QUEUE)?;
        let Some(item) = queue.range((sink, partition, 0)..=(sink, partition, u64::MAX))?.next() else {
            return Ok(None);
        };
        let (key, value) = item?;
        let id = key.value().2;
        let envelope = Envelope::decode(value.value())?;
        let attempts = txn.open_table(ATTEMPTS)?.get((sink, partition, id))?.map_or(0, |g| g.value());
        Ok(Some((id, envelope, attempts)))
    }

    /// Removes the head entry; with `dead`, keeps it in the dead-letter table; with `attempts`, records the
    /// count instead of removing.
    ///
    /// An ack is committed without an fsync: it becomes durable with the next durable commit, and if a crash
    /// loses it the envelope is delivered again, which the sinks' ledger (written durably before the ack)
    /// turns into a no-op. Retry counts and dead letters are committed durably.
    fn settle(&self, sink: &str, partition: u16, id: u64, outcome: Settle) -> Result<(), Error> {
        let mut txn = self.shared.db.begin_write()?;
        let durability = match outcome {
            Settle::Remove { dead: false } => Durability::None,
            _ => Durability::Immediate,
        };
        txn.set_durability(durability)?;
        {
            let mut queue = txn.open_table(QUEUE)?;
            let mut attempts = txn.open_table(ATTEMPTS)?;
            match outcome {
                Settle::Count(count) => {
                    attempts.insert((sink, partition, id), count)?;
                }
                Settle::Remove { dead } => {
                    let bytes = queue.remove((sink, partition, id))?.map(|g| g.value().to_vec());
                    attempts.remove((sink, partition, id))?;
                    if let (true, Some(bytes)) = (dead, bytes) {
                        txn.open_table(DEAD)?.insert((sink, id), bytes.as_slice())?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}

enum Settle {
    Count(u32),
    Remove { dead: bool },
}

/// The single consumer of one partition of one sink.
pub struct EmbeddedConsumer {
    bus: EmbeddedBus,
    sink: String,
    partition: u16,
}

impl EmbeddedConsumer {
    /// Waits for the head of the partition. Until it is answered, calling `next` again returns it again.
    pub async fn next(&mut self) -> Result<EmbeddedDelivery, Error> {
        loop {
            let notified = self.bus.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some((_, envelope, attempts)) = self.bus.head(&self.sink, self.partition)? {
                return Ok(EmbeddedDelivery {
                    envelope,
                    attempt: attempts + 1,
                    bus: self.bus.clone(),
                    partition: self.partition,
                });
            }
            notified.await;
        }
    }
}

impl Drop for EmbeddedConsumer {
    fn drop(&mut self) {
        let key = (std::mem::take(&mut self.sink), self.partition);
        self.bus.shared.taken.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
    }
}

/// One delivery from the embedded bus.
pub struct EmbeddedDelivery {
    /// The envelope.
    pub envelope: Envelope,
    /// 1 for the first delivery.
    pub attempt: u32,
    bus: EmbeddedBus,
    partition: u16,
}

impl EmbeddedDelivery {
    /// Removes the envelope from its partition.
    pub fn ack(self) -> Result<(), Error> {
        self.bus.settle(
            &self.envelope.sink,
            self.partition,
            self.envelope.message_id,
            Settle::Remove { dead: false },
        )
    }

    /// Counts the attempt; dead-letters past `max_attempts`, else waits the delay (holding the partition).
    pub async fn retry(self) -> Result<(), Error> {
        let settings = self.bus.settings();
        if self.attempt >= settings.max_attempts {
            return self.dead_letter();
        }
        let delay = settings.retry_delay(self.attempt);
        self.bus.settle(
            &self.envelope.sink,
            self.partition,
            self.envelope.message_id,
            Settle::Count(self.attempt),
        )?;
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// Moves the envelope to the sink's dead-letter queue.
    pub fn dead_letter(self) -> Result<(), Error> {
        self.bus.settle(
            &self.envelope.sink,
            self.partition,
            self.envelope.message_id,
            Settle::Remove { dead: true },
        )
    }
}
