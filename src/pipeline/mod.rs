//! The pipeline after the journal: map → route → publish, for each journaled message in id order.
//!
//! It owns the journal's state transitions after `received`. For a batch of unfinished entries (read with
//! [`Journal::unfinished`], so on start it first takes everything journaled but not yet published: the
//! outbox), it:
//! 1. maps each `received` entry with the [`Transform`] and routes its facts with the live [`RouteSet`];
//!    records `failed` (with the reason: the raw message is never lost) or `unrouted` at once;
//! 2. publishes one [`Envelope`] per destination not yet published and waits for the bus to confirm all of
//!    them, retrying the whole batch in order with backoff while the bus is away;
//! 3. records, in one update per entry, `mapped` (the bundle), `routed` (routes, destinations, partition key)
//!    and `published` for each confirmed destination. When the bus fails, `mapped` and `routed` are recorded
//!    first, so the journal shows the entries waiting for it.
//!
//! One journal update per routed entry in the normal case; while batch N waits for its confirms, batch N + 1
//! is read, mapped and routed.
//!
//! A crash at any point leaves the entry in a state that step 1 picks up again on restart: delivery is at
//! least once, and the envelope's `message_id` (the journal id) lets sinks drop copies.
//!
//! [`RouteSet`]: crate::routing::RouteSet

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::bus::{self, Bus, Envelope};
use crate::config::Settings;
use crate::documents::DocumentMetadata;
use crate::facts::{EventClass, Mapped, Transform};
use crate::journal::{self, Delivery, DocumentMeta, Flush, Journal, Progress, Stage, State, Unfinished};
use crate::ops::metrics as ops_metrics;
use crate::routing::reload::LiveRoutes;
use crate::shutdown::Shutdown;

pub mod map_stage;

/// Why the pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The journal could not be read or updated.
    #[error("journal: {0}")]
    Journal(#[from] journal::Error),
    /// A blocking task failed.
    #[error("pipeline task: {0}")]
    Task(String),
}

/// The map stage the pipeline uses: the ADT mapping and the documents module, loaded from the settings.
pub fn transform_for(settings: &Settings) -> Result<Arc<dyn Transform>, map_stage::Error> {
    Ok(Arc::new(map_stage::MapStage::load(settings)?))
}

/// The pipeline's parts.
#[derive(Clone)]
pub struct Pipeline {
    /// The journal it reads and updates.
    pub journal: Journal,
    /// The map stage.
    pub transform: Arc<dyn Transform>,
    /// The live routes.
    pub routes: Arc<LiveRoutes>,
    /// Where envelopes go.
    pub bus: Bus,
    /// Most entries per batch (also per publish).
    pub batch: usize,
    /// The sink instances configured now. A destination recorded for any other (a sink removed from the
    /// configuration since the entry was routed) is not published: the entry is recorded `failed` with the
    /// reason, its other destinations are published, and nothing stalls.
    pub sinks: Arc<BTreeSet<String>>,
}

/// A routed entry in hand: what to publish.
struct Routed {
    id: u64,
    progress: Progress,
    bundle: Bytes,
    /// A document's XDS metadata.
    xds: Option<DocumentMetadata>,
    /// True once its `mapped` and `routed` stages are journaled.
    recorded: bool,
}

impl Routed {
    /// The `mapped` and `routed` stages still to journal (none once recorded); marks them recorded.
    fn routing_stages(&mut self) -> Vec<Stage> {
        if std::mem::replace(&mut self.recorded, true) {
            return Vec::new();
        }
        vec![Stage::Mapped { bundle: self.bundle.clone() }, Stage::Routed { progress: self.progress.clone() }]
    }
}

/// What one pass did (for tests and logs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Entries handled.
    pub entries: usize,
    /// Envelopes the bus confirmed.
    pub published: usize,
}

impl Pipeline {
    /// Runs until `shutdown`: first the outbox (every unfinished entry), then each newly committed entry.
    ///
    /// Two batches are in hand at a time: while batch N waits for the bus to confirm it, batch N + 1 is read,
    /// mapped, routed and recorded. Publications stay in journal order (N + 1 is published only once N is
    /// confirmed), so a patient's messages reach the bus in order.
    pub async fn run(self, mut shutdown: Shutdown) -> Result<(), Error> {
        let mut committed = self.journal.committed();
        let mut replays = self.journal.replays();
        let mut cursor = 0;
        // Staged (mapped, routed, recorded) and waiting for its publication.
        let mut pending: Option<Vec<Routed>> = None;
        // The `published` records of the last published batch: awaited once the next one is published, so
        // their commit overlaps the next batch's work (the cursor already moved past those entries).
        let mut recording: Vec<Answer> = Vec::new();
        loop {
            if shutdown.is_fired() {
                return await_all(recording).await;
            }
            if replays.has_changed().unwrap_or(false) {
                // An operator sent entries back through the pipeline: finish what is in hand, then look
                // behind the cursor again.
                replays.borrow_and_update();
                if let Some(staged) = pending.take() {
                    match self.publish_staged(staged, &mut shutdown).await? {
                        Some((_, answers)) => recording.extend(answers),
                        None => return await_all(recording).await,
                    }
                }
                await_all(std::mem::take(&mut recording)).await?;
                cursor = 0;
            }
            let next = async {
                // Cursor 0 (the start, or after a replay): read once redb holds every logged stage.
                let batch = self.read(cursor, cursor == 0).await?;
                match batch.last().map(|entry| entry.meta.id) {
                    None => Ok::<_, Error>(None),
                    Some(last) => Ok(Some((last, self.stage(batch).await?))),
                }
            };
            let in_hand = pending.take();
            let had_pending = in_hand.is_some();
            let publish = async {
                match in_hand {
                    Some(staged) => self.publish_staged(staged, &mut shutdown).await,
                    None => Ok(Some((Pass::default(), Vec::new()))),
                }
            };
            let (next, published) = tokio::join!(next, publish);
            let next = next?;
            match published? {
                Some((_, answers)) => {
                    await_all(std::mem::replace(&mut recording, answers)).await?;
                }
                None => return await_all(recording).await,
            }
            match next {
                Some((last, (staged, ended))) => {
                    recording.extend(ended);
                    cursor = last;
                    pending = Some(staged);
                }
                None if had_pending => {}
                None => {
                    await_all(std::mem::take(&mut recording)).await?;
                    tokio::select! {
                        _ = shutdown.recv() => return Ok(()),
                        changed = committed.changed() => if changed.is_err() { return Ok(()) },
                        // Nothing in hand: look behind the cursor again at once.
                        _ = replays.changed() => cursor = 0,
                    }
                }
            }
        }
    }

    /// Handles one batch: map, route, record, publish (retrying until confirmed or `shutdown`), record.
    /// `None` when shutdown interrupted the publication (the entries stay unfinished for the next start).
    pub async fn process(
        &self,
        batch: Vec<Unfinished>,
        shutdown: &mut Shutdown,
    ) -> Result<Option<Pass>, Error> {
        let entries = batch.len();
        let (staged, ended) = self.stage(batch).await?;
        await_all(ended).await?;
        match self.publish_staged(staged, shutdown).await? {
            Some((pass, answers)) => {
                await_all(answers).await?;
                Ok(Some(Pass { entries, ..pass }))
            }
            None => Ok(None),
        }
    }

    /// Publishes staged entries (retrying the whole batch in order until confirmed or `shutdown`) and queues
    /// their `published` records, returned unawaited. A destination that is not a configured sink (removed
    /// from the configuration since the entry was routed) is not published: the entry is recorded `failed`
    /// with the reason once its other destinations are published. `None` when shutdown interrupted.
    async fn publish_staged(
        &self,
        mut staged: Vec<Routed>,
        shutdown: &mut Shutdown,
    ) -> Result<Option<(Pass, Vec<Answer>)>, Error> {
        let entries = staged.len();
        let mut envelopes = Vec::new();
        let mut removed: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for routed in &staged {
            for delivery in routed.progress.deliveries.iter().filter(|d| !d.published) {
                if self.sinks.contains(&delivery.destination) {
                    envelopes.push(envelope(routed, delivery));
                } else {
                    let (count, _) = removed.entry(&delivery.destination).or_insert((0, routed.id));
                    *count += 1;
                }
            }
        }
        for (sink, (count, first)) in &removed {
            tracing::warn!(
                sink,
                entries = count,
                first_entry = first,
                "destination is not a configured sink (removed from the configuration?): not published there, \
                 entries recorded failed; their other destinations are published"
            );
            metrics::counter!(ops_metrics::BUS_PUBLISHED, "result" => "undeliverable").increment(*count);
        }
        if !envelopes.is_empty() && !self.publish_until_confirmed(&envelopes, &mut staged, shutdown).await? {
            return Ok(None);
        }
        let mut answers = Vec::with_capacity(staged.len());
        for mut routed in staged {
            let mut stages = routed.routing_stages();
            let (known, gone): (Vec<&Delivery>, Vec<&Delivery>) = routed
                .progress
                .deliveries
                .iter()
                .filter(|d| !d.published)
                .partition(|d| self.sinks.contains(&d.destination));
            if !known.is_empty() {
                stages.push(Stage::Published {
                    destinations: known.iter().map(|d| d.destination.clone()).collect(),
                });
            }
            if !gone.is_empty() {
                let names: Vec<String> = gone.iter().map(|d| format!("`{}`", d.destination)).collect();
                stages.push(Stage::Failed {
                    reason: format!(
                        "not published to {}: no longer a configured sink (removed from the configuration); \
                         add it back and replay from publish to deliver",
                        names.join(", ")
                    ),
                });
            }
            if !stages.is_empty() {
                answers.push(self.journal.enqueue_update(routed.id, stages, Flush::Deferred).await?);
            }
        }
        Ok(Some((Pass { entries, published: envelopes.len() }, answers)))
    }

    /// Publishes `envelopes` until the bus confirms them all (retrying the whole batch, in order, with
    /// backoff); false when `shutdown` came first. When the bus fails, the `mapped` and `routed` stages of
    /// `staged` not yet journaled are recorded first, so the journal shows them waiting for the bus.
    async fn publish_until_confirmed(
        &self,
        envelopes: &[Envelope],
        staged: &mut [Routed],
        shutdown: &mut Shutdown,
    ) -> Result<bool, Error> {
        let mut backoff = Duration::from_millis(200);
        let count = envelopes.len() as u64;
        loop {
            let started = std::time::Instant::now();
            let attempt = tokio::select! {
                _ = shutdown.recv() => return Ok(false),
                result = self.bus.publish(envelopes) => result,
            };
            match attempt {
                Ok(()) => {
                    metrics::histogram!(ops_metrics::BUS_CONFIRM_SECONDS)
                        .record(started.elapsed().as_secs_f64());
                    metrics::counter!(ops_metrics::BUS_PUBLISHED, "result" => "confirmed").increment(count);
                    return Ok(true);
                }
                Err(error) => {
                    let result =
                        if matches!(error, bus::Error::NotConfirmed { .. }) { "nacked" } else { "failed" };
                    metrics::counter!(ops_metrics::BUS_PUBLISHED, "result" => result).increment(count);
                    tracing::warn!(%error, envelopes = envelopes.len(), "publish failed; retrying the batch");
                    let mut recording = Vec::new();
                    for routed in staged.iter_mut() {
                        let stages = routed.routing_stages();
                        if !stages.is_empty() {
                            recording
                                .push(self.journal.enqueue_update(routed.id, stages, Flush::Deferred).await?);
                        }
                    }
                    await_all(recording).await?;
                    tokio::select! {
                        _ = shutdown.recv() => return Ok(false),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Reads the next unfinished entries after `cursor`. `settled`: first wait until redb holds every
    /// logged write (after a replay, whose stage must be seen); otherwise read what redb holds, as the
    /// `committed` watch wakes the loop for anything applied later.
    async fn read(&self, cursor: u64, settled: bool) -> Result<Vec<Unfinished>, Error> {
        let journal = self.journal.clone();
        let limit = self.batch.max(1);
        tokio::task::spawn_blocking(move || match settled {
            true => journal.unfinished(cursor, limit),
            false => journal.unfinished_applied(cursor, limit),
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))?
        .map_err(Error::from)
    }

    /// Maps and routes what needs it and returns the routed entries with their bundle, and the queued records
    /// of the entries that end here (`failed`, `unrouted`). A routed entry's `mapped` and `routed` stages are
    /// journaled with its `published` record, in one update, once the bus confirmed it (or as soon as the bus
    /// fails): a crash before that leaves it `received`, and the outbox maps it again.
    async fn stage(&self, batch: Vec<Unfinished>) -> Result<(Vec<Routed>, Vec<Answer>), Error> {
        let transform = Arc::clone(&self.transform);
        let routes = self.routes.current();
        let decided = tokio::task::spawn_blocking(move || {
            batch
                .into_iter()
                .map(|mut entry| {
                    let id = entry.meta.id;
                    let kind = entry.meta.kind;
                    if entry.meta.state == State::Routed
                        && let (Some(progress), Some(bundle)) =
                            (entry.meta.progress.take(), entry.bundle.take())
                    {
                        // A document's XDS metadata is not journaled: read it again for its envelopes.
                        let xds = match progress.document {
                            Some(_) => {
                                transform.map_with_metadata(kind, &entry.raw).ok().and_then(|(_, m)| m)
                            }
                            None => None,
                        };
                        return (id, Decision::Routed(progress, Bytes::from(bundle), xds));
                    }
                    match transform.map_with_metadata(kind, &entry.raw) {
                        Err(failure) => {
                            let label = failure_label(&failure.location);
                            (id, Decision::Failed(failure.to_string(), label))
                        }
                        Ok((mapped, xds)) => {
                            let routing = routes.route(&mapped.facts);
                            let progress = progress_of(&mapped, &routing);
                            (id, Decision::Mapped(progress, Bytes::from(mapped.bundle), xds))
                        }
                    }
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))?;

        let mut answers = Vec::new();
        let mut routed = Vec::new();
        let mut failures = Vec::new();
        let mut unrouted = 0u64;
        let mut already_routed = 0u64;
        for (id, decision) in decided {
            match decision {
                Decision::Failed(reason, label) => {
                    failures.push(label);
                    answers.push(
                        self.journal
                            .enqueue_update(id, vec![Stage::Failed { reason }], Flush::Deferred)
                            .await?,
                    );
                }
                Decision::Mapped(progress, bundle, xds) => {
                    let mut entry = Routed { id, progress, bundle, xds, recorded: false };
                    if entry.progress.deliveries.is_empty() {
                        unrouted += 1;
                        answers.push(
                            self.journal.enqueue_update(id, entry.routing_stages(), Flush::Deferred).await?,
                        );
                    } else {
                        routed.push(entry);
                    }
                }
                Decision::Routed(progress, bundle, xds) => {
                    already_routed += 1;
                    routed.push(Routed { id, progress, bundle, xds, recorded: true });
                }
            }
        }
        for label in failures {
            metrics::counter!(ops_metrics::MAPPING_FAILURES, "reason" => label).increment(1);
        }
        let newly_routed = routed.len() as u64 - already_routed;
        metrics::counter!(ops_metrics::ROUTING_MESSAGES, "result" => "routed").increment(newly_routed);
        metrics::counter!(ops_metrics::ROUTING_MESSAGES, "result" => "unrouted").increment(unrouted);
        Ok((routed, answers))
    }
}

/// A queued journal update's answer.
type Answer = tokio::sync::oneshot::Receiver<Result<(), journal::Error>>;

/// Waits for every queued update; the first error wins.
async fn await_all(answers: Vec<Answer>) -> Result<(), Error> {
    for answer in answers {
        answer.await.unwrap_or(Err(journal::Error::WriterLost))?;
    }
    Ok(())
}

enum Decision {
    Failed(String, &'static str),
    Mapped(Progress, Bytes, Option<DocumentMetadata>),
    Routed(Progress, Bytes, Option<DocumentMetadata>),
}

/// A bounded metrics label for a mapping failure: the segment (`PID`) or XML root named by its location,
/// `other` when it does not look like one.
fn failure_label(location: &str) -> &'static str {
    const KNOWN: [&str; 13] = [
        "MSH",
        "EVN",
        "PID",
        "PD1",
        "PV1",
        "PV2",
        "ZBE",
        "ZFA",
        "ZFM",
        "OBR",
        "OBX",
        "ROL",
        "ClinicalDocument",
    ];
    let head = location.split(['-', '/', '.', ':', ' ']).next().unwrap_or_default();
    KNOWN.into_iter().find(|k| *k == head).unwrap_or("other")
}

fn progress_of(mapped: &Mapped, routing: &crate::routing::Routing) -> Progress {
    let facts = &mapped.facts;
    let document = (facts.event_class == Some(EventClass::Document)).then(|| DocumentMeta {
        document_type: facts.document_type.clone(),
        confidentiality: facts.confidentiality.clone(),
    });
    Progress {
        kind: facts.kind,
        event_class: facts.event_class,
        partition_key: bus::partition_key(&facts.patient_key),
        routes: routing.routes.clone(),
        deliveries: routing
            .destinations
            .iter()
            .map(|(destination, route)| Delivery {
                destination: destination.clone(),
                route: route.clone(),
                published: false,
            })
            .collect(),
        document,
    }
}

fn envelope(routed: &Routed, delivery: &Delivery) -> Envelope {
    let (id, progress) = (routed.id, &routed.progress);
    Envelope {
        message_id: id,
        sink: delivery.destination.clone(),
        route: delivery.route.clone(),
        kind: progress.kind,
        event_class: progress.event_class,
        partition_key: progress.partition_key.clone(),
        document: progress.document.clone(),
        document_ref: progress.document.as_ref().map(|_| format!("journal:{id}")),
        xds: routed.xds.clone().map(Box::new),
        bundle: routed.bundle.clone(),
    }
}
