//! Documents end to end with the real binary: `POST /cda`, the drop folder, ORU^R01 over MLLP.
//!
//! Servers come from the shared harness ([`Relais`]); the HTTP calls here are async (the tests run on tokio),
//! so they are small functions over the harness's addresses rather than its blocking helpers.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::harness::{Relais, TIMEOUT, mllp_send, sample};

/// The drop folder (`<data_dir>/inbox`).
fn inbox(relais: &Relais) -> PathBuf {
    relais.data_dir().join("inbox")
}

async fn post_cda(relais: &Relais, body: Vec<u8>, content_type: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/cda", relais.http_url()))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn messages(relais: &Relais) -> Vec<Value> {
    let url = format!("{}/api/messages?limit=1000", relais.http_url());
    let value: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    value.as_array().unwrap().clone()
}

async fn message(relais: &Relais, id: u64) -> Value {
    messages(relais).await.into_iter().find(|m| m["id"] == id).unwrap_or_else(|| panic!("no entry #{id}"))
}

const GOOD: [&str; 8] = [
    "cda/ans-testcontenucda_LDL-SES_2022.01.xml",
    "cda/ans-testcontenucda_BIO-CR-BIO_2024.01_TSH_1.xml",
    "cda/ans-testcontenucda_IMG_CR_IMG_2024.01_CDA-R2-Niveau-1.xml",
    "cda/ans-testcontenucda_eP-MED-DM_2024.01_PosoStruct.xml",
    "cda/own_CR-URG_15507-7_N1.xml",
    "cda/own_CR-OP_34874-8_N1.xml",
    "cda/own_CR-OP_34874-8_N1_RPLC.xml",
    "cda/own_LDL-SES_11490-0_N1_text.xml",
];

#[tokio::test]
async fn post_cda_journals_each_document_before_answering_202() {
    let server = Relais::start_with(&[]);
    for file in GOOD {
        let (status, body) = post_cda(&server, sample(file), "application/hl7-cda+xml").await;
        assert_eq!(status, 202, "{file}: {body}");
        let id = body["id"].as_u64().expect("id");
        let entry = message(&server, id).await;
        assert_ne!(entry["state"], "rejected", "{file}");
        assert_eq!(entry["kind"], "cda", "{file}");
        assert_eq!(entry["transport"], "http", "{file}");
        assert_eq!(entry["size"], sample(file).len(), "{file}");
        assert!(entry["message_type"].as_str().unwrap().starts_with("CDA^"), "{file}: {entry}");
    }
    // Sent again: the same entry, nothing new.
    let (status, body) = post_cda(&server, sample(GOOD[0]), "application/xml").await;
    assert_eq!(status, 202);
    assert_eq!(body["duplicate"], true);
    assert_eq!(messages(&server).await.len(), GOOD.len());
}

#[tokio::test]
async fn bad_documents_get_a_4xx_with_the_reason_and_are_kept_as_rejected() {
    let server = Relais::start_with(&[("RELAIS__DOCUMENTS__MAX_SIZE", "200000")]);
    let cases = [
        ("cda/bad/not-xml.xml", 400, "not XML"),
        ("cda/bad/wrong-root.xml", 400, "not a CDA R2 document"),
        ("cda/bad/wrong-typeid.xml", 400, "ClinicalDocument/typeId"),
        ("cda/bad/no-code.xml", 400, "ClinicalDocument/code"),
        ("cda/bad/not-loinc.xml", 400, "LOINC"),
        ("cda/bad/unknown-loinc.xml", 400, "not in the XDS tables"),
        ("cda/bad/no-recordtarget.xml", 400, "ClinicalDocument/recordTarget"),
        ("cda/bad/doctype-xxe.xml", 400, "DOCTYPE"),
        ("cda/bad/nonxml-not-pdf.xml", 400, "not a PDF"),
        ("cda/bad/truncated.xml", 400, "XML"),
        ("cda/ans-testcontenucda_eP-MED-DM_2024.01_PosoStruct.xml", 413, "too large"),
    ];
    for (file, expected, words) in cases {
        let (status, body) = post_cda(&server, sample(file), "application/xml").await;
        assert_eq!(status, expected, "{file}: {body}");
        let reason = body["error"].as_str().unwrap();
        assert!(reason.contains(words), "{file}: {reason}");
        let entry = message(&server, body["id"].as_u64().expect("rejected documents are journaled")).await;
        assert_eq!(entry["state"], "rejected", "{file}");
        assert_eq!(entry["reason"].as_str(), Some(reason), "{file}");
        assert_eq!(entry["kind"], "cda");
    }
    let (status, body) = post_cda(&server, sample(GOOD[4]), "application/pdf").await;
    assert_eq!(status, 415, "{body}");
    assert_eq!(message(&server, body["id"].as_u64().unwrap()).await["state"], "rejected");

    // A different document reusing an accepted document's id is kept for review, not accepted.
    let (status, _) = post_cda(&server, sample(GOOD[4]), "application/xml").await;
    assert_eq!(status, 202);
    let changed = String::from_utf8(sample(GOOD[4])).unwrap().replace("<title>Compte rendu", "<title>CR");
    let (status, body) = post_cda(&server, changed.into_bytes(), "application/xml").await;
    assert_eq!(status, 409, "{body}");
}

async fn wait_for(what: &str, server: &Relais, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes `bytes` as `name` the safe way: a temporary name, then a rename into place.
fn drop_file(inbox: &Path, name: &str, bytes: &[u8]) {
    let tmp = inbox.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, inbox.join(name)).unwrap();
}

#[tokio::test]
async fn drop_folder_takes_settled_files_and_sorts_them() {
    let server = Relais::start_with(&[("RELAIS__FOLDER__SETTLE_SECS", "1")]);
    let inbox = inbox(&server);
    wait_for("the inbox", &server, || inbox.join(".done").is_dir()).await;

    for (n, file) in GOOD.iter().enumerate() {
        drop_file(&inbox, &format!("doc{n}.xml"), &sample(file));
    }
    drop_file(&inbox, "oru.hl7", &sample("oru/ans-transdoc_ORU_R01_CR-BIO_DMP-MSS.hl7"));
    drop_file(&inbox, "adt.er7", &sample("bench/adt_a01_fr.hl7"));
    drop_file(&inbox, "pas-un-cda.xml", &sample("cda/bad/wrong-root.xml"));
    drop_file(&inbox, "notes.pdf", b"%PDF-1.4 not for Relais");
    let done = inbox.join(".done");
    let rejected = inbox.join(".rejected");
    wait_for("files to be sorted", &server, || {
        (0..GOOD.len()).all(|n| done.join(format!("doc{n}.xml")).exists())
            && done.join("oru.hl7").exists()
            && done.join("adt.er7").exists()
            && rejected.join("pas-un-cda.xml").exists()
    })
    .await;
    let reason = std::fs::read_to_string(rejected.join("pas-un-cda.xml.reason")).unwrap();
    assert!(reason.contains("not a CDA R2 document"), "{reason}");
    assert!(!inbox.join("doc0.xml").exists());
    assert!(inbox.join("notes.pdf").exists(), "files of other kinds are left in place");
    assert_eq!(std::fs::read(done.join("doc0.xml")).unwrap(), sample(GOOD[0]));

    let messages = messages(&server).await;
    let from_folder: Vec<&Value> = messages.iter().filter(|m| m["transport"] == "folder").collect();
    assert_eq!(from_folder.len(), GOOD.len() + 3, "{messages:?}");
    let by_peer =
        |name: &str| from_folder.iter().find(|m| m["peer"] == format!("folder:{name}")).copied().unwrap();
    for n in 0..GOOD.len() {
        let entry = by_peer(&format!("doc{n}.xml"));
        assert_eq!(entry["kind"], "cda", "{entry}");
        assert_ne!(entry["state"], "rejected", "{entry}");
    }
    assert_eq!(by_peer("oru.hl7")["kind"], "hl7v2");
    assert_ne!(by_peer("oru.hl7")["state"], "rejected");
    assert_ne!(by_peer("adt.er7")["state"], "rejected");
    assert_eq!(by_peer("pas-un-cda.xml")["state"], "rejected");
}

#[tokio::test]
async fn drop_folder_never_takes_a_growing_file() {
    let server = Relais::start_with(&[("RELAIS__FOLDER__SETTLE_SECS", "2")]);
    let inbox = inbox(&server);
    wait_for("the inbox", &server, || inbox.join(".done").is_dir()).await;
    let document = sample(GOOD[1]);
    let path = inbox.join("en-cours.xml");
    let mut file = std::fs::File::create(&path).unwrap();
    // Written in pieces for about 4 s, each pause shorter than the settle time.
    let chunks: Vec<&[u8]> = document.chunks(document.len() / 10 + 1).collect();
    for chunk in &chunks {
        file.write_all(chunk).unwrap();
        file.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(path.exists(), "the file was taken while still being written");
        assert!(messages(&server).await.is_empty(), "a half-written file was journaled");
    }
    drop(file);
    let done = inbox.join(".done/en-cours.xml");
    wait_for("the finished file", &server, || done.exists()).await;
    assert_eq!(std::fs::read(&done).unwrap(), document);
    let messages = messages(&server).await;
    assert_eq!(messages.len(), 1);
    assert_ne!(messages[0]["state"], "rejected");
    assert_eq!(messages[0]["size"], document.len());
}

#[tokio::test]
async fn oru_r01_over_mllp_is_acknowledged_aa_once_journaled() {
    let server = Relais::start_with(&[]);
    for file in ["oru/ans-transdoc_ORU_R01_CR-BIO_DMP-MSS.hl7", "oru/own_ORU_R01_CR-URG_DMP-MSS.hl7"] {
        let message = String::from_utf8(sample(file)).unwrap().replace("\r\n", "\r").replace('\n', "\r");
        let addr = server.mllp_addr();
        let ack = tokio::task::spawn_blocking(move || mllp_send(addr, message.as_bytes())).await.unwrap();
        let ack = String::from_utf8_lossy(&ack).into_owned();
        let msa = ack.split('\r').find(|s| s.starts_with("MSA|")).unwrap_or_else(|| panic!("{file}: {ack}"));
        assert!(msa.starts_with("MSA|AA|"), "{file}: {ack}");
    }
    let messages = messages(&server).await;
    assert_eq!(messages.len(), 2);
    for entry in &messages {
        assert_eq!(entry["kind"], "hl7v2");
        assert_ne!(entry["state"], "rejected");
        assert!(entry["message_type"].as_str().unwrap().starts_with("ORU^R01"));
    }
}

/// The Python that has the independent validator (fhir.resources, R4B models): the venv made by
/// `scripts/setup.d/20-fhir-validator.sh`, else a `python3` that already has it.
fn fhir_validator_python() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let candidates = [home.join(".cache/relais/fhir-venv/bin/python"), PathBuf::from("python3")];
    candidates.into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import fhir.resources.R4B.bundle"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

const VALIDATE: &str = r#"
import json, sys
from fhir.resources.R4B.bundle import Bundle
bad = 0
for path in sys.argv[1:]:
    data = json.load(open(path, encoding="utf-8"))
    try:
        Bundle.model_validate(data)
    except Exception as e:
        bad += 1
        print(path, " ".join(str(e).split()))
    urls = {e["fullUrl"] for e in data["entry"]}
    for e in data["entry"]:
        for key in ("subject", "authenticator"):
            ref = e["resource"].get(key, {}).get("reference")
            if ref and ref not in urls:
                bad += 1
                print(path, "unresolved", ref)
        if "request" not in e:
            bad += 1
            print(path, "transaction entry without request")
sys.exit(1 if bad else 0)
"#;

#[test]
fn document_bundles_pass_the_independent_fhir_validator() {
    let Some(python) = fhir_validator_python() else {
        eprintln!(
            "\n*** SKIPPED: fhir.resources is not installed: run scripts/setup.d/20-fhir-validator.sh (or \
             scripts/test.sh) first ***\n"
        );
        return;
    };
    let mapper = relais::documents::DocumentMapper::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/tables/xds"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let inputs = GOOD.iter().map(|f| (relais::facts::MessageKind::Cda, *f)).chain([
        (relais::facts::MessageKind::Hl7v2, "oru/own_ORU_R01_CR-URG_DMP-MSS.hl7"),
        (relais::facts::MessageKind::Hl7v2, "oru/own_ORU_R01_CR-URG_PROV.hl7"),
    ]);
    for (n, (kind, file)) in inputs.enumerate() {
        let doc = mapper.map_document(kind, &sample(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let path = dir.path().join(format!("{n}.json"));
        std::fs::write(&path, &doc.mapped.bundle).unwrap();
        files.push(path);
    }
    let output = Command::new(python).arg("-c").arg(VALIDATE).args(&files).output().unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `relais convert` takes a CDA too: a transaction Bundle whose DocumentReference carries the LOINC type; a bad
/// document exits non-zero with one line naming the XML element, and nothing on stdout.
#[test]
fn convert_maps_a_cda_file_and_refuses_a_bad_one() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = |file: &str| {
        Command::new(env!("CARGO_BIN_EXE_relais"))
            .arg("convert")
            .arg(root.join(file))
            .current_dir(root)
            .output()
            .expect("relais convert")
    };
    let out = run("test-messages/cda/own_CR-URG_15507-7_N1.xml");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bundle: Value = serde_json::from_slice(&out.stdout).expect("a JSON Bundle");
    assert_eq!(bundle["type"], "transaction");
    let reference = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .find(|r| r["resourceType"] == "DocumentReference")
        .expect("a DocumentReference");
    let codings = reference["type"]["coding"].as_array().unwrap();
    assert!(
        codings.iter().any(|c| c["system"] == "http://loinc.org" && c["code"] == "15507-7"),
        "{codings:?}"
    );

    let bad = run("test-messages/cda/bad/no-recordtarget.xml");
    assert_eq!(bad.status.code(), Some(1));
    assert!(bad.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("recordTarget"), "{stderr}");
}
