//! The GP notification: tells the médecin traitant that a patient entered the ED, was admitted, was
//! discharged or died (and corrects an earlier notice when the event is cancelled).
//!
//! It receives a [`NotificationEvent`] (read from the mapped ADT message by the pipeline) and hands on:
//!
//! - a decision ([`plan`]): the GP's MSSanté addresses from the [`Directory`], or
//!   [`Outcome::Undeliverable`] with the reason (no GP, GP without an MSSanté address, opposition);
//! - the text ([`Templates::render`]), French, from `mappings/templates/notify/<class>.txt` or
//!   `<class>_correction.txt` (minijinja; first line = subject, the rest = body); the patient is named by name
//!   and birth date, and by INS only when the identity is qualified;
//! - the mail ([`to_mail`]) for the MSSanté sender, and/or a POST of the FHIR message Bundle to a configured
//!   webhook ([`Webhook`], hyper over rustls, bearer token or mutual TLS).
//!
//! One notification per (patient, encounter, event class): [`idempotency_key`] is the ledger key; a
//! cancellation is a different key (`…|correction`), so an A11 after an A04 sends one correction, never
//! silence and never twice. Keys are SHA-1 digests, never patient data in clear.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::Message;
use lettre::message::Mailbox;
use lettre::message::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::facts::EventClass;
use crate::sinks::directory::Directory;
use crate::sinks::ledger::{Ledger, Write};
use crate::sinks::mail::{MssConfig, MssSender, Patient};
use crate::sinks::retry::{self, Outcome, RetryPolicy};

/// `sinks.notify.*`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// The MSSanté sink instance (`[sinks.<name>]` of kind `mss`) the notification mail goes through; empty:
    /// no mail.
    pub mail_via: String,
    /// Webhook URL receiving the FHIR message Bundle; empty: no webhook.
    pub webhook_url: String,
    /// Bearer token for the webhook (set it through `RELAIS__SINKS__NOTIFY__WEBHOOK_TOKEN`).
    pub webhook_token: Option<String>,
    /// PEM CA bundle for the webhook (default: the system store).
    pub webhook_ca: Option<PathBuf>,
    /// PEM client certificate for the webhook (mutual TLS).
    pub webhook_client_cert: Option<PathBuf>,
    /// PEM client key for the webhook.
    pub webhook_client_key: Option<PathBuf>,
    /// Folder of the templates; relative to `mappings_dir` (`templates/notify`).
    pub templates: PathBuf,
    /// Folder holding the MSSanté directory (`directory.redb`, written by `relais directory import --data`);
    /// default: `data_dir`.
    pub directory: Option<PathBuf>,
    /// The establishment's name, as the GP knows it.
    pub establishment: String,
    /// A phone number the GP can call (the ED desk, the ward secretariat).
    pub contact_phone: String,
    /// Retry policy.
    pub retry: RetryPolicy,
}

impl std::fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("mail_via", &self.mail_via)
            .field("webhook_url", &self.webhook_url)
            .field("webhook_token", &self.webhook_token.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            mail_via: String::new(),
            webhook_url: String::new(),
            webhook_token: None,
            webhook_ca: None,
            webhook_client_cert: None,
            webhook_client_key: None,
            templates: PathBuf::from("templates/notify"),
            directory: None,
            establishment: String::new(),
            contact_phone: String::new(),
            retry: RetryPolicy::default(),
        }
    }
}

impl NotifyConfig {
    /// Checks values without I/O; the error names the key.
    pub fn check(&self) -> Result<(), (String, String)> {
        self.retry.check("sinks.notify.retry")?;
        if !self.mail_via.is_empty() && self.establishment.is_empty() {
            return Err((
                "sinks.notify.establishment".into(),
                "required: the templates name the establishment".into(),
            ));
        }
        if !self.webhook_url.is_empty() && !self.webhook_url.starts_with("https://") {
            return Err(("sinks.notify.webhook_url".into(), "must be an https:// URL".into()));
        }
        if self.webhook_client_cert.is_some() != self.webhook_client_key.is_some() {
            return Err((
                "sinks.notify.webhook_client_key".into(),
                "webhook_client_cert and webhook_client_key go together".into(),
            ));
        }
        Ok(())
    }
}

/// The médecin traitant as the message names him or her (ROL ODRP, or PD1-4).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gp {
    /// RPPS (11 digits) or IDNPS (`8` + RPPS).
    pub rpps: String,
    /// Display name (`Isabelle AGNES`).
    pub name: String,
}

impl std::fmt::Debug for Gp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gp").finish_non_exhaustive()
    }
}

/// One ADT event to notify. Debug prints no patient data.
#[derive(Debug, Clone)]
pub struct NotificationEvent {
    /// sau_entry, admission, discharge or death: the event, or for a correction the event it cancels.
    pub class: EventClass,
    /// True for a cancellation (A11, A12, A13, ZBE-4 = CANCEL): a correction of `class`.
    pub correction: bool,
    /// The per-patient key (`Facts::patient_key`).
    pub patient_key: String,
    /// The encounter (visit number PV1-19, or ZBE-1 movement id).
    pub encounter: String,
    /// When it happened, HL7 DTM (`YYYYMMDDHHMM[SS]`, local time).
    pub occurred_at: String,
    /// The unit or service (ZBE-7 / PV1-3), as a label.
    pub service: Option<String>,
    /// The patient.
    pub patient: Patient,
    /// The médecin traitant, when known.
    pub gp: Option<Gp>,
    /// The patient opposed sharing (recorded opposition).
    pub opposition: bool,
}

/// The ledger key of a notification: (patient, encounter, event class[, correction]), hashed.
pub fn idempotency_key(e: &NotificationEvent) -> String {
    let clear = format!(
        "{}|{}|{}{}",
        e.patient_key,
        e.encounter,
        e.class.as_str(),
        if e.correction { "|correction" } else { "" }
    );
    Sha1::digest(clear.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The key of the notification a correction corrects.
pub fn corrected_key(e: &NotificationEvent) -> String {
    idempotency_key(&NotificationEvent { correction: false, ..e.clone() })
}

/// The event class an HL7 cancellation undoes: A11 ← A01 (admission) or A04 (ED entry when the patient
/// class is E), A13 ← A03 (discharge; a cancelled death is also an A13 and is told apart by the journal).
pub fn corrected_class(undoes: &str, patient_class: Option<&str>) -> Option<EventClass> {
    match undoes {
        "A01" | "A06" => Some(EventClass::Admission),
        "A04" if patient_class == Some("E") => Some(EventClass::SauEntry),
        "A04" => Some(EventClass::Admission),
        "A03" => Some(EventClass::Discharge),
        _ => None,
    }
}

/// Decides where a notification goes: the GP's MSSanté addresses, or why it cannot go anywhere.
pub fn plan(e: &NotificationEvent, directory: &Directory) -> Result<Vec<String>, Outcome> {
    let undeliverable = |reason: &str| Err(Outcome::Undeliverable { reason: reason.into() });
    if !matches!(
        e.class,
        EventClass::SauEntry | EventClass::Admission | EventClass::Discharge | EventClass::Death
    ) {
        return undeliverable("not a notified event class");
    }
    if e.opposition {
        return undeliverable("opposition recorded");
    }
    let Some(gp) = &e.gp else { return undeliverable("no médecin traitant in the message") };
    let addresses = directory.lookup(&gp.rpps).map_err(|err| Outcome::retry(err.to_string()))?;
    if addresses.is_empty() {
        return undeliverable("no MSSanté address for the médecin traitant");
    }
    Ok(addresses)
}

/// A rendered notification.
#[derive(Clone, PartialEq, Eq)]
pub struct Text {
    /// The mail subject.
    pub subject: String,
    /// The mail body.
    pub body: String,
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Text").field("body_chars", &self.body.len()).finish_non_exhaustive()
    }
}

/// Why templates could not be loaded or rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// A template file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A template does not compile or render.
    #[error("template {name}: {reason}")]
    Template {
        /// The template name (`sau_entry.txt`).
        name: String,
        /// minijinja's message (with the line).
        reason: String,
    },
}

/// The notification templates, compiled once.
#[derive(Debug)]
pub struct Templates {
    env: minijinja::Environment<'static>,
}

/// The classes (and their corrections) that have a template.
const NAMES: &[&str] = &["sau_entry", "admission", "discharge", "death"];

#[derive(Serialize)]
struct Context<'a> {
    etablissement: &'a str,
    telephone: &'a str,
    service: Option<&'a str>,
    date: String,
    heure: String,
    patient_nom: String,
    patient_prenom: &'a str,
    patient_naissance: String,
    ins: Option<&'a str>,
    medecin: Option<&'a str>,
}

fn french_date(dtm: &str) -> String {
    if dtm.len() >= 8 { format!("{}/{}/{}", &dtm[6..8], &dtm[4..6], &dtm[0..4]) } else { dtm.to_string() }
}

fn french_time(dtm: &str) -> String {
    if dtm.len() >= 12 { format!("{}h{}", &dtm[8..10], &dtm[10..12]) } else { String::new() }
}

impl Templates {
    /// Loads `<class>.txt` and `<class>_correction.txt` for every notified class from `dir`; all must exist
    /// and compile.
    pub fn load(dir: &Path) -> Result<Templates, TemplateError> {
        let mut env = minijinja::Environment::new();
        for name in NAMES {
            for file in [format!("{name}.txt"), format!("{name}_correction.txt")] {
                let path = dir.join(&file);
                let source = std::fs::read_to_string(&path)
                    .map_err(|e| TemplateError::Read { path: path.display().to_string(), source: e })?;
                env.add_template_owned(file.clone(), source)
                    .map_err(|e| TemplateError::Template { name: file.clone(), reason: e.to_string() })?;
            }
        }
        Ok(Templates { env })
    }

    /// Renders the notification of `e`: first line the subject, the rest the body.
    pub fn render(&self, e: &NotificationEvent, cfg: &NotifyConfig) -> Result<Text, TemplateError> {
        let name = format!("{}{}.txt", e.class.as_str(), if e.correction { "_correction" } else { "" });
        let fail =
            |err: minijinja::Error| TemplateError::Template { name: name.clone(), reason: err.to_string() };
        let template = self.env.get_template(&name).map_err(fail)?;
        let p = &e.patient;
        let ctx = Context {
            etablissement: &cfg.establishment,
            telephone: &cfg.contact_phone,
            service: e.service.as_deref(),
            date: french_date(&e.occurred_at),
            heure: french_time(&e.occurred_at),
            patient_nom: p.family.to_uppercase(),
            patient_prenom: &p.given,
            patient_naissance: french_date(&p.birth_date),
            ins: p.ins.as_deref().filter(|_| p.ins_qualified),
            medecin: e.gp.as_ref().map(|g| g.name.as_str()).filter(|n| !n.is_empty()),
        };
        let text = template.render(minijinja::value::Serde(&ctx)).map_err(fail)?;
        let (subject, body) = text.split_once('\n').unwrap_or((&text, ""));
        Ok(Text { subject: subject.trim().to_string(), body: body.trim_start_matches('\n').to_string() })
    }
}

/// The notification as an MSSanté mail from `mss.from` to `to` (with `X-MSS-NIL`).
pub fn to_mail(text: &Text, to: &[String], mss: &MssConfig) -> Result<Message, Outcome> {
    let from: Mailbox =
        mss.from.parse().map_err(|_| Outcome::failed("sinks.mss.from is not a mail address"))?;
    let mut builder = Message::builder()
        .from(from)
        .subject(text.subject.clone())
        .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("X-MSS-NIL"), mss.nil.clone()));
    for addr in to {
        let mailbox: Mailbox = addr.parse().map_err(|_| {
            Outcome::failed(format!("GP address `{}` is not a mail address", crate::sinks::mail::mask(addr)))
        })?;
        builder = builder.to(mailbox);
    }
    builder.body(text.body.clone()).map_err(|e| Outcome::failed(format!("mail: {e}")))
}

/// Why a webhook client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// A PEM file could not be used.
    #[error(transparent)]
    Tls(#[from] crate::sinks::tls::Error),
}

/// POSTs FHIR message Bundles to the configured webhook.
#[derive(Clone)]
pub struct Webhook {
    http: crate::sinks::https::HttpsClient,
    url: String,
    token: Option<String>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook").field("url", &self.url).finish_non_exhaustive()
    }
}

impl Webhook {
    /// Builds the client from checked settings (reads the PEM files).
    pub fn new(cfg: &NotifyConfig) -> Result<Webhook, WebhookError> {
        let identity = cfg.webhook_client_cert.as_deref().zip(cfg.webhook_client_key.as_deref());
        let tls = crate::sinks::tls::client_config(cfg.webhook_ca.as_deref(), identity)?;
        let http = crate::sinks::https::HttpsClient::new(tls, Duration::from_secs(30));
        Ok(Webhook { http, url: cfg.webhook_url.clone(), token: cfg.webhook_token.clone() })
    }

    /// POSTs one Bundle (`application/fhir+json`) with the idempotency key in `X-Idempotency-Key`: 2xx
    /// delivered; 408, 429, 5xx and network errors transient; other statuses permanent.
    pub async fn post(&self, bundle: &[u8], key: &str) -> Outcome {
        let mut headers = vec![("x-idempotency-key", key.to_string())];
        if let Some(token) = &self.token {
            headers.push(("authorization", format!("Bearer {token}")));
        }
        match self.http.post(&self.url, "application/fhir+json", &headers, bundle.to_vec()).await {
            Ok(response) => retry::classify_http(response.status),
            Err(crate::sinks::https::Error::Url(url)) => {
                Outcome::failed(format!("webhook URL `{url}` is not https"))
            }
            Err(e) => retry::classify_network(e),
        }
    }
}

/// The notification sink: ledger check, plan, render, then mail and/or webhook, each recorded once delivered.
#[derive(Debug)]
pub struct Notifier {
    cfg: NotifyConfig,
    templates: Templates,
    directory: Directory,
    ledger: std::sync::Arc<Ledger>,
    mail: Option<(MssSender, MssConfig)>,
    webhook: Option<Webhook>,
}

/// Ledger sink name of the notification mail.
pub const LEDGER_MAIL: &str = "notify-mail";
/// Ledger sink name of the notification webhook.
pub const LEDGER_WEBHOOK: &str = "notify-webhook";

impl Notifier {
    /// Assembles the sink from built parts; `mail` is the MSSanté sender and settings of the `mail_via` sink,
    /// `webhook` the client when a URL is set.
    pub fn new(
        cfg: NotifyConfig,
        templates: Templates,
        directory: Directory,
        ledger: std::sync::Arc<Ledger>,
        mail: Option<(MssSender, MssConfig)>,
        webhook: Option<Webhook>,
    ) -> Notifier {
        Notifier { cfg, templates, directory, ledger, mail, webhook }
    }

    /// Handles one event for journal entry `journal_id`, with its FHIR message Bundle (JSON): never sends
    /// what the ledger says was delivered; a correction of something never notified is undeliverable.
    pub async fn handle(&self, e: &NotificationEvent, bundle: &[u8], journal_id: u64) -> Outcome {
        let key = idempotency_key(e);
        let channels: Vec<&str> =
            [self.mail.as_ref().map(|_| LEDGER_MAIL), self.webhook.as_ref().map(|_| LEDGER_WEBHOOK)]
                .into_iter()
                .flatten()
                .collect();
        if channels.is_empty() {
            return Outcome::Undeliverable { reason: "no notification channel configured".into() };
        }
        let done = |sink: &str, k: &str| self.ledger.delivered(sink, k).map(|d| d.is_some());
        let mut pending = Vec::new();
        for sink in &channels {
            match done(sink, &key) {
                Ok(true) => {}
                Ok(false) => pending.push(*sink),
                Err(err) => return Outcome::retry(err.to_string()),
            }
        }
        if pending.is_empty() {
            return Outcome::Delivered;
        }
        if e.correction {
            let original = corrected_key(e);
            let notified = channels.iter().any(|sink| matches!(done(sink, &original), Ok(true)));
            if !notified {
                return Outcome::Undeliverable {
                    reason: "correction of an event that was never notified".into(),
                };
            }
        }
        let addresses = match plan(e, &self.directory) {
            Ok(a) => a,
            Err(outcome) => return outcome,
        };
        let text = match self.templates.render(e, &self.cfg) {
            Ok(t) => t,
            Err(err) => return Outcome::failed(err.to_string()),
        };
        let mut outcomes = Vec::new();
        for sink in pending {
            let outcome = if sink == LEDGER_MAIL {
                let (sender, mss) = self.mail.as_ref().expect("mail channel present");
                match to_mail(&text, &addresses, mss) {
                    Ok(message) => sender.send(&message).await,
                    Err(o) => o,
                }
            } else {
                self.webhook.as_ref().expect("webhook channel present").post(bundle, &key).await
            };
            if outcome == Outcome::Delivered {
                // Durable with the consumption loop's record of this delivery, which follows it in the
                // ledger's queue and is awaited before the bus is answered: one fsync for both.
                let write = Write::Delivered { sink: sink.to_string(), key: key.clone(), journal_id };
                if let Err(err) = self.ledger.queue(vec![write]) {
                    return Outcome::retry(err.to_string());
                }
            }
            outcomes.push(outcome);
        }
        combine(outcomes)
    }
}

/// One outcome for several channels: any retry → retry; else any failure → failed; else delivered.
fn combine(outcomes: Vec<Outcome>) -> Outcome {
    let pick = |name: &str| outcomes.iter().find(|o| o.as_str() == name).cloned();
    pick("retry").or_else(|| pick("failed")).or_else(|| pick("undeliverable")).unwrap_or(Outcome::Delivered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(class: EventClass, correction: bool) -> NotificationEvent {
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
            gp: Some(Gp { rpps: "810000023084".into(), name: "Isabelle AGNES".into() }),
            opposition: false,
        }
    }

    fn cfg() -> NotifyConfig {
        NotifyConfig {
            templates: Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/templates/notify"),
            establishment: "CH de Test".into(),
            contact_phone: "02 43 00 00 00".into(),
            ..NotifyConfig::default()
        }
    }

    #[test]
    fn keys_are_per_patient_encounter_class_and_correction() {
        let a = event(EventClass::SauEntry, false);
        assert_eq!(idempotency_key(&a), idempotency_key(&a.clone()));
        assert_ne!(idempotency_key(&a), idempotency_key(&event(EventClass::Admission, false)));
        let c = event(EventClass::SauEntry, true);
        assert_ne!(idempotency_key(&a), idempotency_key(&c));
        assert_eq!(corrected_key(&c), idempotency_key(&a));
        assert!(!idempotency_key(&a).contains("123456"), "no identifier in clear");
        assert_eq!(corrected_class("A04", Some("E")), Some(EventClass::SauEntry));
        assert_eq!(corrected_class("A03", Some("I")), Some(EventClass::Discharge));
    }

    #[test]
    fn templates_render_in_french_with_ins_only_when_qualified() {
        let cfg = cfg();
        let t = Templates::load(&cfg.templates).unwrap();
        let text = t.render(&event(EventClass::SauEntry, false), &cfg).unwrap();
        assert_eq!(text.subject, "Entrée aux urgences : TEST Jeanne");
        assert!(text.body.starts_with("Bonjour Docteur Isabelle AGNES,"));
        assert!(text.body.contains("est entré(e) aux urgences de CH de Test le 05/01/2024 à 10h15"));
        assert!(text.body.contains("(INS 279035121518989)"));
        assert!(text.body.contains("02 43 00 00 00"));
        let mut e = event(EventClass::Death, false);
        e.patient.ins_qualified = false;
        let text = t.render(&e, &cfg).unwrap();
        assert!(text.body.contains("décès") && !text.body.contains("INS"));
        let text = t.render(&event(EventClass::SauEntry, true), &cfg).unwrap();
        assert!(text.subject.starts_with("Annulation : l'entrée aux urgences"));
        assert!(text.body.contains("Merci de ne pas tenir compte de la notification précédente"));
    }
}
