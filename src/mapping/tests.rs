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

/// A segment with the given fields set (1-based), the others empty.
fn seg(id: &str, fields: &[(usize, &str)]) -> String {
    let last = fields.iter().map(|(n, _)| *n).max().unwrap_or(0);
    let mut parts = vec![String::new(); last + 1];
    parts[0] = id.to_owned();
    for (n, v) in fields {
        parts[*n] = (*v).to_owned();
    }
    parts.join("|")
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

#[test]
fn the_gp_comes_from_rol_odrp_or_pd1_4_and_a_deleted_one_is_not_known() {
    let xcn = "10003456789^LEROUX^Marc^^^DR^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^L^^^RPPS";
    let pv1 = "PV1|1|I|CARDIO^^^CHX||||||||||||||||V1^^^CHX&1.2.250.1.1&ISO^VN";
    let m = mapper();
    let pd1 = msg("A01", "", pv1, &format!("PD1||||{xcn}\r"));
    let f = m.convert(&pd1, BundleKind::Message, false).expect("maps").facts;
    assert!(f.gp_known, "PD1-4 is the fallback");
    let deleted = msg("A01", "", pv1, &format!("ROL||DE|ODRP|{xcn}\r"));
    let mapped = m.convert(&deleted, BundleKind::Message, false).expect("maps");
    assert!(!mapped.facts.gp_known);
    assert!(resource(&json(&mapped), "Practitioner").is_none());
    let hidden = msg("A01", "", pv1, &format!("{}\r", seg("PD1", &[(12, "Y")])));
    let f = m.convert(&hidden, BundleKind::Message, false).expect("maps").facts;
    assert_eq!(f.flags, ["INVISIBLE_PATIENT"]);
    assert!(f.event_class.is_some() && !f.gp_known);
    let other_role = msg("A01", "", pv1, &format!("ROL||UC|FHCP|{xcn}\r"));
    assert!(!m.convert(&other_role, BundleKind::Message, false).expect("maps").facts.gp_known);
    let adeli = msg("A01", "", pv1, "ROL||UC|ODRP|123456789^X^Y^^^^^^^L^^^ADELI\r");
    assert!(!m.convert(&adeli, BundleKind::Message, false).expect("maps").facts.gp_known);
}

#[test]
fn death_signals_count_only_on_the_listed_triggers() {
    let m = mapper();
    let pv1 = "PV1|1|I|CARDIO^^^CHX||||||||||||||||V1^^^CHX&1.2.250.1.1&ISO^VN";
    // PID-29 on a Z99 is a death; ZFM-2 = 9 on an A02 is not (only on A03).
    // PID-3 ends the PID of msg(): the extra text starts at PID-4.
    let pid29 = seg("", &[(2, "DOE^J^^^^^L"), (4, "19500101"), (5, "M"), (26, "202607150310")]);
    let z99 = msg("Z99", &pid29, pv1, "ZBE|M1^CHX|20260714102000||UPDATE|N|A01\r");
    let f = m.convert(&z99, BundleKind::Message, false).expect("maps").facts;
    assert_eq!((f.event_class, f.undoes.as_deref()), (Some(EventClass::Death), Some("A01")));
    let a02 = msg("A02", "", pv1, "ZFM|8|9||\r");
    assert_eq!(
        m.convert(&a02, BundleKind::Message, false).expect("maps").facts.event_class,
        Some(EventClass::Update)
    );
    // An A01 with PV1-2 = E is not an admission (PAM FR uses A04 for the ED).
    let a01e = msg("A01", "", "PV1|1|E|URG^^^CHX", "");
    assert_eq!(
        m.convert(&a01e, BundleKind::Message, false).expect("maps").facts.event_class,
        Some(EventClass::Update)
    );
}

#[test]
fn an_unknown_patient_class_and_a_bad_time_name_their_field() {
    let m = mapper();
    let e = m.convert(&msg("A01", "", "PV1|1|Q|X", ""), BundleKind::Message, false).expect_err("refused");
    assert_eq!(e.location, "PV1-2");
    let pv1 = seg("PV1", &[(1, "1"), (2, "I"), (3, "X"), (44, "2026071425")]);
    let bad_start = msg("A01", "", &pv1, "");
    let e = m.convert(&bad_start, BundleKind::Message, false).expect_err("refused");
    assert_eq!(e.location, "PV1-44");
}

#[test]
fn check_reports_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mappings");
    std::fs::create_dir_all(dir.path().join("tables")).expect("mkdir");
    for entry in std::fs::read_dir(src.join("tables")).expect("tables") {
        let p = entry.expect("entry").path();
        if p.is_dir() {
            continue; // tables/xds/: the documents' XDS tables, not the ADT mapping's
        }
        std::fs::copy(&p, dir.path().join("tables").join(p.file_name().expect("name"))).expect("copy");
    }
    std::fs::copy(src.join("event-classes.toml"), dir.path().join("event-classes.toml")).expect("copy");
    let adt = std::fs::read_to_string(src.join("adt.toml")).expect("adt");
    let broken = adt.replacen("\"patient.gender\" = [\"PID-8\"]", "\"patient.sex\" = [\"PID-8\"]", 1);
    let line = broken.lines().position(|l| l.contains("patient.sex")).expect("line") + 1;
    std::fs::write(dir.path().join("adt.toml"), broken).expect("write");
    let errors = Mapper::load(dir.path()).expect_err("broken").0;
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(
        shown.iter().any(|e| e.contains(&format!("adt.toml:{line}: unknown element `patient.sex`"))),
        "{shown:?}"
    );
    assert!(shown.iter().any(|e| e.contains("lacks `patient.gender`")), "{shown:?}");
}

/// Byte-for-byte output of a few samples (message and transaction Bundles, compact and pretty), recorded in
/// `test-messages/convert/` before the conversion's speed work: the engine, relais-fhir and the JSON writer
/// may get faster, the Bundles may not change by one byte.
#[test]
fn bundles_are_byte_for_byte_the_recorded_ones() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-messages");
    let m = mapper();
    let cases = [
        ("bench/adt_a01_fr_mappable.hl7", BundleKind::Message, false, "adt_a01_fr_mappable.message.json"),
        (
            "bench/adt_a01_fr_mappable.hl7",
            BundleKind::Transaction,
            false,
            "adt_a01_fr_mappable.transaction.json",
        ),
        ("adt/a03_death_pid29.hl7", BundleKind::Message, false, "a03_death_pid29.message.json"),
        ("adt/a04_latin9_escapes.hl7", BundleKind::Message, true, "a04_latin9_escapes.message.pretty.json"),
        ("adt/a40_merge.hl7", BundleKind::Transaction, false, "a40_merge.transaction.json"),
    ];
    for (input, kind, pretty, golden) in cases {
        let raw = std::fs::read(root.join(input)).unwrap_or_else(|e| panic!("{input}: {e}"));
        let got = m.convert(&raw, kind, pretty).unwrap_or_else(|e| panic!("{input}: {e}")).bundle;
        let want =
            std::fs::read(root.join("convert").join(golden)).unwrap_or_else(|e| panic!("{golden}: {e}"));
        let first_difference =
            got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
        assert!(
            got == want,
            "{golden}: {} bytes against {} recorded, first difference at byte {first_difference}",
            got.len(),
            want.len()
        );
    }
}
