//! Unit tests of the journal operations the admin side relies on: search, replay, retention.

use bytes::Bytes;
use jiff::{SignedDuration, Timestamp};

use super::api::{SearchQuery, Timeline};
use crate::config::JournalSettings;
use crate::journal::{
    Appended, Delivery, HeaderFields, Journal, JournalConfig, NewEntry, Progress, ReplayFrom, Stage, State,
    Transport,
};

fn entry(facility: &str, control_id: &str, when: Timestamp) -> NewEntry {
    NewEntry {
        received_at: when,
        transport: Transport::Mllp,
        peer: "127.0.0.1:40000".into(),
        raw: Bytes::from(format!("MSH|^~\\&|GAM|{facility}|||||ADT^A01|{control_id}|P|2.5")),
        charset: None,
        header: Some(HeaderFields {
            sending_application: "GAM".into(),
            sending_facility: facility.into(),
            message_type: "ADT^A01^ADT_A01".into(),
            control_id: control_id.into(),
            version: "2.5".into(),
        }),
        state: State::Received,
        reason: None,
        kind: crate::facts::MessageKind::Hl7v2,
    }
}

async fn append(journal: &Journal, entry: NewEntry) -> u64 {
    match journal.append(entry).await.unwrap() {
        Appended::Stored { id } => id,
        other => panic!("not stored: {other:?}"),
    }
}

/// Maps, routes to `sink` for `patient` and publishes entry `id`.
async fn publish(journal: &Journal, id: u64, patient: &str, sink: &str) {
    let progress = Progress {
        partition_key: crate::bus::partition_key(patient),
        event_class: Some(crate::facts::EventClass::Admission),
        routes: vec!["adt".into()],
        deliveries: vec![Delivery { destination: sink.into(), route: "adt".into(), published: false }],
        ..Progress::default()
    };
    let stages = vec![
        Stage::Mapped { bundle: Bytes::from_static(b"{}") },
        Stage::Routed { progress },
        Stage::Published { destinations: vec![sink.into()] },
    ];
    journal.update(id, stages).await.unwrap();
}

fn days_ago(now: Timestamp, days: i64) -> Timestamp {
    now - SignedDuration::from_hours(24 * days)
}

#[tokio::test]
async fn search_filters_by_sender_control_id_dates_event_and_hashed_patient() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(JournalConfig::new(dir.path().join("j.redb"))).unwrap();
    let now = Timestamp::now();
    let a = append(&journal, entry("CHU-A", "1001", days_ago(now, 3))).await;
    let b = append(&journal, entry("CHU-A", "1002", days_ago(now, 1))).await;
    let c = append(&journal, entry("CHU-B", "2001", now)).await;
    publish(&journal, a, "CHU-A|111", "gp").await;
    publish(&journal, b, "CHU-A|222", "gp").await;

    let admin_search = |query: SearchQuery| {
        let filter = query.filter().unwrap();
        journal.search(&filter, 100, 1000).unwrap().iter().map(|e| e.id).collect::<Vec<_>>()
    };
    let q = |f: fn(&mut SearchQuery)| {
        let mut query = SearchQuery::default();
        f(&mut query);
        query
    };
    assert_eq!(admin_search(q(|q| q.sender = Some("CHU-A".into()))), [b, a]);
    assert_eq!(admin_search(q(|q| q.control_id = Some("2001".into()))), [c]);
    assert_eq!(admin_search(q(|q| q.patient = Some("CHU-A|222".into()))), [b]);
    assert_eq!(admin_search(q(|q| q.patient = Some("CHU-A|999".into()))), Vec::<u64>::new());
    assert_eq!(admin_search(q(|q| q.state = Some("published".into()))), [b, a]);
    assert_eq!(admin_search(q(|q| q.event = Some("admission".into()))), [b, a]);
    let since = days_ago(now, 2).to_string();
    assert_eq!(admin_search(SearchQuery { since: Some(since.clone()), ..SearchQuery::default() }), [c, b]);
    let until = SearchQuery { since: Some(since), until: Some(now.to_string()), ..SearchQuery::default() };
    assert_eq!(admin_search(until), [b]);
    assert!(q(|q| q.state = Some("lost".into())).filter().is_err());
    assert!(q(|q| q.since = Some("yesterday".into())).filter().is_err());
    assert!(q(|q| q.since = Some("2026-11-01".into())).filter().is_ok());
}

#[tokio::test]
async fn replay_sends_an_entry_back_and_the_timeline_shows_each_stage() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(JournalConfig::new(dir.path().join("j.redb"))).unwrap();
    let id = append(&journal, entry("CHU-A", "1", Timestamp::now())).await;
    publish(&journal, id, "CHU-A|1", "gp").await;
    let replays = journal.replays();

    journal.replay(id, ReplayFrom::Publish).await.unwrap();
    let meta = journal.get(id).unwrap().unwrap();
    assert_eq!(meta.state, State::Routed);
    assert!(!meta.progress.as_ref().unwrap().deliveries[0].published);
    assert!(replays.has_changed().unwrap());

    journal.replay(id, ReplayFrom::Map).await.unwrap();
    let meta = journal.get(id).unwrap().unwrap();
    assert_eq!(meta.state, State::Received);
    assert!(meta.progress.is_none());
    assert_eq!(journal.unfinished(0, 10).unwrap().len(), 1, "the pipeline sees it again");

    let stages: Vec<String> = Timeline::of(meta).steps.into_iter().map(|s| s.stage).collect();
    assert_eq!(stages, ["received", "mapped", "routed", "published", "replayed", "replayed"]);
}

#[tokio::test]
async fn retention_prunes_old_published_entries_only_and_keeps_raw_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(JournalConfig::new(dir.path().join("j.redb"))).unwrap();
    let now = Timestamp::now();
    let old = append(&journal, entry("F", "1", days_ago(now, 40))).await;
    let older = append(&journal, entry("F", "2", days_ago(now, 100))).await;
    let old_unpublished = append(&journal, entry("F", "3", days_ago(now, 40))).await;
    let recent = append(&journal, entry("F", "4", days_ago(now, 2))).await;
    for id in [old, older, recent] {
        publish(&journal, id, "F|1", "gp").await;
    }
    let settings = JournalSettings {
        retention_days: 30,
        raw_retention_days: 60,
        prune_batch: 1,
        ..JournalSettings::default()
    };
    let done = super::retention::pass(&journal, &settings, now).await.unwrap();
    assert_eq!((done.entries, done.raw), (2, 1));

    assert!(journal.get(old).unwrap().is_none());
    assert!(journal.raw(old).unwrap().is_some(), "raw bytes kept 60 days");
    assert!(journal.get(older).unwrap().is_none());
    assert!(journal.raw(older).unwrap().is_none());
    assert_eq!(journal.get(old_unpublished).unwrap().unwrap().state, State::Received);
    assert_eq!(journal.get(recent).unwrap().unwrap().state, State::Published);
    let stats = journal.stats().unwrap();
    assert_eq!((stats["published"], stats["pruned"], stats["journaled"]), (1, 2, 4));

    // 30 days later the kept raw bytes go too.
    let later = now + SignedDuration::from_hours(24 * 30);
    let done = super::retention::pass(&journal, &settings, later).await.unwrap();
    assert_eq!((done.entries, done.raw), (1, 1), "recent's metadata goes, old's kept raw bytes go");
    assert!(journal.raw(old).unwrap().is_none());
    assert!(journal.get(recent).unwrap().is_none());
    assert!(journal.raw(recent).unwrap().is_some());

    let off = JournalSettings::default();
    assert!(super::retention::cutoffs(&off, now).is_none());
}

#[tokio::test]
async fn retention_waits_until_every_destination_is_done_for_good() {
    use crate::sinks::ledger::Ledger;
    use crate::sinks::retry::Outcome;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(JournalConfig::new(dir.path().join("j.redb"))).unwrap();
    let ledger = Arc::new(Ledger::open(dir.path()).unwrap());
    let now = Timestamp::now();
    // Routed to two sinks each.
    let mut ids = Vec::new();
    for n in 0..5 {
        let id = append(&journal, entry("F", &n.to_string(), days_ago(now, 40))).await;
        let progress = Progress {
            partition_key: crate::bus::partition_key("F|1"),
            routes: vec!["adt".into()],
            deliveries: ["gp", "mss"]
                .iter()
                .map(|sink| Delivery { destination: (*sink).into(), route: "adt".into(), published: false })
                .collect(),
            ..Progress::default()
        };
        let stages = vec![
            Stage::Mapped { bundle: Bytes::from_static(b"{}") },
            Stage::Routed { progress },
            Stage::Published { destinations: vec!["gp".into(), "mss".into()] },
        ];
        journal.update(id, stages).await.unwrap();
        ids.push(id);
    }
    let [both_done, one_pending, dead, purged, held] = ids[..] else { unreachable!() };
    for id in &ids {
        ledger.record_outcome("gp", *id, &Outcome::Delivered, 1).unwrap();
    }
    ledger
        .record_outcome("mss", both_done, &Outcome::Undeliverable { reason: "no address".into() }, 1)
        .unwrap();
    ledger.record_outcome("mss", one_pending, &Outcome::retry("SMTP 421"), 2).unwrap();
    ledger.record_outcome("mss", dead, &Outcome::failed("SMTP 550"), 1).unwrap();
    ledger.record_outcome("mss", purged, &Outcome::failed("SMTP 550"), 1).unwrap();
    ledger.record_purged("mss", purged).unwrap();
    ledger.record_outcome("mss", held, &Outcome::Held { reason: "identity".into() }, 1).unwrap();

    let settings = JournalSettings { retention_days: 30, prune_batch: 1, ..JournalSettings::default() };
    let done = super::retention::pass_settled(&journal, &settings, &ledger, now).await.unwrap();
    assert_eq!(done.entries, 2);
    for (id, kept) in [(both_done, false), (one_pending, true), (dead, true), (purged, false), (held, true)] {
        assert_eq!(journal.get(id).unwrap().is_some(), kept, "entry {id}");
        assert_eq!(ledger.outcome("gp", id).unwrap().is_some(), kept, "ledger outcome of {id}");
    }
    assert!(ledger.history("mss", both_done).unwrap().is_empty(), "pruned with the message");
    // Once the retried one is delivered, the next pass takes it.
    ledger.record_outcome("mss", one_pending, &Outcome::Delivered, 3).unwrap();
    let done = super::retention::pass_settled(&journal, &settings, &ledger, now).await.unwrap();
    assert_eq!(done.entries, 1);
    assert!(journal.get(one_pending).unwrap().is_none());
    assert!(journal.get(dead).unwrap().is_some() && journal.get(held).unwrap().is_some());
}

#[test]
fn search_query_debug_masks_the_patient_key() {
    let query = SearchQuery { patient: Some("CHU-A|123456".into()), ..SearchQuery::default() };
    let shown = format!("{query:?}");
    assert!(!shown.contains("123456"), "{shown}");
}

#[test]
fn raw_bytes_are_never_pruned_before_the_metadata() {
    let mut settings = crate::config::Settings::default();
    settings.journal.retention_days = 30;
    settings.journal.raw_retention_days = 10;
    let error = settings.check().unwrap_err().to_string();
    assert!(error.contains("journal.raw_retention_days"), "{error}");
    settings.journal.raw_retention_days = 0;
    assert!(settings.check().is_ok());
}

#[tokio::test]
async fn replaying_many_entries_shares_group_commits() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(JournalConfig::new(dir.path().join("j.redb"))).unwrap();
    let now = Timestamp::now();
    let mut pending = Vec::new();
    for n in 0..2000 {
        pending.push(journal.enqueue(entry("F", &n.to_string(), now)).await.unwrap());
    }
    let mut ids = Vec::new();
    for outcome in pending {
        let Appended::Stored { id } = outcome.await.unwrap() else { panic!("not stored") };
        ids.push(id);
    }
    let before = journal.commit_stats().commits;
    let started = std::time::Instant::now();
    let results = journal.replay_many(&ids, ReplayFrom::Map).await;
    eprintln!("replayed {} entries in {:?}", ids.len(), started.elapsed());
    assert!(results.iter().all(Result::is_ok));
    let commits = journal.commit_stats().commits - before;
    assert!(commits < 100, "{commits} commits for {} replays", ids.len());
    let meta = journal.get(ids[1999]).unwrap().unwrap();
    assert_eq!(meta.history.last().unwrap().stage, "replayed");
}
