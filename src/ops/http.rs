//! `GET /health`, `GET /ready` and `GET /metrics`, served on the HTTP listener without the admin token
//! (they carry no message content).
//!
//! - `/health`: 200 with JSON details (version, uptime, journal commit figures, bound listeners).
//! - `/ready`: 200 when every readiness check holds, else 503; the JSON names each check.
//! - `/metrics`: Prometheus text format 0.0.4.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;

use super::health::Health;
use super::metrics;
use crate::journal::Journal;

/// The Prometheus text exposition content type.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone)]
struct OpsState {
    health: Health,
    journal: Journal,
}

/// The ops routes, ready to merge into the HTTP router.
pub fn router(health: Health, journal: Journal) -> Router {
    Router::new()
        .route("/health", get(health_handler))
        .route("/ready", get(ready_handler))
        .route("/metrics", get(metrics_handler))
        .with_state(OpsState { health, journal })
}

async fn health_handler(State(state): State<OpsState>) -> Json<serde_json::Value> {
    Json(state.health.liveness())
}

async fn ready_handler(State(state): State<OpsState>) -> Response {
    let health = state.health.clone();
    match tokio::task::spawn_blocking(move || health.readiness()).await {
        Ok(readiness) => {
            let status = if readiness.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            (status, Json(readiness)).into_response()
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "ready": false, "error": e.to_string() })),
        )
            .into_response(),
    }
}

async fn metrics_handler(State(state): State<OpsState>) -> Response {
    let journal = state.journal.clone();
    match tokio::task::spawn_blocking(move || metrics::render(Some(&journal))).await {
        Ok(text) => ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
