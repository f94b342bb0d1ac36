//! Pipeline throughput: journal → map → route → published with confirms, on the embedded bus and on a
//! private RabbitMQ node, plus a bare lapin publisher with confirms on the same node as the ceiling.
//!
//! Run: `cargo bench --bench pipeline` (starts and stops its own RabbitMQ node, installing Debian's
//! rabbitmq-server if absent; `RELAIS_BENCH_SKIP_AMQP=1` skips it, `RELAIS_BENCH_SKIP_EMBEDDED=1` runs only
//! the RabbitMQ part, `RELAIS_BENCH_PUBLISH_CHANNELS=<n>` sets `bus.publish_channels`). Each case prints
//! `<case>: <N> msg/s`.
//! The map stage is a small ER7 reader (MSH-9, PID-3), as the HL7v2 mapper is benched on its own; 2 sinks
//! per message, 64 patients, 8 partitions.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use relais::bus::{Bus, BusSettings};
use relais::facts::{EventClass, Facts, MapFailure, Mapped, MessageKind, Transform};
use relais::journal::{HeaderFields, Journal, JournalConfig, NewEntry, State, Transport};
use relais::pipeline::Pipeline;
use relais::routing::RouteSet;
use relais::routing::reload::LiveRoutes;

#[allow(dead_code)]
#[path = "../tests/it/ports.rs"]
mod ports;
#[path = "../tests/it/rabbit.rs"]
mod rabbit;

const MESSAGES: usize = 50_000;

struct BenchTransform;

impl Transform for BenchTransform {
    fn map(&self, _kind: MessageKind, raw: &[u8]) -> Result<Mapped, MapFailure> {
        let text = std::str::from_utf8(raw).map_err(|_| fail("MSH"))?;
        let msh: Vec<&str> = text.split('\r').next().unwrap_or_default().split('|').collect();
        let pid = text.split('\r').find(|l| l.starts_with("PID|")).ok_or_else(|| fail("PID"))?;
        let patient = pid.split('|').nth(3).and_then(|f| f.split('^').next()).ok_or_else(|| fail("PID-3"))?;
        let control_id = msh.get(9).ok_or_else(|| fail("MSH-10"))?;
        let bundle = format!(
            "{{\"resourceType\":\"Bundle\",\"type\":\"message\",\"id\":\"{control_id}\",\"entry\":[{{\"resource\":\
             {{\"resourceType\":\"Patient\",\"identifier\":[{{\"value\":\"{patient}\"}}]}}}}]}}"
        );
        Ok(Mapped {
            bundle: bundle.into_bytes(),
            facts: Facts {
                event_class: Some(EventClass::Admission),
                message_type: msh.get(8).copied().unwrap_or_default().to_owned(),
                sending_facility: msh.get(3).copied().unwrap_or_default().to_owned(),
                patient_key: format!("FAC|{patient}"),
                ..Facts::default()
            },
        })
    }
}

fn fail(location: &str) -> MapFailure {
    MapFailure { location: location.into(), reason: "missing".into() }
}

async fn journal_with_messages(dir: &Path) -> Journal {
    let journal = Journal::open(JournalConfig::new(dir.join("journal.redb"))).unwrap();
    let mut pending = Vec::with_capacity(MESSAGES);
    for n in 0..MESSAGES {
        let raw = format!(
            "MSH|^~\\&|APP|FAC|RELAIS|FAC|20250101120000||ADT^A01|B{n}|P|2.5\rEVN|A01|20250101120000\r\
             PID|1||{}^^^FAC^PI||NOM^PRENOM||19800101|M\rPV1|1|I|UF1234\r",
            n % 64
        );
        let entry = NewEntry {
            received_at: jiff::Timestamp::now(),
            transport: Transport::Mllp,
            peer: "bench".into(),
            raw: Bytes::from(raw),
            charset: None,
            header: Some(HeaderFields { control_id: format!("B{n}"), ..HeaderFields::default() }),
            state: State::Received,
            reason: None,
            kind: MessageKind::Hl7v2,
        };
        pending.push(journal.enqueue(entry).await.unwrap());
    }
    for p in pending {
        p.await.unwrap();
    }
    journal
}

async fn run_pipeline(case: &str, settings: BusSettings) {
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_with_messages(dir.path()).await;
    let sinks = vec!["gp-notify".to_owned(), "mss".to_owned()];
    let bus = Bus::open(&settings, dir.path(), &sinks).await.unwrap();
    let routes = "[[route]]\nname = \"all\"\ndestinations = [\"gp-notify\", \"mss\"]\n";
    let sink_set: BTreeSet<String> = sinks.iter().cloned().collect();
    let set = RouteSet::from_str(Path::new("bench.toml"), routes, &sink_set).unwrap();
    let pipeline = Pipeline {
        journal: journal.clone(),
        transform: Arc::new(BenchTransform),
        routes: LiveRoutes::fixed(set),
        bus: bus.clone(),
        batch: 2048,
        sinks: Arc::new(sink_set.clone()),
    };
    let (trigger, stop) = relais::shutdown::channel();
    let started = Instant::now();
    let running = tokio::spawn(pipeline.run(stop));
    loop {
        let published = journal.stats().unwrap()["published"];
        if published as usize >= MESSAGES {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    trigger.fire();
    running.await.unwrap().unwrap();
    println!(
        "{case}: {:.0} msg/s ({MESSAGES} messages, {} envelopes confirmed, {:.2} s)",
        MESSAGES as f64 / took.as_secs_f64(),
        MESSAGES * 2,
        took.as_secs_f64()
    );
    bus.close().await;
    journal.close().await.unwrap();
}

/// A bare lapin publisher with confirms: batches of 2048 persistent 300-byte messages to one quorum queue.
async fn lapin_ceiling(url: &str) {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
    use lapin::types::{AMQPValue, FieldTable};
    let connection = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare("bench.ceiling".into(), options, args).await.unwrap();
    let body = vec![b'x'; 300];
    let started = Instant::now();
    let total = MESSAGES * 2;
    for _ in 0..total / 2048 {
        let mut confirms = Vec::with_capacity(2048);
        for _ in 0..2048 {
            let properties = lapin::BasicProperties::default().with_delivery_mode(2);
            let confirm = channel
                .basic_publish(
                    "".into(),
                    "bench.ceiling".into(),
                    BasicPublishOptions::default(),
                    &body,
                    properties,
                )
                .await
                .unwrap();
            confirms.push(confirm);
        }
        for confirm in confirms {
            assert!(confirm.await.unwrap().is_ack());
        }
    }
    let took = started.elapsed();
    let sent = total / 2048 * 2048;
    println!(
        "bare lapin publisher with confirms (ceiling): {:.0} msg/s ({sent} messages)",
        sent as f64 / took.as_secs_f64()
    );

    // The same, with each send polled once and awaited after the batch (as the AMQP bus does), so the
    // client does not wait for its I/O loop message by message.
    let started = Instant::now();
    for _ in 0..total / 2048 {
        let mut sends = Vec::with_capacity(2048);
        for _ in 0..2048 {
            let properties = lapin::BasicProperties::default().with_delivery_mode(2);
            let mut send = Box::pin(channel.basic_publish(
                "".into(),
                "bench.ceiling".into(),
                BasicPublishOptions::default(),
                &body,
                properties,
            ));
            match std::future::poll_fn(|cx| std::task::Poll::Ready(send.as_mut().poll(cx))).await {
                std::task::Poll::Ready(sent) => sends.push(Err(sent)),
                std::task::Poll::Pending => sends.push(Ok(send)),
            }
        }
        let mut confirms = Vec::with_capacity(2048);
        for send in sends {
            confirms.push(match send {
                Ok(queued) => queued.await.unwrap(),
                Err(sent) => sent.unwrap(),
            });
        }
        for confirm in confirms {
            assert!(confirm.await.unwrap().is_ack());
        }
    }
    let took = started.elapsed();
    println!(
        "bare lapin publisher with confirms, sends queued per batch: {:.0} msg/s ({sent} messages)",
        sent as f64 / took.as_secs_f64()
    );
    let _ = connection.close(200, "done".into()).await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        if std::env::var_os("RELAIS_BENCH_SKIP_EMBEDDED").is_none() {
            run_pipeline("pipeline, embedded bus", BusSettings::default()).await;
        }
        if std::env::var_os("RELAIS_BENCH_SKIP_AMQP").is_some() {
            return;
        }
        let node = tokio::task::spawn_blocking(rabbit::RabbitNode::start).await.unwrap();
        let mut settings = BusSettings { amqp_url: Some(node.url()), ..BusSettings::default() };
        if let Some(channels) =
            std::env::var("RELAIS_BENCH_PUBLISH_CHANNELS").ok().and_then(|c| c.parse().ok())
        {
            settings.publish_channels = channels;
        }
        run_pipeline("pipeline, RabbitMQ", settings).await;
        // Each published envelope is one broker message: the ceiling is in envelopes (2 per message).
        lapin_ceiling(&node.url()).await;
        tokio::task::spawn_blocking(move || drop(node)).await.unwrap();
    });
}
