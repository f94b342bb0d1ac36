//! What one journal entry holds: the public types ingest hands in and the admin API reads out, and the
//! private on-disk record.
//!
//! The stored record is `serde_json` bytes, so later issues can add states and per-sink records by adding
//! `#[serde(default)]` fields and enum variants without rewriting old entries. The entry id is the table key
//! and is not repeated inside the record; the raw message bytes live in their own table.

use bytes::Bytes;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::facts::{EventClass, MessageKind};

/// How a message arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Plain MLLP over TCP.
    Mllp,
    /// MLLP over TLS (mutual or not).
    MllpTls,
    /// HTTP POST.
    Http,
    /// A file dropped in the watched folder.
    Folder,
}

/// Lifecycle state of a journaled message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Accepted and acknowledged (AA); waiting for the next stage.
    Received,
    /// Refused (AR) or kept for review (AE on a control-id conflict); `reason` says why.
    Rejected,
    /// Mapped to a FHIR Bundle (kept in the journal); waiting for the route stage.
    Mapped,
    /// Could not be mapped; `reason` says why (the raw message stays in the journal).
    Failed,
    /// Routed to at least one destination; waiting for the bus to confirm every publication.
    Routed,
    /// Mapped, but no route matched: kept, counted, never dropped silently.
    Unrouted,
    /// The bus confirmed the envelope of every destination.
    Published,
}

impl State {
    /// Every state, in lifecycle order: `stats` reports each of them, zeros included.
    pub const ALL: [State; 7] = [
        State::Received,
        State::Rejected,
        State::Mapped,
        State::Failed,
        State::Routed,
        State::Unrouted,
        State::Published,
    ];

    /// States the pipeline has not finished with: reprocessed on start (outbox).
    pub const UNFINISHED: [State; 3] = [State::Received, State::Mapped, State::Routed];

    /// The snake_case name used in the API, in `stats` and on disk.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Received => "received",
            State::Rejected => "rejected",
            State::Mapped => "mapped",
            State::Failed => "failed",
            State::Routed => "routed",
            State::Unrouted => "unrouted",
            State::Published => "published",
        }
    }

    /// Reads a name given by [`State::as_str`]; `None` when unknown.
    #[allow(clippy::should_implement_trait)] // named by the API contract; returns Option, not Result
    pub fn from_str(name: &str) -> Option<State> {
        State::ALL.into_iter().find(|state| state.as_str() == name)
    }
}

/// MSH fields kept as metadata (decoded text).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderFields {
    /// MSH-3.
    pub sending_application: String,
    /// MSH-4: with `control_id`, the deduplication key.
    pub sending_facility: String,
    /// MSH-9 (e.g. `ADT^A01^ADT_A01`).
    pub message_type: String,
    /// MSH-10.
    pub control_id: String,
    /// MSH-12.
    pub version: String,
}

/// What ingest hands to the journal.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// When the last byte of the message arrived.
    pub received_at: Timestamp,
    /// How it arrived.
    pub transport: Transport,
    /// The sender's address (or certificate subject, or file name).
    pub peer: String,
    /// The message exactly as received.
    pub raw: Bytes,
    /// The charset the message was read in (MSH-18 spelling), when known.
    pub charset: Option<String>,
    /// The MSH fields, when the header could be read.
    pub header: Option<HeaderFields>,
    /// `Received` for an accepted message, `Rejected` for a refused one.
    pub state: State,
    /// Why it was rejected.
    pub reason: Option<String>,
    /// HL7v2 or CDA. For a CDA document `header` holds the custodian id (facility), `CDA^<type code>`
    /// (message type) and the document id (control id), so a resent document is deduplicated too.
    pub kind: MessageKind,
}

/// Metadata of a journaled message (no body): what `/api/messages` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryMeta {
    /// The journal id (monotonic, never reused).
    pub id: u64,
    /// When the message arrived.
    pub received_at: Timestamp,
    /// How it arrived.
    pub transport: Transport,
    /// Who sent it.
    pub peer: String,
    /// Size of the raw message in bytes.
    pub size: u64,
    /// The charset it was read in, when known.
    pub charset: Option<String>,
    /// The MSH fields, when the header could be read (flattened in JSON).
    #[serde(flatten)]
    pub header: Option<HeaderFields>,
    /// Current lifecycle state.
    pub state: State,
    /// Why it was rejected, or why it could not be mapped (`failed`).
    pub reason: Option<String>,
    /// HL7v2 or CDA (entries written before the field existed read as HL7v2).
    #[serde(default)]
    pub kind: MessageKind,
    /// What the stages after the journal recorded (routes, destinations, publications).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// Each stage recorded after `received`, oldest first, with its time (entries written before the field
    /// existed have none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Event>,
}

/// One recorded stage of an entry: what happened, when, and any detail (an error, destinations).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When the stage was recorded.
    pub at: Timestamp,
    /// `mapped`, `failed`, `routed`, `unrouted`, `published` or `replayed`.
    pub stage: String,
    /// The failure reason, the destinations published, or the stage a replay starts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayFrom {
    /// Map again from the raw message, then route and publish (state back to `received`).
    Map,
    /// Publish the stored bundle again to every destination already decided (state back to `routed`);
    /// an entry never routed is mapped again instead.
    Publish,
}

impl ReplayFrom {
    /// The snake_case name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplayFrom::Map => "map",
            ReplayFrom::Publish => "publish",
        }
    }
}

/// What the route stage decided for an entry and what the bus confirmed since.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// HL7v2 or CDA.
    #[serde(default)]
    pub kind: MessageKind,
    /// The event class, when the mapping found one.
    #[serde(default)]
    pub event_class: Option<EventClass>,
    /// The per-patient partition key: a stable hash of the patient identifier (never the identifier).
    #[serde(default)]
    pub partition_key: String,
    /// Names of the routes that matched.
    #[serde(default)]
    pub routes: Vec<String>,
    /// One per destination, in routing order.
    #[serde(default)]
    pub deliveries: Vec<Delivery>,
    /// Document metadata, for documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<DocumentMeta>,
}

/// One destination of a routed entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The sink instance name.
    pub destination: String,
    /// The first route that named it.
    pub route: String,
    /// True once the bus confirmed the envelope for this destination.
    #[serde(default)]
    pub published: bool,
}

/// Document metadata carried to the sinks (no patient data).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentMeta {
    /// LOINC document type.
    #[serde(default)]
    pub document_type: Option<String>,
    /// Confidentiality code.
    #[serde(default)]
    pub confidentiality: Option<String>,
}

/// One step the pipeline records for an entry (see [`super::Journal::update`]).
#[derive(Debug, Clone)]
pub enum Stage {
    /// Mapped: keep the FHIR Bundle, state `mapped`.
    Mapped {
        /// The Bundle JSON.
        bundle: Bytes,
    },
    /// Mapping failed: state `failed` with the reason.
    Failed {
        /// Why, with the segment/field or element.
        reason: String,
    },
    /// Routed: state `routed`, or `unrouted` when `progress.deliveries` is empty.
    Routed {
        /// The route decision.
        progress: Progress,
    },
    /// The bus confirmed these destinations; once all are, state `published`.
    Published {
        /// Sink instance names.
        destinations: Vec<String>,
    },
    /// An operator asked for the entry to go through the pipeline again (see [`ReplayFrom`]).
    Replay {
        /// Where it starts again.
        from: ReplayFrom,
    },
}

/// The outcome of `append`, returned only once the write is durable (committed and fsynced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored under a new id.
    Stored {
        /// The new entry's id.
        id: u64,
    },
    /// Same MSH-4 + MSH-10 + same bytes within the dedup window: nothing written.
    Duplicate {
        /// The first entry's id.
        original: u64,
    },
    /// Same MSH-4 + MSH-10, different bytes: stored as `Rejected` (its reason names the original) for review.
    Conflict {
        /// The new (rejected) entry's id.
        id: u64,
        /// The entry it clashes with.
        original: u64,
    },
}

/// The on-disk metadata record (value of the `meta` table; the id is the key).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredRecord {
    pub(crate) received_at: Timestamp,
    pub(crate) transport: Transport,
    pub(crate) peer: String,
    pub(crate) size: u64,
    #[serde(default)]
    pub(crate) charset: Option<String>,
    #[serde(default)]
    pub(crate) header: Option<HeaderFields>,
    pub(crate) state: State,
    #[serde(default)]
    pub(crate) reason: Option<String>,
    #[serde(default)]
    pub(crate) kind: MessageKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) progress: Option<Progress>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) history: Vec<Event>,
}

impl StoredRecord {
    /// The record of a new entry (everything but the raw bytes).
    pub(crate) fn from_entry(entry: NewEntry) -> (StoredRecord, Bytes) {
        let record = StoredRecord {
            received_at: entry.received_at,
            transport: entry.transport,
            peer: entry.peer,
            size: entry.raw.len() as u64,
            charset: entry.charset,
            header: entry.header,
            state: entry.state,
            reason: entry.reason,
            kind: entry.kind,
            progress: None,
            history: Vec::new(),
        };
        (record, entry.raw)
    }

    /// The public view of this record stored under `id`.
    pub(crate) fn into_meta(self, id: u64) -> EntryMeta {
        EntryMeta {
            id,
            received_at: self.received_at,
            transport: self.transport,
            peer: self.peer,
            size: self.size,
            charset: self.charset,
            header: self.header,
            state: self.state,
            reason: self.reason,
            kind: self.kind,
            progress: self.progress,
            history: self.history,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_round_trip() {
        for state in State::ALL {
            assert_eq!(State::from_str(state.as_str()), Some(state));
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
        }
        assert_eq!(State::from_str("Received"), None);
    }

    #[test]
    fn entry_meta_json_flattens_the_header() {
        let meta = EntryMeta {
            id: 7,
            received_at: Timestamp::from_second(1_700_000_000).unwrap(),
            transport: Transport::MllpTls,
            peer: "10.0.0.1:4000".into(),
            size: 12,
            charset: Some("8859/1".into()),
            header: Some(HeaderFields {
                sending_application: "APP".into(),
                sending_facility: "FAC".into(),
                message_type: "ADT^A01".into(),
                control_id: "42".into(),
                version: "2.5".into(),
            }),
            state: State::Received,
            reason: None,
            kind: MessageKind::Hl7v2,
            progress: None,
            history: Vec::new(),
        };
        let value = serde_json::to_value(&meta).unwrap();
        assert_eq!(value["kind"], "hl7v2");
        assert_eq!(value["control_id"], "42");
        assert_eq!(value["transport"], "mllp_tls");
        let back: EntryMeta = serde_json::from_value(value).unwrap();
        assert_eq!(back, meta);

        let headerless = EntryMeta { header: None, ..meta };
        let back: EntryMeta = serde_json::from_value(serde_json::to_value(&headerless).unwrap()).unwrap();
        assert_eq!(back.header, None);
    }

    #[test]
    fn records_written_before_kind_read_as_hl7v2() {
        let old = r#"{"received_at":"2026-01-01T00:00:00Z","transport":"mllp","peer":"x","size":3,"state":"received"}"#;
        let record: StoredRecord = serde_json::from_str(old).unwrap();
        assert_eq!(record.kind, MessageKind::Hl7v2);
    }
}
