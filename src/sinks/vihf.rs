//! The VIHF: the SAML 2.0 assertion the DMP reads from the WS-Security header of each ITI-41 request, built
//! from [`VihfConfig`] and the patient's INS, and signed with the structure's *certificat de cachet*.
//!
//! It receives the configuration (once, [`Vihf::new`] reads the PEM key and certificate) and, per request,
//! the INS; it hands [`crate::sinks::iti41`] the assertion as UTF-8 XML to put in `wsse:Security` verbatim.
//!
//! **Canonical by construction.** No well-kept Rust crate does XML-DSig (`samael` binds the C libxmlsec1,
//! `xml-sec` calls itself an early pre-release), so the assertion is written directly in W3C Exclusive XML
//! Canonicalization 1.0 form: each element declares exactly the namespaces it visibly uses that no output
//! ancestor already declared, namespace declarations then attributes in canonical order, `<a></a>` for empty
//! elements, no whitespace between elements, c14n escaping (text: `&amp; &lt; &gt; &#xD;`; attributes:
//! `&amp; &lt; &quot; &#x9; &#xA; &#xD;`), characters XML 1.0 forbids dropped. Re-canonicalizing what is
//! written therefore gives the very bytes that were hashed, wherever the assertion is embedded (exclusive
//! c14n ignores the SOAP ancestors' namespaces).
//!
//! **The signature** (when `signing_key` and `signing_cert` are set): enveloped XML-DSig, `ds:Signature` right
//! after `saml2:Issuer` (SAML schema order), one Reference to `#<Assertion ID>` with the enveloped-signature
//! and exclusive c14n transforms, SHA-256 digest, RSA-SHA256 (PKCS#1 v1.5, ring) over the canonical
//! `ds:SignedInfo`, the certificate's DER in `KeyInfo/X509Data/X509Certificate`. Without them the assertion
//! is unsigned ([`Vihf::is_signed`]; `relais serve` warns at start): real DMP endpoints refuse it.
//!
//! Not here: the detached XAdES signature of the submission set (IHE DSG) some DMP profiles ask for.

use std::path::{Path, PathBuf};

use base64::Engine;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

const NS_SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
const NS_DS: &str = "http://www.w3.org/2000/09/xmldsig#";
const NS_HL7: &str = "urn:hl7-org:v3";
const NS_XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
const SAML: &[(&str, &str)] = &[("saml2", NS_SAML)];
const DS: &[(&str, &str)] = &[("ds", NS_DS)];

/// The VIHF content and signing material, from `sinks.<name>.vihf.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VihfConfig {
    /// `Issuer`: the subject DN of the structure's certificate (`X509SubjectName`).
    pub issuer: String,
    /// `Subject/NameID`: the person responsible for the automated processing (or the structure).
    pub subject_id: String,
    /// `subject-id`: that person's or service's name.
    pub subject_name: String,
    /// `Identifiant_Structure`: the structure's national id (`1` + FINESS).
    pub structure_id: String,
    /// `Secteur_Activite` (JDV_J61 code with its system, e.g. `SA01^1.2.250.1.71.4.2.4`).
    pub sector: String,
    /// `subject:role` values as `code^system^display` (JDV_J65; doctors need a second, the specialty).
    pub roles: Vec<String>,
    /// `Authentification_Mode` (`INDIRECTE` for a platform).
    pub auth_mode: String,
    /// `VIHF_Version` (`3.0`).
    pub version: String,
    /// `AuthnContextClassRef`.
    pub authn_context: String,
    /// `LPS_Nom`.
    pub software_name: String,
    /// `LPS_Version`.
    pub software_version: String,
    /// `LPS_ID_HOMOLOGATION_DMP`.
    pub homologation: String,
    /// PEM RSA private key of the *certificat de cachet* (PKCS#8 or PKCS#1); with `signing_cert`.
    pub signing_key: Option<PathBuf>,
    /// PEM certificate matching `signing_key`, sent in `KeyInfo`; with `signing_key`.
    pub signing_cert: Option<PathBuf>,
}

impl Default for VihfConfig {
    fn default() -> Self {
        VihfConfig {
            issuer: String::new(),
            subject_id: String::new(),
            subject_name: String::new(),
            structure_id: String::new(),
            sector: "SA01^1.2.250.1.71.4.2.4".into(),
            roles: Vec::new(),
            auth_mode: "INDIRECTE".into(),
            version: "3.0".into(),
            authn_context: "urn:oasis:names:tc:SAML:2.0:ac:classes:TLSClient".into(),
            software_name: "Relais".into(),
            software_version: env!("CARGO_PKG_VERSION").into(),
            homologation: String::new(),
            signing_key: None,
            signing_cert: None,
        }
    }
}

impl VihfConfig {
    /// Checks values without I/O; the error is (dotted key under `sinks.dmp`, reason).
    pub fn check(&self) -> Result<(), (String, String)> {
        if self.structure_id.is_empty() {
            return Err(("sinks.dmp.vihf.structure_id".into(), "required".into()));
        }
        match (&self.signing_key, &self.signing_cert) {
            (Some(_), None) => {
                Err(("sinks.dmp.vihf.signing_cert".into(), "required with signing_key".into()))
            }
            (None, Some(_)) => {
                Err(("sinks.dmp.vihf.signing_key".into(), "required with signing_cert".into()))
            }
            _ => Ok(()),
        }
    }
}

/// Why the VIHF could not be built or signed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A signing file could not be used; `key` is the configuration key under the sink (`vihf.signing_key`).
    #[error("{key} `{path}`: {reason}")]
    File {
        /// The configuration key naming the file.
        key: &'static str,
        /// Its path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The RSA signature could not be computed (ring reports no detail).
    #[error("VIHF: RSA signing failed")]
    Sign,
}

/// The signing material: the cachet's RSA key and its certificate (DER), read once.
pub struct Signer {
    key: RsaKeyPair,
    cert_der: Vec<u8>,
    rng: ring::rand::SystemRandom,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("modulus_bits", &(self.key.public().modulus_len() * 8)).finish()
    }
}

impl Signer {
    /// Reads a PEM RSA key (PKCS#8 or PKCS#1) and the PEM certificate whose public key it matches (the first
    /// certificate of the file).
    pub fn load(key_path: &Path, cert_path: &Path) -> Result<Signer, Error> {
        let key_err = |reason: String| Error::File {
            key: "vihf.signing_key",
            path: key_path.display().to_string(),
            reason,
        };
        let cert_err = |reason: String| Error::File {
            key: "vihf.signing_cert",
            path: cert_path.display().to_string(),
            reason,
        };
        const NOT_RSA: &str = "not an RSA key (the certificat de cachet is RSA)";
        let key = match PrivateKeyDer::from_pem_file(key_path).map_err(|e| key_err(e.to_string()))? {
            PrivateKeyDer::Pkcs8(der) => RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(der) => RsaKeyPair::from_der(der.secret_pkcs1_der()),
            _ => return Err(key_err(NOT_RSA.into())),
        }
        .map_err(|e| match e.to_string().as_str() {
            "WrongAlgorithm" => key_err(NOT_RSA.into()),
            other => key_err(format!("not a usable RSA key: {other}")),
        })?;
        let cert_der = CertificateDer::pem_file_iter(cert_path)
            .map_err(|e| cert_err(e.to_string()))?
            .next()
            .ok_or_else(|| cert_err("no CERTIFICATE block".into()))?
            .map_err(|e| cert_err(e.to_string()))?
            .to_vec();
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| cert_err(format!("not X.509: {e}")))?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public().as_ref() {
            return Err(cert_err("its public key does not match vihf.signing_key".into()));
        }
        if !cert.validity().is_valid() {
            tracing::warn!(
                not_after = %cert.validity().not_after,
                "vihf.signing_cert is outside its validity period: the DMP will refuse the VIHF"
            );
        }
        Ok(Signer { key, cert_der, rng: ring::rand::SystemRandom::new() })
    }

    fn sign(&self, data: &[u8]) -> Result<Vec<u8>, Error> {
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key.sign(&RSA_PKCS1_SHA256, &self.rng, data, &mut signature).map_err(|_| Error::Sign)?;
        Ok(signature)
    }
}

/// Builds VIHF assertions: the configuration and, when configured, the [`Signer`].
#[derive(Debug)]
pub struct Vihf {
    cfg: VihfConfig,
    signer: Option<Signer>,
}

impl Vihf {
    /// Reads the signing files when `signing_key` / `signing_cert` are set (checked with [`VihfConfig::check`]).
    pub fn new(cfg: &VihfConfig) -> Result<Vihf, Error> {
        let signer = match (&cfg.signing_key, &cfg.signing_cert) {
            (Some(key), Some(cert)) => Some(Signer::load(key, cert)?),
            (None, None) => None,
            (None, Some(cert)) => {
                return Err(Error::File {
                    key: "vihf.signing_key",
                    path: cert.display().to_string(),
                    reason: "required with signing_cert".into(),
                });
            }
            (Some(key), None) => {
                return Err(Error::File {
                    key: "vihf.signing_cert",
                    path: key.display().to_string(),
                    reason: "required with signing_key".into(),
                });
            }
        };
        Ok(Vihf { cfg: cfg.clone(), signer })
    }

    /// Whether assertions carry a signature.
    pub fn is_signed(&self) -> bool {
        self.signer.is_some()
    }

    /// The assertion for a patient whose INS is `ins_cx` (CX form), issued at `now`, valid 5 minutes; signed
    /// when a signer is configured. Its bytes are its exclusive canonical form (module doc).
    pub fn assertion(&self, ins_cx: &str, now: jiff::Timestamp) -> Result<String, Error> {
        let id = format!("_{}", Uuid::new_v4().simple());
        let (unsigned, after_issuer) = write_assertion(&self.cfg, &id, ins_cx, now);
        let Some(signer) = &self.signer else { return Ok(unsigned) };
        let digest = ring::digest::digest(&ring::digest::SHA256, unsigned.as_bytes());
        let digest = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
        let mut signed_info = Canonical::default();
        write_signed_info(&mut signed_info, &id, &digest);
        let value = signer.sign(signed_info.out.as_bytes())?;
        let mut sig = Canonical::default();
        sig.start("ds:Signature", DS, &[]);
        write_signed_info(&mut sig, &id, &digest);
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        sig.leaf("ds:SignatureValue", DS, &[], &b64(&value));
        sig.start("ds:KeyInfo", DS, &[]);
        sig.start("ds:X509Data", DS, &[]);
        sig.leaf("ds:X509Certificate", DS, &[], &b64(&signer.cert_der));
        sig.end();
        sig.end();
        sig.end();
        let mut out = String::with_capacity(unsigned.len() + sig.out.len());
        out.push_str(&unsigned[..after_issuer]);
        out.push_str(&sig.out);
        out.push_str(&unsigned[after_issuer..]);
        Ok(out)
    }
}

/// The unsigned assertion in canonical form, and the byte offset right after `</saml2:Issuer>` where the
/// signature goes.
fn write_assertion(cfg: &VihfConfig, id: &str, ins_cx: &str, now: jiff::Timestamp) -> (String, usize) {
    let instant = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let until = (now + jiff::SignedDuration::from_secs(300)).strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let mut w = Canonical::default();
    w.start("saml2:Assertion", SAML, &[("ID", id), ("IssueInstant", &instant), ("Version", "2.0")]);
    w.leaf(
        "saml2:Issuer",
        SAML,
        &[("Format", "urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName")],
        &cfg.issuer,
    );
    let after_issuer = w.out.len();
    w.start("saml2:Subject", SAML, &[]);
    w.leaf(
        "saml2:NameID",
        SAML,
        &[("Format", "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified")],
        &cfg.subject_id,
    );
    w.end();
    w.leaf("saml2:Conditions", SAML, &[("NotBefore", &instant), ("NotOnOrAfter", &until)], "");
    w.start("saml2:AuthnStatement", SAML, &[("AuthnInstant", &instant)]);
    w.start("saml2:AuthnContext", SAML, &[]);
    w.leaf("saml2:AuthnContextClassRef", SAML, &[], &cfg.authn_context);
    w.end();
    w.end();
    w.start("saml2:AttributeStatement", SAML, &[]);
    let simple = [
        ("VIHF_Version", cfg.version.as_str()),
        ("Identifiant_Structure", cfg.structure_id.as_str()),
        ("Secteur_Activite", cfg.sector.as_str()),
        ("urn:oasis:names:tc:xspa:1.0:subject:subject-id", cfg.subject_name.as_str()),
        ("Authentification_Mode", cfg.auth_mode.as_str()),
        ("urn:oasis:names:tc:xacml:2.0:resource:resource-id", ins_cx),
        ("Ressource_URN", "urn:dmp"),
        ("urn:oasis:names:tc:xspa:1.0:subject:purposeofuse", "normal"),
        ("LPS_Nom", cfg.software_name.as_str()),
        ("LPS_Version", cfg.software_version.as_str()),
        ("LPS_ID_HOMOLOGATION_DMP", cfg.homologation.as_str()),
    ];
    for (name, value) in simple {
        w.start("saml2:Attribute", SAML, &[("Name", name)]);
        w.leaf("saml2:AttributeValue", SAML, &[], value);
        w.end();
    }
    if !cfg.roles.is_empty() {
        w.start("saml2:Attribute", SAML, &[("Name", "urn:oasis:names:tc:xacml:2.0:subject:role")]);
        for role in &cfg.roles {
            let mut parts = role.splitn(3, '^');
            let code = parts.next().unwrap_or_default();
            let system = parts.next().unwrap_or_default();
            let display = parts.next().unwrap_or_default();
            w.start("saml2:AttributeValue", SAML, &[]);
            w.leaf(
                "Role",
                &[("", NS_HL7), ("xsi", NS_XSI)],
                &[("code", code), ("codeSystem", system), ("displayName", display), ("xsi:type", "CE")],
                "",
            );
            w.end();
        }
        w.end();
    }
    w.end();
    w.end();
    (w.out, after_issuer)
}

fn write_signed_info(w: &mut Canonical, id: &str, digest_b64: &str) {
    let uri = format!("#{id}");
    w.start("ds:SignedInfo", DS, &[]);
    w.leaf("ds:CanonicalizationMethod", DS, &[("Algorithm", EXC_C14N)], "");
    w.leaf("ds:SignatureMethod", DS, &[("Algorithm", RSA_SHA256)], "");
    w.start("ds:Reference", DS, &[("URI", &uri)]);
    w.start("ds:Transforms", DS, &[]);
    w.leaf("ds:Transform", DS, &[("Algorithm", ENVELOPED)], "");
    w.leaf("ds:Transform", DS, &[("Algorithm", EXC_C14N)], "");
    w.end();
    w.leaf("ds:DigestMethod", DS, &[("Algorithm", SHA256)], "");
    w.leaf("ds:DigestValue", DS, &[], digest_b64);
    w.end();
    w.end();
}

/// An XML writer whose output is its own exclusive canonical form (W3C xml-exc-c14n, no comments).
///
/// Each element names the namespaces it visibly uses (its prefix and its attributes' prefixes; `""` for the
/// default namespace); a declaration is rendered only when no open ancestor rendered the same binding.
#[derive(Default)]
struct Canonical {
    out: String,
    /// Open elements: name and the (prefix, uri) bindings they rendered.
    open: Vec<(&'static str, Vec<(&'static str, &'static str)>)>,
}

impl Canonical {
    fn bound(&self, prefix: &str) -> Option<&'static str> {
        self.open.iter().rev().flat_map(|(_, ns)| ns.iter()).find(|(p, _)| *p == prefix).map(|(_, u)| *u)
    }

    fn start(&mut self, name: &'static str, uses: &[(&'static str, &'static str)], attrs: &[(&str, &str)]) {
        let mut rendered: Vec<(&'static str, &'static str)> = Vec::new();
        let mut uses = uses.to_vec();
        uses.sort_by_key(|(prefix, _)| *prefix);
        for (prefix, uri) in uses {
            let inherited = self.bound(prefix).unwrap_or("");
            if inherited != uri {
                rendered.push((prefix, uri));
            }
        }
        // Attributes: by namespace URI (none first), then local name.
        let mut sorted: Vec<(&str, &str, &str, &str)> = attrs
            .iter()
            .map(|(qname, value)| match qname.split_once(':') {
                Some((prefix, local)) => {
                    let uri = rendered
                        .iter()
                        .find(|(p, _)| *p == prefix)
                        .map(|(_, u)| *u)
                        .or_else(|| self.bound(prefix));
                    debug_assert!(uri.is_some(), "attribute prefix `{prefix}` of `{name}` is not declared");
                    let uri = uri.unwrap_or(prefix);
                    (uri, local, *qname, *value)
                }
                None => ("", *qname, *qname, *value),
            })
            .collect();
        sorted.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        self.out.push('<');
        self.out.push_str(name);
        for (prefix, uri) in &rendered {
            self.out.push_str(" xmlns");
            if !prefix.is_empty() {
                self.out.push(':');
                self.out.push_str(prefix);
            }
            self.out.push_str("=\"");
            escape(&mut self.out, uri, true);
            self.out.push('"');
        }
        for (_, _, qname, value) in sorted {
            self.out.push(' ');
            self.out.push_str(qname);
            self.out.push_str("=\"");
            escape(&mut self.out, value, true);
            self.out.push('"');
        }
        self.out.push('>');
        self.open.push((name, rendered));
    }

    fn text(&mut self, text: &str) {
        escape(&mut self.out, text, false);
    }

    fn end(&mut self) {
        if let Some((name, _)) = self.open.pop() {
            self.out.push_str("</");
            self.out.push_str(name);
            self.out.push('>');
        }
    }

    fn leaf(
        &mut self,
        name: &'static str,
        uses: &[(&'static str, &'static str)],
        attrs: &[(&str, &str)],
        text: &str,
    ) {
        self.start(name, uses, attrs);
        self.text(text);
        self.end();
    }
}

/// c14n escaping of text (`attribute = false`) or of an attribute value; drops characters XML 1.0 forbids.
fn escape(out: &mut String, s: &str, attribute: bool) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' if !attribute => out.push_str("&gt;"),
            '"' if attribute => out.push_str("&quot;"),
            '\t' if attribute => out.push_str("&#x9;"),
            '\n' if attribute => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            '\t' | '\n' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..=char::MAX => {
                out.push(c)
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> VihfConfig {
        VihfConfig {
            issuer: "CN=cachet,O=CH Test".into(),
            subject_name: "Service \"DIM\" <Laval> & Mayenne\tÉtage\r\n2".into(),
            structure_id: "1530000000".into(),
            roles: vec!["10^1.2.250.1.213.1.1.5.5^Médecin \"généraliste\" <MG> & co\t".into()],
            ..VihfConfig::default()
        }
    }

    #[test]
    fn signing_key_and_certificate_go_together() {
        let mut cfg = config();
        assert!(cfg.check().is_ok());
        cfg.signing_key = Some("key.pem".into());
        assert_eq!(cfg.check().unwrap_err().0, "sinks.dmp.vihf.signing_cert");
        cfg.signing_cert = Some("cert.pem".into());
        assert!(cfg.check().is_ok());
        cfg.signing_key = None;
        assert_eq!(cfg.check().unwrap_err().0, "sinks.dmp.vihf.signing_key");
        let err = Vihf::new(&cfg).unwrap_err().to_string();
        assert!(err.starts_with("vihf.signing_key `cert.pem`"), "{err}");
        cfg.structure_id.clear();
        assert_eq!(cfg.check().unwrap_err().0, "sinks.dmp.vihf.structure_id");
    }

    #[test]
    fn signing_files_come_from_the_config_file_or_the_environment() {
        use crate::config::Settings;
        use crate::sinks::SinkConfig;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("relais.toml");
        std::fs::write(
            &file,
            "[sinks.dmp-ght]\nkind = \"dmp\"\nendpoint = \"https://dmp.test/repository\"\nca = \"ca.pem\"\n\
             source_id = \"1.2.250.1.999.3\"\n[sinks.dmp-ght.vihf]\nstructure_id = \"1530000000\"\n\
             signing_key = \"/etc/relais/cachet.key\"\n",
        )
        .unwrap();
        // The key alone is refused, naming the missing key.
        let err = Settings::load_from(Some(&file), Some(Default::default())).unwrap().check().unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration key `sinks.dmp-ght.vihf.signing_cert`: required with signing_key"
        );
        // The certificate from the environment completes it.
        let env =
            [("RELAIS__SINKS__DMP-GHT__VIHF__SIGNING_CERT".to_string(), "/etc/relais/cachet.pem".into())];
        let settings = Settings::load_from(Some(&file), Some(env.into_iter().collect())).unwrap();
        settings.check().unwrap();
        let SinkConfig::Dmp(dmp) = SinkConfig::from_settings("dmp-ght", &settings.sinks["dmp-ght"]).unwrap()
        else {
            panic!("not a dmp sink")
        };
        assert_eq!(dmp.vihf.signing_key.as_deref(), Some(Path::new("/etc/relais/cachet.key")));
        assert_eq!(dmp.vihf.signing_cert.as_deref(), Some(Path::new("/etc/relais/cachet.pem")));
    }

    #[test]
    fn unsigned_assertion_is_written_in_exclusive_canonical_form() {
        let vihf = Vihf::new(&config()).unwrap();
        assert!(!vihf.is_signed());
        let now = jiff::Timestamp::from_second(1_767_225_600).unwrap();
        let xml = vihf.assertion("2790351215189 <&> \u{1}é", now).unwrap();
        // The namespace is declared once, on the apex; attributes in canonical order; no empty-element tags.
        assert!(
            xml.starts_with("<saml2:Assertion xmlns:saml2=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"_")
        );
        assert_eq!(xml.matches("xmlns:saml2=").count(), 1);
        assert!(xml.contains(
            "<saml2:Conditions NotBefore=\"2026-01-01T00:00:00Z\" NotOnOrAfter=\"2026-01-01T00:05:00Z\">\
             </saml2:Conditions>"
        ));
        assert!(!xml.contains("/>"));
        assert!(!xml.contains(">\n<") && !xml.contains("> <"));
        // Text: & < > and CR escaped, quotes and tabs kept, the forbidden U+0001 dropped.
        assert!(xml.contains("<saml2:AttributeValue>2790351215189 &lt;&amp;&gt; é</saml2:AttributeValue>"));
        assert!(xml.contains(
            "<saml2:AttributeValue>Service \"DIM\" &lt;Laval&gt; &amp; Mayenne\tÉtage&#xD;\n2</saml2:AttributeValue>"
        ));
        // The HL7 Role: default namespace then xsi, unqualified attributes then xsi:type; attribute escaping.
        assert!(xml.contains(
            "<Role xmlns=\"urn:hl7-org:v3\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" code=\"10\" \
             codeSystem=\"1.2.250.1.213.1.1.5.5\" displayName=\"Médecin &quot;généraliste&quot; &lt;MG> &amp; co&#x9;\" \
             xsi:type=\"CE\"></Role>"
        ));
        // One fresh ID per assertion.
        assert_ne!(xml, vihf.assertion("2790351215189 <&> \u{1}é", now).unwrap());
    }

    #[test]
    fn a_default_namespace_is_undeclared_under_an_ancestor_that_set_one() {
        let mut w = Canonical::default();
        w.start("Role", &[("", NS_HL7)], &[]);
        w.leaf("plain", &[("", "")], &[], "");
        w.leaf("Role", &[("", NS_HL7)], &[], "");
        w.end();
        assert_eq!(w.out, "<Role xmlns=\"urn:hl7-org:v3\"><plain xmlns=\"\"></plain><Role></Role></Role>");
    }
}
