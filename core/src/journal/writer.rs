//! The journal's single writer: group commit of everything that changes the journal.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use redb::Database;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::error::During;
use super::recent::Held;
use super::records::now_millis;
use super::store::{Appended, Batch, DeliveryKey, Outcome};
use super::{JournalError, Live, MAX_BATCH};
use crate::event::Event;
use crate::ingest::{Committed, RejectedInput};
use crate::rules::RouteTable;

pub(super) enum Command {
    Append {
        event: Event,
        reply: oneshot::Sender<Result<Committed, JournalError>>,
    },
    AppendUnrouted {
        event: Event,
        reply: oneshot::Sender<Result<Committed, JournalError>>,
    },
    RouteLater {
        seq: u64,
        event: Option<Event>,
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
    Sweep {
        reply: oneshot::Sender<Result<usize, JournalError>>,
    },
    Stop {
        reply: oneshot::Sender<()>,
    },
}

pub(super) struct Writer {
    pub db: Arc<Database>,
    pub commands: mpsc::Receiver<Command>,
    pub routes: Arc<ArcSwap<RouteTable>>,
    pub live: Arc<Live>,
    pub notifies: super::Notifies,
    pub recent: Arc<super::recent::Recent>,
    pub tap: broadcast::Sender<Arc<super::Tapped>>,
    pub retention_ms: i64,
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

/// Keeps the first error of a batch.
fn note_failure<T>(failed: &mut Option<JournalError>, result: &Result<T, JournalError>) {
    if let (None, Err(e)) = (&failed, result) {
        *failed = Some(e.clone());
    }
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
            stop = self.apply(&mut commands);
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
                self.apply(&mut commands);
            }
        }
        self.apply(&mut commands);
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

    /// Applies `commands` in one transaction and answers them; returns a stop request.
    fn apply(&self, commands: &mut Vec<Command>) -> Option<oneshot::Sender<()>> {
        if commands.is_empty() {
            return None;
        }
        let started = Instant::now();
        let size = commands.len();
        let routes = self.routes.load();
        let now = now_millis();
        let mut replies = Vec::with_capacity(commands.len());
        let mut stop = None;
        let tapping = self.tap.receiver_count() > 0;
        let mut tapped = Vec::new();
        let mut appended = Vec::new();
        let result = (|| -> Result<_, JournalError> {
            let txn = self.db.begin_write()?;
            // A batch commits whole or not at all: after a failed write the transaction is
            // dropped, so no event is left stored without its deliveries.
            let mut failed = None;
            let done = {
                let mut batch = Batch::new(&txn)?;
                for command in commands.drain(..) {
                    match command {
                        Command::Append { event, reply } => {
                            let r = batch.append(&event, &routes, now);
                            note_failure(&mut failed, &r);
                            let r = r.map(|appended_as| match appended_as {
                                Appended::New { seq, json } => {
                                    let event = Arc::new(event);
                                    if tapping {
                                        let deliveries = routes
                                            .targets(&event)
                                            .iter()
                                            .map(|t| (t.route.to_owned(), t.sink.to_owned()))
                                            .collect();
                                        let event = event.clone();
                                        tapped.push(super::Tapped { event, deliveries });
                                    }
                                    appended.push(Held {
                                        seq,
                                        committed_at: now,
                                        event,
                                        json: Arc::from(json),
                                    });
                                    Committed::New
                                }
                                Appended::Duplicate => Committed::Duplicate,
                            });
                            replies.push(Reply::Append(reply, r));
                        }
                        Command::AppendUnrouted { event, reply } => {
                            let r = batch.append_unrouted(&event, now);
                            note_failure(&mut failed, &r);
                            let r = r.map(|appended_as| match appended_as {
                                Appended::New { .. } => Committed::New,
                                Appended::Duplicate => Committed::Duplicate,
                            });
                            replies.push(Reply::Append(reply, r));
                        }
                        Command::RouteLater {
                            seq,
                            event,
                            deliveries,
                            reply,
                        } => {
                            let r = route_later(
                                &mut batch,
                                seq,
                                event,
                                &deliveries,
                                tapping.then_some(&mut tapped),
                            );
                            note_failure(&mut failed, &r);
                            replies.push(Reply::Routed(reply, r));
                        }
                        Command::Reject { input, reply } => {
                            let r = batch.reject(input);
                            note_failure(&mut failed, &r);
                            replies.push(Reply::Unit(reply, r));
                        }
                        Command::Outcome { key, outcome, then } => {
                            let r = batch.outcome(&key, &outcome);
                            note_failure(&mut failed, &r);
                            replies.push(Reply::Then(then, r));
                        }
                        Command::Sweep { reply } => {
                            let r = batch.sweep(now, self.retention_ms, SWEEP_LIMIT);
                            note_failure(&mut failed, &r);
                            replies.push(Reply::Sweep(reply, r));
                        }
                        Command::Stop { reply } => stop = Some(reply),
                    }
                }
                if let Some(e) = failed {
                    return Err(e);
                }
                batch.finish()?
            };
            txn.commit()?;
            Ok(done)
        })()
        .during("committing a batch");

        metrics::histogram!("herald_journal_commit_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("herald_journal_batch_size").record(size as f64);
        match result {
            Ok(done) => {
                if let Some(n) = done.undelivered_events {
                    self.live.undelivered_events.store(n, Ordering::Relaxed);
                }
                if let Some(n) = done.undelivered_bytes {
                    self.live.undelivered_bytes.store(n, Ordering::Relaxed);
                }
                for (sink, depth) in &done.pending {
                    metrics::gauge!("herald_queue_depth", "sink" => sink.clone())
                        .set(*depth as f64);
                }
                // Before the workers are woken, so they find the new events in memory.
                self.recent.extend(appended);
                for sink in done.touched_sinks.keys() {
                    self.notifies.get(sink).notify_one();
                }
                for tapped in tapped {
                    let _ = self.tap.send(Arc::new(tapped));
                }
                for reply in replies {
                    match reply {
                        Reply::Append(tx, r) => {
                            let _ = tx.send(r);
                        }
                        Reply::Unit(tx, r) => {
                            let _ = tx.send(r);
                        }
                        Reply::Sweep(tx, r) => {
                            let _ = tx.send(r);
                        }
                        Reply::Routed(tx, r) => {
                            let _ = tx.send(r);
                        }
                        Reply::Then(then, r) => then.call(r),
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "journal commit failed; {size} commands refused");
                for reply in replies {
                    match reply {
                        Reply::Append(tx, _) => {
                            let _ = tx.send(Err(e.clone()));
                        }
                        Reply::Unit(tx, _) => {
                            let _ = tx.send(Err(e.clone()));
                        }
                        Reply::Sweep(tx, _) => {
                            let _ = tx.send(Err(e.clone()));
                        }
                        Reply::Routed(tx, _) => {
                            let _ = tx.send(Err(e.clone()));
                        }
                        Reply::Then(then, _) => then.call(Err(e.clone())),
                    }
                }
            }
        }
        stop
    }
}

/// Routes an unrouted event in the batch (docs/architecture.md §10), and puts it on the tap
/// when one is attached. The event is not added to the window of recent events, which holds
/// only increasing seqs: its deliveries read it from the journal.
fn route_later(
    batch: &mut Batch<'_>,
    seq: u64,
    event: Option<Event>,
    deliveries: &[(String, String)],
    tapped: Option<&mut Vec<super::Tapped>>,
) -> Result<Option<usize>, JournalError> {
    let json = match &event {
        Some(event) => Some(
            serde_json::to_string(event).map_err(|e| JournalError::io("encoding an event", e))?,
        ),
        None => None,
    };
    let pairs: Vec<(&str, &str)> = deliveries
        .iter()
        .map(|(route, sink)| (sink.as_str(), route.as_str()))
        .collect();
    let routed = batch.route_later(seq, json.as_deref(), &pairs)?;
    if routed.is_some()
        && let Some(tapped) = tapped
    {
        let event = match event {
            Some(event) => Some(event),
            None => batch.event(seq)?,
        };
        if let Some(event) = event {
            tapped.push(super::Tapped {
                event: Arc::new(event),
                deliveries: deliveries.to_vec(),
            });
        }
    }
    Ok(routed)
}
