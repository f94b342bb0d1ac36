//! Journal retention: delivered messages older than `journal.retention_days` are pruned in the background.
//!
//! Every `journal.prune_interval_secs` one pass removes published entries received before the cut-off whose
//! every destination sink is done with them for good ([`Ledger::settled`]: delivered, undeliverable, or
//! failed and its dead letter purged), in batches of `journal.prune_batch` (one short write transaction each,
//! with a yield between batches), so ingest's group commits are delayed by one small batch at most and never
//! wait for the whole pass. An entry still retried, held, dead-lettered or waiting on a paused sink stays.
//! Raw bytes stay until `journal.raw_retention_days` when that is longer. The data dir's size is
//! `relais_data_dir_bytes` (see ops).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::config::JournalSettings;
use crate::journal::{EntryMeta, Journal, Pruned};
use crate::shutdown::Shutdown;
use crate::sinks::ledger::Ledger;

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

/// One full pass over every published entry (no ledger check: for a journal without sinks).
pub async fn pass(journal: &Journal, settings: &JournalSettings, now: Timestamp) -> Result<Pruned, String> {
    pass_where(journal, settings, now, Arc::new(|_: &EntryMeta| true)).await
}

/// True when every destination `entry` was routed to is done with it for good in `ledger`; a ledger error
/// keeps the entry.
pub fn settled(ledger: &Ledger, entry: &EntryMeta) -> bool {
    entry
        .progress
        .iter()
        .flat_map(|p| &p.deliveries)
        .all(|d| ledger.settled(&d.destination, entry.id).unwrap_or(false))
}

/// One full pass over the entries `may_prune` accepts: batches until the scan is done; returns the totals.
pub async fn pass_where(
    journal: &Journal,
    settings: &JournalSettings,
    now: Timestamp,
    may_prune: Arc<dyn Fn(&EntryMeta) -> bool + Send + Sync>,
) -> Result<Pruned, String> {
    let mut total = Pruned::default();
    let Some((meta_before, raw_before)) = cutoffs(settings, now) else { return Ok(total) };
    let mut from = 0;
    loop {
        let journal = journal.clone();
        let batch = settings.prune_batch;
        let may_prune = Arc::clone(&may_prune);
        let (done, next) = tokio::task::spawn_blocking(move || {
            journal.prune_where(meta_before, raw_before, batch, from, &*may_prune)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        total.entries += done.entries;
        total.raw += done.raw;
        match next {
            Some(id) => from = id,
            None if done.is_empty() => return Ok(total),
            // The scan is over; one more batch expires raw bytes kept past their record, if any remain.
            None => from = u64::MAX,
        }
        tokio::task::yield_now().await;
    }
}

/// Entries a pass accepted to prune, with their destination sinks.
type Accepted = Vec<(u64, Vec<String>)>;

/// The pass of `relais serve`: prunes the entries every destination of which is [`settled`] in `ledger`,
/// then drops those entries' outcomes from the ledger.
pub async fn pass_settled(
    journal: &Journal,
    settings: &JournalSettings,
    ledger: &Arc<Ledger>,
    now: Timestamp,
) -> Result<Pruned, String> {
    let accepted: Arc<Mutex<Accepted>> = Arc::default();
    let may_prune: Arc<dyn Fn(&EntryMeta) -> bool + Send + Sync> = {
        let (ledger, accepted) = (Arc::clone(ledger), Arc::clone(&accepted));
        Arc::new(move |entry: &EntryMeta| {
            let done = settled(&ledger, entry);
            if done {
                let sinks = entry.progress.iter().flat_map(|p| &p.deliveries).map(|d| d.destination.clone());
                accepted.lock().unwrap_or_else(PoisonError::into_inner).push((entry.id, sinks.collect()));
            }
            done
        })
    };
    let result = pass_where(journal, settings, now, may_prune).await;
    let accepted = std::mem::take(&mut *accepted.lock().unwrap_or_else(PoisonError::into_inner));
    forget_pruned(journal, ledger, accepted).await;
    result
}

/// Runs a pass at start and every `prune_interval_secs` until shutdown (does nothing when retention is off).
pub async fn run(journal: Journal, settings: JournalSettings, ledger: Arc<Ledger>, mut shutdown: Shutdown) {
    if settings.retention_days == 0 {
        return;
    }
    let interval = Duration::from_secs(settings.prune_interval_secs);
    loop {
        let result = pass_settled(&journal, &settings, &ledger, Timestamp::now()).await;
        match result {
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

/// Drops the sinks' ledger outcomes of the `accepted` entries the journal no longer has (a batch that failed
/// to commit kept its entries, and they keep their outcomes).
async fn forget_pruned(journal: &Journal, ledger: &Arc<Ledger>, accepted: Accepted) {
    if accepted.is_empty() {
        return;
    }
    let (journal, ledger) = (journal.clone(), Arc::clone(ledger));
    let forgotten = tokio::task::spawn_blocking(move || {
        for (id, sinks) in accepted {
            if !matches!(journal.get(id), Ok(None)) {
                continue;
            }
            for sink in sinks {
                ledger.forget(&sink, id)?;
            }
        }
        Ok::<(), crate::sinks::ledger::Error>(())
    })
    .await;
    if !matches!(forgotten, Ok(Ok(()))) {
        tracing::warn!("the sinks ledger kept some outcomes of pruned messages");
    }
}
