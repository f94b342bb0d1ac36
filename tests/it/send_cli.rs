//! Item 11: `relais send`, run as a user runs it: a file holding several messages, a directory, one output
//! line per message (file, MSH-10, ACK code, ERR text), exit status 0 only when every ACK is AA, and the TLS
//! options against a mutual-TLS listener.

use std::path::Path;
use std::process::{Command, Output};

use crate::harness::*;
use crate::ingest_tls::TlsFiles;

/// Runs `relais send <args>`.
fn send(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_relais"))
        .arg("send")
        .args(args)
        .env_remove("RELAIS_LOG")
        .output()
        .expect("running relais send")
}

fn os(s: &str) -> &std::ffi::OsStr {
    s.as_ref()
}

/// The tab-separated lines of stdout.
fn lines(output: &Output) -> Vec<Vec<String>> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

fn explain(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// One file with three messages (blank lines between them): three lines, three journal entries, exit 0.
#[test]
fn a_file_with_several_messages() {
    let relais = Relais::start();
    let file = relais.work_dir().join("batch.hl7");
    let mut content = Vec::new();
    for id in ["BATCH-1", "BATCH-2", "BATCH-3"] {
        content.extend(adt(id));
        content.extend_from_slice(b"\n\n");
    }
    std::fs::write(&file, content).unwrap();
    let addr = relais.mllp_addr().to_string();
    let output = send(&[os("--to"), os(&addr), file.as_os_str()]);
    assert!(output.status.success(), "{}", explain(&output));
    let expected: Vec<Vec<String>> = ["BATCH-1", "BATCH-2", "BATCH-3"]
        .iter()
        .map(|id| vec![file.display().to_string(), id.to_string(), "AA".to_string()])
        .collect();
    assert_eq!(lines(&output), expected, "{}", explain(&output));
    assert_eq!(accepted_ids(&relais, 10), ["BATCH-3", "BATCH-2", "BATCH-1"]);
}

/// The ANS directory: one line per sample in name order (README.md skipped); the reused control id 3975
/// earns an AE line with its ERR text, so the exit status is 1.
#[test]
fn a_directory_and_a_non_aa_exit_status() {
    let relais = Relais::start();
    let dir = test_messages().join("ans");
    let addr = relais.mllp_addr().to_string();
    let output = send(&[os("--to"), os(&addr), dir.as_os_str()]);
    assert_eq!(output.status.code(), Some(1), "{}", explain(&output));
    let got = lines(&output);
    let files = samples_in("ans");
    assert_eq!(got.len(), files.len(), "{}", explain(&output));
    for (line, file) in got.iter().zip(&files) {
        let message = std::fs::read(file).unwrap();
        assert_eq!(Path::new(&line[0]), file.as_path());
        assert_eq!(line[1], msh_field(&message, 10));
        let expected = if file.ends_with("ans-sgl_A01_admission.er7") { "AE" } else { "AA" };
        assert_eq!(line[2], expected, "{line:?}");
        if expected == "AE" {
            assert!(line.get(3).is_some_and(|t| t.contains("MSH-10")), "the ERR text is printed: {line:?}");
        }
    }
    assert!(String::from_utf8_lossy(&output.stderr).contains("1 not AA"), "{}", explain(&output));
}

/// Every AA: exit 0; one bad message among good ones: exit 1 with an AR line carrying the ERR text.
#[test]
fn any_rejection_makes_the_exit_status_non_zero() {
    let relais = Relais::start();
    let addr = relais.mllp_addr().to_string();
    let good = relais.work_dir().join("good.hl7");
    std::fs::write(&good, adt("GOOD-1")).unwrap();
    let output = send(&[os("--to"), os(&addr), good.as_os_str()]);
    assert!(output.status.success(), "{}", explain(&output));

    let mixed = relais.work_dir().join("mixed.hl7");
    let mut content = adt("GOOD-2");
    content.extend_from_slice(b"\n");
    content.extend(with_msh_field(&adt("BAD-CS"), 18, "EBCDIC"));
    std::fs::write(&mixed, content).unwrap();
    let bad_file = test_messages().join("bad/no_msh.hl7");
    let output = send(&[os("--to"), os(&addr), mixed.as_os_str(), bad_file.as_os_str()]);
    assert_eq!(output.status.code(), Some(1), "{}", explain(&output));
    let got = lines(&output);
    assert_eq!(got.len(), 3, "{}", explain(&output));
    assert_eq!(got[0][1..3], ["GOOD-2", "AA"]);
    assert_eq!(got[1][1..3], ["BAD-CS", "AR"]);
    assert!(got[1][3].contains("MSH-18") || got[1][3].contains("character set"), "{:?}", got[1]);
    assert_eq!((got[2][0].as_str(), got[2][2].as_str()), (bad_file.to_str().unwrap(), "AR"));
}

/// No server: a clear error and exit status 2 (not 0, not the "some ACK was not AA" 1).
#[test]
fn no_server_is_an_error() {
    let relais = Relais::start();
    let addr = relais.mllp_addr().to_string();
    drop(relais);
    let output = send(&[os("--to"), os(&addr), test_messages().join("bad/no_msh.hl7").as_os_str()]);
    assert_eq!(output.status.code(), Some(2), "{}", explain(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains(&addr), "{}", explain(&output));
}

/// `--tls-ca`, `--client-cert`, `--client-key` against a mutual-TLS listener: a listed certificate is
/// served; an unlisted one is refused (exit 2, no AA); without `--tls-ca` the TLS port does not answer.
#[test]
fn tls_options() {
    let files = TlsFiles::new();
    let relais = Relais::start_with_config(&files.config(true, &["CN=dpi-1"]), &[]);
    let addr = relais.mllp_tls_addr().to_string();
    let (cert, key) = files.client(&files.client_ca, "dpi-1", "dpi-1", &[]);
    let (other_cert, other_key) = files.client(&files.client_ca, "dpi-9", "dpi-9", &[]);
    let message = relais.work_dir().join("tls.hl7");
    std::fs::write(&message, adt("TLS-CLI")).unwrap();
    let ca = files.path("server-ca.pem");

    let output = send(&[
        os("--to"),
        os(&addr),
        os("--tls-ca"),
        ca.as_os_str(),
        os("--client-cert"),
        cert.as_os_str(),
        os("--client-key"),
        key.as_os_str(),
        message.as_os_str(),
    ]);
    assert!(output.status.success(), "{}", explain(&output));
    assert_eq!(lines(&output), [vec![message.display().to_string(), "TLS-CLI".into(), "AA".into()]]);

    let output = send(&[
        os("--to"),
        os(&addr),
        os("--tls-ca"),
        ca.as_os_str(),
        os("--client-cert"),
        other_cert.as_os_str(),
        os("--client-key"),
        other_key.as_os_str(),
        message.as_os_str(),
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", explain(&output));
    assert!(!String::from_utf8_lossy(&output.stdout).contains("AA"), "{}", explain(&output));

    let output = send(&[os("--to"), os(&addr), message.as_os_str()]);
    assert_ne!(output.status.code(), Some(0), "{}", explain(&output));
    assert_eq!(accepted_ids(&relais, 10), ["TLS-CLI"]);
}
