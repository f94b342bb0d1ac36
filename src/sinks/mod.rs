//! The sinks: where routed messages leave Relais (GP notification, MSSanté mail, DMP feed).
//!
//! Building blocks, each usable and tested on its own:
//!
//! - [`retry`]: the outcome of an attempt, classification (transient / permanent) and the retry policy.
//! - [`ebrim`]: XDS metadata as an ebRIM `SubmitObjectsRequest` (shared by XDM and ITI-41).
//! - [`xdm`]: the `IHE_XDM.ZIP` package for MSSanté mail.
//! - [`iti41`]: the DMP feed (ITI-41 SOAP/MTOM over mutual TLS, VIHF, RegistryResponse).
//! - [`mail`]: the MSSanté sink (SMTP + TLS, masking matrix, X-MSS headers).
//! - [`directory`]: the local MSSanté directory (RPPS → GP mailboxes), `relais directory import`.
//! - [`notify`]: the GP notification (templates, mail and/or webhook, corrections).
//! - [`ledger`]: what each sink delivered, so a bus redelivery is never a second delivery.
//! - [`tls`]: rustls client configurations for the HTTPS clients.
//!
//! The business acknowledgements (ZAM^Z01/Z02/Z03) are built by [`crate::documents::zam`] from what these
//! report ([`iti41::RegistryResponse::first_error`], SMTP outcomes).
//!
//! Their settings are [`SinksSettings`] (`sinks.notify`, `sinks.mss`, `sinks.dmp`, each with `retry.*`).

pub mod directory;
pub mod ebrim;
pub mod iti41;
pub mod ledger;
pub mod mail;
pub mod notify;
pub mod retry;
pub mod tls;
pub mod xdm;

use serde::{Deserialize, Serialize};

/// `sinks.*`: the settings of the three sinks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinksSettings {
    /// The GP notification.
    pub notify: notify::NotifyConfig,
    /// The MSSanté mail sink (also the notification's mail path).
    pub mss: mail::MssConfig,
    /// The DMP feed.
    pub dmp: iti41::DmpConfig,
}

impl SinksSettings {
    /// Checks every sink's values without I/O; the error is (dotted key, reason).
    pub fn check(&self) -> Result<(), (String, String)> {
        self.notify.check()?;
        self.mss.check()?;
        self.dmp.check()?;
        if self.notify.mail && !self.mss.host.is_empty() && self.notify.establishment.is_empty() {
            return Err((
                "sinks.notify.establishment".into(),
                "required: the templates name the establishment".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Settings;

    fn env(pairs: &[(&str, &str)]) -> Option<std::collections::HashMap<String, String>> {
        Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn sink_settings_come_from_the_environment_and_are_checked_by_key() {
        let s = Settings::load_from(
            None,
            env(&[
                ("RELAIS__SINKS__MSS__HOST", "smtp.test"),
                ("RELAIS__SINKS__MSS__FROM", "documents@ch-test.mssante.fr"),
                ("RELAIS__SINKS__MSS__RETRY__MAX_ATTEMPTS", "4"),
            ]),
        )
        .unwrap();
        assert_eq!(s.sinks.mss.host, "smtp.test");
        assert_eq!(s.sinks.mss.retry.max_attempts, 4);
        let err = s.check().unwrap_err().to_string();
        assert_eq!(err, "configuration key `sinks.mss.nil`: required: X-MSS-NIL goes on every mail");
        let s =
            Settings::load_from(None, env(&[("RELAIS__SINKS__DMP__ENDPOINT", "http://dmp.test")])).unwrap();
        assert!(s.check().unwrap_err().to_string().contains("sinks.dmp.endpoint"));
        assert!(Settings::default().check().is_ok());
    }
}
