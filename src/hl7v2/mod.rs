//! HL7v2 ER7 reading (zero-copy), charsets, escape sequences and ACK building.
//!
//! - [`Header`]: MSH alone, no allocation — what ingest reads for every message.
//! - [`Message`]: every segment and field indexed in one pass; components split on demand; terser-like paths.
//! - [`escape`]: escape sequences, resolved on bytes before [`Charset`] decoding.
//! - [`ack`]: original-mode ACK/NAK bytes, and reading them back.
//!
//! Nothing here panics on any input; every error is a [`ParseError`] naming a segment/field and an HL7 code.

pub mod ack;
pub mod charset;
pub mod delimiters;
pub mod error;
pub mod escape;
pub mod header;
pub mod message;

#[cfg(test)]
mod proptests;

pub use ack::{AckCode, AckError, AckSummary, build_ack, read_ack};
pub use charset::Charset;
pub use delimiters::Delimiters;
pub use error::{ErrorCode, Location, ParseError};
pub use escape::{decode_text, decode_trimmed, escape_text, unescape};
pub use header::Header;
pub use message::{Field, Message, Segment};
