//! `relais send`: an MLLP client that sends HL7v2 files and reads back each ACK.
//!
//! A file may hold several messages: each starts at a line beginning with `MSH`. A directory sends its files
//! in name order, skipping hidden files and Markdown notes (`README.md` beside the samples). Messages go one
//! at a time (send, wait for the ACK, send), as a DPI does.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::StreamExt;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

use crate::hl7v2::{Header, read_ack};
use crate::ingest::mllp::{Frame, MllpCodec};

/// Why sending could not proceed (as opposed to a message being refused, which is a [`Sent`] line).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Nothing to send.
    #[error("no HL7v2 message found in {0}")]
    Empty(String),
    /// The connection failed or broke.
    #[error("connection to {to}: {reason}")]
    Connection {
        /// The server.
        to: String,
        /// What went wrong.
        reason: String,
    },
    /// TLS material or settings are not usable.
    #[error("TLS: {0}")]
    Tls(String),
}

/// Options of `relais send`.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Server address.
    pub to: String,
    /// PEM CA that signed the server certificate; set = use TLS.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (mutual TLS).
    pub client_cert: Option<PathBuf>,
    /// Client key (mutual TLS).
    pub client_key: Option<PathBuf>,
    /// Name to check the server certificate against (default: the host part of `to`).
    pub server_name: Option<String>,
}

/// One message to send, with where it came from.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The file it was read from.
    pub file: PathBuf,
    /// The message bytes.
    pub bytes: Vec<u8>,
}

/// What the server answered to one message.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The file it was read from.
    pub file: PathBuf,
    /// MSH-10 of the message sent (empty when unreadable).
    pub control_id: String,
    /// MSA-1 of the ACK (`AA`, `AE`, `AR`), or `??` when the answer was not an ACK.
    pub code: String,
    /// The ERR text of a negative ACK.
    pub error_text: Option<String>,
}

/// Reads every message of `paths` (files, or directories: their files in name order, not hidden ones nor
/// `*.md`). A file named explicitly is always sent.
pub fn collect(paths: &[PathBuf]) -> Result<Vec<Outgoing>, Error> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|source| Error::Read { path: path.display().to_string(), source })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && !is_note(p))
                .collect();
            entries.sort();
            files.extend(entries);
        } else {
            files.push(path.clone());
        }
    }
    let mut out = Vec::new();
    for file in files {
        let bytes = std::fs::read(&file)
            .map_err(|source| Error::Read { path: file.display().to_string(), source })?;
        let messages = split_messages(&bytes);
        if messages.is_empty() {
            return Err(Error::Empty(file.display().to_string()));
        }
        out.extend(messages.into_iter().map(|m| Outgoing { file: file.clone(), bytes: m.to_vec() }));
    }
    Ok(out)
}

/// Whether a file met while walking a directory is not a message: hidden, or a Markdown note.
fn is_note(path: &Path) -> bool {
    let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
    hidden || path.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("md"))
}

/// Splits a file into messages: each begins at a line starting with `MSH`; trailing blank lines are dropped.
/// A file with no `MSH` line is sent whole (the server will say what is wrong with it).
pub fn split_messages(bytes: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    for i in 0..bytes.len() {
        let at_line_start = i == 0 || bytes[i - 1] == b'\r' || bytes[i - 1] == b'\n';
        if at_line_start && bytes[i..].starts_with(b"MSH") {
            starts.push(i);
        }
    }
    let trim = |m: &'_ [u8]| -> usize {
        m.iter().rposition(|b| !matches!(b, b'\r' | b'\n' | b' ' | b'\t')).map_or(0, |p| p + 1)
    };
    if starts.is_empty() {
        let end = trim(bytes);
        return if end == 0 { Vec::new() } else { vec![&bytes[..end]] };
    }
    starts
        .iter()
        .enumerate()
        .map(|(n, &s)| {
            let e = starts.get(n + 1).copied().unwrap_or(bytes.len());
            let m = &bytes[s..e];
            &m[..trim(m)]
        })
        .collect()
}

/// Sends `messages` in order over one connection; `on_sent` sees each answer as it arrives.
pub async fn send_all(
    options: &SendOptions,
    messages: &[Outgoing],
    mut on_sent: impl FnMut(&Sent),
) -> Result<Vec<Sent>, Error> {
    let conn_error = |reason: String| Error::Connection { to: options.to.clone(), reason };
    let tcp = TcpStream::connect(&options.to).await.map_err(|e| conn_error(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    match &options.tls_ca {
        None => exchange(tcp, options, messages, &mut on_sent).await,
        Some(ca) => {
            let connector = tls_connector(ca, options)?;
            let name = server_name(options)?;
            let tls = connector.connect(name, tcp).await.map_err(|e| conn_error(format!("TLS: {e}")))?;
            exchange(tls, options, messages, &mut on_sent).await
        }
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    options: &SendOptions,
    messages: &[Outgoing],
    on_sent: &mut impl FnMut(&Sent),
) -> Result<Vec<Sent>, Error> {
    let conn_error = |reason: String| Error::Connection { to: options.to.clone(), reason };
    let (read_half, mut write_half) = tokio::io::split(stream);
    let mut acks = FramedRead::new(read_half, MllpCodec::new(16 * 1024 * 1024));
    let mut results = Vec::with_capacity(messages.len());
    let mut frame = BytesMut::new();
    for message in messages {
        frame.clear();
        MllpCodec::encode_frame(&message.bytes, &mut frame);
        write_half.write_all(&frame).await.map_err(|e| conn_error(e.to_string()))?;
        let answer = loop {
            match acks.next().await {
                Some(Ok(Frame::Message(ack))) => break ack,
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(conn_error(e.to_string())),
                None => return Err(conn_error("closed by the server before its ACK".into())),
            }
        };
        let control_id = Header::parse(&message.bytes)
            .map(|h| String::from_utf8_lossy(h.field(10)).into_owned())
            .unwrap_or_default();
        let sent = match read_ack(&answer) {
            Ok(summary) => Sent {
                file: message.file.clone(),
                control_id,
                code: summary.code,
                error_text: summary.error_text,
            },
            Err(e) => Sent {
                file: message.file.clone(),
                control_id,
                code: "??".into(),
                error_text: Some(format!("unreadable answer: {e}")),
            },
        };
        on_sent(&sent);
        results.push(sent);
    }
    let _ = write_half.shutdown().await;
    Ok(results)
}

fn server_name(options: &SendOptions) -> Result<ServerName<'static>, Error> {
    let host = match &options.server_name {
        Some(name) => name.clone(),
        None => match options.to.parse::<SocketAddr>() {
            Ok(addr) => addr.ip().to_string(),
            Err(_) => options.to.rsplit_once(':').map_or(options.to.clone(), |(h, _)| h.to_string()),
        },
    };
    ServerName::try_from(host).map_err(|e| Error::Tls(format!("server name: {e}")))
}

fn tls_connector(ca: &Path, options: &SendOptions) -> Result<tokio_rustls::TlsConnector, Error> {
    let tls = |what: &str, e: &dyn std::fmt::Display| Error::Tls(format!("{what}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| tls("--tls-ca", &e))? {
        roots.add(cert.map_err(|e| tls("--tls-ca", &e))?).map_err(|e| tls("--tls-ca", &e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| tls("protocol versions", &e))?
        .with_root_certificates(roots);
    let config = match (&options.client_cert, &options.client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| tls("--client-cert", &e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls("--client-cert", &e))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| tls("--client-key", &e))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| tls("client certificate", &e))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(Error::Tls("--client-cert and --client-key go together".into())),
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_with_several_messages_is_split_at_msh_lines() {
        let file = b"MSH|^~\\&|A\rPID|1\r\nMSH|^~\\&|B\nPID|2\n\n\n";
        let msgs = split_messages(file);
        assert_eq!(msgs, vec![&b"MSH|^~\\&|A\rPID|1"[..], &b"MSH|^~\\&|B\nPID|2"[..]]);
    }

    #[test]
    fn a_directory_skips_notes_and_hidden_files_but_a_named_file_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.hl7"), "MSH|^~\\&|B\r").unwrap();
        std::fs::write(dir.path().join("a.hl7"), "MSH|^~\\&|A\r").unwrap();
        std::fs::write(dir.path().join("README.md"), "# samples\n").unwrap();
        std::fs::write(dir.path().join(".hidden"), "MSH|^~\\&|H\r").unwrap();
        let files: Vec<PathBuf> =
            collect(&[dir.path().to_path_buf()]).unwrap().into_iter().map(|m| m.file).collect();
        assert_eq!(files, vec![dir.path().join("a.hl7"), dir.path().join("b.hl7")]);
        let named = collect(&[dir.path().join("README.md")]).unwrap();
        assert_eq!(named.len(), 1);
    }

    #[test]
    fn a_file_without_msh_is_sent_whole_and_blank_is_nothing() {
        assert_eq!(split_messages(b"garbage\n"), vec![&b"garbage"[..]]);
        assert!(split_messages(b"\n\r\n").is_empty());
    }
}
