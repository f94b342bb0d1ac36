//! Starts the configured sinks in `relais serve`: builds each `[sinks.<name>]` instance (reads its PEM files
//! and templates, opens the directory) and runs [`run_sink_with`] for it with the delivery function
//! of its kind. What each delivery reads comes from the journal (the envelope names the entry by its id):
//!
//! - `notify`: the ADT message → [`NotificationEvent`] ([`event_from_adt`]) → [`Notifier::handle`];
//! - `mss`: the CDA or ORU^R01 → [`DocumentJob`] → one mail per allowed audience, each recorded once sent;
//! - `dmp`: the document and the XDS metadata the envelope carries ([`dmp_submission`]; the same job as
//!   `mss` when the envelope has none) → [`check_before_feed`] → [`DmpClient::send`].
//!
//! For an ORU^R01 whose sender has `senders.<MSH-4>.business_ack_to`, a final outcome of the mss sink queues a
//! ZAM^Z02 per recipient (when `ACK_RECEPTION` = Y) and one of the dmp sink a ZAM^Z01, in the [`AckOutbox`]
//! that [`acks::run`] sends to the DPI; an mss sink with `mdn_listen` also serves the MDN port ([`mdn`]).

use std::path::PathBuf;
use std::sync::Arc;

use crate::bus::{Bus, Envelope};
use crate::config::Settings;
use crate::documents::DocumentMapper;
use crate::documents::zam::BusinessAck;
use crate::facts::EventClass;
use crate::hl7v2::Message;
use crate::journal::Journal;
use crate::shutdown::Shutdown;
use crate::sinks::acks::{self, AckOutbox, AckRouter};
use crate::sinks::directory::Directory;
use crate::sinks::iti41::{DmpClient, check_before_feed};
use crate::sinks::job::{DocumentJob, dmp_submission};
use crate::sinks::ledger::{Ledger, Write};
use crate::sinks::mail::{self, MssSender, Patient};
use crate::sinks::mdn::{self, MdnInbox};
use crate::sinks::notify::{Gp, NotificationEvent, Notifier, Templates, Webhook, corrected_class};
use crate::sinks::pause::Pauses;
use crate::sinks::retry::Outcome;
use crate::sinks::retry::{Next, RetryPolicy};
use crate::sinks::{SinkConfig, run_sink_with};

/// A sink could not be built; the message names the sink and the file or key.
#[derive(Debug, thiserror::Error)]
#[error("sink `{sink}`: {reason}")]
pub struct StartError {
    /// The sink instance.
    pub sink: String,
    /// What is wrong.
    pub reason: String,
}

/// Builds every configured sink and spawns its consumption loop into `tasks`; the loops record outcomes in
/// `ledger` (the server opens it once, the admin API reads it) and stop taking while `pauses` says so.
pub fn start(
    settings: &Settings,
    bus: &Bus,
    journal: &Journal,
    (ledger, pauses): (&Arc<Ledger>, &Pauses),
    stop: &Shutdown,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Result<(), StartError> {
    let fail = |sink: &str, reason: String| StartError { sink: sink.into(), reason };
    let mut configs = std::collections::BTreeMap::new();
    for (name, s) in &settings.sinks {
        let config = SinkConfig::from_settings(name, s).map_err(|(k, r)| fail(name, format!("{k}: {r}")))?;
        configs.insert(name.clone(), config);
    }
    let mapper = || DocumentMapper::load(&settings.documents.tables).map(Arc::new).map_err(|e| e.to_string());
    let document_sinks: std::collections::BTreeMap<String, RetryPolicy> = configs
        .iter()
        .filter_map(|(name, c)| match c {
            SinkConfig::Mss(c) => Some((name.clone(), c.retry.clone())),
            SinkConfig::Dmp(c) => Some((name.clone(), c.retry.clone())),
            SinkConfig::Notify(_) => None,
        })
        .collect();
    let router = if document_sinks.is_empty() {
        None
    } else {
        let outbox = Arc::new(AckOutbox::open(&settings.data_dir).map_err(|e| fail("*", e.to_string()))?);
        tasks.spawn(acks::run(outbox.clone(), document_sinks, stop.clone()));
        Some(AckRouter::new(settings, outbox))
    };
    for (name, config) in &configs {
        let (bus, journal, ledger, pauses, stop, sink) =
            (bus.clone(), journal.clone(), ledger.clone(), pauses.clone(), stop.clone(), name.clone());
        match config {
            SinkConfig::Notify(cfg) => {
                if cfg.mail_via.is_empty() && cfg.webhook_url.is_empty() {
                    tracing::warn!(sink = %name, "no mail_via nor webhook_url: notifications wait on the bus");
                    continue;
                }
                let templates = Templates::load(&resolve(&settings.mappings_dir, &cfg.templates))
                    .map_err(|e| fail(name, e.to_string()))?;
                let dir = cfg.directory.as_deref().unwrap_or(&settings.data_dir);
                let directory = Directory::open(dir).map_err(|e| fail(name, e.to_string()))?;
                let mail = if cfg.mail_via.is_empty() {
                    None
                } else {
                    let Some(SinkConfig::Mss(mss)) = configs.get(&cfg.mail_via) else {
                        return Err(fail(
                            name,
                            format!("mail_via = `{}` is not a sink of kind mss", cfg.mail_via),
                        ));
                    };
                    Some((MssSender::new(mss).map_err(|e| fail(name, e.to_string()))?, mss.clone()))
                };
                let webhook = if cfg.webhook_url.is_empty() {
                    None
                } else {
                    Some(Webhook::new(cfg).map_err(|e| fail(name, e.to_string()))?)
                };
                let notifier =
                    Arc::new(Notifier::new(cfg.clone(), templates, directory, ledger.clone(), mail, webhook));
                let policy = cfg.retry.clone();
                let deliver = move |env: Envelope, _attempt: u32| {
                    let (notifier, journal) = (notifier.clone(), journal.clone());
                    async move {
                        let raw = match journal.raw(env.message_id) {
                            Ok(Some(raw)) => raw,
                            Ok(None) => return Outcome::failed("journal entry not found"),
                            Err(e) => return Outcome::retry(e.to_string()),
                        };
                        match event_from_adt(&raw, &env) {
                            Ok(event) => notifier.handle(&event, &env.bundle, env.message_id).await,
                            Err(outcome) => outcome,
                        }
                    }
                };
                tasks.spawn(log_end(
                    sink.clone(),
                    run_sink_with(bus, sink, policy, ledger, pauses, stop, deliver),
                ));
            }
            SinkConfig::Mss(cfg) => {
                let router = router.clone().expect("an mss sink opens the acks outbox");
                if let Some(listen) = &cfg.mdn_listen {
                    let listener = std::net::TcpListener::bind(listen)
                        .and_then(|l| l.set_nonblocking(true).map(|()| l))
                        .and_then(tokio::net::TcpListener::from_std)
                        .map_err(|e| fail(name, format!("sinks.{name}.mdn_listen `{listen}`: {e}")))?;
                    let tls = match (&cfg.mdn_tls_cert, &cfg.mdn_tls_key) {
                        (Some(cert), Some(key)) => Some(
                            mdn::tls_acceptor(cert, key)
                                .map_err(|e| fail(name, format!("sinks.{name}.mdn_tls_cert: {e}")))?,
                        ),
                        _ => None,
                    };
                    let inbox = Arc::new(MdnInbox::new(journal.clone(), router.clone(), name.clone()));
                    tasks.spawn(mdn::serve(listener, inbox, tls, stop.clone()));
                }
                if cfg.host.is_empty() {
                    tracing::warn!(sink = %name, "no host: documents wait on the bus");
                    continue;
                }
                let sender = Arc::new(MssSender::new(cfg).map_err(|e| fail(name, e.to_string()))?);
                let mapper = mapper().map_err(|e| fail(name, e))?;
                let (cfg, policy) = (Arc::new(cfg.clone()), cfg.retry.clone());
                let ledger2 = ledger.clone();
                let sink2 = sink.clone();
                let policy2 = policy.clone();
                let deliver = move |env: Envelope, attempt: u32| {
                    let (sender, mapper, journal, cfg, ledger, sink, router, policy) = (
                        sender.clone(),
                        mapper.clone(),
                        journal.clone(),
                        cfg.clone(),
                        ledger2.clone(),
                        sink2.clone(),
                        router.clone(),
                        policy2.clone(),
                    );
                    async move {
                        let (raw, job) = match load_job(&journal, &mapper, &env, &cfg.source_id, "") {
                            Ok(loaded) => loaded,
                            Err(outcome) => return outcome,
                        };
                        let mails = match mail::build_for(&job.mail_request(&[]), &cfg, Some(env.message_id))
                        {
                            Ok(mails) => mails,
                            Err(outcome) => return outcome,
                        };
                        let mut outcomes = Vec::new();
                        for m in mails {
                            let key = format!("journal:{}:{:?}", env.message_id, m.addressee);
                            let outcome = if matches!(ledger.delivered(&sink, &key), Ok(Some(_))) {
                                Outcome::Delivered
                            } else {
                                let outcome = match &m.message {
                                    Ok(message) => sender.send(message).await,
                                    Err(outcome) => outcome.clone(),
                                };
                                if outcome == Outcome::Delivered {
                                    let write = Write::Delivered {
                                        sink: sink.clone(),
                                        key: key.clone(),
                                        journal_id: env.message_id,
                                    };
                                    let _ = ledger.write(vec![write]).await;
                                }
                                outcome
                            };
                            if let Ok(message) = &m.message
                                && job.reception_ack_requested
                                && is_final(&outcome, &policy, attempt)
                            {
                                let to: Vec<String> =
                                    message.envelope().to().iter().map(|a| a.to_string()).collect();
                                for address in to {
                                    let ack = BusinessAck::MssReception {
                                        ok: outcome == Outcome::Delivered,
                                        recipient: (job.recipient_id(&address), address.clone()),
                                        error: smtp_error(&outcome),
                                    };
                                    if let Err(e) = router.queue(&raw, env.message_id, &sink, &ack, &address)
                                    {
                                        outcomes.push(Outcome::retry(e.to_string()));
                                    }
                                }
                            }
                            outcomes.push(outcome);
                        }
                        worst(outcomes)
                    }
                };
                tasks.spawn(log_end(
                    sink.clone(),
                    run_sink_with(bus, sink, policy, ledger, pauses, stop, deliver),
                ));
            }
            SinkConfig::Dmp(cfg) => {
                if cfg.endpoint.is_empty() {
                    tracing::warn!(sink = %name, "no endpoint: documents wait on the bus");
                    continue;
                }
                let router = router.clone().expect("a dmp sink opens the acks outbox");
                let client = Arc::new(DmpClient::new(cfg).map_err(|e| fail(name, e.to_string()))?);
                if !client.signs_vihf() {
                    tracing::warn!(
                        sink = %name,
                        "no vihf.signing_key / vihf.signing_cert: the VIHF assertion is sent unsigned \
                         (a real DMP refuses it)"
                    );
                }
                let mapper = mapper().map_err(|e| fail(name, e))?;
                let policy = cfg.retry.clone();
                let policy2 = policy.clone();
                let ids = Arc::new((cfg.source_id.clone(), cfg.unique_id_root.clone()));
                let sink2 = sink.clone();
                let deliver = move |env: Envelope, attempt: u32| {
                    let (client, mapper, journal, ids, router, policy, sink) = (
                        client.clone(),
                        mapper.clone(),
                        journal.clone(),
                        ids.clone(),
                        router.clone(),
                        policy2.clone(),
                        sink2.clone(),
                    );
                    async move {
                        let (raw, submission, ins_qualified) =
                            match load_submission(&journal, &mapper, &env, &ids.0, &ids.1) {
                                Ok(loaded) => loaded,
                                Err(outcome) => return outcome,
                            };
                        if let Err(held) = check_before_feed(&submission, ins_qualified, false) {
                            return held;
                        }
                        let (outcome, response) = client.send(&submission).await;
                        if is_final(&outcome, &policy, attempt) {
                            let error = response
                                .as_ref()
                                .and_then(|r| r.first_error())
                                .map(|e| (e.code.clone(), e.context.clone()))
                                .or_else(|| outcome.reason().map(|r| ("ERROR".to_string(), r.to_string())));
                            let ack = BusinessAck::DmpReception { ok: outcome == Outcome::Delivered, error };
                            if let Err(e) = router.queue(&raw, env.message_id, &sink, &ack, "") {
                                return Outcome::retry(e.to_string());
                            }
                        }
                        outcome
                    }
                };
                tasks.spawn(log_end(
                    sink.clone(),
                    run_sink_with(bus, sink, policy, ledger, pauses, stop, deliver),
                ));
            }
        }
    }
    Ok(())
}

/// True when `outcome` of attempt `attempt` ends the message in its sink (as the consumption loop decides).
fn is_final(outcome: &Outcome, policy: &RetryPolicy, attempt: u32) -> bool {
    matches!(policy.next(outcome, attempt, std::time::Duration::ZERO), Next::Done | Next::GiveUp { .. })
}

/// The SMTP code and text of a mail that did not go (for ZAM^Z02's ERR-5), none when delivered.
fn smtp_error(outcome: &Outcome) -> Option<(String, String)> {
    let reason = outcome.reason()?;
    let code = reason
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 3 && matches!(w.as_bytes()[0], b'4' | b'5'))
        .unwrap_or("554")
        .to_string();
    Some((code, reason.to_string()))
}

/// A relative template folder is taken inside `mappings_dir`.
fn resolve(mappings_dir: &std::path::Path, path: &std::path::Path) -> PathBuf {
    if path.is_absolute() { path.to_path_buf() } else { mappings_dir.join(path) }
}

async fn log_end(sink: String, run: impl std::future::Future<Output = Result<(), crate::bus::Error>>) {
    if let Err(error) = run.await {
        tracing::error!(%sink, %error, "sink stopped");
    }
}

fn worst(outcomes: Vec<Outcome>) -> Outcome {
    let pick = |name: &str| outcomes.iter().find(|o| o.as_str() == name).cloned();
    pick("retry")
        .or_else(|| pick("failed"))
        .or_else(|| pick("undeliverable"))
        .or_else(|| pick("held"))
        .unwrap_or(Outcome::Delivered)
}

fn load_job(
    journal: &Journal,
    mapper: &DocumentMapper,
    env: &Envelope,
    source_id: &str,
    unique_id_root: &str,
) -> Result<(Vec<u8>, DocumentJob), Outcome> {
    let raw = match journal.raw(env.message_id) {
        Ok(Some(raw)) => raw,
        Ok(None) => return Err(Outcome::failed("journal entry not found")),
        Err(e) => return Err(Outcome::retry(e.to_string())),
    };
    let job =
        DocumentJob::from_journal(mapper, env.kind, &raw, source_id, unique_id_root, jiff::Timestamp::now())
            .map_err(|e| Outcome::failed(e.to_string()))?;
    Ok((raw, job))
}

/// The DMP sink's submission for `env`: from the XDS metadata the envelope carries when it has them (an
/// envelope published before they travelled on the bus has not: the journal entry is mapped again).
fn load_submission(
    journal: &Journal,
    mapper: &DocumentMapper,
    env: &Envelope,
    source_id: &str,
    unique_id_root: &str,
) -> Result<(Vec<u8>, crate::sinks::ebrim::Submission, bool), Outcome> {
    let Some(meta) = env.xds.as_deref() else {
        let (raw, job) = load_job(journal, mapper, env, source_id, unique_id_root)?;
        return Ok((raw, job.submission, job.patient.ins_qualified));
    };
    let raw = match journal.raw(env.message_id) {
        Ok(Some(raw)) => raw,
        Ok(None) => return Err(Outcome::failed("journal entry not found")),
        Err(e) => return Err(Outcome::retry(e.to_string())),
    };
    let (submission, ins_qualified) =
        dmp_submission(meta, env.kind, &raw, source_id, unique_id_root, jiff::Timestamp::now())
            .map_err(|e| Outcome::failed(e.to_string()))?;
    Ok((raw, submission, ins_qualified))
}

/// Reads the notification of an ADT message (PAM FR): event, patient traits, médecin traitant (ROL ODRP,
/// else PD1-4), encounter (PV1-19, else ZBE-1), time (ZBE-2, else EVN-6, else EVN-2), unit (ZBE-7, else
/// PV1-3), opposition (PD1-12 = Y). The patient key is the envelope's (a hash, never the IPP in clear).
pub fn event_from_adt(raw: &[u8], env: &Envelope) -> Result<NotificationEvent, Outcome> {
    let msg = Message::parse(raw).map_err(|e| Outcome::failed(e.to_string()))?;
    let t = |p: &str| msg.text(p).filter(|s| !s.is_empty());
    let patient_class = t("PV1-2");
    let (class, correction) = match env.event_class {
        Some(EventClass::Cancel) => {
            let undoes = match t("MSH-9.2").as_deref() {
                Some("A11") => {
                    if patient_class.as_deref() == Some("E") {
                        "A04"
                    } else {
                        "A01"
                    }
                }
                Some("A13") => "A03",
                _ => {
                    return Err(Outcome::Undeliverable {
                        reason: "cancellation of an event that is not notified".into(),
                    });
                }
            };
            let class = corrected_class(undoes, patient_class.as_deref())
                .ok_or_else(|| Outcome::Undeliverable { reason: "not a notified event class".into() })?;
            (class, true)
        }
        Some(class) => (class, false),
        None => return Err(Outcome::Undeliverable { reason: "no event class".into() }),
    };
    let cs = msg.charset();
    let mut ins = None;
    if let Some(pid) = msg.segment("PID") {
        for rep in pid.field(3).repetitions() {
            if String::from_utf8_lossy(rep.component(5)) == "INS" {
                ins = Some(String::from_utf8_lossy(rep.component(1)).into_owned());
            }
        }
    }
    let gp = msg
        .segments_named("ROL")
        .find(|rol| rol.field(3).text(cs).split('^').next() == Some("ODRP"))
        .map(|rol| {
            let person = rol.field(4);
            let part = |c| String::from_utf8_lossy(person.component(c)).into_owned();
            Gp { rpps: part(1), name: format!("{} {}", part(3), part(2)).trim().to_string() }
        })
        .or_else(|| {
            t("PD1-4.1").map(|id| Gp {
                rpps: id,
                name: format!("{} {}", t("PD1-4.3").unwrap_or_default(), t("PD1-4.2").unwrap_or_default())
                    .trim()
                    .to_string(),
            })
        });
    Ok(NotificationEvent {
        class,
        correction,
        patient_key: env.partition_key.clone(),
        encounter: t("PV1-19.1").or_else(|| t("ZBE-1.1")).unwrap_or_default(),
        occurred_at: t("ZBE-2").or_else(|| t("EVN-6")).or_else(|| t("EVN-2")).unwrap_or_default(),
        service: t("ZBE-7.1").or_else(|| t("PV1-3.1")),
        patient: Patient {
            family: t("PID-5.1").unwrap_or_default(),
            given: t("PID-5.2").unwrap_or_default(),
            birth_date: t("PID-7").unwrap_or_default(),
            ins_qualified: ins.is_some() && t("PID-32").as_deref() == Some("VALI"),
            ins,
        },
        gp,
        opposition: t("PD1-12").as_deref() == Some("Y"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zam_follows_only_a_final_outcome() {
        let policy = RetryPolicy { max_attempts: 3, ..RetryPolicy::default() };
        assert!(is_final(&Outcome::Delivered, &policy, 1));
        assert!(is_final(&Outcome::failed("SMTP 550"), &policy, 1));
        assert!(!is_final(&Outcome::retry("SMTP 421"), &policy, 2), "retried: no ZAM yet");
        assert!(is_final(&Outcome::retry("SMTP 421"), &policy, 3), "the last attempt gives up");
    }

    #[test]
    fn the_smtp_code_of_a_failed_mail_goes_to_err_5() {
        assert_eq!(smtp_error(&Outcome::Delivered), None);
        let (code, text) =
            smtp_error(&Outcome::failed("SMTP: permanent error (550): 5.1.1 mailbox unknown")).unwrap();
        assert_eq!(code, "550");
        assert!(text.contains("mailbox unknown"));
        assert_eq!(smtp_error(&Outcome::retry("network: connection refused")).unwrap().0, "554");
    }
}
