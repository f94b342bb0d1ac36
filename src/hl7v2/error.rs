//! Reading errors that name where in the message the problem is (segment, occurrence, field) and carry the
//! HL7 table 0357 code an ACK's ERR segment needs.

use std::fmt;

/// HL7 table 0357 message error condition codes used by Relais.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 100: segment sequence error (no MSH first, bad segment id, bytes outside a frame).
    SegmentSequence,
    /// 101: required field missing.
    RequiredFieldMissing,
    /// 102: data type error (bytes not valid in the declared charset, binary content).
    DataType,
    /// 103: table value not found (e.g. an unknown MSH-18).
    TableValueNotFound,
    /// 200: unsupported message type.
    UnsupportedMessageType,
    /// 205: duplicate key identifier (a control id reused for different content).
    DuplicateKey,
    /// 207: application internal error (also: message too large).
    InternalError,
}

impl ErrorCode {
    /// The numeric code of HL7 table 0357.
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::SegmentSequence => 100,
            ErrorCode::RequiredFieldMissing => 101,
            ErrorCode::DataType => 102,
            ErrorCode::TableValueNotFound => 103,
            ErrorCode::UnsupportedMessageType => 200,
            ErrorCode::DuplicateKey => 205,
            ErrorCode::InternalError => 207,
        }
    }

    /// The HL7 label of the code.
    pub fn text(self) -> &'static str {
        match self {
            ErrorCode::SegmentSequence => "Segment sequence error",
            ErrorCode::RequiredFieldMissing => "Required field missing",
            ErrorCode::DataType => "Data type error",
            ErrorCode::TableValueNotFound => "Table value not found",
            ErrorCode::UnsupportedMessageType => "Unsupported message type",
            ErrorCode::DuplicateKey => "Duplicate key identifier",
            ErrorCode::InternalError => "Application internal error",
        }
    }
}

/// Where in a message a problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Segment id, e.g. `MSH`.
    pub segment: String,
    /// 1-based occurrence of that segment in the message.
    pub sequence: usize,
    /// Field number; 0 means the whole segment.
    pub field: usize,
}

impl Location {
    /// A field of the first occurrence of `segment`.
    pub fn field(segment: &str, field: usize) -> Location {
        Location { segment: segment.into(), sequence: 1, field }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field == 0 {
            write!(f, "{}", self.segment)
        } else {
            write!(f, "{}-{}", self.segment, self.field)
        }
    }
}

/// A reading error a sender can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {reason}")]
pub struct ParseError {
    /// Where the problem is.
    pub location: Location,
    /// The HL7 table 0357 code.
    pub code: ErrorCode,
    /// What is wrong, in words.
    pub reason: String,
}

impl ParseError {
    /// An error at `segment`-`field` (first occurrence of the segment).
    pub fn at(segment: &str, field: usize, code: ErrorCode, reason: impl Into<String>) -> ParseError {
        ParseError { location: Location::field(segment, field), code, reason: reason.into() }
    }
}
