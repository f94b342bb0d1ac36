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
    identifier, meta, optional_period, reference,
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

/// Builds an Encounter (its locations are the model's struct itself, every element named: no builder to move).
pub fn encounter(data: EncounterData) -> Result<Built, Error> {
    let id = data.id;
    let status = code::<codes::EncounterStatus>("Encounter.status", &data.status)?;
    let when = optional_period("Encounter.period", data.start.as_deref(), data.end.as_deref())?;
    let hospitalization = if data.admit_source.is_some() || data.discharge_disposition.is_some() {
        let mut h = built("Encounter.hospitalization", EncounterHospitalization::builder().build())?;
        h.admit_source = data.admit_source.map(|c| concept(c, data.admit_source_text));
        h.discharge_disposition =
            data.discharge_disposition.map(|c| concept(c, data.discharge_disposition_text));
        Some(h)
    } else {
        None
    };
    let location = data
        .locations
        .into_iter()
        .map(|l| {
            let status = match &l.status {
                Some(s) => Some(code::<codes::EncounterLocationStatus>("Encounter.location.status", s)?),
                None => None,
            };
            let when = optional_period("Encounter.location.period", l.start.as_deref(), l.end.as_deref())?;
            Ok(Some(EncounterLocation {
                id: None,
                extension: Vec::new(),
                modifier_extension: Vec::new(),
                location: reference(l.location)?,
                location_ext: None,
                status,
                status_ext: None,
                physical_type: None,
                physical_type_ext: None,
                period: when,
                period_ext: None,
            }))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let class = coding(data.class);
    let mut e = built("Encounter", Encounter::builder().status(status).class(class).build())?;
    e.id = Some(id.clone());
    e.meta = meta(data.profiles);
    e.extension = extensions(data.extensions)?;
    e.identifier = each(data.identifiers, identifier)?;
    e.subject = data.subject.map(reference).transpose()?;
    e.period = when;
    e.hospitalization = hospitalization;
    e.location = location;
    e.service_provider = data.service_provider.map(reference).transpose()?;
    e.part_of = data.part_of.map(reference).transpose()?;
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

/// Builds a MessageHeader (its source and destinations are the model's structs themselves, as [`encounter`]'s
/// locations).
pub fn message_header(data: HeaderData) -> Result<Built, Error> {
    let id = data.id;
    let destination = data
        .destinations
        .into_iter()
        .map(|d| {
            Some(MessageHeaderDestination {
                id: None,
                extension: Vec::new(),
                modifier_extension: Vec::new(),
                name: d.name,
                name_ext: None,
                target: None,
                target_ext: None,
                endpoint: d.endpoint,
                endpoint_ext: None,
                receiver: None,
                receiver_ext: None,
            })
        })
        .collect();
    let source = MessageHeaderSource {
        id: None,
        extension: Vec::new(),
        modifier_extension: Vec::new(),
        name: data.source.name,
        name_ext: None,
        software: None,
        software_ext: None,
        version: None,
        version_ext: None,
        contact: None,
        contact_ext: None,
        endpoint: data.source.endpoint,
        endpoint_ext: None,
    };
    let event = MessageHeaderEvent::Coding(coding(data.event));
    let mut h = built("MessageHeader", MessageHeader::builder().event(event).source(source).build())?;
    h.id = Some(id.clone());
    h.destination = destination;
    h.focus = each(data.focus, reference)?;
    h.sender = data.sender.map(reference).transpose()?;
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
