//! Business acknowledgements back to the DPI (ANS "transmission de documents CDA en HL7v2" flow):
//! ZAM^Z01 for the DMP feed, ZAM^Z02 for the MSSanté delivery (SMTP outcome), ZAM^Z03 for a read receipt.
//!
//! It receives the original ORU^R01's bytes (for the addressing: its MSH-3/4 become our MSH-5/6 and its
//! MSH-10 is quoted in OBX-4) and a sink's outcome, and hands on the ZAM message text (ER7, CR-separated,
//! UTF-8, as in the ANS samples), ready to be sent over MLLP by whoever holds the connection. Texts are
//! HL7-escaped. The read receipt (Z03) needs an MDN read back from a mailbox: building it is here, reading
//! MDNs (IMAP or an inbound SMTP port) is not built yet.

use crate::hl7v2::{Delimiters, Message, ParseError, escape_text};
use crate::sinks::iti41::RegistryResponse;

/// Who the acknowledgement goes to and what it refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZamTarget {
    /// Our MSH-3 / MSH-4 (the platform).
    pub sender: (String, String),
    /// The DPI: the original MSH-3 / MSH-4, our MSH-5 / MSH-6.
    pub receiver: (String, String),
    /// The original message's MSH-10.
    pub original_control_id: String,
}

impl ZamTarget {
    /// Reads the addressing from the original message; `sender` is the platform's (application, facility).
    pub fn from_original(raw: &[u8], sender: (&str, &str)) -> Result<ZamTarget, ParseError> {
        let msg = Message::parse(raw)?;
        let text = |p: &str| msg.text(p).unwrap_or_default();
        Ok(ZamTarget {
            sender: (sender.0.to_string(), sender.1.to_string()),
            receiver: (text("MSH-3"), text("MSH-4")),
            original_control_id: text("MSH-10"),
        })
    }
}

fn esc(s: &str) -> String {
    escape_text(s, &Delimiters::default())
}

fn header(t: &ZamTarget, trigger: &str, control_id: &str, now: jiff::Timestamp) -> String {
    let ts = now.strftime("%Y%m%d%H%M%S");
    format!(
        "MSH|^~\\&|{}|{}|{}|{}|{ts}||ZAM^{trigger}^ZAM_Z01|{}|P|2.6|||||FRA|UNICODE UTF-8|||2.1^CISIS_CDA_HL7_V2\rEVN||{ts}\r",
        esc(&t.sender.0),
        esc(&t.sender.1),
        esc(&t.receiver.0),
        esc(&t.receiver.1),
        esc(control_id)
    )
}

fn yes_no(b: bool) -> &'static str {
    if b { "Y" } else { "N" }
}

/// ZAM^Z01: the DMP's answer. `response` is the parsed RegistryResponse (None when the DMP never answered,
/// reported as not received with `error`).
pub fn z01(
    t: &ZamTarget,
    control_id: &str,
    now: jiff::Timestamp,
    response: Option<&RegistryResponse>,
    error: Option<&str>,
) -> String {
    let ok = response.is_some_and(|r| r.first_error().is_none() && r.outcome().as_str() == "delivered");
    let mut out = header(t, "Z01", control_id, now);
    out.push_str(&format!(
        "OBX|1|CWE|ACK_RECEPTION_DMP^Accusé de réception DMP^AckMetierZAM|{}|{}^^expandedYes-NoIndicator||||||F|\r",
        esc(&t.original_control_id),
        yes_no(ok)
    ));
    if !ok {
        let (code, text) = match response.and_then(|r| r.first_error()) {
            Some(e) => {
                (e.code.clone(), if e.context.is_empty() { e.code.clone() } else { e.context.clone() })
            }
            None => ("DMPUnavailable".to_string(), error.unwrap_or("pas de réponse du DMP").to_string()),
        };
        out.push_str(&format!(
            "ERR|||207^Application internal error^messageErrorCondition|E|{}^{}^DMPERRORCODE\r",
            esc(&code),
            esc(&text)
        ));
    }
    out
}

/// ZAM^Z02: the MSSanté delivery to one recipient (`idnps`, `address`); `smtp_error` is (code, text) when the
/// relay refused it.
pub fn z02(
    t: &ZamTarget,
    control_id: &str,
    now: jiff::Timestamp,
    recipient: (&str, &str),
    smtp_error: Option<(&str, &str)>,
) -> String {
    let mut out = header(t, "Z02", control_id, now);
    out.push_str(&format!(
        "OBX|1|CWE|ACK_RECEPTION_MSS^Accusé de réception MSSanté^AckMetierZAM|{}|{}^^expandedYes-NoIndicator||||||F|\r",
        esc(&t.original_control_id),
        yes_no(smtp_error.is_none())
    ));
    out.push_str(&format!(
        "OBX|2|XTN|DESTINATAIRE_MSS^Destinataire MSSanté^AckMetierZAM|{}|^^X.400^{}||||||F|\r",
        esc(recipient.0),
        esc(recipient.1)
    ));
    if let Some((code, text)) = smtp_error {
        out.push_str(&format!(
            "ERR|||207^Application internal error^messageErrorCondition|E|{}^{}^SMTPERRORCODE\r",
            esc(code),
            esc(text)
        ));
    }
    out
}

/// ZAM^Z03: a read receipt (MDN `displayed`) from `reader` (`idnps`, `address`).
pub fn z03(t: &ZamTarget, control_id: &str, now: jiff::Timestamp, reader: (&str, &str)) -> String {
    let mut out = header(t, "Z03", control_id, now);
    out.push_str(&format!(
        "OBX|1|CWE|ACK_LECTURE_MSS^Accusé de lecture^AckMetierZAM|{}|Y^^expandedYes-NoIndicator||||||F|\r",
        esc(&t.original_control_id)
    ));
    out.push_str(&format!(
        "OBX|2|XTN|LECTEUR_MSS^Lecteur du courriel MSSanté^AckMetierZAM|{}|^^X.400^{}||||||F|\r",
        esc(reader.0),
        esc(reader.1)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::iti41::parse_registry_response;

    fn target() -> ZamTarget {
        let oru = b"MSH|^~\\&|SIL-Y|labo|PFI-X|Organisation-X|20210606||ORU^R01^ORU_R01|015|P|2.6\rPID|1\r";
        ZamTarget::from_original(oru, ("PFI-X", "Organisation-X")).unwrap()
    }

    fn now() -> jiff::Timestamp {
        "2021-06-06T09:33:00Z".parse().unwrap()
    }

    /// The ANS sample, without its MSH-7/EVN-2 timestamps, against what we build.
    fn same_but_times(ours: &str, sample: &str) {
        let strip = |s: &str| -> Vec<String> {
            s.split(['\r', '\n'])
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let mut f: Vec<&str> = l.split('|').collect();
                    if f[0] == "MSH" {
                        f[6] = "";
                        f[9] = "";
                    }
                    if f[0] == "EVN" {
                        f[2] = "";
                    }
                    f.join("|")
                })
                .collect()
        };
        assert_eq!(strip(ours), strip(sample));
    }

    #[test]
    fn z01_for_a_closed_dmp_matches_the_ans_sample() {
        let response = parse_registry_response(
            r#"<RegistryResponse status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"><RegistryErrorList><RegistryError errorCode="DMPClosed" codeContext="DMP fermé" severity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"/></RegistryErrorList></RegistryResponse>"#
                .as_bytes(),
        )
        .unwrap();
        let ours = z01(&target(), "017", now(), Some(&response), None);
        let sample = include_str!("../../test-messages/sinks/ans-transdoc_ZAM_Z01_ack-reception-DMP.hl7");
        same_but_times(&ours, sample);
    }

    #[test]
    fn z02_and_z03_match_the_ans_samples() {
        let recipient = ("801234567897", "adam.hoda@test-ci-sis.mssante.fr");
        let ours = z02(&target(), "018", now(), recipient, None);
        same_but_times(
            &ours,
            include_str!("../../test-messages/sinks/ans-transdoc_ZAM_Z02_ack-reception-MSS.hl7"),
        );
        let ours = z03(&target(), "019", now(), recipient);
        same_but_times(
            &ours,
            include_str!("../../test-messages/sinks/ans-transdoc_ZAM_Z03_ack-lecture-MSS.hl7"),
        );
        let refused = z02(&target(), "020", now(), recipient, Some(("550", "5.1.1 unknown^user")));
        assert!(refused.contains("ACK_RECEPTION_MSS^Accusé de réception MSSanté^AckMetierZAM|015|N^"));
        assert!(refused.contains("|E|550^5.1.1 unknown\\S\\user^SMTPERRORCODE"));
    }
}
