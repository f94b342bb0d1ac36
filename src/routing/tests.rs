use std::collections::BTreeSet;
use std::path::Path;

use super::*;
use crate::facts::{EventClass, Facts, MessageKind};

fn sinks() -> BTreeSet<String> {
    ["gp-notify", "mss", "dmp"].into_iter().map(String::from).collect()
}

fn admission() -> Facts {
    Facts {
        kind: MessageKind::Hl7v2,
        event_class: Some(EventClass::Admission),
        message_type: "ADT^A01".into(),
        sending_application: "DPI".into(),
        sending_facility: "CHU-X".into(),
        patient_class: Some("I".into()),
        unit: Some("UF1234".into()),
        gp_known: true,
        patient_key: "CHU-X|123".into(),
        ..Facts::default()
    }
}

const ROUTES: &str = r#"
[[route]]
name = "gp"
destinations = ["gp-notify"]
[route.when]
event_class = ["sau_entry", "admission", "discharge", "death", "cancel"]
gp_known = true
not = { flags = "INVISIBLE_PATIENT" }

[[route]]
name = "dmp"
destinations = ["dmp", "mss"]
[route.when]
event_class = "document"
ins_qualified = true
dmp_opposition = false

[[route]]
name = "adt-copy"
destinations = ["gp-notify", "mss"]
[route.when]
message_type = "ADT^*"
any = [{ patient_class = "E" }, { unit = ["UF1234", "UF9"] }]
"#;

#[test]
fn each_destination_once_with_its_first_route() {
    let set = RouteSet::from_str(Path::new("r.toml"), ROUTES, &sinks()).unwrap();
    let routing = set.route(&admission());
    assert_eq!(routing.routes, ["gp", "adt-copy"]);
    assert_eq!(
        routing.destinations,
        [("gp-notify".to_owned(), "gp".to_owned()), ("mss".to_owned(), "adt-copy".to_owned())]
    );
}

#[test]
fn masked_patient_and_unknown_gp_do_not_notify() {
    let set = RouteSet::from_str(Path::new("r.toml"), ROUTES, &sinks()).unwrap();
    let mut facts = admission();
    facts.flags = vec!["INVISIBLE_PATIENT".into()];
    facts.unit = Some("UF7".into());
    assert!(set.route(&facts).is_unrouted());
    let verdicts = set.explain(&facts);
    assert_eq!(verdicts[0].failed.as_deref(), Some("not: flags include [INVISIBLE_PATIENT] holds"));
    assert_eq!(verdicts[0].location, "r.toml:3");
    assert_eq!(verdicts[1].failed.as_deref(), Some("event_class is admission, wanted one of [document]"));
    let any = verdicts[2].failed.as_deref().unwrap();
    assert!(any.starts_with("none of any: [patient_class is I"), "{any}");
}

#[test]
fn documents_go_to_dmp_only_when_ins_qualified_and_no_opposition() {
    let set = RouteSet::from_str(Path::new("r.toml"), ROUTES, &sinks()).unwrap();
    let mut doc = Facts {
        kind: MessageKind::Cda,
        event_class: Some(EventClass::Document),
        ins_qualified: true,
        ..Facts::default()
    };
    assert_eq!(set.route(&doc).routes, ["dmp"]);
    doc.dmp_opposition = true;
    assert!(set.route(&doc).is_unrouted());
    assert_eq!(set.explain(&doc)[1].failed.as_deref(), Some("dmp_opposition is true, wanted false"));
}

#[test]
fn errors_name_file_and_line() {
    let text = "[[route]]\nname = \"a\"\ndestinations = [\"gp-notify\",\n  \"nowhere\"]\n";
    let errors = RouteSet::from_str(Path::new("x.toml"), text, &sinks()).unwrap_err();
    assert_eq!(errors.0.len(), 1);
    assert_eq!(errors.0[0].line, 4);
    assert!(errors.to_string().starts_with("x.toml:4: route `a`: unknown destination `nowhere`"), "{errors}");

    let text =
        "[[route]]\nname = \"a\"\ndestinations = [\"mss\"]\n[route.when]\nevent_class = \"admision\"\n";
    let errors = RouteSet::from_str(Path::new("y.toml"), text, &sinks()).unwrap_err();
    assert_eq!(errors.0[0].line, 5, "{errors}");

    let text = "[[route]]\nname = \"a\"\ndestinations = [\"mss\"]\n[route.when]\npatient_clas = \"I\"\n";
    let errors = RouteSet::from_str(Path::new("z.toml"), text, &sinks()).unwrap_err();
    assert_eq!(errors.0[0].line, 5, "{errors}");
    assert!(errors.to_string().contains("patient_clas"), "{errors}");
}

#[test]
fn duplicate_names_across_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.toml"), "[[route]]\nname = \"x\"\ndestinations = [\"mss\"]\n").unwrap();
    std::fs::write(dir.path().join("b.toml"), "\n[[route]]\nname = \"x\"\ndestinations = [\"dmp\"]\n")
        .unwrap();
    let errors = RouteSet::load_dir(dir.path(), &sinks()).unwrap_err();
    assert_eq!(errors.0.len(), 1);
    assert!(errors.0[0].file.ends_with("b.toml"));
    assert_eq!(errors.0[0].line, 3);
    assert!(errors.0[0].message.contains("a.toml:2"), "{}", errors.0[0].message);
}

#[test]
fn reload_keeps_the_previous_set_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.toml");
    std::fs::write(&file, "[[route]]\nname = \"x\"\ndestinations = [\"mss\"]\n").unwrap();
    let live = reload::LiveRoutes::load(dir.path(), sinks()).unwrap();
    std::fs::write(&file, "[[route]]\nname = \"y\"\ndestinations = [\"nope\"]\n").unwrap();
    assert!(live.reload().is_err());
    assert_eq!(live.current().routes()[0].name, "x");
    std::fs::write(&file, "[[route]]\nname = \"y\"\ndestinations = [\"dmp\"]\n").unwrap();
    assert_eq!(live.reload().unwrap(), 1);
    assert_eq!(live.current().routes()[0].name, "y");
}

#[tokio::test]
async fn a_fixed_set_is_never_read_back_from_a_directory() {
    // `relais serve` with no sinks: a fixed, empty set. Reloading it (SIGHUP) must not read the working
    // directory, and its watcher watches no directory but runs until shutdown (it holds the SIGHUP handler).
    let set = RouteSet::from_str(
        Path::new("f.toml"),
        "[[route]]\nname = \"x\"\ndestinations = [\"mss\"]\n",
        &sinks(),
    )
    .unwrap();
    let live = reload::LiveRoutes::fixed(set);
    assert!(live.is_fixed());
    assert_eq!(live.reload().ok(), Some(1));
    assert_eq!(live.current().routes()[0].name, "x");
    let (trigger, stop) = crate::shutdown::channel();
    let watcher = tokio::spawn(reload::watch(std::sync::Arc::clone(&live), stop));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!watcher.is_finished(), "the watcher waits for shutdown");
    trigger.fire();
    watcher.await.unwrap();
}

#[test]
fn shipped_routes_load_against_the_example_sinks() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("routes");
    let set = RouteSet::load_dir(&dir, &sinks()).unwrap();
    assert!(set.routes().len() >= 3);
    let mut death = admission();
    death.event_class = Some(EventClass::Death);
    assert!(set.route(&death).destinations.iter().any(|(d, _)| d == "gp-notify"));
}

#[tokio::test]
async fn a_changed_file_is_picked_up_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.toml");
    std::fs::write(&file, "[[route]]\nname = \"x\"\ndestinations = [\"mss\"]\n").unwrap();
    let live = reload::LiveRoutes::load(dir.path(), sinks()).unwrap();
    let (trigger, stop) = crate::shutdown::channel();
    let watcher = tokio::spawn(reload::watch(std::sync::Arc::clone(&live), stop));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    std::fs::write(&file, "[[route]]\nname = \"broken\"\ndestinations = [\"nope\"]\n").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    assert_eq!(live.current().routes()[0].name, "x", "a bad file must keep the previous routes");

    std::fs::write(&file, "[[route]]\nname = \"y\"\ndestinations = [\"dmp\"]\n").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while live.current().routes()[0].name != "y" {
        assert!(std::time::Instant::now() < deadline, "the change was not picked up");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    trigger.fire();
    watcher.await.unwrap();
}

#[test]
fn explain_renders_matches_and_failures() {
    let set = RouteSet::from_str(Path::new("r.toml"), ROUTES, &sinks()).unwrap();
    let text = render_verdicts(&set.explain(&admission()));
    assert_eq!(
        text,
        "MATCH gp (r.toml:3) -> gp-notify\n\
         no    dmp (r.toml:11): event_class is admission, wanted one of [document]\n\
         MATCH adt-copy (r.toml:19) -> gp-notify, mss\n"
    );
}
