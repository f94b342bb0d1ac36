//! The MDN port: an inbound SMTP listener (`sinks.<mss>.mdn_listen`) where the read receipts the MSSanté
//! sink asked for (`Disposition-Notification-To`) come back, each one becoming a ZAM^Z03 for the DPI.
//!
//! It receives mails over SMTP (the protocol state machine is the `mailin` crate's; this module only moves
//! lines between the socket and it), parses each with `mail-parser`, and keeps the RFC 8098 ones:
//! `multipart/report; report-type=disposition-notification` with a `message/disposition-notification` part.
//! A `displayed` disposition whose `Original-Message-ID` is one the sink set
//! ([`crate::sinks::mail::message_id`], derived from the journal id) names the journal entry: the ORU^R01 it
//! came from gives the DPI and the reader's id (PRT RCT), and [`AckRouter::queue`] writes the ZAM^Z03 to the
//! outbox before the mail is answered 250 (a storage failure answers 451, so the sender retries). A mail that
//! is not an MDN is refused (550); an MDN of another disposition (deleted, denied…) or about a mail Relais did
//! not send is accepted and only counted (`relais_acks_mdn_total{result}`). It never answers with patient data
//! and logs no address. With a certificate (`mdn_tls_cert`, `mdn_tls_key`) the port offers STARTTLS and refuses
//! `MAIL` before it (530); without, bind it to a loopback or private address.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mail_parser::{MessageParser, MimeHeaders};
use mailin::{Action, Handler, Response, SessionBuilder};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::documents::zam::BusinessAck;
use crate::journal::Journal;
use crate::ops::metrics::ACKS_MDN;
use crate::shutdown::Shutdown;
use crate::sinks::acks::AckRouter;
use crate::sinks::mail::{PATIENT_DOMAIN, journal_id_of};

/// Largest mail taken (an MDN is a few kilobytes; the original message is not expected back whole).
const MAX_MAIL: usize = 4 * 1024 * 1024;
/// Longest line read at once.
const MAX_LINE: u64 = 64 * 1024;
/// Idle time after which a connection is closed.
const IDLE: Duration = Duration::from_secs(300);

/// The fields of a disposition notification that matter here. `Debug` prints the disposition only.
#[derive(Clone, PartialEq, Eq)]
pub struct Mdn {
    /// `Original-Message-ID` (else the MDN's `In-Reply-To`).
    pub original_message_id: Option<String>,
    /// `Final-Recipient` address (after `rfc822;`): who read the mail.
    pub final_recipient: Option<String>,
    /// The disposition type in lower case: `displayed`, `deleted`…
    pub disposition: String,
}

impl std::fmt::Debug for Mdn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mdn").field("disposition", &self.disposition).finish_non_exhaustive()
    }
}

/// Why a mail is not an MDN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotMdn {
    /// Not a parsable mail.
    #[error("not a mail")]
    Unparsable,
    /// Not `multipart/report; report-type=disposition-notification`.
    #[error("not a disposition notification report")]
    NotReport,
    /// No `message/disposition-notification` part, or no `Disposition` field in it.
    #[error("no disposition-notification part")]
    NoDisposition,
}

/// Reads an MDN (RFC 8098).
pub fn parse(raw: &[u8]) -> Result<Mdn, NotMdn> {
    let message = MessageParser::default().parse(raw).ok_or(NotMdn::Unparsable)?;
    let report = message.content_type().ok_or(NotMdn::NotReport)?;
    let is_report = report.ctype().eq_ignore_ascii_case("multipart")
        && report.subtype().is_some_and(|s| s.eq_ignore_ascii_case("report"))
        && report
            .attribute("report-type")
            .is_some_and(|t| t.eq_ignore_ascii_case("disposition-notification"));
    if !is_report {
        return Err(NotMdn::NotReport);
    }
    let part = message
        .parts
        .iter()
        .find(|p| {
            p.content_type().is_some_and(|c| {
                c.ctype().eq_ignore_ascii_case("message")
                    && c.subtype().is_some_and(|s| s.eq_ignore_ascii_case("disposition-notification"))
            })
        })
        .ok_or(NotMdn::NoDisposition)?;
    let fields = fields(part.contents());
    let get = |name: &str| fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
    let disposition = get("Disposition").ok_or(NotMdn::NoDisposition)?;
    // `action-mode/sending-mode; type[/modifier]`
    let disposition = disposition
        .rsplit(';')
        .next()
        .unwrap_or_default()
        .split('/')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let address = |v: String| v.split_once(';').map_or(v.clone(), |(_, a)| a.to_string()).trim().to_string();
    let original_message_id =
        get("Original-Message-ID").or_else(|| message.in_reply_to().as_text().map(String::from));
    Ok(Mdn {
        original_message_id,
        final_recipient: get("Final-Recipient").or_else(|| get("Original-Recipient")).map(address),
        disposition,
    })
}

/// `Name: value` fields of a notification part, continuation lines unfolded.
fn fields(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = out.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    out
}

/// What became of one received mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Taken (250), with the `result` label it is counted under.
    Accepted(&'static str),
    /// Refused for good (550).
    Rejected(String),
    /// Not taken now (451): the sender retries.
    Unavailable(String),
}

/// Correlates MDNs to journaled ORU^R01 and queues their ZAM^Z03.
#[derive(Clone)]
pub struct MdnInbox {
    journal: Journal,
    router: AckRouter,
    sink: String,
}

impl std::fmt::Debug for MdnInbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MdnInbox").field("sink", &self.sink).finish_non_exhaustive()
    }
}

impl MdnInbox {
    /// An inbox for the MSSanté sink `sink`.
    pub fn new(journal: Journal, router: AckRouter, sink: String) -> MdnInbox {
        MdnInbox { journal, router, sink }
    }

    /// Handles one received mail (see the module doc).
    pub fn accept(&self, raw: &[u8]) -> Verdict {
        let mdn = match parse(raw) {
            Ok(mdn) => mdn,
            Err(e) => return Verdict::Rejected(e.to_string()),
        };
        if mdn.disposition != "displayed" {
            return Verdict::Accepted("ignored");
        }
        let Some(journal_id) = mdn.original_message_id.as_deref().and_then(journal_id_of) else {
            return Verdict::Accepted("uncorrelated");
        };
        let raw = match self.journal.raw(journal_id) {
            Ok(Some(raw)) => raw,
            Ok(None) => return Verdict::Accepted("uncorrelated"),
            Err(e) => return Verdict::Unavailable(e.to_string()),
        };
        let reader_address = mdn.final_recipient.unwrap_or_default();
        let reader_id = reader_id(&raw, &reader_address);
        let ack = BusinessAck::MssRead { reader: (reader_id, reader_address.clone()) };
        match self.router.queue(&raw, journal_id, &self.sink, &ack, &reader_address) {
            Ok(_) => Verdict::Accepted("correlated"),
            Err(e) => Verdict::Unavailable(e.to_string()),
        }
    }
}

/// The reader's id: PRT RCT's for that address, else the INS of a patient mailbox.
fn reader_id(oru: &[u8], address: &str) -> String {
    let from_prt = crate::documents::oru::read(oru).ok().and_then(|doc| {
        doc.info
            .recipients
            .iter()
            .find(|r| r.address.eq_ignore_ascii_case(address))
            .map(|r| r.id.clone())
            .filter(|id| !id.is_empty())
    });
    from_prt.unwrap_or_else(|| match address.rsplit_once('@') {
        Some((local, domain)) if domain.eq_ignore_ascii_case(PATIENT_DOMAIN) => local.to_string(),
        _ => String::new(),
    })
}

/// The STARTTLS acceptor of the MDN port from PEM files; the error names the file.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let named = |path: &Path, e: &dyn std::fmt::Display| format!("`{}`: {e}", path.display());
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| named(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| named(cert, &e))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| named(key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| named(cert, &e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves SMTP on `listener` until `stop` fires, handing each mail to `inbox`; with `tls`, STARTTLS is
/// offered and required before `MAIL`.
pub async fn serve(
    listener: TcpListener,
    inbox: Arc<MdnInbox>,
    tls: Option<TlsAcceptor>,
    mut stop: Shutdown,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, "MDN port: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stop.recv() => return,
        };
        let (inbox, tls, stop) = (inbox.clone(), tls.clone(), stop.clone());
        tokio::spawn(async move {
            if let Err(error) = session(stream, peer.ip(), inbox, tls, stop).await {
                tracing::debug!(%error, "MDN port: session ended");
            }
        });
    }
}

/// The per-connection mailin handler: collects the DATA and judges it at its end.
struct Collector {
    inbox: Arc<MdnInbox>,
    data: Vec<u8>,
    too_big: bool,
    /// STARTTLS is offered and not done yet: `MAIL` is refused.
    tls_pending: Arc<AtomicBool>,
}

impl Handler for Collector {
    fn mail(&mut self, _ip: IpAddr, _domain: &str, _from: &str) -> Response {
        if self.tls_pending.load(Ordering::Relaxed) {
            return Response::custom(530, "5.7.0 Must issue a STARTTLS command first".into());
        }
        mailin::response::OK
    }

    fn data_start(&mut self, _domain: &str, _from: &str, _is8bit: bool, _to: &[String]) -> Response {
        self.data.clear();
        self.too_big = false;
        mailin::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if self.data.len() + buf.len() > MAX_MAIL {
            self.too_big = true;
        } else {
            self.data.extend_from_slice(buf);
        }
        Ok(())
    }

    /// A refusal closes the connection: mailin would otherwise stay in its DATA state and take the client's
    /// next command (QUIT) for message text.
    fn data_end(&mut self) -> Response {
        let closing = |mut response: Response| {
            response.action = Action::Close;
            response
        };
        if self.too_big {
            metrics::counter!(ACKS_MDN, "result" => "rejected").increment(1);
            return closing(mailin::response::NO_STORAGE);
        }
        let verdict = self.inbox.accept(&self.data);
        self.data.clear();
        match verdict {
            Verdict::Accepted(result) => {
                metrics::counter!(ACKS_MDN, "result" => result).increment(1);
                tracing::info!(result, "MDN received");
                mailin::response::OK
            }
            Verdict::Rejected(reason) => {
                metrics::counter!(ACKS_MDN, "result" => "rejected").increment(1);
                tracing::info!(%reason, "MDN port: mail refused");
                closing(Response::custom(550, format!("5.6.0 {reason}")))
            }
            Verdict::Unavailable(reason) => {
                tracing::warn!(%reason, "MDN port: mail not taken, the sender will retry");
                closing(Response::custom(451, "4.3.0 try again later".into()))
            }
        }
    }
}

async fn session(
    stream: TcpStream,
    peer: IpAddr,
    inbox: Arc<MdnInbox>,
    tls: Option<TlsAcceptor>,
    mut stop: Shutdown,
) -> std::io::Result<()> {
    let tls_pending = Arc::new(AtomicBool::new(tls.is_some()));
    let handler = Collector { inbox, data: Vec::new(), too_big: false, tls_pending: tls_pending.clone() };
    let mut builder = SessionBuilder::new("relais");
    if tls.is_some() {
        builder.enable_start_tls();
    }
    let mut session = builder.build(peer, handler);
    let mut stream = stream;
    stream.write_all(&session.greeting().buffer()?).await?;
    let Some(plain) = converse(stream, &mut session, &mut stop).await? else { return Ok(()) };
    let Some(acceptor) = tls else { return Ok(()) };
    let secured = acceptor.accept(plain).await?;
    session.tls_active();
    tls_pending.store(false, Ordering::Relaxed);
    converse(secured, &mut session, &mut stop).await?;
    Ok(())
}

/// Moves lines between `stream` and the SMTP state machine until the client leaves (`None`) or asks for
/// STARTTLS (`Some(stream)`, to be upgraded).
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    session: &mut mailin::Session<Collector>,
    stop: &mut Shutdown,
) -> std::io::Result<Option<S>> {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::with_capacity(128);
    loop {
        line.clear();
        let mut limited = (&mut reader).take(MAX_LINE);
        let read = tokio::select! {
            r = tokio::time::timeout(IDLE, limited.read_until(b'\n', &mut line)) => r,
            () = stop.recv() => return Ok(None),
        };
        match read {
            Ok(Ok(0)) | Err(_) => return Ok(None),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
        let response = session.process(&line);
        match response.action {
            Action::Reply => reader.get_mut().write_all(&response.buffer()?).await?,
            Action::Close => {
                reader.get_mut().write_all(&response.buffer()?).await?;
                return Ok(None);
            }
            Action::UpgradeTls => {
                reader.get_mut().write_all(&response.buffer()?).await?;
                return Ok(Some(reader.into_inner()));
            }
            Action::NoReply => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An MDN as Thunderbird writes it (RFC 8098 fields).
    pub(crate) fn mdn(original: &str, disposition: &str) -> String {
        format!(
            "From: adam.hoda@test-ci-sis.mssante.fr\r\nTo: documents@ch-test.mssante.fr\r\n\
             Subject: Accusé de lecture\r\nMessage-ID: <mdn-1@test-ci-sis.mssante.fr>\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/report; report-type=disposition-notification; boundary=\"b1\"\r\n\r\n\
             --b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nLe message a été affiché.\r\n\
             --b1\r\nContent-Type: message/disposition-notification\r\n\r\n\
             Reporting-UA: test; Thunderbird\r\nFinal-Recipient: rfc822;adam.hoda@test-ci-sis.mssante.fr\r\n\
             Original-Message-ID: {original}\r\n\
             Disposition: manual-action/MDN-sent-manually;\r\n {disposition}\r\n\r\n--b1--\r\n"
        )
    }

    #[test]
    fn an_mdn_gives_its_original_message_reader_and_disposition() {
        let m = parse(mdn("<relais.12.ps@ch-test.mssante.fr>", "displayed").as_bytes()).unwrap();
        assert_eq!(m.original_message_id.as_deref(), Some("<relais.12.ps@ch-test.mssante.fr>"));
        assert_eq!(m.final_recipient.as_deref(), Some("adam.hoda@test-ci-sis.mssante.fr"));
        assert_eq!(m.disposition, "displayed");
        let m = parse(mdn("<x@y>", "deleted").as_bytes()).unwrap();
        assert_eq!(m.disposition, "deleted");
    }

    #[test]
    fn a_plain_mail_is_not_an_mdn() {
        let plain = "From: a@b.fr\r\nTo: c@d.fr\r\nSubject: hi\r\n\r\nhello\r\n";
        assert_eq!(parse(plain.as_bytes()), Err(NotMdn::NotReport));
        let other_report = mdn("<x@y>", "displayed").replace("disposition-notification;", "delivery-status;");
        assert_eq!(parse(other_report.as_bytes()), Err(NotMdn::NotReport));
    }
}
