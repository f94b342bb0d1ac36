//! The DMP sink against a local HTTPS ITI-41 endpoint (axum + rustls, client certificate required) that
//! reassembles the MTOM request, validates its SOAP body with xmllint against the XDS.b schemas, and answers
//! as the test asks.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use relais::sinks::ebrim::Submission;
use relais::sinks::iti41::{DmpClient, DmpConfig, Status};
use relais::sinks::retry::Outcome;
use relais::sinks::vihf::VihfConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::pki::{Pki, TlsListener};
use super::vihf::Cachet;

/// What the endpoint answers.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Answer {
    Success,
    Failure,
    Unavailable,
}

/// What the endpoint saw.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) requests: usize,
    /// The client address (so the TCP + TLS connection) each request came over.
    peers: Vec<std::net::SocketAddr>,
    /// The SOAP body child, reassembled (xop:Include replaced by base64), for each request.
    bodies: Vec<String>,
    /// xmllint's verdict for each request.
    pub(super) verdicts: Vec<Result<String, String>>,
    envelopes: Vec<String>,
    /// xmlsec1's verdict on the VIHF signature of each request (`None`: unsigned).
    signatures: Vec<Option<Result<String, String>>>,
}

#[derive(Clone)]
pub(super) struct Endpoint {
    pub(super) answer: Arc<Mutex<Answer>>,
    pub(super) seen: Arc<Mutex<Seen>>,
    /// The CA of the VIHF signing certificate, when requests are expected signed.
    vihf_ca: Option<std::path::PathBuf>,
}

/// Splits a multipart/related body into (Content-ID, bytes) parts.
fn mime_parts(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let boundary =
        content_type.split("boundary=\"").nth(1).and_then(|s| s.split('"').next()).expect("boundary");
    let delimiter = format!("--{boundary}");
    let text = body;
    let mut parts = Vec::new();
    let positions: Vec<usize> = memchr::memmem::find_iter(text, delimiter.as_bytes()).collect();
    for pair in positions.windows(2) {
        let part = &text[pair[0] + delimiter.len()..pair[1]];
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        let split = memchr::memmem::find(part, b"\r\n\r\n").expect("part headers");
        let headers = String::from_utf8_lossy(&part[..split]).into_owned();
        let mut content = part[split + 4..].to_vec();
        if content.ends_with(b"\r\n") {
            content.truncate(content.len() - 2);
        }
        let cid = headers
            .lines()
            .find_map(|l| l.strip_prefix("Content-ID: <"))
            .map(|s| s.trim_end_matches('>').to_string())
            .unwrap_or_default();
        parts.push((cid, content));
    }
    parts
}

/// The client address of a TLS connection (what tells one kept connection from several).
#[derive(Clone)]
struct Peer(std::net::SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

async fn iti41(
    State(ep): State<Endpoint>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let content_type =
        headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let parts = mime_parts(&content_type, &body);
    let root = String::from_utf8(parts[0].1.clone()).expect("root part is UTF-8");
    // XOP: put each referenced part back, base64, in place of its xop:Include.
    let mut soap = root.clone();
    while let Some(start) = soap.find("<xop:Include") {
        let end = start + soap[start..].find("/>").unwrap() + 2;
        let include = &soap[start..end];
        let cid = include.split("href=\"cid:").nth(1).unwrap().split('"').next().unwrap().to_string();
        let data = &parts.iter().find(|(c, _)| *c == cid).expect("referenced part present").1;
        let b64 = base64::engine::general_purpose::STANDARD.encode(data);
        soap.replace_range(start..end, &b64);
    }
    let body_start = soap.find("<soap:Body>").unwrap() + "<soap:Body>".len();
    let body_end = soap.find("</soap:Body>").unwrap();
    let child = soap[body_start..body_end].to_string();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("request.xml");
    std::fs::write(&path, &child).unwrap();
    let verdict = super::validate("IHE/XDS.b_DocumentRepository.xsd", &path);
    // The envelope as received: the VIHF signature checked by xmlsec1 against the cachet's CA.
    let signature = (root.contains("<ds:Signature") || ep.vihf_ca.is_some()).then(|| {
        let path = dir.path().join("envelope.xml");
        std::fs::write(&path, &root).unwrap();
        super::vihf::xmlsec1_verify(&path, None, ep.vihf_ca.as_deref())
    });
    let answer = *ep.answer.lock().unwrap();
    {
        let mut seen = ep.seen.lock().unwrap();
        seen.requests += 1;
        seen.peers.push(peer);
        seen.bodies.push(child);
        seen.verdicts.push(verdict.clone());
        seen.signatures.push(signature);
        seen.envelopes.push(root);
    }
    let response = |status: &str, errors: &str| {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope"><soap:Body><rs:RegistryResponse xmlns:rs="urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0" status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:{status}">{errors}</rs:RegistryResponse></soap:Body></soap:Envelope>"#
        )
    };
    if verdict.is_err() {
        let e = r#"<rs:RegistryErrorList><rs:RegistryError errorCode="XDSRegistryMetadataError" severity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"/></rs:RegistryErrorList>"#;
        return (StatusCode::OK, response("Failure", e)).into_response();
    }
    match answer {
        Answer::Success => (StatusCode::OK, response("Success", "")).into_response(),
        Answer::Failure => {
            let e = r#"<rs:RegistryErrorList><rs:RegistryError errorCode="DMPClosed" codeContext="DMP ferme" severity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"/></rs:RegistryErrorList>"#;
            (StatusCode::OK, response("Failure", e)).into_response()
        }
        Answer::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response(),
    }
}

pub(super) async fn start_endpoint(pki: &Pki, cachet: Option<&Cachet>) -> (String, Endpoint) {
    let ep = Endpoint {
        answer: Arc::new(Mutex::new(Answer::Success)),
        seen: Arc::default(),
        vihf_ca: cachet.map(|c| c.ca.clone()),
    };
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = TlsListener { tcp, acceptor: TlsAcceptor::from(pki.server_config_mtls()) };
    let app = axum::Router::new()
        .route("/si-dmp-server/v2/services/repository", axum::routing::post(iti41))
        .with_state(ep.clone());
    let app = app.into_make_service_with_connect_info::<Peer>();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("https://localhost:{}/si-dmp-server/v2/services/repository", addr.port()), ep)
}

fn config(pki: &Pki, endpoint: &str, with_client_cert: bool) -> DmpConfig {
    DmpConfig {
        endpoint: endpoint.into(),
        ca: Some(pki.ca.clone()),
        client_cert: with_client_cert.then(|| pki.client_cert.clone()),
        client_key: with_client_cert.then(|| pki.client_key.clone()),
        timeout_secs: 10,
        concurrency: 4,
        source_id: "1.2.250.1.999.3".into(),
        unique_id_root: "1.2.250.1.999.3.1".into(),
        vihf: VihfConfig {
            issuer: "CN=relais-client,O=CH Test".into(),
            subject_id: "801234567897".into(),
            subject_name: "Plateforme documentaire CH Test".into(),
            structure_id: "1530000000".into(),
            roles: vec!["10^1.2.250.1.213.1.1.5.5^Médecin".into()],
            homologation: "HOMOLOGATION-TEST".into(),
            ..VihfConfig::default()
        },
        retry: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iti41_over_mtls_validates_and_maps_success_failure_and_503() {
    let pki = Pki::new();
    let cachet = Cachet::new();
    let (url, ep) = start_endpoint(&pki, Some(&cachet)).await;
    let mut cfg = config(&pki, &url, true);
    cfg.vihf.signing_key = Some(cachet.key.clone());
    cfg.vihf.signing_cert = Some(cachet.cert.clone());
    let client = DmpClient::new(&cfg).unwrap();
    assert!(client.signs_vihf());
    let submission = Submission::new(super::ldl_document(), super::params(), jiff::Timestamp::now());

    let (outcome, response) = client.send(&submission).await;
    assert_eq!(outcome, Outcome::Delivered);
    assert_eq!(response.unwrap().status, Status::Success);
    {
        let seen = ep.seen.lock().unwrap();
        assert_eq!(seen.requests, 1);
        assert!(seen.verdicts[0].is_ok(), "SOAP body invalid: {:?}", seen.verdicts[0]);
        assert!(matches!(seen.signatures[0], Some(Ok(_))), "VIHF signature: {:?}", seen.signatures[0]);
        // The document came back byte for byte through MTOM.
        let b64 = base64::engine::general_purpose::STANDARD.encode(&submission.document.content);
        assert!(seen.bodies[0].contains(&b64));
        let env = &seen.envelopes[0];
        assert!(env.contains("urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"));
        assert!(env.contains("<saml2:AttributeValue>INDIRECTE</saml2:AttributeValue>"));
        assert!(env.contains("<saml2:AttributeValue>279035121518989^^^&amp;1.2.250.1.213.1.4.8&amp;ISO^NH</saml2:AttributeValue>"));
        assert!(env.contains("HOMOLOGATION-TEST"));
    }

    *ep.answer.lock().unwrap() = Answer::Failure;
    let (outcome, response) = client.send(&submission).await;
    assert_eq!(outcome.as_str(), "failed");
    assert!(outcome.reason().unwrap().contains("DMPClosed"));
    assert_eq!(response.unwrap().first_error().unwrap().code, "DMPClosed");

    *ep.answer.lock().unwrap() = Answer::Unavailable;
    let (outcome, _) = client.send(&submission).await;
    assert_eq!(outcome, Outcome::retry("HTTP 503"));

    // A replacement carries an RPLC association, and still validates.
    *ep.answer.lock().unwrap() = Answer::Success;
    let mut replacement = super::ldl_document();
    replacement.unique_id = "1.2.250.1.213.1.1.9.2.20220101.2".into();
    replacement.replaces = Some("1.2.250.1.213.1.1.9.2.20220101.1".into());
    let replacement = Submission::new(replacement, super::params(), jiff::Timestamp::now());
    assert_eq!(client.send(&replacement).await.0, Outcome::Delivered);
    let seen = ep.seen.lock().unwrap();
    assert_eq!(seen.requests, 4);
    // Connections are kept: a request may open a second one when it checks the pool out just before the
    // previous answer's connection is back in it (hyper's pool returns it asynchronously), not one each.
    let connections: std::collections::BTreeSet<_> = seen.peers.iter().collect();
    assert!(connections.len() <= 2, "kept connections, not one per request: {:?}", seen.peers);
    assert!(seen.verdicts.iter().all(|v| v.is_ok()));
    assert!(seen.signatures.iter().all(|s| matches!(s, Some(Ok(_)))), "{:?}", seen.signatures);
    let last = seen.bodies.last().unwrap();
    assert!(last.contains("urn:ihe:iti:2007:AssociationType:RPLC"));
    assert!(last.contains(&format!("targetObject=\"{}\"", submission.entry_uuid)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_client_certificate_nothing_is_accepted_and_it_is_retried() {
    let pki = Pki::new();
    let (url, ep) = start_endpoint(&pki, None).await;
    let client = DmpClient::new(&config(&pki, &url, false)).unwrap();
    assert!(!client.signs_vihf());
    let submission = Submission::new(super::ldl_document(), super::params(), jiff::Timestamp::now());
    let (outcome, response) = client.send(&submission).await;
    assert_eq!(outcome.as_str(), "retry", "{outcome:?}");
    assert!(response.is_none());
    assert_eq!(ep.seen.lock().unwrap().requests, 0);
}
