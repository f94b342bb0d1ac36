//! The streaming reader: one pass of quick-xml's `NsReader` over the document, a stack of known element names
//! (interned as [`Tag`], matched with slice patterns), and small builders filled as elements go by.

use std::borrow::Cow;

use base64::Engine;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::name::{Namespace, ResolveResult};
use quick_xml::reader::NsReader;

use super::model::{
    Body, CdaHeader, Code, Encounter, Ins, InsKind, InstanceId, Organization, Patient, Person, ServiceEvent,
};
use super::{ANS_TYPES_OID, CDA_TYPE_ID, CdaError, HL7_V3_NS, LOINC_OID};

/// Element names the header reader looks at; everything else (and any element outside the HL7 v3
/// namespace) is [`Tag::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    TypeId,
    TemplateId,
    Id,
    Code,
    Title,
    EffectiveTime,
    ConfidentialityCode,
    LanguageCode,
    SetId,
    VersionNumber,
    RecordTarget,
    PatientRole,
    Patient,
    Name,
    Family,
    Given,
    Prefix,
    AdministrativeGenderCode,
    BirthTime,
    Birthplace,
    Place,
    Addr,
    County,
    Author,
    Time,
    AssignedAuthor,
    AssignedPerson,
    RepresentedOrganization,
    StandardIndustryClassCode,
    Custodian,
    AssignedCustodian,
    RepresentedCustodianOrganization,
    LegalAuthenticator,
    AssignedEntity,
    InformationRecipient,
    IntendedRecipient,
    ReceivedOrganization,
    Participant,
    FunctionCode,
    AssociatedEntity,
    AssociatedPerson,
    ScopingOrganization,
    InFulfillmentOf,
    Order,
    DocumentationOf,
    ServiceEvent,
    Low,
    High,
    Performer,
    ComponentOf,
    EncompassingEncounter,
    Location,
    HealthCareFacility,
    RelatedDocument,
    ParentDocument,
    Component,
    StructuredBody,
    NonXmlBody,
    Text,
    Other,
}

impl Tag {
    fn of(local: &[u8]) -> Tag {
        match local {
            b"typeId" => Tag::TypeId,
            b"templateId" => Tag::TemplateId,
            b"id" => Tag::Id,
            b"code" => Tag::Code,
            b"title" => Tag::Title,
            b"effectiveTime" => Tag::EffectiveTime,
            b"confidentialityCode" => Tag::ConfidentialityCode,
            b"languageCode" => Tag::LanguageCode,
            b"setId" => Tag::SetId,
            b"versionNumber" => Tag::VersionNumber,
            b"recordTarget" => Tag::RecordTarget,
            b"patientRole" => Tag::PatientRole,
            b"patient" => Tag::Patient,
            b"name" => Tag::Name,
            b"family" => Tag::Family,
            b"given" => Tag::Given,
            b"prefix" => Tag::Prefix,
            b"administrativeGenderCode" => Tag::AdministrativeGenderCode,
            b"birthTime" => Tag::BirthTime,
            b"birthplace" => Tag::Birthplace,
            b"place" => Tag::Place,
            b"addr" => Tag::Addr,
            b"county" => Tag::County,
            b"author" => Tag::Author,
            b"time" => Tag::Time,
            b"assignedAuthor" => Tag::AssignedAuthor,
            b"assignedPerson" => Tag::AssignedPerson,
            b"representedOrganization" => Tag::RepresentedOrganization,
            b"standardIndustryClassCode" => Tag::StandardIndustryClassCode,
            b"custodian" => Tag::Custodian,
            b"assignedCustodian" => Tag::AssignedCustodian,
            b"representedCustodianOrganization" => Tag::RepresentedCustodianOrganization,
            b"legalAuthenticator" => Tag::LegalAuthenticator,
            b"assignedEntity" => Tag::AssignedEntity,
            b"informationRecipient" => Tag::InformationRecipient,
            b"intendedRecipient" => Tag::IntendedRecipient,
            b"receivedOrganization" => Tag::ReceivedOrganization,
            b"participant" => Tag::Participant,
            b"functionCode" => Tag::FunctionCode,
            b"associatedEntity" => Tag::AssociatedEntity,
            b"associatedPerson" => Tag::AssociatedPerson,
            b"scopingOrganization" => Tag::ScopingOrganization,
            b"inFulfillmentOf" => Tag::InFulfillmentOf,
            b"order" => Tag::Order,
            b"documentationOf" => Tag::DocumentationOf,
            b"serviceEvent" => Tag::ServiceEvent,
            b"low" => Tag::Low,
            b"high" => Tag::High,
            b"performer" => Tag::Performer,
            b"componentOf" => Tag::ComponentOf,
            b"encompassingEncounter" => Tag::EncompassingEncounter,
            b"location" => Tag::Location,
            b"healthCareFacility" => Tag::HealthCareFacility,
            b"relatedDocument" => Tag::RelatedDocument,
            b"parentDocument" => Tag::ParentDocument,
            b"component" => Tag::Component,
            b"structuredBody" => Tag::StructuredBody,
            b"nonXMLBody" => Tag::NonXmlBody,
            b"text" => Tag::Text,
            _ => Tag::Other,
        }
    }
}

/// Where the text of the current element goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Title,
    PatientFamily(Qualifier),
    PatientGiven(Qualifier),
    BirthCounty,
    PersonFamily,
    PersonGiven,
    PersonPrefix,
    PersonOrgName,
    CustodianName,
    Body,
}

/// `qualifier` of a patient name part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Qualifier {
    None,
    Birth,
    Used,
}

/// The participation whose person is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Author,
    LegalAuthenticator,
    Recipient,
    Participant { gp: bool },
}

/// The first bytes of a nonXMLBody's base64 text, enough to sniff its content.
const SNIFF_LEN: usize = 24;

#[derive(Default)]
struct Builder {
    type_id: Option<(String, String)>,
    id: Option<InstanceId>,
    set_id: Option<InstanceId>,
    version: Option<u32>,
    code: Option<Code>,
    title: Option<String>,
    effective_time: Option<String>,
    confidentiality: Option<Code>,
    language: Option<String>,
    template_ids: Vec<String>,
    record_target: bool,
    patient: Patient,
    authors: Vec<Person>,
    custodian: Option<Organization>,
    legal_authenticator: Option<Person>,
    recipients: Vec<Person>,
    gp: Option<Person>,
    orders: Vec<InstanceId>,
    service_events: Vec<ServiceEvent>,
    performer_setting: Option<Code>,
    any_setting: Option<Code>,
    encounter: Option<Encounter>,
    related_rplc: bool,
    replaces: Option<InstanceId>,
    body: Option<Body>,
    /// The person of the participation being read, and its role.
    person: Option<(Role, Person)>,
    slot: Option<Slot>,
    text: String,
    /// nonXMLBody: base64 bytes seen, and the first non-whitespace ones.
    body_size: u64,
    body_head: Vec<u8>,
}

/// Reads the CI-SIS header of a CDA R2 document (see the module doc). The input may be UTF-8 (with or without
/// BOM) or any encoding its XML declaration names that encoding_rs knows.
pub fn extract(raw: &[u8]) -> Result<CdaHeader, CdaError> {
    let text = to_utf8(raw)?;
    let mut reader = NsReader::from_reader(text.as_ref());
    reader.config_mut().check_end_names = true;
    let mut b = Builder::default();
    let mut path: Vec<Tag> = Vec::with_capacity(32);
    let mut seen_root = false;
    let mut root_closed = false;
    loop {
        let before = reader.buffer_position();
        let (resolved, event) = reader.read_resolved_event().map_err(|e| xml_error(before, e))?;
        let in_v3 = matches!(resolved, ResolveResult::Bound(Namespace(ns)) if ns == HL7_V3_NS.as_bytes());
        match event {
            Event::Start(e) if !seen_root => {
                check_root(&e, in_v3)?;
                seen_root = true;
            }
            Event::Empty(e) if !seen_root => {
                check_root(&e, in_v3)?;
                seen_root = true;
                root_closed = true;
            }
            Event::Start(e) => {
                if root_closed {
                    return Err(CdaError::at("XML", "content after the root element"));
                }
                let tag = element_tag(&path, in_v3, e.local_name().as_ref());
                path.push(tag);
                b.start(&path, &e)?;
            }
            Event::Empty(e) => {
                if root_closed {
                    return Err(CdaError::at("XML", "content after the root element"));
                }
                let tag = element_tag(&path, in_v3, e.local_name().as_ref());
                path.push(tag);
                b.start(&path, &e)?;
                b.end(&path)?;
                path.pop();
            }
            Event::End(_) => {
                if path.is_empty() {
                    root_closed = true;
                } else {
                    b.end(&path)?;
                    path.pop();
                }
            }
            Event::Text(t) => {
                if let Some(slot) = b.slot {
                    if slot == Slot::Body {
                        b.body_bytes(&t);
                    } else {
                        let s =
                            t.decode().map_err(|e| CdaError::at("XML", format!("bad text encoding: {e}")))?;
                        b.text.push_str(&s);
                    }
                } else if seen_root && !root_closed && t.iter().any(|c| !c.is_ascii_whitespace()) {
                    // Mixed content outside the fields we read (narrative body text): only its encoding matters.
                    t.decode().map_err(|e| CdaError::at("XML", format!("bad text encoding: {e}")))?;
                } else if !seen_root && t.iter().any(|c| !c.is_ascii_whitespace()) {
                    return Err(CdaError::at("document", "not XML: text before the root element"));
                }
            }
            Event::CData(c) => {
                if let Some(slot) = b.slot {
                    let s =
                        c.decode().map_err(|e| CdaError::at("XML", format!("bad CDATA encoding: {e}")))?;
                    if slot == Slot::Body {
                        b.body_bytes(s.as_bytes());
                    } else {
                        b.text.push_str(&s);
                    }
                }
            }
            Event::GeneralRef(r) => {
                let c = resolve_ref(&r)?;
                if b.slot.is_some_and(|s| s != Slot::Body) {
                    b.text.push(c);
                }
            }
            Event::DocType(_) => {
                return Err(CdaError::at(
                    "XML",
                    "DOCTYPE declarations are refused (no DTD, no external entity, no entity expansion)",
                ));
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !seen_root {
        return Err(CdaError::at("document", "not XML: no root element"));
    }
    if !root_closed {
        return Err(CdaError::at("XML", "the document ends before </ClinicalDocument> (truncated?)"));
    }
    b.finish()
}

fn check_root(e: &BytesStart<'_>, in_v3: bool) -> Result<(), CdaError> {
    if in_v3 && e.local_name().as_ref() == b"ClinicalDocument" {
        return Ok(());
    }
    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
    Err(CdaError::at(
        "document",
        format!(
            "not a CDA R2 document: the root element is `{name}`, expected ClinicalDocument in namespace \
             {HL7_V3_NS}"
        ),
    ))
}

/// The tag of a child of `path`: inside a body only the body's own first levels are named.
fn element_tag(path: &[Tag], in_v3: bool, local: &[u8]) -> Tag {
    if !in_v3 {
        return Tag::Other;
    }
    match path {
        [Tag::Component, Tag::NonXmlBody | Tag::StructuredBody, _, ..] => Tag::Other,
        _ => Tag::of(local),
    }
}

fn xml_error(position: u64, e: quick_xml::Error) -> CdaError {
    CdaError::at("XML", format!("not well-formed XML after byte {position}: {e}"))
}

/// Only the five predefined entities and character references exist in a CDA: no DTD declares others.
fn resolve_ref(r: &BytesRef<'_>) -> Result<char, CdaError> {
    if r.is_char_ref() {
        return r
            .resolve_char_ref()
            .ok()
            .flatten()
            .ok_or_else(|| CdaError::at("XML", "invalid character reference"));
    }
    let name: &[u8] = r;
    match name {
        b"amp" => Ok('&'),
        b"lt" => Ok('<'),
        b"gt" => Ok('>'),
        b"quot" => Ok('"'),
        b"apos" => Ok('\''),
        other => Err(CdaError::at(
            "XML",
            format!("undeclared entity `&{};` (entities are not expanded)", String::from_utf8_lossy(other)),
        )),
    }
}

/// The document as UTF-8: a UTF-8 BOM is dropped; another encoding named by the XML declaration (or a
/// UTF-16 BOM) is transcoded.
fn to_utf8(raw: &[u8]) -> Result<Cow<'_, [u8]>, CdaError> {
    if let Some((encoding, bom_len)) = encoding_rs::Encoding::for_bom(raw) {
        let body = raw.get(bom_len..).unwrap_or_default();
        if encoding == encoding_rs::UTF_8 {
            return Ok(Cow::Borrowed(body));
        }
        let (text, _, bad) = encoding.decode(raw);
        if bad {
            return Err(CdaError::at("XML", format!("bytes that are not valid {}", encoding.name())));
        }
        return Ok(Cow::Owned(strip_declared_encoding(text.into_owned()).into_bytes()));
    }
    let Some(label) = declared_encoding(raw) else { return Ok(Cow::Borrowed(raw)) };
    let encoding = encoding_rs::Encoding::for_label(label.as_bytes())
        .ok_or_else(|| CdaError::at("XML", format!("unknown encoding `{label}` in the XML declaration")))?;
    if encoding == encoding_rs::UTF_8 {
        return Ok(Cow::Borrowed(raw));
    }
    let (text, bad) = encoding.decode_without_bom_handling(raw);
    if bad {
        return Err(CdaError::at("XML", format!("bytes that are not valid {}", encoding.name())));
    }
    Ok(Cow::Owned(strip_declared_encoding(text.into_owned()).into_bytes()))
}

/// The document's encoding: a BOM's, else the XML declaration's, else UTF-8 (the XML default).
pub fn encoding_of(raw: &[u8]) -> String {
    if let Some((encoding, _)) = encoding_rs::Encoding::for_bom(raw) {
        return encoding.name().to_string();
    }
    declared_encoding(raw).unwrap_or_else(|| "UTF-8".to_string())
}

/// `encoding="…"` of an ASCII-compatible XML declaration.
fn declared_encoding(raw: &[u8]) -> Option<String> {
    let decl = raw.strip_prefix(b"<?xml")?;
    let end = memchr::memmem::find(decl, b"?>")?;
    let decl = std::str::from_utf8(decl.get(..end)?).ok()?;
    let at = decl.find("encoding")?;
    let rest = decl.get(at + "encoding".len()..)?.trim_start().strip_prefix('=')?.trim_start();
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let rest = rest.get(1..)?;
    Some(rest.get(..rest.find(quote)?)?.to_string())
}

/// After transcoding, the declaration must not claim the old encoding any more.
fn strip_declared_encoding(text: String) -> String {
    if let Some(end) = text.find("?>").filter(|_| text.starts_with("<?xml")) {
        let mut out = String::with_capacity(text.len());
        out.push_str("<?xml version=\"1.0\"");
        out.push_str(&text[end..]);
        out
    } else {
        text
    }
}

fn attr(e: &BytesStart<'_>, name: &str) -> Result<Option<String>, CdaError> {
    match e.try_get_attribute(name) {
        Ok(Some(a)) => {
            let value = a.unescape_value().map_err(|err| {
                CdaError::at("XML", format!("attribute `{name}` of <{}>: {err}", local_name(e)))
            })?;
            let value = value.trim();
            Ok(if value.is_empty() { None } else { Some(value.to_string()) })
        }
        Ok(None) => Ok(None),
        Err(err) => Err(CdaError::at("XML", format!("attributes of <{}>: {err}", local_name(e)))),
    }
}

fn local_name(e: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(e.local_name().as_ref()).into_owned()
}

fn ii(e: &BytesStart<'_>) -> Result<Option<InstanceId>, CdaError> {
    Ok(attr(e, "root")?
        .map(|root| InstanceId { root, extension: attr(e, "extension").ok().flatten().unwrap_or_default() }))
}

fn code(e: &BytesStart<'_>) -> Result<Option<Code>, CdaError> {
    Ok(attr(e, "code")?.map(|code| Code {
        code,
        system: attr(e, "codeSystem").ok().flatten().unwrap_or_default(),
        display: attr(e, "displayName").ok().flatten().unwrap_or_default(),
    }))
}

fn qualifier(e: &BytesStart<'_>) -> Qualifier {
    match attr(e, "qualifier").ok().flatten().as_deref() {
        Some(q) if q.split_whitespace().any(|w| w == "BR") => Qualifier::Birth,
        Some(q) if q.split_whitespace().any(|w| w == "CL" || w == "SP") => Qualifier::Used,
        _ => Qualifier::None,
    }
}

/// What a path under a participation's role entity names.
enum PersonPart {
    Id,
    Specialty,
    Family,
    Given,
    Prefix,
    OrgId,
    OrgName,
    OrgSetting,
}

fn person_part(rest: &[Tag]) -> Option<PersonPart> {
    use Tag::*;
    Some(match rest {
        [Id] => PersonPart::Id,
        [Code] => PersonPart::Specialty,
        [AssignedPerson | AssociatedPerson | InformationRecipient, Name, Family] => PersonPart::Family,
        [AssignedPerson | AssociatedPerson | InformationRecipient, Name, Given] => PersonPart::Given,
        [AssignedPerson | AssociatedPerson | InformationRecipient, Name, Prefix] => PersonPart::Prefix,
        [RepresentedOrganization | ScopingOrganization | ReceivedOrganization, Id] => PersonPart::OrgId,
        [RepresentedOrganization | ScopingOrganization | ReceivedOrganization, Name] => PersonPart::OrgName,
        [RepresentedOrganization | ScopingOrganization | ReceivedOrganization, StandardIndustryClassCode] => {
            PersonPart::OrgSetting
        }
        _ => return None,
    })
}

/// The path under a participation's role entity.
fn participation(path: &[Tag]) -> Option<&[Tag]> {
    use Tag::*;
    match path {
        [Author, AssignedAuthor, rest @ ..]
        | [LegalAuthenticator, AssignedEntity, rest @ ..]
        | [InformationRecipient, IntendedRecipient, rest @ ..]
        | [Participant, AssociatedEntity, rest @ ..] => Some(rest),
        _ => None,
    }
}

impl Builder {
    fn start(&mut self, path: &[Tag], e: &BytesStart<'_>) -> Result<(), CdaError> {
        use Tag::*;
        if matches!(path.last(), Some(StandardIndustryClassCode)) && self.any_setting.is_none() {
            self.any_setting = code(e)?;
        }
        match path {
            [TypeId] => {
                self.type_id =
                    Some((attr(e, "root")?.unwrap_or_default(), attr(e, "extension")?.unwrap_or_default()))
            }
            [TemplateId] => self.template_ids.extend(attr(e, "root")?),
            [Id] => self.id = ii(e)?,
            [Code] => self.code = code(e)?,
            [Title] => self.open(Slot::Title),
            [EffectiveTime] => self.effective_time = attr(e, "value")?,
            [ConfidentialityCode] => self.confidentiality = code(e)?,
            [LanguageCode] => self.language = attr(e, "code")?,
            [SetId] => self.set_id = ii(e)?,
            [VersionNumber] => self.version = attr(e, "value")?.and_then(|v| v.parse().ok()),
            [RecordTarget] => self.record_target = true,
            [RecordTarget, PatientRole, Id] => {
                if let Some(id) = ii(e)? {
                    self.patient.ids.push(id);
                }
            }
            [RecordTarget, PatientRole, Patient, Name, Family] => {
                self.open(Slot::PatientFamily(qualifier(e)))
            }
            [RecordTarget, PatientRole, Patient, Name, Given] => self.open(Slot::PatientGiven(qualifier(e))),
            [RecordTarget, PatientRole, Patient, AdministrativeGenderCode] => {
                self.patient.gender = attr(e, "code")?
            }
            [RecordTarget, PatientRole, Patient, BirthTime] => self.patient.birth_time = attr(e, "value")?,
            [RecordTarget, PatientRole, Patient, Birthplace, Place, Addr, County] => {
                self.open(Slot::BirthCounty)
            }
            [Author] => self.person = Some((Role::Author, Person::default())),
            [LegalAuthenticator] => self.person = Some((Role::LegalAuthenticator, Person::default())),
            [InformationRecipient] => self.person = Some((Role::Recipient, Person::default())),
            [Participant] => {
                self.person = None;
                if attr(e, "typeCode")?.as_deref() == Some("INF") {
                    self.person = Some((Role::Participant { gp: false }, Person::default()));
                }
            }
            [Participant, FunctionCode] => {
                if attr(e, "code")?.as_deref() == Some("PCP")
                    && let Some((Role::Participant { gp }, _)) = &mut self.person
                {
                    *gp = true;
                }
            }
            [Author | LegalAuthenticator, Time] => {
                if let Some((_, person)) = &mut self.person {
                    person.time = attr(e, "value")?;
                }
            }
            [Custodian, AssignedCustodian, RepresentedCustodianOrganization, Id] => {
                self.custodian.get_or_insert_with(Organization::default).id = ii(e)?;
            }
            [Custodian, AssignedCustodian, RepresentedCustodianOrganization, Name] => {
                self.open(Slot::CustodianName)
            }
            [InFulfillmentOf, Order, Id] => self.orders.extend(ii(e)?),
            [DocumentationOf, ServiceEvent] => {
                self.service_events.push(super::model::ServiceEvent::default())
            }
            [DocumentationOf, ServiceEvent, Code] => {
                if let Some(event) = self.service_events.last_mut() {
                    event.code = code(e)?;
                }
            }
            [DocumentationOf, ServiceEvent, EffectiveTime, Low] => {
                if let Some(event) = self.service_events.last_mut() {
                    event.start = attr(e, "value")?;
                }
            }
            [DocumentationOf, ServiceEvent, EffectiveTime, High] => {
                if let Some(event) = self.service_events.last_mut() {
                    event.stop = attr(e, "value")?;
                }
            }
            [
                DocumentationOf,
                ServiceEvent,
                Performer,
                AssignedEntity,
                RepresentedOrganization,
                StandardIndustryClassCode,
            ] => {
                if self.performer_setting.is_none() {
                    self.performer_setting = code(e)?;
                }
            }
            [ComponentOf, EncompassingEncounter] => self.encounter = Some(Encounter::default()),
            [ComponentOf, EncompassingEncounter, rest @ ..] => {
                let encounter = self.encounter.get_or_insert_with(Encounter::default);
                match rest {
                    [Id] => encounter.ids.extend(ii(e)?),
                    [Code] => encounter.code = code(e)?,
                    [EffectiveTime, Low] => encounter.start = attr(e, "value")?,
                    [EffectiveTime, High] => encounter.stop = attr(e, "value")?,
                    [Location, HealthCareFacility, Code] => encounter.facility_type = code(e)?,
                    _ => {}
                }
            }
            [RelatedDocument] => self.related_rplc = attr(e, "typeCode")?.as_deref() == Some("RPLC"),
            [RelatedDocument, ParentDocument, Id] => {
                if self.related_rplc && self.replaces.is_none() {
                    self.replaces = ii(e)?;
                }
            }
            [Component, StructuredBody] => self.body = Some(Body::Structured),
            [Component, NonXmlBody, Text] => {
                let media_type = attr(e, "mediaType")?.unwrap_or_else(|| "text/plain".to_string());
                if let Some(representation) = attr(e, "representation")?
                    && representation != "B64"
                {
                    return Err(CdaError::at(
                        "ClinicalDocument/component/nonXMLBody/text",
                        format!("representation `{representation}`: only B64 is accepted"),
                    ));
                }
                self.body = Some(Body::NonXml { media_type, encoded_size: 0 });
                self.open(Slot::Body);
            }
            _ => {
                if let Some(rest) = participation(path) {
                    self.person_start(rest, e)?;
                }
            }
        }
        Ok(())
    }

    fn person_start(&mut self, rest: &[Tag], e: &BytesStart<'_>) -> Result<(), CdaError> {
        let Some(part) = person_part(rest) else { return Ok(()) };
        let Some((_, person)) = &mut self.person else { return Ok(()) };
        match part {
            PersonPart::Id => {
                if person.id.is_none() {
                    person.id = ii(e)?;
                }
            }
            PersonPart::Specialty => person.specialty = code(e)?,
            PersonPart::OrgId => {
                let org = person.organization.get_or_insert_with(Organization::default);
                if org.id.is_none() {
                    org.id = ii(e)?;
                }
            }
            PersonPart::OrgSetting => {
                person.organization.get_or_insert_with(Organization::default).practice_setting = code(e)?;
            }
            PersonPart::Family => self.open(Slot::PersonFamily),
            PersonPart::Given => self.open(Slot::PersonGiven),
            PersonPart::Prefix => self.open(Slot::PersonPrefix),
            PersonPart::OrgName => self.open(Slot::PersonOrgName),
        }
        Ok(())
    }

    fn open(&mut self, slot: Slot) {
        self.slot = Some(slot);
        self.text.clear();
    }

    fn body_bytes(&mut self, bytes: &[u8]) {
        self.body_size += bytes.len() as u64;
        if self.body_head.len() < SNIFF_LEN {
            for &c in bytes.iter().filter(|c| !c.is_ascii_whitespace()) {
                self.body_head.push(c);
                if self.body_head.len() == SNIFF_LEN {
                    break;
                }
            }
        }
    }

    fn end(&mut self, path: &[Tag]) -> Result<(), CdaError> {
        use Tag::*;
        if let Some(slot) = self.slot.take() {
            self.close(slot)?;
        }
        match path {
            [Author] => {
                if let Some((Role::Author, person)) = self.person.take() {
                    self.authors.push(person);
                }
            }
            [LegalAuthenticator] => {
                if let Some((Role::LegalAuthenticator, person)) = self.person.take() {
                    self.legal_authenticator = Some(person);
                }
            }
            [InformationRecipient] => {
                if let Some((Role::Recipient, person)) = self.person.take() {
                    self.recipients.push(person);
                }
            }
            [Participant] => {
                if let Some((Role::Participant { gp: true }, person)) = self.person.take()
                    && self.gp.is_none()
                {
                    self.gp = Some(person);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn close(&mut self, slot: Slot) -> Result<(), CdaError> {
        let text = self.text.split_whitespace().collect::<Vec<_>>().join(" ");
        self.text.clear();
        let value = if text.is_empty() { None } else { Some(text) };
        match slot {
            Slot::Title => self.title = value,
            Slot::PatientFamily(q) => match q {
                Qualifier::Birth => self.patient.birth_family = value,
                Qualifier::Used => self.patient.used_family = value,
                Qualifier::None => {
                    if self.patient.birth_family.is_none() {
                        self.patient.birth_family = value;
                    }
                }
            },
            Slot::PatientGiven(q) => match q {
                Qualifier::Birth => self.patient.first_given = value,
                Qualifier::Used => self.patient.used_given = value,
                Qualifier::None => {
                    if self.patient.given_names.is_none() {
                        self.patient.given_names = value;
                    }
                }
            },
            Slot::BirthCounty => self.patient.birth_place = value,
            Slot::CustodianName => self.custodian.get_or_insert_with(Organization::default).name = value,
            Slot::PersonFamily | Slot::PersonGiven | Slot::PersonPrefix | Slot::PersonOrgName => {
                if let Some((_, person)) = &mut self.person {
                    let target = match slot {
                        Slot::PersonFamily => &mut person.family,
                        Slot::PersonGiven => &mut person.given,
                        Slot::PersonPrefix => &mut person.prefix,
                        _ => &mut person.organization.get_or_insert_with(Organization::default).name,
                    };
                    if target.is_none() {
                        *target = value;
                    }
                }
            }
            Slot::Body => self.check_body()?,
        }
        Ok(())
    }

    fn check_body(&mut self) -> Result<(), CdaError> {
        let Some(Body::NonXml { media_type, encoded_size }) = &mut self.body else { return Ok(()) };
        *encoded_size = self.body_size;
        let element = "ClinicalDocument/component/nonXMLBody/text";
        if self.body_head.is_empty() {
            return Err(CdaError::at(element, "empty: no base64 document"));
        }
        let usable = self.body_head.len() / 4 * 4;
        let head = base64::engine::general_purpose::STANDARD
            .decode(self.body_head.get(..usable).unwrap_or_default())
            .map_err(|_| CdaError::at(element, "the content is not base64"))?;
        if media_type == "application/pdf" && !head.starts_with(b"%PDF-") {
            return Err(CdaError::at(
                element,
                "mediaType is application/pdf but the base64 content is not a PDF",
            ));
        }
        Ok(())
    }

    fn finish(mut self) -> Result<CdaHeader, CdaError> {
        let (root, extension) = self
            .type_id
            .take()
            .ok_or_else(|| CdaError::at("ClinicalDocument/typeId", "missing: not a CDA R2 document"))?;
        if (root.as_str(), extension.as_str()) != CDA_TYPE_ID {
            return Err(CdaError::at(
                "ClinicalDocument/typeId",
                format!(
                    "root `{root}` extension `{extension}`: a CDA R2 document has {} / {}",
                    CDA_TYPE_ID.0, CDA_TYPE_ID.1
                ),
            ));
        }
        let id = self
            .id
            .take()
            .ok_or_else(|| CdaError::at("ClinicalDocument/id", "missing: the document has no unique id"))?;
        let code = self.code.take().ok_or_else(|| {
            CdaError::at("ClinicalDocument/code", "missing: the document type (LOINC code) is required")
        })?;
        if code.system != LOINC_OID && code.system != ANS_TYPES_OID {
            return Err(CdaError::at(
                "ClinicalDocument/code",
                format!(
                    "code `{}` in code system `{}`: a document type is a LOINC code ({LOINC_OID}) or an ANS type \
                     ({ANS_TYPES_OID})",
                    code.code, code.system
                ),
            ));
        }
        if !self.record_target {
            return Err(CdaError::at(
                "ClinicalDocument/recordTarget",
                "missing: the document names no patient",
            ));
        }
        if self.patient.ids.is_empty() {
            return Err(CdaError::at(
                "ClinicalDocument/recordTarget/patientRole/id",
                "missing: the patient has no identifier (INS or IPP)",
            ));
        }
        let body = self.body.take().ok_or_else(|| {
            CdaError::at("ClinicalDocument/component", "missing: no structuredBody or nonXMLBody")
        })?;
        let mut patient = std::mem::take(&mut self.patient);
        let ins_of = |id: &InstanceId| {
            InsKind::from_oid(&id.root).filter(|_| !id.extension.is_empty()).map(|kind| Ins {
                value: id.extension.clone(),
                oid: id.root.clone(),
                kind,
            })
        };
        patient.ins = patient
            .ids
            .iter()
            .filter_map(ins_of)
            .min_by_key(|ins| if ins.kind == InsKind::Nia { 1 } else { 0 });
        patient.ipp = patient.ids.iter().find(|id| InsKind::from_oid(&id.root).is_none()).cloned();
        if patient.first_given.is_none() {
            patient.first_given =
                patient.given_names.as_deref().and_then(|g| g.split_whitespace().next()).map(str::to_string);
        }
        let practice_setting = self.performer_setting.take().or(self.any_setting.take());
        Ok(CdaHeader {
            id,
            set_id: self.set_id,
            version: self.version,
            code,
            title: self.title,
            effective_time: self.effective_time,
            confidentiality: self.confidentiality,
            language: self.language,
            template_ids: self.template_ids,
            patient,
            authors: self.authors,
            custodian: self.custodian,
            legal_authenticator: self.legal_authenticator,
            recipients: self.recipients,
            gp: self.gp,
            orders: self.orders,
            service_events: self.service_events,
            practice_setting,
            encounter: self.encounter,
            replaces: self.replaces,
            body,
        })
    }
}
