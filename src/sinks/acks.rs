//! Business acknowledgements back to the DPI: a durable outbox of ZAM^Z01/Z02/Z03 and the MLLP loop that
//! sends them until the DPI answers AA.
//!
//! It receives, from the MSSanté and DMP sinks (SMTP outcome, RegistryResponse) and from the MDN port
//! ([`crate::sinks::mdn`]), a [`BusinessAck`] about one journaled ORU^R01. [`AckRouter::queue`] builds the ZAM
//! ([`crate::documents::zam`]) for the ORU's sender (MSH-4) when `senders.<MSH-4>.business_ack_to` names an
//! MLLP destination, and writes it to the outbox; nothing is queued for a bare CDA (no HL7 sender to answer)
//! or a sender without that key. [`run`] sends each queued ZAM with the client of `relais send`
//! ([`crate::send::send_all`]), one connection per ZAM, and retries with the producing sink's retry policy
//! until the DPI answers AA (or CA, enhanced mode); past the policy's bounds the ZAM is kept as `failed` with the reason.
//!
//! On disk: `<data_dir>/acks.redb`, table `pending` (key → [`QueuedAck`] as JSON) and table `done` (key →
//! `sent` | `failed: <reason>`). A key (`<sink>:<journal id>:<trigger>[:<recipient>]`) is queued at most
//! once, so a bus redelivery never sends a second ZAM; a ZAM is removed from `pending` only once answered
//! (or given up), so a restart resumes the queue. Counted in `relais_acks_sent_total{trigger,outcome}`.
//! Logs name the trigger, the key's journal id and the destination, never the ZAM's content.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use sha1::Digest;

use crate::config::Settings;
use crate::documents::zam::{self, BusinessAck, ZamEnvelope};
use crate::hl7v2::Header;
use crate::ops::metrics::ACKS_SENT;
use crate::send::{Outgoing, SendOptions, send_all};
use crate::shutdown::Shutdown;
use crate::sinks::retry::{Next, Outcome, RetryPolicy};

const PENDING: TableDefinition<&str, &str> = TableDefinition::new("pending");
const DONE: TableDefinition<&str, &str> = TableDefinition::new("done");
/// The outbox's file name inside the data directory.
pub const FILE_NAME: &str = "acks.redb";

/// The outbox's storage failed.
#[derive(Debug, thiserror::Error)]
#[error("acks outbox: {0}")]
pub struct Error(String);

fn storage(e: impl std::fmt::Display) -> Error {
    Error(e.to_string())
}

/// One ZAM waiting for the DPI's AA. `Debug` shows no content (the ZAM names recipients).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedAck {
    /// MLLP destination, `host:port`.
    pub to: String,
    /// The sink whose retry policy applies.
    pub sink: String,
    /// `Z01`, `Z02` or `Z03`.
    pub trigger: String,
    /// The ZAM message (UTF-8, segments ending with CR).
    pub message: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// When it was queued, unix milliseconds.
    pub queued_at_ms: i64,
    /// Not before this time, unix milliseconds.
    pub next_at_ms: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

impl std::fmt::Debug for QueuedAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedAck")
            .field("to", &self.to)
            .field("trigger", &self.trigger)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// Where a ZAM stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckState {
    /// Queued, not answered AA yet.
    Pending {
        /// Attempts made so far.
        attempts: u32,
    },
    /// The DPI answered AA.
    Sent,
    /// Given up (retry policy bounds) with this reason.
    Failed(String),
}

/// The durable ZAM outbox (see the module doc).
#[derive(Debug)]
pub struct AckOutbox {
    db: Database,
    wake: tokio::sync::Notify,
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

impl AckOutbox {
    /// Opens (or creates) the outbox in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<AckOutbox, Error> {
        std::fs::create_dir_all(data_dir).map_err(storage)?;
        let db = Database::create(data_dir.join(FILE_NAME)).map_err(storage)?;
        let txn = db.begin_write().map_err(storage)?;
        txn.open_table(PENDING).map_err(storage)?;
        txn.open_table(DONE).map_err(storage)?;
        txn.commit().map_err(storage)?;
        Ok(AckOutbox { db, wake: tokio::sync::Notify::new() })
    }

    /// Queues `ack` under `key`, durably; false (and nothing written) if the key was already queued.
    pub fn enqueue(&self, key: &str, ack: &QueuedAck) -> Result<bool, Error> {
        let json = serde_json::to_string(ack).map_err(storage)?;
        let txn = self.db.begin_write().map_err(storage)?;
        let fresh = {
            let mut pending = txn.open_table(PENDING).map_err(storage)?;
            let done = txn.open_table(DONE).map_err(storage)?;
            if pending.get(key).map_err(storage)?.is_some() || done.get(key).map_err(storage)?.is_some() {
                false
            } else {
                pending.insert(key, json.as_str()).map_err(storage)?;
                true
            }
        };
        txn.commit().map_err(storage)?;
        if fresh {
            self.wake.notify_one();
        }
        Ok(fresh)
    }

    /// Every queued ZAM, by key.
    pub fn pending(&self) -> Result<Vec<(String, QueuedAck)>, Error> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(PENDING).map_err(storage)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            out.push((k.value().to_string(), serde_json::from_str(v.value()).map_err(storage)?));
        }
        Ok(out)
    }

    /// Where the ZAM queued under `key` stands.
    pub fn state(&self, key: &str) -> Result<Option<AckState>, Error> {
        let txn = self.db.begin_read().map_err(storage)?;
        if let Some(v) = txn.open_table(DONE).map_err(storage)?.get(key).map_err(storage)? {
            let v = v.value();
            return Ok(Some(match v.strip_prefix("failed: ") {
                Some(reason) => AckState::Failed(reason.to_string()),
                None => AckState::Sent,
            }));
        }
        let pending = txn.open_table(PENDING).map_err(storage)?;
        let Some(v) = pending.get(key).map_err(storage)? else { return Ok(None) };
        let ack: QueuedAck = serde_json::from_str(v.value()).map_err(storage)?;
        Ok(Some(AckState::Pending { attempts: ack.attempts }))
    }

    fn finish(&self, key: &str, state: &str) -> Result<(), Error> {
        let txn = self.db.begin_write().map_err(storage)?;
        txn.open_table(PENDING).map_err(storage)?.remove(key).map_err(storage)?;
        txn.open_table(DONE).map_err(storage)?.insert(key, state).map_err(storage)?;
        txn.commit().map_err(storage)
    }

    fn reschedule(&self, key: &str, ack: &QueuedAck) -> Result<(), Error> {
        let json = serde_json::to_string(ack).map_err(storage)?;
        let txn = self.db.begin_write().map_err(storage)?;
        txn.open_table(PENDING).map_err(storage)?.insert(key, json.as_str()).map_err(storage)?;
        txn.commit().map_err(storage)
    }
}

/// Turns a sink's outcome about a journaled ORU^R01 into a queued ZAM for its sender.
#[derive(Debug, Clone)]
pub struct AckRouter {
    /// `senders.<MSH-4>.business_ack_to` and the sender's time zone, facility names in lower case.
    destinations: BTreeMap<String, (String, jiff::tz::TimeZone)>,
    outbox: Arc<AckOutbox>,
}

impl AckRouter {
    /// Reads the destinations of `settings.senders`.
    pub fn new(settings: &Settings, outbox: Arc<AckOutbox>) -> AckRouter {
        let destinations = settings
            .senders
            .iter()
            .filter_map(|(name, s)| {
                let tz = s.timezone.as_deref().unwrap_or("Europe/Paris");
                let tz = jiff::tz::TimeZone::get(tz).unwrap_or(jiff::tz::TimeZone::UTC);
                Some((name.to_ascii_lowercase(), (s.business_ack_to.clone()?, tz)))
            })
            .collect();
        AckRouter { destinations, outbox }
    }

    /// The outbox ZAMs are queued to.
    pub fn outbox(&self) -> &Arc<AckOutbox> {
        &self.outbox
    }

    /// Queues the ZAM saying `ack` about the ORU^R01 `raw` (journal entry `journal_id`), produced by `sink`;
    /// `about` tells apart several ZAMs of one trigger (the recipient). `Ok(false)`: nothing to queue (not an
    /// ORU^R01, no `business_ack_to` for its sender, or already queued).
    pub fn queue(
        &self,
        raw: &[u8],
        journal_id: u64,
        sink: &str,
        ack: &BusinessAck,
        about: &str,
    ) -> Result<bool, Error> {
        let Ok(header) = Header::parse(raw) else { return Ok(false) };
        let field = |n: usize| String::from_utf8_lossy(header.field(n)).into_owned();
        let first = |n: usize| field(n).split('^').next().unwrap_or_default().to_string();
        if !crate::documents::oru::is_oru_r01(raw) {
            return Ok(false);
        }
        let Some((to, tz)) = self.destinations.get(&first(4).to_ascii_lowercase()) else { return Ok(false) };
        let trigger = match ack {
            BusinessAck::DmpReception { .. } => "Z01",
            BusinessAck::MssReception { .. } => "Z02",
            BusinessAck::MssRead { .. } => "Z03",
        };
        let key = if about.is_empty() {
            format!("{sink}:{journal_id}:{trigger}")
        } else {
            format!("{sink}:{journal_id}:{trigger}:{}", about.to_ascii_lowercase())
        };
        // HL7 local time of the DPI (`senders.<MSH-4>.timezone`, Europe/Paris by default).
        let now = jiff::Timestamp::now().to_zoned(tz.clone()).strftime("%Y%m%d%H%M%S").to_string();
        let envelope = ZamEnvelope {
            sending: (first(5), first(6)),
            receiving: (first(3), first(4)),
            message_time: now.clone(),
            control_id: control_id(&key),
            event_time: now,
            original_control_id: field(10),
        };
        let message = String::from_utf8(zam::build(&envelope, ack)).map_err(storage)?;
        let at = now_ms();
        let queued = QueuedAck {
            to: to.clone(),
            sink: sink.to_string(),
            trigger: trigger.to_string(),
            message,
            attempts: 0,
            queued_at_ms: at,
            next_at_ms: at,
            last_error: None,
        };
        self.outbox.enqueue(&key, &queued)
    }
}

/// MSH-10 of a ZAM: `Z` and 19 hex digits of the key's SHA-1 (unique per key, 20 characters).
fn control_id(key: &str) -> String {
    let digest = sha1::Sha1::digest(key.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("Z{}", &hex[..19])
}

/// Sends the outbox's ZAMs until `stop` fires (see the module doc); `policies` are the sinks' retry
/// policies by sink name (the default policy for a sink not listed).
pub async fn run(outbox: Arc<AckOutbox>, policies: BTreeMap<String, RetryPolicy>, mut stop: Shutdown) {
    let default_policy = RetryPolicy::default();
    loop {
        let mut next_wake = now_ms() + 60_000;
        match outbox.pending() {
            Ok(pending) => {
                for (key, mut ack) in pending {
                    if ack.next_at_ms > now_ms() {
                        next_wake = next_wake.min(ack.next_at_ms);
                        continue;
                    }
                    let policy = policies.get(&ack.sink).unwrap_or(&default_policy);
                    if let Some(at) = attempt(&outbox, &key, &mut ack, policy).await {
                        next_wake = next_wake.min(at);
                    }
                    if stop.is_fired() {
                        return;
                    }
                }
            }
            Err(error) => {
                tracing::error!(%error, "acks outbox unreadable");
                next_wake = now_ms() + 5_000;
            }
        }
        let wait = Duration::from_millis((next_wake - now_ms()).max(0) as u64);
        tokio::select! {
            () = outbox.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
            () = stop.recv() => return,
        }
    }
}

/// One attempt at one ZAM; the time of its next attempt if it stays queued.
async fn attempt(outbox: &AckOutbox, key: &str, ack: &mut QueuedAck, policy: &RetryPolicy) -> Option<i64> {
    let options = SendOptions {
        to: ack.to.clone(),
        tls_ca: None,
        client_cert: None,
        client_key: None,
        server_name: None,
    };
    let outgoing = [Outgoing { file: Default::default(), bytes: ack.message.clone().into_bytes() }];
    let sent = tokio::time::timeout(Duration::from_secs(30), send_all(&options, &outgoing, |_| {})).await;
    let error = match sent {
        // AA, or CA (enhanced mode: committed to the DPI's safe storage).
        Ok(Ok(answers)) if answers.first().is_some_and(|a| a.code == "AA" || a.code == "CA") => None,
        Ok(Ok(answers)) => Some(match answers.first() {
            Some(a) => match &a.error_text {
                Some(text) => format!("answered {}: {text}", a.code),
                None => format!("answered {}", a.code),
            },
            None => "no answer".to_string(),
        }),
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("no ACK within 30 s".to_string()),
    };
    ack.attempts += 1;
    let journal_id = key.split(':').nth(1).unwrap_or_default();
    let count = |outcome: &'static str| {
        metrics::counter!(ACKS_SENT, "trigger" => ack.trigger.clone(), "outcome" => outcome).increment(1);
    };
    let Some(error) = error else {
        count("delivered");
        tracing::info!(trigger = %ack.trigger, journal_id, to = %ack.to, "business ack sent");
        if let Err(e) = outbox.finish(key, "sent") {
            tracing::error!(error = %e, "acks outbox: ZAM sent but not recorded (it will be sent again)");
        }
        return None;
    };
    let age = Duration::from_millis((now_ms() - ack.queued_at_ms).max(0) as u64);
    match policy.next(&Outcome::retry(error.clone()), ack.attempts, age) {
        Next::RetryAfter(wait) => {
            count("retried");
            tracing::warn!(trigger = %ack.trigger, journal_id, to = %ack.to, %error, "business ack not taken, will retry");
            ack.next_at_ms = now_ms() + wait.as_millis() as i64;
            ack.last_error = Some(error);
            if let Err(e) = outbox.reschedule(key, ack) {
                tracing::error!(error = %e, "acks outbox: retry not recorded");
            }
            Some(ack.next_at_ms)
        }
        Next::GiveUp { reason } => {
            count("dead_lettered");
            tracing::error!(trigger = %ack.trigger, journal_id, to = %ack.to, %reason, "business ack given up");
            if let Err(e) = outbox.finish(key, &format!("failed: {reason}")) {
                tracing::error!(error = %e, "acks outbox: failure not recorded");
            }
            None
        }
        // A retry outcome always gives RetryAfter or GiveUp.
        Next::Done => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::config::SenderSettings;

    const ORU: &[u8] =
        b"MSH|^~\\&|SIL-Y|labo|PFI-X|Organisation-X|202106060931||ORU^R01^ORU_R01|R-1|P|2.5\rPID|1\r";

    fn router(dir: &Path, to: &str) -> AckRouter {
        let mut settings = Settings::default();
        let sender = SenderSettings { business_ack_to: Some(to.into()), ..Default::default() };
        settings.senders.insert("LABO".into(), sender);
        AckRouter::new(&settings, Arc::new(AckOutbox::open(dir).unwrap()))
    }

    fn reception() -> BusinessAck {
        BusinessAck::MssReception {
            ok: true,
            recipient: ("801234567897".into(), "adam.hoda@test.mssante.fr".into()),
            error: None,
        }
    }

    fn fast(max_attempts: u32) -> BTreeMap<String, RetryPolicy> {
        let policy = RetryPolicy {
            initial_delay_ms: 20,
            max_delay_ms: 20,
            jitter: false,
            max_attempts,
            ..RetryPolicy::default()
        };
        BTreeMap::from([("mss".to_string(), policy)])
    }

    async fn wait_for(outbox: &AckOutbox, key: &str, done: impl Fn(&AckState) -> bool) -> AckState {
        for _ in 0..500 {
            if let Some(state) = outbox.state(key).unwrap().filter(|s| done(s)) {
                return state;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{key}: {:?}", outbox.state(key).unwrap());
    }

    #[test]
    fn only_an_oru_from_a_sender_with_a_destination_is_queued_and_once() {
        let dir = tempfile::tempdir().unwrap();
        let router = router(dir.path(), "127.0.0.1:9");
        let to = "adam.hoda@test.mssante.fr";
        assert!(router.queue(ORU, 7, "mss", &reception(), to).unwrap());
        assert!(!router.queue(ORU, 7, "mss", &reception(), &to.to_uppercase()).unwrap(), "same key");
        let adt = String::from_utf8_lossy(ORU).replace("ORU^R01^ORU_R01", "ADT^A01^ADT_A01");
        assert!(!router.queue(adt.as_bytes(), 8, "mss", &reception(), to).unwrap());
        let other = String::from_utf8_lossy(ORU).replace("|labo|", "|other|");
        assert!(!router.queue(other.as_bytes(), 9, "mss", &reception(), to).unwrap());
        assert!(!router.queue(b"<ClinicalDocument/>", 10, "mss", &reception(), to).unwrap());
        let pending = router.outbox().pending().unwrap();
        assert_eq!(pending.len(), 1);
        let (key, ack) = &pending[0];
        assert_eq!(key, "mss:7:Z02:adam.hoda@test.mssante.fr");
        let segments: Vec<&str> = ack.message.split('\r').collect();
        assert!(segments[0].starts_with("MSH|^~\\&|PFI-X|Organisation-X|SIL-Y|labo|"), "{}", segments[0]);
        assert!(segments[0].contains("|ZAM^Z02^ZAM_Z01|Z"), "{}", segments[0]);
        assert!(segments[2].starts_with("OBX|1|CWE|ACK_RECEPTION_MSS^") && segments[2].contains("|R-1|Y^^"));
        assert!(segments[3].contains("|801234567897|^^X.400^adam.hoda@test.mssante.fr|"));
    }

    #[tokio::test]
    async fn a_zam_is_sent_again_until_the_dpi_answers_aa() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::<String>::new()));
        let seen = received.clone();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut frame = Vec::new();
                let mut buf = [0u8; 4096];
                while !frame.ends_with(&[0x1c, 0x0d]) {
                    let n = stream.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    frame.extend_from_slice(&buf[..n]);
                }
                let message = String::from_utf8_lossy(&frame[1..frame.len() - 2]).into_owned();
                let count = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(message);
                    seen.len()
                };
                let code = if count == 1 { "AE" } else { "AA" };
                let ack = format!(
                    "\x0bMSH|^~\\&|SIL-Y|labo|PFI-X|X|20260101||ACK|A{count}|P|2.5\rMSA|{code}|x\r\x1c\r"
                );
                stream.write_all(ack.as_bytes()).await.unwrap();
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let router = router(dir.path(), &addr.to_string());
        let (trigger, stop) = crate::shutdown::channel();
        let task = tokio::spawn(run(router.outbox().clone(), fast(5), stop));
        router.queue(ORU, 7, "mss", &reception(), "adam.hoda@test.mssante.fr").unwrap();
        let key = "mss:7:Z02:adam.hoda@test.mssante.fr";
        assert_eq!(wait_for(router.outbox(), key, |s| *s == AckState::Sent).await, AckState::Sent);
        trigger.fire();
        task.await.unwrap();
        let received = received.lock().unwrap().clone();
        assert_eq!(received.len(), 2, "AE, then the same ZAM again, answered AA");
        assert_eq!(received[0], received[1]);
        assert!(received[0].contains("ZAM^Z02"));
        assert!(router.outbox().pending().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_unreachable_dpi_is_given_up_after_the_policy_s_attempts() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let router = router(dir.path(), &format!("127.0.0.1:{port}"));
        let (trigger, stop) = crate::shutdown::channel();
        let task = tokio::spawn(run(router.outbox().clone(), fast(3), stop));
        router.queue(ORU, 7, "mss", &reception(), "a@b.fr").unwrap();
        let state = wait_for(router.outbox(), "mss:7:Z02:a@b.fr", |s| matches!(s, AckState::Failed(_))).await;
        let AckState::Failed(reason) = state else { unreachable!() };
        assert!(reason.contains("connection") && reason.contains("3 attempts"), "{reason}");
        trigger.fire();
        task.await.unwrap();
    }
}
