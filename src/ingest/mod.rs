//! Ingest: the listeners, and [`Intake`], the one path every inbound message takes.
//!
//! `Intake` receives raw bytes from a listener (MLLP, MLLP over TLS, HTTP), checks the header and charset,
//! queues the message for the journal's next group commit, and hands back a [`Pending`] answer: the ACK is
//! built only once the journal says the message is durable. Bad input is journaled too, as `rejected`, and
//! answered with AR and an ERR segment; nothing is dropped silently and nothing is acknowledged AA before it
//! is on disk.

pub mod document;
pub mod folder;
pub mod http;
pub mod mllp;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tracing::{debug, error, warn};

use crate::config::Settings;
use crate::facts::MessageKind;
use crate::hl7v2::{AckCode, AckError, Charset, ErrorCode, Header, Location, Message, ParseError, build_ack};
use crate::journal::{self, Appended, HeaderFields, Journal, NewEntry, State, Transport};
use crate::ops::metrics::IngestLabels;
use mllp::FramingFault;

/// The shared path from raw bytes to a durable journal entry and its ACK. Cheap to clone.
#[derive(Clone)]
pub struct Intake {
    inner: Arc<IntakeInner>,
}

struct IntakeInner {
    journal: Journal,
    settings: Settings,
    default_charset: Charset,
    /// Next ACK control id (MSH-10 of our ACKs): seeded with the start time so ids stay unique across restarts.
    next_ack_id: AtomicU64,
    /// The CDA document types Relais knows (from the XDS tables), when loaded: others are refused at the door.
    document_types: std::sync::OnceLock<std::collections::BTreeSet<String>>,
}

/// What a message turned into, once answered.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// MSA-1 of the ACK.
    pub code: AckCode,
    /// The ACK message, encoded in `charset`.
    pub ack: Vec<u8>,
    /// The charset of the ACK (the sender's).
    pub charset: Charset,
    /// The journal entry, when one was written or already existed (duplicates).
    pub journal_id: Option<u64>,
}

/// An answer waiting for the journal commit that makes it true.
pub struct Pending {
    state: PendingState,
}

enum PendingState {
    /// Nothing to wait for (the journal refused the entry outright).
    Ready(Outcome),
    /// Waiting for the commit of an entry.
    Journal { append: journal::Pending, reply: ReplyPlan },
}

/// How to answer once the entry is durable.
struct ReplyPlan {
    raw: Bytes,
    charset: Charset,
    /// Set for rejected input: the AR's ERR.
    rejection: Option<AckError>,
    control_id: String,
    labels: IngestLabels,
}

impl Intake {
    /// An intake over `journal` with the charset rules and limits of `settings`.
    pub fn new(journal: Journal, settings: &Settings) -> Intake {
        let default_charset = settings.default_charset().unwrap_or(Charset::Latin1);
        let seed = jiff::Timestamp::now().as_microsecond().max(1) as u64;
        Intake {
            inner: Arc::new(IntakeInner {
                journal,
                settings: settings.clone(),
                default_charset,
                next_ack_id: AtomicU64::new(seed),
                document_types: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The largest message accepted, in bytes.
    pub fn max_message_size(&self) -> usize {
        self.inner.settings.mllp.max_message_size
    }

    /// The journal behind this intake (read access for the admin API).
    pub fn journal(&self) -> &Journal {
        &self.inner.journal
    }

    /// Checks one message and queues it for the journal. The returned answer resolves after the commit.
    /// Queuing happens before this returns, so calls made in order are journaled in that order.
    pub async fn submit(&self, raw: Bytes, transport: Transport, peer: &str) -> Pending {
        let received_at = jiff::Timestamp::now();
        match self.check(&raw) {
            Ok(checked) => {
                let entry = NewEntry {
                    received_at,
                    transport,
                    peer: peer.to_string(),
                    raw: raw.clone(),
                    charset: Some(checked.charset.msh18().to_string()),
                    header: Some(checked.fields),
                    state: State::Received,
                    reason: None,
                    kind: MessageKind::Hl7v2,
                };
                self.enqueue(entry, raw, checked.charset, None).await
            }
            Err(rejected) => {
                warn!(%peer, ?transport, location = %rejected.error.location.as_ref().map(|l| l.to_string()).unwrap_or_default(),
                      code = rejected.error.code.code(), "message rejected: {}", rejected.error.message);
                let entry = NewEntry {
                    received_at,
                    transport,
                    peer: peer.to_string(),
                    raw: raw.clone(),
                    charset: rejected.charset.map(|c| c.msh18().to_string()),
                    header: rejected.fields,
                    state: State::Rejected,
                    reason: Some(rejection_reason(&rejected.error)),
                    kind: MessageKind::Hl7v2,
                };
                let charset = rejected.charset.unwrap_or(self.inner.default_charset);
                self.enqueue(entry, raw, charset, Some(rejected.error)).await
            }
        }
    }

    /// Journals bytes that broke MLLP framing as `rejected` and answers AR.
    pub async fn submit_framing_fault(
        &self,
        raw: Bytes,
        transport: Transport,
        peer: &str,
        fault: FramingFault,
    ) -> Pending {
        let limit = self.max_message_size();
        let error = match fault {
            FramingFault::Garbage => AckError {
                code: ErrorCode::SegmentSequence,
                location: None,
                message: format!("{} bytes of data outside an MLLP frame (0x0B ... 0x1C 0x0D)", raw.len()),
            },
            FramingFault::Unterminated => AckError {
                code: ErrorCode::SegmentSequence,
                location: None,
                message: "MLLP frame interrupted: a new start byte (0x0B) came before the end (0x1C 0x0D)"
                    .to_string(),
            },
            FramingFault::Incomplete => AckError {
                code: ErrorCode::SegmentSequence,
                location: None,
                message: "MLLP frame incomplete: the connection ended before its end (0x1C 0x0D)".to_string(),
            },
            FramingFault::Oversize => AckError {
                code: ErrorCode::InternalError,
                location: None,
                message: format!("message too large: over the {limit}-byte limit; connection closed"),
            },
        };
        // A cut or oversize frame may still start with a readable MSH: answer with its ids when it does.
        let charset = Header::parse(&raw)
            .ok()
            .and_then(|h| h.charset().ok().flatten())
            .unwrap_or(self.inner.default_charset);
        let fields = Header::parse(&raw).ok().map(|h| header_fields(&h, charset));
        let entry = NewEntry {
            received_at: jiff::Timestamp::now(),
            transport,
            peer: peer.to_string(),
            raw: raw.clone(),
            charset: None,
            header: fields,
            state: State::Rejected,
            reason: Some(rejection_reason(&error)),
            kind: MessageKind::Hl7v2,
        };
        self.enqueue(entry, raw, charset, Some(error)).await
    }

    async fn enqueue(
        &self,
        entry: NewEntry,
        raw: Bytes,
        charset: Charset,
        rejection: Option<AckError>,
    ) -> Pending {
        let control_id = self.next_control_id();
        let labels = IngestLabels::new(entry.transport, entry.header.as_ref());
        labels.received();
        let reply = ReplyPlan { raw, charset, rejection, control_id, labels };
        match self.inner.journal.enqueue(entry).await {
            Ok(append) => Pending { state: PendingState::Journal { append, reply } },
            Err(e) => Pending { state: PendingState::Ready(reply.journal_failed(&e)) },
        }
    }

    fn next_control_id(&self) -> String {
        format!("R{}", self.inner.next_ack_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Header, charset and structure checks, in that order; the first failure is the rejection.
    fn check(&self, raw: &[u8]) -> Result<Checked, Box<Rejected>> {
        let header = Header::parse(raw).map_err(|e| Rejected::new(e, None, None))?;
        let charset = match header.charset() {
            Ok(Some(cs)) => cs,
            Ok(None) => {
                let facility = String::from_utf8_lossy(header.component(4, 1));
                self.inner.settings.charset_for(&facility)
            }
            Err(e) => {
                let cs = self.inner.default_charset;
                return Err(Rejected::new(e, None, Some(header_fields(&header, cs))));
            }
        };
        let fields = header_fields(&header, charset);
        if let Err(e) = charset.validate(raw) {
            return Err(Rejected::new(e, Some(charset), Some(fields)));
        }
        if let Err(e) = Message::parse(raw) {
            return Err(Rejected::new(e, Some(charset), Some(fields)));
        }
        Ok(Checked { charset, fields })
    }
}

struct Checked {
    charset: Charset,
    fields: HeaderFields,
}

struct Rejected {
    error: AckError,
    charset: Option<Charset>,
    fields: Option<HeaderFields>,
}

impl Rejected {
    fn new(error: ParseError, charset: Option<Charset>, fields: Option<HeaderFields>) -> Box<Rejected> {
        Box::new(Rejected { error: AckError::from(error), charset, fields })
    }
}

fn header_fields(header: &Header<'_>, cs: Charset) -> HeaderFields {
    HeaderFields {
        sending_application: header.text(3, cs),
        sending_facility: header.text(4, cs),
        message_type: header.text(9, cs),
        control_id: header.text(10, cs),
        version: header.text(12, cs),
    }
}

fn rejection_reason(error: &AckError) -> String {
    match &error.location {
        Some(location) => format!("{location}: {} ({})", error.message, error.code.code()),
        None => format!("{} ({})", error.message, error.code.code()),
    }
}

impl Pending {
    /// Waits for the commit, then returns the ACK and what it says.
    pub async fn resolve(self) -> Outcome {
        match self.state {
            PendingState::Ready(outcome) => outcome,
            PendingState::Journal { append, reply } => match append.await {
                Ok(appended) => reply.answer(appended),
                Err(e) => reply.journal_failed(&e),
            },
        }
    }

    /// Waits for the commit, then returns the ACK bytes.
    pub async fn ack(self) -> Vec<u8> {
        self.resolve().await.ack
    }
}

impl ReplyPlan {
    fn answer(self, appended: Appended) -> Outcome {
        match (appended, &self.rejection) {
            (Appended::Stored { id }, None) => {
                debug!(journal_id = id, "journaled");
                self.build(AckCode::AA, None, Some(id))
            }
            (Appended::Duplicate { original }, None) => {
                debug!(journal_id = original, "duplicate of a journaled message; acknowledged again");
                self.labels.duplicate();
                self.build(AckCode::AA, None, Some(original))
            }
            (Appended::Conflict { id, original }, None) => {
                warn!(journal_id = id, original, "control id reused with different content; kept for review");
                let error = AckError {
                    code: ErrorCode::DuplicateKey,
                    location: Some(Location::field("MSH", 10)),
                    message: format!(
                        "MSH-10 already used by this sender for a different message (journal #{original}); \
                         kept as #{id} for review"
                    ),
                };
                self.build(AckCode::AE, Some(&error), Some(id))
            }
            (Appended::Stored { id } | Appended::Conflict { id, .. }, Some(error)) => {
                let error = error.clone();
                self.build(AckCode::AR, Some(&error), Some(id))
            }
            (Appended::Duplicate { original }, Some(error)) => {
                let error = error.clone();
                self.build(AckCode::AR, Some(&error), Some(original))
            }
        }
    }

    fn journal_failed(self, e: &journal::Error) -> Outcome {
        error!(error = %e, "journal write failed; answering AR so the sender keeps the message");
        let error = AckError {
            code: ErrorCode::InternalError,
            location: None,
            message: "message not stored (journal unavailable); send it again later".to_string(),
        };
        self.build(AckCode::AR, Some(&error), None)
    }

    fn build(&self, code: AckCode, error: Option<&AckError>, journal_id: Option<u64>) -> Outcome {
        let header = Header::parse(&self.raw).ok();
        let timestamp = jiff::Zoned::now().strftime("%Y%m%d%H%M%S%z").to_string();
        let ack = build_ack(header.as_ref(), code, error, &self.control_id, &timestamp, self.charset);
        self.labels.answered(code, error.map(|e| e.code));
        Outcome { code, ack, charset: self.charset, journal_id }
    }
}
