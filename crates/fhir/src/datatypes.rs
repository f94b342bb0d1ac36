//! Data types (Identifier, HumanName, Reference, Extension…) from [`crate::model`] values, as fhir-sdk's
//! typed structs: each element is written once as the model's struct with every element named (these types
//! have no required element a builder would check), so the typed values are moved once, never copied
//! builder to builder. Codes go through fhir-sdk's code enums, dates through its date types.

use std::str::FromStr;

use fhir_sdk::r4b::codes;
use fhir_sdk::r4b::types::{
    Address, AddressInner, CodeableConcept, CodeableConceptInner, Coding, CodingInner, ContactPoint,
    ContactPointInner, Extension, ExtensionInner, ExtensionValue, HumanName, HumanNameInner, Identifier,
    IdentifierInner, Meta, MetaInner, Period, PeriodInner, Reference, ReferenceInner,
};
use fhir_sdk::{BuilderError, Date, DateTime, Instant, time};

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
    if let Some(quick) = quick_date_time(value) {
        return Ok(quick);
    }
    DateTime::from_str(value).map_err(|e| Error::Value {
        element,
        value: value.to_owned(),
        reason: e.to_string(),
    })
}

/// Parses a FHIR instant (`2026-07-14T10:25:00+02:00`).
pub(crate) fn instant(element: &'static str, value: &str) -> Result<Instant, Error> {
    if let Some(DateTime::DateTime(quick)) = quick_date_time(value) {
        return Ok(quick);
    }
    Instant::from_str(value).map_err(|e| Error::Value {
        element,
        value: value.to_owned(),
        reason: e.to_string(),
    })
}

/// Parses FHIR date text (`1979-03-28`, `1979-03`, `1979`).
pub(crate) fn date(element: &'static str, value: &str) -> Result<Date, Error> {
    if let Some(day) = quick_date(value.as_bytes()) {
        return Ok(Date::Date(day));
    }
    Date::from_str(value).map_err(|e| Error::Value {
        element,
        value: value.to_owned(),
        reason: e.to_string(),
    })
}

/// The two shapes the mapping writes, read digit by digit into the same values fhir-sdk's parsers give
/// (its RFC 3339 and format-description parsers cost more than the rest of a date's building):
/// `YYYY-MM-DD` and `YYYY-MM-DDThh:mm:ss±hh:mm`. `None` for anything else, which the full parsers read.
fn quick_date_time(value: &str) -> Option<DateTime> {
    let b = value.as_bytes();
    match b.len() {
        10 => quick_date(b).map(|d| DateTime::Date(Date::Date(d))),
        25 => {
            let at = |i: usize| b.get(i).copied();
            let seps = [(10, b'T'), (13, b':'), (16, b':'), (22, b':')];
            if seps.iter().any(|&(i, c)| at(i) != Some(c)) {
                return None;
            }
            let day = quick_date(b.get(..10)?)?;
            let clock = time::Time::from_hms(digits(b, 11)?, digits(b, 14)?, digits(b, 17)?).ok()?;
            let sign = match at(19)? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (hours, minutes) = (digits(b, 20)?, digits(b, 23)?);
            if hours > 23 || minutes > 59 || (sign < 0 && hours == 0 && minutes == 0) {
                return None;
            }
            let offset = time::UtcOffset::from_hms(sign * hours as i8, sign * minutes as i8, 0).ok()?;
            Some(DateTime::DateTime(Instant(time::PrimitiveDateTime::new(day, clock).assume_offset(offset))))
        }
        _ => None,
    }
}

/// `YYYY-MM-DD` as a calendar date; `None` when the shape differs or the date does not exist.
fn quick_date(b: &[u8]) -> Option<time::Date> {
    if b.len() != 10 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let year = i32::from(digits(b, 0)?) * 100 + i32::from(digits(b, 2)?);
    let month = time::Month::try_from(digits(b, 5)?).ok()?;
    time::Date::from_calendar_date(year, month, digits(b, 8)?).ok()
}

/// The two ASCII digits at `at`, as a number.
fn digits(b: &[u8], at: usize) -> Option<u8> {
    match b.get(at..at + 2)? {
        &[t @ b'0'..=b'9', u @ b'0'..=b'9'] => Some((t - b'0') * 10 + (u - b'0')),
        _ => None,
    }
}

/// `meta.profile`, or nothing.
pub(crate) fn meta(profiles: Vec<String>) -> Option<Meta> {
    if profiles.is_empty() {
        return None;
    }
    Some(Meta::from(MetaInner {
        id: None,
        extension: Vec::new(),
        version_id: None,
        version_id_ext: None,
        last_updated: None,
        last_updated_ext: None,
        source: None,
        source_ext: None,
        profile: profiles.into_iter().map(Some).collect(),
        profile_ext: Vec::new(),
        security: Vec::new(),
        security_ext: Vec::new(),
        tag: Vec::new(),
        tag_ext: Vec::new(),
    }))
}

// The data types below are the models' structs themselves, every element named (the types' required
// elements are all optional, so nothing is left for a builder to check): a builder costs a zeroed builder
// and a move per setter, more than the values for these small, numerous elements.

/// A Coding; an empty system is left out (FHIR has no empty strings).
pub(crate) fn coding(c: Code) -> Coding {
    Coding::from(CodingInner {
        id: None,
        extension: Vec::new(),
        system: (!c.system.is_empty()).then_some(c.system),
        system_ext: None,
        version: None,
        version_ext: None,
        code: Some(c.code),
        code_ext: None,
        display: c.display,
        display_ext: None,
        user_selected: None,
        user_selected_ext: None,
    })
}

pub(crate) fn concept(c: Code, text: Option<String>) -> CodeableConcept {
    CodeableConcept::from(CodeableConceptInner {
        id: None,
        extension: Vec::new(),
        coding: vec![Some(coding(c))],
        coding_ext: Vec::new(),
        text,
        text_ext: None,
    })
}

pub(crate) fn identifier(i: Ident) -> Result<Identifier, Error> {
    let r#use = match &i.use_ {
        Some(u) => Some(code::<codes::IdentifierUse>("Identifier.use", u)?),
        None => None,
    };
    let assigner =
        i.assigner.map(|a| Ref { display: Some(a), ..Ref::default() }).map(reference).transpose()?;
    Ok(Identifier::from(IdentifierInner {
        id: None,
        extension: Vec::new(),
        r#use,
        r#use_ext: None,
        r#type: i.type_.map(|t| concept(t, None)),
        r#type_ext: None,
        system: Some(i.system),
        system_ext: None,
        value: Some(i.value),
        value_ext: None,
        period: None,
        period_ext: None,
        assigner,
        assigner_ext: None,
    }))
}

pub(crate) fn reference(r: Ref) -> Result<Reference, Error> {
    Ok(Reference::from(ReferenceInner {
        id: None,
        extension: Vec::new(),
        reference: r.reference,
        reference_ext: None,
        r#type: r.type_,
        r#type_ext: None,
        identifier: r.identifier.map(identifier).transpose()?,
        identifier_ext: None,
        display: r.display,
        display_ext: None,
    }))
}

pub(crate) fn human_name(n: Name) -> Result<HumanName, Error> {
    let r#use = match &n.use_ {
        Some(u) => Some(code::<codes::NameUse>("HumanName.use", u)?),
        None => None,
    };
    let extension = match n.birth_list_given {
        Some(list) => vec![extension(Ext {
            url: "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-birth-list-given-name".into(),
            value: ExtValue::String(list),
        })?],
        None => Vec::new(),
    };
    Ok(HumanName::from(HumanNameInner {
        id: None,
        extension,
        r#use,
        r#use_ext: None,
        text: None,
        text_ext: None,
        family: n.family,
        family_ext: None,
        given: n.given.into_iter().map(Some).collect(),
        given_ext: Vec::new(),
        prefix: n.prefix.map(Some).into_iter().collect(),
        prefix_ext: Vec::new(),
        suffix: Vec::new(),
        suffix_ext: Vec::new(),
        period: None,
        period_ext: None,
    }))
}

pub(crate) fn contact_point(t: Telecom) -> Result<ContactPoint, Error> {
    let system = code::<codes::ContactPointSystem>("ContactPoint.system", &t.system)?;
    let r#use = match &t.use_ {
        Some(u) => Some(code::<codes::ContactPointUse>("ContactPoint.use", u)?),
        None => None,
    };
    Ok(ContactPoint::from(ContactPointInner {
        id: None,
        extension: Vec::new(),
        system: Some(system),
        system_ext: None,
        value: Some(t.value),
        value_ext: None,
        r#use,
        r#use_ext: None,
        rank: None,
        rank_ext: None,
        period: None,
        period_ext: None,
    }))
}

pub(crate) fn address(a: Addr) -> Result<Address, Error> {
    let r#use = match &a.use_ {
        Some(u) => Some(code::<codes::AddressUse>("Address.use", u)?),
        None => None,
    };
    let extension = match a.insee_code {
        Some(insee) => vec![extension(Ext {
            url: "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-address-insee-code".into(),
            value: ExtValue::Coding(insee),
        })?],
        None => Vec::new(),
    };
    Ok(Address::from(AddressInner {
        id: None,
        extension,
        r#use,
        r#use_ext: None,
        r#type: None,
        r#type_ext: None,
        text: None,
        text_ext: None,
        line: a.lines.into_iter().map(Some).collect(),
        line_ext: Vec::new(),
        city: a.city,
        city_ext: None,
        district: None,
        district_ext: None,
        state: None,
        state_ext: None,
        postal_code: a.postal_code,
        postal_code_ext: None,
        country: a.country,
        country_ext: None,
        period: None,
        period_ext: None,
    }))
}

pub(crate) fn period(element: &'static str, start: Option<&str>, end: Option<&str>) -> Result<Period, Error> {
    Ok(Period::from(PeriodInner {
        id: None,
        extension: Vec::new(),
        start: start.map(|s| date_time(element, s)).transpose()?,
        start_ext: None,
        end: end.map(|e| date_time(element, e)).transpose()?,
        end_ext: None,
    }))
}

/// [`period`], or nothing when neither end is known.
pub(crate) fn optional_period(
    element: &'static str,
    start: Option<&str>,
    end: Option<&str>,
) -> Result<Option<Period>, Error> {
    match (start, end) {
        (None, None) => Ok(None),
        (start, end) => period(element, start, end).map(Some),
    }
}

pub(crate) fn extension(e: Ext) -> Result<Extension, Error> {
    let (value, children) = match e.value {
        ExtValue::String(s) => (Some(ExtensionValue::String(s)), Vec::new()),
        ExtValue::Code(s) => (Some(ExtensionValue::Code(s)), Vec::new()),
        ExtValue::Boolean(v) => (Some(ExtensionValue::Boolean(v)), Vec::new()),
        ExtValue::Coding(c) => (Some(ExtensionValue::Coding(coding(c))), Vec::new()),
        ExtValue::DateTime(s) => {
            (Some(ExtensionValue::DateTime(date_time("Extension.valueDateTime", &s)?)), Vec::new())
        }
        ExtValue::Identifier(i) => (Some(ExtensionValue::Identifier(identifier(*i)?)), Vec::new()),
        ExtValue::Address(a) => (Some(ExtensionValue::Address(address(*a)?)), Vec::new()),
        ExtValue::Nested(children) => (None, extensions(children)?),
    };
    // The model's struct itself (every element named, `url` required by the type): Extensions are the most
    // numerous element of a Bundle, and their builder costs more than the value.
    Ok(Extension::from(ExtensionInner { id: None, extension: children, url: e.url, value, value_ext: None }))
}

pub(crate) fn extensions(list: Vec<Ext>) -> Result<Vec<Extension>, Error> {
    list.into_iter().map(extension).collect()
}

/// Each item built, wrapped in `Some` (fhir-sdk's list shape).
pub(crate) fn each<T, U>(items: Vec<T>, f: impl Fn(T) -> Result<U, Error>) -> Result<Vec<Option<U>>, Error> {
    items.into_iter().map(|i| f(i).map(Some)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quick_parsers_give_what_fhir_sdk_parses() {
        for text in [
            "2026-07-14T10:25:00+02:00",
            "2026-01-31T23:59:59-03:30",
            "1979-03-28",
            "2024-02-29",
            "2026-11-22T14:30:15+00:00",
        ] {
            let quick = quick_date_time(text).unwrap_or_else(|| panic!("{text}: quick path taken"));
            assert_eq!(Some(quick), DateTime::from_str(text).ok(), "{text}");
        }
        // Shapes or values the quick path leaves to fhir-sdk (which accepts or refuses them itself).
        for text in [
            "2026-07-14T10:25:00.123+02:00",
            "2026-07-14T10:25:00Z",
            "2026-07",
            "2026",
            "2023-02-29",
            "2026-13-01",
            "2026-07-14T24:00:00+02:00",
            "2026-07-14T10:25:00+24:00",
            "2026-07-14T10:25:00*02:00",
            "2026-07-14 10:25:00+02:00",
            "2026-11-22T14:30:15-00:00",
        ] {
            assert_eq!(quick_date_time(text), None, "{text}");
        }
        assert!(date_time("e", "2023-02-29").is_err());
        assert_eq!(date("e", "1979-03-28").ok(), Date::from_str("1979-03-28").ok());
        let at = "2026-07-14T10:25:00+02:00";
        assert_eq!(instant("e", at).ok(), Instant::from_str(at).ok());
    }
}
