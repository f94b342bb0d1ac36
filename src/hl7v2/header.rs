//! The MSH segment read on its own, without touching the rest of the message: the ingest fast path.
//!
//! [`Header::parse`] finds MSH at the start of the bytes (after an optional UTF-8 BOM and blank lines),
//! checks the encoding characters and the two fields every ACK needs (MSH-9, MSH-10), and records where
//! each MSH field starts. It never allocates; field values are sub-slices of the input, still escaped.

use super::charset::Charset;
use super::delimiters::Delimiters;
use super::error::{ErrorCode, ParseError};
use super::escape::decode_text;

/// How many MSH field separators are indexed up front (MSH-1 .. MSH-31); later fields are found by scanning.
const INDEXED_SEPARATORS: usize = 31;

/// The MSH segment read without parsing the rest (fast path for ingest).
#[derive(Debug, Clone)]
pub struct Header<'a> {
    /// The MSH segment, from `M` up to (not including) its CR or LF.
    segment: &'a [u8],
    /// Offset of the MSH segment in the input given to `parse`.
    offset: usize,
    delimiters: Delimiters,
    /// Offsets in `segment` of the first field separators; `separators[0]` is 3 (MSH-1 itself).
    separators: [u32; INDEXED_SEPARATORS],
    /// How many entries of `separators` are filled.
    indexed: usize,
}

/// Skips a leading UTF-8 BOM and whitespace (blank lines before MSH); returns the offset of the first byte kept.
pub(crate) fn content_start(raw: &[u8]) -> usize {
    let after_bom = if raw.starts_with(b"\xEF\xBB\xBF") { 3 } else { 0 };
    let rest = raw.get(after_bom..).unwrap_or_default();
    after_bom + rest.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(rest.len())
}

impl<'a> Header<'a> {
    /// Reads MSH at the start of `raw` (leading CR/LF/whitespace and a UTF-8 BOM tolerated).
    ///
    /// Errors: no MSH first -> `MSH` SegmentSequence; MSH shorter than MSH-2 or bad encoding characters ->
    /// `MSH-2` DataType; MSH-9 empty or missing -> `MSH-9` RequiredFieldMissing; same for MSH-10.
    pub fn parse(raw: &'a [u8]) -> Result<Header<'a>, ParseError> {
        let offset = content_start(raw);
        let rest = raw.get(offset..).unwrap_or_default();
        if !rest.starts_with(b"MSH") {
            return Err(ParseError::at(
                "MSH",
                0,
                ErrorCode::SegmentSequence,
                "the message does not start with MSH",
            ));
        }
        let end = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
        let segment = rest.get(..end).unwrap_or_default();
        if segment.len() > u32::MAX as usize {
            return Err(ParseError::at("MSH", 0, ErrorCode::InternalError, "MSH segment too large"));
        }
        let &[_, _, _, field_separator, ..] = segment else {
            return Err(ParseError::at(
                "MSH",
                2,
                ErrorCode::DataType,
                "MSH ends before its encoding characters",
            ));
        };
        let mut separators = [0u32; INDEXED_SEPARATORS];
        let mut indexed = 0;
        for (slot, position) in separators.iter_mut().zip(memchr::memchr_iter(field_separator, segment)) {
            // `segment.len()` fits in u32 (checked above).
            *slot = position as u32;
            indexed += 1;
        }
        let mut header = Header { segment, offset, delimiters: Delimiters::default(), separators, indexed };
        header.delimiters = Delimiters::from_msh(field_separator, header.field(2))?;
        for (n, what) in [(9, "message type"), (10, "message control id")] {
            if header.field(n).trim_ascii().is_empty() {
                return Err(ParseError::at(
                    "MSH",
                    n,
                    ErrorCode::RequiredFieldMissing,
                    format!("MSH-{n} ({what}) is empty or missing"),
                ));
            }
        }
        Ok(header)
    }

    /// The encoding characters of the message.
    pub fn delimiters(&self) -> Delimiters {
        self.delimiters
    }

    /// The whole MSH segment (without its segment separator).
    pub fn raw(&self) -> &'a [u8] {
        self.segment
    }

    /// Offset of the MSH segment in the bytes given to [`Header::parse`] (non-zero after a BOM or blank lines).
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// MSH-n raw bytes (still escaped), empty slice when absent. MSH-1 = the field separator, MSH-2 = encoding chars.
    pub fn field(&self, n: usize) -> &'a [u8] {
        if n == 0 {
            return &[];
        }
        // Field MSH-n (n >= 2) runs from separator n-2 (exclusive) to separator n-1 or the segment end.
        let start = if n == 1 { self.separator(0) } else { self.separator(n - 2).map(|s| s + 1) };
        let Some(start) = start else { return &[] };
        let end = if n == 1 { start + 1 } else { self.separator(n - 1).unwrap_or(self.segment.len()) };
        self.segment.get(start..end).unwrap_or_default()
    }

    /// Offset in the segment of the `k`-th field separator (0-based), if there is one.
    fn separator(&self, k: usize) -> Option<usize> {
        match self.separators.get(k) {
            Some(&position) if k < self.indexed => Some(position as usize),
            _ if self.indexed < INDEXED_SEPARATORS => None,
            _ => memchr::memchr_iter(self.delimiters.field, self.segment).nth(k),
        }
    }

    /// MSH-n component `c` (1-based) raw bytes, first repetition; empty when absent.
    /// MSH-1 and MSH-2 are not split (they hold the delimiters themselves).
    pub fn component(&self, n: usize, c: usize) -> &'a [u8] {
        let field = self.field(n);
        if n <= 2 {
            return if c == 1 { field } else { &[] };
        }
        let first_repetition = nth_part(field, self.delimiters.repetition, 1).unwrap_or_default();
        nth_part(first_repetition, self.delimiters.component, c).unwrap_or_default()
    }

    /// MSH-18 read: `Ok(None)` when empty, `Ok(Some(cs))` when known, `Err(MSH-18 TableValueNotFound)` when
    /// unknown. Only the first repetition counts (later ones name alternate charsets).
    pub fn charset(&self) -> Result<Option<Charset>, ParseError> {
        let first = nth_part(self.field(18), self.delimiters.repetition, 1).unwrap_or_default().trim_ascii();
        if first.is_empty() {
            return Ok(None);
        }
        std::str::from_utf8(first).ok().and_then(Charset::from_msh18).map(Some).ok_or_else(|| {
            ParseError::at(
                "MSH",
                18,
                ErrorCode::TableValueNotFound,
                "unknown character set in MSH-18 (accepted: UNICODE UTF-8, 8859/1, 8859/15, ASCII)",
            )
        })
    }

    /// MSH-n unescaped and decoded as text in `cs` (MSH-1 and MSH-2 are returned as they are).
    pub fn text(&self, n: usize, cs: Charset) -> String {
        let field = self.field(n);
        if n <= 2 { cs.decode(field).into_owned() } else { decode_text(field, &self.delimiters, cs) }
    }
}

/// The `n`-th (1-based) part of `raw` split on `separator`; `None` when there are fewer parts (or `n` is 0).
pub(crate) fn nth_part(raw: &[u8], separator: u8, n: usize) -> Option<&[u8]> {
    if n == 0 {
        return None;
    }
    // Fields and components are short: a plain byte loop beats a SIMD search restarted per part.
    raw.split(|&b| b == separator).nth(n - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A01: &[u8] = b"MSH|^~\\&|DXCARE|CHMAYENNE|RELAIS|GHT53|20261122143015||ADT^A01^ADT_A01|MSG0001|P|2.5^FRA^2.11|||||FRA|UNICODE UTF-8|FR\rEVN||20261122143000\r";

    #[test]
    fn reads_the_fields_ingest_needs() {
        let h = Header::parse(A01).unwrap();
        assert_eq!(h.field(1), b"|");
        assert_eq!(h.field(2), b"^~\\&");
        assert_eq!(h.field(3), b"DXCARE");
        assert_eq!(h.field(4), b"CHMAYENNE");
        assert_eq!(h.field(9), b"ADT^A01^ADT_A01");
        assert_eq!(h.component(9, 2), b"A01");
        assert_eq!(h.component(12, 1), b"2.5");
        assert_eq!(h.field(10), b"MSG0001");
        assert_eq!(h.field(18), b"UNICODE UTF-8");
        assert_eq!(h.field(19), b"FR");
        assert_eq!(h.field(20), b"");
        assert_eq!(h.field(0), b"");
        assert_eq!(h.charset().unwrap(), Some(Charset::Utf8));
        assert_eq!(h.delimiters(), Delimiters::default());
        assert_eq!(h.raw().last(), Some(&b'R'));
    }

    #[test]
    fn bom_and_leading_newlines_are_tolerated() {
        let mut raw = b"\xEF\xBB\xBF\r\n\n".to_vec();
        raw.extend_from_slice(A01);
        let h = Header::parse(&raw).unwrap();
        assert_eq!(h.field(10), b"MSG0001");
        assert_eq!(h.offset(), 6);
    }

    #[test]
    fn no_msh_is_a_segment_sequence_error_at_msh() {
        for raw in [&b"PID|1||123"[..], b"", b"\r\n", b"MS"] {
            let e = Header::parse(raw).unwrap_err();
            assert_eq!(e.location.to_string(), "MSH");
            assert_eq!(e.code.code(), 100);
        }
    }

    #[test]
    fn missing_type_or_control_id_is_101_at_that_field() {
        let e = Header::parse(b"MSH|^~\\&|A|B|C|D|20260101||||P|2.5").unwrap_err();
        assert_eq!((e.location.to_string(), e.code.code()), ("MSH-9".to_string(), 101));
        let e = Header::parse(b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01||P|2.5").unwrap_err();
        assert_eq!((e.location.to_string(), e.code.code()), ("MSH-10".to_string(), 101));
        let e = Header::parse(b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01").unwrap_err();
        assert_eq!(e.location.to_string(), "MSH-10");
    }

    #[test]
    fn bad_encoding_characters_are_102_at_msh_2() {
        for raw in [&b"MSH"[..], b"MSH|", b"MSH|^~|A", b"MSH|^^\\&|A|B|C|D|1||ADT^A01|1"] {
            let e = Header::parse(raw).unwrap_err();
            assert_eq!((e.location.to_string(), e.code.code()), ("MSH-2".to_string(), 102), "{raw:?}");
        }
    }

    #[test]
    fn unknown_or_empty_charset() {
        let h = Header::parse(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5||||||8859/2").unwrap();
        let e = h.charset().unwrap_err();
        assert_eq!((e.location.to_string(), e.code.code()), ("MSH-18".to_string(), 103));
        let h = Header::parse(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5").unwrap();
        assert_eq!(h.charset().unwrap(), None);
        let h = Header::parse(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5||||||8859/15~UNICODE UTF-8").unwrap();
        assert_eq!(h.charset().unwrap(), Some(Charset::Latin9));
    }

    #[test]
    fn custom_delimiters_and_text() {
        let h = Header::parse(b"MSH#$%*@#APP*T*X#FAC#C#D#1##ADT$A01#1\r").unwrap();
        assert_eq!(h.delimiters().component, b'$');
        assert_eq!(h.component(9, 2), b"A01");
        assert_eq!(h.text(3, Charset::Utf8), "APP@X");
        assert_eq!(h.text(2, Charset::Utf8), "$%*@");
    }

    #[test]
    fn fields_beyond_the_index_are_found_by_scanning() {
        let mut raw = b"MSH|^~\\&|A|B|C|D|1||ADT^A01|1".to_vec();
        for n in 11..=40 {
            raw.extend_from_slice(format!("|F{n}").as_bytes());
        }
        let h = Header::parse(&raw).unwrap();
        assert_eq!(h.field(31), b"F31");
        assert_eq!(h.field(32), b"F32");
        assert_eq!(h.field(40), b"F40");
        assert_eq!(h.field(41), b"");
    }
}
