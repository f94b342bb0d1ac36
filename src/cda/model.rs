//! The values read from a CDA header: plain data, serde-serializable so the bus envelope can carry them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `Debug` that shows only the type name: these values hold patient or practitioner data.
macro_rules! redacted_debug {
    ($($ty:ty),*) => {$(
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($ty), " { .. }"))
            }
        }
    )*};
}

redacted_debug!(InstanceId, Ins, Patient, Person, Organization, Encounter);

/// An HL7 v3 instance identifier (`II`): `root` (an OID) and optional `extension`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceId {
    /// The OID of the issuer (or the whole id when there is no extension).
    pub root: String,
    /// The identifier within `root`; empty when absent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub extension: String,
}

impl InstanceId {
    /// `root^extension` as XDS writes a uniqueId (`root` alone without an extension).
    pub fn to_xds(&self) -> String {
        if self.extension.is_empty() {
            self.root.clone()
        } else {
            format!("{}^{}", self.root, self.extension)
        }
    }
}

/// A coded value (`CD`/`CE`): code, code system OID and display name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Code {
    /// The code.
    pub code: String,
    /// The code system OID; empty when absent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub system: String,
    /// The display name; empty when absent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display: String,
}

/// Which INS matricule an identifier is, from its OID (french-interop.md §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InsKind {
    /// INS-NIR, production (`1.2.250.1.213.1.4.8`).
    Nir,
    /// INS-NIA, temporary matricule (`1.2.250.1.213.1.4.9`).
    Nia,
    /// INS-NIR of a test patient (`1.2.250.1.213.1.4.10`).
    Test,
    /// INS-NIR of a demonstration patient (`1.2.250.1.213.1.4.11`).
    Demo,
}

impl InsKind {
    /// The INS kind of an identifier OID, `None` when the OID is not an INS one.
    pub fn from_oid(oid: &str) -> Option<InsKind> {
        match oid {
            "1.2.250.1.213.1.4.8" => Some(InsKind::Nir),
            "1.2.250.1.213.1.4.9" => Some(InsKind::Nia),
            "1.2.250.1.213.1.4.10" => Some(InsKind::Test),
            "1.2.250.1.213.1.4.11" => Some(InsKind::Demo),
            _ => None,
        }
    }
}

/// An INS matricule with its OID.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ins {
    /// The 15-character matricule (with its key).
    pub value: String,
    /// The OID it was given with.
    pub oid: String,
    /// Which matricule the OID says it is.
    pub kind: InsKind,
}

/// The patient of `recordTarget/patientRole`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Patient {
    /// Every `patientRole/id`, in document order.
    pub ids: Vec<InstanceId>,
    /// The INS among `ids` (NIR preferred to NIA), whatever the identity status.
    pub ins: Option<Ins>,
    /// The first non-INS id: the sender's IPP.
    pub ipp: Option<InstanceId>,
    /// `family qualifier="BR"` (nom de naissance), or the only family name.
    pub birth_family: Option<String>,
    /// `given qualifier="BR"` (premier prénom de naissance), else the first word of the first `given`.
    pub first_given: Option<String>,
    /// The unqualified `given`: the full list of birth given names.
    pub given_names: Option<String>,
    /// `family qualifier="CL"` (nom utilisé).
    pub used_family: Option<String>,
    /// `given qualifier="CL"` (prénom utilisé).
    pub used_given: Option<String>,
    /// `administrativeGenderCode/@code` (`M`, `F`, `U`).
    pub gender: Option<String>,
    /// `birthTime/@value` (`YYYYMMDD`).
    pub birth_time: Option<String>,
    /// `birthplace/place/addr/county`: the INSEE code of the commune (or country) of birth.
    pub birth_place: Option<String>,
}

impl Patient {
    /// True when the identity may carry its INS (identité qualifiée): an INS with a known OID and the four
    /// INS traits — birth family name, first given name, birth date, sex `M` or `F`. A CI-SIS sender only
    /// puts the INS in the document once the identity is qualified; the traits are what a receiver can check.
    pub fn ins_qualified(&self) -> bool {
        crate::identity::cda_traits_complete(
            self.ins.as_ref().map(|ins| ins.value.as_str()),
            self.birth_family.as_deref(),
            self.first_given.as_deref(),
            self.birth_time.as_deref(),
            self.gender.as_deref(),
        )
    }
}

/// An organization: author's, custodian, recipient's.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organization {
    /// Its id (`1.2.250.1.71.4.2.2` + `1`+FINESS for a French structure).
    pub id: Option<InstanceId>,
    /// Its name.
    pub name: Option<String>,
    /// `standardIndustryClassCode`: the practice setting (JDV_J04, e.g. `ETABLISSEMENT`).
    pub practice_setting: Option<Code>,
}

/// A person with a role: author, legal authenticator, recipient, médecin traitant, performer.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// The role id (IDNPS `1.2.250.1.71.4.2.1` / `8`+RPPS for a practitioner).
    pub id: Option<InstanceId>,
    /// The profession or specialty (`code`, TRE_G15 / R38).
    pub specialty: Option<Code>,
    /// Family name.
    pub family: Option<String>,
    /// Given name(s).
    pub given: Option<String>,
    /// Prefix (`Dr`, `M`, `MME`).
    pub prefix: Option<String>,
    /// The organization the person acts for.
    pub organization: Option<Organization>,
    /// `time/@value` of the participation (authoring, signature).
    pub time: Option<String>,
}

impl Person {
    /// The 11-digit RPPS number when the id is an IDNPS of type `8` (RPPS), else `None`.
    pub fn rpps(&self) -> Option<&str> {
        let id = self.id.as_ref()?;
        if id.root != super::IDNPS_OID {
            return None;
        }
        id.extension
            .strip_prefix('8')
            .filter(|rest| rest.len() == 11 && rest.bytes().all(|b| b.is_ascii_digit()))
    }
}

/// `documentationOf/serviceEvent`: the act documented.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEvent {
    /// The act code (HL7 ActCode `IMP`, a LOINC exam code…).
    pub code: Option<Code>,
    /// `effectiveTime/low/@value`.
    pub start: Option<String>,
    /// `effectiveTime/high/@value`.
    pub stop: Option<String>,
}

/// `componentOf/encompassingEncounter`: the stay or visit.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encounter {
    /// Its ids (visit number).
    pub ids: Vec<InstanceId>,
    /// The encounter code (`AMB`, `IMP`…).
    pub code: Option<Code>,
    /// `effectiveTime/low/@value`.
    pub start: Option<String>,
    /// `effectiveTime/high/@value`.
    pub stop: Option<String>,
    /// `location/healthCareFacility/code`: the healthcare facility type (`SA01`…).
    pub facility_type: Option<Code>,
}

/// The body: structured (CDA level 3) or not (level 1, a PDF or a text in base64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Body {
    /// `component/structuredBody`.
    Structured,
    /// `component/nonXMLBody/text`.
    NonXml {
        /// `text/@mediaType` (`application/pdf`, `text/plain`).
        media_type: String,
        /// Size of the base64 text in bytes (whitespace included).
        encoded_size: u64,
    },
}

impl Body {
    /// The CDA level: 3 for a structured body, 1 for a non-XML body.
    pub fn level(&self) -> u8 {
        match self {
            Body::Structured => 3,
            Body::NonXml { .. } => 1,
        }
    }
}

/// What a CI-SIS header says: identity, type, patient, participants, context and body kind.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdaHeader {
    /// `id`: the document's unique id (XDS uniqueId).
    pub id: InstanceId,
    /// `setId`: the id shared by every version of the document.
    pub set_id: Option<InstanceId>,
    /// `versionNumber/@value`.
    pub version: Option<u32>,
    /// `code`: the document type (LOINC, JDV_J07).
    pub code: Code,
    /// `title`.
    pub title: Option<String>,
    /// `effectiveTime/@value`: creation time.
    pub effective_time: Option<String>,
    /// `confidentialityCode` (`N`, `R`, `V`).
    pub confidentiality: Option<Code>,
    /// `languageCode/@code` (`fr-FR`).
    pub language: Option<String>,
    /// Every `templateId/@root` of the document (conformance claims).
    pub template_ids: Vec<String>,
    /// `recordTarget/patientRole`.
    pub patient: Patient,
    /// Every `author/assignedAuthor`.
    pub authors: Vec<Person>,
    /// `custodian/…/representedCustodianOrganization`.
    pub custodian: Option<Organization>,
    /// `legalAuthenticator/assignedEntity`.
    pub legal_authenticator: Option<Person>,
    /// Every `informationRecipient/intendedRecipient`.
    pub recipients: Vec<Person>,
    /// `participant typeCode="INF"` with `functionCode` `PCP`: the médecin traitant.
    pub gp: Option<Person>,
    /// `inFulfillmentOf/order/id`: the orders this document answers.
    pub orders: Vec<InstanceId>,
    /// Every `documentationOf/serviceEvent`.
    pub service_events: Vec<ServiceEvent>,
    /// The practice setting (`standardIndustryClassCode`): from the first service event performer's
    /// organization, else the first one met in the header.
    pub practice_setting: Option<Code>,
    /// `componentOf/encompassingEncounter`.
    pub encounter: Option<Encounter>,
    /// `relatedDocument typeCode="RPLC"/parentDocument/id`: the document this one replaces.
    pub replaces: Option<InstanceId>,
    /// Structured or not.
    pub body: Body,
}

impl fmt::Debug for CdaHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CdaHeader")
            .field("type", &self.code.code)
            .field("level", &self.body.level())
            .field("authors", &self.authors.len())
            .field("replaces", &self.replaces.is_some())
            .finish_non_exhaustive()
    }
}

impl CdaHeader {
    /// The LOINC (or ANS) document type code.
    pub fn type_code(&self) -> &str {
        &self.code.code
    }

    /// The confidentiality code, `N` when absent.
    pub fn confidentiality_code(&self) -> &str {
        self.confidentiality.as_ref().map_or("N", |c| c.code.as_str())
    }

    /// The first service event's start and the last stop, as XDS serviceStartTime / serviceStopTime.
    pub fn service_period(&self) -> (Option<&str>, Option<&str>) {
        let start =
            self.service_events.iter().filter_map(|e| e.start.as_deref()).min_by_key(|s| hl7_sort_key(s));
        let stop =
            self.service_events.iter().filter_map(|e| e.stop.as_deref()).max_by_key(|s| hl7_sort_key(s));
        (start, stop)
    }
}

/// The digits of an HL7 TS before any offset, for ordering times of one document.
fn hl7_sort_key(ts: &str) -> &str {
    ts.split(['+', '-']).next().unwrap_or(ts)
}
