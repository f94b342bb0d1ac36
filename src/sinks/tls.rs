//! rustls client configurations for the sinks' HTTPS clients (DMP, webhook): a configured CA bundle and,
//! for mutual TLS, a client certificate and key, all PEM files read once when a sink is built.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate or key file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{what} `{path}`: {reason}")]
pub struct Error {
    /// Which file: `CA bundle`, `client certificate`, `client key`.
    pub what: &'static str,
    /// Its path.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

/// Builds a TLS 1.2+ client configuration trusting only `ca` (PEM) or, without one, the system's roots, and
/// presenting `identity` (PEM certificate chain, PEM key) when given.
pub fn client_config(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, Error> {
    let err = |what, path: &Path, reason: String| Error { what, path: path.display().to_string(), reason };
    let mut roots = rustls::RootCertStore::empty();
    let ca_path = ca.unwrap_or(Path::new("(system store)"));
    match ca {
        Some(ca) => {
            for cert in CertificateDer::pem_file_iter(ca).map_err(|e| err("CA bundle", ca, e.to_string()))? {
                let cert = cert.map_err(|e| err("CA bundle", ca, e.to_string()))?;
                roots.add(cert).map_err(|e| err("CA bundle", ca, e.to_string()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    if roots.is_empty() {
        return Err(err("CA bundle", ca_path, "no CERTIFICATE block".into()));
    }
    let ca = ca_path;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| err("CA bundle", ca, e.to_string()))?
        .with_root_certificates(roots);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| err("client certificate", cert, e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| err("client certificate", cert, e.to_string()))?;
            let key_der =
                PrivateKeyDer::from_pem_file(key).map_err(|e| err("client key", key, e.to_string()))?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| err("client key", key, e.to_string()))
        }
    }
}
