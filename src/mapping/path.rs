//! Source paths of the mapping files (`PID-3`, `ZBE-7.10`, `ROL[3=ODRP]-4`) and their resolution on a message.

use std::borrow::Cow;
use std::fmt;

use crate::hl7v2::{Charset, Delimiters, Field, Message, unescape};

/// A parsed source path: a segment (optionally the first one whose field N equals a value), a field, and
/// optionally a component and subcomponent of its first repetition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePath {
    /// Segment id (`PID`).
    pub segment: String,
    /// `[N=VALUE]`: pick the first segment whose field N (first component) is VALUE.
    pub selector: Option<(usize, String)>,
    /// Field number (1-based).
    pub field: usize,
    /// Component (1-based), when the path names one.
    pub component: Option<usize>,
    /// Subcomponent (1-based), when the path names one.
    pub subcomponent: Option<usize>,
}

impl SourcePath {
    /// Parses `SEG-F`, `SEG-F.C`, `SEG-F.C.S` or `SEG[N=VALUE]-F…`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<SourcePath, String> {
        let bad = |why: &str| {
            format!("`{text}` is not a source path ({why}; e.g. `PID-3`, `ZBE-7.10`, `ROL[3=ODRP]-4`)")
        };
        let (head, rest) = text.split_once('-').ok_or_else(|| bad("no `-`"))?;
        let (segment, selector) = match head.split_once('[') {
            None => (head, None),
            Some((segment, sel)) => {
                let sel = sel.strip_suffix(']').ok_or_else(|| bad("unclosed `[`"))?;
                let (n, value) = sel.split_once('=').ok_or_else(|| bad("selector needs `N=VALUE`"))?;
                let n = positive(n).ok_or_else(|| bad("selector field is not a number >= 1"))?;
                (segment, Some((n, value.to_owned())))
            }
        };
        let id_ok =
            segment.len() == 3 && segment.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if !id_ok {
            return Err(bad("segment id must be 3 upper-case letters or digits"));
        }
        let mut parts = rest.split('.');
        let field = parts.next().and_then(positive).ok_or_else(|| bad("field is not a number >= 1"))?;
        let component = match parts.next() {
            None => None,
            Some(c) => Some(positive(c).ok_or_else(|| bad("component is not a number >= 1"))?),
        };
        let subcomponent = match parts.next() {
            None => None,
            Some(s) => Some(positive(s).ok_or_else(|| bad("subcomponent is not a number >= 1"))?),
        };
        if parts.next().is_some() {
            return Err(bad("too many parts"));
        }
        Ok(SourcePath { segment: segment.to_owned(), selector, field, component, subcomponent })
    }

    /// The field this path points at (all repetitions), when its segment is in the message.
    pub fn field<'a>(&self, msg: &Message<'a>, cs: Charset) -> Option<Field<'a>> {
        let d = msg.delimiters();
        let segment = msg.segments_named(&self.segment).find(|s| match &self.selector {
            None => true,
            Some((n, value)) => decode(s.field(*n).component(1), &d, cs, None).trim() == value,
        })?;
        let field = segment.field(self.field);
        (!field.is_empty()).then_some(field)
    }

    /// The text this path points at (decoded, unescaped, trimmed); `None` when absent, empty or HL7 null `""`.
    /// A path without a component reads the first component of the first repetition (a TS `DTM^precision`
    /// gives its DTM, a CWE its code).
    pub fn text(&self, msg: &Message<'_>, cs: Charset) -> Option<String> {
        self.text_ref(msg, cs).map(Cow::into_owned)
    }

    /// [`SourcePath::text`], borrowed from the message when nothing needed unescaping or transcoding.
    pub fn text_ref<'a>(&self, msg: &Message<'a>, cs: Charset) -> Option<Cow<'a, str>> {
        self.text_in(msg, cs, None)
    }

    /// [`SourcePath::text_ref`]; `checked` is the whole message when it is already known to be UTF-8 text
    /// (its values are then sliced from it, not checked again).
    pub(crate) fn text_in<'a>(
        &self,
        msg: &Message<'a>,
        cs: Charset,
        checked: Option<&'a str>,
    ) -> Option<Cow<'a, str>> {
        let field = self.field(msg, cs)?;
        let d = msg.delimiters();
        let raw = match (self.component, self.subcomponent) {
            (None, _) => field.component(1),
            (Some(c), None) => field.component(c),
            (Some(c), Some(s)) => field.subcomponent(c, s),
        };
        clean(decode(raw, &d, cs, checked))
    }
}

impl fmt::Display for SourcePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.segment)?;
        if let Some((n, v)) = &self.selector {
            write!(f, "[{n}={v}]")?;
        }
        write!(f, "-{}", self.field)?;
        if let Some(c) = self.component {
            write!(f, ".{c}")?;
        }
        if let Some(s) = self.subcomponent {
            write!(f, ".{s}")?;
        }
        Ok(())
    }
}

/// Decoded text of component `c` (and subcomponent `s` when given) of one repetition; `None` when empty.
/// Borrowed from the message when nothing needed unescaping or transcoding; `checked` is the whole message
/// when it is already known to be UTF-8 text (see [`SourcePath::text_in`]).
pub fn component<'a>(
    rep: &Field<'a>,
    d: &Delimiters,
    cs: Charset,
    c: usize,
    s: Option<usize>,
    checked: Option<&'a str>,
) -> Option<Cow<'a, str>> {
    let raw = match s {
        None => rep.component(c),
        Some(s) => rep.subcomponent(c, s),
    };
    text_of(raw, d, cs, checked)
}

/// Decoded, trimmed text of raw field bytes; `None` when empty or the HL7 null `""`. `checked` as for
/// [`component`].
pub fn text_of<'a>(
    raw: &'a [u8],
    d: &Delimiters,
    cs: Charset,
    checked: Option<&'a str>,
) -> Option<Cow<'a, str>> {
    if raw.is_empty() {
        return None;
    }
    clean(decode(raw, d, cs, checked))
}

/// `part` as text when it lies inside `whole` (then it is text already: `whole` is checked UTF-8, and parts
/// are cut at ASCII delimiters, which `str::get` confirms are character boundaries).
fn slice_of<'a>(whole: &'a str, part: &[u8]) -> Option<&'a str> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let text = whole.get(start..start.checked_add(part.len())?)?;
    // Same address and length inside `whole`: the same bytes.
    (text.as_ptr() == part.as_ptr()).then_some(text)
}

/// Unescaped and decoded text (as [`crate::hl7v2::decode_text`]), borrowed when the bytes hold no escape
/// and are already text in `cs`.
fn decode<'a>(raw: &'a [u8], d: &Delimiters, cs: Charset, checked: Option<&'a str>) -> Cow<'a, str> {
    // Most values hold no escape: a plain scan of these few bytes, then no unescaping at all.
    let unescaped = if raw.contains(&d.escape) { unescape(raw, d) } else { Cow::Borrowed(raw) };
    match unescaped {
        // Already checked as part of the whole message: sliced from it, no second UTF-8 check.
        Cow::Borrowed(bytes) if cs == Charset::Utf8 && checked.is_some() => {
            match checked.and_then(|whole| slice_of(whole, bytes)) {
                Some(text) => Cow::Borrowed(text),
                None => cs.decode(bytes),
            }
        }
        // Valid UTF-8 borrows as is (the fast check first; `decode` goes through the lossy chunks).
        Cow::Borrowed(bytes) if cs == Charset::Utf8 => match std::str::from_utf8(bytes) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => cs.decode(bytes),
        },
        Cow::Borrowed(bytes) => cs.decode(bytes),
        Cow::Owned(bytes) => Cow::Owned(cs.decode(&bytes).into_owned()),
    }
}

/// Trimmed text, `None` when empty or the HL7 null `""`.
fn clean(text: Cow<'_, str>) -> Option<Cow<'_, str>> {
    // Most values start and end with a printable ASCII byte: nothing to trim, no Unicode scan.
    if let (Some(first), Some(last)) = (text.as_bytes().first(), text.as_bytes().last())
        && first.is_ascii_graphic()
        && last.is_ascii_graphic()
    {
        return (&*text != "\"\"").then_some(text);
    }
    let t = text.trim();
    if t.is_empty() || t == "\"\"" {
        None
    } else if t.len() == text.len() {
        Some(text)
    } else {
        match text {
            Cow::Borrowed(b) => Some(Cow::Borrowed(b.trim())),
            Cow::Owned(o) => Some(Cow::Owned(o.trim().to_owned())),
        }
    }
}

fn positive(text: &str) -> Option<usize> {
    text.parse::<usize>().ok().filter(|&n| n >= 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_and_print_back() {
        for p in ["PID-3", "ZBE-7.10", "PID-3.4.2", "ROL[3=ODRP]-4"] {
            assert_eq!(SourcePath::parse(p).map(|s| s.to_string()).as_deref(), Ok(p));
        }
        for bad in ["PID", "pid-3", "PID-0", "PID-3.x", "ROL[3ODRP]-4", "PID-1.2.3.4"] {
            assert!(SourcePath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn checked_text_is_sliced_from_the_message_and_reads_the_same() {
        let raw = "MSH|^~\\&|A|B|C|D|20260101||ADT^A01|1|P|2.5\rPID|1||42^^^H&1.2&ISO^PI||Éloïse^Zoé\r";
        let msg = Message::parse(raw.as_bytes()).expect("parses");
        for p in ["PID-5.1", "PID-5.2", "PID-3.4.2", "PID-3.5"] {
            let path = SourcePath::parse(p).expect("path");
            let checked = path.text_in(&msg, Charset::Utf8, Some(raw));
            assert_eq!(checked, path.text_ref(&msg, Charset::Utf8), "{p}");
            assert!(matches!(checked, Some(Cow::Borrowed(_))), "{p}");
        }
        // Bytes from elsewhere are checked as before, not sliced.
        assert_eq!(slice_of("abc", "abc".to_owned().as_bytes()), None);
    }

    #[test]
    fn selector_picks_the_matching_segment() {
        let raw = b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|1|P|2.5\rROL||UC|FHCP|111^X\rROL||UC|ODRP|222^Y\r";
        let msg = Message::parse(raw).expect("parses");
        let path = SourcePath::parse("ROL[3=ODRP]-4.1").expect("path");
        assert_eq!(path.text(&msg, Charset::Utf8).as_deref(), Some("222"));
        let none = SourcePath::parse("ROL[3=SUBS]-4.1").expect("path");
        assert_eq!(none.text(&msg, Charset::Utf8), None);
    }
}
