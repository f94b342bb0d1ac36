//! Data types (Identifier, HumanName, Reference, Extension…) from [`crate::model`] values, through fhir-sdk
//! builders.

use std::str::FromStr;

use fhir_sdk::r4b::codes;
use fhir_sdk::r4b::types::{
    Address, CodeableConcept, Coding, ContactPoint, Extension, ExtensionValue, HumanName, Identifier, Meta,
    Period, Reference,
};
use fhir_sdk::{BuilderError, DateTime};

use crate::Error;
use crate::model::{Addr, Code, Ext, ExtValue, Ident, Name, Ref, Telecom};

/// Maps a builder error to ours, naming the element.
pub(crate) fn built<T>(element: &'static str, result: Result<T, BuilderError>) -> Result<T, Error> {
    result.map_err(|e| Error::Builder { element, reason: e.to_string() })
}

/// Parses a FHIR code string into one of fhir-sdk's code enums.
pub(crate) fn code<T: FromStr>(element: &'static str, value: &str) -> Result<T, Error> {
    T::from_str(value).map_err(|_| Error::Value {
        element,
        value: value.to_owned(),
        reason: "not a code of the required value set".into(),
    })
}

/// Parses FHIR dateTime text (`2026-07-14T10:25:00+02:00`, `2026-07-14`, `2026`).
pub(crate) fn date_time(element: &'static str, value: &str) -> Result<DateTime, Error> {
    DateTime::from_str(value).map_err(|e| Error::Value {
        element,
        value: value.to_owned(),
        reason: e.to_string(),
    })
}

/// `meta.profile`, or nothing.
pub(crate) fn meta(profiles: &[String]) -> Result<Option<Meta>, Error> {
    if profiles.is_empty() {
        return Ok(None);
    }
    let meta = Meta::builder().profile(profiles.iter().cloned().map(Some).collect()).build();
    built("Meta", meta).map(Some)
}

/// A Coding; an empty system is left out (FHIR has no empty strings).
pub(crate) fn coding(c: Code) -> Result<Coding, Error> {
    let mut b = Coding::builder().code(c.code);
    if !c.system.is_empty() {
        b = b.system(c.system);
    }
    if let Some(display) = c.display {
        b = b.display(display);
    }
    built("Coding", b.build())
}

pub(crate) fn concept(c: Code, text: Option<String>) -> Result<CodeableConcept, Error> {
    let mut b = CodeableConcept::builder().coding(vec![Some(coding(c)?)]);
    if let Some(text) = text {
        b = b.text(text);
    }
    built("CodeableConcept", b.build())
}

pub(crate) fn identifier(i: Ident) -> Result<Identifier, Error> {
    let mut b = Identifier::builder().system(i.system).value(i.value);
    if let Some(u) = &i.use_ {
        b = b.r#use(code::<codes::IdentifierUse>("Identifier.use", u)?);
    }
    if let Some(t) = i.type_ {
        b = b.r#type(concept(t, None)?);
    }
    if let Some(a) = i.assigner {
        b = b.assigner(built("Reference", Reference::builder().display(a).build())?);
    }
    built("Identifier", b.build())
}

pub(crate) fn reference(r: Ref) -> Result<Reference, Error> {
    let mut b = Reference::builder();
    if let Some(v) = r.reference {
        b = b.reference(v);
    }
    if let Some(v) = r.type_ {
        b = b.r#type(v);
    }
    if let Some(v) = r.identifier {
        b = b.identifier(identifier(v)?);
    }
    if let Some(v) = r.display {
        b = b.display(v);
    }
    built("Reference", b.build())
}

pub(crate) fn human_name(n: Name) -> Result<HumanName, Error> {
    let mut b = HumanName::builder();
    if let Some(u) = &n.use_ {
        b = b.r#use(code::<codes::NameUse>("HumanName.use", u)?);
    }
    if let Some(f) = n.family {
        b = b.family(f);
    }
    if !n.given.is_empty() {
        b = b.given(n.given.into_iter().map(Some).collect());
    }
    if let Some(p) = n.prefix {
        b = b.prefix(vec![Some(p)]);
    }
    if let Some(list) = n.birth_list_given {
        b = b.extension(vec![extension(Ext {
            url: "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-birth-list-given-name".into(),
            value: ExtValue::String(list),
        })?]);
    }
    built("HumanName", b.build())
}

pub(crate) fn contact_point(t: Telecom) -> Result<ContactPoint, Error> {
    let mut b = ContactPoint::builder()
        .system(code::<codes::ContactPointSystem>("ContactPoint.system", &t.system)?)
        .value(t.value);
    if let Some(u) = &t.use_ {
        b = b.r#use(code::<codes::ContactPointUse>("ContactPoint.use", u)?);
    }
    built("ContactPoint", b.build())
}

pub(crate) fn address(a: Addr) -> Result<Address, Error> {
    let mut b = Address::builder();
    if let Some(u) = &a.use_ {
        b = b.r#use(code::<codes::AddressUse>("Address.use", u)?);
    }
    if !a.lines.is_empty() {
        b = b.line(a.lines.into_iter().map(Some).collect());
    }
    if let Some(v) = a.city {
        b = b.city(v);
    }
    if let Some(v) = a.postal_code {
        b = b.postal_code(v);
    }
    if let Some(v) = a.country {
        b = b.country(v);
    }
    if let Some(insee) = a.insee_code {
        b = b.extension(vec![extension(Ext {
            url: "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-address-insee-code".into(),
            value: ExtValue::Coding(insee),
        })?]);
    }
    built("Address", b.build())
}

pub(crate) fn period(element: &'static str, start: Option<&str>, end: Option<&str>) -> Result<Period, Error> {
    let mut b = Period::builder();
    if let Some(s) = start {
        b = b.start(date_time(element, s)?);
    }
    if let Some(e) = end {
        b = b.end(date_time(element, e)?);
    }
    built("Period", b.build())
}

pub(crate) fn extension(e: Ext) -> Result<Extension, Error> {
    let b = Extension::builder().url(e.url);
    let b = match e.value {
        ExtValue::String(s) => b.value(ExtensionValue::String(s)),
        ExtValue::Code(s) => b.value(ExtensionValue::Code(s)),
        ExtValue::Boolean(v) => b.value(ExtensionValue::Boolean(v)),
        ExtValue::Coding(c) => b.value(ExtensionValue::Coding(coding(c)?)),
        ExtValue::DateTime(s) => b.value(ExtensionValue::DateTime(date_time("Extension.valueDateTime", &s)?)),
        ExtValue::Identifier(i) => b.value(ExtensionValue::Identifier(identifier(i)?)),
        ExtValue::Address(a) => b.value(ExtensionValue::Address(address(a)?)),
        ExtValue::Nested(children) => b.extension(extensions(children)?),
    };
    built("Extension", b.build())
}

pub(crate) fn extensions(list: Vec<Ext>) -> Result<Vec<Extension>, Error> {
    list.into_iter().map(extension).collect()
}

/// Each item built, wrapped in `Some` (fhir-sdk's list shape).
pub(crate) fn each<T, U>(items: Vec<T>, f: impl Fn(T) -> Result<U, Error>) -> Result<Vec<Option<U>>, Error> {
    items.into_iter().map(|i| f(i).map(Some)).collect()
}
