//! The Bundle: a FHIR message (MessageHeader first) or a transaction of conditional PUTs, serialized as JSON.

use std::str::FromStr;

use fhir_sdk::Instant;
use fhir_sdk::r4b::codes;
use fhir_sdk::r4b::resources::{Bundle, BundleEntry, BundleEntryRequest};
use fhir_sdk::r4b::types::Identifier;

use crate::datatypes::built;
use crate::{Built, Error};

/// Which kind of Bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleKind {
    /// `message`: the first entry is the MessageHeader.
    Message,
    /// `transaction`: each entry carries a request (conditional `PUT` keyed by a business identifier).
    Transaction,
}

/// One Bundle entry.
#[derive(Debug, Clone)]
pub struct Entry {
    /// `urn:uuid:<id>`.
    pub full_url: String,
    /// The resource.
    pub resource: Built,
    /// For a transaction: the request URL of a conditional `PUT` (`Patient?identifier=system|value`).
    pub put_url: Option<String>,
}

/// The Bundle itself.
#[derive(Debug, Clone)]
pub struct BundleData {
    /// Logical id (a UUID).
    pub id: String,
    /// Message or transaction.
    pub kind: BundleKind,
    /// Bundle.identifier (system, value): the sender's message control id.
    pub identifier: Option<(String, String)>,
    /// Bundle.timestamp: a full FHIR instant (`2026-07-14T10:25:00+02:00`).
    pub timestamp: Option<String>,
    /// Entries, in order.
    pub entries: Vec<Entry>,
}

/// Builds the Bundle and serializes it as JSON (`pretty` for indented output).
pub fn bundle(data: BundleData, pretty: bool) -> Result<Vec<u8>, Error> {
    let kind = match data.kind {
        BundleKind::Message => codes::BundleType::Message,
        BundleKind::Transaction => codes::BundleType::Transaction,
    };
    let entries = data
        .entries
        .into_iter()
        .map(|e| {
            let mut entry = built("Bundle.entry", BundleEntry::builder().build())?;
            entry.full_url = Some(e.full_url);
            entry.resource = Some(e.resource.resource);
            if let Some(url) = e.put_url {
                let request = BundleEntryRequest::builder().method(codes::HTTPVerb::Put).url(url).build();
                entry.request = Some(built("Bundle.entry.request", request)?);
            }
            Ok(Some(entry))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let mut bundle = built("Bundle", Bundle::builder().id(data.id).r#type(kind).build())?;
    if let Some((system, value)) = data.identifier {
        let mut identifier = built("Identifier", Identifier::builder().build())?;
        identifier.system = Some(system);
        identifier.value = Some(value);
        bundle.identifier = Some(identifier);
    }
    if let Some(ts) = data.timestamp {
        let instant = Instant::from_str(&ts).map_err(|e| Error::Value {
            element: "Bundle.timestamp",
            value: ts.clone(),
            reason: e.to_string(),
        })?;
        bundle.timestamp = Some(instant);
    }
    bundle.entry = entries;
    let mut out = Vec::with_capacity(8 * 1024);
    let written = if pretty {
        serde_json::to_writer_pretty(&mut out, &bundle)
    } else {
        serde_json::to_writer(&mut out, &bundle)
    };
    written.map_err(|e| Error::Json(e.to_string()))?;
    Ok(out)
}
