//! The bus: carries each routed message to its sinks, one durable queue per sink and partition.
//!
//! The pipeline hands [`Bus::publish`] a batch of [`Envelope`]s and records them `published` only once it
//! returns `Ok` (every envelope confirmed durable by the back-end). Sinks take their partitions with
//! [`Bus::consume`] and answer each [`Received`] with `ack`, `retry` or `dead_letter`.
//!
//! Two back-ends with the same semantics, chosen by `bus.amqp_url` (a closed enum, as for sinks):
//! - [`amqp`]: RabbitMQ through lapin: topic exchange, quorum queues `<exchange>.<sink>.<n>` with a single
//!   active consumer, publisher confirms, dead-letter exchange and `<exchange>.<sink>.dlq`;
//! - [`embedded`]: a redb file in the data dir with the same partitions, acks, redelivery and dead letters.
//!
//! **Order.** The partition of an envelope is its partition key (a stable FNV-1a 64 hash of the patient
//! identifier, see [`partition_key`]) modulo the partition count, so one patient's messages share one queue
//! and a sink sees them in journal order. A retry keeps the message at the head of its partition: the
//! consumer waits out the delay while holding it (prefetch 1), so it holds back that patient's later messages
//! and no other partition. (Per-attempt TTL queues would let later messages overtake a retried one.)
//!
//! **Delivery** is at least once: after a crash or a lost confirm an envelope may come again; its
//! `message_id` (the journal id) lets a sink drop the copy.

pub mod amqp;
pub mod embedded;
mod envelope;

use std::time::Duration;

use serde::Deserialize;

pub use envelope::{Envelope, partition_key, partition_of};

/// What can go wrong on the bus.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The AMQP broker refused, closed or could not be reached.
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker did not open the connection, or confirm a published batch, within this time.
    #[error("AMQP: the broker did not answer within {0:?}")]
    Unanswered(std::time::Duration),
    /// The broker did not confirm (nack) or returned an envelope.
    #[error("the broker did not confirm envelope {message_id} for sink `{sink}`")]
    NotConfirmed {
        /// The journal id.
        message_id: u64,
        /// The destination.
        sink: String,
    },
    /// The embedded store failed.
    #[error("embedded bus storage: {0}")]
    Storage(#[from] redb::Error),
    /// Another consumer holds this partition.
    #[error("partition {partition} of sink `{sink}` already has a consumer")]
    PartitionBusy {
        /// The sink.
        sink: String,
        /// The partition.
        partition: u16,
    },
    /// An envelope could not be encoded or decoded.
    #[error("envelope: {0}")]
    Envelope(String),
    /// The back-end cannot do this (e.g. browse a dead-letter queue on AMQP).
    #[error("not supported by the {0}")]
    Unsupported(&'static str),
    /// A sink or partition the topology does not have.
    #[error("unknown sink `{sink}` or partition {partition}")]
    Unknown {
        /// The sink.
        sink: String,
        /// The partition.
        partition: u16,
    },
}

/// Every redb error type converts into [`Error::Storage`].
macro_rules! from_redb {
    ($($source:ty),*) => {$(
        impl From<$source> for Error {
            fn from(error: $source) -> Error {
                Error::Storage(error.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// `[bus]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusSettings {
    /// AMQP URL (`amqp://user:pass@host:5672/%2f`); unset means the embedded bus.
    pub amqp_url: Option<String>,
    /// Partitions per sink (8). Changing it re-partitions: drain the queues first.
    pub partitions: u16,
    /// AMQP exchange name, also the queue name prefix (`relais`).
    pub exchange: String,
    /// Deliveries of one envelope before it goes to the sink's dead-letter queue (5).
    pub max_attempts: u32,
    /// Delay before the first redelivery, in milliseconds (1000); doubles at each attempt.
    pub retry_delay_ms: u64,
    /// Longest delay between attempts, in milliseconds (300000).
    pub max_retry_delay_ms: u64,
    /// AMQP channels publishing side by side (4); partition `p` always uses channel `p % publish_channels`,
    /// so a partition's order holds.
    pub publish_channels: u16,
}

impl Default for BusSettings {
    fn default() -> Self {
        BusSettings {
            amqp_url: None,
            partitions: 8,
            exchange: "relais".into(),
            max_attempts: 5,
            retry_delay_ms: 1000,
            max_retry_delay_ms: 300_000,
            publish_channels: 4,
        }
    }
}

impl BusSettings {
    /// Checks values without I/O; the error names the key.
    pub fn check(&self) -> Result<(), (String, String)> {
        if self.partitions == 0 {
            return Err(("bus.partitions".into(), "must be at least 1".into()));
        }
        if self.publish_channels == 0 {
            return Err(("bus.publish_channels".into(), "must be at least 1".into()));
        }
        if self.max_attempts == 0 {
            return Err(("bus.max_attempts".into(), "must be at least 1".into()));
        }
        if self.exchange.is_empty() || self.exchange.contains(['#', '*', ' ']) {
            return Err(("bus.exchange".into(), "must be a plain non-empty name".into()));
        }
        if let Some(url) = &self.amqp_url
            && !(url.starts_with("amqp://") || url.starts_with("amqps://"))
        {
            return Err(("bus.amqp_url".into(), "must start with amqp:// or amqps://".into()));
        }
        Ok(())
    }

    /// The delay before delivery number `attempt + 1` (attempt ≥ 1): doubling from `retry_delay_ms`.
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let factor = 1u64 << attempt.saturating_sub(1).min(20);
        Duration::from_millis(self.retry_delay_ms.saturating_mul(factor).min(self.max_retry_delay_ms))
    }
}

/// The bus in use: one of the two back-ends.
#[derive(Clone)]
pub enum Bus {
    /// RabbitMQ.
    Amqp(amqp::AmqpBus),
    /// The redb file in the data dir.
    Embedded(embedded::EmbeddedBus),
}

impl Bus {
    /// Opens the back-end the settings name and declares the topology for `sinks` (queues, dead letters).
    pub async fn open(
        settings: &BusSettings,
        data_dir: &std::path::Path,
        sinks: &[String],
    ) -> Result<Bus, Error> {
        match &settings.amqp_url {
            Some(url) => Ok(Bus::Amqp(amqp::AmqpBus::open(url, settings.clone(), sinks).await?)),
            None => {
                let path = data_dir.join("bus.redb");
                let settings = settings.clone();
                let sinks = sinks.to_vec();
                let bus =
                    tokio::task::spawn_blocking(move || embedded::EmbeddedBus::open(&path, settings, &sinks))
                        .await
                        .map_err(|e| Error::Envelope(format!("opening the embedded bus: {e}")))??;
                Ok(Bus::Embedded(bus))
            }
        }
    }

    /// Publishes a batch; `Ok` only once every envelope is durable on the bus (broker confirms).
    pub async fn publish(&self, batch: &[Envelope]) -> Result<(), Error> {
        match self {
            Bus::Amqp(bus) => bus.publish(batch).await,
            Bus::Embedded(bus) => bus.publish(batch).await,
        }
    }

    /// Takes partition `partition` of `sink` (its single active consumer).
    pub async fn consume(&self, sink: &str, partition: u16) -> Result<Consumer, Error> {
        match self {
            Bus::Amqp(bus) => Ok(Consumer::Amqp(Box::new(bus.consume(sink, partition).await?))),
            Bus::Embedded(bus) => Ok(Consumer::Embedded(bus.consume(sink, partition)?)),
        }
    }

    /// Takes up to `limit` envelopes out of `sink`'s dead-letter queue (they leave it).
    pub async fn take_dead_letters(&self, sink: &str, limit: usize) -> Result<Vec<Envelope>, Error> {
        match self {
            Bus::Amqp(bus) => bus.take_dead_letters(sink, limit).await,
            Bus::Embedded(bus) => bus.take_dead_letters(sink, limit),
        }
    }

    /// Up to `limit` dead letters of `sink`, oldest first, left in place (on AMQP, read with `basic.get` and
    /// requeued, see [`amqp::AmqpBus::dead_letters`]).
    pub async fn dead_letters(&self, sink: &str, limit: usize) -> Result<Vec<Envelope>, Error> {
        match self {
            Bus::Amqp(bus) => bus.dead_letters(sink, limit).await,
            Bus::Embedded(bus) => {
                let (bus, sink) = (bus.clone(), sink.to_owned());
                tokio::task::spawn_blocking(move || bus.dead_letters(&sink, limit))
                    .await
                    .map_err(|e| Error::Envelope(format!("dead letter task: {e}")))?
            }
        }
    }

    /// The dead letter of journal entry `id` in `sink`, left in place.
    pub async fn dead_letter(&self, sink: &str, id: u64) -> Result<Option<Envelope>, Error> {
        match self {
            Bus::Amqp(bus) => bus.dead_letter(sink, id).await,
            Bus::Embedded(bus) => {
                let (bus, sink) = (bus.clone(), sink.to_owned());
                tokio::task::spawn_blocking(move || bus.dead_letter(&sink, id))
                    .await
                    .map_err(|e| Error::Envelope(format!("dead letter task: {e}")))?
            }
        }
    }

    /// How many dead letters `sink` has.
    pub async fn dead_letter_count(&self, sink: &str) -> Result<u64, Error> {
        match self {
            Bus::Amqp(bus) => bus.dead_letter_count(sink).await,
            Bus::Embedded(bus) => {
                let (bus, sink) = (bus.clone(), sink.to_owned());
                tokio::task::spawn_blocking(move || bus.dead_letter_count(&sink))
                    .await
                    .map_err(|e| Error::Envelope(format!("dead letter task: {e}")))?
            }
        }
    }

    /// True when journal entry `id` is a dead letter of `sink`; `None` on AMQP (reading the queue for one
    /// timeline would be too costly: the sink's `failed` outcome in the ledger tells instead).
    pub fn is_dead_letter(&self, sink: &str, id: u64) -> Result<Option<bool>, Error> {
        match self {
            Bus::Amqp(_) => Ok(None),
            Bus::Embedded(bus) => bus.is_dead_letter(sink, id).map(Some),
        }
    }

    /// Removes and returns the dead letter of journal entry `id` in `sink`.
    pub async fn take_dead_letter(&self, sink: &str, id: u64) -> Result<Option<Envelope>, Error> {
        match self {
            Bus::Amqp(bus) => bus.take_dead_letter(sink, id).await,
            Bus::Embedded(bus) => {
                let (bus, sink) = (bus.clone(), sink.to_owned());
                tokio::task::spawn_blocking(move || bus.take_dead_letter(&sink, id))
                    .await
                    .map_err(|e| Error::Envelope(format!("dead letter task: {e}")))?
            }
        }
    }

    /// The bus settings.
    pub fn settings(&self) -> &BusSettings {
        match self {
            Bus::Amqp(bus) => bus.settings(),
            Bus::Embedded(bus) => bus.settings(),
        }
    }

    /// Closes connections (AMQP) or the file (embedded).
    pub async fn close(&self) {
        if let Bus::Amqp(bus) = self {
            bus.close().await;
        }
    }
}

/// A sink's hold on one partition: deliveries come one at a time, in order.
pub enum Consumer {
    /// From RabbitMQ.
    Amqp(Box<amqp::AmqpConsumer>),
    /// From the embedded bus.
    Embedded(embedded::EmbeddedConsumer),
}

impl Consumer {
    /// Stops holding deliveries while the sink is paused: on AMQP closes the consumer's connection, so a
    /// prefetched delivery goes back to the broker (an unacknowledged delivery held through a long pause
    /// would hit the broker's `consumer_timeout`); the embedded bus holds nothing. `next` resumes.
    pub async fn suspend(&mut self) {
        if let Consumer::Amqp(consumer) = self {
            consumer.suspend().await;
        }
    }

    /// The next delivery of the partition (waits for one; reconnects on AMQP errors).
    pub async fn next(&mut self) -> Result<Received, Error> {
        match self {
            Consumer::Amqp(consumer) => consumer.next().await.map(|d| Received::Amqp(Box::new(d))),
            Consumer::Embedded(consumer) => consumer.next().await.map(|d| Received::Embedded(Box::new(d))),
        }
    }
}

/// One delivery, to be answered exactly once.
pub enum Received {
    /// From RabbitMQ.
    Amqp(Box<amqp::AmqpDelivery>),
    /// From the embedded bus.
    Embedded(Box<embedded::EmbeddedDelivery>),
}

impl Received {
    /// The envelope.
    pub fn envelope(&self) -> &Envelope {
        match self {
            Received::Amqp(d) => &d.envelope,
            Received::Embedded(d) => &d.envelope,
        }
    }

    /// Which delivery this is (1 for the first).
    pub fn attempt(&self) -> u32 {
        match self {
            Received::Amqp(d) => d.attempt,
            Received::Embedded(d) => d.attempt,
        }
    }

    /// Done: the envelope leaves the queue.
    pub async fn ack(self) -> Result<(), Error> {
        match self {
            Received::Amqp(d) => d.ack().await,
            // A redb commit waits for any commit in progress (a publish's fsync): off the runtime's threads.
            Received::Embedded(d) => tokio::task::spawn_blocking(move || d.ack())
                .await
                .map_err(|e| Error::Envelope(format!("embedded ack task: {e}")))?,
        }
    }

    /// Try again later: waits the retry delay while holding the partition, then puts the envelope back at
    /// its head; after `max_attempts` deliveries it goes to the dead-letter queue instead.
    pub async fn retry(self) -> Result<(), Error> {
        match self {
            Received::Amqp(d) => d.retry().await,
            Received::Embedded(d) => d.retry().await,
        }
    }

    /// Give up now: the envelope goes to the sink's dead-letter queue.
    pub async fn dead_letter(self) -> Result<(), Error> {
        match self {
            Received::Amqp(d) => d.dead_letter().await,
            Received::Embedded(d) => d.dead_letter(),
        }
    }
}
