//! Free loopback ports for the test servers (RabbitMQ, SMTP), taken below the kernel's ephemeral range.
//!
//! A port handed out by binding port 0 lies in the ephemeral range, where every outgoing connection also
//! takes its local port. A server that is stopped and started again on the same port (the broker outage
//! tests, the SMTP retry test) could then find it held by some other connection, or by a client of its own
//! retrying meanwhile (a TCP self-connect), and fail to start. Below that range only an explicit bind can
//! hold a port.

use std::net::TcpListener;

/// The lowest port this module hands out.
const LOWEST: u16 = 10_000;

/// A base port P with P..P+n all free on 127.0.0.1, every one below the ephemeral range.
pub fn free_port_block(n: u16) -> u16 {
    let ceiling = ephemeral_range_start().saturating_sub(n);
    assert!(ceiling > LOWEST + 100, "no room for {n} ports below the ephemeral range");
    // Random bases, so that concurrent tests (and test binaries) seldom probe the same ports.
    for _ in 0..1000 {
        let base = fastrand::u16(LOWEST..ceiling);
        if (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no free block of {n} ports between {LOWEST} and {ceiling}");
}

/// One free port on 127.0.0.1, below the ephemeral range.
pub fn free_port() -> u16 {
    free_port_block(1)
}

/// The first port of the kernel's ephemeral range (Linux's default when it cannot be read).
fn ephemeral_range_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}
