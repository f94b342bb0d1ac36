//! HTTPS POSTs over kept connections: hyper-util's pooled HTTP/1.1 client over hyper-rustls, with the sink's
//! own rustls configuration (CA bundle, client certificate read once).
//!
//! Each sink builds one [`HttpsClient`] and shares it (clones share the pool): a connection is opened (TCP +
//! TLS handshake, mutual when a client certificate is set) only when no idle one is left, kept alive after
//! each answer, and closed after [`IDLE`] unused. At most `max_in_flight` requests run at once
//! ([`HttpsClient::with_max_in_flight`]); the others wait their turn, within the timeout.
//!
//! reqwest is not used here: with rustls and the ring provider it needs a process-wide default crypto
//! provider, a global side effect on every other HTTP client of the process.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;

/// How long an unused connection is kept open.
pub const IDLE: Duration = Duration::from_secs(60);

/// Why a request got no HTTP answer (always transient for the caller, except a bad URL).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL is not `https://host[:port]/path`.
    #[error("URL `{0}`: expected https://host[:port]/path")]
    Url(String),
    /// TCP connect, TLS handshake or the HTTP exchange failed.
    #[error("HTTP: {0}")]
    Http(#[from] hyper_util::client::legacy::Error),
    /// The answer's body could not be read.
    #[error("HTTP body: {0}")]
    Body(#[from] hyper::Error),
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: Bytes,
}

/// An HTTPS client for one sink: a pool of kept connections and a bound on requests in flight.
#[derive(Clone)]
pub struct HttpsClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    in_flight: Arc<Semaphore>,
    timeout: Duration,
}

impl std::fmt::Debug for HttpsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsClient").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl HttpsClient {
    /// A client with this TLS configuration; each request must be answered within `timeout`; up to 8 in
    /// flight.
    pub fn new(config: rustls::ClientConfig, timeout: Duration) -> HttpsClient {
        HttpsClient::with_max_in_flight(config, timeout, 8)
    }

    /// [`HttpsClient::new`] with at most `max_in_flight` requests (and open connections) at once.
    pub fn with_max_in_flight(
        config: rustls::ClientConfig,
        timeout: Duration,
        max_in_flight: usize,
    ) -> HttpsClient {
        let max_in_flight = max_in_flight.max(1);
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .enable_http1()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE)
            .pool_max_idle_per_host(max_in_flight)
            .build(connector);
        HttpsClient { client, in_flight: Arc::new(Semaphore::new(max_in_flight)), timeout }
    }

    /// POSTs `body` with `content_type` and the extra `headers` to `url`.
    pub async fn post(
        &self,
        url: &str,
        content_type: &str,
        headers: &[(&'static str, String)],
        body: Vec<u8>,
    ) -> Result<Response, Error> {
        tokio::time::timeout(self.timeout, self.exchange(url, content_type, headers, body))
            .await
            .map_err(|_| Error::Timeout(self.timeout))?
    }

    async fn exchange(
        &self,
        url: &str,
        content_type: &str,
        headers: &[(&'static str, String)],
        body: Vec<u8>,
    ) -> Result<Response, Error> {
        let bad_url = || Error::Url(url.to_string());
        let uri: hyper::Uri = url.parse().map_err(|_| bad_url())?;
        if uri.scheme_str() != Some("https") || uri.host().is_none() {
            return Err(bad_url());
        }
        let mut request = Request::post(uri)
            .header(CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| bad_url())?;
        for (name, value) in headers {
            let value = HeaderValue::from_str(value).map_err(|_| bad_url())?;
            request.headers_mut().insert(*name, value);
        }
        let _permit = self.in_flight.acquire().await.expect("the semaphore is never closed");
        let response = self.client.request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Response { status, body })
    }
}
