//! CDA R2 (ANS CI-SIS) header extraction: the document's identity, patient, authors, context and body kind.
//!
//! Receives the raw bytes of a document (from `POST /cda`, the drop folder, or the base64 OBX of an ORU^R01)
//! and hands on a [`CdaHeader`]: plain values, serde-serializable, read in one streaming pass with quick-xml's
//! namespace-aware reader (elements are matched by the `urn:hl7-org:v3` namespace URI, never by prefix). The
//! body is never built as a tree: a structured body is only walked to check that the XML is well formed, and
//! a `nonXMLBody` is only sniffed for its media type and its first bytes (a PDF starts with `%PDF-`).
//!
//! Refusals name the XML element at fault ([`CdaError`]): not XML, not a CDA (root or `typeId`), no `id`, no
//! `code` or a `code` outside LOINC and the ANS types, no `recordTarget`, a DOCTYPE (refused outright: no external entity, no entity expansion), an
//! undeclared entity, a `nonXMLBody` whose base64 is not what its media type says.
//!
//! `Debug` of these types never prints patient values (names, INS, birth dates): only counts and codes.

mod header;
mod model;
mod pdf;

#[cfg(test)]
mod tests;

pub use header::{encoding_of, extract};
pub use model::{
    Body, CdaHeader, Code, Encounter, Ins, InsKind, InstanceId, Organization, Patient, Person, ServiceEvent,
};
pub use pdf::pdf;

/// Namespace of CDA R2 elements.
pub const HL7_V3_NS: &str = "urn:hl7-org:v3";

/// `ClinicalDocument/typeId` root and extension of a CDA R2 document.
pub const CDA_TYPE_ID: (&str, &str) = ("2.16.840.1.113883.1.3", "POCD_HD000040");

/// OID of LOINC, the code system of CI-SIS document types.
pub const LOINC_OID: &str = "2.16.840.1.113883.6.1";

/// OID of the ANS document types that are not LOINC codes (`PRESC-BIO`, `SYNTH`…).
pub const ANS_TYPES_OID: &str = "1.2.250.1.213.1.1.4.12";

/// OID of the national practitioner identifiers (IDNPS: `8` + RPPS, `0` + ADELI…).
pub const IDNPS_OID: &str = "1.2.250.1.71.4.2.1";

/// OID of the national structure identifiers (IDNST: `1` + FINESS…).
pub const IDNST_OID: &str = "1.2.250.1.71.4.2.2";

/// Why a document was refused: the XML element at fault and what is wrong, in an integrator's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{element}: {reason}")]
pub struct CdaError {
    /// The element path (`ClinicalDocument/recordTarget`) or `XML` / `document` for the whole input.
    pub element: String,
    /// What is wrong.
    pub reason: String,
}

impl CdaError {
    /// An error at `element`.
    pub fn at(element: impl Into<String>, reason: impl Into<String>) -> CdaError {
        CdaError { element: element.into(), reason: reason.into() }
    }
}
