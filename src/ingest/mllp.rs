//! MLLP framing and the MLLP listener (plain TCP or TLS).
//!
//! A frame is `0x0B <message> 0x1C 0x0D`. [`MllpCodec`] turns a byte stream into [`Frame`]s: whole messages,
//! and the framing faults a sender must hear about (bytes outside a frame, a frame cut by a new start byte
//! or by the end of the stream, a frame past the size limit). Whitespace between frames (CR, LF, space, tab, NUL) is skipped silently.
//!
//! [`serve_connection`] reads frames in order and hands each to [`Intake`]; a writer task sends the ACKs
//! back in the order the messages came, as soon as each one is durable. Messages may be pipelined: the
//! journal groups the commits of every connection. On shutdown a connection stops reading, answers what it
//! already read, and closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::codec::{Decoder, FramedRead};
use tracing::{debug, info, warn};

use super::tls::TlsServer;
use super::{Intake, Pending};
use crate::journal::Transport;
use crate::shutdown::Shutdown;

/// Start of block (VT).
pub const START: u8 = 0x0B;
/// End of block (FS).
pub const END: u8 = 0x1C;
/// Carriage return that follows the end byte.
pub const CR: u8 = 0x0D;

/// How long a connection may take to answer what it already read once shutdown has begun.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// One unit read from an MLLP stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete message (the bytes between the start and end markers).
    Message(Bytes),
    /// Non-whitespace bytes outside any frame.
    Garbage(Bytes),
    /// A frame that a new start byte interrupted before its end marker.
    Unterminated(Bytes),
    /// A frame the peer stopped sending (end of stream) before its end marker.
    Incomplete(Bytes),
    /// A frame longer than the limit: its first `limit` bytes. The connection must be closed after answering.
    Oversize(Bytes),
}

/// Splits an MLLP byte stream into [`Frame`]s.
#[derive(Debug, Clone)]
pub struct MllpCodec {
    max_message_size: usize,
    /// Bytes of the current frame already searched for markers (avoids rescanning on each read).
    scanned: usize,
}

impl MllpCodec {
    /// A codec that refuses messages longer than `max_message_size` bytes.
    pub fn new(max_message_size: usize) -> MllpCodec {
        MllpCodec { max_message_size, scanned: 0 }
    }

    /// Wraps a message in MLLP markers.
    pub fn encode_frame(message: &[u8], dst: &mut BytesMut) {
        dst.reserve(message.len() + 3);
        dst.put_u8(START);
        dst.put_slice(message);
        dst.put_u8(END);
        dst.put_u8(CR);
    }
}

fn is_filler(b: u8) -> bool {
    matches!(b, b'\r' | b'\n' | b' ' | b'\t' | 0)
}

impl Decoder for MllpCodec {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        loop {
            if buf.is_empty() {
                return Ok(None);
            }
            if buf[0] != START {
                // Outside a frame: skip filler, report anything else up to the next start byte.
                let next_start = memchr::memchr(START, buf);
                let outside = next_start.unwrap_or(buf.len());
                if buf[..outside].iter().all(|&b| is_filler(b)) {
                    buf.advance(outside);
                    continue;
                }
                if next_start.is_none() && outside <= self.max_message_size {
                    // More garbage (or a start byte) may follow; wait, EOF flushes it.
                    return Ok(None);
                }
                let take = outside.min(self.max_message_size);
                let garbage = buf.split_to(take).freeze();
                return Ok(Some(Frame::Garbage(garbage)));
            }
            // Inside a frame: look for the end byte, or a start byte that cuts this frame short.
            let from = self.scanned.max(1);
            match memchr::memchr2(END, START, &buf[from..]) {
                Some(offset) => {
                    let at = from + offset;
                    self.scanned = 0;
                    if at - 1 > self.max_message_size {
                        let mut frame = buf.split_to(at);
                        frame.advance(1);
                        frame.truncate(self.max_message_size);
                        return Ok(Some(Frame::Oversize(frame.freeze())));
                    }
                    if buf[at] == START {
                        let mut frame = buf.split_to(at);
                        frame.advance(1);
                        return Ok(Some(Frame::Unterminated(frame.freeze())));
                    }
                    let mut frame = buf.split_to(at + 1);
                    frame.advance(1);
                    frame.truncate(frame.len() - 1);
                    if buf.first() == Some(&CR) {
                        buf.advance(1);
                    }
                    return Ok(Some(Frame::Message(frame.freeze())));
                }
                None => {
                    self.scanned = buf.len();
                    if buf.len() - 1 > self.max_message_size {
                        self.scanned = 0;
                        let mut frame = buf.split_to(self.max_message_size + 1);
                        frame.advance(1);
                        buf.clear();
                        return Ok(Some(Frame::Oversize(frame.freeze())));
                    }
                    buf.reserve(4096);
                    return Ok(None);
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        self.scanned = 0;
        if buf.is_empty() {
            return Ok(None);
        }
        let rest = buf.split().freeze();
        if rest[0] == START {
            // The peer closed in the middle of a frame: it cannot read an answer reliably, but the bytes are kept.
            return Ok(Some(Frame::Incomplete(rest.slice(1..))));
        }
        if rest.iter().all(|&b| is_filler(b)) {
            return Ok(None);
        }
        Ok(Some(Frame::Garbage(rest)))
    }
}

/// What the connection writer waits on, in arrival order.
enum Reply {
    /// An answer whose ACK is ready once the journal commit is durable.
    Pending(Pending),
    /// Answer, then close the connection (oversize).
    ThenClose(Pending),
}

/// Accepts connections until shutdown, serving each on its own task; then waits for them to drain.
pub async fn run_listener(
    listener: TcpListener,
    intake: Intake,
    tls: Option<Arc<TlsServer>>,
    mut shutdown: Shutdown,
) {
    let transport = if tls.is_some() { Transport::MllpTls } else { Transport::Mllp };
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.recv() => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let intake = intake.clone();
                let tls = tls.clone();
                let shutdown = shutdown.clone();
                connections.spawn(async move {
                    match tls {
                        None => serve_connection(stream, peer, intake, transport, shutdown).await,
                        Some(tls) => {
                            if let Some(stream) = tls.accept(stream, peer).await {
                                serve_connection(stream, peer, intake, transport, shutdown).await;
                            }
                        }
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drained =
        tokio::time::timeout(DRAIN_TIMEOUT, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        warn!(open = connections.len(), "connections still busy after the drain timeout; closing them");
        connections.abort_all();
    }
}

/// Serves one MLLP connection: frames in, ACKs out in the same order.
pub async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    intake: Intake,
    transport: Transport,
    mut shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    debug!(%peer, ?transport, "connection opened");
    let _open = crate::ops::metrics::OpenConnection::open(transport);
    let (read_half, write_half) = tokio::io::split(stream);
    let mut frames = FramedRead::new(read_half, MllpCodec::new(intake.max_message_size()));
    // Bounded: a sender that pipelines without reading its ACKs is slowed down, not buffered without limit.
    let (replies_tx, replies_rx) = mpsc::channel::<Reply>(1024);
    let writer = tokio::spawn(write_replies(write_half, replies_rx, peer));
    let peer_text = peer.to_string();

    loop {
        let frame = tokio::select! {
            biased;
            _ = shutdown.recv() => break,
            frame = frames.next() => frame,
        };
        let frame = match frame {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                debug!(%peer, error = %e, "read failed");
                break;
            }
        };
        let (pending, close) = match frame {
            Frame::Message(raw) => (intake.submit(raw, transport, &peer_text).await, false),
            Frame::Garbage(raw) => {
                warn!(%peer, bytes = raw.len(), "data outside an MLLP frame");
                (intake.submit_framing_fault(raw, transport, &peer_text, FramingFault::Garbage).await, false)
            }
            Frame::Unterminated(raw) => {
                warn!(%peer, bytes = raw.len(), "MLLP frame interrupted by a new start byte");
                (
                    intake.submit_framing_fault(raw, transport, &peer_text, FramingFault::Unterminated).await,
                    false,
                )
            }
            Frame::Incomplete(raw) => {
                warn!(%peer, bytes = raw.len(), "connection ended in the middle of an MLLP frame");
                (
                    intake.submit_framing_fault(raw, transport, &peer_text, FramingFault::Incomplete).await,
                    false,
                )
            }
            Frame::Oversize(raw) => {
                warn!(%peer, limit = intake.max_message_size(), "message over the size limit; closing");
                (intake.submit_framing_fault(raw, transport, &peer_text, FramingFault::Oversize).await, true)
            }
        };
        let reply = if close { Reply::ThenClose(pending) } else { Reply::Pending(pending) };
        if replies_tx.send(reply).await.is_err() || close {
            break;
        }
    }
    drop(replies_tx);
    let _ = writer.await;
    debug!(%peer, "connection closed");
}

/// Why a framing fault is answered with AR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingFault {
    /// Bytes outside a frame.
    Garbage,
    /// A frame cut short by a new start byte.
    Unterminated,
    /// A frame cut short by the end of the stream.
    Incomplete,
    /// A frame over the size limit.
    Oversize,
}

/// How long a connection with one message in flight polls for its commit before it waits to be woken.
const EAGER_WAIT: Duration = Duration::from_micros(250);

/// Awaits `future`, polling it again at once (the task re-queued behind the runtime's other work) for up to
/// `budget` before leaving it to its waker.
async fn eagerly<F: std::future::Future>(future: F, budget: Duration) -> F::Output {
    let mut future = std::pin::pin!(future);
    let until = std::time::Instant::now() + budget;
    std::future::poll_fn(move |cx| {
        let polled = future.as_mut().poll(cx);
        if polled.is_pending() && std::time::Instant::now() < until {
            cx.waker().wake_by_ref();
        }
        polled
    })
    .await
}

async fn write_replies<W>(write_half: W, mut replies: mpsc::Receiver<Reply>, peer: SocketAddr)
where
    W: AsyncWrite + Send + Unpin,
{
    let mut out = BufWriter::new(write_half);
    let mut frame = BytesMut::with_capacity(1024);
    while let Some(reply) = replies.recv().await {
        let (pending, close) = match reply {
            Reply::Pending(p) => (p, false),
            Reply::ThenClose(p) => (p, true),
        };
        // A lone message in flight (send, wait for the ACK, send): watch for its commit instead of parking
        // the worker, whose wake-up would otherwise sit on the ACK's path.
        let ack = match replies.is_empty() {
            true => eagerly(pending.ack(), EAGER_WAIT).await,
            false => pending.ack().await,
        };
        frame.clear();
        MllpCodec::encode_frame(&ack, &mut frame);
        if out.write_all(&frame).await.is_err() {
            debug!(%peer, "peer went away before its ACK");
            return;
        }
        // Flush when nothing else is ready, so pipelined ACKs leave in few writes.
        if (replies.is_empty() || close) && out.flush().await.is_err() {
            return;
        }
        if close {
            break;
        }
    }
    let _ = out.flush().await;
    let _ = out.shutdown().await;
    info!(%peer, "MLLP connection finished");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(input: &[u8], max: usize) -> Vec<Frame> {
        let mut codec = MllpCodec::new(max);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            out.push(f);
        }
        while let Some(f) = codec.decode_eof(&mut buf).unwrap() {
            out.push(f);
        }
        out
    }

    fn framed(msg: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        MllpCodec::encode_frame(msg, &mut b);
        b.to_vec()
    }

    #[test]
    fn frames_and_whitespace_between_them() {
        let mut input = framed(b"MSH|a");
        input.extend_from_slice(b"\r\n");
        input.extend(framed(b"MSH|b"));
        assert_eq!(
            decode_all(&input, 100),
            vec![Frame::Message(Bytes::from_static(b"MSH|a")), Frame::Message(Bytes::from_static(b"MSH|b"))]
        );
    }

    #[test]
    fn garbage_is_reported_then_the_next_frame_served() {
        let mut input = b"hello".to_vec();
        input.extend(framed(b"MSH|a"));
        assert_eq!(
            decode_all(&input, 100),
            vec![Frame::Garbage(Bytes::from_static(b"hello")), Frame::Message(Bytes::from_static(b"MSH|a"))]
        );
    }

    #[test]
    fn a_new_start_byte_cuts_the_frame() {
        let mut input = vec![START];
        input.extend_from_slice(b"MSH|cut");
        input.extend(framed(b"MSH|b"));
        assert_eq!(
            decode_all(&input, 100),
            vec![
                Frame::Unterminated(Bytes::from_static(b"MSH|cut")),
                Frame::Message(Bytes::from_static(b"MSH|b"))
            ]
        );
    }

    #[test]
    fn a_frame_cut_by_the_end_of_the_stream_is_incomplete() {
        let input = [&[START][..], b"MSH|partial"].concat();
        assert_eq!(decode_all(&input, 100), vec![Frame::Incomplete(Bytes::from_static(b"MSH|partial"))]);
    }

    #[test]
    fn oversize_is_cut_at_the_limit() {
        let mut input = vec![START];
        input.extend(std::iter::repeat_n(b'x', 50));
        let frames = decode_all(&input, 10);
        assert_eq!(frames.len(), 1);
        assert!(matches!(&frames[0], Frame::Oversize(b) if b.len() == 10));
    }

    #[test]
    fn frames_split_across_reads() {
        let input = framed(b"MSH|abcdef");
        let mut codec = MllpCodec::new(100);
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for byte in input {
            buf.put_u8(byte);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames, vec![Frame::Message(Bytes::from_static(b"MSH|abcdef"))]);
    }

    #[test]
    fn end_byte_without_cr_still_ends_the_frame() {
        let input = [&[START][..], b"MSH|a", &[END], &[START], b"MSH|b", &[END, CR]].concat();
        assert_eq!(decode_all(&input, 100).len(), 2);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_are_accounted_for(input in proptest::collection::vec(any::<u8>(), 0..2048), max in 1usize..300) {
            let frames = decode_all(&input, max);
            for f in &frames {
                match f {
                    Frame::Message(b) | Frame::Garbage(b) | Frame::Unterminated(b) | Frame::Incomplete(b) | Frame::Oversize(b) => {
                        prop_assert!(b.len() <= max.max(input.len()));
                    }
                }
            }
        }

        #[test]
        fn messages_survive_any_chunking(msgs in proptest::collection::vec("[A-Z|^~&\\r\\n0-9]{1,60}", 1..8), cut in 1usize..17) {
            let mut input = Vec::new();
            for m in &msgs { input.extend(framed(m.as_bytes())); }
            let mut codec = MllpCodec::new(1000);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for chunk in input.chunks(cut) {
                buf.extend_from_slice(chunk);
                while let Some(f) = codec.decode(&mut buf).unwrap() { got.push(f); }
            }
            let want: Vec<Frame> = msgs.iter().map(|m| Frame::Message(Bytes::copy_from_slice(m.as_bytes()))).collect();
            prop_assert_eq!(got, want);
        }
    }
}
