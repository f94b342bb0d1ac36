//! Unit tests of the mapping engine on small messages (the whole samples run in tests/it/mapping.rs).

use std::path::PathBuf;

use serde_json::Value;

use super::*;
use crate::facts::EventClass;

fn mapper() -> Mapper {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mappings");
    Mapper::load(&dir).unwrap_or_else(|e| panic!("mappings load: {e}"))
}

fn msg(trigger: &str, pid_extra: &str, pv1: &str, tail: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|GAM|CHX|DPI|CHX|20260714102500||ADT^{trigger}^ADT_A01|MSG1|P|2.5^FRA^2.11|||||FRA|UNICODE UTF-8\r\
         EVN||20260714102500\r\
         PID|1||123^^^CHX&1.2.250.1.1&ISO^PI{pid_extra}\r\
         {pv1}\r{tail}"
    )
    .into_bytes()
}

fn json(m: &Mapped) -> Value {
    serde_json::from_slice(&m.bundle).expect("bundle is JSON")
}

fn resource<'v>(bundle: &'v Value, kind: &str) -> Option<&'v Value> {
    bundle["entry"].as_array()?.iter().map(|e| &e["resource"]).find(|r| r["resourceType"] == kind)
}

#[test]
fn sau_entry_is_classified_and_timed_in_paris() {
    let raw = msg(
        "A04",
        "||DOE^JOHN^^^^^L||19790328|M",
        "PV1|1|E|URG^^^CHX||||||||||||||||V1^^^CHX&1.2.250.1.1&ISO^VN|||||||||||||||||||||||||20260714102000",
        "ZBE|M1^CHX|20260714102000||INSERT|N||Urgences^^^^^CHX^UF^^^8782||HMS\r",
    );
    let m = mapper().convert(&raw, BundleKind::Message, false).expect("maps");
    assert_eq!(m.facts.event_class, Some(EventClass::SauEntry));
    assert_eq!(m.facts.unit.as_deref(), Some("8782"));
    assert_eq!(m.facts.patient_key, "1.2.250.1.1|123");
    let b = json(&m);
    let enc = resource(&b, "Encounter").expect("encounter");
    assert_eq!(enc["class"]["code"], "EMER");
    assert_eq!(enc["period"]["start"], "2026-07-14T10:20:00+02:00");
    assert_eq!(b["entry"][0]["resource"]["resourceType"], "MessageHeader");
    assert_eq!(b["entry"][0]["resource"]["eventCoding"]["code"], "A04");
}

#[test]
fn unmapped_events_and_documents_are_refused_with_msh_9() {
    let m = mapper();
    let e = m.convert(&msg("A99", "", "PV1|1|I", ""), BundleKind::Message, false).expect_err("refused");
    assert_eq!(e.location, "MSH-9");
    let oru = b"MSH|^~\\&|A|B|C|D|20260101||ORU^R01|1|P|2.5\rPID|1||1^^^X^PI\r";
    let e = m.convert(oru, BundleKind::Message, false).expect_err("refused");
    assert_eq!(e.location, "MSH-9");
    assert!(!m.handles("ORU^R01") && m.handles("ADT^A01"));
}
