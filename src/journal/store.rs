//! The on-disk format of the journal (one redb file) and the functions that read and write it.
//!
//! Tables:
//! - `meta`: id (u64) -> `serde_json` [`StoredRecord`] (everything but the body), so listing never reads bodies;
//! - `raw`: id -> the message bytes exactly as received;
//! - `by_state`: (state name, id) -> () so a state filter walks only that state's entries;
//! - `dedup`: sending_facility + U+001F + control_id -> (id, received_at in µs since the epoch) of the
//!   entry that key currently points to, so the window check needs no extra read;
//! - `counters`: state name or `"journaled"` -> count, updated in the same transaction as the entries;
//! - `bundle`: id -> the FHIR Bundle JSON the map stage produced (state `mapped` and later).
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

use super::record::{Appended, EntryMeta, NewEntry, Stage, State, StoredRecord};
use super::{Error, Unfinished};

const META: TableDefinition<u64, &[u8]> = TableDefinition::new("meta");
const RAW: TableDefinition<u64, &[u8]> = TableDefinition::new("raw");
const BY_STATE: TableDefinition<(&str, u64), ()> = TableDefinition::new("by_state");
const DEDUP: TableDefinition<&str, (u64, i64)> = TableDefinition::new("dedup");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const BUNDLE: TableDefinition<u64, &[u8]> = TableDefinition::new("bundle");

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
    match stage {
        Stage::Mapped { bundle } => {
            bundles.insert(id, bundle.as_ref())?;
            record.state = State::Mapped;
        }
        Stage::Failed { reason } => {
            record.state = State::Failed;
            record.reason = Some(reason);
        }
        Stage::Routed { progress } => {
            record.state = if progress.deliveries.is_empty() { State::Unrouted } else { State::Routed };
            record.progress = Some(progress);
        }
        Stage::Published { destinations } => {
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
