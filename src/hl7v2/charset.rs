//! Character sets of MSH-18: naming, decoding, encoding and validation.
//!
//! Every charset Relais accepts is ASCII-compatible, so delimiters are found on raw bytes and only field
//! values are decoded. ISO-8859-1 is decoded exactly (byte = code point), not as windows-1252.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use super::error::{ErrorCode, ParseError};

/// Character sets Relais accepts in MSH-18.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Charset {
    /// `ASCII`.
    Ascii,
    /// `8859/1` (ISO-8859-1).
    Latin1,
    /// `8859/15` (ISO-8859-15, the French PAM default).
    Latin9,
    /// `UNICODE UTF-8`.
    Utf8,
}

impl Charset {
    /// Reads an MSH-18 value (trimmed, case-insensitive); `None` when unknown.
    pub fn from_msh18(value: &str) -> Option<Charset> {
        let v = value.trim();
        [Charset::Utf8, Charset::Latin1, Charset::Latin9, Charset::Ascii]
            .into_iter()
            .find(|cs| cs.msh18().eq_ignore_ascii_case(v))
    }

    /// The MSH-18 spelling.
    pub fn msh18(self) -> &'static str {
        match self {
            Charset::Ascii => "ASCII",
            Charset::Latin1 => "8859/1",
            Charset::Latin9 => "8859/15",
            Charset::Utf8 => "UNICODE UTF-8",
        }
    }

    /// The IANA name, for HTTP `Content-Type` parameters.
    pub fn iana(self) -> &'static str {
        match self {
            Charset::Ascii => "us-ascii",
            Charset::Latin1 => "iso-8859-1",
            Charset::Latin9 => "iso-8859-15",
            Charset::Utf8 => "utf-8",
        }
    }

    /// Bytes in this charset to text; invalid bytes become U+FFFD (use [`Charset::validate`] to refuse them).
    pub fn decode(self, bytes: &[u8]) -> Cow<'_, str> {
        match self {
            Charset::Utf8 => String::from_utf8_lossy(bytes),
            Charset::Latin1 => encoding_rs::mem::decode_latin1(bytes),
            Charset::Latin9 => encoding_rs::ISO_8859_15.decode_without_bom_handling(bytes).0,
            Charset::Ascii => {
                if bytes.is_ascii() {
                    // ASCII is valid UTF-8.
                    String::from_utf8_lossy(bytes)
                } else {
                    Cow::Owned(
                        bytes.iter().map(|&b| if b.is_ascii() { b as char } else { '\u{FFFD}' }).collect(),
                    )
                }
            }
        }
    }

    /// Text to bytes in this charset; characters it cannot hold become `?`.
    pub fn encode(self, text: &str) -> Cow<'_, [u8]> {
        match self {
            Charset::Utf8 => Cow::Borrowed(text.as_bytes()),
            _ if text.is_ascii() => Cow::Borrowed(text.as_bytes()),
            Charset::Latin1 => Cow::Owned(
                text.chars().map(|c| if (c as u32) < 256 { c as u32 as u8 } else { b'?' }).collect(),
            ),
            Charset::Latin9 => {
                let (bytes, _, _) = encoding_rs::ISO_8859_15.encode(text);
                // encoding_rs writes unmappable characters as HTML numeric references; keep `?` instead.
                if bytes.windows(2).any(|w| w == b"&#") {
                    let mut out = Vec::with_capacity(text.len());
                    let mut buf = [0u8; 4];
                    for c in text.chars() {
                        let (b, _, bad) = encoding_rs::ISO_8859_15.encode(c.encode_utf8(&mut buf));
                        if bad { out.push(b'?') } else { out.extend_from_slice(&b) }
                    }
                    Cow::Owned(out)
                } else {
                    Cow::Owned(bytes.into_owned())
                }
            }
            Charset::Ascii => {
                Cow::Owned(text.chars().map(|c| if c.is_ascii() { c as u8 } else { b'?' }).collect())
            }
        }
    }

    /// Refuses bytes that are not text in this charset: NUL bytes, invalid UTF-8, non-ASCII under ASCII.
    /// The error points at MSH-18 (the declared charset does not describe the bytes).
    pub fn validate(self, bytes: &[u8]) -> Result<(), ParseError> {
        self.checked_text(bytes).map(|_| ())
    }

    /// [`Charset::validate`], giving the bytes back as text when the charset is UTF-8 (checked once here, so
    /// values can be sliced from it without a second check); `None` for the other charsets.
    pub fn checked_text(self, bytes: &[u8]) -> Result<Option<&str>, ParseError> {
        if let Some(pos) = memchr::memchr(0, bytes) {
            return Err(ParseError::at(
                "MSH",
                18,
                ErrorCode::DataType,
                format!("binary content: NUL byte at offset {pos}"),
            ));
        }
        match self {
            Charset::Utf8 => std::str::from_utf8(bytes).map(Some).map_err(|e| {
                ParseError::at(
                    "MSH",
                    18,
                    ErrorCode::DataType,
                    format!(
                        "not valid UTF-8 at offset {} although MSH-18 says UNICODE UTF-8",
                        e.valid_up_to()
                    ),
                )
            }),
            Charset::Ascii => match bytes.iter().position(|b| !b.is_ascii()) {
                None => Ok(None),
                Some(pos) => Err(ParseError::at(
                    "MSH",
                    18,
                    ErrorCode::DataType,
                    format!("non-ASCII byte at offset {pos} although the charset is ASCII"),
                )),
            },
            Charset::Latin1 | Charset::Latin9 => Ok(None),
        }
    }
}

impl fmt::Display for Charset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.msh18())
    }
}

impl FromStr for Charset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Charset::from_msh18(s).ok_or_else(|| format!("unknown charset `{s}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msh18_spellings_round_trip() {
        for cs in [Charset::Ascii, Charset::Latin1, Charset::Latin9, Charset::Utf8] {
            assert_eq!(Charset::from_msh18(cs.msh18()), Some(cs));
        }
        assert_eq!(Charset::from_msh18(" unicode utf-8 "), Some(Charset::Utf8));
        assert_eq!(Charset::from_msh18("8859/2"), None);
    }

    #[test]
    fn latin9_has_the_euro_sign_latin1_does_not() {
        assert_eq!(Charset::Latin9.decode(&[0xA4]), "€");
        assert_eq!(Charset::Latin1.decode(&[0xA4]), "¤");
        assert_eq!(Charset::Latin9.encode("€é").as_ref(), &[0xA4, 0xE9]);
        assert_eq!(Charset::Latin1.encode("€é").as_ref(), b"?\xE9");
        assert_eq!(Charset::Latin9.encode("Ω").as_ref(), b"?");
    }

    #[test]
    fn latin1_is_exact_not_windows_1252() {
        // 0x80 is a C1 control in ISO-8859-1 (the euro sign only in windows-1252).
        assert_eq!(Charset::Latin1.decode(&[0x80]), "\u{80}");
    }

    #[test]
    fn validation_refuses_what_the_charset_cannot_be() {
        assert!(Charset::Utf8.validate("Bât".as_bytes()).is_ok());
        let e = Charset::Utf8.validate(b"B\xE2t").unwrap_err();
        assert_eq!(e.location.to_string(), "MSH-18");
        assert!(Charset::Ascii.validate(b"B\xE2t").is_err());
        assert!(Charset::Latin1.validate(b"B\xE2t").is_ok());
        assert!(Charset::Latin1.validate(b"a\0b").is_err());
        // The checked text comes back for UTF-8 only; a NUL byte is refused even though it is valid UTF-8.
        assert_eq!(Charset::Utf8.checked_text("Bât".as_bytes()).ok(), Some(Some("Bât")));
        assert_eq!(Charset::Latin1.checked_text(b"B\xE2t").ok(), Some(None));
        assert!(Charset::Utf8.checked_text(b"a\0b").is_err());
    }
}
