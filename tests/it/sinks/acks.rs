//! End to end through the real binary, with real servers: business acknowledgements back to the DPI (an
//! ORU^R01 in by MLLP → aiosmtpd and the mTLS ITI-41 endpoint → ZAM^Z02 and ZAM^Z01 on a test MLLP listener,
//! then ZAM^Z03 once an MDN is posted to the MDN port), the PDF of a level-1 CDA beside `IHE_XDM.ZIP`, and a
//! death in the emergency department notified once, as a death.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use mail_parser::MimeHeaders;

use super::mail::{Smtp, free_port, parse, recipients};
use super::pki::Pki;
use crate::harness::{Relais, mllp_send, with_msh_field};

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(super::root().join("test-messages/acks").join(name)).unwrap()
}

/// A DPI's business-ack listener: takes MLLP frames, keeps each message, answers AA. Runs until the test ends.
struct Dpi {
    received: Arc<Mutex<Vec<String>>>,
}

impl Dpi {
    fn start_on(port: u16) -> Dpi {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let seen = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    loop {
                        let Ok(n) = stream.read(&mut chunk) else { return };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(2).position(|w| w == [0x1c, 0x0d]) {
                            let frame: Vec<u8> = buf.drain(..end + 2).collect();
                            let start = frame.iter().position(|&b| b == 0x0b).map_or(0, |p| p + 1);
                            let message = String::from_utf8_lossy(&frame[start..end]).into_owned();
                            let control = message.split('\r').next().unwrap_or_default().split('|').nth(9);
                            let ack = format!(
                                "\x0bMSH|^~\\&|SIL-Y|labo|PFI-X|Organisation-X|20260101000000||ACK|ACK-{}|P|2.6\r\
                                 MSA|AA|{}\r\x1c\r",
                                control.unwrap_or_default(),
                                control.unwrap_or_default()
                            );
                            seen.lock().unwrap().push(message);
                            if stream.write_all(ack.as_bytes()).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Dpi { received }
    }

    /// Waits until `n` messages came, then returns them all.
    fn wait_for(&self, n: usize, relais: &Relais) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.received.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            assert!(Instant::now() < deadline, "{} ZAM(s) of {n}; relais log:\n{}", got.len(), relais.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The value of `field` (1-based, MSH-1 being `|`) of the first segment `name` of an HL7 message.
fn field(message: &str, name: &str, n: usize) -> String {
    let segment = message.split('\r').find(|s| s.starts_with(name)).unwrap_or_default();
    let index = if name == "MSH" { n - 1 } else { n };
    segment.split('|').nth(index).unwrap_or_default().to_string()
}

/// The OBX segments of a message, as field lists.
fn obx(message: &str) -> Vec<Vec<String>> {
    message
        .split('\r')
        .filter(|s| s.starts_with("OBX|"))
        .map(|s| s.split('|').map(String::from).collect())
        .collect()
}

fn import_directory(dir: &Path) {
    let extraction = super::root().join("test-messages/directory/extraction-mssante-synthetic.txt");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_relais"))
        .args(["directory", "--data", dir.to_str().unwrap(), "import", extraction.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn wait_mails(smtp: &Smtp, n: usize, relais: &Relais) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while smtp.mails().len() < n {
        assert!(
            Instant::now() < deadline,
            "{} mail(s) of {n}; relais log:\n{}",
            smtp.mails().len(),
            relais.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    smtp.mails()
}

#[test]
fn a_death_in_the_ed_gives_one_death_notification_and_no_discharge_one() {
    let pki = Pki::new();
    let work = tempfile::tempdir().unwrap();
    let port = free_port();
    let smtp = Smtp::start(port, &pki.server_cert, &pki.server_key, &work.path().join("Maildir"));
    let directory = work.path().join("directory");
    import_directory(&directory);
    let routes = work.path().join("routes");
    std::fs::create_dir_all(&routes).unwrap();
    std::fs::copy(super::root().join("routes/10-gp-notify.toml"), routes.join("10-gp-notify.toml")).unwrap();
    let toml = format!(
        "routes_dir = {routes:?}\n[bus]\nretry_delay_ms = 100\n\
         [sinks.mss]\nkind = \"mss\"\nhost = \"127.0.0.1\"\nport = {port}\ntls_name = \"localhost\"\nca = {ca:?}\n\
         from = \"notifications@ch-test.mssante.fr\"\nnil = \"NIL-RELAIS-TEST\"\n\
         [sinks.gp-notify]\nkind = \"notify\"\nmail_via = \"mss\"\n\
         establishment = \"CH de Mayenne\"\ncontact_phone = \"02 43 00 00 00\"\ndirectory = {directory:?}\n",
        routes = routes.display().to_string(),
        ca = pki.ca.display().to_string(),
        directory = directory.display().to_string(),
    );
    let mut relais = Relais::start_with_config(&toml, &[]);

    let ack =
        String::from_utf8_lossy(&mllp_send(relais.mllp_addr(), &sample("a04_sau_entry.hl7"))).into_owned();
    assert!(ack.contains("MSA|AA"), "{ack}");
    wait_mails(&smtp, 1, &relais);
    let ack =
        String::from_utf8_lossy(&mllp_send(relais.mllp_addr(), &sample("a03_death_in_ed.hl7"))).into_owned();
    assert!(ack.contains("MSA|AA"), "{ack}");
    wait_mails(&smtp, 2, &relais);
    // Give a wrong extra notification (a discharge one) the time to arrive.
    std::thread::sleep(Duration::from_secs(2));
    let mails = smtp.mails();
    let mut subjects: Vec<String> = mails.iter().map(|m| parse(m).subject().unwrap().to_string()).collect();
    subjects.sort();
    assert_eq!(
        subjects,
        vec!["Décès : BERNARD LOUIS", "Entrée aux urgences : BERNARD LOUIS"],
        "{subjects:?}"
    );
    for m in &mails {
        assert_eq!(recipients(&parse(m)), vec!["isabelle.agnes@medecin.mssante.fr"]);
    }
    relais.stop();
}

/// An MDN (RFC 8098) saying `reader` displayed the mail `original`.
fn mdn(original: &str, reader: &str) -> String {
    format!(
        "From: {reader}\r\nTo: documents@ch-test.mssante.fr\r\nSubject: Accusé de lecture\r\n\
         Message-ID: <mdn-1@test-ci-sis.mssante.fr>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=disposition-notification; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nLe message a été affiché.\r\n\
         --b1\r\nContent-Type: message/disposition-notification\r\n\r\n\
         Reporting-UA: test-client\r\nFinal-Recipient: rfc822;{reader}\r\nOriginal-Message-ID: {original}\r\n\
         Disposition: manual-action/MDN-sent-manually; displayed\r\n\r\n--b1--\r\n"
    )
}

/// Posts `raw` to the MDN port with lettre's client: over STARTTLS when `ca` (the port's CA) is given.
fn post_mail(
    runtime: &tokio::runtime::Runtime,
    port: u16,
    ca: Option<&Path>,
    from: &str,
    raw: &str,
) -> Result<(), lettre::transport::smtp::Error> {
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .timeout(Some(Duration::from_secs(10)));
    if let Some(ca) = ca {
        let params = TlsParameters::builder("localhost".into())
            .certificate_store(CertificateStore::None)
            .add_root_certificate(Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap())
            .build_rustls()
            .unwrap();
        builder = builder.tls(Tls::Required(params));
    }
    let envelope =
        Envelope::new(Some(from.parse().unwrap()), vec!["documents@ch-test.mssante.fr".parse().unwrap()])
            .unwrap();
    // With lettre's `pool` feature the transport spawns (and on drop, ends) its pool's task: build, use and
    // drop it inside the runtime.
    runtime.block_on(async { builder.build().send_raw(&envelope, raw.as_bytes()).await }).map(|_| ())
}

/// A TCP port on 127.0.0.1 that refuses connections, held (bound, never listening) until the socket is dropped.
fn refusing_port() -> (std::os::fd::OwnedFd, u16) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor this function owns; their results are checked.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let socket = std::os::fd::OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let bound = libc::bind(fd, (&raw const addr).cast(), len);
        assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
        let mut len = len;
        let named = libc::getsockname(fd, (&raw mut addr).cast(), &mut len);
        assert_eq!(named, 0, "getsockname: {}", std::io::Error::last_os_error());
        (socket, u16::from_be(addr.sin_port))
    }
}

#[test]
fn an_oru_by_mllp_gets_zam_z02_and_z01_back_then_z03_once_the_mdn_comes() {
    let pki = Pki::new();
    let work = tempfile::tempdir().unwrap();
    let smtp_port = free_port();
    let smtp = Smtp::start(smtp_port, &pki.server_cert, &pki.server_key, &work.path().join("Maildir"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (endpoint, dmp) = runtime.block_on(super::dmp::start_endpoint(&pki, None));
    // The DPI's port is held, bound and not listening, while its listener is "down": connections to it are
    // refused at once, and no other test's server can take it meanwhile (one did: the ZAM then waited 30 s
    // for an ACK from the wrong server).
    let (down_dpi, dpi_port) = refusing_port();
    let mdn_port = free_port();
    let routes = work.path().join("routes");
    std::fs::create_dir_all(&routes).unwrap();
    std::fs::write(
        routes.join("documents.toml"),
        "[[route]]\nname = \"documents\"\ndestinations = [\"mss\", \"dmp\"]\n[route.when]\nevent_class = \"document\"\n",
    )
    .unwrap();
    let toml = format!(
        "routes_dir = {routes:?}\n[bus]\nretry_delay_ms = 100\n\
         [senders.labo]\nbusiness_ack_to = \"127.0.0.1:{dpi_port}\"\n\
         [sinks.mss]\nkind = \"mss\"\nhost = \"127.0.0.1\"\nport = {smtp_port}\ntls_name = \"localhost\"\nca = {ca:?}\n\
         from = \"documents@ch-test.mssante.fr\"\nnil = \"NIL-RELAIS-TEST\"\nsource_id = \"1.2.250.1.999.3\"\n\
         mdn_listen = \"127.0.0.1:{mdn_port}\"\nmdn_tls_cert = {server_cert:?}\nmdn_tls_key = {server_key:?}\n{retry}\
         [sinks.dmp]\nkind = \"dmp\"\nendpoint = \"{endpoint}\"\nca = {ca:?}\nclient_cert = {cert:?}\n\
         client_key = {key:?}\nsource_id = \"1.2.250.1.999.3\"\nunique_id_root = \"1.2.250.1.999.3.1\"\n\
         [sinks.dmp.vihf]\nissuer = \"CN=relais-client,O=CH Test\"\nsubject_id = \"801234567897\"\n\
         subject_name = \"Plateforme documentaire CH Test\"\nstructure_id = \"1530000000\"\n\
         roles = [\"10^1.2.250.1.213.1.1.5.5^Médecin\"]\nhomologation = \"HOMOLOGATION-TEST\"\n\
         [sinks.dmp.retry]\ninitial_delay_ms = 200\nmax_delay_ms = 400\n",
        retry = "[sinks.mss.retry]\ninitial_delay_ms = 200\nmax_delay_ms = 400\n",
        routes = routes.display().to_string(),
        ca = pki.ca.display().to_string(),
        cert = pki.client_cert.display().to_string(),
        server_cert = pki.server_cert.display().to_string(),
        server_key = pki.server_key.display().to_string(),
        key = pki.client_key.display().to_string(),
    );
    let mut relais = Relais::start_with_config(&toml, &[]);

    let oru = sample("oru_r01_cr-urg_dmp-mss.hl7");
    let ack = String::from_utf8_lossy(&mllp_send(relais.mllp_addr(), &oru)).into_owned();
    assert!(ack.contains("MSA|AA"), "{ack}");

    // The DPI's listener is down: the ZAMs wait in the outbox, tried again, and survive a restart.
    let deadline = Instant::now() + Duration::from_secs(30);
    let retried = |relais: &Relais| {
        let metrics = String::from_utf8(relais.get("/metrics").1).unwrap();
        ["Z01", "Z02"].iter().all(|t| metrics.contains(&format!("trigger=\"{t}\",outcome=\"retried\"")))
    };
    while !retried(&relais) {
        assert!(Instant::now() < deadline, "no ZAM attempt; relais log:\n{}", relais.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    relais.stop();
    relais.restart();
    drop(down_dpi);
    let dpi = Dpi::start_on(dpi_port);

    // ZAM^Z02 for each recipient (the professional, the patient) and ZAM^Z01 for the DMP.
    let zams = dpi.wait_for(3, &relais);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(dpi.received.lock().unwrap().len(), 3, "no more ZAM than that");
    for zam in &zams {
        assert_eq!(field(zam, "MSH", 3), "PFI-X", "sent by the ORU's receiver");
        assert_eq!((field(zam, "MSH", 5), field(zam, "MSH", 6)), ("SIL-Y".into(), "labo".into()));
        assert_eq!(obx(zam)[0][4], "R-ACKS-0001", "OBX-4: the ORU acknowledged");
        assert_eq!(obx(zam)[0][5], "Y^^expandedYes-NoIndicator");
    }
    let z01: Vec<&String> = zams.iter().filter(|z| field(z, "MSH", 9) == "ZAM^Z01^ZAM_Z01").collect();
    assert_eq!(z01.len(), 1, "{zams:?}");
    assert!(obx(z01[0])[0][3].starts_with("ACK_RECEPTION_DMP^"));
    let mut z02: Vec<(String, String)> = zams
        .iter()
        .filter(|z| field(z, "MSH", 9) == "ZAM^Z02^ZAM_Z01")
        .map(|z| (obx(z)[1][4].clone(), obx(z)[1][5].clone()))
        .collect();
    z02.sort();
    assert_eq!(
        z02,
        vec![
            ("248098765432174".to_string(), "^^X.400^248098765432174@patient.mssante.fr".to_string()),
            ("801234567897".to_string(), "^^X.400^adam.hoda@test-ci-sis.mssante.fr".to_string()),
        ]
    );
    {
        let seen = dmp.seen.lock().unwrap();
        assert_eq!(seen.requests, 1);
        assert!(seen.verdicts[0].is_ok(), "{:?}", seen.verdicts[0]);
    }

    // The level-1 CDA's PDF travels beside the XDM zip; the professional's mail asks for an MDN.
    let mails = wait_mails(&smtp, 2, &relais);
    let professional = mails
        .iter()
        .map(|m| parse(m))
        .find(|m| recipients(m) == vec!["adam.hoda@test-ci-sis.mssante.fr"])
        .expect("the professional's mail");
    let names: Vec<String> =
        professional.attachments().map(|a| a.attachment_name().unwrap_or_default().to_string()).collect();
    assert_eq!(names, vec!["IHE_XDM.ZIP", "DOC0001.PDF"]);
    let pdf = professional.attachments().nth(1).unwrap();
    assert_eq!(
        pdf.content_type().map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or(""))).unwrap(),
        "application/pdf"
    );
    assert!(pdf.contents().starts_with(b"%PDF-"));
    assert!(professional.header_raw("Disposition-Notification-To").is_some());
    let message_id = format!("<{}>", professional.message_id().unwrap());

    // Not an MDN: refused for good; an MDN about a mail Relais did not send: taken, nothing sent; without
    // STARTTLS: refused before MAIL.
    let ca = Some(pki.ca.as_path());
    let post = |from: &str, raw: &str| post_mail(&runtime, mdn_port, ca, from, raw);
    let refused = post("x@test.fr", "From: x@test.fr\r\nSubject: hi\r\n\r\nhello\r\n").unwrap_err();
    assert!(refused.is_permanent(), "{refused}");
    post("x@test.fr", &mdn("<unknown@elsewhere.fr>", "x@test.fr")).unwrap();
    let reader = "adam.hoda@test-ci-sis.mssante.fr";
    let plain = post_mail(&runtime, mdn_port, None, reader, &mdn(&message_id, reader)).unwrap_err();
    assert!(plain.to_string().contains("530"), "{plain}");

    // The professional reads the mail: ZAM^Z03 naming the reader.
    post(reader, &mdn(&message_id, reader)).unwrap();
    let zams = dpi.wait_for(4, &relais);
    let z03 = &zams[3];
    assert_eq!(field(z03, "MSH", 9), "ZAM^Z03^ZAM_Z01");
    assert!(obx(z03)[0][3].starts_with("ACK_LECTURE_MSS^"));
    assert_eq!(obx(z03)[0][4], "R-ACKS-0001");
    assert_eq!(obx(z03)[1][4], "801234567897");
    assert_eq!(obx(z03)[1][5], "^^X.400^adam.hoda@test-ci-sis.mssante.fr");
    // The same MDN again (the sender retried): no second ZAM^Z03.
    post(reader, &mdn(&message_id, reader)).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(dpi.received.lock().unwrap().len(), 4);

    // A DMP refusal: ZAM^Z01 N with the DMP's code in ERR-5 (the mails of this second ORU go as before).
    *dmp.answer.lock().unwrap() = super::dmp::Answer::Failure;
    let second = with_msh_field(&oru, 10, "R-ACKS-0002");
    let ack = String::from_utf8_lossy(&mllp_send(relais.mllp_addr(), &second)).into_owned();
    assert!(ack.contains("MSA|AA"), "{ack}");
    let zams = dpi.wait_for(7, &relais);
    let z01 = zams[4..].iter().find(|z| field(z, "MSH", 9) == "ZAM^Z01^ZAM_Z01").expect("a second ZAM^Z01");
    assert_eq!(obx(z01)[0][4], "R-ACKS-0002");
    assert_eq!(obx(z01)[0][5], "N^^expandedYes-NoIndicator");
    assert_eq!(field(z01, "ERR", 5), "DMPClosed^DMP ferme^DMPERRORCODE");

    let metrics = String::from_utf8(relais.get("/metrics").1).unwrap();
    assert!(metrics.contains("relais_acks_sent_total{trigger=\"Z02\",outcome=\"delivered\"} 4"), "{metrics}");
    assert!(metrics.contains("relais_acks_sent_total{trigger=\"Z01\",outcome=\"delivered\"} 2"));
    assert!(metrics.contains("relais_acks_mdn_total{result=\"correlated\"} 2"));
    assert!(metrics.contains("relais_acks_mdn_total{result=\"uncorrelated\"} 1"));
    assert!(metrics.contains("relais_acks_mdn_total{result=\"rejected\"} 1"));
    relais.stop();
}
