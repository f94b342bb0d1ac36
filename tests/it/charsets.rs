//! Item 6, end to end: MSH-18 charsets (UTF-8, 8859/1, 8859/15, ASCII), the per-sender default when MSH-18 is
//! empty, escapes decoded in the message's charset, raw bytes kept exactly, and ACKs in the sender's charset.
//! (Escape decoding case by case is unit-tested in `src/hl7v2/escape.rs`.)

use crate::harness::*;

/// (file, MSH-18, IANA name, MSH-3 as decoded text).
const CASES: &[(&str, &str, &str, &str)] = &[
    ("utf8.hl7", "UNICODE UTF-8", "utf-8", "Bât. A & C Hôpital é |^~\\ Œ€\nfin"),
    ("latin1.hl7", "8859/1", "iso-8859-1", "Bât. A & C Hôpital é |^~\\ ¤\nfin"),
    ("latin9.hl7", "8859/15", "iso-8859-15", "Bât. A & C Hôpital € |^~\\ Œ€\nfin"),
    ("ascii.hl7", "ASCII", "us-ascii", "Bat. A & C Hopital A |^~\\ \nfin"),
];

/// MSH-`n` of `raw` as bytes (MSH-1 is the separator), without any decoding.
fn msh_bytes(raw: &[u8], n: usize) -> Vec<u8> {
    let end = raw.iter().position(|&b| b == b'\r' || b == b'\n').unwrap_or(raw.len());
    raw[..end].split(|&b| b == b'|').nth(n - 1).unwrap_or_default().to_vec()
}

/// Each charset over MLLP: AA; the journal records the charset and MSH-3 decoded with every escape; the raw
/// bytes come back exactly; the ACK says the sender's charset in MSH-18 and carries the sender's MSH-3/4
/// bytes unchanged (not re-encoded to UTF-8).
#[test]
fn each_charset_is_decoded_kept_raw_and_answered_in_kind() {
    let relais = Relais::start();
    let mut client = MllpClient::connect(relais.mllp_addr());
    for (file, msh18, _, decoded) in CASES {
        let message = sample(&format!("charsets/{file}"));
        let ack = client.exchange(&message);
        assert_eq!(ack.code(), "AA", "{file}: {:?}", String::from_utf8_lossy(&ack.raw));
        assert_eq!(msh_bytes(&ack.raw, 18), msh18.as_bytes(), "{file}: ACK MSH-18");
        assert_eq!(msh_bytes(&ack.raw, 5), msh_bytes(&message, 3), "{file}: ACK MSH-5 = MSH-3, same bytes");
        assert_eq!(msh_bytes(&ack.raw, 6), msh_bytes(&message, 4), "{file}: ACK MSH-6 = MSH-4");

        let entry = &relais.accepted(1)[0];
        assert_eq!(entry["control_id"], msh_field(&message, 10));
        assert_eq!(entry["charset"], *msh18, "{file}");
        assert_eq!(entry["sending_application"], *decoded, "{file}: MSH-3 decoded");
        let id = entry["id"].as_u64().unwrap();
        assert_eq!(relais.get(&format!("/api/messages/{id}/raw")).1, message, "{file}: raw bytes");
    }
    let log = relais.log();
    for secret in ["LOISE", "DIPE", "DUPR", "19890214", "7788990", "Eglise"] {
        assert!(!log.contains(secret), "patient data `{secret}` in the info log:\n{log}");
    }
}

/// Over HTTP the ACK's `Content-Type` names the sender's charset too.
#[test]
fn http_ack_content_type_names_the_charset() {
    let relais = Relais::start();
    for (file, msh18, iana, _) in CASES {
        let response = http()
            .post(format!("{}/hl7v2", relais.http_url()))
            .body(sample(&format!("charsets/{file}")))
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{file}");
        let content_type = response.headers()["content-type"].to_str().unwrap().to_ascii_lowercase();
        assert!(content_type.contains(&format!("charset={iana}")), "{file}: {content_type}");
        let body = response.bytes().unwrap();
        assert_eq!(msh_bytes(&body, 18), msh18.as_bytes(), "{file}");
    }
}

/// MSH-18 empty: the sender's configured charset (`RELAIS__SENDERS__<MSH-4>__CHARSET`) applies; without
/// one, the default 8859/1 does (and the same bytes then read differently).
#[test]
fn absent_msh18_uses_the_per_sender_default() {
    let message = sample("charsets/no_msh18_latin9.hl7");
    assert_eq!(msh_field(&message, 18), "");

    let configured = Relais::start_with(&[("RELAIS__SENDERS__CHLATIN9__CHARSET", "8859/15")]);
    let ack = MllpClient::connect(configured.mllp_addr()).exchange(&message);
    assert_eq!(ack.code(), "AA");
    assert_eq!(msh_bytes(&ack.raw, 18), b"8859/15");
    let entry = &configured.messages("", 1)[0];
    assert_eq!(entry["charset"], "8859/15");
    assert_eq!(entry["sending_application"], "Œuvre € Bât. & C");

    let unconfigured = Relais::start();
    let ack = MllpClient::connect(unconfigured.mllp_addr()).exchange(&message);
    assert_eq!(ack.code(), "AA");
    assert_eq!(msh_bytes(&ack.raw, 18), b"8859/1");
    let entry = &unconfigured.messages("", 1)[0];
    assert_eq!(entry["charset"], "8859/1");
    assert_eq!(entry["sending_application"], "¼uvre ¤ Bât. & C");
}

/// A charset setting in `relais.toml` works the same way, and bytes the declared charset cannot hold are
/// refused (AR, ERR 102 at MSH-18) in the sender's charset.
#[test]
fn toml_sender_charset_and_bytes_outside_the_charset() {
    let relais = Relais::start_with_config("[senders.CHLATIN9]\ncharset = \"8859/15\"\n", &[]);
    let mut client = MllpClient::connect(relais.mllp_addr());
    assert_eq!(client.exchange(&sample("charsets/no_msh18_latin9.hl7")).code(), "AA");
    assert_eq!(relais.messages("", 1)[0]["sending_application"], "Œuvre € Bât. & C");

    let ascii = sample("charsets/ascii.hl7");
    let not_ascii = with_msh_field(
        &String::from_utf8_lossy(&ascii).replace("HELOISE", "HÉLOÏSE").into_bytes(),
        10,
        "NOT-ASCII",
    );
    let ack = client.exchange(&not_ascii);
    assert_eq!(
        (ack.code(), ack.err_location(), ack.err_code()),
        ("AR".into(), "MSH^1^18".into(), "102".into())
    );
    assert_eq!(msh_bytes(&ack.raw, 18), b"ASCII");
    assert_eq!(relais.messages("rejected", 1)[0]["control_id"], "NOT-ASCII");
}
