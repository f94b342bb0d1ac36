//! Item 4: MLLP over TLS and mutual TLS, with certificates made at run time (rcgen). The ANS samples get AA
//! over TLS; a plain client is refused on the TLS port; TLS 1.2 and 1.3 are served and older versions
//! refused; under mTLS a client without a certificate, with an untrusted one or with an unlisted one is
//! refused before any message is read, and a listed one (by CN or by SAN) is served.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::harness::*;

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
}

impl TestCa {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa { issuer: Issuer::new(params, key), pem }
    }

    /// A leaf certificate signed by this CA: (certificate PEM, key PEM).
    pub fn leaf(&self, common_name: &str, sans: &[&str]) -> (String, String) {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// The files of a TLS test setup, in a temporary directory.
pub struct TlsFiles {
    dir: tempfile::TempDir,
    /// The CA whose clients the server trusts under mutual TLS.
    pub client_ca: TestCa,
}

impl TlsFiles {
    /// A server CA and certificate (`localhost`, `127.0.0.1`) and a client CA, written as PEM files.
    pub fn new() -> TlsFiles {
        let dir = tempfile::tempdir().unwrap();
        let server_ca = TestCa::new("Relais test server CA");
        let client_ca = TestCa::new("GHT test DPI CA");
        let (cert, key) = server_ca.leaf("relais.test", &["localhost", "127.0.0.1"]);
        std::fs::write(dir.path().join("server.pem"), cert).unwrap();
        std::fs::write(dir.path().join("server.key"), key).unwrap();
        std::fs::write(dir.path().join("server-ca.pem"), &server_ca.pem).unwrap();
        std::fs::write(dir.path().join("client-ca.pem"), &client_ca.pem).unwrap();
        TlsFiles { dir, client_ca }
    }

    /// A path in the temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a client certificate signed by `ca` as `<name>.pem` / `<name>.key`; returns both paths.
    pub fn client(&self, ca: &TestCa, name: &str, common_name: &str, sans: &[&str]) -> (PathBuf, PathBuf) {
        let (cert, key) = ca.leaf(common_name, sans);
        let (cert_path, key_path) = (self.path(&format!("{name}.pem")), self.path(&format!("{name}.key")));
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        (cert_path, key_path)
    }

    /// The `[mllp.tls]` table: TLS on `127.0.0.1:0`, mutual when `mutual`, with `allowed` clients.
    pub fn config(&self, mutual: bool, allowed: &[&str]) -> String {
        let mut toml = format!(
            "[mllp.tls]\nlisten = \"127.0.0.1:0\"\ncert = {:?}\nkey = {:?}\n",
            self.path("server.pem"),
            self.path("server.key")
        );
        if mutual {
            toml.push_str(&format!("client_ca = {:?}\n", self.path("client-ca.pem")));
            toml.push_str(&format!("allowed_clients = {allowed:?}\n"));
        }
        toml
    }
}

/// A rustls client trusting `server_ca`, presenting `client` (certificate and key files) when given, and
/// speaking only `versions`.
pub fn client_config(
    server_ca: &Path,
    client: Option<(&Path, &Path)>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(server_ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert).unwrap().map(Result::unwrap).collect();
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(key).unwrap()).unwrap()
        }
    };
    Arc::new(config)
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connects with TLS (handshake driven by the first write or read).
pub fn tls_client(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> MllpClient<TlsStream> {
    let socket = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    socket.set_write_timeout(Some(TIMEOUT)).unwrap();
    let connection =
        rustls::ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    MllpClient::over(rustls::StreamOwned::new(connection, socket))
}

/// Sends one message over TLS and returns the ACK, or why none came (refused handshake, closed connection).
pub fn tls_exchange(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    message: &[u8],
) -> Result<Ack, String> {
    use std::io::Write;
    let mut client = tls_client(addr, config);
    client.stream().write_all(&frame(message)).map_err(|e| format!("write: {e}"))?;
    client.stream().flush().map_err(|e| format!("flush: {e}"))?;
    client.try_read_frame().map(|f| Ack::parse(&f)).ok_or_else(|| "closed without an answer".to_string())
}

const BOTH: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The ANS samples over TLS get AA (journaled with transport `mllp_tls`); TLS 1.2 and 1.3 clients are both
/// served; a plain MLLP client on the TLS port gets no answer and nothing is journaled for it.
#[test]
fn tls_serves_the_samples_and_refuses_plain_mllp() {
    let files = TlsFiles::new();
    let config = client_config(&files.path("server-ca.pem"), None, BOTH);
    // Two samples share MSH-4 + MSH-10: every group but the last goes to its own server first.
    let mut groups = groups_without_shared_control_ids(&samples_in("ans"));
    let last = groups.pop().expect("samples");
    for group in &groups {
        let relais = Relais::start_with_config(&files.config(false, &[]), &[]);
        for file in group {
            let message = std::fs::read(file).unwrap();
            let ack = tls_exchange(relais.mllp_tls_addr(), config.clone(), &message)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert_eq!(ack.code(), "AA", "{}", file.display());
        }
        assert_eq!(relais.stats()["journaled"], group.len() as u64);
    }
    let relais = Relais::start_with_config(&files.config(false, &[]), &[]);
    let addr = relais.mllp_tls_addr();
    let mut sent = 0;
    for file in &last {
        let message = std::fs::read(file).unwrap();
        let ack = tls_exchange(addr, config.clone(), &message)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(
            (ack.code(), ack.acked_id()),
            ("AA".to_string(), msh_field(&message, 10)),
            "{}",
            file.display()
        );
        sent += 1;
    }
    for (version, name) in [(&rustls::version::TLS12, "TLS1.2"), (&rustls::version::TLS13, "TLS1.3")] {
        let only = client_config(&files.path("server-ca.pem"), None, &[version]);
        let ack = tls_exchange(addr, only, &adt(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(ack.code(), "AA", "{name}");
        sent += 1;
    }
    let listed = relais.messages("", 100);
    assert_eq!(listed.len(), sent);
    assert!(listed.iter().all(|m| m["transport"] == "mllp_tls"));

    let mut plain = MllpClient::connect(addr);
    plain.send(&adt("PLAIN"));
    assert_eq!(plain.try_read_frame(), None, "a plain client gets no MLLP answer on the TLS port");
    assert_eq!(relais.stats()["journaled"], sent as u64, "nothing journaled for the plain client");
    assert_eq!(
        Ack::parse(&mllp_send(relais.mllp_addr(), &adt("PLAIN-PORT"))).code(),
        "AA",
        "plain port still works"
    );
}

/// TLS 1.1 and 1.0 are refused by the server itself (a fatal TLS alert), while the same `openssl`
/// client completes a TLS 1.2 handshake: the refusal is the server's, not the client's.
#[test]
fn tls_older_than_1_2_is_refused() {
    let files = TlsFiles::new();
    let relais = Relais::start_with_config(&files.config(false, &[]), &[]);
    let connect = relais.mllp_tls_addr().to_string();
    let s_client = |version: &str| {
        let output = std::process::Command::new("openssl")
            .args(["s_client", "-connect", &connect, version, "-cipher", "DEFAULT@SECLEVEL=0", "-CAfile"])
            .arg(files.path("server-ca.pem"))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl (scripts/setup.d/10-openssl.sh installs it)");
        let text =
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.success(), text)
    };
    let (ok, text) = s_client("-tls1_2");
    assert!(ok && text.contains("TLSv1.2"), "TLS 1.2 handshake: {text}");
    for version in ["-tls1_1", "-tls1"] {
        let (ok, text) = s_client(version);
        assert!(!ok, "{version} accepted: {text}");
        // rustls answers a ClientHello without TLS 1.2+ with a fatal alert (handshake_failure, 40).
        assert!(text.contains("SSL alert number"), "{version}: the server answers with an alert: {text}");
    }
}

/// Mutual TLS with an allowlist: no certificate, an untrusted one and an unlisted one are refused without an
/// answer or a journal entry; listed ones (by CN, by DNS SAN) are served.
#[test]
fn mutual_tls_allowlist() {
    let files = TlsFiles::new();
    let relais = Relais::start_with_config(&files.config(true, &["CN=dpi-1", "DNS:gam.chu-x.example"]), &[]);
    let addr = relais.mllp_tls_addr();
    let ca = files.path("server-ca.pem");
    let (listed_cert, listed_key) = files.client(&files.client_ca, "listed", "dpi-1", &[]);
    let (san_cert, san_key) = files.client(&files.client_ca, "by-san", "gam", &["gam.chu-x.example"]);
    let (unlisted_cert, unlisted_key) =
        files.client(&files.client_ca, "unlisted", "dpi-2", &["dpi-2.example"]);
    let rogue_ca = TestCa::new("Rogue CA");
    let (rogue_cert, rogue_key) = files.client(&rogue_ca, "rogue", "dpi-1", &["gam.chu-x.example"]);

    let refused = [
        ("no certificate", client_config(&ca, None, BOTH)),
        ("unlisted certificate", client_config(&ca, Some((&unlisted_cert, &unlisted_key)), BOTH)),
        ("certificate from an untrusted CA", client_config(&ca, Some((&rogue_cert, &rogue_key)), BOTH)),
        (
            "unlisted certificate, TLS 1.2",
            client_config(&ca, Some((&unlisted_cert, &unlisted_key)), &[&rustls::version::TLS12]),
        ),
    ];
    for (what, config) in refused {
        let result = tls_exchange(addr, config, &adt("REFUSED"));
        assert!(result.is_err(), "{what}: served {:?}", result.map(|a| a.code()));
    }
    assert_eq!(relais.stats()["journaled"], 0, "nothing journaled for refused clients");

    let listed =
        tls_exchange(addr, client_config(&ca, Some((&listed_cert, &listed_key)), BOTH), &adt("LISTED"));
    assert_eq!(listed.expect("CN=dpi-1 is listed").code(), "AA");
    let by_san = tls_exchange(addr, client_config(&ca, Some((&san_cert, &san_key)), BOTH), &adt("BY-SAN"));
    assert_eq!(by_san.expect("DNS:gam.chu-x.example is listed").code(), "AA");
    let tls12 = client_config(&ca, Some((&listed_cert, &listed_key)), &[&rustls::version::TLS12]);
    assert_eq!(tls_exchange(addr, tls12, &adt("LISTED-12")).expect("TLS 1.2 client").code(), "AA");
    assert_eq!(accepted_ids(&relais, 10), ["LISTED-12", "BY-SAN", "LISTED"]);
}
