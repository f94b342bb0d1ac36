//! The on-disk format of the journal (one redb file) and the functions that read and write it.
//!
//! Tables:
//! - `meta`: id (u64) -> `serde_json` [`StoredRecord`] (everything but the body), so listing never reads bodies;
//! - `raw`: id -> the message bytes exactly as received;
//! - `by_state`: (state name, id) -> () so a state filter walks only that state's entries;
//! - `dedup`: sending_facility + U+001F + control_id -> (id, received_at in µs since the epoch) of the
//!   entry that key currently points to, so the window check needs no extra read;
//! - `counters`: state name or `"journaled"` -> count, updated in the same transaction as the entries;
//! - `bundle`: id -> the FHIR Bundle JSON the map stage produced (state `mapped` and later);
//! - `raw_kept`: id -> received_at (µs) of a pruned entry whose raw bytes are kept longer than its metadata
//!   (`journal.raw_retention_days` > `journal.retention_days`), so [`prune`] finds them without the record.
//!
//! Pipeline updates ([`Update`]) rewrite an entry's record, move its `by_state` key and counters, and store
//! its bundle, in the same group commit as appends.
//!
//! Ids are the `meta` keys: the next id is the last key + 1, so ids continue after a restart. Only entries
//! with state `Received` and a header take part in deduplication. Writes happen only in [`write_batch`],
//! called by the single writer thread; reads use their own read transactions from any thread.

use std::collections::BTreeMap;

use bytes::Bytes;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use jiff::Timestamp;

use super::record::{Appended, EntryMeta, Event, NewEntry, ReplayFrom, Stage, State, StoredRecord};
use super::{Error, Unfinished};
use crate::facts::EventClass;

const META: TableDefinition<u64, &[u8]> = TableDefinition::new("meta");
const RAW: TableDefinition<u64, &[u8]> = TableDefinition::new("raw");
const BY_STATE: TableDefinition<(&str, u64), ()> = TableDefinition::new("by_state");
const DEDUP: TableDefinition<&str, (u64, i64)> = TableDefinition::new("dedup");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const BUNDLE: TableDefinition<u64, &[u8]> = TableDefinition::new("bundle");
const RAW_KEPT: TableDefinition<u64, i64> = TableDefinition::new("raw_kept");

/// The `stats` key counting entries whose metadata retention removed.
pub(crate) const PRUNED: &str = "pruned";

/// The `stats` key counting every stored entry.
pub(crate) const JOURNALED: &str = "journaled";

/// Separates MSH-4 from MSH-10 in a dedup key (a control character no HL7 field holds).
const KEY_SEPARATOR: char = '\u{1f}';

/// One entry ready for the writer: its record already encoded, so the writer thread only copies bytes.
#[derive(Debug)]
pub(crate) struct Prepared {
    record: StoredRecord,
    encoded: Vec<u8>,
    raw: Bytes,
    dedup: Option<DedupKey>,
}

#[derive(Debug)]
struct DedupKey {
    key: String,
    received_at_us: i64,
}

impl Prepared {
    /// Encodes the entry's metadata and works out its dedup key (done on the caller's task).
    pub(crate) fn new(entry: NewEntry) -> Result<Prepared, Error> {
        let (record, raw) = StoredRecord::from_entry(entry);
        let dedup = match (&record.state, &record.header) {
            (State::Received, Some(header)) if !header.control_id.is_empty() => Some(DedupKey {
                key: format!("{}{KEY_SEPARATOR}{}", header.sending_facility, header.control_id),
                received_at_us: record.received_at.as_microsecond(),
            }),
            _ => None,
        };
        let encoded = encode(&record)?;
        Ok(Prepared { record, encoded, raw, dedup })
    }
}

fn encode(record: &StoredRecord) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(record).map_err(|source| Error::Encode(source.into()))
}

fn decode(id: u64, bytes: &[u8]) -> Result<EntryMeta, Error> {
    serde_json::from_slice::<StoredRecord>(bytes)
        .map(|record| record.into_meta(id))
        .map_err(|source| Error::Corrupt { id, source: source.into() })
}

/// Creates the tables of a new file (no-op on an existing one).
pub(crate) fn create_tables(db: &Database) -> Result<(), Error> {
    let txn = db.begin_write()?;
    {
        txn.open_table(META)?;
        txn.open_table(RAW)?;
        txn.open_table(BY_STATE)?;
        txn.open_table(DEDUP)?;
        txn.open_table(COUNTERS)?;
        txn.open_table(BUNDLE)?;
        txn.open_table(RAW_KEPT)?;
    }
    txn.commit()?;
    Ok(())
}

/// A pipeline update of one entry: its stages, applied in order.
#[derive(Debug)]
pub(crate) struct Update {
    pub(crate) id: u64,
    pub(crate) stages: Vec<Stage>,
}

/// Why one update of a batch was not applied (the rest of the batch is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UpdateRefused {
    /// No entry has this id.
    Unknown(u64),
}

/// What one group commit wrote: each append's outcome, each update's result, the highest stored id.
#[derive(Debug)]
pub(crate) struct Written {
    pub(crate) appended: Vec<Appended>,
    pub(crate) updated: Vec<Result<(), UpdateRefused>>,
    pub(crate) last_id: u64,
}

/// Writes a batch of appends and updates in one durable transaction and returns each append's outcome and
/// each update's result, in order, with the highest stored id.
///
/// Nothing is visible (nor may be acknowledged) unless this returns `Ok`: on error the transaction is
/// dropped, which aborts it.
pub(crate) fn write_batch(
    db: &Database,
    batch: impl IntoIterator<Item = Prepared>,
    updates: impl IntoIterator<Item = Update>,
    dedup_window_us: i64,
) -> Result<Written, Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    let outcomes = insert_all(&txn, batch, dedup_window_us)?;
    let updated = update_all(&txn, updates)?;
    let last = txn.open_table(META)?.last()?.map_or(0, |(key, _)| key.value());
    txn.commit()?;
    Ok(Written { appended: outcomes, updated, last_id: last })
}

fn update_all(
    txn: &WriteTransaction,
    updates: impl IntoIterator<Item = Update>,
) -> Result<Vec<Result<(), UpdateRefused>>, Error> {
    let mut results = Vec::new();
    let mut moved: BTreeMap<&'static str, i64> = BTreeMap::new();
    {
        let mut meta = txn.open_table(META)?;
        let mut by_state = txn.open_table(BY_STATE)?;
        let mut bundles = txn.open_table(BUNDLE)?;
        for update in updates {
            let Some(bytes) = meta.get(update.id)?.map(|guard| guard.value().to_vec()) else {
                results.push(Err(UpdateRefused::Unknown(update.id)));
                continue;
            };
            let mut record: StoredRecord = serde_json::from_slice(&bytes)
                .map_err(|source| Error::Corrupt { id: update.id, source: source.into() })?;
            let before = record.state;
            for stage in update.stages {
                apply(&mut record, stage, update.id, &mut bundles)?;
            }
            if record.state != before {
                by_state.remove((before.as_str(), update.id))?;
                by_state.insert((record.state.as_str(), update.id), ())?;
                *moved.entry(before.as_str()).or_default() -= 1;
                *moved.entry(record.state.as_str()).or_default() += 1;
            }
            meta.insert(update.id, encode(&record)?.as_slice())?;
            results.push(Ok(()));
        }
    }
    if !moved.is_empty() {
        let mut counters = txn.open_table(COUNTERS)?;
        for (name, delta) in moved {
            let current = counters.get(name)?.map_or(0, |guard| guard.value());
            counters.insert(name, current.saturating_add_signed(delta))?;
        }
    }
    Ok(results)
}

fn apply(
    record: &mut StoredRecord,
    stage: Stage,
    id: u64,
    bundles: &mut redb::Table<'_, u64, &'static [u8]>,
) -> Result<(), Error> {
    let at = Timestamp::now();
    let mut event = |stage: &str, detail: Option<String>| {
        record.history.push(Event { at, stage: stage.to_owned(), detail });
    };
    match stage {
        Stage::Mapped { bundle } => {
            bundles.insert(id, bundle.as_ref())?;
            event("mapped", None);
            record.state = State::Mapped;
        }
        Stage::Failed { reason } => {
            event("failed", Some(reason.clone()));
            record.state = State::Failed;
            record.reason = Some(reason);
        }
        Stage::Routed { progress } => {
            record.state = if progress.deliveries.is_empty() { State::Unrouted } else { State::Routed };
            let names: Vec<&str> = progress.deliveries.iter().map(|d| d.destination.as_str()).collect();
            let detail = (!names.is_empty()).then(|| names.join(", "));
            event(record.state.as_str(), detail);
            record.progress = Some(progress);
        }
        Stage::Replay { from } => {
            event("replayed", Some(from.as_str().to_owned()));
            record.reason = None;
            let routed = record.progress.as_ref().is_some_and(|p| !p.deliveries.is_empty());
            if from == ReplayFrom::Publish && routed && bundles.get(id)?.is_some() {
                if let Some(progress) = &mut record.progress {
                    progress.deliveries.iter_mut().for_each(|d| d.published = false);
                }
                record.state = State::Routed;
            } else {
                record.progress = None;
                record.state = State::Received;
            }
        }
        Stage::Published { destinations } => {
            event("published", Some(destinations.join(", ")));
            if let Some(progress) = &mut record.progress {
                for delivery in &mut progress.deliveries {
                    if destinations.contains(&delivery.destination) {
                        delivery.published = true;
                    }
                }
                if !progress.deliveries.is_empty() && progress.deliveries.iter().all(|d| d.published) {
                    record.state = State::Published;
                }
            }
        }
    }
    Ok(())
}

/// The highest stored id (0 for an empty journal).
pub(crate) fn last_id(db: &Database) -> Result<u64, Error> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    Ok(meta.last()?.map_or(0, |(key, _)| key.value()))
}

/// Entries the pipeline has not finished with (states [`State::UNFINISHED`]) with an id above `after`, in
/// id order, at most `limit`, each with its raw bytes and its bundle when mapped.
pub(crate) fn unfinished(db: &Database, after: u64, limit: usize) -> Result<Vec<Unfinished>, Error> {
    let txn = db.begin_read()?;
    let by_state = txn.open_table(BY_STATE)?;
    let mut ids = Vec::new();
    for state in State::UNFINISHED {
        let name = state.as_str();
        for item in by_state.range((name, after.saturating_add(1))..=(name, u64::MAX))?.take(limit) {
            ids.push(item?.0.value().1);
        }
    }
    ids.sort_unstable();
    ids.truncate(limit);
    let meta = txn.open_table(META)?;
    let raw = txn.open_table(RAW)?;
    let bundles = txn.open_table(BUNDLE)?;
    let mut entries = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(bytes) = meta.get(id)? else { continue };
        let entry = decode(id, bytes.value())?;
        let body = raw.get(id)?.map(|b| b.value().to_vec()).unwrap_or_default();
        let bundle = bundles.get(id)?.map(|b| b.value().to_vec());
        entries.push(Unfinished { meta: entry, raw: body, bundle });
    }
    Ok(entries)
}

/// The FHIR Bundle stored for entry `id`.
pub(crate) fn bundle(db: &Database, id: u64) -> Result<Option<Vec<u8>>, Error> {
    let txn = db.begin_read()?;
    let bundles = txn.open_table(BUNDLE)?;
    Ok(bundles.get(id)?.map(|bytes| bytes.value().to_vec()))
}

fn insert_all(
    txn: &WriteTransaction,
    batch: impl IntoIterator<Item = Prepared>,
    dedup_window_us: i64,
) -> Result<Vec<Appended>, Error> {
    let mut meta = txn.open_table(META)?;
    let mut raw = txn.open_table(RAW)?;
    let mut by_state = txn.open_table(BY_STATE)?;
    let mut dedup = txn.open_table(DEDUP)?;

    let mut next_id = match meta.last()? {
        Some((key, _)) => key.value().saturating_add(1),
        None => 1,
    };
    let mut added: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut outcomes = Vec::new();

    for mut entry in batch {
        let id = next_id;
        let mut clash = None;
        if let Some(key) = &entry.dedup {
            let previous = dedup.get(key.key.as_str())?.map(|guard| guard.value());
            if let Some((original, original_at_us)) = previous
                && original_at_us.abs_diff(key.received_at_us) <= dedup_window_us.unsigned_abs()
            {
                let same_bytes =
                    raw.get(original)?.is_some_and(|stored| stored.value() == entry.raw.as_ref());
                if same_bytes {
                    outcomes.push(Appended::Duplicate { original });
                    continue;
                }
                clash = Some(original);
            }
            if clash.is_none() {
                dedup.insert(key.key.as_str(), (id, key.received_at_us))?;
            }
        }
        if let Some(original) = clash {
            entry.record.state = State::Rejected;
            entry.record.reason =
                Some(format!("control id already used by entry {original} with different content"));
            entry.encoded = encode(&entry.record)?;
        }

        meta.insert(id, entry.encoded.as_slice())?;
        raw.insert(id, entry.raw.as_ref())?;
        by_state.insert((entry.record.state.as_str(), id), ())?;
        *added.entry(entry.record.state.as_str()).or_default() += 1;
        *added.entry(JOURNALED).or_default() += 1;
        next_id = id.saturating_add(1);
        outcomes.push(match clash {
            Some(original) => Appended::Conflict { id, original },
            None => Appended::Stored { id },
        });
    }

    if !added.is_empty() {
        let mut counters = txn.open_table(COUNTERS)?;
        for (name, count) in added {
            let current = counters.get(name)?.map_or(0, |guard| guard.value());
            counters.insert(name, current.saturating_add(count))?;
        }
    }
    Ok(outcomes)
}

/// Counts per state (every state, zeros included) and the `"journaled"` total.
pub(crate) fn stats(db: &Database) -> Result<BTreeMap<String, u64>, Error> {
    let txn = db.begin_read()?;
    let counters = txn.open_table(COUNTERS)?;
    let names = State::ALL.iter().map(|state| state.as_str()).chain([JOURNALED]);
    let mut stats = BTreeMap::new();
    for name in names {
        let count = counters.get(name)?.map_or(0, |guard| guard.value());
        stats.insert(name.to_owned(), count);
    }
    // Accepted (AA, or 202 for a document) = everything journaled but refused, whatever stage it reached since.
    let accepted = stats[JOURNALED].saturating_sub(stats[State::Rejected.as_str()]);
    stats.insert("accepted".to_owned(), accepted);
    stats.insert(PRUNED.to_owned(), counters.get(PRUNED)?.map_or(0, |guard| guard.value()));
    Ok(stats)
}

/// Metadata of entry `id`.
pub(crate) fn get(db: &Database, id: u64) -> Result<Option<EntryMeta>, Error> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    let Some(bytes) = meta.get(id)? else { return Ok(None) };
    decode(id, bytes.value()).map(Some)
}

/// The raw bytes of entry `id`.
pub(crate) fn raw(db: &Database, id: u64) -> Result<Option<Vec<u8>>, Error> {
    let txn = db.begin_read()?;
    let raw = txn.open_table(RAW)?;
    Ok(raw.get(id)?.map(|bytes| bytes.value().to_vec()))
}

/// Newest first, optionally only one state, at most `limit`.
pub(crate) fn list(db: &Database, state: Option<State>, limit: usize) -> Result<Vec<EntryMeta>, Error> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    let mut entries = Vec::new();
    match state {
        None => {
            for item in meta.iter()?.rev().take(limit) {
                let (id, bytes) = item?;
                entries.push(decode(id.value(), bytes.value())?);
            }
        }
        Some(state) => {
            let by_state = txn.open_table(BY_STATE)?;
            let name = state.as_str();
            for item in by_state.range((name, 0)..=(name, u64::MAX))?.rev().take(limit) {
                let (key, _) = item?;
                let (_, id) = key.value();
                if let Some(bytes) = meta.get(id)? {
                    entries.push(decode(id, bytes.value())?);
                }
            }
        }
    }
    Ok(entries)
}

/// What a message search matches; every criterion given must hold (an empty filter matches everything).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Current state.
    pub state: Option<State>,
    /// MSH-4 (or a document's custodian id), exact.
    pub sender: Option<String>,
    /// MSH-10 (or a document id), exact.
    pub control_id: Option<String>,
    /// Event class found by the mapping.
    pub event_class: Option<EventClass>,
    /// Received at or after.
    pub since: Option<Timestamp>,
    /// Received before.
    pub until: Option<Timestamp>,
    /// The patient's partition key (the hash of the patient identifier, see `bus::partition_key`).
    pub partition_key: Option<String>,
}

impl Filter {
    fn matches(&self, entry: &EntryMeta) -> bool {
        let header = entry.header.as_ref();
        let progress = entry.progress.as_ref();
        self.state.is_none_or(|state| entry.state == state)
            && self.sender.as_ref().is_none_or(|s| header.is_some_and(|h| &h.sending_facility == s))
            && self.control_id.as_ref().is_none_or(|c| header.is_some_and(|h| &h.control_id == c))
            && self.event_class.is_none_or(|e| progress.is_some_and(|p| p.event_class == Some(e)))
            && self.since.is_none_or(|t| entry.received_at >= t)
            && self.until.is_none_or(|t| entry.received_at < t)
            && self.partition_key.as_ref().is_none_or(|k| progress.is_some_and(|p| &p.partition_key == k))
    }
}

/// Newest first, the entries `filter` matches, at most `limit`, looking at no more than `scan` entries.
pub(crate) fn search(
    db: &Database,
    filter: &Filter,
    limit: usize,
    scan: usize,
) -> Result<Vec<EntryMeta>, Error> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    let mut entries = Vec::new();
    let mut keep = |entry: EntryMeta| {
        if filter.matches(&entry) {
            entries.push(entry);
        }
        entries.len() < limit
    };
    match filter.state {
        None => {
            for item in meta.iter()?.rev().take(scan) {
                let (id, bytes) = item?;
                if !keep(decode(id.value(), bytes.value())?) {
                    break;
                }
            }
        }
        Some(state) => {
            let by_state = txn.open_table(BY_STATE)?;
            let name = state.as_str();
            for item in by_state.range((name, 0)..=(name, u64::MAX))?.rev().take(scan) {
                let (_, id) = item?.0.value();
                let Some(bytes) = meta.get(id)? else { continue };
                if !keep(decode(id, bytes.value())?) {
                    break;
                }
            }
        }
    }
    Ok(entries)
}

/// What one [`prune`] batch removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Entries whose metadata (and bundle) went.
    pub entries: u64,
    /// Raw messages that went.
    pub raw: u64,
}

impl Pruned {
    /// True when the batch removed nothing (the backlog is done).
    pub fn is_empty(&self) -> bool {
        self.entries == 0 && self.raw == 0
    }
}

/// Removes, in one short write transaction, at most `limit` published entries received before `meta_before`
/// (record, index key, bundle, and raw bytes when also before `raw_before`), and the raw bytes kept past
/// their record (`raw_kept`) once before `raw_before`. `raw_before` is never after `meta_before`.
pub(crate) fn prune(
    db: &Database,
    meta_before: Timestamp,
    raw_before: Timestamp,
    limit: usize,
) -> Result<Pruned, Error> {
    prune_where(db, meta_before, raw_before, limit, 0, &|_| true).map(|(done, _)| done)
}

/// [`prune`] of the published entries from id `from` on that `may_prune` accepts (the others are skipped
/// and kept). Looks at most `limit * 20` entries; also returns the id to go on from, `None` once the scan
/// reached the entries too young to prune (or the end).
pub(crate) fn prune_where(
    db: &Database,
    meta_before: Timestamp,
    raw_before: Timestamp,
    limit: usize,
    from: u64,
    may_prune: &dyn Fn(&EntryMeta) -> bool,
) -> Result<(Pruned, Option<u64>), Error> {
    let mut done = Pruned::default();
    let mut next = None;
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        let mut raw = txn.open_table(RAW)?;
        let mut by_state = txn.open_table(BY_STATE)?;
        let mut bundles = txn.open_table(BUNDLE)?;
        let mut kept = txn.open_table(RAW_KEPT)?;
        let name = State::Published.as_str();
        let mut candidates = Vec::new();
        let mut scanned = 0usize;
        for item in by_state.range((name, from)..=(name, u64::MAX))? {
            let (_, id) = item?.0.value();
            let Some(bytes) = meta.get(id)? else { continue };
            let entry = decode(id, bytes.value())?;
            // Ids grow with arrival time (give or take clock steps): stop at the first one still kept.
            if entry.received_at >= meta_before {
                break;
            }
            if candidates.len() >= limit || scanned >= limit.saturating_mul(20) {
                next = Some(id);
                break;
            }
            scanned += 1;
            if may_prune(&entry) {
                candidates.push((id, entry.received_at));
            }
        }
        for (id, received_at) in candidates {
            meta.remove(id)?;
            by_state.remove((name, id))?;
            bundles.remove(id)?;
            done.entries += 1;
            if received_at < raw_before {
                if raw.remove(id)?.is_some() {
                    done.raw += 1;
                }
            } else {
                kept.insert(id, received_at.as_microsecond())?;
            }
        }
        let mut expired = Vec::new();
        for item in kept.iter()?.take(limit) {
            let (id, at_us) = item?;
            if Timestamp::from_microsecond(at_us.value()).is_ok_and(|at| at < raw_before) {
                expired.push(id.value());
            }
        }
        for id in expired {
            kept.remove(id)?;
            if raw.remove(id)?.is_some() {
                done.raw += 1;
            }
        }
    }
    if done.entries > 0 {
        let mut counters = txn.open_table(COUNTERS)?;
        let published = counters.get(State::Published.as_str())?.map_or(0, |guard| guard.value());
        counters.insert(State::Published.as_str(), published.saturating_sub(done.entries))?;
        let pruned = counters.get(PRUNED)?.map_or(0, |guard| guard.value());
        counters.insert(PRUNED, pruned.saturating_add(done.entries))?;
    }
    txn.commit()?;
    Ok((done, next))
}
