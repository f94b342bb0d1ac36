//! Business acknowledgements back to the DPI (ANS volet transmission de document CDA en HL7v2): ZAM^Z01
//! (DMP reception), ZAM^Z02 (MSSanté reception), ZAM^Z03 (MSSanté read), built as in the ANS samples.
//!
//! The sinks build them once the DMP or the mail server answered and send them to the sender's configured
//! MLLP destination (`senders.<MSH-4>.business_ack_to`). Output is UTF-8 (`MSH-18 = UNICODE UTF-8`),
//! segments end with CR.

use crate::hl7v2::{Delimiters, escape_text};

/// Which acknowledgement, and what it says. `Debug` shows the kind only (recipients are personal data).
#[derive(Clone, PartialEq, Eq)]
pub enum BusinessAck {
    /// ZAM^Z01: the DMP took the document (`ok`) or refused it (`error`: DMP code and label, e.g.
    /// `DMPClosed`, `DMP fermé`).
    DmpReception {
        /// Accepted by the DMP.
        ok: bool,
        /// The DMP error code and label when refused.
        error: Option<(String, String)>,
    },
    /// ZAM^Z02: the mail reached (`ok`) or did not reach a recipient.
    MssReception {
        /// Delivered.
        ok: bool,
        /// The recipient's id (IDNPS, INS) and MSSanté address.
        recipient: (String, String),
        /// The SMTP error code and label when not delivered.
        error: Option<(String, String)>,
    },
    /// ZAM^Z03: the recipient read the mail.
    MssRead {
        /// The reader's id and MSSanté address.
        reader: (String, String),
    },
}

impl std::fmt::Debug for BusinessAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BusinessAck::DmpReception { .. } => "BusinessAck::DmpReception { .. }",
            BusinessAck::MssReception { .. } => "BusinessAck::MssReception { .. }",
            BusinessAck::MssRead { .. } => "BusinessAck::MssRead { .. }",
        })
    }
}

/// The envelope of a ZAM: who sends it to whom, about which ORU^R01.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZamEnvelope {
    /// MSH-3 / MSH-4: Relais' application and facility (the ORU's MSH-5 / MSH-6).
    pub sending: (String, String),
    /// MSH-5 / MSH-6: the DPI (the ORU's MSH-3 / MSH-4).
    pub receiving: (String, String),
    /// MSH-7 (`YYYYMMDDhhmm[ss]`).
    pub message_time: String,
    /// MSH-10 of this ZAM.
    pub control_id: String,
    /// EVN-2: when the event happened (reception, read).
    pub event_time: String,
    /// MSH-10 of the ORU^R01 acknowledged (OBX-4).
    pub original_control_id: String,
}

/// Builds the ZAM message for `ack`.
pub fn build(env: &ZamEnvelope, ack: &BusinessAck) -> Vec<u8> {
    let d = Delimiters::default();
    let e = |s: &str| escape_text(s, &d);
    let trigger = match ack {
        BusinessAck::DmpReception { .. } => "Z01",
        BusinessAck::MssReception { .. } => "Z02",
        BusinessAck::MssRead { .. } => "Z03",
    };
    let mut segments = vec![
        format!(
            "MSH|^~\\&|{}|{}|{}|{}|{}||ZAM^{trigger}^ZAM_Z01|{}|P|2.6|||||FRA|UNICODE UTF-8|||2.1^CISIS_CDA_HL7_V2",
            e(&env.sending.0),
            e(&env.sending.1),
            e(&env.receiving.0),
            e(&env.receiving.1),
            e(&env.message_time),
            e(&env.control_id),
        ),
        format!("EVN||{}", e(&env.event_time)),
    ];
    let yes_no = |ok: bool| if ok { "Y" } else { "N" };
    let original = e(&env.original_control_id);
    let mut err = None;
    match ack {
        BusinessAck::DmpReception { ok, error } => {
            segments.push(format!(
                "OBX|1|CWE|ACK_RECEPTION_DMP^Accusé de réception DMP^AckMetierZAM|{original}|{}^^expandedYes-NoIndicator||||||F|",
                yes_no(*ok)
            ));
            err = error.as_ref().map(|(code, label)| (code, label, "DMPERRORCODE"));
        }
        BusinessAck::MssReception { ok, recipient, error } => {
            segments.push(format!(
                "OBX|1|CWE|ACK_RECEPTION_MSS^Accusé de réception MSSanté^AckMetierZAM|{original}|{}^^expandedYes-NoIndicator||||||F|",
                yes_no(*ok)
            ));
            segments.push(format!(
                "OBX|2|XTN|DESTINATAIRE_MSS^Destinataire MSSanté^AckMetierZAM|{}|^^X.400^{}||||||F|",
                e(&recipient.0),
                e(&recipient.1)
            ));
            err = error.as_ref().map(|(code, label)| (code, label, "SMTPERRORCODE"));
        }
        BusinessAck::MssRead { reader } => {
            segments.push(format!(
                "OBX|1|CWE|ACK_LECTURE_MSS^Accusé de lecture^AckMetierZAM|{original}|Y^^expandedYes-NoIndicator||||||F|"
            ));
            segments.push(format!(
                "OBX|2|XTN|LECTEUR_MSS^Lecteur du courriel MSSanté^AckMetierZAM|{}|^^X.400^{}||||||F|",
                e(&reader.0),
                e(&reader.1)
            ));
        }
    }
    if let Some((code, label, table)) = err {
        segments.push(format!(
            "ERR|||207^Application internal error^messageErrorCondition|E|{}^{}^{table}",
            e(code),
            e(label)
        ));
    }
    let mut out = segments.join("\r").into_bytes();
    out.push(b'\r');
    out
}
