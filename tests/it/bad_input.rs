//! Item 10: bad input is answered and kept, never dropped. Every kind (no MSH, truncated MSH, binary junk,
//! bad framing, oversize, unknown or violated charset) gets AR with an ERR naming where and the table 0357
//! code, is journaled `rejected` with its reason and exact bytes, and the connection keeps serving.

use crate::harness::*;

/// A file of `test-messages/bad/` and the ERR it must earn: (file, ERR-2, ERR-3, MSA-2).
const FILE_CASES: &[(&str, &str, &str, &str)] = &[
    ("no_msh.hl7", "MSH^1", "100", ""),
    ("truncated_msh.hl7", "MSH^1^9", "101", ""),
    ("truncated_msh_no_control_id.hl7", "MSH^1^10", "101", ""),
    ("truncated_msh_no_encoding_chars.hl7", "MSH^1^2", "102", ""),
    ("binary_junk.bin", "MSH^1", "100", ""),
    ("nul_in_body.hl7", "MSH^1^18", "102", "BAD-NUL"),
    ("invalid_utf8.hl7", "MSH^1^18", "102", "BAD-UTF8"),
    ("unknown_charset.hl7", "MSH^1^18", "103", "BAD-CS"),
];

/// Every bad file over one MLLP connection: AR with the expected ERR, the next good message on the same
/// connection gets AA, and each bad one is journaled `rejected` with its bytes and a reason naming the code.
#[test]
fn bad_files_get_ar_are_kept_and_the_connection_keeps_serving() {
    let relais = Relais::start();
    let mut client = MllpClient::connect(relais.mllp_addr());
    for (n, (file, location, code, acked)) in FILE_CASES.iter().enumerate() {
        let bad = sample(&format!("bad/{file}"));
        let ack = client.exchange(&bad);
        let shown = String::from_utf8_lossy(&ack.raw).replace('\r', "\n");
        assert_eq!(ack.code(), "AR", "{file}: {shown}");
        assert_eq!(ack.err_location(), *location, "{file}: {shown}");
        assert_eq!(ack.err_code(), *code, "{file}: {shown}");
        assert_eq!(ack.acked_id(), *acked, "{file}: MSA-2");
        assert!(ack.field("ERR", 3).ends_with("^HL70357"), "{file}: ERR-3 names table 0357");
        assert!(!ack.err_text().is_empty(), "{file}: ERR-8 explains");

        let good = client.exchange(&adt(&format!("GOOD-{n}")));
        assert_eq!(good.code(), "AA", "{file}: the connection keeps serving");

        let entry = &relais.messages("rejected", 1)[0];
        assert_eq!(entry["size"], bad.len() as u64, "{file}");
        let reason = entry["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(&format!("({code})")), "{file}: reason `{reason}` names the code");
        let id = entry["id"].as_u64().unwrap();
        assert_eq!(relais.get(&format!("/api/messages/{id}/raw")).1, bad, "{file}: raw bytes kept exactly");
    }
    let stats = relais.stats();
    assert_eq!(stats["rejected"], FILE_CASES.len() as u64);
    assert_eq!(stats["accepted"], FILE_CASES.len() as u64);
    let log = relais.log();
    assert!(!log.contains("panicked"), "{log}");
    for secret in ["TEST^BAD", "19800101", "LOISE", "000003"] {
        assert!(
            !log.contains(secret),
            "patient data `{secret}` of a rejected message in the info log:\n{log}"
        );
    }
}

/// The same files over HTTP: 400 with the AR as the body.
#[test]
fn bad_files_over_http_get_400() {
    let relais = Relais::start();
    for (file, location, code, _) in FILE_CASES {
        let (status, body) = relais.post_hl7v2(&sample(&format!("bad/{file}")));
        assert_eq!(status, 400, "{file}");
        let ack = Ack::parse(&body);
        assert_eq!(
            (ack.code(), ack.err_location(), ack.err_code()),
            ("AR".into(), location.to_string(), code.to_string())
        );
    }
    assert_eq!(relais.stats()["rejected"], FILE_CASES.len() as u64);
}

/// Bad framing, every kind: bytes outside a frame, an end byte with no start byte, a frame cut by a new start
/// byte. Each is answered with AR (ERR 100), kept as `rejected`, and the frames after it are served.
#[test]
fn bad_framing_is_answered_and_the_next_frame_served() {
    let relais = Relais::start();
    let mut client = MllpClient::connect(relais.mllp_addr());
    let cut =
        b"MSH|^~\\&|GAM|CHU-X|DPI|CHU-X|20240306111154||ADT^A01^ADT_A01|CUT-1|P|2.5\rEVN||2024".to_vec();
    let mut wire = Vec::new();
    wire.extend_from_slice(b"GET / HTTP/1.1\r\nHost: relais\r\n\r\n"); // bytes outside any frame
    wire.extend(frame(&adt("F-1")));
    wire.extend_from_slice(&adt("NO-START")); // an end byte with no start byte
    wire.extend_from_slice(&EB);
    wire.extend(frame(&adt("F-2")));
    wire.push(SB); // a frame cut short by the next start byte
    wire.extend_from_slice(&cut);
    wire.extend(frame(&adt("F-3")));
    client.send_raw(&wire);

    let answers: Vec<Ack> = (0..6).map(|_| client.read_ack()).collect();
    let summary: Vec<(String, String)> = answers.iter().map(|a| (a.code(), a.acked_id())).collect();
    let expected =
        [("AR", ""), ("AA", "F-1"), ("AR", "NO-START"), ("AA", "F-2"), ("AR", "CUT-1"), ("AA", "F-3")];
    let expected: Vec<(String, String)> =
        expected.iter().map(|(c, i)| (c.to_string(), i.to_string())).collect();
    assert_eq!(summary, expected);
    for ar in [&answers[0], &answers[2], &answers[4]] {
        assert_eq!(ar.err_code(), "100", "{:?}", String::from_utf8_lossy(&ar.raw));
        assert!(!ar.err_text().is_empty());
    }
    assert!(answers[4].err_text().contains("interrupted"), "{}", answers[4].err_text());

    let rejected = relais.messages("rejected", 10);
    assert_eq!(rejected.len(), 3);
    assert!(rejected.iter().all(|r| r["reason"].as_str().is_some_and(|s| !s.is_empty())));
    let cut_entry = rejected.iter().find(|r| r["control_id"] == "CUT-1").expect("the cut frame is kept");
    assert_eq!(cut_entry["size"], cut.len() as u64);
}

/// Oversize is the one bad input that closes the connection (after its AR, ERR 207); it is still journaled.
#[test]
fn oversize_is_answered_kept_and_closes() {
    let relais = Relais::start_with(&[("RELAIS__MLLP__MAX_MESSAGE_SIZE", "2000")]);
    let mut client = MllpClient::connect(relais.mllp_addr());
    let mut big = adt("OVERSIZE");
    big.resize(50_000, b'x');
    client.send(&big);
    let ack = client.read_ack();
    assert_eq!((ack.code(), ack.err_code()), ("AR".into(), "207".into()));
    assert!(client.closed_by_server());
    let rejected = relais.messages("rejected", 10);
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["control_id"], "OVERSIZE");
}

/// "Nothing panics on any input": 300 frames of random bytes and 300 randomly mutated valid messages on one
/// connection; every frame gets exactly one answer, never an AA for random bytes, and the server stays up.
#[test]
fn random_and_mutated_frames_are_all_answered() {
    let mut relais = Relais::start();
    let mut rng = XorShift(0x5EED_2026_1129);
    let valid = sample("ans/ans-consent_A01_NonConsentementConsultation_OppositionAlimentation.er7");
    let mut frames = Vec::new();
    for _ in 0..300 {
        let len = rng.below(400) + 1;
        frames.push((true, (0..len).map(|_| rng.byte()).collect::<Vec<u8>>()));
    }
    for _ in 0..300 {
        let mut message = valid.clone();
        for _ in 0..rng.below(8) + 1 {
            if message.len() < 2 {
                break;
            }
            let at = rng.below(message.len());
            match rng.below(3) {
                0 => message[at] = rng.byte(),
                1 => {
                    message.remove(at);
                }
                _ => message.truncate(at.max(1)),
            }
        }
        frames.push((false, message));
    }
    let mut client = MllpClient::connect(relais.mllp_addr());
    let mut wire = Vec::new();
    for (_, bytes) in &frames {
        wire.extend(frame(bytes));
    }
    client.send_raw(&wire);
    for (random, bytes) in &frames {
        let ack = client.read_ack();
        let code = ack.code();
        assert!(["AA", "AE", "AR"].contains(&code.as_str()), "answer {code} to {bytes:?}");
        if *random {
            assert_eq!(code, "AR", "random bytes accepted: {bytes:?}");
        }
    }
    assert_eq!(client.exchange(&adt("STILL-UP")).code(), "AA");
    assert_eq!(relais.stats()["journaled"], frames.len() as u64 + 1, "every frame is journaled");
    assert!(relais.is_running());
    let log = relais.log();
    assert!(!log.contains("panicked"), "{log}");
}

/// A small deterministic generator (xorshift64): the same frames on every run; no framing bytes produced.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Any byte but the MLLP start and end bytes, so each generated frame stays one frame.
    fn byte(&mut self) -> u8 {
        loop {
            let b = self.next() as u8;
            if b != SB && b != EB[0] {
                return b;
            }
        }
    }
}

/// A sender that stops in the middle of a frame and closes its side: the partial frame is answered AR
/// (ERR 100, "incomplete") on the still-open reading side and kept as `rejected`.
#[test]
fn a_frame_cut_by_the_end_of_the_stream_is_answered_and_kept() {
    let relais = Relais::start();
    let mut client = MllpClient::connect(relais.mllp_addr());
    let message = adt("HALF-FRAME");
    let mut wire = frame(&adt("WHOLE"));
    wire.push(SB);
    wire.extend_from_slice(&message[..300]);
    client.send_raw(&wire);
    client.stream().shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(client.read_ack().code(), "AA");
    let ack = client.read_ack();
    assert_eq!(
        (ack.code(), ack.err_code(), ack.acked_id()),
        ("AR".into(), "100".into(), "HALF-FRAME".into())
    );
    assert!(ack.err_text().contains("incomplete"), "{}", ack.err_text());
    assert!(client.closed_by_server());
    let rejected = relais.messages("rejected", 10);
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["size"], 300);
}
