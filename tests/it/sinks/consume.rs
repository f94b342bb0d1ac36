//! The consumption loop on the embedded bus: delivered once whatever the bus redelivers, transient outcomes
//! retried then delivered, permanent ones dead-lettered, every outcome in the ledger.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relais::bus::{Bus, BusSettings, Envelope};
use relais::sinks::ledger::Ledger;
use relais::sinks::retry::{Outcome, RetryPolicy};

fn envelope(id: u64, patient: &str) -> Envelope {
    crate::harness::admission_envelope("gp-notify", id, patient)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_once_retried_then_delivered_and_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let settings =
        BusSettings { partitions: 2, retry_delay_ms: 20, max_retry_delay_ms: 40, ..BusSettings::default() };
    let sinks = vec!["gp-notify".to_string()];
    let bus = Bus::open(&settings, dir.path(), &sinks).await.unwrap();
    let ledger = Arc::new(Ledger::open(dir.path()).unwrap());

    // 1: delivered; 2: published twice (a redelivery), delivered once; 3: transient twice then delivered;
    // 4: permanent failure.
    let batch =
        vec![envelope(1, "A"), envelope(2, "B"), envelope(2, "B"), envelope(3, "C"), envelope(4, "D")];
    bus.publish(&batch).await.unwrap();

    let calls: Arc<Mutex<BTreeMap<u64, u32>>> = Arc::default();
    let deliver = {
        let calls = calls.clone();
        move |env: Envelope, attempt: u32| {
            let calls = calls.clone();
            async move {
                *calls.lock().unwrap().entry(env.message_id).or_default() += 1;
                match (env.message_id, attempt) {
                    (3, 1 | 2) => Outcome::retry("SMTP 421 try later"),
                    (4, _) => Outcome::failed("SMTP 550 no such user"),
                    _ => Outcome::Delivered,
                }
            }
        }
    };
    let (trigger, stop) = relais::shutdown::channel();
    let policy = RetryPolicy { max_attempts: 5, ..RetryPolicy::default() };
    let runner = tokio::spawn(relais::sinks::run_sink(
        bus.clone(),
        "gp-notify".into(),
        policy,
        ledger.clone(),
        stop,
        deliver,
    ));

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let done = [1, 2, 3, 4]
            .iter()
            .all(|id| ledger.outcome("gp-notify", *id).unwrap().is_some_and(|r| r.outcome.is_final()));
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "not all processed: {:?}", calls.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the duplicate of 2 come through, then stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    trigger.fire();
    runner.await.unwrap().unwrap();

    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls, BTreeMap::from([(1, 1), (2, 1), (3, 3), (4, 1)]), "deliveries per journal id");
    let rec = |id| ledger.outcome("gp-notify", id).unwrap().unwrap();
    assert_eq!(rec(3).outcome, Outcome::Delivered);
    assert_eq!(rec(3).attempts, 3);
    assert_eq!(rec(4).outcome.as_str(), "failed");
    assert!(rec(4).outcome.reason().unwrap().contains("550"));
    let dead = bus.take_dead_letters("gp-notify", 10).await.unwrap();
    assert_eq!(dead.iter().map(|e| e.message_id).collect::<Vec<_>>(), vec![4]);
}
