//! The envelope a sink receives, and the partitioning of envelopes by patient.

use std::fmt;
use std::hash::Hasher;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::documents::DocumentMetadata;
use crate::facts::{EventClass, MessageKind};
use crate::journal::DocumentMeta;

/// One message for one destination. `Debug` never shows the bundle.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The journal id: AMQP `message_id`, what a sink de-duplicates on.
    pub message_id: u64,
    /// The destination sink instance.
    pub sink: String,
    /// The first route that sent the message there.
    pub route: String,
    /// HL7v2 or CDA.
    #[serde(default)]
    pub kind: MessageKind,
    /// The event class, when known.
    #[serde(default)]
    pub event_class: Option<EventClass>,
    /// The partition key: a hash of the patient identifier (see [`partition_key`]).
    pub partition_key: String,
    /// Document metadata, for documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<DocumentMeta>,
    /// Where the document bytes are (`journal:<id>`: the raw entry), for documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_ref: Option<String>,
    /// The XDS metadata of a document (DocumentEntry and SubmissionSet, as `documents::metadata` extracts
    /// them from the CDA header and the tables), so a sink need not extract them again. Holds patient data:
    /// never logged (`Debug` leaves it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xds: Option<Box<DocumentMetadata>>,
    /// The FHIR Bundle (`application/fhir+json`): the AMQP body, not in the header.
    #[serde(skip)]
    pub bundle: Bytes,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("message_id", &self.message_id)
            .field("sink", &self.sink)
            .field("route", &self.route)
            .field("event_class", &self.event_class)
            .field("bundle_bytes", &self.bundle.len())
            .finish_non_exhaustive()
    }
}

impl Envelope {
    /// Everything but the bundle, as JSON (the AMQP `relais-envelope` header).
    pub fn header_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Rebuilds an envelope from its header JSON and bundle.
    pub fn from_parts(header: &[u8], bundle: Bytes) -> Result<Envelope, super::Error> {
        let mut envelope: Envelope =
            serde_json::from_slice(header).map_err(|e| super::Error::Envelope(e.to_string()))?;
        envelope.bundle = bundle;
        Ok(envelope)
    }

    /// One-buffer encoding (embedded store): header length (u32 BE), header JSON, bundle.
    pub fn encode(&self) -> Vec<u8> {
        let header = self.header_json();
        let mut out = Vec::with_capacity(4 + header.len() + self.bundle.len());
        out.extend_from_slice(&(header.len() as u32).to_be_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&self.bundle);
        out
    }

    /// Reads [`Envelope::encode`]'s output.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, super::Error> {
        let bad = || super::Error::Envelope("truncated envelope".into());
        let len = u32::from_be_bytes(bytes.get(..4).ok_or_else(bad)?.try_into().map_err(|_| bad())?) as usize;
        let header = bytes.get(4..4 + len).ok_or_else(bad)?;
        Envelope::from_parts(header, Bytes::copy_from_slice(&bytes[4 + len..]))
    }

    /// The envelope's partition among `partitions`.
    pub fn partition(&self, partitions: u16) -> u16 {
        partition_of(&self.partition_key, partitions)
    }
}

/// The partition key of a patient identifier (`<assigner>|<IPP>` or the INS): its FNV-1a 64-bit hash in 16
/// hex digits. Stable across versions and machines (FNV-1a is fixed by its spec), and it carries no
/// identifier onto the bus.
pub fn partition_key(patient_key: &str) -> String {
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(patient_key.as_bytes());
    format!("{:016x}", hasher.finish())
}

/// The partition of a partition key: the hash modulo the partition count.
pub fn partition_of(partition_key: &str, partitions: u16) -> u16 {
    let hash = u64::from_str_radix(partition_key, 16).unwrap_or_else(|_| {
        let mut hasher = fnv::FnvHasher::default();
        hasher.write(partition_key.as_bytes());
        hasher.finish()
    });
    (hash % u64::from(partitions.max(1))) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_keys_are_fnv1a_and_stable() {
        // FNV-1a 64 reference values: "" and "a".
        assert_eq!(partition_key(""), "cbf29ce484222325");
        assert_eq!(partition_key("a"), "af63dc4c8601ec8c");
        let key = partition_key("CHU-X|123456");
        assert_eq!(key, partition_key("CHU-X|123456"));
        assert!(!key.contains("123456"));
        assert_eq!(partition_of(&key, 8), (u64::from_str_radix(&key, 16).unwrap() % 8) as u16);
    }

    #[test]
    fn encoding_round_trips_and_debug_hides_the_bundle() {
        let envelope = Envelope {
            message_id: 42,
            sink: "gp-notify".into(),
            route: "gp".into(),
            kind: MessageKind::Hl7v2,
            event_class: Some(EventClass::Admission),
            partition_key: partition_key("X|1"),
            document: None,
            document_ref: None,
            xds: None,
            bundle: Bytes::from_static(b"{\"resourceType\":\"Bundle\",\"secret\":\"DUPONT\"}"),
        };
        assert_eq!(Envelope::decode(&envelope.encode()).unwrap(), envelope);
        let debug = format!("{envelope:?}");
        assert!(!debug.contains("DUPONT"), "{debug}");
        assert!(!envelope.header_json().contains("DUPONT"));
    }
}
