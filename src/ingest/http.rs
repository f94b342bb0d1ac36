//! HTTP ingest and the first admin read API (axum).
//!
//! - `POST /hl7v2`: one message as the body; the ACK comes back as the body with 200 (AA), 400 (AR) or
//!   422 (AE). A body over `mllp.max_message_size` is answered like an oversize MLLP frame: AR (ERR 207),
//!   its first bytes journaled as `rejected`.
//! - `GET /health`, `/ready`, `/metrics`: see [`crate::ops::http`] (merged in by the server).
//! - `POST /cda`: one CDA R2 document (`application/xml`, `text/xml` or `application/hl7-cda+xml`); 202 with
//!   `{"id": n}` once journaled, else 400 (not XML / not a CDA), 409 (document id reused), 413 (over
//!   `documents.max_size`), 415 (content type) with `{"error": reason, "id": n}` — refused documents are
//!   journaled `rejected` too. Bodies over twice the limit are cut by the server (413, not journaled).
//! - `GET /api/stats`, `GET /api/messages?state=&limit=`: journal counts and message metadata (never bodies).
//! - `GET /api/messages/{id}/raw`: one message's bytes exactly as received (`application/octet-stream`), for
//!   an operator reviewing a rejected message; 404 when no such entry.
//!
//! When `http.admin_token` is set, `/api/*` requires `Authorization: Bearer <token>`.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::net::TcpListener;

use super::Intake;
use super::document::{DocumentOutcome, Refusal};
use super::mllp::FramingFault;
use crate::hl7v2::AckCode;
use crate::journal::{State, Transport};
use crate::shutdown::Shutdown;

/// What the handlers share.
#[derive(Clone)]
struct AppState {
    intake: Intake,
    admin_token: String,
}

/// Builds the router; `admin_token` empty means `/api/*` is open (loopback only, enforced by config checks).
pub fn router(intake: Intake, admin_token: String) -> Router {
    let state = AppState { intake: intake.clone(), admin_token };
    let api = Router::new()
        .route("/api/stats", get(stats))
        .route("/api/messages", get(messages))
        .route("/api/messages/{id}/raw", get(raw_message))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let documents = Router::new()
        .route("/cda", post(post_cda))
        .layer(DefaultBodyLimit::max(intake.max_document_size().saturating_mul(2)));
    Router::new()
        .route("/hl7v2", post(post_hl7v2))
        .merge(api)
        .layer(DefaultBodyLimit::max(intake.max_message_size()))
        .merge(documents)
        .with_state(state)
}

/// Serves `router` on `listener` until shutdown, letting in-flight requests finish.
pub async fn run(listener: TcpListener, router: Router, mut shutdown: Shutdown) -> std::io::Result<()> {
    axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(async move { shutdown.recv().await })
        .await
}

/// What was read of a request body: all of it, or its first `max_message_size` bytes.
enum Body {
    Whole(Bytes),
    Oversize(Bytes),
}

/// Reads the body up to the size limit; past it, keeps the first `limit` bytes and stops reading (the rest is
/// never buffered, and hyper closes the connection instead of reusing it).
async fn read_body(body: axum::body::Body, limit: usize) -> Result<Body, axum::Error> {
    let mut stream = body.into_data_stream();
    let mut buffer = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if buffer.len() + chunk.len() > limit {
            buffer.extend_from_slice(&chunk[..limit - buffer.len()]);
            return Ok(Body::Oversize(buffer.freeze()));
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(Body::Whole(buffer.freeze()))
}

async fn post_hl7v2(
    AxumState(state): AxumState<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    body: axum::body::Body,
) -> Response {
    let peer = peer.to_string();
    let intake = &state.intake;
    let pending = match read_body(body, intake.max_message_size()).await {
        Ok(Body::Whole(raw)) => intake.submit(raw, Transport::Http, &peer).await,
        Ok(Body::Oversize(head)) => {
            tracing::warn!(%peer, limit = intake.max_message_size(), "HTTP message over the size limit");
            intake.submit_framing_fault(head, Transport::Http, &peer, FramingFault::Oversize).await
        }
        Err(e) => {
            tracing::debug!(%peer, error = %e, "HTTP body read failed");
            return (StatusCode::BAD_REQUEST, "request body could not be read\n").into_response();
        }
    };
    let outcome = pending.resolve().await;
    let status = match outcome.code {
        AckCode::AA => StatusCode::OK,
        AckCode::AR => StatusCode::BAD_REQUEST,
        AckCode::AE => StatusCode::UNPROCESSABLE_ENTITY,
    };
    let content_type = format!("x-application/hl7-v2+er7; charset={}", outcome.charset.iana());
    let mut response = (status, outcome.ack).into_response();
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// Content types accepted for a CDA document.
const CDA_CONTENT_TYPES: [&str; 3] = ["application/xml", "text/xml", "application/hl7-cda+xml"];

async fn post_cda(
    AxumState(state): AxumState<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let peer = peer.to_string();
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let outcome = if CDA_CONTENT_TYPES.contains(&media_type.as_str()) {
        state.intake.submit_document(body, Transport::Http, &peer).await
    } else {
        let reason = format!(
            "content type `{content_type}`: a CDA document is sent as {}",
            CDA_CONTENT_TYPES.join(", ")
        );
        state.intake.reject_document(body, Transport::Http, &peer, Refusal::ContentType, reason).await
    };
    match outcome {
        DocumentOutcome::Accepted { id, duplicate } => {
            (StatusCode::ACCEPTED, Json(serde_json::json!({ "id": id, "duplicate": duplicate })))
                .into_response()
        }
        DocumentOutcome::Rejected { id, refusal, reason } => {
            let status = match refusal {
                Refusal::Invalid => StatusCode::BAD_REQUEST,
                Refusal::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                Refusal::ContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Refusal::Conflict => StatusCode::CONFLICT,
            };
            (status, Json(serde_json::json!({ "error": reason, "id": id }))).into_response()
        }
        DocumentOutcome::Unavailable { reason } => {
            tracing::error!(%reason, "document not journaled");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({ "error": "document not stored (journal unavailable); send it again later" })),
            )
                .into_response()
        }
    }
}

async fn stats(AxumState(state): AxumState<AppState>) -> Response {
    let journal = state.intake.journal().clone();
    match tokio::task::spawn_blocking(move || journal.stats()).await {
        Ok(Ok(stats)) => Json(stats).into_response(),
        Ok(Err(e)) => internal_error(e.to_string()),
        Err(e) => internal_error(e.to_string()),
    }
}

/// Query of `GET /api/messages`.
#[derive(Debug, Deserialize)]
struct MessagesQuery {
    state: Option<String>,
    limit: Option<usize>,
}

async fn messages(AxumState(state): AxumState<AppState>, Query(query): Query<MessagesQuery>) -> Response {
    let filter = match query.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(name) => match State::from_str(name) {
            Some(s) => Some(s),
            None => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(serde_json::json!({ "error": format!("unknown state `{name}`") })),
                )
                    .into_response();
            }
        },
    };
    let limit = query.limit.unwrap_or(100).min(10_000);
    let journal = state.intake.journal().clone();
    match tokio::task::spawn_blocking(move || journal.list(filter, limit)).await {
        Ok(Ok(list)) => Json(list).into_response(),
        Ok(Err(e)) => internal_error(e.to_string()),
        Err(e) => internal_error(e.to_string()),
    }
}

async fn raw_message(AxumState(state): AxumState<AppState>, Path(id): Path<u64>) -> Response {
    let journal = state.intake.journal().clone();
    match tokio::task::spawn_blocking(move || journal.raw(id)).await {
        Ok(Ok(Some(bytes))) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Ok(Ok(None)) => {
            (StatusCode::NOT_FOUND, Json(serde_json::json!({ "error": format!("no journal entry {id}") })))
                .into_response()
        }
        Ok(Err(e)) => internal_error(e.to_string()),
        Err(e) => internal_error(e.to_string()),
    }
}

async fn require_token(
    AxumState(state): AxumState<AppState>,
    headers: HeaderMap,
    request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    if !state.admin_token.is_empty() && !bearer_matches(&state.admin_token, &headers) {
        return unauthorized();
    }
    next.run(request).await
}

/// True when `Authorization: Bearer <token>` is present (compared in constant time).
pub(crate) fn bearer_matches(token: &str, headers: &HeaderMap) -> bool {
    let expected = format!("Bearer {token}");
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    constant_time_eq(given.as_bytes(), expected.as_bytes())
}

/// The 401 every admin route answers without the right token.
pub(crate) fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(serde_json::json!({ "error": "missing or wrong bearer token" })),
    )
        .into_response()
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn internal_error(reason: String) -> Response {
    tracing::error!(%reason, "admin API read failed");
    (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({ "error": reason }))).into_response()
}
