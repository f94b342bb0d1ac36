//! The engine: applies the [`Rules`] to one parsed message and builds the resources and the routing facts.
//!
//! Reads only the message and the rules (no I/O, no state): the same message always gives the same Bundle.
//! The FHIR shape of each element is code (through relais-fhir's typed builders); where each value comes from
//! and how codes translate is data (`mappings/`).

use std::borrow::Cow;

use relais_fhir::model::{
    Addr, Code, Deceased, EncounterData, Endpoint, Ext, ExtValue, HeaderData, Ident, Link, LocationEntry,
    Name, PatientData, PractitionerData, Ref, Telecom,
};
use relais_fhir::{BundleData, BundleKind, Entry};

use super::file::{Rules, SegmentExtension, Table, TableEntry, ValueType};
use super::ids::{id, query_escape, urn};
use super::path::{SourcePath, component, text_of};
use super::time;
use crate::facts::{EventClass, Facts, MapFailure, Mapped, MessageKind};
use crate::hl7v2::{Charset, Delimiters, Field, Message};
use crate::identity;

const V2_0203: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";
const V2_0003: &str = "http://terminology.hl7.org/CodeSystem/v2-0003";
const FR_V2_0203: &str = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203";
const RPPS_SYSTEM: &str = "https://rpps.esante.gouv.fr";
const IDNPS_SYSTEM: &str = "urn:oid:1.2.250.1.71.4.2.1";
const RELIABILITY_URL: &str = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability";
const BIRTH_PLACE_URL: &str = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace";
const INSEE_SYSTEM: &str = "https://mos.esante.gouv.fr/NOS/TRE_R13-CommuneOM/FHIR/TRE-R13-CommuneOM";

/// The parts joined, in one allocation (no formatting machinery on the per-message path).
fn concat(parts: &[&str]) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        out.push_str(p);
    }
    out
}

fn fail(location: impl Into<String>, reason: impl Into<String>) -> MapFailure {
    MapFailure { location: location.into(), reason: reason.into() }
}

fn fhir_fail(e: relais_fhir::Error) -> MapFailure {
    fail("FHIR", e.to_string())
}

/// The `[source]` elements of `adt.toml`, in [`super::file::ELEMENTS`] order: the engine reads an element's
/// paths by index, resolved once at load ([`sources`]), never by name per message.
#[derive(Debug, Clone, Copy)]
pub(crate) enum El {
    PatientIdentifiers = 0,
    PatientNames = 1,
    PatientBirthDate = 2,
    PatientGender = 3,
    PatientAddresses = 4,
    PatientTelecom = 5,
    PatientDeathDate = 6,
    PatientDeathIndicator = 7,
    PatientIdentityReliability = 8,
    PatientGeneralPractitioner = 9,
    PatientGeneralPractitionerAction = 10,
    PatientGeneralPractitionerAddress = 11,
    PatientGeneralPractitionerTelecom = 12,
    MergePriorIdentifiers = 13,
    EncounterNda = 14,
    EncounterVisitNumber = 15,
    EncounterPatientClass = 16,
    EncounterStart = 17,
    EncounterEnd = 18,
    EncounterAdmitSource = 19,
    EncounterAdmitSourceV2 = 20,
    EncounterDischargeMode = 21,
    EncounterDischargeV2 = 22,
    EncounterLocation = 23,
    EncounterUnit = 24,
    MovementStart = 26,
    MovementOriginalTrigger = 28,
}

/// The code tables of [`super::file::TABLES`], in that order (declaration order is the index): the engine reads
/// a table by index, resolved once at load ([`tables`]), never by name per message.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Tbl {
    PatientClass,
    EncounterStatus,
    AdmitSource,
    AdmitSourceV2,
    DischargeDisposition,
    DischargeDispositionV2,
    IdentityStatus,
    Gender,
    NameUse,
    AddressUse,
    TelecomUse,
    TelecomEquipment,
    Undoes,
}

/// Each code table, in [`Tbl`] order (all are required at load; an absent one reads as empty).
pub(crate) fn tables(rules: &Rules) -> Vec<Table> {
    super::file::TABLES.iter().map(|t| rules.tables.get(*t).cloned().unwrap_or_default()).collect()
}

/// Each element's source paths, in [`El`] order.
pub(crate) fn sources(rules: &Rules) -> Vec<Vec<SourcePath>> {
    super::file::ELEMENTS.iter().map(|e| rules.source.get(*e).cloned().unwrap_or_default()).collect()
}

/// One message being mapped.
pub(crate) struct Ctx<'r, 'm, 'a> {
    pub rules: &'r Rules,
    /// [`sources`] of the rules.
    pub sources: &'r [Vec<SourcePath>],
    /// [`tables`] of the rules.
    pub tables: &'r [Table],
    pub msg: &'m Message<'a>,
    pub cs: Charset,
    /// The whole message as text when `cs` is UTF-8 (already checked): values are sliced from it.
    pub utf8: Option<&'a str>,
    pub d: Delimiters,
    pub tz: time::Zone<'r>,
    /// `local_identifier_system` cut at its `{namespace}` markers (once, at load).
    pub local_pieces: &'r [String],
    pub facility: String,
    pub app: String,
    pub trigger: String,
    pub message_type: String,
}

impl<'a> Ctx<'_, '_, 'a> {
    fn paths(&self, element: El) -> &[SourcePath] {
        self.sources.get(element as usize).map_or(&[], Vec::as_slice)
    }

    /// The first non-empty text among the element's paths, with the path it came from.
    fn text_at(&self, element: El) -> Option<(Cow<'a, str>, &SourcePath)> {
        self.paths(element).iter().find_map(|p| p.text_in(self.msg, self.cs, self.utf8).map(|t| (t, p)))
    }

    fn text(&self, element: El) -> Option<String> {
        self.text_at(element).map(|(t, _)| t.into_owned())
    }

    /// [`Ctx::text`] borrowed from the message when possible (for comparisons and table keys).
    fn text_ref(&self, element: El) -> Option<Cow<'a, str>> {
        self.paths(element).iter().find_map(|p| p.text_in(self.msg, self.cs, self.utf8))
    }

    /// The first non-empty field among the element's paths.
    fn field(&self, element: El) -> Option<Field<'a>> {
        self.paths(element).iter().find_map(|p| p.field(self.msg, self.cs))
    }

    /// Every non-empty field among the element's paths (telecom reads all).
    fn fields(&self, element: El) -> Vec<Field<'a>> {
        self.paths(element).iter().filter_map(|p| p.field(self.msg, self.cs)).collect()
    }

    fn comp(&self, rep: &Field<'a>, c: usize) -> Option<String> {
        component(rep, &self.d, self.cs, c, None, self.utf8).map(Cow::into_owned)
    }

    /// [`Ctx::comp`] borrowed from the message when possible (for comparisons and table keys).
    fn comp_ref(&self, rep: &Field<'a>, c: usize) -> Option<Cow<'a, str>> {
        component(rep, &self.d, self.cs, c, None, self.utf8)
    }

    fn sub_ref(&self, rep: &Field<'a>, c: usize, s: usize) -> Option<Cow<'a, str>> {
        component(rep, &self.d, self.cs, c, Some(s), self.utf8)
    }

    fn sub(&self, rep: &Field<'a>, c: usize, s: usize) -> Option<String> {
        component(rep, &self.d, self.cs, c, Some(s), self.utf8).map(Cow::into_owned)
    }

    /// An element's time, converted; a malformed time is an error naming its field.
    fn time(&self, element: El) -> Result<Option<String>, MapFailure> {
        match self.text_at(element) {
            None => Ok(None),
            Some((t, p)) => time::to_fhir_in(&t, &self.tz).map(Some).map_err(|why| bad_time(p, &t, &why)),
        }
    }

    fn table(&self, table: Tbl, source: &str) -> Option<&TableEntry> {
        self.tables.get(table as usize).and_then(|t| t.get(source))
    }

    fn coded(&self, table: Tbl, source: &str) -> Option<Code> {
        self.table(table, source).map(|e| Code {
            system: e.system.clone(),
            code: e.code.clone(),
            display: e.display.clone(),
        })
    }

    fn local_system(&self, namespace: &str) -> String {
        let pieces = self.local_pieces;
        let mut out = String::with_capacity(
            pieces.iter().map(String::len).sum::<usize>() + namespace.len() * pieces.len().saturating_sub(1),
        );
        let mut pieces = pieces.iter();
        out.push_str(pieces.next().map_or("", String::as_str));
        let allowed = |c: char| c.is_ascii_alphanumeric() || "-._".contains(c);
        for piece in pieces {
            if namespace.chars().all(allowed) {
                out.push_str(namespace);
            } else {
                out.extend(namespace.chars().map(|c| if allowed(c) { c } else { '_' }));
            }
            out.push_str(piece);
        }
        out
    }

    /// The system of a CX/XCN/XON assigning authority (HD `name&id&type`): `urn:oid:id` when ISO, else local.
    fn hd_system(
        &self,
        name: Option<Cow<'_, str>>,
        universal: Option<Cow<'_, str>>,
        kind: Option<Cow<'_, str>>,
    ) -> String {
        match (universal, kind.as_deref()) {
            (Some(oid), Some("ISO")) => concat(&["urn:oid:", &oid]),
            (universal, _) => match name.or(universal) {
                Some(ns) => self.local_system(&ns),
                None => self.local_system(&self.facility),
            },
        }
    }

    fn cx_system(&self, rep: &Field<'a>) -> String {
        // CX-4 (HD) split once into namespace, universal id and its type.
        let mut parts = rep.component(4).split(|&b| b == self.d.subcomponent);
        let mut next = || parts.next().and_then(|raw| text_of(raw, &self.d, self.cs, self.utf8));
        let (name, universal, kind) = (next(), next(), next());
        self.hd_system(name, universal, kind)
    }
}

fn bad_time(p: &SourcePath, value: &str, why: &str) -> MapFailure {
    let shown: String = value.chars().take(24).collect();
    fail(format!("{}-{}", p.segment, p.field), format!("`{shown}` is not a valid time: {why}"))
}

/// Classifies the event: the first rule of `event-classes.toml` that matches.
pub(crate) fn classify(ctx: &Ctx<'_, '_, '_>) -> Option<EventClass> {
    ctx.rules.classes.iter().find_map(|rule| {
        let trigger_ok = rule.triggers.is_empty() || rule.triggers.contains(&ctx.trigger);
        if !trigger_ok {
            return None;
        }
        let cond_ok = match &rule.path {
            None => true,
            Some(p) => {
                let value = p.text_in(ctx.msg, ctx.cs, ctx.utf8);
                if rule.present {
                    value.is_some()
                } else {
                    value.is_some_and(|v| rule.equals.iter().any(|e| *e == v))
                }
            }
        };
        cond_ok.then_some(rule.class)
    })
}

/// The patient part of the message.
struct PatientPart {
    data: PatientData,
    /// IPP (system, value, assigner).
    ipp: Option<(String, String, String)>,
    ins_qualified: bool,
    gp: Option<PractitionerData>,
    gp_known: bool,
    /// Boxed: rare (A40), and the part is moved whole.
    merged: Option<Box<PatientData>>,
    merged_key: Option<(String, String)>,
}

fn patient_part(ctx: &Ctx<'_, '_, '_>, class: Option<EventClass>) -> Result<PatientPart, MapFailure> {
    let rules = ctx.rules;
    let mut ipp = None;
    let mut ins: Option<Ident> = None;
    if let Some(field) = ctx.field(El::PatientIdentifiers) {
        for rep in field.repetitions() {
            let Some(value) = ctx.comp(&rep, 1) else { continue };
            let type_code = ctx.comp_ref(&rep, 5).unwrap_or_default();
            if type_code == rules.ins_type_code.as_str() {
                let oid = ctx.sub_ref(&rep, 4, 2).unwrap_or_default();
                if let Some(o) = rules.ins_oids.iter().find(|o| o.oid == oid)
                    && ins.is_none()
                {
                    ins = Some(Ident {
                        use_: Some(o.use_.clone()),
                        type_: Some(Code {
                            system: FR_V2_0203.into(),
                            code: o.type_code.clone(),
                            display: None,
                        }),
                        system: concat(&["urn:oid:", &oid]),
                        value,
                        assigner: None,
                    });
                }
            } else if type_code == "PI" && ipp.is_none() {
                let system = ctx.cx_system(&rep);
                let assigner = ctx
                    .sub(&rep, 4, 2)
                    .or_else(|| ctx.sub(&rep, 4, 1))
                    .unwrap_or_else(|| ctx.facility.clone());
                ipp = Some((system, value, assigner));
            }
        }
    }
    let statuses: Vec<String> = ctx
        .field(El::PatientIdentityReliability)
        .map(|f| f.repetitions().filter_map(|r| ctx.comp(&r, 1)).collect())
        .unwrap_or_default();
    let first_status = statuses.first().cloned();
    let qualified_status =
        identity::pid32_qualified(&statuses, &rules.ins_qualified_when, &rules.ins_never_with);
    // The INS is kept only for a qualified identity; otherwise it is dropped here and never seen again.
    let ins = identity::ins_if_qualified(ins, qualified_status);
    let ins_qualified = ins.is_some();
    if ipp.is_none() && ins.is_none() {
        return Err(fail("PID-3", "no patient identifier: neither an IPP (CX-5 = PI) nor a qualified INS"));
    }
    let mut identifiers = Vec::new();
    if let Some((system, value, _)) = &ipp {
        identifiers.push(Ident {
            use_: Some("usual".into()),
            type_: Some(Code { system: V2_0203.into(), code: "PI".into(), display: None }),
            system: system.clone(),
            value: value.clone(),
            assigner: None,
        });
    }
    // The Patient is keyed by its IPP, else by its (qualified) INS.
    let patient_id = match (&ipp, &ins) {
        (Some((s, v, _)), _) => id("Patient", &[s, v]),
        (None, Some(i)) => id("Patient", &[&i.system, &i.value]),
        (None, None) => id("Patient", &["", ""]),
    };
    identifiers.extend(ins);

    let mut data = PatientData {
        id: patient_id.clone(),
        profiles: vec![if ins_qualified {
            rules.patient_ins_profile.clone()
        } else {
            rules.patient_profile.clone()
        }],
        identifiers,
        active: Some(true),
        ..PatientData::default()
    };

    // Identity reliability (FR Core extension).
    if let Some(status) = &first_status {
        let code = if status == "VALI" && !ins_qualified {
            Some(Code {
                system: "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-identity-status".into(),
                code: "VALI".into(),
                display: Some("Identité validée".into()),
            })
        } else {
            ctx.coded(Tbl::IdentityStatus, status)
        };
        if let Some(code) = code {
            data.extensions.push(Ext {
                url: RELIABILITY_URL.into(),
                value: ExtValue::Nested(vec![Ext {
                    url: "identityStatus".into(),
                    value: ExtValue::Coding(code),
                }]),
            });
        }
    }

    // Names.
    if let Some(field) = ctx.field(El::PatientNames) {
        for rep in field.repetitions() {
            let family = ctx.sub(&rep, 1, 1);
            let given = ctx.comp(&rep, 2);
            if family.is_none() && given.is_none() {
                continue;
            }
            let kind = ctx.comp_ref(&rep, 7).unwrap_or_default();
            data.names.push(Name {
                use_: ctx.table(Tbl::NameUse, &kind).map(|e| e.code.clone()),
                family,
                given: given.into_iter().collect(),
                prefix: ctx.comp(&rep, 5),
                birth_list_given: if kind == "L" { ctx.comp(&rep, 3) } else { None },
            });
        }
    }

    data.gender =
        ctx.text_ref(El::PatientGender).and_then(|g| ctx.table(Tbl::Gender, &g).map(|e| e.code.clone()));
    data.birth_date = ctx.time(El::PatientBirthDate)?.map(|t| time::date_part(&t).to_owned());

    // Addresses and birth place.
    if let Some(field) = ctx.field(El::PatientAddresses) {
        for rep in field.repetitions() {
            let kind = ctx.comp_ref(&rep, 7).unwrap_or_default();
            if kind == "BDL" {
                let insee = ctx.comp(&rep, 9);
                let city = ctx.comp(&rep, 3);
                if insee.is_none() && city.is_none() {
                    continue;
                }
                let place = Addr {
                    city,
                    insee_code: insee.map(|c| Code { system: INSEE_SYSTEM.into(), code: c, display: None }),
                    ..Addr::default()
                };
                data.extensions
                    .push(Ext { url: BIRTH_PLACE_URL.into(), value: ExtValue::Address(Box::new(place)) });
                continue;
            }
            if let Some(a) = address(ctx, &rep, &kind) {
                data.addresses.push(a);
            }
        }
    }

    for field in ctx.fields(El::PatientTelecom) {
        for rep in field.repetitions() {
            if let Some(t) = telecom(ctx, &rep) {
                data.telecom.push(t);
            }
        }
    }

    // Death: PID-29 date, else PID-30 flag, else the death class (A03 with ZFM-2 = 9).
    data.deceased =
        match (ctx.time(El::PatientDeathDate)?, ctx.text_ref(El::PatientDeathIndicator).as_deref()) {
            (Some(at), _) => Deceased::At(at),
            (None, Some("Y")) => Deceased::Flag(true),
            (None, _) if class == Some(EventClass::Death) => Deceased::Flag(true),
            (None, Some("N")) => Deceased::Flag(false),
            _ => Deceased::Unknown,
        };

    // Médecin traitant.
    let removed = ctx.text_ref(El::PatientGeneralPractitionerAction).is_some_and(|a| a == "DE");
    let gp = if removed { None } else { ctx.field(El::PatientGeneralPractitioner).and_then(|f| gp(ctx, &f)) };
    let gp_known = gp.as_ref().is_some_and(|g| g.identifiers.iter().any(|i| i.system == RPPS_SYSTEM));
    if let Some(g) = &gp {
        data.general_practitioner.push(Ref {
            reference: Some(urn(&g.id)),
            display: g.names.first().and_then(|n| n.family.clone()),
            ..Ref::default()
        });
    }

    // Merge (A40) and identifier change (A47): MRG-1, IPP only (an INS there is never carried).
    let mut merged = None;
    let mut merged_key = None;
    if ctx.trigger == "A40" || ctx.trigger == "A47" {
        let prior = ctx.field(El::MergePriorIdentifiers).and_then(|f| {
            f.repetitions().find_map(|rep| {
                (ctx.comp_ref(&rep, 5).as_deref() == Some("PI"))
                    .then(|| ctx.comp(&rep, 1).map(|v| (ctx.cx_system(&rep), v)))
                    .flatten()
            })
        });
        if let Some((system, value)) = prior {
            let ident = Ident {
                use_: Some(if ctx.trigger == "A47" { "old".into() } else { "usual".into() }),
                type_: Some(Code { system: V2_0203.into(), code: "PI".into(), display: None }),
                system: system.clone(),
                value: value.clone(),
                assigner: None,
            };
            if ctx.trigger == "A47" {
                data.identifiers.push(ident);
            } else {
                let merged_id = id("Patient", &[&system, &value]);
                data.links.push(Link {
                    type_: "replaces".into(),
                    other: Ref { reference: Some(urn(&merged_id)), ..Ref::default() },
                });
                merged = Some(Box::new(PatientData {
                    id: merged_id,
                    profiles: vec![rules.patient_profile.clone()],
                    identifiers: vec![ident],
                    active: Some(false),
                    links: vec![Link {
                        type_: "replaced-by".into(),
                        other: Ref { reference: Some(urn(&patient_id)), ..Ref::default() },
                    }],
                    ..PatientData::default()
                }));
                merged_key = Some((system, value));
            }
        }
    }

    Ok(PatientPart { data, ipp, ins_qualified, gp, gp_known, merged, merged_key })
}

fn address<'a>(ctx: &Ctx<'_, '_, 'a>, rep: &Field<'a>, kind: &str) -> Option<Addr> {
    let lines: Vec<String> = [ctx.sub(rep, 1, 1), ctx.comp(rep, 2)].into_iter().flatten().collect();
    let a = Addr {
        use_: ctx.table(Tbl::AddressUse, kind).map(|e| e.code.clone()),
        lines,
        city: ctx.comp(rep, 3),
        postal_code: ctx.comp(rep, 5),
        country: ctx.comp(rep, 6),
        insee_code: None,
    };
    let empty = a.lines.is_empty() && a.city.is_none() && a.postal_code.is_none() && a.country.is_none();
    (!empty).then_some(a)
}

fn telecom<'a>(ctx: &Ctx<'_, '_, 'a>, rep: &Field<'a>) -> Option<Telecom> {
    let use_code = ctx.comp_ref(rep, 2).unwrap_or_default();
    let equipment = ctx.comp_ref(rep, 3).unwrap_or_default();
    let email = ctx.comp(rep, 4);
    let number = ctx.comp(rep, 12).or_else(|| ctx.comp(rep, 1));
    let system = ctx.table(Tbl::TelecomEquipment, &equipment).map(|e| e.code.clone());
    let (system, value) = match (system, email, number) {
        (Some(s), Some(e), _) if s == "email" => (s, e),
        (None, Some(e), _) if use_code == "NET" => ("email".to_owned(), e),
        (Some(s), _, Some(n)) => (s, n),
        (None, _, Some(n)) => ("phone".to_owned(), n),
        _ => return None,
    };
    let use_ = if equipment == "CP" {
        Some("mobile".to_owned())
    } else {
        ctx.table(Tbl::TelecomUse, &use_code).map(|e| e.code.clone())
    };
    Some(Telecom { system, value, use_ })
}

/// The médecin traitant from an XCN: a Practitioner when it has an RPPS or IDNPS number.
fn gp<'a>(ctx: &Ctx<'_, '_, 'a>, field: &Field<'a>) -> Option<PractitionerData> {
    let rep = field.repetitions().next()?;
    let number = ctx.comp(&rep, 1)?;
    let kind = ctx.comp_ref(&rep, 13).unwrap_or_default();
    let ident = match &*kind {
        "RPPS" if number.len() == 11 && number.bytes().all(|b| b.is_ascii_digit()) => Ident {
            use_: Some("official".into()),
            type_: Some(Code { system: FR_V2_0203.into(), code: "RPPS".into(), display: None }),
            system: RPPS_SYSTEM.into(),
            value: number,
            ..Ident::default()
        },
        "IDNPS" => Ident {
            use_: Some("official".into()),
            type_: Some(Code { system: FR_V2_0203.into(), code: "IDNPS".into(), display: None }),
            system: IDNPS_SYSTEM.into(),
            value: number,
            ..Ident::default()
        },
        _ => return None,
    };
    let practitioner_id = id("Practitioner", &[&ident.system, &ident.value]);
    let name = Name {
        use_: Some("official".into()),
        family: ctx.sub(&rep, 2, 1),
        given: ctx.comp(&rep, 3).into_iter().collect(),
        prefix: ctx.comp(&rep, 6),
        birth_list_given: None,
    };
    let mut data = PractitionerData {
        id: practitioner_id,
        profiles: vec![ctx.rules.practitioner_profile.clone()],
        identifiers: vec![ident],
        names: if name.family.is_some() || !name.given.is_empty() { vec![name] } else { Vec::new() },
        ..PractitionerData::default()
    };
    if let Some(f) = ctx.field(El::PatientGeneralPractitionerAddress) {
        for rep in f.repetitions() {
            let kind = ctx.comp_ref(&rep, 7).unwrap_or_default();
            if let Some(a) = address(ctx, &rep, &kind) {
                data.addresses.push(a);
            }
        }
    }
    if let Some(f) = ctx.field(El::PatientGeneralPractitionerTelecom) {
        for rep in f.repetitions() {
            if let Some(t) = telecom(ctx, &rep) {
                data.telecom.push(t);
            }
        }
    }
    Some(data)
}

/// The Encounter and the business identifier (system, value) that keys it.
type EncounterPart = (EncounterData, Option<(String, String)>);

/// The encounter part: `None` for identity-only messages (no PV1, or PV1-2 = N / empty).
fn encounter_part(
    ctx: &Ctx<'_, '_, '_>,
    patient_id: &str,
    control_id: &str,
) -> Result<Option<EncounterPart>, MapFailure> {
    let Some((pclass, pclass_path)) = ctx.text_at(El::EncounterPatientClass) else { return Ok(None) };
    if pclass == "N" {
        return Ok(None);
    }
    let class = ctx.coded(Tbl::PatientClass, &pclass).ok_or_else(|| {
        fail(
            format!("{}-{}", pclass_path.segment, pclass_path.field),
            format!("patient class `{pclass}` is not in mappings/tables/patient-class.toml"),
        )
    })?;
    let mut identifiers = Vec::new();
    let mut key = None;
    for (element, code) in [(El::EncounterNda, "AN"), (El::EncounterVisitNumber, "VN")] {
        let rep = ctx.field(element).and_then(|f| f.repetitions().next());
        if let Some(rep) = rep
            && let Some(value) = ctx.comp(&rep, 1)
        {
            let system = ctx.cx_system(&rep);
            // The visit number keys the encounter; the NDA when there is none.
            if code == "VN" || key.is_none() {
                key = Some((system.clone(), value.clone()));
            }
            identifiers.push(Ident {
                type_: Some(Code { system: V2_0203.into(), code: code.into(), display: None }),
                system,
                value,
                ..Ident::default()
            });
        }
    }
    let encounter_id = match &key {
        Some((s, v)) => id("Encounter", &[s, v]),
        None => id("Encounter", &[&ctx.facility, "MSH-10", control_id]),
    };
    let end = ctx.time(El::EncounterEnd)?;
    let status = match ctx.table(Tbl::EncounterStatus, &ctx.trigger).map(|e| e.code.as_str()) {
        Some("derive") | None => if end.is_some() { "finished" } else { "in-progress" }.to_owned(),
        Some(code) => code.to_owned(),
    };
    let mut data = EncounterData {
        id: encounter_id,
        profiles: vec![ctx.rules.encounter_profile.clone()],
        identifiers,
        status: status.clone(),
        class,
        subject: Some(Ref { reference: Some(urn(patient_id)), ..Ref::default() }),
        start: ctx.time(El::EncounterStart)?,
        end,
        ..EncounterData::default()
    };
    if let Some(code) = ctx.text_ref(El::EncounterAdmitSource) {
        data.admit_source = ctx.coded(Tbl::AdmitSource, &code);
        data.admit_source_text = Some(concat(&["PMSI mode d'entrée ", &code]));
    } else if let Some(code) = ctx.text_ref(El::EncounterAdmitSourceV2) {
        data.admit_source = ctx.coded(Tbl::AdmitSourceV2, &code);
        data.admit_source_text = Some(concat(&["PV1-14 ", &code]));
    }
    if let Some(code) = ctx.text_ref(El::EncounterDischargeMode) {
        data.discharge_disposition = ctx.coded(Tbl::DischargeDisposition, &code);
        data.discharge_disposition_text = Some(concat(&["PMSI mode de sortie ", &code]));
    } else if let Some(code) = ctx.text_ref(El::EncounterDischargeV2) {
        data.discharge_disposition = ctx.coded(Tbl::DischargeDispositionV2, &code);
        data.discharge_disposition_text = Some(concat(&["PV1-36 ", &code]));
    }
    if data.admit_source.is_none() {
        data.admit_source_text = None;
    }
    if data.discharge_disposition.is_none() {
        data.discharge_disposition_text = None;
    }
    // The current location (PV1-3: point of care / room / bed), from the movement start.
    if let Some(field) = ctx.field(El::EncounterLocation) {
        let parts: Vec<String> = [1, 2, 3].iter().filter_map(|&c| ctx.comp(&field, c)).collect();
        if !parts.is_empty() {
            let ns = ctx.sub(&field, 4, 1).unwrap_or_else(|| ctx.facility.clone());
            let location_status = match status.as_str() {
                "finished" => Some("completed".to_owned()),
                "entered-in-error" | "cancelled" => None,
                "planned" => Some("planned".to_owned()),
                _ => Some("active".to_owned()),
            };
            data.locations.push(LocationEntry {
                location: Ref {
                    type_: Some("Location".into()),
                    identifier: Some(Ident {
                        system: ctx.local_system(&ns),
                        value: parts.join("/"),
                        ..Ident::default()
                    }),
                    display: Some(parts.join(" ")),
                    ..Ref::default()
                },
                status: location_status,
                start: ctx.time(El::MovementStart)?,
                end: None,
            });
        }
    }
    // The medical responsibility UF (ZBE-7, XON): the service provider.
    if let Some(field) = ctx.field(El::EncounterUnit) {
        let code = ctx.comp(&field, 10);
        let label = ctx.comp(&field, 1);
        if code.is_some() || label.is_some() {
            let ns = ctx.sub(&field, 6, 1).unwrap_or_else(|| ctx.facility.clone());
            data.service_provider = Some(Ref {
                type_: Some("Organization".into()),
                identifier: code.map(|c| Ident {
                    system: ctx.local_system(&ns),
                    value: c,
                    ..Ident::default()
                }),
                display: label,
                ..Ref::default()
            });
        }
    }
    Ok(Some((data, key)))
}

/// The French segments kept as extensions on `resource`, added to its extensions `out`.
fn segment_extensions(ctx: &Ctx<'_, '_, '_>, resource: &str, out: &mut Vec<Ext>) -> Result<(), MapFailure> {
    for se in ctx.rules.segment_extensions.iter().filter(|s| s.resource == resource) {
        if let Some(ext) = segment_extension(ctx, se)? {
            out.push(ext);
        }
    }
    Ok(())
}

fn segment_extension(ctx: &Ctx<'_, '_, '_>, se: &SegmentExtension) -> Result<Option<Ext>, MapFailure> {
    let Some(segment) = ctx.msg.segment(&se.segment) else { return Ok(None) };
    let mut children = Vec::with_capacity(se.fields.len());
    for ((field, comp), name, kind) in &se.fields {
        let f = segment.field(*field);
        let text = match comp {
            None => f.repetitions().next().and_then(|r| ctx.comp(&r, 1)),
            Some(c) => ctx.comp(&f, *c),
        };
        let Some(text) = text else { continue };
        let value = match kind {
            ValueType::String => ExtValue::String(text),
            ValueType::Code => {
                if text.contains(char::is_whitespace) {
                    ExtValue::String(text)
                } else {
                    ExtValue::Code(text)
                }
            }
            ValueType::Boolean => match text.as_str() {
                "Y" => ExtValue::Boolean(true),
                "N" => ExtValue::Boolean(false),
                _ => continue,
            },
            // A Z-segment date that is not an HL7 time is kept as text, not lost and not guessed.
            ValueType::DateTime => match time::to_fhir_in(&text, &ctx.tz) {
                Ok(at) => ExtValue::DateTime(at),
                Err(_) => ExtValue::String(text),
            },
        };
        children.push(Ext { url: name.clone(), value });
    }
    Ok((!children.is_empty()).then(|| Ext { url: se.url.clone(), value: ExtValue::Nested(children) }))
}

/// Maps one message: builds the Bundle of `kind` and the facts.
pub(crate) fn map(ctx: &Ctx<'_, '_, '_>, kind: BundleKind, pretty: bool) -> Result<Mapped, MapFailure> {
    if ctx.msg.segment("PID").is_none() {
        return Err(fail("PID", "segment missing: an ADT message needs a PID"));
    }
    let control_id = ctx.msg.header().text(10, ctx.cs);
    let class = classify(ctx);
    let mut part = patient_part(ctx, class)?;
    segment_extensions(ctx, "Patient", &mut part.data.extensions)?;
    let patient_id = part.data.id.clone();
    let mut encounter = encounter_part(ctx, &patient_id, &control_id)?;
    if let Some((e, _)) = &mut encounter {
        segment_extensions(ctx, "Encounter", &mut e.extensions)?;
    }

    let undoes = if class == Some(EventClass::Cancel) || ctx.trigger == "Z99" {
        ctx.text(El::MovementOriginalTrigger)
            .or_else(|| ctx.table(Tbl::Undoes, &ctx.trigger).map(|e| e.code.clone()))
    } else {
        None
    };
    let dmp_opposition = ctx.rules.dmp_opposition.as_ref().is_some_and(|(p, values)| {
        p.text_in(ctx.msg, ctx.cs, ctx.utf8).is_some_and(|v| values.iter().any(|e| *e == v))
    });
    let unit = ctx
        .field(El::EncounterUnit)
        .and_then(|f| ctx.comp(&f, 10).or_else(|| ctx.comp(&f, 1)))
        .or_else(|| ctx.field(El::EncounterLocation).and_then(|f| ctx.comp(&f, 1)));
    let patient_key = match &part.ipp {
        Some((_, value, assigner)) => concat(&[assigner, "|", value]),
        None => part.data.identifiers.first().map(|i| i.value.clone()).unwrap_or_default(),
    };
    let facts = Facts {
        kind: MessageKind::Hl7v2,
        event_class: class,
        message_type: ctx.message_type.clone(),
        sending_application: ctx.app.clone(),
        sending_facility: ctx.facility.clone(),
        patient_class: ctx.text(El::EncounterPatientClass),
        unit,
        document_type: None,
        confidentiality: None,
        flags: ctx
            .rules
            .flags
            .iter()
            .filter(|(p, values, _)| {
                p.text_in(ctx.msg, ctx.cs, ctx.utf8).is_some_and(|v| values.iter().any(|e| *e == v))
            })
            .map(|(_, _, flag)| flag.clone())
            .collect(),
        ins_qualified: part.ins_qualified,
        dmp_opposition,
        gp_known: part.gp_known,
        patient_key,
        undoes,
    };

    // Resources (the builders take the data by value: no copies).
    // Conditional PUT URLs only for a transaction (a message Bundle carries no request).
    let puts = kind == BundleKind::Transaction;
    let patient_put =
        part.data.identifiers.first().filter(|_| puts).map(|i| put_url("Patient", &i.system, &i.value));
    let mut entries = Vec::with_capacity(5);
    let focus = match &encounter {
        Some((e, _)) => Ref { reference: Some(urn(&e.id)), ..Ref::default() },
        None => Ref { reference: Some(urn(&patient_id)), ..Ref::default() },
    };
    if kind == BundleKind::Message {
        let header = message_header(ctx, &control_id, focus)?;
        entries.push(Entry { full_url: urn(header.id()), resource: header, put_url: None });
    }
    let patient = relais_fhir::patient(part.data).map_err(fhir_fail)?;
    entries.push(Entry { full_url: urn(&patient_id), resource: patient, put_url: patient_put });
    if let (Some(m), Some((s, v))) = (part.merged, &part.merged_key) {
        let full_url = urn(&m.id);
        let built = relais_fhir::patient(*m).map_err(fhir_fail)?;
        entries.push(Entry { full_url, resource: built, put_url: puts.then(|| put_url("Patient", s, v)) });
    }
    if let Some((e, key)) = encounter {
        let full_url = urn(&e.id);
        let built = relais_fhir::encounter(e).map_err(fhir_fail)?;
        let put = key.as_ref().filter(|_| puts).map(|(s, v)| put_url("Encounter", s, v));
        entries.push(Entry { full_url, resource: built, put_url: put });
    }
    if let Some(g) = part.gp {
        let full_url = urn(&g.id);
        let put =
            g.identifiers.first().filter(|_| puts).map(|i| put_url("Practitioner", &i.system, &i.value));
        let built = relais_fhir::practitioner(g).map_err(fhir_fail)?;
        entries.push(Entry { full_url, resource: built, put_url: put });
    }
    if puts {
        // Conditional PUTs only: an entry without a business identifier cannot be replayed safely.
        entries.retain(|e| e.put_url.is_some());
    }
    let timestamp = {
        let raw = ctx.msg.header().text(7, ctx.cs);
        match time::to_fhir_in(&raw, &ctx.tz) {
            Ok(t) if time::is_instant(&t) => Some(t),
            Ok(_) => None,
            Err(why) => return Err(fail("MSH-7", format!("`{raw}` is not a valid time: {why}"))),
        }
    };
    let kind_name = if kind == BundleKind::Message { "message" } else { "transaction" };
    let data = BundleData {
        id: id("Bundle", &[&ctx.facility, &ctx.app, &control_id, kind_name]),
        kind,
        identifier: Some((ctx.local_system(&ctx.facility), control_id.clone())),
        timestamp,
        entries,
    };
    let bundle = relais_fhir::bundle(data, pretty).map_err(fhir_fail)?;
    Ok(Mapped { bundle, facts })
}

fn put_url(resource: &str, system: &str, value: &str) -> String {
    concat(&[resource, "?identifier=", &query_escape(system), "|", &query_escape(value)])
}

fn endpoint(app: &str, facility: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || "-._".contains(c) { c } else { '_' }).collect()
    };
    concat(&["urn:relais:hl7v2:", &clean(app), ":", &clean(facility)])
}

fn message_header(
    ctx: &Ctx<'_, '_, '_>,
    control_id: &str,
    focus: Ref,
) -> Result<relais_fhir::Built, MapFailure> {
    let header = ctx.msg.header();
    // MSH-5/6 (receiving application and facility), decoded and trimmed; empty when absent.
    let receiver = |n: usize| crate::hl7v2::decode_trimmed(header.component(n, 1), &ctx.d, ctx.cs);
    let (receiver_app, receiver_facility) = (receiver(5), receiver(6));
    let mut destinations = Vec::new();
    if !receiver_app.is_empty() || !receiver_facility.is_empty() {
        destinations.push(Endpoint {
            name: (!receiver_app.is_empty()).then(|| receiver_app.clone()),
            endpoint: endpoint(&receiver_app, &receiver_facility),
        });
    }
    let data = HeaderData {
        id: id("MessageHeader", &[&ctx.facility, &ctx.app, control_id]),
        event: Code { system: V2_0003.into(), code: ctx.trigger.clone(), display: None },
        source: Endpoint {
            name: (!ctx.app.is_empty()).then(|| ctx.app.clone()),
            endpoint: endpoint(&ctx.app, &ctx.facility),
        },
        destinations,
        sender: (!ctx.facility.is_empty()).then(|| Ref {
            type_: Some("Organization".into()),
            display: Some(ctx.facility.clone()),
            ..Ref::default()
        }),
        focus: vec![focus],
    };
    relais_fhir::message_header(data).map_err(fhir_fail)
}

#[cfg(test)]
mod tests {
    use super::{El, Tbl};
    use crate::mapping::file::{ELEMENTS, TABLES};

    #[test]
    fn table_indexes_follow_the_table_list() {
        let tables = [
            (Tbl::PatientClass, "patient-class"),
            (Tbl::EncounterStatus, "encounter-status"),
            (Tbl::AdmitSource, "admit-source"),
            (Tbl::AdmitSourceV2, "admit-source-v2"),
            (Tbl::DischargeDisposition, "discharge-disposition"),
            (Tbl::DischargeDispositionV2, "discharge-disposition-v2"),
            (Tbl::IdentityStatus, "identity-status"),
            (Tbl::Gender, "gender"),
            (Tbl::NameUse, "name-use"),
            (Tbl::AddressUse, "address-use"),
            (Tbl::TelecomUse, "telecom-use"),
            (Tbl::TelecomEquipment, "telecom-equipment"),
            (Tbl::Undoes, "undoes"),
        ];
        for (table, name) in tables {
            assert_eq!(TABLES.get(table as usize), Some(&name), "{table:?}");
        }
        assert_eq!(tables.len(), TABLES.len(), "every table the engine requires has its variant");
    }

    #[test]
    fn element_indexes_follow_the_element_list() {
        let names: Vec<String> = [
            (El::PatientIdentifiers, "patient.identifiers"),
            (El::PatientNames, "patient.names"),
            (El::PatientBirthDate, "patient.birth_date"),
            (El::PatientGender, "patient.gender"),
            (El::PatientAddresses, "patient.addresses"),
            (El::PatientTelecom, "patient.telecom"),
            (El::PatientDeathDate, "patient.death_date"),
            (El::PatientDeathIndicator, "patient.death_indicator"),
            (El::PatientIdentityReliability, "patient.identity_reliability"),
            (El::PatientGeneralPractitioner, "patient.general_practitioner"),
            (El::PatientGeneralPractitionerAction, "patient.general_practitioner_action"),
            (El::PatientGeneralPractitionerAddress, "patient.general_practitioner_address"),
            (El::PatientGeneralPractitionerTelecom, "patient.general_practitioner_telecom"),
            (El::MergePriorIdentifiers, "merge.prior_identifiers"),
            (El::EncounterNda, "encounter.nda"),
            (El::EncounterVisitNumber, "encounter.visit_number"),
            (El::EncounterPatientClass, "encounter.patient_class"),
            (El::EncounterStart, "encounter.start"),
            (El::EncounterEnd, "encounter.end"),
            (El::EncounterAdmitSource, "encounter.admit_source"),
            (El::EncounterAdmitSourceV2, "encounter.admit_source_v2"),
            (El::EncounterDischargeMode, "encounter.discharge_mode"),
            (El::EncounterDischargeV2, "encounter.discharge_v2"),
            (El::EncounterLocation, "encounter.location"),
            (El::EncounterUnit, "encounter.unit"),
            (El::MovementStart, "movement.start"),
            (El::MovementOriginalTrigger, "movement.original_trigger"),
        ]
        .iter()
        .map(|(el, name)| {
            assert_eq!(ELEMENTS.get(*el as usize), Some(name), "{el:?}");
            (*name).to_owned()
        })
        .collect();
        // Every element the engine reads has its variant (movement.id and .action are read by no rule).
        assert_eq!(names.len() + 2, ELEMENTS.len());
    }
}
