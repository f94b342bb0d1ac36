//! Route conditions compiled into a predicate tree that matches [`Facts`] and says why it did not.

use crate::facts::{EventClass, Facts, MessageKind};

use super::file::Condition;

/// A compiled condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    /// Every predicate holds (an empty list always holds).
    All(Vec<Predicate>),
    /// At least one holds.
    Any(Vec<Predicate>),
    /// The inner predicate does not hold.
    Not(Box<Predicate>),
    /// The message kind is one of these.
    Kind(Vec<MessageKind>),
    /// The event class is one of these.
    EventClass(Vec<EventClass>),
    /// A text fact is one of these values.
    Text {
        /// Which fact.
        field: TextField,
        /// Accepted values (already upper-cased when the field compares case-insensitively).
        values: Vec<String>,
    },
    /// Every one of these flags is set.
    Flags(Vec<String>),
    /// A yes/no fact has this value.
    Bool {
        /// Which fact.
        field: BoolField,
        /// The wanted value.
        wanted: bool,
    },
}

/// The text facts a route can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextField {
    /// MSH-9 (`ADT^A01`; a value `ADT^*` matches any trigger).
    MessageType,
    /// MSH-3.1.
    SendingApplication,
    /// MSH-4.1.
    SendingFacility,
    /// PV1-2.
    PatientClass,
    /// UF / ward.
    Unit,
    /// LOINC document type.
    DocumentType,
    /// Confidentiality code (case-insensitive).
    Confidentiality,
}

/// The yes/no facts a route can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoolField {
    /// INS present and qualified.
    InsQualified,
    /// DMP opposition (ZFA).
    DmpOpposition,
    /// Médecin traitant known.
    GpKnown,
}

impl TextField {
    /// The key used in route files.
    pub fn key(self) -> &'static str {
        match self {
            TextField::MessageType => "message_type",
            TextField::SendingApplication => "sending_application",
            TextField::SendingFacility => "sending_facility",
            TextField::PatientClass => "patient_class",
            TextField::Unit => "unit",
            TextField::DocumentType => "document_type",
            TextField::Confidentiality => "confidentiality",
        }
    }

    fn case_insensitive(self) -> bool {
        matches!(self, TextField::Confidentiality)
    }

    fn read(self, facts: &Facts) -> Option<&str> {
        let text = match self {
            TextField::MessageType => Some(facts.message_type.as_str()),
            TextField::SendingApplication => Some(facts.sending_application.as_str()),
            TextField::SendingFacility => Some(facts.sending_facility.as_str()),
            TextField::PatientClass => facts.patient_class.as_deref(),
            TextField::Unit => facts.unit.as_deref(),
            TextField::DocumentType => facts.document_type.as_deref(),
            TextField::Confidentiality => facts.confidentiality.as_deref(),
        };
        text.filter(|t| !t.is_empty())
    }
}

impl BoolField {
    /// The key used in route files.
    pub fn key(self) -> &'static str {
        match self {
            BoolField::InsQualified => "ins_qualified",
            BoolField::DmpOpposition => "dmp_opposition",
            BoolField::GpKnown => "gp_known",
        }
    }

    fn read(self, facts: &Facts) -> bool {
        match self {
            BoolField::InsQualified => facts.ins_qualified,
            BoolField::DmpOpposition => facts.dmp_opposition,
            BoolField::GpKnown => facts.gp_known,
        }
    }
}

/// Compiles a condition table (its keys are combined with "all").
pub fn compile(condition: Condition) -> Predicate {
    let mut all = Vec::new();
    if let Some(kind) = condition.kind {
        all.push(Predicate::Kind(kind.into_vec()));
    }
    if let Some(classes) = condition.event_class {
        all.push(Predicate::EventClass(classes.into_vec()));
    }
    let texts = [
        (TextField::MessageType, condition.message_type),
        (TextField::SendingApplication, condition.sending_application),
        (TextField::SendingFacility, condition.sending_facility),
        (TextField::PatientClass, condition.patient_class),
        (TextField::Unit, condition.unit),
        (TextField::DocumentType, condition.document_type),
        (TextField::Confidentiality, condition.confidentiality),
    ];
    for (field, values) in texts {
        if let Some(values) = values {
            let mut values = values.into_vec();
            if field.case_insensitive() {
                values.iter_mut().for_each(|v| *v = v.to_uppercase());
            }
            all.push(Predicate::Text { field, values });
        }
    }
    if let Some(flags) = condition.flags {
        all.push(Predicate::Flags(flags.into_vec().into_iter().map(|f| f.to_uppercase()).collect()));
    }
    let bools = [
        (BoolField::InsQualified, condition.ins_qualified),
        (BoolField::DmpOpposition, condition.dmp_opposition),
        (BoolField::GpKnown, condition.gp_known),
    ];
    for (field, wanted) in bools {
        if let Some(wanted) = wanted {
            all.push(Predicate::Bool { field, wanted });
        }
    }
    if let Some(subs) = condition.all {
        all.push(Predicate::All(subs.into_iter().map(compile).collect()));
    }
    if let Some(subs) = condition.any {
        all.push(Predicate::Any(subs.into_iter().map(compile).collect()));
    }
    if let Some(sub) = condition.not {
        all.push(Predicate::Not(Box::new(compile(*sub))));
    }
    if all.len() == 1 { all.remove(0) } else { Predicate::All(all) }
}

impl Predicate {
    /// Whether the facts satisfy the predicate.
    pub fn matches(&self, facts: &Facts) -> bool {
        self.check(facts).is_ok()
    }

    /// `Ok` when the facts satisfy the predicate, otherwise the first failing predicate in words
    /// (`event_class is discharge, wanted one of [admission]`). Never quotes identifying values: only
    /// classification facts are named.
    pub fn check(&self, facts: &Facts) -> Result<(), String> {
        match self {
            Predicate::All(preds) => preds.iter().try_for_each(|p| p.check(facts)),
            Predicate::Any(preds) => {
                let mut reasons = Vec::new();
                for pred in preds {
                    match pred.check(facts) {
                        Ok(()) => return Ok(()),
                        Err(reason) => reasons.push(reason),
                    }
                }
                Err(format!("none of any: [{}]", reasons.join("; ")))
            }
            Predicate::Not(inner) => match inner.check(facts) {
                Ok(()) => Err(format!("not: {} holds", inner.describe())),
                Err(_) => Ok(()),
            },
            Predicate::Kind(kinds) => {
                if kinds.contains(&facts.kind) {
                    Ok(())
                } else {
                    Err(format!("kind is {}, wanted one of {}", kind_name(facts.kind), self.wanted()))
                }
            }
            Predicate::EventClass(classes) => match facts.event_class {
                Some(class) if classes.contains(&class) => Ok(()),
                Some(class) => {
                    Err(format!("event_class is {}, wanted one of {}", class.as_str(), self.wanted()))
                }
                None => Err(format!("event_class is absent, wanted one of {}", self.wanted())),
            },
            Predicate::Text { field, values } => {
                let Some(actual) = field.read(facts) else {
                    return Err(format!("{} is absent, wanted one of {}", field.key(), self.wanted()));
                };
                let actual = if field.case_insensitive() { actual.to_uppercase() } else { actual.to_owned() };
                if values.iter().any(|v| text_matches(*field, v, &actual)) {
                    Ok(())
                } else {
                    Err(format!("{} is {actual}, wanted one of {}", field.key(), self.wanted()))
                }
            }
            Predicate::Flags(flags) => {
                let missing: Vec<&str> = flags
                    .iter()
                    .filter(|f| !facts.flags.iter().any(|set| set.eq_ignore_ascii_case(f)))
                    .map(String::as_str)
                    .collect();
                if missing.is_empty() { Ok(()) } else { Err(format!("flags lack {}", missing.join(", "))) }
            }
            Predicate::Bool { field, wanted } => {
                let actual = field.read(facts);
                if actual == *wanted {
                    Ok(())
                } else {
                    Err(format!("{} is {actual}, wanted {wanted}", field.key()))
                }
            }
        }
    }

    /// The predicate in route-file terms (`event_class in [admission]`).
    pub fn describe(&self) -> String {
        match self {
            Predicate::All(preds) => {
                format!("all [{}]", preds.iter().map(Predicate::describe).collect::<Vec<_>>().join(", "))
            }
            Predicate::Any(preds) => {
                format!("any [{}]", preds.iter().map(Predicate::describe).collect::<Vec<_>>().join(", "))
            }
            Predicate::Not(inner) => format!("not {}", inner.describe()),
            Predicate::Kind(_) => format!("kind in {}", self.wanted()),
            Predicate::EventClass(_) => format!("event_class in {}", self.wanted()),
            Predicate::Text { field, .. } => format!("{} in {}", field.key(), self.wanted()),
            Predicate::Flags(flags) => format!("flags include [{}]", flags.join(", ")),
            Predicate::Bool { field, wanted } => format!("{} = {wanted}", field.key()),
        }
    }

    fn wanted(&self) -> String {
        let names: Vec<String> = match self {
            Predicate::Kind(kinds) => kinds.iter().map(|k| kind_name(*k).to_owned()).collect(),
            Predicate::EventClass(classes) => classes.iter().map(|c| c.as_str().to_owned()).collect(),
            Predicate::Text { values, .. } => values.clone(),
            _ => Vec::new(),
        };
        format!("[{}]", names.join(", "))
    }
}

fn text_matches(field: TextField, wanted: &str, actual: &str) -> bool {
    if field == TextField::MessageType
        && let Some(prefix) = wanted.strip_suffix('*')
    {
        return actual.starts_with(prefix);
    }
    wanted == actual
}

fn kind_name(kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::Hl7v2 => "hl7v2",
        MessageKind::Cda => "cda",
    }
}
