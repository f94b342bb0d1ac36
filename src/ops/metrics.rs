//! Every Relais metric: its name (a `pub const` each stage records under), type, unit, labels and help text,
//! the one Prometheus recorder, and the small recording functions the hot paths call in one line.
//!
//! Stages record through the `metrics` facade; [`install`] sets the Prometheus recorder once per process and
//! describes every metric of [`CATALOG`]; `GET /metrics` calls [`render`], which first refreshes the gauges
//! read at scrape time (process RSS and open files, journal counts per state). The data directory's size is
//! measured off the hot path by [`run_housekeeping`].
//!
//! Label values are bounded: transports, ACK codes and error reasons are closed sets; the sender (first
//! component of MSH-4) and the event (MSH-9 message code and trigger, `ADT_A01`) are cleaned to
//! `[A-Za-z0-9._-]`, and each may take at most `metrics.label_limit`
//! distinct values per process (senders named in `[senders]` always count as known); past that, `other`. No
//! label ever carries patient data.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use metrics::{Unit, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::hl7v2::{AckCode, ErrorCode};
use crate::journal::{HeaderFields, Journal, State, Transport};
use crate::shutdown::Shutdown;

/// Messages read from any listener, before any check (`transport`, `sender`, `event`).
pub const INGEST_RECEIVED: &str = "relais_ingest_messages_received_total";
/// ACKs answered (`transport`, `sender`, `event`, `code` = AA | AE | AR).
pub const INGEST_ACKS: &str = "relais_ingest_acks_total";
/// Messages refused with AR or kept for review with AE (`transport`, `sender`, `event`, `reason`).
pub const INGEST_REJECTED: &str = "relais_ingest_messages_rejected_total";
/// Resent messages acknowledged again without being stored twice (`transport`, `sender`).
pub const INGEST_DUPLICATES: &str = "relais_ingest_duplicates_total";
/// CDA documents taken in (`transport`, `outcome` = accepted | duplicate | invalid | too_large | content_type |
/// conflict | unavailable). Recorded by the document intake.
pub const INGEST_DOCUMENTS: &str = "relais_ingest_documents_total";
/// MLLP connections open now (`transport` = mllp | mllp_tls).
pub const MLLP_CONNECTIONS: &str = "relais_ingest_mllp_connections";
/// TLS clients refused (`reason` = handshake | client_refused).
pub const TLS_HANDSHAKE_FAILURES: &str = "relais_ingest_tls_handshake_failures_total";
/// Time to write and fsync one group commit.
pub const JOURNAL_COMMIT_SECONDS: &str = "relais_journal_commit_seconds";
/// Appends per group commit.
pub const JOURNAL_BATCH_SIZE: &str = "relais_journal_commit_batch_size";
/// Group commits that failed (every message of the batch was answered AR).
pub const JOURNAL_COMMIT_FAILURES: &str = "relais_journal_commit_failures_total";
/// Journal entries per state, read at scrape time (`state`).
pub const JOURNAL_ENTRIES: &str = "relais_journal_entries";
/// Bytes used by the data directory (journal and everything beside it), measured in the background.
pub const DATA_DIR_BYTES: &str = "relais_data_dir_bytes";
/// Bytes free for Relais on the data directory's filesystem.
pub const DATA_DIR_FREE_BYTES: &str = "relais_data_dir_free_bytes";
/// Size of the data directory's filesystem.
pub const DATA_DIR_FILESYSTEM_BYTES: &str = "relais_data_dir_filesystem_bytes";
/// Always 1; the `version` label says which Relais runs.
pub const BUILD_INFO: &str = "relais_build_info";
/// Resident memory of the process (from /proc/self/statm at scrape time).
pub const PROCESS_RSS: &str = "process_resident_memory_bytes";
/// File descriptors open (counted in /proc/self/fd at scrape time).
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
/// The open-files limit of the process.
pub const PROCESS_MAX_FDS: &str = "process_max_fds";
/// Start time of the process, seconds since the Unix epoch.
pub const PROCESS_START_TIME: &str = "process_start_time_seconds";
/// Messages the map stage could not map (`reason`). Recorded by the mapping stage.
pub const MAPPING_FAILURES: &str = "relais_mapping_failures_total";
/// Messages routed to at least one sink, or to none (`result` = routed | unrouted). Recorded by routing.
pub const ROUTING_MESSAGES: &str = "relais_routing_messages_total";
/// Envelopes published on the bus (`result` = confirmed | nacked | failed | undeliverable: the destination is no
/// longer a configured sink). Recorded by the pipeline.
pub const BUS_PUBLISHED: &str = "relais_bus_published_total";
/// Time from publish to the broker's confirm. Recorded by the bus.
pub const BUS_CONFIRM_SECONDS: &str = "relais_bus_confirm_seconds";
/// Delivery attempts' outcomes (`sink`, `outcome` = delivered | retried | failed | dead_lettered |
/// undeliverable). Recorded by the sinks.
pub const SINK_DELIVERIES: &str = "relais_sink_deliveries_total";
/// Time of one successful delivery to its target (`sink`). Recorded by the sinks.
pub const SINK_DELIVERY_SECONDS: &str = "relais_sink_delivery_seconds";
/// Messages waiting for a sink (`sink`). Recorded by the bus/sinks.
pub const SINK_QUEUE_DEPTH: &str = "relais_sink_queue_depth";
/// Age of the oldest message waiting for a sink (`sink`). Recorded by the bus/sinks.
pub const SINK_OLDEST_AGE_SECONDS: &str = "relais_sink_oldest_message_age_seconds";
/// ZAM send attempts to the DPI (`trigger` = Z01 | Z02 | Z03, `outcome` = delivered | retried |
/// dead_lettered). Recorded by the acks outbox.
pub const ACKS_SENT: &str = "relais_acks_sent_total";
/// MDNs received on the inbound SMTP port (`result` = correlated | ignored | uncorrelated | rejected).
/// Recorded by the MDN listener.
pub const ACKS_MDN: &str = "relais_acks_mdn_total";
/// 1 while an operator has paused the sink, else 0 (`sink`). Recorded by the sinks' pause control.
pub const SINK_PAUSED: &str = "relais_sink_paused";

/// Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (`_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, sum and count.
    Histogram,
}

impl Kind {
    /// The `# TYPE` word.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric of the catalog.
#[derive(Debug, Clone, Copy)]
pub struct MetricSpec {
    /// Full name as exported.
    pub name: &'static str,
    /// Type.
    pub kind: Kind,
    /// Label names.
    pub labels: &'static [&'static str],
    /// The stage that records it (`ingest`, `journal`, `ops`, `process`, or a later stage: `mapping`,
    /// `routing`, `bus`, `sinks`).
    pub stage: &'static str,
    /// Help text (also the `# HELP` line).
    pub help: &'static str,
}

const SECONDS_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const DELIVERY_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];

/// Every metric Relais exports or will export once its stage records it: the single list behind the
/// `# HELP` lines, the README and the deploy checks.
pub const CATALOG: &[MetricSpec] = &[
    spec(
        INGEST_RECEIVED,
        Kind::Counter,
        &["transport", "sender", "event"],
        "ingest",
        "Messages read from a listener, before any check.",
    ),
    spec(
        INGEST_ACKS,
        Kind::Counter,
        &["transport", "sender", "event", "code"],
        "ingest",
        "ACKs answered, by MSA-1 code (AA, AE, AR).",
    ),
    spec(
        INGEST_REJECTED,
        Kind::Counter,
        &["transport", "sender", "event", "reason"],
        "ingest",
        "Messages answered AR or AE, by HL7 error reason (table 0357).",
    ),
    spec(
        INGEST_DUPLICATES,
        Kind::Counter,
        &["transport", "sender"],
        "ingest",
        "Resent messages acknowledged again without being stored twice.",
    ),
    spec(
        INGEST_DOCUMENTS,
        Kind::Counter,
        &["transport", "outcome"],
        "documents",
        "CDA documents taken in, by outcome (accepted, duplicate, invalid, too_large, content_type, conflict, \
         unavailable).",
    ),
    spec(MLLP_CONNECTIONS, Kind::Gauge, &["transport"], "ingest", "MLLP connections open now."),
    spec(
        TLS_HANDSHAKE_FAILURES,
        Kind::Counter,
        &["reason"],
        "ingest",
        "TLS clients refused: failed handshake or certificate not allowed.",
    ),
    spec(
        JOURNAL_COMMIT_SECONDS,
        Kind::Histogram,
        &[],
        "journal",
        "Time to write and fsync one journal group commit, in seconds.",
    ),
    spec(JOURNAL_BATCH_SIZE, Kind::Histogram, &[], "journal", "Messages per journal group commit."),
    spec(
        JOURNAL_COMMIT_FAILURES,
        Kind::Counter,
        &[],
        "journal",
        "Journal group commits that failed (their messages were answered AR).",
    ),
    spec(JOURNAL_ENTRIES, Kind::Gauge, &["state"], "journal", "Journal entries per state."),
    spec(DATA_DIR_BYTES, Kind::Gauge, &[], "ops", "Bytes used by the data directory (journal included)."),
    spec(DATA_DIR_FREE_BYTES, Kind::Gauge, &[], "ops", "Bytes available on the data directory's filesystem."),
    spec(
        DATA_DIR_FILESYSTEM_BYTES,
        Kind::Gauge,
        &[],
        "ops",
        "Size of the data directory's filesystem in bytes.",
    ),
    spec(
        BUILD_INFO,
        Kind::Gauge,
        &["version"],
        "ops",
        "Always 1; the version label names the running Relais.",
    ),
    spec(PROCESS_RSS, Kind::Gauge, &[], "process", "Resident memory size in bytes."),
    spec(PROCESS_OPEN_FDS, Kind::Gauge, &[], "process", "Open file descriptors."),
    spec(PROCESS_MAX_FDS, Kind::Gauge, &[], "process", "Maximum number of open file descriptors."),
    spec(
        PROCESS_START_TIME,
        Kind::Gauge,
        &[],
        "process",
        "Start time of the process since the Unix epoch, in seconds.",
    ),
    spec(
        MAPPING_FAILURES,
        Kind::Counter,
        &["reason"],
        "mapping",
        "Messages the map stage could not turn into FHIR, by reason.",
    ),
    spec(
        ROUTING_MESSAGES,
        Kind::Counter,
        &["result"],
        "routing",
        "Messages routed to at least one sink (routed) or to none (unrouted).",
    ),
    spec(
        BUS_PUBLISHED,
        Kind::Counter,
        &["result"],
        "bus",
        "Envelopes published on the bus, by broker answer, or undeliverable (sink no longer configured).",
    ),
    spec(
        BUS_CONFIRM_SECONDS,
        Kind::Histogram,
        &[],
        "bus",
        "Time from publish to the broker's confirm, in seconds.",
    ),
    spec(
        SINK_DELIVERIES,
        Kind::Counter,
        &["sink", "outcome"],
        "sinks",
        "Delivery attempts by outcome: delivered, retried, failed, dead_lettered, undeliverable.",
    ),
    spec(
        SINK_DELIVERY_SECONDS,
        Kind::Histogram,
        &["sink"],
        "sinks",
        "Time of one successful delivery, in seconds.",
    ),
    spec(SINK_QUEUE_DEPTH, Kind::Gauge, &["sink"], "sinks", "Messages waiting for a sink."),
    spec(
        SINK_OLDEST_AGE_SECONDS,
        Kind::Gauge,
        &["sink"],
        "sinks",
        "Age of the oldest message waiting for a sink, in seconds.",
    ),
    spec(
        ACKS_SENT,
        Kind::Counter,
        &["trigger", "outcome"],
        "sinks",
        "ZAM business acknowledgements sent to the DPI, by trigger and outcome: delivered (AA), retried, \
         dead_lettered.",
    ),
    spec(
        ACKS_MDN,
        Kind::Counter,
        &["result"],
        "sinks",
        "MDNs received on the inbound SMTP port: correlated (a ZAM^Z03 queued), ignored (not displayed), \
         uncorrelated (no document of ours), rejected (not an MDN).",
    ),
    spec(SINK_PAUSED, Kind::Gauge, &["sink"], "sinks", "1 while an operator has paused the sink, else 0."),
];

const fn spec(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    stage: &'static str,
    help: &'static str,
) -> MetricSpec {
    MetricSpec { name, kind, labels, stage, help }
}

fn buckets_for(name: &str) -> &'static [f64] {
    match name {
        JOURNAL_BATCH_SIZE => BATCH_BUCKETS,
        SINK_DELIVERY_SECONDS => DELIVERY_BUCKETS,
        _ => SECONDS_BUCKETS,
    }
}

fn unit_for(spec: &MetricSpec) -> Option<Unit> {
    if spec.name.ends_with("_seconds") || spec.name.ends_with("_seconds_total") {
        Some(Unit::Seconds)
    } else if spec.name.ends_with("_bytes") {
        Some(Unit::Bytes)
    } else if spec.kind == Kind::Counter {
        Some(Unit::Count)
    } else {
        None
    }
}

struct Registry {
    handle: PrometheusHandle,
    senders: LabelSet,
    events: LabelSet,
}

static REGISTRY: OnceLock<Registry> = OnceLock::new();

/// Installs the Prometheus recorder (first call only; later calls return the same handle) and describes
/// every metric of [`CATALOG`]. `known_senders` are sender labels always kept; `label_limit` caps the
/// distinct values of the `sender` and `event` labels.
pub fn install(known_senders: &[String], label_limit: usize) -> PrometheusHandle {
    let registry = REGISTRY.get_or_init(|| {
        let mut builder = PrometheusBuilder::new();
        for spec in CATALOG.iter().filter(|s| s.kind == Kind::Histogram) {
            builder = match builder
                .set_buckets_for_metric(Matcher::Full(spec.name.into()), buckets_for(spec.name))
            {
                Ok(b) => b,
                Err(_) => unreachable!("bucket lists are not empty"),
            };
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if let Err(e) = metrics::set_global_recorder(recorder) {
            tracing::warn!(error = %e, "another metrics recorder is installed; /metrics will stay empty");
        }
        for spec in CATALOG {
            let unit = unit_for(spec);
            match (spec.kind, unit) {
                (Kind::Counter, Some(u)) => metrics::describe_counter!(spec.name, u, spec.help),
                (Kind::Counter, None) => metrics::describe_counter!(spec.name, spec.help),
                (Kind::Gauge, Some(u)) => metrics::describe_gauge!(spec.name, u, spec.help),
                (Kind::Gauge, None) => metrics::describe_gauge!(spec.name, spec.help),
                (Kind::Histogram, Some(u)) => metrics::describe_histogram!(spec.name, u, spec.help),
                (Kind::Histogram, None) => metrics::describe_histogram!(spec.name, spec.help),
            }
        }
        gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        if let Some(start) = process_start_time() {
            gauge!(PROCESS_START_TIME).set(start);
        }
        // Series that exist from the start, so dashboards and alerts see 0 rather than nothing.
        for transport in ["mllp", "mllp_tls"] {
            gauge!(MLLP_CONNECTIONS, "transport" => transport).increment(0.0);
        }
        counter!(JOURNAL_COMMIT_FAILURES).absolute(0);
        for reason in ["handshake", "client_refused"] {
            counter!(TLS_HANDSHAKE_FAILURES, "reason" => reason).absolute(0);
        }
        Registry {
            handle,
            senders: LabelSet::new(label_limit, known_senders),
            events: LabelSet::new(label_limit, &[]),
        }
    });
    registry.handle.clone()
}

/// The recorder's handle, once [`install`] ran.
pub fn handle() -> Option<PrometheusHandle> {
    REGISTRY.get().map(|r| r.handle.clone())
}

/// Refreshes the scrape-time gauges (process, journal counts) and renders the Prometheus text format.
pub fn render(journal: Option<&Journal>) -> String {
    let Some(registry) = REGISTRY.get() else { return String::new() };
    refresh_process();
    if let Some(journal) = journal
        && let Ok(stats) = journal.stats()
    {
        // One series per journal state; the stats' totals (`journaled`, `accepted`, `pruned`) are not states.
        for state in State::ALL {
            let count = stats.get(state.as_str()).copied().unwrap_or(0);
            gauge!(JOURNAL_ENTRIES, "state" => state.as_str()).set(count as f64);
        }
    }
    registry.handle.render()
}

/// The labels of one inbound message: transport plus bounded sender and event.
#[derive(Debug, Clone)]
pub struct IngestLabels {
    transport: &'static str,
    sender: Arc<str>,
    event: Arc<str>,
}

impl IngestLabels {
    /// Labels for a message with these header fields (`None` when the header could not be read).
    pub fn new(transport: Transport, header: Option<&HeaderFields>) -> IngestLabels {
        let transport = transport_label(transport);
        let Some(registry) = REGISTRY.get() else {
            return IngestLabels { transport, sender: Arc::from("unknown"), event: Arc::from("unknown") };
        };
        let (sender, event) = match header {
            None => (Arc::from("unknown"), Arc::from("unknown")),
            Some(h) => (
                registry.senders.admit(first_component(&h.sending_facility)),
                registry.events.admit(event_label(&h.message_type).as_ref()),
            ),
        };
        IngestLabels { transport, sender, event }
    }

    /// Counts one message read.
    pub fn received(&self) {
        counter!(INGEST_RECEIVED, "transport" => self.transport, "sender" => self.sender.clone(),
                 "event" => self.event.clone())
        .increment(1);
    }

    /// Counts one ACK answered, and the rejection behind an AE/AR.
    pub fn answered(&self, code: AckCode, error: Option<ErrorCode>) {
        counter!(INGEST_ACKS, "transport" => self.transport, "sender" => self.sender.clone(),
                 "event" => self.event.clone(), "code" => ack_code(code))
        .increment(1);
        if code != AckCode::AA {
            let reason = error.map(reason_label).unwrap_or("unknown");
            counter!(INGEST_REJECTED, "transport" => self.transport, "sender" => self.sender.clone(),
                     "event" => self.event.clone(), "reason" => reason)
            .increment(1);
        }
    }

    /// Counts one duplicate acknowledged again.
    pub fn duplicate(&self) {
        counter!(INGEST_DUPLICATES, "transport" => self.transport, "sender" => self.sender.clone())
            .increment(1);
    }
}

/// Counts one CDA document taken in; `outcome` is one of the values listed on [`INGEST_DOCUMENTS`].
pub fn document(transport: Transport, outcome: &'static str) {
    counter!(INGEST_DOCUMENTS, "transport" => transport_label(transport), "outcome" => outcome).increment(1);
}

/// An open MLLP connection: counted while this value lives.
#[derive(Debug)]
pub struct OpenConnection(&'static str);

impl OpenConnection {
    /// Counts a connection as open until the returned guard is dropped.
    pub fn open(transport: Transport) -> OpenConnection {
        let transport = transport_label(transport);
        gauge!(MLLP_CONNECTIONS, "transport" => transport).increment(1.0);
        OpenConnection(transport)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        gauge!(MLLP_CONNECTIONS, "transport" => self.0).decrement(1.0);
    }
}

/// Counts a refused TLS client: `client_refused` when the handshake passed but the certificate is not
/// allowed.
pub fn tls_refused(handshake_failed: bool) {
    let reason = if handshake_failed { "handshake" } else { "client_refused" };
    counter!(TLS_HANDSHAKE_FAILURES, "reason" => reason).increment(1);
}

/// Records one journal group commit (failed ones too): its duration and its size.
pub fn journal_commit(batch: u64, took: Duration) {
    histogram!(JOURNAL_COMMIT_SECONDS).record(took.as_secs_f64());
    histogram!(JOURNAL_BATCH_SIZE).record(batch as f64);
}

/// Counts one failed journal group commit.
pub fn journal_commit_failed() {
    counter!(JOURNAL_COMMIT_FAILURES).increment(1);
}

/// Measures the data directory every `interval` (walk and `statvfs` on a blocking thread) and runs the
/// recorder's upkeep, until shutdown.
pub async fn run_housekeeping(data_dir: PathBuf, interval: Duration, mut shutdown: Shutdown) {
    loop {
        let dir = data_dir.clone();
        let measured = tokio::task::spawn_blocking(move || measure_data_dir(&dir)).await;
        if let Ok(Some(m)) = measured {
            gauge!(DATA_DIR_BYTES).set(m.used as f64);
            gauge!(DATA_DIR_FREE_BYTES).set(m.free as f64);
            gauge!(DATA_DIR_FILESYSTEM_BYTES).set(m.filesystem as f64);
        }
        if let Some(handle) = handle() {
            handle.run_upkeep();
        }
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Sizes of the data directory and its filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirUsage {
    /// Bytes of every file under the directory.
    pub used: u64,
    /// Bytes available to an unprivileged writer on its filesystem.
    pub free: u64,
    /// Size of the filesystem.
    pub filesystem: u64,
}

/// Walks `dir` (not following symlinks) and asks the filesystem for its free space.
pub fn measure_data_dir(dir: &Path) -> Option<DirUsage> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    let used = dir_size(dir);
    Some(DirUsage {
        used,
        free: stat.f_bavail.saturating_mul(stat.f_frsize),
        filesystem: stat.f_blocks.saturating_mul(stat.f_frsize),
    })
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                total = total.saturating_add(meta.len());
            }
        }
    }
    total
}

fn refresh_process() {
    let page = rustix::param::page_size() as f64;
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm")
        && let Some(rss_pages) = statm.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok())
    {
        gauge!(PROCESS_RSS).set(rss_pages * page);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        // The directory handle itself is one of the entries.
        gauge!(PROCESS_OPEN_FDS).set(fds.count().saturating_sub(1) as f64);
    }
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits")
        && let Some(max) = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<f64>().ok())
    {
        gauge!(PROCESS_MAX_FDS).set(max);
    }
}

fn process_start_time() -> Option<f64> {
    // Field 22 of /proc/self/stat: start time in clock ticks after boot; `btime` in /proc/stat: the boot.
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    let ticks: f64 = after_comm.split_whitespace().nth(19)?.parse().ok()?;
    let boot: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let hz = rustix::param::clock_ticks_per_second() as f64;
    Some(boot + ticks / hz)
}

fn transport_label(transport: Transport) -> &'static str {
    match transport {
        Transport::Mllp => "mllp",
        Transport::MllpTls => "mllp_tls",
        Transport::Http => "http",
        Transport::Folder => "folder",
    }
}

fn ack_code(code: AckCode) -> &'static str {
    match code {
        AckCode::AA => "AA",
        AckCode::AE => "AE",
        AckCode::AR => "AR",
    }
}

fn reason_label(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::SegmentSequence => "segment_sequence",
        ErrorCode::RequiredFieldMissing => "required_field_missing",
        ErrorCode::DataType => "data_type",
        ErrorCode::TableValueNotFound => "table_value_not_found",
        ErrorCode::UnsupportedMessageType => "unsupported_message_type",
        ErrorCode::DuplicateKey => "duplicate_key",
        ErrorCode::InternalError => "internal_error",
    }
}

fn first_component(field: &str) -> &str {
    field.split('^').next().unwrap_or("")
}

/// `ADT^A01^ADT_A01` → `ADT_A01`; anything that is not two codes of 2–3 letters or digits → `other`.
fn event_label(message_type: &str) -> String {
    let mut parts = message_type.split('^');
    let code = parts.next().unwrap_or("");
    let trigger = parts.next().unwrap_or("");
    let ok = |s: &str| {
        (2..=3).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    };
    match (ok(code), ok(trigger)) {
        (true, true) => format!("{code}_{trigger}"),
        (true, false) if trigger.is_empty() => code.to_string(),
        _ => "other".to_string(),
    }
}

/// A label's admitted values: at most `limit` distinct ones besides the known ones; the rest become `other`.
struct LabelSet {
    limit: usize,
    seen: Mutex<HashSet<Arc<str>>>,
}

impl LabelSet {
    fn new(limit: usize, known: &[String]) -> LabelSet {
        let seen = known.iter().map(|k| Arc::from(clean(k))).collect();
        LabelSet { limit: limit + known.len(), seen: Mutex::new(seen) }
    }

    /// The label for `raw`: a shared string, so recording it costs no allocation once it was seen.
    fn admit(&self, raw: &str) -> Arc<str> {
        let trimmed = raw.trim();
        let cleaned;
        let value = if is_clean(trimmed) {
            trimmed
        } else {
            cleaned = clean(trimmed);
            cleaned.as_str()
        };
        if value == "none" || value == "other" {
            return Arc::from(value);
        }
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = seen.get(value) {
            return Arc::clone(known);
        }
        if seen.len() < self.limit {
            let value: Arc<str> = Arc::from(value);
            seen.insert(Arc::clone(&value));
            return value;
        }
        Arc::from("other")
    }
}

fn is_clean(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Keeps `[A-Za-z0-9._-]` (others become `_`), at most 64 characters; empty → `none`.
fn clean(raw: &str) -> String {
    let value: String = raw
        .trim()
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .collect();
    if value.is_empty() { "none".to_string() } else { value }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_labels_are_message_code_and_trigger() {
        assert_eq!(event_label("ADT^A01^ADT_A01"), "ADT_A01");
        assert_eq!(event_label("ORU^R01"), "ORU_R01");
        assert_eq!(event_label("ACK"), "ACK");
        assert_eq!(event_label("adt^a01"), "other");
        assert_eq!(event_label("ADT^DUPONT JEAN"), "other");
    }

    #[test]
    fn label_set_caps_distinct_values_and_keeps_known_ones() {
        let set = LabelSet::new(2, &["CHU_NANTES".to_string()]);
        assert_eq!(&*set.admit("A"), "A");
        assert_eq!(&*set.admit("B"), "B");
        assert_eq!(&*set.admit("C"), "other");
        assert_eq!(&*set.admit("A"), "A");
        assert_eq!(&*set.admit("CHU_NANTES"), "CHU_NANTES");
        assert_eq!(&*set.admit(""), "none");
        assert_eq!(&*set.admit("CH Mayenne/é"), "other");
    }

    #[test]
    fn clean_keeps_a_safe_alphabet() {
        assert_eq!(clean("CH Mayenne/é"), "CH_Mayenne__");
        assert_eq!(clean(&"x".repeat(100)).len(), 64);
    }

    #[test]
    fn every_catalog_name_follows_prometheus_conventions() {
        let mut names = HashSet::new();
        for spec in CATALOG {
            assert!(names.insert(spec.name), "{} listed twice", spec.name);
            assert!(spec.name.starts_with("relais_") || spec.name.starts_with("process_"), "{}", spec.name);
            assert_eq!(spec.kind == Kind::Counter, spec.name.ends_with("_total"), "{}", spec.name);
            assert!(spec.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
            assert!(!spec.help.is_empty());
        }
    }

    #[test]
    fn data_dir_usage_counts_files_below_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a"), vec![0u8; 1000]).unwrap();
        std::fs::write(dir.path().join("sub/b"), vec![0u8; 234]).unwrap();
        let usage = measure_data_dir(dir.path()).unwrap();
        assert_eq!(usage.used, 1234);
        assert!(usage.filesystem >= usage.free && usage.filesystem > 0);
    }
}
