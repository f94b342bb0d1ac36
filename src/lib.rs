//! Relais: an HL7v2/CDA to FHIR integration broker for French hospital groups.
//!
//! The stages, in the order a message flows through them (data flows one way, no back-calls):
//!
//! - [`ingest`]: MLLP (plain, TLS, mutual TLS) and HTTP listeners; each message is journaled, then acknowledged.
//! - [`hl7v2`]: zero-copy HL7v2 reading, charsets (MSH-18), escapes, ACK/NAK building.
//! - [`journal`]: the durable message store; an id is returned only after the write is on disk.
//! - [`cda`]: CDA R2 (CI-SIS) header extraction, streaming, with clear refusals naming the XML element.
//! - [`documents`]: XDS metadata, ORU^R01 documents, the FHIR DocumentReference bundle, ZAM acknowledgements.
//! - [`mapping`]: PAM FR ADT messages → FHIR R4 Bundles (FR Core) and routing facts, rules in `mappings/`.
//! - [`facts`]: the map stage's output (FHIR Bundle + routing facts), the contract between map and route.
//!
//! [`config`] turns `relais.toml` and `RELAIS__*` variables into checked [`config::Settings`];
//! [`shutdown`] carries the one stop signal every task listens to.
//! [`ops`] observes every stage (Prometheus metrics, `/health`, `/ready`) and decides nothing.
//! [`admin`] lets operators search, replay and purge (API, console, CLI client) and prunes the journal.

pub mod admin;
pub mod bus;
pub mod cda;
pub mod config;
pub mod documents;
pub mod facts;
pub mod hl7v2;
pub mod identity;
pub mod ingest;
pub mod journal;
pub mod mapping;
pub mod ops;
pub mod pipeline;
pub mod routing;
pub mod send;
pub mod server;
pub mod shutdown;
pub mod sinks;
