//! ORU^R01 per the ANS volet "transmission de document CDA en HL7v2": the base64 CDA of an OBX of type ED,
//! the `MetaDMPMSS` flags, the mail bodies, the PRT recipients and the patient of PID.

use std::fmt;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::cda::InsKind;
use crate::facts::MapFailure;
use crate::hl7v2::{Charset, Message};
use crate::identity;

/// The coding system of the OBX flags of the volet.
pub const FLAG_SYSTEM: &str = "MetaDMPMSS";

/// A PRT participant: recipient (`RCT`), sender (`SB`) or reply-to (`REPLY`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// PRT-4.1: `RCT`, `SB`, `REPLY`.
    pub role: String,
    /// PRT-5.1: the person id (IDNPS, RPPS, INS for the patient).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// PRT-5.13: the id type (`IDNPS`, `RPPS`, `INS`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id_type: String,
    /// PRT-5.2.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub family: String,
    /// PRT-5.3.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub given: String,
    /// PRT-7.1: the organization name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub organization: String,
    /// PRT-7.10: the organization id (FINESS, IDNST).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub organization_id: String,
    /// PRT-15.4: the MSSanté address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recipient").field("role", &self.role).finish_non_exhaustive()
    }
}

/// What an ORU^R01 carries besides the CDA itself.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OruInfo {
    /// MSH-10 of the ORU^R01: the business acknowledgements (ZAM) name it in OBX-4.
    pub control_id: String,
    /// MSH-3.1.
    pub sending_application: String,
    /// MSH-4.1.
    pub sending_facility: String,
    /// Every `MetaDMPMSS` flag and its value (`Y` = true), in message order.
    pub flags: Vec<(String, bool)>,
    /// The PRT participants.
    pub recipients: Vec<Recipient>,
    /// `CORPSMAIL_PS`: the mail body for professionals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail_body_ps: Option<String>,
    /// `CORPSMAIL_PATIENT`: the mail body for the patient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail_body_patient: Option<String>,
    /// PV1-2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_class: Option<String>,
    /// The INS of PID-3 (type `INS`, an INS OID), whatever PID-32 says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ins: Option<String>,
    /// PID-32 = `VALI` and an INS in PID-3: the identity is qualified.
    pub ins_qualified: bool,
    /// The IPP of PID-3 (type `PI`) as `<assigner>|<IPP>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipp: Option<String>,
}

impl fmt::Debug for OruInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OruInfo")
            .field("flags", &self.flags)
            .field("recipients", &self.recipients.len())
            .field("ins_qualified", &self.ins_qualified)
            .finish_non_exhaustive()
    }
}

impl OruInfo {
    /// The names of the flags set to `Y`, upper case.
    pub fn flags_set(&self) -> Vec<String> {
        self.flags.iter().filter(|(_, on)| *on).map(|(name, _)| name.clone()).collect()
    }

    /// True when `name` is set to `Y`.
    pub fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|(n, on)| *on && n == name)
    }

    /// The MSSanté audience the flags allow. The IG allows exactly three combinations; any other is an error
    /// (named), and a document masked to professionals (`MASQUE_PS` = Y) never goes to a professional.
    pub fn mssante_audience(&self) -> Result<MssAudience, String> {
        let f = |name: &str| self.flag(name);
        let (to_ps, to_patient) = (f("DESTMSSANTEPS"), f("DESTMSSANTEPAT"));
        if !to_ps && !to_patient {
            return Ok(MssAudience::Nobody);
        }
        let masked = f("MASQUE_PS");
        let invisible = f("INVISIBLE_PATIENT");
        if to_ps && to_patient && !masked && !invisible && !f("INVISIBLE_REP_LEGAUX") {
            return Ok(MssAudience::ProfessionalsAndPatient);
        }
        if to_ps && !to_patient && !masked && invisible {
            return Ok(MssAudience::ProfessionalsOnly);
        }
        if to_patient && !to_ps && !invisible && !f("CONNEXION_SECRETE") && !f("DESTDMP") {
            return Ok(MssAudience::PatientOnly);
        }
        let set: Vec<String> = self.flags_set();
        Err(format!(
            "MetaDMPMSS flags {} are not one of the three MSSanté combinations of the ANS masking rules",
            if set.is_empty() { "(none set)".to_string() } else { set.join("+") }
        ))
    }
}

/// Who may receive the document by MSSanté, per the ANS masking matrix (french-interop.md §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MssAudience {
    /// No MSSanté destination asked (`DESTMSSANTEPS` = `DESTMSSANTEPAT` = N).
    Nobody,
    /// Professionals and the patient.
    ProfessionalsAndPatient,
    /// Professionals only.
    ProfessionalsOnly,
    /// The patient only.
    PatientOnly,
}

/// An ORU^R01 read: the CDA bytes (decoded from base64) and the rest.
pub struct OruDocument {
    /// The CDA document as sent.
    pub cda: Vec<u8>,
    /// Where the CDA was (`OBX(1)-5.5`), for error locations.
    pub cda_location: String,
    /// Flags, recipients, patient.
    pub info: OruInfo,
}

fn failure(location: impl Into<String>, reason: impl Into<String>) -> MapFailure {
    MapFailure { location: location.into(), reason: reason.into() }
}

fn b64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(compact).ok()
}

/// A mail body: base64 read up to the last whole quantum (senders cut them), invalid UTF-8 replaced.
fn lenient_text(text: &str) -> Option<String> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace() && *c != '=').collect();
    let whole = compact.get(..compact.len() / 4 * 4)?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(whole).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// True when `raw` is an HL7v2 ORU^R01.
pub fn is_oru_r01(raw: &[u8]) -> bool {
    crate::hl7v2::Header::parse(raw).is_ok_and(|h| h.component(9, 1) == b"ORU" && h.component(9, 2) == b"R01")
}

/// Reads an ORU^R01: fails naming the segment and field when there is no CDA or it is not base64.
pub fn read(raw: &[u8]) -> Result<OruDocument, MapFailure> {
    let msg = Message::parse(raw).map_err(|e| failure("MSH", e.to_string()))?;
    let charset = msg.header().charset().ok().flatten().unwrap_or(Charset::Latin1);
    let msg = msg.with_charset(charset);
    let text = |path: &str| msg.text(path).unwrap_or_default();
    if text("MSH-9.1") != "ORU" || text("MSH-9.2") != "R01" {
        return Err(failure("MSH-9", "not an ORU^R01 message"));
    }
    let mut info = OruInfo {
        control_id: text("MSH-10"),
        sending_application: text("MSH-3.1"),
        sending_facility: text("MSH-4.1"),
        patient_class: msg.text("PV1-2"),
        ..OruInfo::default()
    };
    for r in 1..=20 {
        let Some(id) = msg.text(&format!("PID-3({r}).1")) else {
            if msg.get(&format!("PID-3({r})")).is_none_or(<[u8]>::is_empty) {
                break;
            }
            continue;
        };
        let kind = text(&format!("PID-3({r}).5"));
        let oid = text(&format!("PID-3({r}).4.2"));
        if kind == "INS" && InsKind::from_oid(&oid).is_some() {
            info.ins.get_or_insert(id);
        } else if kind == "PI" && info.ipp.is_none() {
            let assigner = msg.text(&format!("PID-3({r}).4.1")).unwrap_or(oid);
            info.ipp = Some(format!("{assigner}|{id}"));
        }
    }
    // The ADT mapping's rule: the first PID-32 repetition is VALI and no repetition is DOUT or FICT.
    let statuses: Vec<String> = msg
        .segment("PID")
        .map(|pid| pid.field(32).repetitions().map(|r| r.text(msg.charset()).trim().to_owned()).collect())
        .unwrap_or_default();
    info.ins_qualified =
        info.ins.is_some() && identity::pid32_qualified(&statuses, &[identity::VALI], &identity::NEVER_WITH);

    let mut cda: Option<(Vec<u8>, String)> = None;
    for (n, _) in msg.segments_named("OBX").enumerate() {
        let n = n + 1;
        let value_type = text(&format!("OBX({n})-2"));
        let name = text(&format!("OBX({n})-3.1")).to_uppercase();
        let system = text(&format!("OBX({n})-3.3"));
        if system == FLAG_SYSTEM {
            match value_type.as_str() {
                "ED" => {
                    let location = format!("OBX({n})-5.5");
                    let body = lenient_text(&text(&location))
                        .ok_or_else(|| failure(&location, format!("{name}: not base64 text")))?;
                    match name.as_str() {
                        "CORPSMAIL_PS" => info.mail_body_ps = Some(body),
                        "CORPSMAIL_PATIENT" => info.mail_body_patient = Some(body),
                        _ => {}
                    }
                }
                _ => info.flags.push((name, text(&format!("OBX({n})-5.1")).eq_ignore_ascii_case("Y"))),
            }
        } else if value_type == "ED" && cda.is_none() {
            let location = format!("OBX({n})-5.5");
            let bytes = b64(&text(&location)).ok_or_else(|| {
                failure(&location, "the document is not valid base64 (OBX-5.4 says Base64)")
            })?;
            cda = Some((bytes, location));
        }
    }
    for (n, _) in msg.segments_named("PRT").enumerate() {
        let p = |field: &str| text(&format!("PRT({})-{field}", n + 1));
        info.recipients.push(Recipient {
            role: p("4.1"),
            id: p("5.1"),
            id_type: p("5.13"),
            family: p("5.2"),
            given: p("5.3"),
            organization: p("7.1"),
            organization_id: p("7.10"),
            address: p("15.4"),
        });
    }
    let (cda, cda_location) =
        cda.ok_or_else(|| failure("OBX-2", "no OBX of type ED carries the CDA document"))?;
    Ok(OruDocument { cda, cda_location, info })
}
