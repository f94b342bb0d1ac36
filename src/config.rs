//! Settings: `relais.toml` (optional) plus `RELAIS__SECTION__KEY` environment overrides, checked once.
//!
//! Reading is split in two, as in ripgrep: [`Settings::load`] gathers raw values (config crate, prefix `RELAIS`,
//! separator `__`), then [`Settings::check`] validates them without any I/O. Building listeners from checked
//! settings (reading PEM files, binding sockets) happens in [`crate::ingest`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::hl7v2::Charset;

/// A configuration problem, named by its key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file or an environment variable could not be read or does not have the expected shape.
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// A value was read but is not acceptable.
    #[error("configuration key `{key}`: {reason}")]
    Invalid {
        /// Dotted key, e.g. `mllp.listen`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Everything `relais serve` needs, with the defaults of DESIGN.md.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Where the journal and the drop folder live (`./data`).
    pub data_dir: PathBuf,
    /// MLLP listeners.
    pub mllp: MllpSettings,
    /// HTTP listener (ingest, health, admin API).
    pub http: HttpSettings,
    /// Journal behaviour.
    pub journal: JournalSettings,
    /// Prometheus metrics.
    pub metrics: MetricsSettings,
    /// Per-sender settings, keyed by the first component of MSH-4 (sending facility).
    pub senders: BTreeMap<String, SenderSettings>,
    /// The drop folder.
    pub folder: FolderSettings,
    /// CDA documents: size limit and XDS tables.
    pub documents: DocumentSettings,
    /// The bus: AMQP URL (unset = embedded), partitions, retries.
    pub bus: crate::bus::BusSettings,
    /// Sink instances by name: what route destinations name (`sinks.gp-notify.kind = "notify"`).
    pub sinks: BTreeMap<String, SinkSettings>,
    /// Directory of the route files (`./routes`).
    pub routes_dir: PathBuf,
    /// Directory of the mapping rules and code tables (`./mappings`).
    pub mappings_dir: PathBuf,
}

/// The drop folder: CDA (`.xml`) and HL7v2 (`.hl7`, `.er7`, `.txt`) files dropped there are journaled.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FolderSettings {
    /// Watch the folder (`true`).
    pub enabled: bool,
    /// The folder (`<data_dir>/inbox` when empty).
    pub path: PathBuf,
    /// A file is taken once its size and modification time have not changed for this many seconds (2).
    pub settle_secs: u64,
}

/// CDA documents.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DocumentSettings {
    /// Largest accepted CDA document in bytes (20 MiB), by `POST /cda` and the drop folder.
    pub max_size: usize,
    /// Where `xds-types.toml` and `xds-codes.toml` are (`mappings/tables/xds`).
    pub tables: PathBuf,
}

/// Prometheus metrics (`GET /metrics` on the HTTP listener).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// Most distinct values of the `sender` and of the `event` label (each) besides the senders named in
    /// `[senders]`; later values are counted as `other` (100).
    pub label_limit: usize,
    /// Seconds between two measurements of the data directory's size (30).
    pub scan_interval_secs: u64,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings { label_limit: 100, scan_interval_secs: 30 }
    }
}

/// The kind of a sink instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// FHIR notification (message Bundle to a webhook).
    Notify,
    /// MSSanté secure mail.
    Mss,
    /// DMP document feed.
    Dmp,
}

/// One sink instance: its kind plus the options of that kind (read by the sinks module).
#[derive(Debug, Clone, Deserialize)]
pub struct SinkSettings {
    /// Which sink it is.
    pub kind: SinkKind,
    /// Every other key of the table, for the sink to read.
    #[serde(flatten)]
    pub options: BTreeMap<String, serde_json::Value>,
}

/// MLLP listeners: plain TCP and, optionally, TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MllpSettings {
    /// Plain MLLP address (`127.0.0.1:2575`); empty disables the plain listener.
    pub listen: String,
    /// Largest accepted message in bytes (10 MiB); past it, AR then the connection is closed.
    pub max_message_size: usize,
    /// Charset assumed when MSH-18 is empty and the sender has none configured (`8859/1`).
    pub default_charset: String,
    /// Optional MLLP over TLS listener.
    pub tls: Option<TlsSettings>,
}

/// MLLP over TLS (TLS 1.2+), optionally mutual.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// Address of the TLS listener.
    pub listen: String,
    /// PEM certificate chain of the server.
    pub cert: PathBuf,
    /// PEM private key of the server.
    pub key: PathBuf,
    /// PEM CA bundle: when set, clients must present a certificate it signed (mutual TLS).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// When non-empty, only these clients are served: `CN=…` (subject common name), `DNS:…`, `URI:…`, `IP:…`
    /// (subject alternative names) or a full RFC 4514 subject.
    #[serde(default)]
    pub allowed_clients: Vec<String>,
}

/// The HTTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Address (`127.0.0.1:8080`); empty disables HTTP.
    pub listen: String,
    /// Bearer token for `/api/*`; required when `listen` is not a loopback address.
    pub admin_token: String,
}

/// Journal behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JournalSettings {
    /// A resent message (same MSH-4 + MSH-10 + bytes) within this many seconds is acknowledged, not stored again.
    pub dedup_window_secs: u64,
    /// Most messages in one group commit.
    pub max_batch: usize,
    /// Published messages are pruned (metadata, bundle) this many days after they arrived; 0 keeps them.
    pub retention_days: u64,
    /// Raw bytes of pruned messages are kept this many days (0: as long as the metadata); never shorter.
    pub raw_retention_days: u64,
    /// Seconds between two retention passes.
    pub prune_interval_secs: u64,
    /// Most entries removed per retention batch (one short write transaction each).
    pub prune_batch: usize,
    /// Size in MiB of each write-ahead log segment (preallocated); also the most applied between checkpoints.
    pub wal_segment_mb: u64,
    /// Longest time in milliseconds between a write and its checkpoint into the journal store.
    pub checkpoint_ms: u64,
    /// Size in MiB of the journal store's page cache (most of the server's memory under load).
    pub cache_mb: usize,
}

/// Settings for one sending facility.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SenderSettings {
    /// Charset assumed when this sender leaves MSH-18 empty.
    pub charset: Option<String>,
    /// MLLP destination (`host:port`) of this sender's business acknowledgements (ZAM^Z01/Z02/Z03).
    pub business_ack_to: Option<String>,
    /// IANA time zone of this sender's local times (HL7 times without an offset); default `Europe/Paris`.
    pub timezone: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: PathBuf::from("./data"),
            mllp: MllpSettings::default(),
            http: HttpSettings::default(),
            metrics: MetricsSettings::default(),
            journal: JournalSettings::default(),
            senders: BTreeMap::new(),
            folder: FolderSettings::default(),
            documents: DocumentSettings::default(),
            bus: crate::bus::BusSettings::default(),
            sinks: BTreeMap::new(),
            routes_dir: PathBuf::from("./routes"),
            mappings_dir: PathBuf::from("./mappings"),
        }
    }
}

impl Default for FolderSettings {
    fn default() -> Self {
        FolderSettings { enabled: true, path: PathBuf::new(), settle_secs: 2 }
    }
}

impl Default for DocumentSettings {
    fn default() -> Self {
        DocumentSettings { max_size: 20 * 1024 * 1024, tables: PathBuf::from("mappings/tables/xds") }
    }
}

impl Default for MllpSettings {
    fn default() -> Self {
        MllpSettings {
            listen: "127.0.0.1:2575".into(),
            max_message_size: 10 * 1024 * 1024,
            default_charset: "8859/1".into(),
            tls: None,
        }
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings { listen: "127.0.0.1:8080".into(), admin_token: String::new() }
    }
}

impl Default for JournalSettings {
    fn default() -> Self {
        JournalSettings {
            dedup_window_secs: 24 * 3600,
            max_batch: 4096,
            retention_days: 0,
            raw_retention_days: 0,
            prune_interval_secs: 3600,
            prune_batch: 100,
            wal_segment_mb: 16,
            checkpoint_ms: 1000,
            cache_mb: 32,
        }
    }
}

impl Settings {
    /// Reads the defaults, then `file` if given, then `RELAIS__*` variables from the process environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, Error> {
        Self::load_from(file, None)
    }

    /// As [`Settings::load`], with the environment given as a map (tests) instead of the process's.
    pub fn load_from(
        file: Option<&Path>,
        env: Option<std::collections::HashMap<String, String>>,
    ) -> Result<Settings, Error> {
        let mut builder = config::Config::builder();
        if let Some(file) = file {
            builder = builder.add_source(config::File::from(file).format(config::FileFormat::Toml));
        }
        let env_source = config::Environment::with_prefix("RELAIS")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(env);
        builder = builder.add_source(env_source);
        let settings: Settings = builder.build()?.try_deserialize()?;
        Ok(settings)
    }

    /// Validates every value without I/O; the first problem found is returned, named by its key.
    pub fn check(&self) -> Result<(), Error> {
        if !self.mllp.listen.is_empty() {
            parse_addr("mllp.listen", &self.mllp.listen)?;
        }
        if !self.http.listen.is_empty() {
            let addr = parse_addr("http.listen", &self.http.listen)?;
            if !addr.ip().is_loopback() && self.http.admin_token.is_empty() {
                return Err(invalid(
                    "http.admin_token",
                    "required when http.listen is not a loopback address",
                ));
            }
        }
        if self.mllp.max_message_size < 64 {
            return Err(invalid("mllp.max_message_size", "must be at least 64 bytes"));
        }
        self.default_charset()?;
        for (name, sender) in &self.senders {
            if let Some(cs) = &sender.charset {
                parse_charset(&format!("senders.{name}.charset"), cs)?;
            }
            if let Some(zone) = &sender.timezone {
                jiff::tz::TimeZone::get(zone).map_err(|_| {
                    invalid(
                        &format!("senders.{name}.timezone"),
                        "not a known IANA time zone (e.g. Europe/Paris)",
                    )
                })?;
            }
        }
        if let Some(tls) = &self.mllp.tls {
            parse_addr("mllp.tls.listen", &tls.listen)?;
            if tls.allowed_clients.iter().any(|c| c.trim().is_empty()) {
                return Err(invalid("mllp.tls.allowed_clients", "entries must not be empty"));
            }
            if !tls.allowed_clients.is_empty() && tls.client_ca.is_none() {
                return Err(invalid(
                    "mllp.tls.allowed_clients",
                    "needs mllp.tls.client_ca (client certificates are only asked for under mutual TLS)",
                ));
            }
        }
        if self.metrics.scan_interval_secs == 0 {
            return Err(invalid("metrics.scan_interval_secs", "must be at least 1"));
        }
        if self.journal.max_batch == 0 {
            return Err(invalid("journal.max_batch", "must be at least 1"));
        }
        if self.journal.raw_retention_days != 0
            && self.journal.raw_retention_days < self.journal.retention_days
        {
            return Err(invalid(
                "journal.raw_retention_days",
                "must be 0 or at least journal.retention_days (raw bytes are never pruned before the metadata)",
            ));
        }
        if !(1..=1024).contains(&self.journal.wal_segment_mb) {
            return Err(invalid("journal.wal_segment_mb", "must be between 1 and 1024"));
        }
        if !(10..=600_000).contains(&self.journal.checkpoint_ms) {
            return Err(invalid("journal.checkpoint_ms", "must be between 10 and 600000"));
        }
        if !(4..=65_536).contains(&self.journal.cache_mb) {
            return Err(invalid("journal.cache_mb", "must be between 4 and 65536"));
        }
        if self.journal.prune_interval_secs == 0 || self.journal.prune_batch == 0 {
            return Err(invalid("journal.prune_interval_secs", "and journal.prune_batch must be at least 1"));
        }
        for (name, sender) in &self.senders {
            if let Some(to) = &sender.business_ack_to
                && to
                    .rsplit_once(':')
                    .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
                return Err(invalid(&format!("senders.{name}.business_ack_to"), "expected host:port"));
            }
        }
        if self.folder.settle_secs > 3600 {
            return Err(invalid("folder.settle_secs", "at most 3600 seconds"));
        }
        if self.documents.max_size < 1024 {
            return Err(invalid("documents.max_size", "must be at least 1024 bytes"));
        }
        self.bus.check().map_err(|(key, reason)| invalid(&key, &reason))?;
        for name in self.sinks.keys() {
            let plain = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if name.is_empty() || !plain {
                return Err(invalid(
                    &format!("sinks.{name}"),
                    "sink names use letters, digits, - and _ only",
                ));
            }
            crate::sinks::SinkConfig::from_settings(name, &self.sinks[name])
                .map_err(|(k, r)| invalid(&k, &r))?;
        }
        Ok(())
    }

    /// The sink instance names, sorted (what route destinations may name).
    pub fn sink_names(&self) -> Vec<String> {
        self.sinks.keys().cloned().collect()
    }

    /// The charset assumed when MSH-18 is empty and the sender has no setting of its own.
    pub fn default_charset(&self) -> Result<Charset, Error> {
        parse_charset("mllp.default_charset", &self.mllp.default_charset)
    }

    /// The charset assumed for `sending_facility` (MSH-4.1) when its MSH-18 is empty.
    ///
    /// Facility names match case-insensitively: the config crate lowercases environment keys, so
    /// `RELAIS__SENDERS__CHMAYENNE__CHARSET` arrives as `senders.chmayenne`.
    pub fn charset_for(&self, sending_facility: &str) -> Charset {
        let exact = self.senders.get(sending_facility);
        exact
            .or_else(|| {
                self.senders
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(sending_facility))
                    .map(|(_, s)| s)
            })
            .and_then(|s| s.charset.as_deref())
            .and_then(Charset::from_msh18)
            .or_else(|| Charset::from_msh18(&self.mllp.default_charset))
            .unwrap_or(Charset::Latin1)
    }

    /// How long a control id is remembered for de-duplication.
    pub fn dedup_window(&self) -> Duration {
        Duration::from_secs(self.journal.dedup_window_secs)
    }

    /// The drop folder: `folder.path`, or `<data_dir>/inbox`.
    pub fn folder_path(&self) -> PathBuf {
        if self.folder.path.as_os_str().is_empty() {
            self.data_dir.join("inbox")
        } else {
            self.folder.path.clone()
        }
    }

    /// The journal file.
    pub fn journal_path(&self) -> PathBuf {
        self.data_dir.join("journal.redb")
    }
}

/// Parses a `listen` value; the key names it in the error.
pub fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, Error> {
    value.parse().map_err(|e| invalid(key, &format!("`{value}` is not an address like 127.0.0.1:2575 ({e})")))
}

fn parse_charset(key: &str, value: &str) -> Result<Charset, Error> {
    Charset::from_msh18(value).ok_or_else(|| {
        invalid(key, &format!("unknown charset `{value}` (UNICODE UTF-8, 8859/1, 8859/15, ASCII)"))
    })
}

fn invalid(key: &str, reason: &str) -> Error {
    Error::Invalid { key: key.into(), reason: reason.into() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn defaults_match_the_design() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        s.check().unwrap();
        assert_eq!(s.mllp.listen, "127.0.0.1:2575");
        assert_eq!(s.http.listen, "127.0.0.1:8080");
        assert_eq!(s.data_dir, PathBuf::from("./data"));
        assert_eq!(s.mllp.max_message_size, 10 * 1024 * 1024);
        assert_eq!(s.default_charset().unwrap(), Charset::Latin1);
    }

    #[test]
    fn environment_overrides_use_double_underscores() {
        let s = Settings::load_from(
            None,
            env(&[
                ("RELAIS__MLLP__LISTEN", "127.0.0.1:3575"),
                ("RELAIS__DATA_DIR", "/tmp/x"),
                ("RELAIS__JOURNAL__DEDUP_WINDOW_SECS", "60"),
            ]),
        )
        .unwrap();
        assert_eq!(s.mllp.listen, "127.0.0.1:3575");
        assert_eq!(s.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(s.dedup_window(), Duration::from_secs(60));
    }

    #[test]
    fn sender_charset_from_the_environment_keeps_working_despite_lowercased_keys() {
        let s = Settings::load_from(None, env(&[("RELAIS__SENDERS__CHLATIN9__CHARSET", "8859/15")])).unwrap();
        s.check().unwrap();
        assert_eq!(s.charset_for("CHLATIN9"), Charset::Latin9);
        assert_eq!(s.charset_for("OTHER"), Charset::Latin1);
    }

    #[test]
    fn file_values_and_sender_charsets() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("relais.toml");
        std::fs::write(
            &file,
            "[mllp]\nlisten = \"127.0.0.1:4000\"\n[senders.CHU-X]\ncharset = \"8859/15\"\n",
        )
        .unwrap();
        let s = Settings::load_from(Some(&file), env(&[])).unwrap();
        s.check().unwrap();
        assert_eq!(s.mllp.listen, "127.0.0.1:4000");
        assert_eq!(s.charset_for("CHU-X"), Charset::Latin9);
        assert_eq!(s.charset_for("OTHER"), Charset::Latin1);
    }

    #[test]
    fn bad_values_are_named_by_key() {
        let s = Settings::load_from(None, env(&[("RELAIS__MLLP__LISTEN", "nowhere")])).unwrap();
        let err = s.check().unwrap_err().to_string();
        assert!(err.contains("mllp.listen"), "{err}");

        let s = Settings::load_from(None, env(&[("RELAIS__HTTP__LISTEN", "0.0.0.0:8080")])).unwrap();
        let err = s.check().unwrap_err().to_string();
        assert!(err.contains("http.admin_token"), "{err}");

        let s = Settings::load_from(None, env(&[("RELAIS__MLLP__DEFAULT_CHARSET", "EBCDIC")])).unwrap();
        let err = s.check().unwrap_err().to_string();
        assert!(err.contains("mllp.default_charset"), "{err}");

        let s = Settings::load_from(None, env(&[("RELAIS__DOCUMENTS__MAX_SIZE", "10")])).unwrap();
        let err = s.check().unwrap_err().to_string();
        assert!(err.contains("documents.max_size"), "{err}");
    }

    #[test]
    fn journal_wal_keys_are_read_and_checked() {
        let s = Settings::load_from(
            None,
            env(&[("RELAIS__JOURNAL__WAL_SEGMENT_MB", "4"), ("RELAIS__JOURNAL__CHECKPOINT_MS", "250")]),
        )
        .unwrap();
        s.check().unwrap();
        assert_eq!((s.journal.wal_segment_mb, s.journal.checkpoint_ms), (4, 250));
        let s = Settings::load_from(None, env(&[("RELAIS__JOURNAL__WAL_SEGMENT_MB", "0")])).unwrap();
        let err = s.check().unwrap_err().to_string();
        assert!(err.contains("journal.wal_segment_mb"), "{err}");
        let s = Settings::load_from(None, env(&[("RELAIS__JOURNAL__CHECKPOINT_MS", "1")])).unwrap();
        let err = s.check().unwrap_err().to_string();
        assert!(err.contains("journal.checkpoint_ms"), "{err}");
        let s = Settings::load_from(None, env(&[("RELAIS__JOURNAL__CACHE_MB", "2")])).unwrap();
        let err = s.check().unwrap_err().to_string();
        assert!(err.contains("journal.cache_mb"), "{err}");
    }

    #[test]
    fn drop_folder_defaults_under_the_data_dir() {
        let s = Settings::load_from(None, env(&[("RELAIS__DATA_DIR", "/srv/relais")])).unwrap();
        assert_eq!(s.folder_path(), PathBuf::from("/srv/relais/inbox"));
        assert_eq!(s.folder.settle_secs, 2);
        let s = Settings::load_from(
            None,
            env(&[("RELAIS__FOLDER__PATH", "/mnt/depot"), ("RELAIS__FOLDER__SETTLE_SECS", "5")]),
        )
        .unwrap();
        assert_eq!(s.folder_path(), PathBuf::from("/mnt/depot"));
        assert_eq!(s.folder.settle_secs, 5);
        let s = Settings::load_from(None, env(&[("RELAIS__BUS__AMQP_URL", "http://x")])).unwrap();
        let err = s.check().unwrap_err().to_string();
        assert!(err.contains("bus.amqp_url"), "{err}");
    }

    #[test]
    fn bus_and_sinks() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("relais.toml");
        std::fs::write(
            &file,
            "[bus]\npartitions = 4\n[sinks.gp-notify]\nkind = \"notify\"\nwebhook_url = \"https://x\"\n[sinks.dmp]\nkind = \"dmp\"\n",
        )
        .unwrap();
        let s = Settings::load_from(
            Some(&file),
            env(&[("RELAIS__BUS__AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")]),
        )
        .unwrap();
        s.check().unwrap();
        assert_eq!(s.bus.partitions, 4);
        assert_eq!(s.bus.amqp_url.as_deref(), Some("amqp://guest:guest@127.0.0.1:5672/%2f"));
        assert_eq!(s.sink_names(), ["dmp", "gp-notify"]);
        assert_eq!(s.sinks["gp-notify"].kind, SinkKind::Notify);
        assert_eq!(s.sinks["gp-notify"].options["webhook_url"], "https://x");
        assert_eq!(Settings::load_from(None, env(&[])).unwrap().bus.amqp_url, None);
    }
}
