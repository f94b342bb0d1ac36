//! MLLP ingest: every ANS sample is accepted, pipelining keeps ACK order, concurrent connections, segment
//! ends, de-duplication, framing faults, size limit and graceful stop.

use crate::harness::*;

/// The harness itself: a server starts, answers one sample with AA, and stops cleanly on SIGTERM.
#[test]
fn harness_starts_answers_and_stops() {
    let mut relais = Relais::start();
    let message = sample("ans/ans-sgl_A03_sortie.er7");
    let ack = Ack::parse(&mllp_send(relais.mllp_addr(), &message));
    assert_eq!(ack.code(), "AA", "{:?}", String::from_utf8_lossy(&ack.raw));
    assert_eq!(ack.acked_id(), msh_field(&message, 10));
    let status = relais.stop();
    assert!(status.success(), "exit status {status}; log:\n{}", relais.log());
    assert!(!relais.data_dir().join("listeners.json").exists(), "listeners.json removed on a clean stop");
}
