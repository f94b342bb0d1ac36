//! Sinks: XDM package, ITI-41 request, MSSanté mail, directory and notifications, against real tools and
//! servers (xmllint with the official XDS.b / ebRS 3.0 schemas, aiosmtpd, an HTTPS endpoint with mTLS).

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use relais::sinks::ebrim::{Author, Code, Submission, SubmissionParams, XdsDocument};
use relais::sinks::xdm;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// xmllint, installed on a fresh Debian machine if missing (as scripts/setup.d/50-xmllint.sh does).
fn xmllint() -> &'static str {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if Command::new("xmllint").arg("--version").output().is_err() {
            let status = Command::new("sh").arg(root().join("scripts/setup.d/50-xmllint.sh")).status();
            assert!(
                matches!(status, Ok(s) if s.success()),
                "xmllint missing: run scripts/setup.d/50-xmllint.sh"
            );
        }
    });
    "xmllint"
}

/// Validates `file` against `schema` (relative to test-messages/schemas/xds-b); returns xmllint's stderr.
pub(crate) fn validate(schema: &str, file: &Path) -> Result<String, String> {
    let dir = root().join("test-messages/schemas/xds-b");
    let out = Command::new(xmllint())
        .env("XML_CATALOG_FILES", dir.join("catalog.xml"))
        .args(["--nonet", "--noout", "--schema"])
        .arg(dir.join(schema))
        .arg(file)
        .output()
        .expect("xmllint runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() && stderr.contains("validates") { Ok(stderr) } else { Err(stderr) }
}

/// The ANS discharge letter (LDL-SES) with the XDS metadata its header gives.
pub(crate) fn ldl_document() -> XdsDocument {
    let content =
        std::fs::read(root().join("test-messages/sinks/ans-testcontenucda_LDL-SES_2022.01.xml")).unwrap();
    XdsDocument {
        unique_id: "1.2.250.1.213.1.1.9.2.20220101.1".into(),
        title: "Lettre de liaison à la sortie d'un établissement de soins".into(),
        mime_type: "text/xml".into(),
        class_code: Code::new("11", "1.2.250.1.213.1.1.4.1", "Synthèse"),
        type_code: Code::new("11490-0", "2.16.840.1.113883.6.1", "Lettre de liaison à la sortie"),
        format_code: Code::new("urn:asip:ci-sis:ldl-ses:2017", "1.2.250.1.213.1.1.4.2.282", "LDL-SES"),
        confidentiality: vec![Code::new("N", "2.16.840.1.113883.5.25", "Normal")],
        healthcare_facility_type: Code::new("SA01", "1.2.250.1.71.4.2.4", "Etablissement public de santé"),
        practice_setting: Code::new("ETABLISSEMENT", "1.2.250.1.213.1.1.4.9", "Etablissement de santé"),
        event_codes: vec![],
        creation_time: "20220101120000".into(),
        service_start: Some("20211220080000".into()),
        service_stop: Some("20220101100000".into()),
        language_code: "fr-FR".into(),
        patient_id: "279035121518989^^^&1.2.250.1.213.1.4.8&ISO^NH".into(),
        source_patient_id: "123456^^^&1.2.250.1.999.1.1&ISO^PI".into(),
        source_patient_info: vec![
            "PID-5|TEST^Jeanne^^^^^L".into(),
            "PID-7|19790321".into(),
            "PID-8|F".into(),
        ],
        author: Author {
            person: Some("801234567897^Réault^Pierre^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS".into()),
            institution: Some("CH Test^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^1530000000".into()),
            role: Some("Médecin".into()),
            specialty: Some("SM26^Qualifié en médecine générale^1.2.250.1.213.1.1.4.5".into()),
        },
        legal_authenticator: Some("801234567897^Réault^Pierre^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS".into()),
        replaces: None,
        content,
        pdf: None,
    }
}

pub(crate) fn params() -> SubmissionParams {
    SubmissionParams {
        source_id: "1.2.250.1.999.3".into(),
        unique_id_root: "1.2.250.1.999.3.1".into(),
        content_type: Code::new("07", "1.2.250.1.213.1.1.4.2.2", "Consultation externe"),
        author: Author {
            person: None,
            institution: Some("CH Test^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^1530000000".into()),
            role: None,
            specialty: None,
        },
        intended_recipients: vec!["|medecin.traitant@test.mssante.fr".into()],
    }
}

#[test]
fn xdm_metadata_validates_against_lcm_xsd_and_document_is_intact() {
    let submission = Submission::new(ldl_document(), params(), jiff::Timestamp::now());
    let zip = xdm::build(&submission, "Relais test").unwrap();
    let mut archive = zip::ZipArchive::new(Cursor::new(zip)).unwrap();
    let mut metadata = Vec::new();
    archive.by_name(xdm::METADATA_PATH).unwrap().read_to_end(&mut metadata).unwrap();
    let mut doc = Vec::new();
    archive.by_name(xdm::DOCUMENT_PATH).unwrap().read_to_end(&mut doc).unwrap();
    assert_eq!(doc, submission.document.content, "the CDA travels byte for byte");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("METADATA.XML");
    std::fs::write(&path, &metadata).unwrap();
    validate("ebRS/lcm.xsd", &path).unwrap_or_else(|e| panic!("METADATA.XML invalid: {e}"));
    let text = String::from_utf8(metadata).unwrap();
    assert!(text.contains(&submission.hash) && text.contains("<rim:Value>DOC0001.XML</rim:Value>"));

    // The same check refuses a broken file: the validator is really looking.
    let broken = text.replace("rim:ExtrinsicObject", "rim:ExtrinsicObjet");
    std::fs::write(&path, broken).unwrap();
    assert!(validate("ebRS/lcm.xsd", &path).is_err());
}

mod dmp;
mod mail;
mod pki;
mod vihf;

/// `relais directory import` then `lookup`, through the real binary.
#[test]
fn directory_import_and_lookup_from_the_command_line() {
    let data = tempfile::tempdir().unwrap();
    let file = root().join("test-messages/directory/extraction-mssante-synthetic.txt");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_relais"))
            .arg("directory")
            .args(["--data", data.path().to_str().unwrap()])
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["import", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "7 lines, 3 practitioners, 4 mailboxes imported, 3 lines skipped"
    );
    let out = run(&["lookup", "801234567897"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().collect::<Vec<_>>(),
        vec!["p.reault@medecin.mssante.fr", "pierre.reault@autre-operateur.mssante.fr"]
    );
    let out = run(&["lookup", "10000099999"]);
    assert_eq!(out.status.code(), Some(1), "unknown RPPS: exit 1, nothing printed");
    assert!(out.stdout.is_empty());
    // A file without the columns is refused, naming the file and line; the directory is kept.
    let bad = data.path().join("bad.txt");
    std::fs::write(&bad, "nom|prenom\nA|B\n").unwrap();
    let out = run(&["import", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.txt:1: no `Adresse BAL` column"));
    assert!(run(&["lookup", "10000023084"]).status.success());
}
mod notify;

/// From the documents stage to the DMP body: every CDA sample the documents stage maps gives an ITI-41
/// request whose SOAP body validates, and the replacement sample carries its RPLC association.
#[test]
fn documents_stage_metadata_gives_valid_iti41_bodies() {
    use relais::documents::DocumentMapper;
    use relais::sinks::iti41::build_request;
    use relais::sinks::vihf::{Vihf, VihfConfig};

    let mapper = DocumentMapper::load(&root().join("mappings/tables/xds")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for name in ["own_CR-OP_34874-8_N1.xml", "own_CR-OP_34874-8_N1_RPLC.xml", "own_CR-URG_15507-7_N1.xml"] {
        let raw = std::fs::read(root().join("test-messages/cda").join(name)).unwrap();
        let mapped = mapper.map_cda(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
        let meta = &mapped.details.metadata;
        let doc = XdsDocument::from_metadata(meta, raw.clone(), None);
        let submission = Submission::new(
            doc,
            SubmissionParams::from_metadata(meta, "1.2.250.1.999.3", ""),
            jiff::Timestamp::now(),
        );
        assert_eq!(submission.entry_uuid, meta.entry.entry_uuid, "one entryUUID for one uniqueId");
        let request = build_request(
            &submission,
            "https://dmp.test/repository",
            &Vihf::new(&VihfConfig::default()).unwrap(),
            jiff::Timestamp::now(),
        )
        .unwrap();
        // Inline the document (base64) in place of the xop:Include, keep the SOAP Body child.
        let text = String::from_utf8_lossy(&request.body).into_owned();
        let body = &text[text.find("<soap:Body>").unwrap() + 11..text.find("</soap:Body>").unwrap()];
        let start = body.find("<xop:Include").unwrap();
        let end = start + body[start..].find("/>").unwrap() + 2;
        use base64::Engine;
        let inlined = format!(
            "{}{}{}",
            &body[..start],
            base64::engine::general_purpose::STANDARD.encode(&raw),
            &body[end..]
        );
        let path = dir.path().join(format!("{name}.body.xml"));
        std::fs::write(&path, &inlined).unwrap();
        validate("IHE/XDS.b_DocumentRepository.xsd", &path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            inlined.contains("urn:ihe:iti:2007:AssociationType:RPLC"),
            name.contains("RPLC"),
            "{name}"
        );
        checked += 1;
    }
    assert_eq!(checked, 3);
}
mod consume;

/// ORU^R01 samples through the documents stage to the MSSanté and DMP inputs: recipients from PRT RCT,
/// flags from OBX MetaDMPMSS, and the masking matrix applied.
#[test]
fn oru_samples_become_mail_and_dmp_jobs() {
    use relais::documents::DocumentMapper;
    use relais::facts::MessageKind;
    use relais::sinks::iti41::check_before_feed;
    use relais::sinks::job::DocumentJob;
    use relais::sinks::mail::{self, Addressee, MssConfig};

    let mapper = DocumentMapper::load(&root().join("mappings/tables/xds")).unwrap();
    let cfg =
        MssConfig { from: "documents@ch-test.mssante.fr".into(), nil: "NIL".into(), ..MssConfig::default() };
    let read = |name: &str| {
        let raw = std::fs::read(root().join("test-messages/oru").join(name)).unwrap();
        DocumentJob::from_journal(
            &mapper,
            MessageKind::Hl7v2,
            &raw,
            "1.2.250.1.999.3",
            "",
            jiff::Timestamp::now(),
        )
        .unwrap()
    };

    let job = read("own_ORU_R01_CR-URG_DMP-MSS.hl7");
    assert_eq!(job.professionals, vec!["adam.hoda@test-ci-sis.mssante.fr"]);
    assert!(job.flags.dest_mss_ps && job.flags.dest_mss_pat && job.flags.dest_dmp && !job.flags.masque_ps);
    assert!(job.ack_requested);
    let mails = mail::build(&job.mail_request(&[]), &cfg).unwrap();
    let who: Vec<Addressee> = mails.iter().map(|m| m.addressee).collect();
    assert_eq!(who, vec![Addressee::Professionals, Addressee::Patient]);
    let ps = mails[0].message.as_ref().unwrap();
    assert_eq!(
        ps.envelope().to().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        vec!["adam.hoda@test-ci-sis.mssante.fr"]
    );
    let patient_reached = mails[1].message.is_ok();
    assert_eq!(patient_reached, job.patient.ins_qualified, "patient mailbox only with a qualified INS");
    assert_eq!(
        check_before_feed(&job.submission, job.patient.ins_qualified, false).is_ok(),
        job.patient.ins_qualified
    );

    // Masked to professionals yet addressed to them: refused with the reason, no mail at all.
    let job = read("own_ORU_R01_CR-URG_MASQUE_PS.hl7");
    let err = mail::build(&job.mail_request(&[]), &cfg).unwrap_err();
    assert_eq!(err.as_str(), "failed");
    assert!(err.reason().unwrap().contains("MASQUE_PS=Y"));
}
mod acks;
mod e2e;
