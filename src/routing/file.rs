//! The route file schema: what integrators write in `routes/*.toml`, read with spans for file:line errors.
//!
//! ```toml
//! [[route]]
//! name = "gp-admission"                 # unique across every file of the directory
//! destinations = ["gp-notify"]          # sink instance names from relais.toml (`sinks.<name>`)
//! [route.when]                          # every key of a table must hold (all); absent `when` matches all
//! event_class = ["admission", "discharge"]
//! gp_known = true
//! not = { flags = ["INVISIBLE_PATIENT"] }
//! any = [{ patient_class = "I" }, { unit = ["UF1234", "UF5678"] }]
//! ```

use serde::Deserialize;
use toml::Spanned;

use crate::facts::{EventClass, MessageKind};

/// One route file: a list of `[[route]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// The routes, in file order.
    #[serde(default)]
    pub route: Vec<Spanned<RouteDef>>,
}

/// One `[[route]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteDef {
    /// Unique route name (carried in the envelope and in `explain`).
    pub name: Spanned<String>,
    /// Sink instance names the message goes to when the route matches.
    pub destinations: Vec<Spanned<String>>,
    /// The predicates; absent means "every message".
    #[serde(default)]
    pub when: Condition,
}

/// A value or a list of accepted values (`"I"` or `["I", "R"]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// A single accepted value.
    One(T),
    /// Any of these values.
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    /// The accepted values as a list.
    pub fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(value) => vec![value],
            OneOrMany::Many(values) => values,
        }
    }
}

/// A table of predicates, all of which must hold. String predicates compare exactly (flags and
/// confidentiality case-insensitively); a list means "one of".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// `hl7v2` or `cda`.
    pub kind: Option<OneOrMany<MessageKind>>,
    /// Event classes (`sau_entry`, `admission`, `discharge`, `death`, `cancel`, `update`, `document`).
    pub event_class: Option<OneOrMany<EventClass>>,
    /// MSH-9 as `TYPE^TRIGGER`; `ADT^*` matches every trigger of a type.
    pub message_type: Option<OneOrMany<String>>,
    /// MSH-3.1.
    pub sending_application: Option<OneOrMany<String>>,
    /// MSH-4.1.
    pub sending_facility: Option<OneOrMany<String>>,
    /// PV1-2.
    pub patient_class: Option<OneOrMany<String>>,
    /// UF or ward (ZBE-7 / PV1-3).
    pub unit: Option<OneOrMany<String>>,
    /// Document type (LOINC).
    pub document_type: Option<OneOrMany<String>>,
    /// Confidentiality code (`N`, `R`, `V`).
    pub confidentiality: Option<OneOrMany<String>>,
    /// Every listed flag is set on the message (`MASQUE_PS`, `INVISIBLE_PATIENT`, `DESTDMP`…).
    pub flags: Option<OneOrMany<String>>,
    /// The INS is present and qualified.
    pub ins_qualified: Option<bool>,
    /// The patient opposed DMP feeding (ZFA).
    pub dmp_opposition: Option<bool>,
    /// A médecin traitant with an RPPS number is known.
    pub gp_known: Option<bool>,
    /// Every sub-condition holds.
    pub all: Option<Vec<Condition>>,
    /// At least one sub-condition holds.
    pub any: Option<Vec<Condition>>,
    /// The sub-condition does not hold.
    pub not: Option<Box<Condition>>,
}
