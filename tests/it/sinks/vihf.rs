//! The signed VIHF assertion, checked by the reference XML-DSig implementation: `xmlsec1` (XML Security
//! Library, installed by `scripts/setup.d/55-xmlsec1.sh`), alone and inside the SOAP envelope as sent; its
//! canonical form checked by `xmllint --exc-c14n`.

use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use relais::sinks::ebrim::Submission;
use relais::sinks::iti41::build_request;
use relais::sinks::vihf::{Vihf, VihfConfig};

const ID_ATTR: &str = "urn:oasis:names:tc:SAML:2.0:assertion:Assertion";

/// A *certificat de cachet* made at test time: an RSA key (openssl: ring, rcgen's backend, cannot generate
/// RSA keys) and its certificate signed by a test CA (rcgen), as PEM files.
pub struct Cachet {
    dir: tempfile::TempDir,
    /// The CA that signed the certificate.
    pub ca: PathBuf,
    /// The RSA key, PKCS#8 PEM.
    pub key: PathBuf,
    /// The same key, PKCS#1 PEM (`RSA PRIVATE KEY`).
    pub key_pkcs1: PathBuf,
    /// The certificate.
    pub cert: PathBuf,
}

impl Cachet {
    pub fn new() -> Cachet {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("cachet.key");
        let key_pkcs1 = dir.path().join("cachet-pkcs1.key");
        openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"], &key);
        openssl(&["pkey", "-traditional", "-in", key.to_str().unwrap(), "-out"], &key_pkcs1);
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "Relais test IGC");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "CH Test cachet");
        params.distinguished_name.push(DnType::OrganizationName, "CH Test");
        let pem = std::fs::read_to_string(&key).unwrap();
        let key_pair = KeyPair::from_pkcs8_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).unwrap();
        let cert = params.signed_by(&key_pair, &ca).unwrap();
        let ca_path = dir.path().join("ca.pem");
        let cert_path = dir.path().join("cachet.pem");
        std::fs::write(&ca_path, ca.pem()).unwrap();
        std::fs::write(&cert_path, cert.pem()).unwrap();
        Cachet { dir, ca: ca_path, key, key_pkcs1, cert: cert_path }
    }

    /// A file in the cachet's temporary folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn openssl(args: &[&str], out: &Path) {
    let status = Command::new("openssl").args(args).arg(out).output().expect("openssl (scripts/setup.d)");
    assert!(status.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&status.stderr));
}

/// `xmlsec1 --verify` of `file`, the key taken from `cert` (`--pubkey-cert-pem`), or, with `trusted`, from
/// the signature's own `KeyInfo` certificate checked against that CA (`--trusted-pem`). `Ok` holds the output.
pub fn xmlsec1_verify(file: &Path, cert: Option<&Path>, trusted: Option<&Path>) -> Result<String, String> {
    let mut cmd = Command::new("xmlsec1");
    cmd.arg("--verify");
    if let Some(cert) = cert {
        cmd.arg("--pubkey-cert-pem").arg(cert);
    }
    if let Some(ca) = trusted {
        cmd.arg("--trusted-pem").arg(ca);
    }
    let out = cmd.args(["--id-attr:ID", ID_ATTR]).arg(file).output().expect("xmlsec1 (scripts/setup.d)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() && text.lines().any(|l| l == "OK") { Ok(text) } else { Err(text) }
}

fn config(cachet: &Cachet) -> VihfConfig {
    VihfConfig {
        issuer: "CN=CH Test cachet,O=CH Test".into(),
        subject_id: "801234567897".into(),
        subject_name: "Plateforme documentaire CH Test".into(),
        structure_id: "1530000000".into(),
        roles: vec!["10^1.2.250.1.213.1.1.5.5^Médecin".into()],
        homologation: "HOMOLOGATION-TEST".into(),
        signing_key: Some(cachet.key.clone()),
        signing_cert: Some(cachet.cert.clone()),
        ..VihfConfig::default()
    }
}

fn exc_c14n(file: &Path) -> String {
    let out = Command::new("xmllint").arg("--exc-c14n").arg(file).output().expect("xmllint");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn xpath_string(file: &Path, xpath: &str) -> String {
    let out =
        Command::new("xmllint").args(["--xpath", &format!("string({xpath})")]).arg(file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    text.strip_suffix('\n').map(str::to_string).unwrap_or(text)
}

#[test]
fn signed_assertion_verifies_with_xmlsec1_and_a_tampered_copy_does_not() {
    let cachet = Cachet::new();
    let vihf = Vihf::new(&config(&cachet)).unwrap();
    assert!(vihf.is_signed());
    let ins = "279035121518989^^^&1.2.250.1.213.1.4.8&ISO^NH";
    let xml = vihf.assertion(ins, jiff::Timestamp::now()).unwrap();
    let file = cachet.path("assertion.xml");
    std::fs::write(&file, &xml).unwrap();

    // The brief's command: the key from the certificate file.
    xmlsec1_verify(&file, Some(&cachet.cert), None).unwrap_or_else(|e| panic!("xmlsec1 refused: {e}\n{xml}"));
    // The key from the signature's KeyInfo, its certificate chained to the CA.
    xmlsec1_verify(&file, None, Some(&cachet.ca)).unwrap_or_else(|e| panic!("KeyInfo: {e}"));
    // The signature sits right after the Issuer (SAML schema order).
    let issuer_end = xml.find("</saml2:Issuer>").unwrap() + "</saml2:Issuer>".len();
    assert!(xml[issuer_end..].starts_with("<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\">"));
    // The signed document is its own exclusive canonical form.
    assert_eq!(exc_c14n(&file), xml);

    // One attribute value changed: the validity extended by an hour.
    let until = xml.split("NotOnOrAfter=\"").nth(1).unwrap().split('"').next().unwrap();
    let later = until.parse::<jiff::Timestamp>().unwrap() + jiff::SignedDuration::from_hours(1);
    let tampered = xml.replacen(until, &later.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(), 1);
    assert_ne!(tampered, xml);
    let bad = cachet.path("tampered.xml");
    std::fs::write(&bad, &tampered).unwrap();
    let err = xmlsec1_verify(&bad, Some(&cachet.cert), None).unwrap_err();
    assert!(err.contains("FAIL"), "{err}");
    // Another patient's INS in place of the signed one.
    std::fs::write(&bad, xml.replace("279035121518989", "279035121518990")).unwrap();
    assert!(xmlsec1_verify(&bad, Some(&cachet.cert), None).is_err());
    // A certificate that did not sign it.
    let other = Cachet::new();
    assert!(xmlsec1_verify(&file, Some(&other.cert), None).is_err());

    // The PKCS#1 form of the same key signs just as well.
    let pkcs1 = VihfConfig { signing_key: Some(cachet.key_pkcs1.clone()), ..config(&cachet) };
    std::fs::write(&file, Vihf::new(&pkcs1).unwrap().assertion(ins, jiff::Timestamp::now()).unwrap())
        .unwrap();
    xmlsec1_verify(&file, Some(&cachet.cert), None).unwrap_or_else(|e| panic!("PKCS#1 key: {e}"));
}

#[test]
fn signed_envelope_as_sent_verifies_in_place() {
    let cachet = Cachet::new();
    let vihf = Vihf::new(&config(&cachet)).unwrap();
    let submission = Submission::new(super::ldl_document(), super::params(), jiff::Timestamp::now());
    let request =
        build_request(&submission, "https://dmp.test/repository", &vihf, jiff::Timestamp::now()).unwrap();
    // The root MIME part: the SOAP envelope, exactly as sent.
    let body = String::from_utf8_lossy(&request.body).into_owned();
    let start = body.find("<?xml").unwrap();
    let end = body.find("</soap:Envelope>").unwrap() + "</soap:Envelope>".len();
    let envelope = &body[start..end];
    assert!(envelope.contains("<wsse:Security") && envelope.contains("<ds:SignatureValue>"));
    let file = cachet.path("envelope.xml");
    std::fs::write(&file, envelope).unwrap();
    xmlsec1_verify(&file, Some(&cachet.cert), None).unwrap_or_else(|e| panic!("envelope: {e}"));
    xmlsec1_verify(&file, None, Some(&cachet.ca)).unwrap_or_else(|e| panic!("envelope KeyInfo: {e}"));

    // The assertion's IssueInstant changed inside the envelope: refused.
    let instant = envelope.split("IssueInstant=\"").nth(1).unwrap().split('"').next().unwrap();
    let tampered =
        envelope.replacen(&format!("IssueInstant=\"{instant}\""), "IssueInstant=\"2020-01-01T00:00:00Z\"", 1);
    assert_ne!(tampered, envelope);
    std::fs::write(&file, tampered).unwrap();
    assert!(xmlsec1_verify(&file, Some(&cachet.cert), None).is_err());
}

#[test]
fn ins_and_names_with_markup_characters_and_accents_are_signed_and_read_back_unchanged() {
    let cachet = Cachet::new();
    let name = "Hôpital \"Saint-Éloi\" <Urgences> & Réa\tlits 1–4";
    let ins = "1 79 03 <51> & 215 189^^^&1.2.250.1.213.1.4.8&ISO^NH";
    let cfg = VihfConfig {
        subject_name: name.into(),
        issuer: "CN=Hôpital <A&B>,O=\"CH\"".into(),
        roles: vec!["10^1.2.250.1.213.1.1.5.5^Médecin \"spécialiste\" <SM26> & co\tgénéraliste".into()],
        ..config(&cachet)
    };
    let xml = Vihf::new(&cfg).unwrap().assertion(ins, jiff::Timestamp::now()).unwrap();
    assert!(xml.contains("Hôpital \"Saint-Éloi\" &lt;Urgences&gt; &amp; Réa\tlits 1–4"), "{xml}");
    assert!(
        xml.contains("displayName=\"Médecin &quot;spécialiste&quot; &lt;SM26> &amp; co&#x9;généraliste\"")
    );
    let file = cachet.path("escaped.xml");
    std::fs::write(&file, &xml).unwrap();
    xmlsec1_verify(&file, Some(&cachet.cert), None).unwrap_or_else(|e| panic!("xmlsec1 refused: {e}\n{xml}"));
    assert_eq!(exc_c14n(&file), xml);
    // What an XML reader sees is what was configured.
    let attr = |n: &str| format!("//*[local-name()='Attribute'][@Name='{n}']/*");
    assert_eq!(xpath_string(&file, &attr("urn:oasis:names:tc:xspa:1.0:subject:subject-id")), name);
    assert_eq!(xpath_string(&file, &attr("urn:oasis:names:tc:xacml:2.0:resource:resource-id")), ins);
    assert_eq!(xpath_string(&file, "//*[local-name()='Issuer']"), "CN=Hôpital <A&B>,O=\"CH\"");
    assert_eq!(
        xpath_string(&file, "//*[local-name()='Role']/@displayName"),
        "Médecin \"spécialiste\" <SM26> & co\tgénéraliste"
    );
}

#[test]
fn signing_files_are_checked_at_start_naming_the_key() {
    let cachet = Cachet::new();
    let other = Cachet::new();
    let err = |cfg: VihfConfig| Vihf::new(&cfg).unwrap_err().to_string();
    // A certificate of another key.
    let e = err(VihfConfig { signing_cert: Some(other.cert.clone()), ..config(&cachet) });
    assert!(e.starts_with("vihf.signing_cert `") && e.contains("does not match vihf.signing_key"), "{e}");
    // A missing key file.
    let missing = cachet.path("nope.key");
    let e = err(VihfConfig { signing_key: Some(missing.clone()), ..config(&cachet) });
    assert!(e.starts_with(&format!("vihf.signing_key `{}`", missing.display())), "{e}");
    // An EC key (the TLS client key of the other tests) is not a cachet key.
    let pki = super::pki::Pki::new();
    let e = err(VihfConfig { signing_key: Some(pki.client_key.clone()), ..config(&cachet) });
    assert!(e.starts_with("vihf.signing_key") && e.contains("not an RSA key"), "{e}");
    // A certificate file without a certificate.
    let e = err(VihfConfig { signing_cert: Some(cachet.key.clone()), ..config(&cachet) });
    assert!(e.starts_with("vihf.signing_cert") && e.contains("no CERTIFICATE"), "{e}");
}
