//! XDS metadata written as an ebRIM 3.0 `lcm:SubmitObjectsRequest`: the payload shared by the XDM
//! `METADATA.XML` ([`crate::sinks::xdm`]) and the ITI-41 SOAP body ([`crate::sinks::iti41`]).
//!
//! It receives one [`XdsDocument`] (the XDS metadata read from a CDA header by the documents stage, plus the
//! bytes) and the [`SubmissionParams`] of the sender, and hands on a [`Submission`]: ids assigned (entryUUIDs,
//! submission set uniqueId), hash and size computed, ready to be written. The DocumentEntry's entryUUID is a
//! UUID v5 of its uniqueId, so a replacement (RPLC) can name the document it replaces from that document's
//! uniqueId alone. Element order follows rim.xsd (Slot, Name, Classification, ExternalIdentifier).

use std::io;

use quick_xml::Writer;
use quick_xml::events::BytesText;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};
use uuid::Uuid;

use crate::documents::metadata::{DocumentMetadata, XdsAuthor, XdsCode};

/// ebRIM namespace.
pub const NS_RIM: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0";
/// ebRS life-cycle manager namespace (SubmitObjectsRequest).
pub const NS_LCM: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0";

const STABLE_DOCUMENT: &str = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1";
const DE_AUTHOR: &str = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d";
const DE_CLASS: &str = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a";
const DE_CONFIDENTIALITY: &str = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f";
const DE_EVENT: &str = "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4";
const DE_FORMAT: &str = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d";
const DE_FACILITY: &str = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1";
const DE_PRACTICE: &str = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead";
const DE_TYPE: &str = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983";
const DE_PATIENT_ID: &str = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427";
const DE_UNIQUE_ID: &str = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab";
const SS_NODE: &str = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd";
const SS_AUTHOR: &str = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d";
const SS_CONTENT_TYPE: &str = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500";
const SS_PATIENT_ID: &str = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446";
const SS_SOURCE_ID: &str = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832";
const SS_UNIQUE_ID: &str = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8";
const HAS_MEMBER: &str = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember";
const RPLC: &str = "urn:ihe:iti:2007:AssociationType:RPLC";

/// A coded value: code, coding scheme (OID) and display name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Code {
    /// The code (`11490-0`, `N`, `SA01`).
    pub code: String,
    /// The coding scheme OID (`2.16.840.1.113883.6.1`).
    pub scheme: String,
    /// The display name.
    pub display: String,
}

impl Code {
    /// A code from its three parts.
    pub fn new(code: &str, scheme: &str, display: &str) -> Code {
        Code { code: code.into(), scheme: scheme.into(), display: display.into() }
    }
}

/// An XDS author: person (XCN), institution (XON), role and specialty, each optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Author {
    /// `authorPerson`, in XCN form.
    pub person: Option<String>,
    /// `authorInstitution`, in XON form.
    pub institution: Option<String>,
    /// `authorRole`.
    pub role: Option<String>,
    /// `authorSpecialty`, in CE form (`code^display^scheme`).
    pub specialty: Option<String>,
}

/// One document and its XDS DocumentEntry metadata (french-interop.md §5.1), as the documents stage reads
/// it from a CDA header. Debug prints no field value.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct XdsDocument {
    /// `uniqueId`: the CDA `id` (`root` or `root^extension`).
    pub unique_id: String,
    /// `title`.
    pub title: String,
    /// `mimeType` (`text/xml`).
    pub mime_type: String,
    /// `classCode` (JDV_J57).
    pub class_code: Code,
    /// `typeCode` (the CDA `code`, JDV_J07).
    pub type_code: Code,
    /// `formatCode` (JDV_J60).
    pub format_code: Code,
    /// `confidentialityCode`: first N, R or V, then MASQUE_PS / INVISIBLE_PATIENT / INVISIBLE_REPRESENTANTS_LEGAUX.
    pub confidentiality: Vec<Code>,
    /// `healthcareFacilityTypeCode` (JDV_J61).
    pub healthcare_facility_type: Code,
    /// `practiceSettingCode` (JDV_J04).
    pub practice_setting: Code,
    /// `eventCodeList`.
    pub event_codes: Vec<Code>,
    /// `creationTime`, HL7 DTM in UTC (`YYYYMMDDhhmmss`).
    pub creation_time: String,
    /// `serviceStartTime`.
    pub service_start: Option<String>,
    /// `serviceStopTime`.
    pub service_stop: Option<String>,
    /// `languageCode` (`fr-FR`).
    pub language_code: String,
    /// `patientId`: the INS in CX form, only when the identity is qualified.
    pub patient_id: String,
    /// `sourcePatientId`: the IPP in CX form.
    pub source_patient_id: String,
    /// `sourcePatientInfo` lines (`PID-5|…`, `PID-7|…`, `PID-8|…`).
    pub source_patient_info: Vec<String>,
    /// `author`.
    pub author: Author,
    /// `legalAuthenticator` in XCN form.
    pub legal_authenticator: Option<String>,
    /// The uniqueId of the document this one replaces (CDA `relatedDocument[@typeCode=RPLC]`).
    pub replaces: Option<String>,
    /// The document itself (the CDA XML).
    #[serde(skip)]
    pub content: Vec<u8>,
    /// A human-readable PDF rendering, when the message carries one.
    #[serde(skip)]
    pub pdf: Option<Vec<u8>>,
}

impl std::fmt::Debug for XdsDocument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdsDocument")
            .field("type_code", &self.type_code.code)
            .field("content_bytes", &self.content.len())
            .field("pdf", &self.pdf.is_some())
            .finish_non_exhaustive()
    }
}

/// The sender's side of a submission set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmissionParams {
    /// `sourceId`: the sending system's OID.
    pub source_id: String,
    /// Root OID under which submission set uniqueIds are minted (`<root>.<uuid as integer>` if empty).
    pub unique_id_root: String,
    /// `contentTypeCode` (JDV_J59).
    pub content_type: Code,
    /// `author` of the submission set (the sender).
    pub author: Author,
    /// `intendedRecipient` values (XDM): XON/XCN with a `|` and an e-mail, or a plain address.
    pub intended_recipients: Vec<String>,
}

/// A ready-to-write submission: one DocumentEntry, its submission set, and an optional RPLC.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The document and its metadata.
    pub document: XdsDocument,
    /// The sender's parameters.
    pub params: SubmissionParams,
    /// entryUUID of the DocumentEntry (`urn:uuid:…`).
    pub entry_uuid: String,
    /// entryUUID of the submission set.
    pub set_uuid: String,
    /// uniqueId of the submission set.
    pub set_unique_id: String,
    /// `submissionTime`, HL7 DTM (UTC).
    pub submission_time: String,
    /// SHA-1 of the document, lower-case hex.
    pub hash: String,
    /// Size of the document in bytes.
    pub size: usize,
}

/// The entryUUID Relais gives the DocumentEntry of a document with this uniqueId (the same as
/// [`crate::documents::metadata::DocumentEntry::entry_uuid`]).
pub fn entry_uuid_for(unique_id: &str) -> String {
    crate::documents::metadata::urn_uuid(&format!("DocumentEntry/{unique_id}"))
}

fn code(c: &XdsCode) -> Code {
    Code { code: c.code.clone(), scheme: c.scheme.clone(), display: c.display.clone() }
}

fn author(a: &XdsAuthor) -> Author {
    Author {
        person: Some(a.person.clone()).filter(|p| !p.is_empty()),
        institution: a.institution.clone(),
        role: None,
        specialty: a.specialty.clone(),
    }
}

impl XdsDocument {
    /// The document as the documents stage describes it ([`DocumentMetadata`]), with its bytes.
    pub fn from_metadata(meta: &DocumentMetadata, content: Vec<u8>, pdf: Option<Vec<u8>>) -> XdsDocument {
        let e = &meta.entry;
        XdsDocument {
            unique_id: e.unique_id.clone(),
            title: e.title.clone().unwrap_or_default(),
            mime_type: e.mime_type.clone(),
            class_code: code(&e.class_code),
            type_code: code(&e.type_code),
            format_code: code(&e.format_code),
            confidentiality: e.confidentiality.iter().map(code).collect(),
            healthcare_facility_type: e.healthcare_facility_type.as_ref().map(code).unwrap_or_default(),
            practice_setting: e.practice_setting.as_ref().map(code).unwrap_or_default(),
            event_codes: e.event_codes.iter().map(code).collect(),
            creation_time: e.creation_time.clone().unwrap_or_default(),
            service_start: e.service_start_time.clone(),
            service_stop: e.service_stop_time.clone(),
            language_code: e.language.clone(),
            patient_id: e.patient_id.clone().unwrap_or_default(),
            source_patient_id: e.source_patient_id.clone(),
            source_patient_info: e.source_patient_info.clone(),
            author: e.authors.first().map(author).unwrap_or_default(),
            legal_authenticator: e.legal_authenticator.clone(),
            replaces: e.replaces.clone(),
            content,
            pdf,
        }
    }
}

impl SubmissionParams {
    /// The submission set of [`DocumentMetadata`], sent by `source_id`, uniqueIds minted under `unique_id_root`.
    pub fn from_metadata(meta: &DocumentMetadata, source_id: &str, unique_id_root: &str) -> SubmissionParams {
        let set = &meta.submission_set;
        SubmissionParams {
            source_id: source_id.into(),
            unique_id_root: unique_id_root.into(),
            content_type: code(&set.content_type),
            author: set.author.as_ref().map(author).unwrap_or_default(),
            intended_recipients: Vec::new(),
        }
    }
}

impl Submission {
    /// Assigns ids, hash and size; `now` is the submission time (UTC).
    pub fn new(document: XdsDocument, params: SubmissionParams, now: jiff::Timestamp) -> Submission {
        let hash = Sha1::digest(&document.content).iter().map(|b| format!("{b:02x}")).collect::<String>();
        let size = document.content.len();
        let set = Uuid::new_v4();
        let root = if params.unique_id_root.is_empty() { "2.25" } else { params.unique_id_root.as_str() };
        Submission {
            entry_uuid: entry_uuid_for(&document.unique_id),
            set_uuid: format!("urn:uuid:{set}"),
            set_unique_id: format!("{root}.{}", set.as_u128()),
            submission_time: now.strftime("%Y%m%d%H%M%S").to_string(),
            hash,
            size,
            document,
            params,
        }
    }

    /// Writes the `lcm:SubmitObjectsRequest` element (with its namespace declarations). `uri` is the
    /// document's file name inside an XDM subset (`DOC0001.XML`), `None` for ITI-41.
    pub fn write_submit_objects<W: io::Write>(&self, w: &mut Writer<W>, uri: Option<&str>) -> io::Result<()> {
        w.create_element("lcm:SubmitObjectsRequest")
            .with_attribute(("xmlns:lcm", NS_LCM))
            .with_attribute(("xmlns:rim", NS_RIM))
            .write_inner_content(|w| {
                w.create_element("rim:RegistryObjectList").write_inner_content(|w| {
                    self.write_document_entry(w, uri)?;
                    self.write_submission_set(w)?;
                    association(
                        w,
                        "urn:uuid:".to_string() + &Uuid::new_v4().to_string(),
                        HAS_MEMBER,
                        &self.set_uuid,
                        &self.entry_uuid,
                        Some("Original"),
                    )?;
                    if let Some(old) = &self.document.replaces {
                        let id = format!("urn:uuid:{}", Uuid::new_v4());
                        association(w, id, RPLC, &self.entry_uuid, &entry_uuid_for(old), None)?;
                    }
                    Ok(())
                })?;
                Ok(())
            })?;
        Ok(())
    }

    /// The `lcm:SubmitObjectsRequest` as a standalone XML document (XDM `METADATA.XML`).
    pub fn metadata_xml(&self, uri: Option<&str>) -> Vec<u8> {
        let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
        w.write_event(quick_xml::events::Event::Decl(quick_xml::events::BytesDecl::new(
            "1.0",
            Some("UTF-8"),
            None,
        )))
        .and_then(|()| self.write_submit_objects(&mut w, uri))
        .expect("writing XML into memory cannot fail");
        w.into_inner()
    }

    fn write_document_entry<W: io::Write>(&self, w: &mut Writer<W>, uri: Option<&str>) -> io::Result<()> {
        let d = &self.document;
        let id = self.entry_uuid.as_str();
        w.create_element("rim:ExtrinsicObject")
            .with_attribute(("id", id))
            .with_attribute(("mimeType", d.mime_type.as_str()))
            .with_attribute(("objectType", STABLE_DOCUMENT))
            .write_inner_content(|w| {
                slot(w, "creationTime", [d.creation_time.as_str()])?;
                slot(w, "hash", [self.hash.as_str()])?;
                slot(w, "languageCode", [d.language_code.as_str()])?;
                if let Some(la) = &d.legal_authenticator {
                    slot(w, "legalAuthenticator", [la.as_str()])?;
                }
                if let Some(t) = &d.service_start {
                    slot(w, "serviceStartTime", [t.as_str()])?;
                }
                if let Some(t) = &d.service_stop {
                    slot(w, "serviceStopTime", [t.as_str()])?;
                }
                slot(w, "size", [self.size.to_string().as_str()])?;
                slot(w, "sourcePatientId", [d.source_patient_id.as_str()])?;
                if !d.source_patient_info.is_empty() {
                    slot(w, "sourcePatientInfo", d.source_patient_info.iter().map(String::as_str))?;
                }
                if let Some(uri) = uri {
                    slot(w, "URI", [uri])?;
                }
                name(w, "rim:Name", &d.title)?;
                write_author(w, DE_AUTHOR, id, &d.author)?;
                classification(w, DE_CLASS, id, &d.class_code)?;
                for c in &d.confidentiality {
                    classification(w, DE_CONFIDENTIALITY, id, c)?;
                }
                for c in &d.event_codes {
                    classification(w, DE_EVENT, id, c)?;
                }
                classification(w, DE_FORMAT, id, &d.format_code)?;
                classification(w, DE_FACILITY, id, &d.healthcare_facility_type)?;
                classification(w, DE_PRACTICE, id, &d.practice_setting)?;
                classification(w, DE_TYPE, id, &d.type_code)?;
                external_id(w, DE_PATIENT_ID, id, &d.patient_id, "XDSDocumentEntry.patientId")?;
                external_id(w, DE_UNIQUE_ID, id, &d.unique_id, "XDSDocumentEntry.uniqueId")?;
                Ok(())
            })?;
        Ok(())
    }

    fn write_submission_set<W: io::Write>(&self, w: &mut Writer<W>) -> io::Result<()> {
        let p = &self.params;
        let id = self.set_uuid.as_str();
        w.create_element("rim:RegistryPackage").with_attribute(("id", id)).write_inner_content(|w| {
            if !p.intended_recipients.is_empty() {
                slot(w, "intendedRecipient", p.intended_recipients.iter().map(String::as_str))?;
            }
            slot(w, "submissionTime", [self.submission_time.as_str()])?;
            name(w, "rim:Name", &self.document.title)?;
            write_author(w, SS_AUTHOR, id, &p.author)?;
            w.create_element("rim:Classification")
                .with_attribute(("id", new_id().as_str()))
                .with_attribute(("classifiedObject", id))
                .with_attribute(("classificationNode", SS_NODE))
                .write_empty()?;
            classification(w, SS_CONTENT_TYPE, id, &p.content_type)?;
            external_id(w, SS_UNIQUE_ID, id, &self.set_unique_id, "XDSSubmissionSet.uniqueId")?;
            external_id(w, SS_SOURCE_ID, id, &p.source_id, "XDSSubmissionSet.sourceId")?;
            external_id(w, SS_PATIENT_ID, id, &self.document.patient_id, "XDSSubmissionSet.patientId")?;
            Ok(())
        })?;
        Ok(())
    }
}

fn new_id() -> String {
    format!("urn:uuid:{}", Uuid::new_v4())
}

fn slot<'a, W: io::Write>(
    w: &mut Writer<W>,
    name: &str,
    values: impl IntoIterator<Item = &'a str>,
) -> io::Result<()> {
    w.create_element("rim:Slot").with_attribute(("name", name)).write_inner_content(|w| {
        w.create_element("rim:ValueList").write_inner_content(|w| {
            for v in values {
                w.create_element("rim:Value").write_text_content(BytesText::new(v))?;
            }
            Ok(())
        })?;
        Ok(())
    })?;
    Ok(())
}

fn name<W: io::Write>(w: &mut Writer<W>, element: &str, value: &str) -> io::Result<()> {
    w.create_element(element).write_inner_content(|w| {
        w.create_element("rim:LocalizedString").with_attribute(("value", value)).write_empty()?;
        Ok(())
    })?;
    Ok(())
}

fn classification<W: io::Write>(
    w: &mut Writer<W>,
    scheme: &str,
    object: &str,
    code: &Code,
) -> io::Result<()> {
    w.create_element("rim:Classification")
        .with_attribute(("id", new_id().as_str()))
        .with_attribute(("classificationScheme", scheme))
        .with_attribute(("classifiedObject", object))
        .with_attribute(("nodeRepresentation", code.code.as_str()))
        .write_inner_content(|w| {
            slot(w, "codingScheme", [code.scheme.as_str()])?;
            name(w, "rim:Name", &code.display)
        })?;
    Ok(())
}

fn write_author<W: io::Write>(w: &mut Writer<W>, scheme: &str, object: &str, a: &Author) -> io::Result<()> {
    if a.person.is_none() && a.institution.is_none() {
        return Ok(());
    }
    w.create_element("rim:Classification")
        .with_attribute(("id", new_id().as_str()))
        .with_attribute(("classificationScheme", scheme))
        .with_attribute(("classifiedObject", object))
        .with_attribute(("nodeRepresentation", ""))
        .write_inner_content(|w| {
            let fields = [
                ("authorPerson", &a.person),
                ("authorInstitution", &a.institution),
                ("authorRole", &a.role),
                ("authorSpecialty", &a.specialty),
            ];
            for (slot_name, value) in fields {
                if let Some(v) = value {
                    slot(w, slot_name, [v.as_str()])?;
                }
            }
            Ok(())
        })?;
    Ok(())
}

fn external_id<W: io::Write>(
    w: &mut Writer<W>,
    scheme: &str,
    object: &str,
    value: &str,
    label: &str,
) -> io::Result<()> {
    w.create_element("rim:ExternalIdentifier")
        .with_attribute(("id", new_id().as_str()))
        .with_attribute(("registryObject", object))
        .with_attribute(("identificationScheme", scheme))
        .with_attribute(("value", value))
        .write_inner_content(|w| name(w, "rim:Name", label))?;
    Ok(())
}

fn association<W: io::Write>(
    w: &mut Writer<W>,
    id: String,
    kind: &str,
    source: &str,
    target: &str,
    status: Option<&str>,
) -> io::Result<()> {
    let el = w
        .create_element("rim:Association")
        .with_attribute(("id", id.as_str()))
        .with_attribute(("associationType", kind))
        .with_attribute(("sourceObject", source))
        .with_attribute(("targetObject", target));
    match status {
        Some(s) => el.write_inner_content(|w| slot(w, "SubmissionSetStatus", [s]))?,
        None => el.write_empty()?,
    };
    Ok(())
}

/// A realistic document for tests: a discharge letter with fictitious identifiers.
#[cfg(test)]
pub(crate) fn sample_document() -> XdsDocument {
    XdsDocument {
        unique_id: "1.2.250.1.999.2.1.20240105101500.1".into(),
        title: "Lettre de liaison à la sortie".into(),
        mime_type: "text/xml".into(),
        class_code: Code::new("10", "1.2.250.1.213.1.1.4.1", "Compte rendu"),
        type_code: Code::new("11490-0", "2.16.840.1.113883.6.1", "Lettre de liaison"),
        format_code: Code::new(
            "urn:asip:ci-sis:2010",
            "1.2.250.1.213.1.1.4.2.282",
            "Document à corps structuré",
        ),
        confidentiality: vec![Code::new("N", "2.16.840.1.113883.5.25", "Normal")],
        healthcare_facility_type: Code::new("SA01", "1.2.250.1.71.4.2.4", "Etablissement public de santé"),
        practice_setting: Code::new("ETABLISSEMENT", "1.2.250.1.213.1.1.4.9", "Etablissement de santé"),
        event_codes: vec![],
        creation_time: "20240105101500".into(),
        service_start: Some("20240102080000".into()),
        service_stop: Some("20240105100000".into()),
        language_code: "fr-FR".into(),
        patient_id: "279035121518989^^^&1.2.250.1.213.1.4.8&ISO^NH".into(),
        source_patient_id: "123456^^^&1.2.250.1.999.1.1&ISO^PI".into(),
        source_patient_info: vec!["PID-5|TEST^Jeanne^^^^^L".into(), "PID-7|19790321".into()],
        author: Author {
            person: Some("10000023084^AGNES^Isabelle^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS".into()),
            institution: Some("CH Test^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^1530000000".into()),
            role: None,
            specialty: None,
        },
        legal_authenticator: None,
        replaces: None,
        content: b"<ClinicalDocument xmlns=\"urn:hl7-org:v3\"/>".to_vec(),
        pdf: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_carries_the_document_entry_and_submission_set() {
        let now: jiff::Timestamp = "2024-01-05T10:16:00Z".parse().unwrap();
        let s = Submission::new(sample_document(), SubmissionParams::default(), now);
        let xml = String::from_utf8(s.metadata_xml(Some("DOC0001.XML"))).unwrap();
        assert!(xml.contains(r#"<rim:Value>20240105101600</rim:Value>"#));
        assert!(xml.contains(&format!(r#"<rim:Value>{}</rim:Value>"#, s.hash)));
        assert_eq!(s.hash.len(), 40);
        assert!(xml.contains(r#"nodeRepresentation="11490-0""#));
        assert!(xml.contains(r#"value="279035121518989^^^&amp;1.2.250.1.213.1.4.8&amp;ISO^NH""#));
        assert!(xml.contains("<rim:Value>DOC0001.XML</rim:Value>"));
        assert!(xml.contains(HAS_MEMBER) && !xml.contains(RPLC));
    }

    #[test]
    fn replacement_targets_the_entry_uuid_of_the_replaced_uniqueid() {
        let mut doc = sample_document();
        doc.replaces = Some("1.2.250.1.999.2.1.OLD".into());
        let s = Submission::new(doc, SubmissionParams::default(), jiff::Timestamp::now());
        let xml = String::from_utf8(s.metadata_xml(None)).unwrap();
        let target = entry_uuid_for("1.2.250.1.999.2.1.OLD");
        assert!(xml.contains(RPLC));
        assert!(xml.contains(&format!(r#"targetObject="{target}""#)));
        assert_eq!(entry_uuid_for("a"), entry_uuid_for("a"));
        assert_ne!(entry_uuid_for("a"), entry_uuid_for("b"));
    }
}
