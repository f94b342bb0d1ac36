//! A local ITI-41 endpoint for the DMP sink bench: HTTPS with a client certificate required, parses each
//! MTOM request (multipart/related parts, the SOAP envelope read to its end by quick-xml, every
//! `xop:Include` found among the parts), records the document entry's uniqueId and answers a
//! RegistryResponse Success. It does not run xmllint per request (the sink tests validate the same requests
//! against the XDS.b schemas).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// The identification scheme of XDSDocumentEntry.uniqueId.
const DE_UNIQUE_ID: &str = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab";

/// What the endpoint accepted.
#[derive(Default)]
pub struct Seen {
    /// Requests answered Success.
    pub accepted: usize,
    /// Requests refused (unparsable MTOM or SOAP).
    pub refused: usize,
    /// The distinct document uniqueIds accepted.
    pub unique_ids: HashSet<String>,
    /// A request seen twice for the same uniqueId.
    pub duplicates: usize,
}

/// The endpoint's shared record.
pub type Endpoint = Arc<Mutex<Seen>>;

/// Splits a multipart/related body into (Content-ID, bytes) parts; `None` when it is not one.
pub fn mime_parts<'b>(content_type: &str, body: &'b [u8]) -> Option<Vec<(String, &'b [u8])>> {
    let boundary = content_type.split("boundary=\"").nth(1)?.split('"').next()?;
    let delimiter = format!("--{boundary}");
    let positions: Vec<usize> = memchr::memmem::find_iter(body, delimiter.as_bytes()).collect();
    let mut parts = Vec::new();
    for pair in positions.windows(2) {
        let part = &body[pair[0] + delimiter.len()..pair[1]];
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        let split = memchr::memmem::find(part, b"\r\n\r\n")?;
        let headers = std::str::from_utf8(&part[..split]).ok()?;
        let content = &part[split + 4..];
        let content = content.strip_suffix(b"\r\n").unwrap_or(content);
        let cid = headers
            .lines()
            .find_map(|l| l.strip_prefix("Content-ID: <"))
            .map(|s| s.trim_end_matches('>').to_string())
            .unwrap_or_default();
        parts.push((cid, content));
    }
    (!parts.is_empty()).then_some(parts)
}

/// Reads the SOAP envelope to its end; returns the document entry's uniqueId and the `xop:Include` hrefs.
fn read_envelope(xml: &[u8]) -> Result<(String, Vec<String>), String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut unique_id = None;
    let mut includes = Vec::new();
    let mut buf = Vec::new();
    let mut request = false;
    loop {
        match reader.read_event_into(&mut buf).map_err(|e| e.to_string())? {
            Event::Eof => break,
            Event::Start(e) | Event::Empty(e) => {
                let name = e.name();
                let local = name.local_name();
                let attr = |key: &[u8]| {
                    e.attributes()
                        .flatten()
                        .find(|a| a.key.as_ref() == key)
                        .map(|a| String::from_utf8_lossy(&a.value).into_owned())
                };
                match local.as_ref() {
                    b"ProvideAndRegisterDocumentSetRequest" => request = true,
                    b"Include" => includes.extend(attr(b"href")),
                    b"ExternalIdentifier"
                        if attr(b"identificationScheme").as_deref() == Some(DE_UNIQUE_ID) =>
                    {
                        unique_id = attr(b"value");
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        buf.clear();
    }
    if !request {
        return Err("no ProvideAndRegisterDocumentSetRequest".into());
    }
    Ok((unique_id.ok_or("no XDSDocumentEntry.uniqueId")?, includes))
}

fn parse(headers: &HeaderMap, body: &[u8]) -> Result<String, String> {
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !content_type.starts_with("multipart/related") {
        return Err(format!("content type {content_type}"));
    }
    let parts = mime_parts(content_type, body).ok_or("not a multipart body")?;
    let (unique_id, includes) = read_envelope(parts[0].1)?;
    if includes.is_empty() {
        return Err("no xop:Include".into());
    }
    for href in includes {
        let cid = href.strip_prefix("cid:").unwrap_or(&href);
        let part = parts.iter().find(|(c, _)| c == cid).ok_or_else(|| format!("no part {cid}"))?;
        if part.1.is_empty() {
            return Err(format!("part {cid} is empty"));
        }
    }
    Ok(unique_id)
}

async fn iti41(State(ep): State<Endpoint>, headers: HeaderMap, body: Bytes) -> Response {
    let response = |status: &str| {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope"><soap:Body><rs:RegistryResponse xmlns:rs="urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0" status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:{status}"/></soap:Body></soap:Envelope>"#
        )
    };
    match parse(&headers, &body) {
        Ok(unique_id) => {
            let mut seen = ep.lock().unwrap();
            seen.accepted += 1;
            if !seen.unique_ids.insert(unique_id) {
                seen.duplicates += 1;
            }
            drop(seen);
            let mut r = (StatusCode::OK, response("Success")).into_response();
            r.headers_mut().insert("content-type", "application/soap+xml; charset=UTF-8".parse().unwrap());
            r
        }
        Err(reason) => {
            ep.lock().unwrap().refused += 1;
            eprintln!("ITI-41 endpoint: refused a request: {reason}");
            (StatusCode::BAD_REQUEST, reason).into_response()
        }
    }
}

/// Starts the endpoint on 127.0.0.1 (port 0); returns its URL and its record.
pub async fn start(config: Arc<rustls::ServerConfig>) -> (String, Endpoint) {
    let ep = Endpoint::default();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let app = axum::Router::new()
        .route("/si-dmp-server/v2/services/repository", axum::routing::post(iti41))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024))
        .with_state(ep.clone());
    tokio::spawn(crate::pki::serve_tls(tcp, config, app));
    (format!("https://localhost:{port}/si-dmp-server/v2/services/repository"), ep)
}
