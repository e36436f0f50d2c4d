//! What the local engine keeps in memory about its log (docs/architecture.md §10.3): per
//! record a slot of 8 bytes from the oldest unsettled one on, per sink the pending
//! deliveries as one `u64` each (seq and route packed; one settled out of order is marked
//! in place), the retry states as exceptions, the unrouted events, the duplicate window (a
//! hash and a seq per event), and a sparse map of batch positions to read events back from.
//! The events themselves stay on disk.
//!
//! **A backlog stays on disk.** A sink holds at most [`SPILL_AT`] pending deliveries in
//! memory: past that, its queue *spills*: from `spilled_from` on, its deliveries are only in
//! the log (counted, not listed), and its worker takes them back a part at a time
//! ([`Index::refill`], read by `Shared::refill`) as it works through the ones in memory.
//! When every sink has spilled, the records after that point get no slot either (`slots_end`
//! stops): none of their deliveries is in memory, so none can be settled but through a
//! refill, which makes their slots as it passes them. So a long outage of the sinks costs
//! disk, and memory only for the duplicate window. The one way a delivery past `spilled_from`
//! is settled without a refill is a start that reads outcome records again (the refills of
//! the run before are not in the log): such a delivery is kept as an exception
//! (`SinkQueue::done_spilled`, and `early` for an event without a slot) until its refill.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::super::JournalError;
use super::super::log::Position;
use super::super::records::{Attempt, Millis, PendingState};
use super::chunked::Chunked;
use super::codec::{self, EventHead, Reader};
use crate::{FastMap, FastSet};

/// Bits of a packed delivery that name its route; the rest is the seq.
const ROUTE_BITS: u32 = 20;
const ROUTE_MASK: u64 = (1 << ROUTE_BITS) - 1;
/// The largest seq a packed delivery holds (2^44: 5 years at 100,000 records a second).
pub const MAX_SEQ: u64 = (1 << (64 - ROUTE_BITS)) - 1;
/// Pending deliveries a sink keeps in memory before the rest of its backlog stays on disk
/// (1 MiB of them; a sink that keeps up has a few hundred).
pub const SPILL_AT: usize = 128 * 1024;
/// A refill reads at most this many records of the log.
pub const REFILL_RECORDS: usize = 256 * 1024;

fn pack(seq: u64, route: u32) -> u64 {
    (seq << ROUTE_BITS) | u64::from(route)
}
fn seq_of(packed: u64) -> u64 {
    packed >> ROUTE_BITS
}
fn route_of(packed: u64) -> u32 {
    (packed & ROUTE_MASK) as u32
}
/// The route id of a delivery settled in the middle of its sink's queue: it stays there, so
/// the queue stays in seq order, until the front reaches it or the queue is compacted.
const SETTLED: u32 = ROUTE_MASK as u32;
fn settled(packed: u64) -> bool {
    route_of(packed) == SETTLED
}

/// One record of the log, from the oldest unsettled one on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    /// Deliveries not yet settled.
    pub left: u16,
    /// Waits to be routed (enrichment).
    pub unrouted: bool,
    /// The event's JSON length, what it counts for against `queue.max_bytes`.
    pub size: u32,
}

impl Slot {
    fn undelivered(&self) -> bool {
        self.left > 0 || self.unrouted
    }
}

/// A sink's pending deliveries, in `(seq, route)` order: those in memory, then from
/// `spilled_from` on those only in the log.
#[derive(Clone, Debug, Default)]
pub struct SinkQueue {
    entries: Chunked<u64>,
    /// How many of `entries` are settled (route [`SETTLED`]).
    settled: usize,
    /// Deliveries attempted at least once.
    states: FastMap<u64, PendingState>,
    /// From this seq on, the sink's deliveries are not in `entries` but in the log.
    spilled_from: Option<u64>,
    /// How many of those are pending.
    spilled: u64,
    /// Those settled without being read back (a start reading outcomes again).
    done_spilled: FastSet<u64>,
}

impl SinkQueue {
    pub fn len(&self) -> usize {
        self.entries.len() - self.settled + self.spilled as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where a pending `(seq, route)` is: `Some(Some(i))` at `entries[i]`, `Some(None)` in
    /// the log past `spilled_from` (a delivery an outcome record names there is one).
    fn find(&self, seq: u64, route: u32) -> Option<Option<usize>> {
        let key = pack(seq, route);
        if self.spilled_from.is_some_and(|from| seq >= from) {
            return (!self.done_spilled.contains(&key)).then_some(None);
        }
        let at = self.entries.partition_point(|e| seq_of(*e) < seq);
        (at..self.entries.len())
            .take_while(|i| self.entries.get(*i).is_some_and(|e| seq_of(*e) == seq))
            .find(|i| self.entries.get(*i) == Some(&key))
            .map(Some)
    }
}

/// What `Shared::refill` read of the log for a sink, from its `spilled_from`: the records
/// `[from, to)`, the sink's deliveries among them, and for the records from `slots_from` on
/// what their slots need.
#[derive(Debug, Default)]
pub struct Refill {
    pub from: u64,
    pub to: u64,
    pub deliveries: Vec<(u64, String)>,
    pub slots_from: u64,
    /// `(seq, deliveries, flags, size)` of each record from `slots_from` on (0s for a
    /// record that is not an event).
    pub records: Vec<(u64, u16, u8, u32)>,
}

#[derive(Debug, Default)]
pub struct Index {
    pub base: u64,
    /// The slots of the records `[base, slots_end)`.
    pub slots: Chunked<Slot>,
    /// Where the slots end: `next_seq`, unless every sink has spilled (see the module doc).
    pub slots_end: u64,
    pub next_seq: u64,
    pub sinks: BTreeMap<String, SinkQueue>,
    /// How many of `sinks` have spilled.
    spilled_sinks: usize,
    /// Per event past `slots_end`, deliveries settled before its slot was made.
    early: FastMap<u64, u16>,
    /// How many deliveries a sink keeps in memory ([`SPILL_AT`]; tests use a few).
    pub spill_at: usize,
    /// Refills taken so far (they change the index without a record).
    pub refills: u64,
    routes: Vec<Arc<str>>,
    route_ids: FastMap<Arc<str>, u32>,
    /// The events waiting to be routed, with their JSON's length.
    pub unrouted: BTreeMap<u64, u32>,
    pub dedup: super::dedup::Window,
    /// Batch starts, sparse: reading an event starts at the last one at or before it.
    pub marks: BTreeMap<u64, Position>,
    /// Per segment (by first seq), the newest commit time of an event in it.
    pub segment_times: BTreeMap<u64, Millis>,
    pub undelivered_events: u64,
    pub undelivered_bytes: u64,
}

/// A pending delivery as a scan returns it.
#[derive(Clone, Debug)]
pub struct Found {
    pub seq: u64,
    pub route: Arc<str>,
    pub state: PendingState,
}

impl Index {
    pub fn new(first_seq: u64) -> Index {
        Index {
            base: first_seq,
            slots_end: first_seq,
            next_seq: first_seq,
            spill_at: spill_at(),
            ..Index::default()
        }
    }

    fn route_id(&mut self, route: &str) -> Result<u32, JournalError> {
        if let Some(id) = self.route_ids.get(route) {
            return Ok(*id);
        }
        let id = u32::try_from(self.routes.len())
            .ok()
            .filter(|id| *id < SETTLED)
            .ok_or_else(|| {
                JournalError::io("indexing a delivery", "more than 2^20 - 1 route names")
            })?;
        let name: Arc<str> = Arc::from(route);
        self.routes.push(name.clone());
        self.route_ids.insert(name, id);
        Ok(id)
    }

    pub fn slot_mut(&mut self, seq: u64) -> Option<&mut Slot> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.slots.get_mut(i)
    }

    /// Whether the record `seq` (the next one) gets a slot: the slots reach it, and some
    /// sink has not spilled (or there is none).
    fn slots_live(&self, seq: u64) -> bool {
        self.slots_end == seq && (self.sinks.is_empty() || self.spilled_sinks < self.sinks.len())
    }

    /// Takes the record `seq` (the next one) into the index, with a slot if
    /// [`Index::slots_live`].
    fn push(&mut self, seq: u64, slot: Slot) -> Result<(), JournalError> {
        if seq != self.next_seq {
            return Err(JournalError::corrupt(
                format!("record {seq} of the log"),
                format_args!("the index expected record {}", self.next_seq),
            ));
        }
        if seq > MAX_SEQ {
            return Err(JournalError::io(
                "appending to the log",
                "the log's seqs are exhausted (2^44): convert the journal to a new one",
            ));
        }
        if slot.undelivered() {
            self.undelivered_events += 1;
            self.undelivered_bytes += u64::from(slot.size);
        }
        if self.slots_live(seq) {
            self.put_slot(seq, slot);
        }
        self.next_seq = seq + 1;
        Ok(())
    }

    /// Makes the slot of `seq`, the one at `slots_end`.
    fn put_slot(&mut self, seq: u64, slot: Slot) {
        if self.slots.is_empty() && !slot.undelivered() {
            self.base = seq + 1;
        } else {
            self.slots.push_back(slot);
        }
        self.slots_end = seq + 1;
    }

    /// Any other record (an outcome, a tombstone): it only takes a seq.
    pub fn add_other(&mut self, seq: u64) -> Result<(), JournalError> {
        self.push(seq, Slot::default())?;
        self.trim();
        Ok(())
    }

    /// The `EVENT` record `seq` with `head`; `size` is its JSON's length.
    pub fn add_event(&mut self, seq: u64, head: &EventHead, size: u32) -> Result<(), JournalError> {
        let unrouted = head.flags & codec::UNROUTED != 0;
        let left = u16::try_from(head.deliveries.len()).unwrap_or(u16::MAX);
        let live = self.slots_live(seq);
        self.push(
            seq,
            Slot {
                left,
                unrouted,
                size,
            },
        )?;
        // In the order of their sinks; the usual one delivery needs no sorted copy.
        let sorted;
        let by_sink = if head.deliveries.is_sorted() {
            &head.deliveries
        } else {
            let mut copy = head.deliveries.clone();
            copy.sort_unstable();
            sorted = copy;
            &sorted
        };
        for &(sink, route) in by_sink {
            let id = self.route_id(route)?;
            let queue = match self.sinks.get_mut(sink) {
                Some(queue) => queue,
                None => {
                    // A sink new while the slots stand still starts spilled where they end:
                    // its deliveries must not be settled where there are no slots, and a
                    // refill reads from its spill on what the slots after it need.
                    let queue = SinkQueue {
                        spilled_from: (!live).then_some(self.slots_end),
                        ..SinkQueue::default()
                    };
                    self.spilled_sinks += usize::from(!live);
                    self.sinks.entry(sink.to_owned()).or_insert(queue)
                }
            };
            // Only between events: every delivery in `entries` is below `spilled_from`.
            if queue.spilled_from.is_none()
                && queue.entries.len() >= self.spill_at
                && queue.entries.back().is_none_or(|e| seq_of(*e) < seq)
            {
                queue.spilled_from = Some(seq);
                self.spilled_sinks += 1;
            }
            if queue.spilled_from.is_some() {
                queue.spilled += 1;
            } else {
                queue.entries.push_back(pack(seq, id));
            }
        }
        if unrouted {
            self.unrouted.insert(seq, size);
        }
        if let Some(from) = head.from {
            self.routed(from);
        }
        if head.flags & (codec::REPLAYED | codec::ROUTED) == 0 {
            self.dedup.insert(head.hash, seq);
        }
        self.trim();
        Ok(())
    }

    /// The unrouted event `from` was routed (its routed copy carries the deliveries).
    fn routed(&mut self, from: u64) {
        let Some(size) = self.unrouted.remove(&from) else {
            return;
        };
        let Some(slot) = self.slot_mut(from) else {
            // No slot (yet): it is undelivered no more.
            if from >= self.slots_end {
                self.undelivered_events = self.undelivered_events.saturating_sub(1);
                self.undelivered_bytes = self.undelivered_bytes.saturating_sub(u64::from(size));
            }
            return;
        };
        if !slot.unrouted {
            return;
        }
        slot.unrouted = false;
        let slot = *slot;
        if !slot.undelivered() {
            self.undelivered_events = self.undelivered_events.saturating_sub(1);
            self.undelivered_bytes = self.undelivered_bytes.saturating_sub(u64::from(slot.size));
        }
    }

    /// Whether `(sink, seq, route)` is pending.
    pub fn is_pending(&self, sink: &str, seq: u64, route: &str) -> bool {
        let (Some(queue), Some(id)) = (self.sinks.get(sink), self.route_ids.get(route)) else {
            return false;
        };
        queue.find(seq, *id).is_some()
    }

    /// The retry state of a pending delivery.
    pub fn state(&self, sink: &str, seq: u64, route: &str) -> PendingState {
        let (Some(queue), Some(id)) = (self.sinks.get(sink), self.route_ids.get(route)) else {
            return PendingState::default();
        };
        queue
            .states
            .get(&pack(seq, *id))
            .cloned()
            .unwrap_or_default()
    }

    /// A delivery is settled (delivered or dead). Returns whether it was pending.
    pub fn settle(&mut self, sink: &str, seq: u64, route: &str) -> bool {
        let (Some(queue), Some(id)) = (self.sinks.get_mut(sink), self.route_ids.get(route)) else {
            return false;
        };
        let Some(at) = queue.find(seq, *id) else {
            return false;
        };
        let key = pack(seq, *id);
        queue.states.remove(&key);
        match at {
            None => {
                queue.done_spilled.insert(key);
                queue.spilled = queue.spilled.saturating_sub(1);
            }
            Some(0) => {
                queue.entries.pop_front();
                while queue.entries.front().is_some_and(|front| settled(*front)) {
                    queue.entries.pop_front();
                    queue.settled -= 1;
                }
            }
            Some(i) => {
                if let Some(entry) = queue.entries.get_mut(i) {
                    *entry = pack(seq, SETTLED);
                    queue.settled += 1;
                }
                // A front that waits (a retry) while those behind it are delivered: the
                // settled ones go once they are half the queue.
                if queue.settled >= 4096 && queue.settled * 2 > queue.entries.len() {
                    let mut kept = Chunked::default();
                    for entry in queue.entries.iter().filter(|e| !settled(**e)) {
                        kept.push_back(*entry);
                    }
                    queue.entries = kept;
                    queue.settled = 0;
                }
            }
        }
        if let Some(slot) = self.slot_mut(seq) {
            slot.left = slot.left.saturating_sub(1);
            let slot = *slot;
            if !slot.undelivered() {
                self.undelivered_events = self.undelivered_events.saturating_sub(1);
                self.undelivered_bytes =
                    self.undelivered_bytes.saturating_sub(u64::from(slot.size));
            }
        } else if seq >= self.slots_end {
            // Counted off when its slot is made.
            *self.early.entry(seq).or_default() += 1;
        }
        self.trim();
        true
    }

    /// An attempt failed and is tried again at `next_at`.
    pub fn retry(&mut self, sink: &str, seq: u64, route: &str, next_at: Millis, attempt: Attempt) {
        let (Some(queue), Some(id)) = (self.sinks.get_mut(sink), self.route_ids.get(route)) else {
            return;
        };
        if queue.find(seq, *id).is_none() {
            return;
        }
        let state = queue.states.entry(pack(seq, *id)).or_default();
        state.attempts += 1;
        state.next_at = next_at;
        state.push_error(attempt);
    }

    /// Drops settled records from the front.
    fn trim(&mut self) {
        while let Some(front) = self.slots.front() {
            if front.undelivered() {
                break;
            }
            self.slots.pop_front();
            self.base += 1;
        }
        if self.slots.is_empty() {
            self.base = self.slots_end;
        }
        if self.spilled_sinks > 0 {
            self.pass_settled();
        }
    }

    /// Below `base` every delivery is settled, those of a spill too: a sink's spill starts
    /// at `base` at the earliest (its records may be deleted), and ends there if that is
    /// where the log does.
    fn pass_settled(&mut self) {
        let (base, next_seq) = (self.base, self.next_seq);
        for queue in self.sinks.values_mut() {
            let Some(from) = queue.spilled_from.filter(|from| *from < base) else {
                continue;
            };
            queue.done_spilled.retain(|key| seq_of(*key) >= base);
            if base >= next_seq {
                debug_assert_eq!(queue.spilled, 0, "spilled from {from}");
                queue.spilled_from = None;
                queue.spilled = 0;
                self.spilled_sinks -= 1;
            } else {
                queue.spilled_from = Some(base);
            }
        }
    }

    /// Where `sink`'s deliveries are in the log only, if they are.
    pub fn spilled_from(&self, sink: &str) -> Option<u64> {
        self.sinks.get(sink)?.spilled_from
    }

    /// Takes back what `Shared::refill` read of the log for `sink` (nothing if another
    /// refill took it first). The records at `next_seq` and after (written, not yet
    /// applied here) are left to the writer.
    pub fn refill(&mut self, sink: &str, read: Refill) -> Result<(), JournalError> {
        let next_seq = self.next_seq;
        let Some(queue) = self.sinks.get(sink) else {
            return Ok(());
        };
        if queue.spilled_from != Some(read.from) || read.to <= read.from {
            return Ok(());
        }
        let to = read.to.min(next_seq);
        // The slots past `slots_end` need every record from there to `to`.
        if self.slots_end < to
            && (read.slots_from > self.slots_end
                || read
                    .records
                    .iter()
                    .filter(|r| r.0 >= self.slots_end && r.0 < to)
                    .count() as u64
                    != to - self.slots_end)
        {
            return Err(JournalError::io(
                "taking back a sink's deliveries",
                "the records read do not cover those without a slot",
            ));
        }
        self.refills += 1;
        let mut keys = Vec::with_capacity(read.deliveries.len());
        for (seq, route) in read.deliveries.iter().filter(|(seq, _)| *seq < to) {
            keys.push(pack(*seq, self.route_id(route)?));
        }
        let Some(queue) = self.sinks.get_mut(sink) else {
            return Ok(());
        };
        for key in keys {
            if !queue.done_spilled.remove(&key) {
                queue.entries.push_back(key);
                queue.spilled = queue.spilled.saturating_sub(1);
            }
        }
        queue.done_spilled.retain(|key| seq_of(*key) >= to);
        if to == next_seq {
            queue.spilled_from = None;
            queue.spilled = 0;
            self.spilled_sinks -= 1;
        } else {
            queue.spilled_from = Some(to);
        }
        // The slots of the records read that have none yet.
        if self.slots_end < to {
            for &(seq, deliveries, flags, size) in &read.records {
                if seq < self.slots_end {
                    continue;
                }
                if seq >= to {
                    break;
                }
                let unrouted = self.unrouted.contains_key(&seq);
                let early = self.early.remove(&seq).unwrap_or(0);
                let slot = Slot {
                    left: deliveries.saturating_sub(early),
                    unrouted,
                    size,
                };
                // Counted as undelivered when added, if it had deliveries; an unrouted
                // event's count is kept by `routed`.
                if flags & codec::UNROUTED == 0 && deliveries > 0 && !slot.undelivered() {
                    self.undelivered_events = self.undelivered_events.saturating_sub(1);
                    self.undelivered_bytes = self.undelivered_bytes.saturating_sub(u64::from(size));
                }
                self.put_slot(seq, slot);
            }
        }
        self.trim();
        Ok(())
    }

    /// Up to `limit` pending deliveries of `sink` in memory after `after` (exclusive); past
    /// `spilled_from` they are read back with `Shared::refill` first.
    pub fn scan(&self, sink: &str, after: Option<(u64, &str)>, limit: usize) -> Vec<Found> {
        let Some(queue) = self.sinks.get(sink) else {
            return Vec::new();
        };
        let start = after.map_or(0, |(seq, _)| {
            queue.entries.partition_point(|e| seq_of(*e) < seq)
        });
        let mut found = Vec::new();
        for key in queue.entries.iter_from(start) {
            if found.len() >= limit {
                break;
            }
            if settled(*key) {
                continue;
            }
            let (seq, route) = (seq_of(*key), &self.routes[route_of(*key) as usize]);
            if let Some((after_seq, after_route)) = after
                && seq == after_seq
                && **route <= *after_route
            {
                continue;
            }
            found.push(Found {
                seq,
                route: route.clone(),
                state: queue.states.get(key).cloned().unwrap_or_default(),
            });
        }
        found
    }

    /// Per sink, the earliest retry of a delivery attempted at least once.
    pub fn next_retries(&self) -> BTreeMap<String, Millis> {
        self.sinks
            .iter()
            .filter_map(|(sink, queue)| {
                let next = queue
                    .states
                    .values()
                    .filter(|s| s.attempts > 0)
                    .map(|s| s.next_at)
                    .min()?;
                Some((sink.clone(), next))
            })
            .collect()
    }

    /// Gives back the memory a backlog left behind once it is delivered (a map holds on to
    /// its largest size otherwise; the slots and queues give back each chunk as they pass
    /// it). Called with every checkpoint.
    pub fn shrink(&mut self) {
        for queue in self.sinks.values_mut() {
            if queue.states.capacity() > 4096 && queue.states.len() < queue.states.capacity() / 4 {
                queue.states.shrink_to(queue.states.len() * 2);
            }
            if queue.done_spilled.capacity() > 4096
                && queue.done_spilled.len() < queue.done_spilled.capacity() / 4
            {
                queue.done_spilled.shrink_to(queue.done_spilled.len() * 2);
            }
        }
        if self.early.capacity() > 4096 && self.early.len() < self.early.capacity() / 4 {
            self.early.shrink_to(self.early.len() * 2);
        }
    }

    /// Forgets what refers to records below `first_seq`, whose segments were deleted.
    pub fn forget_below(&mut self, first_seq: u64) {
        self.dedup.forget_below(first_seq);
        self.marks = self.marks.split_off(&first_seq);
        self.segment_times = self.segment_times.split_off(&first_seq);
    }

    pub fn pending(&self) -> BTreeMap<String, u64> {
        self.sinks
            .iter()
            .map(|(sink, queue)| (sink.clone(), queue.len() as u64))
            .collect()
    }

    // ---- checkpoints ----------------------------------------------------------------

    /// The index as a checkpoint file's body (`checkpoint.rs` frames it).
    pub fn encode(&self, out: &mut impl Out) {
        let u64s = |out: &mut dyn Out, v: u64| out.put(&v.to_le_bytes());
        u64s(&mut *out, self.base);
        u64s(&mut *out, self.next_seq);
        u64s(&mut *out, self.undelivered_events);
        u64s(&mut *out, self.undelivered_bytes);
        u64s(&mut *out, self.slots.len() as u64);
        for slot in self.slots.iter() {
            out.put(&slot.left.to_le_bytes());
            out.put(&[u8::from(slot.unrouted)]);
            out.put(&slot.size.to_le_bytes());
        }
        u64s(&mut *out, self.routes.len() as u64);
        for route in &self.routes {
            put_long_str(out, route);
        }
        u64s(&mut *out, self.sinks.len() as u64);
        for (sink, queue) in &self.sinks {
            put_long_str(out, sink);
            u64s(&mut *out, (queue.entries.len() - queue.settled) as u64);
            for e in queue.entries.iter().filter(|e| !settled(**e)) {
                u64s(&mut *out, *e);
            }
            u64s(&mut *out, queue.states.len() as u64);
            for (key, state) in &queue.states {
                u64s(&mut *out, *key);
                let json = state.encode();
                out.put(&(json.len() as u32).to_le_bytes());
                out.put(&json);
            }
            u64s(&mut *out, queue.spilled_from.unwrap_or(u64::MAX));
            u64s(&mut *out, queue.spilled);
            u64s(&mut *out, queue.done_spilled.len() as u64);
            for e in &queue.done_spilled {
                u64s(&mut *out, *e);
            }
        }
        u64s(&mut *out, self.unrouted.len() as u64);
        for (seq, size) in &self.unrouted {
            u64s(&mut *out, *seq);
            out.put(&size.to_le_bytes());
        }
        u64s(&mut *out, self.early.len() as u64);
        for (seq, settled) in &self.early {
            u64s(&mut *out, *seq);
            out.put(&settled.to_le_bytes());
        }
        self.dedup.encode(out);
        u64s(&mut *out, self.marks.len() as u64);
        for p in self.marks.values() {
            u64s(&mut *out, p.segment);
            u64s(&mut *out, p.offset);
            u64s(&mut *out, p.seq);
        }
        u64s(&mut *out, self.segment_times.len() as u64);
        for (segment, time) in &self.segment_times {
            u64s(&mut *out, *segment);
            out.put(&time.to_le_bytes());
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Index, JournalError> {
        let mut r = Reader::new(0, bytes);
        let mut index = Index {
            base: r.u64()?,
            next_seq: r.u64()?,
            undelivered_events: r.u64()?,
            undelivered_bytes: r.u64()?,
            spill_at: spill_at(),
            ..Index::default()
        };
        let count = |r: &mut Reader<'_>| -> Result<usize, JournalError> {
            let n = r.u64()?;
            usize::try_from(n)
                .ok()
                .filter(|n| *n <= bytes.len())
                .ok_or_else(|| r.bad(format_args!("an impossible count {n}")))
        };
        for _ in 0..count(&mut r)? {
            let left = r.u16()?;
            let unrouted = r.u8()? != 0;
            let size = r.u32()?;
            index.slots.push_back(Slot {
                left,
                unrouted,
                size,
            });
        }
        for _ in 0..count(&mut r)? {
            let route: Arc<str> = Arc::from(long_str(&mut r)?);
            index
                .route_ids
                .insert(route.clone(), index.routes.len() as u32);
            index.routes.push(route);
        }
        for _ in 0..count(&mut r)? {
            let sink = long_str(&mut r)?.to_owned();
            let mut queue = SinkQueue::default();
            for _ in 0..count(&mut r)? {
                queue.entries.push_back(r.u64()?);
            }
            for _ in 0..count(&mut r)? {
                let key = r.u64()?;
                let len = r.u32()? as usize;
                queue.states.insert(key, PendingState::decode(r.take(len)?));
            }
            let spilled_from = r.u64()?;
            queue.spilled_from = (spilled_from != u64::MAX).then_some(spilled_from);
            queue.spilled = r.u64()?;
            for _ in 0..count(&mut r)? {
                queue.done_spilled.insert(r.u64()?);
            }
            index.spilled_sinks += usize::from(queue.spilled_from.is_some());
            if queue
                .entries
                .iter()
                .any(|e| route_of(*e) as usize >= index.routes.len())
            {
                return Err(r.bad("a delivery names a route the checkpoint lacks"));
            }
            index.sinks.insert(sink, queue);
        }
        for _ in 0..count(&mut r)? {
            let seq = r.u64()?;
            index.unrouted.insert(seq, r.u32()?);
        }
        for _ in 0..count(&mut r)? {
            let seq = r.u64()?;
            index.early.insert(seq, r.u16()?);
        }
        index.dedup = super::dedup::Window::decode(&mut r, bytes.len())?;
        for _ in 0..count(&mut r)? {
            let p = Position {
                segment: r.u64()?,
                offset: r.u64()?,
                seq: r.u64()?,
            };
            index.marks.insert(p.seq, p);
        }
        for _ in 0..count(&mut r)? {
            let segment = r.u64()?;
            index.segment_times.insert(segment, r.i64()?);
        }
        if r.at != bytes.len() {
            return Err(r.bad("bytes follow the index"));
        }
        index.slots_end = index
            .base
            .checked_add(index.slots.len() as u64)
            .filter(|end| *end <= index.next_seq)
            .ok_or_else(|| {
                r.bad(format_args!(
                    "its {} slots from seq {} go past its next seq {}",
                    index.slots.len(),
                    index.base,
                    index.next_seq
                ))
            })?;
        Ok(index)
    }
}

/// How many deliveries a sink keeps in memory: [`SPILL_AT`], or in tests what
/// [`set_spill_at`] says (nextest runs each test in a process of its own).
fn spill_at() -> usize {
    #[cfg(test)]
    match TEST_SPILL_AT.load(std::sync::atomic::Ordering::Relaxed) {
        0 => {}
        n => return n,
    }
    SPILL_AT
}

#[cfg(test)]
static TEST_SPILL_AT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Makes the indexes this process opens from now on spill past `n` deliveries a sink.
#[cfg(test)]
pub fn set_spill_at(n: usize) {
    TEST_SPILL_AT.store(n, std::sync::atomic::Ordering::Relaxed);
}

fn put_long_str(out: &mut (impl Out + ?Sized), s: &str) {
    out.put(&(s.len() as u32).to_le_bytes());
    out.put(s.as_bytes());
}

/// Where a checkpoint's bytes go: a buffer, or the file itself (`ledger::write_checkpoint`
/// streams the index into it rather than building a copy of it in memory).
pub trait Out {
    fn put(&mut self, bytes: &[u8]);
}

impl Out for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

fn long_str<'a>(r: &mut Reader<'a>) -> Result<&'a str, JournalError> {
    let len = r.u32()? as usize;
    let bytes = r.take(len)?;
    std::str::from_utf8(bytes).map_err(|_| r.bad("a name is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head<'a>(deliveries: &[(&'a str, &'a str)]) -> EventHead<'a> {
        EventHead {
            committed_at: 1,
            flags: 0,
            from: None,
            hash: 7,
            deliveries: deliveries.to_vec(),
        }
    }

    #[test]
    fn deliveries_settled_out_of_order_are_counted_once_and_trimmed() {
        let mut index = Index::new(1);
        for seq in 1..=4 {
            index
                .add_event(seq, &head(&[("a", "r2"), ("a", "r1"), ("b", "r1")]), 10)
                .unwrap();
        }
        assert_eq!(index.undelivered_events, 4);
        assert_eq!(index.pending()["a"], 8);
        // Order within a seq is by route name.
        let scanned = index.scan("a", None, 3);
        let got: Vec<(u64, &str)> = scanned.iter().map(|f| (f.seq, &*f.route)).collect();
        assert_eq!(got, [(1, "r1"), (1, "r2"), (2, "r1")]);
        let after = index.scan("a", Some((1, "r1")), 1);
        assert_eq!((after[0].seq, &*after[0].route), (1, "r2"));

        assert!(index.settle("a", 2, "r1"));
        assert!(!index.settle("a", 2, "r1"), "settled twice");
        assert_eq!(index.pending()["a"], 7);
        for (sink, seq, route) in [("a", 1, "r1"), ("a", 1, "r2"), ("b", 1, "r1")] {
            assert!(index.settle(sink, seq, route));
        }
        assert_eq!(index.undelivered_events, 3);
        assert_eq!(index.base, 2, "the settled first event left the window");
        let bytes = {
            let mut out = Vec::new();
            index.retry(
                "a",
                3,
                "r2",
                99,
                Attempt {
                    at: 5,
                    error: "503".into(),
                },
            );
            index.encode(&mut out);
            out
        };
        let back = Index::decode(&bytes).unwrap();
        assert_eq!(back.pending(), index.pending());
        assert_eq!(back.state("a", 3, "r2").next_at, 99);
        assert_eq!(back.undelivered_events, 3);
        assert!(!back.is_pending("a", 2, "r1"));
        assert!(back.is_pending("a", 2, "r2"));
        for cut in [0, 8, bytes.len() / 2, bytes.len() - 1] {
            assert!(Index::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn a_front_that_waits_does_not_keep_what_is_delivered_behind_it() {
        let mut index = Index::new(1);
        let n = 20_000u64;
        for seq in 1..=n {
            index.add_event(seq, &head(&[("a", "r")]), 10).unwrap();
        }
        // The first is retried later; every other one is delivered meanwhile.
        for seq in 2..=n {
            assert!(index.settle("a", seq, "r"));
            assert!(!index.is_pending("a", seq, "r"));
        }
        assert_eq!(index.pending()["a"], 1);
        let queue = &index.sinks["a"];
        assert!(
            queue.entries.len() < 8192,
            "the settled ones were dropped: {} entries kept",
            queue.entries.len()
        );
        let scanned = index.scan("a", None, 10);
        assert_eq!(scanned.len(), 1);
        assert_eq!(scanned[0].seq, 1);
        assert_eq!(index.undelivered_events, 1);
        assert_eq!(index.base, 1);

        // Written with some settled in the middle and read back.
        for seq in n + 1..=n + 10 {
            index.add_event(seq, &head(&[("a", "r")]), 10).unwrap();
        }
        assert!(index.settle("a", n + 5, "r"));
        let mut out = Vec::new();
        index.encode(&mut out);
        let mut back = Index::decode(&out).unwrap();
        assert_eq!(back.pending()["a"], 10);
        assert!(!back.is_pending("a", n + 5, "r"));
        assert!(back.is_pending("a", n + 6, "r"));
        assert!(back.settle("a", 1, "r"));
        assert_eq!(back.base, n + 1, "the front went and the rest followed");
    }

    #[test]
    fn an_unrouted_event_stays_undelivered_until_its_routed_copy() {
        let mut index = Index::new(1);
        let mut unrouted = head(&[]);
        unrouted.flags = codec::UNROUTED;
        index.add_event(1, &unrouted, 5).unwrap();
        index.add_other(2).unwrap();
        assert_eq!(index.undelivered_events, 1);
        assert!(index.unrouted.contains_key(&1));
        let mut routed = head(&[("a", "r")]);
        routed.from = Some(1);
        routed.flags = codec::ROUTED;
        index.add_event(3, &routed, 6).unwrap();
        assert!(index.unrouted.is_empty());
        assert_eq!(index.undelivered_events, 1);
        assert_eq!(index.undelivered_bytes, 6);
        assert!(index.settle("a", 3, "r"));
        assert_eq!(index.undelivered_events, 0);
        assert_eq!(index.base, 4);
    }
}
