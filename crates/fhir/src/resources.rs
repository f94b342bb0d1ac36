//! Patient, Encounter, Practitioner and MessageHeader from [`crate::model`] data.

use std::str::FromStr;

use fhir_sdk::Date;
use fhir_sdk::r4b::codes;
use fhir_sdk::r4b::resources::{
    Encounter, EncounterHospitalization, EncounterLocation, MessageHeader, MessageHeaderDestination,
    MessageHeaderEvent, MessageHeaderSource, Patient, PatientDeceased, PatientLink, Practitioner, Resource,
};

use crate::datatypes::{
    address, built, code, coding, concept, contact_point, date_time, each, extensions, human_name,
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
    let mut b = Patient::builder()
        .id(id.clone())
        .identifier(each(data.identifiers, identifier)?)
        .name(each(data.names, human_name)?)
        .telecom(each(data.telecom, contact_point)?)
        .address(each(data.addresses, address)?)
        .general_practitioner(each(data.general_practitioner, reference)?)
        .extension(extensions(data.extensions)?);
    if let Some(m) = meta(&data.profiles)? {
        b = b.meta(m);
    }
    if let Some(active) = data.active {
        b = b.active(active);
    }
    if let Some(g) = &data.gender {
        b = b.gender(code::<codes::AdministrativeGender>("Patient.gender", g)?);
    }
    if let Some(d) = data.birth_date {
        let date = Date::from_str(&d).map_err(|e| Error::Value {
            element: "Patient.birthDate",
            value: d.clone(),
            reason: e.to_string(),
        })?;
        b = b.birth_date(date);
    }
    match &data.deceased {
        Deceased::Unknown => {}
        Deceased::Flag(v) => b = b.deceased(PatientDeceased::Boolean(*v)),
        Deceased::At(t) => {
            b = b.deceased(PatientDeceased::DateTime(date_time("Patient.deceasedDateTime", t)?))
        }
    }
    if let Some(org) = data.managing_organization {
        b = b.managing_organization(reference(org)?);
    }
    let links = data
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
    let patient = built("Patient", b.link(links).build())?;
    Ok(wrap(Resource::Patient(patient), "Patient", id))
}

/// Builds an Encounter.
pub fn encounter(data: EncounterData) -> Result<Built, Error> {
    let id = data.id;
    let mut b = Encounter::builder()
        .id(id.clone())
        .identifier(each(data.identifiers, identifier)?)
        .status(code::<codes::EncounterStatus>("Encounter.status", &data.status)?)
        .class(coding(data.class)?)
        .extension(extensions(data.extensions)?);
    if let Some(m) = meta(&data.profiles)? {
        b = b.meta(m);
    }
    if let Some(s) = data.subject {
        b = b.subject(reference(s)?);
    }
    if data.start.is_some() || data.end.is_some() {
        b = b.period(period("Encounter.period", data.start.as_deref(), data.end.as_deref())?);
    }
    if data.admit_source.is_some() || data.discharge_disposition.is_some() {
        let mut h = EncounterHospitalization::builder();
        if let Some(c) = data.admit_source {
            h = h.admit_source(concept(c, data.admit_source_text)?);
        }
        if let Some(c) = data.discharge_disposition {
            h = h.discharge_disposition(concept(c, data.discharge_disposition_text)?);
        }
        b = b.hospitalization(built("Encounter.hospitalization", h.build())?);
    }
    let locations = data
        .locations
        .into_iter()
        .map(|l| {
            let mut lb = EncounterLocation::builder().location(reference(l.location)?);
            if let Some(s) = &l.status {
                lb = lb.status(code::<codes::EncounterLocationStatus>("Encounter.location.status", s)?);
            }
            if l.start.is_some() || l.end.is_some() {
                lb = lb.period(period("Encounter.location.period", l.start.as_deref(), l.end.as_deref())?);
            }
            built("Encounter.location", lb.build()).map(Some)
        })
        .collect::<Result<Vec<_>, Error>>()?;
    b = b.location(locations);
    if let Some(sp) = data.service_provider {
        b = b.service_provider(reference(sp)?);
    }
    if let Some(p) = data.part_of {
        b = b.part_of(reference(p)?);
    }
    let encounter = built("Encounter", b.build())?;
    Ok(wrap(Resource::Encounter(encounter), "Encounter", id))
}

/// Builds a Practitioner.
pub fn practitioner(data: PractitionerData) -> Result<Built, Error> {
    let id = data.id;
    let mut b = Practitioner::builder()
        .id(id.clone())
        .identifier(each(data.identifiers, identifier)?)
        .name(each(data.names, human_name)?)
        .telecom(each(data.telecom, contact_point)?)
        .address(each(data.addresses, address)?);
    if let Some(m) = meta(&data.profiles)? {
        b = b.meta(m);
    }
    let practitioner = built("Practitioner", b.build())?;
    Ok(wrap(Resource::Practitioner(practitioner), "Practitioner", id))
}

/// Builds a MessageHeader.
pub fn message_header(data: HeaderData) -> Result<Built, Error> {
    let id = data.id;
    let mut source = MessageHeaderSource::builder().endpoint(data.source.endpoint);
    if let Some(n) = data.source.name {
        source = source.name(n);
    }
    let destinations = data
        .destinations
        .into_iter()
        .map(|d| {
            let mut db = MessageHeaderDestination::builder().endpoint(d.endpoint);
            if let Some(n) = d.name {
                db = db.name(n);
            }
            built("MessageHeader.destination", db.build()).map(Some)
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let mut b = MessageHeader::builder()
        .id(id.clone())
        .event(MessageHeaderEvent::Coding(coding(data.event)?))
        .source(built("MessageHeader.source", source.build())?)
        .destination(destinations)
        .focus(each(data.focus, reference)?);
    if let Some(s) = data.sender {
        b = b.sender(reference(s)?);
    }
    let header = built("MessageHeader", b.build())?;
    Ok(wrap(Resource::MessageHeader(header), "MessageHeader", id))
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
