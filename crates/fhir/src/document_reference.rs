//! The FHIR Bundle of a clinical document: a DocumentReference (MHD / PDSm shape) with its Patient and
//! Practitioner(s), as a `transaction` Bundle of POSTs (conditional on the business identifiers).
//!
//! Callers fill [`DocumentInput`] with plain values (FHIR `dateTime` strings, OIDs as `urn:oid:` systems);
//! [`document_bundle`] builds every resource with fhir-sdk's typed builders and returns the JSON.

use std::fmt;

use fhir_sdk::r4b::codes::{
    AdministrativeGender, BundleType, DocumentReferenceStatus, DocumentRelationshipType, HTTPVerb,
};
use fhir_sdk::r4b::resources::{
    Bundle, BundleEntry, BundleEntryRequest, DocumentReference, DocumentReferenceContent,
    DocumentReferenceContext, DocumentReferenceRelatesTo, Patient, Practitioner, Resource,
};
use fhir_sdk::r4b::types::{Attachment, CodeableConcept, Coding, HumanName, Identifier, Period, Reference};
use fhir_sdk::{Base64Binary, Date, DateTime, Instant};

/// Why the document bundle could not be built: a value the FHIR model refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("FHIR {element}: {reason}")]
pub struct DocumentError {
    /// The element (`DocumentReference.date`, `Patient.birthDate`…).
    pub element: &'static str,
    /// What is wrong.
    pub reason: String,
}

fn err(element: &'static str) -> impl Fn(fhir_sdk::BuilderError) -> DocumentError {
    move |e| DocumentError { element, reason: e.to_string() }
}

/// A coding: system (URI), code, display.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodingInput {
    /// The system URI (`http://loinc.org`, `urn:oid:…`).
    pub system: String,
    /// The code.
    pub code: String,
    /// The display (may be empty).
    pub display: String,
}

/// An identifier: system URI and value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct IdInput {
    /// The system URI (`urn:oid:1.2.250.1.213.1.4.8`).
    pub system: String,
    /// The value.
    pub value: String,
    /// The identifier type (`INS-NIR`, `PI`, `RPPS`…) as a coding, when known.
    pub type_coding: Option<CodingInput>,
}

/// The patient: identifiers already filtered by the identity rules (INS only when qualified).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PatientInput {
    /// The resource id (a UUID).
    pub id: String,
    /// INS (when qualified) and IPP.
    pub identifiers: Vec<IdInput>,
    /// Birth family name.
    pub family: Option<String>,
    /// Given names.
    pub given: Vec<String>,
    /// `M`, `F`, `U` (HL7 AdministrativeGender) or the FHIR codes.
    pub gender: Option<String>,
    /// `YYYY-MM-DD`.
    pub birth_date: Option<String>,
}

/// A practitioner (author, legal authenticator).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PractitionerInput {
    /// The resource id (a UUID).
    pub id: String,
    /// RPPS or IDNPS.
    pub identifier: Option<IdInput>,
    /// Family name.
    pub family: Option<String>,
    /// Given name.
    pub given: Option<String>,
    /// Prefix (`Dr`).
    pub prefix: Option<String>,
}

/// An organization referenced by identifier (custodian).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct OrganizationInput {
    /// IDNST / FINESS.
    pub identifier: Option<IdInput>,
    /// Name, shown as the reference's display.
    pub name: Option<String>,
}

/// Everything the DocumentReference says.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct DocumentInput {
    /// The DocumentReference id (a UUID).
    pub id: String,
    /// masterIdentifier: the document's unique id (`urn:oid:…` value with system `urn:ietf:rfc:3986`).
    pub master_identifier: IdInput,
    /// type: the LOINC document type.
    pub type_code: CodingInput,
    /// category: the XDS classCode.
    pub class_code: CodingInput,
    /// content.format: the XDS formatCode.
    pub format_code: CodingInput,
    /// securityLabel: confidentiality and masking codes.
    pub security_labels: Vec<CodingInput>,
    /// date: the document's creation as a FHIR instant (`2021-04-01T17:10:00+01:00`).
    pub date: Option<String>,
    /// description: the title.
    pub description: Option<String>,
    /// context.period start / end (FHIR dateTime).
    pub period: (Option<String>, Option<String>),
    /// context.event.
    pub events: Vec<CodingInput>,
    /// context.facilityType.
    pub facility_type: Option<CodingInput>,
    /// context.practiceSetting.
    pub practice_setting: Option<CodingInput>,
    /// relatesTo replaces: the master identifier of the replaced document.
    pub replaces: Option<IdInput>,
    /// content.attachment.contentType (`text/xml`).
    pub content_type: String,
    /// content.attachment.language (`fr-FR`).
    pub language: Option<String>,
    /// content.attachment.data: the document bytes.
    pub data: Vec<u8>,
    /// content.attachment.hash: SHA-1 of the bytes.
    pub sha1: Vec<u8>,
    /// The patient.
    pub patient: PatientInput,
    /// Authors.
    pub authors: Vec<PractitionerInput>,
    /// Legal authenticator.
    pub authenticator: Option<PractitionerInput>,
    /// Custodian.
    pub custodian: Option<OrganizationInput>,
}

impl fmt::Debug for DocumentInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DocumentInput").field("type", &self.type_code.code).finish_non_exhaustive()
    }
}

fn coding(c: &CodingInput) -> Result<Coding, DocumentError> {
    let mut b = Coding::builder().code(c.code.clone());
    if !c.system.is_empty() {
        b = b.system(c.system.clone());
    }
    if !c.display.is_empty() {
        b = b.display(c.display.clone());
    }
    b.build().map_err(err("Coding"))
}

fn concept(c: &CodingInput) -> Result<CodeableConcept, DocumentError> {
    CodeableConcept::builder().coding(vec![Some(coding(c)?)]).build().map_err(err("CodeableConcept"))
}

fn identifier(id: &IdInput) -> Result<Identifier, DocumentError> {
    let mut b = Identifier::builder().system(id.system.clone()).value(id.value.clone());
    if let Some(t) = &id.type_coding {
        b = b.r#type(concept(t)?);
    }
    b.build().map_err(err("Identifier"))
}

fn date_time(element: &'static str, value: &str) -> Result<DateTime, DocumentError> {
    value.parse::<DateTime>().map_err(|e| DocumentError { element, reason: format!("`{value}`: {e}") })
}

fn urn(id: &str) -> String {
    format!("urn:uuid:{id}")
}

fn reference_to(id: &str) -> Result<Reference, DocumentError> {
    Reference::builder().reference(urn(id)).build().map_err(err("Reference"))
}

fn patient(p: &PatientInput) -> Result<Patient, DocumentError> {
    let ids = p.identifiers.iter().map(|i| identifier(i).map(Some)).collect::<Result<Vec<_>, _>>()?;
    let mut name = HumanName::builder();
    if let Some(family) = &p.family {
        name = name.family(family.clone());
    }
    name = name.given(p.given.iter().cloned().map(Some).collect());
    let mut b = Patient::builder()
        .id(p.id.clone())
        .identifier(ids)
        .name(vec![Some(name.build().map_err(err("HumanName"))?)]);
    if let Some(g) = &p.gender {
        let gender = match g.as_str() {
            "M" | "male" => AdministrativeGender::Male,
            "F" | "female" => AdministrativeGender::Female,
            "O" | "other" => AdministrativeGender::Other,
            _ => AdministrativeGender::Unknown,
        };
        b = b.gender(gender);
    }
    if let Some(d) = &p.birth_date {
        let date = d
            .parse::<Date>()
            .map_err(|e| DocumentError { element: "Patient.birthDate", reason: format!("`{d}`: {e}") })?;
        b = b.birth_date(date);
    }
    b.build().map_err(err("Patient"))
}

fn practitioner(p: &PractitionerInput) -> Result<Practitioner, DocumentError> {
    let mut b = Practitioner::builder().id(p.id.clone());
    if let Some(id) = &p.identifier {
        b = b.identifier(vec![Some(identifier(id)?)]);
    }
    let mut name = HumanName::builder();
    if let Some(family) = &p.family {
        name = name.family(family.clone());
    }
    if let Some(given) = &p.given {
        name = name.given(vec![Some(given.clone())]);
    }
    if let Some(prefix) = &p.prefix {
        name = name.prefix(vec![Some(prefix.clone())]);
    }
    b = b.name(vec![Some(name.build().map_err(err("HumanName"))?)]);
    b.build().map_err(err("Practitioner"))
}

fn document_reference(d: &DocumentInput) -> Result<DocumentReference, DocumentError> {
    let mut attachment = Attachment::builder()
        .content_type(d.content_type.clone())
        .data(Base64Binary(d.data.clone()))
        .size(u32::try_from(d.data.len()).map_err(|_| DocumentError {
            element: "DocumentReference.content.attachment.size",
            reason: "document larger than 4 GiB".into(),
        })?)
        .hash(Base64Binary(d.sha1.clone()));
    if let Some(lang) = &d.language {
        attachment = attachment.language(lang.clone());
    }
    if let Some(title) = &d.description {
        attachment = attachment.title(title.clone());
    }
    let content = DocumentReferenceContent::builder()
        .attachment(attachment.build().map_err(err("Attachment"))?)
        .format(coding(&d.format_code)?)
        .build()
        .map_err(err("DocumentReference.content"))?;

    let mut context = DocumentReferenceContext::builder()
        .event(d.events.iter().map(|e| concept(e).map(Some)).collect::<Result<Vec<_>, _>>()?);
    if d.period.0.is_some() || d.period.1.is_some() {
        let mut period = Period::builder();
        if let Some(start) = &d.period.0 {
            period = period.start(date_time("DocumentReference.context.period.start", start)?);
        }
        if let Some(end) = &d.period.1 {
            period = period.end(date_time("DocumentReference.context.period.end", end)?);
        }
        context = context.period(period.build().map_err(err("Period"))?);
    }
    if let Some(f) = &d.facility_type {
        context = context.facility_type(concept(f)?);
    }
    if let Some(p) = &d.practice_setting {
        context = context.practice_setting(concept(p)?);
    }

    let mut b = DocumentReference::builder()
        .id(d.id.clone())
        .master_identifier(identifier(&d.master_identifier)?)
        .status(DocumentReferenceStatus::Current)
        .r#type(concept(&d.type_code)?)
        .category(vec![Some(concept(&d.class_code)?)])
        .subject(reference_to(&d.patient.id)?)
        .author(d.authors.iter().map(|a| reference_to(&a.id).map(Some)).collect::<Result<Vec<_>, _>>()?)
        .security_label(
            d.security_labels.iter().map(|s| concept(s).map(Some)).collect::<Result<Vec<_>, _>>()?,
        )
        .content(vec![Some(content)])
        .context(context.build().map_err(err("DocumentReference.context"))?);
    if let Some(date) = &d.date {
        let instant = date.parse::<Instant>().map_err(|e| DocumentError {
            element: "DocumentReference.date",
            reason: format!("`{date}`: {e}"),
        })?;
        b = b.date(instant);
    }
    if let Some(text) = &d.description {
        b = b.description(text.clone());
    }
    if let Some(a) = &d.authenticator {
        b = b.authenticator(reference_to(&a.id)?);
    }
    if let Some(c) = &d.custodian {
        let mut r = Reference::builder().r#type("Organization".to_string());
        if let Some(id) = &c.identifier {
            r = r.identifier(identifier(id)?);
        }
        if let Some(name) = &c.name {
            r = r.display(name.clone());
        }
        b = b.custodian(r.build().map_err(err("Reference"))?);
    }
    if let Some(old) = &d.replaces {
        let target = Reference::builder()
            .r#type("DocumentReference".to_string())
            .identifier(identifier(old)?)
            .build()
            .map_err(err("Reference"))?;
        let relates = DocumentReferenceRelatesTo::builder()
            .code(DocumentRelationshipType::Replaces)
            .target(target)
            .build()
            .map_err(err("DocumentReference.relatesTo"))?;
        b = b.relates_to(vec![Some(relates)]);
    }
    b.build().map_err(err("DocumentReference"))
}

fn entry(
    id: &str,
    resource: Resource,
    url: &str,
    if_none_exist: Option<String>,
) -> Result<BundleEntry, DocumentError> {
    let mut request = BundleEntryRequest::builder().method(HTTPVerb::Post).url(url.to_string());
    if let Some(query) = if_none_exist {
        request = request.if_none_exist(query);
    }
    BundleEntry::builder()
        .full_url(urn(id))
        .resource(resource)
        .request(request.build().map_err(err("Bundle.entry.request"))?)
        .build()
        .map_err(err("Bundle.entry"))
}

fn condition(id: Option<&IdInput>) -> Option<String> {
    id.map(|i| format!("identifier={}|{}", i.system, i.value))
}

/// Builds the transaction Bundle (Patient, Practitioners, DocumentReference) and returns its JSON.
pub fn document_bundle(d: &DocumentInput) -> Result<Vec<u8>, DocumentError> {
    let mut entries = Vec::new();
    let patient_condition = condition(d.patient.identifiers.first());
    entries.push(Some(entry(
        &d.patient.id,
        Resource::from(patient(&d.patient)?),
        "Patient",
        patient_condition,
    )?));
    let mut seen: Vec<&str> = Vec::new();
    for p in d.authors.iter().chain(d.authenticator.iter()) {
        if seen.contains(&p.id.as_str()) {
            continue;
        }
        seen.push(&p.id);
        let resource = Resource::from(practitioner(p)?);
        entries.push(Some(entry(&p.id, resource, "Practitioner", condition(p.identifier.as_ref()))?));
    }
    let reference = Resource::from(document_reference(d)?);
    entries.push(Some(entry(&d.id, reference, "DocumentReference", None)?));
    let bundle =
        Bundle::builder().r#type(BundleType::Transaction).entry(entries).build().map_err(err("Bundle"))?;
    serde_json::to_vec(&bundle).map_err(|e| DocumentError { element: "Bundle", reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> DocumentInput {
        DocumentInput {
            id: "6f1c2a3e-0000-5000-8000-000000000001".into(),
            master_identifier: IdInput {
                system: "urn:ietf:rfc:3986".into(),
                value: "urn:oid:1.2.3".into(),
                type_coding: None,
            },
            type_code: CodingInput {
                system: "http://loinc.org".into(),
                code: "11490-0".into(),
                display: String::new(),
            },
            class_code: CodingInput {
                system: "urn:oid:1.2.250.1.213.1.1.4.1".into(),
                code: "11".into(),
                display: String::new(),
            },
            format_code: CodingInput {
                system: "urn:oid:x".into(),
                code: "urn:ihe:iti:xds-sd:pdf:2008".into(),
                display: String::new(),
            },
            content_type: "text/xml".into(),
            data: b"<ClinicalDocument/>".to_vec(),
            sha1: vec![0; 20],
            patient: PatientInput {
                id: "6f1c2a3e-0000-5000-8000-000000000002".into(),
                ..PatientInput::default()
            },
            ..DocumentInput::default()
        }
    }

    #[test]
    fn a_minimal_document_builds() {
        let json: serde_json::Value = serde_json::from_slice(&document_bundle(&minimal()).unwrap()).unwrap();
        assert_eq!(json["type"], "transaction");
        assert_eq!(json["entry"][1]["resource"]["resourceType"], "DocumentReference");
        assert_eq!(json["entry"][1]["resource"]["content"][0]["attachment"]["size"], 19);
    }

    #[test]
    fn invalid_dates_are_errors_naming_the_element() {
        let mut input = minimal();
        input.date = Some("2021-13-45".into());
        assert_eq!(document_bundle(&input).unwrap_err().element, "DocumentReference.date");
        let mut input = minimal();
        input.patient.birth_date = Some("yesterday".into());
        assert_eq!(document_bundle(&input).unwrap_err().element, "Patient.birthDate");
    }
}
