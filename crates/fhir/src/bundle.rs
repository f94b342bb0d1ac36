//! The Bundle: a FHIR message (MessageHeader first) or a transaction of conditional PUTs, serialized as JSON.

use fhir_sdk::r4b::codes;
use fhir_sdk::r4b::resources::{Bundle, BundleEntry, BundleEntryRequest};
use fhir_sdk::r4b::types::Identifier;

use crate::datatypes::{built, instant};
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
    // Each entry pushed as built (no collect through a shunt: the entries are large to move).
    let mut entries = Vec::with_capacity(data.entries.len());
    for e in data.entries {
        let request = match e.put_url {
            Some(url) => {
                let request = BundleEntryRequest::builder().method(codes::HTTPVerb::Put).url(url).build();
                Some(built("Bundle.entry.request", request)?)
            }
            None => None,
        };
        // The model's struct itself (no required element: nothing for a builder to check).
        entries.push(Some(BundleEntry {
            id: None,
            extension: Vec::new(),
            modifier_extension: Vec::new(),
            link: Vec::new(),
            link_ext: Vec::new(),
            full_url: Some(e.full_url),
            full_url_ext: None,
            resource: Some(e.resource.resource),
            resource_ext: None,
            search: None,
            search_ext: None,
            request,
            request_ext: None,
            response: None,
            response_ext: None,
        }));
    }
    let mut bundle = built("Bundle", Bundle::builder().r#type(kind).build())?;
    bundle.id = Some(data.id);
    if let Some((system, value)) = data.identifier {
        let mut identifier = built("Identifier", Identifier::builder().build())?;
        identifier.system = Some(system);
        identifier.value = Some(value);
        bundle.identifier = Some(identifier);
    }
    if let Some(ts) = data.timestamp {
        bundle.timestamp = Some(instant("Bundle.timestamp", &ts)?);
    }
    bundle.entry = entries;
    // sonic-rs writes the same JSON as serde_json (same escapes, same layout), with SIMD string escaping.
    let mut out = Vec::with_capacity(8 * 1024);
    let written = if pretty {
        sonic_rs::to_writer_pretty(&mut out, &bundle)
    } else {
        sonic_rs::to_writer(&mut out, &bundle)
    };
    written.map_err(|e| Error::Json(e.to_string()))?;
    Ok(out)
}
