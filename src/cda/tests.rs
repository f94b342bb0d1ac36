use super::*;

fn sample(name: &str) -> Vec<u8> {
    let path = format!("{}/test-messages/cda/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn header(name: &str) -> CdaHeader {
    extract(&sample(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn ldl_ses_level_3_header() {
    let h = header("ans-testcontenucda_LDL-SES_2022.01.xml");
    assert_eq!(h.type_code(), "11490-0");
    assert_eq!(h.code.system, LOINC_OID);
    assert_eq!(h.body, Body::Structured);
    assert_eq!(h.body.level(), 3);
    assert_eq!(h.language.as_deref(), Some("fr-FR"));
    assert_eq!(h.confidentiality_code(), "N");
    assert!(h.template_ids.iter().any(|t| t == "1.2.250.1.213.1.1.1.29"), "{:?}", h.template_ids);
    let ins = h.patient.ins.as_ref().expect("INS");
    assert_eq!(ins.oid, "1.2.250.1.213.1.4.10");
    assert_eq!(ins.kind, InsKind::Test);
    assert!(h.patient.ins_qualified());
    assert!(h.patient.ipp.is_some());
    let gp = h.gp.as_ref().expect("médecin traitant (participant INF / PCP)");
    assert!(gp.id.as_ref().is_some_and(|id| id.root == IDNPS_OID));
    assert_eq!(h.recipients.len(), 2);
    assert_eq!(h.practice_setting.as_ref().map(|c| c.code.as_str()), Some("ETABLISSEMENT"));
    let encounter = h.encounter.as_ref().expect("encompassingEncounter");
    assert_eq!(encounter.facility_type.as_ref().map(|c| c.code.as_str()), Some("SA01"));
    assert_eq!(h.service_events[0].code.as_ref().map(|c| c.code.as_str()), Some("IMP"));
    assert_eq!(h.service_period().0, Some("20191029111700+0100"));
    assert_eq!(h.service_period().1, Some("20191203133000+0100"));
    assert!(h.replaces.is_none());
}

#[test]
fn imaging_level_1_pdf_with_replacement() {
    let h = header("ans-testcontenucda_IMG_CR_IMG_2024.01_CDA-R2-Niveau-1.xml");
    assert_eq!(h.type_code(), "18748-4");
    match &h.body {
        Body::NonXml { media_type, encoded_size } => {
            assert_eq!(media_type, "application/pdf");
            assert!(*encoded_size > 50_000, "{encoded_size}");
        }
        other => panic!("expected a nonXMLBody, got {other:?}"),
    }
    assert_eq!(h.body.level(), 1);
    assert!(h.template_ids.iter().any(|t| t == "1.3.6.1.4.1.19376.1.2.20"));
    assert_eq!(h.version, Some(2));
    let replaced = h.replaces.as_ref().expect("relatedDocument RPLC");
    assert!(!replaced.root.is_empty());
    let author = &h.authors[0];
    assert_eq!(author.specialty.as_ref().map(|c| c.code.as_str()), Some("G15_10/SM44"));
    assert!(author.rpps().is_some(), "author id should be an IDNPS with an RPPS");
}

#[test]
fn biology_report_author_and_custodian() {
    let h = header("ans-testcontenucda_BIO-CR-BIO_2024.01_TSH_1.xml");
    assert_eq!(h.type_code(), "11502-2");
    assert_eq!(h.body, Body::Structured);
    assert_eq!(h.id.root, "1.2.250.1.213.1.1.1.55.2024.9.1");
    assert_eq!(h.title.as_deref(), Some("Compte rendu d'examens biologiques"));
    assert_eq!(h.effective_time.as_deref(), Some("20210401171000+0100"));
    let author = &h.authors[0];
    assert_eq!(author.rpps(), Some("01234534765"));
    assert_eq!(author.family.as_deref(), Some("CAMPARINI"));
    assert_eq!(author.time.as_deref(), Some("20210104160527+0100"));
    let org = author.organization.as_ref().expect("author organization");
    assert_eq!(org.id.as_ref().map(|i| i.extension.as_str()), Some("1120459876"));
    let custodian = h.custodian.as_ref().expect("custodian");
    assert_eq!(custodian.name.as_deref(), Some("Laboratoire des charmes"));
    assert!(h.legal_authenticator.is_some());
    assert_eq!(h.patient.birth_family.as_deref(), Some("PAT-TROIS"));
    assert_eq!(h.patient.first_given.as_deref(), Some("DOMINIQUE"));
    assert_eq!(h.patient.given_names.as_deref(), Some("DOMINIQUE MARIE-LOUISE"));
    assert_eq!(h.patient.gender.as_deref(), Some("F"));
    assert_eq!(h.patient.birth_time.as_deref(), Some("19790328"));
    assert_eq!(h.patient.birth_place.as_deref(), Some("51215"));
    assert_eq!(h.service_events.len(), 3);
    assert_eq!(
        h.encounter.as_ref().and_then(|e| e.facility_type.as_ref()).map(|c| c.code.as_str()),
        Some("SA25")
    );
    assert!(!h.orders.is_empty(), "inFulfillmentOf/order/id");
}

#[test]
fn prescription_header() {
    let h = header("ans-testcontenucda_eP-MED-DM_2024.01_PosoStruct.xml");
    assert_eq!(h.type_code(), "57833-6");
    assert_eq!(h.body, Body::Structured);
    assert_eq!(h.practice_setting.as_ref().map(|c| c.code.as_str()), Some("AMBULATOIRE"));
    assert!(h.patient.ins_qualified());
}

#[test]
fn own_level_1_documents() {
    for (name, type_code, conf) in [
        ("own_CR-URG_15507-7_N1.xml", "15507-7", "N"),
        ("own_CR-OP_34874-8_N1.xml", "34874-8", "R"),
        ("own_LDL-SES_11490-0_N1_text.xml", "11490-0", "N"),
    ] {
        let h = header(name);
        assert_eq!(h.type_code(), type_code, "{name}");
        assert_eq!(h.confidentiality_code(), conf, "{name}");
        assert_eq!(h.body.level(), 1, "{name}");
        assert!(h.patient.ins_qualified(), "{name}");
        assert_eq!(h.authors[0].rpps(), Some("10100000009"), "{name}");
    }
    let h = header("own_LDL-SES_11490-0_N1_text.xml");
    assert!(matches!(&h.body, Body::NonXml { media_type, .. } if media_type == "text/plain"));
}

#[test]
fn replacement_names_the_replaced_document() {
    let h = header("own_CR-OP_34874-8_N1_RPLC.xml");
    assert_eq!(h.replaces.as_ref().map(|i| i.root.as_str()), Some("1.2.250.1.71.4.2.7.9.34874.1"));
    assert_eq!(h.version, Some(2));
    assert_eq!(h.set_id.as_ref().map(|i| i.root.as_str()), Some("1.2.250.1.71.4.2.7.9.34874.1.0"));
}

#[test]
fn without_ins_the_identity_is_not_qualified() {
    let h = header("own_CR-OP_34874-8_N1_no-INS.xml");
    assert!(h.patient.ins.is_none());
    assert!(!h.patient.ins_qualified());
    assert_eq!(h.patient.ipp.as_ref().map(|i| i.extension.as_str()), Some("IPP-0042"));
}

#[test]
fn missing_trait_makes_the_ins_unqualified() {
    let text = String::from_utf8(sample("own_CR-URG_15507-7_N1.xml")).unwrap();
    let without_birth = text.replace("<birthTime value=\"19800512\"/>", "");
    let h = extract(without_birth.as_bytes()).unwrap();
    assert!(h.patient.ins.is_some());
    assert!(!h.patient.ins_qualified());
}

fn refusal(name: &str) -> CdaError {
    let path = format!("{}/test-messages/cda/bad/{name}", env!("CARGO_MANIFEST_DIR"));
    match extract(&std::fs::read(&path).unwrap()) {
        Ok(h) => panic!("{name} was accepted as {h:?}"),
        Err(e) => e,
    }
}

#[test]
fn bad_documents_are_refused_naming_the_element() {
    let cases = [
        ("not-xml.xml", "document", "not XML"),
        ("truncated.xml", "XML", ""),
        ("wrong-root.xml", "document", "root element is `Document`"),
        ("wrong-namespace.xml", "document", "urn:hl7-org:v3"),
        ("wrong-typeid.xml", "ClinicalDocument/typeId", "POCD_HD000041"),
        ("no-id.xml", "ClinicalDocument/id", "missing"),
        ("no-code.xml", "ClinicalDocument/code", "missing"),
        ("not-loinc.xml", "ClinicalDocument/code", "2.16.840.1.113883.6.96"),
        ("no-recordtarget.xml", "ClinicalDocument/recordTarget", "missing"),
        ("doctype-xxe.xml", "XML", "DOCTYPE"),
        ("nonxml-not-pdf.xml", "ClinicalDocument/component/nonXMLBody/text", "not a PDF"),
    ];
    for (name, element, words) in cases {
        let e = refusal(name);
        assert_eq!(e.element, element, "{name}: {e}");
        assert!(e.reason.contains(words), "{name}: {e}");
    }
}

#[test]
fn undeclared_entity_is_not_expanded() {
    let text = String::from_utf8(sample("own_CR-URG_15507-7_N1.xml")).unwrap();
    let with_entity = text.replace("<title>Compte rendu", "<title>&nbsp;Compte rendu");
    let e = extract(with_entity.as_bytes()).unwrap_err();
    assert!(e.reason.contains("undeclared entity"), "{e}");
    let with_predefined = text.replace("<title>Compte rendu", "<title>R&amp;D &#233; Compte rendu");
    let h = extract(with_predefined.as_bytes()).unwrap();
    assert!(h.title.unwrap().starts_with("R&D é Compte rendu"));
}

#[test]
fn latin1_documents_are_transcoded() {
    let text = String::from_utf8(sample("own_CR-OP_34874-8_N1.xml")).unwrap();
    let latin = text.replace("encoding=\"UTF-8\"", "encoding=\"ISO-8859-1\"");
    let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode(&latin);
    assert_ne!(bytes.as_ref(), latin.as_bytes(), "the sample must contain non-ASCII text");
    let h = extract(&bytes).unwrap();
    assert_eq!(h.code.display, "CR opératoire");
    assert_eq!(encoding_of(&bytes), "ISO-8859-1");
    assert_eq!(encoding_of(latin.as_bytes()), "ISO-8859-1");
    assert_eq!(encoding_of(b"<ClinicalDocument/>"), "UTF-8");
}

#[test]
fn debug_never_prints_patient_values() {
    let h = header("ans-testcontenucda_BIO-CR-BIO_2024.01_TSH_1.xml");
    let shown = format!("{h:?} {:?} {:?}", h.patient, h.authors);
    for secret in ["279035121518989", "PAT-TROIS", "19790328", "CAMPARINI"] {
        assert!(!shown.contains(secret), "{shown}");
    }
}
