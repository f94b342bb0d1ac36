//! Unit tests of the journal on a temporary file.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use jiff::{SignedDuration, Timestamp};

use super::*;

fn config(dir: &tempfile::TempDir) -> JournalConfig {
    JournalConfig::new(dir.path().join("journal.redb"))
}

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_750_000_000 + second).unwrap()
}

fn header(facility: &str, control_id: &str) -> HeaderFields {
    HeaderFields {
        sending_application: "GAM".into(),
        sending_facility: facility.into(),
        message_type: "ADT^A01^ADT_A01".into(),
        control_id: control_id.into(),
        version: "2.5".into(),
    }
}

fn received(facility: &str, control_id: &str, body: &[u8], when: Timestamp) -> NewEntry {
    NewEntry {
        received_at: when,
        transport: Transport::Mllp,
        peer: "127.0.0.1:40000".into(),
        raw: Bytes::copy_from_slice(body),
        charset: Some("8859/1".into()),
        header: Some(header(facility, control_id)),
        state: State::Received,
        reason: None,
        kind: crate::facts::MessageKind::Hl7v2,
    }
}

fn rejected(facility: &str, control_id: &str, body: &[u8], when: Timestamp) -> NewEntry {
    NewEntry {
        state: State::Rejected,
        reason: Some("MSH-9: Required field missing".into()),
        ..received(facility, control_id, body, when)
    }
}

fn stored_id(outcome: Appended) -> u64 {
    match outcome {
        Appended::Stored { id } => id,
        other => panic!("expected Stored, got {other:?}"),
    }
}

#[tokio::test]
async fn append_returns_increasing_ids_and_get_reads_the_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(config(&dir)).unwrap();
    let first = stored_id(journal.append(received("FAC", "1", b"MSH|one", at(0))).await.unwrap());
    let second = stored_id(journal.append(received("FAC", "2", b"MSH|two!", at(1))).await.unwrap());
    assert!(second > first);

    let meta = journal.get(second).unwrap().unwrap();
    assert_eq!(meta.id, second);
    assert_eq!(meta.size, 8);
    assert_eq!(meta.received_at, at(1));
    assert_eq!(meta.transport, Transport::Mllp);
    assert_eq!(meta.peer, "127.0.0.1:40000");
    assert_eq!(meta.charset.as_deref(), Some("8859/1"));
    assert_eq!(meta.header, Some(header("FAC", "2")));
    assert_eq!(meta.state, State::Received);
    assert_eq!(meta.reason, None);
    assert_eq!(journal.get(second + 1).unwrap(), None);
    assert_eq!(journal.raw(second + 1).unwrap(), None);
    journal.close().await.unwrap();
}

#[tokio::test]
async fn ids_continue_and_entries_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    {
        let journal = Journal::open(config(&dir)).unwrap();
        for n in 0..20 {
            let body = format!("MSH|message {n}");
            let outcome = journal.append(received("FAC", &n.to_string(), body.as_bytes(), at(n))).await;
            ids.push(stored_id(outcome.unwrap()));
        }
        // Dropped without close: the last handle going away must still leave a complete file.
    }
    let journal = Journal::open(config(&dir)).unwrap();
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(journal.raw(*id).unwrap().unwrap(), format!("MSH|message {n}").into_bytes());
        assert_eq!(journal.get(*id).unwrap().unwrap().header, Some(header("FAC", &n.to_string())));
    }
    let next = stored_id(journal.append(received("FAC", "new", b"MSH|after", at(100))).await.unwrap());
    assert!(ids.iter().all(|id| next > *id), "id {next} reused after reopen: {ids:?}");
    assert_eq!(journal.stats().unwrap()["journaled"], 21);
    journal.close().await.unwrap();
    drop(journal);

    let journal = Journal::open(config(&dir)).unwrap();
    assert_eq!(journal.raw(next).unwrap().unwrap(), b"MSH|after");
}

#[tokio::test]
async fn same_key_same_bytes_in_window_is_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(config(&dir)).unwrap();
    let original = stored_id(journal.append(received("FAC", "77", b"MSH|a", at(0))).await.unwrap());
    let again = journal.append(received("FAC", "77", b"MSH|a", at(3600))).await.unwrap();
    assert_eq!(again, Appended::Duplicate { original });
    assert_eq!(journal.stats().unwrap()["journaled"], 1);
    // Another facility with the same control id is a different message.
    stored_id(journal.append(received("OTHER", "77", b"MSH|a", at(3600))).await.unwrap());
}

#[tokio::test]
async fn same_key_other_bytes_is_a_conflict_kept_for_review() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(config(&dir)).unwrap();
    let original = stored_id(journal.append(received("FAC", "77", b"MSH|a", at(0))).await.unwrap());
    let outcome = journal.append(received("FAC", "77", b"MSH|b", at(10))).await.unwrap();
    let Appended::Conflict { id, original: clashes_with } = outcome else {
        panic!("expected Conflict, got {outcome:?}")
    };
    assert_eq!(clashes_with, original);
    let meta = journal.get(id).unwrap().unwrap();
    assert_eq!(meta.state, State::Rejected);
    assert!(meta.reason.unwrap().contains(&original.to_string()));
    assert_eq!(journal.raw(id).unwrap().unwrap(), b"MSH|b");
    // The key still points at the original: resending it is a duplicate of the original.
    let resent = journal.append(received("FAC", "77", b"MSH|a", at(20))).await.unwrap();
    assert_eq!(resent, Appended::Duplicate { original });
}

#[tokio::test]
async fn outside_the_window_the_key_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = JournalConfig { dedup_window: Duration::from_secs(60), ..config(&dir) };
    let journal = Journal::open(cfg).unwrap();
    let first = stored_id(journal.append(received("FAC", "9", b"MSH|same", at(0))).await.unwrap());
    let inside = journal.append(received("FAC", "9", b"MSH|same", at(60))).await.unwrap();
    assert_eq!(inside, Appended::Duplicate { original: first });

    let later = stored_id(journal.append(received("FAC", "9", b"MSH|same", at(61))).await.unwrap());
    assert_ne!(later, first);
    // The index now points at the newer entry: its window starts from it.
    let resent = journal.append(received("FAC", "9", b"MSH|same", at(100))).await.unwrap();
    assert_eq!(resent, Appended::Duplicate { original: later });
    let reused = journal.append(received("FAC", "9", b"MSH|other", at(200))).await.unwrap();
    assert!(matches!(reused, Appended::Stored { .. }), "{reused:?}");
}

#[tokio::test]
async fn rejected_entries_take_no_part_in_dedup() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(config(&dir)).unwrap();
    let refused = stored_id(journal.append(rejected("FAC", "5", b"MSH|x", at(0))).await.unwrap());
    let refused_again = stored_id(journal.append(rejected("FAC", "5", b"MSH|x", at(1))).await.unwrap());
    assert_ne!(refused, refused_again);
    let accepted = journal.append(received("FAC", "5", b"MSH|x", at(2))).await.unwrap();
    assert!(matches!(accepted, Appended::Stored { .. }), "{accepted:?}");
    // A headerless entry cannot be deduplicated either.
    let headerless = NewEntry { header: None, ..received("FAC", "5", b"MSH|x", at(3)) };
    assert!(matches!(journal.append(headerless).await.unwrap(), Appended::Stored { .. }));
}

#[tokio::test]
async fn stats_count_every_state() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(config(&dir)).unwrap();
    let empty = journal.stats().unwrap();
    assert_eq!(
        empty.len(),
        State::ALL.len() + 3,
        "every state, `journaled`, `accepted` and `pruned`: {empty:?}"
    );
    assert!(empty.values().all(|count| *count == 0), "{empty:?}");

    for n in 0..5 {
        journal.append(received("FAC", &n.to_string(), b"MSH|r", at(n))).await.unwrap();
    }
    journal.append(received("FAC", "0", b"MSH|r", at(9))).await.unwrap(); // duplicate: not counted
    journal.append(received("FAC", "1", b"MSH|conflict", at(9))).await.unwrap(); // conflict: rejected
    journal.append(rejected("FAC", "x", b"garbage", at(9))).await.unwrap();

    let stats = journal.stats().unwrap();
    assert_eq!(stats["received"], 5);
    assert_eq!(stats["rejected"], 2);
    assert_eq!(stats["journaled"], 7);
    assert_eq!(stats["accepted"], 5);
}

#[tokio::test]
async fn list_is_newest_first_with_filter_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(config(&dir)).unwrap();
    let mut received_ids = Vec::new();
    let mut rejected_ids = Vec::new();
    for n in 0..10 {
        if n % 3 == 0 {
            let id = stored_id(journal.append(rejected("FAC", &n.to_string(), b"bad", at(n))).await.unwrap());
            rejected_ids.push(id);
        } else {
            let id =
                stored_id(journal.append(received("FAC", &n.to_string(), b"MSH|", at(n))).await.unwrap());
            received_ids.push(id);
        }
    }
    let all: Vec<u64> = journal.list(None, 100).unwrap().iter().map(|meta| meta.id).collect();
    let mut expected: Vec<u64> = received_ids.iter().chain(&rejected_ids).copied().collect();
    expected.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(all, expected);

    let newest_three: Vec<u64> = journal.list(None, 3).unwrap().iter().map(|meta| meta.id).collect();
    assert_eq!(newest_three, expected[..3]);

    let refused = journal.list(Some(State::Rejected), 100).unwrap();
    assert!(refused.iter().all(|meta| meta.state == State::Rejected));
    let refused_ids: Vec<u64> = refused.iter().map(|meta| meta.id).collect();
    assert_eq!(refused_ids, rejected_ids.iter().rev().copied().collect::<Vec<_>>());

    let two_received: Vec<u64> =
        journal.list(Some(State::Received), 2).unwrap().iter().map(|meta| meta.id).collect();
    assert_eq!(two_received, received_ids.iter().rev().take(2).copied().collect::<Vec<_>>());
    assert!(journal.list(None, 0).unwrap().is_empty());
}

#[tokio::test]
async fn raw_bytes_come_back_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(config(&dir)).unwrap();
    let mut body =
        b"MSH|^~\\&|GAM|FAC|||20250101||ADT^A01|1|P|2.5|||||FRA|8859/1\rPID|||1||M\xe9lanie^Fran\xe7ois\r"
            .to_vec();
    body.extend([0x00, 0xff, 0xfe, 0x0b, 0x1c, 0x0d]);
    let id = stored_id(journal.append(received("FAC", "1", &body, at(0))).await.unwrap());
    assert_eq!(journal.raw(id).unwrap().unwrap(), body);
    assert_eq!(journal.get(id).unwrap().unwrap().size, body.len() as u64);
}

#[tokio::test]
async fn append_after_close_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(config(&dir)).unwrap();
    let id = stored_id(journal.append(received("FAC", "1", b"MSH|", at(0))).await.unwrap());
    journal.close().await.unwrap();
    let late = journal.append(received("FAC", "2", b"MSH|", at(1))).await;
    assert!(matches!(late, Err(Error::Closed)), "{late:?}");
    journal.close().await.unwrap();
    // Reads still work on a closed journal.
    assert_eq!(journal.raw(id).unwrap().unwrap(), b"MSH|");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_get_distinct_ids_in_grouped_commits() {
    const TASKS: usize = 16;
    const PER_TASK: usize = 500;
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(config(&dir)).unwrap();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let journal = journal.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(PER_TASK);
            for n in 0..PER_TASK {
                let control_id = format!("{task}-{n}");
                let body = format!("MSH|{control_id}");
                let when = Timestamp::now() + SignedDuration::from_millis(n as i64);
                let outcome = journal.append(received("FAC", &control_id, body.as_bytes(), when)).await;
                ids.push((stored_id(outcome.unwrap()), body));
            }
            ids
        }));
    }
    let mut seen = HashSet::new();
    let mut all = Vec::new();
    for task in tasks {
        for (id, body) in task.await.unwrap() {
            assert!(seen.insert(id), "id {id} given twice");
            all.push((id, body));
        }
    }
    assert_eq!(seen.len(), TASKS * PER_TASK);

    let stats = journal.commit_stats();
    assert_eq!(stats.entries, (TASKS * PER_TASK) as u64);
    assert!(stats.commits * 4 < stats.entries, "commits did not group: {stats:?}");
    journal.close().await.unwrap();
    drop(journal);

    let journal = Journal::open(config(&dir)).unwrap();
    assert_eq!(journal.stats().unwrap()["journaled"], (TASKS * PER_TASK) as u64);
    for (id, body) in all.iter().step_by(97) {
        assert_eq!(journal.raw(*id).unwrap().unwrap(), body.as_bytes());
    }
}

#[tokio::test]
async fn identical_appends_queued_together_deduplicate() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(config(&dir)).unwrap();
    // Queued before any is answered: they are decided in one or two group commits, before redb has any.
    let first = journal.enqueue(received("FAC", "1", b"MSH|same", at(0))).await.unwrap();
    let second = journal.enqueue(received("FAC", "1", b"MSH|same", at(0))).await.unwrap();
    let third = journal.enqueue(received("FAC", "1", b"MSH|changed", at(0))).await.unwrap();
    let first = stored_id(first.await.unwrap());
    assert_eq!(second.await.unwrap(), Appended::Duplicate { original: first });
    let third = third.await.unwrap();
    assert!(matches!(third, Appended::Conflict { original, .. } if original == first), "{third:?}");
    assert_eq!(journal.stats().unwrap()["journaled"], 2);
}

fn routed_to(destinations: &[&str]) -> Stage {
    Stage::Routed {
        progress: Progress {
            partition_key: "k".into(),
            routes: vec!["r".into()],
            deliveries: destinations
                .iter()
                .map(|d| Delivery { destination: (*d).into(), route: "r".into(), published: false })
                .collect(),
            ..Progress::default()
        },
    }
}

#[tokio::test]
async fn pipeline_stages_move_states_counters_and_keep_the_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(config(&dir)).unwrap();
    let mut ids = Vec::new();
    for n in 0..4 {
        let body = format!("MSH|{n}");
        ids.push(stored_id(
            journal.append(received("FAC", &n.to_string(), body.as_bytes(), at(n))).await.unwrap(),
        ));
    }
    assert_eq!(*journal.committed().borrow(), ids[3]);
    let bundle = Bytes::from_static(b"{\"resourceType\":\"Bundle\"}");
    journal
        .update(ids[0], vec![Stage::Mapped { bundle: bundle.clone() }, routed_to(&["a", "b"])])
        .await
        .unwrap();
    journal.update(ids[1], vec![Stage::Failed { reason: "PID-3: missing".into() }]).await.unwrap();
    journal.update(ids[2], vec![Stage::Mapped { bundle: bundle.clone() }, routed_to(&[])]).await.unwrap();

    let pending: Vec<u64> = journal.unfinished(0, 10).unwrap().iter().map(|u| u.meta.id).collect();
    assert_eq!(pending, [ids[0], ids[3]]);
    let first = &journal.unfinished(0, 1).unwrap()[0];
    assert_eq!(first.bundle.as_deref(), Some(bundle.as_ref()));
    assert_eq!(first.raw, b"MSH|0");

    journal.update(ids[0], vec![Stage::Published { destinations: vec!["a".into()] }]).await.unwrap();
    assert_eq!(journal.get(ids[0]).unwrap().unwrap().state, State::Routed);
    journal.update(ids[0], vec![Stage::Published { destinations: vec!["b".into()] }]).await.unwrap();
    let meta = journal.get(ids[0]).unwrap().unwrap();
    assert_eq!(meta.state, State::Published);
    assert!(meta.progress.unwrap().deliveries.iter().all(|d| d.published));

    let failed = journal.get(ids[1]).unwrap().unwrap();
    assert_eq!((failed.state, failed.reason.as_deref()), (State::Failed, Some("PID-3: missing")));
    assert_eq!(journal.raw(ids[1]).unwrap().unwrap(), b"MSH|1");

    let stats = journal.stats().unwrap();
    let counts: Vec<u64> = ["received", "published", "failed", "unrouted", "routed", "journaled"]
        .iter()
        .map(|k| stats[*k])
        .collect();
    assert_eq!(counts, [1, 1, 1, 1, 0, 4]);
    assert_eq!(journal.list(Some(State::Unrouted), 10).unwrap()[0].id, ids[2]);
    assert!(matches!(journal.update(999, vec![]).await, Err(Error::Unknown(999))));
}

/// Copies the journal's files (redb file and WAL directory) as they are on disk now: what a `kill -9`
/// would leave behind.
fn crash_image(from: &tempfile::TempDir, wal: bool) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    std::fs::copy(from.path().join("journal.redb"), to.path().join("journal.redb")).unwrap();
    if wal {
        std::fs::create_dir(to.path().join("journal-wal")).unwrap();
        for file in std::fs::read_dir(from.path().join("journal-wal")).unwrap() {
            let file = file.unwrap();
            // A spare segment being prepared (`.tmp`, renamed when whole) is what a crash leaves half made:
            // recovery deletes it, so the image does not need it (and it may be gone by now).
            if file.path().extension().is_some_and(|e| e == "tmp") {
                continue;
            }
            std::fs::copy(file.path(), to.path().join("journal-wal").join(file.file_name())).unwrap();
        }
    }
    to
}

#[tokio::test]
async fn a_crash_before_any_checkpoint_loses_nothing_answered() {
    let dir = tempfile::tempdir().unwrap();
    let never = JournalConfig { checkpoint_interval: Duration::from_secs(3600), ..config(&dir) };
    let journal = Journal::open(never).unwrap();
    let mut ids = Vec::new();
    for n in 0..30 {
        let body = format!("MSH|message {n}");
        ids.push(stored_id(
            journal.append(received("FAC", &n.to_string(), body.as_bytes(), at(n))).await.unwrap(),
        ));
    }
    let bundle = Bytes::from_static(b"{\"resourceType\":\"Bundle\"}");
    journal.update(ids[0], vec![Stage::Mapped { bundle: bundle.clone() }, routed_to(&["a"])]).await.unwrap();
    journal.update(ids[1], vec![Stage::Failed { reason: "PID-3: missing".into() }]).await.unwrap();
    journal.update(ids[0], vec![Stage::Published { destinations: vec!["a".into()] }]).await.unwrap();
    let conflict = journal.append(received("FAC", "7", b"MSH|other bytes", at(40))).await.unwrap();
    let Appended::Conflict { id: conflict, original } = conflict else { panic!("{conflict:?}") };
    assert_eq!(original, ids[7]);
    let before: Vec<EntryMeta> = (1..=conflict).map(|id| journal.get(id).unwrap().unwrap()).collect();
    let stats = journal.stats().unwrap();

    // redb alone holds none of it (no checkpoint since open): only the log can bring it back.
    let without_log = crash_image(&dir, false);
    let bare = Journal::open(config(&without_log)).unwrap();
    assert_eq!(bare.stats().unwrap()["journaled"], 0);

    let image = crash_image(&dir, true);
    let recovered = Journal::open(config(&image)).unwrap();
    let after: Vec<EntryMeta> = (1..=conflict).map(|id| recovered.get(id).unwrap().unwrap()).collect();
    assert_eq!(after, before, "entries differ after replay");
    assert_eq!(recovered.stats().unwrap(), stats);
    assert_eq!(recovered.get(ids[0]).unwrap().unwrap().state, State::Published);
    assert_eq!(recovered.bundle(ids[0]).unwrap().as_deref(), Some(bundle.as_ref()));
    assert_eq!(recovered.raw(ids[29]).unwrap().unwrap(), b"MSH|message 29");
    // Deduplication and ids carry on from the log.
    let again = recovered.append(received("FAC", "5", b"MSH|message 5", at(50))).await.unwrap();
    assert_eq!(again, Appended::Duplicate { original: ids[5] });
    let next = stored_id(recovered.append(received("FAC", "new", b"MSH|new", at(51))).await.unwrap());
    assert_eq!(next, conflict + 1, "ids are not dense after recovery");
    recovered.close().await.unwrap();
    drop(recovered);

    // Replayed once, checkpointed: opening again neither loses nor doubles anything.
    let reopened = Journal::open(config(&image)).unwrap();
    assert_eq!(reopened.stats().unwrap()["journaled"], stats["journaled"] + 1);
    assert_eq!(reopened.get(next).unwrap().unwrap().header, Some(header("FAC", "new")));
    journal.close().await.unwrap();
}

#[tokio::test]
async fn a_torn_last_batch_is_dropped_and_its_ids_given_again() {
    let dir = tempfile::tempdir().unwrap();
    let never = JournalConfig { checkpoint_interval: Duration::from_secs(3600), ..config(&dir) };
    let journal = Journal::open(never).unwrap();
    for n in 0..5 {
        stored_id(journal.append(received("FAC", &n.to_string(), b"MSH|kept", at(n))).await.unwrap());
    }
    let last = stored_id(journal.append(received("FAC", "torn", b"MSH|torn", at(9))).await.unwrap());
    let image = crash_image(&dir, true);
    journal.close().await.unwrap();

    // The last record's tail never reached the disk: find it (it holds the raw bytes) and zero it.
    let mut torn = false;
    for file in std::fs::read_dir(image.path().join("journal-wal")).unwrap() {
        let path = file.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(8).position(|w| w == b"MSH|torn") {
            bytes[at..].iter_mut().for_each(|b| *b = 0);
            std::fs::write(&path, &bytes).unwrap();
            torn = true;
        }
    }
    assert!(torn, "the last record was not found in the log");
    let recovered = Journal::open(config(&image)).unwrap();
    assert_eq!(recovered.stats().unwrap()["journaled"], 5);
    assert_eq!(recovered.get(last).unwrap(), None);
    let again = stored_id(recovered.append(received("FAC", "torn", b"MSH|torn", at(9))).await.unwrap());
    assert_eq!(again, last);
}

#[tokio::test]
async fn dedup_and_updates_see_appends_not_yet_in_redb() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(config(&dir)).unwrap();
    let applied = stored_id(journal.append(received("FAC", "A", b"MSH|a", at(0))).await.unwrap());
    assert_eq!(journal.get(applied).unwrap().unwrap().state, State::Received);

    // While this write transaction is open the applier cannot put anything in redb.
    let hold = journal.inner.db.begin_write().unwrap();
    let logged = stored_id(journal.append(received("FAC", "B", b"MSH|b", at(1))).await.unwrap());
    assert_eq!(logged, applied + 1);
    assert!(journal.inner.marks.applied_id() < logged, "the test did not hold the applier back");
    let again = journal.append(received("FAC", "B", b"MSH|b", at(2))).await.unwrap();
    assert_eq!(again, Appended::Duplicate { original: logged });
    let changed = journal.append(received("FAC", "B", b"MSH|b changed", at(3))).await.unwrap();
    assert_eq!(changed, Appended::Conflict { id: logged + 1, original: logged });
    let old = journal.append(received("FAC", "A", b"MSH|a", at(4))).await.unwrap();
    assert_eq!(old, Appended::Duplicate { original: applied });
    journal.update(logged, vec![Stage::Failed { reason: "no PID".into() }]).await.unwrap();
    assert!(matches!(journal.update(logged + 2, vec![]).await, Err(Error::Unknown(id)) if id == logged + 2));
    drop(hold);

    let entry = journal.get(logged).unwrap().unwrap();
    assert_eq!((entry.state, entry.reason.as_deref()), (State::Failed, Some("no PID")));
    let stats = journal.stats().unwrap();
    assert_eq!((stats["journaled"], stats["rejected"], stats["failed"]), (3, 1, 1));
}

#[tokio::test]
async fn deferred_stages_wait_for_the_next_sync_and_are_replayed_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let never = JournalConfig { checkpoint_interval: Duration::from_secs(3600), ..config(&dir) };
    let journal = Journal::open(never).unwrap();
    let first = stored_id(journal.append(received("FAC", "1", b"MSH|one", at(0))).await.unwrap());
    assert_eq!(journal.commit_stats().syncs, 1);

    // A pipeline stage is answered once logged, with no fdatasync of its own...
    let bundle = Bytes::from_static(b"{\"resourceType\":\"Bundle\"}");
    let stages = vec![Stage::Mapped { bundle: bundle.clone() }, routed_to(&["a"])];
    journal.enqueue_update(first, stages, Flush::Deferred).await.unwrap().await.unwrap().unwrap();
    assert_eq!(journal.commit_stats().syncs, 1, "a deferred stage paid for an fdatasync");
    assert_eq!(journal.get(first).unwrap().unwrap().state, State::Routed);

    // ...the next append's sync covers it, and the log replays both in order.
    let second = stored_id(journal.append(received("FAC", "2", b"MSH|two", at(1))).await.unwrap());
    assert_eq!(journal.commit_stats().syncs, 2);
    let recovered = Journal::open(config(&crash_image(&dir, true))).unwrap();
    assert_eq!(recovered.get(first).unwrap().unwrap().state, State::Routed);
    assert_eq!(recovered.bundle(first).unwrap().as_deref(), Some(bundle.as_ref()));
    assert_eq!(recovered.get(second).unwrap().unwrap().state, State::Received);

    // An operator's replay is synced before it is answered.
    journal.replay(first, ReplayFrom::Map).await.unwrap();
    assert_eq!(journal.commit_stats().syncs, 3);

    // A deferred stage left last is synced when the journal closes.
    let stage = vec![Stage::Failed { reason: "PID-3: missing".into() }];
    journal.enqueue_update(second, stage, Flush::Deferred).await.unwrap().await.unwrap().unwrap();
    journal.close().await.unwrap();
    drop(journal);
    let reopened = Journal::open(config(&dir)).unwrap();
    assert_eq!(reopened.get(second).unwrap().unwrap().state, State::Failed);
}
