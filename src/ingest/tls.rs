//! MLLP over TLS: the rustls server configuration and the client allowlist.
//!
//! TLS 1.2 and 1.3 only. With a client CA the handshake requires a client certificate it signed (mutual TLS);
//! with an allowlist, a verified client whose subject and alternative names match no entry is disconnected
//! right after the handshake, before any byte of HL7 is read.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::warn;

use crate::config::TlsSettings;

/// A TLS setup problem, naming the file or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{what} `{path}`: {reason}")]
    Pem {
        /// Which setting (`mllp.tls.cert`, …).
        what: &'static str,
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("mllp.tls.client_ca: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// A TLS acceptor plus the client allowlist.
pub struct TlsServer {
    acceptor: TlsAcceptor,
    allowed_clients: Vec<String>,
}

impl TlsServer {
    /// Reads the certificate, key and optional client CA named in `settings` and builds the acceptor.
    pub fn from_settings(settings: &TlsSettings) -> Result<TlsServer, Error> {
        let certs = read_certs("mllp.tls.cert", &settings.cert)?;
        let key = PrivateKeyDer::from_pem_file(&settings.key).map_err(|e| Error::Pem {
            what: "mllp.tls.key",
            path: settings.key.display().to_string(),
            reason: e.to_string(),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
        let builder = match &settings.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs("mllp.tls.client_ca", ca)? {
                    roots.add(cert)?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder.with_single_cert(certs, key)?;
        Ok(TlsServer {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            allowed_clients: settings.allowed_clients.clone(),
        })
    }

    /// Runs the handshake and the allowlist check; `None` when the client is refused (already logged).
    pub async fn accept(&self, stream: TcpStream, peer: SocketAddr) -> Option<TlsStream<TcpStream>> {
        let stream = match self.acceptor.accept(stream).await {
            Ok(s) => s,
            Err(e) => {
                warn!(%peer, error = %e, "TLS handshake failed");
                crate::ops::metrics::tls_refused(true);
                return None;
            }
        };
        if self.allowed_clients.is_empty() {
            return Some(stream);
        }
        let (_, connection) = stream.get_ref();
        let identity =
            connection.peer_certificates().and_then(|c| c.first()).map(|c| ClientIdentity::read(c));
        match identity {
            Some(Ok(id)) if id.matches_any(&self.allowed_clients) => return Some(stream),
            Some(Ok(id)) => {
                let subject = &id.subject;
                warn!(%peer, %subject, "client certificate not in mllp.tls.allowed_clients; refused")
            }
            Some(Err(reason)) => warn!(%peer, %reason, "client certificate unreadable; refused"),
            None => warn!(%peer, "no client certificate; refused"),
        }
        crate::ops::metrics::tls_refused(false);
        None
    }
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem_error = |reason: String| Error::Pem { what, path: path.display().to_string(), reason };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// The names a client certificate can be allowed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// RFC 4514 subject, e.g. `CN=dpi-1,O=CH Mayenne`.
    pub subject: String,
    /// Subject common names.
    pub common_names: Vec<String>,
    /// Subject alternative names as `DNS:…`, `URI:…`, `IP:…`, `email:…`.
    pub alt_names: Vec<String>,
}

impl ClientIdentity {
    /// Reads the subject and alternative names of a DER certificate.
    pub fn read(der: &CertificateDer<'_>) -> Result<ClientIdentity, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| e.to_string())?;
        let subject = cert.subject().to_string();
        let common_names =
            cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok().map(str::to_string)).collect();
        let mut alt_names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            use x509_parser::extensions::GeneralName;
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => alt_names.push(format!("DNS:{d}")),
                    GeneralName::URI(u) => alt_names.push(format!("URI:{u}")),
                    GeneralName::RFC822Name(m) => alt_names.push(format!("email:{m}")),
                    GeneralName::IPAddress(bytes) => {
                        let ip = match bytes.len() {
                            4 => <[u8; 4]>::try_from(*bytes)
                                .ok()
                                .map(|b| std::net::IpAddr::from(b).to_string()),
                            16 => <[u8; 16]>::try_from(*bytes)
                                .ok()
                                .map(|b| std::net::IpAddr::from(b).to_string()),
                            _ => None,
                        };
                        if let Some(ip) = ip {
                            alt_names.push(format!("IP:{ip}"));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(ClientIdentity { subject, common_names, alt_names })
    }

    /// Whether one allowlist entry names this client: `CN=x` matches a common name, `DNS:`/`URI:`/`IP:`/`email:`
    /// a SAN (scheme case-insensitive), anything else the whole RFC 4514 subject.
    pub fn matches(&self, entry: &str) -> bool {
        let entry = entry.trim();
        if let Some(cn) = entry.strip_prefix("CN=").filter(|rest| !rest.contains(',')) {
            return self.common_names.iter().any(|c| c == cn);
        }
        if let Some((scheme, value)) = entry.split_once(':')
            && ["DNS", "URI", "IP", "EMAIL"].contains(&scheme.to_ascii_uppercase().as_str())
        {
            return self.alt_names.iter().any(|san| {
                san.split_once(':').is_some_and(|(s, v)| s.eq_ignore_ascii_case(scheme) && v == value)
            });
        }
        normalise_subject(&self.subject) == normalise_subject(entry)
    }

    /// Whether any entry names this client.
    pub fn matches_any(&self, entries: &[String]) -> bool {
        entries.iter().any(|e| self.matches(e))
    }
}

fn normalise_subject(s: &str) -> String {
    s.split(',').map(|part| part.trim()).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> ClientIdentity {
        ClientIdentity {
            subject: "CN=dpi-1, O=CH Mayenne".into(),
            common_names: vec!["dpi-1".into()],
            alt_names: vec!["DNS:dpi.example.org".into(), "IP:10.0.0.5".into()],
        }
    }

    #[test]
    fn allowlist_entries_match_cn_san_or_subject() {
        let id = identity();
        assert!(id.matches("CN=dpi-1"));
        assert!(!id.matches("CN=dpi-2"));
        assert!(id.matches("DNS:dpi.example.org"));
        assert!(id.matches("dns:dpi.example.org"));
        assert!(!id.matches("DNS:other.example.org"));
        assert!(id.matches("IP:10.0.0.5"));
        assert!(id.matches("CN=dpi-1,O=CH Mayenne"));
        assert!(!id.matches("CN=dpi-1,O=Other"));
    }

    #[test]
    fn certificates_generated_at_run_time_are_read() {
        let mut params = rcgen::CertificateParams::new(vec!["dpi.example.org".into()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "dpi-1");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let id = ClientIdentity::read(cert.der()).unwrap();
        assert_eq!(id.common_names, vec!["dpi-1".to_string()]);
        assert!(id.matches("DNS:dpi.example.org"));
        assert!(id.matches("CN=dpi-1"));
    }
}
