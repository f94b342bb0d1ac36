//! A whole ER7 message indexed in one pass: where each segment and each field is, nothing copied.
//!
//! [`Message::parse`] reads the header, then walks the bytes once with `memchr3` (field separator, CR, LF),
//! recording segment spans and field-separator offsets in two flat vectors. Repetitions, components and
//! subcomponents are split only when asked for. Segment separators may be CR, LF or CRLF; empty lines are
//! skipped. Every slice handed out borrows the input.

use std::fmt;

use super::charset::Charset;
use super::delimiters::Delimiters;
use super::error::{ErrorCode, Location, ParseError};
use super::escape::decode_text;
use super::header::{Header, content_start, nth_part};

/// Where one segment is in the input and where its field separators are in [`Message::separators`].
#[derive(Debug, Clone, Copy)]
struct SegmentSpan {
    /// The segment id (`PID`), validated at parse time: segments are found by comparing these three bytes.
    id: [u8; 3],
    /// Offset of the segment's first byte in the input.
    start: u32,
    /// Offset just past its last byte (its CR/LF excluded).
    end: u32,
    /// Index in `separators` of its first field separator.
    first_separator: u32,
    /// How many field separators it holds.
    separator_count: u32,
    /// 1-based occurrence among the segments with the same id.
    sequence: u32,
    /// True for MSH/BHS/FHS, whose first field is the field separator itself.
    header_like: bool,
}

/// A whole message indexed once (segments and fields); components/subcomponents/repetitions split lazily.
/// Its `Debug` output names segments and sizes only, never field values (they may hold patient data).
#[derive(Clone)]
pub struct Message<'a> {
    raw: &'a [u8],
    header: Header<'a>,
    charset: Charset,
    spans: Vec<SegmentSpan>,
    /// Offsets in `raw` of every field separator, segment after segment.
    separators: Vec<u32>,
}

/// Segment ids seen so far and how often, to number occurrences without a map (falls back to counting).
struct OccurrenceCounter {
    seen: [([u8; 3], u32); 24],
    len: usize,
}

impl OccurrenceCounter {
    /// Counts one more `id`; returns its 1-based occurrence. `earlier` are the spans already indexed.
    fn next(&mut self, id: [u8; 3], earlier: &[SegmentSpan]) -> u32 {
        if let Some((_, count)) = self.seen.iter_mut().take(self.len).find(|(seen, _)| *seen == id) {
            *count += 1;
            return *count;
        }
        if let Some(slot) = self.seen.get_mut(self.len) {
            *slot = (id, 1);
            self.len += 1;
            return 1;
        }
        // More distinct ids than slots: count the earlier ones (rare, still correct).
        let earlier_count = earlier.iter().filter(|s| s.id == id).count();
        u32::try_from(earlier_count + 1).unwrap_or(u32::MAX)
    }
}

impl<'a> Message<'a> {
    /// [`Header::parse`] then index every segment. A segment id that is not 3 upper-case letters or digits
    /// (followed by the field separator or the end of the segment) is a SegmentSequence error at that segment.
    pub fn parse(raw: &'a [u8]) -> Result<Message<'a>, ParseError> {
        let header = Header::parse(raw)?;
        if u32::try_from(raw.len()).is_err() {
            return Err(ParseError::at("MSH", 0, ErrorCode::InternalError, "message larger than 4 GiB"));
        }
        let field_separator = header.delimiters().field;
        let mut spans: Vec<SegmentSpan> = Vec::with_capacity(24);
        // Room for one slot per byte: each segment's slots are written before they are known to be kept.
        let mut separators: Vec<u32> = Vec::with_capacity(raw.len() + 16);
        let mut counter = OccurrenceCounter { seen: [([0; 3], 0); 24], len: 0 };
        let mut segment_start = content_start(raw);
        // One pass: memchr2 finds each segment end (sparse); field separators are dense and irregular, so a
        // branch-free byte loop records them: every offset is written to the next slot, and the slot is kept
        // (the count moves on) only when the byte is the separator (no mispredicted branch per field).
        while segment_start < raw.len() {
            let rest = raw.get(segment_start..).unwrap_or_default();
            let length = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
            let segment = rest.get(..length).unwrap_or_default();
            let segment_end = segment_start + length;
            if !segment.iter().all(u8::is_ascii_whitespace) {
                let id = segment_id(segment, field_separator)
                    .ok_or_else(|| bad_segment_id(segment, spans.len()))?;
                let first_separator = separators.len();
                separators.resize(first_separator + segment.len(), 0);
                let slots = separators.get_mut(first_separator..).unwrap_or_default();
                let mut kept = 0usize;
                for (offset, &byte) in segment.iter().enumerate() {
                    // `kept` <= `offset` < the slots' length: always a slot to write.
                    if let Some(slot) = slots.get_mut(kept) {
                        // Offsets fit in u32 (checked above).
                        *slot = (segment_start + offset) as u32;
                    }
                    kept += usize::from(byte == field_separator);
                }
                separators.truncate(first_separator + kept);
                let sequence = counter.next(id, &spans);
                spans.push(SegmentSpan {
                    id,
                    start: segment_start as u32,
                    end: segment_end as u32,
                    first_separator: first_separator as u32,
                    separator_count: (separators.len() - first_separator) as u32,
                    sequence,
                    header_like: matches!(&id, b"MSH" | b"BHS" | b"FHS"),
                });
            }
            segment_start = segment_end + 1;
        }
        Ok(Message { raw, header, charset: Charset::Utf8, spans, separators })
    }

    /// The MSH segment, as read by [`Header::parse`].
    pub fn header(&self) -> &Header<'a> {
        &self.header
    }

    /// The encoding characters of the message.
    pub fn delimiters(&self) -> Delimiters {
        self.header.delimiters()
    }

    /// The charset used by the `text` methods: set by [`Message::with_charset`], UTF-8 by default.
    pub fn charset(&self) -> Charset {
        self.charset
    }

    /// The same message, decoding text in `cs`.
    pub fn with_charset(mut self, cs: Charset) -> Self {
        self.charset = cs;
        self
    }

    /// The bytes the message was parsed from.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// How many segments the message holds.
    pub fn segment_count(&self) -> usize {
        self.spans.len()
    }

    /// Every segment, in order.
    pub fn segments(&self) -> impl Iterator<Item = Segment<'a, '_>> {
        self.spans.iter().map(move |span| Segment { message: self, span })
    }

    /// The first segment with this id.
    pub fn segment(&self, id: &str) -> Option<Segment<'a, '_>> {
        self.segments_named(id).next()
    }

    /// Every segment with this id, in order (the three id bytes indexed at parse time compared, no text
    /// conversion per segment).
    pub fn segments_named<'m>(&'m self, id: &str) -> impl Iterator<Item = Segment<'a, 'm>> + use<'a, 'm> {
        let wanted: Option<[u8; 3]> = id.as_bytes().try_into().ok();
        self.spans
            .iter()
            .filter(move |span| Some(span.id) == wanted)
            .map(move |span| Segment { message: self, span })
    }

    /// Terser-like path: `PID-3` (the whole field, all repetitions), `PID-5.1` (first repetition),
    /// `PID-3(2).4.2` (repetition 1-based in parens), `ZBE-7.10`, `OBX(2)-5` (2nd OBX). Raw (escaped) bytes; `None` when the path is malformed or points past the data.
    pub fn get(&self, path: &str) -> Option<&'a [u8]> {
        self.locate(path).map(|(raw, _)| raw)
    }

    /// Same path as [`Message::get`], unescaped and decoded in the message charset; `None` when absent or empty.
    pub fn text(&self, path: &str) -> Option<String> {
        let (raw, literal) = self.locate(path)?;
        if raw.is_empty() {
            return None;
        }
        Some(if literal {
            self.charset.decode(raw).into_owned()
        } else {
            decode_text(raw, &self.delimiters(), self.charset)
        })
    }

    /// The bytes a terser path points at, and whether they are MSH-1/MSH-2 (delimiters, never unescaped).
    fn locate(&self, path: &str) -> Option<(&'a [u8], bool)> {
        let path = TerserPath::parse(path)?;
        let segment = self.segments().filter(|s| s.id() == path.segment).nth(path.occurrence - 1)?;
        let field = segment.field_raw(path.field)?;
        let d = self.delimiters();
        if segment.span.header_like && path.field <= 2 {
            // MSH-1/MSH-2 hold the delimiters: never split.
            let whole = path.repetition.is_none_or(|r| r == 1)
                && path.component.is_none_or(|c| c == 1)
                && path.subcomponent.is_none_or(|s| s == 1);
            return whole.then_some((field, true));
        }
        let repetition = match path.repetition {
            None if path.component.is_none() => return Some((field, false)),
            None => nth_part(field, d.repetition, 1)?,
            Some(r) => nth_part(field, d.repetition, r)?,
        };
        let Some(c) = path.component else { return Some((repetition, false)) };
        let component = nth_part(repetition, d.component, c)?;
        let Some(s) = path.subcomponent else { return Some((component, false)) };
        nth_part(component, d.subcomponent, s).map(|sub| (sub, false))
    }
}

/// The id of a segment when its first 3 bytes are upper-case letters or digits followed by the field
/// separator or nothing.
fn segment_id(segment: &[u8], field_separator: u8) -> Option<[u8; 3]> {
    let id_char = |b: &u8| b.is_ascii_uppercase() || b.is_ascii_digit();
    match segment {
        [a, b, c, rest @ ..] if [a, b, c].into_iter().all(id_char) => {
            (rest.first().is_none_or(|&f| f == field_separator)).then_some([*a, *b, *c])
        }
        _ => None,
    }
}

/// The error for a segment whose id is not valid; `index` is its 0-based position among indexed segments.
fn bad_segment_id(segment: &[u8], index: usize) -> ParseError {
    let shown: String =
        segment.iter().take(3).map(|&b| if b.is_ascii_graphic() { char::from(b) } else { '?' }).collect();
    ParseError {
        location: Location { segment: shown, sequence: 1, field: 0 },
        code: ErrorCode::SegmentSequence,
        reason: format!("segment {} has no valid id (3 upper-case letters or digits)", index + 1),
    }
}

/// A parsed terser path.
struct TerserPath<'p> {
    segment: &'p str,
    occurrence: usize,
    field: usize,
    /// `None` when the path names no repetition: the whole field, or the first repetition's components.
    repetition: Option<usize>,
    component: Option<usize>,
    subcomponent: Option<usize>,
}

impl<'p> TerserPath<'p> {
    fn parse(path: &'p str) -> Option<TerserPath<'p>> {
        let (segment_part, rest) = path.trim().split_once('-')?;
        let (segment, occurrence) = with_index(segment_part)?;
        let mut parts = rest.split('.');
        let field_part = parts.next()?;
        let (field, repetition) = with_index(field_part)?;
        let field = positive(field)?;
        let repetition = field_part.contains('(').then_some(repetition);
        let component = parts.next().map(positive).map_or(Some(None), |c| c.map(Some))?;
        let subcomponent = parts.next().map(positive).map_or(Some(None), |s| s.map(Some))?;
        if parts.next().is_some() || segment.len() != 3 {
            return None;
        }
        Some(TerserPath { segment, occurrence, field, repetition, component, subcomponent })
    }
}

/// `name(3)` -> ("name", 3); `name` -> ("name", 1); the index must be >= 1.
fn with_index(part: &str) -> Option<(&str, usize)> {
    match part.split_once('(') {
        None => Some((part, 1)),
        Some((name, index)) => Some((name, positive(index.strip_suffix(')')?)?)),
    }
    .filter(|(name, _)| !name.is_empty())
}

/// A number >= 1.
fn positive(text: &str) -> Option<usize> {
    text.parse::<usize>().ok().filter(|&n| n >= 1)
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("bytes", &self.raw.len())
            .field("charset", &self.charset)
            .field("segments", &self.segments().map(|s| s.id()).collect::<Vec<_>>())
            .finish()
    }
}

/// One segment of a [`Message`] (`Debug` shows its id and size, not its content).
#[derive(Clone, Copy)]
pub struct Segment<'a, 'm> {
    message: &'m Message<'a>,
    span: &'m SegmentSpan,
}

impl<'a, 'm> Segment<'a, 'm> {
    /// The segment id, e.g. `PID`.
    pub fn id(&self) -> &'a str {
        let start = self.span.start as usize;
        self.message.raw.get(start..start + 3).and_then(|id| std::str::from_utf8(id).ok()).unwrap_or_default()
    }

    /// 1-based occurrence among the segments with this id.
    pub fn sequence(&self) -> usize {
        self.span.sequence as usize
    }

    /// The segment bytes, without its segment separator.
    pub fn raw(&self) -> &'a [u8] {
        self.message.raw.get(self.span.start as usize..self.span.end as usize).unwrap_or_default()
    }

    /// How many fields follow the id (for MSH, MSH-1 the separator counts as one).
    pub fn field_count(&self) -> usize {
        let count = self.span.separator_count as usize;
        if self.span.header_like && count > 0 { count + 1 } else { count }
    }

    /// Field `n` in HL7 numbering (for MSH, `field(1)` is the separator); an empty field when absent.
    pub fn field(&self, n: usize) -> Field<'a> {
        let raw = self.field_raw(n).unwrap_or_default();
        Field { raw, delimiters: self.message.delimiters(), literal: self.span.header_like && n <= 2 }
    }

    /// Field `n` raw bytes, `None` when the segment has fewer fields.
    fn field_raw(&self, n: usize) -> Option<&'a [u8]> {
        if n == 0 || n > self.field_count() {
            return None;
        }
        let first = self.span.first_separator as usize;
        let count = self.span.separator_count as usize;
        let separators = self.message.separators.get(first..first + count)?;
        let raw = self.message.raw;
        // Index of the separator that opens field n.
        let opening = if self.span.header_like {
            if n == 1 {
                let at = *separators.first()? as usize;
                return raw.get(at..at + 1);
            }
            n - 2
        } else {
            n - 1
        };
        let start = *separators.get(opening)? as usize + 1;
        let end = separators.get(opening + 1).map_or(self.span.end as usize, |&e| e as usize);
        raw.get(start..end)
    }

    /// Every field from 1 to [`Segment::field_count`], in order (walks the separator index directly).
    pub fn fields(&self) -> impl Iterator<Item = Field<'a>> + use<'a, 'm> {
        let raw = self.message.raw;
        let delimiters = self.message.delimiters();
        let header_like = self.span.header_like;
        let end = self.span.end as usize;
        let first = self.span.first_separator as usize;
        let separators = self
            .message
            .separators
            .get(first..first + self.span.separator_count as usize)
            .unwrap_or_default();
        // MSH-1 (the separator itself) comes before the fields the separators open.
        let separator_field = separators.first().filter(|_| header_like).map(|&at| Field {
            raw: raw.get(at as usize..at as usize + 1).unwrap_or_default(),
            delimiters,
            literal: true,
        });
        let opened = separators.iter().enumerate().map(move |(i, &open)| {
            let stop = separators.get(i + 1).map_or(end, |&next| next as usize);
            let field_raw = raw.get(open as usize + 1..stop).unwrap_or_default();
            Field { raw: field_raw, delimiters, literal: header_like && i == 0 }
        });
        separator_field.into_iter().chain(opened)
    }
}

impl fmt::Debug for Segment<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("id", &self.id())
            .field("sequence", &self.sequence())
            .field("fields", &self.field_count())
            .finish()
    }
}

/// One field (or one repetition of it): raw bytes plus the delimiters to split them.
/// `Debug` shows its size only (field values may hold patient data).
#[derive(Clone, Copy)]
pub struct Field<'a> {
    raw: &'a [u8],
    delimiters: Delimiters,
    /// MSH-1/MSH-2: hold the delimiters themselves, never split nor unescaped.
    literal: bool,
}

impl<'a> Field<'a> {
    /// The field bytes, still escaped.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// True when the field holds nothing.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Each repetition (split on the repetition character); nothing for an empty field.
    pub fn repetitions(&self) -> impl Iterator<Item = Field<'a>> + use<'a> {
        let this = *self;
        let separator = if this.literal { None } else { Some(this.delimiters.repetition) };
        let mut rest = (!this.raw.is_empty()).then_some(this.raw);
        std::iter::from_fn(move || {
            let current = rest?;
            let end = separator.and_then(|s| memchr::memchr(s, current));
            let (repetition, next) = match end {
                Some(end) => (current.get(..end)?, current.get(end + 1..)),
                None => (current, None),
            };
            rest = next;
            Some(Field { raw: repetition, ..this })
        })
    }

    /// Component `c` (1-based) of the first repetition; empty when absent.
    pub fn component(&self, c: usize) -> &'a [u8] {
        if self.literal {
            return if c == 1 { self.raw } else { &[] };
        }
        // The first repetition: one SIMD search for the repetition character over the whole field.
        let first = match memchr::memchr(self.delimiters.repetition, self.raw) {
            Some(end) => self.raw.get(..end).unwrap_or_default(),
            None => self.raw,
        };
        nth_part(first, self.delimiters.component, c).unwrap_or_default()
    }

    /// Subcomponent `s` of component `c` (both 1-based) of the first repetition; empty when absent.
    pub fn subcomponent(&self, c: usize, s: usize) -> &'a [u8] {
        if self.literal {
            return if c == 1 && s == 1 { self.raw } else { &[] };
        }
        nth_part(self.component(c), self.delimiters.subcomponent, s).unwrap_or_default()
    }

    /// The field unescaped and decoded in `cs`.
    pub fn text(&self, cs: Charset) -> String {
        if self.literal {
            cs.decode(self.raw).into_owned()
        } else {
            decode_text(self.raw, &self.delimiters, cs)
        }
    }
}

impl fmt::Debug for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Field").field("bytes", &self.raw.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A01: &str = "MSH|^~\\&|DXCARE|CHMAYENNE|RELAIS|GHT53|20261122143015||ADT^A01^ADT_A01|MSG0001|P|2.5^FRA^2.11|||||FRA|UNICODE UTF-8|FR\r\
EVN||20261122143000\r\
PID|1||7788990^^^CHMAYENNE&1.2.250.1.71.4.2.2.1&ISO^PI~189027512345654^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS||BERNARD^LOUIS^LOUIS ANDRE^^^^L||19890214|M|||4 place de l'Église^Bât. A \\T\\ C^MAYENNE^^53100\r\
OBX|1|NM|3141-9^Poids^LN||82|kg\r\
OBX|2|TX|NOTE||ligne 1\\.br\\ligne 2\r";

    #[test]
    fn segments_fields_components() {
        let m = Message::parse(A01.as_bytes()).unwrap();
        let ids: Vec<_> = m.segments().map(|s| (s.id(), s.sequence())).collect();
        assert_eq!(ids, [("MSH", 1), ("EVN", 1), ("PID", 1), ("OBX", 1), ("OBX", 2)]);
        let msh = m.segment("MSH").unwrap();
        assert_eq!(msh.field(1).raw(), b"|");
        assert_eq!(msh.field(2).raw(), b"^~\\&");
        assert_eq!(msh.field(2).component(1), b"^~\\&");
        assert_eq!(msh.field(9).component(2), b"A01");
        assert_eq!(msh.field_count(), 19);
        let pid = m.segment("PID").unwrap();
        assert_eq!(pid.field_count(), 11);
        assert_eq!(pid.field(3).subcomponent(4, 2), b"1.2.250.1.71.4.2.2.1");
        let ids: Vec<_> = pid.field(3).repetitions().map(|r| r.component(5)).collect();
        assert_eq!(ids, [&b"PI"[..], b"INS"]);
        assert!(pid.field(2).is_empty());
        assert_eq!(pid.field(2).repetitions().count(), 0);
        assert!(pid.field(99).is_empty());
        assert_eq!(pid.field(11).text(Charset::Utf8), "4 place de l'Église^Bât. A & C^MAYENNE^^53100");
        assert_eq!(
            m.segments_named("OBX").map(|s| s.field(5).raw()).collect::<Vec<_>>(),
            [&b"82"[..], b"ligne 1\\.br\\ligne 2"]
        );
    }

    #[test]
    fn fields_walk_matches_field_by_number() {
        let m = Message::parse(A01.as_bytes()).unwrap();
        for segment in m.segments() {
            let walked: Vec<_> = segment.fields().map(|f| f.raw()).collect();
            let numbered: Vec<_> = (1..=segment.field_count()).map(|n| segment.field(n).raw()).collect();
            assert_eq!(walked, numbered, "{}", segment.id());
        }
        let msh: Vec<_> = m.segment("MSH").unwrap().fields().take(3).map(|f| f.component(1)).collect();
        assert_eq!(msh, [&b"|"[..], b"^~\\&", b"DXCARE"]);
    }

    #[test]
    fn debug_output_holds_no_field_values() {
        let m = Message::parse(A01.as_bytes()).unwrap();
        let shown = format!("{m:?} {:?} {:?}", m.segment("PID").unwrap(), m.segment("PID").unwrap().field(5));
        assert!(shown.contains("PID"));
        assert!(!shown.contains("BERNARD") && !shown.contains("19890214"), "{shown}");
    }

    #[test]
    fn terser_paths() {
        let m = Message::parse(A01.as_bytes()).unwrap();
        assert_eq!(m.get("PID-3"), Some(&b"7788990^^^CHMAYENNE&1.2.250.1.71.4.2.2.1&ISO^PI~189027512345654^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS"[..]));
        assert_eq!(m.get("PID-3(2).1"), Some(&b"189027512345654"[..]));
        assert_eq!(m.get("PID-3(2).4.2"), Some(&b"1.2.250.1.213.1.4.8"[..]));
        assert_eq!(m.get("PID-5.1"), Some(&b"BERNARD"[..]));
        assert_eq!(m.get("OBX(2)-5"), Some(&b"ligne 1\\.br\\ligne 2"[..]));
        assert_eq!(m.get("MSH-9.2"), Some(&b"A01"[..]));
        assert_eq!(m.get("MSH-2"), Some(&b"^~\\&"[..]));
        assert_eq!(m.get("MSH-1"), Some(&b"|"[..]));
        assert_eq!(m.get("PID-2"), Some(&b""[..]));
        assert_eq!(m.text("PID-2"), None);
        assert_eq!(m.get("PID-3(3)"), None);
        assert_eq!(m.get("PID-40"), None);
        assert_eq!(m.get("OBX(3)-5"), None);
        assert_eq!(m.get("ZBE-1"), None);
        for bad in ["PID", "PID-", "PID-0", "PID-x", "OBX(0)-1", "PID-3.1.1.1", "PI-3", "PID-3()"] {
            assert_eq!(m.get(bad), None, "{bad}");
        }
        assert_eq!(m.text("PID-11.2").as_deref(), Some("Bât. A & C"));
        assert_eq!(m.text("OBX(2)-5").as_deref(), Some("ligne 1\nligne 2"));
        assert_eq!(m.text("MSH-2").as_deref(), Some("^~\\&"));
    }

    #[test]
    fn lf_crlf_and_empty_lines() {
        let with_lf = A01.replace('\r', "\n");
        let with_crlf = A01.replace('\r', "\r\n\r\n");
        for variant in [with_lf, with_crlf, format!("\u{feff}\r\n{A01}\n\n")] {
            let m = Message::parse(variant.as_bytes()).unwrap();
            assert_eq!(m.segment_count(), 5);
            assert_eq!(m.get("OBX(2)-1"), Some(&b"2"[..]));
            assert!(m.segments().all(|s| !s.raw().contains(&b'\n') && !s.raw().contains(&b'\r')));
        }
    }

    #[test]
    fn bad_segment_id_is_located() {
        let raw = "MSH|^~\\&|A|B|C|D|1||ADT^A01|1\rEVN||1\rpid|1\r";
        let e = Message::parse(raw.as_bytes()).unwrap_err();
        assert_eq!((e.location.to_string(), e.code), ("pid".to_string(), ErrorCode::SegmentSequence));
        assert!(e.reason.contains("segment 3"));
        assert!(Message::parse(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|1\rPIDX|1").is_err());
    }

    #[test]
    fn custom_delimiters() {
        let raw = "MSH#$%*@#APP#FAC#C#D#1##ADT$A01#1\rPID#1##123$$$HOP@1.2.3@ISO%456##DUPONT*T*FILS$JEAN";
        let m = Message::parse(raw.as_bytes()).unwrap();
        assert_eq!(m.get("PID-3(2)"), Some(&b"456"[..]));
        assert_eq!(m.get("PID-3.4.2"), Some(&b"1.2.3"[..]));
        assert_eq!(m.text("PID-5.1").as_deref(), Some("DUPONT@FILS"));
        assert_eq!(m.text("MSH-9.2").as_deref(), Some("A01"));
    }

    #[test]
    fn latin9_message_is_decoded_with_its_charset() {
        let mut raw = b"MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5||||||8859/15\rPID|1||1||L\xC9V\xCAQUE^Ren\\XE9\\e||||||Prix \xA4 5 \\T\\ caf\xE9".to_vec();
        raw.push(b'\r');
        let cs = Header::parse(&raw).unwrap().charset().unwrap().unwrap();
        let m = Message::parse(&raw).unwrap().with_charset(cs);
        assert_eq!(m.charset(), Charset::Latin9);
        assert_eq!(m.text("PID-5.1").as_deref(), Some("LÉVÊQUE"));
        assert_eq!(m.text("PID-5.2").as_deref(), Some("Renée"));
        assert_eq!(m.text("PID-11").as_deref(), Some("Prix € 5 & café"));
    }
}
