//! Operations: what lets people run Relais — Prometheus metrics, liveness and readiness.
//!
//! - [`metrics`]: every metric name, the recorder, the one-line recording calls used by the other stages.
//! - [`health`]: the state behind `/health` (live) and `/ready` (journal writable, listeners bound, and any
//!   check a later stage registers).
//! - [`http`]: the `GET /health`, `GET /ready` and `GET /metrics` routes, merged into the HTTP listener.
//!
//! Ops only observes: no stage calls back into it for decisions, and nothing here reads message content.

pub mod health;
pub mod http;
pub mod metrics;
