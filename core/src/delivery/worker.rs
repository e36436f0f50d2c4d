//! One sink's delivery worker: reads the sink's pending deliveries from the journal in order,
//! and runs attempts within the sink's concurrency, rate limit and circuit breaker. It holds
//! only the deliveries in flight and one page of the journal in memory: a long outage leaves
//! its backlog on disk.

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::FutureExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::breaker::{Breaker, Gate};
use super::policy::decide;
use super::turn::Pacing;
use crate::backoff::Backoff;
use crate::journal::now_millis;
use crate::queue::{
    Claim, DeliveryKey, OnRecorded, OnRecordedAll, Outcome, PendingItem, Queue,
    QueueError as JournalError,
};
use crate::sink::{ALWAYS, Delivery, DeliveryPolicy, Pace, Sink, SinkError};
use crate::template::{Rendered, Templates};
use crate::{FastMap, FastSet};

/// Pending deliveries read from the journal at a time.
const PAGE: usize = 256;
/// Attempts whose outcome may wait for a journal commit at once, per sink.
const MAX_UNRECORDED: usize = 4096;
/// Even without a wake-up, the worker looks at its backlog this often (deliveries replayed by
/// `herald dlq replay` in another process arrive this way).
const RESCAN: Duration = Duration::from_secs(5);
/// Recording an outcome again after the queue refused it: 200 ms doubling up to 10 s.
const RECORD_AGAIN: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
/// How soon a delivery a shared engine returned unclaimed, though due by this machine's
/// clock, is looked at again (the clocks of the gateway and the database differ a little).
const UNCLAIMED_RETRY_MS: i64 = 20;
/// After the journal could not be read, the worker tries again this soon.
const AFTER_READ_ERROR: Duration = Duration::from_secs(1);
/// After the journal reported damage, which reading it again does not mend: the worker tries
/// again this seldom, and logs it once, until a read succeeds.
const AFTER_CORRUPT: Duration = Duration::from_secs(60);

/// How long a worker waits after reading its backlog failed with `e`.
fn pause_after(e: &JournalError) -> Duration {
    match e {
        JournalError::Corrupt { .. } => AFTER_CORRUPT,
        _ => AFTER_READ_ERROR,
    }
}

pub(super) struct Worker {
    pub name: String,
    pub sink: Arc<dyn Sink>,
    pub policy: DeliveryPolicy,
    /// The sink's pace (the engine's `rate_limit`, or one the sink keeps itself).
    pub pace: Option<Pace>,
    pub journal: Arc<dyn Queue>,
    pub templates: Arc<ArcSwap<Templates>>,
    pub notify: Arc<Notify>,
    pub shutdown: CancellationToken,
    pub deadline: Duration,
}

/// What the attempts of one worker share.
struct Shared {
    sink: Arc<dyn Sink>,
    /// The sink's name in routes.yaml, for log lines.
    sink_name: String,
    policy: DeliveryPolicy,
    journal: Arc<dyn Queue>,
    templates: Arc<ArcSwap<Templates>>,
    breaker: Mutex<Breaker>,
    /// Deliveries being attempted (`None`), or whose outcome was committed when the scan
    /// counter stood at `Some(n)`: a scan that began before that commit read the journal as
    /// it was and must not start the delivery again.
    inflight: Mutex<FastMap<DeliveryKey, Option<u64>>>,
    /// Scans of the journal begun so far.
    scans: AtomicU64,
    /// Woken when an attempt ends, so a half-open circuit or a full worker goes on.
    ended: Notify,
    metrics: SinkMetrics,
    /// Whether claims lapse unless renewed (a shared engine, docs/architecture.md §10.1).
    /// Only then are `waiting` and `lapsed` used.
    leased: bool,
    /// Deliveries this worker's last scan claimed that are not being attempted yet (waiting
    /// for a concurrency permit or the rate limit): renewed like those in flight, so a page
    /// that takes longer than the lease is not taken over while it waits.
    waiting: Mutex<FastSet<DeliveryKey>>,
    /// Waiting deliveries whose claim lapsed anyway (another gateway may have them): not
    /// attempted here.
    lapsed: Mutex<FastSet<DeliveryKey>>,
    /// A paced sink on a shared queue: this gateway's turn at it (turn.rs).
    pacing: Option<Pacing>,
    /// An attempt recorded a retry since the worker last looked: its next pass reads the
    /// sink's deliveries from the start to learn when it is due.
    retried: AtomicBool,
}

/// The series a worker records on every attempt, registered once (a labelled macro call
/// allocates its labels and looks the series up each time).
struct SinkMetrics {
    circuit: metrics::Gauge,
    delivered: metrics::Counter,
    retry: metrics::Counter,
    dead: metrics::Counter,
    retries: metrics::Counter,
}

impl SinkMetrics {
    fn new(sink: &str) -> Self {
        let outcome = |label: &'static str| metrics::counter!("herald_deliveries_total", "sink" => sink.to_owned(), "outcome" => label);
        SinkMetrics {
            circuit: metrics::gauge!("herald_circuit_state", "sink" => sink.to_owned()),
            delivered: outcome("delivered"),
            retry: outcome("retry"),
            dead: outcome("dead"),
            retries: metrics::counter!("herald_delivery_retries_total", "sink" => sink.to_owned()),
        }
    }
}

impl Worker {
    pub async fn run(self) {
        let shared = Arc::new(Shared {
            sink: self.sink.clone(),
            sink_name: self.name.clone(),
            policy: self.policy.clone(),
            journal: self.journal.clone(),
            templates: self.templates.clone(),
            breaker: Mutex::new(Breaker::default()),
            inflight: Mutex::default(),
            scans: AtomicU64::new(0),
            ended: Notify::new(),
            metrics: SinkMetrics::new(&self.name),
            leased: self.journal.renews_claims(),
            waiting: Mutex::default(),
            lapsed: Mutex::default(),
            pacing: self
                .pace
                .filter(|_| self.journal.renews_claims())
                .map(|pace| Pacing::new(&self.name, pace, self.journal.lease())),
            retried: AtomicBool::new(false),
        });
        let limiter = rate_limiter(&self.policy);
        // A sink that takes several deliveries at once (a file: one write) gets a page's due
        // deliveries as one attempt, unless a rate limit or a pace must space them
        // (docs/architecture.md §7, "Batches").
        let batches = self.sink.batches() && limiter.is_none() && shared.pacing.is_none();
        let semaphore = Arc::new(Semaphore::new(self.policy.concurrency));
        // Attempts that ended but whose outcome is not committed yet. The concurrency permit
        // is released as soon as the sink answered, so the next deliveries go out while
        // outcomes wait for the journal's next group commit; this bounds how many may wait.
        let unrecorded = Arc::new(Semaphore::new(MAX_UNRECORDED));
        let shutdown = self.shutdown.clone();
        let mut attempts = JoinSet::new();
        let mut cursor: Option<DeliveryKey> = None;
        let mut earliest: Option<i64> = None;
        // Set while reads fail with a damaged journal (logged once, not every minute).
        let mut damaged = false;
        // A paced sink's turn just taken: nothing is sent before this (turn.rs).
        let mut quiet_until: Option<Instant> = None;
        // When the next pass must read the sink's deliveries from the start (a retry falls
        // due, or RESCAN since the last such pass), however often new deliveries wake the
        // worker to read only from where they begin.
        let mut full_pass_at = Instant::now();
        // A shared engine's claims lapse unless renewed (docs/architecture.md §10.1,
        // "Leases"): renew those in flight every lease/3. The local engine needs nothing,
        // so no task runs for it.
        let renewing = self
            .journal
            .renews_claims()
            .then(|| tokio::spawn(renew_claims(shared.clone(), self.name.clone())));

        'outer: while !shutdown.is_cancelled() {
            while attempts.try_join_next().is_some() {}

            let blocked = {
                let breaker = lock(&shared.breaker);
                (!breaker.at_rest())
                    .then(|| breaker.blocked_for(Instant::now()))
                    .flatten()
            };
            if let Some(delay) = blocked {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shared.ended.notified() => {}
                    _ = shutdown.cancelled() => {}
                }
                continue;
            }

            // A paced sink on a shared queue: only the gateway whose turn it is scans (and
            // so claims) its deliveries; the others try to take the turn every lease/3.
            if let Some(pacing) = &shared.pacing {
                if !pacing.turn.holds() {
                    match pacing.take(&*self.journal).await {
                        Some(first) => quiet_until = Some(first),
                        None => {
                            tokio::select! {
                                _ = tokio::time::sleep(renew_every(self.journal.lease())) => {}
                                _ = shutdown.cancelled() => {}
                            }
                            continue;
                        }
                    }
                }
                if let Some(at) = quiet_until.take().filter(|at| *at > Instant::now()) {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = shutdown.cancelled() => {}
                    }
                    continue;
                }
            }

            // Scans run one after another, so once this one begins, every outcome committed
            // before it is visible to it and to later ones.
            let scan = shared.scans.fetch_add(1, Ordering::SeqCst) + 1;
            lock(&shared.inflight).retain(|_, settled| settled.is_none_or(|at| at >= scan));
            // What this reads is this gateway's claim (docs/architecture.md §10); an
            // outcome ends it. The local engine's claims never lapse, so a worker on it
            // has nothing to renew.
            let claim = Claim::new(self.journal.holder(), self.journal.lease());
            if cursor.is_none() {
                full_pass_at = Instant::now() + RESCAN;
            }
            let items = match self
                .journal
                .scan_pending(&self.name, claim, cursor.clone(), PAGE)
                .await
            {
                Ok(items) => {
                    if std::mem::take(&mut damaged) {
                        tracing::info!(sink = %self.name, "pending deliveries can be read again");
                    }
                    items
                }
                Err(e) => {
                    let pause = pause_after(&e);
                    if !matches!(e, JournalError::Corrupt { .. }) {
                        tracing::error!(sink = %self.name, error = %e, "cannot read pending deliveries");
                    } else if !std::mem::replace(&mut damaged, true) {
                        tracing::error!(sink = %self.name, error = %e, "cannot read pending deliveries: the journal is damaged; trying again every {}s", pause.as_secs());
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = shutdown.cancelled() => {}
                    }
                    continue;
                }
            };
            if items.is_empty() {
                // The end of a pass: sleep until the earliest retry, new work, or a rescan.
                if let Some(at) = earliest.take() {
                    let wait = Duration::from_millis(u64::try_from(at - now_millis()).unwrap_or(0));
                    full_pass_at = full_pass_at.min(Instant::now() + wait);
                }
                let sleep = tokio::time::sleep_until(full_pass_at);
                tokio::pin!(sleep);
                // New deliveries: the scan may begin where they are, when the engine says
                // (postgres: past the dead rows of those already made). Retries and lapsed
                // claims below are found by the full passes: at `full_pass_at` (the earliest
                // retry, RESCAN), even while new deliveries keep waking the worker, and after
                // a retry was recorded.
                let from_new = |worker: &Worker| {
                    if Instant::now() >= full_pass_at {
                        None
                    } else {
                        worker.hint()
                    }
                };
                cursor = loop {
                    tokio::select! {
                        _ = &mut sleep => break None,
                        _ = self.notify.notified() => break from_new(&self),
                        _ = shared.ended.notified() => {
                            if shared.retried.swap(false, Ordering::SeqCst) {
                                break None;
                            }
                            // Delivered or dead: nothing new to read, unless deliveries
                            // were committed meanwhile.
                            if let Some(from) = from_new(&self) {
                                break Some(from);
                            }
                        }
                        _ = shutdown.cancelled() => break None,
                    }
                };
                continue;
            }

            if shared.leased {
                // This page's due deliveries are this gateway's claims from now on; an
                // earlier page's that were never started are left to lapse.
                let now = now_millis();
                let mut waiting = lock(&shared.waiting);
                waiting.clear();
                lock(&shared.lapsed).clear();
                waiting.extend(
                    items
                        .iter()
                        .filter(|item| item.claimed && item.state.next_at <= now)
                        .map(|item| item.key.clone()),
                );
            }
            let mut probed = false;
            // Where the next page begins, once every item of this one was looked at.
            let last = items.last().map(|item| item.key.clone());
            // This page's deliveries gathered for a sink that batches, and the concurrency
            // permit their attempt holds.
            let mut batch = Vec::new();
            let mut batch_permit = None;
            for item in items {
                if lock(&shared.inflight).contains_key(&item.key) {
                    continue;
                }
                let now = now_millis();
                if !item.claimed || item.state.next_at > now {
                    // Not this worker's to attempt yet. One a shared engine left unclaimed
                    // (not due by the database's clock) may look due by this machine's: it
                    // is looked at again a moment later, when the scan can claim it.
                    let at = if item.claimed {
                        item.state.next_at
                    } else {
                        item.state.next_at.max(now + UNCLAIMED_RETRY_MS)
                    };
                    earliest = Some(earliest.map_or(at, |e| e.min(at)));
                    continue;
                }
                let gate = if probed {
                    Gate::Wait(Duration::ZERO)
                } else {
                    let mut breaker = lock(&shared.breaker);
                    if breaker.at_rest() {
                        Gate::Go
                    } else {
                        breaker.gate(Instant::now())
                    }
                };
                match gate {
                    Gate::Go => {}
                    Gate::Probe => probed = true,
                    Gate::Wait(_) => {
                        // The circuit opened (or a probe is out): start the pass again later,
                        // once what was gathered (before it opened) is sent.
                        if let Some(permit) = batch_permit.take() {
                            let batch = std::mem::take(&mut batch);
                            start(&mut attempts, attempt_batch(shared.clone(), batch, permit))
                                .await;
                        }
                        cursor = None;
                        continue 'outer;
                    }
                }
                // A probe of a half-open circuit goes alone.
                let gathered = batches && !probed;
                // A batch holds one concurrency permit, taken for its first delivery.
                let permit = if gathered && batch_permit.is_some() {
                    None
                } else {
                    tokio::select! {
                        permit = semaphore.clone().acquire_owned() => match permit {
                            Ok(p) => Some(p),
                            Err(_) => break 'outer,
                        },
                        _ = shutdown.cancelled() => break 'outer,
                    }
                };
                if let Some(limiter) = &limiter {
                    tokio::select! {
                        _ = limiter.until_ready() => {}
                        _ = shutdown.cancelled() => break 'outer,
                    }
                }
                let recording = tokio::select! {
                    r = unrecorded.clone().acquire_owned() => match r {
                        Ok(r) => r,
                        Err(_) => break 'outer,
                    },
                    _ = shutdown.cancelled() => break 'outer,
                };
                if let Some(pacing) = &shared.pacing
                    && !pacing.turn.holds()
                {
                    // The turn ended while this waited for the pace: what this page claimed
                    // goes back at once to the gateway that has the turn now.
                    let keys: Vec<DeliveryKey> = lock(&shared.waiting).drain().collect();
                    if let Err(e) = self.journal.release(self.journal.holder(), &keys).await {
                        tracing::warn!(sink = %self.name, error = %e, "cannot give back claims at the end of the turn; they lapse after the lease");
                    }
                    cursor = None;
                    continue 'outer;
                }
                if shared.leased {
                    lock(&shared.waiting).remove(&item.key);
                    if lock(&shared.lapsed).remove(&item.key) {
                        // Its claim lapsed while it waited: another gateway may attempt it.
                        continue;
                    }
                }
                lock(&shared.inflight).insert(item.key.clone(), None);
                match permit {
                    Some(permit) if !gathered => {
                        start(
                            &mut attempts,
                            attempt(shared.clone(), item, permit, recording),
                        )
                        .await;
                    }
                    permit => {
                        if batch_permit.is_none() {
                            batch_permit = permit;
                        }
                        batch.push((item, recording));
                    }
                }
            }
            if let Some(permit) = batch_permit {
                start(&mut attempts, attempt_batch(shared.clone(), batch, permit)).await;
            }
            cursor = last;
        }

        // Shutdown: let attempts in flight finish up to the deadline; what is left stays
        // pending in the journal for the next start.
        let finished = tokio::time::timeout(self.deadline, async {
            while attempts.join_next().await.is_some() {}
            // The attempts handed their outcomes to the journal; wait for them to be
            // committed (each gives its `recording` permit back then), so that a stopped
            // worker leaves nothing of its own in flight: a sink removed by a reload is
            // buried only after its delivered outcomes are in.
            let _ = unrecorded.acquire_many(MAX_UNRECORDED as u32).await;
        })
        .await;
        if finished.is_err() {
            tracing::warn!(sink = %self.name, left = attempts.len(), "deliveries still in flight at the shutdown deadline; they stay queued");
            attempts.abort_all();
        }
        if let Some(renewing) = renewing {
            renewing.abort();
        }
        if let Some(pacing) = &shared.pacing {
            pacing.hand_over(&*self.journal).await;
        }
        if let Err(e) = self.sink.flush().await {
            tracing::warn!(sink = %self.name, error = %e, "flush at shutdown failed");
        }
    }
}

impl Worker {
    /// Where a scan of new deliveries may begin (`Queue::wake_hint`).
    fn hint(&self) -> Option<DeliveryKey> {
        self.journal.wake_hint(&self.name).map(|seq| DeliveryKey {
            sink: Arc::from(self.name.as_str()),
            seq: seq.saturating_sub(1),
            route: Arc::from(""),
        })
    }
}

/// Renews the worker's claims on the deliveries it is attempting, every lease/3, so that an
/// attempt longer than the lease is not taken over by another gateway (docs/architecture.md
/// §10.1). Runs until aborted.
async fn renew_claims(shared: Arc<Shared>, sink: String) {
    let lease = shared.journal.lease();
    let every = renew_every(lease);
    loop {
        tokio::time::sleep(every).await;
        if let Some(pacing) = &shared.pacing
            && pacing.turn.holds()
            && let Some(first) = pacing.take(&*shared.journal).await
            && first > Instant::now()
        {
            // The turn ran out meanwhile and was taken afresh, which asks for a quiet
            // before the first send: the worker's loop takes it again and keeps that quiet.
            pacing.turn.end();
        }
        let mut keys: Vec<DeliveryKey> = lock(&shared.inflight)
            .iter()
            .filter(|(_, settled)| settled.is_none())
            .map(|(key, _)| key.clone())
            .collect();
        keys.extend(lock(&shared.waiting).iter().cloned());
        if keys.is_empty() {
            continue;
        }
        let claim = Claim::new(shared.journal.holder(), lease);
        match shared.journal.renew(claim, &keys).await {
            Ok(lost) if !lost.is_empty() => {
                let mut waiting = lock(&shared.waiting);
                let mut lapsed = lock(&shared.lapsed);
                for key in &lost {
                    if waiting.remove(key) {
                        lapsed.insert(key.clone());
                    }
                }
                tracing::warn!(sink = %sink, lost = lost.len(), "claims on deliveries in flight lapsed; another gateway may attempt them too");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(sink = %sink, error = %e, "cannot renew claims on deliveries in flight")
            }
        }
    }
}

/// Starts `attempt`, polling it once in place: a sink that answers at once (a file, stdout)
/// and an outcome the writer takes at once need no task of their own. Only an attempt that
/// has to wait is spawned, and runs on from where it stopped. A panic ends the attempt,
/// never the worker, as it would a task.
async fn start(
    attempts: &mut JoinSet<std::thread::Result<()>>,
    attempt: impl Future<Output = ()> + Send + 'static,
) {
    let mut attempt = Box::pin(std::panic::AssertUnwindSafe(attempt).catch_unwind());
    let first = std::future::poll_fn(|cx| Poll::Ready(attempt.as_mut().poll(cx))).await;
    if first.is_pending() {
        attempts.spawn(attempt);
    }
}

/// One attempt of one delivery. `permit` (the sink's concurrency) is given back once the
/// sink has answered; `recording` (the bound on outcomes waiting for a commit) once its
/// outcome is committed, which the journal's writer reports without a task waiting for it.
async fn attempt(
    shared: Arc<Shared>,
    item: PendingItem,
    permit: tokio::sync::OwnedSemaphorePermit,
    recording: tokio::sync::OwnedSemaphorePermit,
) {
    let result = {
        let templates = shared.templates.load();
        match templates.render_event(&item.key.route, &item.key.sink, &item.event) {
            Err(e) => Err(SinkError::permanent(e.to_string())),
            Ok(rendered) => {
                let delivery = Delivery {
                    event: &item.event,
                    json: &item.json,
                    route: &item.key.route,
                    sink: &item.key.sink,
                    rendered: &rendered,
                    turn: shared.pacing.as_ref().map_or(&ALWAYS, |p| &p.turn),
                };
                answer(shared.sink.deliver(delivery), shared.policy.timeout)
                    .await
                    .and_then(|result| result)
            }
        }
    };
    drop(permit);
    shared.ended.notify_one();
    conclude(&shared, item, result, recording).await;
}

/// The due deliveries of a page as one attempt of a sink that [batches](Sink::batches)
/// them: rendered each, sent together, each answer then taken as [`attempt`] takes its one.
/// A delivery whose templates fail is not sent (its answer is that error); a panic, the
/// timeout, or an answer of the wrong length fails every delivery sent, as retryable.
async fn attempt_batch(
    shared: Arc<Shared>,
    batch: Vec<(PendingItem, tokio::sync::OwnedSemaphorePermit)>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let results: Vec<Result<(), SinkError>> = {
        let templates = shared.templates.load();
        let rendered: Vec<Result<Rendered, SinkError>> = batch
            .iter()
            .map(|(item, _)| {
                templates
                    .render_event(&item.key.route, &item.key.sink, &item.event)
                    .map_err(|e| SinkError::permanent(e.to_string()))
            })
            .collect();
        let deliveries: Vec<Delivery<'_>> = batch
            .iter()
            .zip(&rendered)
            .filter_map(|((item, _), rendered)| {
                Some(Delivery {
                    event: &item.event,
                    json: &item.json,
                    route: &item.key.route,
                    sink: &item.key.sink,
                    rendered: rendered.as_ref().ok()?,
                    turn: &ALWAYS,
                })
            })
            .collect();
        let sent = deliveries.len();
        let answers = if sent == 0 {
            Vec::new()
        } else {
            match answer(
                shared.sink.deliver_batch(&deliveries),
                shared.policy.timeout,
            )
            .await
            {
                Ok(answers) if answers.len() == sent => answers,
                Ok(answers) => vec![
                    Err(SinkError::retryable(format!(
                        "the sink answered {} of a batch of {sent} deliveries",
                        answers.len()
                    )));
                    sent
                ],
                Err(e) => vec![Err(e); sent],
            }
        };
        let mut answers = answers.into_iter();
        rendered
            .into_iter()
            .map(|rendered| match rendered {
                Err(e) => Err(e),
                Ok(_) => answers.next().unwrap_or_else(|| {
                    Err(SinkError::retryable("the sink left a delivery unanswered"))
                }),
            })
            .collect()
    };
    drop(permit);
    shared.ended.notify_one();
    let (items, recordings): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    let outcomes = judge_all(&shared, items.into_iter().zip(results));
    // Handed over together: one command to the journal, one completion for all.
    let recorded = on_recorded_all(shared.clone(), outcomes.clone(), recordings);
    let _ = shared.journal.record_all_then(outcomes, recorded).await;
}

/// `send` polled once in place, so that a sink that answers at once (a file, stdout) is not
/// given a timer (setting and clearing one per attempt is a lock on the runtime's timer
/// wheel); else awaited up to `timeout`. A panic or the timeout is a retryable error.
async fn answer<T>(send: impl Future<Output = T>, timeout: Duration) -> Result<T, SinkError> {
    let send = std::panic::AssertUnwindSafe(send).catch_unwind();
    let mut send = std::pin::pin!(send);
    let first = std::future::poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx))).await;
    let answered = match first {
        Poll::Ready(answer) => Ok(answer),
        Poll::Pending => tokio::time::timeout(timeout, send).await,
    };
    match answered {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(panic)) => Err(SinkError::retryable(format!(
            "the sink panicked: {}",
            panic_message(&panic)
        ))),
        Err(_) => Err(SinkError::retryable(format!("timed out after {timeout:?}"))),
    }
}

/// What follows the sink's answer `result` for `item`: [`judge`], and the outcome handed to
/// the journal.
async fn conclude(
    shared: &Arc<Shared>,
    item: PendingItem,
    result: Result<(), SinkError>,
    recording: tokio::sync::OwnedSemaphorePermit,
) {
    let (key, outcome) = judge(shared, item, result);
    let recorded = on_recorded(shared.clone(), key.clone(), outcome.clone(), recording);
    // An error is reported to `recorded` as well.
    let _ = shared.journal.record_then(key, outcome, recorded).await;
}

/// The sink's answer `result` for `item` taken: the circuit breaker, the outcome (delivered,
/// a retry, a dead letter) with its metrics and log line.
fn judge(
    shared: &Shared,
    item: PendingItem,
    result: Result<(), SinkError>,
) -> (DeliveryKey, Outcome) {
    judging(shared, |breaker, noted| {
        judge_one(shared, breaker, noted, item, result)
    })
}

/// [`judge`] for the answers of a batch, with the breaker and this gateway's record of
/// outcomes locked once for all of them rather than once per delivery.
fn judge_all(
    shared: &Shared,
    answers: impl Iterator<Item = (PendingItem, Result<(), SinkError>)>,
) -> Vec<(DeliveryKey, Outcome)> {
    judging(shared, |breaker, noted| {
        answers
            .map(|(item, result)| judge_one(shared, breaker, noted, item, result))
            .collect()
    })
}

/// Runs `judge` with the breaker locked, then notes the outcomes it pushed for the console
/// under one lock of that record, after the judging, so that no log line is written while
/// it is locked.
fn judging<T>(
    shared: &Shared,
    judge: impl FnOnce(&mut Breaker, &mut Vec<(u64, super::outcomes::Seen)>) -> T,
) -> T {
    let mut noted = Vec::new();
    let judged = {
        let mut breaker = lock(&shared.breaker);
        let judged = judge(&mut breaker, &mut noted);
        shared.metrics.circuit.set(breaker.metric());
        judged
    };
    super::outcomes::note_all(noted);
    judged
}

/// [`judge`] under the breaker's lock, the outcome to note for the console pushed on `noted`.
fn judge_one(
    shared: &Shared,
    breaker: &mut Breaker,
    noted: &mut Vec<(u64, super::outcomes::Seen)>,
    item: PendingItem,
    result: Result<(), SinkError>,
) -> (DeliveryKey, Outcome) {
    let PendingItem {
        key,
        state,
        committed_at,
        event,
        ..
    } = item;
    // The clock is read only for a failed attempt: a delivery made needs no time
    // (reading the clock was 1% of the gateway's CPU under load, these two readings of
    // five per event).
    match &result {
        Ok(()) => breaker.on_success(),
        Err(SinkError::Retryable {
            retry_after: Some(delay),
            ..
        }) => breaker.pause(Instant::now(), *delay),
        Err(SinkError::Retryable { .. }) => breaker.on_failure(Instant::now()),
        // A permanent error is about this message, not the sink's health.
        Err(SinkError::Permanent { .. }) => breaker.on_success(),
    }
    let outcome = match &result {
        Ok(()) => Outcome::Delivered,
        Err(_) => decide(
            &result,
            &state,
            committed_at,
            now_millis(),
            &shared.policy,
            &mut rand::rng(),
        ),
    };
    let counted = match &outcome {
        Outcome::Delivered => &shared.metrics.delivered,
        Outcome::Retry { .. } => &shared.metrics.retry,
        Outcome::Dead { .. } => &shared.metrics.dead,
    };
    counted.increment(1);
    let seen = match &outcome {
        Outcome::Delivered => super::outcomes::Seen::Delivered,
        Outcome::Retry { .. } => super::outcomes::Seen::Retrying,
        Outcome::Dead { .. } => super::outcomes::Seen::Dead,
    };
    noted.push((
        super::outcomes::key(&event.source, &event.id, &key.route, &key.sink),
        seen,
    ));
    match &outcome {
        Outcome::Retry { attempt, .. } => {
            shared.metrics.retries.increment(1);
            tracing::debug!(sink = %key.sink, route = %key.route, event = %event.id, error = %attempt.error, "delivery failed; will retry");
        }
        Outcome::Dead { reason, attempt } => {
            let error = attempt.as_ref().map_or("", |a| a.error.as_str());
            tracing::warn!(sink = %key.sink, route = %key.route, event = %event.id, %reason, %error, "delivery dead-lettered");
        }
        Outcome::Delivered => {}
    }
    (key, outcome)
}

/// What happens once an attempt's outcome was committed, or could not be: the delivery is
/// settled for the scans begun from then on. An outcome the queue refused for a while
/// (PostgreSQL restarting, a disk error) is recorded again with a backoff rather than the
/// delivery being made a second time; the delivery stays in flight (and its claim renewed)
/// meanwhile. Only a closed queue (shutting down) gives up: the delivery stays pending and
/// is attempted again after the start.
fn on_recorded(
    shared: Arc<Shared>,
    key: DeliveryKey,
    outcome: Outcome,
    recording: tokio::sync::OwnedSemaphorePermit,
) -> OnRecorded {
    let retried = matches!(outcome, Outcome::Retry { .. });
    let runtime = tokio::runtime::Handle::current();
    OnRecorded::new(move |result| {
        match result {
            Err(JournalError::Closed) => {
                tracing::warn!(sink = %key.sink, "the queue closed before a delivery outcome was recorded; it will be attempted again");
                // Still pending: the next pass reads from the start.
                shared.retried.store(true, Ordering::SeqCst);
            }
            Err(e) => {
                tracing::warn!(sink = %key.sink, error = %e, "cannot record a delivery outcome yet; trying again");
                runtime.spawn(record_again(shared, key, outcome, recording));
                return;
            }
            Ok(()) => {
                // A retry to schedule: the next pass reads from the start to learn when.
                if retried {
                    shared.retried.store(true, Ordering::SeqCst);
                }
            }
        }
        settle(&shared, key, recording);
    })
}

/// [`on_recorded`] for the outcomes of a batch, handed over together: each settled, or
/// recorded again, by its own result; one log line for those refused.
fn on_recorded_all(
    shared: Arc<Shared>,
    outcomes: Vec<(DeliveryKey, Outcome)>,
    recordings: Vec<tokio::sync::OwnedSemaphorePermit>,
) -> OnRecordedAll {
    let runtime = tokio::runtime::Handle::current();
    OnRecordedAll::new(outcomes.len(), move |results| {
        let mut settled = Vec::with_capacity(outcomes.len());
        let (mut closed, mut refused) = (0, None);
        // A result missing (never, from the engines) counts as not recorded: the delivery
        // stays pending rather than in flight for good.
        let results = results
            .into_iter()
            .chain(std::iter::repeat_with(|| Err(JournalError::Closed)));
        for (((key, outcome), recording), result) in
            outcomes.into_iter().zip(recordings).zip(results)
        {
            match result {
                Err(JournalError::Closed) => {
                    closed += 1;
                    // Still pending: the next pass reads from the start.
                    shared.retried.store(true, Ordering::SeqCst);
                }
                Err(e) => {
                    refused = Some(e);
                    runtime.spawn(record_again(shared.clone(), key, outcome, recording));
                    continue;
                }
                Ok(()) => {
                    if matches!(outcome, Outcome::Retry { .. }) {
                        shared.retried.store(true, Ordering::SeqCst);
                    }
                }
            }
            settled.push((key, recording));
        }
        if closed > 0 {
            tracing::warn!(sink = %shared.sink_name, outcomes = closed, "the queue closed before delivery outcomes were recorded; they will be attempted again");
        }
        if let Some(e) = refused {
            tracing::warn!(sink = %shared.sink_name, error = %e, "cannot record delivery outcomes yet; trying again");
        }
        let at = shared.scans.load(Ordering::SeqCst);
        let mut inflight = lock(&shared.inflight);
        for (key, recording) in settled {
            inflight.insert(key, Some(at));
            drop(recording);
        }
        drop(inflight);
        shared.ended.notify_one();
    })
}

/// Records `outcome` again until the queue takes it (docs/architecture.md §7).
async fn record_again(
    shared: Arc<Shared>,
    key: DeliveryKey,
    outcome: Outcome,
    recording: tokio::sync::OwnedSemaphorePermit,
) {
    let mut tries: u32 = 0;
    loop {
        tries += 1;
        tokio::time::sleep(RECORD_AGAIN.ceiling(tries)).await;
        match shared.journal.record(key.clone(), outcome.clone()).await {
            Ok(()) => {
                tracing::info!(sink = %key.sink, tries, "delivery outcome recorded after all");
                if matches!(outcome, Outcome::Retry { .. }) {
                    shared.retried.store(true, Ordering::SeqCst);
                }
                break;
            }
            Err(JournalError::Closed) => {
                tracing::warn!(sink = %key.sink, "the queue closed before a delivery outcome was recorded; it will be attempted again");
                shared.retried.store(true, Ordering::SeqCst);
                break;
            }
            Err(_) => {}
        }
    }
    settle(&shared, key, recording);
}

/// The delivery's outcome is in (or given up): scans begun from now on see it; one begun
/// before must not start the delivery again.
fn settle(shared: &Shared, key: DeliveryKey, recording: tokio::sync::OwnedSemaphorePermit) {
    let at = shared.scans.load(Ordering::SeqCst);
    lock(&shared.inflight).insert(key, Some(at));
    drop(recording);
    shared.ended.notify_one();
}

fn rate_limiter(policy: &DeliveryPolicy) -> Option<DefaultDirectRateLimiter> {
    let per_second = policy.rate_per_second?;
    let burst = NonZeroU32::new(policy.burst.max(1))?;
    let period = Duration::from_secs_f64(1.0 / per_second);
    let quota = Quota::with_period(period)?.allow_burst(burst);
    Some(RateLimiter::direct(quota))
}

/// How often claims and a paced sink's turn are renewed on a shared queue.
fn renew_every(lease: Duration) -> Duration {
    (lease / 3).max(Duration::from_millis(100))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_journal_is_read_again_seldom_other_failures_soon() {
        assert_eq!(
            pause_after(&JournalError::corrupt("the journal file", "bad page")),
            Duration::from_secs(60)
        );
        assert_eq!(
            pause_after(&JournalError::io("reading", "EIO")),
            Duration::from_secs(1)
        );
        assert_eq!(pause_after(&JournalError::Closed), Duration::from_secs(1));
    }
}
