//! The writer of the journal's format before the log (events, deliveries and their counters
//! in redb tables), kept only to write such journals in the upgrade's tests
//! (`upgrade.rs`, `tests.rs`). Nothing in the gateway uses it.

use std::collections::BTreeMap;

use redb::{ReadableTable, Table, WriteTransaction};

use super::JournalError;
use super::records::{DeadKind, DeadLetter, Millis, PendingState, encode_event, read_event};
use super::store::*;
use crate::event::Event;
use crate::rules::RouteTable;

fn dedup_key(source: &str, id: &str) -> String {
    format!("{source}\0{id}")
}

/// Adds `delta` to a counter in `meta`.
fn meta_add(
    table: &mut redb::Table<&'static str, u64>,
    key: &str,
    delta: i64,
) -> Result<u64, JournalError> {
    let current = meta_get(table, key)?;
    let next = current.saturating_add_signed(delta);
    table.insert(key, next)?;
    Ok(next)
}

/// Adds `delta` to `counts[name]`, allocating the name only the first time.
fn bump<N: Copy + Default + std::ops::AddAssign>(
    counts: &mut BTreeMap<String, N>,
    name: &str,
    delta: N,
) {
    match counts.get_mut(name) {
        Some(count) => *count += delta,
        None => {
            let mut count = N::default();
            count += delta;
            counts.insert(name.to_owned(), count);
        }
    }
}

/// The counters a batch changed, as committed: the writer mirrors them without reading the
/// journal again.
#[derive(Debug, Default)]
pub struct Finished {
    pub undelivered_events: Option<u64>,
    pub undelivered_bytes: Option<u64>,
    /// Pending deliveries per sink whose count changed.
    pub pending: BTreeMap<String, u64>,
}

/// The writes of one group commit, all in one transaction. The tables are opened once per
/// batch, not once per command.
pub struct Batch<'t> {
    txn: &'t WriteTransaction,
    /// Opened by the first command that needs it: most batches never do.
    unrouted: Option<Table<'t, u64, ()>>,
    events: Table<'t, u64, &'static [u8]>,
    dedup: Table<'t, &'static str, u64>,
    pending: Table<'t, (&'static str, u64, &'static str), &'static [u8]>,
    refs: Table<'t, u64, (u32, u32)>,
    dead: Table<'t, u64, &'static [u8]>,
    meta: Table<'t, &'static str, u64>,
    next_seq: u64,
    next_dead: u64,
    /// Pending deliveries added per sink, to wake the sink workers after the commit.
    pub touched_sinks: BTreeMap<String, u64>,
    pending_delta: BTreeMap<String, i64>,
    events_delta: i64,
    bytes_delta: i64,
}

/// What [`Batch::append`] did with an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Stored under this seq, as this JSON.
    New { seq: u64, json: String },
    /// Seen within the retention window: not stored again.
    Duplicate,
}

impl<'t> Batch<'t> {
    pub fn new(txn: &'t WriteTransaction) -> Result<Self, JournalError> {
        let meta = txn.open_table(META)?;
        let next_seq = meta_get(&meta, NEXT_SEQ)?.max(1);
        let next_dead = meta_get(&meta, NEXT_DEAD)?.max(1);
        Ok(Batch {
            txn,
            unrouted: None,
            events: txn.open_table(EVENTS)?,
            dedup: txn.open_table(DEDUP)?,
            pending: txn.open_table(PENDING)?,
            refs: txn.open_table(REFS)?,
            dead: txn.open_table(DEAD)?,
            meta,
            next_seq,
            next_dead,
            touched_sinks: BTreeMap::new(),
            pending_delta: BTreeMap::new(),
            events_delta: 0,
            bytes_delta: 0,
        })
    }

    /// Appends an event unless `(source, id)` was seen within the retention window, and
    /// records the deliveries its routes decide on.
    pub fn append(
        &mut self,
        event: &Event,
        routes: &RouteTable,
        now: Millis,
    ) -> Result<Appended, JournalError> {
        let Some((seq, json)) = self.store_new(event, now)? else {
            return Ok(Appended::Duplicate);
        };
        let targets = routes.targets(event);
        let pairs: Vec<(&str, &str)> = targets.iter().map(|t| (t.sink, t.route)).collect();
        let size = u32::try_from(json.len()).unwrap_or(u32::MAX);
        self.add_deliveries(seq, size, &pairs)?;
        Ok(Appended::New { seq, json })
    }

    /// Stores `event` under a new seq with its JSON, unless `(source, id)` was seen within
    /// the retention window (`None`).
    fn store_new(
        &mut self,
        event: &Event,
        now: Millis,
    ) -> Result<Option<(u64, String)>, JournalError> {
        let key = dedup_key(&event.source, &event.id);
        // One B-tree walk for the common case, a new event: claim the key for the next seq,
        // and put the first one's seq back if the event was seen already.
        let seq = self.next_seq;
        let seen = self
            .dedup
            .insert(key.as_str(), seq)?
            .map(|first| first.value());
        if let Some(first) = seen {
            self.dedup.insert(key.as_str(), first)?;
            return Ok(None);
        }
        let json = event.to_json();
        let stored = self.store_event(&json, now)?;
        debug_assert_eq!(stored, seq);
        Ok(Some((seq, json)))
    }

    /// Like [`Batch::append`], but the event waits unrouted: it counts as undelivered and
    /// `refs` holds `(0, size)` for it, so retention keeps it, until
    /// [`Batch::route_later`].
    pub fn append_unrouted(
        &mut self,
        event: &Event,
        now: Millis,
    ) -> Result<Appended, JournalError> {
        let Some((seq, json)) = self.store_new(event, now)? else {
            return Ok(Appended::Duplicate);
        };
        let size = u32::try_from(json.len()).unwrap_or(u32::MAX);
        self.unrouted_table()?.insert(seq, ())?;
        self.refs.insert(seq, (0, size))?;
        self.events_delta += 1;
        self.bytes_delta += i64::from(size);
        Ok(Appended::New { seq, json })
    }

    fn unrouted_table(&mut self) -> Result<&mut Table<'t, u64, ()>, JournalError> {
        if self.unrouted.is_none() {
            self.unrouted = Some(self.txn.open_table(UNROUTED)?);
        }
        match self.unrouted.as_mut() {
            Some(table) => Ok(table),
            None => Err(JournalError::io("opening the unrouted events", "no table")),
        }
    }

    /// Stores the event's JSON under a new seq; its length is what the event counts for
    /// against `queue.max_bytes`.
    fn store_event(&mut self, json: &str, now: Millis) -> Result<u64, JournalError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let value = encode_event(now, json);
        self.events.insert(seq, value.as_slice())?;
        Ok(seq)
    }

    /// Records `(sink, route)` deliveries of the stored event `seq`; returns how many.
    fn add_deliveries(
        &mut self,
        seq: u64,
        size: u32,
        pairs: &[(&str, &str)],
    ) -> Result<u32, JournalError> {
        if pairs.is_empty() {
            return Ok(0);
        }
        let mut count = 0u32;
        for (sink, route) in pairs {
            // The same (route, sink) twice in one route list is one delivery.
            if self
                .pending
                .insert((*sink, seq, *route), &[][..])?
                .is_none()
            {
                count += 1;
                bump(&mut self.touched_sinks, sink, 1);
                bump(&mut self.pending_delta, sink, 1);
            }
        }
        self.refs.insert(seq, (count, size))?;
        self.events_delta += 1;
        self.bytes_delta += i64::from(size);
        Ok(count)
    }

    /// Records the outcome of one attempt.
    pub fn outcome(&mut self, key: &DeliveryKey, outcome: &Outcome) -> Result<(), JournalError> {
        let pkey = (&*key.sink, key.seq, &*key.route);
        // Taken out in one B-tree walk; a retry puts it back with its new state.
        let Some(state) = self
            .pending
            .remove(pkey)?
            .map(|v| PendingState::decode(v.value()))
        else {
            // Already settled (e.g. purged or replayed by an operator meanwhile).
            return Ok(());
        };
        match outcome {
            Outcome::Retry { attempt, next_at } => {
                let mut state = state;
                state.attempts += 1;
                state.next_at = *next_at;
                state.push_error(attempt.clone());
                self.pending.insert(pkey, state.encode().as_slice())?;
            }
            Outcome::Delivered => {
                self.settle(key)?;
            }
            Outcome::Dead { attempt, reason } => {
                let mut attempts = state.errors;
                attempts.extend(attempt.clone());
                let event = match self.events.get(key.seq)? {
                    Some(stored) => match read_event(key.seq, stored.value()) {
                        Ok((_, event, _)) => Some(event),
                        Err(e) => {
                            // Settled all the same: a damaged event cannot be delivered.
                            tracing::error!(sink = %key.sink, route = %key.route, error = %e, "a delivery of a damaged event is given up without a dead letter");
                            None
                        }
                    },
                    None => None,
                };
                if let Some(event) = event {
                    self.dead_letter(DeadKind::Delivery {
                        route: key.route.to_string(),
                        sink: key.sink.to_string(),
                        reason: reason.clone(),
                        attempts,
                        event: Box::new(event),
                    })?;
                }
                self.settle(key)?;
            }
        }
        Ok(())
    }

    /// One delivery of `key.seq` is finished (delivered or dead).
    fn settle(&mut self, key: &DeliveryKey) -> Result<(), JournalError> {
        bump(&mut self.pending_delta, &key.sink, -1);
        // Most events have one delivery: taking the row out is then the only walk.
        let Some((left, size)) = self.refs.remove(key.seq)?.map(|v| v.value()) else {
            return Ok(());
        };
        if left <= 1 {
            self.events_delta -= 1;
            self.bytes_delta -= i64::from(size);
        } else {
            self.refs.insert(key.seq, (left - 1, size))?;
        }
        Ok(())
    }

    fn dead_letter(&mut self, kind: DeadKind) -> Result<(), JournalError> {
        let id = self.next_dead;
        self.next_dead += 1;
        let letter = DeadLetter {
            id,
            created: chrono::Utc::now(),
            kind,
        };
        let value = serde_json::to_vec(&letter)
            .map_err(|e| JournalError::io("encoding a dead letter", e))?;
        self.dead.insert(id, value.as_slice())?;
        if let Some(sink) = letter.sink() {
            metrics::counter!("herald_dead_letters_total", "sink" => sink.to_owned()).increment(1);
        } else {
            metrics::counter!("herald_rejected_inputs_total").increment(1);
        }
        Ok(())
    }

    /// Writes the counters changed by this batch.
    pub fn finish(mut self) -> Result<Finished, JournalError> {
        let meta = &mut self.meta;
        meta.insert(NEXT_SEQ, self.next_seq)?;
        meta.insert(NEXT_DEAD, self.next_dead)?;
        let mut done = Finished::default();
        if self.events_delta != 0 {
            done.undelivered_events = Some(meta_add(meta, UNDELIVERED_EVENTS, self.events_delta)?);
        }
        if self.bytes_delta != 0 {
            done.undelivered_bytes = Some(meta_add(meta, UNDELIVERED_BYTES, self.bytes_delta)?);
        }
        for (sink, delta) in &self.pending_delta {
            if *delta != 0 {
                let depth = meta_add(meta, &format!("{PENDING_PREFIX}{sink}"), *delta)?;
                done.pending.insert(sink.clone(), depth);
            }
        }
        Ok(done)
    }
}
