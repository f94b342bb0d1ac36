//! The consumption loop every sink runs: take its bus partitions, deliver each envelope once, answer the bus.
//!
//! For each [`Received`] of a partition, in order: an envelope whose journal id the [`Ledger`] already has
//! as delivered is acknowledged without delivering again (bus redelivery after a crash or a lost ack);
//! otherwise the sink's `deliver` function gives an [`Outcome`], which is recorded in the ledger (per-sink
//! outcome and attempts) and counted (`relais_sink_deliveries_total{sink,outcome}`), then:
//!
//! | outcome | bus |
//! |---|---|
//! | delivered | ack (and the journal id is recorded as delivered first) |
//! | undeliverable, held | ack (nothing to retry; the reason stays in the ledger) |
//! | failed | dead letter |
//! | retry | `retry` (the bus waits and redelivers at the head of the partition) unless the sink's retry policy gives up (max attempts — never more than the bus's `max_attempts` — or age): dead letter, recorded `failed` |
//!
//! The loop stops when the shutdown fires, leaving the current envelope unanswered (the bus redelivers it).
//! While the sink is paused ([`Pauses`]) the loop finishes the delivery in hand and takes nothing more until
//! it is resumed: what waits stays on the bus, in order.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bus::{Bus, Envelope, Error as BusError, Received};
use crate::ops::metrics::{SINK_DELIVERIES, SINK_DELIVERY_SECONDS};
use crate::shutdown::Shutdown;
use crate::sinks::ledger::{Ledger, Write};
use crate::sinks::pause::Pauses;
use crate::sinks::retry::{Next, Outcome, RetryPolicy};

/// The ledger key under which a journal entry counts as delivered by a sink.
pub fn journal_key(message_id: u64) -> String {
    format!("journal:{message_id}")
}

/// Runs `sink` over partitions `0..partitions` of the bus until `stop` fires; `deliver` is called with each
/// envelope and the attempt number (1 for the first delivery). Never paused: see [`run_sink_with`].
pub async fn run_sink<F, Fut>(
    bus: Bus,
    sink: String,
    policy: RetryPolicy,
    ledger: Arc<Ledger>,
    stop: Shutdown,
    deliver: F,
) -> Result<(), BusError>
where
    F: Fn(Envelope, u32) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    run_sink_with(bus, sink, policy, ledger, Pauses::in_memory(), stop, deliver).await
}

/// [`run_sink`] that takes nothing from the bus while `pauses` says `sink` is paused.
pub async fn run_sink_with<F, Fut>(
    bus: Bus,
    sink: String,
    policy: RetryPolicy,
    ledger: Arc<Ledger>,
    pauses: Pauses,
    stop: Shutdown,
    deliver: F,
) -> Result<(), BusError>
where
    F: Fn(Envelope, u32) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let partitions = bus.settings().partitions;
    // The bus dead-letters a retry past its own `max_attempts`: give up there too, so the ledger says
    // `failed` (with the reason) for every dead letter rather than a last `retry`.
    let mut policy = policy;
    policy.max_attempts = policy.max_attempts.min(bus.settings().max_attempts);
    let mut tasks = tokio::task::JoinSet::new();
    for partition in 0..partitions {
        let consumer = bus.consume(&sink, partition).await?;
        let (sink, policy, ledger, pauses, stop, deliver) =
            (sink.clone(), policy.clone(), ledger.clone(), pauses.clone(), stop.clone(), deliver.clone());
        tasks.spawn(run_partition(consumer, sink, policy, ledger, pauses, stop, deliver));
    }
    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        if let Ok(Err(e)) = joined {
            result = Err(e);
        }
    }
    result
}

/// The loop of one partition (see the module doc).
pub async fn run_partition<F, Fut>(
    mut consumer: crate::bus::Consumer,
    sink: String,
    policy: RetryPolicy,
    ledger: Arc<Ledger>,
    pauses: Pauses,
    mut stop: Shutdown,
    deliver: F,
) -> Result<(), BusError>
where
    F: Fn(Envelope, u32) -> Fut + Send + Sync,
    Fut: Future<Output = Outcome> + Send,
{
    loop {
        if pauses.is_paused(&sink) {
            consumer.suspend().await;
            tokio::select! {
                () = pauses.wait_resumed(&sink) => {}
                () = stop.recv() => return Ok(()),
            }
        }
        // Both `next` futures hold no delivery until they return one, so dropping them on a pause is safe.
        // Biased: a pause (or the shutdown) that came with an envelope wins, rather than a coin toss.
        let received = tokio::select! {
            biased;
            () = stop.recv() => return Ok(()),
            () = pauses.wait_paused(&sink) => continue,
            r = consumer.next() => r?,
        };
        handle(received, &sink, &policy, &ledger, &deliver).await?;
    }
}

async fn handle<F, Fut>(
    received: Received,
    sink: &str,
    policy: &RetryPolicy,
    ledger: &Ledger,
    deliver: &F,
) -> Result<(), BusError>
where
    F: Fn(Envelope, u32) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let id = received.envelope().message_id;
    let key = journal_key(id);
    let storage = |e: crate::sinks::ledger::Error| BusError::Envelope(e.to_string());
    if ledger.delivered(sink, &key).map_err(storage)?.is_some() {
        return received.ack().await;
    }
    let attempt = received.attempt();
    let started = Instant::now();
    let outcome = deliver(received.envelope().clone(), attempt).await;
    let count = |label: &'static str| {
        metrics::counter!(SINK_DELIVERIES, "sink" => sink.to_string(), "outcome" => label).increment(1);
    };
    let record = |outcome: &Outcome| Write::Outcome {
        sink: sink.to_string(),
        journal_id: id,
        outcome: outcome.clone(),
        attempts: attempt,
    };
    match &outcome {
        Outcome::Delivered => {
            metrics::histogram!(SINK_DELIVERY_SECONDS, "sink" => sink.to_string())
                .record(started.elapsed().as_secs_f64());
            let delivered = Write::Delivered { sink: sink.to_string(), key, journal_id: id };
            ledger.write(vec![delivered, record(&outcome)]).await.map_err(storage)?;
            count("delivered");
            received.ack().await
        }
        Outcome::Undeliverable { .. } | Outcome::Held { .. } => {
            ledger.write(vec![record(&outcome)]).await.map_err(storage)?;
            count("undeliverable");
            received.ack().await
        }
        Outcome::Failed { .. } => {
            ledger.write(vec![record(&outcome)]).await.map_err(storage)?;
            count("dead_lettered");
            received.dead_letter().await
        }
        Outcome::Retry { .. } => match policy.next(&outcome, attempt, Duration::ZERO) {
            Next::GiveUp { reason } => {
                ledger.write(vec![record(&Outcome::Failed { reason })]).await.map_err(storage)?;
                count("dead_lettered");
                received.dead_letter().await
            }
            _ => {
                ledger.write(vec![record(&outcome)]).await.map_err(storage)?;
                count("retried");
                received.retry().await
            }
        },
    }
}
