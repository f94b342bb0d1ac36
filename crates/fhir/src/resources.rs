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

fn wrap(resource: Resource, type_name: &'static str, id: &str) -> Built {
    Built { resource, type_name, id: id.to_owned() }
}

/// Builds a Patient (FR Core shape: identity reliability and birth place are extensions in `data`).
pub fn patient(data: &PatientData) -> Result<Built, Error> {
    let mut b = Patient::builder()
        .id(data.id.clone())
        .identifier(each(&data.identifiers, identifier)?)
        .name(each(&data.names, human_name)?)
        .telecom(each(&data.telecom, contact_point)?)
        .address(each(&data.addresses, address)?)
        .general_practitioner(each(&data.general_practitioner, reference)?)
        .extension(extensions(&data.extensions)?);
    if let Some(m) = meta(&data.profiles)? {
        b = b.meta(m);
    }
    if let Some(active) = data.active {
        b = b.active(active);
    }
    if let Some(g) = &data.gender {
        b = b.gender(code::<codes::AdministrativeGender>("Patient.gender", g)?);
    }
    if let Some(d) = &data.birth_date {
        let date = Date::from_str(d).map_err(|e| Error::Value {
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
    if let Some(org) = &data.managing_organization {
        b = b.managing_organization(reference(org)?);
    }
    let links = data
        .links
        .iter()
        .map(|l| {
            let link = PatientLink::builder()
                .other(reference(&l.other)?)
                .r#type(code::<codes::LinkType>("Patient.link.type", &l.type_)?)
                .build();
            built("Patient.link", link).map(Some)
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let patient = built("Patient", b.link(links).build())?;
    Ok(wrap(Resource::Patient(patient), "Patient", &data.id))
}

/// Builds an Encounter.
pub fn encounter(data: &EncounterData) -> Result<Built, Error> {
    let mut b = Encounter::builder()
        .id(data.id.clone())
        .identifier(each(&data.identifiers, identifier)?)
        .status(code::<codes::EncounterStatus>("Encounter.status", &data.status)?)
        .class(coding(&data.class)?)
        .extension(extensions(&data.extensions)?);
    if let Some(m) = meta(&data.profiles)? {
        b = b.meta(m);
    }
    if let Some(s) = &data.subject {
        b = b.subject(reference(s)?);
    }
    if data.start.is_some() || data.end.is_some() {
        b = b.period(period("Encounter.period", data.start.as_deref(), data.end.as_deref())?);
    }
    if data.admit_source.is_some() || data.discharge_disposition.is_some() {
        let mut h = EncounterHospitalization::builder();
        if let Some(c) = &data.admit_source {
            h = h.admit_source(concept(c, data.admit_source_text.as_ref())?);
        }
        if let Some(c) = &data.discharge_disposition {
            h = h.discharge_disposition(concept(c, data.discharge_disposition_text.as_ref())?);
        }
        b = b.hospitalization(built("Encounter.hospitalization", h.build())?);
    }
    let locations = data
        .locations
        .iter()
        .map(|l| {
            let mut lb = EncounterLocation::builder().location(reference(&l.location)?);
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
    if let Some(sp) = &data.service_provider {
        b = b.service_provider(reference(sp)?);
    }
    if let Some(p) = &data.part_of {
        b = b.part_of(reference(p)?);
    }
    let encounter = built("Encounter", b.build())?;
    Ok(wrap(Resource::Encounter(encounter), "Encounter", &data.id))
}

/// Builds a Practitioner.
pub fn practitioner(data: &PractitionerData) -> Result<Built, Error> {
    let mut b = Practitioner::builder()
        .id(data.id.clone())
        .identifier(each(&data.identifiers, identifier)?)
        .name(each(&data.names, human_name)?)
        .telecom(each(&data.telecom, contact_point)?)
        .address(each(&data.addresses, address)?);
    if let Some(m) = meta(&data.profiles)? {
        b = b.meta(m);
    }
    let practitioner = built("Practitioner", b.build())?;
    Ok(wrap(Resource::Practitioner(practitioner), "Practitioner", &data.id))
}

/// Builds a MessageHeader.
pub fn message_header(data: &HeaderData) -> Result<Built, Error> {
    let mut source = MessageHeaderSource::builder().endpoint(data.source.endpoint.clone());
    if let Some(n) = &data.source.name {
        source = source.name(n.clone());
    }
    let destinations = data
        .destinations
        .iter()
        .map(|d| {
            let mut db = MessageHeaderDestination::builder().endpoint(d.endpoint.clone());
            if let Some(n) = &d.name {
                db = db.name(n.clone());
            }
            built("MessageHeader.destination", db.build()).map(Some)
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let mut b = MessageHeader::builder()
        .id(data.id.clone())
        .event(MessageHeaderEvent::Coding(coding(&data.event)?))
        .source(built("MessageHeader.source", source.build())?)
        .destination(destinations)
        .focus(each(&data.focus, reference)?);
    if let Some(s) = &data.sender {
        b = b.sender(reference(s)?);
    }
    let header = built("MessageHeader", b.build())?;
    Ok(wrap(Resource::MessageHeader(header), "MessageHeader", &data.id))
}
