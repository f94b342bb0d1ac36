//! Patient, Encounter, Practitioner and MessageHeader from [`crate::model`] data.
//!
//! Each resource is built once by its fhir-sdk builder with its required elements, then filled in place
//! (the models' `DerefMut`): the large builders are never moved setter after setter.

use fhir_sdk::r4b::codes;
use fhir_sdk::r4b::resources::{
    Encounter, EncounterHospitalization, EncounterLocation, MessageHeader, MessageHeaderDestination,
    MessageHeaderEvent, MessageHeaderSource, Patient, PatientDeceased, PatientLink, Practitioner, Resource,
};

use crate::datatypes::{
    address, built, code, coding, concept, contact_point, date, date_time, each, extensions, human_name,
    identifier, meta, period, reference,
};
use crate::model::{Deceased, EncounterData, HeaderData, PatientData, PractitionerData};
use crate::{Built, Error};

fn wrap(resource: Resource, type_name: &'static str, id: String) -> Built {
    Built { resource, type_name, id }
}

/// Builds a Patient (FR Core shape: identity reliability and birth place are extensions in `data`).
pub fn patient(data: PatientData) -> Result<Built, Error> {
    let id = data.id;
    // Built with nothing set (setters move the whole builder), then filled in place.
    let mut p = built("Patient", Patient::builder().build())?;
    p.id = Some(id.clone());
    p.meta = meta(data.profiles);
    p.extension = extensions(data.extensions)?;
    p.identifier = each(data.identifiers, identifier)?;
    p.active = data.active;
    p.name = each(data.names, human_name)?;
    p.telecom = each(data.telecom, contact_point)?;
    if let Some(g) = &data.gender {
        p.gender = Some(code::<codes::AdministrativeGender>("Patient.gender", g)?);
    }
    if let Some(d) = data.birth_date {
        p.birth_date = Some(date("Patient.birthDate", &d)?);
    }
    p.deceased = match &data.deceased {
        Deceased::Unknown => None,
        Deceased::Flag(v) => Some(PatientDeceased::Boolean(*v)),
        Deceased::At(t) => Some(PatientDeceased::DateTime(date_time("Patient.deceasedDateTime", t)?)),
    };
    p.address = each(data.addresses, address)?;
    p.general_practitioner = each(data.general_practitioner, reference)?;
    if let Some(org) = data.managing_organization {
        p.managing_organization = Some(reference(org)?);
    }
    p.link = data
        .links
        .into_iter()
        .map(|l| {
            let link = PatientLink::builder()
                .other(reference(l.other)?)
                .r#type(code::<codes::LinkType>("Patient.link.type", &l.type_)?)
                .build();
            built("Patient.link", link).map(Some)
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(wrap(Resource::Patient(p), "Patient", id))
}

/// Builds an Encounter.
pub fn encounter(data: EncounterData) -> Result<Built, Error> {
    let id = data.id;
    let status = code::<codes::EncounterStatus>("Encounter.status", &data.status)?;
    let class = coding(data.class);
    let mut e = built("Encounter", Encounter::builder().status(status).class(class).build())?;
    e.id = Some(id.clone());
    e.meta = meta(data.profiles);
    e.extension = extensions(data.extensions)?;
    e.identifier = each(data.identifiers, identifier)?;
    if let Some(s) = data.subject {
        e.subject = Some(reference(s)?);
    }
    if data.start.is_some() || data.end.is_some() {
        e.period = Some(period("Encounter.period", data.start.as_deref(), data.end.as_deref())?);
    }
    if data.admit_source.is_some() || data.discharge_disposition.is_some() {
        let mut h = built("Encounter.hospitalization", EncounterHospitalization::builder().build())?;
        if let Some(c) = data.admit_source {
            h.admit_source = Some(concept(c, data.admit_source_text));
        }
        if let Some(c) = data.discharge_disposition {
            h.discharge_disposition = Some(concept(c, data.discharge_disposition_text));
        }
        e.hospitalization = Some(h);
    }
    e.location = data
        .locations
        .into_iter()
        .map(|l| {
            let location = EncounterLocation::builder().location(reference(l.location)?).build();
            let mut location = built("Encounter.location", location)?;
            if let Some(s) = &l.status {
                let status = code::<codes::EncounterLocationStatus>("Encounter.location.status", s)?;
                location.status = Some(status);
            }
            if l.start.is_some() || l.end.is_some() {
                let when = period("Encounter.location.period", l.start.as_deref(), l.end.as_deref())?;
                location.period = Some(when);
            }
            Ok(Some(location))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    if let Some(sp) = data.service_provider {
        e.service_provider = Some(reference(sp)?);
    }
    if let Some(p) = data.part_of {
        e.part_of = Some(reference(p)?);
    }
    Ok(wrap(Resource::Encounter(e), "Encounter", id))
}

/// Builds a Practitioner.
pub fn practitioner(data: PractitionerData) -> Result<Built, Error> {
    let id = data.id;
    let mut p = built("Practitioner", Practitioner::builder().build())?;
    p.id = Some(id.clone());
    p.meta = meta(data.profiles);
    p.identifier = each(data.identifiers, identifier)?;
    p.name = each(data.names, human_name)?;
    p.telecom = each(data.telecom, contact_point)?;
    p.address = each(data.addresses, address)?;
    Ok(wrap(Resource::Practitioner(p), "Practitioner", id))
}

/// Builds a MessageHeader.
pub fn message_header(data: HeaderData) -> Result<Built, Error> {
    let id = data.id;
    let source = MessageHeaderSource::builder().endpoint(data.source.endpoint).build();
    let mut source = built("MessageHeader.source", source)?;
    source.name = data.source.name;
    let destinations = data
        .destinations
        .into_iter()
        .map(|d| {
            let destination = MessageHeaderDestination::builder().endpoint(d.endpoint).build();
            let mut destination = built("MessageHeader.destination", destination)?;
            destination.name = d.name;
            Ok(Some(destination))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let event = MessageHeaderEvent::Coding(coding(data.event));
    let header = MessageHeader::builder().event(event).source(source).build();
    let mut h = built("MessageHeader", header)?;
    h.id = Some(id.clone());
    h.destination = destinations;
    h.focus = each(data.focus, reference)?;
    if let Some(s) = data.sender {
        h.sender = Some(reference(s)?);
    }
    Ok(wrap(Resource::MessageHeader(h), "MessageHeader", id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Code, Ident, Ref};

    fn patient_data() -> PatientData {
        PatientData {
            id: "p1".into(),
            identifiers: vec![Ident { system: "urn:oid:1.2".into(), value: "42".into(), ..Ident::default() }],
            gender: Some("female".into()),
            birth_date: Some("1979-03".into()),
            deceased: Deceased::At("2026-07-18T03:10:00+02:00".into()),
            ..PatientData::default()
        }
    }

    #[test]
    fn a_patient_serializes_with_its_precision_and_offset() {
        let built = patient(patient_data()).expect("builds");
        let json: serde_json::Value = serde_json::from_slice(&built.to_json().expect("json")).expect("parse");
        assert_eq!(json["resourceType"], "Patient");
        assert_eq!(json["birthDate"], "1979-03");
        assert_eq!(json["deceasedDateTime"], "2026-07-18T03:10:00+02:00");
        assert_eq!(format!("{built:?}"), "Built { type: \"Patient\" }", "Debug shows no field value");
    }

    #[test]
    fn codes_and_dates_outside_the_fhir_model_are_errors() {
        let bad_gender = PatientData { gender: Some("bogus".into()), ..patient_data() };
        assert!(matches!(patient(bad_gender), Err(Error::Value { element: "Patient.gender", .. })));
        let bad_date = PatientData { birth_date: Some("1979-13-01".into()), ..patient_data() };
        assert!(patient(bad_date).is_err());
        let bad_status = EncounterData {
            id: "e1".into(),
            status: "admitted".into(),
            class: Code { system: "s".into(), code: "IMP".into(), display: None },
            subject: Some(Ref { reference: Some("urn:uuid:p1".into()), ..Ref::default() }),
            ..EncounterData::default()
        };
        assert!(matches!(encounter(bad_status), Err(Error::Value { element: "Encounter.status", .. })));
    }
}
