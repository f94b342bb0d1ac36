use std::path::PathBuf;

use super::zam::{BusinessAck, ZamEnvelope};
use super::*;
use crate::facts::Transform;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn mapper() -> DocumentMapper {
    DocumentMapper::load(&root().join("mappings/tables/xds")).expect("XDS tables")
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(root().join("test-messages").join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn json(bundle: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bundle).expect("bundle JSON")
}

fn resources<'a>(bundle: &'a serde_json::Value, kind: &str) -> Vec<&'a serde_json::Value> {
    bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] == kind)
        .collect()
}

/// What a DMP integrator checks, for every sample: (file, typeCode, classCode, formatCode, level).
const EXPECTED: [(&str, &str, &str, &str, u8); 9] = [
    ("cda/ans-testcontenucda_LDL-SES_2022.01.xml", "11490-0", "11", "urn:asip:ci-sis:ldl-ses:2017", 3),
    ("cda/ans-testcontenucda_BIO-CR-BIO_2024.01_TSH_1.xml", "11502-2", "10", "urn:ihe:lab:xd-lab:2008", 3),
    (
        "cda/ans-testcontenucda_IMG_CR_IMG_2024.01_CDA-R2-Niveau-1.xml",
        "18748-4",
        "10",
        "urn:ihe:iti:xds-sd:pdf:2008",
        1,
    ),
    ("cda/ans-testcontenucda_eP-MED-DM_2024.01_PosoStruct.xml", "57833-6", "42", "urn:ihe:pharm:pre:2010", 3),
    ("cda/own_CR-URG_15507-7_N1.xml", "15507-7", "10", "urn:ihe:iti:xds-sd:pdf:2008", 1),
    ("cda/own_CR-OP_34874-8_N1.xml", "34874-8", "10", "urn:ihe:iti:xds-sd:pdf:2008", 1),
    ("cda/own_CR-OP_34874-8_N1_RPLC.xml", "34874-8", "10", "urn:ihe:iti:xds-sd:pdf:2008", 1),
    ("cda/own_LDL-SES_11490-0_N1_text.xml", "11490-0", "11", "urn:ihe:iti:xds-sd:text:2008", 1),
    ("cda/own_CR-OP_34874-8_N1_no-INS.xml", "34874-8", "10", "urn:ihe:iti:xds-sd:pdf:2008", 1),
];

#[test]
fn every_sample_gives_the_xds_metadata() {
    let mapper = mapper();
    for (file, type_code, class, format, level) in EXPECTED {
        let raw = read(file);
        let doc = mapper.map_document(MessageKind::Cda, &raw).unwrap_or_else(|e| panic!("{file}: {e}"));
        let entry = &doc.details.metadata.entry;
        assert_eq!(entry.type_code.code, type_code, "{file}");
        assert_eq!(entry.type_code.scheme, "2.16.840.1.113883.6.1", "{file}");
        assert_eq!(entry.class_code.code, class, "{file}");
        assert_eq!(entry.format_code.code, format, "{file}");
        assert_eq!(doc.details.metadata.level, level, "{file}");
        assert_eq!(entry.size, raw.len() as u64, "{file}");
        assert_eq!(entry.hash, metadata::sha1_hex(&raw), "{file}");
        assert_eq!(entry.hash.len(), 40, "{file}");
        assert_eq!(entry.mime_type, "text/xml");
        assert!(!entry.authors.is_empty(), "{file}");
        assert!(entry.healthcare_facility_type.is_some(), "{file}");
        assert!(entry.practice_setting.is_some(), "{file}");
        assert!(entry.creation_time.as_deref().is_some_and(|t| t.len() == 14), "{file}");
        let facts = &doc.mapped.facts;
        assert_eq!(facts.kind, MessageKind::Cda);
        assert_eq!(facts.event_class, Some(EventClass::Document));
        assert_eq!(facts.document_type.as_deref(), Some(type_code));
        // The same bytes through the shared trait give the same bundle.
        assert_eq!(mapper.map(MessageKind::Cda, &raw).unwrap().bundle, doc.mapped.bundle, "{file}");
    }
}

#[test]
fn qualified_ins_is_the_xds_patient_id() {
    let doc = mapper().map_cda(&read("cda/ans-testcontenucda_BIO-CR-BIO_2024.01_TSH_1.xml")).unwrap();
    let meta = &doc.details.metadata;
    assert_eq!(meta.entry.patient_id.as_deref(), Some("279035121518989^^^&1.2.250.1.213.1.4.10&ISO^NH"));
    assert_eq!(meta.submission_set.patient_id, meta.entry.patient_id);
    assert!(!meta.identity_review);
    assert!(doc.mapped.facts.ins_qualified);
    assert_eq!(doc.mapped.facts.patient_key, "279035121518989");
    assert_eq!(meta.entry.service_start_time.as_deref(), Some("20210104082200"));
    let author = &meta.entry.authors[0];
    assert!(author.person.starts_with("801234534765^CAMPARINI^Marcel"), "{}", author.person);
    assert!(author.person.ends_with("&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"), "{}", author.person);
    assert!(meta.entry.legal_authenticator.is_some());
}

#[test]
fn unqualified_identity_is_held_for_review_and_never_carries_the_ins() {
    // Same document, birth date removed: the INS is present but the identity is not qualified.
    let text = String::from_utf8(read("cda/own_CR-URG_15507-7_N1.xml")).unwrap();
    let raw = text.replace("<birthTime value=\"19800512\"/>", "");
    let doc = mapper().map_cda(raw.as_bytes()).unwrap();
    let meta = &doc.details.metadata;
    assert!(meta.identity_review);
    assert_eq!(meta.entry.patient_id, None);
    assert_eq!(meta.entry.source_patient_id, "IPP-0042^^^&1.2.250.1.71.4.2.7.1.3&ISO^PI");
    assert!(!doc.mapped.facts.ins_qualified);
    assert_eq!(doc.mapped.facts.patient_key, "1.2.250.1.71.4.2.7.1.3|IPP-0042");
    let metadata_json = serde_json::to_string(meta).unwrap();
    assert!(!metadata_json.contains("248098765432174"), "{metadata_json}");
    let bundle = json(&doc.mapped.bundle);
    let patient = resources(&bundle, "Patient")[0];
    assert!(!patient.to_string().contains("248098765432174"), "{patient}");
    // The document itself still holds it (it is the sender's document, kept as is).
    assert_eq!(resources(&bundle, "DocumentReference").len(), 1);
}

#[test]
fn replacement_is_carried_to_xds_and_fhir() {
    let doc = mapper().map_cda(&read("cda/own_CR-OP_34874-8_N1_RPLC.xml")).unwrap();
    assert_eq!(doc.details.metadata.entry.replaces.as_deref(), Some("1.2.250.1.71.4.2.7.9.34874.1"));
    let bundle = json(&doc.mapped.bundle);
    let reference = resources(&bundle, "DocumentReference")[0];
    assert_eq!(reference["relatesTo"][0]["code"], "replaces");
    assert_eq!(
        reference["relatesTo"][0]["target"]["identifier"]["value"],
        "urn:oid:1.2.250.1.71.4.2.7.9.34874.1"
    );
}

#[test]
fn document_reference_has_the_mhd_shape() {
    let raw = read("cda/ans-testcontenucda_LDL-SES_2022.01.xml");
    let doc = mapper().map_cda(&raw).unwrap();
    let bundle = json(&doc.mapped.bundle);
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "transaction");
    let reference = resources(&bundle, "DocumentReference")[0];
    assert_eq!(reference["status"], "current");
    assert_eq!(reference["type"]["coding"][0]["system"], "http://loinc.org");
    assert_eq!(reference["type"]["coding"][0]["code"], "11490-0");
    assert_eq!(reference["category"][0]["coding"][0]["code"], "11");
    assert_eq!(reference["securityLabel"][0]["coding"][0]["code"], "N");
    assert_eq!(reference["context"]["facilityType"]["coding"][0]["code"], "SA01");
    assert_eq!(reference["context"]["practiceSetting"]["coding"][0]["code"], "ETABLISSEMENT");
    assert_eq!(reference["context"]["period"]["start"], "2019-10-29T11:17:00+01:00");
    assert!(reference["masterIdentifier"]["value"].as_str().unwrap().starts_with("urn:oid:"));
    let attachment = &reference["content"][0]["attachment"];
    assert_eq!(attachment["contentType"], "text/xml");
    assert_eq!(attachment["size"], raw.len());
    use base64::Engine;
    let data =
        base64::engine::general_purpose::STANDARD.decode(attachment["data"].as_str().unwrap()).unwrap();
    assert_eq!(data, raw);
    let hash =
        base64::engine::general_purpose::STANDARD.decode(attachment["hash"].as_str().unwrap()).unwrap();
    assert_eq!(metadata::sha1_hex(&raw), hash.iter().map(|b| format!("{b:02x}")).collect::<String>());
    assert_eq!(reference["content"][0]["format"]["code"], "urn:asip:ci-sis:ldl-ses:2017");
    let subject = reference["subject"]["reference"].as_str().unwrap();
    let patient_entry = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["resourceType"] == "Patient")
        .unwrap();
    assert_eq!(patient_entry["fullUrl"], subject);
    let patient = &patient_entry["resource"];
    assert_eq!(patient["gender"], "female");
    assert_eq!(patient["identifier"][0]["system"], "urn:oid:1.2.250.1.213.1.4.10");
    let practitioners = resources(&bundle, "Practitioner");
    assert!(!practitioners.is_empty());
    assert_eq!(practitioners[0]["identifier"][0]["system"], "urn:oid:1.2.250.1.71.4.2.1");
    assert_eq!(reference["custodian"]["identifier"]["system"], "urn:oid:1.2.250.1.71.4.2.2");
}

#[test]
fn unknown_document_type_is_a_map_failure() {
    let raw = read("cda/bad/unknown-loinc.xml");
    let e = mapper().map_cda(&raw).unwrap_err();
    assert_eq!(e.location, "ClinicalDocument/code");
    assert!(e.reason.contains("99999-9"), "{e}");
}

#[test]
fn oru_r01_flags_recipients_and_patient() {
    let raw = read("oru/ans-transdoc_ORU_R01_CR-BIO_DMP-MSS.hl7");
    assert!(oru::is_oru_r01(&raw));
    let doc = oru::read(&raw).unwrap();
    let info = &doc.info;
    assert_eq!(info.control_id, "015");
    assert!(info.flag("DESTDMP") && info.flag("DESTMSSANTEPS") && info.flag("DESTMSSANTEPAT"));
    assert!(info.flag("ACK_RECEPTION") && info.flag("ACK_LECTURE_MSS"));
    assert!(!info.flag("MASQUE_PS") && !info.flag("INVISIBLE_PATIENT") && !info.flag("CONNEXION_SECRETE"));
    assert_eq!(info.flags.len(), 10);
    let roles: Vec<&str> = info.recipients.iter().map(|r| r.role.as_str()).collect();
    assert_eq!(roles, ["SB", "RCT", "RCT", "REPLY"]);
    assert_eq!(info.recipients[1].address, "adam.hoda@test-ci-sis.mssante.fr");
    assert_eq!(info.recipients[1].id_type, "IDNPS");
    assert_eq!(info.recipients[2].address, "279035121518989@patient.mssante.fr");
    assert!(info.mail_body_ps.as_deref().is_some_and(|b| b.starts_with("Cher confr")));
    assert!(info.ins_qualified);
    assert_eq!(info.patient_class.as_deref(), Some("I"));
    // The ANS sample's OBX carries a placeholder text, not a CDA: mapping it names the OBX.
    let e = mapper().map_document(MessageKind::Hl7v2, &raw).unwrap_err();
    assert!(e.location.starts_with("OBX(1)-5.5"), "{e}");
}

#[test]
fn oru_r01_with_a_cda_maps_like_the_document() {
    let raw = read("oru/own_ORU_R01_CR-URG_DMP-MSS.hl7");
    let doc = mapper().map_document(MessageKind::Hl7v2, &raw).unwrap();
    let facts = &doc.mapped.facts;
    assert_eq!(facts.kind, MessageKind::Hl7v2);
    assert_eq!(facts.event_class, Some(EventClass::Document));
    assert_eq!(facts.message_type, "ORU^R01");
    assert_eq!(facts.document_type.as_deref(), Some("15507-7"));
    assert_eq!(facts.confidentiality.as_deref(), Some("N"));
    assert!(facts.flags.contains(&"DESTDMP".to_string()));
    assert!(facts.ins_qualified);
    assert_eq!(facts.patient_key, "248098765432174");
    let meta = &doc.details.metadata;
    assert_eq!(meta.submission_set.content_type.code, "03", "PV1-2 = I");
    assert!(meta.submission_set.author.as_ref().unwrap().person.starts_with("801234567866^DIAZ^Thierry"));
    let cda = read("cda/own_CR-URG_15507-7_N1.xml");
    assert_eq!(meta.entry.hash, metadata::sha1_hex(&cda));
    assert_eq!(doc.details.oru.as_ref().unwrap().recipients.len(), 4);
    // Serializable for the bus envelope, and back.
    let back: DocumentDetails = serde_json::from_str(&serde_json::to_string(&doc.details).unwrap()).unwrap();
    assert_eq!(back, doc.details);
}

#[test]
fn oru_r01_masking_flag_adds_a_confidentiality_code() {
    let doc =
        mapper().map_document(MessageKind::Hl7v2, &read("oru/own_ORU_R01_CR-URG_MASQUE_PS.hl7")).unwrap();
    let codes: Vec<&str> =
        doc.details.metadata.entry.confidentiality.iter().map(|c| c.code.as_str()).collect();
    assert_eq!(codes, ["N", "MASQUE_PS"]);
    assert_eq!(doc.details.metadata.entry.confidentiality[1].scheme, "1.2.250.1.213.1.1.4.13");
    assert!(doc.mapped.facts.flags.contains(&"MASQUE_PS".to_string()));
}

#[test]
fn oru_r01_without_vali_holds_the_document_and_drops_the_ins() {
    let doc = mapper().map_document(MessageKind::Hl7v2, &read("oru/own_ORU_R01_CR-URG_PROV.hl7")).unwrap();
    assert!(!doc.mapped.facts.ins_qualified);
    assert!(doc.details.metadata.identity_review);
    assert_eq!(doc.details.metadata.entry.patient_id, None);
    assert_ne!(doc.mapped.facts.patient_key, "248098765432174");
    let patient = resources(&json(&doc.mapped.bundle), "Patient")[0].to_string();
    assert!(!patient.contains("248098765432174"), "{patient}");
}

#[test]
fn oru_r01_with_a_doubtful_identity_drops_the_ins_like_the_adt_mapping() {
    let text = String::from_utf8(read("oru/own_ORU_R01_CR-URG_DMP-MSS.hl7")).unwrap();
    assert!(
        text.contains("|VALI\r") || text.contains("|VALI\n") || text.contains("|VALI|"),
        "sample has VALI"
    );
    let doubtful = text.replacen("|VALI", "|VALI~DOUT", 1);
    let doc = mapper().map_document(MessageKind::Hl7v2, doubtful.as_bytes()).unwrap();
    assert!(!doc.mapped.facts.ins_qualified);
    assert!(doc.details.metadata.identity_review);
    assert!(!String::from_utf8_lossy(&doc.mapped.bundle).contains("248098765432174"));
}

#[test]
fn oru_r01_with_another_patient_in_pid_is_refused() {
    let text = String::from_utf8(read("oru/own_ORU_R01_CR-URG_DMP-MSS.hl7")).unwrap();
    let other = text.replacen("248098765432174^^^ASIP", "279035121518989^^^ASIP", 1);
    let e = mapper().map_document(MessageKind::Hl7v2, other.as_bytes()).unwrap_err();
    assert_eq!(e.location, "PID-3");
}

fn envelope(control_id: &str, message_time: &str) -> ZamEnvelope {
    ZamEnvelope {
        sending: ("PFI-X".into(), "Organisation-X".into()),
        receiving: ("SIL-Y".into(), "labo".into()),
        message_time: message_time.into(),
        control_id: control_id.into(),
        event_time: "20211005152908".into(),
        original_control_id: "015".into(),
    }
}

fn sample_segments(rel: &str) -> Vec<u8> {
    let text = String::from_utf8(read(rel)).unwrap();
    let mut out = text.trim_end().replace("\r\n", "\r").replace('\n', "\r").into_bytes();
    out.push(b'\r');
    out
}

#[test]
fn zam_acknowledgements_match_the_ans_samples() {
    let z01 = zam::build(
        &envelope("017", "202106060933"),
        &BusinessAck::DmpReception { ok: false, error: Some(("DMPClosed".into(), "DMP fermé".into())) },
    );
    assert_eq!(
        String::from_utf8(z01).unwrap(),
        String::from_utf8(sample_segments("oru/ans-transdoc_ZAM_Z01_ack-reception-DMP.hl7")).unwrap()
    );
    let recipient = ("801234567897".to_string(), "adam.hoda@test-ci-sis.mssante.fr".to_string());
    let z02 = zam::build(
        &envelope("018", "202106060934"),
        &BusinessAck::MssReception { ok: true, recipient: recipient.clone(), error: None },
    );
    assert_eq!(
        String::from_utf8(z02).unwrap(),
        String::from_utf8(sample_segments("oru/ans-transdoc_ZAM_Z02_ack-reception-MSS.hl7")).unwrap()
    );
    let z03 = zam::build(&envelope("019", "202106070933"), &BusinessAck::MssRead { reader: recipient });
    assert_eq!(
        String::from_utf8(z03).unwrap(),
        String::from_utf8(sample_segments("oru/ans-transdoc_ZAM_Z03_ack-lecture-MSS.hl7")).unwrap()
    );
}

#[test]
fn tables_name_the_file_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let tables = root().join("mappings/tables/xds");
    std::fs::copy(tables.join("xds-codes.toml"), dir.path().join("xds-codes.toml")).unwrap();
    std::fs::write(
        dir.path().join("xds-types.toml"),
        "[types.\"11490-0\"]\ndisplay = \"x\"\nclass = \"77\"\nformat = \"f\"\n",
    )
    .unwrap();
    let e = DocumentMapper::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("xds-types.toml") && e.contains("\"77\""), "{e}");
}

#[test]
fn kind_is_sniffed_from_the_first_byte() {
    assert_eq!(sniff_kind(&read("cda/ans-testcontenucda_LDL-SES_2022.01.xml")), MessageKind::Cda);
    assert_eq!(sniff_kind(b"\xEF\xBB\xBF  \n<ClinicalDocument/>"), MessageKind::Cda);
    assert_eq!(sniff_kind(&read("oru/ans-transdoc_ORU_R01_CR-BIO_DMP-MSS.hl7")), MessageKind::Hl7v2);
}

fn with_flags(flags: &[(&str, bool)]) -> OruInfo {
    OruInfo { flags: flags.iter().map(|(n, v)| (n.to_string(), *v)).collect(), ..OruInfo::default() }
}

#[test]
fn mssante_audience_follows_the_three_allowed_combinations() {
    use oru::MssAudience::*;
    let sample = oru::read(&read("oru/ans-transdoc_ORU_R01_CR-BIO_DMP-MSS.hl7")).unwrap().info;
    assert_eq!(sample.mssante_audience(), Ok(ProfessionalsAndPatient));
    let masked = oru::read(&read("oru/own_ORU_R01_CR-URG_MASQUE_PS.hl7")).unwrap().info;
    let e = masked.mssante_audience().unwrap_err();
    assert!(e.contains("MASQUE_PS"), "{e}");
    assert_eq!(with_flags(&[("DESTDMP", true)]).mssante_audience(), Ok(Nobody));
    let ps_only = with_flags(&[("DESTMSSANTEPS", true), ("INVISIBLE_PATIENT", true), ("MASQUE_PS", false)]);
    assert_eq!(ps_only.mssante_audience(), Ok(ProfessionalsOnly));
    let patient_only = with_flags(&[("DESTMSSANTEPAT", true), ("MASQUE_PS", true), ("DESTDMP", false)]);
    assert_eq!(patient_only.mssante_audience(), Ok(PatientOnly));
    let secret = with_flags(&[("DESTMSSANTEPAT", true), ("CONNEXION_SECRETE", true)]);
    assert!(secret.mssante_audience().is_err());
    let masked_to_ps =
        with_flags(&[("DESTMSSANTEPS", true), ("MASQUE_PS", true), ("INVISIBLE_PATIENT", true)]);
    assert!(masked_to_ps.mssante_audience().is_err(), "a document masked to professionals never goes to one");
}
