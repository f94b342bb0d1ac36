//! The GP notification end to end inside the library: directory imported from the synthetic extraction,
//! templates from mappings/templates/notify, mail to a real aiosmtpd, FHIR Bundle to an HTTPS webhook
//! (mutual TLS + bearer token), ledger against redelivery.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use relais::facts::EventClass;
use relais::sinks::directory::Directory;
use relais::sinks::ledger::Ledger;
use relais::sinks::mail::{MssSender, Patient};
use relais::sinks::notify::{Gp, NotificationEvent, Notifier, NotifyConfig, Templates, Webhook};
use relais::sinks::retry::Outcome;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::mail::{Smtp, free_port, header, mss_config, parse, recipients};
use super::pki::{Pki, TlsListener};

type Posts = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

async fn hook(State(posts): State<Posts>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    posts.lock().unwrap().push((get("authorization"), get("x-idempotency-key"), body.to_vec()));
    StatusCode::ACCEPTED
}

fn event(class: EventClass, correction: bool, rpps: Option<&str>) -> NotificationEvent {
    NotificationEvent {
        class,
        correction,
        patient_key: "CHT|123456".into(),
        encounter: "V-0001".into(),
        occurred_at: "202401051015".into(),
        service: Some("Urgences adultes".into()),
        patient: Patient {
            family: "Test".into(),
            given: "Jeanne".into(),
            birth_date: "19790321".into(),
            ins: Some("279035121518989".into()),
            ins_qualified: true,
        },
        gp: rpps.map(|r| Gp { rpps: r.into(), name: "Isabelle AGNES".into() }),
        opposition: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_notification_per_event_one_correction_and_reasons_when_undeliverable() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let smtp = Smtp::start(port, &pki.server_cert, &pki.server_key, &data.path().join("Maildir"));

    let posts: Posts = Arc::default();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_port = tcp.local_addr().unwrap().port();
    let listener = TlsListener { tcp, acceptor: TlsAcceptor::from(pki.server_config_mtls()) };
    let app = axum::Router::new().route("/fhir", axum::routing::post(hook)).with_state(posts.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let directory = Directory::open(data.path()).unwrap();
    directory
        .import(&super::root().join("test-messages/directory/extraction-mssante-synthetic.txt"))
        .unwrap();
    let cfg = NotifyConfig {
        webhook_url: format!("https://localhost:{hook_port}/fhir"),
        webhook_token: Some("secret-token".into()),
        webhook_ca: Some(pki.ca.clone()),
        webhook_client_cert: Some(pki.client_cert.clone()),
        webhook_client_key: Some(pki.client_key.clone()),
        templates: super::root().join("mappings/templates/notify"),
        establishment: "CH de Test".into(),
        contact_phone: "02 43 00 00 00".into(),
        ..NotifyConfig::default()
    };
    let mss = mss_config(&pki, port);
    let notifier = Notifier::new(
        cfg.clone(),
        Templates::load(&cfg.templates).unwrap(),
        directory,
        Arc::new(Ledger::open(data.path()).unwrap()),
        Some((MssSender::new(&mss).unwrap(), mss)),
        Some(Webhook::new(&cfg).unwrap()),
    );
    let bundle = br#"{"resourceType":"Bundle","type":"message"}"#;

    // ED entry: one mail to the GP's personal mailbox, one POST; a redelivery sends nothing more.
    let entry = event(EventClass::SauEntry, false, Some("810000023084"));
    assert_eq!(notifier.handle(&entry, bundle, 1).await, Outcome::Delivered);
    assert_eq!(notifier.handle(&entry, bundle, 1).await, Outcome::Delivered);
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    let mail = parse(&mails[0]);
    assert_eq!(recipients(&mail), vec!["isabelle.agnes@medecin.mssante.fr"]);
    assert_eq!(mail.subject().unwrap(), "Entrée aux urgences : TEST Jeanne");
    assert!(
        mail.body_text(0).unwrap().contains("est entré(e) aux urgences de CH de Test le 05/01/2024 à 10h15")
    );
    assert_eq!(header(&mail, "X-MSS-NIL").as_deref(), Some("NIL-RELAIS-TEST"));
    {
        let posts = posts.lock().unwrap();
        assert_eq!(posts.len(), 1);
        assert_eq!(posts[0].0, "Bearer secret-token");
        assert_eq!(posts[0].2, bundle);
    }

    // The A11: one correction, not silence, not twice.
    let cancel = event(EventClass::SauEntry, true, Some("810000023084"));
    assert_eq!(notifier.handle(&cancel, bundle, 2).await, Outcome::Delivered);
    assert_eq!(notifier.handle(&cancel, bundle, 2).await, Outcome::Delivered);
    let mails = smtp.mails();
    assert_eq!(mails.len(), 2);
    assert!(
        mails
            .iter()
            .map(|m| parse(m))
            .any(|m| m.subject().unwrap().starts_with("Annulation : l'entrée aux urgences"))
    );
    assert_eq!(posts.lock().unwrap().len(), 2);

    // Undeliverable, with the reason, nothing sent.
    let reason = |o: Outcome| {
        assert_eq!(o.as_str(), "undeliverable", "{o:?}");
        o.reason().unwrap().to_string()
    };
    let never = event(EventClass::Admission, true, Some("810000023084"));
    assert!(reason(notifier.handle(&never, bundle, 3).await).contains("never notified"));
    let no_gp = event(EventClass::Admission, false, None);
    assert!(reason(notifier.handle(&no_gp, bundle, 4).await).contains("no médecin traitant"));
    let unknown = event(EventClass::Admission, false, Some("10000099999"));
    assert!(reason(notifier.handle(&unknown, bundle, 5).await).contains("no MSSanté address"));
    let mut opposed = event(EventClass::Death, false, Some("810000023084"));
    opposed.opposition = true;
    assert!(reason(notifier.handle(&opposed, bundle, 6).await).contains("opposition"));
    assert_eq!(smtp.mails().len(), 2);
    assert_eq!(posts.lock().unwrap().len(), 2);
}
