//! Operating Relais: the admin API (search, timeline, replay, dead letters), the web console over it, the
//! CLI client of the same API, journal retention and the audit trail.
//!
//! - [`api`]: JSON routes under `/api/` (bearer token `http.admin_token`);
//! - [`console`]: server-rendered HTML at `/console` over the same functions;
//! - [`client`]: `relais messages`, `relais replay`, `relais dlq` (reqwest, table or `--json` output);
//! - [`retention`]: the background pruning of published messages;
//! - [`audit`]: who replayed or purged what, on the `relais::audit` tracing target.
//!
//! The admin side reads the journal and asks the pipeline to do work again only through journal updates
//! ([`crate::journal::Journal::replay`]) and the bus API: it never calls back into ingest or the pipeline.

pub mod api;
pub mod client;
pub mod console;
pub mod retention;

use std::sync::Arc;

use crate::bus::Bus;
use crate::journal::Journal;
use crate::sinks::ledger::Ledger;
use crate::sinks::pause::Pauses;

/// What the admin routes and the console share.
#[derive(Clone)]
pub struct Admin {
    /// The journal they read and replay through.
    pub journal: Journal,
    /// The bus holding the dead letters.
    pub bus: Bus,
    /// The configured sink instances.
    pub sinks: Vec<String>,
    /// The bearer token (`http.admin_token`); empty means open (loopback only, enforced by config checks).
    pub token: String,
    /// What each sink did with each message (`<data_dir>/sinks.redb`), read for timelines and listings.
    pub ledger: Arc<Ledger>,
    /// The paused sinks, changed by `pause` / `resume`.
    pub pauses: Pauses,
}

/// Audit events: one `info` event per operator action on the `relais::audit` target, naming who (the
/// operator header or the peer address), what, and which journal ids; never message content.
pub mod audit {
    /// Records one operator action.
    pub fn record(operator: &str, action: &str, target: &str, ids: &[u64]) {
        tracing::info!(target: "relais::audit", operator, action, target, ids = ?ids, count = ids.len(), "admin action");
    }
}

#[cfg(test)]
mod tests;
