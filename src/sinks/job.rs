//! From a journaled document (a CDA, or an ORU^R01 carrying one) to what the MSSanté and DMP sinks send.
//!
//! It receives the raw journal entry and the documents stage's [`DocumentMapper`] (which already mapped it
//! once on its way to the bus; the envelope carries `document_ref = journal:<id>`, not the bytes), and hands
//! on a [`DocumentJob`]: the [`Submission`], the patient's traits, the masking flags, the professionals'
//! addresses (PRT RCT, PRT-15.4, patients' addresses left out: the patient is reached through the qualified
//! INS only), the mail bodies, whether an acknowledgement was asked for, and the PDF of a level-1 CDA (for the mail).

use crate::documents::{DocumentMapper, DocumentMetadata};
use crate::facts::{MapFailure, MessageKind};
use crate::sinks::ebrim::{Submission, SubmissionParams, XdsDocument};
use crate::sinks::mail::{MailRequest, MaskingFlags, PATIENT_DOMAIN, Patient};

/// Everything the document sinks need for one journal entry. Debug prints no patient data.
#[derive(Debug, Clone)]
pub struct DocumentJob {
    /// The document and its XDS metadata, ids assigned.
    pub submission: Submission,
    /// The patient.
    pub patient: Patient,
    /// The ORU's `MetaDMPMSS` flags (none for a bare CDA).
    pub flags: MaskingFlags,
    /// Professionals' MSSanté addresses (PRT RCT).
    pub professionals: Vec<String>,
    /// `CORPSMAIL_PS`.
    pub body_ps: String,
    /// `CORPSMAIL_PATIENT`.
    pub body_patient: String,
    /// `ACK_RECEPTION` or `ACK_LECTURE_MSS` = Y.
    pub ack_requested: bool,
    /// Each PRT RCT recipient's MSSanté address (lower case) and id (IDNPS, INS), for the ZAM^Z02/Z03.
    pub recipient_ids: Vec<(String, String)>,
    /// `ACK_RECEPTION` = Y: the DPI wants a ZAM^Z02 per recipient.
    pub reception_ack_requested: bool,
}

/// What the DMP sink sends for one document: the [`Submission`] built from the XDS metadata the envelope
/// carries (the documents stage's, so the CDA is not mapped again), and whether the patient's INS is
/// qualified. `raw` is the journal entry: the CDA itself, or the ORU^R01 whose OBX carries it. No PDF is
/// extracted (the ITI-41 request carries the CDA only).
pub fn dmp_submission(
    meta: &DocumentMetadata,
    kind: MessageKind,
    raw: &[u8],
    source_id: &str,
    unique_id_root: &str,
    now: jiff::Timestamp,
) -> Result<(Submission, bool), MapFailure> {
    let content = match kind {
        MessageKind::Cda => raw.to_vec(),
        MessageKind::Hl7v2 => crate::documents::oru::read(raw)?.cda,
    };
    let document = XdsDocument::from_metadata(meta, content, None);
    let params = SubmissionParams::from_metadata(meta, source_id, unique_id_root);
    Ok((Submission::new(document, params, now), !meta.identity_review))
}

impl DocumentJob {
    /// Reads a journal entry; `source_id` and `unique_id_root` are the sender OIDs of the submission set.
    pub fn from_journal(
        mapper: &DocumentMapper,
        kind: MessageKind,
        raw: &[u8],
        source_id: &str,
        unique_id_root: &str,
        now: jiff::Timestamp,
    ) -> Result<DocumentJob, MapFailure> {
        let mapped = mapper.map_document(kind, raw)?;
        let details = &mapped.details;
        let content = match kind {
            MessageKind::Cda => raw.to_vec(),
            MessageKind::Hl7v2 => crate::documents::oru::read(raw)?.cda,
        };
        let meta = &details.metadata;
        let pdf = crate::cda::pdf(&content);
        let document = XdsDocument::from_metadata(meta, content, pdf);
        let submission =
            Submission::new(document, SubmissionParams::from_metadata(meta, source_id, unique_id_root), now);
        let p = &details.header.patient;
        let oru = details.oru.as_ref();
        let patient = Patient {
            family: p.birth_family.clone().unwrap_or_default(),
            given: p.first_given.clone().unwrap_or_default(),
            birth_date: p.birth_time.clone().unwrap_or_default(),
            ins: p.ins.as_ref().map(|i| i.value.clone()),
            ins_qualified: !meta.identity_review,
        };
        let (flags, professionals, body_ps, body_patient, ack_requested) = match oru {
            Some(info) => (
                MaskingFlags::from_names(&info.flags_set()),
                info.recipients
                    .iter()
                    .filter(|r| r.role == "RCT" && r.address.contains('@'))
                    .filter(|r| !r.address.to_ascii_lowercase().ends_with(&format!("@{PATIENT_DOMAIN}")))
                    .map(|r| r.address.clone())
                    .collect(),
                info.mail_body_ps.clone().unwrap_or_default(),
                info.mail_body_patient.clone().unwrap_or_default(),
                info.flag("ACK_RECEPTION") || info.flag("ACK_LECTURE_MSS"),
            ),
            None => (MaskingFlags::default(), Vec::new(), String::new(), String::new(), false),
        };
        let recipient_ids = oru
            .map(|info| {
                info.recipients
                    .iter()
                    .filter(|r| r.role == "RCT" && r.address.contains('@'))
                    .map(|r| (r.address.to_ascii_lowercase(), r.id.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let reception_ack_requested = oru.is_some_and(|info| info.flag("ACK_RECEPTION"));
        Ok(DocumentJob {
            submission,
            patient,
            flags,
            professionals,
            body_ps,
            body_patient,
            ack_requested,
            recipient_ids,
            reception_ack_requested,
        })
    }

    /// The id (IDNPS, INS) PRT RCT gives for `address`, or the patient's INS for the patient's mailbox.
    pub fn recipient_id(&self, address: &str) -> String {
        let address = address.to_ascii_lowercase();
        if let Some((_, id)) = self.recipient_ids.iter().find(|(a, _)| *a == address) {
            return id.clone();
        }
        match (&self.patient.ins, self.patient.mailbox()) {
            (Some(ins), Some(mailbox)) if mailbox.eq_ignore_ascii_case(&address) => ins.clone(),
            _ => String::new(),
        }
    }

    /// The MSSanté request, with `route_recipients` added to the professionals (a route may name more).
    pub fn mail_request(&self, route_recipients: &[String]) -> MailRequest {
        let mut professionals = self.professionals.clone();
        for r in route_recipients {
            if !professionals.iter().any(|p| p.eq_ignore_ascii_case(r)) {
                professionals.push(r.clone());
            }
        }
        MailRequest {
            submission: self.submission.clone(),
            patient: self.patient.clone(),
            professionals,
            flags: self.flags,
            body_ps: self.body_ps.clone(),
            body_patient: self.body_patient.clone(),
            ack_requested: self.ack_requested,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dmp_submission_from_the_envelope_metadata_is_the_one_mapped_again_from_the_journal() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mapper = DocumentMapper::load(&root.join("mappings/tables/xds")).unwrap();
        let raw = std::fs::read(root.join("test-messages/cda/own_CR-OP_34874-8_N1.xml")).unwrap();
        let now = jiff::Timestamp::now();
        let meta = mapper.map_document(MessageKind::Cda, &raw).unwrap().details.metadata;
        let (submission, ins_qualified) =
            dmp_submission(&meta, MessageKind::Cda, &raw, "1.2.3", "1.2.3.4", now).unwrap();
        let job =
            DocumentJob::from_journal(&mapper, MessageKind::Cda, &raw, "1.2.3", "1.2.3.4", now).unwrap();
        let mut expected = job.submission.document.clone();
        assert!(expected.pdf.is_some(), "the mail job carries the PDF");
        expected.pdf = None;
        assert_eq!(submission.document, expected);
        assert_eq!(submission.document.content, raw);
        assert_eq!(submission.params, job.submission.params);
        assert_eq!(
            (submission.entry_uuid, submission.hash),
            (job.submission.entry_uuid, job.submission.hash)
        );
        assert_eq!(ins_qualified, job.patient.ins_qualified);
        assert!(ins_qualified);
    }
}
