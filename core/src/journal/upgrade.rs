//! Converting a journal of the versions before the log (events and pending deliveries in
//! redb tables) to the log (docs/architecture.md §10.3, README "Upgrading the journal").
//!
//! It runs at the first start of the new version on such a journal, or by `herald journal
//! upgrade` on a stopped gateway. Steps, each safe to crash in:
//!
//! 1. `journal.redb` is copied to `journal.redb.pre-log` (unless that copy exists): the old
//!    file, kept until `herald journal upgrade --finalize` deletes it. To go back to the old
//!    version before that: stop the gateway, move the copy back over `journal.redb`, delete
//!    `log/` (events accepted since the upgrade are then not in it).
//! 2. Every stored event is appended, in seq order, to a new log in `log.converting/`: with
//!    its commit time, its pending deliveries and their retry state (one `OUTCOME` record
//!    per attempt), waiting unrouted if it did. Delivered events within the retention come
//!    too, so they keep suppressing duplicates.
//! 3. `log.converting/` is renamed to `log/` (and the directory synced): the conversion is
//!    complete exactly when `log/` exists.
//! 4. The event tables of `journal.redb` are emptied; dead letters and the state table stay.
//!    A crash before this step is finished by the next start (`log/` exists).

use std::fs;
use std::path::Path;

use redb::Database;

use super::JournalError;
use super::ledger::{LOG_DIR, codec};
use super::log::{Entry, Log, Options};
use super::records::Attempt;
use super::store::{self, FILE_NAME};
use crate::event::Event;

/// The old file, kept until `--finalize`.
pub const PRE_LOG_COPY: &str = "journal.redb.pre-log";
const CONVERTING: &str = "log.converting";
const CHUNK: usize = 1024;

/// What a conversion did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Upgraded {
    pub events: u64,
    pub pending: u64,
    pub unrouted: u64,
}

/// Converts the journal in `dir` if it still holds events in redb; `None` when there was
/// nothing to convert.
pub fn convert_if_needed(db: &Database, dir: &Path) -> Result<Option<Upgraded>, JournalError> {
    if !store::has_old_events(db)? {
        return Ok(None);
    }
    let log_dir = dir.join(LOG_DIR);
    let copy = dir.join(PRE_LOG_COPY);
    if !copy.exists() {
        let tmp = dir.join(format!("{PRE_LOG_COPY}.tmp"));
        fs::copy(dir.join(FILE_NAME), &tmp)
            .and_then(|_| fs::File::open(&tmp)?.sync_all())
            .and_then(|()| fs::rename(&tmp, &copy))
            .map_err(|e| {
                JournalError::io(format!("copying the journal to {}", copy.display()), e)
            })?;
    }
    let mut done = Upgraded::default();
    if !log_dir.exists() {
        let converting = dir.join(CONVERTING);
        if converting.exists() {
            fs::remove_dir_all(&converting)
                .map_err(|e| JournalError::io(format!("removing {}", converting.display()), e))?;
        }
        done = write_log(db, &converting)?;
        fs::rename(&converting, &log_dir)
            .and_then(|()| fs::File::open(dir)?.sync_all())
            .map_err(|e| JournalError::io(format!("renaming {}", converting.display()), e))?;
        tracing::info!(events = done.events, pending = done.pending, unrouted = done.unrouted, copy = %copy.display(), "the journal was converted to the log; the old file is kept until `herald journal upgrade --finalize`");
    }
    store::clear_old_events(db)?;
    Ok(Some(done))
}

fn write_log(db: &Database, dir: &Path) -> Result<Upgraded, JournalError> {
    let events = store::old_events(db)?;
    let (mut log, _) = Log::open(dir, Options::default())?;
    let mut done = Upgraded::default();
    let mut buf: Vec<(u8, Vec<u8>)> = Vec::new();
    // Old seq -> new seq: outcomes name the event by its new seq.
    for (_, committed_at, json, waits, pending) in events {
        let event: Event = serde_json::from_str(&json)
            .map_err(|e| JournalError::corrupt("an event of the old journal", e))?;
        let hash = codec::dedup_hash(&event.source, &event.id);
        let pairs: Vec<(&str, &str)> = pending
            .iter()
            .map(|(s, r, _)| (s.as_str(), r.as_str()))
            .collect();
        let flags = if waits { codec::UNROUTED } else { 0 };
        let mut payload = Vec::new();
        codec::encode_event(&mut payload, committed_at, flags, None, hash, &pairs, &json);
        let seq = log.next_seq() + buf.len() as u64;
        buf.push((codec::EVENT, payload));
        done.events += 1;
        done.pending += pending.len() as u64;
        done.unrouted += u64::from(waits);
        for (sink, route, state) in &pending {
            for attempt in attempts_of(state) {
                let mut payload = Vec::new();
                let settled = codec::Settled::Retry {
                    next_at: state.next_at,
                    attempt,
                };
                codec::encode_outcome(&mut payload, seq, sink, route, &settled);
                buf.push((codec::OUTCOME, payload));
            }
        }
        if buf.len() >= CHUNK {
            flush(&mut log, &mut buf)?;
        }
    }
    flush(&mut log, &mut buf)?;
    Ok(done)
}

/// One attempt per attempt made, with the errors kept (the first and the latest) in their
/// places, so that replaying them gives the same retry state.
fn attempts_of(state: &super::PendingState) -> Vec<Attempt> {
    let kept = state.errors.len();
    let made = (state.attempts as usize).max(kept);
    let mut out = Vec::with_capacity(made);
    if kept == 0 {
        for _ in 0..made {
            out.push(Attempt {
                at: 0,
                error: "an earlier attempt (its error was not kept)".into(),
            });
        }
        return out;
    }
    out.push(state.errors[0].clone());
    for _ in 0..made - kept {
        out.push(Attempt {
            at: state.errors[0].at,
            error: "an earlier attempt (its error was not kept)".into(),
        });
    }
    out.extend(state.errors[1..].iter().cloned());
    out
}

fn flush(log: &mut Log, buf: &mut Vec<(u8, Vec<u8>)>) -> Result<(), JournalError> {
    if buf.is_empty() {
        return Ok(());
    }
    let entries: Vec<Entry<'_>> = buf
        .iter()
        .map(|(kind, payload)| Entry {
            kind: *kind,
            payload,
        })
        .collect();
    log.append(&entries)?;
    buf.clear();
    Ok(())
}

/// `herald journal upgrade --finalize`: deletes the old file. Returns whether there was one.
pub fn finalize(dir: &Path) -> Result<bool, JournalError> {
    let copy = dir.join(PRE_LOG_COPY);
    match fs::remove_file(&copy) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(JournalError::io(format!("deleting {}", copy.display()), e)),
    }
}
