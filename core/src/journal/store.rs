//! The journal's redb file, `journal.redb`: what the log (`ledger/`) does not hold. Everything
//! here is synchronous; the writer thread and the CLI call it, never the async runtime
//! directly.
//!
//! | table | key | value |
//! |---|---|---|
//! | `dead` | dead-letter id | dead letter JSON (deliveries given up, rejected inputs) |
//! | `dead_keys` | `(seq, sink, route)` | the dead letter of that delivery: written twice, kept once |
//! | `meta` | name | the next dead-letter id |
//! | `state` | name | small durable values of other parts (Google channels, registrations, the enrichment cache) |
//!
//! The tables `events`, `dedup`, `pending`, `refs` and `unrouted` held the events and
//! deliveries before the log; a journal that still has them is converted at start
//! (`upgrade.rs`) and they are left empty.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::JournalError;
use super::records::{Attempt, DeadKind, DeadLetter, Millis, PendingState, read_event};
use crate::event::Event;
use crate::queue::ForgetReport;

pub(super) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
pub(super) const DEDUP: TableDefinition<&str, u64> = TableDefinition::new("dedup");
pub(super) const PENDING: TableDefinition<(&str, u64, &str), &[u8]> =
    TableDefinition::new("pending");
pub(super) const REFS: TableDefinition<u64, (u32, u32)> = TableDefinition::new("refs");
pub(super) const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(super) const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
pub(super) const UNROUTED: TableDefinition<u64, ()> = TableDefinition::new("unrouted");

/// `events` or `dead`, for tests that write a damaged record.
#[cfg(test)]
pub(super) type RawTable = TableDefinition<'static, u64, &'static [u8]>;

#[cfg(test)]
pub(super) const NEXT_SEQ: &str = "next_seq";
pub(super) const NEXT_DEAD: &str = "next_dead";
#[cfg(test)]
pub(super) const UNDELIVERED_EVENTS: &str = "undelivered_events";
#[cfg(test)]
pub(super) const UNDELIVERED_BYTES: &str = "undelivered_bytes";
#[cfg(test)]
pub(super) const PENDING_PREFIX: &str = "pending/";

/// The file inside `queue.path`.
pub const FILE_NAME: &str = "journal.redb";

/// Memory redb may use to cache journal pages. Its default, 1 GiB, would let the gateway's
/// memory creep up to that under steady load; the working set (the newest pages of each
/// table) is far smaller, and the file itself stays in the OS page cache.
const CACHE_BYTES: usize = 4 * 1024 * 1024;

/// A delivery waiting to be sent. The names are shared: a key is cloned several times per
/// attempt (the worker's in-flight set, the outcome, the writer), and a clone of an
/// `Arc<str>` is a count, not an allocation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryKey {
    pub sink: Arc<str>,
    pub seq: u64,
    pub route: Arc<str>,
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

pub(super) fn meta_get(
    table: &impl ReadableTable<&'static str, u64>,
    key: &str,
) -> Result<u64, JournalError> {
    Ok(table.get(key)?.map(|v| v.value()).unwrap_or(0))
}

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
        // Dead letters and rejected inputs.
        let mut dead = txn.open_table(DEAD)?;
        let mut dead_ids = Vec::new();
        for entry in dead.iter()? {
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
            dead.remove(id)?;
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
