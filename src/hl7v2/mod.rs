//! HL7v2 ER7 reading (zero-copy), charsets, escape sequences and ACK building.

pub mod charset;
pub mod error;

pub use charset::Charset;
pub use error::{ErrorCode, Location, ParseError};
