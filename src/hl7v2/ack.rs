//! Original-mode acknowledgements: building ACK bytes (AA/AE/AR with an ERR segment) and reading them back.
//!
//! The ACK answers in the sender's own terms: its delimiters, its MSH-3..6 swapped, its control id in MSA-2,
//! and text encoded in the charset the caller chose (normally the sender's MSH-18 charset), so an 8859/1
//! sender gets an 8859/1 error text.

use super::charset::Charset;
use super::delimiters::Delimiters;
use super::error::{ErrorCode, Location, ParseError};
use super::escape::escape_text;
use super::header::Header;
use super::message::Message;

/// MSA-1 acknowledgement codes (original mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AckCode {
    /// Application accept.
    AA,
    /// Application error.
    AE,
    /// Application reject.
    AR,
}

impl AckCode {
    /// The MSA-1 spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::AA => "AA",
            AckCode::AE => "AE",
            AckCode::AR => "AR",
        }
    }
}

/// What goes in the ERR segment of an AE/AR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckError {
    /// HL7 table 0357 code (ERR-3).
    pub code: ErrorCode,
    /// Where the problem is (ERR-2); `None` leaves ERR-2 empty.
    pub location: Option<Location>,
    /// Text for the sender (ERR-8).
    pub message: String,
}

impl From<ParseError> for AckError {
    fn from(e: ParseError) -> Self {
        AckError { code: e.code, location: Some(e.location), message: e.reason }
    }
}

/// Builds the ACK bytes, encoded in `cs`.
///
/// MSH with the original's delimiters (default ones when `original` is None), MSH-3/4 <- original MSH-5/6,
/// MSH-5/6 <- original MSH-3/4 (raw bytes copied), MSH-7 = `timestamp`, MSH-9 = `ACK^<trigger>^ACK` (`ACK`
/// alone if none), MSH-10 = `control_id`, MSH-11 = original MSH-11 or `P`, MSH-12 = original MSH-12 or `2.5`,
/// MSH-18 = `cs.msh18()`; `MSA|<code>|<original MSH-10>`; for AE/AR with an `error`, an ERR
/// segment `ERR||<seg>^<sequence>^<field>|<code>^<text>^HL70357|E||||<escaped message>`. Segments end with CR.
pub fn build_ack(
    original: Option<&Header<'_>>,
    code: AckCode,
    error: Option<&AckError>,
    control_id: &str,
    timestamp: &str,
    cs: Charset,
) -> Vec<u8> {
    let d = original.map_or_else(Delimiters::default, Header::delimiters);
    let from_original = |n: usize| original.map_or(&[][..], |h| h.field(n));
    let or_default = |n: usize, default: &'static str| {
        let value = from_original(n);
        if value.is_empty() { default.as_bytes() } else { value }
    };
    let trigger = original.map_or(&[][..], |h| h.component(9, 2));
    let message_type = if trigger.is_empty() {
        b"ACK".to_vec()
    } else {
        [&b"ACK"[..], &[d.component], trigger, &[d.component], b"ACK"].concat()
    };
    let control_id = cs.encode(&escape_text(control_id, &d)).into_owned();
    let timestamp = cs.encode(&escape_text(timestamp, &d)).into_owned();
    // MSH-3 .. MSH-18 in order.
    let msh_fields: [&[u8]; 16] = [
        from_original(5),
        from_original(6),
        from_original(3),
        from_original(4),
        &timestamp,
        b"",
        &message_type,
        &control_id,
        or_default(11, "P"),
        or_default(12, "2.5"),
        b"",
        b"",
        b"",
        b"",
        b"",
        cs.msh18().as_bytes(),
    ];
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"MSH");
    out.push(d.field);
    out.extend_from_slice(&d.encoding_chars());
    for value in msh_fields {
        out.push(d.field);
        out.extend_from_slice(value);
    }
    out.push(b'\r');

    out.extend_from_slice(b"MSA");
    out.push(d.field);
    out.extend_from_slice(code.as_str().as_bytes());
    out.push(d.field);
    out.extend_from_slice(from_original(10));
    out.push(b'\r');

    if let Some(error) = error.filter(|_| code != AckCode::AA) {
        push_err(&mut out, error, &d, cs);
    }
    out
}

/// Appends `ERR||<seg>^<sequence>^<field>|<code>^<text>^HL70357|E||||<escaped message>` and its CR.
fn push_err(out: &mut Vec<u8>, error: &AckError, d: &Delimiters, cs: Charset) {
    let component = char::from(d.component);
    let sep = char::from(d.field);
    let location = error.location.as_ref().map_or_else(String::new, |l| {
        let segment = escape_text(&l.segment, d);
        if l.field == 0 {
            format!("{segment}{component}{}", l.sequence)
        } else {
            format!("{segment}{component}{}{component}{}", l.sequence, l.field)
        }
    });
    let text = format!(
        "ERR{sep}{sep}{location}{sep}{code}{component}{label}{component}HL70357{sep}E{sep}{sep}{sep}{sep}{message}",
        code = error.code.code(),
        label = error.code.text(),
        message = escape_text(&error.message, d),
    );
    out.extend_from_slice(&cs.encode(&text));
    out.push(b'\r');
}

/// What an ACK says, as read by [`read_ack`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckSummary {
    /// MSA-1 (`AA`, `AE`, `AR`, or the enhanced-mode `CA`/`CE`/`CR`).
    pub code: String,
    /// MSA-2: the control id of the message acknowledged.
    pub acked_control_id: String,
    /// ERR-8, else ERR-3.2, else MSA-3 (older versions), when any is filled.
    pub error_text: Option<String>,
}

/// Reads an ACK (for `relais send` and tests): MSA-1 code, MSA-2, and the error text if any.
/// Text is decoded in the ACK's MSH-18 charset (UTF-8 when empty or unknown).
/// Errors: the header errors of [`Header::parse`]; no MSA -> `MSA` SegmentSequence; empty MSA-1 -> `MSA-1`
/// RequiredFieldMissing.
pub fn read_ack(raw: &[u8]) -> Result<AckSummary, ParseError> {
    let header = Header::parse(raw)?;
    let cs = header.charset().ok().flatten().unwrap_or(Charset::Utf8);
    let message = Message::parse(raw)?.with_charset(cs);
    if message.segment("MSA").is_none() {
        return Err(ParseError::at(
            "MSA",
            0,
            ErrorCode::SegmentSequence,
            "the acknowledgement has no MSA segment",
        ));
    }
    let code =
        message.text("MSA-1").map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()).ok_or_else(|| {
            ParseError::at("MSA", 1, ErrorCode::RequiredFieldMissing, "MSA-1 (acknowledgement code) is empty")
        })?;
    let acked_control_id = message.text("MSA-2").unwrap_or_default();
    let error_text = ["ERR-8", "ERR-3.2", "MSA-3"].into_iter().find_map(|path| message.text(path));
    Ok(AckSummary { code, acked_control_id, error_text })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: &str = "20261122143016+0100";

    fn a01(charset: &str) -> String {
        format!(
            "MSH|^~\\&|DXCARE|CHMAYENNE|RELAIS|GHT53|20261122143015||ADT^A01^ADT_A01|MSG0001|P|2.5^FRA^2.11|||||FRA|{charset}|FR\rEVN||20261122143000\r"
        )
    }

    fn segments(ack: &[u8]) -> Vec<&[u8]> {
        ack.split(|&b| b == b'\r').filter(|s| !s.is_empty()).collect()
    }

    #[test]
    fn aa_for_a_utf8_a01() {
        let raw = a01("UNICODE UTF-8");
        let h = Header::parse(raw.as_bytes()).unwrap();
        let ack = build_ack(Some(&h), AckCode::AA, None, "RELAIS42", TS, Charset::Utf8);
        assert!(ack.ends_with(b"\r"));
        let m = Message::parse(&ack).unwrap();
        assert_eq!(m.get("MSH-3"), Some(&b"RELAIS"[..]));
        assert_eq!(m.get("MSH-4"), Some(&b"GHT53"[..]));
        assert_eq!(m.get("MSH-5"), Some(&b"DXCARE"[..]));
        assert_eq!(m.get("MSH-6"), Some(&b"CHMAYENNE"[..]));
        assert_eq!(m.get("MSH-7"), Some(TS.as_bytes()));
        assert_eq!(m.get("MSH-9"), Some(&b"ACK^A01^ACK"[..]));
        assert_eq!(m.get("MSH-10"), Some(&b"RELAIS42"[..]));
        assert_eq!(m.get("MSH-11"), Some(&b"P"[..]));
        assert_eq!(m.get("MSH-12"), Some(&b"2.5^FRA^2.11"[..]));
        assert_eq!(m.get("MSH-18"), Some(&b"UNICODE UTF-8"[..]));
        assert_eq!(segments(&ack)[1], b"MSA|AA|MSG0001");
        assert!(m.segment("ERR").is_none());
        let summary = read_ack(&ack).unwrap();
        assert_eq!(
            summary,
            AckSummary { code: "AA".into(), acked_control_id: "MSG0001".into(), error_text: None }
        );
    }

    #[test]
    fn ar_with_err_for_an_unknown_charset() {
        let raw = a01("8859/2");
        let h = Header::parse(raw.as_bytes()).unwrap();
        let e = h.charset().unwrap_err();
        let reason = e.reason.clone();
        let ack = build_ack(Some(&h), AckCode::AR, Some(&e.into()), "RELAIS43", TS, Charset::Utf8);
        let segs = segments(&ack);
        assert_eq!(segs[1], b"MSA|AR|MSG0001");
        let expected = format!("ERR||MSH^1^18|103^Table value not found^HL70357|E||||{reason}");
        assert_eq!(segs[2], expected.as_bytes());
        let summary = read_ack(&ack).unwrap();
        assert_eq!(summary.code, "AR");
        assert_eq!(summary.acked_control_id, "MSG0001");
        assert_eq!(summary.error_text.as_deref(), Some(reason.as_str()));
    }

    #[test]
    fn err_text_with_delimiters_is_escaped_and_read_back() {
        let raw = a01("UNICODE UTF-8");
        let h = Header::parse(raw.as_bytes()).unwrap();
        let error = AckError {
            code: ErrorCode::DataType,
            location: Some(Location::field("PID", 7)),
            message: "date `1989|02^14` invalide ~ & \\".into(),
        };
        let ack = build_ack(Some(&h), AckCode::AE, Some(&error), "R1", TS, Charset::Utf8);
        let err = segments(&ack)[2];
        assert!(err.starts_with(b"ERR||PID^1^7|102^Data type error^HL70357|E||||date `1989\\F\\02\\S\\14`"));
        assert_eq!(err.iter().filter(|&&b| b == b'|').count(), 8);
        assert_eq!(read_ack(&ack).unwrap().error_text.as_deref(), Some(error.message.as_str()));
    }

    #[test]
    fn latin1_sender_gets_latin1_error_text() {
        let raw = a01("8859/1");
        let h = Header::parse(raw.as_bytes()).unwrap();
        let error =
            AckError { code: ErrorCode::DataType, location: None, message: "Donnée refusée".into() };
        let ack = build_ack(Some(&h), AckCode::AE, Some(&error), "R2", TS, Charset::Latin1);
        assert!(ack.windows(7).any(|w| w == b"Donn\xE9e "));
        assert!(!ack.windows(2).any(|w| w == "é".as_bytes()));
        assert!(segments(&ack)[2].starts_with(b"ERR|||102^"));
        let summary = read_ack(&ack).unwrap();
        assert_eq!(summary.error_text.as_deref(), Some("Donnée refusée"));
    }

    #[test]
    fn ack_without_a_readable_header() {
        let e = Header::parse(b"garbage").unwrap_err();
        let ack = build_ack(None, AckCode::AR, Some(&e.into()), "R3", TS, Charset::Utf8);
        let m = Message::parse(&ack).unwrap();
        assert_eq!(m.get("MSH-9"), Some(&b"ACK"[..]));
        assert_eq!(m.get("MSH-12"), Some(&b"2.5"[..]));
        assert_eq!(m.get("MSH-11"), Some(&b"P"[..]));
        assert_eq!(m.get("ERR-2"), Some(&b"MSH^1"[..]));
        assert_eq!(m.get("ERR-3.1"), Some(&b"100"[..]));
        let summary = read_ack(&ack).unwrap();
        assert_eq!((summary.code.as_str(), summary.acked_control_id.as_str()), ("AR", ""));
        assert!(summary.error_text.is_some());
    }

    #[test]
    fn custom_delimiters_are_kept_in_the_ack() {
        let raw = b"MSH#$%*@#APP#FAC#RCV#RFAC#1##ADT$A04#C9\r";
        let h = Header::parse(raw).unwrap();
        let error = AckError { code: ErrorCode::InternalError, location: None, message: "a#b".into() };
        let ack = build_ack(Some(&h), AckCode::AE, Some(&error), "R4", TS, Charset::Utf8);
        assert!(ack.starts_with(b"MSH#$%*@#RCV#RFAC#APP#FAC#"));
        let summary = read_ack(&ack).unwrap();
        assert_eq!(summary.acked_control_id, "C9");
        assert_eq!(summary.error_text.as_deref(), Some("a#b"));
        assert_eq!(Message::parse(&ack).unwrap().get("MSH-9"), Some(&b"ACK$A04$ACK"[..]));
    }

    #[test]
    fn read_ack_errors() {
        let e = read_ack(b"MSH|^~\\&|A|B|C|D|1||ACK|1\r").unwrap_err();
        assert_eq!(e.location.to_string(), "MSA");
        let e = read_ack(b"MSH|^~\\&|A|B|C|D|1||ACK|1\rMSA||X\r").unwrap_err();
        assert_eq!(e.location.to_string(), "MSA-1");
        assert!(read_ack(b"nothing").is_err());
    }
}
