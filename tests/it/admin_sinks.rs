//! Operating the sinks: pause and resume (order kept, state kept across restarts), dead letters one by one on
//! a real RabbitMQ (read without losing anything, inspect, replay and purge by id), per-sink outcomes in the
//! timeline and the undeliverable listing, through the real binary and its CLI.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relais::admin::Admin;
use relais::bus::{Bus, BusSettings, Envelope};
use relais::journal::{Journal, JournalConfig};
use relais::sinks::ledger::Ledger;
use relais::sinks::pause::Pauses;
use relais::sinks::retry::{Outcome, RetryPolicy};

use crate::harness::{Relais, http, mllp_send, test_messages};

use crate::rabbit::RabbitNode;

const SINK: &str = "gp_notify";

fn envelope(id: u64, patient: &str) -> Envelope {
    crate::harness::admission_envelope(SINK, id, patient)
}

async fn eventually(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a sink over `bus` that records what it delivers; pauses it, publishes, checks nothing is taken,
/// resumes it and checks every envelope is delivered once, in publication order.
async fn pause_then_resume_delivers_in_order(bus: Bus, dir: &std::path::Path) {
    let ledger = Arc::new(Ledger::open(dir).unwrap());
    let pauses = Pauses::open(dir).unwrap();
    let delivered: Arc<Mutex<Vec<u64>>> = Arc::default();
    let deliver = {
        let delivered = delivered.clone();
        move |env: Envelope, _attempt: u32| {
            let delivered = delivered.clone();
            async move {
                delivered.lock().unwrap().push(env.message_id);
                Outcome::Delivered
            }
        }
    };
    let (trigger, stop) = relais::shutdown::channel();
    let runner = tokio::spawn(relais::sinks::run_sink_with(
        bus.clone(),
        SINK.into(),
        RetryPolicy::default(),
        ledger.clone(),
        pauses.clone(),
        stop,
        deliver,
    ));

    bus.publish(&[envelope(1, "P")]).await.unwrap();
    eventually("the first delivery", Duration::from_secs(20), || delivered.lock().unwrap().len() == 1).await;

    assert!(pauses.set(SINK, true).unwrap());
    let batch: Vec<Envelope> = (2..=6).map(|id| envelope(id, "P")).collect();
    bus.publish(&batch).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(*delivered.lock().unwrap(), [1], "nothing delivered while paused");
    assert_eq!(ledger.outcome(SINK, 2).unwrap(), None);
    assert!(Pauses::open(dir).unwrap().is_paused(SINK), "the pause is on disk");

    assert!(pauses.set(SINK, false).unwrap());
    eventually("the waiting deliveries", Duration::from_secs(20), || delivered.lock().unwrap().len() == 6)
        .await;
    assert_eq!(*delivered.lock().unwrap(), [1, 2, 3, 4, 5, 6], "delivered in order once resumed");
    assert!(!Pauses::open(dir).unwrap().is_paused(SINK));
    trigger.fire();
    runner.await.unwrap().unwrap();
}

/// A paused sink takes nothing from the embedded bus: envelopes published meanwhile wait; once resumed they
/// are delivered in publication order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_sink_takes_nothing_and_delivers_in_order_once_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let settings = BusSettings { partitions: 2, ..BusSettings::default() };
    let bus = Bus::open(&settings, dir.path(), &[SINK.to_string()]).await.unwrap();
    pause_then_resume_delivers_in_order(bus, dir.path()).await;
}

/// The admin side over a bus and a ledger (no HTTP): what the API routes call.
fn admin(journal: Journal, bus: Bus, dir: &std::path::Path) -> Admin {
    Admin {
        journal,
        bus,
        sinks: vec![SINK.to_string()],
        token: String::new(),
        ledger: Arc::new(Ledger::open(dir).unwrap()),
        pauses: Pauses::open(dir).unwrap(),
    }
}

/// On RabbitMQ, dead letters are listed with the sink's reason (twice: reading takes nothing away), shown,
/// replayed and purged one by one, the others staying in the dead-letter queue in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_dead_letters_are_read_without_loss_and_handled_one_by_one() {
    let rabbit = tokio::task::spawn_blocking(RabbitNode::start).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let settings = BusSettings { partitions: 1, amqp_url: Some(rabbit.url()), ..BusSettings::default() };
    let bus = Bus::open(&settings, dir.path(), &[SINK.to_string()]).await.unwrap();
    let journal = Journal::open(JournalConfig::new(dir.path().join("journal.redb"))).unwrap();
    let admin = admin(journal.clone(), bus.clone(), dir.path());

    // The sink fails 1..=4 for good: four dead letters, each with its reason in the ledger.
    bus.publish(&(1..=4).map(|id| envelope(id, "P")).collect::<Vec<_>>()).await.unwrap();
    let mut consumer = bus.consume(SINK, 0).await.unwrap();
    for id in 1..=4u64 {
        let received = tokio::time::timeout(Duration::from_secs(10), consumer.next()).await.unwrap().unwrap();
        assert_eq!(received.envelope().message_id, id);
        admin.ledger.record_outcome(SINK, id, &Outcome::failed(format!("SMTP 550 case {id}")), 1).unwrap();
        received.dead_letter().await.unwrap();
    }

    let ids = |list: &[relais::admin::api::DeadLetter]| list.iter().map(|d| d.message_id).collect::<Vec<_>>();
    let mut listed = Vec::new();
    for _ in 0..30 {
        listed = admin.dead_letter_list(SINK, 100).await.unwrap();
        if listed.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // dead-lettering is asynchronous in the broker
    }
    assert_eq!(ids(&listed), [1, 2, 3, 4]);
    assert_eq!(listed[1].reason.as_deref(), Some("SMTP 550 case 2"));
    assert_eq!(listed[1].attempts, Some(1));
    assert!(listed[1].at.is_some());
    let again = admin.dead_letter_list(SINK, 100).await.unwrap();
    assert_eq!(ids(&again), [1, 2, 3, 4], "listing took nothing away and kept the order");
    assert_eq!(ids(&admin.dead_letter_list(SINK, 2).await.unwrap()), [1, 2]);
    // The broker puts the listed messages back asynchronously (nack + requeue): the count settles at 4.
    let mut count = 0;
    for _ in 0..30 {
        count = bus.dead_letter_count(SINK).await.unwrap();
        if count == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count, 4);

    let shown = admin.dead_letter(SINK, 3).await.unwrap().expect("dead letter 3");
    assert_eq!(&shown.bundle[..], b"{\"id\":3}");
    assert!(admin.dead_letter(SINK, 99).await.unwrap().is_none());

    // Purge 2: gone from the queue, the purge recorded for retention.
    assert_eq!(admin.purge_dead_letters(SINK, &[2], "test").await.unwrap(), [2]);
    assert_eq!(ids(&admin.dead_letter_list(SINK, 100).await.unwrap()), [1, 3, 4], "the others in order");
    assert!(admin.ledger.settled(SINK, 2).unwrap());
    assert!(!admin.ledger.settled(SINK, 1).unwrap(), "1 is still a dead letter");
    // Replay 3: published again to its partition, then out of the dead-letter queue.
    assert_eq!(admin.replay_dead_letters(SINK, &[3], "test").await.unwrap(), [3]);
    let back = tokio::time::timeout(Duration::from_secs(10), consumer.next()).await.unwrap().unwrap();
    assert_eq!(back.envelope().message_id, 3);
    back.ack().await.unwrap();
    assert_eq!(ids(&admin.dead_letter_list(SINK, 100).await.unwrap()), [1, 4]);
    assert!(admin.purge_dead_letters(SINK, &[3], "test").await.is_err(), "3 is no dead letter any more");
    assert_eq!(
        ids(&admin.dead_letter_list(SINK, 100).await.unwrap()),
        [1, 4],
        "a failed purge takes nothing"
    );

    drop(consumer);
    // Pause and resume on RabbitMQ: the same order and nothing taken meanwhile.
    pause_then_resume_delivers_in_order(bus.clone(), &dir.path().join("pause")).await;
    bus.close().await;
    journal.close().await.unwrap();
    drop(rabbit);
}

/// The GP notification of an ANS A01 (médecin traitant in ROL ODRP) whose GP has no MSSanté address in the
/// (empty) directory: undeliverable, without any mail server. Drives pause/resume through the CLI across a
/// restart, and reads the outcome in the timeline and the undeliverable listing.
#[test]
fn pause_resume_by_cli_across_a_restart_then_undeliverable_in_timeline_and_listing() {
    let work = tempfile::tempdir().unwrap();
    let routes = work.path().join("routes");
    std::fs::create_dir_all(&routes).unwrap();
    std::fs::write(
        routes.join("gp.toml"),
        "[[route]]\nname = \"gp-events\"\ndestinations = [\"gp_notify\"]\n[route.when]\nkind = \"hl7v2\"\n\
         event_class = [\"admission\"]\n",
    )
    .unwrap();
    let toml = format!(
        "routes_dir = {routes:?}\n\
         [sinks.mss]\nkind = \"mss\"\nhost = \"127.0.0.1\"\nport = 9\nfrom = \"notifications@ch-test.mssante.fr\"\n\
         nil = \"NIL-RELAIS-TEST\"\n\
         [sinks.gp_notify]\nkind = \"notify\"\nmail_via = \"mss\"\nestablishment = \"CH de Test\"\n",
        routes = routes.display().to_string(),
    );
    let mut relais = Relais::start_with_config(&toml, &[]);
    let cli = |relais: &Relais, args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_relais"))
            .args(args)
            .args(["--url", &relais.http_url()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "relais {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        text
    };
    let sink_state = |relais: &Relais| {
        let flows = relais.get_json("/api/sinks");
        let flow = flows.as_array().unwrap().iter().find(|f| f["sink"] == SINK).cloned().unwrap();
        flow["paused"].as_bool().unwrap()
    };

    assert_eq!(cli(&relais, &["sinks", "pause", SINK]), format!("{SINK}: paused\n"));
    assert!(sink_state(&relais));
    let ready = relais.get_json("/ready");
    assert_eq!(ready["checks"]["sinks"]["detail"]["paused"], serde_json::json!([SINK]), "{ready}");
    let metrics = String::from_utf8(relais.get("/metrics").1).unwrap();
    assert!(metrics.contains(&format!("relais_sink_paused{{sink=\"{SINK}\"}} 1")), "{metrics}");
    assert!(metrics.contains("relais_sink_paused{sink=\"mss\"} 0"), "{metrics}");
    let listed = cli(&relais, &["sinks", "list"]);
    assert!(listed.lines().any(|l| l.starts_with(SINK) && l.contains("paused")), "{listed}");
    let console = String::from_utf8(relais.get("/console").1).unwrap();
    assert!(console.contains(&format!("id=\"resume-{SINK}\"")), "the console offers Resume");

    let a01 = std::fs::read(
        test_messages().join("ans/ans-consent_A01_ConsentementConsultation_NonOppositionAlimentation.er7"),
    )
    .unwrap();
    let ack = String::from_utf8_lossy(&mllp_send(relais.mllp_addr(), &a01)).into_owned();
    assert!(ack.contains("MSA|AA"), "{ack}");
    let id = relais.accepted(1)[0]["id"].as_u64().unwrap();
    let timeline = |relais: &Relais| relais.get_json(&format!("/api/messages/{id}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while timeline(&relais)["sinks"][0]["published"] != true {
        assert!(Instant::now() < deadline, "not published: {}", timeline(&relais));
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(timeline(&relais)["sinks"][0]["outcome"], serde_json::Value::Null, "paused: not taken");

    let audit = relais.log();
    assert!(
        audit.lines().any(|l| l.contains("relais::audit") && l.contains("sink pause") && l.contains(SINK)),
        "{audit}"
    );
    // Still paused after a restart.
    relais.stop();
    relais.restart();
    assert!(sink_state(&relais), "the pause survives a restart");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(timeline(&relais)["sinks"][0]["outcome"], serde_json::Value::Null);

    // Resumed from the console's button (a form POST, redirected back to the console).
    let resumed = http().post(format!("{}/console/sinks/{SINK}/resume", relais.http_url())).send().unwrap();
    assert_eq!(resumed.status().as_u16(), 200);
    assert!(resumed.text().unwrap().contains(&format!("Sink {SINK} resumed")));
    assert!(!sink_state(&relais));
    let listed = cli(&relais, &["sinks", "list"]);
    assert!(listed.lines().any(|l| l.starts_with(SINK) && l.contains("running")), "{listed}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let step = loop {
        let step = timeline(&relais)["sinks"][0].clone();
        if !step["outcome"].is_null() {
            break step;
        }
        assert!(Instant::now() < deadline, "no outcome after resume; log:\n{}", relais.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(step["outcome"], "undeliverable", "{step}");
    assert_eq!(step["delivered"], false);
    assert_eq!(step["attempts"], 1);
    assert_eq!(step["reason"], "no MSSanté address for the médecin traitant");
    assert_eq!(step["history"].as_array().map(Vec::len), Some(1), "{step}");
    assert_eq!(step["history"][0]["outcome"], "undeliverable");

    let listing: Vec<serde_json::Value> =
        serde_json::from_str(&cli(&relais, &["sinks", "undeliverable", "--json"])).unwrap();
    assert_eq!(listing.len(), 1, "{listing:?}");
    assert_eq!((listing[0]["message_id"].as_u64(), listing[0]["sink"].as_str()), (Some(id), Some(SINK)));
    let table = cli(&relais, &["sinks", "undeliverable", "--sink", SINK]);
    assert!(table.contains("no MSSanté address") && table.contains(&id.to_string()), "{table}");
    assert!(cli(&relais, &["sinks", "undeliverable", "--sink", "mss"]).lines().count() == 1, "header only");
    let console = String::from_utf8(relais.get("/console").1).unwrap();
    let section = &console[console.find("id=\"undeliverable\"").expect("undeliverable table")..];
    assert!(section.contains(&format!("/console/messages/{id}\"")) && section.contains("no MSSanté address"));
    let page = String::from_utf8(relais.get(&format!("/console/messages/{id}")).1).unwrap();
    assert!(page.contains("undeliverable") && page.contains("no MSSanté address"), "{page}");
    assert!(page.contains("id=\"attempts\""), "{page}");
    let (status, _) = relais.get("/api/undeliverable?sink=nope");
    assert_eq!(status, 404);
    let refused = http().post(format!("{}/api/sinks/nope/pause", relais.http_url())).send().unwrap();
    assert_eq!(refused.status().as_u16(), 404);

    let log = relais.log();
    let audit: Vec<&str> = log.lines().filter(|l| l.contains("relais::audit")).collect();
    assert!(audit.iter().any(|l| l.contains("sink resume") && l.contains(SINK)), "{log}");
    let metrics = String::from_utf8(relais.get("/metrics").1).unwrap();
    assert!(metrics.contains(&format!("relais_sink_paused{{sink=\"{SINK}\"}} 0")), "{metrics}");
}

/// A sink retrying past the bus's `max_attempts` (below its own policy's) ends `failed` in the ledger with
/// the last error, like the dead letter the bus makes of it: the dead-letter listing shows why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_past_the_bus_limit_are_recorded_failed_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let settings = BusSettings {
        partitions: 1,
        max_attempts: 3,
        retry_delay_ms: 10,
        max_retry_delay_ms: 20,
        ..BusSettings::default()
    };
    let bus = Bus::open(&settings, dir.path(), &[SINK.to_string()]).await.unwrap();
    let journal = Journal::open(JournalConfig::new(dir.path().join("journal.redb"))).unwrap();
    let admin = admin(journal.clone(), bus.clone(), dir.path());
    let (trigger, stop) = relais::shutdown::channel();
    let policy = RetryPolicy { max_attempts: 10, jitter: false, ..RetryPolicy::default() };
    let runner = tokio::spawn(relais::sinks::run_sink_with(
        bus.clone(),
        SINK.into(),
        policy,
        admin.ledger.clone(),
        admin.pauses.clone(),
        stop,
        |_env: Envelope, attempt: u32| async move { Outcome::retry(format!("SMTP 421 busy ({attempt})")) },
    ));
    bus.publish(&[envelope(7, "P")]).await.unwrap();
    let ledger = admin.ledger.clone();
    eventually("the give-up", Duration::from_secs(20), || {
        ledger.outcome(SINK, 7).unwrap().is_some_and(|r| r.outcome.as_str() == "failed")
    })
    .await;
    trigger.fire();
    runner.await.unwrap().unwrap();

    let record = ledger.outcome(SINK, 7).unwrap().unwrap();
    assert_eq!(record.attempts, 3);
    assert!(record.outcome.reason().unwrap().starts_with("SMTP 421 busy (3)"), "{record:?}");
    let history: Vec<&str> = ledger.history(SINK, 7).unwrap().iter().map(|r| r.outcome.as_str()).collect();
    assert_eq!(history, ["retry", "retry", "failed"]);
    let listed = admin.dead_letter_list(SINK, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].message_id, listed[0].attempts), (7, Some(3)));
    assert!(listed[0].reason.as_deref().unwrap().contains("gave up after 3 attempts"));
    journal.close().await.unwrap();
}
