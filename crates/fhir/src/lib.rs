//! FHIR R4 resource building for Relais, behind non-generic functions.
//!
//! This is the only crate that names `fhir-sdk`: its generic models compile once here, so edits
//! in the main crate rebuild in about a second. Callers fill plain data ([`model`]), call a builder
//! ([`patient`], [`encounter`], [`practitioner`], [`message_header`]) and hand the opaque [`Built`] resources to
//! [`bundle`], which serializes the Bundle as JSON. Every resource goes through fhir-sdk's typed builders, and
//! every code string is parsed into fhir-sdk's code enums, so a resource the FHIR model rejects is an [`Error`],
//! never output.

mod bundle;
mod datatypes;
pub mod document_reference;
pub mod model;
mod resources;

pub use bundle::{BundleData, BundleKind, Entry, bundle};
pub use document_reference::document_bundle;
pub use resources::{encounter, message_header, patient, practitioner};

/// The FHIR release whose JSON this crate emits (fhir-sdk's `r4b` models, JSON-compatible with R4
/// for the resources Relais produces).
pub const FHIR_VERSION: &str = "4.0.1";

/// Why a resource could not be built: a value the FHIR model does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A required element is missing (fhir-sdk builder error).
    #[error("FHIR {element}: {reason}")]
    Builder {
        /// The element being built (`Patient`, `Identifier`…).
        element: &'static str,
        /// The builder's message.
        reason: String,
    },
    /// A code, date or dateTime that is not valid FHIR.
    #[error("FHIR {element}: `{value}` is not valid ({reason})")]
    Value {
        /// The element (`Patient.gender`, `Encounter.period.start`…).
        element: &'static str,
        /// The rejected value.
        value: String,
        /// Why.
        reason: String,
    },
    /// Serialization failed.
    #[error("FHIR JSON: {0}")]
    Json(String),
}

impl Error {
    /// The element the error is about (`Bundle` for a serialization failure).
    pub fn element(&self) -> &'static str {
        match self {
            Error::Builder { element, .. } | Error::Value { element, .. } => element,
            Error::Json(_) => "Bundle",
        }
    }

    /// Why, without the element.
    pub fn reason(&self) -> String {
        match self {
            Error::Builder { reason, .. } | Error::Json(reason) => reason.clone(),
            Error::Value { value, reason, .. } => format!("`{value}`: {reason}"),
        }
    }
}

/// A built resource, ready to go into a Bundle. Its `Debug` shows the resource type only.
#[derive(Clone)]
pub struct Built {
    resource: fhir_sdk::r4b::resources::Resource,
    type_name: &'static str,
    id: String,
}

impl Built {
    /// The resource type (`Patient`, `Encounter`…).
    pub fn resource_type(&self) -> &'static str {
        self.type_name
    }

    /// The logical id given to the builder.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The resource alone, as JSON.
    pub fn to_json(&self) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(&self.resource).map_err(|e| Error::Json(e.to_string()))
    }
}

impl std::fmt::Debug for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Built").field("type", &self.type_name).finish()
    }
}
