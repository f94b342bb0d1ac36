//! The FHIR Bundle of a clinical document: a DocumentReference (MHD / PDSm shape) with its Patient and
//! Practitioner(s), as a `transaction` Bundle of POSTs (conditional on the business identifiers).
//!
//! Callers fill a [`DocumentData`] with the shared [`crate::model`] values (FHIR `dateTime` strings, OIDs as
//! `urn:oid:` systems); [`document_bundle`] builds the Patient and Practitioners with the crate's resource
//! builders, the DocumentReference with the shared data types, and returns the JSON.

use std::str::FromStr;

use fhir_sdk::r4b::codes::{BundleType, DocumentReferenceStatus, DocumentRelationshipType, HTTPVerb};
use fhir_sdk::r4b::resources::{
    Bundle, BundleEntry, BundleEntryRequest, DocumentReference, DocumentReferenceContent,
    DocumentReferenceContext, DocumentReferenceRelatesTo, Resource,
};
use fhir_sdk::r4b::types::{Attachment, Reference};
use fhir_sdk::{Base64Binary, Instant};

use crate::datatypes::{built, coding, concept, each, identifier, period, reference};
use crate::model::{Code, DocumentData, Ident, Ref};
use crate::resources::{patient, practitioner};
use crate::{Built, Error};

fn urn(id: &str) -> String {
    format!("urn:uuid:{id}")
}

fn reference_to(id: &str) -> Result<Reference, Error> {
    reference(Ref { reference: Some(urn(id)), ..Ref::default() })
}

fn concept_of(c: Code) -> Result<fhir_sdk::r4b::types::CodeableConcept, Error> {
    Ok(concept(c, None))
}

fn document_reference(d: DocumentData, patient_id: &str, author_ids: &[String]) -> Result<Built, Error> {
    let size = u32::try_from(d.data.len()).map_err(|_| Error::Value {
        element: "DocumentReference.content.attachment.size",
        value: d.data.len().to_string(),
        reason: "document larger than 4 GiB".into(),
    })?;
    let mut attachment = Attachment::builder()
        .content_type(d.content_type)
        .data(Base64Binary(d.data))
        .size(size)
        .hash(Base64Binary(d.sha1));
    if let Some(lang) = d.language {
        attachment = attachment.language(lang);
    }
    if let Some(title) = &d.description {
        attachment = attachment.title(title.clone());
    }
    let content = DocumentReferenceContent::builder()
        .attachment(built("Attachment", attachment.build())?)
        .format(coding(d.format_code))
        .build();
    let content = built("DocumentReference.content", content)?;

    let mut context = DocumentReferenceContext::builder().event(each(d.events, concept_of)?);
    if d.start.is_some() || d.end.is_some() {
        context =
            context.period(period("DocumentReference.context.period", d.start.as_deref(), d.end.as_deref())?);
    }
    if let Some(f) = d.facility_type {
        context = context.facility_type(concept_of(f)?);
    }
    if let Some(p) = d.practice_setting {
        context = context.practice_setting(concept_of(p)?);
    }

    let id = d.id;
    let mut b = DocumentReference::builder()
        .id(id.clone())
        .master_identifier(identifier(d.master_identifier)?)
        .status(DocumentReferenceStatus::Current)
        .r#type(concept_of(d.type_code)?)
        .category(vec![Some(concept_of(d.class_code)?)])
        .subject(reference_to(patient_id)?)
        .author(author_ids.iter().map(|a| reference_to(a).map(Some)).collect::<Result<Vec<_>, _>>()?)
        .security_label(each(d.security_labels, concept_of)?)
        .content(vec![Some(content)])
        .context(built("DocumentReference.context", context.build())?);
    if let Some(date) = d.date {
        let instant = Instant::from_str(&date).map_err(|e| Error::Value {
            element: "DocumentReference.date",
            value: date.clone(),
            reason: e.to_string(),
        })?;
        b = b.date(instant);
    }
    if let Some(text) = d.description {
        b = b.description(text);
    }
    if let Some(a) = &d.authenticator {
        b = b.authenticator(reference_to(&a.id)?);
    }
    if let Some(c) = d.custodian {
        b = b.custodian(reference(c)?);
    }
    if let Some(old) = d.replaces {
        let target = Ref { type_: Some("DocumentReference".into()), identifier: Some(old), ..Ref::default() };
        let relates = DocumentReferenceRelatesTo::builder()
            .code(DocumentRelationshipType::Replaces)
            .target(reference(target)?)
            .build();
        b = b.relates_to(vec![Some(built("DocumentReference.relatesTo", relates)?)]);
    }
    let resource = built("DocumentReference", b.build())?;
    Ok(Built { resource: Resource::from(resource), type_name: "DocumentReference", id })
}

/// A POST entry, conditional (`ifNoneExist`) on `condition` when given.
fn entry(built_resource: Built, condition: Option<String>) -> Result<BundleEntry, Error> {
    let mut request =
        BundleEntryRequest::builder().method(HTTPVerb::Post).url(built_resource.type_name.to_string());
    if let Some(query) = condition {
        request = request.if_none_exist(query);
    }
    let b = BundleEntry::builder()
        .full_url(urn(&built_resource.id))
        .resource(built_resource.resource)
        .request(built("Bundle.entry.request", request.build())?);
    built("Bundle.entry", b.build())
}

fn condition(id: Option<&Ident>) -> Option<String> {
    id.map(|i| format!("identifier={}|{}", i.system, i.value))
}

/// Builds the transaction Bundle (Patient, Practitioners, DocumentReference) and returns its JSON.
pub fn document_bundle(mut d: DocumentData) -> Result<Vec<u8>, Error> {
    let mut entries = Vec::new();
    let patient_id = d.patient.id.clone();
    let patient_condition = condition(d.patient.identifiers.first());
    entries.push(Some(entry(patient(std::mem::take(&mut d.patient))?, patient_condition)?));
    let author_ids: Vec<String> = d.authors.iter().map(|a| a.id.clone()).collect();
    let mut seen: Vec<String> = Vec::new();
    let people = std::mem::take(&mut d.authors).into_iter().chain(d.authenticator.clone());
    for p in people {
        if seen.contains(&p.id) {
            continue;
        }
        seen.push(p.id.clone());
        let p_condition = condition(p.identifiers.first());
        entries.push(Some(entry(practitioner(p)?, p_condition)?));
    }
    entries.push(Some(entry(document_reference(d, &patient_id, &author_ids)?, None)?));
    let bundle = built("Bundle", Bundle::builder().r#type(BundleType::Transaction).entry(entries).build())?;
    serde_json::to_vec(&bundle).map_err(|e| Error::Json(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::model::PatientData;

    fn code(system: &str, code: &str) -> Code {
        Code { system: system.into(), code: code.into(), display: None }
    }

    fn minimal() -> DocumentData {
        DocumentData {
            id: "6f1c2a3e-0000-5000-8000-000000000001".into(),
            master_identifier: Ident {
                system: "urn:ietf:rfc:3986".into(),
                value: "urn:oid:1.2.3".into(),
                ..Ident::default()
            },
            type_code: code("http://loinc.org", "11490-0"),
            class_code: code("urn:oid:1.2.250.1.213.1.1.4.1", "11"),
            format_code: code("urn:oid:x", "urn:ihe:iti:xds-sd:pdf:2008"),
            content_type: "text/xml".into(),
            data: b"<ClinicalDocument/>".to_vec(),
            sha1: vec![0; 20],
            patient: PatientData {
                id: "6f1c2a3e-0000-5000-8000-000000000002".into(),
                ..PatientData::default()
            },
            ..DocumentData::default()
        }
    }

    #[test]
    fn a_minimal_document_builds() {
        let json: serde_json::Value = serde_json::from_slice(&document_bundle(minimal()).unwrap()).unwrap();
        assert_eq!(json["type"], "transaction");
        assert_eq!(json["entry"][1]["resource"]["resourceType"], "DocumentReference");
        assert_eq!(json["entry"][1]["resource"]["content"][0]["attachment"]["size"], 19);
    }

    #[test]
    fn invalid_dates_are_errors_naming_the_element() {
        let mut input = minimal();
        input.date = Some("2021-13-45".into());
        assert_eq!(document_bundle(input).unwrap_err().element(), "DocumentReference.date");
        let mut input = minimal();
        input.patient.birth_date = Some("yesterday".into());
        assert_eq!(document_bundle(input).unwrap_err().element(), "Patient.birthDate");
    }
}
