//! Mapping: `relais convert` (the real binary) on every ANS PAM FR sample and on one message per event,
//! asserting what a GP-notification integrator checks; the routing facts through the library; the
//! independent validator (fhir.resources, R4B models) on every Bundle; bad inputs; `relais check`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use relais::facts::{EventClass, Facts};
use relais::mapping::{BundleKind, Mapper};
use serde_json::Value;

use super::harness::{samples_in, test_messages};

const INS: &str = "189027512345654";

fn mappings_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings")
}

fn relais(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_relais"))
        .args(args)
        .env("RELAIS_MAPPINGS", mappings_dir())
        .output()
        .expect("run relais")
}

/// Runs `relais convert` and returns (stdout, parsed Bundle); fails the test on a non-zero exit.
fn convert_as(file: &Path, kind: &str) -> (String, Value) {
    let path = file.to_str().expect("utf-8 path");
    let out = relais(&["convert", "--as", kind, path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: exit {:?}, stderr: {stderr}", file.display(), out.status.code());
    assert!(stderr.is_empty(), "{}: unexpected stderr: {stderr}", file.display());
    let text = String::from_utf8(out.stdout).expect("stdout is UTF-8");
    let bundle: Value = serde_json::from_str(&text).expect("stdout is one JSON document");
    (text, bundle)
}

fn adt(name: &str) -> PathBuf {
    test_messages().join("adt").join(format!("{name}.hl7"))
}

fn convert(name: &str) -> Value {
    convert_as(&adt(name), "message").1
}

fn facts(name: &str) -> Facts {
    let mapper = Mapper::load(&mappings_dir()).expect("mappings load");
    let raw = std::fs::read(adt(name)).expect("read sample");
    mapper.convert(&raw, BundleKind::Message, false).expect("maps").facts
}

fn resources<'v>(bundle: &'v Value, kind: &str) -> Vec<&'v Value> {
    bundle["entry"]
        .as_array()
        .map(|entries| entries.iter().map(|e| &e["resource"]).filter(|r| r["resourceType"] == kind).collect())
        .unwrap_or_default()
}

fn one<'v>(bundle: &'v Value, kind: &str) -> &'v Value {
    let found = resources(bundle, kind);
    assert_eq!(found.len(), 1, "expected one {kind}");
    found[0]
}

fn ext<'v>(resource: &'v Value, url_suffix: &str) -> Option<&'v Value> {
    resource["extension"]
        .as_array()?
        .iter()
        .find(|e| e["url"].as_str().is_some_and(|u| u.ends_with(url_suffix)))
}

fn sub<'v>(ext: &'v Value, name: &str) -> Option<&'v Value> {
    ext["extension"].as_array()?.iter().find(|e| e["url"] == name)
}

#[test]
fn every_ans_pam_fr_sample_converts_to_a_message_and_a_transaction() {
    let samples = samples_in("pam-fr");
    assert!(samples.len() >= 7, "the ANS samples are in test-messages/pam-fr");
    for file in samples.iter().filter(|p| p.extension().is_some_and(|x| x == "er7")) {
        let (_, message) = convert_as(file, "message");
        assert_eq!(message["type"], "message");
        assert_eq!(message["entry"][0]["resource"]["resourceType"], "MessageHeader");
        let patient = one(&message, "Patient");
        // ANS test patient PAT-TROIS, qualified (VALI) with a test INS-NIR.
        assert_eq!(patient["name"][0]["family"], "PAT-TROIS");
        assert_eq!(patient["birthDate"], "1979-03-28");
        let ins = patient["identifier"]
            .as_array()
            .expect("identifiers")
            .iter()
            .find(|i| i["value"] == "279035121518989");
        assert_eq!(ins.map(|i| &i["system"]), Some(&Value::from("urn:oid:1.2.250.1.213.1.4.10")));
        // ZFA-9 (DMP feeding opposition) reaches the routing facts: only the "OppositionAlimentation" sample.
        let mapper = Mapper::load(&mappings_dir()).expect("mappings load");
        let raw = std::fs::read(file).expect("read sample");
        let f = mapper.convert(&raw, BundleKind::Message, false).expect("maps").facts;
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(f.dmp_opposition, name.ends_with("_OppositionAlimentation.er7"), "{name}");
        assert!(f.ins_qualified && !f.patient_key.is_empty(), "{name}");
        let (_, transaction) = convert_as(file, "transaction");
        assert_eq!(transaction["type"], "transaction");
        assert!(resources(&transaction, "MessageHeader").is_empty());
    }
}

#[test]
fn the_same_message_gives_the_same_bundle() {
    let file = adt("a01_admission");
    let (first, _) = convert_as(&file, "message");
    let (second, _) = convert_as(&file, "message");
    assert_eq!(first, second);
    let pretty = relais(&["convert", "--pretty", file.to_str().unwrap()]);
    assert!(pretty.status.success());
    let pretty: Value = serde_json::from_slice(&pretty.stdout).expect("pretty JSON");
    assert_eq!(pretty, serde_json::from_str::<Value>(&first).unwrap(), "--pretty changes only the layout");
    let (t1, _) = convert_as(&file, "transaction");
    let (t2, _) = convert_as(&file, "transaction");
    assert_eq!(t1, t2);
}

#[test]
fn sau_entry_a04_e() {
    let b = convert("a04_sau_entry");
    let enc = one(&b, "Encounter");
    assert_eq!(enc["class"]["code"], "EMER");
    assert_eq!(enc["status"], "arrived");
    assert_eq!(enc["period"]["start"], "2026-07-14T10:20:00+02:00", "Paris summer time, real offset");
    assert_eq!(enc["serviceProvider"]["identifier"]["value"], "8782");
    assert_eq!(b["entry"][0]["resource"]["eventCoding"]["code"], "A04");
    let f = facts("a04_sau_entry");
    assert_eq!(f.event_class, Some(EventClass::SauEntry));
    assert_eq!(f.patient_class.as_deref(), Some("E"));
    assert_eq!(f.unit.as_deref(), Some("8782"));
    assert_eq!(f.message_type, "ADT^A04");
    assert_eq!((f.sending_application.as_str(), f.sending_facility.as_str()), ("DXCARE", "CHMAYENNE"));
    assert!(f.gp_known && f.ins_qualified && !f.dmp_opposition);
    assert_eq!(f.patient_key, "1.2.250.1.71.4.2.2.1|7788990");
}

#[test]
fn admission_from_the_emergency_department_a06_and_a01() {
    let b = convert("a06_admission_from_ed");
    assert_eq!(one(&b, "Encounter")["class"]["code"], "IMP");
    assert_eq!(facts("a06_admission_from_ed").event_class, Some(EventClass::Admission));
    let f = facts("a01_admission");
    assert_eq!(f.event_class, Some(EventClass::Admission));
    assert!(f.dmp_opposition, "ZFA-9 = IO reaches the routing facts");
    let b = convert("a01_admission");
    let patient = one(&b, "Patient");
    let gp = one(&b, "Practitioner");
    assert_eq!(gp["identifier"][0]["system"], "https://rpps.esante.gouv.fr");
    assert_eq!(gp["identifier"][0]["value"], "10003456789");
    assert_eq!(
        patient["generalPractitioner"][0]["reference"],
        format!("urn:uuid:{}", gp["id"].as_str().unwrap())
    );
    let zfa = ext(patient, "pam-fr-zfa-dmp").expect("ZFA kept");
    assert_eq!(sub(zfa, "feedingOpposition").map(|v| &v["valueCode"]), Some(&Value::from("IO")));
    // A05 (pre-admission) is not an admission.
    assert_eq!(facts("a05_preadmission").event_class, Some(EventClass::Update));
    assert_eq!(one(&convert("a05_preadmission"), "Encounter")["status"], "planned");
}

#[test]
fn discharge_is_not_a_death() {
    let b = convert("a03_discharge");
    let enc = one(&b, "Encounter");
    assert_eq!(enc["status"], "finished");
    assert_eq!(enc["period"]["end"], "2026-07-18T11:00:00+02:00");
    assert_eq!(enc["hospitalization"]["dischargeDisposition"]["coding"][0]["code"], "home");
    let patient = one(&b, "Patient");
    assert!(patient.get("deceasedBoolean").is_none() && patient.get("deceasedDateTime").is_none());
    assert_eq!(facts("a03_discharge").event_class, Some(EventClass::Discharge));
}

#[test]
fn death_by_each_of_the_three_signals() {
    // ZFM-2 = 9 on an A03.
    let b = convert("a03_death_zfm");
    assert_eq!(one(&b, "Patient")["deceasedBoolean"], true);
    assert_eq!(one(&b, "Encounter")["hospitalization"]["dischargeDisposition"]["coding"][0]["code"], "exp");
    assert_eq!(facts("a03_death_zfm").event_class, Some(EventClass::Death));
    // PID-29 (minute precision) on an A03: kept with its real offset.
    let b = convert("a03_death_pid29");
    assert_eq!(one(&b, "Patient")["deceasedDateTime"], "2026-07-18T03:10:00+02:00");
    assert_eq!(facts("a03_death_pid29").event_class, Some(EventClass::Death));
    // PID-30 = Y on an A31 (identity feed: no encounter, the message is about the Patient).
    let b = convert("a31_death_pid30");
    let patient = one(&b, "Patient");
    assert_eq!(patient["deceasedBoolean"], true);
    assert!(resources(&b, "Encounter").is_empty());
    let focus = &b["entry"][0]["resource"]["focus"][0]["reference"];
    assert_eq!(focus, &Value::from(format!("urn:uuid:{}", patient["id"].as_str().unwrap())));
    assert_eq!(facts("a31_death_pid30").event_class, Some(EventClass::Death));
}

#[test]
fn the_ins_is_carried_only_for_a_qualified_identity() {
    let (text, b) = convert_as(&adt("a01_admission"), "message");
    assert!(text.contains(INS), "VALI: the INS is carried");
    let patient = one(&b, "Patient");
    let ins = patient["identifier"].as_array().unwrap().iter().find(|i| i["value"] == INS).expect("INS");
    assert_eq!(ins["system"], "urn:oid:1.2.250.1.213.1.4.8");
    let status = sub(ext(patient, "fr-core-identity-reliability").unwrap(), "identityStatus").unwrap();
    assert_eq!(status["valueCoding"]["code"], "QUAL");
    for name in ["a01_ins_prov", "a01_ins_vali_dout"] {
        for kind in ["message", "transaction"] {
            let (text, _) = convert_as(&adt(name), kind);
            assert!(!text.contains(INS), "{name} ({kind}): the INS must appear nowhere");
        }
        let f = facts(name);
        assert!(!f.ins_qualified, "{name}");
        assert!(!format!("{f:?}").contains(INS), "{name}: not in the facts either");
    }
    let b = convert("a01_ins_prov");
    let patient = one(&b, "Patient");
    let status = sub(ext(patient, "fr-core-identity-reliability").unwrap(), "identityStatus").unwrap();
    assert_eq!(status["valueCoding"]["code"], "PROV");
    assert!(patient["meta"]["profile"][0].as_str().unwrap().ends_with("fr-core-patient"));
}

#[test]
fn latin9_with_escapes_is_decoded() {
    let b = convert("a04_latin9_escapes");
    let patient = one(&b, "Patient");
    assert_eq!(patient["name"][0]["family"], "CŒUR");
    assert_eq!(patient["name"][0]["given"][0], "ZÉPHYRINE");
    assert_eq!(patient["address"][0]["line"][0], "12 rue de l'Église & fils");
    assert_eq!(patient["address"][0]["line"][1], "B^t 3");
    let enc = one(&b, "Encounter");
    assert_eq!(enc["serviceProvider"]["display"], "Consultation | soins €");
    assert_eq!(enc["class"]["code"], "AMB");
    assert_eq!(enc["period"]["start"], "2026-12-01T09:15:00+01:00", "Paris winter time");
}

#[test]
fn cancels_say_what_they_undo() {
    let f = facts("a11_cancel_admission");
    assert_eq!((f.event_class, f.undoes.as_deref()), (Some(EventClass::Cancel), Some("A01")));
    assert_eq!(one(&convert("a11_cancel_admission"), "Encounter")["status"], "entered-in-error");
    let f = facts("a13_cancel_discharge");
    assert_eq!((f.event_class, f.undoes.as_deref()), (Some(EventClass::Cancel), Some("A03")));
    assert_eq!(one(&convert("a13_cancel_discharge"), "Encounter")["status"], "in-progress");
    let f = facts("a07_cancel_a06");
    assert_eq!((f.event_class, f.undoes.as_deref()), (Some(EventClass::Cancel), Some("A06")));
}

#[test]
fn z99_corrects_and_is_not_a_new_event() {
    let f = facts("z99_correction");
    assert_eq!((f.event_class, f.undoes.as_deref()), (Some(EventClass::Update), Some("A01")));
    let b = convert("z99_correction");
    let zbe = ext(one(&b, "Encounter"), "pam-fr-zbe-movement").expect("ZBE kept");
    assert_eq!(sub(zbe, "action").map(|v| &v["valueCode"]), Some(&Value::from("UPDATE")));
    // Same visit number, same Encounter id as the admission it corrects.
    assert_eq!(one(&b, "Encounter")["id"], one(&convert("a01_admission"), "Encounter")["id"]);
}

#[test]
fn a40_merge_links_both_patients() {
    let (_, b) = convert_as(&adt("a40_merge"), "transaction");
    let patients = resources(&b, "Patient");
    assert_eq!(patients.len(), 2);
    let (survivor, merged) = (patients[0], patients[1]);
    let url = |p: &Value| format!("urn:uuid:{}", p["id"].as_str().unwrap());
    assert_eq!(survivor["link"][0]["type"], "replaces");
    assert_eq!(survivor["link"][0]["other"]["reference"], url(merged));
    assert_eq!(merged["link"][0]["type"], "replaced-by");
    assert_eq!(merged["link"][0]["other"]["reference"], url(survivor));
    assert_eq!(merged["active"], false);
    assert_eq!(merged["identifier"][0]["value"], "9911");
    let puts: Vec<&str> =
        b["entry"].as_array().unwrap().iter().filter_map(|e| e["request"]["url"].as_str()).collect();
    assert_eq!(
        puts,
        [
            "Patient?identifier=urn:oid:1.2.250.1.71.4.2.2.1|7788990",
            "Patient?identifier=urn:oid:1.2.250.1.71.4.2.2.1|9911"
        ]
    );
}

#[test]
fn a_sender_time_zone_from_the_settings_is_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("relais.toml");
    std::fs::write(&config, "[senders.CHMAYENNE]\ntimezone = \"America/Cayenne\"\n").expect("write config");
    let out =
        relais(&["convert", "--config", config.to_str().unwrap(), adt("a04_sau_entry").to_str().unwrap()]);
    assert!(out.status.success());
    let b: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(one(&b, "Encounter")["period"]["start"], "2026-07-14T10:20:00-03:00");
}

#[test]
fn bad_inputs_exit_non_zero_with_one_line_naming_the_field() {
    let cases = [
        ("no_msh", "MSH"),
        ("truncated", "PID"),
        ("binary", "MSH"),
        ("unsupported_event", "MSH-9"),
        ("bad_birth_date", "PID-7"),
        ("no_ipp", "PID-3"),
    ];
    for (name, location) in cases {
        let path = test_messages().join("adt/bad").join(format!("{name}.hl7"));
        let out = relais(&["convert", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(out.stdout.is_empty(), "{name}: nothing on stdout");
        assert_eq!(stderr.lines().count(), 1, "{name}: one line: {stderr}");
        assert!(stderr.starts_with(&format!("{location}: ")), "{name}: `{stderr}` should name {location}");
    }
    let missing = relais(&["convert", "/nonexistent/relais-test.hl7"]);
    assert!(!missing.status.success() && missing.stdout.is_empty());
}

#[test]
fn check_accepts_the_shipped_mappings_and_names_file_and_line_of_errors() {
    let ok = relais(&["check", "--mappings", mappings_dir().to_str().unwrap()]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&mappings_dir(), dir.path());
    let classes = dir.path().join("event-classes.toml");
    let text = std::fs::read_to_string(&classes).unwrap();
    let broken = text.replacen("class = \"sau_entry\"", "class = \"sau_entree\"", 1);
    let line = broken.lines().position(|l| l.contains("sau_entree")).unwrap() + 1;
    std::fs::write(&classes, broken).unwrap();
    let adt_file = dir.path().join("adt.toml");
    let text = std::fs::read_to_string(&adt_file).unwrap();
    std::fs::write(&adt_file, text.replacen("[\"PV1-44\"]", "[\"PV1-x\"]", 1)).unwrap();
    std::fs::remove_file(dir.path().join("tables/gender.toml")).unwrap();
    let out = relais(&["check", "--mappings", dir.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains(&format!("event-classes.toml:{line}: unknown class `sau_entree`")), "{stderr}");
    assert!(stderr.lines().any(|l| l.contains("adt.toml:") && l.contains("PV1-x")), "{stderr}");
    assert!(stderr.contains("gender.toml: missing"), "{stderr}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// The python with fhir.resources: `RELAIS_FHIR_PYTHON`, else the venv of scripts/setup.d/20-fhir-validator.sh.
fn validator_python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RELAIS_FHIR_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(std::env::var_os("HOME")?).join(".cache/relais/fhir-venv/bin/python");
    venv.exists().then_some(venv)
}

#[test]
fn every_bundle_passes_the_independent_fhir_validator() {
    let Some(python) = validator_python() else {
        eprintln!(
            "\n!!!!! SKIPPED: the independent FHIR validator is not installed. Run \
             scripts/setup.d/20-fhir-validator.sh (scripts/test.sh does) to enable this test. !!!!!\n"
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    let inputs: Vec<PathBuf> = samples_in("pam-fr")
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "er7"))
        .chain(samples_in("adt"))
        .chain([test_messages().join("bench/adt_a01_fr_mappable.hl7")])
        .collect();
    for input in &inputs {
        for kind in ["message", "transaction"] {
            let (text, _) = convert_as(input, kind);
            let name = format!("{}.{kind}.json", input.file_name().unwrap().to_string_lossy());
            let out = dir.path().join(name);
            std::fs::write(&out, text).unwrap();
            files.push(out);
        }
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/validate_fhir.py");
    let out = Command::new(&python).arg(script).args(&files).output().expect("run the validator");
    assert!(
        out.status.success(),
        "validator:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(files.len() >= 2 * 25, "{} bundles validated", files.len());
}
