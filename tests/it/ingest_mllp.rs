//! MLLP ingest: every ANS sample is accepted, pipelining keeps ACK order, concurrent connections, segment
//! ends, de-duplication, framing faults, size limit and graceful stop.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::harness::*;

/// The harness itself: a server starts, answers one sample with AA, and stops cleanly on SIGTERM.
#[test]
fn harness_starts_answers_and_stops() {
    let mut relais = Relais::start();
    let message = sample("ans/ans-sgl_A03_sortie.er7");
    let ack = Ack::parse(&mllp_send(relais.mllp_addr(), &message));
    assert_eq!(ack.code(), "AA", "{:?}", String::from_utf8_lossy(&ack.raw));
    assert_eq!(ack.acked_id(), msh_field(&message, 10));
    let status = relais.stop();
    assert!(status.success(), "exit status {status}; log:\n{}", relais.log());
    assert!(!relais.data_dir().join("listeners.json").exists(), "listeners.json removed on a clean stop");
}

/// Item 3 and the first "Tests" bullet: each public ANS sample gets AA over MLLP, the ACK names it in MSA-2,
/// and the journal holds it as `received` with its MSH fields and exact size. No patient data reaches the log.
#[test]
fn every_ans_sample_gets_aa() {
    let files = samples_in("ans");
    assert!(files.len() >= 12, "the ANS samples are in test-messages/ans/");
    let groups = groups_without_shared_control_ids(&files);
    assert_eq!(groups.len(), 2, "exactly one control id is shared in the ANS corpus");
    for group in groups {
        let mut relais = Relais::start();
        let mut client = MllpClient::connect(relais.mllp_addr());
        for file in &group {
            let message = std::fs::read(file).unwrap();
            let ack = client.exchange(&message);
            assert_eq!(ack.code(), "AA", "{}: {:?}", file.display(), String::from_utf8_lossy(&ack.raw));
            assert_eq!(ack.acked_id(), msh_field(&message, 10), "{}", file.display());
            assert!(!ack.has("ERR"), "{}: an AA has no ERR", file.display());
            // MSH-3/4 and MSH-5/6 swapped.
            assert_eq!(ack.field("MSH", 5), msh_field(&message, 3));
            assert_eq!(ack.field("MSH", 6), msh_field(&message, 4));
            assert_eq!(ack.field("MSH", 3), msh_field(&message, 5));
            assert_eq!(ack.field("MSH", 4), msh_field(&message, 6));
            assert_ne!(ack.field("MSH", 10), msh_field(&message, 10), "the ACK has its own MSH-10");
            let trigger = msh_field(&message, 9).split('^').nth(1).unwrap_or_default().to_string();
            assert_eq!(ack.field("MSH", 9), format!("ACK^{trigger}^ACK"), "{}", file.display());
        }
        let stats = relais.stats();
        assert_eq!(stats["journaled"], group.len() as u64);
        assert_eq!(stats["rejected"], 0);
        let listed = relais.accepted(100);
        for file in &group {
            let message = std::fs::read(file).unwrap();
            let entry = listed
                .iter()
                .find(|m| m["control_id"] == msh_field(&message, 10).as_str())
                .unwrap_or_else(|| panic!("{} is journaled", file.display()));
            assert_eq!(entry["message_type"], msh_field(&message, 9).as_str());
            assert_eq!(entry["sending_facility"], msh_field(&message, 4).as_str());
            assert_eq!(entry["charset"], "UNICODE UTF-8");
            assert_eq!(entry["size"], message.len() as u64);
            assert_eq!(entry["transport"], "mllp");
        }
        relais.stop();
        let log = relais.log();
        for secret in ["PAT-TROIS", "279035121518989", "19790328", "Breteuil"] {
            assert!(!log.contains(secret), "patient data `{secret}` in the info log:\n{log}");
        }
    }
}

/// Item 8, the ANS corpus case: `CHU-X` + `3975` sent twice with different bytes. The second gets AE with
/// ERR 205 at MSH-10 and is kept as `rejected` for review; the first stays `received`.
#[test]
fn same_control_id_different_bytes_is_ae_and_kept_for_review() {
    let relais = Relais::start();
    let first = sample("ans/ans-sgl_A01_admission.er7");
    let second = sample("ans/ans-consent_A01_ConsentementConsultation_NonOppositionAlimentation.er7");
    assert_eq!(msh_field(&first, 4), msh_field(&second, 4));
    assert_eq!(msh_field(&first, 10), msh_field(&second, 10));
    assert_ne!(first, second);

    let mut client = MllpClient::connect(relais.mllp_addr());
    assert_eq!(client.exchange(&first).code(), "AA");
    let ack = client.exchange(&second);
    assert_eq!(ack.code(), "AE", "{:?}", String::from_utf8_lossy(&ack.raw));
    assert_eq!(ack.acked_id(), "3975");
    assert_eq!(ack.err_code(), "205");
    assert_eq!(ack.err_location(), "MSH^1^10");
    assert!(!ack.err_text().is_empty(), "the ERR says why");

    let stats = relais.stats();
    assert_eq!((stats["journaled"], stats["accepted"], stats["rejected"]), (2, 1, 1));
    let rejected = relais.messages("rejected", 10);
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["control_id"], "3975");
    assert_eq!(rejected[0]["size"], second.len() as u64, "the second message is kept whole");
    assert!(rejected[0]["reason"].as_str().is_some_and(|r| !r.is_empty()), "{:?}", rejected[0]);
}

/// Item 8: a resent message (same bytes) gets AA again and makes no second journal entry, on the same or
/// on a new connection.
#[test]
fn resend_is_acknowledged_once_journaled() {
    let relais = Relais::start();
    let message = adt("RESEND-1");
    let mut client = MllpClient::connect(relais.mllp_addr());
    assert_eq!(client.exchange(&message).code(), "AA");
    assert_eq!(client.exchange(&message).code(), "AA");
    let again = Ack::parse(&mllp_send(relais.mllp_addr(), &message));
    assert_eq!((again.code(), again.acked_id()), ("AA".to_string(), "RESEND-1".to_string()));
    let stats = relais.stats();
    assert_eq!((stats["journaled"], stats["rejected"]), (1, 0));
}

/// Item 8: the de-duplication window is a setting: within it a resend is not stored again, after it the
/// same message is stored anew.
#[test]
fn dedup_window_is_configurable() {
    let window = Duration::from_secs(2);
    let relais = Relais::start_with(&[("RELAIS__JOURNAL__DEDUP_WINDOW_SECS", "2")]);
    let message = adt("WINDOW-1");
    let mut client = MllpClient::connect(relais.mllp_addr());
    // The server receives the first copy after `start` and each resend before its ACK comes back, so
    // `start.elapsed()` at an ACK bounds the gap the server measured from above.
    let start = Instant::now();
    assert_eq!(client.exchange(&message).code(), "AA");
    assert_eq!(client.exchange(&message).code(), "AA");
    if start.elapsed() < window {
        assert_eq!(relais.stats()["journaled"], 1, "a resend within the window is not stored");
    }
    eventually("the resend after the window is stored", || {
        assert_eq!(client.exchange(&message).code(), "AA");
        let answered_at = start.elapsed();
        let journaled = relais.stats()["journaled"];
        if journaled == 1 {
            return None;
        }
        assert!(answered_at >= window, "stored again after {answered_at:?}, inside the {window:?} window");
        Some(journaled)
    });
    assert_eq!(relais.stats()["journaled"], 2);
}

/// Item 2: `--data DIR` wins over `RELAIS__DATA_DIR`; `RELAIS__MLLP__LISTEN` / `RELAIS__HTTP__LISTEN` move the
/// listeners (port 0 here: the harness reads the real ports from `listeners.json` in that data dir).
#[test]
fn data_flag_and_env_overrides() {
    let elsewhere = tempfile::tempdir().unwrap();
    let ignored = elsewhere.path().join("ignored");
    let relais =
        Relais::start_with_args(&["--data", "{data}"], &[("RELAIS__DATA_DIR", ignored.to_str().unwrap())]);
    assert_eq!(Ack::parse(&mllp_send(relais.mllp_addr(), &adt("DATA-1"))).code(), "AA");
    assert!(relais.data_dir().join("journal.redb").is_file());
    assert!(!ignored.exists(), "RELAIS__DATA_DIR is overridden by --data");
    assert!(relais.mllp_addr().ip().is_loopback() && relais.mllp_addr().port() != 2575);
    assert!(relais.http_addr().ip().is_loopback() && relais.http_addr().port() != 8080);
}

/// Item 8 under concurrency: the same control id sent at the same moment on 8 connections, 4 with one
/// content and 4 with another. Whichever content the journal takes first is AA'd on all its connections and
/// stored once; the other content gets AE on all its connections and each copy is kept as `rejected`.
#[test]
fn simultaneous_resends_and_conflicts() {
    let relais = Relais::start();
    let addr = relais.mllp_addr();
    let first = adt("RACE-1");
    let mut second = first.clone();
    second.extend_from_slice(b"NTE|1||other content\r");
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|n| {
            let message = if n % 2 == 0 { first.clone() } else { second.clone() };
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut client = MllpClient::connect(addr);
                barrier.wait();
                (n % 2, client.exchange(&message).code())
            })
        })
        .collect();
    let answers: Vec<(usize, String)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let codes_of = |variant: usize| -> Vec<&str> {
        answers.iter().filter(|(v, _)| *v == variant).map(|(_, c)| c.as_str()).collect()
    };
    let (even, odd) = (codes_of(0), codes_of(1));
    let winner_all_aa = |codes: &[&str]| codes.iter().all(|c| *c == "AA");
    let loser_all_ae = |codes: &[&str]| codes.iter().all(|c| *c == "AE");
    assert!(
        (winner_all_aa(&even) && loser_all_ae(&odd)) || (winner_all_aa(&odd) && loser_all_ae(&even)),
        "one content wins everywhere: {answers:?}"
    );
    let stats = relais.stats();
    assert_eq!((stats["accepted"], stats["rejected"]), (1, 4));
}

/// Item 3: 100 messages written at once on one connection get 100 AAs, in the order sent.
#[test]
fn pipelined_messages_are_acknowledged_in_order() {
    let relais = Relais::start();
    let ids: Vec<String> = (0..100).map(|i| format!("PIPE-{i:03}")).collect();
    let mut burst = Vec::new();
    for id in &ids {
        burst.extend(frame(&adt(id)));
    }
    let mut client = MllpClient::connect(relais.mllp_addr());
    client.send_raw(&burst);
    let acked: Vec<String> = (0..ids.len())
        .map(|_| {
            let ack = client.read_ack();
            assert_eq!(ack.code(), "AA", "{:?}", String::from_utf8_lossy(&ack.raw));
            ack.acked_id()
        })
        .collect();
    assert_eq!(acked, ids);
    assert_eq!(relais.stats()["journaled"], 100);
}

/// A batch sender that writes everything then closes its side (`cat batch | nc host 2575`) still gets every
/// ACK, in order, before the server closes.
#[test]
fn half_closed_connection_gets_every_ack() {
    let relais = Relais::start();
    let ids: Vec<String> = (0..50).map(|i| format!("HALF-{i:02}")).collect();
    let mut client = MllpClient::connect(relais.mllp_addr());
    client.send_raw(&ids.iter().flat_map(|id| frame(&adt(id))).collect::<Vec<u8>>());
    client.stream().shutdown(std::net::Shutdown::Write).unwrap();
    let acked: Vec<String> = ids.iter().map(|_| client.read_ack()).map(|a| a.acked_id()).collect();
    assert_eq!(acked, ids);
    assert!(client.closed_by_server());
    assert_eq!(relais.stats()["journaled"], 50);
}

/// Item 3: many connections at once, each sending and waiting as a DPI does; every message is AA and
/// journaled once.
#[test]
fn concurrent_connections_are_all_served() {
    let relais = Relais::start();
    let addr = relais.mllp_addr();
    let (connections, per_connection) = (24, 10);
    let threads: Vec<_> = (0..connections)
        .map(|c| {
            std::thread::spawn(move || {
                let mut client = MllpClient::connect(addr);
                for m in 0..per_connection {
                    let id = format!("C{c}-M{m}");
                    let ack = client.exchange(&adt(&id));
                    assert_eq!((ack.code(), ack.acked_id()), ("AA".to_string(), id));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client thread failed");
    }
    let ids = accepted_ids(&relais, 1000);
    assert_eq!(ids.len(), connections * per_connection);
    let unique: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no message journaled twice");
}

/// Item 3: CR, LF and CRLF segment ends are all read as segment ends: the message is accepted, and a bad
/// segment id after the line break is found at that segment (so the break really split the segments).
#[test]
fn cr_lf_and_crlf_segment_ends() {
    let relais = Relais::start();
    let base = adt("ENDS");
    let text = String::from_utf8(base).unwrap();
    let mut client = MllpClient::connect(relais.mllp_addr());
    for (name, end) in [("CR", "\r"), ("LF", "\n"), ("CRLF", "\r\n")] {
        let message = text.trim_end_matches('\r').replace('\r', end);
        let message = with_msh_field(message.as_bytes(), 10, &format!("ENDS-{name}"));
        let ack = client.exchange(&message);
        assert_eq!(ack.code(), "AA", "{name}: {:?}", String::from_utf8_lossy(&ack.raw));

        let broken = format!("{}{end}pv1|1|I{end}", String::from_utf8_lossy(&message).trim_end());
        let broken = with_msh_field(broken.as_bytes(), 10, &format!("ENDS-BAD-{name}"));
        let ack = client.exchange(&broken);
        assert_eq!(ack.code(), "AR", "{name}: {:?}", String::from_utf8_lossy(&ack.raw));
        assert!(ack.err_location().starts_with("pv1"), "{name}: ERR-2 = {}", ack.err_location());
        assert_eq!(ack.err_code(), "100");
    }
    let stats = relais.stats();
    assert_eq!((stats["accepted"], stats["rejected"]), (3, 3));
}

/// Item 3 and 10: bytes between frames are answered with AR, journaled as `rejected` with a reason, and the
/// next frame on the same connection is served.
#[test]
fn garbage_between_frames_is_answered_and_the_next_frame_served() {
    let relais = Relais::start();
    let mut client = MllpClient::connect(relais.mllp_addr());
    let mut bytes = frame(&adt("BEFORE"));
    bytes.extend_from_slice(b"this is not HL7 at all");
    bytes.extend(frame(&adt("AFTER")));
    client.send_raw(&bytes);
    let answers: Vec<Ack> = (0..3).map(|_| client.read_ack()).collect();
    assert_eq!((answers[0].code(), answers[0].acked_id()), ("AA".into(), "BEFORE".into()));
    assert_eq!(answers[1].code(), "AR");
    assert_eq!(answers[1].err_code(), "100");
    assert!(answers[1].err_text().contains("outside"), "{}", answers[1].err_text());
    assert_eq!((answers[2].code(), answers[2].acked_id()), ("AA".into(), "AFTER".into()));

    let rejected = relais.messages("rejected", 10);
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["size"], 22);
    assert!(rejected[0]["reason"].as_str().is_some_and(|r| r.contains("outside")), "{:?}", rejected[0]);
}

/// Item 3: a message over `mllp.max_message_size` is answered AR (ERR 207), its first bytes are kept as
/// `rejected`, and the server closes the connection; other connections are unaffected.
#[test]
fn oversize_is_rejected_then_the_connection_closed() {
    let relais = Relais::start_with(&[("RELAIS__MLLP__MAX_MESSAGE_SIZE", "4096")]);
    let mut client = MllpClient::connect(relais.mllp_addr());
    assert_eq!(client.exchange(&adt("SMALL")).code(), "AA");
    let mut big = adt("BIG");
    while big.len() < 10_000 {
        big.extend_from_slice(b"NTE|1||padding padding padding padding padding padding\r");
    }
    client.send(&big);
    let ack = client.read_ack();
    assert_eq!(ack.code(), "AR", "{:?}", String::from_utf8_lossy(&ack.raw));
    assert_eq!(ack.err_code(), "207");
    assert!(ack.err_text().contains("4096"), "{}", ack.err_text());
    assert!(client.closed_by_server(), "the connection is closed after an oversize message");

    let rejected = relais.messages("rejected", 10);
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["size"], 4096, "the first max_message_size bytes are kept");
    assert_eq!(rejected[0]["control_id"], "BIG", "the header of a cut message is still read");
    assert_eq!(Ack::parse(&mllp_send(relais.mllp_addr(), &adt("NEXT"))).code(), "AA");
}

/// A result message carrying an 8 MB Base64 document (OBX-5, as in the CI-SIS ORU) is accepted under the
/// default 10 MiB limit and kept byte for byte.
#[test]
fn large_message_under_the_default_limit_is_accepted() {
    let relais = Relais::start();
    let oru = sample("ans/ans-transdoc_ORU_R01_CR-BIO_DMP-MSS.hl7");
    let mut big = String::from_utf8(oru).unwrap().trim_end().replace('\n', "\r");
    big.push_str("\rOBX|9|ED|PDF^Document||^application^pdf^Base64^");
    big.push_str(&"JVBERi0xLjcKJcfsj6IK".repeat(420_000));
    big.push_str("||||||F\r");
    assert!(big.len() > 8_000_000 && big.len() < 10 * 1024 * 1024);
    let ack = MllpClient::connect(relais.mllp_addr()).exchange(big.as_bytes());
    assert_eq!((ack.code(), ack.acked_id()), ("AA".to_string(), "015".to_string()));
    let entry = &relais.accepted(1)[0];
    assert_eq!(entry["size"], big.len() as u64);
    let id = entry["id"].as_u64().unwrap();
    assert!(relais.get(&format!("/api/messages/{id}/raw")).1 == big.as_bytes(), "raw bytes differ");
}

/// Item 2: SIGTERM while a client pipelines: what the server read is answered (every answer AA, in order),
/// the connection ends cleanly, the process exits 0, and after a restart every AA'd message is journaled.
#[test]
fn graceful_stop_on_sigterm_answers_what_was_read() {
    let mut relais = Relais::start();
    let ids: Vec<String> = (0..300).map(|i| format!("STOP-{i:03}")).collect();
    let mut burst = Vec::new();
    for id in &ids {
        burst.extend(frame(&adt(id)));
    }
    let mut client = MllpClient::connect(relais.mllp_addr());
    client.send_raw(&burst);
    let mut acked = vec![client.read_ack()];
    relais.terminate();
    while let Some(frame) = client.try_read_frame() {
        acked.push(Ack::parse(&frame));
    }
    let status = relais.wait();
    assert!(status.success(), "exit status {status}; log:\n{}", relais.log());
    let acked_ids: Vec<String> = acked.iter().map(Ack::acked_id).collect();
    assert!(acked.iter().all(|a| a.code() == "AA"), "only AAs during a graceful stop");
    assert_eq!(acked_ids, ids[..acked.len()], "answers in order, none skipped");

    relais.restart();
    let journaled: BTreeMap<String, ()> =
        accepted_ids(&relais, 1000).into_iter().map(|id| (id, ())).collect();
    for id in &acked_ids {
        assert!(journaled.contains_key(id), "{id} got AA but is not in the journal");
    }
    // Journal ids keep growing after a restart.
    let highest = relais.messages("", 1)[0]["id"].as_u64().unwrap();
    assert_eq!(Ack::parse(&mllp_send(relais.mllp_addr(), &adt("AFTER-RESTART"))).code(), "AA");
    let newest = &relais.messages("", 1)[0];
    assert_eq!(newest["control_id"], "AFTER-RESTART");
    assert!(newest["id"].as_u64().unwrap() > highest);
}

/// Item 2: an idle connection does not hold up a graceful stop: the client sees the connection closed and
/// the process exits 0.
#[test]
fn graceful_stop_closes_idle_connections() {
    let mut relais = Relais::start();
    let mut idle = MllpClient::connect(relais.mllp_addr());
    assert_eq!(idle.exchange(&adt("IDLE-1")).code(), "AA");
    let status = relais.stop();
    assert!(status.success(), "exit status {status}; log:\n{}", relais.log());
    assert!(idle.closed_by_server());
}
