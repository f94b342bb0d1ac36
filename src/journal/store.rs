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
//!   (`journal.raw_retention_days` > `journal.retention_days`), so [`prune`] finds them without the record;
//! - `wal`: `"applied_lsn"` -> the last WAL record applied, `"next_id"` -> the next id, written in the same
//!   transaction as what they describe.
//!
//! Writes come from the write-ahead log ([`super::wal`]): [`apply_ops`] applies decided [`Op`]s (appends
//! with their id, pipeline updates with their time: a record rewritten, its `by_state` key and counters
//! moved, its bundle stored), called by the applier thread and by recovery; retention ([`prune`]) is the
//! only other writer. Reads use their own read transactions from any thread.

use std::collections::BTreeMap;

use bytes::Bytes;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use jiff::Timestamp;

use super::op::Op;
use super::record::{EntryMeta, Event, NewEntry, ReplayFrom, Stage, State, StoredRecord};
use super::{Error, Unfinished};
use crate::facts::EventClass;

const META: TableDefinition<u64, &[u8]> = TableDefinition::new("meta");
const RAW: TableDefinition<u64, &[u8]> = TableDefinition::new("raw");
const BY_STATE: TableDefinition<(&str, u64), ()> = TableDefinition::new("by_state");
const DEDUP: TableDefinition<&str, (u64, i64)> = TableDefinition::new("dedup");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const BUNDLE: TableDefinition<u64, &[u8]> = TableDefinition::new("bundle");
const RAW_KEPT: TableDefinition<u64, i64> = TableDefinition::new("raw_kept");
const WAL_STATE: TableDefinition<&str, u64> = TableDefinition::new("wal");

/// `wal` key: the last WAL record applied.
const APPLIED_LSN: &str = "applied_lsn";

/// `wal` key: the next id to assign.
const NEXT_ID: &str = "next_id";

/// The `stats` key counting entries whose metadata retention removed.
pub(crate) const PRUNED: &str = "pruned";

/// The `stats` key counting every stored entry.
pub(crate) const JOURNALED: &str = "journaled";

/// Separates MSH-4 from MSH-10 in a dedup key (a control character no HL7 field holds).
const KEY_SEPARATOR: char = '\u{1f}';

/// One entry ready for the writer: its record already encoded, so the writer thread only copies bytes.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) record: StoredRecord,
    pub(crate) encoded: Vec<u8>,
    pub(crate) raw: Bytes,
    pub(crate) dedup: Option<DedupKey>,
}

/// The dedup key of an entry (MSH-4 + U+001F + MSH-10) and its received-at.
#[derive(Debug)]
pub(crate) struct DedupKey {
    pub(crate) key: String,
    pub(crate) received_at_us: i64,
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

    /// Turns the entry into a `Rejected` one whose reason names the entry it clashes with.
    pub(crate) fn reject_conflict(&mut self, original: u64) -> Result<(), Error> {
        self.record.state = State::Rejected;
        self.record.reason =
            Some(format!("control id already used by entry {original} with different content"));
        self.encoded = encode(&self.record)?;
        Ok(())
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
        txn.open_table(WAL_STATE)?;
    }
    txn.commit()?;
    Ok(())
}

/// A pipeline update of one entry: its stages, applied in order.
#[derive(Debug)]
pub(crate) struct Update {
    pub(crate) id: u64,
    pub(crate) stages: Vec<Stage>,
    /// When the update must reach the disk.
    pub(crate) flush: super::Flush,
}

/// The WAL position redb holds: every record up to `applied_lsn` is applied; `next_id` is the next id.
pub(crate) fn wal_state(db: &Database) -> Result<(u64, u64), Error> {
    let txn = db.begin_read()?;
    let state = txn.open_table(WAL_STATE)?;
    let applied = state.get(APPLIED_LSN)?.map_or(0, |guard| guard.value());
    let stored_next = state.get(NEXT_ID)?.map_or(1, |guard| guard.value());
    let meta = txn.open_table(META)?;
    let after_last = meta.last()?.map_or(1, |(key, _)| key.value().saturating_add(1));
    Ok((applied, stored_next.max(after_last)))
}

/// Applies logged ops (the last of which is WAL record `lsn`) in one redb write transaction of the given
/// durability, records `lsn` and `next_id` with them, and returns the highest stored id.
///
/// Idempotent by id: an append whose id is already stored is skipped. An update of an id no longer stored
/// (pruned since) is skipped.
pub(crate) fn apply_ops<'a>(
    db: &Database,
    ops: impl IntoIterator<Item = &'a Op>,
    lsn: u64,
    next_id: u64,
    durability: Durability,
) -> Result<u64, Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(durability)?;
    let mut moved: BTreeMap<&'static str, i64> = BTreeMap::new();
    {
        let mut meta = txn.open_table(META)?;
        let mut raw = txn.open_table(RAW)?;
        let mut by_state = txn.open_table(BY_STATE)?;
        let mut dedup = txn.open_table(DEDUP)?;
        let mut bundles = txn.open_table(BUNDLE)?;
        for op in ops {
            match op {
                Op::Append(append) => {
                    if meta.get(append.id)?.is_some() {
                        continue;
                    }
                    if let Some((key, at_us)) = &append.dedup {
                        dedup.insert(key.as_str(), (append.id, *at_us))?;
                    }
                    meta.insert(append.id, append.record.as_slice())?;
                    raw.insert(append.id, append.raw.as_ref())?;
                    by_state.insert((append.state.as_str(), append.id), ())?;
                    *moved.entry(append.state.as_str()).or_default() += 1;
                    *moved.entry(JOURNALED).or_default() += 1;
                }
                Op::Update { id, at, stages } => {
                    let Some(bytes) = meta.get(*id)?.map(|guard| guard.value().to_vec()) else {
                        continue;
                    };
                    let mut record: StoredRecord = serde_json::from_slice(&bytes)
                        .map_err(|source| Error::Corrupt { id: *id, source: source.into() })?;
                    let before = record.state;
                    for stage in stages {
                        apply(&mut record, stage.clone(), *at, *id, &mut bundles)?;
                    }
                    if record.state != before {
                        by_state.remove((before.as_str(), *id))?;
                        by_state.insert((record.state.as_str(), *id), ())?;
                        *moved.entry(before.as_str()).or_default() -= 1;
                        *moved.entry(record.state.as_str()).or_default() += 1;
                    }
                    meta.insert(*id, encode(&record)?.as_slice())?;
                }
            }
        }
    }
    if !moved.is_empty() {
        let mut counters = txn.open_table(COUNTERS)?;
        for (name, delta) in moved {
            let current = counters.get(name)?.map_or(0, |guard| guard.value());
            counters.insert(name, current.saturating_add_signed(delta))?;
        }
    }
    {
        let mut state = txn.open_table(WAL_STATE)?;
        state.insert(APPLIED_LSN, lsn)?;
        state.insert(NEXT_ID, next_id)?;
    }
    let last = txn.open_table(META)?.last()?.map_or(0, |(key, _)| key.value());
    txn.commit()?;
    Ok(last)
}

/// A read view for the writer's decisions: dedup keys, stored bytes, whether an id is stored.
pub(crate) struct Lookup(redb::ReadTransaction);

impl Lookup {
    /// A view of what redb holds now.
    pub(crate) fn begin(db: &Database) -> Result<Lookup, Error> {
        Ok(Lookup(db.begin_read()?))
    }

    /// The entry `key` points to and its received-at (µs).
    pub(crate) fn dedup(&self, key: &str) -> Result<Option<(u64, i64)>, Error> {
        Ok(self.0.open_table(DEDUP)?.get(key)?.map(|guard| guard.value()))
    }

    /// True when entry `id`'s raw bytes are `bytes`.
    pub(crate) fn same_raw(&self, id: u64, bytes: &[u8]) -> Result<bool, Error> {
        Ok(self.0.open_table(RAW)?.get(id)?.is_some_and(|stored| stored.value() == bytes))
    }

    /// True when entry `id` is stored.
    pub(crate) fn exists(&self, id: u64) -> Result<bool, Error> {
        Ok(self.0.open_table(META)?.get(id)?.is_some())
    }
}

fn apply(
    record: &mut StoredRecord,
    stage: Stage,
    at: Timestamp,
    id: u64,
    bundles: &mut redb::Table<'_, u64, &'static [u8]>,
) -> Result<(), Error> {
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
