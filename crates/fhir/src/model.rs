//! Plain input data for the builders: owned strings and small enums, no fhir-sdk types.
//!
//! The mapping engine fills these from a message; the builders of this crate turn them into fhir-sdk typed
//! resources (so a resource that does not match the FHIR model does not compile or fails to build).
//! Codes (`gender`, `status`, `use`…) are FHIR code strings checked against fhir-sdk's code enums when built.

/// A coded value: system, code and optional display.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Code {
    /// The code system URI.
    pub system: String,
    /// The code.
    pub code: String,
    /// The human label, when known.
    pub display: Option<String>,
}

/// A business identifier.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Ident {
    /// `usual`, `official`, `temp`, `secondary`, `old` (FHIR IdentifierUse), when set.
    pub use_: Option<String>,
    /// Identifier type (e.g. v2-0203 `PI`, FR Core `INS-NIR`).
    pub type_: Option<Code>,
    /// The namespace URI (`urn:oid:…`, `https://rpps.esante.gouv.fr`).
    pub system: String,
    /// The value.
    pub value: String,
    /// The assigning organisation's name, when known (Identifier.assigner.display).
    pub assigner: Option<String>,
}

/// A reference: a literal one (`urn:uuid:…`), a logical one (an identifier), or both, and a display.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Ref {
    /// Literal reference (`urn:uuid:…` in a Bundle).
    pub reference: Option<String>,
    /// The resource type of the target (`Location`, `Organization`…), for logical references.
    pub type_: Option<String>,
    /// Logical reference by business identifier.
    pub identifier: Option<Ident>,
    /// Text shown for the target.
    pub display: Option<String>,
}

/// A person name.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Name {
    /// `official` (birth name, type L), `usual` (used name, type D), …
    pub use_: Option<String>,
    /// Family name.
    pub family: Option<String>,
    /// Given names, first one first.
    pub given: Vec<String>,
    /// Prefix (civility, `Dr`).
    pub prefix: Option<String>,
    /// FR Core `birth-list-given-name`: the full list of birth given names (XPN-3).
    pub birth_list_given: Option<String>,
}

/// A phone number or e-mail address.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Telecom {
    /// `phone`, `email`, `fax`, `url`…
    pub system: String,
    /// The number or address.
    pub value: String,
    /// `home`, `work`, `mobile`…
    pub use_: Option<String>,
}

/// A postal address.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Addr {
    /// `home`, `work`, `temp`, `old`…
    pub use_: Option<String>,
    /// Street lines.
    pub lines: Vec<String>,
    /// City.
    pub city: Option<String>,
    /// Postal code.
    pub postal_code: Option<String>,
    /// Country (ISO 3166 code as sent).
    pub country: Option<String>,
    /// FR Core `fr-core-address-insee-code` (INSEE COG code of the commune), as a coding.
    pub insee_code: Option<Code>,
}

/// The value of an extension.
#[derive(Clone, PartialEq)]
pub enum ExtValue {
    /// valueString.
    String(String),
    /// valueCode.
    Code(String),
    /// valueBoolean.
    Boolean(bool),
    /// valueCoding.
    Coding(Code),
    /// valueDateTime (FHIR dateTime text).
    DateTime(String),
    /// valueIdentifier (boxed: keeps every extension small to move).
    Identifier(Box<Ident>),
    /// valueAddress (boxed: keeps every extension small to move).
    Address(Box<Addr>),
    /// No value: nested extensions only.
    Nested(Vec<Ext>),
}

/// An extension.
#[derive(Clone, PartialEq)]
pub struct Ext {
    /// The extension URL (a StructureDefinition canonical, or a sub-extension name).
    pub url: String,
    /// Its value, or nested extensions.
    pub value: ExtValue,
}

/// How a patient's death is known.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Deceased {
    /// Nothing said.
    #[default]
    Unknown,
    /// deceasedBoolean.
    Flag(bool),
    /// deceasedDateTime (FHIR dateTime text).
    At(String),
}

/// A Patient.link.
#[derive(Clone, PartialEq, Eq)]
pub struct Link {
    /// `replaces`, `replaced-by`, `refer`, `seealso`.
    pub type_: String,
    /// The other Patient.
    pub other: Ref,
}

/// Everything a Patient is built from.
#[derive(Clone, PartialEq, Default)]
pub struct PatientData {
    /// Logical id (a UUID).
    pub id: String,
    /// Profiles claimed in `meta.profile`.
    pub profiles: Vec<String>,
    /// Extensions (identity reliability, birth place, French segments…).
    pub extensions: Vec<Ext>,
    /// Identifiers (IPP, INS when qualified).
    pub identifiers: Vec<Ident>,
    /// Active flag.
    pub active: Option<bool>,
    /// Names.
    pub names: Vec<Name>,
    /// Phones and e-mails.
    pub telecom: Vec<Telecom>,
    /// `male`, `female`, `other`, `unknown`.
    pub gender: Option<String>,
    /// FHIR date text (`1979-03-28`, `1979-03`, `1979`).
    pub birth_date: Option<String>,
    /// Death.
    pub deceased: Deceased,
    /// Addresses (the birth place goes in an extension, not here).
    pub addresses: Vec<Addr>,
    /// The médecin traitant.
    pub general_practitioner: Vec<Ref>,
    /// The managing organisation.
    pub managing_organization: Option<Ref>,
    /// Merge links.
    pub links: Vec<Link>,
}

/// One Encounter.location entry.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct LocationEntry {
    /// The location (a logical reference by identifier, with a display).
    pub location: Ref,
    /// `planned`, `active`, `reserved`, `completed`.
    pub status: Option<String>,
    /// Period start (FHIR dateTime text).
    pub start: Option<String>,
    /// Period end.
    pub end: Option<String>,
}

/// Everything an Encounter is built from.
#[derive(Clone, PartialEq, Default)]
pub struct EncounterData {
    /// Logical id (a UUID).
    pub id: String,
    /// Profiles claimed in `meta.profile`.
    pub profiles: Vec<String>,
    /// Extensions (movement, PMSI, consent…).
    pub extensions: Vec<Ext>,
    /// Identifiers (NDA, visit number).
    pub identifiers: Vec<Ident>,
    /// FHIR EncounterStatus code.
    pub status: String,
    /// Class (v3 ActCode).
    pub class: Code,
    /// The patient.
    pub subject: Option<Ref>,
    /// Period start (FHIR dateTime text).
    pub start: Option<String>,
    /// Period end.
    pub end: Option<String>,
    /// hospitalization.admitSource.
    pub admit_source: Option<Code>,
    /// hospitalization.admitSource text (the source code as sent).
    pub admit_source_text: Option<String>,
    /// hospitalization.dischargeDisposition.
    pub discharge_disposition: Option<Code>,
    /// hospitalization.dischargeDisposition text.
    pub discharge_disposition_text: Option<String>,
    /// Locations.
    pub locations: Vec<LocationEntry>,
    /// The organisation (UF) responsible.
    pub service_provider: Option<Ref>,
    /// The venue this encounter is part of.
    pub part_of: Option<Ref>,
}

/// Everything a Practitioner is built from.
#[derive(Clone, PartialEq, Default)]
pub struct PractitionerData {
    /// Logical id (a UUID).
    pub id: String,
    /// Profiles claimed in `meta.profile`.
    pub profiles: Vec<String>,
    /// Identifiers (RPPS, IDNPS).
    pub identifiers: Vec<Ident>,
    /// Names.
    pub names: Vec<Name>,
    /// Phones.
    pub telecom: Vec<Telecom>,
    /// Addresses.
    pub addresses: Vec<Addr>,
}

/// A message endpoint (MessageHeader.source / destination).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Endpoint {
    /// Application name (MSH-3 / MSH-5).
    pub name: Option<String>,
    /// Endpoint URI.
    pub endpoint: String,
}

/// Everything a MessageHeader is built from.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct HeaderData {
    /// Logical id (a UUID).
    pub id: String,
    /// The event (v2-0003 trigger).
    pub event: Code,
    /// The sender.
    pub source: Endpoint,
    /// The receivers.
    pub destinations: Vec<Endpoint>,
    /// The sending organisation (MSH-4), as a logical reference.
    pub sender: Option<Ref>,
    /// The resources the message is about.
    pub focus: Vec<Ref>,
}

/// Everything a document's DocumentReference (MHD / PDSm shape) and its transaction Bundle are built from.
#[derive(Clone, PartialEq, Default)]
pub struct DocumentData {
    /// The DocumentReference id (a UUID).
    pub id: String,
    /// masterIdentifier: the document's unique id (`urn:oid:…` value with system `urn:ietf:rfc:3986`).
    pub master_identifier: Ident,
    /// type: the LOINC document type.
    pub type_code: Code,
    /// category: the XDS classCode.
    pub class_code: Code,
    /// content.format: the XDS formatCode.
    pub format_code: Code,
    /// securityLabel: confidentiality and masking codes.
    pub security_labels: Vec<Code>,
    /// date: the document's creation as a FHIR instant (`2021-04-01T17:10:00+01:00`).
    pub date: Option<String>,
    /// description: the title (also the attachment's title).
    pub description: Option<String>,
    /// context.period start (FHIR dateTime).
    pub start: Option<String>,
    /// context.period end.
    pub end: Option<String>,
    /// context.event.
    pub events: Vec<Code>,
    /// context.facilityType.
    pub facility_type: Option<Code>,
    /// context.practiceSetting.
    pub practice_setting: Option<Code>,
    /// relatesTo replaces: the master identifier of the replaced document.
    pub replaces: Option<Ident>,
    /// content.attachment.contentType (`text/xml`).
    pub content_type: String,
    /// content.attachment.language (`fr-FR`).
    pub language: Option<String>,
    /// content.attachment.data: the document bytes.
    pub data: Vec<u8>,
    /// content.attachment.hash: SHA-1 of the bytes.
    pub sha1: Vec<u8>,
    /// The patient (identifiers already filtered by the identity rule: INS only when qualified).
    pub patient: PatientData,
    /// Authors.
    pub authors: Vec<PractitionerData>,
    /// Legal authenticator.
    pub authenticator: Option<PractitionerData>,
    /// Custodian: a logical reference (type `Organization`, identifier, display).
    pub custodian: Option<Ref>,
}

impl std::fmt::Debug for DocumentData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentData").field("type", &self.type_code.code).finish_non_exhaustive()
    }
}
