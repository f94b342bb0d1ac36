//! The admin API: JSON routes under `/api/`, behind the bearer token (`http.admin_token`).
//!
//! | route | what |
//! |---|---|
//! | `GET /api/search?state=&sender=&control_id=&event=&since=&until=&patient=&limit=` | messages, newest first |
//! | `GET /api/messages/{id}` | one message's metadata and timeline |
//! | `POST /api/replay` `{"ids":[..]}` or `{"state":"failed"}`, optional `"from":"map"\|"publish"` | replay |
//! | `GET /api/sinks` | per sink: destinations published among recent messages, dead letters |
//! | `GET /api/dlq/{sink}?limit=` | dead letters (oldest first, left in place) |
//! | `GET /api/dlq/{sink}/{id}` | one dead letter with its bundle |
//! | `POST /api/dlq/{sink}/replay` / `purge` `{"ids":[..]}` (no ids: all) | publish again / drop |
//! | `POST /api/sinks/{sink}/pause` / `resume` | 501 until sinks consume the bus |
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

    /// Drops dead letters of `sink` (all when `ids` is empty); returns the journal ids.
    pub async fn purge_dead_letters(
        &self,
        sink: &str,
        ids: &[u64],
        operator: &str,
    ) -> Result<Vec<u64>, ApiError> {
        let ids: Vec<u64> = self.take(sink, ids).await?.iter().map(|e| e.message_id).collect();
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
            let mut flow = Flow { sink: sink.clone(), ..Flow::default() };
            for delivery in entries.iter().filter_map(|e| e.progress.as_ref()).flat_map(|p| &p.deliveries) {
                if &delivery.destination == sink {
                    flow.routed += 1;
                    flow.published += u64::from(delivery.published);
                }
            }
            flow.dead_letters = match self.bus.dead_letters(sink, 10_000).await {
                Ok(dead) => Some(dead.len() as u64),
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
    /// Delivered by the sink: unknown (null) until the sinks record their outcomes in the journal.
    pub delivered: Option<bool>,
    /// In the sink's dead-letter queue now (null on AMQP, which cannot tell without taking it).
    pub dead_lettered: Option<bool>,
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
    Path((sink, action)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    admin.known_sink(&sink)?;
    if action != "pause" && action != "resume" {
        return Err(ApiError::NotFound(format!("no action `{action}` (pause, resume)")));
    }
    Err(ApiError::Unsupported(format!(
        "cannot {action} `{sink}`: no sink consumer runs in this build yet (envelopes wait on the bus)"
    )))
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
    let dead = admin.dead_letters(&sink, limit).await?;
    Ok(Json(dead.iter().map(DeadLetter::from).collect()))
}

async fn dlq_show(
    AxumState(admin): AxumState<Admin>,
    Path((sink, id)): Path<(String, u64)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let dead = admin.dead_letters(&sink, usize::MAX).await?;
    let envelope = dead
        .iter()
        .find(|e| e.message_id == id)
        .ok_or_else(|| ApiError::NotFound(format!("no dead letter {id} in sink `{sink}`")))?;
    let bundle: serde_json::Value = serde_json::from_slice(&envelope.bundle)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&envelope.bundle).into()));
    let mut value = serde_json::to_value(DeadLetter::from(envelope)).unwrap_or_default();
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
