//! Admin API, CLI and console against the real binary: search, timeline, replay, dead letters, the token
//! wall, the audit target, and the console driven in headless Debian chromium (playwright-core), which also
//! takes the console screenshot (written to `docs/console.png` when `RELAIS_UPDATE_SCREENSHOT` is set).
//!
//! The test's notify sink has no delivery configured, so no consumer runs and the test plays the sink: between
//! two runs of the server it takes the partitions of the embedded bus (`bus.redb`), acks every envelope and
//! dead-letters the poison one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use relais::bus::{Bus, BusSettings};

use crate::harness::{Relais, sample};

const SINK: &str = "gp-notify";
const SAMPLES: [&str; 3] = ["adt/a01_admission.hl7", "adt/a03_discharge.hl7", "adt/a04_sau_entry.hl7"];
const PLAYWRIGHT: &str = "/var/cache/relais-test/playwright/node_modules";

/// A notify sink with neither `mail_via` nor `webhook_url` runs no consumer: its envelopes wait on the bus, so
/// the test can play the sink between two server runs.
fn config(routes: &Path) -> String {
    format!("routes_dir = {:?}\n[sinks.{SINK}]\nkind = \"notify\"\n", routes)
}

fn write_routes(dir: &Path) -> PathBuf {
    let routes = dir.join("routes");
    std::fs::create_dir_all(&routes).unwrap();
    std::fs::write(
        routes.join("all.toml"),
        format!(
            "[[route]]\nname = \"all-adt\"\ndestinations = [\"{SINK}\"]\n[route.when]\nkind = \"hl7v2\"\n"
        ),
    )
    .unwrap();
    routes
}

fn control_id(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    text.lines().next().unwrap().split('|').nth(9).unwrap().to_owned()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn cli(relais: &Relais, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_relais"))
        .args(args)
        .args(["--url", &relais.http_url()])
        .env_remove("RELAIS_ADMIN_TOKEN")
        .output()
        .expect("running relais");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn post(relais: &Relais, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let response =
        crate::harness::http().post(format!("{}{path}", relais.http_url())).json(&body).send().expect("POST");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or_default())
}

/// Plays the sink on the stopped server's bus: acks every envelope, dead-letters those of `poison`.
fn dead_letter(data_dir: &Path, poison: &[u64]) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let settings = BusSettings::default();
        let bus = Bus::open(&settings, data_dir, &[SINK.to_owned()]).await.unwrap();
        let mut found = Vec::new();
        for partition in 0..settings.partitions {
            let mut consumer = bus.consume(SINK, partition).await.unwrap();
            while let Ok(delivery) = tokio::time::timeout(Duration::from_millis(200), consumer.next()).await {
                let delivery = delivery.unwrap();
                let id = delivery.envelope().message_id;
                if poison.contains(&id) {
                    found.push(id);
                    delivery.dead_letter().await.unwrap();
                } else {
                    delivery.ack().await.unwrap();
                }
            }
        }
        found.sort_unstable();
        assert_eq!(found, poison, "dead-lettered messages");
        bus.close().await;
    });
}

#[test]
fn search_timeline_replay_dead_letters_and_console() {
    let routes_dir = tempfile::tempdir().unwrap();
    let routes = write_routes(routes_dir.path());
    let mut relais = Relais::start_with_config(&config(&routes), &[]);

    for name in SAMPLES {
        let (status, _) = relais.post_hl7v2(&sample(name));
        assert_eq!(status, 200, "{name}");
    }
    wait_until("every sample published", || relais.stats()["published"] == SAMPLES.len() as u64);
    let discharge = control_id(&sample(SAMPLES[1]));

    // Search by MSH-10, sender, state; the timeline shows each stage.
    let found = relais.get_json(&format!("/api/search?control_id={discharge}"));
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    let poison = found[0]["id"].as_u64().unwrap();
    let sender = found[0]["sending_facility"].as_str().unwrap().to_owned();
    let by_sender = relais.get_json(&format!("/api/search?sender={sender}&state=published"));
    assert_eq!(by_sender.as_array().unwrap().len(), SAMPLES.len());
    assert_eq!(relais.get_json("/api/search?state=failed").as_array().unwrap().len(), 0);
    let timeline = relais.get_json(&format!("/api/messages/{poison}"));
    let stages: Vec<&str> =
        timeline["steps"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["received", "mapped", "routed", "published"], "{timeline}");
    assert_eq!(timeline["sinks"][0]["sink"], SINK);
    assert_eq!(timeline["sinks"][0]["published"], true);
    // The patient search uses the partition key the pipeline stored (a hash); a wrong key finds nothing.
    let (status, body) = relais.get("/api/search?patient=NOBODY%7C0");
    assert_eq!((status, body.as_slice()), (200, b"[]".as_slice()));
    let (status, _) = relais.get("/api/search?state=lost");
    assert_eq!(status, 400);

    // CLI: table search, then a replay that goes through the pipeline again.
    let (ok, table, err) = cli(&relais, &["messages", "--control-id", &discharge]);
    assert!(ok, "{err}");
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains(&discharge) && table.contains("published"), "{table}");
    let (ok, out, err) = cli(&relais, &["replay", &poison.to_string()]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "replayed 1 message(s)");
    wait_until("the replayed message published again", || {
        let timeline = relais.get_json(&format!("/api/messages/{poison}"));
        let steps = timeline["steps"].as_array().unwrap().clone();
        steps.iter().filter(|s| s["stage"] == "published").count() == 2
            && timeline["entry"]["state"] == "published"
    });
    let (status, report) = post(&relais, "/api/replay", serde_json::json!({ "ids": [999_999] }));
    assert_eq!(status, 200);
    assert_eq!(report["refused"][0]["id"], 999_999, "{report}");
    // Pausing and resuming a sink (tests/it/ops2.rs checks what a pause does).
    let (status, answer) = post(&relais, &format!("/api/sinks/{SINK}/pause"), serde_json::json!({}));
    assert_eq!((status, &answer["paused"]), (200, &serde_json::json!(true)), "{answer}");
    let (status, answer) = post(&relais, &format!("/api/sinks/{SINK}/resume"), serde_json::json!({}));
    assert_eq!((status, &answer["paused"]), (200, &serde_json::json!(false)), "{answer}");

    // Dead letters: the test plays the sink and rejects the admission and the discharge; purges the first.
    let admission = relais.get_json(&format!("/api/search?control_id={}", control_id(&sample(SAMPLES[0]))));
    let admission = admission[0]["id"].as_u64().unwrap();
    relais.stop();
    dead_letter(&relais.data_dir(), &[admission, poison]);
    relais.restart();
    let (ok, out, err) = cli(&relais, &["dlq", "purge", SINK, &admission.to_string()]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("purged [{admission}]"));
    let (ok, out, err) = cli(&relais, &["dlq", "list", SINK, "--json"]);
    assert!(ok, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["message_id"], poison, "{listed}");
    let timeline = relais.get_json(&format!("/api/messages/{poison}"));
    assert_eq!(timeline["sinks"][0]["dead_lettered"], true, "{timeline}");
    let shown = relais.get_json(&format!("/api/dlq/{SINK}/{poison}"));
    assert_eq!(shown["bundle"]["resourceType"], "Bundle");

    // Console in a real browser: search, timeline, replay the dead letter, screenshot.
    let shot = relais.work_dir().join("console.png");
    let page = console_run(&relais, &discharge, poison, &shot);
    assert_eq!(page["rows"], 1, "{page}");
    assert!(page["timeline"].as_str().unwrap().contains("published"), "{page}");
    assert!(page["flash"].as_str().unwrap().contains(&format!("Dead letter {poison}")), "{page}");
    assert_eq!(relais.get_json(&format!("/api/dlq/{SINK}")).as_array().unwrap().len(), 0);
    let timeline = relais.get_json(&format!("/api/messages/{poison}"));
    assert_eq!(timeline["sinks"][0]["dead_lettered"], false, "{timeline}");
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "screenshot of {} bytes", png.len());
    // The README's screenshot is refreshed on demand only, so a test run leaves the work tree clean.
    if std::env::var_os("RELAIS_UPDATE_SCREENSHOT").is_some() {
        std::fs::write(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console.png"), &png).unwrap();
    }

    // Audit trail: who replayed what, on its own target, without message content.
    relais.stop();
    let log = relais.log();
    let audit: Vec<&str> = log.lines().filter(|l| l.contains("relais::audit")).collect();
    assert!(
        audit.iter().any(|l| l.contains("dead letter replay") && l.contains(&poison.to_string())),
        "{log}"
    );
}

#[test]
fn admin_routes_and_console_need_the_token() {
    let mut relais = Relais::start_with(&[("RELAIS__HTTP__ADMIN_TOKEN", "s3cret")]);
    let url = relais.http_url();
    let http = crate::harness::http();
    let status = |request: reqwest::blocking::RequestBuilder| request.send().unwrap().status().as_u16();
    assert_eq!(status(http.get(format!("{url}/api/search"))), 401);
    assert_eq!(status(http.get(format!("{url}/api/search")).bearer_auth("wrong")), 401);
    assert_eq!(status(http.get(format!("{url}/api/search")).bearer_auth("s3cret")), 200);
    assert_eq!(status(http.post(format!("{url}/api/replay")).json(&serde_json::json!({"ids": [1]}))), 401);
    assert_eq!(status(http.get(format!("{url}/console"))), 401);
    assert_eq!(status(http.get(format!("{url}/console")).header("cookie", "relais_admin=s3cret")), 200);
    let (ok, _, err) = cli(&relais, &["messages"]);
    assert!(!ok && err.contains("401"), "{err}");
    let output = Command::new(env!("CARGO_BIN_EXE_relais"))
        .args(["messages", "--json", "--url", &url])
        .env("RELAIS_ADMIN_TOKEN", "s3cret")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "[]");
    relais.stop();
}

const CONSOLE_SCRIPT: &str = r#"
const { chromium } = require('playwright-core');
(async () => {
  const [url, controlId, deadId, sink, shot] = process.argv.slice(2);
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync'] });
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  await page.goto(url + '/console');
  await page.fill('#q-control_id', controlId);
  await Promise.all([page.waitForNavigation(), page.click('#search')]);
  const rows = await page.$$eval('#messages tr', r => r.length - 1);
  await Promise.all([page.waitForNavigation(), page.click('#messages a')]);
  const timeline = await page.textContent('#timeline');
  await page.goto(url + '/console');
  await page.screenshot({ path: shot, fullPage: true });
  await Promise.all([page.waitForNavigation(), page.click('#replay-' + sink + '-' + deadId)]);
  const flash = await page.textContent('#flash');
  console.log(JSON.stringify({ rows, timeline, flash }));
  await browser.close();
})().catch(e => { console.error(e); process.exit(1); });
"#;

fn console_run(relais: &Relais, control_id: &str, dead: u64, shot: &Path) -> serde_json::Value {
    assert!(
        Path::new(PLAYWRIGHT).join("playwright-core").is_dir() && Path::new("/usr/bin/chromium").exists(),
        "chromium or playwright-core missing: run scripts/setup.d/60-chromium.sh"
    );
    let script = relais.work_dir().join("console.js");
    std::fs::write(&script, CONSOLE_SCRIPT).unwrap();
    let output = Command::new("node")
        .arg(&script)
        .args([&relais.http_url(), control_id, &dead.to_string(), SINK, &shot.display().to_string()])
        .env("NODE_PATH", PLAYWRIGHT)
        .output()
        .expect("running node");
    assert!(output.status.success(), "browser run failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!("browser output not JSON ({e}): {}", String::from_utf8_lossy(&output.stdout))
    })
}
