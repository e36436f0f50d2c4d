//! The journal's tables in redb and the operations on them. Everything here is synchronous;
//! the writer thread and the CLI call it, never the async runtime directly.
//!
//! | table | key | value |
//! |---|---|---|
//! | `events` | seq | commit time + CloudEvents JSON |
//! | `dedup` | `source \0 id` | seq (duplicate suppression within the retention window) |
//! | `pending` | `(sink, seq, route)` | retry state (empty when fresh) |
//! | `refs` | seq | (deliveries left, event size) — an event is undelivered while it has any |
//! | `dead` | dead-letter id | dead letter JSON |
//! | `meta` | name | counters: next seq, undelivered events/bytes, pending per sink |
//! | `state` | name | small durable values of other parts (Google channels, registrations) |
//! | `unrouted` | seq | nothing: the event waits to be routed (`refs` holds `(0, size)` for it) |

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, TableDefinition,
    WriteTransaction,
};

use super::JournalError;
use super::recent::{Held, Recent};
use super::records::{
    Attempt, DeadKind, DeadLetter, Millis, PendingState, decode_event, encode_event, read_event,
};
use crate::event::Event;
use crate::ingest::RejectedInput;
use crate::queue::ForgetReport;
use crate::rules::RouteTable;

pub(super) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const DEDUP: TableDefinition<&str, u64> = TableDefinition::new("dedup");
const PENDING: TableDefinition<(&str, u64, &str), &[u8]> = TableDefinition::new("pending");
const REFS: TableDefinition<u64, (u32, u32)> = TableDefinition::new("refs");
pub(super) const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
const UNROUTED: TableDefinition<u64, ()> = TableDefinition::new("unrouted");

/// `events` or `dead`, for tests that write a damaged record.
#[cfg(test)]
pub(super) type RawTable = TableDefinition<'static, u64, &'static [u8]>;

const NEXT_SEQ: &str = "next_seq";
const NEXT_DEAD: &str = "next_dead";
const UNDELIVERED_EVENTS: &str = "undelivered_events";
const UNDELIVERED_BYTES: &str = "undelivered_bytes";
const PENDING_PREFIX: &str = "pending/";

/// The file inside `queue.path`.
pub const FILE_NAME: &str = "journal.redb";

/// Memory redb may use to cache journal pages. Its default, 1 GiB, would let the gateway's
/// memory creep up to that under steady load; the working set (the newest pages of each
/// table) is far smaller, and the file itself stays in the OS page cache.
const CACHE_BYTES: usize = 4 * 1024 * 1024;

/// A delivery waiting to be sent.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryKey {
    pub sink: String,
    pub seq: u64,
    pub route: String,
}

/// A pending delivery with its event, as the sink workers read it.
#[derive(Clone, Debug)]
pub struct PendingItem {
    pub key: DeliveryKey,
    pub state: PendingState,
    pub committed_at: Millis,
    pub event: Arc<Event>,
    /// `event` as CloudEvents JSON, exactly as stored: the sinks send it as is.
    pub json: Arc<str>,
    /// Whether the caller may attempt it once `state.next_at` has come by its own clock.
    /// Always on an engine without leases (everything a worker reads is its own). On a
    /// shared engine only the deliveries the scan claimed: one it returned unclaimed (not
    /// due by the database's clock when it scanned) is looked at again from `next_at` on,
    /// never attempted without a claim, or two gateways would both send it.
    pub claimed: bool,
}

/// How one attempt ended, as recorded.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Delivered,
    /// Try again at `next_at`.
    Retry {
        attempt: Attempt,
        next_at: Millis,
    },
    /// Give up: move to the dead letters.
    Dead {
        attempt: Option<Attempt>,
        reason: String,
    },
}

/// Counters the gateway reports and limits ingest by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub undelivered_events: u64,
    pub undelivered_bytes: u64,
    pub pending: BTreeMap<String, u64>,
    pub dead_letters: u64,
}

/// Which dead letters a `dlq` command works on.
#[derive(Clone, Debug, Default)]
pub struct DeadFilter {
    pub ids: Vec<u64>,
    pub sink: Option<String>,
    pub route: Option<String>,
    /// Only those created before this time.
    pub before: Option<Millis>,
}

impl DeadFilter {
    fn matches(&self, d: &DeadLetter) -> bool {
        (self.ids.is_empty() || self.ids.contains(&d.id))
            && self.sink.as_deref().is_none_or(|s| d.sink() == Some(s))
            && self.route.as_deref().is_none_or(|r| d.route() == Some(r))
            && self.before.is_none_or(|b| d.created.timestamp_millis() < b)
    }
}

pub fn open(dir: &Path) -> Result<Database, JournalError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| JournalError::io(format!("creating {}", dir.display()), e))?;
    let path = dir.join(FILE_NAME);
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(&path)
        .map_err(|e| super::error::opening(&path, e))?;
    let txn = db.begin_write()?;
    {
        // Create every table so readers never meet a missing one.
        txn.open_table(EVENTS)?;
        txn.open_table(DEDUP)?;
        txn.open_table(PENDING)?;
        txn.open_table(REFS)?;
        txn.open_table(DEAD)?;
        txn.open_table(META)?;
        txn.open_table(STATE)?;
        txn.open_table(UNROUTED)?;
        txn.open_table(DEAD_KEYS)?;
    }
    txn.commit()?;
    Ok(db)
}

/// An event's JSON, as stored. Serializing cannot fail for an [`Event`]; if it did, it
/// would be reported as an I/O error of the operation (HTTP 500), never as a damaged journal.
fn event_json(event: &Event) -> Result<String, JournalError> {
    serde_json::to_string(event).map_err(|e| JournalError::io("encoding an event", e))
}

fn dedup_key(source: &str, id: &str) -> String {
    format!("{source}\0{id}")
}

fn meta_get(table: &impl ReadableTable<&'static str, u64>, key: &str) -> Result<u64, JournalError> {
    Ok(table.get(key)?.map(|v| v.value()).unwrap_or(0))
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
    /// Sinks that got new pending deliveries (their workers are woken).
    pub touched_sinks: BTreeMap<String, u64>,
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
        let json = event_json(event)?;
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

    /// Routes the unrouted event `seq`: replaces its JSON with `json` if given, records its
    /// `(sink, route)` deliveries and takes it off the unrouted events. `None` when it is
    /// not unrouted (routed before): nothing changes, so it is routed exactly once.
    pub fn route_later(
        &mut self,
        seq: u64,
        json: Option<&str>,
        pairs: &[(&str, &str)],
    ) -> Result<Option<usize>, JournalError> {
        if self.unrouted_table()?.remove(seq)?.is_none() {
            return Ok(None);
        }
        let old_size = match self.refs.remove(seq)?.map(|v| v.value()) {
            Some((_, size)) => size,
            None => 0,
        };
        self.events_delta -= 1;
        self.bytes_delta -= i64::from(old_size);
        let size = match json {
            Some(json) => {
                let committed_at = match self.events.get(seq)? {
                    Some(stored) => decode_event(stored.value()).map_or(0, |(at, _)| at),
                    None => 0,
                };
                let value = encode_event(committed_at, json);
                self.events.insert(seq, value.as_slice())?;
                u32::try_from(json.len()).unwrap_or(u32::MAX)
            }
            None => old_size,
        };
        let count = self.add_deliveries(seq, size, pairs)?;
        Ok(Some(usize::try_from(count).unwrap_or(usize::MAX)))
    }

    /// The stored event `seq`, if it is there and readable.
    pub fn event(&self, seq: u64) -> Result<Option<Event>, JournalError> {
        Ok(match self.events.get(seq)? {
            Some(stored) => read_event(seq, stored.value()).ok().map(|(_, e, _)| e),
            None => None,
        })
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
        let pkey = (key.sink.as_str(), key.seq, key.route.as_str());
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
                        route: key.route.clone(),
                        sink: key.sink.clone(),
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

    pub fn reject(&mut self, input: RejectedInput) -> Result<(), JournalError> {
        self.dead_letter(DeadKind::Rejected { input })
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

    /// Removes events older than `retention` whose deliveries are all finished, with their
    /// duplicate-suppression keys. Returns how many were removed; at most `limit` per call.
    pub fn sweep(
        &mut self,
        now: Millis,
        retention_ms: Millis,
        limit: usize,
    ) -> Result<usize, JournalError> {
        let mut expired = Vec::new();
        for entry in self.events.range(0u64..)? {
            let (seq, value) = entry?;
            let Some((committed_at, json)) = decode_event(value.value()) else {
                continue;
            };
            if committed_at > now - retention_ms || expired.len() >= limit {
                break;
            }
            if self.refs.get(seq.value())?.is_some() {
                continue; // still being delivered: kept however old
            }
            let event: Option<Event> = serde_json::from_slice(json).ok();
            expired.push((seq.value(), event.map(|e| dedup_key(&e.source, &e.id))));
        }
        for (seq, key) in &expired {
            self.events.remove(*seq)?;
            if let Some(key) = key {
                self.dedup.remove(key.as_str())?;
            }
        }
        Ok(expired.len())
    }

    /// Writes the counters changed by this batch.
    pub fn finish(mut self) -> Result<Finished, JournalError> {
        let meta = &mut self.meta;
        meta.insert(NEXT_SEQ, self.next_seq)?;
        meta.insert(NEXT_DEAD, self.next_dead)?;
        let mut done = Finished {
            touched_sinks: self.touched_sinks,
            ..Finished::default()
        };
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

// ---- reads -----------------------------------------------------------------------------

/// What [`scan_pending`] read.
#[derive(Debug, Default)]
pub(super) struct Scanned {
    pub items: Vec<PendingItem>,
    /// Pending deliveries whose event cannot be read ([`JournalError::Corrupt`]): skipped, as
    /// they cannot be delivered, so that the sink's other deliveries go on.
    pub damaged: Vec<(DeliveryKey, JournalError)>,
}

/// Up to `limit` pending deliveries of `sink` after `after` (exclusive), in journal order.
/// Events still in `recent` are taken from there instead of being read and parsed again.
pub(super) fn scan_pending(
    db: &Database,
    recent: &Recent,
    sink: &str,
    after: Option<&DeliveryKey>,
    limit: usize,
) -> Result<Scanned, JournalError> {
    let txn = db.begin_read()?;
    let pending = txn.open_table(PENDING)?;
    let events = txn.open_table(EVENTS)?;
    let start = match after {
        Some(k) => (sink, k.seq, k.route.as_str()),
        None => (sink, 0, ""),
    };
    let mut items = Vec::new();
    let mut damaged = Vec::new();
    for entry in pending.range(start..)? {
        let (key, value) = entry?;
        let (s, seq, route) = key.value();
        if s != sink || items.len() >= limit {
            break;
        }
        if after.is_some_and(|a| a.seq == seq && a.route == route) {
            continue;
        }
        let key = || DeliveryKey {
            sink: s.to_owned(),
            seq,
            route: route.to_owned(),
        };
        let Held {
            committed_at,
            event,
            json,
            ..
        } = match recent.get(seq) {
            Some(held) => held,
            None => {
                let Some(stored) = events.get(seq)? else {
                    let missing = "the record is missing, yet a delivery of it is pending";
                    damaged.push((
                        key(),
                        JournalError::corrupt(format!("event {seq}"), missing),
                    ));
                    continue;
                };
                let (committed_at, event, json) = match read_event(seq, stored.value()) {
                    Ok(read) => read,
                    Err(e) => {
                        damaged.push((key(), e));
                        continue;
                    }
                };
                // Valid JSON is UTF-8; the fallback only guards against a damaged file.
                let json = match std::str::from_utf8(json) {
                    Ok(text) => Arc::from(text),
                    Err(_) => Arc::from(event.to_json()),
                };
                Held {
                    seq,
                    committed_at,
                    event: Arc::new(event),
                    json,
                }
            }
        };
        items.push(PendingItem {
            key: key(),
            state: PendingState::decode(value.value()),
            committed_at,
            event,
            json,
            claimed: true,
        });
    }
    Ok(Scanned { items, damaged })
}

/// What [`scan_unrouted`] read: claimed events `(seq, committed_at, event)`, and claimed
/// seqs whose event cannot be read.
pub(super) type ScannedUnrouted = (Vec<(u64, Millis, Event)>, Vec<(u64, JournalError)>);

/// Unrouted events in seq order, each offered to `take` (which claims it or not) until
/// `limit` are taken. A damaged event is reported and skipped.
pub(super) fn scan_unrouted(
    db: &Database,
    limit: usize,
    mut take: impl FnMut(u64) -> bool,
) -> Result<ScannedUnrouted, JournalError> {
    let txn = db.begin_read()?;
    let unrouted = txn.open_table(UNROUTED)?;
    let events = txn.open_table(EVENTS)?;
    let mut items = Vec::new();
    let mut damaged = Vec::new();
    for entry in unrouted.iter()? {
        if items.len() >= limit {
            break;
        }
        let seq = entry?.0.value();
        if !take(seq) {
            continue;
        }
        let Some(stored) = events.get(seq)? else {
            let missing = "the record is missing, yet it waits to be routed";
            damaged.push((seq, JournalError::corrupt(format!("event {seq}"), missing)));
            continue;
        };
        match read_event(seq, stored.value()) {
            Ok((committed_at, event, _)) => items.push((seq, committed_at, event)),
            Err(e) => damaged.push((seq, e)),
        }
    }
    Ok((items, damaged))
}

pub fn stats(db: &Database) -> Result<Stats, JournalError> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    let dead = txn.open_table(DEAD)?;
    let mut stats = Stats {
        undelivered_events: meta_get(&meta, UNDELIVERED_EVENTS)?,
        undelivered_bytes: meta_get(&meta, UNDELIVERED_BYTES)?,
        dead_letters: dead.len()?,
        ..Stats::default()
    };
    for entry in meta.range(PENDING_PREFIX..)? {
        let (key, value) = entry?;
        let Some(sink) = key.value().strip_prefix(PENDING_PREFIX) else {
            break;
        };
        stats.pending.insert(sink.to_owned(), value.value());
    }
    Ok(stats)
}

/// At most this many pending rows are read for [`next_retries`]: the overview polls it, and
/// a backlog larger than this is a problem the queue's depth shows already.
pub const NEXT_RETRY_SCAN: usize = 100_000;

/// Per sink, the earliest `next_at` of the deliveries waiting for a retry (attempted at least
/// once), over the first [`NEXT_RETRY_SCAN`] pending rows (docs/architecture.md §12). A fresh
/// delivery's row is empty and is not decoded.
pub fn next_retries(db: &Database) -> Result<BTreeMap<String, Millis>, JournalError> {
    let txn = db.begin_read()?;
    let pending = txn.open_table(PENDING)?;
    let mut out: BTreeMap<String, Millis> = BTreeMap::new();
    for entry in pending.iter()?.take(NEXT_RETRY_SCAN) {
        let (key, value) = entry?;
        if value.value().is_empty() {
            continue;
        }
        let state = PendingState::decode(value.value());
        if state.attempts == 0 {
            continue;
        }
        let (sink, _, _) = key.value();
        match out.get_mut(sink) {
            Some(at) => *at = (*at).min(state.next_at),
            None => {
                out.insert(sink.to_owned(), state.next_at);
            }
        }
    }
    Ok(out)
}

// ---- dead letters ----------------------------------------------------------------------

pub fn dead_letters(db: &Database, filter: &DeadFilter) -> Result<Vec<DeadLetter>, JournalError> {
    let txn = db.begin_read()?;
    let dead = txn.open_table(DEAD)?;
    let mut out = Vec::new();
    for entry in dead.iter()? {
        let (id, value) = entry?;
        let letter = match DeadLetter::decode(id.value(), value.value()) {
            Ok(letter) => letter,
            Err(e) => {
                // Listed without it, so that the others can still be listed and purged.
                tracing::warn!(error = %e, "a dead letter cannot be read; it is left out");
                continue;
            }
        };
        if filter.matches(&letter) {
            out.push(letter);
        }
    }
    Ok(out)
}

/// The dead letter `id`, if there is one; [`JournalError::Corrupt`] if it cannot be read.
pub fn dead_letter(db: &Database, id: u64) -> Result<Option<DeadLetter>, JournalError> {
    let txn = db.begin_read()?;
    let dead = txn.open_table(DEAD)?;
    let Some(stored) = dead.get(id)? else {
        return Ok(None);
    };
    DeadLetter::decode(id, stored.value()).map(Some)
}

/// What `dlq replay` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplayReport {
    /// Dead letters queued for delivery again.
    pub replayed: Vec<u64>,
    /// Dead letters left where they are, with why (a rejected input, a sink no longer in the
    /// config).
    pub skipped: Vec<(u64, String)>,
    /// Sinks that got new deliveries.
    #[serde(skip)]
    pub sinks: Vec<String>,
}

/// Queues the matching dead deliveries again, as fresh deliveries to the same `(route,
/// sink)`, and removes them from the dead letters. `known_sinks` are the sinks of the config
/// in force; a dead letter for another sink is left alone.
pub fn replay(
    db: &Database,
    filter: &DeadFilter,
    known_sinks: &[String],
) -> Result<ReplayReport, JournalError> {
    let letters = dead_letters(db, filter)?;
    let txn = db.begin_write()?;
    let mut report = ReplayReport::default();
    {
        let mut batch = Batch::new(&txn)?;
        let now = super::records::now_millis();
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
                    let json = event_json(event)?;
                    let seq = batch.store_event(&json, now)?;
                    let size = u32::try_from(json.len()).unwrap_or(u32::MAX);
                    batch.add_deliveries(seq, size, &[(sink.as_str(), route.as_str())])?;
                    batch.dead.remove(letter.id)?;
                    report.replayed.push(letter.id);
                }
            }
        }
        report.sinks = batch.finish()?.touched_sinks.into_keys().collect();
    }
    txn.commit()?;
    Ok(report)
}

/// Moves every pending delivery of `sink` to the dead letters; returns how many.
pub fn bury(db: &Database, sink: &str, reason: &str) -> Result<usize, JournalError> {
    let keys: Vec<DeliveryKey> = {
        let txn = db.begin_read()?;
        let pending = txn.open_table(PENDING)?;
        let mut keys = Vec::new();
        for entry in pending.range((sink, 0u64, "")..)? {
            let (key, _) = entry?;
            let (s, seq, route) = key.value();
            if s != sink {
                break;
            }
            keys.push(DeliveryKey {
                sink: s.to_owned(),
                seq,
                route: route.to_owned(),
            });
        }
        keys
    };
    let txn = db.begin_write()?;
    {
        let mut batch = Batch::new(&txn)?;
        let dead = Outcome::Dead {
            attempt: None,
            reason: reason.to_owned(),
        };
        for key in &keys {
            batch.outcome(key, &dead)?;
        }
        batch.finish()?;
    }
    txn.commit()?;
    Ok(keys.len())
}

pub fn put_state(db: &Database, key: &str, value: Option<&[u8]>) -> Result<(), JournalError> {
    let txn = db.begin_write()?;
    {
        let mut state = txn.open_table(STATE)?;
        match value {
            Some(v) => {
                state.insert(key, v)?;
            }
            None => {
                state.remove(key)?;
            }
        }
    }
    Ok(txn.commit()?)
}

pub fn get_state(db: &Database, key: &str) -> Result<Option<Vec<u8>>, JournalError> {
    let txn = db.begin_read()?;
    let state = txn.open_table(STATE)?;
    Ok(state.get(key)?.map(|v| v.value().to_vec()))
}

pub fn list_state(db: &Database, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, JournalError> {
    let txn = db.begin_read()?;
    let state = txn.open_table(STATE)?;
    let mut out = Vec::new();
    for entry in state.range(prefix..)? {
        let (k, v) = entry?;
        if !k.value().starts_with(prefix) {
            break;
        }
        out.push((k.value().to_owned(), v.value().to_vec()));
    }
    Ok(out)
}

/// Removes the matching dead letters; returns how many.
pub fn purge(db: &Database, filter: &DeadFilter) -> Result<usize, JournalError> {
    let ids: Vec<u64> = dead_letters(db, filter)?
        .into_iter()
        .map(|d| d.id)
        .collect();
    let txn = db.begin_write()?;
    {
        let mut dead = txn.open_table(DEAD)?;
        for id in &ids {
            dead.remove(*id)?;
        }
    }
    txn.commit()?;
    Ok(ids.len())
}

/// `herald forget`: removes what names `user_id` (rules in [`crate::queue::forget`]) in one
/// write transaction: events with their pending deliveries, unrouted marks, references and
/// duplicate keys (the counters follow), dead letters, rejected inputs, cache entries.
pub fn forget(db: &Database, user_id: &str) -> Result<ForgetReport, JournalError> {
    use crate::queue::forget as rules;
    let mut report = ForgetReport::default();
    let txn = db.begin_write()?;
    {
        let mut batch = Batch::new(&txn)?;
        // Events: read first, removed after (a table is not changed while it is iterated).
        let mut doomed: Vec<(u64, Option<String>)> = Vec::new();
        for entry in batch.events.iter()? {
            let (seq, value) = entry?;
            let Some((_, json)) = decode_event(value.value()) else {
                continue;
            };
            if rules::event_json_names_user(json, user_id) {
                let event: Option<Event> = serde_json::from_slice(json).ok();
                doomed.push((seq.value(), event.map(|e| dedup_key(&e.source, &e.id))));
            }
        }
        let seqs: BTreeSet<u64> = doomed.iter().map(|(seq, _)| *seq).collect();
        if !seqs.is_empty() {
            let mut pending_keys: Vec<(String, u64, String)> = Vec::new();
            for entry in batch.pending.iter()? {
                let (key, _) = entry?;
                let (sink, seq, route) = key.value();
                if seqs.contains(&seq) {
                    pending_keys.push((sink.to_owned(), seq, route.to_owned()));
                }
            }
            for (sink, seq, route) in &pending_keys {
                batch
                    .pending
                    .remove((sink.as_str(), *seq, route.as_str()))?;
                bump(&mut batch.pending_delta, sink, -1);
            }
            report.deliveries_dropped = pending_keys.len() as u64;
            for (seq, dedup) in &doomed {
                batch.events.remove(*seq)?;
                if let Some(key) = dedup {
                    batch.dedup.remove(key.as_str())?;
                }
                if let Some((_, size)) = batch.refs.remove(*seq)?.map(|v| v.value()) {
                    batch.events_delta -= 1;
                    batch.bytes_delta -= i64::from(size);
                }
                batch.unrouted_table()?.remove(*seq)?;
            }
            report.events = doomed.len() as u64;
        }
        // Dead letters and rejected inputs.
        let mut dead_ids = Vec::new();
        for entry in batch.dead.iter()? {
            let (id, value) = entry?;
            let Ok(letter) = DeadLetter::decode(id.value(), value.value()) else {
                continue;
            };
            match &letter.kind {
                DeadKind::Delivery { event, .. } if rules::event_names_user(event, user_id) => {
                    report.dead_letters += 1;
                    dead_ids.push(letter.id);
                }
                DeadKind::Rejected { input } if rules::rejected_names_user(input, user_id) => {
                    report.rejected += 1;
                    dead_ids.push(letter.id);
                }
                _ => {}
            }
        }
        for id in dead_ids {
            batch.dead.remove(id)?;
        }
        // The enrichment cache.
        let mut state = txn.open_table(STATE)?;
        let mut keys = Vec::new();
        for entry in state.range(rules::CACHE_PREFIX..)? {
            let (k, v) = entry?;
            if !k.value().starts_with(rules::CACHE_PREFIX) {
                break;
            }
            if rules::cache_entry_names_user(k.value(), v.value(), user_id) {
                keys.push(k.value().to_owned());
            }
        }
        for key in &keys {
            state.remove(key.as_str())?;
        }
        report.cache_entries = keys.len() as u64;
        batch.finish()?;
    }
    txn.commit()?;
    Ok(report)
}

// ---- the redb side of the log engine (docs/architecture.md §10.3) ------------------------

/// Dead letters by the delivery they came from, so that writing one again (the log's append
/// after it failed, and the delivery died again) does not make a second one.
const DEAD_KEYS: TableDefinition<(u64, &str, &str), u64> = TableDefinition::new("dead_keys");

/// A dead letter to write, with the delivery `(seq, sink, route)` it settles, if any.
pub struct NewDead {
    pub key: Option<(u64, String, String)>,
    pub kind: DeadKind,
}

/// Writes dead letters and rejected inputs in one transaction, before the log records the
/// deliveries as settled: idempotent by delivery, so a crash between the two stores neither
/// loses a dead letter nor doubles it.
pub fn write_dead(db: &Database, letters: Vec<NewDead>) -> Result<(), JournalError> {
    if letters.is_empty() {
        return Ok(());
    }
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        let mut dead = txn.open_table(DEAD)?;
        let mut keys = txn.open_table(DEAD_KEYS)?;
        let mut next = meta_get(&meta, NEXT_DEAD)?.max(1);
        for letter in letters {
            if let Some((seq, sink, route)) = &letter.key {
                if keys.get((*seq, sink.as_str(), route.as_str()))?.is_some() {
                    continue;
                }
                keys.insert((*seq, sink.as_str(), route.as_str()), next)?;
            }
            let letter = DeadLetter {
                id: next,
                created: chrono::Utc::now(),
                kind: letter.kind,
            };
            next += 1;
            let value = serde_json::to_vec(&letter)
                .map_err(|e| JournalError::io("encoding a dead letter", e))?;
            dead.insert(letter.id, value.as_slice())?;
            if let Some(sink) = letter.sink() {
                metrics::counter!("herald_dead_letters_total", "sink" => sink.to_owned())
                    .increment(1);
            } else {
                metrics::counter!("herald_rejected_inputs_total").increment(1);
            }
        }
        meta.insert(NEXT_DEAD, next)?;
    }
    txn.commit()?;
    Ok(())
}

/// Removes dead letters (replayed: the log holds their deliveries again).
pub fn remove_dead(db: &Database, ids: &[u64]) -> Result<(), JournalError> {
    let txn = db.begin_write()?;
    {
        let mut dead = txn.open_table(DEAD)?;
        for id in ids {
            dead.remove(*id)?;
        }
    }
    txn.commit()?;
    Ok(())
}

/// Forgets the delivery keys of dead letters whose events left the log (below `first_seq`).
pub fn trim_dead_keys(db: &Database, first_seq: u64) -> Result<(), JournalError> {
    let txn = db.begin_write()?;
    {
        let mut keys = txn.open_table(DEAD_KEYS)?;
        keys.retain_in((0u64, "", "")..(first_seq, "", ""), |_, _| false)?;
    }
    txn.commit()?;
    Ok(())
}

/// How many dead letters there are.
pub fn dead_count(db: &Database) -> Result<u64, JournalError> {
    let txn = db.begin_read()?;
    Ok(txn.open_table(DEAD)?.len()?)
}

/// Whether the journal still holds events in its redb tables (a journal of a version before
/// the log, to convert: `herald journal upgrade`).
pub fn has_old_events(db: &Database) -> Result<bool, JournalError> {
    let txn = db.begin_read()?;
    Ok(!txn.open_table(EVENTS)?.is_empty()? || !txn.open_table(UNROUTED)?.is_empty()?)
}

/// The events of a journal of a version before the log, oldest first, each with its commit
/// time, JSON, whether it waits unrouted, and its pending deliveries `(sink, route, state)`.
/// Delivered events within the retention come too (they keep suppressing duplicates).
pub type OldEvent = (
    u64,
    Millis,
    String,
    bool,
    Vec<(String, String, PendingState)>,
);

pub fn old_events(db: &Database) -> Result<Vec<OldEvent>, JournalError> {
    let txn = db.begin_read()?;
    let events = txn.open_table(EVENTS)?;
    let pending = txn.open_table(PENDING)?;
    let unrouted = txn.open_table(UNROUTED)?;
    let mut by_seq: BTreeMap<u64, Vec<(String, String, PendingState)>> = BTreeMap::new();
    for entry in pending.iter()? {
        let (key, value) = entry?;
        let (sink, seq, route) = key.value();
        by_seq.entry(seq).or_default().push((
            sink.to_owned(),
            route.to_owned(),
            PendingState::decode(value.value()),
        ));
    }
    let mut out = Vec::new();
    for entry in events.iter()? {
        let (seq, value) = entry?;
        let seq = seq.value();
        let (committed_at, _, json) = read_event(seq, value.value())?;
        let json = String::from_utf8_lossy(json).into_owned();
        let waits = unrouted.get(seq)?.is_some();
        out.push((
            seq,
            committed_at,
            json,
            waits,
            by_seq.remove(&seq).unwrap_or_default(),
        ));
    }
    Ok(out)
}

/// Empties the event tables after a conversion to the log (`--finalize` removes the copy).
pub fn clear_old_events(db: &Database) -> Result<(), JournalError> {
    let txn = db.begin_write()?;
    {
        txn.delete_table(EVENTS)?;
        txn.delete_table(PENDING)?;
        txn.delete_table(REFS)?;
        txn.delete_table(DEDUP)?;
        txn.delete_table(UNROUTED)?;
        txn.open_table(EVENTS)?;
        txn.open_table(PENDING)?;
        txn.open_table(REFS)?;
        txn.open_table(DEDUP)?;
        txn.open_table(UNROUTED)?;
        let mut meta = txn.open_table(META)?;
        meta.retain(|k, _| k == NEXT_DEAD)?;
    }
    txn.commit()?;
    Ok(())
}
