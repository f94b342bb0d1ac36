//! Journal retention: published messages older than `journal.retention_days` are pruned in the background.
//!
//! Every `journal.prune_interval_secs` one pass removes published entries received before the cut-off, in
//! batches of `journal.prune_batch` (one short write transaction each, with a yield between batches), so
//! ingest's group commits are delayed by one small batch at most and never wait for the whole pass. Raw bytes
//! stay until `journal.raw_retention_days` when that is longer. Until the sinks record deliveries, "published"
//! (confirmed by the bus) is the last state; the data dir's size is `relais_data_dir_bytes` (see ops).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::config::JournalSettings;
use crate::journal::{Journal, Pruned};
use crate::shutdown::Shutdown;

/// The cut-offs of a pass at `now`: metadata before the first, raw bytes before the second; `None` when
/// retention is off (`retention_days` = 0).
pub fn cutoffs(settings: &JournalSettings, now: Timestamp) -> Option<(Timestamp, Timestamp)> {
    if settings.retention_days == 0 {
        return None;
    }
    let days = |n: u64| SignedDuration::from_hours(i64::try_from(n.saturating_mul(24)).unwrap_or(i64::MAX));
    let meta = now.checked_sub(days(settings.retention_days)).unwrap_or(Timestamp::MIN);
    let raw_days = settings.raw_retention_days.max(settings.retention_days);
    let raw = now.checked_sub(days(raw_days)).unwrap_or(Timestamp::MIN);
    Some((meta, raw))
}

/// One full pass: batches until nothing is left to prune; returns the totals.
pub async fn pass(journal: &Journal, settings: &JournalSettings, now: Timestamp) -> Result<Pruned, String> {
    let mut total = Pruned::default();
    let Some((meta_before, raw_before)) = cutoffs(settings, now) else { return Ok(total) };
    loop {
        let journal = journal.clone();
        let batch = settings.prune_batch;
        let done = tokio::task::spawn_blocking(move || journal.prune(meta_before, raw_before, batch))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        total.entries += done.entries;
        total.raw += done.raw;
        if done.is_empty() {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}

/// Runs a pass at start and every `prune_interval_secs` until shutdown (does nothing when retention is off).
pub async fn run(journal: Journal, settings: JournalSettings, mut shutdown: Shutdown) {
    if settings.retention_days == 0 {
        return;
    }
    let interval = Duration::from_secs(settings.prune_interval_secs);
    loop {
        match pass(&journal, &settings, Timestamp::now()).await {
            Ok(done) if !done.is_empty() => {
                tracing::info!(entries = done.entries, raw = done.raw, "journal retention pruned");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "journal retention pass failed"),
        }
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
