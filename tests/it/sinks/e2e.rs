//! End to end through the real binary: an ANS A01 (médecin traitant in ROL ODRP) in by MLLP → journal →
//! map → route → embedded bus → notification sink → mail in the GP's mailbox on a real aiosmtpd.

use std::time::{Duration, Instant};

use super::mail::{Smtp, free_port, parse, recipients};
use super::pki::Pki;
use crate::harness::{Relais, mllp_send};

#[test]
fn an_admission_by_mllp_reaches_the_gp_mailbox_once() {
    let pki = Pki::new();
    let work = tempfile::tempdir().unwrap();
    let port = free_port();
    let smtp = Smtp::start(port, &pki.server_cert, &pki.server_key, &work.path().join("Maildir"));

    // The directory is imported before the server starts (a running server holds it open).
    let data = work.path().join("directory");
    let extraction = super::root().join("test-messages/directory/extraction-mssante-synthetic.txt");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_relais"))
        .args(["directory", "--data", data.to_str().unwrap(), "import", extraction.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let routes = work.path().join("routes");
    std::fs::create_dir_all(&routes).unwrap();
    std::fs::write(
        routes.join("gp.toml"),
        "[[route]]\nname = \"gp-events\"\ndestinations = [\"gp_notify\"]\n[route.when]\nkind = \"hl7v2\"\n\
         event_class = [\"sau_entry\", \"admission\", \"discharge\", \"death\", \"cancel\"]\ngp_known = true\n",
    )
    .unwrap();
    let toml = format!(
        "routes_dir = {routes:?}\n[bus]\nretry_delay_ms = 100\n\
         [sinks.mss]\nkind = \"mss\"\nhost = \"127.0.0.1\"\nport = {port}\ntls_name = \"localhost\"\nca = {ca:?}\n\
         from = \"notifications@ch-test.mssante.fr\"\nnil = \"NIL-RELAIS-TEST\"\n\
         [sinks.gp_notify]\nkind = \"notify\"\nmail_via = \"mss\"\n\
         establishment = \"CH de Test\"\ncontact_phone = \"02 43 00 00 00\"\ndirectory = {data:?}\n",
        routes = routes.display().to_string(),
        ca = pki.ca.display().to_string(),
        data = data.display().to_string(),
    );
    let mut relais = Relais::start_with_config(&toml, &[]);

    let a01 = std::fs::read(
        super::root()
            .join("test-messages/ans/ans-consent_A01_ConsentementConsultation_NonOppositionAlimentation.er7"),
    )
    .unwrap();
    let ack = String::from_utf8_lossy(&mllp_send(relais.mllp_addr(), &a01)).into_owned();
    assert!(ack.contains("MSA|AA"), "{ack}");

    let deadline = Instant::now() + Duration::from_secs(30);
    while smtp.mails().is_empty() {
        assert!(Instant::now() < deadline, "no notification mail; relais log:\n{}", relais.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "one notification");
    let mail = parse(&mails[0]);
    assert_eq!(recipients(&mail), vec!["isabelle.agnes@medecin.mssante.fr"]);
    assert_eq!(mail.subject().unwrap(), "Hospitalisation : PAT-TROIS DOMINIQUE");
    let body = mail.body_text(0).unwrap();
    assert!(body.contains("a été admis(e) à CH de Test le 06/03/2024 à 11h00"), "{body}");
    assert!(body.contains("INS 279035121518989"));
    relais.stop();
}
