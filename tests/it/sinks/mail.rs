//! The MSSanté sink against a real SMTP server: aiosmtpd (PyPI, scripts/setup.d/50-aiosmtpd.sh) on
//! 127.0.0.1 with STARTTLS required and a certificate made at run time, writing a Maildir the test reads.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mail_parser::MimeHeaders;
use relais::sinks::ebrim::Submission;
use relais::sinks::mail::{
    self, Addressee, MailRequest, MaskingFlags, MssConfig, MssSender, Patient, SmtpTls,
};
use relais::sinks::retry::{self, Outcome, RetryPolicy};
use relais::sinks::xdm;

use super::pki::Pki;

/// The aiosmtpd interpreter: the venv of scripts/setup.d/50-aiosmtpd.sh (run here when missing).
fn python() -> PathBuf {
    let venv = std::env::var_os("RELAIS_AIOSMTPD_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/relais-aiosmtpd"));
    let py = venv.join("bin/python");
    if !py.exists() {
        let script = super::root().join("scripts/setup.d/50-aiosmtpd.sh");
        let ok = Command::new("sh").arg(script).status().map(|s| s.success()).unwrap_or(false);
        assert!(ok, "aiosmtpd missing: run scripts/setup.d/50-aiosmtpd.sh");
    }
    py
}

/// A running aiosmtpd, stopped (by its PID) when dropped.
pub struct Smtp {
    child: Child,
    maildir: PathBuf,
}

impl Smtp {
    pub fn start(port: u16, cert: &Path, key: &Path, maildir: &Path) -> Smtp {
        let child = Command::new(python())
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .arg("--tlscert")
            .arg(cert)
            .arg("--tlskey")
            .arg(key)
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("aiosmtpd starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "aiosmtpd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Smtp { child, maildir: maildir.to_path_buf() }
    }

    /// The raw mails received so far.
    pub fn mails(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for dir in ["new", "cur"] {
            if let Ok(entries) = std::fs::read_dir(self.maildir.join(dir)) {
                for e in entries.flatten() {
                    out.push(std::fs::read(e.path()).unwrap());
                }
            }
        }
        out
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed mail.
pub fn parse(raw: &[u8]) -> mail_parser::Message<'_> {
    mail_parser::MessageParser::default().parse(raw).expect("a mail")
}

pub use crate::ports::free_port;

pub fn mss_config(pki: &Pki, port: u16) -> MssConfig {
    MssConfig {
        host: "127.0.0.1".into(),
        port,
        tls: SmtpTls::Starttls,
        tls_name: Some("localhost".into()),
        ca: Some(pki.ca.clone()),
        from: "documents@ch-test.mssante.fr".into(),
        nil: "NIL-RELAIS-TEST".into(),
        timeout_secs: 5,
        ..MssConfig::default()
    }
}

fn request(flags: &[&str], pdf: bool) -> MailRequest {
    let mut doc = super::ldl_document();
    if pdf {
        doc.pdf = Some(b"%PDF-1.4 test".to_vec());
    }
    MailRequest {
        submission: Submission::new(doc, super::params(), jiff::Timestamp::now()),
        patient: Patient {
            family: "Test".into(),
            given: "Jeanne".into(),
            birth_date: "19790321".into(),
            ins: Some("279035121518989".into()),
            ins_qualified: true,
        },
        professionals: vec!["medecin.traitant@test.mssante.fr".into(), "cardio@ch-test.mssante.fr".into()],
        flags: MaskingFlags::from_names(flags),
        body_ps: "Cher confrère, veuillez trouver ci-joint la lettre de liaison.".into(),
        body_patient: "Votre lettre de liaison est disponible.".into(),
        ack_requested: true,
    }
}

fn attachment<'a>(mail: &'a mail_parser::Message<'a>, name: &str) -> &'a [u8] {
    mail.attachments()
        .find(|a| a.attachment_name() == Some(name))
        .unwrap_or_else(|| panic!("attachment {name} missing"))
        .contents()
}

pub fn header(mail: &mail_parser::Message<'_>, name: &str) -> Option<String> {
    mail.header(name).and_then(|h| h.as_text()).map(|s| s.trim().to_string())
}

pub fn recipients(mail: &mail_parser::Message<'_>) -> Vec<String> {
    let mut to: Vec<String> = mail
        .to()
        .map(|a| a.iter().filter_map(|x| x.address().map(String::from)).collect())
        .unwrap_or_default();
    to.sort();
    to
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mails_reach_a_real_smtp_server_with_xdm_headers_and_masking() {
    let pki = Pki::new();
    let port = free_port();
    let maildir = tempfile::tempdir().unwrap();
    let smtp = Smtp::start(port, &pki.server_cert, &pki.server_key, &maildir.path().join("Maildir"));
    let cfg = mss_config(&pki, port);
    let sender = MssSender::new(&cfg).unwrap();

    // Professionals and patient: two mails.
    let req = request(&["DESTMSSANTEPS", "DESTMSSANTEPAT", "DESTDMP"], true);
    let mails = mail::build(&req, &cfg).unwrap();
    assert_eq!(mails.len(), 2);
    for m in &mails {
        assert_eq!(sender.send(m.message.as_ref().unwrap()).await, Outcome::Delivered, "{:?}", m.addressee);
    }
    let received = smtp.mails();
    assert_eq!(received.len(), 2);
    let parsed: Vec<mail_parser::Message> = received.iter().map(|r| parse(r)).collect();
    let ps = parsed.iter().find(|m| header(m, "X-MSS-MES").is_none()).expect("professionals' mail");
    let pat = parsed.iter().find(|m| header(m, "X-MSS-MES").is_some()).expect("patient's mail");

    assert_eq!(
        ps.subject().unwrap(),
        "XDM/1.0/DDM+Lettre de liaison à la sortie d'un établissement de soins TEST Jeanne 21/03/1979"
    );
    assert_eq!(recipients(ps), vec!["cardio@ch-test.mssante.fr", "medecin.traitant@test.mssante.fr"]);
    assert_eq!(recipients(pat), vec!["279035121518989@patient.mssante.fr"]);
    for m in [ps, pat] {
        assert_eq!(header(m, "X-MSS-CODECDA").as_deref(), Some("11490-0"));
        assert_eq!(header(m, "X-MSS-INS").as_deref(), Some("O"));
        assert_eq!(header(m, "X-MSS-NIL").as_deref(), Some("NIL-RELAIS-TEST"));
        assert_eq!(header(m, "Disposition-Notification-To").as_deref(), Some("documents@ch-test.mssante.fr"));
        assert_eq!(attachment(m, "DOC0001.PDF"), b"%PDF-1.4 test");
    }
    assert_eq!(header(pat, "X-MSS-MES").as_deref(), Some("FIN"));
    assert!(ps.body_text(0).unwrap().contains("Cher confrère"));

    // The XDM zip: the CDA intact, METADATA.XML valid against lcm.xsd.
    let mut archive = zip::ZipArchive::new(Cursor::new(attachment(ps, xdm::XDM_FILE_NAME).to_vec())).unwrap();
    let mut doc = Vec::new();
    archive.by_name(xdm::DOCUMENT_PATH).unwrap().read_to_end(&mut doc).unwrap();
    assert_eq!(doc, req.submission.document.content);
    let mut metadata = Vec::new();
    archive.by_name(xdm::METADATA_PATH).unwrap().read_to_end(&mut metadata).unwrap();
    let path = maildir.path().join("METADATA.XML");
    std::fs::write(&path, &metadata).unwrap();
    super::validate("ebRS/lcm.xsd", &path).unwrap_or_else(|e| panic!("METADATA.XML invalid: {e}"));

    // Masked to professionals, patient only: one mail, to the patient.
    let req = request(&["DESTMSSANTEPAT", "MASQUE_PS"], false);
    let mails = mail::build(&req, &cfg).unwrap();
    assert_eq!(mails.iter().map(|m| m.addressee).collect::<Vec<_>>(), vec![Addressee::Patient]);
    // Masked to professionals and addressed to them: refused, nothing sent.
    let err =
        mail::build(&request(&["DESTMSSANTEPS", "MASQUE_PS", "INVISIBLE_PATIENT"], false), &cfg).unwrap_err();
    assert_eq!(err.as_str(), "failed");
    assert!(err.reason().unwrap().contains("MASQUE_PS=Y"));
    // Unqualified INS: no patient mail, X-MSS-INS = N on the professionals' one.
    let mut req = request(&["DESTMSSANTEPS", "DESTMSSANTEPAT"], false);
    req.patient.ins_qualified = false;
    let mails = mail::build(&req, &cfg).unwrap();
    let patient_mail = mails.iter().find(|m| m.addressee == Addressee::Patient).unwrap();
    assert_eq!(patient_mail.message.as_ref().unwrap_err().as_str(), "undeliverable");
    let ps_mail = mails.iter().find(|m| m.addressee == Addressee::Professionals).unwrap();
    let raw = String::from_utf8(ps_mail.message.as_ref().unwrap().formatted()).unwrap();
    assert!(raw.contains("X-MSS-INS: N"));
    drop(smtp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_for_a_while_then_retried_and_delivered_once() {
    let pki = Pki::new();
    let port = free_port();
    let maildir = tempfile::tempdir().unwrap();
    let cfg = mss_config(&pki, port);
    let sender = MssSender::new(&cfg).unwrap();
    let req = request(&["DESTMSSANTEPS", "INVISIBLE_PATIENT"], false);
    let mails = mail::build(&req, &cfg).unwrap();
    let message = mails[0].message.as_ref().unwrap().clone();

    // Nobody listens yet: a transient outcome.
    assert_eq!(sender.send(&message).await.as_str(), "retry");

    // The server comes up 1.5 s later; the retry loop keeps trying and delivers.
    let box_path = maildir.path().join("Maildir");
    let starter = std::thread::spawn({
        let (cert, key) = (pki.server_cert.clone(), pki.server_key.clone());
        let box_path = box_path.clone();
        move || {
            std::thread::sleep(Duration::from_millis(1500));
            Smtp::start(port, &cert, &key, &box_path)
        }
    });
    let policy =
        RetryPolicy { initial_delay_ms: 200, max_delay_ms: 800, max_attempts: 30, ..RetryPolicy::default() };
    let (outcome, attempts) = retry::until_final(&policy, |_| sender.send(&message)).await;
    let smtp = starter.join().unwrap();
    assert_eq!(outcome, Outcome::Delivered);
    assert!(attempts >= 2, "delivered after {attempts} attempts");
    assert_eq!(smtp.mails().len(), 1, "delivered exactly once");
}
