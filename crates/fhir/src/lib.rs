//! FHIR R4 resource building for Relais, behind non-generic functions.
//!
//! This is the only crate that names `fhir-sdk`: its generic models compile once here, so edits
//! in the main crate rebuild in about a second.

/// The FHIR release whose JSON this crate emits (fhir-sdk's `r4b` models, JSON-compatible with R4
/// for the resources Relais produces).
pub const FHIR_VERSION: &str = "4.0.1";

pub mod document_reference;
