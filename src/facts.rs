//! What the map stage hands to the route stage: the FHIR Bundle and the routing facts read from a message.
//!
//! This is the contract between the stages that follow the journal (ingest → journal → **map → route** → bus →
//! sinks): [`Transform`] is implemented by the HL7v2 mapping and by the CDA documents module; the pipeline calls
//! it for each journaled message and hands the [`Mapped`] result to the routing stage. Routes match on
//! [`Facts`] only, never on the raw message, so a route file reads the same whatever the message kind.

use serde::{Deserialize, Serialize};

/// The kind of message a journal entry holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// An HL7v2 message (ER7), from MLLP, HTTP or the drop folder.
    #[default]
    Hl7v2,
    /// A CDA R2 document, from `POST /cda` or the drop folder.
    Cda,
}

/// What happened, in the terms a GP-notification or document integrator uses (the event classes of
/// `mappings/event-classes.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventClass {
    /// Entry into the emergency department (SAU): A04 with PV1-2 = E.
    SauEntry,
    /// Admission: A01 with PV1-2 = I, or A06.
    Admission,
    /// Discharge: A03 (when it is not a death).
    Discharge,
    /// Death: A03 with ZFM-2 = 9, or PID-30 = Y, or PID-29 present.
    Death,
    /// A cancellation (A11, A12, A13, ZBE-4 = CANCEL): undoes an earlier event.
    Cancel,
    /// Any other identity or movement update (A08, A31, A02, Z99…).
    Update,
    /// A clinical document (CDA, or ORU^R01 carrying a CDA).
    Document,
}

impl EventClass {
    /// The snake_case name used in route files, envelopes and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            EventClass::SauEntry => "sau_entry",
            EventClass::Admission => "admission",
            EventClass::Discharge => "discharge",
            EventClass::Death => "death",
            EventClass::Cancel => "cancel",
            EventClass::Update => "update",
            EventClass::Document => "document",
        }
    }
}

/// The facts routes match on, read once by the map stage. Every field is a decoded value (no escapes, no
/// charset bytes); absent means "not in the message".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    /// HL7v2 or CDA.
    pub kind: MessageKind,
    /// The event class; `None` for a message no class rule matched.
    pub event_class: Option<EventClass>,
    /// MSH-9 as `TYPE^TRIGGER` (e.g. `ADT^A01`); empty for a CDA document.
    pub message_type: String,
    /// MSH-3.1 (or the CDA author organisation's application, when known).
    pub sending_application: String,
    /// MSH-4.1 (or the CDA custodian id).
    pub sending_facility: String,
    /// PV1-2 (E, I, O, R…).
    pub patient_class: Option<String>,
    /// The functional unit (UF) or ward: ZBE-7 or PV1-3.
    pub unit: Option<String>,
    /// The document type as a LOINC code (CDA `code`), for documents.
    pub document_type: Option<String>,
    /// The confidentiality code (CDA `confidentialityCode`, e.g. `N`, `R`, `V`).
    pub confidentiality: Option<String>,
    /// Masking and destination flags (`MASQUE_PS`, `INVISIBLE_PATIENT`, `DESTDMP`…), upper case.
    pub flags: Vec<String>,
    /// True when the INS is present and the identity is qualified (PID-32 = VALI).
    pub ins_qualified: bool,
    /// ZFA: the patient opposed DMP feeding (or access), when the message says so.
    pub dmp_opposition: bool,
    /// True when a médecin traitant (ROL ODRP or PD1-4) with an RPPS number is known.
    pub gp_known: bool,
    /// The per-patient partition key: the sender's IPP (`<assigner>|<IPP>`), or the INS when qualified.
    pub patient_key: String,
    /// For a cancellation or correction, the trigger of the event it undoes (e.g. `A04` for an A11).
    pub undoes: Option<String>,
}

/// The map stage's output for one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// The FHIR R4 Bundle, serialized as JSON (`application/fhir+json`).
    pub bundle: Vec<u8>,
    /// What the route stage matches on.
    pub facts: Facts,
}

/// Why a message could not be mapped: recorded in the journal (state `failed`), never a lost message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {reason}")]
pub struct MapFailure {
    /// Where: a segment and field (`PID-3`), an XML element (`ClinicalDocument/recordTarget`) or a file.
    pub location: String,
    /// What is wrong, in words an integrator understands.
    pub reason: String,
}

/// The map stage: turns one journaled message into a FHIR Bundle and its routing facts.
pub trait Transform: Send + Sync {
    /// Maps one message. `kind` says how to read `raw`, the bytes exactly as journaled.
    fn map(&self, kind: MessageKind, raw: &[u8]) -> Result<Mapped, MapFailure>;

    /// As [`Transform::map`], with the XDS metadata of a clinical document (what the bus envelope carries
    /// to the sinks); `None` for other messages and by default.
    fn map_with_metadata(
        &self,
        kind: MessageKind,
        raw: &[u8],
    ) -> Result<(Mapped, Option<crate::documents::DocumentMetadata>), MapFailure> {
        Ok((self.map(kind, raw)?, None))
    }
}
