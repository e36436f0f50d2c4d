//! The journal's single writer: group commit of everything that changes the journal
//! (docs/architecture.md §10 and §10.3). Per batch, [`Core::apply`] encodes every command as
//! log records (checking duplicates against the window and what the batch did already),
//! writes the batch's dead letters and rejected inputs to redb, appends the records to the
//! log with one write and one fdatasync, and only then answers: the senders, the outcomes'
//! completions, the woken sink workers and the tap.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use redb::Database;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::error::During;
use super::ledger::Ledger;
use super::ledger::codec::{self, Settled};
use super::log::Entry;
use super::recent::Held;
use super::records::{DeadKind, Millis, now_millis};
use super::store::{self, DeliveryKey, NewDead, Outcome};
use super::{JournalError, Live, MAX_BATCH};
use crate::event::Event;
use crate::ingest::{Committed, RejectedInput};
use crate::rules::RouteTable;
use crate::{FastMap, FastSet};

pub(super) enum Command {
    /// `json` is the event's JSON, encoded by the sender (off the writer thread). An
    /// `unrouted` event waits for [`Command::RouteLater`] instead of being routed now.
    Append {
        /// Shared from the commit on: an `Event` is some 300 bytes, copied at each move by
        /// value through the commit and the channel (README, "The eighth pass").
        event: Arc<Event>,
        json: Arc<str>,
        unrouted: bool,
        reply: oneshot::Sender<Result<Committed, JournalError>>,
    },
    RouteLater {
        seq: u64,
        event: Option<Box<Event>>,
        deliveries: Vec<(String, String)>,
        reply: oneshot::Sender<Result<Option<usize>, JournalError>>,
    },
    Reject {
        input: RejectedInput,
        reply: oneshot::Sender<Result<(), JournalError>>,
    },
    Outcome {
        key: DeliveryKey,
        outcome: Outcome,
        then: super::OnRecorded,
    },
    /// A batch's outcomes (`Queue::record_all_then`).
    Outcomes {
        outcomes: Vec<(DeliveryKey, Outcome)>,
        then: super::OnRecordedAll,
    },
    Sweep {
        reply: oneshot::Sender<Result<usize, JournalError>>,
    },
    /// Answered once the batch it is in is committed: every batch begun before it was sent
    /// has ended by then (`Queue::committed_so_far`).
    Barrier {
        reply: oneshot::Sender<Result<(), JournalError>>,
    },
    Bury {
        sink: String,
        reason: String,
        reply: oneshot::Sender<Result<usize, JournalError>>,
    },
    Replay {
        filter: super::DeadFilter,
        known_sinks: Vec<String>,
        reply: oneshot::Sender<Result<super::ReplayReport, JournalError>>,
    },
    Stop {
        reply: oneshot::Sender<()>,
    },
}

pub(super) struct Writer {
    pub core: Core,
    pub commands: mpsc::Receiver<Command>,
    pub routes: Arc<ArcSwap<RouteTable>>,
}

/// What a group commit changes: the log (events, outcomes) and, before it, redb (dead
/// letters, rejected inputs). The writer thread owns it; a stopped gateway's admin
/// commands (`herald dlq replay`) use it directly.
pub(super) struct Core {
    pub db: Arc<Database>,
    pub ledger: Ledger,
    pub live: Arc<Live>,
    pub notifies: super::Notifies,
    pub recent: Arc<super::recent::Recent>,
    pub tap: broadcast::Sender<super::Tapped>,
    /// The deliveries of the last tapped event, for the next one routed alike.
    pub tapped_alike: Option<Arc<[(String, String)]>>,
    pub retention_ms: i64,
    pub metrics: Metrics,
    /// The buffer the batches are encoded into, kept from one commit to the next: made anew
    /// for every batch, it grew a dozen times per commit, copying what it held each time.
    pub records: Records,
}

/// `(sink, route)` pairs as a tapped event's `(route, sink)` deliveries: `last` when it lists
/// the same, as it does for every event routed alike, else a new list that becomes `last`.
/// Tapping then allocates nothing per event for them (the console follows the tap always).
fn alike(
    last: &mut Option<Arc<[(String, String)]>>,
    pairs: &[(&str, &str)],
) -> Arc<[(String, String)]> {
    if let Some(last) = last
        && last.len() == pairs.len()
        && last
            .iter()
            .zip(pairs)
            .all(|((route, sink), (s, r))| route == r && sink == s)
    {
        return Arc::clone(last);
    }
    let new: Arc<[(String, String)]> = pairs
        .iter()
        .map(|(sink, route)| ((*route).to_owned(), (*sink).to_owned()))
        .collect();
    *last = Some(Arc::clone(&new));
    new
}

/// The writer's series, registered once: a labelled macro call allocates its key and looks
/// the series up in the registry each time, which at one commit per event (light load) was
/// four allocations per event.
pub(super) struct Metrics {
    commit_seconds: metrics::Histogram,
    batch_size: metrics::Histogram,
    /// `herald_queue_depth` of each sink seen so far.
    depth: FastMap<String, metrics::Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            commit_seconds: metrics::histogram!("herald_journal_commit_seconds"),
            batch_size: metrics::histogram!("herald_journal_batch_size"),
            depth: FastMap::default(),
        }
    }
}

impl Metrics {
    fn depth(&mut self, sink: &str) -> &metrics::Gauge {
        if !self.depth.contains_key(sink) {
            let gauge = metrics::gauge!("herald_queue_depth", "sink" => sink.to_owned());
            self.depth.insert(sink.to_owned(), gauge);
        }
        &self.depth[sink]
    }
}

/// How long the writer waits for a batch to fill up when the previous one was larger.
const LINGER: Duration = Duration::from_micros(250);
/// How often delivered events past the retention are removed.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// At most this many events are removed per sweep transaction, so a sweep never stalls ingest.
const SWEEP_LIMIT: usize = 10_000;
/// A sweep that hit the limit is followed by the next one this soon, so removal keeps up
/// with any steady load (10,000 events a second) instead of 10,000 a minute.
const SWEEP_AGAIN: Duration = Duration::from_secs(1);

pub(super) fn spawn(writer: Writer) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("herald-journal".into())
        .spawn(move || writer.run())
}

/// A reply to send once the batch is committed.
enum Reply {
    Append(
        oneshot::Sender<Result<Committed, JournalError>>,
        Result<Committed, JournalError>,
    ),
    Unit(
        oneshot::Sender<Result<(), JournalError>>,
        Result<(), JournalError>,
    ),
    Sweep(
        oneshot::Sender<Result<usize, JournalError>>,
        Result<usize, JournalError>,
    ),
    Routed(
        oneshot::Sender<Result<Option<usize>, JournalError>>,
        Result<Option<usize>, JournalError>,
    ),
    Then(super::OnRecorded, Result<(), JournalError>),
    ThenAll(super::OnRecordedAll, Vec<Result<(), JournalError>>),
    Replay(
        oneshot::Sender<Result<super::ReplayReport, JournalError>>,
        Result<super::ReplayReport, JournalError>,
    ),
}

impl Reply {
    fn send(self, failed: Option<&JournalError>) {
        macro_rules! answer {
            ($tx:expr, $r:expr) => {{
                let _ = $tx.send(match failed {
                    Some(e) => Err(e.clone()),
                    None => $r,
                });
            }};
        }
        match self {
            Reply::Append(tx, r) => answer!(tx, r),
            Reply::Unit(tx, r) => answer!(tx, r),
            Reply::Sweep(tx, r) => answer!(tx, r),
            Reply::Routed(tx, r) => answer!(tx, r),
            Reply::Replay(tx, r) => answer!(tx, r),
            Reply::Then(then, r) => then.call(match failed {
                Some(e) => Err(e.clone()),
                None => r,
            }),
            Reply::ThenAll(then, r) => then.call(match failed {
                Some(e) => vec![Err(e.clone()); r.len()],
                None => r,
            }),
        }
    }
}

impl Writer {
    fn run(mut self) {
        let mut next_sweep = Instant::now() + SWEEP_EVERY;
        let mut sweeping = None;
        let mut last_batch = 0usize;
        let mut commands = Vec::with_capacity(MAX_BATCH);
        let mut stop = None;
        while stop.is_none() {
            let Some(first) = self.commands.blocking_recv() else {
                break;
            };
            commands.push(first);
            self.drain(&mut commands);
            // Under load, the senders answered by the last commit are sending their next
            // requests right now; waiting a moment for them makes the next fsync carry a full
            // batch instead of a handful. At low load (small batches) there is no wait.
            if commands.len() < last_batch / 2 {
                std::thread::sleep(LINGER);
                self.drain(&mut commands);
            }
            last_batch = commands.len();
            if Instant::now() >= next_sweep {
                next_sweep = Instant::now() + SWEEP_EVERY;
                let (reply, result) = oneshot::channel();
                commands.push(Command::Sweep { reply });
                sweeping = Some(result);
            }
            stop = self.core.apply(&mut commands, &self.routes.load());
            self.core.maintain(false);
            if let Some(mut result) = sweeping.take()
                && let Ok(Ok(removed)) = result.try_recv()
                && removed >= SWEEP_LIMIT
            {
                next_sweep = Instant::now() + SWEEP_AGAIN;
            }
        }
        // Commit what was sent before the stop, then confirm.
        self.commands.close();
        while let Ok(c) = self.commands.try_recv() {
            commands.push(c);
            if commands.len() >= MAX_BATCH {
                self.core.apply(&mut commands, &self.routes.load());
            }
        }
        self.core.apply(&mut commands, &self.routes.load());
        self.core.maintain(true);
        if let Some(reply) = stop {
            let _ = reply.send(());
        }
    }

    /// Takes every command already waiting, up to a full batch.
    fn drain(&mut self, commands: &mut Vec<Command>) {
        while commands.len() < MAX_BATCH {
            match self.commands.try_recv() {
                Ok(c) => commands.push(c),
                Err(_) => break,
            }
        }
    }
}

/// The records of one group commit, encoded into one buffer.
#[derive(Default)]
pub(super) struct Records {
    buf: Vec<u8>,
    spans: Vec<(u8, usize, usize)>,
}

impl Records {
    /// The largest buffer kept for the next commit (a batch of large events may need more
    /// once, and gives it back).
    const KEEP: usize = 4 << 20;

    /// Empties it for the next commit.
    fn clear(&mut self) {
        if self.buf.capacity() > Self::KEEP {
            *self = Records::default();
        }
        self.buf.clear();
        self.spans.clear();
    }

    /// Encodes a record; returns its seq once appended at `first`.
    fn push(&mut self, first: u64, kind: u8, encode: impl FnOnce(&mut Vec<u8>)) -> u64 {
        let start = self.buf.len();
        encode(&mut self.buf);
        self.spans.push((kind, start, self.buf.len()));
        first + self.spans.len() as u64 - 1
    }

    fn entries(&self) -> Vec<Entry<'_>> {
        self.spans
            .iter()
            .map(|(kind, a, b)| Entry {
                kind: *kind,
                payload: &self.buf[*a..*b],
            })
            .collect()
    }
}

/// A new event as encoded: its seq and its `(sink, route)` deliveries.
type NewEvent<'r> = (u64, Vec<(&'r str, &'r str)>);

/// `(sink, route)` pairs each once, from `(route, sink)` or targets.
fn unique<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<(&'a str, &'a str)> {
    // An event has a handful of deliveries: a linear check beats a set's allocations.
    let mut out: Vec<(&str, &str)> = Vec::new();
    for pair in pairs {
        if !out.contains(&pair) {
            out.push(pair);
        }
    }
    out
}

impl Core {
    /// The event `seq`, from the window of recent events or the log.
    pub fn held(&self, seq: u64) -> Result<Option<Held>, JournalError> {
        if let Some(held) = self.recent.get(seq) {
            return Ok(Some(held));
        }
        match self.ledger.shared().read(&[seq]).pop() {
            Some((_, read)) => read,
            None => Ok(None),
        }
    }

    /// Whether `event` was committed already: a hit of its hash in the duplicate window,
    /// confirmed against the stored event. Never a false duplicate: an event that cannot be
    /// read back is taken as new.
    fn seen(&self, hash: u64, event: &Event) -> bool {
        let candidates = self.ledger.shared().index().dedup.candidates(hash);
        candidates.into_iter().any(|seq| match self.held(seq) {
            Ok(Some(held)) => held.event.source == event.source && held.event.id == event.id,
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(seq, error = %e, "an event the duplicate window points at cannot be read; the new one is taken as new");
                false
            }
        })
    }

    /// Checkpoints and deletes segments when due (`force`: now), logging a failure.
    pub fn maintain(&mut self, force: bool) -> usize {
        match self.ledger.maintain(self.retention_ms, force) {
            Ok(deleted) => {
                if deleted > 0 {
                    let first = self.ledger.log().first_seq();
                    if let Err(e) = store::trim_dead_keys(&self.db, first) {
                        tracing::warn!(error = %e, "the keys of old dead letters could not be trimmed");
                    }
                }
                deleted
            }
            Err(e) => {
                tracing::error!(error = %e, "the journal's checkpoint or segment deletion failed; it is tried again later");
                0
            }
        }
    }

    /// Applies `commands` as one group commit and answers them; returns a stop request.
    pub fn apply(
        &mut self,
        commands: &mut Vec<Command>,
        routes: &RouteTable,
    ) -> Option<oneshot::Sender<()>> {
        if commands.is_empty() {
            return None;
        }
        let started = Instant::now();
        let size = commands.len();
        let now = now_millis();
        let first = self.ledger.next_seq();
        let tapping = self.tap.receiver_count() > 0;
        let mut records = std::mem::take(&mut self.records);
        records.clear();
        let mut replies = Vec::with_capacity(commands.len());
        let mut stop = None;
        let mut tapped = Vec::with_capacity(if tapping { size } else { 0 });
        let mut appended: Vec<Held> = Vec::with_capacity(size);
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let mut dead: Vec<NewDead> = Vec::new();
        let mut replayed: Vec<u64> = Vec::new();
        let mut sweeps = Vec::new();
        // What this batch did already, which the index does not know before the append.
        // Sized for the batch: grown as it fills, they rehashed a few times per commit.
        let mut hashes: FastMap<u64, Arc<Event>> =
            FastMap::with_capacity_and_hasher(size, Default::default());
        let mut routed: FastSet<u64> = FastSet::default();
        let mut settled: FastSet<DeliveryKey> =
            FastSet::with_capacity_and_hasher(size, Default::default());

        for command in commands.drain(..) {
            match command {
                Command::Append {
                    event,
                    json,
                    unrouted,
                    reply,
                } => {
                    let r = self.append(
                        &event,
                        &json,
                        routes,
                        now,
                        first,
                        unrouted,
                        &mut records,
                        &mut hashes,
                    );
                    let r = r.map(|new| match new {
                        Some((seq, deliveries)) => {
                            for (sink, _) in &deliveries {
                                if !touched.contains(*sink) {
                                    touched.insert((*sink).to_owned());
                                }
                            }
                            // An unrouted event is tapped once it is routed.
                            if tapping && !unrouted {
                                tapped.push(super::Tapped {
                                    event: event.clone(),
                                    deliveries: alike(&mut self.tapped_alike, &deliveries),
                                });
                            }
                            appended.push(Held {
                                seq,
                                committed_at: now,
                                event,
                                json,
                            });
                            Committed::New
                        }
                        None => Committed::Duplicate,
                    });
                    replies.push(Reply::Append(reply, r));
                }
                Command::RouteLater {
                    seq,
                    event,
                    deliveries,
                    reply,
                } => {
                    let r =
                        self.route_later(seq, event, &deliveries, first, &mut records, &mut routed);
                    let r = r.map(|done| {
                        done.map(|(held, count)| {
                            for (_, sink) in &deliveries {
                                touched.insert(sink.clone());
                            }
                            if tapping {
                                tapped.push(super::Tapped {
                                    event: held.event.clone(),
                                    deliveries: deliveries.as_slice().into(),
                                });
                            }
                            appended.push(held);
                            count
                        })
                    });
                    replies.push(Reply::Routed(reply, r));
                }
                Command::Reject { input, reply } => {
                    dead.push(NewDead {
                        key: None,
                        kind: DeadKind::Rejected { input },
                    });
                    replies.push(Reply::Unit(reply, Ok(())));
                }
                Command::Outcome { key, outcome, then } => {
                    let r =
                        self.outcome(key, &outcome, first, &mut records, &mut settled, &mut dead);
                    replies.push(Reply::Then(then, r));
                }
                Command::Outcomes { outcomes, then } => {
                    let r = outcomes
                        .into_iter()
                        .map(|(key, outcome)| {
                            self.outcome(
                                key,
                                &outcome,
                                first,
                                &mut records,
                                &mut settled,
                                &mut dead,
                            )
                        })
                        .collect();
                    replies.push(Reply::ThenAll(then, r));
                }
                Command::Bury {
                    sink,
                    reason,
                    reply,
                } => {
                    let r = self.bury(&sink, &reason, first, &mut records, &mut settled, &mut dead);
                    replies.push(Reply::Sweep(reply, r));
                }
                Command::Replay {
                    filter,
                    known_sinks,
                    reply,
                } => {
                    let r = self.replay(&filter, &known_sinks, now, first, &mut records);
                    let r = r.map(|(report, held)| {
                        replayed.extend(&report.replayed);
                        touched.extend(report.sinks.iter().cloned());
                        appended.extend(held);
                        report
                    });
                    replies.push(Reply::Replay(reply, r));
                }
                Command::Sweep { reply } => sweeps.push(reply),
                Command::Barrier { reply } => replies.push(Reply::Unit(reply, Ok(()))),
                Command::Stop { reply } => stop = Some(reply),
            }
        }

        // Dead letters first (idempotent by delivery), then the log.
        // The new events go into the window of recent events once durable and before the
        // index shows them, so the workers woken below find them in memory.
        let recent = &self.recent;
        let result = store::write_dead(&self.db, dead)
            .and_then(|()| {
                self.ledger
                    .append_then(&records.entries(), || recent.extend(appended))
            })
            .during("committing a batch");
        self.records = records;
        self.metrics
            .commit_seconds
            .record(started.elapsed().as_secs_f64());
        self.metrics.batch_size.record(size as f64);
        match result {
            Ok(_) => {
                self.live.commit_succeeded();
                if !replayed.is_empty()
                    && let Err(e) = store::remove_dead(&self.db, &replayed)
                {
                    tracing::error!(error = %e, "replayed dead letters could not be removed; they are queued again and may be replayed twice");
                }
                {
                    let index = self.ledger.shared().index();
                    self.live
                        .undelivered_events
                        .store(index.undelivered_events, Ordering::Relaxed);
                    self.live
                        .undelivered_bytes
                        .store(index.undelivered_bytes, Ordering::Relaxed);
                    let mut sinks: BTreeSet<&str> = touched.iter().map(String::as_str).collect();
                    sinks.extend(settled.iter().map(|key| &*key.sink));
                    for sink in sinks {
                        let depth = index.sinks.get(sink).map_or(0, |q| q.len());
                        self.metrics.depth(sink).set(depth as f64);
                    }
                }
                for sink in &touched {
                    self.notifies.get(sink).notify_one();
                }
                for tapped in tapped {
                    let _ = self.tap.send(tapped);
                }
                for reply in replies {
                    reply.send(None);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "journal commit failed; {size} commands refused");
                self.live.commit_failed(&e);
                for reply in replies {
                    reply.send(Some(&e));
                }
            }
        }
        for reply in sweeps {
            let _ = reply.send(Ok(self.maintain(true)));
        }
        stop
    }

    /// Encodes a new event unless it is a duplicate (`None`); returns its seq, JSON and
    /// `(sink, route)` deliveries.
    #[allow(clippy::too_many_arguments)]
    fn append<'r>(
        &self,
        event: &Arc<Event>,
        json: &str,
        routes: &'r RouteTable,
        now: Millis,
        first: u64,
        unrouted: bool,
        records: &mut Records,
        hashes: &mut FastMap<u64, Arc<Event>>,
    ) -> Result<Option<NewEvent<'r>>, JournalError> {
        let hash = codec::dedup_hash(&event.source, &event.id);
        if let Some(earlier) = hashes.get(&hash)
            && earlier.source == event.source
            && earlier.id == event.id
        {
            return Ok(None);
        }
        if self.seen(hash, event) {
            return Ok(None);
        }
        let targets = if unrouted {
            Vec::new()
        } else {
            routes.targets(event)
        };
        let pairs = unique(targets.iter().map(|t| (t.sink, t.route)));
        let flags = if unrouted { codec::UNROUTED } else { 0 };
        let seq = records.push(first, codec::EVENT, |buf| {
            codec::encode_event(buf, now, flags, None, hash, &pairs, json);
        });
        hashes.insert(hash, event.clone());
        Ok(Some((seq, pairs)))
    }

    /// Encodes the routed copy of the unrouted event `seq`; `None` when it is not unrouted.
    fn route_later(
        &self,
        seq: u64,
        event: Option<Box<Event>>,
        deliveries: &[(String, String)],
        first: u64,
        records: &mut Records,
        routed: &mut FastSet<u64>,
    ) -> Result<Option<(Held, usize)>, JournalError> {
        if routed.contains(&seq) || !self.ledger.shared().index().unrouted.contains_key(&seq) {
            return Ok(None);
        }
        let Some(original) = self.held(seq)? else {
            return Err(JournalError::corrupt(
                format!("event {seq}"),
                "it waits to be routed, yet the log does not have it",
            ));
        };
        let (event, json) = match event {
            Some(event) => {
                let json = event.to_json();
                (Arc::new(*event), Arc::<str>::from(json))
            }
            None => (original.event.clone(), original.json.clone()),
        };
        let pairs = unique(deliveries.iter().map(|(r, s)| (s.as_str(), r.as_str())));
        let count = pairs.len();
        let new = records.push(first, codec::EVENT, |buf| {
            codec::encode_event(buf, original.committed_at, 0, Some(seq), 0, &pairs, &json);
        });
        routed.insert(seq);
        Ok(Some((
            Held {
                seq: new,
                committed_at: original.committed_at,
                event,
                json,
            },
            count,
        )))
    }

    /// Encodes how an attempt ended (nothing when it is settled already).
    fn outcome(
        &self,
        key: DeliveryKey,
        outcome: &Outcome,
        first: u64,
        records: &mut Records,
        settled: &mut FastSet<DeliveryKey>,
        dead: &mut Vec<NewDead>,
    ) -> Result<(), JournalError> {
        if settled.contains(&key)
            || !self
                .ledger
                .shared()
                .index()
                .is_pending(&key.sink, key.seq, &key.route)
        {
            // Already settled (e.g. buried by a reload meanwhile).
            return Ok(());
        }
        let what = match outcome {
            Outcome::Delivered => Settled::Delivered,
            Outcome::Retry { attempt, next_at } => Settled::Retry {
                next_at: *next_at,
                attempt: attempt.clone(),
            },
            Outcome::Dead { attempt, reason } => {
                let state = self
                    .ledger
                    .shared()
                    .index()
                    .state(&key.sink, key.seq, &key.route);
                let mut attempts = state.errors;
                attempts.extend(attempt.clone());
                self.dead_letter(&key, reason, attempts, self.held(key.seq), dead);
                Settled::Dead
            }
        };
        records.push(first, codec::OUTCOME, |buf| {
            codec::encode_outcome(buf, key.seq, &key.sink, &key.route, &what);
        });
        if !matches!(what, Settled::Retry { .. }) {
            settled.insert(key);
        }
        Ok(())
    }

    /// The dead letter of a delivery given up, made from its event as read.
    fn dead_letter(
        &self,
        key: &DeliveryKey,
        reason: &str,
        attempts: Vec<super::Attempt>,
        event: Result<Option<Held>, JournalError>,
        dead: &mut Vec<NewDead>,
    ) {
        match event {
            Ok(Some(held)) => dead.push(NewDead {
                key: Some((key.seq, key.sink.to_string(), key.route.to_string())),
                kind: DeadKind::Delivery {
                    route: key.route.to_string(),
                    sink: key.sink.to_string(),
                    reason: reason.to_owned(),
                    attempts,
                    event: Box::new((*held.event).clone()),
                },
            }),
            Ok(None) => {
                tracing::error!(sink = %key.sink, route = %key.route, "a delivery whose event is gone is given up without a dead letter");
            }
            Err(e) => {
                // Settled all the same: a damaged event cannot be delivered.
                tracing::error!(sink = %key.sink, route = %key.route, error = %e, "a delivery of a damaged event is given up without a dead letter");
            }
        }
    }

    /// Gives up every pending delivery of `sink` (a sink removed from the config).
    fn bury(
        &self,
        sink: &str,
        reason: &str,
        first: u64,
        records: &mut Records,
        settled: &mut FastSet<DeliveryKey>,
        dead: &mut Vec<NewDead>,
    ) -> Result<usize, JournalError> {
        // All of them, those only in the log too.
        while self.ledger.shared().refill(sink)? {}
        let found = self.ledger.shared().index().scan(sink, None, usize::MAX);
        // The events in one pass over the log, not one read each: a removed sink's backlog
        // can be millions of deliveries.
        let mut seqs: Vec<u64> = found
            .iter()
            .map(|f| f.seq)
            .filter(|seq| self.recent.get(*seq).is_none())
            .collect();
        seqs.dedup();
        let mut events: HashMap<u64, Result<Option<Held>, JournalError>> =
            self.ledger.shared().read(&seqs).into_iter().collect();
        let mut count = 0;
        let sink: Arc<str> = Arc::from(sink);
        for f in found {
            let key = DeliveryKey {
                sink: Arc::clone(&sink),
                seq: f.seq,
                route: f.route,
            };
            if settled.contains(&key) {
                continue;
            }
            let held = match self.recent.get(f.seq) {
                Some(held) => Ok(Some(held)),
                None => events.get(&f.seq).cloned().unwrap_or(Ok(None)),
            };
            self.dead_letter(&key, reason, f.state.errors, held, dead);
            records.push(first, codec::OUTCOME, |buf| {
                codec::encode_outcome(buf, key.seq, &key.sink, &key.route, &Settled::Dead);
            });
            settled.insert(key);
            count += 1;
        }
        events.clear();
        Ok(count)
    }

    /// Queues the selected dead deliveries again as new events (`REPLAYED`); the dead
    /// letters are removed once the log has them.
    fn replay(
        &self,
        filter: &super::DeadFilter,
        known_sinks: &[String],
        now: Millis,
        first: u64,
        records: &mut Records,
    ) -> Result<(super::ReplayReport, Vec<Held>), JournalError> {
        let letters = store::dead_letters(&self.db, filter)?;
        let mut report = super::ReplayReport::default();
        let mut held = Vec::new();
        let mut sinks = BTreeSet::new();
        for letter in letters {
            match &letter.kind {
                DeadKind::Rejected { .. } => {
                    report
                        .skipped
                        .push((letter.id, "a rejected input has no event to deliver".into()));
                }
                DeadKind::Delivery { sink, .. } if !known_sinks.contains(sink) => {
                    report
                        .skipped
                        .push((letter.id, format!("sink `{sink}` is not in the config")));
                }
                DeadKind::Delivery {
                    route, sink, event, ..
                } => {
                    let json = event.to_json();
                    let pair = [(sink.as_str(), route.as_str())];
                    let seq = records.push(first, codec::EVENT, |buf| {
                        codec::encode_event(buf, now, codec::REPLAYED, None, 0, &pair, &json);
                    });
                    held.push(Held {
                        seq,
                        committed_at: now,
                        event: Arc::new((**event).clone()),
                        json: Arc::from(json),
                    });
                    sinks.insert(sink.clone());
                    report.replayed.push(letter.id);
                }
            }
        }
        report.sinks = sinks.into_iter().collect();
        Ok((report, held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_routed_alike_share_their_tapped_deliveries() {
        let mut last = None;
        let first = alike(&mut last, &[("audit", "all"), ("chat", "adds")]);
        assert_eq!(
            &*first,
            [
                ("all".to_owned(), "audit".to_owned()),
                ("adds".to_owned(), "chat".to_owned())
            ]
        );
        let second = alike(&mut last, &[("audit", "all"), ("chat", "adds")]);
        assert!(Arc::ptr_eq(&first, &second), "the same list, not a copy");
        // Routed otherwise: a list of its own, which the next alike event shares.
        let other = alike(&mut last, &[("audit", "all")]);
        assert_eq!(&*other, [("all".to_owned(), "audit".to_owned())]);
        assert!(Arc::ptr_eq(&other, &alike(&mut last, &[("audit", "all")])));
        let swapped = alike(&mut last, &[("all", "audit")]);
        assert_eq!(&*swapped, [("audit".to_owned(), "all".to_owned())]);
        assert!(alike(&mut last, &[]).is_empty());
    }
}
