//! The CDA path of [`Intake`]: size and header checks, then the journal; the answer only after the commit.
//!
//! A document that passes [`crate::cda::extract`] is journaled `received` with kind `cda`; its custodian id
//! and document id form the deduplication key, so a resent document answers with the first id. Anything else
//! (too large, not XML, not a CDA, a DOCTYPE…) is journaled `rejected` with the reason, so nothing is lost
//! and an operator can see why.

use bytes::Bytes;
use tracing::{debug, warn};

use super::Intake;
use crate::cda::{self, CdaHeader};
use crate::facts::MessageKind;
use crate::journal::{Appended, HeaderFields, NewEntry, State, Transport};

/// Why a document was refused, as the HTTP answer distinguishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not XML, not a CDA, a required header element missing, a DOCTYPE… (HTTP 400).
    Invalid,
    /// Over `documents.max_size` (HTTP 413).
    TooLarge,
    /// Not an XML content type (HTTP 415).
    ContentType,
    /// Same document id as an earlier, different document (HTTP 409).
    Conflict,
}

/// What a submitted document turned into, once durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentOutcome {
    /// Journaled as `received` under `id` (or already there: a resent identical document).
    Accepted {
        /// The journal id.
        id: u64,
        /// True when the same document was already journaled (nothing new written).
        duplicate: bool,
    },
    /// Journaled as `rejected` (when the journal could store it), with the reason.
    Rejected {
        /// The journal id of the rejected entry.
        id: Option<u64>,
        /// Which kind of refusal.
        refusal: Refusal,
        /// The reason, naming the XML element.
        reason: String,
    },
    /// The journal could not store it: the sender must send it again.
    Unavailable {
        /// The journal error.
        reason: String,
    },
}

/// The journal header of a CDA: custodian (facility), `CDA^<type>` (message type) and the document id.
fn header_fields(header: &CdaHeader) -> HeaderFields {
    let custodian = header.custodian.as_ref().and_then(|c| c.id.as_ref());
    HeaderFields {
        sending_application: String::new(),
        sending_facility: custodian.map(|id| id.to_xds()).unwrap_or_default(),
        message_type: format!("CDA^{}", header.type_code()),
        control_id: header.id.to_xds(),
        version: "CDA-R2".into(),
    }
}

impl Intake {
    /// Sets the CDA document types accepted (the types of the XDS tables); until set, any LOINC or ANS type is
    /// accepted at the door and the map stage decides. Only the first call counts.
    pub fn set_document_types(&self, types: impl IntoIterator<Item = String>) {
        let _ = self.inner.document_types.set(types.into_iter().collect());
    }

    /// The largest CDA document accepted, in bytes.
    pub fn max_document_size(&self) -> usize {
        self.inner.settings.documents.max_size
    }

    /// Checks one CDA document and journals it (`received` or `rejected`); returns once it is durable.
    pub async fn submit_document(&self, raw: Bytes, transport: Transport, peer: &str) -> DocumentOutcome {
        let limit = self.max_document_size();
        if raw.len() > limit {
            let reason = format!("document too large: {} bytes, over the {limit}-byte limit", raw.len());
            return self.reject_document(raw, transport, peer, Refusal::TooLarge, reason).await;
        }
        let checked = {
            let raw = raw.clone();
            tokio::task::spawn_blocking(move || cda::extract(&raw)).await
        };
        let header = match checked {
            Ok(Ok(header)) => header,
            Ok(Err(e)) => {
                return self.reject_document(raw, transport, peer, Refusal::Invalid, e.to_string()).await;
            }
            Err(e) => return DocumentOutcome::Unavailable { reason: format!("header check failed: {e}") },
        };
        if let Some(types) = self.inner.document_types.get()
            && !types.contains(header.type_code())
        {
            let reason = format!(
                "ClinicalDocument/code: document type `{}` is not in the XDS tables (xds-types.toml)",
                header.type_code()
            );
            return self.reject_document(raw, transport, peer, Refusal::Invalid, reason).await;
        }
        let entry = NewEntry {
            received_at: jiff::Timestamp::now(),
            transport,
            peer: peer.to_string(),
            charset: Some(cda::encoding_of(&raw)),
            raw,
            header: Some(header_fields(&header)),
            state: State::Received,
            reason: None,
            kind: MessageKind::Cda,
        };
        match self.inner.journal.append(entry).await {
            Ok(Appended::Stored { id }) => {
                debug!(journal_id = id, %peer, document_type = header.type_code(), "document journaled");
                DocumentOutcome::Accepted { id, duplicate: false }
            }
            Ok(Appended::Duplicate { original }) => {
                DocumentOutcome::Accepted { id: original, duplicate: true }
            }
            Ok(Appended::Conflict { id, original }) => {
                warn!(
                    journal_id = id,
                    original, "document id reused for a different document; kept for review"
                );
                DocumentOutcome::Rejected {
                    id: Some(id),
                    refusal: Refusal::Conflict,
                    reason: format!(
                        "ClinicalDocument/id: already used by a different document (journal #{original}); kept \
                         as #{id} for review"
                    ),
                }
            }
            Err(e) => DocumentOutcome::Unavailable { reason: e.to_string() },
        }
    }

    /// Journals `raw` as a `rejected` document with `reason` (kept for review), and says so.
    pub async fn reject_document(
        &self,
        raw: Bytes,
        transport: Transport,
        peer: &str,
        refusal: Refusal,
        reason: String,
    ) -> DocumentOutcome {
        warn!(%peer, ?transport, ?refusal, "document rejected: {reason}");
        let entry = NewEntry {
            received_at: jiff::Timestamp::now(),
            transport,
            peer: peer.to_string(),
            raw,
            charset: None,
            header: None,
            state: State::Rejected,
            reason: Some(reason.clone()),
            kind: MessageKind::Cda,
        };
        match self.inner.journal.append(entry).await {
            Ok(Appended::Stored { id } | Appended::Conflict { id, .. }) => {
                DocumentOutcome::Rejected { id: Some(id), refusal, reason }
            }
            Ok(Appended::Duplicate { original }) => {
                DocumentOutcome::Rejected { id: Some(original), refusal, reason }
            }
            Err(e) => DocumentOutcome::Unavailable { reason: e.to_string() },
        }
    }
}
