//! The storage boundary: everything the gateway asks of its queue, as one interface with
//! engines behind it (docs/architecture.md §10): `local`, the embedded journal
//! ([`crate::journal::Journal`]), which [`open`] and [`open_admin`] open, and `postgres`
//! (crate herald-queue-postgres, §10.2), which the binary opens (`src/queue.rs`).
//!
//! The interface is three object-safe traits, one inside the other:
//!
//! * [`Ingest`] — what sources may do: commit an event, keep a rejected input, say whether
//!   they may take events (`/readyz`);
//! * [`QueueAdmin`] — what works on a stopped gateway's queue too (`herald dlq`, `herald
//!   google status`): dead letters, the state table, stats. [`open_admin`] opens one;
//! * [`Queue`] — a running gateway's queue, both of the above and the rest: unrouted events
//!   routed later under a lease, due deliveries claimed under a lease, outcomes, wake-ups,
//!   the tap feed, retention, burying a removed sink's backlog, the leader lease, health
//!   and close. [`open`] opens one.
//!
//! A caller holds `Arc<dyn Queue>` (or the subset it needs, by trait upcasting) and never
//! names an engine.
//!
//! **Leases.** Work that several gateways could do is *claimed* under a lease: a
//! [`Claim`] says who claims (`holder`, a gateway's [`Queue::holder`]) and for how long
//! (`ttl`). Until the lease runs out nobody else gets the same work; the holder renews it
//! while the work runs, and gives it up by finishing it (an outcome, a `route_later`) or by
//! releasing it. A holder that dies stops renewing, and its claims return to the others when
//! their leases run out. Three kinds of work are leased: an unrouted event (routed later,
//! exactly once), a due delivery, and the leadership of a named singleton task (the Google
//! lifecycle). The local engine is one process: it leases unrouted events and leaderships in
//! memory (so a crashed task's claim still returns), and a delivery's claim is the sink
//! worker's own in-flight set, so `renew`/`release` of deliveries have nothing to do.
//!
//! **Hot paths kept as they were.** `commit` is [`Ingest::commit`], boxed by `async_trait`
//! exactly as before the boundary existed. [`Queue::scan_pending`] is boxed once per page
//! (256 deliveries), not per delivery, and its [`Claim`] borrows the holder's name. The one
//! per-delivery call, [`Queue::record_then`], is a plain method returning [`Recording`],
//! which is ready at once when the engine could take the outcome without waiting (the local
//! engine's `try_send` to its writer) and boxes a future only when the engine must wait
//! (the writer's channel is full): no allocation and no extra await per delivery. A batch's
//! outcomes go together through [`Queue::record_all_then`]: one command and one completion
//! per batch on the local engine.

pub mod forget;
mod recording;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, broadcast};

pub use crate::ingest::{Committed, Ingest, IngestError, RejectedInput};
// The boundary's types. They were the journal's first and keep their home there; every
// engine speaks them (`QueueError`'s kinds are what callers act on, whatever the engine).
pub use crate::journal::{
    Attempt, DeadFilter, DeadKind, DeadLetter, DeliveryKey, JournalError as QueueError, Limit,
    Millis, OnRecorded, OnRecordedAll, Outcome, PendingItem, PendingState, ReplayReport, Stats,
    Tapped, now_millis, to_time,
};
pub use forget::ForgetReport;

/// The results of outcomes handed over one by one by the default
/// [`Queue::record_all_then`]: its `then` is called when the last completion lets go of it,
/// with `Closed` for any never handed over.
struct Gathered {
    results: std::sync::Mutex<Vec<Result<(), QueueError>>>,
    then: std::sync::Mutex<Option<OnRecordedAll>>,
}

impl Drop for Gathered {
    fn drop(&mut self) {
        let then = self
            .then
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(then) = then {
            let results = std::mem::take(self.results.get_mut().unwrap_or_else(|p| p.into_inner()));
            then.call(results);
        }
    }
}
pub use recording::Recording;

use crate::config::{QueueConfig, QueueEngine};
use crate::event::Event;
use crate::health::Health;
use crate::rules::RouteTable;
use arc_swap::ArcSwap;

/// How long a claim lasts unless renewed, when the config does not say.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// Who claims work, and for how long (see the module docs on leases).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim<'a> {
    /// The claiming gateway (its [`Queue::holder`]), or a task of it with a name of its own.
    pub holder: &'a str,
    /// The lease: the claim returns to the others this long after it was made or renewed.
    pub ttl: Duration,
}

impl<'a> Claim<'a> {
    pub fn new(holder: &'a str, ttl: Duration) -> Self {
        Claim { holder, ttl }
    }

    /// The lease's end if it is granted at `now`.
    pub fn until(&self, now: Millis) -> Millis {
        now.saturating_add(i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A gateway registered on a shared queue ([`QueueAdmin::gateways`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct GatewayInfo {
    pub holder: String,
    pub version: String,
    pub started: Millis,
    pub last_seen: Millis,
}

/// An event committed unrouted ([`Queue::commit_unrouted`]) and claimed to be routed.
#[derive(Clone, Debug)]
pub struct UnroutedItem {
    pub seq: u64,
    pub committed_at: Millis,
    pub event: Arc<Event>,
    /// When the claim returns to the others unless renewed.
    pub lease_until: Millis,
}

/// How an unrouted event is routed ([`Queue::route_later`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteLater {
    /// The event to store instead of the one committed (e.g. with its `enriched` object,
    /// docs/architecture.md §11); `None` keeps it as committed.
    pub event: Option<Event>,
    /// `(route, sink)` deliveries to make; empty when it matched nothing.
    pub deliveries: Vec<(String, String)>,
}

/// What [`Queue::route_later`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoutedLater {
    /// Routed now, with this many deliveries (duplicates of a `(route, sink)` counted once).
    Routed { deliveries: usize },
    /// It was routed before (by an earlier call, perhaps of another holder whose lease ran
    /// out): nothing was changed. This is what makes routing happen exactly once.
    AlreadyRouted,
    /// Another holder's lease on it is running: nothing was changed.
    NotHeld { holder: String },
}

/// The answer of [`Queue::try_lead`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lead {
    /// The caller leads until `until` unless it renews (by calling `try_lead` again).
    Leader { until: Millis },
    /// `leader` does, until `until` unless it renews.
    Follower { leader: String, until: Millis },
}

impl Lead {
    pub fn is_leader(&self) -> bool {
        matches!(self, Lead::Leader { .. })
    }
}

/// What works on a queue whether or not a gateway runs on it: the part `herald dlq` and
/// `herald google status` use on a stopped gateway's queue, and the Google lifecycle's state.
#[async_trait]
pub trait QueueAdmin: Send + Sync + 'static {
    /// The engine's name as in `queue.engine`.
    fn engine(&self) -> QueueEngine;

    /// Undelivered events and bytes, pending deliveries per sink, dead letters (metrics,
    /// `herald dlq`, a removed sink's drain).
    async fn stats(&self) -> Result<Stats, QueueError>;

    /// The dead letters and rejected inputs `filter` selects, oldest first. One that cannot
    /// be read is left out (and logged), so the rest can still be listed.
    async fn dead_letters(&self, filter: &DeadFilter) -> Result<Vec<DeadLetter>, QueueError>;

    /// The dead letter `id`; [`QueueError::Corrupt`] when its record cannot be read.
    async fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, QueueError>;

    /// Queues the selected dead deliveries again as fresh deliveries to the same `(route,
    /// sink)`, for the sinks in `known_sinks`, and wakes those sinks' workers.
    async fn replay(
        &self,
        filter: &DeadFilter,
        known_sinks: &[String],
    ) -> Result<ReplayReport, QueueError>;

    /// Removes the selected dead letters; returns how many.
    async fn purge(&self, filter: &DeadFilter) -> Result<usize, QueueError>;

    /// A small durable value of another part (the Google lifecycle's records, which hold
    /// channel tokens), committed before this returns.
    async fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>, QueueError>;

    /// `None` deletes the key.
    async fn put_state(&self, key: &str, value: Option<&[u8]>) -> Result<(), QueueError>;

    /// Every state key starting with `prefix`, with its value, in key order.
    async fn list_state(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, QueueError>;

    /// `herald forget USER_ID`: deletes, in one transaction, the enrichment cache entries,
    /// stored events, dead letters and rejected inputs that name `user_id` (the rules are
    /// [`forget`]'s: an event by a JSON string equal to the id in `data` or `enriched`).
    /// Records are deleted, never edited: an event goes with its pending deliveries, which
    /// the report counts as dropped undelivered. What sinks already received is out of its
    /// reach. The local engine forgets only on a stopped gateway's journal (a running
    /// [`crate::journal::Journal`] answers [`QueueError::Io`] "stop the gateway first");
    /// the postgres engine whether or not gateways run. An empty id, or one with control
    /// characters, is refused.
    async fn forget(&self, user_id: &str) -> Result<ForgetReport, QueueError>;

    /// Who holds the leadership `name` ([`Queue::try_lead`]) and until when, if anyone does
    /// (`herald google status` on a shared engine). The local engine has one gateway and
    /// records no leaders: `None`.
    async fn leader(&self, _name: &str) -> Result<Option<(String, Millis)>, QueueError> {
        Ok(None)
    }

    /// Per sink, the earliest `next_at` of its pending deliveries that wait for a retry
    /// (attempted at least once): the console's "next retry" (docs/architecture.md §12).
    /// A sink with none is absent. The default, for an engine that cannot tell: none.
    async fn next_retries(&self) -> Result<BTreeMap<String, Millis>, QueueError> {
        Ok(BTreeMap::new())
    }

    /// The gateways sharing this queue as they registered (a shared engine's `gateways`
    /// table), for the console. The local engine has one gateway and no such table: none.
    async fn gateways(&self) -> Result<Vec<GatewayInfo>, QueueError> {
        Ok(Vec::new())
    }
}

/// A running gateway's queue (see the module docs, and docs/architecture.md §10 for the
/// table of methods, their callers and what the postgres engine must provide).
#[async_trait]
pub trait Queue: QueueAdmin + Ingest {
    /// This gateway's name in claims: unique among the gateways sharing the queue.
    fn holder(&self) -> &str;

    /// The lease of claims, `queue.lease` when there is such a key ([`DEFAULT_LEASE`]).
    fn lease(&self) -> Duration {
        DEFAULT_LEASE
    }

    /// Whether claims on deliveries lapse unless renewed, so that a worker must renew its
    /// in-flight claims every `lease / 3` ([`Queue::renew`]). The local engine's never do
    /// (the worker's in-flight set is the claim); a shared engine's do (docs/architecture.md
    /// §10.1, "Leases").
    fn renews_claims(&self) -> bool {
        false
    }

    // ---- unrouted events ------------------------------------------------------------

    /// Like [`Ingest::commit`] (duplicate check, durable before it returns, backpressure),
    /// but the event is not routed: it waits, counted as undelivered and never swept, until
    /// a holder claims it ([`Queue::claim_unrouted`]) and routes it ([`Queue::route_later`]).
    async fn commit_unrouted(&self, event: Event) -> Result<Committed, QueueError>;

    /// Woken when unrouted events were committed (or claims on them given up), so the
    /// enrichment task does not poll; it still looks now and then (claims of a dead holder
    /// run out without a commit). An engine without a wake-up of its own keeps this
    /// default, a `Notify` never woken: the task's slow safety poll then finds the events.
    fn notify_unrouted(&self) -> Arc<Notify> {
        Arc::new(Notify::new())
    }

    /// Claims up to `limit` unrouted events nobody else holds, oldest first, for
    /// `claim.ttl`.
    async fn claim_unrouted(
        &self,
        claim: Claim<'_>,
        limit: usize,
    ) -> Result<Vec<UnroutedItem>, QueueError>;

    /// Extends the holder's claims on `seqs`; returns those it no longer holds (another
    /// holder took them after the lease ran out, or they were routed).
    async fn renew_unrouted(&self, claim: Claim<'_>, seqs: &[u64]) -> Result<Vec<u64>, QueueError>;

    /// Gives claims up without routing (e.g. at shutdown): others may claim them at once.
    async fn release_unrouted(&self, holder: &str, seqs: &[u64]) -> Result<(), QueueError>;

    /// Routes the unrouted event `seq`: stores `routed.event` if given, commits its
    /// deliveries and removes it from the unrouted events, all in one transaction, and ends
    /// the claim. Exactly once: a second call finds it routed ([`RoutedLater::AlreadyRouted`]).
    async fn route_later(
        &self,
        holder: &str,
        seq: u64,
        routed: RouteLater,
    ) -> Result<RoutedLater, QueueError>;

    // ---- deliveries -----------------------------------------------------------------

    /// Pending deliveries of `sink` after `after` (exclusive), in `(seq, route)` order, at
    /// most `limit`. Those due are claimed by `claim.holder` for `claim.ttl` (an engine
    /// shared by gateways leaves out those another holder has claimed); the local engine
    /// also returns those not yet due, which the worker skips to know when to look again.
    async fn scan_pending(
        &self,
        sink: &str,
        claim: Claim<'_>,
        after: Option<DeliveryKey>,
        limit: usize,
    ) -> Result<Vec<PendingItem>, QueueError>;

    /// Extends the holder's claims on deliveries in flight (an attempt longer than the
    /// lease); returns those it no longer holds.
    async fn renew(
        &self,
        claim: Claim<'_>,
        keys: &[DeliveryKey],
    ) -> Result<Vec<DeliveryKey>, QueueError>;

    /// Gives claims on deliveries up without an outcome (a worker stopping).
    async fn release(&self, holder: &str, keys: &[DeliveryKey]) -> Result<(), QueueError>;

    /// Records how an attempt ended, which also ends its claim; returns once committed.
    async fn record(&self, key: DeliveryKey, outcome: Outcome) -> Result<(), QueueError>;

    /// Hands an outcome over without waiting for its commit; `then` is called exactly once,
    /// with the commit's result (or [`QueueError::Closed`]). The sink workers' path: see
    /// the module docs for why this is not an `async fn`.
    fn record_then(&self, key: DeliveryKey, outcome: Outcome, then: OnRecorded) -> Recording<'_>;

    /// [`Queue::record_then`] for several outcomes (a batch's, docs/architecture.md §7),
    /// `then` called once with a result for each, in their order. The default hands them
    /// over one by one; an engine that can take them as one command does.
    fn record_all_then(
        &self,
        outcomes: Vec<(DeliveryKey, Outcome)>,
        then: OnRecordedAll,
    ) -> Recording<'_> {
        let gathered = Arc::new(Gathered {
            results: std::sync::Mutex::new(vec![Err(QueueError::Closed); outcomes.len()]),
            then: std::sync::Mutex::new(Some(then)),
        });
        Recording::waiting(async move {
            for (i, (key, outcome)) in outcomes.into_iter().enumerate() {
                let gathered = Arc::clone(&gathered);
                let one = OnRecorded::new(move |result| {
                    gathered.results.lock().unwrap_or_else(|p| p.into_inner())[i] = result;
                });
                self.record_then(key, outcome, one).await?;
            }
            Ok(())
        })
    }

    /// Woken when deliveries for `sink` were committed (here or, for a shared engine, by
    /// another gateway).
    fn notify_for(&self, sink: &str) -> Arc<Notify>;

    /// The lowest seq of the deliveries for `sink` committed since the last call, when the
    /// engine knows it: a worker woken by [`Queue::notify_for`] may scan from there rather
    /// than from the start (on postgres, past the dead rows of deliveries already made).
    /// `None`: scan from the start.
    fn wake_hint(&self, _sink: &str) -> Option<u64> {
        None
    }

    /// Returns once every commit begun before the call has ended, so that nothing routed by a
    /// route table replaced before the call is still on its way (a removed sink's
    /// [`crate::delivery::retire`] counts what is pending for it only after this). Both
    /// engines commit in batches, each routed by the table loaded as it began. The default,
    /// for an engine that routes nothing itself, returns at once.
    async fn committed_so_far(&self) -> Result<(), QueueError> {
        Ok(())
    }

    /// Moves every pending delivery of `sink` to the dead letters with `reason` (a sink
    /// removed from the config); returns how many.
    async fn bury(&self, sink: &str, reason: &str) -> Result<usize, QueueError>;

    // ---- the other gateways (a shared engine; on the local engine there are none) -----

    /// Records this gateway's sinks and the fingerprint of its config for the other
    /// gateways (after a reload; the engine registers the gateway when it opens).
    async fn register(&self, _sinks: &[String], _fingerprint: &str) -> Result<(), QueueError> {
        Ok(())
    }

    /// The other running gateways that have `sink` in their config: a sink removed here is
    /// left to them rather than buried.
    async fn others_with(&self, _sink: &str) -> Result<Vec<String>, QueueError> {
        Ok(Vec::new())
    }

    /// What `/readyz` says beside readiness, without making the gateway unready: on a
    /// shared engine, deliveries pending for sinks this gateway does not have, and who
    /// makes them.
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }

    // ---- the rest -------------------------------------------------------------------

    /// Every event routed from now on, with its deliveries (`herald tap`); live, not durable.
    fn tap(&self) -> broadcast::Receiver<Tapped>;

    /// Readiness checks of the rest of the gateway, which [`Ingest::ready`] reports.
    fn health(&self) -> &Health;

    /// [`QueueError::Full`] while the backlog is at `queue.max_events`/`max_bytes`.
    fn room(&self) -> Result<(), QueueError>;

    /// Removes delivered events older than `queue.retention` (the engine also does this by
    /// itself; one gateway at a time for a shared engine).
    async fn sweep(&self) -> Result<usize, QueueError>;

    /// Claims (or renews) the leadership `name` for `claim.holder`: one leader at a time
    /// among the gateways sharing the queue, taken over when its lease runs out.
    async fn try_lead(&self, name: &str, claim: Claim<'_>) -> Result<Lead, QueueError>;

    /// Gives the leadership `name` up if `holder` has it.
    async fn resign(&self, name: &str, holder: &str) -> Result<(), QueueError>;

    /// Commits everything handed over so far and closes; later calls fail with `Closed`.
    async fn close(&self);
}

/// Opens the queue `queue.engine` names for a running gateway. `routes` routes events
/// committed by [`Ingest::commit`]; `sinks` are the config's sinks (their wake-ups exist
/// from the start).
pub fn open(
    queue: &QueueConfig,
    routes: Arc<ArcSwap<RouteTable>>,
    sinks: &[String],
) -> Result<Arc<dyn Queue>, QueueError> {
    match queue.engine {
        QueueEngine::Local => Ok(Arc::new(crate::journal::Journal::open(
            queue, routes, sinks,
        )?)),
        other => Err(not_in_core(other)),
    }
}

/// Core opens only the `local` engine: another engine lives in its own crate, and the binary
/// chooses (`src/queue.rs`, docs/architecture.md §10).
fn not_in_core(engine: QueueEngine) -> QueueError {
    QueueError::io(
        format!("opening the `{}` queue", engine.name()),
        "core opens only the `local` engine; the binary opens the others",
    )
}

/// Opens a stopped gateway's queue for `herald dlq` and `herald google status`.
/// [`QueueError::Locked`] when a running gateway holds it (ask that gateway instead).
pub fn open_admin(queue: &QueueConfig) -> Result<Arc<dyn QueueAdmin>, QueueError> {
    match queue.engine {
        QueueEngine::Local => Ok(Arc::new(crate::journal::open_for_admin(&queue.path)?)),
        other => Err(not_in_core(other)),
    }
}

#[cfg(test)]
mod tests;
