//! The five ER7 encoding characters a message declares in MSH-1 and MSH-2, and their validation.

use super::error::{ErrorCode, ParseError};

/// The five encoding characters from MSH-1/MSH-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    /// Field separator (MSH-1), usually `|`.
    pub field: u8,
    /// Component separator, usually `^`.
    pub component: u8,
    /// Repetition separator, usually `~`.
    pub repetition: u8,
    /// Escape character, usually `\`.
    pub escape: u8,
    /// Subcomponent separator, usually `&`.
    pub subcomponent: u8,
}

impl Default for Delimiters {
    /// `| ^ ~ \ &`.
    fn default() -> Self {
        Delimiters { field: b'|', component: b'^', repetition: b'~', escape: b'\\', subcomponent: b'&' }
    }
}

impl Delimiters {
    /// Reads the field separator and the MSH-2 encoding characters (`^~\&`, optionally followed by the
    /// v2.7 truncation character). Every character must be printable ASCII, not a letter or digit, and
    /// all must differ; otherwise the error points at MSH-2 (DataType).
    pub fn from_msh(field: u8, encoding_chars: &[u8]) -> Result<Delimiters, ParseError> {
        let bad = |reason: &str| ParseError::at("MSH", 2, ErrorCode::DataType, reason);
        let &[component, repetition, escape, subcomponent, ref rest @ ..] = encoding_chars else {
            return Err(bad(
                "MSH-2 must hold 4 encoding characters (component, repetition, escape, subcomponent)",
            ));
        };
        if rest.len() > 1 {
            return Err(bad("MSH-2 holds more than 5 encoding characters"));
        }
        let all = [field, component, repetition, escape, subcomponent];
        let truncation = rest.first().copied();
        let usable = |b: u8| b.is_ascii_graphic() && !b.is_ascii_alphanumeric();
        if !all.iter().chain(truncation.iter()).all(|&b| usable(b)) {
            return Err(bad("encoding characters must be printable ASCII punctuation"));
        }
        let distinct = all.iter().enumerate().all(|(i, a)| all[i + 1..].iter().all(|b| a != b))
            && truncation.is_none_or(|t| !all.contains(&t));
        if !distinct {
            return Err(bad("encoding characters must all differ"));
        }
        Ok(Delimiters { field, component, repetition, escape, subcomponent })
    }

    /// The four MSH-2 characters in their standard order: component, repetition, escape, subcomponent.
    pub fn encoding_chars(&self) -> [u8; 4] {
        [self.component, self.repetition, self.escape, self.subcomponent]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_and_custom_delimiters_are_read() {
        assert_eq!(Delimiters::from_msh(b'|', b"^~\\&").unwrap(), Delimiters::default());
        let custom = Delimiters::from_msh(b'#', b"$%*@").unwrap();
        assert_eq!((custom.field, custom.component, custom.repetition), (b'#', b'$', b'%'));
        assert_eq!((custom.escape, custom.subcomponent), (b'*', b'@'));
        assert!(Delimiters::from_msh(b'|', b"^~\\&#").is_ok());
    }

    #[test]
    fn bad_encoding_characters_are_refused_at_msh_2() {
        for (sep, chars) in [
            (b'|', &b"^~\\"[..]),
            (b'|', b"^~\\&#!"),
            (b'|', b"^^\\&"),
            (b'|', b"^~|&"),
            (b'|', b"^~A&"),
            (b'A', b"^~\\&"),
        ] {
            let e = Delimiters::from_msh(sep, chars).unwrap_err();
            assert_eq!(e.location.to_string(), "MSH-2");
            assert_eq!(e.code, ErrorCode::DataType);
        }
    }
}
