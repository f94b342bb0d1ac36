//! The DMP feed: IHE XDS.b ITI-41 Provide and Register Document Set-b, SOAP 1.2 + WS-Addressing + MTOM/XOP,
//! over HTTPS with a client certificate.
//!
//! It receives a [`Submission`] (document + XDS metadata) and hands on one [`Outcome`]:
//!
//! 1. [`check_before_feed`]: a qualified INS, no opposition (ZFA), confidentiality codes the DMP knows;
//!    otherwise [`Outcome::Held`] for identity review, nothing sent.
//! 2. [`build_request`]: the SOAP envelope (WS-Addressing Action/MessageID/To/ReplyTo, a WS-Security header
//!    holding the VIHF SAML 2.0 assertion built by [`Vihf`]), the `ProvideAndRegisterDocumentSetRequest`
//!    whose `xds:Document` is an `xop:Include` of a second MIME part carrying the document bytes, an RPLC
//!    association when the document replaces another.
//! 3. [`DmpClient::send`]: one POST over a kept connection (one pool per sink, `concurrency` in flight);
//!    network errors, timeouts and 5xx are transient; the body's `RegistryResponse`
//!    ([`parse_registry_response`]) gives Success / PartialSuccess / Failure and its
//!    RegistryErrorList says transient or permanent ([`crate::sinks::retry::registry_code_is_transient`]).
//!
//! The VIHF assertion comes from [`crate::sinks::vihf`] (signed with the structure's *certificat de cachet*
//! when `vihf.signing_key` / `vihf.signing_cert` are set) and is copied into `wsse:Security` byte for byte.
//! Not built: the detached XAdES signature of the submission set (IHE DSG).

use std::sync::Arc;
use std::time::Duration;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesText, Event};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::sinks::ebrim::Submission;
use crate::sinks::retry::{self, Outcome, RetryPolicy};
use crate::sinks::vihf::{self, Vihf, VihfConfig};

/// The ITI-41 SOAP action.
pub const ACTION: &str = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b";
const NS_SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";
const NS_WSA: &str = "http://www.w3.org/2005/08/addressing";
const NS_WSSE: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
const NS_XDS: &str = "urn:ihe:iti:xds-b:2007";
const NS_XOP: &str = "http://www.w3.org/2004/08/xop/include";
const STATUS_PREFIX: &str = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:";
/// Confidentiality codes the DMP accepts (first N/R/V, then the masking codes of `1.2.250.1.213.1.1.4.13`).
const DMP_CONFIDENTIALITY: &[&str] =
    &["N", "R", "V", "MASQUE_PS", "INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX"];

/// `sinks.dmp.*`: where and how to feed the DMP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DmpConfig {
    /// Repository endpoint (`https://…/si-dmp-server/v2/services/repository`); empty disables the sink.
    pub endpoint: String,
    /// PEM CA bundle the endpoint's certificate must chain to (IGC-Santé).
    pub ca: Option<std::path::PathBuf>,
    /// PEM client certificate (the structure's authentication certificate).
    pub client_cert: Option<std::path::PathBuf>,
    /// PEM client key.
    pub client_key: Option<std::path::PathBuf>,
    /// Request timeout in seconds (30).
    pub timeout_secs: u64,
    /// Requests in flight at once, over as many kept connections (8); each bus partition delivers one
    /// document at a time, so the sink has at most min(`bus.partitions`, this) in flight.
    pub concurrency: usize,
    /// `sourceId` of the submission sets: the sending system's OID (required).
    pub source_id: String,
    /// Root OID of the submission set uniqueIds (`2.25` UUID-based when empty).
    pub unique_id_root: String,
    /// The VIHF assertion.
    pub vihf: VihfConfig,
    /// Retry policy.
    pub retry: RetryPolicy,
}

impl Default for DmpConfig {
    fn default() -> Self {
        DmpConfig {
            endpoint: String::new(),
            ca: None,
            client_cert: None,
            client_key: None,
            timeout_secs: 30,
            concurrency: 8,
            source_id: String::new(),
            unique_id_root: String::new(),
            vihf: VihfConfig::default(),
            retry: RetryPolicy::default(),
        }
    }
}

impl DmpConfig {
    /// Checks values without I/O; the error names the key.
    pub fn check(&self) -> Result<(), (String, String)> {
        self.retry.check("sinks.dmp.retry")?;
        if self.endpoint.is_empty() {
            return Ok(());
        }
        if !self.endpoint.starts_with("https://") {
            return Err(("sinks.dmp.endpoint".into(), "must be an https:// URL".into()));
        }
        if self.ca.is_none() {
            return Err(("sinks.dmp.ca".into(), "required: the CA bundle of the DMP endpoint".into()));
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(("sinks.dmp.client_key".into(), "client_cert and client_key go together".into()));
        }
        if self.concurrency == 0 {
            return Err(("sinks.dmp.concurrency".into(), "must be at least 1".into()));
        }
        if self.source_id.is_empty() {
            return Err(("sinks.dmp.source_id".into(), "required: the sending system's OID".into()));
        }
        self.vihf.check()
    }
}

/// Checks what must hold before a document goes to the DMP; `Err` is the [`Outcome::Held`] to record.
pub fn check_before_feed(
    submission: &Submission,
    ins_qualified: bool,
    opposition: bool,
) -> Result<(), Outcome> {
    let held = |reason: &str| Err(Outcome::Held { reason: reason.into() });
    if !ins_qualified || submission.document.patient_id.is_empty() {
        return held("INS not qualified: identity review needed before the DMP feed");
    }
    if opposition {
        return held("the patient opposed DMP feeding (ZFA)");
    }
    let codes = &submission.document.confidentiality;
    if codes.is_empty() {
        return held("no confidentiality code");
    }
    if let Some(bad) = codes.iter().find(|c| !DMP_CONFIDENTIALITY.contains(&c.code.as_str())) {
        return Err(Outcome::Held {
            reason: format!("confidentiality code `{}` is not a DMP code", bad.code),
        });
    }
    if !matches!(codes[0].code.as_str(), "N" | "R" | "V") {
        return held("the first confidentiality code must be N, R or V");
    }
    Ok(())
}

/// An ITI-41 HTTP request body, MTOM/XOP encoded.
#[derive(Clone)]
pub struct Request {
    /// The `Content-Type` header value (multipart/related with its boundary, start and action).
    pub content_type: String,
    /// The multipart body.
    pub body: Vec<u8>,
    /// The WS-Addressing MessageID (`urn:uuid:…`), for the journal.
    pub message_id: String,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("message_id", &self.message_id)
            .field("body_bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// Builds the MTOM request for `submission` to `endpoint`, with an assertion from `vihf` (fails only when the
/// RSA signature cannot be computed).
pub fn build_request(
    submission: &Submission,
    endpoint: &str,
    vihf: &Vihf,
    now: jiff::Timestamp,
) -> Result<Request, vihf::Error> {
    let assertion = vihf.assertion(&submission.document.patient_id, now)?;
    let message_id = format!("urn:uuid:{}", Uuid::new_v4());
    let boundary = format!("MIMEBoundary_{}", Uuid::new_v4().simple());
    let root_cid = "root.message@relais";
    let doc_cid = format!("{}@relais", Uuid::new_v4().simple());
    let mut w = Writer::new(Vec::new());
    write_envelope(&mut w, submission, endpoint, &assertion, &message_id, &doc_cid)
        .expect("writing XML into memory cannot fail");
    let envelope = w.into_inner();

    let mut body = Vec::with_capacity(envelope.len() + submission.document.content.len() + 512);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Type: application/xop+xml; charset=UTF-8; type=\"application/soap+xml\"; \
             action=\"{ACTION}\"\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <{root_cid}>\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&envelope);
    body.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\nContent-Type: {}\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <{doc_cid}>\r\n\r\n",
            submission.document.mime_type
        )
        .as_bytes(),
    );
    body.extend_from_slice(&submission.document.content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let content_type = format!(
        "multipart/related; boundary=\"{boundary}\"; type=\"application/xop+xml\"; start=\"<{root_cid}>\"; \
         start-info=\"application/soap+xml\"; action=\"{ACTION}\""
    );
    Ok(Request { content_type, body, message_id })
}

fn write_envelope<W: std::io::Write>(
    w: &mut Writer<W>,
    submission: &Submission,
    endpoint: &str,
    assertion: &str,
    message_id: &str,
    doc_cid: &str,
) -> std::io::Result<()> {
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    w.create_element("soap:Envelope")
        .with_attribute(("xmlns:soap", NS_SOAP))
        .with_attribute(("xmlns:wsa", NS_WSA))
        .write_inner_content(|w| {
            w.create_element("soap:Header").write_inner_content(|w| {
                w.create_element("wsa:Action")
                    .with_attribute(("soap:mustUnderstand", "true"))
                    .write_text_content(BytesText::new(ACTION))?;
                w.create_element("wsa:MessageID").write_text_content(BytesText::new(message_id))?;
                w.create_element("wsa:ReplyTo").write_inner_content(|w| {
                    w.create_element("wsa:Address").write_text_content(BytesText::new(
                        "http://www.w3.org/2005/08/addressing/anonymous",
                    ))?;
                    Ok(())
                })?;
                w.create_element("wsa:To")
                    .with_attribute(("soap:mustUnderstand", "true"))
                    .write_text_content(BytesText::new(endpoint))?;
                w.create_element("wsse:Security")
                    .with_attribute(("xmlns:wsse", NS_WSSE))
                    .with_attribute(("soap:mustUnderstand", "true"))
                    .write_inner_content(|w| w.get_mut().write_all(assertion.as_bytes()))?;
                Ok(())
            })?;
            w.create_element("soap:Body").write_inner_content(|w| {
                w.create_element("xds:ProvideAndRegisterDocumentSetRequest")
                    .with_attribute(("xmlns:xds", NS_XDS))
                    .write_inner_content(|w| {
                        submission.write_submit_objects(w, None)?;
                        w.create_element("xds:Document")
                            .with_attribute(("id", submission.entry_uuid.as_str()))
                            .write_inner_content(|w| {
                                let href = format!("cid:{doc_cid}");
                                w.create_element("xop:Include")
                                    .with_attribute(("xmlns:xop", NS_XOP))
                                    .with_attribute(("href", href.as_str()))
                                    .write_empty()?;
                                Ok(())
                            })?;
                        Ok(())
                    })?;
                Ok(())
            })?;
            Ok(())
        })?;
    Ok(())
}

/// The status of a `RegistryResponse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Everything registered.
    Success,
    /// Registered with problems (IHE: some documents not stored).
    PartialSuccess,
    /// Nothing registered.
    Failure,
}

/// One `RegistryError` of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryError {
    /// `errorCode` (XDS or DMP code, e.g. `XDSRegistryBusy`, `DMPClosed`).
    pub code: String,
    /// `codeContext`: the registry's explanation.
    pub context: String,
    /// `severity` (`…:Error` or `…:Warning`), last segment only.
    pub severity: String,
}

/// A parsed `rs:RegistryResponse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryResponse {
    /// The overall status.
    pub status: Status,
    /// The RegistryErrorList entries.
    pub errors: Vec<RegistryError>,
}

/// The response body could not be read as a RegistryResponse.
#[derive(Debug, thiserror::Error)]
#[error("ITI-41 response: {0}")]
pub struct ResponseError(String);

/// Reads the `RegistryResponse` out of a response body: plain SOAP or MTOM multipart (the XML is searched
/// wherever it is).
pub fn parse_registry_response(body: &[u8]) -> Result<RegistryResponse, ResponseError> {
    let start =
        body.iter().position(|b| *b == b'<').ok_or_else(|| ResponseError("no XML in the body".into()))?;
    let end = body.iter().rposition(|b| *b == b'>').map_or(body.len(), |p| p + 1);
    let mut reader = quick_xml::Reader::from_reader(&body[start..end]);
    reader.config_mut().check_end_names = false;
    let mut status = None;
    let mut errors = Vec::new();
    let mut buf = Vec::new();
    loop {
        let event = reader.read_event_into(&mut buf).map_err(|e| ResponseError(e.to_string()))?;
        match &event {
            Event::Start(e) | Event::Empty(e) => {
                let local = e.local_name();
                let attr = |name: &[u8]| -> String {
                    e.attributes()
                        .flatten()
                        .find(|a| a.key.local_name().as_ref() == name)
                        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
                        .unwrap_or_default()
                };
                match local.as_ref() {
                    b"RegistryResponse" => {
                        let s = attr(b"status");
                        status = Some(match s.strip_prefix(STATUS_PREFIX).unwrap_or(&s) {
                            "Success" => Status::Success,
                            "PartialSuccess" => Status::PartialSuccess,
                            "Failure" => Status::Failure,
                            other => return Err(ResponseError(format!("unknown status `{other}`"))),
                        });
                    }
                    b"RegistryError" => {
                        let severity = attr(b"severity");
                        errors.push(RegistryError {
                            code: attr(b"errorCode"),
                            context: attr(b"codeContext"),
                            severity: severity.rsplit(':').next().unwrap_or_default().to_string(),
                        });
                    }
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    let status = status.ok_or_else(|| ResponseError("no RegistryResponse element".into()))?;
    Ok(RegistryResponse { status, errors })
}

impl RegistryResponse {
    /// The delivery outcome: Success delivered; Failure or PartialSuccess transient only when every error is
    /// a transient code, else permanent, with the codes as the reason.
    pub fn outcome(&self) -> Outcome {
        let failing: Vec<&RegistryError> = self.errors.iter().filter(|e| e.severity != "Warning").collect();
        match self.status {
            Status::Success => Outcome::Delivered,
            Status::Failure | Status::PartialSuccess => {
                let codes: Vec<String> = failing
                    .iter()
                    .map(|e| {
                        if e.context.is_empty() {
                            e.code.clone()
                        } else {
                            format!("{} ({})", e.code, e.context)
                        }
                    })
                    .collect();
                let reason = format!(
                    "DMP {:?}: {}",
                    self.status,
                    if codes.is_empty() { "no error given".into() } else { codes.join("; ") }
                );
                if !failing.is_empty() && failing.iter().all(|e| retry::registry_code_is_transient(&e.code)) {
                    Outcome::retry(reason)
                } else {
                    Outcome::failed(reason)
                }
            }
        }
    }

    /// The first failing error code, for ZAM^Z01 ERR-5 (e.g. `DMPClosed`).
    pub fn first_error(&self) -> Option<&RegistryError> {
        self.errors.iter().find(|e| e.severity != "Warning")
    }
}

/// Why a DMP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A PEM file could not be used.
    #[error(transparent)]
    Tls(#[from] crate::sinks::tls::Error),
    /// The VIHF signing key or certificate could not be used.
    #[error(transparent)]
    Vihf(#[from] vihf::Error),
    /// `sinks.dmp.ca` is missing.
    #[error("sinks.dmp.ca is required")]
    NoCa,
}

/// Sends ITI-41 requests to the configured endpoint over HTTPS (mutual TLS when a client certificate is set).
#[derive(Debug, Clone)]
pub struct DmpClient {
    http: crate::sinks::https::HttpsClient,
    endpoint: String,
    vihf: Arc<Vihf>,
}

impl DmpClient {
    /// Builds the client from checked settings (reads the PEM files).
    pub fn new(cfg: &DmpConfig) -> Result<DmpClient, BuildError> {
        let ca = cfg.ca.as_deref().ok_or(BuildError::NoCa)?;
        let identity = cfg.client_cert.as_deref().zip(cfg.client_key.as_deref());
        let tls = crate::sinks::tls::client_config(Some(ca), identity)?;
        let timeout = Duration::from_secs(cfg.timeout_secs.max(1));
        let http = crate::sinks::https::HttpsClient::with_max_in_flight(tls, timeout, cfg.concurrency);
        let vihf = Arc::new(Vihf::new(&cfg.vihf)?);
        Ok(DmpClient { http, endpoint: cfg.endpoint.clone(), vihf })
    }

    /// Whether the VIHF assertions this client sends are signed.
    pub fn signs_vihf(&self) -> bool {
        self.vihf.is_signed()
    }

    /// Sends one submission; returns the outcome and, when the registry answered, its response.
    pub async fn send(&self, submission: &Submission) -> (Outcome, Option<RegistryResponse>) {
        let request = match build_request(submission, &self.endpoint, &self.vihf, jiff::Timestamp::now()) {
            Ok(request) => request,
            Err(e) => return (Outcome::retry(e.to_string()), None),
        };
        let sent = self
            .http
            .post(&self.endpoint, &request.content_type, &[("soapaction", ACTION.to_string())], request.body)
            .await;
        let (status, body) = match sent {
            Ok(r) => (r.status, r.body),
            Err(crate::sinks::https::Error::Url(url)) => {
                return (Outcome::failed(format!("sinks.dmp.endpoint `{url}` is not an https URL")), None);
            }
            Err(e) => return (retry::classify_network(error_chain(&e)), None),
        };
        match parse_registry_response(&body) {
            Ok(parsed) => (parsed.outcome(), Some(parsed)),
            Err(_) if !(200..300).contains(&status) => (retry::classify_http(status), None),
            Err(e) => (Outcome::failed(e.to_string()), None),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::ebrim::{Code, SubmissionParams, sample_document};

    fn unsigned() -> Vihf {
        Vihf::new(&VihfConfig::default()).unwrap()
    }

    fn submission() -> Submission {
        Submission::new(sample_document(), SubmissionParams::default(), jiff::Timestamp::now())
    }

    #[test]
    fn held_without_qualified_ins_with_opposition_or_unknown_code() {
        let s = submission();
        assert!(check_before_feed(&s, true, false).is_ok());
        assert_eq!(check_before_feed(&s, false, false).unwrap_err().as_str(), "held");
        let err = check_before_feed(&s, true, true).unwrap_err();
        assert!(err.reason().unwrap().contains("opposed"));
        let mut bad = submission();
        bad.document.confidentiality.push(Code::new("SECRET", "x", "x"));
        assert!(check_before_feed(&bad, true, false).unwrap_err().reason().unwrap().contains("SECRET"));
    }

    #[test]
    fn request_is_mtom_with_the_document_in_its_own_part() {
        let s = submission();
        let r =
            build_request(&s, "https://dmp.test/repository", &unsigned(), jiff::Timestamp::now()).unwrap();
        assert!(r.content_type.starts_with("multipart/related;"));
        assert!(r.content_type.contains("type=\"application/xop+xml\""));
        assert!(r.content_type.contains(ACTION));
        let text = String::from_utf8_lossy(&r.body);
        assert!(text.contains("<xop:Include"));
        assert!(text.contains("<wsa:To soap:mustUnderstand=\"true\">https://dmp.test/repository</wsa:To>"));
        assert!(text.contains("<saml2:AttributeValue>INDIRECTE</saml2:AttributeValue>"));
        let cid = text.split("href=\"cid:").nth(1).unwrap().split('"').next().unwrap();
        let part = format!("Content-ID: <{cid}>\r\n\r\n");
        let at = text.find(&part).expect("the referenced part exists") + part.len();
        assert!(text[at..].starts_with(std::str::from_utf8(&s.document.content).unwrap()));
    }

    #[test]
    fn registry_responses_map_to_outcomes() {
        let ok = br#"<rs:RegistryResponse xmlns:rs="urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0" status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"/>"#;
        assert_eq!(parse_registry_response(ok).unwrap().outcome(), Outcome::Delivered);
        let closed = br#"--x
Content-Type: application/xop+xml

<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><rs:RegistryResponse xmlns:rs="urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0" status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"><rs:RegistryErrorList><rs:RegistryError errorCode="DMPClosed" codeContext="DMP ferme" severity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"/></rs:RegistryErrorList></rs:RegistryResponse></s:Body></s:Envelope>
--x--"#;
        let parsed = parse_registry_response(closed).unwrap();
        assert_eq!(parsed.status, Status::Failure);
        let outcome = parsed.outcome();
        assert_eq!(outcome.as_str(), "failed");
        assert!(outcome.reason().unwrap().contains("DMPClosed"));
        let busy = br#"<RegistryResponse status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"><RegistryErrorList><RegistryError errorCode="XDSRegistryBusy" severity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"/></RegistryErrorList></RegistryResponse>"#;
        assert_eq!(parse_registry_response(busy).unwrap().outcome().as_str(), "retry");
        assert!(parse_registry_response(b"<html>503</html>").is_err());
    }
}
