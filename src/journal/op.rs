//! What one WAL record holds: one decided journal write ([`Op`]), and its compact binary encoding.
//!
//! The writer decides everything a write needs before logging it (the new id, the dedup outcome, the
//! time of a stage), so applying an [`Op`] to redb is deterministic and replaying the log after a crash
//! rebuilds exactly what was acknowledged.
//!
//! Encoding (little-endian; `bytes` = `u32` length then the bytes):
//! - append: `b'A' | id u64 | state u8 | dedup u8 (0/1) [| key bytes | received_at_us i64] | record bytes
//!   (the entry's JSON metadata) | raw bytes`;
//! - update: `b'U' | id u64 | at_us i64 | count u32 | stages`, each stage a tag then its data:
//!   1 mapped (bundle bytes), 2 failed (reason bytes), 3 routed (progress JSON bytes), 4 published
//!   (destinations JSON bytes), 5 replay (`u8`: 0 map, 1 publish).

use bytes::Bytes;
use jiff::Timestamp;

use super::record::{Progress, ReplayFrom, Stage, State};

/// One journal write, as logged and then applied to redb.
#[derive(Debug)]
pub(crate) enum Op {
    /// A new entry under a new id.
    Append(Append),
    /// Pipeline stages of an existing entry, recorded at `at`.
    Update {
        /// The entry's id.
        id: u64,
        /// When the stages were recorded (the time their events carry).
        at: Timestamp,
        /// The stages, applied in order.
        stages: Vec<Stage>,
    },
}

/// A decided append: the id is assigned and the dedup outcome settled.
#[derive(Debug)]
pub(crate) struct Append {
    pub(crate) id: u64,
    pub(crate) state: State,
    /// The entry's metadata record, JSON.
    pub(crate) record: Vec<u8>,
    pub(crate) raw: Bytes,
    /// The dedup key this entry now owns and its received-at (µs); `None` for no key or a conflict.
    pub(crate) dedup: Option<(String, i64)>,
}

/// Why a WAL payload does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("WAL record: {0}")]
pub(crate) struct Malformed(&'static str);

impl Op {
    /// Appends the encoding of this op to `buf`.
    pub(crate) fn encode(&self, buf: &mut Vec<u8>) {
        match self {
            Op::Append(append) => {
                buf.push(b'A');
                buf.extend_from_slice(&append.id.to_le_bytes());
                buf.push(state_code(append.state));
                match &append.dedup {
                    Some((key, at_us)) => {
                        buf.push(1);
                        put_bytes(buf, key.as_bytes());
                        buf.extend_from_slice(&at_us.to_le_bytes());
                    }
                    None => buf.push(0),
                }
                put_bytes(buf, &append.record);
                put_bytes(buf, &append.raw);
            }
            Op::Update { id, at, stages } => {
                buf.push(b'U');
                buf.extend_from_slice(&id.to_le_bytes());
                buf.extend_from_slice(&at.as_microsecond().to_le_bytes());
                let count = u32::try_from(stages.len()).expect("fewer than 4G stages");
                buf.extend_from_slice(&count.to_le_bytes());
                for stage in stages {
                    encode_stage(stage, buf);
                }
            }
        }
    }

    /// Reads an op back from its encoding.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Op, Malformed> {
        let mut input = Reader(bytes);
        let op = match input.u8()? {
            b'A' => {
                let id = input.u64()?;
                let state = *State::ALL.get(usize::from(input.u8()?)).ok_or(Malformed("unknown state"))?;
                let dedup = match input.u8()? {
                    0 => None,
                    _ => {
                        let key = String::from_utf8(input.bytes()?.to_vec())
                            .map_err(|_| Malformed("dedup key is not UTF-8"))?;
                        Some((key, input.i64()?))
                    }
                };
                let record = input.bytes()?.to_vec();
                let raw = Bytes::copy_from_slice(input.bytes()?);
                Op::Append(Append { id, state, record, raw, dedup })
            }
            b'U' => {
                let id = input.u64()?;
                let at = Timestamp::from_microsecond(input.i64()?).map_err(|_| Malformed("bad time"))?;
                let count = input.u32()?;
                let mut stages = Vec::new();
                for _ in 0..count {
                    stages.push(decode_stage(&mut input)?);
                }
                Op::Update { id, at, stages }
            }
            _ => return Err(Malformed("unknown op")),
        };
        if !input.0.is_empty() {
            return Err(Malformed("trailing bytes"));
        }
        Ok(op)
    }
}

fn state_code(state: State) -> u8 {
    let index = State::ALL.iter().position(|s| *s == state).expect("every state is in State::ALL");
    u8::try_from(index).expect("few states")
}

fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("a field below 4 GiB");
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(bytes);
}

fn put_json(buf: &mut Vec<u8>, value: &impl serde::Serialize) {
    let json = serde_json::to_vec(value).expect("stage data always serializes");
    put_bytes(buf, &json);
}

fn encode_stage(stage: &Stage, buf: &mut Vec<u8>) {
    match stage {
        Stage::Mapped { bundle } => {
            buf.push(1);
            put_bytes(buf, bundle);
        }
        Stage::Failed { reason } => {
            buf.push(2);
            put_bytes(buf, reason.as_bytes());
        }
        Stage::Routed { progress } => {
            buf.push(3);
            put_json(buf, progress);
        }
        Stage::Published { destinations } => {
            buf.push(4);
            put_json(buf, destinations);
        }
        Stage::Replay { from } => {
            buf.push(5);
            buf.push(match from {
                ReplayFrom::Map => 0,
                ReplayFrom::Publish => 1,
            });
        }
    }
}

fn decode_stage(input: &mut Reader<'_>) -> Result<Stage, Malformed> {
    Ok(match input.u8()? {
        1 => Stage::Mapped { bundle: Bytes::copy_from_slice(input.bytes()?) },
        2 => Stage::Failed {
            reason: String::from_utf8(input.bytes()?.to_vec())
                .map_err(|_| Malformed("reason is not UTF-8"))?,
        },
        3 => Stage::Routed {
            progress: serde_json::from_slice::<Progress>(input.bytes()?)
                .map_err(|_| Malformed("bad routed progress"))?,
        },
        4 => Stage::Published {
            destinations: serde_json::from_slice(input.bytes()?)
                .map_err(|_| Malformed("bad published destinations"))?,
        },
        5 => Stage::Replay {
            from: match input.u8()? {
                0 => ReplayFrom::Map,
                _ => ReplayFrom::Publish,
            },
        },
        _ => return Err(Malformed("unknown stage")),
    })
}

/// A cursor over an encoded op.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn i64(&mut self) -> Result<i64, Malformed> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::record::Delivery;

    #[test]
    fn ops_round_trip() {
        let append = Op::Append(Append {
            id: 42,
            state: State::Received,
            record: br#"{"state":"received"}"#.to_vec(),
            raw: Bytes::from_static(b"MSH|^~\\&|A\rPID|1"),
            dedup: Some(("FAC\u{1f}7".into(), 1_750_000_000_000_000)),
        });
        let mut buf = Vec::new();
        append.encode(&mut buf);
        let Op::Append(back) = Op::decode(&buf).unwrap() else { panic!("not an append") };
        assert_eq!((back.id, back.state), (42, State::Received));
        assert_eq!(back.raw.as_ref(), b"MSH|^~\\&|A\rPID|1");
        assert_eq!(back.dedup, Some(("FAC\u{1f}7".into(), 1_750_000_000_000_000)));

        let at = Timestamp::from_second(1_750_000_123).unwrap();
        let progress = Progress {
            partition_key: "p1".into(),
            deliveries: vec![Delivery { destination: "gp".into(), route: "r".into(), published: false }],
            ..Progress::default()
        };
        let update = Op::Update {
            id: 9,
            at,
            stages: vec![
                Stage::Mapped { bundle: Bytes::from_static(b"{\"resourceType\":\"Bundle\"}") },
                Stage::Routed { progress: progress.clone() },
                Stage::Published { destinations: vec!["gp".into()] },
                Stage::Failed { reason: "PID-3 missing".into() },
                Stage::Replay { from: ReplayFrom::Publish },
            ],
        };
        buf.clear();
        update.encode(&mut buf);
        let Op::Update { id, at: back_at, stages } = Op::decode(&buf).unwrap() else {
            panic!("not an update")
        };
        assert_eq!((id, back_at), (9, at));
        assert!(
            matches!(&stages[0], Stage::Mapped { bundle } if bundle.as_ref() == b"{\"resourceType\":\"Bundle\"}")
        );
        assert!(matches!(&stages[1], Stage::Routed { progress: p } if *p == progress));
        assert!(matches!(&stages[2], Stage::Published { destinations } if destinations == &["gp"]));
        assert!(matches!(&stages[3], Stage::Failed { reason } if reason == "PID-3 missing"));
        assert!(matches!(stages[4], Stage::Replay { from: ReplayFrom::Publish }));
    }

    #[test]
    fn truncated_or_unknown_payloads_are_refused() {
        let mut buf = Vec::new();
        Op::Update { id: 1, at: Timestamp::UNIX_EPOCH, stages: vec![Stage::Failed { reason: "x".into() }] }
            .encode(&mut buf);
        for cut in 0..buf.len() {
            assert!(Op::decode(&buf[..cut]).is_err(), "a payload cut at {cut} decoded");
        }
        assert_eq!(Op::decode(b"Z").unwrap_err(), Malformed("unknown op"));
    }
}
