//! The map stage for HL7v2: PAM FR ADT messages → FHIR R4 Bundles (FR Core shapes) and routing [`Facts`].
//!
//! Receives the journaled bytes of one message (from the pipeline, or `relais convert`); hands on a
//! [`Mapped`] (Bundle JSON + facts) or a [`MapFailure`] naming a segment and field. Where each value is read and
//! how codes translate is data: `mappings/adt.toml`, `mappings/event-classes.toml` and `mappings/tables/*.toml`,
//! read once by [`Mapper::load`] (the same checks as `relais check`). The FHIR shape is code, built with
//! relais-fhir's typed builders. It never does I/O after loading, never logs field values, and never lets an
//! INS through unless the identity is qualified (PID-32 = VALI; the rule is [`crate::identity`]).
//!
//! Files: [`file`] (mapping files, checks with file:line), [`path`] (source paths), [`time`] (HL7 times →
//! FHIR with real offsets), [`ids`] (UUID v5 ids), `engine` (the mapping itself), [`check`] (`relais check`).

pub mod check;
mod engine;
pub mod file;
pub mod ids;
pub mod path;
pub mod time;

use std::collections::BTreeMap;
use std::path::Path;

use jiff::tz::TimeZone;
pub use relais_fhir::BundleKind;

pub use self::file::{CheckError, CheckErrors, Rules};
use crate::config::Settings;
use crate::facts::{MapFailure, Mapped, MessageKind, Transform};
use crate::hl7v2::{Charset, Message};

/// The sender time zone used when a sender has none configured.
pub const DEFAULT_TIMEZONE: &str = "Europe/Paris";

/// The HL7v2 ADT mapper: loaded rules plus per-sender time zones and charsets.
#[derive(Debug, Clone)]
pub struct Mapper {
    rules: Rules,
    /// The rules' source paths by element index (resolved once here, read per message by index).
    sources: Vec<Vec<path::SourcePath>>,
    /// The rules' code tables by index (likewise).
    tables: Vec<file::Table>,
    /// `local_identifier_system` cut at its `{namespace}` markers.
    local_pieces: Vec<String>,
    default_tz: TimeZone,
    sender_tz: BTreeMap<String, TimeZone>,
    default_charset: Charset,
    sender_charsets: BTreeMap<String, Charset>,
}

impl Mapper {
    /// Reads and checks the mapping files of `dir`; every problem is reported with file:line.
    pub fn load(dir: &Path) -> Result<Mapper, CheckErrors> {
        let rules = file::load(dir)?;
        let default_tz = TimeZone::get(DEFAULT_TIMEZONE).map_err(|e| {
            CheckErrors(vec![CheckError {
                file: dir.to_owned(),
                line: 0,
                message: format!("time zone: {e}"),
            }])
        })?;
        Ok(Mapper {
            sources: engine::sources(&rules),
            tables: engine::tables(&rules),
            local_pieces: rules.local_identifier_system.split("{namespace}").map(str::to_owned).collect(),
            rules,
            default_tz,
            sender_tz: BTreeMap::new(),
            default_charset: Charset::Latin1,
            sender_charsets: BTreeMap::new(),
        })
    }

    /// Applies the per-sender settings (`senders.<MSH-4.1>.timezone`, `.charset`, `mllp.default_charset`).
    /// Settings are checked beforehand ([`Settings::check`]); unknown zones are skipped here.
    pub fn with_settings(mut self, settings: &Settings) -> Mapper {
        if let Ok(cs) = settings.default_charset() {
            self.default_charset = cs;
        }
        for (name, sender) in &settings.senders {
            if let Some(tz) = sender.timezone.as_deref().and_then(|z| TimeZone::get(z).ok()) {
                self.sender_tz.insert(name.clone(), tz);
            }
            self.sender_charsets.insert(name.clone(), settings.charset_for(name));
        }
        self
    }

    /// Sets the time zone of one sender (MSH-4.1), e.g. `America/Cayenne`.
    pub fn set_sender_timezone(&mut self, facility: &str, zone: &str) -> Result<(), String> {
        let tz = TimeZone::get(zone).map_err(|e| format!("time zone `{zone}`: {e}"))?;
        self.sender_tz.insert(facility.to_owned(), tz);
        Ok(())
    }

    /// The rules in use.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// True for the message types this mapper maps (`ADT^…`); ORU^R01 and CDA go to the documents module.
    pub fn handles(&self, message_type: &str) -> bool {
        message_type.split('^').next() == Some("ADT")
    }

    /// Maps one HL7v2 message into a Bundle of `kind` (pretty-printed when `pretty`).
    pub fn convert(&self, raw: &[u8], kind: BundleKind, pretty: bool) -> Result<Mapped, MapFailure> {
        let msg = Message::parse(raw)
            .map_err(|e| MapFailure { location: e.location.to_string(), reason: e.reason.clone() })?;
        let header = msg.header().clone();
        let d = header.delimiters();
        let cs = match header.charset() {
            Ok(Some(cs)) => cs,
            Ok(None) => {
                // No MSH-18: the sender's configured charset (MSH-4.1 read before the charset is known).
                let facility_raw = header.component(4, 1);
                let facility = crate::hl7v2::decode_text(facility_raw, &d, Charset::Latin1);
                self.sender_charsets.get(facility.trim()).copied().unwrap_or(self.default_charset)
            }
            Err(e) => return Err(MapFailure { location: e.location.to_string(), reason: e.reason }),
        };
        // A UTF-8 message is checked once: its values are then sliced from this text, not checked again.
        let utf8 = cs
            .checked_text(raw)
            .map_err(|e| MapFailure { location: e.location.to_string(), reason: e.reason })?;
        let msg = msg.with_charset(cs);
        let text = |n: usize, c: usize| crate::hl7v2::decode_trimmed(header.component(n, c), &d, cs);
        let facility = text(4, 1);
        let app = text(3, 1);
        let msg_code = text(9, 1);
        let trigger = text(9, 2);
        let message_type = [msg_code.as_str(), "^", &trigger].concat();
        if msg_code != "ADT" {
            return Err(MapFailure {
                location: "MSH-9".into(),
                reason: format!(
                    "{message_type} is not an ADT message: documents (ORU^R01, CDA) are mapped by the documents module"
                ),
            });
        }
        if !self.rules.events.contains(&trigger) {
            return Err(MapFailure {
                location: "MSH-9".into(),
                reason: format!("event {message_type} is not mapped (mappings/adt.toml [settings] events)"),
            });
        }
        let tz = self.sender_tz.get(&facility).unwrap_or(&self.default_tz);
        let ctx = engine::Ctx {
            rules: &self.rules,
            sources: &self.sources,
            tables: &self.tables,
            msg: &msg,
            cs,
            utf8,
            d,
            tz: time::Zone::new(tz),
            local_pieces: &self.local_pieces,
            facility,
            app,
            trigger,
            message_type,
        };
        engine::map(&ctx, kind, pretty)
    }
}

impl Transform for Mapper {
    fn map(&self, kind: MessageKind, raw: &[u8]) -> Result<Mapped, MapFailure> {
        match kind {
            MessageKind::Hl7v2 => self.convert(raw, BundleKind::Message, false),
            MessageKind::Cda => Err(MapFailure {
                location: "ClinicalDocument".into(),
                reason: "CDA documents are mapped by the documents module".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
