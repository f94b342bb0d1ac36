//! The admin API: JSON routes under `/api/`, behind the bearer token (`http.admin_token`).
//!
//! | route | what |
//! |---|---|
//! | `GET /api/search?state=&sender=&control_id=&event=&since=&until=&patient=&limit=` | messages, newest first |
//! | `GET /api/messages/{id}` | one message's metadata and timeline |
//! | `POST /api/replay` `{"ids":[..]}` or `{"state":"failed"}`, optional `"from":"map"\|"publish"` | replay |
//! | `GET /api/sinks` | per sink: paused, destinations published among recent messages, dead letters |
//! | `GET /api/dlq/{sink}?limit=` | dead letters (oldest first, left in place) with the sink's last reason |
//! | `GET /api/dlq/{sink}/{id}` | one dead letter with its bundle |
//! | `POST /api/dlq/{sink}/replay` / `purge` `{"ids":[..]}` (no ids: all) | publish again / drop |
//! | `POST /api/sinks/{sink}/pause` / `resume` | stop / restart taking from the bus (kept across restarts) |
//! | `GET /api/undeliverable?sink=&limit=` | messages a sink could not deliver for good, with the reason |
//!
//! `patient` is the patient key as the mapping forms it (`<assigner>|<IPP>`, or the INS); it is hashed at
//! once into the partition key the journal stores and is never logged. Actions that change something send
//! an audit event ([`super::audit`]) naming the operator: the `X-Relais-Operator` header, else the peer.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State as AxumState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Admin, audit};
use crate::bus::{self, Envelope};
use crate::facts::EventClass;
use crate::journal::{EntryMeta, Filter, ReplayFrom, State};
use crate::sinks::ledger::SinkRecord;

/// Most entries a search looks at (newest first, or of one state).
pub const SEARCH_SCAN: usize = 200_000;

/// Why an admin request failed; each maps to an HTTP status with `{"error": ...}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (unknown state, bad date...).
    #[error("{0}")]
    BadRequest(String),
    /// No such entry, sink or dead letter.
    #[error("{0}")]
    NotFound(String),
    /// Not available with this configuration.
    #[error("{0}")]
    Unsupported(String),
    /// The journal or the bus failed.
    #[error("{0}")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Internal(reason) => {
                tracing::error!(%reason, "admin request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (status, Json(serde_json::json!({ "error": self.to_string() }))).into_response()
    }
}

impl From<crate::journal::Error> for ApiError {
    fn from(error: crate::journal::Error) -> Self {
        match error {
            crate::journal::Error::Unknown(id) => ApiError::NotFound(format!("no journal entry {id}")),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<bus::Error> for ApiError {
    fn from(error: bus::Error) -> Self {
        match error {
            bus::Error::Unsupported(what) => ApiError::Unsupported(format!("not supported by the {what}")),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// Query of `GET /api/search` (all optional; the console's search form uses the same names). Its `Debug`
/// masks the patient key.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SearchQuery {
    /// A journal state (`received`, `failed`, `published`...).
    pub state: Option<String>,
    /// MSH-4.
    pub sender: Option<String>,
    /// MSH-10.
    pub control_id: Option<String>,
    /// Event class (`admission`, `discharge`...).
    pub event: Option<String>,
    /// Received at or after: RFC 3339 time or a date (UTC midnight).
    pub since: Option<String>,
    /// Received before: RFC 3339 time or a date (UTC midnight).
    pub until: Option<String>,
    /// Patient key (`<assigner>|<IPP>` or the INS); hashed before use.
    pub patient: Option<String>,
    /// Most results (100; at most 10000).
    pub limit: Option<usize>,
}

impl std::fmt::Debug for SearchQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchQuery")
            .field("state", &self.state)
            .field("sender", &self.sender)
            .field("control_id", &self.control_id)
            .field("event", &self.event)
            .field("since", &self.since)
            .field("until", &self.until)
            .field("patient", &self.patient.as_ref().map(|_| "***"))
            .field("limit", &self.limit)
            .finish()
    }
}

/// Empty strings (from an HTML form) count as absent.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn parse_time(key: &str, value: &str) -> Result<Timestamp, ApiError> {
    if let Ok(at) = value.parse::<Timestamp>() {
        return Ok(at);
    }
    value
        .parse::<jiff::civil::Date>()
        .and_then(|date| date.to_zoned(jiff::tz::TimeZone::UTC))
        .map(|zoned| zoned.timestamp())
        .map_err(|_| ApiError::BadRequest(format!("`{key}`: expected an RFC 3339 time or a YYYY-MM-DD date")))
}

fn parse_event(name: &str) -> Result<EventClass, ApiError> {
    serde_json::from_value(serde_json::Value::String(name.to_owned()))
        .map_err(|_| ApiError::BadRequest(format!("unknown event class `{name}`")))
}

fn parse_state(name: &str) -> Result<State, ApiError> {
    State::from_str(name).ok_or_else(|| ApiError::BadRequest(format!("unknown state `{name}`")))
}

impl SearchQuery {
    /// The journal filter this query asks for (the patient key hashed).
    pub fn filter(&self) -> Result<Filter, ApiError> {
        Ok(Filter {
            state: given(&self.state).map(parse_state).transpose()?,
            sender: given(&self.sender).map(str::to_owned),
            control_id: given(&self.control_id).map(str::to_owned),
            event_class: given(&self.event).map(parse_event).transpose()?,
            since: given(&self.since).map(|v| parse_time("since", v)).transpose()?,
            until: given(&self.until).map(|v| parse_time("until", v)).transpose()?,
            partition_key: given(&self.patient).map(bus::partition_key),
        })
    }
}

impl Admin {
    /// Messages matching `query`, newest first.
    pub async fn search(&self, query: &SearchQuery) -> Result<Vec<EntryMeta>, ApiError> {
        let filter = query.filter()?;
        let limit = query.limit.unwrap_or(100).clamp(1, 10_000);
        let journal = self.journal.clone();
        tokio::task::spawn_blocking(move || journal.search(&filter, limit, SEARCH_SCAN))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(ApiError::from)
    }

    /// One message's timeline.
    pub async fn timeline(&self, id: u64) -> Result<Timeline, ApiError> {
        let entry =
            self.journal.get(id)?.ok_or_else(|| ApiError::NotFound(format!("no journal entry {id}")))?;
        let mut timeline = Timeline::of(entry);
        for step in &mut timeline.sinks {
            step.dead_lettered = self.bus.is_dead_letter(&step.sink, id)?;
            let record =
                self.ledger.outcome(&step.sink, id).map_err(|e| ApiError::Internal(e.to_string()))?;
            if let Some(record) = record {
                step.delivered = match record.outcome.as_str() {
                    "delivered" => Some(true),
                    "retry" | "held" => None,
                    _ => Some(false),
                };
                step.outcome = Some(record.outcome.as_str().to_owned());
                step.reason = record.outcome.reason().map(str::to_owned);
                step.attempts = Some(record.attempts);
                step.at = Timestamp::from_second(record.at).ok();
            }
            step.purged = self.ledger.purged(&step.sink, id).ok().flatten().is_some();
            let history =
                self.ledger.history(&step.sink, id).map_err(|e| ApiError::Internal(e.to_string()))?;
            step.history = history.iter().map(Attempt::from).collect();
        }
        Ok(timeline)
    }

    /// Sends `ids` through the pipeline again from `from`; rejected or unknown entries are refused.
    pub async fn replay(&self, ids: &[u64], from: ReplayFrom, operator: &str) -> ReplayReport {
        let mut report = ReplayReport::default();
        let mut accepted = Vec::with_capacity(ids.len());
        for &id in ids {
            let refusal = match self.journal.get(id) {
                Ok(None) => "no such entry".to_owned(),
                Ok(Some(entry)) if entry.state == State::Rejected => {
                    "rejected at intake (the sender was told AR/AE): send it again instead".to_owned()
                }
                Ok(Some(_)) => {
                    accepted.push(id);
                    continue;
                }
                Err(error) => error.to_string(),
            };
            report.refused.push(Refused { id, reason: refusal });
        }
        let results = self.journal.replay_many(&accepted, from).await;
        for (id, result) in accepted.into_iter().zip(results) {
            match result {
                Ok(()) => report.replayed.push(id),
                Err(error) => report.refused.push(Refused { id, reason: error.to_string() }),
            }
        }
        audit::record(operator, &format!("replay from {}", from.as_str()), "journal", &report.replayed);
        report
    }

    fn known_sink(&self, sink: &str) -> Result<(), ApiError> {
        if self.sinks.iter().any(|s| s == sink) {
            Ok(())
        } else {
            Err(ApiError::NotFound(format!("no sink `{sink}` (configured: {})", self.sinks.join(", "))))
        }
    }

    /// Dead letters of `sink`, oldest first, left in place.
    pub async fn dead_letters(&self, sink: &str, limit: usize) -> Result<Vec<Envelope>, ApiError> {
        self.known_sink(sink)?;
        Ok(self.bus.dead_letters(sink, limit).await?)
    }

    /// Dead letters of `sink` as listed: each with the sink's last outcome (reason, attempts, time).
    pub async fn dead_letter_list(&self, sink: &str, limit: usize) -> Result<Vec<DeadLetter>, ApiError> {
        let dead = self.dead_letters(sink, limit).await?;
        Ok(dead
            .iter()
            .map(|e| DeadLetter::from(e).with_record(self.ledger.outcome(sink, e.message_id)))
            .collect())
    }

    /// One dead letter of `sink` with its bundle (the queue is read, nothing taken).
    pub async fn dead_letter(&self, sink: &str, id: u64) -> Result<Option<Envelope>, ApiError> {
        self.known_sink(sink)?;
        Ok(self.bus.dead_letter(sink, id).await?)
    }

    /// Pauses (`true`) or resumes `sink`; returns false when it already was so.
    pub fn set_paused(&self, sink: &str, paused: bool, operator: &str) -> Result<bool, ApiError> {
        self.known_sink(sink)?;
        let changed = self.pauses.set(sink, paused).map_err(|e| ApiError::Internal(e.to_string()))?;
        audit::record(operator, if paused { "sink pause" } else { "sink resume" }, sink, &[]);
        Ok(changed)
    }

    /// The last `limit` messages a sink (or every sink) reported undeliverable, newest first.
    pub fn undeliverable(&self, sink: Option<&str>, limit: usize) -> Result<Vec<Undeliverable>, ApiError> {
        if let Some(sink) = sink {
            self.known_sink(sink)?;
        }
        let found = self
            .ledger
            .outcomes_named(sink, "undeliverable", limit)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(found
            .into_iter()
            .map(|(sink, message_id, record)| Undeliverable {
                sink,
                message_id,
                reason: record.outcome.reason().unwrap_or_default().to_owned(),
                attempts: record.attempts,
                at: Timestamp::from_second(record.at).ok(),
            })
            .collect())
    }

    /// Takes the dead letters `ids` of `sink` (all of them when `ids` is empty) out of the queue.
    async fn take(&self, sink: &str, ids: &[u64]) -> Result<Vec<Envelope>, ApiError> {
        self.known_sink(sink)?;
        if ids.is_empty() {
            let mut all = Vec::new();
            loop {
                let batch = self.bus.take_dead_letters(sink, 500).await?;
                if batch.is_empty() {
                    return Ok(all);
                }
                all.extend(batch);
            }
        }
        let mut taken = Vec::new();
        for &id in ids {
            match self.bus.take_dead_letter(sink, id).await? {
                Some(envelope) => taken.push(envelope),
                None => return Err(ApiError::NotFound(format!("no dead letter {id} in sink `{sink}`"))),
            }
        }
        Ok(taken)
    }

    /// Publishes dead letters of `sink` again (all when `ids` is empty); returns the journal ids.
    pub async fn replay_dead_letters(
        &self,
        sink: &str,
        ids: &[u64],
        operator: &str,
    ) -> Result<Vec<u64>, ApiError> {
        if !ids.is_empty() {
            return self.replay_dead_letters_by_id(sink, ids, operator).await;
        }
        let envelopes = self.take(sink, ids).await?;
        let ids: Vec<u64> = envelopes.iter().map(|e| e.message_id).collect();
        if let Err(error) = self.bus.publish(&envelopes).await {
            // Not confirmed: the envelopes are no longer dead letters nor surely queued. Say which.
            tracing::error!(%error, sink, ids = ?ids, "dead letters taken but not published again");
            return Err(ApiError::Internal(format!("publishing again failed for {ids:?}: {error}")));
        }
        audit::record(operator, "dead letter replay", sink, &ids);
        Ok(ids)
    }

    /// Publishes the dead letters `ids` again, each one before it leaves the dead-letter queue: a failure
    /// leaves it a dead letter (at worst, published twice: the sink's ledger drops the copy).
    async fn replay_dead_letters_by_id(
        &self,
        sink: &str,
        ids: &[u64],
        operator: &str,
    ) -> Result<Vec<u64>, ApiError> {
        self.known_sink(sink)?;
        let mut envelopes = Vec::with_capacity(ids.len());
        for &id in ids {
            match self.bus.dead_letter(sink, id).await? {
                Some(envelope) => envelopes.push(envelope),
                None => return Err(ApiError::NotFound(format!("no dead letter {id} in sink `{sink}`"))),
            }
        }
        self.bus.publish(&envelopes).await?;
        for &id in ids {
            self.bus.take_dead_letter(sink, id).await?;
        }
        audit::record(operator, "dead letter replay", sink, ids);
        Ok(ids.to_vec())
    }

    /// Drops dead letters of `sink` (all when `ids` is empty); returns the journal ids. The ledger records
    /// the purge, so retention may prune those messages.
    pub async fn purge_dead_letters(
        &self,
        sink: &str,
        ids: &[u64],
        operator: &str,
    ) -> Result<Vec<u64>, ApiError> {
        let ids: Vec<u64> = self.take(sink, ids).await?.iter().map(|e| e.message_id).collect();
        for &id in &ids {
            if let Err(error) = self.ledger.record_purged(sink, id) {
                tracing::error!(%error, sink, id, "purge not recorded in the sinks ledger");
            }
        }
        audit::record(operator, "dead letter purge", sink, &ids);
        Ok(ids)
    }

    /// Per sink, over the newest `recent` messages: destinations decided, published, and dead letters.
    pub async fn flows(&self, recent: usize) -> Result<Vec<Flow>, ApiError> {
        let journal = self.journal.clone();
        let entries = tokio::task::spawn_blocking(move || journal.search(&Filter::default(), recent, recent))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
        let mut flows = Vec::new();
        for sink in &self.sinks {
            let mut flow =
                Flow { sink: sink.clone(), paused: self.pauses.is_paused(sink), ..Flow::default() };
            for delivery in entries.iter().filter_map(|e| e.progress.as_ref()).flat_map(|p| &p.deliveries) {
                if &delivery.destination == sink {
                    flow.routed += 1;
                    flow.published += u64::from(delivery.published);
                }
            }
            flow.dead_letters = match self.bus.dead_letter_count(sink).await {
                Ok(count) => Some(count),
                Err(bus::Error::Unsupported(_)) => None,
                Err(error) => return Err(error.into()),
            };
            flows.push(flow);
        }
        Ok(flows)
    }
}

/// One message and what happened to it, oldest step first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timeline {
    /// The journal metadata.
    pub entry: EntryMeta,
    /// `received`, then each recorded stage (`mapped`, `routed`, `published`, `failed`, `replayed`...).
    pub steps: Vec<Step>,
    /// Per destination sink: published on the bus; `delivered` stays null until sinks report deliveries.
    pub sinks: Vec<SinkStep>,
}

/// One step of a [`Timeline`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    /// When.
    pub at: Timestamp,
    /// What.
    pub stage: String,
    /// An error, the destinations, or where a replay started.
    pub detail: Option<String>,
}

/// Where one destination of a message stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SinkStep {
    /// The sink instance.
    pub sink: String,
    /// The route that chose it.
    pub route: String,
    /// The bus confirmed the envelope.
    pub published: bool,
    /// Delivered by the sink: true, false once it gave up (failed, undeliverable), null while pending
    /// (no outcome yet, retrying, held for a person).
    pub delivered: Option<bool>,
    /// In the sink's dead-letter queue now (null on AMQP, where the ledger's `failed` outcome tells).
    pub dead_lettered: Option<bool>,
    /// The sink's last outcome: `delivered`, `retry`, `failed`, `undeliverable`, `held` (null: none yet).
    #[serde(default)]
    pub outcome: Option<String>,
    /// Its reason (never patient data).
    #[serde(default)]
    pub reason: Option<String>,
    /// Attempts made.
    #[serde(default)]
    pub attempts: Option<u32>,
    /// When the last outcome was recorded.
    #[serde(default)]
    pub at: Option<Timestamp>,
    /// An operator purged its dead letter after that outcome.
    #[serde(default)]
    pub purged: bool,
    /// Every outcome the sink recorded, oldest first: each attempt with its error.
    #[serde(default)]
    pub history: Vec<Attempt>,
}

/// One recorded attempt of a sink.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    /// `delivered`, `retry`, `failed`, `undeliverable`, `held`.
    pub outcome: String,
    /// The error or reason (never patient data).
    pub reason: Option<String>,
    /// The attempt number.
    pub attempt: u32,
    /// When.
    pub at: Option<Timestamp>,
}

impl From<&SinkRecord> for Attempt {
    fn from(record: &SinkRecord) -> Self {
        Attempt {
            outcome: record.outcome.as_str().to_owned(),
            reason: record.outcome.reason().map(str::to_owned),
            attempt: record.attempts,
            at: Timestamp::from_second(record.at).ok(),
        }
    }
}

impl Timeline {
    /// The timeline of a journal entry.
    pub fn of(entry: EntryMeta) -> Timeline {
        let received = if entry.state == State::Rejected { "rejected" } else { "received" };
        let mut steps = vec![Step {
            at: entry.received_at,
            stage: received.into(),
            detail: (entry.state == State::Rejected).then(|| entry.reason.clone()).flatten(),
        }];
        steps.extend(entry.history.iter().map(|e| Step {
            at: e.at,
            stage: e.stage.clone(),
            detail: e.detail.clone(),
        }));
        let sinks = entry
            .progress
            .iter()
            .flat_map(|p| &p.deliveries)
            .map(|d| SinkStep {
                sink: d.destination.clone(),
                route: d.route.clone(),
                published: d.published,
                delivered: None,
                dead_lettered: None,
                outcome: None,
                reason: None,
                attempts: None,
                at: None,
                purged: false,
                history: Vec::new(),
            })
            .collect();
        Timeline { entry, steps, sinks }
    }
}

/// What `POST /api/replay` did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReplayReport {
    /// Entries sent back through the pipeline.
    pub replayed: Vec<u64>,
    /// Entries refused, with why.
    pub refused: Vec<Refused>,
}

/// One refused replay.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refused {
    /// The journal id.
    pub id: u64,
    /// Why.
    pub reason: String,
}

/// One sink's traffic among recent messages.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Flow {
    /// The sink instance.
    pub sink: String,
    /// Paused by an operator: takes nothing from the bus.
    #[serde(default)]
    pub paused: bool,
    /// Messages routed to it.
    pub routed: u64,
    /// Of those, published on the bus.
    pub published: u64,
    /// Dead letters waiting (null when the bus cannot count them: AMQP).
    pub dead_letters: Option<u64>,
}

/// A dead letter as listed: the envelope header without the bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The journal id.
    pub message_id: u64,
    /// The sink.
    pub sink: String,
    /// The route that chose the sink.
    pub route: String,
    /// The event class.
    pub event_class: Option<EventClass>,
    /// The patient's partition key (a hash).
    pub partition_key: String,
    /// Size of the FHIR bundle in bytes.
    pub bundle_size: usize,
    /// The sink's last reason (null when the broker dead-lettered it without a sink outcome).
    #[serde(default)]
    pub reason: Option<String>,
    /// Delivery attempts the sink made.
    #[serde(default)]
    pub attempts: Option<u32>,
    /// When the sink recorded that outcome.
    #[serde(default)]
    pub at: Option<Timestamp>,
}

impl DeadLetter {
    /// Adds the sink's last outcome from the ledger (left empty on a ledger error).
    fn with_record<E>(mut self, record: Result<Option<SinkRecord>, E>) -> DeadLetter {
        if let Ok(Some(record)) = record {
            self.reason = record.outcome.reason().map(str::to_owned);
            self.attempts = Some(record.attempts);
            self.at = Timestamp::from_second(record.at).ok();
        }
        self
    }
}

/// A message a sink could not deliver and never will (no GP, no MSSanté address, opposition...).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Undeliverable {
    /// The sink.
    pub sink: String,
    /// The journal id.
    pub message_id: u64,
    /// Why, as the sink said it (no patient data).
    pub reason: String,
    /// Attempts made.
    pub attempts: u32,
    /// When.
    pub at: Option<Timestamp>,
}

impl From<&Envelope> for DeadLetter {
    fn from(envelope: &Envelope) -> Self {
        DeadLetter {
            message_id: envelope.message_id,
            sink: envelope.sink.clone(),
            route: envelope.route.clone(),
            event_class: envelope.event_class,
            partition_key: envelope.partition_key.clone(),
            bundle_size: envelope.bundle.len(),
            reason: None,
            attempts: None,
            at: None,
        }
    }
}

/// Body of `POST /api/replay`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplayRequest {
    /// Journal ids.
    pub ids: Vec<u64>,
    /// Or every entry in this state (at most `limit`, newest first).
    pub state: Option<String>,
    /// Where to start again (`map` by default).
    pub from: Option<ReplayFrom>,
    /// Most entries taken by `state` (10000).
    pub limit: Option<usize>,
}

/// Body of the dead-letter actions: no ids means every dead letter of the sink.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct IdsRequest {
    /// Journal ids.
    pub ids: Vec<u64>,
}

/// Who is acting: the `X-Relais-Operator` header (the CLI sends `$USER`), else the peer address.
pub fn operator(headers: &HeaderMap, peer: SocketAddr) -> String {
    headers
        .get("x-relais-operator")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64)
        .map(|v| format!("{v}@{}", peer.ip()))
        .unwrap_or_else(|| peer.to_string())
}

/// The admin routes, behind the token check.
pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/api/search", get(search))
        .route("/api/messages/{id}", get(timeline))
        .route("/api/replay", post(replay))
        .route("/api/sinks", get(flows))
        .route("/api/sinks/{sink}/{action}", post(pause_resume))
        .route("/api/dlq/{sink}", get(dlq_list))
        .route("/api/dlq/{sink}/{id}", get(dlq_show))
        .route("/api/dlq/{sink}/replay", post(dlq_replay))
        .route("/api/dlq/{sink}/purge", post(dlq_purge))
        .route("/api/undeliverable", get(undeliverable))
        .route_layer(middleware::from_fn_with_state(admin.clone(), require_token))
        .with_state(admin)
}

/// Refuses a request without the right bearer token (header, or the console's `relais_admin` cookie).
pub async fn require_token(
    AxumState(admin): AxumState<Admin>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    if !admin.token.is_empty() && !authorized(&admin.token, request.headers()) {
        return crate::ingest::http::unauthorized();
    }
    next.run(request).await
}

/// True when the headers carry `token` as a bearer token or as the `relais_admin` cookie.
pub fn authorized(token: &str, headers: &HeaderMap) -> bool {
    if crate::ingest::http::bearer_matches(token, headers) {
        return true;
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix("relais_admin="))
        .any(|given| crate::ingest::http::constant_time_eq(given.as_bytes(), token.as_bytes()))
}

async fn search(
    AxumState(admin): AxumState<Admin>,
    Query(query): Query<SearchQuery>,
) -> Result<Json<Vec<EntryMeta>>, ApiError> {
    admin.search(&query).await.map(Json)
}

async fn timeline(
    AxumState(admin): AxumState<Admin>,
    Path(id): Path<u64>,
) -> Result<Json<Timeline>, ApiError> {
    admin.timeline(id).await.map(Json)
}

async fn replay(
    AxumState(admin): AxumState<Admin>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(request): Json<ReplayRequest>,
) -> Result<Json<ReplayReport>, ApiError> {
    let mut ids = request.ids;
    if let Some(state) = given(&request.state) {
        let query = SearchQuery {
            state: Some(state.to_owned()),
            limit: Some(request.limit.unwrap_or(10_000)),
            ..SearchQuery::default()
        };
        ids.extend(admin.search(&query).await?.iter().map(|e| e.id));
    }
    if ids.is_empty() {
        return Err(ApiError::BadRequest("give `ids` or a `state`".into()));
    }
    let from = request.from.unwrap_or(ReplayFrom::Map);
    Ok(Json(admin.replay(&ids, from, &operator(&headers, peer)).await))
}

async fn flows(AxumState(admin): AxumState<Admin>) -> Result<Json<Vec<Flow>>, ApiError> {
    admin.flows(1000).await.map(Json)
}

async fn pause_resume(
    AxumState(admin): AxumState<Admin>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((sink, action)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let paused = match action.as_str() {
        "pause" => true,
        "resume" => false,
        _ => return Err(ApiError::NotFound(format!("no action `{action}` (pause, resume)"))),
    };
    let changed = admin.set_paused(&sink, paused, &operator(&headers, peer))?;
    Ok(Json(serde_json::json!({ "sink": sink, "paused": paused, "changed": changed })))
}

/// Query of `GET /api/undeliverable`.
#[derive(Debug, Deserialize)]
struct UndeliverableQuery {
    sink: Option<String>,
    limit: Option<usize>,
}

async fn undeliverable(
    AxumState(admin): AxumState<Admin>,
    Query(query): Query<UndeliverableQuery>,
) -> Result<Json<Vec<Undeliverable>>, ApiError> {
    let limit = query.limit.unwrap_or(100).clamp(1, 10_000);
    admin.undeliverable(given(&query.sink), limit).map(Json)
}

/// Query of `GET /api/dlq/{sink}`.
#[derive(Debug, Deserialize)]
struct LimitQuery {
    limit: Option<usize>,
}

async fn dlq_list(
    AxumState(admin): AxumState<Admin>,
    Path(sink): Path<String>,
    Query(query): Query<LimitQuery>,
) -> Result<Json<Vec<DeadLetter>>, ApiError> {
    let limit = query.limit.unwrap_or(100).clamp(1, 10_000);
    admin.dead_letter_list(&sink, limit).await.map(Json)
}

async fn dlq_show(
    AxumState(admin): AxumState<Admin>,
    Path((sink, id)): Path<(String, u64)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let envelope = admin
        .dead_letter(&sink, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no dead letter {id} in sink `{sink}`")))?;
    let envelope = &envelope;
    let bundle: serde_json::Value = serde_json::from_slice(&envelope.bundle)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&envelope.bundle).into()));
    let listed = DeadLetter::from(envelope).with_record(admin.ledger.outcome(&sink, id));
    let mut value = serde_json::to_value(listed).unwrap_or_default();
    value["bundle"] = bundle;
    Ok(Json(value))
}

async fn dlq_replay(
    AxumState(admin): AxumState<Admin>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(sink): Path<String>,
    body: Option<Json<IdsRequest>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ids = body.map(|Json(b)| b.ids).unwrap_or_default();
    let done = admin.replay_dead_letters(&sink, &ids, &operator(&headers, peer)).await?;
    Ok(Json(serde_json::json!({ "replayed": done })))
}

async fn dlq_purge(
    AxumState(admin): AxumState<Admin>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(sink): Path<String>,
    body: Option<Json<IdsRequest>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ids = body.map(|Json(b)| b.ids).unwrap_or_default();
    let done = admin.purge_dead_letters(&sink, &ids, &operator(&headers, peer)).await?;
    Ok(Json(serde_json::json!({ "purged": done })))
}
