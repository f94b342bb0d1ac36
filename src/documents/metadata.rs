//! XDS metadata (document entry + submission set, french-interop.md §5.1) from a CDA header and the tables.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use super::tables::XdsTables;
use super::time;
use crate::cda::{Body, CdaHeader, Code, Organization, Person};
use crate::facts::MapFailure;
use crate::identity;

/// An XDS coded value: code, coding scheme (OID) and display name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdsCode {
    /// The code.
    pub code: String,
    /// The coding scheme OID.
    pub scheme: String,
    /// The display name (may be empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display: String,
}

impl XdsCode {
    fn new(code: &str, scheme: &str, display: &str) -> XdsCode {
        XdsCode { code: code.into(), scheme: scheme.into(), display: display.into() }
    }

    fn from_cda(code: &Code, default_scheme: &str) -> XdsCode {
        let scheme = if code.system.is_empty() { default_scheme } else { code.system.as_str() };
        XdsCode::new(&code.code, scheme, &code.display)
    }
}

/// An XDS author: person (XCN), institution (XON), role and specialty.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdsAuthor {
    /// `authorPerson` as XCN: `<IDNPS>^<family>^<given>^^^<prefix>^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS`.
    pub person: String,
    /// `authorInstitution` as XON: `<name>^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^<id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub institution: Option<String>,
    /// `authorSpecialty` as `code^display^system`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specialty: Option<String>,
}

/// The XDS DocumentEntry of one document.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentEntry {
    /// `uniqueId`: the CDA `id` (`root` or `root^extension`).
    pub unique_id: String,
    /// `entryUUID`: a deterministic `urn:uuid:` from the uniqueId (UUID v5).
    pub entry_uuid: String,
    /// `patientId`: the INS as `<INS>^^^&<OID>&ISO^NH`, only when the identity is qualified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
    /// `sourcePatientId`: the IPP as `<IPP>^^^&<OID>&ISO^PI`, or the INS when there is no IPP.
    pub source_patient_id: String,
    /// `sourcePatientInfo`: PID-5, PID-7, PID-8 style lines from the CDA patient.
    pub source_patient_info: Vec<String>,
    /// `classCode`.
    pub class_code: XdsCode,
    /// `typeCode`: the CDA `code`.
    pub type_code: XdsCode,
    /// `formatCode`: from the body level and the type (level 3) or the media type (level 1).
    pub format_code: XdsCode,
    /// `confidentialityCode`: the CDA code, then the masking codes set by the flags.
    pub confidentiality: Vec<XdsCode>,
    /// `healthcareFacilityTypeCode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcare_facility_type: Option<XdsCode>,
    /// `practiceSettingCode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub practice_setting: Option<XdsCode>,
    /// `eventCodeList`: the service event codes.
    pub event_codes: Vec<XdsCode>,
    /// `creationTime` (UTC `YYYYMMDDhhmmss`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<String>,
    /// `serviceStartTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_start_time: Option<String>,
    /// `serviceStopTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_stop_time: Option<String>,
    /// `languageCode`.
    pub language: String,
    /// `mimeType`: `text/xml`.
    pub mime_type: String,
    /// `title`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// `hash`: SHA-1 of the document bytes, lower-case hex (as XDS wants).
    pub hash: String,
    /// `size` in bytes.
    pub size: u64,
    /// `author` (one per CDA author).
    pub authors: Vec<XdsAuthor>,
    /// `legalAuthenticator` as XCN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legal_authenticator: Option<String>,
    /// The uniqueId of the document this one replaces (an RPLC association in the submission).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

/// The XDS SubmissionSet around the document (ids and time are set by the sink at submission).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmissionSet {
    /// `patientId`: as in the entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
    /// `contentTypeCode`.
    pub content_type: XdsCode,
    /// `author`: the sender (PRT SB of an ORU^R01), else the document's first author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<XdsAuthor>,
    /// `title`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// Everything the DMP and MSSanté sinks need besides the document bytes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentMetadata {
    /// The document entry.
    pub entry: DocumentEntry,
    /// The submission set.
    pub submission_set: SubmissionSet,
    /// CDA level: 1 (nonXMLBody) or 3 (structured).
    pub level: u8,
    /// True when the patient's identity is not qualified: the document waits for identity review and is
    /// never sent to the DMP with a provisional identity (`patient_id` is then absent).
    pub identity_review: bool,
}

impl fmt::Debug for DocumentMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DocumentMetadata")
            .field("type", &self.entry.type_code.code)
            .field("class", &self.entry.class_code.code)
            .field("format", &self.entry.format_code.code)
            .field("level", &self.level)
            .field("identity_review", &self.identity_review)
            .finish_non_exhaustive()
    }
}

/// What an ORU^R01 adds to the CDA: masking flags, the encounter class, the sender.
#[derive(Debug, Clone, Default)]
pub struct Context<'a> {
    /// Flags set to `Y` (upper case).
    pub flags: &'a [String],
    /// PV1-2 of the message (I, O, E…).
    pub patient_class: Option<&'a str>,
    /// The PRT SB participant, as an XDS author.
    pub sender: Option<XdsAuthor>,
    /// The INS qualification of the message (PID-32 = VALI); `None` for a bare CDA (the header decides).
    pub ins_qualified: Option<bool>,
}

/// The SHA-1 of `bytes` as lower-case hex.
pub fn sha1_hex(bytes: &[u8]) -> String {
    Sha1::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Namespace of Relais' deterministic ids (UUID v5 over a document uniqueId).
pub const ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x8f1b_6c2e_4d7a_5b39_9e21_0c4f_7a6d_3e55);

/// A deterministic `urn:uuid:` for `name` (UUID v5 in Relais' namespace).
pub fn urn_uuid(name: &str) -> String {
    format!("urn:uuid:{}", uuid::Uuid::new_v5(&ID_NAMESPACE, name.as_bytes()))
}

/// Builds the metadata of `header` (read from `raw`) with `tables`; fails when the type is not in the tables.
pub fn build(
    header: &CdaHeader,
    raw: &[u8],
    tables: &XdsTables,
    ctx: &Context<'_>,
) -> Result<DocumentMetadata, MapFailure> {
    let type_code = header.type_code();
    let entry = tables.types.get(type_code).ok_or_else(|| MapFailure {
        location: "ClinicalDocument/code".into(),
        reason: format!(
            "document type `{type_code}` is not in mappings/tables/xds/xds-types.toml (unknown LOINC type for XDS)"
        ),
    })?;
    let systems = &tables.systems;
    let level = header.body.level();
    let format = match &header.body {
        Body::Structured => entry.format.clone(),
        Body::NonXml { media_type, .. } => {
            tables.level1.get(media_type).cloned().ok_or_else(|| MapFailure {
                location: "ClinicalDocument/component/nonXMLBody/text".into(),
                reason: format!(
                    "media type `{media_type}` has no level 1 formatCode in xds-codes.toml [level1]"
                ),
            })?
        }
    };
    let class_display = tables.classes.get(&entry.class).cloned().unwrap_or_default();
    let mut confidentiality = vec![XdsCode::new(header.confidentiality_code(), &systems.confidentiality, "")];
    for flag in ctx.flags {
        if let Some(code) = tables.masking.get(flag) {
            confidentiality.push(XdsCode::new(code, &systems.masking, ""));
        }
    }
    let qualified = ctx.ins_qualified.unwrap_or(true) && header.patient.ins_qualified();
    let ins_cx = header.patient.ins.as_ref().map(|ins| format!("{}^^^&{}&ISO^NH", ins.value, ins.oid));
    let patient_id = identity::ins_if_qualified(ins_cx.clone(), qualified);
    let ipp_cx = header.patient.ipp.as_ref().map(|ipp| format!("{}^^^&{}&ISO^PI", ipp.extension, ipp.root));
    // Without an IPP, the INS is the only source id; it is never given unless qualified.
    let source_patient_id = ipp_cx.or_else(|| patient_id.clone()).unwrap_or_default();
    let (start, stop) = header.service_period();
    let authors: Vec<XdsAuthor> = header.authors.iter().map(xds_author).collect();
    let encounter_key = ctx
        .patient_class
        .map(str::to_string)
        .or_else(|| header.encounter.as_ref().and_then(|e| e.code.as_ref()).map(|c| c.code.clone()));
    let content_type = encounter_key
        .and_then(|k| tables.content_type.get(&k).cloned())
        .or_else(|| tables.content_type.get("default").cloned())
        .unwrap_or_default();
    let document_entry = DocumentEntry {
        unique_id: header.id.to_xds(),
        entry_uuid: urn_uuid(&format!("DocumentEntry/{}", header.id.to_xds())),
        patient_id: patient_id.clone(),
        source_patient_id,
        source_patient_info: patient_info(header),
        class_code: XdsCode::new(&entry.class, &systems.class, &class_display),
        type_code: XdsCode::new(
            type_code,
            entry.system.as_deref().unwrap_or(&systems.r#type),
            &entry.display,
        ),
        format_code: XdsCode::new(&format, &systems.format, ""),
        confidentiality,
        healthcare_facility_type: header
            .encounter
            .as_ref()
            .and_then(|e| e.facility_type.as_ref())
            .map(|c| XdsCode::from_cda(c, &systems.facility)),
        practice_setting: header.practice_setting.as_ref().map(|c| XdsCode::from_cda(c, &systems.practice)),
        event_codes: header
            .service_events
            .iter()
            .filter_map(|e| e.code.as_ref())
            .map(|c| XdsCode::from_cda(c, ""))
            .collect(),
        creation_time: header.effective_time.as_deref().and_then(time::xds),
        service_start_time: start.and_then(time::xds),
        service_stop_time: stop.and_then(time::xds),
        language: header.language.clone().unwrap_or_else(|| "fr-FR".into()),
        mime_type: "text/xml".into(),
        title: header.title.clone(),
        hash: sha1_hex(raw),
        size: raw.len() as u64,
        authors: authors.clone(),
        legal_authenticator: header.legal_authenticator.as_ref().map(xcn),
        replaces: header.replaces.as_ref().map(|id| id.to_xds()),
    };
    Ok(DocumentMetadata {
        submission_set: SubmissionSet {
            patient_id,
            content_type: XdsCode::new(&content_type, &systems.content_type, ""),
            author: ctx.sender.clone().or_else(|| authors.first().cloned()),
            title: header.title.clone(),
        },
        entry: document_entry,
        level,
        identity_review: !qualified,
    })
}

fn patient_info(header: &CdaHeader) -> Vec<String> {
    let p = &header.patient;
    let mut info = Vec::new();
    if let Some(family) = &p.birth_family {
        let given = p.given_names.as_deref().or(p.first_given.as_deref()).unwrap_or("");
        info.push(format!("PID-5|{family}^{given}^^^^^L"));
    }
    if let Some(birth) = &p.birth_time {
        info.push(format!("PID-7|{birth}"));
    }
    if let Some(gender) = &p.gender {
        info.push(format!("PID-8|{gender}"));
    }
    info
}

/// XCN of a person: `<id>^<family>^<given>^^^<prefix>^^^&<root>&ISO^D^^^<IDNPS|RPPS|…>`.
pub fn xcn(person: &Person) -> String {
    let (id, root) = person.id.as_ref().map_or(("", ""), |i| (i.extension.as_str(), i.root.as_str()));
    let kind = if root == crate::cda::IDNPS_OID { "IDNPS" } else { "" };
    format!(
        "{id}^{}^{}^^^{}^^^&{root}&ISO^D^^^{kind}",
        person.family.as_deref().unwrap_or(""),
        person.given.as_deref().unwrap_or(""),
        person.prefix.as_deref().unwrap_or(""),
    )
}

/// XON of an organization: `<name>^^^^^&<root>&ISO^IDNST^^^<id>`.
pub fn xon(org: &Organization) -> Option<String> {
    let id = org.id.as_ref()?;
    let kind = if id.root == crate::cda::IDNST_OID { "IDNST" } else { "" };
    Some(format!("{}^^^^^&{}&ISO^{kind}^^^{}", org.name.as_deref().unwrap_or(""), id.root, id.extension))
}

fn xds_author(person: &Person) -> XdsAuthor {
    XdsAuthor {
        person: xcn(person),
        institution: person.organization.as_ref().and_then(xon),
        specialty: person.specialty.as_ref().map(|c| format!("{}^{}^{}", c.code, c.display, c.system)),
    }
}

impl fmt::Debug for XdsAuthor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("XdsAuthor { .. }")
    }
}

impl fmt::Debug for DocumentEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DocumentEntry").field("type", &self.type_code.code).finish_non_exhaustive()
    }
}

impl fmt::Debug for SubmissionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubmissionSet").field("content_type", &self.content_type.code).finish_non_exhaustive()
    }
}
