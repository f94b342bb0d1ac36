//! The mapping files: `mappings/adt.toml` (field → element rules), `mappings/event-classes.toml` (class rules)
//! and `mappings/tables/*.toml` (code tables), read and checked once. Every problem is a [`CheckError`]
//! naming `file:line`; [`crate::mapping::check`] and [`crate::mapping::Mapper::load`] share this code.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::path::SourcePath;
use crate::facts::EventClass;

/// Elements the engine reads from `[source]` of `adt.toml`; every one must be given.
pub const ELEMENTS: &[&str] = &[
    "patient.identifiers",
    "patient.names",
    "patient.birth_date",
    "patient.gender",
    "patient.addresses",
    "patient.telecom",
    "patient.death_date",
    "patient.death_indicator",
    "patient.identity_reliability",
    "patient.general_practitioner",
    "patient.general_practitioner_action",
    "patient.general_practitioner_address",
    "patient.general_practitioner_telecom",
    "merge.prior_identifiers",
    "encounter.nda",
    "encounter.visit_number",
    "encounter.patient_class",
    "encounter.start",
    "encounter.end",
    "encounter.admit_source",
    "encounter.admit_source_v2",
    "encounter.discharge_mode",
    "encounter.discharge_v2",
    "encounter.location",
    "encounter.unit",
    "movement.id",
    "movement.start",
    "movement.action",
    "movement.original_trigger",
];

/// Code tables the engine uses (`mappings/tables/<name>.toml`).
pub const TABLES: &[&str] = &[
    "patient-class",
    "encounter-status",
    "admit-source",
    "admit-source-v2",
    "discharge-disposition",
    "discharge-disposition-v2",
    "identity-status",
    "gender",
    "name-use",
    "address-use",
    "telecom-use",
    "telecom-equipment",
    "undoes",
];

/// One problem in a mapping file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line (0 when the problem is the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
        }
    }
}

/// Every problem found in a mappings directory (never empty when returned as an error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CheckErrors(pub Vec<CheckError>);

impl fmt::Display for CheckErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// One entry of a code table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEntry {
    /// Target code system (the table's `system` unless the entry overrides it); empty for plain codes.
    pub system: String,
    /// Target code.
    pub code: String,
    /// Target display.
    pub display: Option<String>,
}

/// A code table: source code → target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// Entries by source code.
    pub codes: BTreeMap<String, TableEntry>,
}

impl Table {
    /// The entry for `source`, if any.
    pub fn get(&self, source: &str) -> Option<&TableEntry> {
        self.codes.get(source)
    }
}

/// Value type of a segment-extension sub-extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// valueString.
    String,
    /// valueCode.
    Code,
    /// valueDateTime (an HL7 TS, converted like every time).
    DateTime,
    /// valueBoolean (Y/N).
    Boolean,
}

/// A French segment kept as a nested extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentExtension {
    /// Segment id (`ZBE`).
    pub segment: String,
    /// `Patient` or `Encounter`.
    pub resource: String,
    /// Full extension URL.
    pub url: String,
    /// (field, component) → (sub-extension name, type), in field order.
    pub fields: Vec<((usize, Option<usize>), String, ValueType)>,
}

/// One event-class rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassRule {
    /// The class given when the rule matches.
    pub class: EventClass,
    /// Triggers (MSH-9.2); empty = any.
    pub triggers: Vec<String>,
    /// The field tested, if any.
    pub path: Option<SourcePath>,
    /// Values accepted at `path`.
    pub equals: Vec<String>,
    /// `present = true`: the field at `path` must not be empty.
    pub present: bool,
}

/// An INS OID entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsOid {
    /// The OID (CX-4.2).
    pub oid: String,
    /// FR Core identifier type code (`INS-NIR`).
    pub type_code: String,
    /// Identifier.use.
    pub use_: String,
}

/// Everything read from a mappings directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Base URL of the Z-segment extensions.
    pub extension_base: String,
    /// Template of local identifier systems (`{namespace}`).
    pub local_identifier_system: String,
    /// Mapped triggers.
    pub events: Vec<String>,
    /// Profiles.
    pub patient_profile: String,
    /// Profile claimed when a qualified INS is present.
    pub patient_ins_profile: String,
    /// Encounter profile.
    pub encounter_profile: String,
    /// Practitioner profile.
    pub practitioner_profile: String,
    /// CX-5 of an INS.
    pub ins_type_code: String,
    /// PID-32 values that qualify an identity.
    pub ins_qualified_when: Vec<String>,
    /// PID-32 values that forbid the INS.
    pub ins_never_with: Vec<String>,
    /// INS OIDs.
    pub ins_oids: Vec<InsOid>,
    /// Element → source paths.
    pub source: BTreeMap<String, Vec<SourcePath>>,
    /// `dmp_opposition` fact: path and accepted values.
    pub dmp_opposition: Option<(SourcePath, Vec<String>)>,
    /// Flags set in `facts.flags` when the field at the path equals one of the values.
    pub flags: Vec<(SourcePath, Vec<String>, String)>,
    /// French segments kept as extensions.
    pub segment_extensions: Vec<SegmentExtension>,
    /// Event-class rules, in order.
    pub classes: Vec<ClassRule>,
    /// Code tables by name.
    pub tables: BTreeMap<String, Table>,
}

// ---- raw file shapes ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdtFile {
    settings: RawSettings,
    ins: RawIns,
    source: BTreeMap<Spanned<String>, Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    facts: RawFacts,
    #[serde(default)]
    segment_extension: Vec<Spanned<RawSegmentExtension>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    extension_base: Spanned<String>,
    local_identifier_system: Spanned<String>,
    events: Vec<Spanned<String>>,
    patient_profile: String,
    patient_ins_profile: String,
    encounter_profile: String,
    practitioner_profile: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIns {
    type_code: String,
    qualified_when: Vec<String>,
    #[serde(default)]
    never_with: Vec<String>,
    oids: Vec<Spanned<RawInsOid>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInsOid {
    oid: String,
    #[serde(rename = "type")]
    type_code: String,
    #[serde(rename = "use")]
    use_: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFacts {
    dmp_opposition: Option<Spanned<RawCondition>>,
    #[serde(default)]
    flags: Vec<Spanned<RawFlag>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlag {
    path: String,
    equals: Vec<String>,
    flag: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    path: String,
    equals: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSegmentExtension {
    segment: String,
    resource: String,
    name: String,
    fields: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassFile {
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    class: Spanned<String>,
    #[serde(default)]
    triggers: Vec<Spanned<String>>,
    path: Option<Spanned<String>>,
    #[serde(default)]
    equals: Vec<String>,
    #[serde(default)]
    present: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    #[serde(default)]
    system: Option<String>,
    codes: BTreeMap<String, Spanned<RawEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    code: String,
    #[serde(default)]
    display: Option<String>,
    #[serde(default)]
    system: Option<String>,
}

/// Collects errors for one file, turning byte spans into lines.
struct Report<'t> {
    file: PathBuf,
    text: &'t str,
    errors: &'t mut Vec<CheckError>,
}

impl Report<'_> {
    fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let line = self.text.get(..span.start).map_or(0, |t| t.matches('\n').count() + 1);
        self.errors.push(CheckError { file: self.file.clone(), line, message: message.into() });
    }
}

fn read(path: &Path, errors: &mut Vec<CheckError>) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) => {
            errors.push(CheckError { file: path.to_owned(), line: 0, message: format!("cannot read: {e}") });
            None
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path, text: &str, errors: &mut Vec<CheckError>) -> Option<T> {
    match toml::from_str::<T>(text) {
        Ok(v) => Some(v),
        Err(e) => {
            let mut r = Report { file: path.to_owned(), text, errors };
            r.at(e.span().unwrap_or(0..0), e.message().trim().replace('\n', " "));
            None
        }
    }
}

fn is_trigger(t: &str) -> bool {
    t.len() == 3 && t.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// Reads and checks every mapping file of `dir`; all problems are returned, not just the first.
pub fn load(dir: &Path) -> Result<Rules, CheckErrors> {
    let mut errors = Vec::new();
    let adt_path = dir.join("adt.toml");
    let classes_path = dir.join("event-classes.toml");
    let adt = read(&adt_path, &mut errors).and_then(|t| {
        let f = parse::<AdtFile>(&adt_path, &t, &mut errors)?;
        Some((f, t))
    });
    let classes = read(&classes_path, &mut errors).and_then(|t| {
        let f = parse::<ClassFile>(&classes_path, &t, &mut errors)?;
        Some((f, t))
    });
    let tables = load_tables(&dir.join("tables"), &mut errors);
    let rules = match (adt, classes) {
        (Some((adt, adt_text)), Some((cls, cls_text))) => {
            let mut r = Report { file: adt_path, text: &adt_text, errors: &mut errors };
            let partial = check_adt(adt, &mut r);
            let mut r = Report { file: classes_path, text: &cls_text, errors: &mut errors };
            let classes = check_classes(cls, &partial.events, &mut r);
            Some(Rules { classes, tables, ..partial })
        }
        _ => None,
    };
    match rules {
        Some(rules) if errors.is_empty() => Ok(rules),
        _ => Err(CheckErrors(errors)),
    }
}

fn load_tables(dir: &Path, errors: &mut Vec<CheckError>) -> BTreeMap<String, Table> {
    let mut tables = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push(CheckError { file: dir.to_owned(), line: 0, message: format!("cannot read: {e}") });
            return tables;
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    for path in paths {
        let Some(text) = read(&path, errors) else { continue };
        let Some(file) = parse::<TableFile>(&path, &text, errors) else { continue };
        let mut r = Report { file: path.clone(), text: &text, errors };
        let mut table = Table::default();
        for (source, entry) in file.codes {
            let span = entry.span();
            let entry = entry.into_inner();
            if entry.code.trim().is_empty() {
                r.at(span, format!("code `{source}`: empty target code"));
                continue;
            }
            let system = entry.system.or_else(|| file.system.clone()).unwrap_or_default();
            table.codes.insert(source, TableEntry { system, code: entry.code, display: entry.display });
        }
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        tables.insert(name, table);
    }
    for name in TABLES {
        if !tables.contains_key(*name) {
            errors.push(CheckError {
                file: dir.join(format!("{name}.toml")),
                line: 0,
                message: "missing: this code table is required by the engine".into(),
            });
        }
    }
    check_table_targets(dir, &tables, errors);
    tables
}

/// Targets that must be FHIR codes the engine can build.
fn check_table_targets(dir: &Path, tables: &BTreeMap<String, Table>, errors: &mut Vec<CheckError>) {
    let allowed: &[(&str, &[&str])] = &[
        ("gender", &["male", "female", "other", "unknown"]),
        ("name-use", &["usual", "official", "temp", "nickname", "anonymous", "old", "maiden"]),
        ("address-use", &["home", "work", "temp", "old", "billing"]),
        ("telecom-use", &["home", "work", "temp", "old", "mobile"]),
        ("telecom-equipment", &["phone", "fax", "email", "pager", "url", "sms", "other"]),
        (
            "encounter-status",
            &[
                "planned",
                "arrived",
                "triaged",
                "in-progress",
                "onleave",
                "finished",
                "cancelled",
                "entered-in-error",
                "unknown",
                "derive",
            ],
        ),
    ];
    for (name, values) in allowed {
        let Some(table) = tables.get(*name) else { continue };
        for (source, entry) in &table.codes {
            if !values.contains(&entry.code.as_str()) {
                errors.push(CheckError {
                    file: dir.join(format!("{name}.toml")),
                    line: 0,
                    message: format!("code `{source}` → `{}`: not one of {}", entry.code, values.join(", ")),
                });
            }
        }
    }
}

fn check_adt(f: AdtFile, r: &mut Report<'_>) -> Rules {
    let s = f.settings;
    if !s.local_identifier_system.get_ref().contains("{namespace}") {
        r.at(s.local_identifier_system.span(), "local_identifier_system must contain `{namespace}`");
    }
    if !s.extension_base.get_ref().contains("://") {
        r.at(s.extension_base.span(), "extension_base must be an absolute URL");
    }
    let mut events = Vec::new();
    for e in s.events {
        if !is_trigger(e.get_ref()) {
            r.at(e.span(), format!("event `{}` is not a trigger code (3 letters or digits)", e.get_ref()));
        }
        events.push(e.into_inner());
    }
    let mut ins_oids = Vec::new();
    for o in f.ins.oids {
        let span = o.span();
        let o = o.into_inner();
        if !o.oid.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) {
            r.at(span.clone(), format!("`{}` is not an OID", o.oid));
        }
        if !["usual", "official", "temp", "secondary", "old"].contains(&o.use_.as_str()) {
            r.at(span, format!("use `{}` is not an Identifier.use code", o.use_));
        }
        ins_oids.push(InsOid { oid: o.oid, type_code: o.type_code, use_: o.use_ });
    }
    let mut source = BTreeMap::new();
    for (element, paths) in f.source {
        if !ELEMENTS.contains(&element.get_ref().as_str()) {
            r.at(
                element.span(),
                format!("unknown element `{}` (known: {})", element.get_ref(), ELEMENTS.join(", ")),
            );
            continue;
        }
        if paths.get_ref().is_empty() {
            r.at(paths.span(), format!("`{}`: give at least one path", element.get_ref()));
        }
        let mut parsed = Vec::new();
        for p in paths.into_inner() {
            match SourcePath::parse(p.get_ref()) {
                Ok(sp) => parsed.push(sp),
                Err(why) => r.at(p.span(), why),
            }
        }
        source.insert(element.into_inner(), parsed);
    }
    for element in ELEMENTS {
        if !source.contains_key(*element) {
            r.at(0..0, format!("[source] lacks `{element}`"));
        }
    }
    let dmp_opposition = f.facts.dmp_opposition.and_then(|c| {
        let span = c.span();
        let c = c.into_inner();
        match SourcePath::parse(&c.path) {
            Ok(p) => Some((p, c.equals)),
            Err(why) => {
                r.at(span, why);
                None
            }
        }
    });
    let mut flags = Vec::new();
    for flag in f.facts.flags {
        let span = flag.span();
        let flag = flag.into_inner();
        let upper = flag.flag.bytes().all(|b| b.is_ascii_uppercase() || b == b'_');
        if flag.flag.is_empty() || !upper {
            r.at(span.clone(), format!("flag `{}` must be upper case (A-Z, _)", flag.flag));
        }
        if flag.equals.is_empty() {
            r.at(span.clone(), "a flag needs `equals`");
        }
        match SourcePath::parse(&flag.path) {
            Ok(p) => flags.push((p, flag.equals, flag.flag)),
            Err(why) => r.at(span, why),
        }
    }
    let mut segment_extensions = Vec::new();
    for se in f.segment_extension {
        let span = se.span();
        let se = se.into_inner();
        if SourcePath::parse(&format!("{}-1", se.segment)).is_err() {
            r.at(span.clone(), format!("segment `{}` is not a segment id", se.segment));
        }
        if !["Patient", "Encounter"].contains(&se.resource.as_str()) {
            r.at(span.clone(), format!("resource `{}`: only Patient or Encounter", se.resource));
        }
        if se.name.is_empty() || se.name.contains('/') {
            r.at(span.clone(), "name must be a non-empty URL segment");
        }
        let mut fields = Vec::new();
        for (key, value) in se.fields {
            let at = SourcePath::parse(&format!("{}-{key}", se.segment));
            let Ok(at) = at.map_err(|why| r.at(span.clone(), format!("field `{key}`: {why}"))) else {
                continue;
            };
            if at.subcomponent.is_some() {
                r.at(span.clone(), format!("field `{key}`: give FIELD or FIELD.COMPONENT"));
                continue;
            }
            let (name, kind) = value.split_once(':').unwrap_or((value.as_str(), "string"));
            let kind = match kind {
                "string" => ValueType::String,
                "code" => ValueType::Code,
                "dateTime" => ValueType::DateTime,
                "boolean" => ValueType::Boolean,
                other => {
                    r.at(
                        span.clone(),
                        format!("field `{key}`: type `{other}` (string, code, dateTime, boolean)"),
                    );
                    continue;
                }
            };
            fields.push(((at.field, at.component), name.to_owned(), kind));
        }
        fields.sort_by_key(|(k, _, _)| *k);
        let url = format!("{}/{}", s.extension_base.get_ref().trim_end_matches('/'), se.name);
        segment_extensions.push(SegmentExtension { segment: se.segment, resource: se.resource, url, fields });
    }
    Rules {
        extension_base: s.extension_base.into_inner(),
        local_identifier_system: s.local_identifier_system.into_inner(),
        events,
        patient_profile: s.patient_profile,
        patient_ins_profile: s.patient_ins_profile,
        encounter_profile: s.encounter_profile,
        practitioner_profile: s.practitioner_profile,
        ins_type_code: f.ins.type_code,
        ins_qualified_when: f.ins.qualified_when,
        ins_never_with: f.ins.never_with,
        ins_oids,
        source,
        dmp_opposition,
        flags,
        segment_extensions,
        classes: Vec::new(),
        tables: BTreeMap::new(),
    }
}

fn check_classes(f: ClassFile, events: &[String], r: &mut Report<'_>) -> Vec<ClassRule> {
    let mut rules = Vec::new();
    for rule in f.rule {
        let span = rule.span();
        let rule = rule.into_inner();
        let class =
            serde_json::from_value::<EventClass>(serde_json::Value::String(rule.class.get_ref().clone()));
        let class = match class {
            Ok(c) => c,
            Err(_) => {
                r.at(
                    rule.class.span(),
                    format!(
                        "unknown class `{}` (sau_entry, admission, discharge, death, cancel, update, document)",
                        rule.class.get_ref()
                    ),
                );
                continue;
            }
        };
        let mut triggers = Vec::new();
        for t in rule.triggers {
            if !is_trigger(t.get_ref()) {
                r.at(t.span(), format!("`{}` is not a trigger code", t.get_ref()));
            } else if !events.iter().any(|e| e == t.get_ref()) {
                r.at(t.span(), format!("trigger `{}` is not in adt.toml [settings] events", t.get_ref()));
            }
            triggers.push(t.into_inner());
        }
        let path = match &rule.path {
            None => None,
            Some(p) => match SourcePath::parse(p.get_ref()) {
                Ok(sp) => Some(sp),
                Err(why) => {
                    r.at(p.span(), why);
                    continue;
                }
            },
        };
        match (&path, rule.equals.is_empty(), rule.present) {
            (Some(_), true, false) => r.at(span, "a rule with `path` needs `equals` or `present = true`"),
            (Some(_), false, true) => r.at(span, "give `equals` or `present`, not both"),
            (None, false, _) | (None, _, true) => r.at(span, "`equals`/`present` need a `path`"),
            _ => {}
        }
        rules.push(ClassRule { class, triggers, path, equals: rule.equals, present: rule.present });
    }
    rules
}
