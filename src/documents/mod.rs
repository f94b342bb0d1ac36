//! Documents: from a CDA (alone or inside an ORU^R01) to its XDS metadata, its routing facts and its FHIR
//! DocumentReference bundle.
//!
//! Receives journaled bytes from the pipeline (through [`facts::Transform`], implemented by
//! [`DocumentMapper`]); reads the header with [`crate::cda`], the ORU^R01 wrapping with [`oru`], builds the
//! [`metadata::DocumentMetadata`] from the XDS tables of `mappings/tables/xds/xds-*.toml` (loaded once at start)
//! and the Bundle with `relais_fhir::document_reference`. Hands on a [`MappedDocument`]: the shared
//! [`Mapped`] plus the metadata and ORU details, all serde-serializable for the bus envelope.
//!
//! Identity rule (as for ADT): the INS is used only when the identity is qualified — for a CDA, an INS with
//! its OID and the four INS traits; for an ORU^R01, PID-32 = `VALI` as well. Otherwise the INS appears
//! nowhere in the output (not in the metadata, not in the Bundle, not in the partition key) and the document
//! is marked for identity review. The rule itself lives in [`crate::identity`], shared with the ADT mapping.

pub mod metadata;
pub mod oru;
pub mod tables;
pub mod time;
pub mod zam;

#[cfg(test)]
mod tests;

use std::path::Path;

use relais_fhir::document_bundle;
use relais_fhir::model::{Code, DocumentData, Ident, Name, PatientData, PractitionerData, Ref};
use serde::{Deserialize, Serialize};

use crate::cda::{self, CdaHeader, Person};
use crate::facts::{self, EventClass, Facts, MapFailure, Mapped, MessageKind};
use crate::identity;
use crate::mapping;
pub use metadata::DocumentMetadata;
pub use oru::OruInfo;
pub use tables::{TableError, XdsTables};

/// The documents' map stage: the XDS tables, loaded once.
#[derive(Debug, Clone)]
pub struct DocumentMapper {
    tables: XdsTables,
}

/// A mapped document: the shared [`Mapped`] (bundle + facts) and what the document sinks need.
#[derive(Clone)]
pub struct MappedDocument {
    /// Bundle and routing facts.
    pub mapped: Mapped,
    /// The XDS metadata, recipients and flags, for the bus envelope.
    pub details: DocumentDetails,
}

impl std::fmt::Debug for MappedDocument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedDocument")
            .field("bundle_bytes", &self.mapped.bundle.len())
            .field("details", &self.details)
            .finish_non_exhaustive()
    }
}

/// What travels with a document on the bus besides the Bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentDetails {
    /// XDS document entry and submission set.
    pub metadata: DocumentMetadata,
    /// The header as read.
    pub header: CdaHeader,
    /// For an ORU^R01: flags, recipients, mail bodies, sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oru: Option<OruInfo>,
}

fn cda_failure(e: cda::CdaError) -> MapFailure {
    MapFailure { location: e.element, reason: e.reason }
}

impl DocumentMapper {
    /// Loads the XDS tables from `dir` (usually `mappings/tables/xds`).
    pub fn load(dir: &Path) -> Result<DocumentMapper, TableError> {
        Ok(DocumentMapper { tables: XdsTables::load(dir)? })
    }

    /// The loaded tables.
    pub fn tables(&self) -> &XdsTables {
        &self.tables
    }

    /// Maps a CDA document or an ORU^R01 carrying one.
    pub fn map_document(&self, kind: MessageKind, raw: &[u8]) -> Result<MappedDocument, MapFailure> {
        match kind {
            MessageKind::Cda => self.map_cda(raw),
            MessageKind::Hl7v2 if oru::is_oru_r01(raw) => self.map_oru(raw),
            MessageKind::Hl7v2 => Err(MapFailure {
                location: "MSH-9".into(),
                reason: "not a document message: the documents module maps CDA and ORU^R01 only".into(),
            }),
        }
    }

    /// Maps a bare CDA document.
    pub fn map_cda(&self, raw: &[u8]) -> Result<MappedDocument, MapFailure> {
        let header = cda::extract(raw).map_err(cda_failure)?;
        let meta = metadata::build(&header, raw, &self.tables, &metadata::Context::default())?;
        let custodian = header.custodian.as_ref().and_then(|c| c.id.as_ref()).map(|i| i.extension.clone());
        let facts = Facts {
            kind: MessageKind::Cda,
            event_class: Some(EventClass::Document),
            sending_facility: custodian.unwrap_or_default(),
            document_type: Some(header.type_code().to_string()),
            confidentiality: Some(header.confidentiality_code().to_string()),
            ins_qualified: !meta.identity_review,
            gp_known: header.gp.as_ref().is_some_and(|p| p.rpps().is_some()),
            patient_key: patient_key(&header, !meta.identity_review, None),
            ..Facts::default()
        };
        self.finish(header, raw, meta, facts, None)
    }

    /// Maps an ORU^R01: the CDA of its ED OBX, with the message's flags, recipients and patient rules.
    pub fn map_oru(&self, raw: &[u8]) -> Result<MappedDocument, MapFailure> {
        let doc = oru::read(raw)?;
        let header = cda::extract(&doc.cda).map_err(|e| MapFailure {
            location: format!("{} {}", doc.cda_location, e.element),
            reason: e.reason,
        })?;
        let info = doc.info;
        if let (Some(pid_ins), Some(cda_ins)) = (&info.ins, &header.patient.ins)
            && pid_ins != &cda_ins.value
        {
            return Err(MapFailure {
                location: "PID-3".into(),
                reason:
                    "the INS of PID-3 is not the INS of the CDA recordTarget: two patients in one message"
                        .into(),
            });
        }
        let flags = info.flags_set();
        let sender = info.recipients.iter().find(|r| r.role == "SB").map(|r| metadata::XdsAuthor {
            person: format!(
                "{}^{}^{}^^^^^^&{}&ISO^D^^^{}",
                r.id,
                r.family,
                r.given,
                cda::IDNPS_OID,
                r.id_type
            ),
            institution: (!r.organization_id.is_empty()).then(|| {
                format!("{}^^^^^&{}&ISO^IDNST^^^{}", r.organization, cda::IDNST_OID, r.organization_id)
            }),
            specialty: None,
        });
        let ctx = metadata::Context {
            flags: &flags,
            patient_class: info.patient_class.as_deref(),
            sender,
            ins_qualified: Some(info.ins_qualified),
        };
        let meta = metadata::build(&header, &doc.cda, &self.tables, &ctx)?;
        let qualified = !meta.identity_review;
        let facts = Facts {
            kind: MessageKind::Hl7v2,
            event_class: Some(EventClass::Document),
            message_type: "ORU^R01".into(),
            sending_application: info.sending_application.clone(),
            sending_facility: info.sending_facility.clone(),
            patient_class: info.patient_class.clone(),
            document_type: Some(header.type_code().to_string()),
            confidentiality: Some(header.confidentiality_code().to_string()),
            flags,
            ins_qualified: qualified,
            gp_known: header.gp.as_ref().is_some_and(|p| p.rpps().is_some()),
            patient_key: patient_key(&header, qualified, info.ipp.as_deref()),
            ..Facts::default()
        };
        self.finish(header, &doc.cda, meta, facts, Some(info))
    }

    fn finish(
        &self,
        header: CdaHeader,
        document: &[u8],
        metadata: DocumentMetadata,
        facts: Facts,
        oru: Option<OruInfo>,
    ) -> Result<MappedDocument, MapFailure> {
        let input = fhir_input(&header, document, &metadata);
        let bundle = document_bundle(input)
            .map_err(|e| MapFailure { location: e.element().to_string(), reason: e.reason() })?;
        Ok(MappedDocument {
            mapped: Mapped { bundle, facts },
            details: DocumentDetails { metadata, header, oru },
        })
    }
}

impl facts::Transform for DocumentMapper {
    fn map(&self, kind: MessageKind, raw: &[u8]) -> Result<Mapped, MapFailure> {
        self.map_document(kind, raw).map(|d| d.mapped)
    }
}

/// What `raw` looks like: a CDA when it starts (after a BOM and blanks) with `<`, else HL7v2 — for tools such
/// as `relais convert` that get a file without a transport telling its kind.
pub fn sniff_kind(raw: &[u8]) -> MessageKind {
    let raw = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw);
    match raw.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'<') => MessageKind::Cda,
        _ => MessageKind::Hl7v2,
    }
}

/// The INS when qualified; else the IPP: PID-3's `<assigner>|<IPP>` for an ORU^R01 (the ADT mapping's form, so
/// a patient's ADT and documents share a partition), else the CDA's `<root>|<IPP>`.
fn patient_key(header: &CdaHeader, qualified: bool, oru_ipp: Option<&str>) -> String {
    if let Some(ins) = identity::ins_if_qualified(header.patient.ins.as_ref(), qualified) {
        return ins.value.clone();
    }
    if let Some(ipp) = oru_ipp {
        return ipp.to_string();
    }
    header.patient.ipp.as_ref().map(|ipp| format!("{}|{}", ipp.root, ipp.extension)).unwrap_or_default()
}

fn oid_system(oid: &str) -> String {
    format!("urn:oid:{oid}")
}

fn code_system(scheme: &str) -> String {
    match scheme {
        cda::LOINC_OID => "http://loinc.org".to_string(),
        "" => String::new(),
        other => oid_system(other),
    }
}

fn coding(code: &metadata::XdsCode) -> Code {
    let display = Some(code.display.clone()).filter(|d| !d.is_empty());
    Code { system: code_system(&code.scheme), code: code.code.clone(), display }
}

/// A code without display.
fn code(system: &str, code: &str) -> Code {
    Code { system: system.into(), code: code.into(), display: None }
}

/// An identifier with its type, when known.
fn ident(system: String, value: String, type_: Option<Code>) -> Ident {
    Ident { system, value, type_, ..Ident::default() }
}

/// The HL7 AdministrativeGender code of a CDA as a FHIR gender code.
fn fhir_gender(g: &str) -> String {
    match g {
        "M" | "male" => "male",
        "F" | "female" => "female",
        "O" | "other" => "other",
        _ => "unknown",
    }
    .to_string()
}

fn uuid_of(name: &str) -> String {
    metadata::urn_uuid(name).trim_start_matches("urn:uuid:").to_string()
}

fn practitioner(person: &Person) -> PractitionerData {
    let key =
        person.id.as_ref().map_or_else(|| format!("{:?}{:?}", person.family, person.given), |i| i.to_xds());
    let identifier = person.id.as_ref().map(|id| match person.rpps() {
        Some(rpps) => ident(
            "urn:oid:1.2.250.1.71.4.2.1".into(),
            format!("8{rpps}"),
            Some(code("http://interopsante.org/CodeSystem/fr-v2-0203", "IDNPS")),
        ),
        None => ident(oid_system(&id.root), id.extension.clone(), None),
    });
    let name = Name {
        family: person.family.clone(),
        given: person.given.iter().cloned().collect(),
        prefix: person.prefix.clone(),
        ..Name::default()
    };
    PractitionerData {
        id: uuid_of(&format!("Practitioner/{key}")),
        identifiers: identifier.into_iter().collect(),
        names: vec![name],
        ..PractitionerData::default()
    }
}

fn fhir_input(header: &CdaHeader, document: &[u8], meta: &DocumentMetadata) -> DocumentData {
    let entry = &meta.entry;
    let qualified = !meta.identity_review;
    let p = &header.patient;
    let mut identifiers = Vec::new();
    if let Some(ins) = identity::ins_if_qualified(p.ins.as_ref(), qualified) {
        let code_value = if ins.kind == cda::InsKind::Nir { "INS-NIR" } else { "INS-NIR-TEST" };
        let type_ = code("https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203", code_value);
        identifiers.push(ident(oid_system(&ins.oid), ins.value.clone(), Some(type_)));
    }
    if let Some(ipp) = &p.ipp {
        let type_ = code("http://terminology.hl7.org/CodeSystem/v2-0203", "PI");
        identifiers.push(ident(oid_system(&ipp.root), ipp.extension.clone(), Some(type_)));
    }
    let patient_key =
        identifiers.first().map_or_else(|| entry.unique_id.clone(), |i| format!("{}|{}", i.system, i.value));
    let given: Vec<String> = p
        .given_names
        .as_deref()
        .or(p.first_given.as_deref())
        .map(|g| g.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let master = ident("urn:ietf:rfc:3986".into(), document_uid(&header.id), None);
    let (start, stop) = header.service_period();
    DocumentData {
        id: uuid_of(&format!("DocumentReference/{}", entry.unique_id)),
        master_identifier: master,
        type_code: coding(&entry.type_code),
        class_code: coding(&entry.class_code),
        format_code: code(&oid_system(&entry.format_code.scheme), &entry.format_code.code),
        security_labels: entry.confidentiality.iter().map(coding).collect(),
        date: header.effective_time.as_deref().and_then(time::fhir).filter(|t| mapping::time::is_instant(t)),
        description: header.title.clone(),
        start: start.and_then(time::fhir),
        end: stop.and_then(time::fhir),
        events: entry.event_codes.iter().map(coding).collect(),
        facility_type: entry.healthcare_facility_type.as_ref().map(coding),
        practice_setting: entry.practice_setting.as_ref().map(coding),
        replaces: header
            .replaces
            .as_ref()
            .map(|id| ident("urn:ietf:rfc:3986".into(), document_uid(id), None)),
        content_type: entry.mime_type.clone(),
        language: Some(entry.language.clone()),
        data: document.to_vec(),
        sha1: hex_bytes(&entry.hash),
        patient: PatientData {
            id: uuid_of(&format!("Patient/{patient_key}")),
            identifiers,
            names: vec![Name { family: p.birth_family.clone(), given, ..Name::default() }],
            gender: p.gender.as_deref().map(fhir_gender),
            birth_date: p.birth_time.as_deref().and_then(time::fhir),
            ..PatientData::default()
        },
        authors: header.authors.iter().map(practitioner).collect(),
        authenticator: header.legal_authenticator.as_ref().map(practitioner),
        custodian: header.custodian.as_ref().map(|c| Ref {
            type_: Some("Organization".into()),
            identifier: c.id.as_ref().map(|id| ident(oid_system(&id.root), id.extension.clone(), None)),
            display: c.name.clone(),
            ..Ref::default()
        }),
    }
}

/// A document id as a URI: `urn:oid:<root>`, with `^<extension>` when there is one.
fn document_uid(id: &cda::InstanceId) -> String {
    if id.extension.is_empty() {
        oid_system(&id.root)
    } else {
        format!("{}^{}", oid_system(&id.root), id.extension)
    }
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2).filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()).collect()
}
