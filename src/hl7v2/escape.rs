//! HL7 escape sequences: turning field bytes into text and text into field-safe bytes.
//!
//! Unescaping works on the raw bytes, before charset decoding: `\XC3A9\` in a UTF-8 message and `\XE9\` in an
//! 8859/1 message both end up as the bytes of `é` in that message's charset, and only then is the result
//! decoded. Supported: `\F\ \S\ \T\ \R\ \E\` (the delimiters), `\Xhh..\` (bytes), `\.br\` and `\.sp\`/`\.spN\`
//! (newlines; other `\.xx\` formatting commands are dropped), `\H\`/`\N\` (highlighting, dropped). Anything
//! else, and an escape character without its closing partner, is kept literally.

use std::borrow::Cow;

use super::charset::Charset;
use super::delimiters::Delimiters;

/// Most newlines a single `\.spN\` may produce (protects against `\.sp999999999\`).
const MAX_SKIPPED_LINES: usize = 99;

/// Replaces escape sequences by the bytes they stand for; borrows when `raw` holds no escape character.
pub fn unescape<'b>(raw: &'b [u8], d: &Delimiters) -> Cow<'b, [u8]> {
    let Some(first) = memchr::memchr(d.escape, raw) else {
        return Cow::Borrowed(raw);
    };
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    let mut next = Some(first);
    while let Some(open) = next {
        let (before, from_escape) = rest.split_at(open);
        out.extend_from_slice(before);
        let after_open = from_escape.get(1..).unwrap_or_default();
        let Some(close) = memchr::memchr(d.escape, after_open) else {
            // Unterminated: keep the escape character and everything after it.
            out.extend_from_slice(from_escape);
            return Cow::Owned(out);
        };
        let (content, from_close) = after_open.split_at(close);
        if !expand(content, d, &mut out) {
            out.push(d.escape);
            out.extend_from_slice(content);
            out.push(d.escape);
        }
        rest = from_close.get(1..).unwrap_or_default();
        next = memchr::memchr(d.escape, rest);
    }
    out.extend_from_slice(rest);
    Cow::Owned(out)
}

/// Appends what the escape sequence `content` (between the two escape characters) stands for;
/// false when it is not a sequence Relais knows (the caller then keeps it literally).
fn expand(content: &[u8], d: &Delimiters, out: &mut Vec<u8>) -> bool {
    match content {
        b"F" => out.push(d.field),
        b"S" => out.push(d.component),
        b"T" => out.push(d.subcomponent),
        b"R" => out.push(d.repetition),
        b"E" => out.push(d.escape),
        b"H" | b"N" => {}
        [b'X', hex @ ..] => {
            if hex.is_empty() || hex.len() % 2 != 0 || !hex.iter().all(u8::is_ascii_hexdigit) {
                return false;
            }
            out.extend(hex.chunks_exact(2).map(|pair| (hex_value(pair[0]) << 4) | hex_value(pair[1])));
        }
        b".br" => out.push(b'\n'),
        [b'.', b's', b'p', count @ ..] => {
            let count = count.trim_ascii();
            let lines = if count.is_empty() {
                1
            } else if count.iter().all(u8::is_ascii_digit) {
                count.iter().fold(0usize, |n, &c| n.saturating_mul(10).saturating_add(usize::from(c - b'0')))
            } else {
                return false;
            };
            out.extend(std::iter::repeat_n(b'\n', lines.min(MAX_SKIPPED_LINES)));
        }
        // Other formatting commands (.fi, .nf, .in+4, .ti-2, .sk, .ce ...) do not change the text.
        [b'.', letter, ..] if letter.is_ascii_alphabetic() => {}
        _ => return false,
    }
    true
}

/// The value of one ASCII hex digit (the caller checked it is one).
fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}

/// Unescapes `raw`, then decodes the bytes as text in `cs`.
pub fn decode_text(raw: &[u8], d: &Delimiters, cs: Charset) -> String {
    cs.decode(&unescape(raw, d)).into_owned()
}

/// [`decode_text`] trimmed. The decoded text stays borrowed until trimmed when it needs no unescaping or
/// transcoding (UTF-8 text without escapes: one allocation, the trimmed copy).
pub fn decode_trimmed(raw: &[u8], d: &Delimiters, cs: Charset) -> String {
    let unescaped = unescape(raw, d);
    cs.decode(&unescaped).trim().to_owned()
}

/// Text to escaped text safe to place in a field: the five delimiters become `\F\ \S\ \R\ \E\ \T\`,
/// `'\n'` becomes `\.br\` and `'\r'` becomes `\X0D\`, so [`decode_text`] gives `text` back.
pub fn escape_text(text: &str, d: &Delimiters) -> String {
    let needs_escape = |c: char| {
        c == '\n'
            || c == '\r'
            || [d.field, d.component, d.repetition, d.escape, d.subcomponent]
                .iter()
                .any(|&b| u32::from(b) == c as u32)
    };
    if !text.contains(needs_escape) {
        return text.to_owned();
    }
    let escape = char::from(d.escape);
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        let code = c as u32;
        let sequence = if code == u32::from(d.field) {
            "F"
        } else if code == u32::from(d.component) {
            "S"
        } else if code == u32::from(d.repetition) {
            "R"
        } else if code == u32::from(d.escape) {
            "E"
        } else if code == u32::from(d.subcomponent) {
            "T"
        } else if c == '\n' {
            ".br"
        } else if c == '\r' {
            "X0D"
        } else {
            out.push(c);
            continue;
        };
        out.push(escape);
        out.push_str(sequence);
        out.push(escape);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn std_text(raw: &[u8], cs: Charset) -> String {
        decode_text(raw, &Delimiters::default(), cs)
    }

    #[test]
    fn subcomponent_escape_next_to_utf8_accent() {
        // hl7-parser 0.3 mangles this one.
        assert_eq!(std_text("Bât. A \\T\\ C".as_bytes(), Charset::Utf8), "Bât. A & C");
    }

    #[test]
    fn hex_escapes_are_bytes_of_the_message_charset() {
        assert_eq!(std_text(b"Ren\\XE9\\", Charset::Latin1), "René");
        assert_eq!(std_text(b"Ren\\XC3A9\\", Charset::Utf8), "René");
        assert_eq!(std_text(b"\\XA4\\ 5", Charset::Latin9), "€ 5");
    }

    #[test]
    fn highlighting_is_dropped_and_text_kept() {
        assert_eq!(std_text(b"\\H\\important\\N\\", Charset::Utf8), "important");
    }

    #[test]
    fn delimiter_escapes_give_the_delimiters() {
        assert_eq!(std_text(b"\\F\\ \\S\\ \\R\\ \\E\\ \\T\\", Charset::Ascii), "| ^ ~ \\ &");
    }

    #[test]
    fn formatting_commands() {
        assert_eq!(std_text(b"ligne 1\\.br\\ligne 2", Charset::Utf8), "ligne 1\nligne 2");
        assert_eq!(std_text(b"a\\.sp\\b\\.sp2\\c", Charset::Utf8), "a\nb\n\nc");
        assert_eq!(std_text(b"\\.ce\\titre\\.in+4\\", Charset::Utf8), "titre");
    }

    #[test]
    fn unknown_or_unterminated_escapes_are_kept_literally() {
        assert_eq!(std_text(b"a \\X", Charset::Utf8), "a \\X");
        assert_eq!(std_text(b"a \\XE9", Charset::Utf8), "a \\XE9");
        assert_eq!(std_text(b"\\Q\\ x", Charset::Utf8), "\\Q\\ x");
        assert_eq!(std_text(b"\\XZZ\\", Charset::Utf8), "\\XZZ\\");
        assert_eq!(std_text(b"\\XABC\\", Charset::Utf8), "\\XABC\\");
        assert_eq!(std_text(b"fin\\", Charset::Utf8), "fin\\");
    }

    #[test]
    fn custom_delimiters_are_honoured() {
        let d = Delimiters::from_msh(b'#', b"$%*@").unwrap();
        assert_eq!(decode_text(b"a*F*b*S*c*T*d*R*e*E*f\\g", &d, Charset::Utf8), "a#b$c@d%e*f\\g");
        assert_eq!(escape_text("a#b$c@d%e*f\\g|", &d), "a*F*b*S*c*T*d*R*e*E*f\\g|");
    }

    #[test]
    fn latin9_euro_accents_and_escapes() {
        let raw = b"Caf\xE9 \xA4 5 \\T\\ cr\xE8me \\XE9\\t\xE9";
        assert_eq!(std_text(raw, Charset::Latin9), "Café € 5 & crème été");
    }

    #[test]
    fn no_escape_borrows() {
        assert!(matches!(unescape(b"plain", &Delimiters::default()), Cow::Borrowed(_)));
    }

    #[test]
    fn escape_text_round_trips_and_is_field_safe() {
        let d = Delimiters::default();
        let text = "Valeur | ^ ~ \\ & refusée\nligne\r2";
        let escaped = escape_text(text, &d);
        assert!(!escaped.contains(['|', '^', '~', '&', '\n', '\r']));
        assert_eq!(decode_text(escaped.as_bytes(), &d, Charset::Utf8), text);
    }
}
