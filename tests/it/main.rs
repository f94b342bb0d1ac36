//! Integration tests: the real `relais` binary, driven over MLLP, TLS and HTTP (one test binary, see
//! STYLE.md). Each area has its own module; [`harness`] starts servers and speaks the protocols.

mod harness;

mod admin;
mod admin_sinks;
mod bad_input;
mod bus;
mod charsets;
mod crash;
mod documents;
mod ingest_http;
mod ingest_mllp;
mod ingest_tls;
mod mapping;
mod ops;
mod ports;
mod rabbit;
mod send_cli;
mod sinks;
