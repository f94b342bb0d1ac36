//! The sinks: where routed messages leave Relais (GP notification, MSSanté mail, DMP feed).
//!
//! Building blocks, each usable and tested on its own:
//!
//! - [`retry`]: the outcome of an attempt, classification (transient / permanent) and the retry policy.
//! - [`ebrim`]: XDS metadata as an ebRIM `SubmitObjectsRequest` (shared by XDM and ITI-41).
//! - [`xdm`]: the `IHE_XDM.ZIP` package for MSSanté mail.
//! - [`iti41`]: the DMP feed (ITI-41 SOAP/MTOM over mutual TLS, RegistryResponse).
//! - [`vihf`]: the VIHF SAML assertion of the DMP feed, signed (enveloped XML-DSig) with the cachet key.
//! - [`mail`]: the MSSanté sink (SMTP + TLS, masking matrix, X-MSS headers).
//! - [`job`]: a journaled CDA or ORU^R01 → what the MSSanté and DMP sinks send.
//! - [`directory`]: the local MSSanté directory (RPPS → GP mailboxes), `relais directory import`.
//! - [`notify`]: the GP notification (templates, mail and/or webhook, corrections).
//! - [`run_sink`]: the consumption loop: bus partitions → deliver once → ack / retry / dead letter.
//! - [`start`]: builds the configured sinks in `relais serve` and runs their loops.
//! - [`ledger`]: what each sink delivered, so a bus redelivery is never a second delivery.
//! - [`pause`]: the sinks an operator paused (persisted in the data dir), read by the consumption loop.
//! - [`tls`], [`https`]: rustls client configurations and the one-request HTTPS client (DMP, webhook).
//!
//! The business acknowledgements (ZAM^Z01/Z02/Z03) are built by [`crate::documents::zam`] from what these
//! report ([`iti41::RegistryResponse::first_error`], SMTP outcomes, MDNs read back by [`mdn`]) and sent to
//! the DPI by [`acks`] (durable outbox, MLLP, retried until AA).
//!
//! Their settings are [`SinkConfig`]: `[sinks.<name>]` tables of `relais.toml` with a `kind`, each with `retry.*`.

pub mod acks;
mod consume;
pub mod directory;
pub mod ebrim;
pub mod https;
pub mod iti41;
pub mod job;
pub mod ledger;
pub mod mail;
pub mod mdn;
pub mod notify;
pub mod pause;
pub mod retry;
pub mod start;
pub mod tls;
pub mod vihf;
pub mod xdm;

pub use consume::{journal_key, run_partition, run_sink, run_sink_with};

use crate::config::{SinkKind, SinkSettings};

/// One sink instance's settings, by kind: `[sinks.<name>]` with `kind = "notify" | "mss" | "dmp"` and the
/// keys of that kind (see the README, section Sinks).
#[derive(Debug, Clone, PartialEq)]
pub enum SinkConfig {
    /// The GP notification.
    Notify(notify::NotifyConfig),
    /// The MSSanté mail sink.
    Mss(mail::MssConfig),
    /// The DMP feed (boxed: the largest of the three).
    Dmp(Box<iti41::DmpConfig>),
}

impl SinkConfig {
    /// Reads and checks (without I/O) the options of sink `name`; the error is (dotted key, reason).
    pub fn from_settings(name: &str, settings: &SinkSettings) -> Result<SinkConfig, (String, String)> {
        let options = serde_json::Value::Object(settings.options.clone().into_iter().collect());
        let read_err = |e: serde_json::Error| (format!("sinks.{name}"), e.to_string());
        let config = match settings.kind {
            SinkKind::Notify => SinkConfig::Notify(serde_json::from_value(options).map_err(read_err)?),
            SinkKind::Mss => SinkConfig::Mss(serde_json::from_value(options).map_err(read_err)?),
            SinkKind::Dmp => SinkConfig::Dmp(serde_json::from_value(options).map_err(read_err)?),
        };
        let rename = |(key, reason): (String, String)| {
            let rest = key.split_once('.').and_then(|(_, r)| r.split_once('.')).map_or("", |(_, r)| r);
            (format!("sinks.{name}.{rest}"), reason)
        };
        match &config {
            SinkConfig::Notify(c) => c.check().map_err(rename)?,
            SinkConfig::Mss(c) => c.check().map_err(rename)?,
            SinkConfig::Dmp(c) => c.check().map_err(rename)?,
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    #[test]
    fn sink_options_are_read_by_kind_and_checked_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("relais.toml");
        std::fs::write(
            &file,
            "[sinks.mss-ght]\nkind = \"mss\"\nhost = \"smtp.test\"\nfrom = \"documents@ch-test.mssante.fr\"\n\
             nil = \"NIL-1\"\n[sinks.mss-ght.retry]\nmax_attempts = 4\n\
             [sinks.gp]\nkind = \"notify\"\nmail_via = \"mss-ght\"\nestablishment = \"CH\"\n",
        )
        .unwrap();
        let settings = Settings::load_from(Some(&file), Some(Default::default())).unwrap();
        settings.check().unwrap();
        match SinkConfig::from_settings("mss-ght", &settings.sinks["mss-ght"]).unwrap() {
            SinkConfig::Mss(c) => {
                assert_eq!(c.host, "smtp.test");
                assert_eq!(c.retry.max_attempts, 4);
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(&file, "[sinks.mss]\nkind = \"mss\"\nhost = \"smtp.test\"\nfrom = \"a@b.fr\"\n")
            .unwrap();
        let err = Settings::load_from(Some(&file), Some(Default::default())).unwrap().check().unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration key `sinks.mss.nil`: required: X-MSS-NIL goes on every mail"
        );
        std::fs::write(&file, "[sinks.dmp]\nkind = \"dmp\"\nendpoint = \"https://d\"\nbogus = 1\n").unwrap();
        let err = Settings::load_from(Some(&file), Some(Default::default())).unwrap().check().unwrap_err();
        assert!(err.to_string().contains("sinks.dmp") && err.to_string().contains("bogus"), "{err}");
    }
}
