//! The bus and the pipeline after the journal, against BOTH back-ends: a private RabbitMQ node (started
//! here on 127.0.0.1 with its own ports and data dir, stopped at the end) and the embedded redb bus.
//!
//! Scenarios: fan-out to three sinks; confirm before `published` (outbox); `kill -9` of a pipeline process
//! between journal and publish, then restart; a poison message dead-lettered after N attempts while the
//! other partitions flow; for RabbitMQ, the broker stopped 30 s and restarted mid-load with zero loss and
//! per-patient order.
//!
//! The map stage here is a small test transform (MSH-9, PID-3 → facts), since routes match facts only.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use relais::bus::{Bus, BusSettings, Envelope};
use relais::facts::{EventClass, Facts, MapFailure, Mapped, MessageKind, Transform};
use relais::journal::{Appended, HeaderFields, Journal, JournalConfig, NewEntry, State, Transport};
use relais::pipeline::Pipeline;
use relais::routing::RouteSet;
use relais::routing::reload::LiveRoutes;
use relais::shutdown;

use crate::rabbit::RabbitNode;

// ---------------------------------------------------------------------------------------------------------
// The map stage for these tests, and journal helpers.

/// Reads MSH-4, MSH-9, MSH-10 and PID-3.1 of an ER7 message into facts; a `ZPO` segment makes it poison
/// for the test sink (the sink retries it until it is dead-lettered).
struct TestTransform;

impl Transform for TestTransform {
    fn map(&self, _kind: MessageKind, raw: &[u8]) -> Result<Mapped, MapFailure> {
        let text = String::from_utf8_lossy(raw);
        let field = |seg: &str, n: usize| -> Option<String> {
            let line = text.split('\r').find(|l| l.starts_with(seg))?;
            let index = if seg == "MSH" { n - 1 } else { n };
            line.split('|').nth(index).map(str::to_owned)
        };
        let fail = |location: &str| MapFailure { location: location.into(), reason: "missing".into() };
        let message_type = field("MSH", 9).ok_or_else(|| fail("MSH-9"))?;
        let control_id = field("MSH", 10).ok_or_else(|| fail("MSH-10"))?;
        let patient = field("PID", 3).ok_or_else(|| fail("PID-3"))?;
        let patient = patient.split('^').next().unwrap_or_default().to_owned();
        let event_class = match message_type.as_str() {
            "ADT^A01" => EventClass::Admission,
            "ADT^A03" => EventClass::Discharge,
            _ => EventClass::Update,
        };
        let poison = text.contains("\rZPO|");
        let bundle = serde_json::json!({"resourceType": "Bundle", "id": control_id, "poison": poison});
        Ok(Mapped {
            bundle: serde_json::to_vec(&bundle).unwrap(),
            facts: Facts {
                kind: MessageKind::Hl7v2,
                event_class: Some(event_class),
                message_type,
                sending_facility: field("MSH", 4).unwrap_or_default(),
                patient_key: format!("FAC|{patient}"),
                ..Facts::default()
            },
        })
    }
}

fn message(control_id: &str, trigger: &str, patient: &str, poison: bool) -> Vec<u8> {
    let mut text = format!(
        "MSH|^~\\&|APP|FAC|RELAIS|FAC|20250101120000||ADT^{trigger}|{control_id}|P|2.5\rPID|1||{patient}^^^FAC^PI\r"
    );
    if poison {
        text.push_str("ZPO|1\r");
    }
    text.into_bytes()
}

async fn append(journal: &Journal, control_id: &str, trigger: &str, patient: &str, poison: bool) -> u64 {
    let header = HeaderFields {
        sending_application: "APP".into(),
        sending_facility: "FAC".into(),
        message_type: format!("ADT^{trigger}"),
        control_id: control_id.into(),
        version: "2.5".into(),
    };
    append_raw(journal, message(control_id, trigger, patient, poison), Some(header)).await
}

/// Journals `raw` as received over MLLP and returns its id.
async fn append_raw(journal: &Journal, raw: Vec<u8>, header: Option<HeaderFields>) -> u64 {
    let entry = NewEntry {
        received_at: jiff::Timestamp::now(),
        transport: Transport::Mllp,
        peer: "test".into(),
        raw: Bytes::from(raw),
        charset: None,
        header,
        state: State::Received,
        reason: None,
        kind: relais::facts::MessageKind::Hl7v2,
    };
    match journal.append(entry).await.unwrap() {
        Appended::Stored { id } => id,
        other => panic!("{other:?}"),
    }
}

fn open_journal(dir: &Path) -> Journal {
    Journal::open(JournalConfig::new(dir.join("journal.redb"))).unwrap()
}

const ROUTES: &str = r#"
[[route]]
name = "everything"
destinations = ["a", "b"]

[[route]]
name = "admissions"
destinations = ["b", "c"]
[route.when]
event_class = "admission"
"#;

fn routes() -> Arc<LiveRoutes> {
    let sinks: BTreeSet<String> = ["a", "b", "c"].into_iter().map(String::from).collect();
    LiveRoutes::fixed(RouteSet::from_str(Path::new("test.toml"), ROUTES, &sinks).unwrap())
}

fn sinks() -> Vec<String> {
    vec!["a".into(), "b".into(), "c".into()]
}

/// Which bus a scenario runs against.
#[derive(Clone)]
enum Backend {
    Embedded,
    Amqp(String),
}

fn settings(backend: &Backend, exchange: &str) -> BusSettings {
    BusSettings {
        amqp_url: match backend {
            Backend::Embedded => None,
            Backend::Amqp(url) => Some(url.clone()),
        },
        partitions: 4,
        exchange: exchange.into(),
        max_attempts: 3,
        retry_delay_ms: 150,
        max_retry_delay_ms: 1000,
        publish_channels: 2,
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}x{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish() % 1_000_000
}

fn pipeline(journal: &Journal, bus: &Bus) -> Pipeline {
    Pipeline {
        journal: journal.clone(),
        transform: Arc::new(TestTransform),
        routes: routes(),
        bus: bus.clone(),
        batch: 64,
        sinks: Arc::new(sinks().into_iter().collect()),
    }
}

/// What a sink saw: deliveries in arrival order (per partition order is preserved), acked as they come.
#[derive(Default)]
struct Seen {
    deliveries: Vec<(Envelope, u32, Instant)>,
}

impl Seen {
    fn distinct_ids(&self) -> BTreeSet<u64> {
        self.deliveries.iter().map(|(e, _, _)| e.message_id).collect()
    }
}

/// Consumes every partition of `sink` in background tasks; poison envelopes are retried (and end in the
/// dead-letter queue), the others acked.
fn consume_all(bus: &Bus, sink: &str, seen: Arc<Mutex<Seen>>) -> Vec<tokio::task::JoinHandle<()>> {
    (0..bus.settings().partitions)
        .map(|partition| {
            let bus = bus.clone();
            let sink = sink.to_owned();
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut consumer = bus.consume(&sink, partition).await.unwrap();
                loop {
                    let received = match consumer.next().await {
                        Ok(received) => received,
                        Err(error) => {
                            eprintln!("consumer of {sink}.{partition}: {error}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let poison =
                        std::str::from_utf8(&received.envelope().bundle).unwrap().contains("\"poison\":true");
                    seen.lock().unwrap().deliveries.push((
                        received.envelope().clone(),
                        received.attempt(),
                        Instant::now(),
                    ));
                    let answer = if poison { received.retry().await } else { received.ack().await };
                    if let Err(error) = answer {
                        eprintln!("answer failed (will be redelivered): {error}");
                    }
                }
            })
        })
        .collect()
}

async fn wait_for(what: &str, timeout: Duration, done: impl FnMut() -> bool) {
    wait_for_or_report(what, timeout, done, String::new).await;
}

/// [`wait_for`], whose time-out message ends with `report()` (what a failure needs to be understood).
async fn wait_for_or_report(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
    report: impl FnOnce() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= deadline {
            panic!("timed out waiting for {what}{}", report());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn states(journal: &Journal, ids: &[u64]) -> Vec<State> {
    ids.iter().map(|id| journal.get(*id).unwrap().unwrap().state).collect()
}

// ---------------------------------------------------------------------------------------------------------
// Scenarios.

/// One admission goes to a, b (route `everything`) and c (route `admissions`): each sink gets it once.
async fn fan_out_to_three_sinks(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let journal = open_journal(dir.path());
    let bus = Bus::open(&settings(&backend, &unique("fan")), dir.path(), &sinks()).await.unwrap();
    let id = append(&journal, "F1", "A01", "P1", false).await;
    let (_trigger, mut stop) = shutdown::channel();
    let pass = pipeline(&journal, &bus).process(journal.unfinished(0, 10).unwrap(), &mut stop).await.unwrap();
    assert_eq!(pass.map(|p| p.published), Some(3));

    let meta = journal.get(id).unwrap().unwrap();
    assert_eq!(meta.state, State::Published);
    let progress = meta.progress.unwrap();
    assert_eq!(progress.routes, ["everything", "admissions"]);
    let routed: Vec<(&str, &str, bool)> =
        progress.deliveries.iter().map(|d| (d.destination.as_str(), d.route.as_str(), d.published)).collect();
    assert_eq!(routed, [("a", "everything", true), ("b", "everything", true), ("c", "admissions", true)]);

    for (sink, route) in [("a", "everything"), ("b", "everything"), ("c", "admissions")] {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let tasks = consume_all(&bus, sink, Arc::clone(&seen));
        wait_for(sink, Duration::from_secs(20), || !seen.lock().unwrap().deliveries.is_empty()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        tasks.iter().for_each(|t| t.abort());
        let seen = std::mem::take(&mut *seen.lock().unwrap());
        assert_eq!(seen.deliveries.len(), 1, "sink {sink} got {:?}", seen.deliveries);
        let envelope = &seen.deliveries[0].0;
        assert_eq!((envelope.message_id, envelope.sink.as_str(), envelope.route.as_str()), (id, sink, route));
        assert_eq!(envelope.event_class, Some(EventClass::Admission));
        let bundle: serde_json::Value = serde_json::from_slice(&envelope.bundle).unwrap();
        assert_eq!(bundle["id"], "F1");
        assert_eq!(bus.take_dead_letters(sink, 10).await.unwrap(), []);
    }
    bus.close().await;
    journal.close().await.unwrap();
}

/// While the bus cannot confirm, entries stay `routed` (never `published`); once it can, the outbox
/// publishes them and only then are they `published`.
async fn confirm_before_published(backend: Backend, mut rabbit: Option<&mut RabbitNode>) {
    let dir = tempfile::tempdir().unwrap();
    let journal = open_journal(dir.path());
    let exchange = unique("confirm");
    // The embedded bus cannot fail to write; opening it without the sinks makes every publish fail.
    let unavailable = match &backend {
        Backend::Embedded => Bus::open(&settings(&backend, &exchange), dir.path(), &[]).await.unwrap(),
        Backend::Amqp(_) => Bus::open(&settings(&backend, &exchange), dir.path(), &sinks()).await.unwrap(),
    };
    if let Some(rabbit) = rabbit.as_deref_mut() {
        rabbit.stop_broker();
    }
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(append(&journal, &format!("C{n}"), "A03", &format!("P{n}"), false).await);
    }
    let (trigger, mut stop) = shutdown::channel();
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        trigger.fire();
    });
    let pass = pipeline(&journal, &unavailable).process(journal.unfinished(0, 10).unwrap(), &mut stop).await;
    stopper.await.unwrap();
    assert_eq!(pass.unwrap(), None, "the batch must not complete without confirms");
    assert!(states(&journal, &ids).iter().all(|s| *s == State::Routed), "{:?}", states(&journal, &ids));

    let bus = match rabbit {
        Some(rabbit) => {
            rabbit.start_broker();
            unavailable
        }
        None => {
            drop(unavailable);
            Bus::open(&settings(&backend, &exchange), dir.path(), &sinks()).await.unwrap()
        }
    };
    let (_trigger, mut stop) = shutdown::channel();
    let pass = pipeline(&journal, &bus).process(journal.unfinished(0, 10).unwrap(), &mut stop).await.unwrap();
    assert_eq!(pass.map(|p| p.published), Some(10)); // 5 messages x sinks a and b
    assert!(states(&journal, &ids).iter().all(|s| *s == State::Published));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let tasks = consume_all(&bus, "b", Arc::clone(&seen));
    wait_for("5 on sink b", Duration::from_secs(20), || seen.lock().unwrap().distinct_ids().len() == 5).await;
    tasks.iter().for_each(|t| t.abort());
    assert_eq!(seen.lock().unwrap().distinct_ids(), ids.iter().copied().collect());
    bus.close().await;
    journal.close().await.unwrap();
}

/// A poison message is retried (attempts 1, 2, 3) then dead-lettered; the same patient's next message waits
/// behind it; the other partitions flow meanwhile.
async fn poison_goes_to_the_dead_letter_queue(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let journal = open_journal(dir.path());
    let bus = Bus::open(&settings(&backend, &unique("poison")), dir.path(), &sinks()).await.unwrap();
    let poison = append(&journal, "X0", "A03", "SICK", true).await;
    let behind = append(&journal, "X1", "A03", "SICK", false).await;
    let partitions = bus.settings().partitions;
    let sick = relais::bus::partition_of(&relais::bus::partition_key("FAC|SICK"), partitions);
    let mut others = Vec::new();
    for n in 0..40 {
        let patient = format!("OK{n}");
        if relais::bus::partition_of(&relais::bus::partition_key(&format!("FAC|{patient}")), partitions)
            != sick
        {
            others.push(append(&journal, &format!("Y{n}"), "A03", &patient, false).await);
        }
    }
    assert!(others.len() > 5);
    let (_trigger, mut stop) = shutdown::channel();
    pipeline(&journal, &bus).process(journal.unfinished(0, 100).unwrap(), &mut stop).await.unwrap();

    let seen = Arc::new(Mutex::new(Seen::default()));
    let tasks = consume_all(&bus, "a", Arc::clone(&seen));
    let expected = others.len() + 2;
    wait_for("every message on sink a", Duration::from_secs(30), || {
        let seen = seen.lock().unwrap();
        seen.distinct_ids().len() == expected
            && seen.deliveries.iter().any(|(e, _, _)| e.message_id == behind)
    })
    .await;
    let mut dead = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while dead.is_empty() && Instant::now() < deadline {
        dead = bus.take_dead_letters("a", 10).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tasks.iter().for_each(|t| t.abort());
    assert_eq!(dead.iter().map(|e| e.message_id).collect::<Vec<_>>(), [poison]);

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let attempts: Vec<u32> =
        seen.deliveries.iter().filter(|(e, _, _)| e.message_id == poison).map(|(_, a, _)| *a).collect();
    assert_eq!(attempts, [1, 2, 3]);
    let last_poison = seen.deliveries.iter().rposition(|(e, _, _)| e.message_id == poison).unwrap();
    let behind_at = seen.deliveries.iter().position(|(e, _, _)| e.message_id == behind).unwrap();
    assert!(behind_at > last_poison, "the same patient's next message overtook the retried one");
    let poison_done = seen.deliveries[last_poison].2;
    let others_done = seen
        .deliveries
        .iter()
        .filter(|(e, _, _)| others.contains(&e.message_id))
        .map(|(_, _, at)| *at)
        .max()
        .unwrap();
    assert!(others_done < poison_done, "other partitions waited for the poison message");
    bus.close().await;
    journal.close().await.unwrap();
}

/// `kill -9` of a process running the pipeline (a child of this test binary) after its first published
/// batch; on restart the outbox re-publishes what was not recorded, and de-duplicating by `message_id`
/// downstream gives every message exactly once.
async fn kill_9_then_restart(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let exchange = unique("kill");
    let total = 300;
    let mut ids = Vec::new();
    {
        let journal = open_journal(dir.path());
        for n in 0..total {
            ids.push(append(&journal, &format!("K{n}"), "A03", &format!("P{}", n % 17), false).await);
        }
        // Declare the topology now, so nothing published by the child is unroutable.
        let bus = Bus::open(&settings(&backend, &exchange), dir.path(), &sinks()).await.unwrap();
        bus.close().await;
        drop(bus);
        journal.close().await.unwrap();
    }
    let url = match &backend {
        Backend::Amqp(url) => url.clone(),
        Backend::Embedded => String::new(),
    };
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["bus::child_pipeline", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env("RELAIS_BUS_CHILD_DIR", dir.path())
        .env("RELAIS_BUS_CHILD_EXCHANGE", &exchange)
        .env("RELAIS_BUS_CHILD_URL", &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first_pass = tokio::task::spawn_blocking(move || {
        lines.find(|line| line.as_ref().is_ok_and(|l| l.starts_with("PASS"))).is_some()
    });
    assert!(first_pass.await.unwrap(), "the child pipeline published nothing");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let journal = open_journal(dir.path());
    let unfinished_after_kill = journal.unfinished(0, 1000).unwrap().len();
    assert!(unfinished_after_kill > 0, "killed too late: nothing left to re-publish");
    let bus = Bus::open(&settings(&backend, &exchange), dir.path(), &sinks()).await.unwrap();
    let (trigger, stop) = shutdown::channel();
    let running = tokio::spawn(pipeline(&journal, &bus).run(stop));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let tasks = consume_all(&bus, "a", Arc::clone(&seen));
    let run = Run { trigger, running, tasks };
    drain_then_check("every message after restart", Duration::from_secs(60), &journal, &ids, &seen, run)
        .await;
    bus.close().await;
    journal.close().await.unwrap();
}

/// The child half of [`kill_9_then_restart`]: runs only when the parent sets `RELAIS_BUS_CHILD_DIR`.
#[test]
#[ignore = "run by kill_9_then_restart as a child process"]
fn child_pipeline() {
    let Ok(dir) = std::env::var("RELAIS_BUS_CHILD_DIR") else { return };
    let exchange = std::env::var("RELAIS_BUS_CHILD_EXCHANGE").unwrap();
    let url = std::env::var("RELAIS_BUS_CHILD_URL").unwrap();
    let backend = if url.is_empty() { Backend::Embedded } else { Backend::Amqp(url) };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dir = PathBuf::from(dir);
        let journal = open_journal(&dir);
        let bus = Bus::open(&settings(&backend, &exchange), &dir, &sinks()).await.unwrap();
        let mut pipeline = pipeline(&journal, &bus);
        pipeline.batch = 20;
        let (_trigger, mut stop) = shutdown::channel();
        let mut cursor = 0;
        loop {
            let batch = journal.unfinished(cursor, pipeline.batch).unwrap();
            let Some(last) = batch.last().map(|u| u.meta.id) else { break };
            let pass = pipeline.process(batch, &mut stop).await.unwrap();
            println!("PASS {pass:?}");
            cursor = last;
        }
        println!("DONE");
        std::thread::sleep(Duration::from_secs(60));
    });
}

/// Per patient, the first delivery of each message comes in journal order.
fn assert_per_patient_order(seen: &Seen, journal: &Journal) {
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut first_seen = BTreeSet::new();
    for (envelope, _, _) in &seen.deliveries {
        if !first_seen.insert(envelope.message_id) {
            continue;
        }
        let previous = last.insert(envelope.partition_key.clone(), envelope.message_id);
        if let Some(previous) = previous {
            assert!(
                previous < envelope.message_id,
                "patient reordered: {} after {previous} ({:?})",
                envelope.message_id,
                journal.get(envelope.message_id).unwrap().map(|m| m.state)
            );
        }
    }
}

/// A running pipeline with its stop trigger and the consumer tasks of [`consume_all`].
struct Run<E> {
    trigger: shutdown::Trigger,
    running: tokio::task::JoinHandle<Result<(), E>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Waits (up to `timeout`) until the consumers have seen every one of `ids` and (up to 30 s) until the journal
/// marks them all published, stops the pipeline and the consumers, then checks that none was lost and that no
/// patient's messages were reordered.
async fn drain_then_check<E: std::fmt::Debug>(
    what: &str,
    timeout: Duration,
    journal: &Journal,
    ids: &[u64],
    seen: &Mutex<Seen>,
    run: Run<E>,
) {
    // On a time-out: how far the consumers and the pipeline got.
    let report = || {
        let mut by_state: BTreeMap<String, usize> = BTreeMap::new();
        for state in states(journal, ids) {
            *by_state.entry(format!("{state:?}")).or_default() += 1;
        }
        let seen = seen.lock().unwrap().distinct_ids().len();
        let pipeline = if run.running.is_finished() { "ended" } else { "running" };
        format!(
            ": the consumers saw {seen} of {} messages; journal states {by_state:?}; pipeline {pipeline}",
            ids.len()
        )
    };
    wait_for_or_report(what, timeout, || seen.lock().unwrap().distinct_ids().len() == ids.len(), report)
        .await;
    wait_for("all published", Duration::from_secs(30), || {
        states(journal, ids).iter().all(|s| *s == State::Published)
    })
    .await;
    run.trigger.fire();
    run.running.await.unwrap().unwrap();
    run.tasks.iter().for_each(|t| t.abort());
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(seen.distinct_ids(), ids.iter().copied().collect::<BTreeSet<_>>());
    assert_per_patient_order(&seen, journal);
}

/// RabbitMQ stopped for 30 s and restarted while messages keep arriving: none lost, none reordered within
/// a patient, every entry ends `published`.
async fn broker_outage_mid_load(rabbit: &mut RabbitNode) {
    let backend = Backend::Amqp(rabbit.url());
    let dir = tempfile::tempdir().unwrap();
    let journal = open_journal(dir.path());
    let bus = Bus::open(&settings(&backend, &unique("outage")), dir.path(), &sinks()).await.unwrap();
    let (trigger, stop) = shutdown::channel();
    let running = tokio::spawn(pipeline(&journal, &bus).run(stop));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let tasks = consume_all(&bus, "a", Arc::clone(&seen));

    let total = 900;
    let mut ids = Vec::new();
    for n in 0..total {
        ids.push(append(&journal, &format!("L{n}"), "A03", &format!("P{}", n % 29), false).await);
        if n == 300 {
            wait_for("some deliveries before the outage", Duration::from_secs(30), || {
                !seen.lock().unwrap().deliveries.is_empty()
            })
            .await;
            let rabbit_ptr: &mut RabbitNode = rabbit;
            tokio::task::block_in_place(|| rabbit_ptr.stop_broker());
        }
        if n == 600 {
            tokio::time::sleep(Duration::from_secs(30)).await;
            tokio::task::block_in_place(|| rabbit.start_broker());
        }
        if n % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let run = Run { trigger, running, tasks };
    drain_then_check("every message after the outage", Duration::from_secs(120), &journal, &ids, &seen, run)
        .await;
    let stats: BTreeMap<String, u64> = journal.stats().unwrap();
    assert_eq!(stats["published"], total as u64);
    bus.close().await;
    journal.close().await.unwrap();
}

/// A CDA document's envelope carries its XDS metadata (type, hash and size of the bytes, patient id) and the
/// reference to the journaled bytes, also when it is re-published from the outbox after a restart (the
/// metadata is not journaled: the pipeline reads it again).
async fn document_envelope_carries_the_xds_metadata(backend: Backend) {
    use sha1::Digest;
    let dir = tempfile::tempdir().unwrap();
    let journal = open_journal(dir.path());
    let cda = std::fs::read(
        super::harness::test_messages().join("cda/ans-testcontenucda_BIO-CR-BIO_2024.01_TSH_1.xml"),
    )
    .unwrap();
    let entry = NewEntry {
        received_at: jiff::Timestamp::now(),
        transport: Transport::Http,
        peer: "test".into(),
        raw: Bytes::from(cda.clone()),
        charset: None,
        header: None,
        state: State::Received,
        reason: None,
        kind: MessageKind::Cda,
    };
    let Appended::Stored { id } = journal.append(entry).await.unwrap() else { panic!("not stored") };
    let mut config = relais::config::Settings {
        mappings_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/mappings").into(),
        ..relais::config::Settings::default()
    };
    config.documents.tables = concat!(env!("CARGO_MANIFEST_DIR"), "/mappings/tables/xds").into();
    let sink_names: BTreeSet<String> = sinks().into_iter().collect();
    let routes =
        "[[route]]\nname = \"docs\"\ndestinations = [\"a\"]\n[route.when]\nevent_class = \"document\"\n";
    let pipeline = |bus: &Bus| Pipeline {
        journal: journal.clone(),
        transform: relais::pipeline::transform_for(&config).unwrap(),
        routes: LiveRoutes::fixed(RouteSet::from_str(Path::new("docs.toml"), routes, &sink_names).unwrap()),
        bus: bus.clone(),
        batch: 8,
        sinks: Arc::new(sink_names.clone()),
    };
    // First run: the bus cannot take it (an embedded bus without the sinks), the entry stays `routed`.
    let unavailable = tempfile::tempdir().unwrap();
    let nowhere = Bus::open(&settings(&Backend::Embedded, "docs"), unavailable.path(), &[]).await.unwrap();
    let (trigger, mut stop) = shutdown::channel();
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        trigger.fire();
    });
    let pass = pipeline(&nowhere).process(journal.unfinished(0, 10).unwrap(), &mut stop).await.unwrap();
    stopper.await.unwrap();
    assert_eq!(pass, None);
    assert_eq!(journal.get(id).unwrap().unwrap().state, State::Routed);

    // Restart: the outbox publishes it with its metadata.
    let bus = Bus::open(&settings(&backend, &unique("docs")), dir.path(), &sinks()).await.unwrap();
    let (_trigger, mut stop) = shutdown::channel();
    let pass = pipeline(&bus).process(journal.unfinished(0, 10).unwrap(), &mut stop).await.unwrap();
    assert_eq!(pass.map(|p| p.published), Some(1));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let tasks = consume_all(&bus, "a", Arc::clone(&seen));
    wait_for("the document envelope", Duration::from_secs(20), || {
        !seen.lock().unwrap().deliveries.is_empty()
    })
    .await;
    tasks.iter().for_each(|t| t.abort());
    let envelope = seen.lock().unwrap().deliveries[0].0.clone();
    assert_eq!(envelope.message_id, id);
    assert_eq!(envelope.document_ref.as_deref(), Some(format!("journal:{id}").as_str()));
    let journaled = journal.get(id).unwrap().unwrap().progress.unwrap().document.unwrap();
    let xds = envelope.xds.expect("the envelope carries the XDS metadata");
    assert_eq!(Some(&xds.entry.type_code.code), journaled.document_type.as_ref());
    let sha1: String = sha1::Sha1::digest(&cda).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(xds.entry.hash, sha1);
    assert_eq!(xds.entry.size, cda.len() as u64);
    assert_eq!(xds.entry.mime_type, "text/xml");
    // The sample's recordTarget INS (test NIR OID), qualified: the DMP patientId.
    assert_eq!(xds.entry.patient_id.as_deref(), Some("279035121518989^^^&1.2.250.1.213.1.4.10&ISO^NH"));
    bus.close().await;
    journal.close().await.unwrap();
}

// ---------------------------------------------------------------------------------------------------------
// The suites: one broker for the whole AMQP suite, stopped at its end.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_bus_suite() {
    fan_out_to_three_sinks(Backend::Embedded).await;
    confirm_before_published(Backend::Embedded, None).await;
    poison_goes_to_the_dead_letter_queue(Backend::Embedded).await;
    document_envelope_carries_the_xds_metadata(Backend::Embedded).await;
    kill_9_then_restart(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn amqp_bus_suite() {
    let mut rabbit = tokio::task::spawn_blocking(RabbitNode::start).await.unwrap();
    let backend = Backend::Amqp(rabbit.url());
    fan_out_to_three_sinks(backend.clone()).await;
    document_envelope_carries_the_xds_metadata(backend.clone()).await;
    poison_goes_to_the_dead_letter_queue(backend.clone()).await;
    kill_9_then_restart(backend.clone()).await;
    confirm_before_published(backend.clone(), Some(&mut rabbit)).await;
    broker_outage_mid_load(&mut rabbit).await;
    tokio::task::spawn_blocking(move || drop(rabbit)).await.unwrap();
}

/// A "broker" that accepts TCP connections and never answers (booting, overloaded, or not a broker): opening
/// the bus fails with an error saying so instead of hanging the server's start for good.
#[tokio::test]
async fn a_broker_that_never_answers_is_an_error_not_a_hang() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("amqp://guest:guest@{}/%2f", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let opened = tokio::time::timeout(
        Duration::from_secs(60),
        Bus::open(&settings(&Backend::Amqp(url), "silent"), dir.path(), &sinks()),
    )
    .await
    .expect("Bus::open still waiting after 60 s");
    let error = opened.err().expect("a silent broker cannot open a bus").to_string();
    assert!(error.contains("did not answer"), "{error}");
    held.abort();
}

// ---------------------------------------------------------------------------------------------------------
// The real binary: `relais serve` with sinks, the shipped routes and the embedded bus.

const SINKS_TOML: &str = concat!(
    "routes_dir = \"",
    env!("CARGO_MANIFEST_DIR"),
    "/routes\"\n[bus]\npartitions = 4\n",
    "[sinks.gp-notify]\nkind = \"notify\"\n[sinks.mss]\nkind = \"mss\"\n[sinks.dmp]\nkind = \"dmp\"\n"
);

fn wait_blocking(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An admission with a known GP is published to `gp-notify` only; a cancellation without one is `unrouted`
/// (counted in the stats); after `kill -9` and a restart everything is still there, and the embedded bus
/// holds each published message once for its sink.
#[test]
fn serve_routes_and_publishes_then_survives_kill_9() {
    use super::harness::{Relais, mllp_send, sample};
    let mut relais = Relais::start_with_config(SINKS_TOML, &[]);
    mllp_send(relais.mllp_addr(), &sample("adt/a01_admission.hl7"));
    mllp_send(relais.mllp_addr(), &sample("adt/a11_cancel_admission.hl7"));
    wait_blocking("both messages handled", || {
        let stats = relais.stats();
        stats["published"] == 1 && stats["unrouted"] == 1
    });
    let published = &relais.messages("published", 10)[0];
    let progress = &published["progress"];
    assert_eq!(progress["routes"], serde_json::json!(["gp-events"]));
    assert_eq!(progress["deliveries"][0]["destination"], "gp-notify");
    assert_eq!(progress["deliveries"][0]["published"], true);
    assert_eq!(progress["event_class"], "admission");
    assert_eq!(progress["partition_key"].as_str().map(str::len), Some(16));
    let (status, body) = relais.get("/metrics");
    let metrics = String::from_utf8_lossy(&body);
    assert_eq!(status, 200);
    assert!(metrics.contains("relais_routing_messages_total{result=\"unrouted\"} 1"), "{metrics}");
    assert!(metrics.contains("relais_bus_published_total{result=\"confirmed\"} 1"), "{metrics}");

    // A CDA document with a qualified INS and no opposition goes to the DMP sink.
    let response = super::harness::http()
        .post(format!("{}/cda", relais.http_url()))
        .header("content-type", "application/xml")
        .body(sample("cda/ans-testcontenucda_BIO-CR-BIO_2024.01_TSH_1.xml"))
        .send()
        .unwrap();
    assert!(response.status().is_success(), "{:?}", response.status());
    wait_blocking("the document published", || relais.stats()["published"] == 2);
    let document = &relais.messages("published", 10)[0];
    assert_eq!(document["progress"]["kind"], "cda");
    assert_eq!(document["progress"]["deliveries"][0]["destination"], "dmp");

    // More admissions, then kill -9 as soon as they are acknowledged: the outbox finishes after restart.
    let a01 = String::from_utf8(sample("adt/a01_admission.hl7")).unwrap();
    for n in 0..30 {
        let message = a01.replacen("|P|2.5", &format!("{n}|P|2.5"), 1);
        mllp_send(relais.mllp_addr(), message.as_bytes());
    }
    relais.kill();
    relais.restart();
    wait_blocking("every admission published after restart", || relais.stats()["published"] == 32);
    let published: Vec<u64> = relais
        .messages("published", 100)
        .iter()
        .filter(|m| m["progress"]["deliveries"][0]["destination"] == "gp-notify")
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(published.len(), 31);
    relais.stop();

    let bus = relais::bus::embedded::EmbeddedBus::open(
        &relais.data_dir().join("bus.redb"),
        BusSettings { partitions: 4, ..BusSettings::default() },
        &["gp-notify".to_owned(), "mss".to_owned(), "dmp".to_owned()],
    )
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut queued = Vec::new();
    runtime.block_on(async {
        for partition in 0..4 {
            let mut consumer = bus.consume("gp-notify", partition).unwrap();
            while let Ok(Ok(received)) =
                tokio::time::timeout(Duration::from_millis(200), consumer.next()).await
            {
                queued.push(received.envelope.message_id);
                received.ack().unwrap();
            }
        }
    });
    queued.sort_unstable();
    let mut expected = published.clone();
    expected.sort_unstable();
    assert_eq!(queued, expected, "each published message is on the bus once for gp-notify");
}

#[test]
fn check_reports_route_errors_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relais.toml");
    std::fs::write(&config, "[sinks.gp-notify]\nkind = \"notify\"\n").unwrap();
    let routes = dir.path().join("routes");
    std::fs::create_dir(&routes).unwrap();
    std::fs::write(
        routes.join("a.toml"),
        "[[route]]\nname = \"x\"\n\ndestinations = [\"gp-notify\", \"nowhere\"]\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_relais"))
        .args(["check", "--config"])
        .arg(&config)
        .arg("--routes")
        .arg(&routes)
        .arg("--mappings")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/mappings"))
        .env_remove("RELAIS__SINKS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("a.toml:4: route `x`: unknown destination `nowhere`"), "{stderr}");

    std::fs::write(routes.join("a.toml"), "[[route]]\nname = \"x\"\ndestinations = [\"gp-notify\"]\n")
        .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_relais"))
        .args(["check", "--config"])
        .arg(&config)
        .arg("--routes")
        .arg(&routes)
        .arg("--mappings")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/mappings"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("1 routes OK"));
}

#[test]
fn routes_explain_names_the_matching_route_and_why_others_fail() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relais.toml");
    std::fs::write(&config, SINKS_TOML).unwrap();
    let explain = |sample: &str| {
        Command::new(env!("CARGO_BIN_EXE_relais"))
            .args(["routes", "explain", "--config"])
            .arg(&config)
            .arg(super::harness::test_messages().join(sample))
            .env("RELAIS__MAPPINGS_DIR", concat!(env!("CARGO_MANIFEST_DIR"), "/mappings"))
            .env("RELAIS__DOCUMENTS__TABLES", concat!(env!("CARGO_MANIFEST_DIR"), "/mappings/tables/xds"))
            .output()
            .unwrap()
    };
    let output = explain("adt/a11_cancel_admission.hl7");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("no    gp-events ("), "{stdout}");
    assert!(stdout.contains("10-gp-notify.toml:8): gp_known is false, wanted true"), "{stdout}");
    assert!(stdout.ends_with("=> unrouted\n"), "{stdout}");

    let output = explain("adt/a04_sau_entry.hl7");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("MATCH gp-events ("), "{stdout}");
    assert!(stdout.lines().next().unwrap().ends_with("-> gp-notify"), "{stdout}");
}

// ---------------------------------------------------------------------------------------------------------
// Route reload in the real binary, and a sink removed from the configuration.

const TWO_SINKS: &str =
    "[bus]\npartitions = 2\n[sinks.gp-notify]\nkind = \"notify\"\n[sinks.mss]\nkind = \"mss\"\n";

/// A route directory holding one file with one route named `name` (no predicate) to `sink`.
fn route_dir(parent: &Path, dir: &str, name: &str, sink: &str) -> PathBuf {
    let path = parent.join(dir);
    std::fs::create_dir_all(&path).unwrap();
    std::fs::write(
        path.join("10-all.toml"),
        format!("[[route]]\nname = \"{name}\"\ndestinations = [\"{sink}\"]\n"),
    )
    .unwrap();
    path
}

/// Points the symlink `link` at `target` atomically (a new link renamed over the old one), so a watcher on
/// the old target sees nothing.
fn repoint(link: &Path, target: &Path) {
    let tmp = link.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

/// The admission sample with MSH-10 = `control_id`.
fn a01(control_id: &str) -> Vec<u8> {
    super::harness::with_msh_field(&super::harness::sample("adt/a01_admission.hl7"), 10, control_id)
}

/// Sends one A01 with control id `control_id` and returns the routes the server recorded for it.
fn routes_of_next(relais: &super::harness::Relais, control_id: &str) -> Vec<String> {
    use super::harness::{eventually, mllp_send};
    let ack = mllp_send(relais.mllp_addr(), &a01(control_id));
    assert!(String::from_utf8_lossy(&ack).contains("MSA|AA"), "{}", String::from_utf8_lossy(&ack));
    eventually(&format!("{control_id} published"), || {
        let message = relais.messages("", 20).into_iter().find(|m| m["control_id"] == control_id)?;
        (message["state"] == "published")
            .then(|| serde_json::from_value(message["progress"]["routes"].clone()).expect("route names"))
    })
}

/// `relais serve` reloads its routes on a file change and on SIGHUP; a bad file keeps the previous routes
/// live and the log names the file and line.
#[test]
fn routes_reload_on_file_change_and_on_sighup() {
    use super::harness::{Relais, eventually};
    let work = tempfile::tempdir().unwrap();
    let first = route_dir(work.path(), "v1", "first", "gp-notify");
    // `routes` is a symlink: SIGHUP re-reads whatever it points at, the file watcher sees only `v1`.
    let link = work.path().join("routes");
    std::os::unix::fs::symlink(&first, &link).unwrap();
    let config = format!("routes_dir = {:?}\n{TWO_SINKS}", link.display().to_string());
    let relais = Relais::start_with_config(&config, &[]);
    assert_eq!(routes_of_next(&relais, "R1"), ["first"]);

    // A file change in the watched directory: the new route takes over without a signal.
    std::fs::write(first.join("10-all.toml"), "[[route]]\nname = \"changed\"\ndestinations = [\"mss\"]\n")
        .unwrap();
    let mut n = 0;
    eventually("the changed file in force", || {
        n += 1;
        (routes_of_next(&relais, &format!("C{n}")) == ["changed"]).then_some(())
    });

    // A new directory behind the symlink: nothing changes until SIGHUP.
    let second = route_dir(work.path(), "v2", "after-hup", "gp-notify");
    repoint(&link, &second);
    assert_eq!(routes_of_next(&relais, "H0"), ["changed"], "reloaded without a signal");
    relais.hangup();
    let mut n = 0;
    eventually("the routes read on SIGHUP in force", || {
        n += 1;
        (routes_of_next(&relais, &format!("H{n}")) == ["after-hup"]).then_some(())
    });

    // A bad file: the reload is refused, the error names file:line, the previous routes stay live.
    let bad = route_dir(work.path(), "v3", "never", "gp-notify");
    std::fs::write(bad.join("20-bad.toml"), "[[route]]\nname = \"broken\"\n\ndestinations = [\"nowhere\"]\n")
        .unwrap();
    repoint(&link, &bad);
    relais.hangup();
    let log = eventually("the refused reload logged", || {
        let log = relais.log();
        log.contains("route reload refused").then_some(log)
    });
    assert!(log.contains("20-bad.toml:4:"), "the log does not name file:line:\n{log}");
    assert!(log.contains("unknown destination `nowhere`"), "{log}");
    assert_eq!(routes_of_next(&relais, "B1"), ["after-hup"]);
}

/// Entries routed by an earlier configuration to a sink since removed do not stall the pipeline on restart:
/// their other destinations are published, the entry is recorded `failed` with a reason naming the sink
/// (timeline), a metric counts them, a warning names the sink (no patient data), and new messages flow.
#[test]
fn a_removed_sink_does_not_stall_the_pipeline() {
    use super::harness::{Relais, eventually, mllp_send};
    use relais::journal::{Delivery, Progress, Stage};
    let work = tempfile::tempdir().unwrap();
    let routes = route_dir(work.path(), "routes", "all", "gp-notify");
    let config = format!("routes_dir = {:?}\n{TWO_SINKS}", routes.display().to_string());
    let mut relais = Relais::start_with_config(&config, &[]);
    relais.stop();

    // What a run with a third sink `old-sink` left behind: routed to it and to gp-notify, not yet published.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let left = runtime.block_on(async {
        let journal = Journal::open(JournalConfig::new(relais.data_dir().join("journal.redb"))).unwrap();
        let mut left = Vec::new();
        for n in 0..3 {
            let id = append_raw(&journal, a01(&format!("OLD{n}")), None).await;
            let progress = Progress {
                kind: MessageKind::Hl7v2,
                event_class: Some(EventClass::Admission),
                partition_key: relais::bus::partition_key(&format!("FAC|P{n}")),
                routes: vec!["all".into(), "legacy".into()],
                deliveries: vec![
                    Delivery { destination: "gp-notify".into(), route: "all".into(), published: false },
                    Delivery { destination: "old-sink".into(), route: "legacy".into(), published: false },
                ],
                document: None,
            };
            let bundle = Bytes::from_static(b"{\"resourceType\":\"Bundle\"}");
            journal.update(id, vec![Stage::Mapped { bundle }, Stage::Routed { progress }]).await.unwrap();
            left.push(id);
        }
        journal.close().await.unwrap();
        left
    });

    relais.restart();
    for id in &left {
        let timeline = eventually(&format!("entry {id} settled"), || {
            let timeline = relais.get_json(&format!("/api/messages/{id}"));
            (timeline["entry"]["state"] != "routed").then_some(timeline)
        });
        let entry = &timeline["entry"];
        assert_eq!(entry["state"], "failed", "{entry}");
        let reason = entry["reason"].as_str().unwrap();
        assert!(reason.contains("`old-sink`") && reason.contains("no longer a configured sink"), "{reason}");
        let deliveries = &entry["progress"]["deliveries"];
        assert_eq!(deliveries[0]["destination"], "gp-notify");
        assert_eq!(deliveries[0]["published"], true, "the other destination was not published: {entry}");
        assert_eq!(deliveries[1]["published"], false);
        let steps: Vec<&str> =
            timeline["steps"].as_array().unwrap().iter().map(|e| e["stage"].as_str().unwrap()).collect();
        assert_eq!(steps, ["received", "mapped", "routed", "published", "failed"], "{timeline}");
    }
    // New messages flow.
    mllp_send(relais.mllp_addr(), &a01("NEW1"));
    let mut last = serde_json::Value::Null;
    let published = (0..300).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        last = relais.messages("", 10).into_iter().find(|m| m["control_id"] == "NEW1").unwrap_or_default();
        last["state"] == "published"
    });
    assert!(published, "the new message was not published: {last}\n{}", relais.log());
    let (_, body) = relais.get("/metrics");
    let metrics = String::from_utf8_lossy(&body);
    assert!(metrics.contains("relais_bus_published_total{result=\"undeliverable\"} 3"), "{metrics}");
    let log = relais.log();
    let warning = log.lines().find(|l| l.contains("not a configured sink")).expect("a warning");
    assert!(warning.contains("WARN") && warning.contains("old-sink"), "{warning}");
    // The patient of the sample (PID-5 BERNARD) appears nowhere in the log.
    assert!(!log.contains("BERNARD"), "the log shows patient data:\n{log}");
}
