//! The crash test: thousands of messages over 4 connections, `kill -9` mid-stream, restart on the same
//! data dir. Every control id that received an AA is in the journal (an AA is only sent once the write is on
//! disk), and resending everything afterwards duplicates nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};

use crate::harness::*;

const CONNECTIONS: usize = 4;
const PER_CONNECTION: usize = 1000;

fn control_id(connection: usize, n: usize) -> String {
    format!("CRASH-{connection}-{n:04}")
}

/// Pipelines every message of `connection` on one socket (a writer and a reader thread) and records each
/// control id answered AA, until the server dies or everything is answered.
fn stream_until_killed(addr: SocketAddr, connection: usize, acked: Arc<Mutex<Vec<String>>>) {
    let socket = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connecting");
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    socket.set_write_timeout(Some(TIMEOUT)).unwrap();
    let mut writer_socket = socket.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        for n in 0..PER_CONNECTION {
            if writer_socket.write_all(&frame(&adt(&control_id(connection, n)))).is_err() {
                return; // the server was killed
            }
        }
    });
    let mut reader = MllpClient::over(socket);
    for n in 0..PER_CONNECTION {
        let Some(answer) = reader.try_read_frame() else { break };
        let ack = Ack::parse(&answer);
        assert_eq!(ack.acked_id(), control_id(connection, n), "ACKs come in order");
        assert_eq!(ack.code(), "AA", "{:?}", String::from_utf8_lossy(&ack.raw));
        acked.lock().unwrap().push(ack.acked_id());
    }
    writer.join().unwrap();
}

#[test]
fn kill_9_mid_stream_loses_no_acknowledged_message() {
    let mut relais = Relais::start();
    let addr = relais.mllp_addr();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let acked = acked.clone();
            std::thread::spawn(move || stream_until_killed(addr, c, acked))
        })
        .collect();
    eventually("a first share of the messages acknowledged", || {
        (acked.lock().unwrap().len() >= 400).then_some(())
    });
    relais.kill();
    for client in clients {
        client.join().expect("a client saw something other than AA in order");
    }
    let acked: Vec<String> = acked.lock().unwrap().clone();
    let total = CONNECTIONS * PER_CONNECTION;
    eprintln!("acknowledged before kill -9: {} of {total}", acked.len());
    assert!(acked.len() < total, "the kill came after every ACK: not mid-stream ({} acked)", acked.len());

    relais.restart();
    let journaled = accepted_ids(&relais, 10_000);
    let counts = count(&journaled);
    let missing: Vec<&String> = acked.iter().filter(|id| !counts.contains_key(*id)).collect();
    assert!(missing.is_empty(), "{} acknowledged messages lost, e.g. {:?}", missing.len(), &missing[..1]);
    assert!(counts.values().all(|&n| n == 1), "a message journaled twice before the crash");
    assert_eq!(relais.stats()["rejected"], 0);

    // The senders resend everything they have no ACK for (and, to be sure, what they had): one entry each.
    let threads: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let addr = relais.mllp_addr();
            std::thread::spawn(move || {
                let mut client = MllpClient::connect(addr);
                let mut burst = Vec::new();
                for n in 0..PER_CONNECTION {
                    burst.extend(frame(&adt(&control_id(c, n))));
                }
                client.send_raw(&burst);
                for n in 0..PER_CONNECTION {
                    let ack = client.read_ack();
                    assert_eq!((ack.code(), ack.acked_id()), ("AA".to_string(), control_id(c, n)));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a resend was not acknowledged AA");
    }
    let journaled = accepted_ids(&relais, 10_000);
    let counts = count(&journaled);
    let expected: BTreeSet<String> =
        (0..CONNECTIONS).flat_map(|c| (0..PER_CONNECTION).map(move |n| control_id(c, n))).collect();
    assert_eq!(counts.keys().map(|id| id.to_string()).collect::<BTreeSet<_>>(), expected);
    assert!(counts.values().all(|&n| n == 1), "a resent message was journaled twice");
    let stats = relais.stats();
    assert_eq!((stats["journaled"], stats["rejected"]), (total as u64, 0));
}

fn count(ids: &[String]) -> BTreeMap<&String, usize> {
    let mut counts = BTreeMap::new();
    for id in ids {
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}
