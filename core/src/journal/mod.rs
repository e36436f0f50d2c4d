//! The durable journal: every acknowledged event, every pending delivery and every dead
//! letter, under `queue.path` (docs/architecture.md §10 and §10.3): events and delivery
//! outcomes in an append-only log of segments (`log/`, [`log`] and [`ledger`]) with what is
//! pending indexed in memory, dead letters and the state table in a small redb file
//! (`journal.redb`, `store.rs`). A journal of an older version, with its events in redb, is
//! converted at first start ([`upgrade`]).
//!
//! **Group commit.** One writer thread owns all writes. Sources, sink workers and the sweeper
//! send it commands; it takes every command waiting (up to [`MAX_BATCH`]), writes the batch's
//! dead letters to redb if it has any, appends its records to the log with one write and one
//! fdatasync, and only then answers each sender. A source answers 2xx only after that answer.
//!
//! **Routing.** The writer routes each new event in the batch that stores it: the event's
//! record carries its `(route, sink)` deliveries, so a restart neither loses an event nor
//! routes it again (possibly differently under a changed config). Routing is a few index
//! lookups per event; no sink I/O happens here, so a slow or dead sink never slows ingest —
//! its backlog waits on disk, in the log.
//!
//! **Why a log.** A group commit is then one sequential write and one fdatasync, the least a
//! durable gateway can do; redb's copy-on-write commit rewrote some 20 scattered pages per
//! batch (README, "Benchmark"). The price is the index in memory (a few bytes per pending
//! delivery and per event in the duplicate window), checkpointed so a start reads little.
//!
//! **Errors** come in kinds a caller acts on differently ([`JournalError`]): full, shut down,
//! held by another process, damaged, or an I/O failure. The `error` module says who does what
//! with each.

mod engine;
mod error;
mod forget;
mod leases;
pub mod ledger;
/// The append-only segment log the engine's events and outcomes go to
/// (docs/architecture.md §10.3).
pub mod log;
#[cfg(test)]
mod old_writer;
mod recent;
mod records;
mod store;
pub mod upgrade;
mod writer;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use redb::Database;
use tokio::sync::{Notify, broadcast, mpsc, oneshot};

pub use error::{JournalError, Limit};
pub use records::{Attempt, DeadKind, DeadLetter, Millis, PendingState, now_millis, to_time};
pub use store::{DeadFilter, DeliveryKey, FILE_NAME, Outcome, PendingItem, ReplayReport, Stats};

use crate::config::QueueConfig;
use crate::event::Event;
use crate::health::Health;
use crate::ingest::{Committed, Ingest, IngestError, RejectedInput};
use crate::rules::RouteTable;
use error::During;

/// Routed events a slow `herald tap` may fall behind by before it misses some.
const TAP_BUFFER: usize = 4096;

/// What to do once an outcome handed to [`Journal::record_then`] is committed. It runs on
/// the journal's writer thread, so it must be quick (update a map, wake a task). It is called
/// exactly once: with the commit's result, or with [`JournalError::Closed`] if the outcome
/// never reached a commit.
pub struct OnRecorded(Option<Recorded>);

type Recorded = Box<dyn FnOnce(Result<(), JournalError>) + Send>;

impl OnRecorded {
    pub fn new(then: impl FnOnce(Result<(), JournalError>) + Send + 'static) -> Self {
        OnRecorded(Some(Box::new(then)))
    }

    pub fn call(mut self, result: Result<(), JournalError>) {
        if let Some(then) = self.0.take() {
            then(result);
        }
    }
}

impl Drop for OnRecorded {
    fn drop(&mut self) {
        if let Some(then) = self.0.take() {
            then(Err(JournalError::Closed));
        }
    }
}

/// What is called once the outcomes handed over together by [`Queue::record_all_then`]
/// were committed, or could not be: with a result for each, in their order. Called with
/// [`JournalError::Closed`] for all if dropped uncalled (the writer stopped).
///
/// [`Queue::record_all_then`]: crate::queue::Queue::record_all_then
pub struct OnRecordedAll {
    then: Option<RecordedAll>,
    count: usize,
}

type RecordedAll = Box<dyn FnOnce(Vec<Result<(), JournalError>>) + Send>;

impl OnRecordedAll {
    /// `then` for `count` outcomes.
    pub fn new(
        count: usize,
        then: impl FnOnce(Vec<Result<(), JournalError>>) + Send + 'static,
    ) -> Self {
        OnRecordedAll {
            then: Some(Box::new(then)),
            count,
        }
    }

    pub fn call(mut self, results: Vec<Result<(), JournalError>>) {
        if let Some(then) = self.then.take() {
            then(results);
        }
    }
}

impl Drop for OnRecordedAll {
    fn drop(&mut self) {
        if let Some(then) = self.then.take() {
            then(vec![Err(JournalError::Closed); self.count]);
        }
    }
}

/// An event as it was routed, for `herald tap` and the console's activity. Sent by value:
/// both fields are shared, so a clone for each follower is two counts, not an allocation.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Tapped {
    /// Shared with the writer's window of recent events rather than cloned: every event is
    /// tapped while the console follows the tap (docs/architecture.md §12, README
    /// "Benchmark").
    #[serde(serialize_with = "shared_event")]
    pub event: Arc<Event>,
    /// `(route, sink)` deliveries, in order; empty when the event matched nothing. Shared
    /// by the events routed alike: the writer reuses the last list while it is the same.
    #[serde(serialize_with = "shared_deliveries")]
    pub deliveries: Arc<[(String, String)]>,
}

fn shared_event<S: serde::Serializer>(event: &Arc<Event>, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&**event, s)
}

fn shared_deliveries<S: serde::Serializer>(
    deliveries: &Arc<[(String, String)]>,
    s: S,
) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&**deliveries, s)
}

/// The wake-up of each sink's worker, created on first use (sinks come and go on reload).
#[derive(Clone, Default)]
pub(crate) struct Notifies(Arc<std::sync::RwLock<HashMap<String, Arc<Notify>>>>);

impl Notifies {
    pub(crate) fn get(&self, sink: &str) -> Arc<Notify> {
        if let Some(n) = self.0.read().ok().and_then(|m| m.get(sink).cloned()) {
            return n;
        }
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        map.entry(sink.to_owned()).or_default().clone()
    }
}

/// The most commands applied in one transaction.
pub const MAX_BATCH: usize = 2048;

/// Counters mirrored from the journal after every commit, read without a transaction, and
/// the last failed commit.
#[derive(Debug, Default)]
pub(crate) struct Live {
    undelivered_events: AtomicU64,
    undelivered_bytes: AtomicU64,
    /// Set with `failure`: a commit failed and none has succeeded since.
    failed: AtomicBool,
    failure: std::sync::Mutex<Option<(std::time::Instant, String)>>,
}

/// How long `/readyz` reports a failed commit (a full disk, say) when no commit succeeded
/// since. Then it says ready again, so that a load balancer sends requests that find out
/// whether there is room now: without traffic no commit would ever clear it.
const FAILED_COMMIT_UNREADY: std::time::Duration = std::time::Duration::from_secs(10);

impl Live {
    /// The writer's commit failed with `error`.
    pub(crate) fn commit_failed(&self, error: &JournalError) {
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        *failure = Some((std::time::Instant::now(), error.to_string()));
        self.failed.store(true, Ordering::Release);
    }

    /// A commit succeeded: one per commit, so it costs one load unless a commit had failed.
    pub(crate) fn commit_succeeded(&self) {
        if self.failed.load(Ordering::Relaxed) && self.failed.swap(false, Ordering::AcqRel) {
            *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    /// Why the journal is not ready: a commit failed lately and none has succeeded since.
    fn failing(&self) -> Option<String> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        let failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        let (at, reason) = failure.as_ref()?;
        let ago = at.elapsed();
        (ago < FAILED_COMMIT_UNREADY).then(|| {
            format!(
                "journal: a commit failed {}s ago and none succeeded since: {reason}",
                ago.as_secs()
            )
        })
    }
}

/// The open journal: the `local` engine of the storage boundary ([`crate::queue::Queue`],
/// docs/architecture.md §10), shared by sources, the delivery engine and the admin API.
pub struct Journal {
    db: Arc<Database>,
    /// The log's index and readers (the writer thread owns the log itself).
    shared: Arc<ledger::Shared>,
    dir: PathBuf,
    commands: mpsc::Sender<writer::Command>,
    live: Arc<Live>,
    max_events: Option<u64>,
    max_bytes: Option<u64>,
    notifies: Notifies,
    recent: Arc<recent::Recent>,
    tap: broadcast::Sender<Tapped>,
    health: Health,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Events found damaged by a scan, each logged once.
    damaged: std::sync::Mutex<BTreeSet<u64>>,
    /// This process's name in claims (docs/architecture.md §10).
    holder: String,
    /// Claims on unrouted events, by seq.
    unrouted: Arc<leases::Leases<u64>>,
    /// Woken when an unrouted event is committed or a claim on one given up.
    unrouted_notify: Arc<Notify>,
    /// Leaderships, by name.
    leaders: leases::Leases<String>,
}

impl Journal {
    /// Opens (or creates) the journal in `queue.path`, and starts its writer. `sinks` are the
    /// sinks of the config: their workers are woken when deliveries for them are committed.
    pub fn open(
        queue: &QueueConfig,
        routes: Arc<ArcSwap<RouteTable>>,
        sinks: &[String],
    ) -> Result<Journal, JournalError> {
        Journal::open_with(queue, routes, sinks, log::Options::default())
    }

    /// [`Journal::open`] with the log laid out by `options` (tests use small segments).
    pub fn open_with(
        queue: &QueueConfig,
        routes: Arc<ArcSwap<RouteTable>>,
        sinks: &[String],
        options: log::Options,
    ) -> Result<Journal, JournalError> {
        let db = Arc::new(store::open(&queue.path)?);
        upgrade::convert_if_needed(&db, &queue.path)?;
        let (ledger, opened) = ledger::Ledger::open_with(&queue.path, options)?;
        report_opened(&opened);
        let shared = ledger.shared().clone();
        let live = {
            let index = shared.index();
            Arc::new(Live {
                undelivered_events: AtomicU64::new(index.undelivered_events),
                undelivered_bytes: AtomicU64::new(index.undelivered_bytes),
                ..Live::default()
            })
        };
        let notifies = Notifies::default();
        for sink in sinks {
            notifies.get(sink);
        }
        let (tap, _) = broadcast::channel(TAP_BUFFER);
        let recent = Arc::new(recent::Recent::default());
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        let handle = writer::spawn(writer::Writer {
            core: writer::Core {
                db: db.clone(),
                ledger,
                live: live.clone(),
                notifies: notifies.clone(),
                recent: recent.clone(),
                tap: tap.clone(),
                tapped_alike: None,
                retention_ms: retention_ms(queue),
                metrics: writer::Metrics::default(),
                records: writer::Records::default(),
            },
            commands: rx,
            routes,
        })
        .map_err(|e| JournalError::io("starting the journal's writer thread", e))?;
        Ok(Journal {
            db,
            shared,
            dir: queue.path.clone(),
            commands: tx,
            live,
            max_events: queue.max_events,
            max_bytes: queue.max_bytes,
            notifies,
            recent,
            tap,
            health: Health::default(),
            writer: std::sync::Mutex::new(Some(handle)),
            damaged: std::sync::Mutex::default(),
            holder: format!("local/{}", std::process::id()),
            unrouted: Arc::default(),
            unrouted_notify: Arc::default(),
            leaders: leases::Leases::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Woken whenever deliveries for `sink` are committed.
    pub fn notify_for(&self, sink: &str) -> Arc<Notify> {
        self.notifies.get(sink)
    }

    /// Every event routed from now on, with its deliveries (`herald tap`). While nobody
    /// subscribes, the writer does no work for it.
    pub fn tap(&self) -> broadcast::Receiver<Tapped> {
        self.tap.subscribe()
    }

    /// Readiness checks of the rest of the gateway, reported by [`Ingest::ready`].
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// A small durable value kept for a part of the gateway (e.g. the Google subscription
    /// manager's channel ids), committed before this returns. `None` deletes it.
    pub fn put_state(&self, key: &str, value: Option<&[u8]>) -> Result<(), JournalError> {
        store::put_state(&self.db, key, value).during(WRITING_STATE)
    }

    pub fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>, JournalError> {
        store::get_state(&self.db, key).during(READING_STATE)
    }

    /// Every state key starting with `prefix`, with its value.
    pub fn list_state(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, JournalError> {
        store::list_state(&self.db, prefix).during(READING_STATE)
    }

    /// Moves every pending delivery of `sink` to the dead letters with `reason` (a sink
    /// removed from the config whose backlog could not be delivered). Returns how many.
    pub async fn bury(&self, sink: &str, reason: &str) -> Result<usize, JournalError> {
        let (reply, answer) = oneshot::channel();
        self.send(writer::Command::Bury {
            sink: sink.to_owned(),
            reason: reason.to_owned(),
            reply,
        })
        .await?;
        answer
            .await
            .map_err(|_| JournalError::Closed)?
            .during(format_args!(
                "moving the backlog of sink `{sink}` to the dead letters"
            ))
    }

    /// Records how an attempt ended; returns once it is committed.
    pub async fn record(&self, key: DeliveryKey, outcome: Outcome) -> Result<(), JournalError> {
        let (reply, answer) = oneshot::channel();
        let then = OnRecorded::new(move |result| {
            let _ = reply.send(result);
        });
        self.record_then(key, outcome, then).await?;
        answer.await.map_err(|_| JournalError::Closed)?
    }

    /// Hands how an attempt ended to the writer and returns without waiting for the commit;
    /// `then` is called once it is committed, or failed. A sink worker records every
    /// delivery this way, so no task waits (and is woken) per delivery.
    pub async fn record_then(
        &self,
        key: DeliveryKey,
        outcome: Outcome,
        then: OnRecorded,
    ) -> Result<(), JournalError> {
        // When the writer is gone the command, and with it `then`, is dropped: `then` is
        // called with `Closed`.
        self.send(writer::Command::Outcome { key, outcome, then })
            .await
    }

    /// Removes delivered events older than the retention (the writer also does this by
    /// itself every minute).
    pub async fn sweep(&self) -> Result<usize, JournalError> {
        let (reply, answer) = oneshot::channel();
        self.send(writer::Command::Sweep { reply }).await?;
        answer.await.map_err(|_| JournalError::Closed)?
    }

    /// Returns once the writer has committed every batch begun before the call (and the
    /// one this joins).
    pub async fn committed_so_far(&self) -> Result<(), JournalError> {
        let (reply, answer) = oneshot::channel();
        self.send(writer::Command::Barrier { reply }).await?;
        answer.await.map_err(|_| JournalError::Closed)?
    }

    async fn send(&self, command: writer::Command) -> Result<(), JournalError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| JournalError::Closed)
    }

    /// Pending deliveries of `sink` after `after`, read from a snapshot. A delivery whose
    /// event cannot be read is left out (it cannot be delivered; the others go on) and
    /// logged, once per event.
    pub async fn scan_pending(
        &self,
        sink: &str,
        after: Option<DeliveryKey>,
        limit: usize,
    ) -> Result<Vec<PendingItem>, JournalError> {
        // Under load every delivery found is of an event still held in memory: then the
        // page is served here. A blocking thread is taken only to read events back from
        // disk, or when the writer holds the index (a checkpoint), never to wait for it here.
        // A sink whose backlog is in the log only past what it holds takes the next part
        // of it back on a blocking thread too.
        let quick = self.shared.try_index().and_then(|index| {
            let found = index.scan(sink, after.as_ref().map(|a| (a.seq, &*a.route)), limit);
            if found.len() < limit && index.spilled_from(sink).is_some() {
                return None;
            }
            drop(index);
            let held = self.recent.get_all(found.iter().map(|f| f.seq));
            Some((found, held))
        });
        let scanned = match quick {
            Some((found, held)) if held.iter().all(Option::is_some) => {
                fill(&self.shared, sink, found, held)
            }
            quick => {
                let shared = self.shared.clone();
                let recent = self.recent.clone();
                let owned = sink.to_owned();
                tokio::task::spawn_blocking(move || match quick {
                    Some((found, held)) => fill(&shared, &owned, found, held),
                    None => scan_pending(&shared, &recent, &owned, after.as_ref(), limit),
                })
                .await
                .map_err(|e| JournalError::io("", format_args!("the reading task failed: {e}")))
                .during(format_args!(
                    "reading the pending deliveries of sink `{sink}`"
                ))?
            }
        };
        if !scanned.damaged.is_empty() {
            let mut logged = self.damaged.lock().unwrap_or_else(|p| p.into_inner());
            for (key, e) in &scanned.damaged {
                if logged.insert(key.seq) {
                    tracing::error!(sink = %key.sink, route = %key.route, error = %e, "a pending delivery's event cannot be read; it is skipped");
                }
            }
        }
        Ok(scanned.items)
    }

    pub fn stats(&self) -> Result<Stats, JournalError> {
        stats(&self.shared, &self.db)
    }

    pub fn dead_letters(&self, filter: &DeadFilter) -> Result<Vec<DeadLetter>, JournalError> {
        store::dead_letters(&self.db, filter).during(READING_DEAD)
    }

    /// The dead letter `id`, if there is one; [`JournalError::Corrupt`] when its record
    /// cannot be read (where [`Journal::dead_letters`] leaves it out).
    pub fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, JournalError> {
        store::dead_letter(&self.db, id).during(READING_DEAD)
    }

    /// Replays dead letters and wakes the sinks that got deliveries.
    pub async fn replay(
        &self,
        filter: &DeadFilter,
        known_sinks: &[String],
    ) -> Result<ReplayReport, JournalError> {
        let (reply, answer) = oneshot::channel();
        self.send(writer::Command::Replay {
            filter: filter.clone(),
            known_sinks: known_sinks.to_vec(),
            reply,
        })
        .await?;
        answer
            .await
            .map_err(|_| JournalError::Closed)?
            .during(REPLAYING)
    }

    pub fn purge(&self, filter: &DeadFilter) -> Result<usize, JournalError> {
        store::purge(&self.db, filter).during(PURGING)
    }

    /// [`JournalError::Full`] while the undelivered backlog is at `queue.max_events` or
    /// `queue.max_bytes`: new events are refused until the sinks catch up.
    pub fn room(&self) -> Result<(), JournalError> {
        let events = self.live.undelivered_events.load(Ordering::Relaxed);
        let bytes = self.live.undelivered_bytes.load(Ordering::Relaxed);
        if let Some(max) = self.max_events.filter(|max| events >= *max) {
            return Err(JournalError::Full(Limit::Events {
                undelivered: events,
                max,
            }));
        }
        if let Some(max) = self.max_bytes.filter(|max| bytes >= *max) {
            return Err(JournalError::Full(Limit::Bytes {
                undelivered: bytes,
                max,
            }));
        }
        Ok(())
    }

    /// Stops the writer after it has committed every command already sent, and waits for it.
    pub async fn close(&self) {
        let (reply, answer) = oneshot::channel();
        if self
            .commands
            .send(writer::Command::Stop { reply })
            .await
            .is_ok()
        {
            let _ = answer.await;
        }
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

#[async_trait]
impl Ingest for Journal {
    async fn commit(&self, mut event: Event) -> Result<Committed, IngestError> {
        self.room()?;
        let json = event_json(&mut event)?;
        let event = Arc::new(event);
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(writer::Command::Append {
                event,
                json,
                unrouted: false,
                reply,
            })
            .await
            .map_err(|_| IngestError::Unavailable("the journal is shutting down".into()))?;
        answer
            .await
            .map_err(|_| IngestError::Unavailable("the journal stopped before committing".into()))?
            .map_err(IngestError::from)
    }

    async fn commit_for_enrichment(&self, event: Event) -> Result<Committed, IngestError> {
        crate::queue::Queue::commit_unrouted(self, event)
            .await
            .map_err(IngestError::from)
    }

    async fn reject(&self, input: RejectedInput) -> Result<(), IngestError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(writer::Command::Reject { input, reply })
            .await
            .map_err(|_| IngestError::Unavailable("the journal is shutting down".into()))?;
        answer
            .await
            .map_err(|_| IngestError::Unavailable("the journal stopped before committing".into()))?
            .map_err(IngestError::from)
    }

    fn ready(&self) -> Result<(), String> {
        if self.commands.is_closed() {
            return Err("the journal is shut down".into());
        }
        if let Err(JournalError::Full(limit)) = self.room() {
            return Err(format!("queue full: {limit}"));
        }
        if let Some(why) = self.shared.refusing() {
            return Err(format!("journal: {why}; restart the gateway"));
        }
        if let Some(why) = self.live.failing() {
            return Err(why);
        }
        self.health.check()
    }
}

/// What a source answers for each kind: [`IngestError::Full`] for a full journal, and
/// [`IngestError::Unavailable`] for the rest; both are a 503, which the senders retry.
impl From<JournalError> for IngestError {
    fn from(e: JournalError) -> IngestError {
        match e {
            JournalError::Full(limit) => IngestError::Full(limit.to_string()),
            other => IngestError::Unavailable(other.to_string()),
        }
    }
}

// What the journal was doing, for the context of an I/O error.
const COUNTERS: &str = "reading the journal's counters";
pub(super) const READING_STATE: &str = "reading a state value";
pub(super) const WRITING_STATE: &str = "writing a state value";
const READING_DEAD: &str = "reading the dead letters";
pub(super) const REPLAYING: &str = "replaying dead letters";
pub(super) const PURGING: &str = "purging dead letters";

/// An event's JSON as stored, encoded by the sender so the writer thread does not; the
/// event's `data` then shares its text with it ([`Data::share`](crate::event::Data::share)).
/// Encoding cannot fail for an [`Event`]; if it did, it would be an I/O error of the commit
/// (503).
///
/// Encoded into a buffer each thread keeps, so the one allocation per event is the shared
/// string itself (a `String` grown while encoding reallocates two or three times, then is
/// copied into the `Arc` all the same).
fn event_json(event: &mut Event) -> Result<Arc<str>, JournalError> {
    thread_local! {
        static BUFFER: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    /// A buffer grown past this by an unusually large event is not kept.
    const KEEP: usize = 64 * 1024;
    let (json, data_at) = BUFFER.with_borrow_mut(|buffer| {
        buffer.clear();
        let encoded = event
            .write_json_data_at(buffer)
            .map(|at| (Arc::<str>::from(buffer.as_str()), at))
            .map_err(|e| JournalError::io("encoding an event", e));
        if buffer.capacity() > KEEP {
            *buffer = String::new();
        }
        encoded
    })?;
    // `data` kept as the part of the JSON that holds it: its own buffer is freed here, on
    // the thread that made it, rather than later on the one that frees the event.
    if let Some(at) = data_at {
        event.data.share(&json, at);
    }
    Ok(json)
}

/// The retention in the journal's clock.
fn retention_ms(queue: &QueueConfig) -> Millis {
    i64::try_from(queue.retention.as_millis()).unwrap_or(i64::MAX)
}

/// Logs what opening the log found (a torn tail is logged by the ledger).
fn report_opened(opened: &ledger::Opened) {
    tracing::info!(
        segments = opened.recovery.segments,
        from_checkpoint = opened.from_checkpoint,
        records_read = opened.replayed,
        "journal opened"
    );
}

fn stats(shared: &ledger::Shared, db: &Database) -> Result<Stats, JournalError> {
    let dead_letters = store::dead_count(db).during(COUNTERS)?;
    let index = shared.index();
    Ok(Stats {
        undelivered_events: index.undelivered_events,
        undelivered_bytes: index.undelivered_bytes,
        pending: index.pending(),
        dead_letters,
    })
}

/// What [`scan_pending`] read.
#[derive(Debug, Default)]
struct Scanned {
    items: Vec<PendingItem>,
    /// Pending deliveries whose event cannot be read: skipped, as they cannot be delivered,
    /// so that the sink's other deliveries go on.
    damaged: Vec<(DeliveryKey, JournalError)>,
}

/// Up to `limit` pending deliveries of `sink` after `after`, in `(seq, route)` order, with
/// their events: from the window of recent events, else read from the log in one pass.
fn scan_pending(
    shared: &ledger::Shared,
    recent: &recent::Recent,
    sink: &str,
    after: Option<&DeliveryKey>,
    limit: usize,
) -> Scanned {
    let scan = || {
        shared
            .index()
            .scan(sink, after.map(|a| (a.seq, &*a.route)), limit)
    };
    let mut found = scan();
    while found.len() < limit {
        match shared.refill(sink) {
            Ok(still) => {
                found = scan();
                if !still {
                    break;
                }
            }
            // Logged by `refill`, once for where it failed.
            Err(_) => break,
        }
    }
    let held = recent.get_all(found.iter().map(|f| f.seq));
    fill(shared, sink, found, held)
}

/// The pending deliveries `found` with their events: `held[i]` is `found[i]`'s from the
/// window of recent events, if it is there; the others are read from the log in one pass.
fn fill(
    shared: &ledger::Shared,
    sink: &str,
    found: Vec<ledger::index::Found>,
    held: Vec<Option<recent::Held>>,
) -> Scanned {
    let missing: Vec<u64> = {
        let mut seqs: Vec<u64> = found
            .iter()
            .zip(&held)
            .filter(|(_, held)| held.is_none())
            .map(|(f, _)| f.seq)
            .collect();
        seqs.dedup();
        seqs
    };
    let mut read: HashMap<u64, Result<Option<recent::Held>, JournalError>> = if missing.is_empty() {
        HashMap::new()
    } else {
        shared.read(&missing).into_iter().collect()
    };
    let mut scanned = Scanned::default();
    let sink: Arc<str> = Arc::from(sink);
    for (f, held) in found.into_iter().zip(held) {
        let key = DeliveryKey {
            sink: Arc::clone(&sink),
            seq: f.seq,
            route: f.route,
        };
        let held = match held {
            Some(held) => held,
            None => match read.get(&f.seq) {
                Some(Ok(Some(held))) => held.clone(),
                Some(Err(e)) => {
                    scanned.damaged.push((key, e.clone()));
                    continue;
                }
                _ => {
                    let missing = "the record is missing, yet a delivery of it is pending";
                    scanned.damaged.push((
                        key,
                        JournalError::corrupt(format!("event {}", f.seq), missing),
                    ));
                    continue;
                }
            },
        };
        scanned.items.push(PendingItem {
            key,
            state: f.state,
            committed_at: held.committed_at,
            event: held.event,
            json: held.json,
            claimed: true,
        });
    }
    read.clear();
    scanned
}

/// `herald journal upgrade` on a stopped gateway's journal: converts it if it is of a
/// version before the log (`None`: nothing to convert). `Locked` while a gateway runs.
pub fn upgrade_stopped(dir: &Path) -> Result<Option<upgrade::Upgraded>, JournalError> {
    let db = store::open(dir)?;
    upgrade::convert_if_needed(&db, dir)
}

/// Opens a journal directory for `herald dlq` without starting a writer.
pub fn open_for_admin(dir: &Path) -> Result<AdminJournal, JournalError> {
    let db = Arc::new(store::open(dir)?);
    upgrade::convert_if_needed(&db, dir)?;
    let (ledger, opened) = ledger::Ledger::open(dir)?;
    report_opened(&opened);
    let shared = ledger.shared().clone();
    let index = shared.index();
    let live = Arc::new(Live {
        undelivered_events: AtomicU64::new(index.undelivered_events),
        undelivered_bytes: AtomicU64::new(index.undelivered_bytes),
        ..Live::default()
    });
    drop(index);
    let (tap, _) = broadcast::channel(1);
    Ok(AdminJournal {
        db: db.clone(),
        dir: dir.to_path_buf(),
        core: std::sync::Mutex::new(writer::Core {
            db,
            ledger,
            live,
            notifies: Notifies::default(),
            recent: Arc::default(),
            tap,
            tapped_alike: None,
            retention_ms: i64::MAX,
            metrics: writer::Metrics::default(),
            records: writer::Records::default(),
        }),
        shared,
    })
}

/// The journal of a stopped gateway, for `herald dlq` and `herald google status`: the
/// [`crate::queue::QueueAdmin`] part of the boundary. It holds the log's lock, so a gateway
/// cannot start on the journal meanwhile.
pub struct AdminJournal {
    db: Arc<Database>,
    dir: PathBuf,
    core: std::sync::Mutex<writer::Core>,
    shared: Arc<ledger::Shared>,
}

impl AdminJournal {
    /// `herald forget` on a stopped gateway's journal ([`crate::queue::QueueAdmin::forget`]).
    pub fn forget(&self, user_id: &str) -> Result<crate::queue::ForgetReport, JournalError> {
        crate::queue::forget::check_user_id(user_id)
            .map_err(|why| JournalError::io("forgetting a user", why))?;
        let mut core = self.core.lock().unwrap_or_else(|p| p.into_inner());
        forget::forget(&mut core, &self.dir, user_id).during("forgetting a user")
    }
    pub fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>, JournalError> {
        store::get_state(&self.db, key).during(READING_STATE)
    }
    pub fn put_state(&self, key: &str, value: Option<&[u8]>) -> Result<(), JournalError> {
        store::put_state(&self.db, key, value).during(WRITING_STATE)
    }
    pub fn list_state(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, JournalError> {
        store::list_state(&self.db, prefix).during(READING_STATE)
    }
    pub fn dead_letters(&self, filter: &DeadFilter) -> Result<Vec<DeadLetter>, JournalError> {
        store::dead_letters(&self.db, filter).during(READING_DEAD)
    }
    pub fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, JournalError> {
        store::dead_letter(&self.db, id).during(READING_DEAD)
    }
    pub fn replay(
        &self,
        filter: &DeadFilter,
        known_sinks: &[String],
    ) -> Result<ReplayReport, JournalError> {
        let (reply, mut answer) = oneshot::channel();
        let mut commands = vec![writer::Command::Replay {
            filter: filter.clone(),
            known_sinks: known_sinks.to_vec(),
            reply,
        }];
        let mut core = self.core.lock().unwrap_or_else(|p| p.into_inner());
        core.apply(&mut commands, &RouteTable::default());
        core.maintain(true);
        answer
            .try_recv()
            .map_err(|_| JournalError::Closed)?
            .during(REPLAYING)
    }
    pub fn purge(&self, filter: &DeadFilter) -> Result<usize, JournalError> {
        store::purge(&self.db, filter).during(PURGING)
    }
    pub fn stats(&self) -> Result<Stats, JournalError> {
        stats(&self.shared, &self.db)
    }

    /// A page of `sink`'s pending deliveries after `after`, with their events and retry
    /// state, due or not (`herald queue copy`). A delivery whose event cannot be read is
    /// left out and counted in the second value.
    pub fn pending(
        &self,
        sink: &str,
        after: Option<&DeliveryKey>,
        limit: usize,
    ) -> Result<(Vec<PendingItem>, usize), JournalError> {
        let scanned = scan_pending(&self.shared, &recent::Recent::default(), sink, after, limit);
        Ok((scanned.items, scanned.damaged.len()))
    }

    /// How many events wait unrouted (enrichment, docs/architecture.md §11).
    pub fn unrouted(&self) -> Result<usize, JournalError> {
        Ok(self.shared.index().unrouted.len())
    }
}

#[cfg(test)]
mod tests;
