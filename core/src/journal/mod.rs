//! The durable journal: every acknowledged event, every pending delivery and every dead
//! letter, in one redb file under `queue.path`.
//!
//! **Group commit.** One writer thread owns all writes. Sources, sink workers and the sweeper
//! send it commands; it takes every command waiting (up to [`MAX_BATCH`]), applies them in one
//! transaction, commits once (one fsync for the whole batch) and only then answers each
//! sender. A source answers 2xx only after that answer.
//!
//! **Routing.** The writer routes each new event in the transaction that stores it: the
//! event and its `(route, sink)` deliveries become durable together, so a restart neither
//! loses an event nor routes it again (possibly differently under a changed config). Routing
//! is a few index lookups per event; no sink I/O happens here, so a slow or dead sink never
//! slows ingest — its backlog waits on disk, in `pending`.
//!
//! **Why redb.** Pure Rust, crash-safe copy-on-write B-trees with checksummed commits, MVCC
//! readers alongside the writer (the sink workers read while the writer commits), and freed
//! pages are reused, so the file does not grow under steady load once retention removes
//! delivered events.

mod recent;
mod records;
mod store;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use redb::Database;
use tokio::sync::{Notify, broadcast, mpsc, oneshot};

pub use records::{Attempt, DeadKind, DeadLetter, Millis, PendingState, now_millis, to_time};
pub use store::{DeadFilter, DeliveryKey, FILE_NAME, Outcome, PendingItem, ReplayReport, Stats};

use crate::config::QueueConfig;
use crate::event::Event;
use crate::health::Health;
use crate::ingest::{Committed, Ingest, IngestError, RejectedInput};
use crate::rules::RouteTable;

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

    pub(crate) fn call(mut self, result: Result<(), JournalError>) {
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

/// An event as it was routed, for `herald tap`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Tapped {
    pub event: Event,
    /// `(route, sink)` deliveries, in order; empty when the event matched nothing.
    pub deliveries: Vec<(String, String)>,
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

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    #[error("{0}")]
    Io(String),
    /// Another process (a running gateway) has the journal open.
    #[error("the journal {0} is in use by another process (a running gateway?)")]
    Locked(String),
    #[error("the journal is shut down")]
    Closed,
}

/// Counters mirrored from the journal after every commit, read without a transaction.
#[derive(Debug, Default)]
pub(crate) struct Live {
    undelivered_events: AtomicU64,
    undelivered_bytes: AtomicU64,
}

/// The open journal, shared by sources (as [`Ingest`]), the delivery engine and the admin API.
pub struct Journal {
    db: Arc<Database>,
    dir: PathBuf,
    commands: mpsc::Sender<writer::Command>,
    live: Arc<Live>,
    max_events: Option<u64>,
    max_bytes: Option<u64>,
    notifies: Notifies,
    recent: Arc<recent::Recent>,
    tap: broadcast::Sender<Arc<Tapped>>,
    health: Health,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Journal {
    /// Opens (or creates) the journal in `queue.path`, and starts its writer. `sinks` are the
    /// sinks of the config: their workers are woken when deliveries for them are committed.
    pub fn open(
        queue: &QueueConfig,
        routes: Arc<ArcSwap<RouteTable>>,
        sinks: &[String],
    ) -> Result<Journal, JournalError> {
        let db = Arc::new(store::open(&queue.path)?);
        let stats = store::stats(&db)?;
        let live = Arc::new(Live {
            undelivered_events: AtomicU64::new(stats.undelivered_events),
            undelivered_bytes: AtomicU64::new(stats.undelivered_bytes),
        });
        let notifies = Notifies::default();
        for sink in sinks {
            notifies.get(sink);
        }
        let (tap, _) = broadcast::channel(TAP_BUFFER);
        let recent = Arc::new(recent::Recent::default());
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        let handle = writer::spawn(writer::Writer {
            db: db.clone(),
            commands: rx,
            routes,
            live: live.clone(),
            notifies: notifies.clone(),
            recent: recent.clone(),
            tap: tap.clone(),
            retention_ms: i64::try_from(queue.retention.as_millis()).unwrap_or(i64::MAX),
        })
        .map_err(|e| JournalError::Io(format!("cannot start the journal writer: {e}")))?;
        Ok(Journal {
            db,
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
    pub fn tap(&self) -> broadcast::Receiver<Arc<Tapped>> {
        self.tap.subscribe()
    }

    /// Readiness checks of the rest of the gateway, reported by [`Ingest::ready`].
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// A small durable value kept for a part of the gateway (e.g. the Google subscription
    /// manager's channel ids), committed before this returns. `None` deletes it.
    pub fn put_state(&self, key: &str, value: Option<&[u8]>) -> Result<(), JournalError> {
        store::put_state(&self.db, key, value)
    }

    pub fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>, JournalError> {
        store::get_state(&self.db, key)
    }

    /// Every state key starting with `prefix`, with its value.
    pub fn list_state(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, JournalError> {
        store::list_state(&self.db, prefix)
    }

    /// Moves every pending delivery of `sink` to the dead letters with `reason` (a sink
    /// removed from the config whose backlog could not be delivered). Returns how many.
    pub fn bury(&self, sink: &str, reason: &str) -> Result<usize, JournalError> {
        let n = store::bury(&self.db, sink, reason)?;
        self.refresh_live()?;
        Ok(n)
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

    async fn send(&self, command: writer::Command) -> Result<(), JournalError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| JournalError::Closed)
    }

    /// Pending deliveries of `sink` after `after`, read from a snapshot.
    pub async fn scan_pending(
        &self,
        sink: &str,
        after: Option<DeliveryKey>,
        limit: usize,
    ) -> Result<Vec<PendingItem>, JournalError> {
        let db = self.db.clone();
        let recent = self.recent.clone();
        let sink = sink.to_owned();
        tokio::task::spawn_blocking(move || {
            store::scan_pending(&db, &recent, &sink, after.as_ref(), limit)
        })
        .await
        .map_err(|e| JournalError::Io(e.to_string()))?
    }

    pub fn stats(&self) -> Result<Stats, JournalError> {
        store::stats(&self.db)
    }

    pub fn dead_letters(&self, filter: &DeadFilter) -> Result<Vec<DeadLetter>, JournalError> {
        store::dead_letters(&self.db, filter)
    }

    /// Replays dead letters and wakes the sinks that got deliveries.
    pub fn replay(
        &self,
        filter: &DeadFilter,
        known_sinks: &[String],
    ) -> Result<ReplayReport, JournalError> {
        let report = store::replay(&self.db, filter, known_sinks)?;
        for sink in &report.sinks {
            self.notifies.get(sink).notify_one();
        }
        self.refresh_live()?;
        Ok(report)
    }

    pub fn purge(&self, filter: &DeadFilter) -> Result<usize, JournalError> {
        store::purge(&self.db, filter)
    }

    fn refresh_live(&self) -> Result<(), JournalError> {
        let stats = store::stats(&self.db)?;
        self.live
            .undelivered_events
            .store(stats.undelivered_events, Ordering::Relaxed);
        self.live
            .undelivered_bytes
            .store(stats.undelivered_bytes, Ordering::Relaxed);
        Ok(())
    }

    fn full(&self) -> Option<String> {
        let events = self.live.undelivered_events.load(Ordering::Relaxed);
        let bytes = self.live.undelivered_bytes.load(Ordering::Relaxed);
        if let Some(max) = self.max_events.filter(|max| events >= *max) {
            return Some(format!(
                "{events} undelivered events (queue.max_events is {max})"
            ));
        }
        if let Some(max) = self.max_bytes.filter(|max| bytes >= *max) {
            return Some(format!(
                "{bytes} bytes of undelivered events (queue.max_bytes is {max})"
            ));
        }
        None
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
    async fn commit(&self, event: Event) -> Result<Committed, IngestError> {
        if let Some(why) = self.full() {
            return Err(IngestError::Full(why));
        }
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(writer::Command::Append { event, reply })
            .await
            .map_err(|_| IngestError::Unavailable("the journal is shutting down".into()))?;
        answer
            .await
            .map_err(|_| IngestError::Unavailable("the journal stopped before committing".into()))?
            .map_err(|e| IngestError::Unavailable(e.to_string()))
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
            .map_err(|e| IngestError::Unavailable(e.to_string()))
    }

    fn ready(&self) -> Result<(), String> {
        if self.commands.is_closed() {
            return Err("the journal is shut down".into());
        }
        if let Some(why) = self.full() {
            return Err(format!("queue full: {why}"));
        }
        self.health.check()
    }
}

/// Opens a journal directory for `herald dlq` without starting a writer.
pub fn open_for_admin(dir: &Path) -> Result<AdminJournal, JournalError> {
    Ok(AdminJournal {
        db: store::open(dir)?,
    })
}

/// The journal of a stopped gateway, for `herald dlq`.
pub struct AdminJournal {
    db: Database,
}

impl AdminJournal {
    pub fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>, JournalError> {
        store::get_state(&self.db, key)
    }
    pub fn put_state(&self, key: &str, value: Option<&[u8]>) -> Result<(), JournalError> {
        store::put_state(&self.db, key, value)
    }
    pub fn list_state(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, JournalError> {
        store::list_state(&self.db, prefix)
    }
    pub fn dead_letters(&self, filter: &DeadFilter) -> Result<Vec<DeadLetter>, JournalError> {
        store::dead_letters(&self.db, filter)
    }
    pub fn replay(
        &self,
        filter: &DeadFilter,
        known_sinks: &[String],
    ) -> Result<ReplayReport, JournalError> {
        store::replay(&self.db, filter, known_sinks)
    }
    pub fn purge(&self, filter: &DeadFilter) -> Result<usize, JournalError> {
        store::purge(&self.db, filter)
    }
    pub fn stats(&self) -> Result<Stats, JournalError> {
        store::stats(&self.db)
    }
}

#[cfg(test)]
mod tests;
