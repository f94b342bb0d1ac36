//! The MSSanté sink: documents by secure mail (SMTP over TLS), each in an IHE XDM zip.
//!
//! It receives a [`MailRequest`] (a [`Submission`], the patient's identity traits, the professionals'
//! addresses from PRT RCT or the route, the OBX `MetaDMPMSS` flags) and hands on one mail per audience
//! (professionals, patient) and, once sent, one [`Outcome`] per mail:
//!
//! - the masking matrix ([`audience`], french-interop.md §6.2) allows exactly three combinations; anything
//!   else is a permanent failure naming the flags, and a document masked to professionals (`MASQUE_PS`)
//!   never reaches a professional's mailbox;
//! - subject `XDM/1.0/DDM+<title> <NOM> <Prénom> <DD/MM/YYYY>`; headers `X-MSS-CODECDA`, `X-MSS-INS`
//!   (`O` only with a qualified INS), `X-MSS-NIL` (every mail), `X-MSS-MES: FIN` (patient mail),
//!   `Disposition-Notification-To` when a reception or read ack is requested;
//! - attachments: `IHE_XDM.ZIP`, and the PDF beside it when the document has one;
//! - the patient's address is `<INS>@patient.mssante.fr`, only with a qualified INS (else that mail is
//!   undeliverable, the professionals' mail still goes).
//!
//! [`MssSender`] sends over SMTP with STARTTLS or implicit TLS (lettre + rustls), optional client certificate
//! and authentication; SMTP 4xx and network errors are transient, 5xx permanent.

use std::path::PathBuf;
use std::time::Duration;

use lettre::Message;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, CertificateStore, Identity, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use serde::{Deserialize, Serialize};

use crate::sinks::ebrim::Submission;
use crate::sinks::retry::{Outcome, RetryPolicy};
use crate::sinks::xdm;

/// Domain of patients' mailboxes in Mon espace santé.
pub const PATIENT_DOMAIN: &str = "patient.mssante.fr";

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which is required (port 587 / 25).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Implicit,
    /// No TLS: allowed only to a relay on the loopback interface (a local MTA that makes the TLS hop to the
    /// operator, or a test server); `check` refuses it for any other host.
    None,
}

/// `sinks.mss.*`: the SMTP relay of the establishment's MSSanté operator.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MssConfig {
    /// SMTP server host name or address; empty disables the sink.
    pub host: String,
    /// SMTP port (587).
    pub port: u16,
    /// `starttls` or `implicit`.
    pub tls: SmtpTls,
    /// Name the server certificate must carry (default: `host`).
    pub tls_name: Option<String>,
    /// PEM CA bundle for the server certificate (default: the system store).
    pub ca: Option<PathBuf>,
    /// PEM client certificate, for operators that authenticate the client by certificate.
    pub client_cert: Option<PathBuf>,
    /// PEM client key.
    pub client_key: Option<PathBuf>,
    /// SMTP AUTH user (optional).
    pub username: Option<String>,
    /// SMTP AUTH password (set it through `RELAIS__SINKS__MSS__PASSWORD`, not in a file).
    pub password: Option<String>,
    /// The sender: the establishment's application mailbox (`…@hopital.mssante.fr`).
    pub from: String,
    /// `X-MSS-NIL`: the software's product reference on convergence.esante.gouv.fr.
    pub nil: String,
    /// Seconds before an SMTP exchange is abandoned (30).
    pub timeout_secs: u64,
    /// SMTP connections kept open and used in parallel (8); each carries one mail at a time.
    pub connections: u16,
    /// `sourceId` of the XDM submission sets (the sending system's OID).
    pub source_id: String,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Inbound SMTP address (`127.0.0.1:2526`) where MDNs come back, each one becoming a ZAM^Z03; unset: none.
    pub mdn_listen: Option<String>,
    /// PEM certificate chain of the MDN port; with `mdn_tls_key`, STARTTLS is offered and required.
    pub mdn_tls_cert: Option<PathBuf>,
    /// PEM private key of the MDN port.
    pub mdn_tls_key: Option<PathBuf>,
}

impl std::fmt::Debug for MssConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MssConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl Default for MssConfig {
    fn default() -> Self {
        MssConfig {
            host: String::new(),
            port: 587,
            tls: SmtpTls::Starttls,
            tls_name: None,
            ca: None,
            client_cert: None,
            client_key: None,
            username: None,
            password: None,
            from: String::new(),
            nil: String::new(),
            timeout_secs: 30,
            connections: 8,
            source_id: String::new(),
            retry: RetryPolicy::default(),
            mdn_listen: None,
            mdn_tls_cert: None,
            mdn_tls_key: None,
        }
    }
}

impl MssConfig {
    /// Checks values without I/O; the error names the key.
    pub fn check(&self) -> Result<(), (String, String)> {
        self.retry.check("sinks.mss.retry")?;
        if self.host.is_empty() {
            return Ok(());
        }
        if self.tls == SmtpTls::None && !is_loopback(&self.host) {
            return Err((
                "sinks.mss.tls".into(),
                "`none` only to a relay on the loopback interface (127.0.0.1, ::1, localhost)".into(),
            ));
        }
        if self.from.parse::<Mailbox>().is_err() {
            return Err(("sinks.mss.from".into(), "must be a mail address".into()));
        }
        if self.nil.is_empty() {
            return Err(("sinks.mss.nil".into(), "required: X-MSS-NIL goes on every mail".into()));
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(("sinks.mss.client_key".into(), "client_cert and client_key go together".into()));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(("sinks.mss.password".into(), "username and password go together".into()));
        }
        if let Some(addr) = &self.mdn_listen
            && addr.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(("sinks.mss.mdn_listen".into(), "expected ip:port".into()));
        }
        if self.mdn_tls_cert.is_some() != self.mdn_tls_key.is_some() {
            return Err(("sinks.mss.mdn_tls_key".into(), "mdn_tls_cert and mdn_tls_key go together".into()));
        }
        Ok(())
    }
}

/// True for `localhost` and loopback addresses.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The OBX `MetaDMPMSS` flags that decide who may receive a document (true = `Y`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskingFlags {
    /// `MASQUE_PS`: hidden from professionals.
    pub masque_ps: bool,
    /// `INVISIBLE_PATIENT`: hidden from the patient.
    pub invisible_patient: bool,
    /// `INVISIBLE_REP_LEGAUX`: hidden from the legal representatives.
    pub invisible_rep_legaux: bool,
    /// `CONNEXION_SECRETE`.
    pub connexion_secrete: bool,
    /// `DESTDMP`: also sent to the DMP.
    pub dest_dmp: bool,
    /// `DESTMSSANTEPS`: to professionals by MSSanté.
    pub dest_mss_ps: bool,
    /// `DESTMSSANTEPAT`: to the patient by MSSanté.
    pub dest_mss_pat: bool,
}

impl MaskingFlags {
    /// Reads the flags from their names (the ones set to `Y`), as in [`crate::facts::Facts::flags`].
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> MaskingFlags {
        let has = |n: &str| names.iter().any(|s| s.as_ref().eq_ignore_ascii_case(n));
        MaskingFlags {
            masque_ps: has("MASQUE_PS"),
            invisible_patient: has("INVISIBLE_PATIENT"),
            invisible_rep_legaux: has("INVISIBLE_REP_LEGAUX"),
            connexion_secrete: has("CONNEXION_SECRETE"),
            dest_dmp: has("DESTDMP"),
            dest_mss_ps: has("DESTMSSANTEPS"),
            dest_mss_pat: has("DESTMSSANTEPAT"),
        }
    }
}

/// Who a document may be mailed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Audience {
    /// Professionals' mailboxes.
    pub professionals: bool,
    /// The patient's mailbox.
    pub patient: bool,
}

/// Applies the masking matrix: the three allowed combinations give an audience; any other is a permanent
/// failure naming the flags; no MSSanté destination at all is undeliverable.
pub fn audience(f: &MaskingFlags) -> Result<Audience, Outcome> {
    if !f.dest_mss_ps && !f.dest_mss_pat {
        return Err(Outcome::Undeliverable {
            reason: "no MSSanté destination (DESTMSSANTEPS/PAT = N)".into(),
        });
    }
    // 1. Professionals and patient.
    if f.dest_mss_ps && f.dest_mss_pat && !f.masque_ps && !f.invisible_patient && !f.invisible_rep_legaux {
        return Ok(Audience { professionals: true, patient: true });
    }
    // 2. Professionals only.
    if f.dest_mss_ps && !f.dest_mss_pat && !f.masque_ps && f.invisible_patient {
        return Ok(Audience { professionals: true, patient: false });
    }
    // 3. Patient only (MASQUE_PS may be Y or N).
    if f.dest_mss_pat && !f.dest_mss_ps && !f.invisible_patient && !f.connexion_secrete && !f.dest_dmp {
        return Ok(Audience { professionals: false, patient: true });
    }
    let yn = |b: bool| if b { 'Y' } else { 'N' };
    Err(Outcome::failed(format!(
        "masking flags outside the three allowed combinations: MASQUE_PS={} INVISIBLE_PATIENT={} \
         INVISIBLE_REP_LEGAUX={} CONNEXION_SECRETE={} DESTDMP={} DESTMSSANTEPS={} DESTMSSANTEPAT={}",
        yn(f.masque_ps),
        yn(f.invisible_patient),
        yn(f.invisible_rep_legaux),
        yn(f.connexion_secrete),
        yn(f.dest_dmp),
        yn(f.dest_mss_ps),
        yn(f.dest_mss_pat)
    )))
}

/// The patient's traits used in the subject and the patient address. Debug prints no value.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Patient {
    /// Birth family name (PID-5 type L), as written in the mail subject in upper case.
    pub family: String,
    /// First given name.
    pub given: String,
    /// Birth date, `YYYYMMDD`.
    pub birth_date: String,
    /// The INS matricule (NIR or NIA, 15 characters), when present.
    pub ins: Option<String>,
    /// True when the identity is qualified (PID-32 = VALI).
    pub ins_qualified: bool,
}

impl std::fmt::Debug for Patient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Patient").field("ins_qualified", &self.ins_qualified).finish_non_exhaustive()
    }
}

impl Patient {
    /// `<INS>@patient.mssante.fr`, only with a qualified INS.
    pub fn mailbox(&self) -> Option<String> {
        let ins = self.ins.as_deref().filter(|_| self.ins_qualified)?;
        Some(format!("{ins}@{PATIENT_DOMAIN}"))
    }
}

/// One document to mail.
#[derive(Debug, Clone)]
pub struct MailRequest {
    /// The document and its metadata.
    pub submission: Submission,
    /// The patient.
    pub patient: Patient,
    /// Professionals' addresses (PRT RCT PRT-15.4, or the route's recipients).
    pub professionals: Vec<String>,
    /// The masking and destination flags.
    pub flags: MaskingFlags,
    /// Body of the professionals' mail (OBX `CORPSMAIL_PS`).
    pub body_ps: String,
    /// Body of the patient's mail (OBX `CORPSMAIL_PATIENT`).
    pub body_patient: String,
    /// OBX `ACK_RECEPTION` or `ACK_LECTURE_MSS` = Y: ask for an MDN.
    pub ack_requested: bool,
}

/// Which audience a mail is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressee {
    /// Professionals.
    Professionals,
    /// The patient.
    Patient,
}

/// One mail, built, or the reason it cannot be.
#[derive(Debug)]
pub struct Mail {
    /// For whom.
    pub addressee: Addressee,
    /// The message, or the (final) outcome that replaces it.
    pub message: Result<Message, Outcome>,
}

/// `XDM/1.0/DDM+<title> <NOM> <Prénom> <DD/MM/YYYY>`.
pub fn subject(title: &str, patient: &Patient) -> String {
    let d = &patient.birth_date;
    let birth = if d.len() >= 8 { format!("{}/{}/{}", &d[6..8], &d[4..6], &d[0..4]) } else { d.clone() };
    format!("XDM/1.0/DDM+{title} {} {} {birth}", patient.family.to_uppercase(), patient.given)
}

/// The `Message-ID` of the mail of journal entry `journal_id` for `addressee`:
/// `<relais.<journal id>.<ps|pat>@<domain of from>>`, so that an MDN's `Original-Message-ID` names the entry.
pub fn message_id(journal_id: u64, addressee: Addressee, from: &str) -> String {
    let domain = from.rsplit_once('@').map_or("relais.invalid", |(_, d)| d);
    let who = match addressee {
        Addressee::Professionals => "ps",
        Addressee::Patient => "pat",
    };
    format!("<relais.{journal_id}.{who}@{domain}>")
}

/// The journal id a [`message_id`] names (angle brackets optional), if it is one of ours.
pub fn journal_id_of(message_id: &str) -> Option<u64> {
    let id = message_id.trim().trim_start_matches('<').trim_end_matches('>');
    let rest = id.strip_prefix("relais.")?;
    let (number, rest) = rest.split_once('.')?;
    let (who, _domain) = rest.split_once('@')?;
    matches!(who, "ps" | "pat").then_some(())?;
    number.parse().ok()
}

/// Builds the mails for a request: one per audience the masking matrix allows. `Err` is the outcome of the
/// whole request (matrix violation, nothing to send).
pub fn build(req: &MailRequest, cfg: &MssConfig) -> Result<Vec<Mail>, Outcome> {
    build_for(req, cfg, None)
}

/// [`build`], with each mail's `Message-ID` derived from `journal_id` ([`message_id`]) when given.
pub fn build_for(req: &MailRequest, cfg: &MssConfig, journal_id: Option<u64>) -> Result<Vec<Mail>, Outcome> {
    let who = audience(&req.flags)?;
    let from: Mailbox =
        cfg.from.parse().map_err(|_| Outcome::failed("sinks.mss.from is not a mail address"))?;
    let zip = xdm::build(&req.submission, &format!("Relais {}", env!("CARGO_PKG_VERSION")))
        .map_err(|e| Outcome::failed(e.to_string()))?;
    let mut mails = Vec::new();
    if who.professionals {
        let message = if req.professionals.is_empty() {
            Err(Outcome::Undeliverable { reason: "no professional recipient".into() })
        } else {
            compose(req, cfg, &from, &req.professionals, Addressee::Professionals, &zip, journal_id)
        };
        mails.push(Mail { addressee: Addressee::Professionals, message });
    }
    if who.patient {
        let message = match req.patient.mailbox() {
            Some(addr) => compose(req, cfg, &from, &[addr], Addressee::Patient, &zip, journal_id),
            None => Err(Outcome::Undeliverable { reason: "no qualified INS: no patient mailbox".into() }),
        };
        mails.push(Mail { addressee: Addressee::Patient, message });
    }
    Ok(mails)
}

fn header(name: &'static str, value: impl Into<String>) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value.into())
}

fn compose(
    req: &MailRequest,
    cfg: &MssConfig,
    from: &Mailbox,
    to: &[String],
    addressee: Addressee,
    zip: &[u8],
    journal_id: Option<u64>,
) -> Result<Message, Outcome> {
    let doc = &req.submission.document;
    let mut builder = Message::builder()
        .from(from.clone())
        .message_id(journal_id.map(|id| message_id(id, addressee, &cfg.from)))
        .subject(subject(&doc.title, &req.patient))
        .raw_header(header("X-MSS-CODECDA", doc.type_code.code.clone()))
        .raw_header(header(
            "X-MSS-INS",
            if req.patient.ins_qualified && req.patient.ins.is_some() { "O" } else { "N" },
        ))
        .raw_header(header("X-MSS-NIL", cfg.nil.clone()));
    for addr in to {
        let mailbox: Mailbox = addr
            .parse()
            .map_err(|_| Outcome::failed(format!("recipient `{}` is not a mail address", mask(addr))))?;
        builder = builder.to(mailbox);
    }
    if addressee == Addressee::Patient {
        builder = builder.raw_header(header("X-MSS-MES", "FIN"));
    }
    if req.ack_requested {
        builder = builder.raw_header(header("Disposition-Notification-To", cfg.from.clone()));
    }
    let text = match addressee {
        Addressee::Professionals => &req.body_ps,
        Addressee::Patient => &req.body_patient,
    };
    let mut parts = MultiPart::mixed().singlepart(SinglePart::plain(text.clone())).singlepart(
        Attachment::new(xdm::XDM_FILE_NAME.to_string())
            .body(zip.to_vec(), ContentType::parse("application/zip").expect("valid content type")),
    );
    if let Some(pdf) = &doc.pdf {
        parts = parts.singlepart(
            Attachment::new("DOC0001.PDF".to_string())
                .body(pdf.clone(), ContentType::parse("application/pdf").expect("valid content type")),
        );
    }
    builder.multipart(parts).map_err(|e| Outcome::failed(format!("mail: {e}")))
}

/// Masks an address for logs and reasons: `j***@domain`.
pub fn mask(addr: &str) -> String {
    match addr.split_once('@') {
        Some((local, domain)) => format!("{}***@{domain}", local.chars().next().unwrap_or('*')),
        None => "***".into(),
    }
}

/// Why an SMTP sender could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A PEM file could not be read.
    #[error("{what} `{path}`: {reason}")]
    File {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// lettre refused the TLS parameters.
    #[error("SMTP TLS: {0}")]
    Tls(#[from] lettre::transport::smtp::Error),
}

/// Sends mails through the configured SMTP relay, over at most `connections` SMTP connections kept open and
/// reused mail after mail (one TLS handshake per connection, not per mail).
///
/// The connections are lettre's SMTP client ([`AsyncSmtpConnection`]) over sockets opened here with
/// `TCP_NODELAY`: lettre writes a mail's data and its final `.` in two writes, and with Nagle's algorithm
/// the second one waits for the server's delayed ACK (40 ms on Linux) — a ceiling of ~25 mails/s per
/// connection whatever the server.
#[derive(Clone)]
pub struct MssSender {
    inner: std::sync::Arc<SmtpPool>,
}

struct SmtpPool {
    host: String,
    port: u16,
    tls: PoolTls,
    credentials: Option<Credentials>,
    timeout: Duration,
    hello: ClientId,
    /// Connections at rest, with when they were last used.
    idle: std::sync::Mutex<Vec<(AsyncSmtpConnection, std::time::Instant)>>,
    /// One permit per connection allowed.
    permits: tokio::sync::Semaphore,
}

enum PoolTls {
    None,
    Starttls(TlsParameters),
    Implicit(tokio_rustls::TlsConnector, rustls_pki_types::ServerName<'static>),
}

/// A connection idle for longer than this is closed rather than reused (servers drop idle clients).
const IDLE_FOR: Duration = Duration::from_secs(30);

impl std::fmt::Debug for MssSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MssSender").finish_non_exhaustive()
    }
}

impl MssSender {
    /// Builds the SMTP sender from checked settings (reads the PEM files); connects on the first mail.
    pub fn new(cfg: &MssConfig) -> Result<MssSender, BuildError> {
        let read = |what: &'static str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| BuildError::File {
                what,
                path: path.display().to_string(),
                reason: e.to_string(),
            })
        };
        let name = cfg.tls_name.clone().unwrap_or_else(|| cfg.host.clone());
        let tls = match cfg.tls {
            SmtpTls::None => PoolTls::None,
            SmtpTls::Starttls => {
                let mut params = TlsParameters::builder(name);
                if let Some(ca) = &cfg.ca {
                    let pem = read("CA bundle", ca)?;
                    params = params
                        .certificate_store(CertificateStore::None)
                        .add_root_certificate(Certificate::from_pem(&pem).map_err(BuildError::Tls)?);
                }
                if let (Some(cert), Some(key)) = (&cfg.client_cert, &cfg.client_key) {
                    let identity =
                        Identity::from_pem(&read("client certificate", cert)?, &read("client key", key)?)?;
                    params = params.identify_with(identity);
                }
                PoolTls::Starttls(params.build_rustls()?)
            }
            SmtpTls::Implicit => {
                let identity = cfg.client_cert.as_deref().zip(cfg.client_key.as_deref());
                let config = crate::sinks::tls::client_config(cfg.ca.as_deref(), identity)
                    .map_err(|e| BuildError::File { what: e.what, path: e.path, reason: e.reason })?;
                let server = rustls_pki_types::ServerName::try_from(name.clone()).map_err(|e| {
                    BuildError::File { what: "TLS name", path: name.clone(), reason: e.to_string() }
                })?;
                PoolTls::Implicit(tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)), server)
            }
        };
        let credentials = match (&cfg.username, &cfg.password) {
            (Some(user), Some(password)) => Some(Credentials::new(user.clone(), password.clone())),
            _ => None,
        };
        let connections = usize::from(cfg.connections.max(1));
        Ok(MssSender {
            inner: std::sync::Arc::new(SmtpPool {
                host: cfg.host.clone(),
                port: cfg.port,
                tls,
                credentials,
                timeout: Duration::from_secs(cfg.timeout_secs.max(1)),
                hello: ClientId::default(),
                idle: std::sync::Mutex::new(Vec::with_capacity(connections)),
                permits: tokio::sync::Semaphore::new(connections),
            }),
        })
    }

    /// Sends one mail: delivered on 2xx, retry on 4xx and network errors, failed on 5xx. A kept connection
    /// the server has closed meanwhile is replaced once by a new one.
    pub async fn send(&self, message: &Message) -> Outcome {
        let pool = &*self.inner;
        let Ok(_permit) = pool.permits.acquire().await else { return Outcome::retry("SMTP sender closed") };
        let kept = pool.take_idle();
        let reused = kept.is_some();
        let mut conn = match kept {
            Some(c) => c,
            None => match pool.connect().await {
                Ok(c) => c,
                Err(e) => return e.outcome(),
            },
        };
        let (envelope, body) = (message.envelope(), message.formatted());
        let mut result = pool.within(conn.send(envelope, &body)).await;
        if reused && matches!(&result, Err(e) if !e.answered()) {
            conn.abort().await;
            conn = match pool.connect().await {
                Ok(c) => c,
                Err(e) => return e.outcome(),
            };
            result = pool.within(conn.send(envelope, &body)).await;
        }
        match result {
            Ok(response) => {
                pool.give_back(conn);
                let code: u16 = response.code().to_string().parse().unwrap_or(250);
                crate::sinks::retry::classify_smtp(code, "")
            }
            Err(e) => {
                // The server answered: the connection stays usable once reset.
                if e.answered()
                    && pool.within(conn.command(lettre::transport::smtp::commands::Rset)).await.is_ok()
                {
                    pool.give_back(conn);
                } else {
                    conn.abort().await;
                }
                e.outcome()
            }
        }
    }
}

/// Why an SMTP exchange did not end in a reply.
enum Fail {
    /// lettre's error (a reply code, or a client / network error).
    Smtp(lettre::transport::smtp::Error),
    /// Connecting or TLS failed, or the exchange timed out.
    Net(String),
}

impl Fail {
    /// True when the server answered with a 4xx / 5xx reply.
    fn answered(&self) -> bool {
        matches!(self, Fail::Smtp(e) if e.is_permanent() || e.is_transient())
    }

    fn outcome(self) -> Outcome {
        match self {
            Fail::Smtp(e) if e.is_permanent() => Outcome::failed(format!("SMTP: {e}")),
            Fail::Smtp(e) if e.is_transient() => Outcome::retry(format!("SMTP: {e}")),
            Fail::Smtp(e) => crate::sinks::retry::classify_network(e),
            Fail::Net(e) => crate::sinks::retry::classify_network(e),
        }
    }
}

impl From<lettre::transport::smtp::Error> for Fail {
    fn from(e: lettre::transport::smtp::Error) -> Fail {
        Fail::Smtp(e)
    }
}

impl From<std::io::Error> for Fail {
    fn from(e: std::io::Error) -> Fail {
        Fail::Net(e.to_string())
    }
}

impl SmtpPool {
    /// `fut` bounded by the exchange timeout.
    async fn within<T, E: Into<Fail>>(
        &self,
        fut: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, Fail> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(result) => result.map_err(Into::into),
            Err(_) => Err(Fail::Net("SMTP exchange timed out".into())),
        }
    }

    fn take_idle(&self) -> Option<AsyncSmtpConnection> {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some((conn, since)) = idle.pop() {
            if !conn.has_broken() && since.elapsed() < IDLE_FOR {
                return Some(conn);
            }
        }
        None
    }

    fn give_back(&self, conn: AsyncSmtpConnection) {
        if !conn.has_broken() {
            let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            idle.push((conn, std::time::Instant::now()));
        }
    }

    /// A new connection: TCP with `TCP_NODELAY`, then implicit TLS or the greeting, EHLO, STARTTLS and AUTH
    /// as configured.
    async fn connect(&self) -> Result<AsyncSmtpConnection, Fail> {
        let open = async {
            let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
            tcp.set_nodelay(true)?;
            let mut conn = match &self.tls {
                PoolTls::Implicit(connector, server) => {
                    let tls = connector.connect(server.clone(), tcp).await?;
                    AsyncSmtpConnection::connect_with_transport(Box::new(TlsTcp(tls)), &self.hello).await?
                }
                _ => AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello).await?,
            };
            if let PoolTls::Starttls(params) = &self.tls {
                conn.starttls(params.clone(), &self.hello).await?;
            }
            if let Some(credentials) = &self.credentials {
                conn.auth(DEFAULT_MECHANISMS, credentials).await?;
            }
            Ok::<_, Fail>(conn)
        };
        self.within(open).await
    }
}

/// An implicit-TLS socket as lettre's client wants it.
#[derive(Debug)]
struct TlsTcp(tokio_rustls::client::TlsStream<tokio::net::TcpStream>);

impl tokio::io::AsyncRead for TlsTcp {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsTcp {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for TlsTcp {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(names: &[&str]) -> MaskingFlags {
        MaskingFlags::from_names(names)
    }

    #[test]
    fn the_three_allowed_combinations() {
        let both = audience(&flags(&["DESTMSSANTEPS", "DESTMSSANTEPAT"])).unwrap();
        assert_eq!(both, Audience { professionals: true, patient: true });
        let ps = audience(&flags(&["DESTMSSANTEPS", "INVISIBLE_PATIENT"])).unwrap();
        assert_eq!(ps, Audience { professionals: true, patient: false });
        let pat = audience(&flags(&["DESTMSSANTEPAT", "MASQUE_PS"])).unwrap();
        assert_eq!(pat, Audience { professionals: false, patient: true });
    }

    #[test]
    fn anything_else_fails_and_masked_never_goes_to_professionals() {
        for bad in [
            &["DESTMSSANTEPS", "MASQUE_PS", "INVISIBLE_PATIENT"][..],
            &["DESTMSSANTEPS", "DESTMSSANTEPAT", "MASQUE_PS"],
            &["DESTMSSANTEPS", "DESTMSSANTEPAT", "INVISIBLE_REP_LEGAUX"],
            &["DESTMSSANTEPAT", "DESTDMP"],
            &["DESTMSSANTEPS"],
        ] {
            let err = audience(&flags(bad)).unwrap_err();
            assert_eq!(err.as_str(), "failed", "{bad:?}");
            assert!(err.reason().unwrap().contains("DESTMSSANTEPS="), "{bad:?}");
        }
        assert_eq!(audience(&flags(&[])).unwrap_err().as_str(), "undeliverable");
    }

    #[test]
    fn subject_and_patient_mailbox() {
        let mut p = Patient {
            family: "Test".into(),
            given: "Jeanne".into(),
            birth_date: "19790321".into(),
            ins: Some("279035121518989".into()),
            ins_qualified: false,
        };
        assert_eq!(subject("Lettre de liaison", &p), "XDM/1.0/DDM+Lettre de liaison TEST Jeanne 21/03/1979");
        assert_eq!(p.mailbox(), None);
        p.ins_qualified = true;
        assert_eq!(p.mailbox().unwrap(), "279035121518989@patient.mssante.fr");
        assert_eq!(mask("jeanne.test@x.fr"), "j***@x.fr");
    }

    #[test]
    fn plain_smtp_only_to_a_loopback_relay() {
        let mut cfg = MssConfig {
            host: "127.0.0.1".into(),
            tls: SmtpTls::None,
            from: "notifications@ch-test.mssante.fr".into(),
            nil: "NIL-1".into(),
            ..MssConfig::default()
        };
        for host in ["127.0.0.1", "localhost", "::1", "[::1]"] {
            cfg.host = host.into();
            assert_eq!(cfg.check(), Ok(()), "{host}");
        }
        for host in ["smtp.mssante.fr", "10.0.0.1", "localhost.example.org"] {
            cfg.host = host.into();
            assert_eq!(cfg.check().unwrap_err().0, "sinks.mss.tls", "{host}");
        }
        cfg.tls = SmtpTls::Starttls;
        assert_eq!(cfg.check(), Ok(()));
    }

    #[test]
    fn message_ids_name_their_journal_entry() {
        let id = message_id(42, Addressee::Patient, "documents@ch-test.mssante.fr");
        assert_eq!(id, "<relais.42.pat@ch-test.mssante.fr>");
        assert_eq!(journal_id_of(&id), Some(42));
        assert_eq!(journal_id_of("relais.7.ps@x.fr"), Some(7));
        assert_eq!(journal_id_of("<CAF1234@gmail.com>"), None);
        assert_eq!(journal_id_of("<relais.x.ps@x.fr>"), None);
    }
}
