//! [`PgQueue`]: a running gateway's queue on PostgreSQL, shared with the other gateways on the
//! same database (docs/architecture.md §10.1, §10.2).
//!
//! * **Group commit** (§10.1): commits, rejected inputs and outcomes go to one writer task,
//!   which takes everything waiting (up to [`MAX_BATCH`]), runs it in one transaction (the
//!   statements pipelined on one connection), commits, and only then answers. A deadlock
//!   with another gateway's batch is retried.
//! * **Claims**: `scan_pending` claims due rows with `FOR UPDATE SKIP LOCKED` for the lease;
//!   outcomes apply only where the claim is still this gateway's.
//! * **Wake-ups**: the commit's `NOTIFY herald_deliveries, sink` reaches every gateway's
//!   listening connection ([`listen`]), which reconnects by itself.
//! * **A monitor task** refreshes the backlog counters every second (backpressure), which is
//!   also the probe telling `/readyz` whether PostgreSQL answers; refreshes this gateway's
//!   `gateways` row; and, as the leader of `"sweep"`, removes delivered events past the
//!   retention every minute.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use deadpool_postgres::Pool;
use futures_util::future::join_all;
use herald_core::config::{QueueConfig, QueueEngine};
use herald_core::event::Event;
use herald_core::health::Health;
use herald_core::ingest::{Committed, Ingest, IngestError, RejectedInput};
use herald_core::queue::{
    Claim, DeadFilter, DeadLetter, DeliveryKey, Lead, Limit, Millis, OnRecorded, Outcome,
    PendingItem, PendingState, Queue, QueueAdmin, QueueError, Recording, ReplayReport, RouteLater,
    RoutedLater, Stats, Tapped, UnroutedItem,
};
use herald_core::rules::RouteTable;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::admin::{self, admin_impl, client, count, queue_error, text};
use crate::config::PgSpec;
use crate::error::PgError;
use crate::sql;

/// The most commands in one transaction.
pub const MAX_BATCH: usize = 1024;
/// How often the backlog is counted again (and PostgreSQL probed).
const MONITOR_EVERY: Duration = Duration::from_secs(1);
/// How often the leader of `"sweep"` sweeps.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Routed events a slow `herald tap` may fall behind by.
const TAP_BUFFER: usize = 4096;

enum Command {
    Append {
        event: Box<Event>,
        routed: bool,
        reply: oneshot::Sender<Result<Committed, QueueError>>,
    },
    Reject {
        input: RejectedInput,
        reply: oneshot::Sender<Result<(), QueueError>>,
    },
    Outcome {
        key: DeliveryKey,
        outcome: Outcome,
        then: OnRecorded,
    },
    /// Answered once the batch it is in is committed (`Queue::committed_so_far`).
    Barrier {
        reply: oneshot::Sender<()>,
    },
    Stop {
        reply: oneshot::Sender<()>,
    },
}

/// What the gateway's tasks share.
struct Inner {
    pool: Pool,
    holder: String,
    lease: Duration,
    retention_ms: i64,
    routes: Arc<ArcSwap<RouteTable>>,
    notifies: RwLock<HashMap<String, Arc<Notify>>>,
    tap: broadcast::Sender<Tapped>,
    health: Health,
    undelivered_events: AtomicU64,
    undelivered_bytes: AtomicU64,
    max_events: Option<u64>,
    max_bytes: Option<u64>,
    /// Why PostgreSQL cannot be used now (`/readyz`), while it cannot.
    down: Mutex<Option<String>>,
    closed: AtomicBool,
    /// Events whose JSON cannot be read, each logged once.
    damaged: Mutex<BTreeSet<i64>>,
    target: String,
    /// Woken when unrouted events were committed or released, here or by another gateway.
    unrouted: Arc<Notify>,
    /// Per sink, the lowest seq of the deliveries committed since its worker last asked
    /// (`Queue::wake_hint`): where its next scan may begin.
    hints: Mutex<HashMap<String, i64>>,
    /// This gateway's sinks and version, as registered.
    sinks: RwLock<Vec<String>>,
    version: String,
    /// Pending deliveries for sinks this gateway lacks (`/readyz`'s notes), as last counted.
    foreign: Mutex<Vec<String>>,
}

impl Inner {
    /// The notes on pending deliveries for sinks this gateway does not have
    /// (docs/architecture.md §10.2, "Sinks some gateways lack").
    async fn count_foreign(
        &self,
        client: &deadpool_postgres::Client,
    ) -> Result<Vec<String>, tokio_postgres::Error> {
        let sinks = self.sinks.read().unwrap_or_else(|p| p.into_inner()).clone();
        let rows = client
            .query(sql::FOREIGN, &[&sinks, &millis(self.lease)])
            .await?;
        let mut notes = Vec::with_capacity(rows.len());
        for row in &rows {
            let sink: String = row.try_get(0)?;
            let pending: i64 = row.try_get(1)?;
            let holders: Vec<String> = row.try_get(2)?;
            notes.push(if holders.is_empty() {
                format!("sink `{sink}`: {pending} deliveries pending, and no running gateway has this sink in its config; they wait until one does")
            } else {
                format!("sink `{sink}`: {pending} deliveries pending, not in this gateway's config; left to {}", holders.join(", "))
            });
        }
        Ok(notes)
    }

    /// Notes that deliveries for `sink` from `seq` on were committed.
    fn hint(&self, sink: &str, seq: i64) {
        let mut hints = self.hints.lock().unwrap_or_else(|p| p.into_inner());
        match hints.get_mut(sink) {
            Some(at) => *at = (*at).min(seq),
            None => {
                hints.insert(sink.to_owned(), seq);
            }
        }
    }

    fn notify(&self, sink: &str) -> Arc<Notify> {
        if let Some(n) = self.notifies.read().ok().and_then(|m| m.get(sink).cloned()) {
            return n;
        }
        let mut map = self.notifies.write().unwrap_or_else(|p| p.into_inner());
        map.entry(sink.to_owned()).or_default().clone()
    }

    fn wake_all(&self) {
        let map = self.notifies.read().unwrap_or_else(|p| p.into_inner());
        for n in map.values() {
            n.notify_one();
        }
        self.unrouted.notify_one();
    }

    /// Notes whether PostgreSQL answered, from an operation's result.
    fn observe<T>(&self, result: &Result<T, QueueError>) {
        match result {
            Err(QueueError::Unavailable { detail }) => self.went_down(detail),
            Ok(_) => self.came_back(),
            Err(_) => {}
        }
    }

    fn went_down(&self, why: &str) {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        if down.is_none() {
            tracing::error!(target_db = %self.target, reason = %why, "queue: PostgreSQL is unavailable; sources answer 503 and deliveries pause until it is back");
        }
        *down = Some(why.to_owned());
    }

    fn came_back(&self) {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        if down.take().is_some() {
            tracing::info!(target_db = %self.target, "queue: PostgreSQL is back");
            drop(down);
            self.wake_all();
        }
    }

    fn room(&self) -> Result<(), QueueError> {
        let events = self.undelivered_events.load(Ordering::Relaxed);
        let bytes = self.undelivered_bytes.load(Ordering::Relaxed);
        if let Some(max) = self.max_events.filter(|max| events >= *max) {
            return Err(QueueError::Full(Limit::Events {
                undelivered: events,
                max,
            }));
        }
        if let Some(max) = self.max_bytes.filter(|max| bytes >= *max) {
            return Err(QueueError::Full(Limit::Bytes {
                undelivered: bytes,
                max,
            }));
        }
        Ok(())
    }

    async fn refresh_backlog(&self) -> Result<(), QueueError> {
        let client = client(&self.pool).await?;
        let row = client
            .query_one(sql::BACKLOG, &[])
            .await
            .map_err(|e| queue_error("counting the backlog", &e))?;
        let events: i64 = row.try_get(0).map_err(|e| queue_error("", &e))?;
        let bytes: i64 = row.try_get(1).map_err(|e| queue_error("", &e))?;
        self.undelivered_events
            .store(count(events), Ordering::Relaxed);
        self.undelivered_bytes
            .store(count(bytes), Ordering::Relaxed);
        Ok(())
    }

    async fn try_lead(&self, name: &str, claim: Claim<'_>) -> Result<Lead, QueueError> {
        let client = client(&self.pool).await?;
        let e = |e: tokio_postgres::Error| queue_error("taking a leadership", &e);
        let ttl = millis(claim.ttl);
        if let Some(row) = client
            .query_opt(sql::LEAD, &[&name, &claim.holder, &ttl])
            .await
            .map_err(e)?
        {
            return Ok(Lead::Leader {
                until: row.try_get(0).map_err(e)?,
            });
        }
        match client.query_opt(sql::LEADER, &[&name]).await.map_err(e)? {
            Some(row) => Ok(Lead::Follower {
                leader: row.try_get(0).map_err(e)?,
                until: row.try_get(1).map_err(e)?,
            }),
            // Resigned in between: free now, the next call takes it.
            None => Ok(Lead::Follower {
                leader: String::new(),
                until: 0,
            }),
        }
    }

    async fn sweep(&self) -> Result<usize, QueueError> {
        let claim = Claim::new(&self.holder, self.lease.max(SWEEP_EVERY * 2));
        if !self.try_lead("sweep", claim).await?.is_leader() {
            return Ok(0);
        }
        let client = client(&self.pool).await?;
        let n = client
            .execute(sql::SWEEP, &[&self.retention_ms])
            .await
            .map_err(|e| queue_error("removing delivered events past the retention", &e))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The postgres engine's queue for a running gateway.
pub struct PgQueue {
    inner: Arc<Inner>,
    pool: Pool,
    commands: mpsc::Sender<Command>,
    writer: Mutex<Option<JoinHandle<()>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// What the gateway tells the database about itself (the `gateways` table).
#[derive(Clone, Debug, Default)]
pub struct Registration {
    /// A hash of the gateway's config (e.g. [`fingerprint`] of the config file).
    pub fingerprint: String,
    pub version: String,
}

/// The hex SHA-256 of `bytes`.
pub fn fingerprint(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A name for this process, unique among the gateways: host, pid, start time.
fn holder_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "herald".into());
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    format!("{host}/{}/{started:x}", std::process::id())
}

impl PgQueue {
    /// Connects, migrates the schema (refusing one newer than this binary), registers the
    /// gateway and starts the writer, the monitor and the listener.
    pub async fn open(
        spec: &PgSpec,
        queue: &QueueConfig,
        routes: Arc<ArcSwap<RouteTable>>,
        sinks: &[String],
        registration: Registration,
    ) -> Result<PgQueue, PgError> {
        let mut first = crate::connect(spec).await?;
        crate::migrate(&mut first).await?;
        drop(first);
        let pool = crate::pool(spec)?;
        let holder = holder_name();
        let db = |context: &'static str| move |e: tokio_postgres::Error| PgError::db(context, &e);
        {
            let client = pool.get().await.map_err(|e| PgError::Connect {
                target: spec.target(),
                detail: e.to_string(),
            })?;
            let sinks = sinks.to_vec();
            client
                .execute(
                    sql::REGISTER,
                    &[
                        &holder,
                        &registration.fingerprint,
                        &sinks,
                        &registration.version,
                    ],
                )
                .await
                .map_err(db("registering the gateway"))?;
        }
        let (tap, _) = broadcast::channel(TAP_BUFFER);
        let inner = Arc::new(Inner {
            pool: pool.clone(),
            holder,
            lease: spec.lease,
            retention_ms: millis(queue.retention),
            routes,
            notifies: RwLock::default(),
            tap,
            health: Health::default(),
            undelivered_events: AtomicU64::new(0),
            undelivered_bytes: AtomicU64::new(0),
            max_events: queue.max_events,
            max_bytes: queue.max_bytes,
            down: Mutex::new(None),
            closed: AtomicBool::new(false),
            damaged: Mutex::default(),
            target: spec.target(),
            unrouted: Arc::new(Notify::new()),
            hints: Mutex::default(),
            sinks: RwLock::new(sinks.to_vec()),
            version: registration.version.clone(),
            foreign: Mutex::default(),
        });
        for sink in sinks {
            inner.notify(sink);
        }
        inner
            .refresh_backlog()
            .await
            .map_err(|e| PgError::Connect {
                target: spec.target(),
                detail: e.to_string(),
            })?;
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        let writer = tokio::spawn(write(inner.clone(), rx));
        let tasks = vec![
            tokio::spawn(monitor(inner.clone())),
            tokio::spawn(listen(inner.clone(), spec.clone())),
        ];
        tracing::info!(holder = %inner.holder, target_db = %inner.target, "queue: postgres engine open");
        Ok(PgQueue {
            inner,
            pool,
            commands: tx,
            writer: Mutex::new(Some(writer)),
            tasks: Mutex::new(tasks),
        })
    }

    fn replayed(&self, sinks: &[String]) {
        for sink in sinks {
            self.inner.notify(sink).notify_one();
        }
    }

    async fn send(&self, command: Command) -> Result<(), QueueError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| QueueError::Closed)
    }

    async fn append(&self, event: Event, routed: bool) -> Result<Committed, QueueError> {
        self.inner.room()?;
        let (reply, answer) = oneshot::channel();
        self.send(Command::Append {
            event: Box::new(event),
            routed,
            reply,
        })
        .await?;
        answer.await.map_err(|_| QueueError::Closed)?
    }

    /// The keys as three arrays, for `unnest`.
    fn columns(keys: &[DeliveryKey]) -> (Vec<String>, Vec<i64>, Vec<String>) {
        let sinks = keys.iter().map(|k| k.sink.to_string()).collect();
        let seqs = keys
            .iter()
            .map(|k| i64::try_from(k.seq).unwrap_or(i64::MAX))
            .collect();
        let routes = keys.iter().map(|k| k.route.to_string()).collect();
        (sinks, seqs, routes)
    }
}

admin_impl!(PgQueue);

#[async_trait]
impl Ingest for PgQueue {
    async fn commit(&self, event: Event) -> Result<Committed, IngestError> {
        Ok(self.append(event, true).await?)
    }

    async fn commit_for_enrichment(&self, event: Event) -> Result<Committed, IngestError> {
        Ok(self.append(event, false).await?)
    }

    async fn reject(&self, input: RejectedInput) -> Result<(), IngestError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Reject { input, reply }).await?;
        Ok(answer.await.map_err(|_| QueueError::Closed)??)
    }

    async fn first_channel(
        &self,
        change: &str,
        channel: &str,
        window: Duration,
    ) -> Result<Option<String>, IngestError> {
        use sha2::Digest;
        // Hashed: short keys, and no user id or etag in the state table.
        let key = format!(
            "overlap/{}",
            herald_core::encoding::hex(&sha2::Sha256::digest(change.as_bytes()))
        );
        let client = client(&self.pool).await?;
        let e = |e: tokio_postgres::Error| queue_error("recording a change's channel", &e);
        let row = client
            .query_one(
                sql::FIRST_CHANNEL,
                &[&key, &channel.as_bytes(), &millis(window)],
            )
            .await
            .map_err(e)?;
        let recorded: bool = row.try_get(0).map_err(e)?;
        if recorded {
            return Ok(None);
        }
        let first: Option<Vec<u8>> = match row.try_get(1).map_err(e)? {
            Some(first) => Some(first),
            // Another gateway's, committed after the statement began: visible now.
            None => client
                .query_opt(sql::GET_STATE, &[&key])
                .await
                .map_err(e)?
                .map(|row| row.try_get(0))
                .transpose()
                .map_err(e)?,
        };
        Ok(first
            .map(|first| String::from_utf8_lossy(&first).into_owned())
            .filter(|first| first != channel))
    }

    fn ready(&self) -> Result<(), String> {
        if self.inner.closed.load(Ordering::Relaxed) || self.commands.is_closed() {
            return Err("queue: shut down".into());
        }
        if let Some(why) = self
            .inner
            .down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Err(format!(
                "queue: PostgreSQL at {} is unavailable: {why}",
                self.inner.target
            ));
        }
        if let Err(QueueError::Full(limit)) = self.inner.room() {
            return Err(format!("queue full: {limit}"));
        }
        self.inner.health.check()
    }
}

#[async_trait]
impl Queue for PgQueue {
    fn holder(&self) -> &str {
        &self.inner.holder
    }

    fn lease(&self) -> Duration {
        self.inner.lease
    }

    fn renews_claims(&self) -> bool {
        true
    }

    async fn commit_unrouted(&self, event: Event) -> Result<Committed, QueueError> {
        self.append(event, false).await
    }

    async fn claim_unrouted(
        &self,
        claim: Claim<'_>,
        limit: usize,
    ) -> Result<Vec<UnroutedItem>, QueueError> {
        let result = claim_unrouted(&self.inner, claim, limit).await;
        self.inner.observe(&result);
        result
    }

    async fn renew_unrouted(&self, claim: Claim<'_>, seqs: &[u64]) -> Result<Vec<u64>, QueueError> {
        let client = client(&self.pool).await?;
        let e = |e: tokio_postgres::Error| queue_error("renewing claims on unrouted events", &e);
        let keys = seq_column(seqs);
        let rows = client
            .query(
                sql::RENEW_UNROUTED,
                &[&claim.holder, &millis(claim.ttl), &keys],
            )
            .await
            .map_err(e)?;
        let mut held = BTreeSet::new();
        for row in &rows {
            let seq: i64 = row.try_get(0).map_err(e)?;
            held.insert(seq);
        }
        Ok(seqs
            .iter()
            .copied()
            .filter(|seq| !held.contains(&i64::try_from(*seq).unwrap_or(i64::MAX)))
            .collect())
    }

    async fn release_unrouted(&self, holder: &str, seqs: &[u64]) -> Result<(), QueueError> {
        let client = client(&self.pool).await?;
        client
            .execute(sql::RELEASE_UNROUTED, &[&holder, &seq_column(seqs)])
            .await
            .map_err(|e| queue_error("releasing claims on unrouted events", &e))?;
        // Whoever enriches now (another gateway, after a lost lead) may take them at once.
        let _ = client.execute(sql::NOTIFY, &[&vec![sql::UNROUTED]]).await;
        self.inner.unrouted.notify_one();
        Ok(())
    }

    async fn route_later(
        &self,
        holder: &str,
        seq: u64,
        routed: RouteLater,
    ) -> Result<RoutedLater, QueueError> {
        let result = route_later(&self.inner, holder, seq, routed).await;
        self.inner.observe(&result);
        result
    }

    async fn scan_pending(
        &self,
        sink: &str,
        claim: Claim<'_>,
        after: Option<DeliveryKey>,
        limit: usize,
    ) -> Result<Vec<PendingItem>, QueueError> {
        let result = scan(&self.inner, sink, claim, after, limit).await;
        self.inner.observe(&result);
        result
    }

    async fn renew(
        &self,
        claim: Claim<'_>,
        keys: &[DeliveryKey],
    ) -> Result<Vec<DeliveryKey>, QueueError> {
        let client = client(&self.pool).await?;
        let (sinks, seqs, routes) = Self::columns(keys);
        let e = |e: tokio_postgres::Error| queue_error("renewing claims", &e);
        let rows = client
            .query(
                sql::RENEW,
                &[&claim.holder, &millis(claim.ttl), &sinks, &seqs, &routes],
            )
            .await
            .map_err(e)?;
        let mut held = BTreeSet::new();
        for row in &rows {
            let sink: String = row.try_get(0).map_err(e)?;
            let seq: i64 = row.try_get(1).map_err(e)?;
            let route: String = row.try_get(2).map_err(e)?;
            held.insert((sink, seq, route));
        }
        Ok(keys
            .iter()
            .filter(|k| {
                !held.contains(&(
                    k.sink.to_string(),
                    i64::try_from(k.seq).unwrap_or(i64::MAX),
                    k.route.to_string(),
                ))
            })
            .cloned()
            .collect())
    }

    async fn release(&self, holder: &str, keys: &[DeliveryKey]) -> Result<(), QueueError> {
        let client = client(&self.pool).await?;
        let (sinks, seqs, routes) = Self::columns(keys);
        client
            .execute(sql::RELEASE, &[&holder, &sinks, &seqs, &routes])
            .await
            .map_err(|e| queue_error("releasing claims", &e))?;
        Ok(())
    }

    async fn record(&self, key: DeliveryKey, outcome: Outcome) -> Result<(), QueueError> {
        let (reply, answer) = oneshot::channel();
        let then = OnRecorded::new(move |result| {
            let _ = reply.send(result);
        });
        self.record_then(key, outcome, then).await?;
        answer.await.map_err(|_| QueueError::Closed)?
    }

    fn record_then(&self, key: DeliveryKey, outcome: Outcome, then: OnRecorded) -> Recording<'_> {
        match self
            .commands
            .try_send(Command::Outcome { key, outcome, then })
        {
            Ok(()) => Recording::done(Ok(())),
            // Dropped with the command: `then` is called with `Closed`.
            Err(TrySendError::Closed(_)) => Recording::done(Err(QueueError::Closed)),
            Err(TrySendError::Full(command)) => Recording::waiting(self.send(command)),
        }
    }

    fn notify_for(&self, sink: &str) -> Arc<Notify> {
        self.inner.notify(sink)
    }

    fn notify_unrouted(&self) -> Arc<Notify> {
        self.inner.unrouted.clone()
    }

    fn wake_hint(&self, sink: &str) -> Option<u64> {
        let seq = self
            .inner
            .hints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(sink)?;
        u64::try_from(seq).ok()
    }

    async fn bury(&self, sink: &str, reason: &str) -> Result<usize, QueueError> {
        let client = client(&self.pool).await?;
        let n = client
            .execute(sql::BURY, &[&sink, &reason])
            .await
            .map_err(|e| queue_error("moving a removed sink's backlog to the dead letters", &e))?;
        let _ = self.inner.refresh_backlog().await;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    async fn register(&self, sinks: &[String], fingerprint: &str) -> Result<(), QueueError> {
        *self.inner.sinks.write().unwrap_or_else(|p| p.into_inner()) = sinks.to_vec();
        let client = client(&self.pool).await?;
        let sinks = sinks.to_vec();
        client
            .execute(
                sql::REGISTER,
                &[
                    &self.inner.holder,
                    &fingerprint,
                    &sinks,
                    &self.inner.version,
                ],
            )
            .await
            .map_err(|e| queue_error("registering the gateway's sinks", &e))?;
        if let Ok(notes) = self.inner.count_foreign(&client).await {
            *self.inner.foreign.lock().unwrap_or_else(|p| p.into_inner()) = notes;
        }
        Ok(())
    }

    async fn others_with(&self, sink: &str) -> Result<Vec<String>, QueueError> {
        let client = client(&self.pool).await?;
        let rows = client
            .query(
                sql::OTHERS_WITH,
                &[&sink, &self.inner.holder, &millis(self.inner.lease)],
            )
            .await
            .map_err(|e| queue_error("asking which gateways have a sink", &e))?;
        rows.iter()
            .map(|row| row.try_get(0))
            .collect::<Result<Vec<String>, _>>()
            .map_err(|e| queue_error("asking which gateways have a sink", &e))
    }

    fn notes(&self) -> Vec<String> {
        self.inner
            .foreign
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn tap(&self) -> broadcast::Receiver<Tapped> {
        self.inner.tap.subscribe()
    }

    fn health(&self) -> &Health {
        &self.inner.health
    }

    fn room(&self) -> Result<(), QueueError> {
        self.inner.room()
    }

    async fn sweep(&self) -> Result<usize, QueueError> {
        self.inner.sweep().await
    }

    async fn committed_so_far(&self) -> Result<(), QueueError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Barrier { reply }).await?;
        answer.await.map_err(|_| QueueError::Closed)
    }

    async fn try_lead(&self, name: &str, claim: Claim<'_>) -> Result<Lead, QueueError> {
        self.inner.try_lead(name, claim).await
    }

    async fn resign(&self, name: &str, holder: &str) -> Result<(), QueueError> {
        let client = client(&self.pool).await?;
        client
            .execute(sql::RESIGN, &[&name, &holder])
            .await
            .map_err(|e| queue_error("resigning a leadership", &e))?;
        Ok(())
    }

    async fn close(&self) {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Stop { reply }).await.is_ok() {
            let _ = answer.await;
        }
        self.inner.closed.store(true, Ordering::Relaxed);
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(writer) = writer {
            let _ = writer.await;
        }
        for task in self
            .tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default()
        {
            task.abort();
        }
        // Give this gateway's claims and leaderships up, so the others need not wait for
        // the lease (a gateway killed instead leaves them to run out).
        if let Ok(client) = self.pool.get().await {
            let holder = &self.inner.holder;
            if let Err(e) = client.execute(sql::RELEASE_ALL, &[holder]).await {
                tracing::warn!(error = %crate::error::detail(&e), "queue: cannot release claims at shutdown");
            }
            let _ = client.execute(sql::RELEASE_ALL_UNROUTED, &[holder]).await;
            let _ = client.execute(sql::RESIGN_ALL, &[holder]).await;
        }
        self.pool.close();
    }
}

/// Seqs as the database's `int8`.
fn seq_column(seqs: &[u64]) -> Vec<i64> {
    seqs.iter()
        .map(|s| i64::try_from(*s).unwrap_or(i64::MAX))
        .collect()
}

/// Claims unrouted events nobody holds (docs/architecture.md §10.1); one whose event cannot
/// be read is released again and logged.
async fn claim_unrouted(
    inner: &Inner,
    claim: Claim<'_>,
    limit: usize,
) -> Result<Vec<UnroutedItem>, QueueError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let client = client(&inner.pool).await?;
    let e = |e: tokio_postgres::Error| queue_error("claiming unrouted events", &e);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(
            sql::CLAIM_UNROUTED,
            &[&claim.holder, &limit, &millis(claim.ttl)],
        )
        .await
        .map_err(e)?;
    let mut items = Vec::with_capacity(rows.len());
    let mut damaged = Vec::new();
    for row in &rows {
        let seq: i64 = row.try_get(0).map_err(e)?;
        let committed_at: Millis = row.try_get(1).map_err(e)?;
        let json: String = row.try_get(2).map_err(e)?;
        let lease_until: Millis = row.try_get(3).map_err(e)?;
        match Event::from_json(&json) {
            Ok(event) => items.push(UnroutedItem {
                seq: u64::try_from(seq).unwrap_or(0),
                committed_at,
                event: Arc::new(event),
                lease_until,
            }),
            Err(err) => {
                tracing::error!(seq, error = %admin::json_where(&err), "an unrouted event cannot be read; it is skipped");
                damaged.push(seq);
            }
        }
    }
    if !damaged.is_empty() {
        client
            .execute(sql::RELEASE_UNROUTED, &[&claim.holder, &damaged])
            .await
            .map_err(e)?;
    }
    Ok(items)
}

/// Routes an unrouted event exactly once, in one transaction (docs/architecture.md §10.1):
/// the locked `unrouted` row says whether it is still unrouted and who holds it.
async fn route_later(
    inner: &Inner,
    holder: &str,
    seq: u64,
    routed: RouteLater,
) -> Result<RoutedLater, QueueError> {
    let e = |e: tokio_postgres::Error| queue_error("routing an unrouted event", &e);
    let key = i64::try_from(seq).unwrap_or(i64::MAX);
    let mut pairs: Vec<(String, String)> = Vec::new();
    for pair in routed.deliveries {
        if !pairs.contains(&pair) {
            pairs.push(pair);
        }
    }
    let routes: Vec<String> = pairs.iter().map(|p| text(&p.0).into_owned()).collect();
    let sinks: Vec<String> = pairs.iter().map(|p| text(&p.1).into_owned()).collect();
    let json = routed.event.as_ref().map(|ev| ev.to_json());
    let size = json
        .as_ref()
        .map(|j| i32::try_from(j.len()).unwrap_or(i32::MAX));
    let mut client = client(&inner.pool).await?;
    let tx = client.transaction().await.map_err(e)?;
    let Some(row) = tx.query_opt(sql::ROUTE_LOCK, &[&key]).await.map_err(e)? else {
        return Ok(RoutedLater::AlreadyRouted);
    };
    let other: Option<String> = row.try_get(0).map_err(e)?;
    let running: bool = row.try_get(1).map_err(e)?;
    if let Some(other) = other
        && running
        && other != holder
    {
        return Ok(RoutedLater::NotHeld { holder: other });
    }
    tx.execute(sql::ROUTE_LATER, &[&key, &json, &size, &routes, &sinks])
        .await
        .map_err(e)?;
    if !sinks.is_empty() {
        let touched: Vec<&str> = sinks
            .iter()
            .map(String::as_str)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        tx.execute(sql::NOTIFY, &[&touched]).await.map_err(e)?;
    }
    tx.commit().await.map_err(e)?;
    for sink in &sinks {
        inner.notify(sink).notify_one();
    }
    if inner.tap.receiver_count() > 0 {
        let event = match routed.event {
            Some(event) => Some(event),
            None => {
                let row = client.query_opt(sql::EVENT, &[&key]).await.ok().flatten();
                row.and_then(|r| r.try_get::<_, String>(0).ok())
                    .and_then(|j| serde_json::from_str(&j).ok())
            }
        };
        if let Some(event) = event {
            let _ = inner.tap.send(Tapped {
                event: Arc::new(event),
                deliveries: pairs.as_slice().into(),
            });
        }
    }
    Ok(RoutedLater::Routed {
        deliveries: pairs.len(),
    })
}

/// A page of `sink`'s deliveries, the due ones claimed (docs/architecture.md §10.1).
async fn scan(
    inner: &Inner,
    sink: &str,
    claim: Claim<'_>,
    after: Option<DeliveryKey>,
    limit: usize,
) -> Result<Vec<PendingItem>, QueueError> {
    let client = client(&inner.pool).await?;
    let (after_seq, after_route) = match &after {
        Some(k) => (
            i64::try_from(k.seq).unwrap_or(i64::MAX),
            k.route.to_string(),
        ),
        None => (-1, String::new()),
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let context = "reading pending deliveries";
    let e = |e: tokio_postgres::Error| queue_error(context, &e);
    let rows = client
        .query(
            sql::SCAN,
            &[
                &sink,
                &after_seq,
                &after_route,
                &claim.holder,
                &limit,
                &millis(claim.ttl),
            ],
        )
        .await
        .map_err(e)?;
    let mut items = Vec::with_capacity(rows.len());
    let sink_name: Arc<str> = Arc::from(sink);
    for row in &rows {
        let seq: i64 = row.try_get(0).map_err(e)?;
        let route: String = row.try_get(1).map_err(e)?;
        let attempts: i32 = row.try_get(2).map_err(e)?;
        let errors: String = row.try_get(3).map_err(e)?;
        let next_at: i64 = row.try_get(4).map_err(e)?;
        let committed_at: Millis = row.try_get(5).map_err(e)?;
        let json: String = row.try_get(6).map_err(e)?;
        let claimed: bool = row.try_get(7).map_err(e)?;
        let event = match Event::from_json(&json) {
            Ok(event) => event,
            Err(err) => {
                let first = inner
                    .damaged
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(seq);
                if first {
                    tracing::error!(sink, route = %route, seq, error = %admin::json_where(&err), "a pending delivery's event cannot be read; it is skipped");
                }
                continue;
            }
        };
        items.push(PendingItem {
            key: DeliveryKey {
                sink: Arc::clone(&sink_name),
                seq: u64::try_from(seq).unwrap_or(0),
                route: route.into(),
            },
            state: PendingState {
                attempts: u32::try_from(attempts).unwrap_or(0),
                // Claimed means due by the database's clock: due now, whatever this
                // machine's clock says. The others are due later.
                next_at: if claimed { 0 } else { next_at },
                errors: serde_json::from_str(&errors).unwrap_or_default(),
            },
            committed_at,
            event: Arc::new(event),
            json: Arc::from(json),
            claimed,
        });
    }
    Ok(items)
}

/// A command's data, ready for its statement. Short-lived (one batch), so the variants'
/// sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Work {
    Append {
        source: String,
        id: String,
        size: i32,
        json: String,
        routed: bool,
        routes: Vec<String>,
        sinks: Vec<String>,
        /// For the tap, when one is attached.
        event: Option<Event>,
    },
    Reject {
        reason: String,
        source: String,
        received: f64,
        meta: String,
        body: String,
    },
    Outcome {
        key: DeliveryKey,
        seq: i64,
        outcome: Outcome,
        attempt: String,
    },
}

/// Whom to answer once the batch is committed (apart from [`Work`], which the statements
/// borrow across awaits and so must be `Sync`).
enum Reply {
    Append(oneshot::Sender<Result<Committed, QueueError>>),
    Unit(oneshot::Sender<Result<(), QueueError>>),
    Then(OnRecorded),
}

/// What one command of a batch did.
enum Done {
    /// An event: its seq when stored, `None` for a duplicate.
    Appended(Option<i64>),
    Unit,
}

/// The writer: group commit (docs/architecture.md §10.1).
async fn write(inner: Arc<Inner>, mut commands: mpsc::Receiver<Command>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut stop = None;
    while stop.is_none() {
        let Some(first) = commands.recv().await else {
            break;
        };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match commands.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        stop = apply(&inner, &mut batch).await;
    }
    // Commit what was sent before the stop, then confirm.
    commands.close();
    while let Ok(c) = commands.try_recv() {
        batch.push(c);
        if batch.len() >= MAX_BATCH {
            apply(&inner, &mut batch).await;
        }
    }
    apply(&inner, &mut batch).await;
    if let Some(reply) = stop {
        let _ = reply.send(());
    }
}

/// Applies `commands` in one transaction and answers them; returns a stop request. The
/// barriers among them are answered last, once the rest is committed (or refused).
async fn apply(inner: &Inner, commands: &mut Vec<Command>) -> Option<oneshot::Sender<()>> {
    let mut barriers = Vec::new();
    let stop = apply_commands(inner, commands, &mut barriers).await;
    for barrier in barriers {
        let _ = barrier.send(());
    }
    stop
}

async fn apply_commands(
    inner: &Inner,
    commands: &mut Vec<Command>,
    barriers: &mut Vec<oneshot::Sender<()>>,
) -> Option<oneshot::Sender<()>> {
    if commands.is_empty() {
        return None;
    }
    let routes = inner.routes.load();
    let tapping = inner.tap.receiver_count() > 0;
    let mut stop = None;
    let mut work = Vec::with_capacity(commands.len());
    let mut replies = Vec::with_capacity(commands.len());
    for command in commands.drain(..) {
        match command {
            Command::Append {
                event,
                routed,
                reply,
            } => {
                let mut pairs: Vec<(String, String)> = Vec::new();
                if routed {
                    for t in routes.targets(&event) {
                        let pair = (t.route.to_owned(), t.sink.to_owned());
                        if !pairs.contains(&pair) {
                            pairs.push(pair);
                        }
                    }
                }
                let json = event.to_json();
                work.push(Work::Append {
                    source: text(&event.source).into_owned(),
                    id: text(&event.id).into_owned(),
                    size: i32::try_from(json.len()).unwrap_or(i32::MAX),
                    json,
                    routed,
                    routes: pairs.iter().map(|p| p.0.clone()).collect(),
                    sinks: pairs.into_iter().map(|p| p.1).collect(),
                    event: (tapping && routed).then_some(*event),
                });
                replies.push(Reply::Append(reply));
            }
            Command::Reject { input, reply } => {
                work.push(Work::Reject {
                    reason: text(&input.reason).into_owned(),
                    source: text(&input.source).into_owned(),
                    received: input.received.timestamp_millis() as f64,
                    meta: serde_json::to_string(&input.meta).unwrap_or_else(|_| "{}".into()),
                    body: text(&input.body).into_owned(),
                });
                replies.push(Reply::Unit(reply));
            }
            Command::Outcome { key, outcome, then } => {
                let attempt = match &outcome {
                    Outcome::Retry { attempt, .. } => Some(attempt),
                    Outcome::Dead { attempt, .. } => attempt.as_ref(),
                    Outcome::Delivered => None,
                };
                let attempt = serde_json::to_string(&attempt.into_iter().collect::<Vec<_>>())
                    .unwrap_or_else(|_| "[]".into());
                work.push(Work::Outcome {
                    seq: i64::try_from(key.seq).unwrap_or(i64::MAX),
                    key,
                    outcome,
                    attempt,
                });
                replies.push(Reply::Then(then));
            }
            Command::Stop { reply } => stop = Some(reply),
            Command::Barrier { reply } => barriers.push(reply),
        }
    }
    if work.is_empty() {
        return stop;
    }
    let started = std::time::Instant::now();
    // A deadlock with another gateway's batch (both updating the same events) aborts one
    // of them; it is run again.
    let mut result = run_batch(inner, &work).await;
    for _ in 0..3 {
        match &result {
            Err(Failed::Retry(_)) => result = run_batch(inner, &work).await,
            _ => break,
        }
    }
    metrics::histogram!("herald_journal_commit_seconds").record(started.elapsed().as_secs_f64());
    metrics::histogram!("herald_journal_batch_size").record(work.len() as f64);
    let result = result.map_err(|f| match f {
        Failed::Retry(e) | Failed::Error(e) => e,
    });
    inner.observe(&result);
    match result {
        Ok(done) => {
            let mut touched = BTreeSet::new();
            for ((w, d), reply) in work.into_iter().zip(done).zip(replies) {
                if let (
                    Work::Append {
                        sinks,
                        routes,
                        event,
                        size,
                        routed,
                        ..
                    },
                    Done::Appended(Some(seq)),
                ) = (w, &d)
                {
                    for sink in &sinks {
                        inner.hint(sink, *seq);
                    }
                    if !routed {
                        inner.unrouted.notify_one();
                    }
                    inner.undelivered_events.fetch_add(1, Ordering::Relaxed);
                    inner
                        .undelivered_bytes
                        .fetch_add(u64::try_from(size).unwrap_or(0), Ordering::Relaxed);
                    if let Some(event) = event {
                        let deliveries = routes.into_iter().zip(sinks.clone()).collect();
                        let _ = inner.tap.send(Tapped {
                            event: Arc::new(event),
                            deliveries,
                        });
                    }
                    touched.extend(sinks);
                }
                match (reply, d) {
                    (Reply::Append(tx), Done::Appended(seq)) => {
                        let _ = tx.send(Ok(if seq.is_some() {
                            Committed::New
                        } else {
                            Committed::Duplicate
                        }));
                    }
                    (Reply::Append(tx), Done::Unit) => {
                        let _ = tx.send(Ok(Committed::New));
                    }
                    (Reply::Unit(tx), _) => {
                        let _ = tx.send(Ok(()));
                    }
                    (Reply::Then(then), _) => then.call(Ok(())),
                }
            }
            // This gateway's workers (and enrichment) at once; the others by the NOTIFY.
            for sink in &touched {
                inner.notify(sink).notify_one();
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "queue: commit failed; {} commands refused", work.len());
            for reply in replies {
                match reply {
                    Reply::Append(tx) => {
                        let _ = tx.send(Err(e.clone()));
                    }
                    Reply::Unit(tx) => {
                        let _ = tx.send(Err(e.clone()));
                    }
                    Reply::Then(then) => then.call(Err(e.clone())),
                }
            }
        }
    }
    stop
}

enum Failed {
    /// A deadlock or serialization failure: the batch may be run again.
    Retry(QueueError),
    Error(QueueError),
}

/// Runs the batch in one transaction and commits: the events in one statement
/// (`APPEND_MANY`), the delivered outcomes in another (`DELIVERED_MANY`), the rarer
/// commands one statement each, all pipelined on the batch's connection.
async fn run_batch(inner: &Inner, work: &[Work]) -> Result<Vec<Done>, Failed> {
    let context = "committing a batch";
    let fail = |e: tokio_postgres::Error| {
        let retry = matches!(e.code().map(|c| c.code()), Some("40P01" | "40001"));
        let e = queue_error(context, &e);
        if retry {
            Failed::Retry(e)
        } else {
            Failed::Error(e)
        }
    };
    let mut client = client(&inner.pool).await.map_err(Failed::Error)?;
    let tx = client.transaction().await.map_err(fail)?;
    let stmts = Statements {
        append: tx.prepare_cached(sql::APPEND_MANY).await.map_err(fail)?,
        reject: tx.prepare_cached(sql::REJECT).await.map_err(fail)?,
        delivered: tx.prepare_cached(sql::DELIVERED_MANY).await.map_err(fail)?,
        retry: tx.prepare_cached(sql::RETRY).await.map_err(fail)?,
        dead: tx.prepare_cached(sql::DEAD).await.map_err(fail)?,
    };
    let holder = inner.holder.as_str();

    // The events, each key once: a key repeated in the batch is a duplicate of its first.
    let mut first: HashMap<(&str, &str), usize> = HashMap::new();
    let mut events = Columns::default();
    let mut delivered = (Vec::new(), Vec::new(), Vec::new());
    let mut others = Vec::new();
    for (i, w) in work.iter().enumerate() {
        match w {
            Work::Append {
                source,
                id,
                size,
                json,
                routed,
                routes,
                sinks,
                ..
            } => {
                if first.insert((source, id), i).is_some() {
                    continue;
                }
                events.push(source, id, *size, json, *routed, routes, sinks);
            }
            Work::Outcome {
                key,
                seq,
                outcome: Outcome::Delivered,
                ..
            } => {
                delivered.0.push(&*key.sink);
                delivered.1.push(*seq);
                delivered.2.push(&*key.route);
            }
            other => others.push(other),
        }
    }
    let append = async {
        if events.sources.is_empty() {
            return Ok(Vec::new());
        }
        tx.query(
            &stmts.append,
            &[
                &events.sources,
                &events.ids,
                &events.sizes,
                &events.jsons,
                &events.routed,
                &events.counts,
                &events.d_sources,
                &events.d_ids,
                &events.d_routes,
                &events.d_sinks,
            ],
        )
        .await
    };
    let deliver = async {
        if delivered.0.is_empty() {
            return Ok(0);
        }
        tx.execute(
            &stmts.delivered,
            &[&delivered.0, &delivered.1, &delivered.2, &holder],
        )
        .await
    };
    let rest = join_all(others.into_iter().map(|w| run_one(&tx, &stmts, holder, w)));
    let (appended, deliver, rest) = tokio::join!(append, deliver, rest);
    deliver.map_err(fail)?;
    for r in rest {
        r.map_err(fail)?;
    }
    let mut stored: HashMap<(String, String), i64> = HashMap::new();
    for row in appended.map_err(fail)? {
        stored.insert(
            (row.try_get(1).map_err(fail)?, row.try_get(2).map_err(fail)?),
            row.try_get(0).map_err(fail)?,
        );
    }
    let done: Vec<Done> = work
        .iter()
        .enumerate()
        .map(|(i, w)| match w {
            Work::Append { source, id, .. } => Done::Appended(
                (first.get(&(source.as_str(), id.as_str())) == Some(&i))
                    .then(|| stored.get(&(source.clone(), id.clone())).copied())
                    .flatten(),
            ),
            _ => Done::Unit,
        })
        .collect();

    // Wake-ups: each sink with the lowest seq committed for it, where its scans may begin.
    let mut lowest: BTreeMap<&str, i64> = BTreeMap::new();
    let mut unrouted = false;
    for (w, d) in work.iter().zip(&done) {
        if let (Work::Append { sinks, routed, .. }, Done::Appended(Some(seq))) = (w, d) {
            unrouted |= !routed;
            for sink in sinks {
                let at = lowest.entry(sink.as_str()).or_insert(*seq);
                *at = (*at).min(*seq);
            }
        }
    }
    let mut payloads: Vec<String> = lowest
        .iter()
        .map(|(sink, seq)| format!("{sink} {seq}"))
        .collect();
    if unrouted {
        payloads.push(sql::UNROUTED.to_owned());
    }
    if !payloads.is_empty() {
        tx.execute(sql::NOTIFY, &[&payloads]).await.map_err(fail)?;
    }
    tx.commit().await.map_err(fail)?;
    Ok(done)
}

/// The columns of `APPEND_MANY`.
#[derive(Default)]
struct Columns<'a> {
    sources: Vec<&'a str>,
    ids: Vec<&'a str>,
    sizes: Vec<i32>,
    jsons: Vec<&'a str>,
    routed: Vec<bool>,
    counts: Vec<i32>,
    d_sources: Vec<&'a str>,
    d_ids: Vec<&'a str>,
    d_routes: Vec<&'a str>,
    d_sinks: Vec<&'a str>,
}

impl<'a> Columns<'a> {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        source: &'a str,
        id: &'a str,
        size: i32,
        json: &'a str,
        routed: bool,
        routes: &'a [String],
        sinks: &'a [String],
    ) {
        self.sources.push(source);
        self.ids.push(id);
        self.sizes.push(size);
        self.jsons.push(json);
        self.routed.push(routed);
        self.counts
            .push(i32::try_from(sinks.len()).unwrap_or(i32::MAX));
        for (route, sink) in routes.iter().zip(sinks) {
            self.d_sources.push(source);
            self.d_ids.push(id);
            self.d_routes.push(route);
            self.d_sinks.push(sink);
        }
    }
}

/// Every second: the backlog counters (and so whether PostgreSQL answers); every lease/3 the
/// gateway's `last_seen`; every minute the sweep, if this gateway leads it.
async fn monitor(inner: Arc<Inner>) {
    let mut ticks: u64 = 0;
    let seen_every = (inner.lease.as_secs() / 3).max(1);
    let sweep_every = SWEEP_EVERY.as_secs();
    loop {
        tokio::time::sleep(MONITOR_EVERY).await;
        ticks += 1;
        let result = inner.refresh_backlog().await;
        inner.observe(&result);
        if result.is_err() {
            continue;
        }
        if ticks.is_multiple_of(seen_every)
            && let Ok(client) = client(&inner.pool).await
        {
            let _ = client.execute(sql::SEEN, &[&inner.holder]).await;
            match inner.count_foreign(&client).await {
                Ok(notes) => *inner.foreign.lock().unwrap_or_else(|p| p.into_inner()) = notes,
                Err(e) => {
                    tracing::debug!(error = %e, "queue: cannot count other sinks' deliveries")
                }
            }
        }
        if ticks.is_multiple_of(60)
            && let Ok(client) = client(&inner.pool).await
            && let Err(e) = client.execute(sql::SWEEP_MARKERS, &[]).await
        {
            tracing::debug!(error = %e, "queue: cannot sweep the overlap markers");
        }
        if ticks.is_multiple_of(sweep_every) {
            match inner.sweep().await {
                Ok(n) if n > 0 => tracing::debug!(removed = n, "queue: swept delivered events"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "queue: sweep failed"),
            }
        }
    }
}

/// The listening connection: `LISTEN herald_deliveries`, each notification waking the
/// sink it names. Reconnects after a second when the connection ends, then wakes every
/// sink (notifications sent meanwhile were missed).
async fn listen(inner: Arc<Inner>, spec: PgSpec) {
    let mut connected_before = false;
    loop {
        match listen_once(&inner, &spec, &mut connected_before).await {
            Ok(()) => {}
            Err(e) => tracing::debug!(error = %e, "queue: the listening connection ended"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn listen_once(
    inner: &Arc<Inner>,
    spec: &PgSpec,
    connected_before: &mut bool,
) -> Result<(), String> {
    let tls = crate::tls::MakeRustlsConnect::new(spec.ssl, spec.ca.as_deref())
        .map_err(|e| e.to_string())?;
    let (client, mut connection) = spec
        .pg
        .connect(tls)
        .await
        .map_err(|e| crate::error::detail(&e))?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        use futures_util::StreamExt;
        while let Some(message) = messages.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_owned()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(crate::error::detail(&e)),
            }
        }
        Ok(())
    });
    client
        .batch_execute(&format!("LISTEN {}", sql::CHANNEL))
        .await
        .map_err(|e| crate::error::detail(&e))?;
    if std::mem::replace(connected_before, true) {
        inner.wake_all();
    }
    while let Some(sink) = rx.recv().await {
        if sink == sql::UNROUTED {
            inner.unrouted.notify_one();
            continue;
        }
        // `sink seq` (a commit's wake-up with where to look) or `sink` (replay, import).
        let sink = match sink.split_once(' ') {
            Some((name, seq)) => {
                if let Ok(seq) = seq.parse::<i64>() {
                    inner.hint(name, seq);
                }
                name.to_owned()
            }
            None => sink,
        };
        let known = inner
            .notifies
            .read()
            .ok()
            .and_then(|m| m.get(&sink).cloned());
        if let Some(n) = known {
            n.notify_one();
        }
    }
    drop(client);
    driver.await.map_err(|e| e.to_string())?
}

struct Statements {
    append: tokio_postgres::Statement,
    reject: tokio_postgres::Statement,
    delivered: tokio_postgres::Statement,
    retry: tokio_postgres::Statement,
    dead: tokio_postgres::Statement,
}

/// One of a batch's rarer commands (a rejected input, a retry, a dead letter) as its own
/// statement; events and delivered outcomes go in `run_batch`'s two batch statements.
async fn run_one(
    tx: &deadpool_postgres::Transaction<'_>,
    stmts: &Statements,
    holder: &str,
    w: &Work,
) -> Result<(), tokio_postgres::Error> {
    match w {
        Work::Append { .. } => Ok(()),
        Work::Reject {
            reason,
            source,
            received,
            meta,
            body,
            ..
        } => {
            tx.execute(&stmts.reject, &[reason, source, received, meta, body])
                .await?;
            Ok(())
        }
        Work::Outcome {
            key,
            seq,
            outcome,
            attempt,
            ..
        } => {
            match outcome {
                Outcome::Delivered => {
                    tx.execute(
                        &stmts.delivered,
                        &[&vec![&*key.sink], &vec![*seq], &vec![&*key.route], &holder],
                    )
                    .await?
                }
                Outcome::Retry { next_at, .. } => {
                    let next_at = *next_at as f64;
                    tx.execute(
                        &stmts.retry,
                        &[&&*key.sink, seq, &&*key.route, &holder, &next_at, attempt],
                    )
                    .await?
                }
                Outcome::Dead { reason, .. } => {
                    tx.execute(
                        &stmts.dead,
                        &[&&*key.sink, seq, &&*key.route, &holder, reason, attempt],
                    )
                    .await?
                }
            };
            Ok(())
        }
    }
}
