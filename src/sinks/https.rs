//! One HTTPS POST over a fresh connection: hyper's HTTP/1.1 client over tokio-rustls, with the sink's own
//! rustls configuration (CA bundle, client certificate).
//!
//! reqwest is not used here: with rustls and the ring provider it needs a process-wide default crypto
//! provider, a global side effect on every other HTTP client of the process. Requests are rare and small
//! next to SMTP and DMP round trips, so no connection pool is kept.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Why a request got no HTTP answer (always transient for the caller, except a bad URL).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL is not `https://host[:port]/path`.
    #[error("URL `{0}`: expected https://host[:port]/path")]
    Url(String),
    /// TCP connect or TLS handshake failed.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The HTTP exchange failed.
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
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

/// An HTTPS client for one sink.
#[derive(Clone)]
pub struct HttpsClient {
    tls: TlsConnector,
    timeout: Duration,
}

impl std::fmt::Debug for HttpsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsClient").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl HttpsClient {
    /// A client with this TLS configuration; each request must be answered within `timeout`.
    pub fn new(config: rustls::ClientConfig, timeout: Duration) -> HttpsClient {
        HttpsClient { tls: TlsConnector::from(Arc::new(config)), timeout }
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
        if uri.scheme_str() != Some("https") {
            return Err(bad_url());
        }
        let host = uri.host().ok_or_else(bad_url)?.trim_start_matches('[').trim_end_matches(']').to_string();
        let port = uri.port_u16().unwrap_or(443);
        let authority = uri.authority().ok_or_else(bad_url)?.to_string();
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let tcp = TcpStream::connect((host.as_str(), port)).await.map_err(Error::Connect)?;
        let name = ServerName::try_from(host).map_err(|_| bad_url())?;
        let tls = self.tls.connect(name, tcp).await.map_err(Error::Connect)?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        let driver = tokio::spawn(connection);
        let mut request = Request::post(path)
            .header(HOST, authority)
            .header(CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| bad_url())?;
        for (name, value) in headers {
            let value = HeaderValue::from_str(value).map_err(|_| bad_url())?;
            request.headers_mut().insert(*name, value);
        }
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        driver.abort();
        Ok(Response { status, body })
    }
}
