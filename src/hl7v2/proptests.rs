//! Property tests of the whole module: no input makes any reader panic, slices stay inside the input,
//! and escaping round-trips.

use proptest::prelude::*;

use super::*;

const VALID: &[u8] = b"MSH|^~\\&|DXCARE|CHMAYENNE|RELAIS|GHT53|20261122143015||ADT^A01^ADT_A01|MSG0001|P|2.5^FRA^2.11|||||FRA|UNICODE UTF-8|FR\r\
EVN||20261122143000\r\
PID|1||7788990^^^CHMAYENNE&1.2.250.1.71.4.2.2.1&ISO^PI~189027512345654^^^ASIP&1.2.250&ISO^INS||BERNARD^LOUIS||19890214|M|||B\\XC3A2\\t. A \\T\\ C^\\H\\x\\N\\\r\
OBX|1|TX|NOTE||a\\.br\\b\\.sp3\\c\\X\r\
MSA|AE|MSG0001\r\
ERR||PID^1^7|102^Data type error^HL70357|E||||d\\F\\e\r";

/// One change to a valid message.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bits: u8 },
    Truncate { at: usize },
    Insert { at: usize, byte: u8 },
    Remove { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let special = prop::sample::select(&b"|^~\\&\r\nMSH#X.0"[..]);
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(at, bits)| Mutation::Flip { at, bits }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), special).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Remove { at }),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len();
        match *m {
            Mutation::Flip { at, bits } if len > 0 => bytes[at % len] ^= bits,
            Mutation::Truncate { at } => bytes.truncate(at % (len + 1)),
            Mutation::Insert { at, byte } => bytes.insert(at % (len + 1), byte),
            Mutation::Remove { at } if len > 0 => {
                bytes.remove(at % len);
            }
            _ => {}
        }
    }
    bytes
}

/// Runs every reader over `raw`, walking everything a Message exposes; checks slices stay inside `raw`.
fn exercise(raw: &[u8]) {
    let inside = |slice: &[u8]| {
        let (start, end) = (raw.as_ptr() as usize, raw.as_ptr() as usize + raw.len());
        let s = slice.as_ptr() as usize;
        slice.is_empty() || (s >= start && s + slice.len() <= end)
    };
    if let Ok(header) = Header::parse(raw) {
        let _ = header.charset();
        for n in 0..40 {
            assert!(inside(header.field(n)));
            let _ = header.component(n, 2);
            let _ = header.text(n, Charset::Latin9);
        }
        let ack = build_ack(Some(&header), AckCode::AE, None, "C1", "20260101", Charset::Latin1);
        assert!(read_ack(&ack).is_ok());
    }
    if let Ok(message) = Message::parse(raw) {
        for cs in [Charset::Utf8, Charset::Latin1] {
            let message = message.clone().with_charset(cs);
            for segment in message.segments() {
                assert!(inside(segment.raw()));
                assert!(!segment.raw().contains(&b'\r') && !segment.raw().contains(&b'\n'));
                let _ = (segment.id(), segment.sequence());
                let walked: Vec<&[u8]> = segment.fields().map(|f| f.raw()).collect();
                let numbered: Vec<&[u8]> =
                    (1..=segment.field_count()).map(|n| segment.field(n).raw()).collect();
                assert_eq!(walked, numbered);
                for n in 0..=segment.field_count() + 1 {
                    let field = segment.field(n);
                    assert!(inside(field.raw()));
                    let _ = field.text(cs);
                    for repetition in field.repetitions() {
                        assert!(inside(repetition.raw()));
                        for c in 0..4 {
                            assert!(inside(repetition.component(c)));
                            assert!(inside(repetition.subcomponent(c, 2)));
                        }
                    }
                }
            }
            for path in ["PID-3(2).4.2", "MSH-2", "MSH-1", "OBX(1)-5", "ERR-8", "PID-11.2", "MSH-9.2.1"] {
                let _ = message.text(path);
                assert!(message.get(path).is_none_or(inside));
            }
        }
    }
    let _ = read_ack(raw);
    let d = Delimiters::default();
    let _ = decode_text(raw, &d, Charset::Utf8);
    let _ = decode_text(raw, &d, Charset::Ascii);
}

#[test]
fn the_valid_sample_is_valid() {
    let message = Message::parse(VALID).unwrap();
    assert_eq!(message.segment_count(), 6);
    exercise(VALID);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..600)) {
        exercise(&raw);
    }

    #[test]
    fn arbitrary_bytes_after_msh_never_panic(tail in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut raw = b"MSH|^~\\&|".to_vec();
        raw.extend_from_slice(&tail);
        exercise(&raw);
    }

    #[test]
    fn mutated_messages_never_panic(mutations in prop::collection::vec(mutation(), 1..8)) {
        exercise(&mutate(VALID.to_vec(), &mutations));
    }

    #[test]
    fn escape_then_decode_gives_the_text_back(text in any::<String>()) {
        let d = Delimiters::default();
        prop_assert_eq!(decode_text(escape_text(&text, &d).as_bytes(), &d, Charset::Utf8), text.clone());
        let custom = Delimiters::from_msh(b'#', b"$%*@").unwrap();
        prop_assert_eq!(decode_text(escape_text(&text, &custom).as_bytes(), &custom, Charset::Utf8), text);
    }

    #[test]
    fn escaped_text_survives_inside_a_message(text in "[ -~éè€\n\r]{0,40}") {
        let d = Delimiters::default();
        let raw = format!("MSH|^~\\&|A|B|C|D|1||ADT^A01|1\rNTE|1||{}\r", escape_text(&text, &d));
        let message = Message::parse(raw.as_bytes()).unwrap();
        prop_assert_eq!(message.segment_count(), 2);
        let expected = if text.is_empty() { None } else { Some(text) };
        prop_assert_eq!(message.text("NTE-3"), expected);
    }
}
