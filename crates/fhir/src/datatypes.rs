//! Data types (Identifier, HumanName, Reference, Extension…) from [`crate::model`] values, through fhir-sdk
//! builders: each element is built once with its required elements, then its optional elements are set in
//! place (the models' `DerefMut`), so the typed values are moved once, never copied builder to builder.

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
    let mut meta = built("Meta", Meta::builder().build())?;
    meta.profile = profiles.iter().cloned().map(Some).collect();
    Ok(Some(meta))
}

/// A Coding; an empty system is left out (FHIR has no empty strings).
pub(crate) fn coding(c: Code) -> Result<Coding, Error> {
    let mut coding = built("Coding", Coding::builder().build())?;
    coding.code = Some(c.code);
    if !c.system.is_empty() {
        coding.system = Some(c.system);
    }
    coding.display = c.display;
    Ok(coding)
}

pub(crate) fn concept(c: Code, text: Option<String>) -> Result<CodeableConcept, Error> {
    let mut concept = built("CodeableConcept", CodeableConcept::builder().build())?;
    concept.coding = vec![Some(coding(c)?)];
    concept.text = text;
    Ok(concept)
}

pub(crate) fn identifier(i: Ident) -> Result<Identifier, Error> {
    let mut id = built("Identifier", Identifier::builder().build())?;
    if let Some(u) = &i.use_ {
        id.r#use = Some(code::<codes::IdentifierUse>("Identifier.use", u)?);
    }
    if let Some(t) = i.type_ {
        id.r#type = Some(concept(t, None)?);
    }
    id.system = Some(i.system);
    id.value = Some(i.value);
    if let Some(a) = i.assigner {
        let mut assigner = built("Reference", Reference::builder().build())?;
        assigner.display = Some(a);
        id.assigner = Some(assigner);
    }
    Ok(id)
}

pub(crate) fn reference(r: Ref) -> Result<Reference, Error> {
    let mut reference = built("Reference", Reference::builder().build())?;
    reference.reference = r.reference;
    reference.r#type = r.type_;
    if let Some(v) = r.identifier {
        reference.identifier = Some(identifier(v)?);
    }
    reference.display = r.display;
    Ok(reference)
}

pub(crate) fn human_name(n: Name) -> Result<HumanName, Error> {
    let mut name = built("HumanName", HumanName::builder().build())?;
    if let Some(u) = &n.use_ {
        name.r#use = Some(code::<codes::NameUse>("HumanName.use", u)?);
    }
    name.family = n.family;
    name.given = n.given.into_iter().map(Some).collect();
    if let Some(p) = n.prefix {
        name.prefix = vec![Some(p)];
    }
    if let Some(list) = n.birth_list_given {
        name.extension = vec![extension(Ext {
            url: "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-birth-list-given-name".into(),
            value: ExtValue::String(list),
        })?];
    }
    Ok(name)
}

pub(crate) fn contact_point(t: Telecom) -> Result<ContactPoint, Error> {
    let mut point = built("ContactPoint", ContactPoint::builder().build())?;
    point.system = Some(code::<codes::ContactPointSystem>("ContactPoint.system", &t.system)?);
    point.value = Some(t.value);
    if let Some(u) = &t.use_ {
        point.r#use = Some(code::<codes::ContactPointUse>("ContactPoint.use", u)?);
    }
    Ok(point)
}

pub(crate) fn address(a: Addr) -> Result<Address, Error> {
    let mut address = built("Address", Address::builder().build())?;
    if let Some(u) = &a.use_ {
        address.r#use = Some(code::<codes::AddressUse>("Address.use", u)?);
    }
    address.line = a.lines.into_iter().map(Some).collect();
    address.city = a.city;
    address.postal_code = a.postal_code;
    address.country = a.country;
    if let Some(insee) = a.insee_code {
        address.extension = vec![extension(Ext {
            url: "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-address-insee-code".into(),
            value: ExtValue::Coding(insee),
        })?];
    }
    Ok(address)
}

pub(crate) fn period(element: &'static str, start: Option<&str>, end: Option<&str>) -> Result<Period, Error> {
    let mut period = built("Period", Period::builder().build())?;
    if let Some(s) = start {
        period.start = Some(date_time(element, s)?);
    }
    if let Some(e) = end {
        period.end = Some(date_time(element, e)?);
    }
    Ok(period)
}

pub(crate) fn extension(e: Ext) -> Result<Extension, Error> {
    let mut extension = built("Extension", Extension::builder().url(e.url).build())?;
    match e.value {
        ExtValue::String(s) => extension.value = Some(ExtensionValue::String(s)),
        ExtValue::Code(s) => extension.value = Some(ExtensionValue::Code(s)),
        ExtValue::Boolean(v) => extension.value = Some(ExtensionValue::Boolean(v)),
        ExtValue::Coding(c) => extension.value = Some(ExtensionValue::Coding(coding(c)?)),
        ExtValue::DateTime(s) => {
            let at = date_time("Extension.valueDateTime", &s)?;
            extension.value = Some(ExtensionValue::DateTime(at));
        }
        ExtValue::Identifier(i) => extension.value = Some(ExtensionValue::Identifier(identifier(i)?)),
        ExtValue::Address(a) => extension.value = Some(ExtensionValue::Address(address(a)?)),
        ExtValue::Nested(children) => extension.extension = extensions(children)?,
    }
    Ok(extension)
}

pub(crate) fn extensions(list: Vec<Ext>) -> Result<Vec<Extension>, Error> {
    list.into_iter().map(extension).collect()
}

/// Each item built, wrapped in `Some` (fhir-sdk's list shape).
pub(crate) fn each<T, U>(items: Vec<T>, f: impl Fn(T) -> Result<U, Error>) -> Result<Vec<Option<U>>, Error> {
    items.into_iter().map(|i| f(i).map(Some)).collect()
}
