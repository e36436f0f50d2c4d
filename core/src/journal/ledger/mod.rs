//! The local engine's events and deliveries: the append-only segment log (`../log`) with
//! the index of what is pending kept in memory ([`index::Index`]), rebuilt at start from the
//! last checkpoint and the records after it (docs/architecture.md §10.3).
//!
//! * **Writes.** The journal's writer thread owns the [`Ledger`]: every group commit is one
//!   [`Ledger::append`] (one write and one fdatasync), after which it applies the batch's
//!   records to the index. Dead letters, rejected inputs and the state table stay in redb,
//!   written *before* the log's append and idempotently by key (`store.rs`).
//! * **Reads.** Sink workers scan the index under a short lock and read the events they need
//!   from the window of recent events or, for a sink far behind, from disk through
//!   [`Shared::read`], which starts at the nearest batch position kept in the index.
//! * **Checkpoints** (`checkpoint` in the log's directory) are written every
//!   [`CHECKPOINT_EVERY`] and at close: the whole index, checksummed, with the seq it covers.
//!   A start loads it and reads only the records after it; without one (or with a damaged
//!   one, which is logged) it reads the whole log.
//! * **Deletion.** A segment is deleted once every record in it is settled (below the
//!   index's `base`) and its newest event is past `queue.retention`, and only after a
//!   checkpoint that no longer needs it is on disk.

mod chunked;
pub mod codec;
pub mod dedup;
pub mod index;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::JournalError;
use super::log::{Entry, Log, Options, Position, Recovery, View};
use super::recent::Held;
use super::records::Millis;
use crate::event::Event;
use codec::{EVENT, EventHead, OUTCOME, Settled};
use index::Index;

/// The log's directory inside `queue.path`.
pub const LOG_DIR: &str = "log";
const CHECKPOINT: &str = "checkpoint";
const CHECKPOINT_MAGIC: &[u8; 8] = b"HRLDCKP2";
/// The checkpoints before sink queues spilled to the log: read as none (the index is then
/// rebuilt from the whole log).
const OLD_CHECKPOINT_MAGIC: &[u8; 8] = b"HRLDCKP1";
/// How often the index is written to its checkpoint while records come in.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(30);
/// A batch position is kept at most every this many bytes of a segment.
const MARK_EVERY: u64 = 64 * 1024;

/// What readers share with the writer.
#[derive(Debug)]
pub struct Shared {
    index: Mutex<Index>,
    view: Mutex<Arc<View>>,
    /// Why the log takes no more writes until the gateway restarts, once it says so.
    refusing: Mutex<Option<String>>,
    /// Where reading a sink's deliveries back failed, each logged once.
    failed_refills: Mutex<std::collections::BTreeSet<(String, u64)>>,
}

impl Shared {
    pub fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The index, unless another thread holds it (the writer applying a batch or writing
    /// a checkpoint).
    pub fn try_index(&self) -> Option<MutexGuard<'_, Index>> {
        match self.index.try_lock() {
            Ok(index) => Some(index),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Why the log takes no more writes until the gateway restarts (`/readyz` says it).
    pub fn refusing(&self) -> Option<String> {
        self.refusing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn view(&self) -> Arc<View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The events `seqs` (increasing) as stored, read from disk. An event that is not there
    /// (forgotten, or its segment deleted) is `None`; damage is `Corrupt` for that event.
    pub(crate) fn read(&self, seqs: &[u64]) -> Vec<(u64, Result<Option<Held>, JournalError>)> {
        let view = self.view();
        let mut out = Vec::with_capacity(seqs.len());
        let mut reader: Option<super::log::Records> = None;
        let mut last_read = 0u64;
        for &seq in seqs {
            // Re-position when there is no reader, when it is past `seq`, or when a kept
            // position lies between it and `seq` (skipping ahead beats reading through).
            let mark = self
                .index()
                .marks
                .range(..=seq)
                .next_back()
                .map(|(_, p)| *p);
            let reposition = match (&reader, mark) {
                (None, _) => true,
                (Some(_), _) if last_read >= seq => true,
                (Some(_), Some(mark)) => mark.seq > last_read + 1,
                (Some(_), None) => false,
            };
            if reposition {
                let Some(mark) = mark else {
                    out.push((seq, Ok(None)));
                    continue;
                };
                match view.records_from(mark, seq.saturating_sub(1)) {
                    Ok(records) => reader = Some(records),
                    Err(e) => {
                        out.push((seq, Err(e)));
                        reader = None;
                        continue;
                    }
                }
            }
            let Some(records) = reader.as_mut() else {
                out.push((seq, Ok(None)));
                continue;
            };
            let found = loop {
                match records.next() {
                    None => break Ok(None),
                    Some(Err(e)) => break Err(e),
                    Some(Ok(record)) => {
                        last_read = record.seq;
                        if record.seq < seq {
                            continue;
                        }
                        if record.seq > seq || record.kind != EVENT {
                            break Ok(None);
                        }
                        break decode_held(record.seq, &record.payload).map(|h| Some(h.0));
                    }
                }
            };
            if found.is_err() {
                reader = None;
            }
            out.push((seq, found));
        }
        out
    }

    /// Reads back from the log the next part of `sink`'s deliveries that are there only
    /// (`index::Index::refill`): at most [`index::REFILL_RECORDS`] records and half the
    /// sink's [`index::SPILL_AT`] deliveries, read without holding the index. Returns whether
    /// the sink still has deliveries in the log only.
    pub(crate) fn refill(&self, sink: &str) -> Result<bool, JournalError> {
        let from = self.index().spilled_from(sink);
        let result = self.read_back(sink);
        // A spill that moved on meanwhile (its old records settled, their segment deleted
        // under the reading) is no failure: the next refill reads from where it is now.
        if result.is_err() && self.index().spilled_from(sink) != from {
            return Ok(true);
        }
        if let (Err(e), Some(from)) = (&result, from) {
            let mut failed = self
                .failed_refills
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if failed.insert((sink.to_owned(), from)) {
                tracing::error!(sink, seq = from, error = %e, "the sink's deliveries kept in the log cannot be read back from there; it delivers none past them until that is repaired");
            }
        }
        result
    }

    fn read_back(&self, sink: &str) -> Result<bool, JournalError> {
        let (from, start, slots_from, room) = {
            let index = self.index();
            let Some(from) = index.spilled_from(sink) else {
                return Ok(false);
            };
            let start = index.marks.range(..=from).next_back().map(|(_, p)| *p);
            (
                from,
                start,
                index.slots_end,
                index.spill_at.div_ceil(2).max(1),
            )
        };
        let view = self.view();
        let records = match start {
            Some(start) => view.records_from(start, from.saturating_sub(1))?,
            None => {
                return Err(JournalError::corrupt(
                    format!("the log's record {from}"),
                    "no batch position before it is kept to read it from",
                ));
            }
        };
        let mut read = index::Refill {
            from,
            to: from,
            slots_from,
            ..index::Refill::default()
        };
        let mut taken = 0usize;
        for record in records {
            let record = record?;
            if record.seq < from {
                continue;
            }
            let (deliveries, flags, size) = if record.kind == EVENT {
                let (head, at) = codec::decode_event_head(record.seq, &record.payload)?;
                for (s, route) in &head.deliveries {
                    if *s == sink {
                        read.deliveries.push((record.seq, (*route).to_owned()));
                    }
                }
                let size = u32::try_from(record.payload.len() - at).unwrap_or(u32::MAX);
                let count = u16::try_from(head.deliveries.len()).unwrap_or(u16::MAX);
                (count, head.flags, size)
            } else {
                (0, 0, 0)
            };
            if record.seq >= slots_from {
                read.records.push((record.seq, deliveries, flags, size));
            }
            read.to = record.seq + 1;
            taken += 1;
            if read.deliveries.len() >= room || taken >= index::REFILL_RECORDS {
                break;
            }
        }
        // Within a seq, in the order of the route names, as the writer adds them.
        read.deliveries.sort_unstable();
        let mut index = self.index();
        index.refill(sink, read)?;
        Ok(index.spilled_from(sink).is_some())
    }
}

/// An `EVENT` record as the sinks need it, with its head.
pub(crate) fn decode_held(seq: u64, payload: &[u8]) -> Result<(Held, EventHead<'_>), JournalError> {
    let (head, at) = codec::decode_event_head(seq, payload)?;
    let json = &payload[at..];
    let what = || format!("event {seq}");
    let json = std::str::from_utf8(json)
        .map_err(|_| JournalError::corrupt(what(), "its JSON is not UTF-8"))?;
    let event = Event::from_json(json)
        .map_err(|e| JournalError::corrupt(what(), super::error::json_detail(&e)))?;
    Ok((
        Held {
            seq,
            committed_at: head.committed_at,
            event: Arc::new(event),
            json: Arc::from(json),
        },
        head,
    ))
}

/// The log, its index and its checkpoints, owned by the writer thread.
pub struct Ledger {
    log: Log,
    shared: Arc<Shared>,
    dir: PathBuf,
    checkpointed_at: Instant,
    checkpointed_seq: u64,
    /// The index's `refills` when it was last written.
    checkpointed_refills: u64,
    /// Where the last kept batch position is, per segment.
    last_mark: Option<Position>,
}

/// What [`Ledger::open`] found.
#[derive(Debug)]
pub struct Opened {
    pub recovery: Recovery,
    /// Whether a checkpoint was used (else the whole log was read).
    pub from_checkpoint: bool,
    /// Records read after the checkpoint.
    pub replayed: u64,
}

impl Ledger {
    /// Opens the log in `queue_dir/log`, recovers it and rebuilds the index.
    pub fn open(queue_dir: &Path) -> Result<(Ledger, Opened), JournalError> {
        Ledger::open_with(queue_dir, Options::default())
    }

    pub fn open_with(queue_dir: &Path, options: Options) -> Result<(Ledger, Opened), JournalError> {
        let dir = queue_dir.join(LOG_DIR);
        let (log, recovery) = Log::open(&dir, options)?;
        Ledger::from_log(dir, log, recovery)
    }

    /// The ledger over a log just opened (tests open it with failing file operations).
    pub(crate) fn from_log(
        dir: PathBuf,
        log: Log,
        recovery: Recovery,
    ) -> Result<(Ledger, Opened), JournalError> {
        if let Some(torn) = &recovery.torn {
            tracing::warn!(file = %torn.file.display(), offset = torn.offset, dropped = torn.dropped, why = %torn.why, "the journal's log ended in a torn write (a crash while it was being written); that unacknowledged batch was cut off");
        }
        let checkpoint = match read_checkpoint(&dir, &log) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "the journal's checkpoint cannot be used; the index is rebuilt from the whole log");
                None
            }
        };
        let from_checkpoint = checkpoint.is_some();
        let (mut index, replayed, last_mark) = rebuild(&log, checkpoint)?;
        let first = log.first_seq();
        index.forget_below(first);
        let checkpointed_seq = if from_checkpoint && replayed == 0 {
            index.next_seq
        } else {
            0
        };
        let shared = Arc::new(Shared {
            index: Mutex::new(index),
            view: Mutex::new(Arc::new(log.view())),
            refusing: Mutex::new(None),
            failed_refills: Mutex::default(),
        });
        let ledger = Ledger {
            log,
            shared,
            dir,
            checkpointed_at: Instant::now(),
            checkpointed_seq,
            checkpointed_refills: 0,
            last_mark,
        };
        Ok((
            ledger,
            Opened {
                recovery,
                from_checkpoint,
                replayed,
            },
        ))
    }

    /// Replaces the records `replace` returns a new `(kind, payload)` for, in place in their
    /// segments ([`Log::rewrite`]), and rebuilds the index from the whole log.
    pub fn rewrite(
        &mut self,
        replace: impl FnMut(&super::log::Record) -> Option<(u8, Vec<u8>)>,
    ) -> Result<usize, JournalError> {
        let replaced = self.log.rewrite(replace)?;
        let _ = fs::remove_file(self.dir.join(CHECKPOINT));
        let (mut index, _, last_mark) = rebuild(&self.log, None)?;
        index.forget_below(self.log.first_seq());
        *self.shared.index() = index;
        *self.shared.view.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(self.log.view());
        self.last_mark = last_mark;
        self.checkpointed_seq = 0;
        self.checkpointed_refills = 0;
        Ok(replaced)
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn next_seq(&self) -> u64 {
        self.log.next_seq()
    }

    /// Appends a batch (one write, one fdatasync) and applies it to the index. The payloads
    /// were encoded by the caller with [`codec`]; on an error nothing of the batch is in the
    /// log or the index.
    pub fn append(&mut self, batch: &[Entry<'_>]) -> Result<u64, JournalError> {
        self.append_then(batch, || {})
    }

    /// [`Ledger::append`], calling `written` once the batch is durable and before the index
    /// shows it: what readers look up after finding a record in the index (the window of
    /// recent events) is filled there, so they never miss it and read it from disk.
    pub fn append_then(
        &mut self,
        batch: &[Entry<'_>],
        written: impl FnOnce(),
    ) -> Result<u64, JournalError> {
        let first = match self.log.append(batch) {
            Ok(seqs) => seqs.start,
            Err(e) => {
                if let Some(why) = self.log.refusing() {
                    *self
                        .shared
                        .refusing
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(why.to_owned());
                }
                return Err(e);
            }
        };
        written();
        let position = self.log.last_batch();
        *self.shared.view.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(self.log.view());
        let mut index = self.shared.index();
        if let Some(position) = position {
            mark(&mut index, &mut self.last_mark, position);
        }
        for (entry, seq) in batch.iter().zip(first..) {
            // The records were encoded here a moment ago; a failure means a bug, and the
            // index is then rebuilt from the log at the next start.
            if let Err(e) = apply_record(&mut index, seq, entry.kind, entry.payload) {
                tracing::error!(seq, error = %e, "a record just appended does not decode");
            }
        }
        Ok(first)
    }

    /// Writes a checkpoint when [`CHECKPOINT_EVERY`] has passed and records came in (or at
    /// once with `force`), then deletes the segments it no longer needs. Returns how many
    /// segments were deleted.
    pub fn maintain(&mut self, retention_ms: Millis, force: bool) -> Result<usize, JournalError> {
        let due = force || self.checkpointed_at.elapsed() >= CHECKPOINT_EVERY;
        if !due {
            return Ok(0);
        }
        // A refill changes the index without a record: it is written again then too. What
        // may be deleted is decided by the index as written (a refill can move it on
        // meanwhile); the file is synced with the index free again.
        let cutoff = super::records::now_millis().saturating_sub(retention_ms);
        let mut index = self.shared.index();
        let keep_from = index
            .segment_times
            .iter()
            .find(|(_, newest)| **newest > cutoff)
            .map_or(u64::MAX, |(first, _)| *first);
        let base = index.base;
        if self.checkpointed_seq != self.log.next_seq()
            || self.checkpointed_refills != index.refills
        {
            let started = Instant::now();
            let mut out = Checkpoint::create(&self.dir)?;
            index.shrink();
            index.encode(&mut out);
            let refills = index.refills;
            drop(index);
            out.finish()?;
            self.checkpointed_seq = self.log.next_seq();
            self.checkpointed_refills = refills;
            metrics::histogram!("herald_journal_checkpoint_seconds")
                .record(started.elapsed().as_secs_f64());
        } else {
            drop(index);
        }
        self.checkpointed_at = Instant::now();
        // The checkpoint on disk covers every record now (an idle gateway's too, so its old
        // segments still go once they are past the retention): what is below the oldest
        // record still needed, and past the retention, can go.
        let deleted = self.log.delete_before(base.min(keep_from))?;
        if deleted > 0 {
            *self.shared.view.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(self.log.view());
            let first = self.log.first_seq();
            self.shared.index().forget_below(first);
            if self.last_mark.is_some_and(|m| m.segment < first) {
                self.last_mark = None;
            }
        }
        Ok(deleted)
    }

    /// The log's segments, oldest first (for `forget`).
    pub fn log(&self) -> &Log {
        &self.log
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The index from `checkpoint` (if any) and the log's records after it: the index, how many
/// records were read, and the last batch position kept.
fn rebuild(
    log: &Log,
    checkpoint: Option<Index>,
) -> Result<(Index, u64, Option<Position>), JournalError> {
    let (mut index, start) = match checkpoint {
        Some(index) => {
            let start = index
                .marks
                .range(..=index.next_seq)
                .next_back()
                .map(|(_, p)| *p);
            (index, start)
        }
        None => (Index::new(log.first_seq()), None),
    };
    let after = index.next_seq.saturating_sub(1);
    let mut records = match start {
        Some(mark) => log.view().records_from(mark, after)?,
        None => log.records_after(after.max(log.first_seq().saturating_sub(1)))?,
    };
    let mut replayed = 0u64;
    let mut last_mark = index.marks.values().next_back().copied();
    while let Some(record) = records.next() {
        let record = record?;
        if let Some(batch) = records.batch()
            && batch.seq == record.seq
        {
            mark(&mut index, &mut last_mark, batch);
        }
        apply_record(&mut index, record.seq, record.kind, &record.payload)?;
        replayed += 1;
    }
    if index.next_seq != log.next_seq() {
        return Err(JournalError::corrupt(
            format!("the log in {}", log.dir().display()),
            format_args!(
                "its index ends at seq {}, the log at seq {}",
                index.next_seq,
                log.next_seq()
            ),
        ));
    }
    Ok((index, replayed, last_mark))
}

/// Keeps `position` if the last kept one is another segment's or [`MARK_EVERY`] behind.
fn mark(index: &mut Index, last: &mut Option<Position>, position: Position) {
    let keep = match last {
        Some(last) => {
            last.segment != position.segment || position.offset >= last.offset + MARK_EVERY
        }
        None => true,
    };
    if keep {
        index.marks.insert(position.seq, position);
        *last = Some(position);
    }
}

/// Takes one record into the index, as at its append or at a rebuild.
pub fn apply_record(
    index: &mut Index,
    seq: u64,
    kind: u8,
    payload: &[u8],
) -> Result<(), JournalError> {
    match kind {
        EVENT => {
            let (head, at) = codec::decode_event_head(seq, payload)?;
            let size = u32::try_from(payload.len() - at).unwrap_or(u32::MAX);
            let segment = index
                .marks
                .range(..=seq)
                .next_back()
                .map_or(seq, |(_, p)| p.segment);
            let newest = index
                .segment_times
                .entry(segment)
                .or_insert(head.committed_at);
            *newest = (*newest).max(head.committed_at);
            index.add_event(seq, &head, size)
        }
        OUTCOME => {
            index.add_other(seq)?;
            let outcome = codec::decode_outcome(seq, payload)?;
            match outcome.settled {
                Settled::Delivered | Settled::Dead => {
                    index.settle(outcome.sink, outcome.seq, outcome.route);
                }
                Settled::Retry { next_at, attempt } => {
                    index.retry(outcome.sink, outcome.seq, outcome.route, next_at, attempt);
                }
            }
            Ok(())
        }
        _ => index.add_other(seq),
    }
}

/// The checkpoint in `dir`, if there is one that fits `log`.
fn read_checkpoint(dir: &Path, log: &Log) -> Result<Option<Index>, JournalError> {
    let path = dir.join(CHECKPOINT);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(JournalError::io(format!("reading {}", path.display()), e)),
    };
    let corrupt = |why: &str| JournalError::corrupt(path.display().to_string(), why.to_owned());
    if bytes.len() >= 8 && &bytes[..8] == OLD_CHECKPOINT_MAGIC {
        return Err(corrupt(
            "it is in an earlier version's layout (the index is rebuilt once)",
        ));
    }
    if bytes.len() < 12 || &bytes[..8] != CHECKPOINT_MAGIC {
        return Err(corrupt("it does not start as a checkpoint does"));
    }
    let (body, crc) = bytes[8..].split_at(bytes.len() - 12);
    let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32c::crc32c(body) != crc {
        return Err(corrupt("its checksum does not match"));
    }
    let index = Index::decode(body)?;
    if index.next_seq > log.next_seq() || index.next_seq < log.first_seq() {
        return Err(corrupt(
            "it does not fit the log (records it covers are missing)",
        ));
    }
    Ok(Some(index))
}

/// A checkpoint being written: the index is streamed into a temporary file (no copy of it in
/// memory) with its checksum; [`Checkpoint::finish`] syncs it, renames it over the old one
/// and syncs the directory, so a crash leaves the old checkpoint or the new one, whole.
struct Checkpoint {
    dir: PathBuf,
    tmp: PathBuf,
    file: std::io::BufWriter<fs::File>,
    crc: u32,
    failed: Option<std::io::Error>,
}

impl Checkpoint {
    fn create(dir: &Path) -> Result<Checkpoint, JournalError> {
        let tmp = dir.join("checkpoint.tmp");
        let file = fs::File::create(&tmp)
            .map_err(|e| JournalError::io(format!("creating {}", tmp.display()), e))?;
        let mut out = Checkpoint {
            dir: dir.to_path_buf(),
            tmp,
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            crc: 0,
            failed: None,
        };
        if let Err(e) = out.file.write_all(CHECKPOINT_MAGIC) {
            out.failed = Some(e);
        }
        Ok(out)
    }

    fn finish(mut self) -> Result<(), JournalError> {
        let tmp = self.tmp.clone();
        let io = |what: &str, e: std::io::Error| {
            JournalError::io(format!("{what} {}", tmp.display()), e)
        };
        if let Some(e) = self.failed.take() {
            return Err(io("writing", e));
        }
        let crc = self.crc.to_le_bytes();
        self.file.write_all(&crc).map_err(|e| io("writing", e))?;
        let file = self
            .file
            .into_inner()
            .map_err(|e| io("writing", e.into_error()))?;
        file.sync_all().map_err(|e| io("syncing", e))?;
        let path = self.dir.join(CHECKPOINT);
        fs::rename(&self.tmp, &path).map_err(|e| io("renaming", e))?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| JournalError::io(format!("syncing {}", self.dir.display()), e))
    }
}

impl index::Out for Checkpoint {
    fn put(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        if let Err(e) = self.file.write_all(bytes) {
            self.failed = Some(e);
        }
    }
}

/// Removes the checkpoint, so the next start rebuilds the index from the whole log (after
/// `forget` rewrote records under it).
pub fn drop_checkpoint(queue_dir: &Path) -> Result<(), JournalError> {
    let path = queue_dir.join(LOG_DIR).join(CHECKPOINT);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(JournalError::io(format!("removing {}", path.display()), e)),
    }
}

/// Events read back in bulk for an operation on the whole log (`forget`, the upgrade's
/// check): every `EVENT` record's seq, head and JSON.
pub fn each_event(
    log: &Log,
    mut visit: impl FnMut(u64, &EventHead, &[u8]) -> Result<(), JournalError>,
) -> Result<(), JournalError> {
    let records = log.records_after(log.first_seq().saturating_sub(1))?;
    for record in records {
        let record = record?;
        if record.kind == EVENT {
            let (head, at) = codec::decode_event_head(record.seq, &record.payload)?;
            visit(record.seq, &head, &record.payload[at..])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
