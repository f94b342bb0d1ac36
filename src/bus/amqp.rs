//! The AMQP back-end: RabbitMQ through lapin.
//!
//! Topology (declared at start, idempotent): a durable topic exchange `<x>` (`bus.exchange`, default
//! `relais`); per sink and partition a quorum queue `<x>.<sink>.<n>` bound with routing key `<sink>.<n>`,
//! with `x-single-active-consumer`, `x-delivery-limit` = `bus.max_attempts` and dead-lettering to the topic
//! exchange `<x>.dlx`; per sink a quorum queue `<x>.<sink>.dlq` bound to `<x>.dlx` with `<sink>.*`.
//!
//! Publishing: persistent messages (`delivery_mode` 2), `message_id` = journal id, `content_type`
//! `application/fhir+json`, `type` = event class, the envelope minus its bundle in the `relais-envelope`
//! header, the bundle as body; `mandatory`, on a confirm channel. A batch is `Ok` only when every message is
//! acked by the broker and none was returned. On any error the channel is dropped and the next call
//! reconnects; the caller re-publishes the whole batch in order (duplicates are possible, a gap is not).
//!
//! Consuming: prefetch 1 on the partition queue; a retry waits its delay while holding the delivery, then
//! nacks it with requeue, which a quorum queue redelivers first (`x-delivery-count` counts attempts).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Mutex;

use super::{BusSettings, Envelope, Error};

const ENVELOPE_HEADER: &str = "relais-envelope";

/// The longest a connection to the broker may take to open (TCP, TLS, AMQP handshake): a broker that accepts
/// the connection and never answers (booting, overloaded, or not a broker) must not hang a publisher or a
/// consumer for good.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest one [`AmqpBus::publish`] waits for the broker (connection, channels, every confirm): a broker
/// that stops answering mid-batch (restarting, a quorum queue without a leader yet) fails the batch, which is
/// published again on a new connection, instead of holding the pipeline for good.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// The RabbitMQ bus; cheap to clone (one publishing connection shared by the clones).
#[derive(Clone)]
pub struct AmqpBus {
    shared: Arc<Shared>,
}

struct Shared {
    url: String,
    settings: BusSettings,
    publisher: Mutex<Option<(Connection, Vec<Channel>)>>,
}

impl AmqpBus {
    /// Connects and declares the topology for `sinks`.
    pub async fn open(url: &str, settings: BusSettings, sinks: &[String]) -> Result<AmqpBus, Error> {
        let bus =
            AmqpBus { shared: Arc::new(Shared { url: url.into(), settings, publisher: Mutex::new(None) }) };
        let (connection, channels) = bus.connect_confirming().await?;
        bus.declare(&channels[0], sinks).await?;
        *bus.shared.publisher.lock().await = Some((connection, channels));
        Ok(bus)
    }

    /// The settings it was opened with.
    pub fn settings(&self) -> &BusSettings {
        &self.shared.settings
    }

    /// The queue name of a sink's partition.
    pub fn queue_name(&self, sink: &str, partition: u16) -> String {
        format!("{}.{sink}.{partition}", self.shared.settings.exchange)
    }

    /// The dead-letter queue name of a sink.
    pub fn dead_letter_queue(&self, sink: &str) -> String {
        format!("{}.{sink}.dlq", self.shared.settings.exchange)
    }

    async fn connect(&self) -> Result<Connection, Error> {
        let properties = ConnectionProperties::default()
            .with_connection_name(LongString::from(format!("relais-{}", std::process::id())));
        within(CONNECT_TIMEOUT, async { Ok(Connection::connect(&self.shared.url, properties).await?) }).await
    }

    /// One connection with `publish_channels` channels in confirm mode.
    async fn connect_confirming(&self) -> Result<(Connection, Vec<Channel>), Error> {
        let connection = self.connect().await?;
        let mut channels = Vec::new();
        for _ in 0..self.shared.settings.publish_channels.max(1) {
            let channel = connection.create_channel().await?;
            channel.confirm_select(ConfirmSelectOptions::default()).await?;
            channels.push(channel);
        }
        Ok((connection, channels))
    }

    async fn declare(&self, channel: &Channel, sinks: &[String]) -> Result<(), Error> {
        let settings = &self.shared.settings;
        let exchange = settings.exchange.as_str();
        let dlx = format!("{exchange}.dlx");
        let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        channel
            .exchange_declare(exchange.into(), ExchangeKind::Topic, durable, FieldTable::default())
            .await?;
        channel
            .exchange_declare(dlx.as_str().into(), ExchangeKind::Topic, durable, FieldTable::default())
            .await?;
        let queue_options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        for sink in sinks {
            let dlq = self.dead_letter_queue(sink);
            channel.queue_declare(dlq.as_str().into(), queue_options, quorum()).await?;
            channel
                .queue_bind(
                    dlq.as_str().into(),
                    dlx.as_str().into(),
                    format!("{sink}.*").as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            for partition in 0..settings.partitions {
                let queue = self.queue_name(sink, partition);
                let mut args = quorum();
                args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
                args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(dlx.as_str().into()));
                let limit = i32::try_from(settings.max_attempts).unwrap_or(i32::MAX);
                args.insert("x-delivery-limit".into(), AMQPValue::LongInt(limit));
                channel.queue_declare(queue.as_str().into(), queue_options, args).await?;
                channel
                    .queue_bind(
                        queue.as_str().into(),
                        exchange.into(),
                        format!("{sink}.{partition}").as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// Publishes the batch; `Ok` once the broker acked every message. Partition `p` goes on channel
    /// `p % publish_channels`, in batch order, so one partition's messages keep their order while the
    /// channels publish side by side.
    pub async fn publish(&self, batch: &[Envelope]) -> Result<(), Error> {
        let mut publisher = self.shared.publisher.lock().await;
        let attempt = async {
            if publisher.as_ref().is_none_or(|(connection, _)| !connection.status().connected()) {
                *publisher = Some(self.connect_confirming().await?);
            }
            let Some((_, channels)) = publisher.as_ref() else { unreachable!("set just above") };
            let partitions = self.shared.settings.partitions;
            let mut lanes: Vec<Vec<&Envelope>> = vec![Vec::new(); channels.len()];
            for envelope in batch {
                lanes[usize::from(envelope.partition(partitions)) % channels.len()].push(envelope);
            }
            let publishing = channels
                .iter()
                .zip(&lanes)
                .filter(|(_, lane)| !lane.is_empty())
                .map(|(channel, lane)| self.publish_on(channel, lane));
            futures_util::future::try_join_all(publishing).await.map(|_| ())
        };
        let result = within(PUBLISH_TIMEOUT, attempt).await;
        if result.is_err() {
            // Start afresh next time: a channel that failed may have lost confirms.
            if let Some((connection, _)) = publisher.take() {
                let _ = connection.close(200, "reconnecting".into()).await;
            }
        }
        result
    }

    /// Publishes `batch` in order on `channel`, then waits for every confirm. Each `basic_publish` is polled
    /// once as it is created, which queues its frames (in batch order) for lapin's I/O loop; the sends are
    /// awaited together afterwards, so the batch is not a ping-pong between this task and the I/O thread.
    async fn publish_on(&self, channel: &Channel, batch: &[&Envelope]) -> Result<(), Error> {
        let exchange: ShortString = self.shared.settings.exchange.as_str().into();
        let mut sending = Vec::with_capacity(batch.len());
        for &envelope in batch {
            let partition = envelope.partition(self.shared.settings.partitions);
            let routing_key = format!("{}.{partition}", envelope.sink);
            let mut headers = FieldTable::default();
            headers.insert(ENVELOPE_HEADER.into(), AMQPValue::LongString(envelope.header_json().into()));
            let mut properties = BasicProperties::default()
                .with_message_id(envelope.message_id.to_string().into())
                .with_content_type("application/fhir+json".into())
                .with_delivery_mode(2)
                .with_headers(headers);
            if let Some(class) = envelope.event_class {
                properties = properties.with_type(class.as_str().into());
            }
            let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
            let mut send = Box::pin(channel.basic_publish(
                exchange.clone(),
                routing_key.as_str().into(),
                options,
                &envelope.bundle,
                properties,
            ));
            // The first poll takes the delivery tag and queues the frames: publication order is this loop's.
            let first = std::future::poll_fn(|cx| std::task::Poll::Ready(send.as_mut().poll(cx))).await;
            sending.push(match first {
                std::task::Poll::Ready(result) => Sending::Sent(result),
                std::task::Poll::Pending => Sending::Queued(send),
            });
        }
        let mut confirms = Vec::with_capacity(batch.len());
        for (envelope, send) in batch.iter().zip(sending) {
            let confirm = match send {
                Sending::Sent(result) => result?,
                Sending::Queued(send) => send.await?,
            };
            confirms.push((envelope, confirm));
        }
        for (envelope, confirm) in confirms {
            let confirmation = confirm.await?;
            if !confirmation.is_ack() || confirmation.take_message().is_some() {
                return Err(Error::NotConfirmed {
                    message_id: envelope.message_id,
                    sink: envelope.sink.clone(),
                });
            }
        }
        Ok(())
    }

    /// Starts consuming one partition queue (its own connection, prefetch 1).
    pub async fn consume(&self, sink: &str, partition: u16) -> Result<AmqpConsumer, Error> {
        if partition >= self.shared.settings.partitions {
            return Err(Error::Unknown { sink: sink.into(), partition });
        }
        let mut consumer =
            AmqpConsumer { bus: self.clone(), queue: self.queue_name(sink, partition), live: None };
        consumer.open().await?;
        Ok(consumer)
    }

    /// Takes up to `limit` envelopes out of `sink`'s dead-letter queue.
    pub async fn take_dead_letters(&self, sink: &str, limit: usize) -> Result<Vec<Envelope>, Error> {
        let connection = self.connect().await?;
        let channel = connection.create_channel().await?;
        let queue = self.dead_letter_queue(sink);
        let mut taken = Vec::new();
        while taken.len() < limit {
            let Some(message) = channel.basic_get(queue.as_str().into(), BasicGetOptions::default()).await?
            else {
                break;
            };
            let envelope = decode(&message.delivery.properties, &message.delivery.data)?;
            message.delivery.ack(BasicAckOptions::default()).await?;
            taken.push(envelope);
        }
        let _ = connection.close(200, "done".into()).await;
        Ok(taken)
    }

    /// Up to `limit` dead letters of `sink`, oldest first, left in the queue (see [`Self::scan_dead_letters`]).
    pub async fn dead_letters(&self, sink: &str, limit: usize) -> Result<Vec<Envelope>, Error> {
        Ok(self.scan_dead_letters(sink, limit, None).await?.0)
    }

    /// The dead letter of journal entry `id` in `sink`, left in the queue.
    pub async fn dead_letter(&self, sink: &str, id: u64) -> Result<Option<Envelope>, Error> {
        let (seen, _) = self.scan_dead_letters(sink, usize::MAX, None).await?;
        Ok(seen.into_iter().find(|e| e.message_id == id))
    }

    /// Removes and returns the dead letter of journal entry `id` in `sink`, if there is one.
    pub async fn take_dead_letter(&self, sink: &str, id: u64) -> Result<Option<Envelope>, Error> {
        Ok(self.scan_dead_letters(sink, usize::MAX, Some(id)).await?.1)
    }

    /// Messages in `sink`'s dead-letter queue (a passive declare).
    pub async fn dead_letter_count(&self, sink: &str) -> Result<u64, Error> {
        let connection = self.connect().await?;
        let channel = connection.create_channel().await?;
        let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let queue = self.dead_letter_queue(sink);
        let declared = channel.queue_declare(queue.as_str().into(), options, FieldTable::default()).await;
        let _ = connection.close(200, "done".into()).await;
        Ok(u64::from(declared?.message_count()))
    }

    /// Reads `sink`'s dead-letter queue without losing anything: `basic.get` one message at a time (manual
    /// ack) on a private channel, keeping each unacknowledged so the next get moves on, to the queue's end;
    /// the one whose journal id is `take` (if any) is acked: it leaves the queue. Every other message read
    /// is then `basic.nack`ed with `requeue`, one by one in the order read. A quorum queue puts returned
    /// messages behind those it still holds, so the whole queue is read even for a short listing: everything
    /// returns together and the order stays (a dead letter arriving during the read goes before them).
    /// Should the connection fail midway, the broker requeues every unacknowledged message itself. Returns
    /// (the first `limit` envelopes read and put back, the one taken).
    async fn scan_dead_letters(
        &self,
        sink: &str,
        limit: usize,
        take: Option<u64>,
    ) -> Result<(Vec<Envelope>, Option<Envelope>), Error> {
        let connection = self.connect().await?;
        let channel = connection.create_channel().await?;
        let queue = self.dead_letter_queue(sink);
        let result = async {
            let mut seen = Vec::new();
            let mut taken = None;
            let mut read = Vec::new();
            loop {
                let Some(message) =
                    channel.basic_get(queue.as_str().into(), BasicGetOptions::default()).await?
                else {
                    break;
                };
                let remaining = message.message_count;
                let delivery = message.delivery;
                match decode(&delivery.properties, &delivery.data) {
                    Ok(envelope) if take == Some(envelope.message_id) && taken.is_none() => {
                        channel.basic_ack(delivery.delivery_tag, BasicAckOptions::default()).await?;
                        taken = Some(envelope);
                    }
                    Ok(envelope) => {
                        read.push(delivery.delivery_tag);
                        seen.push(envelope);
                    }
                    Err(error) => {
                        read.push(delivery.delivery_tag);
                        tracing::warn!(%error, %queue, "undecodable dead letter left in place");
                    }
                }
                if remaining == 0 {
                    break;
                }
            }
            for tag in read {
                let requeue = BasicNackOptions { multiple: false, requeue: true };
                channel.basic_nack(tag, requeue).await?;
            }
            seen.truncate(limit);
            Ok((seen, taken))
        }
        .await;
        let _ = connection.close(200, "done".into()).await;
        result
    }

    /// Closes the publishing connection.
    pub async fn close(&self) {
        if let Some((connection, _)) = self.shared.publisher.lock().await.take() {
            let _ = connection.close(200, "relais stopping".into()).await;
        }
    }
}

/// A `basic_publish` whose frames are queued: done already, or still waiting for the I/O loop to send them.
enum Sending<F> {
    Sent(lapin::Result<lapin::PublisherConfirm>),
    Queued(std::pin::Pin<Box<F>>),
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    args
}

fn decode(properties: &BasicProperties, body: &[u8]) -> Result<Envelope, Error> {
    let header = properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(ENVELOPE_HEADER))
        .and_then(|value| match value {
            AMQPValue::LongString(text) => Some(text.as_bytes().to_vec()),
            _ => None,
        })
        .ok_or_else(|| Error::Envelope(format!("message without a `{ENVELOPE_HEADER}` header")))?;
    Envelope::from_parts(&header, Bytes::copy_from_slice(body))
}

fn delivery_count(properties: &BasicProperties) -> u32 {
    let value =
        properties.headers().as_ref().and_then(|headers| headers.inner().get("x-delivery-count").cloned());
    match value {
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(n).unwrap_or(0),
        Some(AMQPValue::LongInt(n)) => u32::try_from(n).unwrap_or(0),
        Some(AMQPValue::ShortInt(n)) => u32::try_from(n).unwrap_or(0),
        Some(AMQPValue::LongUInt(n)) => n,
        _ => 0,
    }
}

/// The consumer of one partition queue; reconnects with backoff when the broker goes away.
pub struct AmqpConsumer {
    bus: AmqpBus,
    queue: String,
    live: Option<(Connection, Channel, lapin::Consumer)>,
}

impl AmqpConsumer {
    async fn open(&mut self) -> Result<(), Error> {
        let connection = self.bus.connect().await?;
        let channel = connection.create_channel().await?;
        channel.basic_qos(1, BasicQosOptions::default()).await?;
        let consumer = channel
            .basic_consume(
                self.queue.as_str().into(),
                format!("relais-{}", std::process::id()).as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        self.live = Some((connection, channel, consumer));
        Ok(())
    }

    /// Lets go of the queue (closes this consumer's connection): a delivery prefetched but not yet taken
    /// goes back to the broker, which keeps it at the head. The next [`Self::next`] connects again.
    pub async fn suspend(&mut self) {
        if let Some((connection, _, _)) = self.live.take() {
            let _ = connection.close(200, "sink paused".into()).await;
        }
    }

    /// The next delivery; on a broker or network error, reconnects (backoff 0.5 s doubling to 10 s) and
    /// waits again. Unacked deliveries of a lost connection are redelivered by the broker, in order.
    pub async fn next(&mut self) -> Result<AmqpDelivery, Error> {
        let mut backoff = Duration::from_millis(500);
        loop {
            if self.live.is_none()
                && let Err(error) = self.open().await
            {
                tracing::warn!(%error, queue = %self.queue, "AMQP consumer cannot connect; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
            let Some((connection, _, consumer)) = self.live.as_mut() else { continue };
            // Also look at the connection now and then: a consumer whose connection died must reconnect even
            // if its stream never says so.
            let next = tokio::select! {
                next = consumer.next() => Some(next),
                _ = connection_lost(connection) => None,
            };
            let Some(next) = next else {
                tracing::warn!(queue = %self.queue, "AMQP consumer's connection is down; reconnecting");
                self.live = None;
                continue;
            };
            match next {
                Some(Ok(delivery)) => {
                    let envelope = decode(&delivery.properties, &delivery.data);
                    let attempt = delivery_count(&delivery.properties) + 1;
                    let settings = self.bus.settings().clone();
                    match envelope {
                        Ok(envelope) => return Ok(AmqpDelivery { envelope, attempt, delivery, settings }),
                        Err(error) => {
                            tracing::error!(%error, queue = %self.queue, "undecodable message dead-lettered");
                            let _ = delivery.acker.nack(BasicNackOptions::default()).await;
                        }
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, queue = %self.queue, "AMQP consumer lost its channel; reconnecting");
                    self.live = None;
                }
                None => {
                    self.live = None;
                }
            }
        }
    }
}

/// `attempt`'s outcome, or [`Error::Unanswered`] if the broker has not answered within `limit`.
async fn within<T>(limit: Duration, attempt: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    tokio::time::timeout(limit, attempt).await.unwrap_or(Err(Error::Unanswered(limit)))
}

/// Resolves once `connection` is no longer connected (checked every [`LIVENESS_CHECK`]).
async fn connection_lost(connection: &Connection) {
    loop {
        tokio::time::sleep(LIVENESS_CHECK).await;
        if !connection.status().connected() {
            return;
        }
    }
}

/// How often a waiting consumer checks that its connection is still up.
const LIVENESS_CHECK: Duration = Duration::from_secs(5);

/// One delivery from RabbitMQ.
pub struct AmqpDelivery {
    /// The envelope.
    pub envelope: Envelope,
    /// 1 for the first delivery (from `x-delivery-count`).
    pub attempt: u32,
    delivery: lapin::message::Delivery,
    settings: BusSettings,
}

impl AmqpDelivery {
    /// Acks it.
    pub async fn ack(self) -> Result<(), Error> {
        self.delivery.acker.ack(BasicAckOptions::default()).await?;
        Ok(())
    }

    /// Waits the retry delay holding the delivery, then requeues it at the head (or dead-letters it after
    /// `max_attempts`).
    pub async fn retry(self) -> Result<(), Error> {
        if self.attempt >= self.settings.max_attempts {
            return self.dead_letter().await;
        }
        tokio::time::sleep(self.settings.retry_delay(self.attempt)).await;
        self.delivery.acker.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await?;
        Ok(())
    }

    /// Rejects it without requeue: the broker dead-letters it to the sink's DLQ.
    pub async fn dead_letter(self) -> Result<(), Error> {
        self.delivery.acker.nack(BasicNackOptions { requeue: false, ..BasicNackOptions::default() }).await?;
        Ok(())
    }
}
